//! The index's tables, its schema version, and in-place migrations from older versions.

use super::{IndexError, IndexResult};
use rusqlite::Connection;
use std::path::Path;

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
    source TEXT NOT NULL DEFAULT '',
    fold_seq INTEGER NOT NULL DEFAULT 0
);
-- fold_seq: the element's newest checkpoint in element_folds (0: none yet).
CREATE TABLE IF NOT EXISTS vectors (seq INTEGER PRIMARY KEY, vector BLOB NOT NULL);
";

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 5;

/// Creates the tables and brings an index written by an older version up to date in place
/// (the index is derived, but its vectors are expensive to remake, so it is migrated rather
/// than rebuilt).
pub fn create_and_migrate(conn: &Connection) -> IndexResult<()> {
    // Version 3 → 4 (below) needs the column before the tables are (re)declared.
    let had_fold_seq: bool = conn.prepare("SELECT 1 FROM pragma_table_info('elements') WHERE name = 'fold_seq'")?.exists([])?;
    let had_elements: bool = conn.prepare("SELECT 1 FROM sqlite_master WHERE name = 'elements'")?.exists([])?;
    if had_elements && !had_fold_seq {
        conn.execute_batch("ALTER TABLE elements ADD COLUMN fold_seq INTEGER NOT NULL DEFAULT 0")?;
    }
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(super::folds::SCHEMA)?;
    let had_fts: bool = conn.prepare("SELECT 1 FROM sqlite_master WHERE name = 'events_fts'")?.exists([])?;
    conn.execute_batch(super::lexical::SCHEMA)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(IndexError::Corrupt(format!("schema version {version} is newer than this program's {SCHEMA_VERSION}")));
    }
    if version == SCHEMA_VERSION {
        return refill_lexical_if_older(conn);
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
    // Version 2 → 3: the full-text index, filled from the events already indexed. Version 4 → 5:
    // its words gain what NetworkManager's state values mean (`glossary`), so it is filled again.
    if !had_fts || version < 5 {
        let started = std::time::Instant::now();
        let filled = fill_lexical(conn)?;
        tracing::info!(events = filled, ms = started.elapsed().as_millis() as u64, "index migrated: full-text index filled");
    }
    // Version 3 → 4: checkpoints of every element's fold, for its state at any moment.
    if had_elements && !had_fold_seq {
        let started = std::time::Instant::now();
        let written = super::folds::fill_checkpoints(conn)?;
        tracing::info!(
            checkpoints = written,
            ms = started.elapsed().as_millis() as u64,
            "index migrated: element state checkpoints written"
        );
    }
    super::meta::set_meta(conn, LEXICAL_WORDS_KEY, &LEXICAL_WORDS.to_string())?;
    conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    Ok(())
}

/// The version of the words the full-text index holds for each event (`lexical_text` and the
/// meanings in `glossary`), kept in `meta` apart from the schema version: a change of words is
/// not a change of schema, so it needs no newer `user_version`, which a replica of the older
/// version could not read. Version 2: a failed device state also says "activation failed".
const LEXICAL_WORDS: u64 = 2;
const LEXICAL_WORDS_KEY: &str = "lexical_words";

/// Fills the full-text index again when its words are older than this program's (an index
/// without the key has version 1's).
fn refill_lexical_if_older(conn: &Connection) -> IndexResult<()> {
    let held: u64 = super::meta::meta(conn, LEXICAL_WORDS_KEY)?.and_then(|v| v.parse().ok()).unwrap_or(1);
    if held >= LEXICAL_WORDS {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let filled = fill_lexical(conn)?;
    super::meta::set_meta(conn, LEXICAL_WORDS_KEY, &LEXICAL_WORDS.to_string())?;
    tracing::info!(
        events = filled,
        ms = started.elapsed().as_millis() as u64,
        words = LEXICAL_WORDS,
        "index migrated: full-text index filled with newer words"
    );
    Ok(())
}

/// The oldest version read without migrating: version 5 changed only the full-text index's
/// words, so a version-4 index (an older primary's snapshot on an upgraded replica) is read
/// as it is, its keyword matches without the meanings.
const OLDEST_READABLE: i64 = 4;

/// A read-only connection cannot migrate: the file must already be of a readable version.
pub fn check_readable(conn: &Connection, path: &Path) -> IndexResult<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        OLDEST_READABLE..=SCHEMA_VERSION => Ok(()),
        v if v > SCHEMA_VERSION => {
            Err(IndexError::Corrupt(format!("{} has schema version {v}, newer than this program's {SCHEMA_VERSION}", path.display())))
        }
        v => Err(IndexError::Other(format!(
            "{} has schema version {v}; open it once for writing (start the daemon, or run `rebuild`) to migrate it",
            path.display()
        ))),
    }
}

/// Fills the full-text index again from every indexed event (a migration from version 2 or 4,
/// or words of an older version).
fn fill_lexical(conn: &Connection) -> IndexResult<u64> {
    super::lexical::clear_lexical(conn)?;
    let mut stmt = conn.prepare("SELECT seq, element_id, element_type, action, source, summary, details FROM events ORDER BY seq")?;
    let mut rows = stmt.query([])?;
    let mut insert = conn.prepare("INSERT INTO events_fts(rowid, head, body) VALUES (?1, ?2, ?3)")?;
    let mut n = 0u64;
    conn.execute_batch("BEGIN")?;
    while let Some(r) = rows.next()? {
        let column = |i: usize| r.get::<_, String>(i);
        let details: serde_json::Value = serde_json::from_str(&column(6)?).unwrap_or(serde_json::Value::Null);
        let text = super::lexical::lexical_text(&column(1)?, &column(2)?, &column(3)?, &column(4)?, &column(5)?, &details);
        insert.execute(rusqlite::params![r.get::<_, i64>(0)?, text.0, text.1])?;
        n += 1;
    }
    conn.execute_batch("COMMIT")?;
    Ok(n)
}
