//! The reports behind `heapdump info`, `verify` and `top`: plain structs
//! that serialize to the documented JSON and render as text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use heapdump_formats::read::DumpView;
use heapdump_formats::records::{
    allocation_flags, edge_flags, module_flags, process_flags, stack_flags, thread_flags,
};
use heapdump_formats::verify::verify;
use serde::Serialize;

use crate::sampling::StackSampling;
use crate::site::{LABEL_WIDTH, OwnCode, OwnFrame, Site, abbreviate_type, trim_allocator_frames};
use crate::stacks::StackFrames;
use crate::symbolize::{Frame, hex};
use crate::text::{human_bytes, root_kind_name, string, utc_timestamp};
use crate::types::AllocationName;

fn flag_names(flags: u32, names: &[(u32, &'static str)]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    let known = names.iter().fold(0, |acc, (bit, _)| acc | bit);
    if flags & !known != 0 {
        out.push(format!("{:#x}", flags & !known));
    }
    out
}

const PROCESS_FLAGS: &[(u32, &str)] = &[
    (process_flags::HAS_CONTENTS, "HAS_CONTENTS"),
    (process_flags::HAS_SCAN, "HAS_SCAN"),
    (process_flags::WORLD_STOPPED, "WORLD_STOPPED"),
    (process_flags::INCOMPLETE_STOP, "INCOMPLETE_STOP"),
    (process_flags::DROPPED_RECORDS, "DROPPED_RECORDS"),
    (process_flags::FORKED, "FORKED"),
    (process_flags::FORK_FAILED, "FORK_FAILED"),
];

const THREAD_FLAGS: &[(u32, &str)] = &[
    (thread_flags::ALIVE, "ALIVE"),
    (thread_flags::DUMPING, "DUMPING"),
    (thread_flags::MAIN, "MAIN"),
    (thread_flags::STOPPED, "STOPPED"),
    (thread_flags::NOT_STOPPED, "NOT_STOPPED"),
];

const MODULE_FLAGS: &[(u32, &str)] = &[
    (module_flags::MAIN_EXECUTABLE, "MAIN_EXECUTABLE"),
    (module_flags::VDSO, "VDSO"),
];

/// `heapdump info`: everything the dump says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct InfoReport {
    /// The dump file.
    pub file: String,
    /// Format version, `major.minor`.
    pub format_version: String,
    /// The dumped process.
    pub process: ProcessInfo,
    /// Live heap at the snapshot and the tracker's counters.
    pub heap: HeapInfo,
    /// Threads, in thread-index order.
    pub threads: Vec<ThreadInfo>,
    /// Loaded modules.
    pub modules: Vec<ModuleInfo>,
    /// Stacks and frames.
    pub stacks: StackInfo,
    /// Roots and edges from the conservative scan.
    pub scan: ScanInfo,
    /// Allocation contents.
    pub contents: ContentsInfo,
    /// Every section in the file.
    pub sections: Vec<SectionSummary>,
    /// Things the reader should not miss (dropped records, totals that
    /// disagree), one sentence each.
    pub warnings: Vec<String>,
}

/// The process record, decoded.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Executable path.
    pub exe: String,
    /// Command-line arguments.
    pub cmdline: Vec<String>,
    /// Snapshot time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Snapshot time, UTC, RFC 3339.
    pub timestamp: String,
    /// Which dump of this process (1 = first).
    pub dump_number: u32,
    /// ELF machine.
    pub machine: u32,
    /// Pointer size in bytes.
    pub pointer_size: u32,
    /// Page size in bytes.
    pub page_size: u32,
    /// Process flag names (unknown bits as hex).
    pub flags: Vec<String>,
    /// How the snapshot was taken: `fork` (a copy-on-write child scanned
    /// and wrote while the program ran on) or `stop` (the threads stayed
    /// stopped for the scan).
    pub mode: &'static str,
    /// `all` (every block's stack was walked) or `sample` (production
    /// mode: a byte-weighted sample of blocks carries stacks).
    pub stacks: &'static str,
    /// Production mode: the mean interval S of the stack sample, in bytes
    /// (a block of `s` bytes was sampled with probability
    /// `1 - exp(-s/S)`, 1 when `s >= S`); 0 when every stack was walked.
    pub stack_sample_interval_bytes: u64,
    /// Time other threads were paused, ns.
    pub pause_ns: u64,
    /// Time writing the dump took, ns.
    pub write_ns: u64,
}

/// Live-heap totals and tracker counters.
#[derive(Clone, Debug, Serialize)]
pub struct HeapInfo {
    /// Live bytes, as the process record says.
    pub live_bytes: u64,
    /// Live allocations, as the process record says.
    pub live_count: u64,
    /// Allocation records in the dump.
    pub allocation_records: u64,
    /// Sum of the allocation records' sizes.
    pub allocation_record_bytes: u64,
    /// Highest live bytes since the tracker started.
    pub peak_live_bytes: u64,
    /// Highest live count since the tracker started.
    pub peak_live_count: u64,
    /// Allocations since start.
    pub total_allocations: u64,
    /// Frees since start.
    pub total_frees: u64,
    /// Live allocations the tracker could not record.
    pub dropped_allocations: u64,
    /// Stacks the tracker could not record.
    pub dropped_stacks: u64,
    /// Memory the tracker's tables use.
    pub tracking_bytes: u64,
    /// Allocations made by `alloc_zeroed`.
    pub zeroed: u64,
    /// Allocations whose block came from a `realloc`.
    pub reallocated: u64,
}

/// One thread.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadInfo {
    /// Thread index in the dump.
    pub index: usize,
    /// Kernel thread id.
    pub tid: u32,
    /// Thread name, if recorded.
    pub name: String,
    /// Flag names.
    pub flags: Vec<String>,
    /// Live allocations this thread made.
    pub live_count: u64,
}

/// One module.
#[derive(Clone, Debug, Serialize)]
pub struct ModuleInfo {
    /// Path as the loader knew it.
    pub path: String,
    /// GNU build-id, hex; empty if none.
    pub build_id: String,
    /// Runtime start address, hex.
    pub start: String,
    /// Runtime end address (exclusive), hex.
    pub end: String,
    /// Load bias, hex.
    pub load_bias: String,
    /// Flag names.
    pub flags: Vec<String>,
}

/// Stack table sizes.
#[derive(Clone, Debug, Serialize)]
pub struct StackInfo {
    /// Stack records (including stack 0, "unknown").
    pub stacks: u64,
    /// Frame records.
    pub frames: u64,
    /// Stacks cut short at the frame limit.
    pub truncated: u64,
    /// Stacks with a frame unwound by call frame information (a frame
    /// without a frame pointer).
    pub unwound_with_cfi: u64,
    /// Live allocations with an unknown stack (id 0); in production mode,
    /// mostly the blocks outside the stack sample.
    pub allocations_without_stack: u64,
    /// Live allocations flagged SAMPLED (production mode only).
    pub sampled_allocations: u64,
}

/// What the conservative scan found.
#[derive(Clone, Debug, Serialize)]
pub struct ScanInfo {
    /// The process flag HAS_SCAN: roots and edges were captured.
    pub captured: bool,
    /// Root records.
    pub roots: u64,
    /// Root records by kind name.
    pub roots_by_kind: BTreeMap<String, u64>,
    /// Edge records.
    pub edges: u64,
    /// Edges from roots.
    pub edges_from_roots: u64,
    /// Edges from allocations.
    pub edges_from_allocations: u64,
    /// Edges that point inside their target rather than at its start.
    pub interior_edges: u64,
}

/// Allocation contents.
#[derive(Clone, Debug, Serialize)]
pub struct ContentsInfo {
    /// The process flag HAS_CONTENTS.
    pub captured: bool,
    /// Allocations whose bytes are stored.
    pub allocations: u64,
    /// Bytes stored.
    pub bytes: u64,
}

/// One section table entry.
#[derive(Clone, Debug, Serialize)]
pub struct SectionSummary {
    /// Kind name, or `unknown kind N`.
    pub kind: String,
    /// File offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Records (bytes for a byte section).
    pub count: u64,
    /// Bytes per record; 0 for a byte section.
    pub record_size: u32,
}

/// Builds the `info` report. Never fails: unreadable strings are shown as
/// such, and disagreements become warnings.
/// How many stacks carry `flag`.
fn stacks_flagged(view: &DumpView<'_>, flag: u32) -> u64 {
    view.stacks().iter().filter(|s| s.flags & flag != 0).count() as u64
}

pub fn info(view: &DumpView<'_>, file: &str) -> InfoReport {
    let p = view.process();
    let (major, minor) = view.version();
    let cmdline = view
        .string(p.cmdline)
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("<unreadable string: {e}>")]);
    let threads = view
        .threads()
        .iter()
        .enumerate()
        .map(|(index, t)| ThreadInfo {
            index,
            tid: t.tid,
            name: string(view, t.name),
            flags: flag_names(t.flags, THREAD_FLAGS),
            live_count: t.live_count,
        })
        .collect();
    let modules = view
        .modules()
        .iter()
        .map(|m| ModuleInfo {
            path: string(view, m.path),
            build_id: view.string(m.build_id).map(hex).unwrap_or_default(),
            start: format!("{:#x}", m.start),
            end: format!("{:#x}", m.end),
            load_bias: format!("{:#x}", m.load_bias),
            flags: flag_names(m.flags, MODULE_FLAGS),
        })
        .collect();

    let mut heap = HeapInfo {
        live_bytes: p.live_bytes,
        live_count: p.live_count,
        allocation_records: 0,
        allocation_record_bytes: 0,
        peak_live_bytes: p.peak_live_bytes,
        peak_live_count: p.peak_live_count,
        total_allocations: p.total_allocations,
        total_frees: p.total_frees,
        dropped_allocations: p.dropped_allocations,
        dropped_stacks: p.dropped_stacks,
        tracking_bytes: p.tracking_bytes,
        zeroed: 0,
        reallocated: 0,
    };
    let mut without_stack = 0;
    let mut sampled = 0;
    for a in view.allocations().iter() {
        heap.allocation_records += 1;
        heap.allocation_record_bytes = heap.allocation_record_bytes.saturating_add(a.size);
        heap.zeroed += u64::from(a.flags & allocation_flags::ZEROED != 0);
        heap.reallocated += u64::from(a.flags & allocation_flags::REALLOCATED != 0);
        without_stack += u64::from(a.stack == 0);
        sampled += u64::from(a.flags & allocation_flags::SAMPLED != 0);
    }
    let stacks = StackInfo {
        stacks: view.stacks().len() as u64,
        frames: view.frames().len() as u64,
        truncated: stacks_flagged(view, stack_flags::TRUNCATED),
        unwound_with_cfi: stacks_flagged(view, stack_flags::CFI),
        allocations_without_stack: without_stack,
        sampled_allocations: sampled,
    };

    let mut roots_by_kind = BTreeMap::new();
    for r in view.roots().iter() {
        *roots_by_kind.entry(root_kind_name(r.kind)).or_insert(0) += 1;
    }
    let mut scan = ScanInfo {
        captured: p.flags & process_flags::HAS_SCAN != 0,
        roots: view.roots().len() as u64,
        roots_by_kind,
        edges: view.edges().len() as u64,
        edges_from_roots: 0,
        edges_from_allocations: 0,
        interior_edges: 0,
    };
    for e in view.edges().iter() {
        if e.flags & edge_flags::FROM_ROOT != 0 {
            scan.edges_from_roots += 1;
        } else {
            scan.edges_from_allocations += 1;
        }
        scan.interior_edges += u64::from(e.target_offset != 0);
    }
    let contents = ContentsInfo {
        captured: p.flags & process_flags::HAS_CONTENTS != 0,
        allocations: view.contents().len() as u64,
        bytes: view
            .contents()
            .iter()
            .fold(0u64, |acc, c| acc.saturating_add(c.len)),
    };
    let sections = view
        .sections()
        .iter()
        .map(|s| SectionSummary {
            kind: heapdump_formats::read::SectionId(s.entry.kind).to_string(),
            offset: s.entry.offset,
            length: s.entry.length,
            count: s.entry.count,
            record_size: s.entry.record_size,
        })
        .collect();

    let mut warnings = Vec::new();
    if p.dropped_allocations != 0 {
        warnings.push(format!(
            "{} live allocations were NOT recorded (the tracker's table was full); totals by site undercount",
            p.dropped_allocations
        ));
    }
    if p.dropped_stacks != 0 {
        warnings.push(format!(
            "{} stacks were NOT recorded (the stack table was full); their allocations show as <unknown>",
            p.dropped_stacks
        ));
    }
    if p.flags & process_flags::FORK_FAILED != 0 {
        warnings.push(
            "mode=fork was asked for but fork failed: the threads stayed stopped for the whole scan"
                .into(),
        );
    }
    if p.flags & process_flags::INCOMPLETE_STOP != 0 {
        warnings.push(
            "some threads could not be stopped; their stacks were scanned while they ran".into(),
        );
    }
    if heap.allocation_records != p.live_count || heap.allocation_record_bytes != p.live_bytes {
        warnings.push(format!(
            "the process record says {} live allocations / {} bytes but the dump holds {} / {}; run `heapdump verify`",
            p.live_count, p.live_bytes, heap.allocation_records, heap.allocation_record_bytes
        ));
    }

    InfoReport {
        file: file.to_owned(),
        format_version: format!("{major}.{minor}"),
        process: ProcessInfo {
            pid: p.pid,
            exe: string(view, p.exe),
            cmdline,
            timestamp_ns: p.timestamp_ns,
            timestamp: utc_timestamp(p.timestamp_ns),
            dump_number: p.dump_number,
            machine: p.machine,
            pointer_size: p.pointer_size,
            page_size: p.page_size,
            flags: flag_names(p.flags, PROCESS_FLAGS),
            mode: if p.flags & process_flags::FORKED != 0 {
                "fork"
            } else {
                "stop"
            },
            stacks: if p.stack_sample_interval == 0 {
                "all"
            } else {
                "sample"
            },
            stack_sample_interval_bytes: p.stack_sample_interval,
            pause_ns: p.pause_ns,
            write_ns: p.write_ns,
        },
        heap,
        threads,
        modules,
        stacks,
        scan,
        contents,
        sections,
        warnings,
    }
}

impl InfoReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let p = &self.process;
        let h = &self.heap;
        for w in &self.warnings {
            let _ = writeln!(o, "WARNING: {w}");
        }
        let _ = writeln!(o, "file            {}", self.file);
        let _ = writeln!(o, "format          .hdump {}", self.format_version);
        let _ = writeln!(o, "process         pid {} {}", p.pid, p.exe);
        let _ = writeln!(o, "command line    {}", p.cmdline.join(" "));
        let _ = writeln!(
            o,
            "snapshot        {} (dump #{}), mode={}, paused {:.3} ms, written in {:.3} ms",
            p.timestamp,
            p.dump_number,
            p.mode,
            p.pause_ns as f64 / 1e6,
            p.write_ns as f64 / 1e6
        );
        let _ = writeln!(o, "flags           {}", none_if_empty(&p.flags));
        if p.stack_sample_interval_bytes != 0 {
            let _ = writeln!(
                o,
                "stacks          sampled: mean interval {} ({} bytes); {} of {} blocks carry a stack",
                human_bytes(p.stack_sample_interval_bytes),
                p.stack_sample_interval_bytes,
                self.stacks.sampled_allocations,
                h.allocation_records
            );
        }
        let _ = writeln!(
            o,
            "live            {} bytes ({}) in {} allocations",
            h.live_bytes,
            human_bytes(h.live_bytes),
            h.live_count
        );
        let _ = writeln!(
            o,
            "peak            {} bytes ({}), {} allocations",
            h.peak_live_bytes,
            human_bytes(h.peak_live_bytes),
            h.peak_live_count
        );
        let _ = writeln!(
            o,
            "since start     {} allocations, {} frees; tracker uses {}",
            h.total_allocations,
            h.total_frees,
            human_bytes(h.tracking_bytes)
        );
        let _ = writeln!(
            o,
            "dropped         {} allocations, {} stacks",
            h.dropped_allocations, h.dropped_stacks
        );
        let s = &self.stacks;
        let _ = writeln!(
            o,
            "stacks          {} stacks ({} truncated, {} unwound in part by CFI), {} frames; {} allocations without a stack",
            s.stacks, s.truncated, s.unwound_with_cfi, s.frames, s.allocations_without_stack
        );
        let sc = &self.scan;
        if sc.captured || sc.roots != 0 || sc.edges != 0 {
            let kinds: Vec<String> = sc
                .roots_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(o, "roots           {} ({})", sc.roots, kinds.join(", "));
            let _ = writeln!(
                o,
                "edges           {} ({} from roots, {} from allocations, {} interior)",
                sc.edges, sc.edges_from_roots, sc.edges_from_allocations, sc.interior_edges
            );
        } else {
            let _ = writeln!(o, "roots, edges    not captured (0)");
        }
        if self.contents.captured || self.contents.allocations != 0 {
            let _ = writeln!(
                o,
                "contents        {} allocations, {} bytes",
                self.contents.allocations, self.contents.bytes
            );
        } else {
            let _ = writeln!(o, "contents        not captured (0)");
        }
        let _ = writeln!(o, "\nthreads ({})", self.threads.len());
        for t in &self.threads {
            let _ = writeln!(
                o,
                "  {:>3}  tid {:<8} {:<16} {:>10} live  {}",
                t.index,
                t.tid,
                if t.name.is_empty() { "-" } else { &t.name },
                t.live_count,
                none_if_empty(&t.flags)
            );
        }
        let _ = writeln!(o, "\nmodules ({})", self.modules.len());
        for m in &self.modules {
            let _ = writeln!(
                o,
                "  {}..{}  {}  build-id {}  {}",
                m.start,
                m.end,
                m.path,
                if m.build_id.is_empty() {
                    "none"
                } else {
                    &m.build_id
                },
                none_if_empty(&m.flags)
            );
        }
        let _ = writeln!(o, "\nsections ({})", self.sections.len());
        for s in &self.sections {
            let _ = writeln!(
                o,
                "  {:<14} at {:>10}  {:>12} bytes  {:>10} {}",
                s.kind,
                s.offset,
                s.length,
                s.count,
                if s.record_size == 0 {
                    "bytes".to_owned()
                } else {
                    format!("records of {}", s.record_size)
                }
            );
        }
        o
    }
}

fn none_if_empty(flags: &[String]) -> String {
    if flags.is_empty() {
        "-".to_owned()
    } else {
        flags.join(" ")
    }
}

/// `heapdump verify`: the semantic problems of a dump.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The dump file.
    pub file: String,
    /// Number of problems listed.
    pub problem_count: usize,
    /// Each problem.
    pub problems: Vec<ProblemInfo>,
}

/// One broken rule of FORMAT.md section 10.
#[derive(Clone, Debug, Serialize)]
pub struct ProblemInfo {
    /// Rule name, such as `allocations.overlap`.
    pub check: String,
    /// Section name.
    pub section: String,
    /// Record index, when the problem is one record's.
    pub index: Option<u64>,
    /// Byte offset in the file.
    pub offset: u64,
    /// The problem, as a sentence.
    pub message: String,
}

/// Runs the format's semantic checks.
pub fn verify_report(view: &DumpView<'_>, file: &str) -> VerifyReport {
    let problems: Vec<ProblemInfo> = verify(view)
        .into_iter()
        .map(|p| ProblemInfo {
            check: p.check.to_owned(),
            section: p.section.to_string(),
            index: p.index,
            offset: p.offset,
            message: p.to_string(),
        })
        .collect();
    VerifyReport {
        file: file.to_owned(),
        problem_count: problems.len(),
        problems,
    }
}

impl VerifyReport {
    /// The report as text: one problem a line, then a summary.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        for p in &self.problems {
            let _ = writeln!(o, "{}: {}", p.check, p.message);
        }
        if self.problems.is_empty() {
            let _ = writeln!(o, "{}: ok, no problems", self.file);
        } else {
            let _ = writeln!(
                o,
                "{}: {} problem{}",
                self.file,
                self.problem_count,
                if self.problem_count == 1 { "" } else { "s" }
            );
        }
        o
    }
}

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

/// Groups the live allocations by site (or function, file, type). Each
/// distinct stack is symbolized once; `progress` advances by one per
/// distinct stack. Stacks that cannot be read count as `<unknown>` and are
/// reported in `warnings`. `symbolizer` is a [`crate::symbolize::Symbolizer`],
/// or, for type labels with the generic parameters the exports show, a
/// [`crate::stacks::TypedFrames`].
pub fn top<S: StackFrames + ?Sized>(
    view: &DumpView<'_>,
    symbolizer: &mut S,
    options: &TopOptions,
    progress: &indicatif::ProgressBar,
    warnings: &mut Vec<String>,
) -> TopReport {
    let sampling = StackSampling::of(view);
    // Bytes and counts as f64: weights of a stack sample are fractional.
    let mut by_stack: HashMap<u32, (f64, f64)> = HashMap::new();
    let mut total_bytes = 0u64;
    let mut total_count = 0u64;
    let (mut unsampled_bytes, mut unsampled_count) = (0u64, 0u64);
    for a in view.allocations().iter() {
        total_bytes = total_bytes.saturating_add(a.size);
        total_count += 1;
        let weight = sampling.weight(&a);
        if weight == 0.0 {
            unsampled_bytes = unsampled_bytes.saturating_add(a.size);
            unsampled_count += 1;
            continue;
        }
        let entry = by_stack.entry(a.stack).or_default();
        entry.0 += a.size as f64 * weight;
        entry.1 += weight;
    }
    let mut stacks: Vec<(u32, u64, u64)> = by_stack
        .into_iter()
        .map(|(id, (bytes, count))| (id, bytes.round() as u64, count.round() as u64))
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
    }
}

impl TopReport {
    /// The report as a text table.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let by = match self.by {
            GroupBy::Site => "site",
            GroupBy::Function => "function",
            GroupBy::File => "file",
            GroupBy::OwnFunction => "own function",
            GroupBy::OwnFile => "own file",
            GroupBy::Type => "type",
        };
        let _ = writeln!(
            o,
            "live: {} bytes ({}) in {} allocations, by {by}",
            self.total_bytes,
            human_bytes(self.total_bytes),
            self.total_count
        );
        if self.estimated {
            let sampling = StackSampling {
                interval: self.stack_sample_interval_bytes,
            };
            let _ = writeln!(
                o,
                "ESTIMATED: {}; {} bytes ({}) in {} blocks have no stack (not sampled)",
                sampling.note(),
                self.unsampled_bytes,
                human_bytes(self.unsampled_bytes),
                self.unsampled_count
            );
        }
        let _ = writeln!(
            o,
            "{:>14} {:>10} {:>6} {:>9}  {by}",
            "bytes", "", "%", "count"
        );
        for row in &self.rows {
            let label = match self.by {
                GroupBy::File | GroupBy::OwnFile => row.file.clone().unwrap_or_default(),
                GroupBy::Function | GroupBy::OwnFunction => {
                    row.function.clone().unwrap_or_default()
                }
                GroupBy::Type => {
                    abbreviate_type(row.type_label.as_deref().unwrap_or_default(), LABEL_WIDTH)
                }
                GroupBy::Site => {
                    let mut label = row.function.clone().unwrap_or_default();
                    if let Some(file) = &row.file {
                        let _ = write!(label, "  {file}");
                        if let Some(line) = row.line {
                            let _ = write!(label, ":{line}");
                        }
                    }
                    if let Some(into) = &row.inlined_into {
                        // Full name in JSON; without generic arguments here.
                        let into = crate::site::strip_generics(into);
                        let _ = write!(label, "  (inlined into {into})");
                    }
                    if let Some(own) = &row.own_frame {
                        let _ = write!(label, "  (from {})", own.text());
                    }
                    label
                }
            };
            let _ = writeln!(
                o,
                "{:>14} {:>10} {:>5.1}% {:>9}  {label}",
                row.bytes,
                human_bytes(row.bytes),
                row.percent,
                row.count
            );
        }
        if self.omitted_rows > 0 {
            let _ = writeln!(
                o,
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
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            utc_timestamp(1_700_000_000_000_000_123),
            "2023-11-14T22:13:20.000000123Z"
        );
        assert_eq!(
            utc_timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn unknown_flag_bits_are_shown_in_hex() {
        assert_eq!(
            flag_names(0x05 | 0x100, PROCESS_FLAGS),
            ["HAS_CONTENTS", "WORLD_STOPPED", "0x100"]
        );
    }

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
        };
        let text = report.to_text();
        let row = text.lines().nth(2).unwrap();
        assert!(
            row.ends_with(
                "  demo::load_thumbnails::{closure#0}  /work/main/examples/src/bin/demo.rs:24  (inlined into {closure#0})"
            ),
            "{row}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][0]["inlined_into"], into);
        // Only rows grouped by type have a "type" member.
        assert_eq!(json["by"], "site");
        assert!(json["rows"][0].get("type").is_none(), "{json}");
    }
}
