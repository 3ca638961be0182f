//! "Have we seen this before?" and "which configurations like mine run better?":
//!
//! - `FindSimilarIncidents`: an event's nearest earlier events by meaning (its vector against
//!   the history's), each with what followed on its element within an hour and how it ended.
//! - `FindSimilarConfigs`: an element's current configuration as a sentence, embedded, against
//!   the configurations of the other present elements of its type; each with the fields
//!   shared and differing and its track record since it took that configuration.
//!
//! Configuration vectors are made when asked for and kept by the embedder's text cache: a
//! configuration that changed has new text, so a new vector (docs/decisions.md says why they
//! are not made eagerly for every event).

use super::{Cite, known_element};
use crate::event::Priority;
use crate::index::{EventRow, Index};
use crate::search::{Change, Direction, SearchState, event_direction};
use crate::text::{value_words, words};
use crate::vector::{Catalog, Filters, dot};
use anyhow::Result;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Arc;

/// What followed an incident on its element is looked for within this long.
pub const FOLLOW_WINDOW_NS: i64 = 3600 * 1_000_000_000;
/// Events listed as what followed one incident.
const FOLLOWED_SHOWN: usize = 10;

/// How an earlier incident ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A later event on the element went the other way (came back up, re-attached).
    Recovered,
    /// The same thing happened again on the element before it recovered.
    Repeated,
    /// A more urgent event followed on the element.
    Escalated,
    /// Nothing followed within the window.
    NoFollowUp,
    /// Events followed, none of the above.
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    pub event: Cite,
    pub similarity: f32,
    pub outcome: Outcome,
    /// The event that decided the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Cite>,
    pub followed: Vec<Cite>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentsAnswer {
    pub event: Cite,
    pub incidents: Vec<Incident>,
    pub follow_window_ms: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The `limit` earlier events most like event `seq`, and how each ended.
pub fn similar_incidents(index: &Index, search: &SearchState, seq: u64, limit: usize) -> Result<IncidentsAnswer> {
    let covered = index.covered_seq()?;
    let Some(event) = index.event(seq)? else {
        return Err(crate::failure::Invalid(format!("there is no event {seq}: the history holds events 1 to {covered}")).into());
    };
    let Some((_, vector)) = index.vectors_for(&[seq])?.into_iter().next() else {
        return Err(crate::failure::Invalid(format!("event {seq} has no vector yet (it is being embedded); ask again shortly")).into());
    };
    // Its own type searched apart as well: a small type is then scored exactly, so a rare
    // kind of event is not lost among thousands of near-identical routine ones in the graph.
    let wanted = limit;
    let any_type = Filters { until_ns: Some(event.ts), before_seq: Some(seq), ..Default::default() };
    let same_type = Filters { element_type: Some(event.element_type.clone()), ..any_type.clone() };
    let mut nearest = search.nearest_in(index, &vector, wanted, &same_type)?;
    nearest.extend(search.nearest_in(index, &vector, wanted, &any_type)?);
    nearest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    nearest.dedup_by_key(|(seq, _)| *seq);
    let catalog = search.catalog.read().expect("catalog lock");
    let mut incidents = Vec::new();
    for (other, similarity) in nearest {
        let Some(earlier) = index.event(other)? else { continue };
        incidents.push(incident(index, &catalog, &earlier, similarity)?);
        if incidents.len() == limit {
            break;
        }
    }
    let mut notes = Vec::new();
    if incidents.is_empty() {
        notes.push("no earlier event is like this one".to_owned());
    }
    Ok(IncidentsAnswer { event: Cite::of(&event), incidents, follow_window_ms: FOLLOW_WINDOW_NS / 1_000_000, notes })
}

fn incident(index: &Index, catalog: &Catalog, earlier: &EventRow, similarity: f32) -> Result<Incident> {
    let element = [earlier.element_id.as_str()];
    let (seqs, _) = catalog.in_window(earlier.ts, earlier.ts.saturating_add(FOLLOW_WINDOW_NS), Some(&element), earlier.seq, FOLLOWED_SHOWN);
    let mut followed = Vec::with_capacity(seqs.len());
    for s in seqs {
        if let Some(e) = index.event(s)? {
            followed.push(e);
        }
    }
    let (outcome, decided_by) = outcome(earlier, &followed);
    Ok(Incident {
        event: Cite::of(earlier),
        similarity,
        outcome,
        decided_by: decided_by.map(Cite::of),
        followed: followed.iter().map(Cite::of).collect(),
    })
}

fn direction_of(e: &EventRow) -> Option<Direction> {
    event_direction(&e.action, Change::all_in(&e.details).first())
}

/// The first event after the incident that escalated, repeated or reversed it decides.
fn outcome<'a>(incident: &EventRow, followed: &'a [EventRow]) -> (Outcome, Option<&'a EventRow>) {
    if followed.is_empty() {
        return (Outcome::NoFollowUp, None);
    }
    let way = direction_of(incident);
    for e in followed {
        if e.priority > incident.priority && e.priority >= Priority::High {
            return (Outcome::Escalated, Some(e));
        }
        let d = direction_of(e);
        if way.is_some() && d.is_some() && d != way {
            return (Outcome::Recovered, Some(e));
        }
        if e.action == incident.action && d == way {
            return (Outcome::Repeated, Some(e));
        }
    }
    (Outcome::Other, None)
}

/// Fields that say how an element is doing or what it is called, not how it is configured:
/// left out of a configuration (two ports configured alike are alike whatever their names).
const NOT_CONFIGURATION: &[&str] = &[
    "present",
    "state",
    "old_state",
    "new_state",
    "reason",
    "carrier",
    "link_state",
    "admin_state",
    "activation",
    "connectivity",
    "error",
    "name",
    "interface",
    "interfaces",
    "ports",
    "hw_address",
    "mac",
    "mac_in_use",
    "ifindex",
    "ofport",
    "addresses",
    "connection.id",
    "connection.uuid",
    "connection.interface-name",
    "external_ids",
    "rx_bytes",
    "tx_bytes",
    "dhcp",
];

/// An element's configuration: its state without the fields of [`NOT_CONFIGURATION`].
pub fn configuration(state: &Value) -> Map<String, Value> {
    match state {
        Value::Object(map) => {
            map.iter().filter(|(k, _)| !NOT_CONFIGURATION.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        _ => Map::new(),
    }
}

/// The sentence a configuration is embedded as.
pub fn configuration_text(element_type: &str, config: &Map<String, Value>) -> String {
    let fields: Vec<String> = config.iter().map(|(k, v)| format!("{} {}", words(k), value_words(v, 60))).collect();
    format!("{} configured with {}", words(element_type), fields.join("; "))
}

/// How an element has fared since it took its current configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackRecord {
    /// The event that completed the current configuration (its last configuration change).
    pub since: Option<Cite>,
    pub days: f64,
    pub events: u64,
    /// Events that went down or failed, urgent ones (high, critical) or failures by name.
    pub failures: u64,
    /// Times it went down and came back.
    pub flaps: u64,
    /// Events naming an error.
    pub errors: u64,
    /// (failures + flaps + errors) per day: lower is healthier.
    pub trouble_per_day: f64,
    /// True when more events followed than were read.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub capped: bool,
}

/// Events read for one track record at most.
const TRACK_EVENTS: usize = 5000;

fn track_record(index: &Index, element_id: &str, now_ns: i64) -> Result<TrackRecord> {
    let (fold, _) = index.element_fold_at(element_id, i64::MAX)?.unwrap_or_default();
    let config_keys = configuration(&Value::Object(fold.state()));
    let since_seq = fold.fields.iter().filter(|(k, _)| config_keys.contains_key(*k)).map(|(_, f)| f.seq).max().unwrap_or(0);
    let history = index.history(element_id, TRACK_EVENTS)?;
    let capped = history.len() == TRACK_EVENTS && history.last().is_some_and(|e| e.seq > since_seq);
    let after: Vec<&EventRow> = history.iter().filter(|e| e.seq > since_seq).collect();
    let since = if since_seq == 0 { None } else { Some(Cite::read(index, since_seq)?) };
    let since_ns = since.as_ref().map_or_else(|| history.last().map_or(now_ns, |e| e.ts), |c| c.ts_unix_ms * 1_000_000);
    let (mut failures, mut flaps, mut errors, mut down) = (0, 0, 0, false);
    for e in after.iter().rev() {
        let d = direction_of(e);
        let text = format!("{} {}", e.action, e.summary).to_lowercase();
        if d == Some(Direction::Down) && (e.priority >= Priority::High || text.contains("fail")) {
            failures += 1;
        }
        if text.contains("error") {
            errors += 1;
        }
        match d {
            Some(Direction::Down) => down = true,
            Some(Direction::Up) if down => {
                flaps += 1;
                down = false;
            }
            _ => {}
        }
    }
    let days = ((now_ns - since_ns).max(0) as f64 / 86_400e9).max(1.0 / 24.0);
    Ok(TrackRecord {
        since,
        days,
        events: after.len() as u64,
        failures,
        flaps,
        errors,
        trouble_per_day: (failures + flaps + errors) as f64 / days,
        capped,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimilarConfig {
    pub element_id: String,
    pub similarity: f32,
    pub shared: Vec<String>,
    /// Field → [this element's value, the asked element's value].
    pub differing: Map<String, Value>,
    pub track_record: TrackRecord,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigsAnswer {
    pub element_id: String,
    pub element_type: String,
    pub configuration: Map<String, Value>,
    pub track_record: TrackRecord,
    pub similar: Vec<SimilarConfig>,
    /// The element with the least trouble per day among these (itself included), and the
    /// fields that set its configuration apart from the asked element's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthiest: Option<Healthiest>,
    pub compared: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Healthiest {
    pub element_id: String,
    pub trouble_per_day: f64,
    pub differing: Map<String, Value>,
}

/// Elements of one type compared at most (the newest-changed first).
pub const MAX_COMPARED: usize = 2000;

/// The present elements of `element_id`'s type whose configuration is nearest its own.
pub fn similar_configs(
    index: &Index,
    element_id: &str,
    limit: usize,
    now_ns: i64,
    embed: &dyn Fn(&str) -> Result<Arc<[f32]>>,
) -> Result<ConfigsAnswer> {
    let element = known_element(index, element_id)?;
    let mine = configuration(&element.state);
    let my_vector = embed(&configuration_text(&element.element_type, &mine))?;
    let mut notes = Vec::new();
    let mut peers = Vec::new();
    let mut scored: std::collections::HashMap<String, f32> = std::collections::HashMap::new();
    let rows = index.elements_of_type(&element.element_type, MAX_COMPARED + 1)?;
    if rows.len() > MAX_COMPARED {
        notes.push(format!("only the {MAX_COMPARED} most recently changed elements of this type were compared"));
    }
    for row in rows.into_iter().take(MAX_COMPARED) {
        if row.element_id == element_id || row.state.get("present") == Some(&Value::Bool(false)) {
            continue;
        }
        let config = configuration(&row.state);
        let text = configuration_text(&row.element_type, &config);
        // Elements of a type mostly share a handful of configurations: embed each text once.
        let similarity = match scored.get(&text) {
            Some(s) => *s,
            None => {
                let s = dot(&my_vector, &embed(&text)?);
                scored.insert(text, s);
                s
            }
        };
        peers.push((similarity, row.element_id, config));
    }
    let compared = peers.len();
    peers.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    peers.truncate(limit);
    let mut similar = Vec::with_capacity(peers.len());
    for (similarity, id, config) in peers {
        let (shared, differing) = compare(&config, &mine);
        similar.push(SimilarConfig { track_record: track_record(index, &id, now_ns)?, element_id: id, similarity, shared, differing });
    }
    let track_record = track_record(index, element_id, now_ns)?;
    let healthiest = similar
        .iter()
        .map(|s| (s.element_id.as_str(), s.track_record.trouble_per_day, &s.differing))
        .filter(|(_, t, _)| *t < track_record.trouble_per_day)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, t, d)| Healthiest { element_id: id.to_owned(), trouble_per_day: t, differing: d.clone() });
    if compared == 0 {
        notes.push(format!("no other present element of type {} to compare with", element.element_type));
    }
    Ok(ConfigsAnswer {
        element_id: element_id.to_owned(),
        element_type: element.element_type,
        configuration: mine,
        track_record,
        similar,
        healthiest,
        compared,
        notes,
    })
}

/// Fields with the same value in both, and `field → [theirs, mine]` for the others.
fn compare(theirs: &Map<String, Value>, mine: &Map<String, Value>) -> (Vec<String>, Map<String, Value>) {
    let mut shared = Vec::new();
    let mut differing = Map::new();
    let mut keys: Vec<&String> = theirs.keys().chain(mine.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (a, b) = (theirs.get(k).unwrap_or(&Value::Null), mine.get(k).unwrap_or(&Value::Null));
        if a == b {
            shared.push(k.clone());
        } else {
            differing.insert(k.clone(), Value::Array(vec![a.clone(), b.clone()]));
        }
    }
    (shared, differing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(seq: u64, action: &str, priority: Priority, details: Value) -> EventRow {
        crate::analytics::fixtures::row(seq, seq as i64, "interface:eth0", action, priority, details)
    }

    #[test]
    fn outcomes() {
        let down = row(1, "link.down", Priority::Medium, json!({}));
        assert_eq!(outcome(&down, &[]).0, Outcome::NoFollowUp);
        assert_eq!(outcome(&down, &[row(2, "link.up", Priority::Low, json!({}))]).0, Outcome::Recovered);
        assert_eq!(outcome(&down, &[row(2, "link.down", Priority::Medium, json!({}))]).0, Outcome::Repeated);
        assert_eq!(outcome(&down, &[row(2, "device.failed", Priority::Critical, json!({}))]).0, Outcome::Escalated);
    }

    #[test]
    fn configuration_leaves_out_names_and_operational_state() {
        let state = json!({"name": "vnet3", "tag": 10, "state": "up", "vlan_mode": "access", "present": true});
        let config = configuration(&state);
        assert_eq!(config, json!({"tag": 10, "vlan_mode": "access"}).as_object().unwrap().clone());
        assert_eq!(configuration_text("ovs-port", &config), "ovs port configured with tag 10; vlan mode access");
        let (shared, differing) = compare(&config, json!({"tag": 20, "vlan_mode": "access"}).as_object().unwrap());
        assert_eq!(shared, vec!["vlan_mode"]);
        assert_eq!(differing["tag"], json!([10, 20]));
    }
}
