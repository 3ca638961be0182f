//! Opening a state directory for writing: the lock, the data subvolume, the ledger (with
//! recovery) and the index (caught up). Used by the daemon and the offline commands.

use crate::btrfs;
use crate::config::Config;
use crate::index::Index;
use crate::layout::Layout;
use crate::ledger::{Ledger, LedgerOptions, OpenReport};
use crate::lock::DataDirLock;
use anyhow::{Context, Result, bail};

/// A state directory opened for writing.
pub struct Store {
    pub layout: Layout,
    pub ledger: Ledger,
    pub index: Index,
    pub report: OpenReport,
    lock: DataDirLock,
}

impl Store {
    /// Opens (creating on first use) the state directory at `layout.root`.
    pub fn open(layout: &Layout, config: &Config) -> Result<Self> {
        if layout.read_only {
            bail!("{} is a snapshot (it holds MANIFEST and ledger/ itself) and cannot be written", layout.root.display());
        }
        std::fs::create_dir_all(&layout.root).with_context(|| format!("creating {}", layout.root.display()))?;
        let lock = DataDirLock::acquire(&layout.root)?;
        prepare_data_dir(layout, config.agent.require_btrfs)?;
        let options = LedgerOptions { host: config.host(), segment_max_bytes: config.ledger.segment_max_bytes };
        let (ledger, report) = Ledger::open(&layout.ledger_dir(), options)?;
        let mut index = Index::open(&layout.index_path())?;
        if index.covered_seq()? > ledger.head_seq() {
            // The index claims events the ledger lacks (the ledger was replaced or truncated):
            // the ledger is the truth, so the index is rebuilt from it.
            tracing::warn!(index = index.covered_seq()?, ledger = ledger.head_seq(), "index is ahead of the ledger; rebuilding it");
            index.clear_all()?;
        }
        let added = index.catch_up(&layout.ledger_dir(), ledger.head_seq())?;
        if added > 0 {
            tracing::info!(events = added, "index caught up from the ledger");
        }
        Ok(Self { layout: layout.clone(), ledger, index, report, lock })
    }

    /// Splits the store into its ledger and index (the lock is returned to keep it held).
    pub fn into_parts(self) -> (Layout, Ledger, Index, OpenReport, DataDirLock) {
        (self.layout, self.ledger, self.index, self.report, self.lock)
    }
}

/// Makes sure `data/` exists, as a Btrfs subvolume when the state directory is on Btrfs.
fn prepare_data_dir(layout: &Layout, require_btrfs: bool) -> Result<()> {
    let on_btrfs = btrfs::is_btrfs(&layout.root)?;
    if require_btrfs && !on_btrfs {
        bail!(
            "{} is not on Btrfs; snapshots and replication need Btrfs (set agent.require_btrfs = false to run without them)",
            layout.root.display()
        );
    }
    if !layout.data.exists() {
        if on_btrfs {
            btrfs::create_subvolume(&layout.data)?;
            tracing::info!(path = %layout.data.display(), "created the data subvolume");
        } else {
            std::fs::create_dir_all(&layout.data).with_context(|| format!("creating {}", layout.data.display()))?;
        }
    }
    Ok(())
}
