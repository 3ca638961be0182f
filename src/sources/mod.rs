//! Sources: NetworkManager (D-Bus) and Open vSwitch (OVSDB monitor) turn host changes into
//! events. Each source is a task that pushes events into one bounded queue; the recorder
//! drains it into the ledger in batches, shortening or rejecting (as a recorded
//! `event.rejected`) what breaks the ledger's limits, so no single event can stop it.
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
use crate::event::{EventError, NewEvent, Priority};
use crate::health::{Health, Transition};
use crate::ledger::LedgerError;
use crate::supervisor::Stopping;
use anyhow::Result;
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
    /// Whether the source is connected to what it records, or waiting for it and why.
    state: Arc<std::sync::Mutex<SourceState>>,
}

/// A source's connection, for `status` and `GetBlockchainStats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceState {
    /// `starting`, `connected` or `waiting`.
    pub state: &'static str,
    /// To what (`connected`), or why not (`waiting`).
    pub detail: String,
    pub since_unix_s: u64,
}

impl Sink {
    /// Events this source queued that the recorder has not taken yet.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The source follows what it records.
    pub fn connected(&self, detail: impl Into<String>) {
        self.set_state("connected", detail.into());
    }

    /// The source waits (for NetworkManager to appear, for the OVSDB socket) and says why.
    pub fn waiting(&self, why: impl Into<String>) {
        self.set_state("waiting", why.into());
    }

    fn set_state(&self, state: &'static str, detail: String) {
        let mut now = self.state.lock().expect("source state lock");
        if now.state != state || now.detail != detail {
            *now = SourceState { state, detail, since_unix_s: crate::event::now_unix_s() };
        }
    }

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
    /// Events shortened to fit the ledger's limits.
    pub shortened: AtomicU64,
    /// Events that could not be recorded as they were, recorded as `event.rejected`.
    pub rejected: AtomicU64,
}

/// The health stage of recording source events into the ledger.
pub const RECORDING_STAGE: &str = "recording";

/// How long a reconciliation waits for what its source already emitted to be indexed.
const RECONCILE_WAIT: Duration = Duration::from_secs(5);

/// Most events recorded with one append.
const RECORD_BATCH: usize = 1024;

/// The queue and the recorder draining it into the engine. The recorder may be restarted
/// (it keeps nothing the queue does not hold); a batch that could not be appended is kept
/// across retries.
pub struct Recorder {
    rx: tokio::sync::Mutex<(mpsc::Receiver<NewEvent>, Vec<NewEvent>)>,
    tx: mpsc::Sender<NewEvent>,
    sinks: std::sync::Mutex<Vec<Sink>>,
    /// Priority overrides by action (replaced by a reload).
    priorities: std::sync::RwLock<HashMap<String, Priority>>,
    pub stats: Arc<SourceStats>,
}

impl Recorder {
    pub fn new(config: &SourcesConfig) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        Arc::new(Self {
            rx: tokio::sync::Mutex::new((rx, Vec::new())),
            tx,
            sinks: std::sync::Mutex::new(Vec::new()),
            priorities: std::sync::RwLock::new(config.priorities.clone()),
            stats: Arc::default(),
        })
    }

    /// Each source's connection and what was recorded from them.
    pub fn report(&self) -> serde_json::Value {
        let sinks = self.sinks.lock().expect("sinks lock");
        let states: std::collections::BTreeMap<&str, SourceState> =
            sinks.iter().map(|s| (s.source, s.state.lock().expect("source state lock").clone())).collect();
        serde_json::json!({
            "connections": states,
            "recorded": self.stats.recorded.load(Ordering::Relaxed),
            "overflowed": self.stats.overflowed.load(Ordering::Relaxed),
            "shortened": self.stats.shortened.load(Ordering::Relaxed),
            "rejected": self.stats.rejected.load(Ordering::Relaxed),
        })
    }

    /// New priority overrides, for the events recorded from now on.
    pub fn set_priorities(&self, priorities: HashMap<String, Priority>) {
        *self.priorities.write().expect("priorities lock") = priorities;
    }

    /// A sink for one source.
    pub fn sink(&self, source: &'static str) -> Sink {
        let state = SourceState { state: "starting", detail: String::new(), since_unix_s: crate::event::now_unix_s() };
        let sink = Sink {
            tx: self.tx.clone(),
            source,
            overflow: Arc::default(),
            resync: Arc::new(Notify::new()),
            state: Arc::new(std::sync::Mutex::new(state)),
        };
        self.sinks.lock().expect("sinks lock").push(sink.clone());
        sink
    }

    /// Drains the queue into the ledger until asked to stop (then it records what is still
    /// queued and returns). An event that breaks the ledger's limits is shortened, or
    /// replaced by an `event.rejected` naming why — never retried for ever. A failed append
    /// (a full disk) is retried with backoff, reported in `health` while it lasts; the queue's
    /// overflow accounting and reconciliation cover what arrives meanwhile.
    pub async fn run(self: Arc<Self>, engine: Arc<Engine>, health: Arc<Health>, mut stopping: Stopping) -> Result<()> {
        let mut guard = self.rx.lock().await;
        let (rx, batch) = &mut *guard;
        let mut failures = 0u32;
        loop {
            if batch.is_empty() {
                let first = tokio::select! {
                    e = rx.recv() => e,
                    _ = stopping.wait() => None,
                };
                match first {
                    Some(e) => batch.push(e),
                    None if stopping.is_set() => {
                        // Stopping: whatever is still queued is recorded, then we are done.
                        while let Ok(e) = rx.try_recv() {
                            batch.push(e);
                        }
                        if batch.is_empty() {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                }
                while batch.len() < RECORD_BATCH {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                let events = std::mem::take(batch);
                *batch = events.into_iter().map(|e| self.prepare(e)).collect();
            }
            let count = batch.len() as u64;
            let result = match engine.record(batch.clone()).await {
                // Events are fitted before they are queued, so this is a bug somewhere; one
                // by one, so that a single event cannot hold up the others.
                Err(LedgerError::Invalid(e)) => {
                    tracing::error!(error = %e, "a batch of prepared events was refused as invalid; recording them one by one");
                    self.record_one_by_one(&engine, std::mem::take(batch)).await
                }
                other => other.map(|_| ()),
            };
            match result {
                Ok(_) => {
                    self.stats.recorded.fetch_add(count, Ordering::Relaxed);
                    batch.clear();
                    failures = 0;
                    if let Transition::Resumed { since_unix_ns, reason } = health.ok(RECORDING_STAGE) {
                        let secs = (crate::event::now_ns() - since_unix_ns) as f64 / 1e9;
                        batch.push(
                            NewEvent::new(
                                "agent",
                                "agent:recording",
                                "recording.resumed",
                                Priority::High,
                                json!({"stage": RECORDING_STAGE, "reason": reason, "stalled_since_unix_ns": since_unix_ns, "stalled_s": secs}),
                            )
                            .with_summary(format!("recording source events resumed after {secs:.1} s ({reason})")),
                        );
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if health.stalled(RECORDING_STAGE, e.to_string()) == Transition::Stalled {
                        tracing::error!(error = %e, events = count, "recording source events failed; retrying with backoff");
                    }
                    if stopping.is_set() && failures > 3 {
                        tracing::error!(
                            events = count,
                            "stopping with source events that could not be recorded; sources reconcile at the next start"
                        );
                        batch.clear();
                        return Ok(());
                    }
                    tokio::time::sleep(crate::backoff::backoff(failures.min(4))).await;
                    continue;
                }
            }
            for sink in self.sinks.lock().expect("sinks lock").iter() {
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

    /// Records events one at a time; an event the ledger refuses becomes a minimal
    /// `event.rejected` (fixed text, nothing from the event but its source's name).
    async fn record_one_by_one(&self, engine: &Engine, events: Vec<NewEvent>) -> Result<(), LedgerError> {
        for event in events {
            match engine.record(vec![event.clone()]).await {
                Err(LedgerError::Invalid(reason)) => {
                    let source: String = event.source.chars().filter(char::is_ascii_alphanumeric).take(64).collect();
                    tracing::error!(%reason, "an event was refused by the ledger; recorded as event.rejected");
                    let rejected = NewEvent::new(
                        "agent",
                        "agent:sources",
                        "event.rejected",
                        Priority::High,
                        json!({"source": source, "reason": "refused by the ledger"}),
                    )
                    .with_summary("an event could not be recorded: refused by the ledger");
                    engine.record(vec![rejected]).await?;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// The event as it will be recorded: its priority override applied, shortened to the
    /// ledger's limits, or replaced by an `event.rejected`.
    fn prepare(&self, mut event: NewEvent) -> NewEvent {
        if let Some(p) = self.priorities.read().expect("priorities lock").get(&event.action) {
            event.priority = *p;
        }
        let (source, element_id, action) = (event.source.clone(), event.element_id.clone(), event.action.clone());
        match event.fit() {
            Ok((event, cuts)) => {
                if !cuts.is_empty() {
                    self.stats.shortened.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(element = %element_id, action = %action, cuts = ?cuts, "event shortened to fit the ledger's limits");
                }
                event
            }
            Err(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = %source, %reason, "an event could not be recorded as it was; recording event.rejected");
                let clip = |s: &str| s.chars().take(120).collect::<String>();
                let reason = EventError(clip(&reason.0));
                NewEvent::new(
                    "agent",
                    "agent:sources",
                    "event.rejected",
                    Priority::High,
                    json!({"source": clip(&source), "element_id": clip(&element_id), "action": clip(&action), "reason": reason.0}),
                )
                .with_summary(format!(
                    "an event from {} could not be recorded: {}",
                    clip(&source).escape_debug(),
                    reason.0.escape_debug()
                ))
            }
        }
    }
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
    // Compared with the index, so what this source already emitted must be in it first: the
    // events still queued, then the index's few records behind the ledger. Else an element
    // seen live just before (NetworkManager restarting mid-burst) would be "added" twice.
    let deadline = tokio::time::Instant::now() + RECONCILE_WAIT;
    while sink.queued() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !engine.wait_indexed(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
        tracing::debug!(source, "reconciling against an index still behind the ledger");
    }
    let known = engine.read_index(move |index| Ok(index.elements_of_source(source)?)).await?;
    let first_time = known.is_empty();
    let mut known_map: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
    for e in known {
        if let Value::Object(mut state) = e.state
            && state.remove("present") != Some(Value::Bool(false))
        {
            known_map.insert(e.element_id, state);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_overrides_apply_and_a_reload_replaces_them() {
        let mut config = SourcesConfig::default();
        config.priorities.insert("link.down".into(), Priority::Critical);
        let recorder = Recorder::new(&config);
        let event = || NewEvent::new("nm", "interface:eth0", "link.down", Priority::Low, serde_json::json!({}));
        assert_eq!(recorder.prepare(event()).priority, Priority::Critical);
        recorder.set_priorities(HashMap::from([("link.up".to_owned(), Priority::High)]));
        assert_eq!(recorder.prepare(event()).priority, Priority::Low, "the old override is gone");
        let up = NewEvent::new("nm", "interface:eth0", "link.up", Priority::Low, serde_json::json!({}));
        assert_eq!(recorder.prepare(up).priority, Priority::High);
    }
}
