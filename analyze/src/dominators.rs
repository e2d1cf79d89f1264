//! The dominator tree of the heap graph and retained sizes.
//!
//! A virtual super-root points at every block a root points into and at
//! every definitely-lost block, so that lost structures get retained sizes
//! too. Block `d` dominates block `b` when every path from the super-root
//! to `b` passes through `d`: freeing `d` would make `b` unreachable. The
//! retained size of a block is its size plus the retained sizes of the
//! blocks it immediately dominates.
//!
//! The algorithm is semi-NCA (Georgiadis' variant of Lengauer–Tarjan,
//! as LLVM uses it): an iterative depth-first search numbers the nodes in
//! preorder, every later step works on flat arrays indexed by preorder
//! number (so walks up the tree touch nearby memory), semidominators come
//! from an iterative path-compressing `eval`, and immediate dominators from
//! the nearest-common-ancestor walk. No recursion anywhere.
//!
//! ```
//! use heapdump_analyze::dominators::{DominatorTree, Dominator};
//! use heapdump_analyze::graph::{GraphEdge, HeapGraph, RootEdge};
//! use heapdump_analyze::heuristics::Heuristics;
//! // root -> 0 -> {1, 2}
//! let e = |source, target| GraphEdge { source, target, target_offset: 0 };
//! let g = HeapGraph::from_parts(vec![10, 20, 30], &[e(0, 1), e(0, 2)],
//!     &[RootEdge::new(0, 0, 0, 0)], &Heuristics::none());
//! let tree = DominatorTree::compute(&g, &[]);
//! assert_eq!(tree.retained(0), 60);
//! assert_eq!(tree.idom(2), Dominator::Node(0));
//! assert_eq!(tree.idom(0), Dominator::SuperRoot);
//! ```

use fixedbitset::FixedBitSet;

use crate::graph::HeapGraph;
use crate::leaks::LeakAnalysis;

const NONE: u32 = u32::MAX;
/// `idom` value of a node whose immediate dominator is the super-root.
const SUPER_ROOT: u32 = u32::MAX - 1;

/// A node's immediate dominator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dominator {
    /// Another block.
    Node(u32),
    /// The virtual super-root: the block is pointed to by a root or is a
    /// definitely-lost leader, or it is reached from several of those.
    SuperRoot,
    /// The block is not reachable from the super-root (cannot happen when
    /// the definitely-lost blocks are passed as extra roots).
    Unreachable,
}

/// Immediate dominators and retained sizes, indexed by node.
#[derive(Clone, Debug)]
pub struct DominatorTree {
    idom: Vec<u32>,
    retained: Vec<u64>,
    reached: usize,
}

impl DominatorTree {
    /// Computes the tree. The super-root's children are the targets of
    /// `graph`'s root edges, then `extra_roots` (pass the definitely-lost
    /// blocks, [`crate::leaks::LeakAnalysis::definitely_lost`]).
    pub fn compute(graph: &HeapGraph, extra_roots: &[u32]) -> DominatorTree {
        let mut dfs = Dfs::new(graph.node_count());
        dfs.run(graph, graph.root_edges().iter().map(|e| e.target));
        dfs.run(graph, extra_roots.iter().copied());
        dfs.finish(graph)
    }

    /// The leak classes and the dominator tree with the definitely-lost
    /// blocks as extra roots (as [`LeakAnalysis::compute`] then
    /// [`compute`](Self::compute) with
    /// [`definitely_lost`](LeakAnalysis::definitely_lost)), on two
    /// threads: the depth-first search from the roots does not need the
    /// classes, so it runs while they are computed; only the search from
    /// the lost blocks waits for them. Dominators do not depend on the
    /// search order, so the result is the same.
    pub fn compute_with_leaks(graph: &HeapGraph) -> (LeakAnalysis, DominatorTree) {
        std::thread::scope(|scope| {
            let leaks = scope.spawn(|| LeakAnalysis::compute(graph));
            let mut dfs = Dfs::new(graph.node_count());
            dfs.run(graph, graph.root_edges().iter().map(|e| e.target));
            let leaks = match leaks.join() {
                Ok(leaks) => leaks,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            dfs.run(graph, leaks.definitely_lost());
            (leaks, dfs.finish(graph))
        })
    }
}

/// The depth-first search from the super-root (preorder number 0), run
/// once per batch of the super-root's children. A visited node pushes all
/// its out-edges at once (the targets already numbered are filtered right
/// there); popping an edge whose target is still unnumbered makes it a tree
/// edge. Rows are pushed backwards, so this is the recursive DFS taking
/// each row in order. Every non-tree edge is recorded as a (target node,
/// source preorder number) pair as it is seen, so the predecessors need no
/// further pass over the graph; tree edges need no record (`parent`).
///
/// On a big heap each visit is a cache miss (the node's row), so the
/// search touches as little else as it can: "numbered yet?" is a bitmap
/// (1.25 MB for 10M nodes, which stays in cache), preorder numbers are not
/// written per node but scattered from `order` afterwards, and the pairs'
/// targets become preorder numbers in one pass of independent loads
/// ([`finish`](Self::finish)). Row starts are prefetched as targets are
/// pushed, the next row as soon as the next node is known.
struct Dfs {
    order: Vec<u32>,
    parent: Vec<u32>,
    pairs: Vec<u64>,
    /// (node, preorder number of the node that pushed it)
    stack: Vec<(u32, u32)>,
    /// The nodes numbered so far.
    visited: FixedBitSet,
}

#[inline]
fn pair(target: u32, source: u32) -> u64 {
    (u64::from(target) << 32) | u64::from(source)
}

impl Dfs {
    fn new(n: usize) -> Dfs {
        let mut order = Vec::with_capacity(n + 1);
        let mut parent = Vec::with_capacity(n + 1);
        order.push(NONE);
        parent.push(0);
        Dfs {
            order,
            parent,
            pairs: Vec::new(),
            stack: Vec::new(),
            visited: FixedBitSet::with_capacity(n),
        }
    }

    /// Adds `starts` (out-of-range ones ignored) as children of the
    /// super-root and searches from each.
    fn run(&mut self, graph: &HeapGraph, starts: impl Iterator<Item = u32>) {
        let n = self.visited.len();
        let Dfs {
            order,
            parent,
            pairs,
            stack,
            visited,
        } = self;
        for s in starts.filter(|&t| (t as usize) < n) {
            if visited.contains(s as usize) {
                pairs.push(pair(s, 0));
                continue;
            }
            stack.push((s, 0));
            while let Some((v, from)) = stack.pop() {
                if visited.contains(v as usize) {
                    pairs.push(pair(v, from));
                    continue;
                }
                visited.insert(v as usize);
                let pv = order.len() as u32;
                order.push(v);
                parent.push(from);
                for &e in graph.out_row(v).iter().rev() {
                    let t = e.node();
                    if visited.contains(t as usize) {
                        pairs.push(pair(t, pv));
                    } else {
                        stack.push((t, pv));
                        graph.prefetch_row_start(t);
                    }
                }
                if let Some(&(next, _)) = stack.last() {
                    graph.prefetch_row(next);
                }
            }
        }
    }

    /// Steps 2 to 5 of the module docs' algorithm, on the finished search.
    fn finish(self, graph: &HeapGraph) -> DominatorTree {
        let Dfs {
            order,
            parent,
            mut pairs,
            stack,
            visited,
        } = self;
        drop(stack);
        drop(visited);
        let n = graph.node_count();
        let m = order.len();

        // 1b. Preorder numbers by node, and the pairs' targets as preorder
        //     numbers: loops of independent random accesses, which the CPU
        //     overlaps (the search itself could not).
        let mut pre = vec![NONE; n];
        for (w, &v) in order.iter().enumerate().skip(1) {
            pre[v as usize] = w as u32;
        }
        for p in &mut pairs {
            *p = pair(pre[(*p >> 32) as usize], *p as u32);
        }
        drop(pre);

        // 2. Predecessors grouped by target: a counting sort of the pairs
        //    on their target, written straight into the 4-byte sources
        //    (no second 8-byte copy of the pairs, as a radix sort needs).
        //    `pred_start[t]` serves as row t's cursor, so afterwards it
        //    holds row t's end, and one shift makes it the starts again.
        let mut pred_start = vec![0u32; m + 1];
        for &p in &pairs {
            pred_start[(p >> 32) as usize + 1] += 1;
        }
        for i in 0..m {
            pred_start[i + 1] += pred_start[i];
        }
        let mut preds = vec![0u32; pairs.len()];
        for &p in &pairs {
            let cursor = &mut pred_start[(p >> 32) as usize];
            preds[*cursor as usize] = p as u32;
            *cursor += 1;
        }
        drop(pairs);
        pred_start.copy_within(0..m, 1);
        pred_start[0] = 0;

        // 3. Semidominators, in reverse preorder. `forest[v]` is, once v
        //    is processed (v > w), its parent in the link forest and the
        //    smallest semidominator on the compressed path above it (a
        //    value: semi-NCA needs no label node). The tree edge from the
        //    parent is the first candidate.
        let mut semi: Vec<u32> = parent.clone();
        let mut forest: Vec<(u32, u32)> = vec![(NONE, NONE); m];
        let mut path: Vec<u32> = Vec::new();
        // Prefetches the link-forest entries of the predecessors AHEAD nodes
        // ahead, and half-way there the entries above those that are linked
        // already (the first steps of their `eval` walks), so that the cache
        // misses overlap instead of each `eval` waiting for its own.
        const AHEAD: usize = 48;
        for w in (1..m).rev() {
            if let Some(a) = w.checked_sub(AHEAD) {
                for &v in &preds[pred_start[a] as usize..pred_start[a + 1] as usize] {
                    crate::prefetch::prefetch(&forest, v as usize);
                }
            }
            if let Some(a) = w.checked_sub(AHEAD / 2) {
                for &v in &preds[pred_start[a] as usize..pred_start[a + 1] as usize] {
                    if v > w as u32 {
                        crate::prefetch::prefetch(&forest, forest[v as usize].0 as usize);
                    }
                }
            }
            let mut best = semi[w];
            let row = &preds[pred_start[w] as usize..pred_start[w + 1] as usize];
            for &v in row {
                let candidate = if v <= w as u32 {
                    v
                } else {
                    eval(v, w as u32, &mut forest, &mut path)
                };
                best = best.min(candidate);
            }
            semi[w] = best;
            forest[w] = (parent[w], best);
        }
        drop(preds);
        drop(pred_start);
        drop(forest);

        // 4. Immediate dominators: the nearest common ancestor of the parent
        //    and the semidominator, walking up already-final idoms. The
        //    sizes in preorder (a random gather) are loaded meanwhile on a
        //    second thread, now that the arrays of step 3 are gone.
        let sizes = graph.sizes();
        let (idom, mut retained) = std::thread::scope(|scope| {
            let gather = scope.spawn(|| {
                let mut retained: Vec<u64> = Vec::with_capacity(m);
                retained.push(0);
                retained.extend(order[1..].iter().map(|&v| sizes[v as usize]));
                retained
            });
            let mut idom = parent;
            for w in 1..m {
                let mut d = idom[w];
                while d > semi[w] {
                    d = idom[d as usize];
                }
                idom[w] = d;
            }
            let retained = match gather.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (idom, retained)
        });
        drop(semi);

        // 5. Retained sizes: children come after their dominator in preorder.
        //    The idoms go back to node ids on a second thread meanwhile.
        let (node_idom, node_retained) = std::thread::scope(|scope| {
            let idoms = scope.spawn(|| {
                let mut node_idom = vec![NONE; n];
                for w in 1..m {
                    let d = idom[w];
                    node_idom[order[w] as usize] = if d == 0 {
                        SUPER_ROOT
                    } else {
                        order[d as usize]
                    };
                }
                node_idom
            });
            for w in (1..m).rev() {
                let d = idom[w] as usize;
                retained[d] = retained[d].saturating_add(retained[w]);
            }
            let mut node_retained = vec![0u64; n];
            for w in 1..m {
                node_retained[order[w] as usize] = retained[w];
            }
            let node_idom = match idoms.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (node_idom, node_retained)
        });
        DominatorTree {
            idom: node_idom,
            retained: node_retained,
            reached: m - 1,
        }
    }
}

impl DominatorTree {
    /// The immediate dominator of `node`.
    pub fn idom(&self, node: u32) -> Dominator {
        match self.idom.get(node as usize).copied() {
            Some(SUPER_ROOT) => Dominator::SuperRoot,
            Some(NONE) | None => Dominator::Unreachable,
            Some(d) => Dominator::Node(d),
        }
    }

    /// The retained size of `node`: its bytes and those of every block it
    /// dominates.
    pub fn retained(&self, node: u32) -> u64 {
        self.retained.get(node as usize).copied().unwrap_or(0)
    }

    /// All retained sizes, indexed by node.
    pub fn retained_sizes(&self) -> &[u64] {
        &self.retained
    }

    /// Nodes reached from the super-root.
    pub fn reached_count(&self) -> usize {
        self.reached
    }

    /// The dominators of `node` from its immediate dominator up to (not
    /// including) the super-root.
    pub fn chain(&self, node: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = node;
        while let Dominator::Node(d) = self.idom(cur) {
            // An idom is always earlier in preorder, so this ends; the bound
            // guards against a corrupted tree.
            if out.len() > self.idom.len() {
                break;
            }
            out.push(d);
            cur = d;
        }
        out
    }

    /// Children lists of the dominator tree as CSR (`start`, `children`),
    /// with the super-root's children as the last row (index `node_count`).
    pub fn children(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.idom.len();
        let row = |d: u32| match d {
            SUPER_ROOT => Some(n),
            NONE => None,
            d => Some(d as usize),
        };
        let mut start = vec![0u32; n + 2];
        for &d in &self.idom {
            if let Some(r) = row(d) {
                start[r + 1] += 1;
            }
        }
        for i in 0..=n {
            start[i + 1] += start[i];
        }
        let mut cursor: Vec<u32> = start[..=n].to_vec();
        let mut children = vec![0u32; start[n + 1] as usize];
        for (v, &d) in self.idom.iter().enumerate() {
            if let Some(r) = row(d) {
                children[cursor[r] as usize] = v as u32;
                cursor[r] += 1;
            }
        }
        (start, children)
    }

    /// What sets of blocks keep alive, for several groupings at once (one
    /// walk of the tree). `groupings[g][v]` is the group of node `v` in
    /// grouping `g` (an allocation site, a type…); group ids are dense
    /// from 0. Per grouping and group, the result has the retained bytes
    /// of the group's set — the sum of the retained sizes of its blocks
    /// that no block of the same group dominates, so a group's nested
    /// blocks (a list's nodes, a tree's subtrees) are counted once, by
    /// their topmost block — and how many blocks were counted. Blocks
    /// outside the tree (unreachable) count for nothing.
    ///
    /// # Panics
    ///
    /// If a grouping does not have one group per node.
    pub fn retained_by_group<const N: usize>(
        &self,
        groupings: [&[u32]; N],
    ) -> [Vec<GroupRetained>; N] {
        let mut totals = groupings.map(|grouping| {
            let groups = grouping.iter().max().map_or(0, |&m| m as usize + 1);
            vec![GroupRetained::default(); groups]
        });
        self.visit_topmost(groupings, |g, k, c| {
            let total = &mut totals[g][k];
            total.retained = total.retained.saturating_add(self.retained[c as usize]);
            total.objects += 1;
        });
        totals
    }

    /// Per grouping, whether each block is a topmost block of its group:
    /// reached from the roots (or hung from the super-root as lost), and
    /// dominated by no other block of its group. The retained sizes of a
    /// group's topmost blocks add up to its [`Self::retained_by_group`]
    /// figure, so an export can leave that sum to a query.
    ///
    /// # Panics
    ///
    /// As [`Self::retained_by_group`].
    pub fn topmost_of_groups<const N: usize>(&self, groupings: [&[u32]; N]) -> [Vec<bool>; N] {
        let n = self.idom.len();
        let mut topmost = [(); N].map(|()| vec![false; n]);
        self.visit_topmost(groupings, |g, _, v| topmost[g][v as usize] = true);
        topmost
    }

    /// [`Self::retained_by_group`] for a sample of blocks: each topmost
    /// block counts `weights[v]` times (its retained size and itself), so
    /// with `weights[v]` the inverse of the probability that `v` was
    /// sampled (0 for blocks outside the sample, put in a group of their
    /// own) the totals are estimates of the whole heap's. Nesting is seen
    /// only among sampled blocks: a sampled block under an unsampled one of
    /// the same group counts too, so groups whose blocks dominate each
    /// other are overestimated.
    ///
    /// # Panics
    ///
    /// As [`Self::retained_by_group`], and if `weights` has not one weight
    /// per node.
    pub fn estimated_retained_by_group<const N: usize>(
        &self,
        groupings: [&[u32]; N],
        weights: &[f64],
    ) -> [Vec<EstimatedGroupRetained>; N] {
        assert_eq!(weights.len(), self.idom.len(), "one weight per node");
        let mut totals = groupings.map(|grouping| {
            let groups = grouping.iter().max().map_or(0, |&m| m as usize + 1);
            vec![EstimatedGroupRetained::default(); groups]
        });
        self.visit_topmost(groupings, |g, k, c| {
            let weight = weights[c as usize];
            let total = &mut totals[g][k];
            total.retained += self.retained[c as usize] as f64 * weight;
            total.objects += weight;
        });
        totals
    }

    /// Calls `topmost(g, k, v)` for each block `v` of group `k` in grouping
    /// `g` that no other block of group `k` dominates (one depth-first walk
    /// of the tree).
    fn visit_topmost<const N: usize>(
        &self,
        groupings: [&[u32]; N],
        mut topmost: impl FnMut(usize, usize, u32),
    ) {
        let n = self.idom.len();
        for grouping in &groupings {
            assert_eq!(grouping.len(), n, "a grouping needs one group per node");
        }
        // Per grouping and group: how many of its blocks are on the path
        // from the super-root to the node being visited. A block with none
        // above it is a topmost block of its group.
        let mut active = groupings
            .map(|grouping| vec![0u32; grouping.iter().max().map_or(0, |&m| m as usize + 1)]);
        let (start, children) = self.children();
        let mut stack: Vec<(u32, u32)> = vec![(n as u32, 0)];
        while let Some(top) = stack.last_mut() {
            let (v, cursor) = *top;
            let row = &children[start[v as usize] as usize..start[v as usize + 1] as usize];
            match row.get(cursor as usize) {
                Some(&c) => {
                    top.1 += 1;
                    for (g, (grouping, active)) in groupings.iter().zip(&mut active).enumerate() {
                        let k = grouping[c as usize] as usize;
                        if active[k] == 0 {
                            topmost(g, k, c);
                        }
                        active[k] += 1;
                    }
                    stack.push((c, 0));
                }
                None => {
                    stack.pop();
                    if (v as usize) < n {
                        for (grouping, active) in groupings.iter().zip(&mut active) {
                            active[grouping[v as usize] as usize] -= 1;
                        }
                    }
                }
            }
        }
    }
}

/// [`GroupRetained`] estimated from a sample of blocks
/// ([`DominatorTree::estimated_retained_by_group`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EstimatedGroupRetained {
    /// Estimated bytes freed if every block of the group were freed.
    pub retained: f64,
    /// Estimated number of the group's blocks that no other block of it
    /// dominates.
    pub objects: f64,
}

/// What one group of blocks keeps alive
/// ([`DominatorTree::retained_by_group`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupRetained {
    /// Bytes freed if every block of the group were freed.
    pub retained: u64,
    /// The group's blocks that no other block of it dominates.
    pub objects: u64,
}

/// The smallest semidominator on the link-forest path from `v` up to (not
/// including) the forest root, compressing the path on the way. Nodes
/// numbered above `w` are linked; `v > w`.
#[inline]
fn eval(v: u32, w: u32, forest: &mut [(u32, u32)], path: &mut Vec<u32>) -> u32 {
    // Collect the nodes whose ancestor is linked: those get compressed.
    path.clear();
    let mut x = v;
    loop {
        let a = forest[x as usize].0;
        if a <= w {
            break;
        }
        path.push(x);
        x = a;
    }
    // Top-down: each node takes its ancestor's value if smaller, then
    // points past it to the top linked node's ancestor.
    for &u in path.iter().rev() {
        let (a, best) = forest[u as usize];
        let (above, above_best) = forest[a as usize];
        forest[u as usize] = (above, best.min(above_best));
    }
    forest[v as usize].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{GraphEdge, RootEdge};
    use crate::heuristics::Heuristics;
    use crate::leaks::LeakAnalysis;
    use heapdump_formats::testing::SplitMix64;

    fn e(source: u32, target: u32) -> GraphEdge {
        GraphEdge {
            source,
            target,
            target_offset: 0,
        }
    }

    fn graph(sizes: Vec<u64>, edges: &[GraphEdge], roots: &[u32]) -> HeapGraph {
        let roots: Vec<RootEdge> = roots.iter().map(|&t| RootEdge::new(0, t, 0, 0)).collect();
        HeapGraph::from_parts(sizes, edges, &roots, &Heuristics::none())
    }

    #[test]
    fn tree_retained_size_is_the_sum_of_its_nodes() {
        // A binary tree of 31 nodes, node i -> 2i+1, 2i+2.
        let edges: Vec<GraphEdge> = (0..15)
            .flat_map(|i| [e(i, 2 * i + 1), e(i, 2 * i + 2)])
            .collect();
        let sizes: Vec<u64> = (0..31).map(|i| 10 + i).collect();
        let g = graph(sizes.clone(), &edges, &[0]);
        let t = DominatorTree::compute(&g, &[]);
        assert_eq!(t.retained(0), sizes.iter().sum::<u64>());
        assert_eq!(
            t.retained(1),
            [1u64, 3, 4, 7, 8, 9, 10, 15, 16, 17, 18, 19, 20, 21, 22]
                .iter()
                .map(|i| 10 + i)
                .sum::<u64>()
        );
        assert_eq!(t.retained(30), 40);
        assert_eq!(t.idom(30), Dominator::Node(14));
        assert_eq!(t.chain(30), [14, 6, 2, 0]);
    }

    #[test]
    fn shared_nodes_dominator_is_the_common_ancestor() {
        // 0 -> 1 -> 3 -> 4, 0 -> 2 -> 3: node 3 (shared) is dominated by 0.
        let g = graph(
            vec![1, 2, 4, 8, 16],
            &[e(0, 1), e(0, 2), e(1, 3), e(2, 3), e(3, 4)],
            &[0],
        );
        let t = DominatorTree::compute(&g, &[]);
        assert_eq!(t.idom(3), Dominator::Node(0));
        assert_eq!(t.idom(4), Dominator::Node(3));
        assert_eq!(t.retained(1), 2);
        assert_eq!(t.retained(2), 4);
        assert_eq!(t.retained(3), 24);
        assert_eq!(t.retained(0), 31);
    }

    #[test]
    fn a_group_retains_its_topmost_blocks_once_however_deeply_they_nest() {
        // 0 -> 1 -> 2 -> 3 and 0 -> 4: blocks 1, 2 and 4 are one type (a
        // list of 1 -> 2 and a separate 4), 0 and 3 another. By site:
        // every block its own group.
        let g = graph(
            vec![1, 2, 4, 8, 16],
            &[e(0, 1), e(1, 2), e(2, 3), e(0, 4)],
            &[0],
        );
        let t = DominatorTree::compute(&g, &[]);
        let by_type = [0, 1, 1, 0, 1];
        let by_block = [0, 1, 2, 3, 4];
        let totals = t.retained_by_group([&by_type, &by_block]);
        let r = |retained, objects| GroupRetained { retained, objects };
        // Type 0: block 0 holds everything, block 3 is under it.
        // Type 1: blocks 1 (retaining 2 and 3) and 4, not 1 + 2 + 4's
        // retained sizes (2 + 4 + 8) + (4 + 8) + 16.
        assert_eq!(totals[0], [r(31, 1), r(2 + 4 + 8 + 16, 2)]);
        assert_eq!(totals[1], [r(31, 1), r(14, 1), r(12, 1), r(8, 1), r(16, 1)]);
    }

    #[test]
    fn node_reached_from_two_roots_is_dominated_by_the_super_root() {
        let g = graph(vec![1, 2, 4], &[e(0, 2), e(1, 2)], &[0, 1]);
        let t = DominatorTree::compute(&g, &[]);
        assert_eq!(t.idom(2), Dominator::SuperRoot);
        assert_eq!(t.retained(0), 1);
    }

    #[test]
    fn lost_structures_get_retained_sizes_through_their_definitely_lost_leader() {
        // Lost list 0 -> 1 -> 2 and a reachable block 3.
        let g = graph(vec![8, 16, 32, 64], &[e(0, 1), e(1, 2)], &[3]);
        let leaks = LeakAnalysis::compute(&g);
        let lost: Vec<u32> = leaks.definitely_lost().collect();
        assert_eq!(lost, [0]);
        let t = DominatorTree::compute(&g, &lost);
        assert_eq!(t.retained(0), 56);
        assert_eq!(t.idom(0), Dominator::SuperRoot);
        assert_eq!(t.reached_count(), 4);
    }

    /// Dominators by definition: `d` dominates `v` when `v` cannot be
    /// reached from the super-root with `d` removed.
    fn naive_idoms(n: usize, succ: &[Vec<usize>], starts: &[usize]) -> Vec<Option<Option<usize>>> {
        let reach = |removed: Option<usize>| {
            let mut seen = vec![false; n];
            let mut stack: Vec<usize> = starts
                .iter()
                .copied()
                .filter(|&s| Some(s) != removed)
                .collect();
            for &s in &stack {
                seen[s] = true;
            }
            while let Some(v) = stack.pop() {
                for &t in &succ[v] {
                    if Some(t) != removed && !seen[t] {
                        seen[t] = true;
                        stack.push(t);
                    }
                }
            }
            seen
        };
        let all = reach(None);
        let without: Vec<Vec<bool>> = (0..n).map(|d| reach(Some(d))).collect();
        (0..n)
            .map(|v| {
                if !all[v] {
                    return None;
                }
                // Strict dominators of v; the immediate one is dominated by all others.
                let doms: Vec<usize> = (0..n).filter(|&d| d != v && !without[d][v]).collect();
                let idom = doms
                    .iter()
                    .copied()
                    .find(|&d| doms.iter().all(|&o| o == d || !without[o][d]));
                Some(idom)
            })
            .collect()
    }

    #[test]
    fn compute_with_leaks_matches_the_two_steps() {
        let mut rng = SplitMix64(0xc0ffee);
        for _ in 0..100 {
            let n = 1 + rng.below(40) as usize;
            let edges: Vec<GraphEdge> = (0..rng.below(3 * n as u64 + 1))
                .map(|_| GraphEdge {
                    source: rng.below(n as u64) as u32,
                    target: rng.below(n as u64) as u32,
                    target_offset: if rng.below(4) == 0 { 8 } else { 0 },
                })
                .collect();
            let roots: Vec<u32> = (0..rng.below(3))
                .map(|_| rng.below(n as u64) as u32)
                .collect();
            let sizes: Vec<u64> = (0..n).map(|_| 16 + rng.below(64)).collect();
            let g = graph(sizes, &edges, &roots);
            let leaks = LeakAnalysis::compute(&g);
            let lost: Vec<u32> = leaks.definitely_lost().collect();
            let tree = DominatorTree::compute(&g, &lost);
            let (leaks2, tree2) = DominatorTree::compute_with_leaks(&g);
            for v in 0..n as u32 {
                assert_eq!(leaks.class(v), leaks2.class(v));
                assert_eq!(leaks.indirect_bytes(v), leaks2.indirect_bytes(v));
                assert_eq!(tree.idom(v), tree2.idom(v));
                assert_eq!(tree.retained(v), tree2.retained(v));
                assert_ne!(tree.idom(v), Dominator::Unreachable);
            }
        }
    }

    #[test]
    fn dominators_match_the_definition_on_random_graphs() {
        let mut rng = SplitMix64(0x5eed);
        for round in 0..300 {
            let n = 1 + rng.below(24) as usize;
            let edge_count = rng.below(3 * n as u64 + 1) as usize;
            let edges: Vec<GraphEdge> = (0..edge_count)
                .map(|_| e(rng.below(n as u64) as u32, rng.below(n as u64) as u32))
                .collect();
            let roots: Vec<u32> = (0..1 + rng.below(3))
                .map(|_| rng.below(n as u64) as u32)
                .collect();
            let g = graph(vec![1; n], &edges, &roots);
            let t = DominatorTree::compute(&g, &[]);
            let mut succ = vec![Vec::new(); n];
            for ed in &edges {
                succ[ed.source as usize].push(ed.target as usize);
            }
            let starts: Vec<usize> = roots.iter().map(|&r| r as usize).collect();
            let expected = naive_idoms(n, &succ, &starts);
            for (v, want) in expected.iter().enumerate() {
                let got = match t.idom(v as u32) {
                    Dominator::Node(d) => Some(Some(d as usize)),
                    Dominator::SuperRoot => Some(None),
                    Dominator::Unreachable => None,
                };
                assert_eq!(
                    got, *want,
                    "round {round}, node {v}, edges {edges:?}, roots {roots:?}"
                );
            }
            // Retained sizes: each node's is 1 + the sum over its tree children.
            let (start, children) = t.children();
            for (v, want) in expected.iter().enumerate() {
                if want.is_none() {
                    continue;
                }
                let kids = &children[start[v] as usize..start[v + 1] as usize];
                let sum: u64 = kids.iter().map(|&c| t.retained(c)).sum();
                assert_eq!(t.retained(v as u32), 1 + sum, "round {round}, node {v}");
            }
        }
    }
}
