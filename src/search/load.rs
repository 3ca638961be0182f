//! Bringing the graph back at start: checkpoint plus tail, or a rebuild from stored vectors.

use crate::config::VectorConfig;
use crate::index::Index;
use crate::vector::{Catalog, VectorIndex};
use anyhow::Result;
use std::collections::HashSet;
use std::path::Path;

/// Loads the graph checkpoint and inserts the vectors after it, or rebuilds the graph from
/// the stored vectors when the checkpoint is missing, corrupt or inconsistent. Returns the
/// graph, the size of the checkpoint used, and how many vectors were inserted after it.
pub fn load_graph(hnsw_dir: &Path, config: &VectorConfig, index: &Index, model_sha256: &str) -> Result<(VectorIndex, u64, u64)> {
    let vectorized_seq = index.vectorized_seq()?;
    let (graph, after, skip, count) = match VectorIndex::load(hnsw_dir, model_sha256) {
        Ok(Some((graph, info))) if info.seq <= vectorized_seq => {
            let count = info.count;
            (graph, info.seq, info.extra.into_iter().collect::<HashSet<u64>>(), count)
        }
        Ok(Some((_, info))) => {
            tracing::warn!(
                checkpoint_seq = info.seq,
                vectorized_seq,
                "HNSW checkpoint is ahead of the stored vectors; rebuilding the graph"
            );
            (VectorIndex::new(config, 0), 0, HashSet::new(), 0)
        }
        Ok(None) => (VectorIndex::new(config, 0), 0, HashSet::new(), 0),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "HNSW checkpoint unusable; rebuilding the graph from stored vectors");
            (VectorIndex::new(config, 0), 0, HashSet::new(), 0)
        }
    };
    let inserted = insert_stored_after(&graph, index, after, &skip)?;
    Ok((graph, count, inserted))
}

/// Inserts every stored vector with `seq` above `after` except those in `skip` (already in
/// the graph); returns how many were inserted.
pub fn insert_stored_after(graph: &VectorIndex, index: &Index, after: u64, skip: &HashSet<u64>) -> Result<u64> {
    let mut cursor = after;
    let mut inserted = 0u64;
    loop {
        let chunk = index.vectors_after(cursor, 20_000)?;
        let Some(last) = chunk.last().map(|(s, _)| *s) else { break };
        let fresh: Vec<(u64, Vec<f32>)> = chunk.into_iter().filter(|(s, _)| !skip.contains(s)).collect();
        graph.insert_many(&fresh);
        inserted += fresh.len() as u64;
        cursor = last;
    }
    Ok(inserted)
}

/// Adds the filter metadata of every event with `seq` above `after` to the catalog.
pub fn catalog_events_after(catalog: &mut Catalog, index: &Index, after: u64) -> Result<()> {
    index.for_each_event_meta_after(after, |seq, ts, element, kind, action, source, priority| {
        Ok(catalog.insert(seq, ts, element, kind, action, source, priority)?)
    })
}
