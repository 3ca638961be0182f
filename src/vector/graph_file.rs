//! The graph checkpoint file: a header, the node arrays, and a checksum over everything.
//!
//! ```text
//! "OPAGRAPH"  version u32  code_len u32  m u32  ef_construction u32  count u64  entry u64
//! seqs [u64; count]  levels [u8; count]  codes [i8; count·code_len]
//! layer0 [u32; count·2m]  upper [u32; level·m] for each node above layer 0, in node order
//! checksum u64 (of all bytes before it)
//! ```
//! All little-endian. Written durably (temporary file, sync, rename, directory sync); read
//! back with every count, id and level checked, so a damaged file is refused, never used.

use super::graph::{MAX_LEVEL, Nodes, Shape};
use crate::durable;
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"OPAGRAPH";
const VERSION: u32 = 1;
const NONE: u64 = u64::MAX;

/// A 64-bit hash of a byte stream, the same however the stream is split into writes.
#[derive(Default)]
struct StreamHash {
    state: u64,
    pending: Vec<u8>,
    total: u64,
}

impl StreamHash {
    fn update(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if !self.pending.is_empty() {
            let take = (8 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < 8 {
                return;
            }
            let word = u64::from_le_bytes(self.pending[..8].try_into().expect("8 bytes"));
            self.mix(word);
            self.pending.clear();
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        self.pending.extend_from_slice(words.remainder());
    }

    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31);
    }

    fn finish(mut self) -> u64 {
        let mut tail = [0u8; 8];
        tail[..self.pending.len()].copy_from_slice(&self.pending);
        self.mix(u64::from_le_bytes(tail));
        self.mix(self.total);
        self.state
    }
}

struct Out<'a> {
    file: BufWriter<&'a mut File>,
    hash: StreamHash,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.file.write_all(bytes)
    }

    /// Writes `values` as their little-endian bytes, a slice at a time.
    fn values<T: Copy, const N: usize>(&mut self, values: &[T], le_bytes: impl Fn(T) -> [u8; N]) -> std::io::Result<()> {
        for chunk in values.chunks(16_384) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| le_bytes(*v)).collect();
            self.put(&bytes)?;
        }
        Ok(())
    }
}

/// Writes `nodes` to `path`, durably (see [`durable::replace_with`]).
pub fn write(path: &Path, shape: Shape, nodes: &Nodes) -> Result<()> {
    durable::replace_with(path, |file| {
        let mut out = Out { file: BufWriter::with_capacity(1 << 20, file), hash: StreamHash::default() };
        out.put(MAGIC)?;
        out.put(&VERSION.to_le_bytes())?;
        out.put(&(nodes.code_len as u32).to_le_bytes())?;
        out.put(&(shape.m as u32).to_le_bytes())?;
        out.put(&(shape.ef_construction as u32).to_le_bytes())?;
        out.put(&(nodes.len() as u64).to_le_bytes())?;
        out.put(&nodes.entry.map_or(NONE, u64::from).to_le_bytes())?;
        out.values(&nodes.seqs, u64::to_le_bytes)?;
        out.put(&nodes.levels)?;
        out.values(&nodes.codes, i8::to_le_bytes)?;
        out.values(&nodes.layer0, u32::to_le_bytes)?;
        for (node, level) in nodes.levels.iter().enumerate() {
            if *level > 0 {
                out.values(&nodes.upper[&(node as u32)], u32::to_le_bytes)?;
            }
        }
        let checksum = std::mem::take(&mut out.hash).finish();
        out.file.write_all(&checksum.to_le_bytes())?;
        out.file.flush()
    })
}

struct In {
    file: BufReader<File>,
    hash: StreamHash,
}

impl In {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; n];
        self.file.read_exact(&mut buf).context("the file ends early")?;
        self.hash.update(&buf);
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }

    /// `n` u32s, each checked to be a node id below `count` or the empty slot.
    fn links(&mut self, n: usize, count: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let take = left.min(16_384);
            let bytes = self.bytes(take * 4)?;
            for c in bytes.chunks_exact(4) {
                let id = u32::from_le_bytes(c.try_into().expect("4 bytes"));
                ensure!(id == u32::MAX || (id as usize) < count, "link to node {id} of {count}");
                out.push(id);
            }
            left -= take;
        }
        Ok(out)
    }
}

/// Reads a checkpoint written by [`write`] for vectors of `dimension`.
pub fn read(path: &Path, dimension: usize) -> Result<(Shape, Nodes)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut input = In { file: BufReader::with_capacity(1 << 20, file), hash: StreamHash::default() };
    parse(&mut input, dimension, size).with_context(|| format!("reading graph checkpoint {}", path.display()))
}

fn parse(input: &mut In, dimension: usize, size: u64) -> Result<(Shape, Nodes)> {
    ensure!(input.bytes(8)? == MAGIC, "not a graph checkpoint");
    let version = input.u32()?;
    ensure!(version == VERSION, "format version {version}, expected {VERSION}");
    let code_len = input.u32()? as usize;
    ensure!(code_len == dimension + 4, "vectors of {code_len} bytes, expected {}", dimension + 4);
    let m = input.u32()? as usize;
    ensure!((2..=256).contains(&m), "M {m} out of range");
    let ef_construction = input.u32()? as usize;
    let count = input.u64()? as usize;
    ensure!(count < u32::MAX as usize, "{count} nodes");
    let fixed = 40 + count as u64 * (8 + 1 + code_len as u64 + 8 * m as u64) + 8;
    ensure!(size >= fixed, "{size} bytes, at least {fixed} needed for {count} nodes");
    let entry = match input.u64()? {
        NONE => None,
        e if (e as usize) < count => Some(e as u32),
        e => bail!("entry node {e} of {count}"),
    };
    ensure!(entry.is_some() == (count > 0), "entry point and node count disagree");
    let seqs: Vec<u64> = input.bytes(count * 8)?.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    let levels = input.bytes(count)?;
    ensure!(levels.iter().all(|l| *l as usize <= MAX_LEVEL), "a node level above {MAX_LEVEL}");
    let codes: Vec<i8> = input.bytes(count * code_len)?.into_iter().map(|b| b as i8).collect();
    let layer0 = input.links(count * 2 * m, count)?;
    let mut upper = HashMap::new();
    for (node, level) in levels.iter().enumerate() {
        if *level > 0 {
            upper.insert(node as u32, input.links(*level as usize * m, count)?);
        }
    }
    let expected = std::mem::take(&mut input.hash).finish();
    let mut stored = [0u8; 8];
    input.file.read_exact(&mut stored).context("the checksum is missing")?;
    ensure!(u64::from_le_bytes(stored) == expected, "checksum mismatch: the file is damaged");
    ensure!(input.file.read(&mut [0u8; 1])? == 0, "bytes after the checksum");
    Ok((Shape { m, ef_construction }, Nodes { code_len, codes, seqs, levels, layer0, upper, entry }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::graph::Graph;

    fn sample_graph() -> Graph {
        let graph = Graph::new(Shape { m: 4, ef_construction: 32 }, 8, 0);
        for i in 0..300u64 {
            let mut v: Vec<f32> = (0..8).map(|d| ((i * 7 + d * 13) % 17) as f32 - 8.0).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.iter_mut().for_each(|x| *x /= n);
            graph.insert(i + 1, &v);
        }
        graph
    }

    #[test]
    fn round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.graph");
        let graph = sample_graph();
        graph.with_nodes(|nodes| write(&path, graph.shape(), nodes)).unwrap();
        let (shape, nodes) = read(&path, 8).unwrap();
        assert_eq!(shape, graph.shape());
        graph.with_nodes(|original| assert_eq!(&nodes, original));
    }

    #[test]
    fn any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.graph");
        let graph = sample_graph();
        graph.with_nodes(|nodes| write(&path, graph.shape(), nodes)).unwrap();
        let good = std::fs::read(&path).unwrap();
        for at in (0..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(&path, 8).is_err(), "a flipped bit at byte {at} went unnoticed");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(read(&path, 8).is_err());
        std::fs::write(&path, [good.as_slice(), b"x"].concat()).unwrap();
        assert!(read(&path, 8).is_err());
        std::fs::write(&path, &good).unwrap();
        assert!(read(&path, 16).is_err(), "another dimension is refused");
    }
}
