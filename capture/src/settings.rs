//! When and how the process dumps its heap by itself: the `HEAPDUMP`
//! environment variable and the same settings as a `const` builder.
//!
//! ```text
//! HEAPDUMP=dir=/var/tmp/dumps,on=signal:USR2,on=growth:1GiB,on=exit,max=8,mode=fork
//! HEAPDUMP=stacks=sample:512KiB,sample_seed=42,on=exit
//! ```
//!
//! The variable is read once, at the tracker's first allocation (before
//! `main` in practice: the runtime allocates first), with `getenv`, which
//! neither allocates nor locks. Parsing works on the variable's bytes in
//! place; the directory is copied into a fixed buffer. A key or value that
//! is not understood is reported on stderr in one line naming it and what
//! is accepted, and skipped: the program never fails because of this
//! variable.

use core::fmt::Write as _;
use core::time::Duration;

use crate::sys::StderrLine;

/// How a dump takes its snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Stop the other threads only to save their registers and `fork`; a
    /// copy-on-write child process reads the roots, scans and writes the
    /// dump while the program runs on. Falls back to [`Mode::Stop`] (and
    /// says so on stderr and in the dump) where `fork` fails.
    #[default]
    Fork,
    /// Keep the other threads stopped while roots and the heap are
    /// scanned, then write the file in place.
    Stop,
}

impl Mode {
    /// The name `mode=` takes and `heapdump info` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Fork => "fork",
            Mode::Stop => "stop",
        }
    }
}

/// The conditions that make a process dump its heap by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Triggers {
    pub exit: bool,
    /// Bit `n` set: dump on signal `n`.
    pub signals: u64,
    /// 0: no growth trigger.
    pub growth_bytes: u64,
    /// 0: no interval trigger.
    pub interval_ns: u64,
    pub oom: bool,
}

impl Triggers {
    /// Whether any trigger needs the tracker's own thread (the others run
    /// on the thread where they happen).
    pub const fn need_thread(&self) -> bool {
        self.signals != 0 || self.growth_bytes != 0 || self.interval_ns != 0
    }

    pub const fn any(&self) -> bool {
        self.exit || self.oom || self.need_thread()
    }
}

/// Settings for dumps the process writes by itself, as a `const` builder
/// for programs that prefer code to the `HEAPDUMP` variable:
///
/// ```
/// use heapdump_capture::{Mode, Settings, Tracker};
///
/// #[global_allocator]
/// static ALLOCATOR: Tracker = Tracker::system().with_settings(
///     Settings::new()
///         .dir("/var/tmp/dumps")
///         .on_signal(libc::SIGUSR2)
///         .on_growth(1 << 30)
///         .on_exit()
///         .max_dumps(8)
///         .mode(Mode::Fork),
/// );
/// # fn main() {}
/// ```
///
/// Keys present in `HEAPDUMP` override the same settings made here, key by
/// key (any `on=` replaces every trigger set in code), so an operator can
/// change a deployed program's dumps without a rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub(crate) dir: Option<&'static str>,
    pub(crate) triggers: Triggers,
    pub(crate) max_dumps: u32,
    pub(crate) mode: Mode,
    /// 0: every stack (exact mode); else the mean sampling interval.
    pub(crate) stack_sample_interval: u64,
    /// 0: a random seed.
    pub(crate) sample_seed: u64,
}

/// Triggered dumps a process writes at most, unless told otherwise.
pub const DEFAULT_MAX_DUMPS: u32 = 16;

impl Settings {
    /// No triggers; dumps go to the working directory at start, in
    /// [`Mode::Fork`], at most [`DEFAULT_MAX_DUMPS`] per process.
    pub const fn new() -> Settings {
        Settings {
            dir: None,
            triggers: Triggers {
                exit: false,
                signals: 0,
                growth_bytes: 0,
                interval_ns: 0,
                oom: false,
            },
            max_dumps: DEFAULT_MAX_DUMPS,
            mode: Mode::Fork,
            stack_sample_interval: 0,
            sample_seed: 0,
        }
    }

    /// Where triggered dumps go, as `heapdump.PID.SEQ.TRIGGER.hdump`;
    /// created (mode 0700) if missing.
    pub const fn dir(mut self, dir: &'static str) -> Settings {
        self.dir = Some(dir);
        self
    }

    /// Dump when `main` returns or `exit` is called; the process ends once
    /// the dump is complete. `_exit`, `abort`, fatal signals and `SIGKILL`
    /// end the process without it.
    pub const fn on_exit(mut self) -> Settings {
        self.triggers.exit = true;
        self
    }

    /// Dump when the process receives `signal` (its handler only wakes the
    /// tracker's thread; a handler the program had is still called).
    /// Ignored, with a message at start, for signals that cannot carry a
    /// dump (`SIGKILL`, `SIGSTOP`, the fault signals, the stop signal).
    pub const fn on_signal(mut self, signal: i32) -> Settings {
        if signal > 0 && signal < 64 {
            self.triggers.signals |= 1 << signal;
        }
        self
    }

    /// Dump each time live bytes exceed the level at the last dump (or at
    /// start) by `bytes`.
    pub const fn on_growth(mut self, bytes: u64) -> Settings {
        self.triggers.growth_bytes = bytes;
        self
    }

    /// Dump every `period`.
    pub const fn on_interval(mut self, period: Duration) -> Settings {
        let ns = period.as_nanos();
        self.triggers.interval_ns = if ns > u64::MAX as u128 {
            u64::MAX
        } else {
            ns as u64
        };
        self
    }

    /// Dump when an allocation fails, before the program sees the
    /// failure (address space for the dump is reserved in advance).
    pub const fn on_oom(mut self) -> Settings {
        self.triggers.oom = true;
        self
    }

    /// At most `count` triggered dumps per process.
    pub const fn max_dumps(mut self, count: u32) -> Settings {
        self.max_dumps = count;
        self
    }

    /// How dumps take their snapshot, triggered ones and those of
    /// [`write_heap_dump`](crate::write_heap_dump) alike.
    pub const fn mode(mut self, mode: Mode) -> Settings {
        self.mode = mode;
        self
    }

    /// Production mode (`stacks=sample:SIZE`): every block is still
    /// recorded, with its address and size, but only a byte-weighted sample
    /// gets its allocation stack, with mean interval `mean_interval_bytes`
    /// ([`DEFAULT_SAMPLE_INTERVAL`](crate::DEFAULT_SAMPLE_INTERVAL) is the
    /// usual choice): a block of `s` bytes is sampled with probability
    /// `1 - exp(-s/S)`, and always when `s >= S`. 0 records every stack
    /// (exact mode, the default; `stacks=all`).
    pub const fn sample_stacks(mut self, mean_interval_bytes: u64) -> Settings {
        self.stack_sample_interval = mean_interval_bytes;
        self
    }

    /// Fixes the seed of the stack sample (`sample_seed=N`), so a program
    /// that allocates the same way samples the same blocks every run (for
    /// tests). 0, the default, draws a random seed per thread.
    pub const fn sample_seed(mut self, seed: u64) -> Settings {
        self.sample_seed = seed;
        self
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::new()
    }
}

/// What `HEAPDUMP` set; `None` fields were not given (or not understood).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FromEnvironment<'a> {
    pub dir: Option<&'a [u8]>,
    /// `Some` once any `on=` was understood.
    pub triggers: Option<Triggers>,
    pub max_dumps: Option<u32>,
    pub mode: Option<Mode>,
    /// `Some(0)`: `stacks=all`.
    pub stack_sample_interval: Option<u64>,
    pub sample_seed: Option<u64>,
}

const ACCEPTED_KEYS: &str =
    "dir=PATH, on=TRIGGER, max=N, mode=fork|stop, stacks=all|sample[:SIZE], sample_seed=N, depth=N";
const ACCEPTED_TRIGGERS: &str =
    "exit, signal:SIG, growth:SIZE, interval:DURATION (ms, s, m, h), oom";

/// Parses the value of `HEAPDUMP`. Each problem goes to `report` as one
/// line; what was understood is returned.
pub(crate) fn parse<'a>(text: &'a [u8], report: &mut dyn FnMut(&str)) -> FromEnvironment<'a> {
    let mut out = FromEnvironment::default();
    let mut line = StderrLine::new();
    for item in text.split(|&b| b == b',') {
        let item = trim(item);
        if item.is_empty() {
            continue;
        }
        let (key, value) = match item.iter().position(|&b| b == b'=') {
            Some(at) => (&item[..at], &item[at + 1..]),
            None => (item, &item[item.len()..]),
        };
        line.clear();
        match key {
            b"dir" if !value.is_empty() => out.dir = Some(value),
            b"on" => match parse_trigger(value) {
                Ok(trigger) => {
                    let triggers = out.triggers.get_or_insert_with(Triggers::default);
                    merge_trigger(triggers, trigger);
                }
                Err(why) => {
                    let _ = write!(
                        line,
                        "on={}: {why}; accepted: {ACCEPTED_TRIGGERS}",
                        Shown(value)
                    );
                }
            },
            b"max" => match parse_u64(value).and_then(|n| u32::try_from(n).ok()) {
                Some(n) => out.max_dumps = Some(n),
                None => {
                    let _ = write!(line, "max={}: not a number of dumps", Shown(value));
                }
            },
            b"mode" => match value {
                b"fork" => out.mode = Some(Mode::Fork),
                b"stop" => out.mode = Some(Mode::Stop),
                _ => {
                    let _ = write!(line, "mode={}: accepted: fork, stop", Shown(value));
                }
            },
            b"stacks" => match parse_stacks(value) {
                Some(interval) => out.stack_sample_interval = Some(interval),
                None => {
                    let _ = write!(
                        line,
                        "stacks={}: accepted: all, sample, sample:SIZE (bytes, or with KiB, MiB, GiB; not 0)",
                        Shown(value)
                    );
                }
            },
            b"sample_seed" => match parse_u64(value) {
                Some(seed) => out.sample_seed = Some(seed),
                None => {
                    let _ = write!(line, "sample_seed={}: not a number", Shown(value));
                }
            },
            b"depth" => match parse_u64(value) {
                Some(64) => {}
                _ => {
                    let _ = write!(
                        line,
                        "depth={}: this version keeps 64 frames per stack (depth=64)",
                        Shown(value)
                    );
                }
            },
            _ => {
                let _ = write!(
                    line,
                    "'{}' is not understood; accepted: {ACCEPTED_KEYS}",
                    Shown(item)
                );
            }
        }
        if !line.is_empty() {
            report(line.as_str());
        }
    }
    out
}

/// A `stacks=` value: 0 for `all`, else the mean sampling interval.
fn parse_stacks(value: &[u8]) -> Option<u64> {
    match value {
        b"all" => Some(0),
        b"sample" => Some(crate::sampling::DEFAULT_SAMPLE_INTERVAL),
        _ => match parse_size(value.strip_prefix(b"sample:")?) {
            Some(0) | None => None,
            interval => interval,
        },
    }
}

/// One `on=` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Exit,
    Signal(i32),
    Growth(u64),
    Interval(u64),
    Oom,
}

fn merge_trigger(triggers: &mut Triggers, trigger: Trigger) {
    match trigger {
        Trigger::Exit => triggers.exit = true,
        Trigger::Signal(signal) => triggers.signals |= 1 << signal,
        Trigger::Growth(bytes) => triggers.growth_bytes = bytes,
        Trigger::Interval(ns) => triggers.interval_ns = ns,
        Trigger::Oom => triggers.oom = true,
    }
}

fn parse_trigger(value: &[u8]) -> Result<Trigger, &'static str> {
    let (name, argument) = match value.iter().position(|&b| b == b':') {
        Some(at) => (&value[..at], Some(&value[at + 1..])),
        None => (value, None),
    };
    match (name, argument) {
        (b"exit", None) => Ok(Trigger::Exit),
        (b"oom", None) => Ok(Trigger::Oom),
        (b"signal", Some(signal)) => parse_signal(signal).map(Trigger::Signal),
        (b"growth", Some(size)) => match parse_size(size) {
            Some(0) | None => Err("not a size (bytes, or with KiB, MiB, GiB)"),
            Some(bytes) => Ok(Trigger::Growth(bytes)),
        },
        (b"interval", Some(duration)) => match parse_duration_ns(duration) {
            Some(0) | None => Err("not a duration (ms, s, m or h)"),
            Some(ns) => Ok(Trigger::Interval(ns)),
        },
        (b"exit" | b"oom", Some(_)) => Err("takes no argument"),
        (b"signal" | b"growth" | b"interval", None) => Err("needs an argument after ':'"),
        _ => Err("unknown trigger"),
    }
}

/// Signal names `on=signal:` takes, with or without `SIG`.
const SIGNAL_NAMES: [(&[u8], i32); 30] = [
    (b"KILL", libc::SIGKILL),
    (b"STOP", libc::SIGSTOP),
    (b"SEGV", libc::SIGSEGV),
    (b"BUS", libc::SIGBUS),
    (b"FPE", libc::SIGFPE),
    (b"ILL", libc::SIGILL),
    (b"TRAP", libc::SIGTRAP),
    (b"ABRT", libc::SIGABRT),
    (b"SYS", libc::SIGSYS),
    (b"PWR", libc::SIGPWR),
    (b"PIPE", libc::SIGPIPE),
    (b"XCPU", libc::SIGXCPU),
    (b"XFSZ", libc::SIGXFSZ),
    (b"VTALRM", libc::SIGVTALRM),
    (b"TSTP", libc::SIGTSTP),
    (b"IO", libc::SIGIO),
    (b"HUP", libc::SIGHUP),
    (b"INT", libc::SIGINT),
    (b"QUIT", libc::SIGQUIT),
    (b"USR1", libc::SIGUSR1),
    (b"USR2", libc::SIGUSR2),
    (b"ALRM", libc::SIGALRM),
    (b"TERM", libc::SIGTERM),
    (b"CHLD", libc::SIGCHLD),
    (b"CONT", libc::SIGCONT),
    (b"URG", libc::SIGURG),
    (b"WINCH", libc::SIGWINCH),
    (b"TTIN", libc::SIGTTIN),
    (b"TTOU", libc::SIGTTOU),
    (b"PROF", libc::SIGPROF),
];

/// A signal that can trigger a dump: a name from [`SIGNAL_NAMES`] or a
/// number, never one the process needs for something else.
pub(crate) fn parse_signal(text: &[u8]) -> Result<i32, &'static str> {
    let name = text.strip_prefix(b"SIG").unwrap_or(text);
    let signal = match SIGNAL_NAMES.iter().find(|(n, _)| *n == name) {
        Some(&(_, signal)) => signal,
        None => match parse_u64(text) {
            Some(n) if n < 64 => n as i32,
            _ => return Err("not a signal (a name such as USR2 or SIGUSR2, or a number)"),
        },
    };
    usable_trigger_signal(signal).map(|()| signal)
}

/// Whether `signal` can be a dump trigger.
pub(crate) fn usable_trigger_signal(signal: i32) -> Result<(), &'static str> {
    match signal {
        libc::SIGKILL | libc::SIGSTOP => Err("this signal cannot be caught"),
        libc::SIGSEGV
        | libc::SIGBUS
        | libc::SIGFPE
        | libc::SIGILL
        | libc::SIGTRAP
        | libc::SIGABRT
        | libc::SIGSYS => Err("a fault signal cannot trigger a dump"),
        s if s == crate::world::stop_signal() => {
            Err("this is the signal the tracker stops threads with")
        }
        s if s <= 0 || s > libc::SIGRTMAX() || s >= 64 => Err("no such signal"),
        _ => Ok(()),
    }
}

/// A size: bytes, or with `KiB`/`MiB`/`GiB` (also `k`/`m`/`g`, any
/// case), powers of 1024.
pub(crate) fn parse_size(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let number = parse_u64(&text[..digits])?;
    let unit = &text[digits..];
    let shift = if unit.is_empty() || unit.eq_ignore_ascii_case(b"b") {
        0
    } else if unit.eq_ignore_ascii_case(b"k") || unit.eq_ignore_ascii_case(b"kib") {
        10
    } else if unit.eq_ignore_ascii_case(b"m") || unit.eq_ignore_ascii_case(b"mib") {
        20
    } else if unit.eq_ignore_ascii_case(b"g") || unit.eq_ignore_ascii_case(b"gib") {
        30
    } else {
        return None;
    };
    number.checked_mul(1 << shift)
}

/// A duration in nanoseconds: a number with `ms`, `s`, `m` or `h`.
pub(crate) fn parse_duration_ns(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let number = parse_u64(&text[..digits])?;
    let unit_ns: u64 = match &text[digits..] {
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    };
    number.checked_mul(unit_ns)
}

fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    text.iter().try_fold(0u64, |value, &b| {
        if b.is_ascii_digit() {
            value.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |at| at + 1);
    &bytes[start..end]
}

/// Bytes shown in a message: printable ASCII as is, anything else as `?`,
/// cut at 64 so one bad value cannot fill the line.
struct Shown<'a>(&'a [u8]);

impl core::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &b in self.0.iter().take(64) {
            f.write_char(if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            })?;
        }
        if self.0.len() > 64 {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Reads and parses `HEAPDUMP`, reporting problems on stderr as
/// `heapdump: HEAPDUMP: ...`. The returned slices point into the
/// environment block, so callers copy what they keep.
pub(crate) fn from_environment() -> FromEnvironment<'static> {
    // The value stays valid unless the program changes the environment,
    // which the caller guards against by copying at once.
    let Some(text) = crate::sys::environment_variable(c"HEAPDUMP") else {
        return FromEnvironment::default();
    };
    parse(text, &mut |problem| {
        let mut line = StderrLine::new();
        let _ = write!(line, "heapdump: HEAPDUMP: {problem}; ignored");
        line.emit();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (FromEnvironment<'_>, Vec<String>) {
        let mut problems = Vec::new();
        let out = parse(text.as_bytes(), &mut |p| problems.push(p.to_owned()));
        (out, problems)
    }

    #[test]
    fn every_key_of_the_design_is_understood() {
        let (out, problems) = parsed(
            "dir=/var/tmp/d,on=exit,on=signal:USR2,on=signal:SIGHUP,on=signal:10,\
             on=growth:1GiB,on=interval:30s,on=oom,max=4,mode=stop,stacks=all,depth=64,\
             sample_seed=7",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(out.dir, Some(&b"/var/tmp/d"[..]));
        let triggers = out.triggers.unwrap();
        assert!(triggers.exit && triggers.oom);
        assert_eq!(
            triggers.signals,
            1 << libc::SIGUSR2 | 1 << libc::SIGHUP | 1 << 10
        );
        assert_eq!(triggers.growth_bytes, 1 << 30);
        assert_eq!(triggers.interval_ns, 30_000_000_000);
        assert_eq!(out.max_dumps, Some(4));
        assert_eq!(out.mode, Some(Mode::Stop));
        assert_eq!(out.stack_sample_interval, Some(0));
        assert_eq!(out.sample_seed, Some(7));
    }

    #[test]
    fn stacks_sample_takes_a_size_and_defaults_to_512_kib() {
        let (out, problems) = parsed("stacks=sample:64KiB");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(out.stack_sample_interval, Some(64 << 10));
        let (out, _) = parsed("stacks=sample");
        assert_eq!(out.stack_sample_interval, Some(512 << 10));
        let (out, _) = parsed("stacks=sample:1000");
        assert_eq!(out.stack_sample_interval, Some(1000));
        for bad in [
            "stacks=sample:0",
            "stacks=sample:",
            "stacks=some",
            "stacks=sample:1.5m",
        ] {
            let (out, problems) = parsed(bad);
            assert_eq!(out.stack_sample_interval, None, "{bad}");
            assert!(
                problems[0].contains("accepted: all, sample, sample:SIZE"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn a_bad_key_or_value_is_reported_alone_and_the_rest_applies() {
        let (out, problems) = parsed(
            "on=growth:12zz,colour=blue,on=signal:KILL,mode=fast,on=exit,max=-1,stacks=sample:512XB,on=signal:SEGV",
        );
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(problems[0].starts_with("on=growth:12zz: not a size"));
        assert!(problems[1].starts_with("'colour=blue' is not understood; accepted: dir=PATH"));
        assert!(problems[2].contains("cannot be caught"));
        assert!(problems[3].contains("accepted: fork, stop"));
        assert!(problems[4].starts_with("max=-1"));
        assert!(problems[5].starts_with("stacks=sample:512XB: accepted: all, sample"));
        assert!(problems[6].contains("fault signal"));
        let triggers = out.triggers.unwrap();
        assert!(triggers.exit);
        assert_eq!(triggers.signals, 0);
        assert_eq!(out.mode, None);
    }

    #[test]
    fn sizes_and_durations_use_powers_of_1024_and_the_designs_units() {
        assert_eq!(parse_size(b"512"), Some(512));
        assert_eq!(parse_size(b"512KiB"), Some(512 << 10));
        assert_eq!(parse_size(b"3m"), Some(3 << 20));
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        assert_eq!(parse_size(b"1.5GiB"), None);
        assert_eq!(parse_size(b"99999999999999999999GiB"), None);
        assert_eq!(parse_duration_ns(b"250ms"), Some(250_000_000));
        assert_eq!(parse_duration_ns(b"2m"), Some(120_000_000_000));
        assert_eq!(parse_duration_ns(b"1h"), Some(3_600_000_000_000));
        assert_eq!(parse_duration_ns(b"10"), None);
    }

    #[test]
    fn the_builder_sets_what_the_variable_would() {
        let settings = Settings::new()
            .dir("/tmp/x")
            .on_signal(libc::SIGUSR1)
            .on_interval(Duration::from_millis(1500))
            .max_dumps(2)
            .mode(Mode::Stop)
            .sample_stacks(256 << 10)
            .sample_seed(9);
        assert_eq!(settings.dir, Some("/tmp/x"));
        assert_eq!(settings.triggers.signals, 1 << libc::SIGUSR1);
        assert_eq!(settings.triggers.interval_ns, 1_500_000_000);
        assert!(settings.triggers.need_thread());
        assert_eq!(settings.max_dumps, 2);
        assert_eq!(settings.stack_sample_interval, 256 << 10);
        assert_eq!(settings.sample_seed, 9);
        assert_eq!(Settings::new().stack_sample_interval, 0);
        assert_eq!(Settings::new().mode, Mode::Fork);
    }
}
