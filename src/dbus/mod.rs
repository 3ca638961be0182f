//! The D-Bus adapter: one place builds the connection, `interface` holds the object,
//! `args` checks arguments and `error` maps failures to D-Bus errors.

pub mod args;
pub mod backend;
pub mod error;
pub mod interface;

use anyhow::{Context, Result, bail};
pub use interface::{BUS_NAME, OBJECT_PATH, PortAgent};
use zbus::Connection;
use zbus::connection::Builder;

/// Connects to `system`, `session`, or an explicit address (`unix:path=…`).
pub async fn connect(bus: &str) -> Result<Connection> {
    let builder = match bus {
        "system" => Builder::system()?,
        "session" => Builder::session()?,
        address if address.contains(':') => Builder::address(address).with_context(|| format!("bad D-Bus address {address:?}"))?,
        other => bail!("--bus must be system, session or a D-Bus address, not {other:?}"),
    };
    builder.build().await.with_context(|| format!("connecting to the {bus} bus"))
}
