//! The semantic text of an event: what gets embedded. Short on purpose (the model's cost
//! grows with tokens; aim under 64): the event in words, the element's current state and
//! its last few actions. The template is documented in `docs/semantic-text.md`.

use serde_json::Value;

/// State fields worth naming first, when an element has them.
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

/// Words for an identifier: `link.down` → `link down`, `ovs-interface` → `ovs interface`.
pub fn words(id: &str) -> String {
    id.replace(['.', '_', '-', '/'], " ")
}

/// `interface:eth0` → (`interface`, `eth0`); connection UUIDs are shortened.
fn split_element(element_id: &str) -> (&str, &str) {
    match element_id.split_once(':') {
        Some((kind, name)) => (kind, name),
        None => ("element", element_id),
    }
}

fn short_value(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().take(3).map(short_value).collect::<Vec<_>>().join(" "),
        Value::Null => "none".into(),
        other => other.to_string(),
    };
    s.chars().take(40).collect()
}

/// Builds the text: `<type> <name>: <action>. <summary>. state: k v, …. recent: a, b, c`.
pub fn semantic_text(
    element_id: &str,
    element_type: &str,
    action: &str,
    summary: &str,
    details: &Value,
    state: &Value,
    recent_actions: &[String],
) -> String {
    let (_, name) = split_element(element_id);
    let name = if element_type == "connection" && name.len() > 13 { &name[..8] } else { name };
    let mut text = format!("{} {}: {}.", words(element_type), name, words(action));
    let summary = summary.trim();
    if !summary.is_empty() {
        text.push(' ');
        text.extend(summary.chars().take(120));
        if !summary.ends_with('.') {
            text.push('.');
        }
    }
    let changed: Vec<&str> =
        details.get("changed").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    if let Value::Object(map) = state {
        let ordered = changed.iter().copied().chain(KEY_FIELDS).filter(|k| map.contains_key(*k));
        for key in ordered {
            let entry = format!("{} {}", words(key), short_value(&map[key]));
            if !fields.contains(&entry) {
                fields.push(entry);
            }
            if fields.len() == 4 {
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
    fn text_names_the_event_state_and_history() {
        let text = semantic_text(
            "interface:eth0",
            "interface",
            "link.down",
            "eth0 lost carrier",
            &json!({"changed": ["carrier"]}),
            &json!({"carrier": false, "state": "unavailable", "mtu": 1500, "present": true}),
            &["state.changed".into(), "link.up".into()],
        );
        assert_eq!(
            text,
            "interface eth0: link down. eth0 lost carrier. state: carrier false, state unavailable, mtu 1500. recent: state changed, link up"
        );
    }

    #[test]
    fn connection_uuids_are_shortened() {
        let text = semantic_text("connection:0f1e2d3c-1111-2222-3333-444455556666", "connection", "added", "", &json!({}), &json!({}), &[]);
        assert_eq!(text, "connection 0f1e2d3c: added.");
    }
}
