//! Replication: a critical event recorded on the primary → answerable by SemanticSearch on a
//! replica daemon fed over ssh (real sshd in a network namespace, restricted key), p50/p99;
//! and the bytes of one incremental send for the same batch on histories of 1k, 100k and 1M
//! events (must stay flat).

#[path = "../../tests/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

use crate::dbus::call_agent;
use crate::report::Report;
use crate::search::{base_vectors, synth};
use common::{AgentDaemon, BtrfsMount, PrivateBus, SshReplicaHost, gdbus_string, write_replica_config, write_streaming_config};
use ovs_port_agent::config::Config;
use ovs_port_agent::dataset::DataSet;
use ovs_port_agent::embed::{ModelFiles, SentenceModel};
use ovs_port_agent::layout::Layout;
use ovs_port_agent::metrics::median_p99;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn latency() {
    let mut report = Report::new("replicate-latency");
    let primary = BtrfsMount::new(600);
    let replica = BtrfsMount::new(600);
    let rep_dir = replica.path().join("rep");
    let forced = format!("{} replica-receive --dir {}", env!("CARGO_BIN_EXE_ovs-port-agent"), rep_dir.display());
    let host = SshReplicaHost::start(&forced);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!("\n[sources]\novsdb = false\nnetworkmanager = false\n{}", host.replica_toml(&[]));
    let config = write_streaming_config(tmp.path(), &extra);
    let daemon = AgentDaemon::start_in(&host.primary_ns, &bus.address, &primary.path().join("state"), &config);
    // Prime the replica so the replica daemon has a snapshot to open.
    let _ = daemon.gdbus_call("RecordEvent", &["interface:prime", "link.up", "{\"summary\":\"prime\"}", "critical"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ovs_port_agent::stream::receive::newest(&rep_dir).is_none() {
        assert!(Instant::now() < deadline, "the replica never received the first snapshot");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rep_bus = PrivateBus::open();
    let rep_tmp = tempfile::tempdir().unwrap();
    let rep_config = write_replica_config(rep_tmp.path(), &rep_dir);
    let rep_daemon = AgentDaemon::start(&rep_bus.address, &rep_tmp.path().join("unused"), &rep_config);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (primary_conn, replica_conn) = rt.block_on(async {
        (
            zbus::connection::Builder::address(bus.address.as_str()).unwrap().build().await.unwrap(),
            zbus::connection::Builder::address(rep_bus.address.as_str()).unwrap().build().await.unwrap(),
        )
    });
    let mut lat = Vec::new();
    for i in 0..40 {
        let summary = format!("bench critical event {i}: uplink eth{i} lost carrier on rack {i}");
        let t0 = Instant::now();
        let reply = rt
            .block_on(call_agent(
                &primary_conn,
                "RecordEvent",
                &(format!("interface:bench{i}"), "link.down", format!("{{\"summary\":\"{summary}\"}}"), "critical"),
            ))
            .unwrap();
        let hash: String = reply.body().deserialize().unwrap();
        loop {
            let reply = rt.block_on(call_agent(&replica_conn, "SemanticSearch", &(summary.as_str(), 1u32))).unwrap();
            let text: String = reply.body().deserialize().unwrap();
            if text.contains(&hash) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "event {i} never became answerable on the replica");
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (p50, p99) = median_p99(&mut lat);
    report.add("critical event recorded on the primary → found by SemanticSearch on the ssh replica, p50", p50, "ms");
    report.add("critical event recorded on the primary → found by SemanticSearch on the ssh replica, p99", p99, "ms");
    let (_, out, _) = daemon.gdbus_call("GetReplicaStatus", &[]);
    report.note("replica status after the run", serde_json::from_str::<serde_json::Value>(&gdbus_string(&out)).unwrap());
    drop(rep_daemon);
    drop(daemon);
    report.finish();
}

/// Bytes of `btrfs send -p` for one batch of 100 events after histories of 1k, 100k, 1M.
pub fn incremental_bytes() {
    let mut report = Report::new("replicate-incremental");
    let files = ModelFiles::locate(&crate::model_config()).expect("provision the model first");
    let base = base_vectors(&mut SentenceModel::load(&files, 256).unwrap());
    let fs = BtrfsMount::new(12 * 1024);
    for n in [1_000usize, 100_000, 1_000_000] {
        let root = fs.path().join(format!("h{n}"));
        let mut config = Config::default();
        config.agent.host = "bench".into();
        let layout = Layout::state(&root);
        let mut store = DataSet::open_writable(&layout, &config).unwrap();
        let append = |store: &mut DataSet, from: usize, to: usize| {
            for start in (from..to).step_by(10_000) {
                let events: Vec<_> = (start..(start + 10_000).min(to)).map(crate::ledger::event).collect();
                let records = store.ledger_mut().append_batch(&events).unwrap();
                store.index_mut().apply(&records).unwrap();
                let vectors: Vec<(u64, Arc<[f32]>)> = records.iter().map(|r| (r.seq, synth(&base, r.seq as usize).into())).collect();
                store.index_mut().put_vectors(&vectors, records.last().unwrap().seq).unwrap();
            }
            store.index_mut().connection().execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        };
        append(&mut store, 0, n);
        let snaps = root.join(".snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        let a = ovs_port_agent::stream::snapshot::snapshot_into(&layout.data, &snaps, n as u64).unwrap();
        append(&mut store, n, n + 100);
        let b = ovs_port_agent::stream::snapshot::snapshot_into(&layout.data, &snaps, n as u64 + 100).unwrap();
        let out = Command::new("btrfs").args(["send", "-q", "-p"]).arg(&a).arg(&b).output().unwrap();
        assert!(out.status.success());
        report.add(&format!("incremental send for 100 new events on a history of {n}"), out.stdout.len() as f64 / 1024.0, "KiB");
        let full = Command::new("btrfs").args(["send", "-q"]).arg(&b).output().unwrap();
        report.add(&format!("full send of that history ({n} events)"), full.stdout.len() as f64 / (1 << 20) as f64, "MiB");
        drop(store);
    }
    report.note(
        "not included",
        "the HNSW checkpoint: rewritten only when the vectors added since the last one reach 25% of it (amortized, not per batch)",
    );
    report.finish();
}
