//! Every imported event is searchable, and a search says why when it cannot be: `import`
//! embeds what it appends (progress on stderr); `--no-embed` leaves a warning with the fix,
//! and searches report the events not embedded yet. Through the real binary, offline.

mod common;

use common::{agent, write_daemon_config};
use serde_json::Value;

/// Generic-exporter events without summaries (the style the issue's operators imported).
fn generic_events(n: usize, offset: usize) -> String {
    (0..n)
        .map(|i| {
            let (element, action, details) = match i % 3 {
                0 => (
                    format!("interface:ens{}", i + offset),
                    "device_state",
                    r#"{"old_state":"ip-config","new_state":"failed","reason":"dhcp-failed"}"#,
                ),
                1 => (
                    format!("interface:ens{}", i + offset),
                    "oper_status",
                    r#"{"old_state":"up","new_state":"down","reason":"carrier-lost"}"#,
                ),
                _ => ("nm:manager".to_owned(), "connectivity", r#"{"connectivity":"none","previous":"full"}"#),
            };
            format!("{{\"element_id\":\"{element}\",\"action\":\"{action}\",\"source\":\"import\",\"details\":{details}}}\n")
        })
        .collect()
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn imported_events_are_embedded_and_found_with_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_daemon_config(tmp.path(), "");
    let (config, state) = (config.to_str().unwrap(), tmp.path().join("state"));
    let state = state.to_str().unwrap();
    let file = tmp.path().join("events.jsonl");
    std::fs::write(&file, generic_events(30, 0)).unwrap();

    let (code, out, err) = agent(&["--config", config, "import", "--data-dir", state, file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 30 events") && out.contains("every event is searchable"), "{out}");
    assert!(err.contains("30 of 30 events embedded"), "plain progress lines when stderr is not a terminal: {err}");
    let (_, status, _) = agent(&["status", "--data-dir", state, "--json"]);
    assert_eq!(json_of(&status)["vectorized_seq"], 30, "{status}");

    let (code, out, err) = agent(&["--config", config, "search", "--data-dir", state, "--json", "device failed to activate"]);
    assert_eq!(code, 0, "{err}");
    let answer = json_of(&out);
    assert_eq!(answer["not_vectorized"], 0, "{answer}");
    let first = &answer["hits"][0];
    assert_eq!(first["action"], "device_state", "{answer}");
    assert!(first["summary"].as_str().unwrap().contains("ip-config → failed"), "a summary is generated: {first}");
    assert_eq!(first["changes"][0], serde_json::json!({"field": "state", "before": "ip-config", "after": "failed"}), "{first}");
    assert!(first["why"]["semantic"].is_number() || first["why"]["terms"].is_array(), "{first}");
    // Ten events of each kind are one element each for interfaces; the manager's ten
    // connectivity losses collapse into one hit with the others counted.
    let (_, out, _) = agent(&["--config", config, "search", "--data-dir", state, "--json", "internet connectivity lost"]);
    let answer = json_of(&out);
    let manager = answer["hits"].as_array().unwrap().iter().find(|h| h["element_id"] == "nm:manager").expect("the manager's hit");
    assert_eq!(manager["similar"].as_array().unwrap().len(), 9, "{manager}");
}

#[test]
fn events_not_embedded_are_counted_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_daemon_config(tmp.path(), "");
    let (config, state) = (config.to_str().unwrap(), tmp.path().join("state"));
    let state = state.to_str().unwrap();
    let file = tmp.path().join("events.jsonl");
    std::fs::write(&file, generic_events(12, 0)).unwrap();

    let (code, out, err) = agent(&["--config", config, "--json", "import", "--no-embed", "--data-dir", state, file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_of(&out)["not_vectorized"], 12, "{out}");
    assert!(err.contains("12 events are not embedded") && err.contains("ovs-port-agent reembed"), "the warning says how to fix it: {err}");

    let (code, out, err) = agent(&["--config", config, "search", "--data-dir", state, "--json", "carrier lost"]);
    assert_eq!(code, 0, "{err}");
    let answer = json_of(&out);
    assert_eq!(answer["not_vectorized"], 12, "{answer}");
    assert!(answer["notes"].to_string().contains("not embedded yet") && answer["notes"].to_string().contains("reembed"), "{answer}");
    assert!(!answer["hits"].as_array().unwrap().is_empty(), "the words still find them: {answer}");

    // `reembed` fixes it.
    let (code, _, err) = agent(&["--config", config, "reembed", "--data-dir", state]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = agent(&["--config", config, "search", "--data-dir", state, "--json", "carrier lost"]);
    assert_eq!(json_of(&out)["not_vectorized"], 0, "{out}");
}

#[test]
fn offline_search_refuses_what_it_cannot_search_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_daemon_config(tmp.path(), "");
    let (config, state) = (config.to_str().unwrap(), tmp.path().join("state"));
    let state = state.to_str().unwrap();
    let file = tmp.path().join("events.jsonl");
    std::fs::write(&file, generic_events(3, 0)).unwrap();
    assert_eq!(agent(&["--config", config, "import", "--no-embed", "--data-dir", state, file.to_str().unwrap()]).0, 0);
    for (query, reason) in [("the what is", "only common words"), ("", "must not be empty"), ("?!", "holds no words")] {
        let (code, _, err) = agent(&["--config", config, "search", "--data-dir", state, query]);
        assert_eq!(code, 2, "{query:?}: {err}");
        assert!(err.contains(reason), "{query:?}: {err}");
    }
    let huge = "link ".repeat(20_000);
    let (code, _, err) = agent(&["--config", config, "search", "--data-dir", state, &huge]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than the limit of 4096"), "{err}");
}
