//! Storing finished embeddings: into SQLite and the graph, advancing `vectorized_seq` over
//! the contiguous prefix of finished events, and checkpointing the graph when the vectors
//! added since the last checkpoint reach a fraction of it. A batch the index could not take
//! is kept and stored again on the next try: nothing embedded is dropped.

use crate::embed::Embedded;
use crate::index::Index;
use crate::search::SearchState;
use anyhow::Result;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// When to write a graph checkpoint.
pub struct CheckpointPolicy {
    pub dir: PathBuf,
    pub fraction: f64,
    pub min_vectors: u64,
}

/// Where a vectors' checkpoint stands, for stats.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointState {
    pub seq: u64,
    pub count: u64,
    pub written: u64,
}

pub struct VectorStore {
    search: Arc<SearchState>,
    policy: CheckpointPolicy,
    model_sha256: String,
    vectorized_seq: u64,
    vectorized_tx: watch::Sender<u64>,
    /// Finished (stored, or failed) above `vectorized_seq`.
    done: BTreeSet<u64>,
    /// Failed embeddings: searchable by filters only, never retried.
    failed: HashSet<u64>,
    /// Finished, not yet stored (the index refused the last attempt).
    unstored: Vec<(u64, Arc<[f32]>)>,
    unstored_failed: Vec<u64>,
    checkpoint: CheckpointState,
    since_checkpoint: u64,
}

impl VectorStore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        search: Arc<SearchState>,
        policy: CheckpointPolicy,
        model_sha256: String,
        vectorized_seq: u64,
        vectorized_tx: watch::Sender<u64>,
        done: BTreeSet<u64>,
        checkpoint_count: u64,
        since_checkpoint: u64,
    ) -> Self {
        Self {
            search,
            policy,
            model_sha256,
            vectorized_seq,
            vectorized_tx,
            done,
            failed: HashSet::new(),
            unstored: Vec::new(),
            unstored_failed: Vec::new(),
            checkpoint: CheckpointState { seq: 0, count: checkpoint_count, written: 0 },
            since_checkpoint,
        }
    }

    pub fn vectorized_seq(&self) -> u64 {
        self.vectorized_seq
    }

    /// Events above `vectorized_seq` that are finished or waiting to be stored: not to be
    /// embedded again.
    pub fn settled(&self) -> HashSet<u64> {
        let mut out: HashSet<u64> = self.done.iter().copied().collect();
        out.extend(self.unstored.iter().map(|(s, _)| *s));
        out.extend(self.unstored_failed.iter().copied());
        out
    }

    pub fn done_count(&self) -> usize {
        self.done.len() + self.unstored.len() + self.unstored_failed.len()
    }

    pub fn failures(&self) -> usize {
        self.failed.len()
    }

    pub fn checkpoint_state(&self) -> CheckpointState {
        self.checkpoint
    }

    /// Takes finished embeddings in; returns their seqs.
    pub fn take(&mut self, embedded: Vec<Embedded>) -> Vec<u64> {
        let mut seqs = Vec::with_capacity(embedded.len());
        for e in embedded {
            seqs.push(e.seq);
            match e.vector {
                Ok(v) => self.unstored.push((e.seq, v)),
                Err(error) => {
                    tracing::error!(seq = e.seq, %error, "embedding failed; the event stays searchable by filters only");
                    self.unstored_failed.push(e.seq);
                }
            }
        }
        seqs
    }

    /// Stores what was taken, inserts it into the graph and advances `vectorized_seq`. On
    /// failure everything stays taken for the next call.
    pub fn store(&mut self, index: &mut Index) -> Result<()> {
        if self.unstored.is_empty() && self.unstored_failed.is_empty() {
            return Ok(());
        }
        let mut done = self.done.clone();
        done.extend(self.unstored.iter().map(|(s, _)| *s));
        done.extend(self.unstored_failed.iter().copied());
        let mut through = self.vectorized_seq;
        while done.remove(&(through + 1)) {
            through += 1;
        }
        index.put_vectors(&self.unstored, through)?;
        let graph = self.search.graph.read().expect("graph lock").clone();
        for (seq, v) in &self.unstored {
            graph.insert(*seq, v);
        }
        self.since_checkpoint += self.unstored.len() as u64;
        self.failed.extend(self.unstored_failed.drain(..));
        self.unstored.clear();
        self.done = done;
        if through != self.vectorized_seq {
            self.vectorized_seq = through;
            self.vectorized_tx.send_replace(through);
        }
        Ok(())
    }

    pub fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= self.policy.min_vectors
            && self.since_checkpoint as f64 >= self.policy.fraction * self.checkpoint.count as f64
    }

    /// Writes the graph to disk with the `seq` it covers (after making the vectors it holds
    /// durable in the index, so the graph never holds vectors the index lost).
    pub fn checkpoint(&mut self, index: &Index) -> Result<()> {
        if self.since_checkpoint == 0 {
            return Ok(());
        }
        let graph = self.search.graph.read().expect("graph lock").clone();
        let extra: Vec<u64> = self.done.iter().copied().filter(|s| !self.failed.contains(s)).collect();
        let started = std::time::Instant::now();
        index.make_durable()?;
        let info = graph.checkpoint(&self.policy.dir, self.vectorized_seq, extra, &self.model_sha256)?;
        tracing::info!(seq = info.seq, vectors = info.count, ms = started.elapsed().as_millis() as u64, "HNSW checkpoint written");
        self.checkpoint = CheckpointState { seq: info.seq, count: info.count, written: self.checkpoint.written + 1 };
        self.since_checkpoint = 0;
        Ok(())
    }
}
