//! Streaming to replicas.
pub mod snapshot;
pub mod frame;
pub mod receive;
pub mod session;
pub mod streamer;
