//! `ovs-port-agent replica-receive --dir DIR`: the replica's end of a session, meant to be
//! the forced command of a restricted ssh key. Reads framed send streams from stdin, runs
//! `btrfs receive` for each, checks what arrived (read-only, received UUID set, MANIFEST
//! present, the hash chain intact and continuing the last verified head), deletes anything
//! garbled or partial, acknowledges each on stdout, then keeps only the newest verified
//! snapshot.

use super::frame::{Ack, Header, MAX_CHUNK};
use super::snapshot::{self, Manifest};
use crate::ledger::{LedgerCursor, Record, scan};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the replica last verified, kept in `DIR/replica-state.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicaState {
    pub newest: Option<String>,
    pub head_seq: u64,
    pub head_hash: String,
    pub received_uuid: Option<String>,
}

impl ReplicaState {
    pub fn load(dir: &Path) -> Self {
        std::fs::read(dir.join("replica-state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("replica-state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join("replica-state.json"))?;
        Ok(())
    }
}

/// Serves one session until stdin closes.
pub fn run(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A receiver killed mid-stream (host crash, SIGKILL) leaves its partial subvolume behind;
    // a new session starts by removing everything but the newest verified snapshot.
    prune(dir, ReplicaState::load(dir).newest.as_deref().unwrap_or(""));
    let stdin = std::io::stdin();
    let mut input = BufReader::new(stdin.lock());
    let stdout = std::io::stdout();
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let header: Header = serde_json::from_str(line.trim()).context("reading a stream header")?;
        if snapshot::snapshot_seq(&header.name).is_none() || header.parent.as_deref().is_some_and(|p| snapshot::snapshot_seq(p).is_none()) {
            bail!("refusing stream names {:?} / {:?}", header.name, header.parent);
        }
        let ack = receive_one(dir, &header, &mut input)?;
        let mut out = stdout.lock();
        writeln!(out, "{}", serde_json::to_string(&ack)?)?;
        out.flush()?;
        drop(out);
        // Pruning after the acknowledgement keeps it off the sender's critical path; what
        // is pruned is never needed again (the state file already names the newest).
        if ack.ok {
            prune(dir, &ack.name);
        }
    }
}

fn receive_one(dir: &Path, header: &Header, input: &mut impl Read) -> Result<Ack> {
    let target = dir.join(&header.name);
    let mut ack = Ack { name: header.name.clone(), ..Default::default() };
    let missing_parent = header.parent.as_ref().is_some_and(|p| !dir.join(p).exists());
    if target.exists() {
        // A leftover from an interrupted attempt (or a repeat): start clean.
        let _ = snapshot::delete(&target);
    }
    if missing_parent {
        drain(input)?;
        ack.missing_parent = true;
        ack.error = Some(format!("parent {} is not on this replica", header.parent.clone().unwrap_or_default()));
        return Ok(ack);
    }
    // zstd -d | btrfs receive, joined by a pipe, for compressed streams.
    let mut unzstd = match header.compression.as_deref() {
        None => None,
        Some("zstd") => Some(
            Command::new("zstd")
                .args(["-d", "-q", "-c"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("running zstd -d")?,
        ),
        Some(other) => bail!("unknown stream compression {other:?}"),
    };
    let receive_input = match unzstd.as_mut() {
        Some(z) => Stdio::from(z.stdout.take().expect("piped")),
        None => Stdio::piped(),
    };
    let mut child = Command::new("btrfs")
        .arg("receive")
        .arg(dir)
        .stdin(receive_input)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running btrfs receive")?;
    let mut sink: Option<Box<dyn Write>> = match unzstd.as_mut() {
        Some(z) => z.stdin.take().map(|s| Box::new(s) as Box<dyn Write>),
        None => child.stdin.take().map(|s| Box::new(s) as Box<dyn Write>),
    };
    // Always read the whole stream so the session stays in step, even if receive failed.
    let copied = copy_chunks(input, |chunk| {
        if let Some(s) = sink.as_mut() {
            if s.write_all(chunk).is_err() {
                sink = None; // btrfs receive gave up; its error is read below
            }
        }
    });
    drop(sink);
    if let Some(mut z) = unzstd {
        let _ = z.wait();
    }
    if let Err(e) = copied {
        let _ = child.kill();
        let _ = child.wait();
        let _ = snapshot::delete(&target);
        return Err(e);
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let _ = snapshot::delete(&target);
        ack.error = Some(format!("btrfs receive failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
        return Ok(ack);
    }
    match check(dir, &target) {
        Ok((received_uuid, manifest)) => {
            let state = ReplicaState {
                newest: Some(header.name.clone()),
                head_seq: manifest.head_seq,
                head_hash: manifest.head_hash.clone(),
                received_uuid: Some(received_uuid.clone()),
            };
            state.save(dir)?;
            ack.ok = true;
            ack.received_uuid = Some(received_uuid);
            ack.head_seq = manifest.head_seq;
            ack.head_hash = manifest.head_hash;
        }
        Err(e) => {
            let _ = snapshot::delete(&target);
            ack.error = Some(format!("{e:#}"));
        }
    }
    Ok(ack)
}

/// Reads chunks until the empty one, handing each to `f`.
fn copy_chunks(input: &mut impl Read, mut f: impl FnMut(&[u8])) -> Result<()> {
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).context("the sender went away mid-stream")?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 {
            return Ok(());
        }
        if len > MAX_CHUNK {
            bail!("chunk of {len} bytes is larger than {MAX_CHUNK}");
        }
        buf.resize(len, 0);
        input.read_exact(&mut buf).context("the sender went away mid-stream")?;
        f(&buf);
    }
}

fn drain(input: &mut impl Read) -> Result<()> {
    copy_chunks(input, |_| {})
}

/// Checks a received snapshot; returns its received UUID and manifest.
fn check(dir: &Path, target: &Path) -> Result<(String, Manifest)> {
    let facts = crate::btrfs::subvolume_facts(target)?;
    if !facts.read_only {
        bail!("{} is not read-only", target.display());
    }
    let received_uuid = facts.received_uuid.context("the subvolume has no received UUID")?;
    let manifest = Manifest::read(target)?;
    let previous = ReplicaState::load(dir);
    let ledger = target.join("ledger");
    if previous.head_seq == 0 {
        verify_whole(&ledger, &manifest)?;
    } else {
        verify_from(&ledger, &previous, &manifest)?;
    }
    Ok((received_uuid, manifest))
}

/// The first snapshot a replica takes in: every record, every chain, up to the MANIFEST.
fn verify_whole(ledger: &Path, manifest: &Manifest) -> Result<()> {
    let outcome = scan(ledger, |_| {})?;
    if let Some(damage) = outcome.damage {
        bail!("the received ledger is damaged: {damage}");
    }
    if outcome.torn.is_some() {
        bail!("the received ledger ends in an incomplete record");
    }
    if outcome.state.head_seq != manifest.head_seq || hex::encode(outcome.state.head_hash) != manifest.head_hash {
        bail!("MANIFEST says head {} {}, the ledger ends at {}", manifest.head_seq, manifest.head_hash, outcome.state.head_seq);
    }
    Ok(())
}

/// A later snapshot: the records from the last verified head to the new one, each hash
/// recomputed and each linked to the one before, and the first being that head itself.
/// What precedes it was verified when it arrived; the head's own hash pins it.
fn verify_from(ledger: &Path, previous: &ReplicaState, manifest: &Manifest) -> Result<()> {
    let mut cursor = LedgerCursor::new(ledger, previous.head_seq);
    let mut last: Option<Record> = None;
    cursor
        .read_through(manifest.head_seq, |record| {
            match &last {
                None if record.seq != previous.head_seq || record.hash_hex() != previous.head_hash => {
                    bail!("the received ledger does not continue the last verified head (seq {} {})", previous.head_seq, previous.head_hash)
                }
                Some(before) if record.prev != before.hash => {
                    bail!("the received ledger is damaged: seq {} does not link to seq {}", record.seq, before.seq)
                }
                _ => {}
            }
            last = Some(record);
            Ok(())
        })
        .context("checking the received ledger")?;
    let Some(head) = last else {
        bail!("the received ledger does not continue the last verified head (seq {} {})", previous.head_seq, previous.head_hash);
    };
    if head.seq != manifest.head_seq || head.hash_hex() != manifest.head_hash {
        bail!("MANIFEST says head {} {}, the ledger ends at {}", manifest.head_seq, manifest.head_hash, head.seq);
    }
    if !cursor.at_end()? {
        bail!("the received ledger goes on past the MANIFEST's head {}", manifest.head_seq);
    }
    Ok(())
}

/// Keeps only `keep` (the parent the next incremental needs; "" keeps nothing).
fn prune(dir: &Path, keep: &str) {
    for (_, path) in snapshot::list(dir) {
        if path.file_name().map(|n| n != keep).unwrap_or(false) {
            if let Err(e) = snapshot::delete(&path) {
                eprintln!("could not prune {}: {e:#}", path.display());
            }
        }
    }
}

/// The newest verified snapshot of a replica directory.
pub fn newest(dir: &Path) -> Option<PathBuf> {
    ReplicaState::load(dir).newest.map(|n| dir.join(n)).filter(|p| p.exists())
}
