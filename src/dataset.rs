//! Opening a data set — a live state directory, a snapshot, or a replica's received copy —
//! in one of two explicit modes:
//!
//! - [`Mode::Writable`] (the daemon, `import`, `rebuild`, `reembed`): takes the directory's
//!   lock, creates the data subvolume on first use, opens the ledger (truncating a torn
//!   tail) and the index (migrated and caught up with the ledger);
//! - [`Mode::ReadOnly`] (every inspecting command, snapshots, replicas): no lock, no repair,
//!   the index opened so that SQLite refuses writes. A read command can never write.

use crate::btrfs;
use crate::config::Config;
use crate::index::Index;
use crate::layout::Layout;
use crate::ledger::{Ledger, LedgerOptions, OpenReport};
use crate::lock::DataDirLock;
use anyhow::{Context, Result, bail};

/// How a data set is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Writable,
    ReadOnly,
}

/// An opened data set. The writable one holds the lock for as long as it lives.
pub struct DataSet {
    layout: Layout,
    mode: Mode,
    ledger: Option<Ledger>,
    index: Option<Index>,
    report: Option<OpenReport>,
    _lock: Option<DataDirLock>,
}

impl DataSet {
    pub fn open(layout: &Layout, config: &Config, mode: Mode) -> Result<Self> {
        match mode {
            Mode::Writable => Self::open_writable(layout, config),
            Mode::ReadOnly => Self::open_read_only(layout),
        }
    }

    /// Opens (creating on first use) the state directory at `layout.root` for writing.
    pub fn open_writable(layout: &Layout, config: &Config) -> Result<Self> {
        if layout.read_only {
            bail!("{} is a snapshot (it holds MANIFEST and ledger/ itself) and cannot be written", layout.root.display());
        }
        std::fs::create_dir_all(&layout.root).with_context(|| format!("creating {}", layout.root.display()))?;
        let lock = DataDirLock::acquire(&layout.root)?;
        prepare_data_dir(layout, config.agent.require_btrfs)?;
        let options = LedgerOptions { host: config.host(), segment_max_bytes: config.ledger.segment_max_bytes };
        let (mut ledger, report) = Ledger::open(&layout.ledger_dir(), options)?;
        let mut index = open_or_set_aside(layout, &mut ledger)?;
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
        Ok(Self {
            layout: layout.clone(),
            mode: Mode::Writable,
            ledger: Some(ledger),
            index: Some(index),
            report: Some(report),
            _lock: Some(lock),
        })
    }

    /// Opens a data set for reading only. Its index may trail its ledger (when no daemon
    /// caught it up); [`unindexed`](Self::unindexed) says by how much.
    pub fn open_read_only(layout: &Layout) -> Result<Self> {
        if !layout.read_only && layout.root.join("agent.lock").exists() {
            // A running daemon keeps its live index to itself (see `index::LIVE_VFS`).
            if DataDirLock::acquire(&layout.root).is_err() {
                bail!(
                    "{} is in use by a running daemon, which keeps its index to itself; ask the daemon (leave out --data-dir), or read one of its snapshots in {}",
                    layout.root.display(),
                    layout.snapshots_dir().display()
                );
            }
        }
        let path = layout.index_path();
        if !path.is_file() {
            bail!("no index at {} (run `ovs-port-agent rebuild --data-dir {}`)", path.display(), layout.root.display());
        }
        let index = if layout.read_only { Index::open_snapshot(&path)? } else { Index::open_read_only(&path)? };
        Ok(Self { layout: layout.clone(), mode: Mode::ReadOnly, ledger: None, index: Some(index), report: None, _lock: None })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn index(&self) -> &Index {
        self.index.as_ref().expect("the index was taken")
    }

    pub fn index_mut(&mut self) -> &mut Index {
        self.index.as_mut().expect("the index was taken")
    }

    /// The writable ledger (writable mode only).
    pub fn ledger_mut(&mut self) -> &mut Ledger {
        self.ledger.as_mut().expect("a writable data set has its ledger")
    }

    /// What opening the ledger found and repaired (writable mode only).
    pub fn report(&self) -> &OpenReport {
        self.report.as_ref().expect("a writable data set has its open report")
    }

    /// Hands the index to its long-lived owner (the engine's indexer); the lock stays here.
    pub fn take_index(&mut self) -> Index {
        self.index.take().expect("the index was taken")
    }

    /// Hands the ledger to its long-lived owner (the engine's writer thread).
    pub fn take_ledger(&mut self) -> Ledger {
        self.ledger.take().expect("a writable data set has its ledger")
    }

    /// The writer's lock, for an owner that took the ledger and the index and must keep the
    /// directory locked while it runs.
    pub fn into_lock(self) -> DataDirLock {
        self._lock.expect("a writable data set holds its lock")
    }

    /// Events in the ledger that the index does not hold yet (read-only mode: nothing
    /// catches the index up). Reads the ledger's last segment to find the head.
    pub fn unindexed(&self) -> Result<u64> {
        let head = crate::ledger::head_seq(&self.layout.ledger_dir())?;
        Ok(head.saturating_sub(self.index().covered_seq()?))
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

/// Opens the writable index after checking every page of it with a read-only connection (so
/// nothing is written to a damaged file first). A damaged index (corrupt pages, not a
/// database) is derived data: it is moved out of the streamed subvolume to
/// `<state>/damaged/index.sqlite.<unix s>` (its WAL first, so a crash in between never leaves
/// an old WAL beside a new index), a new one is made and caught up from the ledger by the
/// caller, and vectors are embedded again by the engine. The repair is recorded in the
/// ledger (`agent:index`, `index.rebuilt`). An index of a newer schema is not damaged: that
/// is an error (a downgrade), never a rebuild.
fn open_or_set_aside(layout: &Layout, ledger: &mut Ledger) -> Result<Index> {
    let path = layout.index_path();
    if let Some(problem) = Index::damage_of(&path).with_context(|| format!("checking {}", path.display()))? {
        let kept = set_aside(&path, &layout.root.join("damaged"))?;
        tracing::error!(%problem, kept = %kept.display(), "the index is damaged; rebuilding it from the ledger (vectors are embedded again)");
        let event = crate::event::NewEvent::new(
            "agent",
            "agent:index",
            "index.rebuilt",
            crate::event::Priority::High,
            serde_json::json!({"reason": problem, "damaged_copy": kept.display().to_string()}),
        )
        .with_summary(format!("the index was damaged ({problem}); rebuilt from the ledger"));
        if let Err(e) = ledger.append_batch(&[event]) {
            tracing::warn!(error = %e, "could not record the index rebuild in the ledger");
        }
    }
    Ok(Index::open(&path)?)
}

/// Moves `index.sqlite` and its WAL files into `dir` (outside the data subvolume, so the
/// damaged copy is never streamed); copies when a rename cannot cross the subvolume.
fn set_aside(path: &std::path::Path, dir: &std::path::Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join(format!("index.sqlite.{}", crate::event::now_unix_s()));
    for suffix in ["-wal", "-shm", ""] {
        let from = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if !from.exists() {
            continue;
        }
        let to = std::path::PathBuf::from(format!("{}{suffix}", target.display()));
        if std::fs::rename(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("keeping a copy of {} in {}", from.display(), dir.display()))?;
            std::fs::remove_file(&from).with_context(|| format!("removing {}", from.display()))?;
        }
    }
    for d in [dir, path.parent().unwrap_or(dir)] {
        std::fs::File::open(d).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", d.display()))?;
    }
    Ok(target)
}
