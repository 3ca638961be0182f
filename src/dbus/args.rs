//! Checking D-Bus arguments before anything is done with them.

use super::error::AgentError;
use crate::analytics::anomaly::{self, AnomalyOptions, Rule};
use crate::analytics::timeline::TimelineOptions;
use crate::event::Priority;
use crate::replica::OriginSelect;
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
    ("hosts", "as"),
    ("min_seq", "t"),
    ("max_staleness_ms", "t"),
    ("wait_ms", "u"),
    ("thorough", "b"),
];

/// Hosts named in one `hosts` option, at most.
pub const MAX_HOSTS: usize = 1000;
/// How long a read may wait for a replica to receive `min_seq`.
pub const MAX_WAIT_MS: u32 = 60_000;

/// Parses `Search` options into filters, a limit (default 10) and the origins covered.
pub fn search_options(options: &HashMap<String, OwnedValue>) -> Result<(Filters, usize, OriginSelect), AgentError> {
    let mut filters = Filters::default();
    let mut limit_value = 10usize;
    let mut select = OriginSelect::default();
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
            ("hosts", Value::Array(items)) if value.value_signature() == "as" => select.hosts = hosts(items)?,
            ("min_seq", Value::U64(seq)) => select.min_seq = Some(*seq),
            ("max_staleness_ms", Value::U64(ms)) => select.max_staleness_ms = Some(*ms),
            ("wait_ms", Value::U32(ms)) if *ms <= MAX_WAIT_MS => select.wait_ms = u64::from(*ms),
            ("wait_ms", _) => return Err(AgentError::invalid(format!("wait_ms must be at most {MAX_WAIT_MS}"))),
            ("thorough", Value::Bool(thorough)) => select.thorough = *thorough,
            _ => return Err(wrong()),
        }
    }
    if let (Some(since), Some(until)) = (filters.since_ns, filters.until_ns)
        && since > until
    {
        return Err(AgentError::invalid("since_unix_ms is after until_unix_ms"));
    }
    Ok((filters, limit_value, select))
}

/// `FleetSearch`'s own options: which daemons, and the deadline.
#[derive(Debug, Default)]
pub struct FleetOptions {
    pub daemons: Vec<String>,
    pub group: Option<String>,
    pub deadline_ms: Option<u64>,
}

pub const FLEET_OPTIONS: &[(&str, &str)] = &[("daemons", "as"), ("fleet", "s"), ("deadline_ms", "u")];

/// Splits `FleetSearch` options into its own and the `Search` options passed to each daemon.
pub fn fleet_options(mut options: HashMap<String, OwnedValue>) -> Result<(FleetOptions, HashMap<String, OwnedValue>), AgentError> {
    let mut out = FleetOptions::default();
    for (key, _) in FLEET_OPTIONS {
        let Some(value) = options.remove(*key) else { continue };
        match (checked_key(key, &value, FLEET_OPTIONS)?, &*value) {
            ("daemons", Value::Array(items)) => {
                if items.len() > MAX_HOSTS {
                    return Err(AgentError::invalid(format!("daemons names {} daemons, more than {MAX_HOSTS}", items.len())));
                }
                for item in items.iter() {
                    let Value::Str(name) = item else { unreachable!("checked_key checked the type") };
                    out.daemons.push(short_name(key, name)?);
                }
            }
            ("fleet", Value::Str(s)) => out.group = Some(short_name(key, s)?),
            ("deadline_ms", Value::U32(ms)) if (1..=crate::fanout::MAX_DEADLINE_MS).contains(&u64::from(*ms)) => {
                out.deadline_ms = Some(u64::from(*ms))
            }
            ("deadline_ms", _) => return Err(AgentError::invalid(format!("deadline_ms must be 1 to {}", crate::fanout::MAX_DEADLINE_MS))),
            _ => unreachable!("checked_key checked the type"),
        }
    }
    if out.daemons.is_empty() == out.group.is_none() {
        return Err(AgentError::invalid("name the daemons to ask (daemons) or a group (fleet), one of the two"));
    }
    Ok((out, options))
}

/// Host names: each a valid origin name, at most `MAX_HOSTS`, none twice.
fn hosts(items: &zbus::zvariant::Array<'_>) -> Result<Vec<String>, AgentError> {
    if items.len() > MAX_HOSTS {
        return Err(AgentError::invalid(format!("hosts names {} hosts, more than {MAX_HOSTS}", items.len())));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items.iter() {
        let Value::Str(name) = item else { return Err(AgentError::invalid("hosts must be a list of strings")) };
        crate::names::check_origin_name(name).map_err(|e| AgentError::invalid(format!("hosts: {e}")))?;
        if !out.iter().any(|h| h == name.as_str()) {
            out.push(name.to_string());
        }
    }
    if out.is_empty() {
        return Err(AgentError::invalid("hosts must name at least one host (leave it out for all)"));
    }
    Ok(out)
}

/// The option keys `GetTimeline` accepts.
pub const TIMELINE_OPTIONS: &[(&str, &str)] = &[("element_id", "s"), ("limit", "u")];

pub fn timeline_options(options: &HashMap<String, OwnedValue>) -> Result<TimelineOptions, AgentError> {
    let mut out = TimelineOptions::default();
    for (key, value) in options {
        match (checked_key(key, value, TIMELINE_OPTIONS)?, &**value) {
            ("element_id", Value::Str(s)) => out.element_id = Some(element_id(s)?.to_owned()),
            ("limit", Value::U32(n)) => out.limit = Some(*n as usize),
            _ => unreachable!("checked_key checked the type"),
        }
    }
    Ok(out)
}

/// The option keys `DetectAnomalies` accepts.
pub const ANOMALY_OPTIONS: &[(&str, &str)] =
    &[("until_unix_ms", "x"), ("element_type", "s"), ("baseline_days", "u"), ("limit", "u"), ("rules", "as")];

pub fn anomaly_options(options: &HashMap<String, OwnedValue>, now_ns: i64) -> Result<AnomalyOptions, AgentError> {
    let mut out = AnomalyOptions {
        until_ns: now_ns,
        element_type: None,
        baseline_days: anomaly::DEFAULT_BASELINE_DAYS,
        limit: anomaly::DEFAULT_FINDINGS,
        rules: Rule::ALL.to_vec(),
    };
    for (key, value) in options {
        match (checked_key(key, value, ANOMALY_OPTIONS)?, &**value) {
            ("until_unix_ms", Value::I64(ms)) => out.until_ns = ms_to_ns(key, *ms)?,
            ("element_type", Value::Str(s)) => out.element_type = Some(short_name(key, s)?),
            ("baseline_days", Value::U32(d)) => {
                if *d > anomaly::MAX_BASELINE_DAYS {
                    return Err(AgentError::invalid(format!("baseline_days must be at most {}", anomaly::MAX_BASELINE_DAYS)));
                }
                out.baseline_days = *d;
            }
            ("limit", Value::U32(n)) => out.limit = limit(*n)?,
            ("rules", Value::Array(items)) => {
                let mut rules = Vec::new();
                for item in items.iter() {
                    let Value::Str(name) = item else { unreachable!("checked_key checked the type") };
                    let rule = Rule::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
                        AgentError::invalid(format!("unknown rule {name:?} (known: {})", known.join(", ")))
                    })?;
                    rules.push(rule);
                }
                if rules.is_empty() {
                    return Err(AgentError::invalid("rules must name at least one rule"));
                }
                out.rules = rules;
            }
            _ => unreachable!("checked_key checked the type"),
        }
    }
    Ok(out)
}

/// The key if it is one of `known` and its value has the expected D-Bus signature.
fn checked_key<'k>(key: &'k str, value: &Value<'_>, known: &[(&str, &str)]) -> Result<&'k str, AgentError> {
    let expected = known.iter().find(|(k, _)| *k == key).map(|(_, t)| *t).ok_or_else(|| {
        let names: Vec<&str> = known.iter().map(|(k, _)| *k).collect();
        AgentError::invalid(format!("unknown option {key:?} (known: {})", names.join(", ")))
    })?;
    if value.value_signature().to_string() != expected {
        return Err(AgentError::invalid(format!("option {key} must be of type {expected}, not {}", value.value_signature())));
    }
    Ok(key)
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
        let (f, limit, _) = search_options(&opts(vec![
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
        let (_, _, select) = search_options(&opts(vec![("thorough", Value::Bool(true))])).unwrap();
        assert!(select.thorough);
        let err = search_options(&opts(vec![("thorough", Value::U32(1))])).unwrap_err();
        assert!(err.to_string().contains("thorough must be of type b"), "{err}");
    }

    #[test]
    fn analytics_options() {
        let t = timeline_options(&opts(vec![("element_id", Value::from("interface:eth0")), ("limit", Value::U32(7))])).unwrap();
        assert_eq!((t.element_id.as_deref(), t.limit), (Some("interface:eth0"), Some(7)));
        assert!(timeline_options(&opts(vec![("limit", Value::I64(7))])).is_err());
        let a =
            anomaly_options(&opts(vec![("rules", Value::from(vec!["burst", "novelty"])), ("baseline_days", Value::U32(7))]), 5).unwrap();
        assert_eq!((a.rules, a.baseline_days, a.until_ns), (vec![Rule::Burst, Rule::Novelty], 7, 5));
        let err = anomaly_options(&opts(vec![("rules", Value::from(vec!["magic"]))]), 0).unwrap_err();
        assert!(err.to_string().contains("unknown rule \"magic\""), "{err}");
        assert!(anomaly_options(&opts(vec![("baseline_days", Value::U32(1_000_000))]), 0).is_err());
        assert!(anomaly_options(&opts(vec![("limit", Value::U32(1_000_000_000))]), 0).is_err());
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

#[cfg(test)]
mod hostile_arguments {
    use super::*;
    use proptest::prelude::*;

    fn option_value() -> impl Strategy<Value = OwnedValue> {
        prop_oneof![
            any::<u32>().prop_map(OwnedValue::from),
            any::<i64>().prop_map(OwnedValue::from),
            any::<bool>().prop_map(OwnedValue::from),
            ".{0,40}".prop_map(|s| OwnedValue::try_from(Value::from(s)).unwrap()),
        ]
    }

    fn option_key() -> impl Strategy<Value = String> {
        prop_oneof![proptest::sample::select(SEARCH_OPTIONS).prop_map(|(k, _)| k.to_owned()), ".{0,16}"]
    }

    proptest! {
        // Bounded: 2048 cases each, well under a second.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any string for any string argument: an answer or InvalidArgs, never a panic.
        #[test]
        fn string_arguments_are_checked_not_trusted(text in "\\PC{0,300}") {
            let _ = query(&text);
            let _ = element_id(&text);
            let _ = priority(&text);
            if let Ok(v) = details(&text) {
                prop_assert!(v.is_object());
            }
        }

        /// Any option map: filters and a limit within bounds, or InvalidArgs naming why.
        #[test]
        fn search_options_of_any_shape(options in proptest::collection::hash_map(option_key(), option_value(), 0..6)) {
            if let Ok((_, limit, _)) = search_options(&options) {
                prop_assert!((1..=MAX_LIMIT as usize).contains(&limit));
            }
        }
    }
}
