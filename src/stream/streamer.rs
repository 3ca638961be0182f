//! Taking snapshots when they are due (see `trigger`) and keeping each replica in step.
//!
//! Each replica has a worker with one long-lived session that sends the newest snapshot
//! incrementally from the one the replica last acknowledged, backs off with jitter when the
//! replica is unreachable, and falls back to a full send (recorded as an event) when the
//! replica lost the common parent. A stage that stops moving — snapshots failing, a replica
//! unreachable — is reported in the daemon's health and recorded as an event, as is its
//! recovery.

use super::session::Session;
use super::snapshot;
use super::trigger::Pending;
use crate::anchor::{self, Signer, Verifier};
use crate::config::{Compression, Config, ReplicaConfig, StreamConfig};
use crate::durable;
use crate::engine::{Engine, stage_event};
use crate::event::{NewEvent, Priority};
use crate::health::{Health, Transition};
use crate::supervisor::{Restart, Stopping, Supervisor};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, watch};

/// The health stage of snapshots; replicas are `replica:<name>`.
pub const SNAPSHOT_STAGE: &str = "snapshots";

/// Durable per-replica state, `<state dir>/replicas/<name>.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicaStatus {
    pub name: String,
    /// `healthy`, `lagging`, `unreachable`, `refused` (it will not take what it is sent) or
    /// `failing` (it cannot, for a reason of its own: a full disk).
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

/// The newest snapshot: its seq, path and when it was taken.
pub type Newest = Option<(u64, PathBuf, Instant)>;

/// The streamer's shared view, for GetReplicaStatus, SyncNow and shutdown.
pub struct StreamHandle {
    statuses: Mutex<HashMap<String, ReplicaStatus>>,
    newest_tx: watch::Sender<Newest>,
    pub sync_now: Notify,
    pub notices: broadcast::Sender<ReplicaNotice>,
    /// The snapshot each replica was last sent (or is being sent): not to be pruned under
    /// the sender, and once acknowledged it is the parent of that replica's next incremental.
    sending: Mutex<HashMap<String, String>>,
    pruning: Mutex<()>,
    root: PathBuf,
    snapshots: PathBuf,
    host: String,
    health: Arc<Health>,
    /// Signs each snapshot's head (`data/witness/<seq>.note`).
    signer: Arc<Signer>,
}

impl StreamHandle {
    /// Every replica's status with its current lag.
    pub fn report(&self) -> Vec<ReplicaStatus> {
        let newest = self.newest_tx.borrow().clone();
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

    fn newest_seq(&self) -> u64 {
        self.newest_tx.borrow().as_ref().map(|(s, _, _)| *s).unwrap_or(0)
    }

    fn status(&self, name: &str) -> ReplicaStatus {
        self.statuses.lock().expect("status lock").get(name).cloned().unwrap_or_default()
    }

    fn store(&self, status: &ReplicaStatus) {
        if let Err(e) = durable::replace(&status_path(&self.root, &status.name), &serde_json::to_vec_pretty(status).unwrap_or_default()) {
            tracing::error!(replica = %status.name, error = %format!("{e:#}"), "could not save the replica state");
        }
        self.statuses.lock().expect("status lock").insert(status.name.clone(), status.clone());
    }

    /// Takes a snapshot if anything was vectorized since the newest one and publishes it;
    /// returns its vectorized seq and its head.
    async fn snapshot(&self, engine: &Engine) -> Result<Option<(u64, u64)>> {
        let last = self.newest_seq();
        let taken = snapshot::take(engine, &self.snapshots, last, self.host.clone(), self.signer.clone()).await?;
        let Some((manifest, path)) = taken else { return Ok(None) };
        tracing::info!(snapshot = %path.display(), seq = manifest.seq, head = manifest.head_seq, "snapshot taken");
        self.newest_tx.send_replace(Some((manifest.seq, path, Instant::now())));
        self.prune();
        Ok(Some((manifest.seq, manifest.head_seq)))
    }

    /// Keeps the newest snapshot and every replica's acknowledged or in-flight one (the
    /// parents of their next incrementals); deletes the rest.
    fn prune(&self) {
        // The trigger and every replica worker prune; one at a time, or two would delete
        // the same snapshot and the second would fail. One already at it will do; the next
        // prune catches up.
        let Ok(_pruning) = self.pruning.try_lock() else { return };
        let mut keep: Vec<String> = self.statuses.lock().expect("status lock").values().filter_map(|s| s.acked_snapshot.clone()).collect();
        keep.extend(self.sending.lock().expect("sending lock").values().cloned());
        let all = snapshot::list(&self.snapshots);
        let Some((newest, _)) = all.last().cloned() else { return };
        for (seq, path) in all {
            let name = snapshot::snapshot_name(seq);
            if seq != newest
                && !keep.contains(&name)
                && let Err(e) = snapshot::delete(&path)
            {
                tracing::warn!(snapshot = %path.display(), error = %format!("{e:#}"), "could not delete an old snapshot");
            }
        }
    }

    /// At shutdown, after the last events were recorded: one more snapshot, and up to
    /// `deadline` for the healthy replicas to acknowledge it.
    pub async fn finish(&self, engine: &Engine, deadline: Duration) {
        let seq = match self.snapshot(engine).await {
            Ok(Some((seq, _))) => seq,
            Ok(None) => self.newest_seq(),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no final snapshot");
                return;
            }
        };
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let behind = self.report().iter().filter(|s| s.state == "healthy" && s.acked_seq < seq).count();
                if behind == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        if waited.await.is_err() {
            tracing::warn!(seq, "replicas did not acknowledge the final snapshot in time");
        }
    }
}

fn status_path(root: &Path, name: &str) -> PathBuf {
    root.join("replicas").join(format!("{name}.json"))
}

fn load_status(root: &Path, name: &str) -> ReplicaStatus {
    let mut s: ReplicaStatus =
        durable::read_limited(&status_path(root, name), 1 << 20).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    s.name = name.to_owned();
    if s.state.is_empty() {
        s.state = "lagging".into();
    }
    s
}

/// The streaming of a running primary, as the daemon keeps it: the shared handle, and what
/// a reload needs to add, remove or restart replica workers and change the trigger policy.
pub struct Streaming {
    pub handle: Arc<StreamHandle>,
    engine: Arc<Engine>,
    binary: PathBuf,
    policy: watch::Sender<StreamConfig>,
}

/// How long a removed replica's worker gets to end its session.
const REPLICA_STOP_DEADLINE: Duration = Duration::from_secs(10);

fn worker_task(name: &str) -> String {
    format!("replica:{name}")
}

impl Streaming {
    /// Starts a worker for a replica (at start, or added by a reload); its state is read
    /// from `replicas/<name>.json`, so a replica removed and added again resumes.
    pub fn add_replica(&self, supervisor: &mut Supervisor, replica: ReplicaConfig) {
        let status = load_status(&self.handle.root, &replica.name);
        self.handle.statuses.lock().expect("status lock").insert(replica.name.clone(), status);
        self.spawn_worker(supervisor, replica);
    }

    fn spawn_worker(&self, supervisor: &mut Supervisor, replica: ReplicaConfig) {
        let (engine, handle, binary) = (self.engine.clone(), self.handle.clone(), self.binary.clone());
        supervisor.spawn("stream", worker_task(&replica.name), Restart::Always, move |stopping| {
            replica_worker(replica.clone(), engine.clone(), handle.clone(), binary.clone(), stopping)
        });
    }

    /// Stops a replica's worker (ending its session) and forgets it: it no longer holds a
    /// snapshot back from pruning, and its health stage goes. Its state file stays, for a
    /// later return.
    pub async fn remove_replica(&self, supervisor: &mut Supervisor, name: &str) {
        supervisor.stop_task(&worker_task(name), REPLICA_STOP_DEADLINE).await;
        self.handle.statuses.lock().expect("status lock").remove(name);
        self.handle.sending.lock().expect("sending lock").remove(name);
        self.handle.health.forget(&format!("replica:{name}"));
    }

    /// Starts a replica's worker again with changed settings. Its status and the snapshot it
    /// holds back stay in place meanwhile, so pruning cannot take the parent of its next
    /// incremental.
    pub async fn restart_replica(&self, supervisor: &mut Supervisor, replica: ReplicaConfig) {
        supervisor.stop_task(&worker_task(&replica.name), REPLICA_STOP_DEADLINE).await;
        self.spawn_worker(supervisor, replica);
    }

    /// A new trigger policy (delays, batch size), taken by the running trigger.
    pub fn set_policy(&self, config: StreamConfig) {
        self.policy.send_replace(config);
    }
}

/// Starts the trigger and one worker per replica as tasks of the supervisor's `stream`
/// group.
pub fn start(supervisor: &mut Supervisor, engine: Arc<Engine>, config: &Config, health: Arc<Health>) -> Result<Streaming> {
    let root = engine.layout().root.clone();
    std::fs::create_dir_all(root.join("replicas")).with_context(|| format!("creating {}", root.join("replicas").display()))?;
    let snapshots = engine.layout().snapshots_dir();
    let newest = snapshot::list(&snapshots).pop().map(|(s, p)| (s, p, Instant::now()));
    let (notices, _) = broadcast::channel(256);
    let signer = anchor::keys::load_or_create(&checkpoint_key_path(&root), &anchor::checkpoint::origin(&config.host()))?;
    let handle = Arc::new(StreamHandle {
        statuses: Mutex::default(),
        newest_tx: watch::channel(newest).0,
        sync_now: Notify::new(),
        notices,
        sending: Mutex::default(),
        pruning: Mutex::default(),
        root,
        snapshots,
        host: config.host(),
        health,
        signer: Arc::new(signer),
    });
    let binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ovs-port-agent"));
    let (policy, policy_rx) = watch::channel(config.stream.clone());
    let streaming = Streaming { handle: handle.clone(), engine: engine.clone(), binary, policy };
    for replica in config.stream.replicas.clone() {
        streaming.add_replica(supervisor, replica);
    }
    supervisor.spawn("stream", "snapshot-trigger", Restart::Always, move |stopping| {
        trigger_loop(engine.clone(), policy_rx.clone(), handle.clone(), stopping)
    });
    Ok(streaming)
}

/// Watches recorded events and vectorization and takes snapshots when they are due.
async fn trigger_loop(
    engine: Arc<Engine>,
    mut policy: watch::Receiver<StreamConfig>,
    handle: Arc<StreamHandle>,
    mut stopping: Stopping,
) -> Result<()> {
    let mut records = engine.subscribe();
    let mut vectorized = engine.vectorized();
    let mut pending = Pending::new(&policy.borrow_and_update());
    // Recorded before this start but in no snapshot (the daemon stopped or crashed first):
    // no notice will come for them, so they are pending from the start.
    let head = engine.writer().head().borrow().0;
    pending.note_uncovered(handle.newest_seq() + 1, head, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut failures = 0u32;
    loop {
        let mut forced = false;
        tokio::select! {
            r = records.recv() => match r {
                // Only noted here: a record becomes due with its delay (and, below critical
                // and high, its vector), which the tick or vectorization notices.
                Ok(r) => { pending.note(r.seq, r.priority, Instant::now()); continue; }
                Err(broadcast::error::RecvError::Lagged(_)) => { pending.note_missed(Instant::now()); continue; }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = vectorized.changed() => {}
            _ = handle.sync_now.notified() => forced = true,
            changed = policy.changed() => {
                if changed.is_ok() {
                    pending.set_policy(&policy.borrow_and_update());
                }
            }
            _ = tick.tick() => {}
            _ = stopping.wait() => return Ok(()),
        }
        let through = *vectorized.borrow();
        let last = handle.newest_seq();
        if !forced && !pending.due(through, last, Instant::now()) {
            continue;
        }
        if failures > 0 && !forced {
            // A failing snapshot is retried with backoff, not on every tick.
            tokio::time::sleep(crate::backoff::backoff(failures.min(5))).await;
        }
        tracing::debug!(through, last, "snapshot due");
        match handle.snapshot(&engine).await {
            Ok(covered) => {
                failures = 0;
                if let Some((seq, head)) = covered {
                    pending.covered(seq, head, Instant::now());
                }
                report(&engine, &handle.health, SNAPSHOT_STAGE, None).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                report(&engine, &handle.health, SNAPSHOT_STAGE, Some(format!("{e:#}"))).await;
            }
        }
    }
}

/// Keeps one replica in step with the newest snapshot.
async fn replica_worker(
    replica: ReplicaConfig,
    engine: Arc<Engine>,
    handle: Arc<StreamHandle>,
    binary: PathBuf,
    mut stopping: Stopping,
) -> Result<()> {
    let stage = format!("replica:{}", replica.name);
    let mut newest = handle.newest_tx.subscribe();
    let mut session: Option<Session> = None;
    let mut failures = 0u32;
    let compression = replica.compression().unwrap_or(Compression::Off);
    // For `auto`: the throughput of the last send, in bytes/s.
    let mut last_rate: Option<f64> = None;
    loop {
        let target = newest.borrow_and_update().clone();
        let status = handle.status(&replica.name);
        let Some((seq, path, _)) = target.filter(|(seq, _, _)| *seq > status.acked_seq || status.acked_snapshot.is_none()) else {
            tokio::select! {
                changed = newest.changed() => if changed.is_err() { return Ok(()) },
                _ = stopping.wait() => return Ok(()),
            }
            continue;
        };
        let parent = status.acked_snapshot.as_ref().map(|n| handle.snapshots.join(n)).filter(|p| p.exists());
        let level = match compression {
            Compression::Off => None,
            Compression::Zstd(n) => Some(n),
            Compression::Auto => (last_rate.unwrap_or(0.0) < 100e6).then_some(3),
        };
        let started = Instant::now();
        handle.sending.lock().expect("sending lock").insert(replica.name.clone(), snapshot::snapshot_name(seq));
        let result = tokio::select! {
            r = sync_once(&replica, &handle.host, &binary, &mut session, &path, parent.as_deref(), level) => r,
            _ = stopping.wait() => return Ok(()),
        };
        let mut status = status;
        let (mut refused, mut failing) = (false, false);
        match result {
            Ok((ack, bytes)) if ack.ok => {
                failures = 0;
                if bytes > 1 << 20 {
                    last_rate = Some(bytes as f64 / started.elapsed().as_secs_f64().max(1e-6));
                }
                status.state = "healthy".into();
                status.acked_snapshot = Some(ack.name.clone());
                status.acked_seq = seq;
                status.received_uuid = ack.received_uuid.clone();
                status.bytes_sent += bytes;
                status.last_error = None;
                status.last_ok_unix_ns = crate::event::now_ns();
                if let Err(e) = keep_cosignature(&engine, &handle.root, &replica.name, &ack).await {
                    tracing::warn!(replica = %replica.name, error = %format!("{e:#}"), "a cosignature was not kept");
                }
                tracing::info!(replica = %replica.name, seq, bytes, incremental = parent.is_some(), "replica synced");
                let _ = handle.notices.send(ReplicaNotice::Synced { replica: replica.name.clone(), seq });
                handle.store(&status);
                handle.prune();
                report(&engine, &handle.health, &stage, None).await;
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
                handle.store(&status);
                continue;
            }
            Ok((ack, _)) if ack.fault => {
                // The replica's own trouble (its disk is full): retried, not a refusal.
                failing = true;
                status.last_error = ack.error.clone();
                if let Some(s) = session.take() {
                    s.close().await;
                }
            }
            Ok((ack, _)) => {
                // Said in the ledger once, when the replica starts refusing.
                if status.state != REFUSED {
                    record_refusal(&engine, &replica.name, &ack).await;
                }
                refused = true;
                status.last_error = ack.error.clone();
                if let Some(s) = session.take() {
                    s.close().await;
                }
            }
            Err(e) => {
                status.last_error = Some(format!("{e:#}"));
                if let Some(s) = session.take() {
                    s.close().await;
                }
            }
        }
        failures = failures.saturating_add(1);
        status.state = if refused {
            REFUSED
        } else if failing {
            FAILING
        } else {
            "unreachable"
        }
        .into();
        let error = status.last_error.clone().unwrap_or_default();
        tracing::warn!(replica = %replica.name, error = %error, "replica sync failed; backing off");
        let _ = handle.notices.send(ReplicaNotice::Failed { replica: replica.name.clone(), error: error.clone() });
        handle.store(&status);
        report(&engine, &handle.health, &stage, Some(error)).await;
        tokio::select! {
            _ = tokio::time::sleep(crate::backoff::backoff(failures)) => {}
            _ = handle.sync_now.notified() => {}
            _ = stopping.wait() => return Ok(()),
        }
    }
}

/// A replica's state while it refuses what it is sent (a history it cannot verify as
/// extending its own, among others).
const REFUSED: &str = "refused";
/// A replica's state while it answers but cannot take what it is sent for a reason of its
/// own (a full disk): its `last_error` says which.
const FAILING: &str = "failing";

/// Where the primary's checkpoint signing key lives (outside the data subvolume: it must
/// never stream).
pub fn checkpoint_key_path(root: &Path) -> PathBuf {
    root.join("keys").join("checkpoint.key")
}

/// Where a replica's witness key is pinned on the primary (on first cosignature).
pub fn witness_key_path(root: &Path, replica: &str) -> PathBuf {
    anchor::keys::witnesses_dir(root).join(format!("{replica}.vkey"))
}

/// Keeps a replica's cosignature of the head it acknowledged in `data/witness/<seq>.note`,
/// after checking it with the replica's witness key, pinned on first sight. A replica
/// presenting another key is not believed (and said so in the ledger) until an operator
/// removes the pinned key (re-enrolment, docs/anchoring.md).
async fn keep_cosignature(engine: &Engine, root: &Path, replica: &str, ack: &super::frame::Ack) -> Result<()> {
    let (Some(line), Some(offered)) = (&ack.cosignature, &ack.witness_key) else { return Ok(()) };
    let offered = Verifier::parse(offered)?;
    if offered.kind != anchor::COSIGNATURE_ED25519 {
        anyhow::bail!("replica {replica} offered a key that is not a cosignature key");
    }
    let data = engine.layout().data.clone();
    let (checkpoint, note) = anchor::checkpoint::read_note(&anchor::checkpoint::note_path(&data, ack.head_seq))?;
    if checkpoint.seq != ack.head_seq || hex::encode(checkpoint.head) != ack.head_hash {
        anyhow::bail!("replica {replica} acknowledged a head other than the checkpoint's");
    }
    offered.check_line(&note.text, line).with_context(|| format!("replica {replica}'s cosignature"))?;
    let pinned_path = witness_key_path(root, replica);
    let offered_path = pinned_path.with_extension("offered");
    match std::fs::read_to_string(&pinned_path) {
        Ok(pinned) if pinned.trim() == offered.text() => {}
        Ok(pinned) => {
            // Said in the ledger once until re-enrolment, whatever keys are offered meanwhile:
            // each event makes a snapshot, so an event per acknowledgement would feed itself.
            if !offered_path.exists() {
                durable::replace(&offered_path, format!("{}\n", offered.text()).as_bytes())?;
                let event = NewEvent::new(
                    "agent",
                    &format!("replica:{replica}"),
                    "replica.witness_key_changed",
                    Priority::High,
                    json!({"replica": replica, "pinned": pinned.trim(), "offered": offered.text()}),
                )
                .with_summary(format!(
                    "replica {replica} cosigned with a key other than the one pinned; its cosignatures are not kept until it is re-enrolled"
                ));
                engine.record(vec![event]).await?;
            }
            anyhow::bail!("replica {replica} cosigned with another key than the pinned {}", pinned_path.display());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(pinned_path.parent().expect("a key path has a directory"))?;
            durable::replace(&pinned_path, format!("{}\n", offered.text()).as_bytes())?;
            let _ = std::fs::remove_file(&offered_path);
            tracing::info!(replica, vkey = %offered.text(), "pinned the replica's witness key");
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", pinned_path.display())),
    }
    anchor::checkpoint::add_cosignature(&data, ack.head_seq, line)
}

/// Records a replica's refusal of a snapshot (a history it could not verify as extending
/// what it holds, a split view among them) in the ledger, once per distinct reason.
async fn record_refusal(engine: &Engine, replica: &str, ack: &super::frame::Ack) {
    let Some(reason) = &ack.error else { return };
    let event = NewEvent::new(
        "agent",
        &format!("replica:{replica}"),
        "replica.refused",
        Priority::High,
        json!({"replica": replica, "snapshot": ack.name, "reason": reason}),
    )
    .with_summary(format!("replica {replica} refused {}: {reason}", ack.name));
    if let Err(e) = engine.record(vec![event]).await {
        tracing::error!(error = %e, "could not record the refusal");
    }
}

async fn sync_once(
    replica: &ReplicaConfig,
    host: &str,
    binary: &Path,
    session: &mut Option<Session>,
    path: &Path,
    parent: Option<&Path>,
    zstd_level: Option<u8>,
) -> Result<(super::frame::Ack, u64)> {
    if session.is_none() {
        *session = Some(Session::open(replica, host, binary)?);
    }
    let s = session.as_mut().expect("opened above");
    let what = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    s.send(path, parent, zstd_level, Duration::from_secs(300)).await.with_context(|| format!("sending {what} to replica {}", replica.name))
}

/// Updates a stage's health and records a change in the ledger.
async fn report(engine: &Engine, health: &Health, stage: &str, error: Option<String>) {
    let transition = match &error {
        Some(reason) => health.stalled(stage, reason.clone()),
        None => health.ok(stage),
    };
    let (kind, _) = stage.split_once(':').unwrap_or((stage, ""));
    let event = match transition {
        Transition::None => return,
        Transition::Stalled => stage_event(
            kind,
            "stalled",
            Priority::High,
            json!({"stage": stage, "reason": error}),
            format!("{stage} stalled: {}", error.clone().unwrap_or_default()),
        ),
        Transition::Resumed { since_unix_ns, reason } => {
            let secs = (crate::event::now_ns() - since_unix_ns) as f64 / 1e9;
            stage_event(
                kind,
                "resumed",
                Priority::Medium,
                json!({"stage": stage, "reason": reason, "stalled_since_unix_ns": since_unix_ns, "stalled_s": secs}),
                format!("{stage} moving again after {secs:.1} s ({reason})"),
            )
        }
    };
    if let Err(e) = engine.record(vec![event]).await {
        tracing::warn!(stage, error = %e, "could not record the stage's change in the ledger");
    }
}
