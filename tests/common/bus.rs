//! Private dbus-daemons started by a test: a session-type bus where everyone may do
//! everything, a system-type bus with the shipped policy, and an allow-all system bus for
//! NetworkManager.

use std::path::Path;
use std::process::Command;

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

    /// [`open`](Self::open), but calls of `member` on dev.ovs.PortAgent1 are refused
    /// (AccessDenied): a daemon that can be reached but will not answer that.
    pub fn open_denying(member: &str) -> Self {
        Self::start(
            "session",
            &format!(
                "<policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/><deny send_destination=\"dev.ovs.PortAgent1\" send_interface=\"dev.ovs.PortAgent1\" send_member=\"{member}\"/></policy>"
            ),
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

impl PrivateBus {
    /// A system-type bus where everyone may do everything (for NetworkManager in tests).
    pub fn system_allow_all() -> Self {
        Self::start(
            "system",
            "<policy context=\"default\"><allow user=\"*\"/><allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/><allow own=\"*\"/></policy>",
        )
    }
}
