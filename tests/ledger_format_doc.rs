//! docs/ledger-format.md's worked example is what the code writes, and an independent
//! verifier written from that document alone (scripts/verify-ledger.py) agrees with ours.

mod common;

use ovs_port_agent::event::{NewEvent, Priority};
use ovs_port_agent::ledger::{Ledger, LedgerOptions};
use serde_json::json;
use sha2::Digest;
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

/// Events whose details hold what a re-encoding verifier gets wrong most easily: doubles of
/// every magnitude (random bit patterns included), integers at the 64-bit limits, strings
/// with quotes, escapes, control characters, DEL, non-ASCII and U+2028; keys that sort
/// differently by bytes and by UTF-16.
fn odd_event(i: usize, rng: &mut rand::rngs::StdRng) -> NewEvent {
    use rand::Rng;
    let double = loop {
        let x = match i % 3 {
            0 => f64::from_bits(rng.r#gen::<u64>()),
            1 => rng.gen_range(-1.0..1.0) * 10f64.powi(rng.gen_range(-12..24)),
            _ => [0.1, 1e-5, 1e-6, 1e15, 1e16, 5e-324, f64::MAX, -0.0, 2.5, 1e20][i % 10],
        };
        if x.is_finite() {
            break x;
        }
    };
    let text: String = (0..12)
        .map(|_| ['"', '\\', '\n', '\u{1}', '\u{7f}', 'é', '😀', '\u{2028}', '/', 'a', '\t', '\u{ffff}'][rng.gen_range(0..12)])
        .collect();
    let details = json!({
        "double": double,
        "doubles": [double / 3.0, double * 1e10, -double],
        "ints": [u64::MAX, i64::MIN, 0, -1, 9_007_199_254_740_993u64],
        "text": text,
        "\u{ff61}key": 1, "\u{1f600}key": 2, "Zkey": {"b": [], "a": {}},
    });
    NewEvent::new("test", &format!("interface:odd{}", i % 7), "odd.values", Priority::Low, details)
        .with_summary(format!("odd values {i} ✓"))
}

#[test]
fn the_doc_only_verifier_agrees_on_odd_numbers_strings_many_segments_and_strictness() {
    use rand::SeedableRng;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let (mut ledger, _) = Ledger::open(&dir, LedgerOptions { host: "h\u{e9}".into(), segment_max_bytes: 4096 }).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let events: Vec<NewEvent> = (0..600).map(|i| odd_event(i, &mut rng)).collect();
    for chunk in events.chunks(37) {
        ledger.append_batch(chunk).unwrap();
    }
    let head = hex::encode(ledger.head_hash());
    drop(ledger);
    let segments = ovs_port_agent::ledger::segment::list_segments(&dir).unwrap();
    assert!(segments.len() > 50, "{} segments", segments.len());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify-ledger.py");
    let python = |dir: &std::path::Path| {
        let out = Command::new("python3").arg(script).arg(dir).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, said) = python(&dir);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("600 records") && said.contains(&head), "{said}");

    // The last record re-sealed with a space in its body: both name it, neither accepts it.
    let last = segments.last().unwrap();
    let text = std::fs::read_to_string(&last.path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.last().unwrap();
    let body = format!("{}}}", &line[..line.len() - 75]).replacen("\"action\":", "\"action\": ", 1);
    let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
    let forged = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
    let mut new_lines = lines.clone();
    *new_lines.last_mut().unwrap() = &forged;
    std::fs::write(&last.path, new_lines.join("\n") + "\n").unwrap();
    let (code, said) = python(&dir);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("seq 600") && said.contains("not canonical"), "{said}");
    let damage = ovs_port_agent::ledger::scan(&dir, |_| {}).unwrap().damage.unwrap();
    assert_eq!(damage.seq, 600);
    assert!(matches!(damage.kind, ovs_port_agent::ledger::DamageKind::NotCanonical { .. }), "{:?}", damage.kind);
    std::fs::write(&last.path, text).unwrap();

    // An empty segment in the middle: both name the seq that should have followed.
    let middle = &segments[segments.len() / 2];
    std::fs::write(&middle.path, b"").unwrap();
    let (code, said) = python(&dir);
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains(&format!("seq {} ", middle.first_seq)), "{said}");
    assert_eq!(ovs_port_agent::ledger::scan(&dir, |_| {}).unwrap().damage.unwrap().seq, middle.first_seq);
}

/// Prints the example ledger (used to write the doc): `cargo test --test ledger_format_doc -- --ignored --nocapture`.
#[test]
#[ignore = "prints the worked example for docs/ledger-format.md"]
fn print_example() {
    let tmp = tempfile::tempdir().unwrap();
    print!("{}", write_example(&tmp.path().join("ledger")));
}
