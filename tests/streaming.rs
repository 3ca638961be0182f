//! Snapshots and replication on real loop-mounted Btrfs file systems: a full send, then
//! incrementals; what arrived verifies and is searchable offline; a replica that lost its
//! parent gets a full send (recorded as an event); a tampered replica is caught by its own
//! verification; over ssh to a replica host in a network namespace with a restricted key.

mod common;

use common::{AgentDaemon, BtrfsMount, PrivateBus, agent, gdbus_string, write_replica_config, write_streaming_config};
use std::path::Path;
use std::time::{Duration, Instant};

fn replica_state(dir: &Path) -> serde_json::Value {
    std::fs::read(dir.join("replica-state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null)
}

/// Waits until the replica's newest verified snapshot holds at least `seq` in its ledger.
fn wait_replica(dir: &Path, seq: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = replica_state(dir);
        if s["head_seq"].as_u64().unwrap_or(0) >= seq {
            return s;
        }
        assert!(Instant::now() < deadline, "the replica never reached seq {seq}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn record(daemon: &AgentDaemon, element: &str, action: &str, summary: &str, priority: &str) -> String {
    let (ok, out, err) = daemon.gdbus_call("RecordEvent", &[element, action, &format!("{{\"summary\":\"{summary}\"}}"), priority]);
    assert!(ok, "{err}");
    gdbus_string(&out)
}

fn snapshots_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data@"))
        .collect();
    v.sort();
    v
}

#[test]
fn snapshots_stream_to_a_local_replica_incrementally_and_verify() {
    let primary = BtrfsMount::new(600);
    let replica = BtrfsMount::new(600);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let rep_dir = replica.path().join("rep");
    let extra = format!(
        "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 200\nlow_delay_ms = 200\n{}",
        common::local_replica_toml("local1", &rep_dir)
    );
    let config = write_streaming_config(tmp.path(), &extra);
    let state = primary.path().join("state");
    let daemon = AgentDaemon::start(&bus.address, &state, &config);
    let mut monitor = std::process::Command::new("gdbus")
        .args(["monitor", "--address", &bus.address, "--dest", "dev.ovs.PortAgent1", "--object-path", "/dev/ovs/PortAgent1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let monitor_out = monitor.stdout.take().unwrap();
    let signals = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(monitor_out)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("ReplicaSynced"))
            .take(1)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));

    // A critical event: snapshotted as soon as it is vectorized, sent in full.
    let hash = record(&daemon, "bridge:br-ext", "port.error", "OVS port tap9 on br-ext reports could not open network device", "critical");
    let s = wait_replica(&rep_dir, 1);
    let first = s["newest"].as_str().unwrap().to_owned();
    let synced = signals.join().unwrap();
    assert!(synced[0].contains("'local1'"), "ReplicaSynced names the replica: {synced:?}");
    let _ = monitor.kill();
    let snap = rep_dir.join(&first);
    let (code, out, _) = agent(&["verify", "--data-dir", snap.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // Searchable on the replica's copy, offline, with nothing re-embedded.
    let (code, out, err) = agent(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "search",
        "--data-dir",
        snap.to_str().unwrap(),
        "bridge device missing",
        "-n",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let hits: serde_json::Value = serde_json::from_str::<serde_json::Value>(&out).unwrap()["hits"].clone();
    assert_eq!(hits[0]["hash"], hash.as_str());

    // Medium events: batched, then sent incrementally; the replica keeps only the newest.
    for i in 0..5 {
        record(&daemon, &format!("interface:veth{i}"), "link.up", &format!("veth{i} link up"), "medium");
    }
    let s = wait_replica(&rep_dir, 6);
    assert_ne!(s["newest"].as_str().unwrap(), first);
    // The replica prunes what the next incremental does not need (right after acknowledging).
    let newest = s["newest"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots_in(&rep_dir) != vec![newest.clone()] {
        assert!(Instant::now() < deadline, "the replica kept {:?}", snapshots_in(&rep_dir));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    assert_eq!(status[0]["name"], "local1");
    assert_eq!(status[0]["state"], "healthy");
    let bytes_after_two = status[0]["bytes_sent"].as_u64().unwrap();
    assert!(bytes_after_two > 0);
    // Primary keeps only the newest snapshot (which is also what local1 acknowledged).
    assert!(snapshots_in(&state.join(".snapshots")).len() <= 2);

    // The replica role serves what it received: search without re-embedding documents,
    // history, properties; writes are refused; a newer snapshot is picked up by itself.
    let rep_bus = PrivateBus::open();
    let rep_tmp = tempfile::tempdir().unwrap();
    let rep_config = write_replica_config(rep_tmp.path(), &rep_dir);
    let rep_daemon = AgentDaemon::start(&rep_bus.address, &rep_tmp.path().join("unused"), &rep_config);
    let (ok, out, _) = rep_daemon.gdbus_call("SemanticSearch", &["bridge device missing", "1"]);
    assert!(ok, "{out}");
    let hits: serde_json::Value = serde_json::from_str::<serde_json::Value>(&gdbus_string(&out)).unwrap()["hits"].clone();
    assert_eq!(hits[0]["hash"], hash.as_str());
    let (ok, _, err) = rep_daemon.gdbus_call("RecordEvent", &["interface:x", "up", "{}", "low"]);
    assert!(!ok && err.contains("ReadOnly"), "{err}");
    let (_, out, _) =
        rep_daemon.busctl(&["get-property", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "Role", "HeadSeq"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), vec!["s \"replica\"", "t 6"]);
    record(&daemon, "interface:eth5", "link.down", "eth5 lost carrier", "critical");
    wait_replica(&rep_dir, 7);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out, _) =
            rep_daemon.busctl(&["get-property", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "HeadSeq"]);
        if out.trim() == "t 7" {
            break;
        }
        assert!(Instant::now() < deadline, "the replica daemon never switched to the new snapshot: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, _) = rep_daemon.gdbus_call("GetElementHistory", &["interface:eth5", "5"]);
    assert!(ok && out.contains("link.down"), "{out}");
    drop(rep_daemon);

    // The replica loses its parent: the next send falls back to a full one, recorded.
    for name in snapshots_in(&rep_dir) {
        common::run_ok(std::process::Command::new("btrfs").args(["subvolume", "delete"]).arg(rep_dir.join(name)));
    }
    std::fs::remove_file(rep_dir.join("replica-state.json")).unwrap();
    record(&daemon, "interface:eth9", "link.down", "eth9 lost carrier", "critical");
    wait_replica(&rep_dir, 9);
    let (ok, out, _) = daemon.gdbus_call("GetElementHistory", &["replica:local1", "5"]);
    assert!(ok);
    let history: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    assert_eq!(history[0]["action"], "replica.full_send", "{history}");

    // A tampered replica copy is caught by its own verification.
    let s = replica_state(&rep_dir);
    let snap = rep_dir.join(s["newest"].as_str().unwrap());
    common::run_ok(std::process::Command::new("btrfs").args(["property", "set", "-f", "-ts"]).arg(&snap).args(["ro", "false"]));
    let seg = std::fs::read_dir(snap.join("ledger")).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(&seg).unwrap().replacen("eth9 lost carrier", "eth9 was fine", 1);
    std::fs::write(&seg, text).unwrap();
    let (code, out, _) = agent(&["verify", "--data-dir", snap.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DAMAGED"), "{out}");
}

#[test]
fn replicas_over_ssh_with_a_restricted_key_catch_up_after_an_outage_at_different_lags() {
    let primary = BtrfsMount::new(600);
    let replica = BtrfsMount::new(600);
    let rep_dir = replica.path().join("rep");
    let host = common::SshReplicaHost::receiving_into(&rep_dir);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 100\nlow_delay_ms = 100\n{}compression = \"auto\"\n\n[[stream.replicas]]\nname = \"local2\"\ntransport = \"local\"\ncompression = \"3\"\nremote_dir = \"{}\"\n",
        host.replica_toml(&[]),
        replica.path().join("rep2").display()
    );
    let config = write_streaming_config(tmp.path(), &extra);
    let state = primary.path().join("state");
    // The daemon runs in the primary host's namespace, so its ssh reaches the replica host.
    let daemon = AgentDaemon::start_in(&host.primary_ns, &bus.address, &state, &config);

    record(&daemon, "interface:eth0", "link.down", "eth0 lost carrier", "critical");
    let s = wait_replica(&rep_dir, 1);
    assert!(s["received_uuid"].is_string(), "{s}");
    record(&daemon, "interface:eth0", "link.up", "eth0 carrier back", "critical");
    wait_replica(&rep_dir, 2);

    // The replica host goes away; events keep being recorded; it comes back and catches up.
    host.stop_sshd();
    for i in 0..3 {
        record(&daemon, &format!("interface:veth{i}"), "link.down", &format!("veth{i} lost carrier"), "critical");
    }
    // Two replicas at different lags: local2 keeps up, rep1 falls behind.
    wait_replica(&replica.path().join("rep2"), 5);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
        let status: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
        let by_name = |n: &str| status.as_array().unwrap().iter().find(|r| r["name"] == n).cloned().unwrap();
        let (rep1, local2) = (by_name("rep1"), by_name("local2"));
        if rep1["state"] == "unreachable" && local2["state"] == "healthy" && local2["lag_events"] == 0 {
            assert!(rep1["last_error"].is_string());
            assert!(rep1["lag_events"].as_u64().unwrap() > 0, "{status}");
            assert!(local2["acked_seq"].as_u64().unwrap() > rep1["acked_seq"].as_u64().unwrap());
            break;
        }
        assert!(Instant::now() < deadline, "the replica was never reported unreachable: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
    host.start_sshd();
    let s = wait_replica(&rep_dir, 5);
    let snap = rep_dir.join(s["newest"].as_str().unwrap());
    let (code, out, _) = agent(&["verify", "--data-dir", snap.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // Over ssh too the replicas cosign what they verified, and the primary keeps it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, _) = agent(&["verify", "--anchored", "--data-dir", state.to_str().unwrap()]);
        if code == 0 && out.contains("anchored: the ledger holds seq") && out.contains("2 witness key(s) known") {
            break;
        }
        assert!(Instant::now() < deadline, "never anchored by both replicas: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots_in(&rep_dir).len() != 1 {
        assert!(Instant::now() < deadline, "the replica kept {:?}", snapshots_in(&rep_dir));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stream_cut_mid_send_leaves_no_partial_subvolume() {
    use std::io::Write;
    let fs = BtrfsMount::new(300);
    let src = fs.path().join("src");
    common::run_ok(std::process::Command::new("btrfs").args(["subvolume", "create"]).arg(&src));
    std::fs::write(src.join("blob"), vec![7u8; 4 << 20]).unwrap();
    let snaps = fs.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    common::run_ok(std::process::Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&src).arg(snaps.join("data@1")));
    let stream = std::process::Command::new("btrfs").args(["send", "-q"]).arg(snaps.join("data@1")).output().unwrap().stdout;
    assert!(stream.len() > 1 << 20);
    let rep = fs.path().join("rep");
    let mut child = std::process::Command::new(common::agent_bin())
        .args(["replica-receive", "--dir"])
        .arg(&rep)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"{\"name\":\"data@1\",\"parent\":null}\n").unwrap();
    // Half of the stream, then the connection dies.
    for chunk in stream[..stream.len() / 2].chunks(65536) {
        stdin.write_all(&(chunk.len() as u32).to_be_bytes()).unwrap();
        stdin.write_all(chunk).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a cut stream is an error");
    assert!(!rep.join("data@1").exists(), "the partial subvolume was removed");
    assert_eq!(replica_state(&rep), serde_json::Value::Null, "nothing was acknowledged");

    // A receiver killed outright cannot clean up; the next session does, first thing.
    common::run_ok(std::process::Command::new("btrfs").args(["subvolume", "create"]).arg(rep.join("data@9")));
    let out = std::process::Command::new(common::agent_bin())
        .args(["replica-receive", "--dir"])
        .arg(&rep)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!rep.join("data@9").exists(), "a leftover partial subvolume survived a new session");
}

/// The pids of processes named `name` in a network namespace.
fn pids_named(ns: &str, name: &str) -> Vec<i32> {
    let out = std::process::Command::new("ip").args(["netns", "pids", ns]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

#[test]
fn the_ssh_connection_killed_mid_send_leaves_nothing_partial_and_the_send_converges() {
    let primary = BtrfsMount::new(900);
    let replica = BtrfsMount::new(1200);
    let rep_dir = replica.path().join("rep");
    let host = common::SshReplicaHost::receiving_into(&rep_dir);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("\n[sources]\novsdb = false\nnetworkmanager = false\n{}", host.replica_toml(&["-o", "ConnectTimeout=3"]));
    let config = write_streaming_config(tmp.path(), &extra);
    let state = primary.path().join("state");
    let daemon = AgentDaemon::start_in(&host.primary_ns, &bus.address, &state, &config);
    // A big first snapshot, so that the full send takes long enough to be cut in the middle:
    // incompressible bytes where the data set keeps its one large file, the graph checkpoint
    // directory (the receiver refuses files the data set does not have).
    let mut noise = vec![0u8; 256 << 20];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::create_dir_all(state.join("data/hnsw")).unwrap();
    std::fs::write(state.join("data/hnsw/graph-00000000000000000000.graph"), &noise).unwrap();
    drop(noise);
    record(&daemon, "interface:eth0", "link.down", "eth0 lost carrier", "critical");

    // The receive is under way: its subvolume exists, nothing is verified yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rep_dir.exists() || snapshots_in(&rep_dir).is_empty() {
        assert!(Instant::now() < deadline, "the send never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(replica_state(&rep_dir), serde_json::Value::Null, "the send finished before it could be cut");
    // No new connections for now (the listener goes; the running session stays), then the
    // primary's ssh is killed in the middle of the stream.
    let listener: i32 = std::fs::read_to_string(host.dir.path().join("sshd.pid")).unwrap().trim().parse().unwrap();
    unsafe { libc::kill(listener, libc::SIGKILL) };
    let clients = pids_named(&host.primary_ns.name, "ssh");
    assert!(!clients.is_empty(), "no ssh client to kill");
    for pid in clients {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // The receiver sees the stream end early and removes the partial subvolume.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !snapshots_in(&rep_dir).is_empty() {
        assert!(Instant::now() < deadline, "the partial subvolume stayed: {:?}", snapshots_in(&rep_dir));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(replica_state(&rep_dir), serde_json::Value::Null, "a cut stream was acknowledged");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
        let status: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
        if status[0]["state"] == "unreachable" && status[0]["last_error"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "the failure was not reported: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The replica host takes connections again: the daemon retries by itself and converges.
    std::fs::remove_file(host.dir.path().join("sshd.pid")).unwrap();
    host.start_sshd();
    let s = wait_replica(&rep_dir, 1);
    let snap = rep_dir.join(s["newest"].as_str().unwrap());
    assert_eq!(std::fs::metadata(snap.join("hnsw/graph-00000000000000000000.graph")).unwrap().len(), 256 << 20);
    let (code, out, _) = agent(&["verify", "--data-dir", snap.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(snapshots_in(&rep_dir).len(), 1, "{:?}", snapshots_in(&rep_dir));
    let (_, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
    let status: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    assert_eq!(status[0]["state"], "healthy", "{status}");
}
