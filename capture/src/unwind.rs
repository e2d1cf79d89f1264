//! Unwind rules from the modules' call frame information (CFI: `.eh_frame`,
//! found through `.eh_frame_hdr`), so that allocation stacks go through code
//! built without frame pointers: most C and C++ a distribution ships.
//!
//! The stack walk ([`crate::walk::Walker`]) asks, for each frame, how to
//! find its caller: a [`Rule`] (where the canonical frame address is, and
//! where the caller's frame pointer was saved). A rule depends only on the
//! code address, so it is computed from CFI once per address and kept in a
//! lock-free direct-mapped cache of single words: a walk through code seen
//! before costs one load per frame beyond the frame's own words.
//!
//! A cache miss parses the module's CFI with `gimli` (no allocation: its
//! evaluation context is the thread's own, beside its walker, so no lock of
//! ours is held while the loader's is awaited) inside `dl_iterate_phdr`'s
//! callback, so the module cannot be unloaded while its sections are read.
//! Addresses without CFI (hand-written assembly, code generated at run
//! time), and rules the one-word encoding cannot hold (a CFA computed by a
//! DWARF expression, as GCC writes for functions that realign the stack and
//! for signal frames; a frame over 32 KiB), get the frame-pointer rule: the
//! walk follows the frame pointer there, as it did before CFI, bounded by
//! the thread's stack.
//!
//! Only x86_64 reads CFI; elsewhere every frame gets the frame-pointer rule.

use core::sync::atomic::{AtomicU64, Ordering};

/// How to find a frame's caller, given the frame's stack pointer `sp`, its
/// frame pointer `fp` and its code address:
///
/// - the canonical frame address (CFA) is `sp + offset` or `fp + offset`,
/// - the return address is the word at `CFA - 8` (x86_64 and aarch64 with
///   frame records alike),
/// - the caller's frame pointer is the word at `CFA - 8k`, or `fp` itself.
///
/// Packed in [`Rule::BITS`] bits so that a cache entry holds a code address
/// and its rule in one atomic word: the CFA offset in 8-byte units (0: the
/// frame has no caller), whether it is based on `fp`, and `k` (0: `fp` is
/// unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule(u32);

const OFFSET_BITS: u32 = 12;
const FP_BASE: u32 = 1 << OFFSET_BITS;
const SLOT_SHIFT: u32 = OFFSET_BITS + 1;
const SLOT_BITS: u32 = 4;

impl Rule {
    const BITS: u32 = SLOT_SHIFT + SLOT_BITS;

    /// A frame record: `[fp]` is the caller's frame pointer and `[fp + 8]`
    /// the return address, so the CFA is `fp + 16`.
    pub const FRAME_POINTER: Rule = Rule(FP_BASE | 2 | 2 << SLOT_SHIFT);

    /// The outermost frame: its return address is undefined.
    pub const OUTERMOST: Rule = Rule(0);

    /// The rule `CFA = (fp if from_fp else sp) + cfa_offset`, caller's
    /// frame pointer at `CFA - saved_fp_at` (0: unchanged); `None` if it
    /// does not fit the encoding.
    pub fn new(from_fp: bool, cfa_offset: i64, saved_fp_at: i64) -> Option<Rule> {
        let words = u32::try_from(cfa_offset / 8).ok()?;
        let slot = u32::try_from(saved_fp_at / 8).ok()?;
        let fits = cfa_offset % 8 == 0
            && saved_fp_at % 8 == 0
            && (1..1 << OFFSET_BITS).contains(&words)
            && slot < 1 << SLOT_BITS
            && (slot == 0 || slot >= 2);
        // Packed only once known to fit: the shift could overflow before.
        if !fits {
            return None;
        }
        Some(Rule(
            words | if from_fp { FP_BASE } else { 0 } | slot << SLOT_SHIFT,
        ))
    }

    /// The canonical frame address of a frame with these registers; `None`
    /// for [`Rule::OUTERMOST`].
    #[inline(always)]
    pub fn cfa(self, sp: usize, fp: usize) -> Option<usize> {
        let words = (self.0 & (FP_BASE - 1)) as usize;
        if words == 0 {
            return None;
        }
        let base = if self.0 & FP_BASE != 0 { fp } else { sp };
        base.checked_add(words * 8)
    }

    /// How far below the CFA the caller's frame pointer was saved; 0 when
    /// the frame left it in the register.
    #[inline(always)]
    pub fn saved_fp_below_cfa(self) -> usize {
        ((self.0 >> SLOT_SHIFT) & ((1 << SLOT_BITS) - 1)) as usize * 8
    }
}

/// Entries of the rule cache (a power of two): 256 KiB of zeroed static
/// memory, paged in only where used.
const CACHE_ENTRIES: usize = 1 << 15;

/// Code addresses above this do not fit an entry and are never cached
/// (user space on x86_64 and aarch64 ends below it).
const MAX_CACHED_ADDRESS: usize = 1 << (u64::BITS - Rule::BITS);

/// `address << Rule::BITS | rule`, 0 meaning empty. One word per entry, so
/// a reader sees a whole entry or none without a lock.
static CACHE: [AtomicU64; CACHE_ENTRIES] = [const { AtomicU64::new(0) }; CACHE_ENTRIES];

/// The rule for the frame whose code is at `address` (see
/// [`RecentRules::rule_for`]), from the shared cache or else from CFI with
/// the calling thread's `context`.
#[inline(always)]
fn shared_rule_for(address: usize, context: &mut Option<cfi::Context>) -> Rule {
    if !cfg!(target_arch = "x86_64") {
        return Rule::FRAME_POINTER;
    }
    let slot = &CACHE[cache_index(address)];
    let entry = slot.load(Ordering::Relaxed);
    if entry >> Rule::BITS == address as u64 && entry != 0 {
        return Rule((entry & ((1 << Rule::BITS) - 1)) as u32);
    }
    let rule = cfi::rule_from_cfi(address, context);
    if address < MAX_CACHED_ADDRESS {
        slot.store(
            (address as u64) << Rule::BITS | u64::from(rule.0),
            Ordering::Relaxed,
        );
    }
    rule
}

/// Entries of each thread's own rule cache (a power of two).
const RECENT_RULES: usize = 64;

/// A thread's own unwinding state, in its walker: a small cache in front
/// of the shared one (the few code addresses a thread's walks go through
/// again and again stay in its L1 cache, where the shared table's entries
/// are spread over 256 KiB; same entries), and the thread's gimli
/// evaluation context for cache misses (~3 KiB, made at the first miss).
pub struct RecentRules {
    entries: [u64; RECENT_RULES],
    /// Never dropped: its rows are stored inline (no heap), and a type
    /// without drop glue keeps the thread-local walker that holds it usable
    /// after the thread's destructors ran (C exit handlers and Rust
    /// thread-local destructors still allocate then).
    context: core::mem::ManuallyDrop<Option<cfi::Context>>,
}

impl RecentRules {
    pub const fn new() -> RecentRules {
        RecentRules {
            entries: [0; RECENT_RULES],
            context: core::mem::ManuallyDrop::new(None),
        }
    }

    /// The rule for the frame whose code is at `address`: the return
    /// address minus one for a caller's frame (so the call instruction, not
    /// the one after it, is looked up), the exact address for the innermost
    /// one.
    #[inline(always)]
    pub fn rule_for(&mut self, address: usize) -> Rule {
        let mixed = (address as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let index = (mixed >> (u64::BITS - RECENT_RULES.trailing_zeros())) as usize;
        let slot = self.entries[index];
        if slot >> Rule::BITS == address as u64 && slot != 0 {
            return Rule((slot & ((1 << Rule::BITS) - 1)) as u32);
        }
        let rule = shared_rule_for(address, &mut self.context);
        if address < MAX_CACHED_ADDRESS {
            self.entries[index] = (address as u64) << Rule::BITS | u64::from(rule.0);
        }
        rule
    }
}

#[inline(always)]
fn cache_index(address: usize) -> usize {
    let mixed = (address as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (u64::BITS - CACHE_ENTRIES.trailing_zeros())) as usize
}

#[cfg(target_arch = "x86_64")]
mod cfi {
    use gimli::{
        BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, Register,
        RegisterRule, UnwindContext, UnwindContextStorage, UnwindSection, UnwindTableRow, X86_64,
    };

    use core::ops::ControlFlow;

    use super::Rule;
    use crate::sys::{self, LoadedObject};

    /// Fixed storage for gimli's evaluation of CFI programs: register rules
    /// and `DW_CFA_remember_state` depth. Compilers use a handful of
    /// registers and one or two remembered states; more is reported by
    /// gimli as an error, and the frame gets [`Rule::OUTERMOST`].
    pub struct FixedRows;

    impl UnwindContextStorage<usize> for FixedRows {
        type Rules = [(Register, RegisterRule<usize>); 24];
        type Stack = [UnwindTableRow<usize, Self>; 4];
    }

    /// gimli's evaluation state; one per thread ([`super::RecentRules`]).
    pub type Context = UnwindContext<usize, FixedRows>;

    const PT_LOAD: u32 = 1;
    const PT_GNU_EH_FRAME: u32 = 0x6474_e550;

    #[cold]
    #[inline(never)]
    pub(super) fn rule_from_cfi(address: usize, context: &mut Option<Context>) -> Rule {
        // Made here, at the thread's first miss: it cannot be built in a
        // constant. The allocating thread holds the tracker's reentrancy
        // guard, so no nested walk on this thread uses it meanwhile.
        let context = context.get_or_insert_with(Context::new_in);
        let mut rule = None;
        sys::for_each_loaded_object(|object| {
            rule = rule_in_object(address, object, context);
            if rule.is_some() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        // Code outside every module (generated at run time) has no CFI.
        rule.unwrap_or(Rule::FRAME_POINTER)
    }

    /// The rule at `address` if `object` holds it (inside the loader's
    /// lock, so the object stays mapped); `None` if it does not.
    fn rule_in_object(
        address: usize,
        object: &LoadedObject<'_>,
        context: &mut Context,
    ) -> Option<Rule> {
        let phdrs = object.program_headers();
        let bias = object.bias() as usize;
        let segment = |phdr: &libc::Elf64_Phdr| {
            let start = bias.wrapping_add(phdr.p_vaddr as usize);
            (start, start.saturating_add(phdr.p_memsz as usize))
        };
        let holds = |address: usize| {
            phdrs.iter().filter(|p| p.p_type == PT_LOAD).find_map(|p| {
                let (start, end) = segment(p);
                (start..end).contains(&address).then_some(end)
            })
        };
        holds(address)?;
        Some(
            phdrs
                .iter()
                .find(|p| p.p_type == PT_GNU_EH_FRAME)
                .map(segment)
                // Only a header inside a loaded segment is read.
                .filter(|&(start, end)| holds(start).is_some_and(|loaded| end <= loaded))
                .map_or(Rule::FRAME_POINTER, |(hdr_start, hdr_end)| {
                    module_rule(address, hdr_start, hdr_end, &holds, context)
                }),
        )
    }

    /// The rule at `address` from the module whose `.eh_frame_hdr` spans
    /// `hdr_start..hdr_end`. `segment_end(a)` is the end of the module's
    /// loaded segment holding `a`, if any: `.eh_frame` is read up to there.
    fn module_rule(
        address: usize,
        hdr_start: usize,
        hdr_end: usize,
        segment_end: &dyn Fn(usize) -> Option<usize>,
        context: &mut Context,
    ) -> Rule {
        let hdr_bytes = {
            // SAFETY: the header lies inside a loaded segment of the module
            // (the caller checked), mapped and readable while the module is
            // loaded, and we are inside the loader's lock.
            unsafe { core::slice::from_raw_parts(hdr_start as *const u8, hdr_end - hdr_start) }
        };
        let bases = BaseAddresses::default().set_eh_frame_hdr(hdr_start as u64);
        let Ok(hdr) = EhFrameHdr::new(hdr_bytes, LittleEndian).parse(&bases, 8) else {
            return Rule::FRAME_POINTER;
        };
        let Ok(eh_frame_start) = hdr.eh_frame_ptr().direct() else {
            return Rule::FRAME_POINTER;
        };
        let eh_frame_start = eh_frame_start as usize;
        let (Some(table), Some(eh_frame_end)) = (hdr.table(), segment_end(eh_frame_start)) else {
            // No search table: the frame-pointer rule, as without CFI.
            return Rule::FRAME_POINTER;
        };
        // SAFETY: `.eh_frame` lies in a loaded segment of this module, and
        // the slice ends where that segment does.
        let eh_frame_bytes = unsafe {
            core::slice::from_raw_parts(eh_frame_start as *const u8, eh_frame_end - eh_frame_start)
        };
        let mut eh_frame = EhFrame::from(EndianSlice::new(eh_frame_bytes, LittleEndian));
        eh_frame.set_address_size(8);
        let bases = bases.set_eh_frame(eh_frame_start as u64);
        match table.unwind_info_for_address(
            &eh_frame,
            &bases,
            context,
            address as u64,
            EhFrame::cie_from_offset,
        ) {
            Ok(row) => rule_of_row(row),
            // No CFI there, or CFI gimli cannot read (corrupt, or more
            // registers or remembered states than `FixedRows` holds).
            Err(_) => Rule::FRAME_POINTER,
        }
    }

    /// The rule of a row of the CFI table; the frame-pointer rule for rows
    /// the encoding cannot hold (a CFA computed by an expression, as GCC
    /// writes for functions that realign the stack, which keep a frame
    /// pointer; a signal frame; a frame over 32 KiB): the walk did that
    /// before CFI, and it is right for the first of those.
    fn rule_of_row(row: &UnwindTableRow<usize, FixedRows>) -> Rule {
        match row.register(X86_64::RA) {
            Some(RegisterRule::Offset(-8)) => {}
            Some(RegisterRule::Undefined) => return Rule::OUTERMOST,
            _ => return Rule::FRAME_POINTER,
        }
        let CfaRule::RegisterAndOffset { register, offset } = *row.cfa() else {
            return Rule::FRAME_POINTER;
        };
        let from_fp = match register {
            X86_64::RSP => false,
            X86_64::RBP => true,
            _ => return Rule::FRAME_POINTER,
        };
        let saved_fp_at = match row.register(X86_64::RBP) {
            None | Some(RegisterRule::SameValue) => 0,
            // `checked_neg`: corrupt CFI can hold any offset.
            Some(RegisterRule::Offset(at)) if at < 0 => match at.checked_neg() {
                Some(below) => below,
                None => return Rule::FRAME_POINTER,
            },
            _ => return Rule::FRAME_POINTER,
        };
        Rule::new(from_fp, offset, saved_fp_at).unwrap_or(Rule::FRAME_POINTER)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cfi {
    use super::Rule;

    pub type Context = ();

    pub(super) fn rule_from_cfi(_address: usize, _context: &mut Option<Context>) -> Rule {
        Rule::FRAME_POINTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pack_and_unpack() {
        let rule = Rule::new(false, 0x638 + 8, 0).unwrap();
        assert_eq!(rule.cfa(0x1000, 0xdead), Some(0x1000 + 0x640));
        assert_eq!(rule.saved_fp_below_cfa(), 0);
        // The walk's step takes this rule's offsets without decoding it.
        let rule = Rule::new(true, 16, 16).unwrap();
        assert_eq!(rule, Rule::FRAME_POINTER);
        assert_eq!(rule.cfa(0x1000, 0x2000), Some(0x2010));
        assert_eq!(rule.saved_fp_below_cfa(), 16);
        assert_eq!(Rule::OUTERMOST.cfa(1, 2), None);
        // Offsets that are not whole words, too large, or a slot at CFA - 8
        // (where the return address is) do not fit.
        assert_eq!(Rule::new(false, 12, 0), None);
        assert_eq!(Rule::new(false, 8 << OFFSET_BITS, 0), None);
        assert_eq!(Rule::new(false, 0, 0), None);
        assert_eq!(Rule::new(false, 24, 8), None);
        assert_eq!(Rule::new(false, 24, 8 << SLOT_BITS), None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn this_function_has_a_rule_and_an_unmapped_address_gets_the_frame_pointer_one() {
        let here = this_function_has_a_rule_and_an_unmapped_address_gets_the_frame_pointer_one
            as fn() as usize;
        // Just past the prologue: the test binary is built with frame
        // pointers, so the CFA is `rbp + 16` and rbp is saved at CFA - 16.
        let mut rules = RecentRules::new();
        let rule = rules.rule_for(here + 16);
        assert_eq!(rule, Rule::FRAME_POINTER, "{rule:?}");
        // Cached, here and in the shared cache: the same answer again.
        assert_eq!(rules.rule_for(here + 16), rule);
        assert_eq!(RecentRules::new().rule_for(here + 16), rule);
        // The very first instruction: nothing pushed yet, CFA = rsp + 8.
        assert_eq!(rules.rule_for(here), Rule::new(false, 8, 0).unwrap());
        assert_eq!(rules.rule_for(0x10), Rule::FRAME_POINTER);
    }
}
