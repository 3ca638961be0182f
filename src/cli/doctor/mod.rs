//! `doctor`: what is wrong with this host's set-up, each problem with the exact fix.
//! Quick (no chain verification: that is `verify`), read-only, and usable while the daemon
//! runs. Exit 0 when nothing failed (warnings allowed), 1 when a check failed.

mod host;

use super::client::{call, runtime};
use crate::anchor::audit::pinned_witnesses;
use crate::anchor::checkpoint;
use crate::config::Config;
use crate::dbus::connect;
use crate::layout::Layout;
use anyhow::Result;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The pins the provisioning script installs by (one source of truth).
const PROVISIONING_SCRIPT: &str = include_str!("../../../scripts/provision-model.sh");
/// A cosigned head older than this is not "recent".
const ANCHOR_STALE_S: u64 = 24 * 3600;
/// Free space below this fails; below 1 GiB or 5 % of the file system it warns.
const MIN_FREE_BYTES: u64 = 100 << 20;
const LOW_FREE_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self { name, level: Level::Ok, detail: detail.into(), fix: None }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name, level: Level::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name, level: Level::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

pub fn run(config: &Config, data_dir: &Path, bus: &str, json: bool) -> Result<ExitCode> {
    let layout = Layout::state(data_dir);
    let mut checks = vec![data_directory(config, &layout), disk_space(&layout)];
    checks.extend(model_files(config));
    checks.push(host::bus_policy(bus));
    let daemon = daemon_checks(bus);
    checks.extend(daemon.checks);
    checks.push(host::network_manager(config, bus));
    checks.push(host::ovsdb(config));
    checks.extend(host::replica_keys(config));
    checks.push(anchoring(config, &layout, daemon.replicas_reachable));
    checks.push(host::unit_hardening());
    if json {
        println!("{}", serde_json::to_string(&checks)?);
    } else {
        for c in &checks {
            let level = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{level}  {:<18} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("      {:<18} fix: {fix}", "");
            }
        }
    }
    Ok(if checks.iter().any(|c| c.level == Level::Fail) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn data_directory(config: &Config, layout: &Layout) -> Check {
    const NAME: &str = "data directory";
    let root = &layout.root;
    if !root.exists() {
        return Check::warn(
            NAME,
            format!("{} does not exist yet", root.display()),
            "start the daemon once (it creates it), or pass --data-dir",
        );
    }
    match crate::btrfs::is_btrfs(root) {
        Ok(true) if layout.data.exists() && !crate::btrfs::is_subvolume(&layout.data) => Check::fail(
            NAME,
            format!("{} is not a Btrfs subvolume: it cannot be snapshotted or streamed", layout.data.display()),
            format!(
                "stop the daemon, then: mv {0} {0}.old && btrfs subvolume create {0} && cp -a --reflink=auto {0}.old/. {0}/ (and start it again)",
                layout.data.display()
            ),
        ),
        Ok(true) => {
            Check::ok(NAME, format!("{} on Btrfs{}", root.display(), if layout.data.exists() { ", data is a subvolume" } else { "" }))
        }
        Ok(false) if config.agent.require_btrfs => Check::fail(
            NAME,
            format!("{} is not on Btrfs: snapshots and streaming need it", root.display()),
            "put the data directory on a Btrfs file system (scripts/dev-btrfs.sh makes a loop-mounted one for development), or set agent.require_btrfs = false to run without snapshots",
        ),
        Ok(false) => Check::warn(
            NAME,
            format!("{} is not on Btrfs (allowed by agent.require_btrfs = false)", root.display()),
            "use Btrfs in production: no snapshots or replicas without it",
        ),
        Err(e) => Check::fail(NAME, format!("cannot inspect {}: {e:#}", root.display()), "check the path and its permissions"),
    }
}

fn disk_space(layout: &Layout) -> Check {
    const NAME: &str = "disk space";
    let dir = if layout.root.exists() { layout.root.clone() } else { layout.root.parent().map(Path::to_owned).unwrap_or_default() };
    let Ok(vfs) = crate::btrfs::statvfs(&dir) else {
        return Check::warn(NAME, format!("cannot stat {}", dir.display()), "check that the data directory's parent exists");
    };
    let (free, total) = (vfs.f_bavail * vfs.f_frsize, vfs.f_blocks * vfs.f_frsize);
    let share = free as f64 / total.max(1) as f64;
    let detail = format!("{:.2} GiB free on {} ({:.0} %)", free as f64 / (1u64 << 30) as f64, dir.display(), share * 100.0);
    if free < MIN_FREE_BYTES {
        Check::fail(NAME, detail, "free space: recording stops when the disk is full (btrfs filesystem usage shows what holds it)")
    } else if free < LOW_FREE_BYTES || share < 0.05 {
        Check::warn(NAME, detail, "free space soon: below 100 MiB this check fails")
    } else {
        Check::ok(NAME, detail)
    }
}

/// `(installed path, pinned SHA-256)` for the runtime and each model file.
fn pins(config: &Config) -> Vec<(std::path::PathBuf, String)> {
    let block = PROVISIONING_SCRIPT.split("files=(").nth(1).and_then(|b| b.split(')').next()).unwrap_or("");
    block
        .lines()
        .filter_map(|l| {
            let (path, sha) = l.trim().trim_matches('"').split_once('|')?;
            let path = if path == "$runtime_library" {
                config.embedding.runtime_library.clone()
            } else {
                config.embedding.model_dir.join(path.strip_prefix("$model_dir/")?)
            };
            Some((path, sha.to_owned()))
        })
        .collect()
}

fn model_files(config: &Config) -> Vec<Check> {
    const NAME: &str = "model files";
    let fix = format!("scripts/provision-model.sh {} {}", config.embedding.model_dir.display(), config.embedding.runtime_library.display());
    let pins = pins(config);
    let mut wrong = Vec::new();
    for (path, pin) in &pins {
        match std::fs::read(path) {
            Ok(bytes) if hex::encode(Sha256::digest(&bytes)) == *pin => {}
            Ok(_) => wrong.push(format!("{} does not match its pin", path.display())),
            Err(_) => wrong.push(format!("{} is missing", path.display())),
        }
    }
    if pins.is_empty() {
        return vec![Check::warn(NAME, "no pins found in the provisioning script", "report this: the binary was built without them")];
    }
    match wrong.len() {
        0 => vec![Check::ok(NAME, format!("{} files match their SHA-256 pins", pins.len()))],
        1..=3 => vec![Check::fail(NAME, wrong.join("; "), fix)],
        n => vec![Check::fail(NAME, format!("{}; … and {} more", wrong[..2].join("; "), n - 2), fix)],
    }
}

struct DaemonChecks {
    checks: Vec<Check>,
    /// The replicas the daemon reports, when it answered.
    replicas_reachable: Option<Vec<serde_json::Value>>,
}

fn daemon_checks(bus: &str) -> DaemonChecks {
    const NAME: &str = "daemon";
    let asked = runtime().and_then(|rt| {
        rt.block_on(async {
            let conn = tokio::time::timeout(Duration::from_secs(5), connect(bus)).await??;
            let _: String = tokio::time::timeout(Duration::from_secs(5), call(&conn, "Ping", &())).await??;
            let replicas: String = tokio::time::timeout(Duration::from_secs(5), call(&conn, "GetReplicaStatus", &())).await??;
            Ok::<_, anyhow::Error>(serde_json::from_str::<Vec<serde_json::Value>>(&replicas)?)
        })
    });
    let replicas = match asked {
        Ok(r) => r,
        Err(e) => {
            let check = Check::warn(
                NAME,
                format!("not answering on {bus}: {e:#}"),
                "systemctl start ovs-port-agent (journalctl -u ovs-port-agent says why it stopped); the checks below read the files only",
            );
            return DaemonChecks { checks: vec![check], replicas_reachable: None };
        }
    };
    let mut checks = vec![Check::ok(NAME, format!("answering on {bus}"))];
    for r in &replicas {
        let name = r["name"].as_str().unwrap_or("?");
        let state = r["state"].as_str().unwrap_or("?");
        let error = r["last_error"].as_str().unwrap_or("");
        checks.push(match state {
            "healthy" => Check::ok("replica", format!("{name}: healthy, lag {} events", r["lag_events"])),
            "lagging" => Check::warn("replica", format!("{name}: lagging ({error})"), "it catches up by itself; ovs-port-agent sync-now to hurry it"),
            "failing" => Check::fail(
                "replica",
                format!("{name}: cannot take what it is sent: {error}"),
                "on the replica host: free space or fix its disk (btrfs filesystem usage); the primary retries by itself",
            ),
            "refused" => Check::fail(
                "replica",
                format!("{name}: refuses what it is sent: {error}"),
                "read the replica's rejections.jsonl; a changed history is refused by design (verify --anchored shows where), a changed key needs re-enrolment (docs/anchoring.md)",
            ),
            _ => Check::fail(
                "replica",
                format!("{name}: {state}: {error}"),
                "check the network, the replica's sshd and the restricted key (ssh -i KEY host replica-receive --help); the primary retries by itself",
            ),
        });
    }
    DaemonChecks { checks, replicas_reachable: Some(replicas) }
}

/// Whether a replica cosigned a head recently: without it, the history is checkable only
/// against itself (docs/anchoring.md).
fn anchoring(config: &Config, layout: &Layout, replicas: Option<Vec<serde_json::Value>>) -> Check {
    const NAME: &str = "anchoring";
    if config.stream.replicas.is_empty() && replicas.as_ref().is_none_or(Vec::is_empty) {
        return Check::warn(
            NAME,
            "no replicas: the history is not anchored outside this host (a re-sealed chain would verify)",
            "add a [[stream.replicas]] entry (docs/operations.md); its cosignatures anchor the history",
        );
    }
    let witnesses = match pinned_witnesses(&layout.root) {
        Ok(w) => w,
        Err(e) => return Check::fail(NAME, format!("{e:#}"), "remove or repair the named key file under keys/witnesses/"),
    };
    let (notes, _) = checkpoint::notes(&layout.data.join(checkpoint::DIR));
    let newest = notes
        .iter()
        .rev()
        .find_map(|(c, n)| witnesses.iter().find_map(|w| w.check(n).ok().flatten().map(|at| (c.seq, at, w.name.clone()))));
    let now = crate::event::now_unix_s();
    match newest {
        None => Check::warn(
            NAME,
            "no replica has cosigned a head yet",
            "see the replica checks above; a healthy replica cosigns each snapshot it verifies",
        ),
        Some((seq, at, by)) if now.saturating_sub(at) > ANCHOR_STALE_S => Check::warn(
            NAME,
            format!("the newest cosigned head is seq {seq}, by {by}, {} h ago", now.saturating_sub(at) / 3600),
            "see the replica checks above: nothing recent is anchored outside this host",
        ),
        Some((seq, at, by)) => Check::ok(NAME, format!("seq {seq} cosigned by {by} {} s ago", now.saturating_sub(at))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pins_are_read_from_the_provisioning_script() {
        let config = Config::default();
        let pins = pins(&config);
        assert!(pins.len() >= 6, "{pins:?}");
        assert!(pins.iter().any(|(p, _)| *p == config.embedding.runtime_library));
        assert!(pins.iter().all(|(_, sha)| sha.len() == 64));
    }
}
