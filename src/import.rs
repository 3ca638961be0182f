//! `import`: events from JSON lines, and the `ledger.jsonl` of earlier ovs-port-agent
//! versions (`{ts, action, details, prev_hash, hash}`), whose old hashes are kept.

use crate::event::{NewEvent, Priority, element_type_of};
use anyhow::{Result, bail};
use serde_json::{Map, Value};
use std::io::BufRead;

/// The largest input line accepted (a record's details are limited to 64 KiB anyway).
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Reads every line first and refuses the whole input, naming the bad lines, when any line
/// is invalid: an import either happens completely or not at all.
pub fn parse_input(reader: impl BufRead) -> Result<Vec<NewEvent>> {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut legacy_prev: Option<String> = None;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line_no = i + 1;
        let line = line?;
        if line.len() > MAX_LINE_BYTES {
            errors.push(format!("line {line_no}: longer than {MAX_LINE_BYTES} bytes"));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            errors.push(format!("line {line_no}: not valid UTF-8"));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text, &mut legacy_prev) {
            Ok(event) => match event.validate() {
                Ok(()) => events.push(event),
                Err(e) => errors.push(format!("line {line_no}: {e}")),
            },
            Err(e) => errors.push(format!("line {line_no}: {e}")),
        }
    }
    if !errors.is_empty() {
        let shown: Vec<&str> = errors.iter().take(10).map(String::as_str).collect();
        let more = if errors.len() > 10 { format!("\n… and {} more", errors.len() - 10) } else { String::new() };
        bail!("nothing imported: {} invalid line(s):\n{}{more}", errors.len(), shown.join("\n"));
    }
    Ok(events)
}

fn parse_line(text: &str, legacy_prev: &mut Option<String>) -> Result<NewEvent> {
    let value: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else { bail!("expected a JSON object") };
    if map.contains_key("element_id") {
        parse_event(map)
    } else if map.contains_key("hash") && map.contains_key("prev_hash") {
        parse_legacy(map, legacy_prev)
    } else {
        bail!("neither an event (element_id, action, …) nor an old ledger record (ts, action, details, prev_hash, hash)")
    }
}

const EVENT_KEYS: [&str; 8] = ["element_id", "element_type", "action", "priority", "details", "ts", "source", "summary"];

fn parse_event(map: Map<String, Value>) -> Result<NewEvent> {
    if let Some(key) = map.keys().find(|k| !EVENT_KEYS.contains(&k.as_str())) {
        bail!("unknown field {key:?} (expected {})", EVENT_KEYS.join(", "));
    }
    let element_id = string_field(&map, "element_id")?.ok_or_else(|| anyhow::anyhow!("element_id is required"))?;
    let action = string_field(&map, "action")?.ok_or_else(|| anyhow::anyhow!("action is required"))?;
    let priority = match string_field(&map, "priority")? {
        Some(p) => p.parse::<Priority>()?,
        None => Priority::Medium,
    };
    let details = map.get("details").cloned().unwrap_or(Value::Object(Map::new()));
    let source = string_field(&map, "source")?.unwrap_or_else(|| "import".into());
    let mut event = NewEvent::new(&source, &element_id, &action, priority, details);
    if let Some(kind) = string_field(&map, "element_type")? {
        event.element_type = kind;
    }
    if let Some(summary) = string_field(&map, "summary")? {
        event.summary = summary;
    }
    event.ts = map.get("ts").map(parse_ts).transpose()?;
    Ok(event)
}

/// Old records become events of the element their details name (interface, bridge or
/// port), else `agent:legacy-ledger`; their hashes and whether the old chain linked are kept.
fn parse_legacy(map: Map<String, Value>, legacy_prev: &mut Option<String>) -> Result<NewEvent> {
    let action = string_field(&map, "action")?.ok_or_else(|| anyhow::anyhow!("action is required"))?;
    let hash = string_field(&map, "hash")?.ok_or_else(|| anyhow::anyhow!("hash must be a string"))?;
    let prev_hash = string_field(&map, "prev_hash")?.unwrap_or_default();
    let old_details = map.get("details").cloned().unwrap_or(Value::Null);
    let element_id = legacy_element(&old_details);
    let linked = legacy_prev.as_deref().is_none_or(|p| p == prev_hash);
    *legacy_prev = Some(hash.clone());
    let action_name = sanitize_action(&action);
    let details = serde_json::json!({
        "legacy": {"hash": hash, "prev_hash": prev_hash, "chain_linked": linked, "action": action},
        "after": old_details,
    });
    let mut event = NewEvent::new("legacy-import", &element_id, &action_name, Priority::Low, details);
    event.element_type = element_type_of(&element_id).to_owned();
    event.summary = format!("imported from the old ledger: {action} on {element_id}");
    event.ts = map.get("ts").map(parse_ts).transpose()?;
    Ok(event)
}

fn legacy_element(details: &Value) -> String {
    for (key, prefix) in [("bridge", "bridge"), ("port", "ovs-port"), ("interface", "interface"), ("iface", "interface")] {
        if let Some(name) = details.get(key).and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() < 200) {
            return format!("{prefix}:{name}");
        }
    }
    "agent:legacy-ledger".into()
}

/// Old actions were free text; ours are identifiers.
fn sanitize_action(action: &str) -> String {
    let cleaned: String = action
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c.to_ascii_lowercase() } else { '_' })
        .take(64)
        .collect();
    if cleaned.is_empty() { "legacy".into() } else { cleaned }
}

fn string_field(map: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!("{key} must be a string, not {other}"),
    }
}

/// Timestamps: RFC 3339 text, or a number of seconds (with fraction), milliseconds or
/// nanoseconds since the epoch, told apart by magnitude.
pub fn parse_ts(value: &Value) -> Result<i64> {
    match value {
        Value::String(text) => {
            let t = humantime::parse_rfc3339_weak(text).map_err(|e| anyhow::anyhow!("ts {text:?}: {e}"))?;
            let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| anyhow::anyhow!("ts {text:?} is before 1970"))?;
            Ok(i64::try_from(d.as_nanos())?)
        }
        Value::Number(n) => {
            let x = n.as_f64().ok_or_else(|| anyhow::anyhow!("ts {n} is not a number"))?;
            let ns = if x.abs() < 1e11 {
                x * 1e9
            } else if x.abs() < 1e14 {
                x * 1e6
            } else {
                return n.as_i64().ok_or_else(|| anyhow::anyhow!("ts {n} is out of range"));
            };
            if !(0.0..9.2e18).contains(&ns) {
                bail!("ts {n} is out of range");
            }
            Ok(ns as i64)
        }
        other => bail!("ts must be a string or a number, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_legacy_records_parse() {
        let input = concat!(
            r#"{"element_id":"interface:eth0","action":"link.down","priority":"high","details":{"carrier":false},"ts":"2026-11-01T10:00:00Z"}"#,
            "\n\n",
            r#"{"ts":1700000000.5,"action":"Port Added","details":{"port":"vnet0","bridge":"br0"},"prev_hash":"","hash":"aa"}"#,
            "\n",
            r#"{"ts":1700000001.5,"action":"port_removed","details":{"port":"vnet0"},"prev_hash":"zz","hash":"bb"}"#,
            "\n"
        );
        let events = parse_input(input.as_bytes()).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].priority, Priority::High);
        assert_eq!(events[0].ts, Some(1_793_527_200_000_000_000));
        assert_eq!(events[1].element_id, "bridge:br0");
        assert_eq!(events[1].action, "port_added");
        assert_eq!(events[1].details["legacy"]["hash"], "aa");
        assert_eq!(events[1].ts, Some(1_700_000_000_500_000_000));
        assert_eq!(events[2].element_id, "ovs-port:vnet0");
        assert_eq!(events[2].details["legacy"]["chain_linked"], false);
    }

    #[test]
    fn one_bad_line_refuses_everything_and_names_it() {
        let input = "{\"element_id\":\"interface:eth0\",\"action\":\"up\"}\n{\"element_id\":\"x\",\"action\":\"up\",\"priority\":\"urgent\"}\nnot json\n";
        let err = parse_input(input.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("urgent") && err.contains("line 3"), "{err}");
    }
}
