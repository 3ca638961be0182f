//! Semantic analytics over D-Bus: a daemon serving a history of N events spread over 60
//! days (2,000 VMs' ports, interfaces and connections, plus one uplink with 10,000 events of
//! its own), one client calling each analytics member with varied arguments; p50/p99 per
//! member. Then, in process on the same data, what the live anomaly scorer adds per event
//! next to the rest of an event's path (ledger and index writes, embedding).
//!
//! Vectors are synthesized from real embeddings (as in `dbus`); similar-incident answers
//! are then not meaningful, but their cost is the real one.

use crate::dbus::{PrivateDaemon, call_agent, seed};
use crate::report::Report;
use crate::search::{base_vectors, synth};
use crate::texts::event_text;
use ovs_port_agent::analytics::anomaly::{DEFAULT_BASELINE_DAYS, LiveScorer, NOVELTY_EF, nearest_earlier};
use ovs_port_agent::config::VectorConfig;
use ovs_port_agent::embed::{ModelFiles, SentenceModel};
use ovs_port_agent::event::{NewEvent, Priority};
use ovs_port_agent::index::Index;
use ovs_port_agent::layout::Layout;
use ovs_port_agent::metrics::median_p99;
use ovs_port_agent::search::{ReadMode, Readers, SearchState, catalog_events_after, load_graph};
use ovs_port_agent::vector::Catalog;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;
use zbus::zvariant;

const SPAN_NS: i64 = 60 * 86_400 * 1_000_000_000;
const HOT: &str = "interface:uplink0";
const HOT_EVENTS: usize = 10_000;
const VMS: usize = 2_000;
const CALLS: usize = 100;
/// Window detection learns a 28-day baseline per call: fewer calls.
const DETECT_CALLS: usize = 20;
/// Events the live scorer is timed on.
const SCORED: usize = 2_000;

/// The history's newest event is at `end_ns`; event `i` of `n` is spaced evenly before it.
struct History {
    n: usize,
    end_ns: i64,
}

impl History {
    fn ts(&self, i: usize) -> i64 {
        self.end_ns - (self.n - i) as i64 * (SPAN_NS / self.n as i64)
    }

    fn is_hot(&self, i: usize) -> bool {
        i.is_multiple_of(self.n / HOT_EVENTS)
    }

    /// One in a hundred VM events is a device failure.
    fn is_critical(&self, i: usize) -> bool {
        !self.is_hot(i) && (mix(i) >> 16) % 100 == 99
    }

    fn event(&self, i: usize) -> NewEvent {
        let change =
            |field: &str, before: Value, after: Value| json!({"before": {field: before}, "after": {field: after}, "changed": [field]});
        let r = mix(i);
        let mut e = if self.is_hot(i) {
            let k = i / (self.n / HOT_EVENTS);
            if k % 50 == 49 {
                let (before, after) = if (k / 50).is_multiple_of(2) { (1500, 9000) } else { (9000, 1500) };
                NewEvent::new("nm", HOT, "mtu.changed", Priority::Medium, change("mtu", json!(before), json!(after)))
            } else {
                let up = k % 2 == 1;
                NewEvent::new(
                    "nm",
                    HOT,
                    if up { "link.up" } else { "link.down" },
                    Priority::Medium,
                    change("carrier", json!(!up), json!(up)),
                )
            }
        } else {
            let vm = (r % VMS as u64) as usize;
            let tag = 10 + (r >> 40) % 8 * 10;
            match (r >> 16) % 100 {
                0..40 => {
                    let up = (r >> 32) % 2 == 1;
                    let action = if up { "link.up" } else { "link.down" };
                    NewEvent::new("nm", &format!("interface:vnet{vm}"), action, Priority::Low, change("carrier", json!(!up), json!(up)))
                }
                40..60 => {
                    let details = json!({"before": {"tag": tag + 10}, "after": {"tag": tag, "vlan_mode": "access"}, "changed": ["tag"]});
                    NewEvent::new("ovsdb", &format!("port:vnet{vm}"), "port.modified", Priority::Medium, details)
                }
                60..75 => {
                    let up = (r >> 32) % 2 == 1;
                    let (before, after) = if up { ("down", "up") } else { ("up", "down") };
                    NewEvent::new(
                        "ovsdb",
                        &format!("port:vnet{vm}"),
                        "port.state",
                        Priority::Low,
                        change("state", json!(before), json!(after)),
                    )
                }
                75..90 => {
                    let mtu = if (r >> 32).is_multiple_of(4) { 9000 } else { 1500 };
                    NewEvent::new(
                        "nm",
                        &format!("interface:vnet{vm}"),
                        "mtu.changed",
                        Priority::Low,
                        change("mtu", json!(1500), json!(mtu)),
                    )
                }
                90..99 => {
                    let address = format!("10.{}.{}.{}/24", vm / 250, vm % 250, 2 + (r >> 32) % 200);
                    let details = change("ip4_address", json!(null), json!(address));
                    NewEvent::new("nm", &format!("connection:vm{vm}"), "dhcp.renewed", Priority::Low, details)
                }
                _ => NewEvent::new(
                    "nm",
                    &format!("interface:vnet{vm}"),
                    "device.failed",
                    Priority::Critical,
                    change("state", json!("activated"), json!("failed")),
                ),
            }
        };
        e.ts = Some(self.ts(i));
        e
    }
}

/// A 64-bit mix of `i` (splitmix64), for deterministic variety.
fn mix(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn run(dir: &Path, n: usize) {
    let mut report = Report::new(&format!("analytics-{}", crate::size_name(n)));
    report
        .note("history", format!("{n} events over 60 days: {VMS} VMs (port, interface, connection each), {HOT} with {HOT_EVENTS} events"));
    let files = ModelFiles::locate(&crate::model_config()).expect("provision the model first");
    let mut model = SentenceModel::load(&files, 256).unwrap();
    let base = base_vectors(&mut model);
    let state = dir.join(format!("analytics-state-{n}"));
    let _ = std::fs::remove_dir_all(&state);
    let history = History { n, end_ns: ovs_port_agent::event::now_ns() };
    let t0 = Instant::now();
    let write_secs = seed(&state, n, &files, &base, |i| history.event(i));
    report.add("seeding (ledger + index + synthesized vectors)", t0.elapsed().as_secs_f64(), "s");
    let write_us = write_secs * 1e6 / n as f64;
    report.add("ledger append + index apply per event (batches of 10k)", write_us, "µs");
    // What the daemon's start adds to check every page of the index (a damaged one is rebuilt).
    let t0 = Instant::now();
    assert_eq!(Index::damage_of(&Layout::state(&state).index_path()).unwrap(), None);
    report.add("index quick_check at daemon start (every page)", t0.elapsed().as_secs_f64(), "s");
    report.add("index size", std::fs::metadata(Layout::state(&state).index_path()).unwrap().len() as f64 / (1u64 << 20) as f64, "MiB");

    let t0 = Instant::now();
    let daemon = PrivateDaemon::start(&state);
    report.add("daemon start until it answers (loads the graph)", t0.elapsed().as_secs_f64(), "s");
    measure_members(&mut report, &daemon.address, &history);
    drop(daemon); // writes the graph checkpoint the scorer phase loads

    live_scorer_cost(&mut report, &state, &files, &mut model, &base, write_us);
    let _ = std::fs::remove_dir_all(&state);
    report.finish();
}

fn measure_members(report: &mut Report, address: &str, history: &History) {
    let n = history.n;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let conn = rt.block_on(zbus::connection::Builder::address(address).unwrap().build()).unwrap();
    let mut rng = StdRng::seed_from_u64(17);
    let ms = |ns: i64| ns.div_euclid(1_000_000);
    let critical: Vec<u64> = (0..n).filter(|&i| history.is_critical(i)).map(|i| i as u64 + 1).collect();
    let no_options: HashMap<&str, zvariant::Value> = HashMap::new();
    let mut time = |label: &str, calls: usize, report: &mut Report, call: &mut dyn FnMut(&mut StdRng) -> zbus::Result<zbus::Message>| {
        let mut lat = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            let reply = call(&mut rng).unwrap_or_else(|e| panic!("{label}: {e}"));
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            let body: String = reply.body().deserialize().unwrap();
            assert!(body.starts_with('{'), "{label} answers JSON");
        }
        let (p50, p99) = median_p99(&mut lat);
        report.add(&format!("{label} p50 ({calls} calls)"), p50, "ms");
        report.add(&format!("{label} p99"), p99, "ms");
    };
    let any_moment = |rng: &mut StdRng| ms(history.ts(rng.gen_range(0..n)));
    time(&format!("GetElementState, {HOT_EVENTS}-event element"), CALLS, report, &mut |rng| {
        rt.block_on(call_agent(&conn, "GetElementState", &(HOT, any_moment(rng))))
    });
    time("GetElementState, a VM port", CALLS, report, &mut |rng| {
        let port = format!("port:vnet{}", rng.gen_range(0..VMS));
        rt.block_on(call_agent(&conn, "GetElementState", &(port.as_str(), any_moment(rng))))
    });
    time(&format!("AnalyzeConfigurationDrift, {HOT_EVENTS}-event element"), CALLS, report, &mut |rng| {
        rt.block_on(call_agent(&conn, "AnalyzeConfigurationDrift", &(HOT, any_moment(rng))))
    });
    time("GetTimeline, 10-minute window", CALLS, report, &mut |rng| {
        rt.block_on(call_agent(&conn, "GetTimeline", &(any_moment(rng), 600_000u64, &no_options)))
    });
    time("FindSimilarConfigs, a VM port, limit 5", CALLS, report, &mut |rng| {
        let port = format!("port:vnet{}", rng.gen_range(0..VMS));
        rt.block_on(call_agent(&conn, "FindSimilarConfigs", &(port.as_str(), 5u32)))
    });
    time("FindSimilarIncidents, a device failure, limit 5", CALLS, report, &mut |rng| {
        let seq = critical[rng.gen_range(0..critical.len())];
        rt.block_on(call_agent(&conn, "FindSimilarIncidents", &(seq, 5u32)))
    });
    time("DetectAnomalies, last hour, 28-day baseline", DETECT_CALLS, report, &mut |_| {
        rt.block_on(call_agent(&conn, "DetectAnomalies", &(3_600_000u64, &no_options)))
    });
}

/// The live scorer's cost per event, timed on the newest [`SCORED`] events (scored again
/// after a rebuild that learned them, so it finds less than it would live; the searches and
/// reads, which are the cost, are the same), next to the rest of an event's path.
fn live_scorer_cost(report: &mut Report, state: &Path, files: &ModelFiles, model: &mut SentenceModel, base: &[Vec<f32>], write_us: f64) {
    let layout = Layout::state(state);
    let index = Index::open(&layout.index_path()).unwrap();
    let (graph, _, _) = load_graph(&layout.hnsw_dir(), &VectorConfig::default(), &index, &files.model_sha256).unwrap();
    let mut catalog = Catalog::default();
    catalog_events_after(&mut catalog, &index, 0).unwrap();
    let head = index.covered_seq().unwrap();
    drop(index);
    let search = SearchState::new(graph, Arc::new(RwLock::new(catalog)), Readers::new(&layout.index_path(), ReadMode::Live), 128);
    let mut samples = Vec::new();
    search
        .readers
        .with(|index| {
            let mut scorer = LiveScorer::rebuild(index, &search, DEFAULT_BASELINE_DAYS, ovs_port_agent::event::now_ns())?;
            for _ in 0..3 {
                scorer.scored_seq = head - SCORED as u64;
                let t = Instant::now();
                scorer.advance(index, &search, head)?;
                samples.push(t.elapsed().as_secs_f64() * 1e6 / SCORED as f64);
            }
            Ok(())
        })
        .unwrap();
    let (scorer_us, _) = median_p99(&mut samples);
    report.add(&format!("live anomaly scorer per event (median of 3 × {SCORED} events)"), scorer_us, "µs");
    novelty_agreement(report, &search, head);

    // The rest of an event's path: its graph insert (one at a time, as the vectorizer does)
    // and its embedding (unique texts in batches of 16, as the pool's workers do).
    let graph = search.graph.read().unwrap().clone();
    let t = Instant::now();
    for i in 0..SCORED {
        graph.insert(head + 1 + i as u64, &synth(base, head as usize + 1 + i));
    }
    let insert_us = t.elapsed().as_secs_f64() * 1e6 / SCORED as f64;
    report.add("graph insert per event (one at a time)", insert_us, "µs");
    let texts: Vec<String> = (0..128).map(|i| event_text(900_000 + i, true)).collect();
    let t = Instant::now();
    for chunk in texts.chunks(16) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        model.embed(&refs).unwrap();
    }
    let embed_us = t.elapsed().as_secs_f64() * 1e6 / texts.len() as f64;
    report.add("embedding per event (unique texts, batches of 16, 1 thread)", embed_us, "µs");
    let path_us = write_us + insert_us + embed_us;
    report.add("live scorer ÷ (ledger + index + graph + embedding) per event", scorer_us / path_us * 100.0, "%");
    report.add("live scorer ÷ (ledger + index + graph) per event, texts all cached", scorer_us / (write_us + insert_us) * 100.0, "%");
}

/// How often the scorer's narrow walk finds the same nearest earlier event as a wide one
/// (ef 400), on 300 of the newest events; and the mean distance it overstates by.
fn novelty_agreement(report: &mut Report, search: &SearchState, head: u64) {
    let (mut same, mut excess, mut n) = (0usize, 0f64, 0usize);
    search
        .readers
        .with(|index| {
            for e in index.events_after(head - 300, 300)? {
                let narrow = nearest_earlier(index, search, &e, NOVELTY_EF)?;
                let wide = nearest_earlier(index, search, &e, 400)?;
                if let (Some((dn, _)), Some((dw, _))) = (narrow, wide) {
                    n += 1;
                    same += usize::from(dn <= dw + 1e-6);
                    excess += f64::from((dn - dw).max(0.0));
                }
            }
            Ok(())
        })
        .unwrap();
    report.add(&format!("novelty: nearest found with ef {NOVELTY_EF} = with ef 400 ({n} events)"), same as f64 / n as f64 * 100.0, "%");
    report.add("novelty: mean distance overstated", excess / n as f64, "");
}
