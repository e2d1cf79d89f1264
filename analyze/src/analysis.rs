//! [`HeapAnalysis`]: the heap graph, the leak classes and (when asked
//! for) the dominator tree of one dump, built once and shared by the
//! reports and the exports.
//!
//! ```no_run
//! use heapdump_analyze::analysis::HeapAnalysis;
//! use heapdump_analyze::heuristics::Heuristics;
//!
//! use heapdump_analyze::site::OwnCode;
//! use heapdump_analyze::stacks::{Namer, Types};
//! use heapdump_analyze::symbolize::SymbolizeOptions;
//!
//! let path = std::path::Path::new("app.hdump");
//! let dump = heapdump_analyze::open_dump(path)?;
//! let view = dump.view();
//! // Names stacks and types (which blocks hold no pointer) as the CLI does.
//! let mut namer = Namer::new(&view, path, SymbolizeOptions::default(), Types::Load, OwnCode::default())?;
//! let analysis = HeapAnalysis::new(&view, &Heuristics::default(), true, &mut namer.frames())?;
//! println!("{} blocks definitely lost", analysis.leaks.definitely_lost().count());
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::HashMap;

use anyhow::bail;
use heapdump_formats::read::DumpView;
use heapdump_formats::records::process_flags;

use crate::dominators::DominatorTree;
use crate::graph::HeapGraph;
use crate::heuristics::{Heuristic, Heuristics};
use crate::leaks::LeakAnalysis;
use crate::stacks::StackFrames;

/// The graph, the leak classes and (when asked for) the dominator tree of
/// one dump: built once, shared by every report.
#[derive(Debug)]
pub struct HeapAnalysis {
    /// The heap graph.
    pub graph: HeapGraph,
    /// Leak classes.
    pub leaks: LeakAnalysis,
    /// Dominators and retained sizes, if computed.
    pub dominators: Option<DominatorTree>,
}

impl HeapAnalysis {
    /// Builds the graph, classifies, and with `dominators` computes the
    /// dominator tree (the super-root's children: root targets and
    /// definitely-lost blocks). `frames` names the blocks' stacks: with
    /// [`Heuristic::PointerFreeTypes`] (in [`Heuristics::default`], as for
    /// the `heapdump` commands) the out-edges of blocks whose recovered
    /// type holds no pointer ([`StackFrames::holds_no_pointer`]) are left
    /// out; a source that names nothing (`&mut |_| Ok(Vec::new())`) leaves
    /// every edge in. Fails for a dump without a scan (no roots and edges:
    /// every block would look lost).
    ///
    /// With that heuristic, costs a symbolization of every distinct stack
    /// (cached by the symbolizer, so the reports that follow pay less).
    pub fn new<S: StackFrames + ?Sized>(
        view: &DumpView<'_>,
        heuristics: &Heuristics,
        dominators: bool,
        frames: &mut S,
    ) -> anyhow::Result<HeapAnalysis> {
        if view.process().flags & process_flags::HAS_SCAN == 0 {
            bail!(
                "the dump has no roots and edges (process flag HAS_SCAN is not set): it was written without the conservative scan, so reachability cannot be computed"
            );
        }
        let pointer_free = if heuristics.contains(Heuristic::PointerFreeTypes) {
            pointer_free_blocks(view, frames)
        } else {
            Vec::new()
        };
        let graph = HeapGraph::build_typed(view, heuristics, &pointer_free)?;
        Self::assemble(graph, dominators)
    }

    fn assemble(graph: HeapGraph, dominators: bool) -> anyhow::Result<HeapAnalysis> {
        let (leaks, dominators) = if dominators {
            let (leaks, tree) = DominatorTree::compute_with_leaks(&graph);
            (leaks, Some(tree))
        } else {
            (LeakAnalysis::compute(&graph), None)
        };
        Ok(HeapAnalysis {
            graph,
            leaks,
            dominators,
        })
    }

    /// Edges left out because their source's type holds no pointer.
    pub fn pointer_free_edges(&self) -> u64 {
        self.graph.pointer_free_edges()
    }

    /// A warning about edges the graph could not use, if any.
    pub fn warnings(&self) -> Vec<String> {
        let skipped = self.graph.skipped_edges();
        if skipped == 0 {
            return Vec::new();
        }
        vec![format!(
            "{skipped} malformed edges (index out of range or offset past the block) were ignored; run `heapdump verify`"
        )]
    }
}

/// Which blocks of `view` have a recovered type that holds no pointer
/// ([`StackFrames::holds_no_pointer`]), by node; a block with an unknown or
/// unreadable stack is not one. None in a dump with sampled stacks: only
/// the sampled blocks have a type there, so leaving out their edges alone
/// would make the leak classes depend on the sample, where they are exact.
pub fn pointer_free_blocks<S: StackFrames + ?Sized>(
    view: &DumpView<'_>,
    frames: &mut S,
) -> Vec<bool> {
    if view.process().stack_sample_interval > 0 {
        return vec![false; view.allocations().len()];
    }
    let mut by_stack: HashMap<u32, bool> = HashMap::new();
    view.allocations()
        .iter()
        .map(|a| {
            if a.stack == 0 {
                return false;
            }
            *by_stack.entry(a.stack).or_insert_with(|| {
                frames.stack_frames(view, a.stack).is_ok_and(|stack| {
                    crate::types::recover_type(&stack).is_some_and(|t| frames.holds_no_pointer(&t))
                })
            })
        })
        .collect()
}
