//! Read-only search on a data set without the daemon: a live state directory, a snapshot or
//! a replica's received copy. Loads the graph and a model for queries only; nothing is
//! written and nothing is re-embedded. Says how much of the history it cannot search.

use crate::config::Config;
use crate::dataset::DataSet;
use crate::embed::QueryEmbedder;
use crate::layout::Layout;
use crate::search::{Answer, ReadMode, Readers, SearchState, catalog_events_after, load_graph};
use crate::vector::{Catalog, Filters};
use anyhow::{Result, bail};
use std::sync::{Arc, RwLock};

pub struct OfflineReader {
    pub search: SearchState,
    queries: QueryEmbedder,
    /// Events through this seq have vectors.
    pub vectorized_seq: u64,
    /// Events in the index, and in the ledger but not yet in the index.
    pub indexed_seq: u64,
    pub unindexed: u64,
}

impl OfflineReader {
    pub fn open(layout: &Layout, config: &Config) -> Result<Self> {
        let dataset = DataSet::open_read_only(layout)?;
        let index = dataset.index();
        let queries = QueryEmbedder::load(&config.embedding)?;
        if let Some((_, stored)) = index.model()?
            && stored != queries.model_sha256()
        {
            bail!(
                "the vectors in {} come from model sha256 {stored}, but the configured model is {}; configure that model to search them",
                layout.index_path().display(),
                queries.model_sha256()
            );
        }
        let mut catalog = Catalog::default();
        catalog_events_after(&mut catalog, index, 0)?;
        let (graph, _, _) = load_graph(&layout.hnsw_dir(), &config.vector, index, queries.model_sha256())?;
        let mode = if layout.read_only { ReadMode::Snapshot } else { ReadMode::Live };
        Ok(Self {
            search: SearchState::new(
                graph,
                Arc::new(RwLock::new(catalog)),
                Readers::new(&layout.index_path(), mode),
                config.vector.ef_search,
            ),
            vectorized_seq: index.vectorized_seq()?,
            indexed_seq: index.covered_seq()?,
            unindexed: dataset.unindexed()?,
            queries,
        })
    }

    /// Embeds text with the model the stored vectors come from.
    pub fn embed_text(&self, text: &str) -> Result<Arc<[f32]>> {
        self.queries.embed(text)
    }

    pub fn search(&self, query: &str, limit: usize, filters: &Filters) -> Result<Answer> {
        let mut answer = self.search.answer_now(query, limit, filters, |text| self.queries.embed(text))?;
        answer.note_unvectorized(
            self.indexed_seq.saturating_sub(self.vectorized_seq) + self.unindexed,
            "embed them with `ovs-port-agent reembed`, or start the daemon, which embeds them",
        );
        Ok(answer)
    }
}
