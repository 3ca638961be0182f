//! Ledger: appends per second with batches of 1, 64 and 1024 (one fsync per batch) and
//! verification records per second, on 100k records.

use crate::report::Report;
use ovs_port_agent::event::{NewEvent, Priority};
use ovs_port_agent::ledger::{Ledger, LedgerOptions, scan};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

pub fn event(i: usize) -> NewEvent {
    NewEvent::new(
        "bench",
        &format!("interface:veth{}", i % 500),
        if i % 2 == 0 { "link.down" } else { "link.up" },
        Priority::Medium,
        json!({"before": {"carrier": i % 2 == 0}, "after": {"carrier": i % 2 != 0}, "changed": ["carrier"], "n": i}),
    )
    .with_summary(format!("veth{} carrier changed", i % 500))
}

pub fn run(dir: &Path) {
    let mut report = Report::new("ledger");
    report.note("file system", crate::fs_type(dir));
    for (batch, total) in [(1usize, 5_000usize), (64, 100_000), (1024, 100_000)] {
        let ledger_dir = dir.join(format!("ledger-b{batch}"));
        let _ = std::fs::remove_dir_all(&ledger_dir);
        let (mut ledger, _) = Ledger::open(&ledger_dir, LedgerOptions { host: "bench".into(), segment_max_bytes: 64 << 20 }).unwrap();
        let events: Vec<NewEvent> = (0..total).map(event).collect();
        let started = Instant::now();
        for chunk in events.chunks(batch) {
            ledger.append_batch(chunk).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        report.add(&format!("appends/s, batch {batch} ({total} records, fsync per batch)"), total as f64 / secs, "records/s");
    }
    // Verify the 100k ledger: cold-ish (page cache warm from writing, as after a restart).
    let ledger_dir = dir.join("ledger-b1024");
    let mut samples = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut n = 0u64;
        let outcome = scan(&ledger_dir, |_| n += 1).unwrap();
        assert!(outcome.is_intact() && n == 100_000);
        samples.push(n as f64 / started.elapsed().as_secs_f64());
    }
    let (median, _) = ovs_port_agent::metrics::median_p99(&mut samples);
    report.add("verify records/s (100k records, median of 5)", median, "records/s");
    report.finish();
}
