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
    MODE.store(u8::from(mode == Mode::Stop), Ordering::Relaxed);
    {
        let mut config = CONFIG.lock();
        config.dir = absolute(dir);
        config.triggers = triggers;
        config.max_dumps = max_dumps;
    }
    if triggers.any() && !EXIT_HANDLER_REGISTERED.swap(true, Ordering::AcqRel) {
        // Even without `on=exit`: the exit handler waits for a dump in
        // progress, so the process never ends in the middle of one.
        // SAFETY: registers an `extern "C"` function that never unwinds.
        unsafe { libc::atexit(at_exit) };
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
            && !signals::take_over(signal, on_trigger_signal, false)
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

/// `dir` made absolute against the working directory now (itself when
/// empty).
fn absolute(dir: &[u8]) -> PathBuf<4096> {
    let mut path = PathBuf::new();
    if dir.first() != Some(&b'/') {
        let mut cwd = [0u8; 4096];
        // SAFETY: `cwd` is writable for its length; getcwd NUL-terminates
        // what it writes and does not allocate when given a buffer.
        let got = unsafe { libc::getcwd(cwd.as_mut_ptr().cast(), cwd.len()) };
        if !got.is_null() {
            let len = cwd.iter().position(|&b| b == 0).unwrap_or(0);
            let _ = path.push(&cwd[..len]);
        }
        if !dir.is_empty() {
            let _ = path.push(b"/");
        }
    }
    let _ = path.push(dir);
    path
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
    // SAFETY: errno is thread-local; the location is valid for the thread.
    let saved_errno = unsafe { *libc::__errno_location() };
    wake(PENDING_SIGNAL);
    signals::forward(signal, info, context);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

fn spawn_trigger_thread() {
    // SAFETY: zeroed attributes and thread id are valid out-parameters;
    // the thread function never unwinds and takes no argument.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        let mut thread: libc::pthread_t = core::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let created = libc::pthread_create(&mut thread, &attr, run, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        if created != 0 {
            let mut line = StderrLine::new();
            let _ = write!(
                line,
                "heapdump: cannot start the tracker's thread; signal, growth and interval dumps are off"
            );
            line.emit();
        }
    }
}

/// The trigger thread: sleeps until woken or the next interval is due,
/// then writes the dumps asked for.
extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    // Whatever this thread allocates is the tracker's, never tracked.
    core::mem::forget(Busy::enter_always());
    // SAFETY: names the calling thread; the name is NUL-terminated.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"heapdump".as_ptr()) };
    // Signals are for the program's threads, except the one that stops
    // this thread too when another thread dumps.
    // SAFETY: a zeroed sigset is valid to fill; only this thread's mask
    // changes.
    unsafe {
        let mut mask: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut mask);
        libc::sigdelset(&mut mask, crate::world::stop_signal());
        libc::pthread_sigmask(libc::SIG_SETMASK, &mask, core::ptr::null_mut());
    }
    let interval_ns = CONFIG.lock().triggers.interval_ns;
    let mut next_interval = if interval_ns == 0 {
        u64::MAX
    } else {
        sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_add(interval_ns)
    };
    loop {
        let seen = WAKE.load(Ordering::Acquire);
        if EXITING.load(Ordering::Acquire) {
            return core::ptr::null_mut();
        }
        let pending = PENDING.swap(0, Ordering::AcqRel);
        if pending & PENDING_SIGNAL != 0 {
            triggered(Trigger::Signal);
        }
        if pending & PENDING_GROWTH != 0 {
            triggered(Trigger::Growth);
        }
        let now = sys::clock_ns(libc::CLOCK_MONOTONIC);
        if now >= next_interval {
            triggered(Trigger::Interval);
            // Due times that passed during a long dump are skipped, not
            // made up for.
            let now = sys::clock_ns(libc::CLOCK_MONOTONIC);
            while next_interval <= now {
                next_interval = next_interval.saturating_add(interval_ns);
            }
        }
        // Returns at once if a wake-up came after `seen` was read.
        let now = sys::clock_ns(libc::CLOCK_MONOTONIC);
        let timeout = (next_interval != u64::MAX).then(|| next_interval.saturating_sub(now));
        if timeout != Some(0) {
            sys::futex_wait(&WAKE, seen, timeout);
        }
    }
}

/// Writes one triggered dump on the calling thread; `None` when none was
/// written (the limit reached, the process exiting, or an error, reported).
#[inline(never)]
fn triggered(trigger: Trigger) -> Option<DumpStats> {
    let _busy = Busy::enter_always();
    let caller = Caller::capture();
    let serialized = DUMP_LOCK.lock();
    if EXITING.load(Ordering::Acquire) && trigger != Trigger::Exit {
        return None;
    }
    let (dir, max_dumps) = {
        let config = CONFIG.lock();
        (config.dir, config.max_dumps)
    };
    let sequence = TAKEN.fetch_add(1, Ordering::AcqRel) + 1;
    if sequence > max_dumps {
        if sequence == max_dumps.saturating_add(1) {
            let mut line = StderrLine::new();
            let _ = write!(
                line,
                "heapdump: {}: max={max_dumps} dumps written; no more in this process",
                trigger.name()
            );
            line.emit();
        }
        GROWTH_NEXT.store(u64::MAX, Ordering::Relaxed);
        return None;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let mut path = PathBuf::<4096>::new();
    let fits = path.push(dir.as_bytes())
        && path.push(b"/heapdump.")
        && path.push_decimal(pid)
        && path.push(b".")
        && path.push_decimal(u64::from(sequence))
        && path.push(b".")
        && path.push(trigger.name().as_bytes())
        && path.push(b".hdump");
    let result = if !fits {
        Err(Failure::Dir(libc::ENAMETOOLONG))
    } else {
        make_dir(dir.as_bytes())
            .map_err(Failure::Dir)
            .and_then(|()| write_file(path.as_bytes(), &caller, &serialized))
    };
    drop(serialized);
    match result {
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
    }
}

/// Why a triggered dump was not written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Dir(i32),
    Dump(DumpError),
}

fn write_file(
    path: &[u8],
    caller: &Caller,
    serialized: &sys::SpinGuard<'_, ()>,
) -> Result<DumpStats, Failure> {
    let fd = dump::create(path).map_err(Failure::Dump)?;
    let result = dump::write(fd, caller, configured_mode(), serialized);
    // SAFETY: `fd` was opened above and is closed once.
    let closed = unsafe { libc::close(fd) };
    let result = match result {
        Ok(_) if closed != 0 => Err(DumpError::Write {
            errno: sys::errno(),
        }),
        result => result,
    };
    if result.is_err() {
        // A partial dump is useless and may fill the disk further.
        let mut c_path = PathBuf::<4096>::new();
        if c_path.push(path) {
            // SAFETY: a NUL-terminated path we just created.
            unsafe { libc::unlink(c_path.as_c_bytes().as_ptr().cast()) };
        }
    }
    result.map_err(Failure::Dump)
}

/// Creates `dir` and its missing parents, each 0700. `Err(errno)` if it
/// cannot, or if something that is not a directory is in the way.
fn make_dir(dir: &[u8]) -> Result<(), i32> {
    let mut partial = PathBuf::<4096>::new();
    for (at, &byte) in dir.iter().enumerate() {
        let end_of_component = byte == b'/' && at > 0 || at + 1 == dir.len();
        if !end_of_component {
            continue;
        }
        let upto = if byte == b'/' { at } else { at + 1 };
        partial.clear();
        if !partial.push(&dir[..upto]) {
            return Err(libc::ENAMETOOLONG);
        }
        let c_path = partial.as_c_bytes();
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::mkdir(c_path.as_ptr().cast(), 0o700) } != 0 {
            let errno = sys::errno();
            if errno != libc::EEXIST {
                return Err(errno);
            }
        }
    }
    // It may exist as something else: say so before open says ENOTDIR
    // about the file inside.
    let c_path = partial.as_c_bytes();
    // SAFETY: an all-zero stat is a valid out-parameter; the path is
    // NUL-terminated.
    let mut status: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::stat(c_path.as_ptr().cast(), &mut status) } != 0 {
        return Err(sys::errno());
    }
    if status.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(libc::ENOTDIR);
    }
    Ok(())
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
    let _busy = Busy::enter_always();
    EXITING.store(true, Ordering::Release);
    if CONFIG.lock().triggers.exit {
        triggered(Trigger::Exit);
    } else {
        // Wait for a dump in progress to finish; no new one starts.
        drop(DUMP_LOCK.lock());
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
/// space limit (`RLIMIT_AS`) or a full overcommit budget, the dump's own
/// mappings must find room once the program's have taken everything. The
/// reserve is `PROT_NONE` and never touched: it costs no memory.
fn reserve() {
    if !RESERVE.load(Ordering::Acquire).is_null() {
        return;
    }
    // SAFETY: a new inaccessible anonymous mapping; the result is checked.
    let memory = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            RESERVE_BYTES,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if memory != libc::MAP_FAILED
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
        unsafe { libc::munmap(memory, RESERVE_BYTES) };
    }
}

fn release_reserve() {
    let memory = RESERVE.swap(core::ptr::null_mut(), Ordering::AcqRel);
    if !memory.is_null() {
        // SAFETY: the reserve mapping, taken out of `RESERVE` by us alone.
        unsafe { libc::munmap(memory.cast(), RESERVE_BYTES) };
    }
}

/// In a child of the program's own `fork`: no trigger thread exists there
/// and the counts are the parent's. Start again at the child's first
/// allocation (the exit handler and signal handlers are inherited).
pub fn forget_in_child() {
    TAKEN.store(0, Ordering::Relaxed);
    PENDING.store(0, Ordering::Relaxed);
    STATE.store(UNSTARTED, Ordering::Release);
}
