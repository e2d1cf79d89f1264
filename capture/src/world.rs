//! Stopping the world: every other thread of the process is sent a signal
//! whose handler saves the interrupted registers, acknowledges, and waits on
//! a futex until the dump releases it.
//!
//! The protocol, in the spirit of Boehm GC's and LeakSanitizer's:
//!
//! 1. The dumping thread holds every tracker lock, so no thread is inside
//!    the tracker when it stops and none can free a block while the scan
//!    reads it.
//! 2. It sends each thread `rt_tgsigqueueinfo(signal)` carrying the dump's
//!    epoch, so the handler can tell the tracker's requests from anything
//!    else that raises the same signal (those go to the program's own
//!    handler, if it had one).
//! 3. The handler copies the interrupted general registers from its
//!    `ucontext` and the thread pointer into the thread's slot, counts an
//!    acknowledgement, and sleeps on the resume futex.
//! 4. The dumper waits for acknowledgements up to the stop timeout; threads
//!    that did not answer (all signals blocked, say) are recorded as not
//!    stopped.
//! 5. After the scan it publishes the resume word, wakes everyone, and waits
//!    (bounded) until no handler is inside the protocol any more.
//!
//! The slots live in one mapping made on first use and never unmapped, so a
//! handler that runs late (a thread that unblocks its signals after the
//! dump) can never touch freed memory: it sees a stale epoch and returns.

use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::threads::MAX_THREADS;
use crate::{DumpError, signals, sys};

static STOP_SIGNAL: AtomicI32 = AtomicI32::new(crate::DEFAULT_STOP_SIGNAL);
static STOP_TIMEOUT_NS: AtomicU64 = AtomicU64::new(100_000_000);

pub fn set_stop_signal(signal: i32) -> Result<(), DumpError> {
    if signal <= 0
        || signal > libc::SIGRTMAX()
        || signal == libc::SIGKILL
        || signal == libc::SIGSTOP
        || crate::triggers::is_trigger_signal(signal)
    {
        return Err(DumpError::InvalidSignal);
    }
    STOP_SIGNAL.store(signal, Ordering::Relaxed);
    Ok(())
}

/// The signal dumps stop threads with now.
pub fn stop_signal() -> i32 {
    STOP_SIGNAL.load(Ordering::Relaxed)
}

pub fn set_stop_timeout(timeout: std::time::Duration) {
    STOP_TIMEOUT_NS.store(
        u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// General registers saved per thread: the `gregs` of x86_64's
/// `mcontext_t` (`REG_R8` = 0 … `REG_CR2` = 22).
pub const SAVED_REGISTERS: usize = 23;

/// What one thread reported when it stopped.
#[repr(C)]
pub struct StopSlot {
    pub tid: AtomicU32,
    /// 0 waiting, 1 stopped.
    state: AtomicU32,
    pub registers: [AtomicU64; SAVED_REGISTERS],
    pub stack_pointer: AtomicU64,
    pub thread_pointer: AtomicU64,
}

const WAITING: u32 = 0;
const STOPPED: u32 = 1;

/// The slot array (never unmapped) and how many slots the current stop uses.
static SLOTS: AtomicPtr<StopSlot> = AtomicPtr::new(core::ptr::null_mut());
static SLOTS_IN_USE: AtomicUsize = AtomicUsize::new(0);
/// Nonzero while a stop is in progress: the epoch its signals carry.
static ACTIVE_EPOCH: AtomicU32 = AtomicU32::new(0);
static NEXT_EPOCH: AtomicU32 = AtomicU32::new(1);
/// Set to the active epoch to release the stopped threads (futex word).
static RESUME: AtomicU32 = AtomicU32::new(0);
/// Acknowledgements of the current stop (futex word).
static ACKS: AtomicU32 = AtomicU32::new(0);
/// Handlers currently inside the protocol.
static INSIDE: AtomicU32 = AtomicU32::new(0);

fn slots() -> Option<&'static [StopSlot]> {
    let base = sys::map_once(&SLOTS, MAX_THREADS * size_of::<StopSlot>())?;
    // SAFETY: the mapping holds MAX_THREADS zero-initialized slots of
    // atomics and is never unmapped.
    Some(unsafe { core::slice::from_raw_parts(base, MAX_THREADS) })
}

/// Makes sure our handler is the one installed for `signal`, keeping the
/// handler the program had to forward foreign signals to. Checked on every
/// dump (see [`signals::take_over`]). The handler stays installed between
/// dumps, because a thread that had the signal blocked receives the
/// request later and must not die of it.
fn install(signal: i32) -> Result<(), DumpError> {
    match signals::take_over(signal, on_stop_signal, true) {
        signals::TakeOver::Failed => Err(DumpError::InvalidSignal),
        _ => Ok(()),
    }
}

/// Reads the thread pointer (`fs` base on x86_64), where glibc keeps the
/// thread control block with static TLS just below it.
#[inline(always)]
pub fn thread_pointer() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let value: u64;
        // SAFETY: on x86_64 Linux `fs:0` holds the TCB's pointer to itself
        // (the TLS ABI requires it); reading it has no side effects.
        unsafe {
            core::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) value, options(nostack, readonly, preserves_flags));
        }
        value
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

extern "C" fn on_stop_signal(signal: i32, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let saved_errno = sys::errno();
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let epoch = ACTIVE_EPOCH.load(Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (code, pid, value) = unsafe {
        let info = &*info;
        (
            info.si_code,
            info.si_pid(),
            info.si_value().sival_ptr as usize as u32,
        )
    };
    let ours = code == libc::SI_QUEUE && pid as u32 == sys::process_id();
    if !ours {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
        signals::forward(signal, info, context);
    } else if epoch != 0 && value == epoch {
        stop_here(epoch, context);
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    } else {
        // A request from a dump that already ended (this thread had the
        // signal blocked until now): nothing to do.
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
    sys::set_errno(saved_errno);
}

fn stop_here(epoch: u32, context: *mut libc::c_void) {
    let slots = SLOTS.load(Ordering::Acquire);
    let count = SLOTS_IN_USE.load(Ordering::Acquire);
    if slots.is_null() {
        return;
    }
    // SAFETY: the slot mapping is never unmapped and holds `count` slots
    // published before the signal was sent.
    let slots = unsafe { core::slice::from_raw_parts(slots, count) };
    let tid = sys::thread_id();
    let Ok(index) = slots.binary_search_by_key(&tid, |s| s.tid.load(Ordering::Relaxed)) else {
        return;
    };
    let slot = &slots[index];
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: for an SA_SIGINFO handler the third argument is the
        // interrupted context, a valid ucontext_t.
        let context = unsafe { &*(context as *const libc::ucontext_t) };
        for (saved, &value) in slot.registers.iter().zip(context.uc_mcontext.gregs.iter()) {
            saved.store(value as u64, Ordering::Relaxed);
        }
        slot.stack_pointer.store(
            context.uc_mcontext.gregs[libc::REG_RSP as usize] as u64,
            Ordering::Relaxed,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = context;
    slot.thread_pointer
        .store(thread_pointer(), Ordering::Relaxed);
    slot.state.store(STOPPED, Ordering::Release);
    ACKS.fetch_add(1, Ordering::SeqCst);
    sys::futex_wake(&ACKS, 1);
    while RESUME.load(Ordering::Acquire) != epoch {
        sys::futex_wait(&RESUME, RESUME.load(Ordering::Acquire), None);
    }
}

/// One thread as the stop left it.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoppedThread {
    pub stopped: bool,
    /// The thread no longer existed when the request was sent.
    pub gone: bool,
    pub stack_pointer: u64,
    pub thread_pointer: u64,
    pub registers: [u64; SAVED_REGISTERS],
}

// SAFETY: integers and booleans; all-zero is valid.
unsafe impl sys::Zeroable for StoppedThread {}

/// A stop in progress; [`World::resume`] (or dropping it) lets the
/// threads go.
pub struct World {
    epoch: u32,
    pub stop_ns: u64,
    released: bool,
}

/// Stops every thread in `tids` (sorted, the caller's own id excluded) and
/// fills `out` (same order) with what each reported.
pub fn stop(tids: &[u32], out: &mut [StoppedThread]) -> Result<World, DumpError> {
    let started = sys::clock_ns(libc::CLOCK_MONOTONIC);
    let signal = STOP_SIGNAL.load(Ordering::Relaxed);
    install(signal)?;
    let slots = slots().ok_or(DumpError::OutOfMemory)?;
    let count = tids.len().min(MAX_THREADS).min(out.len());
    for (slot, &tid) in slots.iter().zip(&tids[..count]) {
        slot.tid.store(tid, Ordering::Relaxed);
        slot.state.store(WAITING, Ordering::Relaxed);
        slot.stack_pointer.store(0, Ordering::Relaxed);
        slot.thread_pointer.store(0, Ordering::Relaxed);
    }
    let epoch = NEXT_EPOCH.fetch_add(1, Ordering::Relaxed).max(1);
    ACKS.store(0, Ordering::SeqCst);
    SLOTS_IN_USE.store(count, Ordering::Release);
    ACTIVE_EPOCH.store(epoch, Ordering::SeqCst);
    let world = World {
        epoch,
        stop_ns: 0,
        released: false,
    };

    let (pid, uid) = (sys::process_id(), sys::user_id());
    let mut sent = 0u32;
    for (i, &tid) in tids[..count].iter().enumerate() {
        out[i] = StoppedThread::default();
        if send(pid, uid, tid, signal, epoch) {
            sent += 1;
        } else {
            out[i].gone = true;
        }
    }

    let timeout = STOP_TIMEOUT_NS.load(Ordering::Relaxed);
    let deadline = started.saturating_add(timeout);
    loop {
        let acks = ACKS.load(Ordering::SeqCst);
        if acks >= sent {
            break;
        }
        let now = sys::clock_ns(libc::CLOCK_MONOTONIC);
        if now >= deadline {
            break;
        }
        sys::futex_wait(&ACKS, acks, Some(deadline - now));
    }
    for (i, slot) in slots[..count].iter().enumerate() {
        if slot.state.load(Ordering::Acquire) == STOPPED {
            out[i].stopped = true;
            out[i].stack_pointer = slot.stack_pointer.load(Ordering::Relaxed);
            out[i].thread_pointer = slot.thread_pointer.load(Ordering::Relaxed);
            for (r, saved) in out[i].registers.iter_mut().zip(&slot.registers) {
                *r = saved.load(Ordering::Relaxed);
            }
        }
    }
    Ok(World {
        stop_ns: sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(started),
        ..world
    })
}

/// Sends one stop request; `false` if the thread is gone.
fn send(pid: u32, uid: u32, tid: u32, signal: i32, epoch: u32) -> bool {
    // SAFETY: an all-zero siginfo is valid; we fill the queue fields.
    let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
    info.si_signo = signal;
    info.si_code = libc::SI_QUEUE;
    // The `_rt` member of the union: si_pid, si_uid, si_value, laid out
    // right after the three leading ints (and padding) on 64-bit Linux.
    let fields = (&mut info as *mut libc::siginfo_t).cast::<u8>();
    // SAFETY: offsets 16, 20 and 24 lie inside the 128-byte siginfo_t and
    // are the kernel's `_sifields._rt` layout on 64-bit Linux.
    unsafe {
        fields.add(16).cast::<u32>().write_unaligned(pid);
        fields.add(20).cast::<u32>().write_unaligned(uid);
        fields
            .add(24)
            .cast::<u64>()
            .write_unaligned(u64::from(epoch));
    }
    loop {
        match sys::queue_signal_to_thread(tid, signal, &mut info) {
            Ok(()) => return true,
            // The queue of pending signals is full: retry shortly.
            Err(libc::EAGAIN) => sys::yield_now(),
            Err(_) => return false,
        }
    }
}

impl World {
    /// Forgets the stop without touching the stopped threads: in the
    /// fork child, where they do not exist (the parent resumes them).
    pub fn abandon(&mut self) {
        self.released = true;
    }

    /// Lets every stopped thread go and waits (up to a second) until none
    /// is still inside the handler.
    pub fn resume(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        ACTIVE_EPOCH.store(0, Ordering::SeqCst);
        RESUME.store(self.epoch, Ordering::Release);
        sys::futex_wake(&RESUME, i32::MAX);
        let deadline = sys::clock_ns(libc::CLOCK_MONOTONIC) + 1_000_000_000;
        while INSIDE.load(Ordering::SeqCst) != 0 && sys::clock_ns(libc::CLOCK_MONOTONIC) < deadline
        {
            sys::yield_now();
        }
        SLOTS_IN_USE.store(0, Ordering::Release);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.resume();
    }
}
