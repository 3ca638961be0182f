//! Which way a change went. A sentence model places "port added" and "port removed", "link
//! up" and "link down" close together (they share all their words but one), so a query that
//! says which way ("came back online", "was unplugged") would get both. The query's direction
//! and each candidate event's are read here; hits going the other way are ranked lower, not
//! dropped (the reading is by words and can be wrong).

use super::hybrid::Change;
use crate::text::words;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Something appeared, came up, was attached or enabled.
    Up,
    /// Something went away, went down, failed or was disabled.
    Down,
}

/// Query words that say something failed: the query is about a failure whatever else it
/// says ("failed to activate" asks for failures, not activations).
const FAILURE_WORDS: &[&str] = &["fail", "failed", "failing", "failure", "failures", "broke", "broken", "error", "errors", "crashed"];

const QUERY_UP: &[&str] = &[
    "up",
    "online",
    "back",
    "restored",
    "recovered",
    "added",
    "add",
    "attached",
    "attach",
    "joined",
    "plugged",
    "created",
    "appeared",
    "new",
    "enabled",
    "enable",
    "activated",
    "connected",
    "reconnected",
    "detected",
    "started",
    "established",
];

const QUERY_DOWN: &[&str] = &[
    "down",
    "offline",
    "lost",
    "loss",
    "losing",
    "unplugged",
    "removed",
    "remove",
    "detached",
    "detach",
    "deleted",
    "delete",
    "dropped",
    "disappeared",
    "vanished",
    "gone",
    "disabled",
    "disable",
    "deactivated",
    "disconnected",
    "outage",
    "outages",
    "stopped",
    "unreachable",
];

/// Words in an event's action or new value.
const EVENT_UP: &[&str] =
    &["up", "added", "add", "create", "created", "activated", "enabled", "connected", "attached", "full", "yes", "detected"];
const EVENT_DOWN: &[&str] = &[
    "down",
    "removed",
    "remove",
    "delete",
    "deleted",
    "deactivated",
    "disabled",
    "disconnected",
    "failed",
    "error",
    "lost",
    "none",
    "limited",
    "no",
    "unavailable",
    "detached",
];

/// Words in an event's action or new value that say something failed.
const EVENT_FAILURE: &[&str] = &["failed", "failure", "error", "errors"];

/// Whether a query asks about failures ("device failed to activate": a failure, not a
/// deactivation, though both went down).
pub fn query_asks_failure(words: &[String]) -> bool {
    words.iter().any(|w| FAILURE_WORDS.contains(&w.as_str()))
}

/// Whether an event is a failure: its action or what its first change ended at says so.
pub fn event_is_failure(action: &str, first_change: Option<&Change>) -> bool {
    let failed = |text: &str| text.split(|c: char| !c.is_alphanumeric()).any(|w| EVENT_FAILURE.contains(&w.to_lowercase().as_str()));
    failed(action) || first_change.is_some_and(|c| failed(&c.after))
}

/// The direction a query asks about, if it names one (and only one).
pub fn of_query(words: &[String]) -> Option<Direction> {
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    if query_asks_failure(words) {
        return Some(Direction::Down);
    }
    match (has(QUERY_UP), has(QUERY_DOWN)) {
        (true, false) => Some(Direction::Up),
        (false, true) => Some(Direction::Down),
        _ => None,
    }
}

/// The direction of an event: from its action's words (`port.added`, `link.down`), else from
/// what its first change ended at (`state up → down`, `controller none → br0`).
pub fn of_event(action: &str, first_change: Option<&Change>) -> Option<Direction> {
    let action = words(action);
    if let Some(d) = of_words(action.split(' ')) {
        return Some(d);
    }
    let change = first_change?;
    match of_words(change.after.split(|c: char| !c.is_alphanumeric())) {
        Some(d) => Some(d),
        // Something set where nothing was: attached, assigned.
        None if matches!(change.before.as_str(), "none" | "") && !change.after.is_empty() => Some(Direction::Up),
        None => None,
    }
}

fn of_words<'a>(mut words: impl Iterator<Item = &'a str>) -> Option<Direction> {
    words.find_map(|w| {
        if EVENT_DOWN.contains(&w) {
            Some(Direction::Down)
        } else if EVENT_UP.contains(&w) {
            Some(Direction::Up)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An event's direction from its details, as a search reads it.
    fn of(action: &str, details: serde_json::Value) -> Option<Direction> {
        of_event(action, Change::all_in(&details).first())
    }

    fn q(text: &str) -> Option<Direction> {
        of_query(&text.split(' ').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn queries_name_a_direction_or_none() {
        assert_eq!(q("interface back online"), Some(Direction::Up));
        assert_eq!(q("port unplugged from br-ex"), Some(Direction::Down));
        assert_eq!(q("device failed to activate"), Some(Direction::Down), "a failure, whatever else");
        assert_eq!(q("mtu changed"), None);
        assert_eq!(q("ports added and removed"), None, "both ways: no preference");
    }

    #[test]
    fn events_by_action_or_by_where_their_change_ended() {
        assert_eq!(of("port.added", json!({})), Some(Direction::Up));
        assert_eq!(of("link.down", json!({})), Some(Direction::Down));
        assert_eq!(of("oper_status", json!({"old_state": "down", "new_state": "up"})), Some(Direction::Up));
        assert_eq!(of("connectivity", json!({"connectivity": "none", "previous": "full"})), Some(Direction::Down));
        assert_eq!(
            of("properties.changed", json!({"before": {"controller": null}, "after": {"controller": "br0"}, "changed": ["controller"]})),
            Some(Direction::Up)
        );
        assert_eq!(of("mtu", json!({"from": 1500, "to": 9000})), None);
    }

    #[test]
    fn failures_are_told_from_other_ways_down() {
        let words = |t: &str| t.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert!(query_asks_failure(&words("device failed to activate")));
        assert!(!query_asks_failure(&words("profile went down")));
        let failed = |action: &str, details: serde_json::Value| event_is_failure(action, Change::all_in(&details).first());
        assert!(failed("state.changed", json!({"old_state": "ip-config", "new_state": "failed"})));
        assert!(failed("iface_error", json!({"error": "could not add network device"})));
        assert!(!failed(
            "connection.deactivated",
            json!({"before": {"state": "activated"}, "after": {"state": "deactivated"}, "changed": ["state"]})
        ));
    }
}
