//! Element state at any moment: an element's events folded field by field, each field with
//! the event that last changed it and how often it changed and changed back. The indexer
//! writes a checkpoint of the fold every [`FOLD_EVERY`] events of an element (table
//! `element_folds`, keyed by the seq it was taken at, so rows are appended like events and
//! an incremental send carries only new pages), linked to the element's previous checkpoint.
//! The state at a time is then one checkpoint plus at most [`FOLD_EVERY`] events, whatever
//! the length of the history.

use super::elements::state_updates_over;
use super::events::event_row;
use super::{Index, IndexError, IndexResult};
use crate::index::EventRow;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// An element's fold is checkpointed every this many of its events.
pub const FOLD_EVERY: u64 = 64;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS element_folds (
    seq INTEGER PRIMARY KEY,
    element_id TEXT NOT NULL,
    prev_seq INTEGER NOT NULL,
    max_ts INTEGER NOT NULL,
    fold TEXT NOT NULL
);";

/// One field of an element: its value and the event that set it last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldFold {
    pub value: Value,
    /// The event that gave the field its value (its first setting, or its last change).
    pub seq: u64,
    pub ts: i64,
    /// The value before that change (null for a first setting).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub previous: Value,
    /// Times the value changed (a first setting is not a change).
    #[serde(default)]
    pub changes: u64,
    /// Changes back to the value held before the previous change (a flap: A → B → A).
    #[serde(default)]
    pub reverts: u64,
}

/// An element's state after a prefix of its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ElementFold {
    pub fields: BTreeMap<String, FieldFold>,
    /// The last event folded (0: none).
    pub seq: u64,
    pub ts: i64,
    /// The latest timestamp among the events folded (timestamps of imported histories need
    /// not grow with seq).
    pub max_ts: i64,
    /// Events folded.
    pub events: u64,
}

impl ElementFold {
    /// Folds one more event of the element (events must come in ledger order).
    pub fn apply(&mut self, seq: u64, ts: i64, details: &Value) {
        let fields = &self.fields;
        let (updates, removed) = state_updates_over(details, |field| fields.get(field).map(|f| &f.value));
        let present = Value::Bool(!removed);
        for (key, value) in updates.into_iter().chain([("present".to_owned(), present)]) {
            match self.fields.get_mut(&key) {
                None => {
                    self.fields.insert(key, FieldFold { value, seq, ts, previous: Value::Null, changes: 0, reverts: 0 });
                }
                Some(field) if field.value != value => {
                    if value == field.previous {
                        field.reverts += 1;
                    }
                    field.previous = std::mem::replace(&mut field.value, value);
                    field.changes += 1;
                    field.seq = seq;
                    field.ts = ts;
                }
                Some(_) => {}
            }
        }
        self.seq = seq;
        self.ts = ts;
        self.max_ts = if self.events == 0 { ts } else { self.max_ts.max(ts) };
        self.events += 1;
    }

    /// The plain state: field → value.
    pub fn state(&self) -> Map<String, Value> {
        self.fields.iter().map(|(k, f)| (k.clone(), f.value.clone())).collect()
    }
}

/// A checkpoint row: the fold after event `seq`, and the element's checkpoint before it.
struct Checkpoint {
    seq: u64,
    prev_seq: u64,
    max_ts: i64,
}

fn checkpoint_at(conn: &Connection, seq: u64) -> IndexResult<Option<Checkpoint>> {
    Ok(conn
        .prepare_cached("SELECT seq, prev_seq, max_ts FROM element_folds WHERE seq = ?1")?
        .query_row([seq as i64], |r| {
            Ok(Checkpoint { seq: r.get::<_, i64>(0)? as u64, prev_seq: r.get::<_, i64>(1)? as u64, max_ts: r.get(2)? })
        })
        .optional()?)
}

fn checkpoint_fold(conn: &Connection, seq: u64) -> IndexResult<ElementFold> {
    let text: String = conn.prepare_cached("SELECT fold FROM element_folds WHERE seq = ?1")?.query_row([seq as i64], |r| r.get(0))?;
    serde_json::from_str(&text).map_err(|e| IndexError::Corrupt(format!("element checkpoint at seq {seq}: {e}")))
}

/// The element's events after `after_seq` up to and including `from_seq`, oldest first
/// (a walk down the element links).
fn events_between(conn: &Connection, after_seq: u64, from_seq: u64) -> IndexResult<Vec<EventRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, ts, element_id, element_type, action, priority, source, hash, summary, details, element_prev_seq FROM events WHERE seq = ?1",
    )?;
    let mut out = Vec::new();
    let mut next = from_seq;
    while next > after_seq {
        let Some((row, prev)) = stmt.query_row([next as i64], |r| Ok((event_row(r)?, r.get::<_, i64>(10)? as u64))).optional()? else {
            return Err(IndexError::Corrupt(format!("an element's chain links to event {next}, which the index lacks")));
        };
        if prev >= next {
            return Err(IndexError::Corrupt(format!("event {next} links back to {prev}")));
        }
        out.push(row);
        next = prev;
    }
    out.reverse();
    Ok(out)
}

/// The element's latest checkpoint seq (0: none yet).
fn latest_checkpoint(conn: &Connection, element_id: &str) -> IndexResult<u64> {
    let seq: Option<i64> =
        conn.prepare_cached("SELECT fold_seq FROM elements WHERE element_id = ?1")?.query_row([element_id], |r| r.get(0)).optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Called by the indexer after an element's event is applied (inside its transaction):
/// writes a checkpoint when the element's height reaches a multiple of [`FOLD_EVERY`].
/// `event` is the new event (not yet in `events`); `previous_seq` the element's event before it.
pub(super) fn checkpoint_if_due(
    conn: &Connection,
    element_id: &str,
    height: u64,
    previous_seq: u64,
    event: (u64, i64, &Value),
) -> IndexResult<()> {
    if !height.is_multiple_of(FOLD_EVERY) {
        return Ok(());
    }
    let base = latest_checkpoint(conn, element_id)?;
    let mut fold = if base == 0 { ElementFold::default() } else { checkpoint_fold(conn, base)? };
    for row in events_between(conn, base, previous_seq)? {
        fold.apply(row.seq, row.ts, &row.details);
    }
    fold.apply(event.0, event.1, event.2);
    conn.prepare_cached("INSERT OR REPLACE INTO element_folds (seq, element_id, prev_seq, max_ts, fold) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![event.0 as i64, element_id, base as i64, fold.max_ts, serde_json::to_string(&fold)?])?;
    conn.prepare_cached("UPDATE elements SET fold_seq = ?1 WHERE element_id = ?2")?.execute(params![event.0 as i64, element_id])?;
    Ok(())
}

/// Writes the checkpoints of an index that has events but none (a migration): every
/// element's events folded in one pass over the events.
pub(super) fn fill_checkpoints(conn: &Connection) -> IndexResult<u64> {
    let mut folds: HashMap<String, (ElementFold, u64)> = HashMap::new();
    let mut stmt = conn.prepare("SELECT seq, ts, element_id, details FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut written = 0u64;
    conn.execute_batch("BEGIN")?;
    while let Some(r) = rows.next()? {
        let (seq, ts, element_id): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let details: Value = serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or(Value::Null);
        let (fold, base) = folds.entry(element_id.clone()).or_default();
        fold.apply(seq as u64, ts, &details);
        if fold.events % FOLD_EVERY == 0 {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO element_folds (seq, element_id, prev_seq, max_ts, fold) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![seq, element_id, *base as i64, fold.max_ts, serde_json::to_string(&*fold)?])?;
            conn.prepare_cached("UPDATE elements SET fold_seq = ?1 WHERE element_id = ?2")?.execute(params![seq, element_id])?;
            *base = seq as u64;
            written += 1;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(written)
}

/// Where a fold came from, for the answer's "why".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FoldBasis {
    /// The checkpoint it started from (0: the element's first event).
    pub checkpoint_seq: u64,
    /// Events folded on top of it.
    pub events_folded: u64,
}

impl Index {
    /// The element's state after the longest prefix of its events recorded at or before
    /// `at_ns` (with timestamps that grow with seq, as the daemon records them: every event
    /// at or before `at_ns`). `None` for an element the index does not know.
    pub fn element_fold_at(&self, element_id: &str, at_ns: i64) -> IndexResult<Option<(ElementFold, FoldBasis)>> {
        let Some(last) = self.element_last_seq(element_id)? else { return Ok(None) };
        // The newest checkpoint whose events all lie at or before `at_ns`, and the one after it.
        let mut newer: Option<u64> = None;
        let mut at = latest_checkpoint(&self.conn, element_id)?;
        while at != 0 {
            let checkpoint = checkpoint_at(&self.conn, at)?
                .ok_or_else(|| IndexError::Corrupt(format!("element {element_id} names a checkpoint at seq {at} that is missing")))?;
            if checkpoint.max_ts <= at_ns {
                break;
            }
            if checkpoint.prev_seq >= checkpoint.seq {
                return Err(IndexError::Corrupt(format!("element checkpoint {} links back to {}", checkpoint.seq, checkpoint.prev_seq)));
            }
            newer = Some(checkpoint.seq);
            at = checkpoint.prev_seq;
        }
        let mut fold = if at == 0 { ElementFold::default() } else { checkpoint_fold(&self.conn, at)? };
        let mut folded = 0;
        for row in events_between(&self.conn, at, newer.unwrap_or(last))? {
            if row.ts > at_ns {
                break;
            }
            fold.apply(row.seq, row.ts, &row.details);
            folded += 1;
        }
        Ok(Some((fold, FoldBasis { checkpoint_seq: at, events_folded: folded })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::events::tests::record;
    use crate::index::next_state;
    use serde_json::json;

    fn with_details(seq: u64, element: &str, details: Value) -> crate::ledger::Record {
        let mut r = record(seq, element);
        r.ts = seq as i64 * 10;
        r.details = details;
        r
    }

    #[test]
    fn a_fold_keeps_blame_changes_and_reverts() {
        let mut f = ElementFold::default();
        f.apply(1, 10, &json!({"after": {"mtu": 1500, "state": "up"}}));
        f.apply(2, 20, &json!({"after": {"mtu": 9000}}));
        f.apply(3, 30, &json!({"after": {"mtu": 1500}}));
        f.apply(4, 40, &json!({"after": {"mtu": 1500, "state": "up"}}));
        let mtu = &f.fields["mtu"];
        assert_eq!((mtu.value.clone(), mtu.seq, mtu.changes, mtu.reverts), (json!(1500), 3, 2, 1));
        assert_eq!((f.fields["state"].seq, f.fields["state"].changes), (1, 0));
        f.apply(5, 50, &json!({"before": {"mtu": 1500}}));
        assert_eq!(f.fields["present"].value, json!(false));
        assert_eq!((f.events, f.max_ts), (5, 50));
    }

    #[test]
    fn lists_changed_by_items_keep_the_whole_list_in_the_state() {
        let mut f = ElementFold::default();
        f.apply(1, 10, &json!({"after": {"name": "br0", "ports": ["br0", "p2"]}}));
        f.apply(2, 20, &json!({"port": "p1", "after": {}, "added": {"ports": ["p1"]}}));
        assert_eq!(f.fields["ports"].value, json!(["br0", "p1", "p2"]), "sorted as it came");
        f.apply(3, 30, &json!({"port": "p2", "after": {}, "removed": {"ports": ["p2"]}}));
        assert_eq!((f.fields["ports"].value.clone(), f.fields["ports"].seq), (json!(["br0", "p1"]), 3));
        let state = next_state(
            json!({"ports": ["br0", "p1"]}),
            &json!({"after": {}, "added": {"ports": ["p9"]}, "removed": {"ports": ["p9", "p1"]}}),
        );
        assert_eq!(state["ports"], json!(["br0", "p9"]), "taken out, then put in");
        let state = next_state(json!({"ports": "br0"}), &json!({"added": {"ports": ["p1"]}}));
        assert_eq!(state["ports"], json!(["br0", "p1"]), "a single value is a list of one");
        // A plain detail named "added" (an imported event) is a field, not a list change.
        let state = next_state(json!({}), &json!({"added": "yesterday"}));
        assert_eq!(state["added"], "yesterday");
    }

    #[test]
    fn state_at_any_time_equals_a_full_fold_with_or_without_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut index = Index::open(&path).unwrap();
        let n = FOLD_EVERY * 3 + 7;
        let records: Vec<_> = (1..=n * 2)
            .map(|s| {
                let element = if s % 2 == 0 { "a" } else { "b" };
                with_details(s, element, json!({"after": {"mtu": 1500 + (s / 7) % 3, "step": s / 2}}))
            })
            .collect();
        index.apply(&records).unwrap();
        let checkpoints: i64 = index.conn.query_row("SELECT count(*) FROM element_folds", [], |r| r.get(0)).unwrap();
        assert_eq!(checkpoints as u64, 2 * (n / FOLD_EVERY));
        for at in [0, 5, 10, 639, 640, 1281, 1300, 2000, 5000, i64::MAX] {
            let mut expected = ElementFold::default();
            for r in records.iter().filter(|r| r.element_id == "a" && r.ts <= at) {
                expected.apply(r.seq, r.ts, &r.details);
            }
            let (got, basis) = index.element_fold_at("a", at).unwrap().unwrap();
            assert_eq!(got, expected, "at {at}");
            assert!(basis.events_folded <= FOLD_EVERY, "at {at}: {basis:?}");
        }
        assert!(index.element_fold_at("nobody", 100).unwrap().is_none());
        // An index written before checkpoints existed gets them by migration, the same ones.
        let before: Vec<(i64, String)> = fold_rows(&index);
        index.conn.execute_batch("DELETE FROM element_folds; UPDATE elements SET fold_seq = 0;").unwrap();
        fill_checkpoints(&index.conn).unwrap();
        assert_eq!(fold_rows(&index), before);
    }

    fn fold_rows(index: &Index) -> Vec<(i64, String)> {
        let mut stmt = index.conn.prepare("SELECT seq, fold FROM element_folds ORDER BY seq").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }
}
