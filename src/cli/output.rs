//! How events and reports are printed for people (and as JSON for scripts).

use crate::index::EventRow;
use crate::search::Hit;
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

/// Search hits, best first: score, seq, time, priority, element, action, summary.
pub fn print_hits(hits: &[Hit], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(hits)?);
    } else {
        for h in hits {
            println!(
                "{:.3}  {:>8}  {}  {:<8}  {:<28}  {:<22}  {}",
                h.score,
                h.seq,
                format_ts(h.ts),
                h.priority,
                h.element_id,
                h.action,
                h.summary
            );
        }
    }
    Ok(())
}
