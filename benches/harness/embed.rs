//! Embedding: texts/s for unique texts (batch 1, 16, 64; threads 1 and 2), a realistic
//! repetitive event stream through the pool (with its cache), a critical event's latency
//! behind a backlog, query latency, load, RSS.

use crate::report::{Report, rss_mib};
use crate::texts::{QUERIES, event_text};
use ovs_port_agent::embed::{EmbedPool, ModelFiles, SentenceModel};
use ovs_port_agent::event::Priority;
use ovs_port_agent::metrics::median_p99;
use std::sync::mpsc::channel;
use std::time::Instant;

pub fn run() {
    let mut report = Report::new("embed");
    let config = crate::model_config();
    let files = ModelFiles::locate(&config).expect("provision the model first (scripts/provision-model.sh)");
    let started = Instant::now();
    let mut model = SentenceModel::load(&files, 256).unwrap();
    report.add("model load", started.elapsed().as_secs_f64() * 1000.0, "ms");
    model.embed(&["warm up"]).unwrap();

    const PER_CONFIG: usize = 192;
    let mut models: Vec<SentenceModel> = vec![model];
    models.push(SentenceModel::load(&files, 256).unwrap());
    for threads in [1usize, 2] {
        for batch in [1usize, 16, 64] {
            let texts: Vec<String> = (0..PER_CONFIG).map(|i| event_text(threads * 100_000 + batch * 1000 + i, true)).collect();
            let started = Instant::now();
            std::thread::scope(|s| {
                for (model, chunk) in models.iter_mut().take(threads).zip(texts.chunks(PER_CONFIG / threads)) {
                    s.spawn(move || {
                        for b in chunk.chunks(batch) {
                            let refs: Vec<&str> = b.iter().map(String::as_str).collect();
                            model.embed(&refs).unwrap();
                        }
                    });
                }
            });
            let secs = started.elapsed().as_secs_f64();
            report.add(&format!("unique texts/s, batch {batch}, {threads} thread(s)"), PER_CONFIG as f64 / secs, "texts/s");
        }
    }
    let mut model = models.swap_remove(0);
    drop(models);

    let mut samples = Vec::new();
    for (i, q) in QUERIES.iter().cycle().take(120).enumerate() {
        let text = format!("{q} {}", i / QUERIES.len());
        let t = Instant::now();
        model.embed(&[text.as_str()]).unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p99) = median_p99(&mut samples);
    report.add("query embedding p50", p50, "ms");
    report.add("query embedding p99", p99, "ms");
    drop(model);

    // A realistic stream: 1,000 events whose texts repeat (40 distinct), through the pool.
    let (tx, rx) = channel();
    let tx = std::sync::Mutex::new(tx);
    let mut pool_config = crate::model_config();
    pool_config.workers = 2;
    let pool = EmbedPool::start(
        &files,
        &pool_config,
        Box::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    )
    .unwrap();
    let started = Instant::now();
    for i in 0..1000u64 {
        assert!(pool.submit_event(i + 1, Priority::Low, event_text(i as usize, false)));
    }
    for _ in 0..1000 {
        rx.recv().unwrap().vector.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    report.add("repetitive event stream through the pool (40 distinct texts)", 1000.0 / secs, "events/s");
    report.note("cache hits in that stream", pool.stats().cache_hits.load(std::sync::atomic::Ordering::Relaxed));

    // Critical events behind a backlog of low ones (unique texts): each waits only for the
    // embeddings already running, then its own.
    let backlog: Vec<u64> =
        (0..600u64).filter(|i| pool.submit_event(10_000 + i, Priority::Low, event_text(500_000 + *i as usize, true))).collect();
    let mut critical = Vec::new();
    for k in 0..50u64 {
        let seq = 1_000_000 + k;
        let started = Instant::now();
        assert!(pool.submit_event(seq, Priority::Critical, event_text(900_000 + k as usize, true)));
        while rx.recv().unwrap().seq != seq {}
        critical.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p99) = median_p99(&mut critical);
    report.note("low-priority events queued behind", backlog.len());
    report.add("critical event embedded, behind a backlog, p50", p50, "ms");
    report.add("critical event embedded, behind a backlog, p99", p99, "ms");
    let (peak, _) = rss_mib();
    report.add("peak RSS (2 workers + the thread tests' models)", peak, "MiB");
    report.finish();
}
