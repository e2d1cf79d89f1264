//! Exports of a heap snapshot to formats other tools read: Graphviz DOT
//! ([`dot`]), SQLite ([`sqlite`]) and Java HPROF ([`hprof`]). All work
//! from one [`HeapModel`]: the dump, every allocation's name (recovered
//! type or site), its leak class, and its out-edges, computed once.
//!
//! ```no_run
//! use heapdump_analyze::export::{HeapModel, dot};
//! use heapdump_analyze::symbolize::{SymbolizeOptions, Symbolizer};
//!
//! let dump = heapdump_analyze::open_dump("app.hdump".as_ref())?;
//! let view = dump.view();
//! let mut symbolizer = Symbolizer::new(&view, &SymbolizeOptions::default())?;
//! let stacks = view.clone();
//! let model = HeapModel::build(view, |stack| symbolizer.symbolize_stack(&stacks, stack))?;
//! let mut out = Vec::new();
//! dot::write_dot(&model, &dot::DotOptions::default(), &mut out)?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::Context as _;
use std::collections::HashMap;

use heapdump_formats::read::DumpView;
use heapdump_formats::records::{EdgeRecord, RootRecord, edge_flags, root_kind};

use crate::dominators::{Dominator, DominatorTree};
use crate::fields::FieldIndex;
use crate::heap_report::HeapAnalysis;
use crate::leaks::{Heuristics, LeakAnalysis, LeakClass};
use crate::site::Site;
use crate::symbolize::Frame;
use crate::types::{AllocationName, TypeName, site_label};

pub mod dot;
pub mod hprof;
pub mod sqlite;

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

/// The analyzed heap every export reads. Indexes of allocations, roots and
/// edges are the dump's.
#[derive(Debug)]
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
    leaks: LeakAnalysis,
    /// The dominator tree, for retained sizes and immediate dominators.
    dominators: DominatorTree,
    /// `out_edges[out_start[n] .. out_start[n + 1]]` are the indexes (in
    /// the dump's `Edges`) of allocation `n`'s valid out-edges.
    out_start: Vec<u32>,
    out_edges: Vec<u32>,
    /// Indexes of valid root edges, in dump order.
    root_edges: Vec<u32>,
    /// Edges whose source or target index is out of range (the dump
    /// breaks a format rule; `heapdump verify` says which).
    pub skipped_edges: u64,
    /// Problems that did not stop the export, one sentence each.
    pub warnings: Vec<String>,
    /// Struct layouts from the program's DWARF, for field names.
    fields: Option<FieldIndex>,
}

impl<'a> HeapModel<'a> {
    /// Builds the model. `frames_of(stack_id)` symbolizes one stack
    /// (innermost first); it is called once per distinct stack id, and a
    /// stack it cannot symbolize is named `<unknown>` with a warning.
    pub fn build(
        view: DumpView<'a>,
        mut frames_of: impl FnMut(u32) -> anyhow::Result<Vec<Frame>>,
    ) -> anyhow::Result<HeapModel<'a>> {
        let allocations = view.allocations();
        let n = allocations.len();
        // The same analysis `leaks` and `top --retained` run (and the same
        // refusal of a dump without a scan, where every block would look
        // lost); the graph itself is not kept.
        let HeapAnalysis {
            leaks, dominators, ..
        } = HeapAnalysis::new(&view, &Heuristics::default(), true)?;
        let dominators = dominators.context("the dominator tree was not computed")?;

        let mut model = HeapModel {
            view,
            types: Vec::new(),
            sites: Vec::new(),
            alloc_type: Vec::with_capacity(n),
            alloc_site: Vec::with_capacity(n),
            stack_names: HashMap::new(),
            leaks,
            dominators,
            out_start: Vec::new(),
            out_edges: Vec::new(),
            root_edges: Vec::new(),
            skipped_edges: 0,
            warnings: Vec::new(),
            fields: None,
        };
        let mut type_ids: HashMap<String, u32> = HashMap::new();
        let mut site_ids: HashMap<String, u32> = HashMap::new();
        let mut unsymbolized = 0u64;
        for allocation in allocations.iter() {
            let stack = allocation.stack;
            let ids = match model.stack_names.get(&stack) {
                Some(&ids) => ids,
                None => {
                    let name = if stack == 0 {
                        AllocationName::of_stack(&[])
                    } else {
                        match frames_of(stack) {
                            Ok(frames) => AllocationName::of_stack(&frames),
                            Err(_) => {
                                unsymbolized += 1;
                                AllocationName::of_stack(&[])
                            }
                        }
                    };
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
        model.index_edges();
        Ok(model)
    }

    /// Builds the out-edge rows by counting, so the result does not depend
    /// on the dump keeping its edges sorted.
    fn index_edges(&mut self) {
        let n = self.alloc_type.len();
        let roots = self.view.roots().len();
        let edges = self.view.edges();
        let mut counts = vec![0u32; n + 1];
        for (i, edge) in edges.iter().enumerate() {
            let from_root = edge.flags & edge_flags::FROM_ROOT != 0;
            let source_ok = if from_root {
                (edge.source as usize) < roots
            } else {
                (edge.source as usize) < n
            };
            if !source_ok || edge.target as usize >= n {
                self.skipped_edges += 1;
                continue;
            }
            if from_root {
                self.root_edges.push(i as u32);
            } else {
                counts[edge.source as usize + 1] += 1;
            }
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let mut fill = counts.clone();
        self.out_edges = vec![0; counts[n] as usize];
        for (i, edge) in edges.iter().enumerate() {
            if edge.flags & edge_flags::FROM_ROOT != 0
                || edge.source as usize >= n
                || edge.target as usize >= n
            {
                continue;
            }
            let slot = &mut fill[edge.source as usize];
            self.out_edges[*slot as usize] = i as u32;
            *slot += 1;
        }
        self.out_start = counts;
        if self.skipped_edges > 0 {
            self.warnings.push(format!(
                "{} edges name an allocation or root that does not exist and were left out (run `heapdump verify`)",
                self.skipped_edges
            ));
        }
    }

    /// Uses `fields` (the program's struct layouts) to name the fields
    /// pointers are in.
    pub fn set_fields(&mut self, fields: FieldIndex) {
        self.fields = Some(fields);
    }

    /// The field of allocation `node` at byte `offset` (`next`,
    /// `[3].next`), when its type was recovered and the program's DWARF
    /// has its layout.
    pub fn field_label(&self, node: u32, offset: u64) -> Option<String> {
        let fields = self.fields.as_ref()?;
        let ty = self
            .types
            .get(*self.alloc_type.get(node as usize)? as usize)?;
        fields.field_of(ty.name.as_ref()?, offset)
    }

    /// The dump.
    pub fn view(&self) -> &DumpView<'a> {
        &self.view
    }

    /// Number of allocations.
    pub fn node_count(&self) -> usize {
        self.alloc_type.len()
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

    /// The leak class of allocation `node` (memcheck's classes, with the
    /// default Rust heuristics of `heapdump leaks`).
    pub fn leak_class(&self, node: u32) -> LeakClass {
        self.leaks.class(node)
    }

    /// Bytes freed if `node` were freed: its own size plus everything only
    /// it keeps alive (its subtree in the dominator tree).
    pub fn retained(&self, node: u32) -> u64 {
        self.dominators.retained(node)
    }

    /// The block every path from the roots to `node` goes through last;
    /// `None` when the roots themselves are its dominator or it is
    /// unreachable.
    pub fn dominator(&self, node: u32) -> Option<u32> {
        match self.dominators.idom(node) {
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
        let n = node as usize;
        let range = match (self.out_start.get(n), self.out_start.get(n + 1)) {
            (Some(&a), Some(&b)) => a as usize..b as usize,
            _ => 0..0,
        };
        let edges = self.view.edges();
        self.out_edges[range]
            .iter()
            .filter_map(move |&i| edges.get(i as usize))
    }

    /// Every valid edge from an allocation, in dump order.
    pub fn allocation_edges(&self) -> impl Iterator<Item = EdgeRecord> + '_ {
        (0..self.node_count() as u32).flat_map(|n| self.out_edges(n))
    }

    /// Every valid edge from a root, in dump order.
    pub fn root_edges(&self) -> impl Iterator<Item = EdgeRecord> + '_ {
        let edges = self.view.edges();
        self.root_edges
            .iter()
            .filter_map(move |&i| edges.get(i as usize))
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

/// The name of a root kind as FORMAT.md spells it.
pub fn root_kind_name(kind: u16) -> &'static str {
    match kind {
        root_kind::REGISTERS => "REGISTERS",
        root_kind::THREAD_STACK => "THREAD_STACK",
        root_kind::STATIC_TLS => "STATIC_TLS",
        root_kind::DYNAMIC_TLS => "DYNAMIC_TLS",
        root_kind::DATA_SEGMENT => "DATA_SEGMENT",
        root_kind::OTHER => "OTHER",
        _ => "UNKNOWN",
    }
}

/// x86_64 register names in `mcontext_t` `gregs` order, for labelling a
/// pointer found in a REGISTERS root (its source offset is index × 8).
const X86_64_GREGS: [&str; 23] = [
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx", "rdx", "rax",
    "rcx", "rsp", "rip", "eflags", "csgsfs", "err", "trapno", "oldmask", "cr2",
];

/// How to label the pointer at `offset` in `root`: a register name for
/// x86_64 registers, else `+0x…`.
pub fn root_offset_label(machine: u32, root: &RootRecord, offset: u64) -> String {
    if root.kind == root_kind::REGISTERS && machine == 62 && offset % 8 == 0 {
        if let Some(name) = X86_64_GREGS.get((offset / 8) as usize) {
            return (*name).to_owned();
        }
    }
    format!("+{offset:#x}")
}
