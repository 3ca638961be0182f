//! Sources: NetworkManager (D-Bus) and Open vSwitch (OVSDB monitor) turn host changes into
//! events. Each source is a task that pushes events into one bounded queue; the recorder
//! drains it into the ledger in batches.
//!
//! Backpressure: the queue is bounded. When a burst overflows it, the overflowing events are
//! counted (never dropped silently): the recorder records an `agent:sources`
//! `queue.overflow` event with the count and asks that source to reconcile, which compares
//! the live state with the index and records what the lost events would have said.

mod diff;
pub mod nm;
pub mod nm_enums;
pub mod ovsdb;

pub use diff::{Diff, diff, value_text};

use crate::config::SourcesConfig;
use crate::engine::Engine;
use crate::event::{NewEvent, Priority};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Where a source puts its events.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<NewEvent>,
    pub source: &'static str,
    overflow: Arc<AtomicU64>,
    /// Notified when events of this source were lost to an overflow.
    pub resync: Arc<Notify>,
}

impl Sink {
    /// Queues an event; when the queue is full the event is counted as overflow.
    pub fn emit(&self, event: NewEvent) {
        if self.tx.try_send(event).is_err() {
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters for stats.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub recorded: AtomicU64,
    pub overflowed: AtomicU64,
}

/// The queue and the recorder draining it into the engine.
pub struct Recorder {
    rx: mpsc::Receiver<NewEvent>,
    tx: mpsc::Sender<NewEvent>,
    sinks: Vec<Sink>,
    priorities: HashMap<String, Priority>,
    pub stats: Arc<SourceStats>,
}

impl Recorder {
    pub fn new(config: &SourcesConfig) -> Self {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        Self { rx, tx, sinks: Vec::new(), priorities: config.priorities.clone(), stats: Arc::default() }
    }

    /// A sink for one source.
    pub fn sink(&mut self, source: &'static str) -> Sink {
        let sink = Sink { tx: self.tx.clone(), source, overflow: Arc::default(), resync: Arc::new(Notify::new()) };
        self.sinks.push(sink.clone());
        sink
    }

    /// Drains the queue into the ledger until every sink is gone. A failed append (a full
    /// disk) is retried: the batch is kept, and the queue's overflow accounting takes over.
    pub async fn run(mut self, engine: Arc<Engine>) {
        drop(self.tx);
        let mut batch = Vec::new();
        loop {
            if batch.is_empty() {
                match self.rx.recv().await {
                    Some(e) => batch.push(e),
                    None => return,
                }
                while batch.len() < 1024 {
                    match self.rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                for e in &mut batch {
                    if let Some(p) = self.priorities.get(&e.action) {
                        e.priority = *p;
                    }
                }
            }
            let count = batch.len() as u64;
            match engine.record(batch.clone()).await {
                Ok(_) => {
                    self.stats.recorded.fetch_add(count, Ordering::Relaxed);
                    batch.clear();
                }
                Err(e) => {
                    tracing::error!(error = %e, events = count, "recording source events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            for sink in &self.sinks {
                let lost = sink.overflow.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    self.stats.overflowed.fetch_add(lost, Ordering::Relaxed);
                    tracing::warn!(source = sink.source, lost, "source queue overflowed; reconciling");
                    let event = NewEvent::new(
                        "agent",
                        "agent:sources",
                        "queue.overflow",
                        Priority::High,
                        json!({"source": sink.source, "events_lost": lost}),
                    )
                    .with_summary(format!("{lost} {} events overflowed the source queue; reconciling from live state", sink.source));
                    batch.push(event);
                    sink.resync.notify_one();
                }
            }
        }
    }
}

/// Exponential backoff with jitter for reconnecting sources: 0.5 s doubling to 30 s.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1 << attempt.min(6)).min(30_000);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

/// One element as a source sees it now.
pub struct LiveElement {
    pub element_id: String,
    /// How summaries name it, e.g. "OVS bridge br0", "device eth0".
    pub label: String,
    pub state: serde_json::Map<String, serde_json::Value>,
}

/// Compares what a source sees now with what the index last knew from it: the first time
/// every element gets a `baseline`; later, only differences are recorded, as `reconciled`,
/// `reconciled.added` and `reconciled.removed` events.
pub async fn reconcile(source: &'static str, mut live: Vec<LiveElement>, sink: &Sink, engine: &Arc<Engine>) -> anyhow::Result<()> {
    use serde_json::Value;
    let known = engine.read_index(move |index| index.elements_of_source(source)).await?;
    let first_time = known.is_empty();
    let mut known_map: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
    for e in known {
        if let Value::Object(mut state) = e.state {
            if state.remove("present") != Some(Value::Bool(false)) {
                known_map.insert(e.element_id, state);
            }
        }
    }
    live.sort_by(|a, b| a.element_id.cmp(&b.element_id));
    for element in live {
        let LiveElement { element_id: id, label, state } = element;
        let event = match known_map.remove(&id) {
            None if first_time => {
                NewEvent::new(source, &id, "baseline", Priority::Low, json!({"after": state})).with_summary(format!("baseline: {label}"))
            }
            None => NewEvent::new(source, &id, "reconciled.added", Priority::Medium, json!({"after": state}))
                .with_summary(format!("{label} appeared while the agent was not watching")),
            Some(old) => {
                let d = diff(&old, &state);
                if d.is_empty() {
                    continue;
                }
                let summary = format!("{label} changed while the agent was not watching: {}", d.changed.join(", "));
                NewEvent::new(source, &id, "reconciled", Priority::Medium, d.into_details()).with_summary(summary)
            }
        };
        sink.emit(event);
    }
    let mut gone: Vec<(String, serde_json::Map<String, Value>)> = known_map.into_iter().collect();
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, old) in gone {
        sink.emit(
            NewEvent::new(source, &id, "reconciled.removed", Priority::Medium, json!({"before": old}))
                .with_summary(format!("{id} disappeared while the agent was not watching")),
        );
    }
    Ok(())
}
