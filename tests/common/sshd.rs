//! A replica host: a network namespace with a real sshd, reached over a veth pair.

use super::{Netns, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Two namespaces joined by a veth pair, the second running a real sshd whose only key is
/// pinned to `forced_command`.
pub struct SshReplicaHost {
    pub dir: tempfile::TempDir,
    /// Where the clients (a primary, a fleet query) run; several hosts may share it.
    pub primary_ns: Arc<Netns>,
    pub replica_ns: Netns,
    pub address: String,
    /// The replica's end of the veth pair (in `replica_ns`) and the primary's (in
    /// `primary_ns`), for link faults.
    pub replica_link: String,
    pub primary_link: String,
    pub client_key: PathBuf,
    sshd_config: PathBuf,
}

impl SshReplicaHost {
    pub fn start(forced_command: &str) -> Self {
        Self::start_from(Arc::new(Netns::new("prim")), forced_command)
    }

    /// A host reached from the client namespace `primary_ns` (shared by several hosts).
    pub fn start_from(primary_ns: Arc<Netns>, forced_command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let replica_ns = Netns::new("rep");
        // A subnet not yet used in the client namespace (several hosts may share it).
        let used =
            String::from_utf8_lossy(&Command::new("ip").args(["-n", &primary_ns.name, "-4", "addr"]).output().unwrap().stdout).into_owned();
        let octet = std::iter::repeat_with(|| 1 + (rand::random::<u8>() % 250)).find(|o| !used.contains(&format!("10.231.{o}."))).unwrap();
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
        // The primary pins the replica's host key (ssh always checks it).
        let host_public = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        std::fs::write(d.join("known_hosts"), format!("{b} {host_public}")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let (replica_link, primary_link) = (format!("{veth}b"), format!("{veth}a"));
        let host =
            Self { client_key: d.join("client_key"), dir, primary_ns, replica_ns, address: b, replica_link, primary_link, sshd_config };
        host.start_sshd();
        host
    }

    /// A replica host whose key is pinned to `replica-receive` into `dir`.
    pub fn receiving_into(dir: &Path) -> Self {
        Self::start(&format!("{} replica-receive --dir {}", super::agent_bin().display(), dir.display()))
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
        let mut options = vec!["-o", "LogLevel=ERROR"];
        options.extend_from_slice(extra_ssh_options);
        format!(
            "\n[[stream.replicas]]\nname = \"rep1\"\ntransport = \"ssh\"\ndestination = \"root@{}\"\nidentity = \"{}\"\nknown_hosts = \"{}\"\nssh_options = {:?}\nremote_dir = \"/nonexistent/the-key-forces-the-real-one\"\n",
            self.address,
            self.client_key.display(),
            self.known_hosts().display(),
            options
        )
    }

    /// The known_hosts file holding this host's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }
}

impl Drop for SshReplicaHost {
    fn drop(&mut self) {
        self.stop_sshd();
    }
}
