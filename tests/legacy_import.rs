//! Upgrading from the old ovs-port-agent: both ledger shapes it wrote import without loss.
//! Every old field is findable in the new history, times are the original ones, the old
//! chain's links are checked and a break is reported where it is, and `--dry-run` writes
//! nothing. Through the real binary, offline.

mod common;

use common::{agent, write_daemon_config};
use ovs_port_agent::layout::Layout;
use ovs_port_agent::ledger::{Record, scan};
use serde_json::{Value, json};

const CATEGORIES: [&str; 5] = ["bridge", "port", "interface", "network", "system"];

/// An old block ledger (`height`, `timestamp` in seconds, `data`, …) of `n` blocks, with
/// unknown extra fields on some, and the chain broken at `broken_at` (a wrong prev_hash).
fn old_blocks(n: u64, broken_at: u64) -> Vec<Value> {
    let mut prev = "0".repeat(64);
    (1..=n)
        .map(|height| {
            let category = CATEGORIES[height as usize % 5];
            let data = match category {
                "bridge" => json!({"name": format!("vmbr{}", height % 3), "stp": height % 2 == 0, "ports": [format!("tap{height}i0")]}),
                "port" => json!({"port": format!("tap{height}i0"), "bridge": "vmbr0", "tag": 100 + height % 7}),
                "interface" => {
                    json!({"interface": format!("eno{}", height % 2 + 1), "mtu": 1500 + (height % 2) * 7500, "ratio": height as f64 / 7.0})
                }
                "network" => json!({"gateway": "192.168.1.1", "dns": ["1.1.1.1"]}),
                _ => json!({"message": format!("agent restarted (pid {})", 1000 + height)}),
            };
            let hash = format!("{:064x}", height * 7919);
            let action =
                ["Bridge Created", "Port Added", "Interface State Changed", "Config Applied", "Agent Restart"][height as usize % 5];
            let severity = ["info", "warning", "error"][height as usize % 3];
            let mut block = json!({
                "timestamp": 1_690_000_000 + height * 37,
                "height": height,
                "prev_hash": if height == broken_at { "f".repeat(64) } else { prev.clone() },
                "hash": hash,
                "producer": "ovs-port-agent/0.3.1",
                "category": category,
                "action": action,
                "user": "root",
                "hostname": "pve-node-7",
                "pid": 1000 + height,
                "data": data,
                "metadata": {"severity": severity, "trace": format!("t-{height}")},
                "signature": format!("c2lnbmF0dXJl{height}=="),
            });
            if height % 11 == 0 {
                block["x_cluster"] = json!({"name": "prod", "nodes": 3});
            }
            prev = hash;
            block
        })
        .collect()
}

/// An old record ledger (`ts`, `action`, `details`, `prev_hash`, `hash`), linked.
fn old_records(n: u64) -> Vec<Value> {
    let mut prev = String::new();
    (1..=n)
        .map(|i| {
            let hash = format!("{:064x}", i * 104_729);
            let record = json!({
                "ts": format!("2023-0{}-1{}T0{}:00:00Z", 1 + i % 9, i % 10, i % 10),
                "action": if i % 2 == 0 { "port_added" } else { "port_removed" },
                "details": {"port": format!("veth{i}"), "bridge": "ovsbr0"},
                "prev_hash": prev,
                "hash": hash,
            });
            prev = hash;
            record
        })
        .collect()
}

fn write_lines(path: &std::path::Path, items: &[Value]) {
    std::fs::write(path, items.iter().map(|v| format!("{v}\n")).collect::<String>()).unwrap();
}

fn records(state: &std::path::Path) -> Vec<Record> {
    let mut out = Vec::new();
    let outcome = scan(&Layout::state(state).ledger_dir(), |r| out.push(r.clone())).unwrap();
    assert!(outcome.is_intact());
    out
}

#[test]
fn both_old_shapes_import_with_every_field_findable() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_daemon_config(tmp.path(), "");
    let config = config.to_str().unwrap();
    let state = tmp.path().join("state");
    let blocks = old_blocks(400, 250);
    let old = old_records(300);
    let (blocks_file, records_file) = (tmp.path().join("blocks.jsonl"), tmp.path().join("ledger.jsonl"));
    write_lines(&blocks_file, &blocks);
    write_lines(&records_file, &old);

    // A dry run says what would happen and writes nothing.
    let (code, out, err) =
        agent(&["--config", config, "import", "--dry-run", "--data-dir", state.to_str().unwrap(), blocks_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would import 400 events (dry run: nothing written)"), "{out}");
    assert!(out.contains("2023-07-22T04:27:17") && out.contains("bridge:vmbr1"), "original times and elements shown: {out}");
    assert!(out.contains("BROKEN once, first at height 250, line 250"), "{out}");
    assert!(!state.exists(), "a dry run creates nothing");
    let (_, out, _) = agent(&["--config", config, "--json", "import", "--dry-run", blocks_file.to_str().unwrap()]);
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["events"].as_array().unwrap().len(), 400);
    assert_eq!(dry["legacy_chain"]["breaks"], 1);

    let state_arg = state.to_str().unwrap();
    for (file, says) in [(&blocks_file, "BROKEN once, first at height 250"), (&records_file, "every link holds")] {
        let (code, out, err) = agent(&["--config", config, "import", "--no-embed", "--data-dir", state_arg, file.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(says), "{out}");
    }
    let written = records(&state);
    assert_eq!(written.len(), 700);

    for (old, new) in blocks.iter().zip(&written[..400]) {
        let height = old["height"].as_u64().unwrap();
        assert_eq!(new.ts, old["timestamp"].as_i64().unwrap() * 1_000_000_000, "block {height}: its own time");
        assert_eq!(new.source, "legacy-import");
        assert_eq!(new.details["after"], old["data"], "block {height}: the payload");
        for (key, value) in old.as_object().unwrap().iter().filter(|(k, _)| *k != "data") {
            assert_eq!(&new.details["legacy"][key], value, "block {height}: {key} kept verbatim");
        }
        assert_eq!(new.details["import"]["chain_linked"], height != 250, "block {height}");
        let expected_element = match old["category"].as_str().unwrap() {
            "bridge" => format!("bridge:{}", old["data"]["name"].as_str().unwrap()),
            "port" => format!("ovs-port:{}", old["data"]["port"].as_str().unwrap()),
            "interface" => format!("interface:{}", old["data"]["interface"].as_str().unwrap()),
            _ => "agent:legacy-ledger".to_owned(),
        };
        assert_eq!(new.element_id, expected_element, "block {height}");
        let severity = old["metadata"]["severity"].as_str().unwrap();
        let priority = match severity {
            "warning" => "medium",
            "error" => "high",
            _ => "low",
        };
        assert_eq!(new.priority.as_str(), priority, "block {height}: severity {severity}");
    }
    for (old, new) in old.iter().zip(&written[400..]) {
        let ts = humantime::parse_rfc3339(old["ts"].as_str().unwrap()).unwrap();
        assert_eq!(new.ts as u128, ts.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        assert_eq!(new.details["after"], old["details"]);
        for key in ["ts", "action", "prev_hash", "hash"] {
            assert_eq!(new.details["legacy"][key], old[key], "{key}");
        }
        assert_eq!(new.element_id, format!("bridge:{}", old["details"]["bridge"].as_str().unwrap()));
    }

    // The whole new history verifies, by our verifier and the doc-only one.
    assert_eq!(agent(&["verify", "--data-dir", state_arg]).0, 0);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify-ledger.py");
    let out = std::process::Command::new("python3").arg(script).arg(Layout::state(&state).ledger_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn an_old_record_without_a_time_or_with_an_inexact_number_refuses_the_import() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_daemon_config(tmp.path(), "");
    let state = tmp.path().join("state");
    let file = tmp.path().join("old.jsonl");
    let mut blocks = old_blocks(20, 0);
    blocks[4].as_object_mut().unwrap().remove("timestamp");
    blocks[9]["data"] = json!({"counter": 123456789012345678901234567890u128 as f64});
    let mut text: String = blocks.iter().map(|v| format!("{v}\n")).collect();
    text = text.replace("1.2345678901234568e+29", "123456789012345678901234567890");
    std::fs::write(&file, text).unwrap();
    let (code, _, err) = agent(&[
        "--config",
        config.to_str().unwrap(),
        "import",
        "--no-embed",
        "--data-dir",
        state.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "an error, as for any refused input: {err}");
    assert!(err.contains("nothing imported: 2 invalid line(s)"), "{err}");
    assert!(!Layout::state(&state).ledger_dir().exists() || records(&state).is_empty(), "nothing written");
    assert!(err.contains("line 5: an old record without a time"), "{err}");
    assert!(err.contains("line 10: the number 123456789012345678901234567890 cannot be stored exactly"), "{err}");
}
