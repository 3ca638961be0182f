//! The in-memory HNSW graph over event vectors (ids are `seq`s), and its checkpoints. A
//! checkpoint keeps the graph's shape (M, ef_construction) it was built with.
//!
//! A checkpoint rewrites the whole graph, so it is taken only when the vectors added since
//! the last one reach a fraction of it (and at shutdown): the bytes rewritten, and so sent
//! to replicas, stay proportional to what is new, amortized.

use super::DIMENSION;
use super::graph::{Graph, Shape};
use super::graph_file;
use crate::config::VectorConfig;
use crate::durable;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

const CHECKPOINT_FILE: &str = "CHECKPOINT";
/// The CHECKPOINT file is a few hundred bytes plus the out-of-order `extra` seqs.
const MAX_CHECKPOINT_INFO_BYTES: u64 = 64 << 20;
/// How the graph is stored; a checkpoint in another format (hnsw_rs's, from earlier
/// builds) is rebuilt from the stored vectors.
const GRAPH_FORMAT: &str = "compact-i8-v1";

/// What a checkpoint covers, written last (atomically) so a half-written graph is never used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointInfo {
    /// Every vector with `seq` up to this is in the graph.
    pub seq: u64,
    /// Number of vectors in the graph.
    pub count: u64,
    /// Vectors above `seq` that were already in the graph (embedding runs by priority, so
    /// a critical event can be in before older low ones); not to be inserted again.
    #[serde(default)]
    pub extra: Vec<u64>,
    /// File stem of `<basename>.graph`.
    pub basename: String,
    pub model_sha256: String,
    /// How the graph is stored (checkpoints of hnsw_rs graphs have none).
    #[serde(default)]
    pub graph_format: String,
}

pub struct VectorIndex {
    graph: Graph,
}

impl VectorIndex {
    pub fn new(config: &VectorConfig, capacity: usize) -> Self {
        let shape = Shape { m: config.max_connections, ef_construction: config.ef_construction };
        Self { graph: Graph::new(shape, DIMENSION, capacity) }
    }

    pub fn len(&self) -> u64 {
        self.graph.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one unit vector under its `seq`.
    pub fn insert(&self, seq: u64, vector: &[f32]) {
        self.graph.insert(seq, vector);
    }

    /// Inserts many vectors using every core.
    pub fn insert_many(&self, items: &[(u64, Vec<f32>)]) {
        let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).min(items.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((seq, v)) = items.get(i) else { break };
                        self.graph.insert(*seq, v);
                    }
                });
            }
        });
    }

    /// The `k` nearest `(seq, score)` with score ≈ cosine similarity (vectors are unit
    /// length; the graph's 8-bit copies make it approximate to about ±0.01), keeping only
    /// `seq`s the filter accepts, checked during traversal.
    pub fn search(&self, query: &[f32], k: usize, ef: usize, filter: Option<&dyn Fn(u64) -> bool>) -> Vec<(u64, f32)> {
        self.graph.search(query, k, ef, filter).into_iter().map(|(seq, distance)| (seq, 1.0 - distance)).collect()
    }

    /// [`search`](Self::search) with the walk's `ef` results re-ranked against the exact
    /// query vector: scores within 0.005 of the exact ones (`mixed_dot`), no stored vector read.
    pub fn search_refined(&self, query: &[f32], k: usize, ef: usize, filter: Option<&dyn Fn(u64) -> bool>) -> Vec<(u64, f32)> {
        self.graph.search_refined(query, k, ef, filter).into_iter().map(|(seq, distance)| (seq, 1.0 - distance)).collect()
    }

    /// Writes the graph to `dir` as a new checkpoint covering `seq`, then removes older ones.
    pub fn checkpoint(&self, dir: &Path, seq: u64, extra: Vec<u64>, model_sha256: &str) -> Result<CheckpointInfo> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let basename = format!("graph-{seq:020}");
        let path = dir.join(format!("{basename}.graph"));
        let count = self.graph.with_nodes(|nodes| graph_file::write(&path, self.graph.shape(), nodes).map(|()| nodes.len() as u64))?;
        let info = CheckpointInfo {
            seq,
            count,
            extra,
            basename: basename.clone(),
            model_sha256: model_sha256.to_owned(),
            graph_format: GRAPH_FORMAT.to_owned(),
        };
        durable::replace(&dir.join(CHECKPOINT_FILE), &serde_json::to_vec_pretty(&info)?)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with("graph-") && !name.starts_with(&format!("{basename}.")) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(info)
    }

    /// Loads the checkpoint in `dir`. `Ok(None)` when there is none; an error when it is
    /// unreadable, incomplete, of another format or of another model (the caller rebuilds
    /// from stored vectors).
    pub fn load(dir: &Path, model_sha256: &str) -> Result<Option<(Self, CheckpointInfo)>> {
        let info_path = dir.join(CHECKPOINT_FILE);
        if std::fs::symlink_metadata(&info_path).is_err() {
            return Ok(None);
        }
        let text = durable::read_limited(&info_path, MAX_CHECKPOINT_INFO_BYTES)?;
        let info: CheckpointInfo = serde_json::from_slice(&text).with_context(|| format!("parsing {}", info_path.display()))?;
        if info.model_sha256 != model_sha256 {
            bail!("checkpoint was built with model {}, not {model_sha256}", info.model_sha256);
        }
        if info.graph_format != GRAPH_FORMAT {
            bail!("checkpoint is stored as {:?}, this version reads {GRAPH_FORMAT:?}", info.graph_format);
        }
        let path = dir.join(format!("{}.graph", info.basename));
        let (shape, nodes) = graph_file::read(&path, DIMENSION)?;
        if nodes.len() as u64 != info.count {
            bail!("checkpoint {} holds {} vectors, its CHECKPOINT says {}", path.display(), nodes.len(), info.count);
        }
        Ok(Some((Self { graph: Graph::from_nodes(shape, nodes) }, info)))
    }
}
