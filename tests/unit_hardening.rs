//! The shipped systemd units: valid (`systemd-analyze verify`), and as hardened as the issue
//! asks (`systemd-analyze security --offline`, the overall exposure at most 2.5 for the
//! primary, lower for the replica role, which needs no capability and no network).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd").join(name)
}

/// A copy of a unit whose ExecStart names the binary just built (verify checks that the
/// program exists), alone in its directory (both units own the same bus name).
fn installed_copy(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit(name)).unwrap();
    let text = text.replace("/usr/bin/ovs-port-agent", env!("CARGO_BIN_EXE_ovs-port-agent"));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The overall exposure (0.0 to 10.0) systemd-analyze gives a unit file.
fn exposure(path: &Path) -> f64 {
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("no exposure in {text}"));
    line.split(':').nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn check(name: &str, max_exposure: f64) {
    let dir = tempfile::tempdir().unwrap();
    let path = installed_copy(name, dir.path());
    let verify = Command::new("systemd-analyze").args(["verify"]).arg(&path).output().unwrap();
    assert!(verify.status.success() && verify.stderr.is_empty(), "{name}: {}", String::from_utf8_lossy(&verify.stderr));
    let level = exposure(&path);
    assert!(level <= max_exposure, "{name}: exposure {level} > {max_exposure}");
    // The same limit as the command operators and CI use: --threshold counts in tenths.
    let threshold = format!("--threshold={}", (max_exposure * 10.0).round() as u32);
    let gate = Command::new("systemd-analyze").args(["security", "--offline=yes", &threshold]).arg(&path).output().unwrap();
    assert!(gate.status.success(), "{name}: systemd-analyze security {threshold} failed");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("Type=dbus") && text.contains("BusName=dev.ovs.PortAgent1"), "{name}: ready when the name is owned");
}

#[test]
fn the_primary_unit_is_valid_and_exposed_at_most_2_5() {
    check("ovs-port-agent.service", 2.5);
}

#[test]
fn the_replica_unit_is_valid_and_needs_no_capability_or_network() {
    check("ovs-port-agent-replica.service", 1.0);
    let text = std::fs::read_to_string(unit("ovs-port-agent-replica.service")).unwrap();
    assert!(text.contains("CapabilityBoundingSet=\n") && text.contains("PrivateNetwork=yes"));
}

/// The unit's `CapabilityBoundingSet=CAP_SYS_ADMIN`, applied with `setpriv` around what the
/// daemon runs: snapshot, send, delete of a snapshot and reading root's 0600 files all work
/// with it, and send and delete fail without it (so the one capability is needed, and enough).
#[test]
fn cap_sys_admin_alone_snapshots_sends_and_prunes_and_nothing_less_does() {
    let fs = common::BtrfsMount::new(200);
    let data = fs.path().join("data");
    let ok = Command::new("btrfs").args(["-q", "subvolume", "create"]).arg(&data).status().unwrap();
    assert!(ok.success());
    std::fs::write(data.join("ledger"), "records").unwrap();
    std::fs::set_permissions(data.join("ledger"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let snapshot = fs.path().join("data@1");
    let under = |bounding: &str, args: &[&str]| {
        Command::new("setpriv").arg(format!("--bounding-set={bounding}")).arg("--").args(args).output().unwrap().status.success()
    };
    let (data_s, snap_s) = (data.to_str().unwrap(), snapshot.to_str().unwrap());
    for (bounding, enough) in [("-all,+sys_admin", true), ("-all", false)] {
        assert!(under(bounding, &["btrfs", "-q", "subvolume", "snapshot", "-r", data_s, snap_s]), "{bounding}: snapshot");
        assert!(under(bounding, &["cat", &format!("{data_s}/ledger")]), "{bounding}: root's own files");
        let sent = under(bounding, &["btrfs", "-q", "send", "-f", "/dev/null", snap_s]);
        let deleted = under(bounding, &["btrfs", "-q", "subvolume", "delete", snap_s]);
        assert_eq!((sent, deleted), (enough, enough), "{bounding}: send and delete");
        if !deleted {
            assert!(Command::new("btrfs").args(["-q", "subvolume", "delete", snap_s]).status().unwrap().success());
        }
    }
}
