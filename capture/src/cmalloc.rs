//! The C allocation functions of the whole process (`malloc`, `free`,
//! `calloc`, `realloc`, `reallocarray`, `posix_memalign`, `aligned_alloc`,
//! `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`), tracked like
//! the Rust global allocator's blocks: what C libraries, C++'s
//! `operator new` and Rust's own `System` allocate becomes nodes of the
//! heap graph, and the pointers stored there are seen by the scan.
//!
//! Defined here with their C names, they take the place of the C
//! library's in the whole process (the executable's definitions come first
//! in the dynamic linker's search order, or the preload library's under
//! `LD_PRELOAD`), and forward to glibc's `__libc_malloc` family, which are
//! the real functions under other names: no `dlsym` needed to find them,
//! no recursion.
//!
//! A C `free` does not say the block's size, so the footer (the index of
//! the block's record, as for Rust blocks) goes at the end of the block's
//! usable size rather than after the bytes asked for, and
//! `malloc_usable_size` tells the program 4 bytes less. The inner
//! allocator is asked for 4 more bytes.
//!
//! Calls made while the thread is inside the tracker (the Rust `Tracker`
//! calling `System`, which is `malloc`; a dump; the tracker's own thread)
//! pass straight through, untracked and without a footer: a Rust block is
//! recorded once, by the `Tracker`. A block without a footer (or from
//! before the tracker was loaded) that reaches `free` is passed through
//! too: its would-be footer names no live record tagged for its address.
//! Only glibc is supported (`__libc_malloc` and friends are glibc's).

use core::ffi::c_void;

use crate::live::{FOOTER_BYTES, NO_RECORD};
use crate::sys::set_errno;
use crate::{Busy, Kept, LIVE, Placed, Placement, ZEROED, new_entry, presence, sys, triggers};

/// The thread's guard for tracking a C call: `None` when the call must pass
/// straight through (the thread is inside the tracker, or the process is
/// passive).
#[inline(always)]
fn enter() -> Option<Busy> {
    if triggers::PASSIVE.load(core::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    Busy::enter()
}

unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_free(block: *mut c_void);
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(block: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_valloc(size: usize) -> *mut c_void;
    fn __libc_pvalloc(size: usize) -> *mut c_void;
}

/// `System`'s calls, made straight to glibc for a `Tracker<System>` whose
/// blocks the presence map may hold: `System` would call our `malloc`,
/// which (the thread being inside the tracker) passes them through to
/// these same functions. Only while the map is on, which means the
/// process's `malloc` is ours (so `System`'s blocks are glibc's either
/// way), and only for the alignments `System` serves with `malloc`,
/// `calloc` and `realloc`: ~2 ns of a call, a thread-local and a branch
/// less on each side of a tracked block's life.
pub(crate) mod glibc {
    use core::alloc::Layout;

    /// Whether a block of `layout` (its size that asked of the inner
    /// allocator) is one `System` would make with `malloc` and that may
    /// be asked of glibc here instead.
    #[inline(always)]
    pub fn serves(layout: Layout) -> bool {
        // `System` on Unix: `malloc` when the alignment is at most its
        // minimum (16 on 64-bit targets) and at most the size.
        layout.align() <= super::MALLOC_ALIGN
            && layout.align() <= layout.size()
            && crate::presence::enabled()
    }

    /// # Safety
    /// As `malloc`; `serves(layout)` said so.
    #[inline(always)]
    pub unsafe fn alloc(layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: glibc's own functions, per the caller's contract.
        unsafe {
            if zeroed {
                super::__libc_calloc(layout.size(), 1).cast()
            } else {
                super::__libc_malloc(layout.size()).cast()
            }
        }
    }

    /// # Safety
    /// As `free`, for a block of glibc's allocator.
    #[inline(always)]
    pub unsafe fn dealloc(block: *mut u8) {
        // SAFETY: per the caller's contract.
        unsafe { super::__libc_free(block.cast()) }
    }

    /// # Safety
    /// As `realloc`, for a block of glibc's allocator; `serves` said so of
    /// the new layout.
    #[inline(always)]
    pub unsafe fn realloc(block: *mut u8, new_size: usize) -> *mut u8 {
        // SAFETY: per the caller's contract.
        unsafe { super::__libc_realloc(block.cast(), new_size).cast() }
    }
}

/// glibc's own `malloc_usable_size`, looked up in the already loaded C
/// library (glibc has no `__libc_` name for it) the first time it is
/// needed: not with `RTLD_NEXT`, which under another preloaded allocator
/// would find that allocator's, for blocks that are glibc's.
static REAL_USABLE_SIZE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// The usable size of a block glibc's allocator made: the bytes from
/// `block` to the end of its chunk.
///
/// # Safety
/// `block` must be a live block of glibc's allocator.
#[inline]
unsafe fn real_usable_size(block: *mut c_void) -> usize {
    let mut real = REAL_USABLE_SIZE.load(core::sync::atomic::Ordering::Relaxed);
    if real == 0 {
        real = resolve_usable_size();
        if real == 0 {
            return 0;
        }
    }
    // SAFETY: `real` is the C library's own `malloc_usable_size` (looked
    // up in libc.so.6 itself by `resolve_usable_size`, never ours), whose
    // contract the caller meets.
    let real: unsafe extern "C" fn(*mut c_void) -> usize = unsafe { core::mem::transmute(real) };
    // SAFETY: as above.
    unsafe { real(block) }
}

#[cold]
fn resolve_usable_size() -> usize {
    // dlsym may allocate (its error string): that passes through.
    let _busy = Busy::enter_always();
    let Some(found) = sys::c_library_symbol(c"malloc_usable_size") else {
        return 0;
    };
    // Never ourselves: that would recurse.
    if found == malloc_usable_size as *const () as usize {
        return 0;
    }
    REAL_USABLE_SIZE.store(found, core::sync::atomic::Ordering::Relaxed);
    found
}

/// Whether the blocks `__libc_malloc` hands out are glibc's own, with the
/// chunk header the presence map reads: not under valgrind (whose
/// preloaded library replaces glibc's allocator, and whose memcheck would
/// report the header read), and a probe block's header must give the
/// usable size glibc's `malloc_usable_size` gives. The caller holds the
/// thread's `Busy`.
pub(crate) fn blocks_are_glibcs() -> bool {
    let mut valgrind = false;
    sys::for_each_loaded_object(|object| {
        valgrind |= object.name().windows(11).any(|w| w == b"/vgpreload_");
        core::ops::ControlFlow::Continue(())
    });
    if valgrind {
        return false;
    }
    // SAFETY: glibc's malloc; the block is freed below.
    let probe = unsafe { __libc_malloc(100) };
    if probe.is_null() {
        return false;
    }
    // SAFETY: a live block of glibc's allocator (as far as we know yet:
    // the header read is what is being checked, on a block of ours).
    let same = unsafe { crate::presence::usable_size(probe.cast()) }
        // SAFETY: a live block `__libc_malloc` returned.
        == Some(unsafe { real_usable_size(probe) });
    // SAFETY: the block allocated above.
    unsafe { __libc_free(probe) };
    same
}

/// Where the footer of a C block is: its last 4 usable bytes. `None` when
/// the block is too small to hold one (a block without a footer).
///
/// # Safety
/// `block` must be a live block of glibc's allocator.
#[inline]
unsafe fn footer_at(block: *mut c_void) -> Option<*mut u8> {
    // SAFETY: per the contract.
    let usable = unsafe { real_usable_size(block) };
    // A size no allocator hands out means `block` is not glibc's: leave it.
    if !(FOOTER_BYTES..1 << 47).contains(&usable) {
        return None;
    }
    // SAFETY: `usable - FOOTER_BYTES` is inside the block's chunk.
    Some(unsafe { block.cast::<u8>().add(usable - FOOTER_BYTES) })
}

/// Where a new block of `size` bytes goes (see `crate::Placement`): the
/// presence map takes glibc's small blocks out of the stack sample.
/// `tracked`: false for a reallocated block that had no record. The
/// caller holds the thread's `Busy`.
#[inline(always)]
fn placement(size: usize, tracked: bool) -> Placement {
    // The C functions' blocks are glibc's, as `System`'s are.
    Placement::decide(size, crate::mappable::<std::alloc::System>(size), tracked)
}

/// The bytes to ask glibc for a block of `size` bytes placed so: `None`
/// (and `errno` set) if that overflows.
#[inline(always)]
fn asked(size: usize, placement: Placement) -> Option<usize> {
    let asked = size.checked_add(placement.room());
    if asked.is_none() {
        set_errno(libc::ENOMEM);
    }
    asked
}

/// Keeps a block the inner allocator just made for `size` bytes (plus
/// `placement.room()`): in the presence map, or under a record with its
/// footer; returns it. A null result is an allocation failure, reported
/// to the `on=oom` trigger after `busy` is let go.
///
/// # Safety
/// `block` is null or a live glibc block of at least `size` bytes plus
/// `placement.room()`.
#[inline]
unsafe fn record(
    block: *mut c_void,
    size: usize,
    align: usize,
    flags: u8,
    busy: Busy,
    placement: Placement,
) -> *mut c_void {
    if block.is_null() {
        drop(busy);
        triggers::allocation_failed();
        return block;
    }
    if placement.mapped
        // SAFETY: per the contract; `busy` held.
        && unsafe { crate::put_in_map(block.cast(), size, true) } != Placed::NeedsRecord
    {
        return block;
    }
    let (entry, thread) = new_entry(block.cast(), size, align, flags, placement.walk);
    let footer = LIVE.insert(&entry, true, thread.index as usize);
    // SAFETY: a live glibc block.
    if let Some(at) = unsafe { footer_at(block) } {
        // SAFETY: the footer's 4 bytes are the block's last usable ones,
        // past the `size` bytes the program may use (it has their room);
        // unaligned.
        unsafe { at.cast::<u32>().write_unaligned(footer) };
    }
    drop(busy);
    block
}

/// Forgets the record of a C block about to be freed or moved.
///
/// # Safety
/// `block` must be a live glibc block.
#[inline]
unsafe fn footer_of(block: *mut c_void) -> u32 {
    // SAFETY: per the contract.
    match unsafe { footer_at(block) } {
        // SAFETY: inside the block's chunk, as `footer_at` computed.
        Some(at) => unsafe { at.cast::<u32>().read_unaligned() },
        None => NO_RECORD,
    }
}

/// The minimum alignment glibc's `malloc` gives.
const MALLOC_ALIGN: usize = 16;

/// # Safety
/// The C contract of `malloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    let Some(busy) = enter() else {
        // SAFETY: forwarding the caller's call.
        return unsafe { __libc_malloc(size) };
    };
    let placement = placement(size, true);
    let Some(asked) = asked(size, placement) else {
        return core::ptr::null_mut();
    };
    // SAFETY: glibc's malloc; the result is null or `asked` bytes.
    unsafe { record(__libc_malloc(asked), size, MALLOC_ALIGN, 0, busy, placement) }
}

/// # Safety
/// The C contract of `free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(block: *mut c_void) {
    if block.is_null() {
        return;
    }
    match enter() {
        Some(_busy)
            if !(presence::enabled() && presence::remove(block.cast(), None, true).is_some()) =>
        {
            // SAFETY: the caller passes a live block of ours (glibc's).
            let footer = unsafe { footer_of(block) };
            // Forgotten before it is freed: a dump never scans freed memory.
            LIVE.remove_recorded(footer, block as u64);
        }
        Some(_) => {}
        // SAFETY: the caller passes a live block.
        None if unsafe { kept_inside_tracker(block) } => return,
        None => {}
    }
    // SAFETY: forwarding the caller's call.
    unsafe { __libc_free(block) }
}

/// For a free on a thread already inside the tracker: whether the block
/// must stay allocated because it may have a record that cannot be taken
/// out now (so no record names freed memory). Only while the thread holds
/// every lock for a `fork` (a `pthread_atfork` handler registered before
/// ours runs): otherwise the thread is the tracker forwarding a block it
/// has dealt with (a `Tracker<System>` frees through us), which must cost
/// nothing more; and never in a passive process, whose records nothing
/// reads. A block of the presence map leaves it (no lock needed) and may
/// go; the forking thread takes a record out itself (the locks are its
/// own), and the block may go too. Only a signal handler that interrupts
/// that work keeps a block that may have a record.
///
/// # Safety
/// `block` is a live glibc block.
#[inline]
unsafe fn kept_inside_tracker(block: *mut c_void) -> bool {
    if !crate::fork::holding_locks_for_fork()
        || triggers::PASSIVE.load(core::sync::atomic::Ordering::Relaxed)
        || presence::enabled() && presence::remove(block.cast(), None, true).is_some()
    {
        return false;
    }
    // SAFETY: per the contract (a footer naming no record of this block
    // is found so by its address).
    unsafe { crate::kept_inside_tracker(footer_of(block), block.cast(), None) }
}

/// # Safety
/// The C contract of `calloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(busy) = enter() else {
        // SAFETY: forwarding the caller's call.
        return unsafe { __libc_calloc(count, size) };
    };
    let Some(total) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    let placement = placement(total, true);
    let Some(asked) = asked(total, placement) else {
        return core::ptr::null_mut();
    };
    // SAFETY: glibc's calloc; the result is null or `asked` zeroed bytes.
    unsafe {
        record(
            __libc_calloc(1, asked),
            total,
            MALLOC_ALIGN,
            ZEROED,
            busy,
            placement,
        )
    }
}

/// # Safety
/// The C contract of `realloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(block: *mut c_void, size: usize) -> *mut c_void {
    if block.is_null() {
        // SAFETY: realloc(NULL, n) is malloc(n).
        return unsafe { malloc(size) };
    }
    let Some(busy) = enter() else {
        if size != 0
            // SAFETY: the caller passes a live block.
            && unsafe { kept_inside_tracker(block) }
        {
            // SAFETY: as in `free`; the bytes move to a new block.
            return unsafe { move_keeping_record(block, size) };
        }
        if size == 0 {
            // SAFETY: realloc(block, 0) frees the block (`free` decides
            // whether it may go).
            unsafe { free(block) };
            return core::ptr::null_mut();
        }
        // SAFETY: forwarding the caller's call; `kept_inside_tracker`
        // said the block may go.
        return unsafe { __libc_realloc(block, size) };
    };
    if size == 0 {
        // glibc frees the block and returns NULL.
        drop(busy);
        // SAFETY: the caller's block.
        unsafe { free(block) };
        return core::ptr::null_mut();
    }
    if size.checked_add(FOOTER_BYTES).is_none() {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    if presence::enabled()
        && let Some(old_size) = presence::remove(block.cast(), None, false)
    {
        // SAFETY: the caller's contract, for a block of the presence map.
        return unsafe { realloc_mapped(block, old_size, size, busy) };
    }
    // SAFETY: the caller passes a live block.
    let old_footer = unsafe { footer_of(block) };
    // Out of the table while glibc may move or free it (see the Tracker).
    let detached = LIVE.detach_recorded(old_footer, block as u64);
    let placement = placement(size, detached.is_some());
    // SAFETY: forwarding, with room for the footer unless the block goes
    // in the map (the size was checked above).
    let moved = unsafe { __libc_realloc(block, size + placement.room()) };
    if moved.is_null() {
        if let Some(detached) = detached {
            LIVE.restore(detached);
        }
        drop(busy);
        triggers::allocation_failed();
        return moved;
    }
    // SAFETY: a live glibc block as `placement` asked; `busy` held.
    unsafe { keep_reallocated(block, moved, size, Kept::Recorded(detached), placement) };
    drop(busy);
    moved
}

/// `realloc` of a block that stays allocated (see `kept_inside_tracker`):
/// the bytes move to a new block without a record.
///
/// # Safety
/// `block` is a live glibc block.
#[cold]
unsafe fn move_keeping_record(block: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: glibc's malloc.
    let moved = unsafe { __libc_malloc(size) };
    if moved.is_null() {
        return moved;
    }
    // SAFETY: the old block is live with its usable bytes (glibc's chunk
    // header says how many), the new one has `size`; distinct blocks.
    unsafe {
        let usable = presence::usable_size(block.cast()).unwrap_or(0);
        core::ptr::copy_nonoverlapping(block.cast::<u8>(), moved.cast(), usable.min(size));
    }
    moved
}

/// Keeps the block `realloc` returned (see `crate::keep_reallocated`),
/// writing its footer if it gets a record.
///
/// # Safety
/// `moved` is a live glibc block of at least `size` bytes plus
/// `placement.room()`, and the caller holds the thread's `Busy`.
unsafe fn keep_reallocated(
    block: *mut c_void,
    moved: *mut c_void,
    size: usize,
    kept: Kept,
    placement: Placement,
) {
    // SAFETY: per the contract.
    let footer = unsafe {
        crate::keep_reallocated(
            moved.cast(),
            size,
            MALLOC_ALIGN,
            moved != block,
            kept,
            placement,
        )
    };
    if let Some(footer) = footer
        // SAFETY: a live glibc block.
        && let Some(at) = unsafe { footer_at(moved) }
    {
        // SAFETY: as in `record_decided`.
        unsafe { at.cast::<u32>().write_unaligned(footer) };
    }
}

/// `realloc` of a block the presence map had (and no longer has): the new
/// block goes back in the map or gets a record, as a new block would.
///
/// # Safety
/// The C contract of `realloc`, for a block taken out of the presence map;
/// `size` plus the footer does not overflow; `old_size` the block's size
/// in the map.
unsafe fn realloc_mapped(
    block: *mut c_void,
    old_size: usize,
    size: usize,
    busy: Busy,
) -> *mut c_void {
    let placement = placement(size, true);
    // SAFETY: forwarding, with room for the footer unless the block goes
    // in the map.
    let moved = unsafe { __libc_realloc(block, size + placement.room()) };
    if moved.is_null() {
        // Unchanged: back in the map (whose region stays), else a footer
        // that names no record if it has the room.
        // SAFETY: the old block is live, unchanged, of `old_size` bytes.
        if !unsafe { presence::insert(block.cast(), old_size, false) }
            // SAFETY: as above.
            && unsafe { crate::has_footer_room(block.cast(), old_size) }
            // SAFETY: as above.
            && let Some(at) = unsafe { footer_at(block) }
        {
            // SAFETY: as in `record_decided`.
            unsafe { at.cast::<u32>().write_unaligned(NO_RECORD) };
        }
        drop(busy);
        triggers::allocation_failed();
        return moved;
    }
    // SAFETY: a live glibc block as `placement` asked; `busy` held.
    unsafe { keep_reallocated(block, moved, size, Kept::Mapped, placement) };
    drop(busy);
    moved
}

/// # Safety
/// The C contract of `reallocarray`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(
    block: *mut c_void,
    count: usize,
    size: usize,
) -> *mut c_void {
    let Some(total) = count.checked_mul(size) else {
        set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    // SAFETY: the same contract.
    unsafe { realloc(block, total) }
}

/// An aligned block from glibc's `memalign`, tracked.
///
/// # Safety
/// `align` is a power of two.
unsafe fn aligned(align: usize, size: usize) -> *mut c_void {
    let Some(busy) = enter() else {
        // SAFETY: forwarding.
        return unsafe { __libc_memalign(align, size) };
    };
    let placement = placement(size, true);
    let Some(asked) = asked(size, placement) else {
        return core::ptr::null_mut();
    };
    // SAFETY: glibc's memalign with a power-of-two alignment.
    unsafe {
        record(
            __libc_memalign(align, asked),
            size,
            align.max(MALLOC_ALIGN),
            0,
            busy,
            placement,
        )
    }
}

/// # Safety
/// The C contract of `posix_memalign`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    // SAFETY: a power of two.
    let block = unsafe { aligned(align, size) };
    if block.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a valid out-pointer.
    unsafe { out.write(block) };
    0
}

/// # Safety
/// The C contract of `aligned_alloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    // glibc (before 2.38) treats it as `memalign`, which rounds an
    // alignment that is not a power of two up to one: do the same.
    // SAFETY: the same contract.
    unsafe { memalign(align, size) }
}

/// # Safety
/// The C contract of `memalign`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // glibc rounds an alignment that is not a power of two up to one.
    let Some(align) = align.max(1).checked_next_power_of_two() else {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    };
    // SAFETY: a power of two.
    unsafe { aligned(align, size) }
}

/// # Safety
/// The C contract of `valloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    let Some(busy) = enter() else {
        // SAFETY: forwarding.
        return unsafe { __libc_valloc(size) };
    };
    let placement = placement(size, true);
    let Some(asked) = asked(size, placement) else {
        return core::ptr::null_mut();
    };
    // SAFETY: glibc's valloc.
    unsafe {
        record(
            __libc_valloc(asked),
            size,
            crate::sys::PAGE,
            0,
            busy,
            placement,
        )
    }
}

/// # Safety
/// The C contract of `pvalloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let Some(busy) = enter() else {
        // SAFETY: forwarding.
        return unsafe { __libc_pvalloc(size) };
    };
    let placement = placement(size, true);
    let Some(asked) = asked(size, placement) else {
        return core::ptr::null_mut();
    };
    // SAFETY: glibc's pvalloc.
    unsafe {
        record(
            __libc_pvalloc(asked),
            size,
            crate::sys::PAGE,
            0,
            busy,
            placement,
        )
    }
}

/// # Safety
/// The C contract of `malloc_usable_size`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(block: *mut c_void) -> usize {
    if block.is_null() {
        return 0;
    }
    // SAFETY: the caller passes a live block.
    let usable = unsafe { real_usable_size(block) };
    // A record's footer is not the program's to use. In a process that
    // tracks nothing no footer is read again (`free` and `realloc` pass
    // straight through), and its own blocks have no room for one: every
    // usable byte is the program's. Without the presence map every block
    // has the footer's room: say 4 bytes less, as for a record. With it,
    // the map's blocks have no footer (and maybe no room), and neither do
    // blocks the map could not take that lacked the room (asked without
    // it, see `crate::Placement`), nor those made while the tracker was
    // busy or before it was loaded: a block not in the map has 4 bytes
    // less only if its footer names its record.
    //
    // On the thread that holds every lock for a `fork` (a `pthread_atfork`
    // handler registered before ours runs) the blocks made pass untracked
    // without the footer's room, in either mode: there too only a footer
    // that names its record counts, read with the locks it holds.
    if triggers::PASSIVE.load(core::sync::atomic::Ordering::Relaxed) {
        return usable;
    }
    let forking = crate::fork::holding_locks_for_fork();
    if !presence::enabled() && !forking {
        return usable.saturating_sub(FOOTER_BYTES);
    }
    if presence::enabled() && presence::holds(block.cast()) {
        return usable;
    }
    // SAFETY: the caller passes a live block (glibc's).
    let footer = unsafe { footer_of(block) };
    // A shard whose lock cannot be had counts as recorded: this thread
    // inside the tracker already (a signal handler that interrupted it,
    // perhaps holding the lock) does not wait for it.
    let recorded = if forking {
        crate::fork::with_locks_held_for_fork(|| {
            // SAFETY: this thread holds every shard's lock for the fork,
            // and no guard of one (the closure runs only then).
            unsafe { LIVE.is_recorded_holding_locks(footer, block as u64) }
        })
    } else {
        let busy = Busy::enter();
        LIVE.is_recorded(footer, block as u64, busy.is_some())
    };
    if recorded.unwrap_or(true) {
        usable.saturating_sub(FOOTER_BYTES)
    } else {
        usable
    }
}
