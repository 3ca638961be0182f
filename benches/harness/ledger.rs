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
        if i.is_multiple_of(2) { "link.down" } else { "link.up" },
        Priority::Medium,
        json!({"before": {"carrier": i.is_multiple_of(2)}, "after": {"carrier": !i.is_multiple_of(2)}, "changed": ["carrier"], "n": i}),
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
    anchoring(&mut report, dir);
    report.finish();
}

/// What anchoring adds to a snapshot: the primary signs and durably writes the head's
/// checkpoint note; a replica checks that signature and cosigns.
fn anchoring(report: &mut Report, dir: &Path) {
    use ovs_port_agent::anchor::{COSIGNATURE_ED25519, Checkpoint, NOTE_ED25519, Note, Signer, Verifier, checkpoint};
    let log = Signer::new("bench/ovs-port-agent", [5; 32]).unwrap();
    let witness = Signer::new("replica/ovs-port-agent-witness", [6; 32]).unwrap();
    let data = dir.join("anchor-data");
    let mut write = Vec::new();
    for seq in 1..=200u64 {
        let c = Checkpoint { origin: log.name.clone(), seq, head: [seq as u8; 32], time: seq };
        let t = Instant::now();
        checkpoint::write_signed(&data, &log, &c).unwrap();
        write.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let note = Note::parse(&std::fs::read(checkpoint::note_path(&data, 200)).unwrap()).unwrap();
    let (log_key, mut check, mut cosign) = (Verifier::parse(&log.vkey(NOTE_ED25519)).unwrap(), Vec::new(), Vec::new());
    for i in 0..1000u64 {
        let t = Instant::now();
        assert_eq!(log_key.check(&note).unwrap(), Some(0));
        check.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        std::hint::black_box(witness.cosign(&note.text, 1_700_000_000 + i));
        cosign.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = Verifier::parse(&witness.vkey(COSIGNATURE_ED25519)).unwrap();
    for (what, samples) in [
        ("primary: sign + write the checkpoint note durably, per snapshot", &mut write),
        ("replica: check the primary's signature, per snapshot", &mut check),
        ("replica: cosign, per snapshot", &mut cosign),
    ] {
        let (p50, p99) = ovs_port_agent::metrics::median_p99(samples);
        report.add(&format!("{what} p50"), p50, "ms");
        report.add(&format!("{what} p99"), p99, "ms");
    }
    let _ = std::fs::remove_dir_all(&data);
}
