//! The NetworkManager source (see nm_watch.rs for the protocol handling).

use super::Sink;
use crate::engine::Engine;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(bus: String, coalesce: Duration, sink: Sink, engine: Arc<Engine>) {
    let _ = (bus, coalesce, sink, engine);
    std::future::pending::<()>().await
}
