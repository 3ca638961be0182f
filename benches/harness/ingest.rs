//! Ingestion: a change committed to the real ovsdb-server → its event durable in the ledger
//! (p50/p99), and the sustained rate at which the OVS source normalises and appends a stream
//! of changes. Changes are committed with our own OVSDB `transact` calls so the clock starts
//! exactly when the change is sent.

use crate::report::Report;
use ovs_port_agent::config::Config;
use ovs_port_agent::engine::Engine;
use ovs_port_agent::layout::Layout;
use ovs_port_agent::metrics::median_p99;
use ovs_port_agent::sources::Recorder;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn transact(i: usize) -> Vec<u8> {
    let op = json!({"op": "update", "table": "Open_vSwitch", "where": [], "row": {"external_ids": ["map", [["bench", i.to_string()]]]}});
    json!({"method": "transact", "params": ["Open_vSwitch", op], "id": i}).to_string().into_bytes()
}

/// How snapshots are streamed during a run.
#[derive(Clone, Copy, PartialEq)]
enum Streaming {
    Off,
    /// The shipped trigger policy (these medium/low events: batched by count and delay).
    DefaultTriggers,
    /// A snapshot whenever anything new is vectorized: the most the streamer can interfere.
    EveryVector,
}

pub fn run(dir: &Path) {
    let mut report = Report::new("ingest");
    let off = measure(dir, Streaming::Off, &mut report);
    let default = measure(dir, Streaming::DefaultTriggers, &mut report);
    let every = measure(dir, Streaming::EveryVector, &mut report);
    report.add("sustained rate, streaming on (default triggers) ÷ off", default / off, "");
    report.add("sustained rate, streaming on (a snapshot per vector batch) ÷ off", every / off, "");
    report.finish();
}

/// One run, sending snapshots to a local replica while the changes arrive unless `Off`.
/// Returns the sustained rate.
fn measure(dir: &Path, mode: Streaming, report: &mut Report) -> f64 {
    let streaming = mode != Streaming::Off;
    let (label, tag) = match mode {
        Streaming::Off => ("streaming off", "off"),
        Streaming::DefaultTriggers => ("streaming on, default triggers", "default"),
        Streaming::EveryVector => ("streaming on, a snapshot per vector batch", "every"),
    };
    let ovs = tempfile::tempdir().unwrap();
    let db = ovs.path().join("conf.db");
    let sock = ovs.path().join("db.sock");
    let ok = Command::new("ovsdb-tool").arg("create").arg(&db).arg("/usr/share/openvswitch/vswitch.ovsschema").status().unwrap().success()
        && Command::new("ovsdb-server")
            .arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .args(["--detach", "--no-chdir"])
            .arg(format!("--pidfile={}", ovs.path().join("pid").display()))
            .arg(format!("--unixctl={}", ovs.path().join("ctl").display()))
            .status()
            .unwrap()
            .success()
        && Command::new("ovs-vsctl").arg(format!("--db=unix:{}", sock.display())).args(["--no-wait", "init"]).status().unwrap().success();
    assert!(ok, "could not start ovsdb-server");

    let mut config = Config::default();
    config.embedding = crate::model_config();
    let state = dir.join(format!("ingest-state-{tag}"));
    let replica_dir = dir.join(format!("ingest-replica-{tag}"));
    if mode == Streaming::EveryVector {
        config.stream.medium_delay_ms = 0;
        config.stream.low_delay_ms = 0;
        config.stream.high_delay_ms = 0;
    }
    if streaming {
        config.stream.replicas.push(ovs_port_agent::config::ReplicaConfig {
            name: "local".into(),
            transport: ovs_port_agent::config::Transport::Local,
            destination: String::new(),
            remote_dir: replica_dir.clone(),
            identity: Default::default(),
            known_hosts: Default::default(),
            ssh_options: Vec::new(),
            remote_command: env!("CARGO_BIN_EXE_ovs-port-agent").into(),
            compression: "off".into(),
            per_origin: false,
        });
    }
    let _ = std::fs::remove_dir_all(&state);
    let engine = Arc::new(Engine::open(&Layout::state(&state), &config).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (lat, rate) = rt.block_on(async {
        let mut supervisor = ovs_port_agent::supervisor::Supervisor::new();
        if streaming {
            ovs_port_agent::stream::streamer::start(&mut supervisor, engine.clone(), &config, Default::default()).unwrap();
        }
        let recorder = Recorder::new(&config.sources);
        let sink = recorder.sink("ovsdb");
        tokio::spawn(ovs_port_agent::sources::ovsdb::run(sock.clone(), sink, engine.clone()));
        tokio::spawn(recorder.run(engine.clone(), Default::default(), ovs_port_agent::supervisor::Stopping::never()));
        let mut records = engine.subscribe();
        // Wait for the baseline.
        tokio::time::timeout(Duration::from_secs(30), records.recv()).await.expect("baseline").unwrap();
        let mut conn = tokio::net::UnixStream::connect(&sock).await.unwrap();
        let (mut reader, mut writer) = conn.split();
        let drain = async {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                use tokio::io::AsyncReadExt;
                if reader.read(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
        };
        let work = async {
            let mut lat = Vec::new();
            for i in 1..=300usize {
                let t0 = Instant::now();
                writer.write_all(&transact(i)).await.unwrap();
                loop {
                    let r = records.recv().await.unwrap();
                    if r.details["after"]["external_ids"]["bench"] == i.to_string() {
                        break;
                    }
                }
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            // Sustained: 5,000 changes sent back to back, three times; the median rate (one
            // burst lasts well under a second, so a single one is at the mercy of the scheduler).
            let n = 5000usize;
            let mut rates = Vec::new();
            for round in 0..3usize {
                let first = 1000 + round * n;
                let t0 = Instant::now();
                for i in first..first + n {
                    writer.write_all(&transact(i)).await.unwrap();
                }
                let last = (first + n - 1).to_string();
                let mut seen = 0usize;
                loop {
                    // A slow reader of the notifications may skip some; they were recorded all the same.
                    let r = match records.recv().await {
                        Ok(r) => r,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            seen += n as usize;
                            continue;
                        }
                        Err(e) => panic!("{e}"),
                    };
                    if r.source == "ovsdb" {
                        seen += 1;
                    }
                    if r.details["after"]["external_ids"]["bench"] == last {
                        break;
                    }
                }
                rates.push(seen as f64 / t0.elapsed().as_secs_f64());
            }
            rates.sort_by(f64::total_cmp);
            (lat, rates[1])
        };
        tokio::select! {
            r = work => r,
            _ = drain => panic!("ovsdb-server closed the connection"),
        }
    });
    let mut lat = lat;
    let (p50, p99) = median_p99(&mut lat);
    report.add(&format!("OVSDB change sent → event durable in the ledger, p50 ({label})"), p50, "ms");
    report.add(&format!("OVSDB change sent → event durable in the ledger, p99 ({label})"), p99, "ms");
    report.add(&format!("sustained: OVSDB changes normalised and appended, median of 3 × 5,000 back to back ({label})"), rate, "events/s");
    if streaming {
        let received = ovs_port_agent::stream::receive::ReplicaState::load(&replica_dir);
        report.note("replica head at the end of the streaming run", received.head_seq);
        report.note(
            "snapshots kept on the primary at the end (older ones pruned)",
            ovs_port_agent::stream::snapshot::list(&state.join(".snapshots")).len(),
        );
    }
    report.note("path", "our transact → ovsdb-server → monitor update → OVS source → queue → group commit (fsync) → broadcast");
    engine.shutdown();
    drop(rt);
    if let Ok(pid) = std::fs::read_to_string(ovs.path().join("pid")) {
        unsafe { libc::kill(pid.trim().parse().unwrap_or(0), libc::SIGTERM) };
    }
    for (_, snap) in ovs_port_agent::stream::snapshot::list(&replica_dir)
        .into_iter()
        .chain(ovs_port_agent::stream::snapshot::list(&state.join(".snapshots")))
    {
        let _ = ovs_port_agent::stream::snapshot::delete(&snap);
    }
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&replica_dir);
    rate
}
