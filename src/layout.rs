//! Where things live inside a state directory (or a snapshot of one).
//!
//! ```text
//! <state>/agent.lock          writer lock (outside the subvolume, never snapshotted)
//! <state>/data/               Btrfs subvolume: ledger/, index.sqlite, hnsw/, MANIFEST
//! <state>/.snapshots/data@S   read-only snapshots
//! ```

use std::path::{Path, PathBuf};

/// The directories of one data set: a live state directory, or a snapshot / received copy
/// (a directory holding `ledger/` directly), which is read-only.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state directory (for a snapshot: the snapshot itself).
    pub root: PathBuf,
    /// The directory holding `ledger/`, `index.sqlite`, `hnsw/`.
    pub data: PathBuf,
    /// True for a snapshot or a replica's received copy.
    pub read_only: bool,
}

impl Layout {
    /// A live state directory (created on first use by the writer).
    pub fn state(root: &Path) -> Self {
        Self { root: root.to_owned(), data: root.join("data"), read_only: false }
    }

    /// Picks the layout for a directory given on the command line: a snapshot when it
    /// holds `MANIFEST` and `ledger/` itself, a state directory otherwise.
    pub fn detect(dir: &Path) -> Self {
        if dir.join("ledger").is_dir() && dir.join("MANIFEST").is_file() {
            Self { root: dir.to_owned(), data: dir.to_owned(), read_only: true }
        } else {
            Self::state(dir)
        }
    }

    pub fn ledger_dir(&self) -> PathBuf {
        self.data.join("ledger")
    }

    pub fn index_path(&self) -> PathBuf {
        self.data.join("index.sqlite")
    }

    pub fn hnsw_dir(&self) -> PathBuf {
        self.data.join("hnsw")
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.data.join("MANIFEST")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join(".snapshots")
    }
}
