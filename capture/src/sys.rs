//! The few operating-system services the tracker needs, each wrapped so the
//! rest of the crate stays free of raw `libc` calls: anonymous mappings, a
//! spin lock, thread ids, clocks and whole-file reads. Nothing here
//! allocates on the heap.

use core::cell::UnsafeCell;
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
    use core::sync::atomic::{AtomicUsize, Ordering};

    pub const SLOTS: usize = 1024;
    /// `START[i]`: the start of a mapping (0: a free slot); `END[i]` its end.
    static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static END: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

    /// Records `[start, start + bytes)` as the tracker's. With every slot
    /// taken (more mappings than the tracker ever makes) it is not recorded,
    /// and a dump could take it for the program's.
    pub fn add(start: usize, bytes: usize) {
        for (slot, end) in START.iter().zip(&END) {
            if slot
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // The kernel maps whole pages: so does the record.
                end.store(
                    start + bytes.next_multiple_of(super::page_size()),
                    Ordering::Release,
                );
                return;
            }
        }
    }

    /// Forgets the mapping that starts at `start`.
    pub fn remove(start: usize) {
        if let Some(index) = START
            .iter()
            .position(|s| s.load(Ordering::Acquire) == start)
        {
            END[index].store(0, Ordering::Release);
            START[index].store(0, Ordering::Release);
        }
    }

    /// Calls `each(start, end)` for every mapping of the tracker's.
    pub fn for_each(mut each: impl FnMut(usize, usize)) {
        for (s, e) in START.iter().zip(&END) {
            let (s, e) = (s.load(Ordering::Acquire), e.load(Ordering::Acquire));
            if s != 0 {
                each(s, e.max(s + 1));
            }
        }
    }
}

/// At most this many mappings of the tracker's are recorded.
pub const MAX_OWN_MAPPINGS: usize = own::SLOTS;

/// Calls `each(start, end)` for every mapping the tracker made for itself
/// (its tables, a dump's scratch): never the program's memory.
pub fn for_each_own_mapping(each: impl FnMut(usize, usize)) {
    own::for_each(each);
}

/// Maps `bytes` of zeroed, private, read-write memory outside the tracked
/// heap, recorded as the tracker's. `None` when the kernel refuses.
pub fn map_zeroed(bytes: usize) -> Option<*mut u8> {
    if bytes == 0 {
        return None;
    }
    // SAFETY: an anonymous private mapping with no address hint touches no
    // existing memory; the result is checked for MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        None
    } else {
        own::add(ptr as usize, bytes);
        Some(ptr.cast())
    }
}

/// Returns a mapping made by [`map_zeroed`].
///
/// # Safety
/// `ptr` and `bytes` must describe exactly one earlier `map_zeroed` result
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
        own::remove(ptr as usize);
        own::add(moved as usize, new_bytes);
        Some(moved.cast())
    }
}

/// Calls `run(from, to)` for each run of resident pages within `[start,
/// end)` (one mapping), clipped to that range, asking the kernel
/// `residency.len()` pages at a time. Pages never touched are not resident
/// (reading them would only find zeros), nor are pages swapped out.
/// Nothing is called if the kernel cannot say.
pub fn resident_runs(
    start: usize,
    end: usize,
    residency: &mut [u8],
    mut run: impl FnMut(usize, usize),
) {
    let page = page_size();
    if residency.is_empty() || start >= end {
        return;
    }
    let mut run = |from: usize, to: usize| run(from.max(start), to.min(end));
    let mut open: Option<usize> = None;
    let mut at = start / page * page;
    while at < end {
        let pages = ((end - at).div_ceil(page)).min(residency.len());
        // SAFETY: `at` is page-aligned and `[at, at + pages * page)` lies
        // in one mapping (rounded up to its last page); `residency` has
        // room for one byte per page.
        let answered = unsafe {
            libc::mincore(
                at as *mut libc::c_void,
                pages * page,
                residency.as_mut_ptr(),
            )
        };
        if answered != 0 {
            // The mapping changed under us (or is not one): give up on it.
            return;
        }
        for (index, &state) in residency[..pages].iter().enumerate() {
            let page_start = at + index * page;
            match (state & 1 != 0, open) {
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
pub fn map_once<T>(cell: &core::sync::atomic::AtomicPtr<T>, bytes: usize) -> Option<*mut T> {
    let current = cell.load(Ordering::Acquire);
    if !current.is_null() {
        return Some(current);
    }
    let fresh = map_zeroed(bytes)?.cast::<T>();
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
                    // SAFETY: sched_yield has no preconditions.
                    unsafe {
                        libc::sched_yield();
                    }
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

/// The calling thread's kernel id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

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

/// The current `errno`.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reads the file at the NUL-terminated `path` into `out`; returns the
/// bytes read (a longer file is cut at `out.len()`), 0 on any error.
pub fn read_file(path: &[u8], out: &mut [u8]) -> usize {
    if path.last() != Some(&0) {
        return 0;
    }
    // SAFETY: `path` is NUL-terminated (checked above).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    let mut filled = 0;
    while filled < out.len() {
        let rest = &mut out[filled..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
    // SAFETY: `fd` is ours and closed once.
    unsafe {
        libc::close(fd);
    }
    filled
}

/// The `[start, end)` of the mapping of `/proc/self/maps` that holds
/// `address`, read through a small buffer on the stack (no heap).
pub fn mapping_containing(address: u64) -> Option<(u64, u64)> {
    // SAFETY: the path is NUL-terminated.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buffer = [0u8; 4096];
    let mut filled = 0;
    let mut found = None;
    'read: loop {
        let rest = &mut buffer[filled..];
        // SAFETY: `rest` is writable for its length.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        filled += n as usize;
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
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
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
    /// with room for the final NUL.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let Some(end) = self.len.checked_add(bytes.len()) else {
            return false;
        };
        if end >= N {
            return false;
        }
        self.bytes[self.len..end].copy_from_slice(bytes);
        self.len = end;
        true
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

    /// The first `len` bytes followed by a NUL, for system calls; call
    /// [`restore_after_prefix`](Self::restore_after_prefix) with the same
    /// `len` before using the rest again.
    pub fn c_prefix(&mut self, len: usize) -> &[u8] {
        let len = len.min(self.len);
        self.saved = self.bytes[len];
        self.bytes[len] = 0;
        &self.bytes[..=len]
    }

    /// Undoes [`c_prefix`](Self::c_prefix).
    pub fn restore_after_prefix(&mut self, len: usize) {
        let len = len.min(self.len);
        self.bytes[len] = self.saved;
    }

    /// The bytes followed by a NUL, for system calls.
    pub fn as_c_bytes(&mut self) -> &[u8] {
        self.bytes[self.len] = 0;
        &self.bytes[..=self.len]
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
    fn path_buf_builds_proc_paths_and_refuses_overflow() {
        let mut path = PathBuf::<32>::new();
        assert!(path.push(b"/proc/self/task/"));
        assert!(path.push_decimal(12345));
        assert!(path.push(b"/comm"));
        assert_eq!(path.as_c_bytes(), b"/proc/self/task/12345/comm\0");
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
    fn read_file_reads_proc_files() {
        let mut buf = [0u8; 64];
        let n = read_file(b"/proc/self/comm\0", &mut buf);
        assert!(n > 1 && buf[n - 1] == b'\n');
        assert_eq!(read_file(b"/nonexistent/file\0", &mut buf), 0);
        assert_eq!(read_file(b"/proc/self/comm", &mut buf), 0);
    }
}
