//! A program that leaks on purpose, every shape with its own block size so
//! each block can be matched between heapdump's verdict and valgrind
//! memcheck's:
//!
//! | size | shape | memcheck says |
//! |---:|---|---|
//! | 2000 | a block held by a static | still reachable |
//! | 2008 | a block whose only pointer was dropped | definitely lost |
//! | 1000 | a 100-node list whose head pointer was dropped | the head definitely lost, the other 99 indirectly |
//! | 48 | two `Rc`s pointing at each other, no handle left | one definitely, one indirectly lost |
//! | 2016 | a block held only through a pointer 8 bytes into it | possibly lost |
//! | 2024 | an `Arc::into_raw` pointer kept in a static (16 bytes in) | possibly lost |
//! | 2032 | a low-bit tagged pointer (`p | 1`) kept in a static | possibly lost |
//! | table | a `HashMap<u64, Box<[u8; 2040]>>` held by a static | possibly lost (table and values) |
//!
//! It writes a dump to the path given as its argument and exits at once,
//! so a leak check at exit (valgrind's) sees the same heap:
//!
//! ```text
//! leaks DUMP_PATH
//! valgrind --leak-check=full --show-leak-kinds=all --xml=yes --xml-file=vg.xml leaks DUMP_PATH
//! ```

use std::alloc::System;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use heapdump_capture::Tracker;

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system();

/// Pointers kept in statics. Stored as integers so the shapes that need an
/// interior or tagged pointer can be expressed; read back at the end so the
/// optimizer cannot drop the stores.
static REACHABLE: AtomicUsize = AtomicUsize::new(0);
static INTERIOR: AtomicUsize = AtomicUsize::new(0);
static INTO_RAW: AtomicUsize = AtomicUsize::new(0);
static TAGGED: AtomicUsize = AtomicUsize::new(0);
static MAP: Mutex<Option<HashMap<u64, Box<[u8; 2040]>>>> = Mutex::new(None);

/// A list node: one 1000-byte block. Its fields are only ever reached by
/// the scan, never read by the program.
#[allow(dead_code)]
struct ListNode {
    next: Option<Box<ListNode>>,
    payload: [u8; 992],
}

/// `Rc` cycle node: 16 bytes of counts + 16 of `RefCell` + 16 of tag = a
/// 48-byte block.
struct CycleNode {
    other: RefCell<Option<Rc<CycleNode>>>,
    tag: [u64; 2],
}

#[inline(never)]
fn hold_in_static() {
    let block = Box::into_raw(Box::new([1u8; 2000]));
    REACHABLE.store(block as usize, Ordering::SeqCst);
}

#[inline(never)]
fn lose_one_block() {
    let block = Box::into_raw(Box::new([2u8; 2008]));
    black_box(block);
}

/// A 100-node list of 1000-byte nodes whose head pointer is dropped: the
/// head is definitely lost, the 99 nodes it leads to indirectly lost.
#[inline(never)]
fn lose_list_head() {
    let mut head: Option<Box<ListNode>> = None;
    for i in 0..100 {
        head = Some(Box::new(ListNode {
            next: head.take(),
            payload: [i as u8; 992],
        }));
    }
    std::mem::forget(head);
}

#[inline(never)]
fn lose_rc_cycle() {
    let a = Rc::new(CycleNode {
        other: RefCell::new(None),
        tag: [1, 2],
    });
    let b = Rc::new(CycleNode {
        other: RefCell::new(Some(a.clone())),
        tag: [3, 4],
    });
    *a.other.borrow_mut() = Some(b.clone());
    black_box((&a.tag, &b.tag));
}

#[inline(never)]
fn hold_interior_pointer() {
    let block = Box::into_raw(Box::new([3u8; 2016])) as usize;
    INTERIOR.store(block + 8, Ordering::SeqCst);
}

#[inline(never)]
fn hold_into_raw() {
    let arc = Arc::new([4u8; 2008]);
    INTO_RAW.store(Arc::into_raw(arc) as usize, Ordering::SeqCst);
}

#[inline(never)]
fn hold_tagged_pointer() {
    let block = Box::into_raw(Box::new([5u8; 2032])) as usize;
    TAGGED.store(block | 1, Ordering::SeqCst);
}

#[inline(never)]
fn hold_map() {
    let mut map = HashMap::new();
    for key in 0..10u64 {
        map.insert(key, Box::new([key as u8; 2040]));
    }
    *MAP.lock().unwrap_or_else(|e| e.into_inner()) = Some(map);
}

/// Overwrites the stack below the caller with zeros, so no stale copy of a
/// pointer the shapes above meant to lose survives in a dead frame.
#[inline(never)]
fn scrub_stack() {
    let zeros = black_box([0u64; 16 * 1024]);
    black_box(&zeros);
}

/// The dump path from the command line. Parsed in a frame of its own: the
/// argument vector's buffer is freed right away and its 48-byte block is
/// reused by a later allocation, so a stale copy of its address left in
/// `main`'s frame would (rightly, for a conservative scan) keep that
/// allocation reachable.
#[inline(never)]
fn dump_path() -> Option<String> {
    std::env::args().nth(1)
}

fn main() {
    let Some(path) = dump_path() else {
        eprintln!("usage: leaks DUMP_PATH");
        std::process::exit(2);
    };
    hold_in_static();
    lose_one_block();
    lose_list_head();
    lose_rc_cycle();
    hold_interior_pointer();
    hold_into_raw();
    hold_tagged_pointer();
    hold_map();
    scrub_stack();

    if let Err(error) = heapdump_capture::dump_to_path(&path) {
        eprintln!("leaks: cannot write {path}: {error}");
        std::process::exit(1);
    }
    black_box((
        REACHABLE.load(Ordering::SeqCst),
        INTERIOR.load(Ordering::SeqCst),
        INTO_RAW.load(Ordering::SeqCst),
        TAGGED.load(Ordering::SeqCst),
    ));
    // Exit here, without returning from main: the leak check valgrind runs
    // at exit then sees the same stack and statics the dump saw.
    std::process::exit(0);
}
