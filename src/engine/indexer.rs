//! The indexer thread: follows the durable ledger head into the SQLite index and the filter
//! catalog, hands new events to the embedding pool (most urgent first), and stores finished
//! vectors in SQLite and the HNSW graph, advancing `vectorized_seq` over a contiguous prefix.
//! It also decides when to checkpoint the graph.

use crate::embed::text::semantic_text;
use crate::embed::{EmbedPool, Embedded};
use crate::index::{EventRow, Index, next_state};
use crate::ledger::{Hash, LedgerCursor, LedgerWriter, Record};
use crate::search::SearchState;
use crate::stream::snapshot::Manifest;
use anyhow::Result;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;
use tokio::sync::watch;

/// What wakes the indexer.
pub enum IndexerMsg {
    /// The ledger head moved.
    Committed,
    Embedded(Embedded),
    /// Checkpoint now (a snapshot or shutdown wants the graph on disk).
    Checkpoint,
    /// Take a consistent snapshot (see `stream::snapshot`).
    Snapshot(SnapshotRequest),
    Shutdown,
}

/// What the indexer needs to take a snapshot, and where the answer goes.
pub struct SnapshotRequest {
    pub writer: LedgerWriter,
    pub data: PathBuf,
    pub snapshots: PathBuf,
    pub model_id: String,
    pub host: String,
    /// Skip when nothing was vectorized since this seq ("nothing changed, nothing sent").
    pub after_seq: u64,
    pub reply: tokio::sync::oneshot::Sender<Result<Option<(Manifest, PathBuf)>>>,
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

pub struct CheckpointPolicy {
    pub dir: PathBuf,
    pub fraction: f64,
    pub min_vectors: u64,
}

pub struct Indexer {
    pub index: Index,
    pub cursor: LedgerCursor,
    pub head: watch::Receiver<(u64, Hash)>,
    pub pool: Arc<EmbedPool>,
    pub search: Arc<SearchState>,
    pub vectorized_tx: watch::Sender<u64>,
    pub stats: Arc<IndexerStats>,
    pub policy: CheckpointPolicy,
    pub model_sha256: String,
    /// Queued in the pool, not finished.
    pub in_flight: HashSet<u64>,
    /// Finished above `vectorized_seq`.
    pub done: BTreeSet<u64>,
    /// Failed embeddings (kept out of the backlog so they are not retried forever).
    pub failed: HashSet<u64>,
    /// Events that did not fit the pool's queue wait in the index.
    pub backlog: bool,
    pub vectorized_seq: u64,
    /// Vectors in the last checkpoint, and added since.
    pub checkpoint_count: u64,
    pub since_checkpoint: u64,
}

impl Indexer {
    pub fn run(mut self, rx: Receiver<IndexerMsg>) -> Result<()> {
        loop {
            let mut shutdown = false;
            let mut checkpoint = false;
            let mut snapshots = Vec::new();
            let mut embedded = Vec::new();
            let first = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(IndexerMsg::Shutdown),
            };
            for msg in first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok()).take(4096)) {
                match msg {
                    IndexerMsg::Committed => {}
                    IndexerMsg::Embedded(e) => embedded.push(e),
                    IndexerMsg::Checkpoint => checkpoint = true,
                    IndexerMsg::Snapshot(request) => snapshots.push(request),
                    IndexerMsg::Shutdown => shutdown = true,
                }
            }
            let result = self.index_new_records().and_then(|()| self.store_vectors(embedded)).and_then(|()| self.refill_from_backlog());
            if let Err(e) = result {
                tracing::error!(error = %format!("{e:#}"), "indexer step failed; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            for request in snapshots {
                let result = self.snapshot(&request);
                let _ = request.reply.send(result);
            }
            if checkpoint || shutdown || self.checkpoint_due() {
                if let Err(e) = self.checkpoint() {
                    tracing::error!(error = %format!("{e:#}"), "HNSW checkpoint failed");
                }
            }
            if shutdown {
                return Ok(());
            }
        }
    }

    /// Reads newly durable records into the index and queues them for embedding.
    fn index_new_records(&mut self) -> Result<()> {
        let head = self.head.borrow().0;
        if self.cursor.next_seq() > head {
            return Ok(());
        }
        let mut records: Vec<Record> = Vec::new();
        self.cursor.read_through(head, |r| {
            records.push(r);
            Ok(())
        })?;
        for chunk in records.chunks(2048) {
            let texts = self.texts_for(chunk)?;
            self.index.apply(chunk)?;
            {
                let mut catalog = self.search.catalog.write().expect("catalog lock");
                for r in chunk {
                    catalog.insert(r.seq, r.ts, &r.element_id, &r.element_type, &r.action, &r.source, r.priority);
                }
            }
            for (r, text) in chunk.iter().zip(texts) {
                if self.backlog || !self.pool.submit_event(r.seq, r.priority, text) {
                    self.backlog = true;
                } else {
                    self.in_flight.insert(r.seq);
                }
            }
            self.stats.indexed_seq.store(chunk.last().expect("chunk").seq, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The semantic text of each record, with the element's state as it is after the record
    /// and its actions just before it (tracked through the batch).
    fn texts_for(&self, records: &[Record]) -> Result<Vec<String>> {
        let mut elements: HashMap<&str, (Value, Vec<String>)> = HashMap::new();
        let mut texts = Vec::with_capacity(records.len());
        for r in records {
            if !elements.contains_key(r.element_id.as_str()) {
                let state = self.index.element(&r.element_id)?.map(|e| e.state).unwrap_or(Value::Null);
                let recent = self.index.history(&r.element_id, 3)?.into_iter().map(|e| e.action).collect();
                elements.insert(&r.element_id, (state, recent));
            }
            let (state, recent) = elements.get_mut(r.element_id.as_str()).expect("inserted above");
            *state = next_state(std::mem::take(state), &r.details);
            texts.push(semantic_text(&r.element_id, &r.element_type, &r.action, &r.summary, &r.details, state, recent));
            recent.insert(0, r.action.clone());
            recent.truncate(3);
        }
        Ok(texts)
    }

    /// Feeds waiting events from the index when the pool has room, most urgent first.
    fn refill_from_backlog(&mut self) -> Result<()> {
        if !self.backlog {
            self.stats.backlog.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let room = self.pool.room();
        if room == 0 {
            return Ok(());
        }
        let mut exclude = self.in_flight.clone();
        exclude.extend(self.failed.iter().copied());
        let rows = self.index.unvectorized(self.vectorized_seq, room, &exclude)?;
        let fetched = rows.len();
        for row in rows {
            let text = self.backlog_text(&row)?;
            if !self.pool.submit_event(row.seq, row.priority, text) {
                break;
            }
            self.in_flight.insert(row.seq);
        }
        if fetched < room {
            self.backlog = false;
        }
        let indexed = self.stats.indexed_seq.load(Ordering::Relaxed);
        let waiting = indexed.saturating_sub(self.vectorized_seq).saturating_sub(self.in_flight.len() as u64 + self.done.len() as u64);
        self.stats.backlog.store(waiting, Ordering::Relaxed);
        Ok(())
    }

    /// Backlogged events get the same text they would have had live: the element's state
    /// folded over its events up to this one, and the actions just before it. (Only the last
    /// `HISTORY_FOLD` events of an element are folded; older fields are rarely shown.)
    fn backlog_text(&self, row: &EventRow) -> Result<String> {
        const HISTORY_FOLD: usize = 1000;
        let history = self.index.history_through(&row.element_id, row.seq, HISTORY_FOLD)?;
        let mut state = Value::Null;
        for e in history.iter().rev() {
            state = next_state(state, &e.details);
        }
        let recent: Vec<String> = history.iter().skip(1).take(3).map(|e| e.action.clone()).collect();
        Ok(semantic_text(&row.element_id, &row.element_type, &row.action, &row.summary, &row.details, &state, &recent))
    }

    /// Stores finished vectors, inserts them into the graph and advances `vectorized_seq`.
    fn store_vectors(&mut self, embedded: Vec<Embedded>) -> Result<()> {
        if embedded.is_empty() {
            return Ok(());
        }
        let mut items = Vec::with_capacity(embedded.len());
        for e in embedded {
            self.in_flight.remove(&e.seq);
            match e.vector {
                Ok(v) => items.push((e.seq, v)),
                Err(error) => {
                    tracing::error!(seq = e.seq, %error, "embedding failed; the event stays searchable by filters only");
                    self.stats.embed_failures.fetch_add(1, Ordering::Relaxed);
                    self.failed.insert(e.seq);
                }
            }
            self.done.insert(e.seq);
        }
        let mut through = self.vectorized_seq;
        while self.done.remove(&(through + 1)) {
            through += 1;
        }
        self.index.put_vectors(&items, through)?;
        let graph = self.search.graph.read().expect("graph lock").clone();
        for (seq, v) in &items {
            graph.insert(*seq, v);
        }
        self.since_checkpoint += items.len() as u64;
        if through != self.vectorized_seq {
            self.vectorized_seq = through;
            self.vectorized_tx.send_replace(through);
        }
        Ok(())
    }

    /// A consistent cut: index everything durable and fold the WAL into the database file
    /// (nothing else writes the index while this thread is here, so it holds still), then,
    /// under the ledger's write barrier, write the MANIFEST and take the read-only snapshot.
    /// The barrier covers only that last step, a few milliseconds, so appends barely wait;
    /// records that arrive during the fold are in the snapshot's ledger (up to the head in
    /// the MANIFEST) and reach its index with the next one.
    fn snapshot(&mut self, request: &SnapshotRequest) -> Result<Option<(Manifest, PathBuf)>> {
        if self.vectorized_seq <= request.after_seq {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        self.index_new_records()?;
        self.index.fold_wal()?;
        let folded = std::time::Instant::now();
        let _barrier = request.writer.pause()?;
        let (head_seq, head_hash) = *self.head.borrow();
        let manifest = Manifest {
            seq: self.vectorized_seq,
            head_seq,
            head_hash: hex::encode(head_hash),
            vectorized_seq: self.vectorized_seq,
            model_id: request.model_id.clone(),
            model_sha256: self.model_sha256.clone(),
            created_unix_ns: crate::event::now_ns(),
            host: request.host.clone(),
        };
        manifest.write(&request.data)?;
        let path = crate::stream::snapshot::take(&request.data, &request.snapshots, manifest.seq)?;
        tracing::debug!(
            fold_us = (folded - started).as_micros() as u64,
            barrier_us = folded.elapsed().as_micros() as u64,
            "consistent cut: index folded, snapshot taken"
        );
        Ok(Some((manifest, path)))
    }

    fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= self.policy.min_vectors
            && self.since_checkpoint as f64 >= self.policy.fraction * self.checkpoint_count as f64
    }

    fn checkpoint(&mut self) -> Result<()> {
        if self.since_checkpoint == 0 {
            return Ok(());
        }
        let graph = self.search.graph.read().expect("graph lock").clone();
        let extra: Vec<u64> = self.done.iter().copied().filter(|s| !self.failed.contains(s)).collect();
        let started = std::time::Instant::now();
        // The vectors in the graph must be durable in the index before the graph says so.
        self.index.make_durable()?;
        let info = graph.checkpoint(&self.policy.dir, self.vectorized_seq, extra, &self.model_sha256)?;
        tracing::info!(seq = info.seq, vectors = info.count, ms = started.elapsed().as_millis() as u64, "HNSW checkpoint written");
        self.checkpoint_count = info.count;
        self.since_checkpoint = 0;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.stats.checkpoint_seq.store(info.seq, Ordering::Relaxed);
        Ok(())
    }
}
