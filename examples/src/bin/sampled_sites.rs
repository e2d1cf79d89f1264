//! A program with two allocation sites of known size, run in production
//! mode (stacks sampled every 512 KiB on average, a fixed seed) for the
//! end-to-end test of sampled stacks: `make_pages` makes 50,000 blocks of
//! 4 KiB, `make_records` 200,000 blocks of 100 bytes; then the program
//! writes a dump to the path given as its argument.
//!
//! `cargo run --release -p heapdump-examples --bin sampled_sites -- sampled.hdump`
//!
//! `HEAPDUMP=stacks=...,sample_seed=...` overrides the mode and the seed set
//! here in code.

use std::alloc::System;
use std::hint::black_box;

use heapdump_capture::{DEFAULT_SAMPLE_INTERVAL, Settings, Tracker};

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system().with_settings(
    Settings::new()
        .sample_stacks(DEFAULT_SAMPLE_INTERVAL)
        .sample_seed(12),
);

const PAGES: usize = 50_000;
const RECORDS: usize = 200_000;
/// Each site allocates in this many runs, alternating with the other.
const ROUNDS: usize = 4;

#[inline(never)]
fn make_pages(into: &mut Vec<Box<[u8; 4096]>>, count: usize) {
    for index in 0..count {
        into.push(Box::new([index as u8; 4096])); // site: make_pages
    }
}

// Each record must be a block of its own: that is what is counted.
#[allow(clippy::vec_box)]
#[inline(never)]
fn make_records(into: &mut Vec<Box<[u8; 100]>>, count: usize) {
    for index in 0..count {
        into.push(Box::new([index as u8; 100])); // site: make_records
    }
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: sampled_sites DUMP_PATH");
        std::process::exit(2);
    };
    let mut pages = Vec::with_capacity(PAGES);
    let mut records = Vec::with_capacity(RECORDS);
    // Interleaved, as a real program's sites are: both share the thread's
    // sampling countdown.
    for _ in 0..ROUNDS {
        make_pages(&mut pages, PAGES / ROUNDS);
        make_records(&mut records, RECORDS / ROUNDS);
    }
    match heapdump_capture::dump_to_path(&path) {
        Ok(dumped) => println!(
            "RESULT live_bytes={} live_count={}",
            dumped.live_bytes, dumped.allocations
        ),
        Err(error) => {
            eprintln!("sampled_sites: cannot write {path}: {error}");
            std::process::exit(1);
        }
    }
    black_box((&pages, &records));
}
