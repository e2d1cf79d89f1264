//! `heapdump retainers`: what keeps a block (or the blocks of a site or
//! type) alive: its dominators and shortest paths from roots.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Write as _};

use anyhow::bail;
use heapdump_formats::constants::{Machine, OwnerKind, Register, RootKind};
use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::analysis::HeapAnalysis;
use crate::filter;
use crate::graph::{edge_offsets, find_allocation};
use crate::paths::shortest_root_paths;
use crate::report::objects::{ObjectInfo, object_info, object_line, stack_of};
use crate::site::Names;
use crate::stacks::{StackFrames, Stacks};
use crate::text::{hex_address, human_bytes, string};

/// `heapdump retainers`: why blocks are alive.
#[derive(Clone, Debug, Serialize)]
pub struct RetainersReport {
    /// One entry per block asked about.
    pub objects: Vec<Retainers>,
    /// How the text names long types and functions (`--full-names`); JSON
    /// has them in full.
    #[serde(skip)]
    pub names: Names,
    /// What the report could not do or the reader should not miss (stacks
    /// that could not be read, totals that disagree), one sentence each:
    /// the CLI prints them on stderr; not part of the JSON.
    #[serde(skip)]
    pub warnings: Vec<String>,
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
    /// REGISTERS, THREAD_STACK, STATIC_TLS, DYNAMIC_TLS, DATA_SEGMENT, OTHER,
    /// ANONYMOUS_MAPPING.
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
    let kind = RootKind(root.kind);
    let symbol = (kind == RootKind::DATA_SEGMENT)
        .then(|| symbolizer.symbol_at(root.address.wrapping_add(source_offset)))
        .flatten();
    let owner = match OwnerKind(root.owner_kind) {
        OwnerKind::THREAD => view.threads().get(root.owner as usize).map(|t| {
            let name = string(view, t.name);
            if name.is_empty() {
                format!("thread {}", t.tid)
            } else {
                format!("thread {} \"{name}\"", t.tid)
            }
        }),
        OwnerKind::MODULE => view
            .modules()
            .get(root.owner as usize)
            .map(|m| string(view, m.path)),
        _ => None,
    };
    let name = Some(string(view, root.name)).filter(|s| !s.is_empty());
    let location = if kind == RootKind::REGISTERS {
        Register::new(Machine(view.process().machine), source_offset / 8).to_string()
    } else {
        hex_address(root.address.wrapping_add(source_offset))
    };
    RootInfo {
        index,
        kind: kind.to_string(),
        owner,
        name,
        location,
        symbol,
        source_offset,
    }
}

impl RetainersReport {
    /// `heapdump retainers QUERY -n LIMIT --paths MAX_PATHS`: dominator
    /// chains and up to `max_paths` shortest root paths for the `limit`
    /// blocks `query` selects that retain the most; an error when it
    /// selects none. Needs the dominator tree. `frames` symbolizes
    /// stacks; with [`TypedFrames`](crate::stacks::TypedFrames) objects get their generic types and path
    /// steps their field names, as in the exports.
    #[allow(clippy::too_many_arguments)]
    pub fn build<S: StackFrames + ?Sized>(
        view: &DumpView<'_>,
        analysis: &HeapAnalysis,
        frames: &mut S,
        query: &RetainersQuery,
        limit: usize,
        max_paths: usize,
    ) -> anyhow::Result<Self> {
        let mut warnings = Vec::new();
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
                            let hit = filter::site_matches(
                                &stacks.site(view, a.stack, &mut warnings),
                                text,
                            );
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
                    if let std::collections::hash_map::Entry::Vacant(entry) = labels.entry(a.stack)
                    {
                        entry.insert(stacks.type_label(view, a.stack, &mut warnings));
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
            let object = object_info(view, analysis, &mut stacks, node, &mut warnings);
            let dominators = tree
                .chain(node)
                .into_iter()
                .map(|d| object_info(view, analysis, &mut stacks, d, &mut warnings))
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
                                    stacks.field_of(view, stack_of(view, s), f, &mut warnings),
                                ),
                                None => (None, None, None),
                            },
                        };
                        steps.push(PathStep {
                            object: object_info(view, analysis, &mut stacks, v, &mut warnings),
                            field_offset,
                            field,
                            target_offset,
                        });
                        previous = Some(v);
                    }
                    PathInfo {
                        root: root_info(
                            view,
                            stacks.source(),
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
        Ok(RetainersReport {
            objects,
            names: Names::default(),
            warnings,
        })
    }
}

/// The report as text.
impl fmt::Display for RetainersReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.objects.iter().enumerate() {
            if i > 0 {
                f.write_char('\n')?;
            }
            writeln!(f, "{}", object_line(&r.object, self.names))?;
            if r.dominators.is_empty() {
                writeln!(
                    f,
                    "  dominated by: the roots (no single block keeps it alive)"
                )?;
            } else {
                writeln!(f, "  dominated by (immediate first):")?;
                for d in &r.dominators {
                    writeln!(f, "    {}", object_line(d, self.names))?;
                }
            }
            if r.paths.is_empty() {
                writeln!(
                    f,
                    "  no path from a root: the block is {}",
                    r.object.class.words()
                )?;
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
                writeln!(
                    f,
                    "  path {} ({} blocks) from {from} at {}:",
                    k + 1,
                    p.steps.len(),
                    root.location
                )?;
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
                    writeln!(
                        f,
                        "    [{field}] -> {}{target} {} {}  {}",
                        step.object.address,
                        human_bytes(step.object.size),
                        self.names.name(&step.object.type_name),
                        step.object.site.text(self.names)
                    )?;
                }
            }
        }
        Ok(())
    }
}
