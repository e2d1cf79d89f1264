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

use crate::constants::{EdgeFlags, OwnerKind, RootKind};
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
/// Each rule is one function below; each table's function runs its rules
/// over its records in order, and the tables run in the order of the
/// sections, so problems are listed by section, record and rule.
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

/// Record `index` of `table`, as a rule sees it.
struct At<'t, 'a, R: Record> {
    table: &'t Table<'a, R>,
    index: usize,
    record: R,
}

impl<'a, R: Record> At<'_, 'a, R> {
    /// Lists a problem of rule `check` with this record.
    fn report(
        &self,
        p: &mut Problems<'_, 'a>,
        check: &'static str,
        message: impl FnOnce() -> String,
    ) {
        p.record(check, self.table, self.index, message);
    }
}

/// Calls `rules` with every record of `table`, in order.
fn each_record<'a, R: Record>(table: &Table<'a, R>, mut rules: impl FnMut(&At<'_, 'a, R>)) {
    for (index, record) in table.iter().enumerate() {
        rules(&At {
            table,
            index,
            record,
        });
    }
}

/// `strings.bounds` of thread names, `threads.stack_range`.
fn check_threads<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    each_record(&view.threads(), |at| {
        p.string(at.table, at.index, "name", at.record.name);
        thread_stack_range(p, at);
    });
}

/// `threads.stack_range`.
fn thread_stack_range<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, ThreadRecord>) {
    let thread = at.record;
    if thread.stack_low > thread.stack_high {
        at.report(p, "threads.stack_range", || {
            format!(
                "stack_low {:#x} is above stack_high {:#x}",
                thread.stack_low, thread.stack_high
            )
        });
    }
}

/// `strings.bounds` of module paths and build-ids, `modules.range`.
fn check_modules<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    each_record(&view.modules(), |at| {
        p.string(at.table, at.index, "path", at.record.path);
        p.string(at.table, at.index, "build_id", at.record.build_id);
        module_range(p, at);
    });
}

/// `modules.range`.
fn module_range<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, ModuleRecord>) {
    let module = at.record;
    if module.start > module.end {
        at.report(p, "modules.range", || {
            format!("start {:#x} is above end {:#x}", module.start, module.end)
        });
    }
}

/// `segments.module`, `segments.range`.
fn check_segments<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let modules = view.modules().len();
    each_record(&view.segments(), |at| {
        segment_module(p, at, modules);
        segment_range(p, at);
    });
}

/// `segments.module`: the module index exists (`modules` of them).
fn segment_module<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, SegmentRecord>, modules: usize) {
    let segment = at.record;
    if segment.module as usize >= modules {
        at.report(p, "segments.module", || {
            format!(
                "module index {} does not exist ({modules} modules)",
                segment.module
            )
        });
    }
}

/// `segments.range`.
fn segment_range<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, SegmentRecord>) {
    let segment = at.record;
    if segment.start > segment.end {
        at.report(p, "segments.range", || {
            format!("start {:#x} is above end {:#x}", segment.start, segment.end)
        });
    }
}

/// `stacks.zero_not_empty`, `stacks.frames`.
fn check_stacks<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let frames = view.frames().len() as u64;
    each_record(&view.stacks(), |at| {
        stack_zero_not_empty(p, at);
        stack_frames(p, at, frames);
    });
}

/// `stacks.zero_not_empty`: stack 0, "unknown", has no frames.
fn stack_zero_not_empty<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, StackRecord>) {
    if at.index == 0 && at.record.frame_count != 0 {
        at.report(p, "stacks.zero_not_empty", || {
            format!(
                "stack 0 (\"unknown\") must be empty but has {} frames",
                at.record.frame_count
            )
        });
    }
}

/// `stacks.frames`: the stack's frames lie in `Frames` (`frames` records).
fn stack_frames<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, StackRecord>, frames: u64) {
    let stack = at.record;
    let end = stack.first_frame.checked_add(u64::from(stack.frame_count));
    if end.is_none_or(|end| end > frames) {
        at.report(p, "stacks.frames", || {
            format!(
                "frames {}..{}+{} lie outside the {frames} records of Frames",
                stack.first_frame, stack.first_frame, stack.frame_count,
            )
        });
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

/// What the rules of an allocation record's place compare it with: the
/// records before it.
#[derive(Default)]
struct Preceding {
    /// The previous record's address.
    address: Option<u64>,
    /// The earlier record that reaches furthest: (index, address, end).
    furthest: Option<(usize, u64, u64)>,
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
    let mut preceding = Preceding::default();
    each_record(&allocations, |at| {
        let a = at.record;
        live_bytes += u128::from(a.size);
        // A block listed without a record has none (its sequence is 0).
        if a.flags & crate::records::allocation_flags::UNRECORDED == 0 {
            sequences.push((a.sequence, at.index as u32));
        }
        if let Some(count) = per_thread.get_mut(a.thread as usize) {
            *count += 1;
        }
        allocation_zero_size(p, at);
        allocation_wraps(p, at);
        allocation_align(p, at);
        allocation_thread(p, at, threads.len());
        allocation_stack(p, at, stacks.len());
        allocation_order(p, at, &preceding);
        allocation_duplicate(p, at, &preceding);
        allocation_overlap(p, at, &preceding);
        preceding.address = Some(a.address);
        let end = a.address.saturating_add(a.size);
        if preceding.furthest.is_none_or(|(_, _, far)| end > far) {
            preceding.furthest = Some((at.index, a.address, end));
        }
    });
    allocation_sequences(p, &allocations, sequences);
    LiveTotals {
        bytes: live_bytes,
        per_thread,
    }
}

/// `allocations.zero_size`.
fn allocation_zero_size<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, AllocationRecord>) {
    if at.record.size == 0 {
        at.report(p, "allocations.zero_size", || {
            format!(
                "block at {:#x} has size 0 (GlobalAlloc never hands out zero-size blocks)",
                at.record.address
            )
        });
    }
}

/// `allocations.wraps`: the block ends inside the address space.
fn allocation_wraps<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, AllocationRecord>) {
    let a = at.record;
    if a.address.checked_add(a.size).is_none() {
        at.report(p, "allocations.wraps", || {
            format!(
                "block at {:#x} of {} bytes runs past the end of the address space",
                a.address, a.size
            )
        });
    }
}

/// `allocations.align`.
fn allocation_align<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, AllocationRecord>) {
    if !at.record.align.is_power_of_two() {
        at.report(p, "allocations.align", || {
            format!("alignment {} is not a power of two", at.record.align)
        });
    }
}

/// `allocations.thread`: the thread index exists (`threads` of them), or
/// is [`UNKNOWN_THREAD`].
fn allocation_thread<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, AllocationRecord>,
    threads: usize,
) {
    let thread = at.record.thread;
    if thread != UNKNOWN_THREAD && thread as usize >= threads {
        at.report(p, "allocations.thread", || {
            format!("thread index {thread} does not exist ({threads} threads)")
        });
    }
}

/// `allocations.stack`: the stack id exists (`stacks` of them).
fn allocation_stack<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, AllocationRecord>,
    stacks: usize,
) {
    let stack = at.record.stack;
    if stack != 0 && stack as usize >= stacks {
        at.report(p, "allocations.stack", || {
            format!("stack id {stack} does not exist ({stacks} stacks)")
        });
    }
}

/// `allocations.order`: the address is not below the previous record's.
fn allocation_order<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, AllocationRecord>,
    preceding: &Preceding,
) {
    let address = at.record.address;
    if let Some(previous) = preceding.address
        && address < previous
    {
        at.report(p, "allocations.order", || {
            format!(
                "address {address:#x} is below record {}'s {previous:#x}: not sorted by address",
                at.index - 1
            )
        });
    }
}

/// `allocations.duplicate`: the address is not the previous record's.
fn allocation_duplicate<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, AllocationRecord>,
    preceding: &Preceding,
) {
    let address = at.record.address;
    if preceding.address == Some(address) {
        at.report(p, "allocations.duplicate", || {
            format!("same address {address:#x} as record {}", at.index - 1)
        });
    }
}

/// `allocations.overlap`: a block above the previous one starts past the
/// end of every earlier block (one out of order or a duplicate is
/// reported as that instead).
fn allocation_overlap<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, AllocationRecord>,
    preceding: &Preceding,
) {
    let address = at.record.address;
    if preceding.address.is_none_or(|previous| address > previous)
        && let Some((j, start, end)) = preceding.furthest
        && address < end
    {
        at.report(p, "allocations.overlap", || {
            format!("overlaps record {j} ({start:#x}..{end:#x})")
        });
    }
}

/// `allocations.sequence`: no two records share a sequence number
/// (`sequences`: each record's, with its index; UNRECORDED blocks have
/// none).
fn allocation_sequences<'a>(
    p: &mut Problems<'_, 'a>,
    allocations: &Table<'a, AllocationRecord>,
    mut sequences: Vec<(u64, u32)>,
) {
    sequences.sort_unstable();
    for pair in sequences.windows(2) {
        let ((seq, first), (next, second)) = (pair[0], pair[1]);
        if seq == next {
            p.record("allocations.sequence", allocations, second as usize, || {
                format!("sequence {seq} is also record {first}'s")
            });
        }
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
    let (threads, modules) = (view.threads().len(), view.modules().len());
    each_record(&view.roots(), |at| {
        p.string(at.table, at.index, "name", at.record.name);
        root_kind(p, at);
        root_owner_kind(p, at);
        root_owner(p, at, threads, modules);
        root_wraps(p, at);
    });
}

/// `roots.kind`: a kind FORMAT.md defines.
fn root_kind<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, RootRecord>) {
    let kind = RootKind(at.record.kind);
    if kind.name().is_none() {
        at.report(p, "roots.kind", || {
            format!("kind {} is not a known root kind", kind.0)
        });
    }
}

/// `roots.owner_kind`: an owner kind FORMAT.md defines.
fn root_owner_kind<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, RootRecord>) {
    let owner_kind = OwnerKind(at.record.owner_kind);
    if owner_kind.name().is_none() {
        at.report(p, "roots.owner_kind", || {
            format!("owner kind {} is not a known owner kind", owner_kind.0)
        });
    }
}

/// `roots.owner`: the thread or module the root names exists (`threads`
/// and `modules` of them).
fn root_owner<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, RootRecord>,
    threads: usize,
    modules: usize,
) {
    let (what, len) = match OwnerKind(at.record.owner_kind) {
        OwnerKind::THREAD => ("thread", threads),
        OwnerKind::MODULE => ("module", modules),
        _ => return,
    };
    if at.record.owner as usize >= len {
        at.report(p, "roots.owner", || {
            format!(
                "owner {what} index {} does not exist ({len} {what}s)",
                at.record.owner
            )
        });
    }
}

/// `roots.wraps`: the range ends inside the address space.
fn root_wraps<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, RootRecord>) {
    let root = at.record;
    if root.address.checked_add(root.size).is_none() {
        at.report(p, "roots.wraps", || {
            format!(
                "range at {:#x} of {} bytes runs past the end of the address space",
                root.address, root.size
            )
        });
    }
}

/// What the edge rules look records up in.
struct EdgeContext<'a> {
    roots: Table<'a, RootRecord>,
    allocations: Table<'a, AllocationRecord>,
    /// Bytes of a pointer in the dumped process.
    word: u64,
}

impl EdgeContext<'_> {
    /// Whether the edge comes from a root (else from an allocation).
    fn from_root(edge: &EdgeRecord) -> bool {
        EdgeFlags(edge.flags).contains(EdgeFlags::FROM_ROOT)
    }

    /// The size of the edge's source, `None` when it does not exist.
    fn source_size(&self, edge: &EdgeRecord) -> Option<u64> {
        if Self::from_root(edge) {
            self.roots.get(edge.source as usize).map(|r| r.size)
        } else {
            self.allocations.get(edge.source as usize).map(|a| a.size)
        }
    }
}

/// `edges.source`, `.source_offset`, `.target`, `.target_offset`, `.order`.
fn check_edges<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let context = EdgeContext {
        roots: view.roots(),
        allocations: view.allocations(),
        word: if view.process().pointer_size == 4 {
            4
        } else {
            8
        },
    };
    let mut previous_key: Option<(u32, u32, u64)> = None;
    each_record(&view.edges(), |at| {
        edge_source(p, at, &context);
        edge_source_offset(p, at, &context);
        edge_target(p, at, &context);
        edge_target_offset(p, at, &context);
        let key = edge_order_key(&at.record);
        edge_order(p, at, key, previous_key);
        previous_key = Some(key);
    });
}

/// `edges.source`: the root or allocation the edge comes from exists.
fn edge_source<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, EdgeRecord>,
    context: &EdgeContext<'a>,
) {
    let edge = at.record;
    if context.source_size(&edge).is_none() {
        let (what, len) = if EdgeContext::from_root(&edge) {
            ("root", context.roots.len())
        } else {
            ("allocation", context.allocations.len())
        };
        at.report(p, "edges.source", || {
            format!(
                "source {what} index {} does not exist ({len} {what}s)",
                edge.source
            )
        });
    }
}

/// `edges.source_offset`: the pointer word lies inside its source.
fn edge_source_offset<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, EdgeRecord>,
    context: &EdgeContext<'a>,
) {
    let edge = at.record;
    if let Some(size) = context.source_size(&edge)
        && edge
            .source_offset
            .checked_add(context.word)
            .is_none_or(|end| end > size)
    {
        at.report(p, "edges.source_offset", || {
            format!(
                "pointer word at source offset {} does not fit in the {size}-byte source",
                edge.source_offset
            )
        });
    }
}

/// `edges.target`: the target allocation exists.
fn edge_target<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, EdgeRecord>,
    context: &EdgeContext<'a>,
) {
    let edge = at.record;
    if context.allocations.get(edge.target as usize).is_none() {
        at.report(p, "edges.target", || {
            format!(
                "target allocation index {} does not exist ({} allocations)",
                edge.target,
                context.allocations.len()
            )
        });
    }
}

/// `edges.target_offset`: the pointer points inside its target.
fn edge_target_offset<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, EdgeRecord>,
    context: &EdgeContext<'a>,
) {
    let edge = at.record;
    if let Some(target) = context.allocations.get(edge.target as usize)
        && edge.target_offset >= target.size
    {
        at.report(p, "edges.target_offset", || {
            format!(
                "target offset {} is outside the {}-byte target",
                edge.target_offset, target.size
            )
        });
    }
}

/// What edges are sorted by: (FROM_ROOT, source, source_offset).
fn edge_order_key(edge: &EdgeRecord) -> (u32, u32, u64) {
    (
        edge.flags & edge_flags::FROM_ROOT,
        edge.source,
        edge.source_offset,
    )
}

/// `edges.order`: sorted by [`edge_order_key`], no two with one key.
fn edge_order<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, EdgeRecord>,
    key: (u32, u32, u64),
    previous: Option<(u32, u32, u64)>,
) {
    if let Some(prev) = previous
        && key <= prev
    {
        at.report(p, "edges.order", || {
            if key == prev {
                format!(
                    "same source and source offset as record {}: duplicate edge",
                    at.index - 1
                )
            } else {
                format!(
                    "not sorted by (FROM_ROOT, source, source_offset): ({}, {}, {}) follows ({}, {}, {})",
                    key.0, key.1, key.2, prev.0, prev.1, prev.2
                )
            }
        });
    }
}

/// `contents.bounds`, `.allocation`, `.len`, `.orphan_bytes`.
fn check_contents<'a>(p: &mut Problems<'_, 'a>, view: &DumpView<'a>) {
    let content_len = view.byte_section(SectionKind::ContentBytes).len() as u64;
    let (contents, allocations) = (view.contents(), view.allocations());
    each_record(&contents, |at| {
        content_bounds(p, at, content_len);
        content_allocation(p, at, &allocations);
        content_len_fits(p, at, &allocations);
    });
    contents_orphan_bytes(p, contents.is_empty(), content_len);
}

/// `contents.bounds`: the bytes lie in `ContentBytes` (`content_len` of
/// them).
fn content_bounds<'a>(p: &mut Problems<'_, 'a>, at: &At<'_, 'a, ContentRecord>, content_len: u64) {
    let content = at.record;
    if content
        .offset
        .checked_add(content.len)
        .is_none_or(|end| end > content_len)
    {
        at.report(p, "contents.bounds", || {
            format!(
                "bytes {}..{}+{} lie outside the {content_len}-byte ContentBytes section",
                content.offset, content.offset, content.len
            )
        });
    }
}

/// `contents.allocation`: the allocation exists.
fn content_allocation<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, ContentRecord>,
    allocations: &Table<'a, AllocationRecord>,
) {
    let content = at.record;
    if allocations.get(content.allocation as usize).is_none() {
        at.report(p, "contents.allocation", || {
            format!(
                "allocation index {} does not exist ({} allocations)",
                content.allocation,
                allocations.len()
            )
        });
    }
}

/// `contents.len`: no more bytes than the allocation has.
fn content_len_fits<'a>(
    p: &mut Problems<'_, 'a>,
    at: &At<'_, 'a, ContentRecord>,
    allocations: &Table<'a, AllocationRecord>,
) {
    let content = at.record;
    if let Some(a) = allocations.get(content.allocation as usize)
        && content.len > a.size
    {
        at.report(p, "contents.len", || {
            format!(
                "stores {} bytes of a {}-byte allocation",
                content.len, a.size
            )
        });
    }
}

/// `contents.orphan_bytes`: `ContentBytes` is empty when no record refers
/// to it.
fn contents_orphan_bytes(p: &mut Problems<'_, '_>, no_records: bool, content_len: u64) {
    if no_records && content_len != 0 {
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
