//! The reports over the heap graph: `leaks`, `top --retained`,
//! `retainers` and `diff`, as serializable structs with `to_text()`.
//!
//! ```no_run
//! use heapdump_analyze::heap_report::{self, HeapAnalysis, LeaksOptions};
//! use heapdump_analyze::leaks::Heuristics;
//! use heapdump_analyze::symbolize::{SymbolizeOptions, Symbolizer};
//!
//! let dump = heapdump_analyze::open_dump("app.hdump".as_ref())?;
//! let view = dump.view();
//! let analysis = HeapAnalysis::new(&view, &Heuristics::default(), false)?;
//! let mut symbolizer = Symbolizer::new(&view, &SymbolizeOptions::default())?;
//! let report = heap_report::leaks(&view, &analysis, &mut symbolizer, &LeaksOptions::default(), &mut Vec::new());
//! print!("{}", report.to_text());
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use anyhow::bail;
use heapdump_formats::read::DumpView;
use heapdump_formats::records::{owner_kind, process_flags, register_name, root_kind};
use serde::Serialize;

use crate::dominators::{DominatorTree, GroupRetained};
use crate::fields::FieldIndex;
use crate::filter;
use crate::graph::{HeapGraph, edge_offsets, find_allocation};
use crate::leaks::{ClassTotal, Heuristic, HeuristicTotal, Heuristics, LeakAnalysis, LeakClass};
use crate::paths::shortest_root_paths;
use crate::report::{human_bytes, root_kind_name, string};
use crate::sampling::StackSampling;
use crate::site::{LABEL_WIDTH, OwnCode, SOURCE_TREE, Site, abbreviate_type, site_index};
use crate::symbolize::{Frame, Symbolizer};
use crate::types::{AllocationName, TypeName};

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
    /// definitely-lost blocks). Fails for a dump without a scan (no roots
    /// and edges: every block would look lost). Without types, every edge
    /// is kept ([`with_types`](Self::with_types) knows which blocks hold no
    /// pointer).
    pub fn new(
        view: &DumpView<'_>,
        heuristics: &Heuristics,
        dominators: bool,
    ) -> anyhow::Result<HeapAnalysis> {
        if view.process().flags & process_flags::HAS_SCAN == 0 {
            bail!(
                "the dump has no roots and edges (process flag HAS_SCAN is not set): it was written without the conservative scan, so reachability cannot be computed"
            );
        }
        Self::assemble(HeapGraph::build(view, heuristics)?, dominators)
    }

    /// [`new`](Self::new), with the blocks' types recovered from their
    /// stacks (`frames` symbolizes each distinct stack once) so that, with
    /// [`Heuristic::PointerFreeTypes`],
    /// the out-edges of blocks whose type holds no pointer are left out.
    /// Costs a symbolization of every stack (cached by the symbolizer, so
    /// the reports that follow pay less).
    pub fn with_types<S: StackFrames + ?Sized>(
        view: &DumpView<'_>,
        heuristics: &Heuristics,
        dominators: bool,
        frames: &mut S,
    ) -> anyhow::Result<HeapAnalysis> {
        if view.process().flags & process_flags::HAS_SCAN == 0 {
            // `new` says why.
            return Self::new(view, heuristics, dominators);
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
/// ([`TypeName::holds_no_pointer`]), by node; a block with an unknown or
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
                    crate::types::recover_type(&stack).is_some_and(|t| t.holds_no_pointer())
                })
            })
        })
        .collect()
}

/// Where the reports get the symbolized frames of a stack: the
/// [`Symbolizer`], or any `FnMut(stack_id) -> anyhow::Result<Vec<Frame>>`
/// (frames innermost first), as [`crate::export::HeapModel::build`] takes.
pub trait StackFrames {
    /// The frames of stack `stack` of `view`, innermost first.
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>>;

    /// The field at byte `offset` of a block of recovered type `ty`
    /// (`next`, `[2].next`, `value.next`), as the DOT export labels edges
    /// ([`FieldIndex::field_of`]); `None` without the program's DWARF
    /// layouts, which only [`TypedFrames`] has.
    fn field_of(&self, _ty: &TypeName, _offset: u64) -> Option<String> {
        None
    }

    /// The symbol (`app::CACHE+0x8`) at `address`, for naming a static that
    /// holds a root pointer ([`Symbolizer::symbol_at`]); `None` for a source
    /// without a symbolizer.
    fn symbol_at(&self, _address: u64) -> Option<String> {
        None
    }

    /// Which code is the program's own, for the frame a site in a
    /// dependency also names ([`Site::of_stack_in`]).
    fn own_code(&self) -> &OwnCode {
        &SOURCE_TREE
    }
}

impl StackFrames for Symbolizer {
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        self.symbolize_stack(view, stack)
    }

    fn symbol_at(&self, address: u64) -> Option<String> {
        Symbolizer::symbol_at(self, address)
    }
}

impl<F: FnMut(u32) -> anyhow::Result<Vec<Frame>>> StackFrames for F {
    fn stack_frames(&mut self, _: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        self(stack)
    }
}

/// Frames as the exports name types from them: symbolized, then, for the
/// main executable's frames, with the generic parameters its DWARF gives
/// back ([`FieldIndex::resolve_stack`]; full debug info names a generic
/// function without them).
#[derive(Debug)]
pub struct TypedFrames<'s> {
    /// Symbolizes the return addresses.
    pub symbolizer: &'s mut Symbolizer,
    /// The executable's generic instances, if its DWARF could be read.
    pub fields: Option<&'s FieldIndex>,
    /// The executable as frames name their module.
    pub module: String,
    /// Which code is the program's own.
    pub own: &'s OwnCode,
}

impl StackFrames for TypedFrames<'_> {
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        let mut frames = self.symbolizer.symbolize_stack(view, stack)?;
        if let Some(fields) = self.fields {
            fields.resolve_stack(&mut frames, &self.module);
        }
        Ok(frames)
    }

    fn field_of(&self, ty: &TypeName, offset: u64) -> Option<String> {
        self.fields?.field_of(ty, offset)
    }

    fn symbol_at(&self, address: u64) -> Option<String> {
        self.symbolizer.symbol_at(address)
    }

    fn own_code(&self) -> &OwnCode {
        self.own
    }
}

/// What the reports know about one stack.
struct StackInfo {
    /// Recovered type (or site fallback) and site, as the exports name them.
    name: AllocationName,
    /// The type label the exports show ([`AllocationName::type_label`]).
    type_label: String,
    frames: Vec<Frame>,
    /// Index of the site frame in `frames`.
    site_frame: usize,
}

/// Symbolizes each stack once and names it: site and type.
pub(crate) struct Stacks<'s, S: StackFrames + ?Sized> {
    source: &'s mut S,
    cache: HashMap<u32, StackInfo>,
    bad: u64,
}

impl<'s, S: StackFrames + ?Sized> Stacks<'s, S> {
    pub(crate) fn new(source: &'s mut S) -> Stacks<'s, S> {
        Stacks {
            source,
            cache: HashMap::new(),
            bad: 0,
        }
    }

    /// Names, frames and the index of the site frame of `stack`.
    fn get(&mut self, view: &DumpView<'_>, stack: u32, warnings: &mut Vec<String>) -> &StackInfo {
        if !self.cache.contains_key(&stack) {
            let frames = match self.source.stack_frames(view, stack) {
                Ok(frames) => frames,
                Err(e) => {
                    self.bad += 1;
                    if self.bad <= 5 {
                        warnings.push(format!(
                            "stack {stack} unreadable, counted as <unknown>: {e}"
                        ));
                    }
                    Vec::new()
                }
            };
            let name = AllocationName::of_stack_in(&frames, self.source.own_code());
            let info = StackInfo {
                type_label: name.type_label(),
                name,
                site_frame: site_index(&frames).unwrap_or(0),
                frames,
            };
            self.cache.insert(stack, info);
        }
        &self.cache[&stack]
    }

    /// The site frame and up to `count - 1` of its callers, stopping at
    /// the runtime's entry frame.
    fn frames(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        count: usize,
        warnings: &mut Vec<String>,
    ) -> Vec<Frame> {
        let info = self.get(view, stack, warnings);
        info.frames
            .iter()
            .skip(info.site_frame)
            .take_while(|f| !crate::site::is_runtime_entry(f))
            .take(count)
            .cloned()
            .collect()
    }

    fn site(&mut self, view: &DumpView<'_>, stack: u32, warnings: &mut Vec<String>) -> Site {
        self.get(view, stack, warnings).name.site.clone()
    }

    /// The type label of `stack`, as `top --retained` and the exports show it.
    fn type_label(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        warnings: &mut Vec<String>,
    ) -> String {
        self.get(view, stack, warnings).type_label.clone()
    }

    /// The field at `offset` of a block allocated at `stack`, when its type
    /// was recovered and the source has the layout.
    fn field_of(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        offset: u64,
        warnings: &mut Vec<String>,
    ) -> Option<String> {
        let ty = self.get(view, stack, warnings).name.recovered.clone()?;
        self.source.field_of(&ty, offset)
    }

    /// The site or the type of `stack`, as `diff` groups it.
    fn diff_key(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        by: DiffBy,
        warnings: &mut Vec<String>,
    ) -> DiffKey {
        let info = self.get(view, stack, warnings);
        match by {
            DiffBy::Site => DiffKey::Site(info.name.site.clone()),
            DiffBy::Type => DiffKey::Type(info.type_label.clone()),
        }
    }
}

fn stack_of(view: &DumpView<'_>, node: u32) -> u32 {
    view.allocations().get(node as usize).map_or(0, |a| a.stack)
}

fn address_of(view: &DumpView<'_>, node: u32) -> u64 {
    view.allocations()
        .get(node as usize)
        .map_or(0, |a| a.address)
}

/// Writes `n` with thousands separators, as valgrind does.
fn commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn hex_address(a: u64) -> String {
    format!("{a:#x}")
}

// ---------------------------------------------------------------- leaks

/// Options of `leaks`.
#[derive(Clone, Debug)]
pub struct LeaksOptions {
    /// Classes whose loss records are listed (the summary has all four).
    pub show: Vec<LeakClass>,
    /// Loss records to list, biggest first.
    pub limit: usize,
    /// Frames shown per record, from the site outwards.
    pub frames: usize,
    /// List every block of each listed record (memcheck's `block_list`),
    /// not only three examples.
    pub blocks: bool,
}

impl Default for LeaksOptions {
    /// Definitely and possibly lost (memcheck's `--show-leak-kinds`
    /// default), 50 records, 8 frames.
    fn default() -> LeaksOptions {
        LeaksOptions {
            show: vec![LeakClass::DefinitelyLost, LeakClass::PossiblyLost],
            limit: 50,
            frames: 8,
            blocks: false,
        }
    }
}

/// `heapdump leaks`: memcheck's LEAK SUMMARY and loss records.
#[derive(Clone, Debug, Serialize)]
pub struct LeaksReport {
    /// Enabled heuristics.
    pub heuristics: Heuristics,
    /// Blocks and direct bytes per class, memcheck's order.
    pub summary: Vec<ClassTotal>,
    /// Still-reachable blocks reached only through a heuristic's pointer.
    pub reachable_via_heuristic: Vec<HeuristicTotal>,
    /// Classes whose records are listed.
    pub shown: Vec<LeakClass>,
    /// Loss records of the shown classes in all.
    pub record_count: usize,
    /// The biggest records (by direct + indirect bytes), at most `limit`.
    pub records: Vec<LossRecord>,
    /// Records left out by the limit.
    pub omitted_records: usize,
    /// Their direct bytes.
    pub omitted_bytes: u64,
    /// Pointers between blocks left out because their source block's
    /// type holds no pointer (heuristic `pointer-free-types`).
    pub pointer_free_edges: u64,
}

/// The line that says how many edges types ruled out, if any.
fn pointer_free_note(edges: u64) -> Option<String> {
    (edges > 0).then(|| {
        format!(
            "{} pointer{} found in blocks whose type holds no pointer (byte and string buffers, numbers) left out; --heuristics none keeps every word",
            commas(edges),
            if edges == 1 { "" } else { "s" }
        )
    })
}

/// Blocks of one class allocated at one stack.
#[derive(Clone, Debug, Serialize)]
pub struct LossRecord {
    /// 1 for the biggest record.
    pub number: usize,
    /// The class.
    pub class: LeakClass,
    /// Blocks.
    pub blocks: u64,
    /// Bytes of the blocks themselves.
    pub direct_bytes: u64,
    /// Bytes of the blocks they hold (definitely lost only).
    pub indirect_bytes: u64,
    /// Allocation stack id in the dump.
    pub stack: u32,
    /// Allocation site.
    pub site: Site,
    /// The site frame and its callers.
    pub frames: Vec<Frame>,
    /// Addresses of up to three blocks, lowest first.
    pub examples: Vec<String>,
    /// With [`LeaksOptions::blocks`]: every block of the record, lowest
    /// address first (absent from JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_list: Option<Vec<LostBlock>>,
}

/// One block of a loss record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LostBlock {
    /// Its address, as `0x…` hex.
    pub address: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Classifies, groups the blocks of the shown classes by (class, stack),
/// and symbolizes the records that are listed.
pub fn leaks<S: StackFrames + ?Sized>(
    view: &DumpView<'_>,
    analysis: &HeapAnalysis,
    symbolizer: &mut S,
    options: &LeaksOptions,
    warnings: &mut Vec<String>,
) -> LeaksReport {
    let graph = &analysis.graph;
    let classes = &analysis.leaks;
    let (summary, reachable_via_heuristic) = classes.totals(graph);
    struct Group {
        blocks: u64,
        direct: u64,
        indirect: u64,
        /// The first three blocks, or every block with `options.blocks`.
        addresses: Vec<(u64, u64)>,
    }
    let mut groups: HashMap<(LeakClass, u32), Group> = HashMap::new();
    for (node, a) in view.allocations().iter().enumerate() {
        let class = classes.class(node as u32);
        if !options.show.contains(&class) {
            continue;
        }
        let g = groups.entry((class, a.stack)).or_insert(Group {
            blocks: 0,
            direct: 0,
            indirect: 0,
            addresses: Vec::new(),
        });
        g.blocks += 1;
        g.direct = g.direct.saturating_add(a.size);
        g.indirect = g
            .indirect
            .saturating_add(classes.indirect_bytes(node as u32));
        if options.blocks || g.addresses.len() < 3 {
            g.addresses.push((a.address, a.size));
        }
    }
    let mut sorted: Vec<((LeakClass, u32), Group)> = groups.into_iter().collect();
    sorted.sort_by(|(ka, a), (kb, b)| {
        (b.direct.saturating_add(b.indirect))
            .cmp(&a.direct.saturating_add(a.indirect))
            .then(b.blocks.cmp(&a.blocks))
            .then(ka.cmp(kb))
    });
    let record_count = sorted.len();
    let omitted = sorted.split_off(options.limit.min(sorted.len()));
    let mut stacks = Stacks::new(symbolizer);
    let records = sorted
        .into_iter()
        .enumerate()
        .map(|(i, ((class, stack), g))| LossRecord {
            number: i + 1,
            class,
            blocks: g.blocks,
            direct_bytes: g.direct,
            indirect_bytes: g.indirect,
            stack,
            site: stacks.site(view, stack, warnings),
            frames: stacks.frames(view, stack, options.frames, warnings),
            examples: g
                .addresses
                .iter()
                .take(3)
                .map(|&(address, _)| hex_address(address))
                .collect(),
            block_list: options.blocks.then(|| {
                g.addresses
                    .iter()
                    .map(|&(address, size)| LostBlock {
                        address: hex_address(address),
                        size,
                    })
                    .collect()
            }),
        })
        .collect();
    LeaksReport {
        heuristics: graph.heuristics(),
        summary: summary.to_vec(),
        reachable_via_heuristic,
        shown: options.show.clone(),
        record_count,
        records,
        omitted_records: omitted.len(),
        omitted_bytes: omitted.iter().map(|(_, g)| g.direct).sum(),
        pointer_free_edges: graph.pointer_free_edges(),
    }
}

impl LeaksReport {
    /// Bytes definitely or possibly lost (what `--fail-on-leak` looks at).
    pub fn lost_bytes(&self) -> u64 {
        self.summary
            .iter()
            .filter(|t| matches!(t.class, LeakClass::DefinitelyLost | LeakClass::PossiblyLost))
            .map(|t| t.bytes)
            .sum()
    }

    /// The report as text, in valgrind's words.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        for r in &self.records {
            let total = r.direct_bytes.saturating_add(r.indirect_bytes);
            let bytes = if r.class == LeakClass::DefinitelyLost {
                format!(
                    "{} ({} direct, {} indirect) bytes",
                    commas(total),
                    commas(r.direct_bytes),
                    commas(r.indirect_bytes)
                )
            } else {
                format!("{} bytes", commas(r.direct_bytes))
            };
            let _ = writeln!(
                o,
                "{bytes} in {} blocks are {} in loss record {} of {}",
                commas(r.blocks),
                r.class.words(),
                r.number,
                self.record_count
            );
            let _ = writeln!(o, "   site: {}", r.site.text());
            for (i, f) in r.frames.iter().enumerate() {
                let word = if i == 0 { "at" } else { "by" };
                let _ = writeln!(o, "   {word} {f}");
            }
            match &r.block_list {
                Some(blocks) => {
                    let _ = writeln!(o, "   blocks ({}):", blocks.len());
                    for b in blocks {
                        let _ = writeln!(o, "     {}  {} bytes", b.address, commas(b.size));
                    }
                }
                None => {
                    let _ = writeln!(o, "   blocks: {}", r.examples.join(" "));
                }
            }
            o.push('\n');
        }
        if self.omitted_records > 0 {
            let _ = writeln!(
                o,
                "({} more loss records, {} direct bytes, not shown; raise --limit)\n",
                self.omitted_records,
                commas(self.omitted_bytes)
            );
        }
        let _ = writeln!(o, "LEAK SUMMARY (heuristics: {}):", self.heuristics);
        for t in &self.summary {
            let _ = writeln!(
                o,
                "   {:>15}: {} bytes in {} blocks",
                t.class.words(),
                commas(t.bytes),
                commas(t.blocks)
            );
            if t.class == LeakClass::StillReachable && !self.reachable_via_heuristic.is_empty() {
                let _ = writeln!(o, "                      of which reachable via heuristic:");
                for h in &self.reachable_via_heuristic {
                    let _ = writeln!(
                        o,
                        "                        {:<19}: {} bytes in {} blocks",
                        h.heuristic.name(),
                        commas(h.bytes),
                        commas(h.blocks)
                    );
                }
            }
        }
        if let Some(note) = pointer_free_note(self.pointer_free_edges) {
            let _ = writeln!(o, "{note}");
        }
        let shown: Vec<&str> = self.shown.iter().map(|c| c.kind_name()).collect();
        let _ = writeln!(
            o,
            "Loss records shown for: {} (--show to choose)",
            shown.join(",")
        );
        o
    }
}

// ---------------------------------------------------------------- objects

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
/// label and site.
fn object_line(o: &ObjectInfo) -> String {
    format!(
        "{:<14} {:>10} retains {:>10}  {:<15}  {}  {}",
        o.address,
        human_bytes(o.size),
        human_bytes(o.retained),
        o.class.words(),
        abbreviate_type(&o.type_name, LABEL_WIDTH),
        o.site.text()
    )
}

/// A group of blocks on one line: count, bytes, the range of retained
/// sizes, the class, type label and site of its largest block (whose
/// address is shown when the group is that one block).
fn group_line(g: &ObjectGroup) -> String {
    let range = if g.retained_min == g.retained_max {
        human_bytes(g.retained_max)
    } else {
        format!(
            "{} … {}",
            human_bytes(g.retained_min),
            human_bytes(g.retained_max)
        )
    };
    let address = if g.count == 1 {
        format!("  at {}", g.largest.address)
    } else {
        String::new()
    };
    format!(
        "{:>7} {:>10} {:>23}  {:<15}  {}  {}{address}",
        g.count,
        human_bytes(g.bytes),
        range,
        g.largest.class.words(),
        abbreviate_type(&g.largest.type_name, LABEL_WIDTH),
        g.largest.site.text()
    )
}

// ---------------------------------------------------------------- top --retained

/// `heapdump top --retained`: what keeps the most memory alive.
#[derive(Clone, Debug, Serialize)]
pub struct RetainedReport {
    /// Live bytes.
    pub total_bytes: u64,
    /// Live blocks.
    pub total_count: u64,
    /// Blocks with the largest retained sizes (nested ones included: a
    /// list head and its second node may both appear).
    pub objects: Vec<ObjectInfo>,
    /// The blocks grouped by type and site, ranked by the largest retained
    /// size in the group, at most `limit`: many holders from one line are
    /// one row with their count and the range of their retained sizes.
    pub object_groups: Vec<ObjectGroup>,
    /// Sites by retained bytes: the sum over the site's blocks that no
    /// other block of the same site dominates (so nothing is counted twice
    /// within a site).
    pub sites: Vec<RetainedSite>,
    /// Types by retained bytes, counted as for sites: the sum over the
    /// type's blocks that no other block of the same type dominates.
    pub types: Vec<RetainedType>,
    /// Whether `sites` and `types` are estimates from a stack sample
    /// (production mode): only sampled blocks have a site and a type, and
    /// each topmost one counts `1/(1 - exp(-size/S))` times. `objects`,
    /// retained sizes and the totals are exact either way.
    pub estimated: bool,
    /// The mean interval S of the stack sample in bytes; 0: every stack.
    pub stack_sample_interval_bytes: u64,
    /// Pointers between blocks left out of retention because their source
    /// block's type holds no pointer (heuristic `pointer-free-types`).
    pub pointer_free_edges: u64,
}

/// Blocks of one type and one site in `top --retained`.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectGroup {
    /// Blocks in the group.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The smallest retained size among them.
    pub retained_min: u64,
    /// The largest retained size among them (that of `largest`).
    pub retained_max: u64,
    /// The block retaining the most (the lowest index among equals).
    pub largest: ObjectInfo,
}

/// One site of `top --retained`.
#[derive(Clone, Debug, Serialize)]
pub struct RetainedSite {
    /// Retained bytes.
    pub retained: u64,
    /// Share of all live bytes, percent.
    pub percent: f64,
    /// The site's blocks counted (those not dominated by another of its blocks).
    pub objects: u64,
    /// The site.
    pub site: Site,
}

/// One type of `top --retained`.
#[derive(Clone, Debug, Serialize)]
pub struct RetainedType {
    /// Retained bytes.
    pub retained: u64,
    /// Share of all live bytes, percent.
    pub percent: f64,
    /// The type's blocks counted (those not dominated by another of its blocks).
    pub objects: u64,
    /// The type label the exports use: the recovered type (`app::Node`,
    /// `Vec<u8> buffer`), or `alloc@function:line` when none was recovered.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Whether `type` is a recovered type (not the site fallback).
    pub recovered: bool,
}

fn percent_of(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

/// Dense ids for the distinct keys of a grouping, in first-seen order.
struct Interner<K> {
    ids: HashMap<K, u32>,
    keys: Vec<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Interner<K> {
    fn new() -> Interner<K> {
        Interner {
            ids: HashMap::new(),
            keys: Vec::new(),
        }
    }

    fn id(&mut self, key: &K) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.ids.insert(key.clone(), id);
        self.keys.push(key.clone());
        id
    }
}

/// Biggest retainers, `limit` objects, `limit` sites and `limit` types.
/// `frames` symbolizes stacks: a [`Symbolizer`], or a closure.
pub fn top_retained<S: StackFrames + ?Sized>(
    view: &DumpView<'_>,
    analysis: &HeapAnalysis,
    frames: &mut S,
    limit: usize,
    warnings: &mut Vec<String>,
) -> anyhow::Result<RetainedReport> {
    let Some(tree) = analysis.dominators.as_ref() else {
        bail!("top --retained needs the dominator tree");
    };
    let graph = &analysis.graph;
    let n = graph.node_count();
    let total_bytes = graph.sizes().iter().fold(0u64, |a, &s| a.saturating_add(s));
    let mut order: Vec<u32> = (0..n as u32).collect();
    let retained = tree.retained_sizes();
    let k = limit.min(n);
    if k < n && k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| {
            retained[b as usize]
                .cmp(&retained[a as usize])
                .then(a.cmp(&b))
        });
    }
    order.truncate(k);
    order.sort_by(|&a, &b| {
        retained[b as usize]
            .cmp(&retained[a as usize])
            .then(a.cmp(&b))
    });
    let mut stacks = Stacks::new(frames);
    let objects = order
        .iter()
        .map(|&v| object_info(view, analysis, &mut stacks, v, warnings))
        .collect();

    // Site and type of every node: name each distinct stack once. In a
    // sampled dump, blocks outside the sample go to a group of their own
    // (id 0 of each interner), which no row shows.
    let sampling = StackSampling::of(view);
    let mut sites: Interner<Site> = Interner::new();
    let mut types: Interner<(String, bool)> = Interner::new();
    let mut stack_ids: HashMap<u32, (u32, u32)> = HashMap::new();
    let mut node_site = Vec::with_capacity(n);
    let mut node_type = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(if sampling.is_sampled() { n } else { 0 });
    if sampling.is_sampled() {
        let unsampled = Site {
            function: "<not sampled>".into(),
            file: None,
            line: None,
            inlined_into: None,
            own_frame: None,
        };
        sites.id(&unsampled);
        types.id(&("<not sampled>".to_owned(), false));
    }
    for a in view.allocations().iter() {
        if sampling.is_sampled() {
            let weight = sampling.weight(&a);
            weights.push(weight);
            if weight == 0.0 {
                node_site.push(0);
                node_type.push(0);
                continue;
            }
        }
        let (site, ty) = match stack_ids.get(&a.stack) {
            Some(&ids) => ids,
            None => {
                let info = stacks.get(view, a.stack, warnings);
                let ty = (info.type_label.clone(), info.name.recovered.is_some());
                let ids = (sites.id(&info.name.site), types.id(&ty));
                stack_ids.insert(a.stack, ids);
                ids
            }
        };
        node_site.push(site);
        node_type.push(ty);
    }
    // Objects by (type, site): count, bytes and range of retained sizes,
    // with the group's largest block. A block outside a stack sample has
    // neither, so it is a group of its own: one row of all of them would
    // hide the largest retainers among unrelated blocks.
    // (type, site, the node when unsampled) -> (count, bytes, least
    // retained, largest node).
    type GroupKey = (u32, u32, u32);
    let mut groups: HashMap<GroupKey, (u64, u64, u64, u32)> = HashMap::new();
    for node in 0..n as u32 {
        let unsampled = sampling.is_sampled() && weights[node as usize] == 0.0;
        let key = (
            node_type[node as usize],
            node_site[node as usize],
            if unsampled { node } else { u32::MAX },
        );
        let r = retained[node as usize];
        let size = graph.size(node);
        let g = groups.entry(key).or_insert((0, 0, r, node));
        g.0 += 1;
        g.1 = g.1.saturating_add(size);
        g.2 = g.2.min(r);
        if r > retained[g.3 as usize] {
            g.3 = node;
        }
    }
    let mut groups: Vec<(u64, u64, u64, u32)> = groups.into_values().collect();
    groups.sort_by(|a, b| {
        retained[b.3 as usize]
            .cmp(&retained[a.3 as usize])
            .then(a.3.cmp(&b.3))
    });
    groups.truncate(limit);
    let object_groups = groups
        .into_iter()
        .map(|(count, bytes, retained_min, largest)| ObjectGroup {
            count,
            bytes,
            retained_min,
            retained_max: retained[largest as usize],
            largest: object_info(view, analysis, &mut stacks, largest, warnings),
        })
        .collect();

    let [site_totals, type_totals] = if sampling.is_sampled() {
        tree.estimated_retained_by_group([&node_site, &node_type], &weights)
            .map(|totals| {
                totals
                    .iter()
                    .map(|t| GroupRetained {
                        retained: t.retained.round() as u64,
                        objects: t.objects.round() as u64,
                    })
                    .collect()
            })
    } else {
        tree.retained_by_group([&node_site, &node_type])
    };
    let total = |totals: &[GroupRetained], id: usize| totals.get(id).copied().unwrap_or_default();
    // The group of unsampled blocks is no site and no type.
    let first_row = usize::from(sampling.is_sampled());

    let mut site_rows: Vec<RetainedSite> = sites
        .keys
        .into_iter()
        .enumerate()
        .skip(first_row)
        .map(|(id, site)| {
            let t = total(&site_totals, id);
            RetainedSite {
                retained: t.retained,
                percent: percent_of(t.retained, total_bytes),
                objects: t.objects,
                site,
            }
        })
        .collect();
    site_rows.sort_by(|a, b| {
        b.retained
            .cmp(&a.retained)
            .then_with(|| a.site.cmp(&b.site))
    });
    site_rows.truncate(limit);
    let mut type_rows: Vec<RetainedType> = types
        .keys
        .into_iter()
        .enumerate()
        .skip(first_row)
        .map(|(id, (type_name, recovered))| {
            let t = total(&type_totals, id);
            RetainedType {
                retained: t.retained,
                percent: percent_of(t.retained, total_bytes),
                objects: t.objects,
                type_name,
                recovered,
            }
        })
        .collect();
    type_rows.sort_by(|a, b| {
        b.retained
            .cmp(&a.retained)
            .then_with(|| a.type_name.cmp(&b.type_name))
    });
    type_rows.truncate(limit);
    Ok(RetainedReport {
        total_bytes,
        total_count: n as u64,
        objects,
        object_groups,
        sites: site_rows,
        types: type_rows,
        estimated: sampling.is_sampled(),
        stack_sample_interval_bytes: sampling.interval,
        pointer_free_edges: graph.pointer_free_edges(),
    })
}

impl RetainedReport {
    /// The report as text, objects grouped by type and site.
    pub fn to_text(&self) -> String {
        self.to_text_with(false)
    }

    /// The report as text; `per_object`: the objects one by one, as
    /// `objects` has them, instead of grouped.
    pub fn to_text_with(&self, per_object: bool) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "live: {} bytes ({}) in {} allocations",
            self.total_bytes,
            human_bytes(self.total_bytes),
            self.total_count
        );
        if let Some(note) = pointer_free_note(self.pointer_free_edges) {
            let _ = writeln!(o, "{note}");
        }
        let _ = writeln!(o, "\nobjects retaining the most:");
        if per_object {
            let _ = writeln!(
                o,
                "{:<14} {:>10} {:>18}  {:<15}  type  site",
                "address", "size", "retained", "class"
            );
            for obj in &self.objects {
                let _ = writeln!(o, "{}", object_line(obj));
            }
        } else {
            let _ = writeln!(
                o,
                "{:>7} {:>10} {:>23}  {:<15}  type  site  (--per-object: one by one)",
                "objects", "bytes", "retained each", "class"
            );
            for g in &self.object_groups {
                let _ = writeln!(o, "{}", group_line(g));
            }
        }
        if self.estimated {
            let _ = writeln!(
                o,
                "\nESTIMATED below: {}; blocks outside the sample have no site or type",
                StackSampling {
                    interval: self.stack_sample_interval_bytes
                }
                .note()
            );
        }
        let sites = self.sites.iter().map(|row| {
            let label = row.site.text();
            (row.retained, row.percent, row.objects, label)
        });
        retained_table(&mut o, "sites", "site", sites);
        let types = self.types.iter().map(|row| {
            (
                row.retained,
                row.percent,
                row.objects,
                abbreviate_type(&row.type_name, LABEL_WIDTH),
            )
        });
        retained_table(&mut o, "types", "type", types);
        o
    }
}

/// One "... retaining the most" table of `top --retained`: rows of
/// (retained bytes, percent of live bytes, objects counted, label).
fn retained_table(
    o: &mut String,
    groups: &str,
    label: &str,
    rows: impl Iterator<Item = (u64, f64, u64, String)>,
) {
    let _ = writeln!(o, "\n{groups} retaining the most:");
    let _ = writeln!(
        o,
        "{:>14} {:>10} {:>6} {:>9}  {label}",
        "retained", "", "%", "objects"
    );
    for (retained, percent, objects, name) in rows {
        let _ = writeln!(
            o,
            "{:>14} {:>10} {:>5.1}% {:>9}  {}",
            retained,
            human_bytes(retained),
            percent,
            objects,
            name
        );
    }
}

// ---------------------------------------------------------------- retainers

/// `heapdump retainers`: why blocks are alive.
#[derive(Clone, Debug, Serialize)]
pub struct RetainersReport {
    /// One entry per block asked about.
    pub objects: Vec<Retainers>,
}

/// Dominators and root paths of one block.
#[derive(Clone, Debug, Serialize)]
pub struct Retainers {
    /// The block.
    pub object: ObjectInfo,
    /// Its dominators, immediate first, up to the super-root.
    pub dominators: Vec<ObjectInfo>,
    /// Shortest paths from roots, shortest first (none for a lost block).
    pub paths: Vec<PathInfo>,
}

/// A path from a root to the block.
#[derive(Clone, Debug, Serialize)]
pub struct PathInfo {
    /// Where the first pointer is.
    pub root: RootInfo,
    /// The blocks, from the one the root points into to the block asked about.
    pub steps: Vec<PathStep>,
}

/// A root, for a path.
#[derive(Clone, Debug, Serialize)]
pub struct RootInfo {
    /// Index in `Roots`.
    pub index: u32,
    /// REGISTERS, THREAD_STACK, STATIC_TLS, DYNAMIC_TLS, DATA_SEGMENT, OTHER.
    pub kind: String,
    /// `thread TID "name"`, a module path, or null.
    pub owner: Option<String>,
    /// The root's name (a section or module), if any.
    pub name: Option<String>,
    /// Address of the pointer word (`0x…`), or the register name for REGISTERS.
    pub location: String,
    /// For a DATA_SEGMENT root, the static holding the pointer word
    /// (`app::CACHE+0x8`), when the module's symbol table has it.
    pub symbol: Option<String>,
    /// Offset of the pointer word within the root.
    pub source_offset: u64,
}

/// One block of a path.
#[derive(Clone, Debug, Serialize)]
pub struct PathStep {
    /// The block.
    pub object: ObjectInfo,
    /// Offset, in the previous block (or root), of the pointer to this one;
    /// null if the dump's edges cannot say.
    pub field_offset: Option<u64>,
    /// The previous block's field at `field_offset` (`next`, `value.next`,
    /// `[2].next`), as the DOT export labels edges: null for the first step
    /// (the root's pointer), or when the previous block's type was not
    /// recovered or the program's DWARF has no layout for it.
    pub field: Option<String>,
    /// Where in this block the pointer points (0: its start).
    pub target_offset: Option<u64>,
}

/// What `retainers` asks about.
#[derive(Clone, Debug)]
pub enum RetainersQuery {
    /// The block holding this address.
    Address(u64),
    /// The `limit` blocks of largest retained size whose site is this
    /// text, as [`filter::site_matches`] reads it.
    Site(String),
    /// The `limit` blocks of largest retained size whose type label (as
    /// `top --retained` shows it) best matches this text, as
    /// [`filter::type_match`] ranks matches.
    Type(String),
}

fn root_info<S: StackFrames + ?Sized>(
    view: &DumpView<'_>,
    symbolizer: &S,
    index: u32,
    source_offset: u64,
) -> RootInfo {
    let Some(root) = view.roots().get(index as usize) else {
        return RootInfo {
            index,
            kind: "<missing root>".into(),
            owner: None,
            name: None,
            location: String::new(),
            symbol: None,
            source_offset,
        };
    };
    let symbol = (root.kind == root_kind::DATA_SEGMENT)
        .then(|| symbolizer.symbol_at(root.address.wrapping_add(source_offset)))
        .flatten();
    let owner = match root.owner_kind {
        owner_kind::THREAD => view.threads().get(root.owner as usize).map(|t| {
            let name = string(view, t.name);
            if name.is_empty() {
                format!("thread {}", t.tid)
            } else {
                format!("thread {} \"{name}\"", t.tid)
            }
        }),
        owner_kind::MODULE => view
            .modules()
            .get(root.owner as usize)
            .map(|m| string(view, m.path)),
        _ => None,
    };
    let name = Some(string(view, root.name)).filter(|s| !s.is_empty());
    let location = if root.kind == root_kind::REGISTERS {
        register_name(view.process().machine, source_offset / 8)
            .map_or_else(|| format!("register {}", source_offset / 8), str::to_owned)
    } else {
        hex_address(root.address.wrapping_add(source_offset))
    };
    RootInfo {
        index,
        kind: root_kind_name(root.kind),
        owner,
        name,
        location,
        symbol,
        source_offset,
    }
}

/// Dominator chains and up to `max_paths` shortest root paths for the
/// blocks `query` selects. Needs the dominator tree. `frames` symbolizes
/// stacks; with [`TypedFrames`] objects get their generic types and path
/// steps their field names, as in the exports.
#[allow(clippy::too_many_arguments)]
pub fn retainers<S: StackFrames + ?Sized>(
    view: &DumpView<'_>,
    analysis: &HeapAnalysis,
    frames: &mut S,
    query: &RetainersQuery,
    limit: usize,
    max_paths: usize,
    warnings: &mut Vec<String>,
) -> anyhow::Result<RetainersReport> {
    let Some(tree) = analysis.dominators.as_ref() else {
        bail!("retainers needs the dominator tree");
    };
    let mut stacks = Stacks::new(frames);
    let largest_first = |nodes: &mut Vec<u32>| {
        nodes.sort_by(|&a, &b| tree.retained(b).cmp(&tree.retained(a)).then(a.cmp(&b)));
        nodes.truncate(limit.max(1));
    };
    let nodes: Vec<u32> = match query {
        RetainersQuery::Address(address) => match find_allocation(view, *address) {
            Some((node, _)) => vec![node],
            None => bail!("no live allocation holds address {address:#x}"),
        },
        RetainersQuery::Site(text) => {
            let mut matching: HashMap<u32, bool> = HashMap::new();
            let mut nodes = Vec::new();
            for (node, a) in view.allocations().iter().enumerate() {
                let hit = match matching.get(&a.stack) {
                    Some(&hit) => hit,
                    None => {
                        let hit = filter::site_matches(&stacks.site(view, a.stack, warnings), text);
                        matching.insert(a.stack, hit);
                        hit
                    }
                };
                if hit {
                    nodes.push(node as u32);
                }
            }
            if nodes.is_empty() {
                bail!(
                    "no live allocation has a site at `{text}` (FILE:LINE or FILE) or whose function contains it; `heapdump top` lists sites"
                );
            }
            largest_first(&mut nodes);
            nodes
        }
        RetainersQuery::Type(text) => {
            // Each distinct stack's label once; the best kind of match wins
            // (`Node` picks `app::Node`, not also `Vec<app::Node> buffer`).
            let mut labels: HashMap<u32, String> = HashMap::new();
            for a in view.allocations().iter() {
                if let std::collections::hash_map::Entry::Vacant(entry) = labels.entry(a.stack) {
                    entry.insert(stacks.type_label(view, a.stack, warnings));
                }
            }
            let stacks_matching: HashSet<u32> = filter::best_matches(
                labels
                    .iter()
                    .map(|(&stack, label)| (stack, filter::type_match(label, text))),
            )
            .into_iter()
            .collect();
            let mut nodes: Vec<u32> = (0..view.allocations().len() as u32)
                .filter(|&node| stacks_matching.contains(&stack_of(view, node)))
                .collect();
            if nodes.is_empty() {
                bail!(
                    "no live allocation has a type that is or contains `{text}`; `heapdump top --retained` lists types"
                );
            }
            largest_first(&mut nodes);
            nodes
        }
    };
    let mut objects = Vec::new();
    for node in nodes {
        let object = object_info(view, analysis, &mut stacks, node, warnings);
        let dominators = tree
            .chain(node)
            .into_iter()
            .map(|d| object_info(view, analysis, &mut stacks, d, warnings))
            .collect();
        let paths = shortest_root_paths(&analysis.graph, node, max_paths)
            .into_iter()
            .map(|p| {
                let mut steps = Vec::with_capacity(p.nodes.len());
                let mut previous: Option<u32> = None;
                for &v in &p.nodes {
                    let (field_offset, target_offset, field) = match previous {
                        None => (
                            Some(p.root_edge.source_offset),
                            Some(p.root_edge.target_offset),
                            None,
                        ),
                        Some(s) => match edge_offsets(view, s, v) {
                            Some((f, t)) => (
                                Some(f),
                                Some(t),
                                stacks.field_of(view, stack_of(view, s), f, warnings),
                            ),
                            None => (None, None, None),
                        },
                    };
                    steps.push(PathStep {
                        object: object_info(view, analysis, &mut stacks, v, warnings),
                        field_offset,
                        field,
                        target_offset,
                    });
                    previous = Some(v);
                }
                PathInfo {
                    root: root_info(
                        view,
                        &*stacks.source,
                        p.root_edge.root,
                        p.root_edge.source_offset,
                    ),
                    steps,
                }
            })
            .collect();
        objects.push(Retainers {
            object,
            dominators,
            paths,
        });
    }
    Ok(RetainersReport { objects })
}

impl RetainersReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        for (i, r) in self.objects.iter().enumerate() {
            if i > 0 {
                o.push('\n');
            }
            let _ = writeln!(o, "{}", object_line(&r.object));
            if r.dominators.is_empty() {
                let _ = writeln!(
                    o,
                    "  dominated by: the roots (no single block keeps it alive)"
                );
            } else {
                let _ = writeln!(o, "  dominated by (immediate first):");
                for d in &r.dominators {
                    let _ = writeln!(o, "    {}", object_line(d));
                }
            }
            if r.paths.is_empty() {
                let _ = writeln!(
                    o,
                    "  no path from a root: the block is {}",
                    r.object.class.words()
                );
            }
            for (k, p) in r.paths.iter().enumerate() {
                let root = &p.root;
                let mut from = root.kind.clone();
                if let Some(owner) = &root.owner {
                    let _ = write!(from, " of {owner}");
                }
                if let Some(name) = &root.name {
                    let _ = write!(from, " ({name})");
                }
                if let Some(symbol) = &root.symbol {
                    let _ = write!(from, ", static {symbol}");
                }
                let _ = writeln!(
                    o,
                    "  path {} ({} blocks) from {from} at {}:",
                    k + 1,
                    p.steps.len(),
                    root.location
                );
                for step in &p.steps {
                    let mut field = step
                        .field_offset
                        .map_or_else(|| "?".to_owned(), |f| format!("{f:#x}"));
                    if let Some(name) = &step.field {
                        field.push_str(if name.starts_with('[') { " " } else { " ." });
                        field.push_str(name);
                    }
                    let target = step.target_offset.map_or_else(String::new, |t| {
                        if t == 0 {
                            String::new()
                        } else {
                            format!(" (interior +{t:#x})")
                        }
                    });
                    let _ = writeln!(
                        o,
                        "    [{field}] -> {}{target} {} {}  {}",
                        step.object.address,
                        human_bytes(step.object.size),
                        step.object.type_name,
                        step.object.site.text()
                    );
                }
            }
        }
        o
    }
}

// ---------------------------------------------------------------- diff

/// One side of a diff.
#[derive(Clone, Debug, Serialize)]
pub struct DumpSide {
    /// The file.
    pub file: String,
    /// Process id.
    pub pid: u32,
    /// Dump number within the process.
    pub dump_number: u32,
    /// Live bytes.
    pub live_bytes: u64,
    /// Live blocks.
    pub live_count: u64,
}

/// What `diff` groups blocks by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DiffBy {
    /// The allocation site (function, file, line).
    #[default]
    Site,
    /// The recovered type, as the exports label it (the site's
    /// `alloc@function:line` when no type was recovered).
    Type,
}

/// The group of a diff row. In JSON it is the row's `"site": SITE` or
/// `"type": str` member.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKey {
    /// An allocation site.
    Site(Site),
    /// A type label.
    Type(String),
}

/// `heapdump diff`: growth by site (or type) between two dumps of one process.
#[derive(Clone, Debug, Serialize)]
pub struct DiffReport {
    /// The older dump.
    pub old: DumpSide,
    /// The newer dump.
    pub new: DumpSide,
    /// What the rows are grouped by.
    pub by: DiffBy,
    /// Blocks of NEW not in OLD (matched by address and sequence): allocated since OLD and still alive.
    pub new_objects: u64,
    /// Their bytes.
    pub new_object_bytes: u64,
    /// Sites (or types) by growth in bytes, biggest first; only those that changed.
    pub rows: Vec<DiffRow>,
    /// Changed rows left out by the limit.
    pub omitted_rows: usize,
    /// Whether the rows are estimates: either dump has sampled stacks
    /// (production mode), so each of its sampled blocks counts
    /// `1/(1 - exp(-size/S))` times and its other blocks in no row. The
    /// sides' totals and `new_objects`/`new_object_bytes` are exact.
    pub estimated: bool,
}

/// One site (or type) of a diff.
#[derive(Clone, Debug, Serialize)]
pub struct DiffRow {
    /// The site or type.
    #[serde(flatten)]
    pub key: DiffKey,
    /// Live bytes in OLD.
    pub old_bytes: u64,
    /// Live blocks in OLD.
    pub old_count: u64,
    /// Live bytes in NEW.
    pub new_bytes: u64,
    /// Live blocks in NEW.
    pub new_count: u64,
    /// `new_bytes - old_bytes`.
    pub delta_bytes: i64,
    /// `new_count - old_count`.
    pub delta_count: i64,
    /// Blocks of this site in NEW that were not in OLD.
    pub new_objects: u64,
    /// Their bytes.
    pub new_object_bytes: u64,
}

fn side(view: &DumpView<'_>, file: &str) -> DumpSide {
    let p = view.process();
    DumpSide {
        file: file.to_owned(),
        pid: p.pid,
        dump_number: p.dump_number,
        live_bytes: view
            .allocations()
            .iter()
            .fold(0u64, |a, r| a.saturating_add(r.size)),
        live_count: view.allocations().len() as u64,
    }
}

/// Compares two dumps of the same process, site by site or type by type.
/// Each dump is symbolized with its own symbolizer (same binary, but its
/// own modules), or closure.
#[allow(clippy::too_many_arguments)]
pub fn diff<O: StackFrames + ?Sized, N: StackFrames + ?Sized>(
    old: &DumpView<'_>,
    old_file: &str,
    old_symbolizer: &mut O,
    new: &DumpView<'_>,
    new_file: &str,
    new_symbolizer: &mut N,
    by: DiffBy,
    limit: usize,
    warnings: &mut Vec<String>,
) -> DiffReport {
    let (po, pn) = (old.process(), new.process());
    if po.pid != pn.pid || string(old, po.exe) != string(new, pn.exe) {
        warnings.push(format!(
            "the dumps come from different processes (pid {} {}, pid {} {}); objects are matched by address and sequence, which only means something within one process",
            po.pid,
            string(old, po.exe),
            pn.pid,
            string(new, pn.exe)
        ));
    } else if po.dump_number >= pn.dump_number {
        warnings.push(format!(
            "OLD is dump {} and NEW is dump {} of the process: are they swapped?",
            po.dump_number, pn.dump_number
        ));
    }
    #[derive(Default)]
    struct Row {
        old_bytes: u64,
        old_count: u64,
        new_bytes: u64,
        new_count: u64,
        new_objects: u64,
        new_object_bytes: u64,
    }
    let mut rows: HashMap<DiffKey, Row> = HashMap::new();
    let (old_sampling, new_sampling) = (StackSampling::of(old), StackSampling::of(new));
    // Weighted sums are f64 (a stack sample's weights are fractional),
    // rounded once per stack.
    let round = |x: f64| x.round() as u64;
    let mut old_stacks = Stacks::new(old_symbolizer);
    let mut by_stack: HashMap<u32, (f64, f64)> = HashMap::new();
    for a in old.allocations().iter() {
        let weight = old_sampling.weight(&a);
        if weight == 0.0 {
            continue;
        }
        let e = by_stack.entry(a.stack).or_default();
        e.0 += a.size as f64 * weight;
        e.1 += weight;
    }
    for (stack, (bytes, count)) in by_stack.drain() {
        let row = rows
            .entry(old_stacks.diff_key(old, stack, by, warnings))
            .or_default();
        row.old_bytes = row.old_bytes.saturating_add(round(bytes));
        row.old_count += round(count);
    }
    // Both sides are sorted by address: a merge finds the blocks of NEW
    // that OLD had too (same address and same sequence number).
    let mut new_by_stack: HashMap<u32, (f64, f64, f64, f64)> = HashMap::new();
    let mut old_iter = old.allocations().iter().peekable();
    let (mut new_objects, mut new_object_bytes) = (0u64, 0u64);
    for a in new.allocations().iter() {
        while old_iter.peek().is_some_and(|o| o.address < a.address) {
            old_iter.next();
        }
        let seen = old_iter
            .peek()
            .is_some_and(|o| o.address == a.address && o.sequence == a.sequence);
        if !seen {
            new_objects += 1;
            new_object_bytes = new_object_bytes.saturating_add(a.size);
        }
        let weight = new_sampling.weight(&a);
        if weight == 0.0 {
            continue;
        }
        let e = new_by_stack.entry(a.stack).or_default();
        e.0 += a.size as f64 * weight;
        e.1 += weight;
        if !seen {
            e.2 += weight;
            e.3 += a.size as f64 * weight;
        }
    }
    let mut new_stacks = Stacks::new(new_symbolizer);
    for (stack, (bytes, count, objects, object_bytes)) in new_by_stack {
        let row = rows
            .entry(new_stacks.diff_key(new, stack, by, warnings))
            .or_default();
        row.new_bytes = row.new_bytes.saturating_add(round(bytes));
        row.new_count += round(count);
        row.new_objects += round(objects);
        row.new_object_bytes = row.new_object_bytes.saturating_add(round(object_bytes));
    }
    let mut out: Vec<DiffRow> = rows
        .into_iter()
        .filter(|(_, r)| {
            r.old_bytes != r.new_bytes || r.old_count != r.new_count || r.new_objects != 0
        })
        .map(|(key, r)| DiffRow {
            key,
            old_bytes: r.old_bytes,
            old_count: r.old_count,
            new_bytes: r.new_bytes,
            new_count: r.new_count,
            delta_bytes: (r.new_bytes as i128 - r.old_bytes as i128) as i64,
            delta_count: r.new_count as i64 - r.old_count as i64,
            new_objects: r.new_objects,
            new_object_bytes: r.new_object_bytes,
        })
        .collect();
    out.sort_by(|a, b| {
        b.delta_bytes
            .cmp(&a.delta_bytes)
            .then(b.new_object_bytes.cmp(&a.new_object_bytes))
            .then_with(|| a.key.cmp(&b.key))
    });
    let omitted = out.len().saturating_sub(limit);
    out.truncate(limit);
    DiffReport {
        old: side(old, old_file),
        new: side(new, new_file),
        by,
        new_objects,
        new_object_bytes,
        rows: out,
        omitted_rows: omitted,
        estimated: old_sampling.is_sampled() || new_sampling.is_sampled(),
    }
}

impl DiffReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let delta = self.new.live_bytes as i128 - self.old.live_bytes as i128;
        let _ = writeln!(
            o,
            "old: {} (dump {}): {} bytes in {} allocations",
            self.old.file, self.old.dump_number, self.old.live_bytes, self.old.live_count
        );
        let _ = writeln!(
            o,
            "new: {} (dump {}): {} bytes in {} allocations ({delta:+} bytes)",
            self.new.file, self.new.dump_number, self.new.live_bytes, self.new.live_count
        );
        let _ = writeln!(
            o,
            "allocated since old and still alive: {} bytes ({}) in {} allocations",
            self.new_object_bytes,
            human_bytes(self.new_object_bytes),
            self.new_objects
        );
        if self.estimated {
            let _ = writeln!(
                o,
                "ESTIMATED: the rows come from sampled stacks (production mode): each sampled block counts 1/(1 - exp(-size/S)) times; the lines above are exact"
            );
        }
        let (column, plural) = match self.by {
            DiffBy::Site => ("site", "sites"),
            DiffBy::Type => ("type", "types"),
        };
        let _ = writeln!(
            o,
            "{:>14} {:>9} {:>14} {:>9}  {column}",
            "Δbytes", "Δcount", "new bytes", "new"
        );
        for r in &self.rows {
            let key = match &r.key {
                DiffKey::Site(site) => site.text(),
                DiffKey::Type(label) => abbreviate_type(label, LABEL_WIDTH),
            };
            let _ = writeln!(
                o,
                "{:>+14} {:>+9} {:>14} {:>9}  {key}",
                r.delta_bytes, r.delta_count, r.new_object_bytes, r.new_objects,
            );
        }
        if self.omitted_rows > 0 {
            let _ = writeln!(o, "({} more changed {plural})", self.omitted_rows);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_group_thousands() {
        assert_eq!(commas(0), "0");
        assert_eq!(commas(999), "999");
        assert_eq!(commas(4752), "4,752");
        assert_eq!(commas(1_234_567), "1,234,567");
    }
}
