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

/// `_IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)` (4096 bytes).
const IOC_SNAP_CREATE_V2: u64 = 0x5000_9417;
/// `_IOR(0x94, 60, struct btrfs_ioctl_get_subvol_info_args)` (504 bytes, Linux ≥ 4.18).
const IOC_GET_SUBVOL_INFO: u64 = 0x81F8_943C;
const SUBVOL_RDONLY: u64 = 1 << 1;
const ROOT_SUBVOL_RDONLY: u64 = 1 << 0;

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

#[repr(C)]
struct Timespec {
    sec: u64,
    nsec: u32,
}

#[repr(C)]
struct SubvolInfo {
    treeid: u64,
    name: [u8; 256],
    parent_id: u64,
    dirid: u64,
    generation: u64,
    flags: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    received_uuid: [u8; 16],
    transids: [u64; 4],
    times: [Timespec; 4],
    reserved: [u64; 8],
}

fn open_dir(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY).open(path).with_context(|| format!("opening {}", path.display()))
}

/// Takes a read-only snapshot of the subvolume `source` as `target` with one ioctl (no
/// process to start: this is on the path from a critical event to its replicas).
pub fn snapshot_read_only(source: &Path, target: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let parent = target.parent().context("snapshot target has no parent directory")?;
    let name = target.file_name().context("snapshot target has no name")?.as_bytes();
    if name.len() >= 4040 || name.contains(&0) || name.contains(&b'/') {
        bail!("unusable snapshot name {:?}", target.file_name());
    }
    let source_dir = open_dir(source)?;
    let parent_dir = open_dir(parent)?;
    let mut args = VolArgsV2 { fd: source_dir.as_raw_fd() as i64, transid: 0, flags: SUBVOL_RDONLY, unused: [0; 4], name: [0; 4040] };
    args.name[..name.len()].copy_from_slice(name);
    // SAFETY: the argument is the kernel's btrfs_ioctl_vol_args_v2, fully initialised.
    let rc = unsafe { libc::ioctl(parent_dir.as_raw_fd(), IOC_SNAP_CREATE_V2 as _, &mut args) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("snapshotting {} as {}", source.display(), target.display()));
    }
    Ok(())
}

/// What a received snapshot is checked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SubvolumeFacts {
    pub read_only: bool,
    /// `None` when the subvolume was not made by `btrfs receive`.
    pub received_uuid: Option<String>,
}

/// Reads a subvolume's flags and received UUID with one ioctl.
pub fn subvolume_facts(path: &Path) -> Result<SubvolumeFacts> {
    use std::os::fd::AsRawFd;
    let dir = open_dir(path)?;
    // SAFETY: plain integers and arrays; all-zero is a valid value.
    let mut info: SubvolInfo = unsafe { std::mem::zeroed() };
    // SAFETY: the argument is the kernel's btrfs_ioctl_get_subvol_info_args.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), IOC_GET_SUBVOL_INFO as _, &mut info) };
    // The kernel can hand back a positive value (a tree search's "not exact") on success.
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("reading subvolume facts of {}", path.display()));
    }
    let received_uuid = (info.received_uuid != [0; 16]).then(|| format_uuid(&info.received_uuid));
    Ok(SubvolumeFacts { read_only: info.flags & ROOT_SUBVOL_RDONLY != 0, received_uuid })
}

fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_argument_layouts_match_the_kernel() {
        // The sizes are encoded in the ioctl numbers; a wrong struct would be refused.
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<SubvolInfo>(), 504);
        assert_eq!((IOC_SNAP_CREATE_V2 >> 16) & 0x3FFF, 4096);
        assert_eq!((IOC_GET_SUBVOL_INFO >> 16) & 0x3FFF, 504);
        assert_eq!(format_uuid(&[0xab; 16]), "abababab-abab-abab-abab-abababababab");
    }

    #[test]
    fn snapshot_and_facts_on_a_real_btrfs() {
        // A small loop-mounted Btrfs of its own (the suite runs as root).
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        std::fs::File::create(&image).unwrap().set_len(128 << 20).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        run(Command::new("mkfs.btrfs").arg("-q").arg(&image)).unwrap();
        run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mnt)).unwrap();
        let result = std::panic::catch_unwind(|| {
            let src = mnt.join("src");
            create_subvolume(&src).unwrap();
            std::fs::write(src.join("f"), b"x").unwrap();
            let snap = mnt.join("snap");
            snapshot_read_only(&src, &snap).unwrap();
            assert_eq!(std::fs::read(snap.join("f")).unwrap(), b"x");
            assert_eq!(subvolume_facts(&snap).unwrap(), SubvolumeFacts { read_only: true, received_uuid: None });
            assert!(!subvolume_facts(&src).unwrap().read_only);
            assert!(std::fs::write(snap.join("g"), b"y").is_err(), "the snapshot is read-only");
            assert!(snapshot_read_only(&src, &snap).is_err(), "an existing name is refused");
        });
        let _ = Command::new("umount").arg(&mnt).status();
        result.unwrap();
    }
}
