//! The `events_fts` table: every event's words for keyword search (SQLite FTS5, ranked by
//! BM25), kept by the same transactions as the events themselves, so it is always in the same
//! consistent cut. Contentless (`content=''`): it stores the index, not a second copy of the
//! text. Names, addresses and numbers are tokens like any word (`192.168.0.1` is the phrase
//! `192 168 0 1`); the Porter stemmer lets `failed` find `failure`.

use super::{Index, IndexResult};
use crate::text::{facts, words};
use rusqlite::{Transaction, params};
use serde_json::Value;

pub(super) const SCHEMA: &str =
    "CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(body, content='', tokenize='porter unicode61 remove_diacritics 2');";

/// The words of an event the lexical index holds: its element (as written and as words),
/// type, action, source, summary, and every fact of its details with raw values.
pub fn lexical_text(element_id: &str, element_type: &str, action: &str, source: &str, summary: &str, details: &Value) -> String {
    let mut text = format!("{element_id} {} {} {} {summary}", words(element_type), words(action), words(source));
    for fact in facts(details) {
        text.push_str(" | ");
        text.push_str(&fact.text());
    }
    text
}

pub(super) fn insert_lexical(tx: &Transaction<'_>, seq: u64, body: &str) -> IndexResult<()> {
    tx.prepare_cached("INSERT INTO events_fts(rowid, body) VALUES (?1, ?2)")?.execute(params![seq as i64, body])?;
    Ok(())
}

pub(super) fn clear_lexical(conn: &rusqlite::Connection) -> IndexResult<()> {
    conn.execute("INSERT INTO events_fts(events_fts) VALUES('delete-all')", [])?;
    Ok(())
}

impl Index {
    /// The events matching an FTS5 query expression, best first, with their BM25 score
    /// (higher is better), at most `limit`.
    pub fn lexical_search(&self, expr: &str, limit: usize) -> IndexResult<Vec<(u64, f64)>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT rowid, bm25(events_fts) FROM events_fts WHERE events_fts MATCH ?1 ORDER BY rank LIMIT ?2")?;
        let rows = stmt.query_map(params![expr, limit as i64], |r| Ok((r.get::<_, i64>(0)? as u64, -r.get::<_, f64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Which of `terms` (FTS5 query expressions) an event's indexed words match: their
    /// positions in `terms`.
    pub fn terms_matching(&self, seq: u64, terms: &[String]) -> IndexResult<Vec<usize>> {
        let mut stmt = self.conn.prepare_cached("SELECT 1 FROM events_fts WHERE events_fts MATCH ?1 AND rowid = ?2")?;
        let mut out = Vec::new();
        for (i, term) in terms.iter().enumerate() {
            if stmt.exists(params![term, seq as i64])? {
                out.push(i);
            }
        }
        Ok(out)
    }
}
