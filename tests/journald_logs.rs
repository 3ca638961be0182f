//! Under systemd (stderr connected to the journal, `JOURNAL_STREAM` naming it), the daemon
//! logs to journald natively: each event a datagram of `FIELD=value` lines, its structured
//! fields as journal fields. The journal here is the test's own datagram socket, bound where
//! journald's would be (`/run/systemd/journal/socket`) inside a private mount namespace.

mod common;

use common::{AgentDaemon, PrivateBus, agent_bin, write_daemon_config};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

/// Binds the test's directory over /run in a new mount namespace, then runs the daemon.
const WRAPPER: &str = "mount --bind \"$1\" /run && shift && exec \"$@\"";

#[test]
fn under_systemd_the_daemon_logs_to_the_journal_with_structured_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("systemd/journal")).unwrap();
    let journal = UnixDatagram::bind(run.join("systemd/journal/socket")).unwrap();
    journal.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    // The daemon inherits the test's stderr: that stream is "the journal's".
    let stderr = std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned().unwrap());
    let meta = stderr.metadata().unwrap();
    let bus = PrivateBus::open();
    let config = write_daemon_config(tmp.path(), "");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", WRAPPER, "sh"]).arg(&run).arg(agent_bin());
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    let mut daemon = AgentDaemon::spawn(cmd, &bus.address, &tmp.path().join("state"), &config);

    let mut entries: Vec<Vec<(String, String)>> = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = journal.recv(&mut buf) {
        if n == 0 {
            continue; // the layer's probe that the socket is there
        }
        let entry = fields_of(&buf[..n]);
        let ready = entry.iter().any(|(k, v)| k == "MESSAGE" && v == "ready");
        entries.push(entry);
        if ready {
            break;
        }
    }
    daemon.stop();
    let ready = entries.iter().find(|e| e.iter().any(|(k, v)| k == "MESSAGE" && v == "ready")).unwrap_or_else(|| {
        panic!("no \"ready\" entry among {} journal entries: {entries:?}", entries.len());
    });
    let field = |name: &str| ready.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(field("SYSLOG_IDENTIFIER"), Some("ovs-port-agent"), "{ready:?}");
    assert_eq!(field("PRIORITY"), Some("6"), "info is syslog priority 6: {ready:?}");
    // The event's own fields are journal fields, prefixed so that none can pose as one of
    // the journal's (an event field named `priority`).
    assert_eq!(field("F_BUS"), Some(bus.address.as_str()), "{ready:?}");
    assert!(field("F_READY_MS").is_some_and(|ms| ms.parse::<u64>().is_ok()), "{ready:?}");
    assert!(entries.iter().all(|e| e.iter().any(|(k, _)| k == "MESSAGE")), "every entry has a message");
}

/// The fields of one entry in journald's native protocol: `KEY=value\n`, or, for values
/// that may hold anything, `KEY\n`, a little-endian u64 length, the value and `\n`.
fn fields_of(mut data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while !data.is_empty() {
        let line_end = data.iter().position(|b| *b == b'\n').expect("an unterminated field");
        let line = &data[..line_end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            fields.push((String::from_utf8_lossy(&line[..eq]).into_owned(), String::from_utf8_lossy(&line[eq + 1..]).into_owned()));
            data = &data[line_end + 1..];
        } else {
            let rest = &data[line_end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            assert_eq!(rest[8 + len], b'\n', "a binary field ends with a newline");
            fields.push((String::from_utf8_lossy(line).into_owned(), String::from_utf8_lossy(value).into_owned()));
            data = &rest[8 + len + 1..];
        }
    }
    fields
}
