//! Helpers shared by the integration tests, one file per real part: `btrfs` (loop-mounted
//! file systems), `bus` (private dbus-daemons), `daemon` (the agent under test), `netns`,
//! `ovs`, `nm` and `sshd` (a replica host). This file holds the binary, sample events and
//! configs, and reading the ledger.
#![allow(dead_code, unused_imports)]

mod btrfs;
mod bus;
mod daemon;
pub mod history_gen;
mod netns;
mod nm;
mod ovs;
mod replica;
pub mod search_eval;
mod sshd;

pub use btrfs::BtrfsMount;
pub use bus::PrivateBus;
pub use daemon::{
    AgentDaemon, gdbus_string, local_replica_toml, quick_local_stream_toml, start_fleet_asker, write_daemon_config, write_replica_config,
    write_streaming_config, write_streaming_config_as,
};
pub use netns::Netns;
pub use nm::NmSandbox;
pub use ovs::OvsSandbox;
pub use replica::{assert_clean, replica_head, replica_state, wait_until};
pub use sshd::SshReplicaHost;

use ovs_port_agent::event::{NewEvent, Priority};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ovs-port-agent` binary cargo built for these tests.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ovs-port-agent"))
}

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
pub fn agent(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_bin()).args(args).output().expect("running ovs-port-agent");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A varied, realistic event for element number `i`.
pub fn sample_event(i: usize) -> NewEvent {
    let iface = format!("veth{}", i % 17);
    match i % 5 {
        0 => NewEvent::new(
            "nm",
            &format!("interface:{iface}"),
            "state.changed",
            Priority::Medium,
            json!({"before": {"state": "activated"}, "after": {"state": "disconnected"}, "changed": ["state"], "reason": "carrier-changed"}),
        )
        .with_summary(format!("{iface} went from activated to disconnected (carrier changed)")),
        1 => NewEvent::new(
            "ovsdb",
            &format!("bridge:ovsbr{}", i % 3),
            "port.added",
            Priority::Medium,
            json!({"after": {"ports": [format!("p{i}")]}, "changed": ["ports"]}),
        )
        .with_summary(format!("port p{i} added to ovsbr{}", i % 3)),
        2 => NewEvent::new(
            "ovsdb",
            &format!("ovs-interface:{iface}"),
            "link.down",
            Priority::High,
            json!({"before": {"link_state": "up"}, "after": {"link_state": "down"}, "changed": ["link_state"]}),
        )
        .with_summary(format!("{iface} link down")),
        3 => NewEvent::new(
            "nm",
            &format!("connection:{:08x}-0000-4000-8000-000000000000", i % 11),
            "settings.updated",
            Priority::Low,
            json!({"before": {"ipv4.mtu": 1500}, "after": {"ipv4.mtu": 9000}, "changed": ["ipv4.mtu"], "note": "é ✓ \"quoted\"\ttab"}),
        )
        .with_summary("MTU raised to 9000"),
        _ => NewEvent::new(
            "nm",
            "nm:manager",
            "connectivity.changed",
            Priority::Critical,
            json!({"before": {"connectivity": "full"}, "after": {"connectivity": "none"}, "float": 0.1 + i as f64}),
        )
        .with_summary("connectivity lost"),
    }
}

/// Config for tests on a plain temp dir (no Btrfs needed).
pub fn plain_config() -> ovs_port_agent::config::Config {
    let mut config = ovs_port_agent::config::Config::default();
    config.agent.require_btrfs = false;
    config.agent.host = "test-host".into();
    config
}

/// Embedding settings pointing at the project-local model that `scripts/test.sh`
/// provisions (`.dev/model`, `.dev/lib`), or at `OVS_PORT_AGENT_MODEL_DIR` /
/// `OVS_PORT_AGENT_RUNTIME_LIBRARY`.
pub fn model_config() -> ovs_port_agent::config::EmbeddingConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = ovs_port_agent::config::EmbeddingConfig::default();
    config.model_dir = std::env::var_os("OVS_PORT_AGENT_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| root.join(".dev/model"));
    config.runtime_library = std::env::var_os("OVS_PORT_AGENT_RUNTIME_LIBRARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".dev/lib/libonnxruntime.so.1.24.4"));
    config.workers = 2;
    config
}

/// Events of the ledger in a state directory, read offline (seq order).
pub fn ledger_records(state: &Path) -> Vec<ovs_port_agent::ledger::Record> {
    let mut out = Vec::new();
    ovs_port_agent::ledger::scan(&state.join("data/ledger"), |r| out.push(r.clone())).unwrap();
    out
}

/// Polls `check` over the ledger until it holds (or panics after `secs`).
pub fn wait_for_records(
    state: &Path,
    secs: u64,
    what: &str,
    check: impl Fn(&[ovs_port_agent::ledger::Record]) -> bool,
) -> Vec<ovs_port_agent::ledger::Record> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let records = ledger_records(state);
        if check(&records) {
            return records;
        }
        if std::time::Instant::now() > deadline {
            let dump: Vec<String> = records.iter().map(|r| format!("{} {} {} {}", r.seq, r.element_id, r.action, r.summary)).collect();
            panic!("timed out waiting for {what}; ledger:\n{}", dump.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
