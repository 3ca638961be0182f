//! The fault suite's first part (issue 15): the whole daemon SIGKILLed at random moments
//! while clients record events, the embedding runs behind and snapshots stream to a local
//! replica. After each restart, and again at the end: the chain verifies, every event
//! acknowledged so far is in the ledger, every event gets its vector and the replica comes
//! to hold the primary's head. It reports how many kills found the embedding or the replica
//! behind the head (work in flight), and how long catching up took.
//! Five kills in the suite; `OVS_PORT_AGENT_LONG_FAULTS=1` makes it twenty (the benchmark
//! command's long variant).

mod common;

use common::{
    AgentDaemon, BtrfsMount, PrivateBus, assert_clean, gdbus_string, ledger_records, quick_local_stream_toml, replica_head,
    write_streaming_config,
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rounds() -> usize {
    if std::env::var_os("OVS_PORT_AGENT_LONG_FAULTS").is_some() { 20 } else { 5 }
}

/// Records events as fast as one client can until told to stop; keeps the hash of each
/// acknowledged one (an answer is an acknowledgement: the record is durable).
fn client(bus: String, id: usize, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let priorities = ["low", "medium", "high", "critical"];
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let details = format!("{{\"summary\":\"client {id} event {n}: port tap{n} link flapped\"}}");
        let out = std::process::Command::new("gdbus")
            .args(["call", "--address", &bus, "--dest", "dev.ovs.PortAgent1", "--object-path", "/dev/ovs/PortAgent1"])
            .args(["--timeout", "5", "--method", "dev.ovs.PortAgent1.RecordEvent"])
            .args([&format!("interface:tap{id}-{}", n % 7), "link.down", &details, priorities[n % 4]])
            .output()
            .unwrap();
        if out.status.success() {
            acked.lock().unwrap().push(gdbus_string(&String::from_utf8_lossy(&out.stdout)));
        } else {
            std::thread::sleep(Duration::from_millis(20)); // the daemon is down: try again
        }
    }
}

/// Waits until the daemon's vectors and the replica have caught up with its head; how long
/// that took, and the head.
fn wait_converged(daemon: &AgentDaemon, rep_dir: &std::path::Path, what: &str) -> (Duration, u64, u64) {
    let started = Instant::now();
    loop {
        let s = daemon.stats();
        let (head, vectorized) = (s["head_seq"].as_u64().unwrap(), s["vectorized_seq"].as_u64().unwrap());
        if vectorized == head && replica_head(rep_dir) >= head {
            return (started.elapsed(), head, vectorized);
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{what}: did not converge: {s}, replica at {}", replica_head(rep_dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every event acknowledged so far is in the ledger.
fn assert_acknowledged_present(state: &std::path::Path, acked: &Mutex<Vec<String>>, what: &str) -> usize {
    let in_ledger: HashSet<String> = ledger_records(state).iter().map(|r| r.hash_hex()).collect();
    let acked = acked.lock().unwrap();
    let missing: Vec<&String> = acked.iter().filter(|h| !in_ledger.contains(*h)).collect();
    assert!(missing.is_empty(), "{what}: acknowledged but not in the ledger: {missing:?}");
    acked.len()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged_and_everything_converges() {
    let primary = BtrfsMount::new(800);
    let replica = BtrfsMount::new(800);
    let rep_dir = replica.path().join("rep");
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_streaming_config(tmp.path(), &quick_local_stream_toml(&rep_dir));
    let state = primary.path().join("state");
    let mut rng = StdRng::seed_from_u64(20261201);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut kills = Vec::new();
    let mut caught_up_after_restart = Duration::ZERO;
    // How many kills found the embedding behind the ledger's head, and the replica behind it.
    let (mut embedding_behind, mut replica_behind) = (0, 0);

    for round in 0..rounds() {
        let mut daemon = AgentDaemon::start(&bus.address, &state, &config);
        let (ok, out, _) = daemon.gdbus_call("VerifyChain", &[]);
        assert!(ok && out.contains("(true,"), "round {round}: the chain verifies after the restart: {out}");
        // After each restart, not only at the end: nothing acknowledged is lost, and the
        // vectors and the replica catch up before the next load begins.
        assert_acknowledged_present(&state, &acked, &format!("round {round}, after the restart"));
        let (took, _, _) = wait_converged(&daemon, &rep_dir, &format!("round {round}, after the restart"));
        caught_up_after_restart = caught_up_after_restart.max(took);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..2)
            .map(|id| {
                let (bus, stop, acked) = (bus.address.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || client(bus, id, stop, acked))
            })
            .collect();
        let moment = Duration::from_millis(rng.gen_range(150..1500));
        std::thread::sleep(moment);
        let at_kill = daemon.stats();
        let head = at_kill["head_seq"].as_u64().unwrap();
        embedding_behind += usize::from(at_kill["vectorized_seq"].as_u64().unwrap() < head);
        replica_behind += usize::from(replica_head(&rep_dir) < head);
        let before = acked.lock().unwrap().len();
        daemon.child.kill().unwrap(); // SIGKILL
        daemon.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        kills.push((moment.as_millis(), before));
    }

    // The last start: everything catches up.
    let daemon = AgentDaemon::start(&bus.address, &state, &config);
    let (converged, head, vectorized) = wait_converged(&daemon, &rep_dir, "after the last restart");
    let (ok, out, _) = daemon.gdbus_call("VerifyChain", &[]);
    assert!(ok && out.contains("(true,"), "{out}");
    assert_clean(&rep_dir);
    let acknowledged = assert_acknowledged_present(&state, &acked, "at the end");
    eprintln!(
        "{} kills at {:?} ms ({embedding_behind} with the embedding behind the head, {replica_behind} with the replica behind); \
         {acknowledged} events acknowledged, 0 missing; head {head}, vectorized {vectorized}, replica {}; \
         converged in {:.1} s after the last start (at most {:.1} s after any restart)",
        kills.len(),
        kills.iter().map(|k| k.0).collect::<Vec<_>>(),
        replica_head(&rep_dir),
        converged.as_secs_f64(),
        caught_up_after_restart.max(converged).as_secs_f64()
    );
    assert!(acknowledged >= rounds() * 5, "the clients were acknowledged: {acknowledged}");
}
