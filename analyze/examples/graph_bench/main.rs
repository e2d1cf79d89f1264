//! Heap-graph benchmark: writes a synthetic dump of N allocations and about
//! 3N edges with the format's writer, then times opening it, building the
//! graph, leak classes, and dominators with retained sizes, and prints
//! each phase's peak resident set size and a digest of the results (to
//! compare builds). Timing is printed, never asserted.
//!
//! ```sh
//! cargo run --release -p heapdump-analyze --example graph_bench -- 10000000 /tmp/bench.hdump
//! cargo run --release -p heapdump-analyze --example graph_bench -- --heap local 10000000 /tmp/local.hdump
//! cargo run --release -p heapdump-analyze --example graph_bench -- --write-only 1000000 /tmp/1m.hdump
//! cargo run --release -p heapdump-analyze --example graph_bench -- --reuse --heap local 10000000 /tmp/local.hdump
//! ```
//!
//! `--heap uniform` (the default) is the worst case for caches: uniformly
//! random pointers. `--heap local` has the locality of real heaps: blocks
//! allocated in address order, pointing mostly at recent neighbours, and a
//! few hubs. `heap.rs` describes both; both pass `heapdump verify`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use heapdump_analyze::dominators::{Dominator, DominatorTree};
use heapdump_analyze::graph::HeapGraph;
use heapdump_analyze::heuristics::Heuristics;
use heapdump_analyze::leaks::LeakAnalysis;

mod heap;

use heap::HeapShape;

/// Writes a synthetic heap dump and times the analysis of it.
#[derive(Parser, Debug)]
struct Args {
    /// Which heap: uniform (random pointers, the worst case) or local
    /// (allocation-order locality and hubs, like real heaps).
    #[arg(long, default_value = "uniform")]
    heap: HeapShape,
    /// Only write the dump (for measuring other commands on it).
    #[arg(long)]
    write_only: bool,
    /// Analyze the dump already at PATH (written by an earlier run with
    /// the same --heap and block count) instead of writing it again.
    #[arg(long, conflicts_with = "write_only")]
    reuse: bool,
    /// Number of blocks.
    #[arg(default_value_t = 10_000_000)]
    blocks: u64,
    /// Where to write the dump (replaced).
    #[arg(default_value = "/tmp/heapdump-graph-bench.hdump")]
    path: PathBuf,
}

/// CPU time the process has used, all threads, user and system: on a
/// machine shared with other work, a phase's CPU time moves far less than
/// its wall time.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given,
    // which points at a zeroed one of the right size; RUSAGE_SELF is valid.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    // SAFETY: getrusage succeeded, so it initialized the struct (and it
    // was zeroed before, which is a valid `rusage` anyway).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Wall and CPU time of one phase, and the peak resident set size while
/// it ran (the peak is reset to the current size as the phase starts).
struct Phase {
    wall: Duration,
    cpu: Duration,
    /// KiB; `None` where the kernel cannot reset the peak.
    peak_rss: Option<u64>,
}

impl Phase {
    fn time<T>(work: impl FnOnce() -> T) -> (T, Phase) {
        let resettable = reset_peak_rss();
        let (wall, cpu) = (Instant::now(), cpu_time());
        let value = work();
        let phase = Phase {
            wall: wall.elapsed(),
            cpu: cpu_time().saturating_sub(cpu),
            peak_rss: status_kib("VmHWM:").filter(|_| resettable),
        };
        (value, phase)
    }
}

impl std::ops::Add for &Phase {
    type Output = Phase;
    fn add(self, other: &Phase) -> Phase {
        Phase {
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
            peak_rss: self.peak_rss.max(other.peak_rss),
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2?} | {:.2?} | {}",
            self.wall,
            self.cpu,
            mib(self.peak_rss)
        )
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |kib| format!("{} MiB", kib / 1024))
}

/// A `KiB` line of `/proc/self/status` (`VmHWM:` the peak, `VmRSS:` now).
fn status_kib(key: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
}

/// Resets the peak RSS to the current RSS (Linux 4.0+), so the figure
/// printed is the analysis's, not the generator's, and each phase's is
/// its own.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = &args.path;
    if args.reuse {
        let size = std::fs::metadata(path)
            .map_err(|e| anyhow::anyhow!("--reuse: cannot read {}: {e}", path.display()))?
            .len();
        println!("reusing {} ({} MiB)", path.display(), size >> 20);
    } else {
        let t = Instant::now();
        let written = heap::write_dump(path, args.blocks, args.heap)?;
        let size = std::fs::metadata(path)?.len();
        println!(
            "wrote {} ({} MiB, {:?} heap): {} allocations ({} bytes), {} edges in {:.2?}",
            path.display(),
            size >> 20,
            args.heap,
            written.blocks,
            written.live_bytes,
            written.edges,
            t.elapsed()
        );
    }
    if args.write_only {
        return Ok(());
    }
    if !reset_peak_rss() {
        eprintln!("note: cannot reset the peak RSS; it includes writing the dump");
    }
    let start_rss = status_kib("VmRSS:");

    let (dump, open) = Phase::time(|| heapdump_analyze::open_dump(path));
    let dump = dump?;
    let view = dump.view();
    let (graph, build) = Phase::time(|| HeapGraph::build(&view, &Heuristics::default()));
    let graph = graph?;
    // Each step alone, on one thread ...
    let (leaks, classes) = Phase::time(|| LeakAnalysis::compute(&graph));
    let (tree, dominators) = Phase::time(|| {
        let lost: Vec<u32> = leaks.definitely_lost().collect();
        DominatorTree::compute(&graph, &lost)
    });
    drop((leaks, tree));
    // ... then both as `heapdump` runs them: the roots' depth-first
    // search overlaps the classes on a second thread.
    let ((leaks, tree), both) = Phase::time(|| DominatorTree::compute_with_leaks(&graph));
    let all = &(&open + &build) + &both;
    let (totals, _) = leaks.totals(&graph);
    println!("| step | wall | CPU (all threads) | peak RSS |\n|---|---:|---:|---:|");
    println!("| open + validate (mmap, CRCs) | {open} |");
    println!("| build graph (CSR) | {build} |");
    println!("| leak classes (alone) | {classes} |");
    println!("| dominators + retained sizes (alone) | {dominators} |");
    println!("| classes + dominators + retained (2 threads) | {both} |");
    println!("| **total** (open + build + 2 threads) | {all} |");
    println!(
        "peak RSS of the whole analysis: {} (the process held {} before it)",
        mib(all.peak_rss),
        mib(start_rss)
    );
    for t in totals {
        println!(
            "{}: {} blocks, {} bytes",
            t.class.words(),
            t.blocks,
            t.bytes
        );
    }
    // A digest of every idom and retained size, to compare builds.
    let digest = (0..graph.node_count() as u32).fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        let idom = match tree.idom(v) {
            Dominator::Node(d) => u64::from(d),
            Dominator::SuperRoot => u64::MAX - 1,
            Dominator::Unreachable => u64::MAX,
        };
        [idom, tree.retained(v), leaks.class(v) as u64]
            .iter()
            .fold(h, |h, &x| (h ^ x).wrapping_mul(0x0100_0000_01b3))
    });
    println!("digest of idoms, retained sizes and classes: {digest:016x}");
    let max = tree.retained_sizes().iter().max().copied().unwrap_or(0);
    println!(
        "reached from super-root: {}, largest retained: {max} bytes",
        tree.reached_count()
    );
    Ok(())
}
