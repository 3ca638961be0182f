//! `import`: events from JSON lines, and the ledgers of earlier ovs-port-agent versions
//! (both record shapes, see [`legacy`]). Nothing is lost on the way in: old times, payloads
//! and every other field are kept, numbers are kept exactly or refused, and an import
//! either happens completely or not at all.

mod legacy;
mod numbers;

pub use legacy::LegacyChain;

use crate::event::{NewEvent, Priority};
use anyhow::{Result, bail};
use serde_json::{Map, Value};
use std::io::BufRead;

/// The largest input line accepted (a record's details are limited to 64 KiB anyway).
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What an input holds: the events to record and, for an old ledger, how its chain linked.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<NewEvent>,
    pub legacy: LegacyChain,
}

/// Reads every line first and refuses the whole input, naming the bad lines, when any line
/// is invalid.
pub fn parse_input(reader: impl BufRead) -> Result<Parsed> {
    let mut parsed = Parsed::default();
    let mut errors = Vec::new();
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
        match parse_line(text, line_no, &mut parsed.legacy) {
            Ok(event) => match event.validate() {
                Ok(()) => parsed.events.push(event),
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
    Ok(parsed)
}

fn parse_line(text: &str, line_no: usize, chain: &mut LegacyChain) -> Result<NewEvent> {
    let value: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
    numbers::check_exact(text)?;
    let Value::Object(map) = value else { bail!("expected a JSON object") };
    if map.contains_key("element_id") {
        parse_event(map)
    } else if legacy::is_legacy(&map) {
        legacy::to_event(map, line_no, chain)
    } else {
        bail!(
            "neither an event (element_id, action, …) nor an old ledger record ({{ts, action, details, prev_hash, hash}} or a block with timestamp, height, data, prev_hash, hash)"
        )
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

pub(crate) fn string_field(map: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!("{key} must be a string, not {other}"),
    }
}

/// Timestamps: RFC 3339 text (with `Z` or a `±HH:MM` offset), or a number of seconds (with
/// fraction), milliseconds, microseconds or nanoseconds since the epoch, told apart by
/// magnitude. Numbers are scaled from their decimal digits (no float rounding: `.123` s is
/// 123,000,000 ns); digits below a nanosecond are dropped.
pub fn parse_ts(value: &Value) -> Result<i64> {
    match value {
        Value::String(text) => rfc3339_ns(text),
        Value::Number(n) => {
            let text = n.to_string();
            let d = crate::ledger::number::decimal(&text).ok_or_else(|| anyhow::anyhow!("ts {n} is not a number"))?;
            if d.negative && !d.digits.is_empty() {
                bail!("ts {n} is before 1970");
            }
            // The value's magnitude (its first digit's power of ten) tells the unit.
            let to_ns = match d.exp {
                e if e < 11 => 9,
                e if e < 14 => 6,
                e if e < 17 => 3,
                _ => 0,
            };
            let mut ns: i128 = 0;
            for (i, digit) in d.digits.iter().enumerate() {
                let power = d.exp - i as i32 + to_ns;
                if power < 0 {
                    break;
                }
                // Beyond i128 it is out of range all the same (refused below), never a panic.
                let term = 10i128.checked_pow(power as u32).and_then(|p| p.checked_mul(i128::from(digit - b'0')));
                ns = term.and_then(|t| ns.checked_add(t)).unwrap_or(i128::MAX);
            }
            i64::try_from(ns).map_err(|_| anyhow::anyhow!("ts {n} is out of range"))
        }
        other => bail!("ts must be a string or a number, not {other}"),
    }
}

/// RFC 3339 with `Z` or a numeric offset, as nanoseconds since 1970.
fn rfc3339_ns(text: &str) -> Result<i64> {
    let (utc_text, offset_s) = match text.len().checked_sub(6).filter(|&i| text.is_char_boundary(i)).map(|i| text.split_at(i)) {
        Some((rest, off)) if (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' && rest.contains('T') => {
            let hours: i64 = off[1..3].parse().map_err(|_| anyhow::anyhow!("ts {text:?}: bad offset"))?;
            let minutes: i64 = off[4..6].parse().map_err(|_| anyhow::anyhow!("ts {text:?}: bad offset"))?;
            let sign = if off.starts_with('-') { -1 } else { 1 };
            (format!("{rest}Z"), sign * (hours * 3600 + minutes * 60))
        }
        _ => (text.to_owned(), 0),
    };
    let t = humantime::parse_rfc3339_weak(&utc_text).map_err(|e| anyhow::anyhow!("ts {text:?}: {e}"))?;
    let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| anyhow::anyhow!("ts {text:?} is before 1970"))?;
    let ns = i64::try_from(d.as_nanos())? - offset_s * 1_000_000_000;
    if ns < 0 {
        bail!("ts {text:?} is before 1970");
    }
    Ok(ns)
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
        let parsed = parse_input(input.as_bytes()).unwrap();
        let events = &parsed.events;
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].priority, Priority::High);
        assert_eq!(events[0].ts, Some(1_793_527_200_000_000_000));
        assert_eq!(events[1].element_id, "bridge:br0");
        assert_eq!(events[1].action, "port_added");
        assert_eq!(events[1].details["legacy"]["hash"], "aa");
        assert_eq!(events[1].ts, Some(1_700_000_000_500_000_000));
        assert_eq!(events[2].element_id, "ovs-port:vnet0");
        assert_eq!(events[2].details["import"]["chain_linked"], false);
        assert_eq!((parsed.legacy.records, parsed.legacy.breaks), (2, 1));
    }

    #[test]
    fn one_bad_line_refuses_everything_and_names_it() {
        let input = "{\"element_id\":\"interface:eth0\",\"action\":\"up\"}\n{\"element_id\":\"x\",\"action\":\"up\",\"priority\":\"urgent\"}\nnot json\n{\"element_id\":\"x\",\"action\":\"up\",\"details\":{\"n\":123456789012345678901234567890}}\n";
        let err = parse_input(input.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("urgent") && err.contains("line 3"), "{err}");
        assert!(err.contains("line 4: the number 123456789012345678901234567890 cannot be stored exactly"), "{err}");
    }

    #[test]
    fn times_keep_their_digits_and_offsets() {
        let ts = |v: Value| parse_ts(&v).unwrap();
        assert_eq!(ts(serde_json::json!(1_700_000_000.123)), 1_700_000_000_123_000_000);
        assert_eq!(ts(serde_json::json!(1_700_000_000_123u64)), 1_700_000_000_123_000_000, "milliseconds");
        assert_eq!(ts(serde_json::json!(1_700_000_000_123_456u64)), 1_700_000_000_123_456_000, "microseconds");
        assert_eq!(ts(serde_json::json!(1_700_000_000_123_456_789u64)), 1_700_000_000_123_456_789, "nanoseconds");
        assert_eq!(ts(serde_json::json!("2026-11-01T12:00:00+02:00")), ts(serde_json::json!("2026-11-01T10:00:00Z")));
        assert_eq!(ts(serde_json::json!("2026-11-01T08:30:00-01:30")), ts(serde_json::json!("2026-11-01T10:00:00Z")));
        assert!(parse_ts(&serde_json::json!(-5)).is_err());
        // Found by the hostile-input property test: a huge value was a multiplication overflow.
        let huge: Value = serde_json::from_str("9e300").unwrap();
        assert!(parse_ts(&huge).unwrap_err().to_string().contains("out of range"));
        assert!(parse_ts(&serde_json::json!(u64::MAX)).unwrap_err().to_string().contains("out of range"));
    }

    #[test]
    fn numbers_are_kept_as_given() {
        let parsed = parse_input(r#"{"element_id":"x:y","action":"a","details":{"big":1.2e+31,"tiny":5e-324}}"#.as_bytes()).unwrap();
        let mut out = Vec::new();
        crate::ledger::record::write_canonical_value(&mut out, &parsed.events[0].details);
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"big":1.2e+31,"tiny":5e-324}"#);
    }
}

#[cfg(test)]
mod hostile_input {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "element_id",
        "action",
        "priority",
        "details",
        "ts",
        "source",
        "summary",
        "records",
        "blocks",
        "height",
        "timestamp",
        "data",
        "prev_hash",
        "hash",
    ];

    proptest! {
        // Bounded: 2048 cases each, well under a second.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any bytes to `import`: parsed, or refused with the line named; never a panic.
        #[test]
        fn any_input_is_parsed_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_input(&bytes[..]);
        }

        /// JSON lines of any shape: the same.
        #[test]
        fn any_json_lines_are_parsed_or_refused(lines in proptest::collection::vec(crate::arbitrary_json::json(KEYS), 1..5)) {
            let input: String = lines.iter().map(|l| l.to_string() + "\n").collect();
            if let Err(e) = parse_input(input.as_bytes()) {
                prop_assert!(e.to_string().contains("line"), "{e:#}");
            }
        }
    }
}
