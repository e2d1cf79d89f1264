//! Code shared by the example programs: the benchmark workload (run the same
//! way under the tracker and under the plain system allocator) and small
//! measuring helpers.

pub mod workload;

use std::time::Duration;

/// Peak resident set size of this process in KiB (`VmHWM`), 0 if unknown.
pub fn peak_rss_kib() -> u64 {
    status_field("VmHWM:")
}

/// Current resident set size of this process in KiB (`VmRSS`), 0 if unknown.
pub fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// CPU time this process used so far, all threads, user and system
/// (`/proc/self/stat`, in the kernel's 10 ms ticks); zero if unknown. On a
/// machine shared with other work, CPU time drifts less than wall time:
/// waiting for a core is not counted.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<u64>().ok())
        .sum();
    // USER_HZ: 100 on every Linux architecture heapdump runs on.
    Duration::from_millis(ticks * 10)
}

/// Milliseconds as a float, for reports.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
