//! A replica over ssh whose network fails during sends (issue 15's fault suite): its link
//! goes down as critical events are being sent and comes back; then it is reached over a
//! slow (1 Mbit/s) link that drops a fifth of its packets. Each time the replica converges on the primary's head, its
//! newest snapshot verifies, and nothing partial is left in its directory. (`tc netem` is not
//! in this kernel; loss is an nftables rule and the slow link a tbf queue, both inside the
//! replica's namespace.)

mod common;

use common::{AgentDaemon, BtrfsMount, PrivateBus, assert_clean, gdbus_string, replica_head, run_ok, wait_until, write_streaming_config};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn record(daemon: &AgentDaemon, n: usize) -> u64 {
    // Some weight per event, so that sends take a while on a slow link.
    let filler: String = (0..4000).map(|i| char::from(b'a' + (i * 7 + n) as u8 % 26)).collect();
    let details = format!("{{\"summary\":\"uplink {n} lost carrier\",\"trace\":\"{filler}\"}}");
    let (ok, _, err) = daemon.gdbus_call("RecordEvent", &[&format!("interface:eth{}", n % 4), "link.down", &details, "critical"]);
    assert!(ok, "{err}");
    daemon.stats()["head_seq"].as_u64().unwrap()
}

/// Waits until the replica holds `seq` and checks it converged cleanly; returns how long.
fn converged(rep_dir: &Path, seq: u64, within: Duration) -> Duration {
    let started = Instant::now();
    wait_until(&format!("the replica holds seq {seq}"), within, || replica_head(rep_dir) >= seq);
    assert_clean(rep_dir);
    started.elapsed()
}

#[test]
fn a_replica_whose_link_fails_during_sends_or_turns_slow_and_lossy_converges() {
    let primary = BtrfsMount::new(600);
    let replica = BtrfsMount::new(600);
    let rep_dir = replica.path().join("rep");
    let host = common::SshReplicaHost::receiving_into(&rep_dir);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!(
        "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nmedium_delay_ms = 100\nlow_delay_ms = 100\n{}",
        host.replica_toml(&["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3", "-o", "ConnectTimeout=5"])
    );
    let config = write_streaming_config(tmp.path(), &extra);
    let daemon = AgentDaemon::start_in(&host.primary_ns, &bus.address, &primary.path().join("state"), &config);
    let ns = host.replica_ns.name.clone();
    let link = host.replica_link.clone();
    let ip = |args: &[&str]| run_ok(Command::new("ip").args(["-n", &ns]).args(args));

    let seq = record(&daemon, 0);
    converged(&rep_dir, seq, Duration::from_secs(30));

    // The link goes down as critical events are being sent, for three seconds.
    for n in 1..=5 {
        record(&daemon, n);
    }
    ip(&["link", "set", &link, "down"]);
    let mut last = 0;
    for n in 6..=10 {
        last = record(&daemon, n);
    }
    std::thread::sleep(Duration::from_secs(3));
    ip(&["link", "set", &link, "up"]);
    let after_outage = converged(&rep_dir, last, Duration::from_secs(60));

    // A slow link (shaped where the primary sends) that drops a fifth of what arrives.
    let (primary_ns, primary_link) = (host.primary_ns.name.clone(), host.primary_link.clone());
    let tbf = ["qdisc", "add", "dev", &primary_link, "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms"];
    run_ok(Command::new("tc").args(["-n", &primary_ns]).args(tbf));
    let nft = |rule: &str| run_ok(Command::new("ip").args(["netns", "exec", &ns, "nft"]).args(rule.split(' ')));
    nft("add table inet faults");
    nft("add chain inet faults input { type filter hook input priority 0 ; }");
    nft("add rule inet faults input numgen random mod 10 < 2 drop");
    for n in 11..=30 {
        last = record(&daemon, n);
    }
    let through_loss = converged(&rep_dir, last, Duration::from_secs(120));
    nft("delete table inet faults");
    run_ok(Command::new("tc").args(["-n", &primary_ns, "qdisc", "del", "dev", &primary_link, "root"]));
    let (_, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
    let status: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    eprintln!(
        "link down 3 s during sends: converged {:.1} s after it came back; 1 Mbit/s with 20 % loss: 20 events converged in {:.1} s; {status}",
        after_outage.as_secs_f64(),
        through_loss.as_secs_f64()
    );
}
