//! The overhead benchmark's baseline: the workload under plain `System`.
//! Run by `bench_overhead`; prints one `RESULT` line.

use heapdump_examples::workload::{self, WorkloadConfig};

fn main() {
    let config = match WorkloadConfig::from_args(std::env::args().skip(1)) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("bench_system: {message}");
            std::process::exit(2);
        }
    };
    let result = workload::run(config, || {});
    println!(
        "RESULT wall_ms={:.1} cpu_ms={:.0} peak_rss_kib={} checksum={} live_entries={}",
        heapdump_examples::millis(result.elapsed),
        heapdump_examples::millis(result.cpu),
        heapdump_examples::peak_rss_kib(),
        result.checksum,
        result.live_entries
    );
}
