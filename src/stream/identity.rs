//! Proving that a file in a newly received snapshot begins with exactly the bytes of the
//! same file in the last verified snapshot, without reading what did not change. On Btrfs,
//! ranges both files map to the same extent at the same address are the same bytes
//! (extents are copy-on-write and never change while referenced); an incremental receive
//! leaves the unchanged part of a ledger segment on the parent's extents. Everything else —
//! new extents, compressed or inline ones — is compared byte by byte.

use crate::btrfs::{Extent, extents};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How a prefix was proven equal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCheck {
    /// Bytes proven by shared extents.
    pub shared: u64,
    /// Bytes read from both files and compared.
    pub compared: u64,
}

/// Checks that `new` holds `old`'s first `len` bytes unchanged; an error says where they
/// differ.
pub fn same_prefix(old: &Path, new: &Path, len: u64) -> Result<PrefixCheck> {
    let open = |p: &Path| crate::ledger::open_segment_file(p).with_context(|| format!("opening {}", p.display()));
    let (old_file, new_file) = (open(old)?, open(new)?);
    if new_file.metadata()?.len() < len || old_file.metadata()?.len() < len {
        bail!("{} is shorter than the {len} bytes already verified", new.display());
    }
    let (old_map, new_map) = (extents(&old_file, len)?, extents(&new_file, len)?);
    let mut check = PrefixCheck::default();
    let mut at = 0u64;
    while at < len {
        let shared = shared_run(&old_map, &new_map, at, len);
        if shared > 0 {
            check.shared += shared;
            at += shared;
            continue;
        }
        // Up to where the next shared run could start (the next extent boundary of either).
        let next = boundary_after(&old_map, &new_map, at).min(len).max(at + 1);
        compare(&old_file, &new_file, at, next - at).with_context(|| format!("{} changed within its verified part", new.display()))?;
        check.compared += next - at;
        at = next;
    }
    Ok(check)
}

/// How many bytes from `at` both files keep in the same extent at the same address.
fn shared_run(old: &[Extent], new: &[Extent], at: u64, len: u64) -> u64 {
    let covering = |map: &[Extent]| map.iter().find(|e| e.addressable && e.logical <= at && at < e.logical + e.length).copied();
    match (covering(old), covering(new)) {
        (Some(o), Some(n)) if o.physical + (at - o.logical) == n.physical + (at - n.logical) => {
            (o.logical + o.length).min(n.logical + n.length).min(len) - at
        }
        _ => 0,
    }
}

fn boundary_after(old: &[Extent], new: &[Extent], at: u64) -> u64 {
    old.iter().chain(new).flat_map(|e| [e.logical, e.logical + e.length]).filter(|b| *b > at).min().unwrap_or(u64::MAX)
}

fn compare(old: &File, new: &File, start: u64, len: u64) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut a = vec![0u8; CHUNK.min(len) as usize];
    let mut b = vec![0u8; a.len()];
    let mut at = start;
    while at < start + len {
        let n = CHUNK.min(start + len - at) as usize;
        old.read_exact_at(&mut a[..n], at)?;
        new.read_exact_at(&mut b[..n], at)?;
        if a[..n] != b[..n] {
            let first = a[..n].iter().zip(&b[..n]).position(|(x, y)| x != y).unwrap_or(0) as u64;
            bail!("bytes differ at offset {}", at + first);
        }
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(logical: u64, physical: u64, length: u64) -> Extent {
        Extent { logical, physical, length, addressable: true }
    }

    #[test]
    fn runs_follow_shared_addresses_only() {
        let old = [e(0, 1000, 100), e(100, 5000, 50)];
        let new = [e(0, 1000, 80), e(80, 9000, 70)];
        assert_eq!(shared_run(&old, &new, 0, 150), 80);
        assert_eq!(shared_run(&old, &new, 80, 150), 0, "rewritten");
        assert_eq!(boundary_after(&old, &new, 80), 100);
        let split = [e(0, 1000, 40), e(40, 1040, 60)];
        assert_eq!(shared_run(&old, &split, 40, 150), 60, "the same extent seen in two pieces");
        let mut inline = old;
        inline[0].addressable = false;
        assert_eq!(shared_run(&inline, &new, 0, 150), 0);
    }
}
