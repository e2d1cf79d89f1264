//! The operating-system services the tracker needs, each wrapped so the
//! rest of the crate stays free of raw `libc` calls (it names `libc`'s
//! constants and types, never its functions): mappings, a spin lock and
//! futexes, thread and process ids, clocks, signals, files and
//! directories, threads, the fork of a snapshot and the loader's list of
//! objects. Nothing here allocates on the heap or panics; a wrapper that
//! can fail returns the `errno` it saw (so no caller depends on `errno`
//! surviving until it reads it), and the ones on the allocation path are
//! `#[inline]`.

use core::cell::UnsafeCell;
use core::ffi::CStr;
use core::ops::ControlFlow;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The page size, assumed where it cannot matter for correctness (rounding
/// table sizes); the dump records the real one.
pub const PAGE: usize = 4096;

/// Rounds `bytes` up to whole pages.
pub const fn round_to_pages(bytes: usize) -> usize {
    bytes.div_ceil(PAGE) * PAGE
}

/// The tracker's own mappings, so that a dump can tell them from the
/// program's anonymous memory (which it scans for pointers: the tracker's
/// tables hold every block's address). Lock-free slots of `start, end`:
/// taking a lock here could leave a forked dump child waiting for a lock
/// held by a thread that does not exist in it.
mod own {
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    pub const SLOTS: usize = 1024;
    /// A slot being filled: claimed, its end not yet written.
    const CLAIMED: usize = 1;
    /// `START[i]`: the start of a mapping (0: a free slot); `END[i]` its end.
    static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static END: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    /// A mapping could not be recorded (every slot taken): a dump can no
    /// longer tell the tracker's memory from the program's.
    static FULL: AtomicBool = AtomicBool::new(false);

    /// Records `[start, start + bytes)` as the tracker's: a slot is
    /// claimed, its end written, then its start, so a reader never sees a
    /// start without its end.
    pub fn add(start: usize, bytes: usize) {
        for (slot, end) in START.iter().zip(&END) {
            if slot
                .compare_exchange(0, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // The kernel maps whole pages: so does the record.
                end.store(
                    start + bytes.next_multiple_of(super::page_size()),
                    Ordering::Release,
                );
                slot.store(start, Ordering::Release);
                return;
            }
        }
        FULL.store(true, Ordering::Relaxed);
    }

    /// Forgets the mapping that starts at `start`.
    pub fn remove(start: usize) {
        if let Some(index) = START
            .iter()
            .position(|s| s.load(Ordering::Acquire) == start)
        {
            START[index].store(0, Ordering::Release);
        }
    }

    /// Forgets a record of `start` shorter than `bytes` (a mapping grown in
    /// place, recorded again at its new size).
    pub fn remove_shorter(start: usize, bytes: usize) {
        let end = start + bytes.next_multiple_of(super::page_size());
        if let Some(index) = START.iter().zip(&END).position(|(s, e)| {
            s.load(Ordering::Acquire) == start && e.load(Ordering::Acquire) < end
        }) {
            START[index].store(0, Ordering::Release);
        }
    }

    /// Calls `each(start, end)` for every mapping of the tracker's; `false`
    /// when some mapping could not be recorded.
    pub fn for_each(mut each: impl FnMut(usize, usize)) -> bool {
        for (s, e) in START.iter().zip(&END) {
            let s = s.load(Ordering::Acquire);
            if s > CLAIMED {
                each(s, e.load(Ordering::Acquire).max(s + 1));
            }
        }
        !FULL.load(Ordering::Relaxed)
    }
}

/// At most this many mappings of the tracker's are recorded.
pub const MAX_OWN_MAPPINGS: usize = own::SLOTS;

/// Calls `each(start, end)` for every mapping the tracker made for itself
/// (its tables, a dump's scratch): never the program's memory.
/// `false` when some mapping could not be recorded (more than
/// [`MAX_OWN_MAPPINGS`]): then no anonymous memory can be told apart.
pub fn for_each_own_mapping(each: impl FnMut(usize, usize)) -> bool {
    own::for_each(each)
}

/// Maps `bytes` of zeroed, private, read-write memory outside the tracked
/// heap, recorded as the tracker's. `None` when the kernel refuses.
pub fn map_zeroed(bytes: usize) -> Option<*mut u8> {
    map_anonymous(
        bytes,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_NORESERVE,
    )
}

/// [`map_zeroed`] for memory that is read before it is written (a hash
/// table probed for free slots): every page is made writable now, in one
/// call. A never-touched page that is read first maps the shared zero page,
/// and the write after it then faults again and copies it, which in a
/// process with threads on other CPUs also flushes their TLBs (10–20% of
/// the tracker's CPU time on a program interning millions of stacks).
pub fn map_zeroed_populated(bytes: usize) -> Option<*mut u8> {
    map_anonymous(
        bytes,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_NORESERVE | libc::MAP_POPULATE,
    )
}

/// Maps `bytes` of zeroed read-write memory that a process forked from
/// this one shares with it (writes on either side are seen by the other).
pub fn map_shared_zeroed(bytes: usize) -> Option<*mut u8> {
    map_anonymous(bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED)
}

/// Reserves `bytes` of address space that cannot be touched
/// (`PROT_NONE`): it costs no memory, only room in the address space.
pub fn reserve_address_space(bytes: usize) -> Option<*mut u8> {
    map_anonymous(
        bytes,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_NORESERVE,
    )
}

/// An anonymous mapping (`MAP_ANONYMOUS` is added to `flags`), recorded
/// as the tracker's; `None` for 0 bytes or when the kernel refuses.
fn map_anonymous(bytes: usize, protection: i32, flags: i32) -> Option<*mut u8> {
    let ptr = map_new(bytes, protection, flags | libc::MAP_ANONYMOUS, -1)?;
    own::add(ptr as usize, bytes);
    Some(ptr)
}

/// Maps the first `len` bytes of the open file `fd` read-only and
/// private; the mapping stays valid after `fd` is closed. `None` for 0
/// bytes or when the kernel refuses. Release it with [`unmap`].
pub fn map_file_read_only(fd: i32, len: usize) -> Option<*const u8> {
    map_new(len, libc::PROT_READ, libc::MAP_PRIVATE, fd).map(|ptr| ptr.cast_const())
}

/// A new mapping at no address hint, of `fd` or (with `MAP_ANONYMOUS`)
/// of fresh zeroed memory; `None` for 0 bytes or when the kernel refuses.
fn map_new(bytes: usize, protection: i32, flags: i32, fd: i32) -> Option<*mut u8> {
    if bytes == 0 {
        return None;
    }
    // SAFETY: a new mapping with no address hint and without MAP_FIXED
    // touches no existing memory; a bad `fd` fails, and the result is
    // checked for MAP_FAILED.
    let ptr = unsafe { libc::mmap(core::ptr::null_mut(), bytes, protection, flags, fd, 0) };
    (ptr != libc::MAP_FAILED).then_some(ptr.cast())
}

/// Returns a mapping made by one of the `map_*` functions above,
/// [`reserve_address_space`] or [`remap`].
///
/// # Safety
/// `ptr` and `bytes` must describe exactly one earlier mapping result
/// that nothing uses any more.
pub unsafe fn unmap(ptr: *mut u8, bytes: usize) {
    // SAFETY: the caller guarantees the range is ours and unused. A failure
    // (impossible for a range we mapped) would only leak address space.
    unsafe {
        libc::munmap(ptr.cast(), bytes);
    }
    own::remove(ptr as usize);
}

/// Grows a mapping made by [`map_zeroed`] (or by this function) from
/// `old_bytes` to `new_bytes`, moving it if it cannot grow in place: the
/// kernel moves the page tables, not the contents. The new part is zeroed.
/// `None` when the kernel refuses; the old mapping is then unchanged.
///
/// # Safety
/// `ptr` and `old_bytes` must describe exactly one earlier mapping result,
/// and nothing may use the old address once this returns `Some`.
pub unsafe fn remap(ptr: *mut u8, old_bytes: usize, new_bytes: usize) -> Option<*mut u8> {
    // SAFETY: the caller guarantees the range is one mapping of ours;
    // MREMAP_MAYMOVE leaves it intact on failure.
    let moved = unsafe { libc::mremap(ptr.cast(), old_bytes, new_bytes, libc::MREMAP_MAYMOVE) };
    if moved == libc::MAP_FAILED {
        None
    } else {
        // Recorded before the old record goes: a reader never finds
        // neither.
        own::add(moved as usize, new_bytes);
        if moved != ptr.cast() {
            own::remove(ptr as usize);
        } else {
            // Grown in place: the first record (the old size) goes.
            own::remove_shorter(ptr as usize, new_bytes);
        }
        Some(moved.cast())
    }
}

/// Calls `run(from, to)` for each run of pages within `[start, end)` (one
/// mapping of ours, page-aligned) that were ever written: in memory or
/// swapped out, as `/proc/self/pagemap` says (`entries`: room for that
/// many pages at a time). Falls back to [`resident_runs`] (in memory only)
/// where the file cannot be read. Reading a run brings swapped pages back.
pub fn written_runs(start: usize, end: usize, entries: &mut [u64], run: impl FnMut(usize, usize)) {
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    let page = page_size();
    let Ok(fd) = open_read_only(c"/proc/self/pagemap") else {
        // SAFETY: reinterpreting the entries' bytes as the byte per page
        // `mincore` fills: plain integers, no invalid values.
        let residency = unsafe {
            core::slice::from_raw_parts_mut(entries.as_mut_ptr().cast::<u8>(), entries.len() * 8)
        };
        return resident_runs(start, end, residency, run);
    };
    let ask = |at: usize, batch: &mut [u64]| {
        // SAFETY: reinterpreting the entries as bytes for `read_at`: plain
        // integers, any bytes are a value.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(batch.as_mut_ptr().cast::<u8>(), batch.len() * 8)
        };
        read_at(fd, bytes, (at / page * 8) as u64) == Ok(bytes.len())
    };
    // A page that cannot be read ends the walk; the pages before it were
    // written.
    page_runs(
        start,
        end,
        entries,
        ask,
        |entry| entry & (PRESENT | SWAPPED) != 0,
        true,
        run,
    );
    let _ = close(fd);
}

/// Calls `run(from, to)` for each run of resident pages within `[start,
/// end)` (one mapping), clipped to that range, asking the kernel
/// `residency.len()` pages at a time. Pages never touched are not resident
/// (reading them would only find zeros), nor are pages swapped out.
/// Nothing more is called once the kernel cannot say (the mapping changed
/// under us, or is not one).
pub fn resident_runs(
    start: usize,
    end: usize,
    residency: &mut [u8],
    run: impl FnMut(usize, usize),
) {
    let page = page_size();
    let ask = |at: usize, batch: &mut [u8]| {
        // SAFETY: `at` is page-aligned and `[at, at + batch.len() pages)`
        // lies in one mapping (rounded up to its last page); `batch` has
        // one byte per page.
        let answered = unsafe {
            libc::mincore(
                at as *mut libc::c_void,
                batch.len() * page,
                batch.as_mut_ptr(),
            )
        };
        answered == 0
    };
    page_runs(
        start,
        end,
        residency,
        ask,
        |state| state & 1 != 0,
        false,
        run,
    );
}

/// The runs of pages within `[start, end)` that `in_use` says are used,
/// given to `run(from, to)` clipped to that range. `ask(at, answers)` fills
/// one answer per page from the page-aligned `at`, for as many pages as
/// `answers` holds, and says whether it could; the walk stops at the first
/// batch it could not answer, giving the run open there if
/// `keep_open_run`.
fn page_runs<A: Copy>(
    start: usize,
    end: usize,
    answers: &mut [A],
    mut ask: impl FnMut(usize, &mut [A]) -> bool,
    in_use: impl Fn(A) -> bool,
    keep_open_run: bool,
    mut run: impl FnMut(usize, usize),
) {
    let page = page_size();
    if answers.is_empty() || start >= end {
        return;
    }
    let mut run = |from: usize, to: usize| run(from.max(start), to.min(end));
    let mut open: Option<usize> = None;
    let mut at = start / page * page;
    while at < end {
        let pages = ((end - at).div_ceil(page)).min(answers.len());
        if !ask(at, &mut answers[..pages]) {
            if let (Some(from), true) = (open, keep_open_run) {
                run(from, at);
            }
            return;
        }
        for (index, &answer) in answers[..pages].iter().enumerate() {
            let page_start = at + index * page;
            match (in_use(answer), open) {
                (true, None) => open = Some(page_start),
                (false, Some(from)) => {
                    run(from, page_start);
                    open = None;
                }
                _ => {}
            }
        }
        at += pages * page;
    }
    if let Some(from) = open {
        run(from, end);
    }
}

/// The system's page size (4096 where `sysconf` fails), read once.
pub fn page_size() -> usize {
    static SIZE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    match SIZE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions and does not allocate.
            let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let size = usize::try_from(size)
                .ok()
                .filter(|size| size.is_power_of_two())
                .unwrap_or(PAGE);
            SIZE.store(size, Ordering::Relaxed);
            size
        }
        size => size,
    }
}

/// Gives the whole pages inside `[start, start + bytes)` of a private
/// anonymous mapping back to the kernel; they read as zeros when touched
/// again. The partial pages at either end are left alone, so bytes outside
/// the range are never lost, whatever the page size.
///
/// # Safety
/// The range must lie inside one mapping made by [`map_zeroed`] or
/// [`remap`], and nothing may need its current contents.
pub unsafe fn discard(start: *mut u8, bytes: usize) {
    let page = page_size();
    let first = (start as usize).next_multiple_of(page);
    let end = (start as usize + bytes) / page * page;
    if end <= first {
        return;
    }
    // SAFETY: `first..end` lies inside the caller's range, is page-aligned,
    // and its contents are not needed (per the contract). A failure leaves
    // the pages as they were, which costs memory only.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
    }
}

/// The mapping published in `cell`, made on first use: `bytes` of zeroed
/// memory that is never unmapped. Threads racing to make it agree on one;
/// the losers return theirs.
#[inline]
pub fn map_once<T>(cell: &core::sync::atomic::AtomicPtr<T>, bytes: usize) -> Option<*mut T> {
    published_or_map(cell, bytes, false)
}

/// [`map_once`] for memory touched here and there: never backed by
/// transparent huge pages (each would take 2 MiB for a few bytes).
#[inline]
pub fn map_once_small_pages<T>(
    cell: &core::sync::atomic::AtomicPtr<T>,
    bytes: usize,
) -> Option<*mut T> {
    published_or_map(cell, bytes, true)
}

/// The fast path of [`map_once`], inlined (it runs on every allocation for
/// some cells): one load and a branch.
#[inline(always)]
fn published_or_map<T>(
    cell: &core::sync::atomic::AtomicPtr<T>,
    bytes: usize,
    small_pages: bool,
) -> Option<*mut T> {
    match cell.load(Ordering::Acquire) {
        current if !current.is_null() => Some(current),
        _ => map_and_publish(cell, bytes, small_pages),
    }
}

/// The first use of a [`map_once`] cell, out of line.
#[cold]
#[inline(never)]
fn map_and_publish<T>(
    cell: &core::sync::atomic::AtomicPtr<T>,
    bytes: usize,
    small_pages: bool,
) -> Option<*mut T> {
    let fresh = map_zeroed(bytes)?.cast::<T>();
    if small_pages {
        // SAFETY: advice on the mapping just made; a refusal (a kernel
        // without transparent huge pages) changes nothing.
        unsafe {
            libc::madvise(fresh.cast(), bytes, libc::MADV_NOHUGEPAGE);
        }
    }
    match cell.compare_exchange(
        core::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => Some(fresh),
        Err(winner) => {
            // SAFETY: `fresh` is the mapping we just made; nobody saw it.
            unsafe { unmap(fresh.cast(), bytes) };
            Some(winner)
        }
    }
}

/// Memory for plain-old-data values: all-zero bytes are a valid value.
///
/// # Safety
/// Implementors must be valid when every byte is zero and have no drop glue.
pub unsafe trait Zeroable: Copy {}

// SAFETY: integers are valid when zero and have no drop glue.
unsafe impl Zeroable for u8 {}
// SAFETY: as above.
unsafe impl Zeroable for u32 {}
// SAFETY: as above.
unsafe impl Zeroable for u64 {}
// SAFETY: a pair of integers.
unsafe impl Zeroable for (u64, u64) {}

/// A mapping owned by one dump: scratch space carved into typed slices,
/// returned to the kernel when dropped.
pub struct Scratch {
    base: *mut u8,
    len: usize,
    used: core::cell::Cell<usize>,
}

impl Scratch {
    /// Maps `bytes` (rounded up to pages) of scratch memory.
    pub fn new(bytes: usize) -> Option<Scratch> {
        let len = round_to_pages(bytes.max(1));
        let base = map_zeroed(len)?;
        Some(Scratch {
            base,
            len,
            used: core::cell::Cell::new(0),
        })
    }

    /// Carves a zeroed slice of `count` values; `None` when the mapping is
    /// exhausted. The slice borrows the scratch, so it cannot outlive the
    /// mapping, and the pieces never overlap (the cursor only moves on), so
    /// several may be held at once, as an arena hands them out.
    #[allow(clippy::mut_from_ref)]
    pub fn take<T: Zeroable>(&self, count: usize) -> Option<&mut [T]> {
        let align = core::mem::align_of::<T>();
        let start = self.used.get().checked_add(align - 1)? & !(align - 1);
        let bytes = count.checked_mul(core::mem::size_of::<T>())?;
        let end = start.checked_add(bytes)?;
        if end > self.len {
            return None;
        }
        self.used.set(end);
        // SAFETY: `start..end` is inside our mapping, aligned, never handed
        // out before (the cursor only moves on) and so not aliased, zero is
        // a valid `T`, and the borrow of `self` keeps the mapping alive.
        Some(unsafe { core::slice::from_raw_parts_mut(self.base.add(start).cast::<T>(), count) })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `new`; the slices
        // carved from it do not outlive the dump function that owns `self`.
        unsafe { unmap(self.base, self.len) }
    }
}

/// A test-and-test-and-set spin lock for short critical sections that never
/// call into the allocator. After a few hundred spins a waiter yields the
/// CPU, so a lock held across a dump costs waiters no CPU time to speak of.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through a guard, and the lock admits one
// guard at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 256 {
                    core::hint::spin_loop();
                    spins += 1;
                } else {
                    yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// The lock if it is free now; `None` if another holds it.
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(SpinGuard { lock: self })
    }

    /// Takes the lock and keeps it until [`force_unlock`](Self::force_unlock):
    /// for the fork handlers, which lock in one callback and unlock in
    /// another.
    pub fn lock_forever(&self) {
        core::mem::forget(self.lock());
    }

    /// A guard of the lock this thread took with
    /// [`lock_forever`](Self::lock_forever) and still holds: it reaches
    /// the value and releases nothing when dropped.
    ///
    /// # Safety
    /// The calling thread owns the lock through `lock_forever` and holds
    /// no other guard of it (nor reference into the value).
    pub unsafe fn assume_held(&self) -> core::mem::ManuallyDrop<SpinGuard<'_, T>> {
        core::mem::ManuallyDrop::new(SpinGuard { lock: self })
    }

    /// Releases a lock taken by [`lock_forever`](Self::lock_forever).
    ///
    /// # Safety
    /// The caller must own the lock through `lock_forever` and hold no
    /// reference into the value.
    pub unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves we hold the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves we hold the lock, and `&mut self` makes
        // this the only reference through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Sleeps while `word` holds `expected` (or until `timeout_ns` passes,
/// or a signal or spurious wake-up); callers loop on their condition.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) {
    let timeout = timeout_ns.map(|ns| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    });
    let timeout_ptr = timeout
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid aligned u32; FUTEX_WAIT only reads it and
    // sleeps; a spurious return is handled by the callers' loops.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timeout_ptr,
        );
    }
}

/// Wakes up to `count` threads sleeping on `word`.
pub fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: waking waiters on a valid futex word has no other effect.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        );
    }
}

/// Gives the CPU to another thread.
pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
}

/// Sleeps for `ns` nanoseconds (less if a signal interrupts it).
pub fn sleep_ns(ns: u64) {
    let duration = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid duration; a null remainder pointer is allowed.
    unsafe {
        libc::nanosleep(&duration, core::ptr::null_mut());
    }
}

// ---- Processes and threads ------------------------------------------------

/// `membarrier` commands (linux/membarrier.h).
const MEMBARRIER_CMD_GLOBAL: i32 = 1;
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: i32 = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: i32 = 1 << 4;

fn membarrier(command: i32) -> bool {
    // SAFETY: membarrier takes no pointers; an unknown command fails.
    unsafe { libc::syscall(libc::SYS_membarrier, command, 0, 0) == 0 }
}

/// Readies [`process_barrier`]; `false` when the kernel (or a sandbox,
/// or valgrind) has no `membarrier`.
pub fn register_process_barrier() -> bool {
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
}

/// Makes every running thread of the process execute a full memory
/// barrier before this returns (`membarrier`), so a plain store one of
/// them made before its next load is visible here. `false` if it could
/// not be done (the process was not registered: a forked child, which
/// registers now and retries, then the system-wide barrier).
pub fn process_barrier() -> bool {
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)
        || (register_process_barrier() && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
        || membarrier(MEMBARRIER_CMD_GLOBAL)
}

/// The calling thread's kernel id.
#[inline]
pub fn thread_id() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// This process's id. Async-signal-safe.
pub fn process_id() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// The real user id of this process.
pub fn user_id() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Ends the process at once with `status`: no exit handlers, no
/// destructors, no flushing of the C library's buffers.
pub fn exit_immediately(status: i32) -> ! {
    // SAFETY: `_exit` runs nothing of the program's and never returns.
    unsafe { libc::_exit(status) }
}

/// Forks the process with a raw `clone` system call: no `pthread_atfork`
/// handlers run, and the child's exit signal is 0 (not `SIGCHLD`), so only
/// a wait with `__WALL` ([`wait_for_child`]) sees it. `Ok(0)` in the
/// child, `Ok(pid)` in the parent, `Err(errno)` when there is no child.
///
/// # Safety
/// The child is a copy of the whole process with only the calling thread:
/// it must not allocate, take a lock another thread may hold, call into
/// pthreads (the C library's cached thread id is the parent's), or return
/// or unwind into the program; it ends with [`exit_immediately`].
pub unsafe fn fork_without_handlers() -> Result<u32, i32> {
    // SAFETY: a clone without CLONE_VM is a fork: the child gets a copy of
    // the address space and continues here on a copy of this stack; the
    // caller keeps the child to what is safe there.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if pid < 0 {
        Err(errno())
    } else {
        Ok(pid as u32)
    }
}

/// Waits for the child `pid` to end (retrying after signals) and returns
/// its wait status; `Err(errno)` if it cannot be waited for (`ECHILD`:
/// someone else reaped it). `__WALL`: children whose exit signal is not
/// `SIGCHLD` count too.
pub fn wait_for_child(pid: u32) -> Result<i32, i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let got = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL) };
        if got == pid as libc::pid_t {
            return Ok(status);
        }
        let errno = errno();
        if got < 0 && errno == libc::EINTR {
            continue;
        }
        return Err(errno);
    }
}

/// The soft limit on the main thread's stack size (`RLIMIT_STACK`);
/// `None` when unlimited or unknown.
pub fn stack_size_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) } == 0;
    (got && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Starts a detached thread running `run` (with a null argument); it
/// inherits the calling thread's signal mask. `false` if it cannot start.
pub fn spawn_detached_thread(run: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> bool {
    // SAFETY: zeroed attributes and thread id are valid out-parameters,
    // initialized by pthread_attr_init before use and destroyed once;
    // `run` is an `extern "C"` function, which aborts rather than unwinds.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        let mut thread: libc::pthread_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let created = libc::pthread_create(&mut thread, &attr, run, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        created == 0
    }
}

/// Names the calling thread (up to 15 bytes show, in `/proc` and
/// debuggers).
pub fn set_thread_name(name: &CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated name for this thread.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}

/// Registers `handler` to run at `exit` (and when `main` returns).
/// `false` if it cannot be registered.
pub fn at_exit(handler: extern "C" fn()) -> bool {
    // SAFETY: an `extern "C"` function, which aborts rather than unwinds.
    unsafe { libc::atexit(handler) == 0 }
}

/// Registers the three handlers of `pthread_atfork`: `prepare` before a
/// `fork`, `parent` and `child` after it on each side.
pub fn register_fork_handlers(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) {
    // SAFETY: `extern "C"` functions, which abort rather than unwind;
    // registration has no other precondition.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}

/// The value of the environment variable `name`, pointing into the
/// environment block: valid until the program changes the environment,
/// so callers copy what they keep at once. getenv neither allocates nor
/// locks in glibc.
pub fn environment_variable(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: getenv returned a NUL-terminated string.
    Some(unsafe { CStr::from_ptr(value) }.to_bytes())
}

/// The address of the function `name` in the C library the process has
/// loaded (`libc.so.6`, looked up there and in its dependencies, never
/// with `RTLD_NEXT`); `None` if there is no such library or symbol. The
/// loader may allocate (its error string).
pub fn c_library_symbol(name: &CStr) -> Option<usize> {
    // SAFETY: NUL-terminated names; RTLD_NOLOAD only returns a handle to
    // a library already loaded (every glibc process has it), and the
    // handle is not closed, as it was not opened.
    let found = unsafe {
        let handle = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
        if handle.is_null() {
            return None;
        }
        libc::dlsym(handle, name.as_ptr()) as usize
    };
    (found != 0).then_some(found)
}

/// The address `name` has for the program (the dynamic loader's default
/// lookup order: the executable, then preloaded libraries, then the
/// rest); `None` if nothing defines it. May allocate (`dlsym`'s error).
pub fn default_symbol(name: &CStr) -> Option<usize> {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the global scope.
    let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
    (found != 0).then_some(found)
}

/// One object the dynamic loader has loaded (the executable, a shared
/// library, the vDSO), as [`for_each_loaded_object`] shows it.
pub struct LoadedObject<'a> {
    info: &'a libc::dl_phdr_info,
}

impl LoadedObject<'_> {
    /// How far the object was loaded from the addresses its headers say.
    pub fn bias(&self) -> u64 {
        self.info.dlpi_addr
    }

    /// The path the loader knows it by; empty for the executable.
    pub fn name(&self) -> &[u8] {
        if self.info.dlpi_name.is_null() {
            return &[];
        }
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned
        // by the loader, alive while the object stays loaded.
        unsafe { CStr::from_ptr(self.info.dlpi_name) }.to_bytes()
    }

    /// The object's TLS module id (its index in each thread's DTV); 0 if
    /// it has no thread-local storage.
    pub fn tls_module_id(&self) -> u64 {
        self.info.dlpi_tls_modid as u64
    }

    /// The calling thread's TLS block of the object (0 if the object has
    /// none, or this thread's is not allocated yet).
    pub fn tls_block(&self) -> u64 {
        self.info.dlpi_tls_data as u64
    }

    /// The program headers.
    pub fn program_headers(&self) -> &[libc::Elf64_Phdr] {
        if self.info.dlpi_phdr.is_null() {
            return &[];
        }
        // SAFETY: the loader guarantees `dlpi_phnum` program headers at
        // `dlpi_phdr`, mapped while the object is loaded, which it stays
        // while the loader's lock is held for the callback.
        unsafe {
            core::slice::from_raw_parts(self.info.dlpi_phdr, usize::from(self.info.dlpi_phnum))
        }
    }
}

/// Calls `visit` with each object loaded now, in the loader's order (the
/// executable first), until it breaks. The loader's lock is held
/// meanwhile, so no object is unloaded under `visit`, and `visit` must not
/// load or unload one, nor allocate (another thread's allocation may be
/// waiting for that lock).
pub fn for_each_loaded_object<F>(mut visit: F)
where
    F: FnMut(&LoadedObject<'_>) -> ControlFlow<()>,
{
    unsafe extern "C" fn trampoline<F>(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int
    where
        F: FnMut(&LoadedObject<'_>) -> ControlFlow<()>,
    {
        // SAFETY: `data` is the `&mut F` passed below, alive for the whole
        // iteration and not used elsewhere meanwhile.
        let visit = unsafe { &mut *data.cast::<F>() };
        // SAFETY: the loader passes a valid `dl_phdr_info` for the
        // duration of the callback.
        let info = unsafe { &*info };
        let object = LoadedObject { info };
        match visit(&object) {
            ControlFlow::Continue(()) => 0,
            ControlFlow::Break(()) => 1,
        }
    }
    // SAFETY: `trampoline::<F>` has the callback's signature and uses
    // `data` only as the `F` passed here, which outlives the call; an
    // `extern "C"` function aborts rather than unwinds.
    unsafe {
        libc::dl_iterate_phdr(Some(trampoline::<F>), (&mut visit as *mut F).cast());
    }
}

/// A call made when a thread exits, with a value of that thread's
/// (`pthread_key_create`'s destructor: it runs in the exiting thread,
/// after its code returned, before or after Rust's thread-locals are
/// destroyed). One key for the whole process, made on first use.
pub struct ThreadExitCall {
    /// The key plus one; 0 before it is made, `u32::MAX` if it could not be.
    key: core::sync::atomic::AtomicU32,
}

impl ThreadExitCall {
    pub const fn new() -> ThreadExitCall {
        ThreadExitCall {
            key: core::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Arranges for `call(value)` when the calling thread exits; `false` if
    /// the C library has no key left. `call` must not unwind. May
    /// allocate (glibc's table for keys past the first 32).
    pub fn arm(
        &self,
        value: *const core::ffi::c_void,
        call: unsafe extern "C" fn(*mut core::ffi::c_void),
    ) -> bool {
        let mut key = self.key.load(Ordering::Acquire);
        if key == 0 {
            let mut made: libc::pthread_key_t = 0;
            // SAFETY: `made` is writable; `call` has the destructor's type.
            if unsafe { libc::pthread_key_create(&mut made, Some(call)) } != 0 {
                self.key.store(u32::MAX, Ordering::Release);
                return false;
            }
            key = match self
                .key
                .compare_exchange(0, made + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => made + 1,
                Err(theirs) => {
                    // SAFETY: our own key, which nothing used.
                    unsafe { libc::pthread_key_delete(made) };
                    theirs
                }
            };
        }
        if key == u32::MAX {
            return false;
        }
        // SAFETY: a key made above (or by another thread) and never deleted.
        unsafe { libc::pthread_setspecific(key - 1, value) == 0 }
    }
}

// ---- Signals ---------------------------------------------------------------

/// The set of every signal.
pub fn all_signals() -> libc::sigset_t {
    // SAFETY: a zeroed sigset is a valid value for sigfillset to fill.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

/// Blocks every signal on the calling thread (glibc's two internal ones
/// excepted: they cannot be blocked) and returns the mask it had, for
/// [`set_signal_mask`].
pub fn block_all_signals() -> libc::sigset_t {
    let all = all_signals();
    // SAFETY: a zeroed sigset is a valid out-parameter, filled before use.
    let mut previous: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: valid sigset pointers; only this thread's mask changes.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
    }
    previous
}

/// Makes `mask` the calling thread's signal mask.
pub fn set_signal_mask(mask: &libc::sigset_t) {
    // SAFETY: a valid sigset; only this thread's mask changes.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, core::ptr::null_mut());
    }
}

/// Unblocks `signal` on the calling thread.
pub fn unblock_signal(signal: i32) {
    // SAFETY: a zeroed sigset is valid to fill; only this thread's mask
    // changes.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
    }
}

/// The action installed for `signal`; `None` if there is no such signal.
pub fn signal_action(signal: i32) -> Option<libc::sigaction> {
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut current: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: querying only; `current` is a valid out-pointer.
    let got = unsafe { libc::sigaction(signal, core::ptr::null(), &mut current) } == 0;
    got.then_some(current)
}

/// Installs `action` for `signal`; `false` if the signal cannot be
/// handled (an invalid number, `SIGKILL`, `SIGSTOP`).
pub fn set_signal_action(signal: i32, action: &libc::sigaction) -> bool {
    // SAFETY: `action` is a valid sigaction; its handler, if any, is the
    // caller's choice and runs only when the signal arrives.
    unsafe { libc::sigaction(signal, action, core::ptr::null_mut()) == 0 }
}

/// Sends `signal` to the thread `thread` of this process.
pub fn signal_thread(thread: u32, signal: i32) -> Result<(), i32> {
    // SAFETY: a plain system call on this process's own thread.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_tgkill,
            libc::getpid(),
            thread as libc::pid_t,
            signal,
        )
    };
    zero_or_errno(sent)
}

/// Queues `signal` with `info` (`rt_tgsigqueueinfo`) for the thread
/// `thread` of this process; `Err(errno)` (`EAGAIN`: the queue of
/// pending signals is full; `ESRCH`: no such thread).
pub fn queue_signal_to_thread(
    thread: u32,
    signal: i32,
    info: &mut libc::siginfo_t,
) -> Result<(), i32> {
    // SAFETY: `info` is a valid siginfo; the target is this process's own
    // thread.
    let sent = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            thread as libc::pid_t,
            signal,
            info as *mut libc::siginfo_t,
        )
    };
    zero_or_errno(sent)
}

// ---- Clocks and errno -----------------------------------------------------

/// Nanoseconds on `clock` (`CLOCK_MONOTONIC` or `CLOCK_REALTIME`).
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; both clocks always exist.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The calling thread's `errno`. Async-signal-safe.
#[inline]
pub fn errno() -> i32 {
    // SAFETY: errno is thread-local; its location is valid for the thread.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`: the C contract of a failing
/// allocation, and how a signal handler gives back the value it found.
#[inline]
pub fn set_errno(value: i32) {
    // SAFETY: errno is thread-local; its location is valid for the thread.
    unsafe { *libc::__errno_location() = value };
}

// ---- Files and directories ------------------------------------------------

/// Opens the file at `path` for reading (close-on-exec, and without
/// blocking: a FIFO reads as empty instead of waiting for a writer).
pub fn open_read_only(path: &CStr) -> Result<i32, i32> {
    open(path, libc::O_RDONLY | libc::O_NONBLOCK, 0)
}

/// Opens the directory at `path` to list it with [`read_directory`].
pub fn open_directory(path: &CStr) -> Result<i32, i32> {
    open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Creates a new file at `path` with `mode` and opens it for writing:
/// never following a symlink, never replacing an existing file (`EEXIST`).
pub fn create_new_file(path: &CStr, mode: u32) -> Result<i32, i32> {
    open(
        path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        mode,
    )
}

/// `open(2)` with `flags | O_CLOEXEC` (and `mode` for a file it creates).
fn open(path: &CStr, flags: i32, mode: u32) -> Result<i32, i32> {
    // SAFETY: `path` is NUL-terminated; opening touches no memory of ours.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

/// `Ok` for a system call's 0, else `Err(errno)`.
fn zero_or_errno(result: impl Into<i64>) -> Result<(), i32> {
    if result.into() == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Closes `fd`, which the caller owns and uses no more. A failed close
/// can mean written data never reached the disk (NFS): `Err(errno)`.
pub fn close(fd: i32) -> Result<(), i32> {
    // SAFETY: closing a descriptor touches no memory; the caller owns it.
    zero_or_errno(unsafe { libc::close(fd) })
}

/// Reads into `out` from `fd`, retrying after signals: the bytes read
/// (0 at the end), or `Err(errno)`.
pub fn read(fd: i32, out: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: `out` is writable for its length.
        let n = unsafe { libc::read(fd, out.as_mut_ptr().cast(), out.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let errno = errno();
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

/// Reads into `out` from `fd` at `offset` (`pread`), retrying after
/// signals and short reads: the bytes read (fewer at the end), or
/// `Err(errno)`.
pub fn read_at(fd: i32, out: &mut [u8], offset: u64) -> Result<usize, i32> {
    let mut done = 0;
    while done < out.len() {
        let rest = &mut out[done..];
        // SAFETY: `rest` is writable for its length.
        let n = unsafe {
            libc::pread(
                fd,
                rest.as_mut_ptr().cast(),
                rest.len(),
                (offset + done as u64) as libc::off_t,
            )
        };
        if n > 0 {
            done += n as usize;
        } else if n == 0 {
            break;
        } else if errno() != libc::EINTR {
            return Err(errno());
        }
    }
    Ok(done)
}

/// Writes all of `bytes` to `fd`, retrying short writes and signals;
/// `Err(errno)` on failure (`EIO` if the file takes no more bytes).
pub fn write_all(fd: i32, mut bytes: &[u8]) -> Result<(), i32> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable buffer of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let errno = errno();
            if errno == libc::EINTR {
                continue;
            }
            return Err(errno);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        bytes = bytes.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

/// The size of the open file `fd` if it is a regular file; `None` for
/// anything else or on error.
pub fn regular_file_size(fd: i32) -> Option<u64> {
    // SAFETY: `stat` is plain data; all-zero is a valid value.
    let mut status: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `status` is a valid out-pointer; a bad `fd` fails.
    let ok = unsafe { libc::fstat(fd, &mut status) } == 0;
    (ok && status.st_mode & libc::S_IFMT == libc::S_IFREG).then_some(status.st_size as u64)
}

/// Whether `path` (symlinks followed) is a directory; `Err(errno)` when it
/// cannot be looked at (missing, no permission).
pub fn is_directory(path: &CStr) -> Result<bool, i32> {
    // SAFETY: `stat` is plain data; all-zero is a valid value.
    let mut status: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `status` a valid out-pointer.
    if unsafe { libc::stat(path.as_ptr(), &mut status) } != 0 {
        return Err(errno());
    }
    Ok(status.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Creates the directory `path` with `mode` (less the umask);
/// `Err(errno)`, `EEXIST` included, if it cannot.
pub fn make_directory(path: &CStr, mode: u32) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated.
    zero_or_errno(unsafe { libc::mkdir(path.as_ptr(), mode as libc::mode_t) })
}

/// Whether anything (a symbolic link included) is at `path`.
pub fn exists(path: &CStr) -> Result<bool, i32> {
    // SAFETY: `stat` is plain data; all-zero is a valid value.
    let mut status: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `status` a valid out-pointer.
    match zero_or_errno(unsafe { libc::lstat(path.as_ptr(), &mut status) }) {
        Ok(()) => Ok(true),
        Err(libc::ENOENT) => Ok(false),
        Err(errno) => Err(errno),
    }
}

/// Renames `from` to `to`, failing with `EEXIST` rather than replacing
/// anything at `to`. A file system without `RENAME_NOREPLACE` (NFS, FUSE
/// file systems whose server lacks it) gets a hard link, which never
/// replaces either, and the removal of `from`. One without hard links
/// either (many FUSE file systems) gets a check that nothing is at `to`,
/// then a plain rename: something made at `to` between the two would be
/// replaced, but the file is not lost.
pub fn rename_no_replace(from: &CStr, to: &CStr) -> Result<(), i32> {
    // SAFETY: both paths are NUL-terminated; the call touches no memory
    // of ours.
    let renamed = zero_or_errno(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    });
    match renamed {
        Err(libc::EINVAL | libc::ENOSYS) => {}
        other => return other,
    }
    // SAFETY: as above.
    match zero_or_errno(unsafe { libc::link(from.as_ptr(), to.as_ptr()) }) {
        Ok(()) => {
            // A `from` left behind costs a file, not the dump.
            let _ = remove_file(from);
            Ok(())
        }
        // No hard links on this file system (`EPERM` is what link(2)
        // documents for that; FUSE may say `ENOSYS`).
        Err(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS) => {
            if exists(to)? {
                return Err(libc::EEXIST);
            }
            // SAFETY: as above.
            zero_or_errno(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) })
        }
        Err(errno) => Err(errno),
    }
}

/// Removes the file at `path`; `Err(errno)` if it cannot.
pub fn remove_file(path: &CStr) -> Result<(), i32> {
    // SAFETY: `path` is NUL-terminated.
    zero_or_errno(unsafe { libc::unlink(path.as_ptr()) })
}

/// Reads the next directory entries of `fd` (opened with
/// [`open_directory`]) into `out` as `linux_dirent64` records: the bytes
/// filled (0 at the end), or `Err(errno)`.
pub fn read_directory(fd: i32, out: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `out` is writable for its length; getdents64 fills it with
    // whole records.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, out.as_mut_ptr(), out.len()) };
    if n < 0 { Err(errno()) } else { Ok(n as usize) }
}

/// Where the symlink at `path` points, written into `out`; the length
/// read (cut at `out.len()`), 0 on any error.
pub fn read_link(path: &CStr, out: &mut [u8]) -> usize {
    // SAFETY: `path` is NUL-terminated and `out` is writable for its length.
    let n = unsafe { libc::readlink(path.as_ptr(), out.as_mut_ptr().cast(), out.len()) };
    if n < 0 {
        0
    } else {
        (n as usize).min(out.len())
    }
}

/// Reads the file at `path` into `out`; returns the bytes read (a longer
/// file is cut at `out.len()`), 0 on any error.
pub fn read_file(path: &CStr, out: &mut [u8]) -> usize {
    let Ok(fd) = open_read_only(path) else {
        return 0;
    };
    let mut filled = 0;
    while filled < out.len() {
        match read(fd, &mut out[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    let _ = close(fd);
    filled
}

/// The `[start, end)` of the mapping of `/proc/self/maps` that holds
/// `address`, read through a small buffer on the stack (no heap).
pub fn mapping_containing(address: u64) -> Option<(u64, u64)> {
    let fd = open_read_only(c"/proc/self/maps").ok()?;
    let mut buffer = [0u8; 4096];
    let mut filled = 0;
    let mut found = None;
    'read: loop {
        let n = match read(fd, &mut buffer[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        filled += n;
        let mut consumed = 0;
        while let Some(end) = buffer[consumed..filled].iter().position(|&b| b == b'\n') {
            let line = &buffer[consumed..consumed + end];
            consumed += end + 1;
            if let Some((start, stop)) = parse_range(line)
                && (start..stop).contains(&address)
            {
                found = Some((start, stop));
                break 'read;
            }
        }
        if consumed == 0 && filled == buffer.len() {
            // A line longer than the buffer (a very long path): skip it.
            filled = 0;
            continue;
        }
        buffer.copy_within(consumed..filled, 0);
        filled -= consumed;
    }
    let _ = close(fd);
    found
}

/// `start-end` at the beginning of a maps line, in hex.
fn parse_range(line: &[u8]) -> Option<(u64, u64)> {
    let range = line.split(|&b| b == b' ').next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let hex = |digits: &[u8]| -> Option<u64> {
        if digits.is_empty() || digits.len() > 16 {
            return None;
        }
        digits.iter().try_fold(0u64, |value, &b| {
            let digit = (b as char).to_digit(16)?;
            Some(value << 4 | u64::from(digit))
        })
    };
    Some((hex(&range[..dash])?, hex(&range[dash + 1..])?))
}

/// A small fixed-capacity byte string for building paths without the heap.
#[derive(Clone, Copy)]
pub struct PathBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    /// The byte `c_prefix` replaced with a NUL.
    saved: u8,
}

impl<const N: usize> PathBuf<N> {
    pub const fn new() -> Self {
        PathBuf {
            bytes: [0; N],
            len: 0,
            saved: 0,
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The bytes so far, without a NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends bytes; `false` (and nothing appended) when they do not fit
    /// with room for the final NUL, or hold a NUL (which would cut the
    /// path short in a system call).
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let Some(end) = self.len.checked_add(bytes.len()) else {
            return false;
        };
        if end >= N || bytes.contains(&0) {
            return false;
        }
        self.bytes[self.len..end].copy_from_slice(bytes);
        self.len = end;
        true
    }

    /// Appends the working directory; `false` (and nothing appended) if
    /// it cannot be read or does not fit with room for the final NUL.
    pub fn push_current_directory(&mut self) -> bool {
        let free = &mut self.bytes[self.len..];
        // SAFETY: `free` is writable for its length; getcwd NUL-terminates
        // what it writes and does not allocate when given a buffer.
        let got = unsafe { libc::getcwd(free.as_mut_ptr().cast(), free.len()) };
        match free.iter().position(|&b| b == 0) {
            Some(len) if !got.is_null() => {
                self.len += len;
                true
            }
            _ => false,
        }
    }

    /// Appends `value` in decimal.
    pub fn push_decimal(&mut self, mut value: u64) -> bool {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[at..])
    }

    /// The first `len` bytes as a C string, for system calls; call
    /// [`restore_after_prefix`](Self::restore_after_prefix) with the same
    /// `len` before using the rest again.
    pub fn c_prefix(&mut self, len: usize) -> &CStr {
        let len = len.min(self.len);
        self.saved = self.bytes[len];
        self.bytes[len] = 0;
        // `push` lets no NUL in, so the only one is the last.
        CStr::from_bytes_with_nul(&self.bytes[..=len]).unwrap_or(c"")
    }

    /// Undoes [`c_prefix`](Self::c_prefix).
    pub fn restore_after_prefix(&mut self, len: usize) {
        let len = len.min(self.len);
        self.bytes[len] = self.saved;
    }

    /// The bytes as a C string, for system calls.
    pub fn as_c_str(&mut self) -> &CStr {
        self.bytes[self.len] = 0;
        // `push` lets no NUL in, so the only one is the last.
        CStr::from_bytes_with_nul(&self.bytes[..=self.len]).unwrap_or(c"")
    }
}

/// One line for stderr, built in a fixed buffer (no heap) and written
/// with a single `write(2)`, so lines from several threads never
/// interleave. Longer text is cut.
pub struct StderrLine {
    bytes: [u8; 512],
    len: usize,
}

impl StderrLine {
    pub const fn new() -> StderrLine {
        StderrLine {
            bytes: [0; 512],
            len: 0,
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_str(&self) -> &str {
        // Only whole `str`s are appended (cut at a char boundary).
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// Appends bytes that may not be UTF-8 (a path), invalid ones as `?`.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        for chunk in bytes.utf8_chunks() {
            let _ = core::fmt::Write::write_str(self, chunk.valid());
            if !chunk.invalid().is_empty() {
                let _ = core::fmt::Write::write_str(self, "?");
            }
        }
    }

    /// Appends the system's text for `errno` (`strerror_r`, no heap).
    pub fn push_errno(&mut self, errno: i32) {
        let mut text = [0u8; 128];
        // SAFETY: the XSI `strerror_r` writes a NUL-terminated message of
        // at most `text.len()` bytes into `text`.
        let ok = unsafe { libc::strerror_r(errno, text.as_mut_ptr().cast(), text.len()) } == 0;
        let len = text.iter().position(|&b| b == 0).unwrap_or(0);
        match core::str::from_utf8(&text[..len]) {
            Ok(message) if ok && !message.is_empty() => {
                let _ = core::fmt::Write::write_str(self, message);
            }
            _ => {
                let _ = core::fmt::Write::write_fmt(self, format_args!("errno {errno}"));
            }
        }
    }

    /// Writes the line and a newline to stderr; errors are ignored (there
    /// is nowhere else to report them).
    pub fn emit(&mut self) {
        let end = self.len.min(self.bytes.len() - 1);
        self.bytes[end] = b'\n';
        // SAFETY: the buffer is valid for `end + 1` bytes.
        unsafe {
            libc::write(2, self.bytes.as_ptr().cast(), end + 1);
        }
    }
}

impl core::fmt::Write for StderrLine {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        // Room for the newline `emit` adds.
        let room = self.bytes.len() - 1 - self.len;
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Asks the CPU to start loading the cache line at `value`: a hint that
/// never faults and changes nothing but timing.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint with no architectural effect, valid for
    // any address (and `value` is a live reference besides); SSE is part of
    // the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_hands_out_disjoint_aligned_zeroed_slices() {
        let scratch = Scratch::new(100).unwrap();
        let bytes = scratch.take::<u8>(3).unwrap();
        let words = scratch.take::<u64>(10).unwrap();
        assert_eq!(words.as_ptr() as usize % 8, 0);
        assert!(words.iter().all(|&w| w == 0));
        bytes.fill(7);
        words.fill(u64::MAX);
        assert_eq!(bytes, [7, 7, 7]);
        assert!(scratch.take::<u8>(PAGE).is_none());
    }

    #[test]
    fn written_and_resident_runs_are_the_touched_pages_clipped_to_the_range() {
        let page = page_size();
        let pages = 64;
        let base = map_zeroed(pages * page).unwrap() as usize;
        for touched in [0, 3, 4, 5, 10, 63] {
            // SAFETY: inside the mapping made above.
            unsafe { ((base + touched * page) as *mut u8).write_volatile(1) };
        }
        let (start, end) = (base + 100, base + pages * page - 100);
        let expected = vec![
            (start, base + page),
            (base + 3 * page, base + 6 * page),
            (base + 10 * page, base + 11 * page),
            (base + 63 * page, end),
        ];
        // Four pages at a time: runs cross the batches.
        let mut entries = [0u64; 4];
        let mut written = Vec::new();
        written_runs(start, end, &mut entries, |from, to| {
            written.push((from, to))
        });
        assert_eq!(written, expected);
        let mut residency = [0u8; 4];
        let mut resident = Vec::new();
        resident_runs(start, end, &mut residency, |from, to| {
            resident.push((from, to))
        });
        assert_eq!(resident, expected);
        // SAFETY: the mapping made above, no longer used.
        unsafe { unmap(base as *mut u8, pages * page) };
    }

    #[test]
    fn path_buf_builds_proc_paths_and_refuses_overflow() {
        let mut path = PathBuf::<32>::new();
        assert!(path.push(b"/proc/self/task/"));
        assert!(path.push_decimal(12345));
        assert!(path.push(b"/comm"));
        assert_eq!(path.as_c_str(), c"/proc/self/task/12345/comm");
        assert!(!path.push(b"a\0b"));
        assert_eq!(path.as_c_str(), c"/proc/self/task/12345/comm");
        let mut tiny = PathBuf::<4>::new();
        assert!(tiny.push(b"abc"));
        assert!(!tiny.push(b"d"));
    }

    #[test]
    fn the_mapping_of_a_stack_local_is_found() {
        let local = 0u64;
        let at = &local as *const u64 as u64;
        let (start, end) = mapping_containing(at).expect("no mapping holds the stack");
        assert!(start <= at && at < end);
        assert_eq!(mapping_containing(0), None);
    }

    #[test]
    fn loaded_objects_start_with_the_executable_and_stop_when_told() {
        let mut seen = 0;
        let mut first_name_len = None;
        for_each_loaded_object(|object| {
            seen += 1;
            first_name_len.get_or_insert(object.name().len());
            assert!(!object.program_headers().is_empty());
            ControlFlow::Break(())
        });
        assert_eq!(seen, 1);
        // The loader names the executable with an empty string.
        assert_eq!(first_name_len, Some(0));
        let mut all = 0;
        for_each_loaded_object(|_| {
            all += 1;
            ControlFlow::Continue(())
        });
        assert!(all > 1, "only {all} loaded object");
    }

    #[test]
    fn file_calls_return_the_errno_they_saw() {
        let mut dir = PathBuf::<256>::new();
        assert!(dir.push(std::env::temp_dir().as_os_str().as_encoded_bytes()));
        assert!(dir.push(b"/heapdump-sys-test-"));
        assert!(dir.push_decimal(u64::from(process_id())));
        let _ = remove_file(dir.as_c_str());
        assert_eq!(make_directory(dir.as_c_str(), 0o700), Ok(()));
        assert_eq!(make_directory(dir.as_c_str(), 0o700), Err(libc::EEXIST));
        assert_eq!(is_directory(dir.as_c_str()), Ok(true));
        let dir_len = dir.as_bytes().len();
        assert!(dir.push(b"/file"));
        let fd = create_new_file(dir.as_c_str(), 0o600).unwrap();
        assert_eq!(write_all(fd, b"twelve bytes"), Ok(()));
        assert_eq!(close(fd), Ok(()));
        assert_eq!(close(fd), Err(libc::EBADF));
        assert_eq!(create_new_file(dir.as_c_str(), 0o600), Err(libc::EEXIST));
        assert_eq!(is_directory(dir.as_c_str()), Ok(false));
        let mut out = [0u8; 64];
        assert_eq!(read_file(dir.as_c_str(), &mut out), 12);
        assert_eq!(&out[..12], b"twelve bytes");
        // A rename never replaces a file, and leaves both as they were.
        let mut other = dir;
        assert!(other.push(b".partial"));
        let fd = create_new_file(other.as_c_str(), 0o600).unwrap();
        assert_eq!(close(fd), Ok(()));
        assert_eq!(exists(other.as_c_str()), Ok(true));
        assert_eq!(
            rename_no_replace(other.as_c_str(), dir.as_c_str()),
            Err(libc::EEXIST)
        );
        assert_eq!(read_file(dir.as_c_str(), &mut out), 12);
        assert_eq!(remove_file(dir.as_c_str()), Ok(()));
        assert_eq!(exists(dir.as_c_str()), Ok(false));
        assert_eq!(rename_no_replace(other.as_c_str(), dir.as_c_str()), Ok(()));
        assert_eq!(exists(other.as_c_str()), Ok(false));
        assert_eq!(read_file(dir.as_c_str(), &mut out), 0);
        assert_eq!(remove_file(dir.as_c_str()), Ok(()));
        assert_eq!(remove_file(dir.as_c_str()), Err(libc::ENOENT));
        assert_eq!(is_directory(dir.as_c_str()), Err(libc::ENOENT));
        assert_eq!(
            make_directory(dir.c_prefix(dir_len), 0o700),
            Err(libc::EEXIST)
        );
        dir.restore_after_prefix(dir_len);
        // SAFETY: the path is the directory made above, now empty.
        assert_eq!(unsafe { libc::rmdir(dir.c_prefix(dir_len).as_ptr()) }, 0);
    }

    #[test]
    fn read_file_reads_proc_files() {
        let mut buf = [0u8; 64];
        let n = read_file(c"/proc/self/comm", &mut buf);
        assert!(n > 1 && buf[n - 1] == b'\n');
        assert_eq!(read_file(c"/nonexistent/file", &mut buf), 0);
    }
}
