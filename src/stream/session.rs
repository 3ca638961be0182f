//! The primary's end of a replication session: one long-lived process per replica (ssh, or
//! a local `replica-receive`) carrying successive framed `btrfs send` streams and bringing
//! back an acknowledgement for each. Programs run with argument vectors, joined by pipes.

use super::frame::{Ack, Header};
use crate::config::{ReplicaConfig, Transport};
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The longest acknowledgement line accepted (they are a few hundred bytes).
const MAX_ACK_BYTES: usize = 64 << 10;
/// The replica's stderr is logged a line at a time, each cut to this length, and at most
/// this many lines per session (the rest are counted).
const MAX_STDERR_LINE: usize = 1024;
const MAX_STDERR_LINES: usize = 200;

pub struct Session {
    child: Child,
    stdin: ChildStdin,
    acks: BufReader<ChildStdout>,
}

impl Session {
    /// Opens a session with `replica`; `host` is this primary's name (its origin on a
    /// replica host that keeps many).
    pub fn open(replica: &ReplicaConfig, host: &str, local_binary: &Path) -> Result<Self> {
        let mut cmd = match replica.transport {
            Transport::Local => {
                // Locally the "far side" is this binary, unless remote_command names another.
                let binary =
                    if Path::new(&replica.remote_command).is_absolute() { Path::new(&replica.remote_command) } else { local_binary };
                let mut c = Command::new(binary);
                c.arg("replica-receive").arg("--dir").arg(&replica.remote_dir);
                if replica.per_origin {
                    c.arg("--origin").arg(host);
                }
                c
            }
            Transport::Ssh => {
                let mut c = crate::ssh::command(&replica.identity, &replica.known_hosts, &replica.ssh_options);
                // With a restricted key the far side runs its forced command instead.
                c.arg("--")
                    .arg(&replica.destination)
                    .arg(&replica.remote_command)
                    .arg("replica-receive")
                    .arg("--dir")
                    .arg(&replica.remote_dir);
                if replica.per_origin {
                    c.arg("--origin").arg(host);
                }
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
        let acks = BufReader::new(child.stdout.take().expect("piped"));
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(log_stderr(replica.name.clone(), BufReader::new(stderr)));
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
        let line = tokio::time::timeout(timeout, read_bounded_line(&mut self.acks, MAX_ACK_BYTES))
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

/// One line (without its newline) of at most `max` bytes; `None` at the end of the stream.
/// A longer line is an error: the far side is not speaking the protocol.
async fn read_bounded_line(reader: &mut (impl AsyncBufRead + Unpin), max: usize) -> Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(String::from_utf8_lossy(&line).into_owned()) });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max + 1 {
            bail!("the replica sent a line longer than {max} bytes");
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            line.pop();
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

/// Logs the far side's stderr, bounded in line length and count.
async fn log_stderr(name: String, mut stderr: BufReader<tokio::process::ChildStderr>) {
    let mut logged = 0usize;
    let mut dropped = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Read a line in pieces so a line without end cannot grow without bound.
        let mut chunk = (&mut stderr).take(MAX_STDERR_LINE as u64);
        match chunk.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if logged < MAX_STDERR_LINES {
            tracing::warn!(replica = %name, "{text}");
            logged += 1;
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(replica = %name, lines = dropped, "more stderr lines from the replica were not logged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ack_lines_are_bounded() {
        let mut ok = BufReader::new(&b"{\"name\":\"data@1\"}\nrest"[..]);
        assert_eq!(read_bounded_line(&mut ok, 100).await.unwrap().as_deref(), Some("{\"name\":\"data@1\"}"));
        let long = vec![b'x'; 1000];
        let mut bad = BufReader::new(&long[..]);
        assert!(read_bounded_line(&mut bad, 100).await.is_err());
        let mut empty = BufReader::new(&b""[..]);
        assert_eq!(read_bounded_line(&mut empty, 100).await.unwrap(), None);
    }
}
