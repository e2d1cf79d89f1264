//! Chrome DevTools' heap snapshot (`.heapsnapshot`): the JSON that the
//! Memory tab loads ("Load profile"), and that memlab and other V8 tools
//! read.
//!
//! The format is a flat graph: `nodes` is one array of numbers, seven per
//! node (type, name, id, self size, edge count, trace node, detachedness),
//! `edges` one array of three per edge (type, name or index, target node's
//! offset in `nodes`), listed node by node in node order, and every name is
//! an index in `strings`. Node 0 is the root from which DevTools computes
//! distances, dominators and retained sizes.
//!
//! The heap becomes:
//!
//! - a node per allocation, of type `object`, named by its type label (the
//!   "constructor" DevTools groups by, as `top --retained` names it), its
//!   size as self size, its id the allocation's sequence number (so the
//!   Comparison view matches the same block in two dumps of one process),
//!   or for a block production mode listed without a record its address;
//! - an edge per pointer: a `property` named by the DWARF field it is in
//!   where the binary says (`next`, `[3].buf`), else an `element` whose
//!   index is the pointer's byte offset in the block;
//! - synthetic nodes for the roots: `(root)` → one node per root kind
//!   (`(thread stacks)`, `(data segments)`, ...) → one node per root (a
//!   thread's stack, a module's data segment) → the blocks it points to,
//!   by `property` edges named by the static at that address or the
//!   offset in the root;
//! - a synthetic `(lost)` node under `(root)` with an `element` edge to each
//!   definitely-lost block, as the dominator tree of `top --retained`
//!   hangs lost structures from its super-root: so the retained sizes
//!   DevTools computes are `top --retained`'s.

use std::collections::HashMap;
use std::io::Write;

use heapdump_formats::constants::Machine;
use heapdump_formats::records::{AllocationRecord, allocation_flags, root_kind};

use super::{Export, HeapModel, Output, OutputKind, root_offset_label};

/// Fields per node and per edge in the flat arrays.
const NODE_FIELDS: usize = 7;

/// Node types (indexes in `meta.node_types[0]`).
const NODE_OBJECT: u32 = 3;
const NODE_SYNTHETIC: u32 = 9;

/// Edge types (indexes in `meta.edge_types[0]`).
const EDGE_ELEMENT: u32 = 1;
const EDGE_PROPERTY: u32 = 2;

/// Ids of allocation nodes start here (sequence × 2 + this); synthetic
/// nodes take the odd numbers below it.
const ALLOCATION_ID_BASE: u64 = 1_000_000_001;

/// A block's node id: from its sequence number, which orders blocks by
/// age as V8's ids do (DevTools' "objects allocated between snapshots"
/// compares them); a block listed without a record (production mode's
/// UNRECORDED, sequence 0) takes its address instead, above every
/// sequence (40 bits): stable while the block lives, and never new.
fn allocation_id(allocation: &AllocationRecord) -> u64 {
    let key = if allocation.flags & allocation_flags::UNRECORDED != 0 {
        (1 << 40) + (allocation.address >> 4)
    } else {
        allocation.sequence
    };
    ALLOCATION_ID_BASE + 2 * key
}

const META: &str = r#"{"node_fields":["type","name","id","self_size","edge_count","trace_node_id","detachedness"],"node_types":[["hidden","array","string","object","code","closure","regexp","number","native","synthetic","concatenated string","sliced string","symbol","bigint","object shape"],"string","number","number","number","number","number"],"edge_fields":["type","name_or_index","to_node"],"edge_types":[["context","element","property","internal","hidden","shortcut","weak"],"string_or_number","node"],"trace_function_info_fields":["function_id","name","script_name","script_id","line","column"],"trace_node_fields":["id","function_info_index","count","size","children"],"sample_fields":["timestamp_us","last_assigned_id"],"location_fields":["object_index","script_id","line","column"]}"#;

/// Options of the heap snapshot export (none yet).
#[derive(Clone, Debug, Default)]
pub struct HeapSnapshotOptions {}

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapSnapshotSummary {
    /// Allocation nodes.
    pub objects: u64,
    /// Synthetic nodes (root, root kinds, roots, lost).
    pub synthetic: u64,
    /// All edges.
    pub edges: u64,
    /// Definitely-lost blocks hung from `(lost)`.
    pub lost: u64,
}

/// The display name of a root kind's synthetic node.
fn kind_node_name(kind: u16) -> &'static str {
    match kind {
        root_kind::REGISTERS => "(registers)",
        root_kind::THREAD_STACK => "(thread stacks)",
        root_kind::STATIC_TLS => "(static TLS)",
        root_kind::DYNAMIC_TLS => "(dynamic TLS)",
        root_kind::DATA_SEGMENT => "(data segments)",
        root_kind::ANONYMOUS_MAPPING => "(anonymous memory)",
        _ => "(other roots)",
    }
}

/// Interned strings, in first-use order.
#[derive(Default)]
struct Strings {
    ids: HashMap<String, u32>,
    list: Vec<String>,
}

impl Strings {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.list.len() as u32;
        self.ids.insert(text.to_owned(), id);
        self.list.push(text.to_owned());
        id
    }
}

/// An edge before it is written: type, name (a string id for properties,
/// an index for elements) and target node number.
type PendingEdge = (u32, u64, u32);

/// A synthetic node and its edges.
struct Synthetic {
    name: u32,
    edges: Vec<PendingEdge>,
}

impl Export for HeapSnapshotOptions {
    type Summary = HeapSnapshotSummary;

    fn name(&self) -> &'static str {
        "heap snapshot"
    }

    fn file_name(&self) -> &'static str {
        "FILE.heapsnapshot"
    }

    fn kind(&self) -> OutputKind {
        OutputKind::Text
    }

    fn needs_graph(&self) -> bool {
        true
    }

    fn write(&self, model: &HeapModel<'_>, out: &mut Output) -> anyhow::Result<Self::Summary> {
        let view = model.view();
        let machine = Machine(view.process().machine);
        let mut strings = Strings::default();
        strings.id("");

        // Synthetic nodes first, numbered from 0: the root, then each root
        // kind present, each root, and `(lost)`; allocations follow them.
        let roots = view.roots();
        let mut root_targets: Vec<Vec<(u64, u32)>> = vec![Vec::new(); roots.len()];
        for edge in model.root_edges() {
            if let Some(targets) = root_targets.get_mut(edge.source as usize) {
                targets.push((edge.source_offset, edge.target));
            }
        }
        let mut kinds: Vec<u16> = roots
            .iter()
            .zip(&root_targets)
            .filter(|(_, targets)| !targets.is_empty())
            .map(|(root, _)| root.kind)
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let lost: Vec<u32> = model
            .analysis()
            .map(|a| a.leaks.definitely_lost().collect())
            .unwrap_or_default();
        let roots_with_edges = root_targets.iter().filter(|t| !t.is_empty()).count();
        let synthetic_count = 1 + kinds.len() + roots_with_edges + usize::from(!lost.is_empty());
        let allocation_node = |index: u32| synthetic_count as u32 + index;

        let mut synthetic: Vec<Synthetic> = Vec::with_capacity(synthetic_count);
        let root_name = strings.id("(root)");
        synthetic.push(Synthetic {
            name: root_name,
            edges: Vec::new(),
        });
        let mut kind_node: HashMap<u16, usize> = HashMap::new();
        for &kind in &kinds {
            let node = synthetic.len();
            kind_node.insert(kind, node);
            let name = strings.id(kind_node_name(kind));
            synthetic[0]
                .edges
                .push((EDGE_ELEMENT, node as u64, node as u32));
            synthetic.push(Synthetic {
                name,
                edges: Vec::new(),
            });
        }
        for (index, targets) in root_targets.iter().enumerate() {
            if targets.is_empty() {
                continue;
            }
            let Some(root) = roots.get(index) else {
                continue;
            };
            let node = synthetic.len();
            let parent = kind_node[&root.kind];
            let position = synthetic[parent].edges.len() as u64;
            synthetic[parent]
                .edges
                .push((EDGE_ELEMENT, position, node as u32));
            let mut edges = Vec::with_capacity(targets.len());
            for &(offset, target) in targets {
                let label = match root.kind {
                    root_kind::DATA_SEGMENT => model
                        .symbol_at(root.address.wrapping_add(offset))
                        .unwrap_or_else(|| root_offset_label(machine, &root, offset)),
                    _ => root_offset_label(machine, &root, offset),
                };
                edges.push((
                    EDGE_PROPERTY,
                    u64::from(strings.id(&label)),
                    allocation_node(target),
                ));
            }
            let name = strings.id(&format!("({})", model.root_label(&root)));
            synthetic.push(Synthetic { name, edges });
        }
        if !lost.is_empty() {
            let node = synthetic.len();
            synthetic[0]
                .edges
                .push((EDGE_ELEMENT, node as u64, node as u32));
            let edges = lost
                .iter()
                .enumerate()
                .map(|(i, &block)| (EDGE_ELEMENT, i as u64, allocation_node(block)))
                .collect();
            let name = strings.id("(lost)");
            synthetic.push(Synthetic { name, edges });
        }
        debug_assert_eq!(synthetic.len(), synthetic_count);

        // Allocation edges, named now so that `strings` is complete before
        // anything is written (the arrays come before the strings).
        let allocations = view.allocations();
        let mut edge_counts: Vec<u32> = Vec::with_capacity(allocations.len());
        let mut allocation_edges: Vec<PendingEdge> = Vec::new();
        for node in 0..model.node_count() as u32 {
            let before = allocation_edges.len();
            for edge in model.out_edges(node) {
                let pending = match model.field_label(node, edge.source_offset) {
                    Some(field) => (
                        EDGE_PROPERTY,
                        u64::from(strings.id(&field)),
                        allocation_node(edge.target),
                    ),
                    None => (
                        EDGE_ELEMENT,
                        edge.source_offset,
                        allocation_node(edge.target),
                    ),
                };
                allocation_edges.push(pending);
            }
            edge_counts.push((allocation_edges.len() - before) as u32);
        }
        let type_names: Vec<u32> = model.types.iter().map(|t| strings.id(&t.label)).collect();

        let synthetic_edges: usize = synthetic.iter().map(|s| s.edges.len()).sum();
        let node_count = synthetic_count + allocations.len();
        let edge_count = synthetic_edges + allocation_edges.len();
        write!(
            out,
            "{{\"snapshot\":{{\"meta\":{META},\"node_count\":{node_count},\"edge_count\":{edge_count},\"trace_function_count\":0}},\n\"nodes\":["
        )?;
        let mut first = true;
        let mut separator = |out: &mut Output| -> std::io::Result<()> {
            if first {
                first = false;
                Ok(())
            } else {
                out.write_all(b",\n")
            }
        };
        for (i, node) in synthetic.iter().enumerate() {
            separator(out)?;
            write!(
                out,
                "{NODE_SYNTHETIC},{},{},0,{},0,0",
                node.name,
                2 * i + 1,
                node.edges.len()
            )?;
        }
        for (index, allocation) in allocations.iter().enumerate() {
            separator(out)?;
            let name = model
                .alloc_type
                .get(index)
                .and_then(|&t| type_names.get(t as usize))
                .copied()
                .unwrap_or(0);
            write!(
                out,
                "{NODE_OBJECT},{name},{},{},{},0,0",
                allocation_id(&allocation),
                allocation.size,
                edge_counts[index]
            )?;
        }
        out.write_all(b"],\n\"edges\":[")?;
        let mut first = true;
        for (kind, name, to) in synthetic
            .iter()
            .flat_map(|s| s.edges.iter())
            .chain(&allocation_edges)
        {
            if !first {
                out.write_all(b",\n")?;
            }
            first = false;
            write!(out, "{kind},{name},{}", *to as usize * NODE_FIELDS)?;
        }
        out.write_all(
            b"],\n\"trace_function_infos\":[],\n\"trace_tree\":[],\n\"samples\":[],\n\"locations\":[],\n\"strings\":[",
        )?;
        for (i, text) in strings.list.iter().enumerate() {
            if i > 0 {
                out.write_all(b",\n")?;
            }
            serde_json::to_writer(&mut *out, text)?;
        }
        out.write_all(b"]}\n")?;
        Ok(HeapSnapshotSummary {
            objects: allocations.len() as u64,
            synthetic: synthetic_count as u64,
            edges: edge_count as u64,
            lost: lost.len() as u64,
        })
    }
}
