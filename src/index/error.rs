//! What can go wrong with the index, told apart so that callers (the indexer's stall
//! reporting, D-Bus errors, exit codes) can say which.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The file system has no room (SQLITE_FULL, ENOSPC). Retrying once space is freed works.
    #[error("no space left for the index: {0}")]
    DiskFull(String),
    /// The file is not a usable index (corrupt pages, not a database, a schema it does not
    /// know). Rebuilding it from the ledger is the fix.
    #[error("the index is damaged: {0} (run `ovs-port-agent rebuild`)")]
    Corrupt(String),
    /// Another connection holds a lock for longer than the busy timeout.
    #[error("the index is busy: {0}")]
    Busy(String),
    /// Records were offered out of order: the index follows the ledger without gaps.
    #[error("the index covers seq {covered}; the next record must be {expected}, not {found}")]
    Gap { covered: u64, expected: u64, found: u64 },
    /// A write on an index opened read-only.
    #[error("the index is open read-only")]
    ReadOnly,
    /// Any other SQLite or encoding failure.
    #[error("{0}")]
    Other(String),
}

impl IndexError {
    pub(crate) fn opening(path: &Path, e: rusqlite::Error) -> Self {
        match Self::from(e) {
            Self::Other(m) => Self::Other(format!("opening index {}: {m}", path.display())),
            other => other,
        }
    }
}

impl From<rusqlite::Error> for IndexError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match e.sqlite_error_code() {
            Some(C::DiskFull) => Self::DiskFull(e.to_string()),
            Some(C::DatabaseCorrupt | C::NotADatabase) => Self::Corrupt(e.to_string()),
            Some(C::DatabaseBusy | C::DatabaseLocked) => Self::Busy(e.to_string()),
            Some(C::ReadOnly) => Self::ReadOnly,
            Some(C::SystemIoFailure) if e.to_string().contains("No space") => Self::DiskFull(e.to_string()),
            _ => Self::Other(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for IndexError {
    fn from(e: serde_json::Error) -> Self {
        Self::Other(format!("encoding a row: {e}"))
    }
}
