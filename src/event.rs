//! The one event type every source produces and the ledger records.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// How urgently an event must be vectorized and shipped to replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Low, Self::Medium, Self::High, Self::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// Numeric rank (0 = low … 3 = critical), as stored in the index.
    pub fn rank(self) -> u8 {
        self as u8
    }

    pub fn from_rank(rank: u8) -> Option<Self> {
        Self::ALL.get(rank as usize).copied()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = EventError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| EventError(format!("unknown priority {s:?} (expected low, medium, high or critical)")))
    }
}

/// A validation failure of an event's fields; the message says which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EventError(pub String);

/// Limits that keep one event from bloating the ledger or the embedder.
pub const MAX_ELEMENT_ID_BYTES: usize = 256;
pub const MAX_NAME_BYTES: usize = 64;
pub const MAX_SUMMARY_BYTES: usize = 1024;
pub const MAX_DETAILS_BYTES: usize = 64 * 1024;
/// Arrays and objects nested deeper than this are refused: a record's line adds levels
/// around `details`, and JSON readers (ours included) stop at 128.
pub const MAX_DETAILS_DEPTH: usize = 64;

/// An event before the ledger gives it a place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub source: String,
    pub element_id: String,
    pub element_type: String,
    pub action: String,
    pub priority: Priority,
    pub summary: String,
    pub details: Value,
    /// UTC nanoseconds; `None` means "now", stamped by the ledger.
    pub ts: Option<i64>,
}

impl NewEvent {
    /// An event with the element type taken from the element id's prefix
    /// (`interface:eth0` → `interface`) and an empty summary filled in later.
    pub fn new(source: &str, element_id: &str, action: &str, priority: Priority, details: Value) -> Self {
        Self {
            source: source.to_owned(),
            element_id: element_id.to_owned(),
            element_type: element_type_of(element_id).to_owned(),
            action: action.to_owned(),
            priority,
            summary: String::new(),
            details,
            ts: None,
        }
    }

    pub fn with_summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }

    /// Checks every field against the limits above; the ledger refuses what fails.
    pub fn validate(&self) -> Result<(), EventError> {
        check_identifier("element_id", &self.element_id, MAX_ELEMENT_ID_BYTES, true)?;
        check_identifier("element_type", &self.element_type, MAX_NAME_BYTES, false)?;
        check_identifier("action", &self.action, MAX_NAME_BYTES, false)?;
        check_identifier("source", &self.source, MAX_NAME_BYTES, false)?;
        if self.summary.len() > MAX_SUMMARY_BYTES {
            return Err(EventError(format!("summary is {} bytes, more than the limit of {MAX_SUMMARY_BYTES}", self.summary.len())));
        }
        if self.summary.chars().any(char::is_control) {
            return Err(EventError("summary contains control characters".into()));
        }
        let details_len = serde_json::to_vec(&self.details).map(|v| v.len()).unwrap_or(usize::MAX);
        if details_len > MAX_DETAILS_BYTES {
            return Err(EventError(format!("details are {details_len} bytes of JSON, more than the limit of {MAX_DETAILS_BYTES}")));
        }
        if depth(&self.details) > MAX_DETAILS_DEPTH {
            return Err(EventError(format!("details nest arrays and objects more than {MAX_DETAILS_DEPTH} levels deep")));
        }
        Ok(())
    }

    /// Makes an event a source produced recordable when it is not: control characters in
    /// the summary become spaces, an overlong summary is cut with `…`, and details beyond
    /// the size limit lose list items and string tails — each cut marked in place and its
    /// path listed under `details.truncated` — until they fit. Returns the event and what
    /// was cut. Identifiers that break the rules cannot be mended: that is an error (the
    /// caller records an `event.rejected` instead).
    pub fn fit(mut self) -> Result<(Self, Vec<String>), EventError> {
        let mut cuts = Vec::new();
        if self.summary.chars().any(char::is_control) {
            self.summary = self.summary.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            cuts.push("summary: control characters replaced".to_owned());
        }
        if self.summary.len() > MAX_SUMMARY_BYTES {
            self.summary = format!("{}…", truncate_at_char(&self.summary, MAX_SUMMARY_BYTES - '…'.len_utf8()));
            cuts.push("summary: shortened".to_owned());
        }
        let mut paths = Vec::new();
        for _ in 0..256 {
            let size = serde_json::to_vec(&self.details).map(|v| v.len()).unwrap_or(usize::MAX);
            // Room for the list of what was cut.
            if size + 64 * paths.len() + 32 <= MAX_DETAILS_BYTES {
                break;
            }
            match shrink_largest(&mut self.details, "details") {
                Some(path) => paths.push(path),
                None => break,
            }
        }
        if !paths.is_empty() {
            if let Value::Object(map) = &mut self.details {
                map.insert("truncated".into(), Value::from(paths.clone()));
            }
            cuts.extend(paths.into_iter().map(|p| format!("{p}: shortened")));
        }
        self.validate()?;
        Ok((self, cuts))
    }

    /// The summary, or one generated from the event's content when a caller gave none
    /// (imports, RecordEvent): what happened to which element, and its first changes.
    pub fn summary_or_default(&self) -> String {
        if self.summary.is_empty() {
            crate::text::generated_summary(&self.element_id, &self.action, &self.details)
        } else {
            self.summary.clone()
        }
    }
}

/// Lists keep this many items when shortened; strings this many bytes.
const KEEP_ITEMS: usize = 16;
const KEEP_STRING_BYTES: usize = 256;

fn truncate_at_char(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Shortens the largest list or string under `value` (the one whose JSON is longest) that
/// can still be shortened; returns its path, or `None` when nothing can be.
fn shrink_largest(value: &mut Value, path: &str) -> Option<String> {
    fn find(value: &Value, path: String, best: &mut Option<(usize, String)>) {
        let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0);
        match value {
            Value::Array(items) => {
                if items.len() > KEEP_ITEMS + 1 && best.as_ref().is_none_or(|(s, _)| size(value) > *s) {
                    *best = Some((size(value), path.clone()));
                }
                for (i, item) in items.iter().enumerate() {
                    find(item, format!("{path}[{i}]"), best);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    find(v, format!("{path}.{k}"), best);
                }
            }
            Value::String(text) if text.len() > KEEP_STRING_BYTES + 64 && best.as_ref().is_none_or(|(s, _)| text.len() > *s) => {
                *best = Some((text.len(), path));
            }
            _ => {}
        }
    }
    fn at<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
        let mut node = value;
        for part in path.split('.').skip(1).flat_map(|p| p.split('[')) {
            node = match part.strip_suffix(']') {
                Some(index) => node.get_mut(index.parse::<usize>().ok()?)?,
                None => node.get_mut(part)?,
            };
        }
        Some(node)
    }
    let mut best = None;
    find(value, path.to_owned(), &mut best);
    let (_, target) = best?;
    // Paths are built from keys as they are; a key holding '.' or '[' cannot be walked back.
    let node = at(value, &target)?;
    match node {
        Value::Array(items) => {
            let more = items.len() - KEEP_ITEMS;
            items.truncate(KEEP_ITEMS);
            items.push(Value::from(format!("… {more} more (truncated)")));
        }
        Value::String(text) => {
            let cut = text.len() - KEEP_STRING_BYTES;
            *text = format!("{}… ({cut} bytes truncated)", truncate_at_char(text, KEEP_STRING_BYTES));
        }
        _ => return None,
    }
    Some(target)
}

/// `interface:eth0` → `interface`; an id without a prefix is of type `element`.
pub fn element_type_of(element_id: &str) -> &str {
    match element_id.split_once(':') {
        Some((kind, _)) if !kind.is_empty() => kind,
        _ => "element",
    }
}

fn check_identifier(field: &str, value: &str, max: usize, allow_free_text: bool) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError(format!("{field} must not be empty")));
    }
    if value.len() > max {
        return Err(EventError(format!("{field} is {} bytes, more than the limit of {max}", value.len())));
    }
    if value.chars().any(|c| c.is_control() || (!allow_free_text && c.is_whitespace())) {
        return Err(EventError(format!("{field} {value:?} contains control characters or spaces")));
    }
    if !allow_free_text && !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')) {
        return Err(EventError(format!("{field} {value:?} may only contain ASCII letters, digits and . _ - : /")));
    }
    Ok(())
}

/// How deeply arrays and objects nest in `value` (a scalar is 0), without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// Current UTC time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Current UTC time in whole seconds since the Unix epoch (signatures' timestamps).
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn details_nested_too_deep_are_refused_before_the_ledger_could_not_read_them_back() {
        let nest = |n: usize| (0..n).fold(json!(1), |inner, _| json!([inner]));
        assert_eq!(depth(&nest(3)), 3);
        let ok = NewEvent::new("t", "interface:eth0", "x", Priority::Low, nest(MAX_DETAILS_DEPTH));
        assert!(ok.validate().is_ok());
        let deep = NewEvent::new("t", "interface:eth0", "x", Priority::Low, nest(MAX_DETAILS_DEPTH + 1));
        assert!(deep.validate().unwrap_err().0.contains("levels deep"));
    }

    #[test]
    fn element_type_comes_from_prefix() {
        assert_eq!(element_type_of("interface:eth0"), "interface");
        assert_eq!(element_type_of("connection:1234-5678"), "connection");
        assert_eq!(element_type_of("eth0"), "element");
        assert_eq!(element_type_of(":x"), "element");
    }

    #[test]
    fn priorities_parse_and_order() {
        assert_eq!("critical".parse::<Priority>().unwrap(), Priority::Critical);
        assert!("urgent".parse::<Priority>().is_err());
        assert!(Priority::Critical > Priority::High && Priority::Medium > Priority::Low);
        for p in Priority::ALL {
            assert_eq!(Priority::from_rank(p.rank()), Some(p));
        }
    }

    #[test]
    fn fit_shortens_what_is_too_long_and_marks_it() {
        let ports: Vec<String> = (0..1900).map(|i| format!("vm-port-number-{i:05}")).collect();
        let e = NewEvent::new(
            "ovsdb",
            "bridge:br-big",
            "port.added",
            Priority::Medium,
            json!({"port": "p1", "before": {"ports": ports[..1899]}, "after": {"ports": ports}, "changed": ["ports"]}),
        )
        .with_summary("connection \"office\twifi\" added\n");
        assert!(e.validate().is_err(), "too big and with control characters as it came");
        let (fitted, cuts) = e.fit().unwrap();
        fitted.validate().unwrap();
        assert_eq!(fitted.summary, "connection \"office wifi\" added ");
        assert_eq!(fitted.details["port"], "p1");
        let after = fitted.details["after"]["ports"].as_array().unwrap();
        assert_eq!(after.len(), KEEP_ITEMS + 1);
        assert_eq!(after[KEEP_ITEMS], "… 1884 more (truncated)");
        assert!(fitted.details["truncated"].as_array().unwrap().iter().any(|p| p == "details.after.ports"));
        assert!(cuts.len() >= 2, "{cuts:?}");
        let bad = NewEvent::new("nm", "interface:eth0", "link down", Priority::High, json!({}));
        assert!(bad.fit().is_err(), "a bad identifier cannot be mended");
    }

    #[test]
    fn validation_names_the_field() {
        let ok = NewEvent::new("test", "interface:eth0", "link.down", Priority::High, json!({}));
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.action = "link down".into();
        assert!(bad.validate().unwrap_err().0.contains("action"));
        let mut bad = ok.clone();
        bad.element_id = "x".repeat(300);
        assert!(bad.validate().unwrap_err().0.contains("element_id"));
        let mut bad = ok;
        bad.details = json!({"blob": "y".repeat(70_000)});
        assert!(bad.validate().unwrap_err().0.contains("details"));
    }
}
