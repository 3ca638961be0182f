//! No single bad input or failure stops recording: an event too big for the ledger (80 KB
//! in a bridge's external_ids, real OVS) and a control character from a connection name
//! (real NetworkManager) are recorded shortened, and what follows is recorded too; a
//! source task that panics is logged and restarted; a full disk under the index stops it
//! where it is — reported — and once space is freed it resumes by itself, without a hole,
//! and replicates.

mod common;

use common::{AgentDaemon, BtrfsMount, NmSandbox, OvsSandbox, PrivateBus, wait_for_records, write_daemon_config, write_streaming_config};
use ovs_port_agent::ledger::Record;
use std::time::{Duration, Instant};

fn find<'a>(records: &'a [Record], element: &str, action: &str) -> Option<&'a Record> {
    records.iter().find(|r| r.element_id == element && r.action == action)
}

#[test]
fn an_oversized_ovs_change_is_recorded_shortened_and_a_port_joining_a_big_bridge_is_a_small_event() {
    let ovs = OvsSandbox::start();
    // Ports of a database change only: no switch creating 1,900 devices.
    ovs.stop_vswitchd();
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), &ovs.sources_toml());
    let _daemon = AgentDaemon::start(&bus.address, &state, &config);
    wait_for_records(&state, 30, "the OVS baseline", |r| find(r, "ovs:system", "baseline").is_some());

    let names: Vec<String> = (0..1899).map(|i| format!("vm-port-number-{i:05}")).collect();
    let mut args: Vec<&str> = vec!["add-br", "big", "--", "set", "bridge", "big", "datapath_type=netdev"];
    for name in &names {
        args.extend_from_slice(&["--", "add-port", "big", name]);
    }
    ovs.vsctl_no_wait(&args);
    // One more port: the bridge's own event names the port and the count, not the list.
    ovs.vsctl_no_wait(&["add-port", "big", "vm-port-last"]);
    // A value no event could hold whole: 80 KB in external_ids.
    let blob = format!("external_ids:blob={}", "x".repeat(80 * 1024));
    ovs.vsctl_no_wait(&["set", "bridge", "big", &blob]);
    ovs.vsctl_no_wait(&["set", "bridge", "big", "external_ids:after=yes"]);
    let records = wait_for_records(&state, 120, "the port added and the changes after it", |r| {
        r.iter().any(|e| e.element_id == "bridge:big" && e.action == "port.added" && e.details["port"] == "vm-port-last")
            && r.iter().any(|e| e.element_id == "bridge:big" && e.details["after"]["external_ids"]["after"] == "yes")
    });
    let added = records.iter().find(|e| e.element_id == "bridge:big" && e.details["port"] == "vm-port-last").unwrap();
    assert_eq!(added.summary, "port vm-port-last added to OVS bridge big");
    assert_eq!(added.details["added"]["ports"], serde_json::json!(["vm-port-last"]));
    assert!(added.details.to_string().len() < 300, "a port joining a big bridge is a small event: {}", added.details);
    let blob = records
        .iter()
        .find(|e| e.element_id == "bridge:big" && e.details["after"]["external_ids"]["blob"].is_string())
        .expect("the oversized change is recorded");
    let kept = blob.details["after"]["external_ids"]["blob"].as_str().unwrap();
    assert!(kept.len() < 1024 && kept.contains("truncated"), "{kept:.80}");
    assert!(blob.details["truncated"].as_array().is_some_and(|t| !t.is_empty()), "marked as shortened");
    assert!(records.iter().all(|r| r.action != "event.rejected"), "nothing had to be rejected");
    let (code, out, _) = common::agent(&["verify", "--data-dir", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_tab_in_a_connection_name_is_recorded_and_recording_goes_on() {
    let nm = NmSandbox::start();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), "\n[sources]\novsdb = false\ncoalesce_ms = 100\n");
    let _daemon = AgentDaemon::start(&nm.bus.address, &state, &config);
    wait_for_records(&state, 30, "the NM baseline", |r| find(r, "nm:manager", "baseline").is_some());
    nm.nmcli(&["con", "add", "type", "ethernet", "ifname", "veth7", "con-name", "office\twifi", "ipv6.method", "disabled"]);
    nm.nmcli(&["con", "add", "type", "ethernet", "ifname", "veth8", "con-name", "after-it", "ipv6.method", "disabled"]);
    let records = wait_for_records(&state, 30, "both profiles", |r| r.iter().filter(|e| e.action == "connection.added").count() >= 2);
    let tabbed = records.iter().find(|e| e.action == "connection.added" && e.details["after"]["connection.id"] == "office\twifi").unwrap();
    assert!(tabbed.summary.contains("office wifi"), "{}", tabbed.summary);
    assert!(!tabbed.summary.chars().any(char::is_control));
    assert!(records.iter().any(|e| e.action == "connection.added" && e.summary.contains("after-it")));
}

#[test]
fn a_panicking_source_is_logged_and_restarted() {
    let ovs = OvsSandbox::start();
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), &ovs.sources_toml());
    let daemon = AgentDaemon::start_with_env(&bus.address, &state, &config, &[("OVS_PORT_AGENT_FAULTS", "panic-source-ovsdb")]);
    // The source's first session panics; it is restarted and records its baseline.
    wait_for_records(&state, 30, "the OVS baseline after the restart", |r| find(r, "ovs:system", "baseline").is_some());
    let stats = daemon.stats();
    let task = &stats["tasks"]["source:ovsdb"];
    assert_eq!(task["restarts"], 1, "{stats}");
    assert!(task["last_error"].as_str().unwrap().contains("panicked: injected fault"), "{task}");
    assert_eq!(task["running"], true);
    ovs.vsctl(&["add-br", "br-after", "--", "set", "bridge", "br-after", "datapath_type=netdev"]);
    wait_for_records(&state, 30, "a change after the restart", |r| find(r, "bridge:br-after", "bridge.added").is_some());
}

#[test]
fn a_full_disk_stops_the_index_where_it_is_and_it_resumes_without_a_hole() {
    let primary = BtrfsMount::new(200);
    let replica = BtrfsMount::new(300);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let rep_dir = replica.path().join("rep");
    let extra = format!(
        "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 100\nlow_delay_ms = 100\n{}",
        common::local_replica_toml("local1", &rep_dir)
    );
    let config = write_streaming_config(tmp.path(), &extra);
    let state = primary.path().join("state");
    let daemon = AgentDaemon::start(&bus.address, &state, &config);
    let record = |i: usize| {
        daemon.gdbus_call(
            "RecordEvent",
            &[
                &format!("interface:veth{}", i % 7),
                "link.down",
                &format!("{{\"summary\":\"veth lost carrier {i}\",\"pad\":\"{}\"}}", "p".repeat(2000)),
                "medium",
            ],
        )
    };
    for i in 0..20 {
        assert!(record(i).0);
    }

    // Mid-burst, the file system fills up: appends start failing as "disk full" (never
    // acknowledged), and what was acknowledged just before may not reach the index.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let burst = std::thread::scope(|s| {
        let recorder = s.spawn(|| {
            let (mut acked, mut refused) = (0usize, Vec::new());
            let mut i = 20;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || refused.len() < 20 {
                let (ok, _, err) = record(i);
                if ok {
                    acked += 1;
                } else {
                    refused.push(err);
                }
                i += 1;
            }
            (acked, refused)
        });
        let ballast = primary.path().join("ballast");
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        for size in [1 << 20, 64 << 10, 4096] {
            let chunk = vec![0x5a_u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        recorder.join().unwrap()
    });
    let ballast = primary.path().join("ballast");
    let (more, refused) = burst;
    let acked = 20 + more;
    assert!(!refused.is_empty(), "the disk never filled");
    let other: Vec<&String> = refused.iter().filter(|e| !e.contains("DiskFull")).collect();
    let mut daemon = daemon;
    assert!(
        other.is_empty(),
        "{} refusals do not say disk full (daemon: {:?}), the first: {:.300}",
        other.len(),
        daemon.child.try_wait(),
        other.first().map(|s| s.as_str()).unwrap_or("")
    );
    // Events left behind wait for the index, and the index says why. The daemon records
    // events of its own too (a stage that stalled): one appended just before this look is
    // not yet indexed without anything being wrong, so the index gets a few seconds to
    // either take everything in or say it is stalled.
    let stalled_stages = |stats: &serde_json::Value| -> Vec<String> {
        stats["health"].as_object().unwrap().iter().filter(|(_, h)| h["state"] == "stalled").map(|(n, _)| n.clone()).collect()
    };
    let looked = Instant::now();
    let stalled = loop {
        let stats = daemon.stats();
        let stalled = stalled_stages(&stats);
        if stats["indexed_seq"] == stats["head_seq"] || stalled.iter().any(|s| s == "index") {
            break stalled;
        }
        assert!(looked.elapsed() < Duration::from_secs(10), "events wait for the index, and the index says why: {stats}");
        std::thread::sleep(Duration::from_millis(100));
    };

    // Space comes back: everything acknowledged is indexed, vectorized and replicated.
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(90);
    let resumed = loop {
        let stats = daemon.stats();
        let head = stats["head_seq"].as_u64().unwrap();
        let rep: serde_json::Value =
            std::fs::read(rep_dir.join("replica-state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        let healthy = stats["health"].as_object().unwrap().values().all(|h| h["state"] == "ok");
        if stats["indexed_seq"] == head && stats["vectorized_seq"] == head && rep["head_seq"].as_u64().unwrap_or(0) >= head && healthy {
            break freed.elapsed();
        }
        assert!(Instant::now() < deadline, "never caught up after space was freed: {stats} replica {rep}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "acknowledged {acked}, refused {}, stalled {stalled:?}; caught up and replicated {:.1} s after space was freed",
        refused.len(),
        resumed.as_secs_f64()
    );
    let records = common::ledger_records(&state);
    let ours = records.iter().filter(|r| r.action == "link.down").count();
    assert_eq!(ours, acked, "every acknowledged event is in the ledger, nothing else of ours");
    let stats = daemon.stats();
    assert_eq!(stats["events"], stats["head_seq"], "the index has no hole: {stats}");
    if stalled.iter().any(|s| s == "index") {
        assert!(records.iter().any(|r| r.action == "index.resumed"), "the stall's end is recorded");
    }
    // The replica's newest copy verifies (a newer one may replace it while it is read:
    // the stall's own events are still being replicated).
    for attempt in 0.. {
        let rep_state: serde_json::Value = serde_json::from_slice(&std::fs::read(rep_dir.join("replica-state.json")).unwrap()).unwrap();
        let snap = rep_dir.join(rep_state["newest"].as_str().unwrap());
        let (code, out, err) = common::agent(&["verify", "--data-dir", snap.to_str().unwrap()]);
        if code == 0 {
            break;
        }
        assert!(!snap.exists() && attempt < 20, "{out} {err}");
    }
}
