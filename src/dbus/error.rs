//! The one place D-Bus errors are made: bad input is the standard
//! `org.freedesktop.DBus.Error.InvalidArgs`; everything else a `dev.ovs.PortAgent1.Error.*`.

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
    /// The ledger is damaged and refuses appends.
    #[error("{0}")]
    LedgerDamaged(String),
    /// This daemon is a replica and does not take writes.
    #[error("{0}")]
    ReadOnly(String),
    /// Something failed inside the daemon (I/O, a full disk, the model).
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
            Self::InvalidArgs(m) | Self::AccessDenied(m) | Self::LedgerDamaged(m) | Self::ReadOnly(m) | Self::Internal(m) => m,
        }
    }
}

impl From<anyhow::Error> for AgentError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(format!("{e:#}"))
    }
}

impl From<crate::ledger::LedgerError> for AgentError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        use crate::ledger::LedgerError as L;
        match e {
            L::Invalid(e) => Self::InvalidArgs(e.to_string()),
            L::Damaged(_) => Self::LedgerDamaged(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl zbus::DBusError for AgentError {
    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(match self {
            Self::InvalidArgs(_) => "org.freedesktop.DBus.Error.InvalidArgs",
            Self::AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            Self::LedgerDamaged(_) => "dev.ovs.PortAgent1.Error.LedgerDamaged",
            Self::ReadOnly(_) => "dev.ovs.PortAgent1.Error.ReadOnly",
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
