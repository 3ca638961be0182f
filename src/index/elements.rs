//! The `elements` table: each element's current state, folded from its events, with the
//! seq, height and hash of its newest event (the head of its chain).

use super::{Index, IndexError, IndexResult};
use crate::ledger::Record;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// An element's current state as the index derives it from its events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementRow {
    pub element_id: String,
    pub element_type: String,
    pub state: Value,
    pub last_seq: u64,
    pub height: u64,
    pub last_hash: String,
}

impl Index {
    pub fn element(&self, element_id: &str) -> IndexResult<Option<ElementRow>> {
        Ok(self.element_rows("WHERE element_id = ?1", params![element_id])?.pop())
    }

    /// Element rows chosen by `clause` (a WHERE, ORDER and LIMIT over `elements`).
    fn element_rows(&self, clause: &str, args: impl rusqlite::Params) -> IndexResult<Vec<ElementRow>> {
        let sql = format!("SELECT element_id, element_type, state, last_seq, height, last_hash FROM elements {clause}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok(ElementRow {
                element_id: r.get(0)?,
                element_type: r.get(1)?,
                state: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null),
                last_seq: r.get::<_, i64>(3)? as u64,
                height: r.get::<_, i64>(4)? as u64,
                last_hash: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The seq of the element's newest event.
    pub(super) fn element_last_seq(&self, element_id: &str) -> IndexResult<Option<u64>> {
        let last: Option<i64> = self
            .conn
            .prepare_cached("SELECT last_seq FROM elements WHERE element_id = ?1")?
            .query_row([element_id], |r| r.get(0))
            .optional()?;
        Ok(last.map(|s| s as u64))
    }

    /// Elements of one type, the most recently changed first, at most `limit`.
    pub fn elements_of_type(&self, element_type: &str, limit: usize) -> IndexResult<Vec<ElementRow>> {
        self.element_rows("WHERE element_type = ?1 ORDER BY last_seq DESC LIMIT ?2", params![element_type, limit as i64])
    }

    /// Every element whose last event came from `source` (a source's last known view of
    /// its world).
    pub fn elements_of_source(&self, source: &str) -> IndexResult<Vec<ElementRow>> {
        self.element_rows("WHERE source = ?1", params![source])
    }
}

/// Folds one record into its element's row; returns the seq of the element's previous event
/// (0 for its first).
pub(super) fn apply_to_element(tx: &Transaction<'_>, record: &Record, hash: &str) -> IndexResult<(u64, u64)> {
    let previous: Option<(String, i64, i64, i64)> = tx
        .prepare_cached("SELECT state, height, last_seq, fold_seq FROM elements WHERE element_id = ?1")?
        .query_row([&record.element_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let (state, height, previous_seq, fold_seq) = match previous {
        Some((_, _, last, _)) if last as u64 >= record.seq => {
            return Err(IndexError::Corrupt(format!("element {} already has event {last}, after {}", record.element_id, record.seq)));
        }
        Some((state, height, last, fold)) => (serde_json::from_str(&state).unwrap_or(Value::Object(Map::new())), height, last as u64, fold),
        None => (Value::Object(Map::new()), 0, 0, 0),
    };
    let state = next_state(state, &record.details);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO elements (element_id, element_type, state, last_seq, height, last_hash, source, fold_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        record.element_id,
        record.element_type,
        serde_json::to_string(&state)?,
        record.seq as i64,
        height + 1,
        hash,
        record.source,
        fold_seq
    ])?;
    Ok((previous_seq, (height + 1) as u64))
}

/// An element's state after one of its events: the event's `after` values (or, for events
/// without before/after, its plain detail fields) and its list changes merged over the
/// previous state. An event with `before` and no `after` removed the element
/// (`present: false`).
pub fn next_state(state: Value, details: &Value) -> Value {
    let mut state = match state {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let (updates, removed) = state_updates_over(details, |field| state.get(field));
    for (key, value) in updates {
        state.insert(key, value);
    }
    state.insert("present".into(), Value::Bool(!removed));
    Value::Object(state)
}

/// [`state_updates`], with each list an event changed by items (`"added": {"ports": […]}`,
/// `"removed": {…}`) merged into that list's `current` value.
pub fn state_updates_over<'a>(details: &Value, current: impl Fn(&str) -> Option<&'a Value>) -> (Map<String, Value>, bool) {
    let (mut updates, removed) = state_updates(details);
    for (field, added, dropped) in list_changes(details) {
        let base = match updates.get(field).or_else(|| current(field)) {
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(single) => vec![single.clone()],
        };
        updates.insert(field.to_owned(), Value::Array(merge_list(base, added, dropped)));
    }
    (updates, removed)
}

/// The lists an event changed by items rather than whole: `(field, added, removed)`. A
/// bridge of thousands of ports records a port's arrival as `"added": {"ports": ["vnet7"]}`,
/// not as the whole list before and after.
pub fn list_changes(details: &Value) -> Vec<(&str, &[Value], &[Value])> {
    let items = |key: &str, field: &str| -> &[Value] {
        details.get(key).and_then(|d| d.get(field)).and_then(Value::as_array).map_or(&[], Vec::as_slice)
    };
    let mut fields: Vec<&str> = ["added", "removed"]
        .iter()
        .filter_map(|key| details.get(*key).and_then(Value::as_object))
        .flat_map(|changes| changes.iter().filter(|(_, items)| items.is_array()).map(|(field, _)| field.as_str()))
        .collect();
    fields.sort_unstable();
    fields.dedup();
    fields.into_iter().map(|field| (field, items("added", field), items("removed", field))).collect()
}

/// A list with `removed` items taken out, then `added` ones appended (those not in it yet),
/// sorted when it was. Linear in the sizes (an imported event may name thousands).
fn merge_list(mut list: Vec<Value>, added: &[Value], removed: &[Value]) -> Vec<Value> {
    let sorted = list.windows(2).all(|w| value_order(&w[0], &w[1]).is_le());
    let removed: HashSet<&Value> = removed.iter().collect();
    list.retain(|v| !removed.contains(v));
    let mut held: HashSet<&Value> = list.iter().collect();
    let new: Vec<Value> = added.iter().filter(|item| held.insert(item)).cloned().collect();
    list.extend(new);
    if sorted {
        list.sort_by(value_order);
    }
    list
}

/// `added` / `removed` holding lists by field (see [`list_changes`]).
fn is_list_change(key: &str, value: &Value) -> bool {
    matches!(key, "added" | "removed") && value.as_object().is_some_and(|changes| changes.values().any(Value::is_array))
}

fn value_order(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_str(), b.as_str()) {
        (Some(a), Some(b)) => a.cmp(b),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// The fields an event sets — its `after` values, or, for events without before/after, its
/// plain detail fields — and whether it removed its element (a `before` and no `after`).
/// Lists changed by items are not here: see [`state_updates_over`].
pub fn state_updates(details: &Value) -> (Map<String, Value>, bool) {
    let updates = match details {
        Value::Object(details) => match details.get("after") {
            Some(Value::Object(after)) => after.clone(),
            _ => details
                .iter()
                .filter(|(k, v)| !matches!(k.as_str(), "before" | "after" | "changed") && !is_list_change(k, v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        _ => Map::new(),
    };
    let removed = details.get("before").is_some() && details.get("after").is_none_or(Value::is_null);
    (updates, removed)
}
