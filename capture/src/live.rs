//! The live table: every allocation the program holds.
//!
//! Each allocation's record (24 bytes, [`Slot`]) lives in a slab, and the
//! block itself carries the record's index in a 4-byte footer just past
//! the bytes the program asked for. Freeing a block reads its footer (next
//! to memory the program just used) and clears the record by index: no
//! lookup in a table far bigger than the caches, which is what a hash table
//! keyed by address costs on every free. Records are reused last-freed
//! first, so a program that frees and allocates in turn keeps writing the
//! same few cache lines.
//!
//! A footer rather than a header: the block still starts where the
//! allocator put it, so tools that look at the process (valgrind's
//! memcheck, conservative collectors, our own scan) see the program's
//! pointers as pointers to the start of the block.
//!
//! 64 slab shards; a thread records into the shard of its registry index
//! (so its lock's cache line stays with it), frees go to the shard the
//! footer names. Slabs grow by doubling with `mremap`, which moves page
//! tables, not records.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{self, SpinLock};

pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// Footer = shard << INDEX_BITS | index within the shard.
const INDEX_BITS: u32 = 32 - SHARD_BITS;
const MAX_RECORDS_PER_SHARD: usize = (1 << INDEX_BITS) - 1;
/// The footer of a block that has no record (made while the thread was
/// inside the tracker, or dropped because the slabs could not grow).
pub const NO_RECORD: u32 = u32::MAX;
/// Bytes of footer after each block.
pub const FOOTER_BYTES: usize = size_of::<u32>();
/// The shard a footer names (shard 0 for [`NO_RECORD`]).
#[inline]
pub fn shard_of_footer(footer: u32) -> usize {
    if footer == NO_RECORD {
        0
    } else {
        (footer >> INDEX_BITS) as usize
    }
}

/// End of a shard's free list.
const NO_FREE: u64 = u64::MAX;

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

/// An [`Entry`] packed into three words. Address 0 marks a free slot,
/// whose second word links the shard's free list.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Slot {
    /// address (48) << 16 | thread (16). The address is shifted so the
    /// word never looks like a pointer: leak checkers and conservative
    /// collectors that scan the process (valgrind's memcheck, our own scan)
    /// must not see the tracker's records as holding every block.
    a: u64,
    /// size (48) | log2(align) (8) | flags (8)
    b: u64,
    /// sequence (40) | stack (24)
    c: u64,
}

// SAFETY: three integers; all-zero is a free slot and has no drop glue.
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
    fn is_free(&self) -> bool {
        self.a == 0
    }

    #[inline]
    pub fn size(&self) -> u64 {
        self.b & LOW48
    }

    #[inline]
    pub fn sequence(&self) -> u64 {
        self.c & ((1 << SEQUENCE_BITS) - 1)
    }

    pub fn unpack(&self) -> Entry {
        let thread = self.a & UNKNOWN_THREAD_BITS;
        Entry {
            address: self.address(),
            size: self.size(),
            sequence: self.sequence(),
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

    /// A free slot linking to `next`.
    fn free(next: u64) -> Slot {
        Slot {
            a: 0,
            b: next,
            c: 0,
        }
    }
}

/// Records a shard starts with: one page.
const FIRST_CAPACITY: usize = sys::PAGE / size_of::<Slot>();

/// One shard's slab and counters. Only touched under the shard's lock.
pub struct ShardTable {
    slots: *mut Slot,
    /// Slots the mapping holds.
    capacity: usize,
    /// Slots ever used: `slots[..used]` are records or free-list links;
    /// the pages past them were never touched.
    used: usize,
    /// First free slot below `used`, or `NO_FREE`.
    free_head: u64,
    pub count: u64,
    pub bytes: u64,
    pub total_allocations: u64,
    pub total_frees: u64,
}

// SAFETY: the mapping behind `slots` belongs to the table, which only the
// lock holder touches.
unsafe impl Send for ShardTable {}

impl ShardTable {
    const fn new() -> ShardTable {
        ShardTable {
            slots: core::ptr::null_mut(),
            capacity: 0,
            used: 0,
            free_head: NO_FREE,
            count: 0,
            bytes: 0,
            total_allocations: 0,
            total_frees: 0,
        }
    }

    fn slots(&self) -> &[Slot] {
        if self.slots.is_null() {
            return &[];
        }
        // SAFETY: `slots` points at `capacity` zero-initialized or written
        // slots in our mapping, and `used <= capacity`.
        unsafe { core::slice::from_raw_parts(self.slots, self.used) }
    }

    fn slots_mut(&mut self) -> &mut [Slot] {
        if self.slots.is_null() {
            return &mut [];
        }
        // SAFETY: as in `slots`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.slots, self.used) }
    }

    /// Doubles the mapping (or makes the first one). `false` when the
    /// kernel refuses or the shard is at its index limit.
    fn grow(&mut self) -> bool {
        let wanted = if self.capacity == 0 {
            FIRST_CAPACITY
        } else {
            (self.capacity * 2).min(MAX_RECORDS_PER_SHARD)
        };
        if wanted <= self.capacity {
            return false;
        }
        let bytes = sys::round_to_pages(wanted * size_of::<Slot>());
        let mapping = if self.slots.is_null() {
            sys::map_zeroed(bytes)
        } else {
            let old_bytes = sys::round_to_pages(self.capacity * size_of::<Slot>());
            // SAFETY: `slots` is our mapping of `old_bytes`; the lock holder
            // is its only user and reads it again only through the result.
            unsafe { sys::remap(self.slots.cast(), old_bytes, bytes) }
        };
        let Some(mapping) = mapping else {
            return false;
        };
        self.slots = mapping.cast();
        self.capacity = (bytes / size_of::<Slot>()).min(MAX_RECORDS_PER_SHARD);
        true
    }

    /// Stores a record; its index, or `None` when the shard is full.
    #[inline]
    fn insert(&mut self, slot: Slot) -> Option<u32> {
        let index = if self.free_head != NO_FREE {
            let index = self.free_head as usize;
            self.free_head = self.slots()[index].b;
            index
        } else {
            if self.used == self.capacity && !self.grow() {
                return None;
            }
            self.used += 1;
            self.used - 1
        };
        self.slots_mut()[index] = slot;
        self.count += 1;
        self.bytes += slot.size();
        Some(index as u32)
    }

    /// Removes the record at `index` if it is `address`'s.
    #[inline]
    fn remove(&mut self, index: usize, address: u64) -> Option<Slot> {
        let free_head = self.free_head;
        let slot = self.slots_mut().get_mut(index)?;
        if slot.is_free() || slot.address() != address {
            return None;
        }
        let removed = core::mem::replace(slot, Slot::free(free_head));
        self.free_head = index as u64;
        self.count -= 1;
        self.bytes -= removed.size();
        Some(removed)
    }

    /// The live slots, in slab order.
    pub fn live(&self) -> impl Iterator<Item = &Slot> {
        self.slots().iter().filter(|s| !s.is_free())
    }

    /// Memory the slab has touched (the untouched rest of the mapping
    /// costs no memory).
    pub fn used_bytes(&self) -> usize {
        sys::round_to_pages(self.used * size_of::<Slot>())
    }
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
    pub used_bytes: u64,
}

impl LiveTable {
    pub const fn new() -> LiveTable {
        LiveTable {
            shards: [const {
                Shard {
                    table: SpinLock::new(ShardTable::new()),
                    count: AtomicU64::new(0),
                    bytes: AtomicU64::new(0),
                }
            }; SHARDS],
            peak_bytes: AtomicU64::new(0),
            peak_count: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Records a live block, preferably in shard `home` (the allocating
    /// thread's); `counts_as_new` says whether it is a new allocation for
    /// the totals (a reallocation in place is not). Returns the footer for
    /// the block: where its record is, or [`NO_RECORD`] when it had to be
    /// dropped.
    #[inline]
    pub fn insert(&self, entry: &Entry, counts_as_new: bool, home: usize) -> u32 {
        let Some(slot) = Slot::pack(entry) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return NO_RECORD;
        };
        // The home shard, or when it cannot grow, the next ones.
        let mut footer = NO_RECORD;
        for step in 0..SHARDS {
            let index = (home + step) % SHARDS;
            let shard = &self.shards[index];
            let mut table = shard.table.lock();
            table.total_allocations += u64::from(counts_as_new && step == 0);
            if let Some(at) = table.insert(slot) {
                shard.publish(&table);
                footer = (index as u32) << INDEX_BITS | at;
                break;
            }
        }
        if footer == NO_RECORD {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return NO_RECORD;
        }
        let (inserts, bytes) = SINCE_SAMPLE.get();
        let (inserts, bytes) = (inserts + 1, bytes.saturating_add(entry.size));
        if inserts >= PEAK_SAMPLE_INSERTS || bytes >= PEAK_SAMPLE_BYTES {
            SINCE_SAMPLE.set((0, 0));
            self.sample_peak();
        } else {
            SINCE_SAMPLE.set((inserts, bytes));
        }
        footer
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

    /// Forgets the block at `address` whose footer is `footer`; returns
    /// what was recorded for it, `None` if it has no record (made while
    /// tracking was off for this thread, dropped, or a footer the program
    /// overwrote: the record must name the same address). `counts_as_free`
    /// says whether this is a deallocation for the totals (a reallocation
    /// is counted once its outcome is known).
    #[inline]
    pub fn remove(&self, footer: u32, address: u64, counts_as_free: bool) -> Option<Entry> {
        if footer == NO_RECORD {
            if counts_as_free {
                self.count_free(0);
            }
            return None;
        }
        let shard = &self.shards[(footer >> INDEX_BITS) as usize];
        let mut table = shard.table.lock();
        table.total_frees += u64::from(counts_as_free);
        let removed = table.remove((footer & ((1 << INDEX_BITS) - 1)) as usize, address)?;
        shard.publish(&table);
        Some(removed.unpack())
    }

    /// Counts a deallocation whose record was already removed (a
    /// reallocation that moved), in shard `home`.
    pub fn count_free(&self, home: usize) {
        self.shards[home % SHARDS].table.lock().total_frees += 1;
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
            totals.used_bytes += table.used_bytes() as u64;
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
        // address -> (entry, footer)
        let mut model = std::collections::HashMap::new();
        let mut state = 0x1234_5678_u64;
        for step in 0..200_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let address = 0x10_0000 + (state % 50_000) * 16;
            let home = (state >> 20) as usize % 3;
            match model.remove(&address) {
                None => {
                    let e = entry(address, step % 300 + 1);
                    let footer = table.insert(&e, true, home);
                    assert_ne!(footer, NO_RECORD);
                    assert_eq!(shard_of_footer(footer), home);
                    model.insert(address, (e, footer));
                }
                Some((e, footer)) => {
                    // A footer naming another block's record is refused.
                    assert_eq!(table.remove(footer, address + 16, true), None);
                    assert_eq!(table.remove(footer, address, true), Some(e));
                    assert_eq!(table.remove(footer, address, true), None);
                }
            }
        }
        let mut count = 0;
        let mut bytes = 0;
        for shard in &table.shards {
            let shard = shard.table.lock();
            for slot in shard.live() {
                let e = slot.unpack();
                assert_eq!(model.get(&e.address).map(|m| m.0), Some(e));
                count += 1;
                bytes += e.size;
            }
            assert_eq!(shard.count as usize, shard.live().count());
        }
        assert_eq!(count, model.len());
        assert_eq!(bytes, model.values().map(|m| m.0.size).sum::<u64>());
        let totals = table.totals();
        assert_eq!(totals.live_count as usize, model.len());
        assert_eq!(totals.live_bytes, bytes);
        // Freed records are reused: the slabs hold about the peak number of
        // live records (≤ 50 000 addresses), 24 bytes each, plus page rounding.
        let per_address = totals.used_bytes as f64 / 50_000.0;
        assert!(per_address < 25.0, "{per_address} bytes per address");
    }

    #[test]
    fn removing_without_a_record_changes_nothing() {
        let table = LiveTable::new();
        let footer = table.insert(&entry(0x1000, 10), true, 5);
        assert_eq!(table.remove(NO_RECORD, 0x1000, true), None);
        assert_eq!(table.remove(footer ^ 1, 0x1000, true), None);
        assert_eq!(table.remove(u32::MAX - 1, 0x1000, true), None);
        assert_eq!(table.totals().live_count, 1);
        assert_eq!(table.remove(footer, 0x1000, true).map(|e| e.size), Some(10));
        assert_eq!(table.totals().live_bytes, 0);
        assert_eq!(table.totals().total_frees, 4);
    }
}
