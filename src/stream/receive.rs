//! `ovs-port-agent replica-receive --dir DIR`: the replica's end of a session, meant to be
//! the forced command of a restricted ssh key. It treats every stream as hostile, because
//! replicas exist to be the independent copy when a primary is compromised:
//!
//! 1. the stream is parsed and filtered command by command before `btrfs receive` sees it
//!    (`guard`): one subvolume named as announced, regular files and directories, root's,
//!    plain modes, paths inside, no device nodes, links, attributes or foreign clones;
//! 2. `btrfs receive --chroot` runs in a mount namespace of its own where the file system
//!    is `nosuid,nodev,noexec`, into `DIR`, a 0700 directory, capped in bytes and time (a
//!    read-only subvolume cannot be moved between directories afterwards, so there is no
//!    separate staging directory: what is not verified is deleted where it landed);
//! 3. what arrived is checked again on disk — exactly one read-only subvolume with a
//!    received UUID, a snapshot of the verified parent, holding only the data set's files,
//!    each a regular file or directory owned by root with plain modes (`tree`);
//! 4. the ledger is verified from the last verified head: the verified part byte-identical
//!    (`identity`), every new record's hash, its link and its element's chain, ending at the
//!    MANIFEST's head; the index rows and vectors of the new events match that ledger;
//! 5. only then is it named the newest verified snapshot and acknowledged; its
//!    predecessor is deleted after that. Nothing verified is deleted before its successor
//!    is verified, and a stream can never name (and so replace) a verified snapshot.
//!
//! A refused stream is deleted, acknowledged with the reason and logged in
//! `DIR/rejections.jsonl`.

use super::frame::{Ack, Header, MAX_CHUNK};
use super::guard::{Expected, Guard};
use super::identity::same_prefix;
use super::snapshot::{self, Manifest};
use crate::btrfs;
use crate::durable;
use crate::index::{Index, from_blob};
use crate::ledger::{ChainState, Hash, LedgerCursor, Record, ZERO_HASH, scan, segment::list_segments};
use anyhow::{Context, Result, bail};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const STATE_FILE: &str = "replica-state.json";
const VERIFIED_DB: &str = ".verified.sqlite";
const REJECTIONS: &str = "rejections.jsonl";
/// The rejection log is cut back to its newer half beyond this size.
const MAX_REJECTIONS_BYTES: u64 = 1 << 20;
/// A vector is a unit vector within this tolerance.
const NORM_TOLERANCE: f32 = 1e-3;

/// Bounds on one stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_stream_bytes: u64,
    pub max_stream_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_stream_bytes: 64 << 30, max_stream_seconds: 3600 }
    }
}

/// What the replica last verified, kept in `DIR/replica-state.json` (written last, durably:
/// the replica daemon watches it and serves the snapshot it names).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplicaState {
    pub newest: Option<String>,
    pub head_seq: u64,
    pub head_hash: String,
    /// The newest snapshot's received UUID (its UUID on the primary).
    pub received_uuid: Option<String>,
    /// The newest snapshot's own UUID on this replica (what its successor must be a snapshot of).
    #[serde(default)]
    pub uuid: Option<String>,
    /// The origin: every snapshot must come from the same host.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub vectorized_seq: u64,
    #[serde(default)]
    pub model_sha256: String,
}

impl ReplicaState {
    pub fn load(dir: &Path) -> Self {
        durable::read_limited(&dir.join(STATE_FILE), 1 << 20).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    fn save(&self, dir: &Path) -> Result<()> {
        durable::replace(&dir.join(STATE_FILE), &serde_json::to_vec_pretty(self)?)
    }
}

/// The file the replica daemon watches for new verified snapshots.
pub fn state_file(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// The newest verified snapshot of a replica directory.
pub fn newest(dir: &Path) -> Option<PathBuf> {
    ReplicaState::load(dir).newest.map(|n| dir.join(n)).filter(|p| p.exists())
}

/// Serves one session until stdin closes.
pub fn run(dir: &Path, limits: Limits) -> Result<()> {
    prepare(dir)?;
    let mut input = BufReader::new(std::io::stdin());
    let stdout = std::io::stdout();
    loop {
        let Some(line) = read_header_line(&mut input)? else { return Ok(()) };
        let header: Header = serde_json::from_str(line.trim()).context("reading a stream header")?;
        let ack = receive_one(dir, &header, &mut input, limits)?;
        if let Some(error) = &ack.error {
            note_rejection(dir, &header, error);
        }
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

/// Makes the receive directory private (0700) and removes every snapshot but the newest
/// verified one (an interrupted session's partial receive among them).
fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("making {} private", dir.display()))?;
    prune(dir, ReplicaState::load(dir).newest.as_deref().unwrap_or(""));
    Ok(())
}

/// Deletes what a refused or broken receive left (a subvolume, or anything else the stream
/// managed to create next to it).
fn remove_unverified(dir: &Path, before: &[std::ffi::OsString]) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if before.contains(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        let removed = if btrfs::subvolume_facts(&path).is_ok() {
            snapshot::delete(&path)
        } else if path.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&path).map_err(Into::into)
        } else {
            std::fs::remove_file(&path).map_err(Into::into)
        };
        if let Err(e) = removed {
            eprintln!("could not remove {}: {e:#}", path.display());
        }
    }
}

fn entries(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    Ok(std::fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?)
}

fn read_header_line(input: &mut impl BufRead) -> Result<Option<String>> {
    let mut line = Vec::new();
    let n = input.take(64 << 10).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        bail!("a stream header longer than 64 KiB or cut short");
    }
    Ok(Some(String::from_utf8(line).context("a stream header that is not UTF-8")?))
}

fn receive_one(dir: &Path, header: &Header, input: &mut (impl Read + Send), limits: Limits) -> Result<Ack> {
    let mut ack = Ack { name: header.name.clone(), ..Default::default() };
    let state = ReplicaState::load(dir);
    let refused = |ack: &mut Ack, input: &mut dyn Read, why: String| -> Result<Ack> {
        drain(input)?;
        ack.error = Some(why);
        Ok(ack.clone())
    };
    let Some(seq) = snapshot::snapshot_seq(&header.name) else {
        return refused(&mut ack, input, format!("refusing the stream name {:?}", header.name));
    };
    let newest_seq = state.newest.as_deref().and_then(snapshot::snapshot_seq);
    if newest_seq.is_some_and(|n| seq <= n) {
        return refused(
            &mut ack,
            input,
            format!("{} is not newer than the verified {}", header.name, state.newest.clone().unwrap_or_default()),
        );
    }
    // Incremental only from the newest verified snapshot (the only one kept).
    let parent = match &header.parent {
        None => None,
        Some(p) if Some(p) == state.newest.as_ref() && dir.join(p).exists() => {
            let received = state.received_uuid.as_deref().and_then(btrfs::parse_uuid);
            Some(received.context("the verified parent has no received UUID on record")?)
        }
        Some(p) => {
            drain(input)?;
            ack.missing_parent = true;
            ack.error = Some(format!("parent {p} is not this replica's newest verified snapshot"));
            return Ok(ack);
        }
    };
    let expected = Expected { name: header.name.clone(), parent };
    let target = dir.join(&header.name);
    // A leftover of the same (newer, so unverified) name from an interrupted attempt.
    if target.exists() {
        snapshot::delete(&target)?;
    }
    let before = entries(dir)?;
    if let Err(e) = receive_stream(dir, header, expected, input, limits) {
        remove_unverified(dir, &before);
        if e.is::<SessionBroken>() {
            return Err(e);
        }
        ack.error = Some(format!("{e:#}"));
        return Ok(ack);
    }
    let verified = entries(dir).and_then(|after| {
        let new: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
        if new.len() != 1 || *new[0] != *header.name {
            bail!("the stream did not create exactly its one subvolume");
        }
        check(dir, &target, &state, header.parent.is_some())
    });
    match verified {
        Ok(verified) => {
            verified.state.save(dir)?;
            ack.ok = true;
            ack.received_uuid = verified.state.received_uuid.clone();
            ack.head_seq = verified.state.head_seq;
            ack.head_hash = verified.state.head_hash.clone();
        }
        Err(e) => {
            remove_unverified(dir, &before);
            ack.error = Some(format!("{e:#}"));
        }
    }
    Ok(ack)
}

/// Runs the filtered stream into `btrfs receive` (confined); returns once it succeeded.
fn receive_stream(dir: &Path, header: &Header, expected: Expected, input: &mut (impl Read + Send), limits: Limits) -> Result<()> {
    let mut receive = Command::new("btrfs");
    receive.arg("receive").arg("--chroot").arg(dir).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    btrfs::confine_to_nosuid_nodev(&mut receive, &btrfs::mount_point_of(dir)?)?;
    let mut child = receive.spawn().context("running btrfs receive")?;
    let mut to_receive = child.stdin.take().expect("piped");
    let watchdog = Watchdog::start(child.id(), Duration::from_secs(limits.max_stream_seconds));
    // zstd -d, when compressed, runs as a filter the guard reads from.
    let mut unzstd = match header.compression.as_deref() {
        None => None,
        Some("zstd") => Some(
            Command::new("zstd")
                .args(["-d", "-q", "-c", "--no-progress"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("running zstd -d")?,
        ),
        Some(other) => {
            drain(input)?;
            let _ = child.kill();
            let _ = child.wait();
            bail!("unknown stream compression {other:?}");
        }
    };
    let mut guard = Guard::new(expected);
    let mut total = 0u64;
    let mut refused = None;
    let forward = |bytes: &[u8], guard: &mut Guard, refused: &mut Option<String>, to: &mut dyn Write| {
        if refused.is_some() {
            return;
        }
        let mut checked = Vec::with_capacity(bytes.len() + 64);
        match guard.feed(bytes, &mut checked) {
            Ok(()) => {
                if to.write_all(&checked).is_err() {
                    *refused = Some("btrfs receive stopped reading".into());
                }
            }
            Err(e) => *refused = Some(e.to_string()),
        }
    };
    // Always read the whole frame so the session stays in step, even when refusing.
    let copied = match unzstd.as_mut() {
        None => copy_chunks(input, |chunk| {
            total += chunk.len() as u64;
            if total > limits.max_stream_bytes && refused.is_none() {
                refused = Some(format!("the stream is larger than the {} bytes allowed", limits.max_stream_bytes));
            }
            forward(chunk, &mut guard, &mut refused, &mut to_receive);
        }),
        Some(z) => {
            // A thread feeds the compressed frame to zstd; this one filters its output.
            let mut z_in = z.stdin.take().expect("piped");
            let mut z_out = z.stdout.take().expect("piped");
            let max = limits.max_stream_bytes;
            std::thread::scope(|s| {
                let feeder = s.spawn(move || copy_chunks(input, |chunk| drop(z_in.write_all(chunk))));
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = match z_out.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    total += n as u64;
                    if total > max && refused.is_none() {
                        refused = Some(format!("the stream is larger than the {max} bytes allowed"));
                    }
                    forward(&buf[..n], &mut guard, &mut refused, &mut to_receive);
                }
                feeder.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the zstd feeder panicked")))
            })
        }
    };
    if let Some(mut z) = unzstd {
        let _ = z.wait();
    }
    if refused.is_none() && copied.is_ok() {
        if let Err(e) = guard.finish() {
            refused = Some(e.to_string());
        }
    }
    drop(to_receive);
    if refused.is_some() || copied.is_err() {
        let _ = child.kill();
    }
    let output = child.wait_with_output()?;
    watchdog.disarm();
    copied.map_err(|e| SessionBroken(format!("{e:#}")))?;
    if let Some(why) = refused {
        bail!("{why}");
    }
    if !output.status.success() {
        bail!("btrfs receive failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// The session itself broke (the sender went away mid-stream): nothing more can be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SessionBroken(String);

/// Kills `btrfs receive` and ends the session when one stream takes longer than allowed
/// (the read that waits for the sender cannot be interrupted otherwise); the next session
/// clears what was left.
struct Watchdog {
    done: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn start(pid: u32, limit: Duration) -> Self {
        let (done, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("a stream took longer than {} s; ending the session", limit.as_secs());
                // SAFETY: signalling our own child by its pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                std::process::exit(3);
            }
        });
        Self { done }
    }

    fn disarm(self) {
        let _ = self.done.send(());
    }
}

/// Reads chunks until the empty one, handing each to `f`.
fn copy_chunks(input: &mut (impl Read + ?Sized), mut f: impl FnMut(&[u8])) -> Result<()> {
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

fn drain(input: &mut (impl Read + ?Sized)) -> Result<()> {
    copy_chunks(input, |_| {})
}

/// A received snapshot that passed every check, and the state it leads to.
struct Verified {
    state: ReplicaState,
}

/// Checks a received snapshot.
fn check(dir: &Path, staged: &Path, previous: &ReplicaState, incremental: bool) -> Result<Verified> {
    let facts = btrfs::subvolume_facts(staged)?;
    if !facts.read_only {
        bail!("{} is not read-only", staged.display());
    }
    let received_uuid = facts.received_uuid.clone().context("the subvolume has no received UUID")?;
    match (incremental, &previous.uuid) {
        (true, Some(parent)) if facts.parent_uuid.as_ref() == Some(parent) => {}
        (true, _) => bail!("the received snapshot is not a snapshot of the verified parent"),
        (false, _) => {}
    }
    super::tree::check(staged)?;
    let manifest = Manifest::read(staged)?;
    if staged.file_name().and_then(|n| snapshot::snapshot_seq(&n.to_string_lossy())) != Some(manifest.seq) {
        bail!("the snapshot's name does not match its MANIFEST (seq {})", manifest.seq);
    }
    if manifest.seq > manifest.head_seq || manifest.vectorized_seq != manifest.seq {
        bail!("the MANIFEST is inconsistent (seq {}, head {})", manifest.seq, manifest.head_seq);
    }
    if !previous.host.is_empty() && manifest.host != previous.host {
        bail!("the snapshot comes from host {:?}, this replica holds {:?}", manifest.host, previous.host);
    }
    let mut heads = VerifiedHeads::open(dir)?;
    // Without the element heads of the last verification (a first snapshot, or the file was
    // lost), the whole ledger is verified, and must still hold the last verified head.
    let new_records = if previous.head_seq == 0 || heads.is_empty()? {
        heads.clear()?;
        verify_whole(staged, &manifest, previous, &mut heads)?
    } else {
        let parent = dir.join(previous.newest.as_deref().context("no verified snapshot on record")?);
        verify_from(&parent, staged, previous, &manifest, &mut heads)?
    };
    check_index(staged, &manifest, &new_records, previous)?;
    heads.commit()?;
    Ok(Verified {
        state: ReplicaState {
            newest: staged.file_name().map(|n| n.to_string_lossy().into_owned()),
            head_seq: manifest.head_seq,
            head_hash: manifest.head_hash.clone(),
            received_uuid: Some(received_uuid),
            uuid: Some(facts.uuid),
            host: manifest.host.clone(),
            vectorized_seq: manifest.seq,
            model_sha256: manifest.model_sha256.clone(),
        },
    })
}

/// The first snapshot a replica takes in: every record, every chain, up to the MANIFEST.
fn verify_whole(snapshot: &Path, manifest: &Manifest, previous: &ReplicaState, heads: &mut VerifiedHeads) -> Result<Vec<Record>> {
    let mut records = std::collections::VecDeque::new();
    let mut holds_previous_head = previous.head_seq == 0;
    let outcome = scan(&snapshot.join("ledger"), |r| {
        if r.seq == previous.head_seq && r.hash_hex() == previous.head_hash {
            holds_previous_head = true;
        }
        // The records after the last verified head are the new ones, whose index rows are
        // checked (bounded: a first snapshot checks its newest million).
        if r.seq > previous.head_seq {
            if records.len() == 1_000_000 {
                records.pop_front();
            }
            records.push_back(r.clone());
        }
    })?;
    if !holds_previous_head {
        bail!("the received ledger does not hold the last verified head (seq {} {})", previous.head_seq, previous.head_hash);
    }
    if let Some(damage) = outcome.damage {
        bail!("the received ledger is damaged: {damage}");
    }
    if outcome.torn.is_some() {
        bail!("the received ledger ends in an incomplete record");
    }
    if outcome.state.head_seq != manifest.head_seq || hex::encode(outcome.state.head_hash) != manifest.head_hash {
        bail!("MANIFEST says head {} {}, the ledger ends at {}", manifest.head_seq, manifest.head_hash, outcome.state.head_seq);
    }
    for (element, hash) in &outcome.state.element_heads {
        heads.set(element, hash);
    }
    Ok(records.into())
}

/// A later snapshot: the ledger the last verified snapshot held is still there byte for
/// byte (segments unchanged, the last one only grown), and from its head on every record's
/// hash, link and element chain holds, ending at the MANIFEST's head.
fn verify_from(
    parent: &Path,
    snapshot: &Path,
    previous: &ReplicaState,
    manifest: &Manifest,
    heads: &mut VerifiedHeads,
) -> Result<Vec<Record>> {
    let (old_dir, new_dir) = (parent.join("ledger"), snapshot.join("ledger"));
    let old = list_segments(&old_dir).with_context(|| format!("listing {}", old_dir.display()))?;
    let new = list_segments(&new_dir).with_context(|| format!("listing {}", new_dir.display()))?;
    for (i, segment) in old.iter().enumerate() {
        let name = segment.path.file_name().expect("a segment has a name");
        let Some(same) = new.iter().find(|s| s.first_seq == segment.first_seq) else {
            bail!("the received ledger lacks segment {}", name.to_string_lossy());
        };
        let old_len = std::fs::metadata(&segment.path)?.len();
        let new_len = std::fs::metadata(&same.path)?.len();
        if i + 1 < old.len() && new_len != old_len {
            bail!("segment {} changed length, though it was complete", name.to_string_lossy());
        }
        same_prefix(&segment.path, &same.path, old_len)?;
    }
    if let Some(extra) = new.iter().find(|s| !old.iter().any(|o| o.first_seq == s.first_seq) && s.first_seq <= previous.head_seq) {
        bail!("the received ledger has a segment {} inside its verified part", extra.path.display());
    }
    let mut chain = ChainState { head_seq: previous.head_seq, head_hash: parse_hash(&previous.head_hash)?, element_heads: HashMap::new() };
    let mut cursor = LedgerCursor::new(&new_dir, previous.head_seq + 1);
    let mut records = Vec::new();
    cursor
        .read_through(manifest.head_seq, |record| {
            if !chain.element_heads.contains_key(&record.element_id) {
                let head = heads.get(&record.element_id)?.unwrap_or(ZERO_HASH);
                if head != ZERO_HASH {
                    chain.element_heads.insert(record.element_id.clone(), head);
                }
            }
            chain.advance(&record).map_err(|kind| anyhow::anyhow!("the received ledger is damaged at seq {}: {kind}", record.seq))?;
            records.push(record);
            Ok(())
        })
        .context("checking the received ledger")?;
    if chain.head_seq != manifest.head_seq || hex::encode(chain.head_hash) != manifest.head_hash {
        bail!("MANIFEST says head {} {}, the ledger ends at {}", manifest.head_seq, manifest.head_hash, chain.head_seq);
    }
    if manifest.head_seq > previous.head_seq && !cursor.at_end()? {
        bail!("the received ledger goes on past the MANIFEST's head {}", manifest.head_seq);
    }
    for (element, hash) in &chain.element_heads {
        heads.set(element, hash);
    }
    Ok(records)
}

/// The received index's rows for the new events match the verified ledger, and their
/// vectors are well-formed unit vectors.
fn check_index(snapshot: &Path, manifest: &Manifest, records: &[Record], previous: &ReplicaState) -> Result<()> {
    let index = Index::open_snapshot(&snapshot.join("index.sqlite"))?;
    let covered = index.covered_seq()?;
    if covered < manifest.seq {
        bail!("the received index covers seq {covered}, less than the MANIFEST's {}", manifest.seq);
    }
    for record in records.iter().filter(|r| r.seq <= covered) {
        let row = index.event(record.seq)?.with_context(|| format!("the received index lacks event {}", record.seq))?;
        let same = row.hash == record.hash_hex()
            && row.element_id == record.element_id
            && row.element_type == record.element_type
            && row.action == record.action
            && row.ts == record.ts
            && row.priority == record.priority
            && row.source == record.source
            && row.summary == record.summary
            && row.details == record.details;
        if !same {
            bail!("the received index's row for event {} does not match the ledger", record.seq);
        }
    }
    let since = if previous.model_sha256 == manifest.model_sha256 { previous.vectorized_seq } else { 0 };
    let mut after = since;
    loop {
        let rows: Vec<(i64, Vec<u8>)> = {
            let mut stmt =
                index.connection().prepare("SELECT seq, vector FROM vectors WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT 4096")?;
            let rows = stmt.query_map(params![after as i64, manifest.seq as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let Some(last) = rows.last().map(|(s, _)| *s as u64) else { break };
        for (seq, blob) in rows {
            let v = from_blob(&blob).with_context(|| format!("the received vector of event {seq}"))?;
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if (norm - 1.0).abs() > NORM_TOLERANCE {
                bail!("the received vector of event {seq} is not a unit vector (norm {norm})");
            }
        }
        after = last;
    }
    Ok(())
}

fn parse_hash(text: &str) -> Result<Hash> {
    let mut out = ZERO_HASH;
    hex::decode_to_slice(text, &mut out).with_context(|| format!("a head hash {text:?} on record"))?;
    Ok(out)
}

/// Every element's newest verified record hash, kept in `DIR/.verified.sqlite` so a later
/// snapshot's element chains are checked from where the last one ended (a receive costs
/// what arrived, not the history). Changes are written only when the snapshot is accepted.
struct VerifiedHeads {
    conn: Connection,
    changed: HashMap<String, Hash>,
    cleared: bool,
}

impl VerifiedHeads {
    fn open(dir: &Path) -> Result<Self> {
        let conn = Connection::open(dir.join(VERIFIED_DB))?;
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS heads (element_id TEXT PRIMARY KEY, hash BLOB NOT NULL);")?;
        Ok(Self { conn, changed: HashMap::new(), cleared: false })
    }

    fn is_empty(&self) -> Result<bool> {
        Ok(!self.conn.prepare("SELECT 1 FROM heads LIMIT 1")?.exists([])?)
    }

    fn clear(&mut self) -> Result<()> {
        self.cleared = true;
        self.changed.clear();
        Ok(())
    }

    fn get(&self, element: &str) -> Result<Option<Hash>> {
        if let Some(h) = self.changed.get(element) {
            return Ok(Some(*h));
        }
        if self.cleared {
            return Ok(None);
        }
        let blob: Option<Vec<u8>> =
            self.conn.prepare_cached("SELECT hash FROM heads WHERE element_id = ?1")?.query_row([element], |r| r.get(0)).optional()?;
        Ok(blob.and_then(|b| b.try_into().ok()))
    }

    fn set(&mut self, element: &str, hash: &Hash) {
        self.changed.insert(element.to_owned(), *hash);
    }

    fn commit(mut self) -> Result<()> {
        let tx = self.conn.transaction()?;
        if self.cleared {
            tx.execute("DELETE FROM heads", [])?;
        }
        {
            let mut stmt = tx.prepare("INSERT OR REPLACE INTO heads (element_id, hash) VALUES (?1, ?2)")?;
            for (element, hash) in &self.changed {
                stmt.execute(params![element, hash.to_vec()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
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

/// Appends a refused stream to `DIR/rejections.jsonl` (the replica daemon reports the
/// newest), keeping the file bounded.
fn note_rejection(dir: &Path, header: &Header, error: &str) {
    let path = dir.join(REJECTIONS);
    let line = serde_json::json!({"unix_ns": crate::event::now_ns(), "snapshot": header.name, "parent": header.parent, "error": error});
    eprintln!("refused {}: {error}", header.name);
    if std::fs::metadata(&path).map(|m| m.len() > MAX_REJECTIONS_BYTES).unwrap_or(false) {
        if let Ok(old) = durable::read_limited(&path, 4 * MAX_REJECTIONS_BYTES) {
            let keep = &old[old.len() / 2..];
            let start = keep.iter().position(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
            let _ = durable::replace(&path, &keep[start..]);
        }
    }
    let appended = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = appended {
        eprintln!("could not log the refusal in {}: {e}", path.display());
    }
}

/// The newest refusals logged in a replica directory (newest last), at most `n`.
pub fn recent_rejections(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let Ok(bytes) = durable::read_limited(&dir.join(REJECTIONS), 4 * MAX_REJECTIONS_BYTES) else { return Vec::new() };
    let lines: Vec<serde_json::Value> = bytes.split(|b| *b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
