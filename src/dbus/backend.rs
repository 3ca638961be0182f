//! What the D-Bus object serves from: the primary's engine, or a replica's serving store.
//! Read-only members work on both; writes only on the primary.

use crate::engine::Engine;
use crate::health::Health;
use crate::ledger::{ScanOutcome, scan};
use crate::replica::{OriginSelect, Scope};
use crate::sched::{IdlePriority, Urgency};
use crate::search::Answer;
use crate::supervisor::TaskStatus;
use crate::vector::Filters;
use anyhow::Result;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub enum Backend {
    Primary(Arc<Engine>),
    Replica(Scope),
}

/// Everything the object reports besides the backend: stage health and supervised tasks.
#[derive(Clone, Default)]
pub struct Reporting {
    pub health: Arc<Health>,
    pub tasks: Arc<Mutex<BTreeMap<String, TaskStatus>>>,
    pub anomalies: Arc<crate::analytics::anomaly::LiveCounters>,
    /// The sources and their recorder (a primary's).
    pub sources: Option<Arc<crate::sources::Recorder>>,
    /// The host a primary records (what a `hosts` option must name there).
    pub host: String,
    /// The daemons `FleetSearch` may ask (shared by every object of the daemon).
    pub fleet: Arc<FleetAccess>,
    /// Each caller's searches in progress (shared by every object of the daemon).
    pub callers: Arc<super::fairness::CallerSearches>,
    /// Each caller's pace of calls (shared by every object of the daemon).
    pub pacer: Arc<super::pacing::Pacer>,
}

/// `FleetSearch` calls running at once, across all of a daemon's objects.
const FLEET_QUERIES: usize = 2;

/// The daemons `FleetSearch` may ask, and how many such searches may run at once.
pub struct FleetAccess {
    pub config: crate::fanout::FleetConfig,
    pub queries: tokio::sync::Semaphore,
    /// Connections to the fleet's daemons, kept between queries.
    pub links: crate::fanout::LinkPool,
}

impl FleetAccess {
    pub fn new(config: crate::fanout::FleetConfig) -> Self {
        Self { config, queries: tokio::sync::Semaphore::new(FLEET_QUERIES), links: Default::default() }
    }
}

impl Default for FleetAccess {
    fn default() -> Self {
        Self::new(Default::default())
    }
}

type VerifyResult = Result<Arc<ScanOutcome>, String>;

/// At most one ledger verification runs at a time; callers arriving meanwhile share its
/// result. A flood of `VerifyChain` calls costs one scan (streaming, bounded memory).
#[derive(Default)]
pub struct VerifyGate {
    running: Mutex<Option<Shared<BoxFuture<'static, VerifyResult>>>>,
}

impl VerifyGate {
    pub async fn verify(&self, dir: PathBuf) -> Result<Arc<ScanOutcome>> {
        let flight = {
            let mut running = self.running.lock().expect("verify lock");
            match running.as_ref().filter(|f| f.peek().is_none()) {
                Some(f) => f.clone(),
                None => {
                    let f = async move {
                        match tokio::task::spawn_blocking(move || scan(&dir, |_| {})).await {
                            Ok(Ok(outcome)) => Ok(Arc::new(outcome)),
                            Ok(Err(e)) => Err(format!("reading the ledger: {e}")),
                            Err(e) => Err(format!("the verification stopped: {e}")),
                        }
                    }
                    .boxed()
                    .shared();
                    *running = Some(f.clone());
                    f
                }
            }
        };
        flight.await.map_err(anyhow::Error::msg)
    }
}

impl Backend {
    /// Waits (up to the select's `wait_ms`) until a replica holds the `min_seq` asked for;
    /// at once on a primary. Done before a search takes its caller's place, so that a long
    /// wait for freshness holds no search place.
    pub async fn wait_until_fresh(&self, select: &OriginSelect) -> Result<()> {
        match self {
            Self::Primary(_) => Ok(()),
            Self::Replica(scope) => wait_for_cover(scope, select).await,
        }
    }

    /// A search now; the caller has waited for freshness first ([`wait_until_fresh`]), and a
    /// `min_seq` still not covered is refused as stale. On a primary, a background `urgency`
    /// runs the query's embedding and the search on the background lane, at idle CPU
    /// priority; a replica's search runs as any other.
    ///
    /// [`wait_until_fresh`]: Self::wait_until_fresh
    pub async fn search(&self, query: &str, limit: usize, filters: Filters, select: OriginSelect, urgency: Urgency) -> Result<Answer> {
        match self {
            Self::Primary(engine) => engine.search_for(query, limit, filters, urgency).await,
            Self::Replica(scope) => {
                let _slot = scope.fleet.slots.acquire().await?;
                let (scope, query) = (scope.clone(), query.to_owned());
                tokio::task::spawn_blocking(move || scope.fleet.search(scope.only.as_deref(), &query, limit, &filters, &select)).await?
            }
        }
    }

    /// An element's newest events, each with the host that recorded it on a replica.
    pub async fn history(&self, element_id: String, limit: usize, select: OriginSelect) -> Result<Value> {
        match self {
            Self::Primary(engine) => Ok(serde_json::to_value(engine.history(element_id, limit).await?)?),
            Self::Replica(scope) => {
                wait_for_cover(scope, &select).await?;
                let _slot = scope.fleet.slots.acquire().await?;
                let scope = scope.clone();
                let rows =
                    tokio::task::spawn_blocking(move || scope.fleet.history(scope.only.as_deref(), &element_id, limit, &select)).await??;
                Ok(serde_json::to_value(rows)?)
            }
        }
    }

    /// Runs an analysis on a reader of the index, off the executor, in a search slot. It
    /// gets the search state (vectors, catalog) and a way to embed text (configurations).
    /// On a replica holding several hosts it runs on one host's object.
    pub async fn analyze<T: Send + 'static>(
        &self,
        urgency: Urgency,
        f: impl FnOnce(&crate::index::Index, &crate::search::SearchState, &dyn Fn(&str) -> Result<Arc<[f32]>>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (search, view) = match self {
            Self::Primary(engine) => (engine.search_state().clone(), None),
            Self::Replica(scope) => {
                let view = scope.fleet.single(scope.only.as_deref())?;
                (view.search_state().clone(), Some(view))
            }
        };
        let slots = search.clone();
        let _slot = slots.slots.acquire().await?;
        let engine = match self {
            Self::Primary(engine) => Some(engine.clone()),
            Self::Replica(_) => None,
        };
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _idle = (urgency == Urgency::Background).then(IdlePriority::enter);
            let embed = |text: &str| -> Result<Arc<[f32]>> {
                match (&engine, &view) {
                    (Some(engine), _) => runtime.block_on(engine.pool().embed_query_for(text, urgency)),
                    (None, Some(view)) => view.embed_text(text),
                    (None, None) => unreachable!("a backend is a primary or a replica"),
                }
            };
            search.readers.with(|index| f(index, &search, &embed))
        })
        .await?
    }

    /// The ledger directory a verification reads.
    pub fn ledger_dir(&self) -> Result<PathBuf> {
        Ok(match self {
            Self::Primary(engine) => engine.layout().ledger_dir(),
            Self::Replica(scope) => scope.fleet.single(scope.only.as_deref())?.current()?.path.join("ledger"),
        })
    }

    /// `(head seq, head hash)` (on a replica holding several hosts: none; see `Hosts`).
    pub fn head(&self) -> (u64, String) {
        match self {
            Self::Primary(engine) => {
                let (seq, hash) = *engine.writer().head().borrow();
                (seq, hex::encode(hash))
            }
            Self::Replica(scope) => scope
                .fleet
                .single(scope.only.as_deref())
                .and_then(|v| v.current())
                .map(|c| (c.manifest.head_seq, c.manifest.head_hash.clone()))
                .unwrap_or((0, String::new())),
        }
    }

    pub fn vectorized_seq(&self) -> u64 {
        match self {
            Self::Primary(engine) => *engine.vectorized().borrow(),
            Self::Replica(scope) => scope.fleet.single(scope.only.as_deref()).map(|v| v.vectorized_seq()).unwrap_or(0),
        }
    }

    /// Counts and state for GetBlockchainStats.
    pub async fn stats(&self) -> Result<Value> {
        match self {
            Self::Primary(engine) => {
                let (events, elements) = engine.read_index(|index| Ok(index.counts()?)).await?;
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
                        "embedding_queries": engine.pool().queued_queries(),
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
                    "idle_priority": idle_priority_stats(),
                }))
            }
            Self::Replica(scope) => {
                let _slot = scope.fleet.slots.acquire().await?;
                let scope = scope.clone();
                tokio::task::spawn_blocking(move || replica_stats(&scope)).await?
            }
        }
    }
}

/// A replica's stats: its hosts, and with one host the fields a single-origin replica has
/// always reported (snapshot, manifest, model).
fn replica_stats(scope: &Scope) -> Result<Value> {
    let origins = scope.fleet.report(scope.only.as_deref())?;
    let events: u64 = origins.iter().map(|o| o.events).sum();
    let mut stats = json!({
        "events": events,
        "hosts": origins,
        "rejected_snapshots": origins.iter().flat_map(|o| o.rejected_snapshots.clone()).collect::<Vec<_>>(),
    });
    if let Ok(view) = scope.fleet.single(scope.only.as_deref()) {
        let current = view.current()?;
        let more = json!({
            "elements": view.counts()?.1,
            "snapshot": current.name,
            "manifest": current.manifest,
            "vectors": view.search_state().graph.read().expect("graph lock").len(),
            "model": {"id": current.manifest.model_id, "sha256": current.manifest.model_sha256},
        });
        if let (Some(map), Value::Object(more)) = (stats.as_object_mut(), more) {
            map.extend(more);
        }
    }
    Ok(stats)
}

/// Waits (up to the select's `wait_ms`) until the replica holds the required `min_seq`,
/// woken by each snapshot taken in; the read then checks again and says what is missing.
async fn wait_for_cover(scope: &Scope, select: &OriginSelect) -> Result<()> {
    if select.min_seq.is_none() {
        return Ok(());
    }
    let _waiting = scope.fleet.waiting.try_acquire().map_err(|_| crate::failure::Busy {
        what: "this replica",
        detail: "too many reads are waiting for a seq; try again shortly".into(),
    })?;
    let mut changed = scope.fleet.subscribe();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(select.wait_ms);
    while !scope.fleet.covers(scope.only.as_deref(), select)? {
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    Ok(())
}

/// How often work for callers beyond their share ran at idle CPU priority (`sched`), and how
/// often it was raised back still computing (the host's cores were busy, or the work long).
fn idle_priority_stats() -> Value {
    let (entered, raised_back) = crate::sched::idle_counts();
    json!({"entered": entered, "raised_back": raised_back})
}
