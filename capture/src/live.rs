//! The live table: every allocation the program holds, keyed by address.
//!
//! 64 shards, picked by a hash of the address, so two threads rarely want the
//! same lock. Each shard is a Robin Hood hash table with backward-shift
//! deletion in its own anonymous mapping, 24 bytes per slot, filled up to 95%
//! before it grows by 1.3×. Shards start at staggered sizes so they do not
//! all grow at once, which keeps the table's overhead near its average
//! (about 29 bytes per live allocation) instead of swinging with each
//! doubling.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::sys::{self, SpinLock};

pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();

/// Fields narrower than the record's, to fit 24 bytes per slot.
const ADDRESS_BITS: u32 = 48;
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
    /// address (48) | thread (16)
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
            a: entry.address | thread << ADDRESS_BITS,
            b: entry.size | align_log2 << SIZE_BITS | u64::from(entry.flags) << 56,
            c: (entry.sequence & ((1 << SEQUENCE_BITS) - 1)) | stack << SEQUENCE_BITS,
        })
    }

    #[inline]
    pub fn address(&self) -> u64 {
        self.a & LOW48
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
        let thread = self.a >> ADDRESS_BITS;
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

#[inline]
fn shard_of(address: u64) -> usize {
    (hash(address) >> (64 - SHARD_BITS)) as usize
}

/// One shard's table and counters. Only touched under the shard's lock.
pub struct ShardTable {
    slots: *mut Slot,
    capacity: usize,
    mapped_bytes: usize,
    pub count: u64,
    pub bytes: u64,
    pub total_allocations: u64,
    pub total_frees: u64,
}

// SAFETY: the mapping behind `slots` belongs to the table, which only the
// lock holder touches.
unsafe impl Send for ShardTable {}

/// Fill limit before growing, in percent.
const MAX_LOAD_PERCENT: usize = 95;

impl ShardTable {
    const fn new() -> ShardTable {
        ShardTable {
            slots: core::ptr::null_mut(),
            capacity: 0,
            mapped_bytes: 0,
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
        // SAFETY: `slots` points at `capacity` initialized slots in our
        // mapping (zeroed on creation, written only through this table).
        unsafe { core::slice::from_raw_parts(self.slots, self.capacity) }
    }

    fn slots_mut(&mut self) -> &mut [Slot] {
        if self.slots.is_null() {
            return &mut [];
        }
        // SAFETY: as in `slots`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.slots, self.capacity) }
    }

    #[inline]
    fn home(&self, address: u64) -> usize {
        // Multiply-shift maps the hash onto any capacity, not only powers
        // of two, which is what lets tables grow by 1.3×.
        let spread = hash(address) << SHARD_BITS;
        ((u128::from(spread) * self.capacity as u128) >> 64) as usize
    }

    #[inline]
    fn distance(&self, position: usize, address: u64) -> usize {
        let home = self.home(address);
        if position >= home {
            position - home
        } else {
            position + self.capacity - home
        }
    }

    /// Makes room for one more slot; `false` when the table is full and
    /// cannot grow.
    fn reserve_one(&mut self, first_capacity: usize) -> bool {
        let needed = self.count as usize + 1;
        if needed * 100 <= self.capacity * MAX_LOAD_PERCENT {
            return true;
        }
        let wanted = if self.capacity == 0 {
            first_capacity
        } else {
            self.capacity + self.capacity * 3 / 10
        };
        self.grow_to(wanted) || needed < self.capacity
    }

    fn grow_to(&mut self, wanted: usize) -> bool {
        let bytes = sys::round_to_pages(wanted * size_of::<Slot>());
        let Some(mapping) = sys::map_zeroed(bytes) else {
            return false;
        };
        let old_slots = self.slots;
        let old_capacity = self.capacity;
        let old_bytes = self.mapped_bytes;
        self.slots = mapping.cast();
        self.capacity = bytes / size_of::<Slot>();
        self.mapped_bytes = bytes;
        if !old_slots.is_null() {
            // SAFETY: the old mapping holds `old_capacity` slots and stays
            // mapped until the unmap below.
            let old = unsafe { core::slice::from_raw_parts(old_slots, old_capacity) };
            for slot in old.iter().filter(|s| !s.is_empty()) {
                self.place(*slot);
            }
            // SAFETY: the old mapping was made by `map_zeroed` with this size
            // and nothing refers to it after the copy.
            unsafe { sys::unmap(old_slots.cast(), old_bytes) };
        }
        true
    }

    /// Robin Hood insertion of a slot whose address is not in the table.
    /// The table has a free slot.
    fn place(&mut self, mut slot: Slot) {
        let capacity = self.capacity;
        let mut position = self.home(slot.address());
        let mut distance = 0;
        loop {
            let resident = self.slots()[position];
            if resident.is_empty() {
                self.slots_mut()[position] = slot;
                return;
            }
            let resident_distance = self.distance(position, resident.address());
            if resident_distance < distance {
                self.slots_mut()[position] = slot;
                slot = resident;
                distance = resident_distance;
            }
            position += 1;
            if position == capacity {
                position = 0;
            }
            distance += 1;
        }
    }

    fn find(&self, address: u64) -> Option<usize> {
        if self.capacity == 0 {
            return None;
        }
        let slots = self.slots();
        let mut position = self.home(address);
        let mut distance = 0;
        loop {
            let resident = *slots.get(position)?;
            if resident.is_empty() {
                return None;
            }
            if resident.address() == address {
                return Some(position);
            }
            // Robin Hood order: a resident closer to home than we would be
            // means the address is absent.
            if self.distance(position, resident.address()) < distance {
                return None;
            }
            position += 1;
            if position == self.capacity {
                position = 0;
            }
            distance += 1;
            if distance > self.capacity {
                return None;
            }
        }
    }

    /// Inserts, or replaces the record at the same address.
    fn insert(&mut self, slot: Slot, first_capacity: usize) -> Inserted {
        if let Some(position) = self.find(slot.address()) {
            // The inner allocator handed out a block we thought live: it
            // was freed behind our back (never by Rust code), so the new
            // block replaces it.
            let old = self.slots()[position];
            self.bytes = self.bytes - old.size() + slot.size();
            self.slots_mut()[position] = slot;
            return Inserted::Replaced {
                old_size: old.size(),
            };
        }
        if !self.reserve_one(first_capacity) {
            return Inserted::Full;
        }
        self.place(slot);
        self.count += 1;
        self.bytes += slot.size();
        Inserted::New
    }

    fn remove(&mut self, address: u64) -> Option<Slot> {
        let mut position = self.find(address)?;
        let removed = self.slots()[position];
        let capacity = self.capacity;
        // Backward-shift deletion: pull followers one step toward home
        // until one is already home or the run ends.
        loop {
            let next = if position + 1 == capacity {
                0
            } else {
                position + 1
            };
            let follower = self.slots()[next];
            if follower.is_empty() || self.distance(next, follower.address()) == 0 {
                self.slots_mut()[position] = Slot::default();
                break;
            }
            self.slots_mut()[position] = follower;
            position = next;
        }
        self.count -= 1;
        self.bytes -= removed.size();
        Some(removed)
    }

    /// The live slots, in table order.
    pub fn live(&self) -> impl Iterator<Item = &Slot> {
        self.slots().iter().filter(|s| !s.is_empty())
    }

    pub fn mapped_bytes(&self) -> usize {
        self.mapped_bytes
    }
}

enum Inserted {
    New,
    Replaced { old_size: u64 },
    Full,
}

/// A cache line per shard, so two threads working on neighbouring shards do
/// not share one.
#[repr(align(64))]
pub struct Shard(pub SpinLock<ShardTable>);

/// The table: shards plus the global totals that do not need a lock.
pub struct LiveTable {
    pub shards: [Shard; SHARDS],
    live_bytes: AtomicU64,
    live_count: AtomicU64,
    peak_bytes: AtomicU64,
    peak_count: AtomicU64,
    dropped: AtomicU64,
}

/// Totals read without locking; exact when no other thread is allocating.
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
            shards: [const { Shard(SpinLock::new(ShardTable::new())) }; SHARDS],
            live_bytes: AtomicU64::new(0),
            live_count: AtomicU64::new(0),
            peak_bytes: AtomicU64::new(0),
            peak_count: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Shard `index`'s first size: one to about 1.3 pages of slots, spread
    /// evenly so shards cross their growth points at different times.
    fn first_capacity(index: usize) -> usize {
        let base = sys::PAGE / size_of::<Slot>();
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
        let stored = {
            let mut shard = self.shards[index].0.lock();
            shard.total_allocations += u64::from(counts_as_new);
            shard.insert(slot, Self::first_capacity(index))
        };
        match stored {
            Inserted::New => {}
            Inserted::Replaced { old_size } => {
                self.live_bytes.fetch_sub(old_size, Ordering::Relaxed);
                self.live_count.fetch_sub(1, Ordering::Relaxed);
            }
            Inserted::Full => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let bytes = self.live_bytes.fetch_add(entry.size, Ordering::Relaxed) + entry.size;
        let count = self.live_count.fetch_add(1, Ordering::Relaxed) + 1;
        if bytes > self.peak_bytes.load(Ordering::Relaxed) {
            self.peak_bytes.fetch_max(bytes, Ordering::Relaxed);
        }
        if count > self.peak_count.load(Ordering::Relaxed) {
            self.peak_count.fetch_max(count, Ordering::Relaxed);
        }
        true
    }

    /// Forgets a block; returns what was recorded for it, `None` if it was
    /// not tracked (made while tracking was off for this thread, or dropped).
    /// `counts_as_free` says whether this is a deallocation for the totals
    /// (a reallocation is counted once its outcome is known).
    #[inline]
    pub fn remove(&self, address: u64, counts_as_free: bool) -> Option<Entry> {
        let removed = {
            let mut shard = self.shards[shard_of(address)].0.lock();
            shard.total_frees += u64::from(counts_as_free);
            shard.remove(address)
        }?;
        self.live_bytes.fetch_sub(removed.size(), Ordering::Relaxed);
        self.live_count.fetch_sub(1, Ordering::Relaxed);
        Some(removed.unpack())
    }

    /// Counts a deallocation whose record was already removed (a
    /// reallocation that moved).
    pub fn count_free(&self, address: u64) {
        self.shards[shard_of(address)].0.lock().total_frees += 1;
    }

    pub fn totals(&self) -> LiveTotals {
        let mut totals = LiveTotals {
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            live_count: self.live_count.load(Ordering::Relaxed),
            peak_bytes: self.peak_bytes.load(Ordering::Relaxed),
            peak_count: self.peak_count.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            ..LiveTotals::default()
        };
        for shard in &self.shards {
            let shard = shard.0.lock();
            totals.total_allocations += shard.total_allocations;
            totals.total_frees += shard.total_frees;
            totals.mapped_bytes += shard.mapped_bytes as u64;
        }
        totals
    }

    /// Global counters for a dump taken with every shard locked.
    pub fn peaks_and_dropped(&self) -> (u64, u64, u64) {
        (
            self.peak_bytes.load(Ordering::Relaxed),
            self.peak_count.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
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
            let shard = shard.0.lock();
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
