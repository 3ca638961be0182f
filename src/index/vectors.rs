//! The `vectors` table: one embedding per event, as little-endian f32 bytes (the one place
//! that encoding is written and read).

use super::meta::set_meta;
use super::{Index, IndexError, IndexResult};
use crate::vector::DIMENSION;
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;

/// Why stored bytes are not a vector of this model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VectorBlobError {
    #[error("a vector blob of {0} bytes (expected {expected})", expected = DIMENSION * 4)]
    Length(usize),
    #[error("a vector holds a value that is not a finite number")]
    NotFinite,
}

/// Little-endian f32 bytes.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector in `b`, which must be exactly one embedding of [`DIMENSION`] finite values (a
/// blob from a received snapshot is not trusted to be).
pub fn from_blob(b: &[u8]) -> Result<Vec<f32>, VectorBlobError> {
    if b.len() != DIMENSION * 4 {
        return Err(VectorBlobError::Length(b.len()));
    }
    let v: Vec<f32> = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if !v.iter().all(|x| x.is_finite()) {
        return Err(VectorBlobError::NotFinite);
    }
    Ok(v)
}

fn decode(seq: i64, blob: &[u8]) -> IndexResult<Vec<f32>> {
    from_blob(blob).map_err(|e| IndexError::Corrupt(format!("event {seq}: {e}")))
}

impl Index {
    /// Stores vectors and advances `vectorized_seq` in one transaction.
    pub fn put_vectors(&mut self, items: &[(u64, Arc<[f32]>)], vectorized_seq: u64) -> IndexResult<()> {
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

    /// `seq`s above `after` that already have vectors (embedded out of order).
    pub fn vector_seqs_after(&self, after: u64) -> IndexResult<Vec<u64>> {
        let mut stmt = self.conn.prepare_cached("SELECT seq FROM vectors WHERE seq > ?1 ORDER BY seq")?;
        let rows = stmt.query_map([after as i64], |r| Ok(r.get::<_, i64>(0)? as u64))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Vectors with `seq` above `after`, in order, at most `limit`.
    pub fn vectors_after(&self, after: u64, limit: usize) -> IndexResult<Vec<(u64, Vec<f32>)>> {
        let mut stmt = self.conn.prepare_cached("SELECT seq, vector FROM vectors WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let mut rows = stmt.query(params![after as i64, limit as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            out.push((seq as u64, decode(seq, r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?)?));
        }
        Ok(out)
    }

    /// The vectors of the given events (those that have one), in seq order.
    pub fn vectors_for(&self, seqs: &[u64]) -> IndexResult<Vec<(u64, Vec<f32>)>> {
        let mut stmt = self.conn.prepare_cached("SELECT vector FROM vectors WHERE seq = ?1")?;
        // In seq order: neighbouring lookups share the B-tree's pages (fewer page reads).
        let mut sorted = seqs.to_vec();
        sorted.sort_unstable();
        let mut out = Vec::with_capacity(seqs.len());
        for seq in sorted {
            if let Some(blob) = stmt.query_row([seq as i64], |r| r.get::<_, Vec<u8>>(0)).optional()? {
                out.push((seq, decode(seq as i64, &blob)?));
            }
        }
        Ok(out)
    }

    /// Drops every vector (for `reembed`).
    pub fn clear_vectors(&mut self) -> IndexResult<()> {
        self.conn.execute_batch("DELETE FROM vectors; DELETE FROM meta WHERE key IN ('vectorized_seq', 'model_id', 'model_sha256');")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_bad_ones_are_refused() {
        let v: Vec<f32> = (0..DIMENSION).map(|i| i as f32 / 1000.0).collect();
        assert_eq!(from_blob(&to_blob(&v)).unwrap(), v);
        assert_eq!(from_blob(&[0u8; 12]), Err(VectorBlobError::Length(12)));
        let mut bad = v.clone();
        bad[7] = f32::NAN;
        assert_eq!(from_blob(&to_blob(&bad)), Err(VectorBlobError::NotFinite));
    }
}
