//! A filter in front of `btrfs receive`: a send stream may come from a compromised primary,
//! and `btrfs receive` applies what a stream says (device nodes, symbolic links, owners,
//! setuid bits, extended attributes, clones from anywhere on the file system, encoded
//! writes decompressed in user space) with few checks of its own. Every command is parsed
//! here before it reaches `btrfs receive` and refused unless a stream of our data set could
//! contain it: one subvolume named as announced, regular files and directories only, plain
//! modes, owned by root, paths inside the subvolume, clones only from the subvolume itself
//! or the verified parent. Protocol version 1 only (what `btrfs send` writes by default).
//!
//! Format (btrfs-progs `kernel-shared/send.h`): `"btrfs-stream\0"` and a little-endian u32
//! version; then commands, each a header (u32 length of the body, u16 command, u32 crc)
//! and a body of attributes (u16 type, u16 length, value).

use std::fmt;

const MAGIC: &[u8; 13] = b"btrfs-stream\0";
const STREAM_HEADER: usize = 17;
const CMD_HEADER: usize = 10;
/// No v1 command is larger than this (btrfs-progs `BTRFS_SEND_BUF_SIZE_V1`).
const MAX_COMMAND: usize = 64 * 1024;

mod cmd {
    pub const SUBVOL: u16 = 1;
    pub const SNAPSHOT: u16 = 2;
    pub const MKFILE: u16 = 3;
    pub const MKDIR: u16 = 4;
    pub const MKNOD: u16 = 5;
    pub const MKFIFO: u16 = 6;
    pub const MKSOCK: u16 = 7;
    pub const SYMLINK: u16 = 8;
    pub const RENAME: u16 = 9;
    pub const LINK: u16 = 10;
    pub const UNLINK: u16 = 11;
    pub const RMDIR: u16 = 12;
    pub const SET_XATTR: u16 = 13;
    pub const REMOVE_XATTR: u16 = 14;
    pub const WRITE: u16 = 15;
    pub const CLONE: u16 = 16;
    pub const TRUNCATE: u16 = 17;
    pub const CHMOD: u16 = 18;
    pub const CHOWN: u16 = 19;
    pub const UTIMES: u16 = 20;
    pub const END: u16 = 21;
    pub const UPDATE_EXTENT: u16 = 22;
}

mod attr {
    pub const UUID: u16 = 1;
    pub const MODE: u16 = 5;
    pub const UID: u16 = 6;
    pub const GID: u16 = 7;
    pub const PATH: u16 = 15;
    pub const PATH_TO: u16 = 16;
    pub const PATH_LINK: u16 = 17;
    pub const CLONE_UUID: u16 = 20;
    pub const CLONE_PATH: u16 = 22;
    /// The highest attribute of protocol version 1.
    pub const MAX_V1: u16 = 24;
}

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "send stream refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// What a stream must be.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The subvolume the stream creates (`data@S`, as the session header announced).
    pub name: String,
    /// For an incremental stream: the received UUID of the verified parent on this replica
    /// (the parent's UUID on the primary), which the SNAPSHOT command must name.
    pub parent: Option<[u8; 16]>,
}

enum Part {
    StreamHeader,
    CommandHeader,
    Body { command: u16, len: usize },
}

/// Checks a send stream as it passes, a command at a time.
pub struct Guard {
    expected: Expected,
    part: Part,
    pending: Vec<u8>,
    /// The UUID the stream gives its own subvolume (clones may come from it).
    own_uuid: Option<[u8; 16]>,
    ended: bool,
    commands: u64,
}

impl Guard {
    pub fn new(expected: Expected) -> Self {
        Self { expected, part: Part::StreamHeader, pending: Vec::with_capacity(CMD_HEADER), own_uuid: None, ended: false, commands: 0 }
    }

    /// Takes the next bytes of the stream; appends to `out` what has been checked (whole
    /// commands), or refuses the stream.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Refused> {
        while !input.is_empty() {
            let want = match self.part {
                Part::StreamHeader => STREAM_HEADER,
                Part::CommandHeader => CMD_HEADER,
                Part::Body { len, .. } => CMD_HEADER + len,
            };
            let take = (want - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < want {
                return Ok(());
            }
            match self.part {
                Part::StreamHeader => {
                    if &self.pending[..13] != MAGIC {
                        return refuse("not a btrfs send stream");
                    }
                    let version = u32::from_le_bytes(self.pending[13..17].try_into().expect("4 bytes"));
                    if version != 1 {
                        return refuse(format!("send stream version {version}; only version 1 is taken"));
                    }
                    out.extend_from_slice(&self.pending);
                    self.pending.clear();
                    self.part = Part::CommandHeader;
                }
                Part::CommandHeader => {
                    if self.ended {
                        return refuse("commands after the end of the stream");
                    }
                    let len = u32::from_le_bytes(self.pending[..4].try_into().expect("4 bytes")) as usize;
                    let command = u16::from_le_bytes(self.pending[4..6].try_into().expect("2 bytes"));
                    if len > MAX_COMMAND {
                        return refuse(format!("a command of {len} bytes (at most {MAX_COMMAND})"));
                    }
                    self.part = Part::Body { command, len };
                    if len == 0 {
                        continue;
                    }
                }
                Part::Body { command, .. } => self.complete(command, out)?,
            }
        }
        // A zero-length body completes with its header.
        if let Part::Body { command, len: 0 } = self.part {
            self.complete(command, out)?;
        }
        Ok(())
    }

    /// Checks the buffered command and passes it on.
    fn complete(&mut self, command: u16, out: &mut Vec<u8>) -> Result<(), Refused> {
        let mut buffered = std::mem::take(&mut self.pending);
        self.check(command, &buffered[CMD_HEADER..])?;
        out.extend_from_slice(&buffered);
        buffered.clear();
        self.pending = buffered;
        self.part = Part::CommandHeader;
        self.commands += 1;
        Ok(())
    }

    /// The stream is over: it must have ended with END after a complete command.
    pub fn finish(&self) -> Result<(), Refused> {
        if !self.ended || !self.pending.is_empty() {
            return refuse("the stream stopped before its end");
        }
        Ok(())
    }

    fn check(&mut self, command: u16, body: &[u8]) -> Result<(), Refused> {
        let attrs = Attrs::parse(body)?;
        let first = self.commands == 0;
        match command {
            cmd::SUBVOL | cmd::SNAPSHOT => {
                if !first {
                    return refuse("a second subvolume in one stream");
                }
                let path = attrs.path(attr::PATH)?;
                if path != self.expected.name {
                    return refuse(format!("the stream creates {path:?}, not the announced {:?}", self.expected.name));
                }
                self.own_uuid = Some(attrs.uuid(attr::UUID)?);
                match (command, self.expected.parent) {
                    (cmd::SUBVOL, None) => {}
                    (cmd::SNAPSHOT, Some(parent)) if attrs.uuid(attr::CLONE_UUID)? == parent => {}
                    (cmd::SNAPSHOT, Some(_)) => return refuse("the stream builds on another parent than the verified one"),
                    (cmd::SNAPSHOT, None) => return refuse("an incremental stream where a full one was announced"),
                    _ => return refuse("a full stream where an incremental one was announced"),
                }
                return Ok(());
            }
            _ if first => return refuse("the stream does not start with its subvolume"),
            cmd::MKFILE | cmd::MKDIR | cmd::UNLINK | cmd::RMDIR | cmd::WRITE | cmd::TRUNCATE => {
                attrs.path(attr::PATH)?;
            }
            cmd::UTIMES => {
                attrs.path_or_root(attr::PATH)?;
            }
            cmd::RENAME => {
                attrs.path(attr::PATH)?;
                attrs.path(attr::PATH_TO)?;
            }
            cmd::LINK => {
                attrs.path(attr::PATH)?;
                attrs.path(attr::PATH_LINK)?;
            }
            cmd::CLONE => {
                attrs.path(attr::PATH)?;
                attrs.path(attr::CLONE_PATH)?;
                let from = attrs.uuid(attr::CLONE_UUID)?;
                if Some(from) != self.own_uuid && Some(from) != self.expected.parent {
                    return refuse("a clone from outside the stream's subvolume and its parent");
                }
            }
            cmd::CHMOD => {
                attrs.path_or_root(attr::PATH)?;
                let mode = attrs.u64(attr::MODE)?;
                if mode & 0o7002 != 0 {
                    return refuse(format!("mode {mode:o} (setuid, setgid, sticky or world-writable)"));
                }
            }
            cmd::CHOWN => {
                attrs.path_or_root(attr::PATH)?;
                let (uid, gid) = (attrs.u64(attr::UID)?, attrs.u64(attr::GID)?);
                if uid != 0 || gid != 0 {
                    return refuse(format!("owner {uid}:{gid} (the data set belongs to root)"));
                }
            }
            cmd::END => self.ended = true,
            cmd::MKNOD => return refuse("a device node"),
            cmd::MKFIFO => return refuse("a FIFO"),
            cmd::MKSOCK => return refuse("a socket"),
            cmd::SYMLINK => return refuse("a symbolic link"),
            cmd::SET_XATTR | cmd::REMOVE_XATTR => return refuse("extended attributes"),
            cmd::UPDATE_EXTENT => return refuse("a stream without data"),
            other => return refuse(format!("command {other}")),
        }
        Ok(())
    }
}

/// A command's attributes.
struct Attrs<'a> {
    items: Vec<(u16, &'a [u8])>,
}

impl<'a> Attrs<'a> {
    fn parse(mut body: &'a [u8]) -> Result<Self, Refused> {
        let mut items = Vec::new();
        while !body.is_empty() {
            if body.len() < 4 {
                return refuse("a truncated attribute");
            }
            let kind = u16::from_le_bytes([body[0], body[1]]);
            let len = u16::from_le_bytes([body[2], body[3]]) as usize;
            if body.len() < 4 + len {
                return refuse("an attribute longer than its command");
            }
            // `btrfs receive` keeps the last of a repeated attribute: what was checked must be
            // what it applies, so a repeat (or an attribute it does not know) is refused.
            if kind == 0 || kind > attr::MAX_V1 {
                return refuse(format!("attribute {kind}"));
            }
            if items.iter().any(|(k, _)| *k == kind) {
                return refuse(format!("attribute {kind} given twice"));
            }
            items.push((kind, &body[4..4 + len]));
            body = &body[4 + len..];
        }
        Ok(Self { items })
    }

    fn get(&self, kind: u16) -> Result<&'a [u8], Refused> {
        self.items.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v).ok_or_else(|| Refused(format!("attribute {kind} missing")))
    }

    /// A path inside the subvolume: relative, no `..`, no empty or NUL parts.
    fn path(&self, kind: u16) -> Result<&'a str, Refused> {
        let raw = self.get(kind)?;
        let path = std::str::from_utf8(raw).map_err(|_| Refused("a path that is not UTF-8".into()))?;
        let bad = path.is_empty()
            || path.starts_with('/')
            || path.contains('\0')
            || path.len() > 4096
            || path.split('/').any(|part| part.is_empty() || part == "..");
        if bad {
            return refuse(format!("the path {path:?}"));
        }
        Ok(path)
    }

    /// A path inside the subvolume, or the empty path naming the subvolume's own root
    /// (`btrfs send` sets the root's owner, mode and times that way).
    fn path_or_root(&self, kind: u16) -> Result<&'a str, Refused> {
        if self.get(kind)?.is_empty() {
            return Ok("");
        }
        self.path(kind)
    }

    fn uuid(&self, kind: u16) -> Result<[u8; 16], Refused> {
        self.get(kind)?.try_into().map_err(|_| Refused("a UUID that is not 16 bytes".into()))
    }

    fn u64(&self, kind: u16) -> Result<u64, Refused> {
        let raw: [u8; 8] = self.get(kind)?.try_into().map_err(|_| Refused("a number that is not 8 bytes".into()))?;
        Ok(u64::from_le_bytes(raw))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A command as `btrfs send` writes it (crc left zero: `btrfs receive` checks it, not us).
    pub fn command(command: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_le_bytes());
            body.extend_from_slice(&(value.len() as u16).to_le_bytes());
            body.extend_from_slice(value);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&command.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn stream(commands: &[Vec<u8>]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&1u32.to_le_bytes());
        for c in commands {
            out.extend_from_slice(c);
        }
        out
    }

    const OWN: [u8; 16] = [7; 16];

    fn subvol(name: &str) -> Vec<u8> {
        command(cmd::SUBVOL, &[(attr::PATH, name.as_bytes()), (attr::UUID, &OWN), (2, &[0; 8])])
    }

    fn run(bytes: &[u8], expected: Expected) -> Result<Vec<u8>, Refused> {
        let mut guard = Guard::new(expected);
        let mut out = Vec::new();
        // Fed in awkward pieces, as chunks arrive.
        for piece in bytes.chunks(7) {
            guard.feed(piece, &mut out)?;
        }
        guard.finish()?;
        Ok(out)
    }

    fn full(name: &str) -> Expected {
        Expected { name: name.into(), parent: None }
    }

    #[test]
    fn an_ordinary_stream_passes_unchanged() {
        let bytes = stream(&[
            subvol("data@5"),
            command(cmd::MKDIR, &[(attr::PATH, b"ledger")]),
            command(cmd::MKFILE, &[(attr::PATH, b"ledger/00000000000000000001.jsonl")]),
            command(cmd::WRITE, &[(attr::PATH, b"ledger/00000000000000000001.jsonl"), (18, &[0; 8]), (19, b"{}\n")]),
            command(cmd::CHOWN, &[(attr::PATH, b"ledger"), (attr::UID, &[0; 8]), (attr::GID, &[0; 8])]),
            command(cmd::CHMOD, &[(attr::PATH, b"ledger"), (attr::MODE, &0o755u64.to_le_bytes())]),
            command(cmd::CLONE, &[(attr::PATH, b"a"), (attr::CLONE_UUID, &OWN), (attr::CLONE_PATH, b"b")]),
            command(cmd::UTIMES, &[(attr::PATH, b""), (9, &[0; 12])]),
            command(cmd::END, &[]),
        ]);
        assert_eq!(run(&bytes, full("data@5")).unwrap(), bytes);
    }

    #[test]
    fn hostile_commands_are_refused() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (command(cmd::MKNOD, &[(attr::PATH, b"sda"), (attr::MODE, &0o60600u64.to_le_bytes()), (8, &[0; 8])]), "device node"),
            (command(cmd::SYMLINK, &[(attr::PATH, b"ledger"), (attr::PATH_LINK, b"/etc")]), "symbolic link"),
            (command(cmd::MKFIFO, &[(attr::PATH, b"f")]), "FIFO"),
            (command(cmd::CHMOD, &[(attr::PATH, b"sh"), (attr::MODE, &0o4755u64.to_le_bytes())]), "setuid"),
            (command(cmd::CHOWN, &[(attr::PATH, b"x"), (attr::UID, &1000u64.to_le_bytes()), (attr::GID, &[0; 8])]), "owner"),
            (command(cmd::WRITE, &[(attr::PATH, b"../../etc/passwd"), (18, &[0; 8]), (19, b"x")]), "path"),
            (command(cmd::MKFILE, &[(attr::PATH, b"/etc/cron.d/x")]), "path"),
            (command(cmd::SET_XATTR, &[(attr::PATH, b"x"), (13, b"security.capability"), (14, b"..")]), "extended attributes"),
            (command(cmd::CLONE, &[(attr::PATH, b"a"), (attr::CLONE_UUID, &[9; 16]), (attr::CLONE_PATH, b"b")]), "clone"),
            (command(25, &[]), "command 25"),
            (command(cmd::WRITE, &[(attr::PATH, b"ledger/x"), (attr::PATH, b"../replica-state.json"), (19, b"{}")]), "given twice"),
            (command(cmd::MKFILE, &[(attr::PATH, b"x"), (27, b"")]), "attribute 27"),
        ];
        for (bad, why) in cases {
            let bytes = stream(&[subvol("data@5"), bad, command(cmd::END, &[])]);
            let err = run(&bytes, full("data@5")).unwrap_err();
            assert!(err.0.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn the_subvolume_and_parent_must_be_the_announced_ones() {
        let end = command(cmd::END, &[]);
        assert!(run(&stream(&[subvol("data@9"), end.clone()]), full("data@5")).unwrap_err().0.contains("not the announced"));
        let parent = [3u8; 16];
        let snap = |clone: [u8; 16]| command(cmd::SNAPSHOT, &[(attr::PATH, b"data@6"), (attr::UUID, &OWN), (attr::CLONE_UUID, &clone)]);
        let incremental = Expected { name: "data@6".into(), parent: Some(parent) };
        run(&stream(&[snap(parent), end.clone()]), incremental.clone()).unwrap();
        assert!(run(&stream(&[snap([4; 16]), end.clone()]), incremental.clone()).unwrap_err().0.contains("another parent"));
        assert!(run(&stream(&[subvol("data@6"), end.clone()]), incremental).is_err(), "full where incremental announced");
        assert!(run(&stream(&[subvol("data@5"), subvol("data@5"), end.clone()]), full("data@5")).is_err(), "two subvolumes");
        let mut cut = stream(&[subvol("data@5"), end]);
        cut.truncate(cut.len() - 3);
        assert!(run(&cut, full("data@5")).unwrap_err().0.contains("before its end"));
        let mut v2 = stream(&[]);
        v2[13] = 2;
        assert!(run(&v2, full("data@5")).unwrap_err().0.contains("version 2"));
    }
}
