//! Consistent cuts of the data subvolume: under the ledger's write barrier the index is
//! caught up and checkpointed out of its WAL, a MANIFEST is written, and a read-only Btrfs
//! snapshot `.snapshots/data@S` is taken (S = every event through it is vectorized).

use crate::btrfs;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a snapshot holds, written as `MANIFEST` at the top of the data subvolume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Every event through this seq is in the ledger, the index and has its vector.
    pub seq: u64,
    /// The ledger's head at the cut (≥ seq; events after seq have no vector yet).
    pub head_seq: u64,
    pub head_hash: String,
    pub vectorized_seq: u64,
    pub model_id: String,
    pub model_sha256: String,
    pub created_unix_ns: i64,
    pub host: String,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("MANIFEST");
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `MANIFEST` atomically (temp file, rename). No fsync: it is written just
    /// before a snapshot, and taking a Btrfs snapshot flushes the subvolume's dirty data
    /// into the snapshot itself; the live copy is rewritten at every snapshot.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("MANIFEST.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, dir.join("MANIFEST"))?;
        Ok(())
    }
}

/// The name of the snapshot covering `seq`.
pub fn snapshot_name(seq: u64) -> String {
    format!("data@{seq}")
}

/// The seq in a snapshot's name (`data@42` → 42).
pub fn snapshot_seq(name: &str) -> Option<u64> {
    name.strip_prefix("data@")?.parse().ok()
}

/// Takes a read-only snapshot of `data` as `snapshots/data@seq`.
pub fn take(data: &Path, snapshots: &Path, seq: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(snapshots).with_context(|| format!("creating {}", snapshots.display()))?;
    let target = snapshots.join(snapshot_name(seq));
    btrfs::snapshot_read_only(data, &target)?;
    Ok(target)
}

/// The snapshots in a directory, oldest first.
pub fn list(snapshots: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(snapshots)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((snapshot_seq(&e.file_name().to_string_lossy())?, e.path())))
        .collect();
    out.sort_by_key(|(s, _)| *s);
    out
}

/// Deletes a snapshot subvolume.
pub fn delete(path: &Path) -> Result<()> {
    btrfs::run(Command::new("btrfs").args(["subvolume", "delete"]).arg(path))
}
