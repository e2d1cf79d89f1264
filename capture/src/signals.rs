//! Taking over a signal while keeping the program's handler for it: the
//! stop signal of a dump and the signals that trigger dumps both install
//! the tracker's handler and pass on what is not theirs (or, for
//! triggers, everything) to the handler the program had installed.

use core::sync::atomic::{AtomicPtr, Ordering};

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

/// Makes `handler` the one installed for `signal` (`SA_RESTART`, on the
/// alternate stack if any, blocking `mask_all` or nothing else), keeping
/// the action the program had so that [`forward`] can call it. Checked on
/// each call: a program that installed its own handler since gets ours
/// back, and its own becomes the one forwarded to. `false` when the
/// signal cannot be handled or memory cannot be mapped.
pub fn take_over(signal: i32, handler: Handler, mask_all: bool) -> bool {
    let Some(slot) = usize::try_from(signal).ok().and_then(|s| PREVIOUS.get(s)) else {
        return false;
    };
    let ours = handler as *const () as usize;
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut current: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: querying only; `current` is a valid out-pointer.
    if unsafe { libc::sigaction(signal, core::ptr::null(), &mut current) } != 0 {
        return false;
    }
    if current.sa_sigaction == ours {
        return true;
    }
    let Some(memory) = sys::map_zeroed(size_of::<libc::sigaction>()) else {
        return false;
    };
    let previous = memory.cast::<libc::sigaction>();
    // SAFETY: `previous` points at our fresh, private, zeroed mapping.
    unsafe { previous.write(current) };
    slot.store(previous, Ordering::Release);

    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut action: libc::sigaction = unsafe { core::mem::zeroed() };
    action.sa_sigaction = ours;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
    if mask_all {
        // SAFETY: `sa_mask` is a valid sigset to fill.
        unsafe {
            libc::sigfillset(&mut action.sa_mask);
        }
    }
    // SAFETY: `action` is initialized.
    unsafe { libc::sigaction(signal, &action, core::ptr::null_mut()) == 0 }
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
