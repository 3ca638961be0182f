//! Scheduling embeddings: the semantic text of each new event, handed to the embedding pool
//! most urgent first. What the pool cannot take waits in the index (events without a
//! vector) and is fed again, oldest-most-urgent first, as the pool drains.

use crate::embed::EmbedPool;
use crate::embed::text::semantic_text;
use crate::index::{EventRow, Index, next_state};
use crate::ledger::Record;
use anyhow::Result;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Only the last this-many events of an element are folded into a backlog event's state
/// (older fields are rarely shown in a text of four fields).
const HISTORY_FOLD: usize = 1000;

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

    /// The semantic text of each record, with the element's state as it is after the record
    /// and its actions just before it (tracked through the batch). Reads the index as it is
    /// before the records are applied.
    pub fn texts_for(&self, index: &Index, records: &[Record]) -> Result<Vec<String>> {
        let mut elements: HashMap<&str, (Value, Vec<String>)> = HashMap::new();
        let mut texts = Vec::with_capacity(records.len());
        for r in records {
            if !elements.contains_key(r.element_id.as_str()) {
                let state = index.element(&r.element_id)?.map(|e| e.state).unwrap_or(Value::Null);
                let recent = index.history(&r.element_id, 3)?.into_iter().map(|e| e.action).collect();
                elements.insert(&r.element_id, (state, recent));
            }
            let (state, recent) = elements.get_mut(r.element_id.as_str()).expect("inserted above");
            *state = next_state(std::mem::take(state), &r.details);
            texts.push(semantic_text(&r.element_id, &r.element_type, &r.action, &r.summary, &r.details, state, recent));
            recent.insert(0, r.action.clone());
            recent.truncate(3);
        }
        Ok(texts)
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
            let text = backlog_text(index, &row)?;
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

/// Backlogged events get the same text they would have had live: the element's state
/// folded over its events up to this one, and the actions just before it.
fn backlog_text(index: &Index, row: &EventRow) -> Result<String> {
    let history = index.history_through(&row.element_id, row.seq, HISTORY_FOLD)?;
    let mut state = Value::Null;
    for e in history.iter().rev() {
        state = next_state(state, &e.details);
    }
    let recent: Vec<String> = history.iter().skip(1).take(3).map(|e| e.action.clone()).collect();
    Ok(semantic_text(&row.element_id, &row.element_type, &row.action, &row.summary, &row.details, &state, &recent))
}
