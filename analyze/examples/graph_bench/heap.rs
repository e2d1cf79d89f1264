//! The synthetic heaps of `graph_bench`, written with the format's writer.
//! Shared by the benchmark (`main.rs`) and by the test that runs
//! `heapdump verify` on them (`analyze/tests/graph_bench_heap.rs`).
//!
//! Two shapes, both deterministic, both with about 3 edges per block and
//! the last 5% of the blocks lost:
//!
//! - [`HeapShape::Uniform`], the worst case for caches: 95% of the blocks
//!   form a binary tree under one root (two child pointers each) plus two
//!   uniformly random pointers per block into the tree (one in ten
//!   interior); the last 5% are a lost list with random pointers inside
//!   the lost part.
//! - [`HeapShape::Local`], the locality of real heaps: blocks are allocated
//!   in address order and point mostly to their recent neighbours.
//!   Allocation order is cut into segments of [`SEGMENT`] blocks, each
//!   headed by a block (a container, such as a `Vec` of boxes) that the
//!   region's first block holds; a block's owner is its segment's head
//!   (one in eight) or a block allocated at most 28 before it in the same
//!   segment (the rest); each block also holds two pointers to blocks
//!   allocated shortly before it (mean distance ~24; one in 64 to any older
//!   block, one in 16 to one of [`HUBS`] shared hub blocks, one in 16
//!   interior). A block is as large as its pointers need. The root points
//!   at the first block and at the hubs; the last 5% are a second region
//!   with the same shape that no root reaches.
//!
//! Every pointer word lies inside its source block and every target
//! offset inside its target, so the dumps pass `heapdump verify`.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use heapdump_formats::records::{
    AllocationRecord, EdgeRecord, ProcessRecord, RootRecord, SectionKind, ThreadRecord, edge_flags,
    owner_kind, process_flags, root_kind, thread_flags,
};
use heapdump_formats::write::{DumpWriter, Sink};

/// Which synthetic heap to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapShape {
    /// Uniformly random pointers: every step of a walk is a cache miss.
    Uniform,
    /// Allocation-order locality with a few hubs, as real heaps have.
    Local,
}

impl std::str::FromStr for HeapShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(HeapShape::Uniform),
            "local" => Ok(HeapShape::Local),
            _ => Err(format!(
                "unknown heap shape {s:?}: expected uniform or local"
            )),
        }
    }
}

/// What [`write_dump`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Allocation records.
    pub blocks: u64,
    /// Edge records, the root's included.
    pub edges: u64,
    /// Sum of the allocation sizes.
    pub live_bytes: u64,
}

/// Blocks per segment of [`HeapShape::Local`]: the head of each holds a
/// pointer to about an eighth of them.
pub const SEGMENT: u64 = 4096;
/// Hub blocks of [`HeapShape::Local`] (shared objects many blocks point to).
pub const HUBS: u64 = 32;

/// The writer's sink over a buffered file.
struct FileSink(std::io::BufWriter<std::fs::File>);

impl Sink for FileSink {
    type Error = std::io::ErrorKind;
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write_all(bytes).map_err(|e| e.kind())
    }
}

/// SplitMix64's increment.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stateless hash of `value`, so each block's random choices can be
/// recomputed in every pass.
fn mix(value: u64) -> u64 {
    finalize(value.wrapping_add(GOLDEN))
}

/// SplitMix64 as a sequence, as in the format's tests.
struct Rng(u64);
impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        finalize(self.0) % bound.max(1)
    }
}

fn edge(source: u64, target: u64, source_offset: u64, target_offset: u64) -> EdgeRecord {
    EdgeRecord {
        source: source as u32,
        target: target as u32,
        source_offset,
        target_offset,
        flags: 0,
        reserved: 0,
    }
}

/// Writes a dump of `n` blocks of `shape` to `path` (replaced).
pub fn write_dump(path: &Path, n: u64, shape: HeapShape) -> anyhow::Result<Written> {
    anyhow::ensure!(
        (2..=u64::from(u32::MAX)).contains(&n),
        "the heap needs 2 to {} blocks, not {n}",
        u32::MAX
    );
    let heap: Box<dyn Heap> = match shape {
        HeapShape::Uniform => Box::new(UniformHeap { n }),
        HeapShape::Local => Box::new(LocalHeap::new(n)),
    };
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut w = DumpWriter::new(
        FileSink(std::io::BufWriter::with_capacity(1 << 22, file)),
        &mut buffer,
    )
    .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    let err = |e| anyhow::anyhow!("writing {}: {e}", path.display());
    let live_bytes: u64 = (0..n).map(|i| heap.size(i)).sum();
    w.section([ProcessRecord {
        pid: 1,
        pointer_size: 8,
        page_size: 4096,
        flags: process_flags::HAS_SCAN | process_flags::WORLD_STOPPED,
        dump_number: 1,
        machine: 62,
        live_bytes,
        live_count: n,
        next_sequence: n + 1,
        ..Default::default()
    }])
    .map_err(err)?;
    w.section([ThreadRecord {
        tid: 1,
        flags: thread_flags::ALIVE | thread_flags::MAIN | thread_flags::DUMPING,
        live_count: n,
        ..Default::default()
    }])
    .map_err(err)?;
    let mut address = 0x1000_0000u64;
    w.begin_section(SectionKind::Allocations).map_err(err)?;
    for i in 0..n {
        let size = heap.size(i);
        w.write_record(&AllocationRecord {
            address,
            size,
            sequence: i + 1,
            stack: 0,
            thread: 0,
            align: 16,
            flags: 0,
        })
        .map_err(err)?;
        address += heap.stride(size);
    }
    w.end_section().map_err(err)?;
    w.section([RootRecord {
        kind: root_kind::THREAD_STACK,
        owner_kind: owner_kind::THREAD,
        owner: 0,
        address: 0x7000_0000,
        size: 4096,
        ..Default::default()
    }])
    .map_err(err)?;
    w.begin_section(SectionKind::Edges).map_err(err)?;
    let mut edges = 0u64;
    let mut out: Vec<EdgeRecord> = Vec::new();
    for i in 0..n {
        out.clear();
        heap.out_edges(i, &mut out);
        debug_assert!(out.len() as u64 * 8 <= heap.size(i));
        for e in &out {
            w.write_record(e).map_err(err)?;
        }
        edges += out.len() as u64;
    }
    let root_targets = heap.root_targets();
    for (slot, &target) in root_targets.iter().enumerate() {
        w.write_record(&EdgeRecord {
            source: 0,
            target: target as u32,
            source_offset: 8 * slot as u64,
            target_offset: 0,
            flags: edge_flags::FROM_ROOT,
            reserved: 0,
        })
        .map_err(err)?;
    }
    w.end_section().map_err(err)?;
    let (mut sink, _) = w.finish().map_err(err)?;
    sink.0
        .flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Written {
        blocks: n,
        edges: edges + root_targets.len() as u64,
        live_bytes,
    })
}

/// One synthetic heap: block sizes and pointers, by allocation index.
trait Heap {
    /// Size of block `i`: at least 8 bytes per out-edge.
    fn size(&self, i: u64) -> u64;
    /// Address distance from a block of `size` bytes to the next block.
    fn stride(&self, size: u64) -> u64;
    /// The out-edges of block `i`, by source offset.
    fn out_edges(&self, i: u64, out: &mut Vec<EdgeRecord>);
    /// The blocks the one root points to.
    fn root_targets(&self) -> Vec<u64>;
}

/// [`HeapShape::Uniform`]. Its random pointers are drawn in block order
/// from one sequence, so `out_edges` keeps that sequence's state.
struct UniformHeap {
    n: u64,
}

impl UniformHeap {
    /// Blocks of the tree; the rest are lost.
    fn tree(&self) -> u64 {
        self.n - self.n / 20
    }
}

impl Heap for UniformHeap {
    /// 32 to 128 bytes: room for the tree's 4 pointers.
    fn size(&self, i: u64) -> u64 {
        32 + (i % 7) * 16
    }

    fn stride(&self, _size: u64) -> u64 {
        144
    }

    fn out_edges(&self, i: u64, out: &mut Vec<EdgeRecord>) {
        // Each block's draws come from its own stream, so blocks can be
        // visited in any order and twice.
        let mut rng = Rng(mix(i ^ 0x5EED));
        let (n, tree) = (self.n, self.tree());
        if i < tree {
            for (k, child) in [2 * i + 1, 2 * i + 2].into_iter().enumerate() {
                if child < tree {
                    out.push(edge(i, child, 8 * k as u64, 0));
                }
            }
            for k in 0..2 {
                let t = rng.below(tree);
                let interior = if rng.below(10) == 0 { 8 } else { 0 };
                out.push(edge(i, t, 16 + 8 * k, interior));
            }
        } else {
            if i + 1 < n {
                out.push(edge(i, i + 1, 0, 0));
            }
            for k in 0..2 {
                let t = tree + rng.below(n - tree);
                out.push(edge(i, t, 8 + 8 * k, 0));
            }
        }
    }

    fn root_targets(&self) -> Vec<u64> {
        vec![0]
    }
}

/// [`HeapShape::Local`].
struct LocalHeap {
    n: u64,
    /// Where the lost region starts.
    lost: u64,
    /// Children per block (blocks whose owner it is).
    children: Vec<u32>,
    /// The hub blocks, in index order.
    hubs: Vec<u64>,
}

/// Farthest distance from a block to a local owner.
const OWNER_DISTANCE: u64 = 28;

impl LocalHeap {
    fn new(n: u64) -> LocalHeap {
        let lost = n - n / 20;
        let hubs = (0..HUBS.min(lost))
            .map(|k| 1 + k * (lost - 1) / HUBS)
            .collect();
        let mut heap = LocalHeap {
            n,
            lost,
            children: vec![0; n as usize],
            hubs,
        };
        let mut children = std::mem::take(&mut heap.children);
        for i in 0..n {
            if let Some(owner) = heap.owner(i) {
                children[owner as usize] += 1;
            }
        }
        heap.children = children;
        heap
    }

    /// First block of the region of `i` (the live one or the lost one).
    fn region(&self, i: u64) -> u64 {
        if i < self.lost { 0 } else { self.lost }
    }

    fn segment_head(&self, i: u64) -> u64 {
        let region = self.region(i);
        region + (i - region) / SEGMENT * SEGMENT
    }

    /// The block holding the pointer that keeps `i`: `None` for the first
    /// block of a region.
    fn owner(&self, i: u64) -> Option<u64> {
        let (region, head) = (self.region(i), self.segment_head(i));
        if i == region {
            return None;
        }
        if i == head {
            return Some(region);
        }
        let h = mix(i ^ 0x0A11_0C47);
        if h.is_multiple_of(8) {
            return Some(head);
        }
        let distance =
            1 + (h >> 3) % 4 + 4 * u64::from(((h >> 8) | 1 << 40).trailing_zeros().min(6));
        Some(i.saturating_sub(distance).max(head))
    }

    /// Block `i`'s `k`th pointer to an older block, and its target offset.
    fn back_pointer(&self, i: u64, k: u64) -> (u64, u64) {
        let h = mix(i.wrapping_mul(2).wrapping_add(k) ^ 0xBAC4_0000);
        let target = if h.is_multiple_of(16) {
            self.hubs[((h >> 4) % self.hubs.len() as u64) as usize]
        } else if h % 64 == 1 {
            (h >> 8) % i
        } else {
            let distance =
                1 + (h >> 6) % 16 + 16 * u64::from(((h >> 12) | 1 << 40).trailing_zeros().min(8));
            i.saturating_sub(distance)
        };
        let interior = if (h >> 48).is_multiple_of(16) { 8 } else { 0 };
        (target, interior)
    }

    /// Pointers of block `i`: its children, then two to older blocks.
    fn slots(&self, i: u64) -> u64 {
        u64::from(self.children[i as usize]) + if i > 0 { 2 } else { 0 }
    }
}

impl Heap for LocalHeap {
    /// 16 to 112 bytes, or as many 16-byte units as its pointers need.
    fn size(&self, i: u64) -> u64 {
        let wanted = 16 + (mix(i ^ 0x512E) % 7) * 16;
        wanted.max((8 * self.slots(i)).next_multiple_of(16))
    }

    /// Blocks follow each other with a 16-byte header between them.
    fn stride(&self, size: u64) -> u64 {
        size + 16
    }

    fn out_edges(&self, i: u64, out: &mut Vec<EdgeRecord>) {
        let mut slot = 0u64;
        let mut push = |target: u64, target_offset: u64, out: &mut Vec<EdgeRecord>| {
            out.push(edge(i, target, 8 * slot, target_offset));
            slot += 1;
        };
        let region_end = if i < self.lost { self.lost } else { self.n };
        let head = self.segment_head(i);
        // Children are found by asking each candidate for its owner: a
        // segment's head may own any block of its segment, another block
        // only those at most OWNER_DISTANCE after it.
        let segment_end = (head + SEGMENT).min(region_end);
        let last = if i == head {
            segment_end
        } else {
            (i + OWNER_DISTANCE + 1).min(segment_end)
        };
        for child in i + 1..last {
            if self.owner(child) == Some(i) {
                push(child, 0, out);
            }
        }
        if i == self.region(i) {
            let mut next = i + SEGMENT;
            while next < region_end {
                push(next, 0, out);
                next += SEGMENT;
            }
        }
        if i > 0 {
            for k in 0..2 {
                let (target, interior) = self.back_pointer(i, k);
                push(target, interior, out);
            }
        }
        debug_assert_eq!(out.len() as u64, self.slots(i));
    }

    fn root_targets(&self) -> Vec<u64> {
        let mut targets = vec![0];
        targets.extend(self.hubs.iter().copied().filter(|&h| h != 0));
        targets
    }
}
