//! `heapdump leaks`: memcheck's LEAK SUMMARY and loss records.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::analysis::HeapAnalysis;
use crate::heuristics::Heuristics;
use crate::leaks::{ClassTotal, HeuristicTotal, LeakClass};
use crate::report::objects::pointer_free_note;
use crate::site::{Names, Site};
use crate::stacks::{StackFrames, Stacks};
use crate::symbolize::Frame;
use crate::text::{commas, hex_address};

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

impl LeaksReport {
    /// `heapdump leaks`: the leak classes of `analysis` as memcheck's
    /// summary, the blocks of the shown classes grouped by (class, stack)
    /// into loss records, and the listed records' stacks named by
    /// `symbolizer`.
    pub fn build<S: StackFrames + ?Sized>(
        view: &DumpView<'_>,
        analysis: &HeapAnalysis,
        symbolizer: &mut S,
        options: &LeaksOptions,
    ) -> Self {
        let mut warnings: Vec<String> =
            super::info::memory_not_forked_warning(view.process().flags)
                .into_iter()
                .map(String::from)
                .collect();
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
                site: stacks.site(view, stack, &mut warnings),
                frames: stacks.frames(view, stack, options.frames, &mut warnings),
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
            names: Names::default(),
            warnings,
        }
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
}

/// The report as text, in valgrind's words.
impl fmt::Display for LeaksReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            writeln!(
                f,
                "{bytes} in {} blocks are {} in loss record {} of {}",
                commas(r.blocks),
                r.class.words(),
                r.number,
                self.record_count
            )?;
            writeln!(f, "   site: {}", r.site.text(self.names))?;
            for (i, frame) in r.frames.iter().enumerate() {
                let word = if i == 0 { "at" } else { "by" };
                writeln!(f, "   {word} {frame}")?;
            }
            match &r.block_list {
                Some(blocks) => {
                    writeln!(f, "   blocks ({}):", blocks.len())?;
                    for b in blocks {
                        writeln!(f, "     {}  {} bytes", b.address, commas(b.size))?;
                    }
                }
                None => {
                    writeln!(f, "   blocks: {}", r.examples.join(" "))?;
                }
            }
            f.write_char('\n')?;
        }
        if self.omitted_records > 0 {
            writeln!(
                f,
                "({} more loss records, {} direct bytes, not shown; raise --limit)\n",
                self.omitted_records,
                commas(self.omitted_bytes)
            )?;
        }
        writeln!(f, "LEAK SUMMARY (heuristics: {}):", self.heuristics)?;
        for t in &self.summary {
            writeln!(
                f,
                "   {:>15}: {} bytes in {} blocks",
                t.class.words(),
                commas(t.bytes),
                commas(t.blocks)
            )?;
            if t.class == LeakClass::StillReachable && !self.reachable_via_heuristic.is_empty() {
                writeln!(f, "                      of which reachable via heuristic:")?;
                for h in &self.reachable_via_heuristic {
                    writeln!(
                        f,
                        "                        {:<19}: {} bytes in {} blocks",
                        h.heuristic.name(),
                        commas(h.bytes),
                        commas(h.blocks)
                    )?;
                }
            }
        }
        if let Some(note) = pointer_free_note(self.pointer_free_edges) {
            writeln!(f, "{note}")?;
        }
        let shown: Vec<&str> = self.shown.iter().map(|c| c.kind_name()).collect();
        writeln!(
            f,
            "Loss records shown for: {} (--show to choose)",
            shown.join(",")
        )?;
        Ok(())
    }
}
