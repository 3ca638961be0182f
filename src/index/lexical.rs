//! The `events_fts` table: every event's words for keyword search (SQLite FTS5, ranked by
//! BM25), kept by the same transactions as the events themselves, so it is always in the same
//! consistent cut. Contentless (`content=''`): it stores the index, not a second copy of the
//! text. Names, addresses and numbers are tokens like any word (`192.168.0.1` is the phrase
//! `192 168 0 1`); the Porter stemmer lets `failed` find `failure`.

use super::{Index, IndexResult};
use crate::text::{facts, words};
use rusqlite::{Transaction, params};
use serde_json::Value;

/// Two columns: `head` — what happened (element, type, action, summary) — weighs more than
/// `body`, the facts of the details (long lists there must not drown a match in the head).
pub(super) const SCHEMA: &str =
    "CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(head, body, content='', tokenize='porter unicode61 remove_diacritics 2');";

/// BM25 weights of the columns.
const HEAD_WEIGHT: f64 = 3.0;
const BODY_WEIGHT: f64 = 1.0;

/// The words of an event the lexical index holds: its element (as written and as words),
/// type, action, source and summary; then every fact of its details with raw values.
pub fn lexical_text(element_id: &str, element_type: &str, action: &str, source: &str, summary: &str, details: &Value) -> (String, String) {
    let head = format!("{element_id} {} {} {} {summary}", words(element_type), words(action), words(source));
    let facts = facts(details);
    let meanings = facts.iter().filter_map(|f| f.meaning());
    let body = facts.iter().map(|f| f.text()).chain(meanings.map(str::to_owned)).collect::<Vec<_>>().join(" | ");
    (head, body)
}

pub(super) fn insert_lexical(tx: &Transaction<'_>, seq: u64, text: &(String, String)) -> IndexResult<()> {
    tx.prepare_cached("INSERT INTO events_fts(rowid, head, body) VALUES (?1, ?2, ?3)")?.execute(params![seq as i64, text.0, text.1])?;
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, bm25(events_fts, ?3, ?4) AS score FROM events_fts WHERE events_fts MATCH ?1 ORDER BY score LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![expr, limit as i64, HEAD_WEIGHT, BODY_WEIGHT], |r| Ok((r.get::<_, i64>(0)? as u64, -r.get::<_, f64>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest `limit` events matching an FTS5 expression, newest first (cheap: no
    /// ranking, the index is read backwards and stops early).
    pub fn lexical_newest(&self, expr: &str, limit: usize) -> IndexResult<Vec<u64>> {
        let mut stmt = self.conn.prepare_cached("SELECT rowid FROM events_fts WHERE events_fts MATCH ?1 ORDER BY rowid DESC LIMIT ?2")?;
        let rows = stmt.query_map(params![expr, limit as i64], |r| Ok(r.get::<_, i64>(0)? as u64))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::tests::record;
    use super::*;

    #[test]
    fn what_a_state_means_is_a_keyword_and_an_older_index_gains_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut index = Index::open(&path).unwrap();
        let mut lost = record(1, "nm:manager");
        lost.details = serde_json::json!({"connectivity": "none", "previous": "full"});
        index.apply(&[lost]).unwrap();
        let offline = "\"host\" AND \"not\" AND \"connected\"";
        assert_eq!(index.lexical_newest(offline, 10).unwrap(), vec![1]);
        // An index of version 4 holds the words without their meanings: filled again on open.
        index.connection().execute_batch("INSERT INTO events_fts(events_fts) VALUES('delete-all'); PRAGMA user_version = 4;").unwrap();
        assert!(index.lexical_newest(offline, 10).unwrap().is_empty());
        drop(index);
        let index = Index::open(&path).unwrap();
        assert_eq!(index.lexical_newest(offline, 10).unwrap(), vec![1]);
        // An index of this schema whose words are older (no `lexical_words` in its meta, as
        // written before the words had a version): filled again too.
        index
            .connection()
            .execute_batch("INSERT INTO events_fts(events_fts) VALUES('delete-all'); DELETE FROM meta WHERE key = 'lexical_words';")
            .unwrap();
        drop(index);
        let index = Index::open(&path).unwrap();
        assert_eq!(index.lexical_newest(offline, 10).unwrap(), vec![1]);
    }
}
