//! The command line: arguments (clap), then one function per sub-command.

mod analytics;
mod client;
mod doctor;
mod fanout;
mod generate;
mod logging;
mod offline;
mod output;
mod progress;
mod status;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// ovs-port-agent records every NetworkManager and Open vSwitch change as a tamper-evident,
/// hash-chained, semantically searchable history, and streams it to replicas.
#[derive(Debug, Parser)]
#[command(name = "ovs-port-agent", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, value_name = "FILE", env = "OVS_PORT_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bus to use: system, session, or a D-Bus address (overrides agent.bus).
    #[arg(long, global = true, value_name = "BUS")]
    pub bus: Option<String>,
    /// State directory (holding data/), or a snapshot / replica copy (holding MANIFEST and
    /// ledger/). Inspecting commands then work offline, without the daemon.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (repeat for more); logs go to stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: record, vectorize and serve dev.ovs.PortAgent1 on the bus.
    #[command(after_help = "Examples: systemctl start ovs-port-agent   (the unit runs: ovs-port-agent daemon)
          ovs-port-agent --bus session --data-dir /tmp/opa daemon   (a trial on the session bus)")]
    Daemon,
    /// Natural-language search over all events; with --hosts or --fleet, across the fleet's
    /// daemons (D-Bus over ssh, [fleet] in the config), merged, each daemon's outcome and
    /// each history's freshness reported.
    #[command(after_help = "Examples: ovs-port-agent search \"bridge configuration problems last night\"
          ovs-port-agent search \"link down on eth0\" --since 2h -n 5 --json
          ovs-port-agent search \"which hosts lost their uplink\" --fleet prod --deadline 2s
          ovs-port-agent search \"bond lost a slave\" --origin hv01 --min-seq 4211   (on a replica)")]
    Search {
        /// What to look for, e.g. "bridge configuration problems last night".
        query: String,
        /// How many results (1 to 1000).
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: u32,
        #[command(flatten)]
        filters: FilterArgs,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// What is wrong with this host's set-up, each problem with its fix: the data directory
    /// on Btrfs, free space, the model and runtime against their pins, the bus policy, the
    /// daemon on the bus, NetworkManager and OVSDB, each replica (its state, its key, its
    /// pinned host key), whether a replica cosigned a head recently, and the installed unit's
    /// hardening. Exit 0 when nothing failed (warnings allowed), 1 when a check failed.
    #[command(after_help = "Example: ovs-port-agent doctor   (or --json for scripts)")]
    Doctor,
    /// Counts, head, vectorized seq, model, queues and latencies of the running daemon.
    #[command(after_help = "Examples: ovs-port-agent status   (or --data-dir DIR offline, --json for scripts)")]
    Status,
    /// Append events from JSON lines (FILE, or - for stdin), or an old ovs-port-agent
    /// ledger (records or blocks: original times, payloads and every other field are kept,
    /// the old chain's links are checked and reported), and embed them (progress on
    /// stderr). All or nothing: one bad line refuses the whole input, naming it. Offline:
    /// refuses while a daemon holds the data directory.
    #[command(after_help = "Examples: ovs-port-agent import --dry-run --data-dir /var/lib/ovs-port-agent old-ledger.jsonl
          ovs-port-agent import --data-dir /var/lib/ovs-port-agent events.jsonl")]
    Import {
        #[arg(value_name = "FILE", default_value = "-")]
        file: PathBuf,
        /// Only append: leave embedding to the daemon or `reembed` (until then the new
        /// events are found by their words only).
        #[arg(long)]
        no_embed: bool,
        /// Show what would be recorded (with --json: every event in full) and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Verify the whole hash chain. Exit 0 intact, 1 damaged (or, with --anchored,
    /// rewritten), 2 usage or I/O error.
    #[command(after_help = "Example: ovs-port-agent verify --anchored --data-dir /var/lib/ovs-port-agent")]
    Verify {
        /// Also check the ledger holds every head a replica cosigned (data/witness), with
        /// the replicas' witness keys pinned in keys/witnesses/ and any given with --witness.
        /// A chain recomputed after an edit passes plain verification; not this.
        #[arg(long)]
        anchored: bool,
        /// A replica's witness verifier key (name+id+base64), e.g. from an auditor's records.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
        /// Read the cosigned checkpoints from DIR (e.g. a replica's copy of data/witness)
        /// instead of the data set's own.
        #[arg(long, value_name = "DIR")]
        notes: Option<PathBuf>,
    },
    /// One element's history, newest first.
    #[command(after_help = "Example: ovs-port-agent history interface:eth0 -n 50")]
    History {
        /// Element id, e.g. interface:eth0, bridge:ovsbr0, connection:<uuid>.
        element: String,
        /// How many events to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// The newest events.
    #[command(after_help = "Example: ovs-port-agent tail --follow")]
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Keep printing new events as they are recorded.
        #[arg(short, long)]
        follow: bool,
    },
    /// Regenerate the index (events, elements) from the ledger alone.
    #[command(after_help = "Example: ovs-port-agent rebuild --data-dir /var/lib/ovs-port-agent   (with the daemon stopped)")]
    Rebuild,
    /// Drop every vector and embed the whole history again with the configured model
    /// (after changing models). Offline: refuses while a daemon holds the data directory.
    #[command(after_help = "Example: ovs-port-agent reembed --data-dir /var/lib/ovs-port-agent   (with the daemon stopped)")]
    Reembed,
    /// The replica's end of a replication session (the forced command of a restricted ssh
    /// key): reads framed btrfs send streams on stdin, acknowledges each on stdout.
    #[command(after_help = "Example (authorized_keys on the replica host):
  restrict,command=\"/usr/bin/ovs-port-agent replica-receive --dir /var/lib/ovs-port-agent-replica\" ssh-ed25519 AAAA… ovs-port-agent@primary")]
    ReplicaReceive {
        /// Where received snapshots are kept (made private, 0700).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// This host keeps many primaries' snapshots: write only origin NAME's, into
        /// DIR/origins/NAME, and only snapshots whose MANIFEST names host NAME.
        #[arg(long, value_name = "NAME")]
        origin: Option<String>,
        /// Refuse a stream larger than this many bytes (after decompression).
        #[arg(long, value_name = "BYTES", default_value_t = 64 << 30)]
        max_stream_bytes: u64,
        /// End the session when one stream takes longer than this.
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        max_stream_seconds: u64,
    },
    /// Every event around a moment, grouped by element, the first critical one marked.
    #[command(after_help = "Example: ovs-port-agent timeline 2026-11-24T02:00:00Z --window 30min --element interface:eth0")]
    Timeline {
        /// The moment: RFC 3339, or an age ("2h" = two hours ago).
        at: String,
        /// How long a window, centred on the moment (half before, half after).
        #[arg(long, default_value = "1h")]
        window: String,
        /// Only this element and the elements related to it (its bridge, port, connection).
        #[arg(long)]
        element: Option<String>,
        /// How many events to list at most.
        #[arg(short = 'n', long, default_value_t = 500)]
        limit: usize,
    },
    /// An element's exact state at a moment, each field with the event that set it.
    #[command(after_help = "Example: ovs-port-agent state interface:eth0 --at 2026-11-24T02:00:00Z")]
    State {
        element: String,
        /// RFC 3339 or an age ("2h"); now by default.
        #[arg(long)]
        at: Option<String>,
    },
    /// How an element changed since a moment: fields then → now with blame, and flapping fields.
    #[command(after_help = "Example: ovs-port-agent drift bridge:br0 --since 30d")]
    Drift {
        element: String,
        /// RFC 3339 or an age ("30d").
        #[arg(long)]
        since: String,
    },
    /// Elements of the same type configured most like this one, and how they fare.
    #[command(after_help = "Example: ovs-port-agent similar port:vnet3 -n 5")]
    Similar {
        element: String,
        #[arg(short = 'n', long, default_value_t = 5)]
        limit: u32,
    },
    /// Earlier events most like event SEQ, with what followed each and how it ended.
    #[command(after_help = "Example: ovs-port-agent incidents 48213 -n 5")]
    Incidents {
        seq: u64,
        #[arg(short = 'n', long, default_value_t = 5)]
        limit: u32,
    },
    /// What is unusual in the last WINDOW: first-seen values, bursts, novel events, precursors.
    #[command(after_help = "Example: ovs-port-agent anomalies --window 24h --rules burst,first_seen")]
    Anomalies {
        /// How far back from --until (or now).
        #[arg(long, default_value = "24h")]
        window: String,
        /// End of the window: RFC 3339 or an age; now by default.
        #[arg(long)]
        until: Option<String>,
        /// Only elements of this type.
        #[arg(long = "type")]
        element_type: Option<String>,
        /// Days of history before the window to learn what is usual from.
        #[arg(long, default_value_t = crate::analytics::anomaly::DEFAULT_BASELINE_DAYS)]
        baseline_days: u32,
        /// Only these rules (comma-separated): first_seen, burst, novelty, precursor.
        #[arg(long, value_delimiter = ',')]
        rules: Vec<String>,
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: u32,
    },
    /// Per-replica state of the running daemon.
    #[command(after_help = "Example: ovs-port-agent replicas --json")]
    Replicas,
    /// Take a snapshot now and send it to every replica (root only).
    #[command(after_help = "Example: sudo ovs-port-agent sync-now")]
    SyncNow,
    /// Write the man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate {
        what: generate::Generated,
        /// Directory to write them to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Filters for `search`.
#[derive(Debug, clap::Args, Default)]
pub struct FilterArgs {
    /// Only this element (e.g. interface:eth0).
    #[arg(long)]
    pub element: Option<String>,
    /// Only this element type (interface, bridge, connection, ovs-port, …).
    #[arg(long = "type")]
    pub element_type: Option<String>,
    /// Only this action (e.g. state.changed).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this source (nm, ovsdb, dbus, import, agent).
    #[arg(long)]
    pub source: Option<String>,
    /// Only events at least this urgent: low, medium, high, critical.
    #[arg(long)]
    pub min_priority: Option<String>,
    /// Not before this time: RFC 3339 ("2026-11-24T01:00:00Z") or an age ("2h", "30min").
    #[arg(long)]
    pub since: Option<String>,
    /// Not after this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
}

/// Parses the command line, runs the command, and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(crate::failure::classify(&error).exit_code())
        }
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    config_file(cli).load()
}

/// The configuration file: `--config`, which must exist, or the default path, which may not.
fn config_file(cli: &Cli) -> crate::reload::ConfigFile {
    match &cli.config {
        Some(path) => crate::reload::ConfigFile { path: path.clone(), required: true },
        None => crate::reload::ConfigFile { path: DEFAULT_CONFIG_PATH.into(), required: false },
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    let bus = cli.bus.clone().unwrap_or_else(|| config.agent.bus.clone());
    let data_dir = cli.data_dir.clone().unwrap_or_else(|| config.agent.data_dir.clone());
    // Inspecting commands work offline with --data-dir, else they ask the daemon.
    let offline = cli.data_dir.as_deref();
    match &cli.command {
        Command::Daemon => {
            let layout = crate::layout::Layout::state(&data_dir);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(crate::daemon::run(config, config_file(&cli), layout, bus))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import { file, dry_run: true, .. } => offline::import_dry_run(file, cli.json),
        Command::Import { file, no_embed, dry_run: false } => offline::import(&config, &data_dir, file, *no_embed, cli.json),
        Command::Verify { anchored: true, witnesses, notes } => {
            offline::verify_anchored(offline.unwrap_or(&data_dir), witnesses, notes.as_deref(), cli.json)
        }
        Command::Verify { anchored: false, .. } => match offline {
            Some(dir) => offline::verify(dir, cli.json),
            None => client::verify(&bus, cli.json),
        },
        Command::Search { query, limit, filters, fleet } if fleet.fans_out() => {
            let hosts = config.fleet.resolve(&fleet.hosts, fleet.fleet.as_deref())?;
            let deadline = fleet.deadline.map_or(std::time::Duration::from_millis(config.fleet.deadline_ms), |d| *d);
            if fleet.min_seq.is_some() && fleet.origins.len() != 1 {
                anyhow::bail!("--min-seq is one host's seq: name exactly one --origin");
            }
            let mut options = search_options(*limit, filters)?;
            fleet.add_freshness(&mut options)?;
            // A replica's wait for --min-seq must end before the query's deadline does.
            if let Some(zbus::zvariant::Value::U32(wait)) = options.get_mut("wait_ms") {
                *wait = (*wait).min(u32::try_from(deadline.as_millis() / 2).unwrap_or(u32::MAX));
            }
            fanout::search(&config.fleet, &hosts, query, options, *limit, deadline, cli.json)
        }
        Command::Search { query, limit, filters, fleet } => match offline {
            Some(dir) if fleet.is_empty() => offline::search(&config, dir, query, *limit, &filter_values(filters)?, cli.json),
            Some(_) => anyhow::bail!("--origin, --min-seq and --max-staleness ask a replica daemon; leave out --data-dir"),
            None => {
                let mut options = search_options(*limit, filters)?;
                fleet.add_freshness(&mut options)?;
                client::search(&bus, query, options, cli.json)
            }
        },
        Command::History { element, limit } => match offline {
            Some(dir) => offline::history(dir, element, *limit, cli.json),
            None => client::history(&bus, element, (*limit).min(1000) as u32, cli.json),
        },
        Command::Tail { limit, follow } => match offline {
            Some(dir) => offline::tail(dir, *limit, *follow, cli.json),
            None if *follow => client::follow(&bus, cli.json),
            None => anyhow::bail!("tail without --follow needs --data-dir (the daemon streams new events with --follow)"),
        },
        Command::Status => match offline {
            Some(dir) => offline::status(dir, cli.json),
            None => client::status(&bus, cli.json),
        },
        Command::Rebuild => offline::rebuild(&config, &data_dir, cli.json),
        Command::Reembed => offline::reembed(&config, &data_dir, cli.json),
        Command::ReplicaReceive { dir, origin, max_stream_bytes, max_stream_seconds } => {
            let limits = crate::stream::receive::Limits { max_stream_bytes: *max_stream_bytes, max_stream_seconds: *max_stream_seconds };
            crate::stream::receive::run(dir, origin.as_deref(), limits)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Timeline { .. }
        | Command::State { .. }
        | Command::Drift { .. }
        | Command::Similar { .. }
        | Command::Incidents { .. }
        | Command::Anomalies { .. } => analytics::run(analysis(&cli.command)?, &config, &bus, offline, cli.json),
        Command::Replicas => client::replicas(&bus, cli.json),
        Command::Doctor => doctor::run(&config, &data_dir, &bus, cli.json),
        Command::SyncNow => client::sync_now(&bus),
        Command::Generate { what, out } => {
            generate::run(*what, out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The analysis an analysis verb asks for, its times and names parsed.
fn analysis(command: &Command) -> anyhow::Result<analytics::Analysis> {
    use analytics::Analysis;
    let ms = |text: &str| -> anyhow::Result<i64> { Ok(parse_time(text)?.div_euclid(1_000_000)) };
    let duration_ms = |text: &str| -> anyhow::Result<u64> {
        let d = humantime::parse_duration(text).map_err(|e| anyhow::anyhow!("{text:?} is not a duration like 30min or 24h: {e}"))?;
        Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    Ok(match command {
        Command::Timeline { at, window, element, limit } => Analysis::Timeline {
            center_ms: ms(at)?,
            window_ms: duration_ms(window)?,
            options: crate::analytics::timeline::TimelineOptions { element_id: element.clone(), limit: Some(*limit) },
        },
        Command::State { element, at } => Analysis::State {
            element: element.clone(),
            at_ms: at.as_deref().map(ms).transpose()?.unwrap_or(crate::event::now_ns() / 1_000_000),
        },
        Command::Drift { element, since } => Analysis::Drift { element: element.clone(), since_ms: ms(since)? },
        Command::Similar { element, limit } => Analysis::Similar { element: element.clone(), limit: *limit },
        Command::Incidents { seq, limit } => Analysis::Incidents { seq: *seq, limit: *limit },
        Command::Anomalies { window, until, element_type, baseline_days, rules, limit } => {
            use crate::analytics::anomaly::Rule;
            let rules = if rules.is_empty() {
                Rule::ALL.to_vec()
            } else {
                rules
                    .iter()
                    .map(|r| {
                        Rule::parse(r).ok_or_else(|| anyhow::anyhow!("unknown rule {r:?} (known: first_seen, burst, novelty, precursor)"))
                    })
                    .collect::<anyhow::Result<_>>()?
            };
            Analysis::Anomalies {
                window_ms: duration_ms(window)?,
                options: crate::analytics::anomaly::AnomalyOptions {
                    until_ns: until.as_deref().map(parse_time).transpose()?.unwrap_or_else(crate::event::now_ns),
                    element_type: element_type.clone(),
                    baseline_days: *baseline_days,
                    limit: (*limit).clamp(1, 1000) as usize,
                    rules,
                },
            }
        }
        _ => unreachable!("only analysis verbs"),
    })
}

/// Parsed filter values shared by the offline and D-Bus paths.
fn filter_values(f: &FilterArgs) -> anyhow::Result<crate::vector::Filters> {
    Ok(crate::vector::Filters {
        element_id: f.element.clone(),
        element_type: f.element_type.clone(),
        action: f.action.clone(),
        source: f.source.clone(),
        min_priority: f.min_priority.as_deref().map(str::parse).transpose()?,
        since_ns: f.since.as_deref().map(parse_time).transpose()?,
        until_ns: f.until.as_deref().map(parse_time).transpose()?,
        before_seq: None,
    })
}

/// The `Search` D-Bus options for the same filters.
/// Which daemons and histories a search covers, and how fresh they must be.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Ask these daemons (names from [[fleet.hosts]] in the config), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NAME,…", conflicts_with = "fleet")]
    hosts: Vec<String>,
    /// Ask the daemons of this group ([fleet.groups] in the config).
    #[arg(long, value_name = "GROUP")]
    fleet: Option<String>,
    /// With --hosts/--fleet: answer with what arrived by then (default fleet.deadline_ms).
    #[arg(long, value_name = "DURATION")]
    deadline: Option<humantime::Duration>,
    /// On a replica holding several hosts' histories: only these hosts', comma-separated.
    #[arg(long = "origin", value_delimiter = ',', value_name = "HOST,…")]
    origins: Vec<String>,
    /// Read-your-writes: the answer must include this seq of the one --origin (the replica
    /// waits up to --wait for it).
    #[arg(long, value_name = "SEQ", requires = "origins")]
    min_seq: Option<u64>,
    /// How long a replica may wait for --min-seq.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    wait: humantime::Duration,
    /// Leave out histories whose newest snapshot is older than this (e.g. 10min).
    #[arg(long, value_name = "DURATION")]
    max_staleness: Option<humantime::Duration>,
    /// On a replica holding several hosts' histories: search each as deep as a search of
    /// one (slower; by default each goes shallower, as only its first hits can make the
    /// merged answer).
    #[arg(long)]
    thorough: bool,
}

impl FleetArgs {
    fn fans_out(&self) -> bool {
        !self.hosts.is_empty() || self.fleet.is_some()
    }

    fn is_empty(&self) -> bool {
        self.origins.is_empty() && self.min_seq.is_none() && self.max_staleness.is_none()
    }

    /// Adds the origin and freshness options (`hosts`, `min_seq`, …) to `Search` options.
    fn add_freshness(&self, options: &mut std::collections::HashMap<&'static str, zbus::zvariant::Value<'static>>) -> anyhow::Result<()> {
        use zbus::zvariant::Value;
        if !self.origins.is_empty() {
            options.insert("hosts", Value::from(self.origins.clone()));
        }
        if let Some(seq) = self.min_seq {
            let wait = u32::try_from(self.wait.as_millis()).ok().filter(|ms| *ms <= crate::dbus::args::MAX_WAIT_MS);
            let wait = wait.ok_or_else(|| anyhow::anyhow!("--wait must be at most {} s", crate::dbus::args::MAX_WAIT_MS / 1000))?;
            options.insert("min_seq", Value::U64(seq));
            options.insert("wait_ms", Value::U32(wait));
        }
        if let Some(bound) = self.max_staleness {
            options.insert("max_staleness_ms", Value::U64(bound.as_millis() as u64));
        }
        if self.thorough {
            options.insert("thorough", Value::Bool(true));
        }
        Ok(())
    }
}

fn search_options(limit: u32, f: &FilterArgs) -> anyhow::Result<std::collections::HashMap<&'static str, zbus::zvariant::Value<'static>>> {
    use zbus::zvariant::Value;
    let parsed = filter_values(f)?;
    let mut options = std::collections::HashMap::new();
    options.insert("limit", Value::U32(limit));
    let strings =
        [("element_id", parsed.element_id), ("element_type", parsed.element_type), ("action", parsed.action), ("source", parsed.source)];
    for (key, value) in strings {
        if let Some(v) = value {
            options.insert(key, Value::from(v));
        }
    }
    if let Some(p) = parsed.min_priority {
        options.insert("min_priority", Value::from(p.as_str().to_owned()));
    }
    if let Some(ns) = parsed.since_ns {
        options.insert("since_unix_ms", Value::I64(ns / 1_000_000));
    }
    if let Some(ns) = parsed.until_ns {
        options.insert("until_unix_ms", Value::I64(ns / 1_000_000));
    }
    Ok(options)
}

/// RFC 3339, or an age such as "2h" meaning that long ago; nanoseconds since the epoch.
fn parse_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(age) = humantime::parse_duration(text) {
        return Ok(crate::event::now_ns() - i64::try_from(age.as_nanos())?);
    }
    crate::import::parse_ts(&serde_json::Value::String(text.to_owned()))
        .map_err(|_| anyhow::anyhow!("{text:?} is neither an RFC 3339 time nor an age like 2h"))
}
