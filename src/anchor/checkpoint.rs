//! A ledger head as a checkpoint note, in the layout of c2sp.org/tlog-checkpoint:
//!
//! ```text
//! <origin>                 <host>/ovs-port-agent
//! <size>                   the head's seq
//! <base64 head hash>       the head record's hash (a hash-chain head, not a Merkle root)
//! time <unix seconds>      an extension line: when the checkpoint was made
//! ```
//!
//! Notes live in `data/witness/<seq>.note` (they stream with the snapshots): the primary's
//! signature first, each replica's cosignature appended when its acknowledgement arrives.

use super::note::{Note, Signer};
use crate::durable;
use crate::ledger::Hash;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::{Path, PathBuf};

/// The directory of checkpoint notes inside the data subvolume.
pub const DIR: &str = "witness";
/// Notes kept: the newest this many, and the newest cosigned one whatever its age.
const KEEP: usize = 64;
/// A note is a few hundred bytes; anything much larger is not one.
const MAX_NOTE_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub seq: u64,
    pub head: Hash,
    pub time: u64,
}

impl Checkpoint {
    pub fn text(&self) -> String {
        format!("{}\n{}\n{}\ntime {}\n", self.origin, self.seq, B64.encode(self.head), self.time)
    }

    pub fn parse(text: &str) -> Result<Self> {
        let lines: Vec<&str> = text.strip_suffix('\n').ok_or_else(|| anyhow!("a checkpoint ends in a newline"))?.split('\n').collect();
        let [origin, seq, head, time] = lines.as_slice() else { bail!("a checkpoint has four lines, not {}", lines.len()) };
        let seq: u64 = seq.parse().with_context(|| format!("checkpoint size {seq:?}"))?;
        let head: Hash = B64.decode(head).ok().and_then(|h| h.try_into().ok()).ok_or_else(|| anyhow!("checkpoint hash {head:?}"))?;
        let time = time.strip_prefix("time ").and_then(|t| t.parse().ok()).ok_or_else(|| anyhow!("checkpoint time line {time:?}"))?;
        Ok(Self { origin: (*origin).to_owned(), seq, head, time })
    }
}

/// The origin line (and key name) for a host: `<host>/ovs-port-agent`, with characters a
/// note name may not hold replaced.
pub fn origin(host: &str) -> String {
    let host: String = host.chars().map(|c| if c.is_whitespace() || c == '+' || c.is_control() { '_' } else { c }).collect();
    format!("{}/ovs-port-agent", if host.is_empty() { "localhost" } else { &host })
}

pub fn note_path(data: &Path, seq: u64) -> PathBuf {
    data.join(DIR).join(format!("{seq:020}.note"))
}

/// Reads a checkpoint note (bounded: it may come from a received, untrusted snapshot).
pub fn read_note(path: &Path) -> Result<(Checkpoint, Note)> {
    let note = Note::parse(&durable::read_limited(path, MAX_NOTE_BYTES).with_context(|| format!("reading {}", path.display()))?)?;
    Ok((Checkpoint::parse(&note.text)?, note))
}

/// Note files are read, changed and replaced by the snapshot trigger and by every replica
/// worker: one at a time, or a cosignature is lost (and they share the temporary name).
static NOTE_WRITES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes the signed checkpoint of `data`'s head and prunes old notes. A note already there
/// for the same head is kept as it is (with its cosignatures): a new cut at an unchanged head
/// (vectorization moved on) signs nothing new.
pub fn write_signed(data: &Path, signer: &Signer, checkpoint: &Checkpoint) -> Result<()> {
    let _one = NOTE_WRITES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = data.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = note_path(data, checkpoint.seq);
    if read_note(&path).is_ok_and(|(c, _)| c.seq == checkpoint.seq && c.head == checkpoint.head) {
        return Ok(());
    }
    let text = checkpoint.text();
    durable::replace(&path, format!("{text}\n{}", signer.sign(&text)).as_bytes())?;
    prune(&dir);
    Ok(())
}

/// Appends one cosignature line to the note of `seq` (once). The line must already have
/// been checked on its own ([`super::note::Verifier::check_line`]).
pub fn add_cosignature(data: &Path, seq: u64, line: &str) -> Result<()> {
    let _one = NOTE_WRITES.lock().unwrap_or_else(|e| e.into_inner());
    let path = note_path(data, seq);
    let mut bytes = durable::read_limited(&path, MAX_NOTE_BYTES)?;
    Note::parse(&bytes)?;
    if !std::str::from_utf8(&bytes).is_ok_and(|t| t.lines().any(|l| l == line.trim_end())) {
        bytes.extend_from_slice(line.as_bytes());
        if bytes.len() as u64 > MAX_NOTE_BYTES {
            bail!("the note of seq {seq} is full");
        }
        Note::parse(&bytes).context("the cosignature line")?;
        durable::replace(&path, &bytes)?;
    }
    Ok(())
}

/// Every note in a directory by seq, oldest first; unreadable ones are skipped and named.
pub fn notes(dir: &Path) -> (Vec<(Checkpoint, Note)>, Vec<String>) {
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for (_, path) in list(dir) {
        match read_note(&path) {
            Ok(pair) => out.push(pair),
            Err(e) => problems.push(format!("{}: {e:#}", path.display())),
        }
    }
    (out, problems)
}

fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let seq = name.to_str()?.strip_suffix(".note")?.parse().ok()?;
            Some((seq, e.path()))
        })
        .collect();
    out.sort_by_key(|(s, _)| *s);
    out
}

/// Keeps the newest [`KEEP`] notes and the newest one holding more than one signature.
fn prune(dir: &Path) {
    let all = list(dir);
    let old = &all[..all.len().saturating_sub(KEEP)];
    let cosigned = |p: &Path| read_note(p).is_ok_and(|(_, n)| n.signatures.len() > 1);
    let newest_recent_cosigned = all[old.len()..].iter().any(|(_, p)| cosigned(p));
    let mut kept_one = newest_recent_cosigned;
    for (_, path) in old.iter().rev() {
        if !kept_one && cosigned(path) {
            kept_one = true;
            continue;
        }
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back() {
        let c = Checkpoint { origin: origin("host a"), seq: 42, head: [0xab; 32], time: 1_700_000_000 };
        assert_eq!(c.origin, "host_a/ovs-port-agent");
        assert_eq!(Checkpoint::parse(&c.text()).unwrap(), c);
        assert!(Checkpoint::parse("o\n1\nAAAA\n").is_err());
    }

    #[test]
    fn notes_are_pruned_but_the_newest_cosigned_one_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let log = Signer::new("h/ovs-port-agent", [1; 32]).unwrap();
        let witness = Signer::new("r/witness", [2; 32]).unwrap();
        for seq in 1..=100u64 {
            let c = Checkpoint { origin: log.name.clone(), seq, head: [seq as u8; 32], time: seq };
            write_signed(tmp.path(), &log, &c).unwrap();
            if seq == 10 {
                add_cosignature(tmp.path(), 10, &witness.cosign(&c.text(), 5)).unwrap();
                add_cosignature(tmp.path(), 10, &witness.cosign(&c.text(), 5)).unwrap();
            }
        }
        let (notes, problems) = notes(&tmp.path().join(DIR));
        assert!(problems.is_empty(), "{problems:?}");
        let seqs: Vec<u64> = notes.iter().map(|(c, _)| c.seq).collect();
        assert_eq!(seqs.len(), KEEP + 1);
        assert_eq!(seqs[0], 10, "the cosigned note outlives pruning");
        assert_eq!(notes[0].1.signatures.len(), 2, "a cosignature is added once");
    }
}
