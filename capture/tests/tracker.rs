//! The tracker as a real global allocator: exact live tables, realloc in
//! place and moved, dumps that read back and verify, and many threads
//! allocating while dumps are written.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Barrier, Mutex};

mod common;

use heapdump_capture::Tracker;
use heapdump_formats::read::Dump;
use heapdump_formats::records::{AllocationRecord, allocation_flags, thread_flags};

#[global_allocator]
static ALLOCATOR: Tracker = Tracker::system();

/// The tests share one process-wide tracker and compare exact counts, so
/// they run one after another on the main thread (`harness = false`):
/// libtest's own threads would allocate in the middle of a measurement.
fn main() {
    let tests: [(&str, fn()); 11] = [
        (
            "boxes_are_tracked_exactly_and_freed_ones_disappear",
            boxes_are_tracked_exactly_and_freed_ones_disappear,
        ),
        (
            "realloc_in_place_and_moved_keeps_one_record_of_the_new_size",
            realloc_in_place_and_moved_keeps_one_record_of_the_new_size,
        ),
        (
            "zeroed_and_overaligned_blocks_keep_their_flags_and_alignment",
            zeroed_and_overaligned_blocks_keep_their_flags_and_alignment,
        ),
        (
            "dump_process_totals_match_stats_when_nothing_else_runs",
            dump_process_totals_match_stats_when_nothing_else_runs,
        ),
        (
            "dump_to_path_refuses_existing_files_and_symlinks_and_creates_0600",
            dump_to_path_refuses_existing_files_and_symlinks_and_creates_0600,
        ),
        (
            "eight_threads_churning_while_100_dumps_are_written",
            eight_threads_churning_while_100_dumps_are_written,
        ),
        (
            "block_freed_behind_the_trackers_back_and_reused_is_in_the_dump_once",
            block_freed_behind_the_trackers_back_and_reused_is_in_the_dump_once,
        ),
        (
            "the_dump_names_the_function_that_allocated_a_block",
            the_dump_names_the_function_that_allocated_a_block,
        ),
        (
            "blocks_freed_in_a_fork_handler_registered_before_the_trackers_are_freed_with_their_records",
            blocks_freed_in_a_fork_handler_registered_before_the_trackers_are_freed_with_their_records,
        ),
        (
            "a_relative_dump_path_means_the_working_directory_of_the_call",
            a_relative_dump_path_means_the_working_directory_of_the_call,
        ),
        (
            "stats_count_the_stacks_stored_not_the_ids_threads_reserved",
            stats_count_the_stacks_stored_not_the_ids_threads_reserved,
        ),
    ];
    common::run_tests(&tests, || {});
}

fn dump_bytes() -> Vec<u8> {
    common::dump_with_stats().0
}

fn parse(bytes: Vec<u8>) -> Dump {
    common::parse_and_verify(bytes)
}

fn record_at(dump: &Dump, address: usize) -> Option<AllocationRecord> {
    dump.view()
        .allocations()
        .iter()
        .find(|a| a.address == address as u64)
}

fn boxes_are_tracked_exactly_and_freed_ones_disappear() {
    let before = heapdump_capture::stats();
    let boxes: Vec<Box<[u8; 3000]>> = (0..100).map(|i| Box::new([i as u8; 3000])).collect();
    let middle = heapdump_capture::stats();
    // 100 boxes plus the Vec that holds them (allocated once, exact size).
    assert_eq!(middle.live_count - before.live_count, 101);
    assert_eq!(middle.live_bytes - before.live_bytes, 100 * 3000 + 100 * 8);
    let kept = &*boxes[7] as *const [u8; 3000] as usize;
    let freed = &*boxes[8] as *const [u8; 3000] as usize;
    let mut boxes = boxes;
    drop(boxes.remove(8));

    let dump = parse(dump_bytes());
    let view = dump.view();
    let kept_record = record_at(&dump, kept).expect("a live box is missing from the dump");
    assert_eq!(kept_record.size, 3000);
    assert_eq!(kept_record.align, 1);
    assert_ne!(kept_record.stack, 0, "the box has no stack");
    let thread = view.threads().get(kept_record.thread as usize).unwrap();
    assert_eq!(thread.tid, thread_id_of_caller());
    assert_ne!(thread.flags & thread_flags::DUMPING, 0);
    assert!(
        record_at(&dump, freed).is_none() || {
            // The freed address may have been reused by a later allocation of
            // another size.
            record_at(&dump, freed).unwrap().size != 3000
        }
    );
    let frames = view.stack_frames(kept_record.stack).unwrap();
    assert!(frames.len() >= 3, "only {} frames", frames.len());
    drop(boxes);
}

fn thread_id_of_caller() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .expect("cannot read /proc/thread-self")
}

fn realloc_in_place_and_moved_keeps_one_record_of_the_new_size() {
    let before = heapdump_capture::stats();
    let mut grown: Vec<u8> = Vec::with_capacity(24);
    grown.extend_from_slice(&[1; 24]);
    for round in 0..12 {
        grown.reserve_exact(grown.capacity() * 2 - grown.len());
        grown.extend(std::iter::repeat_n(
            round as u8,
            grown.capacity() - grown.len(),
        ));
    }
    let mut shrunk: Vec<u64> = Vec::with_capacity(4096);
    shrunk.push(1);
    shrunk.shrink_to_fit();
    let after = heapdump_capture::stats();
    assert_eq!(after.live_count - before.live_count, 2);
    assert_eq!(
        after.live_bytes - before.live_bytes,
        grown.capacity() as u64 + 8
    );
    assert!(after.total_allocations > before.total_allocations);

    let dump = parse(dump_bytes());
    let grown_record = record_at(&dump, grown.as_ptr() as usize).unwrap();
    assert_eq!(grown_record.size, grown.capacity() as u64);
    assert_ne!(grown_record.flags & allocation_flags::REALLOCATED, 0);
    let shrunk_record = record_at(&dump, shrunk.as_ptr() as usize).unwrap();
    assert_eq!(shrunk_record.size, 8);
}

fn zeroed_and_overaligned_blocks_keep_their_flags_and_alignment() {
    #[repr(align(4096))]
    struct Page(#[allow(dead_code)] [u8; 4096]);
    let page = Box::new(Page([0; 4096]));
    let zeroed = vec![0u64; 5000];
    let dump = parse(dump_bytes());
    let page_record = record_at(&dump, &*page as *const Page as usize).unwrap();
    assert_eq!((page_record.size, page_record.align), (4096, 4096));
    let zeroed_record = record_at(&dump, zeroed.as_ptr() as usize).unwrap();
    assert_eq!(zeroed_record.size, 40_000);
    assert_ne!(zeroed_record.flags & allocation_flags::ZEROED, 0);
}

/// A box allocated `depth` calls down: a stack of its own for each depth.
#[inline(never)]
fn box_at_depth(depth: u32) -> Box<u32> {
    let boxed = if depth == 0 {
        Box::new(7)
    } else {
        box_at_depth(depth - 1)
    };
    std::hint::black_box(boxed)
}

/// Threads that each store one new stack and end: `stats().stacks` counts
/// those stacks, not the ids each thread reserved for more.
fn stats_count_the_stacks_stored_not_the_ids_threads_reserved() {
    // The stacks of spawning, running and joining a thread, stored once.
    for _ in 0..2 {
        std::thread::spawn(|| drop(box_at_depth(0))).join().unwrap();
    }
    let before = heapdump_capture::stats();
    for depth in 1..=30 {
        std::thread::spawn(move || drop(box_at_depth(depth)))
            .join()
            .unwrap();
    }
    let after = heapdump_capture::stats();
    let stored = after.stacks - before.stacks;
    assert!(
        (30..=40).contains(&stored),
        "{stored} stacks counted for 30 new ones"
    );
}

fn dump_process_totals_match_stats_when_nothing_else_runs() {
    let keep: Vec<String> = (0..1000).map(|i| format!("string number {i}")).collect();
    let before = heapdump_capture::stats();
    let file = common::tempfile();
    let written = heapdump_capture::write_heap_dump(file.as_fd()).unwrap();
    let after = heapdump_capture::stats();
    assert_eq!(before.live_bytes, after.live_bytes);
    assert_eq!(written.live_bytes, before.live_bytes);
    assert_eq!(written.allocations, before.live_count);
    let bytes = common::read_back(&file);
    assert_eq!(bytes.len() as u64, written.bytes_written);
    let dump = parse(bytes);
    let process = dump.view().process();
    assert_eq!(process.live_bytes, before.live_bytes);
    assert_eq!(process.live_count, before.live_count);
    assert!(process.peak_live_bytes >= process.live_bytes);
    assert_eq!(process.pid, std::process::id());
    drop(keep);
}

/// `dump_to_path` with a relative path writes the dump where the path led
/// when it was called, whole and named there, while another thread keeps
/// changing the working directory (in `Mode::Stop` the threads run while
/// the file is written, and the name is given once it is whole): every
/// dump succeeds and is whole in one of the two directories, and no
/// `.partial` is left in either.
fn a_relative_dump_path_means_the_working_directory_of_the_call() {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Ends the wandering however the dumps end (a failed assertion too).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let base = std::env::temp_dir().join(format!("heapdump-capture-cwd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (here, elsewhere) = (base.join("here"), base.join("elsewhere"));
    std::fs::create_dir_all(&here).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let before = std::env::current_dir().unwrap();
    let stop = AtomicBool::new(false);
    // The dumps start here, whatever the other thread does then.
    std::env::set_current_dir(&here).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                std::env::set_current_dir(&elsewhere).unwrap();
                std::env::set_current_dir(&here).unwrap();
            }
        });
        let _stop = StopOnDrop(&stop);
        for n in 0..20 {
            let name = format!("dump-{n}.hdump");
            let stats = heapdump_capture::dump_to_path_with(&name, heapdump_capture::Mode::Stop)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let found: Vec<u64> = [&here, &elsewhere]
                .iter()
                .filter_map(|dir| std::fs::metadata(dir.join(&name)).ok())
                .map(|metadata| metadata.len())
                .collect();
            assert_eq!(found, [stats.bytes_written], "{name}");
        }
    });
    std::env::set_current_dir(before).unwrap();
    for dir in [&here, &elsewhere] {
        let partial: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension() == Some(std::ffi::OsStr::new("partial")))
            .collect();
        assert!(partial.is_empty(), "{partial:?}");
    }
    std::fs::remove_dir_all(&base).unwrap();
}

fn dump_to_path_refuses_existing_files_and_symlinks_and_creates_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("heapdump-capture-paths-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("first.hdump");
    heapdump_capture::dump_to_path(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = heapdump_capture::dump_to_path(&path).unwrap_err();
    assert_eq!(again, heapdump_capture::DumpError::Open { errno: 17 }); // EEXIST
    let link = dir.join("link.hdump");
    std::os::unix::fs::symlink(dir.join("target.hdump"), &link).unwrap();
    assert!(heapdump_capture::dump_to_path(&link).is_err());
    assert!(!dir.join("target.hdump").exists());
    assert_eq!(
        heapdump_capture::dump_to_path("bad\0path"),
        Err(heapdump_capture::DumpError::InvalidPath)
    );
    assert_eq!(
        heapdump_capture::dump_to_path(""),
        Err(heapdump_capture::DumpError::InvalidPath)
    );
    assert!(!std::path::Path::new(".partial").exists());
    // A dump is written under NAME.partial until whole: a file left there
    // (a dump cut off) is never replaced, and the error says where to look.
    let cut_off = dir.join("cut-off.hdump.partial");
    std::fs::write(&cut_off, b"not a dump").unwrap();
    let refused = heapdump_capture::dump_to_path(dir.join("cut-off.hdump")).unwrap_err();
    assert_eq!(refused, heapdump_capture::DumpError::Open { errno: 17 });
    assert!(refused.to_string().contains("NAME.partial"), "{refused}");
    assert_eq!(std::fs::read(&cut_off).unwrap(), b"not a dump");
    assert!(!dir.join("cut-off.hdump").exists());
    // The longest names the file system takes, less the room `.partial`
    // needs, are refused with errors that say so.
    let long_name = dir.join("n".repeat(250));
    let refused = heapdump_capture::dump_to_path(&long_name).unwrap_err();
    assert_eq!(refused, heapdump_capture::DumpError::Open { errno: 36 }); // ENAMETOOLONG
    assert!(refused.to_string().contains(".partial"), "{refused}");
    let long_path = format!("/{}", "d/".repeat(2045));
    assert_eq!(long_path.len(), 4091);
    let refused = heapdump_capture::dump_to_path(&long_path).unwrap_err();
    assert_eq!(refused, heapdump_capture::DumpError::InvalidPath);
    assert!(refused.to_string().contains("4087 bytes"), "{refused}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}"); // first.hdump, link.hdump, the cut-off one
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sizes only the workers below use, so their blocks can be told apart
/// from everything else in the process.
const WORKER_SIZES: std::ops::Range<u64> = 10_000..20_000;

fn eight_threads_churning_while_100_dumps_are_written() {
    const THREADS: usize = 8;
    const DUMPS: usize = 100;
    // Even dumps happen while the workers churn; odd ones at a barrier where
    // each worker reports exactly what it holds.
    let checkpoint = Arc::new(Barrier::new(THREADS + 1));
    let resume = Arc::new(Barrier::new(THREADS + 1));
    let held = Arc::new(Mutex::new(HashMap::<u32, (u64, u64)>::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|worker| {
            let (checkpoint, resume, held) = (checkpoint.clone(), resume.clone(), held.clone());
            std::thread::spawn(move || {
                let tid = thread_id_of_caller();
                let mut state = worker as u64 * 7919 + 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(1024); // 24 KiB: outside WORKER_SIZES
                for phase in 0..DUMPS {
                    for _ in 0..300 {
                        let r = next();
                        let size = (WORKER_SIZES.start + r % 4000) as usize;
                        match r % 4 {
                            0 | 1 if blocks.len() < 500 => {
                                blocks.push(Vec::with_capacity(size));
                            }
                            2 if !blocks.is_empty() => {
                                let i = (r as usize / 4) % blocks.len();
                                let block = &mut blocks[i];
                                // Grow or shrink within the worker sizes.
                                let target = (WORKER_SIZES.start + (r >> 20) % 9000) as usize;
                                if target > block.capacity() {
                                    block.reserve_exact(target);
                                } else {
                                    block.shrink_to(target);
                                }
                            }
                            _ if !blocks.is_empty() => {
                                let i = (r as usize / 4) % blocks.len();
                                blocks.swap_remove(i);
                            }
                            _ => {}
                        }
                    }
                    if phase % 2 == 1 {
                        let bytes = blocks.iter().map(|b| b.capacity() as u64).sum();
                        held.lock()
                            .unwrap()
                            .insert(tid, (blocks.len() as u64, bytes));
                        checkpoint.wait();
                        resume.wait();
                    }
                }
                blocks.len()
            })
        })
        .collect();

    let mut checked_exactly = 0;
    for phase in 0..DUMPS {
        if phase % 2 == 1 {
            checkpoint.wait();
        }
        let dump = parse(dump_bytes());
        let view = dump.view();
        assert_eq!(view.process().live_count, view.allocations().len() as u64);
        if phase % 2 == 1 {
            let held = held.lock().unwrap();
            for (&tid, &(count, bytes)) in held.iter() {
                let index = view
                    .threads()
                    .iter()
                    .position(|t| t.tid == tid && t.flags & thread_flags::ALIVE != 0)
                    .expect("a worker thread is missing from the dump")
                    as u32;
                let mine = view
                    .allocations()
                    .iter()
                    .filter(|a| a.thread == index && WORKER_SIZES.contains(&a.size));
                let (dumped_count, dumped_bytes) =
                    mine.fold((0, 0), |(c, b), a| (c + 1, b + a.size));
                assert_eq!((dumped_count, dumped_bytes), (count, bytes), "thread {tid}");
            }
            checked_exactly += 1;
            drop(held);
            resume.wait();
        }
    }
    for worker in workers {
        worker.join().expect("a worker panicked");
    }
    assert_eq!(checked_exactly, DUMPS / 2);
}

/// C code that `free`s a Rust allocation (possible when the global
/// allocator is `malloc`) leaves the tracker's record behind. When the
/// memory is handed out again, the dump keeps only the newer block.
fn block_freed_behind_the_trackers_back_and_reused_is_in_the_dump_once() {
    // The first tracked C `free` looks up glibc's `malloc_usable_size`,
    // which may allocate: done here, so it cannot take the chunk below.
    // SAFETY: a malloc'd block freed once.
    unsafe { libc::free(libc::malloc(200)) };
    let first = Box::into_raw(Box::new([1u8; 200]));
    // SAFETY: the tracker wraps `System`, which is `malloc`, so the block
    // is a `malloc` block; nothing uses it afterwards.
    unsafe { libc::free(first.cast()) };
    // glibc hands the same chunk to the next request of its size class
    // (200 and 210 bytes, plus the footer and glibc's 8, round to 224).
    let second = Box::new([2u8; 210]);
    let second_address = &*second as *const [u8; 210] as usize;
    assert_eq!(
        second_address, first as usize,
        "malloc did not reuse the chunk"
    );
    let dump = parse(dump_bytes());
    let at: Vec<_> = dump
        .view()
        .allocations()
        .iter()
        .filter(|a| a.address == second_address as u64)
        .collect();
    assert_eq!(at.len(), 1);
    assert_eq!(at[0].size, 210);
    drop(second);
}

#[inline(never)]
fn allocate_a_named_block() -> Box<[u8; 1234]> {
    std::hint::black_box(Box::new([7u8; 1234]))
}

fn the_dump_names_the_function_that_allocated_a_block() {
    let block = allocate_a_named_block();
    let dump = parse(dump_bytes());
    let view = dump.view();
    let record = record_at(&dump, &*block as *const [u8; 1234] as usize).unwrap();
    let names = view
        .frame_names()
        .unwrap()
        .expect("the dump has no FrameNames section");
    assert_eq!(names.len(), view.frames().len());
    // The stack's frames, named from the test binary's own symbol table
    // (raw symbols: the analyzer demangles).
    let first = view.stack_frames(record.stack).unwrap();
    let first_index = (0..view.frames().len())
        .find(|&i| {
            view.frames()
                .slice(i, i + first.len())
                .iter()
                .eq(first.iter())
        })
        .unwrap();
    let named: Vec<String> = (first_index..first_index + first.len())
        .map(|i| {
            let name = names.get(i).unwrap().name;
            String::from_utf8_lossy(view.string(name).unwrap()).into_owned()
        })
        .collect();
    assert!(
        named.iter().any(|n| n.contains("allocate_a_named_block")),
        "{named:#?}"
    );
    // And the caller, this test function.
    assert!(
        named
            .iter()
            .any(|n| n.contains("the_dump_names_the_function_that_allocated_a_block")),
        "{named:#?}"
    );
    drop(block);
}

/// What the early fork handler below works on: set by the test before it
/// forks, taken by the handler.
mod early_fork {
    use std::alloc::Layout;
    use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    pub static FREE_ME: AtomicPtr<[u8; 1500]> = AtomicPtr::new(core::ptr::null_mut());
    pub static GROW_ME: AtomicPtr<Vec<u8>> = AtomicPtr::new(core::ptr::null_mut());
    pub static ALIGNED: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
    pub static SCRATCH_KEPT: AtomicBool = AtomicBool::new(false);
    pub const ALIGNED_LAYOUT: Layout = match Layout::from_size_align(256, 64) {
        Ok(layout) => layout,
        Err(_) => panic!("a valid layout"),
    };

    /// Registered before `main` (before the program's first allocation,
    /// which registers the tracker's handlers): this prepare handler runs
    /// after the tracker's, while the forking thread holds every lock.
    #[used]
    #[unsafe(link_section = ".init_array")]
    static REGISTER: extern "C" fn() = register;

    extern "C" fn register() {
        // SAFETY: plain function pointers, no handler for the others.
        unsafe { libc::pthread_atfork(Some(prepare), None, None) };
    }

    extern "C" fn prepare() {
        let free_me = FREE_ME.swap(core::ptr::null_mut(), Ordering::Relaxed);
        if free_me.is_null() {
            return;
        }
        // SAFETY: the test's `Box::into_raw`, taken once.
        drop(unsafe { Box::from_raw(free_me) });
        // SAFETY: the test's `Box::into_raw` of a Vec, read and written
        // back by this thread alone.
        let grow_me = unsafe { &mut *GROW_ME.load(Ordering::Relaxed) };
        grow_me.reserve_exact(3000);
        let aligned = ALIGNED.load(Ordering::Relaxed);
        // SAFETY: the test's block of `ALIGNED_LAYOUT`.
        let grown = unsafe { std::alloc::realloc(aligned, ALIGNED_LAYOUT, 1000) };
        ALIGNED.store(grown, Ordering::Relaxed);
        // A block without a record (made here) freed here goes back to
        // glibc, whose per-thread cache hands it out again: its last
        // usable bytes are no footer of ours.
        let scratch = Vec::<u8>::with_capacity(101);
        let at = scratch.as_ptr();
        drop(scratch);
        let again = Vec::<u8>::with_capacity(101);
        SCRATCH_KEPT.store(again.as_ptr() != at, Ordering::Relaxed);
    }
}

/// A `pthread_atfork` handler registered before the tracker's runs while
/// the forking thread holds every tracker lock: the blocks with records it
/// frees and reallocates (an over-aligned one among them) are freed with
/// their records, none kept allocated, and the reallocated ones keep their
/// bytes and alignment.
fn blocks_freed_in_a_fork_handler_registered_before_the_trackers_are_freed_with_their_records() {
    use early_fork::*;
    use std::sync::atomic::Ordering;

    let grow_me: Box<Vec<u8>> = Box::new((0..2000).map(|i| i as u8).collect());
    // SAFETY: a valid layout of a non-zero size.
    let aligned = unsafe { std::alloc::alloc(ALIGNED_LAYOUT) };
    assert!(!aligned.is_null());
    // SAFETY: 256 bytes of the fresh block.
    unsafe { aligned.write_bytes(0xa5, 256) };
    ALIGNED.store(aligned, Ordering::Relaxed);
    let grow_me = Box::into_raw(grow_me);
    GROW_ME.store(grow_me, Ordering::Relaxed);
    FREE_ME.store(Box::into_raw(Box::new([7u8; 1500])), Ordering::Relaxed);

    let before = heapdump_capture::stats();
    // SAFETY: the child only exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: leaving the child at once, without running anything.
        unsafe { libc::_exit(0) };
    }
    assert!(child > 0, "fork failed");
    let mut status = 0;
    // SAFETY: our child, and a valid out-pointer.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert_eq!(status, 0);
    let after = heapdump_capture::stats();

    // The box, the Vec's buffer and the aligned block lost their records;
    // their new blocks (made inside the fork) have none.
    assert_eq!(before.live_count - after.live_count, 3);
    assert_eq!(before.live_bytes - after.live_bytes, 1500 + 2000 + 256);
    assert!(FREE_ME.load(Ordering::Relaxed).is_null());
    assert!(
        !SCRATCH_KEPT.load(Ordering::Relaxed),
        "a block freed in the handler stayed allocated"
    );

    // SAFETY: the Vec the handler grew, ours again.
    let grown = unsafe { Box::from_raw(grow_me) };
    assert!(grown.capacity() >= 5000);
    assert!(grown.iter().enumerate().all(|(i, &b)| b == i as u8));
    drop(grown);
    let aligned = ALIGNED.load(Ordering::Relaxed);
    assert_eq!(aligned as usize % 64, 0);
    // SAFETY: the block the handler reallocated to 1000 bytes.
    let bytes = unsafe { std::slice::from_raw_parts(aligned, 256) };
    assert!(bytes.iter().all(|&b| b == 0xa5));
    let layout = std::alloc::Layout::from_size_align(1000, 64).unwrap();
    // SAFETY: as above, with its layout now.
    unsafe { std::alloc::dealloc(aligned, layout) };
    // Freeing the blocks without records changed no count.
    assert_eq!(heapdump_capture::stats().live_count, after.live_count - 1);
}
