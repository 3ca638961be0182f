//! Where logs go. Under systemd, stderr is connected to the journal (`JOURNAL_STREAM` names
//! its device and inode): logs then go to journald natively, each field (`seq`, `replica`,
//! `ms`…) a journal field of its own, prefixed `F_` so that none can pose as one of the
//! journal's (`journalctl -u ovs-port-agent F_REPLICA=r1`).
//! Otherwise terse `key=value` lines on stderr, coloured only on a terminal.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The identifier journal entries carry (`journalctl -t ovs-port-agent`).
const SYSLOG_IDENTIFIER: &str = "ovs-port-agent";

/// Sets up logging: `RUST_LOG` if set, else warn, or info/debug/trace with -v/-vv/-vvv.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if stderr_is_the_journal() {
        match tracing_journald::layer() {
            Ok(journal) => {
                // Syslog's meanings: info is 6 (the crate's default makes it 5, "notice", which
                // `journalctl -p notice` would then show among the warnings).
                let priorities = PriorityMappings { info: Priority::Informational, debug: Priority::Debug, ..PriorityMappings::new() };
                let journal = journal.with_syslog_identifier(SYSLOG_IDENTIFIER.into()).with_priority_mappings(priorities);
                tracing_subscriber::registry().with(filter()).with(journal).init();
                return;
            }
            // Said on stderr, which the journal still records as plain lines.
            Err(e) => eprintln!("warning: the journal's socket cannot be reached ({e}); logging to stderr"),
        }
    }
    let stderr = std::io::stderr();
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(stderr.is_terminal())
        .with_target(false)
        .compact()
        .init();
}

/// True when systemd connected stderr to the journal: `JOURNAL_STREAM` is `<device>:<inode>`
/// of that stream, and it is still stderr (not inherited by a child that redirected it).
fn stderr_is_the_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    names_stream(&value.to_string_lossy(), meta.dev(), meta.ino())
}

/// Whether a `JOURNAL_STREAM` value names the stream with this device and inode.
fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::names_stream;

    #[test]
    fn journal_stream_must_name_this_very_stream() {
        assert!(names_stream("8:12345", 8, 12345));
        assert!(!names_stream("8:12345", 8, 12346), "another stream (a child's redirected stderr)");
        assert!(!names_stream("garbage", 8, 12345));
        assert!(!names_stream("", 0, 0));
    }
}
