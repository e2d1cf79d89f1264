//! The allocation stack walk: bounded by the thread's stack, and rejoining
//! the thread's last walk.
//!
//! The walk goes from frame to frame by each frame's unwind rule
//! ([`crate::unwind`]): where its canonical frame address (CFA) is, from the
//! stack pointer or the frame pointer, so the return address is the word at
//! `CFA - 8`, and where the caller's frame pointer was saved. In code built
//! with frame pointers the rule is "CFA = fp + 16, fp saved at CFA - 16",
//! the classic frame-pointer walk; in code built without them it comes from
//! the module's CFI. Every word is checked to lie inside the current thread's
//! stack and aligned (the return address above the previous frame) before
//! it is read, so a wrong rule or a frame pointer that holds anything ends
//! the walk instead of faulting.
//!
//! Each thread keeps its last walk ([`Walker`]) and rejoins it: the result
//! is always the stack a walk from scratch would give, since every frame
//! taken over is read again and compared, but the reads no longer wait on
//! each other. A frame popped and pushed again can hold the same two words
//! under different callers, so no exact method can skip reading a frame.

use core::mem::MaybeUninit;

use crate::unwind;

/// The deepest stack recorded; deeper ones keep their innermost frames and
/// are flagged truncated.
pub const MAX_DEPTH: usize = 64;

// `Walker::highest_changed` keeps a bit per frame in a u64.
const _: () = assert!(MAX_DEPTH <= u64::BITS as usize);

/// The calling function's code address, stack pointer and frame pointer,
/// read together so that the unwind rule for that address applies to them.
#[inline(always)]
fn registers() -> (usize, usize, usize) {
    let (pc, sp, fp): (usize, usize, usize);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: copies registers and computes an address; no memory is touched.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: copies registers; no memory is touched.
    unsafe {
        core::arch::asm!(
            "adr {pc}, .",
            "mov {sp}, sp",
            "mov {fp}, x29",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        (pc, sp, fp) = (0, 0, 0);
    }
    (pc, sp, fp)
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

/// The chain value above the outermost frame.
const CHAIN_SEED: u64 = 0x6A09_E667_F3BC_C908;

/// The hash [`Walker::hash`] gives for these frames (innermost first).
#[cfg(test)]
fn hash_frames(frames: &[u64]) -> u64 {
    let chained = frames
        .iter()
        .rev()
        .fold(CHAIN_SEED, |above, &pc| chain(above, pc));
    finish(chained, frames.len())
}

/// A frame the walk went through: where it was and the words read there.
/// The caller's registers follow from it alone (its stack pointer is the
/// CFA, its code address the return address, its frame pointer `next`), so
/// two walks that reach the same frame go on alike wherever the words above
/// are unchanged.
#[derive(Clone, Copy)]
struct Frame {
    /// The canonical frame address; the return address is just below it.
    cfa: usize,
    /// The caller's frame pointer: the word at `fp_slot`, or the frame's
    /// own frame pointer when the frame left the register alone.
    next: usize,
    return_address: usize,
    /// Where `next` was read; 0 when it was not read.
    fp_slot: usize,
}

impl Frame {
    /// Whether the words this frame was read from still hold what they did.
    ///
    /// # Safety
    /// The frame must have been read from the calling thread's stack, whose
    /// bounds have not changed since.
    #[inline(always)]
    unsafe fn differs(&self) -> usize {
        // Without a slot, the return address is read twice instead: no
        // branch in the loops over remembered frames.
        let return_at = self.cfa - size_of::<usize>();
        let (slot, expected) = match self.fp_slot {
            0 => (return_at, self.return_address),
            slot => (slot, self.next),
        };
        // SAFETY: per the contract, both words were checked to lie inside
        // this thread's stack when they were read. These loads do not
        // depend on each other, unlike the walk's.
        unsafe { (read_word(return_at) ^ self.return_address) | (read_word(slot) ^ expected) }
    }
}

/// What one step of the walk found.
enum Step {
    /// The caller's frame, and whether its rule was other than the
    /// frame-pointer one (from CFI).
    Frame(Frame, bool),
    /// A return address of zero, read at this address: the stack's end, as
    /// thread entry points leave it.
    ZeroReturn(usize),
    /// The end: no caller, or none the walk can find.
    End,
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
    /// Bit `p`: `frames[p].by_cfi`.
    by_cfi: u64,
    /// `chained[p]`: the hash chain over `pcs[MAX_DEPTH - 1]` down to `pcs[p]`.
    chained: [u64; MAX_DEPTH],
    /// Outer frames the last walk took over from the one before.
    reused: usize,
    /// Unwind rules of the code this thread's walks went through lately.
    rules: unwind::RecentRules,
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

/// Reads the word at `at`.
///
/// # Safety
/// `at .. at + 8` must be aligned and inside the calling thread's mapped
/// stack.
#[inline(always)]
unsafe fn read_word(at: usize) -> usize {
    // Volatile: these words belong to frames the compiler does not see.
    // SAFETY: per the contract, the word is readable and aligned.
    unsafe { (at as *const usize).read_volatile() }
}

/// `rule.cfa(sp, fp)` and `rule.saved_fp_below_cfa()`. Most frames follow
/// the frame-pointer rule. Testing for it (a branch the CPU predicts) lets
/// the next loads start from `fp` at once, where decoding the rule into
/// offsets makes every step wait for the rule's load first.
#[inline(always)]
fn cfa_and_saved_fp(rule: unwind::Rule, sp: usize, fp: usize) -> (Option<usize>, usize) {
    if rule == unwind::Rule::FRAME_POINTER {
        // The rule's offsets: CFA = fp + 16, caller's fp at CFA - 16 (the
        // rule counts in 8-byte words whatever the pointer width).
        (fp.checked_add(16), 16)
    } else {
        (rule.cfa(sp, fp), rule.saved_fp_below_cfa())
    }
}

/// One step of the walk from a frame with stack pointer `sp`, frame
/// pointer `fp` and code at `code` (a return address minus one, or the
/// walk's own address). Every word is read only after it is checked to lie
/// in `[floor, high)`, aligned, with the caller's frame above this one.
#[inline(always)]
fn step(
    rules: &mut unwind::RecentRules,
    code: usize,
    sp: usize,
    fp: usize,
    floor: usize,
    high: usize,
) -> Step {
    const WORD: usize = size_of::<usize>();
    let rule = rules.rule_for(code);
    let (cfa, saved_fp_below) = cfa_and_saved_fp(rule, sp, fp);
    let Some(cfa) = cfa else {
        return Step::End;
    };
    let readable = cfa > sp
        && cfa % WORD == 0
        && cfa <= high
        && cfa
            .checked_sub(saved_fp_below.max(WORD))
            .is_some_and(|lowest| lowest >= floor);
    if !readable {
        return Step::End;
    }
    let return_at = cfa - WORD;
    // SAFETY: `return_at` is aligned and in `[floor, high)`, a part of this
    // thread's stack above the walk's own frame.
    let return_address = unsafe { read_word(return_at) };
    if return_address == 0 {
        return Step::ZeroReturn(return_at);
    }
    let (next, fp_slot) = match saved_fp_below {
        0 => (fp, 0),
        below => {
            let slot = cfa - below;
            // SAFETY: as above: `slot` is aligned, at or above `floor` and
            // below `return_at`.
            (unsafe { read_word(slot) }, slot)
        }
    };
    Step::Frame(
        Frame {
            cfa,
            next,
            return_address,
            fp_slot,
        },
        rule != unwind::Rule::FRAME_POINTER,
    )
}

/// `word` with its bits `base .. base + count` replaced by the low `count`
/// bits of `bits` (whose higher bits are zero), in one step; `base + count
/// <= 64`, either may be 0 or 64.
#[inline(always)]
fn with_bits_at(word: u64, bits: u64, base: usize, count: usize) -> u64 {
    let mask = u64::MAX.unbounded_shr(u64::BITS - count as u32);
    word & !mask.unbounded_shl(base as u32) | bits.unbounded_shl(base as u32)
}

impl Walker {
    pub const fn new() -> Walker {
        Walker {
            len: 0,
            truncated: false,
            stack: (0, 0),
            zero_return_at: 0,
            frames: [Frame {
                cfa: 0,
                next: 0,
                return_address: 0,
                fp_slot: 0,
            }; MAX_DEPTH],
            pcs: [0; MAX_DEPTH],
            by_cfi: 0,
            chained: [0; MAX_DEPTH],
            reused: 0,
            rules: unwind::RecentRules::new(),
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
            // SAFETY: each remembered frame was read from this thread's
            // stack, and the bounds are unchanged.
            differ |= unsafe { frame.differs() };
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
            // SAFETY: as in `unchanged_from`.
            let differs = unsafe { self.frames[position].differs() };
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
        // SAFETY: the last walk read this word after checking it lay inside
        // this thread's stack, whose bounds are unchanged.
        unsafe { read_word(self.zero_return_at) == 0 }
    }

    /// Walks the calling thread's stack. `stack` is the thread's stack
    /// `[low, high)`; an empty range records nothing. Every word is checked
    /// to lie inside it and aligned before it is read (see [`step`]), so a
    /// wrong rule or a frame pointer that holds anything ends the walk
    /// instead of faulting.
    #[inline(never)]
    pub fn walk(&mut self, stack: (usize, usize)) {
        let (low, high) = stack;
        let (mut code, mut sp, mut fp) = registers();
        // Our own frame is the lowest of this call stack; anything below it
        // is not part of it.
        let floor = sp.max(low);
        let reusable = self.stack == stack && !self.truncated;
        // `cursor`: the lowest remembered frame at or above the current
        // one; `rejoin_from`: the lowest remembered frame the walk may
        // rejoin at, known once the first matching frame has had the frames
        // above it checked (those above the highest changed one are
        // unchanged).
        let mut cursor = if reusable {
            MAX_DEPTH - self.len
        } else {
            MAX_DEPTH
        };
        self.walks = self.walks.wrapping_add(1);
        if self.walks.is_multiple_of(RETRY_LOW) {
            self.rejoin_hint = 0;
        }
        let mut rejoin_from = None;
        let mut fresh = [const { MaybeUninit::<Frame>::uninit() }; MAX_DEPTH];
        let mut count = 0;
        // Bit `i`: `fresh[i]` was found through CFI.
        let mut fresh_by_cfi = 0u64;
        let mut zero_return_at = 0;
        let mut rejoined = false;
        // The step after the last frame taken, when the walk stops at
        // `MAX_DEPTH`: whether frames were left decides `truncated`.
        let mut beyond = false;
        loop {
            let (frame, by_cfi) = match step(&mut self.rules, code, sp, fp, floor, high) {
                Step::Frame(frame, by_cfi) => (frame, by_cfi),
                Step::ZeroReturn(at) => {
                    zero_return_at = at;
                    break;
                }
                Step::End => break,
            };
            if count == MAX_DEPTH {
                beyond = true;
                break;
            }
            while cursor < MAX_DEPTH && self.frames[cursor].cfa < frame.cfa {
                cursor += 1;
            }
            if cursor < MAX_DEPTH {
                let known = self.frames[cursor];
                let same = known.cfa == frame.cfa
                    && known.next == frame.next
                    && known.return_address == frame.return_address;
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
                            // The same frame, possibly reached by other
                            // code with another rule (a call through a
                            // pointer): keep where this walk read it from.
                            self.frames[cursor].fp_slot = frame.fp_slot;
                            self.by_cfi =
                                self.by_cfi & !(1 << cursor) | u64::from(by_cfi) << cursor;
                            rejoined = true;
                            break;
                        }
                        // Deeper than MAX_DEPTH: walk it all, truncated.
                        cursor = MAX_DEPTH;
                    }
                }
            }
            fresh[count].write(frame);
            fresh_by_cfi |= u64::from(by_cfi) << count;
            count += 1;
            code = frame.return_address - 1;
            sp = frame.cfa;
            fp = frame.next;
        }
        let (top, above) = if rejoined {
            // The walk goes on as the last one did, which was not truncated
            // (or it would not be reusable).
            self.truncated = false;
            (cursor, self.chained[cursor])
        } else {
            self.zero_return_at = zero_return_at;
            self.stack = stack;
            self.truncated = beyond;
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
        self.by_cfi = with_bits_at(self.by_cfi, fresh_by_cfi, base, count);
        self.len = MAX_DEPTH - base;
        self.reused = MAX_DEPTH - top;
        self.rejoin_hint = if rejoined { top } else { base };
    }

    /// Whether a frame of the last walk was found through CFI rather than
    /// by the frame-pointer rule.
    #[inline]
    pub fn any_by_cfi(&self) -> bool {
        self.by_cfi
            .checked_shr((MAX_DEPTH - self.len) as u32)
            .is_some_and(|above| above != 0)
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

// A walker needs no destructor, so its thread-local is never destroyed:
// the allocations of exit handlers and of thread-local destructors, which
// run after the thread's destructors, are walked like any other (a
// destroyed thread-local would panic inside the program's `malloc`).
const _: () = assert!(!core::mem::needs_drop::<Walker>());

thread_local! {
    /// The calling thread's walker, with its last walk. No destructor: it
    /// stays usable in thread-local destructors.
    pub(crate) static WALKER: core::cell::UnsafeCell<Walker> =
        const { core::cell::UnsafeCell::new(Walker::new()) };
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
            _ if depth.is_multiple_of(3) => route_a(depth - 1, walkers),
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
            // Shallow enough that no walk reaches MAX_DEPTH: the walk goes on
            // through the C library's thread start, some ten frames.
            let depth = (rng % 30) as usize;
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
    fn a_walk_of_exactly_max_depth_that_ends_there_is_whole_reused_or_not() {
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
        // The zero record just past the last frame ends the stack: nothing
        // is missing.
        assert!(!fresh.truncated());
        assert!(!remembering.truncated());
    }

    #[test]
    fn the_frame_pointer_shortcut_gives_the_rules_own_offsets() {
        let rules = [
            unwind::Rule::FRAME_POINTER,
            unwind::Rule::OUTERMOST,
            unwind::Rule::new(false, 0x640, 0).unwrap(),
            unwind::Rule::new(true, 16, 0).unwrap(),
            unwind::Rule::new(false, 24, 16).unwrap(),
        ];
        let values = [
            0,
            8,
            16,
            0x7ffc_0000_1000,
            usize::MAX - 17,
            usize::MAX - 16,
            usize::MAX - 15,
            usize::MAX - 8,
            usize::MAX,
        ];
        for rule in rules {
            for sp in values {
                for fp in values {
                    assert_eq!(
                        cfa_and_saved_fp(rule, sp, fp),
                        (rule.cfa(sp, fp), rule.saved_fp_below_cfa()),
                        "{rule:?} sp {sp:#x} fp {fp:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn fresh_bits_set_in_one_step_as_frame_by_frame() {
        let words = [0, u64::MAX, 0x5555_5555_5555_5555, 0x8000_0000_0000_0001];
        let patterns = [
            u64::MAX,
            0xAAAA_AAAA_AAAA_AAAA,
            0x5555_5555_5555_5555,
            1 << 63 | 1,
        ];
        for count in 0..=MAX_DEPTH {
            for base in 0..=MAX_DEPTH - count {
                for word in words {
                    for pattern in patterns {
                        // The walk's fresh bits: none at or above `count`.
                        let bits = pattern & u64::MAX.checked_shr(64 - count as u32).unwrap_or(0);
                        let mut expected = word;
                        for index in 0..count {
                            let position = base + index;
                            let bit = bits >> index & 1;
                            expected = expected & !(1 << position) | bit << position;
                        }
                        assert_eq!(
                            with_bits_at(word, bits, base, count),
                            expected,
                            "count {count} base {base} word {word:#x} bits {bits:#x}"
                        );
                    }
                }
            }
        }
    }
}
