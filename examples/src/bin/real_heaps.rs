//! A heap shaped like the ones real programs make, each shape with its own
//! block size so a test can find it:
//!
//! | size | shape | what the reports should say |
//! |---:|---|---|
//! | 800 | a `SmallVec` that spilled, grown by the `smallvec` crate for `index_words` | site in `smallvec`, from `real_heaps::index_words` |
//! | 72 | a block whose only "pointer" is bytes in a `Vec<u8>` held by a static | definitely lost: a byte buffer holds no pointer |
//! | 64 | that `Vec<u8>` | still reachable |
//! | 40 × 12 | `Rc<Holder>`s from one site, each holding a `Vec<u64>` of 8 × (i + 1) elements | one row of 12 objects retaining 104 B to 808 B |
//!
//! It writes a dump to the path given as its argument and exits.
//!
//! `cargo run --release -p heapdump-examples --bin real_heaps -- real.hdump`

use std::alloc::System;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Mutex;

use heapdump_capture::Tracker;
use smallvec::SmallVec;

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system();

/// The byte buffer that holds a block's address as data.
static BYTES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The positions of the words of `text`: 100 words spill the `SmallVec`
/// to the heap, where `smallvec`'s own code grows it (to 100 `u64`s).
#[inline(never)]
fn index_words(text: &str) -> SmallVec<[u64; 4]> {
    let mut positions = SmallVec::new();
    let mut at = 0u64;
    for word in text.split(' ') {
        positions.push(at);
        at += word.len() as u64 + 1;
    }
    positions.shrink_to_fit(); // own frame: index_words
    positions
}

/// A 72-byte block whose address is then written, as bytes, into a
/// 64-byte `Vec<u8>` kept in a static: a conservative scan sees a pointer,
/// but a byte buffer cannot hold one.
#[inline(never)]
fn hide_in_bytes() {
    let block = Box::into_raw(Box::new([7u64; 9])) as usize; // site: hidden block
    let mut bytes: Vec<u8> = Vec::with_capacity(64); // site: byte buffer
    bytes.extend_from_slice(&block.to_ne_bytes());
    bytes.resize(64, 0);
    *BYTES.lock().unwrap_or_else(|e| e.into_inner()) = bytes;
}

/// One of many holders from one site: an `RcInner<Holder>` of 40 bytes.
struct Holder {
    data: Vec<u64>,
}

/// Twelve holders from one line, holding 64 to 768 bytes each.
#[inline(never)]
fn make_holders() -> Vec<Rc<Holder>> {
    (0..12)
        .map(|i| {
            Rc::new(Holder {
                data: vec![i as u64; 8 * (i + 1)],
            })
        })
        .collect()
}

/// Overwrites the stack below the caller, so no stale copy of the hidden
/// block's address survives in a dead frame.
#[inline(never)]
fn scrub_stack() {
    let zeros = black_box([0u64; 16 * 1024]);
    black_box(&zeros);
}

/// The dump path, parsed in a frame of its own (see `leaks.rs`).
#[inline(never)]
fn dump_path() -> Option<String> {
    std::env::args().nth(1)
}

fn main() {
    let Some(path) = dump_path() else {
        eprintln!("usage: real_heaps DUMP_PATH");
        std::process::exit(2);
    };
    let text = "word ".repeat(99) + "end";
    let positions = index_words(&text);
    drop(text);
    hide_in_bytes();
    let holders = make_holders();
    scrub_stack();
    if let Err(error) = heapdump_capture::dump_to_path(&path) {
        eprintln!("real_heaps: cannot write {path}: {error}");
        std::process::exit(1);
    }
    let held: usize = holders.iter().map(|h| h.data.len()).sum();
    println!("RESULT positions={} held={held}", positions.len());
    black_box((&positions, &holders));
}
