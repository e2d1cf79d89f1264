//! Dumps the process writes by itself: on a signal, each time live bytes
//! grow by a step, every interval, at exit and when an allocation fails.
//!
//! The settings (the `HEAPDUMP` variable over the [`Settings`] given in
//! code) are read at the tracker's first allocation ([`start_once`]).
//! Signal, growth and interval dumps are written by a thread the tracker
//! owns, started then if one of them is configured: the signal handler and
//! the allocation path only set a bit and wake it with a futex (both
//! async-signal-safe and a few instructions). Exit and out-of-memory dumps
//! are written on the thread where they happen, because the process must
//! not go on (end, or see the failure) before the dump is complete.
//!
//! Files are `DIR/heapdump.PID.SEQ.TRIGGER.hdump`: created 0600 with
//! `O_EXCL|O_NOFOLLOW`, DIR created 0700 when missing, at most `max` per
//! process. Each dump is announced in one line on stderr; a dump that
//! cannot be written is reported (once per kind of failure) and never
//! harms the program.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::dump::{self, Caller};
use crate::settings::{self, Mode, Settings, Triggers};
use crate::sys::{self, PathBuf, SpinLock, StderrLine};
use crate::{Busy, DUMP_LOCK, DumpError, DumpStats, LIVE, signals};

const UNSTARTED: u8 = 0;
const STARTING: u8 = 1;
const READY: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNSTARTED);

/// What applies after merging the variable over the code's settings.
struct Config {
    /// Absolute, so a later `chdir` of the program does not move dumps.
    dir: PathBuf<4096>,
    triggers: Triggers,
    max_dumps: u32,
}

static CONFIG: SpinLock<Config> = SpinLock::new(Config {
    dir: PathBuf::new(),
    triggers: Triggers {
        exit: false,
        signals: 0,
        growth_bytes: 0,
        interval_ns: 0,
        oom: false,
    },
    max_dumps: settings::DEFAULT_MAX_DUMPS,
});

/// The configured [`Mode`]: 0 fork, 1 stop.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Why the trigger thread was woken (bits), and the futex word it sleeps on.
static PENDING: AtomicU32 = AtomicU32::new(0);
static WAKE: AtomicU32 = AtomicU32::new(0);
const PENDING_SIGNAL: u32 = 1;
const PENDING_GROWTH: u32 = 2;

/// Live bytes at which the next growth dump is due; `u64::MAX`: none.
static GROWTH_NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
static GROWTH_STEP: AtomicU64 = AtomicU64::new(0);

/// Triggered dumps started in this process (the SEQ of the file names).
static TAKEN: AtomicU32 = AtomicU32::new(0);
/// Set in a process that tracks nothing (see [`stay_passive`]).
pub static PASSIVE: AtomicBool = AtomicBool::new(false);
/// Whether children made by `fork` become passive (`heapdump run` watches
/// the program's own process only).
static THIS_PROCESS_ONLY: AtomicBool = AtomicBool::new(false);

/// See `heapdump_capture::stay_passive`.
pub fn stay_passive() {
    PASSIVE.store(true, Ordering::Release);
    OOM_ARMED.store(false, Ordering::Release);
    STATE.store(READY, Ordering::Release);
}

pub fn set_this_process_only(only: bool) {
    THIS_PROCESS_ONLY.store(only, Ordering::Relaxed);
}

/// The trigger signals (bit n: signal n), readable without a lock.
static TRIGGER_SIGNALS: AtomicU64 = AtomicU64::new(0);
/// A trigger signal whose default action ends the process, received when
/// the program had no handler for it: after the dump, the process ends
/// as the signal would have ended it.
static TERMINATE_WITH: AtomicU32 = AtomicU32::new(0);
/// The trigger thread's kernel id (0 until it runs): dumps do not stop it
/// (it holds no heap pointer and no lock a dump needs).
static TRIGGER_TID: AtomicU32 = AtomicU32::new(0);
/// The process the trigger thread runs in, set by the thread that creates
/// it as soon as it is created: a signal that comes before the new thread
/// first runs is still served (the thread finds it pending when it starts).
static TRIGGER_PID: AtomicU32 = AtomicU32::new(0);
/// Whether `dir` could be used at start; triggered dumps are off if not.
static DIR_USABLE: AtomicBool = AtomicBool::new(true);
/// Path buffers of triggered dumps, off the stack (an out-of-memory dump
/// may run on a small thread stack). Used under `DUMP_LOCK` only.
static PATHS: SpinLock<[PathBuf<4096>; 2]> = SpinLock::new([PathBuf::new(), PathBuf::new()]);
/// How long the exit handler waits for a dump in progress (a dump stuck
/// writing to a stalled pipe must not keep the process from ending).
const EXIT_WAIT_NS: u64 = 10_000_000_000;
/// Set by the exit handler: no dump but the exit dump starts after it.
static EXITING: AtomicBool = AtomicBool::new(false);
static EXIT_HANDLER_REGISTERED: AtomicBool = AtomicBool::new(false);
static OOM_ARMED: AtomicBool = AtomicBool::new(false);
/// Address space held back for the out-of-memory dump (see [`reserve`]).
static RESERVE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
const RESERVE_BYTES: usize = 256 << 20;

/// What made a dump; the name goes into the file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Signal,
    Growth,
    Interval,
    Exit,
    Oom,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::Growth => "growth",
            Trigger::Interval => "interval",
            Trigger::Exit => "exit",
            Trigger::Oom => "oom",
        }
    }
}

/// Applies the settings once per process, at the first tracked allocation:
/// one relaxed load afterwards. The caller holds the thread's `Busy` guard.
#[inline(always)]
pub fn start_once(code: &Settings) {
    if STATE.load(Ordering::Relaxed) != READY {
        start(code);
    }
}

#[cold]
#[inline(never)]
fn start(code: &Settings) {
    if STATE
        .compare_exchange(UNSTARTED, STARTING, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        // Another thread is starting: its allocations do not wait for it.
        return;
    }
    let from_environment = settings::from_environment();
    let mut triggers = from_environment.triggers.unwrap_or(code.triggers);
    let mode = from_environment.mode.unwrap_or(code.mode);
    let max_dumps = from_environment.max_dumps.unwrap_or(code.max_dumps);
    let dir = from_environment
        .dir
        .or(code.dir.map(str::as_bytes))
        .unwrap_or(b"");
    crate::sampling::configure(
        from_environment
            .stack_sample_interval
            .unwrap_or(code.stack_sample_interval),
        from_environment.sample_seed.unwrap_or(code.sample_seed),
    );
    triggers.signals = usable_signals(triggers.signals);
    TRIGGER_SIGNALS.store(triggers.signals, Ordering::Release);
    MODE.store(u8::from(mode == Mode::Stop), Ordering::Relaxed);
    let dir = match absolute(dir) {
        Ok(dir) => Some(dir),
        Err(why) => {
            if triggers.any() {
                let mut line = StderrLine::new();
                let _ = write!(line, "heapdump: dir=");
                line.push_bytes(&dir[..dir.len().min(64)]);
                let _ = write!(line, ": {why}; triggered dumps are off");
                line.emit();
            }
            DIR_USABLE.store(false, Ordering::Relaxed);
            None
        }
    };
    {
        let mut config = CONFIG.lock();
        if let Some(dir) = dir {
            config.dir = dir;
        }
        config.triggers = triggers;
        config.max_dumps = max_dumps;
    }
    if triggers.any() && !EXIT_HANDLER_REGISTERED.swap(true, Ordering::AcqRel) {
        // Even without `on=exit`: the exit handler waits for a dump in
        // progress, so the process never ends in the middle of one.
        sys::at_exit(at_exit);
    }
    if triggers.oom {
        reserve();
        OOM_ARMED.store(true, Ordering::Release);
    }
    if triggers.growth_bytes != 0 {
        GROWTH_STEP.store(triggers.growth_bytes, Ordering::Relaxed);
        rearm_growth(LIVE.totals().live_bytes);
    }
    for signal in 1..64 {
        if triggers.signals & (1 << signal) != 0
            && signals::take_over(signal, on_trigger_signal, false) == signals::TakeOver::Failed
        {
            let mut line = StderrLine::new();
            let _ = write!(
                line,
                "heapdump: cannot handle signal {signal}: on=signal ignored"
            );
            line.emit();
        }
    }
    if triggers.need_thread() {
        spawn_trigger_thread();
    }
    STATE.store(READY, Ordering::Release);
}

/// The signals of `wanted` that can trigger a dump; each other one is
/// reported once.
fn usable_signals(wanted: u64) -> u64 {
    let mut usable = 0;
    for signal in 1..64 {
        if wanted & (1 << signal) == 0 {
            continue;
        }
        match settings::usable_trigger_signal(signal) {
            Ok(()) => usable |= 1 << signal,
            Err(why) => {
                let mut line = StderrLine::new();
                let _ = write!(line, "heapdump: on=signal:{signal}: {why}; ignored");
                line.emit();
            }
        }
    }
    usable
}

/// `dir` made absolute against the working directory now (the working
/// directory itself when empty), or why it cannot be.
fn absolute(dir: &[u8]) -> Result<PathBuf<4096>, &'static str> {
    let mut path = PathBuf::new();
    if dir.first() != Some(&b'/') {
        if !path.push_current_directory() {
            return Err("the working directory cannot be read, and the path is relative");
        }
        if !dir.is_empty() && !path.push(b"/") {
            return Err("the path is too long");
        }
    }
    if !path.push(dir) || path.as_bytes().len() > 3800 {
        return Err("the path is too long");
    }
    Ok(path)
}

/// Whether `signal` triggers dumps (then it cannot be the stop signal).
pub fn is_trigger_signal(signal: i32) -> bool {
    (1..64).contains(&signal) && TRIGGER_SIGNALS.load(Ordering::Acquire) & (1 << signal) != 0
}

/// The trigger thread's kernel id, 0 if none runs.
pub fn trigger_thread_tid() -> u32 {
    TRIGGER_TID.load(Ordering::Acquire)
}

/// The mode dumps use unless a call names one.
pub fn configured_mode() -> Mode {
    if MODE.load(Ordering::Relaxed) == 1 {
        Mode::Stop
    } else {
        Mode::Fork
    }
}

/// Called with the live bytes each time the allocation path samples them
/// (every 128 allocations or 1 MiB per thread).
#[inline(always)]
pub fn note_live_bytes(live_bytes: u64) {
    if live_bytes >= GROWTH_NEXT.load(Ordering::Relaxed) {
        growth_reached();
    }
}

#[cold]
#[inline(never)]
fn growth_reached() {
    // One wake-up per step: the next level is set once the dump is done.
    GROWTH_NEXT.store(u64::MAX, Ordering::Relaxed);
    wake(PENDING_GROWTH);
}

/// Sets the next growth level after a dump that saw `live_bytes`.
fn rearm_growth(live_bytes: u64) {
    let step = GROWTH_STEP.load(Ordering::Relaxed);
    if step != 0 && TAKEN.load(Ordering::Relaxed) < CONFIG.lock().max_dumps {
        GROWTH_NEXT.store(live_bytes.saturating_add(step), Ordering::Relaxed);
    }
}

/// Any dump (triggered or asked for by the program) saw `live_bytes`: the
/// growth trigger counts from there.
pub fn dump_written(live_bytes: u64) {
    if GROWTH_STEP.load(Ordering::Relaxed) != 0 {
        rearm_growth(live_bytes);
    }
}

/// Async-signal-safe: sets `reason` and wakes the trigger thread.
fn wake(reason: u32) {
    PENDING.fetch_or(reason, Ordering::AcqRel);
    WAKE.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake(&WAKE, 1);
}

extern "C" fn on_trigger_signal(
    signal: i32,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let saved_errno = sys::errno();
    // No trigger thread here (a child of the program's fork, a passive
    // process): the signal does what it would do without the tracker.
    // (By process id too: the fork handlers that reset the thread id are
    // registered at the first allocation, which may come too early in a
    // process's start for them to take.)
    let pid = sys::process_id();
    let no_dumps = PASSIVE.load(Ordering::Acquire) || TRIGGER_PID.load(Ordering::Acquire) != pid;
    if signals::ends_process_by_default(signal)
        && signals::previous_disposition(signal) == libc::SIG_DFL
    {
        if no_dumps {
            signals::die_of(signal);
        }
        // The program had no handler: after the dump, the signal ends it
        // as it would have without the tracker.
        TERMINATE_WITH.store(signal as u32, Ordering::Release);
    }
    if !no_dumps {
        wake(PENDING_SIGNAL);
    }
    signals::forward(signal, info, context);
    sys::set_errno(saved_errno);
}

fn spawn_trigger_thread() {
    // Every signal is blocked around the creation, so the new thread
    // starts with them blocked (it inherits the mask) and never runs a
    // handler of the program's.
    let previous = sys::block_all_signals();
    let created = sys::spawn_detached_thread(run);
    if created {
        TRIGGER_PID.store(sys::process_id(), Ordering::Release);
    }
    sys::set_signal_mask(&previous);
    if !created {
        let mut line = StderrLine::new();
        let _ = write!(
            line,
            "heapdump: cannot start the tracker's thread; signal, growth and interval dumps are off"
        );
        line.emit();
    }
}

/// The trigger thread: sleeps until woken or the next interval is due,
/// then writes the dumps asked for.
extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    // Whatever this thread allocates is the tracker's, never tracked.
    core::mem::forget(Busy::enter_always());
    TRIGGER_TID.store(sys::thread_id(), Ordering::Release);
    sys::set_thread_name(c"heapdump");
    // Signals are for the program's threads; dumps do not stop this one.
    sys::block_all_signals();
    let (interval_ns, signals) = {
        let config = CONFIG.lock();
        (config.triggers.interval_ns, config.triggers.signals)
    };
    let mut next_interval = if interval_ns == 0 {
        u64::MAX
    } else {
        sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_add(interval_ns)
    };
    let mut reported_takeback = 0u64;
    loop {
        let seen = WAKE.load(Ordering::Acquire);
        if EXITING.load(Ordering::Acquire) {
            return core::ptr::null_mut();
        }
        retake_signals(signals, &mut reported_takeback);
        let interval_due = sys::clock_ns(libc::CLOCK_MONOTONIC) >= next_interval;
        if PENDING.load(Ordering::Acquire) != 0 || interval_due {
            // Requests are taken only under the dump lock, and the exit
            // handler takes what is left under it too: a request made
            // before exit is written by one of the two, never lost.
            let serialized = DUMP_LOCK.lock();
            if EXITING.load(Ordering::Acquire) {
                return core::ptr::null_mut();
            }
            let pending = PENDING.swap(0, Ordering::AcqRel);
            serve(pending, &serialized);
            if pending & PENDING_SIGNAL != 0 {
                let signal = TERMINATE_WITH.swap(0, Ordering::AcqRel);
                if signal != 0 {
                    drop(serialized);
                    signals::die_of(signal as i32);
                    continue;
                }
            }
            if interval_due {
                triggered_holding(Trigger::Interval, &serialized);
                // Due times that passed during a long dump are skipped,
                // not made up for; none after the last dump allowed.
                let now = sys::clock_ns(libc::CLOCK_MONOTONIC);
                while next_interval <= now {
                    next_interval = next_interval.saturating_add(interval_ns);
                }
                if limit_reached() {
                    next_interval = u64::MAX;
                }
            }
        }
        // Returns at once if a wake-up came after `seen` was read; at
        // least once a second, to take back signals the program took.
        let now = sys::clock_ns(libc::CLOCK_MONOTONIC);
        let mut timeout = next_interval.saturating_sub(now);
        if signals != 0 {
            timeout = timeout.min(1_000_000_000);
        }
        if timeout != 0 {
            sys::futex_wait(&WAKE, seen, (timeout != u64::MAX).then_some(timeout));
        }
    }
}

/// Writes the dumps the `pending` bits ask for (signal, then growth).
fn serve(pending: u32, serialized: &sys::SpinGuard<'_, ()>) {
    if pending & PENDING_SIGNAL != 0 {
        triggered_holding(Trigger::Signal, serialized);
    }
    if pending & PENDING_GROWTH != 0 {
        triggered_holding(Trigger::Growth, serialized);
    }
}

/// Installs the trigger handler again for every trigger signal whose
/// handler the program replaced (with `signal` or a crate that handles
/// signals, after the tracker started); the program's handler is kept and
/// still called. Said once per signal.
fn retake_signals(signals: u64, reported: &mut u64) {
    for signal in 1..64 {
        if signals & (1 << signal) == 0 {
            continue;
        }
        if signals::take_over(signal, on_trigger_signal, false) == signals::TakeOver::Installed
            && *reported & (1 << signal) == 0
        {
            *reported |= 1 << signal;
            let mut line = StderrLine::new();
            let _ = write!(
                line,
                "heapdump: the program installed its own handler for signal {signal}; \
                 on=signal takes it back and still calls the program's handler"
            );
            line.emit();
        }
    }
}

fn limit_reached() -> bool {
    TAKEN.load(Ordering::Relaxed) >= CONFIG.lock().max_dumps
}

/// Writes one triggered dump on the calling thread; `None` when none was
/// written (the limit reached, the process exiting, or an error, reported).
#[inline(never)]
fn triggered(trigger: Trigger) -> Option<DumpStats> {
    let serialized = DUMP_LOCK.lock();
    // Once the exit handler ran, the process may end at any moment.
    if EXITING.load(Ordering::Acquire) {
        return None;
    }
    triggered_holding(trigger, &serialized)
}

/// [`triggered`] for a caller that holds `DUMP_LOCK`.
#[inline(never)]
fn triggered_holding(trigger: Trigger, serialized: &sys::SpinGuard<'_, ()>) -> Option<DumpStats> {
    let _busy = Busy::enter_always();
    let caller = Caller::capture();
    // The callers decide about exiting (the trigger thread stops, the exit
    // handler serves what is left).
    if !DIR_USABLE.load(Ordering::Relaxed) {
        return None;
    }
    let max_dumps = CONFIG.lock().max_dumps;
    // Counted without ever passing `max` (no wrap-around either).
    let taken = TAKEN.fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
        (taken < max_dumps).then_some(taken + 1)
    });
    let Ok(taken) = taken else {
        // Said when the last one was written.
        GROWTH_NEXT.store(u64::MAX, Ordering::Relaxed);
        return None;
    };
    let mut paths = PATHS.lock();
    let [path, scratch] = &mut *paths;
    let result = write_numbered(trigger, taken + 1, path, scratch, &caller, serialized);
    let outcome = match result {
        Ok(stats) => {
            announce(trigger, path.as_bytes(), &stats);
            rearm_growth(stats.live_bytes);
            Some(stats)
        }
        Err(failure) => {
            report_failure(trigger, path.as_bytes(), failure);
            rearm_growth(LIVE.totals().live_bytes);
            None
        }
    };
    drop(paths);
    if taken + 1 == max_dumps {
        let mut line = StderrLine::new();
        let _ = write!(
            line,
            "heapdump: max={max_dumps} dumps written; no more in this process"
        );
        line.emit();
    }
    outcome
}

/// Writes `DIR/heapdump.PID.SEQ.TRIGGER.hdump` into `path` and the dump
/// into that file. A name left by an earlier process with the same id (a
/// container's PID 1, a reused id) is never replaced: the next sequence
/// number is tried instead, a few times.
fn write_numbered(
    trigger: Trigger,
    sequence: u32,
    path: &mut PathBuf<4096>,
    scratch: &mut PathBuf<4096>,
    caller: &Caller,
    serialized: &sys::SpinGuard<'_, ()>,
) -> Result<DumpStats, Failure> {
    let pid = u64::from(sys::process_id());
    for attempt in 0..100u32 {
        path.clear();
        {
            let config = CONFIG.lock();
            let _ = path.push(config.dir.as_bytes());
        }
        let dir_len = path.as_bytes().len();
        let fits = path.push(b"/heapdump.")
            && path.push_decimal(pid)
            && path.push(b".")
            && path.push_decimal(u64::from(sequence) + u64::from(attempt))
            && path.push(b".")
            && path.push(trigger.name().as_bytes())
            && path.push(b".hdump");
        if !fits {
            return Err(Failure::Dir(libc::ENAMETOOLONG));
        }
        scratch.clear();
        let _ = scratch.push(&path.as_bytes()[..dir_len]);
        make_dir(scratch).map_err(Failure::Dir)?;
        match write_file(path, scratch, caller, serialized) {
            Err(Failure::Dump(DumpError::Open { errno })) if errno == libc::EEXIST => continue,
            result => return result,
        }
    }
    Err(Failure::Dump(DumpError::Open {
        errno: libc::EEXIST,
    }))
}

/// Why a triggered dump was not written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Dir(i32),
    Dump(DumpError),
}

fn write_file(
    path: &mut PathBuf<4096>,
    scratch: &mut PathBuf<4096>,
    caller: &Caller,
    serialized: &sys::SpinGuard<'_, ()>,
) -> Result<DumpStats, Failure> {
    dump::write_new_file(path, scratch, caller, configured_mode(), serialized)
        .map_err(Failure::Dump)
}

/// Creates the directory in `dir` and its missing parents, each 0700.
/// `Err(errno)` if it cannot, or if something that is not a directory is
/// in the way. `dir` is used as scratch and holds the directory again on
/// return.
fn make_dir(dir: &mut PathBuf<4096>) -> Result<(), i32> {
    let full = dir.as_bytes().len();
    // Each prefix ending before a '/' (the root and empty components
    // skipped), then the whole path.
    for at in 1..=full {
        let end_of_component = at == full || dir.as_bytes()[at] == b'/';
        if !end_of_component || dir.as_bytes()[at - 1] == b'/' {
            continue;
        }
        let made = sys::make_directory(dir.c_prefix(at), 0o700);
        dir.restore_after_prefix(at);
        match made {
            Ok(()) | Err(libc::EEXIST) => {}
            Err(errno) => return Err(errno),
        }
    }
    // It may exist as something else: say so before open says ENOTDIR
    // about the file inside.
    match sys::is_directory(dir.as_c_str()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(libc::ENOTDIR),
        Err(errno) => Err(errno),
    }
}

fn announce(trigger: Trigger, path: &[u8], stats: &DumpStats) {
    let mut line = StderrLine::new();
    let _ = write!(line, "heapdump: {}: wrote ", trigger.name());
    line.push_bytes(path);
    let _ = write!(
        line,
        " ({} blocks, {} bytes live; program paused {}.{:03} ms, mode={})",
        stats.allocations,
        stats.live_bytes,
        stats.pause_ns / 1_000_000,
        stats.pause_ns / 1_000 % 1_000,
        stats.mode.name()
    );
    line.emit();
}

/// Reports a failed dump on stderr, once per kind of failure: a full disk
/// must not turn every interval into a line.
fn report_failure(trigger: Trigger, path: &[u8], failure: Failure) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let key = match failure {
        Failure::Dir(errno) => 1 << 32 | errno as u32 as u64,
        Failure::Dump(DumpError::Open { errno }) => 2 << 32 | errno as u32 as u64,
        Failure::Dump(DumpError::Write { errno }) => 3 << 32 | errno as u32 as u64,
        Failure::Dump(_) => 4 << 32,
    };
    if LAST.swap(key, Ordering::Relaxed) == key {
        return;
    }
    let mut line = StderrLine::new();
    let _ = write!(line, "heapdump: {}: no dump written to ", trigger.name());
    line.push_bytes(path);
    let _ = write!(line, ": ");
    match failure {
        Failure::Dir(errno) => {
            let _ = write!(line, "cannot use the directory (dir=): ");
            line.push_errno(errno);
        }
        Failure::Dump(DumpError::Open { errno }) => {
            let _ = write!(line, "cannot create the file: ");
            line.push_errno(errno);
        }
        Failure::Dump(DumpError::Write { errno }) => {
            let _ = write!(line, "cannot write: ");
            line.push_errno(errno);
        }
        Failure::Dump(error) => {
            let _ = write!(line, "{}", ErrorText(error));
        }
    }
    let _ = write!(line, " (the program goes on)");
    line.emit();
}

/// A [`DumpError`]'s message for the variants whose `Display` needs no
/// heap (the ones with an errno are handled apart).
struct ErrorText(DumpError);

impl core::fmt::Display for ErrorText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            DumpError::Open { .. } | DumpError::Write { .. } => f.write_str("an I/O error"),
            other => core::fmt::Display::fmt(&other, f),
        }
    }
}

extern "C" fn at_exit() {
    if PASSIVE.load(Ordering::Acquire) {
        return;
    }
    let _busy = Busy::enter_always();
    EXITING.store(true, Ordering::Release);
    // Wait for a dump in progress, but not forever: one stuck writing to
    // a stalled pipe or socket must not keep the process from ending.
    let deadline = sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_add(EXIT_WAIT_NS);
    let serialized = loop {
        if let Some(guard) = DUMP_LOCK.try_lock() {
            break guard;
        }
        if sys::clock_ns(libc::CLOCK_MONOTONIC) >= deadline {
            let mut line = StderrLine::new();
            let _ = write!(
                line,
                "heapdump: a dump is still being written after 10 s; the process exits without waiting"
            );
            line.emit();
            return;
        }
        sys::sleep_ns(1_000_000);
    };
    // What was asked for before exit and not yet written (the trigger
    // thread takes requests under the same lock, so none is lost or
    // written twice), then the exit dump.
    serve(PENDING.swap(0, Ordering::AcqRel), &serialized);
    if CONFIG.lock().triggers.exit {
        triggered_holding(Trigger::Exit, &serialized);
    }
}

/// An allocation failed: with `on=oom`, dump before the failure goes on to
/// the program (so before `handle_alloc_error` aborts).
#[cold]
#[inline(never)]
pub fn allocation_failed() {
    if !OOM_ARMED.load(Ordering::Acquire) {
        return;
    }
    // Not from inside the tracker (a dump's own mapping failing, say).
    let Some(_busy) = Busy::enter() else {
        return;
    };
    release_reserve();
    triggered(Trigger::Oom);
    reserve();
}

/// Holds address space back for the out-of-memory dump: under an address
/// space limit (`RLIMIT_AS`), the dump's own mappings must find room once
/// the program's have taken everything. The reserve is `PROT_NONE` and
/// never touched: it costs no memory (and, being `MAP_NORESERVE`, frees
/// nothing of an overcommit budget: it helps under `RLIMIT_AS` only).
fn reserve() {
    if !RESERVE.load(Ordering::Acquire).is_null() {
        return;
    }
    if let Some(memory) = sys::reserve_address_space(RESERVE_BYTES)
        && RESERVE
            .compare_exchange(
                core::ptr::null_mut(),
                memory.cast(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
    {
        // SAFETY: our fresh mapping, which lost the race and nobody saw.
        unsafe { sys::unmap(memory, RESERVE_BYTES) };
    }
}

fn release_reserve() {
    let memory = RESERVE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !memory.is_null() {
        // SAFETY: the reserve mapping, taken out of `RESERVE` by us alone.
        unsafe { sys::unmap(memory.cast(), RESERVE_BYTES) };
    }
}

/// In a child of the program's own `fork`: no trigger thread exists there
/// and the counts are the parent's. Start again at the child's first
/// allocation (the exit handler and signal handlers are inherited).
pub fn forget_in_child() {
    // SAFETY: the child has one thread; a lock held at the fork belongs to
    // a thread that does not exist here, and nothing references its value.
    unsafe { CONFIG.force_unlock() };
    TRIGGER_TID.store(0, Ordering::Relaxed);
    // Not this process's trigger thread (its pid could even be equal, in
    // another pid namespace).
    TRIGGER_PID.store(0, Ordering::Relaxed);
    TAKEN.store(0, Ordering::Relaxed);
    PENDING.store(0, Ordering::Relaxed);
    if THIS_PROCESS_ONLY.load(Ordering::Relaxed) {
        stay_passive();
        return;
    }
    STATE.store(UNSTARTED, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn path(text: &str) -> PathBuf<4096> {
        let mut path = PathBuf::new();
        assert!(path.push(text.as_bytes()));
        path
    }

    #[test]
    fn make_dir_creates_missing_parents_0700_and_accepts_the_root() {
        assert_eq!(make_dir(&mut path("/")), Ok(()));
        let base = std::env::temp_dir().join(format!("heapdump-make-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let nested = format!("{}/a//b/", base.display());
        let mut dir = path(&nested);
        assert_eq!(make_dir(&mut dir), Ok(()));
        assert_eq!(
            dir.as_bytes(),
            nested.as_bytes(),
            "the path is given back whole"
        );
        for sub in ["a", "a/b"] {
            let mode = std::fs::metadata(base.join(sub))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{sub}");
        }
        let file = base.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            make_dir(&mut path(file.to_str().unwrap())),
            Err(libc::ENOTDIR)
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn relative_dirs_are_made_absolute_and_overlong_ones_refused() {
        let cwd = std::env::current_dir().unwrap();
        let made = absolute(b"dumps").unwrap();
        assert_eq!(
            made.as_bytes(),
            format!("{}/dumps", cwd.display()).as_bytes()
        );
        assert_eq!(
            absolute(b"").unwrap().as_bytes(),
            cwd.to_str().unwrap().as_bytes()
        );
        assert_eq!(absolute(b"/x").unwrap().as_bytes(), b"/x");
        assert!(absolute(&[b'a'; 4000]).is_err());
    }
}
