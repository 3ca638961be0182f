//! Reads a ledger from its segments and checks every link: each line's hash, the `seq`
//! order, the global `prev` chain and every element's `element_prev` chain.

use super::record::{Hash, LineError, Record, ZERO_HASH, decode_line};
use super::segment::{SegmentFile, list_segments};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

/// What is wrong at the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DamageKind {
    /// The line is not a complete record (invalid JSON, a missing or mistyped field).
    Malformed { reason: String },
    /// The record's bytes were changed after it was written.
    HashMismatch { stored: String, computed: String },
    /// The hash matches but the body is not canonical (so it was not written by a writer
    /// that follows the format; its hash proves nothing about the canonical bytes).
    NotCanonical { reason: String },
    /// An empty segment file anywhere but at the end (or one named for another seq).
    EmptySegment,
    /// The record carries another `seq` than its position (a line removed, reordered or inserted).
    SeqMismatch { found: u64 },
    /// `prev` does not name the previous record's hash.
    PrevMismatch { expected: String, found: String },
    /// `element_prev` does not name the previous record of the same element.
    ElementChainBroken { element_id: String, expected: String, found: String },
    /// A segment's name does not match the first record in it.
    SegmentMisnamed { named_first_seq: u64 },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { reason } => write!(f, "not a valid record: {reason}"),
            Self::HashMismatch { stored, computed } => {
                write!(f, "content changed: stored hash {stored}, content hashes to {computed}")
            }
            Self::NotCanonical { reason } => write!(f, "body {reason}"),
            Self::EmptySegment => write!(f, "an empty segment where records must be"),
            Self::SeqMismatch { found } => write!(f, "record carries seq {found} (records removed or reordered)"),
            Self::PrevMismatch { expected, found } => {
                write!(f, "prev is {found}, but the previous record's hash is {expected}")
            }
            Self::ElementChainBroken { element_id, expected, found } => {
                write!(f, "element chain of {element_id} broken: element_prev is {found}, expected {expected}")
            }
            Self::SegmentMisnamed { named_first_seq } => {
                write!(f, "segment is named for seq {named_first_seq} but does not start there")
            }
        }
    }
}

/// The first bad record of a ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// The `seq` the bad record should have had (its position in the chain).
    pub seq: u64,
    pub segment: PathBuf,
    /// 1-based line number inside the segment.
    pub line: u64,
    #[serde(flatten)]
    pub kind: DamageKind,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {} ({} line {}): {}", self.seq, self.segment.display(), self.line, self.kind)
    }
}

/// An incomplete last record: the bytes after the last complete line of the last segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// The `seq` the incomplete record would have had.
    pub seq: u64,
    pub segment: PathBuf,
    /// Where the complete records end; truncating here repairs the ledger.
    pub offset: u64,
    pub bytes: u64,
}

/// The chain state after the last good record.
#[derive(Debug, Clone, Default)]
pub struct ChainState {
    pub head_seq: u64,
    pub head_hash: Hash,
    /// Each element's newest record hash.
    pub element_heads: HashMap<String, Hash>,
}

impl ChainState {
    pub fn new() -> Self {
        Self { head_seq: 0, head_hash: ZERO_HASH, element_heads: HashMap::new() }
    }

    /// The `element_prev` a new record of this element must carry.
    pub fn element_prev(&self, element_id: &str) -> Hash {
        self.element_heads.get(element_id).copied().unwrap_or(ZERO_HASH)
    }

    /// Checks that `record` is the next link, then advances over it.
    pub fn advance(&mut self, record: &Record) -> Result<(), DamageKind> {
        if record.seq != self.head_seq + 1 {
            return Err(DamageKind::SeqMismatch { found: record.seq });
        }
        if record.prev != self.head_hash {
            return Err(DamageKind::PrevMismatch { expected: hex::encode(self.head_hash), found: hex::encode(record.prev) });
        }
        let expected = self.element_prev(&record.element_id);
        if record.element_prev != expected {
            return Err(DamageKind::ElementChainBroken {
                element_id: record.element_id.clone(),
                expected: hex::encode(expected),
                found: hex::encode(record.element_prev),
            });
        }
        self.head_seq = record.seq;
        self.head_hash = record.hash;
        match self.element_heads.get_mut(&record.element_id) {
            Some(head) => *head = record.hash,
            None => {
                self.element_heads.insert(record.element_id.clone(), record.hash);
            }
        }
        Ok(())
    }
}

/// The result of reading a whole ledger.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    pub state: ChainState,
    /// The first bad record; nothing after it was checked.
    pub damage: Option<Damage>,
    /// An incomplete last record (only ever in the last segment, and only without damage).
    pub torn: Option<TornTail>,
    /// The segment new records go to and the length of its valid part.
    pub tail_segment: Option<(SegmentFile, u64)>,
    pub segments: usize,
}

impl ScanOutcome {
    pub fn is_intact(&self) -> bool {
        self.damage.is_none() && self.torn.is_none()
    }
}

/// The longest line accepted: far above any record the writer makes (its details are
/// limited to 64 KiB), low enough that a damaged or planted file cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Reads every segment of `dir` in order, a line at a time (memory stays bounded by the
/// longest line, not the segment), checks every record and calls `visit` on each good one.
/// Stops at the first damage.
pub fn scan(dir: &Path, mut visit: impl FnMut(&Record)) -> io::Result<ScanOutcome> {
    let segments = list_segments(dir)?;
    let mut state = ChainState::new();
    let mut outcome = ScanOutcome { state: ChainState::new(), damage: None, torn: None, tail_segment: None, segments: segments.len() };
    let count = segments.len();
    let mut line = Vec::new();
    for (index, segment) in segments.into_iter().enumerate() {
        let is_last = index + 1 == count;
        let mut reader = BufReader::with_capacity(1 << 20, open_segment_file(&segment.path)?);
        let mut line_no = 0u64;
        let mut offset = 0u64;
        let mut damage_kind = None;
        loop {
            let read = read_line(&mut reader, &mut line)?;
            if read.bytes == 0 {
                break;
            }
            let expected_seq = state.head_seq + 1;
            if !read.complete {
                if is_last && line_no == 0 && segment.first_seq != expected_seq {
                    // A torn first record in a segment named for another seq: not a crash in
                    // a rotation (that names the segment for the record it was writing).
                    damage_kind = Some((expected_seq, 1, DamageKind::SegmentMisnamed { named_first_seq: segment.first_seq }));
                } else if is_last {
                    outcome.torn = Some(TornTail { seq: expected_seq, segment: segment.path.clone(), offset, bytes: read.bytes });
                } else {
                    damage_kind = Some((
                        expected_seq,
                        line_no + 1,
                        DamageKind::Malformed { reason: "the segment ends in the middle of a record".into() },
                    ));
                }
                break;
            }
            line_no += 1;
            let checked = if read.oversized {
                Err(DamageKind::Malformed { reason: format!("a line of {} bytes, more than the {MAX_LINE_BYTES} allowed", read.bytes) })
            } else {
                decode_line(&line)
                    .map_err(|e| match e {
                        LineError::Malformed(reason) => DamageKind::Malformed { reason },
                        LineError::HashMismatch { stored, computed } => DamageKind::HashMismatch { stored, computed },
                        LineError::NotCanonical(reason) => DamageKind::NotCanonical { reason },
                    })
                    .and_then(|record| {
                        if line_no == 1 && record.seq != segment.first_seq && record.seq == expected_seq {
                            return Err(DamageKind::SegmentMisnamed { named_first_seq: segment.first_seq });
                        }
                        state.advance(&record).map(|()| record)
                    })
            };
            match checked {
                Ok(record) => visit(&record),
                Err(kind) => {
                    damage_kind = Some((expected_seq, line_no, kind));
                    break;
                }
            }
            offset += read.bytes;
        }
        // An empty segment is a rotation cut short by a crash: allowed only as the last one,
        // named for the next seq (the writer then appends to it).
        let empty = line_no == 0 && outcome.torn.is_none();
        if empty && damage_kind.is_none() && (!is_last || segment.first_seq != state.head_seq + 1) {
            damage_kind = Some((state.head_seq + 1, 1, DamageKind::EmptySegment));
        }
        if let Some((seq, line, kind)) = damage_kind {
            outcome.damage = Some(Damage { seq, segment: segment.path.clone(), line, kind });
            break;
        }
        if is_last {
            outcome.tail_segment = Some((segment, offset));
        }
    }
    outcome.state = state;
    Ok(outcome)
}

/// Opens a segment for reading without following a symbolic link (a link in a received
/// ledger could point at a device or a FIFO).
pub fn open_segment_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a regular file", path.display())));
    }
    Ok(file)
}

/// One line as read: its length with the newline, whether a newline ended it, and whether
/// it was longer than [`MAX_LINE_BYTES`] (then `line` holds only its start).
pub(crate) struct LineRead {
    pub bytes: u64,
    pub complete: bool,
    pub oversized: bool,
}

/// Reads the next line into `line` (without its newline), keeping at most
/// [`MAX_LINE_BYTES`] of it in memory.
pub(crate) fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<LineRead> {
    line.clear();
    let mut read = LineRead { bytes: 0, complete: false, oversized: false };
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(read);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let content = if done { &buf[..take - 1] } else { &buf[..take] };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        if content.len() > room {
            read.oversized = true;
        }
        line.extend_from_slice(&content[..content.len().min(room)]);
        reader.consume(take);
        read.bytes += take as u64;
        if done {
            read.complete = true;
            return Ok(read);
        }
    }
}
