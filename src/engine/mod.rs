//! The primary's pipeline, assembled: ledger writer (group commit) → indexer thread
//! (follower → scheduler → embedding pool → vector store) → SQLite and the HNSW graph. The
//! daemon, `import`, `reembed` and the tests drive it through this one type; it knows
//! nothing of D-Bus or of snapshots (those reach it through [`Engine::cut`]).

mod background;
mod follower;
mod indexer;
mod scheduler;
mod vectors;

use background::BackgroundLane;
use indexer::Wake;
pub use indexer::{Cut, EMBEDDING_STAGE, INDEX_STAGE, IndexerStats, stage_event};

use crate::config::Config;
use crate::dataset::DataSet;
use crate::embed::{EmbedPool, ModelFiles};
use crate::event::NewEvent;
use crate::health::Health;
use crate::index::EventRow;
use crate::layout::Layout;
use crate::ledger::{LedgerError, LedgerWriter, Record, WriterThread};
use crate::lock::DataDirLock;
use crate::sched::{IdlePriority, Urgency};
use crate::search::{Answer, ReadMode, Readers, SearchState, catalog_events_after, load_graph, local_utc_offset, plan};
use crate::vector::{Catalog, Filters};
use anyhow::{Context, Result, anyhow};
use follower::Follower;
use indexer::{CutRequest, Indexer, IndexerMsg};
use scheduler::Scheduler;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::{broadcast, watch};
use vectors::{CheckpointPolicy, VectorStore};

/// Records kept for slow `subscribe`rs (signals, the streamer's trigger); a subscriber that
/// falls further behind is told how many it missed (records are never lost: they are in
/// the ledger).
const RECORD_NOTICES: usize = 4096;

pub struct Engine {
    layout: Layout,
    writer: LedgerWriter,
    writer_thread: Mutex<Option<WriterThread>>,
    pool: Arc<EmbedPool>,
    /// Where a flood's searches run, when idle priority is available.
    lane: Option<BackgroundLane>,
    search: Arc<SearchState>,
    indexer_tx: Mutex<Sender<IndexerMsg>>,
    indexer_thread: Mutex<Option<JoinHandle<Result<()>>>>,
    indexer_stats: Arc<IndexerStats>,
    health: Arc<Health>,
    vectorized: watch::Receiver<u64>,
    records: broadcast::Sender<Arc<Record>>,
    started: Instant,
    // Held for as long as the engine lives: one writer per data directory.
    _lock: DataDirLock,
}

impl Engine {
    /// Opens the state directory for writing, loads the model and the vectors, and starts
    /// the pipeline. Returns once everything is ready to take events and queries.
    pub fn open(layout: &Layout, config: &Config) -> Result<Self> {
        Self::open_with_health(layout, config, Arc::new(Health::default()))
    }

    /// [`open`](Self::open), reporting stalls into `health` (shared with the daemon's
    /// other stages).
    pub fn open_with_health(layout: &Layout, config: &Config, health: Arc<Health>) -> Result<Self> {
        let mut dataset = DataSet::open_writable(layout, config)?;
        if let Some(damage) = &dataset.report().damage {
            tracing::error!(%damage, "serving read-only: the ledger is damaged");
        }
        let files = ModelFiles::locate(&config.embedding)?;
        let index = dataset.take_index();
        index.bind_model(&files.model_id(), &files.model_sha256)?;

        let (indexer_tx, indexer_rx) = channel();
        let results_tx = Mutex::new(indexer_tx.clone());
        let pool = Arc::new(EmbedPool::start(
            &files,
            &config.embedding,
            Box::new(move |e| {
                let _ = results_tx.lock().expect("results lock").send(IndexerMsg::Embedded(e));
            }),
        )?);

        // Starts the monitor that bounds idle priority from this ordinary thread (`sched`).
        let lane = if crate::sched::idle_priority_available() {
            BackgroundLane::start(&files, config.embedding.max_length, pool.clone())?
        } else {
            None
        };

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
        let search = Arc::new(SearchState::new(
            graph,
            Arc::new(RwLock::new(catalog)),
            Readers::new(&layout.index_path(), ReadMode::Live),
            config.vector.ef_search,
        ));

        let (records_tx, _) = broadcast::channel(RECORD_NOTICES);
        let hook_records = records_tx.clone();
        let hook_indexer = Mutex::new(indexer_tx.clone());
        let wake = Wake::default();
        let hook_wake = wake.clone();
        let ledger = dataset.take_ledger();
        let (writer, writer_thread) = LedgerWriter::spawn_with_hook(
            ledger,
            config.ledger.queue_capacity,
            config.ledger.max_batch,
            Box::new(move |batch| {
                for r in batch {
                    let _ = hook_records.send(Arc::new(r.clone()));
                }
                hook_wake.send(&hook_indexer.lock().expect("indexer lock"));
            }),
        );

        let done: BTreeSet<u64> = index.vector_seqs_after(vectorized_seq)?.into_iter().collect();
        let (vectorized_tx, vectorized) = watch::channel(vectorized_seq);
        let indexer_stats = Arc::new(IndexerStats::default());
        let covered_seq = index.covered_seq()?;
        indexer_stats.indexed_seq.store(covered_seq, Ordering::Relaxed);
        let policy = CheckpointPolicy {
            dir: layout.hnsw_dir(),
            fraction: config.vector.checkpoint_fraction,
            min_vectors: config.vector.checkpoint_min_vectors,
        };
        let indexer = Indexer::new(
            index,
            Follower::new(layout.ledger_dir(), covered_seq, writer.head()),
            Scheduler::new(pool.clone(), covered_seq > vectorized_seq),
            VectorStore::new(
                search.clone(),
                policy,
                files.model_sha256.clone(),
                vectorized_seq,
                vectorized_tx,
                done,
                checkpoint_count,
                since_checkpoint,
            ),
            search.clone(),
            writer.clone(),
            indexer_stats.clone(),
            health.clone(),
            (files.model_id(), files.model_sha256.clone()),
            layout.data.clone(),
            wake.clone(),
        );
        let indexer_thread = std::thread::Builder::new().name("indexer".into()).spawn(move || {
            crate::sched::Throughput::for_this_thread();
            indexer.run(indexer_rx)
        })?;
        // Wake the indexer once so a backlog left by the last run starts at once.
        wake.send(&indexer_tx);
        Ok(Self {
            layout: layout.clone(),
            writer,
            writer_thread: Mutex::new(Some(writer_thread)),
            pool,
            lane,
            search,
            indexer_tx: Mutex::new(indexer_tx),
            indexer_thread: Mutex::new(Some(indexer_thread)),
            indexer_stats,
            health,
            vectorized,
            records: records_tx,
            started: Instant::now(),
            _lock: dataset.into_lock(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
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

    /// Waits, at most `limit`, until the index holds everything the ledger held when called
    /// (the index follows the ledger a little behind). False when the limit passed first.
    pub async fn wait_indexed(&self, limit: std::time::Duration) -> bool {
        let head = self.writer().head().borrow().0;
        let deadline = tokio::time::Instant::now() + limit;
        while self.indexer_stats.indexed_seq.load(Ordering::Relaxed) < head {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
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

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Search in the operator's words, now (see [`search_at`](Self::search_at)).
    pub async fn search(&self, query: &str, limit: usize, filters: Filters) -> Result<Answer> {
        self.search_for(query, limit, filters, Urgency::Interactive).await
    }

    /// [`search`](Self::search) for a caller within its share or beyond it (its query then
    /// embedded as background work).
    pub async fn search_for(&self, query: &str, limit: usize, filters: Filters, urgency: Urgency) -> Result<Answer> {
        self.search_at(query, limit, filters, crate::event::now_ns(), local_utc_offset(), urgency).await
    }

    /// Search as if asked at `now_ns` (time phrases read in local time at `utc_offset_s`):
    /// the query's embedding (ahead of queued events) and its keywords, fused; the answer
    /// says how many of the newest events are not embedded yet.
    pub async fn search_at(
        &self,
        query: &str,
        limit: usize,
        filters: Filters,
        now_ns: i64,
        utc_offset_s: i64,
        urgency: Urgency,
    ) -> Result<Answer> {
        let plan = plan(query, now_ns, utc_offset_s)?;
        let search = self.search.clone();
        let mut answer = match (&self.lane, urgency) {
            // No search slot: the lane runs one search at a time, and one waiting there must
            // not hold a slot another caller's search needs.
            (Some(lane), Urgency::Background) => {
                lane.run(move |model| {
                    let vector = if plan.semantic.is_empty() { None } else { Some(model.embed_query(&plan.semantic)?) };
                    search.hybrid(&plan, vector.as_deref(), limit, &filters)
                })
                .await??
            }
            _ => {
                let vector = if plan.semantic.is_empty() { None } else { Some(self.pool.embed_query_for(&plan.semantic, urgency).await?) };
                let _slot = self.search.slots.acquire().await?;
                tokio::task::spawn_blocking(move || {
                    let _idle = (urgency == Urgency::Background).then(IdlePriority::enter);
                    search.hybrid(&plan, vector.as_deref(), limit, &filters)
                })
                .await??
            }
        };
        let head = self.writer.head().borrow().0;
        answer.note_unvectorized(head.saturating_sub(*self.vectorized.borrow()), "they are being embedded now");
        Ok(answer)
    }

    /// Runs `f` on a read-only connection of the index, off the async executor.
    pub async fn read_index<T: Send + 'static>(&self, f: impl FnOnce(&crate::index::Index) -> Result<T> + Send + 'static) -> Result<T> {
        let search = self.search.clone();
        let _slot = self.search.slots.acquire().await?;
        tokio::task::spawn_blocking(move || search.readers.with(f)).await?
    }

    pub async fn history(&self, element_id: String, limit: usize) -> Result<Vec<EventRow>> {
        self.read_index(move |index| Ok(index.history(&element_id, limit)?)).await
    }

    /// A consistent cut (see [`Cut`]): when anything was vectorized after `after_seq`, the
    /// index is caught up and folded, appends are held, and `f` runs; returns the cut.
    pub async fn cut(&self, after_seq: u64, f: impl FnOnce(&Cut) -> Result<()> + Send + 'static) -> Result<Option<Cut>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let request = CutRequest { after_seq, run: Box::new(f), reply };
        self.indexer_tx.lock().expect("indexer lock").send(IndexerMsg::Cut(request)).map_err(|_| anyhow!("the indexer stopped"))?;
        rx.await.map_err(|_| anyhow!("the indexer stopped"))?.context("taking a consistent cut")
    }

    /// The name of an engine thread that has stopped while the engine runs (a panic), if any.
    pub fn dead_thread(&self) -> Option<&'static str> {
        if self.writer_thread.lock().expect("writer lock").as_ref().is_some_and(WriterThread::is_finished) {
            return Some("ledger writer");
        }
        if self.indexer_thread.lock().expect("indexer lock").as_ref().is_some_and(JoinHandle::is_finished) {
            return Some("indexer");
        }
        if !self.pool.workers_alive() {
            return Some("embedding worker");
        }
        if self.lane.as_ref().is_some_and(|lane| !lane.alive()) {
            return Some("background search lane");
        }
        None
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
