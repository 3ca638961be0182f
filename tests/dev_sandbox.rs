//! The quick start's sandbox (scripts/dev-sandbox.sh, used by scripts/dev-run.sh where no
//! NetworkManager runs): the real NetworkManager and Open vSwitch in a namespace with a private
//! bus, and the daemon recording the changes the quick start tells the operator to make.

mod common;

use common::{AgentDaemon, gdbus_string, write_daemon_config};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev-sandbox.sh")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// Stops the sandbox however the test ends.
struct Sandbox(PathBuf);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("down").arg(&self.0).status();
    }
}

#[test]
fn the_sandbox_runs_real_networkmanager_and_ovs_and_the_daemon_records_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sbx");
    let sandbox = Sandbox(dir.clone());
    run(Command::new("bash").arg(script()).arg("up").arg(&dir));
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    let value = |key: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_owned();
    let (bus, ovsdb, netns) = (value("BUS"), value("OVSDB"), value("NETNS"));

    let config = write_daemon_config(tmp.path(), &format!("\n[sources]\nnm_bus = \"{bus}\"\novsdb_socket = \"{ovsdb}\"\n"));
    let daemon = AgentDaemon::start(&bus, &tmp.path().join("state"), &config);
    // The changes the quick start prints.
    run(Command::new("ip").args(["-n", &netns, "link", "add", "veth-lab0", "type", "veth", "peer", "name", "veth-lab1"]));
    run(Command::new("ip").args(["-n", &netns, "link", "set", "veth-lab1", "up"]));
    let nmcli = |args: &[&str]| run(Command::new("nmcli").args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &bus));
    nmcli(&[
        "connection",
        "add",
        "type",
        "ethernet",
        "ifname",
        "veth-lab0",
        "con-name",
        "lab",
        "ipv4.method",
        "manual",
        "ipv4.addresses",
        "10.99.0.1/24",
    ]);
    nmcli(&["connection", "up", "lab"]);
    let vsctl = |args: &[&str]| run(Command::new("ovs-vsctl").arg(format!("--db=unix:{ovsdb}")).arg("--timeout=20").args(args));
    vsctl(&["add-br", "br-lab", "--", "set", "bridge", "br-lab", "datapath_type=netdev"]);
    vsctl(&["add-port", "br-lab", "tap-lab", "--", "set", "interface", "tap-lab", "type=internal"]);
    vsctl(&["set", "port", "tap-lab", "tag=100"]);
    run(Command::new("ip").args(["-n", &netns, "link", "set", "veth-lab1", "down"]));

    let history = |element: &str| {
        let (_, out, _) = daemon.gdbus_call("GetElementHistory", &[element, "50"]);
        gdbus_string(&out)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (veth, tap) = (history("interface:veth-lab0"), history("ovs-port:tap-lab"));
        if veth.contains("link.down") && veth.contains("activated") && tap.contains("100") {
            break;
        }
        assert!(Instant::now() < deadline, "not all recorded: veth-lab0 {veth}, tap-lab {tap}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon);
    drop(sandbox);
    let namespaces = String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
    assert!(!namespaces.contains(&netns), "down removes the namespace: {namespaces}");
}
