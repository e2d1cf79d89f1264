//! The stack interner: stores each distinct allocation stack once.
//!
//! Interned stacks live in two append-only arrays in reserved anonymous
//! memory (stack records and frames) that are never moved, so a dump can read
//! the prefix that existed when it locked the interner without holding the
//! lock while it writes. The lookup table is sharded like the live table.
//!
//! The walk itself is in [`crate::walk`].

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::live::MAX_STACK_ID;
use crate::sys::{self, SpinLock};
use crate::walk::{WALKER, Walker};
use heapdump_formats::records::stack_flags;

/// Address-space reservations for the interned stacks (untouched pages cost
/// nothing; the mapping uses `MAP_NORESERVE`).
const MAX_STACKS: u64 = MAX_STACK_ID as u64 + 1;
const MAX_FRAMES: u64 = 1 << 27;

/// Entries in each thread's cache of recently interned stacks.
const RECENT_STACKS: usize = 256;

/// The most ids and frame slots a thread reserves at a time (see
/// [`Reserved`]): 1 KiB of stack records and 32 KiB of frames.
const MOST_IDS_RESERVED: u64 = 64;
const MOST_FRAMES_RESERVED: u64 = 4096;

thread_local! {
    /// `hash << 32 | id` of stacks this thread interned lately, by hash.
    /// A hit skips the shared lookup table and its lock: the common case,
    /// since a program allocates from few distinct stacks again and again.
    static RECENT: [Cell<u64>; RECENT_STACKS] = const { [const { Cell::new(0) }; RECENT_STACKS] };
    static RESERVED: Cell<Reserved> = const { Cell::new(Reserved::NONE) };
}

/// Stack ids and frame slots a thread took from the interner's counters
/// ahead of need, so that threads storing new stacks at once do not write
/// one cache line each time (the counters') nor the same lines of the two
/// arrays (stacks stored one after the other by different threads). On
/// programs that make new stacks on several threads this sharing more than
/// doubled the cost of storing one.
///
/// A thread reserves about as many as it used so far (at least one id and
/// a stack's frames rounded up to 8; at most [`MOST_IDS_RESERVED`] and
/// [`MOST_FRAMES_RESERVED`]), so a thread that ends leaves unused fewer ids
/// than it used (none when it stored one stack; until the frame slots run
/// out, when the ids reserved for a dropped stack are kept), and as many
/// frame slots as it used, plus 7 and the rest of each frame reservation
/// that was too short for the next stack (under
/// [`MAX_DEPTH`](crate::walk::MAX_DEPTH) slots; such a rest is skipped, as
/// a stack's frames are contiguous): the stacks' reservations (2^24 ids,
/// 2^27 frames) are not spent by programs with many short threads. Unused
/// ids have zero records, which no block refers to, and the dump writes
/// only the stacks of live blocks.
#[derive(Clone, Copy)]
struct Reserved {
    /// The [`identity`](StackInterner::identity) of the interner these came
    /// from (0: none). Tests make several, and one made where an earlier
    /// one was (its address) must not hand out the earlier one's ids.
    interner: u64,
    next_id: u64,
    end_id: u64,
    next_frame: u64,
    end_frame: u64,
    used_ids: u64,
    used_frames: u64,
}

impl Reserved {
    const NONE: Reserved = Reserved {
        interner: 0,
        next_id: 0,
        end_id: 0,
        next_frame: 0,
        end_frame: 0,
        used_ids: 0,
        used_frames: 0,
    };
}

/// Whether two stacks of the same length are equal: one branch at the end
/// instead of a `memcmp` call, which on a stack of ~25 frames costs more
/// than the comparison.
#[inline(always)]
fn same_frames(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// The interned id of the calling thread's stack (see [`StackInterner::intern`]).
///
/// # Safety
/// Not reentrant: the caller must hold the thread's reentrancy guard, so no
/// other call on this thread (an allocation from a signal handler) uses the
/// walker meanwhile.
#[inline]
pub unsafe fn current_stack_id(interner: &StackInterner, stack: (usize, usize)) -> u32 {
    WALKER.with(|walker| {
        // SAFETY: per the contract, this is the only reference to this
        // thread's walker while it lives.
        let walker = unsafe { &mut *walker.get() };
        walker.walk(stack);
        interner.intern(walker)
    })
}

/// An interned stack as the dump stores it.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct StoredStack {
    pub first_frame: u64,
    pub frame_count: u32,
    pub flags: u32,
}

// SAFETY: integers only.
unsafe impl sys::Zeroable for StoredStack {}

const INTERN_SHARDS: usize = 16;

/// Takes up to `want` values from `counter`, which never passes `limit`:
/// the range taken, `None` when nothing is left. Read first, so that a full
/// interner's counter stops growing (threads keep asking it).
fn take(counter: &AtomicU64, want: u64, limit: u64) -> Option<(u64, u64)> {
    if counter.load(Ordering::Relaxed) >= limit {
        return None;
    }
    let first = counter.fetch_add(want, Ordering::Relaxed);
    (first < limit).then(|| (first, (first + want).min(limit)))
}

/// Where the probe for a table word (or its tag, `hash >> 32 << 32`) starts.
#[inline(always)]
fn home_slot(word: u64, mask: usize) -> usize {
    (word >> 32) as usize & mask
}

/// One shard of the lookup table: open addressing over `hash << 32 | id`
/// words, 0 meaning empty.
///
/// A stack's shard comes from the low bits of its hash and its home slot
/// from the high 32 bits the word keeps, so growing a shard moves words
/// without reading a single stored frame: rehashing every stack's frames
/// was most of the interner's time on programs with millions of stacks.
struct InternShard {
    slots: *mut u64,
    capacity: usize,
    count: usize,
}

// SAFETY: the mapping behind `slots` is only touched under the shard's lock.
unsafe impl Send for InternShard {}

/// A shard's lock on a cache line of its own, apart from its neighbours'.
#[repr(align(64))]
struct PaddedShard {
    table: SpinLock<InternShard>,
    /// The stacks stored in this shard (its `count`), for readers that do
    /// not take the lock: written by its holder, on the line it holds.
    stored: AtomicU64,
}

const _: () = assert!(size_of::<PaddedShard>() == 64);

/// Read on every interning: apart from the counters, which threads write.
#[repr(align(64))]
struct Arrays {
    stacks: AtomicPtr<StoredStack>,
    frames: AtomicPtr<u64>,
    /// This interner's number, given when a thread first reserves from it
    /// (0 until then), unique in the process; see [`Reserved::interner`].
    identity: AtomicU64,
}

/// The last interner number given (see [`Arrays::identity`]).
static LAST_IDENTITY: AtomicU64 = AtomicU64::new(0);

pub struct StackInterner {
    shards: [PaddedShard; INTERN_SHARDS],
    arrays: Arrays,
    /// Next stack id not reserved by a thread; id 0 is the empty stack and
    /// never stored.
    next_stack: AtomicU64,
    /// Next frame slot not reserved by a thread.
    next_frame: AtomicU64,
    dropped: AtomicU64,
    table_bytes: AtomicU64,
}

/// The interner's contents as of a moment when no insertion was under way:
/// the ids and frame slots handed out by then. Threads still write the ids
/// and slots they had reserved and not yet used (see [`Reserved`]) after
/// that moment, so the snapshot is no slice over them: a stored stack is
/// read on its own ([`stack`](Self::stack)), by an id a block refers to.
#[derive(Clone, Copy, Debug)]
pub struct StacksSnapshot {
    stacks: *const StoredStack,
    stack_count: usize,
    frames: *const u64,
    frame_count: usize,
}

impl StacksSnapshot {
    const EMPTY: StacksSnapshot = StacksSnapshot {
        stacks: core::ptr::null(),
        stack_count: 0,
        frames: core::ptr::null(),
        frame_count: 0,
    };

    /// The ids handed out (stored stacks and reserved ones), id 0 included.
    pub fn stack_count(&self) -> usize {
        self.stack_count
    }

    /// The frame slots handed out.
    pub fn frame_count(&self) -> usize {
        self.frame_count
    }

    /// Stack `id` and its frames, innermost first; `None` for an id past
    /// the snapshot, or whose frames lie outside it (never for a stored
    /// stack).
    ///
    /// # Safety
    /// `id` was stored by the snapshot's moment, as the id a recorded block
    /// holds was, or nothing interns meanwhile: a reserved id not used by
    /// then may be being written by its thread.
    pub unsafe fn stack(&self, id: usize) -> Option<(StoredStack, &'static [u64])> {
        if id >= self.stack_count {
            return None;
        }
        // `id` is inside the stacks array's reservation, which is never
        // unmapped, and (the caller says) was stored before the snapshot
        // was taken: its record was written under its shard's lock, which
        // the snapshot's taker acquired since, and is never written again.
        // SAFETY: as just said.
        let stack = unsafe { self.stacks.add(id).read() };
        let first = usize::try_from(stack.first_frame).ok()?;
        let end = first.checked_add(stack.frame_count as usize)?;
        if end > self.frame_count {
            return None;
        }
        // SAFETY: `first..end` is inside the frames array's reservation,
        // never unmapped; a stored stack's frames were written before its
        // record and are never written again.
        let frames = unsafe { core::slice::from_raw_parts(self.frames.add(first), end - first) };
        Some((stack, frames))
    }
}

impl StackInterner {
    pub const fn new() -> StackInterner {
        StackInterner {
            shards: [const {
                PaddedShard {
                    table: SpinLock::new(InternShard {
                        slots: core::ptr::null_mut(),
                        capacity: 0,
                        count: 0,
                    }),
                    stored: AtomicU64::new(0),
                }
            }; INTERN_SHARDS],
            arrays: Arrays {
                stacks: AtomicPtr::new(core::ptr::null_mut()),
                frames: AtomicPtr::new(core::ptr::null_mut()),
                identity: AtomicU64::new(0),
            },
            next_stack: AtomicU64::new(1),
            next_frame: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            table_bytes: AtomicU64::new(0),
        }
    }

    /// The id of `walk`'s stack, storing it if new; 0 for an empty walk or
    /// when the interner is full (counted in [`dropped`](Self::dropped)).
    pub fn intern(&self, walk: &Walker) -> u32 {
        let frames = walk.frames();
        if frames.is_empty() {
            return 0;
        }
        let hash = walk.hash();
        let tag = (hash >> 32) << 32;
        let mut flags = 0;
        if walk.truncated() {
            flags |= stack_flags::TRUNCATED;
        }
        if walk.any_by_cfi() {
            flags |= stack_flags::CFI;
        }
        let Some(stacks) = sys::map_once(
            &self.arrays.stacks,
            MAX_STACKS as usize * size_of::<StoredStack>(),
        ) else {
            return self.drop_one();
        };
        let Some(frame_store) =
            sys::map_once(&self.arrays.frames, MAX_FRAMES as usize * size_of::<u64>())
        else {
            return self.drop_one();
        };
        let recent = (hash as usize) % RECENT_STACKS;
        let cached = RECENT.with(|cache| cache[recent].get());
        if cached != 0 && cached & !0xffff_ffff == tag {
            let id = cached as u32;
            // SAFETY: this thread got `id` from `intern`, so the stack was
            // fully stored before (by this thread, or by another one under
            // the shard lock we took); stored stacks never change.
            if unsafe { Self::stored_equals(stacks, frame_store, id, frames, flags) } {
                return id;
            }
        }
        let id = self.intern_shared(hash, frames, flags, stacks, frame_store);
        if id != 0 {
            RECENT.with(|cache| cache[recent].set(tag | u64::from(id)));
        }
        id
    }

    /// Whether stored stack `id` has exactly these frames and flags.
    ///
    /// # Safety
    /// `id` must have been returned by `intern` of this interner.
    #[inline]
    unsafe fn stored_equals(
        stacks: *mut StoredStack,
        frame_store: *mut u64,
        id: u32,
        frames: &[u64],
        flags: u32,
    ) -> bool {
        // SAFETY: per the contract, `id`'s record and frames are written,
        // inside the reservations, and immutable.
        let stored = unsafe { *stacks.add(id as usize) };
        if stored.frame_count as usize != frames.len() || stored.flags != flags {
            return false;
        }
        // SAFETY: as above.
        let stored_frames = unsafe {
            core::slice::from_raw_parts(
                frame_store.add(stored.first_frame as usize),
                stored.frame_count as usize,
            )
        };
        same_frames(stored_frames, frames)
    }

    /// The shared lookup: finds or stores the stack under its shard's lock.
    fn intern_shared(
        &self,
        hash: u64,
        frames: &[u64],
        flags: u32,
        stacks: *mut StoredStack,
        frame_store: *mut u64,
    ) -> u32 {
        let tag = (hash >> 32) << 32;
        let padded = &self.shards[(hash as usize) % INTERN_SHARDS];
        let mut shard = padded.table.lock();
        if shard.count * 10 >= shard.capacity * 7 && !self.grow(&mut shard) {
            return self.drop_one();
        }
        let mask = shard.capacity - 1;
        let mut position = home_slot(tag, mask);
        loop {
            // SAFETY: `position <= mask < capacity` and the shard's mapping
            // holds `capacity` words; we hold the shard's lock.
            let word = unsafe { *shard.slots.add(position) };
            if word == 0 {
                break;
            }
            if word & !0xffff_ffff == tag {
                let same = {
                    // SAFETY: ids in the table were fully stored before they
                    // were published under this lock.
                    unsafe { Self::stored_equals(stacks, frame_store, word as u32, frames, flags) }
                };
                if same {
                    return word as u32;
                }
            }
            position = (position + 1) & mask;
        }
        // New stack: frames first, then its record, then publish the id.
        let Some((id, first)) = self.claim(frames.len()) else {
            return self.drop_one();
        };
        // SAFETY: `first .. first + len` was reserved for this thread alone
        // and lies inside the frame reservation (`claim`).
        unsafe {
            core::ptr::copy_nonoverlapping(
                frames.as_ptr(),
                frame_store.add(first as usize),
                frames.len(),
            );
        }
        // SAFETY: `id` was reserved for this thread alone and is below
        // MAX_STACKS (`claim`).
        unsafe {
            *stacks.add(id as usize) = StoredStack {
                first_frame: first,
                frame_count: frames.len() as u32,
                flags,
            };
        }
        // SAFETY: `position` is an empty slot found above, under the lock.
        unsafe {
            *shard.slots.add(position) = tag | u64::from(id);
        }
        shard.count += 1;
        padded.stored.store(shard.count as u64, Ordering::Relaxed);
        id
    }

    /// An id and `len` frame slots for a new stack, from the calling
    /// thread's reservations, which it renews from the counters when they
    /// run out (see [`Reserved`]); `None` when the arrays are full.
    fn claim(&self, len: usize) -> Option<(u32, u64)> {
        let len = len as u64;
        let identity = self.identity();
        let mut reserved = RESERVED.get();
        if reserved.interner != identity {
            reserved = Reserved {
                interner: identity,
                ..Reserved::NONE
            };
        }
        if reserved.next_id == reserved.end_id {
            let want = reserved.used_ids.clamp(1, MOST_IDS_RESERVED);
            let (first, end) = take(&self.next_stack, want, MAX_STACKS)?;
            (reserved.next_id, reserved.end_id) = (first, end);
        }
        if reserved.end_frame - reserved.next_frame < len {
            let want = reserved
                .used_frames
                .clamp(len, MOST_FRAMES_RESERVED.max(len))
                .next_multiple_of(8);
            let taken = take(&self.next_frame, want, MAX_FRAMES);
            let Some((first, end)) = taken.filter(|(first, end)| end - first >= len) else {
                // Keeps the ids just reserved, if any: taking more for
                // every stack dropped here would spend them all.
                RESERVED.set(reserved);
                return None;
            };
            (reserved.next_frame, reserved.end_frame) = (first, end);
        }
        let claimed = (reserved.next_id as u32, reserved.next_frame);
        reserved.next_id += 1;
        reserved.next_frame += len;
        reserved.used_ids += 1;
        reserved.used_frames += len;
        RESERVED.set(reserved);
        Some(claimed)
    }

    /// This interner's number (see [`Arrays::identity`]).
    fn identity(&self) -> u64 {
        let identity = self.arrays.identity.load(Ordering::Relaxed);
        if identity != 0 {
            return identity;
        }
        let fresh = LAST_IDENTITY.fetch_add(1, Ordering::Relaxed) + 1;
        match self
            .arrays
            .identity
            .compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => fresh,
            Err(given) => given,
        }
    }

    fn drop_one(&self) -> u32 {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        0
    }

    /// Doubles a shard's lookup table (power-of-two sizes keep probing a mask).
    fn grow(&self, shard: &mut InternShard) -> bool {
        let capacity = if shard.capacity == 0 {
            sys::PAGE / size_of::<u64>()
        } else {
            shard.capacity * 2
        };
        // Populated: the moves below probe (read) before they write.
        let Some(fresh) = sys::map_zeroed_populated(capacity * size_of::<u64>()) else {
            return false;
        };
        let fresh = fresh.cast::<u64>();
        let mask = capacity - 1;
        for old in 0..shard.capacity {
            // SAFETY: `old < capacity` of the old mapping, under the lock.
            let word = unsafe { *shard.slots.add(old) };
            if word == 0 {
                continue;
            }
            let mut position = home_slot(word, mask);
            // SAFETY: positions stay below the new capacity (masked); the
            // new table has free slots (it is twice the old one's size).
            unsafe {
                while *fresh.add(position) != 0 {
                    position = (position + 1) & mask;
                }
                *fresh.add(position) = word;
            }
        }
        if !shard.slots.is_null() {
            // SAFETY: the old table was mapped with this size and is no
            // longer referenced.
            unsafe { sys::unmap(shard.slots.cast(), shard.capacity * size_of::<u64>()) };
        }
        self.table_bytes.fetch_add(
            ((capacity - shard.capacity) * size_of::<u64>()) as u64,
            Ordering::Relaxed,
        );
        shard.slots = fresh;
        shard.capacity = capacity;
        true
    }

    /// Distinct stacks stored. Not the ids handed out: threads reserve
    /// ids ahead (see [`Reserved`]), and some are never used.
    pub fn stored(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.stored.load(Ordering::Relaxed))
            .sum()
    }

    /// Interns that could not store their stack: one per allocation whose
    /// stack was dropped, not per distinct stack.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of memory in use: lookup tables plus the touched part of the
    /// two arrays.
    pub fn tracking_bytes(&self) -> u64 {
        let stacks = self.next_stack.load(Ordering::Relaxed).min(MAX_STACKS);
        let frames = self.next_frame.load(Ordering::Relaxed).min(MAX_FRAMES);
        let used = stacks * size_of::<StoredStack>() as u64 + frames * 8;
        self.table_bytes.load(Ordering::Relaxed) + used
    }

    /// Locks every shard: while the guards live no stack is being added.
    pub fn lock_all(&self) -> [sys::SpinGuard<'_, impl Sized>; INTERN_SHARDS] {
        core::array::from_fn(|i| self.shards[i].table.lock())
    }

    pub fn lock_forever(&self) {
        for shard in &self.shards {
            shard.table.lock_forever();
        }
    }

    /// # Safety
    /// Only after [`lock_forever`](Self::lock_forever), by the same owner.
    pub unsafe fn unlock_forever(&self) {
        for shard in &self.shards {
            // SAFETY: the caller took these locks with `lock_forever`.
            unsafe { shard.table.force_unlock() };
        }
    }

    /// The stored stacks, to be called while [`lock_all`](Self::lock_all)'s
    /// guards are held (or nothing interns concurrently). Read only the
    /// records of ids stored by then (the ones blocks refer to) and their
    /// frames ([`StacksSnapshot::stack`]): those never change, but the
    /// other ids and frame slots below its counts may be reserved by
    /// threads (see [`Reserved`]), which write them once the locks are
    /// released.
    pub fn snapshot(&self) -> StacksSnapshot {
        let stacks = self.arrays.stacks.load(Ordering::Acquire);
        let frames = self.arrays.frames.load(Ordering::Acquire);
        if stacks.is_null() || frames.is_null() {
            return StacksSnapshot::EMPTY;
        }
        // The counters only move under a shard lock, which the caller
        // holds (or nothing interns): every id and frame slot below them
        // was handed out, and the stored ones among them are whole.
        StacksSnapshot {
            stacks,
            stack_count: self.next_stack.load(Ordering::Relaxed).min(MAX_STACKS) as usize,
            frames,
            frame_count: self.next_frame.load(Ordering::Relaxed).min(MAX_FRAMES) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn interner_returns_one_id_per_distinct_stack() {
        let interner = StackInterner::new();
        let mut walk = Walker::new();
        let mut ids = HashMap::new();
        for i in 0..20_000u64 {
            let frames: Vec<u64> = (0..i % 7 + 1)
                .map(|depth| 0x40_0000 + (i % 5000) * 64 + depth)
                .collect();
            walk.set(&frames);
            let id = interner.intern(&walk);
            assert_ne!(id, 0);
            let key = walk.frames().to_vec();
            assert_eq!(*ids.entry(key).or_insert(id), id);
        }
        let snapshot = interner.snapshot();
        assert_stored(&snapshot, &ids);
        // What this thread reserved and left unused: less than one
        // reservation's worth.
        let unused = snapshot.stack_count() - 1 - ids.len();
        assert!(unused < MOST_IDS_RESERVED as usize, "{unused} ids unused");
        walk.set(&[]);
        assert_eq!(interner.intern(&walk), 0);
        assert_eq!(interner.dropped(), 0);
    }

    /// Stack `id` of a snapshot taken when nothing interns any more.
    fn stored(snapshot: &StacksSnapshot, id: usize) -> (StoredStack, &'static [u64]) {
        // SAFETY: the tests take their snapshots after their threads ended.
        unsafe { snapshot.stack(id) }.unwrap_or_else(|| panic!("stack {id} outside the snapshot"))
    }

    /// Every stack in `ids` is stored under its id with its frames, and
    /// every other record is an unused (zero) one.
    fn assert_stored(snapshot: &StacksSnapshot, ids: &HashMap<Vec<u64>, u32>) {
        for (frames, id) in ids {
            assert_eq!(stored(snapshot, *id as usize).1, &frames[..]);
        }
        let used: HashSet<u32> = ids.values().copied().collect();
        assert_eq!(used.len(), ids.len(), "two stacks share an id");
        for id in 0..snapshot.stack_count() {
            if !used.contains(&(id as u32)) {
                assert_eq!(stored(snapshot, id).0, StoredStack::default(), "id {id}");
            }
        }
    }

    /// Frames of stack `i`: `len` frames unique to it.
    fn frames_of(i: u64, len: u64) -> Vec<u64> {
        (0..len).map(|depth| 0x40_0000 + i * 64 + depth).collect()
    }

    #[test]
    fn threads_interning_at_once_get_one_id_per_distinct_stack() {
        let interner = StackInterner::new();
        // Four threads, each with 3,000 stacks; stacks 0..1,000 are every
        // thread's, the rest each thread's own.
        let per_thread: Vec<Vec<(Vec<u64>, u32)>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let interner = &interner;
                    scope.spawn(move || {
                        let mut walk = Walker::new();
                        (0..3_000u64)
                            .map(|i| {
                                let stack = if i < 1_000 { i } else { t * 10_000 + i };
                                let frames = frames_of(stack, 1 + stack % 23);
                                walk.set(&frames);
                                let id = interner.intern(&walk);
                                assert_ne!(id, 0);
                                (frames, id)
                            })
                            .collect()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut ids = HashMap::new();
        for (frames, id) in per_thread.into_iter().flatten() {
            assert_eq!(*ids.entry(frames).or_insert(id), id);
        }
        assert_eq!(ids.len(), 1_000 + 4 * 2_000);
        assert_stored(&interner.snapshot(), &ids);
        assert_eq!(interner.dropped(), 0);
    }

    #[test]
    fn a_new_interner_where_an_old_one_was_does_not_take_its_reservation() {
        // Nothing allocates between the two interns: this test binary's
        // `malloc` is the tracker's, whose interner would take this
        // thread's reservation over.
        let (old, new) = ([1, 2, 3].map(|i| frames_of(i, 3)), frames_of(4, 3));
        let mut walk = Walker::new();
        let mut interner = StackInterner::new();
        for (frames, id) in old.iter().zip(1..) {
            walk.set(frames);
            assert_eq!(interner.intern(&walk), id);
        }
        // A new interner in the same place: this thread still holds id 4
        // of the old one (it reserved 1, 1, then 2 ids).
        interner = StackInterner::new();
        walk.set(&new);
        let id = interner.intern(&walk);
        let mut ids = HashMap::from([(new, id)]);
        std::thread::scope(|scope| {
            let interner = &interner;
            let theirs = scope
                .spawn(move || {
                    let mut walk = Walker::new();
                    (0..4)
                        .map(|i| {
                            let frames = frames_of(100 + i, 3);
                            walk.set(&frames);
                            (frames, interner.intern(&walk))
                        })
                        .collect::<Vec<_>>()
                })
                .join()
                .unwrap();
            ids.extend(theirs);
        });
        assert_eq!(ids.len(), 5);
        assert_stored(&interner.snapshot(), &ids);
    }

    #[test]
    fn when_frames_run_out_stacks_are_dropped_and_no_ids_are_spent() {
        let interner = StackInterner::new();
        interner.next_frame.store(MAX_FRAMES, Ordering::Relaxed);
        // Nothing allocates meanwhile (see above).
        let stacks: Vec<Vec<u64>> = (0..100).map(|i| frames_of(i, 3)).collect();
        let mut walk = Walker::new();
        for frames in &stacks {
            walk.set(frames);
            assert_eq!(interner.intern(&walk), 0);
        }
        assert_eq!(interner.dropped(), 100);
        // The first stack took one id (the ramp's first reservation),
        // kept for the next stack; none was used.
        let ids = interner.next_stack.load(Ordering::Relaxed);
        assert_eq!(ids, 1 + 1);
    }

    #[test]
    fn a_stack_that_cannot_be_stored_is_counted_at_every_allocation_from_it() {
        // `dropped` counts allocations whose stack was not stored (what
        // the dump's `dropped_stacks` is), not distinct stacks: a dropped
        // stack gets no id to remember it by.
        let interner = StackInterner::new();
        interner.next_frame.store(MAX_FRAMES, Ordering::Relaxed);
        let mut walk = Walker::new();
        walk.set(&frames_of(7, 3));
        for _ in 0..3 {
            assert_eq!(interner.intern(&walk), 0);
        }
        assert_eq!(interner.dropped(), 3);
    }

    #[test]
    fn reservations_that_end_at_the_limits_are_used_up_to_them_and_no_further() {
        let interner = StackInterner::new();
        interner
            .next_frame
            .store(MAX_FRAMES - 20, Ordering::Relaxed);
        interner.next_stack.store(MAX_STACKS - 3, Ordering::Relaxed);
        // 8 + 8 frames fit; the next 8 do not (4 left), nor do 4 once the
        // partial reservation was taken. Nothing allocates meanwhile (see
        // above).
        let stacks: Vec<Vec<u64>> = [8, 8, 8, 4, 1]
            .into_iter()
            .enumerate()
            .map(|(i, len)| frames_of(i as u64, len))
            .collect();
        let more: Vec<Vec<u64>> = (10..14).map(|i| frames_of(i, 2)).collect();
        let mut got = [u32::MAX; 5];
        let mut walk = Walker::new();
        for (frames, id) in stacks.iter().zip(&mut got) {
            walk.set(frames);
            *id = interner.intern(&walk);
        }
        let max = MAX_STACKS as u32;
        assert_eq!(got, [max - 3, max - 2, 0, 0, 0]);
        assert_eq!(interner.dropped(), 3);
        let snapshot = interner.snapshot();
        assert_eq!(snapshot.stack_count() as u64, MAX_STACKS);
        assert_eq!(snapshot.frame_count() as u64, MAX_FRAMES);
        for (frames, id) in stacks.iter().zip(got).take(2) {
            let (stack, stored_frames) = stored(&snapshot, id as usize);
            assert!(stack.first_frame + u64::from(stack.frame_count) <= MAX_FRAMES - 4);
            assert_eq!(stored_frames, &frames[..]);
        }
        // The id left at the end goes to the next stack that fits; then
        // none is left.
        interner.next_frame.store(0, Ordering::Relaxed);
        for (frames, id) in more.iter().zip(&mut got) {
            walk.set(frames);
            *id = interner.intern(&walk);
        }
        assert_eq!(got[..4], [max - 1, 0, 0, 0]);
    }

    #[test]
    fn threads_that_store_one_stack_leave_no_ids_and_few_frames_unused() {
        let interner = StackInterner::new();
        let ids: HashMap<Vec<u64>, u32> = (0..200u64)
            .map(|i| {
                let interner = &interner;
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            let frames = frames_of(i, 5);
                            let mut walk = Walker::new();
                            walk.set(&frames);
                            let id = interner.intern(&walk);
                            (frames, id)
                        })
                        .join()
                        .unwrap()
                })
            })
            .collect();
        let snapshot = interner.snapshot();
        assert_stored(&snapshot, &ids);
        assert_eq!(interner.stored(), 200);
        // One id and 8 frame slots reserved by each thread.
        assert_eq!(snapshot.stack_count(), 1 + 200);
        assert!(
            snapshot.frame_count() <= 200 * 8,
            "{}",
            snapshot.frame_count()
        );
    }
}
