//! One owner for every long-running task of the daemon. Each task belongs to a group (the
//! daemon stops groups in order), says whether it may be restarted, and is started again
//! with backoff when it fails or panics — each end logged with its name and why. A task
//! that may not be restarted ending is fatal: the daemon shuts down (and systemd restarts
//! it). Threads outside the runtime (ledger writer, indexer, embedding workers) are watched
//! by a task that fails when one of them has died.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Whether a task that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Started again (with backoff) after an error, a panic or an unexpected end.
    Always,
    /// Its end stops the daemon.
    Never,
}

/// Tells a task its group is stopping.
#[derive(Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once the group is asked to stop.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// A signal that never fires (for code run outside a supervisor, such as tests).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Self(rx)
    }
}

/// One task's record, for `GetBlockchainStats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TaskStatus {
    pub group: &'static str,
    pub restarts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub running: bool,
}

/// Why the daemon should stop.
#[derive(Debug)]
pub struct Fatal {
    pub task: String,
    pub why: String,
}

pub struct Supervisor {
    groups: BTreeMap<&'static str, JoinSet<()>>,
    /// Each running task's own stop signal and end (a group stops by stopping each).
    tasks: BTreeMap<String, TaskControl>,
    status: Arc<Mutex<BTreeMap<String, TaskStatus>>>,
    fatal_tx: mpsc::UnboundedSender<Fatal>,
    fatal_rx: mpsc::UnboundedReceiver<Fatal>,
}

struct TaskControl {
    group: &'static str,
    stop: watch::Sender<bool>,
    /// Becomes true once the task has ended for good.
    ended: watch::Receiver<bool>,
    abort: tokio::task::AbortHandle,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
        Self { groups: BTreeMap::new(), tasks: BTreeMap::new(), status: Arc::default(), fatal_tx, fatal_rx }
    }

    /// Every task's record, by name.
    pub fn status(&self) -> Arc<Mutex<BTreeMap<String, TaskStatus>>> {
        self.status.clone()
    }

    /// Starts `make(stopping)` as task `name` of `group`; `make` is called again for each
    /// restart.
    pub fn spawn<F, Fut>(&mut self, group: &'static str, name: impl Into<String>, restart: Restart, mut make: F)
    where
        F: FnMut(Stopping) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        debug_assert!(!self.tasks.contains_key(&name), "task {name} is already running");
        let set = self.groups.entry(group).or_default();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ended_tx, ended_rx) = watch::channel(false);
        let stopping = Stopping(stop_rx);
        let status = self.status.clone();
        let fatal = self.fatal_tx.clone();
        status.lock().expect("status lock").insert(name.clone(), TaskStatus { group, restarts: 0, last_error: None, running: true });
        let task_name = name.clone();
        let abort = set.spawn(async move {
            // "Ended" only once this wrapper and the task it runs are both gone: an aborted
            // task may still be inside a poll on another thread when the wrapper drops.
            let ended = Arc::new(SetOnDrop(ended_tx));
            let mut restarts = 0u32;
            loop {
                let started = tokio::time::Instant::now();
                let (run, alive) = (make(stopping.clone()), ended.clone());
                let task = tokio::spawn(async move {
                    let _alive = alive;
                    run.await
                });
                // Aborting this wrapper (a group that did not stop in time) aborts the task.
                let _abort = AbortOnDrop(task.abort_handle());
                let outcome = task.await;
                if started.elapsed() > HEALTHY_RUN {
                    restarts = 0;
                }
                if stopping.is_set() {
                    if let Ok(Err(e)) = &outcome {
                        tracing::debug!(task = %name, error = %format!("{e:#}"), "ended with an error while stopping");
                    }
                    break;
                }
                let why = match outcome {
                    Ok(Ok(())) => "ended".to_owned(),
                    Ok(Err(e)) => format!("failed: {e:#}"),
                    Err(j) if j.is_panic() => format!("panicked: {}", panic_message(j.into_panic())),
                    Err(j) => format!("was cancelled: {j}"),
                };
                {
                    let mut all = status.lock().expect("status lock");
                    if let Some(s) = all.get_mut(&name) {
                        s.last_error = Some(why.clone());
                        s.running = restart == Restart::Always;
                        if restart == Restart::Always {
                            s.restarts += 1;
                        }
                    }
                }
                if restart == Restart::Never {
                    tracing::error!(task = %name, %why, "a task the daemon cannot run without ended; shutting down");
                    let _ = fatal.send(Fatal { task: name.clone(), why });
                    break;
                }
                restarts = restarts.saturating_add(1);
                let wait = crate::backoff::backoff(restarts.min(6));
                tracing::error!(task = %name, %why, restart_in_ms = wait.as_millis() as u64, "task ended; restarting it");
                let mut stop = stopping.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait() => break,
                }
            }
            if let Some(s) = status.lock().expect("status lock").get_mut(&name) {
                s.running = false;
            }
        });
        self.tasks.insert(task_name, TaskControl { group, stop: stop_tx, ended: ended_rx, abort });
    }

    /// Stops one task (a replica removed by a reload): asks it to stop, waits up to
    /// `deadline` for it to end, then aborts it. Its record is removed. False if no such task.
    pub async fn stop_task(&mut self, name: &str, deadline: Duration) -> bool {
        let Some(mut task) = self.tasks.remove(name) else { return false };
        let _ = task.stop.send(true);
        if tokio::time::timeout(deadline, task.ended.wait_for(|ended| *ended)).await.is_err() {
            tracing::warn!(task = name, "did not stop in time; aborting it");
            task.abort.abort();
            let _ = task.ended.wait_for(|ended| *ended).await;
        }
        self.status.lock().expect("status lock").remove(name);
        true
    }

    /// Waits until a task that may not be restarted has ended.
    pub async fn fatal(&mut self) -> Fatal {
        self.fatal_rx.recv().await.expect("the supervisor holds a sender")
    }

    /// Asks every task of `group` to stop and waits up to `deadline` for them; tasks still
    /// running then are aborted (and logged).
    pub async fn stop_group(&mut self, group: &'static str, deadline: Duration) {
        let Some(mut set) = self.groups.remove(group) else { return };
        let names: Vec<String> = self.tasks.iter().filter(|(_, t)| t.group == group).map(|(n, _)| n.clone()).collect();
        for name in names {
            if let Some(task) = self.tasks.remove(&name) {
                let _ = task.stop.send(true);
            }
        }
        let all = async { while set.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, all).await.is_err() {
            tracing::warn!(group, left = set.len(), "tasks did not stop in time; aborting them");
            set.abort_all();
            while set.join_next().await.is_some() {}
        }
    }
}

/// A task that ran this long before it ended starts over with the shortest backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

/// Sets a flag when dropped: the task's wrapper ended, however it ended (aborted too).
struct SetOnDrop(watch::Sender<bool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// Aborts a task when dropped (a no-op once it has ended).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast::<&'static str>().map(|s| (*s).to_owned()).unwrap_or_else(|_| "a panic".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_and_a_fatal_one_reported() {
        let mut sup = Supervisor::new();
        let runs = Arc::new(AtomicU32::new(0));
        let counter = runs.clone();
        sup.spawn("sources", "flaky", Restart::Always, move |mut stopping| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    panic!("boom {n}");
                }
                stopping.wait().await;
                Ok(())
            }
        });
        sup.spawn("core", "essential", Restart::Never, |_| async { anyhow::bail!("gone") });
        let fatal = sup.fatal().await;
        assert_eq!(fatal.task, "essential");
        assert!(fatal.why.contains("gone"));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let status = sup.status().lock().unwrap().clone();
        assert_eq!(status["flaky"].restarts, 2);
        assert!(status["flaky"].last_error.as_deref().unwrap().contains("boom 1"));
        sup.stop_group("sources", Duration::from_secs(1)).await;
        assert!(!sup.status().lock().unwrap()["flaky"].running);
    }

    #[tokio::test(start_paused = true)]
    async fn one_task_is_stopped_alone_and_a_stuck_one_aborted() {
        let mut sup = Supervisor::new();
        let polite = |mut stopping: Stopping| async move {
            stopping.wait().await;
            Ok(())
        };
        sup.spawn("stream", "replica:a", Restart::Always, polite);
        sup.spawn("stream", "replica:b", Restart::Always, polite);
        sup.spawn("stream", "stuck", Restart::Always, |_| std::future::pending());
        assert!(sup.stop_task("replica:a", Duration::from_secs(1)).await);
        assert!(!sup.stop_task("replica:a", Duration::from_secs(1)).await, "already gone");
        let status = sup.status().lock().unwrap().clone();
        assert!(!status.contains_key("replica:a") && status["replica:b"].running, "the others run on");
        assert!(sup.stop_task("stuck", Duration::from_secs(1)).await, "aborted after the deadline");
        // The same name may run again (a replica whose settings changed).
        sup.spawn("stream", "replica:a", Restart::Always, polite);
        sup.stop_group("stream", Duration::from_secs(1)).await;
        assert!(!sup.status().lock().unwrap()["replica:b"].running);
    }
}
