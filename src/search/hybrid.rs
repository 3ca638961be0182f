//! Hybrid retrieval: the sentence model's nearest events and the keyword side's best matches
//! (`keywords`), both under the same filters (and the query's time window), fused by
//! reciprocal rank, then ranked lower where the change went the other way than the query asks
//! (`direction`); near-duplicates (the same element, action and changed fields) collapse into
//! one hit listing the others; each hit says what changed and why it matched.

use super::direction::{self, Direction};
use super::query::Plan;
use super::time::TimeWindow;
use super::{Scoring, SearchState};
use crate::event::Priority;
use crate::index::{EventRow, Index, list_changes};
use crate::text::facts;
use crate::vector::Filters;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Candidates taken from the semantic side before fusing (the keyword side: `keywords`).
const SEMANTIC_CANDIDATES: usize = 30;
/// Reciprocal-rank fusion: `weight / (K + rank)` from each side.
const RRF_K: f64 = 10.0;
const SEMANTIC_WEIGHT: f64 = 1.0;
const LEXICAL_WEIGHT: f64 = 3.0;
/// Fused candidates read from the index and re-ranked (at least; four times the limit if more).
const RERANKED: usize = 40;
/// A candidate whose change went the other way than the query asks ("added" for "removed")
/// keeps this share of its score.
const OTHER_DIRECTION: f64 = 0.5;
/// When the query asks about failures ("failed to activate"), a candidate that is not a failure
/// (a deactivation, a removal) keeps this share of its score.
const NOT_A_FAILURE: f64 = 0.75;
/// When the query names an element ("link down on ens3"), a candidate of another element
/// keeps this share of its score.
const OTHER_ELEMENT: f64 = 0.5;

/// How deep one search goes: its candidate pools.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Depth {
    /// Nearest events taken from the semantic side (each re-scored exactly from
    /// `RERANK_FACTOR` times as many graph candidates).
    pub semantic: usize,
    /// The graph walk's breadth, when narrower than the configured `vector.ef_search`.
    pub ef_search: Option<usize>,
    /// How the semantic side's nearest are scored.
    pub scoring: Scoring,
    /// Fused candidates read from the index and re-ranked.
    pub rows: usize,
}

/// The graph walk's breadth for one of several searches merged into one answer.
const MERGED_EF_SEARCH: usize = 48;

impl Depth {
    /// A search answered on its own.
    pub fn full(limit: usize) -> Self {
        Self { semantic: SEMANTIC_CANDIDATES.max(limit * 3), ef_search: None, scoring: Scoring::Stored, rows: RERANKED.max(limit * 4) }
    }

    /// One of several searches (a replica's origins) merged by their rank scores: only the
    /// first few hits of each can reach the merged answer, so each goes a third as deep on
    /// the semantic side and half as deep in rows, and scores the graph's candidates from
    /// its 8-bit copies instead of reading thirty stored vectors in every origin (the merged
    /// hits' similarities are made exact afterwards; measured against `full` in
    /// benches/REPORT.md, "The fleet").
    pub fn merged(limit: usize) -> Self {
        Self {
            semantic: limit.max(SEMANTIC_CANDIDATES / 3),
            ef_search: Some(MERGED_EF_SEARCH),
            scoring: Scoring::Codes,
            rows: (limit * 2).max(RERANKED / 2),
        }
    }
}

/// The name part of an element id (`interface:ens3` → `ens3`), lowercased.
fn element_name(element_id: &str) -> String {
    element_id.split_once(':').map_or(element_id, |(_, name)| name).to_lowercase()
}

/// The query's words that are the name of an element among `candidates`: a query naming
/// an element asks about that element.
fn named_elements<'a>(plan: &Plan, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let names: std::collections::HashSet<String> = candidates.map(element_name).collect();
    plan.term_queries.iter().map(|(word, _)| word.clone()).filter(|w| names.contains(w)).collect()
}

/// One field an event changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    pub field: String,
    pub before: String,
    pub after: String,
}

impl Hit {
    /// The order of hits merged from several searches (a replica's origins, a fleet's
    /// daemons): each search's scores are rank scores within it, so the higher score first,
    /// ties to the closer meaning.
    pub fn merged_order(a: &Hit, b: &Hit) -> std::cmp::Ordering {
        b.score.total_cmp(&a.score).then_with(|| b.why.semantic.unwrap_or(0.0).total_cmp(&a.why.semantic.unwrap_or(0.0)))
    }
}

impl Change {
    /// Every change an event's details describe, whatever their field names (`text::facts`).
    pub fn all_in(details: &serde_json::Value) -> Vec<Change> {
        facts(details).into_iter().filter_map(|f| f.before.map(|before| Change { field: f.field, before, after: f.after })).collect()
    }
}

/// Why a hit was found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Why {
    /// Cosine similarity to the query, when the sentence model found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic_rank: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical_rank: Option<usize>,
    /// The query's words (or their synonyms) the event holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<String>,
}

/// One search result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hit {
    /// Fused rank score, 0 to 1 (1: first on both sides).
    pub score: f32,
    pub seq: u64,
    pub ts: i64,
    pub element_id: String,
    pub element_type: String,
    pub action: String,
    pub priority: Priority,
    pub source: String,
    pub summary: String,
    pub hash: String,
    /// The fields the event changed, before and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    #[serde(default)]
    pub why: Why,
    /// More events of the same element and action that matched (collapsed into this hit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub similar: Vec<u64>,
    /// The host that recorded the event (on a replica; seqs are that host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A search's answer: the hits and what the query was taken to mean.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Answer {
    pub hits: Vec<Hit>,
    /// The text given to the sentence model.
    pub semantic_query: String,
    /// The words looked for in the lexical index.
    pub terms: Vec<String>,
    /// The direction of change the query asks about; hits going the other way rank lower.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// The query asks about failures: events that are not failures rank lower.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failures: bool,
    /// The time window read from the query, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<AnswerTime>,
    /// Events the search cannot find by meaning yet (recorded, not yet embedded).
    pub not_vectorized: u64,
    /// Assumptions and anything that limited the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// On a replica: how fresh each origin's answer is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<Freshness>,
}

/// How fresh a replica's copy of one origin (a primary's history) is: the verified snapshot
/// it answers from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Freshness {
    pub host: String,
    /// The primary's checkpoint verifier key, pinned on first sight: the origin's stable id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_id: String,
    pub head_seq: u64,
    pub head_hash: String,
    /// Events through this seq can be found by meaning.
    pub vectorized_seq: u64,
    pub snapshot: String,
    /// When the primary cut the snapshot.
    pub snapshot_unix_ms: i64,
    /// How old the snapshot is at the answer.
    pub age_ms: i64,
}

/// The time window of an answer, for people and for scripts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AnswerTime {
    pub phrase: String,
    pub since_unix_ms: i64,
    pub until_unix_ms: i64,
    pub since: String,
    pub until: String,
}

impl Answer {
    /// Says how many of the newest events cannot be found by meaning yet, and what will
    /// embed them (`until`: "they are being embedded now", "run `ovs-port-agent reembed`").
    pub fn note_unvectorized(&mut self, n: u64, until: &str) {
        self.not_vectorized = n;
        if n > 0 {
            self.notes.push(format!("{n} of the newest events are not embedded yet, so only their words can be found ({until})"));
        }
    }
}

impl AnswerTime {
    pub fn of(w: &TimeWindow) -> Self {
        let rfc = |ns: i64| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64)).to_string()
        };
        Self {
            phrase: w.phrase.clone(),
            since_unix_ms: w.since_ns / 1_000_000,
            until_unix_ms: w.until_ns / 1_000_000,
            since: rfc(w.since_ns),
            until: rfc(w.until_ns),
        }
    }
}

impl SearchState {
    /// The `limit` best events for a query plan (and its embedding, when it has words).
    pub fn hybrid(&self, plan: &Plan, vector: Option<&[f32]>, limit: usize, filters: &Filters) -> Result<Answer> {
        self.hybrid_at(plan, vector, limit, filters, Depth::full(limit))
    }

    /// [`hybrid`](Self::hybrid) with the candidate pools of `depth`.
    pub fn hybrid_at(&self, plan: &Plan, vector: Option<&[f32]>, limit: usize, filters: &Filters, depth: Depth) -> Result<Answer> {
        // One reader connection for the whole search (its page cache warm for every side).
        self.readers.with(|index| self.hybrid_in(index, plan, vector, limit, filters, depth))
    }

    fn hybrid_in(
        &self,
        index: &Index,
        plan: &Plan,
        vector: Option<&[f32]>,
        limit: usize,
        filters: &Filters,
        depth: Depth,
    ) -> Result<Answer> {
        let mut filters = filters.clone();
        if let Some(w) = &plan.time {
            filters.since_ns = Some(filters.since_ns.map_or(w.since_ns, |s| s.max(w.since_ns)));
            filters.until_ns = Some(filters.until_ns.map_or(w.until_ns, |u| u.min(w.until_ns)));
        }
        let mut answer = Answer {
            semantic_query: plan.semantic.clone(),
            terms: plan.terms.clone(),
            direction: plan.direction,
            failures: plan.failure,
            time: plan.time.as_ref().map(AnswerTime::of),
            notes: plan.notes.clone(),
            ..Default::default()
        };
        let semantic = match vector {
            Some(v) if !plan.semantic.is_empty() => {
                let ef_search = depth.ef_search.map_or(self.ef_search, |ef| ef.min(self.ef_search));
                self.nearest_scored(index, v, depth.semantic, &filters, ef_search, depth.scoring)?
            }
            _ => Vec::new(),
        };
        let lexical = match &plan.lexical {
            Some(_) => {
                let (matches, note) = self.keywords(index, plan, &filters)?;
                answer.notes.extend(note);
                matches
            }
            None => Vec::new(),
        };
        if semantic.is_empty() && lexical.is_empty() && plan.lexical.is_none() {
            // Only a time: the newest events in the window.
            answer.notes.push("the query names only a time: the newest events in that window".into());
            let newest = self.rows(index, self.newest(&filters, limit)?.into_iter().map(|seq| (seq, 0.0, Why::default())).collect())?;
            answer.hits = Self::hits(newest, limit);
            return Ok(answer);
        }
        let mut fused: HashMap<u64, (f64, Why)> = HashMap::new();
        for (rank, (seq, score)) in semantic.iter().enumerate() {
            let entry = fused.entry(*seq).or_default();
            entry.0 += SEMANTIC_WEIGHT / (RRF_K + rank as f64 + 1.0);
            entry.1.semantic = Some(*score);
            entry.1.semantic_rank = Some(rank + 1);
        }
        for (rank, m) in lexical.iter().enumerate() {
            let entry = fused.entry(m.seq).or_default();
            entry.0 += LEXICAL_WEIGHT / (RRF_K + rank as f64 + 1.0);
            entry.1.lexical_rank = Some(rank + 1);
            entry.1.terms = m.words.iter().map(|i| plan.term_queries[*i].0.clone()).collect();
        }
        let best = (SEMANTIC_WEIGHT + LEXICAL_WEIGHT) / (RRF_K + 1.0);
        let mut fused: Vec<(u64, f64, Why)> = fused.into_iter().map(|(seq, (score, why))| (seq, score / best, why)).collect();
        fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        // Only the best few are read and re-ranked (details can be 64 KiB each).
        fused.truncate(depth.rows);
        let mut ranked = self.rows(index, fused)?;
        if let Some(wanted) = plan.direction {
            for c in &mut ranked {
                if direction::of_event(&c.row.action, c.changes.first()).is_some_and(|d| d != wanted) {
                    c.score *= OTHER_DIRECTION;
                }
            }
        }
        if plan.failure {
            for c in &mut ranked {
                if !direction::event_is_failure(&c.row.action, c.changes.first()) {
                    c.score *= NOT_A_FAILURE;
                }
            }
        }
        let named = named_elements(plan, ranked.iter().map(|c| c.row.element_id.as_str()));
        if !named.is_empty() {
            for c in &mut ranked {
                if !named.contains(&element_name(&c.row.element_id)) {
                    c.score *= OTHER_ELEMENT;
                }
            }
        }
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.row.seq.cmp(&a.row.seq)));
        answer.hits = Self::hits(ranked, limit);
        Ok(answer)
    }

    /// The newest events passing the filters.
    fn newest(&self, filters: &Filters, limit: usize) -> Result<Vec<u64>> {
        let catalog = self.catalog.read().expect("catalog lock");
        let compiled = catalog.compile(filters);
        Ok(compiled.newest(limit.saturating_mul(4)))
    }

    /// The index rows of scored events, with what each changed (events not in the index are
    /// left out).
    fn rows(&self, index: &Index, scored: Vec<(u64, f64, Why)>) -> Result<Vec<Candidate>> {
        let mut out = Vec::with_capacity(scored.len());
        for (seq, score, why) in scored {
            if let Some(row) = index.event(seq)? {
                let changes = Change::all_in(&row.details);
                out.push(Candidate { row, score, why, changes });
            }
        }
        Ok(out)
    }

    /// Hits for the ranked events, near-duplicates collapsed, at most `limit`.
    fn hits(ranked: Vec<Candidate>, limit: usize) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::with_capacity(limit);
        let mut groups: HashMap<(String, String), usize> = HashMap::new();
        for c in ranked {
            // Near-duplicates: the same element, the same action, the same fields changed to the
            // same values (connectivity lost four times; not lost and then restored; not two
            // different ports joining one bridge).
            let mut changed: Vec<String> = c.changes.iter().map(|ch| format!("{}={}", ch.field, ch.after)).collect();
            // A list changed by items ("port vnet7 joined the bridge"): which items.
            for (field, added, removed) in list_changes(&c.row.details) {
                changed.push(format!("{field}+{added:?}-{removed:?}"));
            }
            let key = (c.row.element_id.clone(), format!("{} {}", c.row.action, changed.join(",")));
            if let Some(&at) = groups.get(&key) {
                hits[at].similar.push(c.row.seq);
                continue;
            }
            if hits.len() < limit {
                groups.insert(key, hits.len());
                hits.push(hit(c));
            }
        }
        hits
    }
}

/// A fused candidate read from the index.
struct Candidate {
    row: EventRow,
    score: f64,
    why: Why,
    /// Every field the event changed, before and after.
    changes: Vec<Change>,
}

fn hit(c: Candidate) -> Hit {
    let Candidate { row, score, why, mut changes } = c;
    changes.truncate(8);
    Hit {
        score: score as f32,
        seq: row.seq,
        ts: row.ts,
        element_id: row.element_id,
        element_type: row.element_type,
        action: row.action,
        priority: row.priority,
        source: row.source,
        summary: row.summary,
        hash: row.hash,
        changes,
        why,
        similar: Vec::new(),
        host: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(seq: u64, action: &str, details: serde_json::Value) -> Candidate {
        let row = EventRow {
            seq,
            ts: 0,
            element_id: "bridge:br0".into(),
            element_type: "bridge".into(),
            action: action.into(),
            priority: Priority::Medium,
            source: "ovsdb".into(),
            hash: String::new(),
            summary: String::new(),
            details: details.clone(),
        };
        Candidate { row, score: 1.0, why: Why::default(), changes: Change::all_in(&details) }
    }

    #[test]
    fn different_ports_joining_one_bridge_are_different_hits_the_same_change_twice_is_one() {
        use serde_json::json;
        let joined = |seq, port: &str| {
            candidate(seq, "port.added", json!({"port": port, "added": {"ports": [port]}, "after": {}, "changed": ["ports"]}))
        };
        let hits = SearchState::hits(vec![joined(3, "vnet7"), joined(2, "vnet8"), joined(1, "vnet7")], 10);
        assert_eq!(hits.iter().map(|h| (h.seq, h.similar.clone())).collect::<Vec<_>>(), vec![(3, vec![1]), (2, vec![])]);
    }

    #[test]
    fn a_merged_search_goes_shallower_but_never_below_its_limit() {
        let (full, merged) = (Depth::full(10), Depth::merged(10));
        assert!(merged.semantic < full.semantic && merged.rows < full.rows && merged.ef_search.is_some());
        assert!(Depth::merged(50).semantic >= 50 && Depth::merged(50).rows >= 50);
    }

    #[test]
    fn a_word_naming_a_candidates_element_is_a_named_element() {
        let plan = crate::search::plan("physical link went down on ens3", 0, 0).unwrap();
        let named = named_elements(&plan, ["interface:ens3", "interface:eno1", "nm:manager"].into_iter());
        assert_eq!(named, vec!["ens3"]);
        assert!(named_elements(&plan, ["interface:eno1"].into_iter()).is_empty());
    }
}
