//! A D-Bus connection to a fleet daemon: over ssh to `systemd-stdio-bridge` on the far side
//! (the transport `busctl --host` uses), or to a bus on this host.

use crate::fleet::{FleetHost, FleetTransport};
use crate::names::{BUS_NAME, OBJECT_PATH};
use anyhow::{Context, Result, anyhow};
use std::process::Stdio;
use tokio::io::AsyncReadExt;

const IFACE: &str = "dev.ovs.PortAgent1";
/// What ssh said on stderr is kept up to this length for the report.
const MAX_STDERR: usize = 2048;

/// Why a daemon could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The host or its bus could not be reached.
    Unreachable(String),
    /// The host or the daemon said no (ssh authentication, host key, bus policy).
    Refused(String),
    /// The daemon answered with an error.
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(m) | Self::Refused(m) | Self::Failed(m) => f.write_str(m),
        }
    }
}

/// Where kept ssh connections' sockets live: a directory only this user can enter
/// (`/run/ovs-port-agent/ssh` for root, else under `$XDG_RUNTIME_DIR`); none if it cannot be
/// made so.
fn control_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let dir = if uid == 0 {
        std::path::PathBuf::from("/run/ovs-port-agent/ssh")
    } else {
        std::path::PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR")?).join("ovs-port-agent-ssh")
    };
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0).then_some(dir)
}

pub struct Link {
    conn: zbus::Connection,
    /// The ssh process carrying the connection (killed when the link is dropped).
    _ssh: Option<tokio::process::Child>,
}

impl Link {
    /// Connects to a daemon; over ssh, `reuse_s` (seconds, `None`: no reuse) keeps the ssh
    /// connection for later queries.
    pub async fn open(host: &FleetHost, reuse_s: Option<u64>) -> Result<Self, Failure> {
        match host.transport {
            FleetTransport::Local => {
                let conn = crate::bus::connect(&host.bus).await.map_err(|e| Failure::Unreachable(format!("{e:#}")))?;
                Ok(Self { conn, _ssh: None })
            }
            FleetTransport::Ssh => Self::over_ssh(host, reuse_s).await,
        }
    }

    async fn over_ssh(host: &FleetHost, reuse: Option<u64>) -> Result<Self, Failure> {
        let spawn = move |host: FleetHost| -> Result<(tokio::process::Child, tokio::net::UnixStream)> {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("a socket pair")?;
            let theirs_out = theirs.try_clone().context("a socket pair")?;
            let mut cmd = crate::ssh::command(&host.identity, &host.known_hosts, &host.ssh_options);
            if let (Some(seconds), Some(dir)) = (reuse, control_dir()) {
                // One ssh connection per host, kept for the next queries: a new session on it
                // costs a channel, not a handshake.
                cmd.args(["-o", "ControlMaster=auto", "-o"])
                    .arg(format!("ControlPath={}/%C", dir.display()))
                    .arg("-o")
                    .arg(format!("ControlPersist={seconds}"));
            }
            cmd.arg("--")
                .arg(&host.destination)
                .arg("systemd-stdio-bridge")
                .arg(format!("--bus-path={}", host.bus))
                .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
                .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let child = cmd.spawn().context("starting ssh")?;
            ours.set_nonblocking(true)?;
            Ok((child, tokio::net::UnixStream::from_std(ours)?))
        };
        // Starting a process takes a few ms of this thread: off the executor, so that a query
        // to hundreds of hosts does not hold up the others' connections.
        let owned = host.clone();
        let spawned = tokio::task::spawn_blocking(move || spawn(owned)).await.map_err(|e| anyhow!(e)).and_then(|r| r);
        let (mut child, stream) = spawned.map_err(|e| Failure::Unreachable(format!("{e:#}")))?;
        match zbus::connection::Builder::unix_stream(stream).build().await {
            Ok(conn) => Ok(Self { conn, _ssh: Some(child) }),
            Err(e) => {
                // ssh has ended (or will, its socket closed): what it said is the reason.
                let _ = child.start_kill();
                let mut said = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let mut buf = vec![0u8; MAX_STDERR];
                    let n = tokio::time::timeout(std::time::Duration::from_secs(2), stderr.read(&mut buf))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .unwrap_or(0);
                    said = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                }
                let reason = if said.is_empty() { format!("D-Bus over ssh to {}: {e}", host.destination) } else { said };
                let refused =
                    ["Permission denied", "Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED", "No ED25519 host key"]
                        .iter()
                        .any(|s| reason.contains(s));
                Err(if refused { Failure::Refused(reason) } else { Failure::Unreachable(reason) })
            }
        }
    }

    /// Calls a member of the daemon's root object; a D-Bus error from the daemon is a
    /// failure of that daemon (AccessDenied: refused).
    pub async fn call<B>(&self, member: &str, body: &B) -> Result<String, Failure>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let reply = self.conn.call_method(Some(BUS_NAME), OBJECT_PATH, Some(IFACE), member, body).await.map_err(|e| match &e {
            zbus::Error::MethodError(name, message, _) => {
                let text = format!("{name}: {}", message.as_deref().unwrap_or(""));
                if name.as_str().ends_with("AccessDenied") { Failure::Refused(text) } else { Failure::Failed(text) }
            }
            _ => Failure::Unreachable(format!("{member}: {e}")),
        })?;
        reply.body().deserialize::<String>().map_err(|e| Failure::Failed(format!("{member} answered something else: {}", anyhow!(e))))
    }
}
