//! The command line: arguments (clap), then one function per sub-command.

mod offline;
mod output;

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
    /// Append events from JSON lines (FILE, or - for stdin), or an old ledger.jsonl.
    /// Offline: refuses while a daemon holds the data directory.
    Import {
        #[arg(value_name = "FILE", default_value = "-")]
        file: PathBuf,
    },
    /// Verify the whole hash chain. Exit 0 intact, 1 damaged, 2 usage or I/O error.
    Verify,
    /// One element's history, newest first.
    History {
        /// Element id, e.g. interface:eth0, bridge:ovsbr0, connection:<uuid>.
        element: String,
        /// How many events to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// The newest events.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// Keep printing new events as they are recorded.
        #[arg(short, long)]
        follow: bool,
    },
    /// Regenerate the index (events, elements) from the ledger alone.
    Rebuild,
}

/// Parses the command line, runs the command, and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    match &cli.config {
        Some(path) => Config::load(path, true),
        None => Config::load(std::path::Path::new(DEFAULT_CONFIG_PATH), false),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    let data_dir = cli.data_dir.clone().unwrap_or_else(|| config.agent.data_dir.clone());
    match &cli.command {
        Command::Import { file } => offline::import(&config, &data_dir, file, cli.json),
        Command::Verify => offline::verify(&data_dir, cli.json),
        Command::History { element, limit } => offline::history(&config, &data_dir, element, *limit, cli.json),
        Command::Tail { limit, follow } => offline::tail(&config, &data_dir, *limit, *follow, cli.json),
        Command::Rebuild => offline::rebuild(&config, &data_dir, cli.json),
    }
}
