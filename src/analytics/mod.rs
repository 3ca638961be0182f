//! Answers computed from the ledger's events and their vectors, each citing the events
//! (seq, time, hash) it rests on:
//!
//! - `state`: an element's exact state at any moment, and its drift since then (blame per
//!   field, flapping fields);
//! - `timeline`: every event around a moment, grouped by element, related elements pulled in;
//! - `similar`: earlier incidents like an event and how they ended; configurations like an
//!   element's and how they fare;
//! - `anomaly`: what is unusual in a window (novelty, bursts, first seen, precursors), and
//!   the live scorer behind the `AnomalyDetected` signal.
//!
//! Everything here is synchronous and reads one index connection; callers run it off the
//! async executor.

pub mod anomaly;
mod relations;
pub mod similar;
pub mod state;
pub mod timeline;

use crate::index::{EventRow, Index};
use anyhow::Result;
use serde::Serialize;

/// An event an answer rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cite {
    pub seq: u64,
    pub ts_unix_ms: i64,
    pub hash: String,
    pub element_id: String,
    pub action: String,
    pub summary: String,
}

impl Cite {
    pub fn of(e: &EventRow) -> Self {
        Self {
            seq: e.seq,
            ts_unix_ms: e.ts.div_euclid(1_000_000),
            hash: e.hash.clone(),
            element_id: e.element_id.clone(),
            action: e.action.clone(),
            summary: e.summary.clone(),
        }
    }

    /// The event `seq`, read from the index (an error if the index lacks it).
    pub fn read(index: &Index, seq: u64) -> Result<Self> {
        Ok(Self::of(&cited_event(index, seq)?))
    }
}

/// An event an answer cites; the index must hold it (an answer never cites a missing one).
pub fn cited_event(index: &Index, seq: u64) -> Result<EventRow> {
    Ok(index.event(seq)?.ok_or_else(|| crate::index::IndexError::Corrupt(format!("the index lacks event {seq}")))?)
}

/// Milliseconds to the nanoseconds events are stamped with, saturating.
pub fn ms_to_ns(ms: i64) -> i64 {
    ms.saturating_mul(1_000_000)
}

/// The longest window any member accepts (ten years): longer ones are refused.
pub const MAX_WINDOW_MS: u64 = 10 * 366 * 24 * 3600 * 1000;

/// Checks a window length in milliseconds.
pub fn check_window(window_ms: u64) -> Result<i64> {
    if window_ms == 0 {
        return Err(crate::failure::Invalid("the window must be longer than 0 ms".into()).into());
    }
    if window_ms > MAX_WINDOW_MS {
        return Err(crate::failure::Invalid(format!(
            "a window of {window_ms} ms is longer than the limit of {MAX_WINDOW_MS} ms (ten years)"
        ))
        .into());
    }
    Ok(window_ms as i64)
}

/// The element's type from the index, or an error naming the unknown element.
pub fn known_element(index: &Index, element_id: &str) -> Result<crate::index::ElementRow> {
    index.element(element_id)?.ok_or_else(|| {
        crate::failure::Invalid(format!(
            "no element {element_id:?} has been recorded (ids look like interface:eth0, bridge:br0, port:vnet0, connection:<uuid>)"
        ))
        .into()
    })
}

/// Records and rows for the analytics modules' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::event::Priority;
    use crate::index::EventRow;
    use crate::ledger::Record;
    use serde_json::Value;

    /// A ledger record (hash = the seq repeated, links zero: the index does not check them).
    pub fn record(seq: u64, ts_ms: i64, element: &str, kind: &str, action: &str, priority: Priority, details: Value) -> Record {
        Record {
            seq,
            ts: ts_ms * 1_000_000,
            host: "h".into(),
            source: "test".into(),
            element_id: element.into(),
            element_type: kind.into(),
            action: action.into(),
            priority,
            summary: format!("event {seq}"),
            details,
            prev: [0; 32],
            element_prev: [0; 32],
            hash: [seq as u8; 32],
        }
    }

    /// An index row of an interface.
    pub fn row(seq: u64, ts_ns: i64, element: &str, action: &str, priority: Priority, details: Value) -> EventRow {
        EventRow {
            seq,
            ts: ts_ns,
            element_id: element.into(),
            element_type: "interface".into(),
            action: action.into(),
            priority,
            source: "t".into(),
            hash: String::new(),
            summary: String::new(),
            details,
        }
    }
}
