//! Leak classes with valgrind memcheck's semantics, over a heap graph whose
//! edges the pointer heuristics ([`crate::heuristics`]) have marked.
//!
//! The classes, as memcheck's leak checker (`mc_leakcheck.c`) computes them:
//!
//! 1. **Still reachable**: reached from a root through start pointers only
//!    (a pointer to the block's first byte, or an interior pointer an
//!    enabled heuristic accepts), each step from a still-reachable block.
//! 2. **Possibly lost**: reached from a root some other way: the path has
//!    at least one interior pointer (or passes a possibly-lost block).
//! 3. Blocks not reached at all are visited **in address order**. Each one
//!    still unvisited leads a "clique": every not-yet-visited block reachable
//!    from it through any pointer (start or interior) becomes **indirectly
//!    lost** and its bytes are added to the leader's indirect bytes. A
//!    leader reached later from another leader is absorbed (indirectly lost,
//!    its indirect bytes passed on). The leaders left are **definitely
//!    lost**. So in a lost cycle the lowest-addressed block is definitely
//!    lost; a self-cycle is definitely lost.
//!
//! ```
//! use heapdump_analyze::graph::{GraphEdge, HeapGraph};
//! use heapdump_analyze::heuristics::Heuristics;
//! use heapdump_analyze::leaks::{LeakAnalysis, LeakClass};
//! // Two blocks pointing at each other, nothing else: a lost 2-cycle.
//! let edges = [
//!     GraphEdge { source: 0, target: 1, target_offset: 0 },
//!     GraphEdge { source: 1, target: 0, target_offset: 0 },
//! ];
//! let graph = HeapGraph::from_parts(vec![16, 32], &edges, &[], &Heuristics::none());
//! let leaks = LeakAnalysis::compute(&graph);
//! assert_eq!(leaks.class(0), LeakClass::DefinitelyLost);
//! assert_eq!(leaks.class(1), LeakClass::IndirectlyLost);
//! assert_eq!(leaks.indirect_bytes(0), 32);
//! ```

use serde::Serialize;

use crate::graph::HeapGraph;
use crate::heuristics::{Heuristic, Heuristics};

/// Memcheck's leak classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum LeakClass {
    /// No pointer from a root or a reached block: the leader of a lost structure.
    DefinitelyLost = 0,
    /// Not reached from a root; reached from a definitely-lost block.
    IndirectlyLost = 1,
    /// Reached from a root, but only through an interior pointer.
    PossiblyLost = 2,
    /// Reached from a root through start pointers.
    StillReachable = 3,
}

impl LeakClass {
    /// Every class, in the order memcheck's summary lists them.
    pub const ALL: [LeakClass; 4] = [
        LeakClass::DefinitelyLost,
        LeakClass::IndirectlyLost,
        LeakClass::PossiblyLost,
        LeakClass::StillReachable,
    ];

    /// Memcheck's words: `definitely lost`, `indirectly lost`, ….
    pub fn words(self) -> &'static str {
        match self {
            LeakClass::DefinitelyLost => "definitely lost",
            LeakClass::IndirectlyLost => "indirectly lost",
            LeakClass::PossiblyLost => "possibly lost",
            LeakClass::StillReachable => "still reachable",
        }
    }

    /// The short name memcheck's `--show-leak-kinds` uses.
    pub fn kind_name(self) -> &'static str {
        match self {
            LeakClass::DefinitelyLost => "definite",
            LeakClass::IndirectlyLost => "indirect",
            LeakClass::PossiblyLost => "possible",
            LeakClass::StillReachable => "reachable",
        }
    }
}

// States during the computation (memcheck's Reachedness).
const UNREACHED: u8 = 0;
const INDIRECT: u8 = 1;
const POSSIBLE: u8 = 2;
const REACHABLE: u8 = 3;

/// The leak class of every node, and for definitely-lost blocks the bytes
/// they hold indirectly.
#[derive(Clone, Debug)]
pub struct LeakAnalysis {
    /// One of the state constants per node; after `compute`, UNREACHED
    /// means definitely lost.
    state: Vec<u8>,
    /// Definitely-lost leaders and their indirect bytes, sorted by node.
    indirect: Vec<(u32, u64)>,
    /// Still-reachable blocks reached only through a heuristic's pointer,
    /// with the heuristic, sorted by node.
    via_heuristic: Vec<(u32, Heuristic)>,
}

impl LeakAnalysis {
    /// Classifies every node of `graph`. Linear in nodes and edges; no recursion.
    pub fn compute(graph: &HeapGraph) -> LeakAnalysis {
        let n = graph.node_count();
        let mut state = vec![UNREACHED; n];
        let mut stack: Vec<u32> = Vec::new();

        // 1. Still reachable: roots and still-reachable blocks, through
        //    start-like pointers. The same walk sees every pointer out of
        //    a still-reachable block, so it keeps the interior ones' targets
        //    (the seeds of step 2) and the heuristic ones (for
        //    `reached_via_heuristic`) instead of walking the graph again.
        for e in graph.root_edges() {
            if e.is_start_like() && state[e.target as usize] != REACHABLE {
                state[e.target as usize] = REACHABLE;
                stack.push(e.target);
            }
        }
        let with_heuristics = graph.heuristics() != Heuristics::none();
        let mut interior_targets: Vec<u32> = Vec::new();
        let mut heuristic_targets: Vec<(u32, Heuristic)> = Vec::new();
        // The walk's order does not matter, so it takes the stack's top
        // nodes in batches and first loads each one's row: those cache
        // misses overlap instead of each row waiting for its own.
        const BATCH: usize = 32;
        let mut batch: Vec<u32> = Vec::with_capacity(BATCH);
        let mut touched = 0u32;
        while !stack.is_empty() {
            batch.clear();
            batch.extend(stack.drain(stack.len().saturating_sub(BATCH)..));
            for &v in &batch {
                touched ^= graph.out_row(v).first().map_or(0, |e| e.node());
            }
            for &v in &batch {
                let row = graph.out_row(v);
                for (i, &e) in row.iter().enumerate() {
                    let t = e.node();
                    if e.is_interior() {
                        interior_targets.push(t);
                        continue;
                    }
                    if with_heuristics
                        && e.is_by_heuristic()
                        && let Some(h) = graph.heuristic_of_slot(graph.out_row_start(v) + i as u32)
                    {
                        heuristic_targets.push((t, h));
                    }
                    if state[t as usize] != REACHABLE {
                        state[t as usize] = REACHABLE;
                        stack.push(t);
                    }
                }
            }
        }
        std::hint::black_box(touched);

        // 2. Possibly lost: everything else reached from a root or a
        //    still-reachable block, through any pointer. Every pointer
        //    from a still-reachable block into an unreached one is
        //    interior (step 1 followed the others).
        for e in graph.root_edges() {
            if state[e.target as usize] == UNREACHED {
                state[e.target as usize] = POSSIBLE;
                stack.push(e.target);
            }
        }
        for t in interior_targets {
            if state[t as usize] == UNREACHED {
                state[t as usize] = POSSIBLE;
                stack.push(t);
            }
        }
        while let Some(v) = stack.pop() {
            for e in graph.out_edges(v) {
                if state[e.node() as usize] == UNREACHED {
                    state[e.node() as usize] = POSSIBLE;
                    stack.push(e.node());
                }
            }
        }

        // 3. Cliques of unreached blocks, leaders in address order (node
        //    order is address order). Indirect bytes are kept densely
        //    while leaders are absorbed, then only the survivors' are kept.
        let mut indirect_dense: Vec<u64> = Vec::new();
        let mut leaders: Vec<u32> = Vec::new();
        for leader in 0..n as u32 {
            if state[leader as usize] != UNREACHED {
                continue;
            }
            leaders.push(leader);
            let mut gathered = 0u64;
            stack.push(leader);
            while let Some(v) = stack.pop() {
                for e in graph.out_edges(v) {
                    let t = e.node();
                    if state[t as usize] == UNREACHED && t != leader {
                        state[t as usize] = INDIRECT;
                        gathered = gathered.saturating_add(graph.size(t));
                        // A leader absorbed here hands over what it held.
                        if let Some(held) = indirect_dense.get_mut(t as usize) {
                            gathered = gathered.saturating_add(std::mem::take(held));
                        }
                        stack.push(t);
                    }
                }
            }
            if gathered != 0 {
                if indirect_dense.len() <= leader as usize {
                    indirect_dense.resize(leader as usize + 1, 0);
                }
                indirect_dense[leader as usize] = gathered;
            }
        }
        let indirect: Vec<(u32, u64)> = leaders
            .into_iter()
            .filter(|&l| state[l as usize] == UNREACHED)
            .filter_map(|l| {
                let bytes = indirect_dense.get(l as usize).copied().unwrap_or(0);
                (bytes != 0).then_some((l, bytes))
            })
            .collect();
        drop(indirect_dense);

        let via_heuristic = reached_via_heuristic(graph, &state, heuristic_targets);
        LeakAnalysis {
            state,
            indirect,
            via_heuristic,
        }
    }

    /// The class of `node`.
    #[inline]
    pub fn class(&self, node: u32) -> LeakClass {
        match self.state.get(node as usize) {
            Some(&INDIRECT) => LeakClass::IndirectlyLost,
            Some(&POSSIBLE) => LeakClass::PossiblyLost,
            Some(&REACHABLE) => LeakClass::StillReachable,
            _ => LeakClass::DefinitelyLost,
        }
    }

    /// Number of classified nodes.
    pub fn node_count(&self) -> usize {
        self.state.len()
    }

    /// For a definitely-lost block, the bytes of the blocks it holds
    /// (memcheck's "indirect" bytes of its loss record); 0 otherwise.
    pub fn indirect_bytes(&self, node: u32) -> u64 {
        self.indirect
            .binary_search_by_key(&node, |&(n, _)| n)
            .map_or(0, |i| self.indirect[i].1)
    }

    /// The definitely-lost blocks, in address order.
    pub fn definitely_lost(&self) -> impl Iterator<Item = u32> + '_ {
        self.state
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s == UNREACHED)
            .map(|(i, _)| i as u32)
    }

    /// For a still-reachable block that no start pointer from a root or a
    /// reached block points to, the heuristic whose pointer reached it
    /// (memcheck's "reachable via heuristic").
    pub fn via_heuristic(&self, node: u32) -> Option<Heuristic> {
        self.via_heuristic
            .binary_search_by_key(&node, |&(n, _)| n)
            .ok()
            .map(|i| self.via_heuristic[i].1)
    }

    /// Blocks and bytes per class, in [`LeakClass::ALL`] order, and per
    /// heuristic for still-reachable blocks reached only through one.
    pub fn totals(&self, graph: &HeapGraph) -> ([ClassTotal; 4], Vec<HeuristicTotal>) {
        let mut totals = LeakClass::ALL.map(|class| ClassTotal {
            class,
            blocks: 0,
            bytes: 0,
        });
        for (node, &size) in graph.sizes().iter().enumerate() {
            let t = &mut totals[self.class(node as u32) as usize];
            t.blocks += 1;
            t.bytes = t.bytes.saturating_add(size);
        }
        let mut by_heuristic: Vec<HeuristicTotal> = Vec::new();
        for &(node, h) in &self.via_heuristic {
            let i = match by_heuristic.iter().position(|t| t.heuristic == h) {
                Some(i) => i,
                None => {
                    by_heuristic.push(HeuristicTotal {
                        heuristic: h,
                        blocks: 0,
                        bytes: 0,
                    });
                    by_heuristic.len() - 1
                }
            };
            by_heuristic[i].blocks += 1;
            by_heuristic[i].bytes = by_heuristic[i].bytes.saturating_add(graph.size(node));
        }
        by_heuristic.sort_by_key(|t| t.heuristic);
        (totals, by_heuristic)
    }
}

/// Memcheck marks a still-reachable block "via heuristic" when a heuristic
/// made it reachable and clears the mark when any start pointer (from a
/// root or a reached block) is found to it. The same, without depending
/// on the scan order: reached by a heuristic pointer from a root or a
/// still-reachable block, and by no start pointer from a reached source.
fn reached_via_heuristic(
    graph: &HeapGraph,
    state: &[u8],
    heuristic_targets: Vec<(u32, Heuristic)>,
) -> Vec<(u32, Heuristic)> {
    if graph.heuristics() == Heuristics::none() {
        return Vec::new();
    }
    // First the candidates (rare: only heuristic pointers, those from
    // still-reachable blocks gathered by step 1), then one pass over start
    // pointers that only looks at candidate targets.
    let mut candidates: Vec<(u32, Heuristic)> = Vec::new();
    for e in graph.root_edges() {
        if e.target_offset != 0
            && let Some(h) = e.heuristic
        {
            candidates.push((e.target, h));
        }
    }
    candidates.extend(heuristic_targets);
    if candidates.is_empty() {
        return Vec::new();
    }
    candidates.sort_unstable();
    candidates.dedup_by_key(|&mut (n, _)| n);
    let mut is_candidate = vec![false; graph.node_count()];
    for &(n, _) in &candidates {
        is_candidate[n as usize] = true;
    }
    let mut has_start = vec![false; graph.node_count()];
    for e in graph.root_edges() {
        if e.target_offset == 0 {
            has_start[e.target as usize] = true;
        }
    }
    for v in 0..graph.node_count() as u32 {
        let s = state[v as usize];
        if s != REACHABLE && s != POSSIBLE {
            continue;
        }
        for e in graph.out_row(v) {
            if e.is_start() && is_candidate[e.node() as usize] {
                has_start[e.node() as usize] = true;
            }
        }
    }
    candidates.retain(|&(n, _)| !has_start[n as usize]);
    candidates
}

/// Blocks and bytes of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ClassTotal {
    /// The class.
    pub class: LeakClass,
    /// Blocks.
    pub blocks: u64,
    /// Bytes of these blocks themselves (memcheck's summary counts direct bytes).
    pub bytes: u64,
}

/// Still-reachable blocks reached only through one heuristic's pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HeuristicTotal {
    /// The heuristic.
    pub heuristic: Heuristic,
    /// Blocks.
    pub blocks: u64,
    /// Bytes.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{GraphEdge, RootEdge};

    fn edge(source: u32, target: u32, target_offset: u64) -> GraphEdge {
        GraphEdge {
            source,
            target,
            target_offset,
        }
    }

    fn root(target: u32, target_offset: u64) -> RootEdge {
        RootEdge::new(0, target, 0, target_offset)
    }

    fn classes(leaks: &LeakAnalysis) -> Vec<LeakClass> {
        (0..leaks.node_count() as u32)
            .map(|n| leaks.class(n))
            .collect()
    }

    #[test]
    fn lost_list_head_is_definitely_lost_and_rest_indirectly() {
        // 100 nodes of 48 bytes, node i -> node i+1; the head (node 0) has
        // no pointer to it.
        let edges: Vec<GraphEdge> = (0..99).map(|i| edge(i, i + 1, 0)).collect();
        let g = HeapGraph::from_parts(vec![48; 100], &edges, &[], &Heuristics::none());
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(leaks.class(0), LeakClass::DefinitelyLost);
        assert!((1..100).all(|n| leaks.class(n) == LeakClass::IndirectlyLost));
        assert_eq!(leaks.indirect_bytes(0), 99 * 48);
        let (totals, _) = leaks.totals(&g);
        assert_eq!((totals[0].blocks, totals[0].bytes), (1, 48));
        assert_eq!((totals[1].blocks, totals[1].bytes), (99, 99 * 48));
        assert_eq!(totals[2].blocks + totals[3].blocks, 0);
    }

    #[test]
    fn lost_list_whose_head_has_the_highest_address_absorbs_earlier_leaders() {
        // Node 2 -> 1 -> 0: node 0 and 1 are visited first as leaders and
        // absorbed when node 2 reaches them.
        let edges = [edge(2, 1, 0), edge(1, 0, 0)];
        let g = HeapGraph::from_parts(vec![10, 20, 30], &edges, &[], &Heuristics::none());
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(
            classes(&leaks),
            [
                LeakClass::IndirectlyLost,
                LeakClass::IndirectlyLost,
                LeakClass::DefinitelyLost
            ]
        );
        assert_eq!(leaks.indirect_bytes(2), 30);
        assert_eq!(leaks.indirect_bytes(1), 0);
    }

    #[test]
    fn lost_two_cycle_lowest_address_definitely_other_indirectly() {
        let edges = [edge(0, 1, 0), edge(1, 0, 0)];
        let g = HeapGraph::from_parts(vec![64, 64], &edges, &[], &Heuristics::none());
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(
            classes(&leaks),
            [LeakClass::DefinitelyLost, LeakClass::IndirectlyLost]
        );
        assert_eq!(leaks.indirect_bytes(0), 64);
    }

    #[test]
    fn self_cycle_is_definitely_lost() {
        let g = HeapGraph::from_parts(vec![24], &[edge(0, 0, 0)], &[], &Heuristics::none());
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(leaks.class(0), LeakClass::DefinitelyLost);
        assert_eq!(leaks.indirect_bytes(0), 0);
    }

    #[test]
    fn interior_only_block_is_possibly_lost_and_still_reachable_with_the_matching_heuristic() {
        // Root -> 0 (start) -> 1 at offset 16 (Rc::into_raw) -> 2 (start).
        let edges = [edge(0, 1, 16), edge(1, 2, 0)];
        let roots = [root(0, 0)];
        let sizes = vec![32, 40, 8];
        let plain = HeapGraph::from_parts(sizes.clone(), &edges, &roots, &Heuristics::none());
        let leaks = LeakAnalysis::compute(&plain);
        assert_eq!(
            classes(&leaks),
            [
                LeakClass::StillReachable,
                LeakClass::PossiblyLost,
                LeakClass::PossiblyLost
            ]
        );
        let rc = Heuristics::none().with(Heuristic::RcIntoRaw);
        let g = HeapGraph::from_parts(sizes.clone(), &edges, &roots, &rc);
        let leaks = LeakAnalysis::compute(&g);
        assert!(
            classes(&leaks)
                .iter()
                .all(|&c| c == LeakClass::StillReachable)
        );
        assert_eq!(leaks.via_heuristic(1), Some(Heuristic::RcIntoRaw));
        assert_eq!(leaks.via_heuristic(2), None);
        let (_, by_heuristic) = leaks.totals(&g);
        assert_eq!(
            by_heuristic,
            [HeuristicTotal {
                heuristic: Heuristic::RcIntoRaw,
                blocks: 1,
                bytes: 40
            }]
        );
        // A heuristic that does not match changes nothing.
        let tagged = Heuristics::none().with(Heuristic::Tagged);
        let g = HeapGraph::from_parts(sizes, &edges, &roots, &tagged);
        assert_eq!(LeakAnalysis::compute(&g).class(1), LeakClass::PossiblyLost);
    }

    #[test]
    fn start_pointer_from_a_possibly_lost_block_gives_possibly_lost() {
        // Root -> 0 (interior) -> 1 (start): both possibly lost, as memcheck
        // scans a possibly-lost block with "prior not definite".
        let g = HeapGraph::from_parts(
            vec![32, 32],
            &[edge(0, 1, 0)],
            &[root(0, 8)],
            &Heuristics::none(),
        );
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(
            classes(&leaks),
            [LeakClass::PossiblyLost, LeakClass::PossiblyLost]
        );
    }

    #[test]
    fn start_pointer_upgrades_a_block_also_reached_through_an_interior_one() {
        let g = HeapGraph::from_parts(
            vec![32, 32],
            &[edge(0, 1, 8)],
            &[root(0, 0), root(1, 0)],
            &Heuristics::none(),
        );
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(leaks.class(1), LeakClass::StillReachable);
    }

    #[test]
    fn hashbrown_shaped_block_is_reachable_only_with_the_hashbrown_heuristic() {
        // A HashMap<u64, u64> with 8 buckets on x86_64: 8 × 16 bytes of
        // buckets, then 8 + 16 control bytes; the map points at offset 128.
        let size = 8 * 16 + 8 + 16;
        assert!(Heuristic::Hashbrown.matches(size, 16, 128, 16));
        assert!(!Heuristic::Hashbrown.matches(size, 16, 120, 16));
        // The same table on aarch64 (groups of 8) is 8 bytes shorter.
        assert!(Heuristic::Hashbrown.matches(size - 8, 16, 128, 8));
        assert!(!Heuristic::Hashbrown.matches(size - 8, 16, 128, 16));
        // A HashSet<u8> with 16 buckets: 16 bytes of buckets, ctrl at 16.
        assert!(Heuristic::Hashbrown.matches(16 + 16 + 16, 16, 16, 16));
        // An Rc<[u8; 24]> (8-aligned) pointed 16 bytes in is not a table.
        assert!(!Heuristic::Hashbrown.matches(40, 8, 16, 16));
        let edges = [edge(0, 1, 128)];
        let roots = [root(0, 0)];
        let g = HeapGraph::from_parts(vec![48, size], &edges, &roots, &Heuristics::none());
        assert_eq!(LeakAnalysis::compute(&g).class(1), LeakClass::PossiblyLost);
        let g = HeapGraph::from_parts(vec![48, size], &edges, &roots, &Heuristics::default());
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(leaks.class(1), LeakClass::StillReachable);
        assert_eq!(leaks.via_heuristic(1), Some(Heuristic::Hashbrown));
    }

    #[test]
    fn unreached_blocks_never_point_into_reached_ones_classes() {
        // A lost block pointing at a still-reachable one leaves it reachable.
        let g = HeapGraph::from_parts(
            vec![8, 8],
            &[edge(1, 0, 0)],
            &[root(0, 0)],
            &Heuristics::none(),
        );
        let leaks = LeakAnalysis::compute(&g);
        assert_eq!(
            classes(&leaks),
            [LeakClass::StillReachable, LeakClass::DefinitelyLost]
        );
    }
}
