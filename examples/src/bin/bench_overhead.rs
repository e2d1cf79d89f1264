//! Measures heapdump-capture's overhead: runs the same workload under plain
//! `System` (`bench_system`) and under `Tracker<System>` (`bench_tracked`),
//! alternating, several times each, and prints a Markdown table of medians
//! and ratios for BENCHMARKS.md.
//!
//! ```text
//! cargo build --release -p heapdump-examples --bins
//! target/release/bench_overhead [--runs 5] [--stacks all,sample:512KiB] [workload options...]
//! target/release/bench_overhead --stacks all,sample --depth 20 --random-paths
//! ```
//! `--stacks` lists the tracker's modes to measure (the `stacks=` values of
//! `HEAPDUMP`, passed to `bench_tracked` through that variable; default
//! `all`): each round runs `bench_system` and then each mode in turn, so
//! every ratio is to the baseline of the same rounds. Workload options
//! (`--threads`, `--steps`, `--live-set`, `--depth`, `--random-paths`) are
//! passed to every binary unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Sample = BTreeMap<String, f64>;

fn main() {
    if let Err(message) = run() {
        eprintln!("bench_overhead: {message}");
        std::process::exit(1);
    }
}

/// Removes `--name VALUE` from `args` and returns the value.
fn take_option(args: &mut Vec<String>, name: &str) -> Result<Option<String>, String> {
    let Some(at) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let value = args
        .get(at + 1)
        .cloned()
        .ok_or(format!("{name} needs a value"))?;
    args.drain(at..at + 2);
    Ok(Some(value))
}

fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = match take_option(&mut args, "--runs")? {
        Some(value) => value
            .parse()
            .map_err(|_| format!("--runs: `{value}` is not a number"))?,
        None => 5,
    };
    let modes: Vec<String> = take_option(&mut args, "--stacks")?
        .unwrap_or_else(|| "all".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let dir = std::env::current_exe()
        .map_err(|e| format!("cannot find own path: {e}"))?
        .parent()
        .map(PathBuf::from)
        .ok_or("executable has no directory")?;

    let mut system = Vec::new();
    let mut tracked: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        system.push(sample(&dir.join("bench_system"), &args, None)?);
        for (mode, samples) in modes.iter().zip(&mut tracked) {
            let heapdump = format!("stacks={mode}");
            samples.push(sample(&dir.join("bench_tracked"), &args, Some(&heapdump))?);
        }
    }
    for t in tracked.iter().flatten() {
        if system[0].get("checksum") != t.get("checksum") {
            return Err(
                "the allocators computed different results: the workload is not deterministic"
                    .into(),
            );
        }
    }

    let median = |samples: &[Sample], key: &str| -> f64 {
        let mut values: Vec<f64> = samples.iter().filter_map(|s| s.get(key).copied()).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    // The machine's speed drifts over seconds: the fastest run and the
    // ratio within each round (the runs back to back) are steadier than
    // medians taken apart.
    let fastest = |samples: &[Sample]| {
        samples
            .iter()
            .filter_map(|s| s.get("wall_ms").copied())
            .fold(f64::INFINITY, f64::min)
    };
    let header: Vec<String> = modes
        .iter()
        .map(|mode| format!("Tracker<System> stacks={mode} | ratio"))
        .collect();
    println!("| metric | System | {} |", header.join(" | "));
    println!("|---|---:|{}", "---:|---:|".repeat(modes.len()));
    let row = |name: &str, system_cell: String, cells: Vec<String>| {
        println!("| {name} | {system_cell} | {} |", cells.join(" | "));
    };
    let sys_wall = median(&system, "wall_ms");
    row(
        &format!("wall time of the workload (median of {runs})"),
        format!("{sys_wall:.0} ms"),
        tracked
            .iter()
            .map(|t| {
                let wall = median(t, "wall_ms");
                format!("{wall:.0} ms | **{:.2}×**", wall / sys_wall)
            })
            .collect(),
    );
    // CPU time of the workload: on a shared machine it does not count the
    // time a thread waits for a core, so it drifts less than wall time.
    let sys_cpu = median(&system, "cpu_ms");
    row(
        &format!("CPU time of the workload, all threads (median of {runs})"),
        format!("{sys_cpu:.0} ms"),
        tracked
            .iter()
            .map(|t| {
                let cpu = median(t, "cpu_ms");
                format!("{cpu:.0} ms | **{:.2}×**", cpu / sys_cpu)
            })
            .collect(),
    );
    row(
        "CPU time ratio within a round (median; lowest – highest)",
        String::new(),
        tracked
            .iter()
            .map(|t| format!(" | {}", ratios_within_rounds(&system, t, "cpu_ms")))
            .collect(),
    );
    let sys_fastest = fastest(&system);
    row(
        &format!("wall time of the workload (fastest of {runs})"),
        format!("{sys_fastest:.0} ms"),
        tracked
            .iter()
            .map(|t| format!("{:.0} ms | {:.2}×", fastest(t), fastest(t) / sys_fastest))
            .collect(),
    );
    row(
        "ratio within a round (median; lowest – highest)",
        String::new(),
        tracked
            .iter()
            .map(|t| format!(" | {}", ratios_within_rounds(&system, t, "wall_ms")))
            .collect(),
    );
    let sys_rss = median(&system, "peak_rss_kib");
    row(
        "peak RSS",
        format!("{:.1} MiB", sys_rss / 1024.0),
        tracked
            .iter()
            .map(|t| {
                let rss = median(t, "peak_rss_kib");
                format!("{:.1} MiB | {:.2}×", rss / 1024.0, rss / sys_rss)
            })
            .collect(),
    );
    let tracked_only = |name: &str, key: &str, format: &dyn Fn(f64) -> String| {
        row(
            name,
            String::new(),
            tracked
                .iter()
                .map(|t| format!("{} | ", format(median(t, key))))
                .collect(),
        );
    };
    tracked_only("live allocations at the dump", "live_count", &|v| {
        format!("{v:.0}")
    });
    tracked_only(
        "tracking bytes per live allocation",
        "tracking_bytes_per_live",
        &|v| format!("{v:.1} B"),
    );
    tracked_only("allocations made (total)", "total_allocations", &|v| {
        format!("{v:.0}")
    });
    tracked_only("distinct stacks", "stacks", &|v| format!("{v:.0}"));
    tracked_only(
        "dump write time per million live allocations",
        "dump_ms_per_million",
        &|v| format!("{v:.0} ms"),
    );
    tracked_only("dump file size", "dump_bytes", &|v| {
        format!("{:.1} MiB", v / 1048576.0)
    });
    Ok(())
}

/// The ratio of `key` between the runs of each round (back to back), as
/// "median× (lowest–highest)".
fn ratios_within_rounds(system: &[Sample], tracked: &[Sample], key: &str) -> String {
    let mut ratios: Vec<f64> = system
        .iter()
        .zip(tracked)
        .filter_map(|(s, t)| Some(t.get(key)? / s.get(key)?))
        .collect();
    ratios.sort_by(f64::total_cmp);
    match (ratios.first(), ratios.last()) {
        (Some(low), Some(high)) => format!("{:.2}× ({low:.2}–{high:.2})", ratios[ratios.len() / 2]),
        _ => String::new(),
    }
}

/// Runs `binary` once; `heapdump`: the `HEAPDUMP` value for the tracked
/// binary (the caller's own variable is never passed on).
fn sample(binary: &Path, args: &[String], heapdump: Option<&str>) -> Result<Sample, String> {
    let mut command = Command::new(binary);
    command.args(args).env_remove("HEAPDUMP");
    if let Some(heapdump) = heapdump {
        command.env("HEAPDUMP", heapdump);
    }
    let output = command.output().map_err(|e| {
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
