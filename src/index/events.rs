//! The `events` table: one row per ledger record, applied in ledger order without gaps.
//! Element histories walk `element_prev_seq` links (the index's copy of the ledger's element
//! chain); the embedding backlog is the events without a vector.

use super::elements::apply_to_element;
use super::folds::checkpoint_if_due;
use super::lexical::{clear_lexical, insert_lexical, lexical_text};
use super::meta::set_meta;
use super::{Index, IndexError, IndexResult};
use crate::event::Priority;
use crate::ledger::{LedgerCursor, Record};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

/// One event row as the index returns it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EventRow {
    pub seq: u64,
    pub ts: i64,
    pub element_id: String,
    pub element_type: String,
    pub action: String,
    pub priority: Priority,
    pub source: String,
    pub hash: String,
    pub summary: String,
    pub details: Value,
}

const EVENT_COLUMNS: &str = "seq, ts, element_id, element_type, action, priority, source, hash, summary, details";

/// Records applied per transaction when catching up.
const CATCH_UP_CHUNK: usize = 2048;

impl Index {
    /// Adds records in one transaction. They must continue the index: records at or below
    /// `covered_seq` are skipped (already applied), and the first new one must be
    /// `covered_seq + 1`, so the index never has a hole.
    pub fn apply(&mut self, records: &[Record]) -> IndexResult<()> {
        let covered = self.covered_seq()?;
        let fresh: Vec<&Record> = records.iter().filter(|r| r.seq > covered).collect();
        let Some(last) = fresh.last() else { return Ok(()) };
        for (i, record) in fresh.iter().enumerate() {
            let expected = covered + 1 + i as u64;
            if record.seq != expected {
                return Err(IndexError::Gap { covered, expected, found: record.seq });
            }
        }
        let tx = self.conn.transaction()?;
        for record in &fresh {
            insert_record(&tx, record)?;
        }
        set_meta(&tx, "covered_seq", &last.seq.to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// Reads the ledger from the covered `seq` through `through_seq` into the index.
    pub fn catch_up(&mut self, ledger_dir: &Path, through_seq: u64) -> anyhow::Result<u64> {
        self.catch_up_with_progress(ledger_dir, through_seq, |_| {})
    }

    /// [`Self::catch_up`], telling `progress` how many were indexed after each chunk.
    pub fn catch_up_with_progress(&mut self, ledger_dir: &Path, through_seq: u64, mut progress: impl FnMut(u64)) -> anyhow::Result<u64> {
        let covered = self.covered_seq()?;
        if covered >= through_seq {
            return Ok(0);
        }
        let mut cursor = LedgerCursor::new(ledger_dir, covered + 1);
        let mut batch = Vec::with_capacity(CATCH_UP_CHUNK);
        let mut added = 0u64;
        cursor.read_through(through_seq, |record| {
            batch.push(record);
            if batch.len() == CATCH_UP_CHUNK {
                self.apply(&batch)?;
                added += batch.len() as u64;
                batch.clear();
                progress(added);
            }
            Ok(())
        })?;
        self.apply(&batch)?;
        added += batch.len() as u64;
        progress(added);
        Ok(added)
    }

    /// Drops the events and elements so they can be rebuilt from the ledger; vectors (keyed
    /// by `seq`, and expensive to make) stay.
    pub fn clear_events(&mut self) -> IndexResult<()> {
        self.conn.execute_batch(
            "DELETE FROM events; DELETE FROM elements; DELETE FROM element_folds; DELETE FROM meta WHERE key = 'covered_seq';",
        )?;
        clear_lexical(&self.conn)
    }

    /// Events without a vector, above `after`, most urgent first, skipping `exclude`.
    pub fn unvectorized(&self, after: u64, limit: usize, exclude: &HashSet<u64>) -> IndexResult<Vec<EventRow>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.seq > ?1 AND NOT EXISTS (SELECT 1 FROM vectors v WHERE v.seq = e.seq)
             ORDER BY e.priority DESC, e.seq LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after as i64, (limit + exclude.len()) as i64], event_row)?;
        let mut out = Vec::with_capacity(limit);
        for row in rows {
            let row = row?;
            if !exclude.contains(&row.seq) {
                out.push(row);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn event(&self, seq: u64) -> IndexResult<Option<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1");
        Ok(self.conn.prepare_cached(&sql)?.query_row([seq as i64], event_row).optional()?)
    }

    /// One element's events, newest first.
    pub fn history(&self, element_id: &str, limit: usize) -> IndexResult<Vec<EventRow>> {
        self.walk_from_latest(element_id, u64::MAX, limit)
    }

    /// Walks the element's events from its latest one, keeping those at or below `through`.
    fn walk_from_latest(&self, element_id: &str, through: u64, limit: usize) -> IndexResult<Vec<EventRow>> {
        match self.element_last_seq(element_id)? {
            Some(last) => self.walk_element(last, through, limit),
            None => Ok(Vec::new()),
        }
    }

    /// Follows `element_prev_seq` from `start`, keeping events at or below `through`.
    fn walk_element(&self, start: u64, through: u64, limit: usize) -> IndexResult<Vec<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS}, element_prev_seq FROM events WHERE seq = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut next = start;
        while next != 0 && out.len() < limit {
            let Some((row, prev)) = stmt.query_row([next as i64], |r| Ok((event_row(r)?, r.get::<_, i64>(10)? as u64))).optional()? else {
                break;
            };
            if prev >= next {
                return Err(IndexError::Corrupt(format!("event {next} links back to {prev}")));
            }
            if row.seq <= through {
                out.push(row);
            }
            next = prev;
        }
        Ok(out)
    }

    /// The newest events, newest first.
    pub fn recent(&self, limit: usize) -> IndexResult<Vec<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![limit as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events with `seq` above `after`, oldest first.
    pub fn events_after(&self, after: u64, limit: usize) -> IndexResult<Vec<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after as i64, limit as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calls `f(seq, ts, element_id, element_type, action, source, priority)` for every
    /// event with `seq` above `after`, in order (to fill the search filter catalog).
    pub fn for_each_event_meta_after(
        &self,
        after: u64,
        mut f: impl FnMut(u64, i64, &str, &str, &str, &str, Priority) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, ts, element_id, element_type, action, source, priority FROM events WHERE seq > ?1 ORDER BY seq")?;
        let mut rows = stmt.query([after as i64])?;
        while let Some(r) = rows.next()? {
            let priority = Priority::from_rank(r.get::<_, u8>(6)?).unwrap_or(Priority::Low);
            f(
                r.get::<_, i64>(0)? as u64,
                r.get(1)?,
                r.get_ref(2)?.as_str()?,
                r.get_ref(3)?.as_str()?,
                r.get_ref(4)?.as_str()?,
                r.get_ref(5)?.as_str()?,
                priority,
            )?;
        }
        Ok(())
    }
}

fn insert_record(tx: &Transaction<'_>, record: &Record) -> IndexResult<()> {
    let details = serde_json::to_string(&record.details)?;
    let hash = record.hash_hex();
    let (previous_seq, height) = apply_to_element(tx, record, &hash)?;
    checkpoint_if_due(tx, &record.element_id, height, previous_seq, (record.seq, record.ts, &record.details))?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO events (seq, ts, element_id, element_type, action, priority, source, hash, summary, details, element_prev_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        record.seq as i64,
        record.ts,
        record.element_id,
        record.element_type,
        record.action,
        record.priority.rank(),
        record.source,
        hash,
        record.summary,
        details,
        previous_seq as i64
    ])?;
    let words = lexical_text(&record.element_id, &record.element_type, &record.action, &record.source, &record.summary, &record.details);
    insert_lexical(tx, record.seq, &words)
}

pub(super) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    let rank: u8 = r.get(5)?;
    Ok(EventRow {
        seq: r.get::<_, i64>(0)? as u64,
        ts: r.get(1)?,
        element_id: r.get(2)?,
        element_type: r.get(3)?,
        action: r.get(4)?,
        priority: Priority::from_rank(rank).unwrap_or(Priority::Low),
        source: r.get(6)?,
        hash: r.get(7)?,
        summary: r.get(8)?,
        details: serde_json::from_str(&r.get::<_, String>(9)?).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rusqlite::Connection;

    pub(crate) fn record(seq: u64, element: &str) -> Record {
        Record {
            seq,
            ts: seq as i64,
            host: "h".into(),
            source: "test".into(),
            element_id: element.into(),
            element_type: "interface".into(),
            action: "link.down".into(),
            priority: Priority::Low,
            summary: format!("event {seq}"),
            details: serde_json::json!({"n": seq}),
            prev: [0; 32],
            element_prev: [0; 32],
            hash: [seq as u8; 32],
        }
    }

    #[test]
    fn histories_walk_element_links_and_a_version_1_index_is_linked_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let mut index = Index::open(&path).unwrap();
        let records: Vec<Record> = (1..=30).map(|s| record(s, ["a", "b", "c"][(s % 3) as usize])).collect();
        index.apply(&records).unwrap();
        index.apply(&records[..5]).unwrap(); // applying again changes nothing
        let seqs = |rows: Vec<EventRow>| rows.into_iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(index.history("a", 4).unwrap()), vec![30, 27, 24, 21]);
        assert_eq!(seqs(index.history("b", 3).unwrap()), vec![28, 25, 22]);
        assert_eq!(index.element("a").unwrap().unwrap().height, 10);
        assert!(index.history("nobody", 5).unwrap().is_empty());
        // Make it look like version 1: no links, an index by element.
        index
            .connection()
            .execute_batch(
                "ALTER TABLE events DROP COLUMN element_prev_seq;
                 CREATE INDEX events_by_element ON events(element_id, seq);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        drop(index);
        let index = Index::open(&path).unwrap();
        assert_eq!(seqs(index.history("c", 100).unwrap()), (0..10).rev().map(|i| i * 3 + 2).collect::<Vec<_>>());
        let has_index: bool =
            index.connection().prepare("SELECT 1 FROM sqlite_master WHERE name = 'events_by_element'").unwrap().exists([]).unwrap();
        assert!(!has_index);
    }

    #[test]
    fn a_gap_is_refused_and_nothing_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        index.apply(&[record(1, "a"), record(2, "a")]).unwrap();
        let err = index.apply(&[record(4, "a"), record(5, "a")]).unwrap_err();
        assert!(matches!(err, IndexError::Gap { covered: 2, expected: 3, found: 4 }), "{err}");
        assert_eq!(index.covered_seq().unwrap(), 2);
        assert!(index.event(4).unwrap().is_none());
    }

    #[test]
    fn an_index_of_the_first_schema_is_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE elements (element_id TEXT PRIMARY KEY, element_type TEXT NOT NULL, state TEXT NOT NULL,
                 last_seq INTEGER NOT NULL, height INTEGER NOT NULL, last_hash TEXT NOT NULL);
                 INSERT INTO elements VALUES ('interface:eth0', 'interface', '{}', 1, 1, 'aa');",
            )
            .unwrap();
        }
        assert!(Index::open_read_only(&path).is_err(), "a read-only open cannot migrate");
        let index = Index::open(&path).unwrap();
        assert_eq!(index.elements_of_source("").unwrap().len(), 1, "old rows survive with an empty source");
        let version: i64 = index.connection().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, super::super::schema::SCHEMA_VERSION);
        drop(index);
        Index::open(&path).unwrap();
    }
}
