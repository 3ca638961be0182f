//! `SIGHUP` (what `systemctl reload` sends) reloads the replica list and the trigger policy
//! of a running primary, on real loop-mounted Btrfs with local replicas: a replica removed
//! stops receiving, one added catches up, the change is recorded in the ledger; a file that
//! does not load, or one naming another data directory, is refused and nothing changes.

mod common;

use common::{AgentDaemon, BtrfsMount, PrivateBus, gdbus_string, local_replica_toml, replica_head, wait_until, write_streaming_config};
use std::path::Path;
use std::time::Duration;

fn replica_names(daemon: &AgentDaemon) -> Vec<String> {
    let (ok, out, err) = daemon.gdbus_call("GetReplicaStatus", &[]);
    assert!(ok, "{err}");
    let status: Vec<serde_json::Value> = serde_json::from_str(&gdbus_string(&out)).unwrap();
    status.iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

fn record(daemon: &AgentDaemon, n: u32) -> u64 {
    let details = format!("{{\"summary\":\"port tap{n} could not open its device\"}}");
    let (ok, _, err) = daemon.gdbus_call("RecordEvent", &[&format!("bridge:br{n}"), "port.error", &details, "critical"]);
    assert!(ok, "{err}");
    let (_, out, _) = daemon.busctl(&["get-property", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "HeadSeq"]);
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Replaces the config file whole (as editors do), so a reload never reads half of it.
fn write_config(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

fn hup(daemon: &AgentDaemon) {
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(daemon.child.id() as i32, libc::SIGHUP) }, 0);
}

fn reloads_recorded(daemon: &AgentDaemon) -> usize {
    let (_, out, _) = daemon.gdbus_call("GetElementHistory", &["agent:config", "50"]);
    out.matches("config.reloaded").count()
}

#[test]
fn a_reload_swaps_replicas_live_and_a_bad_one_changes_nothing() {
    let primary = BtrfsMount::new(600);
    let (first, second) = (BtrfsMount::new(600), BtrfsMount::new(600));
    let (rep1, rep2) = (first.path().join("rep"), second.path().join("rep"));
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let base = "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 200\nlow_delay_ms = 200\n";
    let config = write_streaming_config(tmp.path(), &format!("{base}{}", local_replica_toml("r1", &rep1)));
    let mut daemon = AgentDaemon::start(&bus.address, &primary.path().join("state"), &config);
    let seq = record(&daemon, 1);
    wait_until("r1 has the first event", Duration::from_secs(60), || replica_head(&rep1) >= seq);
    assert_eq!(replica_names(&daemon), vec!["r1"]);

    // r1 out, r2 in, a faster trigger: applied without a restart, and recorded.
    let text = std::fs::read_to_string(&config).unwrap();
    let swapped = text
        .replace(&local_replica_toml("r1", &rep1), &local_replica_toml("r2", &rep2))
        .replace("low_delay_ms = 200", "low_delay_ms = 100");
    write_config(&config, &swapped);
    hup(&daemon);
    wait_until("r2 replaced r1", Duration::from_secs(60), || replica_names(&daemon) == vec!["r2"]);
    let seq = record(&daemon, 2);
    wait_until("r2 caught up with the whole history", Duration::from_secs(60), || replica_head(&rep2) >= seq);
    std::thread::sleep(Duration::from_millis(500));
    assert!(replica_head(&rep1) < seq, "a removed replica receives nothing more");
    wait_until("the reload was recorded", Duration::from_secs(60), || reloads_recorded(&daemon) == 1);
    let (_, history, _) = daemon.gdbus_call("GetElementHistory", &["agent:config", "5"]);
    assert!(history.contains("r2") && history.contains("r1"), "what was added and removed: {history}");

    // A file that does not load, then one naming another data directory: refused, the
    // daemon runs on with r2, and nothing more is recorded.
    write_config(&config, &format!("{swapped}\n[[[ not toml\n"));
    hup(&daemon);
    std::thread::sleep(Duration::from_millis(500));
    write_config(&config, &swapped.replacen("[agent]\n", "[agent]\ndata_dir = \"/somewhere/else\"\n", 1));
    hup(&daemon);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(replica_names(&daemon), vec!["r2"]);
    let seq = record(&daemon, 3);
    wait_until("r2 still receives", Duration::from_secs(60), || replica_head(&rep2) >= seq);
    assert_eq!(reloads_recorded(&daemon), 1, "refused reloads change nothing");
    let (_, status) = daemon.stop();
    assert!(status.success(), "the daemon stopped cleanly: {status}");
}
