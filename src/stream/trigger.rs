//! When to snapshot: decided by events, not timers. Each recorded event becomes due a delay
//! after it was recorded that depends on its priority (critical: at once; high: within 1 s;
//! medium and low: batched). Medium and low events wait for their vectors; critical and high
//! ones do not: a snapshot is cut at the ledger's head, so they reach the replicas at once,
//! findable by their words there, and their vectors follow with a later snapshot — in a
//! burst, the vectors of thousands of earlier events may take tens of seconds. A snapshot is
//! named by its vectorized seq, so a new one needs at least one new vector. A batch of
//! vectorized events is due at once; nothing new, nothing snapshotted. Medium and low events
//! past their delay go once all of them are vectorized, with a batch, or — a backlog being
//! embedded — with what has its vector at most once per [`PARTIAL_GAP`].
//!
//! The pending set is bounded: per priority class at most [`RANGES_PER_CLASS`] ranges of
//! seqs, each with the earliest due time of the events in it. When a burst would exceed
//! that, the newest range grows instead — a snapshot may then come a little early, never late.

use crate::config::StreamConfig;
use crate::event::Priority;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Ranges kept per priority class.
pub const RANGES_PER_CLASS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Range {
    first: u64,
    last: u64,
    due: Instant,
    /// Due without its vectors, and covered once a snapshot's ledger holds it (critical and
    /// high); otherwise due once vectorized, covered once a snapshot holds its vectors.
    by_head: bool,
}

/// Events recorded and not yet in a snapshot.
#[derive(Debug)]
pub struct Pending {
    delays: [Duration; 4],
    batch_events: u64,
    classes: [VecDeque<Range>; 4],
    /// Notices were missed (a burst outran the subscriber): a snapshot is due at this time.
    missed: Option<Instant>,
    /// What the last snapshot covered: vectors through `.0`, the ledger through `.1`. A
    /// notice read after it (notices lag in a burst) about an event it covers is not pending.
    covered: (u64, u64),
    /// When the last snapshot was taken: overdue events partly vectorized go at most once
    /// per [`PARTIAL_GAP`].
    last_cut: Option<Instant>,
}

/// The shortest gap between snapshots that carry only part of the overdue medium and low
/// events (a backlog being embedded): one per vector was a snapshot every few tens of ms.
pub const PARTIAL_GAP: Duration = Duration::from_secs(1);

impl Pending {
    pub fn new(config: &StreamConfig) -> Self {
        let mut pending = Self {
            delays: Default::default(),
            batch_events: 1,
            classes: Default::default(),
            missed: None,
            covered: (0, 0),
            last_cut: None,
        };
        pending.set_policy(config);
        pending
    }

    /// Takes a new policy (a reload); events already noted keep the time they were due at.
    pub fn set_policy(&mut self, config: &StreamConfig) {
        let ms = Duration::from_millis;
        self.delays = [ms(config.low_delay_ms), ms(config.medium_delay_ms), ms(config.high_delay_ms), ms(config.critical_delay_ms)];
        self.batch_events = config.batch_events.max(1);
    }

    /// An event was recorded now.
    pub fn note(&mut self, seq: u64, priority: Priority, now: Instant) {
        let due = now + self.delays[priority.rank() as usize];
        let by_head = priority >= Priority::High;
        if seq <= if by_head { self.covered.1 } else { self.covered.0 } {
            return;
        }
        let class = &mut self.classes[priority.rank() as usize];
        let full = class.len() >= RANGES_PER_CLASS;
        match class.back_mut() {
            Some(range) if full => range.last = range.last.max(seq),
            _ => class.push_back(Range { first: seq, last: seq, due, by_head }),
        }
    }

    /// Some notices were missed; whatever they were, a snapshot is due within the medium delay.
    pub fn note_missed(&mut self, now: Instant) {
        let due = now + self.delays[Priority::Medium.rank() as usize];
        self.missed = Some(self.missed.map_or(due, |d| d.min(due)));
    }

    /// Events `first..=last`, recorded before this start, that no snapshot covers (a crash
    /// came between): due at once, as critical ones are, as they get their vectors — the
    /// range stays pending until a snapshot covers its last event, however many snapshots
    /// the backlog's embedding takes. Their priorities are not known here, and some may
    /// have been critical.
    pub fn note_uncovered(&mut self, first: u64, last: u64, now: Instant) {
        if first <= last {
            self.classes[Priority::Critical.rank() as usize].push_front(Range { first, last, due: now, by_head: false });
        }
    }

    /// Whether a snapshot is due now, given that everything through `vectorized` has its
    /// vector and the last snapshot's vectors covered `last` (its name).
    pub fn due(&self, vectorized: u64, last: u64, now: Instant) -> bool {
        if vectorized <= last {
            return false;
        }
        vectorized - last >= self.batch_events || self.missed.is_some_and(|at| at <= now) || self.overdue_ready(vectorized, now)
    }

    /// Whether some class's overdue events can go now. Critical and high ones go at the
    /// head; events no snapshot covered at start (the critical class, not by head) go as
    /// their vectors come; medium and low ones once every overdue one of the class has its
    /// vector, or with what has its vector at most once per [`PARTIAL_GAP`] (a backlog).
    fn overdue_ready(&self, vectorized: u64, now: Instant) -> bool {
        let critical = Priority::Critical.rank() as usize;
        let partial = self.last_cut.is_none_or(|at| at + PARTIAL_GAP <= now);
        self.classes.iter().enumerate().any(|(class, ranges)| {
            let Some(front) = ranges.front().filter(|r| r.due <= now) else { return false };
            if front.by_head || ((class == critical || partial) && front.first <= vectorized) {
                return true;
            }
            // Due times grow along a class, so the overdue ranges are its first ones.
            let overdue_through = ranges.iter().take_while(|r| r.due <= now).map(|r| r.last).max().unwrap_or(front.last);
            overdue_through <= vectorized
        })
    }

    /// A snapshot holding the vectors of everything through `seq` and the ledger through
    /// `head` was taken.
    pub fn covered(&mut self, seq: u64, head: u64, now: Instant) {
        self.missed = None;
        self.last_cut = Some(now);
        self.covered = (self.covered.0.max(seq), self.covered.1.max(head));
        for class in &mut self.classes {
            while let Some(front) = class.front_mut() {
                if front.last <= if front.by_head { head } else { seq } {
                    class.pop_front();
                } else {
                    front.first = front.first.max(seq + 1);
                    break;
                }
            }
        }
    }

    /// Ranges held (for tests and stats).
    pub fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.missed.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StreamConfig {
        StreamConfig {
            critical_delay_ms: 0,
            high_delay_ms: 1000,
            medium_delay_ms: 10_000,
            low_delay_ms: 30_000,
            batch_events: 100,
            ..Default::default()
        }
    }

    #[test]
    fn critical_is_due_at_once_high_within_its_delay_low_waits() {
        let t0 = Instant::now();
        let mut p = Pending::new(&config());
        p.note(1, Priority::Low, t0);
        assert!(!p.due(1, 0, t0), "a low one waits for its delay");
        p.note(2, Priority::Critical, t0);
        assert!(p.due(1, 0, t0), "the critical one is due at once, its vector or not");
        p.covered(1, 2, t0);
        assert!(p.is_empty(), "in the snapshot's ledger: the critical one is covered, and the low one by its vector");
        p.note(3, Priority::High, t0);
        assert!(!p.due(3, 2, t0 + Duration::from_millis(999)));
        assert!(p.due(3, 2, t0 + Duration::from_millis(1000)));
        assert!(!p.due(3, 3, t0 + Duration::from_secs(60)), "nothing new, nothing due");
    }

    #[test]
    fn in_a_burst_a_critical_event_goes_at_the_head_and_the_backlog_follows_by_its_vectors() {
        let t0 = Instant::now();
        let mut p = Pending::new(&config());
        for seq in 1..=5000 {
            p.note(seq, Priority::Low, t0);
        }
        p.note(5001, Priority::Critical, t0);
        assert!(!p.due(40, 40, t0), "a new snapshot needs a new vector (its name)");
        assert!(p.due(41, 40, t0), "due long before the 5,000 events ahead of it are embedded");
        p.covered(41, 5001, t0);
        assert!(!p.due(42, 41, t0 + Duration::from_secs(1)), "the critical one is on the replicas; the rest waits");
        p.note(4999, Priority::High, t0);
        assert!(!p.due(42, 41, t0 + Duration::from_secs(2)), "a late notice of an event already on the replicas is not pending");
        assert!(p.due(141, 41, t0), "a batch of vectors");
        p.covered(5001, 5001, t0);
        assert!(p.is_empty());
    }

    #[test]
    fn a_backlog_of_overdue_events_goes_out_in_batches_not_with_every_vector() {
        let t0 = Instant::now();
        let mut p = Pending::new(&config());
        for seq in 1..=3000 {
            p.note(seq, Priority::Medium, t0);
        }
        let later = t0 + Duration::from_secs(11);
        let ms = Duration::from_millis;
        assert!(p.due(40, 0, later), "overdue: what has its vector goes");
        p.covered(40, 3000, later);
        assert!(!p.due(70, 40, later + ms(100)), "not with every vector that follows");
        assert!(p.due(140, 40, later + ms(100)), "a batch");
        assert!(p.due(70, 40, later + ms(1000)), "or what has its vector, a second later");
        p.covered(2950, 3000, later + ms(2000));
        assert!(p.due(3000, 2950, later + ms(2100)), "the rest, once all of it is vectorized");
        p.covered(3000, 3000, later + ms(2100));
        assert!(p.is_empty());
    }

    #[test]
    fn events_no_snapshot_covers_at_start_stay_due_until_all_are_covered() {
        let t0 = Instant::now();
        let mut p = Pending::new(&config());
        p.note_uncovered(11, 40, t0);
        assert!(!p.due(10, 10, t0), "nothing beyond the last snapshot is vectorized yet");
        assert!(p.due(14, 10, t0), "due at once, whatever their priority");
        p.covered(14, 40, t0);
        assert!(p.due(25, 14, t0), "the backlog's next batch is due too, not only the first");
        p.covered(25, 40, t0);
        assert!(!p.is_empty());
        p.covered(40, 40, t0);
        assert!(p.is_empty());
    }

    #[test]
    fn a_batch_is_due_at_once_and_the_set_stays_bounded() {
        let t0 = Instant::now();
        let mut p = Pending::new(&config());
        for seq in 1..=1_000_000 {
            p.note(seq, Priority::Low, t0 + Duration::from_micros(seq));
        }
        assert!(p.len() <= RANGES_PER_CLASS);
        assert!(!p.due(50, 0, t0));
        assert!(p.due(100, 0, t0), "a batch of 100");
        let later = t0 + Duration::from_secs(31);
        p.covered(500_000, 1_000_000, later);
        assert!(!p.is_empty(), "the rest of a merged range stays pending");
        assert!(!p.due(500_001, 500_000, later), "not with every new vector");
        assert!(p.due(500_100, 500_000, later), "with a batch");
        assert!(p.due(1_000_000, 999_950, later), "or once all of it is vectorized");
        assert!(p.due(500_001, 500_000, later + PARTIAL_GAP), "or what has its vector, once per gap");
    }
}
