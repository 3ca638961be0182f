//! What the D-Bus object serves from: the primary's engine, or a replica's newest verified
//! snapshot. Read-only members work on both; writes only on the primary.

use crate::engine::Engine;
use crate::index::EventRow;
use crate::ledger::{ScanOutcome, scan};
use crate::replica::ReplicaView;
use crate::search::Hit;
use crate::vector::Filters;
use anyhow::Result;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Clone)]
pub enum Backend {
    Primary(Arc<Engine>),
    Replica(Arc<ReplicaView>),
}

impl Backend {
    pub async fn search(&self, query: &str, limit: usize, filters: Filters) -> Result<Vec<Hit>> {
        match self {
            Self::Primary(engine) => engine.semantic_search(query, limit, filters).await,
            Self::Replica(view) => {
                let current = view.current()?;
                let query = query.to_owned();
                tokio::task::spawn_blocking(move || current.reader.search(&query, limit, &filters)).await?
            }
        }
    }

    pub async fn history(&self, element_id: String, limit: usize) -> Result<Vec<EventRow>> {
        match self {
            Self::Primary(engine) => engine.history(element_id, limit).await,
            Self::Replica(view) => {
                let current = view.current()?;
                tokio::task::spawn_blocking(move || current.reader.search.readers.with(|i| i.history(&element_id, limit))).await?
            }
        }
    }

    pub async fn verify(&self) -> Result<ScanOutcome> {
        match self {
            Self::Primary(engine) => engine.verify().await,
            Self::Replica(view) => {
                let dir = view.current()?.layout.ledger_dir();
                Ok(tokio::task::spawn_blocking(move || scan(&dir, |_| {})).await??)
            }
        }
    }

    /// `(head seq, head hash)`.
    pub fn head(&self) -> (u64, String) {
        match self {
            Self::Primary(engine) => {
                let (seq, hash) = *engine.writer().head().borrow();
                (seq, hex::encode(hash))
            }
            Self::Replica(view) => {
                view.current().map(|c| (c.manifest.head_seq, c.manifest.head_hash.clone())).unwrap_or((0, String::new()))
            }
        }
    }

    pub fn vectorized_seq(&self) -> u64 {
        match self {
            Self::Primary(engine) => *engine.vectorized().borrow(),
            Self::Replica(view) => view.current().map(|c| c.reader.vectorized_seq).unwrap_or(0),
        }
    }

    /// Counts and state for GetBlockchainStats.
    pub async fn stats(&self) -> Result<Value> {
        match self {
            Self::Primary(engine) => {
                let (events, elements) = engine.read_index(|index| index.counts()).await?;
                let writer = engine.writer().stats();
                let pool = engine.pool().stats();
                let indexer = engine.indexer_stats();
                Ok(json!({
                    "uptime_s": engine.uptime().as_secs(),
                    "events": events,
                    "elements": elements,
                    "indexed_seq": indexer.indexed_seq.load(Ordering::Relaxed),
                    "vectors": engine.search_state().graph.read().expect("graph lock").len(),
                    "checkpoint_seq": indexer.checkpoint_seq.load(Ordering::Relaxed),
                    "model": {"id": engine.pool().model_id(), "sha256": engine.pool().model_sha256()},
                    "queues": {
                        "ledger_appends": writer.queued.load(Ordering::Relaxed),
                        "embedding": engine.pool().queued_events(),
                        "embedding_backlog": indexer.backlog.load(Ordering::Relaxed),
                    },
                    "ledger": {
                        "batches": writer.batches.load(Ordering::Relaxed),
                        "records": writer.records.load(Ordering::Relaxed),
                        "failed_batches": writer.failed_batches.load(Ordering::Relaxed),
                    },
                    "embedding": {
                        "embedded": pool.embedded.load(Ordering::Relaxed),
                        "cache_hits": pool.cache_hits.load(Ordering::Relaxed),
                        "failures": indexer.embed_failures.load(Ordering::Relaxed),
                        "event_latency": engine.pool().event_latency().percentiles(),
                        "query_latency": engine.pool().query_latency().percentiles(),
                    },
                }))
            }
            Self::Replica(view) => {
                let current = view.current()?;
                let counts = {
                    let c = current.clone();
                    tokio::task::spawn_blocking(move || c.reader.search.readers.with(|i| i.counts())).await??
                };
                Ok(json!({
                    "events": counts.0,
                    "elements": counts.1,
                    "snapshot": current.name,
                    "manifest": current.manifest,
                    "vectors": current.reader.search.graph.read().expect("graph lock").len(),
                    "model": {"id": current.manifest.model_id, "sha256": current.manifest.model_sha256},
                }))
            }
        }
    }
}
