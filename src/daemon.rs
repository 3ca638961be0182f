//! `ovs-port-agent daemon`: opens the engine (or, as a replica, its serving store), starts
//! every task under one [`Supervisor`], serves `dev.ovs.PortAgent1`, and shuts down in one
//! order on SIGTERM/SIGINT or when a task it cannot run without ends. The name is owned
//! only once everything is ready, so systemd's Type=dbus readiness means "ready".
//!
//! Shutdown order (primary): stop the sources (no new input) → the recorder records what
//! they queued → the D-Bus name is released (no new calls) → the streamer takes a last
//! snapshot and gives the replicas up to 10 s to take it, then stops → the engine closes
//! the ledger writer, lets the indexer finish and checkpoints the graph.

use crate::analytics::anomaly::{DEFAULT_BASELINE_DAYS, LiveCounters, LiveScorer, SignalBudget};
use crate::config::{Config, Role};
use crate::dbus::backend::{Backend, FleetAccess, Reporting};
use crate::dbus::{BUS_NAME, OBJECT_PATH, PortAgent};
use crate::engine::Engine;
use crate::event::{NewEvent, Priority};
use crate::health::Health;
use crate::layout::Layout;
use crate::reload::{ConfigFile, ReloadPlan};
use crate::replica::{Fleet, Scope, StateWatch, origin_object_path};
use crate::sources::Recorder;
use crate::stream::receive;
use crate::stream::streamer::{ReplicaNotice, StreamHandle, Streaming};
use crate::supervisor::{Restart, Stopping, Supervisor};
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::object_server::InterfaceRef;

/// How long each group gets to stop before its tasks are aborted.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

pub async fn run(config: Config, file: ConfigFile, layout: Layout, bus: String) -> Result<()> {
    match config.agent.role {
        Role::Primary => run_primary(config, file, layout, bus).await,
        Role::Replica => run_replica(config, bus).await,
    }
}

async fn run_primary(config: Config, file: ConfigFile, layout: Layout, bus: String) -> Result<()> {
    let started = std::time::Instant::now();
    let health = Arc::new(Health::default());
    let engine = {
        let (config, layout, health) = (config.clone(), layout.clone(), health.clone());
        Arc::new(tokio::task::spawn_blocking(move || Engine::open_with_health(&layout, &config, health)).await??)
    };
    let mut supervisor = Supervisor::new();
    watch_threads(&mut supervisor, engine.clone());
    let streaming = start_streaming(&mut supervisor, &config, &layout, engine.clone(), health.clone())?;
    let stream = streaming.as_ref().map(|s| s.handle.clone());
    let conn = crate::bus::connect(&bus).await?;
    let recorder = Recorder::new(&config.sources);
    let reporting = Reporting {
        health: health.clone(),
        tasks: supervisor.status(),
        sources: Some(recorder.clone()),
        host: config.host(),
        fleet: Arc::new(FleetAccess::new(config.fleet.clone())),
        ..Default::default()
    };
    conn.object_server().at(OBJECT_PATH, PortAgent::new(Backend::Primary(engine.clone()), stream.clone(), reporting.clone())).await?;
    let iface = conn.object_server().interface::<_, PortAgent>(OBJECT_PATH).await?;
    spawn_signal_forwarders(&mut supervisor, engine.clone(), iface.clone());
    spawn_anomaly_scorer(&mut supervisor, engine.clone(), iface.clone(), reporting.anomalies.clone());
    spawn_caller_watch(&mut supervisor, conn.clone(), reporting.callers.clone());
    if let Some(stream) = &stream {
        spawn_replica_signals(&mut supervisor, stream.clone(), iface);
    }
    start_sources(&mut supervisor, &config, &bus, engine.clone(), health, recorder.clone());
    let mut signals = Signals::new()?;
    own_name(&conn).await?;
    tracing::info!(
        name = BUS_NAME,
        bus = %bus,
        data_dir = %layout.root.display(),
        head_seq = engine.writer().head().borrow().0,
        ready_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    let mut running = config;
    let outcome = loop {
        match next_wake(&mut supervisor, &mut signals).await {
            Wake::Stop(outcome) => break outcome,
            Wake::Reload => {
                let live = Live { streaming: streaming.as_ref(), recorder: &recorder, engine: &engine };
                reload(&mut supervisor, &file, &mut running, live).await;
            }
        }
    };
    supervisor.stop_group("sources", STOP_DEADLINE).await;
    supervisor.stop_group("recorder", STOP_DEADLINE).await;
    stop_serving(&conn).await;
    supervisor.stop_group("signals", STOP_DEADLINE).await;
    if let Some(stream) = &stream {
        // The workers still run: they send the last snapshot, then stop.
        stream.finish(&engine, STOP_DEADLINE).await;
        supervisor.stop_group("stream", STOP_DEADLINE).await;
    }
    supervisor.stop_group("watchdog", STOP_DEADLINE).await;
    let shutdown = tokio::task::spawn_blocking(move || engine.shutdown());
    if tokio::time::timeout(Duration::from_secs(20), shutdown).await.is_err() {
        tracing::error!("closing the ledger and checkpointing took longer than 20 s; exiting anyway");
    }
    tracing::info!("stopped");
    outcome
}

/// The replica role: read-only members from the serving stores of every origin this host
/// receives (`/dev/ovs/PortAgent1` for all, `…/origins/<name>` for each alone), taking in
/// each snapshot the receiver verifies as soon as it publishes it.
async fn run_replica(config: Config, bus: String) -> Result<()> {
    let dir = config.replica.dir.clone();
    let fleet = {
        let (config, dir) = (config.clone(), dir.clone());
        Arc::new(tokio::task::spawn_blocking(move || Fleet::open(&dir, &config)).await??)
    };
    let mut supervisor = Supervisor::new();
    let conn = crate::bus::connect(&bus).await?;
    let reporting = Reporting { tasks: supervisor.status(), fleet: Arc::new(FleetAccess::new(config.fleet.clone())), ..Default::default() };
    let all = Scope { fleet: fleet.clone(), only: None };
    conn.object_server().at(OBJECT_PATH, PortAgent::new(Backend::Replica(all), None, reporting.clone())).await?;
    spawn_caller_watch(&mut supervisor, conn.clone(), reporting.callers.clone());
    let objects = OriginObjects { conn: conn.clone(), fleet: fleet.clone(), reporting, served: Default::default() };
    objects.register_new().await;
    supervisor.spawn("replica", "snapshot-watcher", Restart::Always, move |stopping| follow_snapshots(objects.clone(), stopping));
    let mut signals = Signals::new()?;
    own_name(&conn).await?;
    tracing::info!(name = BUS_NAME, bus = %bus, dir = %dir.display(), origins = fleet.names().len(), "ready (replica)");
    let outcome = loop {
        match next_wake(&mut supervisor, &mut signals).await {
            Wake::Stop(outcome) => break outcome,
            Wake::Reload => tracing::warn!("the replica role has nothing to reload; restart it to apply a changed configuration"),
        }
    };
    stop_serving(&conn).await;
    supervisor.stop_group("replica", STOP_DEADLINE).await;
    tracing::info!("stopped");
    outcome
}

/// A replica's D-Bus objects: one per origin served, added as origins arrive.
#[derive(Clone)]
struct OriginObjects {
    conn: zbus::Connection,
    fleet: Arc<Fleet>,
    reporting: Reporting,
    served: Arc<tokio::sync::Mutex<std::collections::HashSet<String>>>,
}

impl OriginObjects {
    async fn register_new(&self) {
        let mut served = self.served.lock().await;
        for name in self.fleet.names() {
            if served.contains(&name) {
                continue;
            }
            let scope = Scope { fleet: self.fleet.clone(), only: Some(name.clone()) };
            let agent = PortAgent::new(Backend::Replica(scope), None, self.reporting.clone());
            match self.conn.object_server().at(origin_object_path(&name), agent).await {
                Ok(_) => {
                    served.insert(name);
                }
                Err(e) => tracing::warn!(origin = %name, error = %e, "could not serve this origin's object"),
            }
        }
    }

    /// Tells the watchers of an object that its head moved.
    async fn announce(&self, path: &str) {
        let Ok(iface) = self.conn.object_server().interface::<_, PortAgent>(path).await else { return };
        let agent = iface.get().await;
        let emitter = iface.signal_emitter();
        let _ = agent.head_seq_changed(emitter).await;
        let _ = agent.head_hash_changed(emitter).await;
        let _ = agent.vectorized_seq_changed(emitter).await;
    }
}

/// Takes in each newly verified snapshot of every origin, and serves origins that appear
/// (woken by inotify on the origins' state files; a timer finds new origins and is the
/// safety net).
async fn follow_snapshots(objects: OriginObjects, mut stopping: Stopping) -> Result<()> {
    let fleet = objects.fleet.clone();
    let mut watch = StateWatch::new(&receive::state_file(fleet.base()))?;
    let mut watched: std::collections::HashSet<std::path::PathBuf> = [fleet.base().to_owned()].into();
    loop {
        let f = fleet.clone();
        let switched = tokio::task::spawn_blocking(move || {
            f.rescan();
            f.refresh()
        })
        .await?;
        objects.register_new().await;
        for dir in fleet.dirs() {
            if watched.insert(dir.clone()) {
                // Without the watch (the inotify limit) the timer still finds its snapshots.
                if let Err(e) = watch.add(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "not watching this origin; its snapshots are found within 2 s");
                }
            }
        }
        if !switched.is_empty() {
            objects.announce(OBJECT_PATH).await;
            for name in &switched {
                objects.announce(&origin_object_path(name)).await;
            }
        }
        tokio::select! {
            changed = watch.changed() => changed?,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stopping.wait() => return Ok(()),
        }
    }
}

/// The signals the daemon acts on (installed before the name is owned: from then on a
/// SIGHUP reloads instead of ending the process).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())?, hup: signal(SignalKind::hangup())? })
    }
}

/// What woke the daemon's main loop.
enum Wake {
    /// Shut down, with how the run ended.
    Stop(Result<()>),
    /// SIGHUP (`systemctl reload`).
    Reload,
}

async fn next_wake(supervisor: &mut Supervisor, signals: &mut Signals) -> Wake {
    tokio::select! {
        _ = signals.term.recv() => { tracing::info!(signal = "SIGTERM", "shutting down"); Wake::Stop(Ok(())) }
        _ = signals.int.recv() => { tracing::info!(signal = "SIGINT", "shutting down"); Wake::Stop(Ok(())) }
        _ = signals.hup.recv() => Wake::Reload,
        fatal = supervisor.fatal() => {
            tracing::error!(task = %fatal.task, why = %fatal.why, "shutting down");
            Wake::Stop(Err(anyhow::anyhow!("{} {}", fatal.task, fatal.why)))
        }
    }
}

/// What a reload changes in a running primary.
struct Live<'a> {
    streaming: Option<&'a Streaming>,
    recorder: &'a Recorder,
    engine: &'a Engine,
}

/// Reads the configuration file again and applies what may change live (docs/operations.md,
/// "Reload"); a file that does not load, or a change of data directory, role or model, is
/// refused and everything runs on as it was.
async fn reload(supervisor: &mut Supervisor, file: &ConfigFile, running: &mut Config, live: Live<'_>) {
    tracing::info!(config = %file.path.display(), "reloading the configuration (SIGHUP)");
    let new = match file.load() {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload refused: the configuration does not load; running on with the previous one");
            return;
        }
    };
    let plan = match ReloadPlan::between(running, &new) {
        Ok(plan) => plan,
        Err(why) => {
            tracing::error!(%why, "reload refused; running on with the previous configuration");
            return;
        }
    };
    if !plan.needs_restart.is_empty() {
        tracing::warn!(sections = %plan.needs_restart.join(", "), "changed settings that take effect only at the next start");
    }
    if plan.is_empty() {
        tracing::info!("reloaded: nothing that runs changed");
        return;
    }
    match live.streaming {
        Some(streaming) => {
            for name in &plan.replicas_removed {
                streaming.remove_replica(supervisor, name).await;
            }
            for replica in &plan.replicas_changed {
                streaming.restart_replica(supervisor, replica.clone()).await;
            }
            for replica in &plan.replicas_added {
                streaming.add_replica(supervisor, replica.clone());
            }
            if let Some(policy) = &plan.trigger {
                streaming.set_policy(policy.clone());
            }
        }
        None if !plan.replicas_added.is_empty() || !plan.replicas_changed.is_empty() => {
            tracing::warn!("snapshots and replication are off on this host; the replica list applies once they run");
        }
        None => {}
    }
    if plan.priorities_changed {
        live.recorder.set_priorities(new.sources.priorities.clone());
    }
    let details = plan.details(&new);
    tracing::info!(changes = %details, "reloaded");
    let summary = format!(
        "configuration reloaded: {} replica(s) added, {} removed, {} changed{}{}",
        plan.replicas_added.len(),
        plan.replicas_removed.len(),
        plan.replicas_changed.len(),
        if plan.trigger.is_some() { ", trigger policy changed" } else { "" },
        if plan.priorities_changed { ", priority overrides changed" } else { "" },
    );
    let event = NewEvent::new("agent", "agent:config", "config.reloaded", Priority::Medium, details).with_summary(summary);
    if let Err(e) = live.engine.record(vec![event]).await {
        tracing::error!(error = %format!("{e:#}"), "could not record the reload");
    }
    *running = plan.applied_to(running, &new);
}

async fn own_name(conn: &zbus::Connection) -> Result<()> {
    let reply = conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await
        .with_context(|| format!("requesting the bus name {BUS_NAME} (the bus policy lets only root own it)"))?;
    if reply != RequestNameReply::PrimaryOwner {
        bail!("{BUS_NAME} is already owned on this bus: another ovs-port-agent is running");
    }
    Ok(())
}

async fn stop_serving(conn: &zbus::Connection) {
    let _ = conn.release_name(BUS_NAME).await;
    let _ = conn.object_server().remove::<PortAgent, _>(OBJECT_PATH).await;
}

/// The engine's threads run outside the runtime; this task fails (and so stops the daemon,
/// for systemd to restart it) when one of them has died.
fn watch_threads(supervisor: &mut Supervisor, engine: Arc<Engine>) {
    supervisor.spawn("watchdog", "engine-threads", Restart::Never, move |mut stopping| {
        let engine = engine.clone();
        async move {
            loop {
                if let Some(dead) = engine.dead_thread() {
                    bail!("the {dead} thread has stopped");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopping.wait() => return Ok(()),
                }
            }
        }
    });
}

/// Emits `EventRecorded` per record and `BatchVectorized` as vectors land, with the
/// matching `PropertiesChanged` (coalesced per burst).
fn spawn_signal_forwarders(supervisor: &mut Supervisor, engine: Arc<Engine>, iface: InterfaceRef<PortAgent>) {
    let (records_engine, records_iface) = (engine.clone(), iface.clone());
    supervisor.spawn("signals", "event-recorded", Restart::Always, move |mut stopping| {
        let mut records = records_engine.subscribe();
        let iface = records_iface.clone();
        async move {
            loop {
                let first = tokio::select! {
                    r = records.recv() => r,
                    _ = stopping.wait() => return Ok(()),
                };
                let first = match first {
                    Ok(r) => Some(r),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "EventRecorded signals skipped (a burst outran the bus)");
                        None
                    }
                    Err(_) => return Ok(()),
                };
                let emitter = iface.signal_emitter();
                let mut batch: Vec<_> = first.into_iter().collect();
                while let Ok(r) = records.try_recv() {
                    batch.push(r);
                }
                for r in &batch {
                    let _ = PortAgent::event_recorded(emitter, r.seq, &r.element_id, &r.action, &r.hash_hex()).await;
                }
                let agent = iface.get().await;
                let _ = agent.head_seq_changed(emitter).await;
                let _ = agent.head_hash_changed(emitter).await;
            }
        }
    });
    supervisor.spawn("signals", "batch-vectorized", Restart::Always, move |mut stopping| {
        let mut vectorized = engine.vectorized();
        let iface = iface.clone();
        async move {
            loop {
                tokio::select! {
                    changed = vectorized.changed() => if changed.is_err() { return Ok(()) },
                    _ = stopping.wait() => return Ok(()),
                }
                let through = *vectorized.borrow_and_update();
                let emitter = iface.signal_emitter();
                let _ = PortAgent::batch_vectorized(emitter, through).await;
                let _ = iface.get().await.vectorized_seq_changed(emitter).await;
            }
        }
    });
}

/// Scores events as they are vectorized and signals what is unusual (`AnomalyDetected`),
/// rate-limited. The scorer's state is rebuilt from the index at start (and after a restart
/// of this task), so it is never persisted and never stale.
fn spawn_anomaly_scorer(supervisor: &mut Supervisor, engine: Arc<Engine>, iface: InterfaceRef<PortAgent>, counters: Arc<LiveCounters>) {
    supervisor.spawn("signals", "anomaly-scorer", Restart::Always, move |mut stopping| {
        let (engine, iface, counters) = (engine.clone(), iface.clone(), counters.clone());
        async move {
            let search = engine.search_state().clone();
            let started = std::time::Instant::now();
            let rebuild = search.clone();
            let mut scorer = tokio::task::spawn_blocking(move || {
                rebuild.readers.with(|index| LiveScorer::rebuild(index, &rebuild, DEFAULT_BASELINE_DAYS, crate::event::now_ns()))
            })
            .await??;
            tracing::info!(ms = started.elapsed().as_millis() as u64, scored_seq = scorer.scored_seq, "anomaly scorer ready");
            let mut vectorized = engine.vectorized();
            let mut budget = SignalBudget::default();
            loop {
                let through = *vectorized.borrow_and_update();
                if through > scorer.scored_seq {
                    let s = search.clone();
                    let (back, findings) = tokio::task::spawn_blocking(move || {
                        let found = s.readers.with(|index| scorer.advance(index, &s, through));
                        (scorer, found)
                    })
                    .await?;
                    scorer = back;
                    counters.scored_seq.store(scorer.scored_seq, Ordering::Relaxed);
                    let emitter = iface.signal_emitter();
                    for finding in findings? {
                        counters.findings.fetch_add(1, Ordering::Relaxed);
                        if !budget.take() {
                            counters.suppressed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        tracing::info!(rule = finding.rule.as_str(), element = %finding.element_id, seq = finding.event.seq, why = %finding.why, "anomaly");
                        let _ = PortAgent::anomaly_detected(emitter, &serde_json::to_string(&finding)?).await;
                        counters.signalled.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::select! {
                    changed = vectorized.changed() => if changed.is_err() { return Ok(()) },
                    _ = stopping.wait() => return Ok(()),
                }
            }
        }
    });
}

/// Starts the configured sources and the recorder that feeds their events to the ledger.
fn start_sources(
    supervisor: &mut Supervisor,
    config: &Config,
    bus: &str,
    engine: Arc<Engine>,
    health: Arc<Health>,
    recorder: Arc<Recorder>,
) {
    if config.sources.ovsdb {
        let sink = recorder.sink("ovsdb");
        let (socket, engine) = (config.sources.ovsdb_socket(), engine.clone());
        supervisor.spawn("sources", "source:ovsdb", Restart::Always, move |mut stopping| {
            let run = crate::sources::ovsdb::run(socket.clone(), sink.clone(), engine.clone());
            async move {
                tokio::select! {
                    () = run => Ok(()),
                    _ = stopping.wait() => Ok(()),
                }
            }
        });
    }
    if config.sources.networkmanager {
        let sink = recorder.sink("nm");
        let nm_bus = if config.sources.nm_bus.is_empty() { bus.to_owned() } else { config.sources.nm_bus.clone() };
        let coalesce = Duration::from_millis(config.sources.coalesce_ms);
        let engine = engine.clone();
        supervisor.spawn("sources", "source:nm", Restart::Always, move |mut stopping| {
            let run = crate::sources::nm::run(nm_bus.clone(), coalesce, sink.clone(), engine.clone());
            async move {
                tokio::select! {
                    () = run => Ok(()),
                    _ = stopping.wait() => Ok(()),
                }
            }
        });
    }
    supervisor
        .spawn("recorder", "recorder", Restart::Always, move |stopping| recorder.clone().run(engine.clone(), health.clone(), stopping));
}

/// Starts snapshots and replication when the data directory is on Btrfs.
fn start_streaming(
    supervisor: &mut Supervisor,
    config: &Config,
    layout: &Layout,
    engine: Arc<Engine>,
    health: Arc<Health>,
) -> Result<Option<Streaming>> {
    if !config.stream.enabled {
        return Ok(None);
    }
    if !crate::btrfs::is_btrfs(&layout.data)? {
        tracing::warn!(data = %layout.data.display(), "snapshots and replication are off: the data directory is not on Btrfs");
        return Ok(None);
    }
    Ok(Some(crate::stream::streamer::start(supervisor, engine, config, health)?))
}

/// Forgets the waiting searches of callers that leave the bus (`fairness::CallerSearches::forget`).
fn spawn_caller_watch(supervisor: &mut Supervisor, conn: zbus::Connection, callers: Arc<crate::dbus::fairness::CallerSearches>) {
    supervisor.spawn("bus", "caller-watch", Restart::Always, move |mut stopping| {
        let (conn, callers) = (conn.clone(), callers.clone());
        async move {
            use futures_util::StreamExt;
            let bus = zbus::fdo::DBusProxy::new(&conn).await?;
            let mut departures = bus.receive_name_owner_changed().await?;
            loop {
                let signal = tokio::select! {
                    s = departures.next() => s,
                    _ = stopping.wait() => return Ok(()),
                };
                let Some(signal) = signal else { return Ok(()) };
                let Ok(args) = signal.args() else { continue };
                if args.new_owner().is_none() && args.name().starts_with(':') {
                    callers.forget(args.name());
                }
            }
        }
    });
}

/// Emits `ReplicaSynced` and `ReplicaFailed`.
fn spawn_replica_signals(supervisor: &mut Supervisor, stream: Arc<StreamHandle>, iface: InterfaceRef<PortAgent>) {
    supervisor.spawn("signals", "replica-signals", Restart::Always, move |mut stopping| {
        let mut notices = stream.notices.subscribe();
        let iface = iface.clone();
        async move {
            loop {
                let notice = tokio::select! {
                    n = notices.recv() => n,
                    _ = stopping.wait() => return Ok(()),
                };
                let notice = match notice {
                    Ok(n) => n,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return Ok(()),
                };
                let emitter = iface.signal_emitter();
                let _ = match notice {
                    ReplicaNotice::Synced { replica, seq } => PortAgent::replica_synced(emitter, &replica, seq).await,
                    ReplicaNotice::Failed { replica, error } => PortAgent::replica_failed(emitter, &replica, &error).await,
                };
            }
        }
    });
}
