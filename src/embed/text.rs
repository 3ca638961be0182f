//! The semantic text of an event: what gets embedded. Short on purpose (the model's cost
//! grows with tokens and mean pooling dilutes long texts; aim under ~80 tokens): the event in
//! words, its summary, what it changed (any field names, before → after), the element's state
//! and its last few actions. Documented in `docs/semantic-text.md`.

use crate::text::{Fact, facts, value_words, words};
use serde_json::Value;

/// State fields worth naming, when an element has them and the event did not mention them.
const KEY_FIELDS: [&str; 12] = [
    "state",
    "link_state",
    "admin_state",
    "carrier",
    "connectivity",
    "error",
    "mtu",
    "controller",
    "bridge",
    "type",
    "ofport",
    "addresses",
];

/// Facts of the event shown, and state fields after them.
const MAX_FACTS: usize = 4;
const MAX_STATE_FIELDS: usize = 3;

/// `interface:eth0` → `eth0`; connection UUIDs are cut to their first 8 characters (a UUID
/// is noise to a sentence model).
fn display_name<'a>(element_type: &str, element_id: &'a str) -> &'a str {
    let name = element_id.split_once(':').map(|(_, n)| n).unwrap_or(element_id);
    if element_type == "connection" && name.len() > 13 { &name[..8] } else { name }
}

/// Builds the text: `<type> <name>: <action>. <summary>. <facts>. state: k v, …. recent: a, b`.
pub fn semantic_text(
    element_id: &str,
    element_type: &str,
    action: &str,
    summary: &str,
    details: &Value,
    state: &Value,
    recent_actions: &[String],
) -> String {
    let mut text = format!("{} {}: {}.", words(element_type), display_name(element_type, element_id), words(action));
    let summary = summary.trim();
    if !summary.is_empty() {
        text.push(' ');
        text.extend(summary.chars().take(120));
        if !summary.ends_with('.') {
            text.push('.');
        }
    }
    let shown: Vec<Fact> =
        facts(details).into_iter().filter(|f| !summary.contains(&f.after) || f.before.is_some()).take(MAX_FACTS).collect();
    let mentioned: Vec<String> = shown.iter().map(|f| f.field.clone()).collect();
    if !shown.is_empty() {
        text.push(' ');
        text.push_str(&shown.iter().map(Fact::text).collect::<Vec<_>>().join(", "));
        text.push('.');
    }
    let mut fields: Vec<String> = Vec::new();
    if let Value::Object(map) = state {
        for key in KEY_FIELDS.iter().filter(|k| map.contains_key(**k) && !mentioned.contains(&words(k))) {
            fields.push(format!("{} {}", words(key), value_words(&map[*key], 40)));
            if fields.len() == MAX_STATE_FIELDS {
                break;
            }
        }
    }
    if !fields.is_empty() {
        text.push_str(" state: ");
        text.push_str(&fields.join(", "));
        text.push('.');
    }
    if !recent_actions.is_empty() {
        let recent: Vec<String> = recent_actions.iter().take(3).map(|a| words(a)).collect();
        text.push_str(" recent: ");
        text.push_str(&recent.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_names_the_event_its_changes_state_and_history() {
        let text = semantic_text(
            "interface:eth0",
            "interface",
            "link.down",
            "eth0 lost carrier",
            &json!({"before": {"carrier": true}, "after": {"carrier": false}, "changed": ["carrier"]}),
            &json!({"carrier": false, "state": "unavailable", "mtu": 1500, "present": true}),
            &["state.changed".into(), "link.up".into()],
        );
        assert_eq!(
            text,
            "interface eth0: link down. eth0 lost carrier. carrier yes → no. state: state unavailable, mtu 1500. recent: state changed, link up"
        );
    }

    #[test]
    fn generic_field_names_reach_the_model() {
        let text = semantic_text(
            "interface:ens4",
            "interface",
            "device_state",
            "",
            &json!({"old_state": "ip-config", "new_state": "failed", "reason": "dhcp-failed"}),
            &json!({}),
            &[],
        );
        assert_eq!(text, "interface ens4: device state. state ip-config → failed, reason dhcp-failed.");
    }

    #[test]
    fn connection_uuids_are_shortened() {
        let text = semantic_text("connection:0f1e2d3c-1111-2222-3333-444455556666", "connection", "added", "", &json!({}), &json!({}), &[]);
        assert_eq!(text, "connection 0f1e2d3c: added.");
    }
}
