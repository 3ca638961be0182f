//! The fault suite (issue 15): a burst of at least 10,000 events from a real source (ovs-vsctl
//! adding 3,336 ports to ovsdb-server in three transactions, three events a port) with a critical event recorded
//! in the middle of it, streamed to a local replica that already holds the history before
//! the burst. Nothing is dropped silently: every port is in the ledger, live or reconciled,
//! and anything beyond the queue is counted. The critical event reaches the replica, and a
//! search of the snapshot that brought it finds it there; how soon it arrived is printed, watched from a thread while the burst goes on (the issue's target is
//! 1 s; a timing on a shared 2-core machine, so reported rather than asserted —
//! benches/REPORT.md).

mod common;

use common::{
    AgentDaemon, BtrfsMount, OvsSandbox, PrivateBus, agent, gdbus_string, ledger_records, local_replica_toml, replica_head, replica_state,
    wait_until, write_streaming_config,
};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Three events a port (the Port row, the Interface row, the port joining the bridge): 3,336
/// ports make a burst of at least 10,000 events.
const PORTS: usize = 3336;
const BURST_EVENTS_AT_LEAST: usize = 10_000;

#[test]
fn a_real_source_burst_drops_nothing_silently_and_a_critical_event_in_it_reaches_the_replica() {
    let ovs = OvsSandbox::start();
    ovs.stop_vswitchd();
    ovs.vsctl_no_wait(&["add-br", "br0"]);
    let primary = BtrfsMount::new(800);
    let replica = BtrfsMount::new(800);
    let rep_dir = replica.path().join("rep");
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("{}{}", ovs.sources_toml(), local_replica_toml("local1", &rep_dir));
    let config = write_streaming_config(tmp.path(), &extra);
    let state = primary.path().join("state");
    let daemon = AgentDaemon::start(&bus.address, &state, &config);
    wait_until("the OVS baseline", Duration::from_secs(30), || ledger_records(&state).iter().any(|r| r.action == "baseline"));
    // A replica in service already holds the history: the burst's snapshots are incrementals.
    // (A critical event sends the baseline at once.)
    let (ok, _, err) = daemon.gdbus_call("RecordEvent", &["host:test", "burst.begins", r#"{"summary":"a burst begins"}"#, "critical"]);
    assert!(ok, "{err}");
    let before_burst = ledger_records(&state).last().map(|r| r.seq).expect("recorded");
    wait_until("the replica holds the history before the burst", Duration::from_secs(30), || replica_head(&rep_dir) >= before_burst);

    // Three transactions of 1,112 ports each (a Port and an Interface row apiece, and the
    // bridge's port list each time), the critical event recorded after the first.
    let transaction = |from: usize| {
        let mut args: Vec<String> = Vec::new();
        for i in from..from + PORTS / 3 {
            if !args.is_empty() {
                args.push("--".into());
            }
            args.extend(["add-port".into(), "br0".into(), format!("b{i}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ovs.vsctl_no_wait(&args);
    };
    let started = Instant::now();
    transaction(0);
    let (ok, out, err) =
        daemon.gdbus_call("RecordEvent", &["interface:uplink0", "link.down", r#"{"summary":"uplink0 lost carrier"}"#, "critical"]);
    assert!(ok, "{err}");
    let critical_hash = gdbus_string(&out);
    let critical_at = Instant::now();
    let critical_seq =
        ledger_records(&state).iter().find(|r| r.hash_hex() == critical_hash).map(|r| r.seq).expect("acknowledged, so in the ledger");
    // Watched from the side while the burst goes on, so the figure is the replica's, not
    // the time the next two transactions take.
    let to_replica = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let deadline = critical_at + Duration::from_secs(60);
            while replica_head(&rep_dir) < critical_seq {
                assert!(Instant::now() < deadline, "the critical event did not reach the replica in 60 s");
                std::thread::sleep(Duration::from_millis(5));
            }
            // The snapshot that brought it, for the search below.
            (critical_at.elapsed(), replica_state(&rep_dir)["newest"].as_str().expect("a verified snapshot").to_owned())
        });
        transaction(PORTS / 3);
        transaction(2 * PORTS / 3);
        watcher.join().expect("the watcher")
    });
    let (to_replica, arrived_in) = to_replica;
    // Not the target (1 s, a benchmark figure), a guard ten times above what this takes: a
    // critical event held back by the burst's embedding took 15 s.
    assert!(to_replica < Duration::from_secs(5), "the critical event took {to_replica:?} to reach the replica");

    // Answerable there, not only present: a search of the replica's copy as it arrived (the
    // snapshot that brought the event, read-only) finds it.
    let snapshot = rep_dir.join(&arrived_in);
    let (code, out, err) = agent(&[
        "--config",
        config.to_str().unwrap(),
        "search",
        "--data-dir",
        snapshot.to_str().unwrap(),
        "--json",
        "uplink0 lost carrier",
    ]);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        answer["hits"].as_array().unwrap().iter().any(|h| h["element_id"] == "interface:uplink0"),
        "the critical event is found by a search of {arrived_in} on the replica: {answer}"
    );

    let ports = |records: &[ovs_port_agent::ledger::Record]| -> HashSet<String> {
        records
            .iter()
            .filter(|r| r.element_id.starts_with("ovs-port:b") && matches!(r.action.as_str(), "port.added" | "reconciled.added"))
            .map(|r| r.element_id.clone())
            .collect()
    };
    wait_until("every port of the burst recorded", Duration::from_secs(120), || ports(&ledger_records(&state)).len() == PORTS);
    let recorded_in = started.elapsed();
    let records = ledger_records(&state);
    let burst_events = records.iter().filter(|r| r.seq > before_burst).count();
    assert!(burst_events >= BURST_EVENTS_AT_LEAST, "the burst made only {burst_events} events");
    let stats = daemon.stats();
    let overflowed = stats["sources"]["overflowed"].as_u64().unwrap_or(0);
    let overflow_events = records.iter().filter(|r| r.action == "queue.overflow").count();
    if overflowed > 0 {
        assert!(overflow_events > 0, "an overflow is recorded, not silent");
    }
    eprintln!(
        "{burst_events} events recorded for {PORTS} ports in {:.1} s; {overflowed} beyond the queue (counted, {overflow_events} queue.overflow events, reconciled); \
         the critical event on the replica {:.2} s after it was acknowledged",
        recorded_in.as_secs_f64(),
        to_replica.as_secs_f64()
    );
}
