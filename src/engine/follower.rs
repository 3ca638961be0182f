//! Following the ledger into the index: reads what became durable, a bounded chunk at a
//! time, and applies it to the index and the filter catalog. The index's `covered_seq` is
//! the truth of how far it got: after a failed apply the cursor goes back there, so the
//! index never skips a record.

use crate::index::Index;
use crate::ledger::{Hash, LedgerCursor, Record};
use crate::vector::Catalog;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::RwLock;
use tokio::sync::watch;

/// Records read and applied in one step (bounds memory in a burst).
pub const CHUNK: usize = 2048;

pub struct Follower {
    ledger_dir: PathBuf,
    cursor: LedgerCursor,
    head: watch::Receiver<(u64, Hash)>,
}

impl Follower {
    /// Follows from `covered_seq + 1` up to the writer's durable head.
    pub fn new(ledger_dir: PathBuf, covered_seq: u64, head: watch::Receiver<(u64, Hash)>) -> Self {
        Self { cursor: LedgerCursor::new(&ledger_dir, covered_seq + 1), ledger_dir, head }
    }

    /// The durable head `(seq, hash)`.
    pub fn head(&self) -> (u64, Hash) {
        *self.head.borrow()
    }

    /// The next unapplied records (at most [`CHUNK`]); empty when the index is at the head.
    pub fn read_chunk(&mut self) -> Result<Vec<Record>> {
        let head = self.head().0;
        let next = self.cursor.next_seq();
        if next > head {
            return Ok(Vec::new());
        }
        let through = head.min(next + CHUNK as u64 - 1);
        let mut records = Vec::with_capacity((through + 1 - next) as usize);
        self.cursor.read_through(through, |r| {
            records.push(r);
            Ok(())
        })?;
        Ok(records)
    }

    /// Applies records read by [`read_chunk`](Self::read_chunk) to the index, then to the
    /// catalog searches filter with.
    pub fn apply(&mut self, index: &mut Index, catalog: &RwLock<Catalog>, records: &[Record]) -> Result<()> {
        index.apply(records)?;
        let mut catalog = catalog.write().expect("catalog lock");
        for r in records {
            catalog.insert(r.seq, r.ts, &r.element_id, &r.element_type, &r.action, &r.source, r.priority)?;
        }
        Ok(())
    }

    /// After a failure: read again from what the index holds.
    pub fn rewind(&mut self, covered_seq: u64) {
        self.cursor = LedgerCursor::new(&self.ledger_dir, covered_seq + 1);
    }
}
