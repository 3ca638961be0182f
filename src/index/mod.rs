//! The SQLite index: a derived, rebuildable view of the ledger that records the `seq` it
//! covers and catches up from the ledger on open. One file per table family:
//!
//! - `schema`: tables, the schema version and in-place migrations;
//! - `meta`: key/value facts (covered and vectorized seq, the model the vectors are of);
//! - `events`: one row per ledger record, element histories, the embedding backlog;
//! - `elements`: each element's current state, folded from its events;
//! - `folds`: checkpoints of each element's fold, for its state at any moment;
//! - `vectors`: the embeddings and their blob encoding;
//! - `lexical`: the full-text index (FTS5) of every event's words.
//!
//! An index is opened writable (the daemon's indexer, `import`, `rebuild`) or read-only
//! (every inspecting command, snapshots, replicas): a read-only one cannot write.

mod elements;
mod error;
mod events;
mod folds;
mod lexical;
mod meta;
mod schema;
mod vectors;

pub use elements::{ElementRow, list_changes, next_state, state_updates, state_updates_over};
pub use error::IndexError;
pub use events::EventRow;
pub use folds::{ElementFold, FOLD_EVERY, FieldFold, FoldBasis};
pub use lexical::lexical_text;
pub use vectors::{VectorBlobError, from_blob, to_blob};

use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// The SQLite VFS of a live index: `unix-excl` keeps the WAL index in the process's heap
/// instead of a memory-mapped `-shm` file. Writing to a mapped file on a full Btrfs kills
/// the process with SIGBUS (the file system cannot refuse the write with ENOSPC); in the
/// heap it is an ordinary error. Connections of one process share the index; another
/// process cannot open a live index while one holds it (it asks the daemon instead).
const LIVE_VFS: &str = "unix-excl";

/// Result of index operations.
pub type IndexResult<T> = Result<T, IndexError>;

/// One connection to an index file.
pub struct Index {
    conn: Connection,
    writable: bool,
}

impl Index {
    /// Opens (creating, migrating) the index for writing.
    pub fn open(path: &Path) -> IndexResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(path, flags, LIVE_VFS).map_err(|e| IndexError::opening(path, e))?;
        // NORMAL: commits are not synced one by one (the index is derived from the ledger,
        // which is; after a power loss the index rolls back to a consistent earlier state
        // and catches up). Whatever must be durable — before an HNSW checkpoint that
        // includes its vectors, before a snapshot — goes through a WAL checkpoint, which
        // syncs the WAL first and the database after (`Index::make_durable`).
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;")?;
        schema::create_and_migrate(&conn)?;
        Ok(Self { conn, writable: true })
    }

    /// SQLite's `quick_check` of every page of the index file at `path` (structure, not
    /// contents against the ledger), through a read-only connection so that nothing is
    /// written to a damaged file: `Some(problem)` when it is damaged, `None` when it is sound
    /// or absent.
    pub fn damage_of(path: &Path) -> IndexResult<Option<String>> {
        if !path.exists() {
            return Ok(None);
        }
        let checked = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).and_then(|c| {
            let mut stmt = c.prepare("PRAGMA quick_check(5)")?;
            let lines = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            Ok(lines)
        });
        match checked.map_err(IndexError::from) {
            Ok(lines) if lines == ["ok"] => Ok(None),
            Ok(lines) => Ok(Some(lines.join("; "))),
            Err(IndexError::Corrupt(problem)) => Ok(Some(problem)),
            Err(e) => Err(e),
        }
    }

    /// Opens the index of a live state directory for reading only: SQLite refuses every
    /// write on this connection, and nothing is created or migrated.
    pub fn open_read_only(path: &Path) -> IndexResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(path, flags, LIVE_VFS).map_err(|e| IndexError::opening(path, e))?;
        conn.execute_batch("PRAGMA query_only=1; PRAGMA busy_timeout=10000;")?;
        schema::check_readable(&conn, path)?;
        Ok(Self { conn, writable: false })
    }

    /// Opens an index inside a read-only snapshot. `immutable=1` makes SQLite ignore any WAL,
    /// so only what was checkpointed into the main file is seen.
    pub fn open_snapshot(path: &Path) -> IndexResult<Self> {
        let uri = format!("file:{}?immutable=1", path.display());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(uri, flags).map_err(|e| IndexError::opening(path, e))?;
        conn.execute_batch("PRAGMA query_only=1;")?;
        schema::check_readable(&conn, path)?;
        Ok(Self { conn, writable: false })
    }

    /// True when this connection may write.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Syncs every committed transaction to disk (a WAL checkpoint: it syncs the WAL before
    /// anything else). A checkpoint that readers kept from completing still leaves the WAL
    /// itself synced, which is what durability needs; that case is logged.
    pub fn make_durable(&self) -> IndexResult<()> {
        let (busy, log, done): (i64, i64, i64) =
            self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if busy != 0 || done < log {
            tracing::debug!(wal_frames = log, checkpointed = done, "index WAL checkpoint incomplete (readers); the WAL is synced");
        }
        Ok(())
    }

    /// Folds the whole WAL into the database file and empties it, so that a copy of the
    /// file alone (a snapshot, opened `immutable`) holds every committed row. A reader in
    /// the middle of a query can hold it up; that is retried, then reported.
    pub fn fold_wal(&self) -> IndexResult<()> {
        for attempt in 0..50 {
            let busy: i64 = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1 + attempt));
        }
        Err(IndexError::Busy("the index WAL could not be folded into the database: readers kept it busy".into()))
    }

    /// Counts of events and elements.
    pub fn counts(&self) -> IndexResult<(u64, u64)> {
        let events: i64 = self.conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        let elements: i64 = self.conn.query_row("SELECT count(*) FROM elements", [], |r| r.get(0))?;
        Ok((events as u64, elements as u64))
    }

    /// Drops every derived row, vectors included (the ledger was replaced).
    pub fn clear_all(&mut self) -> IndexResult<()> {
        self.conn
            .execute_batch("DELETE FROM events; DELETE FROM elements; DELETE FROM element_folds; DELETE FROM vectors; DELETE FROM meta;")?;
        lexical::clear_lexical(&self.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_index_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        Index::open(&path).unwrap().set_meta("k", "v").unwrap();
        let ro = Index::open_read_only(&path).unwrap();
        assert!(!ro.is_writable());
        assert_eq!(ro.meta("k").unwrap().as_deref(), Some("v"));
        assert!(ro.set_meta("k", "w").is_err());
        assert!(Index::open_read_only(&dir.path().join("missing.sqlite")).is_err(), "nothing is created");
        assert!(!dir.path().join("missing.sqlite").exists());
    }
}
