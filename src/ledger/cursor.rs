//! Reads records forward from any `seq`, remembering its place, so that derived stores
//! follow the ledger without re-reading what they have already seen.

use super::record::{Record, decode_line};
use super::segment::{SegmentFile, list_segments, segment_name};
use super::verify::{open_segment_file, read_line};
use anyhow::{Context, Result, bail};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A position in the ledger: the next `seq` to read and where its line starts.
pub struct LedgerCursor {
    dir: PathBuf,
    next_seq: u64,
    segment: Option<(SegmentFile, u64)>,
    line: Vec<u8>,
}

impl LedgerCursor {
    /// A cursor whose next record is `next_seq` (1 for the start of the ledger).
    pub fn new(dir: &Path, next_seq: u64) -> Self {
        Self { dir: dir.to_owned(), next_seq: next_seq.max(1), segment: None, line: Vec::new() }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Reads every record from the cursor up to and including `through_seq`, which must
    /// already be durable, and calls `visit` on each in order. Each line's hash is checked;
    /// lines before the cursor's `seq` in its first segment are skipped unread.
    pub fn read_through(&mut self, through_seq: u64, mut visit: impl FnMut(Record) -> Result<()>) -> Result<()> {
        while self.next_seq <= through_seq {
            if self.segment.is_none() {
                self.segment = Some(self.locate()?);
            }
            let (segment, offset) = self.segment.as_mut().expect("located above");
            let mut file = open_segment_file(&segment.path).with_context(|| format!("opening {}", segment.path.display()))?;
            file.seek(SeekFrom::Start(*offset))?;
            let mut reader = BufReader::with_capacity(256 << 10, file);
            let mut progressed = false;
            while self.next_seq <= through_seq {
                let read = read_line(&mut reader, &mut self.line)?;
                if read.bytes == 0 {
                    break;
                }
                if !read.complete || read.oversized {
                    bail!("{}: an incomplete or oversized line at byte {}", segment.path.display(), offset);
                }
                let record = decode_line(&self.line).map_err(|e| anyhow::anyhow!("{}: {e:?}", segment.path.display()))?;
                *offset += read.bytes;
                if record.seq < self.next_seq {
                    continue;
                }
                if record.seq != self.next_seq {
                    bail!("ledger has seq {} where {} was expected", record.seq, self.next_seq);
                }
                self.next_seq += 1;
                progressed = true;
                visit(record)?;
            }
            if self.next_seq <= through_seq {
                // The rest lives in the next segment, which starts at next_seq.
                let next = self.dir.join(segment_name(self.next_seq));
                if next.exists() {
                    self.segment = Some((SegmentFile { first_seq: self.next_seq, path: next }, 0));
                } else if !progressed {
                    bail!("seq {} is not in the ledger at {}", self.next_seq, self.dir.display());
                }
            }
        }
        Ok(())
    }

    /// True when nothing follows the records read so far: no bytes after them in their
    /// segment and no later segment.
    pub fn at_end(&self) -> Result<bool> {
        let Some((segment, offset)) = &self.segment else { return Ok(false) };
        let len = std::fs::metadata(&segment.path).with_context(|| format!("reading {}", segment.path.display()))?.len();
        Ok(len == *offset && !self.dir.join(segment_name(self.next_seq)).exists())
    }

    /// Finds the segment holding `next_seq`; the cursor then skips earlier lines.
    fn locate(&self) -> Result<(SegmentFile, u64)> {
        let segments = list_segments(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        segments
            .into_iter()
            .rev()
            .find(|s| s.first_seq <= self.next_seq)
            .map(|s| (s, 0))
            .with_context(|| format!("no segment in {} holds seq {}", self.dir.display(), self.next_seq))
    }
}

/// The `seq` of the last complete record (0 for an empty ledger), read from the end of the
/// last non-empty segment. The chain is not checked: this is for progress reports.
pub fn head_seq(dir: &Path) -> Result<u64> {
    const TAIL: u64 = 8 << 20;
    let segments = list_segments(dir).with_context(|| format!("listing {}", dir.display()))?;
    for segment in segments.iter().rev() {
        let mut file = open_segment_file(&segment.path).with_context(|| format!("opening {}", segment.path.display()))?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(TAIL);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        file.take(TAIL).read_to_end(&mut tail)?;
        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else { continue };
        let begin = tail[..end].iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
        let record = decode_line(&tail[begin..end]).map_err(|e| anyhow::anyhow!("{}: {e:?}", segment.path.display()))?;
        return Ok(record.seq);
    }
    Ok(0)
}
