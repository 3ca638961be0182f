//! What a received snapshot may hold, checked on disk after `btrfs receive`: the data set's
//! own files and nothing else (MANIFEST, ledger segments, the index, the graph checkpoint),
//! each a regular file or a directory, owned by root, without setuid, setgid, sticky or
//! world-write bits and without extended attributes beyond an SELinux label.

use anyhow::{Context, Result, bail};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Entries a snapshot may hold in all.
const MAX_ENTRIES: usize = 100_000;

/// Top-level entries and whether each is a directory.
const TOP_LEVEL: &[(&str, bool)] = &[
    ("MANIFEST", false),
    ("ledger", true),
    ("index.sqlite", false),
    ("index.sqlite-wal", false),
    ("index.sqlite-shm", false),
    ("hnsw", true),
    ("witness", true),
];

pub fn check(root: &Path) -> Result<()> {
    let mut count = 0usize;
    check_entry(root, root, &mut count)?;
    for entry in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some((_, dir)) = TOP_LEVEL.iter().find(|(n, _)| *n == name) else {
            bail!("unexpected entry {name:?} in the received snapshot");
        };
        let path = entry.path();
        check_entry(root, &path, &mut count)?;
        if *dir {
            if !path.symlink_metadata()?.is_dir() {
                bail!("{name} must be a directory");
            }
            for inner in std::fs::read_dir(&path)? {
                let inner = inner?;
                let inner_name = inner.file_name();
                let inner_name = inner_name.to_string_lossy();
                let ok = match &*name {
                    "ledger" => {
                        inner_name.len() == 26 && inner_name.ends_with(".jsonl") && inner_name[..20].bytes().all(|b| b.is_ascii_digit())
                    }
                    "witness" => {
                        let name = inner_name.strip_suffix(".tmp").unwrap_or(&inner_name);
                        name.len() == 25 && name.ends_with(".note") && name[..20].bytes().all(|b| b.is_ascii_digit())
                    }
                    _ => is_checkpoint_file(&inner_name),
                };
                if !ok {
                    bail!("unexpected entry {name}/{inner_name} in the received snapshot");
                }
                check_entry(root, &inner.path(), &mut count)?;
                if !inner.path().symlink_metadata()?.is_file() {
                    bail!("{name}/{inner_name} must be a regular file");
                }
            }
        } else if !path.symlink_metadata()?.is_file() {
            bail!("{name} must be a regular file");
        }
    }
    Ok(())
}

/// `CHECKPOINT` or `graph-<seq>.graph` (or either being written, `.tmp`).
fn is_checkpoint_file(name: &str) -> bool {
    let name = name.strip_suffix(".tmp").unwrap_or(name);
    name == "CHECKPOINT"
        || name
            .strip_prefix("graph-")
            .and_then(|n| n.strip_suffix(".graph"))
            .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

/// One entry: a regular file or directory (never followed if it is a link), root's, plain
/// modes, no extended attributes but an SELinux label.
fn check_entry(root: &Path, path: &Path, count: &mut usize) -> Result<()> {
    *count += 1;
    if *count > MAX_ENTRIES {
        bail!("more than {MAX_ENTRIES} entries in the received snapshot");
    }
    let shown = path.strip_prefix(root).unwrap_or(path).display().to_string();
    let meta = path.symlink_metadata().with_context(|| format!("reading {shown}"))?;
    let kind = meta.file_type();
    if !(kind.is_file() || kind.is_dir()) {
        bail!("{shown:?} is neither a regular file nor a directory (a link, device, FIFO or socket)");
    }
    if meta.mode() & 0o7002 != 0 {
        bail!("{shown:?} has mode {:o} (setuid, setgid, sticky or world-writable)", meta.mode() & 0o7777);
    }
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if (meta.uid() != 0 && meta.uid() != uid) || (meta.gid() != 0 && meta.gid() != gid) {
        bail!("{shown:?} belongs to {}:{}, not root", meta.uid(), meta.gid());
    }
    for name in xattr_names(path)? {
        if name != "security.selinux" {
            bail!("{shown:?} carries the extended attribute {name}");
        }
    }
    Ok(())
}

fn xattr_names(path: &Path) -> Result<Vec<String>> {
    let c = CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid C string and a buffer of the stated length; llistxattr does not follow links.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) {
            bail!("{} carries too many extended attributes", path.display());
        }
        if err.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(err).with_context(|| format!("listing extended attributes of {}", path.display()));
    }
    Ok(buf[..n as usize].split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_data_sets_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data@1");
        std::fs::create_dir_all(root.join("ledger")).unwrap();
        std::fs::write(root.join("ledger/00000000000000000001.jsonl"), b"").unwrap();
        std::fs::write(root.join("MANIFEST"), b"{}").unwrap();
        std::fs::write(root.join("index.sqlite"), b"").unwrap();
        check(&root).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("ledger/00000000000000000002.jsonl")).unwrap();
        assert!(check(&root).unwrap_err().to_string().contains("neither a regular file"));
        std::fs::remove_file(root.join("ledger/00000000000000000002.jsonl")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("MANIFEST"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert!(check(&root).unwrap_err().to_string().contains("setuid"));
        std::fs::set_permissions(root.join("MANIFEST"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(root.join("run-me.sh"), b"").unwrap();
        assert!(check(&root).unwrap_err().to_string().contains("unexpected entry"));
    }
}
