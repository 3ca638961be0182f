//! A replica that a compromised primary cannot take over: hostile send streams made with
//! real `btrfs send` from crafted subvolumes on a real Btrfs — a setuid file, a device node,
//! a symbolic link out, a stream named like the newest verified snapshot, a forged index row,
//! a rewritten and re-sealed history — are each refused by `replica-receive`; the verified
//! copy stays intact and served, and a legitimate stream is still taken afterwards.

mod common;

use common::{BtrfsMount, model_config, plain_config, run_ok};
use ovs_port_agent::engine::Engine;
use ovs_port_agent::event::{NewEvent, Priority};
use ovs_port_agent::layout::Layout;
use ovs_port_agent::ledger::record::encode_line;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// `replica-receive` running on its directory, fed framed streams.
struct Receiver {
    child: Child,
    acks: BufReader<std::process::ChildStdout>,
}

impl Receiver {
    fn start(dir: &Path) -> Self {
        let mut child = Command::new(common::agent_bin())
            .args(["replica-receive", "--dir"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let acks = BufReader::new(child.stdout.take().unwrap());
        Self { child, acks }
    }

    /// Sends `snapshot` (incremental from `parent` when given) announced as `name`.
    fn send(&mut self, name: &str, snapshot: &Path, parent: Option<(&str, &Path)>) -> Value {
        let mut send = Command::new("btrfs");
        send.args(["send", "-q"]);
        if let Some((_, p)) = parent {
            send.arg("-p").arg(p);
        }
        let out = send.arg(snapshot).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdin = self.child.stdin.as_mut().unwrap();
        let header = json!({"name": name, "parent": parent.map(|(n, _)| n)});
        writeln!(stdin, "{header}").unwrap();
        for chunk in out.stdout.chunks(65536) {
            stdin.write_all(&(chunk.len() as u32).to_be_bytes()).unwrap();
            stdin.write_all(chunk).unwrap();
        }
        stdin.write_all(&0u32.to_be_bytes()).unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        self.acks.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad ack {line:?}: {e}"))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn state(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("replica-state.json")).unwrap()).unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A writable copy of a snapshot (to be tampered with), then a read-only snapshot of it at
/// `target`, which is what gets sent.
fn crafted(from: &Path, work: &Path, target: &Path, tamper: impl FnOnce(&Path)) -> PathBuf {
    run_ok(Command::new("btrfs").args(["subvolume", "snapshot"]).arg(from).arg(work));
    tamper(work);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    run_ok(Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(work).arg(target));
    target.to_owned()
}

fn event(i: usize) -> NewEvent {
    NewEvent::new("test", &format!("interface:eth{}", i % 3), "link.down", Priority::Critical, json!({"n": i}))
        .with_summary(format!("eth{} lost carrier ({i})", i % 3))
}

#[test]
fn hostile_streams_are_refused_and_the_verified_copy_stays() {
    let fs = BtrfsMount::new(600);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut config = plain_config();
    config.embedding = model_config();
    config.agent.require_btrfs = true;
    let layout = Layout::state(&fs.path().join("primary"));
    let snaps = layout.snapshots_dir();
    let engine = Engine::open(&layout, &config).unwrap();
    let signer = std::sync::Arc::new(ovs_port_agent::anchor::Signer::new("primary-host/ovs-port-agent", [3; 32]).unwrap());
    let take = |first: usize, n: usize| {
        rt.block_on(async {
            let records = engine.record((first..first + n).map(event).collect()).await.unwrap();
            engine.wait_vectorized(records.last().unwrap().seq).await.unwrap();
            let taken = ovs_port_agent::stream::snapshot::take(&engine, &snaps, 0, "primary-host".into(), signer.clone()).await.unwrap();
            taken.unwrap().1
        })
    };
    let first = take(0, 5);
    let rep = fs.path().join("replica");
    let mut receiver = Receiver::start(&rep);
    let ack = receiver.send("data@5", &first, None);
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(
        ack["cosignature"].as_str().is_some_and(|c| c.starts_with("\u{2014} ")) && ack["witness_key"].is_string(),
        "the replica cosigns what it verified: {ack}"
    );
    let verified = state(&rep);
    let work = fs.path().join("work");
    std::fs::create_dir(&work).unwrap();

    // Each hostile stream is refused, and nothing of it stays on the replica.
    let refused = |receiver: &mut Receiver, name: &str, snapshot: &Path, parent: Option<(&str, &Path)>, why: &str| {
        let ack = receiver.send(name, snapshot, parent);
        assert_eq!(ack["ok"], false, "{why}: {ack}");
        let error = ack["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(why), "expected {why:?}, got {error:?}");
        assert_eq!(entries(&rep).iter().filter(|n| n.starts_with("data@")).collect::<Vec<_>>(), vec!["data@5"], "after {why}");
        assert_eq!(state(&rep), verified, "the verified state is unchanged after {why}");
    };
    let setuid = crafted(&first, &work.join("setuid"), &fs.path().join("evil1/data@6"), |w| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(w.join("MANIFEST"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    });
    refused(&mut receiver, "data@6", &setuid, None, "setuid");
    let device = crafted(&first, &work.join("device"), &fs.path().join("evil2/data@6"), |w| {
        run_ok(Command::new("mknod").arg(w.join("ledger/00000000000000000099.jsonl")).args(["b", "7", "0"]));
    });
    refused(&mut receiver, "data@6", &device, None, "device node");
    let link = crafted(&first, &work.join("link"), &fs.path().join("evil3/data@6"), |w| {
        std::os::unix::fs::symlink("/etc/shadow", w.join("ledger/00000000000000000098.jsonl")).unwrap();
    });
    refused(&mut receiver, "data@6", &link, None, "symbolic link");
    // A stream named like the newest verified snapshot would replace it: refused unread.
    refused(&mut receiver, "data@5", &setuid, None, "not newer");

    // A legitimate next snapshot, then forged copies of it sent in its place.
    let second = take(5, 5);
    let forged_row = crafted(&second, &work.join("row"), &fs.path().join("evil4/data@10"), |w| {
        let db = rusqlite::Connection::open(w.join("index.sqlite")).unwrap();
        db.execute("UPDATE events SET summary = 'all is well' WHERE seq = 8", []).unwrap();
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    });
    refused(&mut receiver, "data@10", &forged_row, Some(("data@5", &first)), "does not match the ledger");
    let rewritten = crafted(&second, &work.join("history"), &fs.path().join("evil5/data@10"), |w| {
        // Edit the first record and re-seal both chains and the MANIFEST: the ledger alone
        // verifies, but it no longer holds what the replica verified.
        let seg = std::fs::read_dir(w.join("ledger")).unwrap().next().unwrap().unwrap().path();
        let mut records: Vec<ovs_port_agent::ledger::Record> =
            std::fs::read_to_string(&seg).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        records[0].summary = "nothing happened".into();
        let mut heads = std::collections::HashMap::new();
        let mut prev = [0u8; 32];
        let mut out = Vec::new();
        for r in &mut records {
            r.prev = prev;
            r.element_prev = *heads.get(&r.element_id).unwrap_or(&[0u8; 32]);
            let (line, hash) = encode_line(&r.body());
            r.hash = hash;
            prev = hash;
            heads.insert(r.element_id.clone(), hash);
            out.extend_from_slice(&line);
        }
        std::fs::write(&seg, out).unwrap();
        let mut manifest: Value = serde_json::from_slice(&std::fs::read(w.join("MANIFEST")).unwrap()).unwrap();
        manifest["head_hash"] = Value::from(hex::encode(prev));
        std::fs::write(w.join("MANIFEST"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    });
    let (code, out, _) = common::agent(&["verify", "--data-dir", rewritten.to_str().unwrap()]);
    assert_eq!(code, 0, "the re-sealed ledger verifies on its own: {out}");
    refused(&mut receiver, "data@10", &rewritten, Some(("data@5", &first)), "changed within its verified part");

    // The genuine stream is still taken, and the good copy was never lost on the way.
    let ack = receiver.send("data@10", &second, Some(("data@5", &first)));
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(state(&rep)["head_seq"], 10);
    let (code, out, _) = common::agent(&["verify", "--data-dir", rep.join("data@10").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let rejections = std::fs::read_to_string(rep.join("rejections.jsonl")).unwrap();
    assert_eq!(rejections.lines().count(), 6, "every refusal is logged: {rejections}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&rep).unwrap().permissions().mode() & 0o777, 0o700);
    drop(receiver);
    drop(engine);
}

#[test]
fn streams_are_capped_in_bytes_and_time() {
    let fs = BtrfsMount::new(300);
    let src = fs.path().join("src");
    run_ok(Command::new("btrfs").args(["subvolume", "create"]).arg(&src));
    std::fs::write(src.join("MANIFEST"), vec![b' '; 200_000]).unwrap();
    std::fs::create_dir(fs.path().join("snaps")).unwrap();
    let snap = fs.path().join("snaps/data@1");
    run_ok(Command::new("btrfs").args(["subvolume", "snapshot", "-r"]).arg(&src).arg(&snap));

    // Bytes: a stream larger than allowed is refused (and read to its end, so the session
    // stays in step).
    let rep = fs.path().join("rep");
    let mut child = Command::new(common::agent_bin())
        .args(["replica-receive", "--max-stream-bytes", "100000", "--dir"])
        .arg(&rep)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut receiver = Receiver { acks: BufReader::new(child.stdout.take().unwrap()), child };
    let ack = receiver.send("data@1", &snap, None);
    assert_eq!(ack["ok"], false);
    assert!(ack["error"].as_str().unwrap().contains("larger than the 100000 bytes allowed"), "{ack}");
    assert!(!rep.join("data@1").exists());
    drop(receiver);

    // Time: a sender that stops in the middle of a stream loses its session when the limit
    // passes; nothing is acknowledged, and the next session clears what was left.
    let mut child = Command::new(common::agent_bin())
        .args(["replica-receive", "--max-stream-seconds", "1", "--dir"])
        .arg(&rep)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = Command::new("btrfs").args(["send", "-q"]).arg(&snap).output().unwrap().stdout;
    // Kept open (not closed, as `wait` would close it) while the receiver waits for more.
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", json!({"name": "data@1", "parent": null})).unwrap();
    let half = &stream[..stream.len() / 2];
    stdin.write_all(&(half.len() as u32).to_be_bytes()).unwrap();
    stdin.write_all(half).unwrap();
    stdin.flush().unwrap();
    let started = std::time::Instant::now();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(status.code(), Some(3), "the watchdog ended the session: {err}");
    drop(stdin);
    let out = Command::new(common::agent_bin()).args(["replica-receive", "--dir"]).arg(&rep).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success());
    assert!(!rep.join("data@1").exists(), "the partial receive was cleared");
}
