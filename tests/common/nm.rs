//! The real NetworkManager in a namespace with its own bus (NM-SANDBOX.md).

use super::{Netns, PrivateBus, run_ok};
use std::process::Command;

/// The real NetworkManager in a network namespace with its own system bus and private
/// state (NM-SANDBOX.md): nothing of the host's network is touched.
pub struct NmSandbox {
    pub dir: tempfile::TempDir,
    pub netns: Netns,
    pub bus: PrivateBus,
    nm: Option<std::process::Child>,
}

impl NmSandbox {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["run-nm", "run-ovs", "var-lib-nm", "etc-nm", "conf.d", "system-conf.d", "connections"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("resolv.conf"), "").unwrap();
        std::fs::write(
            d.join("NetworkManager.conf"),
            format!(
                "[main]\nplugins=keyfile\ndns=none\nrc-manager=unmanaged\nhostname-mode=none\nauth-polkit=false\nno-auto-default=*\n\n[keyfile]\npath={}\n\n[connectivity]\nenabled=false\n\n[logging]\nlevel=WARN\n",
                d.join("connections").display()
            ),
        )
        .unwrap();
        let netns = Netns::new("nm");
        let bus = PrivateBus::system_allow_all();
        let mut sandbox = Self { dir, netns, bus, nm: None };
        sandbox.start_nm();
        sandbox
    }

    pub fn start_nm(&mut self) {
        let d = self.dir.path().display().to_string();
        let script = format!(
            "set -e
mount --make-rprivate /
mount --bind /sys/devices /sys/devices
mount -o remount,ro /sys
mount -t tmpfs tmpfs /run
mkdir -p /run/NetworkManager /run/openvswitch
mount --bind {d}/run-nm /run/NetworkManager
mount --bind {d}/run-ovs /run/openvswitch
mount --bind {d}/var-lib-nm /var/lib/NetworkManager
mount --bind {d}/etc-nm /etc/NetworkManager
mount --bind {d}/resolv.conf /etc/resolv.conf
exec NetworkManager --no-daemon --config={d}/NetworkManager.conf --config-dir={d}/conf.d --system-config-dir={d}/system-conf.d --intern-config={d}/intern.conf --state-file={d}/state --pid-file={d}/nm.pid"
        );
        let child = self
            .netns
            .command("unshare")
            .args(["--uts", "--mount", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting NetworkManager");
        self.nm = Some(child);
        let ok = self.nmcli_cmd("nm-online", &["-s", "-q", "-t", "30"]).status().unwrap().success();
        assert!(ok, "NetworkManager did not come up");
    }

    pub fn stop_nm(&mut self) {
        self.signal_nm(libc::SIGTERM);
    }

    /// NetworkManager crashes (SIGKILL): it withdraws nothing and leaves its pid file behind.
    pub fn kill_nm(&mut self) {
        self.signal_nm(libc::SIGKILL);
    }

    fn signal_nm(&mut self, signal: libc::c_int) {
        if let Some(mut child) = self.nm.take() {
            unsafe { libc::kill(child.id() as i32, signal) };
            let _ = child.wait();
        }
    }

    fn nmcli_cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address);
        cmd
    }

    /// `nmcli ARGS…` against this NetworkManager.
    pub fn nmcli(&self, args: &[&str]) -> String {
        run_ok(&mut self.nmcli_cmd("nmcli", args))
    }

    /// `ip -n NS ARGS…`.
    pub fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(&self.netns.name).args(args));
    }
}

impl Drop for NmSandbox {
    fn drop(&mut self) {
        self.stop_nm();
    }
}
