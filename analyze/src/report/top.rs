//! `heapdump top`: live bytes grouped by allocation site, function, file
//! or recovered type.

use std::collections::HashMap;
use std::fmt;

use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::sampling::StackSampling;
use crate::site::{Names, OwnCode, OwnFrame, Site, trim_allocator_frames};
use crate::stacks::StackFrames;
use crate::symbolize::Frame;
use crate::text::human_bytes;
use crate::types::AllocationName;

/// What `top` groups allocations by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GroupBy {
    /// Function, file and line of the allocation site.
    Site,
    /// Function of the allocation site.
    Function,
    /// Source file of the allocation site.
    File,
    /// Function of the innermost frame in the program's own code: the
    /// site's, or for a site in a dependency the program's call into it.
    OwnFunction,
    /// Source file of that frame.
    OwnFile,
    /// The recovered type, labelled as `top --retained`'s types and the
    /// exports label it (`alloc@function:line` when no type was recovered).
    Type,
}

/// Options of `top`.
#[derive(Clone, Copy, Debug)]
pub struct TopOptions {
    /// Grouping.
    pub by: GroupBy,
    /// Rows to keep (the rest are summed in `omitted_*`).
    pub limit: usize,
}

/// `heapdump top`: live memory by allocation site.
#[derive(Clone, Debug, Serialize)]
pub struct TopReport {
    /// Live bytes in the dump (sum of every allocation).
    pub total_bytes: u64,
    /// Live allocations in the dump.
    pub total_count: u64,
    /// The grouping.
    pub by: GroupBy,
    /// Groups, largest first, at most `limit`.
    pub rows: Vec<TopRow>,
    /// Groups left out by the limit.
    pub omitted_rows: usize,
    /// Bytes in the groups left out.
    pub omitted_bytes: u64,
    /// Allocations in the groups left out.
    pub omitted_count: u64,
    /// Whether the rows' (and `omitted_*`) bytes and counts are estimates
    /// from a stack sample (production mode): each sampled block counts
    /// `1/(1 - exp(-size/S))` times, unsampled blocks are in no row.
    /// `total_*` are exact either way.
    pub estimated: bool,
    /// The mean interval S of the stack sample in bytes; 0: every stack.
    pub stack_sample_interval_bytes: u64,
    /// Production mode: blocks outside the stack sample (exact). Their
    /// bytes are in `total_bytes` and, estimated, spread over the rows.
    pub unsampled_bytes: u64,
    /// Production mode: how many blocks are outside the stack sample.
    pub unsampled_count: u64,
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

/// One group of `top`.
#[derive(Clone, Debug, Serialize)]
pub struct TopRow {
    /// Live bytes (estimated when the report says `estimated`).
    pub bytes: u64,
    /// Live allocations (estimated when the report says `estimated`).
    pub count: u64,
    /// Share of `total_bytes`, percent.
    pub percent: f64,
    /// Site function (`None` when grouping by file).
    pub function: Option<String>,
    /// Site file (`None` when grouping by function, or unknown).
    pub file: Option<String>,
    /// Site line (only when grouping by site).
    pub line: Option<u32>,
    /// The function the site was inlined into (only when grouping by site).
    pub inlined_into: Option<String>,
    /// When the site is in a dependency, the innermost frame in the
    /// program's own code (only when grouping by site).
    pub own_frame: Option<OwnFrame>,
    /// The type label (only when grouping by type; the member is absent
    /// from the JSON otherwise).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_label: Option<String>,
    /// The stack with the most bytes in this group, innermost first,
    /// from the caller of the allocator (allocator and tracker frames
    /// trimmed).
    pub stack_example: Vec<Frame>,
}

#[derive(PartialEq, Eq, Hash, Clone)]
struct GroupKey {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    inlined_into: Option<String>,
    own_frame: Option<OwnFrame>,
    type_label: Option<String>,
}

/// The group of a stack with symbolized `frames` (innermost first), the
/// program's own code being `own`.
fn group_key(frames: &[Frame], by: GroupBy, own: &OwnCode) -> GroupKey {
    let none = GroupKey {
        function: None,
        file: None,
        line: None,
        inlined_into: None,
        own_frame: None,
        type_label: None,
    };
    if by == GroupBy::Type {
        // The label `top --retained` and the exports give the stack.
        return GroupKey {
            type_label: Some(AllocationName::of_stack_in(frames, own).type_label()),
            ..none
        };
    }
    let site = Site::of_stack_in(frames, own);
    let unknown_file = || "<unknown file>".to_owned();
    match by {
        GroupBy::Site => GroupKey {
            function: Some(site.function),
            file: site.file,
            line: site.line,
            inlined_into: site.inlined_into,
            own_frame: site.own_frame,
            ..none
        },
        GroupBy::Function => GroupKey {
            function: Some(site.function),
            ..none
        },
        GroupBy::OwnFunction => GroupKey {
            function: Some(site.own_frame.map_or(site.function, |f| f.function)),
            ..none
        },
        GroupBy::OwnFile => GroupKey {
            file: Some(
                match site.own_frame {
                    Some(f) => f.file,
                    None => site.file,
                }
                .unwrap_or_else(unknown_file),
            ),
            ..none
        },
        GroupBy::File | GroupBy::Type => GroupKey {
            file: Some(site.file.unwrap_or_else(unknown_file)),
            ..none
        },
    }
}

impl TopReport {
    /// Groups the live allocations by site (or function, file, type). Each
    /// distinct stack is symbolized once; `progress` advances by one per
    /// distinct stack. Stacks that cannot be read count as `<unknown>` and are
    /// reported in `warnings`. `symbolizer` is a [`crate::symbolize::Symbolizer`],
    /// or, for type labels with the generic parameters the exports show, a
    /// [`crate::stacks::TypedFrames`].
    pub fn build<S: StackFrames + ?Sized>(
        view: &DumpView<'_>,
        symbolizer: &mut S,
        options: &TopOptions,
        progress: &indicatif::ProgressBar,
    ) -> Self {
        let mut warnings = Vec::new();
        let sampling = StackSampling::of(view);
        let mut total_bytes = 0u64;
        let mut total_count = 0u64;
        for a in view.allocations().iter() {
            total_bytes = total_bytes.saturating_add(a.size);
            total_count += 1;
        }
        let live = sampling.live_by_stack(view.allocations().iter());
        let (unsampled_bytes, unsampled_count) = (live.unsampled_bytes, live.unsampled_count);
        let mut stacks: Vec<(u32, u64, u64)> = live
            .stacks
            .into_iter()
            .map(|(id, figures)| {
                let (bytes, count) = figures.rounded();
                (id, bytes, count)
            })
            .collect();
        // Biggest first, so a group's example is its biggest stack.
        stacks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        progress.set_length(stacks.len() as u64);

        let mut groups: HashMap<GroupKey, TopRow> = HashMap::new();
        let mut bad_stacks = 0u64;
        for (stack_id, bytes, count) in stacks {
            let frames = match symbolizer.stack_frames(view, stack_id) {
                Ok(frames) => frames,
                Err(e) => {
                    bad_stacks += 1;
                    if bad_stacks <= 5 {
                        warnings.push(format!(
                            "stack {stack_id} unreadable, counted as <unknown>: {e}"
                        ));
                    }
                    Vec::new()
                }
            };
            let key = group_key(&frames, options.by, symbolizer.own_code());
            let row = groups.entry(key.clone()).or_insert_with(|| TopRow {
                bytes: 0,
                count: 0,
                percent: 0.0,
                function: key.function,
                file: key.file,
                line: key.line,
                inlined_into: key.inlined_into,
                own_frame: key.own_frame,
                type_label: key.type_label,
                stack_example: trim_allocator_frames(&frames).to_vec(),
            });
            row.bytes = row.bytes.saturating_add(bytes);
            row.count += count;
            progress.inc(1);
        }
        if bad_stacks > 5 {
            warnings.push(format!("{} more unreadable stacks", bad_stacks - 5));
        }
        let mut rows: Vec<TopRow> = groups.into_values().collect();
        rows.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.count.cmp(&a.count))
                .then_with(|| {
                    (&a.type_label, &a.function, &a.file, a.line).cmp(&(
                        &b.type_label,
                        &b.function,
                        &b.file,
                        b.line,
                    ))
                })
        });
        for row in &mut rows {
            row.percent = if total_bytes == 0 {
                0.0
            } else {
                row.bytes as f64 * 100.0 / total_bytes as f64
            };
        }
        let omitted: Vec<TopRow> = rows.split_off(options.limit.min(rows.len()));
        let process = view.process();
        if process.live_bytes != total_bytes || process.live_count != total_count {
            warnings.push(format!(
            "the dump's process record says {} bytes in {} allocations, but its allocations add up to {} in {}; run `heapdump verify`",
            process.live_bytes, process.live_count, total_bytes, total_count
        ));
        }
        if process.dropped_allocations != 0 {
            warnings.push(format!(
                "{} live allocations were not recorded by the tracker and are missing here",
                process.dropped_allocations
            ));
        }
        warnings.extend(super::dropped_stacks_warning(process.dropped_stacks));
        TopReport {
            total_bytes,
            total_count,
            by: options.by,
            rows,
            omitted_rows: omitted.len(),
            omitted_bytes: omitted.iter().map(|r| r.bytes).sum(),
            omitted_count: omitted.iter().map(|r| r.count).sum(),
            estimated: sampling.is_sampled(),
            stack_sample_interval_bytes: sampling.interval,
            unsampled_bytes,
            unsampled_count,
            names: Names::default(),
            warnings,
        }
    }
}

impl TopRow {
    /// The site of a row grouped by site (its parts, as JSON has them).
    pub fn site(&self) -> Site {
        Site {
            function: self.function.clone().unwrap_or_default(),
            file: self.file.clone(),
            line: self.line,
            inlined_into: self.inlined_into.clone(),
            own_frame: self.own_frame.clone(),
        }
    }
}

/// The report as a text table.
impl fmt::Display for TopReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match self.by {
            GroupBy::Site => "site",
            GroupBy::Function => "function",
            GroupBy::File => "file",
            GroupBy::OwnFunction => "own function",
            GroupBy::OwnFile => "own file",
            GroupBy::Type => "type",
        };
        writeln!(
            f,
            "live: {} bytes ({}) in {} allocations, by {by}",
            self.total_bytes,
            human_bytes(self.total_bytes),
            self.total_count
        )?;
        if self.estimated {
            let sampling = StackSampling {
                interval: self.stack_sample_interval_bytes,
            };
            writeln!(
                f,
                "ESTIMATED: {}; {} bytes ({}) in {} blocks have no stack (not sampled)",
                sampling.note(),
                self.unsampled_bytes,
                human_bytes(self.unsampled_bytes),
                self.unsampled_count
            )?;
        }
        writeln!(
            f,
            "{:>14} {:>10} {:>6} {:>9}  {by}",
            "bytes", "", "%", "count"
        )?;
        for row in &self.rows {
            let label = match self.by {
                GroupBy::File | GroupBy::OwnFile => row.file.clone().unwrap_or_default(),
                GroupBy::Function | GroupBy::OwnFunction => {
                    self.names.name(row.function.as_deref().unwrap_or_default())
                }
                GroupBy::Type => self
                    .names
                    .name(row.type_label.as_deref().unwrap_or_default()),
                GroupBy::Site => row.site().text_with_inlining(self.names),
            };
            writeln!(
                f,
                "{:>14} {:>10} {:>5.1}% {:>9}  {label}",
                row.bytes,
                human_bytes(row.bytes),
                row.percent,
                row.count
            )?;
        }
        if self.omitted_rows > 0 {
            writeln!(
                f,
                "{:>14} {:>10} {:>5.1}% {:>9}  ({} more groups)",
                self.omitted_bytes,
                human_bytes(self.omitted_bytes),
                if self.total_bytes == 0 {
                    0.0
                } else {
                    self.omitted_bytes as f64 * 100.0 / self.total_bytes as f64
                },
                self.omitted_count,
                self.omitted_rows
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_text_strips_generic_arguments_from_inlined_into_but_json_keeps_them() {
        let into = "{closure#0}<usize, alloc::vec::Vec<u8, alloc::alloc::Global>, (), demo::load_thumbnails::{closure_env#0}, core::iter::traits::iterator::Iterator::for_each::call::{closure_env#0}<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::vec::{impl#21}::extend_trusted::{closure_env#0}<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::alloc::Global, core::iter::adapters::map::Map<core::ops::range::Range<usize>, demo::load_thumbnails::{closure_env#0}>>>>";
        let report = TopReport {
            total_bytes: 5_242_880,
            total_count: 20,
            by: GroupBy::Site,
            rows: vec![TopRow {
                bytes: 5_242_880,
                count: 20,
                percent: 100.0,
                function: Some("demo::load_thumbnails::{closure#0}".into()),
                file: Some("/work/main/examples/src/bin/demo.rs".into()),
                line: Some(24),
                inlined_into: Some(into.into()),
                own_frame: None,
                type_label: None,
                stack_example: Vec::new(),
            }],
            omitted_rows: 0,
            omitted_bytes: 0,
            omitted_count: 0,
            estimated: false,
            stack_sample_interval_bytes: 0,
            unsampled_bytes: 0,
            unsampled_count: 0,
            names: Names::Abbreviated,
            warnings: Vec::new(),
        };
        let text = report.to_string();
        let row = text.lines().nth(2).unwrap();
        assert!(
            row.ends_with(
                "  demo::load_thumbnails::{closure#0}  /work/main/examples/src/bin/demo.rs:24  (inlined into {closure#0})"
            ),
            "{row}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][0]["inlined_into"], into);
        // With full names, the text has them as JSON does.
        let full = TopReport {
            names: Names::Full,
            ..report.clone()
        };
        let text = full.to_string();
        let row = text.lines().nth(2).unwrap();
        assert!(row.ends_with(&format!("(inlined into {into})")), "{row}");
        // Only rows grouped by type have a "type" member.
        assert_eq!(json["by"], "site");
        assert!(json["rows"][0].get("type").is_none(), "{json}");
    }

    #[test]
    fn long_function_names_are_abbreviated_in_rows_by_site_and_by_function() {
        let long = format!(
            "app::visit<{}u8{}>",
            "core::iter::adapters::map::Map<".repeat(4),
            ">".repeat(4)
        );
        let short = "app::visit<Map<Map<Map<Map<u8>>>>>";
        let row = |by: GroupBy, names: Names| {
            let report = TopReport {
                total_bytes: 64,
                total_count: 1,
                by,
                rows: vec![TopRow {
                    bytes: 64,
                    count: 1,
                    percent: 100.0,
                    function: Some(long.clone()),
                    file: (by == GroupBy::Site).then(|| "src/visit.rs".to_owned()),
                    line: (by == GroupBy::Site).then_some(7),
                    inlined_into: None,
                    own_frame: None,
                    type_label: None,
                    stack_example: Vec::new(),
                }],
                omitted_rows: 0,
                omitted_bytes: 0,
                omitted_count: 0,
                estimated: false,
                stack_sample_interval_bytes: 0,
                unsampled_bytes: 0,
                unsampled_count: 0,
                names,
                warnings: Vec::new(),
            };
            let text = report.to_string();
            text.lines().nth(2).unwrap().to_owned()
        };
        assert!(long.len() > 100);
        assert!(
            row(GroupBy::Function, Names::Abbreviated).ends_with(&format!("  {short}")),
            "{}",
            row(GroupBy::Function, Names::Abbreviated)
        );
        assert!(row(GroupBy::Function, Names::Full).ends_with(&format!("  {long}")));
        assert!(
            row(GroupBy::Site, Names::Abbreviated).ends_with(&format!("  {short}  src/visit.rs:7"))
        );
        assert!(row(GroupBy::Site, Names::Full).ends_with(&format!("  {long}  src/visit.rs:7")));
    }
}
