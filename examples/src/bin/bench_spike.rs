//! Tracking memory through a spike: a program under `Tracker<System>` grows
//! to `--blocks` live blocks (default 10 million, spread over `--threads`
//! threads), frees all but one in `--keep` of them (default 100 000, so a
//! few survivors stay scattered through the tracker's tables), and prints
//! one `RESULT` line with the tracker's memory (`stats().tracking_bytes`)
//! and the process's resident set before, at and after the spike.
//!
//! ```text
//! cargo build --release -p heapdump-examples --bins
//! target/release/bench_spike [--blocks 10000000] [--threads 2] [--keep 100000]
//! ```
//! The resident set is read after `malloc_trim(0)`, so what the C library's
//! allocator keeps of the freed blocks does not hide what the tracker gave
//! back.

use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

use heapdump_capture::Tracker;

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system();

unsafe extern "C" {
    /// glibc: returns free memory at the top of the heap and in free chunks
    /// to the kernel.
    fn malloc_trim(pad: usize) -> i32;
}

fn trimmed_rss_kib() -> u64 {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { malloc_trim(0) };
    heapdump_examples::rss_kib()
}

fn option(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(at) => {
            let value = args.get(at + 1).ok_or(format!("{name} needs a value"))?;
            value
                .parse()
                .map_err(|_| format!("{name}: `{value}` is not a number"))
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| {
        Ok::<_, String>((
            option(&args, "--blocks", 10_000_000)?,
            option(&args, "--threads", 2)?.max(1),
            option(&args, "--keep", 100_000)?.max(1),
        ))
    })();
    let (blocks, threads, keep) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("bench_spike: {message}");
            std::process::exit(2);
        }
    };
    let before = heapdump_capture::stats().tracking_bytes;
    let rss_before = trimmed_rss_kib();
    let per_thread = blocks / threads;
    let barrier = std::sync::Barrier::new(threads as usize + 1);
    let go = std::sync::Barrier::new(threads as usize + 1);
    let freed = std::sync::Barrier::new(threads as usize + 1);
    let done = std::sync::Barrier::new(threads as usize + 1);
    let started = Instant::now();
    let (at_peak, rss_peak, after, rss_after, live_after, free_ms) = std::thread::scope(|scope| {
        for thread in 0..threads {
            let (barrier, go, freed, done) = (&barrier, &go, &freed, &done);
            scope.spawn(move || {
                let mut blocks: Vec<Option<Box<[u64; 4]>>> = (0..per_thread)
                    .map(|i| Some(Box::new([i ^ thread; 4])))
                    .collect();
                barrier.wait();
                go.wait();
                for (i, block) in blocks.iter_mut().enumerate() {
                    if i as u64 % keep != keep / 2 {
                        drop(block.take());
                    }
                }
                freed.wait();
                done.wait();
                black_box(&blocks);
            });
        }
        barrier.wait();
        let grown = started.elapsed();
        let at_peak = heapdump_capture::stats();
        let rss_peak = heapdump_examples::rss_kib();
        let freeing = Instant::now();
        go.wait();
        freed.wait();
        let free_ms = heapdump_examples::millis(freeing.elapsed());
        let after = heapdump_capture::stats();
        let rss_after = trimmed_rss_kib();
        done.wait();
        eprintln!(
            "grew to {} blocks in {:.0} ms",
            at_peak.live_count,
            heapdump_examples::millis(grown)
        );
        (
            at_peak.tracking_bytes,
            rss_peak,
            after.tracking_bytes,
            rss_after,
            after.live_count,
            free_ms,
        )
    });
    println!(
        "RESULT blocks={blocks} live_after={live_after} tracking_before_kib={} \
         tracking_peak_kib={} tracking_after_kib={} tracking_after_per_live={:.1} \
         rss_before_kib={rss_before} rss_peak_kib={rss_peak} rss_after_kib={rss_after} \
         free_ms={free_ms:.0}",
        before / 1024,
        at_peak / 1024,
        after / 1024,
        after as f64 / live_after.max(1) as f64,
    );
}
