//! A loop-mounted Btrfs per test.

use super::run_ok;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Btrfs file system on a loop-mounted image file, unmounted and removed on drop.
pub struct BtrfsMount {
    _dir: tempfile::TempDir,
    pub mount: PathBuf,
}

impl BtrfsMount {
    pub fn new(size_mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(size_mib * 1024 * 1024).unwrap();
        drop(f);
        let mut mkfs = Command::new("mkfs.btrfs");
        mkfs.arg("-q").arg("-f");
        if size_mib < 256 {
            mkfs.arg("--mixed");
        }
        run_ok(mkfs.arg(&image));
        run_ok(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount));
        Self { _dir: dir, mount }
    }

    pub fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for BtrfsMount {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount").arg(&self.mount).status().map(|s| s.success()).unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
