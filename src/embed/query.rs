//! Embedding search queries outside the daemon's worker pool (offline search, replicas):
//! one model behind a lock and a bounded cache, so a repeated query (a dashboard, a client
//! polling) costs a search, not an embedding.

use super::{ModelFiles, SentenceModel, TextCache};
use crate::config::EmbeddingConfig;
use anyhow::{Result, anyhow};
use std::sync::{Arc, Mutex};

pub struct QueryEmbedder {
    model: Mutex<SentenceModel>,
    cache: Mutex<TextCache>,
    model_sha256: String,
}

impl QueryEmbedder {
    pub fn load(config: &EmbeddingConfig) -> Result<Self> {
        let files = ModelFiles::locate(config)?;
        let model = SentenceModel::load(&files, config.max_length)?;
        Ok(Self { model: Mutex::new(model), cache: Mutex::new(TextCache::new(config.cache_entries)), model_sha256: files.model_sha256 })
    }

    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    pub fn embed(&self, text: &str) -> Result<Arc<[f32]>> {
        let key = TextCache::key(text);
        if let Some(v) = self.cache.lock().expect("query cache lock").get(key) {
            return Ok(v);
        }
        let v: Arc<[f32]> = self.model.lock().expect("model lock").embed(&[text])?.pop().ok_or_else(|| anyhow!("no embedding"))?.into();
        self.cache.lock().expect("query cache lock").insert(key, v.clone());
        Ok(v)
    }
}
