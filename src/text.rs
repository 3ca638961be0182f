//! An event's content as words, whatever its field names: identifiers turned into words
//! (`old_state` → "old state", `link.down` → "link down"), details flattened to
//! `field value` pairs (before → after for changes), and a one-line summary for events that
//! arrive without one. The semantic text, the lexical index and generated summaries all
//! read an event through here.

use serde_json::{Map, Value};

/// Words for an identifier: separators (`.` `_` `-` `/` `:`) become spaces, camelCase is split.
pub fn words(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 4);
    let mut prev_lower = false;
    for c in id.chars() {
        if matches!(c, '.' | '_' | '-' | '/' | ':') {
            out.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            out.push(' ');
        }
        prev_lower = c.is_lowercase();
        out.extend(c.to_lowercase());
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A value as a short text: strings as they are, lists joined, null as "none".
pub fn value_words(v: &Value, max_chars: usize) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Array(items) => {
            let shown: Vec<String> = items.iter().take(4).map(|i| value_words(i, max_chars)).collect();
            let more = if items.len() > 4 { format!(" and {} more", items.len() - 4) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        }
        Value::Object(map) => {
            map.iter().take(4).map(|(k, v)| format!("{} {}", words(k), value_words(v, max_chars))).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    };
    if text.chars().count() > max_chars { text.chars().take(max_chars).collect::<String>() + "…" } else { text }
}

/// One fact of an event: a field (as words) and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact {
    pub field: String,
    /// `Some((before, after))` for a change, else the value in `after`.
    pub before: Option<String>,
    pub after: String,
}

impl Fact {
    /// What a change's new value, or a reason, means for NetworkManager's state fields
    /// ("connectivity none" → "the host is not connected to any network").
    pub fn meaning(&self) -> Option<&'static str> {
        let told = self.before.is_some() || self.field.ends_with("reason");
        if told { crate::glossary::meaning(&self.field, &self.after) } else { None }
    }

    pub fn text(&self) -> String {
        match &self.before {
            Some(before) => format!("{} {} → {}", self.field, before, self.after),
            None => format!("{} {}", self.field, self.after),
        }
    }
}

/// The facts of an event's details, most telling first: the changed fields with before and
/// after; then pairs a generic exporter writes for a change (`old_x`/`new_x`, `from`/`to`,
/// `previous`/`current`, `x_before`/`x_after`); then every other plain field. Nested objects
/// are flattened with their path as words.
pub fn facts(details: &Value) -> Vec<Fact> {
    let Value::Object(map) = details else {
        return match details {
            Value::Null => Vec::new(),
            other => vec![Fact { field: "details".into(), before: None, after: value_words(other, 60) }],
        };
    };
    let mut out = Vec::new();
    let before = map.get("before").and_then(Value::as_object);
    let after = map.get("after").and_then(Value::as_object);
    let changed: Vec<&str> =
        map.get("changed").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    for key in &changed {
        let b = before.and_then(|m| m.get(*key)).unwrap_or(&Value::Null);
        let a = after.and_then(|m| m.get(*key)).unwrap_or(&Value::Null);
        out.push(Fact { field: words(key), before: Some(value_words(b, 40)), after: value_words(a, 40) });
    }
    let mut used: Vec<String> = vec!["before".into(), "after".into(), "changed".into(), "truncated".into()];
    for (old_key, new_key) in paired_keys(map) {
        out.push(Fact {
            field: change_field(&old_key, &new_key, map),
            before: Some(value_words(&map[&old_key], 40)),
            after: value_words(&map[&new_key], 40),
        });
        used.push(old_key);
        used.push(new_key);
    }
    // Whole-object snapshots (an element added or removed): its fields as they are.
    let snapshot = if changed.is_empty() { after.or(before) } else { None };
    if let Some(obj) = snapshot {
        flatten_into(obj, "", &mut out);
    }
    for (key, value) in map {
        if !used.contains(key) {
            match value {
                Value::Object(inner) => flatten_into(inner, &words(key), &mut out),
                _ => out.push(Fact { field: words(key), before: None, after: value_words(value, 60) }),
            }
        }
    }
    out
}

fn flatten_into(map: &Map<String, Value>, prefix: &str, out: &mut Vec<Fact>) {
    for (key, value) in map {
        let field = if prefix.is_empty() { words(key) } else { format!("{prefix} {}", words(key)) };
        match value {
            Value::Object(inner) if !inner.is_empty() => flatten_into(inner, &field, out),
            _ => out.push(Fact { field, before: None, after: value_words(value, 40) }),
        }
    }
}

/// `(old, new)` key pairs that describe one change in a generic exporter's style.
fn paired_keys(map: &Map<String, Value>) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for key in map.keys() {
        let candidates = [
            key.strip_prefix("old_").map(|rest| format!("new_{rest}")),
            key.strip_suffix("_before").map(|rest| format!("{rest}_after")),
            key.strip_prefix("prev_").map(|rest| format!("cur_{rest}")),
            (key == "from").then(|| "to".to_owned()),
            (key == "previous").then(|| "current".to_owned()),
            key.strip_prefix("old").filter(|r| r.starts_with(char::is_uppercase)).map(|rest| format!("new{rest}")),
        ];
        for new_key in candidates.into_iter().flatten() {
            if map.contains_key(&new_key) {
                pairs.push((key.clone(), new_key));
            }
        }
        // `previous` beside the field it precedes: {"connectivity": "none", "previous": "full"}.
        if key == "previous"
            && !map.contains_key("current")
            && let Some(subject) = map.keys().find(|k| !matches!(k.as_str(), "previous" | "reason") && map[*k].is_string())
        {
            pairs.push((key.clone(), subject.clone()));
        }
    }
    pairs
}

/// The field a change pair is about: `old_state`/`new_state` → "state"; `from`/`to` → the
/// `setting`/`field` the event names, if any.
fn change_field(old_key: &str, new_key: &str, map: &Map<String, Value>) -> String {
    if let Some(rest) = old_key.strip_prefix("old_").or_else(|| old_key.strip_suffix("_before")).or_else(|| old_key.strip_prefix("prev_")) {
        return words(rest);
    }
    if old_key == "previous" && new_key != "current" {
        return words(new_key);
    }
    for name in ["setting", "field", "property", "attribute"] {
        if let Some(Value::String(s)) = map.get(name) {
            return words(s);
        }
    }
    words(old_key.strip_prefix("old").unwrap_or("value"))
}

/// A one-line summary for an event that came without one: what happened to which element,
/// and the first changes or facts.
pub fn generated_summary(element_id: &str, action: &str, details: &Value) -> String {
    let (kind, name) = element_id.split_once(':').unwrap_or(("element", element_id));
    let facts = facts(details);
    let shown: Vec<String> = facts.iter().take(3).map(Fact::text).collect();
    let mut out = format!("{} {name} {}", words(kind), words(action));
    if !shown.is_empty() {
        out.push_str(": ");
        out.push_str(&shown.join(", "));
    }
    let out: String = out.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > 400 {
        let mut end = 400;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        return format!("{}…", &out[..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_become_words() {
        assert_eq!(words("link.down"), "link down");
        assert_eq!(words("ovs-interface"), "ovs interface");
        assert_eq!(words("old_state"), "old state");
        assert_eq!(words("ipv4.dns"), "ipv4 dns");
        assert_eq!(words("rxBytes"), "rx bytes");
    }

    #[test]
    fn facts_of_every_style() {
        let ours =
            facts(&json!({"before": {"state": "ip-config"}, "after": {"state": "failed"}, "changed": ["state"], "reason": "dhcp-failed"}));
        assert_eq!(ours[0].text(), "state ip-config → failed");
        assert_eq!(ours[1].text(), "reason dhcp-failed");
        let generic = facts(&json!({"old_state": "up", "new_state": "down", "reason": "carrier-lost"}));
        assert_eq!(generic[0].text(), "state up → down");
        assert_eq!(generic[1].text(), "reason carrier-lost");
        let setting = facts(&json!({"setting": "ethernet.mtu", "from": 1500, "to": 9000, "profile": "office"}));
        assert_eq!(setting[0].text(), "ethernet mtu 1500 → 9000");
        let previous = facts(&json!({"connectivity": "none", "previous": "full"}));
        assert_eq!(previous[0].text(), "connectivity full → none");
        let added = facts(&json!({"after": {"interface": "veth1", "device_type": "veth"}}));
        assert!(added.iter().any(|f| f.text() == "device type veth"), "{added:?}");
    }

    #[test]
    fn summaries_are_generated_from_the_content() {
        assert_eq!(
            generated_summary(
                "interface:ens4",
                "device_state",
                &json!({"old_state": "ip-config", "new_state": "failed", "reason": "dhcp-failed"})
            ),
            "interface ens4 device state: state ip-config → failed, reason dhcp-failed"
        );
        assert_eq!(generated_summary("bridge:br0", "create", &json!({})), "bridge br0 create");
    }
}
