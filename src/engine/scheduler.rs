//! Scheduling embeddings: the semantic text of each new event, handed to the embedding pool
//! most urgent first. What the pool cannot take waits in the index (events without a
//! vector) and is fed again, oldest-most-urgent first, as the pool drains.

use crate::embed::EmbedPool;
use crate::embed::text::semantic_text;
use crate::index::Index;
use crate::ledger::Record;
use anyhow::Result;
use std::collections::HashSet;
use std::sync::Arc;

pub struct Scheduler {
    pool: Arc<EmbedPool>,
    /// Queued in the pool, not finished.
    in_flight: HashSet<u64>,
    /// Events that did not fit the pool's queue wait in the index.
    backlog: bool,
}

impl Scheduler {
    pub fn new(pool: Arc<EmbedPool>, backlog: bool) -> Self {
        Self { pool, in_flight: HashSet::new(), backlog }
    }

    /// The semantic text of each record.
    pub fn texts_for(records: &[Record]) -> Vec<String> {
        records.iter().map(|r| semantic_text(&r.element_id, &r.element_type, &r.action, &r.summary, &r.details)).collect()
    }

    /// Offers new events to the pool; once one does not fit, the rest wait in the backlog.
    pub fn submit(&mut self, records: &[Record], texts: Vec<String>) {
        for (r, text) in records.iter().zip(texts) {
            if self.backlog || !self.pool.submit_event(r.seq, r.priority, text) {
                self.backlog = true;
            } else {
                self.in_flight.insert(r.seq);
            }
        }
    }

    /// An embedding came back (stored, or failed).
    pub fn finished(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Feeds waiting events from the index when the pool has room, most urgent first.
    /// `settled` are events above `vectorized_seq` already finished (not to be fed again).
    pub fn refill(&mut self, index: &Index, vectorized_seq: u64, settled: &HashSet<u64>) -> Result<()> {
        if !self.backlog {
            return Ok(());
        }
        let room = self.pool.room();
        if room == 0 {
            return Ok(());
        }
        let mut exclude = self.in_flight.clone();
        exclude.extend(settled.iter().copied());
        let rows = index.unvectorized(vectorized_seq, room, &exclude)?;
        let fetched = rows.len();
        for row in rows {
            let text = semantic_text(&row.element_id, &row.element_type, &row.action, &row.summary, &row.details);
            if !self.pool.submit_event(row.seq, row.priority, text) {
                return Ok(());
            }
            self.in_flight.insert(row.seq);
        }
        if fetched < room {
            self.backlog = false;
        }
        Ok(())
    }
}
