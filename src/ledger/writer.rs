//! Group commit: one thread owns the ledger, gathers whatever appends are waiting into one
//! batch, makes the batch durable with one fsync, then answers every caller.

use super::{Hash, Ledger, LedgerError, Record};
use crate::event::NewEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{Receiver, Sender, channel};
use tokio::sync::{oneshot, watch};

/// Called with each durable batch.
pub type CommitHook = Box<dyn Fn(&[Record]) + Send>;

type Reply = oneshot::Sender<Result<Vec<Record>, LedgerError>>;

struct Request {
    events: Vec<NewEvent>,
    reply: Reply,
}

enum Msg {
    Append(Request),
    /// Stop after what is queued before it.
    Close,
    /// Finish the current batch, say so, then write nothing until resumed.
    Pause(Pause),
}

struct Pause {
    paused: std::sync::mpsc::Sender<Result<(), LedgerError>>,
    resume: std::sync::mpsc::Receiver<()>,
}

impl Pause {
    /// Holds the writer still; first, the bytes of a failed batch are removed (a cut must not
    /// hold them). When that fails the pause is refused and the writer goes on.
    fn hold(self, ledger: &mut Ledger) {
        let ready = ledger.finish_rollback();
        let ok = ready.is_ok();
        let _ = self.paused.send(ready);
        if ok {
            // Returns when the guard resumes us or is dropped.
            let _ = self.resume.recv();
        }
    }
}

/// While held, the writer appends nothing (the write barrier of a consistent snapshot).
pub struct PauseGuard {
    _resume: std::sync::mpsc::Sender<()>,
}

/// Counters of the writer, read by `GetBlockchainStats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub failed_batches: AtomicU64,
    /// Requests waiting in the queue right now.
    pub queued: AtomicU64,
}

/// A cheap handle to the writer thread. Cloned freely; the thread stops when every handle
/// is gone and hands its ledger back through [`LedgerWriter::join`].
#[derive(Clone)]
pub struct LedgerWriter {
    tx: Sender<Msg>,
    head: watch::Receiver<(u64, Hash)>,
    stats: Arc<WriterStats>,
}

/// Owns the writer thread; joining it returns the ledger.
pub struct WriterThread(JoinHandle<Ledger>);

impl WriterThread {
    /// True once the thread has ended (it ends only when closed, or by a panic).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    pub fn join(self) -> Ledger {
        self.0.join().expect("ledger writer thread panicked")
    }
}

impl LedgerWriter {
    /// Starts the writer. `queue_capacity` bounds waiting requests: when it is full, callers
    /// wait (backpressure), they are never dropped. `max_batch` bounds one fsync's records.
    pub fn spawn(ledger: Ledger, queue_capacity: usize, max_batch: usize) -> (Self, WriterThread) {
        Self::spawn_with_hook(ledger, queue_capacity, max_batch, Box::new(|_| {}))
    }

    /// Like [`spawn`](Self::spawn), calling `on_commit` with every batch once it is durable
    /// (before its callers are answered), on the writer thread: keep it quick.
    pub fn spawn_with_hook(ledger: Ledger, queue_capacity: usize, max_batch: usize, on_commit: CommitHook) -> (Self, WriterThread) {
        let (tx, rx) = channel(queue_capacity.max(1));
        let (head_tx, head) = watch::channel((ledger.head_seq(), ledger.head_hash()));
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || run(ledger, rx, head_tx, thread_stats, max_batch.max(1), on_commit))
            .expect("spawning the ledger writer thread");
        (Self { tx, head, stats }, WriterThread(handle))
    }

    /// Appends events and waits (asynchronously) until they are durable. When the queue is
    /// full the caller waits for room without blocking its executor thread.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Record>, LedgerError> {
        let (msg, rx) = self.request(events)?;
        let sent = match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => self.tx.send(msg).await.map_err(|_| ()),
            Err(TrySendError::Closed(_)) => Err(()),
        };
        self.sent(sent)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Appends events and blocks the calling thread until they are durable. For threads
    /// outside the async runtime (the indexer, tests); never call it from async code.
    pub fn append_blocking(&self, events: Vec<NewEvent>) -> Result<Vec<Record>, LedgerError> {
        let (msg, rx) = self.request(events)?;
        let sent = self.tx.blocking_send(msg).map_err(|_| ());
        self.sent(sent)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    fn request(&self, events: Vec<NewEvent>) -> Result<(Msg, oneshot::Receiver<Result<Vec<Record>, LedgerError>>), LedgerError> {
        for event in &events {
            event.validate()?;
        }
        let (reply, rx) = oneshot::channel();
        // Counted before it is queued, so a full queue shows in the stats while callers wait.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        Ok((Msg::Append(Request { events, reply }), rx))
    }

    fn sent(&self, sent: Result<(), ()>) -> Result<(), LedgerError> {
        if sent.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(LedgerError::Closed);
        }
        Ok(())
    }

    /// Stops the writer once what is already queued is written; later appends fail with
    /// [`LedgerError::Closed`]. Safe from any thread (the wait for room in a full queue
    /// happens on a helper thread, never on an executor's).
    pub fn close(&self) {
        if let Err(TrySendError::Full(msg)) = self.tx.try_send(Msg::Close) {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let _ = self.tx.blocking_send(msg);
                });
            });
        }
    }

    /// Waits until the writer has made everything before this call durable and stopped;
    /// appends wait until the guard is dropped. Called from the indexer thread.
    pub fn pause(&self) -> Result<PauseGuard, LedgerError> {
        let (paused_tx, paused) = std::sync::mpsc::channel();
        let (resume_tx, resume) = std::sync::mpsc::channel();
        self.tx.blocking_send(Msg::Pause(Pause { paused: paused_tx, resume })).map_err(|_| LedgerError::Closed)?;
        paused.recv().map_err(|_| LedgerError::Closed)??;
        Ok(PauseGuard { _resume: resume_tx })
    }

    /// The durable head `(seq, hash)`, updated after every commit.
    pub fn head(&self) -> watch::Receiver<(u64, Hash)> {
        self.head.clone()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

fn run(
    mut ledger: Ledger,
    mut rx: Receiver<Msg>,
    head_tx: watch::Sender<(u64, Hash)>,
    stats: Arc<WriterStats>,
    max_batch: usize,
    on_commit: CommitHook,
) -> Ledger {
    let mut closing = false;
    while !closing {
        let first = match rx.blocking_recv() {
            Some(Msg::Append(first)) => first,
            Some(Msg::Pause(pause)) => {
                pause.hold(&mut ledger);
                continue;
            }
            Some(Msg::Close) | None => break,
        };
        let mut pause_after = None;
        let mut requests = vec![first];
        let mut total = requests[0].events.len();
        while total < max_batch {
            match rx.try_recv() {
                Ok(Msg::Append(request)) => {
                    total += request.events.len();
                    requests.push(request);
                }
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Ok(Msg::Pause(pause)) => {
                    pause_after = Some(pause);
                    break;
                }
                Err(_) => break,
            }
        }
        stats.queued.fetch_sub(requests.len() as u64, Ordering::Relaxed);
        let sizes: Vec<usize> = requests.iter().map(|r| r.events.len()).collect();
        let events: Vec<NewEvent> = requests.iter_mut().flat_map(|r| std::mem::take(&mut r.events)).collect();
        match ledger.append_batch(&events) {
            Ok(records) => {
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
                head_tx.send_replace((ledger.head_seq(), ledger.head_hash()));
                on_commit(&records);
                let mut records = records.into_iter();
                for (request, size) in requests.into_iter().zip(sizes) {
                    let _ = request.reply.send(Ok(records.by_ref().take(size).collect()));
                }
            }
            Err(error) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, records = events.len(), "ledger append failed; batch rolled back");
                for request in requests {
                    let _ = request.reply.send(Err(error.duplicate()));
                }
            }
        }
        if let Some(pause) = pause_after {
            pause.hold(&mut ledger);
        }
    }
    ledger
}
