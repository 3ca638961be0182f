//! Vectorize at creation: a local ONNX sentence model behind a prioritised worker pool.

mod cache;
mod model;
mod pool;
pub mod text;

pub use cache::TextCache;
pub use model::{DIMENSION, MODEL_NAME, ModelFiles, SentenceModel, init_runtime, normalize};
pub use pool::{EmbedPool, Embedded, PoolStats};
