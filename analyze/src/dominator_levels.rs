//! The dominator tree one level at a time: the children of one block (or
//! of the roots), largest retained size first, a page at a time. This is
//! what `heapdump serve`'s tree browser loads as a node is opened, so a
//! heap of millions of blocks is never sent whole.
//!
//! ```no_run
//! use heapdump_analyze::dominator_levels::DominatorLevels;
//! use heapdump_analyze::analysis::HeapAnalysis;
//! use heapdump_analyze::heuristics::Heuristics;
//! use heapdump_analyze::symbolize::{SymbolizeOptions, Symbolizer};
//!
//! let dump = heapdump_analyze::open_dump("app.hdump".as_ref())?;
//! let view = dump.view();
//! let mut symbolizer = Symbolizer::new(&view, &SymbolizeOptions::default())?;
//! let analysis = HeapAnalysis::new(&view, &Heuristics::default(), true, &mut symbolizer)?;
//! let levels = DominatorLevels::new(&analysis)?;
//! let top = levels.level(&view, &analysis, &mut symbolizer, None, 0, 20, &mut Vec::new());
//! println!("{}", serde_json::to_string_pretty(&top)?);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::bail;
use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::analysis::HeapAnalysis;
use crate::report::objects::{ObjectInfo, object_info};
use crate::stacks::{StackFrames, Stacks};

/// The children of every block in the dominator tree, each row sorted by
/// retained size (largest first, then by index), with the roots' level
/// (the super-root's children) as the last row.
///
/// Building it costs one pass over the tree and a sort of every row:
/// about a second for ten million blocks; a level is then a slice.
#[derive(Clone, Debug)]
pub struct DominatorLevels {
    /// `start[v]..start[v + 1]` is row `v` of `children`.
    start: Vec<u32>,
    children: Vec<u32>,
}

impl DominatorLevels {
    /// The levels of `analysis`'s dominator tree; an error when it was
    /// built without one.
    pub fn new(analysis: &HeapAnalysis) -> anyhow::Result<DominatorLevels> {
        let Some(tree) = analysis.dominators.as_ref() else {
            bail!("the dominator tree was not computed");
        };
        let (start, mut children) = tree.children();
        let retained = tree.retained_sizes();
        for row in start.windows(2) {
            children[row[0] as usize..row[1] as usize].sort_unstable_by(|&a, &b| {
                retained[b as usize]
                    .cmp(&retained[a as usize])
                    .then(a.cmp(&b))
            });
        }
        Ok(DominatorLevels { start, children })
    }

    /// The row of `parent`, or of the roots' level for `None`; empty for a
    /// block that is not in the heap.
    fn row(&self, parent: Option<u32>) -> &[u32] {
        let rows = self.start.len().saturating_sub(2);
        let row = match parent {
            None => rows,
            Some(node) if (node as usize) < rows => node as usize,
            Some(_) => return &[],
        };
        &self.children[self.start[row] as usize..self.start[row + 1] as usize]
    }

    /// How many blocks `parent` (or, for `None`, the roots) dominates
    /// directly.
    pub fn child_count(&self, parent: Option<u32>) -> usize {
        self.row(parent).len()
    }

    /// The children of `parent` (`None`: the top level, the blocks a root
    /// points to, or that nothing reached points to, and those several
    /// roots' paths share), `offset` of them skipped, at most `limit`.
    /// `frames` names them; with a
    /// [`TypedFrames`](crate::stacks::TypedFrames) their types are
    /// the labels `top --retained` shows.
    #[allow(clippy::too_many_arguments)]
    pub fn level<S: StackFrames + ?Sized>(
        &self,
        view: &DumpView<'_>,
        analysis: &HeapAnalysis,
        frames: &mut S,
        parent: Option<u32>,
        offset: usize,
        limit: usize,
        warnings: &mut Vec<String>,
    ) -> DominatorLevel {
        let mut stacks = Stacks::new(frames);
        let row = self.row(parent);
        let offset = offset.min(row.len());
        let end = offset.saturating_add(limit).min(row.len());
        let retained = |nodes: &[u32]| {
            nodes.iter().fold(0u64, |sum, &node| {
                sum.saturating_add(analysis.dominators.as_ref().map_or(0, |d| d.retained(node)))
            })
        };
        let parent_info = parent
            .filter(|&node| (node as usize) < analysis.graph.node_count())
            .map(|node| object_info(view, analysis, &mut stacks, node, warnings));
        let children = row[offset..end]
            .iter()
            .map(|&node| LevelNode {
                object: object_info(view, analysis, &mut stacks, node, warnings),
                children: self.child_count(Some(node)) as u64,
            })
            .collect();
        DominatorLevel {
            parent: parent_info,
            child_count: row.len() as u64,
            children_retained: retained(row),
            offset,
            children,
            omitted_after: (row.len() - end) as u64,
            omitted_after_retained: retained(&row[end..]),
        }
    }
}

/// One page of one level of the dominator tree.
#[derive(Clone, Debug, Serialize)]
pub struct DominatorLevel {
    /// The block whose children these are; null for the top level.
    pub parent: Option<ObjectInfo>,
    /// How many children it has in all.
    pub child_count: u64,
    /// Their retained bytes in all (for the top level: every live byte).
    pub children_retained: u64,
    /// Children skipped before this page.
    pub offset: usize,
    /// This page, largest retained size first.
    pub children: Vec<LevelNode>,
    /// Children after this page.
    pub omitted_after: u64,
    /// Their retained bytes.
    pub omitted_after_retained: u64,
}

/// A block of a level, with how many blocks it dominates directly.
#[derive(Clone, Debug, Serialize)]
pub struct LevelNode {
    /// The block, as `top --retained` and `retainers` show it.
    #[serde(flatten)]
    pub object: ObjectInfo,
    /// Blocks it dominates directly (0: a leaf, nothing to open).
    pub children: u64,
}
