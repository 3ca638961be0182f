//! `[fleet]`: the daemons a query across hosts asks, and named groups of them.

use crate::ssh::{check_destination, check_ssh_options};
use anyhow::{Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The system bus, where an installed daemon serves.
pub const SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";
/// A query across hosts gives up on the daemons that have not answered by then.
const DEFAULT_DEADLINE_MS: u64 = 3000;
/// The longest deadline a config or a caller may set.
pub const MAX_DEADLINE_MS: u64 = 600_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// How long a query across daemons may take in all (ms); late daemons are reported.
    pub deadline_ms: u64,
    /// Named groups of daemons (`search --fleet NAME`).
    pub groups: BTreeMap<String, Vec<String>>,
    /// The daemons a query may ask (`search --hosts NAME,…`).
    pub hosts: Vec<FleetHost>,
    /// Keep each ssh connection this many seconds after a query, for the next ones (ssh's
    /// ControlMaster); 0: a new connection per query.
    pub keep_connections_s: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self { deadline_ms: DEFAULT_DEADLINE_MS, groups: BTreeMap::new(), hosts: Vec::new(), keep_connections_s: 60 }
    }
}

/// How a daemon of the fleet is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FleetTransport {
    /// D-Bus over ssh: `ssh DESTINATION systemd-stdio-bridge --bus-path=BUS`, as
    /// `busctl --host` does.
    #[default]
    Ssh,
    /// A bus reachable from here (`bus` is its address): a daemon on this host.
    Local,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetHost {
    /// A short name (letters, digits, - and _), as `--hosts` names it.
    pub name: String,
    #[serde(default)]
    pub transport: FleetTransport,
    /// `user@host`, for ssh.
    #[serde(default)]
    pub destination: String,
    /// The ssh private key (on the far side best pinned to `systemd-stdio-bridge`).
    #[serde(default)]
    pub identity: PathBuf,
    /// The known_hosts file with the host's pinned key; empty: ssh's default.
    #[serde(default)]
    pub known_hosts: PathBuf,
    /// Allow-listed ssh options, as for replicas.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// The bus the daemon serves on: on the far side for ssh, here for local.
    #[serde(default = "system_bus")]
    pub bus: String,
}

fn system_bus() -> String {
    SYSTEM_BUS.into()
}

impl FleetConfig {
    pub fn validate(&self) -> Result<()> {
        if self.keep_connections_s > 86_400 {
            bail!("fleet.keep_connections_s must be at most 86400, not {}", self.keep_connections_s);
        }
        if !(1..=MAX_DEADLINE_MS).contains(&self.deadline_ms) {
            bail!("fleet.deadline_ms must be between 1 and {MAX_DEADLINE_MS}, not {}", self.deadline_ms);
        }
        let mut names = std::collections::HashSet::new();
        for host in &self.hosts {
            host.validate()?;
            if !names.insert(host.name.as_str()) {
                bail!("fleet.hosts: the name {:?} is used twice", host.name);
            }
        }
        for (group, members) in &self.groups {
            if members.is_empty() {
                bail!("fleet.groups.{group} names no host");
            }
            if let Some(unknown) = members.iter().find(|m| !names.contains(m.as_str())) {
                bail!("fleet.groups.{group} names {unknown:?}, which is not in fleet.hosts");
            }
        }
        Ok(())
    }

    /// The hosts named by `--hosts` (a list of names) or `--fleet` (a group); unknown names
    /// are an error listing the known ones.
    pub fn resolve(&self, hosts: &[String], group: Option<&str>) -> Result<Vec<FleetHost>> {
        let known = || self.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ");
        let names: Vec<String> = match group {
            Some(g) => match self.groups.get(g) {
                Some(members) => members.clone(),
                None => {
                    bail!("no fleet group {g:?} in the config (groups: {})", self.groups.keys().cloned().collect::<Vec<_>>().join(", "))
                }
            },
            None => hosts.to_vec(),
        };
        if names.is_empty() {
            bail!("name the hosts to ask (--hosts a,b) or a group (--fleet NAME)");
        }
        let mut out: Vec<FleetHost> = Vec::new();
        for name in names {
            let Some(host) = self.hosts.iter().find(|h| h.name == name) else {
                bail!("no host {name:?} in the config's [[fleet.hosts]] (hosts: {})", known());
            };
            if !out.iter().any(|h| h.name == name) {
                out.push(host.clone());
            }
        }
        Ok(out)
    }
}

impl FleetHost {
    fn validate(&self) -> Result<()> {
        let name = &self.name;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
            bail!("fleet.hosts: name {name:?} must be 1 to 64 letters, digits, - or _");
        }
        match self.transport {
            FleetTransport::Ssh => {
                check_destination(&format!("fleet.hosts {name}"), &self.destination)?;
                // The bus address reaches the far side's shell as one word.
                if self.bus.is_empty() || !self.bus.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:=,".contains(c)) {
                    bail!("fleet.hosts {name}: bus {:?} must be a D-Bus address of letters, digits and / . _ - : = ,", self.bus);
                }
                check_ssh_options(&format!("fleet.hosts {name}"), &self.ssh_options)
            }
            FleetTransport::Local if self.bus.is_empty() => bail!("fleet.hosts {name}: a local host needs its bus address"),
            FleetTransport::Local => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FleetConfig> {
        let config: FleetConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn hosts_and_groups_are_checked_and_resolved() {
        let config = parse(
            "deadline_ms = 1000\n[groups]\nprod = [\"r1\", \"r2\"]\n[[hosts]]\nname = \"r1\"\ndestination = \"root@10.0.0.2\"\n[[hosts]]\nname = \"r2\"\ntransport = \"local\"\nbus = \"unix:path=/run/x\"\n",
        )
        .unwrap();
        assert_eq!(config.resolve(&[], Some("prod")).unwrap().len(), 2);
        assert_eq!(config.resolve(&["r2".into(), "r2".into()], None).unwrap().len(), 1);
        let err = config.resolve(&["r9".into()], None).unwrap_err().to_string();
        assert!(err.contains("r1, r2"), "{err}");
        assert!(config.resolve(&[], Some("dev")).is_err());
        assert!(parse("[groups]\nprod = [\"nope\"]\n").is_err());
        assert!(parse("[[hosts]]\nname = \"r1\"\ndestination = \"root@h;rm\"\n").is_err());
        assert!(parse("[[hosts]]\nname = \"r1\"\ndestination = \"h\"\nbus = \"unix:path=/x y\"\n").is_err());
        assert!(parse("[[hosts]]\nname = \"r1\"\ndestination = \"h\"\nssh_options = [\"-o\", \"ProxyCommand=x\"]\n").is_err());
        assert!(parse("deadline_ms = 0\n").is_err());
    }
}
