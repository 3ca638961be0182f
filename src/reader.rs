//! Read-only access to a data set without the daemon: a live state directory, a snapshot
//! or a replica's received copy. Loads the graph and a model for queries only; nothing is
//! written and nothing is re-embedded.

use crate::config::Config;
use crate::embed::{ModelFiles, SentenceModel, TextCache};
use crate::index::Index;
use crate::layout::Layout;
use crate::search::{Hit, Readers, SearchState};
use crate::vector::{Catalog, Filters, catalog_events_after, insert_stored_after, load_graph};
use anyhow::{Result, anyhow, bail};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

pub struct OfflineReader {
    pub search: SearchState,
    model: Arc<Mutex<SentenceModel>>,
    /// Query embeddings, so a repeated query (a dashboard, a client polling) costs a search only.
    queries: Arc<Mutex<TextCache>>,
    model_sha256: String,
    pub vectorized_seq: u64,
    /// Events in the filter catalog through this seq.
    indexed_seq: u64,
    /// Vectors above `vectorized_seq` already in the graph (embedded out of order).
    extra: HashSet<u64>,
}

/// Opens the index of a data set for reading (immutable for snapshots).
pub fn open_index(layout: &Layout) -> Result<Index> {
    let path = layout.index_path();
    if !path.is_file() {
        bail!("no index at {} (run `ovs-port-agent rebuild --data-dir {}`)", path.display(), layout.root.display());
    }
    if layout.read_only { Index::open_read_only(&path) } else { Index::open(&path) }
}

impl OfflineReader {
    pub fn open(layout: &Layout, config: &Config) -> Result<Self> {
        let index = open_index(layout)?;
        let files = ModelFiles::locate(&config.embedding)?;
        if let Some(stored) = index.meta("model_sha256")? {
            if stored != files.model_sha256 {
                bail!(
                    "the vectors in {} come from model sha256 {stored}, but the configured model is {}; configure that model to search them",
                    layout.index_path().display(),
                    files.model_sha256
                );
            }
        }
        let mut catalog = Catalog::default();
        catalog_events_after(&mut catalog, &index, 0)?;
        let (graph, _, _) = load_graph(&layout.hnsw_dir(), &config.vector, &index, &files.model_sha256)?;
        let vectorized_seq = index.vectorized_seq()?;
        let model = SentenceModel::load(&files, config.embedding.max_length)?;
        Ok(Self {
            search: SearchState {
                graph: RwLock::new(Arc::new(graph)),
                catalog: Arc::new(RwLock::new(catalog)),
                readers: Readers::new(&layout.index_path(), layout.read_only),
                ef_search: config.vector.ef_search,
            },
            model: Arc::new(Mutex::new(model)),
            queries: Arc::new(Mutex::new(TextCache::new(config.embedding.cache_entries))),
            model_sha256: files.model_sha256,
            vectorized_seq,
            indexed_seq: index.covered_seq()?,
            extra: index.vector_seqs_after(vectorized_seq)?.into_iter().collect(),
        })
    }

    /// The same history one snapshot later: shares the graph, the filter catalog, the model
    /// and the query cache with `self` (the first two only grow) and adds what is new, so
    /// switching costs what arrived, not the whole history.
    pub fn advance(&self, layout: &Layout) -> Result<Self> {
        let index = open_index(layout)?;
        if index.meta("model_sha256")?.is_some_and(|m| m != self.model_sha256) {
            bail!("the new snapshot's vectors come from another model");
        }
        let graph = self.search.graph.read().expect("graph lock").clone();
        let catalog = self.search.catalog.clone();
        catalog_events_after(&mut catalog.write().expect("catalog lock"), &index, self.indexed_seq)?;
        insert_stored_after(&graph, &index, self.vectorized_seq, &self.extra)?;
        let vectorized_seq = index.vectorized_seq()?;
        Ok(Self {
            search: SearchState {
                graph: RwLock::new(graph),
                catalog,
                readers: Readers::new(&layout.index_path(), layout.read_only),
                ef_search: self.search.ef_search,
            },
            model: self.model.clone(),
            queries: self.queries.clone(),
            model_sha256: self.model_sha256.clone(),
            vectorized_seq,
            indexed_seq: index.covered_seq()?,
            extra: index.vector_seqs_after(vectorized_seq)?.into_iter().collect(),
        })
    }

    pub fn search(&self, query: &str, limit: usize, filters: &Filters) -> Result<Vec<Hit>> {
        let key = TextCache::key(query);
        let cached = self.queries.lock().expect("query cache lock").get(key);
        let vector = match cached {
            Some(v) => v,
            None => {
                let v: Arc<[f32]> =
                    self.model.lock().expect("model lock").embed(&[query])?.pop().ok_or_else(|| anyhow!("no embedding"))?.into();
                self.queries.lock().expect("query cache lock").insert(key, v.clone());
                v
            }
        };
        self.search.search(&vector, limit, filters)
    }
}
