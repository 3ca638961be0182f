//! `status` for people: one line per concern — the role and uptime, the head, how far
//! vectorization lags, the queues, each source connected or waiting and why, each replica
//! and its lag, the pipeline's health, the tasks, the latencies. `--json` prints the
//! daemon's `GetBlockchainStats` whole, for scripts.

use serde_json::Value;

/// The lines of the table (label, text).
pub fn lines(s: &Value) -> Vec<(&'static str, String)> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = Vec::new();
    out.push(("role", format!("{}, up {}", s["role"].as_str().unwrap_or("?"), duration(n(&s["uptime_s"])))));
    let hash = s["head_hash"].as_str().unwrap_or("");
    out.push((
        "head",
        format!(
            "seq {}  {}…  ({} events, {} elements)",
            n(&s["head_seq"]),
            &hash[..hash.len().min(16)],
            n(&s["events"]),
            n(&s["elements"])
        ),
    ));
    let lag = n(&s["head_seq"]).saturating_sub(n(&s["vectorized_seq"]));
    out.push((
        "vectorized",
        format!(
            "seq {} ({})  model {}",
            n(&s["vectorized_seq"]),
            if lag == 0 { "caught up".into() } else { format!("{lag} behind") },
            s["model"]["id"].as_str().unwrap_or("?")
        ),
    ));
    let q = &s["queues"];
    out.push((
        "queues",
        format!(
            "ledger {}  embedding {} (backlog {})  queries {}",
            n(&q["ledger_appends"]),
            n(&q["embedding"]),
            n(&q["embedding_backlog"]),
            n(&q["embedding_queries"])
        ),
    ));
    match s["sources"]["connections"].as_object() {
        Some(sources) if !sources.is_empty() => {
            for (name, c) in sources {
                let since = n(&c["since_unix_s"]);
                let age = crate::event::now_unix_s().saturating_sub(since);
                out.push((
                    "source",
                    format!("{name}: {} for {}  {}", c["state"].as_str().unwrap_or("?"), duration(age), c["detail"].as_str().unwrap_or("")),
                ));
            }
            let r = &s["sources"];
            if n(&r["overflowed"]) + n(&r["shortened"]) + n(&r["rejected"]) > 0 {
                out.push((
                    "",
                    format!(
                        "{} recorded, {} overflowed (reconciled), {} shortened, {} rejected",
                        n(&r["recorded"]),
                        n(&r["overflowed"]),
                        n(&r["shortened"]),
                        n(&r["rejected"])
                    ),
                ));
            }
        }
        _ if s["role"] == "replica" => {}
        _ => out.push(("source", "none enabled (sources.networkmanager and sources.ovsdb are off)".into())),
    }
    match s["replicas"].as_array() {
        Some(replicas) if !replicas.is_empty() => {
            for r in replicas {
                let error = r["last_error"].as_str().filter(|e| !e.is_empty()).map(|e| format!("  ({e})")).unwrap_or_default();
                out.push((
                    "replica",
                    format!(
                        "{}: {}, lag {} events / {:.1} s, {} sent{error}",
                        r["name"].as_str().unwrap_or("?"),
                        r["state"].as_str().unwrap_or("?"),
                        n(&r["lag_events"]),
                        r["lag_seconds"].as_f64().unwrap_or(0.0),
                        bytes(n(&r["bytes_sent"]))
                    ),
                ));
            }
        }
        _ if s["role"] == "replica" => {}
        _ => out.push(("replica", "none configured: the history lives on this host only".into())),
    }
    // A replica: one line per host whose history it serves.
    for h in s["hosts"].as_array().into_iter().flatten() {
        out.push((
            "host",
            format!(
                "{}: head {} ({}…), snapshot {} old, {} events, {}",
                printable(h["host"].as_str().unwrap_or("?")),
                n(&h["head_seq"]),
                crate::fanout::short_hash(h["head_hash"].as_str().unwrap_or("")),
                duration(n(&h["age_ms"]) / 1000),
                n(&h["events"]),
                printable(h["health"].as_str().unwrap_or("?"))
            ),
        ));
    }
    if let Some(health) = s["health"].as_object() {
        let parts: Vec<String> = health
            .iter()
            .map(|(stage, h)| {
                let stalls = n(&h["stalls"]);
                let state = h["state"].as_str().unwrap_or("?");
                if stalls > 0 { format!("{stage} {state} ({stalls} stalls)") } else { format!("{stage} {state}") }
            })
            .collect();
        out.push(("health", parts.join(", ")));
    }
    if let Some(tasks) = s["tasks"].as_object() {
        let running = tasks.values().filter(|t| t["running"] == true).count();
        let restarted: Vec<String> =
            tasks.iter().filter(|(_, t)| n(&t["restarts"]) > 0).map(|(name, t)| format!("{name} ×{}", n(&t["restarts"]))).collect();
        let restarts = if restarted.is_empty() { "no restarts".into() } else { format!("restarted: {}", restarted.join(", ")) };
        out.push(("tasks", format!("{running} of {} running, {restarts}", tasks.len())));
    }
    let p = |v: &Value| format!("{:.1}/{:.1} ms", v["p50_ms"].as_f64().unwrap_or(0.0), v["p99_ms"].as_f64().unwrap_or(0.0));
    out.push((
        "latency p50/p99",
        format!(
            "search {}  record {}  embedding {}",
            p(&s["search_latency"]),
            p(&s["record_latency"]),
            p(&s["embedding"]["event_latency"])
        ),
    ));
    out
}

pub fn print(stats: &Value) {
    let lines = lines(stats);
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (label, text) in lines {
        println!("{label:<width$}  {}", printable(&text));
    }
}

/// Text from replicas and sources (an error a replica sent back) without control characters:
/// nothing it says can drive the operator's terminal.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn duration(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d", s / 86_400),
    }
}

fn bytes(b: u64) -> String {
    match b {
        0..=1023 => format!("{b} B"),
        1024..=1_048_575 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_per_concern_with_sources_and_replicas_named() {
        let stats = json!({
            "role": "primary", "uptime_s": 7300, "head_seq": 120, "head_hash": "f182cec984066fad1da8d1c3",
            "events": 120, "elements": 9, "vectorized_seq": 117, "model": {"id": "m@1"},
            "queues": {"ledger_appends": 0, "embedding": 3, "embedding_backlog": 0, "embedding_queries": 0},
            "sources": {"connections": {
                "nm": {"state": "connected", "detail": "NetworkManager on system", "since_unix_s": 0},
                "ovsdb": {"state": "waiting", "detail": "no OVSDB socket at /run/openvswitch/db.sock", "since_unix_s": 0}},
                "recorded": 120, "overflowed": 0, "shortened": 0, "rejected": 0},
            "replicas": [{"name": "r1", "state": "unreachable", "lag_events": 12, "lag_seconds": 30.0, "bytes_sent": 2_097_152, "last_error": "connection refused"}],
            "health": {"recording": {"state": "ok", "stalls": 0}, "index": {"state": "stalled", "stalls": 2}},
            "tasks": {"recorder": {"running": true, "restarts": 0}, "source:nm": {"running": true, "restarts": 3}},
        });
        assert_eq!(printable("no\u{1b}[2Jspace\n"), "no [2Jspace ", "a replica's words cannot clear the screen");
        let replica = json!({"role": "replica", "hosts": [{"host": "hv01", "head_seq": 42, "head_hash": "abcdef0123456789", "age_ms": 3000, "events": 42, "health": "healthy"}]});
        let replica_lines = lines(&replica);
        assert!(
            replica_lines.iter().any(|(k, v)| *k == "host" && v == "hv01: head 42 (abcdef012345…), snapshot 3 s old, 42 events, healthy"),
            "{replica_lines:?}"
        );
        let text: Vec<String> = lines(&stats).into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let text = text.join("\n");
        for want in [
            "role: primary, up 2 h 1 min",
            "vectorized: seq 117 (3 behind)",
            "source: ovsdb: waiting for",
            "no OVSDB socket at /run/openvswitch/db.sock",
            "replica: r1: unreachable, lag 12 events / 30.0 s, 2.0 MiB sent  (connection refused)",
            "health: index stalled (2 stalls), recording ok",
            "tasks: 2 of 2 running, restarted: source:nm ×3",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}
