//! Search quality on a labelled evaluation set (tests/data, made by make_eval.py): 322
//! NetworkManager/OVS events over 23 topics, 45 natural-language queries, each with the
//! topics whose events are relevant. The events go through the real pipeline (ledger →
//! semantic text → model → HNSW, and the keyword index) and the queries through
//! `SemanticSearch`'s code path.
//!
//! recall@10 = |relevant ∩ top 10| / min(10, |relevant|), averaged over queries;
//! MRR = mean of 1 / rank of the first relevant hit (0 when none is in the top 10).

mod common;

use common::{model_config, plain_config};
use ovs_port_agent::engine::Engine;
use ovs_port_agent::event::NewEvent;
use ovs_port_agent::layout::Layout;
use ovs_port_agent::vector::Filters;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Thresholds: with the first search (semantic only, the first model) this set measured
/// recall@10 0.553 and MRR 0.829; with the hybrid search of issue 12 (keywords and meaning
/// fused, direction-aware, near-duplicates collapsed, the int8 model) 0.600 and 0.929. Recall
/// is held down by the many relevant events per topic (a collapsed hit counts once). The
/// thresholds sit five points below the measurement: a drop past them means the search
/// regressed.
const MIN_RECALL_AT_10: f64 = 0.55;
const MIN_MRR: f64 = 0.88;

#[test]
fn recall_at_10_and_mrr_on_the_labelled_set() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let events_text = std::fs::read_to_string(format!("{data}/eval-events.jsonl")).unwrap();
    let mut events = Vec::new();
    let mut topics_of_seq: HashMap<u64, Vec<String>> = HashMap::new();
    for (i, line) in events_text.lines().enumerate() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let topics: Vec<String> = serde_json::from_value(v["topics"].take()).unwrap();
        topics_of_seq.insert(i as u64 + 1, topics);
        let obj = v.as_object_mut().unwrap();
        obj.remove("topics");
        let e: NewEvent = NewEvent::new(
            obj["source"].as_str().unwrap(),
            obj["element_id"].as_str().unwrap(),
            obj["action"].as_str().unwrap(),
            obj["priority"].as_str().unwrap().parse().unwrap(),
            obj["details"].clone(),
        )
        .with_summary(obj["summary"].as_str().unwrap());
        events.push(e);
    }
    assert!(events.len() >= 300);
    let queries: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(format!("{data}/eval-queries.json")).unwrap()).unwrap();
    assert!(queries.len() >= 40);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = plain_config();
    config.embedding = model_config();
    let engine = Engine::open(&Layout::state(tmp.path()), &config).unwrap();
    let records = rt.block_on(engine.record(events)).unwrap();
    rt.block_on(engine.wait_vectorized(records.last().unwrap().seq)).unwrap();

    let mut recall_sum = 0.0;
    let mut rr_sum = 0.0;
    let mut worst = Vec::new();
    for q in &queries {
        let text = q["query"].as_str().unwrap();
        let wanted: HashSet<String> = serde_json::from_value(q["relevant_topics"].clone()).unwrap();
        let relevant: HashSet<u64> = topics_of_seq.iter().filter(|(_, t)| t.iter().any(|t| wanted.contains(t))).map(|(s, _)| *s).collect();
        let hits = rt.block_on(engine.search(text, 10, Filters::default())).unwrap().hits;
        if std::env::var("EVAL_VERBOSE").is_ok() {
            eprintln!("Q {text}");
            for h in &hits {
                eprintln!("   {} {:.3} {} | {}", if relevant.contains(&h.seq) { "+" } else { "-" }, h.score, h.element_id, h.summary);
            }
        }
        let found = hits.iter().filter(|h| relevant.contains(&h.seq)).count();
        let recall = found as f64 / relevant.len().min(10) as f64;
        let rr = hits.iter().position(|h| relevant.contains(&h.seq)).map(|p| 1.0 / (p + 1) as f64).unwrap_or(0.0);
        recall_sum += recall;
        rr_sum += rr;
        worst.push((recall, text.to_owned()));
    }
    let n = queries.len() as f64;
    let (recall, mrr) = (recall_sum / n, rr_sum / n);
    worst.sort_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!("recall@10 {recall:.3}  MRR {mrr:.3}  over {} queries; weakest: {:?}", queries.len(), &worst[..5]);
    assert!(recall >= MIN_RECALL_AT_10, "recall@10 {recall:.3} below {MIN_RECALL_AT_10}");
    assert!(mrr >= MIN_MRR, "MRR {mrr:.3} below {MIN_MRR}");
}
