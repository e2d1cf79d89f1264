//! `heapdump top --retained`: the objects, sites and types that keep the
//! most memory alive.

use std::collections::HashMap;
use std::fmt;

use anyhow::bail;
use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::analysis::HeapAnalysis;
use crate::dominators::GroupRetained;
use crate::report::objects::{ObjectInfo, object_info, object_line, pointer_free_note};
use crate::sampling::StackSampling;
use crate::site::{Names, Site};
use crate::stacks::{StackFrames, Stacks};
use crate::text::human_bytes;

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
    /// How the text names long types and functions (`--full-names`); JSON
    /// has them in full.
    #[serde(skip)]
    pub names: Names,
    /// What the report could not do or the reader should not miss (stacks
    /// that could not be read, totals that disagree), one sentence each:
    /// the CLI prints them on stderr; not part of the JSON.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Whether the text lists the objects one by one (`--per-object`)
    /// instead of grouped by type and site; not part of the JSON.
    #[serde(skip)]
    pub per_object: bool,
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

/// Options of `top --retained`.
#[derive(Clone, Copy, Debug)]
pub struct RetainedOptions {
    /// Objects (or groups), sites and types to list, biggest first.
    pub limit: usize,
    /// List the objects one by one in the text, not grouped by type and
    /// site (the JSON has both).
    pub per_object: bool,
}

impl RetainedReport {
    /// `heapdump top --retained`: the biggest retainers, `options.limit`
    /// objects (and groups), sites and types. Needs the dominator tree
    /// (an `analysis` built with `dominators`). `frames` names stacks: a
    /// [`Namer`](crate::stacks::Namer)'s, as the CLI does, a
    /// [`Symbolizer`](crate::symbolize::Symbolizer), or a closure.
    pub fn build<S: StackFrames + ?Sized>(
        view: &DumpView<'_>,
        analysis: &HeapAnalysis,
        frames: &mut S,
        options: &RetainedOptions,
    ) -> anyhow::Result<Self> {
        let limit = options.limit;
        let mut warnings = Vec::new();
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
            .map(|&v| object_info(view, analysis, &mut stacks, v, &mut warnings))
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
                    let info = stacks.get(view, a.stack, &mut warnings);
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
                largest: object_info(view, analysis, &mut stacks, largest, &mut warnings),
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
        let total =
            |totals: &[GroupRetained], id: usize| totals.get(id).copied().unwrap_or_default();
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
            per_object: options.per_object,
            names: Names::default(),
            warnings,
        })
    }
}

/// The report as text: the objects grouped by type and site, or, with
/// [`per_object`](RetainedReport::per_object), one by one as `objects`
/// has them.
impl fmt::Display for RetainedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "live: {} bytes ({}) in {} allocations",
            self.total_bytes,
            human_bytes(self.total_bytes),
            self.total_count
        )?;
        if let Some(note) = pointer_free_note(self.pointer_free_edges) {
            writeln!(f, "{note}")?;
        }
        writeln!(f, "\nobjects retaining the most:")?;
        if self.per_object {
            writeln!(
                f,
                "{:<14} {:>10} {:>18}  {:<15}  type  site",
                "address", "size", "retained", "class"
            )?;
            for obj in &self.objects {
                writeln!(f, "{}", object_line(obj, self.names))?;
            }
        } else {
            writeln!(
                f,
                "{:>7} {:>10} {:>23}  {:<15}  type  site  (--per-object: one by one)",
                "objects", "bytes", "retained each", "class"
            )?;
            for g in &self.object_groups {
                writeln!(f, "{}", group_line(g, self.names))?;
            }
        }
        if self.estimated {
            writeln!(
                f,
                "\nESTIMATED below: {}; blocks outside the sample have no site or type",
                StackSampling {
                    interval: self.stack_sample_interval_bytes
                }
                .note()
            )?;
        }
        let sites = self.sites.iter().map(|row| {
            let label = row.site.text(self.names);
            (row.retained, row.percent, row.objects, label)
        });
        retained_table(f, "sites", "site", sites)?;
        let types = self.types.iter().map(|row| {
            (
                row.retained,
                row.percent,
                row.objects,
                self.names.name(&row.type_name),
            )
        });
        retained_table(f, "types", "type", types)?;
        Ok(())
    }
}

/// One "... retaining the most" table of `top --retained`: rows of
/// (retained bytes, percent of live bytes, objects counted, label).
fn retained_table(
    f: &mut fmt::Formatter<'_>,
    groups: &str,
    label: &str,
    rows: impl Iterator<Item = (u64, f64, u64, String)>,
) -> fmt::Result {
    writeln!(f, "\n{groups} retaining the most:")?;
    writeln!(
        f,
        "{:>14} {:>10} {:>6} {:>9}  {label}",
        "retained", "", "%", "objects"
    )?;
    for (retained, percent, objects, name) in rows {
        writeln!(
            f,
            "{:>14} {:>10} {:>5.1}% {:>9}  {}",
            retained,
            human_bytes(retained),
            percent,
            objects,
            name
        )?;
    }
    Ok(())
}

/// A group of blocks on one line: count, bytes, the range of retained
/// sizes, the class, type label and site of its largest block (whose
/// address is shown when the group is that one block), named as `names`
/// says.
fn group_line(g: &ObjectGroup, names: Names) -> String {
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
        names.name(&g.largest.type_name),
        g.largest.site.text(names)
    )
}
