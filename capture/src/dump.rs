//! Writing a dump: gather what needs no lock (modules, threads, command
//! line), lock the live table and the stack interner just long enough to copy
//! the live set, then sort and stream every section through
//! `heapdump_formats::write::DumpWriter` with plain `write(2)` calls.
//!
//! Nothing here allocates on the tracked heap: all scratch memory is
//! anonymous mappings returned when the dump ends.

use core::ffi::CStr;
use core::sync::atomic::{AtomicU32, Ordering};

use heapdump_formats::records::{
    AllocationRecord, FrameRecord, ModuleRecord, ProcessRecord, RootRecord, SectionKind,
    SegmentRecord, StackRecord, StrRef, ThreadRecord, UNKNOWN_THREAD, owner_kind, process_flags,
    root_kind, segment_flags, thread_flags,
};
use heapdump_formats::write::{DumpWriter, Sink, StringTable, WriteError};

use core::fmt::Write as _;

use crate::child::{self, Child, Forked};
use crate::live::{Entry, FOOTER_BYTES, ShardTable, Slot};
use crate::modules::{self, MAX_MODULES, MAX_SEGMENTS, Modules, TlsModule};
use crate::presence::{self, Listing};
use crate::scan::{EdgeBuffer, FROM_ROOT, Mappings, PointerIndex, scan_words};
use crate::settings::Mode;
use crate::stacks::StacksSnapshot;
use crate::sys::{self, Scratch, SpinGuard, Zeroable};
use crate::world::{self, SAVED_REGISTERS, StoppedThread};
use crate::{DumpError, DumpStats, LIVE, SEQUENCE, STACKS, threads};

// SAFETY: plain integer records (and `StrRef`s of integers); zero is valid.
unsafe impl Zeroable for ThreadRecord {}
// SAFETY: as above.
unsafe impl Zeroable for heapdump_formats::records::ModuleRecord {}
// SAFETY: as above.
unsafe impl Zeroable for heapdump_formats::records::SegmentRecord {}
// SAFETY: as above.
unsafe impl Zeroable for StackRecord {}

/// Paths, thread names and the frames' function names (one string per
/// distinct function, ~100 bytes mangled): room for ~300k functions. Only
/// the pages written are ever backed by memory.
const STRINGS_BYTES: usize = 32 << 20;
const WRITE_BUFFER_BYTES: usize = 1 << 20;
const CMDLINE_BYTES: usize = 128 << 10;
const MAX_ALIVE_THREADS: usize = 1 << 16;
const THREAD_NAME_BYTES: usize = 64;
const MAX_TLS_MODULES: usize = 1024;
const MAPS_BYTES: usize = 16 << 20;
const MAX_MAPPINGS: usize = 1 << 18;

static DUMPS_WRITTEN: AtomicU32 = AtomicU32::new(0);

/// A file descriptor as a [`Sink`]: retries short writes and `EINTR`.
struct FdSink(i32);

impl Sink for FdSink {
    type Error = i32;
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), i32> {
        sys::write_all(self.0, bytes)
    }
}

impl From<WriteError<i32>> for DumpError {
    fn from(error: WriteError<i32>) -> DumpError {
        match error {
            WriteError::Sink(errno) => DumpError::Write { errno },
            // The writer's protocol errors would be bugs in this module.
            _ => DumpError::Internal,
        }
    }
}

/// What the dump learned before taking any lock.
struct Unlocked<'s> {
    strings: StringTable<'s>,
    modules: &'s [ModuleRecord],
    segments: &'s [SegmentRecord],
    alive: &'s [u32],
    tls: &'s [TlsModule],
    exe: heapdump_formats::records::StrRef,
    cmdline: heapdump_formats::records::StrRef,
    incomplete: bool,
}

fn gather_unlocked(scratch: &Scratch) -> Result<Unlocked<'_>, DumpError> {
    let strings = scratch
        .take::<u8>(STRINGS_BYTES)
        .ok_or(DumpError::OutOfMemory)?;
    let mut strings = StringTable::new(strings);
    let module_slots = scratch.take(MAX_MODULES).ok_or(DumpError::OutOfMemory)?;
    let segment_slots = scratch.take(MAX_SEGMENTS).ok_or(DumpError::OutOfMemory)?;
    let tls_slots = scratch
        .take::<TlsModule>(MAX_TLS_MODULES)
        .ok_or(DumpError::OutOfMemory)?;
    let mut found = Modules {
        modules: module_slots,
        module_count: 0,
        segments: segment_slots,
        segment_count: 0,
        strings: &mut strings,
        tls: tls_slots,
        tls_count: 0,
        overflowed: false,
    };
    modules::gather(&mut found);
    let (module_count, segment_count, tls_count, incomplete) = (
        found.module_count,
        found.segment_count,
        found.tls_count,
        found.overflowed,
    );

    let text = scratch
        .take::<u8>(CMDLINE_BYTES)
        .ok_or(DumpError::OutOfMemory)?;
    let n = sys::read_link(c"/proc/self/exe", text);
    let exe = strings.add_or_empty(&text[..n]);
    let mut n = sys::read_file(c"/proc/self/cmdline", text);
    if n > 0 && text[n - 1] == 0 {
        n -= 1;
    }
    let cmdline = strings.add_or_empty(&text[..n]);

    let alive = scratch
        .take::<u32>(MAX_ALIVE_THREADS)
        .ok_or(DumpError::OutOfMemory)?;
    let alive_count = threads::alive_tids(alive);
    alive[..alive_count].sort_unstable();
    Ok(Unlocked {
        strings,
        modules: &module_slots[..module_count],
        segments: &segment_slots[..segment_count],
        alive: &alive[..alive_count],
        tls: &tls_slots[..tls_count],
        exe,
        cmdline,
        incomplete,
    })
}

/// The dumping thread's own context at the call into the tracker: the
/// program's callee-saved registers (where it may keep heap pointers across
/// the call) and its stack pointer. Its frames start there; everything
/// below is the tracker's and is never scanned.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Caller {
    pub stack_pointer: u64,
    pub registers: [u64; SAVED_REGISTERS],
}

impl Caller {
    /// Captures the context of the function this is inlined into. The
    /// public entry points are `#[inline(always)]` wrappers that call this
    /// first, so that function is the program's own.
    #[inline(always)]
    pub fn capture() -> Caller {
        let mut caller = Caller::default();
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `capture_registers` only writes the fields of `caller`
        // through the pointer it is given, which is valid and exclusive.
        unsafe {
            capture_registers(&mut caller);
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            // No register capture here: the stack is scanned from a local
            // of the caller's frame.
            let marker = 0u8;
            caller.stack_pointer = core::hint::black_box(&marker) as *const u8 as u64;
        }
        caller
    }
}

/// Stores the caller's callee-saved registers and stack pointer into
/// `*out`, exactly as they were at the call instruction: the function is
/// naked, so no prologue of ours can have moved or spilled them first. The
/// offsets follow `Caller`'s layout: `stack_pointer` at 0, then register
/// `REG_*` number n of x86_64's `mcontext_t` at 8 + 8n.
#[cfg(target_arch = "x86_64")]
#[unsafe(naked)]
unsafe extern "C" fn capture_registers(out: *mut Caller) {
    core::arch::naked_asm!(
        // The caller's stack pointer before the call pushed our return
        // address.
        "lea rax, [rsp + 8]",
        "mov [rdi], rax",
        "mov [rdi + 8 + 8 * 15], rax", // REG_RSP
        "mov [rdi + 8 + 8 * 4], r12",  // REG_R12
        "mov [rdi + 8 + 8 * 5], r13",  // REG_R13
        "mov [rdi + 8 + 8 * 6], r14",  // REG_R14
        "mov [rdi + 8 + 8 * 7], r15",  // REG_R15
        "mov [rdi + 8 + 8 * 10], rbp", // REG_RBP
        "mov [rdi + 8 + 8 * 11], rbx", // REG_RBX
        "ret",
    );
}

// SAFETY: plain integer records; zero is valid.
unsafe impl Zeroable for RootRecord {}

/// The bytes a root's scan reads: memory of the process, or a thread's
/// saved registers.
#[derive(Clone, Copy)]
enum RootSource {
    Memory,
    Registers(*const u64),
}

// SAFETY: a plain enum of integers/pointers; all-zero is `Memory`.
unsafe impl Zeroable for RootSource {}

/// Roots for runs of resident pages of the program's anonymous mappings;
/// past this many (a fragmented address space), the rest go unscanned.
/// Address space only: the scratch's untouched pages cost nothing.
const MAX_ANONYMOUS_ROOTS: usize = 1 << 16;

/// Pages whose residency one `mincore` call asks for (64 MiB of memory).
const RESIDENCY_PAGES: usize = 1 << 14;

/// Whether the program (process `pid`, the parent of a dump's forked
/// child) has anonymous read-write memory marked `MADV_DONTFORK` (its
/// `VmFlags` in `/proc/PID/smaps` say `dc`), which the child lacks. No
/// answer from the kernel, or no room to read it, counts as none.
fn parents_memory_missing(pid: u32) -> bool {
    let mut path = sys::PathBuf::<32>::new();
    // A path that does not fit reads as no mapping: nothing missing.
    let _ = path.push(b"/proc/") && path.push_decimal(u64::from(pid)) && path.push(b"/smaps");
    let Some(scratch) = Scratch::new(SMAPS_BYTES + 64) else {
        return false;
    };
    let Some(text) = scratch.take::<u8>(SMAPS_BYTES) else {
        return false;
    };
    let len = sys::read_file(path.as_c_str(), text);
    let mut anonymous_writable = false;
    for line in text[..len].split(|&b| b == b'\n') {
        if let Some(flags) = line.strip_prefix(b"VmFlags:") {
            let not_copied = flags.split(|&b| b == b' ').any(|flag| flag == b"dc");
            if anonymous_writable && not_copied {
                return true;
            }
        } else if line.first().is_some_and(u8::is_ascii_hexdigit) && line.contains(&b'-') {
            // A mapping's first line: range, perms, offset, device, inode, path.
            let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
            let perms = fields.nth(1).unwrap_or_default();
            let path = fields.nth(3);
            anonymous_writable =
                perms.starts_with(b"rw") && path.is_none_or(|path| path.starts_with(b"[anon:"));
        }
    }
    false
}

/// Room for the program's `/proc/PID/smaps` (about 1 KiB per mapping).
const SMAPS_BYTES: usize = 64 << 20;

/// Anonymous mappings bigger than this are not scanned: a reservation of
/// terabytes (a sanitizer's shadow) costs a second per few terabytes to ask
/// which pages are resident, for nothing.
const MAX_SCANNED_MAPPING: u64 = 256 << 30;

/// Blocks at least this big are their own mappings in the C allocator
/// (glibc's `mmap` threshold starts at 128 KiB): the pages of such a block
/// are left out of an anonymous mapping the kernel merged it into. A
/// smaller block marks allocator memory (an arena), whose free parts hold
/// stale words, so a range holding one is not scanned as a root.
const OWN_MAPPING_BLOCK: u64 = 128 << 10;

/// The ranges that are not the program's own anonymous memory, merged and
/// sorted (in `out`): the tracker's mappings (its tables hold every
/// block's address), every thread's whole stack (below a stack pointer lie
/// dead frames), and the roots already taken (TLS blocks, data segments).
/// `None` when the tracker could not record all its mappings.
fn not_the_programs_memory<'o>(
    out: &'o mut [(u64, u64)],
    roots: &[RootRecord],
    threads: &[ThreadRecord],
) -> Option<&'o [(u64, u64)]> {
    let mut count = 0;
    let mut add = |start: u64, end: u64| {
        if start < end && count < out.len() {
            out[count] = (start, end);
            count += 1;
        }
    };
    let complete = sys::for_each_own_mapping(|start, end| add(start as u64, end as u64));
    for thread in threads {
        add(thread.stack_low, thread.stack_high);
    }
    for root in roots
        .iter()
        .filter(|root| root.kind != root_kind::REGISTERS)
    {
        add(root.address, root.address.saturating_add(root.size));
    }
    if !complete {
        return None;
    }
    let out = &mut out[..count];
    out.sort_unstable();
    // Merged into disjoint ranges, so a mapping finds its first one by
    // binary search.
    let mut merged = 0;
    for index in 0..out.len() {
        let (start, end) = out[index];
        if merged > 0 && start <= out[merged - 1].1 {
            out[merged - 1].1 = out[merged - 1].1.max(end);
        } else {
            out[merged] = (start, end);
            merged += 1;
        }
    }
    Some(&out[..merged])
}

/// Calls `each(from, to)` for the parts of the anonymous mapping `[start,
/// end)` that are the program's own memory: without the `obstacles`
/// (disjoint, sorted), the pages of big blocks, and the parts that hold a smaller
/// live block (allocator memory). `slots` is sorted by address.
fn for_each_program_range(
    start: u64,
    end: u64,
    obstacles: &[(u64, u64)],
    slots: &[Slot],
    mut each: impl FnMut(u64, u64),
) {
    let page = sys::page_size() as u64;
    let mut piece = |from: u64, to: u64| {
        // From the block before `from` when it reaches into the piece (a
        // block's mapping split in two, by a guard page the program put
        // inside it).
        let mut first = slots.partition_point(|slot| slot.address() < from);
        if first > 0
            && slots[first - 1]
                .address()
                .saturating_add(slots[first - 1].size())
                > from
        {
            first -= 1;
        }
        let inside = || slots[first..].iter().take_while(|slot| slot.address() < to);
        if inside().any(|slot| slot.size() < OWN_MAPPING_BLOCK) {
            return;
        }
        // Around the big blocks.
        let mut at = from;
        for slot in inside() {
            let block_start = slot.address() / page * page;
            let block_end = slot
                .address()
                .saturating_add(slot.size())
                .next_multiple_of(page);
            if at < block_start {
                each(at, block_start.min(to));
            }
            at = at.max(block_end);
        }
        if at < to {
            each(at, to);
        }
    };
    let mut at = start;
    let first = obstacles.partition_point(|&(_, e)| e <= start);
    for &(s, e) in obstacles[first..].iter().take_while(|&&(s, _)| s < end) {
        if at < s {
            piece(at, s);
        }
        at = at.max(e);
    }
    if at < end {
        piece(at, end);
    }
}

/// The dump's roots, with where each one's bytes are read from.
struct Roots<'a> {
    records: &'a mut [RootRecord],
    sources: &'a mut [RootSource],
    count: usize,
    /// Roots left out for want of room (runs of anonymous memory past
    /// [`MAX_ANONYMOUS_ROOTS`]): blocks only they hold look lost.
    dropped: bool,
}

/// How the stop left each thread, for its roots: the dumping thread's own
/// context (`me`, `caller`), and each stopped thread's saved one.
struct StopState<'a> {
    me: u32,
    caller: &'a Caller,
    own_thread_pointer: u64,
    /// Per thread record, its entry in `stopped` + 1 (0: none).
    stop_entry: &'a [u64],
    stopped: &'a [StoppedThread],
}

/// Where a thread's roots start: its saved registers (if any), its stack
/// pointer and its thread pointer (0 when unknown).
struct ThreadContext {
    registers: Option<*const u64>,
    stack_pointer: u64,
    thread_pointer: u64,
}

impl StopState<'_> {
    fn context_of(&self, index: usize, record: &ThreadRecord) -> ThreadContext {
        if record.tid == self.me {
            return ThreadContext {
                registers: Some(self.caller.registers.as_ptr()),
                stack_pointer: self.caller.stack_pointer,
                thread_pointer: self.own_thread_pointer,
            };
        }
        let stopped = (self.stop_entry[index] as usize)
            .checked_sub(1)
            .and_then(|at| self.stopped.get(at))
            .filter(|t| t.stopped);
        match stopped {
            // The red zone below the interrupted stack pointer may hold
            // live values of a leaf function.
            Some(thread) => ThreadContext {
                registers: Some(thread.registers.as_ptr()),
                stack_pointer: thread.stack_pointer.saturating_sub(RED_ZONE),
                thread_pointer: thread.thread_pointer,
            },
            None => ThreadContext {
                registers: None,
                stack_pointer: 0,
                thread_pointer: 0,
            },
        }
    }
}

impl<'a> Roots<'a> {
    /// Scratch bytes [`gather`](Self::gather) needs for `thread_count`
    /// threads and the modules in `unlocked`.
    fn scratch_bytes(thread_count: usize, unlocked: &Unlocked<'_>) -> usize {
        let capacity = Self::capacity(thread_count, unlocked);
        // The records, the ranges that are not the program's anonymous
        // memory (`not_the_programs_memory`), and `mincore`'s answers.
        capacity * (size_of::<RootRecord>() + size_of::<RootSource>())
            + (capacity + sys::MAX_OWN_MAPPINGS) * size_of::<(u64, u64)>()
            + RESIDENCY_PAGES
            + 64
    }

    /// Registers, stack and TLS blocks per thread, the writable segments
    /// and the runs of the program's anonymous memory.
    fn capacity(thread_count: usize, unlocked: &Unlocked<'_>) -> usize {
        thread_count * (2 + unlocked.tls.len()) + unlocked.segments.len() + MAX_ANONYMOUS_ROOTS + 8
    }

    /// Every alive thread's registers, stack (from its stack pointer) and
    /// TLS blocks, every writable segment of every module, then, if
    /// `anonymous`, the program's anonymous memory. `slots`: the live
    /// blocks, by address.
    fn gather(
        memory: &'a Scratch,
        threads: &[ThreadRecord],
        stop: &StopState<'_>,
        unlocked: &Unlocked<'_>,
        maps: &Mappings<'_>,
        (slots, anonymous): (&[Slot], bool),
    ) -> Result<Roots<'a>, DumpError> {
        let capacity = Self::capacity(threads.len(), unlocked);
        let mut roots = Roots {
            records: memory
                .take::<RootRecord>(capacity)
                .ok_or(DumpError::OutOfMemory)?,
            sources: memory
                .take::<RootSource>(capacity)
                .ok_or(DumpError::OutOfMemory)?,
            count: 0,
            dropped: false,
        };
        for (index, record) in threads.iter().enumerate() {
            if record.flags & thread_flags::ALIVE != 0 {
                let context = stop.context_of(index, record);
                roots.push_thread(
                    index,
                    record,
                    &context,
                    stop.own_thread_pointer,
                    unlocked,
                    maps,
                );
            }
        }
        for segment in unlocked.segments {
            if segment.flags & segment_flags::WRITE != 0 {
                roots.push(
                    RootRecord {
                        kind: root_kind::DATA_SEGMENT,
                        owner_kind: owner_kind::MODULE,
                        owner: segment.module,
                        address: segment.start,
                        size: segment.end - segment.start,
                        ..RootRecord::default()
                    },
                    RootSource::Memory,
                );
            }
        }
        if anonymous {
            roots.push_anonymous_memory(memory, threads, maps, slots)?;
        }
        Ok(roots)
    }

    /// The program's anonymous memory: its own arenas, a runtime's heap
    /// (Python's objects, V8's), as memcheck scans it; resident pages only,
    /// and none of what the roots so far cover.
    fn push_anonymous_memory(
        &mut self,
        memory: &Scratch,
        threads: &[ThreadRecord],
        maps: &Mappings<'_>,
        slots: &[Slot],
    ) -> Result<(), DumpError> {
        let obstacles = memory
            .take::<(u64, u64)>(self.records.len() + sys::MAX_OWN_MAPPINGS)
            .ok_or(DumpError::OutOfMemory)?;
        let residency = memory
            .take::<u8>(RESIDENCY_PAGES)
            .ok_or(DumpError::OutOfMemory)?;
        // Without a complete list of the tracker's own memory, none can be
        // told from the program's.
        let Some(obstacles) = not_the_programs_memory(obstacles, self.records(), threads) else {
            self.dropped = true;
            return Ok(());
        };
        // Under valgrind the tool's memory looks like the program's (memcheck
        // itself knows which is which).
        let under_valgrind = maps.under_valgrind();
        let anonymous = maps
            .anonymous_writable()
            .filter(|&(start, end)| !under_valgrind && end - start <= MAX_SCANNED_MAPPING);
        for (start, end) in anonymous {
            for_each_program_range(start, end, obstacles, slots, |from, to| {
                sys::resident_runs(from as usize, to as usize, residency, |from, to| {
                    self.push(
                        RootRecord {
                            kind: root_kind::ANONYMOUS_MAPPING,
                            owner_kind: owner_kind::NONE,
                            address: from as u64,
                            size: (to - from) as u64,
                            ..RootRecord::default()
                        },
                        RootSource::Memory,
                    );
                });
            });
        }
        Ok(())
    }

    /// The roots of thread record `index`.
    fn push_thread(
        &mut self,
        index: usize,
        record: &ThreadRecord,
        context: &ThreadContext,
        own_thread_pointer: u64,
        unlocked: &Unlocked<'_>,
        maps: &Mappings<'_>,
    ) {
        let thread_root = |kind: u16, address: u64, size: u64| RootRecord {
            kind,
            owner_kind: owner_kind::THREAD,
            owner: index as u32,
            address,
            size,
            ..RootRecord::default()
        };
        if let Some(registers) = context.registers {
            self.push(
                thread_root(root_kind::REGISTERS, 0, (SAVED_REGISTERS * 8) as u64),
                RootSource::Registers(registers),
            );
        }
        // The stack: from the stack pointer to the top the thread's
        // attributes gave, or to the end of the mapping holding it. A
        // thread that did not stop is scanned whole, as it runs.
        let (low, high) = (record.stack_low, record.stack_high);
        let stack_pointer = context.stack_pointer;
        let range = if stack_pointer != 0 {
            if (low..high).contains(&stack_pointer) {
                Some((stack_pointer, high))
            } else {
                maps.containing(stack_pointer)
                    .map(|(_, end)| (stack_pointer, end))
            }
        } else if low < high {
            Some((low, high))
        } else {
            None
        };
        if let Some((from, to)) = range {
            self.push(
                thread_root(root_kind::THREAD_STACK, from, to - from),
                RootSource::Memory,
            );
        }
        let thread_pointer = context.thread_pointer;
        if thread_pointer == 0 {
            return;
        }
        for module in unlocked.tls {
            // Named after the module whose thread-locals they are.
            let name = unlocked
                .modules
                .get(module.module as usize)
                .map_or(StrRef::EMPTY, |m| m.path);
            if let Some(offset) = static_tls_offset(module, own_thread_pointer, maps) {
                let address = thread_pointer - offset;
                self.push(
                    RootRecord {
                        name,
                        ..thread_root(root_kind::STATIC_TLS, address, module.size)
                    },
                    RootSource::Memory,
                );
            } else if let Some(block) = dynamic_tls_block(thread_pointer, module.id, maps) {
                self.push(
                    RootRecord {
                        name,
                        ..thread_root(root_kind::DYNAMIC_TLS, block, module.size)
                    },
                    RootSource::Memory,
                );
            }
        }
    }

    fn push(&mut self, record: RootRecord, source: RootSource) {
        if record.size == 0 {
            return;
        }
        if self.count >= self.records.len() {
            self.dropped = true;
            return;
        }
        self.records[self.count] = record;
        self.sources[self.count] = source;
        self.count += 1;
    }

    fn records(&self) -> &[RootRecord] {
        &self.records[..self.count]
    }

    fn sources(&self) -> &[RootSource] {
        &self.sources[..self.count]
    }
}

/// A thread's TLS block for a module in static TLS: at a fixed distance
/// below the thread pointer, the same for every thread (x86_64 TLS variant
/// II). `None` for modules whose blocks are allocated per thread on demand.
fn static_tls_offset(tls: &TlsModule, own_thread_pointer: u64, maps: &Mappings<'_>) -> Option<u64> {
    if tls.block == 0 || tls.block >= own_thread_pointer {
        return None;
    }
    let same_mapping = maps
        .containing(tls.block)
        .is_some_and(|m| maps.containing(own_thread_pointer - 1) == Some(m));
    same_mapping.then_some(own_thread_pointer - tls.block)
}

/// Reads a word the caller has checked is readable.
fn read_word(maps: &Mappings<'_>, address: u64) -> Option<u64> {
    let (from, to) = maps.readable(address, address + 8).next()?;
    if from != address || to != address + 8 {
        return None;
    }
    // SAFETY: the word lies inside a readable mapping (checked above).
    Some(unsafe { (address as *const u64).read_volatile() })
}

/// A thread's dynamic TLS block for module `id`, from its DTV (glibc:
/// the DTV pointer is the TCB's second word; entry `i` is 16 bytes, its first
/// word the block; entry -1 holds the number of entries).
fn dynamic_tls_block(thread_pointer: u64, id: u64, maps: &Mappings<'_>) -> Option<u64> {
    let dtv = read_word(maps, thread_pointer + 8)?;
    let entries = read_word(maps, dtv.checked_sub(16)?)?;
    if id == 0 || id > entries {
        return None;
    }
    let block = read_word(maps, dtv.checked_add(id.checked_mul(16)?)?)?;
    // glibc marks blocks not yet allocated with -1.
    (block != 0 && block != u64::MAX).then_some(block)
}

/// Writes a dump to `fd`, taking the snapshot as `mode` says. The caller
/// holds `DUMP_LOCK` (`_serialized`), so dumps never overlap.
///
/// In `Mode::Fork` the process forks once the threads are stopped; the
/// child runs the rest of this function (the snapshot, the scan, the
/// write) and ends in [`Child::finish`]: every return path of
/// [`snapshot_and_write`] comes back here, so the child can never return
/// into the program.
pub fn write(
    fd: i32,
    caller: &Caller,
    mode: Mode,
    _serialized: &SpinGuard<'_, ()>,
    file: Option<&NewFile<'_>>,
) -> Result<DumpStats, DumpError> {
    let mut child = None;
    let result = snapshot_and_write(fd, caller, mode, &mut child);
    if let Some(child) = child {
        // The snapshot process names the file it wrote, or removes it, even
        // if the program has ended meanwhile (the exit handler waits 10 s
        // at most; `_exit` does not wait at all).
        let result = match file {
            Some(file) => file.finish(fd, result),
            None => result,
        };
        child.finish(&result);
    }
    result
}

/// The phases of a dump, in order: gather what needs no lock, take the
/// tracker's locks and stop the world, fork (`mode=fork`), snapshot the
/// live set and the threads, record the roots, scan, resume, then name
/// the threads and write the file.
fn snapshot_and_write(
    fd: i32,
    caller: &Caller,
    mode: Mode,
    in_child: &mut Option<Child>,
) -> Result<DumpStats, DumpError> {
    let started = sys::clock_ns(libc::CLOCK_MONOTONIC);
    let dump_number = DUMPS_WRITTEN.fetch_add(1, Ordering::Relaxed) + 1;
    let timestamp_ns = sys::clock_ns(libc::CLOCK_REALTIME);
    let pid = sys::process_id();
    let me = sys::thread_id();

    let scratch = Scratch::new(
        STRINGS_BYTES
            + WRITE_BUFFER_BYTES
            + CMDLINE_BYTES
            + MAX_MODULES * 48
            + MAX_SEGMENTS * 32
            + MAX_TLS_MODULES * size_of::<TlsModule>()
            + MAX_ALIVE_THREADS * (8 + size_of::<StoppedThread>())
            + MAPS_BYTES
            + MAX_MAPPINGS * 16
            + Listing::scratch_pages() * 8
            + 16 * sys::PAGE,
    )
    .ok_or(DumpError::OutOfMemory)?;
    let mut unlocked = gather_unlocked(&scratch)?;
    let write_buffer = scratch
        .take::<u8>(WRITE_BUFFER_BYTES)
        .ok_or(DumpError::OutOfMemory)?;
    let others = threads_to_stop(&scratch, unlocked.alive, me)?;
    let stopped = scratch
        .take::<StoppedThread>(others.len())
        .ok_or(DumpError::OutOfMemory)?;
    let maps_text = scratch
        .take::<u8>(MAPS_BYTES)
        .ok_or(DumpError::OutOfMemory)?;
    let maps_ranges = scratch
        .take::<(u64, u64)>(MAX_MAPPINGS)
        .ok_or(DumpError::OutOfMemory)?;
    let map_pages = scratch
        .take::<u64>(Listing::scratch_pages())
        .ok_or(DumpError::OutOfMemory)?;

    // Every tracker lock, before any thread stops: a thread stopped inside
    // the tracker would otherwise hold a lock the dump needs, and no block
    // can be freed (and unmapped) while the scan reads it.
    let shards: [_; crate::live::SHARDS] = core::array::from_fn(|i| LIVE.shards[i].table.lock());
    let interning = STACKS.lock_all();
    // And production mode's blocks without records: a thread that frees
    // one waits until the scan is done, as it would for a shard lock.
    let listing = Listing::begin();
    let paused = sys::clock_ns(libc::CLOCK_MONOTONIC);
    let mut world = world::stop(others, stopped)?;

    // Fork mode: the child, a copy of the process frozen at this instant,
    // goes on below; the parent lets the program go and waits for it.
    let mut fork_failed = None;
    if mode == Mode::Fork {
        match child::fork() {
            Forked::Parent(child) => {
                world.resume();
                drop(listing);
                drop(interning);
                drop(shards);
                let pause_ns = sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(paused);
                child.tell_pause(pause_ns);
                let stats = child.wait()?;
                return Ok(DumpStats {
                    pause_ns,
                    stop_ns: world.stop_ns,
                    total_ns: sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(started),
                    ..stats
                });
            }
            Forked::Child(child) => {
                // The stopped threads are the parent's: nothing to resume
                // here, and the locks held are this copy's own.
                world.abandon();
                *in_child = Some(child);
            }
            Forked::Failed(errno) => fork_failed = Some(errno),
        }
    }

    // The live set, sorted by address.
    // Production mode's blocks without records, if they may be read: not
    // when a thread could not be stopped and the barrier that holds its
    // frees back was refused (then they count as dropped).
    let all_held = in_child.is_some() || stopped.iter().all(|t| t.stopped || t.gone);
    let mut mapped = MappedBlocks {
        listing: listing.as_ref().filter(|l| l.may_list(all_held)),
        pages: map_pages,
        capacity: 0,
    };
    let unlisted = match &listing {
        Some(listing) if !listing.may_list(all_held) => presence::totals().live_count,
        _ => 0,
    };
    let snapshot_memory =
        Scratch::new(LiveSet::scratch_bytes(&shards, &mut mapped)).ok_or(DumpError::OutOfMemory)?;
    let LiveSet {
        slots,
        total_allocations,
        total_frees,
        tracking_bytes: live_tracking_bytes,
    } = LiveSet::gather(&shards, &mut mapped, &snapshot_memory)?;
    let stacks = STACKS.snapshot();
    let next_sequence = SEQUENCE.load(Ordering::Relaxed);
    let dropped_stacks = STACKS.dropped();

    let thread_memory =
        Scratch::new(Threads::scratch_bytes(unlocked.alive)).ok_or(DumpError::OutOfMemory)?;
    let Threads {
        records,
        stop_entry,
        stopped: threads_stopped,
        not_stopped: threads_not_stopped,
    } = Threads::gather(
        &thread_memory,
        unlocked.alive,
        others,
        stopped,
        (pid, me),
        caller.stack_pointer,
    )?;
    let thread_count = records.len();

    let maps = Mappings::read(maps_text, maps_ranges);
    let stop = StopState {
        me,
        caller,
        own_thread_pointer: world::thread_pointer(),
        stop_entry,
        stopped,
    };
    let root_memory = Scratch::new(Roots::scratch_bytes(thread_count, &unlocked))
        .ok_or(DumpError::OutOfMemory)?;
    // The program's anonymous memory is read only where no thread of it
    // runs: in the fork's child, or with every thread stopped (one that
    // could not be stopped may unmap it under the scan).
    let anonymous = in_child.is_some() || threads_not_stopped == 0;
    let roots = Roots::gather(
        &root_memory,
        records,
        &stop,
        &unlocked,
        &maps,
        (slots, anonymous),
    )?;
    let roots_dropped = roots.dropped;
    // A forked child misses what the program marked MADV_DONTFORK: its
    // parent, the program, still has it. Said in the dump, not scanned.
    let memory_not_forked =
        in_child.is_some() && !maps.under_valgrind() && parents_memory_missing(pid);

    let scanning = sys::clock_ns(libc::CLOCK_MONOTONIC);
    let (edges, scanned_bytes) = scan(
        slots,
        roots.records(),
        roots.sources(),
        &maps,
        &snapshot_memory,
    )?;
    let scan_ns = sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(scanning);

    world.resume();
    drop(listing);
    drop(interning);
    drop(shards);
    if let Some(errno) = fork_failed {
        // Only now: the message must not be written while threads that
        // may hold the C library's locks are stopped.
        report_fork_failure(errno);
    }
    let pause_ns = match in_child {
        // The parent resumed the program right after the fork.
        Some(child) => child.parent_pause_ns(),
        None => sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(paused),
    };
    let writing = sys::clock_ns(libc::CLOCK_MONOTONIC);

    name_threads(records, pid, &mut unlocked.strings);
    let live_bytes = count_live_blocks(records, slots);
    let (peak_live_bytes, peak_live_count, dropped_allocations) =
        LIVE.peaks_and_dropped(slots.len() as u64, live_bytes);
    let dropped_allocations = dropped_allocations + unlisted;
    let stack_memory =
        Scratch::new(LiveStacks::scratch_bytes(&stacks)).ok_or(DumpError::OutOfMemory)?;
    let live_stacks =
        LiveStacks::gather(&stack_memory, &stacks, slots).ok_or(DumpError::OutOfMemory)?;

    let mut flags = process_flags::HAS_SCAN | process_flags::WORLD_STOPPED;
    if in_child.is_some() {
        flags |= process_flags::FORKED;
    }
    if fork_failed.is_some() {
        flags |= process_flags::FORK_FAILED;
    }
    if memory_not_forked {
        flags |= process_flags::MEMORY_NOT_FORKED;
    }
    if threads_not_stopped != 0 {
        flags |= process_flags::INCOMPLETE_STOP;
    }
    if dropped_allocations != 0
        || dropped_stacks != 0
        || unlocked.incomplete
        || edges.overflowed
        || roots_dropped
    {
        flags |= process_flags::DROPPED_RECORDS;
    }
    let process = ProcessRecord {
        pid,
        pointer_size: size_of::<usize>() as u32,
        page_size: sys::page_size() as u32,
        flags,
        timestamp_ns,
        dump_number,
        machine: ELF_MACHINE,
        exe: unlocked.exe,
        cmdline: unlocked.cmdline,
        live_bytes,
        live_count: slots.len() as u64,
        peak_live_bytes,
        total_allocations,
        total_frees,
        dropped_allocations,
        dropped_stacks,
        tracking_bytes: live_tracking_bytes + STACKS.tracking_bytes() + threads::tracking_bytes(),
        next_sequence,
        pause_ns,
        // Set by `write_file`, just before it writes the record.
        write_ns: 0,
        peak_live_count,
        stack_sample_interval: crate::sampling::interval(),
    };
    let bytes_written = write_file(
        FdSink(fd),
        write_buffer,
        Contents {
            threads: records,
            modules: unlocked.modules,
            segments: unlocked.segments,
            slots,
            live_stacks: &live_stacks,
            roots: roots.records(),
            edges: &edges,
            strings: &mut unlocked.strings,
        },
        process,
        writing,
    )?;
    Ok(DumpStats {
        allocations: slots.len() as u64,
        live_bytes,
        stacks: live_stacks.records.len().saturating_sub(1) as u64,
        threads: thread_count as u64,
        modules: unlocked.modules.len() as u64,
        bytes_written,
        pause_ns,
        total_ns: sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(started),
        stop_ns: world.stop_ns,
        scan_ns,
        scanned_bytes,
        roots: roots.records().len() as u64,
        edges: edges.len(),
        threads_stopped,
        threads_not_stopped,
        mode: if in_child.is_some() {
            Mode::Fork
        } else {
            Mode::Stop
        },
    })
}

/// The threads the dump stops: every alive one but the dumping thread
/// (`me`) and the tracker's trigger thread, which holds no heap pointer and
/// no lock the dump needs, and blocks every signal.
fn threads_to_stop<'s>(
    scratch: &'s Scratch,
    alive: &[u32],
    me: u32,
) -> Result<&'s [u32], DumpError> {
    let others = scratch
        .take::<u32>(alive.len())
        .ok_or(DumpError::OutOfMemory)?;
    let trigger_thread = crate::triggers::trigger_thread_tid();
    let mut count = 0;
    for &tid in alive
        .iter()
        .filter(|&&tid| tid != me && tid != trigger_thread)
    {
        others[count] = tid;
        count += 1;
    }
    Ok(&others[..count])
}

/// Gives each alive thread its name, from `/proc` (which the program's
/// threads may change at any time, so read only now).
fn name_threads(records: &mut [ThreadRecord], pid: u32, strings: &mut StringTable<'_>) {
    let mut name = [0u8; THREAD_NAME_BYTES];
    for record in records.iter_mut() {
        if record.flags & thread_flags::ALIVE != 0 {
            let n = threads::thread_name(pid, record.tid, &mut name);
            record.name = strings.add_or_empty(&name[..n]);
        }
    }
}

/// Counts each thread's live blocks into its record; returns the live
/// bytes.
fn count_live_blocks(records: &mut [ThreadRecord], slots: &[Slot]) -> u64 {
    let mut live_bytes = 0u64;
    for slot in slots {
        live_bytes += slot.size();
        if let Some(record) = records.get_mut(slot.unpack().thread as usize) {
            record.live_count += 1;
        }
    }
    live_bytes
}

/// Everything the file holds but the process record, gathered.
struct Contents<'a, 's> {
    threads: &'a [ThreadRecord],
    modules: &'a [ModuleRecord],
    segments: &'a [SegmentRecord],
    slots: &'a [Slot],
    live_stacks: &'a LiveStacks<'a>,
    roots: &'a [RootRecord],
    edges: &'a EdgeBuffer,
    strings: &'a mut StringTable<'s>,
}

/// Streams the dump's sections to `sink` through `buffer`, the process
/// record last (with `write_ns`: the time since `writing`); returns the
/// bytes written.
fn write_file(
    sink: FdSink,
    buffer: &mut [u8],
    contents: Contents<'_, '_>,
    mut process: ProcessRecord,
    writing: u64,
) -> Result<u64, DumpError> {
    let Contents {
        threads,
        modules,
        segments,
        slots,
        live_stacks,
        roots,
        edges,
        strings,
    } = contents;
    let mut writer = DumpWriter::new(sink, buffer)?;
    writer.section(threads.iter().copied())?;
    writer.section(modules.iter().copied())?;
    writer.section(segments.iter().copied())?;
    writer.begin_section(SectionKind::Allocations)?;
    for slot in slots {
        let entry = slot.unpack();
        writer.write_record(&AllocationRecord {
            address: entry.address,
            size: entry.size,
            sequence: entry.sequence,
            stack: live_stacks.id_in_dump(entry.stack),
            thread: if (entry.thread as usize) < threads.len() {
                entry.thread
            } else {
                UNKNOWN_THREAD
            },
            align: entry.align as u32,
            flags: u32::from(entry.flags),
        })?;
    }
    writer.end_section()?;
    writer.section(live_stacks.records.iter().copied())?;
    writer.section(live_stacks.frames.iter().map(|&pc| FrameRecord { pc }))?;
    // The frames' function names, from the modules' symbol tables, so the
    // dump reads without the binary. Only here, after `world.resume()` and
    // with the tracker's locks released: it opens and maps files, which may
    // block, and a stopped thread may hold a lock that needs (the dynamic
    // loader's). Never move it before the resume; it must precede the
    // Strings section, which receives the names.
    crate::symbols::write_frame_names(&mut writer, modules, live_stacks.frames, strings)?;
    writer.section(roots.iter().copied())?;
    writer.section(edges.iter())?;
    writer.byte_section(SectionKind::Strings, strings.as_bytes())?;
    process.write_ns = sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(writing);
    writer.section([process])?;
    let (_, bytes_written) = writer.finish()?;
    Ok(bytes_written)
}

/// Says once per process that `mode=fork` fell back to stopping the
/// world, and why.
fn report_fork_failure(errno: i32) {
    static REPORTED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if REPORTED.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut line = sys::StderrLine::new();
    let _ = write!(line, "heapdump: fork failed (");
    line.push_errno(errno);
    let _ = write!(line, "); dumps stop the world instead (mode=stop)");
    line.emit();
}

/// Bytes below the stack pointer that a leaf function may use without
/// moving it (the x86_64 System V red zone).
const RED_ZONE: u64 = 128;

#[cfg(target_arch = "x86_64")]
const ELF_MACHINE: u32 = 62;
#[cfg(target_arch = "aarch64")]
const ELF_MACHINE: u32 = 183;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ELF_MACHINE: u32 = 0;

/// What a dump file is called while it is written: its name with this
/// suffix. It gets its name once its last byte is written, so no reader
/// (a person, `heapdump run`, a program that collects dumps) ever opens a
/// dump that is not whole.
pub const PARTIAL_SUFFIX: &[u8] = b".partial";

/// A new dump file: written at `partial`, renamed to `path` when whole.
pub struct NewFile<'p> {
    path: &'p CStr,
    partial: &'p CStr,
}

impl NewFile<'_> {
    /// Ends the writer's side of the file, `fd`, once the dump was written
    /// (`written`): closes it, and gives the whole dump its name, never
    /// replacing a file there (one made meanwhile: `EEXIST`); a failure
    /// anywhere removes the file (a partial dump is useless and may fill
    /// the disk further). Named only after a clean close: a failed one can
    /// mean the data never reached the disk (NFS says so at each close).
    fn finish(
        &self,
        fd: i32,
        written: Result<DumpStats, DumpError>,
    ) -> Result<DumpStats, DumpError> {
        let closed = sys::close(fd).map_err(|errno| DumpError::Write { errno });
        let named = written.and_then(|stats| {
            closed?;
            sys::rename_no_replace(self.partial, self.path)
                .map_err(|errno| DumpError::Open { errno })?;
            Ok(stats)
        });
        if named.is_err() {
            let _ = sys::remove_file(self.partial);
        }
        named
    }
}

/// Writes a dump (as [`write`]) to a new file at `path`, created 0600,
/// never following a symbolic link nor replacing a file. The file is
/// written under `path` + [`PARTIAL_SUFFIX`] (built in `partial`) and
/// renamed when whole, by whichever process wrote it (in `Mode::Fork` the
/// snapshot process, so the dump gets its name even if this process ends
/// first); on failure nothing is left.
pub fn write_new_file(
    path: &mut sys::PathBuf<4096>,
    partial: &mut sys::PathBuf<4096>,
    caller: &Caller,
    mode: Mode,
    serialized: &SpinGuard<'_, ()>,
) -> Result<DumpStats, DumpError> {
    partial.clear();
    // An empty path would write a whole dump to `.partial` and then fail.
    if path.as_bytes().is_empty() || !partial.push(path.as_bytes()) || !partial.push(PARTIAL_SUFFIX)
    {
        return Err(DumpError::InvalidPath);
    }
    let (path, partial) = (path.as_c_str(), partial.as_c_str());
    // Checked now so that a taken name costs no dump; the rename checks
    // again, atomically.
    match sys::exists(path) {
        Ok(false) => {}
        Ok(true) => {
            return Err(DumpError::Open {
                errno: libc::EEXIST,
            });
        }
        Err(errno) => return Err(DumpError::Open { errno }),
    }
    let fd = sys::create_new_file(partial, 0o600).map_err(|errno| DumpError::Open { errno })?;
    let file = NewFile { path, partial };
    let result = write(fd, caller, mode, serialized, Some(&file));
    match result {
        // The snapshot process named the dump (see `write`): this side
        // only closes its copy of `fd`, whose failure still means the
        // data may not be on the disk.
        Ok(stats) if stats.mode == Mode::Fork => match sys::close(fd) {
            Ok(()) => Ok(stats),
            Err(errno) => {
                let _ = sys::remove_file(path);
                Err(DumpError::Write { errno })
            }
        },
        // Written here (or the snapshot process failed: its file goes).
        result => file.finish(fd, result),
    }
}

/// The dump's thread records: every registered thread (its index is what
/// allocations carry), then the alive ones that never allocated, each
/// marked with how the stop went for it.
struct Threads<'s> {
    records: &'s mut [ThreadRecord],
    /// For each record, its entry in the stop's `stopped` + 1 (0: none).
    stop_entry: &'s [u64],
    stopped: u64,
    not_stopped: u64,
}

impl<'s> Threads<'s> {
    fn scratch_bytes(alive: &[u32]) -> usize {
        let registered = threads::registered_count() as usize;
        (registered + alive.len()) * (size_of::<ThreadRecord>() + 8 + 8) + 64
    }

    /// `alive`: the process's threads (sorted kernel ids); `others` and
    /// `stopped`: the threads the stop asked, and how each answered;
    /// `(pid, me)`: the main thread's and the dumping thread's ids.
    fn gather(
        memory: &'s Scratch,
        alive: &[u32],
        others: &[u32],
        stopped: &[StoppedThread],
        (pid, me): (u32, u32),
        caller_stack_pointer: u64,
    ) -> Result<Threads<'s>, DumpError> {
        let registered = threads::registered_count() as usize;
        let records = memory
            .take::<ThreadRecord>(registered + alive.len())
            .ok_or(DumpError::OutOfMemory)?;
        let stop_entry = memory
            .take::<u64>(registered + alive.len())
            .ok_or(DumpError::OutOfMemory)?;
        let claimed = memory
            .take::<u8>(alive.len())
            .ok_or(DumpError::OutOfMemory)?;
        let mut thread_count = 0;
        for (record, thread) in records.iter_mut().zip(threads::registered()) {
            *record = ThreadRecord {
                tid: thread.tid,
                stack_low: thread.stack_low,
                stack_high: thread.stack_high,
                ..ThreadRecord::default()
            };
            thread_count += 1;
        }
        // A kernel id can be reused after a thread exits: the latest
        // registration with that id is the living one.
        for record in records[..thread_count].iter_mut().rev() {
            if let Ok(at) = alive.binary_search(&record.tid)
                && claimed[at] == 0
            {
                claimed[at] = 1;
                record.flags |= thread_flags::ALIVE;
            }
        }
        for (&tid, _) in alive.iter().zip(claimed.iter()).filter(|(_, c)| **c == 0) {
            if let Some(record) = records.get_mut(thread_count) {
                *record = ThreadRecord {
                    tid,
                    flags: thread_flags::ALIVE,
                    ..ThreadRecord::default()
                };
                thread_count += 1;
            }
        }
        let records = &mut records[..thread_count];
        let (mut threads_stopped, mut threads_not_stopped) = (0, 0);
        for (index, record) in records.iter_mut().enumerate() {
            if record.tid == pid {
                record.flags |= thread_flags::MAIN;
            }
            if record.flags & thread_flags::ALIVE == 0 {
                continue;
            }
            if record.tid == me {
                record.flags |= thread_flags::DUMPING;
                record.stack_pointer = caller_stack_pointer;
                continue;
            }
            if let Ok(at) = others.binary_search(&record.tid) {
                let thread = &stopped[at];
                if thread.stopped {
                    record.flags |= thread_flags::STOPPED;
                    record.stack_pointer = thread.stack_pointer;
                    threads_stopped += 1;
                } else if thread.gone {
                    // It exited between the listing and the stop request.
                    record.flags &= !thread_flags::ALIVE;
                } else {
                    record.flags |= thread_flags::NOT_STOPPED;
                    threads_not_stopped += 1;
                }
                stop_entry[index] = at as u64 + 1;
            }
        }
        Ok(Threads {
            records,
            stop_entry: &stop_entry[..thread_count],
            stopped: threads_stopped,
            not_stopped: threads_not_stopped,
        })
    }
}

/// Production mode's blocks without records, as a dump lists them: from
/// the presence map, while it holds the map ([`Listing`]).
struct MappedBlocks<'a> {
    /// `None` when the map is off, or may not be read.
    listing: Option<&'a Listing>,
    /// Scratch for [`Listing::for_each`].
    pages: &'a mut [u64],
    /// How many blocks the first listing found: the room made for them. A
    /// thread that could not be stopped may add blocks before the second;
    /// those are left out (made during the dump).
    capacity: usize,
}

impl MappedBlocks<'_> {
    /// Calls `each(address, size)` for each block, in address order.
    fn for_each(&mut self, each: impl FnMut(u64, u64)) {
        if let Some(listing) = self.listing {
            // SAFETY: the dump holds the listing, and `may_list` held: every
            // thread is stopped or waits before freeing one of the map's
            // blocks, or this is the fork's child.
            unsafe { listing.for_each(self.pages, each) };
        }
    }

    /// Counts the blocks, and makes that the room for them.
    fn count(&mut self) -> usize {
        let mut count = 0;
        self.for_each(|_, _| count += 1);
        self.capacity = count;
        count
    }
}

/// The live blocks, sorted by address: every shard's records and the
/// presence map's blocks, with the shards' counters; read while the dump
/// holds every shard lock and the map.
struct LiveSet<'s> {
    slots: &'s [Slot],
    total_allocations: u64,
    total_frees: u64,
    /// The shards' and the map's memory, and the live blocks' footers.
    tracking_bytes: u64,
}

impl<'s> LiveSet<'s> {
    /// Scratch for the records and, later, the [`scan`]'s start and end of
    /// every block.
    fn scratch_bytes(shards: &[SpinGuard<'_, ShardTable>], mapped: &mut MappedBlocks) -> usize {
        let count = shards.iter().map(|s| s.count as usize).sum::<usize>() + mapped.count();
        count.max(1) * (size_of::<Slot>() + 2 * size_of::<u64>())
    }

    /// The records, and the map's blocks up to the number
    /// [`scratch_bytes`](Self::scratch_bytes) counted.
    fn gather(
        shards: &[SpinGuard<'_, ShardTable>],
        mapped: &mut MappedBlocks,
        memory: &'s Scratch,
    ) -> Result<LiveSet<'s>, DumpError> {
        let count = shards.iter().map(|s| s.count as usize).sum::<usize>() + mapped.capacity;
        let slots = memory.take::<Slot>(count).ok_or(DumpError::OutOfMemory)?;
        let mut filled = 0;
        let (mut total_allocations, mut total_frees, mut tracking_bytes) = (0, 0, 0);
        for shard in shards {
            for slot in shard.live() {
                if let Some(out) = slots.get_mut(filled) {
                    *out = *slot;
                    filled += 1;
                }
            }
            total_allocations += shard.total_allocations;
            total_frees += shard.total_frees;
            tracking_bytes += (shard.used_bytes() + shard.count as usize * FOOTER_BYTES) as u64;
        }
        // A block without a record has no sequence number, thread or stack.
        let mut mapped_bytes = 0u64;
        mapped.for_each(|address, size| {
            let entry = Entry {
                address,
                size,
                thread: heapdump_formats::records::UNKNOWN_THREAD,
                align: presence::ALIGNMENT as u64,
                flags: UNRECORDED,
                ..Entry::default()
            };
            if let (Some(out), Some(slot)) = (slots.get_mut(filled), Slot::pack(&entry)) {
                *out = slot;
                filled += 1;
                mapped_bytes += size;
            }
        });
        let totals = presence::totals();
        total_allocations += totals.allocations;
        total_frees += totals.frees;
        // The map's blocks have no footer (asked without its room).
        tracking_bytes += presence::tracking_bytes(mapped_bytes);
        let slots = &mut slots[..filled];
        slots.sort_unstable_by_key(|slot| slot.address());
        Ok(LiveSet {
            slots: drop_stale_records(slots),
            total_allocations,
            total_frees,
            tracking_bytes,
        })
    }
}

/// The flag of a block listed from the presence map.
const UNRECORDED: u8 = heapdump_formats::records::allocation_flags::UNRECORDED as u8;

/// Scans every live block and every root for words that point into a live
/// block: the edges, and the bytes read. Runs while the world is stopped
/// and every shard lock is held, so no block is freed under it.
fn scan(
    slots: &[Slot],
    roots: &[RootRecord],
    sources: &[RootSource],
    maps: &Mappings<'_>,
    memory: &Scratch,
) -> Result<(EdgeBuffer, u64), DumpError> {
    let starts = memory
        .take::<u64>(slots.len())
        .ok_or(DumpError::OutOfMemory)?;
    let ends = memory
        .take::<u64>(slots.len())
        .ok_or(DumpError::OutOfMemory)?;
    for ((slot, start), end) in slots.iter().zip(starts.iter_mut()).zip(ends.iter_mut()) {
        *start = slot.address();
        *end = slot.address() + slot.size();
    }
    let index_memory =
        Scratch::new(PointerIndex::scratch_bytes(starts, ends)).ok_or(DumpError::OutOfMemory)?;
    let index = PointerIndex::new(starts, ends, &index_memory).ok_or(DumpError::OutOfMemory)?;
    let mut edges = EdgeBuffer::new();
    let mut scanned_bytes = 0u64;
    for (source, slot) in slots.iter().enumerate() {
        let (start, end) = (slot.address(), slot.address() + slot.size());
        // Clipped to readable memory, in case the program protected part
        // of a block; normally the whole block, minus a tail shorter than
        // a word.
        for (from, to) in maps.readable(start, end) {
            // SAFETY: `from..to` is readable and inside a live block, which
            // stays allocated while the dump holds every shard lock
            // (freeing one takes its shard's lock first).
            unsafe {
                scan_words(
                    &index,
                    from as *const u64,
                    ((to - from) / 8) as usize,
                    from - start,
                    source as u32,
                    0,
                    &mut edges,
                );
            }
            scanned_bytes += to - from;
        }
    }
    for (source, (root, kind)) in roots.iter().zip(sources).enumerate() {
        match *kind {
            RootSource::Registers(registers) => {
                // SAFETY: the array of saved registers lives in scratch
                // memory that outlives the scan.
                unsafe {
                    scan_words(
                        &index,
                        registers,
                        SAVED_REGISTERS,
                        0,
                        source as u32,
                        FROM_ROOT,
                        &mut edges,
                    );
                }
                scanned_bytes += root.size;
            }
            RootSource::Memory => {
                for (from, to) in maps.readable(root.address, root.address + root.size) {
                    // SAFETY: `from..to` lies in a readable mapping; roots
                    // are stacks of stopped threads, TLS blocks and module
                    // segments, none of which is unmapped during the stop.
                    unsafe {
                        scan_words(
                            &index,
                            from as *const u64,
                            ((to - from) / 8) as usize,
                            from - root.address,
                            source as u32,
                            FROM_ROOT,
                            &mut edges,
                        );
                    }
                    scanned_bytes += to - from;
                }
            }
        }
    }
    Ok((edges, scanned_bytes))
}

/// The stacks the dump's allocations use, renumbered densely in the order
/// of their interned ids, with their frames. The interner keeps every stack a
/// block was ever allocated from; a program whose call paths vary (millions
/// of distinct stacks over its run, a few hundred thousand in use at once)
/// would otherwise write the frames of every freed block's stack, and have
/// each of those frames named.
struct LiveStacks<'s> {
    /// `renumber[id]`: the id of interned stack `id` in the dump (0: unused).
    renumber: &'s [u32],
    /// The dump's stack records; the first is the empty stack 0.
    records: &'s [StackRecord],
    /// Their frames, each stack's contiguous, innermost first.
    frames: &'s [u64],
}

impl<'s> LiveStacks<'s> {
    /// Scratch bytes [`gather`](Self::gather) may need: room for every
    /// interned stack and frame (address space only: the mapping's
    /// untouched pages cost nothing).
    fn scratch_bytes(stacks: &StacksSnapshot) -> usize {
        let interned = stacks.stack_count();
        interned * size_of::<u32>()
            + (interned + 1) * size_of::<StackRecord>()
            + stacks.frame_count() * size_of::<u64>()
            + 64
    }

    /// `None` when `scratch` is too small.
    fn gather(
        scratch: &'s Scratch,
        stacks: &StacksSnapshot,
        slots: &[Slot],
    ) -> Option<LiveStacks<'s>> {
        let renumber = scratch.take::<u32>(stacks.stack_count())?;
        for slot in slots {
            let id = slot.unpack().stack as usize;
            if let Some(mark) = renumber.get_mut(id) {
                *mark = 1;
            }
        }
        // Id 0 is the empty stack, and stays 0.
        if let Some(empty) = renumber.first_mut() {
            *empty = 0;
        }
        // Only the ids blocks hold are read: the others may be reserved
        // by threads that write them meanwhile (`StacksSnapshot::stack`).
        // A stack whose frames lie outside the snapshot (never, but a dump
        // must not panic inside the program) keeps no id.
        let (mut kept, mut frame_count) = (1usize, 0usize);
        for (id, mark) in renumber.iter_mut().enumerate() {
            if *mark == 0 {
                continue;
            }
            // SAFETY: a recorded block holds `id`, stored before the
            // block was recorded, so before the snapshot.
            *mark = match unsafe { stacks.stack(id) } {
                Some((_, frames)) => {
                    frame_count += frames.len();
                    kept += 1;
                    (kept - 1) as u32
                }
                None => 0,
            };
        }
        let records = scratch.take::<StackRecord>(kept)?;
        let frames = scratch.take::<u64>(frame_count)?;
        let mut next_frame = 0;
        for (id, &renumbered) in renumber.iter().enumerate() {
            if renumbered == 0 {
                continue;
            }
            // SAFETY: as above (the first pass kept only held ids), and
            // always there: that pass read this stack.
            let Some((stack, source)) = (unsafe { stacks.stack(id) }) else {
                continue;
            };
            let Some(target) = frames.get_mut(next_frame..next_frame + source.len()) else {
                continue;
            };
            target.copy_from_slice(source);
            records[renumbered as usize] = StackRecord {
                first_frame: next_frame as u64,
                frame_count: stack.frame_count,
                flags: stack.flags,
            };
            next_frame += source.len();
        }
        Some(LiveStacks {
            renumber,
            records,
            frames,
        })
    }

    /// The dump's id for interned stack `id`.
    fn id_in_dump(&self, id: u32) -> u32 {
        self.renumber.get(id as usize).copied().unwrap_or(0)
    }
}

/// Keeps, of records whose blocks overlap, only the newest. Overlaps mean a
/// block was freed without the tracker seeing it (C code calling `free` on
/// a Rust allocation, or a free made while the thread was inside the
/// tracker) and its memory handed out again: the older record is stale.
/// `slots` is sorted by address; returns the kept prefix.
fn drop_stale_records(slots: &mut [Slot]) -> &mut [Slot] {
    let mut kept = 0;
    for i in 0..slots.len() {
        let slot = slots[i];
        if kept > 0 {
            let last = slots[kept - 1];
            if slot.address() < last.address() + last.size().max(1) {
                if slot.sequence() > last.sequence() {
                    slots[kept - 1] = slot;
                }
                continue;
            }
        }
        slots[kept] = slot;
        kept += 1;
    }
    &mut slots[..kept]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Entry;

    fn slot(address: u64, size: u64, sequence: u64) -> Slot {
        Slot::pack(&Entry {
            address,
            size,
            sequence,
            ..Entry::default()
        })
        .unwrap()
    }

    /// The dump's stacks are the ones live blocks hold, renumbered densely
    /// from 1 in the order of their interned ids, each record over its own frames; an
    /// id past the snapshot, or 0, is the empty stack.
    #[test]
    fn live_stacks_are_the_held_ones_renumbered_densely() {
        use crate::stacks::StackInterner;
        use crate::walk::Walker;

        let interner = StackInterner::new();
        // Stacks of 8 frames fill this thread's frame reservations (8, 8,
        // 16, 32 slots) exactly: the last one ends where the snapshot's
        // frames end.
        let stacks: Vec<Vec<u64>> = (0..8u64)
            .map(|i| (0..8).map(|depth| 0x40_0000 + i * 64 + depth).collect())
            .collect();
        let mut walk = Walker::new();
        let mut ids = [0u32; 8];
        for (frames, id) in stacks.iter().zip(&mut ids) {
            walk.set(frames);
            *id = interner.intern(&walk);
        }
        let snapshot = interner.snapshot();
        assert_eq!(snapshot.frame_count(), 8 * 8);
        let past = snapshot.stack_count() as u32 + 5;
        let held = [ids[3], 0, ids[7], ids[5], ids[1], ids[3], past];
        let slots: Vec<Slot> = held
            .iter()
            .enumerate()
            .map(|(i, &stack)| {
                Slot::pack(&Entry {
                    address: 0x1000 * (i as u64 + 1),
                    size: 16,
                    sequence: i as u64 + 1,
                    stack,
                    ..Entry::default()
                })
                .unwrap()
            })
            .collect();
        let scratch = Scratch::new(LiveStacks::scratch_bytes(&snapshot)).unwrap();
        let live = LiveStacks::gather(&scratch, &snapshot, &slots).unwrap();
        assert_eq!(live.records.len(), 5);
        assert_eq!(live.records[0], StackRecord::default());
        for (dump_id, index) in [1, 3, 5, 7].into_iter().enumerate() {
            let dump_id = dump_id as u32 + 1;
            assert_eq!(live.id_in_dump(ids[index]), dump_id);
            let record = live.records[dump_id as usize];
            let from = record.first_frame as usize;
            assert_eq!(from, (dump_id as usize - 1) * 8);
            let to = from + record.frame_count as usize;
            assert_eq!(&live.frames[from..to], &stacks[index][..]);
        }
        assert_eq!(live.frames.len(), 4 * 8);
        for id in [0, ids[0], ids[2], ids[4], ids[6], past] {
            assert_eq!(live.id_in_dump(id), 0, "id {id}");
        }
    }

    #[test]
    fn overlapping_records_keep_only_the_newest() {
        let mut slots = [
            slot(0x1000, 16, 1),
            // Same address, reused: the newer record wins.
            slot(0x2000, 64, 2),
            slot(0x2000, 32, 9),
            // A stale big block overlapping two newer small ones.
            slot(0x3000, 256, 3),
            slot(0x3010, 16, 7),
            slot(0x3040, 16, 8),
            slot(0x4000, 8, 4),
        ];
        let kept: Vec<(u64, u64)> = drop_stale_records(&mut slots)
            .iter()
            .map(|s| (s.address(), s.size()))
            .collect();
        assert_eq!(
            kept,
            [
                (0x1000, 16),
                (0x2000, 32),
                (0x3010, 16),
                (0x3040, 16),
                (0x4000, 8)
            ]
        );
    }
}
