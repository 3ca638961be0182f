//! Key/value facts about the index: the `seq` it covers, the `seq` through which every event
//! has its vector, and the model those vectors come from.

use super::{Index, IndexError, IndexResult};
use rusqlite::{Connection, OptionalExtension};

impl Index {
    pub fn meta(&self, key: &str) -> IndexResult<Option<String>> {
        meta(&self.conn, key)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> IndexResult<()> {
        set_meta(&self.conn, key, value)
    }

    fn meta_seq(&self, key: &str) -> IndexResult<u64> {
        Ok(self.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// The highest `seq` whose event is in the index (every one before it is too).
    pub fn covered_seq(&self) -> IndexResult<u64> {
        self.meta_seq("covered_seq")
    }

    /// Every `seq` up to this one has its vector (or a recorded embedding failure).
    pub fn vectorized_seq(&self) -> IndexResult<u64> {
        self.meta_seq("vectorized_seq")
    }

    /// The model the stored vectors come from (`model_id`, `model_sha256`), if any.
    pub fn model(&self) -> IndexResult<Option<(String, String)>> {
        Ok(match (self.meta("model_id")?, self.meta("model_sha256")?) {
            (id, Some(sha)) => Some((id.unwrap_or_default(), sha)),
            _ => None,
        })
    }

    /// Checks that stored vectors come from this model, recording it when there are none
    /// yet. A different model is refused: its vectors must never mix with the old ones.
    pub fn bind_model(&self, model_id: &str, model_sha256: &str) -> IndexResult<()> {
        match self.model()? {
            Some((_, stored)) if stored == model_sha256 => Ok(()),
            Some((stored_id, stored)) => Err(IndexError::Other(format!(
                "the index holds vectors of model {stored_id} (sha256 {stored}), but the configured model is {model_id} (sha256 {model_sha256}); run `ovs-port-agent reembed` to re-embed the history with the new model"
            ))),
            None => {
                self.set_meta("model_id", model_id)?;
                self.set_meta("model_sha256", model_sha256)
            }
        }
    }
}

pub(super) fn meta(conn: &Connection, key: &str) -> IndexResult<Option<String>> {
    Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

pub(super) fn set_meta(conn: &Connection, key: &str, value: &str) -> IndexResult<()> {
    conn.prepare_cached("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?
        .execute([key, value])?;
    Ok(())
}
