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

/// Milliseconds as a float, for reports.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
