//! Replication beside btrbk (issue 15): the same primary subvolume and history, the same
//! ssh set-up (a replica host in a network namespace with a real sshd), `btrfs send -p`
//! driven by our streamer and by btrbk (Debian's package), one after the other in one run.
//!
//! For each of 20 critical events: from its acknowledgement until it is on the replica (ours:
//! in a received, verified snapshot; btrbk: `btrbk run` started at once, as soon as it returns
//! — a timer-driven btrbk adds its interval), the bytes that crossed the link to the replica
//! (its veth counters: stream, ssh and protocol), and the primary's CPU for it: the daemon
//! with everything it runs (recording and embedding the event; ours: also the snapshot, its
//! `btrfs send` and its ssh session), plus, for btrbk, its whole run (the snapshot, the
//! subvolume listings, `btrfs send` and ssh).

#[path = "../../tests/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

use crate::dbus::seed;
use crate::report::Report;
use crate::search::base_vectors;
use common::{AgentDaemon, BtrfsMount, PrivateBus, SshReplicaHost, gdbus_string, write_streaming_config};
use ovs_port_agent::embed::{ModelFiles, SentenceModel};
use ovs_port_agent::metrics::median_p99;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const HISTORY: usize = 20_000;
const EVENTS: usize = 20;
const NO_SOURCES: &str = "\n[sources]\novsdb = false\nnetworkmanager = false\n";

/// Bytes received so far on the replica host's end of the link.
fn received_bytes(host: &SshReplicaHost) -> u64 {
    let out =
        Command::new("ip").args(["-n", &host.replica_ns.name, "-s", "-j", "link", "show", "dev", &host.replica_link]).output().unwrap();
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    links[0]["stats64"]["rx"]["bytes"].as_u64().expect("link counters")
}

/// CPU seconds of a process (its threads and its waited-for children) and, recursively, of
/// its live children: a daemon with its long-lived ssh session and its `btrfs send`s.
fn tree_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    // utime, stime, cutime, cstime: fields 14 to 17, the 12th to 15th after the name.
    let ticks: u64 = after_name.split(' ').skip(11).take(4).map(|f| f.parse::<u64>().unwrap_or(0)).sum();
    let own = ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect();
    own + children.into_iter().map(tree_cpu_s).sum::<f64>()
}

/// CPU seconds of this process's waited-for children (a finished `btrbk run`).
fn children_cpu_s() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(usage.ru_utime) + s(usage.ru_stime)
}

fn record_critical(daemon: &AgentDaemon, i: usize, who: &str) -> String {
    let details = format!("{{\"summary\":\"{who} critical event {i}: uplink eth{i} lost carrier\"}}");
    let (ok, out, err) = daemon.gdbus_call("RecordEvent", &[&format!("interface:eth{i}"), "link.down", &details, "critical"]);
    assert!(ok, "{err}");
    gdbus_string(&out)
}

struct Figures {
    latency_ms: Vec<f64>,
    bytes: Vec<f64>,
    cpu_ms: Vec<f64>,
}

impl Figures {
    fn new() -> Self {
        Self { latency_ms: Vec::new(), bytes: Vec::new(), cpu_ms: Vec::new() }
    }

    fn report(mut self, report: &mut Report, who: &str) -> (f64, f64, f64) {
        let (lat50, lat99) = median_p99(&mut self.latency_ms);
        let (bytes50, _) = median_p99(&mut self.bytes);
        let (cpu50, _) = median_p99(&mut self.cpu_ms);
        report.add(&format!("{who}: critical event → on the replica, p50"), lat50, "ms");
        report.add(&format!("{who}: critical event → on the replica, p99"), lat99, "ms");
        report.add(&format!("{who}: bytes to the replica per incremental, p50"), bytes50, "bytes");
        report.add(&format!("{who}: primary CPU per event, p50"), cpu50, "ms");
        (lat50, bytes50, cpu50)
    }
}

pub fn run() {
    let mut report = Report::new("peers-replication");
    let files = ModelFiles::locate(&crate::model_config()).expect("provision the model first");
    let base = base_vectors(&mut SentenceModel::load(&files, 256).unwrap());
    let primary = BtrfsMount::new(1200);
    let replica = BtrfsMount::new(1200);
    let state = primary.path().join("state");
    seed(&state, HISTORY, &files, &base, crate::ledger::event);
    report.note("history", format!("{HISTORY} events, then {EVENTS} critical events for each"));
    let rep_dir = replica.path().join("rep");
    let host = SshReplicaHost::receiving_into(&rep_dir);
    let tmp = tempfile::tempdir().unwrap();
    let bus = PrivateBus::open();

    // Ours: the daemon streams to the replica's restricted key.
    let config = write_streaming_config(tmp.path(), &format!("{NO_SOURCES}{}", host.replica_toml(&[])));
    let mut daemon = AgentDaemon::start_in(&host.primary_ns, &bus.address, &state, &config);
    common::wait_until("the history reached the replica", Duration::from_secs(600), || common::replica_head(&rep_dir) >= HISTORY as u64);
    let mut ours = Figures::new();
    for i in 0..EVENTS {
        let (bytes0, cpu0, head0) = (received_bytes(&host), tree_cpu_s(daemon.child.id()), common::replica_head(&rep_dir));
        let t0 = Instant::now();
        record_critical(&daemon, i, "ours");
        common::wait_until("the event reached the replica", Duration::from_secs(60), || common::replica_head(&rep_dir) > head0);
        ours.latency_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        // Let the send finish its last packets before reading the counters.
        std::thread::sleep(Duration::from_millis(300));
        ours.bytes.push((received_bytes(&host) - bytes0) as f64);
        ours.cpu_ms.push((tree_cpu_s(daemon.child.id()) - cpu0) * 1000.0);
    }
    daemon.stop();
    let (ours_lat, ours_bytes, ours_cpu) = ours.report(&mut report, "ours");

    // btrbk: the same subvolume, the same host, a second key without a forced command (btrbk
    // runs btrfs on the replica through a shell). Our daemon records but does not stream.
    let key = host.dir.path().join("btrbk_key");
    common::run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let authorized = host.dir.path().join("authorized_keys");
    let keys = std::fs::read_to_string(&authorized).unwrap();
    std::fs::write(&authorized, format!("{keys}\n{public}")).unwrap();
    let target = replica.path().join("btrbk");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::create_dir_all(state.join(".btrbk")).unwrap();
    let conf = tmp.path().join("btrbk.conf");
    std::fs::write(
        &conf,
        format!(
            "timestamp_format long-iso\nsnapshot_dir .btrbk\nsnapshot_preserve_min latest\nsnapshot_preserve no\ntarget_preserve_min latest\ntarget_preserve no\nssh_identity {}\nssh_user root\nlockfile {}\nvolume {}\n  subvolume data\n    target send-receive ssh://{}{}\n",
            key.display(),
            tmp.path().join("btrbk.lock").display(),
            state.display(),
            host.address,
            target.display()
        ),
    )
    .unwrap();
    // btrbk has no known_hosts setting: an ssh first in its PATH pins the replica's host key
    // (the file named by the environment, not written into the script).
    let wrappers = tmp.path().join("bin");
    std::fs::create_dir_all(&wrappers).unwrap();
    let ssh = wrappers.join("ssh");
    std::fs::write(
        &ssh,
        "#!/bin/sh\nexec /usr/bin/ssh -o \"UserKnownHostsFile=$BENCH_KNOWN_HOSTS\" -o StrictHostKeyChecking=yes -o LogLevel=ERROR \"$@\"\n",
    )
    .unwrap();
    let ssh = wrappers.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o LogLevel=ERROR \"$@\"\n",
            host.known_hosts().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", wrappers.display(), std::env::var("PATH").unwrap_or_default());
    let btrbk_run = || {
        let out = host
            .primary_ns
            .command("btrbk")
            .env("PATH", &path)
            .env("BENCH_KNOWN_HOSTS", host.known_hosts())
            .args(["-c"])
            .arg(&conf)
            .args(["-q", "run"])
            .output()
            .unwrap();
        assert!(out.status.success(), "btrbk run: {}", String::from_utf8_lossy(&out.stderr));
    };
    let config = write_streaming_config(tmp.path(), NO_SOURCES);
    let daemon = AgentDaemon::start_in(&host.primary_ns, &bus.address, &state, &config);
    btrbk_run(); // the full send: later runs are incrementals with `-p`
    let mut btrbk = Figures::new();
    for i in 0..EVENTS {
        let (bytes0, daemon_cpu0) = (received_bytes(&host), tree_cpu_s(daemon.child.id()));
        let t0 = Instant::now();
        let hash = record_critical(&daemon, i, "btrbk");
        // btrbk's run alone (not the gdbus that recorded the event), plus the daemon's share
        // (recording and embedding the event), as on our side.
        let btrbk_cpu0 = children_cpu_s();
        btrbk_run();
        btrbk.latency_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        btrbk.cpu_ms.push((children_cpu_s() - btrbk_cpu0 + tree_cpu_s(daemon.child.id()) - daemon_cpu0) * 1000.0);
        std::thread::sleep(Duration::from_millis(300));
        btrbk.bytes.push((received_bytes(&host) - bytes0) as f64);
        assert!(newest_holds(&target, &hash), "btrbk's newest copy on the replica holds event {i}");
    }
    drop(daemon);
    let (btrbk_lat, btrbk_bytes, btrbk_cpu) = btrbk.report(&mut report, "btrbk");
    report.note("btrbk", String::from_utf8_lossy(&Command::new("btrbk").arg("--version").output().unwrap().stdout).trim().to_owned());
    report.add("ratio btrbk / ours: latency (btrbk started at once; above 1: ours sooner)", btrbk_lat / ours_lat, "x");
    report.add("ratio btrbk / ours: bytes per incremental", btrbk_bytes / ours_bytes, "x");
    report.add("ratio btrbk / ours: primary CPU per event", btrbk_cpu / ours_cpu, "x");
    report.finish();
}

/// Whether the newest subvolume btrbk received holds the record with `hash`.
fn newest_holds(target: &Path, hash: &str) -> bool {
    let mut received: Vec<_> = std::fs::read_dir(target).unwrap().flatten().map(|e| e.path()).collect();
    received.sort();
    let Some(newest) = received.pop() else { return false };
    std::fs::read_dir(newest.join("ledger"))
        .map(|segments| segments.flatten().any(|s| std::fs::read_to_string(s.path()).is_ok_and(|text| text.contains(hash))))
        .unwrap_or(false)
}
