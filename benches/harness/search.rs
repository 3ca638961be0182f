//! Vector search at scale: vectors synthesized from real embeddings (random mixtures of two
//! real event embeddings plus Gaussian noise, re-normalised; embedding a million texts takes
//! hours here), inserted into the HNSW graph; search latency p50/p99 excluding and including
//! the query embedding, recall@10 against brute force, insert rate, checkpoint and load
//! times, RSS.

use crate::report::{Report, rss_mib};
use crate::texts::{QUERIES, event_text};
use ovs_port_agent::config::VectorConfig;
use ovs_port_agent::embed::{DIMENSION, ModelFiles, SentenceModel, normalize};
use ovs_port_agent::index::Index;
use ovs_port_agent::metrics::median_p99;
use ovs_port_agent::search::{Readers, SearchState};
use ovs_port_agent::vector::{Catalog, Filters, VectorIndex, dot};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

const BASE_TEXTS: usize = 600;
const RECALL_QUERIES: usize = 200;

/// Vector `i` of the synthetic set, regenerated on demand (so 1M vectors need not be kept
/// twice in memory): a mixture of two real embeddings plus noise.
pub fn synth(base: &[Vec<f32>], i: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(0xC0FFEE ^ i as u64);
    let a = &base[rng.gen_range(0..base.len())];
    let b = &base[rng.gen_range(0..base.len())];
    let w: f32 = rng.gen_range(0.55..0.95);
    let mut v: Vec<f32> = a.iter().zip(b).map(|(x, y)| w * x + (1.0 - w) * y + rng.gen_range(-0.03f32..0.03)).collect();
    normalize(&mut v);
    v
}

pub fn run(dir: &Path, sizes: &[usize]) {
    let config = crate::model_config();
    let files = ModelFiles::locate(&config).expect("provision the model first");
    let mut model = SentenceModel::load(&files, 256).unwrap();
    let base = base_vectors(&mut model);
    for &n in sizes {
        let mut report = Report::new(&format!("search-{}", crate::size_name(n)));
        report.note("vectors", n);
        report
            .note("how", "synthesized: mixtures of two real all-MiniLM event embeddings (600 texts) + uniform noise ±0.03, re-normalised");
        let (rss_before, _) = rss_mib();
        let vconfig = VectorConfig::default();
        let graph = VectorIndex::new(&vconfig, n);
        let started = Instant::now();
        let chunk = 20_000;
        for start in (0..n).step_by(chunk) {
            let items: Vec<(u64, Vec<f32>)> = (start..(start + chunk).min(n)).map(|i| (i as u64 + 1, synth(&base, i))).collect();
            graph.insert_many(&items);
        }
        let secs = started.elapsed().as_secs_f64();
        report.add("insert rate (parallel, 2 cores, ef_construction 100, M 16)", n as f64 / secs, "vectors/s");
        let (_, rss_after) = rss_mib();
        report.add("RSS of the graph (RSS after insert − before)", rss_after - rss_before, "MiB");
        report.add("process RSS after insert (incl. the model)", rss_after, "MiB");
        // The exact f32 vectors live in SQLite, as in the daemon; search re-scores from there.
        let index_path = dir.join(format!("search-{n}.sqlite"));
        let _ = std::fs::remove_file(&index_path);
        let mut index = Index::open(&index_path).unwrap();
        for start in (0..n).step_by(chunk) {
            let items: Vec<(u64, Arc<[f32]>)> = (start..(start + chunk).min(n)).map(|i| (i as u64 + 1, synth(&base, i).into())).collect();
            index.put_vectors(&items, (start + items.len()) as u64).unwrap();
        }
        drop(index);
        let mut state = SearchState::new(
            graph,
            Arc::new(RwLock::new(Catalog::default())),
            Readers::new(&index_path, ovs_port_agent::search::ReadMode::Live),
            128,
        );
        let graph = state.graph.read().unwrap().clone();

        let queries = recall_queries(&mut model, &base);
        // Brute force truth.
        let started = Instant::now();
        let truth: Vec<Vec<u64>> = brute_force(&base, n, &queries, 10, |_| true);
        report.add("brute-force top-10 for 200 queries (the recall reference)", started.elapsed().as_secs_f64(), "s");
        for ef in [64usize, 128] {
            let mut lat = Vec::new();
            let mut hits = 0usize;
            for (q, t) in queries.iter().zip(&truth) {
                let t0 = Instant::now();
                let found = graph.search(q, 10, ef, None);
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                hits += found.iter().filter(|(s, _)| t.contains(s)).count();
            }
            let (p50, _) = median_p99(&mut lat);
            report.add(&format!("graph only (8-bit scores): p50, k 10, ef {ef}"), p50, "ms");
            report.add(&format!("graph only (8-bit scores): recall@10, ef {ef}"), hits as f64 / (10 * queries.len()) as f64, "");
            // What the daemon does: 30 graph candidates re-scored with f32 vectors from SQLite.
            state.ef_search = ef;
            let (mut lat, mut hits) = (Vec::new(), 0usize);
            for (q, t) in queries.iter().zip(&truth) {
                let t0 = Instant::now();
                let found = state.nearest(q, 10, &Filters::default()).unwrap();
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                hits += found.iter().filter(|(s, _)| t.contains(s)).count();
            }
            let (p50, p99) = median_p99(&mut lat);
            report.add(&format!("search p50, k 10, ef {ef}, excluding query embedding (graph + exact re-rank)"), p50, "ms");
            report.add(&format!("search p99, k 10, ef {ef}, excluding query embedding (graph + exact re-rank)"), p99, "ms");
            report.add(&format!("recall@10 vs brute force, ef {ef}"), hits as f64 / (10 * queries.len()) as f64, "");
        }
        let mut lat = Vec::new();
        for (i, q) in QUERIES.iter().cycle().take(60).enumerate() {
            let text = format!("{q} {i}");
            let t0 = Instant::now();
            let v = model.embed(&[text.as_str()]).unwrap().pop().unwrap();
            state.nearest(&v, 10, &Filters::default()).unwrap();
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p99) = median_p99(&mut lat);
        report.add("search p50 including query embedding, ef 128", p50, "ms");
        report.add("search p99 including query embedding, ef 128", p99, "ms");

        let ckdir = dir.join(format!("hnsw-{n}"));
        let _ = std::fs::remove_dir_all(&ckdir);
        let t0 = Instant::now();
        graph.checkpoint(&ckdir, n as u64, Vec::new(), "bench").unwrap();
        report.add("checkpoint write (whole graph, fsynced)", t0.elapsed().as_secs_f64(), "s");
        let bytes: u64 = std::fs::read_dir(&ckdir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        report.add("checkpoint size", bytes as f64 / (1 << 20) as f64, "MiB");
        drop(graph);
        drop(state);
        let _ = std::fs::remove_file(&index_path);
        let t0 = Instant::now();
        let (loaded, _) = VectorIndex::load(&ckdir, "bench").unwrap().unwrap();
        report.add("checkpoint load", t0.elapsed().as_secs_f64(), "s");
        assert_eq!(loaded.len(), n as u64);
        let (peak, _) = rss_mib();
        report.add("peak RSS of the benchmark process", peak, "MiB");
        drop(loaded);
        let _ = std::fs::remove_dir_all(&ckdir);
        report.finish();
    }
}

/// The recall queries: real query embeddings, then perturbed synthetic vectors.
pub fn recall_queries(model: &mut SentenceModel, base: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut queries: Vec<Vec<f32>> = QUERIES.iter().map(|q| model.embed(&[*q]).unwrap().pop().unwrap()).collect();
    while queries.len() < RECALL_QUERIES {
        let mut v = synth(base, rng.gen_range(0..usize::MAX / 2));
        v.iter_mut().for_each(|x| *x += rng.gen_range(-0.02f32..0.02));
        normalize(&mut v);
        queries.push(v);
    }
    queries
}

/// Exact top-k by dot product among the vectors whose key (`i + 1`) `keep` accepts,
/// regenerating the vectors in parallel chunks.
pub fn brute_force(base: &[Vec<f32>], n: usize, queries: &[Vec<f32>], k: usize, keep: impl Fn(u64) -> bool + Sync) -> Vec<Vec<u64>> {
    let keep = &keep;
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1);
    let per = n.div_ceil(threads);
    let partials: Vec<Vec<Vec<(f32, u64)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut best: Vec<Vec<(f32, u64)>> = vec![Vec::with_capacity(k + 1); queries.len()];
                    for i in t * per..((t + 1) * per).min(n) {
                        if !keep(i as u64 + 1) {
                            continue;
                        }
                        let v = synth(base, i);
                        debug_assert_eq!(v.len(), DIMENSION);
                        for (qi, q) in queries.iter().enumerate() {
                            let score = dot(q, &v);
                            let b = &mut best[qi];
                            if b.len() < k || score > b[b.len() - 1].0 {
                                let pos = b.partition_point(|(s, _)| *s >= score);
                                b.insert(pos, (score, i as u64 + 1));
                                b.truncate(k);
                            }
                        }
                    }
                    best
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (0..queries.len())
        .map(|qi| {
            let mut all: Vec<(f32, u64)> = partials.iter().flat_map(|p| p[qi].clone()).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0));
            all.into_iter().take(k).map(|(_, s)| s).collect()
        })
        .collect()
}

/// Real embeddings of varied event sentences, the material synthetic vectors are mixed from.
pub fn base_vectors(model: &mut SentenceModel) -> Vec<Vec<f32>> {
    let texts: Vec<String> = (0..BASE_TEXTS).map(|i| event_text(i, true)).collect();
    let mut base = Vec::with_capacity(BASE_TEXTS);
    for chunk in texts.chunks(16) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        base.extend(model.embed(&refs).unwrap());
    }
    base
}
