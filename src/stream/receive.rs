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
use crate::anchor::{Signer, Verifier, checkpoint};
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
const SESSION_LOCK: &str = ".receive.lock";
/// The replica's own key, cosigning the heads it verified.
const WITNESS_KEY: &str = ".witness.key";
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
    /// The primary's checkpoint verifier key, pinned from its first signed snapshot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checkpoint_key: String,
}

impl ReplicaState {
    pub fn load(dir: &Path) -> Self {
        durable::read_limited(&dir.join(STATE_FILE), 1 << 20).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    /// [`load`](Self::load), but an existing state file that cannot be read is an error.
    pub fn load_checked(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        match durable::read_limited(&path, 1 << 20) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is damaged; repair or remove it (this replica then trusts the next full send)", path.display())
            }),
            Err(_) if !path.exists() => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
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

/// Where the snapshots of each origin are kept when one replica host receives from many
/// primaries (`DIR/origins/NAME`).
pub const ORIGINS_DIR: &str = "origins";

pub use crate::names::check_origin_name;

/// The receive directory of `origin` under the replica host's directory `base`.
pub fn origin_dir(base: &Path, origin: &str) -> PathBuf {
    base.join(ORIGINS_DIR).join(origin)
}

/// Serves one session until stdin closes. With `origin`, the session writes only into that
/// origin's directory under `dir` (pinned by the restricted key's forced command), and only
/// snapshots whose MANIFEST names that host are taken.
pub fn run(dir: &Path, origin: Option<&str>, limits: Limits) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("making {} private", dir.display()))?;
    // One witness key per replica host, whichever origins it keeps.
    let witness_key = dir.join(WITNESS_KEY);
    let dir = match origin {
        Some(name) => {
            check_origin_name(name)?;
            let origin_dir = origin_dir(dir, name);
            std::fs::create_dir_all(&origin_dir).with_context(|| format!("creating {}", origin_dir.display()))?;
            origin_dir
        }
        None => dir.to_owned(),
    };
    let dir = dir.as_path();
    // One session at a time: a primary that gave up on a slow session must not start a
    // second one that deletes what the first is verifying.
    let _session = crate::lock::DataDirLock::acquire_named(dir, SESSION_LOCK)
        .context("another replica-receive session is running on this directory; try again when it ends")?;
    prepare(dir)?;
    let host = crate::config::Config::default().host();
    let witness = crate::anchor::keys::load_or_create(&witness_key, &format!("{}-witness", checkpoint::origin(&host)))?;
    let mut input = BufReader::new(std::io::stdin());
    let stdout = std::io::stdout();
    loop {
        let Some(line) = read_header_line(&mut input)? else { return Ok(()) };
        let header: Header = serde_json::from_str(line.trim()).context("reading a stream header")?;
        let ack = receive_one(dir, origin, &header, &mut input, limits, &witness)?;
        if let Some(error) = &ack.error {
            note_rejection(dir, &header, error, ack.fault);
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
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| format!("making {} private", dir.display()))?;
    prune(dir, ReplicaState::load(dir).newest.as_deref().unwrap_or(""));
    Ok(())
}

/// Deletes what a refused or broken receive left: the stream's own subvolume (the guard
/// lets a stream create nothing else), when it was not there before.
fn remove_unverified(target: &Path) {
    if !target.exists() {
        return;
    }
    let removed = if btrfs::is_subvolume(target) { snapshot::delete(target) } else { std::fs::remove_dir_all(target).map_err(Into::into) };
    if let Err(e) = removed {
        eprintln!("could not remove {}: {e:#}", target.display());
    }
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

fn receive_one(
    dir: &Path,
    origin: Option<&str>,
    header: &Header,
    input: &mut (impl Read + Send),
    limits: Limits,
    witness: &Signer,
) -> Result<Ack> {
    let mut ack = Ack { name: header.name.clone(), ..Default::default() };
    // What this replica pinned and verified must be read, not defaulted: a state file it
    // cannot read would otherwise let the next stream be trusted on first sight again.
    let mut state = ReplicaState::load_checked(dir)?;
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
    // A state file written before subvolume UUIDs were kept: read it off the subvolume.
    if state.uuid.is_none() {
        state.uuid = state.newest.as_ref().and_then(|n| btrfs::subvolume_facts(&dir.join(n)).ok()).map(|f| f.uuid);
    }
    // Incremental only from the newest verified snapshot (the only one kept).
    let parent = match &header.parent {
        None => None,
        Some(p) if Some(p) == state.newest.as_ref() && dir.join(p).exists() && state.received_uuid.is_some() => {
            state.received_uuid.as_deref().and_then(btrfs::parse_uuid)
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
        remove_unverified(&target);
    }
    // The watchdog bounds the whole of it: receiving and checking.
    let watchdog = Watchdog::start(Duration::from_secs(limits.max_stream_seconds));
    let received = receive_stream(dir, header, expected, input, limits, &watchdog);
    let outcome = received.and_then(|()| {
        if !btrfs::is_subvolume(&target) {
            bail!("the stream did not create its subvolume");
        }
        check(dir, &target, &state, origin, header.parent.is_some())
    });
    watchdog.disarm();
    match outcome {
        Ok(verified) => {
            verified.state.save(dir)?;
            if let Some(text) = &verified.checkpoint {
                ack.cosignature = Some(witness.cosign(text, crate::event::now_unix_s()));
                ack.witness_key = Some(witness.vkey(crate::anchor::COSIGNATURE_ED25519));
            }
            ack.ok = true;
            ack.received_uuid = verified.state.received_uuid.clone();
            ack.head_seq = verified.state.head_seq;
            ack.head_hash = verified.state.head_hash.clone();
        }
        Err(e) => {
            remove_unverified(&target);
            if e.is::<SessionBroken>() {
                return Err(e);
            }
            ack.fault = e.is::<ReplicaFault>();
            ack.error = Some(format!("{e:#}"));
        }
    }
    Ok(ack)
}

/// What `btrfs receive` said went wrong: its `ERROR:` lines (it also says where it chrooted).
fn receive_errors(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("ERROR")).map(|l| l.trim_start_matches("ERROR: ")).collect();
    if errors.is_empty() { text.trim().to_owned() } else { errors.join("; ") }
}

/// What `btrfs receive` says when the replica's own disk is at fault (errno messages).
const LOCAL_FAULTS: &[&str] = &["No space left on device", "Disk quota exceeded", "Input/output error", "Read-only file system"];

/// Why forwarding stopped when `btrfs receive` no longer reads (it died).
const RECEIVE_DIED: &str = "btrfs receive stopped reading";

/// Runs the filtered stream into `btrfs receive` (confined); returns once it succeeded.
fn receive_stream(
    dir: &Path,
    header: &Header,
    expected: Expected,
    input: &mut (impl Read + Send),
    limits: Limits,
    watchdog: &Watchdog,
) -> Result<()> {
    let mut receive = Command::new("btrfs");
    receive.arg("receive").arg("--chroot").arg(dir).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    btrfs::confine_to_nosuid_nodev(&mut receive, &btrfs::mount_point_of(dir)?)?;
    let mut child = receive.spawn().context("running btrfs receive")?;
    let mut to_receive = child.stdin.take().expect("piped");
    watchdog.watch(child.id());
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
        // After btrfs receive died the guard still reads on: a violation later in the stream
        // is a refusal, whatever stopped the receive.
        let receive_died = refused.as_deref() == Some(RECEIVE_DIED);
        if refused.is_some() && !receive_died {
            return;
        }
        let mut checked = Vec::with_capacity(bytes.len() + 64);
        match guard.feed(bytes, &mut checked) {
            Ok(()) => {
                if !receive_died && to.write_all(&checked).is_err() {
                    // btrfs receive died; its own message says why (below).
                    *refused = Some(RECEIVE_DIED.into());
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
    if (refused.is_none() || refused.as_deref() == Some(RECEIVE_DIED))
        && copied.is_ok()
        && let Err(e) = guard.finish()
    {
        refused = Some(e.to_string());
    }
    drop(to_receive);
    if refused.is_some() || copied.is_err() {
        let _ = child.kill();
    }
    let output = child.wait_with_output()?;
    watchdog.watch(0);
    copied.map_err(|e| SessionBroken(format!("{e:#}")))?;
    let receive_failed = || {
        let said = receive_errors(&output.stderr);
        let why = format!("btrfs receive failed: {said}");
        // Only the replica's own trouble is a fault; a stream btrfs itself rejects is refused.
        if LOCAL_FAULTS.iter().any(|f| said.contains(f)) { anyhow::Error::new(ReplicaFault(why)) } else { anyhow::anyhow!(why) }
    };
    match refused {
        Some(why) if why == RECEIVE_DIED => Err(receive_failed()),
        Some(why) => bail!("{why}"),
        None if !output.status.success() => Err(receive_failed()),
        None => Ok(()),
    }
}

/// The replica could not take a stream for a reason of its own (`btrfs receive` failed
/// with a full disk, an I/O error), not because the stream was wrong: said as a fault, not
/// a refusal, and retried by the primary. (A full disk met elsewhere, while checking what
/// arrived, is still reported as a refusal or a broken session.)
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReplicaFault(String);

/// The session itself broke (the sender went away mid-stream): nothing more can be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SessionBroken(String);

/// Ends the session when one stream — received and checked — takes longer than allowed:
/// the read that waits for the sender cannot be interrupted otherwise, nor can a check of a
/// crafted file. It kills `btrfs receive` if it runs; the next session clears what was left.
struct Watchdog {
    done: std::sync::mpsc::Sender<()>,
    child: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Watchdog {
    fn start(limit: Duration) -> Self {
        let (done, rx) = std::sync::mpsc::channel::<()>();
        let child = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let watched = child.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("a stream took longer than {} s; ending the session", limit.as_secs());
                let pid = watched.load(std::sync::atomic::Ordering::SeqCst);
                if pid != 0 {
                    // SAFETY: signalling our own child by its pid.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
                std::process::exit(3);
            }
        });
        Self { done, child }
    }

    /// The child to kill when time runs out (0: none).
    fn watch(&self, pid: u32) {
        self.child.store(pid, std::sync::atomic::Ordering::SeqCst);
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
    /// The verified head's checkpoint text, signed by the primary's pinned key.
    checkpoint: Option<String>,
}

/// The checkpoint of the snapshot's head (`witness/<head_seq>.note`), checked against the
/// primary's key: pinned from the first signed snapshot, required from then on. Snapshots
/// of a primary that never signed carry none (nothing to cosign).
fn signed_checkpoint(staged: &Path, manifest: &Manifest, previous: &ReplicaState) -> Result<Option<String>> {
    let Some(key) = &manifest.checkpoint_key else {
        if !previous.checkpoint_key.is_empty() {
            bail!("the primary no longer signs its checkpoints (this replica pinned {})", previous.checkpoint_key);
        }
        return Ok(None);
    };
    if !previous.checkpoint_key.is_empty() && *key != previous.checkpoint_key {
        bail!(
            "the primary's checkpoint key changed (pinned {}, offered {key}); to accept it, re-enrol (docs/anchoring.md)",
            previous.checkpoint_key
        );
    }
    let (signed, note) = checkpoint::read_note(&checkpoint::note_path(staged, manifest.head_seq))?;
    if signed.text() != note.text {
        bail!("the checkpoint of seq {} is not in canonical form", signed.seq);
    }
    if signed.seq != manifest.head_seq || hex::encode(signed.head) != manifest.head_hash {
        bail!("the checkpoint names seq {} ({}), not the verified head", signed.seq, hex::encode(signed.head));
    }
    let key = Verifier::parse(key)?;
    if key.kind != crate::anchor::NOTE_ED25519 || key.name != signed.origin {
        bail!("the checkpoint's origin {:?} is not the name of the primary's note key {:?}", signed.origin, key.name);
    }
    if key.check(&note)?.is_none() {
        bail!("the checkpoint of seq {} is not signed by the primary's key", signed.seq);
    }
    Ok(Some(note.text))
}

/// Checks a received snapshot.
fn check(dir: &Path, staged: &Path, previous: &ReplicaState, origin: Option<&str>, incremental: bool) -> Result<Verified> {
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
    if let Some(origin) = origin.filter(|o| manifest.host != *o) {
        bail!("the snapshot comes from host {:?}; this session may only write origin {origin:?}", manifest.host);
    }
    if !previous.host.is_empty() && manifest.host != previous.host {
        bail!("the snapshot comes from host {:?}, this replica holds {:?}", manifest.host, previous.host);
    }
    let index = ReceivedIndex::open(staged, &manifest)?;
    let mut heads = VerifiedHeads::open(dir)?;
    let parent = previous.newest.as_ref().map(|n| dir.join(n)).filter(|p| p.exists());
    // The element heads must be those of the last verified snapshot (not of one verified
    // but never published); without them, or without the parent, the whole ledger is
    // verified, and must still hold the last verified head.
    let incremental_verification =
        previous.head_seq > 0 && heads.head()? == Some((previous.head_seq, previous.head_hash.clone())) && parent.is_some();
    if incremental_verification {
        verify_from(&parent.expect("checked above"), staged, previous, &manifest, &mut heads, &mut |r| index.check_row(r))?;
    } else {
        heads.clear();
        verify_whole(staged, &manifest, previous, &mut heads, &mut |r| index.check_row(r))?;
    }
    ends_at_head(&staged.join("ledger"), manifest.head_seq)?;
    let checkpoint = signed_checkpoint(staged, &manifest, previous)?;
    let since = if previous.model_sha256 == manifest.model_sha256 { previous.vectorized_seq } else { 0 };
    index.check_vectors(since, manifest.seq)?;
    heads.commit(manifest.head_seq, &manifest.head_hash)?;
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
            checkpoint_key: manifest.checkpoint_key.clone().unwrap_or_default(),
        },
        checkpoint,
    })
}

/// The first snapshot a replica takes in (or one whose predecessor's verification state is
/// gone): every record, every chain, up to the MANIFEST; the last verified head among them.
fn verify_whole(
    snapshot: &Path,
    manifest: &Manifest,
    previous: &ReplicaState,
    heads: &mut VerifiedHeads,
    check_new: &mut dyn FnMut(&Record) -> Result<()>,
) -> Result<()> {
    let mut holds_previous_head = previous.head_seq == 0;
    let mut failed = None;
    let outcome = scan(&snapshot.join("ledger"), |r| {
        if r.seq == previous.head_seq && r.hash_hex() == previous.head_hash {
            holds_previous_head = true;
        }
        if r.seq > previous.head_seq && failed.is_none() {
            failed = check_new(r).err();
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Some(damage) = outcome.damage {
        bail!("the received ledger is damaged: {damage}");
    }
    if outcome.torn.is_some() {
        bail!("the received ledger ends in an incomplete record");
    }
    if !holds_previous_head {
        bail!("the received ledger does not hold the last verified head (seq {} {})", previous.head_seq, previous.head_hash);
    }
    if outcome.state.head_seq != manifest.head_seq || hex::encode(outcome.state.head_hash) != manifest.head_hash {
        bail!("MANIFEST says head {} {}, the ledger ends at {}", manifest.head_seq, manifest.head_hash, outcome.state.head_seq);
    }
    for (element, hash) in &outcome.state.element_heads {
        heads.set(element, hash);
    }
    Ok(())
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
    check_new: &mut dyn FnMut(&Record) -> Result<()>,
) -> Result<()> {
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
    cursor
        .read_through(manifest.head_seq, |record| {
            if !chain.element_heads.contains_key(&record.element_id) {
                let head = heads.get(&record.element_id)?.unwrap_or(ZERO_HASH);
                if head != ZERO_HASH {
                    chain.element_heads.insert(record.element_id.clone(), head);
                }
            }
            chain.advance(&record).map_err(|kind| anyhow::anyhow!("the received ledger is damaged at seq {}: {kind}", record.seq))?;
            check_new(&record)
        })
        .context("checking the received ledger")?;
    if chain.head_seq != manifest.head_seq || hex::encode(chain.head_hash) != manifest.head_hash {
        bail!("MANIFEST says head {} {}, the ledger ends at {}", manifest.head_seq, manifest.head_hash, chain.head_seq);
    }
    for (element, hash) in &chain.element_heads {
        heads.set(element, hash);
    }
    Ok(())
}

/// Nothing follows the MANIFEST's head: the last segment ends with that record's line, and
/// no segment starts after it.
fn ends_at_head(ledger: &Path, head_seq: u64) -> Result<()> {
    let segments = list_segments(ledger).with_context(|| format!("listing {}", ledger.display()))?;
    if let Some(after) = segments.iter().find(|s| s.first_seq > head_seq) {
        bail!("the received ledger goes on past the MANIFEST's head {head_seq} ({})", after.path.display());
    }
    let last = crate::ledger::head_seq(ledger)?;
    let ends_with_newline = match segments.last() {
        Some(seg) => {
            let file = crate::ledger::open_segment_file(&seg.path)?;
            let len = file.metadata()?.len();
            let mut byte = [0u8; 1];
            len == 0 || (std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, len - 1).is_ok() && byte[0] == b'\n')
        }
        None => true,
    };
    if last != head_seq || !ends_with_newline {
        bail!("the received ledger goes on past the MANIFEST's head {head_seq}");
    }
    Ok(())
}

/// The received index, opened to check it against the verified ledger: its schema is the
/// data set's own (tables only: a view or a trigger could make a query never return), its
/// rows for new events equal the records, its vectors are well-formed unit vectors.
struct ReceivedIndex {
    index: Index,
    covered: u64,
}

impl ReceivedIndex {
    fn open(snapshot: &Path, manifest: &Manifest) -> Result<Self> {
        let index = Index::open_snapshot(&snapshot.join("index.sqlite"))?;
        let odd: Option<String> = index
            .connection()
            .query_row("SELECT type || ' ' || name FROM sqlite_master WHERE type NOT IN ('table', 'index') LIMIT 1", [], |r| r.get(0))
            .optional()?;
        if let Some(odd) = odd {
            bail!("the received index holds a {odd}");
        }
        for table in ["meta", "events", "elements", "vectors"] {
            let is_table: bool =
                index.connection().prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?.exists([table])?;
            if !is_table {
                bail!("the received index has no table {table}");
            }
        }
        let covered = index.covered_seq()?;
        if covered < manifest.seq {
            bail!("the received index covers seq {covered}, less than the MANIFEST's {}", manifest.seq);
        }
        Ok(Self { index, covered })
    }

    fn check_row(&self, record: &Record) -> Result<()> {
        if record.seq > self.covered {
            return Ok(());
        }
        let row = self.index.event(record.seq)?.with_context(|| format!("the received index lacks event {}", record.seq))?;
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
        Ok(())
    }

    fn check_vectors(&self, since: u64, through: u64) -> Result<()> {
        let mut after = since;
        loop {
            let rows: Vec<(i64, Vec<u8>)> = {
                let mut stmt = self
                    .index
                    .connection()
                    .prepare("SELECT seq, vector FROM vectors WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT 4096")?;
                let rows = stmt.query_map(params![after as i64, through as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let Some(last) = rows.last().map(|(s, _)| *s as u64) else { return Ok(()) };
            for (seq, blob) in rows {
                let v = from_blob(&blob).with_context(|| format!("the received vector of event {seq}"))?;
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if (norm - 1.0).abs() > NORM_TOLERANCE {
                    bail!("the received vector of event {seq} is not a unit vector (norm {norm})");
                }
            }
            after = last;
        }
    }
}

fn parse_hash(text: &str) -> Result<Hash> {
    let mut out = ZERO_HASH;
    hex::decode_to_slice(text, &mut out).with_context(|| format!("a head hash {text:?} on record"))?;
    Ok(out)
}

/// Every element's newest verified record hash, kept in `DIR/.verified.sqlite` so a later
/// snapshot's element chains are checked from where the last one ended (a receive costs
/// what arrived, not the history), with the ledger head they belong to, written in the same
/// transaction (heads of a snapshot verified but never published are not mistaken for the
/// published one's). Changes are written only when the snapshot is accepted.
struct VerifiedHeads {
    conn: Connection,
    changed: HashMap<String, Hash>,
    cleared: bool,
}

impl VerifiedHeads {
    fn open(dir: &Path) -> Result<Self> {
        let conn = Connection::open(dir.join(VERIFIED_DB))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE IF NOT EXISTS heads (element_id TEXT PRIMARY KEY, hash BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);",
        )?;
        Ok(Self { conn, changed: HashMap::new(), cleared: false })
    }

    /// The ledger head these element heads belong to.
    fn head(&self) -> Result<Option<(u64, String)>> {
        Ok(self
            .conn
            .query_row("SELECT seq, hash FROM head WHERE id = 1", [], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
            .optional()?)
    }

    fn clear(&mut self) {
        self.cleared = true;
        self.changed.clear();
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

    fn commit(mut self, head_seq: u64, head_hash: &str) -> Result<()> {
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
        tx.execute("INSERT OR REPLACE INTO head (id, seq, hash) VALUES (1, ?1, ?2)", params![head_seq as i64, head_hash])?;
        tx.commit()?;
        Ok(())
    }
}

/// Keeps only `keep` (the parent the next incremental needs; "" keeps nothing).
fn prune(dir: &Path, keep: &str) {
    for (_, path) in snapshot::list(dir) {
        if path.file_name().map(|n| n != keep).unwrap_or(false)
            && let Err(e) = snapshot::delete(&path)
        {
            eprintln!("could not prune {}: {e:#}", path.display());
        }
    }
}

/// Appends a refused stream to `DIR/rejections.jsonl` (the replica daemon reports the
/// newest), keeping the file bounded.
fn note_rejection(dir: &Path, header: &Header, error: &str, fault: bool) {
    let path = dir.join(REJECTIONS);
    // `fault`: not taken for the replica's own trouble (a full disk), not a refusal.
    let line = serde_json::json!({"unix_ns": crate::event::now_ns(), "snapshot": header.name, "parent": header.parent, "error": error, "fault": fault});
    eprintln!("{} {}: {error}", if fault { "could not take" } else { "refused" }, header.name);
    if std::fs::metadata(&path).map(|m| m.len() > MAX_REJECTIONS_BYTES).unwrap_or(false)
        && let Ok(old) = durable::read_limited(&path, 4 * MAX_REJECTIONS_BYTES)
    {
        let keep = &old[old.len() / 2..];
        let start = keep.iter().position(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let _ = durable::replace(&path, &keep[start..]);
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
