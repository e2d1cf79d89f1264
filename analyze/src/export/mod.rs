//! Exports of a heap snapshot to formats other tools read: Graphviz DOT
//! ([`dot`]), SQLite ([`sqlite`]), Java HPROF ([`hprof`]), SVG flame
//! graphs ([`flamegraph`]), pprof profiles ([`pprof`]), Chrome DevTools
//! heap snapshots ([`heapsnapshot`]) and Parquet datasets ([`parquet`]; the
//! tables it shares with SQLite are described once, in [`tables`]). All read
//! one [`HeapModel`] (the dump, its graph and analysis, every allocation's
//! name, the symbolized frames of every stack, and the symbols and field
//! layouts of the program), and all are an [`Export`], written to a file,
//! stdout or (Parquet) a directory by [`write_export`].
//!
//! ```no_run
//! use heapdump_analyze::export::{Destination, HeapModel, dot, write_export};
//! use heapdump_analyze::symbolize::{SymbolizeOptions, Symbolizer};
//!
//! let dump = heapdump_analyze::open_dump("app.hdump".as_ref())?;
//! let view = dump.view();
//! let symbolizer = Symbolizer::new(&view, &SymbolizeOptions::default())?;
//! let model = HeapModel::build(view, symbolizer)?;
//! let to = Destination::File("heap.dot".into());
//! write_export(&dot::DotOptions::default(), &model, &to)?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::HashMap;

use anyhow::bail;
use heapdump_formats::constants::{Machine, Register, RootKind};
use heapdump_formats::read::DumpView;
use heapdump_formats::records::{EdgeRecord, RootRecord, edge_flags};

use crate::analysis::HeapAnalysis;
use crate::dominators::Dominator;
use crate::fields::FieldIndex;
use crate::heuristics::Heuristics;
use crate::leaks::LeakClass;
use crate::site::{Site, is_runtime_entry, trim_allocator_frames};
use crate::stacks::StackFrames;
use crate::symbolize::Frame;
use crate::types::{AllocationName, TypeName, site_label};

pub mod dot;
pub mod flamegraph;
pub mod heapsnapshot;
pub mod hprof;
mod output;
pub mod parquet;
pub mod pprof;
pub mod sqlite;
pub mod sqlite_file;
pub mod tables;

pub use output::{Destination, Output, OutputKind};

/// One output format over a [`HeapModel`]: the options of one export. A
/// stream format writes to [`Output`] as an `io::Write`; a format that
/// needs a file of its own (SQLite) writes to [`Output::file_path`].
pub trait Export {
    /// What the export reports back (counts for the note on stderr).
    type Summary;

    /// What is written, for messages: `DOT graph`, `HPROF file`.
    fn name(&self) -> &'static str;

    /// A file name for the messages that ask for `-o` (`FILE.hprof`).
    fn file_name(&self) -> &'static str;

    /// Whether the output is text, binary (never written to a terminal),
    /// or a file that cannot be streamed.
    fn kind(&self) -> OutputKind;

    /// Whether the export reads the heap graph (roots, pointers, leak
    /// classes, dominators): those need a dump with a scan.
    fn needs_graph(&self) -> bool;

    /// Writes `model`. Called by [`write_export`], which opens and
    /// finishes `out`.
    fn write(&self, model: &HeapModel<'_>, out: &mut Output) -> anyhow::Result<Self::Summary>;
}

/// Writes `export` of `model` to `to`: a file is written under a temporary
/// name beside it and renamed into place when complete (a failed export
/// leaves nothing under the requested name); stdout is refused for a
/// binary format when it is a terminal, and for a file-only format.
pub fn write_export<E: Export>(
    export: &E,
    model: &HeapModel<'_>,
    to: &Destination,
) -> anyhow::Result<E::Summary> {
    if export.needs_graph() && model.analysis.is_none() {
        bail!(
            "the {} needs the heap graph, and the model was built without it",
            export.name()
        );
    }
    let mut out = Output::create(to, export)?;
    let summary = export.write(model, &mut out).map_err(|e| out.fail(e))?;
    out.finish()?;
    Ok(summary)
}

/// One distinct type label (a recovered type, or `alloc@site` for
/// allocations no constructor frame names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeEntry {
    /// What exports show: `Vec<u8> buffer`, `app::Node`, `alloc@app::f:12`.
    pub label: String,
    /// Whether the label is a recovered type (not a site fallback).
    pub recovered: bool,
    /// The recovered type, for finding its layout.
    pub name: Option<TypeName>,
}

/// One distinct allocation site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteEntry {
    /// `function:line`, generic arguments stripped.
    pub label: String,
    /// The site as [`Site::of_stack`] found it.
    pub site: Site,
}

/// What identifies a distinct frame: its return address and what
/// symbolizing it gave (one address yields several inlined frames).
type FrameKey = (u64, Option<String>, Option<String>, Option<u32>, bool);

/// What to build besides names and frames.
#[derive(Clone, Copy, Debug)]
pub struct ModelOptions {
    /// Build the heap graph, leak classes and dominator tree (needs a dump
    /// with a scan; takes seconds on millions of blocks). Exports by
    /// allocation stack alone (flame graph, pprof) do without.
    pub graph: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { graph: true }
    }
}

/// The graph side of the model: the analysis `leaks` and `top --retained`
/// run, and the dump's edge record behind each graph edge (the graph keeps
/// targets only; exports also show the pointers' offsets).
#[derive(Debug)]
struct Analyzed {
    analysis: HeapAnalysis,
    /// `edge_records[slot]`: the index in the dump's `Edges` of the
    /// graph's out-edge `slot`.
    edge_records: Vec<u32>,
}

/// The analyzed heap every export reads. Indexes of allocations, roots and
/// edges are the dump's.
///
/// Building it symbolizes every distinct stack once and, by default,
/// builds the heap graph with its leak classes and dominator tree: seconds
/// for a dump of millions of blocks.
pub struct HeapModel<'a> {
    view: DumpView<'a>,
    /// Distinct type labels; `alloc_type` indexes them.
    pub types: Vec<TypeEntry>,
    /// Distinct sites; `alloc_site` indexes them.
    pub sites: Vec<SiteEntry>,
    /// Type of each allocation, an index in `types`.
    pub alloc_type: Vec<u32>,
    /// Site of each allocation, an index in `sites`.
    pub alloc_site: Vec<u32>,
    /// Per stack id that some allocation uses: (type index, site index).
    pub stack_names: HashMap<u32, (u32, u32)>,
    /// Distinct symbolized frames; [`HeapModel::stack_frames`] indexes them.
    frames: Vec<Frame>,
    /// Per stack id: its frames, innermost first, as indexes in `frames`.
    /// Stacks that could not be read have none.
    stack_frames: HashMap<u32, Vec<u32>>,
    analysis: Option<Analyzed>,
    /// Where names came from: also names statics and fields.
    names: Box<dyn StackFrames + 'a>,
    /// Struct layouts given with [`HeapModel::set_fields`].
    fields: Option<FieldIndex>,
    /// Problems that did not stop the export, one sentence each.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for HeapModel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapModel")
            .field("allocations", &self.alloc_type.len())
            .field("types", &self.types.len())
            .field("sites", &self.sites.len())
            .field("frames", &self.frames.len())
            .field("graph", &self.analysis.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> HeapModel<'a> {
    /// Builds the whole model (names, frames, graph and analysis).
    /// `names` symbolizes stacks (innermost first): a
    /// [`Symbolizer`](crate::symbolize::Symbolizer), a
    /// [`TypedFrames`](crate::stacks::TypedFrames), or a closure
    /// `FnMut(u32) -> anyhow::Result<Vec<Frame>>`. It is asked once per
    /// distinct stack id; a stack it cannot symbolize is named `<unknown>`
    /// with a warning. Fails for a dump without a scan.
    pub fn build(
        view: DumpView<'a>,
        names: impl StackFrames + 'a,
    ) -> anyhow::Result<HeapModel<'a>> {
        Self::build_with(view, names, &ModelOptions::default())
    }

    /// [`build`](Self::build), with the graph only if `options` asks.
    pub fn build_with(
        view: DumpView<'a>,
        names: impl StackFrames + 'a,
        options: &ModelOptions,
    ) -> anyhow::Result<HeapModel<'a>> {
        let mut names: Box<dyn StackFrames + 'a> = Box::new(names);
        let n = view.allocations().len();
        // The same analysis `leaks` and `top --retained` run (and the same
        // refusal of a dump without a scan, where every block would look
        // lost).
        let analysis = if options.graph {
            let analysis = HeapAnalysis::new(&view, &Heuristics::default(), true, &mut *names)?;
            if analysis.dominators.is_none() {
                bail!("the dominator tree was not computed");
            }
            let edge_records = analysis.graph.edge_records(&view);
            Some(Analyzed {
                analysis,
                edge_records,
            })
        } else {
            None
        };

        // Stacks in id order, so frame ids do not depend on where blocks are.
        let mut stack_ids: Vec<u32> = view.allocations().iter().map(|a| a.stack).collect();
        stack_ids.sort_unstable();
        stack_ids.dedup();
        let mut frames: Vec<Frame> = Vec::new();
        // Keyed by the whole frame: every stack through the same return
        // address shares its frames.
        let mut frame_ids: HashMap<FrameKey, u32> = HashMap::new();
        let mut stack_frames: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut stack_name: HashMap<u32, AllocationName> = HashMap::new();
        let mut unsymbolized = 0u64;
        for &stack in &stack_ids {
            let symbolized = if stack == 0 {
                Vec::new()
            } else {
                match names.stack_frames(&view, stack) {
                    Ok(symbolized) => {
                        let ids = symbolized
                            .iter()
                            .map(|frame| {
                                let next = frames.len() as u32;
                                let key = (
                                    frame.pc,
                                    frame.function.clone(),
                                    frame.file.clone(),
                                    frame.line,
                                    frame.inlined,
                                );
                                *frame_ids.entry(key).or_insert_with(|| {
                                    frames.push(frame.clone());
                                    next
                                })
                            })
                            .collect();
                        stack_frames.insert(stack, ids);
                        symbolized
                    }
                    Err(_) => {
                        unsymbolized += 1;
                        Vec::new()
                    }
                }
            };
            stack_name.insert(
                stack,
                AllocationName::of_stack_in(&symbolized, names.own_code()),
            );
        }

        let mut model = HeapModel {
            view,
            types: Vec::new(),
            sites: Vec::new(),
            alloc_type: Vec::with_capacity(n),
            alloc_site: Vec::with_capacity(n),
            stack_names: HashMap::new(),
            frames,
            stack_frames,
            analysis,
            names,
            fields: None,
            warnings: Vec::new(),
        };
        // Type and site ids in address order of their first block.
        let mut type_ids: HashMap<String, u32> = HashMap::new();
        let mut site_ids: HashMap<String, u32> = HashMap::new();
        for allocation in model.view.allocations().iter() {
            let stack = allocation.stack;
            let ids = match model.stack_names.get(&stack) {
                Some(&ids) => ids,
                None => {
                    let name = &stack_name[&stack];
                    let label = name.type_label();
                    let next = model.types.len() as u32;
                    let type_id = *type_ids.entry(label.clone()).or_insert_with(|| {
                        model.types.push(TypeEntry {
                            label,
                            recovered: name.recovered.is_some(),
                            name: name.recovered.clone(),
                        });
                        next
                    });
                    let label = site_label(&name.site);
                    let next = model.sites.len() as u32;
                    let site_id = *site_ids.entry(label.clone()).or_insert_with(|| {
                        model.sites.push(SiteEntry {
                            label,
                            site: name.site.clone(),
                        });
                        next
                    });
                    model.stack_names.insert(stack, (type_id, site_id));
                    (type_id, site_id)
                }
            };
            model.alloc_type.push(ids.0);
            model.alloc_site.push(ids.1);
        }
        if unsymbolized > 0 {
            model.warnings.push(format!(
                "{unsymbolized} stacks could not be read (run `heapdump verify`); their allocations are named alloc@<unknown>"
            ));
        }
        if let Some(analyzed) = &model.analysis {
            model.warnings.extend(analyzed.analysis.warnings());
        }
        Ok(model)
    }

    /// Uses `fields` (the program's struct layouts) to name the fields
    /// pointers are in, instead of asking the names source.
    pub fn set_fields(&mut self, fields: FieldIndex) {
        self.fields = Some(fields);
    }

    /// The field of allocation `node` at byte `offset` (`next`,
    /// `[3].next`), when its type was recovered and the program's DWARF
    /// has its layout.
    pub fn field_label(&self, node: u32, offset: u64) -> Option<String> {
        let ty = self
            .types
            .get(*self.alloc_type.get(node as usize)? as usize)?;
        let ty = ty.name.as_ref()?;
        match &self.fields {
            Some(fields) => fields.field_of(ty, offset),
            None => self.names.field_of(ty, offset),
        }
    }

    /// The symbol (`app::CACHE+0x8`) at `address`, for naming the static a
    /// root pointer is in; `None` when the names source has no symbols.
    pub fn symbol_at(&self, address: u64) -> Option<String> {
        self.names.symbol_at(address)
    }

    /// The dump.
    pub fn view(&self) -> &DumpView<'a> {
        &self.view
    }

    /// Number of allocations.
    pub fn node_count(&self) -> usize {
        self.alloc_type.len()
    }

    /// Every distinct symbolized frame; ids in [`stack_frames`](Self::stack_frames) index it.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The frames of stack `stack`, innermost first, as indexes in
    /// [`frames`](Self::frames); empty for stack 0 and unreadable stacks.
    pub fn stack_frames(&self, stack: u32) -> &[u32] {
        self.stack_frames.get(&stack).map_or(&[], Vec::as_slice)
    }

    /// The frames of `stack` that profiles show, outermost last: allocator
    /// and tracker frames trimmed as `top` trims them, and nothing beyond
    /// the runtime's entry frame (the same for every allocation). Indexes
    /// in [`frames`](Self::frames).
    pub fn profile_frames(&self, stack: u32) -> Vec<u32> {
        let ids = self.stack_frames(stack);
        let symbolized: Vec<Frame> = ids
            .iter()
            .map(|&i| self.frames[i as usize].clone())
            .collect();
        let trimmed = trim_allocator_frames(&symbolized);
        let skip = symbolized.len() - trimmed.len();
        let keep = trimmed
            .iter()
            .take_while(|frame| !is_runtime_entry(frame))
            .count();
        ids[skip..skip + keep].to_vec()
    }

    /// The type label of allocation `node`.
    pub fn type_label(&self, node: u32) -> &str {
        self.alloc_type
            .get(node as usize)
            .and_then(|&t| self.types.get(t as usize))
            .map_or("alloc@<unknown>", |t| t.label.as_str())
    }

    /// The site label of allocation `node`.
    pub fn site_label(&self, node: u32) -> &str {
        self.alloc_site
            .get(node as usize)
            .and_then(|&s| self.sites.get(s as usize))
            .map_or("<unknown>", |s| s.label.as_str())
    }

    /// Whether the model has the heap graph and its analysis.
    pub fn has_graph(&self) -> bool {
        self.analysis.is_some()
    }

    /// The heap graph, leak classes and dominators, if built.
    pub fn analysis(&self) -> Option<&HeapAnalysis> {
        self.analysis.as_ref().map(|a| &a.analysis)
    }

    /// The graph side; the graph accessors below are only called by
    /// exports whose [`Export::needs_graph`] made [`write_export`] check it.
    fn analyzed(&self) -> &Analyzed {
        self.analysis
            .as_ref()
            .expect("graph accessors need a model built with ModelOptions::graph")
    }

    /// Edges the graph left out because the dump breaks a format rule
    /// (`heapdump verify` says which).
    pub fn skipped_edges(&self) -> u64 {
        self.analysis
            .as_ref()
            .map_or(0, |a| a.analysis.graph.skipped_edges())
    }

    /// The leak class of allocation `node` (memcheck's classes, with the
    /// default Rust heuristics of `heapdump leaks`).
    ///
    /// # Panics
    /// If the model was built without the graph (so are the accessors below).
    pub fn leak_class(&self, node: u32) -> LeakClass {
        self.analyzed().analysis.leaks.class(node)
    }

    /// For a definitely-lost `node`, the bytes of the indirectly-lost
    /// blocks it holds (memcheck's indirect bytes of its loss record);
    /// 0 for any other.
    pub fn indirect_bytes(&self, node: u32) -> u64 {
        self.analyzed().analysis.leaks.indirect_bytes(node)
    }

    /// Bytes freed if `node` were freed: its own size plus everything only
    /// it keeps alive (its subtree in the dominator tree).
    pub fn retained(&self, node: u32) -> u64 {
        self.dominator_tree().retained(node)
    }

    fn dominator_tree(&self) -> &crate::dominators::DominatorTree {
        self.analyzed()
            .analysis
            .dominators
            .as_ref()
            .expect("built with its dominator tree")
    }

    /// Per allocation, whether no other allocation of its type (first
    /// vector) or of its site (second) dominates it: the blocks whose
    /// retained sizes add up to `top --retained`'s figures by type and site.
    pub fn topmost_of_types_and_sites(&self) -> [Vec<bool>; 2] {
        self.dominator_tree()
            .topmost_of_groups([&self.alloc_type, &self.alloc_site])
    }

    /// The block every path from the roots to `node` goes through last;
    /// `None` when the roots themselves are its dominator or it is
    /// unreachable.
    pub fn dominator(&self, node: u32) -> Option<u32> {
        match self.dominator_tree().idom(node) {
            Dominator::Node(d) => Some(d),
            Dominator::SuperRoot | Dominator::Unreachable => None,
        }
    }

    /// Whether a root reaches `node` (still reachable or possibly lost).
    pub fn is_reachable(&self, node: u32) -> bool {
        matches!(
            self.leak_class(node),
            LeakClass::StillReachable | LeakClass::PossiblyLost
        )
    }

    /// The valid out-edges of allocation `node`, by source offset when the
    /// dump is sorted.
    pub fn out_edges(&self, node: u32) -> impl Iterator<Item = EdgeRecord> + '_ {
        let analyzed = self.analyzed();
        let graph = &analyzed.analysis.graph;
        let first = graph.out_row_start(node) as usize;
        let count = graph.out_row(node).len();
        let edges = self.view.edges();
        analyzed.edge_records[first..first + count]
            .iter()
            .filter_map(move |&i| edges.get(i as usize))
    }

    /// Every valid edge from an allocation, in dump order.
    pub fn allocation_edges(&self) -> impl Iterator<Item = EdgeRecord> + '_ {
        (0..self.node_count() as u32).flat_map(|n| self.out_edges(n))
    }

    /// Every valid edge from a root, in dump order.
    pub fn root_edges(&self) -> impl Iterator<Item = EdgeRecord> + '_ {
        self.analyzed()
            .analysis
            .graph
            .root_edges()
            .iter()
            .map(|e| EdgeRecord {
                source: e.root,
                target: e.target,
                source_offset: e.source_offset,
                target_offset: e.target_offset,
                flags: edge_flags::FROM_ROOT,
                reserved: 0,
            })
    }

    /// Bytes in allocations whose type was recovered, and all live bytes.
    pub fn typed_bytes(&self) -> (u64, u64) {
        let mut typed = 0u64;
        let mut total = 0u64;
        for (allocation, &t) in self.view.allocations().iter().zip(&self.alloc_type) {
            total = total.saturating_add(allocation.size);
            if self.types.get(t as usize).is_some_and(|t| t.recovered) {
                typed = typed.saturating_add(allocation.size);
            }
        }
        (typed, total)
    }

    /// A root's display name: its kind and what it belongs to (thread
    /// name or tid, module file name, the root's own name).
    pub fn root_label(&self, root: &RootRecord) -> String {
        let kind = root_kind_name(root.kind);
        let owner = match root.owner_kind {
            1 => self.view.threads().get(root.owner as usize).map(|t| {
                let name = self.view.string_lossy(t.name).unwrap_or_default();
                if name.is_empty() {
                    format!("thread {}", t.tid)
                } else {
                    format!("thread {} ({name})", t.tid)
                }
            }),
            2 => self.view.modules().get(root.owner as usize).map(|m| {
                let path = self.view.string_lossy(m.path).unwrap_or_default();
                path.rsplit('/').next().unwrap_or_default().to_owned()
            }),
            _ => None,
        };
        let name = self.view.string_lossy(root.name).unwrap_or_default();
        let name = name.rsplit('/').next().unwrap_or_default();
        let mut label = kind.to_owned();
        for part in [owner.as_deref(), Some(name)].into_iter().flatten() {
            if !part.is_empty() {
                label.push(' ');
                label.push_str(part);
            }
        }
        label
    }
}

/// The name of a root kind as FORMAT.md spells it, `UNKNOWN` for a kind
/// it does not define (an export's column or label takes one word).
pub fn root_kind_name(kind: u16) -> &'static str {
    RootKind(kind).name().unwrap_or("UNKNOWN")
}

/// How to label the pointer at `offset` in `root`: a register name for
/// x86_64 registers, else `+0x…`.
pub fn root_offset_label(machine: Machine, root: &RootRecord, offset: u64) -> String {
    if RootKind(root.kind) == RootKind::REGISTERS
        && let Some(name) = Register::at_offset(machine, offset).and_then(Register::name)
    {
        return name.to_owned();
    }
    format!("+{offset:#x}")
}
