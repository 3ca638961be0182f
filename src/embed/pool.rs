//! The embedding worker pool: one model per thread, a priority queue (queries first, then
//! critical … low events, oldest first within a class), and a bounded cache so identical
//! texts are embedded once.
//!
//! Backpressure: the event queue is bounded. When it is full `submit_event` says so and the
//! caller keeps the event in its backlog (the index), feeding it again when there is room:
//! nothing is dropped, memory stays bounded.

use super::cache::TextCache;
use super::model::{ModelFiles, SentenceModel};
use crate::event::Priority;
use crate::metrics::LatencyRing;
use anyhow::{Result, anyhow};
use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
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
    Query { reply: oneshot::Sender<Result<Arc<[f32]>, String>> },
}

struct Job {
    /// 4 for queries, else the event's priority rank.
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
    heap: BinaryHeap<Job>,
    events: usize,
    query_order: u64,
    shutdown: bool,
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
    pub fn start(
        files: &ModelFiles,
        workers: usize,
        max_length: usize,
        event_capacity: usize,
        cache_entries: usize,
        results: Box<dyn Fn(Embedded) + Send + Sync>,
    ) -> Result<Self> {
        let workers = if workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { workers };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            cache: Mutex::new(TextCache::new(cache_entries)),
            results,
            event_capacity,
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
        if q.events >= self.shared.event_capacity {
            return false;
        }
        q.events += 1;
        q.heap.push(Job { class: priority.rank(), order: seq, text, work: Work::Event { seq } });
        drop(q);
        self.shared.ready.notify_one();
        true
    }

    /// Events waiting right now.
    pub fn queued_events(&self) -> usize {
        self.shared.queue.lock().expect("queue lock").events
    }

    /// How many more events the queue takes now.
    pub fn room(&self) -> usize {
        self.shared.event_capacity.saturating_sub(self.queued_events())
    }

    /// Embeds a query ahead of every queued event.
    pub async fn embed_query(&self, text: &str) -> Result<Arc<[f32]>> {
        let rx = self.queue_query(text);
        rx.await.map_err(|_| anyhow!("embedding workers stopped"))?.map_err(|e| anyhow!(e))
    }

    fn queue_query(&self, text: &str) -> oneshot::Receiver<Result<Arc<[f32]>, String>> {
        let (reply, rx) = oneshot::channel();
        let mut q = self.shared.queue.lock().expect("queue lock");
        q.query_order += 1;
        let order = q.query_order;
        q.heap.push(Job { class: 4, order, text: text.to_owned(), work: Work::Query { reply } });
        drop(q);
        self.shared.ready.notify_one();
        rx
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

fn work(mut model: SentenceModel, shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.queue.lock().expect("queue lock");
            loop {
                if let Some(job) = q.heap.pop() {
                    if matches!(job.work, Work::Event { .. }) {
                        q.events -= 1;
                    }
                    break job;
                }
                if q.shutdown {
                    return;
                }
                q = shared.ready.wait(q).expect("queue lock");
            }
        };
        let started = Instant::now();
        let key = TextCache::key(&job.text);
        let cached = shared.cache.lock().expect("cache lock").get(key);
        let vector = match cached {
            Some(v) => {
                shared.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                Ok(v)
            }
            None => match model.embed(&[job.text.as_str()]) {
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
            },
        };
        match job.work {
            Work::Query { reply } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_then_critical_then_oldest() {
        let mut heap = BinaryHeap::new();
        let job = |class, order| Job { class, order, text: String::new(), work: Work::Event { seq: order } };
        heap.push(job(0, 1));
        heap.push(job(3, 9));
        heap.push(job(0, 2));
        heap.push(job(3, 5));
        let (reply, _rx) = oneshot::channel();
        heap.push(Job { class: 4, order: 100, text: String::new(), work: Work::Query { reply } });
        let order: Vec<(u8, u64)> = std::iter::from_fn(|| heap.pop()).map(|j| (j.class, j.order)).collect();
        assert_eq!(order, vec![(4, 100), (3, 5), (3, 9), (0, 1), (0, 2)]);
    }
}
