//! Streaming to replicas.
pub mod frame;
pub mod receive;
pub mod session;
pub mod snapshot;
pub mod streamer;
