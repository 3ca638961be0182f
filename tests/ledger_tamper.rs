//! Tampering with a ledger on disk is caught at the right `seq` and named.

mod common;

use common::{agent, sample_event};
use ovs_port_agent::ledger::record::{decode_line, encode_line};
use ovs_port_agent::ledger::{DamageKind, Ledger, LedgerOptions, Record, scan};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::{Path, PathBuf};

const RECORDS: usize = 1200;

/// A ledger of `RECORDS` varied records spread over several small segments.
fn build_ledger(dir: &Path) -> PathBuf {
    let ledger_dir = dir.join("data/ledger");
    let options = LedgerOptions { host: "test-host".into(), segment_max_bytes: 64 * 1024 };
    let (mut ledger, _) = Ledger::open(&ledger_dir, options).unwrap();
    let events: Vec<_> = (0..RECORDS).map(sample_event).collect();
    for chunk in events.chunks(100) {
        ledger.append_batch(chunk).unwrap();
    }
    ledger_dir
}

/// Every line of the ledger with the segment it is in, in order.
fn lines(ledger_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for seg in ovs_port_agent::ledger::segment::list_segments(ledger_dir).unwrap() {
        let bytes = std::fs::read(&seg.path).unwrap();
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            out.push((seg.path.clone(), line.to_vec()));
        }
    }
    out
}

fn write_lines(lines: &[(PathBuf, Vec<u8>)]) {
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for (path, line) in lines {
        match files.last_mut() {
            Some((p, bytes)) if p == path => bytes.extend_from_slice(line),
            _ => files.push((path.clone(), line.clone())),
        }
    }
    for (path, bytes) in files {
        std::fs::write(path, bytes).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The seq the scanner names as the first bad one (damage or torn tail).
fn first_bad_seq(ledger_dir: &Path) -> Option<u64> {
    let outcome = scan(ledger_dir, |_| {}).unwrap();
    outcome.damage.map(|d| d.seq).or(outcome.torn.map(|t| t.seq))
}

#[test]
fn every_flipped_byte_is_caught_at_its_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = build_ledger(tmp.path());
    assert!(scan(&pristine, |_| {}).unwrap().is_intact());
    let original = lines(&pristine);
    assert!(original.iter().map(|(p, _)| p).collect::<std::collections::HashSet<_>>().len() > 3, "several segments");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let work = tmp.path().join("work");
    for round in 0..200 {
        let record = rng.gen_range(0..RECORDS);
        let mut tampered = original.clone();
        let line = &mut tampered[record].1;
        let at = rng.gen_range(0..line.len());
        line[at] ^= rng.gen_range(1..=255u8);
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&pristine, &work);
        for entry in std::fs::read_dir(&work).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let relocated: Vec<_> = tampered.iter().map(|(p, l)| (work.join(p.file_name().unwrap()), l.clone())).collect();
        write_lines(&relocated);
        assert_eq!(
            first_bad_seq(&work),
            Some(record as u64 + 1),
            "round {round}: flipping byte {at} of seq {} was not caught there",
            record + 1
        );
    }
}

fn tamper(original: &[(PathBuf, Vec<u8>)], edit: impl FnOnce(&mut Vec<(PathBuf, Vec<u8>)>)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut edited = original.to_vec();
    edit(&mut edited);
    let relocated: Vec<_> = edited.iter().map(|(p, l)| (tmp.path().join(p.file_name().unwrap()), l.clone())).collect();
    // Keep empty segments too (a deleted last line may empty one).
    for (p, _) in original {
        std::fs::write(tmp.path().join(p.file_name().unwrap()), b"").unwrap();
    }
    write_lines(&relocated);
    tmp
}

fn damage_of(dir: &Path) -> (u64, DamageKind) {
    let d = scan(dir, |_| {}).unwrap().damage.expect("damage expected");
    (d.seq, d.kind)
}

#[test]
fn deleted_swapped_and_edited_lines_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let original = lines(&build_ledger(tmp.path()));

    let deleted = tamper(&original, |l| {
        l.remove(499);
    });
    assert_eq!(damage_of(deleted.path()), (500, DamageKind::SeqMismatch { found: 501 }));

    let swapped = tamper(&original, |l| {
        let a = l[700].1.clone();
        l[700].1 = l[701].1.clone();
        l[701].1 = a;
    });
    assert_eq!(damage_of(swapped.path()), (701, DamageKind::SeqMismatch { found: 702 }));

    // A value changed so that the JSON stays valid: "MTU raised to 9000" → "… 1500".
    let target = original.iter().position(|(_, l)| String::from_utf8_lossy(l).contains("MTU raised to 9000")).unwrap();
    let edited = tamper(&original, |l| {
        l[target].1 = String::from_utf8(l[target].1.clone()).unwrap().replace("MTU raised to 9000", "MTU raised to 1500").into_bytes();
    });
    let (seq, kind) = damage_of(edited.path());
    assert_eq!(seq, target as u64 + 1);
    assert!(matches!(kind, DamageKind::HashMismatch { .. }), "{kind:?}");
}

/// Re-encodes records from `from` on, as a forger with the code would, so every hash and
/// `prev` link is valid again: only the element chain can still tell.
fn reseal(records: &mut [Record], from: usize) {
    for i in from..records.len() {
        if i > 0 {
            records[i].prev = records[i - 1].hash;
        }
        let (_, hash) = encode_line(&records[i].body());
        records[i].hash = hash;
    }
}

#[test]
fn a_broken_element_chain_is_named_even_when_the_global_chain_is_resealed() {
    let tmp = tempfile::tempdir().unwrap();
    let original = lines(&build_ledger(tmp.path()));
    let mut records: Vec<Record> = original.iter().map(|(_, l)| decode_line(&l[..l.len() - 1]).unwrap()).collect();
    // Point seq 900's element_prev at another record of the same element (skipping one).
    let victim = 899;
    let element = records[victim].element_id.clone();
    let older: Vec<usize> = (0..victim).filter(|&i| records[i].element_id == element).collect();
    records[victim].element_prev = records[older[older.len() - 2]].hash;
    reseal(&mut records, victim);
    let tampered = tamper(&original, |l| {
        for (i, (_, line)) in l.iter_mut().enumerate() {
            *line = encode_line(&records[i].body()).0;
        }
    });
    let (seq, kind) = damage_of(tampered.path());
    assert_eq!(seq, 900);
    assert!(matches!(kind, DamageKind::ElementChainBroken { ref element_id, .. } if *element_id == element), "{kind:?}");
}

#[test]
fn damage_stops_appends_and_verify_exits_1_naming_the_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger_dir = build_ledger(tmp.path());
    let (code, out, _) = agent(&["verify", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("head seq {RECORDS}")), "{out}");

    let original = lines(&ledger_dir);
    let seg = &original[300].0;
    let mut bytes = std::fs::read(seg).unwrap();
    let text = String::from_utf8_lossy(&original[300].1).into_owned();
    let pos = bytes.windows(text.len()).position(|w| w == text.as_bytes()).unwrap();
    let flip = pos + text.find("\"action\":\"").unwrap() + 10;
    bytes[flip] = b'X';
    std::fs::write(seg, bytes).unwrap();

    let (code, out, _) = agent(&["verify", "--json", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["intact"], false);
    assert_eq!(report["damage"]["seq"], 301);
    assert_eq!(report["damage"]["kind"], "hash_mismatch");

    let options = LedgerOptions { host: "test-host".into(), segment_max_bytes: 64 * 1024 };
    let (mut ledger, report) = Ledger::open(&ledger_dir, options).unwrap();
    assert_eq!(report.damage.as_ref().map(|d| d.seq), Some(301));
    let err = ledger.append_batch(&[sample_event(1)]).unwrap_err().to_string();
    assert!(err.contains("seq 301"), "{err}");

    let (code, _, err) = agent(&["verify", "--data-dir", "/nonexistent/dir"]);
    assert_eq!(code, 2, "{err}");
}

/// Writes `records` from `from` on again with a body edit applied before sealing, and both
/// chains recomputed after it: what a forger with a text editor and our format doc can do.
fn reseal_with_edit(original: &[(PathBuf, Vec<u8>)], at: usize, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    use sha2::{Digest, Sha256};
    let mut records: Vec<Record> = original.iter().map(|(_, l)| decode_line(&l[..l.len() - 1]).unwrap()).collect();
    let mut lines: Vec<Vec<u8>> = original.iter().map(|(_, l)| l.clone()).collect();
    let mut heads: std::collections::HashMap<String, [u8; 32]> = std::collections::HashMap::new();
    for i in 0..records.len() {
        if i >= at {
            records[i].prev = if i == 0 { [0; 32] } else { records[i - 1].hash };
            records[i].element_prev = heads.get(&records[i].element_id).copied().unwrap_or([0; 32]);
            let canonical = String::from_utf8(records[i].body().canonical()).unwrap();
            let body = if i == at { edit(&canonical) } else { canonical };
            records[i].hash = Sha256::digest(body.as_bytes()).into();
            lines[i] = format!("{},\"hash\":\"{}\"}}\n", &body[..body.len() - 1], hex::encode(records[i].hash)).into_bytes();
        }
        heads.insert(records[i].element_id.clone(), records[i].hash);
    }
    tamper(original, |l| {
        for (i, (_, line)) in l.iter_mut().enumerate() {
            *line = lines[i].clone();
        }
    })
}

#[test]
fn resealed_bodies_out_of_canonical_form_and_empty_segments_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let original = lines(&build_ledger(tmp.path()));
    // A space, an escape nobody needs, a key twice: each re-hashed with both chains recomputed.
    let edits: [(&str, &dyn Fn(&str) -> String); 3] = [
        ("space", &|b| b.replacen("\"action\":", "\"action\": ", 1)),
        ("escape", &|b| b.replacen("\"summary\":\"", "\"summary\":\"\\u0020", 1)),
        ("duplicate", &|b| b.replacen("\"details\":{", "\"details\":{\"x\":1,\"x\":1,", 1)),
    ];
    for (name, edit) in edits {
        let forged = reseal_with_edit(&original, 640, edit);
        let (seq, kind) = damage_of(forged.path());
        assert_eq!(seq, 641, "{name}");
        let DamageKind::NotCanonical { reason } = kind else { panic!("{name}: {kind:?}") };
        assert!(name != "duplicate" || reason.contains("duplicate key \"x\""), "{reason}");
    }
    // Resealing without an edit changes nothing: the check is on form, not on who wrote it.
    assert!(scan(reseal_with_edit(&original, 640, str::to_owned).path(), |_| {}).unwrap().is_intact());

    // An empty segment in the middle is damage at the seq that should follow.
    let segments: Vec<&PathBuf> = original.iter().map(|(p, _)| p).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    assert!(segments.len() >= 3);
    let emptied = tamper(&original, |_| {});
    let middle = emptied.path().join("00000000000000099999.jsonl");
    std::fs::write(&middle, b"").unwrap();
    let outcome = scan(emptied.path(), |_| {}).unwrap();
    let damage = outcome.damage.expect("an empty segment among full ones");
    assert_eq!((damage.seq, damage.kind), (RECORDS as u64 + 1, DamageKind::EmptySegment));
    std::fs::remove_file(&middle).unwrap();
    let second = emptied.path().join(segments[1].file_name().unwrap());
    let first_of_second = ovs_port_agent::ledger::segment::list_segments(emptied.path()).unwrap()[1].first_seq;
    std::fs::write(&second, b"").unwrap();
    let damage = scan(emptied.path(), |_| {}).unwrap().damage.expect("a segment emptied in the middle");
    assert_eq!(damage.seq, first_of_second);
}

#[test]
fn an_empty_last_segment_named_for_the_next_seq_is_a_cut_short_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = build_ledger(tmp.path());
    let next = dir.join(format!("{:020}.jsonl", RECORDS + 1));
    std::fs::write(&next, b"").unwrap();
    assert!(scan(&dir, |_| {}).unwrap().is_intact());
    let (mut ledger, _) = Ledger::open(&dir, LedgerOptions { host: "test-host".into(), segment_max_bytes: 64 * 1024 }).unwrap();
    ledger.append_batch(&[sample_event(1)]).unwrap();
    drop(ledger);
    assert!(std::fs::metadata(&next).unwrap().len() > 0, "the writer appends to it");
    assert!(scan(&dir, |_| {}).unwrap().is_intact());
    // Misnamed, it is damage: empty, or holding only the start of a record.
    let misnamed = dir.join(format!("{:020}.jsonl", RECORDS + 5));
    std::fs::write(&misnamed, b"").unwrap();
    assert_eq!(scan(&dir, |_| {}).unwrap().damage.unwrap().kind, DamageKind::EmptySegment);
    std::fs::write(&misnamed, b"{\"action\":\"link.d").unwrap();
    let outcome = scan(&dir, |_| {}).unwrap();
    assert!(outcome.torn.is_none());
    assert_eq!(outcome.damage.unwrap().kind, DamageKind::SegmentMisnamed { named_first_seq: RECORDS as u64 + 5 });
}
