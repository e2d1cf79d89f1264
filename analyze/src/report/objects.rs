//! One block as the graph reports (`top --retained`, `retainers`) show
//! it, and the helpers they share.

use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::analysis::HeapAnalysis;
use crate::leaks::LeakClass;
use crate::site::{Names, Site};
use crate::stacks::{StackFrames, Stacks};
use crate::text::{commas, hex_address, human_bytes};

pub(crate) fn stack_of(view: &DumpView<'_>, node: u32) -> u32 {
    view.allocations().get(node as usize).map_or(0, |a| a.stack)
}

pub(crate) fn address_of(view: &DumpView<'_>, node: u32) -> u64 {
    view.allocations()
        .get(node as usize)
        .map_or(0, |a| a.address)
}

/// One block, as the graph reports show it.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectInfo {
    /// Index in `Allocations`.
    pub index: u32,
    /// Address, `0x…`.
    pub address: String,
    /// Bytes.
    pub size: u64,
    /// Retained bytes (itself and every block it dominates).
    pub retained: u64,
    /// Leak class.
    pub class: LeakClass,
    /// Allocation site.
    pub site: Site,
    /// The type label `top --retained` and the exports use: the recovered
    /// type (`app::Node`, `Vec<u8> buffer`), or `alloc@function:line`.
    #[serde(rename = "type")]
    pub type_name: String,
}

pub(crate) fn object_info<S: StackFrames + ?Sized>(
    view: &DumpView<'_>,
    analysis: &HeapAnalysis,
    stacks: &mut Stacks<'_, S>,
    node: u32,
    warnings: &mut Vec<String>,
) -> ObjectInfo {
    ObjectInfo {
        index: node,
        address: hex_address(address_of(view, node)),
        size: analysis.graph.size(node),
        retained: analysis.dominators.as_ref().map_or(0, |d| d.retained(node)),
        class: analysis.leaks.class(node),
        site: stacks.site(view, stack_of(view, node), warnings),
        type_name: stacks.type_label(view, stack_of(view, node), warnings),
    }
}

/// A block on one line: address, size, retained size, leak class, type
/// label and site, named as `names` says.
pub(crate) fn object_line(o: &ObjectInfo, names: Names) -> String {
    format!(
        "{:<14} {:>10} retains {:>10}  {:<15}  {}  {}",
        o.address,
        human_bytes(o.size),
        human_bytes(o.retained),
        o.class.words(),
        names.name(&o.type_name),
        o.site.text(names)
    )
}

/// The line that says how many edges types ruled out, if any.
pub(crate) fn pointer_free_note(edges: u64) -> Option<String> {
    (edges > 0).then(|| {
        format!(
            "{} pointer{} found in blocks whose type holds no pointer (byte and string buffers, numbers) left out; --heuristics none keeps every word",
            commas(edges),
            if edges == 1 { "" } else { "s" }
        )
    })
}
