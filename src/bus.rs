//! The one place a D-Bus connection is made, for the service and for the NetworkManager
//! source alike.

use anyhow::{Context, Result, bail};
use std::time::Duration;
use zbus::Connection;
use zbus::connection::Builder;

/// How long any method call on our connections may wait for its reply: a peer that never
/// answers becomes an error instead of a task stuck for ever.
pub const METHOD_TIMEOUT: Duration = Duration::from_secs(25);

/// Connects to `system`, `session`, or an explicit address (`unix:path=…`).
pub async fn connect(bus: &str) -> Result<Connection> {
    let builder = match bus {
        "system" => Builder::system()?,
        "session" => Builder::session()?,
        address if address.contains(':') => Builder::address(address).with_context(|| format!("bad D-Bus address {address:?}"))?,
        other => bail!("--bus must be system, session or a D-Bus address, not {other:?}"),
    };
    builder.method_timeout(METHOD_TIMEOUT).build().await.with_context(|| format!("connecting to the {bus} bus"))
}
