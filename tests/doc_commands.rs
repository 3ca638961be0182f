//! The README's "Using it" commands, and every `ovs-port-agent` command in the `sh` blocks of
//! docs/, run as written against a real daemon (private bus, loop Btrfs, the real model)
//! holding a small history, so the documentation cannot drift from the program. (The docs'
//! other commands — apt, systemctl, btrfs, ssh — act on a host, not on this test.) Commands
//! with `--data-dir` run offline, after the daemon is stopped. What a test cannot have is substituted, and only that: the bus (`--system` → the
//! test's bus), the data directory (`/var/lib/ovs-port-agent` → the test's), the file
//! `events.jsonl` (→ the test's history) and the incident seq `48213` (→ an event it holds).
//! `tail --follow` runs until stopped: it must still be running after a second. `doctor` may
//! exit 1 (a check that fails on a test machine); every other command must succeed.

mod common;

use common::{AgentDaemon, BtrfsMount, PrivateBus, agent_bin, write_streaming_config};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// The commands of the README's first `sh` block after `## Using it`.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("## Using it").nth(1).expect("a Using it section");
    commands_of(section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("an sh block"))
}

/// The `ovs-port-agent` commands of every `sh` block in docs/.
fn docs_commands() -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for block in text.split("```sh").skip(1).filter_map(|b| b.split("```").next()) {
            out.extend(commands_of(block).into_iter().filter(|c| c.starts_with("ovs-port-agent ")));
        }
    }
    out
}

/// The commands of an `sh` block: continuation lines joined, comments dropped.
fn commands_of(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = strip_comment(line);
        match line.trim_end().strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(&line);
                if !current.trim().is_empty() {
                    commands.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    commands
}

/// The line without a `#` comment outside quotes.
fn strip_comment(line: &str) -> String {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || line[..i].ends_with(' ') => return line[..i].to_owned(),
            _ => {}
        }
    }
    line.to_owned()
}

/// Shell words: whitespace-separated, single and double quotes grouping.
fn words(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quote, mut started) = (None, false);
    for c in command.chars() {
        match (quote, c) {
            (None, '\'' | '"') => (quote, started) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            _ => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

fn rfc3339(ago: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() - ago).to_string()
}

/// A small history the commands' examples refer to (eth0, br-int, vnet3, "MTU changes").
fn history(path: &Path) {
    let h = |hours: u64| rfc3339(Duration::from_secs(hours * 3600));
    let lines = [
        r#"{"element_id":"interface:eth0","action":"state.changed","priority":"medium","ts":"2026-11-24T01:00:00Z","details":{"before":{"state":"disconnected"},"after":{"state":"activated"},"changed":["state"]}}"#.to_string(),
        format!(
            r#"{{"element_id":"interface:eth0","action":"link.down","priority":"high","ts":"{}","summary":"eth0 lost its link","details":{{"before":{{"carrier":true}},"after":{{"carrier":false}},"changed":["carrier"]}}}}"#,
            h(2)
        ),
        format!(
            r#"{{"element_id":"interface:eth0","action":"properties.changed","priority":"medium","ts":"{}","details":{{"before":{{"mtu":1500}},"after":{{"mtu":9000}},"changed":["mtu"]}}}}"#,
            h(1)
        ),
        format!(
            r#"{{"element_id":"bridge:br-int","action":"port.added","priority":"medium","ts":"{}","details":{{"before":{{"ports":["vnet3"]}},"after":{{"ports":["vnet3","vnet4"]}},"changed":["ports"]}}}}"#,
            h(72)
        ),
        format!(
            r#"{{"element_id":"bridge:br-int","action":"port.removed","priority":"medium","ts":"{}","details":{{"before":{{"ports":["vnet3","vnet4"]}},"after":{{"ports":["vnet3"]}},"changed":["ports"]}}}}"#,
            h(24)
        ),
        format!(
            r#"{{"element_id":"port:vnet3","action":"modified","priority":"low","ts":"{}","details":{{"after":{{"tag":10,"mtu":1500,"bridge":"br-int"}}}}}}"#,
            h(5)
        ),
        format!(
            r#"{{"element_id":"port:vnet4","action":"modified","priority":"low","ts":"{}","details":{{"after":{{"tag":10,"mtu":1500,"bridge":"br-int"}}}}}}"#,
            h(5)
        ),
        format!(
            r#"{{"element_id":"interface:eth1","action":"link.down","priority":"high","ts":"{}","details":{{"before":{{"carrier":true}},"after":{{"carrier":false}},"changed":["carrier"]}}}}"#,
            h(0)
        ),
    ];
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn the_readme_and_docs_commands_run_as_written() {
    let fs = BtrfsMount::new(400);
    let state = fs.path().join("state");
    let state_arg = state.to_str().unwrap().to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let events = tmp.path().join("events.jsonl");
    history(&events);
    let config = write_streaming_config(tmp.path(), "\n[sources]\novsdb = false\nnetworkmanager = false\n");
    // As on a host: the config names the data directory (commands that read it without
    // --data-dir, such as `verify --anchored`, find it there).
    let text = std::fs::read_to_string(&config).unwrap().replacen("[agent]\n", &format!("[agent]\ndata_dir = \"{state_arg}\"\n"), 1);
    std::fs::write(&config, text).unwrap();
    let config_arg = config.to_str().unwrap().to_owned();
    let out = Command::new(agent_bin()).args(["--config", &config_arg, "--data-dir", &state_arg, "import"]).arg(&events).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (online, offline): (Vec<String>, Vec<String>) =
        readme_commands().into_iter().chain(docs_commands()).partition(|c| !c.contains("--data-dir"));
    assert!(online.len() >= 20 && offline.len() >= 5, "{online:?} {offline:?}");
    let offline_from = online.len();
    let commands: Vec<String> = online.into_iter().chain(offline).collect();
    let substitute = |word: &str| match word {
        "/var/lib/ovs-port-agent" => state_arg.clone(),
        "events.jsonl" => events.to_str().unwrap().to_owned(),
        "48213" => "2".to_owned(),
        other => other.to_owned(),
    };

    let bus = PrivateBus::open();
    let mut daemon = AgentDaemon::start(&bus.address, &state, &config);
    let mut failures = Vec::new();
    for (i, command) in commands.iter().enumerate() {
        if i == offline_from {
            daemon.stop();
        }
        let mut argv: Vec<String> = words(command).iter().map(|w| substitute(w)).collect();
        let program = argv.remove(0);
        let mut cmd = match program.as_str() {
            "gdbus" => Command::new("gdbus"),
            "busctl" => Command::new("busctl"),
            "ovs-port-agent" => {
                let mut c = Command::new(agent_bin());
                c.args(["--config", &config_arg]);
                if i < offline_from {
                    c.args(["--bus", &bus.address]);
                }
                c
            }
            other => panic!("the README names a program this test does not know: {other}"),
        };
        for arg in argv {
            match (program.as_str(), arg.as_str()) {
                ("gdbus", "--system") => cmd.args(["--address", &bus.address]),
                ("busctl", "--system") => cmd.arg(format!("--address={}", bus.address)),
                _ => cmd.arg(arg),
            };
        }
        if command.contains("--follow") {
            let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
            std::thread::sleep(Duration::from_secs(1));
            if let Ok(Some(status)) = child.try_wait() {
                failures.push(format!("{command}: ended at once ({status})"));
            }
            let _ = child.kill();
            let _ = child.wait();
            continue;
        }
        let out = cmd.output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let allowed = if command.contains(" doctor") { code == 0 || code == 1 } else { code == 0 };
        if !allowed {
            failures.push(format!(
                "{command}: exit {code}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "documented commands that failed:\n{}", failures.join("\n"));
}

#[test]
fn commands_are_read_like_a_shell_would() {
    assert_eq!(words(r#"busctl call 'sa{sv}' "link flaps" 2"#), vec!["busctl", "call", "sa{sv}", "link flaps", "2"]);
    assert_eq!(strip_comment("ovs-port-agent status   # counts"), "ovs-port-agent status   ");
    assert_eq!(strip_comment(r#"search "issue #4""#), r#"search "issue #4""#);
}
