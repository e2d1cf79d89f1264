//! The thread-locals every tracked allocation and free reads, in one
//! `thread_local!`: in the preload library (a shared object) each
//! thread-local static is found through a call to the dynamic loader's
//! `__tls_get_addr`, and the compiler shares one such call between the
//! fields of one static within a function, not between statics. Seven of
//! them cost ~3 ns each per `malloc`/`free` pair there. Const-initialized
//! without drop glue, so they stay usable in thread-local destructors and
//! at exit, and never allocate.

use core::cell::Cell;

/// Per-thread state of the allocation path.
pub struct Hot {
    /// Set while the tracker works on this thread, so allocations it causes
    /// (through the inner allocator, or a dump) are not tracked
    /// recursively (see `Busy`).
    pub busy: Cell<bool>,
    /// Production mode: bytes this thread may still allocate before its
    /// next sampled allocation; 0 until the thread's first draw.
    pub countdown: Cell<u64>,
    /// Production mode: the thread's SplitMix64 state; 0: not seeded yet.
    pub random: Cell<u64>,
    /// The thread's counters of the presence map, or null before its first
    /// block there.
    pub map_counts: Cell<*const ()>,
}

thread_local! {
    static HOT: Hot = const {
        Hot {
            busy: Cell::new(false),
            countdown: Cell::new(0),
            random: Cell::new(0),
            map_counts: Cell::new(core::ptr::null()),
        }
    };
}

/// Runs `f` with the calling thread's state.
#[inline(always)]
pub fn with<R>(f: impl FnOnce(&Hot) -> R) -> R {
    HOT.with(f)
}
