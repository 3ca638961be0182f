//! A replica whose disk fills up (issue 15's fault suite): its receive fails, the primary
//! reports it and keeps recording; once space is freed the replica converges, its newest
//! snapshot verifies, and no partial subvolume is left behind.

mod common;

use common::{
    AgentDaemon, BtrfsMount, PrivateBus, assert_clean, gdbus_string, local_replica_toml, replica_head, wait_until, write_streaming_config,
};
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn a_replica_with_a_full_disk_is_reported_and_converges_once_space_returns() {
    let primary = BtrfsMount::new(400);
    let replica = BtrfsMount::new(200);
    let rep_dir = replica.path().join("rep");
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 100\nlow_delay_ms = 100\n{}",
        local_replica_toml("small", &rep_dir)
    );
    let config = write_streaming_config(tmp.path(), &extra);
    let daemon = AgentDaemon::start(&bus.address, &primary.path().join("state"), &config);
    let record = |i: usize| {
        let pad: String = (0..3000).map(|k| char::from(b'a' + ((k * 13 + i * 7) % 26) as u8)).collect();
        let details = format!("{{\"summary\":\"port tap{i} error\",\"trace\":\"{pad}\"}}");
        let (ok, _, err) = daemon.gdbus_call("RecordEvent", &[&format!("interface:tap{}", i % 5), "port.error", &details, "critical"]);
        assert!(ok, "recording goes on whatever the replica's disk: {err}");
    };
    let head = || daemon.stats()["head_seq"].as_u64().unwrap();
    record(0);
    wait_until("the first snapshot arrives", Duration::from_secs(30), || replica_head(&rep_dir) >= head());

    // Fill the replica's file system to the last byte.
    let ballast = replica.path().join("ballast");
    {
        let mut f = std::fs::File::create(&ballast).unwrap();
        let block = vec![0x5au8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    for i in 1..=40 {
        record(i);
    }
    let wanted = head();
    wait_until("the replica is reported failing", Duration::from_secs(60), || {
        let (_, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
        let status: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
        status[0]["state"] != "healthy" && status[0]["last_error"].is_string()
    });
    let (_, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
    let failing = gdbus_string(&out);
    let status: serde_json::Value = serde_json::from_str(&failing).unwrap();
    assert_eq!(status[0]["state"], "failing", "its own trouble, not a refusal: {failing}");
    assert!(status[0]["last_error"].as_str().unwrap().contains("No space left"), "btrfs receive's own words: {failing}");
    let (_, history, _) = daemon.gdbus_call("GetElementHistory", &["replica:small", "10"]);
    assert!(!history.contains("replica.refused"), "nothing refused: {history}");
    assert!(replica_head(&rep_dir) < wanted, "it could not have taken everything");

    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    wait_until("the replica converges", Duration::from_secs(120), || replica_head(&rep_dir) >= wanted);
    let converged = freed.elapsed();
    assert_clean(&rep_dir);
    eprintln!("while full: {failing}; converged {:.1} s after space was freed", converged.as_secs_f64());
}
