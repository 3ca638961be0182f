//! The Debian package (scripts/package-deb.sh, cargo-deb) and scripts/install: every file with
//! its mode and owner, the conffile, and a real install, upgrade, removal and purge with dpkg
//! into a scratch root (`dpkg --root`, maintainer scripts run with `DPKG_ROOT`): on Btrfs the
//! postinst creates the history's subvolume, elsewhere it says what to do; removal and purge
//! keep the history.

mod common;

use common::BtrfsMount;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// Builds the package from the binary the tests built (no second build).
fn build_package() -> PathBuf {
    let out = run(Command::new("bash").arg(repo().join("scripts/package-deb.sh")).args([
        "--fast",
        "--binary",
        env!("CARGO_BIN_EXE_ovs-port-agent"),
    ]));
    let deb = out.lines().rev().find(|l| l.ends_with(".deb")).unwrap_or_else(|| panic!("no package path in: {out}"));
    repo().join(deb.trim())
}

/// The files every install holds (path, mode).
fn expected_files() -> Vec<(String, &'static str)> {
    let mut files: Vec<(String, &'static str)> = vec![("usr/bin/ovs-port-agent".into(), "-rwxr-xr-x")];
    for path in [
        "usr/lib/systemd/system/ovs-port-agent.service",
        "usr/lib/systemd/system/ovs-port-agent-replica.service",
        "usr/share/dbus-1/system.d/dev.ovs.PortAgent1.conf",
        "usr/share/dbus-1/system-services/dev.ovs.PortAgent1.service",
        "usr/share/dbus-1/interfaces/dev.ovs.PortAgent1.xml",
        "etc/ovs-port-agent/config.toml",
        "usr/lib/ovs-port-agent/libonnxruntime.so.1.24.4",
        "usr/lib/ovs-port-agent/model/model.onnx",
        "usr/lib/ovs-port-agent/model/tokenizer.json",
        "usr/lib/ovs-port-agent/SHA256SUMS",
        "usr/share/man/man1/ovs-port-agent.1.gz",
        "usr/share/man/man1/ovs-port-agent-search.1.gz",
        "usr/share/man/man1/ovs-port-agent-doctor.1.gz",
        "usr/share/bash-completion/completions/ovs-port-agent",
        "usr/share/zsh/vendor-completions/_ovs-port-agent",
        "usr/share/fish/vendor_completions.d/ovs-port-agent.fish",
        "usr/share/doc/ovs-port-agent/README.md",
        "usr/share/doc/ovs-port-agent/operations.md",
    ] {
        files.push((path.into(), "-rw-r--r--"));
    }
    files
}

/// An empty dpkg database under `root`, for `dpkg --root`.
fn scratch_root(root: &Path) {
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/lib"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
}

fn dpkg(root: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display()))
        .args(["--force-script-chrootless", "--force-depends", "--force-confold", "--log=/dev/null"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd)
}

/// One package build for both scratch roots (the build stages into target/, shared).
#[test]
fn the_package_holds_every_file_and_installs_upgrades_and_purges_into_scratch_roots() {
    let deb = build_package();
    let deb = deb.to_str().unwrap();
    check_contents(deb);
    install_on_btrfs(deb);
    install_elsewhere(deb);
}

fn check_contents(deb: &str) {
    let listing = run(Command::new("dpkg-deb").args(["-c", deb]));
    for (path, mode) in expected_files() {
        let line = listing.lines().find(|l| l.ends_with(&format!("./{path}"))).unwrap_or_else(|| panic!("{path} is not in the package"));
        assert!(line.starts_with(mode), "{path}: {line}");
        assert!(line.contains(" 0/0 "), "{path} belongs to root: {line}");
    }
    let man_pages = listing.lines().filter(|l| l.contains("/man1/") && l.ends_with(".1.gz")).count();
    assert!(man_pages >= 19, "a man page per command, not {man_pages}");
    assert_eq!(run(Command::new("dpkg-deb").args(["-I", deb, "conffiles"])).trim(), "/etc/ovs-port-agent/config.toml");
    let depends = run(Command::new("dpkg-deb").args(["-f", deb, "Depends"]));
    assert!(depends.contains("btrfs-progs") && depends.contains("dbus"), "{depends}");
}

/// On Btrfs the postinst creates the history's subvolume; upgrades keep an edited config;
/// removal and purge keep the history.
fn install_on_btrfs(deb: &str) {
    let fs = BtrfsMount::new(400);
    let root = fs.path().join("root");
    scratch_root(&root);
    dpkg(&root, &["-i", deb]);
    let data = root.join("var/lib/ovs-port-agent/data");
    run(Command::new("btrfs").args(["subvolume", "show"]).arg(&data));
    run(Command::new("sha256sum").args(["--quiet", "-c", "SHA256SUMS"]).current_dir(root.join("usr/lib/ovs-port-agent")));
    let version = run(Command::new(root.join("usr/bin/ovs-port-agent")).arg("--version"));
    assert!(version.starts_with("ovs-port-agent "), "{version}");

    // An operator's edit to the config survives an upgrade (reinstall) and a removal.
    let config = root.join("etc/ovs-port-agent/config.toml");
    let edited = format!("{}\n# edited by the operator\n", std::fs::read_to_string(&config).unwrap());
    std::fs::write(&config, &edited).unwrap();
    std::fs::write(data.join("ledger-marker"), "history").unwrap();
    dpkg(&root, &["-i", deb]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited, "a conffile is never overwritten");
    dpkg(&root, &["-r", "ovs-port-agent"]);
    assert!(!root.join("usr/bin/ovs-port-agent").exists());
    assert!(config.exists() && data.join("ledger-marker").exists(), "removal keeps the config and the history");
    let purged = dpkg(&root, &["-P", "ovs-port-agent"]);
    assert!(!config.exists(), "purge removes the config");
    assert!(data.join("ledger-marker").exists(), "purge keeps the history");
    assert!(purged.contains("is kept"), "and says so: {purged}");
}

/// Without Btrfs the postinst says what to do and creates no subvolume.
fn install_elsewhere(deb: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    scratch_root(&root);
    let fstype = run(Command::new("stat").args(["-f", "-c", "%T"]).arg(tmp.path()));
    let out = dpkg(&root, &["-i", deb]);
    if fstype.trim() != "btrfs" {
        assert!(out.contains("not Btrfs") && out.contains("require_btrfs = false"), "{out}");
        assert!(!root.join("var/lib/ovs-port-agent/data").exists());
    }
    assert_eq!(
        std::fs::metadata(root.join("var/lib/ovs-port-agent")).unwrap().permissions().mode() & 0o777,
        0o700,
        "the state directory is root's alone"
    );
}

#[test]
fn scripts_install_lays_out_the_same_files_and_keeps_an_edited_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    let install = || {
        run(Command::new("bash")
            .arg(repo().join("scripts/install"))
            .args(["--binary", env!("CARGO_BIN_EXE_ovs-port-agent")])
            .env("DESTDIR", &dest))
    };
    install();
    for (path, mode) in expected_files() {
        let meta = std::fs::metadata(dest.join(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let want = if mode == "-rwxr-xr-x" { 0o755 } else { 0o644 };
        assert_eq!(meta.permissions().mode() & 0o777, want, "{path}");
    }
    std::fs::write(dest.join("etc/ovs-port-agent/config.toml"), "# mine\n").unwrap();
    let again = install();
    assert!(again.contains("kept your"), "{again}");
    assert_eq!(std::fs::read_to_string(dest.join("etc/ovs-port-agent/config.toml")).unwrap(), "# mine\n");
    assert!(dest.join("etc/ovs-port-agent/config.toml.new").exists());
}

use std::os::unix::fs::PermissionsExt;
