//! How the daemon runs ssh: the options it always sets, and the checks on what a config
//! may add (replicas and fleet hosts alike).

use anyhow::{Result, bail};
use std::path::Path;
use tokio::process::Command;

/// ssh options every session uses, before any from the config (ssh takes the first value
/// it sees for an option, so these cannot be overridden): never prompt, always check the
/// host key, offer only the configured key, notice a dead peer.
pub const BUILT_IN_SSH_OPTIONS: [&str; 10] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "ServerAliveInterval=5",
    "-o",
    "ServerAliveCountMax=3",
];

/// ssh options a replica may set (`-o Name=value`); anything else is refused, in particular
/// ProxyCommand, LocalCommand, PermitLocalCommand and turning host-key checking off.
pub const ALLOWED_SSH_OPTIONS: &[&str] = &[
    "port",
    "connecttimeout",
    "connectionattempts",
    "serveraliveinterval",
    "serveralivecountmax",
    "userknownhostsfile",
    "hostkeyalias",
    "hostkeyalgorithms",
    "ciphers",
    "macs",
    "kexalgorithms",
    "compression",
    "ipqos",
    "loglevel",
    "addressfamily",
    "bindaddress",
];

/// Checks ssh options from a config (`what` names the entry in errors): only `-p PORT` and
/// `-o Name=value` pairs with names from `ALLOWED_SSH_OPTIONS`.
pub fn check_ssh_options(what: &str, ssh_options: &[String]) -> Result<()> {
    let mut options = ssh_options.iter();
    while let Some(flag) = options.next() {
        let value = options.next().map(String::as_str).unwrap_or("");
        match flag.as_str() {
            "-p" if value.parse::<u16>().is_ok_and(|p| p > 0) => {}
            "-o" => {
                let (key, val) = value.split_once('=').map(|(k, v)| (k.trim(), v.trim())).unwrap_or((value.trim(), ""));
                if !ALLOWED_SSH_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) || val.is_empty() {
                    bail!(
                        "{what}: ssh option {value:?} is not allowed (allowed: -p PORT and -o with {}); host keys are always checked",
                        ALLOWED_SSH_OPTIONS.join(", ")
                    );
                }
            }
            other => bail!("{what}: ssh_options takes only \"-o\", \"Name=value\" pairs and \"-p\", \"PORT\", not {other:?}"),
        }
    }
    Ok(())
}

/// A path or word that reaches the replica host inside ssh's remote command line, which
/// the remote shell splits: only characters no shell treats specially.
pub fn shell_safe(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '@' | ':' | '+' | ','))
}

/// Checks an ssh destination (`user@host`), which reaches ssh's arguments and the far side.
pub fn check_destination(what: &str, destination: &str) -> Result<()> {
    if destination.is_empty() || destination.starts_with('-') || !shell_safe(destination) {
        bail!("{what}: ssh needs a destination like root@replica1 (letters, digits and . _ - @ : only)");
    }
    Ok(())
}

/// `ssh` with the key (if any), the options every session uses, the pinned known_hosts file
/// (if any) and a config's checked extra options; the caller adds `--`, the destination
/// and the remote command.
pub fn command(identity: &Path, known_hosts: &Path, options: &[String]) -> Command {
    let mut cmd = Command::new("ssh");
    if !identity.as_os_str().is_empty() {
        cmd.arg("-i").arg(identity);
    }
    cmd.args(BUILT_IN_SSH_OPTIONS);
    if !known_hosts.as_os_str().is_empty() {
        cmd.arg("-o").arg(format!("UserKnownHostsFile={}", known_hosts.display()));
    }
    cmd.args(options);
    cmd
}
