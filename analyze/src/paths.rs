//! Shortest paths from roots to a block: a breadth-first search backwards
//! over in-edges from the block until blocks that roots point into.
//!
//! ```
//! use heapdump_analyze::graph::{GraphEdge, HeapGraph, RootEdge};
//! use heapdump_analyze::heuristics::Heuristics;
//! use heapdump_analyze::paths::shortest_root_paths;
//! let e = |source, target| GraphEdge { source, target, target_offset: 0 };
//! // root -> 0 -> 1 -> 2 and root -> 3 -> 2: the shortest path is 3, 2.
//! let g = HeapGraph::from_parts(vec![8; 4], &[e(0, 1), e(1, 2), e(3, 2)],
//!     &[RootEdge::new(0, 0, 0, 0), RootEdge::new(1, 3, 0, 0)], &Heuristics::none());
//! let paths = shortest_root_paths(&g, 2, 1);
//! assert_eq!(paths[0].nodes, [3, 2]);
//! assert_eq!(paths[0].root_edge.root, 1);
//! ```

use crate::graph::{HeapGraph, RootEdge};

/// A path from a root to a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootPath {
    /// The root's pointer into the first block.
    pub root_edge: RootEdge,
    /// The blocks from the one the root points into to the target, both included.
    pub nodes: Vec<u32>,
}

/// Up to `max_paths` shortest paths from roots to `target`, shortest first;
/// several paths of the same length come from different roots or enter
/// the heap at different blocks. Empty when no root reaches `target` (a
/// lost block).
pub fn shortest_root_paths(graph: &HeapGraph, target: u32, max_paths: usize) -> Vec<RootPath> {
    let n = graph.node_count();
    if target as usize >= n || max_paths == 0 {
        return Vec::new();
    }
    // next[v]: the node one step closer to `target` on v's shortest path.
    const UNSEEN: u32 = u32::MAX;
    let mut next = vec![UNSEEN; n];
    next[target as usize] = target;
    let mut queue = std::collections::VecDeque::from([target]);
    let mut paths = Vec::new();
    while let Some(v) = queue.pop_front() {
        for root_edge in graph.root_edges_to(v) {
            let mut nodes = vec![v];
            let mut cur = v;
            while cur != target && nodes.len() <= n {
                cur = next[cur as usize];
                nodes.push(cur);
            }
            paths.push(RootPath {
                root_edge: *root_edge,
                nodes,
            });
            if paths.len() >= max_paths {
                return paths;
            }
        }
        for e in graph.in_edges(v) {
            let s = e.node();
            if next[s as usize] == UNSEEN {
                next[s as usize] = v;
                queue.push_back(s);
            }
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphEdge;
    use crate::heuristics::Heuristics;

    #[test]
    fn lost_block_has_no_root_path_and_cycles_terminate() {
        let e = |source, target| GraphEdge {
            source,
            target,
            target_offset: 0,
        };
        let g = HeapGraph::from_parts(
            vec![8; 3],
            &[e(0, 1), e(1, 0), e(2, 2)],
            &[RootEdge::new(0, 2, 0, 0)],
            &Heuristics::none(),
        );
        assert!(shortest_root_paths(&g, 1, 3).is_empty());
        let p = shortest_root_paths(&g, 2, 3);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].nodes, [2]);
    }
}
