//! The replica role: serves read-only queries from a store of its own, `DIR/.serving`,
//! derived from the snapshots `replica-receive` verified. Events and element states come
//! from the verified ledger (never from the received index, whose rows are only checked);
//! vectors are copied from the received index for the verified events (well-formed unit
//! vectors only) and inserted into a graph the replica keeps and checkpoints itself.
//! Nothing is re-embedded: the model is loaded for queries only.
//!
//! A newer verified snapshot is taken in by adding what arrived — the new ledger records,
//! their vectors — to the store, the graph and the filter catalog, then moving the served
//! head; a query running meanwhile may already see some of the new events, never an event
//! outside a verified snapshot. Switching costs what arrived, not the history.

mod fleet;
mod watch;

pub use crate::names::origin_object_path;
pub use fleet::{Fleet, FromHost, OriginReport, OriginSelect, Scope};
pub use watch::StateWatch;

use crate::config::Config;
use crate::embed::QueryEmbedder;
use crate::index::{EventRow, Index};
use crate::layout::Layout;
use crate::lock::DataDirLock;
use crate::search::{Answer, Depth, ReadMode, Readers, SearchState, catalog_events_after, load_graph};
use crate::stream::receive::{self, ReplicaState};
use crate::stream::snapshot::Manifest;
use crate::vector::{Catalog, Filters, VectorIndex};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A finite vector of unit length (what the receiver let through for new events; older
/// ranges are checked here as they are copied).
fn is_unit(v: &[f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm - 1.0).abs() <= 1e-3
}

/// Where the replica daemon keeps its store inside the receive directory.
pub const SERVING_DIR: &str = ".serving";
/// Vectors copied per batch.
const VECTOR_BATCH: usize = 4096;

/// The verified snapshot being served.
pub struct Served {
    pub name: String,
    pub manifest: Manifest,
    pub path: PathBuf,
}

pub struct ReplicaView {
    dir: PathBuf,
    serving: Layout,
    config: Config,
    index: Mutex<Index>,
    search: Arc<SearchState>,
    queries: Arc<QueryEmbedder>,
    current: RwLock<Option<Arc<Served>>>,
    vectorized_seq: AtomicU64,
    /// Vectors in the last graph checkpoint, and added since.
    checkpoint: Mutex<(u64, u64)>,
    _lock: DataDirLock,
}

impl ReplicaView {
    /// Opens (creating) the serving store of the receive directory `dir` and takes in the
    /// newest verified snapshot; `queries` is the query model, shared by every origin.
    pub fn open(dir: &Path, config: &Config, queries: Arc<QueryEmbedder>) -> Result<Self> {
        let root = dir.join(SERVING_DIR);
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let lock = DataDirLock::acquire(&root)?;
        let serving = Layout { root: root.clone(), data: root.clone(), read_only: false };
        let index = Index::open(&serving.index_path())?;
        if index.model()?.is_some_and(|(_, sha)| sha != queries.model_sha256()) {
            bail!(
                "{} holds vectors of another model than the configured one; configure the primary's model (or remove {} to rebuild it)",
                root.display(),
                root.display()
            );
        }
        let mut catalog = Catalog::default();
        catalog_events_after(&mut catalog, &index, 0)?;
        let (graph, checkpoint_count, since) = load_graph(&serving.hnsw_dir(), &config.vector, &index, queries.model_sha256())?;
        let search = Arc::new(SearchState::new(
            graph,
            Arc::new(RwLock::new(catalog)),
            Readers::new(&serving.index_path(), ReadMode::Live),
            config.vector.ef_search,
        ));
        let view = Self {
            dir: dir.to_owned(),
            vectorized_seq: AtomicU64::new(index.vectorized_seq()?),
            index: Mutex::new(index),
            serving,
            config: config.clone(),
            search,
            queries,
            current: RwLock::new(None),
            checkpoint: Mutex::new((checkpoint_count, since)),
            _lock: lock,
        };
        view.refresh()?;
        Ok(view)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes in the newest verified snapshot if it is not the one being served; returns
    /// true when it switched.
    pub fn refresh(&self) -> Result<bool> {
        // The receiver keeps only the newest few snapshots: one taken in while newer ones
        // arrive can be deleted under the reader. Then the newest is taken instead.
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            let Some(name) = ReplicaState::load(&self.dir).newest else { return Ok(false) };
            match self.take_in_newest(&name) {
                Err(e) if attempt < ATTEMPTS && !self.dir.join(&name).exists() => {
                    tracing::debug!(snapshot = %name, error = %format!("{e:#}"), "a newer snapshot replaced it while it was taken in; taking the newest");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Serves snapshot `name` unless it is served already.
    fn take_in_newest(&self, name: &str) -> Result<bool> {
        if self.current.read().expect("replica lock").as_ref().is_some_and(|c| c.name == name) {
            return Ok(false);
        }
        let name = name.to_owned();
        let path = self.dir.join(&name);
        let manifest = Manifest::read(&path)?;
        if manifest.model_sha256 != self.queries.model_sha256() {
            bail!(
                "snapshot {name} holds vectors of model {} ({}); this replica is configured with sha256 {}",
                manifest.model_id,
                manifest.model_sha256,
                self.queries.model_sha256()
            );
        }
        let started = std::time::Instant::now();
        let added = self.take_in(&path, &manifest)?;
        *self.current.write().expect("replica lock") = Some(Arc::new(Served { name: name.clone(), manifest, path }));
        tracing::info!(snapshot = %name, events = added.0, vectors = added.1, ms = started.elapsed().as_millis() as u64, "serving a new snapshot");
        Ok(true)
    }

    /// Adds the snapshot's new ledger records and their vectors to the store; returns how
    /// many of each.
    fn take_in(&self, snapshot: &Path, manifest: &Manifest) -> Result<(u64, u64)> {
        let mut index = self.index.lock().expect("serving index lock");
        if !self.continues_served_history(&index, snapshot, manifest)? {
            // The receive directory was re-seeded with another history: start over.
            tracing::warn!(
                served = index.covered_seq()?,
                snapshot = manifest.head_seq,
                "the verified history is not the served one; rebuilding the serving store"
            );
            index.clear_all()?;
            *self.search.graph.write().expect("graph lock") = Arc::new(VectorIndex::new(&self.config.vector, 0));
            *self.search.catalog.write().expect("catalog lock") = Catalog::default();
            self.vectorized_seq.store(0, Ordering::Relaxed);
        }
        index.bind_model(&manifest.model_id, &manifest.model_sha256)?;
        let events = index.catch_up(&snapshot.join("ledger"), manifest.head_seq)?;
        // From what the catalog holds (not from where this call began): a call that failed
        // half-way is completed by the next.
        {
            let mut catalog = self.search.catalog.write().expect("catalog lock");
            let held = catalog.last_seq();
            catalog_events_after(&mut catalog, &index, held)?;
        }
        let received = Index::open_snapshot(&snapshot.join("index.sqlite"))?;
        let graph = self.search.graph.read().expect("graph lock").clone();
        let mut copied = 0u64;
        // Each batch is stored, inserted and counted before the next, so a retry never
        // inserts a vector twice.
        loop {
            let after = self.vectorized_seq.load(Ordering::Relaxed);
            if after >= manifest.seq {
                break;
            }
            let rows = match received.vectors_after(after, VECTOR_BATCH) {
                Ok(rows) => rows,
                // A damaged vector row in a range this snapshot's check did not cover (older
                // than its predecessor): skipped, the event stays findable by its words.
                // Gone under the reader (the receiver's retention): not damage; taken again
                // from the newest snapshot.
                Err(e) if !snapshot.exists() => return Err(anyhow!("{} was deleted while it was read: {e}", snapshot.display())),
                Err(e) => {
                    tracing::warn!(error = %e, after, "skipping unreadable received vectors");
                    self.vectorized_seq.store(manifest.seq, Ordering::Relaxed);
                    break;
                }
            };
            let batch: Vec<(u64, Vec<f32>)> = rows.into_iter().filter(|(seq, v)| *seq <= manifest.seq && is_unit(v)).collect();
            let through = batch.last().map(|(s, _)| *s).unwrap_or(manifest.seq);
            let items: Vec<(u64, Arc<[f32]>)> = batch.iter().map(|(s, v)| (*s, Arc::from(v.as_slice()))).collect();
            index.put_vectors(&items, through)?;
            graph.insert_many(&batch);
            copied += batch.len() as u64;
            self.vectorized_seq.store(through, Ordering::Relaxed);
            if batch.len() < VECTOR_BATCH {
                break;
            }
        }
        index.put_vectors(&[], manifest.seq)?;
        self.vectorized_seq.store(manifest.seq, Ordering::Relaxed);
        self.maybe_checkpoint(&index, copied, manifest.seq)?;
        Ok((events, copied))
    }

    /// The snapshot's ledger holds the served history: the served head is in it with the
    /// same hash.
    fn continues_served_history(&self, index: &Index, snapshot: &Path, manifest: &Manifest) -> Result<bool> {
        let covered = index.covered_seq()?;
        if covered == 0 {
            return Ok(true);
        }
        if covered > manifest.head_seq {
            return Ok(false);
        }
        let Some(served) = index.event(covered)? else { return Ok(false) };
        let mut found = None;
        crate::ledger::LedgerCursor::new(&snapshot.join("ledger"), covered).read_through(covered, |r| {
            found = Some(r.hash_hex());
            Ok(())
        })?;
        Ok(found.as_deref() == Some(served.hash.as_str()))
    }

    /// Checkpoints the replica's own graph when what was added since reaches a fraction of it.
    fn maybe_checkpoint(&self, index: &Index, added: u64, seq: u64) -> Result<()> {
        let mut checkpoint = self.checkpoint.lock().expect("checkpoint lock");
        checkpoint.1 += added;
        let (count, since) = *checkpoint;
        if since < self.config.vector.checkpoint_min_vectors || (since as f64) < self.config.vector.checkpoint_fraction * count as f64 {
            return Ok(());
        }
        index.make_durable()?;
        let graph = self.search.graph.read().expect("graph lock").clone();
        let info = graph.checkpoint(&self.serving.hnsw_dir(), seq, Vec::new(), self.queries.model_sha256())?;
        *checkpoint = (info.count, 0);
        Ok(())
    }

    pub fn current(&self) -> Result<Arc<Served>> {
        self.current
            .read()
            .expect("replica lock")
            .clone()
            .ok_or_else(|| anyhow!("no verified snapshot has arrived in {} yet", self.dir.display()))
    }

    pub fn vectorized_seq(&self) -> u64 {
        self.vectorized_seq.load(Ordering::Relaxed)
    }

    pub fn search_state(&self) -> &Arc<SearchState> {
        &self.search
    }

    /// The answer to a query already planned and embedded (once for many origins).
    pub fn answer(
        &self,
        plan: &crate::search::Plan,
        vector: Option<&[f32]>,
        limit: usize,
        filters: &Filters,
        depth: Depth,
    ) -> Result<Answer> {
        let current = self.current()?;
        let mut answer = self.search.hybrid_at(plan, vector, limit, filters, depth)?;
        answer.note_unvectorized(
            current.manifest.head_seq.saturating_sub(self.vectorized_seq()),
            "the primary embeds them; they arrive with a later snapshot",
        );
        Ok(answer)
    }

    /// The exact similarity of `vector` to the stored vectors of `seqs` (those that have one).
    pub fn exact_similarities(&self, vector: &[f32], seqs: &[u64]) -> Result<Vec<(u64, f32)>> {
        self.search.readers.with(|index| SearchState::exact_scores(index, vector, seqs))
    }

    /// Embeds text with the model the served vectors come from (configurations to compare).
    pub fn embed_text(&self, text: &str) -> Result<std::sync::Arc<[f32]>> {
        self.queries.embed(text)
    }

    pub fn history(&self, element_id: &str, limit: usize) -> Result<Vec<EventRow>> {
        self.current()?;
        self.search.readers.with(|i| Ok(i.history(element_id, limit)?))
    }

    pub fn counts(&self) -> Result<(u64, u64)> {
        self.search.readers.with(|i| Ok(i.counts()?))
    }

    /// The newest refusals of the receiver (for stats).
    pub fn rejections(&self) -> Vec<serde_json::Value> {
        receive::recent_rejections(&self.dir, 5)
    }
}
