//! Peers side by side (issue 15): the same vectors and the same queries through our graph,
//! the usearch crate and ChromaDB, in one run, so every ratio compares figures taken on the
//! same machine at the same time.
//!
//! - **ours**: what the daemon does, the 8-bit graph (M 16, ef_construction 100, ef 128) with
//!   the f32 vectors in SQLite re-scoring the candidates; inserting is both.
//! - **usearch** (`--features peers`): the crate with i8 quantization, cosine, the same M and
//!   expansion settings, inserted from two threads; searched in memory and as a memory-mapped
//!   view of its saved file.
//! - **ChromaDB** (embedded, `PersistentClient`, from its PyPI package in the bench's own
//!   venv, `scripts/bench.sh` installs it): the same HNSW settings, cosine space.
//!
//! Vectors are the `search` section's (mixtures of real embeddings); recall@10 is against
//! brute force. The filtered search keeps every second key (a predicate on ours and usearch,
//! a metadata `where` on ChromaDB), recall against the filtered brute force.

use crate::report::{Report, rss_mib};
use crate::search::{base_vectors, brute_force, recall_queries, synth};
use ovs_port_agent::config::VectorConfig;
use ovs_port_agent::embed::{DIMENSION, ModelFiles, SentenceModel};
use ovs_port_agent::index::Index;
use ovs_port_agent::metrics::median_p99;
use ovs_port_agent::search::{ReadMode, Readers, SearchState};
use ovs_port_agent::vector::{Catalog, Filters, VectorIndex};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

const K: usize = 10;
const EF_SEARCH: usize = 128;
const CHUNK: usize = 20_000;

/// What one engine measured on the shared vectors and queries.
#[derive(Clone, Copy)]
struct Measured {
    insert_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    recall: f64,
    filtered_p50_ms: f64,
    filtered_recall: f64,
    rss_bytes_per_vector: f64,
    disk_bytes_per_vector: f64,
}

impl Measured {
    /// From an engine's figures: search (p50, p99, recall), filtered (p50, recall), and its
    /// memory and disk bytes for all `n` vectors.
    fn of(n: usize, insert_per_s: f64, search: (f64, f64, f64), filtered: (f64, f64), rss_bytes: f64, disk_bytes: f64) -> Self {
        Self {
            insert_per_s,
            p50_ms: search.0,
            p99_ms: search.1,
            recall: search.2,
            filtered_p50_ms: filtered.0,
            filtered_recall: filtered.1,
            rss_bytes_per_vector: rss_bytes / n as f64,
            disk_bytes_per_vector: disk_bytes / n as f64,
        }
    }
}

/// The shared material: vectors (regenerated on demand), queries and the exact answers.
struct Workload {
    base: Vec<Vec<f32>>,
    n: usize,
    queries: Vec<Vec<f32>>,
    truth: Vec<Vec<u64>>,
    truth_even: Vec<Vec<u64>>,
}

impl Workload {
    /// Vectors `start..end` keyed `i + 1`, as the daemon keys events by seq.
    fn chunk(&self, start: usize) -> Vec<(u64, Vec<f32>)> {
        (start..(start + CHUNK).min(self.n)).map(|i| (i as u64 + 1, synth(&self.base, i))).collect()
    }
}

fn even(key: u64) -> bool {
    key.is_multiple_of(2)
}

/// Latency p50/p99 (ms) and recall@10 of `search` over the queries against `truth`.
fn measure(queries: &[Vec<f32>], truth: &[Vec<u64>], mut search: impl FnMut(&[f32]) -> Vec<u64>) -> (f64, f64, f64) {
    let (mut lat, mut hits) = (Vec::with_capacity(queries.len()), 0usize);
    for (q, t) in queries.iter().zip(truth) {
        let t0 = Instant::now();
        let found = search(q);
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        hits += found.iter().filter(|s| t.contains(s)).count();
    }
    let (p50, p99) = median_p99(&mut lat);
    (p50, p99, hits as f64 / truth.iter().map(Vec::len).sum::<usize>().max(1) as f64)
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path).map(|entries| entries.flatten().map(|e| dir_bytes(&e.path())).sum()).unwrap_or(0)
}

pub fn vectors(dir: &Path, n: usize) {
    let mut report = Report::new(&format!("peers-vectors-{}", crate::size_name(n)));
    report.note("vectors", n);
    report.note("how", "the same synthesized vectors and 200 queries for every engine, in this run; recall@10 against brute force; the filtered search keeps every second key");
    let files = ModelFiles::locate(&crate::model_config()).expect("provision the model first");
    let mut model = SentenceModel::load(&files, 256).unwrap();
    let base = base_vectors(&mut model);
    let queries = recall_queries(&mut model, &base);
    drop(model);
    let truth = brute_force(&base, n, &queries, K, |_| true);
    let truth_even = brute_force(&base, n, &queries, K, even);
    let work = Workload { base, n, queries, truth, truth_even };

    // Ours keeps its f32 vectors in SQLite; the usearch side re-ranks from the same file.
    let stored = dir.join(format!("peers-ours-{n}.sqlite"));
    let ours = ours(dir, &stored, &work);
    add_rows(&mut report, "ours", &ours);
    let usearch = usearch_side(dir, &stored, &work, &mut report);
    let _ = std::fs::remove_file(&stored);
    if let Some(u) = &usearch {
        add_rows(&mut report, "usearch", u);
    }
    let chroma = chroma(dir, &work, &mut report);
    if let Some(c) = &chroma {
        add_rows(&mut report, "ChromaDB", c);
    }
    for (name, peer) in [("usearch", usearch), ("ChromaDB", chroma)] {
        let Some(p) = peer else { continue };
        report.add(&format!("ratio {name} / ours: search p50 (above 1: ours faster)"), p.p50_ms / ours.p50_ms, "x");
        report.add(&format!("ratio {name} / ours: filtered search p50"), p.filtered_p50_ms / ours.filtered_p50_ms, "x");
        report.add(&format!("ratio ours / {name}: insert rate (above 1: ours faster)"), ours.insert_per_s / p.insert_per_s, "x");
        report.add(
            &format!("ratio {name} / ours: RSS per vector (above 1: ours smaller)"),
            p.rss_bytes_per_vector / ours.rss_bytes_per_vector,
            "x",
        );
        report.add(&format!("ratio {name} / ours: disk per vector"), p.disk_bytes_per_vector / ours.disk_bytes_per_vector, "x");
        report.add(&format!("recall@10 ours − {name}"), ours.recall - p.recall, "");
    }
    report.finish();
}

fn add_rows(report: &mut Report, engine: &str, m: &Measured) {
    report.add(&format!("{engine}: insert rate"), m.insert_per_s, "vectors/s");
    report.add(&format!("{engine}: search p50, k 10, excl. query embedding"), m.p50_ms, "ms");
    report.add(&format!("{engine}: search p99"), m.p99_ms, "ms");
    report.add(&format!("{engine}: recall@10"), m.recall, "");
    report.add(&format!("{engine}: filtered search p50 (half the keys)"), m.filtered_p50_ms, "ms");
    report.add(&format!("{engine}: filtered recall@10"), m.filtered_recall, "");
    report.add(&format!("{engine}: RSS per vector"), m.rss_bytes_per_vector, "bytes");
    report.add(&format!("{engine}: disk per vector"), m.disk_bytes_per_vector, "bytes");
}

/// Our graph and SQLite's f32 vectors, as the daemon keeps them.
fn ours(dir: &Path, index_path: &Path, work: &Workload) -> Measured {
    let (_, rss_before) = rss_mib();
    let graph = VectorIndex::new(&VectorConfig::default(), work.n);
    let _ = std::fs::remove_file(index_path);
    let mut index = Index::open(index_path).unwrap();
    let started = Instant::now();
    for start in (0..work.n).step_by(CHUNK) {
        let items = work.chunk(start);
        graph.insert_many(&items);
        let stored: Vec<(u64, Arc<[f32]>)> = items.into_iter().map(|(k, v)| (k, v.into())).collect();
        index.put_vectors(&stored, (start + stored.len()) as u64).unwrap();
    }
    let insert_per_s = work.n as f64 / started.elapsed().as_secs_f64();
    drop(index);
    let (_, rss_after) = rss_mib();
    let ckdir = dir.join(format!("peers-ours-{}-graph", work.n));
    let _ = std::fs::remove_dir_all(&ckdir);
    graph.checkpoint(&ckdir, work.n as u64, Vec::new(), "bench").unwrap();
    let disk = dir_bytes(&ckdir) + dir_bytes(index_path);
    let state = SearchState::new(graph, Arc::new(RwLock::new(Catalog::default())), Readers::new(index_path, ReadMode::Live), EF_SEARCH);
    let (p50, p99, recall) =
        measure(&work.queries, &work.truth, |q| state.nearest(q, K, &Filters::default()).unwrap().into_iter().map(|(s, _)| s).collect());
    let graph = state.graph.read().unwrap().clone();
    let accept = |seq: u64| even(seq);
    let (filtered_p50, _, filtered_recall) =
        measure(&work.queries, &work.truth_even, |q| graph.search(q, K, EF_SEARCH, Some(&accept)).into_iter().map(|(s, _)| s).collect());
    drop(graph);
    drop(state);
    let _ = std::fs::remove_dir_all(&ckdir);
    Measured::of(
        work.n,
        insert_per_s,
        (p50, p99, recall),
        (filtered_p50, filtered_recall),
        (rss_after - rss_before) * 1048576.0,
        disk as f64,
    )
}

#[cfg(feature = "peers")]
fn usearch_side(dir: &Path, stored: &Path, work: &Workload, report: &mut Report) -> Option<Measured> {
    use usearch::{Index as USearch, IndexOptions, MetricKind, ScalarKind};
    let options = IndexOptions {
        dimensions: DIMENSION,
        metric: MetricKind::Cos,
        quantization: ScalarKind::I8,
        connectivity: 16,
        expansion_add: 100,
        expansion_search: EF_SEARCH,
        multi: false,
    };
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let index = USearch::new(&options).expect("a usearch index");
    index.reserve_capacity_and_threads(work.n, threads).unwrap();
    let started = Instant::now();
    for start in (0..work.n).step_by(CHUNK) {
        let items = work.chunk(start);
        let per = items.len().div_ceil(threads);
        std::thread::scope(|s| {
            for part in items.chunks(per) {
                let index = &index;
                s.spawn(move || part.iter().for_each(|(k, v)| index.add(*k, v).unwrap()));
            }
        });
    }
    let insert_per_s = work.n as f64 / started.elapsed().as_secs_f64();
    let memory = index.memory_usage();
    let (p50, p99, recall) = measure(&work.queries, &work.truth, |q| index.search(q, K).unwrap().keys);
    let (filtered_p50, _, filtered_recall) = measure(&work.queries, &work.truth_even, |q| index.filtered_search(q, K, even).unwrap().keys);
    // As the daemon would use it: three times the candidates, re-ranked with the f32 vectors.
    let exact = Index::open(stored).unwrap();
    let (rerank_p50, rerank_p99, rerank_recall) = measure(&work.queries, &work.truth, |q| {
        let candidates = index.search(q, K * 3).unwrap().keys;
        let mut scored: Vec<(u64, f32)> =
            exact.vectors_for(&candidates).unwrap().into_iter().map(|(s, v)| (s, ovs_port_agent::vector::dot(q, &v))).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.into_iter().take(K).map(|(s, _)| s).collect()
    });
    drop(exact);
    report.add("usearch + exact re-rank of 30 candidates (as the daemon does), search p50", rerank_p50, "ms");
    report.add("usearch + exact re-rank, search p99", rerank_p99, "ms");
    report.add("usearch + exact re-rank, recall@10", rerank_recall, "");
    let path = dir.join(format!("peers-usearch-{}.usearch", work.n));
    index.save(path.to_str().unwrap()).unwrap();
    drop(index);
    let disk = dir_bytes(&path);
    let view = USearch::new(&options).unwrap();
    view.view(path.to_str().unwrap()).unwrap();
    let (view_p50, _, view_recall) = measure(&work.queries, &work.truth, |q| view.search(q, K).unwrap().keys);
    report.add("usearch: memory-mapped view of its file, search p50", view_p50, "ms");
    report.add("usearch: memory-mapped view, recall@10", view_recall, "");
    drop(view);
    let _ = std::fs::remove_file(&path);
    report.note(
        "usearch",
        format!("crate {} (i8, cosine, M 16, expansion 100/{EF_SEARCH}); RSS per vector is its own memory_usage()", usearch::version()),
    );
    Some(Measured::of(work.n, insert_per_s, (p50, p99, recall), (filtered_p50, filtered_recall), memory as f64, disk as f64))
}

#[cfg(not(feature = "peers"))]
fn usearch_side(_: &Path, _: &Path, _: &Workload, report: &mut Report) -> Option<Measured> {
    report.note("usearch", "not measured: built without --features peers (scripts/bench.sh builds with it)");
    None
}

/// The Python that has ChromaDB (`scripts/bench.sh` makes the venv).
fn peers_python() -> PathBuf {
    std::env::var_os("PEERS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".dev/peers-venv/bin/python"))
}

/// ChromaDB in its own process, given the same vectors, queries and answers as files.
fn chroma(dir: &Path, work: &Workload, report: &mut Report) -> Option<Measured> {
    let python = peers_python();
    if !python.exists() {
        report.note("ChromaDB", format!("not measured: no {} (scripts/bench.sh installs ChromaDB there)", python.display()));
        return None;
    }
    let data = dir.join(format!("peers-chroma-{}", work.n));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let write_f32 = |path: &Path, rows: &mut dyn Iterator<Item = Vec<f32>>| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for row in rows {
            for x in row {
                out.write_all(&x.to_le_bytes()).unwrap();
            }
        }
        out.flush().unwrap();
    };
    write_f32(&data.join("vectors.f32"), &mut (0..work.n).map(|i| synth(&work.base, i)));
    write_f32(&data.join("queries.f32"), &mut work.queries.iter().cloned());
    std::fs::write(data.join("truth.json"), serde_json::json!({"all": work.truth, "even": work.truth_even}).to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/chroma.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg("--data")
        .arg(&data)
        .args(["--dim", &DIMENSION.to_string(), "--k", &K.to_string(), "--ef-search", &EF_SEARCH.to_string()])
        .output()
        .expect("running the ChromaDB side");
    let _ = std::fs::remove_dir_all(&data);
    if !out.status.success() {
        report.note("ChromaDB", format!("failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
        return None;
    }
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the ChromaDB side prints JSON");
    report.note(
        "ChromaDB",
        format!(
            "chromadb {} (embedded PersistentClient, cosine, M 16, ef 100/{EF_SEARCH}); RSS per vector from its process's VmRSS",
            m["version"].as_str().unwrap_or("?")
        ),
    );
    report.add("ChromaDB: first query after the inserts", m["first_query_ms"].as_f64().unwrap_or(0.0), "ms");
    let f = |key: &str| m[key].as_f64().unwrap_or(f64::NAN);
    Some(Measured::of(
        work.n,
        f("insert_per_s"),
        (f("p50_ms"), f("p99_ms"), f("recall")),
        (f("filtered_p50_ms"), f("filtered_recall")),
        f("rss_bytes"),
        f("disk_bytes"),
    ))
}
