//! The daemon on a private bus, driven by gdbus and busctl as operators would.

mod common;

use common::{AgentDaemon, PrivateBus, agent_bin, gdbus_string, write_daemon_config};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start() -> (PrivateBus, tempfile::TempDir, AgentDaemon) {
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_daemon_config(tmp.path(), "");
    let daemon = AgentDaemon::start(&bus.address, &tmp.path().join("state"), &config);
    (bus, tmp, daemon)
}

fn record(daemon: &AgentDaemon, element: &str, action: &str, details: &str, priority: &str) -> String {
    let (ok, out, err) = daemon.gdbus_call("RecordEvent", &[element, action, details, priority]);
    assert!(ok, "RecordEvent failed: {err}");
    gdbus_string(&out)
}

/// Starts `gdbus monitor` on the daemon and returns a reader of its lines.
fn monitor(daemon: &AgentDaemon) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new("gdbus")
        .args(["monitor", "--address", &daemon.bus, "--dest", "dev.ovs.PortAgent1", "--object-path", "/dev/ovs/PortAgent1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    (child, rx)
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, what: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && what(&line)
        {
            return line;
        }
    }
    panic!("the expected signal did not arrive");
}

#[test]
fn every_member_signal_and_property_works_from_gdbus_and_busctl() {
    let (_bus, _tmp, daemon) = start();
    let (mut mon, lines) = monitor(&daemon);

    let (ok, out, _) = daemon.gdbus_call("Ping", &[]);
    assert!(ok && out.contains("'pong'"), "{out}");

    let hash = record(
        &daemon,
        "bridge:br-ext",
        "port.error",
        r#"{"summary":"OVS port tap9 on br-ext reports could not open network device","error":"No such device"}"#,
        "critical",
    );
    assert_eq!(hash.len(), 64);
    let recorded = wait_line(&lines, |l| l.contains("EventRecorded"));
    assert!(recorded.contains("bridge:br-ext") && recorded.contains(&hash), "{recorded}");
    // The event is searchable once BatchVectorized covers it.
    wait_line(&lines, |l| l.contains("BatchVectorized") && l.contains("uint64 1"));
    wait_line(&lines, |l| l.contains("PropertiesChanged") && l.contains("VectorizedSeq"));

    // The documented example, on the test's bus given as the system bus.
    let out = Command::new("gdbus")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &daemon.bus)
        .args([
            "call",
            "--system",
            "--dest",
            "dev.ovs.PortAgent1",
            "--object-path",
            "/dev/ovs/PortAgent1",
            "--method",
            "dev.ovs.PortAgent1.SemanticSearch",
            "find bridge configuration issues",
            "10",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hits: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(&gdbus_string(&String::from_utf8_lossy(&out.stdout))).unwrap()["hits"].clone();
    assert_eq!(hits[0]["hash"], hash.as_str());
    assert_eq!(hits[0]["element_id"], "bridge:br-ext");

    record(&daemon, "interface:eth0", "link.down", r#"{"summary":"eth0 lost carrier"}"#, "high");
    // Search with filters through busctl's a{sv}.
    let (ok, out, err) = daemon.busctl(&[
        "--json=short",
        "call",
        "dev.ovs.PortAgent1",
        "/dev/ovs/PortAgent1",
        "dev.ovs.PortAgent1",
        "Search",
        "sa{sv}",
        "cable problem",
        "2",
        "element_type",
        "s",
        "interface",
        "limit",
        "u",
        "5",
    ]);
    assert!(ok, "{err}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hits: serde_json::Value = serde_json::from_str::<serde_json::Value>(reply["data"][0].as_str().unwrap()).unwrap()["hits"].clone();
    assert!(hits.as_array().unwrap().iter().all(|h| h["element_type"] == "interface"), "{hits}");

    let (ok, out, _) = daemon.gdbus_call("GetElementHistory", &["interface:eth0", "10"]);
    assert!(ok);
    let history: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    assert_eq!(history[0]["action"], "link.down");

    let (ok, out, _) = daemon.gdbus_call("GetBlockchainStats", &[]);
    assert!(ok);
    let stats: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    assert_eq!(stats["events"], 2);
    assert_eq!(stats["head_seq"], 2);
    assert!(stats["model"]["id"].as_str().unwrap().starts_with("all-MiniLM-L6-v2"));
    assert!(stats["search_latency"]["count"].as_u64().unwrap() >= 2);

    let (ok, out, _) = daemon.busctl(&["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "VerifyChain"]);
    assert!(ok && out.starts_with("bs true"), "{out}");

    let (ok, out, _) =
        daemon.busctl(&["get-property", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "HeadSeq", "Role", "HeadHash"]);
    assert!(ok);
    let lines_out: Vec<&str> = out.lines().collect();
    assert_eq!(lines_out[0], "t 2");
    assert_eq!(lines_out[1], "s \"primary\"");
    assert!(lines_out[2].starts_with("s \"") && lines_out[2].len() == 68, "{out}");
    let _ = mon.kill();
}

#[test]
fn introspection_matches_the_checked_in_xml() {
    let (_bus, _tmp, daemon) = start();
    let out = Command::new("gdbus")
        .args(["introspect", "--address", &daemon.bus, "--dest", "dev.ovs.PortAgent1", "--object-path", "/dev/ovs/PortAgent1", "--xml"])
        .output()
        .unwrap();
    let live = String::from_utf8_lossy(&out.stdout).into_owned();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dbus/dev.ovs.PortAgent1.xml");
    let file = std::fs::read_to_string(path).unwrap();
    let span = |xml: &str| -> (usize, usize) {
        let start = xml.find(r#"<interface name="dev.ovs.PortAgent1">"#).expect("interface present");
        (start, xml[start..].find("</interface>").unwrap() + start)
    };
    let block = |xml: &str| -> String {
        let (start, end) = span(xml);
        xml[start..end].split_whitespace().collect::<Vec<_>>().join(" ")
    };
    // OVS_PORT_AGENT_BLESS=1 rewrites the file's interface from the live one (after a change
    // to the D-Bus API; review the diff).
    if std::env::var_os("OVS_PORT_AGENT_BLESS").is_some() {
        let ((ls, le), (fs, fe)) = (span(&live), span(&file));
        std::fs::write(path, format!("{}{}{}", &file[..fs], &live[ls..le], &file[fe..])).unwrap();
        return;
    }
    assert_eq!(block(&live), block(&file), "dbus/dev.ovs.PortAgent1.xml is out of date");
}

fn error_name(daemon: &AgentDaemon, args: &[&str]) -> String {
    let mut full = vec!["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1"];
    full.extend_from_slice(args);
    let (ok, out, err) = daemon.busctl(&full);
    assert!(!ok, "expected an error for {args:?}, got {out}");
    err
}

#[test]
fn bad_input_gets_invalid_args_with_a_reason() {
    let (_bus, _tmp, daemon) = start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // busctl prints only the message; zbus shows the error name.
    let conn = rt.block_on(zbus::connection::Builder::address(daemon.bus.as_str()).unwrap().build()).unwrap();
    let name_of = |method: &str, body: &dyn Fn() -> zbus::Result<zbus::Message>| -> (String, String) {
        let _ = method;
        match body() {
            Ok(m) => panic!("expected an error, got {m:?}"),
            Err(zbus::Error::MethodError(name, desc, _)) => (name.to_string(), desc.unwrap_or_default()),
            Err(other) => panic!("unexpected {other}"),
        }
    };
    let call = |method: &str, body: &dyn erased::Body| body.call(&rt, &conn, method);
    let cases: Vec<(&str, Box<dyn erased::Body>, &str)> = vec![
        ("SemanticSearch", Box::new(("", 10u32)), "query must not be empty"),
        ("SemanticSearch", Box::new(("q".repeat(5000), 10u32)), "more than the limit of 4096"),
        ("SemanticSearch", Box::new(("q ".repeat(50_000), 10u32)), "more than the limit of 4096"),
        ("SemanticSearch", Box::new(("what is the", 10u32)), "only common words"),
        ("SemanticSearch", Box::new(("?! --", 10u32)), "holds no words"),
        ("SemanticSearch", Box::new(("links", 0u32)), "limit must be between 1 and 1000"),
        ("SemanticSearch", Box::new(("links", 1001u32)), "limit must be between 1 and 1000"),
        ("RecordEvent", Box::new(("interface:eth0", "up", "{not json", "high")), "not valid JSON"),
        ("RecordEvent", Box::new(("interface:eth0", "up", "{}", "urgent")), "unknown priority"),
        ("RecordEvent", Box::new(("interface:eth0", "link down", "{}", "low")), "action"),
        ("RecordEvent", Box::new(("interface:eth0", "up", r#"{"x":"\udc80"}"#, "low")), "not valid JSON"),
        ("GetElementHistory", Box::new(("", 5u32)), "element_id"),
        ("GetElementState", Box::new(("interface:nobody", 0i64)), "no element \"interface:nobody\""),
        ("GetElementState", Box::new(("interface:eth0", -5i64)), "out of range"),
        ("AnalyzeConfigurationDrift", Box::new(("interface:nobody", 0i64)), "no element"),
        ("AnalyzeConfigurationDrift", Box::new(("interface:nobody", i64::MAX / 2_000_000)), "in the future"),
        ("FindSimilarConfigs", Box::new(("interface:nobody", 5u32)), "no element"),
        ("FindSimilarConfigs", Box::new(("interface:eth0", 1_000_000_000u32)), "limit must be between 1 and 1000"),
        ("FindSimilarIncidents", Box::new((0u64, 5u32)), "seq starts at 1"),
        ("FindSimilarIncidents", Box::new((u64::MAX, 5u32)), "there is no event"),
        ("FindSimilarIncidents", Box::new((1u64, 0u32)), "limit must be between 1 and 1000"),
        ("GetTimeline", Box::new((0i64, 0u64, std::collections::HashMap::<String, zbus::zvariant::Value>::new())), "longer than 0 ms"),
        ("GetTimeline", Box::new((0i64, u64::MAX, std::collections::HashMap::<String, zbus::zvariant::Value>::new())), "ten years"),
        ("DetectAnomalies", Box::new((0u64, std::collections::HashMap::<String, zbus::zvariant::Value>::new())), "longer than 0 ms"),
        (
            "DetectAnomalies",
            Box::new((100u64 * 366 * 86_400_000, std::collections::HashMap::<String, zbus::zvariant::Value>::new())),
            "ten years",
        ),
    ];
    for (method, body, reason) in cases {
        let (name, desc) = name_of(method, &|| call(method, body.as_ref()));
        assert_eq!(name, "org.freedesktop.DBus.Error.InvalidArgs", "{method}: {desc}");
        assert!(desc.contains(reason), "{method}: {desc:?} does not say {reason:?}");
    }
    // A wrong D-Bus signature is refused by zbus before our code runs, under its own error
    // name (docs/decisions.md); the message still says what was wrong.
    let (name, desc) = name_of("SemanticSearch", &|| call("SemanticSearch", &(5i32,)));
    assert!(desc.contains("Signature mismatch") && desc.contains("(su)"), "{name}: {desc}");
    assert!(error_name(&daemon, &["Search", "sa{sv}", "x", "1", "colour", "s", "red"]).contains("unknown option"));
    assert!(error_name(&daemon, &["Search", "sa{sv}", "x", "1", "limit", "s", "ten"]).contains("must be of type u"));
    // A time phrase that names no time: an answer that says so, not a silent filter.
    let (ok, out, err) = daemon.gdbus_call("SemanticSearch", &["errors since 99:99", "5"]);
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&gdbus_string(&out)).unwrap();
    assert!(answer["notes"].to_string().contains("names no time"), "{answer}");
    assert!(answer.get("time").is_none(), "no time filter was applied: {answer}");
    let (ok, _, _) = daemon.busctl(&["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "Ping"]);
    assert!(ok, "the daemon still serves");
}

/// Sends arbitrary bodies with zbus, so the tests can send wrong types on purpose.
mod erased {
    pub trait Body {
        fn call(&self, rt: &tokio::runtime::Runtime, conn: &zbus::Connection, method: &str) -> zbus::Result<zbus::Message>;
    }

    impl<T: serde::Serialize + zbus::zvariant::DynamicType> Body for T {
        fn call(&self, rt: &tokio::runtime::Runtime, conn: &zbus::Connection, method: &str) -> zbus::Result<zbus::Message> {
            rt.block_on(conn.call_method(Some("dev.ovs.PortAgent1"), "/dev/ovs/PortAgent1", Some("dev.ovs.PortAgent1"), method, self))
        }
    }
}

#[test]
fn a_thousand_malformed_calls_are_all_answered_and_the_daemon_survives() {
    let (_bus, _tmp, daemon) = start();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let conn = rt.block_on(zbus::connection::Builder::address(daemon.bus.as_str()).unwrap().build()).unwrap();
    let mut rng = StdRng::seed_from_u64(1000);
    let methods =
        ["SemanticSearch", "Search", "GetElementHistory", "RecordEvent", "VerifyChain", "GetBlockchainStats", "Ping", "NoSuchMethod"];
    let mut errors = 0;
    let mut answered = 0;
    let big = "x".repeat(200_000);
    for i in 0..1000 {
        let method = methods[rng.gen_range(0..methods.len())];
        let junk_json = ["{", "[]", "null", "{\"a\":", "\"\\udc80\"", "{\"a\":1}}", &big];
        let s = |rng: &mut StdRng| -> String {
            match rng.gen_range(0..6) {
                0 => String::new(),
                1 => big.clone(),
                2 => junk_json[rng.gen_range(0..junk_json.len())].to_owned(),
                // Control characters (NUL itself is not allowed in D-Bus strings: the bus
                // disconnects a client that sends one, before the daemon sees it).
                3 => "\u{1}\u{7}\u{1b}[31m\u{7f}".into(),
                4 => "interface:".repeat(rng.gen_range(1..100)),
                _ => "bridge:br0".into(),
            }
        };
        let n: u32 = [0, 1001, u32::MAX][rng.gen_range(0..3)];
        let result = match (method, rng.gen_range(0..5)) {
            (_, 0) => rt.block_on(conn.call_method(
                Some("dev.ovs.PortAgent1"),
                "/dev/ovs/PortAgent1",
                Some("dev.ovs.PortAgent1"),
                method,
                &(rng.r#gen::<i64>(), rng.r#gen::<f64>()),
            )),
            (_, 1) => rt.block_on(conn.call_method(
                Some("dev.ovs.PortAgent1"),
                "/dev/ovs/PortAgent1",
                Some("dev.ovs.PortAgent1"),
                method,
                &(s(&mut rng), n),
            )),
            ("Search", _) => {
                let mut opts = std::collections::HashMap::new();
                opts.insert(s(&mut rng), zbus::zvariant::Value::from(s(&mut rng)));
                opts.insert("limit".to_owned(), zbus::zvariant::Value::I64(-1));
                rt.block_on(conn.call_method(
                    Some("dev.ovs.PortAgent1"),
                    "/dev/ovs/PortAgent1",
                    Some("dev.ovs.PortAgent1"),
                    method,
                    &(s(&mut rng), opts),
                ))
            }
            ("RecordEvent", _) => {
                let body = (s(&mut rng), s(&mut rng), s(&mut rng), ["low", "", "CRITICAL", "high\u{1}"][rng.gen_range(0..4)]);
                rt.block_on(conn.call_method(Some("dev.ovs.PortAgent1"), "/dev/ovs/PortAgent1", Some("dev.ovs.PortAgent1"), method, &body))
            }
            _ => rt.block_on(conn.call_method(
                Some("dev.ovs.PortAgent1"),
                "/dev/ovs/PortAgent1",
                Some("dev.ovs.PortAgent1"),
                method,
                &(s(&mut rng), s(&mut rng), n),
            )),
        };
        // zbus ignores surplus arguments to members that take none; every call to a member
        // with arguments is malformed here and must be refused.
        let takes_arguments = !matches!(method, "Ping" | "VerifyChain" | "GetBlockchainStats");
        match result {
            Err(zbus::Error::MethodError(..)) => {
                errors += 1;
                answered += 1;
            }
            Ok(reply) if !takes_arguments => {
                answered += 1;
                let _ = reply;
            }
            Ok(reply) => panic!("call {i} to {method} was malformed but accepted: {reply:?}"),
            Err(other) => panic!("call {i} to {method} was not answered properly: {other:?}"),
        }
    }
    assert_eq!(answered, 1000);
    assert!(errors >= 500, "only {errors} of 1000 malformed calls were refused");
    let (ok, out, _) = daemon.gdbus_call("Ping", &[]);
    assert!(ok && out.contains("pong"), "the daemon still serves");
    let (ok, out, _) = daemon.busctl(&["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "VerifyChain"]);
    assert!(ok && out.starts_with("bs true"), "whatever was accepted kept the ledger intact: {out}");
}

#[test]
fn sigterm_stops_within_seconds_and_a_restart_keeps_everything() {
    let (bus, tmp, mut daemon) = start();
    for i in 0..5 {
        record(&daemon, &format!("interface:veth{i}"), "link.up", "{}", "low");
    }
    let (took, status) = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    let (code, out, _) = common::agent(&["verify", "--data-dir", tmp.path().join("state").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("head seq 5"), "{out}");
    let daemon = AgentDaemon::start(&bus.address, &tmp.path().join("state"), &daemon.config.clone());
    // Events recorded just before the stop may still wait for their vectors: they get them
    // after the restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, _) =
            daemon.busctl(&["get-property", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "HeadSeq", "VectorizedSeq"]);
        assert!(ok);
        let lines: Vec<String> = out.lines().map(str::to_owned).collect();
        assert_eq!(lines[0], "t 5", "the restart serves the same head");
        if lines[1] == "t 5" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "vectors never caught up: {lines:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn analysis_verbs_answer_from_the_daemon() {
    let (_bus, _tmp, daemon) = start();
    record(&daemon, "port:vnet1", "row.added", r#"{"after":{"bridge":"br0","tag":10,"vlan_mode":"access"}}"#, "low");
    record(&daemon, "port:vnet2", "row.added", r#"{"after":{"bridge":"br0","tag":10,"vlan_mode":"access"}}"#, "low");
    record(&daemon, "port:vnet1", "row.modified", r#"{"before":{"tag":10},"after":{"tag":20},"changed":["tag"]}"#, "critical");
    let json = |args: &[&str]| -> serde_json::Value {
        let mut full = vec!["--bus", daemon.bus.as_str(), "--json"];
        full.extend_from_slice(args);
        let (code, out, err) = common::agent(&full);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap()
    };
    let state = json(&["state", "port:vnet1"]);
    assert_eq!(
        (state["state"]["tag"].clone(), state["fields"]["tag"]["set_by"]["seq"].clone()),
        (serde_json::json!(20), serde_json::json!(3))
    );
    let drift = json(&["drift", "port:vnet1", "--since", "1h"]);
    assert_eq!(drift["changed"][0]["field"], "bridge", "{drift}");
    let timeline = json(&["timeline", "1min", "--window", "1h", "--element", "port:vnet1"]);
    assert_eq!(timeline["first_critical"]["seq"], 3, "{timeline}");
    let similar = json(&["similar", "port:vnet1"]);
    assert_eq!(similar["similar"][0]["element_id"], "port:vnet2", "{similar}");
    let incidents = json(&["incidents", "3"]);
    assert!(incidents["incidents"].as_array().unwrap().iter().all(|i| i["event"]["seq"].as_u64().unwrap() < 3), "{incidents}");
    let anomalies = json(&["anomalies", "--window", "1h"]);
    assert_eq!(anomalies["scored_events"], 3, "{anomalies}");
    let stats = json(&["status"]);
    assert!(stats["anomalies"]["scored_seq"].is_u64(), "{stats}");
    let (code, out, _) = common::agent(&["--bus", &daemon.bus, "drift", "port:vnet1", "--since", "1h"]);
    assert_eq!(code, 0);
    assert!(out.contains("blame"), "{out}");
}

#[test]
fn cli_verbs_talk_to_the_daemon_over_dbus() {
    let (_bus, _tmp, daemon) = start();
    record(&daemon, "interface:eth7", "link.down", r#"{"summary":"eth7 lost carrier"}"#, "high");
    // Follow new events in the background.
    let mut follower = Command::new(agent_bin()).args(["--bus", &daemon.bus, "tail", "--follow"]).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    record(&daemon, "bridge:br9", "port.added", r#"{"summary":"port p1 added to br9"}"#, "medium");
    let line = rx.recv_timeout(Duration::from_secs(10)).expect("tail -f printed the new event");
    assert!(line.contains("bridge:br9") && line.contains("port.added"), "{line}");
    // Status reads as a table, a line per concern (JSON only with --json): the sources say
    // they wait and why (no NetworkManager on this bus); replicas says when there are none.
    let (code, out, _) = common::agent(&["--bus", &daemon.bus, "status"]);
    assert_eq!(code, 0);
    assert!(!out.trim_start().starts_with('{') && out.lines().any(|l| l.starts_with("head ") && l.contains("seq 2")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("source ") && l.contains("nm: waiting") && l.contains("NetworkManager is not on")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("replica ") && l.contains("none configured")), "{out}");
    let (code, out, _) = common::agent(&["--bus", &daemon.bus, "replicas"]);
    assert_eq!(code, 0);
    assert!(out.contains("no replicas configured"), "{out}");
    let _ = follower.kill();

    let (code, out, err) = common::agent(&["--bus", &daemon.bus, "--json", "search", "cable unplugged", "-n", "1"]);
    assert_eq!(code, 0, "{err}");
    let hits: serde_json::Value = serde_json::from_str::<serde_json::Value>(&out).unwrap()["hits"].clone();
    assert_eq!(hits[0]["element_id"], "interface:eth7");
    let (code, out, _) = common::agent(&["--bus", &daemon.bus, "history", "interface:eth7"]);
    assert_eq!(code, 0);
    assert!(out.contains("link.down"), "{out}");
    let (code, out, _) = common::agent(&["--bus", &daemon.bus, "--json", "status"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["head_seq"], 2);
}

#[test]
fn the_shipped_policy_lets_root_write_the_group_read_and_others_only_introspect() {
    let bus = PrivateBus::system_with_shipped_policy();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_daemon_config(tmp.path(), "");
    let daemon = AgentDaemon::start(&bus.address, &tmp.path().join("state"), &config);
    let as_user = |user: &[&str], args: &[&str]| -> (bool, String) {
        let mut cmd = Command::new("setpriv");
        cmd.args(user).arg("busctl").arg(format!("--address={}", bus.address)).args(args);
        let out = cmd.output().unwrap();
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let nobody = ["--reuid=nobody", "--regid=nogroup", "--clear-groups"];
    let reader = ["--reuid=nobody", "--regid=nogroup", "--groups=netdev"];
    let call = |m: &'static str| vec!["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", m];
    let record = [
        "call",
        "dev.ovs.PortAgent1",
        "/dev/ovs/PortAgent1",
        "dev.ovs.PortAgent1",
        "RecordEvent",
        "ssss",
        "interface:eth0",
        "up",
        "{}",
        "low",
    ];
    let search = ["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "SemanticSearch", "su", "link", "3"];

    // root: everything.
    let (ok, out) = as_user(&[], &record);
    assert!(ok, "root may record: {out}");
    // nobody: refused writes and reads, may introspect.
    let (ok, out) = as_user(&nobody, &record);
    assert!(!ok && out.contains("denied"), "nobody must not record: {out}");
    let (ok, out) = as_user(&nobody, &search);
    assert!(!ok && out.contains("denied"), "nobody must not read: {out}");
    let (ok, out) = as_user(&nobody, &["introspect", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "--xml-interface"]);
    assert!(ok && out.contains("SemanticSearch"), "everyone may introspect: {out}");
    // a member of the group: reads, but no writes.
    let (ok, out) = as_user(&reader, &search);
    assert!(ok, "netdev may search: {out}");
    let (ok, out) = as_user(&reader, &call("GetBlockchainStats"));
    assert!(ok, "netdev may read stats: {out}");
    let (ok, out) = as_user(&reader, &["get-property", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "HeadSeq"]);
    assert!(ok && out.trim() == "t 1", "netdev may read properties: {out}");
    let anomalies =
        ["call", "dev.ovs.PortAgent1", "/dev/ovs/PortAgent1", "dev.ovs.PortAgent1", "DetectAnomalies", "ta{sv}", "3600000", "0"];
    let (ok, out) = as_user(&reader, &anomalies);
    assert!(ok, "netdev may run the analyses: {out}");
    let (ok, out) = as_user(&nobody, &anomalies);
    assert!(!ok && out.contains("denied"), "nobody must not run them: {out}");
    let (ok, out) = as_user(&reader, &record);
    assert!(!ok && out.contains("denied"), "netdev must not record: {out}");
    let (ok, out) = as_user(&reader, &call("SyncNow"));
    assert!(!ok && out.contains("denied"), "netdev must not force a sync: {out}");
    // Only root may own the name.
    let (ok, out) = as_user(
        &nobody,
        &["call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName", "su", "dev.ovs.PortAgent1", "4"],
    );
    assert!(!ok || !out.contains("u 1"), "nobody must not own the name: {out}");
    drop(daemon);
}
