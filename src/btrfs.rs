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

/// True when `path` is the root of a subvolume (its inode is the first free object id, 256;
/// a plain directory inside a subvolume reports that subvolume's facts, not its own).
pub fn is_subvolume(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.symlink_metadata().is_ok_and(|m| m.is_dir() && m.ino() == 256)
}

/// What a received snapshot is checked for.
#[derive(Debug, Clone, PartialEq)]
pub struct SubvolumeFacts {
    pub read_only: bool,
    /// The subvolume's own UUID.
    pub uuid: String,
    /// The subvolume it is a snapshot of (`None` for a new subvolume).
    pub parent_uuid: Option<String>,
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
    let optional = |b: &[u8; 16]| (*b != [0; 16]).then(|| format_uuid(b));
    Ok(SubvolumeFacts {
        read_only: info.flags & ROOT_SUBVOL_RDONLY != 0,
        uuid: format_uuid(&info.uuid),
        parent_uuid: optional(&info.parent_uuid),
        received_uuid: optional(&info.received_uuid),
    })
}

fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// `xxxxxxxx-xxxx-…` → the 16 bytes.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: u64 = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Flags under which an extent's physical address does not identify its bytes (compressed,
/// inline, not yet allocated, unaligned, preallocated): such ranges are compared byte by byte.
const FIEMAP_UNCERTAIN: u32 = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800;
const FIEMAP_BATCH: usize = 128;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; FIEMAP_BATCH],
}

/// One extent of a file: bytes `[logical, logical + length)` live at `physical` on the file
/// system (a Btrfs logical address; two files sharing an extent report the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    /// False when the address does not identify the bytes (compressed, inline, …).
    pub addressable: bool,
}

/// The extents of `file` covering `[0, len)` (after syncing it, so delayed allocations
/// have their places).
pub fn extents(file: &std::fs::File, len: u64) -> Result<Vec<Extent>> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut next = 0u64;
    while next < len {
        // SAFETY: plain integers; all-zero is valid.
        let mut map: Box<Fiemap> = Box::new(unsafe { std::mem::zeroed() });
        map.start = next;
        map.length = len - next;
        map.flags = FIEMAP_FLAG_SYNC;
        map.extent_count = FIEMAP_BATCH as u32;
        // SAFETY: the argument is the kernel's struct fiemap with room for FIEMAP_BATCH extents.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *map) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("reading a file's extents (FIEMAP)");
        }
        let mapped = (map.mapped_extents as usize).min(FIEMAP_BATCH);
        if mapped == 0 {
            break;
        }
        let mut last = false;
        for e in &map.extents[..mapped] {
            out.push(Extent { logical: e.logical, physical: e.physical, length: e.length, addressable: e.flags & FIEMAP_UNCERTAIN == 0 });
            last |= e.flags & FIEMAP_EXTENT_LAST != 0;
        }
        let end = map.extents[mapped - 1].logical + map.extents[mapped - 1].length;
        if last || end <= next {
            break;
        }
        next = end;
    }
    Ok(out)
}

/// The mount point holding `path` (the longest matching one in /proc/self/mountinfo).
pub fn mount_point_of(path: &Path) -> Result<std::path::PathBuf> {
    let path = path.canonicalize().with_context(|| format!("resolving {}", path.display()))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut best: Option<std::path::PathBuf> = None;
    for line in info.lines() {
        let Some(field) = line.split(' ').nth(4) else { continue };
        let point = std::path::PathBuf::from(unescape_mountinfo(field));
        if path.starts_with(&point) && best.as_ref().is_none_or(|b| point.as_os_str().len() > b.as_os_str().len()) {
            best = Some(point);
        }
    }
    best.with_context(|| format!("no mount holds {}", path.display()))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push(u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0"), 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file system's facts for `path` (flags, sizes, free blocks).
pub fn statvfs(path: &Path) -> Result<libc::statvfs> {
    let c = CString::new(path.as_os_str().as_bytes()).context("path contains a NUL byte")?;
    // SAFETY: a zeroed statvfs filled by the kernel for a valid C string.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut vfs) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statvfs {}", path.display()));
    }
    Ok(vfs)
}

/// Makes `cmd` run in a mount namespace of its own in which `mount_point` is remounted
/// `nosuid,nodev,noexec`: whatever it creates there (a device node, a setuid file) can be
/// neither opened as a device nor executed by it. Other mount flags are kept.
pub fn confine_to_nosuid_nodev(cmd: &mut Command, mount_point: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let target = CString::new(mount_point.as_os_str().as_bytes()).context("mount point contains a NUL byte")?;
    let root = CString::new("/").expect("no NUL");
    let vfs = statvfs(mount_point)?;
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (st, ms) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if vfs.f_flag & st != 0 {
            flags |= ms;
        }
    }
    // SAFETY: only async-signal-safe system calls between fork and exec, on C strings made
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0
                || libc::mount(std::ptr::null(), target.as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
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
            let (facts, source) = (subvolume_facts(&snap).unwrap(), subvolume_facts(&src).unwrap());
            assert!(facts.read_only && facts.received_uuid.is_none());
            assert_eq!(facts.parent_uuid.as_deref(), Some(source.uuid.as_str()), "a snapshot names its source");
            assert!(!source.read_only && source.parent_uuid.is_none());
            assert_eq!(parse_uuid(&source.uuid).map(|b| format_uuid(&b)), Some(source.uuid.clone()));
            let f = std::fs::File::open(snap.join("f")).unwrap();
            let e = extents(&f, 1).unwrap();
            assert_eq!(e.len(), 1);
            assert!(!e[0].addressable, "a one-byte file is inline");
            assert!(std::fs::write(snap.join("g"), b"y").is_err(), "the snapshot is read-only");
            assert!(snapshot_read_only(&src, &snap).is_err(), "an existing name is refused");
        });
        let _ = Command::new("umount").arg(&mnt).status();
        result.unwrap();
    }
}
