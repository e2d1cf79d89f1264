//! Software prefetch for the graph walks: on a heap of millions of blocks
//! every step of a search is a cache miss, and the only way to overlap them
//! is to name the next addresses before they are needed.

/// Asks the CPU to start loading `items[index]` into the cache. Only a
/// hint: an index past the end is harmless and nothing is read.
#[inline(always)]
pub(crate) fn prefetch<T>(items: &[T], index: usize) {
    // `wrapping_add` only computes an address; nothing dereferences it.
    let address = items.as_ptr().wrapping_add(index);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults and writes nothing, whatever the
    // address (the SSE feature it needs is part of the x86_64 baseline).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
