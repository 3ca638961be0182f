//! The background lane: one thread that runs a flood's searches whole (the query's embedding
//! on a model of its own, then the walk), at idle CPU priority for its whole life, waiting
//! included (`sched::IdleResident`). Waking it preempts no one, and each search yields the
//! cores to every other thread that wants them, the bus's, `dbus-daemon`'s and other
//! clients' among them. A search that waits or runs longer than the bound (50 ms) has the
//! thread raised back until it is done, so a busy host does not starve the flood, nor
//! anything its search holds.
//!
//! After each search the lane rests as long as that search ran (at most [`REST_AT_MOST`]), so
//! a flood takes at most half of one core. Measured, not assumed: at idle priority alone a
//! flood that kept one core busy left another client's Ping p99 at 2.6–2.9 ms against a
//! quiet 0.9–1.4 ms; resting as long as it ran kept it within 3× of the quiet p99 in every
//! flood measured (0.77–3.00 ms against 0.82–2.64 ms), the flood's 10,000 searches taking
//! 76–105 s instead of 49 (docs/decisions.md).
//!
//! The model is loaded on the first background search (no flood, no memory spent), and the
//! embedding cache is the pool's, so a text embedded once is not embedded again.

use crate::embed::{EmbedPool, ModelFiles, SentenceModel};
use crate::failure::Busy;
use crate::sched::{IdleResident, ResidentHandle};
use anyhow::{Result, anyhow};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Searches the lane takes at once. Fairness lets at most a few run at a time (one per
/// flooding caller), so this is a guard, not what paces a flood.
const LANE_CAPACITY: u64 = 64;

/// The longest rest after one search (one raised back past its bound ran long; its rest
/// must not eat the next one's bound).
const REST_AT_MOST: Duration = Duration::from_millis(20);

/// A search for the lane, given the lane's model.
type LaneJob = Box<dyn FnOnce(&mut LaneModel) + Send>;

/// The lane's own model (loaded when first needed) and the pool whose cache it shares.
pub struct LaneModel {
    files: ModelFiles,
    max_length: usize,
    model: Option<SentenceModel>,
    pool: Arc<EmbedPool>,
}

impl LaneModel {
    /// `text`'s query vector: from the pool's cache, or embedded on the lane's model.
    pub fn embed_query(&mut self, text: &str) -> Result<Arc<[f32]>> {
        let model = match &mut self.model {
            Some(model) => model,
            slot => slot.insert(SentenceModel::load(&self.files, self.max_length)?),
        };
        self.pool.embed_query_on(model, text)
    }
}

pub struct BackgroundLane {
    /// Taken when the lane stops; a channel, so that queueing takes no lock the lane's idle
    /// thread could hold.
    jobs: Mutex<Option<Sender<LaneJob>>>,
    resident: ResidentHandle,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundLane {
    /// Starts the lane; `None` when its thread could not be kept at idle priority (it could
    /// not be raised back), and a flood's work is then lowered around each computation
    /// instead.
    pub fn start(files: &ModelFiles, max_length: usize, pool: Arc<EmbedPool>) -> Result<Option<Self>> {
        let (jobs, queue) = channel::<LaneJob>();
        let (settled_tx, settled_rx) = channel();
        let mut model = LaneModel { files: files.clone(), max_length, model: None, pool };
        let thread = std::thread::Builder::new().name("search-background".into()).spawn(move || {
            let Some(resident) = IdleResident::settle() else {
                let _ = settled_tx.send(None);
                return;
            };
            let _ = settled_tx.send(Some(resident.handle()));
            run(&queue, &resident, &mut model);
            // Ordinary again before the model (and perhaps the last handle on the pool, whose
            // drop joins its workers) is let go.
            drop(resident);
            drop(model);
        })?;
        match settled_rx.recv() {
            Ok(Some(resident)) => Ok(Some(Self { jobs: Mutex::new(Some(jobs)), resident, thread: Some(thread) })),
            _ => {
                let _ = thread.join();
                Ok(None)
            }
        }
    }

    /// Runs `job` on the lane and returns what it gives; fails at once with [`Busy`] when the
    /// lane has [`LANE_CAPACITY`] searches already. A job whose caller has gone is skipped.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce(&mut LaneModel) -> T + Send + 'static) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: LaneJob = Box::new(move |model| {
            if !reply.is_closed() {
                let _ = reply.send(job(model));
            }
        });
        if !self.resident.work_queued(LANE_CAPACITY) {
            return Err(
                Busy { what: "background search", detail: format!("{LANE_CAPACITY} searches are waiting; try again shortly") }.into()
            );
        }
        let sent = self.jobs.lock().expect("lane lock").as_ref().is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            return Err(anyhow!("the background search lane has stopped"));
        }
        answer.await.map_err(|_| anyhow!("the background search failed (it panicked); see the daemon's log"))
    }

    /// False when the lane's thread has ended while the engine runs.
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for BackgroundLane {
    fn drop(&mut self) {
        // Counted as work, so that an idle lane is raised back if it is slow to see it.
        self.resident.work_queued(u64::MAX);
        self.jobs.lock().expect("lane lock").take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The lane's loop: one search at a time, in the order they came, each followed by a rest as
/// long as it ran, until the sender goes.
fn run(queue: &Receiver<LaneJob>, resident: &IdleResident, model: &mut LaneModel) {
    loop {
        resident.settle_before_waiting();
        let Ok(job) = queue.recv() else { return };
        let started = Instant::now();
        // A search that panics fails alone (its caller is told) and the model is loaded
        // afresh for the next; the lane goes on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(model))).is_err() {
            tracing::error!("a background search panicked");
            model.model = None;
        }
        resident.work_done();
        std::thread::sleep(started.elapsed().min(REST_AT_MOST));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmbeddingConfig;
    use crate::embed::DIMENSION;

    /// The model the test suite provisions (`.dev/`), or where the environment points.
    fn model_config() -> EmbeddingConfig {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let from_env = |name: &str, default: &str| std::env::var_os(name).map(Into::into).unwrap_or_else(|| root.join(default));
        EmbeddingConfig {
            model_dir: from_env("OVS_PORT_AGENT_MODEL_DIR", ".dev/model"),
            runtime_library: from_env("OVS_PORT_AGENT_RUNTIME_LIBRARY", ".dev/lib/libonnxruntime.so.1.24.4"),
            workers: 1,
            ..EmbeddingConfig::default()
        }
    }

    #[tokio::test]
    async fn a_lane_search_runs_at_idle_priority_and_one_that_panics_fails_alone() {
        let config = model_config();
        let files = ModelFiles::locate(&config).expect("the test suite provisions the model");
        let pool = Arc::new(EmbedPool::start(&files, &config, Box::new(|_| {})).unwrap());
        let lane = BackgroundLane::start(&files, config.max_length, pool.clone())
            .unwrap()
            .expect("root may raise a thread back from idle priority");
        // SAFETY: sched_getscheduler on the calling thread has no preconditions.
        let policy = lane.run(|_| unsafe { libc::sched_getscheduler(0) }).await.unwrap();
        assert_eq!(policy, libc::SCHED_IDLE, "the lane's work runs at idle priority");
        let failed = lane.run(|_| -> u32 { panic!("a search panics") }).await;
        assert!(failed.unwrap_err().to_string().contains("panicked"), "its caller is told");
        let vector = lane.run(|model| model.embed_query("bridge br-int lost its uplink")).await.unwrap().unwrap();
        assert_eq!(vector.len(), DIMENSION, "the lane goes on, with its model loaded afresh");
        let again = lane.run(|model| model.embed_query("bridge br-int lost its uplink")).await.unwrap().unwrap();
        assert_eq!(vector, again);
        assert_eq!(pool.stats().cache_hits.load(std::sync::atomic::Ordering::Relaxed), 1, "the second came from the pool's cache");
        assert!(lane.alive());
        // The next search starts only after a rest as long as the last one ran.
        let spun = std::time::Duration::from_millis(10);
        let first_ended = lane.run(move |_| {
            let until = Instant::now() + spun;
            while Instant::now() < until {}
            Instant::now()
        });
        let next_started = lane.run(|_| Instant::now());
        let (first_ended, next_started) = tokio::join!(first_ended, next_started);
        assert!(next_started.unwrap() - first_ended.unwrap() >= spun, "the lane rested after a 10 ms search");
        drop(lane);
    }
}
