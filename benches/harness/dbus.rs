//! The D-Bus service under load: a daemon on a private bus with N events (ledger and index
//! written through the library; vectors synthesized from real embeddings, since embedding
//! N texts takes N/120 s here), then 50 concurrent clients making 100 calls each. Reports
//! p50/p99 per member and checks every call was answered.

use crate::report::Report;
use crate::search::{base_vectors, synth};
use crate::texts::QUERIES;
use ovs_port_agent::config::Config;
use ovs_port_agent::dataset::DataSet;
use ovs_port_agent::dbus::pacing::CALLS_PER_SECOND;
use ovs_port_agent::dbus::{BUS_NAME, OBJECT_PATH};
use ovs_port_agent::embed::{ModelFiles, SentenceModel};
use ovs_port_agent::event::NewEvent;
use ovs_port_agent::layout::Layout;
use ovs_port_agent::metrics::median_p99;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 50;
const CALLS: usize = 100;

/// One call to a member of the agent's interface.
pub async fn call_agent<B>(conn: &zbus::Connection, member: &str, body: &B) -> zbus::Result<zbus::Message>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(Some(BUS_NAME), OBJECT_PATH, Some(BUS_NAME), member, body).await
}

/// The daemon on a private bus, serving a data directory; stopped (SIGTERM) when dropped.
pub struct PrivateDaemon {
    pub address: String,
    bus: Child,
    daemon: Child,
    _bus_dir: tempfile::TempDir,
}

/// The daemon's resident memory with `n` events (the model, the graph and SQLite's cache
/// loaded), whole and per event.
fn daemon_memory(daemon: &PrivateDaemon, n: usize, when: &str, report: &mut Report) {
    let (peak, now) = crate::report::rss_mib_of(&daemon.daemon.id().to_string());
    report.add(&format!("daemon RSS, {n} events, {when}"), now, "MiB");
    report.add(&format!("daemon RSS per event, {n} events, {when}"), now * 1048576.0 / n as f64, "B");
    report.add(&format!("daemon peak RSS (VmHWM), {n} events, {when}"), peak, "MiB");
}

impl PrivateDaemon {
    /// Starts a bus and the daemon on `state` and waits until it answers Ping.
    pub fn start(state: &Path) -> Self {
        let econfig = crate::model_config();
        let bus_dir = tempfile::tempdir().unwrap();
        let socket = bus_dir.path().join("bus.sock");
        std::fs::write(bus_dir.path().join("bus.conf"), format!("<busconfig><type>session</type><listen>unix:path={}</listen><auth>EXTERNAL</auth><policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/></policy><limit name=\"max_connections_per_user\">1000</limit><limit name=\"max_completed_connections\">1000</limit></busconfig>", socket.display())).unwrap();
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", bus_dir.path().join("bus.conf").display()))
            .args(["--nofork", "--nopidfile"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let address = format!("unix:path={}", socket.display());
        let config_file = bus_dir.path().join("agent.toml");
        std::fs::write(&config_file, format!("[agent]\nrequire_btrfs = false\n[embedding]\nmodel_dir = \"{}\"\nruntime_library = \"{}\"\n[sources]\novsdb = false\nnetworkmanager = false\n", econfig.model_dir.display(), econfig.runtime_library.display())).unwrap();
        let t0 = Instant::now();
        let daemon = Command::new(env!("CARGO_BIN_EXE_ovs-port-agent"))
            .arg("--config")
            .arg(&config_file)
            .args(["daemon", "--bus", &address, "--data-dir"])
            .arg(state)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
            loop {
                if call_agent(&conn, "Ping", &()).await.is_ok() {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(3600), "the daemon did not come up");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { address, bus, daemon, _bus_dir: bus_dir }
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Writes `n` events made by `event` (ledger and index through the library, synthesized
/// vectors); returns the seconds spent in ledger appends and index applies.
pub fn seed(dir: &Path, n: usize, files: &ModelFiles, base: &[Vec<f32>], event: impl Fn(usize) -> NewEvent) -> f64 {
    let mut config = Config::default();
    config.agent.require_btrfs = false;
    let layout = Layout::state(dir);
    let mut store = DataSet::open_writable(&layout, &config).unwrap();
    let mut writing = Duration::ZERO;
    for start in (0..n).step_by(10_000) {
        let events: Vec<_> = (start..(start + 10_000).min(n)).map(&event).collect();
        let t = Instant::now();
        let records = store.ledger_mut().append_batch(&events).unwrap();
        store.index_mut().apply(&records).unwrap();
        writing += t.elapsed();
        let vectors: Vec<(u64, Arc<[f32]>)> = records.iter().map(|r| (r.seq, synth(base, r.seq as usize).into())).collect();
        store.index_mut().put_vectors(&vectors, records.last().unwrap().seq).unwrap();
    }
    store.index_mut().bind_model(&files.model_id(), &files.model_sha256).unwrap();
    writing.as_secs_f64()
}

/// A data directory of `n` seeded events (all with vectors) under `dir`.
fn seeded_state(dir: &Path, n: usize, report: &mut Report) -> std::path::PathBuf {
    let econfig = crate::model_config();
    let files = ModelFiles::locate(&econfig).expect("provision the model first");
    let base = {
        let mut model = SentenceModel::load(&files, 256).unwrap();
        base_vectors(&mut model)
    };
    let state = dir.join(format!("dbus-state-{n}"));
    let _ = std::fs::remove_dir_all(&state);
    let t0 = Instant::now();
    seed(&state, n, &files, &base, crate::ledger::event);
    report.add("seeding (ledger + index + synthesized vectors)", t0.elapsed().as_secs_f64(), "s");
    state
}

/// The flood alone (section `flood`): a quicker look at one client's flood than `dbus`.
pub fn flood_only(dir: &Path, n: usize) {
    let mut report = Report::new(&format!("flood-{}", crate::size_name(n)));
    let state = seeded_state(dir, n, &mut report);
    let daemon = PrivateDaemon::start(&state);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Warmed first, as the daemon is when `dbus` floods it after its other phases.
    rt.block_on(observe(&daemon.address, "warm-up", 50));
    flood(&rt, &daemon.address, n, &mut report);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&state);
    report.finish();
}

pub fn run(dir: &Path, n: usize) {
    let mut report = Report::new(&format!("dbus-{}", crate::size_name(n)));
    let state = seeded_state(dir, n, &mut report);
    disk_per_event(&mut report, &state, n);

    let t0 = Instant::now();
    let daemon = PrivateDaemon::start(&state);
    let address = daemon.address.clone();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    report.add("daemon start until it answers (loads the graph)", t0.elapsed().as_secs_f64(), "s");

    for member in ["Ping", "SemanticSearch", "RecordEvent"] {
        let latencies: Vec<f64> = rt.block_on(async {
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let address = address.clone();
                tasks.push(tokio::spawn(async move {
                    let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
                    let mut lat = Vec::with_capacity(CALLS);
                    for i in 0..CALLS {
                        let t = Instant::now();
                        let r = match member {
                            "Ping" => call_agent(&conn, "Ping", &()).await,
                            "SemanticSearch" => {
                                let q = format!("{} {}", QUERIES[(c + i) % QUERIES.len()], i);
                                call_agent(&conn, "SemanticSearch", &(q.as_str(), 10u32)).await
                            }
                            _ => {
                                let element = format!("interface:bench{c}");
                                call_agent(&conn, "RecordEvent", &(element.as_str(), "link.flap", "{\"summary\":\"bench\"}", "low")).await
                            }
                        };
                        r.expect("every call is answered");
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        });
        let answered = latencies.len();
        let mut lat = latencies;
        let (p50, p99) = median_p99(&mut lat);
        report.add(&format!("{member}: calls answered ({CLIENTS} clients x {CALLS})"), answered as f64, "calls");
        report.add(&format!("{member} p50, {n} events, {CLIENTS} concurrent clients"), p50, "ms");
        report.add(&format!("{member} p99, {n} events, {CLIENTS} concurrent clients"), p99, "ms");
    }
    // One client alone: SemanticSearch end to end without queueing behind 49 others — first
    // while the 5,000 events just recorded are being embedded (the two cores shared), then
    // once the daemon is idle.
    let one_client = |label: &str, report: &mut Report| {
        let mut single: Vec<f64> = rt.block_on(async {
            let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
            let mut lat = Vec::new();
            for i in 0..100 {
                // A different wording from other phases, so no query comes from the cache.
                let q = format!("{} {label} {}", QUERIES[i % QUERIES.len()], i);
                let t = Instant::now();
                call_agent(&conn, "SemanticSearch", &(q.as_str(), 10u32)).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        });
        let (p50, p99) = median_p99(&mut single);
        report.add(&format!("SemanticSearch p50, {n} events, one client, {label}"), p50, "ms");
        report.add(&format!("SemanticSearch p99, {n} events, one client, {label}"), p99, "ms");
    };
    one_client("while embedding", &mut report);
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
        let started = Instant::now();
        loop {
            let reply = call_agent(&conn, "GetBlockchainStats", &()).await.unwrap();
            let stats: serde_json::Value = serde_json::from_str(&reply.body().deserialize::<String>().unwrap()).unwrap();
            if stats["vectors"].as_u64() >= stats["events"].as_u64() || started.elapsed() > Duration::from_secs(300) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    one_client("idle", &mut report);
    daemon_memory(&daemon, n, "after the searches above", &mut report);
    flood(&rt, &address, n, &mut report);
    // The flood loads the background lane's model of its own: what that costs.
    daemon_memory(&daemon, n, "after the floods", &mut report);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&state);
    report.finish();
}

/// Calls each of Ping and SemanticSearch timed by the observing client, quiet and flooded.
const OBSERVED_CALLS: usize = 2_000;
/// Requests the flooding client sends at least (it goes on until the observer is done).
const FLOOD_REQUESTS: usize = 10_000;
/// Requests the flooding client keeps in flight (dbus-daemon lets a connection have 128
/// calls awaiting replies).
const FLOOD_IN_FLIGHT: usize = 100;

/// The observer stays under the daemon's pace for one connection (`dbus::pacing`): a Ping and
/// a search take at least this long together, so its own calls never wait for their time
/// (on a quick quiet daemon they would otherwise: about 210 calls a second).
const OBSERVED_PAIR: Duration = Duration::from_millis(2_000 / CALLS_PER_SECOND as u64 + 1);

/// One client's Ping and SemanticSearch latencies, one call after another, `calls` of each.
async fn observe(address: &str, label: &str, calls: usize) -> Observed {
    let conn = zbus::connection::Builder::address(address).unwrap().build().await.unwrap();
    let (mut ping, mut search) = (Vec::new(), Vec::new());
    for i in 0..calls {
        let pair = Instant::now();
        let t = Instant::now();
        call_agent(&conn, "Ping", &()).await.expect("Ping answered");
        ping.push(t.elapsed().as_secs_f64() * 1000.0);
        let q = format!("{} {label} {i}", QUERIES[i % QUERIES.len()]);
        let t = Instant::now();
        call_agent(&conn, "SemanticSearch", &(q.as_str(), 10u32)).await.expect("SemanticSearch answered");
        search.push(t.elapsed().as_secs_f64() * 1000.0);
        if let Some(rest) = OBSERVED_PAIR.checked_sub(pair.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    Observed { ping, search }
}

/// Sets the flag when dropped, so a flooder that panics still ends the flood.
struct SetOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How the flooding client keeps its requests in flight.
#[derive(Clone, Copy)]
enum FloodShape {
    /// 100 sent at once, then all their answers awaited, then the next 100.
    Batches,
    /// 100 in flight, each answer sending the next at once.
    Window,
    /// Ping calls instead of searches, 100 in flight as in `Window`.
    Pings,
}

impl FloodShape {
    fn label(self) -> &'static str {
        match self {
            Self::Batches => "flood in batches of 100",
            Self::Window => "flood with 100 always in flight",
            Self::Pings => "flood of Pings, 100 always in flight",
        }
    }
}

/// The three flood shapes, one after the other, each between two quiet phases of the same
/// observer (the quiet phase after one flood is the one before the next). A flood's normal
/// p99 is taken over the quiet calls on both sides of it: this machine's quiet p99 drifts (up
/// to 2x between consecutive phases of one run, 1.0-4.3 ms over a day), and a baseline on both
/// sides follows that drift instead of betting on the phase before. The ratio to the phase
/// before alone is reported too.
fn flood(rt: &tokio::runtime::Runtime, address: &str, n: usize, report: &mut Report) {
    let quiet = |phase: usize| rt.block_on(observe(address, &format!("quiet {phase}"), OBSERVED_CALLS));
    let mut before = quiet(0);
    for (phase, shape) in [FloodShape::Batches, FloodShape::Window, FloodShape::Pings].into_iter().enumerate() {
        let flooded = flood_shaped(rt, address, n, phase, shape, report);
        let after = quiet(phase + 1);
        report_observed(report, shape.label(), &before, &flooded, &after);
        before = after;
    }
}

/// One observer's Ping and SemanticSearch latencies over one phase (ms).
struct Observed {
    ping: Vec<f64>,
    search: Vec<f64>,
}

/// The other client's figures around one flood: quiet before, flooded, quiet after, and the
/// flooded p99 against the quiet p99 on both sides (the target) and before it alone.
fn report_observed(report: &mut Report, flood: &str, before: &Observed, flooded: &Observed, after: &Observed) {
    let kinds = [("Ping", &before.ping, &flooded.ping, &after.ping), ("SemanticSearch", &before.search, &flooded.search, &after.search)];
    for (what, before, flooded, after) in kinds {
        let (q50, q99) = median_p99(&mut before.clone());
        let (_, after99) = median_p99(&mut after.clone());
        let (_, both99) = median_p99(&mut [before.as_slice(), after.as_slice()].concat());
        let (f50, f99) = median_p99(&mut flooded.clone());
        report.add(&format!("another client's {what} p50, quiet, before the {flood}"), q50, "ms");
        report.add(&format!("another client's {what} p99, quiet, before the {flood}"), q99, "ms");
        report.add(&format!("another client's {what} p99, quiet, after the {flood}"), after99, "ms");
        report.add(&format!("another client's {what} p99, quiet on both sides of the {flood}"), both99, "ms");
        report.add(&format!("another client's {what} p50, {flood}"), f50, "ms");
        report.add(&format!("another client's {what} p99, {flood}"), f99, "ms");
        report.add(&format!("another client's {what} p99, {flood} ÷ quiet before it"), f99 / q99, "x");
        report.add(&format!("another client's {what} p99, {flood} ÷ quiet on both sides (target ≤ 3)"), f99 / both99, "x");
    }
}

/// A client floods SemanticSearch (or Ping) requests as fast as it can (at least 10,000, 100 in
/// flight) while another client's Ping and SemanticSearch are timed, 2,000 calls each (the p99
/// of 200 calls is their third slowest: a hiccup of the machine); returns those timings.
/// `phase` numbers the observer's query texts, so no phase repeats another's (the daemon caches
/// query embeddings).
fn flood_shaped(rt: &tokio::runtime::Runtime, address: &str, n: usize, phase: usize, shape: FloodShape, report: &mut Report) -> Observed {
    use futures_util::StreamExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let observed = Arc::new(AtomicBool::new(false));
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let started = Instant::now();
    // The flooder is another client: its own thread and runtime, so the observer never waits
    // for the flooder's polling (only for the daemon and the cores, as a real client would).
    let flooder = {
        let (address, observed, counts) = (address.to_owned(), observed.clone(), counts.clone());
        let own = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        std::thread::spawn(move || {
            own.block_on(async move {
                let conn = zbus::connection::Builder::address(address.as_str()).unwrap().build().await.unwrap();
                let go_on = |sent: usize| sent < FLOOD_REQUESTS || !observed.load(Ordering::Relaxed);
                let call = |sent: usize| {
                    let conn = conn.clone();
                    async move {
                        if matches!(shape, FloodShape::Pings) {
                            return call_agent(&conn, "Ping", &()).await;
                        }
                        let q = format!("flood {} {sent}", QUERIES[sent % QUERIES.len()]);
                        call_agent(&conn, "SemanticSearch", &(q.as_str(), 10u32)).await
                    }
                };
                let tally = |result: zbus::Result<zbus::Message>| match result {
                    Ok(_) => counts.0.fetch_add(1, Ordering::Relaxed),
                    Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == "dev.ovs.PortAgent1.Error.Busy" => {
                        counts.1.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("a flood request got {e}"),
                };
                match shape {
                    FloodShape::Batches => {
                        let mut sent = 0;
                        while go_on(sent) {
                            for result in futures_util::future::join_all((sent..sent + FLOOD_IN_FLIGHT).map(call)).await {
                                tally(result);
                            }
                            sent += FLOOD_IN_FLIGHT;
                        }
                    }
                    FloodShape::Window | FloodShape::Pings => {
                        let mut answers = futures_util::stream::iter(0usize..)
                            .take_while(|&sent| futures_util::future::ready(go_on(sent)))
                            .map(call)
                            .buffer_unordered(FLOOD_IN_FLIGHT);
                        while let Some(result) = answers.next().await {
                            tally(result);
                        }
                    }
                }
            })
        })
    };
    let flooded = {
        let _done = SetOnDrop(observed);
        rt.block_on(observe(address, &format!("flooded {phase}"), OBSERVED_CALLS))
    };
    flooder.join().expect("the flooding client");
    let flood_secs = started.elapsed().as_secs_f64();
    let (answered, busy) = (counts.0.load(Ordering::Relaxed), counts.1.load(Ordering::Relaxed));
    let flood = shape.label();
    report.add(&format!("{flood}: requests from one client, {n} events"), (answered + busy) as f64, "requests");
    report.add(&format!("{flood}: duration"), flood_secs, "s");
    report.add(&format!("{flood}: answered"), answered as f64, "requests");
    report.add(&format!("{flood}: refused busy"), busy as f64, "requests");
    flooded
}

/// Bytes on disk per event: the ledger, the index (rows, vectors, lexical index), and what the
/// lexical index adds (measured on a copy of the index with it dropped and vacuumed).
fn disk_per_event(report: &mut Report, state: &Path, n: usize) {
    let layout = Layout::state(state);
    let ledger: u64 = std::fs::read_dir(layout.ledger_dir()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    let index_path = layout.index_path();
    let copy = state.join("index-without-fts.sqlite");
    std::fs::copy(&index_path, &copy).unwrap();
    let index = std::fs::metadata(&index_path).unwrap().len();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    conn.execute_batch("PRAGMA journal_mode=DELETE; DROP TABLE events_fts; VACUUM;").unwrap();
    drop(conn);
    let without = std::fs::metadata(&copy).unwrap().len();
    std::fs::remove_file(&copy).unwrap();
    let per = |bytes: u64| bytes as f64 / n as f64;
    report.add("disk per event: ledger", per(ledger), "B");
    report.add("disk per event: index (rows, vectors, lexical)", per(index), "B");
    report.add("disk per event: of which the lexical index", per(index.saturating_sub(without)), "B");
    report.add("lexical index ÷ everything else on disk", index.saturating_sub(without) as f64 / (ledger + without) as f64 * 100.0, "%");
}
