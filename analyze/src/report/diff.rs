//! `heapdump diff`: growth between two dumps, by site or type.

use std::collections::HashMap;
use std::fmt;

use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::sampling::StackSampling;
use crate::site::{Names, Site};
use crate::stacks::{StackFrames, Stacks};
use crate::text::{human_bytes, string};

/// The site or the type of `stack`, as `diff` groups it.
fn diff_key<S: StackFrames + ?Sized>(
    stacks: &mut Stacks<'_, S>,
    view: &DumpView<'_>,
    stack: u32,
    by: DiffBy,
    warnings: &mut Vec<String>,
) -> DiffKey {
    let info = stacks.get(view, stack, warnings);
    match by {
        DiffBy::Site => DiffKey::Site(info.name.site.clone()),
        DiffBy::Type => DiffKey::Type(info.type_label.clone()),
    }
}

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

impl DiffReport {
    /// `heapdump diff OLD NEW --by BY -n LIMIT`: compares two dumps of the
    /// same process (`old` read from the file `old_file`, `new` from
    /// `new_file`, names the report shows), site by site or type by type,
    /// the `limit` rows that grew most. Each dump is named by its own
    /// frames source (same binary, but its own modules). Dumps of
    /// different processes, or in the wrong order, give a warning.
    #[allow(clippy::too_many_arguments)]
    pub fn build<O: StackFrames + ?Sized, N: StackFrames + ?Sized>(
        old: &DumpView<'_>,
        old_file: &str,
        old_symbolizer: &mut O,
        new: &DumpView<'_>,
        new_file: &str,
        new_symbolizer: &mut N,
        by: DiffBy,
        limit: usize,
    ) -> Self {
        let mut warnings = Vec::new();
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
        let mut old_stacks = Stacks::new(old_symbolizer);
        for (stack, figures) in old_sampling.live_by_stack(old.allocations().iter()).stacks {
            let (bytes, count) = figures.rounded();
            let row = rows
                .entry(diff_key(&mut old_stacks, old, stack, by, &mut warnings))
                .or_default();
            row.old_bytes = row.old_bytes.saturating_add(bytes);
            row.old_count += count;
        }
        // Both sides are sorted by address: a merge finds the blocks of NEW
        // that OLD had too (same address and same sequence number). Blocks
        // production mode listed without a record (UNRECORDED) all have
        // sequence 0: for them the same address counts as the same block,
        // so one freed and another made there since OLD counts as old.
        let mut old_iter = old.allocations().iter().peekable();
        let (mut new_objects, mut new_object_bytes) = (0u64, 0u64);
        let fresh = new.allocations().iter().filter(|a| {
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
            !seen
        });
        let mut new_by_stack = new_sampling.live_by_stack(new.allocations().iter()).stacks;
        let fresh_by_stack = new_sampling.live_by_stack(fresh).stacks;
        let mut new_stacks = Stacks::new(new_symbolizer);
        for (stack, figures) in new_by_stack.drain() {
            let (bytes, count) = figures.rounded();
            let (objects_bytes, objects) = fresh_by_stack
                .get(&stack)
                .map_or((0, 0), |fresh| fresh.rounded());
            let row = rows
                .entry(diff_key(&mut new_stacks, new, stack, by, &mut warnings))
                .or_default();
            row.new_bytes = row.new_bytes.saturating_add(bytes);
            row.new_count += count;
            row.new_objects += objects;
            row.new_object_bytes = row.new_object_bytes.saturating_add(objects_bytes);
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
            names: Names::default(),
            warnings,
        }
    }
}

/// The report as text.
impl fmt::Display for DiffReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let delta = self.new.live_bytes as i128 - self.old.live_bytes as i128;
        writeln!(
            f,
            "old: {} (dump {}): {} bytes in {} allocations",
            self.old.file, self.old.dump_number, self.old.live_bytes, self.old.live_count
        )?;
        writeln!(
            f,
            "new: {} (dump {}): {} bytes in {} allocations ({delta:+} bytes)",
            self.new.file, self.new.dump_number, self.new.live_bytes, self.new.live_count
        )?;
        writeln!(
            f,
            "allocated since old and still alive: {} bytes ({}) in {} allocations",
            self.new_object_bytes,
            human_bytes(self.new_object_bytes),
            self.new_objects
        )?;
        if self.estimated {
            writeln!(
                f,
                "ESTIMATED: the rows come from sampled stacks (production mode): each sampled block counts 1/(1 - exp(-size/S)) times; the lines above are exact"
            )?;
        }
        let (column, plural) = match self.by {
            DiffBy::Site => ("site", "sites"),
            DiffBy::Type => ("type", "types"),
        };
        writeln!(
            f,
            "{:>14} {:>9} {:>14} {:>9}  {column}",
            "Δbytes", "Δcount", "new bytes", "new"
        )?;
        for r in &self.rows {
            let key = match &r.key {
                DiffKey::Site(site) => site.text(self.names),
                DiffKey::Type(label) => self.names.name(label),
            };
            writeln!(
                f,
                "{:>+14} {:>+9} {:>14} {:>9}  {key}",
                r.delta_bytes, r.delta_count, r.new_object_bytes, r.new_objects,
            )?;
        }
        if self.omitted_rows > 0 {
            writeln!(f, "({} more changed {plural})", self.omitted_rows)?;
        }
        Ok(())
    }
}
