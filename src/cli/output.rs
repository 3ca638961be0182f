//! How events and reports are printed for people (and as JSON for scripts).

use crate::index::EventRow;
use crate::search::Answer;
use std::time::{Duration, UNIX_EPOCH};

/// `2026-11-24T10:00:00.123Z` for a nanosecond timestamp.
pub fn format_ts(ts_ns: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ts_ns.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// One event per line: seq, time, priority, element, action, summary.
pub fn event_line(e: &EventRow) -> String {
    format!("{:>8}  {}  {:<8}  {:<28}  {:<22}  {}", e.seq, format_ts(e.ts), e.priority, e.element_id, e.action, e.summary)
}

pub fn print_events(events: &[EventRow], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(events)?);
    } else {
        for e in events {
            println!("{}", event_line(e));
        }
    }
    Ok(())
}

/// A search's answer: what the query was taken to mean, then each hit — score, time,
/// priority, element, action, summary — with what it changed, why it matched, and how many
/// more events of the same kind it stands for.
pub fn print_answer(answer: &Answer, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(answer)?);
        return Ok(());
    }
    if let Some(t) = &answer.time {
        println!("time: {} ({} → {})", t.phrase, t.since, t.until);
    }
    if let Some(direction) = answer.direction {
        let way = match direction {
            crate::search::Direction::Up => "up (appeared, came up, attached)",
            crate::search::Direction::Down => "down (went away, went down, failed)",
        };
        println!("direction: {way}; changes the other way rank lower");
    }
    if answer.failures {
        println!("failures: the query asks about failures; other events rank lower");
    }
    for note in &answer.notes {
        println!("note: {note}");
    }
    for o in &answer.origins {
        println!(
            "host {}: verified head {} ({}…), snapshot {} old",
            o.host,
            o.head_seq,
            crate::fanout::short_hash(&o.head_hash),
            humantime::format_duration(std::time::Duration::from_secs(o.age_ms.max(0) as u64 / 1000))
        );
    }
    if answer.hits.is_empty() {
        println!("no events match");
    }
    for h in &answer.hits {
        let more = if h.similar.is_empty() { String::new() } else { format!("  (+{} like it)", h.similar.len()) };
        let element = match &h.host {
            Some(host) => format!("{host} {}", h.element_id),
            None => h.element_id.clone(),
        };
        println!(
            "{:.2}  {:>8}  {}  {:<8}  {:<28}  {:<22}  {}{more}",
            h.score,
            h.seq,
            format_ts(h.ts),
            h.priority,
            element,
            h.action,
            h.summary
        );
        for c in h.changes.iter().take(4) {
            println!("{:>14}{}: {} → {}", "", c.field, c.before, c.after);
        }
        let mut why = Vec::new();
        if let Some(s) = h.why.semantic {
            why.push(format!("meaning {s:.2}"));
        }
        if !h.why.terms.is_empty() {
            why.push(format!("words {}", h.why.terms.join(", ")));
        }
        if !why.is_empty() {
            println!("{:>14}matched by {}", "", why.join("; "));
        }
    }
    Ok(())
}

/// A JSON object as aligned `key  value` lines, nested keys joined with dots (for `status`).
pub fn print_fields(value: &serde_json::Value) {
    let mut lines = Vec::new();
    flatten(String::new(), value, &mut lines);
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in lines {
        println!("{key:<width$}  {value}");
    }
}

fn flatten(prefix: String, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix, s.clone())),
        serde_json::Value::Null => out.push((prefix, "—".into())),
        other => out.push((prefix, other.to_string())),
    }
}
