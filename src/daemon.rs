//! `ovs-port-agent daemon`: opens the engine (or, as a replica, the newest received
//! snapshot), serves `dev.ovs.PortAgent1`, forwards signals, and shuts down cleanly on
//! SIGTERM/SIGINT. The name is owned only once
//! everything is ready, so systemd's Type=dbus readiness means "ready".

use crate::config::{Config, Role};
use crate::dbus::backend::Backend;
use crate::dbus::{self, BUS_NAME, OBJECT_PATH, PortAgent};
use crate::engine::Engine;
use crate::layout::Layout;
use crate::replica::ReplicaView;
use crate::sources::Recorder;
use crate::stream::streamer::{ReplicaNotice, StreamHandle};
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use zbus::fdo::{RequestNameFlags, RequestNameReply};

pub async fn run(config: Config, layout: Layout, bus: String) -> Result<()> {
    match config.agent.role {
        Role::Primary => run_primary(config, layout, bus).await,
        Role::Replica => run_replica(config, bus).await,
    }
}

async fn run_primary(config: Config, layout: Layout, bus: String) -> Result<()> {
    let started = std::time::Instant::now();
    let engine = {
        let (config, layout) = (config.clone(), layout.clone());
        Arc::new(tokio::task::spawn_blocking(move || Engine::open(&layout, &config)).await??)
    };
    let (stream, mut tasks) = start_streaming(&config, &layout, engine.clone())?;
    let conn = dbus::connect(&bus).await?;
    conn.object_server().at(OBJECT_PATH, PortAgent::new(Backend::Primary(engine.clone()), stream.clone())).await?;
    let iface = conn.object_server().interface::<_, PortAgent>(OBJECT_PATH).await?;
    tasks.extend(spawn_signal_forwarders(engine.clone(), iface.clone()));
    if let Some(stream) = &stream {
        tasks.push(spawn_replica_signals(stream.clone(), iface));
    }
    tasks.extend(spawn_sources(&config, &bus, engine.clone()));
    own_name(&conn).await?;
    tracing::info!(
        name = BUS_NAME,
        bus = %bus,
        data_dir = %layout.root.display(),
        head_seq = engine.writer().head().borrow().0,
        ready_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
    wait_for_signal().await?;
    // Stop taking calls first, then flush and checkpoint.
    stop_serving(&conn, tasks).await;
    let shutdown = tokio::task::spawn_blocking(move || engine.shutdown());
    if tokio::time::timeout(Duration::from_secs(20), shutdown).await.is_err() {
        tracing::error!("shutdown took longer than 20 s; exiting anyway");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The replica role: read-only members from the newest verified snapshot, switching when a
/// newer one arrives (the receiver's state file is checked every 5 ms; a stat when nothing changed).
async fn run_replica(config: Config, bus: String) -> Result<()> {
    let dir = config.replica.dir.clone();
    let view = {
        let (config, dir) = (config.clone(), dir.clone());
        Arc::new(tokio::task::spawn_blocking(move || ReplicaView::open(&dir, &config)).await??)
    };
    let conn = dbus::connect(&bus).await?;
    conn.object_server().at(OBJECT_PATH, PortAgent::new(Backend::Replica(view.clone()), None)).await?;
    let iface = conn.object_server().interface::<_, PortAgent>(OBJECT_PATH).await?;
    let watcher = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let v = view.clone();
            match tokio::task::spawn_blocking(move || v.refresh()).await {
                Ok(Ok(true)) => {
                    let agent = iface.get().await;
                    let emitter = iface.signal_emitter();
                    let _ = agent.head_seq_changed(emitter).await;
                    let _ = agent.head_hash_changed(emitter).await;
                    let _ = agent.vectorized_seq_changed(emitter).await;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not open the newest snapshot; still serving the previous one")
                }
                Err(_) => {}
            }
        }
    });
    own_name(&conn).await?;
    tracing::info!(name = BUS_NAME, bus = %bus, dir = %dir.display(), "ready (replica)");
    wait_for_signal().await?;
    stop_serving(&conn, vec![watcher]).await;
    tracing::info!("stopped");
    Ok(())
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

async fn wait_for_signal() -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down");
    Ok(())
}

async fn stop_serving(conn: &zbus::Connection, tasks: Vec<tokio::task::JoinHandle<()>>) {
    let _ = conn.release_name(BUS_NAME).await;
    let _ = conn.object_server().remove::<PortAgent, _>(OBJECT_PATH).await;
    for task in tasks {
        task.abort();
    }
}

/// Emits `EventRecorded` per record and `BatchVectorized` as vectors land, with the
/// matching `PropertiesChanged` (coalesced per burst).
fn spawn_signal_forwarders(engine: Arc<Engine>, iface: zbus::object_server::InterfaceRef<PortAgent>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut records = engine.subscribe();
    let recorded_iface = iface.clone();
    let recorded = tokio::spawn(async move {
        loop {
            let first = match records.recv().await {
                Ok(r) => Some(r),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "EventRecorded signals skipped (a burst outran the bus)");
                    None
                }
                Err(_) => return,
            };
            let emitter = recorded_iface.signal_emitter();
            let mut batch: Vec<_> = first.into_iter().collect();
            while let Ok(r) = records.try_recv() {
                batch.push(r);
            }
            for r in &batch {
                let _ = PortAgent::event_recorded(emitter, r.seq, &r.element_id, &r.action, &r.hash_hex()).await;
            }
            let agent = recorded_iface.get().await;
            let _ = agent.head_seq_changed(emitter).await;
            let _ = agent.head_hash_changed(emitter).await;
        }
    });
    let mut vectorized = engine.vectorized();
    let vectorized_task = tokio::spawn(async move {
        while vectorized.changed().await.is_ok() {
            let through = *vectorized.borrow_and_update();
            let emitter = iface.signal_emitter();
            let _ = PortAgent::batch_vectorized(emitter, through).await;
            let _ = iface.get().await.vectorized_seq_changed(emitter).await;
        }
    });
    vec![recorded, vectorized_task]
}

/// Starts the configured sources and the recorder that feeds their events to the ledger.
fn spawn_sources(config: &Config, bus: &str, engine: Arc<Engine>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut recorder = Recorder::new(&config.sources);
    let mut tasks = Vec::new();
    if config.sources.ovsdb {
        let sink = recorder.sink("ovsdb");
        tasks.push(tokio::spawn(crate::sources::ovsdb::run(config.sources.ovsdb_socket(), sink, engine.clone())));
    }
    if config.sources.networkmanager {
        let sink = recorder.sink("nm");
        let nm_bus = if config.sources.nm_bus.is_empty() { bus.to_owned() } else { config.sources.nm_bus.clone() };
        let coalesce = Duration::from_millis(config.sources.coalesce_ms);
        tasks.push(tokio::spawn(crate::sources::nm::run(nm_bus, coalesce, sink, engine.clone())));
    }
    tasks.push(tokio::spawn(recorder.run(engine)));
    tasks
}

/// Starts snapshots and replication when the data directory is on Btrfs.
fn start_streaming(
    config: &Config,
    layout: &Layout,
    engine: Arc<Engine>,
) -> Result<(Option<Arc<StreamHandle>>, Vec<tokio::task::JoinHandle<()>>)> {
    if !config.stream.enabled {
        return Ok((None, Vec::new()));
    }
    if !crate::btrfs::is_btrfs(&layout.data)? {
        tracing::warn!(data = %layout.data.display(), "snapshots and replication are off: the data directory is not on Btrfs");
        return Ok((None, Vec::new()));
    }
    let (handle, tasks) = crate::stream::streamer::start(engine, config);
    Ok((Some(handle), tasks))
}

/// Emits `ReplicaSynced` and `ReplicaFailed`.
fn spawn_replica_signals(stream: Arc<StreamHandle>, iface: zbus::object_server::InterfaceRef<PortAgent>) -> tokio::task::JoinHandle<()> {
    let mut notices = stream.notices.subscribe();
    tokio::spawn(async move {
        loop {
            let notice = match notices.recv().await {
                Ok(n) => n,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let emitter = iface.signal_emitter();
            let _ = match notice {
                ReplicaNotice::Synced { replica, seq } => PortAgent::replica_synced(emitter, &replica, seq).await,
                ReplicaNotice::Failed { replica, error } => PortAgent::replica_failed(emitter, &replica, &error).await,
            };
        }
    })
}
