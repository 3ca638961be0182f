//! The semantic text of an event: what gets embedded. Short on purpose (the model's cost
//! grows with tokens and mean pooling dilutes long texts; aim under ~80 tokens): the event in
//! words, its summary, and what it changed (any field names, before → after). Documented in `docs/semantic-text.md`.

use crate::text::{Fact, facts, words};
use serde_json::Value;

/// Facts of the event shown (the model's cost grows with tokens; mean pooling dilutes).
const MAX_FACTS: usize = 4;

/// `interface:eth0` → `eth0`; connection UUIDs are cut to their first 8 characters (a UUID
/// is noise to a sentence model).
fn display_name<'a>(element_type: &str, element_id: &'a str) -> &'a str {
    let name = element_id.split_once(':').map(|(_, n)| n).unwrap_or(element_id);
    if element_type == "connection" && name.len() > 13 { &name[..8] } else { name }
}

/// Builds the text: `<type> <name>: <action>. <summary>. <facts>.` Only the event itself: the
/// element's other state and its earlier actions describe other events, and measured, they
/// made answers worse (docs/decisions.md, "Semantic text").
pub fn semantic_text(element_id: &str, element_type: &str, action: &str, summary: &str, details: &Value) -> String {
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
    if !shown.is_empty() {
        text.push(' ');
        text.push_str(&shown.iter().map(Fact::text).collect::<Vec<_>>().join(", "));
        text.push('.');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_names_the_event_and_its_changes() {
        let text = semantic_text(
            "interface:eth0",
            "interface",
            "link.down",
            "eth0 lost carrier",
            &json!({"before": {"carrier": true}, "after": {"carrier": false}, "changed": ["carrier"]}),
        );
        assert_eq!(text, "interface eth0: link down. eth0 lost carrier. carrier yes → no.");
    }

    #[test]
    fn generic_field_names_reach_the_model() {
        let text = semantic_text(
            "interface:ens4",
            "interface",
            "device_state",
            "",
            &json!({"old_state": "ip-config", "new_state": "failed", "reason": "dhcp-failed"}),
        );
        assert_eq!(text, "interface ens4: device state. state ip-config → failed, reason dhcp-failed.");
    }

    #[test]
    fn connection_uuids_are_shortened() {
        let text = semantic_text("connection:0f1e2d3c-1111-2222-3333-444455556666", "connection", "added", "", &json!({}));
        assert_eq!(text, "connection 0f1e2d3c: added.");
    }
}
