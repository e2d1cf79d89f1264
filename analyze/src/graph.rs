//! The heap graph: every live allocation is a node (`u32`, its index in
//! `Allocations`), every pointer the conservative scan found between two
//! allocations is an out-edge in a compressed sparse row (CSR) array, and
//! the pointers found in roots are kept apart as the edges of a virtual
//! super-root. Built once per dump and shared by leak classes, dominators,
//! retained sizes and paths.
//!
//! ```
//! use heapdump_analyze::graph::{HeapGraph, GraphEdge, RootEdge};
//! use heapdump_analyze::heuristics::Heuristics;
//! // Root 0 -> node 0 -> node 1 (interior pointer, 8 bytes in).
//! let graph = HeapGraph::from_parts(
//!     vec![32, 64],
//!     &[GraphEdge { source: 0, target: 1, target_offset: 8 }],
//!     &[RootEdge::new(0, 0, 0, 0)],
//!     &Heuristics::none(),
//! );
//! assert_eq!(graph.out_edges(0).next().unwrap().node(), 1);
//! assert!(graph.out_edges(0).next().unwrap().is_interior());
//! ```
//!
//! Memory: 8 bytes of size plus 4 of row offset per node, 4 bytes per
//! edge, and (only once paths are asked for) the same again for in-edges.
//! Ten million nodes and thirty million edges take about 320 MB.

use std::sync::OnceLock;

use anyhow::bail;
use heapdump_formats::constants::Machine;
use heapdump_formats::read::DumpView;
use heapdump_formats::records::{AllocationRecord, EdgeRecord, edge_flags};

use crate::heuristics::{Heuristic, Heuristics};

/// Bit of a packed edge target: the pointer is interior and no heuristic
/// turned it into a start pointer.
const INTERIOR: u32 = 1 << 31;
/// Bit of a packed edge target: the pointer is interior but a heuristic
/// counts it as a start pointer.
const BY_HEURISTIC: u32 = 1 << 30;
const NODE_MASK: u32 = BY_HEURISTIC - 1;

/// The most nodes a graph holds: node ids share their `u32` with two flag bits.
pub const MAX_NODES: usize = NODE_MASK as usize;

/// One packed out- or in-edge: the node at the other end and how the
/// pointer points at the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedEdge(u32);

impl PackedEdge {
    fn new(node: u32, interior: bool, heuristic: bool) -> PackedEdge {
        let mut bits = node & NODE_MASK;
        if heuristic {
            bits |= BY_HEURISTIC;
        } else if interior {
            bits |= INTERIOR;
        }
        PackedEdge(bits)
    }

    /// The node at the other end (the target of an out-edge, the source
    /// of an in-edge).
    #[inline]
    pub fn node(self) -> u32 {
        self.0 & NODE_MASK
    }

    /// An interior pointer that no enabled heuristic accepted.
    #[inline]
    pub fn is_interior(self) -> bool {
        self.0 & INTERIOR != 0
    }

    /// An interior pointer that an enabled heuristic counts as a start pointer.
    #[inline]
    pub fn is_by_heuristic(self) -> bool {
        self.0 & BY_HEURISTIC != 0
    }

    /// A pointer to the first byte of the target.
    #[inline]
    pub fn is_start(self) -> bool {
        self.0 & (INTERIOR | BY_HEURISTIC) == 0
    }
}

/// A pointer from one allocation into another, for [`HeapGraph::from_parts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphEdge {
    /// Source node.
    pub source: u32,
    /// Target node.
    pub target: u32,
    /// Offset within the target the pointer points at (0: start pointer).
    pub target_offset: u64,
}

/// A pointer found in a root (a thread's registers or stack, TLS, a data
/// segment) into an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootEdge {
    /// The root, an index in the dump's `Roots`.
    pub root: u32,
    /// The allocation pointed into.
    pub target: u32,
    /// Offset of the pointer word within the root.
    pub source_offset: u64,
    /// Offset within the target the pointer points at (0: start pointer).
    pub target_offset: u64,
    /// For an interior pointer, the enabled heuristic that accepts it.
    pub heuristic: Option<Heuristic>,
}

impl RootEdge {
    /// A root edge before heuristics are applied.
    pub fn new(root: u32, target: u32, source_offset: u64, target_offset: u64) -> RootEdge {
        RootEdge {
            root,
            target,
            source_offset,
            target_offset,
            heuristic: None,
        }
    }

    /// Counts as a start pointer (really one, or by a heuristic).
    pub fn is_start_like(&self) -> bool {
        self.target_offset == 0 || self.heuristic.is_some()
    }
}

/// Rows of a CSR array: `targets[start[n] .. start[n + 1]]` belong to node `n`.
#[derive(Debug, Default)]
struct Csr {
    start: Vec<u32>,
    edges: Vec<PackedEdge>,
}

impl Csr {
    #[inline]
    fn row(&self, node: u32) -> &[PackedEdge] {
        let n = node as usize;
        match (self.start.get(n), self.start.get(n + 1)) {
            (Some(&a), Some(&b)) => self.edges.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// The heap as a graph. See the [module docs](self).
#[derive(Debug)]
pub struct HeapGraph {
    sizes: Vec<u64>,
    out: Csr,
    /// Out-edge slots that a heuristic accepted, with which one, sorted by slot.
    heuristic_slots: Vec<(u32, Heuristic)>,
    root_edges: Vec<RootEdge>,
    /// Indexes into `root_edges`, sorted by target.
    root_edges_by_target: Vec<u32>,
    in_edges: OnceLock<Csr>,
    skipped_edges: u64,
    heuristics: Heuristics,
    /// Nodes whose recovered type holds no pointer, one bit each: their
    /// out-edges were left out (empty when no types were given).
    pointer_free: Vec<u64>,
    /// How many out-edges of those nodes were left out.
    pointer_free_edges: u64,
}

/// A set of nodes as one bit each.
fn node_bits(nodes: &[bool]) -> Vec<u64> {
    let mut bits = vec![0u64; nodes.len().div_ceil(64)];
    for (i, _) in nodes.iter().enumerate().filter(|(_, on)| **on) {
        bits[i / 64] |= 1 << (i % 64);
    }
    bits
}

fn has_bit(bits: &[u64], node: u32) -> bool {
    bits.get(node as usize / 64)
        .is_some_and(|w| w & (1 << (node % 64)) != 0)
}

/// Whether the graph keeps edge record `e` (`valid` for the dump) as an
/// out-edge: not a root's, and not out of a block whose type holds no
/// pointer. The build and [`HeapGraph::edge_records`] must agree on it.
fn keeps_out_edge(e: &EdgeRecord, valid: bool, pointer_free: &[u64]) -> bool {
    e.flags & edge_flags::FROM_ROOT == 0 && valid && !has_bit(pointer_free, e.source)
}

impl HeapGraph {
    /// Builds the graph of a dump. Edges whose source or target index is
    /// out of range, or whose target offset is past the target's end, are
    /// skipped and counted ([`skipped_edges`](Self::skipped_edges));
    /// `heapdump verify` says what is wrong with them. The graph knows no
    /// types, so every edge is kept even with
    /// [`Heuristic::PointerFreeTypes`]: [`crate::analysis::HeapAnalysis::new`]
    /// recovers them and calls [`build_typed`](Self::build_typed).
    pub fn build(view: &DumpView<'_>, heuristics: &Heuristics) -> anyhow::Result<HeapGraph> {
        Self::build_typed(view, heuristics, &[])
    }

    /// [`build`](Self::build), leaving out the out-edges of the nodes
    /// `pointer_free` marks (indexed by node; shorter means the rest are
    /// unmarked) when `heuristics` has [`Heuristic::PointerFreeTypes`]:
    /// blocks whose recovered type holds no pointer. How many were left out
    /// is [`pointer_free_edges`](Self::pointer_free_edges).
    pub fn build_typed(
        view: &DumpView<'_>,
        heuristics: &Heuristics,
        pointer_free: &[bool],
    ) -> anyhow::Result<HeapGraph> {
        let allocations = view.allocations();
        if allocations.len() > MAX_NODES {
            bail!(
                "the dump has {} allocations; the heap graph holds at most {MAX_NODES}",
                allocations.len()
            );
        }
        let sizes: Vec<u64> = allocations.iter().map(|a| a.size).collect();
        let aligns: Vec<u32> = allocations.iter().map(|a| a.align).collect();
        let roots = view.roots().len();
        let group_width = Machine(view.process().machine).hashbrown_group_width();
        let edges = view.edges();
        if edges.len() >= u32::MAX as usize {
            bail!(
                "the dump has {} edges; the heap graph holds fewer than {}",
                edges.len(),
                u32::MAX
            );
        }
        Ok(Self::assemble(
            sizes,
            &aligns,
            roots,
            group_width,
            heuristics,
            pointer_free,
            || edges.iter(),
        ))
    }

    /// Builds a graph from plain lists (for tests and for callers that
    /// have no dump). Every allocation is taken to be 16-aligned (as
    /// `malloc` returns them) and the machine x86_64 (hashbrown groups of 16).
    pub fn from_parts(
        sizes: Vec<u64>,
        edges: &[GraphEdge],
        root_edges: &[RootEdge],
        heuristics: &Heuristics,
    ) -> HeapGraph {
        Self::from_parts_typed(sizes, edges, root_edges, heuristics, &[])
    }

    /// [`from_parts`](Self::from_parts) with the nodes whose type holds no
    /// pointer marked, as [`build_typed`](Self::build_typed) takes them.
    pub fn from_parts_typed(
        sizes: Vec<u64>,
        edges: &[GraphEdge],
        root_edges: &[RootEdge],
        heuristics: &Heuristics,
        pointer_free: &[bool],
    ) -> HeapGraph {
        let aligns = vec![16u32; sizes.len()];
        let roots = root_edges
            .iter()
            .map(|r| r.root as usize + 1)
            .max()
            .unwrap_or(0);
        let records = move || {
            let from_allocations = edges.iter().map(|e| EdgeRecord {
                source: e.source,
                target: e.target,
                source_offset: 0,
                target_offset: e.target_offset,
                flags: 0,
                reserved: 0,
            });
            let from_roots = root_edges.iter().map(|r| EdgeRecord {
                source: r.root,
                target: r.target,
                source_offset: r.source_offset,
                target_offset: r.target_offset,
                flags: edge_flags::FROM_ROOT,
                reserved: 0,
            });
            from_allocations.chain(from_roots)
        };
        Self::assemble(sizes, &aligns, roots, 16, heuristics, pointer_free, records)
    }

    /// One pass over the edge records when they come sorted by source (as
    /// the format asks): each row is appended as it comes. A dump whose
    /// edges are out of order gets a second try with a counting sort (count
    /// each source's out-degree, then place the targets), so the result is
    /// the same either way.
    fn assemble<I: Iterator<Item = EdgeRecord>>(
        sizes: Vec<u64>,
        aligns: &[u32],
        roots: usize,
        group_width: u64,
        heuristics: &Heuristics,
        pointer_free: &[bool],
        records: impl Fn() -> I,
    ) -> HeapGraph {
        let n = sizes.len();
        let pointer_free = if heuristics.contains(Heuristic::PointerFreeTypes) {
            node_bits(pointer_free)
        } else {
            Vec::new()
        };
        let mut pointer_free_edges = 0u64;
        let valid = |e: &EdgeRecord| is_valid_edge(e, &sizes, roots);
        let heuristic_of = |e: &EdgeRecord| {
            if e.target_offset == 0 {
                None
            } else {
                let t = e.target as usize;
                heuristics.first_match(sizes[t], aligns[t], e.target_offset, group_width)
            }
        };
        let mut start = vec![0u32; n + 1];
        let mut skipped_edges = 0u64;
        let mut root_edges = Vec::new();
        let mut edges: Vec<PackedEdge> = Vec::with_capacity(records().size_hint().0);
        let mut heuristic_slots = Vec::new();
        let mut sorted = true;
        // Sorted pass: `start[s + 1]` counts row `s` while it is appended.
        let mut last_source = 0u32;
        for e in records() {
            if !valid(&e) {
                skipped_edges += 1;
                continue;
            }
            if e.flags & edge_flags::FROM_ROOT != 0 {
                let mut edge = RootEdge::new(e.source, e.target, e.source_offset, e.target_offset);
                edge.heuristic = heuristic_of(&e);
                root_edges.push(edge);
                continue;
            }
            if has_bit(&pointer_free, e.source) {
                pointer_free_edges += 1;
                continue;
            }
            start[e.source as usize + 1] += 1;
            if !sorted {
                continue;
            }
            if e.source < last_source {
                sorted = false;
                edges = Vec::new();
                heuristic_slots = Vec::new();
                continue;
            }
            last_source = e.source;
            let heuristic = heuristic_of(&e);
            if let Some(h) = heuristic {
                heuristic_slots.push((edges.len() as u32, h));
            }
            edges.push(PackedEdge::new(
                e.target,
                e.target_offset != 0,
                heuristic.is_some(),
            ));
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        if !sorted {
            let total = start[n] as usize;
            let mut cursor: Vec<u32> = start[..n].to_vec();
            edges = vec![PackedEdge(0); total];
            for e in records() {
                if !keeps_out_edge(&e, valid(&e), &pointer_free) {
                    continue;
                }
                let heuristic = heuristic_of(&e);
                let slot = cursor[e.source as usize];
                cursor[e.source as usize] += 1;
                edges[slot as usize] =
                    PackedEdge::new(e.target, e.target_offset != 0, heuristic.is_some());
                if let Some(h) = heuristic {
                    heuristic_slots.push((slot, h));
                }
            }
            heuristic_slots.sort_unstable_by_key(|&(slot, _)| slot);
        }
        edges.shrink_to_fit();
        let mut root_edges_by_target: Vec<u32> = (0..root_edges.len() as u32).collect();
        root_edges_by_target.sort_by_key(|&i| (root_edges[i as usize].target, i));
        HeapGraph {
            sizes,
            out: Csr { start, edges },
            heuristic_slots,
            root_edges,
            root_edges_by_target,
            in_edges: OnceLock::new(),
            skipped_edges,
            heuristics: *heuristics,
            pointer_free,
            pointer_free_edges,
        }
    }

    /// Edges between blocks left out because their source's recovered
    /// type holds no pointer ([`Heuristic::PointerFreeTypes`]).
    pub fn pointer_free_edges(&self) -> u64 {
        self.pointer_free_edges
    }

    /// Number of nodes (allocations).
    pub fn node_count(&self) -> usize {
        self.sizes.len()
    }

    /// Number of edges between allocations.
    pub fn edge_count(&self) -> usize {
        self.out.edges.len()
    }

    /// Edges the build skipped because they were malformed.
    pub fn skipped_edges(&self) -> u64 {
        self.skipped_edges
    }

    /// The heuristics the graph was built with.
    pub fn heuristics(&self) -> Heuristics {
        self.heuristics
    }

    /// Size in bytes of node `node` (0 for an unknown node).
    #[inline]
    pub fn size(&self, node: u32) -> u64 {
        self.sizes.get(node as usize).copied().unwrap_or(0)
    }

    /// All node sizes, indexed by node.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// The out-edges of `node`, in the dump's order (by source offset).
    #[inline]
    pub fn out_edges(&self, node: u32) -> impl ExactSizeIterator<Item = PackedEdge> + '_ {
        self.out.row(node).iter().copied()
    }

    /// The out-edges of `node` as a slice.
    #[inline]
    pub fn out_row(&self, node: u32) -> &[PackedEdge] {
        self.out.row(node)
    }

    /// Starts loading where `node`'s out-edge row begins (a hint, for
    /// searches that know which node they will visit soon).
    #[inline]
    pub fn prefetch_row_start(&self, node: u32) {
        crate::prefetch::prefetch(&self.out.start, node as usize);
    }

    /// Starts loading `node`'s out-edge row. Reads where the row begins, so
    /// call [`prefetch_row_start`](Self::prefetch_row_start) well before.
    #[inline]
    pub fn prefetch_row(&self, node: u32) {
        let start = self.out.start.get(node as usize).copied().unwrap_or(0);
        crate::prefetch::prefetch(&self.out.edges, start as usize);
    }

    /// The first out-edge slot of `node` (slots number all out-edges in row order).
    #[inline]
    pub fn out_row_start(&self, node: u32) -> u32 {
        self.out.start.get(node as usize).copied().unwrap_or(0)
    }

    /// Which heuristic accepted the out-edge in `slot`, if one did.
    pub fn heuristic_of_slot(&self, slot: u32) -> Option<Heuristic> {
        self.heuristic_slots
            .binary_search_by_key(&slot, |&(s, _)| s)
            .ok()
            .map(|i| self.heuristic_slots[i].1)
    }

    /// The pointers found in roots, in the dump's order.
    pub fn root_edges(&self) -> &[RootEdge] {
        &self.root_edges
    }

    /// The root edges that point into `node`.
    pub fn root_edges_to(&self, node: u32) -> impl Iterator<Item = &RootEdge> + '_ {
        let by_target = &self.root_edges_by_target;
        let first = by_target.partition_point(|&i| self.root_edges[i as usize].target < node);
        by_target[first..]
            .iter()
            .map(|&i| &self.root_edges[i as usize])
            .take_while(move |e| e.target == node)
    }

    /// The in-edges of `node` (each [`PackedEdge::node`] is a source). The
    /// in-edge array is built on first use (as big as the out-edge array).
    pub fn in_edges(&self, node: u32) -> impl ExactSizeIterator<Item = PackedEdge> + '_ {
        self.in_csr().row(node).iter().copied()
    }

    fn in_csr(&self) -> &Csr {
        self.in_edges.get_or_init(|| {
            let n = self.sizes.len();
            let mut start = vec![0u32; n + 1];
            for e in &self.out.edges {
                start[e.node() as usize + 1] += 1;
            }
            for i in 0..n {
                start[i + 1] += start[i];
            }
            let mut cursor: Vec<u32> = start[..n].to_vec();
            let mut edges = vec![PackedEdge(0); self.out.edges.len()];
            for source in 0..n as u32 {
                for e in self.out.row(source) {
                    let t = e.node() as usize;
                    let slot = cursor[t] as usize;
                    cursor[t] += 1;
                    edges[slot] = PackedEdge((e.0 & !NODE_MASK) | source);
                }
            }
            Csr { start, edges }
        })
    }
}

/// Whether the graph keeps edge record `e` of a dump with these block
/// `sizes` and `roots` roots: both ends exist, and an interior pointer
/// points inside its target (a start pointer, offset 0, always does).
fn is_valid_edge(e: &EdgeRecord, sizes: &[u64], roots: usize) -> bool {
    let n = sizes.len();
    (e.target as usize) < n
        && (e.target_offset == 0 || e.target_offset < sizes[e.target as usize])
        && if e.flags & edge_flags::FROM_ROOT != 0 {
            (e.source as usize) < roots
        } else {
            (e.source as usize) < n
        }
}

impl HeapGraph {
    /// The index in `view`'s `Edges` of the record behind each out-edge
    /// slot (`view` being the dump the graph was built from), for callers
    /// that need what the graph does not keep: the pointer's offset in its
    /// source. 4 bytes per edge, built on each call. Row order is record
    /// order within a source (as the build places them, sorted or not).
    pub fn edge_records(&self, view: &DumpView<'_>) -> Vec<u32> {
        let n = self.sizes.len();
        let roots = view.roots().len();
        let mut cursor: Vec<u32> = self.out.start[..n].to_vec();
        let mut records = vec![0u32; self.out.edges.len()];
        for (i, e) in view.edges().iter().enumerate() {
            let valid = is_valid_edge(&e, &self.sizes, roots);
            if !keeps_out_edge(&e, valid, &self.pointer_free) {
                continue;
            }
            let slot = &mut cursor[e.source as usize];
            if let Some(record) = records.get_mut(*slot as usize) {
                *record = i as u32;
            }
            *slot += 1;
        }
        records
    }
}

/// The allocation whose block holds `address` (start or interior), by
/// binary search over the address-sorted `Allocations`.
pub fn find_allocation(view: &DumpView<'_>, address: u64) -> Option<(u32, AllocationRecord)> {
    let allocations = view.allocations();
    let (mut lo, mut hi) = (0usize, allocations.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let a = allocations.get(mid)?;
        if a.address <= address {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let index = lo.checked_sub(1)?;
    let a = allocations.get(index)?;
    (address - a.address < a.size.max(1)).then_some((index as u32, a))
}

/// The (source offset, target offset) of a pointer from allocation `source`
/// to allocation `target`, read back from the dump's edges (binary search:
/// the format keeps allocation-sourced edges sorted by source). A start
/// pointer is preferred when there are several.
pub fn edge_offsets(view: &DumpView<'_>, source: u32, target: u32) -> Option<(u64, u64)> {
    let edges = view.edges();
    let key = |e: &EdgeRecord| (e.flags & edge_flags::FROM_ROOT != 0, e.source);
    let (mut lo, mut hi) = (0usize, edges.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(&edges.get(mid)?) < (false, source) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut best: Option<(u64, u64)> = None;
    for i in lo..edges.len() {
        let e = edges.get(i)?;
        if key(&e) != (false, source) {
            break;
        }
        if e.target == target && best.is_none_or(|(_, t)| t != 0) {
            best = Some((e.source_offset, e.target_offset));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_rows_hold_each_sources_targets_and_in_edges_mirror_them() {
        let edges = [
            GraphEdge {
                source: 2,
                target: 0,
                target_offset: 0,
            },
            GraphEdge {
                source: 0,
                target: 1,
                target_offset: 8,
            },
            GraphEdge {
                source: 0,
                target: 2,
                target_offset: 0,
            },
        ];
        let g = HeapGraph::from_parts(vec![16, 16, 16], &edges, &[], &Heuristics::none());
        let row: Vec<u32> = g.out_edges(0).map(PackedEdge::node).collect();
        assert_eq!(row, [1, 2]);
        assert!(g.out_edges(0).next().unwrap().is_interior());
        assert_eq!(g.out_edges(1).len(), 0);
        let into0: Vec<u32> = g.in_edges(0).map(PackedEdge::node).collect();
        assert_eq!(into0, [2]);
        let into1: Vec<PackedEdge> = g.in_edges(1).collect();
        assert_eq!(into1.len(), 1);
        assert!(into1[0].is_interior());
        assert_eq!(into1[0].node(), 0);
    }

    #[test]
    fn edges_out_of_pointer_free_blocks_are_left_out_only_with_that_heuristic() {
        // Root -> 0 (a byte buffer) -> 1; 2 -> 1; 0 is also pointed at by 2.
        let edges = [
            GraphEdge {
                source: 0,
                target: 1,
                target_offset: 0,
            },
            GraphEdge {
                source: 2,
                target: 0,
                target_offset: 0,
            },
            GraphEdge {
                source: 0,
                target: 2,
                target_offset: 0,
            },
        ];
        let roots = [RootEdge::new(0, 0, 0, 0)];
        let pointer_free = [true];
        let typed = HeapGraph::from_parts_typed(
            vec![64, 72, 8],
            &edges,
            &roots,
            &Heuristics::default(),
            &pointer_free,
        );
        assert_eq!(typed.pointer_free_edges(), 2);
        assert_eq!(typed.edge_count(), 1);
        assert_eq!(typed.out_edges(0).count(), 0);
        assert_eq!(typed.out_row(2), &[PackedEdge::new(0, false, false)]);
        let untyped = HeapGraph::from_parts_typed(
            vec![64, 72, 8],
            &edges,
            &roots,
            &Heuristics::none(),
            &pointer_free,
        );
        assert_eq!(untyped.pointer_free_edges(), 0);
        assert_eq!(untyped.edge_count(), 3);
    }

    #[test]
    fn malformed_edges_are_skipped_and_counted() {
        let edges = [
            GraphEdge {
                source: 0,
                target: 7,
                target_offset: 0,
            },
            GraphEdge {
                source: 0,
                target: 1,
                target_offset: 16,
            },
        ];
        let g = HeapGraph::from_parts(
            vec![16, 16],
            &edges,
            &[RootEdge::new(0, 9, 0, 0)],
            &Heuristics::none(),
        );
        assert_eq!(g.skipped_edges(), 3);
        assert_eq!(g.edge_count(), 0);
        assert!(g.root_edges().is_empty());
    }
}
