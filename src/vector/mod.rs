//! Vector search structures: the HNSW graph with its checkpoints, and the filter catalog.

mod catalog;
mod graph;
mod graph_file;
mod hnsw;
mod load;
mod quantized;

pub use catalog::{Catalog, CompiledFilter, Filters};
pub use hnsw::{CheckpointInfo, VectorIndex};
pub use load::{catalog_events_after, insert_stored_after, load_graph};

/// Little-endian f32 bytes, as vectors are stored in SQLite.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Dot product (= cosine similarity for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
