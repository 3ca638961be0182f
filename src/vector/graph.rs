//! A compact HNSW graph (Malkov & Yashunin) over quantized vectors.
//!
//! Nodes are numbered densely in insertion order; everything about them lives in flat
//! arrays: the 8-bit codes, the `seq` each stands for, its level, its layer-0 neighbours
//! (a fixed `2·M` slots of u32) and, for the few nodes above layer 0, their upper lists.
//! About 500 bytes a node at M = 16, against ~3.4 KiB in hnsw_rs, whose per-edge `Arc`s
//! and per-node lists for 16 layers kept a million events above 3 GiB (docs/decisions.md).
//!
//! Inserts find their neighbours under a read lock (in parallel, and alongside searches)
//! and link under a short write lock.

use super::quantized::{mixed_dot, quantize, quantized_dot};
use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::RwLock;

const NONE: u32 = u32::MAX;
pub const MAX_LEVEL: usize = 15;

/// Graph shape: `m` links per node on upper layers, `2m` on layer 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub m: usize,
    pub ef_construction: usize,
}

impl Shape {
    pub fn m0(&self) -> usize {
        2 * self.m
    }

    fn slots(&self, level: usize) -> usize {
        if level == 0 { self.m0() } else { self.m }
    }
}

/// The graph's contents, as a checkpoint stores them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Nodes {
    /// Bytes per quantized vector (dimension + scale).
    pub code_len: usize,
    pub codes: Vec<i8>,
    pub seqs: Vec<u64>,
    pub levels: Vec<u8>,
    /// `m0` slots per node; unused slots hold `u32::MAX`.
    pub layer0: Vec<u32>,
    /// For nodes above layer 0: `level · m` slots, layer 1 first.
    pub upper: HashMap<u32, Vec<u32>>,
    pub entry: Option<u32>,
}

impl Nodes {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    fn code(&self, node: u32) -> &[i8] {
        let start = node as usize * self.code_len;
        &self.codes[start..start + self.code_len]
    }

    fn distance(&self, query: &[i8], node: u32) -> f32 {
        1.0 - quantized_dot(query, self.code(node))
    }

    fn links(&self, shape: &Shape, node: u32, level: usize) -> &[u32] {
        let list = if level == 0 {
            let start = node as usize * shape.m0();
            &self.layer0[start..start + shape.m0()]
        } else {
            let upper = &self.upper[&node];
            &upper[(level - 1) * shape.m..level * shape.m]
        };
        let used = list.iter().position(|&n| n == NONE).unwrap_or(list.len());
        &list[..used]
    }

    fn set_links(&mut self, shape: &Shape, node: u32, level: usize, links: &[u32]) {
        let slots = shape.slots(level);
        let list = if level == 0 {
            let start = node as usize * slots;
            &mut self.layer0[start..start + slots]
        } else {
            let upper = self.upper.get_mut(&node).expect("upper links of a node above layer 0");
            &mut upper[(level - 1) * slots..level * slots]
        };
        list.fill(NONE);
        list[..links.len()].copy_from_slice(links);
    }

    fn top_level(&self) -> usize {
        self.entry.map_or(0, |e| self.levels[e as usize] as usize)
    }
}

/// A candidate: distance to the query and node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Near(f32, u32);

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

thread_local! {
    /// Per-thread visit marks: `marks[node] == epoch` means visited in this search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// Runs `f` with a fresh visited set sized for `n` nodes.
fn with_visited<T>(n: usize, f: impl FnOnce(&mut dyn FnMut(u32) -> bool) -> T) -> T {
    VISITED.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (marks, epoch) = &mut *guard;
        if marks.len() < n {
            marks.resize(n, 0);
        }
        *epoch = epoch.wrapping_add(1);
        if *epoch == 0 {
            marks.fill(0);
            *epoch = 1;
        }
        let current = *epoch;
        let mut first_visit = |node: u32| {
            let mark = &mut marks[node as usize];
            let fresh = *mark != current;
            *mark = current;
            fresh
        };
        f(&mut first_visit)
    })
}

pub struct Graph {
    shape: Shape,
    nodes: RwLock<Nodes>,
}

impl Graph {
    pub fn new(shape: Shape, dimension: usize, capacity: usize) -> Self {
        let code_len = quantize(&vec![0.0; dimension]).len();
        let mut nodes = Nodes { code_len, ..Nodes::default() };
        nodes.codes.reserve(capacity * code_len);
        nodes.seqs.reserve(capacity);
        nodes.levels.reserve(capacity);
        nodes.layer0.reserve(capacity * shape.m0());
        Self { shape, nodes: RwLock::new(nodes) }
    }

    pub fn from_nodes(shape: Shape, nodes: Nodes) -> Self {
        Self { shape, nodes: RwLock::new(nodes) }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.nodes.read().expect("graph lock").len()
    }

    /// Runs `f` on the contents (for checkpoints), holding off inserts meanwhile.
    pub fn with_nodes<T>(&self, f: impl FnOnce(&Nodes) -> T) -> T {
        f(&self.nodes.read().expect("graph lock"))
    }

    /// Adds `vector` (unit length) as `seq`.
    pub fn insert(&self, seq: u64, vector: &[f32]) {
        let code = quantize(vector);
        let level = level_for(seq, self.shape.m);
        // Phase 1, shared: the nearest candidates on every level the node will be on.
        let (mut found, seen) = {
            let nodes = self.nodes.read().expect("graph lock");
            (self.candidates(&nodes, &code, level), nodes.len())
        };
        // Phase 2, exclusive: add the node and link it both ways.
        let mut nodes = self.nodes.write().expect("graph lock");
        if seen == 0 && !nodes.is_empty() {
            // Another insert made the first node meanwhile; link to it rather than be lost.
            found = self.candidates(&nodes, &code, level);
        }
        let node = nodes.len() as u32;
        nodes.codes.extend_from_slice(&code);
        nodes.seqs.push(seq);
        nodes.levels.push(level as u8);
        let m0 = self.shape.m0();
        nodes.layer0.extend(std::iter::repeat_n(NONE, m0));
        if level > 0 {
            nodes.upper.insert(node, vec![NONE; level * self.shape.m]);
        }
        for (l, candidates) in found.into_iter().enumerate() {
            let chosen = self.select(&nodes, candidates, self.shape.slots(l));
            nodes.set_links(&self.shape, node, l, &chosen);
            for &other in &chosen {
                self.link_back(&mut nodes, other, node, l);
            }
        }
        if nodes.entry.is_none() || level > nodes.top_level() {
            nodes.entry = Some(node);
        }
    }

    /// For each level `0..=level`, candidates near `code`, nearest first.
    fn candidates(&self, nodes: &Nodes, code: &[i8], level: usize) -> Vec<Vec<Near>> {
        let mut found = vec![Vec::new(); level + 1];
        let Some(entry) = nodes.entry else { return found };
        let top = nodes.top_level();
        let mut ep = Near(nodes.distance(code, entry), entry);
        for l in (level + 1..=top).rev() {
            ep = self.greedy(nodes, code, ep, l);
        }
        let mut eps = vec![ep];
        for l in (0..=level.min(top)).rev() {
            let near = self.search_layer(nodes, code, &eps, self.shape.ef_construction, l, None);
            eps = near.clone();
            found[l] = near;
        }
        found
    }

    /// Walks down one layer to the nearest node it can reach.
    fn greedy(&self, nodes: &Nodes, code: &[i8], mut best: Near, level: usize) -> Near {
        loop {
            let mut improved = false;
            for &n in nodes.links(&self.shape, best.1, level) {
                let d = nodes.distance(code, n);
                if d < best.0 {
                    best = Near(d, n);
                    improved = true;
                }
            }
            if !improved {
                return best;
            }
        }
    }

    /// Best-first search of one layer; only nodes `accept` takes enter the results, but
    /// the walk goes through all of them. Results nearest first, at most `ef`.
    fn search_layer(
        &self,
        nodes: &Nodes,
        code: &[i8],
        entries: &[Near],
        ef: usize,
        level: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Near> {
        with_visited(nodes.len(), |first_visit| {
            let mut frontier: BinaryHeap<Reverse<Near>> = BinaryHeap::new();
            let mut best: BinaryHeap<Near> = BinaryHeap::new();
            let takes = |n: u32| accept.is_none_or(|f| f(n));
            for &e in entries {
                if first_visit(e.1) {
                    frontier.push(Reverse(e));
                    if takes(e.1) {
                        best.push(e);
                    }
                }
            }
            while let Some(Reverse(current)) = frontier.pop() {
                if best.len() >= ef && best.peek().is_some_and(|w| current.0 > w.0) {
                    break;
                }
                for &n in nodes.links(&self.shape, current.1, level) {
                    if !first_visit(n) {
                        continue;
                    }
                    let d = nodes.distance(code, n);
                    if best.len() < ef || best.peek().is_some_and(|w| d < w.0) {
                        frontier.push(Reverse(Near(d, n)));
                        if takes(n) {
                            best.push(Near(d, n));
                            if best.len() > ef {
                                best.pop();
                            }
                        }
                    }
                }
            }
            best.into_sorted_vec()
        })
    }

    /// The neighbour-selection heuristic: a candidate is kept when it is nearer the base
    /// than any already kept, which spreads links across directions.
    fn select(&self, nodes: &Nodes, candidates: Vec<Near>, keep: usize) -> Vec<u32> {
        let mut chosen: Vec<Near> = Vec::with_capacity(keep);
        for c in candidates {
            if chosen.len() == keep {
                break;
            }
            let code = nodes.code(c.1);
            if chosen.iter().all(|s| 1.0 - quantized_dot(code, nodes.code(s.1)) > c.0) {
                chosen.push(c);
            }
        }
        chosen.into_iter().map(|n| n.1).collect()
    }

    /// Adds `node` to `other`'s links on `level`, re-selecting when the list is full.
    fn link_back(&self, nodes: &mut Nodes, other: u32, node: u32, level: usize) {
        let mut links: Vec<u32> = nodes.links(&self.shape, other, level).to_vec();
        let slots = self.shape.slots(level);
        if links.len() < slots {
            links.push(node);
        } else {
            let base = nodes.code(other).to_vec();
            let mut near: Vec<Near> = links.iter().chain([&node]).map(|&n| Near(nodes.distance(&base, n), n)).collect();
            near.sort();
            links = self.select(nodes, near, slots);
        }
        nodes.set_links(&self.shape, other, level, &links);
    }

    /// The `k` nearest nodes' `(seq, distance)` whose `seq` `accept` takes.
    pub fn search(&self, vector: &[f32], k: usize, ef: usize, accept: Option<&dyn Fn(u64) -> bool>) -> Vec<(u64, f32)> {
        let nodes = self.nodes.read().expect("graph lock");
        let found = self.walk(&nodes, vector, k, ef, accept);
        found.into_iter().take(k).map(|n| (nodes.seqs[n.1 as usize], n.0)).collect()
    }

    /// [`search`](Self::search), the walk's `ef` results then ordered by their distance to
    /// the exact query (`mixed_dot`) rather than to its 8-bit copy.
    pub fn search_refined(&self, vector: &[f32], k: usize, ef: usize, accept: Option<&dyn Fn(u64) -> bool>) -> Vec<(u64, f32)> {
        let nodes = self.nodes.read().expect("graph lock");
        let mut found: Vec<(u64, f32)> = self
            .walk(&nodes, vector, k, ef, accept)
            .into_iter()
            .map(|n| (nodes.seqs[n.1 as usize], 1.0 - mixed_dot(vector, nodes.code(n.1))))
            .collect();
        found.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        found.truncate(k);
        found
    }

    /// The walk of a search: the nearest `ef` (at least `k`) nodes `accept` takes, nearest first.
    fn walk(&self, nodes: &Nodes, vector: &[f32], k: usize, ef: usize, accept: Option<&dyn Fn(u64) -> bool>) -> Vec<Near> {
        let code = quantize(vector);
        let Some(entry) = nodes.entry else { return Vec::new() };
        let mut ep = Near(nodes.distance(&code, entry), entry);
        for l in (1..=nodes.top_level()).rev() {
            ep = self.greedy(nodes, &code, ep, l);
        }
        let seqs = &nodes.seqs;
        let by_node = accept.map(|f| move |n: u32| f(seqs[n as usize]));
        let by_node_ref: Option<&dyn Fn(u32) -> bool> = by_node.as_ref().map(|f| f as &dyn Fn(u32) -> bool);
        self.search_layer(nodes, &code, &[ep], ef.max(k), 0, by_node_ref)
    }
}

/// A node's top layer, drawn from the exponential distribution of the HNSW paper with
/// `mL = 1/ln(M)`, seeded by the `seq` so a rebuild gives the same layers.
fn level_for(seq: u64, m: usize) -> usize {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let uniform = ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = (-uniform.ln() / (m as f64).ln()).floor() as usize;
    level.min(MAX_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_unit(state: &mut u64, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    fn exact_top(vectors: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u64> {
        let mut all: Vec<(f32, u64)> = vectors.iter().enumerate().map(|(i, v)| (crate::vector::dot(q, v), i as u64 + 1)).collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        all.into_iter().take(k).map(|(_, s)| s).collect()
    }

    #[test]
    fn finds_the_true_neighbours_of_random_vectors() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let vectors: Vec<Vec<f32>> = (0..3000).map(|_| random_unit(&mut state, 48)).collect();
        let graph = Graph::new(Shape { m: 16, ef_construction: 100 }, 48, 0);
        for (i, v) in vectors.iter().enumerate() {
            graph.insert(i as u64 + 1, v);
        }
        assert_eq!(graph.len(), 3000);
        let (mut hits, mut refined_hits) = (0, 0);
        for _ in 0..50 {
            let q = random_unit(&mut state, 48);
            let truth = exact_top(&vectors, &q, 10);
            let found = graph.search(&q, 10, 128, None);
            assert_eq!(found.len(), 10);
            assert!(found.windows(2).all(|w| w[0].1 <= w[1].1), "nearest first");
            hits += found.iter().filter(|(s, _)| truth.contains(s)).count();
            let refined = graph.search_refined(&q, 10, 128, None);
            assert!(refined.windows(2).all(|w| w[0].1 <= w[1].1), "nearest first");
            refined_hits += refined.iter().filter(|(s, _)| truth.contains(s)).count();
        }
        // 8-bit codes blur near ties; the daemon re-ranks exactly. Still, nearly all found,
        // and more once the walk's results are ranked against the exact query.
        assert!(hits >= 450, "recall {hits}/500");
        assert!(refined_hits >= hits, "refined recall {refined_hits}/500, walk's {hits}/500");
    }

    #[test]
    fn filters_apply_during_the_walk_and_vector_finds_itself() {
        let mut state = 99u64;
        let vectors: Vec<Vec<f32>> = (0..1000).map(|_| random_unit(&mut state, 32)).collect();
        let graph = Graph::new(Shape { m: 8, ef_construction: 64 }, 32, 0);
        for (i, v) in vectors.iter().enumerate() {
            graph.insert(i as u64 + 1, v);
        }
        let even = |seq: u64| seq.is_multiple_of(2);
        let found = graph.search(&vectors[10], 5, 64, Some(&even));
        assert_eq!(found.len(), 5);
        assert!(found.iter().all(|(s, _)| s.is_multiple_of(2)));
        let own = graph.search(&vectors[41], 1, 64, None);
        assert_eq!(own[0].0, 42);
        assert!(graph.search(&vectors[0], 3, 64, Some(&|_| false)).is_empty());
    }

    #[test]
    fn levels_follow_the_exponential_law() {
        let above: usize = (0..100_000u64).filter(|s| level_for(*s, 16) > 0).count();
        // P(level > 0) = 1/M = 6.25 %.
        assert!((5_500..7_000).contains(&above), "{above}");
        assert_eq!(level_for(77, 16), level_for(77, 16));
    }
}
