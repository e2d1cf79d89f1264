//! The synthetic heaps of the `graph_bench` benchmark are sound dumps:
//! `heapdump verify` accepts them, and their shape is what the benchmark
//! says (edges per block, the lost 5%).

mod cli_common;
#[path = "../examples/graph_bench/heap.rs"]
#[allow(dead_code)] // the benchmark uses more of it than this test
mod heap;

use std::path::PathBuf;

use cli_common::{heapdump, json, stderr, stdout};
use heap::HeapShape;
use heapdump_analyze::graph::HeapGraph;
use heapdump_analyze::heuristics::Heuristics;
use heapdump_analyze::leaks::{LeakAnalysis, LeakClass};

/// 3 segments and a bit, so the local heap has several segment heads in
/// each region.
const BLOCKS: u64 = 3 * heap::SEGMENT * 20 / 19 + 77;

fn written(shape: HeapShape) -> (PathBuf, heap::Written) {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("graph-bench-heap-{shape:?}.hdump"));
    let written = heap::write_dump(&path, BLOCKS, shape).expect("write the heap");
    (path, written)
}

fn assert_verifies_with_lost_tail(shape: HeapShape) {
    let (path, written) = written(shape);
    let path_str = path.to_str().unwrap();
    let verify = heapdump(&["verify", path_str]);
    assert!(
        verify.status.success(),
        "verify failed:\n{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    let info = json(&heapdump(&["info", path_str, "--json"]));
    assert_eq!(info["heap"]["allocation_records"], BLOCKS, "{info}");
    assert_eq!(
        info["heap"]["allocation_record_bytes"], written.live_bytes,
        "{info}"
    );

    let dump = heapdump_analyze::open_dump(&path).unwrap();
    let view = dump.view();
    assert_eq!(view.edges().len() as u64, written.edges);
    // About 3 pointers per block, as the benchmark's figures say.
    let per_block = written.edges as f64 / BLOCKS as f64;
    assert!(
        (2.8..=3.2).contains(&per_block),
        "{per_block} edges per block"
    );
    let graph = HeapGraph::build(&view, &Heuristics::default()).unwrap();
    assert_eq!(graph.skipped_edges(), 0);
    let leaks = LeakAnalysis::compute(&graph);
    let (totals, _) = leaks.totals(&graph);
    let blocks = |class| totals.iter().find(|t| t.class == class).unwrap().blocks;
    let lost = BLOCKS / 20;
    assert_eq!(
        blocks(LeakClass::DefinitelyLost) + blocks(LeakClass::IndirectlyLost),
        lost
    );
    assert_eq!(
        blocks(LeakClass::StillReachable) + blocks(LeakClass::PossiblyLost),
        BLOCKS - lost
    );
}

#[test]
fn uniform_heap_passes_verify_and_loses_its_last_twentieth() {
    assert_verifies_with_lost_tail(HeapShape::Uniform);
}

#[test]
fn local_heap_passes_verify_and_loses_its_last_twentieth() {
    assert_verifies_with_lost_tail(HeapShape::Local);
}

#[test]
fn local_heap_points_mostly_at_recent_neighbours() {
    let (path, _) = written(HeapShape::Local);
    let dump = heapdump_analyze::open_dump(&path).unwrap();
    let view = dump.view();
    let edges = view.edges();
    let near = edges
        .iter()
        .filter(|e| e.source.abs_diff(e.target) <= 256)
        .count();
    // Children within 28 blocks, back pointers mostly within a few dozen;
    // segment heads, hubs and one in 64 back pointers reach farther.
    let share = near as f64 / edges.len() as f64;
    assert!(share > 0.8, "{share} of the edges are local");
}
