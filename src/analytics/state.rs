//! An element's exact state at any moment (`GetElementState`) and how it drifted since a
//! moment (`AnalyzeConfigurationDrift`), both folded from the element's chain (one
//! checkpoint plus at most `FOLD_EVERY` events, see `index::folds`).
//!
//! Every field cites the event that gave it its value, and that event is read back to
//! confirm it did: a checkpoint that disagrees with the events it summarizes (a damaged or
//! forged index) is an error, never an answer.

use super::{Cite, known_element};
use crate::index::{FieldFold, FoldBasis, Index, state_updates_over};
use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// One field of a state answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldState {
    pub value: Value,
    /// The event that gave the field this value.
    pub set_by: Cite,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateAnswer {
    pub element_id: String,
    pub element_type: String,
    pub at_unix_ms: i64,
    /// False when the element had no event at or before that moment.
    pub existed: bool,
    /// False when its last event by then removed it.
    pub present: bool,
    pub state: serde_json::Map<String, Value>,
    pub fields: std::collections::BTreeMap<String, FieldState>,
    /// The element's last event at or before the moment.
    pub last_event: Option<Cite>,
    pub events_before: u64,
    pub basis: FoldBasis,
}

/// The element's state at `at_ns`.
pub fn element_state(index: &Index, element_id: &str, at_ns: i64) -> Result<StateAnswer> {
    let element = known_element(index, element_id)?;
    let (fold, basis) = index.element_fold_at(element_id, at_ns)?.unwrap_or_default();
    let mut reader = Confirmer::new(index);
    let mut fields = std::collections::BTreeMap::new();
    for (name, field) in &fold.fields {
        let set_by = reader.confirm(name, field)?;
        fields.insert(name.clone(), FieldState { value: field.value.clone(), set_by });
    }
    let last_event = if fold.seq == 0 { None } else { Some(reader.cite(fold.seq)?) };
    Ok(StateAnswer {
        element_id: element_id.to_owned(),
        element_type: element.element_type,
        at_unix_ms: at_ns.div_euclid(1_000_000),
        existed: fold.events > 0,
        present: fold.fields.get("present").is_some_and(|f| f.value == Value::Bool(true)),
        state: fold.state(),
        fields,
        last_event,
        events_before: fold.events,
        basis,
    })
}

/// A field that differs between the two moments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDrift {
    pub field: String,
    pub then: Value,
    pub now: Value,
    /// The event that set the current value (blame).
    pub blame: Cite,
    /// Changes of the field in the period.
    pub changes: u64,
}

/// A field that changed and changed back in the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldFlap {
    pub field: String,
    pub now: Value,
    pub changes: u64,
    /// Changes back to the value held before the previous change (A → B → A).
    pub reverts: u64,
    /// True when the value is now what it was at the start of the period.
    pub back_where_it_started: bool,
    pub last_change: Cite,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftAnswer {
    pub element_id: String,
    pub element_type: String,
    pub since_unix_ms: i64,
    pub now_unix_ms: i64,
    pub existed_then: bool,
    pub events_in_period: u64,
    /// Fields whose value differs between then and now, each with its blame.
    pub changed: Vec<FieldDrift>,
    /// Fields that flapped in the period (changed and changed back), with counts.
    pub flapped: Vec<FieldFlap>,
    pub unchanged_fields: usize,
    pub then_basis: FoldBasis,
    pub now_basis: FoldBasis,
}

/// The field-level difference between the element at `since_ns` and at `now_ns`.
pub fn drift(index: &Index, element_id: &str, since_ns: i64, now_ns: i64) -> Result<DriftAnswer> {
    let element = known_element(index, element_id)?;
    if since_ns > now_ns {
        return Err(crate::failure::Invalid("since is in the future".into()).into());
    }
    let (then, then_basis) = index.element_fold_at(element_id, since_ns)?.unwrap_or_default();
    let (now, now_basis) = index.element_fold_at(element_id, now_ns)?.unwrap_or_default();
    let mut reader = Confirmer::new(index);
    let (mut changed, mut flapped, mut unchanged_fields) = (Vec::new(), Vec::new(), 0);
    for (name, field) in &now.fields {
        let before = then.fields.get(name);
        let then_value = before.map(|f| f.value.clone()).unwrap_or(Value::Null);
        let changes = field.changes - before.map_or(0, |f| f.changes);
        let reverts = field.reverts - before.map_or(0, |f| f.reverts);
        let set_in_period = before.is_none_or(|f| f.seq != field.seq);
        if then_value != field.value {
            let blame = reader.confirm(name, field)?;
            changed.push(FieldDrift {
                field: name.clone(),
                then: then_value.clone(),
                now: field.value.clone(),
                blame,
                changes: changes.max(1),
            });
        } else {
            unchanged_fields += 1;
        }
        if set_in_period && (reverts > 0 || (changes >= 2 && before.is_some_and(|f| f.value == field.value))) {
            let last_change = reader.confirm(name, field)?;
            flapped.push(FieldFlap {
                field: name.clone(),
                now: field.value.clone(),
                changes,
                reverts,
                back_where_it_started: then_value == field.value,
                last_change,
            });
        }
    }
    flapped.sort_by(|a, b| b.changes.cmp(&a.changes).then(a.field.cmp(&b.field)));
    Ok(DriftAnswer {
        element_id: element_id.to_owned(),
        element_type: element.element_type,
        since_unix_ms: since_ns.div_euclid(1_000_000),
        now_unix_ms: now_ns.div_euclid(1_000_000),
        existed_then: then.events > 0,
        events_in_period: now.events - then.events,
        changed,
        flapped,
        unchanged_fields,
        then_basis,
        now_basis,
    })
}

/// Reads cited events once each, and confirms that a field's cited event set its value.
struct Confirmer<'a> {
    index: &'a Index,
    events: HashMap<u64, crate::index::EventRow>,
}

impl<'a> Confirmer<'a> {
    fn new(index: &'a Index) -> Self {
        Self { index, events: HashMap::new() }
    }

    fn event(&mut self, seq: u64) -> Result<&crate::index::EventRow> {
        if !self.events.contains_key(&seq) {
            self.events.insert(seq, super::cited_event(self.index, seq)?);
        }
        Ok(&self.events[&seq])
    }

    fn cite(&mut self, seq: u64) -> Result<Cite> {
        Ok(Cite::of(self.event(seq)?))
    }

    /// The cite of the event that set `field`, after checking it did set that value.
    fn confirm(&mut self, name: &str, field: &FieldFold) -> Result<Cite> {
        let event = self.event(field.seq)?;
        // Folded as the index folds it, over the value before that change (a list changed
        // by items merges into it).
        let (updates, removed) = state_updates_over(&event.details, |f| (f == name).then_some(&field.previous));
        let set = if name == "present" { Some(Value::Bool(!removed)) } else { updates.get(name).cloned() };
        if set.as_ref() != Some(&field.value) {
            bail!(crate::index::IndexError::Corrupt(format!(
                "the index's state checkpoint says event {} set {name} to {}, but that event does not",
                field.seq, field.value
            )));
        }
        Ok(Cite::of(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::ledger::Record;
    use serde_json::json;

    fn record(seq: u64, ts_ms: i64, element: &str, details: Value) -> Record {
        crate::analytics::fixtures::record(seq, ts_ms, element, "interface", "properties.changed", Priority::Low, details)
    }

    #[test]
    fn state_at_a_moment_and_drift_with_blame_and_flaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let records = vec![
            record(1, 1000, "interface:eth0", json!({"after": {"mtu": 1500, "state": "up"}})),
            record(2, 2000, "interface:eth1", json!({"after": {"mtu": 1500}})),
            record(3, 3000, "interface:eth0", json!({"before": {"state": "up"}, "after": {"state": "down"}})),
            record(4, 4000, "interface:eth0", json!({"before": {"state": "down"}, "after": {"state": "up"}})),
            record(5, 5000, "interface:eth0", json!({"before": {"mtu": 1500}, "after": {"mtu": 9000}})),
        ];
        index.apply(&records).unwrap();
        let at = element_state(&index, "interface:eth0", 3_500 * 1_000_000).unwrap();
        assert_eq!(at.state, json!({"mtu": 1500, "state": "down", "present": true}).as_object().unwrap().clone());
        assert_eq!(at.fields["state"].set_by.seq, 3);
        assert_eq!(at.fields["mtu"].set_by.seq, 1);
        assert_eq!((at.existed, at.present, at.events_before, at.last_event.as_ref().unwrap().seq), (true, true, 2, 3));
        let before = element_state(&index, "interface:eth0", 10).unwrap();
        assert!(!before.existed && before.state.is_empty());

        let d = drift(&index, "interface:eth0", 1_500 * 1_000_000, 6_000 * 1_000_000).unwrap();
        assert_eq!(d.changed.len(), 1);
        assert_eq!(
            (d.changed[0].field.as_str(), &d.changed[0].then, &d.changed[0].now, d.changed[0].blame.seq),
            ("mtu", &json!(1500), &json!(9000), 5)
        );
        assert_eq!(d.flapped.len(), 1);
        let flap = &d.flapped[0];
        assert_eq!((flap.field.as_str(), flap.changes, flap.reverts, flap.back_where_it_started), ("state", 2, 1, true));
        assert_eq!((d.events_in_period, d.unchanged_fields), (3, 2));

        let err = element_state(&index, "interface:nope", 0).unwrap_err();
        assert_eq!(crate::failure::classify(&err), crate::failure::Kind::InvalidInput);
    }

    #[test]
    fn a_list_changed_by_items_is_blamed_on_the_event_that_changed_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let records = vec![
            record(1, 1000, "bridge:br0", json!({"after": {"ports": ["br0"]}})),
            record(2, 2000, "bridge:br0", json!({"port": "p1", "added": {"ports": ["p1"]}, "after": {}, "changed": ["ports"]})),
        ];
        index.apply(&records).unwrap();
        let at = element_state(&index, "bridge:br0", 3_000 * 1_000_000).unwrap();
        assert_eq!((at.state["ports"].clone(), at.fields["ports"].set_by.seq), (json!(["br0", "p1"]), 2));
        let d = drift(&index, "bridge:br0", 1_500 * 1_000_000, 3_000 * 1_000_000).unwrap();
        assert_eq!((&d.changed[0].now, d.changed[0].blame.seq), (&json!(["br0", "p1"]), 2));
    }
}
