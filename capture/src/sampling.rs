//! Production mode (`stacks=sample:SIZE`): every block is still recorded,
//! but only a byte-weighted sample of them gets its stack walked.
//!
//! The sample is a Poisson process over the bytes each thread allocates,
//! with mean interval S, as Go's `MemProfileRate`, jemalloc's
//! `lg_prof_sample` and tcmalloc do: each thread counts down a number of
//! bytes drawn from an exponential distribution of mean S, and the
//! allocation that crosses zero is sampled (then a new countdown is drawn;
//! the process is memoryless, so drawing afresh after each sample is exact).
//! A block of `s < S` bytes is thus sampled with probability
//! `1 - exp(-s/S)`. Blocks of `S` bytes or more are always sampled and do
//! not touch the countdown, so the probability of the others is unchanged;
//! [`probability`] gives the exact probability of either kind, and the
//! analyzer weights a sampled block by its inverse.
//!
//! The hot path is one relaxed load, one thread-local subtraction and a
//! branch; the random draw (a SplitMix64 step and a logarithm, no memory
//! but two thread-local words) happens once per S bytes on average.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

/// The mean sampling interval `stacks=sample` takes without a size, as Go,
/// jemalloc and tcmalloc.
pub const DEFAULT_SAMPLE_INTERVAL: u64 = 512 << 10;

/// The mean interval S in bytes; 0 walks every allocation's stack (exact
/// mode). Set once at start.
static INTERVAL: AtomicU64 = AtomicU64::new(0);
/// The seed the threads' generators derive from; 0: a random one per
/// thread.
static SEED: AtomicU64 = AtomicU64::new(0);

// Each thread's countdown and generator are `hot::Hot::countdown` and
// `hot::Hot::random`.

/// Sets the mode for the whole process: `interval` 0 for exact stacks,
/// else the mean sampling interval in bytes; `seed` 0 for a random seed.
pub fn configure(interval: u64, seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    INTERVAL.store(interval, Ordering::Relaxed);
    // Blocks out of the sample need no record where glibc makes them.
    if interval != 0 && crate::GLIBC_BLOCKS {
        crate::presence::enable();
    }
}

/// The mean sampling interval in bytes, 0 in exact mode (what the dump's
/// process record carries).
pub fn interval() -> u64 {
    INTERVAL.load(Ordering::Relaxed)
}

/// Whether to walk the stack of a new block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Exact mode: every stack is walked.
    Every,
    /// Production mode, and this block is in the sample.
    Sampled,
    /// Production mode, and this block is not: it gets no stack.
    Skipped,
}

/// Decides for a block of `size` bytes allocated by the calling thread
/// (`thread`: its registry index, which makes a fixed seed give each
/// thread its own stream; asked for only on the thread's first draw).
#[inline(always)]
pub fn decide(size: u64, thread: impl FnOnce() -> u32) -> Walk {
    let interval = INTERVAL.load(Ordering::Relaxed);
    if interval == 0 {
        return Walk::Every;
    }
    if size >= interval {
        return Walk::Sampled;
    }
    let left = crate::hot::with(|hot| hot.countdown.get());
    if size < left {
        crate::hot::with(|hot| hot.countdown.set(left - size));
        return Walk::Skipped;
    }
    crossed(size, interval, thread)
}

/// The countdown ran out (or was never drawn).
#[cold]
#[inline(never)]
fn crossed(size: u64, interval: u64, thread: impl FnOnce() -> u32) -> Walk {
    if crate::hot::with(|hot| hot.random.get()) == 0 {
        // The thread's first small allocation in production mode: draw its
        // first countdown, then count this allocation against it like any
        // other (sampling it outright would favour each thread's first block).
        crate::hot::with(|hot| hot.random.set(thread_seed(thread())));
        let first = draw(interval);
        if size < first {
            crate::hot::with(|hot| hot.countdown.set(first - size));
            return Walk::Skipped;
        }
    }
    crate::hot::with(|hot| hot.countdown.set(draw(interval)));
    Walk::Sampled
}

/// A countdown: an exponential variate of mean `interval`, in bytes.
fn draw(interval: u64) -> u64 {
    let bits = next_random() >> 11;
    // Uniform in (0, 1]: never 0, so the logarithm is finite (at most 36.7).
    let uniform = (bits + 1) as f64 * (1.0 / (1u64 << 53) as f64);
    // `as` saturates; the product is below 37 * 2^64 anyway.
    (-uniform.ln() * interval as f64) as u64
}

/// One SplitMix64 step of the calling thread's generator.
fn next_random() -> u64 {
    let state = crate::hot::with(|hot| hot.random.get()).wrapping_add(0x9E37_79B9_7F4A_7C15);
    // A state of 0 means "unseeded": skip it (one value in 2^64).
    crate::hot::with(|hot| hot.random.set(if state == 0 { 1 } else { state }));
    mix(state)
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first state of a thread's generator: from the fixed seed and the
/// thread index, or from the clock and the thread's own address.
fn thread_seed(thread: u32) -> u64 {
    let fixed = SEED.load(Ordering::Relaxed);
    let base = if fixed != 0 {
        fixed
    } else {
        // The thread-local's address differs between threads started at
        // the same nanosecond.
        let local = crate::hot::with(|hot| &hot.random as *const Cell<u64> as u64);
        crate::sys::clock_ns(libc::CLOCK_MONOTONIC) ^ local.rotate_left(32)
    };
    mix(base ^ u64::from(thread).wrapping_mul(0xD6E8_FEB8_6659_FD93)) | 1
}

/// The probability that a block of `size` bytes is sampled at mean
/// interval `interval` (1 in exact mode). The analyzer has its own copy.
#[cfg(test)]
fn probability(size: u64, interval: u64) -> f64 {
    if interval == 0 || size >= interval {
        1.0
    } else {
        1.0 - (-(size as f64) / interval as f64).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `decide` on a fresh thread (its own countdown and generator).
    fn sampled_fraction(size: u64, interval: u64, count: u32) -> f64 {
        std::thread::spawn(move || {
            let hits = (0..count)
                .filter(|_| decide_with(size, interval) == Walk::Sampled)
                .count();
            hits as f64 / f64::from(count)
        })
        .join()
        .unwrap()
    }

    /// `decide` without touching the process-wide interval (tests run in
    /// parallel): the same code after the interval load.
    fn decide_with(size: u64, interval: u64) -> Walk {
        if size >= interval {
            return Walk::Sampled;
        }
        let left = crate::hot::with(|hot| hot.countdown.get());
        if size < left {
            crate::hot::with(|hot| hot.countdown.set(left - size));
            return Walk::Skipped;
        }
        crossed(size, interval, || 7)
    }

    #[test]
    fn a_block_is_sampled_with_probability_one_minus_exp_of_minus_size_over_interval() {
        for (size, interval) in [(100, 512 << 10), (4096, 512 << 10), (64 << 10, 128 << 10)] {
            let expected = probability(size, interval);
            let count = 2_000_000;
            let got = sampled_fraction(size, interval, count);
            // Binomial standard deviation; 5 of them never fail by chance.
            let sigma = (expected * (1.0 - expected) / f64::from(count)).sqrt();
            assert!(
                (got - expected).abs() < 5.0 * sigma,
                "size {size}, S {interval}: sampled {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn blocks_of_the_interval_or_more_are_always_sampled() {
        assert_eq!(sampled_fraction(512 << 10, 512 << 10, 1000), 1.0);
        assert_eq!(sampled_fraction(4 << 20, 512 << 10, 1000), 1.0);
        assert_eq!(probability(1 << 20, 512 << 10), 1.0);
    }

    #[test]
    fn a_fixed_seed_gives_each_thread_the_same_stream_every_time() {
        SEED.store(42, Ordering::Relaxed);
        let run = || {
            std::thread::spawn(|| {
                (0..10_000)
                    .map(|_| decide_with(1000, 64 << 10) == Walk::Sampled)
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(|&s| s) && !first.iter().all(|&s| s));
        SEED.store(0, Ordering::Relaxed);
    }
}
