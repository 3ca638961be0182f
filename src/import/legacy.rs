//! Records of the old ovs-port-agent ledger, in both shapes it wrote:
//!
//! - records: `{ts, action, details, prev_hash, hash}`;
//! - blocks: `{timestamp, height, prev_hash, hash, producer, category, action, user,
//!   hostname, pid, data, metadata, signature}`.
//!
//! Each becomes one event with its original time, its payload as `details.after`, an element
//! when the payload names one, and every other field, known or not, verbatim under
//! `details.legacy`. The old chain's links (`prev_hash` = the previous record's `hash`, and
//! consecutive heights) are checked as records are read and reported; the old hashes
//! themselves cannot be recomputed (the old format never specified what they covered), so
//! they are kept, not trusted.

use super::{parse_ts, string_field};
use crate::event::{NewEvent, Priority, element_type_of};
use anyhow::{Result, anyhow};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// True for a line that is an old ledger record rather than an event.
pub fn is_legacy(map: &Map<String, Value>) -> bool {
    map.contains_key("hash") && map.contains_key("prev_hash") && !map.contains_key("element_id")
}

/// The first place the old chain does not link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainBreak {
    /// The input line (1-based).
    pub line: usize,
    pub height: Option<u64>,
    pub reason: String,
}

/// What the old chain looked like, for the import report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LegacyChain {
    pub records: usize,
    pub blocks: usize,
    /// Links that did not hold (prev_hash or height); the first is described.
    pub breaks: usize,
    pub first_break: Option<ChainBreak>,
    /// Where the old chain begins, when not at its start (a first record with a height above
    /// 1, or linking to a previous hash): records before it are missing from the input.
    pub begins_mid_chain: Option<ChainBreak>,
    #[serde(skip)]
    last: Option<(String, Option<u64>)>,
}

impl LegacyChain {
    pub fn is_empty(&self) -> bool {
        self.records + self.blocks == 0
    }

    /// One line of text: "linked" or where it broke.
    pub fn describe(&self) -> String {
        let start = self.begins_mid_chain.as_ref().map(|b| format!("; it begins mid-chain ({})", b.reason)).unwrap_or_default();
        format!("{}{start}", self.describe_links())
    }

    fn describe_links(&self) -> String {
        let total = self.records + self.blocks;
        match &self.first_break {
            None => format!("old chain of {total} records: every link holds (hashes kept as recorded, not recomputed)"),
            Some(b) => format!(
                "old chain of {total} records: BROKEN {}, first at {}line {}: {}",
                if self.breaks == 1 { "once".to_owned() } else { format!("{} times", self.breaks) },
                b.height.map(|h| format!("height {h}, ")).unwrap_or_default(),
                b.line,
                b.reason
            ),
        }
    }

    /// Checks that this record links to the one before; returns whether it does.
    fn link(&mut self, line: usize, hash: &str, prev_hash: &str, height: Option<u64>) -> bool {
        let mut problems = Vec::new();
        if self.last.is_none() {
            let linked_back = !prev_hash.is_empty() && prev_hash.bytes().any(|b| b != b'0');
            if height.is_some_and(|h| h > 1) || linked_back {
                let at = height.map(|h| format!("height {h}")).unwrap_or_else(|| format!("line {line}"));
                let reason = format!("the first record, at {at}, links to {prev_hash:?}: earlier records are missing");
                self.begins_mid_chain = Some(ChainBreak { line, height, reason });
            }
        }
        if let Some((last_hash, last_height)) = &self.last {
            if prev_hash != last_hash {
                problems.push(format!("prev_hash {prev_hash:?} is not the previous record's hash {last_hash:?}"));
            }
            if let (Some(h), Some(before)) = (height, last_height)
                && before.checked_add(1) != Some(h)
            {
                problems.push(format!("height {h} follows height {before}"));
            }
        }
        self.last = Some((hash.to_owned(), height));
        if problems.is_empty() {
            return true;
        }
        self.breaks += 1;
        if self.first_break.is_none() {
            self.first_break = Some(ChainBreak { line, height, reason: problems.join("; ") });
        }
        false
    }
}

/// The event an old record becomes.
pub fn to_event(mut map: Map<String, Value>, line: usize, chain: &mut LegacyChain) -> Result<NewEvent> {
    let is_block = map.contains_key("height") || map.contains_key("data") || map.contains_key("timestamp");
    let hash = string_field(&map, "hash")?.ok_or_else(|| anyhow!("hash must be a string"))?;
    let prev_hash = string_field(&map, "prev_hash")?.unwrap_or_default();
    let height = match map.get("height") {
        None | Some(Value::Null) => None,
        Some(h) => Some(h.as_u64().ok_or_else(|| anyhow!("height must be a whole number, not {h}"))?),
    };
    let ts = match map.get("timestamp").or_else(|| map.get("ts")) {
        Some(t) => parse_ts(t)?,
        None => return Err(anyhow!("an old record without a time (timestamp or ts): its time cannot be kept")),
    };
    let action = string_field(&map, "action")?.unwrap_or_else(|| "legacy".into());
    let category = string_field(&map, "category")?;
    let linked = chain.link(line, &hash, &prev_hash, height);
    if is_block {
        chain.blocks += 1;
    } else {
        chain.records += 1;
    }
    let payload = map.remove(if is_block { "data" } else { "details" }).unwrap_or(Value::Null);
    let element_id = element_named(&payload, category.as_deref());
    let mut details = json!({
        "after": payload,
        "legacy": map,
        "import": {"shape": if is_block { "block" } else { "record" }, "chain_linked": linked},
    });
    let stated = priority_of(&details["legacy"]);
    if let Some((text, _)) = &stated {
        details["import"]["priority_from"] = json!(text);
    }
    let priority = stated.map_or(Priority::Low, |p| p.1);
    let mut event = NewEvent::new("legacy-import", &element_id, &identifier(&action), priority, details);
    event.element_type = element_type_of(&element_id).to_owned();
    let at = height.map(|h| format!(" #{h}")).unwrap_or_default();
    let what = category.map(|c| format!(" ({c})")).unwrap_or_default();
    event.summary = format!("old ledger{at}{what}: {action} on {element_id}");
    event.ts = Some(ts);
    Ok(event)
}

/// The element a payload names: by the key of the kind its category says (`port` for a
/// port), else by the first of the known keys, else `agent:legacy-ledger`.
fn element_named(payload: &Value, category: Option<&str>) -> String {
    const KINDS: [(&str, &str, &[&str]); 4] = [
        ("bridge", "bridge", &["bridge", "ovs-bridge"]),
        ("port", "ovs-port", &["port", "ovs-port"]),
        ("interface", "interface", &["interface", "device", "link", "iface"]),
        ("connection", "connection", &["connection"]),
    ];
    let name = |key: &str| payload.get(key).and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() < 200);
    let category = category.map(str::to_ascii_lowercase);
    if let Some((key, kind, _)) = KINDS.iter().find(|(_, _, names)| category.as_deref().is_some_and(|c| names.contains(&c)))
        && let Some(n) = name(key).or_else(|| name("name"))
    {
        return format!("{kind}:{n}");
    }
    for (key, kind) in [
        ("bridge", "bridge"),
        ("port", "ovs-port"),
        ("interface", "interface"),
        ("iface", "interface"),
        ("device", "interface"),
        ("connection", "connection"),
    ] {
        if let Some(n) = name(key) {
            return format!("{kind}:{n}");
        }
    }
    "agent:legacy-ledger".into()
}

/// A priority the old record states (`priority`, `severity` or `level`, at the top or in
/// its metadata), when it is one of ours.
fn priority_of(legacy: &Value) -> Option<(String, Priority)> {
    let places = [legacy, legacy.get("metadata").unwrap_or(&Value::Null)];
    places.iter().flat_map(|v| ["priority", "severity", "level"].map(|k| v.get(k))).flatten().find_map(|v| {
        let text = v.as_str()?.to_ascii_lowercase();
        let p = match text.as_str() {
            "warning" | "warn" => Priority::Medium,
            "error" | "err" => Priority::High,
            "info" | "debug" | "notice" => Priority::Low,
            other => other.parse().ok()?,
        };
        Some((text, p))
    })
}

/// Old actions were free text; ours are identifiers (the original stays under `legacy`).
fn identifier(action: &str) -> String {
    let cleaned: String = action
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c.to_ascii_lowercase() } else { '_' })
        .take(64)
        .collect();
    if cleaned.is_empty() { "legacy".into() } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_block_keeps_its_time_payload_and_every_other_field() {
        let mut chain = LegacyChain::default();
        let block = json!({
            "timestamp": 1_700_000_000, "height": 7, "prev_hash": "p", "hash": "h7", "producer": "agent-1",
            "category": "bridge", "action": "Bridge Created", "user": "root", "hostname": "hv1", "pid": 42,
            "data": {"name": "vmbr0", "stp": false}, "metadata": {"severity": "warning"}, "signature": "c2ln", "extra": [1]
        });
        let e = to_event(map(block), 3, &mut chain).unwrap();
        assert_eq!(e.ts, Some(1_700_000_000_000_000_000));
        assert_eq!(e.element_id, "bridge:vmbr0");
        assert_eq!(e.action, "bridge_created");
        assert_eq!(e.priority, Priority::Medium);
        assert_eq!(e.details["after"], json!({"name": "vmbr0", "stp": false}));
        for key in [
            "timestamp",
            "height",
            "prev_hash",
            "hash",
            "producer",
            "category",
            "action",
            "user",
            "hostname",
            "pid",
            "metadata",
            "signature",
            "extra",
        ] {
            assert!(e.details["legacy"].get(key).is_some(), "{key} kept");
        }
        assert_eq!(e.summary, "old ledger #7 (bridge): Bridge Created on bridge:vmbr0");
    }

    #[test]
    fn broken_links_are_counted_and_the_first_is_named() {
        let mut chain = LegacyChain::default();
        let rec = |h: u64, prev: &str, hash: &str| map(json!({"timestamp": 1, "height": h, "prev_hash": prev, "hash": hash, "data": {}}));
        to_event(rec(1, "0", "a"), 1, &mut chain).unwrap();
        to_event(rec(2, "a", "b"), 2, &mut chain).unwrap();
        let e = to_event(rec(3, "x", "c"), 3, &mut chain).unwrap();
        assert_eq!(e.details["import"]["chain_linked"], false);
        to_event(rec(5, "c", "d"), 4, &mut chain).unwrap();
        assert_eq!(chain.breaks, 2);
        assert_eq!(chain.first_break.as_ref().unwrap().height, Some(3));
        assert!(chain.describe().contains("BROKEN 2 times, first at height 3, line 3"), "{}", chain.describe());
        assert!(
            to_event(map(json!({"prev_hash": "", "hash": "z", "data": {}})), 5, &mut chain)
                .unwrap_err()
                .to_string()
                .contains("without a time")
        );
    }
}
