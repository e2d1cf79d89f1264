//! Allocation stacks: a frame-pointer walk bounded by the thread's stack,
//! and an interner that stores each distinct stack once.
//!
//! The walk reads `[fp]` (the caller's frame pointer) and `[fp + 8]` (the
//! return address) from frame to frame. Every frame pointer is checked to lie
//! inside the current thread's stack, above the previous one and aligned
//! before it is read, so a frame compiled without frame pointers (whose `rbp`
//! holds anything) ends the walk instead of faulting.
//!
//! Interned stacks live in two append-only arrays in reserved anonymous
//! memory (stack records and frames) that are never moved, so a dump can read
//! the prefix that existed when it locked the interner without holding the
//! lock while it writes. The lookup table is sharded like the live table.

use core::cell::Cell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::live::MAX_STACK_ID;
use crate::sys::{self, SpinLock};

/// The deepest stack recorded; deeper ones keep their innermost frames and
/// are flagged truncated.
pub const MAX_DEPTH: usize = 64;

/// Address-space reservations for the interned stacks (untouched pages cost
/// nothing; the mapping uses `MAP_NORESERVE`).
const MAX_STACKS: u64 = MAX_STACK_ID as u64 + 1;
const MAX_FRAMES: u64 = 1 << 27;

/// A walked stack: return addresses, innermost first. Only the first `len`
/// entries are written (zeroing the rest on every allocation costs more
/// than the walk).
pub struct Walk {
    pcs: [MaybeUninit<u64>; MAX_DEPTH],
    len: usize,
    pub truncated: bool,
    /// The frames' hash, computed as they are pushed: the walk waits on
    /// each frame pointer load, and the hash's multiplications fit in that
    /// wait for free.
    hasher: FrameHasher,
}

impl Walk {
    pub const fn empty() -> Walk {
        Walk {
            pcs: [MaybeUninit::uninit(); MAX_DEPTH],
            len: 0,
            truncated: false,
            hasher: FrameHasher::new(),
        }
    }

    #[inline]
    pub fn hash(&self) -> u64 {
        self.hasher.finish()
    }

    #[inline]
    pub fn frames(&self) -> &[u64] {
        let len = self.len.min(MAX_DEPTH);
        // SAFETY: the first `len` entries were written by `push`.
        unsafe { core::slice::from_raw_parts(self.pcs.as_ptr().cast::<u64>(), len) }
    }

    #[inline]
    fn push(&mut self, pc: u64) {
        if let Some(slot) = self.pcs.get_mut(self.len) {
            slot.write(pc);
            self.len += 1;
            self.hasher.push(pc);
        }
    }

    #[cfg(test)]
    pub fn set(&mut self, frames: &[u64]) {
        self.len = 0;
        self.hasher = FrameHasher::new();
        for &pc in frames {
            self.push(pc);
        }
    }
}

/// Entries in each thread's cache of recently interned stacks.
const RECENT_STACKS: usize = 256;

thread_local! {
    /// `hash << 32 | id` of stacks this thread interned lately, by hash.
    /// A hit skips the shared lookup table and its lock: the common case,
    /// since a program allocates from few distinct stacks again and again.
    static RECENT: [Cell<u64>; RECENT_STACKS] = const { [const { Cell::new(0) }; RECENT_STACKS] };
}

/// Reads the frame pointer register of the calling function.
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: copies a register; no memory is touched.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: copies a register; no memory is touched.
    unsafe {
        core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fp = 0;
    }
    fp
}

/// Walks the calling thread's frame-pointer chain into `walk`. `stack` is
/// the thread's stack `[low, high)`; an empty range records nothing.
#[inline(never)]
pub fn walk_current(stack: (usize, usize), walk: &mut Walk) {
    let (low, high) = stack;
    let mut fp = frame_pointer();
    walk.len = 0;
    walk.truncated = false;
    walk.hasher = FrameHasher::new();
    // Our own frame sits at the lowest address of the chain; anything
    // below it is not part of this call stack.
    let floor = fp.max(low);
    let mut previous = floor.saturating_sub(1);
    while walk.len < MAX_DEPTH {
        let fits = fp > previous
            && fp >= floor
            && fp % align_of::<usize>() == 0
            && fp
                .checked_add(2 * size_of::<usize>())
                .is_some_and(|end| end <= high);
        if !fits {
            return;
        }
        // Volatile: these words belong to frames the compiler does not see.
        // SAFETY: `fp .. fp + 16` is aligned and inside this thread's mapped
        // stack (checked above against its pthread bounds): it cannot fault.
        let (next, return_address) = unsafe {
            let words = fp as *const usize;
            (words.read_volatile(), words.add(1).read_volatile())
        };
        if return_address == 0 {
            return;
        }
        walk.push(return_address as u64);
        previous = fp;
        fp = next;
    }
    // Full: truncated if the chain would have gone on.
    walk.truncated = fp > previous && fp < high;
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

/// One shard of the lookup table: open addressing over `hash << 32 | id`
/// words, 0 meaning empty.
struct InternShard {
    slots: *mut u64,
    capacity: usize,
    count: usize,
}

// SAFETY: the mapping behind `slots` is only touched under the shard's lock.
unsafe impl Send for InternShard {}

pub struct StackInterner {
    shards: [SpinLock<InternShard>; INTERN_SHARDS],
    stacks: AtomicPtr<StoredStack>,
    frames: AtomicPtr<u64>,
    /// Next stack id; id 0 is the empty stack and never stored.
    next_stack: AtomicU32,
    next_frame: AtomicU64,
    dropped: AtomicU64,
    table_bytes: AtomicU64,
}

/// The interner's contents as of a moment when no insertion was under way.
#[derive(Clone, Copy, Debug)]
pub struct StacksSnapshot {
    pub stacks: &'static [StoredStack],
    pub frames: &'static [u64],
}

/// A hash of a stack's frames, fed one frame at a time. Frames go round
/// robin to four lanes, each with its own multiplier, so the
/// multiplications do not wait on each other (a chained hash costs several
/// times more on a 25-frame stack).
#[derive(Clone, Copy)]
struct FrameHasher {
    lanes: [u64; 4],
    count: u64,
}

impl FrameHasher {
    const K: [u64; 4] = [
        0x9E37_79B9_7F4A_7C15,
        0xC2B2_AE3D_27D4_EB4F,
        0x1656_67B1_9E37_79F9,
        0xD6E8_FEB8_6659_FD93,
    ];

    const fn new() -> FrameHasher {
        FrameHasher {
            lanes: [0, Self::K[1], Self::K[2], Self::K[3]],
            count: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, pc: u64) {
        let lane = (self.count & 3) as usize;
        self.lanes[lane] = self.lanes[lane]
            .rotate_left(23)
            .wrapping_add(pc.wrapping_mul(Self::K[lane]));
        self.count += 1;
    }

    #[inline]
    fn finish(&self) -> u64 {
        let [a, b, c, d] = self.lanes;
        let h = a ^ b.rotate_left(16) ^ c.rotate_left(32) ^ d.rotate_left(48) ^ self.count;
        let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^ (h >> 32)
    }
}

/// The hash [`Walk::hash`] gives for these frames.
fn hash_frames(frames: &[u64]) -> u64 {
    let mut hasher = FrameHasher::new();
    for &pc in frames {
        hasher.push(pc);
    }
    hasher.finish()
}

impl StackInterner {
    pub const fn new() -> StackInterner {
        StackInterner {
            shards: [const {
                SpinLock::new(InternShard {
                    slots: core::ptr::null_mut(),
                    capacity: 0,
                    count: 0,
                })
            }; INTERN_SHARDS],
            stacks: AtomicPtr::new(core::ptr::null_mut()),
            frames: AtomicPtr::new(core::ptr::null_mut()),
            next_stack: AtomicU32::new(1),
            next_frame: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            table_bytes: AtomicU64::new(0),
        }
    }

    /// The id of `walk`'s stack, storing it if new; 0 for an empty walk or
    /// when the interner is full (counted in [`dropped`](Self::dropped)).
    pub fn intern(&self, walk: &Walk) -> u32 {
        let frames = walk.frames();
        if frames.is_empty() {
            return 0;
        }
        let hash = walk.hash();
        let tag = (hash >> 32) << 32;
        let flags = if walk.truncated {
            heapdump_formats::records::stack_flags::TRUNCATED
        } else {
            0
        };
        let Some(stacks) =
            sys::map_once(&self.stacks, MAX_STACKS as usize * size_of::<StoredStack>())
        else {
            return self.drop_one();
        };
        let Some(frame_store) = sys::map_once(&self.frames, MAX_FRAMES as usize * size_of::<u64>())
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
        stored_frames == frames
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
        let mut shard = self.shards[(hash as usize) % INTERN_SHARDS].lock();
        if shard.count * 10 >= shard.capacity * 7 && !self.grow(&mut shard, stacks, frame_store) {
            return self.drop_one();
        }
        let mask = shard.capacity - 1;
        let mut position = (hash as usize >> 4) & mask;
        loop {
            // SAFETY: `position <= mask < capacity` and the shard's mapping
            // holds `capacity` words; we hold the shard's lock.
            let word = unsafe { *shard.slots.add(position) };
            if word == 0 {
                break;
            }
            if word & !0xffff_ffff == tag {
                // SAFETY: ids in the table were fully stored before they
                // were published under this lock.
                let same =
                    unsafe { Self::stored_equals(stacks, frame_store, word as u32, frames, flags) };
                if same {
                    return word as u32;
                }
            }
            position = (position + 1) & mask;
        }
        // New stack: frames first, then its record, then publish the id.
        let first = self
            .next_frame
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        if first + frames.len() as u64 > MAX_FRAMES {
            return self.drop_one();
        }
        let id = self.next_stack.fetch_add(1, Ordering::Relaxed);
        if u64::from(id) >= MAX_STACKS {
            return self.drop_one();
        }
        // SAFETY: `first .. first + len` was reserved for us alone by the
        // fetch_add and lies inside the frame reservation (checked).
        unsafe {
            core::ptr::copy_nonoverlapping(
                frames.as_ptr(),
                frame_store.add(first as usize),
                frames.len(),
            );
        }
        // SAFETY: `id` was handed to us alone and is below MAX_STACKS.
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
        id
    }

    fn drop_one(&self) -> u32 {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        0
    }

    /// Doubles a shard's lookup table (power-of-two sizes keep probing a mask).
    fn grow(&self, shard: &mut InternShard, stacks: *mut StoredStack, frames: *mut u64) -> bool {
        let capacity = if shard.capacity == 0 {
            sys::PAGE / size_of::<u64>()
        } else {
            shard.capacity * 2
        };
        let Some(fresh) = sys::map_zeroed(capacity * size_of::<u64>()) else {
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
            // SAFETY: a published id's record and frames are stored.
            let stored = unsafe { *stacks.add(word as u32 as usize) };
            // SAFETY: as above.
            let stored_frames = unsafe {
                core::slice::from_raw_parts(
                    frames.add(stored.first_frame as usize),
                    stored.frame_count as usize,
                )
            };
            let mut position = (hash_frames(stored_frames) as usize >> 4) & mask;
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

    /// Stacks that could not be stored.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of memory in use: lookup tables plus the touched part of the
    /// two arrays.
    pub fn tracking_bytes(&self) -> u64 {
        let stacks = u64::from(self.next_stack.load(Ordering::Relaxed)).min(MAX_STACKS);
        let frames = self.next_frame.load(Ordering::Relaxed).min(MAX_FRAMES);
        let used = stacks * size_of::<StoredStack>() as u64 + frames * 8;
        self.table_bytes.load(Ordering::Relaxed) + used
    }

    /// Locks every shard: while the guards live no stack is being added.
    pub fn lock_all(&self) -> [sys::SpinGuard<'_, impl Sized>; INTERN_SHARDS] {
        core::array::from_fn(|i| self.shards[i].lock())
    }

    pub fn lock_forever(&self) {
        for shard in &self.shards {
            shard.lock_forever();
        }
    }

    /// # Safety
    /// Only after [`lock_forever`](Self::lock_forever), by the same owner.
    pub unsafe fn unlock_forever(&self) {
        for shard in &self.shards {
            // SAFETY: the caller took these locks with `lock_forever`.
            unsafe { shard.force_unlock() };
        }
    }

    /// The stored stacks, to be called while [`lock_all`](Self::lock_all)'s
    /// guards are held (or nothing interns concurrently). The returned
    /// slices stay valid afterwards: the arrays only grow past them.
    pub fn snapshot(&self) -> StacksSnapshot {
        let stacks = self.stacks.load(Ordering::Acquire);
        let frames = self.frames.load(Ordering::Acquire);
        if stacks.is_null() || frames.is_null() {
            return StacksSnapshot {
                stacks: &[],
                frames: &[],
            };
        }
        let stack_count = u64::from(self.next_stack.load(Ordering::Relaxed)).min(MAX_STACKS);
        let frame_count = self.next_frame.load(Ordering::Relaxed).min(MAX_FRAMES);
        // Both arrays are reservations that are never unmapped. The first
        // `stack_count`/`frame_count` entries were written before the counters
        // were read under every shard lock (or are zeros no id points at).
        // SAFETY: as above; later insertions only write past these prefixes.
        unsafe {
            StacksSnapshot {
                stacks: core::slice::from_raw_parts(stacks, stack_count as usize),
                frames: core::slice::from_raw_parts(frames, frame_count as usize),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn nested(depth: usize, stack: (usize, usize), walk: &mut Walk) {
        if depth == 0 {
            walk_current(stack, walk);
        } else {
            nested(depth - 1, stack, walk);
        }
        core::hint::black_box(depth);
    }

    fn this_thread_stack() -> (usize, usize) {
        crate::threads::current_stack_bounds()
    }

    #[test]
    fn walk_sees_nested_calls_and_stops_at_the_stack_top() {
        let stack = this_thread_stack();
        assert!(stack.0 < stack.1);
        let mut shallow = Walk::empty();
        nested(0, stack, &mut shallow);
        let mut deep = Walk::empty();
        nested(10, stack, &mut deep);
        assert!(shallow.len >= 2, "{}", shallow.len);
        assert_eq!(deep.len, (shallow.len + 10).min(MAX_DEPTH));
        let mut deeper = Walk::empty();
        nested(100, stack, &mut deeper);
        assert_eq!(deeper.len, MAX_DEPTH);
        assert!(deeper.truncated);
    }

    #[test]
    fn walk_with_bogus_bounds_records_nothing() {
        let mut walk = Walk::empty();
        walk_current((0, 0), &mut walk);
        assert_eq!(walk.len, 0);
        walk_current((16, 4096), &mut walk);
        assert_eq!(walk.len, 0);
    }

    #[test]
    fn walk_hash_equals_the_hash_of_its_frames() {
        let stack = this_thread_stack();
        let mut walk = Walk::empty();
        nested(7, stack, &mut walk);
        assert_eq!(walk.hash(), hash_frames(walk.frames()));
        let mut other = Walk::empty();
        other.set(&walk.frames()[1..]);
        assert_ne!(other.hash(), walk.hash());
    }

    #[test]
    fn interner_returns_one_id_per_distinct_stack() {
        let interner = StackInterner::new();
        let mut walk = Walk::empty();
        let mut ids = std::collections::HashMap::new();
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
        assert_eq!(snapshot.stacks.len(), ids.len() + 1);
        for (frames, id) in &ids {
            let stored = snapshot.stacks[*id as usize];
            let start = stored.first_frame as usize;
            assert_eq!(
                &snapshot.frames[start..start + stored.frame_count as usize],
                &frames[..]
            );
        }
        walk.set(&[]);
        assert_eq!(interner.intern(&walk), 0);
        assert_eq!(interner.dropped(), 0);
    }
}
