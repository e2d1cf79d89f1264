//! Record layouts of the `.hdump` format, described once for both the writer
//! and the reader.
//!
//! Every record is a fixed-width little-endian struct. The `record!` macro (private)
//! turns one table of `field: type @ byte offset` into a plain `Copy` struct
//! with `encode` (used by the allocation-free writer) and `decode` (used by the
//! reader, which only ever decodes the first [`Record::SIZE`] bytes of a
//! record so that a later minor version may append fields).
//! `formats/FORMAT.md` is the prose form of this file; a unit test checks the
//! offsets here are contiguous, so the two cannot silently drift apart.

/// Eight bytes that start every dump. The high byte and the CR LF / SUB / LF
/// tail catch 7-bit and text-mode transfers, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89HDUMP\r\n";
/// Eight bytes that end every complete dump.
pub const END_MAGIC: [u8; 8] = *b"HDUMPEND";
/// Written as a little-endian `u32`; a reader that sees any other value is
/// looking at a big-endian or corrupt file.
pub const ENDIAN_MARK: u32 = 0x0A0B_0C0D;
/// Major version: a reader refuses a dump whose major version it does not know.
/// Version 2 packs allocations into 24 bytes and edges into 12 (FORMAT.md §13).
pub const VERSION_MAJOR: u16 = 2;
/// The oldest major version the reader still reads (and the writer can still
/// write, for tests and tools that need version-1 dumps).
pub const OLDEST_MAJOR: u16 = 1;
/// Minor version: bumped when fields are appended or sections added; readers
/// of an older minor version still read newer dumps.
pub const VERSION_MINOR: u16 = 0;
/// Every section starts at a multiple of this many bytes.
pub const SECTION_ALIGN: u64 = 8;
/// At most this many sections in one dump.
pub const MAX_SECTIONS: usize = 64;

/// A field type a record can hold: fixed width, little-endian.
pub trait Field: Copy {
    /// Width in bytes.
    const WIDTH: usize;
    /// Writes the little-endian form into `out`, which is exactly `WIDTH` bytes.
    fn put(self, out: &mut [u8]);
    /// Reads from `bytes`, which is exactly `WIDTH` bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            const WIDTH: usize = size_of::<$t>();
            #[inline]
            fn put(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn get(bytes: &[u8]) -> Self {
                let mut raw = [0u8; size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64);

/// A string in the `Strings` section: byte offset and length. `len == 0`
/// means "absent or empty". Strings are UTF-8 where the source was (paths and
/// thread names are bytes from the OS; readers decode them lossily).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StrRef {
    /// Byte offset from the start of the `Strings` section.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl StrRef {
    /// The absent string.
    pub const EMPTY: StrRef = StrRef { offset: 0, len: 0 };
}

impl Field for StrRef {
    const WIDTH: usize = 8;
    #[inline]
    fn put(self, out: &mut [u8]) {
        let (a, b) = out.split_at_mut(4);
        self.offset.put(a);
        self.len.put(b);
    }
    #[inline]
    fn get(bytes: &[u8]) -> Self {
        let (a, b) = bytes.split_at(4);
        StrRef {
            offset: u32::get(a),
            len: u32::get(b),
        }
    }
}

/// Kinds of section. The numeric value is what the section table stores.
/// Unknown kinds are skipped by readers, so new kinds are a minor version bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum SectionKind {
    /// Bytes; strings referenced by [`StrRef`].
    Strings = 1,
    /// Exactly one [`ProcessRecord`].
    Process = 2,
    /// [`ThreadRecord`]s; a thread's index here is its id elsewhere.
    Threads = 3,
    /// [`ModuleRecord`]s: loaded executables and shared objects.
    Modules = 4,
    /// [`SegmentRecord`]s: the `PT_LOAD` segments of each module.
    Segments = 5,
    /// [`AllocationRecord`]s, sorted by address, non-overlapping.
    Allocations = 6,
    /// [`StackRecord`]s; a stack's index here is its stack id.
    Stacks = 7,
    /// [`FrameRecord`]s: the return addresses all stacks point into.
    Frames = 8,
    /// [`RootRecord`]s: memory ranges outside the heap that the scan treats
    /// as live (registers, thread stacks, TLS, writable module segments).
    Roots = 9,
    /// [`EdgeRecord`]s: pointers found by the conservative scan.
    Edges = 10,
    /// [`ContentRecord`]s: where each dumped allocation's bytes are.
    ContentIndex = 11,
    /// Bytes: allocation contents, when the dump was asked to include them.
    ContentBytes = 12,
    /// [`FrameNameRecord`]s: one per `Frames` record, in the same order, the
    /// raw symbol name of the function holding each frame (since 2.0).
    FrameNames = 13,
    /// [`EdgeEscapeRecord`]s (version 2): the offsets and flags of the
    /// edges whose packed form could not hold them. Written by the writer
    /// itself after `Edges`.
    EdgeEscapes = 14,
}

impl SectionKind {
    /// Every kind this version knows, in numeric order.
    pub const ALL: [SectionKind; 14] = [
        SectionKind::Strings,
        SectionKind::Process,
        SectionKind::Threads,
        SectionKind::Modules,
        SectionKind::Segments,
        SectionKind::Allocations,
        SectionKind::Stacks,
        SectionKind::Frames,
        SectionKind::Roots,
        SectionKind::Edges,
        SectionKind::ContentIndex,
        SectionKind::ContentBytes,
        SectionKind::FrameNames,
        SectionKind::EdgeEscapes,
    ];

    /// The kind with this numeric value, if this version knows it.
    pub fn from_u32(value: u32) -> Option<SectionKind> {
        SectionKind::ALL
            .iter()
            .copied()
            .find(|k| *k as u32 == value)
    }

    /// The record size this version writes for the kind; 0 for byte sections.
    pub const fn record_size(self) -> u32 {
        self.record_size_in(VERSION_MAJOR)
    }

    /// The record size of the kind in dumps of major version `major`; 0 for
    /// byte sections. Only `Allocations` and `Edges` differ between 1 and 2.
    pub const fn record_size_in(self, major: u16) -> u32 {
        if major >= 2 {
            match self {
                SectionKind::Allocations => return AllocationRecord::PACKED_SIZE as u32,
                SectionKind::Edges => return EdgeRecord::PACKED_SIZE as u32,
                _ => {}
            }
        }
        (match self {
            SectionKind::Strings | SectionKind::ContentBytes => 0,
            SectionKind::Process => ProcessRecord::SIZE,
            SectionKind::Threads => ThreadRecord::SIZE,
            SectionKind::Modules => ModuleRecord::SIZE,
            SectionKind::Segments => SegmentRecord::SIZE,
            SectionKind::Allocations => AllocationRecord::SIZE,
            SectionKind::Stacks => StackRecord::SIZE,
            SectionKind::Frames => FrameRecord::SIZE,
            SectionKind::Roots => RootRecord::SIZE,
            SectionKind::Edges => EdgeRecord::SIZE,
            SectionKind::ContentIndex => ContentRecord::SIZE,
            SectionKind::FrameNames => FrameNameRecord::SIZE,
            SectionKind::EdgeEscapes => EdgeEscapeRecord::SIZE,
        }) as u32
    }

    /// The name used in FORMAT.md and in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            SectionKind::Strings => "Strings",
            SectionKind::Process => "Process",
            SectionKind::Threads => "Threads",
            SectionKind::Modules => "Modules",
            SectionKind::Segments => "Segments",
            SectionKind::Allocations => "Allocations",
            SectionKind::Stacks => "Stacks",
            SectionKind::Frames => "Frames",
            SectionKind::Roots => "Roots",
            SectionKind::Edges => "Edges",
            SectionKind::ContentIndex => "ContentIndex",
            SectionKind::ContentBytes => "ContentBytes",
            SectionKind::FrameNames => "FrameNames",
            SectionKind::EdgeEscapes => "EdgeEscapes",
        }
    }
}

impl core::fmt::Display for SectionKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A fixed-width record of one section kind.
pub trait Record: Copy + Default {
    /// The section this record lives in.
    const KIND: SectionKind;
    /// Encoded width in bytes (this version's; a dump may use larger records).
    const SIZE: usize;
    /// Field names and byte offsets, in order; used by tests and tools.
    const FIELDS: &'static [(&'static str, usize, usize)];
    /// Encodes into `out`; writes nothing if `out` is shorter than `SIZE`.
    fn encode(&self, out: &mut [u8]);
    /// Decodes the first `SIZE` bytes; `None` if `bytes` is shorter.
    fn decode(bytes: &[u8]) -> Option<Self>;
    /// Bytes per record in a version-2 dump: `SIZE`, except for the kinds
    /// version 2 packs (see [`crate::packed`]).
    const PACKED_SIZE: usize = Self::SIZE;
    /// Encodes in the version-2 form into `out` (`PACKED_SIZE` bytes).
    /// `index` is the record's index in its section.
    #[inline]
    fn encode_packed(&self, out: &mut [u8], _index: u64) -> Result<Packed, DoesNotFit> {
        self.encode(out);
        Ok(Packed::Whole)
    }
    /// Decodes record `index` of a version-2 section from its first
    /// `PACKED_SIZE` bytes; `escapes` is the dump's `EdgeEscapes` section.
    #[inline]
    fn decode_packed(bytes: &[u8], _index: u64, _escapes: EscapeRecords<'_>) -> Option<Self> {
        Self::decode(bytes)
    }
}

/// Declares a record: a struct, its field offsets and its codec.
macro_rules! record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident : $kind:ident, size $size:literal $(, packed by $packed:ident)? {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $off:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Record for $name {
            const KIND: SectionKind = SectionKind::$kind;
            const SIZE: usize = $size;
            const FIELDS: &'static [(&'static str, usize, usize)] =
                &[$( (stringify!($field), $off, <$ty as Field>::WIDTH), )*];

            #[inline]
            fn encode(&self, out: &mut [u8]) {
                if out.len() < $size {
                    return;
                }
                $(
                    if let Some(dst) = out.get_mut($off..$off + <$ty as Field>::WIDTH) {
                        self.$field.put(dst);
                    }
                )*
            }

            #[inline]
            fn decode(bytes: &[u8]) -> Option<Self> {
                if bytes.len() < $size {
                    return None;
                }
                Some($name {
                    $( $field: <$ty as Field>::get(bytes.get($off..$off + <$ty as Field>::WIDTH)?), )*
                })
            }

            $(
                const PACKED_SIZE: usize = $packed::SIZE;

                #[inline]
                fn encode_packed(&self, out: &mut [u8], index: u64) -> Result<Packed, DoesNotFit> {
                    $packed::encode_record(self, out, index)
                }

                #[inline]
                fn decode_packed(bytes: &[u8], index: u64, escapes: EscapeRecords<'_>) -> Option<Self> {
                    $packed::decode_record(bytes, index, escapes)
                }
            )?
        }
    };
}

use crate::packed::{
    DoesNotFit, EscapeRecords, Packed, allocation as packed_allocation, edge as packed_edge,
};

/// Bit flags of [`ProcessRecord::flags`].
pub mod process_flags {
    /// The dump includes allocation contents (`ContentIndex`/`ContentBytes`).
    pub const HAS_CONTENTS: u32 = 1 << 0;
    /// The dump includes roots and edges from a conservative scan.
    pub const HAS_SCAN: u32 = 1 << 1;
    /// Other threads were stopped while the snapshot was taken.
    pub const WORLD_STOPPED: u32 = 1 << 2;
    /// Some thread could not be stopped (see [`super::thread_flags::NOT_STOPPED`]).
    pub const INCOMPLETE_STOP: u32 = 1 << 3;
    /// Some allocations, stacks or roots were not recorded (tables could
    /// not grow; more runs of anonymous memory than a dump takes).
    pub const DROPPED_RECORDS: u32 = 1 << 4;
    /// The snapshot was read, scanned and written by a copy-on-write child
    /// process forked while the threads were stopped (`mode=fork`); the
    /// program ran on meanwhile. `pause_ns` covers only the stop and fork.
    pub const FORKED: u32 = 1 << 5;
    /// `mode=fork` was asked for but `fork` failed (seccomp, `ENOMEM`,
    /// `RLIMIT_NPROC`): the world stayed stopped for the whole scan.
    pub const FORK_FAILED: u32 = 1 << 6;
    /// `mode=fork`: the program had anonymous memory marked
    /// `MADV_DONTFORK` (as V8 marks its heap), which the child lacks, so it
    /// was not scanned: blocks only it points to look lost.
    pub const MEMORY_NOT_FORKED: u32 = 1 << 7;
}

record! {
    /// The process and the tracker at the moment of the dump. One per dump.
    pub struct ProcessRecord: Process, size 152 {
        /// Process id.
        pid: u32 = 0,
        /// Size of a pointer in bytes (8 on x86_64).
        pointer_size: u32 = 4,
        /// Page size in bytes.
        page_size: u32 = 8,
        /// [`process_flags`] bits.
        flags: u32 = 12,
        /// Wall-clock time the snapshot was taken, nanoseconds since the Unix epoch.
        timestamp_ns: u64 = 16,
        /// 1 for the first dump this process wrote, 2 for the second, ...
        dump_number: u32 = 24,
        /// ELF `e_machine` of the process (62 = x86_64, 183 = aarch64).
        machine: u32 = 28,
        /// Path of the executable (`/proc/self/exe`).
        exe: StrRef = 32,
        /// Command line, arguments separated by NUL bytes.
        cmdline: StrRef = 40,
        /// Bytes in live allocations at the snapshot (sum of `Allocations` sizes).
        live_bytes: u64 = 48,
        /// Number of live allocations at the snapshot.
        live_count: u64 = 56,
        /// Highest `live_bytes` seen since the tracker started.
        peak_live_bytes: u64 = 64,
        /// Allocations made since start (alloc, alloc_zeroed, and moved reallocs).
        total_allocations: u64 = 72,
        /// Deallocations since start.
        total_frees: u64 = 80,
        /// Allocations the tracker could not record (its tables, or the
        /// presence map, could not get memory), counted when they were
        /// made; absent from `Allocations`.
        dropped_allocations: u64 = 88,
        /// Allocations whose stack the tracker could not intern, counted
        /// once per allocation when made (not per distinct stack); those
        /// live show stack id 0.
        dropped_stacks: u64 = 96,
        /// Bytes of memory the tracker's own tables use.
        tracking_bytes: u64 = 104,
        /// Every allocation in this dump has a smaller sequence number.
        next_sequence: u64 = 112,
        /// Nanoseconds other threads were paused (stopped or blocked) by the snapshot.
        pause_ns: u64 = 120,
        /// Nanoseconds spent writing the dump after the snapshot.
        write_ns: u64 = 128,
        /// Highest `live_count` seen since the tracker started.
        peak_live_count: u64 = 136,
        /// Production mode (`stacks=sample:SIZE`): the mean interval S in
        /// bytes of the byte-weighted sample of allocations whose stacks
        /// were walked (see [`allocation_flags::SAMPLED`]); 0: every
        /// allocation's stack was (exact mode; written as 0 before 1.1's
        /// addition of this field).
        stack_sample_interval: u64 = 144,
    }
}

/// Bit flags of [`ThreadRecord::flags`].
pub mod thread_flags {
    /// The thread was alive at the snapshot.
    pub const ALIVE: u32 = 1 << 0;
    /// The thread that wrote the dump.
    pub const DUMPING: u32 = 1 << 1;
    /// The process's main thread.
    pub const MAIN: u32 = 1 << 2;
    /// The thread was stopped for the snapshot and its registers saved.
    pub const STOPPED: u32 = 1 << 3;
    /// The thread was alive but did not acknowledge the stop request in time
    /// (all signals blocked, say); its stack was scanned while it ran.
    pub const NOT_STOPPED: u32 = 1 << 4;
}

record! {
    /// A thread that allocated, or that was alive at the snapshot. The
    /// record's index in `Threads` is the thread index other records use.
    pub struct ThreadRecord: Threads, size 48 {
        /// Kernel thread id.
        tid: u32 = 0,
        /// [`thread_flags`] bits.
        flags: u32 = 4,
        /// Thread name (`/proc/self/task/TID/comm`) when alive at the snapshot.
        name: StrRef = 8,
        /// Lowest address of the thread's stack (0 if unknown).
        stack_low: u64 = 16,
        /// One past the highest address of the thread's stack (0 if unknown).
        stack_high: u64 = 24,
        /// Stack pointer at the snapshot (0 if not stopped).
        stack_pointer: u64 = 32,
        /// Allocations made by this thread that are live at the snapshot.
        live_count: u64 = 40,
    }
}

/// Bit flags of [`ModuleRecord::flags`].
pub mod module_flags {
    /// The main executable.
    pub const MAIN_EXECUTABLE: u32 = 1 << 0;
    /// The vDSO (it has no file on disk).
    pub const VDSO: u32 = 1 << 1;
}

record! {
    /// A loaded ELF object (the executable or a shared library).
    pub struct ModuleRecord: Modules, size 48 {
        /// Path as the dynamic loader knows it (the executable's is absolute).
        path: StrRef = 0,
        /// GNU build-id note (raw bytes, usually 20); empty if the object has none.
        build_id: StrRef = 8,
        /// Load bias: runtime address minus the ELF file's virtual address.
        load_bias: u64 = 16,
        /// Lowest mapped address of the module's `PT_LOAD` segments.
        start: u64 = 24,
        /// One past the highest mapped address.
        end: u64 = 32,
        /// [`module_flags`] bits.
        flags: u32 = 40,
        /// Reserved, written as zero.
        reserved: u32 = 44,
    }
}

/// Bit flags of [`SegmentRecord::flags`] (the ELF `p_flags` values).
pub mod segment_flags {
    /// Executable.
    pub const EXECUTE: u32 = 1;
    /// Writable.
    pub const WRITE: u32 = 2;
    /// Readable.
    pub const READ: u32 = 4;
}

record! {
    /// A `PT_LOAD` segment of a module, at its runtime address.
    pub struct SegmentRecord: Segments, size 32 {
        /// Index of the module in `Modules`.
        module: u32 = 0,
        /// [`segment_flags`] bits.
        flags: u32 = 4,
        /// Runtime start address.
        start: u64 = 8,
        /// One past the runtime end address (start + `p_memsz`).
        end: u64 = 16,
        /// Offset of the segment in the ELF file.
        file_offset: u64 = 24,
    }
}

/// Bit flags of [`AllocationRecord::flags`].
pub mod allocation_flags {
    /// Allocated with `alloc_zeroed`.
    pub const ZEROED: u32 = 1 << 0;
    /// The block's current address and size come from a `realloc`.
    pub const REALLOCATED: u32 = 1 << 1;
    /// Production mode only: this block is in the stack sample, so its
    /// stack was walked; blocks without it have stack 0. A block of `s`
    /// bytes is sampled with probability `1 - exp(-s/S)` (S:
    /// [`super::ProcessRecord::stack_sample_interval`]), or 1 when `s >= S`.
    pub const SAMPLED: u32 = 1 << 2;
    /// Production mode only: the block was listed from the allocator's
    /// memory (the capture's presence map over glibc's blocks) rather than
    /// from a record, so it has no sequence number (0), thread
    /// ([`super::UNKNOWN_THREAD`]) or stack (0), and its alignment is the
    /// allocator's. Never with SAMPLED.
    pub const UNRECORDED: u32 = 1 << 3;
}

/// The thread index of an allocation whose thread is unknown.
pub const UNKNOWN_THREAD: u32 = u32::MAX;

record! {
    /// A live heap allocation. Sorted by `address`; blocks never overlap.
    /// Version 1 stores it whole (40 bytes); version 2 packs it into 24
    /// ([`crate::packed::allocation`]).
    pub struct AllocationRecord: Allocations, size 40, packed by packed_allocation {
        /// Address returned to the program.
        address: u64 = 0,
        /// Size the program asked for, in bytes.
        size: u64 = 8,
        /// Allocation order: smaller is older. Unique among live allocations.
        sequence: u64 = 16,
        /// Index in `Stacks` of the allocation stack (0: unknown).
        stack: u32 = 24,
        /// Index in `Threads` of the allocating thread, or [`UNKNOWN_THREAD`].
        thread: u32 = 28,
        /// Alignment the program asked for, in bytes (a power of two).
        align: u32 = 32,
        /// [`allocation_flags`] bits.
        flags: u32 = 36,
    }
}

/// Bit flags of [`StackRecord::flags`].
pub mod stack_flags {
    /// The walk stopped at the frame limit; outer frames are missing.
    pub const TRUNCATED: u32 = 1 << 0;
    /// Some frames were found through the modules' call frame information
    /// (CFI) because their code keeps no frame pointer: without CFI the
    /// walk would have stopped or gone astray there.
    pub const CFI: u32 = 1 << 1;
}

record! {
    /// An interned allocation stack. Stack 0 always exists and is empty
    /// ("unknown"). Frames are `frame_count` consecutive `Frames` records,
    /// innermost first.
    pub struct StackRecord: Stacks, size 16 {
        /// Index of the innermost frame in `Frames`.
        first_frame: u64 = 0,
        /// Number of frames.
        frame_count: u32 = 8,
        /// [`stack_flags`] bits.
        flags: u32 = 12,
    }
}

record! {
    /// One frame of a stack. Every frame, the innermost included, is a
    /// return address: symbolize `pc - 1` so the lookup lands in the call
    /// instruction rather than in the one after it.
    pub struct FrameRecord: Frames, size 8 {
        /// Return address (symbolize `pc - 1`).
        pc: u64 = 0,
    }
}

record! {
    /// The function a frame is in, so a dump names its frames without the
    /// binary: record `i` belongs to `Frames` record `i`. The name is the
    /// raw (mangled) ELF symbol; readers demangle it.
    pub struct FrameNameRecord: FrameNames, size 8 {
        /// The symbol's name in `Strings`; empty when unknown.
        name: StrRef = 0,
    }
}

/// Kinds of root ([`RootRecord::kind`]).
pub mod root_kind {
    /// Saved general-purpose registers of a thread; `address` is 0 and the
    /// edge source offset is the register number × 8.
    pub const REGISTERS: u16 = 1;
    /// A thread's stack, from its stack pointer (minus the red zone) to its top.
    pub const THREAD_STACK: u16 = 2;
    /// A thread's static TLS block.
    pub const STATIC_TLS: u16 = 3;
    /// A dynamically allocated TLS block (`dlopen`ed modules).
    pub const DYNAMIC_TLS: u16 = 4;
    /// A writable `PT_LOAD` segment (`.data`, `.bss`) of a module.
    pub const DATA_SEGMENT: u16 = 5;
    /// Any other range the capture side declared live.
    pub const OTHER: u16 = 6;
    /// Resident pages of an anonymous read-write mapping of the program's
    /// (its own arenas, a runtime's heap), as memcheck scans them.
    pub const ANONYMOUS_MAPPING: u16 = 7;
}

/// Machines ([`ProcessRecord::machine`], ELF `e_machine`); named, with
/// their registers, by [`crate::constants::Machine`].
pub mod machine {
    /// 32-bit x86 (`EM_386`).
    pub const X86: u32 = 3;
    /// x86_64 (`EM_X86_64`).
    pub const X86_64: u32 = 62;
    /// aarch64 (`EM_AARCH64`).
    pub const AARCH64: u32 = 183;
}

/// Owner kinds ([`RootRecord::owner_kind`]).
pub mod owner_kind {
    /// No owner.
    pub const NONE: u16 = 0;
    /// `owner` is an index in `Threads`.
    pub const THREAD: u16 = 1;
    /// `owner` is an index in `Modules`.
    pub const MODULE: u16 = 2;
}

record! {
    /// A memory range outside the tracked heap that the scan treats as live.
    pub struct RootRecord: Roots, size 40 {
        /// One of [`root_kind`].
        kind: u16 = 0,
        /// One of [`owner_kind`].
        owner_kind: u16 = 2,
        /// Index of the owning thread or module.
        owner: u32 = 4,
        /// Start address of the range (0 for registers).
        address: u64 = 8,
        /// Length of the range in bytes.
        size: u64 = 16,
        /// A name for the range (a symbol, a section name), may be empty.
        name: StrRef = 24,
        /// Reserved, written as zero.
        reserved: u64 = 32,
    }
}

/// Bit flags of [`EdgeRecord::flags`].
pub mod edge_flags {
    /// The source is a root (`source` indexes `Roots`), not an allocation.
    pub const FROM_ROOT: u32 = 1 << 0;
}

record! {
    /// A word at `source + source_offset` whose value is
    /// `target.address + target_offset`. Sorted by (`flags & FROM_ROOT`,
    /// `source`, `source_offset`).
    /// Version 1 stores it whole (32 bytes); version 2 packs it into 12
    /// ([`crate::packed::edge`]), with an [`EdgeEscapeRecord`] for what does
    /// not fit.
    pub struct EdgeRecord: Edges, size 32, packed by packed_edge {
        /// Index in `Allocations`, or in `Roots` when `FROM_ROOT` is set.
        source: u32 = 0,
        /// Index in `Allocations` of the block pointed into.
        target: u32 = 4,
        /// Byte offset of the pointer word within the source.
        source_offset: u64 = 8,
        /// Byte offset within the target the pointer points at (0: start pointer).
        target_offset: u64 = 16,
        /// [`edge_flags`] bits.
        flags: u32 = 24,
        /// Reserved, written as zero.
        reserved: u32 = 28,
    }
}

record! {
    /// Version 2: the offsets and flags of an edge whose packed form is an
    /// escape (a root edge into the middle of a block, an interior pointer
    /// with large offsets, an offset of 1 GiB or more, unknown flag bits).
    /// Sorted by `edge`, one per escaped edge.
    pub struct EdgeEscapeRecord: EdgeEscapes, size 24 {
        /// Index in `Edges` of the escaped edge.
        edge: u32 = 0,
        /// The edge's [`edge_flags`] bits.
        flags: u32 = 4,
        /// Byte offset of the pointer word within the source.
        source_offset: u64 = 8,
        /// Byte offset within the target the pointer points at.
        target_offset: u64 = 16,
    }
}

record! {
    /// Where the bytes of one allocation are stored in `ContentBytes`.
    pub struct ContentRecord: ContentIndex, size 24 {
        /// Index in `Allocations`.
        allocation: u32 = 0,
        /// Reserved, written as zero.
        reserved: u32 = 4,
        /// Byte offset in `ContentBytes`.
        offset: u64 = 8,
        /// Number of bytes stored (may be less than the allocation's size).
        len: u64 = 16,
    }
}

/// One entry of the section table in the footer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionEntry {
    /// [`SectionKind`] value (unknown values are allowed and skipped).
    pub kind: u32,
    /// Bytes per record; 0 for byte sections.
    pub record_size: u32,
    /// Byte offset of the section from the start of the file.
    pub offset: u64,
    /// Length of the section in bytes.
    pub length: u64,
    /// Number of records (for byte sections, equal to `length`).
    pub count: u64,
    /// CRC-32 (IEEE, as zlib computes it) of the section's bytes.
    pub crc32: u32,
    /// Reserved, written as zero.
    pub reserved: u32,
}

impl SectionEntry {
    /// Encoded size of one entry.
    pub const SIZE: usize = 40;

    /// Encodes into a fixed array.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        let (a, rest) = out.split_at_mut(4);
        self.kind.put(a);
        let (a, rest) = rest.split_at_mut(4);
        self.record_size.put(a);
        let (a, rest) = rest.split_at_mut(8);
        self.offset.put(a);
        let (a, rest) = rest.split_at_mut(8);
        self.length.put(a);
        let (a, rest) = rest.split_at_mut(8);
        self.count.put(a);
        let (a, rest) = rest.split_at_mut(4);
        self.crc32.put(a);
        self.reserved.put(rest);
        out
    }

    /// Decodes from exactly [`Self::SIZE`] bytes.
    pub fn decode(bytes: &[u8; Self::SIZE]) -> SectionEntry {
        let (a, rest) = bytes.split_at(4);
        let (b, rest) = rest.split_at(4);
        let (c, rest) = rest.split_at(8);
        let (d, rest) = rest.split_at(8);
        let (e, rest) = rest.split_at(8);
        let (f, g) = rest.split_at(4);
        SectionEntry {
            kind: u32::get(a),
            record_size: u32::get(b),
            offset: u64::get(c),
            length: u64::get(d),
            count: u64::get(e),
            crc32: u32::get(f),
            reserved: u32::get(g),
        }
    }
}

/// The file header: magic, version, endianness mark.
pub const HEADER_SIZE: usize = 16;
/// The trailer at the very end: table offset, section count, table CRC, end magic.
pub const TRAILER_SIZE: usize = 24;

/// Encodes the 16-byte header of a dump of major version `major`.
pub fn encode_header(major: u16) -> [u8; HEADER_SIZE] {
    let mut out = [0u8; HEADER_SIZE];
    let (magic, rest) = out.split_at_mut(8);
    magic.copy_from_slice(&MAGIC);
    let (major_field, rest) = rest.split_at_mut(2);
    major.put(major_field);
    let (minor, endian) = rest.split_at_mut(2);
    VERSION_MINOR.put(minor);
    ENDIAN_MARK.put(endian);
    out
}

/// Encodes the 24-byte trailer.
pub fn encode_trailer(table_offset: u64, section_count: u32, table_crc: u32) -> [u8; TRAILER_SIZE] {
    let mut out = [0u8; TRAILER_SIZE];
    let (a, rest) = out.split_at_mut(8);
    table_offset.put(a);
    let (b, rest) = rest.split_at_mut(4);
    section_count.put(b);
    let (c, magic) = rest.split_at_mut(4);
    table_crc.put(c);
    magic.copy_from_slice(&END_MAGIC);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_layout<R: Record>() {
        let mut end = 0;
        for (name, offset, width) in R::FIELDS {
            assert_eq!(
                *offset,
                end,
                "{}.{name} does not follow the previous field",
                R::KIND
            );
            end = offset + width;
        }
        assert_eq!(end, R::SIZE, "{} fields do not fill the record", R::KIND);
        assert_eq!(R::SIZE % 8, 0, "{} size is not a multiple of 8", R::KIND);
    }

    #[test]
    fn record_fields_are_contiguous_and_fill_the_record() {
        check_layout::<ProcessRecord>();
        check_layout::<ThreadRecord>();
        check_layout::<ModuleRecord>();
        check_layout::<SegmentRecord>();
        check_layout::<AllocationRecord>();
        check_layout::<StackRecord>();
        check_layout::<FrameRecord>();
        check_layout::<RootRecord>();
        check_layout::<EdgeRecord>();
        check_layout::<ContentRecord>();
        check_layout::<FrameNameRecord>();
        check_layout::<EdgeEscapeRecord>();
    }

    #[test]
    fn allocation_record_round_trips_through_little_endian_bytes() {
        let record = AllocationRecord {
            address: 0x5555_0000_1230,
            size: 4096,
            sequence: 7,
            stack: 3,
            thread: 1,
            align: 16,
            flags: allocation_flags::ZEROED,
        };
        let mut bytes = [0u8; AllocationRecord::SIZE];
        record.encode(&mut bytes);
        assert_eq!(&bytes[..8], &0x5555_0000_1230u64.to_le_bytes());
        assert_eq!(AllocationRecord::decode(&bytes), Some(record));
        assert_eq!(AllocationRecord::decode(&bytes[..39]), None);
    }

    #[test]
    fn section_entry_round_trips() {
        let entry = SectionEntry {
            kind: 6,
            record_size: 40,
            offset: 16,
            length: 80,
            count: 2,
            crc32: 0xdead_beef,
            reserved: 0,
        };
        assert_eq!(SectionEntry::decode(&entry.encode()), entry);
    }

    #[test]
    fn every_kind_round_trips_through_its_number() {
        for kind in SectionKind::ALL {
            assert_eq!(SectionKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(SectionKind::from_u32(0), None);
        assert_eq!(SectionKind::from_u32(999), None);
    }
}
