//! Configuration: `/etc/ovs-port-agent/config.toml` by default. Every key has a default,
//! unknown keys are refused, and every error names the key and the file.
//!
//! `config/config.example.toml` lists every key; a test keeps the two in step.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/ovs-port-agent/config.toml";

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub ledger: LedgerConfig,
    pub embedding: EmbeddingConfig,
    pub vector: VectorConfig,
    pub sources: SourcesConfig,
    pub stream: StreamConfig,
    pub replica: ReplicaRoleConfig,
    /// The daemons `search --hosts/--fleet` and `FleetSearch` ask.
    pub fleet: crate::fleet::FleetConfig,
}

/// Whether this host records events (`primary`) or serves a received copy (`replica`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `primary` records events; `replica` serves what it receives.
    pub role: Role,
    /// Host name written into every record; empty means the kernel's host name.
    pub host: String,
    /// The state directory holding `data/` (a Btrfs subvolume) and `.snapshots/`.
    pub data_dir: PathBuf,
    /// `system`, `session`, or a D-Bus address such as `unix:path=/run/x.sock`.
    pub bus: String,
    /// Members of this group may call the read-only D-Bus members (see `dbus/`).
    pub read_group: String,
    /// Require Btrfs for the data directory (needed for snapshots and replication).
    pub require_btrfs: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            role: Role::Primary,
            host: String::new(),
            data_dir: PathBuf::from("/var/lib/ovs-port-agent"),
            bus: "system".into(),
            read_group: "netdev".into(),
            require_btrfs: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// A new segment file starts when the current one would grow past this many bytes.
    pub segment_max_bytes: u64,
    /// Most records made durable by one fsync.
    pub max_batch: usize,
    /// Append requests that may wait for the writer; callers wait beyond this.
    pub queue_capacity: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self { segment_max_bytes: 64 * 1024 * 1024, max_batch: 1024, queue_capacity: 4096 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// Directory with `model.onnx`, `tokenizer.json`, `tokenizer_config.json`,
    /// `special_tokens_map.json` and `config.json` (installed by `scripts/provision-model.sh`).
    pub model_dir: PathBuf,
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.24.4`).
    pub runtime_library: PathBuf,
    /// Embedding worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Events waiting to be embedded kept in memory; beyond this the backlog is read back
    /// from the index when the queue drains (nothing is dropped).
    pub queue_capacity: usize,
    /// Search queries waiting for their embedding; beyond this a search is refused at once
    /// as busy (`dev.ovs.PortAgent1.Error.Busy`) instead of queueing without bound.
    pub query_queue_capacity: usize,
    /// Embeddings of identical semantic texts kept for reuse.
    pub cache_entries: usize,
    /// Token limit of one text (the model's own is 256).
    pub max_length: usize,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            model_dir: PathBuf::from("/usr/lib/ovs-port-agent/model"),
            runtime_library: PathBuf::from("/usr/lib/ovs-port-agent/libonnxruntime.so.1.24.4"),
            workers: 0,
            queue_capacity: 10_000,
            query_queue_capacity: 64,
            cache_entries: 4096,
            max_length: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectorConfig {
    /// HNSW links per node.
    pub max_connections: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least the result limit).
    pub ef_search: usize,
    /// Write a new checkpoint once the vectors added since the last one reach this fraction
    /// of the checkpoint's size (and at shutdown).
    pub checkpoint_fraction: f64,
    /// … but never for fewer new vectors than this.
    pub checkpoint_min_vectors: u64,
}

impl Default for VectorConfig {
    fn default() -> Self {
        Self { max_connections: 16, ef_construction: 100, ef_search: 128, checkpoint_fraction: 0.25, checkpoint_min_vectors: 1000 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Watch Open vSwitch through its OVSDB socket.
    pub ovsdb: bool,
    /// OVSDB unix socket; empty means $OVS_RUNDIR/db.sock when OVS_RUNDIR is set (as
    /// ovs-vsctl does), else /run/openvswitch/db.sock.
    pub ovsdb_socket: PathBuf,
    /// Watch NetworkManager on the bus.
    pub networkmanager: bool,
    /// The bus NetworkManager is on: empty means agent.bus.
    pub nm_bus: String,
    /// Events waiting to be recorded; a burst beyond this is counted, recorded as a
    /// queue.overflow event and made up by reconciliation.
    pub queue_capacity: usize,
    /// PropertiesChanged bursts for one object within this many milliseconds are merged
    /// into one event (state transitions are never merged).
    pub coalesce_ms: u64,
    /// Priority overrides by action, e.g. { "link.down" = "critical" }.
    pub priorities: std::collections::HashMap<String, crate::event::Priority>,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        Self {
            ovsdb: true,
            ovsdb_socket: PathBuf::new(),
            networkmanager: true,
            nm_bus: String::new(),
            queue_capacity: 10_000,
            coalesce_ms: 100,
            priorities: std::collections::HashMap::new(),
        }
    }
}

impl SourcesConfig {
    /// The OVSDB socket to use.
    pub fn ovsdb_socket(&self) -> PathBuf {
        if !self.ovsdb_socket.as_os_str().is_empty() {
            return self.ovsdb_socket.clone();
        }
        match std::env::var_os("OVS_RUNDIR") {
            Some(dir) => PathBuf::from(dir).join("db.sock"),
            None => PathBuf::from("/run/openvswitch/db.sock"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Take snapshots and stream them (needs the data directory on Btrfs).
    pub enabled: bool,
    /// How long after a vectorized event of each priority a snapshot is taken.
    pub critical_delay_ms: u64,
    pub high_delay_ms: u64,
    pub medium_delay_ms: u64,
    pub low_delay_ms: u64,
    /// … or as soon as this many new events are vectorized.
    pub batch_events: u64,
    /// The replicas to stream to.
    pub replicas: Vec<ReplicaConfig>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            critical_delay_ms: 0,
            high_delay_ms: 1000,
            medium_delay_ms: 10_000,
            low_delay_ms: 30_000,
            batch_events: 1000,
            replicas: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaRoleConfig {
    /// With role = "replica": where `replica-receive` keeps the received snapshots; the daemon
    /// serves the newest verified one.
    pub dir: PathBuf,
}

impl Default for ReplicaRoleConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("/var/lib/ovs-port-agent-replica") }
    }
}

/// How a replica is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `ssh DESTINATION … replica-receive --dir REMOTE_DIR` (one long-lived session).
    Ssh,
    /// `ovs-port-agent replica-receive --dir REMOTE_DIR` on this host (tests, local backups).
    Local,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// A short name (letters, digits, - and _), used in logs, stats and state files.
    pub name: String,
    pub transport: Transport,
    /// `user@host` for ssh.
    #[serde(default)]
    pub destination: String,
    /// Where the replica keeps its received snapshots.
    pub remote_dir: PathBuf,
    /// The ssh private key (pinned to replica-receive on the far side).
    #[serde(default)]
    pub identity: PathBuf,
    /// The known_hosts file holding the replica's pinned host key (ssh always checks it:
    /// `StrictHostKeyChecking=yes`); empty means ssh's default (~/.ssh/known_hosts).
    #[serde(default)]
    pub known_hosts: PathBuf,
    /// Extra ssh options, `-o Name=value` pairs (or `-p PORT`), from an allow-list:
    /// Port, ConnectTimeout, ConnectionAttempts, ServerAliveInterval, ServerAliveCountMax,
    /// UserKnownHostsFile, HostKeyAlias, HostKeyAlgorithms, Ciphers, MACs, KexAlgorithms,
    /// Compression, IPQoS, LogLevel, AddressFamily, BindAddress.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// The agent binary on the far side (ignored when the key forces the command).
    #[serde(default = "default_remote_command")]
    pub remote_command: String,
    /// "off", a zstd level "1" … "19", or "auto" (zstd level 3 while recent sends ran below
    /// 100 MB/s, off above).
    #[serde(default = "default_compression")]
    pub compression: String,
    /// The replica host keeps the snapshots of many primaries: this one's go to
    /// `REMOTE_DIR/origins/<agent.host>` (`replica-receive --origin`; a restricted key
    /// should pin the same in its forced command).
    #[serde(default)]
    pub per_origin: bool,
}

fn default_compression() -> String {
    "off".into()
}

/// How a replica's streams are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Off,
    Zstd(u8),
    Auto,
}

pub use crate::ssh::{ALLOWED_SSH_OPTIONS, check_ssh_options, shell_safe};

impl ReplicaConfig {
    /// Checks one replica entry (names, paths, ssh options).
    pub fn validate(&self) -> Result<()> {
        let name = &self.name;
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
            bail!("stream.replicas: name {name:?} must be 1 to 64 letters, digits, - or _");
        }
        if self.transport == Transport::Ssh {
            crate::ssh::check_destination(&format!("stream.replicas {name}"), &self.destination)?;
        }
        self.compression()?;
        let remote = self.remote_dir.to_str().unwrap_or("");
        if !self.remote_dir.is_absolute()
            || !shell_safe(remote)
            || self.remote_dir.components().any(|c| matches!(c, std::path::Component::ParentDir))
        {
            bail!("stream.replicas {name}: remote_dir must be an absolute path of letters, digits, / . _ - without '..', not {remote:?}");
        }
        if !shell_safe(&self.remote_command) {
            bail!("stream.replicas {name}: remote_command {:?} may only hold letters, digits and / . _ -", self.remote_command);
        }
        check_ssh_options(&format!("stream.replicas {name}"), &self.ssh_options)?;
        Ok(())
    }

    pub fn compression(&self) -> Result<Compression> {
        match self.compression.as_str() {
            "off" => Ok(Compression::Off),
            "auto" => Ok(Compression::Auto),
            level => match level.parse::<u8>() {
                Ok(n @ 1..=19) => Ok(Compression::Zstd(n)),
                _ => bail!("stream.replicas {}: compression must be off, auto or a zstd level 1 to 19, not {level:?}", self.name),
            },
        }
    }
}

fn default_remote_command() -> String {
    "ovs-port-agent".into()
}

impl Config {
    /// Reads and validates a config file. A missing file is an error only when `required`
    /// (the user named it); the default path may be absent and then defaults apply.
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
        };
        let mut config: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        config.resolve_relative_paths(path.parent().unwrap_or(Path::new(".")));
        config.validate().map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        Ok(config)
    }

    /// Relative paths in a config file are relative to the file's directory.
    fn resolve_relative_paths(&mut self, base: &Path) {
        for path in [&mut self.agent.data_dir, &mut self.embedding.model_dir, &mut self.embedding.runtime_library] {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks values serde cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<()> {
        if self.ledger.segment_max_bytes < 4096 {
            bail!("ledger.segment_max_bytes must be at least 4096, not {}", self.ledger.segment_max_bytes);
        }
        if !(1..=65_536).contains(&self.ledger.max_batch) {
            bail!("ledger.max_batch must be between 1 and 65536, not {}", self.ledger.max_batch);
        }
        if self.ledger.queue_capacity == 0 {
            bail!("ledger.queue_capacity must be at least 1");
        }
        if self.embedding.workers > 64 {
            bail!("embedding.workers must be at most 64 (0 means one per core), not {}", self.embedding.workers);
        }
        if self.embedding.queue_capacity < 16 {
            bail!("embedding.queue_capacity must be at least 16, not {}", self.embedding.queue_capacity);
        }
        if !(1..=100_000).contains(&self.embedding.query_queue_capacity) {
            bail!("embedding.query_queue_capacity must be between 1 and 100000, not {}", self.embedding.query_queue_capacity);
        }
        if !(8..=512).contains(&self.embedding.max_length) {
            bail!("embedding.max_length must be between 8 and 512, not {}", self.embedding.max_length);
        }
        if !(4..=64).contains(&self.vector.max_connections) {
            bail!("vector.max_connections must be between 4 and 64, not {}", self.vector.max_connections);
        }
        if !(10..=1000).contains(&self.vector.ef_construction) {
            bail!("vector.ef_construction must be between 10 and 1000, not {}", self.vector.ef_construction);
        }
        if !(10..=1000).contains(&self.vector.ef_search) {
            bail!("vector.ef_search must be between 10 and 1000, not {}", self.vector.ef_search);
        }
        if !(self.vector.checkpoint_fraction > 0.0 && self.vector.checkpoint_fraction <= 10.0) {
            bail!("vector.checkpoint_fraction must be above 0 and at most 10, not {}", self.vector.checkpoint_fraction);
        }
        if self.sources.queue_capacity < 16 {
            bail!("sources.queue_capacity must be at least 16, not {}", self.sources.queue_capacity);
        }
        if self.sources.coalesce_ms > 10_000 {
            bail!("sources.coalesce_ms must be at most 10000, not {}", self.sources.coalesce_ms);
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.stream.replicas {
            r.validate()?;
            if !names.insert(r.name.as_str()) {
                bail!("stream.replicas: the name {:?} is used twice (each replica keeps its state under its name)", r.name);
            }
            if r.per_origin {
                crate::names::check_origin_name(&self.host())
                    .with_context(|| format!("stream.replicas {}: per_origin names this host's snapshots after agent.host", r.name))?;
            }
        }
        self.fleet.validate()?;
        if self.agent.bus.is_empty() {
            bail!("agent.bus must be system, session or a D-Bus address");
        }
        if self.agent.data_dir.as_os_str().is_empty() {
            bail!("agent.data_dir must not be empty");
        }
        if !self.agent.read_group.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')) {
            bail!("agent.read_group {:?} is not a valid group name", self.agent.read_group);
        }
        Ok(())
    }

    /// The host name recorded in events.
    pub fn host(&self) -> String {
        if !self.agent.host.is_empty() {
            return self.agent.host.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, true)
    }

    #[test]
    fn example_config_lists_every_key_with_its_default() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.example.toml")).unwrap();
        // Every key is present (commented out) with its default: uncommenting all of them
        // must parse and give exactly the defaults.
        let uncommented: String = text
            .lines()
            .map(|l| {
                l.strip_prefix("# ").filter(|rest| rest.contains(" = ") && rest.starts_with(|c: char| c.is_ascii_lowercase())).unwrap_or(l)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: Config = toml::from_str(&uncommented).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_file() {
        let err = load_str("[ledger]\nsegment_max_byte = 10\n").unwrap_err().to_string();
        assert!(err.contains("segment_max_byte") && err.contains("config.toml"), "{err}");
        let err = load_str("[ledger]\nmax_batch = 0\n").unwrap_err().to_string();
        assert!(err.contains("ledger.max_batch") && err.contains("config.toml"), "{err}");
        let err = load_str("[agent]\nrole = \"leader\"\n").unwrap_err().to_string();
        assert!(err.contains("role") && err.contains("config.toml"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.toml");
        std::fs::write(&path, "[embedding]\nmodel_dir = \"model\"\n").unwrap();
        let config = Config::load(&path, true).unwrap();
        assert_eq!(config.embedding.model_dir, dir.path().join("model"));
    }

    #[test]
    fn missing_default_file_means_defaults() {
        assert!(Config::load(Path::new("/nonexistent/config.toml"), false).is_ok());
        assert!(Config::load(Path::new("/nonexistent/config.toml"), true).is_err());
    }

    #[test]
    fn replica_entries_are_checked_for_ssh_safety() {
        let replica = |extra: &str| {
            load_str(&format!(
                "[[stream.replicas]]\nname = \"r1\"\ntransport = \"ssh\"\ndestination = \"root@10.0.0.2\"\nremote_dir = \"/var/lib/r\"\n{extra}"
            ))
        };
        replica("").unwrap();
        replica("ssh_options = [\"-o\", \"UserKnownHostsFile=/etc/x\", \"-p\", \"2222\"]").unwrap();
        for bad in [
            "ssh_options = [\"-o\", \"ProxyCommand=nc %h %p\"]",
            "ssh_options = [\"-o\", \"StrictHostKeyChecking=no\"]",
            "ssh_options = [\"-oLocalCommand=touch /x\"]",
            "ssh_options = [\"-o\", \"PermitLocalCommand=yes\"]",
        ] {
            let err = replica(bad).unwrap_err().to_string();
            assert!(err.contains("r1"), "{bad}: {err}");
        }
        let err = load_str(
            "[[stream.replicas]]\nname = \"r1\"\ntransport = \"ssh\"\ndestination = \"h\"\nremote_dir = \"/var/lib/r;rm -rf /\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("remote_dir"), "{err}");
        let twice = "[[stream.replicas]]\nname = \"r1\"\ntransport = \"local\"\nremote_dir = \"/a\"\n".repeat(2);
        assert!(load_str(&twice).unwrap_err().to_string().contains("used twice"));
    }
}
