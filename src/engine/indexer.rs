//! The indexer thread, the index's only writer. It runs three stages in order, each its own
//! type: the [`Follower`] brings newly durable records into the index and catalog, the
//! [`Scheduler`] hands them to the embedding pool, and the [`VectorStore`] stores what
//! comes back. It also runs consistent cuts for the streamer (see [`Cut`]): while this
//! thread holds still, nothing writes the index.
//!
//! A step that fails (a full disk under the index, say) stops the pipeline where it is —
//! nothing is skipped — is reported in [`Health`] and as an `agent:indexer` event, and is
//! retried with backoff until it succeeds; then the stall's end is recorded too.

use super::follower::Follower;
use super::scheduler::Scheduler;
use super::vectors::VectorStore;
use crate::embed::Embedded;
use crate::event::{NewEvent, Priority};
use crate::health::{Health, Transition};
use crate::index::Index;
use crate::ledger::{Hash, LedgerWriter};
use crate::search::SearchState;
use anyhow::Result;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The stage names this thread reports in [`Health`].
pub const INDEX_STAGE: &str = "index";
pub const EMBEDDING_STAGE: &str = "embedding";

/// No embedding finished for this long while events wait: the embedding stage is stalled.
const EMBEDDING_STALL_AFTER: Duration = Duration::from_secs(60);

/// Wakes the indexer when the ledger head moves. At most one wake-up waits in its channel,
/// so a stalled indexer does not collect one message per commit: the channel holds at most
/// that wake-up, the embeddings in flight (bounded by the pool's queue) and the cuts and
/// checkpoints asked for (one at a time).
#[derive(Clone, Default)]
pub struct Wake(Arc<std::sync::atomic::AtomicBool>);

impl Wake {
    pub fn send(&self, tx: &std::sync::mpsc::Sender<IndexerMsg>) {
        if !self.0.swap(true, Ordering::AcqRel) {
            let _ = tx.send(IndexerMsg::Committed);
        }
    }

    fn taken(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What wakes the indexer.
pub enum IndexerMsg {
    /// The ledger head moved.
    Committed,
    Embedded(Embedded),
    /// Checkpoint the graph now.
    Checkpoint,
    /// Run a consistent cut.
    Cut(CutRequest),
    Shutdown,
}

/// The state of the data set at a consistent cut, handed to the code that snapshots it.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Every event through this seq is in the ledger and the index and has its vector.
    pub vectorized_seq: u64,
    /// The ledger's durable head at the cut (≥ `vectorized_seq`).
    pub head_seq: u64,
    pub head_hash: Hash,
    pub model_id: String,
    pub model_sha256: String,
    /// The data directory (subvolume) the cut is of.
    pub data_dir: PathBuf,
}

/// What runs at a cut.
pub type CutFn = Box<dyn FnOnce(&Cut) -> Result<()> + Send>;

pub struct CutRequest {
    /// Skip when nothing was vectorized after this seq ("nothing changed, nothing sent").
    pub after_seq: u64,
    pub run: CutFn,
    pub reply: tokio::sync::oneshot::Sender<Result<Option<Cut>>>,
}

/// Counters the stats member reports.
#[derive(Debug, Default)]
pub struct IndexerStats {
    pub indexed_seq: AtomicU64,
    pub backlog: AtomicU64,
    pub embed_failures: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_seq: AtomicU64,
}

/// Everything the indexer thread owns.
pub struct Indexer {
    index: Index,
    follower: Follower,
    scheduler: Scheduler,
    vectors: VectorStore,
    search: Arc<SearchState>,
    writer: LedgerWriter,
    stats: Arc<IndexerStats>,
    health: Arc<Health>,
    model_id: String,
    model_sha256: String,
    data_dir: PathBuf,
    last_embedding: Instant,
    wake: Wake,
}

impl Indexer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: Index,
        follower: Follower,
        scheduler: Scheduler,
        vectors: VectorStore,
        search: Arc<SearchState>,
        writer: LedgerWriter,
        stats: Arc<IndexerStats>,
        health: Arc<Health>,
        model: (String, String),
        data_dir: PathBuf,
        wake: Wake,
    ) -> Self {
        let (model_id, model_sha256) = model;
        Self {
            index,
            follower,
            scheduler,
            vectors,
            search,
            writer,
            stats,
            health,
            model_id,
            model_sha256,
            data_dir,
            last_embedding: Instant::now(),
            wake,
        }
    }

    pub fn run(mut self, rx: Receiver<IndexerMsg>) -> Result<()> {
        let mut failures = 0u32;
        loop {
            let mut shutdown = false;
            let mut checkpoint = false;
            let mut cuts = Vec::new();
            let mut embedded = Vec::new();
            let wait = if failures == 0 { Duration::from_millis(500) } else { crate::backoff::backoff(failures.min(4)) };
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(IndexerMsg::Shutdown),
            };
            for msg in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok()).take(4096)) {
                match msg {
                    IndexerMsg::Committed => self.wake.taken(),
                    IndexerMsg::Embedded(e) => embedded.push(e),
                    IndexerMsg::Checkpoint => checkpoint = true,
                    IndexerMsg::Cut(request) => cuts.push(request),
                    IndexerMsg::Shutdown => shutdown = true,
                }
            }
            if !embedded.is_empty() {
                self.last_embedding = Instant::now();
            }
            for seq in self.vectors.take(embedded) {
                self.scheduler.finished(seq);
            }
            match self.step() {
                Ok(()) => {
                    failures = 0;
                    self.report(INDEX_STAGE, None);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.report(INDEX_STAGE, Some(format!("{e:#}")));
                }
            }
            self.watch_embedding();
            for request in cuts {
                let result = self.cut(request.after_seq, request.run);
                let _ = request.reply.send(result);
            }
            if checkpoint || shutdown || self.vectors.checkpoint_due() {
                if let Err(e) = self.vectors.checkpoint(&self.index) {
                    tracing::error!(error = %format!("{e:#}"), "HNSW checkpoint failed");
                } else {
                    let state = self.vectors.checkpoint_state();
                    self.stats.checkpoints.store(state.written, Ordering::Relaxed);
                    self.stats.checkpoint_seq.store(state.seq, Ordering::Relaxed);
                }
            }
            if shutdown {
                return Ok(());
            }
        }
    }

    /// One pass: follow the ledger, store finished vectors, feed the backlog.
    fn step(&mut self) -> Result<()> {
        self.follow()?;
        self.vectors.store(&mut self.index)?;
        self.scheduler.refill(&self.index, self.vectors.vectorized_seq(), &self.vectors.settled())?;
        let indexed = self.stats.indexed_seq.load(Ordering::Relaxed);
        let waiting = indexed
            .saturating_sub(self.vectors.vectorized_seq())
            .saturating_sub(self.scheduler.in_flight() as u64 + self.vectors.done_count() as u64);
        self.stats.backlog.store(waiting, Ordering::Relaxed);
        self.stats.embed_failures.store(self.vectors.failures() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Brings every durable record into the index, a chunk at a time; on failure the
    /// follower goes back to what the index holds.
    fn follow(&mut self) -> Result<()> {
        loop {
            let records = self.follower.read_chunk()?;
            let Some(last) = records.last().map(|r| r.seq) else { return Ok(()) };
            let started = Instant::now();
            match self.follower.apply(&mut self.index, &self.search.catalog, &records) {
                Ok(()) => {
                    let applied = started.elapsed();
                    self.scheduler.submit(&records, Scheduler::texts_for(&records));
                    self.stats.indexed_seq.store(last, Ordering::Relaxed);
                    tracing::debug!(
                        records = records.len(),
                        last,
                        apply_us = applied.as_micros() as u64,
                        total_us = started.elapsed().as_micros() as u64,
                        "indexed"
                    );
                }
                Err(e) => {
                    let covered = self.index.covered_seq().unwrap_or(records[0].seq - 1);
                    self.follower.rewind(covered);
                    return Err(e);
                }
            }
        }
    }

    /// Embedding is stalled when events wait and nothing came back for a while.
    fn watch_embedding(&mut self) {
        let waiting = self.scheduler.in_flight() > 0;
        if waiting && self.last_embedding.elapsed() >= EMBEDDING_STALL_AFTER {
            let reason = format!(
                "no embedding finished for {} s while {} events wait",
                self.last_embedding.elapsed().as_secs(),
                self.scheduler.in_flight()
            );
            self.report(EMBEDDING_STAGE, Some(reason));
        } else if !waiting || self.last_embedding.elapsed() < EMBEDDING_STALL_AFTER {
            self.report(EMBEDDING_STAGE, None);
        }
    }

    /// Updates a stage's health; a change is logged and recorded as an event (best effort:
    /// when the ledger itself cannot be written, the resume event says what happened).
    fn report(&self, stage: &str, error: Option<String>) {
        let transition = match &error {
            Some(reason) => self.health.stalled(stage, reason.clone()),
            None => self.health.ok(stage),
        };
        let event = match transition {
            Transition::None => return,
            Transition::Stalled => {
                let reason = error.unwrap_or_default();
                tracing::error!(stage, error = %reason, "stalled; retrying with backoff until it works again");
                stage_event(
                    stage,
                    "stalled",
                    Priority::Critical,
                    json!({"stage": stage, "reason": reason}),
                    format!("{stage} stalled: {reason}"),
                )
            }
            Transition::Resumed { since_unix_ns, reason } => {
                let secs = (crate::event::now_ns() - since_unix_ns) as f64 / 1e9;
                tracing::info!(stage, stalled_s = secs, "moving again");
                stage_event(
                    stage,
                    "resumed",
                    Priority::High,
                    json!({"stage": stage, "reason": reason, "stalled_since_unix_ns": since_unix_ns, "stalled_s": secs}),
                    format!("{stage} moving again after {secs:.1} s stalled ({reason})"),
                )
            }
        };
        if let Err(e) = self.writer.append_blocking(vec![event]) {
            tracing::warn!(stage, error = %e, "could not record the stage's change in the ledger");
        }
    }

    /// A consistent cut: index everything durable and fold the WAL into the database file
    /// (nothing else writes the index while this thread is here, so it holds still), then,
    /// under the ledger's write barrier, run `f`. The barrier covers only `f`, so appends
    /// barely wait; records that arrive during the fold are in the ledger at the cut (up to
    /// `head_seq`) and reach the next cut's index.
    fn cut(&mut self, after_seq: u64, f: CutFn) -> Result<Option<Cut>> {
        if self.vectors.vectorized_seq() <= after_seq {
            return Ok(None);
        }
        let started = Instant::now();
        self.follow()?;
        self.index.fold_wal()?;
        let folded = Instant::now();
        let _barrier = self.writer.pause()?;
        let (head_seq, head_hash) = self.follower.head();
        let cut = Cut {
            vectorized_seq: self.vectors.vectorized_seq(),
            head_seq,
            head_hash,
            model_id: self.model_id.clone(),
            model_sha256: self.model_sha256.clone(),
            data_dir: self.data_dir.clone(),
        };
        f(&cut)?;
        tracing::debug!(
            fold_us = (folded - started).as_micros() as u64,
            barrier_us = folded.elapsed().as_micros() as u64,
            "consistent cut"
        );
        Ok(Some(cut))
    }
}

/// An `agent:<stage>` event about the pipeline itself.
pub fn stage_event(stage: &str, what: &str, priority: Priority, details: serde_json::Value, summary: String) -> NewEvent {
    NewEvent::new("agent", &format!("agent:{stage}"), &format!("{stage}.{what}"), priority, details).with_summary(summary)
}
