//! docs/ledger-format.md's worked example is what the code writes, and an independent
//! verifier written from that document alone (scripts/verify-ledger.py) agrees with ours.

mod common;

use ovs_port_agent::event::{NewEvent, Priority};
use ovs_port_agent::ledger::{Ledger, LedgerOptions};
use serde_json::json;
use std::process::Command;

/// The three events of the worked example, with fixed times.
fn example_events() -> Vec<NewEvent> {
    let mut a = NewEvent::new(
        "nm",
        "interface:eth0",
        "state.changed",
        Priority::High,
        json!({"after": {"state": "unavailable"}, "before": {"state": "activated"}, "changed": ["state"], "reason": "carrier-changed"}),
    )
    .with_summary("eth0: activated → unavailable (carrier changed)");
    a.ts = Some(1_795_000_000_000_000_000);
    let mut b =
        NewEvent::new("ovsdb", "bridge:br0", "port.added", Priority::Medium, json!({"after": {"ports": ["vnet0"]}, "changed": ["ports"]}))
            .with_summary("port vnet0 added to br0");
    b.ts = Some(1_795_000_000_500_000_000);
    let mut c = NewEvent::new(
        "nm",
        "interface:eth0",
        "state.changed",
        Priority::Medium,
        json!({"after": {"state": "activated"}, "before": {"state": "unavailable"}, "changed": ["state"], "reason": "none"}),
    )
    .with_summary("eth0: unavailable → activated");
    c.ts = Some(1_795_000_003_000_000_000);
    vec![a, b, c]
}

fn write_example(dir: &std::path::Path) -> String {
    let options = LedgerOptions { host: "host-a".into(), segment_max_bytes: 64 * 1024 * 1024 };
    let (mut ledger, _) = Ledger::open(dir, options).unwrap();
    ledger.append_batch(&example_events()).unwrap();
    std::fs::read_to_string(dir.join("00000000000000000001.jsonl")).unwrap()
}

#[test]
fn the_worked_example_in_the_docs_is_what_the_code_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let written = write_example(&tmp.path().join("ledger"));
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ledger-format.md")).unwrap();
    let start = doc.find("<!-- example:begin -->").expect("example markers in the doc");
    let end = doc.find("<!-- example:end -->").unwrap();
    let block = &doc[start..end];
    let lines: String = block.lines().filter(|l| l.starts_with('{')).map(|l| format!("{l}\n")).collect();
    assert_eq!(lines, written, "docs/ledger-format.md's example differs from what the code writes:\n{written}");
}

#[test]
fn an_independent_verifier_written_from_the_doc_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&dir, LedgerOptions { host: "h".into(), segment_max_bytes: 8192 }).unwrap();
    ledger.append_batch(&(0..300).map(common::sample_event).collect::<Vec<_>>()).unwrap();
    drop(ledger);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify-ledger.py");
    let out = Command::new("python3").arg(script).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("300 records"));
    // Change one value: both verifiers name seq 123.
    let seg = ovs_port_agent::ledger::segment::list_segments(&dir).unwrap();
    let target = seg.iter().rev().find(|s| s.first_seq <= 123).unwrap();
    let text = std::fs::read_to_string(&target.path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let idx = (123 - target.first_seq) as usize;
    let changed = lines[idx].replacen("\"priority\":\"", "\"priority\":\"x", 1);
    let mut new_lines = lines.clone();
    new_lines[idx] = &changed;
    std::fs::write(&target.path, new_lines.join("\n") + "\n").unwrap();
    let out = Command::new("python3").arg(script).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 123"), "{}", String::from_utf8_lossy(&out.stdout));
    let outcome = ovs_port_agent::ledger::scan(&dir, |_| {}).unwrap();
    assert_eq!(outcome.damage.unwrap().seq, 123, "our verifier names the same record");
}

/// Prints the example ledger (used to write the doc): `cargo test --test ledger_format_doc -- --ignored --nocapture`.
#[test]
#[ignore = "prints the worked example for docs/ledger-format.md"]
fn print_example() {
    let tmp = tempfile::tempdir().unwrap();
    print!("{}", write_example(&tmp.path().join("ledger")));
}
