//! The full heap snapshot benchmark: a heap of 1M blocks of 1 KiB (1 GiB),
//! each holding two pointers to other blocks, built by 4 threads that then
//! stay alive (parked), is dumped to `/dev/null` by the main thread: the
//! world is stopped, every root and every block is scanned, and the
//! pointer edges (about 3M: two per block, plus one per block from the
//! vectors that hold them) are written.
//!
//! ```text
//! cargo run --release -p heapdump-examples --bin bench_snapshot
//! cargo run --release -p heapdump-examples --bin bench_snapshot -- --threads 64
//! ```
//!
//! Options: `--blocks N` (default 1000000), `--block-size BYTES` (default
//! 1024, a multiple of 8, at least 16), `--builders N` (default 4),
//! `--threads N` extra idle threads parked in a futex wait (default 0; use
//! 64 to measure the stop time with many threads), `--repeat N` dumps
//! (default 1; one `RESULT` line each), `--mode fork|stop` (default fork),
//! `--writer 1` to keep one thread writing a word into a random block in a
//! loop while the dumps run (in fork mode every page it touches is copied:
//! `cow_kib` says how much the program's private memory grew meanwhile).
//!
//! Prints `RESULT` lines of `key=value` pairs: mode, stop_ms, scan_ms,
//! scan_gb_per_s (scanned bytes / scan time), edges, edges_per_s,
//! pause_ms, total_ms, dump_bytes, roots, threads_stopped,
//! threads_not_stopped, cow_kib, and what was built.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::{Arc, Barrier, mpsc};
use std::time::Instant;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use heapdump_capture::{Mode, Tracker};

#[global_allocator]
static ALLOCATOR: Tracker = Tracker::system();

struct Options {
    blocks: usize,
    block_size: usize,
    builders: usize,
    threads: usize,
    repeat: usize,
    mode: Mode,
    writer: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        blocks: 1_000_000,
        block_size: 1024,
        builders: 4,
        threads: 0,
        repeat: 1,
        mode: Mode::Fork,
        writer: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--mode" {
            options.mode = match value.as_str() {
                "fork" => Mode::Fork,
                "stop" => Mode::Stop,
                _ => return Err("--mode takes fork or stop".into()),
            };
            continue;
        }
        let value = value.parse::<usize>().map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--blocks" => options.blocks = value,
            "--block-size" => options.block_size = value,
            "--builders" => options.builders = value,
            "--threads" => options.threads = value,
            "--repeat" => options.repeat = value,
            "--writer" => options.writer = value != 0,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if options.block_size < 16 || !options.block_size.is_multiple_of(8) {
        return Err("--block-size must be a multiple of 8, at least 16".into());
    }
    if options.builders == 0 || options.blocks < options.builders {
        return Err("need at least one builder and one block per builder".into());
    }
    Ok(options)
}

/// Builds `count` blocks of `words` words; words 0 and 1 of each point at
/// two other blocks of the same builder, the rest hold small integers.
fn build(seed: u64, count: usize, words: usize) -> Vec<Box<[u64]>> {
    let mut blocks: Vec<Box<[u64]>> = Vec::with_capacity(count);
    for i in 0..count {
        let mut block = vec![0u64; words].into_boxed_slice();
        for (j, word) in block.iter_mut().enumerate().skip(2) {
            *word = (i + j) as u64 & 0xFFFF;
        }
        blocks.push(block);
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    let addresses: Vec<u64> = blocks.iter().map(|b| b.as_ptr() as u64).collect();
    for block in &mut blocks {
        block[0] = addresses[next() % count];
        block[1] = addresses[next() % count];
    }
    drop(addresses);
    blocks
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("bench_snapshot: {message}");
            std::process::exit(2);
        }
    };
    let words = options.block_size / 8;
    let release = Arc::new(Barrier::new(options.builders + options.threads + 1));
    let (ready, built) = mpsc::channel();
    let started = Instant::now();
    let mut handles = Vec::new();
    for builder in 0..options.builders {
        let count = options.blocks / options.builders
            + usize::from(builder < options.blocks % options.builders);
        let (release, ready) = (release.clone(), ready.clone());
        handles.push(std::thread::spawn(move || {
            let blocks = build(builder as u64 + 1, count, words);
            ready.send(blocks.len()).expect("main thread gone");
            drop(ready);
            // Parked, holding its blocks, until the dumps are done.
            release.wait();
            std::hint::black_box(&blocks);
        }));
    }
    for _ in 0..options.threads {
        let release = release.clone();
        handles.push(std::thread::spawn(move || {
            release.wait();
        }));
    }
    drop(ready);
    let blocks: usize = (0..options.builders)
        .map(|_| built.recv().expect("a builder died"))
        .sum();
    let build_time = started.elapsed();
    // Let every idle thread reach its wait.
    std::thread::sleep(std::time::Duration::from_millis(200));

    let sink = match File::options().write(true).open("/dev/null") {
        Ok(file) => file,
        Err(error) => {
            eprintln!("bench_snapshot: cannot open /dev/null: {error}");
            std::process::exit(1);
        }
    };
    // The writer: 256 MiB of its own, made resident first, then one word
    // written into a random page in a loop while a dump runs. Each page it
    // writes while the fork child lives is copied once: the distinct pages
    // written are the copy-on-write cost.
    const WRITER_PAGES: usize = 65536;
    let dumping = Arc::new(AtomicBool::new(false));
    let stop_writer = Arc::new(AtomicBool::new(false));
    let pages_written = Arc::new(AtomicU64::new(0));
    let writer = options.writer.then(|| {
        let (dumping, stop_writer, pages_written) =
            (dumping.clone(), stop_writer.clone(), pages_written.clone());
        let (ready, is_ready) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut memory = vec![1u64; WRITER_PAGES * 512];
            let mut touched = vec![false; WRITER_PAGES];
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            ready.send(()).expect("main thread gone");
            while !stop_writer.load(Ordering::Relaxed) {
                if !dumping.load(Ordering::Acquire) {
                    if touched.iter().any(|&t| t) {
                        let count = touched.iter().filter(|&&t| t).count() as u64;
                        pages_written.fetch_add(count, Ordering::Relaxed);
                        touched.fill(false);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    continue;
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let page = state as usize % WRITER_PAGES;
                memory[page * 512] = memory[page * 512].wrapping_add(1);
                touched[page] = true;
            }
            std::hint::black_box(&memory);
        });
        is_ready.recv().expect("the writer died");
        handle
    });
    let stats = heapdump_capture::stats();
    let mut failed = false;
    for _ in 0..options.repeat {
        pages_written.store(0, Ordering::Relaxed);
        dumping.store(true, Ordering::Release);
        let result = heapdump_capture::write_heap_dump_with(sink.as_fd(), options.mode);
        dumping.store(false, Ordering::Release);
        // Let the writer count what it touched.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let cow_kib = if result.as_ref().is_ok_and(|d| d.mode == Mode::Fork) {
            pages_written.load(Ordering::Relaxed) * 4
        } else {
            0
        };
        let dump = match result {
            Ok(dump) => dump,
            Err(error) => {
                eprintln!("bench_snapshot: the dump failed: {error}");
                failed = true;
                break;
            }
        };
        let scan_s = dump.scan_ns as f64 / 1e9;
        println!(
            "RESULT mode={} cow_kib={cow_kib} blocks={blocks} block_size={} builders={} idle_threads={} build_s={:.1} \
             allocations={} live_bytes={} stop_ms={:.2} scan_ms={:.1} scanned_bytes={} \
             scan_gb_per_s={:.2} edges={} expected_edges={} edges_per_s={:.0} pause_ms={:.1} \
             total_ms={:.1} dump_bytes={} roots={} threads_stopped={} threads_not_stopped={} \
             tracking_bytes={} peak_rss_kib={}",
            dump.mode.name(),
            options.block_size,
            options.builders,
            options.threads,
            build_time.as_secs_f64(),
            dump.allocations,
            dump.live_bytes,
            dump.stop_ns as f64 / 1e6,
            dump.scan_ns as f64 / 1e6,
            dump.scanned_bytes,
            if scan_s > 0.0 {
                dump.scanned_bytes as f64 / 1e9 / scan_s
            } else {
                0.0
            },
            dump.edges,
            3 * blocks,
            if scan_s > 0.0 {
                dump.edges as f64 / scan_s
            } else {
                0.0
            },
            dump.pause_ns as f64 / 1e6,
            dump.total_ns as f64 / 1e6,
            dump.bytes_written,
            dump.roots,
            dump.threads_stopped,
            dump.threads_not_stopped,
            stats.tracking_bytes,
            heapdump_examples::peak_rss_kib(),
        );
    }
    stop_writer.store(true, Ordering::Relaxed);
    if let Some(writer) = writer {
        writer.join().expect("the writer panicked");
    }
    release.wait();
    for handle in handles {
        handle.join().expect("a thread panicked");
    }
    if failed {
        std::process::exit(1);
    }
}
