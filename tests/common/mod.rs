//! Helpers shared by the integration tests: the real binary, loop-mounted Btrfs, events.
#![allow(dead_code)]

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

/// A Btrfs file system on a loop-mounted image file, unmounted and removed on drop.
pub struct BtrfsMount {
    _dir: tempfile::TempDir,
    pub mount: PathBuf,
}

impl BtrfsMount {
    pub fn new(size_mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(size_mib * 1024 * 1024).unwrap();
        drop(f);
        let mut mkfs = Command::new("mkfs.btrfs");
        mkfs.arg("-q").arg("-f");
        if size_mib < 256 {
            mkfs.arg("--mixed");
        }
        run_ok(mkfs.arg(&image));
        run_ok(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        Self { _dir: dir, mount }
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount").arg(&self.mount).status().map(|s| s.success()).unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
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

/// A private `dbus-daemon` started by the test and killed on drop.
pub struct PrivateBus {
    dir: tempfile::TempDir,
    child: std::process::Child,
    pub address: String,
}

impl PrivateBus {
    /// A session-type bus where everyone may do everything.
    pub fn open() -> Self {
        Self::start(
            "session",
            "<policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/></policy>",
        )
    }

    /// A system-type bus with the system bus's default-deny policy and the shipped
    /// `dbus/dev.ovs.PortAgent1.conf` included.
    pub fn system_with_shipped_policy() -> Self {
        let policy_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/dev.ovs.PortAgent1.conf");
        let policy = format!(
            r#"<policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{}</include>"#,
            policy_file.display()
        );
        Self::start("system", &policy)
    }

    fn start(kind: &str, policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Other users (the policy tests run clients as nobody) must reach the socket.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let socket = dir.path().join("bus.sock");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n  <type>{kind}</type>\n  <listen>unix:path={}</listen>\n  <auth>EXTERNAL</auth>\n  {policy}\n</busconfig>\n",
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("starting dbus-daemon");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(socket.exists(), "dbus-daemon did not create its socket");
        Self { dir, child, address: format!("unix:path={}", socket.display()) }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A dev config file for a daemon under test (its data need not be on Btrfs).
pub fn write_daemon_config(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, "require_btrfs = false", extra)
}

/// The config of a primary that streams: its data must be on Btrfs.
pub fn write_streaming_config(dir: &Path, extra: &str) -> PathBuf {
    write_config(dir, "require_btrfs = true", extra)
}

/// The config of a replica daemon serving the snapshots received in `replica_dir`.
pub fn write_replica_config(dir: &Path, replica_dir: &Path) -> PathBuf {
    write_config(dir, "require_btrfs = false\nrole = \"replica\"", &format!("\n[replica]\ndir = \"{}\"\n", replica_dir.display()))
}

fn write_config(dir: &Path, agent: &str, extra: &str) -> PathBuf {
    let model = model_config();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\n{agent}\nhost = \"test-host\"\n\n[embedding]\nmodel_dir = \"{}\"\nruntime_library = \"{}\"\nworkers = 2\n\n[vector]\ncheckpoint_min_vectors = 200\n{extra}",
            model.model_dir.display(),
            model.runtime_library.display()
        ),
    )
    .unwrap();
    path
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

    /// The daemon inside a network namespace (its ssh sessions then leave from there).
    pub fn start_in(netns: &Netns, bus: &str, data_dir: &Path, config: &Path) -> Self {
        Self::spawn(netns.command(agent_bin().to_str().unwrap()), bus, data_dir, config)
    }

    fn spawn(mut cmd: Command, bus: &str, data_dir: &Path, config: &Path) -> Self {
        let child = cmd
            .args(["--config"])
            .arg(config)
            .args(["daemon", "--bus", bus, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("starting the daemon");
        let daemon = Self { child, bus: bus.to_owned(), data_dir: data_dir.to_owned(), config: config.to_owned() };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&self) {
        for _ in 0..600 {
            if self.busctl(&["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "Ping"]).0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the daemon did not own dev.ovs.PortAgent1 within 60 s");
    }

    /// `busctl --address=BUS ARGS…` → (success, stdout, stderr).
    pub fn busctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("busctl").arg(format!("--address={}", self.bus)).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `gdbus call --address BUS --dest … --object-path … --method dev.ovs.PortAgent1.METHOD ARGS…`.
    pub fn gdbus_call(&self, method: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("gdbus")
            .args(["call", "--address", &self.bus, "--dest", "dev.ovs.PortAgent1", "--object-path", "/dev/ovs/PortAgent1", "--method"])
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

/// The string inside gdbus's `('…',)` output.
pub fn gdbus_string(out: &str) -> String {
    let t = out.trim();
    let inner = t.strip_prefix("('").and_then(|s| s.strip_suffix("',)")).unwrap_or_else(|| panic!("unexpected gdbus output {t}"));
    inner.replace("\\'", "'").replace("\\\\", "\\")
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = format!("{prefix}-{}-{}", std::process::id(), rand::random::<u16>());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        run_ok(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        Self { name }
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

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

    pub fn stop_ovsdb(&self) {
        self.kill_pidfile("ovsdb-server.pid");
    }

    fn kill_pidfile(&self, name: &str) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(name)) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                unsafe { libc::kill(pid, libc::SIGTERM) };
                for _ in 0..100 {
                    if unsafe { libc::kill(pid, 0) } != 0 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
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
        if let Some(mut child) = self.nm.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
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

impl PrivateBus {
    /// A system-type bus where everyone may do everything (for NetworkManager in tests).
    pub fn system_allow_all() -> Self {
        Self::start(
            "system",
            "<policy context=\"default\"><allow user=\"*\"/><allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/></policy>",
        )
    }
}

/// Two namespaces joined by a veth pair, the second running a real sshd whose only key is
/// pinned to `forced_command`.
pub struct SshReplicaHost {
    pub dir: tempfile::TempDir,
    pub primary_ns: Netns,
    pub replica_ns: Netns,
    pub address: String,
    pub client_key: PathBuf,
    sshd_config: PathBuf,
}

impl SshReplicaHost {
    pub fn start(forced_command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let primary_ns = Netns::new("prim");
        let replica_ns = Netns::new("rep");
        let octet = 1 + (rand::random::<u8>() % 250);
        let (a, b) = (format!("10.231.{octet}.1"), format!("10.231.{octet}.2"));
        let veth = format!("vr{}", rand::random::<u16>());
        run_ok(Command::new("ip").args([
            "-n",
            &primary_ns.name,
            "link",
            "add",
            &format!("{veth}a"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{veth}b"),
            "netns",
            &replica_ns.name,
        ]));
        run_ok(Command::new("ip").args(["-n", &primary_ns.name, "addr", "add", &format!("{a}/30"), "dev", &format!("{veth}a")]));
        run_ok(Command::new("ip").args(["-n", &primary_ns.name, "link", "set", &format!("{veth}a"), "up"]));
        run_ok(Command::new("ip").args(["-n", &replica_ns.name, "addr", "add", &format!("{b}/30"), "dev", &format!("{veth}b")]));
        run_ok(Command::new("ip").args(["-n", &replica_ns.name, "link", "set", &format!("{veth}b"), "up"]));
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(d.join(key)));
        }
        let public = std::fs::read_to_string(d.join("client_key.pub")).unwrap();
        std::fs::write(d.join("authorized_keys"), format!("restrict,command=\"{forced_command}\" {public}")).unwrap();
        let sshd_config = d.join("sshd_config");
        std::fs::write(
            &sshd_config,
            format!(
                "ListenAddress {b}\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPidFile {}\n",
                d.join("host_key").display(),
                d.join("authorized_keys").display(),
                d.join("sshd.pid").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host = Self { client_key: d.join("client_key"), dir, primary_ns, replica_ns, address: b, sshd_config };
        host.start_sshd();
        host
    }

    pub fn start_sshd(&self) {
        let log = self.dir.path().join("sshd.log");
        run_ok(self.replica_ns.command("/usr/sbin/sshd").arg("-f").arg(&self.sshd_config).arg("-E").arg(&log));
        for _ in 0..100 {
            if self.dir.path().join("sshd.pid").exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops sshd and every session it serves (the replica host goes away): every process
    /// in the replica's namespace, and nothing outside it.
    pub fn stop_sshd(&self) {
        let out = Command::new("ip").args(["netns", "pids", &self.replica_ns.name]).output().unwrap();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(self.dir.path().join("sshd.pid"));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

impl SshReplicaHost {
    /// The `[[stream.replicas]]` entry named `rep1` for this host. Its `remote_dir` is
    /// deliberately wrong: the restricted key forces the receiver's real directory.
    pub fn replica_toml(&self, extra_ssh_options: &[&str]) -> String {
        let mut options = vec!["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"];
        options.extend_from_slice(extra_ssh_options);
        format!(
            "\n[[stream.replicas]]\nname = \"rep1\"\ntransport = \"ssh\"\ndestination = \"root@{}\"\nidentity = \"{}\"\nssh_options = {:?}\nremote_dir = \"/nonexistent/the-key-forces-the-real-one\"\n",
            self.address,
            self.client_key.display(),
            options
        )
    }
}

impl Drop for SshReplicaHost {
    fn drop(&mut self) {
        self.stop_sshd();
    }
}
