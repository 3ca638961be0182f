//! The search evaluation (tests/data/search-eval): a realistic three-day history in two
//! field-naming styles and operator questions labelled by topic, name and time window,
//! asked at the history's NOW. Run by `tests/search_eval.rs` (thresholds) and by the
//! `quality` benchmark section (the figures, with the BM25 baseline).
//!
//! Metrics, per question: precision@5 = relevant among the first 5 hits ÷ min(5, relevant
//! events); reciprocal rank of the first relevant hit among the first 10 (0 when none).
//! A hit that stands for near-duplicates counts once, by its own event.

use ovs_port_agent::engine::Engine;
use ovs_port_agent::event::NewEvent;
use ovs_port_agent::search::plan;
use ovs_port_agent::vector::Filters;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;

/// 2026-11-20T09:30:00Z: when the questions are asked (make_history.py's NOW).
pub const NOW_NS: i64 = 1_795_167_000 * 1_000_000_000;

pub struct Question {
    pub text: String,
    pub split: Split,
    /// A name, number or address the question names, or a time window.
    pub class: &'static str,
    pub relevant: HashSet<u64>,
}

/// Which questions a choice may be made on. `Dev`: used while building. `HeldOut`: only
/// scored while the search was built (2026-11-30), though its failures were read on
/// 2026-12-01. `Fresh`: written on 2026-12-01 before that day's changes, never read
/// question by question (`EVAL_VERBOSE` leaves them out).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Split {
    Dev,
    HeldOut,
    Fresh,
}

pub struct History {
    pub events: Vec<NewEvent>,
    /// The raw event objects, as imported (for the keyword baseline).
    pub raw: Vec<Value>,
    pub questions: Vec<Question>,
}

fn data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/search-eval")
}

/// Loads the history (events in seq order from 1) and labels each question's relevant seqs.
pub fn load() -> History {
    let text = std::fs::read_to_string(data().join("history.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let raw: Vec<Value> = lines.iter().map(|l| l["event"].clone()).collect();
    let input: String = raw.iter().map(|e| e.to_string() + "\n").collect();
    let events = ovs_port_agent::import::parse_input(input.as_bytes()).unwrap().events;
    let queries: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(data().join("queries.json")).unwrap()).unwrap();
    let questions = queries
        .iter()
        .map(|q| {
            let topics: Vec<&str> = q["topics"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            let names: Vec<&str> = q["names"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let (since, until) = (q["since"].as_str(), q["until"].as_str());
            let relevant = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| {
                    let t = &l["truth"];
                    let ts = t["ts"].as_str().unwrap();
                    topics.contains(&t["topic"].as_str().unwrap())
                        && (names.is_empty() || t["names"].as_array().unwrap().iter().any(|n| names.contains(&n.as_str().unwrap())))
                        && since.is_none_or(|s| ts >= s)
                        && until.is_none_or(|u| ts <= u)
                })
                .map(|(i, _)| i as u64 + 1)
                .collect();
            let class = if since.is_some() {
                "time"
            } else if !names.is_empty() {
                "names"
            } else {
                "paraphrase"
            };
            let split = match q["split"].as_str() {
                Some("dev") => Split::Dev,
                Some("heldout") => Split::HeldOut,
                Some("fresh") => Split::Fresh,
                other => panic!("unknown split {other:?}"),
            };
            Question { text: q["query"].as_str().unwrap().to_owned(), split, class, relevant }
        })
        .collect();
    History { events, raw, questions }
}

/// Precision@5 and reciprocal rank of a ranked list of seqs.
pub fn score(ranked: &[u64], relevant: &HashSet<u64>) -> (f64, f64) {
    let found = ranked.iter().take(5).filter(|s| relevant.contains(s)).count();
    let p5 = found as f64 / relevant.len().clamp(1, 5) as f64;
    let rr = ranked.iter().take(10).position(|s| relevant.contains(s)).map_or(0.0, |p| 1.0 / (p + 1) as f64);
    (p5, rr)
}

/// Which retrieval to run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Method {
    Hybrid,
    SemanticOnly,
    LexicalOnly,
}

/// The ranked seqs of one method for a question, from the engine holding the history.
pub async fn ranked(engine: &Engine, question: &str, method: Method) -> Vec<u64> {
    let mut p = match plan(question, NOW_NS, 0) {
        Ok(p) => p,
        Err(_) => return Vec::new(),
    };
    if method == Method::SemanticOnly {
        p.lexical = None;
    }
    let vector = match method {
        Method::LexicalOnly => None,
        _ if p.semantic.is_empty() => None,
        _ => Some(engine.pool().embed_query(&p.semantic).await.unwrap()),
    };
    let answer = engine.search_state().hybrid(&p, vector.as_deref(), 10, &Filters::default()).unwrap();
    answer.hits.iter().map(|h| h.seq).collect()
}

/// The baseline: SQLite FTS5 (BM25, default tokenizer) over each event's JSON as imported,
/// the question's words OR-ed — a plain keyword search.
pub struct Bm25 {
    db: rusqlite::Connection,
}

impl Bm25 {
    pub fn new(raw: &[Value]) -> Self {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE VIRTUAL TABLE docs USING fts5(body)").unwrap();
        for (i, event) in raw.iter().enumerate() {
            db.execute("INSERT INTO docs(rowid, body) VALUES (?1, ?2)", rusqlite::params![i as i64 + 1, event.to_string()]).unwrap();
        }
        Self { db }
    }

    pub fn ranked(&self, question: &str) -> Vec<u64> {
        let words: Vec<String> =
            question.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| format!("\"{}\"", w.to_lowercase())).collect();
        if words.is_empty() {
            return Vec::new();
        }
        let mut stmt = self.db.prepare("SELECT rowid FROM docs WHERE docs MATCH ?1 ORDER BY rank LIMIT 10").unwrap();
        stmt.query_map([words.join(" OR ")], |r| Ok(r.get::<_, i64>(0)? as u64)).unwrap().map(Result::unwrap).collect()
    }
}

/// Mean precision@5 and MRR of each method over a set of questions.
pub struct Scores {
    pub p5: f64,
    pub mrr: f64,
    pub n: usize,
}

pub fn mean(results: &[(f64, f64)]) -> Scores {
    let n = results.len().max(1) as f64;
    Scores { p5: results.iter().map(|r| r.0).sum::<f64>() / n, mrr: results.iter().map(|r| r.1).sum::<f64>() / n, n: results.len() }
}

/// The four methods' (P@5, RR) for one question.
pub struct Row {
    pub question: String,
    pub split: Split,
    pub class: &'static str,
    /// Hybrid, semantic only, lexical only, the BM25 baseline.
    pub scores: [(f64, f64); 4],
    /// The hybrid's first hits.
    pub hybrid: Vec<u64>,
}

pub const METHODS: [&str; 4] = ["hybrid", "semantic", "lexical", "bm25"];

/// Records the history in a fresh engine (real model) and asks every question four ways.
pub fn evaluate(history: &History, config: &ovs_port_agent::config::Config) -> Vec<Row> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(&ovs_port_agent::layout::Layout::state(tmp.path()), config).unwrap();
    let records = rt.block_on(engine.record(history.events.clone())).unwrap();
    rt.block_on(engine.wait_vectorized(records.last().unwrap().seq)).unwrap();
    let bm25 = Bm25::new(&history.raw);
    let rows = history
        .questions
        .iter()
        .map(|q| {
            let hybrid = rt.block_on(ranked(&engine, &q.text, Method::Hybrid));
            let semantic = rt.block_on(ranked(&engine, &q.text, Method::SemanticOnly));
            let lexical = rt.block_on(ranked(&engine, &q.text, Method::LexicalOnly));
            let keywords = bm25.ranked(&q.text);
            Row {
                question: q.text.clone(),
                split: q.split,
                class: q.class,
                scores: [&hybrid, &semantic, &lexical, &keywords].map(|r| score(r, &q.relevant)),
                hybrid,
            }
        })
        .collect();
    engine.shutdown();
    rows
}

/// Mean scores of each method over the rows `pick` selects.
pub fn summarize(rows: &[Row], pick: impl Fn(&Row) -> bool) -> [Scores; 4] {
    let selected: Vec<&Row> = rows.iter().filter(|r| pick(r)).collect();
    [0, 1, 2, 3].map(|m| mean(&selected.iter().map(|r| r.scores[m]).collect::<Vec<_>>()))
}

/// The groups the figures are reported by: all, the dev and held-out splits, each class.
pub fn groups() -> Vec<(&'static str, Box<dyn Fn(&Row) -> bool>)> {
    vec![
        ("all", Box::new(|_: &Row| true)),
        ("dev", Box::new(|r: &Row| r.split == Split::Dev)),
        ("held out", Box::new(|r: &Row| r.split == Split::HeldOut)),
        ("fresh", Box::new(|r: &Row| r.split == Split::Fresh)),
        ("paraphrase", Box::new(|r: &Row| r.class == "paraphrase")),
        ("names", Box::new(|r: &Row| r.class == "names")),
        ("time", Box::new(|r: &Row| r.class == "time")),
    ]
}
