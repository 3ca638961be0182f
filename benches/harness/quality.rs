//! Search quality on the evaluation set (tests/data/search-eval, the same code as
//! tests/search_eval.rs): precision@5 and MRR of the hybrid search, each side alone, and a
//! plain BM25 keyword search over the events' JSON, by question group. The model is whatever
//! OVS_PORT_AGENT_MODEL_DIR holds (how the model comparison in docs/decisions.md was run).

#[path = "../../tests/common/search_eval.rs"]
#[allow(dead_code)]
mod search_eval;

use crate::report::Report;
use ovs_port_agent::embed::ModelFiles;
use search_eval::{METHODS, evaluate, groups, load, summarize};

pub fn run() {
    let mut report = Report::new("quality");
    let mut config = ovs_port_agent::config::Config::default();
    config.agent.require_btrfs = false;
    config.embedding = crate::model_config();
    let model = ModelFiles::locate(&config.embedding).expect("provision the model first").model_id();
    report.note("model", model);
    let history = load();
    report.note("events", history.events.len());
    let rows = evaluate(&history, &config);
    println!("  {:<12} {:>3}  {:>28}  {:>28}", "questions", "n", "P@5 hybrid/sem/lex/bm25", "MRR hybrid/sem/lex/bm25");
    for (label, pick) in groups() {
        let s = summarize(&rows, pick);
        let fmt = |f: &dyn Fn(usize) -> f64| (0..4).map(|m| format!("{:.3}", f(m))).collect::<Vec<_>>().join(" ");
        println!("  {label:<12} {:>3}  {:>28}  {:>28}", s[0].n, fmt(&|m| s[m].p5), fmt(&|m| s[m].mrr));
        for (m, method) in METHODS.iter().enumerate() {
            report.add(&format!("{label}: P@5 {method}"), s[m].p5, "");
            report.add(&format!("{label}: MRR {method}"), s[m].mrr, "");
        }
        report.add(&format!("{label}: hybrid ÷ bm25 P@5"), s[0].p5 / s[3].p5.max(1e-9), "×");
    }
    report.finish();
}
