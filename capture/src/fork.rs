//! `fork` safety. A child process starts with one thread; if another thread
//! held one of the tracker's locks at the moment of the fork, the child's
//! first allocation would wait for it forever. The prepare handler takes
//! the table locks so the fork happens at a quiet moment, and both sides
//! release them afterwards.
//!
//! Handlers run in the forking thread: the prepare handlers in the reverse
//! order of their registration, the others in that order, so ours are
//! registered as early as possible (the preload library's constructor, a
//! program's first allocation) and other handlers' allocations come
//! before our locks and after their release. Those registered even
//! earlier (a constructor of a library the program or the preload library
//! depends on) run while this thread holds every lock: it is marked busy
//! meanwhile, so their allocations pass untracked instead of waiting
//! forever, and a block with a record that they free or reallocate has
//! its record taken out by this thread, whose locks they are
//! ([`with_locks_held_for_fork`]), before it goes: never a record of freed
//! memory, and no block kept.
//!
//! The dump lock is not taken: a dump in `mode=fork` holds it while its
//! snapshot process writes, which may take seconds, and the program's own
//! `fork` must not wait for that. A dump holds the table locks whenever it
//! reads the tables, so a fork never copies them mid-read; in the child,
//! where the dumping thread does not exist, the dump lock and the trigger
//! settings' lock are simply released.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{DUMP_LOCK, LIVE, STACKS, hot, sys, threads};

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Whether this thread was busy before its `prepare` marked it busy.
    /// The thread's own: two threads that fork at once both get here, one
    /// of them before it waits for the locks.
    static WAS_BUSY: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// The thread that holds every lock for a `fork` (its `pthread_self`), 0
/// outside one.
static FORKING_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Whether the calling thread is inside a `fork`, holding every lock (see
/// the module's docs): a load of a static outside one.
#[inline]
pub fn holding_locks_for_fork() -> bool {
    let forking = FORKING_THREAD.load(Ordering::Relaxed);
    // SAFETY: pthread_self has no preconditions.
    forking != 0 && forking == unsafe { libc::pthread_self() } as usize
}

/// Set while the forking thread works on the tables whose locks it holds
/// (a free in a handler run between ours), so that a signal handler that
/// interrupts that work on the same thread does not work on them too.
static WORKING_ON_HELD_TABLES: AtomicBool = AtomicBool::new(false);

/// Runs `work` on the tables whose locks the calling thread holds for a
/// `fork` (see the module's docs), with no other guard of them: `None`,
/// without running it, if the thread holds none (it is not forking) or
/// interrupted its own such work (a signal handler).
#[cold]
pub fn with_locks_held_for_fork<R>(work: impl FnOnce() -> R) -> Option<R> {
    if !holding_locks_for_fork() || WORKING_ON_HELD_TABLES.swap(true, Ordering::Relaxed) {
        return None;
    }
    let done = work();
    WORKING_ON_HELD_TABLES.store(false, Ordering::Relaxed);
    Some(done)
}

/// Registers the handlers once per process.
pub fn install_handlers() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    sys::register_fork_handlers(prepare, release, release_in_child);
}

extern "C" fn prepare() {
    // Busy before the first lock is taken: a signal handler that allocates
    // on this thread while it holds some of them passes untracked instead
    // of waiting for a lock its own thread holds.
    WAS_BUSY.set(hot::with(|hot| hot.busy.replace(true)));
    for shard in &LIVE.shards {
        shard.table.lock_forever();
    }
    STACKS.lock_forever();
    // No fork in the middle of a trim of the presence map: the child would
    // start with it marked as trimming, by a thread it does not have.
    crate::presence::TRIM_LOCK.lock_forever();
    // SAFETY: pthread_self has no preconditions.
    FORKING_THREAD.store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
}

extern "C" fn release() {
    FORKING_THREAD.store(0, Ordering::Relaxed);
    // SAFETY: `prepare` took all of these locks in this thread, and the
    // process (parent or child) resumes with them held by us.
    unsafe {
        crate::presence::TRIM_LOCK.force_unlock();
        STACKS.unlock_forever();
        for shard in &LIVE.shards {
            shard.table.force_unlock();
        }
    }
    hot::with(|hot| hot.busy.set(WAS_BUSY.get()));
}

extern "C" fn release_in_child() {
    // The child's thread has a new kernel id: register it afresh.
    threads::forget_current();
    // SAFETY: the child has this one thread; a dump lock held at the fork
    // belongs to a thread that does not exist here, and no reference into
    // the lock's (empty) value is held.
    unsafe { DUMP_LOCK.force_unlock() };
    crate::triggers::forget_in_child();
    release();
    LIVE.forget_detached_in_child();
}
