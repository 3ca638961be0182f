//! `verify --anchored`: the ledger checked against heads that replicas cosigned. A hash
//! chain proves nothing against someone who can recompute it; a head a replica signed
//! after verifying it can only be matched by the history the replica saw.

use super::checkpoint::{self, Checkpoint};
use super::note::{COSIGNATURE_ED25519, Verifier};
use crate::ledger::{Hash, LedgerCursor};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One head a known witness cosigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cosigned {
    pub seq: u64,
    pub head_hash: String,
    pub witness: String,
    pub cosigned_unix: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AnchorReport {
    /// The newest cosigned head the ledger still holds (everything up to it is as the
    /// witness saw it).
    pub anchored: Option<Cosigned>,
    /// The first cosigned head the ledger no longer holds: history was rewritten at or
    /// before its seq (and after `anchored`'s, when that is older).
    pub rewritten: Option<Cosigned>,
    pub cosigned_heads: usize,
    /// Notes that could not be read, and cosignatures that did not verify.
    pub problems: Vec<String>,
}

impl AnchorReport {
    pub fn describe(&self) -> String {
        match (&self.rewritten, &self.anchored) {
            (Some(r), a) => format!(
                "history rewritten at or before seq {}: the ledger no longer holds the head {} that {} cosigned{}",
                r.seq,
                r.head_hash,
                r.witness,
                a.as_ref()
                    .filter(|a| a.seq < r.seq)
                    .map(|a| format!(" (seq {} still matches its cosigned head)", a.seq))
                    .unwrap_or_default()
            ),
            (None, Some(a)) => format!("anchored: the ledger holds seq {} as {} cosigned it", a.seq, a.witness),
            (None, None) => "not anchored: no head cosigned by a known replica was found".to_owned(),
        }
    }
}

/// Reads the cosigned heads in `notes_dir` (cosignatures by `witnesses` that verify) and
/// checks that a ledger whose chain was just verified up to `held` holds them: reads only records
/// at cosigned heads, newest first. Once one matches, every older one does too (each hash
/// covers all before it), so a rewrite lies between that head and the one above it. A
/// cosigned head beyond `held` is a truncated history, except on a `live` ledger, where it
/// was cosigned after the verification began.
pub fn judge(ledger_dir: &Path, held: u64, notes_dir: &Path, witnesses: &[Verifier], live: bool) -> Result<AnchorReport> {
    let mut report = AnchorReport::default();
    let (notes, problems) = checkpoint::notes(notes_dir);
    report.problems = problems;
    let mut cosigned: BTreeMap<u64, (Cosigned, Hash)> = BTreeMap::new();
    for (c, note) in &notes {
        for w in witnesses.iter().filter(|w| w.kind == COSIGNATURE_ED25519) {
            match w.check(note) {
                Ok(Some(at)) => {
                    cosigned.entry(c.seq).or_insert_with(|| (cosigned_head(c, &w.name, at), c.head));
                }
                Ok(None) => {}
                Err(e) => report.problems.push(format!("checkpoint {}: {e:#}", c.seq)),
            }
        }
    }
    report.cosigned_heads = cosigned.len();
    for (seq, (head, hash)) in cosigned.into_iter().rev() {
        if live && seq > held {
            continue;
        }
        if seq <= held && hash_at(ledger_dir, seq)? == Some(hash) {
            report.anchored = Some(head);
            break;
        }
        report.rewritten = Some(head);
    }
    Ok(report)
}

/// The hash of record `seq`, read from its segment.
fn hash_at(ledger_dir: &Path, seq: u64) -> Result<Option<Hash>> {
    let mut found = None;
    LedgerCursor::new(ledger_dir, seq).read_through(seq, |r| {
        found = Some(r.hash);
        Ok(())
    })?;
    Ok(found)
}

fn cosigned_head(c: &Checkpoint, witness: &str, at: u64) -> Cosigned {
    Cosigned { seq: c.seq, head_hash: hex::encode(c.head), witness: witness.to_owned(), cosigned_unix: at }
}

/// The witness keys pinned under `root/keys/witnesses/` (`<replica>.vkey`, the current
/// ones) and `root/keys/witnesses/retired/` (keys replaced at re-enrolment, kept so the
/// heads they cosigned still count).
pub fn pinned_witnesses(root: &Path) -> Result<Vec<Verifier>> {
    let dir = super::keys::witnesses_dir(root);
    let mut out = Vec::new();
    for d in [dir.clone(), dir.join("retired")] {
        for entry in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "vkey") {
                continue;
            }
            let text = crate::durable::read_limited(&path, 4096)?;
            let key = Verifier::parse(&String::from_utf8_lossy(&text));
            out.push(key.with_context(|| format!("reading the pinned witness key {}", path.display()))?);
        }
    }
    Ok(out)
}
