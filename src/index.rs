//! The SQLite index: a derived, rebuildable view of the ledger (events, elements' current
//! state, vectors) that records the `seq` it covers and catches up from the ledger on open.

use crate::event::Priority;
use crate::ledger::{LedgerCursor, Record};
use crate::vector::{from_blob, to_blob};
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    element_id TEXT NOT NULL,
    element_type TEXT NOT NULL,
    action TEXT NOT NULL,
    priority INTEGER NOT NULL,
    source TEXT NOT NULL,
    hash TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    element_prev_seq INTEGER NOT NULL DEFAULT 0
);
-- element_prev_seq: the element's event before this one (0 for its first); an element's
-- history is a walk down these links from elements.last_seq, like the ledger's element chain.
-- No index on ts or on element_id: time filters run on the in-memory catalog, histories walk
-- element_prev_seq, and every index page an insert touches at random is one more page in
-- each incremental btrfs send (an index by element made the increments grow with history).
DROP INDEX IF EXISTS events_by_ts;
CREATE TABLE IF NOT EXISTS elements (
    element_id TEXT PRIMARY KEY,
    element_type TEXT NOT NULL,
    state TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    height INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS vectors (seq INTEGER PRIMARY KEY, vector BLOB NOT NULL);
";

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

/// An element's current state as the index derives it from its events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementRow {
    pub element_id: String,
    pub element_type: String,
    pub state: Value,
    pub last_seq: u64,
    pub height: u64,
    pub last_hash: String,
}

pub struct Index {
    conn: Connection,
}

const EVENT_COLUMNS: &str = "seq, ts, element_id, element_type, action, priority, source, hash, summary, details";

impl Index {
    /// Opens (creating) the index for writing.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("opening index {}", path.display()))?;
        // NORMAL: commits are not synced one by one (the index is derived from the ledger,
        // which is; after a power loss the index rolls back to a consistent earlier state
        // and catches up). Whatever must be durable — before an HNSW checkpoint that
        // includes its vectors, before a snapshot — goes through a WAL checkpoint, which
        // syncs the WAL first and the database after (`Index::make_durable`).
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;")?;
        conn.execute_batch(SCHEMA).context("creating the index schema")?;
        migrate(&conn)?;
        Ok(Self { conn })
    }

    /// Opens an index inside a read-only snapshot. `immutable=1` makes SQLite ignore any WAL,
    /// so only what was checkpointed into the main file is seen.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let uri = format!("file:{}?immutable=1", path.display());
        let conn = Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening index {} read-only", path.display()))?;
        Ok(Self { conn })
    }

    /// Syncs every committed transaction to disk (a passive WAL checkpoint: it never waits
    /// for readers, and syncs the WAL before anything else).
    pub fn make_durable(&self) -> Result<()> {
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).context("checkpointing the index WAL")
    }

    /// Folds the whole WAL into the database file and empties it, so that a copy of the
    /// file alone (a snapshot, opened `immutable`) holds every committed row. A reader in
    /// the middle of a query can hold it up; that is retried, then reported.
    pub fn fold_wal(&self) -> Result<()> {
        for attempt in 0..50 {
            let busy: i64 =
                self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).context("checkpointing the index WAL")?;
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1 + attempt));
        }
        bail!("the index WAL could not be folded into the database: readers kept it busy")
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        set_meta(&self.conn, key, value)
    }

    /// The highest `seq` whose event is in the index.
    pub fn covered_seq(&self) -> Result<u64> {
        Ok(self.meta("covered_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Adds records (which must follow `covered_seq` in order) in one transaction.
    pub fn apply(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for record in records {
            insert_record(&tx, record)?;
        }
        set_meta(&tx, "covered_seq", &records.last().expect("not empty").seq.to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// Reads the ledger from the covered `seq` through `through_seq` into the index.
    pub fn catch_up(&mut self, ledger_dir: &Path, through_seq: u64) -> Result<u64> {
        let covered = self.covered_seq()?;
        if covered >= through_seq {
            return Ok(0);
        }
        let mut cursor = LedgerCursor::new(ledger_dir, covered + 1);
        let mut batch = Vec::with_capacity(2048);
        let mut added = 0u64;
        cursor.read_through(through_seq, |record| {
            batch.push(record);
            if batch.len() == 2048 {
                self.apply(&batch)?;
                added += batch.len() as u64;
                batch.clear();
            }
            Ok(())
        })?;
        self.apply(&batch)?;
        added += batch.len() as u64;
        Ok(added)
    }

    /// Drops the events and elements so they can be rebuilt from the ledger; vectors (keyed
    /// by `seq`, and expensive to make) stay.
    pub fn clear_events(&mut self) -> Result<()> {
        self.conn.execute_batch("DELETE FROM events; DELETE FROM elements; DELETE FROM meta WHERE key = 'covered_seq';")?;
        Ok(())
    }

    /// Drops every derived row, vectors included (the ledger was replaced).
    pub fn clear_all(&mut self) -> Result<()> {
        self.conn.execute_batch("DELETE FROM events; DELETE FROM elements; DELETE FROM vectors; DELETE FROM meta;")?;
        Ok(())
    }

    /// Events without a vector, above `after`, most urgent first, skipping `exclude`.
    pub fn unvectorized(&self, after: u64, limit: usize, exclude: &std::collections::HashSet<u64>) -> Result<Vec<EventRow>> {
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

    /// `seq`s above `after` that already have vectors (embedded out of order).
    pub fn vector_seqs_after(&self, after: u64) -> Result<Vec<u64>> {
        let mut stmt = self.conn.prepare_cached("SELECT seq FROM vectors WHERE seq > ?1 ORDER BY seq")?;
        let rows = stmt.query_map([after as i64], |r| Ok(r.get::<_, i64>(0)? as u64))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn event(&self, seq: u64) -> Result<Option<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1");
        Ok(self.conn.query_row(&sql, [seq as i64], event_row).optional()?)
    }

    /// One element's events, newest first.
    pub fn history(&self, element_id: &str, limit: usize) -> Result<Vec<EventRow>> {
        self.walk_from_latest(element_id, u64::MAX, limit)
    }

    /// One element's events up to and including `seq`, newest first.
    pub fn history_through(&self, element_id: &str, seq: u64, limit: usize) -> Result<Vec<EventRow>> {
        // Usually `seq` is one of the element's own events: start the walk there.
        let own: Option<String> =
            self.conn.prepare_cached("SELECT element_id FROM events WHERE seq = ?1")?.query_row([seq as i64], |r| r.get(0)).optional()?;
        if own.as_deref() == Some(element_id) {
            return self.walk_element(seq, seq, limit);
        }
        self.walk_from_latest(element_id, seq, limit)
    }

    /// Walks the element's events from its latest one, keeping those at or below `through`.
    fn walk_from_latest(&self, element_id: &str, through: u64, limit: usize) -> Result<Vec<EventRow>> {
        let last: Option<i64> = self
            .conn
            .prepare_cached("SELECT last_seq FROM elements WHERE element_id = ?1")?
            .query_row([element_id], |r| r.get(0))
            .optional()?;
        match last {
            Some(last) => self.walk_element(last as u64, through, limit),
            None => Ok(Vec::new()),
        }
    }

    /// Follows `element_prev_seq` from `start`, keeping events at or below `through`.
    fn walk_element(&self, start: u64, through: u64, limit: usize) -> Result<Vec<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS}, element_prev_seq FROM events WHERE seq = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut next = start;
        while next != 0 && out.len() < limit {
            let Some((row, prev)) = stmt.query_row([next as i64], |r| Ok((event_row(r)?, r.get::<_, i64>(10)? as u64))).optional()? else {
                break;
            };
            if prev >= next {
                bail!("index damaged: event {next} links back to {prev}; run `ovs-port-agent rebuild`");
            }
            if row.seq <= through {
                out.push(row);
            }
            next = prev;
        }
        Ok(out)
    }

    /// The newest events, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![limit as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events with `seq` above `after`, oldest first.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRow>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![after as i64, limit as i64], event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn element(&self, element_id: &str) -> Result<Option<ElementRow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT element_id, element_type, state, last_seq, height, last_hash FROM elements WHERE element_id = ?1")?;
        Ok(stmt
            .query_row([element_id], |r| {
                Ok(ElementRow {
                    element_id: r.get(0)?,
                    element_type: r.get(1)?,
                    state: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null),
                    last_seq: r.get::<_, i64>(3)? as u64,
                    height: r.get::<_, i64>(4)? as u64,
                    last_hash: r.get(5)?,
                })
            })
            .optional()?)
    }

    /// Stores vectors and advances `vectorized_seq` in one transaction.
    pub fn put_vectors(&mut self, items: &[(u64, Arc<[f32]>)], vectorized_seq: u64) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("INSERT OR REPLACE INTO vectors (seq, vector) VALUES (?1, ?2)")?;
            for (seq, v) in items {
                stmt.execute(params![*seq as i64, to_blob(v)])?;
            }
        }
        set_meta(&tx, "vectorized_seq", &vectorized_seq.to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// Every `seq` up to this one has its vector (or a recorded embedding failure).
    pub fn vectorized_seq(&self) -> Result<u64> {
        Ok(self.meta("vectorized_seq")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Vectors with `seq` above `after`, in order, at most `limit`.
    pub fn vectors_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<f32>)>> {
        let mut stmt = self.conn.prepare_cached("SELECT seq, vector FROM vectors WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows =
            stmt.query_map(params![after as i64, limit as i64], |r| Ok((r.get::<_, i64>(0)? as u64, from_blob(&r.get::<_, Vec<u8>>(1)?))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The vectors of the given events (those that have one).
    pub fn vectors_for(&self, seqs: &[u64]) -> Result<Vec<(u64, Vec<f32>)>> {
        let mut stmt = self.conn.prepare_cached("SELECT vector FROM vectors WHERE seq = ?1")?;
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(blob) = stmt.query_row([seq as i64], |r| r.get::<_, Vec<u8>>(0)).optional()? {
                out.push((seq, from_blob(&blob)));
            }
        }
        Ok(out)
    }

    /// Calls `f(seq, ts, element_id, element_type, action, source, priority)` for every
    /// event with `seq` above `after`, in order (to fill the search filter catalog).
    pub fn for_each_event_meta_after(&self, after: u64, mut f: impl FnMut(u64, i64, &str, &str, &str, &str, Priority)) -> Result<()> {
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
            );
        }
        Ok(())
    }

    /// Drops every vector (for `reembed`).
    pub fn clear_vectors(&mut self) -> Result<()> {
        self.conn.execute_batch("DELETE FROM vectors; DELETE FROM meta WHERE key IN ('vectorized_seq', 'model_id', 'model_sha256');")?;
        Ok(())
    }

    /// Checks that stored vectors come from this model, recording it when there are none
    /// yet. A different model is refused: its vectors must never mix with the old ones.
    pub fn bind_model(&self, model_id: &str, model_sha256: &str) -> Result<()> {
        match self.meta("model_sha256")? {
            Some(stored) if stored == model_sha256 => Ok(()),
            Some(stored) => anyhow::bail!(
                "the index holds vectors of model {} (sha256 {stored}), but the configured model is {model_id} (sha256 {model_sha256}); run `ovs-port-agent reembed` to re-embed the history with the new model",
                self.meta("model_id")?.unwrap_or_default()
            ),
            None => {
                self.set_meta("model_id", model_id)?;
                self.set_meta("model_sha256", model_sha256)
            }
        }
    }

    /// Every element whose last event came from `source` (a source's last known view of
    /// its world).
    pub fn elements_of_source(&self, source: &str) -> Result<Vec<ElementRow>> {
        let mut out = Vec::new();
        let ids: Vec<String> = self
            .conn
            .prepare_cached("SELECT element_id FROM elements WHERE source = ?1")?
            .query_map([source], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            if let Some(e) = self.element(&id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Counts of events and elements.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let events: i64 = self.conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        let elements: i64 = self.conn.query_row("SELECT count(*) FROM elements", [], |r| r.get(0))?;
        Ok((events as u64, elements as u64))
    }
}

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// Brings an index written by an older version up to date in place (the index is derived,
/// but its vectors are expensive to remake, so it is migrated rather than rebuilt).
fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    // Version 0 → 1: elements remember the source of their last event.
    let has_source: bool = conn.prepare("SELECT 1 FROM pragma_table_info('elements') WHERE name = 'source'")?.exists([])?;
    if !has_source {
        conn.execute_batch("ALTER TABLE elements ADD COLUMN source TEXT NOT NULL DEFAULT ''")?;
        tracing::info!("index migrated: elements.source added");
    }
    // Version 1 → 2: events link to their element's previous event; the index by element
    // (whose random inserts made every incremental send grow with the history) goes.
    let has_link: bool = conn.prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = 'element_prev_seq'")?.exists([])?;
    if !has_link {
        let started = std::time::Instant::now();
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE events ADD COLUMN element_prev_seq INTEGER NOT NULL DEFAULT 0;
             UPDATE events SET element_prev_seq = COALESCE(
                 (SELECT max(e.seq) FROM events e WHERE e.element_id = events.element_id AND e.seq < events.seq), 0);
             COMMIT;",
        )?;
        tracing::info!(ms = started.elapsed().as_millis() as u64, "index migrated: events.element_prev_seq filled");
    }
    conn.execute_batch("DROP INDEX IF EXISTS events_by_element")?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    Ok(())
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
        .execute([key, value])?;
    Ok(())
}

fn insert_record(tx: &Transaction<'_>, record: &Record) -> Result<()> {
    let details = serde_json::to_string(&record.details)?;
    let hash = record.hash_hex();
    let previous: Option<(String, i64, i64)> = tx
        .prepare_cached("SELECT state, height, last_seq FROM elements WHERE element_id = ?1")?
        .query_row([&record.element_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if previous.as_ref().is_some_and(|(_, _, last)| *last as u64 >= record.seq) {
        return Ok(()); // already applied: states and heights must not count it twice
    }
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
        previous.as_ref().map_or(0, |(_, _, last)| *last)
    ])?;
    let (state, height) = match previous {
        Some((state, height, _)) => (serde_json::from_str(&state).unwrap_or(Value::Object(Map::new())), height),
        None => (Value::Object(Map::new()), 0),
    };
    let state = next_state(state, &record.details);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO elements (element_id, element_type, state, last_seq, height, last_hash, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        record.element_id,
        record.element_type,
        serde_json::to_string(&state)?,
        record.seq as i64,
        height + 1,
        hash,
        record.source
    ])?;
    Ok(())
}

/// An element's state after one of its events: the event's `after` values (or, for events
/// without before/after, its plain detail fields) merged over the previous state. An event
/// with `before` and no `after` removed the element (`present: false`).
pub fn next_state(state: Value, details: &Value) -> Value {
    let mut state = match state {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let updates = match details {
        Value::Object(details) => match details.get("after") {
            Some(Value::Object(after)) => after.clone(),
            _ => details
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "before" | "after" | "changed"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        _ => Map::new(),
    };
    for (key, value) in updates {
        state.insert(key, value);
    }
    // An event that says what was before and nothing after removed its element.
    let removed = details.get("before").is_some() && details.get("after").is_none_or(Value::is_null);
    state.insert("present".into(), Value::Bool(!removed));
    Value::Object(state)
}

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
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
mod tests {
    use super::*;

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
        let index = Index::open(&path).unwrap();
        assert_eq!(index.elements_of_source("").unwrap().len(), 1, "old rows survive with an empty source");
        let version: i64 = index.connection().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(index);
        Index::open(&path).unwrap();
    }

    fn record(seq: u64, element: &str) -> Record {
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
        assert_eq!(seqs(index.history_through("b", 10, 3).unwrap()), vec![10, 7, 4]);
        assert_eq!(seqs(index.history_through("b", 11, 2).unwrap()), vec![10, 7], "a seq of another element");
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
}
