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
use crate::vector::Filters;
use anyhow::Result;
use std::collections::HashMap;

/// Candidates the keyword side gives to the fusion.
const CANDIDATES: usize = 60;
/// Matches read when filters must be applied after the match (most may not pass).
const FILTERED: usize = 2000;
/// A word with more matches than this is common: ranked among its newest this-many.
const WINDOW: usize = 500;

impl SearchState {
    /// Keyword matches passing the filters, best first, and a note when common words were
    /// matched in a window.
    pub(super) fn keywords(&self, plan: &Plan, filters: &Filters) -> Result<(Vec<(u64, f64)>, Option<String>)> {
        let want = if filters.is_empty() { CANDIDATES } else { FILTERED };
        let groups: Vec<&str> = plan.term_queries.iter().map(|(_, q)| q.as_str()).collect();
        let (lists, scores) = self.readers.with(|index| {
            let lists: Vec<Vec<u64>> = groups.iter().map(|g| index.lexical_newest(g, WINDOW + 1)).collect::<Result<_, _>>()?;
            let rare: Vec<&str> = groups.iter().zip(&lists).filter(|(_, l)| l.len() <= WINDOW).map(|(g, _)| *g).collect();
            let scores: HashMap<u64, f64> =
                if rare.is_empty() { HashMap::new() } else { index.lexical_search(&rare.join(" OR "), want)?.into_iter().collect() };
            Ok((lists, scores))
        })?;
        // Every list holds all of its word's matches from `window_from` on.
        let window_from = lists.iter().filter(|l| l.len() > WINDOW).map(|l| l[WINDOW - 1]).max().unwrap_or(0);
        let mut coverage: HashMap<u64, usize> = HashMap::new();
        for list in &lists {
            for seq in list.iter().take(WINDOW).filter(|s| **s >= window_from) {
                *coverage.entry(*seq).or_default() += 1;
            }
        }
        // Older matches of rare words: their coverage among the rare words' (complete) lists.
        for seq in scores.keys().filter(|s| !coverage.contains_key(s)).copied().collect::<Vec<_>>() {
            let held = lists.iter().filter(|l| l.len() <= WINDOW && l.contains(&seq)).count();
            coverage.insert(seq, held);
        }
        let mut ranked: Vec<(u64, usize, f64)> =
            coverage.into_iter().map(|(seq, n)| (seq, n, scores.get(&seq).copied().unwrap_or(0.0))).collect();
        if !filters.is_empty() {
            let catalog = self.catalog.read().expect("catalog lock");
            let compiled = catalog.compile(filters);
            ranked.retain(|(seq, _, _)| compiled.accepts(*seq));
        }
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(b.0.cmp(&a.0)));
        ranked.truncate(CANDIDATES);
        let common: Vec<&str> =
            plan.term_queries.iter().zip(&lists).filter(|(_, l)| l.len() > WINDOW).map(|((word, _), _)| word.as_str()).collect();
        let note = (!common.is_empty()).then(|| {
            format!(
                "common words ({}) were matched among the newest {WINDOW} events holding each; the search by meaning covered the whole history",
                common.join(", ")
            )
        });
        Ok((ranked.into_iter().map(|(seq, n, score)| (seq, n as f64 + score / (1.0 + score))).collect(), note))
    }
}
