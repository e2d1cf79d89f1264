//! The copy-on-write snapshot of `mode=fork`: once the other threads are
//! stopped and their registers saved, the dumping thread forks. The child
//! is a frozen copy of the whole process at that instant: it reads the
//! roots, scans, writes the dump and `_exit`s, while the parent resumes
//! the program at once and waits for it.
//!
//! The fork is a raw `clone` system call:
//! - no `pthread_atfork` handlers run (the program's own would take locks
//!   that stopped threads may hold; the tracker's would take its own locks,
//!   which the dumping thread already holds);
//! - its exit signal is 0, not `SIGCHLD`, so a program that reaps every
//!   child (`waitpid(-1, ...)`, a `SIGCHLD` handler) never sees it: only a
//!   wait with `__WALL`, as here, does;
//! - the child runs with every signal blocked and never allocates: the
//!   C library's state in the copy may be in the middle of an update by a
//!   thread that does not exist there.
//!
//! The child reports back through a small shared mapping: the parent
//! writes how long the program was paused (the child records it in the
//! dump), the child writes what it wrote and then exits.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::{DumpError, DumpStats, sys};

/// What parent and child share.
#[repr(C)]
struct Shared {
    /// Nanoseconds the parent's threads were paused; 0 until known.
    pause_ns: AtomicU64,
    /// 0 while running, then [`DONE`] or [`FAILED`].
    state: AtomicU32,
    error: DumpError,
    stats: DumpStats,
}

const DONE: u32 = 1;
const FAILED: u32 = 2;

/// One side of the fork.
pub enum Forked {
    /// In the parent: the child's process id.
    Parent(Parent),
    /// In the child, which must end with [`Child::finish`].
    Child(Child),
    /// No child: `fork` failed with this `errno`.
    Failed(i32),
}

/// The parent's handle on the child.
pub struct Parent {
    pid: u32,
    shared: *mut Shared,
}

/// The child's side. Dropping it (a panic unwinding through the dump in
/// the child) ends the child at once: it must never return or unwind into
/// the copy of the program.
pub struct Child {
    shared: *mut Shared,
}

impl Drop for Child {
    fn drop(&mut self) {
        // Ends this (child) process without running anything of the
        // program's; the parent sees no result and reports the status.
        sys::exit_immediately(127)
    }
}

/// Forks the calling process. The caller holds every tracker lock and has
/// the other threads stopped; both sides return here.
pub fn fork() -> Forked {
    let Some(memory) = sys::map_shared_zeroed(size_of::<Shared>()) else {
        return Forked::Failed(libc::ENOMEM);
    };
    let shared = memory.cast::<Shared>();
    // SAFETY: a fresh, page-aligned shared mapping big enough for a
    // `Shared`, initialized here before either side reads it.
    unsafe {
        shared.write(Shared {
            pause_ns: AtomicU64::new(0),
            state: AtomicU32::new(0),
            error: DumpError::Internal,
            stats: DumpStats::default(),
        });
    }
    // Every signal blocked across the fork: the child keeps this mask, so
    // no handler of the program ever runs in it.
    let previous = sys::block_all_signals();
    // What the child may do is narrow, and the dump keeps to it: never
    // return or unwind into the program (`Child` ends the process when
    // dropped), no allocation and no lock another thread may hold, and no
    // pthread call or `raise` (glibc's cached thread id is the parent's
    // there). `pthread_sigmask` above cannot block glibc's two internal
    // signals, which only target threads of the parent by id.
    // SAFETY: the child keeps to the above (`Child` ends it at the latest
    // when dropped).
    let forked = unsafe { sys::fork_without_handlers() };
    if forked == Ok(0) {
        return Forked::Child(Child { shared });
    }
    sys::set_signal_mask(&previous);
    match forked {
        Ok(pid) => Forked::Parent(Parent { pid, shared }),
        Err(errno) => {
            // SAFETY: our mapping, unused by anyone else (there is no child).
            unsafe { sys::unmap(memory, size_of::<Shared>()) };
            Forked::Failed(errno)
        }
    }
}

impl Parent {
    /// Tells the child how long the program was paused.
    pub fn tell_pause(&self, pause_ns: u64) {
        // SAFETY: the shared mapping lives until `wait` unmaps it.
        unsafe { &*self.shared }
            .pause_ns
            .store(pause_ns.max(1), Ordering::Release);
    }

    /// Waits for the child and returns what it wrote.
    pub fn wait(self) -> Result<DumpStats, DumpError> {
        // An error (ECHILD: someone reaped it with __WALL) leaves the
        // status unknown; the shared state still says how it ended.
        let status = sys::wait_for_child(self.pid).unwrap_or(0);
        // SAFETY: the child has exited; the mapping is ours to read and
        // then to unmap.
        let result = unsafe {
            let shared = &*self.shared;
            match shared.state.load(Ordering::Acquire) {
                DONE => Ok(shared.stats),
                FAILED => Err(shared.error),
                _ => Err(DumpError::SnapshotProcess { status }),
            }
        };
        // SAFETY: the mapping made in `fork`; nobody uses it any more.
        unsafe { sys::unmap(self.shared.cast(), size_of::<Shared>()) };
        result
    }
}

impl Child {
    /// How long the parent paused the program: waits (up to a second) for
    /// the parent to say, which it does right after resuming the threads.
    pub fn parent_pause_ns(&self) -> u64 {
        let deadline = sys::clock_ns(libc::CLOCK_MONOTONIC) + 1_000_000_000;
        loop {
            // SAFETY: the shared mapping outlives the child.
            let ns = unsafe { &*self.shared }.pause_ns.load(Ordering::Acquire);
            if ns != 0 || sys::clock_ns(libc::CLOCK_MONOTONIC) > deadline {
                return ns;
            }
            sys::yield_now();
        }
    }

    /// Reports the result to the parent and ends the child.
    pub fn finish(self, result: &Result<DumpStats, DumpError>) -> ! {
        let shared = self.shared;
        // The fields are written through raw pointers: the parent may store
        // `pause_ns` meanwhile, so no `&mut Shared` is made.
        // SAFETY: the shared mapping outlives the child; the parent reads
        // these fields only after the child has exited.
        unsafe {
            match *result {
                Ok(stats) => {
                    (&raw mut (*shared).stats).write(stats);
                    (*shared).state.store(DONE, Ordering::Release);
                }
                Err(error) => {
                    (&raw mut (*shared).error).write(error);
                    (*shared).state.store(FAILED, Ordering::Release);
                }
            }
        }
        sys::exit_immediately(0)
    }
}
