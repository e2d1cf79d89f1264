//! The presence map: production mode's blocks without a record.
//!
//! In production mode (`stacks=sample`) most blocks are not in the stack
//! sample, and for them the dump needs only where they are and their size.
//! When glibc's allocator makes them (the `Tracker` around `System` with
//! the C functions ours, or the preload library), that takes no record at
//! all: a byte per 16 bytes of address space (glibc's alignment, and its
//! smallest distance between two blocks) says whether a live block starts
//! there, and how many of its usable bytes the program did not ask for
//! (the "slack"). A dump lists the nonzero bytes and reads each block's
//! usable size from the chunk header glibc keeps just before it, so the
//! size the program asked for is exact.
//!
//! What that saves, against a record: the record itself (24 bytes), the
//! footer (4 bytes; the block is asked for at its own size), the shard lock
//! on both sides, and on free the two loads that missed the cache most
//! (the footer at the block's end and the record's tag). What remains is a
//! store on allocation and a load and a store on free, into a byte array 16
//! times smaller than the heap, whose line for a block is usually the one
//! its neighbours (allocated together) just used. Blocks in the stack
//! sample, blocks of [`LARGEST`] bytes or more (which glibc may `mmap`) and
//! blocks of any other allocator keep their records and footers, and have
//! byte 0; so a free reads the byte first and takes the record path when it
//! is 0.
//!
//! The map is made of 64 MiB maps, one per GiB of address space that holds
//! such blocks, reserved as needed (`MAP_NORESERVE`: only the pages used
//! take memory) and named by a table of 2^17 pointers (the 47-bit address
//! space of a process).
//!
//! A free takes no lock, so a dump that lists these blocks must know that
//! no thread it could not stop frees one (glibc may then give the top of
//! its heap back to the kernel) while it reads them: see [`Listing`].

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, Ordering};

use crate::sys;
use crate::threads::MAX_THREADS;

/// The alignment of every block glibc's allocator hands out on 64-bit
/// targets, and the least distance between two: one byte of the map per
/// this many bytes of address space.
pub const ALIGNMENT: usize = 1 << GRANULE_SHIFT;
/// log2 of the bytes of address space one byte of the map stands for.
const GRANULE_SHIFT: u32 = 4;
/// log2 of the address space one map covers (1 GiB).
const REGION_SHIFT: u32 = 30;
/// User addresses of an x86-64 or AArch64 process with 4-level page tables.
const ADDRESS_BITS: u32 = 47;
const REGIONS: usize = 1 << (ADDRESS_BITS - REGION_SHIFT);
/// Bytes of one region's map.
pub const REGION_MAP_BYTES: usize = 1 << (REGION_SHIFT - GRANULE_SHIFT);

/// Blocks this big or bigger keep their records: glibc may serve them with
/// `mmap` (its threshold never goes below 128 KiB unless the program sets
/// it), and a record's free is what a dump can wait for.
pub const LARGEST: usize = 64 << 10;

/// A byte of the map: 0 for no block, else the block's slack (its usable
/// bytes past the size asked for) plus one, or [`INEXACT`].
const ABSENT: u8 = 0;
/// The largest slack a byte holds. glibc's is at most 4 + 47 bytes (the
/// footer's room, a chunk's rounding, a remainder too small to split off)
/// unless the program made glibc `mmap` smaller blocks (`M_MMAP_THRESHOLD`
/// below [`LARGEST`]): then up to a page.
const MAX_SLACK: usize = 253;
/// A block whose slack no byte holds: its size is taken as its usable
/// size less the footer's room (an overestimate of less than a page).
const INEXACT: u8 = 255;

static MAPS: [AtomicPtr<AtomicU8>; REGIONS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; REGIONS];

/// Whether production mode lists blocks here; set once at start.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Set while a dump reads the map and the blocks it lists (see [`Listing`]).
static LISTING: AtomicBool = AtomicBool::new(false);

/// Turns the map on for blocks glibc's allocator makes from now on. `false`
/// (and the map stays off) when the kernel cannot give the dump the
/// barrier it needs ([`sys::register_process_barrier`]).
pub fn enable() -> bool {
    let on = sys::register_process_barrier();
    ENABLED.store(on, Ordering::Relaxed);
    on
}

/// Whether new blocks of glibc's allocator go in the map.
#[inline(always)]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The map's byte for `address`, creating the region's map if `create`.
#[inline(always)]
fn cell(address: usize, create: bool) -> Option<&'static AtomicU8> {
    let region = address >> REGION_SHIFT;
    let map = MAPS.get(region)?.load(Ordering::Acquire);
    let map = if map.is_null() {
        if !create {
            return None;
        }
        create_map(region)?
    } else {
        map
    };
    let offset = (address & ((1 << REGION_SHIFT) - 1)) >> GRANULE_SHIFT;
    // SAFETY: a region's map is `REGION_MAP_BYTES` bytes, mapped for the
    // life of the process, and `offset` is below that; its bytes are
    // atomics.
    Some(unsafe { &*map.add(offset) })
}

#[cold]
fn create_map(region: usize) -> Option<*mut AtomicU8> {
    sys::map_once(&MAPS[region], REGION_MAP_BYTES)
}

/// Notes a block glibc's allocator just made at `block` for `size` bytes
/// (plus room for a footer, which the map's blocks leave unwritten);
/// `false` when it cannot be (an address beyond the map, a map the kernel
/// would not give), and then the block needs a record and its footer.
///
/// # Safety
/// `block` is a live block of glibc's allocator, of at least `size` bytes.
#[inline(always)]
pub unsafe fn insert(block: *mut u8, size: usize, counts_as_new: bool) -> bool {
    let Some(cell) = cell(block as usize, true) else {
        return false;
    };
    // SAFETY: per the contract.
    let state = match unsafe { usable_size(block) } {
        Some(usable) if usable >= size && usable - size <= MAX_SLACK => (usable - size) as u8 + 1,
        _ => INEXACT,
    };
    cell.store(state, Ordering::Relaxed);
    counts().allocated(size, counts_as_new);
    true
}

/// Forgets the block at `block` if the map has it: `true`, and the caller
/// may free it (or reallocate it: `counts_as_free` false); `false` when
/// it has a record instead. `size`: the block's size if the caller knows
/// it (a Rust deallocation), else it is worked out as a dump would.
///
/// Waits, with the block already out of the map, while a dump lists the
/// map's blocks ([`Listing`]): the caller is then a thread the dump could
/// not stop, and must not free what the dump may be reading.
#[inline(always)]
pub fn remove(block: *mut u8, size: Option<usize>, counts_as_free: bool) -> bool {
    let Some(cell) = cell(block as usize, false) else {
        return false;
    };
    let state = cell.load(Ordering::Relaxed);
    if state == ABSENT {
        return false;
    }
    cell.store(ABSENT, Ordering::Relaxed);
    // The store above before the load below: the dump's process-wide
    // barrier (`Listing::begin`) orders this thread's memory accesses,
    // so either the dump sees the byte cleared or this sees `LISTING`.
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    if LISTING.load(Ordering::Relaxed) {
        wait_for_listing();
    }
    let size = size.unwrap_or_else(|| {
        // SAFETY: the block is live until the caller frees it, and the map
        // had it, so glibc made it.
        size_of_state(unsafe { usable_size(block) }, state)
    });
    counts().freed(size, counts_as_free);
    true
}

/// Counts a free the map did not see: a block of the map that a
/// reallocation moved (`remove` was told it was not a free).
#[inline(always)]
pub fn count_move() {
    counts().moved();
}

/// The size a block had when it went in the map, from its usable size
/// now and its byte.
#[inline(always)]
fn size_of_state(usable: Option<usize>, state: u8) -> usize {
    let usable = usable.unwrap_or(0);
    if state == INEXACT {
        usable.saturating_sub(crate::live::FOOTER_BYTES)
    } else {
        usable.saturating_sub(usize::from(state) - 1)
    }
}

#[cold]
fn wait_for_listing() {
    while LISTING.load(Ordering::Acquire) {
        sys::yield_now();
    }
}

/// The usable size of a live block of glibc's allocator, read from its
/// chunk header (the word before the block: the chunk's size, whose three
/// low bits are flags), as glibc's `malloc_usable_size` reads it; `None`
/// for a header no live chunk has.
///
/// # Safety
/// `block` is a live block of glibc's allocator.
#[inline(always)]
unsafe fn usable_size(block: *mut u8) -> Option<usize> {
    const IS_MMAPPED: usize = 2;
    const FLAGS: usize = 7;
    const WORD: usize = size_of::<usize>();
    // SAFETY: glibc keeps the chunk's size in the word before every block
    // it hands out.
    let header = unsafe { block.cast::<usize>().sub(1).read() };
    let chunk = header & !FLAGS;
    if chunk < 4 * WORD {
        return None;
    }
    // A chunk served by `mmap` has its own header before it; an in-use
    // chunk's usable bytes run to the end of the next chunk's first word
    // (its `prev_size`, unused while this one is in use).
    Some(if header & IS_MMAPPED != 0 {
        chunk - 2 * WORD
    } else {
        chunk - WORD
    })
}

/// Counters of the map's blocks, one set per registered thread, written
/// only by their own thread (a load and a store, no atomic read-modify-
/// write) and summed by readers.
#[repr(C, align(64))]
struct Counts {
    allocations: AtomicU64,
    frees: AtomicU64,
    /// Blocks and bytes put in the map less those taken out, modulo 2^64
    /// (one thread's may go "negative": it freed others' blocks).
    live_count: AtomicU64,
    live_bytes: AtomicU64,
}

/// The counters of threads beyond the registry, shared (atomic adds).
static SHARED_COUNTS: Counts = Counts {
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    live_count: AtomicU64::new(0),
    live_bytes: AtomicU64::new(0),
};
static COUNTS: AtomicPtr<Counts> = AtomicPtr::new(core::ptr::null_mut());

thread_local! {
    /// This thread's counters, or null before its first block.
    static MY_COUNTS: Cell<*const Counts> = const { Cell::new(core::ptr::null()) };
}

/// The calling thread's counters.
#[inline(always)]
fn counts() -> CountsRef {
    let mine = MY_COUNTS.get();
    if mine.is_null() {
        return my_counts();
    }
    // SAFETY: set by `my_counts` to this thread's slot of the counters,
    // mapped for the life of the process.
    CountsRef::Own(unsafe { &*mine })
}

#[cold]
fn my_counts() -> CountsRef {
    let index = crate::threads::current().index as usize;
    let all = sys::map_once(&COUNTS, MAX_THREADS * size_of::<Counts>());
    match all {
        Some(all) if index < MAX_THREADS => {
            // SAFETY: `index` is below the array's length, and the slot is
            // this thread's alone (registry indices are never reused).
            let mine = unsafe { &*all.add(index) };
            MY_COUNTS.set(mine);
            CountsRef::Own(mine)
        }
        _ => CountsRef::Shared,
    }
}

enum CountsRef {
    Own(&'static Counts),
    Shared,
}

impl CountsRef {
    /// Adds `by` to the four counters.
    #[inline(always)]
    fn add(self, by: [u64; 4]) {
        match self {
            CountsRef::Own(c) => {
                for (counter, by) in c.fields().into_iter().zip(by) {
                    bump(counter, by);
                }
            }
            CountsRef::Shared => {
                for (counter, by) in SHARED_COUNTS.fields().into_iter().zip(by) {
                    counter.fetch_add(by, Ordering::Relaxed);
                }
            }
        }
    }

    #[inline(always)]
    fn allocated(self, bytes: usize, counts_as_new: bool) {
        self.add([u64::from(counts_as_new), 0, 1, bytes as u64]);
    }

    #[inline(always)]
    fn freed(self, bytes: usize, counts_as_free: bool) {
        self.add([
            0,
            u64::from(counts_as_free),
            1u64.wrapping_neg(),
            (bytes as u64).wrapping_neg(),
        ]);
    }

    #[inline(always)]
    fn moved(self) {
        self.add([0, 1, 0, 0]);
    }
}

impl Counts {
    fn fields(&self) -> [&AtomicU64; 4] {
        [
            &self.allocations,
            &self.frees,
            &self.live_count,
            &self.live_bytes,
        ]
    }
}

/// Adds to a counter only this thread writes.
#[inline(always)]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// The map's blocks so far, summed over every thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub allocations: u64,
    pub frees: u64,
    pub live_count: u64,
    pub live_bytes: u64,
}

/// Sums every thread's counters (racy against running threads, exact
/// when they are stopped).
pub fn totals() -> Totals {
    let mut sums = [0u64; 4];
    let mut add = |c: &Counts| {
        for (sum, counter) in sums.iter_mut().zip(c.fields()) {
            *sum = sum.wrapping_add(counter.load(Ordering::Relaxed));
        }
    };
    add(&SHARED_COUNTS);
    let all = COUNTS.load(Ordering::Acquire);
    if !all.is_null() {
        for index in 0..crate::threads::registered_count().min(MAX_THREADS as u64) {
            // SAFETY: below the array's length; the counters are atomics.
            add(unsafe { &*all.add(index as usize) });
        }
    }
    // A sum read while threads run may be caught "below zero".
    let floor = |sum: u64| if sum > u64::MAX / 2 { 0 } else { sum };
    Totals {
        allocations: sums[0],
        frees: sums[1],
        live_count: floor(sums[2]),
        live_bytes: floor(sums[3]),
    }
}

/// Bytes the map and its counters occupy (resident pages of the maps are
/// not asked for: each region's map counts as the pages its blocks could
/// touch, at most a 16th of the blocks' bytes).
pub fn tracking_bytes(live_bytes: u64) -> u64 {
    let threads = crate::threads::registered_count().min(MAX_THREADS as u64);
    live_bytes / (1 << GRANULE_SHIFT) + threads * size_of::<Counts>() as u64
}

/// A dump's hold on the map: from [`Listing::begin`] until it is dropped,
/// a thread freeing one of the map's blocks waits (after taking it out of
/// the map), so the blocks the dump lists stay allocated while it reads
/// them, even in threads it could not stop.
pub struct Listing(());

impl Listing {
    /// Starts a listing; `None` when the map is off (nothing to hold).
    pub fn begin() -> Option<Listing> {
        if !enabled() {
            return None;
        }
        LISTING.store(true, Ordering::SeqCst);
        // Every thread of the process runs a full barrier: a free that read
        // `LISTING` as false before this has its cleared byte visible now.
        sys::process_barrier();
        Some(Listing(()))
    }

    /// Calls `each(address, size)` for every block in the map, in address
    /// order. `residency` is scratch for `mincore`, a byte per page of a
    /// region's map.
    ///
    /// # Safety
    /// Every thread of the process is stopped, or waits in [`remove`]
    /// before it frees a block of the map, or this is a forked copy of the
    /// process: no block listed is freed meanwhile. (A thread that was not
    /// stopped may add blocks: those may or may not be listed.)
    pub unsafe fn for_each(&self, residency: &mut [u8], mut each: impl FnMut(u64, u64)) {
        for (region, map) in MAPS.iter().enumerate() {
            let map = map.load(Ordering::Acquire);
            if map.is_null() {
                continue;
            }
            let start = map as usize;
            sys::resident_runs(start, start + REGION_MAP_BYTES, residency, |from, to| {
                // SAFETY: `[from, to)` is resident memory of this region's
                // map, page-aligned, so whole aligned words; read as atomics
                // (a thread the dump could not stop may still allocate).
                let words = unsafe {
                    core::slice::from_raw_parts(from as *const AtomicU64, (to - from) / 8)
                };
                for (word_index, word) in words.iter().enumerate() {
                    let word = word.load(Ordering::Relaxed);
                    if word == 0 {
                        continue;
                    }
                    for (byte_index, state) in word.to_le_bytes().into_iter().enumerate() {
                        if state == ABSENT {
                            continue;
                        }
                        let granule = (from - start + word_index * 8 + byte_index) as u64;
                        let address = ((region as u64) << REGION_SHIFT) | granule << GRANULE_SHIFT;
                        // SAFETY: the map has it, so glibc made it, and it is
                        // live and stays so (per the contract).
                        let usable = unsafe { usable_size(address as *mut u8) };
                        if usable.is_some() {
                            each(address, size_of_state(usable, state) as u64);
                        }
                    }
                }
            });
        }
    }

    /// Scratch bytes [`for_each`](Self::for_each) needs.
    pub fn residency_bytes() -> usize {
        REGION_MAP_BYTES.div_ceil(sys::PAGE)
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        LISTING.store(false, Ordering::Release);
    }
}
