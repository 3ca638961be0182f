//! Checking D-Bus arguments before anything is done with them.

use super::error::AgentError;
use crate::event::Priority;
use crate::vector::Filters;
use std::collections::HashMap;
use zbus::zvariant::{OwnedValue, Value};

pub use crate::search::MAX_QUERY_BYTES;
pub const MAX_LIMIT: u32 = 1000;

pub fn query(text: &str) -> Result<&str, AgentError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(AgentError::invalid("query must not be empty"));
    }
    if text.len() > MAX_QUERY_BYTES {
        return Err(AgentError::invalid(format!("query is {} bytes, more than the limit of {MAX_QUERY_BYTES}", text.len())));
    }
    Ok(trimmed)
}

pub fn limit(limit: u32) -> Result<usize, AgentError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AgentError::invalid(format!("limit must be between 1 and {MAX_LIMIT}, not {limit}")));
    }
    Ok(limit as usize)
}

pub fn element_id(id: &str) -> Result<&str, AgentError> {
    if id.is_empty() || id.len() > crate::event::MAX_ELEMENT_ID_BYTES || id.chars().any(char::is_control) {
        return Err(AgentError::invalid(format!(
            "element_id must be 1 to {} bytes without control characters",
            crate::event::MAX_ELEMENT_ID_BYTES
        )));
    }
    Ok(id)
}

pub fn priority(p: &str) -> Result<Priority, AgentError> {
    p.parse().map_err(|e: crate::event::EventError| AgentError::invalid(e.0))
}

/// `details_json` must be a JSON object.
pub fn details(json: &str) -> Result<serde_json::Value, AgentError> {
    if json.len() > crate::event::MAX_DETAILS_BYTES {
        return Err(AgentError::invalid(format!(
            "details_json is {} bytes, more than the limit of {}",
            json.len(),
            crate::event::MAX_DETAILS_BYTES
        )));
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| AgentError::invalid(format!("details_json is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(AgentError::invalid("details_json must be a JSON object"));
    }
    Ok(value)
}

/// The option keys `Search` accepts, with their D-Bus types.
pub const SEARCH_OPTIONS: &[(&str, &str)] = &[
    ("limit", "u"),
    ("element_id", "s"),
    ("element_type", "s"),
    ("action", "s"),
    ("source", "s"),
    ("min_priority", "s"),
    ("since_unix_ms", "x"),
    ("until_unix_ms", "x"),
];

/// Parses `Search` options into filters and a limit (default 10).
pub fn search_options(options: &HashMap<String, OwnedValue>) -> Result<(Filters, usize), AgentError> {
    let mut filters = Filters::default();
    let mut limit_value = 10usize;
    for (key, value) in options {
        let value: &Value<'_> = value;
        let expected = SEARCH_OPTIONS.iter().find(|(k, _)| k == key).map(|(_, t)| *t).ok_or_else(|| {
            let known: Vec<&str> = SEARCH_OPTIONS.iter().map(|(k, _)| *k).collect();
            AgentError::invalid(format!("unknown option {key:?} (known: {})", known.join(", ")))
        })?;
        let wrong = || AgentError::invalid(format!("option {key} must be of type {expected}, not {}", value.value_signature()));
        match (key.as_str(), value) {
            ("limit", Value::U32(n)) => limit_value = limit(*n)?,
            ("element_id", Value::Str(s)) => filters.element_id = Some(element_id(s)?.to_owned()),
            ("element_type", Value::Str(s)) => filters.element_type = Some(short_name(key, s)?),
            ("action", Value::Str(s)) => filters.action = Some(short_name(key, s)?),
            ("source", Value::Str(s)) => filters.source = Some(short_name(key, s)?),
            ("min_priority", Value::Str(s)) => filters.min_priority = Some(priority(s)?),
            ("since_unix_ms", Value::I64(ms)) => filters.since_ns = Some(ms_to_ns(key, *ms)?),
            ("until_unix_ms", Value::I64(ms)) => filters.until_ns = Some(ms_to_ns(key, *ms)?),
            _ => return Err(wrong()),
        }
    }
    if let (Some(since), Some(until)) = (filters.since_ns, filters.until_ns) {
        if since > until {
            return Err(AgentError::invalid("since_unix_ms is after until_unix_ms"));
        }
    }
    Ok((filters, limit_value))
}

fn short_name(key: &str, s: &str) -> Result<String, AgentError> {
    if s.is_empty() || s.len() > crate::event::MAX_NAME_BYTES {
        return Err(AgentError::invalid(format!("option {key} must be 1 to {} bytes", crate::event::MAX_NAME_BYTES)));
    }
    Ok(s.to_owned())
}

pub fn ms_to_ns(key: &str, ms: i64) -> Result<i64, AgentError> {
    ms.checked_mul(1_000_000).filter(|ns| *ns >= 0).ok_or_else(|| AgentError::invalid(format!("{key} {ms} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedValue> {
        pairs.into_iter().map(|(k, v)| (k.to_owned(), OwnedValue::try_from(v).unwrap())).collect()
    }

    #[test]
    fn options_parse_and_refuse_unknown_keys_and_types() {
        let (f, limit) = search_options(&opts(vec![
            ("limit", Value::U32(5)),
            ("min_priority", Value::from("high")),
            ("since_unix_ms", Value::I64(1000)),
        ]))
        .unwrap();
        assert_eq!((limit, f.min_priority, f.since_ns), (5, Some(Priority::High), Some(1_000_000_000)));
        let err = search_options(&opts(vec![("colour", Value::from("red"))])).unwrap_err();
        assert!(err.to_string().contains("unknown option \"colour\""));
        let err = search_options(&opts(vec![("limit", Value::from("ten"))])).unwrap_err();
        assert!(err.to_string().contains("limit must be of type u"), "{err}");
        assert!(search_options(&opts(vec![("limit", Value::U32(0))])).is_err());
        assert!(search_options(&opts(vec![("since_unix_ms", Value::I64(i64::MAX))])).is_err());
    }

    #[test]
    fn scalar_checks() {
        assert!(query("  ").is_err());
        assert!(query(&"q".repeat(5000)).is_err());
        assert!(limit(0).is_err() && limit(1001).is_err() && limit(1000).is_ok());
        assert!(details("[1]").is_err() && details("{").is_err() && details("{\"a\":1}").is_ok());
        assert!(details(r#"{"a":"\udc80"}"#).is_err());
        assert!(priority("urgent").is_err());
    }
}
