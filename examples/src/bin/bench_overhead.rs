//! Measures heapdump-capture's overhead: runs the same workload under plain
//! `System` (`bench_system`) and under `Tracker<System>` (`bench_tracked`),
//! alternating, several times each, and prints a Markdown table of medians
//! and ratios for BENCHMARKS.md.
//!
//! ```text
//! cargo build --release -p heapdump-examples --bins
//! target/release/bench_overhead [--runs 5] [workload options...]
//! ```
//! Workload options (`--threads`, `--steps`, `--live-set`, `--depth`) are
//! passed to both binaries unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

type Sample = BTreeMap<String, f64>;

fn main() {
    if let Err(message) = run() {
        eprintln!("bench_overhead: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = 5usize;
    if let Some(at) = args.iter().position(|a| a == "--runs") {
        let value = args.get(at + 1).ok_or("--runs needs a value")?;
        runs = value
            .parse()
            .map_err(|_| format!("--runs: `{value}` is not a number"))?;
        args.drain(at..at + 2);
    }
    let dir = std::env::current_exe()
        .map_err(|e| format!("cannot find own path: {e}"))?
        .parent()
        .map(PathBuf::from)
        .ok_or("executable has no directory")?;

    let mut system = Vec::new();
    let mut tracked = Vec::new();
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        system.push(sample(&dir.join("bench_system"), &args)?);
        tracked.push(sample(&dir.join("bench_tracked"), &args)?);
    }
    for (s, t) in system.iter().zip(&tracked) {
        if s.get("checksum") != t.get("checksum") {
            return Err(
                "the two allocators computed different results: the workload is not deterministic"
                    .into(),
            );
        }
    }

    let median = |samples: &[Sample], key: &str| -> f64 {
        let mut values: Vec<f64> = samples.iter().filter_map(|s| s.get(key).copied()).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (sys_wall, trk_wall) = (median(&system, "wall_ms"), median(&tracked, "wall_ms"));
    let (sys_rss, trk_rss) = (
        median(&system, "peak_rss_kib"),
        median(&tracked, "peak_rss_kib"),
    );
    println!("| metric | System | Tracker<System> | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| wall time of the workload (median of {runs}) | {sys_wall:.0} ms | {trk_wall:.0} ms | {:.2}× |",
        trk_wall / sys_wall
    );
    // The machine's speed drifts over seconds: the fastest run and the
    // ratio within each round (the two runs back to back) are steadier
    // than medians taken apart.
    let fastest = |samples: &[Sample]| {
        samples
            .iter()
            .filter_map(|s| s.get("wall_ms").copied())
            .fold(f64::INFINITY, f64::min)
    };
    let (sys_fastest, trk_fastest) = (fastest(&system), fastest(&tracked));
    println!(
        "| wall time of the workload (fastest of {runs}) | {sys_fastest:.0} ms | {trk_fastest:.0} ms | {:.2}× |",
        trk_fastest / sys_fastest
    );
    let mut round_ratios: Vec<f64> = system
        .iter()
        .zip(&tracked)
        .filter_map(|(s, t)| Some(t.get("wall_ms")? / s.get("wall_ms")?))
        .collect();
    round_ratios.sort_by(f64::total_cmp);
    if let (Some(low), Some(high)) = (round_ratios.first(), round_ratios.last()) {
        println!(
            "| ratio within a round (median; lowest – highest) | | | {:.2}× ({low:.2}–{high:.2}) |",
            round_ratios[round_ratios.len() / 2]
        );
    }
    println!(
        "| peak RSS | {:.1} MiB | {:.1} MiB | {:.2}× |",
        sys_rss / 1024.0,
        trk_rss / 1024.0,
        trk_rss / sys_rss
    );
    println!(
        "| live allocations at the dump | | {:.0} | |",
        median(&tracked, "live_count")
    );
    println!(
        "| tracking bytes per live allocation | | {:.1} B | |",
        median(&tracked, "tracking_bytes_per_live")
    );
    println!(
        "| allocations made (total) | | {:.0} | |",
        median(&tracked, "total_allocations")
    );
    println!(
        "| dump write time per million live allocations | | {:.0} ms | |",
        median(&tracked, "dump_ms_per_million")
    );
    println!(
        "| dump file size | | {:.1} MiB | |",
        median(&tracked, "dump_bytes") / 1048576.0
    );
    Ok(())
}

fn sample(binary: &PathBuf, args: &[String]) -> Result<Sample, String> {
    let output = Command::new(binary).args(args).output().map_err(|e| {
        format!(
            "cannot run {}: {e} (build with `cargo build --release -p heapdump-examples --bins`)",
            binary.display()
        )
    })?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .ok_or_else(|| format!("{} printed no RESULT line", binary.display()))?;
    Ok(line
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(key, value)| Some((key.to_string(), value.parse().ok()?)))
        .collect())
}
