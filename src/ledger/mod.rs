//! The ledger: append-only, hash-chained segment files of JSON lines, the single source
//! of truth of ovs-port-agent. See `docs/ledger-format.md` for the bytes on disk.

mod cursor;
pub mod number;
pub mod record;
pub mod segment;
pub mod verify;
mod writer;

pub use cursor::{LedgerCursor, head_seq};
pub use record::{Hash, Record, ZERO_HASH};
pub use verify::{ChainState, Damage, DamageKind, MAX_LINE_BYTES, ScanOutcome, TornTail, open_segment_file, scan};
pub use writer::{CommitHook, LedgerWriter, PauseGuard, WriterStats, WriterThread};

use crate::durable::sync_dir;
use crate::event::{EventError, NewEvent, Priority, now_ns};
use record::{Body, encode_line};
use segment::{SegmentFile, segment_name};
use serde_json::json;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The event itself is invalid; nothing was written.
    #[error("invalid event: {0}")]
    Invalid(#[from] EventError),
    /// The ledger on disk is damaged; appends stay stopped until an operator intervenes.
    #[error("ledger is damaged, appends are stopped: {0}")]
    Damaged(Box<Damage>),
    /// Writing or syncing failed (a full disk, say); the batch was rolled back.
    #[error("could not write the ledger at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The writer has shut down.
    #[error("the ledger writer has stopped")]
    Closed,
}

impl LedgerError {
    /// A copy for every caller of a failed batch (`io::Error` itself is not `Clone`).
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Invalid(e) => Self::Invalid(e.clone()),
            Self::Damaged(d) => Self::Damaged(d.clone()),
            Self::Io { path, source } => Self::Io { path: path.clone(), source: io::Error::new(source.kind(), source.to_string()) },
            Self::Closed => Self::Closed,
        }
    }

    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// What opening found and repaired.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub head_seq: u64,
    pub segments: usize,
    pub damage: Option<Damage>,
    /// A torn last record that was truncated, and the record that reports it.
    pub recovered: Option<(TornTail, u64)>,
}

/// Settings of a ledger.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    pub host: String,
    /// A new segment starts before a record would take the current one past this size.
    pub segment_max_bytes: u64,
}

/// The writable ledger. One per data directory (guarded by [`crate::lock::DataDirLock`]).
pub struct Ledger {
    dir: PathBuf,
    options: LedgerOptions,
    state: ChainState,
    damage: Option<Damage>,
    tail: Option<OpenSegment>,
    /// A failed batch whose bytes could not be removed yet (the disk was full): appends
    /// wait until they are.
    unfinished_rollback: Option<Rollback>,
}

/// What undoing a failed batch must restore.
#[derive(Debug, Clone, Copy)]
struct Rollback {
    first_new_seq: u64,
    /// The segment that was the tail before the batch, and its length then.
    saved_tail: Option<(u64, u64)>,
}

struct OpenSegment {
    first_seq: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir`, verifies it whole, truncates a torn
    /// last record and records that repair as an `agent`/`ledger.recovered` event.
    pub fn open(dir: &Path, options: LedgerOptions) -> Result<(Self, OpenReport), LedgerError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| LedgerError::io(dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|e| LedgerError::io(parent, e))?;
            }
        }
        let outcome = scan(dir, |_| {}).map_err(|e| LedgerError::io(dir, e))?;
        if let Some(torn) = &outcome.torn {
            tracing::warn!(
                seq = torn.seq,
                segment = %torn.segment.display(),
                bytes_dropped = torn.bytes,
                "truncating a torn last record (a write interrupted by a crash)"
            );
            let file = OpenOptions::new().write(true).open(&torn.segment).map_err(|e| LedgerError::io(&torn.segment, e))?;
            file.set_len(torn.offset).and_then(|()| file.sync_all()).map_err(|e| LedgerError::io(&torn.segment, e))?;
        }
        if let Some(damage) = &outcome.damage {
            tracing::error!(%damage, "ledger damaged: appends are stopped");
        }
        let tail = match &outcome.tail_segment {
            Some((seg, len)) if outcome.damage.is_none() => Some(open_segment(seg, *len)?),
            _ => None,
        };
        let mut ledger =
            Self { dir: dir.to_owned(), options, state: outcome.state, damage: outcome.damage.clone(), tail, unfinished_rollback: None };
        let mut report =
            OpenReport { head_seq: ledger.state.head_seq, segments: outcome.segments, damage: outcome.damage, recovered: None };
        if let (Some(torn), None) = (outcome.torn, &report.damage) {
            let event = NewEvent::new(
                "agent",
                "agent:ledger",
                "ledger.recovered",
                Priority::High,
                json!({"bytes_dropped": torn.bytes, "torn_seq": torn.seq, "segment": torn.segment.file_name().map(|n| n.to_string_lossy().into_owned())}),
            )
            .with_summary(format!("ledger recovered: dropped {} bytes of an incomplete record at seq {}", torn.bytes, torn.seq));
            let records = ledger.append_batch(&[event])?;
            report.head_seq = ledger.state.head_seq;
            report.recovered = Some((torn, records[0].seq));
        }
        Ok((ledger, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn head_seq(&self) -> u64 {
        self.state.head_seq
    }

    pub fn head_hash(&self) -> Hash {
        self.state.head_hash
    }

    /// Appends `events` in order with one write and one fsync per touched segment; returns
    /// only when every record is durable. On failure nothing of the batch remains.
    pub fn append_batch(&mut self, events: &[NewEvent]) -> Result<Vec<Record>, LedgerError> {
        if let Some(damage) = &self.damage {
            return Err(LedgerError::Damaged(Box::new(damage.clone())));
        }
        self.finish_rollback()?;
        for event in events {
            event.validate()?;
        }
        let saved_state = self.state.clone_heads_for(events);
        let saved_tail = self.tail.as_ref().map(|t| (t.first_seq, t.len));
        match self.write_batch(events) {
            Ok(records) => Ok(records),
            Err(e) => {
                self.roll_back(saved_state, saved_tail);
                Err(e)
            }
        }
    }

    fn write_batch(&mut self, events: &[NewEvent]) -> Result<Vec<Record>, LedgerError> {
        let mut records = Vec::with_capacity(events.len());
        let mut pending: Vec<u8> = Vec::with_capacity(events.len() * 512);
        let mut created_segment = false;
        let now = now_ns();
        for event in events {
            let seq = self.state.head_seq + 1;
            let summary = event.summary_or_default();
            let element_prev = self.state.element_prev(&event.element_id);
            let prev = self.state.head_hash;
            let ts = event.ts.unwrap_or(now);
            let body = Body {
                seq,
                ts,
                host: &self.options.host,
                source: &event.source,
                element_id: &event.element_id,
                element_type: &event.element_type,
                action: &event.action,
                priority: event.priority,
                summary: &summary,
                details: &event.details,
                prev: &prev,
                element_prev: &element_prev,
            };
            let (line, hash) = encode_line(&body);
            let needs_new_segment = match &self.tail {
                None => true,
                Some(t) => t.len + pending.len() as u64 > 0 && t.len + (pending.len() + line.len()) as u64 > self.options.segment_max_bytes,
            };
            if needs_new_segment {
                self.flush_pending(&mut pending)?;
                self.start_segment(seq)?;
                created_segment = true;
            }
            pending.extend_from_slice(&line);
            let record = Record {
                seq,
                ts,
                host: self.options.host.clone(),
                source: event.source.clone(),
                element_id: event.element_id.clone(),
                element_type: event.element_type.clone(),
                action: event.action.clone(),
                priority: event.priority,
                summary,
                details: event.details.clone(),
                prev,
                element_prev,
                hash,
            };
            self.state.advance(&record).expect("records built from the chain state link to it");
            records.push(record);
        }
        self.flush_pending(&mut pending)?;
        if created_segment {
            sync_dir(&self.dir).map_err(|e| LedgerError::io(&self.dir, e))?;
        }
        Ok(records)
    }

    /// Writes buffered lines to the current segment and makes them durable.
    fn flush_pending(&mut self, pending: &mut Vec<u8>) -> Result<(), LedgerError> {
        if pending.is_empty() {
            return Ok(());
        }
        let tail = self.tail.as_mut().expect("a segment is open before lines are buffered");
        tail.file.write_all(pending).and_then(|()| tail.file.sync_data()).map_err(|e| LedgerError::io(&tail.path, e))?;
        tail.len += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    fn start_segment(&mut self, first_seq: u64) -> Result<(), LedgerError> {
        let path = self.dir.join(segment_name(first_seq));
        let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| LedgerError::io(&path, e))?;
        self.tail = Some(OpenSegment { first_seq, path, file, len: 0 });
        Ok(())
    }

    /// Undoes a failed batch: the chain state is restored at once; segments created by it
    /// are removed and the old tail truncated back — now, or, when that fails too (a full
    /// disk refuses even that), before the next append, which waits for it. Nothing is ever
    /// chained after bytes of a failed batch.
    fn roll_back(&mut self, saved: SavedHeads, saved_tail: Option<(u64, u64)>) {
        self.unfinished_rollback = Some(Rollback { first_new_seq: saved.head_seq + 1, saved_tail });
        self.state.restore(saved);
        self.tail = None;
        if let Err(e) = self.finish_rollback() {
            tracing::error!(error = %e, "could not yet remove a failed append's bytes; appends wait until it can be");
        }
    }

    pub(crate) fn finish_rollback(&mut self) -> Result<(), LedgerError> {
        let Some(rollback) = self.unfinished_rollback else { return Ok(()) };
        let segments = segment::list_segments(&self.dir).map_err(|e| LedgerError::io(&self.dir, e))?;
        let kept_first = rollback.saved_tail.map(|t| t.0);
        for seg in segments.iter().filter(|s| s.first_seq >= rollback.first_new_seq && Some(s.first_seq) != kept_first) {
            std::fs::remove_file(&seg.path).map_err(|e| LedgerError::io(&seg.path, e))?;
        }
        if let Some((first_seq, len)) = rollback.saved_tail {
            let seg = SegmentFile { first_seq, path: self.dir.join(segment_name(first_seq)) };
            let tail = open_segment(&seg, len)?;
            tail.file.set_len(len).and_then(|()| tail.file.sync_data()).map_err(|e| LedgerError::io(&tail.path, e))?;
            self.tail = Some(tail);
        }
        sync_dir(&self.dir).map_err(|e| LedgerError::io(&self.dir, e))?;
        self.unfinished_rollback = None;
        Ok(())
    }
}

/// The chain state before a batch, enough to restore it if the batch fails.
pub(crate) struct SavedHeads {
    head_seq: u64,
    head_hash: Hash,
    elements: Vec<(String, Option<Hash>)>,
}

impl ChainState {
    fn clone_heads_for(&self, events: &[NewEvent]) -> SavedHeads {
        SavedHeads {
            head_seq: self.head_seq,
            head_hash: self.head_hash,
            elements: events.iter().map(|e| (e.element_id.clone(), self.element_heads.get(&e.element_id).copied())).collect(),
        }
    }

    fn restore(&mut self, saved: SavedHeads) {
        self.head_seq = saved.head_seq;
        self.head_hash = saved.head_hash;
        for (id, head) in saved.elements.into_iter().rev() {
            match head {
                Some(h) => {
                    self.element_heads.insert(id, h);
                }
                None => {
                    self.element_heads.remove(&id);
                }
            }
        }
    }
}

fn open_segment(seg: &SegmentFile, len: u64) -> Result<OpenSegment, LedgerError> {
    let file = OpenOptions::new().append(true).open(&seg.path).map_err(|e| LedgerError::io(&seg.path, e))?;
    Ok(OpenSegment { first_seq: seg.first_seq, path: seg.path.clone(), file, len })
}
