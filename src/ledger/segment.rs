//! Segment files: naming, listing, and reading their lines.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Segment files are named by the `seq` of their first record, zero-padded to 20 digits.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
}

/// A segment file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// Lists the segments of a ledger directory in `seq` order. Files that do not follow the
/// naming scheme are an error: someone put them there, and the ledger must say so.
pub fn list_segments(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".jsonl") else {
            if name.ends_with(".tmp") {
                continue;
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected file {} in the ledger directory", entry.path().display()),
            ));
        };
        let first_seq = stem.parse::<u64>().ok().filter(|_| stem.len() == 20).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("segment {} is not named <20-digit first seq>.jsonl", entry.path().display()),
            )
        })?;
        segments.push(SegmentFile { first_seq, path: entry.path() });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_seq() {
        assert_eq!(segment_name(1), "00000000000000000001.jsonl");
        let dir = tempfile::tempdir().unwrap();
        for seq in [1001, 1, 20] {
            fs::write(dir.path().join(segment_name(seq)), b"").unwrap();
        }
        let found: Vec<u64> = list_segments(dir.path()).unwrap().iter().map(|s| s.first_seq).collect();
        assert_eq!(found, vec![1, 20, 1001]);
        fs::write(dir.path().join("notes.txt"), b"").unwrap();
        assert!(list_segments(dir.path()).is_err());
    }
}
