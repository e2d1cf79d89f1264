//! The presence map: production mode's blocks without a record.
//!
//! In production mode (`stacks=sample`) most blocks are not in the stack
//! sample, and for them the dump needs only where they are and their size.
//! When glibc's allocator makes them (the `Tracker` around `System` with
//! the C functions ours, or the preload library), that takes no record at
//! all: a byte per 32 bytes of address space (glibc's smallest chunk, so
//! no two blocks start in the same 32 bytes) says whether a live block
//! starts there, at which of its two 16-byte-aligned places, and how many
//! of its usable bytes the program did not ask for (the "slack"). A dump
//! lists the nonzero bytes and reads each block's usable size from the
//! chunk header glibc keeps just before it, so the size the program asked
//! for is exact.
//!
//! What that saves, against a record: the record itself (24 bytes and its
//! tag), the shard lock on both sides, and on free the two loads that
//! missed the cache most (the footer at the block's end and the record's
//! tag). What remains is a store on allocation and a load and a store on
//! free, into a byte array 32 times smaller than the heap, whose line for a
//! block is often the one its neighbours (allocated together) just used.
//! Only blocks under [`LARGEST`] bytes go in the map: above that a record
//! takes less memory than the map's share of the block (1/32 of it), and
//! frees are rarer per byte. Blocks in the stack sample, bigger ones and
//! blocks of any other allocator keep their records and footers, and have
//! byte 0; so a free reads the byte first and takes the record path when
//! it is 0.
//!
//! The map is made of 32 MiB maps, one per GiB of address space that holds
//! such blocks, reserved as needed (`MAP_NORESERVE`: only the pages used
//! take memory) and named by a table of 2^17 pointers (the 47-bit address
//! space of a process). After a spike, pages of the map that hold no
//! block go back to the kernel ([`trim`]).
//!
//! A free takes no lock, so a dump that lists these blocks must know that
//! no thread it could not stop frees one (glibc may then give the top of
//! its heap back to the kernel) while it reads them: see [`Listing`].

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use crate::sys;
use crate::threads::MAX_THREADS;

/// The alignment of every block glibc's allocator hands out on 64-bit
/// targets.
pub const ALIGNMENT: usize = 16;
/// log2 of the bytes of address space one byte of the map stands for:
/// glibc's smallest chunk (`MINSIZE`, four words), so two blocks' starts
/// are at least that far apart.
const GRANULE_SHIFT: u32 = 5;
/// log2 of the address space one map covers (1 GiB).
const REGION_SHIFT: u32 = 30;
/// User addresses of an x86-64 or AArch64 process with 4-level page tables.
const ADDRESS_BITS: u32 = 47;
const REGIONS: usize = 1 << (ADDRESS_BITS - REGION_SHIFT);
/// Bytes of one region's map.
pub const REGION_MAP_BYTES: usize = 1 << (REGION_SHIFT - GRANULE_SHIFT);

/// Blocks this big or bigger keep their records: a record and footer (29
/// bytes) cost less than the map's 32nd of the block, and glibc never
/// serves such small blocks with `mmap` (whose free unmaps) unless the
/// program lowered its threshold.
pub const LARGEST: usize = 1 << 10;

/// A byte of the map: 0 for no block, else 1 + (whether the block starts
/// 16 bytes into its 32) + 2 × its slack (its usable bytes past the size
/// asked for).
const ABSENT: u8 = 0;
/// The largest slack a byte holds. glibc's is at most 4 + 47 bytes (the
/// footer's room, a chunk's rounding, a remainder too small to split off);
/// a block with more (`pvalloc`'s, one glibc served with `mmap`) gets a
/// record instead.
const MAX_SLACK: usize = (u8::MAX as usize - 2) / 2;

/// The byte for a block at `address` with `slack`.
#[inline(always)]
fn state_of(address: usize, slack: usize) -> u8 {
    (1 + ((address >> 4) & 1) + 2 * slack) as u8
}

/// The slack a byte holds.
#[inline(always)]
fn slack_of(state: u8) -> usize {
    usize::from(state - 1) >> 1
}

/// The address of the block whose byte is `state`, in the 32 bytes at
/// `granule_start`.
#[inline(always)]
fn address_of(granule_start: u64, state: u8) -> u64 {
    granule_start | u64::from((state - 1) & 1) << 4
}

static MAPS: [AtomicPtr<AtomicU8>; REGIONS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; REGIONS];

/// Whether production mode lists blocks here; set once at start.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Set while a dump reads the map and the blocks it lists (see [`Listing`]).
static LISTING: AtomicBool = AtomicBool::new(false);

/// Counts the starts and ends of [`trim`]'s work on one region's map: odd
/// while one is being trimmed (that of [`TRIM_REGION`]).
static TRIM_EPOCH: AtomicU64 = AtomicU64::new(0);
/// The region [`trim`] works on while [`TRIM_EPOCH`] is odd.
static TRIM_REGION: AtomicUsize = AtomicUsize::new(0);
/// Held by the one thread that trims, and by `fork`'s prepare handler (a
/// child must not start with a trim under way in a thread it lacks).
pub static TRIM_LOCK: sys::SpinLock<()> = sys::SpinLock::new(());

/// Turns the map on for blocks glibc's allocator makes from now on, if
/// the kernel can give a dump the barrier it needs
/// ([`sys::register_process_barrier`]), the process's `malloc` is ours
/// (so `System`'s blocks are glibc's, not those of an allocator preloaded
/// before us) and glibc's are what `__libc_malloc` returns (not under
/// valgrind: see `cmalloc::blocks_are_glibcs`). Never turns it off: blocks already in the map stay there.
/// The caller holds the thread's `Busy` (the symbol lookup may allocate).
pub fn enable() -> bool {
    #[cfg(all(feature = "c-malloc", target_os = "linux", target_env = "gnu"))]
    if !enabled()
        && sys::default_symbol(c"malloc") == Some(crate::cmalloc::malloc as *const () as usize)
        && crate::cmalloc::blocks_are_glibcs()
        && sys::register_process_barrier()
    {
        ENABLED.store(true, Ordering::Relaxed);
    }
    enabled()
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
    // Its pages are touched sparsely: never a 2 MiB huge page each.
    sys::map_once_small_pages(&MAPS[region], REGION_MAP_BYTES)
}

/// Notes a block glibc's allocator just made at `block` for `size` bytes
/// (asked without a footer's room, usually: see `crate::Placement`);
/// `false` when it cannot be (an address beyond the map, a map the kernel
/// would not give, more slack than a byte holds), and then the block
/// needs a record and its footer, or stays untracked.
///
/// # Safety
/// `block` is a live block of glibc's allocator, of at least `size` bytes.
#[inline(always)]
pub unsafe fn insert(block: *mut u8, size: usize, counts_as_new: bool) -> bool {
    // SAFETY: per the contract.
    let Some(slack) = (unsafe { usable_size(block) })
        .and_then(|usable| usable.checked_sub(size))
        .filter(|&slack| slack <= MAX_SLACK)
    else {
        return false;
    };
    let Some(cell) = cell(block as usize, true) else {
        return false;
    };
    // Release: a dump that reads the byte reads the chunk header glibc
    // wrote before it.
    let state = state_of(block as usize, slack);
    let region = block as usize >> REGION_SHIFT;
    // A trim may drop the byte's page if it found it empty: the byte is
    // stored again until no trim began or ended around the store. The
    // store before the second load, as in `remove`: with the trim's
    // process-wide barrier after it makes the epoch odd, either the trim
    // sees the byte (and keeps its page) or this sees the epoch move.
    loop {
        let before = TRIM_EPOCH.load(Ordering::Acquire);
        if before & 1 == 1 && TRIM_REGION.load(Ordering::Relaxed) == region {
            wait_for_trim(before);
            continue;
        }
        cell.store(state, Ordering::Release);
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        if TRIM_EPOCH.load(Ordering::Relaxed) == before {
            break;
        }
    }
    counts().allocated(size, counts_as_new);
    true
}

/// Forgets the block at `block` if the map has it: `Some(its size)`, and
/// the caller may free it (or reallocate it: `counts_as_free` false);
/// `None` when it has a record instead. `size`: the block's size if the
/// caller knows it (a Rust deallocation), else it is read as a dump would.
///
/// Waits, with the block already out of the map, while a dump lists the
/// map's blocks ([`Listing`]): the caller is then a thread the dump could
/// not stop, and must not free what the dump may be reading.
#[inline(always)]
pub fn remove(block: *mut u8, size: Option<usize>, counts_as_free: bool) -> Option<usize> {
    let (cell, state) = byte_of(block)?;
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
    Some(size)
}

/// Whether the map has the live block at `block`: a load, no lock, so a
/// signal handler may ask (`malloc_usable_size`).
pub fn holds(block: *mut u8) -> bool {
    byte_of(block).is_some()
}

/// The map's byte of the block at `block` and its value, if the map has
/// that block (not its 32-byte neighbour).
#[inline(always)]
fn byte_of(block: *mut u8) -> Option<(&'static AtomicU8, u8)> {
    let cell = cell(block as usize, false)?;
    let state = cell.load(Ordering::Relaxed);
    let granule_start = block as u64 & !((1 << GRANULE_SHIFT) - 1);
    (state != ABSENT && address_of(granule_start, state) == block as u64).then_some((cell, state))
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
    usable.unwrap_or(0).saturating_sub(slack_of(state))
}

#[cold]
fn wait_for_trim(epoch: u64) {
    while TRIM_EPOCH.load(Ordering::Acquire) == epoch {
        sys::yield_now();
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
pub(crate) unsafe fn usable_size(block: *mut u8) -> Option<usize> {
    const IS_MMAPPED: usize = 2;
    const FLAGS: usize = 7;
    const WORD: usize = size_of::<usize>();
    // SAFETY: glibc keeps the chunk's size in the word before every block
    // it hands out. Volatile: glibc's code (outside what Rust sees) may
    // set the word's low bit as it frees the chunk before.
    let header = unsafe { block.cast::<usize>().sub(1).read_volatile() };
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
/// write), and added to [`FOLDED`] every [`FOLD_EVERY`] changes or once
/// they hold [`FOLD_BYTES`] more than at the last fold, whichever comes
/// first; the peak samples read [`FOLDED`]'s live figures at no cost per
/// thread.
#[repr(C, align(64))]
struct Counts {
    allocations: AtomicU64,
    frees: AtomicU64,
    /// Blocks and bytes put in the map less those taken out, modulo 2^64
    /// (one thread's may go "negative": it freed others' blocks).
    live_count: AtomicU64,
    live_bytes: AtomicU64,
    /// Changes since the last fold (the owner's alone).
    unfolded: AtomicU64,
}

/// A thread's counters go to [`FOLDED`] after this many changes. A fold
/// adds to lines every thread writes (four contended atomic adds, ~250 ns
/// with two threads): at 128 changes it took ~2.5% of the default
/// workload's time, at 1024 a few tenths.
const FOLD_EVERY: u64 = 1024;
/// ... or once the thread's blocks hold this many bytes more than at its
/// last fold, so the peak (and `on=growth`) lag by at most this much (and
/// a block under [`LARGEST`]) per thread, as they did at 128 changes of
/// blocks under 1 KiB.
const FOLD_BYTES: u64 = 128 << 10;

/// The counters threads have folded, and those of threads beyond the
/// registry (which add here directly): atomic adds.
static FOLDED: Counts = Counts {
    allocations: AtomicU64::new(0),
    frees: AtomicU64::new(0),
    live_count: AtomicU64::new(0),
    live_bytes: AtomicU64::new(0),
    unfolded: AtomicU64::new(0),
};
static COUNTS: AtomicPtr<Counts> = AtomicPtr::new(core::ptr::null_mut());

/// The calling thread's counters.
#[inline(always)]
fn counts() -> CountsRef {
    let mine = crate::hot::with(|hot| hot.map_counts.get()).cast::<Counts>();
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
            crate::hot::with(|hot| hot.map_counts.set((mine as *const Counts).cast()));
            // What it counted since its last fold reaches the peak when it
            // exits (else a thread with fewer than FOLD_EVERY changes
            // would never show in it).
            FOLD_AT_EXIT.arm((mine as *const Counts).cast(), fold_at_exit);
            CountsRef::Own(mine)
        }
        _ => CountsRef::Shared,
    }
}

static FOLD_AT_EXIT: sys::ThreadExitCall = sys::ThreadExitCall::new();

/// At a thread's exit: folds its counters.
unsafe extern "C" fn fold_at_exit(counts: *mut core::ffi::c_void) {
    // SAFETY: armed with the thread's slot of the counters, mapped for the
    // life of the process.
    fold(unsafe { &*counts.cast::<Counts>() });
}

/// Changes counted by threads beyond the registry, which share
/// [`FOLDED`]: every [`FOLD_EVERY`]th samples the peak, as a fold does.
static SHARED_CHANGES: AtomicU64 = AtomicU64::new(0);

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
                bump(&c.unfolded, 1);
                // The thread's live bytes since its last fold, as signed.
                let grown = c.live_bytes.load(Ordering::Relaxed) as i64;
                if c.unfolded.load(Ordering::Relaxed) >= FOLD_EVERY || grown >= FOLD_BYTES as i64 {
                    fold(c);
                }
            }
            CountsRef::Shared => {
                for (counter, by) in FOLDED.fields().into_iter().zip(by) {
                    counter.fetch_add(by, Ordering::Relaxed);
                }
                if SHARED_CHANGES
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(FOLD_EVERY)
                {
                    crate::LIVE.sample_peak_now();
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

/// Moves a thread's counts into [`FOLDED`], then samples the peak (and
/// the growth trigger) with them: the map's blocks take part in the peak
/// every [`FOLD_EVERY`] changes or [`FOLD_BYTES`] of growth per thread,
/// with no thread-local of their own. Taken out first and added after, so a reader summing meanwhile
/// misses them for an instant rather than counting them twice.
#[cold]
fn fold(own: &Counts) {
    for (counter, folded) in own.fields().into_iter().zip(FOLDED.fields()) {
        let value = counter.load(Ordering::Relaxed);
        counter.store(0, Ordering::Relaxed);
        folded.fetch_add(value, Ordering::Relaxed);
    }
    own.unfolded.store(0, Ordering::Relaxed);
    let live = folded_live().1;
    let peak = raise(&PEAK_LIVE_BYTES, live);
    crate::LIVE.sample_peak_now();
    if peak >= TRIM_FROM && live < peak / 4 {
        trim(live);
    }
}

/// A trim is considered once the map's blocks have held this many bytes
/// (a map of half a MiB) and hold less than a quarter of that; the next
/// one is measured from what they held at this one, so a spike freed
/// goes back in a few trims whose work adds up to one pass over it.
const TRIM_FROM: u64 = 16 << 20;

/// Gives back the map's pages that hold no block (`MADV_DONTNEED`), after
/// a spike: the map then keeps a 32nd of what lives, not of the most that
/// ever lived. `live`: the bytes the map's blocks hold now, the peak a
/// next trim is measured from. Runs in the thread whose fold found it
/// due (a free, usually), one at a time; reads a 32nd of the spike's
/// heap once.
///
/// One region's map at a time: an allocation in that region waits, others
/// do not; an allocation that a trim's start or end overlapped stores its
/// byte again (see `insert`). A free's zero needs no such care.
#[cold]
#[inline(never)]
fn trim(live: u64) {
    let Some(_trimming) = TRIM_LOCK.try_lock() else {
        return;
    };
    // The next trim is measured from here, whatever happens below (else a
    // refused barrier or scratch would have every fold try again).
    PEAK_LIVE_BYTES.store(live, Ordering::Relaxed);
    let Some(pages) = sys::Scratch::new(Listing::scratch_pages() * 8) else {
        return;
    };
    let Some(entries) = pages.take::<u64>(Listing::scratch_pages()) else {
        return;
    };
    for (region, map) in MAPS.iter().enumerate() {
        let map = map.load(Ordering::Acquire);
        if map.is_null() {
            continue;
        }
        let start = map as usize;
        TRIM_REGION.store(region, Ordering::Relaxed);
        TRIM_EPOCH.fetch_add(1, Ordering::SeqCst);
        if sys::process_barrier() {
            sys::written_runs(start, start + REGION_MAP_BYTES, entries, |from, to| {
                // Runs of pages holding only zeros, dropped a run at a time.
                let mut zeros: Option<usize> = None;
                for page in (from..to).step_by(sys::PAGE).chain([to]) {
                    let empty = page < to && {
                        // SAFETY: a written page of this region's map, read
                        // as its byte atomics (see `Listing::for_each`).
                        let bytes = unsafe {
                            core::slice::from_raw_parts(page as *const AtomicU8, sys::PAGE)
                        };
                        bytes.iter().all(|b| b.load(Ordering::Acquire) == ABSENT)
                    };
                    match (empty, zeros) {
                        (true, None) => zeros = Some(page),
                        (false, Some(first)) => {
                            // A store of a nonzero byte into them meanwhile
                            // is made again after the trim (see `insert`).
                            // SAFETY: pages of our map holding only zeros,
                            // which read back as zeros once dropped.
                            unsafe { sys::discard(first as *mut u8, page - first) };
                            zeros = None;
                        }
                        _ => {}
                    }
                }
            });
        }
        TRIM_EPOCH.fetch_add(1, Ordering::Release);
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

/// Raises `peak` to `value` if that is more, and returns the peak: a
/// load, and a read-modify-write (which takes the line from other
/// threads) only when the peak moves, as it seldom does.
#[inline(always)]
pub(crate) fn raise(peak: &AtomicU64, value: u64) -> u64 {
    let current = peak.load(Ordering::Relaxed);
    if value <= current {
        return current;
    }
    peak.fetch_max(value, Ordering::Relaxed).max(value)
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

/// Sums every thread's counters: exact when the threads are stopped,
/// otherwise off by what they change meanwhile. Reads a line per thread
/// ever registered: for `Tracker::stats` and dumps, not per allocation.
pub fn totals() -> Totals {
    let mut sums = FOLDED.fields().map(|c| c.load(Ordering::Relaxed));
    let all = COUNTS.load(Ordering::Acquire);
    if !all.is_null() {
        for index in 0..crate::threads::registered_count().min(MAX_THREADS as u64) {
            // SAFETY: below the array's length; the counters are atomics.
            let own = unsafe { &*all.add(index as usize) };
            for (sum, counter) in sums.iter_mut().zip(own.fields()) {
                *sum = sum.wrapping_add(counter.load(Ordering::Relaxed));
            }
        }
    }
    Totals::from_sums(sums)
}

/// The live blocks and bytes as folded so far (each thread's changes
/// since its last fold left out): what the peak samples read, a few
/// loads whatever the number of threads.
pub fn folded_live() -> (u64, u64) {
    let totals = Totals::from_sums(FOLDED.fields().map(|c| c.load(Ordering::Relaxed)));
    (totals.live_count, totals.live_bytes)
}

impl Totals {
    fn from_sums(sums: [u64; 4]) -> Totals {
        // A sum read while threads run may be caught "below zero".
        let floor = |sum: u64| if sum > u64::MAX / 2 { 0 } else { sum };
        Totals {
            allocations: sums[0],
            frees: sums[1],
            live_count: floor(sums[2]),
            live_bytes: floor(sums[3]),
        }
    }
}

/// The most bytes the map's blocks have held at a fold since the last
/// [`trim`]: the map's pages cover at least this much heap.
static PEAK_LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes the map and its counters occupy, estimated without asking the
/// kernel: a 32nd of the most bytes its blocks have held since the last
/// trim, or of `live_bytes` if more.
pub fn tracking_bytes(live_bytes: u64) -> u64 {
    let threads = crate::threads::registered_count().min(MAX_THREADS as u64);
    let covered = live_bytes.max(PEAK_LIVE_BYTES.load(Ordering::Relaxed));
    covered / (1 << GRANULE_SHIFT) + threads * size_of::<Counts>() as u64
}

/// A dump's hold on the map: from [`Listing::begin`] until it is dropped,
/// a thread freeing one of the map's blocks waits (after taking it out of
/// the map), so the blocks the dump lists stay allocated while it reads
/// them, even in threads it could not stop.
pub struct Listing {
    /// Whether the process-wide barrier was made: without it, a thread the
    /// dump could not stop may free a block the dump lists.
    barrier: bool,
}

impl Listing {
    /// Starts a listing; `None` when the map is off (nothing to hold).
    pub fn begin() -> Option<Listing> {
        if !enabled() {
            return None;
        }
        LISTING.store(true, Ordering::SeqCst);
        // Every thread of the process runs a full barrier: a free that read
        // `LISTING` as false before this has its cleared byte visible now.
        let barrier = sys::process_barrier();
        Some(Listing { barrier })
    }

    /// Whether the blocks may be listed and read: with the barrier made,
    /// or with no thread of the program running (`all_held`: every thread
    /// stopped, or this is the fork's child).
    pub fn may_list(&self, all_held: bool) -> bool {
        self.barrier || all_held
    }

    /// Calls `each(address, size)` for every block in the map, in address
    /// order. `pages`: scratch, an entry per page of a region's map
    /// ([`Listing::scratch_pages`]).
    ///
    /// # Safety
    /// Every thread of the process is stopped, or waits in [`remove`]
    /// before it frees a block of the map (see [`may_list`]
    /// (Self::may_list)), or this is a forked copy of the process: no block
    /// listed is freed meanwhile. (A thread that was not stopped may add
    /// blocks: those may or may not be listed.)
    pub unsafe fn for_each(&self, pages: &mut [u64], mut each: impl FnMut(u64, u64)) {
        for (region, map) in MAPS.iter().enumerate() {
            let map = map.load(Ordering::Acquire);
            if map.is_null() {
                continue;
            }
            let start = map as usize;
            // Pages ever written, swapped out or not: a page of the map
            // untouched for long may be, and its blocks are still live.
            sys::written_runs(start, start + REGION_MAP_BYTES, pages, |from, to| {
                // Read as the byte atomics they are (a thread that was not
                // stopped may still store one; Rust's memory model does not
                // allow racing atomic accesses of different sizes, so not
                // as words).
                let first = from as *const AtomicU8;
                // SAFETY: `[from, to)` is memory of this region's map.
                let bytes = unsafe { core::slice::from_raw_parts(first, to - from) };
                for (index, state) in bytes.iter().enumerate() {
                    let state = state.load(Ordering::Acquire);
                    if state == ABSENT {
                        continue;
                    }
                    let granule = (from - start + index) as u64;
                    let address = address_of(
                        ((region as u64) << REGION_SHIFT) | granule << GRANULE_SHIFT,
                        state,
                    );
                    // SAFETY: the map has it, so glibc made it, and it is
                    // live and stays so (per the contract).
                    let usable = unsafe { usable_size(address as *mut u8) };
                    if usable.is_some() {
                        each(address, size_of_state(usable, state) as u64);
                    }
                }
            });
        }
    }

    /// Scratch entries [`for_each`](Self::for_each) needs.
    pub fn scratch_pages() -> usize {
        REGION_MAP_BYTES.div_ceil(sys::PAGE)
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        LISTING.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_gives_back_the_blocks_address_and_slack() {
        for granule_start in [0x5555_0000_0000u64, 0x7fff_ffff_ffe0] {
            for offset in [0, 16] {
                for slack in [0, 1, 23, 51, MAX_SLACK] {
                    let address = (granule_start + offset) as usize;
                    let state = state_of(address, slack);
                    assert_ne!(state, ABSENT);
                    assert_eq!(slack_of(state), slack);
                    assert_eq!(address_of(granule_start, state), address as u64);
                }
            }
        }
    }

    #[test]
    fn two_of_glibcs_blocks_never_share_a_byte() {
        // Chunks are 16-aligned and at least 32 bytes; a block starts 16
        // bytes into its chunk.
        for chunk in (0..256u64).step_by(16) {
            let (first, next) = (chunk + 16, chunk + 32 + 16);
            assert_ne!(first >> GRANULE_SHIFT, next >> GRANULE_SHIFT);
        }
    }
}
