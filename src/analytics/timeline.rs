//! `GetTimeline`: every event around a moment, in order, grouped by element — with, when
//! the timeline is about one element, the elements related to it pulled in (its bridge, its
//! port, its connection, its controller, and theirs) — the first critical event marked, and
//! what changed on each element across the window.

use super::relations::{Related, related};
use super::{Cite, check_window, ms_to_ns};
use crate::event::Priority;
use crate::index::{EventRow, Index};
use crate::search::Change;
use crate::text::facts;
use crate::vector::Catalog;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// Events a timeline holds unless asked for fewer; more than [`MAX_EVENTS`] are never listed.
pub const DEFAULT_EVENTS: usize = 500;
pub const MAX_EVENTS: usize = 5000;

#[derive(Debug, Clone, Default)]
pub struct TimelineOptions {
    /// Only this element and the elements related to it.
    pub element_id: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEvent {
    pub seq: u64,
    pub ts_unix_ms: i64,
    pub element_id: String,
    pub action: String,
    pub priority: Priority,
    pub summary: String,
    pub hash: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub first_critical: bool,
}

/// A field's value when the window opened (as far as the window's events say) and when it closed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowChange {
    pub field: String,
    pub from: String,
    pub to: String,
    pub changes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementGroup {
    pub element_id: String,
    pub element_type: String,
    /// How it relates to the element the timeline is about (absent: it is that element, or
    /// the timeline is about everything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<String>,
    /// Its events in the window, by seq.
    pub seqs: Vec<u64>,
    /// Fields whose value differs between the window's start and end.
    pub changed: Vec<WindowChange>,
    /// Elements its recorded state names (bridge, ports, interfaces, device, controller).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<Related>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineAnswer {
    pub center_unix_ms: i64,
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element_id: Option<String>,
    pub events: Vec<TimelineEvent>,
    pub elements: Vec<ElementGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_critical: Option<Cite>,
    /// Events in the window in all; more than `events` holds when the answer was capped.
    pub total_events: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The timeline of `window_ms` centred on `center_ms` (half before, half after).
pub fn timeline(index: &Index, catalog: &Catalog, center_ms: i64, window_ms: u64, options: &TimelineOptions) -> Result<TimelineAnswer> {
    let window = check_window(window_ms)?;
    let since_ms = center_ms.saturating_sub(window / 2);
    let until_ms = center_ms.saturating_add(window - window / 2);
    let limit = options.limit.unwrap_or(DEFAULT_EVENTS).clamp(1, MAX_EVENTS);
    let mut notes = Vec::new();
    if options.limit.is_some_and(|l| l > MAX_EVENTS) {
        notes.push(format!("at most {MAX_EVENTS} events are listed"));
    }
    // The element asked about, and its relations two steps out (a port's interface's connection).
    let mut relation_of: BTreeMap<String, Option<String>> = BTreeMap::new();
    if let Some(focus) = &options.element_id {
        super::known_element(index, focus)?;
        for first in related(index, focus)? {
            for second in related(index, &first.element_id)? {
                relation_of.entry(second.element_id).or_insert(Some(format!("{} of its {}", second.relation, first.relation)));
            }
            relation_of.insert(first.element_id, Some(first.relation));
        }
        // Itself last: it may have been reached as a relation of its relations.
        relation_of.insert(focus.clone(), None);
    }
    let ids: Vec<&str> = relation_of.keys().map(String::as_str).collect();
    let (seqs, total) =
        catalog.in_window(ms_to_ns(since_ms), ms_to_ns(until_ms), options.element_id.as_ref().map(|_| ids.as_slice()), 0, limit);
    if total > seqs.len() {
        notes.push(format!("{total} events in the window; the first {} are listed (narrow the window or name an element)", seqs.len()));
    }
    let mut rows: Vec<EventRow> = Vec::with_capacity(seqs.len());
    for seq in seqs {
        if let Some(row) = index.event(seq)? {
            rows.push(row);
        }
    }
    let first_critical = rows.iter().find(|e| e.priority == Priority::Critical).map(Cite::of);
    let mut groups: BTreeMap<String, (String, Vec<&EventRow>)> = BTreeMap::new();
    for e in &rows {
        groups.entry(e.element_id.clone()).or_insert_with(|| (e.element_type.clone(), Vec::new())).1.push(e);
    }
    let mut elements = Vec::with_capacity(groups.len());
    for (element_id, (element_type, events)) in &groups {
        let named = match index.element(element_id)? {
            Some(row) => super::relations::named_by(&row.state),
            None => Vec::new(),
        };
        elements.push(ElementGroup {
            element_id: element_id.clone(),
            element_type: element_type.clone(),
            relation: relation_of.get(element_id).cloned().flatten(),
            seqs: events.iter().map(|e| e.seq).collect(),
            changed: window_changes(events),
            related: named,
        });
    }
    // The element asked about first, then by first event.
    elements.sort_by_key(|g| (g.relation.is_some(), g.seqs.first().copied()));
    let events = rows
        .iter()
        .map(|e| TimelineEvent {
            seq: e.seq,
            ts_unix_ms: e.ts.div_euclid(1_000_000),
            element_id: e.element_id.clone(),
            action: e.action.clone(),
            priority: e.priority,
            summary: e.summary.clone(),
            hash: e.hash.clone(),
            changes: Change::all_in(&e.details),
            first_critical: first_critical.as_ref().is_some_and(|c| c.seq == e.seq),
        })
        .collect();
    Ok(TimelineAnswer {
        center_unix_ms: center_ms,
        since_unix_ms: since_ms,
        until_unix_ms: until_ms,
        element_id: options.element_id.clone(),
        events,
        elements,
        first_critical,
        total_events: total,
        notes,
    })
}

/// Per field: the value before the window's first change of it, the value after its last,
/// and how many changes there were; fields that ended where they started are left out.
fn window_changes(events: &[&EventRow]) -> Vec<WindowChange> {
    let mut fields: BTreeMap<String, WindowChange> = BTreeMap::new();
    for e in events {
        for fact in facts(&e.details) {
            let Some(before) = fact.before else { continue };
            let entry = fields.entry(fact.field.clone()).or_insert_with(|| WindowChange {
                field: fact.field.clone(),
                from: before,
                to: String::new(),
                changes: 0,
            });
            entry.to = fact.after;
            entry.changes += 1;
        }
    }
    fields.into_values().filter(|c| c.from != c.to).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Record;
    use serde_json::{Value, json};

    fn record(seq: u64, ts_ms: i64, element: &str, kind: &str, priority: Priority, details: Value) -> Record {
        crate::analytics::fixtures::record(seq, ts_ms, element, kind, "changed", priority, details)
    }

    #[test]
    fn a_timeline_groups_pulls_in_relations_and_marks_the_first_critical_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let records = vec![
            record(1, 1_000, "bridge:br0", "bridge", Priority::Low, json!({"after": {"ports": ["vnet0"]}})),
            record(
                2,
                1_100,
                "port:vnet0",
                "ovs-port",
                Priority::Low,
                json!({"after": {"bridge": "br0", "interfaces": ["vnet0"], "tag": 10}}),
            ),
            record(3, 5_000, "interface:eth9", "interface", Priority::Low, json!({"after": {"mtu": 1500}})),
            record(
                4,
                10_000,
                "interface:vnet0",
                "interface",
                Priority::Medium,
                json!({"before": {"link_state": "up"}, "after": {"link_state": "down"}, "changed": ["link_state"]}),
            ),
            record(
                5,
                10_500,
                "port:vnet0",
                "ovs-port",
                Priority::Critical,
                json!({"before": {"tag": 10}, "after": {"tag": 20}, "changed": ["tag"]}),
            ),
            record(
                6,
                11_000,
                "interface:vnet0",
                "interface",
                Priority::Medium,
                json!({"before": {"link_state": "down"}, "after": {"link_state": "up"}, "changed": ["link_state"]}),
            ),
            record(
                7,
                11_500,
                "port:vnet0",
                "ovs-port",
                Priority::Critical,
                json!({"before": {"tag": 20}, "after": {"tag": 30}, "changed": ["tag"]}),
            ),
        ];
        let mut catalog = Catalog::default();
        for r in &records {
            catalog.insert(r.seq, r.ts, &r.element_id, &r.element_type, &r.action, &r.source, r.priority).unwrap();
        }
        index.apply(&records).unwrap();
        let t = timeline(&index, &catalog, 10_000, 4_000, &TimelineOptions { element_id: Some("interface:vnet0".into()), limit: None })
            .unwrap();
        assert_eq!(t.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5, 6, 7]);
        assert_eq!(t.first_critical.as_ref().map(|c| c.seq), Some(5));
        assert!(t.events[1].first_critical && !t.events[3].first_critical);
        let groups: Vec<(&str, Option<&str>, Vec<u64>)> =
            t.elements.iter().map(|g| (g.element_id.as_str(), g.relation.as_deref(), g.seqs.clone())).collect();
        assert_eq!(groups, vec![("interface:vnet0", None, vec![4, 6]), ("port:vnet0", Some("port"), vec![5, 7])]);
        // The interface went down and came back: nothing changed across the window; the tag did.
        assert!(t.elements[0].changed.is_empty());
        assert_eq!(t.elements[1].changed, vec![WindowChange { field: "tag".into(), from: "10".into(), to: "30".into(), changes: 2 }]);
        // Everything in a wide window, capped.
        let all = timeline(&index, &catalog, 6_000, 12_000, &TimelineOptions { element_id: None, limit: Some(3) }).unwrap();
        assert_eq!((all.events.len(), all.total_events), (3, 7));
        assert!(all.notes[0].contains("7 events"));
        assert!(timeline(&index, &catalog, 0, 0, &TimelineOptions::default()).is_err());
    }
}
