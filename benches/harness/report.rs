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

    /// Writes `bench-results/<section>.json` and prints the table once more; the section
    /// is kept for the run's combined report.
    pub fn finish(self) {
        let dir = results_dir();
        std::fs::create_dir_all(&dir).expect("creating the results directory");
        let path = dir.join(format!("{}.json", self.section));
        let mut doc = self.json;
        doc.insert("machine".into(), machine());
        std::fs::write(&path, serde_json::to_string_pretty(&Value::Object(doc.clone())).unwrap()).expect("writing results");
        print_table(&self.section, &self.rows);
        println!("\nwritten to {}", path.display());
        doc.remove("machine");
        RUN.lock().unwrap().push(Finished { section: self.section, rows: self.rows, json: doc });
    }
}

/// A section finished in this run.
struct Finished {
    section: String,
    rows: Vec<(String, String, String)>,
    json: serde_json::Map<String, Value>,
}

static RUN: std::sync::Mutex<Vec<Finished>> = std::sync::Mutex::new(Vec::new());

fn results_dir() -> PathBuf {
    PathBuf::from(std::env::var("BENCH_RESULTS").unwrap_or_else(|_| "bench-results".into()))
}

fn print_table(section: &str, rows: &[(String, String, String)]) {
    println!("\n| {section} | value | unit |\n|---|---:|---|");
    for (k, v, u) in rows {
        println!("| {k} | {v} | {u} |");
    }
}

/// The machine the figures were taken on.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

/// Writes `bench-results/report.json` with every section of this run, the machine, the date
/// and the commit, and prints all the run's tables as one.
pub fn write_run(mode: &str) {
    let run = RUN.lock().unwrap();
    let commit = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok().filter(|o| o.status.success());
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let sections: serde_json::Map<String, Value> = run.iter().map(|f| (f.section.clone(), Value::Object(f.json.clone()))).collect();
    let doc = json!({
        "date": date,
        "mode": mode,
        "commit": commit.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        "machine": machine(),
        "sections": sections,
    });
    let path = results_dir().join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).expect("writing the report");
    println!("\n\n# Benchmark report ({mode}), {date}, {}\n", doc["machine"]);
    println!("| section | figure | value | unit |\n|---|---|---:|---|");
    for f in run.iter() {
        for (k, v, u) in &f.rows {
            println!("| {} | {k} | {v} | {u} |", f.section);
        }
    }
    println!("\nwritten to {}", path.display());
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
    rss_mib_of("self")
}

/// The peak and current resident memory of process `pid` ("self" for this one), in MiB.
pub fn rss_mib_of(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
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
