//! Reading a replica's receive directory from a test: its state, its head, and whether it
//! converged cleanly (newest snapshot verifies, nothing partial left).

use super::agent;
use std::path::Path;
use std::time::{Duration, Instant};

/// `replica-state.json`, or null before the first verified snapshot.
pub fn replica_state(dir: &Path) -> serde_json::Value {
    std::fs::read(dir.join("replica-state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null)
}

/// The head seq of the replica's newest verified snapshot (0 before the first).
pub fn replica_head(dir: &Path) -> u64 {
    replica_state(dir)["head_seq"].as_u64().unwrap_or(0)
}

/// Polls `done` every 50 ms until it holds, or panics after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The replica's newest snapshot verifies on its own, and its directory holds nothing but
/// verified snapshots and its own state files.
pub fn assert_clean(dir: &Path) {
    let newest_name = || replica_state(dir)["newest"].as_str().expect("a verified snapshot").to_owned();
    // A primary still streaming (its own anomaly events are recorded too) may replace the
    // newest snapshot while it is verified here, and the replica prunes the one replaced:
    // verify the newest again then. A snapshot still the newest must verify.
    let verified = (0..20).any(|_| {
        let name = newest_name();
        let (code, out, err) = agent(&["verify", "--data-dir", dir.join(&name).to_str().unwrap()]);
        if code != 0 {
            assert_ne!(newest_name(), name, "the newest snapshot verifies: {out}{err}");
        }
        code == 0
    });
    assert!(verified, "no newest snapshot stayed the newest long enough to be verified (20 tries)");
    let partial: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("data@") && !n.starts_with('.') && !n.ends_with(".json") && !n.ends_with(".jsonl"))
        .collect();
    assert!(partial.is_empty(), "left in the replica directory: {partial:?}");
}
