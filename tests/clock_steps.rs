//! The clock stepped backwards and forwards under a running daemon (issue 15's fault suite).
//! The daemon's wall clock is moved with libfaketime (its monotonic clock left alone, as a
//! real step leaves it), so the host's own clock is never touched. After each step events
//! are still recorded, carry the stepped time, still reach the replica (a step holding
//! snapshots back for its length would time out) and are embedded; at the end the chain verifies, seqs run without a gap, an element's history
//! is in recording order whatever the timestamps say, and the replica's copy verifies.

mod common;

use common::{
    AgentDaemon, BtrfsMount, PrivateBus, assert_clean, gdbus_string, ledger_records, quick_local_stream_toml, replica_head, wait_until,
    write_streaming_config,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// Debian's libfaketime, under the machine's multiarch directory.
fn libfaketime() -> std::path::PathBuf {
    std::fs::read_dir("/usr/lib")
        .unwrap()
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is installed by scripts/install-deps.sh")
}
/// Each step as libfaketime's offset from the real clock, and that offset in seconds.
const STEPS: [(&str, i64); 5] = [("+0", 0), ("-2h", -7200), ("+1d", 86_400), ("-30d", -30 * 86_400), ("+0", 0)];
const EVENTS_PER_STEP: usize = 8;

#[test]
fn clock_stepped_back_and_forward_keeps_order_hashes_and_streaming() {
    let primary = BtrfsMount::new(300);
    let replica = BtrfsMount::new(300);
    let rep_dir = replica.path().join("rep");
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let clock = tmp.path().join("faketime");
    std::fs::write(&clock, "+0").unwrap();
    let config = write_streaming_config(tmp.path(), &quick_local_stream_toml(&rep_dir));
    let state = primary.path().join("state");
    let mut cmd = Command::new(common::agent_bin());
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME_TIMESTAMP_FILE", &clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let daemon = AgentDaemon::spawn(cmd, &bus.address, &state, &config);

    let priorities = ["low", "medium", "high", "critical"];
    let mut recorded = 0u64;
    for (step, (offset, offset_s)) in STEPS.iter().enumerate() {
        std::fs::write(&clock, offset).unwrap();
        let real_before = ovs_port_agent::event::now_ns();
        for i in 0..EVENTS_PER_STEP {
            let details = format!("{{\"summary\":\"clock step {step}: uplink bond{i} flapped\",\"step\":{step}}}");
            let (ok, out, err) = daemon
                .gdbus_call("RecordEvent", &[&format!("interface:bond{}", i % 3), "link.flap", &details, priorities[i % priorities.len()]]);
            assert!(ok, "step {step} ({offset}): an event is recorded: {err}");
            assert_eq!(gdbus_string(&out).len(), 64, "a hash is acknowledged");
        }
        let acknowledged = Instant::now();
        recorded += EVENTS_PER_STEP as u64;
        let records = ledger_records(&state);
        assert_eq!(records.len() as u64, recorded, "step {step}: every event is in the ledger");
        // The events carry the stepped clock: the step really reached the daemon.
        let expected = real_before + offset_s * 1_000_000_000;
        for r in &records[records.len() - EVENTS_PER_STEP..] {
            assert!((r.ts - expected).abs() < 60_000_000_000, "step {step}: ts {} is not near the stepped clock {expected}", r.ts);
        }
        // Snapshots follow the monotonic clock: a step does not delay (or hurry) them.
        wait_until(&format!("step {step} ({offset}) reached the replica"), Duration::from_secs(30), || replica_head(&rep_dir) >= recorded);
        eprintln!("clock {offset}: {EVENTS_PER_STEP} events on the replica {:?} after the last was acknowledged", acknowledged.elapsed());
    }

    let (ok, out, _) = daemon.gdbus_call("VerifyChain", &[]);
    assert!(ok && out.contains("(true,"), "the chain verifies across the steps: {out}");
    let records = ledger_records(&state);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=recorded).collect::<Vec<_>>(), "seqs run without a gap or a reorder");
    assert!(records.windows(2).all(|w| w[1].prev == w[0].hash), "each record links to the one before it");
    assert!(records.windows(2).any(|w| w[1].ts < w[0].ts), "the steps did move timestamps backwards");

    // An element's history is in recording order (newest first), not in timestamp order.
    let (ok, out, err) = daemon.gdbus_call("GetElementHistory", &["interface:bond0", "100"]);
    assert!(ok, "{err}");
    let history: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    let history_seqs: Vec<u64> = history.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = records.iter().rev().filter(|r| r.element_id == "interface:bond0").map(|r| r.seq).collect();
    assert_eq!(history_seqs, expected, "bond0's history in recording order");

    wait_until("every event is embedded", Duration::from_secs(60), || {
        let stats = daemon.stats();
        stats["vectorized_seq"] == stats["head_seq"]
    });
    // An event recorded while the clock was a month behind is found by its words.
    let (ok, out, err) = daemon.gdbus_call("SemanticSearch", &["clock step 3 uplink bond flapped", "5"]);
    assert!(ok, "{err}");
    let hits = serde_json::from_str::<serde_json::Value>(&gdbus_string(&out)).unwrap()["hits"].clone();
    let step3: Vec<u64> = records.iter().filter(|r| r.details["step"] == 3).map(|r| r.seq).collect();
    assert!(
        hits.as_array().unwrap().iter().any(|h| step3.contains(&h["seq"].as_u64().unwrap())),
        "an event of the month-behind step is found: {hits}"
    );
    assert_eq!(replica_head(&rep_dir), recorded);
    assert_clean(&rep_dir);
}
