//! The D-Bus adapter: one place builds the connection, `interface` holds the object,
//! `args` checks arguments and `error` maps failures to D-Bus errors.

pub mod args;
pub mod backend;
pub mod error;
pub mod fairness;
pub mod interface;
pub mod pacing;

pub use crate::bus::connect;
pub use interface::{BUS_NAME, OBJECT_PATH, PortAgent};
