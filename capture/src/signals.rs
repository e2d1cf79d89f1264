//! Taking over a signal while keeping the program's handler for it: the
//! stop signal of a dump and the signals that trigger dumps both install
//! the tracker's handler and pass on what is not theirs (or, for
//! triggers, everything) to the handler the program had installed.

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::sys;

/// A handler with `SA_SIGINFO`'s signature.
pub type Handler = extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void);

/// Signals 1..=64.
const SIGNALS: usize = 65;

/// Per signal, the action the program had before the tracker took the
/// signal over: a fresh page per takeover (rare: once, plus once each time
/// the program replaces our handler), never changed or unmapped once
/// published, so a handler running on another thread never reads a
/// half-written action.
static PREVIOUS: [AtomicPtr<libc::sigaction>; SIGNALS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; SIGNALS];

/// The tracker's own handlers, so that one of them is never kept as "the
/// program's handler" of a signal another one takes over (which would
/// forward to itself, or to each other, forever).
static TRACKER_HANDLERS: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

fn is_tracker_handler(handler: usize) -> bool {
    TRACKER_HANDLERS
        .iter()
        .any(|h| h.load(Ordering::Acquire) == handler)
}

fn note_tracker_handler(handler: usize) {
    for slot in &TRACKER_HANDLERS {
        match slot.compare_exchange(0, handler, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(existing) if existing == handler => return,
            Err(_) => {}
        }
    }
}

/// What [`take_over`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeOver {
    /// Our handler was already the one installed.
    AlreadyOurs,
    /// Installed now; the program's handler (if any) is kept for [`forward`].
    Installed,
    /// The signal cannot be handled, or memory could not be mapped.
    Failed,
}

/// Makes `handler` the one installed for `signal` (`SA_RESTART`, on the
/// alternate stack if any, blocking every signal while it runs when
/// `mask_all`), keeping the action the program had so that [`forward`]
/// can call it. Checked on each call: a program that installed its own
/// handler since gets ours back, and its own becomes the one forwarded to.
pub fn take_over(signal: i32, handler: Handler, mask_all: bool) -> TakeOver {
    let Some(slot) = usize::try_from(signal).ok().and_then(|s| PREVIOUS.get(s)) else {
        return TakeOver::Failed;
    };
    let ours = handler as *const () as usize;
    note_tracker_handler(ours);
    let Some(current) = sys::signal_action(signal) else {
        return TakeOver::Failed;
    };
    if current.sa_sigaction == ours {
        return TakeOver::AlreadyOurs;
    }
    // Another of the tracker's handlers is not the program's: the one
    // kept before it stays the one forwarded to.
    if !is_tracker_handler(current.sa_sigaction) {
        let Some(memory) = sys::map_zeroed(size_of::<libc::sigaction>()) else {
            return TakeOver::Failed;
        };
        let previous = memory.cast::<libc::sigaction>();
        // SAFETY: `previous` points at our fresh, private, zeroed mapping.
        unsafe { previous.write(current) };
        slot.store(previous, Ordering::Release);
    }

    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
    action.sa_sigaction = ours;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    if mask_all {
        action.sa_mask = sys::all_signals();
    }
    if sys::set_signal_action(signal, &action) {
        TakeOver::Installed
    } else {
        TakeOver::Failed
    }
}

/// The program's disposition of `signal` before the tracker took it
/// over: `SIG_DFL`, `SIG_IGN` or a handler.
pub fn previous_disposition(signal: i32) -> usize {
    let Some(slot) = usize::try_from(signal).ok().and_then(|s| PREVIOUS.get(s)) else {
        return libc::SIG_DFL;
    };
    let previous = slot.load(Ordering::Acquire);
    if previous.is_null() {
        return libc::SIG_DFL;
    }
    // SAFETY: published after it was written, never changed or unmapped.
    unsafe { (*previous).sa_sigaction }
}

/// Whether `signal`'s default action ends the process. `SIGUSR1` and
/// `SIGUSR2` are left out on purpose: they are the signals people send to
/// ask for a dump, not to end the program.
pub fn ends_process_by_default(signal: i32) -> bool {
    matches!(
        signal,
        libc::SIGHUP
            | libc::SIGINT
            | libc::SIGQUIT
            | libc::SIGTERM
            | libc::SIGALRM
            | libc::SIGPIPE
            | libc::SIGPROF
            | libc::SIGVTALRM
            | libc::SIGXCPU
            | libc::SIGXFSZ
            | libc::SIGIO
            | libc::SIGPWR
    )
}

/// Ends the process with `signal`'s default action: the disposition goes
/// back to `SIG_DFL` and the signal is sent to the calling thread, with
/// it unblocked there.
pub fn die_of(signal: i32) {
    // SAFETY: an all-zero sigaction (no flags, empty mask) is valid.
    let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
    action.sa_sigaction = libc::SIG_DFL;
    sys::set_signal_action(signal, &action);
    let _ = sys::signal_thread(sys::thread_id(), signal);
    sys::unblock_signal(signal);
}

/// Calls the handler the program had for `signal` before [`take_over`],
/// if it had one; default and ignore dispositions do nothing (the tracker
/// owns the signal then, and the docs say so).
pub fn forward(signal: i32, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some(slot) = usize::try_from(signal).ok().and_then(|s| PREVIOUS.get(s)) else {
        return;
    };
    let previous = slot.load(Ordering::Acquire);
    if previous.is_null() {
        return;
    }
    // SAFETY: published after it was written, never changed or unmapped.
    let previous = unsafe { &*previous };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        return;
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program registered this function as an SA_SIGINFO
        // handler, so it has this signature.
        let f: Handler = unsafe { core::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: a plain handler registered by the program.
        let f: extern "C" fn(i32) = unsafe { core::mem::transmute(handler) };
        f(signal);
    }
}
