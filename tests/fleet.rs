//! One replica host keeping many primaries' histories (`replica-receive --origin`), and the
//! replica daemon serving them all: real primaries on loop-mounted Btrfs streaming with the
//! local transport and over ssh to a namespace host whose key pins an origin.

mod common;

use common::{
    AgentDaemon, BtrfsMount, PrivateBus, SshReplicaHost, gdbus_string, replica_head, replica_state, wait_until, write_replica_config,
    write_streaming_config_as,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const QUICK_STREAM: &str = "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 100\nlow_delay_ms = 100\nhigh_delay_ms = 100\n";

/// A primary named `host` on its own Btrfs and bus, streaming its snapshots into the
/// replica host's `rep_dir` as origin `host`.
struct Primary {
    daemon: AgentDaemon,
    _bus: PrivateBus,
    _disk: BtrfsMount,
    _tmp: tempfile::TempDir,
}

impl Primary {
    fn start(host: &str, rep_dir: &Path) -> Self {
        let disk = BtrfsMount::new(300);
        let bus = PrivateBus::open();
        let tmp = tempfile::tempdir().unwrap();
        let extra = format!(
            "{QUICK_STREAM}\n[[stream.replicas]]\nname = \"fleet\"\ntransport = \"local\"\nper_origin = true\nremote_dir = \"{}\"\n",
            rep_dir.display()
        );
        let config = write_streaming_config_as(tmp.path(), host, &extra);
        let daemon = AgentDaemon::start(&bus.address, &disk.path().join("state"), &config);
        Self { daemon, _bus: bus, _disk: disk, _tmp: tmp }
    }

    /// Records an event; returns its seq.
    fn record(&self, element: &str, action: &str, summary: &str) -> u64 {
        let (ok, out, err) = self.daemon.gdbus_call("RecordEvent", &[element, action, &format!("{{\"summary\":\"{summary}\"}}"), "high"]);
        assert!(ok, "{err}");
        let _ = gdbus_string(&out);
        self.daemon.stats()["head_seq"].as_u64().unwrap()
    }

    fn head_hash(&self) -> String {
        self.daemon.stats()["head_hash"].as_str().unwrap().to_owned()
    }
}

fn json_of(call: (bool, String, String)) -> Value {
    assert!(call.0, "{}", call.2);
    serde_json::from_str(&gdbus_string(&call.1)).unwrap()
}

fn search(daemon: &AgentDaemon, query: &str, options: &str) -> (bool, String, String) {
    daemon.gdbus_call("Search", &[query, options])
}

fn hosts_of(answer: &Value) -> Vec<String> {
    answer["hits"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn one_replica_host_keeps_many_primaries_apart_and_serves_them_all() {
    let replica = BtrfsMount::new(600);
    let rep_dir = replica.path().join("fleet");
    let a = Primary::start("hv-a", &rep_dir);
    let b = Primary::start("hv-b", &rep_dir);
    a.record("interface:eth0", "link.down", "uplink eth0 lost carrier on hv-a");
    a.record("interface:eth1", "mtu.changed", "eth1 mtu changed to 9000");
    b.record("bridge:br-int", "port.added", "port vnet7 attached to bridge br-int");
    let b_head = b.record("interface:eth0", "link.up", "eth0 carrier restored");
    let (origin_a, origin_b) = (rep_dir.join("origins/hv-a"), rep_dir.join("origins/hv-b"));
    wait_until("both origins arrived", Duration::from_secs(60), || replica_head(&origin_a) >= 2 && replica_head(&origin_b) >= b_head);
    assert_eq!(replica_state(&origin_a)["host"], "hv-a");
    assert_eq!(replica_state(&origin_b)["host"], "hv-b");

    // A third primary claiming hv-a's name (once hv-a's own session ended: one session per
    // origin at a time): its key and history are not what hv-a's directory pinned, so
    // nothing of it is taken.
    let a_hash_before = replica_state(&origin_a)["head_hash"].clone();
    drop(a);
    let impostor = Primary::start("hv-a", &rep_dir);
    impostor.record("interface:eth0", "link.down", "forged event");
    wait_until("the impostor was refused", Duration::from_secs(60), || {
        std::fs::read_to_string(origin_a.join("rejections.jsonl")).is_ok_and(|r| r.contains("changed within its verified part"))
    });
    assert_eq!(replica_state(&origin_a)["head_hash"], a_hash_before, "hv-a's verified copy is untouched");
    drop(impostor);

    let tmp = tempfile::tempdir().unwrap();
    let bus = PrivateBus::open();
    let config = write_replica_config(tmp.path(), &rep_dir);
    let served = AgentDaemon::start(&bus.address, &tmp.path().join("unused"), &config);

    // Hosts(): each origin with its verified head, the same as the primary's.
    let hosts = json_of(served.gdbus_call("Hosts", &[]));
    let by_name = |hosts: &Value, name: &str| hosts.as_array().unwrap().iter().find(|h| h["host"] == name).cloned();
    let hb = by_name(&hosts, "hv-b").expect("hv-b listed");
    assert_eq!(hb["head_seq"].as_u64().unwrap(), b_head, "{hosts}");
    assert_eq!(hb["head_hash"].as_str().unwrap(), b.head_hash());
    assert_eq!(hb["object_path"], "/dev/ovs/PortAgent1/origins/hv_2db");
    assert!(by_name(&hosts, "hv-a").is_some(), "{hosts}");

    // One search across both, merged; each hit and each origin's freshness says its host.
    let answer = json_of(search(&served, "uplink lost carrier", "{'limit': <uint32 5>}"));
    assert_eq!(answer["hits"][0]["host"], "hv-a", "{answer}");
    assert_eq!(answer["hits"][0]["summary"], "uplink eth0 lost carrier on hv-a");
    let origins: Vec<&str> = answer["origins"].as_array().unwrap().iter().map(|o| o["host"].as_str().unwrap()).collect();
    assert_eq!(origins, ["hv-a", "hv-b"], "{answer}");
    assert!(answer["origins"][1]["head_hash"].as_str().unwrap().len() == 64);
    let answer = json_of(search(&served, "port attached to a bridge", "{'hosts': <['hv-b']>}"));
    assert!(hosts_of(&answer).iter().all(|h| h == "hv-b"), "{answer}");
    assert_eq!(answer["hits"][0]["element_id"], "bridge:br-int");
    let (ok, _, err) = search(&served, "anything", "{'hosts': <['hv-z']>}");
    assert!(!ok && err.contains("InvalidArgs") && err.contains("hv-a, hv-b"), "{err}");

    // An element's history across hosts, each row with its host.
    let rows = json_of(served.gdbus_call("GetElementHistory", &["interface:eth0", "10"]));
    let mut hosts: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["host"].as_str().unwrap()).collect();
    hosts.sort();
    assert_eq!(hosts, ["hv-a", "hv-b"], "{rows}");

    // One host's analyses on its own object; on the root object they ask for one host.
    let state = json_of(served.gdbus_call_at("/dev/ovs/PortAgent1/origins/hv_2da", "GetElementState", &["interface:eth0", "0"]));
    assert!(state.to_string().contains("link.down") || state.to_string().contains("eth0"), "{state}");
    let (ok, _, err) = served.gdbus_call("GetElementState", &["interface:eth0", "0"]);
    assert!(!ok && err.contains("/dev/ovs/PortAgent1/origins/hv_2da"), "{err}");

    // Read-your-writes: the answer waits for the snapshot holding the new event.
    let seq = b.record("interface:bond0", "slave.removed", "bond0 lost slave ens5");
    let answer = json_of(search(&served, "bond lost a slave", &format!("{{'hosts': <['hv-b']>, 'min_seq': <uint64 {seq}>, 'wait_ms': <uint32 30000>}}")));
    assert!(answer["origins"][0]["head_seq"].as_u64().unwrap() >= seq, "{answer}");
    assert_eq!(answer["hits"][0]["element_id"], "interface:bond0", "{answer}");
    let (ok, _, err) = search(&served, "bond", &format!("{{'hosts': <['hv-b']>, 'min_seq': <uint64 {}>, 'wait_ms': <uint32 200>}}", seq + 1000));
    assert!(!ok && err.contains("Error.Stale") && err.contains("waited 200 ms"), "{err}");
    let (ok, _, err) = search(&served, "bond", "{'max_staleness_ms': <uint64 0>}");
    assert!(!ok && err.contains("Error.Stale") && err.contains("left out"), "{err}");

    // A primary that starts later is served without a restart.
    let c = Primary::start("hv-c", &rep_dir);
    c.record("interface:eth9", "link.down", "eth9 down on hv-c");
    wait_until("hv-c is served", Duration::from_secs(60), || {
        let hosts = json_of(served.gdbus_call("Hosts", &[]));
        by_name(&hosts, "hv-c").is_some_and(|h| h["head_seq"].as_u64().unwrap() >= 1)
    });
    let stats = served.stats();
    assert_eq!(stats["hosts"].as_array().unwrap().len(), 3, "{stats}");
}

#[test]
fn a_key_pinned_to_one_origin_cannot_write_another() {
    let replica = BtrfsMount::new(300);
    let rep_dir = replica.path().join("fleet");
    // The replica host's only key is pinned to origin hv-b.
    let host = SshReplicaHost::start(&format!("{} replica-receive --dir {} --origin hv-b", common::agent_bin().display(), rep_dir.display()));
    let disk = BtrfsMount::new(300);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("{QUICK_STREAM}{}per_origin = true\n", host.replica_toml(&[]));
    let config = write_streaming_config_as(tmp.path(), "hv-c", &extra);
    let daemon = AgentDaemon::start_in(&host.primary_ns, &bus.address, &disk.path().join("state"), &config);
    let (ok, _, err) = daemon.gdbus_call("RecordEvent", &["interface:eth0", "link.down", "{\"summary\":\"eth0 down\"}", "critical"]);
    assert!(ok, "{err}");
    let origin_b = rep_dir.join("origins/hv-b");
    wait_until("the stream was refused", Duration::from_secs(60), || {
        std::fs::read_to_string(origin_b.join("rejections.jsonl")).is_ok_and(|r| r.contains("may only write origin \\\"hv-b\\\""))
    });
    assert_eq!(replica_head(&origin_b), 0);
    assert!(!rep_dir.join("origins/hv-c").exists(), "nothing was written outside the pinned origin");
    wait_until("the primary reports the refusal", Duration::from_secs(30), || {
        json_of(daemon.gdbus_call("GetReplicaStatus", &[]))[0]["state"] == "refused"
    });
}
