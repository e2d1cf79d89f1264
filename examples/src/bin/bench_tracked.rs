//! The overhead benchmark's measured side: the workload under
//! `Tracker<System>`. While the workers hold their live sets it reads
//! `stats()` and times a dump written to `/dev/null`. Run by
//! `bench_overhead`; prints one `RESULT` line.

use std::alloc::System;
use std::fs::File;
use std::os::fd::AsFd;

use heapdump_capture::Tracker;
use heapdump_examples::workload::{self, WorkloadConfig};

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system();

fn main() {
    let config = match WorkloadConfig::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("bench_tracked: {message}");
            std::process::exit(2);
        }
    };
    let sink = match File::options().write(true).open("/dev/null") {
        Ok(file) => file,
        Err(error) => {
            eprintln!("bench_tracked: cannot open /dev/null: {error}");
            std::process::exit(1);
        }
    };
    let mut measured = None;
    let result = workload::run(config, || {
        let stats = heapdump_capture::stats();
        let started = std::time::Instant::now();
        let dumped = heapdump_capture::write_heap_dump(sink.as_fd());
        measured = Some((stats, started.elapsed(), dumped));
    });
    let Some((stats, dump_time, Ok(dumped))) = measured else {
        eprintln!("bench_tracked: the dump failed: {measured:?}");
        std::process::exit(1);
    };
    let live = stats.live_count.max(1) as f64;
    println!(
        "RESULT wall_ms={:.1} cpu_ms={:.0} peak_rss_kib={} checksum={} live_entries={} live_count={} \
         tracking_bytes_per_live={:.1} total_allocations={} dump_ms={:.1} \
         dump_ms_per_million={:.1} dump_pause_ms={:.2} dump_bytes={} stacks={}",
        heapdump_examples::millis(result.elapsed),
        heapdump_examples::millis(result.cpu),
        heapdump_examples::peak_rss_kib(),
        result.checksum,
        result.live_entries,
        stats.live_count,
        stats.tracking_bytes as f64 / live,
        stats.total_allocations,
        heapdump_examples::millis(dump_time),
        heapdump_examples::millis(dump_time) * 1e6 / dumped.allocations.max(1) as f64,
        dumped.pause_ns as f64 / 1e6,
        dumped.bytes_written,
        stats.stacks,
    );
}
