//! The one place D-Bus errors are made: bad input is the standard
//! `org.freedesktop.DBus.Error.InvalidArgs`; everything else a `dev.ovs.PortAgent1.Error.*`
//! that tells the kinds of failure apart (see `crate::failure`).

use crate::failure::{Kind, classify};
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The caller's arguments are wrong; the message says which and why.
    #[error("{0}")]
    InvalidArgs(String),
    /// The caller may not call this member.
    #[error("{0}")]
    AccessDenied(String),
    /// The ledger (or the index) is damaged.
    #[error("{0}")]
    LedgerDamaged(String),
    /// This daemon is a replica and does not take writes.
    #[error("{0}")]
    ReadOnly(String),
    /// A queue is full (query embeddings, verification); try again shortly.
    #[error("{0}")]
    Busy(String),
    /// No space left on the data's file system.
    #[error("{0}")]
    DiskFull(String),
    /// What the caller named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A replica's copy is older than the caller required, and did not catch up in time.
    #[error("{0}")]
    Stale(String),
    /// Something else failed inside the daemon.
    #[error("{0}")]
    Internal(String),
}

impl AgentError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgs(msg.into())
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    fn message(&self) -> &str {
        match self {
            Self::InvalidArgs(m)
            | Self::AccessDenied(m)
            | Self::LedgerDamaged(m)
            | Self::ReadOnly(m)
            | Self::Busy(m)
            | Self::DiskFull(m)
            | Self::NotFound(m)
            | Self::Stale(m)
            | Self::Internal(m) => m,
        }
    }
}

impl From<anyhow::Error> for AgentError {
    fn from(e: anyhow::Error) -> Self {
        let message = format!("{e:#}");
        match classify(&e) {
            Kind::InvalidInput => Self::InvalidArgs(message),
            Kind::NotFound => Self::NotFound(message),
            Kind::Stale => Self::Stale(message),
            Kind::Busy => Self::Busy(message),
            Kind::DiskFull => Self::DiskFull(message),
            Kind::Damaged => Self::LedgerDamaged(message),
            Kind::ReadOnly => Self::ReadOnly(message),
            Kind::Internal => Self::Internal(message),
        }
    }
}

impl From<crate::ledger::LedgerError> for AgentError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        Self::from(anyhow::Error::new(e))
    }
}

impl zbus::DBusError for AgentError {
    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(match self {
            Self::InvalidArgs(_) => "org.freedesktop.DBus.Error.InvalidArgs",
            Self::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            Self::LedgerDamaged(_) => "dev.ovs.PortAgent1.Error.LedgerDamaged",
            Self::ReadOnly(_) => "dev.ovs.PortAgent1.Error.ReadOnly",
            Self::Busy(_) => "dev.ovs.PortAgent1.Error.Busy",
            Self::DiskFull(_) => "dev.ovs.PortAgent1.Error.DiskFull",
            Self::NotFound(_) => "dev.ovs.PortAgent1.Error.NotFound",
            Self::Stale(_) => "dev.ovs.PortAgent1.Error.Stale",
            Self::Internal(_) => "dev.ovs.PortAgent1.Error.Internal",
        })
    }

    fn description(&self) -> Option<&str> {
        Some(self.message())
    }

    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name())?.build(&(self.message(),))
    }
}
