//! One replica host keeping many primaries' histories (`replica-receive --origin`), and the
//! replica daemon serving them all: real primaries on loop-mounted Btrfs streaming with the
//! local transport and over ssh to a namespace host whose key pins an origin.

mod common;

use common::{
    AgentDaemon, BtrfsMount, Netns, PrivateBus, SshReplicaHost, gdbus_string, replica_head, replica_state, run_ok, wait_until,
    write_replica_config, write_streaming_config_as,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const QUICK_STREAM: &str =
    "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 100\nlow_delay_ms = 100\nhigh_delay_ms = 100\n";

/// A primary named `host` on its own Btrfs and bus, streaming its snapshots into each
/// replica host's directory in `rep_dirs` as origin `host`.
struct Primary {
    daemon: AgentDaemon,
    _bus: PrivateBus,
    _disk: BtrfsMount,
    _tmp: tempfile::TempDir,
}

impl Primary {
    fn start(host: &str, rep_dir: &Path) -> Self {
        Self::start_to(host, &[rep_dir])
    }

    fn start_to(host: &str, rep_dirs: &[&Path]) -> Self {
        let disk = BtrfsMount::new(300);
        let bus = PrivateBus::open();
        let tmp = tempfile::tempdir().unwrap();
        let mut extra = QUICK_STREAM.to_owned();
        for (i, dir) in rep_dirs.iter().enumerate() {
            extra += &format!(
                "\n[[stream.replicas]]\nname = \"fleet{i}\"\ntransport = \"local\"\nper_origin = true\nremote_dir = \"{}\"\n",
                dir.display()
            );
        }
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
    // Each origin searched as deep as one: on these small histories, the same answer.
    let thorough = json_of(search(&served, "uplink lost carrier", "{'limit': <uint32 5>, 'thorough': <true>}"));
    let seqs =
        |a: &serde_json::Value| a["hits"].as_array().unwrap().iter().map(|h| (h["host"].clone(), h["seq"].clone())).collect::<Vec<_>>();
    assert_eq!(seqs(&thorough), seqs(&answer), "{thorough}");
    // A merged search ranks each origin's nearest from the graph's 8-bit copies; the scores
    // it answers with are still the exact ones.
    let semantic = |a: &Value| a["hits"].as_array().unwrap().iter().map(|h| h["why"]["semantic"].as_f64()).collect::<Vec<_>>();
    assert!(semantic(&answer).iter().any(Option::is_some), "{answer}");
    assert_eq!(semantic(&answer), semantic(&thorough), "{answer}\n{thorough}");
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
    let answer = json_of(search(
        &served,
        "bond lost a slave",
        &format!("{{'hosts': <['hv-b']>, 'min_seq': <uint64 {seq}>, 'wait_ms': <uint32 30000>}}"),
    ));
    assert!(answer["origins"][0]["head_seq"].as_u64().unwrap() >= seq, "{answer}");
    assert_eq!(answer["hits"][0]["element_id"], "interface:bond0", "{answer}");
    let (ok, _, err) =
        search(&served, "bond", &format!("{{'hosts': <['hv-b']>, 'min_seq': <uint64 {}>, 'wait_ms': <uint32 200>}}", seq + 1000));
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
    let host =
        SshReplicaHost::start(&format!("{} replica-receive --dir {} --origin hv-b", common::agent_bin().display(), rep_dir.display()));
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

/// A replica daemon serving `dir` on `bus`, reached over ssh from `client` through
/// `systemd-stdio-bridge` (the key's forced command), as `[[fleet.hosts]]` entry `name`.
struct FleetMember {
    name: &'static str,
    ssh: SshReplicaHost,
    _daemon: AgentDaemon,
    _bus: PrivateBus,
    _tmp: tempfile::TempDir,
}

impl FleetMember {
    fn start(name: &'static str, client: &Arc<Netns>, dir: &Path, bus: PrivateBus) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let daemon = AgentDaemon::start(&bus.address, &tmp.path().join("unused"), &write_replica_config(tmp.path(), dir));
        let ssh = SshReplicaHost::start_from(client.clone(), &format!("systemd-stdio-bridge --bus-path={}", bus.address));
        Self { name, ssh, _daemon: daemon, _bus: bus, _tmp: tmp }
    }

    fn toml(&self) -> String {
        format!(
            "\n[[fleet.hosts]]\nname = \"{}\"\ndestination = \"root@{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nssh_options = [\"-o\", \"LogLevel=ERROR\", \"-o\", \"ConnectTimeout=30\"]\nbus = \"{}\"\n",
            self.name,
            self.ssh.address,
            self.ssh.client_key.display(),
            self.ssh.known_hosts().display(),
            self._bus.address
        )
    }
}

/// `ovs-port-agent search … --json` run in the client namespace: (exit code, answer, time).
fn fleet_search(client: &Netns, config: &Path, args: &[&str]) -> (i32, Value, Duration) {
    let started = std::time::Instant::now();
    let out = client
        .command(common::agent_bin().to_str().unwrap())
        .arg("--config")
        .arg(config)
        .arg("search")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let took = started.elapsed();
    let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), answer, took)
}

fn daemon_status(answer: &Value, name: &str) -> String {
    answer["daemons"].as_array().unwrap().iter().find(|d| d["name"] == name).map(|d| d["status"].as_str().unwrap().to_owned()).unwrap()
}

fn origin<'a>(answer: &'a Value, host: &str) -> &'a Value {
    answer["origins"].as_array().unwrap().iter().find(|o| o["host"] == host).unwrap_or_else(|| panic!("no {host}: {answer}"))
}

#[test]
fn a_query_across_replicas_over_ssh_balances_fails_over_detects_forks_and_answers_partially() {
    let disk = BtrfsMount::new(900);
    let (r1, r2, r3) = (disk.path().join("r1"), disk.path().join("r2"), disk.path().join("r3"));
    // hv-a's history on r1 and r2, hv-b's on r2; then a forged hv-a (another history under
    // the same name) reaches r3 and is refused by r2, whose hv-a copy is then "refusing".
    let a = Primary::start_to("hv-a", &[&r1, &r2]);
    a.record("interface:eth0", "link.down", "uplink eth0 lost carrier on hv-a");
    a.record("interface:eth1", "mtu.changed", "eth1 mtu changed to 9000");
    let a_head = a.record("interface:eth2", "link.up", "eth2 came up");
    let b = Primary::start_to("hv-b", &[&r2]);
    let b_head = b.record("interface:eth0", "link.down", "uplink eth0 lost carrier on hv-b");
    let hv_a = |dir: &Path| dir.join("origins/hv-a");
    wait_until("hv-a and hv-b arrived", Duration::from_secs(60), || {
        replica_head(&hv_a(&r1)) >= a_head && replica_head(&hv_a(&r2)) >= a_head && replica_head(&r2.join("origins/hv-b")) >= b_head
    });
    drop(a);
    // Two events of its own and the one it records when r2 refuses it: the same head seq
    // as hv-a's real history, another hash.
    let forged = Primary::start_to("hv-a", &[&r3, &r2]);
    forged.record("interface:eth0", "link.up", "forged: eth0 came back");
    forged.record("interface:eth1", "mtu.changed", "forged: eth1 mtu 1500");
    wait_until("the forged copy arrived on r3 and was refused by r2", Duration::from_secs(60), || {
        replica_head(&hv_a(&r3)) >= a_head && std::fs::read_to_string(hv_a(&r2).join("rejections.jsonl")).is_ok()
    });
    drop(forged);

    let client = Arc::new(Netns::new("fleetq"));
    // r1's bus refuses Search: it lists its copies but will not answer a query.
    let m1 = FleetMember::start("r1", &client, &r1, PrivateBus::open_denying("Search"));
    let m2 = FleetMember::start("r2", &client, &r2, PrivateBus::open());
    let m3 = FleetMember::start("r3", &client, &r3, PrivateBus::open());
    let gone = FleetMember::start("gone", &client, &disk.path().join("r4"), PrivateBus::open());
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "[fleet]\ndeadline_ms = 20000\n[fleet.groups]\nforked = [\"r2\", \"r3\"]\n{}{}{}{}",
            m1.toml(),
            m2.toml(),
            m3.toml(),
            gone.toml()
        ),
    )
    .unwrap();

    // r1 holds the healthy copy of hv-a and is asked first; it refuses, and hv-a goes to
    // r2's copy (fail-over). A host whose sshd is gone is reported, and the answer is partial.
    gone.ssh.stop_sshd();
    let (code, answer, _) = fleet_search(&client, &config, &["uplink lost carrier", "--hosts", "r1,r2,gone"]);
    assert_eq!(code, 7, "partial answers exit 7: {answer}");
    assert_eq!(answer["complete"], false);
    assert_eq!(daemon_status(&answer, "r1"), "refused", "{answer}");
    assert_eq!(daemon_status(&answer, "r2"), "answered", "{answer}");
    assert_eq!(daemon_status(&answer, "gone"), "unreachable", "{answer}");
    assert_eq!(origin(&answer, "hv-a")["via"], "r2", "{answer}");
    assert_eq!(origin(&answer, "hv-a")["copies"], 2);
    assert_eq!(origin(&answer, "hv-b")["via"], "r2");
    let hits: Vec<(String, String)> = answer["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["host"].as_str().unwrap().to_owned(), h["summary"].as_str().unwrap().to_owned()))
        .collect();
    assert!(hits.contains(&("hv-a".into(), "uplink eth0 lost carrier on hv-a".into())), "{hits:?}");
    assert!(hits.contains(&("hv-b".into(), "uplink eth0 lost carrier on hv-b".into())), "{hits:?}");
    assert!(answer["hits"].as_array().unwrap().iter().all(|h| h["via"] == "r2"));

    // Two copies of hv-a at one seq with different heads: a fork, reported.
    let (code, answer, _) = fleet_search(&client, &config, &["eth0", "--fleet", "forked"]);
    assert_eq!(code, 0, "{answer}");
    let fork = origin(&answer, "hv-a")["fork"].as_str().unwrap_or_else(|| panic!("no fork reported: {answer}"));
    assert!(fork.contains("r2 and r3") || fork.contains("r3 and r2"), "{fork}");

    // The same over D-Bus: a daemon asks the fleet in its config (FleetSearch).
    let (asker, _asker_bus, _asker_dir) = common::start_fleet_asker(&client, &config);
    let answer = json_of(asker.gdbus_call("FleetSearch", &["eth0", "{'fleet': <'forked'>, 'limit': <uint32 3>}"]));
    assert!(origin(&answer, "hv-a")["fork"].is_string(), "{answer}");
    assert_eq!(answer["hits"].as_array().unwrap().len(), 3, "{answer}");
    let (ok, _, err) = asker.gdbus_call("FleetSearch", &["eth0", "{'daemons': <['r9']>}"]);
    assert!(!ok && err.contains("InvalidArgs") && err.contains("r9"), "{err}");
    let (ok, _, err) = asker.gdbus_call("FleetSearch", &["eth0", "{}"]);
    assert!(!ok && err.contains("one of the two"), "{err}");
    drop(asker);

    // Only the named origins; an unknown daemon name is refused with the known ones.
    let (_, answer, _) = fleet_search(&client, &config, &["uplink", "--hosts", "r2", "--origin", "hv-b"]);
    assert!(answer["hits"].as_array().unwrap().iter().all(|h| h["host"] == "hv-b"), "{answer}");
    let out = client
        .command(common::agent_bin().to_str().unwrap())
        .arg("--config")
        .arg(&config)
        .args(["search", "x", "--hosts", "r9"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("r1, r2, r3, gone"), "{out:?}");

    // A host that vanishes from the network (its link down: no refusal, only silence) costs
    // the deadline, no more; the others' answers are kept.
    run_ok(gone.ssh.replica_ns.command("ip").args(["link", "set", &gone.ssh.replica_link, "down"]));
    gone.ssh.start_sshd();
    let (code, answer, took) = fleet_search(&client, &config, &["uplink lost carrier", "--hosts", "r2,gone", "--deadline", "2s"]);
    assert_eq!(code, 7);
    assert_eq!(daemon_status(&answer, "gone"), "timed out", "{answer}");
    assert_eq!(daemon_status(&answer, "r2"), "answered");
    assert!(!answer["hits"].as_array().unwrap().is_empty());
    assert!(took < Duration::from_secs(5), "the deadline was 2 s; the query took {took:?}");
}

#[test]
fn a_fan_out_to_200_silent_hosts_ends_at_its_deadline_and_says_who_is_missing() {
    // 200 addresses behind a link whose far end is down: no answer to ARP, ssh waits,
    // nothing refuses.
    let client = Netns::new("fleet200");
    run_ok(client.command("ip").args(["link", "add", "silent0", "type", "veth", "peer", "name", "silent1"]));
    run_ok(client.command("ip").args(["addr", "add", "10.233.0.1/16", "dev", "silent0"]));
    run_ok(client.command("ip").args(["link", "set", "silent0", "up"]));
    let tmp = tempfile::tempdir().unwrap();
    let mut toml = String::from("[fleet]\ndeadline_ms = 1000\n");
    for i in 0..200 {
        toml += &format!("\n[[fleet.hosts]]\nname = \"h{i}\"\ndestination = \"root@10.233.{}.{}\"\n", 1 + i / 200, 1 + i % 200);
    }
    toml +=
        &format!("\n[[fleet.hosts]]\nname = \"nobus\"\ntransport = \"local\"\nbus = \"unix:path={}\"\n", tmp.path().join("none").display());
    let config = tmp.path().join("fleet.toml");
    std::fs::write(&config, toml).unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("h{i}")).chain(["nobus".to_owned()]).collect();
    let (code, answer, took) = fleet_search(&client, &config, &["uplink down", "--hosts", &names.join(",")]);
    assert_eq!(code, 7, "{answer}");
    assert_eq!(answer["complete"], false);
    let daemons = answer["daemons"].as_array().unwrap();
    assert_eq!(daemons.len(), 201);
    // A bus that is not there fails at once; while 200 ssh processes start on two cores it
    // may still miss the listing's half second.
    assert!(["unreachable", "timed out"].contains(&daemon_status(&answer, "nobus").as_str()), "{answer}");
    let silent = daemons
        .iter()
        .filter(|d| d["name"] != "nobus" && d["status"] == "timed out" && d["error"].as_str().unwrap().contains("500 ms"))
        .count();
    assert_eq!(silent, 200, "{answer}");
    assert!(took < Duration::from_secs(4), "a 1 s deadline; the query took {took:?}");
}
