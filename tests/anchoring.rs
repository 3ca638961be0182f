//! Heads anchored outside the host, on a real primary and replica (loop-mounted Btrfs, a
//! private bus, the local transport): each snapshot's head is signed, the replica cosigns
//! what it verified, the primary keeps the cosignatures. A history edited and re-sealed on
//! the primary passes plain verification but not `verify --anchored`, which names the
//! rewritten seq; streamed on, it is refused by the replica and the refusal is recorded.

mod common;

use common::{AgentDaemon, BtrfsMount, PrivateBus, SshReplicaHost, agent, write_streaming_config};
use ovs_port_agent::layout::Layout;
use ovs_port_agent::ledger::record::encode_line;
use ovs_port_agent::ledger::{Record, ZERO_HASH, scan, segment::list_segments};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn replica_head(dir: &Path) -> u64 {
    std::fs::read(dir.join("replica-state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|s| s["head_seq"].as_u64())
        .unwrap_or(0)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The seqs whose checkpoint note on the primary carries a cosignature.
fn cosigned_seqs(state: &Path) -> Vec<u64> {
    let dir = Layout::state(state).data.join("witness");
    let mut out: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.matches('\u{2014}').count() >= 2))
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".note")?.parse().ok())
        .collect();
    out.sort();
    out
}

fn record(daemon: &AgentDaemon, element: &str, summary: &str, priority: &str) {
    let (ok, _, err) = daemon.gdbus_call("RecordEvent", &[element, "port.error", &format!("{{\"summary\":\"{summary}\"}}"), priority]);
    assert!(ok, "{err}");
}

/// Edits record `seq`'s summary and recomputes every hash and link after it, as someone
/// with root and the format document can: the ledger verifies again.
fn edit_and_reseal(ledger: &Path, seq: u64) {
    let mut records: Vec<Record> = Vec::new();
    scan(ledger, |r| records.push(r.clone())).unwrap();
    records[seq as usize - 1].summary.push_str(" (edited)");
    let mut heads: HashMap<String, [u8; 32]> = HashMap::new();
    let mut prev = ZERO_HASH;
    for r in &mut records {
        r.prev = prev;
        r.element_prev = heads.get(&r.element_id).copied().unwrap_or(ZERO_HASH);
        r.hash = encode_line(&r.body()).1;
        prev = r.hash;
        heads.insert(r.element_id.clone(), r.hash);
    }
    let segments = list_segments(ledger).unwrap();
    for (i, segment) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map_or(u64::MAX, |s| s.first_seq);
        let bytes: Vec<u8> =
            records.iter().filter(|r| r.seq >= segment.first_seq && r.seq < end).flat_map(|r| encode_line(&r.body()).0).collect();
        std::fs::write(&segment.path, bytes).unwrap();
    }
}

#[test]
fn a_resealed_history_is_named_by_verify_anchored_and_refused_by_a_local_replica() {
    tamper_suite(false);
}

#[test]
fn a_resealed_history_is_named_by_verify_anchored_and_refused_by_an_ssh_replica() {
    tamper_suite(true);
}

/// The whole story against one replica, reached locally or over ssh (a replica host in a
/// network namespace whose restricted key forces `replica-receive`).
fn tamper_suite(over_ssh: bool) {
    let primary = BtrfsMount::new(600);
    let replica = BtrfsMount::new(600);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let rep_dir = replica.path().join("rep");
    let sources = "\n[sources]\novsdb = false\nnetworkmanager = false\n";
    let ssh_host = over_ssh.then(|| SshReplicaHost::receiving_into(&rep_dir));
    let (name, extra) = match &ssh_host {
        Some(host) => ("rep1", format!("{sources}{}", host.replica_toml(&[]))),
        None => ("local1", format!("{sources}{}", common::local_replica_toml("local1", &rep_dir))),
    };
    let config = write_streaming_config(tmp.path(), &extra);
    let start = |state: &Path| match &ssh_host {
        Some(host) => AgentDaemon::start_in(&host.primary_ns, &bus.address, state, &config),
        None => AgentDaemon::start(&bus.address, state, &config),
    };
    let state = primary.path().join("state");
    let state_arg = state.to_str().unwrap();
    let mut daemon = start(&state);
    // Critical events are snapshotted one by one: each head is signed and cosigned.
    for i in 1..=4u64 {
        record(&daemon, &format!("bridge:br{i}"), &format!("port tap{i} could not open its device"), "critical");
        wait_for(&format!("the replica cosigned seq {i}"), || replica_head(&rep_dir) >= i && cosigned_seqs(&state).contains(&i));
    }
    let key = std::fs::read_to_string(state.join("keys/checkpoint.key")).unwrap();
    assert!(
        key.starts_with("PRIVATE+KEY+")
            && std::fs::metadata(state.join("keys/checkpoint.key")).unwrap().permissions().mode() & 0o777 == 0o600
    );
    let pinned = std::fs::read_to_string(state.join(format!("keys/witnesses/{name}.vkey"))).unwrap();
    assert!(pinned.contains("-witness+"), "the replica's witness key is pinned: {pinned}");

    // The replica loses its key: its next session makes another, which the primary does not
    // take on trust; after re-enrolment (the old pin retired) it does, and the heads the old
    // key cosigned still count.
    std::fs::remove_file(rep_dir.join(".witness.key")).unwrap();
    let _ = std::process::Command::new("pkill").args(["-f", &format!("replica-receive --dir {}", rep_dir.display())]).status();
    record(&daemon, "bridge:br5", "port tap5 could not open its device", "critical");
    wait_for("the changed witness key was recorded", || {
        let (ok, out, _) = daemon.gdbus_call("GetElementHistory", &[&format!("replica:{name}"), "10"]);
        ok && out.contains("replica.witness_key_changed")
    });
    assert!(!cosigned_seqs(&state).contains(&5), "a cosignature by an unknown key is not kept");
    std::fs::create_dir_all(state.join("keys/witnesses/retired")).unwrap();
    std::fs::rename(state.join(format!("keys/witnesses/{name}.vkey")), state.join(format!("keys/witnesses/retired/{name}-old.vkey")))
        .unwrap();
    record(&daemon, "bridge:br6", "port tap6 could not open its device", "critical");
    wait_for("the re-enrolled replica cosigned", || cosigned_seqs(&state).iter().any(|&s| s >= 6));
    let (_, history, _) = daemon.gdbus_call("GetElementHistory", &[&format!("replica:{name}"), "50"]);
    assert_eq!(history.matches("replica.witness_key_changed").count(), 1, "said once, not on every acknowledgement: {history}");
    let witness_key = std::fs::read_to_string(state.join(format!("keys/witnesses/{name}.vkey"))).unwrap();

    let (code, out, err) = agent(&["verify", "--anchored", "--data-dir", state_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("anchored: the ledger holds seq") && out.contains("2 witness key(s) known"), "{out}");
    let (ok, out, err) = daemon.gdbus_call("VerifyChain", &[]);
    assert!(
        ok && out.contains("(true,") && out.contains("anchored: the ledger holds seq"),
        "VerifyChain checks the anchor too: {out}{err}"
    );
    let (code, out, err) = agent(&["--config", config.to_str().unwrap(), "--bus", &bus.address, "doctor", "--data-dir", state_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok    anchoring") && out.contains(&format!("{name}: healthy")), "{out}");
    daemon.stop();

    // Edit seq 2 and re-seal: plain verification cannot tell, the anchor can.
    let ledger = Layout::state(&state).ledger_dir();
    edit_and_reseal(&ledger, 2);
    let (code, out, _) = agent(&["verify", "--data-dir", state_arg]);
    assert_eq!(code, 0, "a re-sealed chain verifies on its own: {out}");
    let (code, out, _) = agent(&["verify", "--anchored", "--data-dir", state_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("history rewritten at or before seq 2") && out.contains("seq 1 still matches"), "{out}");
    // An auditor with the witness key and the replica's copy of the notes says the same.
    let replica_copy = rep_dir.join(
        std::fs::read_dir(&rep_dir).unwrap().flatten().find(|e| e.file_name().to_string_lossy().starts_with("data@")).unwrap().file_name(),
    );
    let (code, out, _) = agent(&[
        "verify",
        "--anchored",
        "--data-dir",
        state_arg,
        "--witness",
        witness_key.trim(),
        "--notes",
        replica_copy.join("witness").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("history rewritten at or before seq"), "{out}");

    // The primary runs on and streams the rewritten history: the replica refuses it, keeps
    // what it verified, and the primary records the refusal.
    let head_before = replica_head(&rep_dir);
    let daemon = start(&state);
    let (ok, out, _) = daemon.gdbus_call("VerifyChain", &[]);
    assert!(ok && out.contains("(false,") && out.contains("history rewritten at or before seq 2"), "{out}");
    record(&daemon, "bridge:br9", "after the rewrite", "critical");
    wait_for("the replica logged a refusal", || std::fs::read_to_string(rep_dir.join("rejections.jsonl")).is_ok_and(|t| !t.is_empty()));
    assert_eq!(replica_head(&rep_dir), head_before, "the replica keeps its verified history");
    let refusal = std::fs::read_to_string(rep_dir.join("rejections.jsonl")).unwrap();
    assert!(refusal.contains("changed within its verified part"), "refused because the verified history changed: {refusal}");
    wait_for("the primary recorded the refusal", || {
        let (ok, out, _) = daemon.gdbus_call("GetElementHistory", &[&format!("replica:{name}"), "10"]);
        ok && out.contains("replica.refused")
    });
    record(&daemon, "bridge:br10", "still rewritten", "critical");
    wait_for("the replica is reported as refusing", || {
        let (ok, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
        ok && out.contains("\"state\":\"refused\"")
    });
    let (_, history, _) = daemon.gdbus_call("GetElementHistory", &[&format!("replica:{name}"), "50"]);
    assert_eq!(history.matches("replica.refused").count(), 1, "said once while it refuses: {history}");
}
