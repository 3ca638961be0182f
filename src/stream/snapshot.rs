//! Consistent cuts of the data subvolume: at the engine's cut (index caught up and folded
//! out of its WAL, ledger appends held) a MANIFEST is written and a read-only Btrfs
//! snapshot `.snapshots/data@S` is taken (S = every event through it is vectorized).

use crate::anchor::{self, Checkpoint, NOTE_ED25519, Signer};
use crate::btrfs;
use crate::durable;
use crate::engine::{Cut, Engine};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A MANIFEST is a few hundred bytes; anything much larger is not one.
const MAX_MANIFEST_BYTES: u64 = 64 << 10;

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
    /// The verifier key of the primary's checkpoint signatures (`witness/<head_seq>.note`),
    /// which replicas pin on first sight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<String>,
}

impl Manifest {
    /// The MANIFEST of a cut.
    pub fn of(cut: &Cut, host: &str) -> Self {
        Self {
            seq: cut.vectorized_seq,
            head_seq: cut.head_seq,
            head_hash: hex::encode(cut.head_hash),
            vectorized_seq: cut.vectorized_seq,
            model_id: cut.model_id.clone(),
            model_sha256: cut.model_sha256.clone(),
            created_unix_ns: crate::event::now_ns(),
            host: host.to_owned(),
            checkpoint_key: None,
        }
    }

    /// Reads `dir/MANIFEST` (a regular file of bounded size: it may come from a replica's
    /// received, untrusted snapshot).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("MANIFEST");
        serde_json::from_slice(&durable::read_limited(&path, MAX_MANIFEST_BYTES)?).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `MANIFEST` durably.
    pub fn write(&self, dir: &Path) -> Result<()> {
        durable::replace(&dir.join("MANIFEST"), &serde_json::to_vec_pretty(self)?)
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

/// Takes a consistent snapshot `snapshots/data@S` when anything was vectorized after
/// `after_seq`: at the engine's cut, the MANIFEST and the head's signed checkpoint are
/// written and the subvolume snapshotted.
pub async fn take(
    engine: &Engine,
    snapshots: &Path,
    after_seq: u64,
    host: String,
    signer: Arc<Signer>,
) -> Result<Option<(Manifest, PathBuf)>> {
    std::fs::create_dir_all(snapshots).with_context(|| format!("creating {}", snapshots.display()))?;
    let dir = snapshots.to_owned();
    let taken = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = taken.clone();
    let cut = engine
        .cut(after_seq, move |cut| {
            let mut manifest = Manifest::of(cut, &host);
            manifest.checkpoint_key = Some(signer.vkey(NOTE_ED25519));
            let time = u64::try_from(manifest.created_unix_ns / 1_000_000_000).unwrap_or(0);
            let checkpoint = Checkpoint { origin: signer.name.clone(), seq: cut.head_seq, head: cut.head_hash, time };
            anchor::checkpoint::write_signed(&cut.data_dir, &signer, &checkpoint)?;
            manifest.write(&cut.data_dir)?;
            let target = snapshot_into(&cut.data_dir, &dir, manifest.seq)?;
            *out.lock().expect("snapshot slot") = Some((manifest, target));
            Ok(())
        })
        .await?;
    Ok(cut.and_then(|_| taken.lock().expect("snapshot slot").take()))
}

/// Takes a read-only snapshot of the subvolume `data` as `snapshots/data@seq` (no cut: the
/// caller makes sure nothing writes meanwhile).
pub fn snapshot_into(data: &Path, snapshots: &Path, seq: u64) -> Result<PathBuf> {
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
