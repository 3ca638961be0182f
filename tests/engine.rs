//! The pipeline on the real model: events are vectorized at creation and searchable; a
//! restart (checkpoint + tail), a lost or corrupt checkpoint and a model change behave.

mod common;

use common::{model_config, plain_config, sample_event};
use ovs_port_agent::config::Config;
use ovs_port_agent::engine::Engine;
use ovs_port_agent::event::{NewEvent, Priority};
use ovs_port_agent::layout::Layout;
use ovs_port_agent::vector::Filters;
use serde_json::json;

fn config() -> Config {
    let mut config = plain_config();
    config.embedding = model_config();
    config.vector.checkpoint_min_vectors = 50;
    config
}

const QUERIES: [&str; 4] = ["link went down", "port added to an OVS bridge", "MTU change on a connection", "connectivity lost"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The top-5 scores per query (rounded): the sample stream repeats texts, so equal-score
/// ties may come back in either order, but the scores themselves must not change.
fn top_results(rt: &tokio::runtime::Runtime, engine: &Engine) -> Vec<Vec<i64>> {
    QUERIES
        .iter()
        .map(|q| {
            let answer = rt.block_on(engine.search(q, 5, Filters::default())).unwrap();
            answer.hits.iter().map(|h| (h.why.semantic.unwrap_or_default() * 1e5).round() as i64).collect()
        })
        .collect()
}

fn fill(rt: &tokio::runtime::Runtime, engine: &Engine, n: usize) -> u64 {
    let events: Vec<NewEvent> = (0..n).map(sample_event).collect();
    let records = rt.block_on(engine.record(events)).unwrap();
    let last = records.last().unwrap().seq;
    rt.block_on(engine.wait_vectorized(last)).unwrap();
    last
}

#[test]
fn recorded_events_are_vectorized_and_found() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::state(tmp.path());
    let engine = Engine::open(&layout, &config()).unwrap();
    let event = NewEvent::new(
        "test",
        "bridge:br-ext",
        "port.error",
        Priority::Critical,
        json!({"after": {"error": "could not open network device tap9 (No such device)"}}),
    )
    .with_summary("OVS port tap9 on br-ext reports an error: no such device");
    fill(&rt, &engine, 40);
    let recorded = rt.block_on(engine.record(vec![event])).unwrap();
    let seq = recorded[0].seq;
    rt.block_on(engine.wait_vectorized(seq)).unwrap();
    let hits = rt.block_on(engine.search("bridge port broken, device missing", 3, Filters::default())).unwrap().hits;
    assert_eq!(hits[0].seq, seq, "{hits:#?}");
    assert_eq!(hits[0].hash, recorded[0].hash_hex());
    // Filters during the search: only bridges, only critical.
    let filters = Filters { element_type: Some("bridge".into()), ..Default::default() };
    let hits = rt.block_on(engine.search("link down", 10, filters)).unwrap().hits;
    assert!(!hits.is_empty() && hits.iter().all(|h| h.element_type == "bridge"));
    let filters = Filters { min_priority: Some(Priority::Critical), ..Default::default() };
    let hits = rt.block_on(engine.search("network change", 50, filters)).unwrap().hits;
    assert!(hits.iter().all(|h| h.priority == Priority::Critical));
    assert!(hits.iter().any(|h| h.seq == seq || h.similar.contains(&seq)));
}

#[test]
fn restart_with_checkpoint_and_tail_gives_the_same_results() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::state(tmp.path());
    let config = config();
    let before = {
        let engine = Engine::open(&layout, &config).unwrap();
        fill(&rt, &engine, 120);
        engine.request_checkpoint();
        // A tail after the checkpoint: written to SQLite, not yet in a checkpoint.
        let events: Vec<NewEvent> = (120..150).map(sample_event).collect();
        let last = rt.block_on(engine.record(events)).unwrap().last().unwrap().seq;
        rt.block_on(engine.wait_vectorized(last)).unwrap();
        let results = top_results(&rt, &engine);
        // Simulate a crash after the tail: no shutdown checkpoint.
        std::mem::forget(engine);
        results
    };
    // The forgotten engine still holds the lock inside this process; a real crash releases
    // it. Copy the state to a fresh directory, as a restart would find it.
    let restarted = tempfile::tempdir().unwrap();
    copy_tree(tmp.path(), restarted.path());
    let layout2 = Layout::state(restarted.path());
    let checkpoint = std::fs::read_to_string(layout2.hnsw_dir().join("CHECKPOINT")).unwrap();
    let info: serde_json::Value = serde_json::from_str(&checkpoint).unwrap();
    assert!(info["seq"].as_u64().unwrap() < 150, "the checkpoint does not cover the tail: {info}");
    let engine = Engine::open(&layout2, &config).unwrap();
    assert_eq!(engine.search_state().graph.read().unwrap().len(), 150);
    assert_eq!(top_results(&rt, &engine), before);
    drop(engine);

    // A deleted checkpoint is rebuilt from the stored vectors.
    std::fs::remove_dir_all(layout2.hnsw_dir()).unwrap();
    let engine = Engine::open(&layout2, &config).unwrap();
    assert_eq!(engine.search_state().graph.read().unwrap().len(), 150);
    assert_eq!(top_results(&rt, &engine), before);
    drop(engine); // shutdown writes a checkpoint again

    // A corrupted checkpoint too.
    let graph_file = std::fs::read_dir(layout2.hnsw_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".graph"))
        .expect("shutdown wrote a checkpoint");
    let good = std::fs::read(&graph_file).unwrap();
    std::fs::write(&graph_file, &good[..good.len() / 3]).unwrap();
    let engine = Engine::open(&layout2, &config).unwrap();
    assert_eq!(engine.search_state().graph.read().unwrap().len(), 150);
    assert_eq!(top_results(&rt, &engine), before);
    drop(engine);

    // One byte changed in the middle (a node's links): caught by the checksum, rebuilt.
    let graph_file = std::fs::read_dir(layout2.hnsw_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".graph"))
        .expect("shutdown wrote a checkpoint");
    let mut bytes = std::fs::read(&graph_file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&graph_file, bytes).unwrap();
    let engine = Engine::open(&layout2, &config).unwrap();
    assert_eq!(engine.search_state().graph.read().unwrap().len(), 150);
    assert_eq!(top_results(&rt, &engine), before);
}

/// The index is derived data: deleted, or with a page overwritten, it is rebuilt from the
/// ledger at the next start (the damaged file kept aside, the repair recorded), vectors are
/// embedded again, and searches answer as before.
#[test]
fn a_deleted_or_damaged_index_is_rebuilt_from_the_ledger() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::state(tmp.path());
    let config = config();
    let (before, head) = {
        let engine = Engine::open(&layout, &config).unwrap();
        let head = fill(&rt, &engine, 150);
        (top_results(&rt, &engine), head)
    };
    let index = layout.index_path();
    for damage in ["deleted", "a b-tree page overwritten"] {
        if damage == "deleted" {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", index.display()));
            }
        } else {
            // Fold the WAL into the file first (as a clean stop does), so the page read is
            // the damaged one. Page 2 holds a table's b-tree: SQLite keeps no checksums, so a
            // changed value in a leaf is not detectable, a damaged page structure is.
            let c = rusqlite::Connection::open(&index).unwrap();
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
            drop(c);
            let mut bytes = std::fs::read(&index).unwrap();
            bytes[4096..8192].fill(0xA5);
            std::fs::write(&index, bytes).unwrap();
        }
        let engine = Engine::open(&layout, &config).unwrap();
        let now = rt.block_on(engine.history("agent:index".into(), 10)).unwrap();
        let last = now.first().map_or(head, |e| e.seq.max(head));
        rt.block_on(engine.wait_vectorized(last)).unwrap();
        assert_eq!(top_results(&rt, &engine), before, "{damage}: the same answers after the rebuild");
        assert_eq!(engine.search_state().graph.read().unwrap().len() as u64, last, "{damage}");
        if damage != "deleted" {
            assert_eq!(now[0].action, "index.rebuilt", "{damage}: the repair is in the history");
            let names = |dir: &std::path::Path| -> Vec<String> {
                std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            };
            assert!(names(&layout.root.join("damaged")).iter().any(|n| n.starts_with("index.sqlite.")), "kept aside");
            let in_data = names(&layout.data);
            assert!(in_data.iter().all(|n| !n.starts_with("index.sqlite.")), "nothing of it is streamed: {in_data:?}");
        }
    }
}

#[test]
fn a_different_model_is_refused_with_reembed_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::state(tmp.path());
    drop(Engine::open(&layout, &config()).unwrap());
    let conn = rusqlite::Connection::open(layout.index_path()).unwrap();
    conn.execute("UPDATE meta SET value = 'feedface' WHERE key = 'model_sha256'", []).unwrap();
    drop(conn);
    let err = Engine::open(&layout, &config()).err().expect("a model mismatch must be refused").to_string();
    assert!(err.contains("reembed") && err.contains("feedface"), "{err}");

    // `reembed` drops the old vectors and embeds the whole history with the configured model.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = common::write_daemon_config(cfg_dir.path(), "");
    let (code, out, err) =
        common::agent(&["--config", cfg.to_str().unwrap(), "--json", "reembed", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let engine = Engine::open(&layout, &config()).expect("the re-embedded index opens");
    assert_eq!(*engine.vectorized().borrow(), 0, "an empty ledger has nothing to embed");
}

#[test]
fn reembed_embeds_the_whole_history_again() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::state(tmp.path());
    let before = {
        let engine = Engine::open(&layout, &config()).unwrap();
        fill(&rt, &engine, 30);
        top_results(&rt, &engine)
    };
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = common::write_daemon_config(cfg_dir.path(), "");
    let (code, out, err) =
        common::agent(&["--config", cfg.to_str().unwrap(), "--json", "reembed", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["events"], 30);
    let engine = Engine::open(&layout, &config()).unwrap();
    assert_eq!(*engine.vectorized().borrow(), 30);
    assert_eq!(top_results(&rt, &engine), before, "the same model gives the same answers");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else if entry.file_name() != "agent.lock" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A word most events hold ("link") is matched among its newest events only (bounded cost at
/// any size, said in the answer), while a rare one ("eth7") is found however old its events.
#[test]
fn common_words_are_matched_in_a_window_and_rare_ones_everywhere() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(&Layout::state(tmp.path()), &config()).unwrap();
    let event = |name: &str, action: &str| {
        NewEvent::new("nm", &format!("interface:{name}"), action, Priority::Low, json!({"summary": format!("{name} link {action}")}))
    };
    let mut events = vec![event("eth7", "link.down")];
    events.extend((0..700).map(|i| event(&format!("veth{i}"), if i % 2 == 0 { "link.up" } else { "link.down" })));
    let records = rt.block_on(engine.record(events)).unwrap();
    rt.block_on(engine.wait_vectorized(records.last().unwrap().seq)).unwrap();
    let answer = rt.block_on(engine.search("link down on eth7", 5, Filters::default())).unwrap();
    assert_eq!(answer.hits[0].element_id, "interface:eth7", "the oldest event, by its rare name: {:?}", answer.hits[0]);
    assert!(answer.notes.iter().any(|n| n.contains("common words (link)") && n.contains("newest 500")), "{:?}", answer.notes);
    let answer = rt.block_on(engine.search("eth7", 5, Filters::default())).unwrap();
    assert!(answer.notes.iter().all(|n| !n.contains("common words")), "{:?}", answer.notes);
}
