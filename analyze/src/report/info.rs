//! `heapdump info`: what the dump says about itself (process, threads,
//! modules, live totals, sections).

use std::collections::BTreeMap;
use std::fmt;

use heapdump_formats::constants::{FlagSet, ModuleFlags, ProcessFlags, RootKind, ThreadFlags};
use heapdump_formats::read::DumpView;
use heapdump_formats::records::{allocation_flags, edge_flags, process_flags, stack_flags};
use serde::Serialize;

use crate::symbolize::hex;
use crate::text::{human_bytes, string, utc_timestamp};

/// Flags as `info` lists them: the names of the defined flags set, then
/// the undefined bits in hex, if any.
fn flag_names(flags: impl FlagSet) -> Vec<String> {
    let mut out: Vec<String> = flags.names().map(str::to_owned).collect();
    if flags.unknown_bits() != 0 {
        out.push(format!("{:#x}", flags.unknown_bits()));
    }
    out
}

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
    /// Live allocations flagged UNRECORDED (production mode only): listed
    /// from the allocator without a record, so with no thread, sequence
    /// number or stack.
    pub unrecorded_allocations: u64,
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

/// How many stacks carry `flag`.
fn stacks_flagged(view: &DumpView<'_>, flag: u32) -> u64 {
    view.stacks().iter().filter(|s| s.flags & flag != 0).count() as u64
}

impl InfoReport {
    /// Builds the `info` report of `view`, read from `file`. Never fails:
    /// unreadable strings are shown as such, and disagreements become
    /// warnings (which `info` prints, and its JSON has).
    pub fn build(view: &DumpView<'_>, file: &str) -> Self {
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
                flags: flag_names(ThreadFlags(t.flags)),
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
                flags: flag_names(ModuleFlags(m.flags)),
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
        let (mut sampled, mut unrecorded) = (0, 0);
        for a in view.allocations().iter() {
            heap.allocation_records += 1;
            heap.allocation_record_bytes = heap.allocation_record_bytes.saturating_add(a.size);
            heap.zeroed += u64::from(a.flags & allocation_flags::ZEROED != 0);
            heap.reallocated += u64::from(a.flags & allocation_flags::REALLOCATED != 0);
            without_stack += u64::from(a.stack == 0);
            sampled += u64::from(a.flags & allocation_flags::SAMPLED != 0);
            unrecorded += u64::from(a.flags & allocation_flags::UNRECORDED != 0);
        }
        let stacks = StackInfo {
            stacks: view.stacks().len() as u64,
            frames: view.frames().len() as u64,
            truncated: stacks_flagged(view, stack_flags::TRUNCATED),
            unwound_with_cfi: stacks_flagged(view, stack_flags::CFI),
            allocations_without_stack: without_stack,
            sampled_allocations: sampled,
            unrecorded_allocations: unrecorded,
        };

        let mut roots_by_kind = BTreeMap::new();
        for r in view.roots().iter() {
            *roots_by_kind
                .entry(RootKind(r.kind).to_string())
                .or_insert(0) += 1;
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
            "{} allocations were NOT recorded (the tracker could not get memory for them; counted when made); totals by site undercount",
            p.dropped_allocations
        ));
        }
        warnings.extend(super::dropped_stacks_warning(p.dropped_stacks));
        if p.flags & process_flags::FORK_FAILED != 0 {
            warnings.push(
            "mode=fork was asked for but fork failed: the threads stayed stopped for the whole scan"
                .into(),
        );
        }
        if let Some(warning) = memory_not_forked_warning(p.flags) {
            warnings.push(warning.into());
        }
        if p.flags & process_flags::INCOMPLETE_STOP != 0 {
            warnings.push(
                "some threads could not be stopped; their stacks were scanned while they ran"
                    .into(),
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
                flags: flag_names(ProcessFlags(p.flags)),
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
}

/// The report as text.
impl fmt::Display for InfoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.process;
        let h = &self.heap;
        for w in &self.warnings {
            writeln!(f, "WARNING: {w}")?;
        }
        writeln!(f, "file            {}", self.file)?;
        writeln!(f, "format          .hdump {}", self.format_version)?;
        writeln!(f, "process         pid {} {}", p.pid, p.exe)?;
        writeln!(f, "command line    {}", p.cmdline.join(" "))?;
        writeln!(
            f,
            "snapshot        {} (dump #{}), mode={}, paused {:.3} ms, written in {:.3} ms",
            p.timestamp,
            p.dump_number,
            p.mode,
            p.pause_ns as f64 / 1e6,
            p.write_ns as f64 / 1e6
        )?;
        writeln!(f, "flags           {}", none_if_empty(&p.flags))?;
        if p.stack_sample_interval_bytes != 0 {
            writeln!(
                f,
                "stacks          sampled: mean interval {} ({} bytes); {} of {} blocks carry a stack",
                human_bytes(p.stack_sample_interval_bytes),
                p.stack_sample_interval_bytes,
                self.stacks.sampled_allocations,
                h.allocation_records
            )?;
            if self.stacks.unrecorded_allocations != 0 {
                writeln!(
                    f,
                    "unrecorded      {} blocks listed without a record (no thread or sequence number)",
                    self.stacks.unrecorded_allocations
                )?;
            }
        }
        writeln!(
            f,
            "live            {} bytes ({}) in {} allocations",
            h.live_bytes,
            human_bytes(h.live_bytes),
            h.live_count
        )?;
        writeln!(
            f,
            "peak            {} bytes ({}), {} allocations",
            h.peak_live_bytes,
            human_bytes(h.peak_live_bytes),
            h.peak_live_count
        )?;
        writeln!(
            f,
            "since start     {} allocations, {} frees; tracker uses {}",
            h.total_allocations,
            h.total_frees,
            human_bytes(h.tracking_bytes)
        )?;
        writeln!(
            f,
            "dropped         {} allocations, the stacks of {} more",
            h.dropped_allocations, h.dropped_stacks
        )?;
        let s = &self.stacks;
        writeln!(
            f,
            "stacks          {} stacks ({} truncated, {} unwound in part by CFI), {} frames; {} allocations without a stack",
            s.stacks, s.truncated, s.unwound_with_cfi, s.frames, s.allocations_without_stack
        )?;
        let sc = &self.scan;
        if sc.captured || sc.roots != 0 || sc.edges != 0 {
            let kinds: Vec<String> = sc
                .roots_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(f, "roots           {} ({})", sc.roots, kinds.join(", "))?;
            writeln!(
                f,
                "edges           {} ({} from roots, {} from allocations, {} interior)",
                sc.edges, sc.edges_from_roots, sc.edges_from_allocations, sc.interior_edges
            )?;
        } else {
            writeln!(f, "roots, edges    not captured (0)")?;
        }
        if self.contents.captured || self.contents.allocations != 0 {
            writeln!(
                f,
                "contents        {} allocations, {} bytes",
                self.contents.allocations, self.contents.bytes
            )?;
        } else {
            writeln!(f, "contents        not captured (0)")?;
        }
        writeln!(f, "\nthreads ({})", self.threads.len())?;
        for t in &self.threads {
            writeln!(
                f,
                "  {:>3}  tid {:<8} {:<16} {:>10} live  {}",
                t.index,
                t.tid,
                if t.name.is_empty() { "-" } else { &t.name },
                t.live_count,
                none_if_empty(&t.flags)
            )?;
        }
        writeln!(f, "\nmodules ({})", self.modules.len())?;
        for m in &self.modules {
            writeln!(
                f,
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
            )?;
        }
        writeln!(f, "\nsections ({})", self.sections.len())?;
        for s in &self.sections {
            writeln!(
                f,
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
            )?;
        }
        Ok(())
    }
}

fn none_if_empty(flags: &[String]) -> String {
    if flags.is_empty() {
        "-".to_owned()
    } else {
        flags.join(" ")
    }
}

/// The warning for a dump whose forked child missed memory of the
/// program's (marked `MADV_DONTFORK`), if `flags` (the process record's)
/// say so: shared by `info` and `leaks`.
pub fn memory_not_forked_warning(flags: u32) -> Option<&'static str> {
    (flags & process_flags::MEMORY_NOT_FORKED != 0).then_some(
        "the dump's forked child lacked memory the program marked MADV_DONTFORK (V8's heap, for one), so it was not scanned: blocks only it points to may be classed lost; dump with mode=stop (heapdump run --mode stop)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_flag_bits_are_shown_in_hex() {
        assert_eq!(
            flag_names(ProcessFlags(0x05 | 0x100)),
            ["HAS_CONTENTS", "WORLD_STOPPED", "0x100"]
        );
    }
}
