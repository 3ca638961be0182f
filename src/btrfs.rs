//! The few Btrfs operations the agent needs, run as `btrfs` with argument vectors.

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// True when `path` (which must exist) is on a Btrfs file system.
pub fn is_btrfs(path: &Path) -> Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes()).context("path contains a NUL byte")?;
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-buffer of the right type.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statfs {}", path.display()));
    }
    Ok(buf.f_type as i64 == BTRFS_SUPER_MAGIC)
}

/// Creates a subvolume at `path` (whose parent must be on Btrfs).
pub fn create_subvolume(path: &Path) -> Result<()> {
    run(Command::new("btrfs").args(["subvolume", "create"]).arg(path))
}

/// Runs a command, turning a non-zero exit into an error that carries its stderr.
pub fn run(cmd: &mut Command) -> Result<()> {
    let output = cmd.output().with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} {:?} failed ({}): {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
