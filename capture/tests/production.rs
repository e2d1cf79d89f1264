//! Production mode's presence map under dumps, in a process of its own
//! (the sampling mode is the whole process's): a thread the dump cannot
//! stop (every signal blocked) keeps freeing and allocating small blocks
//! while dumps list the map. A free of a listed block must wait for the
//! dump (else glibc may give the memory back under the scan); the dumps
//! must finish, verify, and list every block the churning thread holds at
//! its exact size; the thread must go on after each dump.
//!
//! Run with `harness = false`: libtest's own threads would be stopped and
//! scanned too.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use heapdump_capture::{Mode, Settings, Tracker};
use heapdump_formats::records::{UNKNOWN_THREAD, allocation_flags};

#[global_allocator]
// S = 2^50 bytes: the churn below allocates hundreds of MiB of 72-byte
// blocks over a run, so at S = 1 GiB one of them was now and then in the
// sample (and so had a record: CI saw it once); at 2^50 the odds are
// about one in a million.
static ALLOCATOR: Tracker = Tracker::system().with_settings(Settings::new().sample_stacks(1 << 50));

/// Blocks the churning thread holds at any time.
const HELD: usize = 200_000;
/// Their size: under the map's 1 KiB, not a size anything else here makes.
const BLOCK: usize = 72;

fn main() {
    common::run_tests(
        &[
            (
                "a_thread_the_dump_cannot_stop_frees_map_blocks_only_after_the_listing",
                a_thread_the_dump_cannot_stop_frees_map_blocks_only_after_the_listing,
            ),
            (
                "the_maps_pages_go_back_after_a_spike_and_it_still_lists_every_block",
                the_maps_pages_go_back_after_a_spike_and_it_still_lists_every_block,
            ),
            (
                "the_maps_blocks_count_no_footer_in_the_tracking_bytes",
                the_maps_blocks_count_no_footer_in_the_tracking_bytes,
            ),
        ],
        || {},
    );
}

fn a_thread_the_dump_cannot_stop_frees_map_blocks_only_after_the_listing() {
    heapdump_capture::set_stop_timeout(Duration::from_millis(200));
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            common::block_all_signals();
            let mut held: Vec<Box<[u8; BLOCK]>> = (0..HELD).map(|_| Box::new([1; BLOCK])).collect();
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // A new block, then the old one freed: HELD or HELD + 1 live.
                for _ in 0..1000 {
                    next = (next + 7919) % HELD;
                    held[next] = black_box(Box::new([2; BLOCK]));
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            held.len()
        })
    };
    while rounds.load(Ordering::Relaxed) < 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    for mode in [Mode::Stop, Mode::Fork, Mode::Stop, Mode::Fork, Mode::Stop] {
        common::set_mode(mode);
        let before = rounds.load(Ordering::Relaxed);
        let (bytes, stats) = common::dump_with_stats();
        let dump = common::parse_and_verify(bytes);
        let view = dump.view();
        if mode == Mode::Stop {
            assert_eq!(stats.threads_not_stopped, 1, "{mode:?}");
        }
        let held = view
            .allocations()
            .iter()
            .filter(|a| a.size == BLOCK as u64)
            .collect::<Vec<_>>();
        let mapped = held
            .iter()
            .filter(|a| a.flags & allocation_flags::UNRECORDED != 0)
            .inspect(|a| {
                assert_eq!((a.thread, a.sequence, a.stack), (UNKNOWN_THREAD, 0, 0));
                assert_eq!(a.address % 16, 0, "{a:?}");
            })
            .count();
        // Every held block is listed, at its size: the thread's frees
        // waited for the dump (else blocks freed and made meanwhile would
        // be missed or added), but for the one it made before its next
        // free waited. With S = 2^50 none is in the sample: all come from
        // the map, and the thread never waits on a lock the dump holds.
        assert!(
            (HELD..=HELD + 1).contains(&held.len()),
            "{mode:?}: {} blocks of {BLOCK} bytes",
            held.len()
        );
        assert_eq!(mapped, held.len(), "{mode:?}: blocks from the map");
        drop(dump);
        // The thread goes on once the dump is done.
        while rounds.load(Ordering::Relaxed) < before + 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(churn.join().unwrap(), HELD);
    heapdump_capture::set_stop_timeout(heapdump_capture::DEFAULT_STOP_TIMEOUT);
}

/// Kilobytes resident in the presence map: the mappings of
/// `/proc/self/smaps` marked `MADV_NOHUGEPAGE` (`nh`; only the map's are)
/// whose size is a whole number of one region's map (32 MiB: the kernel
/// merges adjacent ones).
fn map_resident_kib() -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let kib = |line: &str| {
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let (mut total, mut size, mut rss) = (0, 0, 0);
    for line in smaps.lines() {
        if line.starts_with("Size:") {
            size = kib(line);
        } else if line.starts_with("Rss:") {
            rss = kib(line);
        } else if let Some(flags) = line.strip_prefix("VmFlags:")
            && flags.split_whitespace().any(|f| f == "nh")
            && size % (32 << 10) == 0
        {
            total += rss;
        }
    }
    total
}

fn the_maps_pages_go_back_after_a_spike_and_it_still_lists_every_block() {
    const SPIKE: usize = 1_200_000; // 72-byte blocks: ~96 MB of heap
    let spike: Vec<Box<[u8; BLOCK]>> = (0..SPIKE).map(|_| Box::new([3; BLOCK])).collect();
    let at_peak = map_resident_kib();
    assert!(at_peak >= 2_500, "{at_peak} KiB of map at the peak");
    drop(spike);
    let after = map_resident_kib();
    assert!(
        after * 4 < at_peak,
        "{after} KiB of map after the spike, {at_peak} at its peak"
    );

    // Blocks made after the trim, in the pages it dropped, are listed.
    common::set_mode(Mode::Stop);
    let kept: Vec<Box<[u8; BLOCK]>> = (0..100_000).map(|_| Box::new([4; BLOCK])).collect();
    let (bytes, _) = common::dump_with_stats();
    let dump = common::parse_and_verify(bytes);
    let listed = dump
        .view()
        .allocations()
        .iter()
        .filter(|a| a.size == BLOCK as u64 && a.flags & allocation_flags::UNRECORDED != 0)
        .count();
    assert_eq!(listed, kept.len());
}

/// The map's blocks are asked without a footer's room: the tracking bytes
/// (of `stats` and of a dump) count their share of the map (2 bytes for a
/// 72-byte block, less once the map covers a past peak), not a footer's 4.
fn the_maps_blocks_count_no_footer_in_the_tracking_bytes() {
    const KEPT: u64 = 200_000;
    common::set_mode(Mode::Stop);
    let tracking_in_dump = || {
        let (bytes, _) = common::dump_with_stats();
        common::parse_and_verify(bytes)
            .view()
            .process()
            .tracking_bytes
    };
    let (stats_before, dump_before) = (heapdump_capture::stats(), tracking_in_dump());
    let kept: Vec<Box<[u8; BLOCK]>> = (0..KEPT).map(|_| Box::new([5; BLOCK])).collect();
    let (stats_after, dump_after) = (heapdump_capture::stats(), tracking_in_dump());
    assert!(stats_after.live_count - stats_before.live_count > KEPT);
    let per_block = |before: u64, after: u64| after.saturating_sub(before) as f64 / KEPT as f64;
    let in_stats = per_block(stats_before.tracking_bytes, stats_after.tracking_bytes);
    let in_dump = per_block(dump_before, dump_after);
    assert!(in_stats < 3.0, "stats: {in_stats} tracking bytes per block");
    assert!(in_dump < 3.0, "dump: {in_dump} tracking bytes per block");
    drop(kept);
}
