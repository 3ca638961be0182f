//! Reads records forward from any `seq`, remembering its place, so that derived stores
//! follow the ledger without re-reading what they have already seen.

use super::record::{Record, decode_line};
use super::segment::{SegmentFile, list_segments, segment_name};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A position in the ledger: the next `seq` to read and where its line starts.
pub struct LedgerCursor {
    dir: PathBuf,
    next_seq: u64,
    segment: Option<(SegmentFile, u64)>,
    buf: Vec<u8>,
}

impl LedgerCursor {
    /// A cursor whose next record is `next_seq` (1 for the start of the ledger).
    pub fn new(dir: &Path, next_seq: u64) -> Self {
        Self { dir: dir.to_owned(), next_seq: next_seq.max(1), segment: None, buf: Vec::new() }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Reads every record from the cursor up to and including `through_seq`, which must
    /// already be durable, and calls `visit` on each in order.
    pub fn read_through(&mut self, through_seq: u64, mut visit: impl FnMut(Record) -> Result<()>) -> Result<()> {
        while self.next_seq <= through_seq {
            if self.segment.is_none() {
                self.segment = Some(self.locate()?);
            }
            let (segment, offset) = self.segment.as_mut().expect("located above");
            let mut file = File::open(&segment.path).with_context(|| format!("opening {}", segment.path.display()))?;
            file.seek(SeekFrom::Start(*offset))?;
            self.buf.clear();
            file.read_to_end(&mut self.buf)?;
            let mut start = 0usize;
            let mut progressed = false;
            while self.next_seq <= through_seq {
                let Some(len) = self.buf[start..].iter().position(|&b| b == b'\n') else { break };
                let line = &self.buf[start..start + len];
                let record = decode_line(line).map_err(|e| anyhow::anyhow!("{}: {e:?}", segment.path.display()))?;
                start += len + 1;
                *offset += len as u64 + 1;
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
