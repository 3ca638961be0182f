//! The primary's end of a replication session: one long-lived process per replica (ssh, or
//! a local `replica-receive`) carrying successive framed `btrfs send` streams and bringing
//! back an acknowledgement for each. Programs run with argument vectors, joined by pipes.

use super::frame::{Ack, Header};
use crate::config::{ReplicaConfig, Transport};
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub struct Session {
    child: Child,
    stdin: ChildStdin,
    acks: Lines<BufReader<ChildStdout>>,
}

impl Session {
    pub fn open(replica: &ReplicaConfig, local_binary: &Path) -> Result<Self> {
        let mut cmd = match replica.transport {
            Transport::Local => {
                // Locally the "far side" is this binary, unless remote_command names another.
                let binary =
                    if Path::new(&replica.remote_command).is_absolute() { Path::new(&replica.remote_command) } else { local_binary };
                let mut c = Command::new(binary);
                c.arg("replica-receive").arg("--dir").arg(&replica.remote_dir);
                c
            }
            Transport::Ssh => {
                let mut c = Command::new("ssh");
                if !replica.identity.as_os_str().is_empty() {
                    c.arg("-i").arg(&replica.identity);
                }
                c.args(["-o", "BatchMode=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]);
                c.args(&replica.ssh_options);
                // With a restricted key the far side runs its forced command instead.
                c.arg("--")
                    .arg(&replica.destination)
                    .arg(&replica.remote_command)
                    .arg("replica-receive")
                    .arg("--dir")
                    .arg(&replica.remote_dir);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the replication session")?;
        let stdin = child.stdin.take().expect("piped");
        let acks = BufReader::new(child.stdout.take().expect("piped")).lines();
        if let Some(mut stderr) = child.stderr.take() {
            let name = replica.name.clone();
            tokio::spawn(async move {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text).await;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::warn!(replica = %name, "{line}");
                }
            });
        }
        Ok(Self { child, stdin, acks })
    }

    /// Sends one snapshot (incremental to `parent` when given); returns the replica's
    /// acknowledgement and the bytes of the send stream.
    pub async fn send(&mut self, snapshot: &Path, parent: Option<&Path>, zstd_level: Option<u8>, timeout: Duration) -> Result<(Ack, u64)> {
        let name = file_name(snapshot)?;
        let header =
            Header { name: name.clone(), parent: parent.map(file_name).transpose()?, compression: zstd_level.map(|_| "zstd".to_owned()) };
        let mut send = Command::new("btrfs");
        send.arg("send").arg("-q");
        if let Some(p) = parent {
            send.arg("-p").arg(p);
        }
        let mut send =
            send.arg(snapshot).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().context("running btrfs send")?;
        let send_out = send.stdout.take().expect("piped");
        // btrfs send | zstd -LEVEL, joined by a pipe, when compressing.
        let mut zstd = None;
        let mut stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match zstd_level {
            Some(level) => {
                let mut z = Command::new("zstd")
                    .args(["-q", "-c", &format!("-{level}")])
                    .stdin(Stdio::from(send_out.into_owned_fd()?))
                    .stdout(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .context("running zstd")?;
                let out = z.stdout.take().expect("piped");
                zstd = Some(z);
                Box::new(out)
            }
            None => Box::new(send_out),
        };
        let line = serde_json::to_string(&header)? + "\n";
        self.stdin.write_all(line.as_bytes()).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            self.stdin.write_all(&(n as u32).to_be_bytes()).await?;
            self.stdin.write_all(&buf[..n]).await?;
            bytes += n as u64;
        }
        if let Some(z) = zstd {
            let out = z.wait_with_output().await?;
            if !out.status.success() {
                bail!("zstd failed");
            }
        }
        let status = send.wait_with_output().await?;
        // Close the frame even when send failed, so the replica stays in step.
        self.stdin.write_all(&0u32.to_be_bytes()).await?;
        self.stdin.flush().await?;
        if !status.status.success() {
            bail!("btrfs send failed: {}", String::from_utf8_lossy(&status.stderr).trim());
        }
        let line = tokio::time::timeout(timeout, self.acks.next_line())
            .await
            .map_err(|_| anyhow!("no acknowledgement within {timeout:?}"))??
            .ok_or_else(|| anyhow!("the session ended before acknowledging {name}"))?;
        let ack: Ack = serde_json::from_str(&line).with_context(|| format!("bad acknowledgement {line:?}"))?;
        if ack.name != name {
            bail!("acknowledgement for {} while waiting for {name}", ack.name);
        }
        Ok((ack, bytes))
    }

    pub async fn close(mut self) {
        let _ = self.stdin.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).context("a snapshot path without a name")
}
