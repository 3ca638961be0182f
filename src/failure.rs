//! Kinds of failure that callers must tell apart (D-Bus error names, exit codes, stall
//! reports), found by walking an error's chain for the typed errors of each layer.

use crate::index::IndexError;
use crate::ledger::LedgerError;

/// A part of the daemon refuses more work right now (a queue is full); try again later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} is busy: {detail}")]
pub struct Busy {
    pub what: &'static str,
    pub detail: String,
}

/// Something the caller named does not exist.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// The caller asked for something that cannot be answered as asked (an unknown element, a
/// seq beyond the head, a window of zero); the message says why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A replica does not hold what the caller required (a seq, a freshness bound) in time.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Stale(pub String);

/// Which kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The caller's input is wrong.
    InvalidInput,
    NotFound,
    Busy,
    /// No space left on a file system; it works again once space is freed.
    DiskFull,
    /// The ledger or the index is damaged.
    Damaged,
    /// A write was asked of something that only reads (a replica, a snapshot).
    ReadOnly,
    /// A replica's copy is older than the caller required.
    Stale,
    /// Anything else.
    Internal,
}

impl Kind {
    /// The exit code of a command that failed this way (documented in README and operations.md).
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Damaged => 1,
            Self::InvalidInput | Self::Internal | Self::ReadOnly => 2,
            Self::Busy => 3,
            Self::DiskFull => 4,
            Self::NotFound => 5,
            Self::Stale => 6,
        }
    }
}

/// The kind of the first typed error found in `e`'s chain.
pub fn classify(e: &anyhow::Error) -> Kind {
    for cause in e.chain() {
        if let Some(kind) = kind_of(cause) {
            return kind;
        }
    }
    Kind::Internal
}

fn kind_of(cause: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    // The daemon's answer to a client: its D-Bus error name says the kind.
    if let Some(zbus::Error::MethodError(name, _, _)) = cause.downcast_ref::<zbus::Error>() {
        return match name.as_str().rsplit('.').next() {
            Some("InvalidArgs") => Some(Kind::InvalidInput),
            Some("Busy") => Some(Kind::Busy),
            Some("DiskFull") => Some(Kind::DiskFull),
            Some("NotFound") => Some(Kind::NotFound),
            Some("LedgerDamaged") => Some(Kind::Damaged),
            Some("ReadOnly") => Some(Kind::ReadOnly),
            Some("Stale") => Some(Kind::Stale),
            _ => None,
        };
    }
    if cause.is::<Busy>() {
        return Some(Kind::Busy);
    }
    if cause.is::<NotFound>() {
        return Some(Kind::NotFound);
    }
    if cause.is::<Stale>() {
        return Some(Kind::Stale);
    }
    if cause.is::<crate::search::Unsearchable>() || cause.is::<Invalid>() {
        return Some(Kind::InvalidInput);
    }
    if let Some(e) = cause.downcast_ref::<IndexError>() {
        return Some(match e {
            IndexError::DiskFull(_) => Kind::DiskFull,
            IndexError::Corrupt(_) | IndexError::Gap { .. } => Kind::Damaged,
            IndexError::Busy(_) => Kind::Busy,
            IndexError::ReadOnly => Kind::ReadOnly,
            IndexError::Other(_) => Kind::Internal,
        });
    }
    if let Some(e) = cause.downcast_ref::<LedgerError>() {
        return Some(match e {
            LedgerError::Invalid(_) => Kind::InvalidInput,
            LedgerError::Damaged(_) => Kind::Damaged,
            LedgerError::Io { source, .. } if is_disk_full(source) => Kind::DiskFull,
            LedgerError::Io { .. } | LedgerError::Closed => Kind::Internal,
        });
    }
    if let Some(e) = cause.downcast_ref::<std::io::Error>()
        && is_disk_full(e)
    {
        return Some(Kind::DiskFull);
    }
    None
}

/// ENOSPC or EDQUOT.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) || e.kind() == std::io::ErrorKind::StorageFull
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn kinds_are_found_through_context() {
        let full = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC)).context("writing x");
        assert_eq!(classify(&full), Kind::DiskFull);
        let busy: anyhow::Result<()> = Err(Busy { what: "query embedding", detail: "64 waiting".into() }.into());
        assert_eq!(classify(&busy.context("searching").unwrap_err()), Kind::Busy);
        let index = anyhow::Error::new(IndexError::DiskFull("SQLITE_FULL".into()));
        assert_eq!(classify(&index), Kind::DiskFull);
        assert_eq!(classify(&anyhow::anyhow!("plain")), Kind::Internal);
        assert_eq!(Kind::DiskFull.exit_code(), 4);
    }
}
