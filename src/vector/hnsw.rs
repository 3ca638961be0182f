//! The in-memory HNSW graph over event vectors (ids are `seq`s), and its checkpoints.
//!
//! A checkpoint rewrites the whole graph, so it is taken only when the vectors added since
//! the last one reach a fraction of it (and at shutdown): the bytes rewritten, and so sent
//! to replicas, stay proportional to what is new, amortized.

use crate::config::VectorConfig;
use crate::ledger::segment::sync_dir;
use anyhow::{Context, Result, bail};
use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{DistDot, FilterT, Hnsw};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

const CHECKPOINT_FILE: &str = "CHECKPOINT";
const MAX_LAYERS: usize = 16;

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
    /// File stem of `<basename>.hnsw.graph` / `.hnsw.data`.
    pub basename: String,
    pub model_sha256: String,
}

pub struct VectorIndex {
    hnsw: Hnsw<'static, f32, DistDot>,
    count: AtomicU64,
}

impl VectorIndex {
    pub fn new(config: &VectorConfig, capacity: usize) -> Self {
        let hnsw = Hnsw::new(config.max_connections, capacity.max(100_000), MAX_LAYERS, config.ef_construction, DistDot {});
        Self { hnsw, count: AtomicU64::new(0) }
    }

    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one unit vector under its `seq`.
    pub fn insert(&self, seq: u64, vector: &[f32]) {
        self.hnsw.insert_slice((vector, seq as usize));
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Inserts many vectors using every core.
    pub fn insert_many(&self, items: &[(u64, Vec<f32>)]) {
        let refs: Vec<(&[f32], usize)> = items.iter().map(|(s, v)| (v.as_slice(), *s as usize)).collect();
        self.hnsw.parallel_insert_slice(&refs);
        self.count.fetch_add(items.len() as u64, Ordering::Relaxed);
    }

    /// The `k` nearest `(seq, score)` with score = cosine similarity (vectors are unit
    /// length), keeping only ids the filter accepts, checked during traversal.
    pub fn search(&self, query: &[f32], k: usize, ef: usize, filter: Option<&dyn FilterT>) -> Vec<(u64, f32)> {
        if self.is_empty() {
            return Vec::new();
        }
        self.hnsw.search_filter(query, k, ef.max(k), filter).into_iter().map(|n| (n.d_id as u64, 1.0 - n.distance)).collect()
    }

    /// Writes the graph to `dir` as a new checkpoint covering `seq`, then removes older ones.
    pub fn checkpoint(&self, dir: &Path, seq: u64, extra: Vec<u64>, model_sha256: &str) -> Result<CheckpointInfo> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let wanted = format!("graph-{seq:020}");
        let basename = self.hnsw.file_dump(dir, &wanted).with_context(|| format!("writing the HNSW graph to {}", dir.display()))?;
        for suffix in ["hnsw.graph", "hnsw.data"] {
            let path = dir.join(format!("{basename}.{suffix}"));
            std::fs::File::open(&path).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", path.display()))?;
        }
        let info = CheckpointInfo { seq, count: self.len(), extra, basename: basename.clone(), model_sha256: model_sha256.to_owned() };
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&info)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
        sync_dir(dir)?;
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
    /// unreadable, incomplete or of another model (the caller rebuilds from stored vectors).
    pub fn load(dir: &Path, model_sha256: &str) -> Result<Option<(Self, CheckpointInfo)>> {
        let info_path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read(&info_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", info_path.display())),
        };
        let info: CheckpointInfo = serde_json::from_slice(&text).with_context(|| format!("parsing {}", info_path.display()))?;
        if info.model_sha256 != model_sha256 {
            bail!("checkpoint was built with model {}, not {model_sha256}", info.model_sha256);
        }
        for suffix in ["hnsw.graph", "hnsw.data"] {
            let path = dir.join(format!("{}.{suffix}", info.basename));
            if !path.is_file() {
                bail!("checkpoint file {} is missing", path.display());
            }
        }
        // The loaded graph borrows its loader; the loader is tiny and lives as long as the
        // process, so leaking it gives the graph a 'static lifetime.
        let hnsw = std::panic::catch_unwind(|| {
            let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, &info.basename)));
            io.load_hnsw::<f32, DistDot>()
        })
        .map_err(|_| anyhow::anyhow!("the HNSW loader panicked on {}", info.basename))?
        .with_context(|| format!("loading HNSW checkpoint {}", info.basename))?;
        let count = hnsw.get_nb_point() as u64;
        if count != info.count {
            bail!("checkpoint {} holds {count} vectors, its CHECKPOINT says {}", info.basename, info.count);
        }
        Ok(Some((Self { hnsw, count: AtomicU64::new(count) }, info)))
    }
}
