//! The analysis verbs (`timeline`, `state`, `drift`, `similar`, `incidents`, `anomalies`):
//! asked of the daemon over D-Bus, or computed offline on a data directory with the same
//! code; printed as readable tables, or as the members' JSON with `--json`.

use super::output::format_ts;
use crate::analytics::anomaly::AnomalyOptions;
use crate::analytics::timeline::TimelineOptions;
use crate::analytics::{anomaly, similar, state, timeline};
use crate::config::Config;
use crate::layout::Layout;
use anyhow::Result;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use zbus::zvariant::Value as DbusValue;

/// One analysis, with its arguments parsed.
pub enum Analysis {
    Timeline { center_ms: i64, window_ms: u64, options: TimelineOptions },
    State { element: String, at_ms: i64 },
    Drift { element: String, since_ms: i64 },
    Similar { element: String, limit: u32 },
    Incidents { seq: u64, limit: u32 },
    Anomalies { window_ms: u64, options: AnomalyOptions },
}

/// Runs the analysis offline on `data_dir` when given, else asks the daemon on `bus`.
pub fn run(analysis: Analysis, config: &Config, bus: &str, data_dir: Option<&Path>, json: bool) -> Result<ExitCode> {
    let text = match data_dir {
        Some(dir) => offline(&analysis, config, dir)?,
        None => super::client::runtime()?.block_on(ask_daemon(&analysis, bus))?,
    };
    let answer: Value = serde_json::from_str(&text)?;
    if json {
        println!("{text}");
    } else {
        match analysis {
            Analysis::Timeline { .. } => print_timeline(&answer),
            Analysis::State { .. } => print_state(&answer),
            Analysis::Drift { .. } => print_drift(&answer),
            Analysis::Similar { .. } => print_similar(&answer),
            Analysis::Incidents { .. } => print_incidents(&answer),
            Analysis::Anomalies { .. } => print_anomalies(&answer),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn offline(analysis: &Analysis, config: &Config, dir: &Path) -> Result<String> {
    let reader = crate::reader::OfflineReader::open(&Layout::detect(dir), config)?;
    let search = &reader.search;
    let now = crate::event::now_ns();
    let ns = |ms: i64| ms.saturating_mul(1_000_000);
    search.readers.with(|index| {
        Ok(match analysis {
            Analysis::Timeline { center_ms, window_ms, options } => {
                let catalog = search.catalog.read().expect("catalog lock");
                serde_json::to_string(&timeline::timeline(index, &catalog, *center_ms, *window_ms, options)?)?
            }
            Analysis::State { element, at_ms } => serde_json::to_string(&state::element_state(index, element, ns(*at_ms))?)?,
            Analysis::Drift { element, since_ms } => serde_json::to_string(&state::drift(index, element, ns(*since_ms), now)?)?,
            Analysis::Similar { element, limit } => {
                let embed = |text: &str| reader.embed_text(text);
                serde_json::to_string(&similar::similar_configs(index, element, (*limit).clamp(1, 1000) as usize, now, &embed)?)?
            }
            Analysis::Incidents { seq, limit } => {
                serde_json::to_string(&similar::similar_incidents(index, search, *seq, (*limit).clamp(1, 1000) as usize)?)?
            }
            Analysis::Anomalies { window_ms, options } => serde_json::to_string(&anomaly::detect(index, search, *window_ms, options)?)?,
        })
    })
}

async fn ask_daemon(analysis: &Analysis, bus: &str) -> Result<String> {
    let conn = &crate::dbus::connect(bus).await?;
    Ok(match analysis {
        Analysis::Timeline { center_ms, window_ms, options } => {
            let mut o: HashMap<&str, DbusValue<'_>> = HashMap::new();
            if let Some(e) = &options.element_id {
                o.insert("element_id", DbusValue::from(e.as_str()));
            }
            if let Some(l) = options.limit {
                o.insert("limit", DbusValue::U32(l.min(u32::MAX as usize) as u32));
            }
            super::client::call(conn, "GetTimeline", &(*center_ms, *window_ms, o)).await?
        }
        Analysis::State { element, at_ms } => super::client::call(conn, "GetElementState", &(element.as_str(), *at_ms)).await?,
        Analysis::Drift { element, since_ms } => {
            super::client::call(conn, "AnalyzeConfigurationDrift", &(element.as_str(), *since_ms)).await?
        }
        Analysis::Similar { element, limit } => super::client::call(conn, "FindSimilarConfigs", &(element.as_str(), *limit)).await?,
        Analysis::Incidents { seq, limit } => super::client::call(conn, "FindSimilarIncidents", &(*seq, *limit)).await?,
        Analysis::Anomalies { window_ms, options } => {
            let mut o: HashMap<&str, DbusValue<'_>> = HashMap::new();
            o.insert("until_unix_ms", DbusValue::I64(options.until_ns / 1_000_000));
            o.insert("baseline_days", DbusValue::U32(options.baseline_days));
            o.insert("limit", DbusValue::U32(options.limit as u32));
            o.insert("rules", DbusValue::from(options.rules.iter().map(|r| r.as_str()).collect::<Vec<_>>()));
            if let Some(t) = &options.element_type {
                o.insert("element_type", DbusValue::from(t.as_str()));
            }
            super::client::call(conn, "DetectAnomalies", &(*window_ms, o)).await?
        }
    })
}

fn ms(v: &Value) -> String {
    v.as_i64().map(|ms| format_ts(ms.saturating_mul(1_000_000))).unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

fn cite(c: &Value) -> String {
    format!("seq {} at {} ({})", c["seq"], ms(&c["ts_unix_ms"]), c["summary"].as_str().unwrap_or(""))
}

fn notes(a: &Value) {
    for n in a["notes"].as_array().into_iter().flatten() {
        println!("note: {}", text(n));
    }
}

fn print_timeline(a: &Value) {
    println!("{} → {}: {} events", ms(&a["since_unix_ms"]), ms(&a["until_unix_ms"]), a["total_events"]);
    notes(a);
    if let Some(c) = a.get("first_critical").filter(|c| !c.is_null()) {
        println!("first critical: {}", cite(c));
    }
    for e in a["events"].as_array().into_iter().flatten() {
        let mark = if e["first_critical"].as_bool() == Some(true) { "!" } else { " " };
        println!(
            "{mark}{:>8}  {}  {:<8}  {:<28}  {:<22}  {}",
            e["seq"],
            ms(&e["ts_unix_ms"]),
            text(&e["priority"]),
            text(&e["element_id"]),
            text(&e["action"]),
            text(&e["summary"])
        );
    }
    for g in a["elements"].as_array().into_iter().flatten() {
        let relation = g["relation"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        println!("{}{relation}: {} events", text(&g["element_id"]), g["seqs"].as_array().map_or(0, Vec::len));
        for c in g["changed"].as_array().into_iter().flatten() {
            println!("    {}: {} → {} ({} changes)", text(&c["field"]), text(&c["from"]), text(&c["to"]), c["changes"]);
        }
    }
}

fn print_state(a: &Value) {
    println!("{} ({}) at {}", text(&a["element_id"]), text(&a["element_type"]), ms(&a["at_unix_ms"]));
    if a["existed"].as_bool() != Some(true) {
        println!("no event of this element at or before that time");
        return;
    }
    if a["present"].as_bool() != Some(true) {
        println!("removed by then");
    }
    for (field, f) in a["fields"].as_object().into_iter().flatten() {
        println!("  {field:<28} {:<30} set by {}", text(&f["value"]), cite(&f["set_by"]));
    }
}

fn print_drift(a: &Value) {
    println!(
        "{} since {}: {} events; {} fields changed, {} unchanged",
        text(&a["element_id"]),
        ms(&a["since_unix_ms"]),
        a["events_in_period"],
        a["changed"].as_array().map_or(0, Vec::len),
        a["unchanged_fields"]
    );
    for c in a["changed"].as_array().into_iter().flatten() {
        println!("  {:<28} {} → {}   blame: {}", text(&c["field"]), text(&c["then"]), text(&c["now"]), cite(&c["blame"]));
    }
    for f in a["flapped"].as_array().into_iter().flatten() {
        println!("  flapped: {} changed {} times, {} back (now {})", text(&f["field"]), f["changes"], f["reverts"], text(&f["now"]));
    }
}

fn print_similar(a: &Value) {
    let mine = &a["track_record"];
    println!(
        "{}: {:.2} trouble/day over {:.1} days",
        text(&a["element_id"]),
        mine["trouble_per_day"].as_f64().unwrap_or(0.0),
        mine["days"].as_f64().unwrap_or(0.0)
    );
    notes(a);
    for s in a["similar"].as_array().into_iter().flatten() {
        let t = &s["track_record"];
        println!(
            "{:.2}  {:<28} {:.2} trouble/day  differs in: {}",
            s["similarity"].as_f64().unwrap_or(0.0),
            text(&s["element_id"]),
            t["trouble_per_day"].as_f64().unwrap_or(0.0),
            differing(&s["differing"])
        );
    }
    if let Some(h) = a.get("healthiest").filter(|h| !h.is_null()) {
        println!(
            "healthiest: {} ({:.2} trouble/day), set apart by {}",
            text(&h["element_id"]),
            h["trouble_per_day"].as_f64().unwrap_or(0.0),
            differing(&h["differing"])
        );
    }
}

fn differing(d: &Value) -> String {
    let parts: Vec<String> =
        d.as_object().into_iter().flatten().map(|(k, v)| format!("{k} {} (yours {})", text(&v[0]), text(&v[1]))).collect();
    if parts.is_empty() { "nothing".into() } else { parts.join(", ") }
}

fn print_incidents(a: &Value) {
    println!("like {}", cite(&a["event"]));
    notes(a);
    for i in a["incidents"].as_array().into_iter().flatten() {
        println!("{:.2}  {}  → {}", i["similarity"].as_f64().unwrap_or(0.0), cite(&i["event"]), text(&i["outcome"]).replace('_', " "));
        if let Some(d) = i.get("decided_by").filter(|d| !d.is_null()) {
            println!("        {}", cite(d));
        }
    }
}

fn print_anomalies(a: &Value) {
    println!(
        "{} → {}: {} events scored against {} before; {} findings",
        ms(&a["since_unix_ms"]),
        ms(&a["until_unix_ms"]),
        a["scored_events"],
        a["baseline_events"],
        a["total_findings"]
    );
    notes(a);
    for f in a["findings"].as_array().into_iter().flatten() {
        let more = f["more"].as_u64().filter(|m| *m > 0).map(|m| format!(" (+{m})")).unwrap_or_default();
        println!(
            "{:<10} {:>5.2}  {:<28} {}{more}",
            text(&f["rule"]),
            f["score"].as_f64().unwrap_or(0.0),
            text(&f["element_id"]),
            cite(&f["event"])
        );
        println!("           {}", text(&f["why"]));
    }
}
