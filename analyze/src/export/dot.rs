//! `heapdump todot`: the heap graph as Graphviz DOT.
//!
//! A real heap has thousands to millions of objects, which no layout makes
//! readable, so the export draws a bounded part of it: a breadth-first walk
//! from the roots (or from `--from` objects), at most `max_nodes` objects,
//! nearest first; or one node per type or site (`group_by`), with edges
//! aggregated. By default the objects are drawn when they fit in
//! `max_nodes`, and the type graph otherwise: a slice of a big heap is one
//! container's insides, the type graph is its shape. Objects no root
//! reaches are drawn in red (definitely lost) or orange (indirectly lost);
//! roots are drawn by kind.
//!
//! Node ids are stable so tests and scripts can find them: `a<N>` is
//! allocation N of the dump, `r<N>` root N, `t<N>`/`s<N>` the N-th type or
//! site group, `k<KIND>` the roots of one kind in a grouped graph.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write;

use anyhow::{Result, bail};
use heapdump_formats::constants::Machine;
use heapdump_formats::records::root_kind;

use super::{HeapModel, root_kind_name, root_offset_label};
use crate::filter::{self, TypeMatch};
use crate::leaks::LeakClass;
use crate::sampling::StackSampling;
use crate::site::Names;
use crate::text::human_bytes;

/// What one node stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// One node per object, however many there are (at most `max_nodes`,
    /// nearest the roots first).
    Object,
    /// One node per type label (recovered type, or `alloc@site`).
    Type,
    /// One node per allocation site.
    Site,
}

/// The groupings of a grouped graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grouping {
    Type,
    Site,
}

/// Which part of the heap to draw, and how.
#[derive(Clone, Debug)]
pub struct DotOptions {
    /// Start from these objects instead of the roots: an address (`0x…`,
    /// any address inside an allocation), or a type or site label (exact,
    /// else every label containing it).
    pub from: Option<String>,
    /// Follow at most this many edges from the starting objects.
    pub depth: Option<u32>,
    /// Draw at most this many object (or group) nodes.
    pub max_nodes: usize,
    /// Leave out objects smaller than this (the walk goes through them, and
    /// a dotted edge stands for the path); in a grouped graph, groups
    /// smaller than this in total.
    pub min_size: u64,
    /// What a node stands for. `None`: objects when they fit in
    /// `max_nodes` (or `from` is given), else types.
    pub group_by: Option<GroupBy>,
    /// How labels name long types and functions (`--full-names`); the
    /// tooltips have them in full either way.
    pub names: Names,
}

impl Default for DotOptions {
    fn default() -> DotOptions {
        DotOptions {
            from: None,
            depth: None,
            max_nodes: 200,
            min_size: 0,
            group_by: None,
            names: Names::Abbreviated,
        }
    }
}

/// What was drawn, for the note on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DotSummary {
    /// Object or group nodes drawn (roots not counted).
    pub nodes: usize,
    /// Edges drawn, root edges included.
    pub edges: usize,
    /// Objects or groups that qualified but were left out by `max_nodes`.
    pub cut: usize,
    /// `Some(N)`: with no `group_by` and no `from`, the N objects of at
    /// least `min_size` bytes were more than `max_nodes`, so the type
    /// graph was drawn instead.
    pub types_instead_of: Option<usize>,
}

impl super::Export for DotOptions {
    type Summary = DotSummary;

    fn name(&self) -> &'static str {
        "DOT graph"
    }

    fn file_name(&self) -> &'static str {
        "FILE.dot"
    }

    fn kind(&self) -> super::OutputKind {
        super::OutputKind::Text
    }

    fn needs_graph(&self) -> bool {
        true
    }

    fn write(&self, model: &HeapModel<'_>, out: &mut super::Output) -> Result<DotSummary> {
        write_dot(model, self, out)
    }
}

/// Writes the DOT graph of `model` to `out`.
pub fn write_dot(
    model: &HeapModel<'_>,
    options: &DotOptions,
    out: &mut dyn Write,
) -> Result<DotSummary> {
    let mut text = String::new();
    let summary = match (options.group_by, &options.from) {
        (Some(GroupBy::Object), _) | (None, Some(_)) => objects_graph(model, options, &mut text)?,
        (None, None) => {
            let objects = model
                .view()
                .allocations()
                .iter()
                .filter(|a| a.size >= options.min_size)
                .count();
            if objects > options.max_nodes {
                let summary = grouped_graph(model, options, Grouping::Type, &mut text)?;
                // Said in the picture too, for whoever gets the file alone.
                let title = format!(
                    "  label={}; labelloc=t;\n",
                    quote(&format!(
                        "one node per type: {objects} objects are more than --max-nodes {} (todot --group-by object draws objects)",
                        options.max_nodes
                    ))
                );
                if let Some(at) = text.find('\n') {
                    text.insert_str(at + 1, &title);
                }
                DotSummary {
                    types_instead_of: Some(objects),
                    ..summary
                }
            } else {
                objects_graph(model, options, &mut text)?
            }
        }
        (Some(GroupBy::Type), _) => grouped_graph(model, options, Grouping::Type, &mut text)?,
        (Some(GroupBy::Site), _) => grouped_graph(model, options, Grouping::Site, &mut text)?,
    };
    out.write_all(text.as_bytes())?;
    Ok(summary)
}

/// Quotes a DOT string: backslashes and quotes escaped, `\n` kept as DOT's
/// line break (callers write it on purpose), other control characters
/// dropped.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A label of several lines.
fn lines(parts: &[&str]) -> String {
    let quoted: Vec<String> = parts
        .iter()
        .map(|p| {
            let q = quote(p);
            q[1..q.len() - 1].to_owned()
        })
        .collect();
    format!("\"{}\"", quoted.join("\\n"))
}

fn header(model: &HeapModel<'_>, text: &mut String) {
    let (typed, total) = model.typed_bytes();
    let percent = if total == 0 {
        100.0
    } else {
        typed as f64 * 100.0 / total as f64
    };
    let _ = writeln!(text, "digraph heap {{");
    let _ = writeln!(
        text,
        "  // heapdump todot: {} live allocations, {} bytes; types recovered for {percent:.2}% of bytes ({typed} B)",
        model.node_count(),
        total
    );
    let _ = writeln!(text, "  graph [rankdir=LR, fontname=\"Helvetica\"];");
    let _ = writeln!(
        text,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\", fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(text, "  edge [fontname=\"Helvetica\", fontsize=9];");
}

/// Shape and colour of a root node, by kind, so stacks, registers, TLS and
/// globals are told apart at a glance.
fn root_style(kind: u16) -> &'static str {
    match kind {
        root_kind::REGISTERS => "shape=cds, style=filled, fillcolor=\"#d9d2e9\"",
        root_kind::THREAD_STACK => "shape=house, style=filled, fillcolor=\"#cfe2f3\"",
        root_kind::STATIC_TLS | root_kind::DYNAMIC_TLS => {
            "shape=hexagon, style=filled, fillcolor=\"#fff2cc\""
        }
        root_kind::DATA_SEGMENT => "shape=folder, style=filled, fillcolor=\"#d9ead3\"",
        _ => "shape=diamond, style=filled, fillcolor=\"#eeeeee\"",
    }
}

/// Fill colour and a note for an object's leak class.
fn class_style(class: LeakClass) -> (&'static str, Option<&'static str>) {
    match class {
        LeakClass::DefinitelyLost => ("#f4cccc", Some("unreachable: definitely lost")),
        LeakClass::IndirectlyLost => ("#fce5cd", Some("unreachable: indirectly lost")),
        LeakClass::PossiblyLost => ("#fff2cc", Some("possibly lost (interior pointers only)")),
        LeakClass::StillReachable => ("#ffffff", None),
    }
}

/// Resolves `--from` to allocations: an address inside one, else a type
/// label, else a site label (exact matches first, then substrings).
fn resolve_from(model: &HeapModel<'_>, from: &str) -> Result<Vec<u32>> {
    let allocations = model.view().allocations();
    if let Some(hex) = from.strip_prefix("0x").or_else(|| from.strip_prefix("0X")) {
        let Ok(address) = u64::from_str_radix(hex, 16) else {
            bail!("--from {from}: not a hexadecimal address");
        };
        // Allocations are sorted by address; the last one starting at or
        // below the address is the only one that can hold it.
        let (mut lo, mut hi) = (0usize, allocations.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match allocations.get(mid) {
                Some(a) if a.address <= address => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if let Some(a) = lo.checked_sub(1).and_then(|i| allocations.get(i))
            && address.wrapping_sub(a.address) < a.size
        {
            return Ok(vec![(lo - 1) as u32]);
        }
        bail!("--from {from}: no live allocation holds this address");
    }
    // The best kind of match wins, as for `retainers --type`: a type
    // whose path ends in the text over labels that merely contain it.
    let mut found = filter::best_matches((0..model.node_count() as u32).map(|n| {
        let site = model.site_label(n);
        let site_match = if site == from {
            Some(TypeMatch::Exact)
        } else {
            site.contains(from).then_some(TypeMatch::Contains)
        };
        let type_match = filter::type_match(model.type_label(n), from);
        (n, type_match.into_iter().chain(site_match).min())
    }));
    if found.is_empty() {
        bail!(
            "--from {from}: no allocation has this address, type or site; `heapdump top` lists sites"
        );
    }
    // Largest first, so a cut keeps the big ones.
    found.sort_by_key(|&n| std::cmp::Reverse(allocations.get(n as usize).map_or(0, |a| a.size)));
    Ok(found)
}

/// One step of the walk: an object, its distance from the start, and the
/// nearest drawn object on the path to it (for the dotted edge that stands
/// for hidden objects).
struct Visit {
    node: u32,
    depth: u32,
    drawn_ancestor: Option<u32>,
    hidden_between: bool,
}

struct Walk<'m, 'a> {
    model: &'m HeapModel<'a>,
    options: &'m DotOptions,
    visited: Vec<bool>,
    drawn: Vec<u32>,
    is_drawn: Vec<bool>,
    /// Dotted edges standing for paths through objects under `min_size`.
    bridges: Vec<(u32, u32)>,
    cut: usize,
}

impl Walk<'_, '_> {
    fn size(&self, node: u32) -> u64 {
        self.model
            .view()
            .allocations()
            .get(node as usize)
            .map_or(0, |a| a.size)
    }

    /// Breadth-first from `seeds`, drawing at most `budget` more objects.
    fn run(&mut self, seeds: &[u32], budget: usize) {
        let limit = self.drawn.len() + budget;
        let mut queue: VecDeque<Visit> = VecDeque::new();
        for &seed in seeds {
            if let Some(v) = self.visited.get_mut(seed as usize)
                && !*v
            {
                *v = true;
                queue.push_back(Visit {
                    node: seed,
                    depth: 0,
                    drawn_ancestor: None,
                    hidden_between: false,
                });
            }
        }
        while let Some(visit) = queue.pop_front() {
            let shown = self.size(visit.node) >= self.options.min_size;
            if shown {
                if self.drawn.len() >= limit {
                    self.cut += 1;
                    continue;
                }
                self.drawn.push(visit.node);
                self.is_drawn[visit.node as usize] = true;
                if visit.hidden_between
                    && let Some(ancestor) = visit.drawn_ancestor
                {
                    self.bridges.push((ancestor, visit.node));
                }
            }
            if self.options.depth.is_some_and(|d| visit.depth >= d) {
                continue;
            }
            let (ancestor, hidden) = if shown {
                (Some(visit.node), false)
            } else {
                (visit.drawn_ancestor, true)
            };
            for edge in self.model.out_edges(visit.node) {
                let target = edge.target as usize;
                if self.visited[target] {
                    continue;
                }
                self.visited[target] = true;
                queue.push_back(Visit {
                    node: edge.target,
                    depth: visit.depth + 1,
                    drawn_ancestor: ancestor,
                    hidden_between: hidden,
                });
            }
        }
    }
}

fn objects_graph(
    model: &HeapModel<'_>,
    options: &DotOptions,
    text: &mut String,
) -> Result<DotSummary> {
    let n = model.node_count();
    let mut walk = Walk {
        model,
        options,
        visited: vec![false; n],
        drawn: Vec::new(),
        is_drawn: vec![false; n],
        bridges: Vec::new(),
        cut: 0,
    };
    match &options.from {
        Some(from) => {
            let seeds = resolve_from(model, from)?;
            walk.run(&seeds, options.max_nodes);
        }
        None => {
            // Unreachable objects are what a reader of a heap graph most
            // wants to see, and the walk from the roots never gets to them:
            // a quarter of the budget is kept for them, largest first.
            let mut lost: Vec<u32> = (0..n as u32)
                .filter(|&a| model.leak_class(a) == LeakClass::DefinitelyLost)
                .collect();
            lost.sort_by_key(|&a| std::cmp::Reverse(walk.size(a)));
            // Only lost objects that will be drawn (of at least
            // --min-size) take from the roots' budget.
            let drawable_lost = lost
                .iter()
                .filter(|&&a| walk.size(a) >= options.min_size)
                .count();
            let reserve = drawable_lost.min(options.max_nodes / 4);
            let mut root_targets = Vec::new();
            for edge in model.root_edges() {
                root_targets.push(edge.target);
            }
            walk.run(&root_targets, options.max_nodes - reserve);
            let left = options.max_nodes.saturating_sub(walk.drawn.len());
            walk.run(&lost, left);
            // Every object at least --min-size is a candidate here, whether
            // or not the walk got to it.
            let allocations = model.view().allocations();
            let candidates = allocations
                .iter()
                .filter(|a| a.size >= options.min_size)
                .count();
            walk.cut = candidates.saturating_sub(walk.drawn.len());
        }
    }

    header(model, text);
    let allocations = model.view().allocations();
    for &node in &walk.drawn {
        let Some(a) = allocations.get(node as usize) else {
            continue;
        };
        let (fill, note) = class_style(model.leak_class(node));
        let size = format!("{} ({} B) at {:#x}", human_bytes(a.size), a.size, a.address);
        let retained = model.retained(node);
        let retains = format!("retains {}", human_bytes(retained));
        // Long generic types are abbreviated in the label; the tooltip
        // has the full name.
        let type_label = model.type_label(node);
        let short_type = options.names.name(type_label);
        let mut parts = vec![short_type.as_str(), size.as_str()];
        if retained > a.size {
            parts.push(retains.as_str());
        }
        if let Some(note) = note {
            parts.push(note);
        }
        let site = if short_type != type_label {
            format!("{type_label}\nsite: {}", model.site_label(node))
        } else {
            format!("site: {}", model.site_label(node))
        };
        let _ = writeln!(
            text,
            "  a{node} [label={}, fillcolor=\"{fill}\"{}, tooltip={}];",
            lines(&parts),
            if note.is_some() {
                ", color=\"#cc0000\""
            } else {
                ""
            },
            quote(&site)
        );
    }
    let mut edges = 0usize;
    // Roots that point at drawn objects, with one edge per (root, target)
    // labelled with the first pointer's offset (a stack often holds the
    // same pointer several times).
    let machine = Machine(model.view().process().machine);
    let roots = model.view().roots();
    let mut root_links: BTreeMap<(u32, u32), (String, usize)> = BTreeMap::new();
    for edge in model.root_edges() {
        if !walk.is_drawn[edge.target as usize] {
            continue;
        }
        let Some(root) = roots.get(edge.source as usize) else {
            continue;
        };
        root_links
            .entry((edge.source, edge.target))
            .and_modify(|(_, count)| *count += 1)
            .or_insert_with(|| (root_offset_label(machine, &root, edge.source_offset), 1));
    }
    let mut drawn_roots: Vec<u32> = root_links.keys().map(|&(r, _)| r).collect();
    drawn_roots.dedup();
    for r in drawn_roots {
        if let Some(root) = roots.get(r as usize) {
            let _ = writeln!(
                text,
                "  r{r} [label={}, {}];",
                quote(&model.root_label(&root)),
                root_style(root.kind)
            );
        }
    }
    for ((r, target), (label, count)) in &root_links {
        let label = if *count > 1 {
            format!("{label} (+{} more)", count - 1)
        } else {
            label.clone()
        };
        let _ = writeln!(text, "  r{r} -> a{target} [label={}];", quote(&label));
        edges += 1;
    }
    for &node in &walk.drawn {
        for edge in model.out_edges(node) {
            if !walk.is_drawn[edge.target as usize] {
                continue;
            }
            // The field name when DWARF gives the source's layout.
            let mut label = model
                .field_label(node, edge.source_offset)
                .unwrap_or_else(|| format!("+{}", edge.source_offset));
            let style = if edge.target_offset != 0 {
                label.push_str(&format!(" → +{}", edge.target_offset));
                ", style=dashed"
            } else {
                ""
            };
            let _ = writeln!(
                text,
                "  a{node} -> a{} [label={}{style}];",
                edge.target,
                quote(&label)
            );
            edges += 1;
        }
    }
    for (from, to) in &walk.bridges {
        let _ = writeln!(
            text,
            "  a{from} -> a{to} [label=\"…\", style=dotted, tooltip=\"through objects smaller than --min-size\"];"
        );
        edges += 1;
    }
    let _ = writeln!(text, "}}");
    Ok(DotSummary {
        nodes: walk.drawn.len(),
        edges,
        cut: walk.cut,
        types_instead_of: None,
    })
}

/// A group's totals; fractional in a dump with sampled stacks, where each
/// sampled block counts `1/(1 - exp(-size/S))` times.
#[derive(Default)]
struct Group {
    count: f64,
    bytes: f64,
    lost_count: f64,
    lost_bytes: f64,
}

fn grouped_graph(
    model: &HeapModel<'_>,
    options: &DotOptions,
    by: Grouping,
    text: &mut String,
) -> Result<DotSummary> {
    let n = model.node_count();
    let allocations = model.view().allocations();
    // Which objects count: all, or those the walk from --from reaches.
    let included: Vec<bool> = match &options.from {
        None => vec![true; n],
        Some(from) => {
            let seeds = resolve_from(model, from)?;
            let mut walk = Walk {
                model,
                options: &DotOptions {
                    min_size: 0,
                    ..options.clone()
                },
                visited: vec![false; n],
                drawn: Vec::new(),
                is_drawn: vec![false; n],
                bridges: Vec::new(),
                cut: 0,
            };
            walk.run(&seeds, usize::MAX / 2);
            walk.is_drawn
        }
    };
    let group_of = |node: u32| -> u32 {
        match by {
            Grouping::Type => model.alloc_type[node as usize],
            Grouping::Site => model.alloc_site[node as usize],
        }
    };
    let group_count = match by {
        Grouping::Type => model.types.len(),
        Grouping::Site => model.sites.len(),
    };
    // Production mode: only sampled blocks have a type or site; each
    // stands for 1/p blocks, the others are left out (and so are their
    // edges: the pointer counts are those between sampled blocks).
    let sampling = StackSampling::of(model.view());
    let mut included = included;
    let mut groups: Vec<Group> = (0..group_count).map(|_| Group::default()).collect();
    for (node, a) in allocations.iter().enumerate() {
        if !included[node] {
            continue;
        }
        let weight = sampling.weight(&a);
        if weight == 0.0 {
            included[node] = false;
            continue;
        }
        let g = &mut groups[group_of(node as u32) as usize];
        g.count += weight;
        g.bytes += a.size as f64 * weight;
        if !model.is_reachable(node as u32) {
            g.lost_count += weight;
            g.lost_bytes += a.size as f64 * weight;
        }
    }
    let mut order: Vec<u32> = (0..group_count as u32)
        .filter(|&g| {
            groups[g as usize].count > 0.0 && groups[g as usize].bytes >= options.min_size as f64
        })
        .collect();
    order.sort_by(|&a, &b| {
        groups[b as usize]
            .bytes
            .total_cmp(&groups[a as usize].bytes)
            .then(a.cmp(&b))
    });
    let cut = order.len().saturating_sub(options.max_nodes);
    order.truncate(options.max_nodes);
    let mut shown = vec![false; group_count];
    for &g in &order {
        shown[g as usize] = true;
    }
    let prefix = match by {
        Grouping::Type => "t",
        Grouping::Site => "s",
    };

    header(model, text);
    if sampling.is_sampled() {
        let _ = writeln!(
            text,
            "  // ESTIMATED: {}; pointer counts are between sampled blocks only",
            sampling.note()
        );
    }
    let about = if sampling.is_sampled() { "~" } else { "" };
    for &g in &order {
        let group = &groups[g as usize];
        let (count, bytes) = (group.count.round() as u64, group.bytes.round() as u64);
        let (lost_count, lost_bytes) = (
            group.lost_count.round() as u64,
            group.lost_bytes.round() as u64,
        );
        let full_name = match by {
            Grouping::Type => model.types[g as usize].label.as_str(),
            Grouping::Site => model.sites[g as usize].label.as_str(),
        };
        let name = options.names.name(full_name);
        let name = name.as_str();
        let totals = format!(
            "{about}{count} object{}, {about}{} ({about}{bytes} B)",
            if count == 1 { "" } else { "s" },
            human_bytes(bytes),
        );
        let lost = format!("{about}{lost_count} unreachable ({about}{lost_bytes} B)");
        let mut parts = vec![name, totals.as_str()];
        if group.lost_count > 0.0 {
            parts.push(lost.as_str());
        }
        let fill = if group.lost_count == group.count {
            "#f4cccc"
        } else if group.lost_count > 0.0 {
            "#fce5cd"
        } else {
            "#ffffff"
        };
        let _ = writeln!(
            text,
            "  {prefix}{g} [label={}, fillcolor=\"{fill}\", tooltip={}];",
            lines(&parts),
            quote(full_name)
        );
    }
    let mut edges = 0usize;
    // Roots grouped by kind.
    let roots = model.view().roots();
    let mut root_links: BTreeMap<(u16, u32), u64> = BTreeMap::new();
    for edge in model.root_edges() {
        let target = edge.target;
        if !included[target as usize] || !shown[group_of(target) as usize] {
            continue;
        }
        if let Some(root) = roots.get(edge.source as usize) {
            *root_links.entry((root.kind, group_of(target))).or_default() += 1;
        }
    }
    let mut kinds: Vec<u16> = root_links.keys().map(|&(k, _)| k).collect();
    kinds.dedup();
    for kind in kinds {
        let _ = writeln!(
            text,
            "  k{kind} [label={}, {}];",
            quote(root_kind_name(kind)),
            root_style(kind)
        );
    }
    for ((kind, g), count) in &root_links {
        let _ = writeln!(
            text,
            "  k{kind} -> {prefix}{g} [label={}];",
            quote(&pointers(*count))
        );
        edges += 1;
    }
    let mut links: HashMap<(u32, u32), u64> = HashMap::new();
    for node in 0..n as u32 {
        if !included[node as usize] || !shown[group_of(node) as usize] {
            continue;
        }
        for edge in model.out_edges(node) {
            if included[edge.target as usize] && shown[group_of(edge.target) as usize] {
                *links
                    .entry((group_of(node), group_of(edge.target)))
                    .or_default() += 1;
            }
        }
    }
    let mut links: Vec<_> = links.into_iter().collect();
    links.sort_unstable();
    for ((from, to), count) in links {
        let _ = writeln!(
            text,
            "  {prefix}{from} -> {prefix}{to} [label={}];",
            quote(&pointers(count))
        );
        edges += 1;
    }
    let _ = writeln!(text, "}}");
    Ok(DotSummary {
        nodes: order.len(),
        edges,
        cut,
        types_instead_of: None,
    })
}

fn pointers(count: u64) -> String {
    if count == 1 {
        "1 pointer".to_owned()
    } else {
        format!("{count} pointers")
    }
}
