//! The real ovsdb-server and ovs-vswitchd in a namespace.

use super::{Netns, run_ok};
use std::path::PathBuf;
use std::process::Command;

/// Real ovsdb-server and ovs-vswitchd (userspace datapath) inside a network namespace, with
/// their sockets and database in a temp dir.
pub struct OvsSandbox {
    pub dir: tempfile::TempDir,
    pub netns: Netns,
}

impl OvsSandbox {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Self { dir, netns: Netns::new("ovs") };
        run_ok(Command::new("ovsdb-tool").arg("create").arg(sandbox.db()).arg("/usr/share/openvswitch/vswitch.ovsschema"));
        sandbox.start_ovsdb();
        run_ok(
            sandbox
                .env(&mut Command::new("ovs-vsctl"))
                .arg(format!("--db=unix:{}", sandbox.socket().display()))
                .args(["--no-wait", "init"]),
        );
        let mut vswitchd = sandbox.netns.command("ovs-vswitchd");
        sandbox.env(&mut vswitchd);
        vswitchd.arg(format!("unix:{}", sandbox.socket().display())).args(["--detach", "--no-chdir"]);
        vswitchd.arg(format!("--pidfile={}", sandbox.dir.path().join("ovs-vswitchd.pid").display()));
        vswitchd.arg(format!("--unixctl={}", sandbox.dir.path().join("ovs-vswitchd.ctl").display()));
        vswitchd.arg(format!("--log-file={}", sandbox.dir.path().join("ovs-vswitchd.log").display()));
        run_ok(&mut vswitchd);
        sandbox.vsctl(&["set", "Open_vSwitch", ".", "external_ids:x=1"]);
        sandbox
    }

    pub fn start_ovsdb(&self) {
        let mut ovsdb = Command::new("ovsdb-server");
        self.env(&mut ovsdb);
        ovsdb.arg(self.db()).arg(format!("--remote=punix:{}", self.socket().display())).args(["--detach", "--no-chdir"]);
        ovsdb.arg(format!("--pidfile={}", self.dir.path().join("ovsdb-server.pid").display()));
        ovsdb.arg(format!("--unixctl={}", self.dir.path().join("ovsdb-server.ctl").display()));
        ovsdb.arg(format!("--log-file={}", self.dir.path().join("ovsdb-server.log").display()));
        run_ok(&mut ovsdb);
    }

    /// Stops ovs-vswitchd: the database goes on taking changes (with `vsctl_no_wait`)
    /// without a switch creating devices for them.
    pub fn stop_vswitchd(&self) {
        self.kill_pidfile("ovs-vswitchd.pid");
    }

    /// `ovs-vsctl --no-wait` (for when ovs-vswitchd is not running).
    pub fn vsctl_no_wait(&self, args: &[&str]) -> String {
        let mut cmd = self.netns.command("ovs-vsctl");
        self.env(&mut cmd);
        cmd.arg(format!("--db=unix:{}", self.socket().display())).args(["--no-wait", "--timeout=60"]).args(args);
        run_ok(&mut cmd)
    }

    pub fn stop_ovsdb(&self) {
        self.kill_pidfile("ovsdb-server.pid");
    }

    /// ovsdb-server crashes (SIGKILL): no clean shutdown, its socket file and pidfile stay.
    pub fn kill_ovsdb(&self) {
        self.signal_pidfile("ovsdb-server.pid", libc::SIGKILL);
    }

    fn kill_pidfile(&self, name: &str) {
        self.signal_pidfile(name, libc::SIGTERM);
    }

    /// Sends `signal` to the process in pidfile `name` and waits (up to 2 s) for it to exit.
    fn signal_pidfile(&self, name: &str, signal: libc::c_int) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(name))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            unsafe { libc::kill(pid, signal) };
            for _ in 0..100 {
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// The `[sources]` table of a daemon watching this sandbox only (no NetworkManager).
    pub fn sources_toml(&self) -> String {
        format!("\n[sources]\novsdb_socket = \"{}\"\nnetworkmanager = false\n", self.socket().display())
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("conf.db")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let d = self.dir.path();
        cmd.env("OVS_RUNDIR", d)
            .env("OVS_DBDIR", d)
            .env("OVS_LOGDIR", d)
            .env("OVS_SYSCONFDIR", d)
            .env("OVS_PKGDATADIR", "/usr/share/openvswitch")
    }

    /// `ovs-vsctl` against this sandbox, run inside its namespace.
    pub fn vsctl(&self, args: &[&str]) -> String {
        let mut cmd = self.netns.command("ovs-vsctl");
        self.env(&mut cmd);
        cmd.arg(format!("--db=unix:{}", self.socket().display())).arg("--timeout=20").args(args);
        run_ok(&mut cmd)
    }
}

impl Drop for OvsSandbox {
    fn drop(&mut self) {
        self.kill_pidfile("ovs-vswitchd.pid");
        self.kill_pidfile("ovsdb-server.pid");
    }
}
