//! `ovs-port-agent daemon` under test, its config files, and reading gdbus output.

use super::{Netns, agent_bin, model_config};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A dev config file for a daemon under test (its data need not be on Btrfs).
pub fn write_daemon_config(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, "require_btrfs = false", extra)
}

/// The config of a primary that streams: its data must be on Btrfs.
pub fn write_streaming_config(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, "require_btrfs = true", extra)
}

/// [`write_streaming_config`] for a primary named `host` (one of a fleet's origins).
pub fn write_streaming_config_as(dir: &Path, host: &str, extra: &str) -> PathBuf {
    write_config_as(dir, host, "require_btrfs = true", extra)
}

/// The config of a replica daemon serving the snapshots received in `replica_dir`.
pub fn write_replica_config(dir: &Path, replica_dir: &Path) -> PathBuf {
    write_config(dir, "require_btrfs = false\nrole = \"replica\"", &format!("\n[replica]\ndir = \"{}\"\n", replica_dir.display()))
}

fn write_config(dir: &Path, agent: &str, extra: &str) -> PathBuf {
    write_config_as(dir, "test-host", agent, extra)
}

fn write_config_as(dir: &Path, host: &str, agent: &str, extra: &str) -> PathBuf {
    let model = model_config();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\n{agent}\nhost = \"{host}\"\n\n[embedding]\nmodel_dir = \"{}\"\nruntime_library = \"{}\"\nworkers = 2\n\n[vector]\ncheckpoint_min_vectors = 200\n{extra}",
            model.model_dir.display(),
            model.runtime_library.display()
        ),
    )
    .unwrap();
    path
}

/// A `[[stream.replicas]]` table for a replica receiving into `dir` on this host.
pub fn local_replica_toml(name: &str, dir: &Path) -> String {
    format!("\n[[stream.replicas]]\nname = \"{name}\"\ntransport = \"local\"\nremote_dir = \"{}\"\n", dir.display())
}

/// The config additions of a primary without sources that snapshots within 100–300 ms and
/// streams to one local replica in `dir` (named `local1`).
pub fn quick_local_stream_toml(dir: &Path) -> String {
    format!(
        "\n[sources]\novsdb = false\nnetworkmanager = false\n\n[stream]\nhigh_delay_ms = 100\nmedium_delay_ms = 200\nlow_delay_ms = 300\n{}",
        local_replica_toml("local1", dir)
    )
}

/// `ovs-port-agent daemon` running against a private bus; SIGTERMed on drop.
pub struct AgentDaemon {
    pub child: std::process::Child,
    pub bus: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
}

impl AgentDaemon {
    pub fn start(bus: &str, data_dir: &Path, config: &Path) -> Self {
        Self::spawn(Command::new(agent_bin()), bus, data_dir, config)
    }

    /// Started with extra environment variables (fault injection).
    pub fn start_with_env(bus: &str, data_dir: &Path, config: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(agent_bin());
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, bus, data_dir, config)
    }

    /// The daemon's resident memory now and at its peak (VmRSS, VmHWM), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `GetBlockchainStats`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let (ok, out, err) = self.gdbus_call("GetBlockchainStats", &[]);
        assert!(ok, "{err}");
        serde_json::from_str(&gdbus_string(&out)).unwrap()
    }

    /// The daemon inside a network namespace (its ssh sessions then leave from there).
    pub fn start_in(netns: &Netns, bus: &str, data_dir: &Path, config: &Path) -> Self {
        Self::spawn(netns.command(agent_bin().to_str().unwrap()), bus, data_dir, config)
    }

    /// Started by `cmd` (a wrapper such as `unshare … ovs-port-agent`), the daemon's
    /// arguments appended.
    pub fn spawn(cmd: Command, bus: &str, data_dir: &Path, config: &Path) -> Self {
        Self::spawn_within(cmd, bus, data_dir, config, std::time::Duration::from_secs(60))
    }

    /// [`spawn`](Self::spawn), waiting up to `within` for the daemon to answer (a replica
    /// taking in many origins the first time).
    pub fn spawn_within(mut cmd: Command, bus: &str, data_dir: &Path, config: &Path, within: std::time::Duration) -> Self {
        let child = cmd
            .args(["--config"])
            .arg(config)
            .args(["daemon", "--bus", bus, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", std::env::var("TEST_DAEMON_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("starting the daemon");
        let daemon = Self { child, bus: bus.to_owned(), data_dir: data_dir.to_owned(), config: config.to_owned() };
        daemon.wait_ready(within);
        daemon
    }

    fn wait_ready(&self, within: std::time::Duration) {
        for _ in 0..within.as_millis() / 100 {
            if self.busctl(&["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "Ping"]).0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the daemon did not own dev.ovs.PortAgent1 within {within:?}");
    }

    /// `busctl --address=BUS ARGS…` → (success, stdout, stderr).
    pub fn busctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("busctl").arg(format!("--address={}", self.bus)).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `gdbus call --address BUS --dest … --object-path … --method dev.ovs.PortAgent1.METHOD ARGS…`.
    pub fn gdbus_call(&self, method: &str, args: &[&str]) -> (bool, String, String) {
        self.gdbus_call_at("/dev/ovs/PortAgent1", method, args)
    }

    /// [`gdbus_call`](Self::gdbus_call) on another object of the daemon (a replica's
    /// per-origin object).
    pub fn gdbus_call_at(&self, path: &str, method: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("gdbus")
            .args(["call", "--address", &self.bus, "--dest", "dev.ovs.PortAgent1", "--object-path", path, "--method"])
            .arg(format!("dev.ovs.PortAgent1.{method}"))
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// SIGTERM, then wait; returns how long the daemon took to exit and its status.
    pub fn stop(&mut self) -> (std::time::Duration, std::process::ExitStatus) {
        let started = std::time::Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        (started.elapsed(), status)
    }
}

impl Drop for AgentDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// The string inside gdbus's `('…',)` output (GVariant text quotes with `'`, or with `"`
/// when the string holds a `'`; a backslash escapes the next character).
pub fn gdbus_string(out: &str) -> String {
    let t = out.trim();
    let inner = t
        .strip_prefix("('")
        .and_then(|s| s.strip_suffix("',)"))
        .or_else(|| t.strip_prefix("(\"").and_then(|s| s.strip_suffix("\",)")))
        .unwrap_or_else(|| panic!("unexpected gdbus output {t}"));
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        text.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
    }
    text
}

/// A daemon in `netns` (a replica over an empty directory) whose config holds the fleet of
/// `fleet_config` (`[fleet]` and `[[fleet.hosts]]`): it answers `FleetSearch`. Keep the
/// returned bus and directory as long as the daemon.
pub fn start_fleet_asker(netns: &Netns, fleet_config: &Path) -> (AgentDaemon, super::PrivateBus, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_replica_config(dir.path(), &dir.path().join("empty"));
    let fleet = std::fs::read_to_string(fleet_config).unwrap();
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap() + "\n" + &fleet).unwrap();
    let bus = super::PrivateBus::open();
    let daemon = AgentDaemon::start_in(netns, &bus.address, &dir.path().join("unused"), &config);
    (daemon, bus, dir)
}
