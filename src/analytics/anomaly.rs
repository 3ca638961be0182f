//! What is unusual: each event is scored against what came before it, by four rules, each
//! with a threshold taken from the history itself rather than a constant:
//!
//! - **first seen**: an action never seen for the element's type, or a value never seen for
//!   a field of the type — for fields with few distinct values only (a field whose values are
//!   names, addresses or counters is new by nature and never fires). Strings are compared by
//!   shape: the element's own name and digits are masked, so "could not open device vnet7"
//!   is the same error on every port.
//! - **burst**: more events on one element within [`BIN_NS`] than any element of its type
//!   ever had in one such interval in the baseline, and (for an element with a day of history)
//!   improbably many for its own rate (Poisson tail below 10⁻⁶).
//! - **novelty**: the event's distance to its nearest earlier event of the same type (by
//!   vector) beyond every distance the type's recent routine events had to theirs.
//! - **precursor**: an event of a kind (type, action, what it changed to) that preceded at
//!   least 3 earlier critical events on its element within [`PRECURSOR_NS`], at least half of
//!   the times it occurred.
//!
//! The detector learns in time order and only from the past: a window is scored after a
//! baseline of the events before it, each event is scored before it is learned from. Its
//! memory is bounded (values per field, elements, kinds, novelty samples), so the live
//! scorer can run for ever and be rebuilt from the ledger at start.

use super::{Cite, check_window, ms_to_ns};
use crate::event::Priority;
use crate::index::{EventRow, Index, state_updates};
use crate::search::{Change, SearchState};
use crate::vector::Filters;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};

/// The interval a burst is counted in.
pub const BIN_NS: i64 = 10 * 60 * 1_000_000_000;
/// How far back events count as precursors of a critical event.
pub const PRECURSOR_NS: i64 = 15 * 60 * 1_000_000_000;
/// A field with more distinct value shapes than this is not a "few values" field.
const FEW_VALUES: usize = 24;
/// A type, or a field of it, needs this many observations before anything about it is new.
const MIN_OBSERVED: u64 = 50;
/// A burst needs at least this many events in one interval.
const MIN_BURST: u32 = 6;
/// Poisson tail probability below which an element's own rate calls a count a burst.
const BURST_P: f64 = 1e-6;
/// Novelty samples kept per type (the newest), and needed before novelty can fire.
const NOVELTY_SAMPLES: usize = 256;
const MIN_NOVELTY_SAMPLES: usize = 64;
/// The graph walk's breadth for novelty: only the nearest earlier event matters, and the
/// threshold is learned from distances found the same way, so a narrow walk suffices.
pub const NOVELTY_EF: usize = 16;
/// The novelty threshold never falls below this distance (near-duplicates differ by more).
const NOVELTY_FLOOR: f32 = 0.12;
/// Precursor rule: support and confidence.
const PRECURSOR_SUPPORT: u64 = 3;
const PRECURSOR_CONFIDENCE: f64 = 0.5;
/// Bounds of the detector's memory.
const MAX_ELEMENTS: usize = 200_000;
const MAX_KINDS: usize = 50_000;
const MAX_ACTIONS_PER_TYPE: usize = 1024;
/// Baseline events read for a window at most (the newest).
pub const MAX_BASELINE_EVENTS: usize = 200_000;
/// Events of a window scored at most.
pub const MAX_SCORED_EVENTS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    FirstSeen,
    Burst,
    Novelty,
    Precursor,
}

impl Rule {
    pub const ALL: [Rule; 4] = [Self::FirstSeen, Self::Burst, Self::Novelty, Self::Precursor];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstSeen => "first_seen",
            Self::Burst => "burst",
            Self::Novelty => "novelty",
            Self::Precursor => "precursor",
        }
    }
}

/// One thing found unusual, with the events it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub element_id: String,
    pub element_type: String,
    /// How far past its threshold (the rule's own measure; see `why`).
    pub score: f64,
    pub threshold: f64,
    pub why: String,
    /// The event that fired the rule.
    pub event: Cite,
    /// Later events of the window that belong to the same finding (the rest of a burst, the
    /// same new value again).
    pub more: usize,
    /// Past events that show what is usual (the nearest ones, the critical events a kind
    /// preceded) — the evidence.
    pub evidence: Vec<Evidence>,
    /// Seqs of the finding's events (the first few).
    pub seqs: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub event: Cite,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
}

impl Fired {
    /// The finding for event `e`, its evidence read from the index.
    fn into_finding(self, index: &Index, e: &EventRow) -> Result<Finding> {
        let mut evidence = Vec::with_capacity(self.evidence.len());
        for (seq, similarity) in &self.evidence {
            evidence.push(Evidence { event: Cite::read(index, *seq)?, similarity: *similarity });
        }
        Ok(Finding {
            rule: self.rule,
            element_id: e.element_id.clone(),
            element_type: e.element_type.clone(),
            score: self.score,
            threshold: self.threshold,
            why: self.why,
            event: Cite::of(e),
            more: 0,
            evidence,
            seqs: vec![e.seq],
        })
    }
}

impl Finding {
    /// A later event of the window that belongs to this finding.
    fn join(&mut self, seq: u64) {
        self.more += 1;
        if self.seqs.len() < 20 {
            self.seqs.push(seq);
        }
    }
}

/// A finding before it is written out: the fired rule, the key that groups its later events.
struct Fired {
    rule: Rule,
    key: String,
    score: f64,
    threshold: f64,
    why: String,
    evidence: Vec<(u64, Option<f32>)>,
}

#[derive(Default)]
enum FieldValues {
    #[default]
    Empty,
    Few(HashSet<String>, u64),
    Many,
}

#[derive(Default)]
struct TypeStats {
    events: u64,
    actions: HashSet<String>,
    fields: HashMap<String, FieldValues>,
    /// The most events any element of the type had in one interval.
    max_bin: u32,
    novelty: VecDeque<f32>,
}

impl TypeStats {
    fn novelty_threshold(&self) -> Option<f32> {
        if self.novelty.len() < MIN_NOVELTY_SAMPLES {
            return None;
        }
        Some(self.novelty.iter().copied().fold(NOVELTY_FLOOR, f32::max))
    }
}

struct ElementStats {
    first_ts: i64,
    last_ts: i64,
    events: u64,
    bin: i64,
    in_bin: u32,
    /// Recent events (ts, kind, seq), for precursors.
    recent: VecDeque<(i64, String)>,
}

#[derive(Default)]
struct KindStats {
    total: u64,
    preceded: u64,
    /// The newest critical events this kind preceded.
    criticals: VecDeque<u64>,
}

/// The learned state; see the module documentation.
#[derive(Default)]
pub struct Detector {
    types: HashMap<String, TypeStats>,
    elements: HashMap<String, ElementStats>,
    kinds: HashMap<String, KindStats>,
}

/// The kind of an event, for precursors: type, action, and what its first change ended at.
fn kind_of(e: &EventRow) -> String {
    let change = Change::all_in(&e.details).into_iter().next();
    match change {
        Some(c) => format!("{} {} {}={}", e.element_type, e.action, c.field, c.after),
        None => format!("{} {}", e.element_type, e.action),
    }
}

/// A value's shape: the element's own name masked, digits masked in strings; lists and
/// objects have no shape (they are never "first seen").
fn shape(value: &Value, own_name: &str) -> Option<String> {
    match value {
        Value::String(s) => {
            let s = if own_name.len() >= 2 { s.replace(own_name, "<self>") } else { s.clone() };
            let mut out = String::with_capacity(s.len());
            for c in s.chars() {
                if c.is_ascii_digit() {
                    if !out.ends_with('#') {
                        out.push('#');
                    }
                } else {
                    out.push(c);
                }
            }
            Some(out)
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("null".into()),
        _ => None,
    }
}

/// Whether `count` events of `el` in one interval are a burst: more than its type's bound
/// (the busiest interval learned, at least `MIN_BURST - 1`) and, for an element with a day
/// of history, improbable at its own rate. Returns (burst, bound, own-rate probability).
fn burst_check(t: &TypeStats, el: &ElementStats, count: u32) -> (bool, u32, Option<f64>) {
    let bound = t.max_bin.max(MIN_BURST - 1);
    let age = el.last_ts - el.first_ts;
    let own = (age >= 86_400 * 1_000_000_000).then(|| poisson_tail(count, el.events as f64 / age as f64 * BIN_NS as f64));
    (count > bound && own.is_none_or(|p| p < BURST_P), bound, own)
}

/// Poisson `P(X >= k)` for mean `lambda`.
fn poisson_tail(k: u32, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    // 1 - P(X <= k-1), summed in log space for stability.
    let mut term = (-lambda).exp();
    let mut below = term;
    for i in 1..k {
        term *= lambda / i as f64;
        below += term;
    }
    (1.0 - below).max(0.0)
}

impl Detector {
    /// Scores `e` against what was learned so far (without learning from it). `novelty` is
    /// the event's distance to its nearest earlier event of its type, when known.
    fn score(&self, e: &EventRow, novelty: Option<(f32, u64)>) -> Vec<Fired> {
        let mut fired = Vec::new();
        let own_name = e.element_id.split_once(':').map_or("", |(_, n)| n);
        if let Some(t) = self.types.get(&e.element_type).filter(|t| t.events >= MIN_OBSERVED) {
            if !t.actions.contains(&e.action) && t.actions.len() < MAX_ACTIONS_PER_TYPE {
                fired.push(Fired {
                    rule: Rule::FirstSeen,
                    key: format!("action {}", e.action),
                    score: 1.0,
                    threshold: 1.0,
                    why: format!("action {} was never seen for a {} in {} earlier events", e.action, e.element_type, t.events),
                    evidence: Vec::new(),
                });
            }
            let (updates, _) = state_updates(&e.details);
            for (field, value) in &updates {
                let Some(FieldValues::Few(seen, observed)) = t.fields.get(field) else { continue };
                let Some(v) = shape(value, own_name) else { continue };
                if *observed >= MIN_OBSERVED && !seen.contains(&v) {
                    let mut usual: Vec<&String> = seen.iter().collect();
                    usual.sort();
                    usual.truncate(8);
                    let usual: Vec<&str> = usual.iter().map(|s| s.as_str()).collect();
                    fired.push(Fired {
                        rule: Rule::FirstSeen,
                        key: format!("{field}={v}"),
                        score: 1.0,
                        threshold: 1.0,
                        why: format!(
                            "{field} = {v} was never seen for a {} ({observed} earlier values: {})",
                            e.element_type,
                            usual.join(", ")
                        ),
                        evidence: Vec::new(),
                    });
                }
            }
        }
        if let (Some(el), Some(t)) = (self.elements.get(&e.element_id), self.types.get(&e.element_type)) {
            let bin = e.ts.div_euclid(BIN_NS);
            let count = if el.bin == bin { el.in_bin + 1 } else { 1 };
            let (burst, bound, own) = burst_check(t, el, count);
            if burst && !burst_check(t, el, count - 1).0 {
                fired.push(Fired {
                    rule: Rule::Burst,
                    key: format!("bin {bin}"),
                    score: count as f64 / bound as f64,
                    threshold: bound as f64,
                    why: format!(
                        "{count} events within {} min; no {} had more than {bound} in one such interval before{}",
                        BIN_NS / 60_000_000_000,
                        e.element_type,
                        own.map(|p| format!(", and at this element's own rate the chance is {p:.1e}")).unwrap_or_default()
                    ),
                    evidence: Vec::new(),
                });
            }
        }
        if let (Some((distance, nearest)), Some(t)) = (novelty, self.types.get(&e.element_type))
            && let Some(threshold) = t.novelty_threshold().filter(|th| distance > *th)
        {
            fired.push(Fired {
                rule: Rule::Novelty,
                key: format!("seq {}", e.seq),
                score: (distance / threshold) as f64,
                threshold: threshold as f64,
                why: format!(
                    "its nearest earlier {} event is {distance:.2} away; the type's last {} routine events were at most {threshold:.2} from theirs",
                    e.element_type,
                    t.novelty.len()
                ),
                evidence: vec![(nearest, Some(1.0 - distance))],
            });
        }
        let kind = kind_of(e);
        if let Some(k) = self.kinds.get(&kind).filter(|k| k.preceded >= PRECURSOR_SUPPORT && e.priority < Priority::Critical) {
            let confidence = k.preceded as f64 / k.total.max(1) as f64;
            if confidence >= PRECURSOR_CONFIDENCE {
                fired.push(Fired {
                    rule: Rule::Precursor,
                    key: format!("seq {}", e.seq),
                    score: confidence,
                    threshold: PRECURSOR_CONFIDENCE,
                    why: format!(
                        "events like this ({kind}) came before a critical event on their element within {} min {} of the {} times they occurred",
                        PRECURSOR_NS / 60_000_000_000,
                        k.preceded,
                        k.total
                    ),
                    evidence: k.criticals.iter().map(|s| (*s, None)).collect(),
                });
            }
        }
        fired
    }

    /// Learns from `e` (after it was scored). `novelty`: as for [`score`](Self::score).
    pub fn observe(&mut self, e: &EventRow, novelty: Option<f32>) {
        let own_name = e.element_id.split_once(':').map_or("", |(_, n)| n).to_owned();
        let t = self.types.entry(e.element_type.clone()).or_default();
        t.events += 1;
        if t.actions.len() < MAX_ACTIONS_PER_TYPE {
            t.actions.insert(e.action.clone());
        }
        let (updates, _) = state_updates(&e.details);
        for (field, value) in &updates {
            let Some(v) = shape(value, &own_name) else { continue };
            let entry = t.fields.entry(field.clone()).or_default();
            match entry {
                FieldValues::Empty => *entry = FieldValues::Few(HashSet::from([v]), 1),
                FieldValues::Few(seen, observed) => {
                    *observed += 1;
                    seen.insert(v);
                    if seen.len() > FEW_VALUES {
                        *entry = FieldValues::Many;
                    }
                }
                FieldValues::Many => {}
            }
        }
        if let Some(n) = novelty {
            if t.novelty.len() == NOVELTY_SAMPLES {
                t.novelty.pop_front();
            }
            t.novelty.push_back(n);
        }
        if self.elements.len() >= MAX_ELEMENTS && !self.elements.contains_key(&e.element_id) {
            self.forget_oldest_elements();
        }
        let el = self.elements.entry(e.element_id.clone()).or_insert(ElementStats {
            first_ts: e.ts,
            last_ts: e.ts,
            events: 0,
            bin: i64::MIN,
            in_bin: 0,
            recent: VecDeque::new(),
        });
        el.events += 1;
        el.last_ts = el.last_ts.max(e.ts);
        let bin = e.ts.div_euclid(BIN_NS);
        let t = self.types.get_mut(&e.element_type).expect("type entry made above");
        if el.bin == bin {
            el.in_bin += 1;
        } else {
            // A closed interval teaches the type how busy an element gets, unless it was a
            // burst itself (an anomaly does not become the norm).
            if el.in_bin > 0 && !burst_check(t, el, el.in_bin).0 {
                t.max_bin = t.max_bin.max(el.in_bin);
            }
            el.bin = bin;
            el.in_bin = 1;
        }
        while el.recent.front().is_some_and(|(ts, _)| *ts < e.ts - PRECURSOR_NS) {
            el.recent.pop_front();
        }
        let kind = kind_of(e);
        if e.priority == Priority::Critical {
            let before: HashSet<&String> = el.recent.iter().map(|(_, k)| k).collect();
            for k in before {
                if let Some(stats) = self.kinds.get_mut(k) {
                    stats.preceded += 1;
                    if stats.criticals.len() == 3 {
                        stats.criticals.pop_front();
                    }
                    stats.criticals.push_back(e.seq);
                }
            }
        } else {
            if el.recent.len() == 32 {
                el.recent.pop_front();
            }
            el.recent.push_back((e.ts, kind.clone()));
        }
        if self.kinds.len() < MAX_KINDS || self.kinds.contains_key(&kind) {
            self.kinds.entry(kind).or_default().total += 1;
        }
    }

    /// A detector that learned from `events` (in order), the novelty threshold from the
    /// newest [`NOVELTY_SAMPLES`] routine events of each type when `novelty` is wanted.
    fn learned(index: &Index, search: &SearchState, events: &[EventRow], novelty: bool) -> Result<Self> {
        let mut sampled: HashMap<&str, usize> = HashMap::new();
        let mut sample: HashSet<u64> = HashSet::new();
        for e in events.iter().rev().filter(|_| novelty) {
            let n = sampled.entry(e.element_type.as_str()).or_default();
            if *n < NOVELTY_SAMPLES {
                *n += 1;
                sample.insert(e.seq);
            }
        }
        let mut detector = Self::default();
        for e in events {
            let distance = if sample.contains(&e.seq) { novelty_of(index, search, e)?.map(|(d, _)| d) } else { None };
            detector.observe(e, distance);
        }
        Ok(detector)
    }

    /// Drops the half of the elements seen longest ago (memory bound).
    fn forget_oldest_elements(&mut self) {
        let mut last: Vec<i64> = self.elements.values().map(|e| e.last_ts).collect();
        last.sort_unstable();
        let cut = last[last.len() / 2];
        self.elements.retain(|_, e| e.last_ts > cut);
    }
}

/// The distance from event `e` to its nearest earlier event of the same type (by vector),
/// with that event's seq; `None` when `e` has no vector or nothing came before it.
fn novelty_of(index: &Index, search: &SearchState, e: &EventRow) -> Result<Option<(f32, u64)>> {
    nearest_earlier(index, search, e, NOVELTY_EF)
}

/// [`novelty_of`] with the graph walk's breadth chosen (the benchmark compares breadths).
pub fn nearest_earlier(index: &Index, search: &SearchState, e: &EventRow, ef_search: usize) -> Result<Option<(f32, u64)>> {
    let Some((_, vector)) = index.vectors_for(&[e.seq])?.into_iter().next() else { return Ok(None) };
    let filters =
        Filters { element_type: Some(e.element_type.clone()), until_ns: Some(e.ts), before_seq: Some(e.seq), ..Default::default() };
    let nearest = search.nearest_with_effort(index, &vector, 1, &filters, ef_search)?;
    Ok(nearest.into_iter().next().map(|(s, sim)| ((1.0 - sim).max(0.0), s)))
}

#[derive(Debug, Clone)]
pub struct AnomalyOptions {
    /// End of the window (ns); now by default.
    pub until_ns: i64,
    pub element_type: Option<String>,
    /// Days of history before the window the detector learns from.
    pub baseline_days: u32,
    /// Findings listed at most.
    pub limit: usize,
    /// Only these rules (all by default).
    pub rules: Vec<Rule>,
}

pub const DEFAULT_BASELINE_DAYS: u32 = 28;
pub const MAX_BASELINE_DAYS: u32 = 3660;
pub const DEFAULT_FINDINGS: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomaliesAnswer {
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
    pub baseline_since_unix_ms: i64,
    pub baseline_events: usize,
    pub scored_events: usize,
    pub findings: Vec<Finding>,
    /// Findings before the limit.
    pub total_findings: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Scores every event of the `window_ms` before `options.until_ns` after learning from the
/// baseline before the window.
pub fn detect(index: &Index, search: &SearchState, window_ms: u64, options: &AnomalyOptions) -> Result<AnomaliesAnswer> {
    let window_ns = ms_to_ns(check_window(window_ms)?);
    let until = options.until_ns;
    let since = until.saturating_sub(window_ns);
    let baseline_since = since.saturating_sub(options.baseline_days as i64 * 86_400 * 1_000_000_000);
    let mut notes = Vec::new();
    let (baseline_seqs, window_seqs, baseline_total, window_total) = {
        let catalog = search.catalog.read().expect("catalog lock");
        let (b, bt) = catalog.in_window(baseline_since, since.saturating_sub(1), None, 0, usize::MAX);
        let (w, wt) = catalog.in_window(since, until, None, 0, MAX_SCORED_EVENTS);
        (b, w, bt, wt)
    };
    let baseline_seqs = &baseline_seqs[baseline_seqs.len().saturating_sub(MAX_BASELINE_EVENTS)..];
    if baseline_total > baseline_seqs.len() {
        notes.push(format!("the baseline is the newest {} of {baseline_total} events before the window", baseline_seqs.len()));
    }
    if window_total > window_seqs.len() {
        notes.push(format!("the first {} of the window's {window_total} events were scored", window_seqs.len()));
    }
    let baseline = read_events(index, baseline_seqs)?;
    let mut detector = Detector::learned(index, search, &baseline, options.rules.contains(&Rule::Novelty))?;
    let window = read_events(index, &window_seqs)?;
    let mut open: HashMap<(Rule, String, String), usize> = HashMap::new();
    let mut findings: Vec<Finding> = Vec::new();
    for e in &window {
        let novelty = if options.rules.contains(&Rule::Novelty) { novelty_of(index, search, e)? } else { None };
        let in_scope = options.element_type.as_ref().is_none_or(|t| *t == e.element_type);
        if in_scope {
            for fired in detector.score(e, novelty).into_iter().filter(|f| options.rules.contains(&f.rule)) {
                let group = (fired.rule, e.element_id.clone(), fired.key.clone());
                let group = if fired.rule == Rule::FirstSeen { (fired.rule, e.element_type.clone(), fired.key.clone()) } else { group };
                if let Some(&at) = open.get(&group) {
                    findings[at].join(e.seq);
                    continue;
                }
                open.insert(group, findings.len());
                findings.push(fired.into_finding(index, e)?);
            }
            // A burst keeps collecting the element's events in its interval.
            let bin_key = (Rule::Burst, e.element_id.clone(), format!("bin {}", e.ts.div_euclid(BIN_NS)));
            if let Some(&at) = open.get(&bin_key)
                && findings[at].event.seq != e.seq
            {
                findings[at].join(e.seq);
            }
        }
        detector.observe(e, novelty.map(|(d, _)| d));
    }
    let total_findings = findings.len();
    findings.truncate(options.limit);
    if total_findings > findings.len() {
        notes.push(format!("{total_findings} findings; the first {} are listed", findings.len()));
    }
    Ok(AnomaliesAnswer {
        since_unix_ms: since.div_euclid(1_000_000),
        until_unix_ms: until.div_euclid(1_000_000),
        baseline_since_unix_ms: baseline_since.div_euclid(1_000_000),
        baseline_events: baseline.len(),
        scored_events: window.len(),
        findings,
        total_findings,
        notes,
    })
}

fn read_events(index: &Index, seqs: &[u64]) -> Result<Vec<EventRow>> {
    let (Some(first), Some(last)) = (seqs.first(), seqs.last()) else { return Ok(Vec::new()) };
    let wanted: HashSet<u64> = seqs.iter().copied().collect();
    let mut out = Vec::with_capacity(seqs.len());
    let mut after = first - 1;
    while after < *last {
        let chunk = index.events_after(after, 4096)?;
        let Some(end) = chunk.last().map(|e| e.seq) else { break };
        out.extend(chunk.into_iter().filter(|e| wanted.contains(&e.seq)));
        after = end;
    }
    Ok(out)
}

/// Counters of the live scorer, for `GetBlockchainStats`.
#[derive(Debug, Default, Serialize)]
pub struct LiveCounters {
    pub scored_seq: std::sync::atomic::AtomicU64,
    pub findings: std::sync::atomic::AtomicU64,
    pub signalled: std::sync::atomic::AtomicU64,
    /// Findings not signalled because the signal's rate limit was reached.
    pub suppressed: std::sync::atomic::AtomicU64,
}

/// Signals allowed: a bucket of [`SIGNAL_BURST`] refilled at [`SIGNALS_PER_SECOND`].
pub const SIGNAL_BURST: f64 = 20.0;
pub const SIGNALS_PER_SECOND: f64 = 2.0;

/// A token bucket for the signal.
pub struct SignalBudget {
    tokens: f64,
    last: std::time::Instant,
}

impl Default for SignalBudget {
    fn default() -> Self {
        Self { tokens: SIGNAL_BURST, last: std::time::Instant::now() }
    }
}

impl SignalBudget {
    pub fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * SIGNALS_PER_SECOND).min(SIGNAL_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Scores events as they are vectorized (the `AnomalyDetected` signal), with the state a
/// window detection would have: rebuilt at start from the baseline before now.
pub struct LiveScorer {
    detector: Detector,
    /// Events through this seq are learned.
    pub scored_seq: u64,
}

impl LiveScorer {
    /// Learns from the `baseline_days` before now (the newest [`MAX_BASELINE_EVENTS`]).
    pub fn rebuild(index: &Index, search: &SearchState, baseline_days: u32, now_ns: i64) -> Result<Self> {
        let since = now_ns.saturating_sub(baseline_days as i64 * 86_400 * 1_000_000_000);
        let seqs = search.catalog.read().expect("catalog lock").in_window(since, i64::MAX, None, 0, usize::MAX).0;
        let seqs = &seqs[seqs.len().saturating_sub(MAX_BASELINE_EVENTS)..];
        let events = read_events(index, seqs)?;
        let detector = Detector::learned(index, search, &events, true)?;
        // Events up to the newest learned one are not scored again.
        let scored_seq = events.last().map_or(index.covered_seq()?, |e| e.seq);
        Ok(Self { detector, scored_seq })
    }

    /// Scores and learns the events after `scored_seq` through `through` (vectorized ones);
    /// returns the findings, one per event and rule.
    pub fn advance(&mut self, index: &Index, search: &SearchState, through: u64) -> Result<Vec<Finding>> {
        let mut findings = Vec::new();
        while self.scored_seq < through {
            let chunk = index.events_after(self.scored_seq, (through - self.scored_seq).min(1024) as usize)?;
            let Some(last) = chunk.last().map(|e| e.seq) else { break };
            for e in chunk.iter().filter(|e| e.seq <= through) {
                let novelty = novelty_of(index, search, e)?;
                for fired in self.detector.score(e, novelty) {
                    findings.push(fired.into_finding(index, e)?);
                }
                self.detector.observe(e, novelty.map(|(d, _)| d));
            }
            self.scored_seq = last.min(through);
        }
        Ok(findings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64, ts_s: i64, element: &str, action: &str, priority: Priority, details: Value) -> EventRow {
        crate::analytics::fixtures::row(seq, ts_s * 1_000_000_000, element, action, priority, details)
    }

    #[test]
    fn shapes_mask_names_and_digits() {
        assert_eq!(shape(&json!("could not open vnet12 (No such device)"), "vnet12").unwrap(), "could not open <self> (No such device)");
        assert_eq!(shape(&json!("10.0.0.17/24"), "eth0").unwrap(), "#.#.#.#/#");
        assert_eq!(shape(&json!(9000), "eth0").unwrap(), "9000");
        assert!(shape(&json!(["a"]), "eth0").is_none());
    }

    #[test]
    fn poisson_tail_is_right() {
        assert!((poisson_tail(1, 1.0) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        assert!(poisson_tail(10, 0.1) < 1e-10);
        assert_eq!(poisson_tail(0, 3.0), 1.0);
    }

    #[test]
    fn rules_fire_on_what_is_new_and_stay_quiet_on_routine() {
        let mut d = Detector::default();
        let mut seq = 0;
        // A day of routine: 4 interfaces with MTU 1500 that go down and up now and then.
        for i in 0..200 {
            seq += 1;
            let element = format!("interface:eth{}", i % 4);
            let (action, state) = if i % 2 == 0 { ("link.down", "down") } else { ("link.up", "up") };
            let e = ev(seq, i * 400, &element, action, Priority::Medium, json!({"after": {"mtu": 1500, "link_state": state}}));
            assert!(d.score(&e, None).is_empty(), "routine event {i} fired");
            d.observe(&e, None);
        }
        // A new MTU value.
        seq += 1;
        let odd = ev(seq, 90_000, "interface:eth1", "link.up", Priority::Medium, json!({"after": {"mtu": 1450, "link_state": "up"}}));
        let fired = d.score(&odd, None);
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].rule, fired[0].key.as_str()), (Rule::FirstSeen, "mtu=1450"));
        // A burst: 10 events on one interface within a minute.
        let mut burst = Vec::new();
        for i in 0..10 {
            seq += 1;
            let e = ev(
                seq,
                100_000 + i,
                "interface:eth2",
                "link.down",
                Priority::Medium,
                json!({"after": {"mtu": 1500, "link_state": "down"}}),
            );
            burst.extend(d.score(&e, None).into_iter().map(|f| (i, f.rule)));
            d.observe(&e, None);
        }
        // Once, when the count passes the type's bound (5) and is improbable at eth2's rate.
        assert_eq!(burst.len(), 1, "{burst:?}");
        assert!(burst[0].0 >= 5 && burst[0].1 == Rule::Burst, "{burst:?}");
    }

    #[test]
    fn precursors_are_learned_from_the_past_only() {
        let mut d = Detector::default();
        let mut seq = 0;
        let mut next = |d: &mut Detector, ts: i64, action: &str, p: Priority| {
            seq += 1;
            let e = ev(seq, ts, "interface:eth0", action, p, json!({}));
            let fired: Vec<Rule> = d.score(&e, None).into_iter().map(|f| f.rule).collect();
            d.observe(&e, None);
            fired
        };
        for round in 0..3 {
            let t = round * 10_000;
            assert!(!next(&mut d, t, "carrier.lost", Priority::Medium).contains(&Rule::Precursor));
            next(&mut d, t + 60, "device.failed", Priority::Critical);
        }
        assert!(next(&mut d, 50_000, "carrier.lost", Priority::Medium).contains(&Rule::Precursor));
    }
}
