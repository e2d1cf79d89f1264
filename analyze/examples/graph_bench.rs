//! Heap-graph benchmark: writes a synthetic dump of N allocations and about
//! 3N edges with the format's writer, then times opening it, building the
//! graph, leak classes, and dominators with retained sizes, and prints the
//! peak resident set size. Timing is printed, never asserted.
//!
//! ```sh
//! cargo run --release -p heapdump-analyze --example graph_bench -- 10000000 /tmp/bench.hdump
//! ```
//!
//! The heap: 95% of the blocks form a binary tree under one root (two
//! child pointers each) plus two random pointers per block into the tree
//! (one in ten interior); the last 5% are lost: a list with random
//! pointers inside the lost part. Deterministic.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use heapdump_analyze::dominators::DominatorTree;
use heapdump_analyze::graph::HeapGraph;
use heapdump_analyze::heuristics::Heuristics;
use heapdump_analyze::leaks::LeakAnalysis;
use heapdump_formats::records::{
    AllocationRecord, EdgeRecord, ProcessRecord, RootRecord, SectionKind, ThreadRecord, edge_flags,
    owner_kind, process_flags, root_kind, thread_flags,
};
use heapdump_formats::write::{DumpWriter, Sink};

/// The writer's sink over a buffered file.
struct FileSink(std::io::BufWriter<std::fs::File>);

impl Sink for FileSink {
    type Error = std::io::ErrorKind;
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write_all(bytes).map_err(|e| e.kind())
    }
}

/// SplitMix64, as in the format's tests.
struct Rng(u64);
impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

fn write_dump(path: &PathBuf, n: u64) -> anyhow::Result<u64> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut w = DumpWriter::new(
        FileSink(std::io::BufWriter::with_capacity(1 << 22, file)),
        &mut buffer,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let err = |e| anyhow::anyhow!("writing {}: {e}", path.display());
    let size = |i: u64| 16 + (i % 7) * 16;
    let live_bytes: u64 = (0..n).map(size).sum();
    w.section([ProcessRecord {
        pid: 1,
        pointer_size: 8,
        page_size: 4096,
        flags: process_flags::HAS_SCAN | process_flags::WORLD_STOPPED,
        dump_number: 1,
        machine: 62,
        live_bytes,
        live_count: n,
        next_sequence: n + 1,
        ..Default::default()
    }])
    .map_err(err)?;
    w.section([ThreadRecord {
        tid: 1,
        flags: thread_flags::ALIVE | thread_flags::MAIN | thread_flags::DUMPING,
        live_count: n,
        ..Default::default()
    }])
    .map_err(err)?;
    w.section((0..n).map(|i| AllocationRecord {
        address: 0x1000_0000 + i * 128,
        size: size(i),
        sequence: i + 1,
        stack: 0,
        thread: 0,
        align: 16,
        flags: 0,
    }))
    .map_err(err)?;
    w.section([RootRecord {
        kind: root_kind::THREAD_STACK,
        owner_kind: owner_kind::THREAD,
        owner: 0,
        address: 0x7000_0000,
        size: 4096,
        ..Default::default()
    }])
    .map_err(err)?;
    let tree = n - n / 20;
    let mut rng = Rng(42);
    let mut edges = 0u64;
    w.begin_section(SectionKind::Edges).map_err(err)?;
    let edge = |source: u64, target: u64, source_offset: u64, target_offset: u64| EdgeRecord {
        source: source as u32,
        target: target as u32,
        source_offset,
        target_offset,
        flags: 0,
        reserved: 0,
    };
    for i in 0..n {
        let mut out: Vec<EdgeRecord> = Vec::with_capacity(4);
        if i < tree {
            for (k, child) in [2 * i + 1, 2 * i + 2].into_iter().enumerate() {
                if child < tree {
                    out.push(edge(i, child, 8 * k as u64, 0));
                }
            }
            for k in 0..2 {
                let t = rng.below(tree);
                let interior = if rng.below(10) == 0 { 8 } else { 0 };
                out.push(edge(i, t, 16 + 8 * k, interior));
            }
        } else {
            if i + 1 < n {
                out.push(edge(i, i + 1, 0, 0));
            }
            for k in 0..2 {
                let t = tree + rng.below(n - tree);
                out.push(edge(i, t, 8 + 8 * k, 0));
            }
        }
        for e in &out {
            w.write_record(e).map_err(err)?;
        }
        edges += out.len() as u64;
    }
    w.write_record(&EdgeRecord {
        source: 0,
        target: 0,
        source_offset: 0,
        target_offset: 0,
        flags: edge_flags::FROM_ROOT,
        reserved: 0,
    })
    .map_err(err)?;
    w.end_section().map_err(err)?;
    let (mut sink, _) = w.finish().map_err(err)?;
    sink.0.flush()?;
    Ok(edges + 1)
}

fn peak_rss_mib() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or_else(|| "?".into(), |kb| format!("{} MiB", kb / 1024))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(10_000_000), |s| s.parse())?;
    let path = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/tmp/heapdump-graph-bench.hdump".into()),
    );
    let t = Instant::now();
    let edges = write_dump(&path, n)?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "wrote {} ({} MiB): {n} allocations, {edges} edges in {:.2?}",
        path.display(),
        size >> 20,
        t.elapsed()
    );

    let t = Instant::now();
    let dump = heapdump_analyze::open_dump(&path)?;
    let view = dump.view();
    let open = t.elapsed();
    let t = Instant::now();
    let graph = HeapGraph::build(&view, &Heuristics::default())?;
    let build = t.elapsed();
    // Each step alone, on one thread ...
    let t = Instant::now();
    let leaks = LeakAnalysis::compute(&graph);
    let classes = t.elapsed();
    let t = Instant::now();
    let lost: Vec<u32> = leaks.definitely_lost().collect();
    let tree = DominatorTree::compute(&graph, &lost);
    let dominators = t.elapsed();
    drop((leaks, lost, tree));
    // ... then both as `heapdump` runs them: the roots' depth-first
    // search overlaps the classes on a second thread.
    let t = Instant::now();
    let (leaks, tree) = DominatorTree::compute_with_leaks(&graph);
    let both = t.elapsed();
    let all = open + build + both;
    let (totals, _) = leaks.totals(&graph);
    println!("| step | time |\n|---|---:|");
    println!("| open + validate (mmap, CRCs) | {open:.2?} |");
    println!("| build graph (CSR) | {build:.2?} |");
    println!("| leak classes (alone) | {classes:.2?} |");
    println!("| dominators + retained sizes (alone) | {dominators:.2?} |");
    println!("| classes + dominators + retained (2 threads) | {both:.2?} |");
    println!("| **total** (open + build + 2 threads) | **{all:.2?}** |");
    println!("peak RSS: {}", peak_rss_mib());
    for t in totals {
        println!(
            "{}: {} blocks, {} bytes",
            t.class.words(),
            t.blocks,
            t.bytes
        );
    }
    let max = tree.retained_sizes().iter().max().copied().unwrap_or(0);
    println!(
        "reached from super-root: {}, largest retained: {max} bytes",
        tree.reached_count()
    );
    Ok(())
}
