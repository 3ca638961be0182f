//! Vector search structures, knowing nothing of where vectors are stored: the HNSW graph
//! with its checkpoints, and the filter catalog.

mod catalog;
mod graph;
mod graph_file;
mod hnsw;
mod quantized;

pub use catalog::{Catalog, CatalogGap, CompiledFilter, Filters};

/// The dimension of every stored vector (the sentence model's output, all-MiniLM-L6-v2).
pub const DIMENSION: usize = 384;
pub use hnsw::{CheckpointInfo, VectorIndex};

/// Dot product (= cosine similarity for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
