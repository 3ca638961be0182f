//! The keyword side of a search: BM25 over the FTS5 index, bounded at any history size, and
//! ordered by how many of the query's words an event holds.
//!
//! FTS5's BM25 reads every match of a word to weigh it, and a word such as "link" or
//! "interface" matches most of a large history (measured at 1M events: 850 ms to rank one such
//! word, 28 ms even within a window). So each word is first looked up newest-first, which stops
//! early. A word with at most [`WINDOW`] matches is rare: all its matches are candidates, ranked
//! by BM25 over the rare words. A common word's candidates are its newest [`WINDOW`] matches
//! (the answer says so; the semantic side always searches the whole history). Candidates are
//! ordered by how many of the query's words they hold (known exactly from those lists), then
//! BM25, then the newest first.

use super::SearchState;
use super::query::Plan;
use crate::index::Index;
use crate::vector::Filters;
use anyhow::Result;
use std::collections::HashMap;

/// One keyword candidate.
pub(super) struct KeywordMatch {
    pub seq: u64,
    /// BM25 over the rare words (0 when it holds none of them).
    pub bm25: f64,
    /// Positions in the plan's words of those it holds.
    pub words: Vec<usize>,
}

/// Candidates the keyword side gives to the fusion.
const CANDIDATES: usize = 60;
/// Matches read when filters must be applied after the match (most may not pass).
const FILTERED: usize = 2000;
/// A word with more matches than this is common: ranked among its newest this-many.
const WINDOW: usize = 500;

impl SearchState {
    /// Keyword matches passing the filters, best first, each with the positions of the
    /// query's words it holds, and a note when common words were matched in a window.
    pub(super) fn keywords(&self, index: &Index, plan: &Plan, filters: &Filters) -> Result<(Vec<KeywordMatch>, Option<String>)> {
        let want = if filters.is_empty() { CANDIDATES } else { FILTERED };
        let groups: Vec<&str> = plan.term_queries.iter().map(|(_, q)| q.as_str()).collect();
        let lists: Vec<Vec<u64>> = groups.iter().map(|g| index.lexical_newest(g, WINDOW + 1)).collect::<Result<_, _>>()?;
        let rare: Vec<&str> = groups.iter().zip(&lists).filter(|(_, l)| l.len() <= WINDOW).map(|(g, _)| *g).collect();
        let scores: HashMap<u64, f64> =
            if rare.is_empty() { HashMap::new() } else { index.lexical_search(&rare.join(" OR "), want)?.into_iter().collect() };
        // Every list holds all of its word's matches from `window_from` on.
        let window_from = lists.iter().filter(|l| l.len() > WINDOW).map(|l| l[WINDOW - 1]).max().unwrap_or(0);
        let mut held: HashMap<u64, Vec<usize>> = HashMap::new();
        // Older matches of rare words: which of the rare words' (complete) lists hold them.
        let mut older: HashMap<u64, Vec<usize>> = HashMap::new();
        for (word, list) in lists.iter().enumerate() {
            for seq in list.iter().take(WINDOW) {
                if *seq >= window_from {
                    held.entry(*seq).or_default().push(word);
                } else if list.len() <= WINDOW {
                    older.entry(*seq).or_default().push(word);
                }
            }
        }
        for seq in scores.keys() {
            if !held.contains_key(seq) {
                held.insert(*seq, older.remove(seq).unwrap_or_default());
            }
        }
        let mut ranked: Vec<KeywordMatch> =
            held.into_iter().map(|(seq, words)| KeywordMatch { seq, bm25: scores.get(&seq).copied().unwrap_or(0.0), words }).collect();
        if !filters.is_empty() {
            let catalog = self.catalog.read().expect("catalog lock");
            let compiled = catalog.compile(filters);
            ranked.retain(|m| compiled.accepts(m.seq));
        }
        ranked.sort_by(|a, b| b.words.len().cmp(&a.words.len()).then(b.bm25.total_cmp(&a.bm25)).then(b.seq.cmp(&a.seq)));
        ranked.truncate(CANDIDATES);
        let common: Vec<&str> =
            plan.term_queries.iter().zip(&lists).filter(|(_, l)| l.len() > WINDOW).map(|((word, _), _)| word.as_str()).collect();
        let note = (!common.is_empty()).then(|| {
            format!(
                "common words ({}) were matched among the newest {WINDOW} events holding each; the search by meaning covered the whole history",
                common.join(", ")
            )
        });
        Ok((ranked, note))
    }
}
