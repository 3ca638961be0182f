//! The fleet: one aggregating replica holding many origins, and queries across daemons.
//!
//! `fleet` / `fleet-50`: N primaries (each M events: ledger and index written through the
//! library, vectors synthesized from real embeddings, as in `dbus`) each run as a real
//! daemon that snapshots and streams its history to one replica host with the local
//! transport (`replica-receive --origin`); then a replica daemon serves them all:
//! SemanticSearch across every origin from one client (p50/p99, query embedding included),
//! the same while one origin receives new snapshots, and the replica's memory.
//!
//! `fleet-kept`: the fleet a `fleet`/`fleet-50` run kept (`BENCH_FLEET_KEEP`) searched again.
//!
//! `fanout`: 5 daemons, each behind its own sshd in a network namespace, asked at once by
//! `ovs-port-agent search --hosts` (D-Bus over ssh): the first query (new ssh connections),
//! p50/p99 of the whole command with connections kept, and with one host silent (its link
//! down).

#[path = "../../tests/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

use crate::dbus::{call_agent, seed};
use crate::report::Report;
use crate::search::base_vectors;
use crate::texts::QUERIES;
use common::{AgentDaemon, BtrfsMount, Netns, PrivateBus, SshReplicaHost, write_replica_config, write_streaming_config_as};
use ovs_port_agent::embed::{ModelFiles, SentenceModel};
use ovs_port_agent::metrics::median_p99;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const QUERY_CALLS: usize = 200;
const STREAM: &str = "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 200\nlow_delay_ms = 200\n";

/// The origin's `i`-th event: the bench's events, numbered on from the origins before it
/// (so origins do not hold identical histories).
fn origin_event(origin: usize, events: usize) -> impl Fn(usize) -> ovs_port_agent::event::NewEvent {
    move |i| crate::ledger::event(i + origin * events)
}

fn replica_head(dir: &Path) -> u64 {
    ovs_port_agent::stream::receive::ReplicaState::load(dir).head_seq
}

fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A replica daemon serving the fleet in `dir` on a bus of its own (its first start takes in
/// every origin: up to half an hour at 50 origins).
fn start_replica(dir: &Path) -> (AgentDaemon, PrivateBus, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let bus = PrivateBus::open();
    let replica = AgentDaemon::spawn_within(
        Command::new(env!("CARGO_BIN_EXE_ovs-port-agent")),
        &bus.address,
        &tmp.path().join("unused"),
        &write_replica_config(tmp.path(), dir),
        Duration::from_secs(1800),
    );
    (replica, bus, tmp)
}

/// A primary daemon over a seeded history of `events`, streaming to `rep_dir` as `host`.
struct SeededPrimary {
    daemon: AgentDaemon,
    _bus: PrivateBus,
    _disk: BtrfsMount,
    _tmp: tempfile::TempDir,
}

impl SeededPrimary {
    fn start(host: &str, origin: usize, events: usize, files: &ModelFiles, base: &[Vec<f32>], rep_dir: Option<&Path>) -> Self {
        let disk = BtrfsMount::new((events as u64 / 20_000 + 1) * 400);
        let state = disk.path().join("state");
        seed(&state, events, files, base, origin_event(origin, events));
        let tmp = tempfile::tempdir().unwrap();
        let mut extra = STREAM.to_owned();
        if let Some(dir) = rep_dir {
            extra += &format!(
                "\n[[stream.replicas]]\nname = \"fleet\"\ntransport = \"local\"\nper_origin = true\nremote_dir = \"{}\"\n",
                dir.display()
            );
        }
        let bus = PrivateBus::open();
        let daemon = AgentDaemon::start(&bus.address, &state, &write_streaming_config_as(tmp.path(), host, &extra));
        Self { daemon, _bus: bus, _disk: disk, _tmp: tmp }
    }
}

fn search_latencies(rt: &tokio::runtime::Runtime, conn: &zbus::Connection, calls: usize, options: &str) -> Vec<f64> {
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls {
        let q = format!("{} {}", QUERIES[i % QUERIES.len()], i);
        let t = Instant::now();
        let reply = if options.is_empty() {
            rt.block_on(call_agent(conn, "SemanticSearch", &(q.as_str(), 10u32)))
        } else {
            let mut opts = std::collections::HashMap::new();
            opts.insert("hosts", zbus::zvariant::Value::from(vec![options.to_owned()]));
            rt.block_on(call_agent(conn, "Search", &(q.as_str(), opts)))
        };
        reply.expect("every search is answered");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat
}

/// Every bench query asked as usual and with `thorough`: the thorough calls' latencies, the
/// mean share of the usual top 10 (host, seq) that the thorough top 10 holds, and the share
/// of queries answered identically.
fn against_thorough(rt: &tokio::runtime::Runtime, conn: &zbus::Connection) -> (Vec<f64>, f64, f64) {
    let top = |thorough: bool, q: &str| -> (Vec<(String, u64)>, f64) {
        let mut opts = std::collections::HashMap::new();
        opts.insert("thorough", zbus::zvariant::Value::from(thorough));
        let t = Instant::now();
        let reply = rt.block_on(call_agent(conn, "Search", &(q, opts))).expect("every search is answered");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let json: String = reply.body().deserialize().expect("a string");
        let answer: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        let hits = answer["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| (h["host"].as_str().unwrap_or("").to_owned(), h["seq"].as_u64().unwrap_or(0)));
        (hits.collect(), ms)
    };
    let (mut latencies, mut overlap, mut identical) = (Vec::new(), 0.0, 0usize);
    let asked = 5 * QUERIES.len();
    for i in 0..asked {
        let q = format!("{} {i}", QUERIES[i % QUERIES.len()]);
        let (merged, _) = top(false, &q);
        let (deep, ms) = top(true, &q);
        latencies.push(ms);
        overlap += merged.iter().filter(|h| deep.contains(h)).count() as f64 / merged.len().max(1) as f64;
        identical += usize::from(merged == deep);
    }
    (latencies, overlap / asked as f64, identical as f64 / asked as f64)
}

pub fn aggregating_replica(origins: usize, events: usize) {
    let mut report = Report::new(&format!("fleet-{origins}x{}", crate::size_name(events)));
    let files = ModelFiles::locate(&crate::model_config()).expect("provision the model first");
    let base = base_vectors(&mut SentenceModel::load(&files, 256).unwrap());
    let fleet_disk = BtrfsMount::new((origins as u64 * events as u64 * 8 / 1024).max(2048));
    let rep_dir = fleet_disk.path().join("fleet");

    // Each origin: seeded, started, streamed (a full send), verified by the receiver. The
    // last primary stays up for the "new snapshot while querying" figure.
    let mut arrive = Vec::new();
    let mut last = None;
    for i in 0..origins {
        let host = format!("hv{i:02}");
        let t0 = Instant::now();
        let primary = SeededPrimary::start(&host, i, events, &files, &base, Some(&rep_dir));
        let origin_dir = ovs_port_agent::stream::receive::origin_dir(&rep_dir, &host);
        wait_for(&format!("{host} arrived"), Duration::from_secs(600), || replica_head(&origin_dir) >= events as u64);
        arrive.push(t0.elapsed().as_secs_f64());
        println!("  origin {host}: seeded, streamed and verified in {:.1} s", t0.elapsed().as_secs_f64());
        if i + 1 == origins {
            last = Some(primary);
        }
    }
    let (p50, _) = median_p99(&mut arrive);
    report.add(&format!("one origin of {events} events seeded, full send, verified, p50"), p50, "s");

    let t0 = Instant::now();
    let (replica, bus, _tmp) = start_replica(&rep_dir);
    report.add(
        &format!("replica daemon start, first time (takes in {origins} origins, builds their graphs)"),
        t0.elapsed().as_secs_f64(),
        "s",
    );
    let (hosts_ok, out, _) = replica.gdbus_call("Hosts", &[]);
    let served =
        if hosts_ok { serde_json::from_str::<serde_json::Value>(&common::gdbus_string(&out)).unwrap() } else { serde_json::Value::Null };
    report.add("origins served", served.as_array().map_or(0, |a| a.len()) as f64, "origins");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let conn = rt.block_on(async { zbus::connection::Builder::address(bus.address.as_str()).unwrap().build().await.unwrap() });
    let mut all = search_latencies(&rt, &conn, QUERY_CALLS, "");
    let (p50, p99) = median_p99(&mut all);
    report.add(&format!("SemanticSearch across {origins} origins x {events}, one client, p50"), p50, "ms");
    report.add(&format!("SemanticSearch across {origins} origins x {events}, one client, p99"), p99, "ms");
    // Each origin searched as deep as a search of one ("thorough", what every search did
    // before merged searches went shallower): its latency, and how far the merged answers
    // agree with it.
    let (mut thorough, overlap, identical) = against_thorough(&rt, &conn);
    let (p50, p99) = median_p99(&mut thorough);
    report.add("the same, thorough (each origin as deep as a search of one), p50 / p99", p50, &format!("ms / {p99:.1} ms"));
    report.add("merged answers' top 10 found by the thorough search too, mean", overlap, "share");
    report.add("merged answers identical to the thorough ones (same hits, same order)", identical, "share");
    let mut one = search_latencies(&rt, &conn, QUERY_CALLS, "hv00");
    let (p50, p99) = median_p99(&mut one);
    report.add("Search of one origin (hosts = [hv00]), p50 / p99", p50, &format!("ms / {p99:.1} ms"));
    let (rss, peak) = replica.memory_kib();
    report.add("replica daemon RSS after the queries", rss as f64 / 1024.0, "MiB");
    report.add("replica daemon peak RSS (VmHWM)", peak as f64 / 1024.0, "MiB");

    // One origin takes in new snapshots (2,000 new events, embedded by its primary and
    // streamed as incrementals) while a client searches across all.
    let primary = last.expect("at least one origin");
    let last_host = format!("hv{:02}", origins - 1);
    let origin_dir = ovs_port_agent::stream::receive::origin_dir(&rep_dir, &last_host);
    let target = events as u64 + 2000;
    let busy = Arc::new(AtomicBool::new(true));
    let writer = {
        let busy = busy.clone();
        let address = primary.daemon.bus.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
                for i in 0..2000 {
                    let element = format!("interface:new{}", i % 50);
                    let details = format!("{{\"summary\":\"new port {i} flapped on the uplink bond\"}}");
                    call_agent(&conn, "RecordEvent", &(element.as_str(), "link.flap", details.as_str(), "medium")).await.unwrap();
                }
            });
            wait_for("the new events reached the replica", Duration::from_secs(600), || replica_head(&origin_dir) >= target);
            busy.store(false, Ordering::Relaxed);
        })
    };
    let mut during = Vec::new();
    while busy.load(Ordering::Relaxed) {
        during.extend(search_latencies(&rt, &conn, 10, ""));
    }
    writer.join().unwrap();
    let (p50, p99) = median_p99(&mut during);
    report.add(&format!("SemanticSearch across all while {last_host} takes in 2,000 new events, p50"), p50, "ms");
    report.add(&format!("SemanticSearch across all while {last_host} takes in 2,000 new events, p99"), p99, "ms");
    report.add("searches answered meanwhile", during.len() as f64, "calls");
    report.note(
        "how",
        "histories: ledger and index through the library, vectors synthesized from real embeddings (embedding 20k texts per origin would take 50 s each); snapshots, streams, verification and the replica's take-in are the real ones",
    );
    drop(replica);
    drop(primary);
    if let Some(keep) = std::env::var_os("BENCH_FLEET_KEEP") {
        // For `fleet-kept`: the origins' snapshots and the replica's own stores (into a new
        // directory: `cp` would put them inside one that exists).
        let fresh = !Path::new(&keep).exists();
        let copied = fresh && Command::new("cp").arg("-a").arg(&rep_dir).arg(&keep).status().is_ok_and(|s| s.success());
        println!("  the fleet kept in {}: {}", Path::new(&keep).display(), if copied { "done" } else { "FAILED" });
    }
    report.finish();
}

pub fn fan_out() {
    let mut report = Report::new("fleet-fanout");
    let files = ModelFiles::locate(&crate::model_config()).expect("provision the model first");
    let base = base_vectors(&mut SentenceModel::load(&files, 256).unwrap());
    let client = Arc::new(Netns::new("fanq"));
    let mut members = Vec::new();
    let mut toml = String::from("[fleet]\ndeadline_ms = 4000\n");
    for i in 0..5 {
        let primary = SeededPrimary::start(&format!("hv{i}"), i, 20_000, &files, &base, None);
        let ssh = SshReplicaHost::start_from(client.clone(), &format!("systemd-stdio-bridge --bus-path={}", primary.daemon.bus));
        toml += &format!(
            "\n[[fleet.hosts]]\nname = \"d{i}\"\ndestination = \"root@{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nssh_options = [\"-o\", \"LogLevel=ERROR\"]\nbus = \"{}\"\n",
            ssh.address,
            ssh.client_key.display(),
            ssh.known_hosts().display(),
            primary.daemon.bus
        );
        members.push((primary, ssh));
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fleet.toml");
    std::fs::write(&config, toml).unwrap();
    let ask = |hosts: &str, i: usize| -> (f64, serde_json::Value) {
        let q = format!("{} {i}", QUERIES[i % QUERIES.len()]);
        let t = Instant::now();
        let out = client
            .command(env!("CARGO_BIN_EXE_ovs-port-agent"))
            .arg("--config")
            .arg(&config)
            .args(["search", &q, "--hosts", hosts, "--json"])
            .output()
            .unwrap();
        (t.elapsed().as_secs_f64() * 1000.0, serde_json::from_slice(&out.stdout).unwrap_or_default())
    };
    let all = "d0,d1,d2,d3,d4";
    // The first query opens an ssh connection per host (kept for the next ones).
    let (first, _) = ask(all, 999);
    report.add("first search --hosts across 5 daemons (new ssh connections), whole command", first, "ms");
    let mut lat = Vec::new();
    let mut partial = 0;
    for i in 0..50 {
        let (ms, answer) = ask(all, i);
        if answer["complete"] != true {
            partial += 1;
            eprintln!("a partial answer: {}", answer["daemons"]);
        }
        lat.push(ms);
    }
    report.add("answers missing a daemon (of 50, deadline 4 s)", partial as f64, "answers");
    let (p50, p99) = median_p99(&mut lat);
    report.add("search --hosts across 5 daemons over ssh (20k events each, connections kept), whole command, p50", p50, "ms");
    report.add("search --hosts across 5 daemons over ssh, whole command, p99", p99, "ms");
    // The same over D-Bus from a daemon in the client namespace (FleetSearch), which keeps
    // its D-Bus sessions to the fleet between queries.
    let (asker, asker_bus, _asker_dir) = common::start_fleet_asker(&client, &config);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let conn = rt.block_on(async { zbus::connection::Builder::address(asker_bus.address.as_str()).unwrap().build().await.unwrap() });
    let fleet_search = |i: usize| -> (f64, serde_json::Value) {
        let q = format!("{} {i}", QUERIES[i % QUERIES.len()]);
        let mut opts = std::collections::HashMap::new();
        opts.insert("daemons", zbus::zvariant::Value::from(vec!["d0", "d1", "d2", "d3", "d4"]));
        let t = Instant::now();
        let reply = rt.block_on(call_agent(&conn, "FleetSearch", &(q.as_str(), opts))).expect("FleetSearch answers");
        let text: String = reply.body().deserialize().unwrap();
        (t.elapsed().as_secs_f64() * 1000.0, serde_json::from_str(&text).unwrap())
    };
    let (first, _) = fleet_search(999);
    report.add("FleetSearch over D-Bus across the 5, first call (sessions opened)", first, "ms");
    let mut lat = Vec::new();
    for i in 0..100 {
        let (ms, answer) = fleet_search(i);
        assert_eq!(answer["complete"], true, "{answer}");
        lat.push(ms);
    }
    let (p50, p99) = median_p99(&mut lat);
    report.add("FleetSearch over D-Bus across 5 daemons over ssh (sessions kept), p50", p50, "ms");
    report.add("FleetSearch over D-Bus across 5 daemons over ssh (sessions kept), p99", p99, "ms");
    drop(asker);

    // One host goes silent (its link down): it costs half the deadline (the listing), then the
    // others answer.
    let (_, silent) = &members[4];
    let status = Command::new("ip").args(["-n", &silent.replica_ns.name, "link", "set", &silent.replica_link, "down"]).status().unwrap();
    assert!(status.success());
    let mut lat = Vec::new();
    for i in 0..10 {
        let (ms, answer) = ask(all, i);
        assert_eq!(answer["complete"], false);
        lat.push(ms);
    }
    let (p50, _) = median_p99(&mut lat);
    report.add("the same with one host silent (deadline 4 s, listing half of it), p50", p50, "ms");
    report.note("machine", format!("{} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)));
    report.finish();
}

/// `fleet-kept`: the fleet kept by an earlier `fleet` / `fleet-50` run
/// (`BENCH_FLEET_KEEP=DIR`), searched again without building it (minutes instead of a
/// quarter of an hour, for comparing changes to the search): `Fleet::search` called
/// directly, then a replica daemon over D-Bus with the agreement with thorough searches.
pub fn kept_fleet() {
    let dir = PathBuf::from(std::env::var_os("BENCH_FLEET_DIR").expect("BENCH_FLEET_DIR: a directory kept by BENCH_FLEET_KEEP"));
    let mut report = Report::new("fleet-kept");
    let config = ovs_port_agent::config::Config { embedding: crate::model_config(), ..Default::default() };
    let fleet = ovs_port_agent::replica::Fleet::open(&dir, &config).unwrap();
    let origins = fleet.names().len();
    let (select, filters) = (ovs_port_agent::replica::OriginSelect::default(), ovs_port_agent::vector::Filters::default());
    let mut direct = Vec::new();
    for i in 0..QUERY_CALLS {
        let q = format!("{} {i}", QUERIES[i % QUERIES.len()]);
        let t = Instant::now();
        fleet.search(None, &q, 10, &filters, &select).expect("every search is answered");
        direct.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(fleet);
    let (p50, p99) = median_p99(&mut direct);
    report.add(&format!("Fleet::search across {origins} origins, called directly, p50 / p99"), p50, &format!("ms / {p99:.1} ms"));

    let (replica, bus, _tmp) = start_replica(&dir);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let conn = rt.block_on(async { zbus::connection::Builder::address(bus.address.as_str()).unwrap().build().await.unwrap() });
    let mut all = search_latencies(&rt, &conn, QUERY_CALLS, "");
    let (p50, p99) = median_p99(&mut all);
    report.add(&format!("SemanticSearch across {origins} origins over D-Bus, p50 / p99"), p50, &format!("ms / {p99:.1} ms"));
    let (mut thorough, overlap, identical) = against_thorough(&rt, &conn);
    let (p50, p99) = median_p99(&mut thorough);
    report.add("the same, thorough, p50 / p99", p50, &format!("ms / {p99:.1} ms"));
    report.add("merged answers' top 10 found by the thorough search too, mean", overlap, "share");
    report.add("merged answers identical to the thorough ones", identical, "share");
    drop(replica);
    report.finish();
}
