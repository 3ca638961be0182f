//! ovs-port-agent: a tamper-evident, semantically searchable history of NetworkManager and
//! Open vSwitch changes. The binary (`src/main.rs`) is a thin shell over this library.

pub mod btrfs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod embed;
pub mod engine;
pub mod event;
pub mod import;
pub mod index;
pub mod layout;
pub mod ledger;
pub mod lock;
pub mod metrics;
pub mod reader;
pub mod replica;
pub mod search;
pub mod sources;
pub mod store;
pub mod stream;
pub mod vector;
