//! The live table: every allocation the program holds.
//!
//! Each allocation's record (24 bytes, [`Slot`]) lives in a slab, and the
//! block itself carries the record's index in a 4-byte footer just past
//! the bytes the program asked for. Freeing a block reads its footer (next
//! to memory the program just used) and frees the record by index: no
//! lookup in a table far bigger than the caches, which is what a hash table
//! keyed by address costs on every free.
//!
//! A free does not read the record either (for a long-lived block it is a
//! cache miss): a byte per record, 0 when free and else a hash of the
//! block's address, says whether the footer names a live record of this
//! block, and the size comes from the caller's layout. Freed indices go on
//! a stack and are reused last-freed first.
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
//!
//! After a spike the memory goes back: when most of a shard's records are
//! free, it is trimmed ([`ShardTable::trim`]). Records cannot move (blocks
//! name them by index), so a trim returns what is wholly free: the end of
//! the slab past the last live record, and every group of 512 records
//! (three pages) with no live record, whose indices leave the free stack
//! until the stack runs dry. New records then fill the lowest free ones
//! first, so what lives is packed low and the next trim finds more.

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
/// The record index within its shard that a footer names.
#[inline]
fn index_of_footer(footer: u32) -> usize {
    (footer & ((1 << INDEX_BITS) - 1)) as usize
}

/// The shard a footer names (shard 0 for [`NO_RECORD`]).
#[inline]
pub fn shard_of_footer(footer: u32) -> usize {
    if footer == NO_RECORD {
        0
    } else {
        (footer >> INDEX_BITS) as usize
    }
}

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

/// An [`Entry`] packed into three words.
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
}

/// Records a shard starts with: one page.
const FIRST_CAPACITY: usize = sys::PAGE / size_of::<Slot>();

/// Records per reclaim group: 512 records of 24 bytes are exactly three
/// 4 KiB pages, so a group that is wholly free gives back whole pages.
const GROUP_RECORDS: usize = 512;
const _: () = assert!((GROUP_RECORDS * size_of::<Slot>()).is_multiple_of(sys::PAGE));
/// Tags per 4 KiB page: the groups of eight consecutive reclaim groups.
const TAGS_PER_PAGE: usize = sys::PAGE;
const _: () = assert!(TAGS_PER_PAGE.is_multiple_of(GROUP_RECORDS));

/// Whether every group whose tags lie in tag page `page` is reclaimed.
fn tag_page_reclaimed(bitmap: &[u64], page: usize) -> bool {
    let groups_per_page = TAGS_PER_PAGE / GROUP_RECORDS;
    let first = page * groups_per_page;
    (first..first + groups_per_page).all(|group| bitmap[group / 64] >> (group % 64) & 1 != 0)
}

/// A shard is trimmed only with at least this many free records on its
/// free stack (smaller ones are not worth the pass), so up to this many
/// free records (~240 KB) may stay resident per shard after a spike.
const TRIM_MIN_FREE: usize = 1 << 13;

/// A byte per record that says whether it is live: 0 when free, else a
/// hash of the block's address (never 0). A free checks the footer's index
/// against it instead of reading the record, which for a long-lived block
/// is a cache miss; the tags are 24 times smaller than the records.
#[inline]
fn address_tag(address: u64) -> u8 {
    let mixed = ((address >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
    mixed | u8::from(mixed == 0)
}

/// An anonymous mapping of `T`s that grows by `mremap` (the pages move,
/// the contents stay) and is never freed: a shard keeps its memory.
struct Grown<T> {
    base: *mut T,
    bytes: usize,
}

impl<T: sys::Zeroable> Grown<T> {
    const fn new() -> Grown<T> {
        Grown {
            base: core::ptr::null_mut(),
            bytes: 0,
        }
    }

    /// Makes room for at least `len` elements; `false` when the kernel
    /// refuses (the old mapping is then unchanged).
    fn grow_to(&mut self, len: usize) -> bool {
        let wanted = sys::round_to_pages(len * size_of::<T>());
        if wanted <= self.bytes {
            return true;
        }
        let mapping = if self.base.is_null() {
            sys::map_zeroed(wanted)
        } else {
            // SAFETY: `base` is our mapping of `bytes`; its owner (a shard,
            // under its lock) reads it again only through the result.
            unsafe { sys::remap(self.base.cast(), self.bytes, wanted) }
        };
        let Some(mapping) = mapping else {
            return false;
        };
        self.base = mapping.cast();
        self.bytes = wanted;
        true
    }

    fn len(&self) -> usize {
        self.bytes / size_of::<T>()
    }

    fn as_slice(&self) -> &[T] {
        if self.base.is_null() {
            return &[];
        }
        // SAFETY: `base` points at `len()` zero-initialized or written
        // elements of our mapping, and `T` is valid when zeroed.
        unsafe { core::slice::from_raw_parts(self.base, self.len()) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        if self.base.is_null() {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.base, self.len()) }
    }
}

/// One shard's slab and counters. Only touched under the shard's lock.
///
/// A record is live while its tag is set. Freeing clears the tag and
/// pushes the index on a stack of free indices; the record itself is left
/// as it was, and the next insertion reuses the index last freed.
pub struct ShardTable {
    slots: Grown<Slot>,
    tags: Grown<u8>,
    free: Grown<u32>,
    /// A bit per group of [`GROUP_RECORDS`] records below `used`: set when
    /// the group is wholly free, its pages given back by a trim, and its
    /// indices not on the free stack.
    reclaimed: Grown<u64>,
    reclaimed_groups: usize,
    /// Records taken out by [`detach`](Self::detach) and not yet given
    /// back: their indices are reserved though their tags are 0, so no trim
    /// may run meanwhile.
    detached: usize,
    /// Frees since the last trim, and how many the next one waits for: a
    /// sixteenth of the records the last trim read, so trims cost at most
    /// about sixteen tag reads (a quarter of a cache line) per free.
    frees_since_trim: usize,
    next_trim: usize,
    /// Records the shard can hold: all three mappings have room for them.
    capacity: usize,
    /// Records in use or free: `slots[..used]` are records, live or free;
    /// past them every tag is 0 (never touched, or given back by a trim).
    used: usize,
    /// Free indices on the stack, and the most there ever were.
    free_count: usize,
    free_peak: usize,
    pub count: u64,
    pub bytes: u64,
    pub total_allocations: u64,
    pub total_frees: u64,
}

// SAFETY: the mappings belong to the table, which only the lock holder
// touches.
unsafe impl Send for ShardTable {}

impl ShardTable {
    const fn new() -> ShardTable {
        ShardTable {
            slots: Grown::new(),
            tags: Grown::new(),
            free: Grown::new(),
            reclaimed: Grown::new(),
            reclaimed_groups: 0,
            detached: 0,
            frees_since_trim: 0,
            next_trim: TRIM_MIN_FREE,
            capacity: 0,
            used: 0,
            free_count: 0,
            free_peak: 0,
            count: 0,
            bytes: 0,
            total_allocations: 0,
            total_frees: 0,
        }
    }

    /// Doubles the capacity (or makes the first mappings). `false` when the
    /// kernel refuses or the shard is at its index limit.
    fn grow(&mut self) -> bool {
        let wanted = if self.capacity == 0 {
            FIRST_CAPACITY
        } else {
            (self.capacity * 2).min(MAX_RECORDS_PER_SHARD)
        };
        if wanted <= self.capacity
            || !self.slots.grow_to(wanted)
            || !self.tags.grow_to(wanted)
            || !self.free.grow_to(wanted)
            || !self.reclaimed.grow_to(wanted.div_ceil(GROUP_RECORDS * 64))
        {
            return false;
        }
        self.capacity = wanted;
        true
    }

    /// Stores a record; its index, or `None` when the shard is full.
    #[inline]
    fn insert(&mut self, slot: Slot) -> Option<u32> {
        let index = if self.free_count > 0 || self.refill() {
            self.free_count -= 1;
            self.free.as_slice()[self.free_count] as usize
        } else {
            if self.used == self.capacity && !self.grow() {
                return None;
            }
            self.used += 1;
            self.used - 1
        };
        self.slots.as_mut_slice()[index] = slot;
        self.tags.as_mut_slice()[index] = address_tag(slot.address());
        self.count += 1;
        self.bytes += slot.size();
        Some(index as u32)
    }

    /// Frees the record at `index` if it is live and tagged for `address`;
    /// `size` is the block's (the caller knows it: reading the record to
    /// learn it is what the tags avoid).
    #[inline]
    fn remove(&mut self, index: usize, address: u64, size: u64) -> bool {
        if !self.detach_tagged(index, address, size) {
            return false;
        }
        self.frees_since_trim += 1;
        self.release(index);
        // The next insertion writes this record: start fetching its line
        // now rather than stall on it then.
        sys::prefetch(&self.slots.as_slice()[index]);
        true
    }

    /// Takes the live record at `index` out of the table for the length
    /// of a reallocation of the block at `address` of `size` bytes: no
    /// longer live (a dump neither lists nor scans it), but its index stays
    /// reserved for [`attach`](Self::attach). A reallocation is rarer than
    /// a free and its record usually recent, so this one checks the
    /// record's address too, not just the tag.
    #[inline]
    fn detach(&mut self, index: usize, address: u64, size: u64) -> bool {
        let recorded = self.slots.as_slice()[..self.used]
            .get(index)
            .map(Slot::address);
        let detached = recorded == Some(address) && self.detach_tagged(index, address, size);
        self.detached += usize::from(detached);
        detached
    }

    /// The size in the record at `index` if that record is live, tagged for
    /// `address` and records `address`.
    #[inline]
    fn recorded_size(&self, index: usize, address: u64) -> Option<u64> {
        let tag = *self.tags.as_slice()[..self.used].get(index)?;
        if tag == 0 || tag != address_tag(address) {
            return None;
        }
        let slot = self.slots.as_slice()[index];
        (slot.address() == address).then(|| slot.size())
    }

    /// Clears the tag of the record at `index` if it is live and tagged for
    /// `address`, and takes its `size` bytes off the counts.
    #[inline]
    fn detach_tagged(&mut self, index: usize, address: u64, size: u64) -> bool {
        let Some(tag) = self.tags.as_mut_slice()[..self.used].get_mut(index) else {
            return false;
        };
        if *tag == 0 || *tag != address_tag(address) {
            return false;
        }
        *tag = 0;
        self.count -= 1;
        // A footer the program overwrote with another live record's index
        // (and the same tag) would make this not the record's size: never
        // let that wrap.
        self.bytes = self.bytes.saturating_sub(size);
        true
    }

    /// Makes the detached record at `index` live again as `slot` (the old
    /// block's own record when the reallocation failed).
    #[inline]
    fn attach(&mut self, index: usize, slot: Slot) {
        self.detached = self.detached.saturating_sub(1);
        self.slots.as_mut_slice()[index] = slot;
        self.tags.as_mut_slice()[index] = address_tag(slot.address());
        self.count += 1;
        self.bytes += slot.size();
    }

    /// Puts the detached record at `index` on the free stack.
    #[inline]
    fn release(&mut self, index: usize) {
        let free_count = self.free_count;
        self.free.as_mut_slice()[free_count] = index as u32;
        self.free_count += 1;
        self.free_peak = self.free_peak.max(self.free_count);
    }

    /// Puts a detached record's index on the free stack (its reallocation
    /// made a block that cannot be recorded).
    fn release_detached(&mut self, index: usize) {
        self.detached = self.detached.saturating_sub(1);
        self.release(index);
    }

    /// Takes the lowest reclaimed group back into use: its indices go on
    /// the free stack, lowest on top. `false` when there is none.
    #[cold]
    fn refill(&mut self) -> bool {
        if self.reclaimed_groups == 0 {
            return false;
        }
        let bitmap = self.reclaimed.as_mut_slice();
        let Some((word, bits)) = bitmap.iter_mut().enumerate().find(|(_, bits)| **bits != 0) else {
            return false;
        };
        let group = word * 64 + bits.trailing_zeros() as usize;
        *bits &= *bits - 1;
        self.reclaimed_groups -= 1;
        let free = self.free.as_mut_slice();
        for (slot, index) in free[self.free_count..self.free_count + GROUP_RECORDS]
            .iter_mut()
            .zip((group * GROUP_RECORDS..(group + 1) * GROUP_RECORDS).rev())
        {
            *slot = index as u32;
        }
        self.free_count += GROUP_RECORDS;
        self.free_peak = self.free_peak.max(self.free_count);
        true
    }

    /// Whether enough of the shard is free for a [`trim`](Self::trim) to
    /// pay: most records free, and enough frees since the last trim to pay
    /// for the records it read, or the shard just became empty after at
    /// least [`TRIM_MIN_FREE`] frees (the end of a spike: everything goes
    /// back); and no reallocation under way.
    #[inline]
    fn trim_due(&self) -> bool {
        let paid = self.frees_since_trim >= self.next_trim
            || (self.count == 0 && self.frees_since_trim >= TRIM_MIN_FREE);
        paid && self.free_count / 3 > self.count as usize && self.detached == 0
    }

    /// Gives the memory of wholly free records back to the kernel: the
    /// slab past the last live record (`used` shrinks to it) and every
    /// wholly free group of [`GROUP_RECORDS`] records below it (marked in
    /// `reclaimed`). The free stack is rebuilt from the tags with the free
    /// records of the other groups only, lowest index on top. Records,
    /// tags and live blocks' footers are unchanged.
    #[cold]
    fn trim(&mut self) {
        let old_used = self.used;
        let tags = &self.tags.as_slice()[..old_used];
        let bitmap = self.reclaimed.as_mut_slice();
        let reclaimed = |bitmap: &[u64], group: usize| bitmap[group / 64] >> (group % 64) & 1 != 0;
        // Only groups not reclaimed before are read (those are all free),
        // so a trim costs in proportion to the live and stacked records,
        // which the frees since the last trim pay for.
        let groups = old_used.div_ceil(GROUP_RECORDS);
        let group_records = |group: usize, end: usize| {
            group * GROUP_RECORDS..((group + 1) * GROUP_RECORDS).min(end)
        };
        let high = (0..groups)
            .rev()
            .filter(|&group| !reclaimed(bitmap, group))
            .find_map(|group| {
                let records = group_records(group, old_used);
                let last = tags[records.clone()].iter().rposition(|&tag| tag != 0)?;
                Some(records.start + last + 1)
            })
            .unwrap_or(0);
        let kept_groups = high.div_ceil(GROUP_RECORDS);
        for group in kept_groups..groups {
            bitmap[group / 64] &= !(1 << (group % 64));
        }
        let free = self.free.as_mut_slice();
        let (mut free_count, mut reclaimed_groups) = (0, 0);
        let mut records_read = old_used - high;
        // A run of groups reclaimed by this trim, `run.0 .. run.1`, whose
        // pages go back to the kernel in one call.
        let mut run = (0, 0);
        for group in (0..kept_groups).rev() {
            if reclaimed(bitmap, group) {
                reclaimed_groups += 1;
                continue;
            }
            let records = group_records(group, high);
            records_read += records.len();
            let group_tags = &tags[records.clone()];
            if group_tags.len() == GROUP_RECORDS && group_tags.iter().all(|&tag| tag == 0) {
                bitmap[group / 64] |= 1 << (group % 64);
                reclaimed_groups += 1;
                if run.0 != records.end {
                    discard_records(&self.slots, &self.tags, run.0, run.1);
                    run.1 = records.end;
                }
                run.0 = records.start;
                continue;
            }
            for index in records.rev() {
                if tags[index] == 0 {
                    free[free_count] = index as u32;
                    free_count += 1;
                }
            }
        }
        discard_records(&self.slots, &self.tags, run.0, run.1);
        discard_records(&self.slots, &self.tags, high, old_used);
        if !self.free.base.is_null() {
            // SAFETY: the free stack's mapping holds `capacity >= free_peak`
            // entries; those past `free_count` are no longer on the stack.
            unsafe {
                sys::discard(
                    self.free.base.add(free_count).cast(),
                    (self.free_peak.saturating_sub(free_count)) * size_of::<u32>(),
                );
            }
        }
        self.used = high;
        self.free_count = free_count;
        self.free_peak = free_count;
        self.reclaimed_groups = reclaimed_groups;
        self.discard_reclaimed_tags();
        self.frees_since_trim = 0;
        self.next_trim = TRIM_MIN_FREE.max(records_read / 16);
    }

    /// Gives back every page of tags whose groups are all reclaimed (runs
    /// reclaimed by different trims included), in one call per run.
    fn discard_reclaimed_tags(&mut self) {
        let bitmap = self.reclaimed.as_slice();
        let pages = self.used / TAGS_PER_PAGE;
        let mut page = 0;
        while page < pages {
            if !tag_page_reclaimed(bitmap, page) {
                page += 1;
                continue;
            }
            let first = page;
            while page < pages && tag_page_reclaimed(bitmap, page) {
                page += 1;
            }
            if !self.tags.base.is_null() {
                // Every record these tag pages describe is in a reclaimed
                // group: free, reserved by nobody, its tag the 0 that a
                // discarded page reads as.
                // SAFETY: the pages lie below `used`, in the tag mapping.
                unsafe {
                    sys::discard(
                        self.tags.base.add(first * TAGS_PER_PAGE),
                        (page - first) * TAGS_PER_PAGE,
                    );
                }
            }
        }
    }

    /// The live slots, in slab order.
    pub fn live(&self) -> impl Iterator<Item = &Slot> {
        let slots = &self.slots.as_slice()[..self.used];
        let tags = &self.tags.as_slice()[..self.used];
        slots
            .iter()
            .zip(tags)
            .filter(|(_, tag)| **tag != 0)
            .map(|(slot, _)| slot)
    }

    /// Memory the shard has touched (the untouched rest of the mappings
    /// costs no memory).
    pub fn used_bytes(&self) -> usize {
        let resident = self.used - self.reclaimed_groups * GROUP_RECORDS;
        let bitmap = self.reclaimed.as_slice();
        let tag_pages = self.used.div_ceil(TAGS_PER_PAGE);
        let discarded_tag_pages = (0..self.used / TAGS_PER_PAGE)
            .filter(|&page| tag_page_reclaimed(bitmap, page))
            .count();
        sys::round_to_pages(resident * size_of::<Slot>())
            + (tag_pages - discarded_tag_pages) * sys::PAGE
            + sys::round_to_pages(self.free_peak * size_of::<u32>())
            + sys::round_to_pages(self.used.div_ceil(GROUP_RECORDS * 64) * size_of::<u64>())
    }
}

/// Gives back the pages of a shard's records `from..to`, all free and none
/// on the free stack: they read as zeros (free tags) when touched again.
fn discard_records(slots: &Grown<Slot>, tags: &Grown<u8>, from: usize, to: usize) {
    if from >= to || slots.base.is_null() || tags.base.is_null() {
        return;
    }
    // No live or reserved record is in `from..to` (all tags are 0, no
    // reallocation is under way, none of these indices is on the free
    // stack), so nothing needs their contents.
    // SAFETY: `from..to` lies in the slab and tag mappings (below `used`).
    unsafe {
        sys::discard(slots.base.add(from).cast(), (to - from) * size_of::<Slot>());
        sys::discard(tags.base.add(from), to - from);
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

/// A record taken out of the table during a reallocation
/// ([`LiveTable::detach`]); it must be given back with
/// [`LiveTable::restore`] or [`LiveTable::reattach`].
#[must_use]
pub struct Detached {
    footer: u32,
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
    /// Of `live_bytes`, the bytes of blocks in the presence map.
    pub mapped_bytes: u64,
    /// Of `live_count`, the blocks in the presence map (no footer).
    pub mapped_count: u64,
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
        self.note_growth(entry.size);
        footer
    }

    /// Counts a record stored or grown by `bytes` toward this thread's next
    /// sample of the peak.
    #[inline]
    fn note_growth(&self, bytes: u64) {
        let (inserts, since) = SINCE_SAMPLE.get();
        let (inserts, since) = (inserts + 1, since.saturating_add(bytes));
        if inserts >= PEAK_SAMPLE_INSERTS || since >= PEAK_SAMPLE_BYTES {
            SINCE_SAMPLE.set((0, 0));
            let (_, live_bytes) = self.sample_peak();
            crate::triggers::note_live_bytes(live_bytes);
        } else {
            SINCE_SAMPLE.set((inserts, since));
        }
    }

    /// Samples the peak now, and tells the growth trigger (the presence
    /// map's counters do so as they fold: see `presence::fold`).
    pub fn sample_peak_now(&self) {
        let (_, live_bytes) = self.sample_peak();
        crate::triggers::note_live_bytes(live_bytes);
    }

    /// Raises the peaks to the current totals (read without locks).
    fn sample_peak(&self) -> (u64, u64) {
        // The presence map's blocks as its threads last folded them: a few
        // loads, whatever the number of threads.
        let (count, bytes) =
            self.shards
                .iter()
                .fold(crate::presence::folded_live(), |(c, b), shard| {
                    (
                        c + shard.count.load(Ordering::Relaxed),
                        b + shard.bytes.load(Ordering::Relaxed),
                    )
                });
        crate::presence::raise(&self.peak_bytes, bytes);
        crate::presence::raise(&self.peak_count, count);
        (count, bytes)
    }

    /// Forgets the block at `address` of `size` bytes whose footer is
    /// `footer`. Nothing changes if it has no record: made while tracking
    /// was off for this thread, dropped, or a footer the program overwrote
    /// (the record must be live and tagged for this address).
    #[inline]
    pub fn remove(&self, footer: u32, address: u64, size: u64) {
        let shard = &self.shards[shard_of_footer(footer)];
        let mut table = shard.table.lock();
        table.total_frees += 1;
        shard.take_out(&mut table, footer, address, Some(size));
    }

    /// [`remove`](Self::remove) for a block whose size the caller does not
    /// know (a C `free`): the size is read from the record, which must be
    /// live, tagged for `address` and record that very address.
    #[inline]
    pub fn remove_recorded(&self, footer: u32, address: u64) {
        let shard = &self.shards[shard_of_footer(footer)];
        let mut table = shard.table.lock();
        table.total_frees += 1;
        shard.take_out(&mut table, footer, address, None);
    }

    /// [`remove`](Self::remove) (or with `size` `None`,
    /// [`remove_recorded`](Self::remove_recorded)) by the thread that holds
    /// every shard's lock for a `fork` (see `fork`), which a
    /// `pthread_atfork` handler registered before the tracker's calls: the
    /// lock is this thread's already. The free counts only if the block
    /// had a record (its allocation counted; those made in that window are
    /// not tracked).
    ///
    /// # Safety
    /// The calling thread holds every shard's lock, taken with
    /// `lock_forever` and not yet released, and no guard of any.
    #[cold]
    pub unsafe fn remove_holding_locks(&self, footer: u32, address: u64, size: Option<u64>) {
        let shard = &self.shards[shard_of_footer(footer)];
        // SAFETY: per the contract, the lock is this thread's and nothing
        // else refers to the table.
        let mut table = unsafe { shard.table.assume_held() };
        if shard.take_out(&mut table, footer, address, size) {
            table.total_frees += 1;
        }
    }

    /// Whether `footer` names the live record of the block at `address`
    /// (a C block's last 4 usable bytes are then not the program's).
    /// `None` when the shard's lock is held and `may_wait` is false (the
    /// caller may have interrupted its own thread holding it).
    pub fn is_recorded(&self, footer: u32, address: u64, may_wait: bool) -> Option<bool> {
        if footer == NO_RECORD {
            return Some(false);
        }
        let shard = &self.shards[shard_of_footer(footer)].table;
        let table = if may_wait {
            shard.lock()
        } else {
            shard.try_lock()?
        };
        Some(
            table
                .recorded_size(index_of_footer(footer), address)
                .is_some(),
        )
    }

    /// [`is_recorded`](Self::is_recorded) by the thread that holds every
    /// shard's lock for a `fork` (see
    /// [`remove_holding_locks`](Self::remove_holding_locks)).
    ///
    /// # Safety
    /// As for `remove_holding_locks`.
    #[cold]
    pub unsafe fn is_recorded_holding_locks(&self, footer: u32, address: u64) -> bool {
        if footer == NO_RECORD {
            return false;
        }
        // SAFETY: per the contract, the lock is this thread's and nothing
        // else refers to the table.
        let table = unsafe { self.shards[shard_of_footer(footer)].table.assume_held() };
        table
            .recorded_size(index_of_footer(footer), address)
            .is_some()
    }

    /// [`detach`](Self::detach) for a block whose size the caller does not
    /// know (a C `realloc`).
    #[inline]
    pub fn detach_recorded(&self, footer: u32, address: u64) -> Option<Detached> {
        if footer == NO_RECORD {
            return None;
        }
        let shard = &self.shards[shard_of_footer(footer)];
        let mut table = shard.table.lock();
        let index = index_of_footer(footer);
        let size = table.recorded_size(index, address)?;
        if !table.detach(index, address, size) {
            return None;
        }
        shard.publish(&table);
        Some(Detached { footer })
    }

    /// Takes the record of the block at `address` of `size` bytes, whose
    /// footer is `footer`, out of the table while the block is reallocated
    /// (see [`ShardTable::detach`]): from here until [`reattach`]
    /// (Self::reattach) or [`restore`](Self::restore), no dump lists or
    /// scans the block, so the inner allocator may free or move it while a
    /// dump runs. `None` when the block has no record.
    #[inline]
    pub fn detach(&self, footer: u32, address: u64, size: u64) -> Option<Detached> {
        if footer == NO_RECORD {
            return None;
        }
        let shard = &self.shards[shard_of_footer(footer)];
        let mut table = shard.table.lock();
        if !table.detach(index_of_footer(footer), address, size) {
            return None;
        }
        shard.publish(&table);
        Some(Detached { footer })
    }

    /// The reallocation failed: the old block's record is live again,
    /// unchanged.
    pub fn restore(&self, detached: Detached) {
        let shard = &self.shards[shard_of_footer(detached.footer)];
        let mut table = shard.table.lock();
        let index = index_of_footer(detached.footer);
        let slot = table.slots.as_slice()[index];
        table.attach(index, slot);
        shard.publish(&table);
    }

    /// The reallocation made `entry` (moved or not) out of the block whose
    /// record was detached (or had none, `None`): records it, reusing the
    /// detached record's index, and returns the new block's footer. `moved`
    /// counts it as a free and a new allocation.
    #[inline]
    pub fn reattach(
        &self,
        detached: Option<Detached>,
        entry: &Entry,
        moved: bool,
        home: usize,
    ) -> u32 {
        let Some(Detached { footer }) = detached else {
            if moved {
                self.count_free(home);
            }
            return self.insert(entry, moved, home);
        };
        let shard = &self.shards[shard_of_footer(footer)];
        let mut table = shard.table.lock();
        table.total_allocations += u64::from(moved);
        table.total_frees += u64::from(moved);
        let Some(slot) = Slot::pack(entry) else {
            table.release_detached(index_of_footer(footer));
            drop(table);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return NO_RECORD;
        };
        table.attach(index_of_footer(footer), slot);
        shard.publish(&table);
        drop(table);
        self.note_growth(entry.size);
        footer
    }

    /// The reallocated block leaves the table (production mode's presence
    /// map takes it): its detached record is freed; `moved` counts the old
    /// block as freed (the map counts the new one).
    pub fn release(&self, detached: Detached, moved: bool) {
        let shard = &self.shards[shard_of_footer(detached.footer)];
        let mut table = shard.table.lock();
        table.total_frees += u64::from(moved);
        table.release_detached(index_of_footer(detached.footer));
        shard.publish(&table);
    }

    /// In a child of `fork`: a record detached by another thread of the
    /// parent (mid-reallocation) will never be given back here, so it no
    /// longer holds trims off; its index is lost to this process.
    pub fn forget_detached_in_child(&self) {
        for shard in &self.shards {
            shard.table.lock().detached = 0;
        }
    }

    /// Counts a block that gets no record though it is tracked (see
    /// `Placed::Dropped`): a dump then says records were dropped.
    #[cold]
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a deallocation whose record was already removed (a
    /// reallocation that moved), in shard `home`.
    pub fn count_free(&self, home: usize) {
        self.shards[home % SHARDS].table.lock().total_frees += 1;
    }

    /// Totals, adding up the shards under their locks one at a time.
    pub fn totals(&self) -> LiveTotals {
        // Production mode's blocks without records are counted apart.
        let mapped = crate::presence::totals();
        let mut totals = LiveTotals {
            dropped: self.dropped.load(Ordering::Relaxed),
            live_bytes: mapped.live_bytes,
            live_count: mapped.live_count,
            total_allocations: mapped.allocations,
            total_frees: mapped.frees,
            mapped_bytes: mapped.live_bytes,
            mapped_count: mapped.live_count,
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

    /// Takes the record `footer` names out of `table` (this shard's,
    /// locked) if it is the live record of the block at `address`: of
    /// `size` bytes, else of the size it records, checking its address
    /// too. Whether it was.
    #[inline]
    fn take_out(
        &self,
        table: &mut ShardTable,
        footer: u32,
        address: u64,
        size: Option<u64>,
    ) -> bool {
        if footer == NO_RECORD {
            return false;
        }
        let index = index_of_footer(footer);
        let Some(size) = size.or_else(|| table.recorded_size(index, address)) else {
            return false;
        };
        if !table.remove(index, address, size) {
            return false;
        }
        if table.trim_due() {
            table.trim();
        }
        self.publish(table);
        true
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

    /// What the table holds, with the size of each live record, checked
    /// against its own counters.
    fn live_entries(table: &LiveTable) -> Vec<Entry> {
        let mut all = Vec::new();
        for shard in &table.shards {
            let shard = shard.table.lock();
            let before = all.len();
            all.extend(shard.live().map(Slot::unpack));
            assert_eq!(shard.count as usize, all.len() - before);
            let bytes: u64 = all[before..].iter().map(|e| e.size).sum();
            assert_eq!(shard.bytes, bytes);
        }
        all
    }

    #[test]
    fn table_matches_a_model_under_random_inserts_removes_and_reallocations() {
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
                Some((e, footer)) if step % 5 == 0 => {
                    // Reallocated, in place or moved to a free address.
                    let to = if step % 2 == 0 { address } else { address + 8 };
                    if to != address && model.contains_key(&to) {
                        model.insert(address, (e, footer));
                        continue;
                    }
                    let detached = table.detach(footer, address, e.size);
                    assert!(detached.is_some());
                    // A second detach (a footer read twice) finds nothing.
                    assert!(table.detach(footer, address, e.size).is_none());
                    let grown = entry(to, e.size + 16);
                    let again = table.reattach(detached, &grown, to != address, home);
                    assert_eq!(again, footer, "the record is reused in place");
                    model.insert(to, (grown, again));
                }
                Some((e, footer)) => {
                    if address_tag(address + 16) != address_tag(address) {
                        // A footer naming another block's record is refused.
                        table.remove(footer, address + 16, e.size);
                    }
                    table.remove(footer, address, e.size);
                    // Freeing twice changes nothing.
                    table.remove(footer, address, e.size);
                }
            }
        }
        let mut live = live_entries(&table);
        let mut expected: Vec<Entry> = model.values().map(|m| m.0).collect();
        live.sort_by_key(|e| e.address);
        expected.sort_by_key(|e| e.address);
        assert_eq!(live, expected);
        let totals = table.totals();
        assert_eq!(totals.live_count as usize, model.len());
        assert_eq!(
            totals.live_bytes,
            expected.iter().map(|e| e.size).sum::<u64>()
        );
        // Freed records are reused: the slabs hold about the peak number of
        // live records (at most 50 000 addresses plus moved ones), 24 bytes
        // each plus a tag byte and the free stack's high-water mark.
        let per_address = totals.used_bytes as f64 / 50_000.0;
        assert!(per_address < 32.0, "{per_address} bytes per address");
    }

    #[test]
    fn after_a_spike_the_memory_of_free_records_goes_back() {
        let table = LiveTable::new();
        let spike = 300_000u64;
        let footers: Vec<u32> = (0..spike)
            .map(|i| table.insert(&entry(0x10_0000 + i * 16, 24), true, 0))
            .collect();
        let at_peak = table.totals().used_bytes;
        assert!(at_peak >= spike * 25, "{at_peak} bytes at the peak");
        // Three survivors: the first record, one in the middle, one near
        // the end (which keeps the slab's end where it was).
        let survivors = [0u64, 150_000, 299_990];
        for i in 0..spike {
            if !survivors.contains(&i) {
                table.remove(footers[i as usize], 0x10_0000 + i * 16, 24);
            }
        }
        let trimmed = table.totals();
        assert_eq!(trimmed.live_count, 3);
        // Three groups of 512 records stay (three pages of records each),
        // with their tags, free indices and the group bitmap, and at most
        // the free records that were not worth a last trim: against
        // ~8.7 MB at the peak.
        let bound = 3 * GROUP_RECORDS * 29 + (spike as usize / 16) * 29 + 8 * 4096;
        assert!(
            trimmed.used_bytes <= bound as u64,
            "{} bytes after the spike",
            trimmed.used_bytes
        );
        let expected: Vec<Entry> = survivors
            .iter()
            .map(|&i| entry(0x10_0000 + i * 16, 24))
            .collect();
        let mut live = live_entries(&table);
        live.sort_by_key(|e| e.address);
        assert_eq!(live, expected);
        // New records reuse free indices (the slab does not grow past its
        // old end), never a survivor's, and the survivors' footers still
        // name their records.
        let mut fresh = std::collections::HashSet::new();
        for i in 0..100_000u64 {
            let footer = table.insert(&entry(0x100_0000 + i * 16, 8), true, 0);
            assert!(fresh.insert(footer), "footer {footer} handed out twice");
            for &s in &survivors {
                assert_ne!(footer, footers[s as usize]);
            }
        }
        assert!(fresh.iter().all(|&footer| u64::from(footer) < spike));
        for &s in &survivors {
            table.remove(footers[s as usize], 0x10_0000 + s * 16, 24);
        }
        let totals = table.totals();
        assert_eq!((totals.live_count, totals.live_bytes), (100_000, 800_000));
    }

    #[test]
    fn a_spike_freed_in_random_order_is_given_back_too() {
        let table = LiveTable::new();
        let spike = 300_000u64;
        let mut blocks: Vec<(u64, u32)> = (0..spike)
            .map(|i| {
                let address = 0x10_0000 + i * 16;
                (address, table.insert(&entry(address, 24), true, 0))
            })
            .collect();
        // Fisher-Yates with a fixed xorshift.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for i in (1..blocks.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            blocks.swap(i, (state % (i as u64 + 1)) as usize);
        }
        for &(address, footer) in &blocks {
            table.remove(footer, address, 24);
        }
        let totals = table.totals();
        assert_eq!(totals.live_count, 0);
        // Nothing: the last free emptied the shard, which trims it whole.
        let bound = 2 * 4096;
        assert!(
            totals.used_bytes <= bound as u64,
            "{} bytes after freeing everything",
            totals.used_bytes
        );
    }

    #[test]
    fn trimmed_tables_match_a_model_through_spikes_and_reallocations() {
        let table = LiveTable::new();
        let mut model: std::collections::HashMap<u64, (Entry, u32)> =
            std::collections::HashMap::new();
        let mut state = 0x9876_5432_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut address = 0x10_0000u64;
        for round in 0..4u64 {
            // Grow to a spike...
            for _ in 0..(150_000 + round * 20_000) {
                address += 16;
                let e = entry(address, next() % 200 + 1);
                let footer = table.insert(&e, true, 1);
                model.insert(address, (e, footer));
            }
            // ...then free most of it, in random order, reallocating some.
            let mut addresses: Vec<u64> = model.keys().copied().collect();
            addresses.sort_unstable();
            for &at in &addresses {
                let roll = next() % 100;
                let (e, footer) = model[&at];
                if roll < 3 {
                    let detached = table.detach(footer, at, e.size);
                    assert!(detached.is_some());
                    let grown = entry(at, e.size + 8);
                    let again = table.reattach(detached, &grown, false, 1);
                    model.insert(at, (grown, again));
                } else if roll < 96 {
                    table.remove(footer, at, e.size);
                    model.remove(&at);
                }
            }
            let mut live = live_entries(&table);
            let mut expected: Vec<Entry> = model.values().map(|m| m.0).collect();
            live.sort_by_key(|e| e.address);
            expected.sort_by_key(|e| e.address);
            assert_eq!(live, expected, "round {round}");
            let totals = table.totals();
            assert_eq!(totals.live_count as usize, model.len());
        }
    }

    #[test]
    fn removing_without_a_record_changes_nothing() {
        let table = LiveTable::new();
        let footer = table.insert(&entry(0x1000, 10), true, 5);
        table.remove(NO_RECORD, 0x1000, 10);
        table.remove(footer + 1, 0x1000, 10);
        table.remove(u32::MAX - 1, 0x1000, 10);
        assert_eq!(table.totals().live_count, 1);
        table.remove(footer, 0x1000, 10);
        assert_eq!(table.totals().live_bytes, 0);
        assert_eq!(table.totals().live_count, 0);
        assert_eq!(table.totals().total_frees, 4);
        assert!(live_entries(&table).is_empty());
    }

    #[test]
    fn a_reallocation_without_a_usable_record_is_recorded_as_new() {
        let table = LiveTable::new();
        assert!(table.detach(NO_RECORD, 0x1000, 32).is_none());
        let moved = entry(0x2000, 64);
        let footer = table.reattach(None, &moved, true, 7);
        assert_eq!(shard_of_footer(footer), 7);
        assert_eq!(live_entries(&table), [moved]);
        let totals = table.totals();
        assert_eq!((totals.total_allocations, totals.total_frees), (1, 1));
        // A footer naming this record, but for another address.
        assert!(table.detach(footer, 0x2010, 64).is_none());
        assert_eq!(live_entries(&table), [moved]);
    }

    #[test]
    fn a_detached_record_is_not_live_until_restored_or_reattached() {
        let table = LiveTable::new();
        let old = entry(0x1000, 32);
        let footer = table.insert(&old, true, 2);
        let detached = table.detach(footer, 0x1000, 32).unwrap();
        // What a dump sees while the inner allocator works: nothing.
        assert!(live_entries(&table).is_empty());
        assert_eq!(table.totals().live_count, 0);
        // The index stays reserved: a new block gets another one.
        let other = table.insert(&entry(0x3000, 8), true, 2);
        assert_ne!(other, footer);
        table.restore(detached);
        let mut live = live_entries(&table);
        live.sort_by_key(|e| e.address);
        assert_eq!(live, [old, entry(0x3000, 8)]);
        assert_eq!(table.totals().live_bytes, 40);
        assert_eq!(table.totals().total_frees, 0);
    }
}
