//! Vectorize at creation: a local ONNX sentence model behind a prioritised worker pool
//! (`pool`), the semantic text of an event (`text`), and query embedding outside the pool
//! for offline search and replicas (`query`).

mod cache;
mod model;
mod pool;
mod query;
pub mod text;

pub use cache::TextCache;
pub use model::{DIMENSION, MODEL_NAME, ModelFiles, SentenceModel, init_runtime, normalize};
pub use pool::{EmbedPool, Embedded, PoolStats, QUERY_BURST};
pub use query::QueryEmbedder;
