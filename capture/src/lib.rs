//! Heap snapshots from inside a Rust program.
//!
//! ```no_run
//! use heapdump_capture::Tracker;
//!
//! #[global_allocator]
//! static ALLOCATOR: Tracker = Tracker::system();
//!
//! fn main() {
//!     let data: Vec<Box<[u8; 64]>> = (0..100).map(|_| Box::new([0; 64])).collect();
//!     if let Err(error) = heapdump_capture::dump_to_path("app.hdump") {
//!         eprintln!("app.hdump: {error}");
//!     }
//!     # drop(data);
//! }
//! ```
//!
//! Then, offline: `heapdump top app.hdump ./app`.
//!
//! Or without calling anything: `HEAPDUMP=on=signal:USR2,on=exit ./app`
//! (see [`Settings`] for the keys and the same settings in code). Dumps
//! take their snapshot in a forked child by default ([`Mode::Fork`]), so
//! the program pauses only for the fork.
//!
//! [`Tracker`] wraps any [`GlobalAlloc`] and records every live allocation:
//! address, size, alignment, allocating thread, allocation stack and a
//! sequence number (its age). In production mode
//! ([`Settings::sample_stacks`], `HEAPDUMP=stacks=sample:512KiB`) every
//! block is still recorded but only a byte-weighted sample gets its stack
//! walked, which is most of the cost. [`write_heap_dump`] writes them, with the
//! interned stacks, the threads and the loaded modules, in the `.hdump`
//! format that `heapdump-formats` documents.
//!
//! **Frame pointers are optional.** Stacks are unwound frame by frame with
//! each module's call frame information (`.eh_frame`), at the same cost with
//! or without frame pointers; the walk falls back on the frame pointer only
//! where that information cannot be used (see the crate's README), so
//! building with them still helps there:
//!
//! ```toml
//! # .cargo/config.toml
//! [build]
//! rustflags = ["-C", "force-frame-pointers=yes"]
//! ```
//!
//! Without them stacks are cut short at the first function that lacks a frame
//! pointer; nothing breaks.
//!
//! # What it costs
//!
//! About 28 bytes of tracking memory per live allocation, plus each distinct
//! stack once; see `BENCHMARKS.md` for time. The records are anonymous
//! `mmap` memory, never the heap it tracks; only a 4-byte footer past the
//! end of each block ([`FOOTER_BYTES`]: the index of its record, so a free
//! needs no lookup) lives in the heap, where the program never sees it. The
//! inner allocator is asked for that much more per block.
//!
//! # Rules it keeps inside your process
//!
//! The allocation path never allocates, never panics and holds a lock only
//! for a table update (never across the inner allocator). Allocations that
//! happen while the tracker is already working on the same thread (from the
//! inner allocator, say) are passed through untracked. When a table cannot
//! grow, the program goes on and [`stats`] and the dump count what was
//! dropped. Allocating from a signal handler that interrupted an allocation
//! can deadlock, as it can with most allocators.

use core::alloc::{GlobalAlloc, Layout};
use core::any::TypeId;
use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};
use std::alloc::System;
use std::os::fd::{AsRawFd, BorrowedFd};

mod child;
#[cfg(all(feature = "c-malloc", target_os = "linux", target_env = "gnu"))]
mod cmalloc;
mod dump;
mod fork;
mod hot;
mod live;
mod modules;
mod presence;
mod sampling;
mod scan;
mod settings;
mod signals;
mod stacks;
mod symbols;
mod sys;
mod threads;
mod triggers;
mod unwind;
mod walk;
mod world;

pub use sampling::DEFAULT_SAMPLE_INTERVAL;
pub use settings::{DEFAULT_MAX_DUMPS, Mode, Settings};

/// Bytes the tracker adds after each block (the index of its record; see
/// the crate README). The inner allocator, and tools that watch it such as
/// valgrind, see every block this much bigger than the program asked for.
pub const FOOTER_BYTES: usize = live::FOOTER_BYTES;

use live::{Entry, LiveTable};
use stacks::StackInterner;
use sys::SpinLock;

pub(crate) static LIVE: LiveTable = LiveTable::new();
pub(crate) static STACKS: StackInterner = StackInterner::new();
pub(crate) static SEQUENCE: AtomicU64 = AtomicU64::new(0);
pub(crate) static DUMP_LOCK: SpinLock<()> = SpinLock::new(());

/// A [`GlobalAlloc`] that tracks every live allocation of the inner
/// allocator `A`.
///
/// ```
/// use heapdump_capture::Tracker;
/// #[global_allocator]
/// static ALLOCATOR: Tracker = Tracker::system();
/// # fn main() {}
/// ```
///
/// All `Tracker`s share one live table; a process has one global allocator,
/// so this is the table of the process.
///
/// Dumps the process writes by itself (on a signal, on growth, at exit,
/// ...) are set by the `HEAPDUMP` environment variable or in code with
/// [`Tracker::with_settings`].
#[derive(Debug, Default)]
pub struct Tracker<A = System> {
    inner: A,
    settings: Settings,
}

impl Tracker<System> {
    /// A tracker around the system allocator (`malloc`).
    pub const fn system() -> Tracker<System> {
        Tracker::new(System)
    }
}

impl<A> Tracker<A> {
    /// A tracker around any allocator, such as jemalloc or mimalloc.
    pub const fn new(inner: A) -> Tracker<A> {
        Tracker {
            inner,
            settings: Settings::new(),
        }
    }

    /// The same tracker with `settings` for dumps the process writes by
    /// itself; keys given in `HEAPDUMP` override them.
    pub const fn with_settings(self, settings: Settings) -> Tracker<A> {
        // A `const fn` cannot drop a generic value, so `self` is moved out
        // of by hand: its `settings` are `Copy`, its `inner` moves on.
        let this = core::mem::ManuallyDrop::new(self);
        let this: *const Tracker<A> = (&raw const this).cast();
        // SAFETY: `ManuallyDrop<T>` has `T`'s layout; `this` is never used
        // or dropped again, so `inner` is moved exactly once.
        let inner = unsafe { core::ptr::read(&raw const (*this).inner) };
        Tracker { inner, settings }
    }
}

/// Marks the thread busy (`hot::Hot::busy`): allocations the tracker
/// causes, through the inner allocator or a dump, are not tracked
/// recursively. `None` if it already was.
struct Busy {
    was_busy: bool,
}

impl Busy {
    #[inline]
    fn enter() -> Option<Busy> {
        if hot::with(|hot| hot.busy.replace(true)) {
            None
        } else {
            Some(Busy { was_busy: false })
        }
    }

    /// Marks the thread busy whatever its state (for a dump).
    fn enter_always() -> Busy {
        Busy {
            was_busy: hot::with(|hot| hot.busy.replace(true)),
        }
    }
}

impl Drop for Busy {
    #[inline]
    fn drop(&mut self) {
        hot::with(|hot| hot.busy.set(self.was_busy));
    }
}

const ZEROED: u8 = heapdump_formats::records::allocation_flags::ZEROED as u8;
const REALLOCATED: u8 = heapdump_formats::records::allocation_flags::REALLOCATED as u8;
const SAMPLED: u8 = heapdump_formats::records::allocation_flags::SAMPLED as u8;

/// Sequence numbers a thread takes from the global counter at a time, so
/// allocating threads do not fight over one cache line.
const SEQUENCE_BLOCK: u64 = 64;

thread_local! {
    /// The next sequence number of this thread's block, and the block's end.
    static SEQUENCE_RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// A fresh sequence number: unique, and increasing within each thread.
/// Across threads the order holds to within a block.
#[inline]
fn next_sequence() -> u64 {
    let (mut next, mut end) = SEQUENCE_RANGE.get();
    if next == end {
        next = SEQUENCE.fetch_add(SEQUENCE_BLOCK, Ordering::Relaxed);
        end = next + SEQUENCE_BLOCK;
    }
    SEQUENCE_RANGE.set((next + 1, end));
    next
}

/// Whether `System`'s blocks are glibc's: the C functions are ours and
/// forward to glibc's allocator (see `cmalloc`), so production mode may
/// list them in the presence map.
pub(crate) const GLIBC_BLOCKS: bool = cfg!(all(
    feature = "c-malloc",
    target_os = "linux",
    target_env = "gnu"
));

/// Whether production mode lists the blocks of a `Tracker<A>` of `size`
/// bytes in the presence map (see [`presence`]) rather than in records:
/// `A` is `System` on glibc, and the block is small enough that glibc
/// never serves it with `mmap`. (The C functions ask it for `System`.)
#[inline(always)]
pub(crate) fn mappable<A: 'static>(size: usize) -> bool {
    GLIBC_BLOCKS
        && TypeId::of::<A>() == TypeId::of::<System>()
        && size < presence::LARGEST
        && presence::enabled()
}

/// Whether to walk the stack of a new block of `size` bytes. The caller
/// holds `Busy`. Production mode's common answer (skip) reads one
/// thread-local: the thread's registry entry is asked for only when it
/// draws (each thread-local costs a call in a shared library).
#[inline(always)]
fn decide(size: usize) -> sampling::Walk {
    sampling::decide(size as u64, || threads::current().index)
}

/// Where a new block goes in production mode, decided before the inner
/// allocator is asked for it: a block for the presence map is asked
/// without the footer's 4 bytes. Those bytes moved a quarter of the
/// program's small requests into glibc's next chunk size (24 bytes into a
/// 48-byte chunk), and glibc's own `free` and `realloc` then ran ~5% of
/// the default workload's time slower (more memory, more misses).
#[derive(Clone, Copy)]
pub(crate) struct Placement {
    /// The sampling decision.
    pub walk: sampling::Walk,
    /// Whether the block goes in the presence map (asked without the
    /// footer's room).
    pub mapped: bool,
}

impl Placement {
    /// For a new block of `size` bytes that the presence map could hold
    /// (`mappable`: glibc makes it, small enough); `tracked` false for a
    /// reallocated block that had no record (it stays without). The
    /// caller holds `Busy`.
    #[inline(always)]
    pub fn decide(size: usize, mappable: bool, tracked: bool) -> Placement {
        let walk = decide(size);
        Placement {
            walk,
            mapped: walk == sampling::Walk::Skipped && mappable && tracked,
        }
    }

    /// The bytes the inner allocator is asked for beyond the program's.
    #[inline(always)]
    pub fn room(self) -> usize {
        if self.mapped { 0 } else { live::FOOTER_BYTES }
    }
}

/// What became of a block asked for the presence map.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// In the map.
    Mapped,
    /// Not (see `presence::insert`: no map for its address, too much
    /// slack), but glibc's rounding left the footer's room: it gets a
    /// record as any block would.
    NeedsRecord,
    /// Not, and no room for a footer: untracked, counted as dropped. A
    /// free of it finds neither its byte nor room for a footer
    /// ([`has_footer_room`]) and passes it through.
    Dropped,
}

/// Puts a block asked without the footer's room in the presence map.
///
/// # Safety
/// `block` is a live block of glibc's allocator of at least `size` bytes,
/// and the caller holds `Busy`.
#[inline(always)]
pub(crate) unsafe fn put_in_map(block: *mut u8, size: usize, counts_as_new: bool) -> Placed {
    // SAFETY: per the contract.
    if unsafe { presence::insert(block, size, counts_as_new) } {
        Placed::Mapped
    // SAFETY: per the contract.
    } else if unsafe { has_footer_room(block, size) } {
        Placed::NeedsRecord
    } else {
        LIVE.count_dropped();
        Placed::Dropped
    }
}

/// Whether a block of glibc's allocator that the program asked `size`
/// bytes of has 4 usable bytes past them: always, unless it was asked for
/// the presence map (without them) and the map could not take it.
///
/// # Safety
/// `block` is a live block of glibc's allocator.
#[inline]
pub(crate) unsafe fn has_footer_room(block: *mut u8, size: usize) -> bool {
    // SAFETY: per the contract.
    unsafe { presence::usable_size(block) }
        .is_some_and(|usable| usable >= size + live::FOOTER_BYTES)
}

/// The record of a block the inner allocator just returned, made here:
/// this thread, this stack (in production mode only if the block is
/// sampled, else stack 0), the next sequence number. The caller holds
/// `Busy`.
/// `walk`: what [`decide`] said for it.
#[inline]
fn new_entry(
    address: *mut u8,
    size: usize,
    align: usize,
    mut flags: u8,
    walk: sampling::Walk,
) -> (Entry, threads::CurrentThread) {
    let thread = threads::current();
    let stack = if walk == sampling::Walk::Skipped {
        0
    } else {
        // SAFETY: the caller holds the thread's reentrancy guard.
        unsafe { stacks::current_stack_id(&STACKS, thread.stack) }
    };
    if walk == sampling::Walk::Sampled {
        flags |= SAMPLED;
    }
    let entry = Entry {
        address: address as u64,
        size: size as u64,
        sequence: next_sequence(),
        stack,
        thread: thread.index,
        align: align as u64,
        flags,
    };
    (entry, thread)
}

/// The layout the inner allocator sees: the program's plus the footer
/// (see [`live`]). `None` if that size does not fit a `Layout`.
#[inline]
fn with_footer(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_add(live::FOOTER_BYTES)?;
    Layout::from_size_align(size, layout.align()).ok()
}

/// The footered layout of a block the program got from us with `layout`.
///
/// # Safety
/// `layout` must be the layout of a block this tracker allocated (so
/// [`with_footer`] accepted it then).
#[inline]
unsafe fn footered(layout: Layout) -> Layout {
    // SAFETY: per the contract, this size and alignment made a valid
    // layout when the block was allocated.
    unsafe { Layout::from_size_align_unchecked(layout.size() + live::FOOTER_BYTES, layout.align()) }
}

/// # Safety
/// `block` must have `size + FOOTER_BYTES` bytes.
#[inline]
unsafe fn write_footer(block: *mut u8, size: usize, footer: u32) {
    // SAFETY: per the contract the footer's 4 bytes are inside the block;
    // unaligned, since `size` is whatever the program asked for.
    unsafe { block.add(size).cast::<u32>().write_unaligned(footer) }
}

/// # Safety
/// As for [`write_footer`], and the footer must have been written.
#[inline]
unsafe fn read_footer(block: *mut u8, size: usize) -> u32 {
    // SAFETY: as in `write_footer`.
    unsafe { block.add(size).cast::<u32>().read_unaligned() }
}

/// Records a block the inner allocator just made for `layout` (plus the
/// footer) and writes its footer; returns it, null passed through (and
/// reported to the `on=oom` trigger once `busy` is let go). `busy` is the
/// guard taken before the inner allocator was called, `None` when the
/// thread was already inside the tracker (the block then gets no record).
/// `decided`: the sampling decision if [`decide`] already ran.
///
/// # Safety
/// `block` is null or has `layout.size() + FOOTER_BYTES` bytes.
#[inline(always)]
unsafe fn record_new(
    block: *mut u8,
    layout: Layout,
    flags: u8,
    settings: &Settings,
    busy: Option<Busy>,
    decided: Option<sampling::Walk>,
) -> *mut u8 {
    if block.is_null() {
        drop(busy);
        triggers::allocation_failed();
        return block;
    }
    let footer = match busy {
        Some(_) => {
            triggers::start_once(settings);
            let walk = decided.unwrap_or_else(|| decide(layout.size()));
            let (entry, thread) = new_entry(block, layout.size(), layout.align(), flags, walk);
            LIVE.insert(&entry, true, thread.index as usize)
        }
        None => live::NO_RECORD,
    };
    // SAFETY: per the contract, the footer's bytes are the block's.
    unsafe { write_footer(block, layout.size(), footer) };
    block
}

/// Where a reallocated block was kept before the inner allocator's
/// `realloc`: in the presence map, or under its record (detached, `None`
/// if it had none).
pub(crate) enum Kept {
    Mapped,
    Recorded(Option<live::Detached>),
}

/// Keeps the block a reallocation returned, for the Rust and the C
/// `realloc` alike, where `placement` (decided before the reallocation)
/// says: in the presence map, else under a record. `moved`: whether it is
/// a new block (the old one then counts as freed). `None` when no footer
/// is to be written (in the map, or dropped), else the footer. The caller
/// holds `Busy`.
///
/// # Safety
/// `block` is a live block of `size` bytes plus `placement.room()`,
/// glibc's if `placement.mapped`.
unsafe fn keep_reallocated(
    block: *mut u8,
    size: usize,
    align: usize,
    moved: bool,
    kept: Kept,
    placement: Placement,
) -> Option<u32> {
    // SAFETY: per the contract.
    if placement.mapped && unsafe { put_in_map(block, size, moved) } != Placed::NeedsRecord {
        match kept {
            Kept::Mapped if moved => presence::count_move(),
            Kept::Recorded(Some(detached)) => LIVE.release(detached, moved),
            _ => {}
        }
        return None;
    }
    let walk = placement.walk;
    let (entry, thread) = new_entry(block, size, align, REALLOCATED, walk);
    Some(match kept {
        Kept::Mapped => {
            if moved {
                presence::count_move();
            }
            LIVE.insert(&entry, moved, thread.index as usize)
        }
        Kept::Recorded(detached) => LIVE.reattach(detached, &entry, moved, thread.index as usize),
    })
}

impl<A: GlobalAlloc + 'static> Tracker<A> {
    /// Allocates a block (zeroed if `flags` says so), in production mode
    /// noting it in the presence map when it is out of the stack sample
    /// and `System` makes it, else with a record.
    #[inline(always)]
    unsafe fn allocate(&self, layout: Layout, flags: u8) -> *mut u8 {
        let Some(outer) = with_footer(layout) else {
            return core::ptr::null_mut();
        };
        let busy = Busy::enter();
        let placement = (busy.is_some() && mappable::<A>(layout.size()))
            .then(|| Placement::decide(layout.size(), true, true));
        let for_map = placement.is_some_and(|placement| placement.mapped);
        let asked = if for_map { layout } else { outer };
        // SAFETY: the caller's contract for `alloc`, for a layout at least
        // as big.
        let block = unsafe { self.inner_alloc(asked, flags & ZEROED != 0) };
        if for_map
            && !block.is_null()
            // SAFETY: `System` made `block` (so glibc did), `layout` bytes.
            && unsafe { put_in_map(block, layout.size(), true) } != Placed::NeedsRecord
        {
            return block;
        }
        let decided = placement.map(|placement| placement.walk);
        // SAFETY: a block of `outer` (or null) just returned, or one for
        // the map with the footer's room after all.
        unsafe { record_new(block, layout, flags, &self.settings, busy, decided) }
    }
}

/// The inner allocator's calls. A `Tracker<System>` whose blocks glibc
/// makes calls glibc directly (see `cmalloc::glibc`); the same functions
/// `System` would reach.
impl<A: GlobalAlloc + 'static> Tracker<A> {
    /// Whether `A` is `System` and glibc may be called in its place for a
    /// block of `layout`.
    #[inline(always)]
    fn glibc_serves(layout: Layout) -> bool {
        #[cfg(all(feature = "c-malloc", target_os = "linux", target_env = "gnu"))]
        if TypeId::of::<A>() == TypeId::of::<System>() {
            return cmalloc::glibc::serves(layout);
        }
        let _ = layout;
        false
    }

    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[inline(always)]
    unsafe fn inner_alloc(&self, outer: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: per the caller's contract; glibc when `System` would
        // call it.
        unsafe {
            match (Self::glibc_serves(outer), zeroed) {
                (true, _) => cmalloc::glibc::alloc(outer, zeroed),
                (false, true) => self.inner.alloc_zeroed(outer),
                (false, false) => self.inner.alloc(outer),
            }
        }
    }

    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    #[inline(always)]
    unsafe fn inner_dealloc(&self, block: *mut u8, outer: Layout) {
        // SAFETY: per the caller's contract. `System` frees every block
        // with `free`, which (ours) forwards to glibc's: whichever way the
        // block was made, glibc made it while the map is on.
        unsafe {
            if Self::glibc_serves(outer) {
                cmalloc::glibc::dealloc(block)
            } else {
                self.inner.dealloc(block, outer)
            }
        }
    }

    /// # Safety
    /// As `GlobalAlloc::realloc`.
    #[inline(always)]
    unsafe fn inner_realloc(&self, block: *mut u8, outer: Layout, new_outer: Layout) -> *mut u8 {
        // SAFETY: per the caller's contract; `System` reallocates with
        // `realloc` for the new layout `glibc_serves` accepts.
        unsafe {
            if Self::glibc_serves(new_outer) && Self::glibc_serves(outer) {
                cmalloc::glibc::realloc(block, new_outer.size())
            } else {
                self.inner.realloc(block, outer, new_outer.size())
            }
        }
    }
}

// The thread is marked busy across the inner allocator's call: whatever
// that allocator does through the C functions (`System` is `malloc`) is
// passed through there, so a Rust block is recorded once.
//
// Every method forwards to the inner allocator with the caller's layout
// grown by the footer's 4 bytes, consistently for every call on a block
// (so the inner allocator's contract holds), and returns the block
// itself: the program gets at least the bytes and alignment it asked for.
// A block for production mode's presence map is asked without the
// footer's room (see `Placement`), and `asked_layout` gives its layout
// back consistently.
// SAFETY: as above; the footer lies past the program's bytes, and the
// rest of the bookkeeping touches only the tracker's memory.
unsafe impl<A: GlobalAlloc + 'static> GlobalAlloc for Tracker<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`.
        unsafe { self.allocate(layout, 0) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed`.
        unsafe { self.allocate(layout, ZEROED) }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // Forget the block before freeing it, under its shard's lock (or,
        // in the presence map, waiting for a dump that lists the map): a
        // dump never lists (and scans) memory that a thread it could not
        // stop is freeing or unmapping.
        let busy = Busy::enter();
        let mappable = mappable::<A>(layout.size());
        // A block of a mappable size is in the map (and leaves it now), or
        // has a footer if `System` (glibc) left it the room.
        let has_footer = !mappable
            || presence::remove(block, Some(layout.size()), true).is_none()
                // SAFETY: `System` made a block of a mappable size (glibc did).
                && unsafe { has_footer_room(block, layout.size()) };
        if has_footer {
            // SAFETY: the caller passes a block we allocated with `layout`;
            // out of the presence map and with the footer's room, so we
            // wrote its footer.
            let footer = unsafe { read_footer(block, layout.size()) };
            let kept = match busy {
                Some(_) => {
                    LIVE.remove(footer, block as u64, layout.size() as u64);
                    false
                }
                // SAFETY: the block's own footer, read above.
                None => unsafe { kept_inside_tracker(footer, block, Some(layout.size())) },
            };
            if kept {
                return;
            }
        }
        // SAFETY: the caller's contract for `dealloc`, with the layout the
        // block was asked with (see `asked_layout`).
        unsafe { self.inner_dealloc(block, asked_layout(layout, mappable)) };
        drop(busy);
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // `realloc`'s contract needs the new size to make a valid layout.
        let Some(new_outer) = Layout::from_size_align(new_size, layout.align())
            .ok()
            .and_then(with_footer)
        else {
            return core::ptr::null_mut();
        };
        let busy = Busy::enter();
        let was_mappable = mappable::<A>(layout.size());
        if was_mappable && presence::remove(block, Some(layout.size()), false).is_some() {
            // SAFETY: the caller's contract for `realloc`, for a block of
            // the presence map.
            return unsafe { self.realloc_mapped(block, layout, new_size, new_outer, busy) };
        }
        if busy.is_none()
            // SAFETY: as in `dealloc`.
            && (!was_mappable || unsafe { has_footer_room(block, layout.size()) })
        {
            // SAFETY: as in `dealloc`.
            let footer = unsafe { read_footer(block, layout.size()) };
            // SAFETY: the block's own footer.
            if unsafe { kept_inside_tracker(footer, block, Some(layout.size())) } {
                // SAFETY: the caller's contract for `realloc`; a recorded
                // block.
                return unsafe { self.move_keeping_record(block, layout, new_size, new_outer) };
            }
        }
        // As in `dealloc`, the record goes (for now) before the inner
        // allocator may free the block: a dump running meanwhile must not
        // scan memory that is being moved or unmapped.
        let detached = match busy {
            // SAFETY: as in `dealloc`.
            Some(_) if !was_mappable || unsafe { has_footer_room(block, layout.size()) } => {
                // SAFETY: as in `dealloc`.
                let old_footer = unsafe { read_footer(block, layout.size()) };
                LIVE.detach(old_footer, block as u64, layout.size() as u64)
            }
            _ => None,
        };
        let placement = busy.is_some().then(|| {
            triggers::start_once(&self.settings);
            Placement::decide(new_size, mappable::<A>(new_size), detached.is_some())
        });
        // SAFETY: `new_outer` is a valid layout, and this is no bigger.
        let new_asked = unsafe { asked_for(new_outer, placement) };
        let old_asked = asked_layout(layout, was_mappable);
        // SAFETY: the caller's contract for `realloc`, with the layouts
        // the block was and is to be asked with.
        let moved = unsafe { self.inner_realloc(block, old_asked, new_asked) };
        if moved.is_null() {
            // The old block, its footer and its record are as they were.
            if let Some(detached) = detached {
                LIVE.restore(detached);
            }
            drop(busy);
            triggers::allocation_failed();
            return moved;
        }
        let footer = match placement {
            Some(placement) => {
                // SAFETY: `moved` has `new_asked` bytes; `System` made it
                // (so glibc did) if `placement` says the map.
                let kept = unsafe {
                    keep_reallocated(
                        moved,
                        new_size,
                        layout.align(),
                        moved != block,
                        Kept::Recorded(detached),
                        placement,
                    )
                };
                match kept {
                    Some(footer) => footer,
                    None => return moved,
                }
            }
            None => live::NO_RECORD,
        };
        drop(busy);
        // SAFETY: `moved` has `new_size + FOOTER_BYTES` bytes (the map's
        // blocks returned above).
        unsafe { write_footer(moved, new_size, footer) };
        moved
    }
}

/// For a block freed or reallocated on a thread already inside the
/// tracker: whether it must stay allocated, under a record that cannot be
/// taken out now (so that the record stays true). A block without a
/// record may go. The thread takes the record out itself while it holds
/// every lock for a `fork` (a `pthread_atfork` handler registered before
/// the tracker's runs, see `fork`): the locks are its own. Otherwise (a
/// signal handler that interrupted the tracker, perhaps holding the
/// record's lock) it may not wait for a lock. For the Rust and the C
/// functions (`size` `None`: the record's own, checked with its address).
///
/// # Safety
/// `footer` is the footer of the live block at `block` (of `size` bytes).
#[cold]
pub(crate) unsafe fn kept_inside_tracker(footer: u32, block: *mut u8, size: Option<usize>) -> bool {
    footer != live::NO_RECORD
        && fork::with_locks_held_for_fork(|| {
            // SAFETY: this thread holds every shard's lock for the fork, and
            // no guard of one (the closure runs only then).
            unsafe { LIVE.remove_holding_locks(footer, block as u64, size.map(|s| s as u64)) }
        })
        .is_none()
}

/// The layout a block the program got with `layout` was asked of `A`
/// with: with the footer's room, except perhaps for a block the presence
/// map may hold (see [`Placement`]). `A` is then `System`, which frees any
/// block whatever the layout says and reads a layout's size only to copy
/// the bytes of an over-aligned block it reallocates: the program's size
/// is the right one to give it. `mappable`: what [`mappable`] said of the
/// block's size (the caller has asked already).
#[inline(always)]
fn asked_layout(layout: Layout, mappable: bool) -> Layout {
    if mappable {
        layout
    } else {
        // SAFETY: `layout` is that of a block this tracker allocated, so
        // with the footer's room it made a valid layout then.
        unsafe { footered(layout) }
    }
}

/// `outer` (a block's layout with the footer's room) less that room if
/// `placement` puts the block in the presence map.
///
/// # Safety
/// `outer` is a valid layout of at least `FOOTER_BYTES` bytes.
#[inline(always)]
unsafe fn asked_for(outer: Layout, placement: Option<Placement>) -> Layout {
    let room = placement.map_or(live::FOOTER_BYTES, Placement::room);
    // SAFETY: smaller than a valid layout of the same alignment.
    unsafe {
        Layout::from_size_align_unchecked(outer.size() - live::FOOTER_BYTES + room, outer.align())
    }
}

impl<A: GlobalAlloc + 'static> Tracker<A> {
    /// [`GlobalAlloc::realloc`] of a block with a record on a thread inside
    /// the tracker, which cannot take the record out (see `dealloc`): the
    /// bytes move to a new block without a record, and the old block stays
    /// allocated under its record.
    ///
    /// # Safety
    /// The contract of `realloc`, for a block with a footer; `new_outer`
    /// is `new_size` plus the footer.
    #[cold]
    unsafe fn move_keeping_record(
        &self,
        block: *mut u8,
        layout: Layout,
        new_size: usize,
        new_outer: Layout,
    ) -> *mut u8 {
        // SAFETY: `new_outer` has a non-zero size (it holds the footer).
        let moved = unsafe { self.inner_alloc(new_outer, false) };
        if moved.is_null() {
            return moved;
        }
        // SAFETY: both blocks are live and distinct, the old one has
        // `layout.size()` bytes, the new one `new_size` plus the footer.
        unsafe {
            core::ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
            write_footer(moved, new_size, live::NO_RECORD);
        }
        moved
    }

    /// [`GlobalAlloc::realloc`] of a block the presence map had (and no
    /// longer has): the new block goes back in the map, or gets a record
    /// if it is in the stack sample (or too big for the map).
    ///
    /// # Safety
    /// The contract of `realloc`, for a block taken out of the presence
    /// map; `new_outer` is `new_size` plus the footer.
    #[inline(always)]
    unsafe fn realloc_mapped(
        &self,
        block: *mut u8,
        layout: Layout,
        new_size: usize,
        new_outer: Layout,
        busy: Option<Busy>,
    ) -> *mut u8 {
        let placement = busy
            .is_some()
            .then(|| Placement::decide(new_size, mappable::<A>(new_size), true));
        // SAFETY: `new_outer` is a valid layout of at least the footer.
        let new_asked = unsafe { asked_for(new_outer, placement) };
        // SAFETY: per the contract; a mappable block was asked with its
        // own layout (see `asked_layout`).
        let moved = unsafe { self.inner_realloc(block, layout, new_asked) };
        if moved.is_null() {
            // SAFETY: the old block is live and unchanged, and was in the
            // map (whose region stays).
            if !unsafe { presence::insert(block, layout.size(), false) }
                // SAFETY: `System` made it (so glibc did).
                && unsafe { has_footer_room(block, layout.size()) }
            {
                // SAFETY: a block of `layout` plus its footer.
                unsafe { write_footer(block, layout.size(), live::NO_RECORD) };
            }
            drop(busy);
            triggers::allocation_failed();
            return moved;
        }
        let footer = match placement {
            // SAFETY: `System` made `moved` (so glibc did), `new_asked`
            // bytes.
            Some(placement) => unsafe {
                keep_reallocated(
                    moved,
                    new_size,
                    layout.align(),
                    moved != block,
                    Kept::Mapped,
                    placement,
                )
            },
            // Inside the tracker already: back in the map without a
            // sampling decision, or no record.
            None => {
                if moved != block {
                    presence::count_move();
                }
                let mapped = mappable::<A>(new_size)
                    // SAFETY: as above.
                    && unsafe { presence::insert(moved, new_size, moved != block) };
                (!mapped).then_some(live::NO_RECORD)
            }
        };
        drop(busy);
        if let Some(footer) = footer {
            // SAFETY: `moved` has `new_size + FOOTER_BYTES` bytes.
            unsafe { write_footer(moved, new_size, footer) };
        }
        moved
    }
}

/// The tracker's counters, read without stopping anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes in live tracked allocations.
    pub live_bytes: u64,
    /// Number of live tracked allocations.
    pub live_count: u64,
    /// Highest `live_bytes` so far.
    pub peak_live_bytes: u64,
    /// Highest `live_count` so far.
    pub peak_live_count: u64,
    /// Allocations made so far (including reallocations that moved).
    pub total_allocations: u64,
    /// Deallocations so far (including reallocations that moved).
    pub total_frees: u64,
    /// Allocations the live table could not record (it could not grow).
    pub dropped_allocations: u64,
    /// Allocations whose stack the interner could not store (recorded as
    /// unknown), counted once per allocation, not per distinct stack.
    pub dropped_stacks: u64,
    /// Distinct allocation stacks stored.
    pub stacks: u64,
    /// Threads that have allocated.
    pub threads: u64,
    /// Bytes of memory the tracker uses: its tables (production mode's
    /// presence map among them), and the 4-byte footer of every live block
    /// that has one (the map's blocks have none).
    pub tracking_bytes: u64,
}

/// The tracker's counters now. Cheap (no lock held for long); exact when no
/// other thread is allocating at the same moment.
pub fn stats() -> Stats {
    let _busy = Busy::enter_always();
    let totals = LIVE.totals();
    Stats {
        live_bytes: totals.live_bytes,
        live_count: totals.live_count,
        peak_live_bytes: totals.peak_bytes,
        peak_live_count: totals.peak_count,
        total_allocations: totals.total_allocations,
        total_frees: totals.total_frees,
        dropped_allocations: totals.dropped,
        dropped_stacks: STACKS.dropped(),
        stacks: STACKS.stored(),
        threads: threads::registered_count(),
        tracking_bytes: totals.used_bytes
            + totals.live_count.saturating_sub(totals.mapped_count) * live::FOOTER_BYTES as u64
            + presence::tracking_bytes(totals.mapped_bytes)
            + STACKS.tracking_bytes()
            + threads::tracking_bytes(),
    }
}

/// What a dump wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DumpStats {
    /// Live allocations in the dump.
    pub allocations: u64,
    /// Their total size in bytes.
    pub live_bytes: u64,
    /// Distinct stacks in the dump.
    pub stacks: u64,
    /// Thread records in the dump.
    pub threads: u64,
    /// Loaded modules in the dump.
    pub modules: u64,
    /// Size of the dump file in bytes.
    pub bytes_written: u64,
    /// Nanoseconds the other threads were stopped (or, for threads that
    /// did not stop, kept from allocating): from the stop request until
    /// they were resumed, after the fork ([`Mode::Fork`]) or after the scan
    /// ([`Mode::Stop`]).
    pub pause_ns: u64,
    /// Nanoseconds the whole dump took.
    pub total_ns: u64,
    /// Nanoseconds from sending the stop requests until every thread had
    /// acknowledged or the timeout passed.
    pub stop_ns: u64,
    /// Nanoseconds the conservative scan took.
    pub scan_ns: u64,
    /// Bytes the scan read (roots and live allocations).
    pub scanned_bytes: u64,
    /// Root ranges in the dump.
    pub roots: u64,
    /// Pointer edges in the dump.
    pub edges: u64,
    /// Threads stopped and acknowledged.
    pub threads_stopped: u64,
    /// Threads that did not acknowledge in time (all signals blocked, say);
    /// their stacks were scanned while they ran (in [`Mode::Fork`]: as they
    /// were at the fork).
    pub threads_not_stopped: u64,
    /// How the snapshot was taken: [`Mode::Stop`] when that was asked for
    /// or when `fork` failed.
    pub mode: Mode,
}

/// The signal `write_heap_dump` uses to stop the other threads: `SIGPWR`
/// unless [`set_stop_signal`] chose another.
pub const DEFAULT_STOP_SIGNAL: i32 = libc::SIGPWR;

/// How long `write_heap_dump` waits for threads to acknowledge the stop
/// request by default; see [`set_stop_timeout`].
pub const DEFAULT_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Chooses the signal used to stop threads during a dump (default
/// [`DEFAULT_STOP_SIGNAL`]). Pick one the program does not use; if it does
/// handle it, its handler still runs for signals that are not the tracker's
/// (the tracker's are sent with `tgkill` by this process during a dump).
/// Fails with `InvalidSignal` for `SIGKILL`, `SIGSTOP`, numbers outside
/// `1..=SIGRTMAX` and a signal that triggers dumps (`on=signal:`).
pub fn set_stop_signal(signal: i32) -> Result<(), DumpError> {
    world::set_stop_signal(signal)
}

/// Sets how long a dump waits for every thread to acknowledge the stop
/// request (default [`DEFAULT_STOP_TIMEOUT`]). A thread that does not
/// answer in time is recorded as not stopped and scanned while it runs.
pub fn set_stop_timeout(timeout: std::time::Duration) {
    world::set_stop_timeout(timeout)
}

/// Why a dump failed. Small and `Copy`, so reporting it needs no memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DumpError {
    /// The dump file could not be created or named (`errno`): `EEXIST` if
    /// something (a symbolic link included) is at its path or at the path
    /// + `.partial` it is written under until whole.
    Open {
        /// The OS error number.
        errno: i32,
    },
    /// Writing failed (`errno`), for instance a full disk or a closed pipe.
    Write {
        /// The OS error number.
        errno: i32,
    },
    /// The path is empty, contains a NUL byte or is longer than 4087
    /// bytes (4095 with the `.partial` it is written under until whole).
    InvalidPath,
    /// Scratch memory for the dump could not be mapped.
    OutOfMemory,
    /// [`set_stop_signal`] was given a signal that cannot be used.
    InvalidSignal,
    /// The forked process that takes the snapshot in [`Mode::Fork`] ended
    /// without reporting (killed, say); `status` as `waitpid` gave it.
    SnapshotProcess {
        /// The wait status.
        status: i32,
    },
    /// A bug in heapdump-capture; please report it.
    Internal,
}

impl core::fmt::Display for DumpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DumpError::Open { errno } if errno == libc::EEXIST => f.write_str(
                "the dump file, or the NAME.partial it is written under until whole, already \
                 exists (a dump never replaces a file: choose a new name, or remove a .partial \
                 that no dump is writing any more)",
            ),
            DumpError::Open { errno } if errno == libc::ELOOP => {
                f.write_str("the dump path is a symbolic link (a dump never follows one)")
            }
            DumpError::Open { errno } if errno == libc::ENAMETOOLONG => f.write_str(
                "the dump file's name is too long: with the .partial it is written under until \
                 whole, it must fit the file system's limit (255 bytes on most)",
            ),
            DumpError::Open { errno } => write!(
                f,
                "cannot create the dump file: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            DumpError::Write { errno } => write!(
                f,
                "cannot write the dump: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            DumpError::InvalidPath => f.write_str(
                "the dump path is empty, contains a NUL byte or is too long (at most 4087 \
                 bytes, to leave room for the .partial it is written under until whole)",
            ),
            DumpError::OutOfMemory => f.write_str("cannot map scratch memory for the dump"),
            DumpError::InvalidSignal => {
                f.write_str("the stop signal must be catchable (not SIGKILL or SIGSTOP) and not a dump trigger (on=signal)")
            }
            DumpError::SnapshotProcess { status } => write!(
                f,
                "the snapshot process (mode=fork) ended without finishing the dump (wait status {status:#x})"
            ),
            DumpError::Internal => f.write_str("internal error in heapdump-capture"),
        }
    }
}

impl std::error::Error for DumpError {}

/// Applies the `HEAPDUMP` variable (with no settings from code) in a
/// program that has no [`Tracker`]: for the preload library that `heapdump
/// run` puts into unmodified programs, whose constructor calls it. A
/// program with a `Tracker` never needs it (its first allocation does the
/// same with its settings); calling it twice does nothing.
///
/// With `this_process_only`, the process's own children made by `fork`
/// (which inherit the library without running its constructor again) track
/// nothing and write no dump; see [`stay_passive`].
pub fn start_in_unmodified_program(this_process_only: bool) {
    let _busy = Busy::enter_always();
    // Now, from the library's constructor, before the program's own
    // constructors and `main` register theirs (see `fork`).
    fork::install_handlers();
    triggers::set_this_process_only(this_process_only);
    triggers::start_once(&Settings::new());
}

/// Makes this process track nothing and dump nothing from now on: the C
/// allocation functions pass straight through. For the preload library in
/// a process `heapdump run` was not asked to watch (a child of the
/// program, which inherited `LD_PRELOAD`).
pub fn stay_passive() {
    triggers::stay_passive();
}

/// Writes a heap dump of the whole process to `fd` (a file, a pipe or a
/// socket; no seeking needed) and returns what it wrote.
///
/// Any thread may call it, any number of times; concurrent calls are
/// serialized. The snapshot is taken in the configured [`Mode`]
/// (`HEAPDUMP`'s `mode=`, else [`Settings::mode`], else [`Mode::Fork`]):
/// the other threads are stopped only to save their registers and fork
/// (see [`DumpStats::pause_ns`]), or, in [`Mode::Stop`], for the whole
/// scan; never while the file is written.
#[inline(always)]
pub fn write_heap_dump(fd: BorrowedFd<'_>) -> Result<DumpStats, DumpError> {
    // Inlined into the caller, so this captures the program's registers
    // and stack pointer, not the tracker's.
    let caller = dump::Caller::capture();
    write_heap_dump_from(fd.as_raw_fd(), &caller, None)
}

/// [`write_heap_dump`] with the snapshot taken in `mode`.
#[inline(always)]
pub fn write_heap_dump_with(fd: BorrowedFd<'_>, mode: Mode) -> Result<DumpStats, DumpError> {
    let caller = dump::Caller::capture();
    write_heap_dump_from(fd.as_raw_fd(), &caller, Some(mode))
}

#[inline(never)]
fn write_heap_dump_from(
    fd: i32,
    caller: &dump::Caller,
    mode: Option<Mode>,
) -> Result<DumpStats, DumpError> {
    let _busy = Busy::enter_always();
    let serialized = DUMP_LOCK.lock();
    let stats = dump::write(
        fd,
        caller,
        mode.unwrap_or_else(triggers::configured_mode),
        &serialized,
        None,
    )?;
    triggers::dump_written(stats.live_bytes);
    Ok(stats)
}

/// Writes a heap dump to a new file at `path`, created with mode 0600. It
/// refuses to replace an existing file or to follow a symbolic link, since a
/// dump holds the program's memory layout. The mode is chosen as for
/// [`write_heap_dump`].
#[inline(always)]
pub fn dump_to_path(path: impl AsRef<std::path::Path>) -> Result<DumpStats, DumpError> {
    use std::os::unix::ffi::OsStrExt;
    // As in `write_heap_dump`: the program's context, captured inline.
    let caller = dump::Caller::capture();
    dump_to_path_from(path.as_ref().as_os_str().as_bytes(), &caller, None)
}

/// [`dump_to_path`] with the snapshot taken in `mode`.
#[inline(always)]
pub fn dump_to_path_with(
    path: impl AsRef<std::path::Path>,
    mode: Mode,
) -> Result<DumpStats, DumpError> {
    use std::os::unix::ffi::OsStrExt;
    let caller = dump::Caller::capture();
    dump_to_path_from(path.as_ref().as_os_str().as_bytes(), &caller, Some(mode))
}

#[inline(never)]
fn dump_to_path_from(
    path: &[u8],
    caller: &dump::Caller,
    mode: Option<Mode>,
) -> Result<DumpStats, DumpError> {
    let _busy = Busy::enter_always();
    let mut names = [sys::PathBuf::<4096>::new(), sys::PathBuf::new()];
    let [name, partial] = &mut names;
    // A relative path is resolved now: the file is created, and renamed
    // once whole, while other threads run (and may change the working
    // directory).
    let relative = !path.is_empty() && path[0] != b'/';
    if (relative && !(name.push_current_directory() && name.push(b"/"))) || !name.push(path) {
        return Err(DumpError::InvalidPath);
    }
    let serialized = DUMP_LOCK.lock();
    let stats = dump::write_new_file(
        name,
        partial,
        caller,
        mode.unwrap_or_else(triggers::configured_mode),
        &serialized,
    )?;
    triggers::dump_written(stats.live_bytes);
    Ok(stats)
}
