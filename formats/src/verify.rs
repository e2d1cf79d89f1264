//! Semantic checks over a structurally valid dump.
//!
//! [`DumpView::parse`] checks what a reader needs to read safely: bounds,
//! sizes, checksums. [`verify`] checks what the format promises on top of
//! that: allocations sorted and disjoint, every index pointing at a record
//! that exists, every string inside `Strings`, totals that agree with the
//! records. A dump with problems can still be read (every accessor is
//! checked), but an analysis of it may be wrong, so `heapdump verify` and the
//! end-to-end tests run this.
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use heapdump_formats::read::DumpView;
//! use heapdump_formats::verify::verify;
//! let bytes = heapdump_formats::testing::DumpBuilder::small().to_bytes();
//! let view = DumpView::parse(&bytes).unwrap();
//! for problem in verify(&view) {
//!     eprintln!("{problem}");
//! }
//! # }
//! ```
//!
//! The rules are listed in `FORMAT.md`, section "Semantic rules".

use std::collections::HashMap;
use std::fmt;

use crate::read::{DumpView, Table};
use crate::records::*;

/// At most this many problems are listed per check; the rest are counted in
/// one summary problem, so a garbage dump gives a screenful, not millions of
/// lines.
pub const MAX_PROBLEMS_PER_CHECK: usize = 100;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The section the offending record (or field) is in.
    pub section: SectionKind,
    /// Index of the record in its section, when the problem is one record's.
    pub index: Option<u64>,
    /// Byte offset in the file of the record (or of the section).
    pub offset: u64,
    /// What is wrong, in a sentence.
    pub message: String,
    /// A short stable name of the rule broken, such as
    /// `"allocations.overlap"`. The summary of a capped rule has the rule's
    /// name and no index.
    pub check: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(index) => write!(
                f,
                "{} record {index} at byte {}: {}",
                self.section, self.offset, self.message
            ),
            None => write!(
                f,
                "{} at byte {}: {}",
                self.section, self.offset, self.message
            ),
        }
    }
}

/// Collects problems, at most [`MAX_PROBLEMS_PER_CHECK`] per check.
struct Problems<'v, 'a> {
    view: &'v DumpView<'a>,
    /// Length of the Strings section, which every string must lie in.
    strings_len: u64,
    list: Vec<Problem>,
    counts: HashMap<&'static str, (SectionKind, u64)>,
}

impl<'v, 'a> Problems<'v, 'a> {
    fn new(view: &'v DumpView<'a>) -> Self {
        Problems {
            view,
            strings_len: view.byte_section(SectionKind::Strings).len() as u64,
            list: Vec::new(),
            counts: HashMap::new(),
        }
    }

    /// Counts a problem and says whether it should be listed. Callers build
    /// the message only when it is.
    fn want(&mut self, check: &'static str, section: SectionKind) -> bool {
        let count = &mut self.counts.entry(check).or_insert((section, 0)).1;
        *count += 1;
        *count <= MAX_PROBLEMS_PER_CHECK as u64
    }

    fn record<R: Record>(
        &mut self,
        check: &'static str,
        table: &Table<'a, R>,
        index: usize,
        message: impl FnOnce() -> String,
    ) {
        if self.want(check, R::KIND) {
            self.list.push(Problem {
                section: R::KIND,
                index: Some(index as u64),
                offset: table.file_offset(index),
                message: message(),
                check,
            });
        }
    }

    fn section(&mut self, check: &'static str, section: SectionKind, message: String) {
        if self.want(check, section) {
            let offset = self.section_offset(section);
            self.list.push(Problem {
                section,
                index: None,
                offset,
                message,
                check,
            });
        }
    }

    fn section_offset(&self, section: SectionKind) -> u64 {
        self.view.section(section).map_or(0, |s| s.entry.offset)
    }

    /// Checks that `string` lies inside `Strings`.
    fn string<R: Record>(
        &mut self,
        table: &Table<'a, R>,
        index: usize,
        field: &str,
        string: StrRef,
    ) {
        if string.len == 0 {
            return;
        }
        let strings_len = self.strings_len;
        let end = u64::from(string.offset) + u64::from(string.len);
        if end > strings_len {
            self.record("strings.bounds", table, index, || {
                format!(
                    "{field} string at {}..{end} lies outside the {strings_len}-byte Strings section",
                    string.offset
                )
            });
        }
    }

    fn finish(mut self) -> Vec<Problem> {
        let mut over: Vec<(&'static str, SectionKind, u64)> = self
            .counts
            .iter()
            .filter(|(_, (_, n))| *n > MAX_PROBLEMS_PER_CHECK as u64)
            .map(|(check, (section, n))| (*check, *section, *n))
            .collect();
        over.sort();
        for (check, section, n) in over {
            let offset = self.section_offset(section);
            let hidden = n - MAX_PROBLEMS_PER_CHECK as u64;
            self.list.push(Problem {
                section,
                index: None,
                offset,
                message: format!(
                    "{hidden} more problems of the kind \"{check}\" not listed ({n} in all)"
                ),
                check,
            });
        }
        self.list
    }
}

/// Version 2: every escaped edge has its `EdgeEscapes` record, and every
/// record names an escaped edge, in edge order.
fn check_edge_escapes<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let edges = view.edges();
    let escapes = view.edge_escapes();
    let raw_edges = view.section(SectionKind::Edges).map_or(&[][..], |info| {
        let e = info.entry;
        view.bytes()
            .get(e.offset as usize..(e.offset + e.length) as usize)
            .unwrap_or_default()
    });
    let record_size = view
        .section(SectionKind::Edges)
        .map_or(1, |info| (info.entry.record_size as usize).max(1));
    let is_escape = |edge: u32| -> bool {
        let start = edge as usize * record_size;
        raw_edges
            .get(start..start + record_size)
            .and_then(crate::packed::edge::tag)
            == Some(crate::packed::edge::TAG_ESCAPE)
    };
    let mut named: Vec<u32> = Vec::with_capacity(escapes.len());
    let mut previous: Option<u32> = None;
    for (i, escape) in escapes.iter().enumerate() {
        named.push(escape.edge);
        if previous.is_some_and(|prev| escape.edge <= prev) {
            p.record("edge_escapes.order", &escapes, i, || {
                format!(
                    "edge {} does not follow the previous record's edge {}: not sorted by edge, or a duplicate",
                    escape.edge,
                    previous.unwrap_or_default()
                )
            });
        }
        previous = Some(escape.edge);
        if escape.edge as usize >= edges.len() || !is_escape(escape.edge) {
            p.record("edge_escapes.edge", &escapes, i, || {
                format!(
                    "edge {} is not an escaped edge ({} edges)",
                    escape.edge,
                    edges.len()
                )
            });
        }
    }
    named.sort_unstable();
    for i in 0..edges.len() {
        let index = i as u32;
        if is_escape(index) && named.binary_search(&index).is_err() {
            p.record("edges.escape", &edges, i, || {
                "is an escape but EdgeEscapes has no record for it: its offsets and flags are unknown"
                    .to_string()
            });
        }
    }
}

/// Checks the semantic rules of the format over `view` and returns every
/// problem found (at most [`MAX_PROBLEMS_PER_CHECK`] per rule, plus one
/// summary per rule that had more). An empty list means the dump is sound.
/// Each table's rules are one function below, run in the order of the
/// sections, so problems are listed in that order.
///
/// Runs in O(n log n) time in the number of records and allocates O(n).
pub fn verify(view: &DumpView<'_>) -> Vec<Problem> {
    let mut p = Problems::new(view);
    check_process_strings(&mut p, view);
    check_threads(&mut p, view);
    check_modules(&mut p, view);
    check_segments(&mut p, view);
    check_stacks(&mut p, view);
    check_frame_names(&mut p, view);
    let totals = check_allocations(&mut p, view);
    check_live_totals(&mut p, view, &totals);
    check_roots(&mut p, view);
    check_edges(&mut p, view);
    if view.version().0 >= 2 {
        check_edge_escapes(&mut p, view);
    }
    check_contents(&mut p, view);
    p.finish()
}

/// What the allocations add up to, for the process and thread records.
struct LiveTotals {
    bytes: u128,
    per_thread: Vec<u64>,
}

/// `strings.bounds` of the process record's strings.
fn check_process_strings<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let process_table = view.table::<ProcessRecord>();
    let process = view.process();
    p.string(&process_table, 0, "exe", process.exe);
    p.string(&process_table, 0, "cmdline", process.cmdline);
}

/// `strings.bounds` of thread names, `threads.stack_range`.
fn check_threads<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let threads = view.threads();
    for (i, thread) in threads.iter().enumerate() {
        p.string(&threads, i, "name", thread.name);
        if thread.stack_low > thread.stack_high {
            p.record("threads.stack_range", &threads, i, || {
                format!(
                    "stack_low {:#x} is above stack_high {:#x}",
                    thread.stack_low, thread.stack_high
                )
            });
        }
    }
}

/// `strings.bounds` of module paths and build-ids, `modules.range`.
fn check_modules<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let modules = view.modules();
    for (i, module) in modules.iter().enumerate() {
        p.string(&modules, i, "path", module.path);
        p.string(&modules, i, "build_id", module.build_id);
        if module.start > module.end {
            p.record("modules.range", &modules, i, || {
                format!("start {:#x} is above end {:#x}", module.start, module.end)
            });
        }
    }
}

/// `segments.module`, `segments.range`.
fn check_segments<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let (segments, modules) = (view.segments(), view.modules());
    for (i, segment) in segments.iter().enumerate() {
        if segment.module as usize >= modules.len() {
            p.record("segments.module", &segments, i, || {
                format!(
                    "module index {} does not exist ({} modules)",
                    segment.module,
                    modules.len()
                )
            });
        }
        if segment.start > segment.end {
            p.record("segments.range", &segments, i, || {
                format!("start {:#x} is above end {:#x}", segment.start, segment.end)
            });
        }
    }
}

/// `stacks.zero_not_empty`, `stacks.frames`.
fn check_stacks<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let (stacks, frames) = (view.stacks(), view.frames());
    if let Some(first) = stacks.get(0)
        && first.frame_count != 0
    {
        p.record("stacks.zero_not_empty", &stacks, 0, || {
            format!(
                "stack 0 (\"unknown\") must be empty but has {} frames",
                first.frame_count
            )
        });
    }
    for (i, stack) in stacks.iter().enumerate() {
        let end = stack.first_frame.checked_add(u64::from(stack.frame_count));
        if end.is_none_or(|end| end > frames.len() as u64) {
            p.record("stacks.frames", &stacks, i, || {
                format!(
                    "frames {}..{}+{} lie outside the {} records of Frames",
                    stack.first_frame,
                    stack.first_frame,
                    stack.frame_count,
                    frames.len()
                )
            });
        }
    }
}

/// `frame_names.count`, `strings.bounds` of frame names.
fn check_frame_names<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let frames = view.frames();
    if let Some(info) = view.section(SectionKind::FrameNames) {
        let names = view.table::<FrameNameRecord>();
        if info.entry.count != frames.len() as u64 {
            p.section(
                "frame_names.count",
                SectionKind::FrameNames,
                format!(
                    "holds {} names for the {} records of Frames; they must be one per frame",
                    info.entry.count,
                    frames.len()
                ),
            );
        }
        for (i, name) in names.iter().enumerate() {
            p.string(&names, i, "name", name.name);
        }
    }
}

/// The rules of each allocation record and of their order:
/// `allocations.zero_size`, `.wraps`, `.align`, `.thread`, `.stack`,
/// `.order`, `.duplicate`, `.overlap`, `.sequence`. Returns what they add
/// up to.
fn check_allocations<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) -> LiveTotals {
    let (allocations, threads, stacks) = (view.allocations(), view.threads(), view.stacks());
    let mut live_bytes: u128 = 0;
    let mut per_thread = vec![0u64; threads.len()];
    let mut sequences: Vec<(u64, u32)> = Vec::with_capacity(allocations.len());
    // The earlier record that reaches furthest: (index, address, end).
    let mut furthest: Option<(usize, u64, u64)> = None;
    let mut previous_address: Option<u64> = None;
    for (i, a) in allocations.iter().enumerate() {
        live_bytes += u128::from(a.size);
        sequences.push((a.sequence, i as u32));
        if a.size == 0 {
            p.record("allocations.zero_size", &allocations, i, || {
                format!(
                    "block at {:#x} has size 0 (GlobalAlloc never hands out zero-size blocks)",
                    a.address
                )
            });
        }
        let end = a.address.checked_add(a.size);
        if end.is_none() {
            p.record("allocations.wraps", &allocations, i, || {
                format!(
                    "block at {:#x} of {} bytes runs past the end of the address space",
                    a.address, a.size
                )
            });
        }
        if !a.align.is_power_of_two() {
            p.record("allocations.align", &allocations, i, || {
                format!("alignment {} is not a power of two", a.align)
            });
        }
        if a.thread != UNKNOWN_THREAD && a.thread as usize >= threads.len() {
            p.record("allocations.thread", &allocations, i, || {
                format!(
                    "thread index {} does not exist ({} threads)",
                    a.thread,
                    threads.len()
                )
            });
        }
        if let Some(count) = per_thread.get_mut(a.thread as usize) {
            *count += 1;
        }
        if a.stack != 0 && a.stack as usize >= stacks.len() {
            p.record("allocations.stack", &allocations, i, || {
                format!(
                    "stack id {} does not exist ({} stacks)",
                    a.stack,
                    stacks.len()
                )
            });
        }
        match previous_address {
            Some(prev) if a.address < prev => {
                p.record("allocations.order", &allocations, i, || {
                    format!(
                        "address {:#x} is below record {}'s {prev:#x}: not sorted by address",
                        a.address,
                        i - 1
                    )
                });
            }
            Some(prev) if a.address == prev => {
                p.record("allocations.duplicate", &allocations, i, || {
                    format!("same address {:#x} as record {}", a.address, i - 1)
                });
            }
            _ => {
                if let Some((j, start, end)) = furthest
                    && a.address < end
                {
                    p.record("allocations.overlap", &allocations, i, || {
                        format!("overlaps record {j} ({start:#x}..{end:#x})")
                    });
                }
            }
        }
        previous_address = Some(a.address);
        let end = end.unwrap_or(u64::MAX);
        if furthest.is_none_or(|(_, _, far)| end > far) {
            furthest = Some((i, a.address, end));
        }
    }
    sequences.sort_unstable();
    for pair in sequences.windows(2) {
        let ((seq, first), (next, second)) = (pair[0], pair[1]);
        if seq == next {
            p.record(
                "allocations.sequence",
                &allocations,
                second as usize,
                || format!("sequence {seq} is also record {first}'s"),
            );
        }
    }
    LiveTotals {
        bytes: live_bytes,
        per_thread,
    }
}

/// `process.live_count`, `process.live_bytes`, `threads.live_count`.
fn check_live_totals<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>, totals: &LiveTotals) {
    let process_table = view.table::<ProcessRecord>();
    let process = view.process();
    let (allocations, threads) = (view.allocations(), view.threads());
    let (live_bytes, per_thread) = (totals.bytes, &totals.per_thread);
    if process.live_count != allocations.len() as u64 {
        p.record("process.live_count", &process_table, 0, || {
            format!(
                "live_count is {} but Allocations holds {} records",
                process.live_count,
                allocations.len()
            )
        });
    }
    if u128::from(process.live_bytes) != live_bytes {
        p.record("process.live_bytes", &process_table, 0, || {
            format!(
                "live_bytes is {} but the Allocations sizes add up to {live_bytes}",
                process.live_bytes
            )
        });
    }
    if threads.iter().any(|t| t.live_count != 0) {
        for (i, thread) in threads.iter().enumerate() {
            let counted = per_thread.get(i).copied().unwrap_or(0);
            if thread.live_count != counted {
                p.record("threads.live_count", &threads, i, || {
                    format!(
                        "live_count is {} but {counted} allocations name this thread",
                        thread.live_count
                    )
                });
            }
        }
    }
}

/// `strings.bounds` of root names, `roots.kind`, `.owner_kind`, `.owner`,
/// `.wraps`.
fn check_roots<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let (roots, threads, modules) = (view.roots(), view.threads(), view.modules());
    for (i, root) in roots.iter().enumerate() {
        p.string(&roots, i, "name", root.name);
        if !(root_kind::REGISTERS..=root_kind::OTHER).contains(&root.kind) {
            p.record("roots.kind", &roots, i, || {
                format!("kind {} is not a known root kind", root.kind)
            });
        }
        let owners = match root.owner_kind {
            owner_kind::NONE => None,
            owner_kind::THREAD => Some(("thread", threads.len())),
            owner_kind::MODULE => Some(("module", modules.len())),
            other => {
                p.record("roots.owner_kind", &roots, i, || {
                    format!("owner kind {other} is not a known owner kind")
                });
                None
            }
        };
        if let Some((what, len)) = owners
            && root.owner as usize >= len
        {
            p.record("roots.owner", &roots, i, || {
                format!(
                    "owner {what} index {} does not exist ({len} {what}s)",
                    root.owner
                )
            });
        }
        if root.address.checked_add(root.size).is_none() {
            p.record("roots.wraps", &roots, i, || {
                format!(
                    "range at {:#x} of {} bytes runs past the end of the address space",
                    root.address, root.size
                )
            });
        }
    }
}

/// `edges.source`, `.source_offset`, `.target`, `.target_offset`, `.order`.
fn check_edges<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let process = view.process();
    let (edges, roots, allocations) = (view.edges(), view.roots(), view.allocations());
    let word = if process.pointer_size == 4 { 4 } else { 8 };
    let mut previous_key: Option<(u32, u32, u64)> = None;
    for (i, edge) in edges.iter().enumerate() {
        let from_root = edge.flags & edge_flags::FROM_ROOT != 0;
        let source_size = if from_root {
            roots.get(edge.source as usize).map(|r| r.size)
        } else {
            allocations.get(edge.source as usize).map(|a| a.size)
        };
        match source_size {
            None => {
                let (what, len) = if from_root {
                    ("root", roots.len())
                } else {
                    ("allocation", allocations.len())
                };
                p.record("edges.source", &edges, i, || {
                    format!(
                        "source {what} index {} does not exist ({len} {what}s)",
                        edge.source
                    )
                });
            }
            Some(size) => {
                if edge
                    .source_offset
                    .checked_add(word)
                    .is_none_or(|end| end > size)
                {
                    p.record("edges.source_offset", &edges, i, || {
                        format!(
                            "pointer word at source offset {} does not fit in the {size}-byte source",
                            edge.source_offset
                        )
                    });
                }
            }
        }
        match allocations.get(edge.target as usize) {
            None => p.record("edges.target", &edges, i, || {
                format!(
                    "target allocation index {} does not exist ({} allocations)",
                    edge.target,
                    allocations.len()
                )
            }),
            Some(target) => {
                if edge.target_offset >= target.size {
                    p.record("edges.target_offset", &edges, i, || {
                        format!(
                            "target offset {} is outside the {}-byte target",
                            edge.target_offset, target.size
                        )
                    });
                }
            }
        }
        let key = (
            edge.flags & edge_flags::FROM_ROOT,
            edge.source,
            edge.source_offset,
        );
        if let Some(prev) = previous_key
            && key <= prev
        {
            p.record("edges.order", &edges, i, || {
                if key == prev {
                    format!(
                        "same source and source offset as record {}: duplicate edge",
                        i - 1
                    )
                } else {
                    format!(
                        "not sorted by (FROM_ROOT, source, source_offset): ({}, {}, {}) follows ({}, {}, {})",
                        key.0, key.1, key.2, prev.0, prev.1, prev.2
                    )
                }
            });
        }
        previous_key = Some(key);
    }
}

/// `contents.bounds`, `.allocation`, `.len`, `.orphan_bytes`.
fn check_contents<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let content_len = view.byte_section(SectionKind::ContentBytes).len() as u64;
    let (contents, allocations) = (view.contents(), view.allocations());
    for (i, content) in contents.iter().enumerate() {
        match content.offset.checked_add(content.len) {
            Some(end) if end <= content_len => {}
            _ => p.record("contents.bounds", &contents, i, || {
                format!(
                    "bytes {}..{}+{} lie outside the {content_len}-byte ContentBytes section",
                    content.offset, content.offset, content.len
                )
            }),
        }
        match allocations.get(content.allocation as usize) {
            None => p.record("contents.allocation", &contents, i, || {
                format!(
                    "allocation index {} does not exist ({} allocations)",
                    content.allocation,
                    allocations.len()
                )
            }),
            Some(a) if content.len > a.size => {
                p.record("contents.len", &contents, i, || {
                    format!(
                        "stores {} bytes of a {}-byte allocation",
                        content.len, a.size
                    )
                });
            }
            Some(_) => {}
        }
    }
    if contents.is_empty() && content_len != 0 {
        p.section(
            "contents.orphan_bytes",
            SectionKind::ContentBytes,
            format!("{content_len} bytes but no ContentIndex records refer to them"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::DumpBuilder;

    fn problems(b: &DumpBuilder) -> Vec<Problem> {
        let bytes = b.to_bytes();
        let view = DumpView::parse(&bytes).expect("test dumps parse");
        verify(&view)
    }

    /// The problems as `check: display` lines, for exact assertions.
    fn lines(b: &DumpBuilder) -> Vec<String> {
        problems(b)
            .iter()
            .map(|p| format!("{}: {p}", p.check))
            .collect()
    }

    fn offset_of(b: &DumpBuilder, kind: SectionKind) -> u64 {
        let bytes = b.to_bytes();
        let view = DumpView::parse(&bytes).unwrap();
        view.section(kind).unwrap().entry.offset
    }

    #[test]
    fn sound_dumps_have_no_problems() {
        assert_eq!(lines(&DumpBuilder::small()), Vec::<String>::new());
        assert_eq!(lines(&DumpBuilder::realistic(500)), Vec::<String>::new());
        assert_eq!(lines(&DumpBuilder::default()), Vec::<String>::new());
    }

    #[test]
    fn overlapping_allocation_names_the_record_it_overlaps() {
        let mut b = DumpBuilder::small();
        b.allocations[1].address = 0x1030;
        let at = offset_of(&b, SectionKind::Allocations) + 24;
        assert_eq!(
            lines(&b),
            [format!(
                "allocations.overlap: Allocations record 1 at byte {at}: overlaps record 0 (0x1000..0x1040)"
            )]
        );
    }

    #[test]
    fn allocation_inside_a_large_earlier_block_is_an_overlap() {
        let mut b = DumpBuilder::small();
        b.allocations[0].size = 0x2000; // covers records 1 and 2
        b.fix_totals();
        let checks: Vec<_> = problems(&b).iter().map(|p| (p.check, p.index)).collect();
        assert_eq!(
            checks,
            [
                ("allocations.overlap", Some(1)),
                ("allocations.overlap", Some(2))
            ]
        );
    }

    #[test]
    fn unsorted_and_duplicate_addresses_are_reported() {
        let mut b = DumpBuilder::small();
        b.allocations.swap(0, 1);
        let at = offset_of(&b, SectionKind::Allocations) + 24;
        assert_eq!(
            lines(&b),
            [format!(
                "allocations.order: Allocations record 1 at byte {at}: address 0x1000 is below record 0's 0x1040: not sorted by address"
            )]
        );
        let mut b = DumpBuilder::small();
        b.allocations[1].address = 0x1000;
        assert_eq!(
            lines(&b),
            [format!(
                "allocations.duplicate: Allocations record 1 at byte {at}: same address 0x1000 as record 0"
            )]
        );
    }

    #[test]
    fn bad_allocation_fields_are_reported() {
        let mut b = DumpBuilder::small();
        // Version 2's writer refuses an alignment that is not a power of two.
        b.major = Some(1);
        b.allocations[2].size = 0;
        b.allocations[2].align = 24;
        b.allocations[1].thread = 2;
        b.allocations[1].stack = 3;
        b.allocations[0].sequence = 7;
        b.edges.clear();
        b.fix_totals();
        let base = offset_of(&b, SectionKind::Allocations);
        assert_eq!(
            lines(&b),
            [
                format!(
                    "allocations.thread: Allocations record 1 at byte {}: thread index 2 does not exist (2 threads)",
                    base + 40
                ),
                format!(
                    "allocations.stack: Allocations record 1 at byte {}: stack id 3 does not exist (3 stacks)",
                    base + 40
                ),
                format!(
                    "allocations.zero_size: Allocations record 2 at byte {}: block at 0x2000 has size 0 (GlobalAlloc never hands out zero-size blocks)",
                    base + 80
                ),
                format!(
                    "allocations.align: Allocations record 2 at byte {}: alignment 24 is not a power of two",
                    base + 80
                ),
                format!(
                    "allocations.sequence: Allocations record 2 at byte {}: sequence 7 is also record 0's",
                    base + 80
                ),
            ]
        );
    }

    #[test]
    fn allocation_that_wraps_the_address_space_is_reported() {
        let mut b = DumpBuilder::small();
        // Version 2's writer refuses an address above 2^48.
        b.major = Some(1);
        b.allocations[2].address = u64::MAX - 8;
        b.allocations[2].size = 0x100;
        b.fix_totals();
        let checks: Vec<_> = problems(&b).iter().map(|p| p.check).collect();
        assert_eq!(checks, ["allocations.wraps"]);
    }

    #[test]
    fn process_totals_that_disagree_with_the_records_are_reported() {
        let mut b = DumpBuilder::small();
        b.process.live_count = 4;
        b.process.live_bytes += 1;
        let at = offset_of(&b, SectionKind::Process);
        assert_eq!(
            lines(&b),
            [
                format!(
                    "process.live_count: Process record 0 at byte {at}: live_count is 4 but Allocations holds 3 records"
                ),
                format!(
                    "process.live_bytes: Process record 0 at byte {at}: live_bytes is 353 but the Allocations sizes add up to 352"
                ),
            ]
        );
    }

    #[test]
    fn thread_live_counts_are_checked_only_when_the_tracker_fills_them() {
        let mut b = DumpBuilder::small();
        assert!(b.threads.iter().any(|t| t.live_count != 0));
        b.threads[1].live_count = 5;
        let at = offset_of(&b, SectionKind::Threads) + 48;
        assert_eq!(
            lines(&b),
            [format!(
                "threads.live_count: Threads record 1 at byte {at}: live_count is 5 but 1 allocations name this thread"
            )]
        );
        for t in &mut b.threads {
            t.live_count = 0;
        }
        assert!(problems(&b).is_empty());
    }

    #[test]
    fn strings_outside_the_strings_section_are_reported() {
        let mut b = DumpBuilder::small();
        let len = b.strings.len() as u32;
        b.process.exe = StrRef {
            offset: len,
            len: 1,
        };
        b.threads[0].name = StrRef {
            offset: u32::MAX,
            len: u32::MAX,
        };
        b.modules[0].build_id = StrRef { offset: 4, len };
        b.roots[0].name = StrRef {
            offset: 0,
            len: len + 1,
        };
        let p = problems(&b);
        let got: Vec<_> = p.iter().map(|p| (p.section, p.index, p.check)).collect();
        assert_eq!(
            got,
            [
                (SectionKind::Process, Some(0), "strings.bounds"),
                (SectionKind::Threads, Some(0), "strings.bounds"),
                (SectionKind::Modules, Some(0), "strings.bounds"),
                (SectionKind::Roots, Some(0), "strings.bounds"),
            ]
        );
        assert_eq!(
            p[1].message,
            format!(
                "name string at 4294967295..8589934590 lies outside the {len}-byte Strings section"
            )
        );
    }

    #[test]
    fn stacks_outside_frames_and_a_nonempty_stack_zero_are_reported() {
        let mut b = DumpBuilder::small();
        b.stacks[0].frame_count = 1;
        b.stacks[2].first_frame = u64::MAX;
        let at = offset_of(&b, SectionKind::Stacks);
        assert_eq!(
            lines(&b),
            [
                format!(
                    "stacks.zero_not_empty: Stacks record 0 at byte {at}: stack 0 (\"unknown\") must be empty but has 1 frames"
                ),
                format!(
                    "stacks.frames: Stacks record 2 at byte {}: frames 18446744073709551615..18446744073709551615+1 lie outside the 3 records of Frames",
                    at + 32
                ),
            ]
        );
    }

    #[test]
    fn frame_names_of_the_wrong_count_or_outside_strings_are_reported() {
        let mut b = DumpBuilder::small();
        b.frame_names.pop();
        b.frame_names[0].name = StrRef {
            offset: b.strings.len() as u32,
            len: 3,
        };
        let at = offset_of(&b, SectionKind::FrameNames);
        let got: Vec<_> = problems(&b)
            .iter()
            .map(|p| (p.check, p.index, p.offset))
            .collect();
        assert_eq!(
            got,
            [
                ("frame_names.count", None, at),
                ("strings.bounds", Some(0), at),
            ]
        );
        assert!(
            lines(&b)[0]
                .ends_with("holds 2 names for the 3 records of Frames; they must be one per frame"),
            "{:?}",
            lines(&b)
        );
    }

    #[test]
    fn modules_segments_and_threads_with_bad_ranges_are_reported() {
        let mut b = DumpBuilder::small();
        b.modules[0].start = b.modules[0].end + 1;
        b.segments[1].module = 1;
        b.segments[0].end = 0;
        b.threads[0].stack_low = u64::MAX;
        let checks: Vec<_> = problems(&b).iter().map(|p| (p.check, p.index)).collect();
        assert_eq!(
            checks,
            [
                ("threads.stack_range", Some(0)),
                ("modules.range", Some(0)),
                ("segments.range", Some(0)),
                ("segments.module", Some(1)),
            ]
        );
    }

    #[test]
    fn bad_roots_are_reported() {
        let mut b = DumpBuilder::small();
        b.roots[0].kind = 0;
        b.roots[0].owner = 1;
        b.roots[1].owner_kind = 9;
        b.roots[1].address = u64::MAX;
        let at = offset_of(&b, SectionKind::Roots);
        assert_eq!(
            lines(&b),
            [
                format!("roots.kind: Roots record 0 at byte {at}: kind 0 is not a known root kind"),
                format!(
                    "roots.owner: Roots record 0 at byte {at}: owner module index 1 does not exist (1 modules)"
                ),
                format!(
                    "roots.owner_kind: Roots record 1 at byte {}: owner kind 9 is not a known owner kind",
                    at + 40
                ),
                format!(
                    "roots.wraps: Roots record 1 at byte {}: range at 0xffffffffffffffff of 128 bytes runs past the end of the address space",
                    at + 40
                ),
            ]
        );
    }

    #[test]
    fn bad_edges_are_reported() {
        let mut b = DumpBuilder::small();
        // 1: source offset past the 0x40-byte source, target offset past
        // the 0x100-byte target.
        b.edges[1].source_offset = 0x3c;
        b.edges[1].target_offset = 0x100;
        // 2: target that does not exist.
        b.edges[2].target = 3;
        // 4: root source that does not exist.
        b.edges[4].source = 2;
        let at = offset_of(&b, SectionKind::Edges);
        assert_eq!(
            lines(&b),
            [
                format!(
                    "edges.source_offset: Edges record 1 at byte {}: pointer word at source offset 60 does not fit in the 64-byte source",
                    at + 12
                ),
                format!(
                    "edges.target_offset: Edges record 1 at byte {}: target offset 256 is outside the 256-byte target",
                    at + 12
                ),
                format!(
                    "edges.target: Edges record 2 at byte {}: target allocation index 3 does not exist (3 allocations)",
                    at + 24
                ),
                format!(
                    "edges.source: Edges record 4 at byte {}: source root index 2 does not exist (2 roots)",
                    at + 48
                ),
            ]
        );
    }

    #[test]
    fn unsorted_and_duplicate_edges_are_reported() {
        let mut b = DumpBuilder::small();
        b.edges.swap(2, 3); // a root edge before an allocation edge
        b.edges[1].source_offset = 0;
        let at = offset_of(&b, SectionKind::Edges);
        assert_eq!(
            lines(&b),
            [
                format!(
                    "edges.order: Edges record 1 at byte {}: same source and source offset as record 0: duplicate edge",
                    at + 12
                ),
                format!(
                    "edges.order: Edges record 3 at byte {}: not sorted by (FROM_ROOT, source, source_offset): (0, 1, 24) follows (1, 0, 256)",
                    at + 36
                ),
            ]
        );
    }

    #[test]
    fn bad_content_index_entries_are_reported() {
        let mut b = DumpBuilder::small();
        b.contents[0].offset = 1; // 1 + 0x20 > 0x20 bytes
        b.contents.push(ContentRecord {
            allocation: 7,
            ..Default::default()
        });
        b.contents.push(ContentRecord {
            allocation: 0,
            len: 0x41,
            ..Default::default()
        });
        let at = offset_of(&b, SectionKind::ContentIndex);
        assert_eq!(
            lines(&b),
            [
                format!(
                    "contents.bounds: ContentIndex record 0 at byte {at}: bytes 1..1+32 lie outside the 32-byte ContentBytes section"
                ),
                format!(
                    "contents.allocation: ContentIndex record 1 at byte {}: allocation index 7 does not exist (3 allocations)",
                    at + 24
                ),
                format!(
                    "contents.bounds: ContentIndex record 2 at byte {}: bytes 0..0+65 lie outside the 32-byte ContentBytes section",
                    at + 48
                ),
                format!(
                    "contents.len: ContentIndex record 2 at byte {}: stores 65 bytes of a 64-byte allocation",
                    at + 48
                ),
            ]
        );
    }

    #[test]
    fn problems_per_check_are_capped_with_a_summary() {
        let mut b = DumpBuilder::small();
        b.allocations.clear();
        for i in 0..250u64 {
            b.allocations.push(AllocationRecord {
                address: 0x10_0000 - i * 0x100,
                size: 0x10,
                sequence: i,
                align: 8,
                thread: UNKNOWN_THREAD,
                ..Default::default()
            });
        }
        b.edges.clear();
        b.contents.clear();
        b.content_bytes.clear();
        b.fix_totals();
        let p = problems(&b);
        assert_eq!(p.len(), MAX_PROBLEMS_PER_CHECK + 1);
        assert!(p.iter().all(|p| p.check == "allocations.order"));
        let last = p.last().unwrap();
        assert_eq!(last.check, "allocations.order");
        assert_eq!(last.index, None);
        assert_eq!(
            last.to_string(),
            format!(
                "Allocations at byte {}: 149 more problems of the kind \"allocations.order\" not listed (249 in all)",
                offset_of(&b, SectionKind::Allocations)
            )
        );
    }
}
