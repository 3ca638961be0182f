//! Printing a table and writing JSON for each benchmark section.

use serde_json::{Value, json};
use std::path::PathBuf;

pub struct Report {
    section: String,
    rows: Vec<(String, String, String)>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    pub fn new(section: &str) -> Self {
        Self { section: section.to_owned(), rows: Vec::new(), json: serde_json::Map::new() }
    }

    /// Adds one measured figure.
    pub fn add(&mut self, key: &str, value: f64, unit: &str) {
        println!("  {key:<58} {:>14} {unit}", fmt(value));
        self.rows.push((key.to_owned(), fmt(value), unit.to_owned()));
        self.json.insert(key.to_owned(), json!({"value": value, "unit": unit}));
    }

    pub fn note(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        println!("  {key:<58} {value}");
        self.json.insert(key.to_owned(), value);
    }

    /// Writes `bench-results/<section>.json` and prints the table once more.
    pub fn finish(self) {
        let dir = PathBuf::from(std::env::var("BENCH_RESULTS").unwrap_or_else(|_| "bench-results".into()));
        std::fs::create_dir_all(&dir).expect("creating the results directory");
        let path = dir.join(format!("{}.json", self.section));
        let mut doc = self.json;
        doc.insert("machine".into(), json!({"cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()}));
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(doc)).unwrap()).expect("writing results");
        println!("\n| {} | value | unit |\n|---|---:|---|", self.section);
        for (k, v, u) in &self.rows {
            println!("| {k} | {v} | {u} |");
        }
        println!("\nwritten to {}", path.display());
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Peak and current resident memory of this process, in MiB.
pub fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}
