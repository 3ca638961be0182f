//! Field-level differences between two JSON objects, shared by the sources.

use serde_json::{Map, Value};

/// The changed fields (sorted) and their before/after values; `None` when nothing changed.
pub struct Diff {
    pub changed: Vec<String>,
    pub before: Map<String, Value>,
    pub after: Map<String, Value>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }

    /// `field old → new, …` for the first `n` changed fields, for a summary line.
    pub fn describe(&self, n: usize) -> String {
        let parts: Vec<String> =
            self.changed.iter().take(n).map(|k| format!("{k} {} → {}", value_text(&self.before[k]), value_text(&self.after[k]))).collect();
        parts.join(", ")
    }

    /// `{"before": {…}, "after": {…}, "changed": […]}` for an event's details.
    pub fn into_details(self) -> Value {
        serde_json::json!({"before": self.before, "after": self.after, "changed": self.changed})
    }
}

/// A value as a summary shows it: strings bare, null as "none".
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

/// Compares `old` and `new` field by field; a field missing on one side counts as null.
pub fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Diff {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut d = Diff { changed: Vec::new(), before: Map::new(), after: Map::new() };
    for key in keys {
        let (a, b) = (old.get(key).unwrap_or(&Value::Null), new.get(key).unwrap_or(&Value::Null));
        if a != b {
            d.changed.push(key.clone());
            d.before.insert(key.clone(), a.clone());
            d.after.insert(key.clone(), b.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_lists_changed_fields_with_both_sides() {
        let old = json!({"mtu": 1500, "state": "up", "gone": 1}).as_object().unwrap().clone();
        let new = json!({"mtu": 9000, "state": "up", "new": true}).as_object().unwrap().clone();
        let d = diff(&old, &new);
        assert_eq!(d.changed, vec!["gone", "mtu", "new"]);
        assert_eq!(d.before["mtu"], 1500);
        assert_eq!(d.after["new"], true);
        assert_eq!(d.after["gone"], Value::Null);
        assert_eq!(d.describe(2), "gone 1 → none, mtu 1500 → 9000");
    }
}
