//! The primary's pipeline, assembled: ledger writer (group commit) → indexer thread (SQLite,
//! filter catalog) → embedding pool → vectors (SQLite + HNSW). The daemon and the tests
//! drive it through this one type; it knows nothing of D-Bus.

mod indexer;

pub use indexer::{IndexerStats, SnapshotRequest};

use crate::config::Config;
use crate::embed::{EmbedPool, ModelFiles};
use crate::event::NewEvent;
use crate::index::{EventRow, Index};
use crate::layout::Layout;
use crate::ledger::{LedgerCursor, LedgerError, LedgerWriter, Record, WriterThread, scan};
use crate::lock::DataDirLock;
use crate::search::{Hit, Readers, SearchState};
use crate::store::Store;
use crate::vector::{Catalog, Filters, catalog_events_after, load_graph};
use anyhow::{Context, Result, anyhow};
use indexer::{CheckpointPolicy, Indexer, IndexerMsg};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::{broadcast, watch};

pub struct Engine {
    pub layout: Layout,
    writer: LedgerWriter,
    writer_thread: Mutex<Option<WriterThread>>,
    pool: Arc<EmbedPool>,
    search: Arc<SearchState>,
    indexer_tx: Mutex<Sender<IndexerMsg>>,
    indexer_thread: Mutex<Option<JoinHandle<Result<()>>>>,
    indexer_stats: Arc<IndexerStats>,
    vectorized: watch::Receiver<u64>,
    records: broadcast::Sender<Arc<Record>>,
    started: Instant,
    _lock: DataDirLock,
}

impl Engine {
    /// Opens the state directory, loads the model and the vectors, and starts the pipeline.
    /// Returns once everything is ready to take events and queries.
    pub fn open(layout: &Layout, config: &Config) -> Result<Self> {
        let store = Store::open(layout, config)?;
        let (layout, ledger, index, report, lock) = store.into_parts();
        if let Some(damage) = &report.damage {
            tracing::error!(%damage, "serving read-only: the ledger is damaged");
        }
        let files = ModelFiles::locate(&config.embedding)?;
        index.bind_model(&files.model_id(), &files.model_sha256)?;

        let (indexer_tx, indexer_rx) = channel();
        let results_tx = Mutex::new(indexer_tx.clone());
        let pool = Arc::new(EmbedPool::start(
            &files,
            config.embedding.workers,
            config.embedding.max_length,
            config.embedding.queue_capacity,
            config.embedding.cache_entries,
            Box::new(move |e| {
                let _ = results_tx.lock().expect("results lock").send(IndexerMsg::Embedded(e));
            }),
        )?);

        let started = Instant::now();
        let mut catalog = Catalog::default();
        catalog_events_after(&mut catalog, &index, 0)?;
        let vectorized_seq = index.vectorized_seq()?;
        let (graph, checkpoint_count, since_checkpoint) = load_graph(&layout.hnsw_dir(), &config.vector, &index, &files.model_sha256)?;
        tracing::info!(
            events = catalog.len(),
            vectors = graph.len(),
            vectorized_seq,
            ms = started.elapsed().as_millis() as u64,
            "vector index ready"
        );
        let search = Arc::new(SearchState {
            graph: RwLock::new(Arc::new(graph)),
            catalog: Arc::new(RwLock::new(catalog)),
            readers: Readers::new(&layout.index_path(), false),
            ef_search: config.vector.ef_search,
        });

        let (records_tx, _) = broadcast::channel(4096);
        let hook_records = records_tx.clone();
        let hook_indexer = Mutex::new(indexer_tx.clone());
        let (writer, writer_thread) = LedgerWriter::spawn_with_hook(
            ledger,
            config.ledger.queue_capacity,
            config.ledger.max_batch,
            Box::new(move |batch| {
                for r in batch {
                    // Lagging subscribers lose old notifications, never records: the
                    // ledger is the truth and is read from disk by the indexer.
                    let _ = hook_records.send(Arc::new(r.clone()));
                }
                let _ = hook_indexer.lock().expect("indexer lock").send(IndexerMsg::Committed);
            }),
        );

        let done: BTreeSet<u64> = index.vector_seqs_after(vectorized_seq)?.into_iter().collect();
        let (vectorized_tx, vectorized) = watch::channel(vectorized_seq);
        let indexer_stats = Arc::new(IndexerStats::default());
        let covered_seq = index.covered_seq()?;
        indexer_stats.indexed_seq.store(covered_seq, Ordering::Relaxed);
        let backlog = covered_seq > vectorized_seq;
        let indexer = Indexer {
            cursor: LedgerCursor::new(&layout.ledger_dir(), covered_seq + 1),
            index,
            head: writer.head(),
            pool: pool.clone(),
            search: search.clone(),
            vectorized_tx,
            stats: indexer_stats.clone(),
            policy: CheckpointPolicy {
                dir: layout.hnsw_dir(),
                fraction: config.vector.checkpoint_fraction,
                min_vectors: config.vector.checkpoint_min_vectors,
            },
            model_sha256: files.model_sha256.clone(),
            in_flight: HashSet::new(),
            done,
            failed: HashSet::new(),
            backlog,
            vectorized_seq,
            checkpoint_count,
            since_checkpoint,
        };
        let indexer_thread = std::thread::Builder::new().name("indexer".into()).spawn(move || indexer.run(indexer_rx))?;
        // Wake the indexer once so a backlog left by the last run starts at once.
        let _ = indexer_tx.send(IndexerMsg::Committed);
        Ok(Self {
            layout,
            writer,
            writer_thread: Mutex::new(Some(writer_thread)),
            pool,
            search,
            indexer_tx: Mutex::new(indexer_tx),
            indexer_thread: Mutex::new(Some(indexer_thread)),
            indexer_stats,
            vectorized,
            records: records_tx,
            started: Instant::now(),
            _lock: lock,
        })
    }

    /// Appends events; returns once they are durable.
    pub async fn record(&self, events: Vec<NewEvent>) -> Result<Vec<Record>, LedgerError> {
        self.writer.append(events).await
    }

    pub fn writer(&self) -> &LedgerWriter {
        &self.writer
    }

    /// Committed records, as they become durable (best effort: a slow subscriber skips).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.records.subscribe()
    }

    /// Every event through this `seq` has its vector.
    pub fn vectorized(&self) -> watch::Receiver<u64> {
        self.vectorized.clone()
    }

    /// Waits until `vectorized_seq` reaches `seq`.
    pub async fn wait_vectorized(&self, seq: u64) -> Result<()> {
        let mut rx = self.vectorized.clone();
        rx.wait_for(|v| *v >= seq).await.map_err(|_| anyhow!("the indexer stopped"))?;
        Ok(())
    }

    pub fn pool(&self) -> &EmbedPool {
        &self.pool
    }

    pub fn search_state(&self) -> &Arc<SearchState> {
        &self.search
    }

    pub fn indexer_stats(&self) -> &IndexerStats {
        &self.indexer_stats
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Natural-language search: embeds the query (ahead of queued events), then k-NN.
    pub async fn semantic_search(&self, query: &str, limit: usize, filters: Filters) -> Result<Vec<Hit>> {
        let vector = self.pool.embed_query(query).await?;
        let search = self.search.clone();
        tokio::task::spawn_blocking(move || search.search(&vector, limit, &filters)).await?
    }

    /// Runs `f` on a read connection of the index, off the async executor.
    pub async fn read_index<T: Send + 'static>(&self, f: impl FnOnce(&Index) -> Result<T> + Send + 'static) -> Result<T> {
        let search = self.search.clone();
        tokio::task::spawn_blocking(move || search.readers.with(f)).await?
    }

    pub async fn history(&self, element_id: String, limit: usize) -> Result<Vec<EventRow>> {
        self.read_index(move |index| index.history(&element_id, limit)).await
    }

    /// Verifies the whole ledger from disk (off the executor).
    pub async fn verify(&self) -> Result<crate::ledger::ScanOutcome> {
        let dir = self.layout.ledger_dir();
        tokio::task::spawn_blocking(move || scan(&dir, |_| {}).with_context(|| format!("reading {}", dir.display()))).await?
    }

    /// Takes a consistent snapshot if anything was vectorized after `after_seq`.
    pub async fn snapshot(&self, after_seq: u64, host: String) -> Result<Option<(crate::stream::snapshot::Manifest, std::path::PathBuf)>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let request = SnapshotRequest {
            writer: self.writer.clone(),
            data: self.layout.data.clone(),
            snapshots: self.layout.snapshots_dir(),
            model_id: self.pool.model_id().to_owned(),
            host,
            after_seq,
            reply,
        };
        self.indexer_tx.lock().expect("indexer lock").send(IndexerMsg::Snapshot(request)).map_err(|_| anyhow!("the indexer stopped"))?;
        rx.await.map_err(|_| anyhow!("the indexer stopped"))?
    }

    /// Asks the indexer to checkpoint the graph now.
    pub fn request_checkpoint(&self) {
        let _ = self.indexer_tx.lock().expect("indexer lock").send(IndexerMsg::Checkpoint);
    }

    /// Stops taking appends, lets the indexer finish and checkpoint, stops the workers.
    /// Events still waiting for embedding are picked up from the index on the next start.
    pub fn shutdown(&self) {
        if let Some(thread) = self.writer_thread.lock().expect("writer lock").take() {
            // The writer thread ends when every handle is gone; ours lives in `self`, so
            // stop it by closing the queue from this side.
            self.writer.close();
            let ledger = thread.join();
            tracing::info!(head_seq = ledger.head_seq(), "ledger closed");
        }
        let _ = self.indexer_tx.lock().expect("indexer lock").send(IndexerMsg::Shutdown);
        if let Some(thread) = self.indexer_thread.lock().expect("indexer lock").take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "indexer ended with an error"),
                Err(_) => tracing::error!("indexer thread panicked"),
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
