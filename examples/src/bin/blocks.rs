//! A program whose heap is known exactly, for the end-to-end test of
//! `heapdump top`: `make_blocks` makes 1000 `Box<[u8; 4096]>`,
//! `make_vectors` makes 10 `Vec<u64>` of 1000 elements, then the program
//! writes a dump to the path given as its argument and prints the tracker's
//! statistics taken at the moment of the dump.
//!
//! `cargo run --release -p heapdump-examples --bin blocks -- blocks.hdump`

use std::alloc::System;
use std::hint::black_box;

use heapdump_capture::Tracker;

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system();

#[inline(never)]
fn make_blocks(into: &mut Vec<Box<[u8; 4096]>>, count: usize) {
    for index in 0..count {
        into.push(Box::new([index as u8; 4096])); // site: make_blocks
    }
}

#[inline(never)]
fn make_vectors(into: &mut Vec<Vec<u64>>, count: usize) {
    for index in 0..count {
        into.push(vec![index as u64; 1000]); // site: make_vectors
    }
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: blocks DUMP_PATH");
        std::process::exit(2);
    };
    let mut blocks = Vec::with_capacity(1000);
    let mut vectors = Vec::with_capacity(10);
    make_blocks(&mut blocks, 1000);
    make_vectors(&mut vectors, 10);

    // Nothing allocates between the three calls, so both statistics describe
    // exactly the heap the dump holds.
    let before = heapdump_capture::stats();
    let dumped = heapdump_capture::dump_to_path(&path);
    let after = heapdump_capture::stats();
    let dumped = match dumped {
        Ok(dumped) => dumped,
        Err(error) => {
            eprintln!("blocks: cannot write {path}: {error}");
            std::process::exit(1);
        }
    };
    assert_eq!(before.live_bytes, after.live_bytes);
    println!(
        "RESULT live_bytes={} live_count={} dumped_allocations={}",
        before.live_bytes, before.live_count, dumped.allocations
    );
    black_box((&blocks, &vectors));
}
