//! ovs-port-agent: a tamper-evident, semantically searchable history of NetworkManager and
//! Open vSwitch changes. The binary (`src/main.rs`) is a thin shell over this library;
//! `docs/ARCHITECTURE.md` walks through the modules and how data moves between them.

pub mod analytics;
pub mod anchor;
#[cfg(test)]
mod arbitrary_json;
pub mod backoff;
pub mod btrfs;
pub mod bus;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataset;
pub mod dbus;
pub mod durable;
pub mod embed;
pub mod engine;
pub mod event;
pub mod failure;
pub mod fanout;
pub mod faults;
pub mod fleet;
pub mod glossary;
pub mod health;
pub mod import;
pub mod index;
pub mod layout;
pub mod ledger;
pub mod lock;
pub mod metrics;
pub mod names;
pub mod reader;
pub mod reload;
pub mod replica;
pub mod sched;
pub mod search;
pub mod sources;
pub mod ssh;
pub mod stream;
pub mod supervisor;
pub mod text;
pub mod vector;
