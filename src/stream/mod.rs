//! Streaming to replicas: consistent snapshots (`snapshot`) taken when due (`trigger`),
//! sent by one worker per replica over a long-lived session (`streamer`, `session`, framed
//! as in `frame`), and received, checked and kept on the replica (`receive`, which filters
//! the stream with `guard` and checks what arrived with `tree` and `identity`).
pub mod frame;
pub mod guard;
pub mod identity;
pub mod receive;
pub mod session;
pub mod snapshot;
pub mod streamer;
pub mod tree;
pub mod trigger;
