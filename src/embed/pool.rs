//! The embedding worker pool: one model per thread, two queues — queries (first come, first
//! served) and events (critical … low, oldest first within a class) — and a bounded cache so
//! identical texts are embedded once. Queries go first, but never more than
//! [`QUERY_BURST`] in a row while events wait, so a flood of searches cannot starve
//! recording. A flood's queries are embedded on the engine's background lane, with this pool's
//! cache ([`EmbedPool::embed_query_on`]); where the lane could not start, a query for a caller
//! beyond its share ([`Urgency::Background`]) is embedded here at idle CPU priority (bounded
//! in time, `sched`), and so are an analysis's.
//!
//! Backpressure: both queues are bounded. When the event queue is full `submit_event` says
//! so and the caller keeps the event in its backlog (the index), feeding it again when there
//! is room: nothing is dropped. When the query queue is full a query fails at once with
//! [`Busy`] (the caller may retry); it never waits without bound.

use super::cache::TextCache;
use super::model::{ModelFiles, SentenceModel};
use crate::config::EmbeddingConfig;
use crate::event::Priority;
use crate::failure::Busy;
use crate::metrics::LatencyRing;
use crate::sched::{IdlePriority, Urgency};
use anyhow::{Result, anyhow};
use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

/// A finished event embedding (or why it failed).
#[derive(Debug)]
pub struct Embedded {
    pub seq: u64,
    pub vector: Result<Arc<[f32]>, String>,
}

enum Work {
    Event { seq: u64 },
    Query { reply: oneshot::Sender<Result<Arc<[f32]>, String>>, urgency: Urgency },
}

impl Work {
    fn is_background(&self) -> bool {
        matches!(self, Work::Query { urgency: Urgency::Background, .. })
    }
}

/// Queries taken in a row before a waiting event gets a worker.
pub const QUERY_BURST: u32 = 4;

struct Job {
    /// The event's priority rank (queries: unused).
    class: u8,
    order: u64,
    text: String,
    work: Work,
}

impl PartialEq for Job {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Job {}
impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Job {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // BinaryHeap pops the greatest: higher class first, then the older (smaller order).
        self.class.cmp(&other.class).then(other.order.cmp(&self.order))
    }
}

#[derive(Default)]
struct Queue {
    events: BinaryHeap<Job>,
    queries: VecDeque<Job>,
    queries_in_a_row: u32,
    query_order: u64,
    shutdown: bool,
}

impl Queue {
    /// The next job: a query, unless [`QUERY_BURST`] queries ran in a row and an event waits.
    fn next(&mut self) -> Option<Job> {
        let event_turn = self.queries_in_a_row >= QUERY_BURST && !self.events.is_empty();
        if !event_turn && let Some(job) = self.queries.pop_front() {
            self.queries_in_a_row += 1;
            return Some(job);
        }
        let job = self.events.pop()?;
        self.queries_in_a_row = 0;
        Some(job)
    }
}

/// Counters for stats.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub embedded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub failures: AtomicU64,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    cache: Mutex<TextCache>,
    results: Box<dyn Fn(Embedded) + Send + Sync>,
    event_capacity: usize,
    query_capacity: usize,
    stats: PoolStats,
    event_latency: LatencyRing,
    query_latency: LatencyRing,
}

pub struct EmbedPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    model_id: String,
    model_sha256: String,
}

impl EmbedPool {
    /// Loads one model per worker (all must load) and starts the workers. Each finished
    /// event embedding is handed to `results`.
    pub fn start(files: &ModelFiles, config: &EmbeddingConfig, results: Box<dyn Fn(Embedded) + Send + Sync>) -> Result<Self> {
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let max_length = config.max_length;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            cache: Mutex::new(TextCache::new(config.cache_entries)),
            results,
            event_capacity: config.queue_capacity,
            query_capacity: config.query_queue_capacity,
            stats: PoolStats::default(),
            event_latency: LatencyRing::new(4096),
            query_latency: LatencyRing::new(4096),
        });
        let mut threads = Vec::with_capacity(workers);
        let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
        for i in 0..workers {
            let shared = shared.clone();
            let files = files.clone();
            let loaded_tx = loaded_tx.clone();
            threads.push(std::thread::Builder::new().name(format!("embed-{i}")).spawn(move || {
                yield_to_latency_work();
                match SentenceModel::load(&files, max_length) {
                    Ok(model) => {
                        let _ = loaded_tx.send(Ok(()));
                        work(model, &shared);
                    }
                    Err(e) => {
                        let _ = loaded_tx.send(Err(e));
                    }
                }
            })?);
        }
        drop(loaded_tx);
        let pool = Self { shared, threads, model_id: files.model_id(), model_sha256: files.model_sha256.clone() };
        for _ in 0..workers {
            loaded_rx.recv().map_err(|_| anyhow!("an embedding worker died while loading the model"))??;
        }
        tracing::info!(workers, model = %pool.model_id, "embedding workers ready");
        Ok(pool)
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// Queues an event's text. Returns false when the event queue is full: the caller keeps
    /// the event and offers it again later.
    pub fn submit_event(&self, seq: u64, priority: Priority, text: String) -> bool {
        let mut q = self.shared.queue.lock().expect("queue lock");
        if q.events.len() >= self.shared.event_capacity {
            return false;
        }
        q.events.push(Job { class: priority.rank(), order: seq, text, work: Work::Event { seq } });
        drop(q);
        self.shared.ready.notify_one();
        true
    }

    /// Events waiting right now.
    pub fn queued_events(&self) -> usize {
        self.shared.queue.lock().expect("queue lock").events.len()
    }

    /// Queries waiting right now.
    pub fn queued_queries(&self) -> usize {
        self.shared.queue.lock().expect("queue lock").queries.len()
    }

    /// How many more events the queue takes now.
    pub fn room(&self) -> usize {
        self.shared.event_capacity.saturating_sub(self.queued_events())
    }

    /// Embeds a query ahead of queued events; fails at once with [`Busy`] when the query
    /// queue is full.
    pub async fn embed_query(&self, text: &str) -> Result<Arc<[f32]>> {
        self.embed_query_for(text, Urgency::Interactive).await
    }

    /// [`embed_query`](Self::embed_query) for a caller within its share or beyond it (then
    /// at idle CPU priority).
    pub async fn embed_query_for(&self, text: &str, urgency: Urgency) -> Result<Arc<[f32]>> {
        let rx = self.queue_query(text, urgency)?;
        rx.await.map_err(|_| anyhow!("embedding workers stopped"))?.map_err(|e| anyhow!(e))
    }

    fn queue_query(&self, text: &str, urgency: Urgency) -> Result<oneshot::Receiver<Result<Arc<[f32]>, String>>, Busy> {
        let (reply, rx) = oneshot::channel();
        let mut q = self.shared.queue.lock().expect("queue lock");
        if q.queries.len() >= self.shared.query_capacity {
            return Err(Busy { what: "query embedding", detail: format!("{} queries are waiting; try again shortly", q.queries.len()) });
        }
        q.query_order += 1;
        let order = q.query_order;
        q.queries.push_back(Job { class: 0, order, text: text.to_owned(), work: Work::Query { reply, urgency } });
        drop(q);
        self.shared.ready.notify_one();
        Ok(rx)
    }

    /// Embeds a query on the caller's own `model` (the background lane's), through the
    /// pool's cache, counted with the pool's queries.
    pub fn embed_query_on(&self, model: &mut SentenceModel, text: &str) -> Result<Arc<[f32]>> {
        let started = Instant::now();
        let vector = embed_cached(&self.shared, text, |text| model.embed(&[text]));
        self.shared.query_latency.record(started.elapsed());
        vector.map_err(|e| anyhow!(e))
    }

    /// False when a worker thread has ended while the pool runs (a panic).
    pub fn workers_alive(&self) -> bool {
        self.threads.iter().all(|t| !t.is_finished())
    }

    pub fn stats(&self) -> &PoolStats {
        &self.shared.stats
    }

    pub fn event_latency(&self) -> &LatencyRing {
        &self.shared.event_latency
    }

    pub fn query_latency(&self) -> &LatencyRing {
        &self.shared.query_latency
    }

    fn stop(&mut self) {
        self.shared.queue.lock().expect("queue lock").shutdown = true;
        self.shared.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for EmbedPool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How much lower than the daemon's other threads the embedding workers run.
const WORKER_NICE_STEP: i32 = 5;

/// Embedding is throughput work, answering the bus is latency work: when both want the cores,
/// the workers yield them (a lower priority, and a long slice the bus's threads may preempt).
fn yield_to_latency_work() {
    if let Err(error) = crate::sched::lower_priority(WORKER_NICE_STEP) {
        tracing::warn!(%error, "could not lower the embedding worker's priority; it competes with the bus for the cores");
    }
    crate::sched::Throughput::for_this_thread();
}

fn work(mut model: SentenceModel, shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.queue.lock().expect("queue lock");
            loop {
                if let Some(job) = q.next() {
                    break job;
                }
                if q.shutdown {
                    return;
                }
                q = shared.ready.wait(q).expect("queue lock");
            }
        };
        let started = Instant::now();
        let vector = embed_cached(shared, &job.text, |text| embed_at(&mut model, text, job.work.is_background()));
        match job.work {
            Work::Query { reply, .. } => {
                shared.query_latency.record(started.elapsed());
                let _ = reply.send(vector);
            }
            Work::Event { seq } => {
                shared.event_latency.record(started.elapsed());
                (shared.results)(Embedded { seq, vector });
            }
        }
    }
}

/// `text`'s vector from the cache, or embedded by `embed` and remembered; counted.
fn embed_cached(shared: &Shared, text: &str, embed: impl FnOnce(&str) -> Result<Vec<Vec<f32>>>) -> Result<Arc<[f32]>, String> {
    let key = TextCache::key(text);
    let cached = shared.cache.lock().expect("cache lock").get(key);
    if let Some(v) = cached {
        shared.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(v);
    }
    match embed(text) {
        Ok(mut vs) => {
            let v: Arc<[f32]> = vs.pop().expect("one text, one vector").into();
            shared.cache.lock().expect("cache lock").insert(key, v.clone());
            shared.stats.embedded.fetch_add(1, Ordering::Relaxed);
            Ok(v)
        }
        Err(e) => {
            shared.stats.failures.fetch_add(1, Ordering::Relaxed);
            Err(e.to_string())
        }
    }
}

/// Embeds `text`, at idle CPU priority for a background query.
fn embed_at(model: &mut SentenceModel, text: &str, background: bool) -> Result<Vec<Vec<f32>>> {
    let _idle = background.then(IdlePriority::enter);
    model.embed(&[text])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_first_but_events_get_every_fifth_turn() {
        let mut q = Queue::default();
        let event = |class, order| Job { class, order, text: String::new(), work: Work::Event { seq: order } };
        q.events.push(event(0, 1));
        q.events.push(event(3, 9));
        q.events.push(event(0, 2));
        q.events.push(event(3, 5));
        for order in 100..106 {
            let (reply, _rx) = oneshot::channel();
            q.queries.push_back(Job { class: 0, order, text: String::new(), work: Work::Query { reply, urgency: Urgency::Interactive } });
        }
        let taken: Vec<(bool, u64)> = std::iter::from_fn(|| q.next()).map(|j| (matches!(j.work, Work::Query { .. }), j.order)).collect();
        assert_eq!(
            taken,
            vec![
                (true, 100),
                (true, 101),
                (true, 102),
                (true, 103),
                (false, 5),
                (true, 104),
                (true, 105),
                (false, 9),
                (false, 1),
                (false, 2)
            ]
        );
    }
}
