//! Allocation stacks: a frame-pointer walk bounded by the thread's stack,
//! and an interner that stores each distinct stack once.
//!
//! The walk reads `[fp]` (the caller's frame pointer) and `[fp + 8]` (the
//! return address) from frame to frame. Every frame pointer is checked to lie
//! inside the current thread's stack, above the previous one and aligned
//! before it is read, so a frame compiled without frame pointers (whose `rbp`
//! holds anything) ends the walk instead of faulting.
//!
//! Each thread keeps its last walk ([`Walker`]) and rejoins it: the result
//! is always the stack a walk from scratch would give, since every frame
//! taken over is read again and compared, but the reads no longer wait on
//! each other. A frame popped and pushed again can hold the same two words
//! under different callers, so no exact method can skip reading a frame.
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

// `Walker::highest_changed` keeps a bit per frame in a u64.
const _: () = assert!(MAX_DEPTH <= u64::BITS as usize);

/// Address-space reservations for the interned stacks (untouched pages cost
/// nothing; the mapping uses `MAP_NORESERVE`).
const MAX_STACKS: u64 = MAX_STACK_ID as u64 + 1;
const MAX_FRAMES: u64 = 1 << 27;

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

/// One step of the stack hash. Frames are fed outermost first, so the hash
/// of a stack's outer part can be kept and extended by its inner frames.
#[inline(always)]
fn chain(above: u64, pc: u64) -> u64 {
    (above.rotate_left(26) ^ pc).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The hash of a stack from the chain value of its innermost frame.
#[inline(always)]
fn finish(chained: u64, len: usize) -> u64 {
    let h = chained ^ len as u64;
    let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^ (h >> 32)
}

/// Whether two stacks of the same length are equal: one branch at the end
/// instead of a `memcmp` call, which on a stack of ~25 frames costs more
/// than the comparison.
#[inline(always)]
fn same_frames(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0
}

/// The chain value above the outermost frame.
const CHAIN_SEED: u64 = 0x6A09_E667_F3BC_C908;

/// The hash [`Walker::hash`] gives for these frames (innermost first).
fn hash_frames(frames: &[u64]) -> u64 {
    let chained = frames
        .iter()
        .rev()
        .fold(CHAIN_SEED, |above, &pc| chain(above, pc));
    finish(chained, frames.len())
}

/// A frame record the walk read: its address and the two words found
/// there (the caller's frame pointer and the return address).
#[derive(Clone, Copy)]
struct Frame {
    fp: usize,
    next: usize,
    return_address: usize,
}

/// The calling thread's stack walker. It keeps its last walk, and the next
/// walk stops following the frame-pointer chain at the first frame that
/// walk also went through, once it has checked that every frame above is
/// unchanged: consecutive allocations usually share all but a few inner
/// frames, and checking a remembered frame is two independent loads where
/// following the chain is a dependent one per frame.
///
/// The last walk is stored innermost frame at `MAX_DEPTH - len`, outermost
/// at `MAX_DEPTH - 1`, so a new walk only rewrites its new inner frames.
pub struct Walker {
    len: usize,
    /// The last walk was cut at [`MAX_DEPTH`]: its outermost frame is not
    /// the stack's, so nothing of it can be reused.
    truncated: bool,
    /// The stack bounds of the last walk; reuse needs the same bounds.
    stack: (usize, usize),
    /// Where the last walk ended by reading a zero return address (0 when
    /// it ended at a frame pointer outside the stack instead): reuse needs
    /// that word to still be zero.
    zero_return_at: usize,
    frames: [Frame; MAX_DEPTH],
    pcs: [u64; MAX_DEPTH],
    /// `chained[p]`: the hash chain over `pcs[MAX_DEPTH - 1]` down to `pcs[p]`.
    chained: [u64; MAX_DEPTH],
    /// Outer frames the last walk took over from the one before.
    reused: usize,
    /// The lowest position where the next walk first tries to rejoin: the
    /// frames below where the last walk rejoined were new then and likely
    /// change again, and a failed check costs a pass over the frames
    /// above. Every `RETRY_LOW`th walk tries from the innermost frame, so
    /// the hint can also move down.
    rejoin_hint: usize,
    walks: u32,
}

/// How often a walk ignores the rejoin hint (a power of two).
const RETRY_LOW: u32 = 64;

/// What a walk needs from a frame pointer before reading `[fp, fp + 16)`.
#[inline(always)]
fn readable_frame(fp: usize, previous: usize, floor: usize, high: usize) -> bool {
    fp > previous
        && fp >= floor
        && fp % align_of::<usize>() == 0
        && fp
            .checked_add(2 * size_of::<usize>())
            .is_some_and(|end| end <= high)
}

/// Reads the two words of the frame record at `fp`.
///
/// # Safety
/// `fp .. fp + 16` must be aligned and inside the calling thread's mapped
/// stack.
#[inline(always)]
unsafe fn read_frame(fp: usize) -> (usize, usize) {
    // Volatile: these words belong to frames the compiler does not see.
    // SAFETY: per the contract, the words are readable and aligned.
    unsafe {
        let words = fp as *const usize;
        (words.read_volatile(), words.add(1).read_volatile())
    }
}

impl Walker {
    pub const fn new() -> Walker {
        Walker {
            len: 0,
            truncated: false,
            stack: (0, 0),
            zero_return_at: 0,
            frames: [Frame {
                fp: 0,
                next: 0,
                return_address: 0,
            }; MAX_DEPTH],
            pcs: [0; MAX_DEPTH],
            chained: [0; MAX_DEPTH],
            reused: 0,
            rejoin_hint: 0,
            walks: 0,
        }
    }

    /// The last walk's return addresses, innermost first.
    #[inline]
    pub fn frames(&self) -> &[u64] {
        &self.pcs[MAX_DEPTH - self.len..]
    }

    /// The last walk's hash, equal to `hash_frames(self.frames())`.
    #[inline]
    pub fn hash(&self) -> u64 {
        let chained = match self.len {
            0 => CHAIN_SEED,
            len => self.chained[MAX_DEPTH - len],
        };
        finish(chained, self.len)
    }

    /// Whether the last walk stopped at [`MAX_DEPTH`] with frames left.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Whether the remembered frames at `from ..` (and the end of the last
    /// walk) still hold what the last walk read there.
    #[inline]
    fn unchanged_from(&self, from: usize) -> bool {
        if !self.end_unchanged() {
            return false;
        }
        let mut differ = 0;
        for frame in &self.frames[from.min(MAX_DEPTH)..] {
            // SAFETY: each remembered record was checked to lie inside this
            // thread's stack when it was read, and the bounds are unchanged.
            // These loads do not depend on each other, unlike the chain's.
            let (next, return_address) = unsafe { read_frame(frame.fp) };
            differ |= (next ^ frame.next) | (return_address ^ frame.return_address);
        }
        differ == 0
    }

    /// The highest position in `from ..` whose frame changed (`MAX_DEPTH`
    /// for the end), or `None` when none did.
    #[inline(never)]
    fn highest_changed(&self, from: usize) -> Option<usize> {
        if !self.end_unchanged() {
            return Some(MAX_DEPTH);
        }
        // A bit per frame, the outermost in the highest bit.
        let mut changed = 0u64;
        for position in (from..MAX_DEPTH).rev() {
            let frame = self.frames[position];
            // SAFETY: as in `unchanged_from`.
            let (next, return_address) = unsafe { read_frame(frame.fp) };
            let differs = (next ^ frame.next) | (return_address ^ frame.return_address);
            changed = changed << 1 | u64::from(differs != 0);
        }
        match changed {
            0 => None,
            _ => Some(from + (u64::BITS - 1 - changed.leading_zeros()) as usize),
        }
    }

    /// Whether the word that ended the last walk with a zero return
    /// address still is zero.
    #[inline]
    fn end_unchanged(&self) -> bool {
        if self.zero_return_at == 0 {
            return true;
        }
        // SAFETY: the last walk read this record after checking it lay
        // inside this thread's stack, whose bounds are unchanged.
        let (_, return_address) = unsafe { read_frame(self.zero_return_at) };
        return_address == 0
    }

    /// Walks the calling thread's frame-pointer chain. `stack` is the
    /// thread's stack `[low, high)`; an empty range records nothing. Every
    /// frame pointer is checked to lie inside it, above the previous one and
    /// aligned before it is read, so a frame compiled without frame pointers
    /// (whose `rbp` holds anything) ends the walk instead of faulting.
    #[inline(never)]
    pub fn walk(&mut self, stack: (usize, usize)) {
        let (low, high) = stack;
        let mut fp = frame_pointer();
        // Our own frame sits at the lowest address of the chain; anything
        // below it is not part of this call stack.
        let floor = fp.max(low);
        let mut previous = floor.saturating_sub(1);
        let reusable = self.stack == stack && !self.truncated;
        // `cursor`: the lowest remembered frame at or above `fp`;
        // `rejoin_from`: the lowest remembered frame the walk may rejoin at,
        // known once the first matching frame has had the frames above it
        // checked (those above the highest changed one are unchanged).
        let mut cursor = if reusable {
            MAX_DEPTH - self.len
        } else {
            MAX_DEPTH
        };
        self.walks = self.walks.wrapping_add(1);
        if self.walks % RETRY_LOW == 0 {
            self.rejoin_hint = 0;
        }
        let mut rejoin_from = None;
        let mut fresh = [const { MaybeUninit::<Frame>::uninit() }; MAX_DEPTH];
        let mut count = 0;
        let mut zero_return_at = 0;
        let mut rejoined = false;
        while count < MAX_DEPTH {
            if !readable_frame(fp, previous, floor, high) {
                break;
            }
            // SAFETY: `fp .. fp + 16` is aligned and inside this thread's
            // mapped stack (checked just above against its pthread bounds).
            let (next, return_address) = unsafe { read_frame(fp) };
            while cursor < MAX_DEPTH && self.frames[cursor].fp < fp {
                cursor += 1;
            }
            if cursor < MAX_DEPTH {
                let known = self.frames[cursor];
                let same =
                    known.fp == fp && known.next == next && known.return_address == return_address;
                if same && cursor >= self.rejoin_hint {
                    let from = *rejoin_from.get_or_insert_with(|| {
                        if self.unchanged_from(cursor + 1) {
                            cursor
                        } else {
                            self.highest_changed(cursor + 1)
                                .map_or(cursor, |changed| changed + 1)
                        }
                    });
                    if cursor >= from {
                        if count <= cursor {
                            rejoined = true;
                            break;
                        }
                        // Deeper than MAX_DEPTH: walk it all, truncated.
                        cursor = MAX_DEPTH;
                    }
                }
            }
            if return_address == 0 {
                zero_return_at = fp;
                break;
            }
            fresh[count].write(Frame {
                fp,
                next,
                return_address,
            });
            count += 1;
            previous = fp;
            fp = next;
        }
        let (top, above) = if rejoined {
            // The chain goes on as the last walk's did: if that ended on a
            // readable record with a zero return address, a walk of
            // exactly MAX_DEPTH frames stops with that record unread.
            self.truncated = count == cursor && self.zero_return_at != 0;
            (cursor, self.chained[cursor])
        } else {
            self.zero_return_at = zero_return_at;
            self.stack = stack;
            self.truncated = count == MAX_DEPTH && readable_frame(fp, previous, floor, high);
            (MAX_DEPTH, CHAIN_SEED)
        };
        let base = top - count;
        let mut chained = above;
        for index in (0..count).rev() {
            // SAFETY: `fresh[..count]` were written in the loop above.
            let frame = unsafe { fresh[index].assume_init() };
            let position = base + index;
            chained = chain(chained, frame.return_address as u64);
            self.frames[position] = frame;
            self.pcs[position] = frame.return_address as u64;
            self.chained[position] = chained;
        }
        self.len = MAX_DEPTH - base;
        self.reused = MAX_DEPTH - top;
        self.rejoin_hint = if rejoined { top } else { base };
    }

    /// Makes `frames` (innermost first) the last walk, reusable by none.
    #[cfg(test)]
    pub fn set(&mut self, frames: &[u64]) {
        *self = Walker::new();
        self.len = frames.len();
        let base = MAX_DEPTH - frames.len();
        let mut chained = CHAIN_SEED;
        for (index, &pc) in frames.iter().enumerate().rev() {
            chained = chain(chained, pc);
            self.pcs[base + index] = pc;
            self.chained[base + index] = chained;
        }
    }
}

thread_local! {
    /// The calling thread's walker, with its last walk. No destructor: it
    /// stays usable in thread-local destructors.
    static WALKER: core::cell::UnsafeCell<Walker> =
        const { core::cell::UnsafeCell::new(Walker::new()) };
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
    pub fn intern(&self, walk: &Walker) -> u32 {
        let frames = walk.frames();
        if frames.is_empty() {
            return 0;
        }
        let hash = walk.hash();
        let tag = (hash >> 32) << 32;
        let flags = if walk.truncated() {
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
    use core::hint::black_box;

    #[inline(never)]
    fn nested(depth: usize, stack: (usize, usize), walker: &mut Walker) {
        if depth == 0 {
            walker.walk(stack);
        } else {
            nested(depth - 1, stack, walker);
        }
        black_box(depth);
    }

    fn this_thread_stack() -> (usize, usize) {
        crate::threads::current_stack_bounds()
    }

    fn fresh_walk(depth: usize) -> Vec<u64> {
        let mut walker = Walker::new();
        nested(depth, this_thread_stack(), &mut walker);
        assert_eq!(walker.reused, 0);
        walker.frames().to_vec()
    }

    #[test]
    fn walk_sees_nested_calls_and_stops_at_the_stack_top() {
        let stack = this_thread_stack();
        assert!(stack.0 < stack.1);
        let shallow = fresh_walk(0);
        let deep = fresh_walk(10);
        assert!(shallow.len() >= 2, "{}", shallow.len());
        assert_eq!(deep.len(), (shallow.len() + 10).min(MAX_DEPTH));
        let mut deeper = Walker::new();
        nested(100, stack, &mut deeper);
        assert_eq!(deeper.frames().len(), MAX_DEPTH);
        assert!(deeper.truncated());
    }

    #[test]
    fn walk_with_bogus_bounds_records_nothing() {
        let mut walker = Walker::new();
        walker.walk((0, 0));
        assert_eq!(walker.frames().len(), 0);
        walker.walk((16, 4096));
        assert_eq!(walker.frames().len(), 0);
        assert_eq!(walker.hash(), hash_frames(&[]));
    }

    #[test]
    fn walk_hash_equals_the_hash_of_its_frames() {
        let mut walker = Walker::new();
        nested(7, this_thread_stack(), &mut walker);
        assert_eq!(walker.hash(), hash_frames(walker.frames()));
        let mut other = Walker::new();
        other.set(&walker.frames()[1..]);
        assert_ne!(other.hash(), walker.hash());
        assert_eq!(other.hash(), hash_frames(&walker.frames()[1..]));
    }

    /// A walker that remembers its last walk, and one made new for each walk.
    type Walkers = (Walker, Walker);

    /// Two routes to `down` whose frames have the same size, so the frames
    /// below them sit at the same addresses whichever route was taken and
    /// only the return address into the route tells them apart.
    #[inline(never)]
    fn route_a(depth: usize, walkers: &mut Walkers) {
        down(depth, walkers);
        black_box(0);
    }

    #[inline(never)]
    fn route_b(depth: usize, walkers: &mut Walkers) {
        down(depth, walkers);
        black_box(1);
    }

    #[inline(never)]
    fn down(depth: usize, walkers: &mut Walkers) {
        match depth {
            0 => walk_both(walkers),
            _ if depth % 3 == 0 => route_a(depth - 1, walkers),
            _ => down(depth - 1, walkers),
        }
        black_box(depth);
    }

    /// The remembering walker and a new one, from the same frame.
    #[inline(never)]
    fn walk_both(walkers: &mut Walkers) {
        let stack = this_thread_stack();
        walkers.0.walk(stack);
        walkers.1 = Walker::new();
        walkers.1.walk(stack);
    }

    #[test]
    fn a_walk_that_reuses_the_last_one_equals_a_walk_from_scratch() {
        let mut walkers = Box::new((Walker::new(), Walker::new()));
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut reused_frames = 0;
        for round in 0..3000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let depth = (rng % 40) as usize;
            if rng >> 63 == 0 {
                route_a(depth, &mut walkers);
            } else {
                route_b(depth, &mut walkers);
            }
            let (remembering, fresh) = &*walkers;
            // The innermost frame is the return into `walk_both`, from its
            // two different calls.
            assert_eq!(
                remembering.frames()[1..],
                fresh.frames()[1..],
                "round {round}, depth {depth}"
            );
            assert_eq!(remembering.frames().len(), fresh.frames().len());
            assert!(!remembering.truncated());
            assert_eq!(remembering.hash(), hash_frames(remembering.frames()));
            reused_frames += remembering.reused;
        }
        // Most walks rejoin the previous one somewhere above `walk_both`.
        assert!(reused_frames > 3000 * 5, "{reused_frames}");
    }

    #[test]
    fn a_changed_outer_frame_is_noticed() {
        let mut walkers = Box::new((Walker::new(), Walker::new()));
        // One call site for all three, so only the route differs.
        let routes: [fn(usize, &mut Walkers); 3] = [route_a, route_b, route_b];
        let mut walks = Vec::new();
        for route in routes {
            route(5, &mut walkers);
            assert_eq!(walkers.0.frames()[1..], walkers.1.frames()[1..]);
            walks.push((walkers.0.frames().to_vec(), walkers.0.reused));
        }
        assert_ne!(walks[0].0, walks[1].0);
        assert_eq!(walks[1].0, walks[2].0);
        // Nothing changed between the last two: the walk rejoins the one
        // before (where, depends on the hint the second walk left).
        assert!(walks[2].1 > 0);
    }

    /// Runs `down_to_walk` on a stack whose outermost frame record is
    /// `{0, 0}`: the walk ends there on a zero return address.
    #[cfg(target_arch = "x86_64")]
    fn walk_above_a_zero_record(depth: usize, walkers: &mut Walkers) {
        struct Call<'a> {
            depth: usize,
            walkers: &'a mut Walkers,
        }
        extern "C" fn entry(call: *mut Call<'_>) {
            // SAFETY: `walk_above_a_zero_record` passes its own `Call`.
            let call = unsafe { &mut *call };
            down_to_walk(call.depth, call.walkers);
            black_box(());
        }
        #[inline(never)]
        fn down_to_walk(depth: usize, walkers: &mut Walkers) {
            match depth {
                0 => walk_both(walkers),
                _ => down_to_walk(depth - 1, walkers),
            }
            black_box(depth);
        }
        let record = [0usize; 2];
        let record = black_box(record.as_ptr());
        let mut call = Call { depth, walkers };
        // SAFETY: calls `entry` by the C ABI with a 16-byte aligned stack
        // and `rbp` pointing at a zeroed frame record on this stack, then
        // restores `rsp` and `rbp`; `r12` is declared clobbered.
        unsafe {
            core::arch::asm!(
                "push rbp",
                "mov r12, rsp",
                "and rsp, -16",
                "mov rbp, {record}",
                "call {entry}",
                "mov rsp, r12",
                "pop rbp",
                record = in(reg) record,
                entry = sym entry,
                in("rdi") &mut call as *mut Call<'_>,
                out("r12") _,
                clobber_abi("C"),
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_reused_walk_of_exactly_max_depth_is_truncated_like_a_new_one() {
        let mut walkers = Box::new((Walker::new(), Walker::new()));
        walk_above_a_zero_record(10, &mut walkers);
        assert_ne!(walkers.0.zero_return_at, 0);
        assert!(!walkers.0.truncated());
        let shallow = walkers.0.frames().len();
        // Deep enough for the walk to stop at MAX_DEPTH frames, with the
        // zero record just past them.
        walk_above_a_zero_record(10 + MAX_DEPTH - shallow, &mut walkers);
        let (remembering, fresh) = &*walkers;
        assert!(remembering.reused > 0);
        assert_eq!(remembering.frames().len(), MAX_DEPTH);
        assert_eq!(remembering.frames()[1..], fresh.frames()[1..]);
        assert!(fresh.truncated());
        assert!(remembering.truncated());
    }

    #[test]
    fn interner_returns_one_id_per_distinct_stack() {
        let interner = StackInterner::new();
        let mut walk = Walker::new();
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
