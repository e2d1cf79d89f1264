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

use std::collections::HashMap;

use heapdump_formats::read::DumpView;
use heapdump_formats::records::{AllocationRecord, allocation_flags};

/// Live bytes and blocks of one stack, each block counted
/// [`StackSampling::weight`] times: exact in a dump with every stack, an
/// estimate in a sampled one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StackFigures {
    /// Weighted bytes.
    pub bytes: f64,
    /// Weighted blocks.
    pub blocks: f64,
}

impl StackFigures {
    /// Bytes and blocks rounded to whole numbers, as the reports print
    /// them (rounded once per stack, after summing).
    pub fn rounded(&self) -> (u64, u64) {
        (self.bytes.round() as u64, self.blocks.round() as u64)
    }
}

/// Live figures by stack id ([`StackSampling::live_by_stack`]).
#[derive(Clone, Debug, Default)]
pub struct LiveByStack {
    /// Weighted figures of each stack id that some counted block has.
    pub stacks: HashMap<u32, StackFigures>,
    /// Bytes of the blocks outside the stack sample (exact), in no stack.
    pub unsampled_bytes: u64,
    /// How many blocks are outside the stack sample.
    pub unsampled_count: u64,
}

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

    /// Live bytes and blocks of `allocations` (a dump's, or some of them)
    /// by stack id, each block counted [`weight`](Self::weight) times, the
    /// blocks outside the sample counted apart: what every report and
    /// export by stack (`top`, `diff`, the flame graph, pprof) sums.
    pub fn live_by_stack(
        &self,
        allocations: impl IntoIterator<Item = AllocationRecord>,
    ) -> LiveByStack {
        let mut live = LiveByStack::default();
        for a in allocations {
            let weight = self.weight(&a);
            if weight == 0.0 {
                live.unsampled_bytes = live.unsampled_bytes.saturating_add(a.size);
                live.unsampled_count += 1;
                continue;
            }
            let figures = live.stacks.entry(a.stack).or_default();
            figures.bytes += a.size as f64 * weight;
            figures.blocks += weight;
        }
        live
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

    #[test]
    fn live_figures_by_stack_sum_weights_and_count_unsampled_blocks_apart() {
        let on = |stack: u32, size: u64, flags: u32| AllocationRecord {
            stack,
            ..block(size, flags)
        };
        let sampled = StackSampling { interval: 1000 };
        let live = sampled.live_by_stack([
            on(1, 1000, allocation_flags::SAMPLED),
            on(1, 3000, allocation_flags::SAMPLED),
            on(2, 500, allocation_flags::SAMPLED),
            on(0, 200, 0),
            on(0, 300, 0),
        ]);
        assert_eq!(
            live.stacks[&1],
            StackFigures {
                bytes: 4000.0,
                blocks: 2.0
            }
        );
        let p = 1.0 - (-0.5f64).exp();
        assert!((live.stacks[&2].bytes - 500.0 / p).abs() < 1e-9);
        assert_eq!(live.stacks[&2].rounded(), (1271, 3));
        assert_eq!((live.unsampled_bytes, live.unsampled_count), (500, 2));
        assert_eq!(live.stacks.len(), 2);
    }
}
