//! The allocation-heavy workload the overhead benchmark runs, identically
//! under `Tracker<System>` and under plain `System`.
//!
//! Each worker thread keeps a `HashMap` live set of about `live_set`
//! entries (each a `String` key and a boxed record holding a `Vec`), and on
//! every step descends a ~15-deep call chain and then allocates: small boxes,
//! a growing `Vec`, formatted `String`s, and churns one map entry. The mix is
//! deterministic (a per-thread xorshift generator) so both runs do the same
//! work.
//!
//! With `--random-paths` (issue 12's deep workload, with `--depth 20`) each
//! level of the chain calls one of two functions at random, so consecutive
//! allocations come from different stacks (2^depth paths), and every 256th
//! step also allocates a large block (16 KiB to 256 KiB, 8 kept alive per
//! thread).

use std::collections::HashMap;
use std::hint::black_box;

/// What one run does.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadConfig {
    /// Worker threads.
    pub threads: usize,
    /// Steps per thread.
    pub steps: u64,
    /// Target number of map entries each thread keeps alive.
    pub live_set: usize,
    /// Depth of the call chain above each allocation.
    pub depth: u32,
    /// Each level of the chain is one of two functions, chosen at random,
    /// and some steps allocate large blocks.
    pub random_paths: bool,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            threads: 2,
            steps: 400_000,
            live_set: 50_000,
            depth: 15,
            random_paths: false,
        }
    }
}

/// What the run did, so the two allocators can be checked to have done the
/// same work, and how long the workers took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadResult {
    /// Wall time from starting the workers until all finished their steps
    /// (excludes `during` and teardown).
    pub elapsed: std::time::Duration,
    /// CPU time of the process (all threads) from start until then.
    pub cpu: std::time::Duration,
    /// Sum over threads of a checksum of the work done.
    pub checksum: u64,
    /// Map entries alive at the end, over all threads.
    pub live_entries: usize,
}

struct Record {
    id: u64,
    tags: Vec<u32>,
    label: String,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Runs the workload on `config.threads` threads and returns after they end.
/// `during` runs on the calling thread while the workers are still alive
/// with their live sets built (used to take a dump of a busy heap).
pub fn run(config: WorkloadConfig, during: impl FnOnce()) -> WorkloadResult {
    let barrier = std::sync::Barrier::new(config.threads + 1);
    let release = std::sync::Barrier::new(config.threads + 1);
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..config.threads)
            .map(|index| {
                let (barrier, release) = (&barrier, &release);
                scope.spawn(move || {
                    let mut state = Worker::new(index as u64 + 1);
                    for step in 0..config.steps {
                        if config.random_paths {
                            let path = state.path_rng.next();
                            descend_left_or_right(
                                &mut state,
                                step,
                                config.depth,
                                config.live_set,
                                path,
                            );
                        } else {
                            descend(&mut state, step, config.depth, config.live_set);
                        }
                    }
                    barrier.wait();
                    release.wait();
                    state.finish()
                })
            })
            .collect();
        barrier.wait();
        let elapsed = start.elapsed();
        let cpu = crate::cpu_time();
        during();
        release.wait();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_default())
            .fold(
                WorkloadResult {
                    elapsed,
                    cpu,
                    ..Default::default()
                },
                |sum, one| WorkloadResult {
                    elapsed,
                    cpu,
                    checksum: sum.checksum.wrapping_add(one.checksum),
                    live_entries: sum.live_entries + one.live_entries,
                },
            )
    })
}

struct Worker {
    rng: Rng,
    map: HashMap<String, Box<Record>>,
    scratch: Vec<u64>,
    checksum: u64,
    /// Chooses the call path (`--random-paths`), apart from `rng` so the
    /// allocations are the same whatever the paths.
    path_rng: Rng,
    /// Large blocks kept alive (`--random-paths`), replaced round-robin.
    large: Vec<Vec<u8>>,
}

impl Worker {
    fn new(seed: u64) -> Worker {
        Worker {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            map: HashMap::new(),
            scratch: Vec::new(),
            checksum: 0,
            path_rng: Rng(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) | 1),
            large: Vec::new(),
        }
    }

    fn finish(self) -> WorkloadResult {
        WorkloadResult {
            elapsed: std::time::Duration::ZERO,
            cpu: std::time::Duration::ZERO,
            checksum: self.checksum,
            live_entries: self.map.len(),
        }
    }
}

/// One frame of the call chain. `inline(never)` keeps the chain real, so the
/// tracker walks `depth` frames on every allocation, as it would in an
/// application.
#[inline(never)]
fn descend(state: &mut Worker, step: u64, depth: u32, live_set: usize) {
    if depth == 0 {
        allocate(state, step, live_set);
    } else {
        descend(state, step, depth - 1, live_set);
    }
    black_box(depth);
}

/// `--random-paths`: one level of a chain whose every level is
/// [`descend_left`] or [`descend_right`], as bit `depth` of `path` says.
#[inline(always)]
fn descend_left_or_right(state: &mut Worker, step: u64, depth: u32, live_set: usize, path: u64) {
    if depth == 0 {
        allocate(state, step, live_set);
        if step.is_multiple_of(256) {
            allocate_large(state, step);
        }
    } else if (path >> (depth % 64)) & 1 == 0 {
        descend_left(state, step, depth - 1, live_set, path);
    } else {
        descend_right(state, step, depth - 1, live_set, path);
    }
}

#[inline(never)]
fn descend_left(state: &mut Worker, step: u64, depth: u32, live_set: usize, path: u64) {
    descend_left_or_right(state, step, depth, live_set, path);
    black_box(depth);
}

#[inline(never)]
fn descend_right(state: &mut Worker, step: u64, depth: u32, live_set: usize, path: u64) {
    descend_left_or_right(state, step, depth, live_set, path);
    black_box(depth ^ 1);
}

/// A large block (16 KiB to 256 KiB) that replaces one of the eight kept.
#[inline(never)]
fn allocate_large(state: &mut Worker, step: u64) {
    let size = 16 << 10 << (state.path_rng.next() % 5);
    let block = vec![step as u8; size];
    state.checksum = state.checksum.wrapping_add(u64::from(block[size - 1]));
    let slot = (step / 256) as usize % 8;
    if slot < state.large.len() {
        state.large[slot] = block;
    } else {
        state.large.push(block);
    }
}

#[inline(never)]
fn allocate(state: &mut Worker, step: u64, live_set: usize) {
    let r = state.rng.next();
    // Small boxes that die at once.
    let small = Box::new([r; 4]);
    state.checksum = state.checksum.wrapping_add(black_box(&small)[0]);
    drop(small);

    // A growing Vec, reset now and then (reallocations in place and moved).
    state.scratch.push(r);
    if state.scratch.len() > 1024 {
        state.scratch = Vec::new();
    }

    // Strings from formatting.
    let key = format!("key-{}", r % (live_set as u64 * 2));
    let label = format!("{step}:{r:x}");

    // Churn the live set: insert or replace, and evict to stay near the target.
    let record = Box::new(Record {
        id: step,
        tags: (0..(r % 8) as u32).collect(),
        label,
    });
    if let Some(old) = state.map.insert(key, record) {
        state.checksum = state
            .checksum
            .wrapping_add(old.id ^ old.tags.len() as u64 ^ old.label.len() as u64);
    }
    if state.map.len() > live_set {
        let victim = format!("key-{}", state.rng.next() % (live_set as u64 * 2));
        state.map.remove(&victim);
    }
}

impl WorkloadConfig {
    /// Reads `--threads N --steps N --live-set N --depth N --random-paths`
    /// (any subset) from the command line, on top of the defaults.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<WorkloadConfig, String> {
        let mut config = WorkloadConfig::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--random-paths" {
                config.random_paths = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number: u64 = value
                .parse()
                .map_err(|_| format!("{flag}: `{value}` is not a number"))?;
            match flag.as_str() {
                "--threads" => config.threads = number as usize,
                "--steps" => config.steps = number,
                "--live-set" => config.live_set = number as usize,
                "--depth" => config.depth = number as u32,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        Ok(config)
    }
}
