//! The full heap snapshot: stop the world, roots, and the conservative scan.
//!
//! Each test builds a heap on purpose (a linked list held by a static, a
//! tree held by a parked thread's local, a `Vec` of boxes, an `Rc` cycle, a
//! hash map, an `Arc` shared by two threads, a thread-local, a block whose
//! last pointer was overwritten) and checks the exact edges (source, target,
//! offsets) and root kinds and owners the dump records for it. Then the
//! robustness side: sixteen threads relinking lists while 200 dumps are
//! written, a thread that blocks every signal, threads that cannot be
//! stopped moving mapped blocks while dumps run, and a program that handles
//! the stop signal (`SIGPWR`) itself.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::hint::black_box;
use std::mem::offset_of;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

mod common;

use heapdump_capture::{DumpStats, Mode, Tracker};
use heapdump_formats::read::{Dump, DumpView};
use heapdump_formats::records::{
    AllocationRecord, EdgeRecord, RootRecord, edge_flags, module_flags, owner_kind, process_flags,
    root_kind, thread_flags,
};

#[global_allocator]
static ALLOCATOR: Tracker = Tracker::system();

/// The tests share one process (its threads, its signal dispositions, its
/// heap), so they run one after another on the main thread
/// (`harness = false`): libtest's own threads would be stopped, scanned and
/// counted too.
fn main() {
    let tests: [(&str, fn()); 13] = [
        (
            "fork_and_stop_dumps_of_the_same_heap_record_the_same_blocks_and_edges",
            fork_and_stop_dumps_of_the_same_heap_record_the_same_blocks_and_edges,
        ),
        (
            "linked_list_held_by_a_static_has_99_next_edges_and_a_data_segment_root",
            linked_list_held_by_a_static_has_99_next_edges_and_a_data_segment_root,
        ),
        (
            "tree_held_by_a_parked_threads_local_is_rooted_by_that_thread",
            tree_held_by_a_parked_threads_local_is_rooted_by_that_thread,
        ),
        (
            "vec_of_boxes_has_one_edge_per_element_at_offsets_0_8_16",
            vec_of_boxes_has_one_edge_per_element_at_offsets_0_8_16,
        ),
        (
            "rc_cycle_without_handles_has_edges_only_from_its_partner",
            rc_cycle_without_handles_has_edges_only_from_its_partner,
        ),
        (
            "hash_map_table_has_an_edge_to_every_boxed_value",
            hash_map_table_has_an_edge_to_every_boxed_value,
        ),
        (
            "arc_shared_by_two_threads_is_rooted_by_both",
            arc_shared_by_two_threads_is_rooted_by_both,
        ),
        (
            "value_held_only_by_a_thread_local_has_a_tls_root",
            value_held_only_by_a_thread_local_has_a_tls_root,
        ),
        (
            "block_whose_last_pointer_was_overwritten_has_no_incoming_edges",
            block_whose_last_pointer_was_overwritten_has_no_incoming_edges,
        ),
        (
            "sixteen_threads_relinking_lists_while_200_dumps_are_written",
            sixteen_threads_relinking_lists_while_200_dumps_are_written,
        ),
        (
            "thread_with_all_signals_blocked_is_not_stopped_and_the_dump_finishes",
            thread_with_all_signals_blocked_is_not_stopped_and_the_dump_finishes,
        ),
        (
            "programs_own_sigpwr_handler_keeps_working_across_dumps",
            programs_own_sigpwr_handler_keeps_working_across_dumps,
        ),
        (
            "threads_that_cannot_be_stopped_moving_mapped_blocks_never_fault_a_dump",
            threads_that_cannot_be_stopped_moving_mapped_blocks_never_fault_a_dump,
        ),
    ];
    // A test's frame lies where the previous test's frame was: clear it,
    // so no stale pointer from an earlier test (to a block that has been
    // freed, and whose address a later test's block may reuse) is scanned
    // as a root.
    // Every test in both modes: a fork child's snapshot must record the
    // same heap, edges and roots as a stopped world.
    for mode in [Mode::Stop, Mode::Fork] {
        println!("mode={}", mode.name());
        common::set_mode(mode);
        common::run_tests(&tests, scrub_stack);
    }
}

// ---------------------------------------------------------------------------
// Dumping and reading back

/// One dump in each mode of a heap that does not change in between (no
/// allocation happens between them: the files are made first, read after):
/// the same blocks, the same edges between blocks, the same edges from
/// data segments. Only the dumping thread's own stack and registers may
/// differ (they are two different calls).
fn fork_and_stop_dumps_of_the_same_heap_record_the_same_blocks_and_edges() {
    let ring: Vec<Box<[usize; 4]>> = (0..64).map(|i| Box::new([i, 0, 0, 0])).collect();
    let mut ring = ring;
    for i in 0..ring.len() {
        let next = &*ring[(i + 1) % 64] as *const [usize; 4] as usize;
        ring[i][1] = next;
        ring[i][3] = next + 16;
    }
    let (stop_file, fork_file) = (common::tempfile(), common::tempfile());
    let stop = heapdump_capture::write_heap_dump_with(stop_file.as_fd(), Mode::Stop).unwrap();
    let fork = heapdump_capture::write_heap_dump_with(fork_file.as_fd(), Mode::Fork).unwrap();
    black_box(&ring);
    assert_eq!((stop.mode, fork.mode), (Mode::Stop, Mode::Fork));
    let stop = parse(common::read_back(&stop_file), &stop);
    let fork = parse(common::read_back(&fork_file), &fork);
    let (stop, fork) = (stop.view(), fork.view());
    let blocks = |view: &DumpView<'_>| -> Vec<(u64, u64, u32, u64)> {
        view.allocations()
            .iter()
            .map(|a| (a.address, a.size, a.stack, a.sequence))
            .collect()
    };
    assert_eq!(blocks(&stop), blocks(&fork));
    let heap_and_data_edges = |view: &DumpView<'_>| -> BTreeSet<(u64, u64, u64, u64, bool)> {
        let allocations: Vec<AllocationRecord> = view.allocations().iter().collect();
        view.edges()
            .iter()
            .filter_map(|e| {
                let source = if from_root(&e) {
                    let root = root(view, e.source);
                    (root.kind == root_kind::DATA_SEGMENT).then_some(root.address)?
                } else {
                    allocations[e.source as usize].address
                };
                let target = allocations[e.target as usize].address;
                Some((
                    source,
                    e.source_offset,
                    target,
                    e.target_offset,
                    from_root(&e),
                ))
            })
            .collect()
    };
    let (stop_edges, fork_edges) = (heap_and_data_edges(&stop), heap_and_data_edges(&fork));
    assert_eq!(stop_edges, fork_edges);
    // The ring's 128 edges are among them.
    let ring_edges = stop_edges
        .iter()
        .filter(|e| !e.4 && ring.iter().any(|b| &**b as *const _ as u64 == e.0))
        .count();
    assert_eq!(ring_edges, 128);
}

fn dump_with_stats() -> (Vec<u8>, DumpStats) {
    common::dump_with_stats()
}

/// Parses, verifies, and checks that the `DumpStats` the writer returned
/// agree with the records it wrote.
fn parse(bytes: Vec<u8>, stats: &DumpStats) -> Dump {
    let dump = common::parse_and_verify(bytes);
    let view = dump.view();
    let process = view.process();
    assert_ne!(
        process.flags & process_flags::HAS_SCAN,
        0,
        "HAS_SCAN is not set (process flags {:#x})",
        process.flags
    );
    assert_eq!(
        process.flags & process_flags::FORKED != 0,
        stats.mode == Mode::Fork,
        "FORKED (process flags {:#x}) disagrees with the mode",
        process.flags
    );
    assert_eq!(
        process.pid,
        std::process::id(),
        "a fork child wrote its own pid"
    );
    assert_eq!(stats.roots, view.roots().len() as u64, "DumpStats.roots");
    assert_eq!(stats.edges, view.edges().len() as u64, "DumpStats.edges");
    let count = |flag: u32| {
        view.threads()
            .iter()
            .filter(|t| t.flags & flag != 0)
            .count() as u64
    };
    assert_eq!(
        stats.threads_stopped,
        count(thread_flags::STOPPED),
        "DumpStats.threads_stopped"
    );
    assert_eq!(
        stats.threads_not_stopped,
        count(thread_flags::NOT_STOPPED),
        "DumpStats.threads_not_stopped"
    );
    assert_eq!(
        process.flags & process_flags::INCOMPLETE_STOP != 0,
        stats.threads_not_stopped > 0,
        "INCOMPLETE_STOP (process flags {:#x}) disagrees with {} threads not stopped",
        process.flags,
        stats.threads_not_stopped
    );
    // The scan reads every root and every live allocation, word by word.
    let ranges = view
        .allocations()
        .iter()
        .map(|a| a.size)
        .chain(view.roots().iter().map(|r| r.size));
    let (words, all) = ranges.fold((0, 0), |(w, b), size| (w + size / 8 * 8, b + size));
    assert!(
        (words..=all).contains(&stats.scanned_bytes),
        "DumpStats.scanned_bytes {} is outside {words}..={all} (aligned words .. all bytes of \
         allocations and roots)",
        stats.scanned_bytes
    );
    for thread in view.threads().iter() {
        let stopped = thread.flags & thread_flags::STOPPED != 0;
        let not_stopped = thread.flags & thread_flags::NOT_STOPPED != 0;
        assert!(!(stopped && not_stopped), "thread {} is both", thread.tid);
        if thread.flags & thread_flags::ALIVE == 0 {
            assert!(
                !stopped && !not_stopped,
                "dead thread {} stopped",
                thread.tid
            );
        }
        if thread.flags & thread_flags::DUMPING != 0 {
            assert!(
                !stopped && !not_stopped,
                "the dumping thread stopped itself"
            );
        }
    }
    dump
}

fn snapshot() -> (Dump, DumpStats) {
    let (bytes, stats) = dump_with_stats();
    (parse(bytes, &stats), stats)
}

/// Index of the allocation that starts exactly at `address`.
fn allocation_at(view: &DumpView<'_>, address: usize) -> u32 {
    let index =
        containing(view, address).unwrap_or_else(|| panic!("no allocation contains {address:#x}"));
    let record = view.allocations().get(index as usize).unwrap();
    assert_eq!(
        record.address, address as u64,
        "{address:#x} is inside a block, not at its start"
    );
    index
}

/// Index of the allocation that contains `address`.
fn containing(view: &DumpView<'_>, address: usize) -> Option<u32> {
    let allocations = view.allocations();
    let address = address as u64;
    let (mut low, mut high) = (0, allocations.len());
    while low < high {
        let middle = (low + high) / 2;
        if allocations.get(middle)?.address <= address {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let candidate = allocations.get(low.checked_sub(1)?)?;
    (address < candidate.address + candidate.size).then_some(low as u32 - 1)
}

fn record(view: &DumpView<'_>, index: u32) -> AllocationRecord {
    view.allocations().get(index as usize).unwrap()
}

fn root(view: &DumpView<'_>, index: u32) -> RootRecord {
    view.roots().get(index as usize).unwrap()
}

fn from_root(edge: &EdgeRecord) -> bool {
    edge.flags & edge_flags::FROM_ROOT != 0
}

fn edges_into(view: &DumpView<'_>, target: u32) -> Vec<EdgeRecord> {
    view.edges().iter().filter(|e| e.target == target).collect()
}

fn edges_out_of_allocation(view: &DumpView<'_>, source: u32) -> Vec<EdgeRecord> {
    view.edges()
        .iter()
        .filter(|e| !from_root(e) && e.source == source)
        .collect()
}

/// The index of the live thread `tid`.
fn thread_index(view: &DumpView<'_>, tid: u32) -> u32 {
    view.threads()
        .iter()
        .position(|t| t.tid == tid && t.flags & thread_flags::ALIVE != 0)
        .unwrap_or_else(|| panic!("thread {tid} is not in the dump as alive")) as u32
}

fn dumping_thread_index(view: &DumpView<'_>) -> u32 {
    let dumping: Vec<usize> = view
        .threads()
        .iter()
        .enumerate()
        .filter(|(_, t)| t.flags & thread_flags::DUMPING != 0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(dumping.len(), 1, "threads flagged DUMPING");
    dumping[0] as u32
}

/// Root edges into `target` from roots of `kinds` owned by thread `owner`.
fn thread_root_edges(
    view: &DumpView<'_>,
    target: u32,
    owner: u32,
    kinds: &[u16],
) -> Vec<(RootRecord, EdgeRecord)> {
    edges_into(view, target)
        .into_iter()
        .filter(from_root)
        .map(|e| (root(view, e.source), e))
        .filter(|(r, _)| {
            r.owner_kind == owner_kind::THREAD && r.owner == owner && kinds.contains(&r.kind)
        })
        .collect()
}

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Overwrites the part of the stack that the functions called before (the
/// ones that built a heap structure) used, so stale copies of their
/// pointers do not become conservative roots.
#[inline(never)]
fn scrub_stack() {
    let mut junk = [0u64; 16 * 1024];
    black_box(&mut junk);
}

/// The raw pointer word an `Rc` or `Arc` stores, minus the address of its
/// value (`Rc::as_ptr`): how far before the value the pointer points.
fn pointer_word<P>(handle: &P, value: usize) -> isize {
    assert_eq!(size_of::<P>(), 8);
    // SAFETY: `P` is a single pointer (checked above); its bits are read
    // as an integer.
    let word = unsafe { std::mem::transmute_copy::<P, usize>(handle) };
    word as isize - value as isize
}

// ---------------------------------------------------------------------------
// A thread that waits in `read(2)` on an empty pipe

struct Parked<I> {
    tid: u32,
    info: I,
    wake_fd: i32,
    read_fd: i32,
    handle: std::thread::JoinHandle<()>,
}

/// Spawns a thread that runs `setup`, reports its tid and the first half of
/// what `setup` returned, then blocks in `read()` on an empty pipe while
/// holding the second half in a local variable.
fn park<I, K, F>(setup: F) -> Parked<I>
where
    I: Send + 'static,
    K: 'static,
    F: FnOnce() -> (I, K) + Send + 'static,
{
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let piped = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(piped, 0, "pipe2 failed");
    let (read_fd, wake_fd) = (fds[0], fds[1]);
    let (sender, receiver) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let (info, keep) = setup();
        sender.send((gettid(), info)).unwrap();
        drop(sender);
        block_in_read(read_fd);
        black_box(&keep);
        drop(keep);
    });
    let (tid, info) = receiver.recv().expect("the parked thread died");
    wait_until_blocked(tid);
    Parked {
        tid,
        info,
        wake_fd,
        read_fd,
        handle,
    }
}

impl<I> Parked<I> {
    fn wake(self) {
        // SAFETY: writes one byte from a local to the pipe this thread owns.
        let written = unsafe { libc::write(self.wake_fd, b"x".as_ptr().cast(), 1) };
        assert_eq!(written, 1);
        self.handle.join().expect("the parked thread panicked");
        // SAFETY: both descriptors belong to this `Parked` and are closed once.
        unsafe {
            libc::close(self.wake_fd);
            libc::close(self.read_fd);
        }
    }
}

fn block_in_read(fd: i32) {
    loop {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a local.
        let got = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
        if got == 1 {
            return;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.raw_os_error(),
            Some(libc::EINTR),
            "read failed: {error}"
        );
    }
}

/// Waits until thread `tid` sleeps in the kernel (state S), so the dump
/// finds it parked rather than on its way there.
fn wait_until_blocked(tid: u32) {
    for _ in 0..2000 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .expect("cannot read the thread's stat");
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next());
        if state == Some("S") {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("thread {tid} never blocked");
}

// ---------------------------------------------------------------------------
// 1. A linked list held by a static

struct Node {
    value: u64,
    next: Option<Box<Node>>,
    pad: [u8; 1213],
}

static HEAD: AtomicPtr<Node> = AtomicPtr::new(std::ptr::null_mut());

fn linked_list_held_by_a_static_has_99_next_edges_and_a_data_segment_root() {
    assert_eq!(
        size_of::<Option<Box<Node>>>(),
        8,
        "Option<Box> is a plain pointer"
    );
    assert_eq!(size_of::<Node>(), 1232);
    let next_offset = offset_of!(Node, next) as u64;
    let mut head = None;
    for value in (0..100).rev() {
        head = Some(Box::new(Node {
            value,
            next: head,
            pad: [0xA5; 1213],
        }));
    }
    HEAD.store(Box::into_raw(head.unwrap()), Ordering::Release);
    let mut addresses = Vec::with_capacity(100);
    let mut node = HEAD.load(Ordering::Acquire) as *const Node;
    while !node.is_null() {
        addresses.push(node as usize);
        // SAFETY: the list is alive (HEAD owns it) and nothing mutates it.
        let current = unsafe { &*node };
        assert_eq!(current.value, addresses.len() as u64 - 1);
        black_box(&current.pad);
        node = current
            .next
            .as_deref()
            .map_or(std::ptr::null(), |n| n as *const Node);
    }
    assert_eq!(addresses.len(), 100);

    let (dump, _) = snapshot();
    let view = dump.view();
    let nodes: Vec<u32> = addresses.iter().map(|&a| allocation_at(&view, a)).collect();
    for &index in &nodes {
        assert_eq!(record(&view, index).size, 1232);
    }
    // Out of every node: exactly its `next` pointer (the last has none).
    for (i, &index) in nodes.iter().enumerate() {
        let out = edges_out_of_allocation(&view, index);
        let expected: Vec<(u32, u64, u64)> = nodes
            .get(i + 1)
            .map(|&next| (next, next_offset, 0))
            .into_iter()
            .collect();
        let seen: Vec<(u32, u64, u64)> = out
            .iter()
            .map(|e| (e.target, e.source_offset, e.target_offset))
            .collect();
        assert_eq!(seen, expected, "edges out of node {i}");
    }
    let node_to_node = view
        .edges()
        .iter()
        .filter(|e| !from_root(e) && nodes.contains(&e.source) && nodes.contains(&e.target))
        .count();
    assert_eq!(node_to_node, 99);
    // Every node but the first has exactly one incoming edge from the heap.
    for (i, &index) in nodes.iter().enumerate().skip(1) {
        let incoming: Vec<EdgeRecord> = edges_into(&view, index)
            .into_iter()
            .filter(|e| !from_root(e) && e.source != nodes[i - 1])
            .filter(|e| {
                // The `addresses` vector above holds every node too.
                record(&view, e.source).address != addresses.as_ptr() as u64
            })
            .collect();
        assert!(
            incoming.is_empty(),
            "node {i} has other incoming edges: {incoming:?}"
        );
    }
    // The static: a DATA_SEGMENT root of the executable, at HEAD's offset.
    let head_address = &raw const HEAD as u64;
    let from_static: Vec<(RootRecord, EdgeRecord)> = edges_into(&view, nodes[0])
        .into_iter()
        .filter(from_root)
        .map(|e| (root(&view, e.source), e))
        .filter(|(r, _)| r.kind == root_kind::DATA_SEGMENT)
        .collect();
    assert_eq!(
        from_static.len(),
        1,
        "DATA_SEGMENT edges into the head node: {from_static:?}"
    );
    let (segment, edge) = from_static[0];
    assert_eq!(segment.owner_kind, owner_kind::MODULE);
    let module = view.modules().get(segment.owner as usize).unwrap();
    assert_ne!(module.flags & module_flags::MAIN_EXECUTABLE, 0);
    assert!(segment.address <= head_address && head_address + 8 <= segment.address + segment.size);
    assert_eq!(edge.source_offset, head_address - segment.address);
    assert_eq!(edge.target_offset, 0);
    // The root is a writable PT_LOAD of that module.
    assert!(
        view.segments().iter().any(|s| s.module == segment.owner
            && s.flags & 2 != 0
            && s.start <= segment.address
            && segment.address + segment.size <= s.end.next_multiple_of(4096)),
        "the DATA_SEGMENT root {segment:?} is not inside a writable segment of its module"
    );

    // SAFETY: HEAD owned the list; it is taken back once.
    drop(unsafe { Box::from_raw(HEAD.swap(std::ptr::null_mut(), Ordering::AcqRel)) });
}

// ---------------------------------------------------------------------------
// 2. A tree held by a parked thread's local

struct TreeNode {
    left: Option<Box<TreeNode>>,
    right: Option<Box<TreeNode>>,
    tag: u64,
    pad: [u8; 333],
}

fn build_tree(depth: u32, tag: &mut u64) -> Box<TreeNode> {
    *tag += 1;
    let mine = *tag;
    let (left, right) = if depth > 1 {
        (
            Some(build_tree(depth - 1, tag)),
            Some(build_tree(depth - 1, tag)),
        )
    } else {
        (None, None)
    };
    Box::new(TreeNode {
        left,
        right,
        tag: mine,
        pad: [0x3C; 333],
    })
}

/// (node, left child or 0, right child or 0) for every node, root first.
fn tree_shape(node: &TreeNode, out: &mut Vec<(usize, usize, usize)>) {
    let address = |child: &Option<Box<TreeNode>>| {
        child
            .as_deref()
            .map_or(0, |c| c as *const TreeNode as usize)
    };
    out.push((
        node as *const TreeNode as usize,
        address(&node.left),
        address(&node.right),
    ));
    black_box((node.tag, &node.pad));
    for child in [&node.left, &node.right].into_iter().flatten() {
        tree_shape(child, out);
    }
}

fn tree_held_by_a_parked_threads_local_is_rooted_by_that_thread() {
    assert_eq!(size_of::<TreeNode>(), 360);
    let parked = park(|| {
        let tree = build_tree(5, &mut 0);
        let mut shape = Vec::with_capacity(31);
        tree_shape(&tree, &mut shape);
        (shape, tree)
    });
    let shape = &parked.info;
    assert_eq!(shape.len(), 31);

    let (dump, stats) = snapshot();
    let view = dump.view();
    assert_ne!(view.process().flags & process_flags::WORLD_STOPPED, 0);
    assert_eq!(stats.threads_not_stopped, 0);
    let thread = thread_index(&view, parked.tid);
    let record_of_thread = view.threads().get(thread as usize).unwrap();
    assert_ne!(
        record_of_thread.flags & thread_flags::STOPPED,
        0,
        "the parked thread"
    );
    assert!(
        record_of_thread.stack_low < record_of_thread.stack_pointer
            && record_of_thread.stack_pointer < record_of_thread.stack_high,
        "stack pointer outside the stack: {record_of_thread:?}"
    );
    // Its roots: saved registers, and the stack from sp - 128 to the top.
    let roots: Vec<RootRecord> = view
        .roots()
        .iter()
        .filter(|r| r.owner_kind == owner_kind::THREAD && r.owner == thread)
        .collect();
    let registers: Vec<&RootRecord> = roots
        .iter()
        .filter(|r| r.kind == root_kind::REGISTERS)
        .collect();
    assert_eq!(
        registers.len(),
        1,
        "REGISTERS roots of the thread: {roots:?}"
    );
    assert_eq!(registers[0].address, 0);
    assert!(
        registers[0].size >= 8 * 16 && registers[0].size.is_multiple_of(8),
        "{:?}",
        registers[0]
    );
    let stacks: Vec<&RootRecord> = roots
        .iter()
        .filter(|r| r.kind == root_kind::THREAD_STACK)
        .collect();
    assert_eq!(
        stacks.len(),
        1,
        "THREAD_STACK roots of the thread: {roots:?}"
    );
    assert_eq!(stacks[0].address, record_of_thread.stack_pointer - 128);
    assert_eq!(
        stacks[0].address + stacks[0].size,
        record_of_thread.stack_high
    );

    let nodes: Vec<u32> = shape
        .iter()
        .map(|&(a, _, _)| allocation_at(&view, a))
        .collect();
    let root_node = nodes[0];
    let rooted = thread_root_edges(
        &view,
        root_node,
        thread,
        &[root_kind::THREAD_STACK, root_kind::REGISTERS],
    );
    assert!(
        rooted.iter().any(|(_, e)| e.target_offset == 0),
        "no stack or register root of thread {} points at the tree's root; edges into it: \
         {:?}",
        parked.tid,
        edges_into(&view, root_node)
    );
    // The tree inside: exactly left and right pointers.
    let left = offset_of!(TreeNode, left) as u64;
    let right = offset_of!(TreeNode, right) as u64;
    let mut internal = 0;
    for (i, &(_, l, r)) in shape.iter().enumerate() {
        let mut expected = Vec::new();
        for (child, offset) in [(l, left), (r, right)] {
            if child != 0 {
                expected.push((allocation_at(&view, child), offset, 0));
            }
        }
        expected.sort_by_key(|&(_, offset, _)| offset);
        let seen: Vec<(u32, u64, u64)> = edges_out_of_allocation(&view, nodes[i])
            .iter()
            .map(|e| (e.target, e.source_offset, e.target_offset))
            .collect();
        assert_eq!(seen, expected, "edges out of tree node {i}");
        internal += seen.len();
    }
    assert_eq!(internal, 30);
    drop(dump);
    parked.wake();
}

// ---------------------------------------------------------------------------
// 3. A Vec of boxes

fn vec_of_boxes_has_one_edge_per_element_at_offsets_0_8_16() {
    let mut boxes: Vec<Box<[u64; 37]>> = Vec::with_capacity(50);
    for i in 0..50 {
        boxes.push(Box::new([i; 37]));
    }
    assert_eq!(boxes.capacity(), 50);
    let (dump, _) = snapshot();
    let view = dump.view();
    let buffer = allocation_at(&view, boxes.as_ptr() as usize);
    assert_eq!(record(&view, buffer).size, 400);
    let targets: Vec<u32> = boxes
        .iter()
        .map(|b| allocation_at(&view, &**b as *const [u64; 37] as usize))
        .collect();
    let seen: Vec<(u64, u32, u64)> = edges_out_of_allocation(&view, buffer)
        .iter()
        .map(|e| (e.source_offset, e.target, e.target_offset))
        .collect();
    let expected: Vec<(u64, u32, u64)> = targets
        .iter()
        .enumerate()
        .map(|(i, &t)| (8 * i as u64, t, 0))
        .collect();
    assert_eq!(seen, expected);
    for &target in &targets {
        assert_eq!(record(&view, target).size, 296);
        assert!(edges_out_of_allocation(&view, target).is_empty());
        let from_heap: Vec<u32> = edges_into(&view, target)
            .iter()
            .filter(|e| !from_root(e))
            .map(|e| e.source)
            .collect();
        assert_eq!(from_heap, [buffer]);
    }
    drop(dump);
    drop(boxes);
}

// ---------------------------------------------------------------------------
// 4. An Rc cycle with no handle outside it

struct CycleNode {
    other: RefCell<Option<Rc<CycleNode>>>,
    pad: [u8; 431],
}

/// Builds a → b → a and drops both handles: the strong counts stay at one,
/// so the pair leaks. Returns the two value addresses bit-inverted (so no
/// copy of them is a pointer), the offset of `other` in the value, and where
/// an `Rc`'s pointer word points relative to the value.
#[inline(never)]
fn make_rc_cycle() -> [usize; 4] {
    let a = Rc::new(CycleNode {
        other: RefCell::new(None),
        pad: [0x11; 431],
    });
    let b = Rc::new(CycleNode {
        other: RefCell::new(Some(a.clone())),
        pad: [0x22; 431],
    });
    *a.other.borrow_mut() = Some(b.clone());
    black_box((&a.pad, &b.pad));
    let value_a = Rc::as_ptr(&a) as usize;
    let value_b = Rc::as_ptr(&b) as usize;
    let field = a.other.as_ptr() as usize - value_a;
    let word = pointer_word(&a, value_a);
    drop(a);
    drop(b);
    [!value_a, !value_b, field, word as usize]
}

fn rc_cycle_without_handles_has_edges_only_from_its_partner() {
    let [hidden_a, hidden_b, field, word] = make_rc_cycle();
    scrub_stack();
    let (dump, _) = snapshot();
    let view = dump.view();
    let (value_a, value_b) = (!hidden_a, !hidden_b);
    let a = containing(&view, value_a).expect("the cycle's first block is not live");
    let b = containing(&view, value_b).expect("the cycle's second block is not live");
    let start_a = record(&view, a).address as usize;
    let start_b = record(&view, b).address as usize;
    // RcInner { strong, weak, value }.
    assert_eq!(value_a - start_a, 16);
    assert_eq!(value_b - start_b, 16);
    assert_eq!(record(&view, a).size, 16 + size_of::<CycleNode>() as u64);
    let target_offset = (16 + word as isize) as u64;
    assert!(
        target_offset == 0 || target_offset == 16,
        "an Rc points {target_offset} bytes into its block"
    );
    println!("  (an Rc points {target_offset} bytes into its RcInner block)");
    for (node, partner) in [(a, b), (b, a)] {
        let incoming: Vec<(bool, u32, u64, u64)> = edges_into(&view, node)
            .iter()
            .map(|e| (from_root(e), e.source, e.source_offset, e.target_offset))
            .collect();
        // No root: the handles were dropped and the stack scrubbed, so not
        // even a stale copy of the pointers is left in a register or on a
        // stack.
        assert_eq!(
            incoming,
            [(false, partner, 16 + field as u64, target_offset)],
            "edges into the cycle block {node} (roots: {:?}; threads: {:?})",
            view.roots().iter().collect::<Vec<_>>(),
            view.threads().iter().collect::<Vec<_>>()
        );
        let out: Vec<(u32, u64, u64)> = edges_out_of_allocation(&view, node)
            .iter()
            .map(|e| (e.target, e.source_offset, e.target_offset))
            .collect();
        assert_eq!(out, [(partner, 16 + field as u64, target_offset)]);
    }
}

// ---------------------------------------------------------------------------
// 5. A HashMap of boxes

fn hash_map_table_has_an_edge_to_every_boxed_value() {
    // One table allocation, made before the boxes, so it cannot hold stale
    // pointers to them from an earlier, smaller table. Its empty buckets
    // are never written, so the chunk it reuses is first handed out zeroed
    // and freed: now that C allocations are blocks too, a chunk last used
    // by the C library may hold a word pointing at one of them. (128
    // buckets of 16 bytes plus 144 control bytes: 2192; glibc gives a
    // freed chunk of exactly the size asked back to the next request.)
    drop(std::hint::black_box(vec![0u8; 2192]));
    let mut map: HashMap<u64, Box<[u64; 41]>> = HashMap::with_capacity(100);
    let capacity = map.capacity();
    for key in 0..100u64 {
        map.insert(key * 3 + 1, Box::new([key; 41]));
    }
    assert_eq!(map.capacity(), capacity, "the table grew");
    let (dump, _) = snapshot();
    let view = dump.view();
    let slot = |key: u64| map.get(&key).unwrap() as *const Box<[u64; 41]> as usize;
    let table = containing(&view, slot(1)).expect("the map's table is not an allocation");
    let table_start = record(&view, table).address as usize;
    let mut expected: Vec<(u64, u32, u64)> = map
        .iter()
        .map(|(key, value)| {
            let target = allocation_at(&view, &**value as *const [u64; 41] as usize);
            assert_eq!(record(&view, target).size, 328);
            assert_eq!(containing(&view, slot(*key)), Some(table));
            ((slot(*key) - table_start) as u64, target, 0)
        })
        .collect();
    expected.sort();
    let seen: Vec<(u64, u32, u64)> = edges_out_of_allocation(&view, table)
        .iter()
        .map(|e| (e.source_offset, e.target, e.target_offset))
        .collect();
    assert_eq!(seen.len(), map.len(), "edges out of the table: {seen:?}");
    assert_eq!(seen, expected);
    drop(dump);
    drop(map);
}

// ---------------------------------------------------------------------------
// 6. An Arc shared between threads

fn arc_shared_by_two_threads_is_rooted_by_both() {
    let shared: Arc<[u64; 23]> = Arc::new([23; 23]);
    let value = Arc::as_ptr(&shared) as usize;
    let word = pointer_word(&shared, value);
    let theirs = shared.clone();
    let parked = park(move || ((), theirs));

    let (dump, _) = snapshot();
    let view = dump.view();
    let inner = containing(&view, value).expect("the ArcInner block is not live");
    let start = record(&view, inner).address as usize;
    assert_eq!(value - start, 16, "ArcInner {{ strong, weak, data }}");
    assert_eq!(record(&view, inner).size, 16 + 8 * 23);
    let target_offset = (16 + word) as u64;
    assert!(
        target_offset == 0 || target_offset == 16,
        "an Arc points {target_offset} bytes into its block"
    );
    println!("  (an Arc points {target_offset} bytes into its ArcInner block)");
    let kinds = [root_kind::THREAD_STACK, root_kind::REGISTERS];
    for (who, thread) in [
        ("the parked thread", thread_index(&view, parked.tid)),
        ("the dumping thread", dumping_thread_index(&view)),
    ] {
        let rooted = thread_root_edges(&view, inner, thread, &kinds);
        assert!(
            rooted.iter().any(|(_, e)| e.target_offset == target_offset),
            "{who} does not root the Arc at offset {target_offset}; edges into it: {:?}",
            edges_into(&view, inner)
        );
    }
    drop(dump);
    parked.wake();
    black_box(&shared);
    assert_eq!(Arc::strong_count(&shared), 1);
}

// ---------------------------------------------------------------------------
// 7. A value reachable only from a thread-local

thread_local! {
    static SLOT: RefCell<Option<Box<[u64; 29]>>> = const { RefCell::new(None) };
}

fn value_held_only_by_a_thread_local_has_a_tls_root() {
    let parked = park(|| {
        let (slot, value) = SLOT.with(|slot| {
            *slot.borrow_mut() = Some(Box::new([29; 29]));
            let value = slot.borrow().as_deref().map(|b| b as *const _ as usize);
            (slot.as_ptr() as usize, value.unwrap())
        });
        // Inverted, so the report itself holds no pointer to the value.
        ([!slot, !value], ())
    });
    let [slot, value] = parked.info.map(|hidden| !hidden);

    let (dump, _) = snapshot();
    let view = dump.view();
    let thread = thread_index(&view, parked.tid);
    assert_ne!(
        view.threads().get(thread as usize).unwrap().flags & thread_flags::STOPPED,
        0
    );
    let target = allocation_at(&view, value);
    assert_eq!(record(&view, target).size, 8 * 29);
    let tls = thread_root_edges(
        &view,
        target,
        thread,
        &[root_kind::STATIC_TLS, root_kind::DYNAMIC_TLS],
    );
    assert_eq!(
        tls.len(),
        1,
        "TLS roots of thread {} into the value: {tls:?}; all edges into it: {:?}",
        parked.tid,
        edges_into(&view, target)
    );
    let (block, edge) = tls[0];
    // `Option<Box<T>>` is the box pointer itself, at the RefCell's value.
    assert_eq!(block.address + edge.source_offset, slot as u64);
    assert_eq!(edge.target_offset, 0);
    drop(dump);
    parked.wake();
}

// ---------------------------------------------------------------------------
// 8. A block whose last pointer was overwritten

/// Size of the orphan: large enough that glibc maps it on its own, at an
/// address no earlier test's stale data can point into (a small size class
/// reuses blocks whose old addresses may survive in freed-then-reused
/// memory, which a conservative scan rightly reports).
const ORPHAN_SIZE: usize = (1 << 20) + 1753;

/// Leaks a block, then overwrites the only pointer to it. Returns its
/// address bit-inverted.
#[inline(never)]
fn make_orphan() -> usize {
    let mut pointer = Box::into_raw(vec![0x5Au8; ORPHAN_SIZE].into_boxed_slice()) as *mut u8;
    let hidden = !(pointer as usize);
    // SAFETY: `pointer` is a local; the writes go to it.
    unsafe { std::ptr::write_volatile(&mut pointer, std::ptr::null_mut()) };
    black_box(&mut pointer);
    hidden
}

fn block_whose_last_pointer_was_overwritten_has_no_incoming_edges() {
    let hidden = black_box(make_orphan());
    scrub_stack();
    let (dump, _) = snapshot();
    let view = dump.view();
    let orphan = allocation_at(&view, !hidden);
    assert_eq!(record(&view, orphan).size, ORPHAN_SIZE as u64);
    // No copy of the overwritten pointer (to the block's start) is found.
    // A word elsewhere may still hold a value inside this megabyte: a
    // static or the C library's own state left pointing into memory the
    // block reuses. A conservative scan counts those, as memcheck does.
    let to_start: Vec<EdgeRecord> = edges_into(&view, orphan)
        .into_iter()
        .filter(|edge| edge.target_offset == 0)
        .collect();
    assert_eq!(to_start, []);
    assert_eq!(edges_out_of_allocation(&view, orphan), []);
}

// ---------------------------------------------------------------------------
// 9. Sixteen threads relinking lists while dumps are written

struct ChurnNode {
    value: u64,
    next: Option<Box<ChurnNode>>,
}

const LISTS: usize = 32;
const MAX_LENGTH: usize = 48;
const PACE: u64 = 4000;

/// A deterministic workload over `LISTS` linked lists: push, move a head to
/// another list, mutate in place, pop, drop a whole list. Runs `rounds`
/// rounds, or until `stop` when `rounds` is `None`. Returns the rounds run
/// and a checksum of everything popped and of the final lists. With `pace`
/// (dumps written so far), it waits after every `PACE` rounds until another
/// dump has been written.
fn churn(
    seed: u64,
    rounds: Option<u64>,
    stop: &AtomicBool,
    pace: Option<&AtomicU64>,
) -> (u64, u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut lists: Vec<Option<Box<ChurnNode>>> = (0..LISTS).map(|_| None).collect();
    let mut lengths = [0usize; LISTS];
    let mut checksum = 0u64;
    let mut mix = |value: u64| checksum = (checksum ^ value).wrapping_mul(0x100_0000_01B3);
    let mut done = 0;
    while rounds.map_or(!stop.load(Ordering::Relaxed), |r| done < r) {
        let r = next();
        let i = (r >> 8) as usize % LISTS;
        let j = (r >> 16) as usize % LISTS;
        match r % 5 {
            0 | 1 if lengths[i] < MAX_LENGTH => {
                let rest = lists[i].take();
                lists[i] = Some(Box::new(ChurnNode {
                    value: r >> 24,
                    next: rest,
                }));
                lengths[i] += 1;
            }
            2 if lengths[i] > 0 && lengths[j] < MAX_LENGTH && i != j => {
                let mut moved = lists[i].take().unwrap();
                lists[i] = moved.next.take();
                moved.next = lists[j].take();
                lists[j] = Some(moved);
                lengths[i] -= 1;
                lengths[j] += 1;
            }
            3 => {
                let mut node = lists[i].as_deref_mut();
                let mut steps = r >> 40 & 7;
                while let Some(current) = node {
                    current.value = current.value.wrapping_mul(31).wrapping_add(r & 0xFFFF);
                    if steps == 0 {
                        break;
                    }
                    steps -= 1;
                    node = current.next.as_deref_mut();
                }
            }
            _ if r % 211 == 0 => {
                let mut node = lists[i].take();
                while let Some(mut current) = node {
                    mix(current.value);
                    node = current.next.take();
                }
                lengths[i] = 0;
            }
            _ => {
                if let Some(mut head) = lists[i].take() {
                    mix(head.value);
                    lists[i] = head.next.take();
                    lengths[i] -= 1;
                }
            }
        }
        done += 1;
        if let Some(pace) = pace {
            // At most PACE rounds per dump written so far: the workers keep
            // churning through every dump without outrunning the main
            // thread, and the replay stays short. A sleep the stop signal
            // interrupts goes on.
            while done >= (pace.load(Ordering::Relaxed) + 1) * PACE && !stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
    for (index, list) in lists.iter_mut().enumerate() {
        let mut position = 0;
        let mut node = list.take();
        while let Some(mut current) = node {
            mix(current.value ^ (index as u64) << 56 ^ position << 48);
            position += 1;
            node = current.next.take();
        }
        assert_eq!(position, lengths[index] as u64);
    }
    (done, checksum)
}

fn sixteen_threads_relinking_lists_while_200_dumps_are_written() {
    const THREADS: u64 = 16;
    const DUMPS: usize = 200;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|seed| {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || churn(seed + 1, None, &stop, Some(&written)))
        })
        .collect();
    let mut edges = 0;
    let mut stopped = 0;
    let started = std::time::Instant::now();
    let (mut dumping_ns, mut stop_ns, mut scan_ns) = (0, 0, 0);
    for _ in 0..DUMPS {
        let (dump, stats) = snapshot();
        let view = dump.view();
        assert_ne!(view.process().flags & process_flags::WORLD_STOPPED, 0);
        edges += stats.edges;
        stopped += stats.threads_stopped;
        dumping_ns += stats.total_ns;
        stop_ns += stats.stop_ns;
        scan_ns += stats.scan_ns;
        written.fetch_add(1, Ordering::Relaxed);
    }
    let dumps_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(u64, u64)> = workers
        .into_iter()
        .map(|w| w.join().expect("a worker panicked"))
        .collect();
    // The same work with no dumps gives the same checksums.
    let replays: Vec<_> = (1..)
        .zip(results.clone())
        .map(|(seed, (rounds, _))| {
            std::thread::spawn(move || churn(seed, Some(rounds), &AtomicBool::new(false), None))
        })
        .collect();
    for ((seed, &(rounds, checksum)), replay) in (1..).zip(&results).zip(replays) {
        assert!(rounds > 0, "worker {seed} never ran");
        assert_eq!(
            replay.join().expect("a replay panicked"),
            (rounds, checksum),
            "worker {seed} computed something else while being dumped"
        );
    }
    let rounds: u64 = results.iter().map(|&(r, _)| r).sum();
    println!(
        "  ({DUMPS} dumps in {:.1} s ({:.1} s writing them, {:.1} s stopping, {:.1} s \
         scanning), {rounds} worker rounds, {} edges and {} threads stopped per dump on \
         average)",
        dumps_took.as_secs_f64(),
        dumping_ns as f64 / 1e9,
        stop_ns as f64 / 1e9,
        scan_ns as f64 / 1e9,
        edges / DUMPS as u64,
        stopped / DUMPS as u64
    );
}

// ---------------------------------------------------------------------------
// 10. A thread that blocks every signal

/// Threads a dump cannot stop keep reallocating blocks big enough for
/// glibc to `mmap` them, so a reallocation moves the block with `mremap`
/// and unmaps the old range. The dump must never scan a block whose range
/// a running thread may unmap (it would fault): a thread takes a block's
/// record out under its shard's lock before the inner allocator may move
/// it, and the dump holds every such lock.
fn threads_that_cannot_be_stopped_moving_mapped_blocks_never_fault_a_dump() {
    // A fixed threshold: glibc would otherwise raise it after the first
    // freed mapping and serve these sizes from its heap.
    // SAFETY: mallopt only changes glibc's tuning.
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10) };
    assert_eq!(set, 1);
    heapdump_capture::set_stop_timeout(Duration::from_millis(2));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(3));
    let workers: Vec<_> = (0..2u64)
        .map(|seed| {
            let (stop, started) = (stop.clone(), started.clone());
            std::thread::spawn(move || {
                common::block_all_signals();
                started.wait();
                let mut state = seed * 7919 + 1;
                let mut buffers: Vec<Vec<u8>> =
                    (0..4).map(|_| Vec::with_capacity(256 << 10)).collect();
                let mut reallocations = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let buffer = &mut buffers[(state % 4) as usize];
                    let target = (256 << 10) + (state >> 8) as usize % (4 << 20);
                    if target > buffer.capacity() {
                        buffer.reserve_exact(target);
                    } else {
                        buffer.shrink_to(target);
                    }
                    buffer.push(1);
                    buffer.clear();
                    reallocations += 1;
                }
                reallocations
            })
        })
        .collect();
    // Both workers block every signal before the first dump.
    started.wait();
    for _ in 0..30 {
        let (_, stats) = snapshot();
        assert!(stats.threads_not_stopped >= 2, "{stats:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        assert!(worker.join().unwrap() > 0);
    }
    heapdump_capture::set_stop_timeout(heapdump_capture::DEFAULT_STOP_TIMEOUT);
}

fn thread_with_all_signals_blocked_is_not_stopped_and_the_dump_finishes() {
    let stop = Arc::new(AtomicBool::new(false));
    let (sender, receiver) = mpsc::channel();
    let blocker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            common::block_all_signals();
            sender.send(gettid()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let blocker_tid = receiver.recv().unwrap();
    let reader = park(|| ((), Box::new([10u64; 10])));

    let (dump, stats) = snapshot();
    let view = dump.view();
    assert!(
        stats.total_ns
            < (heapdump_capture::DEFAULT_STOP_TIMEOUT + Duration::from_secs(2)).as_nanos() as u64,
        "the dump took {} ms",
        stats.total_ns / 1_000_000
    );
    assert!(stats.stop_ns <= stats.total_ns);
    let flags = view.process().flags;
    assert_ne!(
        flags & process_flags::INCOMPLETE_STOP,
        0,
        "process flags {flags:#x}"
    );
    assert_eq!(stats.threads_not_stopped, 1);
    assert_eq!(stats.threads_stopped, 1, "only the reader acknowledges");
    let blocked = view
        .threads()
        .get(thread_index(&view, blocker_tid) as usize)
        .unwrap();
    assert_ne!(blocked.flags & thread_flags::NOT_STOPPED, 0, "{blocked:?}");
    assert_eq!(blocked.flags & thread_flags::STOPPED, 0);
    let parked = view
        .threads()
        .get(thread_index(&view, reader.tid) as usize)
        .unwrap();
    assert_ne!(parked.flags & thread_flags::STOPPED, 0, "{parked:?}");
    // The stack of the thread that did not stop is still scanned.
    let blocked_index = thread_index(&view, blocker_tid);
    assert!(
        view.roots()
            .iter()
            .any(|r| r.kind == root_kind::THREAD_STACK
                && r.owner_kind == owner_kind::THREAD
                && r.owner == blocked_index),
        "no THREAD_STACK root for the thread that did not stop"
    );
    drop(dump);
    stop.store(true, Ordering::Relaxed);
    blocker.join().unwrap();
    reader.wake();

    // With nothing blocking signals any more, the next dump is complete.
    let (dump, stats) = snapshot();
    assert_eq!(stats.threads_not_stopped, 0);
    assert_eq!(
        dump.view().process().flags & process_flags::INCOMPLETE_STOP,
        0
    );
}

// ---------------------------------------------------------------------------
// 11. The program handles SIGPWR itself

static OWN_SIGPWR: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_sigpwr(_signal: libc::c_int) {
    OWN_SIGPWR.fetch_add(1, Ordering::SeqCst);
}

fn programs_own_sigpwr_handler_keeps_working_across_dumps() {
    assert_eq!(heapdump_capture::DEFAULT_STOP_SIGNAL, libc::SIGPWR);
    // The suite runs once per mode.
    OWN_SIGPWR.store(0, Ordering::SeqCst);
    // Installed after earlier dumps, as a program that sets its handlers
    // up late would.
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask is
    // a valid argument; the previous action is saved into a local.
    let previous = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = count_sigpwr as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(libc::SIGPWR, &action, &mut previous), 0);
        previous
    };
    let raise = || {
        // SAFETY: raising a signal that has a handler.
        assert_eq!(unsafe { libc::raise(libc::SIGPWR) }, 0);
    };
    raise();
    assert_eq!(OWN_SIGPWR.load(Ordering::SeqCst), 1);

    let reader = park(|| ((), ()));
    for round in 0..3u64 {
        let (dump, stats) = snapshot();
        let view = dump.view();
        let thread = view
            .threads()
            .get(thread_index(&view, reader.tid) as usize)
            .unwrap();
        assert_ne!(
            thread.flags & thread_flags::STOPPED,
            0,
            "round {round}: the parked thread did not stop: {thread:?}"
        );
        assert_eq!(stats.threads_not_stopped, 0, "round {round}");
        assert_eq!(
            OWN_SIGPWR.load(Ordering::SeqCst),
            1 + 2 * round,
            "round {round}: the dump's stop signals reached the program's handler"
        );
        drop(dump);
        raise();
        // And one sent to the parked thread.
        // SAFETY: tgkill with this process's pid and a live thread's tid.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                std::process::id() as libc::c_long,
                reader.tid as libc::c_long,
                libc::SIGPWR as libc::c_long,
            )
        };
        assert_eq!(sent, 0);
        for _ in 0..1000 {
            if OWN_SIGPWR.load(Ordering::SeqCst) == 3 + 2 * round {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            OWN_SIGPWR.load(Ordering::SeqCst),
            3 + 2 * round,
            "round {round}: the program's own SIGPWR was not delivered to its handler"
        );
        wait_until_blocked(reader.tid);
    }
    reader.wake();
    // SAFETY: puts back the action saved above.
    unsafe {
        assert_eq!(
            libc::sigaction(libc::SIGPWR, &previous, std::ptr::null_mut()),
            0
        );
    }
}
