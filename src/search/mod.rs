//! Search: a query is read into a plan (`query`: a time window from `time`, a keyword query
//! with the domain's synonyms from `thesaurus`, the text for the sentence model, the
//! direction of the change asked about from `direction`), then both sides are searched and
//! fused (`hybrid`). The semantic side is k-NN in the HNSW graph with
//! filters applied during traversal, or an exact scan when the filters leave few candidates
//! (where a filtered graph walk would miss them). `load` brings the graph and the filter
//! catalog back from the index at start.

mod direction;
mod hybrid;
mod keywords;
mod load;
mod query;
mod thesaurus;
mod time;

pub use direction::{Direction, of_event as event_direction};
pub use hybrid::{Answer, AnswerTime, Change, Depth, Freshness, Hit, Why};
pub use load::{catalog_events_after, insert_stored_after, load_graph};
pub use query::{MAX_QUERY_BYTES, Plan, Unsearchable, plan};
pub use time::{TimeWindow, local_utc_offset};

use crate::index::Index;
use crate::vector::{Catalog, Filters, VectorIndex, dot};
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// At most this many candidates are scored exactly; beyond it the graph is searched.
const EXACT_SCAN_LIMIT: usize = 4096;
/// The graph ranks with 8-bit vectors; this many times the wanted hits are taken from it
/// and re-scored with the exact f32 vectors, so near ties are ordered right.
const RERANK_FACTOR: usize = 3;

/// How the semantic side scores the graph's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// Exactly, from the stored f32 vectors of three times as many candidates as wanted
    /// (each a read of the index).
    Stored,
    /// From the graph's 8-bit copies against the exact query (`VectorIndex::search_refined`):
    /// nothing read, scores within 0.005 of the exact ones.
    Codes,
}

/// Which index file readers open, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// The live index another connection writes: read-only connections that see its WAL.
    Live,
    /// A file inside a read-only snapshot: opened `immutable`.
    Snapshot,
}

/// At most this many read connections at once: searches beyond them wait their turn, so a
/// flood of queries costs waiting, not a connection (and its page cache) per query.
const MAX_READERS: usize = CONCURRENT_SEARCHES;

/// Read-only SQLite connections, reused across searches, at most [`MAX_READERS`].
pub struct Readers {
    path: PathBuf,
    mode: ReadMode,
    pool: Mutex<ReaderPool>,
    returned: Condvar,
}

#[derive(Default)]
struct ReaderPool {
    idle: Vec<Index>,
    open: usize,
}

impl Readers {
    pub fn new(path: &Path, mode: ReadMode) -> Self {
        Self { path: path.to_owned(), mode, pool: Mutex::new(ReaderPool::default()), returned: Condvar::new() }
    }

    /// Runs `f` with a connection: an idle one, a new one while fewer than the limit are
    /// open, else the next one returned. (`f` must not call `with` again.)
    pub fn with<T>(&self, f: impl FnOnce(&Index) -> Result<T>) -> Result<T> {
        let reader = {
            let mut pool = self.pool.lock().expect("readers lock");
            loop {
                if let Some(reader) = pool.idle.pop() {
                    break Some(reader);
                }
                if pool.open < MAX_READERS {
                    pool.open += 1;
                    break None;
                }
                pool = self.returned.wait(pool).expect("readers lock");
            }
        };
        let reader = match reader {
            Some(r) => r,
            None => {
                let opened = match self.mode {
                    ReadMode::Snapshot => Index::open_snapshot(&self.path),
                    ReadMode::Live => Index::open_read_only(&self.path),
                };
                match opened {
                    Ok(r) => r,
                    Err(e) => {
                        self.pool.lock().expect("readers lock").open -= 1;
                        self.returned.notify_one();
                        return Err(e.into());
                    }
                }
            }
        };
        let lent = Lent { readers: self, reader: Some(reader) };
        // Searches and analyses compute for milliseconds: a woken bus thread goes first.
        let _throughput = crate::sched::Throughput::enter();
        f(lent.reader.as_ref().expect("a lent connection"))
    }
}

/// A connection [`Readers::with`] lent out, given back when dropped: also when `f` panics,
/// so a search that panics does not take a connection with it for good.
struct Lent<'a> {
    readers: &'a Readers,
    reader: Option<Index>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            // The pool is never left half-changed, so a poisoned lock still holds a sound one.
            self.readers.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).idle.push(reader);
            self.readers.returned.notify_one();
        }
    }
}

/// Searches running at once, each on a blocking thread. More wait for a slot as tasks: a
/// flood must not become hundreds of parked threads, each keeping its allocator's memory.
pub const CONCURRENT_SEARCHES: usize = 4;

/// Everything a search needs besides the query vector.
pub struct SearchState {
    pub graph: RwLock<Arc<VectorIndex>>,
    /// Shared between a replica's successive snapshots, like the graph (both only grow).
    pub catalog: Arc<RwLock<Catalog>>,
    pub readers: Readers,
    pub ef_search: usize,
    /// Taken before a search's blocking part runs.
    pub slots: tokio::sync::Semaphore,
}

impl SearchState {
    pub fn new(graph: VectorIndex, catalog: Arc<RwLock<Catalog>>, readers: Readers, ef_search: usize) -> Self {
        Self { graph: RwLock::new(Arc::new(graph)), catalog, readers, ef_search, slots: tokio::sync::Semaphore::new(CONCURRENT_SEARCHES) }
    }

    /// A query answered now, synchronously, its embedding made by `embed` (outside the
    /// daemon's pool: offline search and replicas).
    pub fn answer_now(
        &self,
        query: &str,
        limit: usize,
        filters: &Filters,
        embed: impl FnOnce(&str) -> Result<Arc<[f32]>>,
    ) -> Result<Answer> {
        let plan = plan(query, crate::event::now_ns(), local_utc_offset())?;
        let vector = if plan.semantic.is_empty() { None } else { Some(embed(&plan.semantic)?) };
        self.hybrid(&plan, vector.as_deref(), limit, filters)
    }

    /// `(seq, score)` of the nearest vectors passing the filters.
    pub fn nearest(&self, query: &[f32], limit: usize, filters: &Filters) -> Result<Vec<(u64, f32)>> {
        self.readers.with(|index| self.nearest_in(index, query, limit, filters))
    }

    /// [`nearest`](Self::nearest), reading exact vectors through `index` (for callers that
    /// already hold a connection).
    pub fn nearest_in(&self, index: &Index, query: &[f32], limit: usize, filters: &Filters) -> Result<Vec<(u64, f32)>> {
        self.nearest_with_effort(index, query, limit, filters, self.ef_search)
    }

    /// [`nearest_in`](Self::nearest_in) with the graph walk's breadth `ef_search` chosen by
    /// the caller: a narrower walk for callers that need the nearest few, often.
    pub fn nearest_with_effort(
        &self,
        index: &Index,
        query: &[f32],
        limit: usize,
        filters: &Filters,
        ef_search: usize,
    ) -> Result<Vec<(u64, f32)>> {
        self.nearest_scored(index, query, limit, filters, ef_search, Scoring::Stored)
    }

    /// [`nearest_with_effort`](Self::nearest_with_effort), the graph's candidates scored as
    /// `scoring` says.
    pub fn nearest_scored(
        &self,
        index: &Index,
        query: &[f32],
        limit: usize,
        filters: &Filters,
        ef_search: usize,
        scoring: Scoring,
    ) -> Result<Vec<(u64, f32)>> {
        let graph = self.graph.read().expect("graph lock").clone();
        let wanted = match scoring {
            Scoring::Stored => limit.saturating_mul(RERANK_FACTOR),
            Scoring::Codes => limit,
        };
        let walk = |accept: Option<&dyn Fn(u64) -> bool>| match scoring {
            Scoring::Stored => graph.search(query, wanted, ef_search.max(wanted), accept),
            Scoring::Codes => graph.search_refined(query, wanted, ef_search.max(wanted), accept),
        };
        let found = if filters.is_empty() {
            walk(None)
        } else {
            let catalog = self.catalog.read().expect("catalog lock");
            let compiled = catalog.compile(filters);
            match compiled.matching(EXACT_SCAN_LIMIT) {
                // Few events pass the filters: each is scored exactly (a filtered walk
                // through a mostly rejected graph would miss them).
                Some(candidates) => {
                    drop(catalog);
                    return self.exact_top(index, query, &candidates, limit);
                }
                None => {
                    let accept = |seq: u64| compiled.accepts(seq);
                    walk(Some(&accept))
                }
            }
        };
        match scoring {
            Scoring::Stored => self.rescore(index, query, &found, limit),
            Scoring::Codes => Ok(found),
        }
    }

    /// The best `limit` of the graph's candidates by exact score.
    fn rescore(&self, index: &Index, query: &[f32], candidates: &[(u64, f32)], limit: usize) -> Result<Vec<(u64, f32)>> {
        let seqs: Vec<u64> = candidates.iter().map(|(seq, _)| *seq).collect();
        self.exact_top(index, query, &seqs, limit)
    }

    /// Scores `seqs` with their stored f32 vectors; the best `limit`, ties by `seq`.
    fn exact_top(&self, index: &Index, query: &[f32], seqs: &[u64], limit: usize) -> Result<Vec<(u64, f32)>> {
        let mut scored = Self::exact_scores(index, query, seqs)?;
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(limit);
        Ok(scored)
    }

    /// The exact similarity of `query` to the stored vector of each of `seqs` that has one,
    /// in seq order.
    pub fn exact_scores(index: &Index, query: &[f32], seqs: &[u64]) -> Result<Vec<(u64, f32)>> {
        Ok(index.vectors_for(seqs)?.iter().map(|(seq, v)| (*seq, dot(query, v))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_lent_to_a_search_that_panics_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        drop(Index::open(&path).unwrap());
        let readers = Readers::new(&path, ReadMode::Live);
        // More panics than there are connections: without the connection coming back,
        // the last would wait for one forever.
        for _ in 0..=MAX_READERS {
            let search = || readers.with(|_| -> Result<()> { panic!("a search panics") });
            assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(search)).is_err());
        }
        let pool = readers.pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        assert_eq!((pool.open, pool.idle.len()), (1, 1), "one connection, back in the pool");
    }
}
