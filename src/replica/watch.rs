//! Waiting for the receiver to publish a newly verified snapshot: inotify on the receive
//! directories (one per origin) for a state file being renamed into place, instead of polling.

use anyhow::{Context, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use tokio::io::unix::AsyncFd;

pub struct StateWatch {
    fd: AsyncFd<OwnedFd>,
    name: Vec<u8>,
}

impl StateWatch {
    /// Watches `state_file`'s directory for the file being replaced or written.
    pub fn new(state_file: &Path) -> Result<Self> {
        let dir = state_file.parent().context("the state file has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // SAFETY: plain system calls; the descriptor is owned right after.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        add_watch(&fd, dir)?;
        let name = state_file.file_name().context("the state file has no name")?.as_bytes().to_vec();
        // SAFETY: `fd` is an open descriptor this AsyncFd owns from here on.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("watching for snapshots: {e}"))?;
        Ok(Self { fd, name })
    }

    /// Watches another directory for a state file of the same name (another origin's).
    pub fn add(&self, dir: &Path) -> Result<()> {
        add_watch(self.fd.get_ref(), dir)
    }

    /// Resolves when the state file was replaced or written.
    pub async fn changed(&mut self) -> Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: reading into a buffer of the stated length.
            let n = unsafe { libc::read(self.fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return Err(err).context("reading inotify events");
            }
            let mut at = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n as usize {
                // SAFETY: the kernel writes whole events; read_unaligned copes with alignment.
                let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                let name = &buf[at + header..at + header + event.len as usize];
                let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
                if name == self.name.as_slice() {
                    return Ok(());
                }
                at += header + event.len as usize;
            }
        }
    }
}

fn add_watch(fd: &OwnedFd, dir: &Path) -> Result<()> {
    let c_dir = CString::new(dir.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    // SAFETY: a valid descriptor and C string.
    let rc = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_dir.as_ptr(), libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("watching {}", dir.display()));
    }
    Ok(())
}
