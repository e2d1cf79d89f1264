//! The live table: every allocation the program holds, keyed by address.
//!
//! 64 shards, picked by a hash of the address, so two threads rarely want the
//! same lock. Each shard is a bucketized cuckoo hash table (two candidate
//! buckets of four 24-byte slots per address) in its own anonymous mapping:
//! a lookup reads at most two buckets however full the table is, so it can
//! fill up to 95% before it grows by 1.3×. (Linear probing at that load
//! needs hundreds of probes per insertion.) Shards start at staggered sizes
//! so they do not all grow at once, which keeps the table's overhead near its
//! average, about 29 bytes per live allocation, instead of swinging with
//! each growth step.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{self, SpinLock};

pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// Fields narrower than the record's, to fit 24 bytes per slot.
const SIZE_BITS: u32 = 48;
const SEQUENCE_BITS: u32 = 40;
const STACK_BITS: u32 = 24;
const THREAD_BITS: u32 = 16;
const LOW48: u64 = (1 << 48) - 1;

/// The largest thread index a slot can hold; higher indices read back as
/// unknown.
pub const MAX_THREAD_INDEX: u32 = (1 << THREAD_BITS) - 2;
const UNKNOWN_THREAD_BITS: u64 = (1 << THREAD_BITS) - 1;
/// The largest stack id a slot can hold.
pub const MAX_STACK_ID: u32 = (1 << STACK_BITS) - 1;

/// One live allocation, unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub address: u64,
    pub size: u64,
    pub sequence: u64,
    pub stack: u32,
    /// Index into the thread registry, or `heapdump_formats::records::UNKNOWN_THREAD`.
    pub thread: u32,
    pub align: u64,
    pub flags: u8,
}

/// An [`Entry`] packed into three words. Address 0 marks an empty slot
/// (the allocator never returns null for a live block).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Slot {
    /// address (48) << 16 | thread (16). The address is shifted so the
    /// word never looks like a pointer: leak checkers and conservative
    /// collectors that scan the process (valgrind's memcheck, our own scan)
    /// must not see the tracker's table as holding every block.
    a: u64,
    /// size (48) | log2(align) (8) | flags (8)
    b: u64,
    /// sequence (40) | stack (24)
    c: u64,
}

// SAFETY: three integers; all-zero is the empty slot and has no drop glue.
unsafe impl sys::Zeroable for Slot {}

impl Slot {
    /// Packs `entry`; `None` if a field does not fit (an address above
    /// 2^48, a block of 256 TiB or more), which the caller counts as dropped.
    #[inline]
    pub fn pack(entry: &Entry) -> Option<Slot> {
        if entry.address == 0 || entry.address > LOW48 || entry.size > LOW48 {
            return None;
        }
        let thread = if entry.thread <= MAX_THREAD_INDEX {
            u64::from(entry.thread)
        } else {
            UNKNOWN_THREAD_BITS
        };
        let stack = if entry.stack <= MAX_STACK_ID {
            u64::from(entry.stack)
        } else {
            0
        };
        let align_log2 = u64::from(entry.align.max(1).trailing_zeros());
        Some(Slot {
            a: entry.address << THREAD_BITS | thread,
            b: entry.size | align_log2 << SIZE_BITS | u64::from(entry.flags) << 56,
            c: (entry.sequence & ((1 << SEQUENCE_BITS) - 1)) | stack << SEQUENCE_BITS,
        })
    }

    #[inline]
    pub fn address(&self) -> u64 {
        self.a >> THREAD_BITS
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.a == 0
    }

    #[inline]
    pub fn size(&self) -> u64 {
        self.b & LOW48
    }

    pub fn unpack(&self) -> Entry {
        let thread = self.a & UNKNOWN_THREAD_BITS;
        Entry {
            address: self.address(),
            size: self.size(),
            sequence: self.c & ((1 << SEQUENCE_BITS) - 1),
            stack: (self.c >> SEQUENCE_BITS) as u32,
            thread: if thread == UNKNOWN_THREAD_BITS {
                u32::MAX
            } else {
                thread as u32
            },
            align: 1 << ((self.b >> SIZE_BITS) & 0xff),
            flags: (self.b >> 56) as u8,
        }
    }
}

/// Spreads block addresses (multiples of 16, mostly) over all 64 bits.
#[inline]
fn hash(address: u64) -> u64 {
    (address >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A second, independent hash for the alternative bucket.
#[inline]
fn hash2(address: u64) -> u64 {
    let x = (address >> 4) ^ 0x5851_F42D_4C95_7F2D;
    let x = (x ^ (x >> 31)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 32)
}

#[inline]
fn shard_of(address: u64) -> usize {
    (hash(address) >> (64 - SHARD_BITS)) as usize
}

/// The two buckets an address may live in, among `bucket_count`.
/// Multiply-shift maps a hash onto any bucket count, not only powers of
/// two, which is what lets tables grow by 1.3×.
#[inline]
fn choices(address: u64, bucket_count: usize) -> (usize, usize) {
    let n = bucket_count as u128;
    let first = ((u128::from(hash(address) << SHARD_BITS) * n) >> 64) as usize;
    let second = ((u128::from(hash2(address)) * n) >> 64) as usize;
    (first, second)
}

#[inline]
fn prefetch_line(address: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            address as *const i8,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Slots per bucket: four 24-byte slots, one and a half cache lines.
const WAYS: usize = 4;
type Bucket = [Slot; WAYS];

/// Fill limit before growing, in percent. Bucketized cuckoo hashing with
/// two choices and four ways keeps lookups at two buckets well past this.
const MAX_LOAD_PERCENT: usize = 95;
/// Evictions tried before an insertion gives up and the table grows.
const MAX_KICKS: usize = 500;

/// One shard's table and counters. Only touched under the shard's lock.
pub struct ShardTable {
    buckets: *mut Bucket,
    bucket_count: usize,
    mapped_bytes: usize,
    /// State of the generator that picks eviction victims.
    random: u64,
    pub count: u64,
    pub bytes: u64,
    pub total_allocations: u64,
    pub total_frees: u64,
}

// SAFETY: the mapping behind `buckets` belongs to the table, which only the
// lock holder touches.
unsafe impl Send for ShardTable {}

impl ShardTable {
    const fn new() -> ShardTable {
        ShardTable {
            buckets: core::ptr::null_mut(),
            bucket_count: 0,
            mapped_bytes: 0,
            random: 0x2545_F491_4F6C_DD1D,
            count: 0,
            bytes: 0,
            total_allocations: 0,
            total_frees: 0,
        }
    }

    fn buckets(&self) -> &[Bucket] {
        if self.buckets.is_null() {
            return &[];
        }
        // SAFETY: `buckets` points at `bucket_count` initialized buckets in
        // our mapping (zeroed on creation, written only through this table).
        unsafe { core::slice::from_raw_parts(self.buckets, self.bucket_count) }
    }

    fn buckets_mut(&mut self) -> &mut [Bucket] {
        if self.buckets.is_null() {
            return &mut [];
        }
        // SAFETY: as in `buckets`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.buckets, self.bucket_count) }
    }

    fn capacity(&self) -> usize {
        self.bucket_count * WAYS
    }

    #[inline]
    fn choices(&self, address: u64) -> (usize, usize) {
        choices(address, self.bucket_count)
    }

    fn find(&self, address: u64) -> Option<(usize, usize)> {
        if self.bucket_count == 0 {
            return None;
        }
        let (first, second) = self.choices(address);
        for bucket in [first, second] {
            let slots = self.buckets().get(bucket)?;
            if let Some(way) = slots.iter().position(|s| s.address() == address) {
                return Some((bucket, way));
            }
        }
        None
    }

    /// Puts a slot whose address is not in the table into one of its
    /// buckets, evicting residents to their other bucket as needed. Returns
    /// the slot left homeless when it gives up (maybe another one).
    fn place(&mut self, mut slot: Slot) -> Option<Slot> {
        if self.bucket_count == 0 {
            return Some(slot);
        }
        let (first, second) = self.choices(slot.address());
        for bucket in [first, second] {
            if let Some(free) = self.buckets_mut()[bucket].iter_mut().find(|s| s.is_empty()) {
                *free = slot;
                return None;
            }
        }
        let mut bucket = first;
        for _ in 0..MAX_KICKS {
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            let way = (self.random % WAYS as u64) as usize;
            core::mem::swap(&mut self.buckets_mut()[bucket][way], &mut slot);
            let (a, b) = self.choices(slot.address());
            bucket = if a == bucket { b } else { a };
            if let Some(free) = self.buckets_mut()[bucket].iter_mut().find(|s| s.is_empty()) {
                *free = slot;
                return None;
            }
        }
        Some(slot)
    }

    /// Moves everything into a table with room for about `wanted` slots.
    fn grow_to(&mut self, wanted: usize) -> bool {
        let bytes = sys::round_to_pages(wanted.div_ceil(WAYS) * size_of::<Bucket>());
        let Some(mapping) = sys::map_zeroed(bytes) else {
            return false;
        };
        let old_buckets = self.buckets;
        let old_count = self.bucket_count;
        let old_bytes = self.mapped_bytes;
        self.buckets = mapping.cast();
        self.bucket_count = bytes / size_of::<Bucket>();
        self.mapped_bytes = bytes;
        if old_buckets.is_null() {
            return true;
        }
        // SAFETY: the old mapping holds `old_count` buckets and stays mapped
        // until the unmap below.
        let old = unsafe { core::slice::from_raw_parts(old_buckets, old_count) };
        let mut stuck = None;
        for slot in old.iter().flatten().filter(|s| !s.is_empty()) {
            if let Some(homeless) = self.place(*slot) {
                stuck = Some(homeless);
                break;
            }
        }
        if stuck.is_some() {
            // Practically impossible below 75% load; start over bigger,
            // from the intact old table.
            // SAFETY: the new mapping was made above with `bytes` and
            // nothing refers to it once we switch back.
            unsafe { sys::unmap(self.buckets.cast(), self.mapped_bytes) };
            self.buckets = old_buckets;
            self.bucket_count = old_count;
            self.mapped_bytes = old_bytes;
            return self.grow_to(wanted + wanted / 2);
        }
        // SAFETY: the old mapping was made by `map_zeroed` with this size
        // and nothing refers to it after the copy.
        unsafe { sys::unmap(old_buckets.cast(), old_bytes) };
        true
    }

    fn next_capacity(&self, first_capacity: usize) -> usize {
        if self.bucket_count == 0 {
            first_capacity
        } else {
            self.capacity() + self.capacity() * 3 / 10
        }
    }

    /// Inserts, or replaces the record at the same address.
    fn insert(&mut self, slot: Slot, first_capacity: usize) -> Inserted {
        if self.bucket_count != 0 {
            // One pass over both buckets: the address, or else a free slot.
            let address = slot.address();
            let (first, second) = self.choices(address);
            let mut free = None;
            for bucket in [first, second] {
                for (way, resident) in self.buckets()[bucket].iter().enumerate() {
                    if resident.address() == address {
                        // The inner allocator handed out a block we thought
                        // live: it was freed behind our back (never by Rust
                        // code), so the new block replaces it.
                        let old = core::mem::replace(&mut self.buckets_mut()[bucket][way], slot);
                        self.bytes = self.bytes - old.size() + slot.size();
                        return Inserted::Replaced;
                    }
                    if free.is_none() && resident.is_empty() {
                        free = Some((bucket, way));
                    }
                }
            }
            if let Some((bucket, way)) = free
                && (self.count as usize + 1) * 100 <= self.capacity() * MAX_LOAD_PERCENT
            {
                self.buckets_mut()[bucket][way] = slot;
                self.count += 1;
                self.bytes += slot.size();
                return Inserted::New;
            }
        }
        if (self.count as usize + 1) * 100 > self.capacity() * MAX_LOAD_PERCENT {
            let wanted = self.next_capacity(first_capacity);
            if !self.grow_to(wanted) && self.count as usize >= self.capacity() {
                return Inserted::Full;
            }
        }
        let mut pending = slot;
        while let Some(homeless) = self.place(pending) {
            if self.grow_to(self.next_capacity(first_capacity)) {
                pending = homeless;
                continue;
            }
            // Out of memory with one record left over after the evictions:
            // either the new one (nothing changed) or an older one, which is
            // now lost while the new one is stored.
            if homeless.address() == slot.address() {
                return Inserted::Full;
            }
            self.bytes = self.bytes + slot.size() - homeless.size();
            return Inserted::Evicted;
        }
        self.count += 1;
        self.bytes += slot.size();
        Inserted::New
    }

    fn remove(&mut self, address: u64) -> Option<Slot> {
        let (bucket, way) = self.find(address)?;
        let removed = core::mem::take(&mut self.buckets_mut()[bucket][way]);
        self.count -= 1;
        self.bytes -= removed.size();
        Some(removed)
    }

    /// The live slots, in table order.
    pub fn live(&self) -> impl Iterator<Item = &Slot> {
        self.buckets().iter().flatten().filter(|s| !s.is_empty())
    }

    pub fn mapped_bytes(&self) -> usize {
        self.mapped_bytes
    }
}

enum Inserted {
    New,
    /// The address was already recorded; its old record was replaced.
    Replaced,
    /// Stored, but the table could not grow and lost an older record.
    Evicted,
    /// Not stored: the table could not grow.
    Full,
}

/// A cache line per shard, so two threads working on neighbouring shards do
/// not share one.
#[repr(align(64))]
pub struct Shard {
    pub table: SpinLock<ShardTable>,
    /// The table's count and bytes, republished after every change so that
    /// peak sampling can add them up without taking 64 locks.
    count: AtomicU64,
    bytes: AtomicU64,
    /// Where the table's buckets are, for prefetching without the lock.
    buckets_hint: AtomicU64,
    bucket_count_hint: AtomicU64,
}

/// Inserts between two samples of the peak, per thread, and bytes
/// allocated between them: the peak is exact to within this much work of
/// each thread.
const PEAK_SAMPLE_INSERTS: u32 = 128;
const PEAK_SAMPLE_BYTES: u64 = 1 << 20;

thread_local! {
    /// Inserts and bytes since this thread last sampled the peak.
    static SINCE_SAMPLE: Cell<(u32, u64)> = const { Cell::new((0, 0)) };
}

/// The table: shards plus counters that need no lock.
pub struct LiveTable {
    pub shards: [Shard; SHARDS],
    peak_bytes: AtomicU64,
    peak_count: AtomicU64,
    dropped: AtomicU64,
}

/// The table's totals; exact when no other thread is allocating.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveTotals {
    pub live_bytes: u64,
    pub live_count: u64,
    pub peak_bytes: u64,
    pub peak_count: u64,
    pub dropped: u64,
    pub total_allocations: u64,
    pub total_frees: u64,
    pub mapped_bytes: u64,
}

impl LiveTable {
    pub const fn new() -> LiveTable {
        LiveTable {
            shards: [const {
                Shard {
                    table: SpinLock::new(ShardTable::new()),
                    count: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                    buckets_hint: AtomicU64::new(0),
                    bucket_count_hint: AtomicU64::new(0),
                }
            }; SHARDS],
            peak_bytes: AtomicU64::new(0),
            peak_count: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Shard `index`'s first size: one to about 1.3 pages of slots, spread
    /// evenly so shards cross their growth points at different times.
    fn first_capacity(index: usize) -> usize {
        let base = sys::PAGE / size_of::<Bucket>() * WAYS;
        base + base * 3 * index / (10 * SHARDS)
    }

    /// Records a live block; `counts_as_new` says whether it is a new
    /// allocation for the totals (a reallocation in place is not). Returns
    /// `false` when it had to be dropped.
    #[inline]
    pub fn insert(&self, entry: &Entry, counts_as_new: bool) -> bool {
        let Some(slot) = Slot::pack(entry) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let index = shard_of(entry.address);
        let shard = &self.shards[index];
        let stored = {
            let mut table = shard.table.lock();
            table.total_allocations += u64::from(counts_as_new);
            let stored = table.insert(slot, Self::first_capacity(index));
            shard.publish(&table);
            stored
        };
        match stored {
            Inserted::New | Inserted::Replaced => {}
            Inserted::Evicted => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Inserted::Full => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let (inserts, bytes) = SINCE_SAMPLE.get();
        let (inserts, bytes) = (inserts + 1, bytes.saturating_add(entry.size));
        if inserts >= PEAK_SAMPLE_INSERTS || bytes >= PEAK_SAMPLE_BYTES {
            SINCE_SAMPLE.set((0, 0));
            self.sample_peak();
        } else {
            SINCE_SAMPLE.set((inserts, bytes));
        }
        true
    }

    /// Raises the peaks to the current totals (read without locks).
    fn sample_peak(&self) -> (u64, u64) {
        let (count, bytes) = self.shards.iter().fold((0, 0), |(c, b), shard| {
            (
                c + shard.count.load(Ordering::Relaxed),
                b + shard.bytes.load(Ordering::Relaxed),
            )
        });
        self.peak_bytes.fetch_max(bytes, Ordering::Relaxed);
        self.peak_count.fetch_max(count, Ordering::Relaxed);
        (count, bytes)
    }

    /// Starts loading both candidate buckets of `address`, so their cache
    /// misses overlap with each other and with whatever the caller does
    /// next (the stack walk, taking the shard's lock) instead of being paid
    /// one after the other.
    #[inline]
    pub fn prefetch(&self, address: u64) {
        let shard = &self.shards[shard_of(address)];
        // A racy peek at the bucket pointer: prefetching a stale or wrong
        // address is harmless, it is only a hint.
        let buckets = shard.buckets_hint.load(Ordering::Relaxed);
        let count = shard.bucket_count_hint.load(Ordering::Relaxed);
        if buckets == 0 {
            return;
        }
        let (first, second) = choices(address, count as usize);
        for bucket in [first, second] {
            let at = buckets + (bucket * size_of::<Bucket>()) as u64;
            prefetch_line(at);
            // A bucket may straddle two cache lines.
            prefetch_line(at + size_of::<Bucket>() as u64 - 1);
        }
    }

    /// Forgets a block; returns what was recorded for it, `None` if it was
    /// not tracked (made while tracking was off for this thread, or dropped).
    /// `counts_as_free` says whether this is a deallocation for the totals
    /// (a reallocation is counted once its outcome is known).
    #[inline]
    pub fn remove(&self, address: u64, counts_as_free: bool) -> Option<Entry> {
        self.prefetch(address);
        let shard = &self.shards[shard_of(address)];
        let mut table = shard.table.lock();
        table.total_frees += u64::from(counts_as_free);
        let removed = table.remove(address)?;
        shard.publish(&table);
        Some(removed.unpack())
    }

    /// Counts a deallocation whose record was already removed (a
    /// reallocation that moved).
    pub fn count_free(&self, address: u64) {
        self.shards[shard_of(address)].table.lock().total_frees += 1;
    }

    /// Totals, adding up the shards under their locks one at a time.
    pub fn totals(&self) -> LiveTotals {
        let mut totals = LiveTotals {
            dropped: self.dropped.load(Ordering::Relaxed),
            ..LiveTotals::default()
        };
        for shard in &self.shards {
            let table = shard.table.lock();
            totals.live_bytes += table.bytes;
            totals.live_count += table.count;
            totals.total_allocations += table.total_allocations;
            totals.total_frees += table.total_frees;
            totals.mapped_bytes += table.mapped_bytes as u64;
        }
        self.peak_bytes
            .fetch_max(totals.live_bytes, Ordering::Relaxed);
        self.peak_count
            .fetch_max(totals.live_count, Ordering::Relaxed);
        totals.peak_bytes = self.peak_bytes.load(Ordering::Relaxed);
        totals.peak_count = self.peak_count.load(Ordering::Relaxed);
        totals
    }

    /// Peaks (raised to `live_count`/`live_bytes`, the exact totals of a
    /// snapshot) and the dropped count, for a dump.
    pub fn peaks_and_dropped(&self, live_count: u64, live_bytes: u64) -> (u64, u64, u64) {
        self.peak_bytes.fetch_max(live_bytes, Ordering::Relaxed);
        self.peak_count.fetch_max(live_count, Ordering::Relaxed);
        (
            self.peak_bytes.load(Ordering::Relaxed),
            self.peak_count.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Shard {
    #[inline]
    fn publish(&self, table: &ShardTable) {
        self.count.store(table.count, Ordering::Relaxed);
        self.bytes.store(table.bytes, Ordering::Relaxed);
        self.buckets_hint
            .store(table.buckets as u64, Ordering::Relaxed);
        self.bucket_count_hint
            .store(table.bucket_count as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: u64, size: u64) -> Entry {
        Entry {
            address,
            size,
            sequence: address / 16,
            stack: (address % 1000) as u32,
            thread: 3,
            align: 16,
            flags: 1,
        }
    }

    #[test]
    fn slot_round_trips_every_field() {
        let e = Entry {
            address: 0x7fff_1234_5670,
            size: (1 << 40) + 3,
            sequence: (1 << 39) + 5,
            stack: MAX_STACK_ID,
            thread: MAX_THREAD_INDEX,
            align: 4096,
            flags: 0xa5,
        };
        assert_eq!(Slot::pack(&e).unwrap().unpack(), e);
        let unknown = Entry {
            thread: u32::MAX,
            ..e
        };
        assert_eq!(Slot::pack(&unknown).unwrap().unpack().thread, u32::MAX);
        assert!(
            Slot::pack(&Entry {
                address: 1 << 50,
                ..e
            })
            .is_none()
        );
        assert!(Slot::pack(&Entry { address: 0, ..e }).is_none());
    }

    #[test]
    fn table_matches_a_model_under_random_inserts_and_removes() {
        let table = LiveTable::new();
        let mut model = std::collections::HashMap::new();
        let mut state = 0x1234_5678_u64;
        for step in 0..200_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let address = 0x10_0000 + (state % 50_000) * 16;
            if state & (1 << 40) == 0 {
                let e = entry(address, step % 300 + 1);
                if model.insert(address, e).is_none() {
                    assert!(table.insert(&e, true));
                } else {
                    // Replacing a live address keeps one record.
                    assert!(table.insert(&e, true));
                }
            } else {
                assert_eq!(table.remove(address, true), model.remove(&address));
            }
        }
        let mut count = 0;
        let mut bytes = 0;
        for shard in &table.shards {
            let shard = shard.table.lock();
            for slot in shard.live() {
                let e = slot.unpack();
                assert_eq!(model.get(&e.address), Some(&e));
                count += 1;
                bytes += e.size;
            }
            assert_eq!(shard.count as usize, shard.live().count());
        }
        assert_eq!(count, model.len());
        assert_eq!(bytes, model.values().map(|e| e.size).sum::<u64>());
        let totals = table.totals();
        assert_eq!(totals.live_count as usize, model.len());
        assert_eq!(totals.live_bytes, bytes);
        // The overhead stays near 24 B / 0.8 for a table of this size.
        let per_live = totals.mapped_bytes as f64 / model.len() as f64;
        assert!(per_live < 40.0, "{per_live} bytes per live entry");
    }

    #[test]
    fn removing_an_unknown_address_changes_nothing() {
        let table = LiveTable::new();
        assert!(table.insert(&entry(0x1000, 10), true));
        assert_eq!(table.remove(0x2000, true), None);
        assert_eq!(table.totals().live_count, 1);
        assert_eq!(table.remove(0x1000, true).map(|e| e.size), Some(10));
        assert_eq!(table.totals().live_bytes, 0);
    }
}
