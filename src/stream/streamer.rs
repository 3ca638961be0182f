//! Deciding when to snapshot (by events, not timers) and keeping each replica in step.
//!
//! The trigger follows priorities: a critical event is snapshotted as soon as it is
//! vectorized, high within 1 s, medium and low batched by delay or count; nothing new,
//! nothing sent. Each replica has a worker with one long-lived session that sends the
//! newest snapshot incrementally from the one the replica last acknowledged, backs off with
//! jitter when the replica is unreachable, and falls back to a full send (recorded as an
//! event) when the replica lost the common parent.

use super::session::Session;
use super::snapshot;
use crate::config::{Compression, Config, ReplicaConfig};
use crate::engine::Engine;
use crate::event::{NewEvent, Priority};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, watch};

/// Durable per-replica state, `<state dir>/replicas/<name>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicaStatus {
    pub name: String,
    /// `healthy`, `lagging` or `unreachable`.
    pub state: String,
    pub acked_snapshot: Option<String>,
    pub acked_seq: u64,
    pub received_uuid: Option<String>,
    pub bytes_sent: u64,
    pub last_error: Option<String>,
    pub last_ok_unix_ns: i64,
    pub full_sends: u64,
    /// Filled in when reported: events and seconds behind the newest snapshot.
    #[serde(default)]
    pub lag_events: u64,
    #[serde(default)]
    pub lag_seconds: f64,
}

/// What the D-Bus layer turns into `ReplicaSynced` / `ReplicaFailed`.
#[derive(Debug, Clone)]
pub enum ReplicaNotice {
    Synced { replica: String, seq: u64 },
    Failed { replica: String, error: String },
}

/// The streamer's shared view, for GetReplicaStatus and SyncNow.
pub struct StreamHandle {
    pub statuses: Mutex<HashMap<String, ReplicaStatus>>,
    pub newest: watch::Receiver<Option<(u64, PathBuf, Instant)>>,
    pub sync_now: Notify,
    pub notices: broadcast::Sender<ReplicaNotice>,
    /// The snapshot each replica was last sent (or is being sent): not to be pruned under
    /// the sender, and once acknowledged it is the parent of that replica's next incremental.
    sending: Mutex<HashMap<String, String>>,
}

impl StreamHandle {
    /// Every replica's status with its current lag.
    pub fn report(&self) -> Vec<ReplicaStatus> {
        let newest = self.newest.borrow().clone();
        let mut out: Vec<ReplicaStatus> = self.statuses.lock().expect("status lock").values().cloned().collect();
        for s in &mut out {
            if let Some((seq, _, taken)) = &newest {
                s.lag_events = seq.saturating_sub(s.acked_seq);
                s.lag_seconds = if s.lag_events > 0 { taken.elapsed().as_secs_f64() } else { 0.0 };
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn status_path(root: &Path, name: &str) -> PathBuf {
    root.join("replicas").join(format!("{name}.json"))
}

fn load_status(root: &Path, name: &str) -> ReplicaStatus {
    let mut s: ReplicaStatus =
        std::fs::read(status_path(root, name)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    s.name = name.to_owned();
    if s.state.is_empty() {
        s.state = "lagging".into();
    }
    s
}

fn save_status(root: &Path, status: &ReplicaStatus) -> Result<()> {
    let path = status_path(root, &status.name);
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(status)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Starts the streamer and one worker per replica; returns the shared handle.
pub fn start(engine: Arc<Engine>, config: &Config) -> (Arc<StreamHandle>, Vec<tokio::task::JoinHandle<()>>) {
    let root = engine.layout.root.clone();
    let (newest_tx, newest) = watch::channel(latest_snapshot(&engine.layout.snapshots_dir()));
    let statuses = config.stream.replicas.iter().map(|r| (r.name.clone(), load_status(&root, &r.name))).collect();
    let (notices, _) = broadcast::channel(256);
    let handle =
        Arc::new(StreamHandle { statuses: Mutex::new(statuses), newest, sync_now: Notify::new(), notices, sending: Mutex::default() });
    let binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ovs-port-agent"));
    let mut tasks = Vec::new();
    for replica in config.stream.replicas.clone() {
        tasks.push(tokio::spawn(replica_worker(replica, engine.clone(), handle.clone(), binary.clone())));
    }
    tasks.push(tokio::spawn(trigger_loop(engine, config.clone(), handle.clone(), newest_tx)));
    (handle, tasks)
}

fn latest_snapshot(dir: &Path) -> Option<(u64, PathBuf, Instant)> {
    snapshot::list(dir).pop().map(|(s, p)| (s, p, Instant::now()))
}

/// Watches recorded events and vectorization and takes snapshots when they are due.
async fn trigger_loop(
    engine: Arc<Engine>,
    config: Config,
    handle: Arc<StreamHandle>,
    newest_tx: watch::Sender<Option<(u64, PathBuf, Instant)>>,
) {
    let s = &config.stream;
    let delay = |p: Priority| {
        Duration::from_millis(match p {
            Priority::Critical => s.critical_delay_ms,
            Priority::High => s.high_delay_ms,
            Priority::Medium => s.medium_delay_ms,
            Priority::Low => s.low_delay_ms,
        })
    };
    let mut records = engine.subscribe();
    let mut vectorized = engine.vectorized();
    let mut last = newest_tx.borrow().as_ref().map(|(s, _, _)| *s).unwrap_or(0);
    // seq → when its snapshot is due.
    let mut pending: BTreeMap<u64, Instant> = BTreeMap::new();
    let host = config.host();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        let mut forced = false;
        tokio::select! {
            r = records.recv() => match r {
                // Only noted here: a record becomes due once vectorized, which wakes this
                // loop by itself (and scanning the pending set per record would cost
                // O(n²) in a burst).
                Ok(r) => { pending.insert(r.seq, Instant::now() + delay(r.priority)); continue; }
                Err(broadcast::error::RecvError::Lagged(_)) => { pending.insert(u64::MAX, Instant::now() + delay(Priority::Medium)); continue; }
                Err(_) => return,
            },
            _ = vectorized.changed() => {}
            _ = handle.sync_now.notified() => forced = true,
            _ = tick.tick() => {}
        }
        let through = *vectorized.borrow();
        let now = Instant::now();
        let ready = || pending.range(..=through);
        let due = forced
            || ready().any(|(_, at)| *at <= now)
            || ready().nth(s.batch_events.saturating_sub(1) as usize).is_some()
            || pending.get(&u64::MAX).is_some_and(|at| *at <= now);
        if !due || (through <= last && !forced) {
            continue;
        }
        match engine.snapshot(last, host.clone()).await {
            Ok(Some((manifest, path))) => {
                last = manifest.seq;
                pending = pending.split_off(&(last + 1));
                pending.remove(&u64::MAX);
                tracing::info!(snapshot = %path.display(), seq = manifest.seq, head = manifest.head_seq, "snapshot taken");
                newest_tx.send_replace(Some((manifest.seq, path, Instant::now())));
                prune_local(&engine.layout.snapshots_dir(), &handle);
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %format!("{e:#}"), "snapshot failed"),
        }
    }
}

/// Keeps the newest snapshot and every replica's acknowledged one (the parents of their
/// next incrementals); deletes the rest.
fn prune_local(dir: &Path, handle: &StreamHandle) {
    let mut keep: Vec<String> = handle.statuses.lock().expect("status lock").values().filter_map(|s| s.acked_snapshot.clone()).collect();
    keep.extend(handle.sending.lock().expect("sending lock").values().cloned());
    let all = snapshot::list(dir);
    let Some((newest, _)) = all.last().cloned() else { return };
    for (seq, path) in all {
        let name = snapshot::snapshot_name(seq);
        if seq != newest && !keep.contains(&name) {
            if let Err(e) = snapshot::delete(&path) {
                tracing::warn!(snapshot = %path.display(), error = %format!("{e:#}"), "could not delete an old snapshot");
            }
        }
    }
}

/// Keeps one replica in step with the newest snapshot.
async fn replica_worker(replica: ReplicaConfig, engine: Arc<Engine>, handle: Arc<StreamHandle>, binary: PathBuf) {
    let root = engine.layout.root.clone();
    let snapshots = engine.layout.snapshots_dir();
    let mut newest = handle.newest.clone();
    let mut session: Option<Session> = None;
    let mut failures = 0u32;
    let compression = replica.compression().unwrap_or(Compression::Off);
    // For `auto`: the throughput of the last send, in bytes/s.
    let mut last_rate: Option<f64> = None;
    loop {
        let target = newest.borrow_and_update().clone();
        let status = handle.statuses.lock().expect("status lock").get(&replica.name).cloned().unwrap_or_default();
        let Some((seq, path, _)) = target.filter(|(seq, _, _)| *seq > status.acked_seq || status.acked_snapshot.is_none()) else {
            if newest.changed().await.is_err() {
                return;
            }
            continue;
        };
        let parent = status.acked_snapshot.as_ref().map(|n| snapshots.join(n)).filter(|p| p.exists());
        let level = match compression {
            Compression::Off => None,
            Compression::Zstd(n) => Some(n),
            Compression::Auto => (last_rate.unwrap_or(0.0) < 100e6).then_some(3),
        };
        let started = Instant::now();
        handle.sending.lock().expect("sending lock").insert(replica.name.clone(), snapshot::snapshot_name(seq));
        let result = sync_once(&replica, &binary, &mut session, &path, parent.as_deref(), level).await;
        let mut status = status;
        match result {
            Ok((ack, bytes)) if ack.ok => {
                failures = 0;
                if bytes > 1 << 20 {
                    last_rate = Some(bytes as f64 / started.elapsed().as_secs_f64().max(1e-6));
                }
                status.state = "healthy".into();
                status.acked_snapshot = Some(ack.name.clone());
                status.acked_seq = seq;
                status.received_uuid = ack.received_uuid;
                status.bytes_sent += bytes;
                status.last_error = None;
                status.last_ok_unix_ns = crate::event::now_ns();
                tracing::info!(replica = %replica.name, seq, bytes, incremental = parent.is_some(), "replica synced");
                let _ = handle.notices.send(ReplicaNotice::Synced { replica: replica.name.clone(), seq });
                store(&root, &handle, &status);
                prune_local(&snapshots, &handle);
                continue;
            }
            Ok((ack, _)) if ack.missing_parent => {
                // The replica lost the common parent (wiped, or the snapshot deleted): forget it
                // and send in full next, and say so in the ledger.
                status.acked_snapshot = None;
                status.full_sends += 1;
                status.state = "lagging".into();
                let event = NewEvent::new(
                    "agent",
                    &format!("replica:{}", replica.name),
                    "replica.full_send",
                    Priority::High,
                    json!({"replica": replica.name, "snapshot": ack.name, "reason": ack.error}),
                )
                .with_summary(format!("replica {} lost the common parent snapshot; sending {} in full", replica.name, ack.name));
                if let Err(e) = engine.record(vec![event]).await {
                    tracing::error!(error = %e, "could not record the full-send event");
                }
                store(&root, &handle, &status);
                continue;
            }
            Ok((ack, _)) => {
                status.last_error = ack.error.clone();
                session = None;
            }
            Err(e) => {
                status.last_error = Some(format!("{e:#}"));
                if let Some(s) = session.take() {
                    s.close().await;
                }
            }
        }
        failures = failures.saturating_add(1);
        status.state = "unreachable".into();
        let error = status.last_error.clone().unwrap_or_default();
        tracing::warn!(replica = %replica.name, error = %error, "replica sync failed; backing off");
        let _ = handle.notices.send(ReplicaNotice::Failed { replica: replica.name.clone(), error });
        store(&root, &handle, &status);
        tokio::select! {
            _ = tokio::time::sleep(crate::sources::backoff(failures)) => {}
            _ = handle.sync_now.notified() => {}
        }
    }
}

async fn sync_once(
    replica: &ReplicaConfig,
    binary: &Path,
    session: &mut Option<Session>,
    path: &Path,
    parent: Option<&Path>,
    zstd_level: Option<u8>,
) -> Result<(super::frame::Ack, u64)> {
    if session.is_none() {
        *session = Some(Session::open(replica, binary)?);
    }
    let s = session.as_mut().expect("opened above");
    let what = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    s.send(path, parent, zstd_level, Duration::from_secs(300)).await.with_context(|| format!("sending {what} to replica {}", replica.name))
}

fn store(root: &Path, handle: &StreamHandle, status: &ReplicaStatus) {
    if let Err(e) = save_status(root, status) {
        tracing::error!(replica = %status.name, error = %format!("{e:#}"), "could not save the replica state");
    }
    handle.statuses.lock().expect("status lock").insert(status.name.clone(), status.clone());
}
