//! `ovs-port-agent generate man|completions --out DIR`: the man pages (one per command) and
//! the bash, zsh and fish completions, generated from the same clap definitions as `--help`,
//! so they cannot drift from the program. Used by packaging (scripts/install, the Debian
//! package); hidden from `--help`.

use super::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Generated {
    /// Man pages: ovs-port-agent.1 and ovs-port-agent-<command>.1.
    Man,
    /// Shell completions: ovs-port-agent.bash, _ovs-port-agent (zsh), ovs-port-agent.fish.
    Completions,
}

pub fn run(what: Generated, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Cli::command();
    match what {
        Generated::Man => clap_mangen::generate_to(cmd, out).with_context(|| format!("writing man pages to {}", out.display()))?,
        Generated::Completions => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut cmd, "ovs-port-agent", out)
                    .with_context(|| format!("writing {shell} completions to {}", out.display()))?;
            }
        }
    }
    Ok(())
}
