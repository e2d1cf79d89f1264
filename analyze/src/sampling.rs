//! Dumps written in production mode (`stacks=sample:SIZE`): every block is
//! there, but only a byte-weighted sample carries its allocation stack.
//!
//! A block of `s` bytes was sampled with probability
//! `p(s) = 1 - exp(-s/S)` (S: the process record's
//! `stack_sample_interval`), or 1 when `s >= S` (the capture side samples
//! those always). Reports that aggregate by stack (sites, functions, files,
//! types by stack) count each sampled block `1/p(s)` times and leave the
//! others out: an unbiased estimate of each group's bytes and count (the
//! Horvitz–Thompson estimator, as Go's and jemalloc's profilers scale
//! theirs). Totals of the whole heap stay exact: every block is in the dump.
//!
//! Unsampled blocks have stack 0 and so no type from a stack. They still
//! have every edge, so the graph, leak classes, dominators and retained
//! sizes are exact; their type is not recovered any other way (the DWARF
//! field types `retainers` shows name the *pointing* field, not a block's
//! own type).

use heapdump_formats::read::DumpView;
use heapdump_formats::records::{AllocationRecord, allocation_flags};

/// How the dump's stacks were taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSampling {
    /// Mean sampling interval S in bytes; 0: every block has its stack.
    pub interval: u64,
}

impl StackSampling {
    /// What the dump's process record says.
    pub fn of(view: &DumpView<'_>) -> StackSampling {
        StackSampling {
            interval: view.process().stack_sample_interval,
        }
    }

    /// Whether the figures by stack are estimates.
    pub fn is_sampled(&self) -> bool {
        self.interval != 0
    }

    /// The probability that a block of `size` bytes was sampled.
    pub fn probability(&self, size: u64) -> f64 {
        if self.interval == 0 || size >= self.interval {
            1.0
        } else {
            -(-(size as f64) / self.interval as f64).exp_m1()
        }
    }

    /// How many blocks `allocation` stands for in figures by stack: 1 in
    /// exact mode, `1/p(size)` for a sampled block, 0 for an unsampled one.
    pub fn weight(&self, allocation: &AllocationRecord) -> f64 {
        if self.interval == 0 {
            1.0
        } else if allocation.flags & allocation_flags::SAMPLED == 0 {
            0.0
        } else {
            1.0 / self.probability(allocation.size)
        }
    }

    /// The note reports print under figures that are estimates.
    pub fn note(&self) -> String {
        format!(
            "figures by stack are estimates from a stack sample (mean interval {}): each sampled block counts 1/(1 - exp(-size/{})) times; totals are exact",
            crate::text::human_bytes(self.interval),
            self.interval
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(size: u64, flags: u32) -> AllocationRecord {
        AllocationRecord {
            size,
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn sampled_blocks_weigh_the_inverse_of_their_probability_and_others_nothing() {
        let exact = StackSampling { interval: 0 };
        assert_eq!(exact.weight(&block(100, 0)), 1.0);
        let sampled = StackSampling {
            interval: 512 << 10,
        };
        assert_eq!(sampled.weight(&block(100, 0)), 0.0);
        let w = sampled.weight(&block(4096, allocation_flags::SAMPLED));
        assert!((w - 1.0 / (1.0 - (-4096.0f64 / 524288.0).exp())).abs() < 1e-9);
        assert_eq!(
            sampled.weight(&block(1 << 20, allocation_flags::SAMPLED)),
            1.0
        );
    }
}
