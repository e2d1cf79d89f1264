//! Test support (feature `testing`): a builder for dumps made on purpose,
//! a realistic sample dump, a function that touches every reader accessor,
//! and [`assert_survives_corruption`], the truncation and bit-flip test that
//! any `.hdump` (a sample or a real one from `heapdump-capture`) must pass.
//!
//! ```
//! use heapdump_formats::testing::{DumpBuilder, assert_survives_corruption};
//! let dump = DumpBuilder::realistic(20).to_bytes();
//! assert_survives_corruption(&dump);
//! ```
//!
//! Nothing here is meant for production code: it panics on failure, as tests do.

use crate::read::{DumpView, FormatError};
use crate::records::*;
use crate::verify::verify;
use crate::write::DumpWriter;

/// A tiny deterministic PRNG (SplitMix64), so samples and flip positions are
/// reproducible without a dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// Every section of a dump as plain vectors, written with the real
/// [`DumpWriter`]. Tests build one, break one field on purpose, and check the
/// reader or `verify` notices.
#[derive(Clone, Debug, Default)]
pub struct DumpBuilder {
    /// `Strings` bytes.
    pub strings: Vec<u8>,
    /// The `Process` record.
    pub process: ProcessRecord,
    /// `Threads`.
    pub threads: Vec<ThreadRecord>,
    /// `Modules`.
    pub modules: Vec<ModuleRecord>,
    /// `Segments`.
    pub segments: Vec<SegmentRecord>,
    /// `Allocations`.
    pub allocations: Vec<AllocationRecord>,
    /// `Stacks`.
    pub stacks: Vec<StackRecord>,
    /// `Frames`.
    pub frames: Vec<FrameRecord>,
    /// `Roots`.
    pub roots: Vec<RootRecord>,
    /// `Edges`.
    pub edges: Vec<EdgeRecord>,
    /// `ContentIndex`.
    pub contents: Vec<ContentRecord>,
    /// `ContentBytes`.
    pub content_bytes: Vec<u8>,
    /// `FrameNames`, one per frame; the section is written only when this
    /// is not empty.
    pub frame_names: Vec<FrameNameRecord>,
    /// The major version [`to_bytes`](Self::to_bytes) writes; `None` for
    /// the current one. Version 1 holds any value (version 2 refuses the
    /// ones its packed records cannot hold, such as an alignment of 24).
    pub major: Option<u16>,
}

impl DumpBuilder {
    /// Appends a string to `Strings`.
    pub fn string(&mut self, bytes: &[u8]) -> StrRef {
        if bytes.is_empty() {
            return StrRef::EMPTY;
        }
        let offset = self.strings.len() as u32;
        self.strings.extend_from_slice(bytes);
        StrRef {
            offset,
            len: bytes.len() as u32,
        }
    }

    /// Appends a stack of `pcs` (innermost first) and returns its id.
    pub fn stack(&mut self, pcs: &[u64]) -> u32 {
        let first_frame = self.frames.len() as u64;
        self.frames.extend(pcs.iter().map(|&pc| FrameRecord { pc }));
        self.stacks.push(StackRecord {
            first_frame,
            frame_count: pcs.len() as u32,
            flags: 0,
        });
        (self.stacks.len() - 1) as u32
    }

    /// Sets the process's and threads' live totals from `allocations`, as a
    /// correct tracker would.
    pub fn fix_totals(&mut self) {
        self.process.live_count = self.allocations.len() as u64;
        self.process.live_bytes = self.allocations.iter().map(|a| a.size).sum();
        for thread in &mut self.threads {
            thread.live_count = 0;
        }
        for allocation in &self.allocations {
            if let Some(thread) = self.threads.get_mut(allocation.thread as usize) {
                thread.live_count += 1;
            }
        }
    }

    /// Sorts edges into the order the format requires.
    pub fn sort_edges(&mut self) {
        self.edges
            .sort_by_key(|e| (e.flags & edge_flags::FROM_ROOT, e.source, e.source_offset));
        self.edges
            .dedup_by_key(|e| (e.flags & edge_flags::FROM_ROOT, e.source, e.source_offset));
    }

    /// A small sound dump: two threads, one module, three allocations, one
    /// root and a few edges. `verify` finds nothing wrong with it.
    pub fn small() -> DumpBuilder {
        let mut b = DumpBuilder::default();
        let exe = b.string(b"/usr/bin/app");
        let cmdline = b.string(b"app\0--serve");
        let main = b.string(b"main");
        let build_id = b.string(&[0xab; 20]);
        b.process = ProcessRecord {
            pid: 1234,
            pointer_size: 8,
            page_size: 4096,
            flags: process_flags::HAS_SCAN | process_flags::WORLD_STOPPED,
            timestamp_ns: 1_700_000_000_000_000_000,
            dump_number: 1,
            machine: 62,
            exe,
            cmdline,
            next_sequence: 10,
            ..Default::default()
        };
        b.threads.push(ThreadRecord {
            tid: 1234,
            flags: thread_flags::ALIVE | thread_flags::MAIN | thread_flags::DUMPING,
            name: main,
            stack_low: 0x7ff0_0000_0000,
            stack_high: 0x7ff0_0010_0000,
            stack_pointer: 0x7ff0_000f_f000,
            live_count: 0,
        });
        b.threads.push(ThreadRecord {
            tid: 1235,
            flags: thread_flags::ALIVE | thread_flags::STOPPED,
            ..Default::default()
        });
        b.modules.push(ModuleRecord {
            path: exe,
            build_id,
            load_bias: 0x5555_5555_0000,
            start: 0x5555_5555_0000,
            end: 0x5555_5560_0000,
            flags: module_flags::MAIN_EXECUTABLE,
            reserved: 0,
        });
        b.segments.push(SegmentRecord {
            module: 0,
            flags: segment_flags::READ | segment_flags::EXECUTE,
            start: 0x5555_5555_0000,
            end: 0x5555_5558_0000,
            file_offset: 0,
        });
        b.segments.push(SegmentRecord {
            module: 0,
            flags: segment_flags::READ | segment_flags::WRITE,
            start: 0x5555_5559_0000,
            end: 0x5555_5560_0000,
            file_offset: 0x40000,
        });
        b.stack(&[]);
        let s1 = b.stack(&[0x5555_5555_1234, 0x5555_5555_2000]);
        let s2 = b.stack(&[0x5555_5555_3000]);
        let alloc = |address, size, sequence, stack, thread| AllocationRecord {
            address,
            size,
            sequence,
            stack,
            thread,
            align: 8,
            flags: 0,
        };
        b.allocations.push(alloc(0x1000, 0x40, 3, s1, 0));
        b.allocations.push(alloc(0x1040, 0x20, 5, s2, 1));
        b.allocations
            .push(alloc(0x2000, 0x100, 7, 0, UNKNOWN_THREAD));
        let data_name = b.string(b".data");
        b.roots.push(RootRecord {
            kind: root_kind::DATA_SEGMENT,
            owner_kind: owner_kind::MODULE,
            owner: 0,
            address: 0x5555_5559_0000,
            size: 0x70000,
            name: data_name,
            reserved: 0,
        });
        b.roots.push(RootRecord {
            kind: root_kind::REGISTERS,
            owner_kind: owner_kind::THREAD,
            owner: 1,
            address: 0,
            size: 16 * 8,
            name: StrRef::EMPTY,
            reserved: 0,
        });
        let edge = |source, target, source_offset, target_offset, flags| EdgeRecord {
            source,
            target,
            source_offset,
            target_offset,
            flags,
            reserved: 0,
        };
        b.edges.push(edge(0, 1, 0, 0, 0));
        b.edges.push(edge(0, 2, 8, 0x10, 0));
        b.edges.push(edge(1, 0, 0x18, 0, 0));
        b.edges.push(edge(0, 0, 0x100, 0, edge_flags::FROM_ROOT));
        b.edges.push(edge(1, 2, 7 * 8, 0, edge_flags::FROM_ROOT));
        b.contents.push(ContentRecord {
            allocation: 1,
            reserved: 0,
            offset: 0,
            len: 0x20,
        });
        b.content_bytes = (0..0x20u8).collect();
        b.process.flags |= process_flags::HAS_CONTENTS;
        // Frames 0 and 2 in one function, frame 1 in another.
        let alloc_name = b.string(b"_ZN3app5alloc17h0123456789abcdefE");
        let main_name = b.string(b"_ZN3app4main17h0123456789abcdefE");
        b.frame_names = [alloc_name, main_name, alloc_name]
            .map(|name| FrameNameRecord { name })
            .to_vec();
        b.fix_totals();
        b
    }

    /// A realistic sound dump: `allocations` allocations spread over several
    /// threads, interned stacks of varied depth, modules with segments and
    /// build ids, roots of every kind, pointer edges from allocations and
    /// roots, and contents for some allocations. Deterministic.
    pub fn realistic(allocations: usize) -> DumpBuilder {
        let mut rng = SplitMix64(0x4844_554d_5021);
        let mut b = DumpBuilder::default();
        let exe = b.string(b"/opt/service/bin/server");
        let cmdline = b.string(b"server\x00--port\x008080\x00--threads\x004");
        b.process = ProcessRecord {
            pid: 4242,
            pointer_size: 8,
            page_size: 4096,
            flags: process_flags::HAS_SCAN
                | process_flags::WORLD_STOPPED
                | process_flags::HAS_CONTENTS,
            timestamp_ns: 1_750_000_000_123_456_789,
            dump_number: 2,
            machine: 62,
            exe,
            cmdline,
            peak_live_bytes: 1 << 24,
            total_allocations: allocations as u64 * 5,
            total_frees: allocations as u64 * 4,
            tracking_bytes: 1 << 20,
            next_sequence: allocations as u64 * 5,
            pause_ns: 1_500_000,
            write_ns: 3_000_000,
            peak_live_count: allocations as u64 * 2,
            ..Default::default()
        };

        let thread_count = 5u32;
        for t in 0..thread_count {
            let name = if t == 0 {
                b.string(b"main")
            } else {
                b.string(format!("worker-{t}").as_bytes())
            };
            let low = 0x7f00_0000_0000 + u64::from(t) * 0x100_0000;
            let mut flags = thread_flags::ALIVE | thread_flags::STOPPED;
            if t == 0 {
                flags = thread_flags::ALIVE | thread_flags::MAIN | thread_flags::DUMPING;
            }
            if t == thread_count - 1 {
                flags = thread_flags::ALIVE | thread_flags::NOT_STOPPED;
            }
            b.threads.push(ThreadRecord {
                tid: 4242 + t,
                flags,
                name,
                stack_low: low,
                stack_high: low + 0x80_0000,
                stack_pointer: low + 0x7f_0000,
                live_count: 0,
            });
        }

        let module_specs: [(&[u8], u64, u32); 3] = [
            (
                b"/opt/service/bin/server",
                0x5555_0000_0000,
                module_flags::MAIN_EXECUTABLE,
            ),
            (b"/usr/lib/x86_64-linux-gnu/libc.so.6", 0x7fff_f000_0000, 0),
            (b"[vdso]", 0x7fff_ffff_0000, module_flags::VDSO),
        ];
        for (m, (path, base, flags)) in module_specs.iter().enumerate() {
            let path = b.string(path);
            let id: Vec<u8> = (0..20).map(|_| rng.next_u64() as u8).collect();
            let build_id = if *flags & module_flags::VDSO != 0 {
                StrRef::EMPTY
            } else {
                b.string(&id)
            };
            b.modules.push(ModuleRecord {
                path,
                build_id,
                load_bias: *base,
                start: *base,
                end: base + 0x40_0000,
                flags: *flags,
                reserved: 0,
            });
            for (s, seg_flags) in [
                segment_flags::READ | segment_flags::EXECUTE,
                segment_flags::READ,
                segment_flags::READ | segment_flags::WRITE,
            ]
            .into_iter()
            .enumerate()
            {
                let start = base + s as u64 * 0x10_0000;
                b.segments.push(SegmentRecord {
                    module: m as u32,
                    flags: seg_flags,
                    start,
                    end: start + 0xf_f000,
                    file_offset: s as u64 * 0x10_0000,
                });
            }
        }

        b.stack(&[]);
        let stack_count = (allocations / 6).max(2);
        for _ in 1..stack_count {
            let depth = 1 + rng.below(24) as usize;
            let pcs: Vec<u64> = (0..depth)
                .map(|_| 0x5555_0000_1000 + rng.below(0x30_0000))
                .collect();
            b.stack(&pcs);
        }

        const SIZES: [u64; 12] = [1, 8, 16, 24, 32, 48, 64, 100, 128, 256, 1000, 4096];
        let mut address = 0x5555_6000_0000u64;
        for i in 0..allocations as u64 {
            let size = SIZES[rng.below(SIZES.len() as u64) as usize];
            let align = if rng.below(8) == 0 { 64 } else { 16 };
            address = address.next_multiple_of(align);
            let thread = match rng.below(8) {
                0 => UNKNOWN_THREAD,
                n => (n % u64::from(thread_count)) as u32,
            };
            b.allocations.push(AllocationRecord {
                address,
                size,
                // Odd multiplier: a bijection on u64, so sequences are unique.
                sequence: i.wrapping_mul(0x9E37_79B9) % (allocations as u64 * 5).max(1),
                stack: rng.below(stack_count as u64) as u32,
                thread,
                align: align as u32,
                flags: if rng.below(4) == 0 {
                    allocation_flags::REALLOCATED
                } else {
                    0
                },
            });
            address += size + 16 * rng.below(4);
        }
        // The modulo above can collide; make sequences unique deterministically.
        {
            let mut order: Vec<usize> = (0..b.allocations.len()).collect();
            order.sort_by_key(|&i| (b.allocations[i].sequence, i));
            for (rank, i) in order.into_iter().enumerate() {
                b.allocations[i].sequence = rank as u64 * 3 + 1;
            }
            b.process.next_sequence = allocations as u64 * 3 + 1;
        }

        let root_names: [&[u8]; 4] = [b".data", b".bss", b"THREAD_LOCAL", b"custom"];
        for t in 0..thread_count {
            b.roots.push(RootRecord {
                kind: root_kind::REGISTERS,
                owner_kind: owner_kind::THREAD,
                owner: t,
                address: 0,
                size: 18 * 8,
                ..Default::default()
            });
            let th = b.threads[t as usize];
            b.roots.push(RootRecord {
                kind: root_kind::THREAD_STACK,
                owner_kind: owner_kind::THREAD,
                owner: t,
                address: th.stack_pointer - 128,
                size: th.stack_high - th.stack_pointer + 128,
                ..Default::default()
            });
            let name = b.string(root_names[2]);
            b.roots.push(RootRecord {
                kind: root_kind::STATIC_TLS,
                owner_kind: owner_kind::THREAD,
                owner: t,
                address: th.stack_high,
                size: 0x200,
                name,
                reserved: 0,
            });
        }
        b.roots.push(RootRecord {
            kind: root_kind::DYNAMIC_TLS,
            owner_kind: owner_kind::THREAD,
            owner: 1,
            address: 0x7fff_e000_0000,
            size: 0x100,
            ..Default::default()
        });
        for m in 0..2u32 {
            for name in &root_names[..2] {
                let name = b.string(name);
                b.roots.push(RootRecord {
                    kind: root_kind::DATA_SEGMENT,
                    owner_kind: owner_kind::MODULE,
                    owner: m,
                    address: b.modules[m as usize].start + 0x20_0000,
                    size: 0x8000,
                    name,
                    reserved: 0,
                });
            }
        }
        let custom = b.string(root_names[3]);
        b.roots.push(RootRecord {
            kind: root_kind::OTHER,
            owner_kind: owner_kind::NONE,
            owner: 0,
            address: 0x1000,
            size: 64,
            name: custom,
            reserved: 0,
        });

        let n = b.allocations.len() as u64;
        if n > 0 {
            for source in 0..n {
                let size = b.allocations[source as usize].size;
                let words = size / 8;
                for _ in 0..rng.below(4).min(words) {
                    let target = rng.below(n);
                    let target_size = b.allocations[target as usize].size;
                    let target_offset = if rng.below(4) == 0 {
                        rng.below(target_size)
                    } else {
                        0
                    };
                    b.edges.push(EdgeRecord {
                        source: source as u32,
                        target: target as u32,
                        source_offset: rng.below(words) * 8,
                        target_offset,
                        flags: 0,
                        reserved: 0,
                    });
                }
            }
            for (r, root) in b.roots.clone().iter().enumerate() {
                for _ in 0..rng.below(6).min(root.size / 8) {
                    b.edges.push(EdgeRecord {
                        source: r as u32,
                        target: rng.below(n) as u32,
                        source_offset: rng.below(root.size / 8) * 8,
                        target_offset: 0,
                        flags: edge_flags::FROM_ROOT,
                        reserved: 0,
                    });
                }
            }
        }
        b.sort_edges();

        for (i, allocation) in b.allocations.iter().enumerate() {
            if i % 5 != 0 {
                continue;
            }
            let len = allocation.size.min(64);
            let offset = b.content_bytes.len() as u64;
            b.content_bytes
                .extend((0..len).map(|k| (k as u8) ^ (i as u8)));
            b.contents.push(ContentRecord {
                allocation: i as u32,
                reserved: 0,
                offset,
                len,
            });
        }
        b.fix_totals();
        b
    }

    /// Writes the dump with [`DumpWriter`]. Every known section is written,
    /// even when empty, in an order other than the numeric one (readers must
    /// not depend on the order).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buffer = [0u8; 4096];
        let major = self.major.unwrap_or(VERSION_MAJOR);
        let mut w =
            DumpWriter::with_version(&mut out, &mut buffer, major).expect("buffer is large enough");
        w.section([self.process]).expect("write Process");
        w.section(self.threads.iter().copied())
            .expect("write Threads");
        w.section(self.modules.iter().copied())
            .expect("write Modules");
        w.section(self.segments.iter().copied())
            .expect("write Segments");
        w.section(self.stacks.iter().copied())
            .expect("write Stacks");
        w.section(self.frames.iter().copied())
            .expect("write Frames");
        w.section(self.allocations.iter().copied())
            .expect("write Allocations");
        w.section(self.roots.iter().copied()).expect("write Roots");
        w.section(self.edges.iter().copied()).expect("write Edges");
        w.section(self.contents.iter().copied())
            .expect("write ContentIndex");
        w.byte_section(SectionKind::ContentBytes, &self.content_bytes)
            .expect("write ContentBytes");
        if !self.frame_names.is_empty() {
            w.section(self.frame_names.iter().copied())
                .expect("write FrameNames");
        }
        w.byte_section(SectionKind::Strings, &self.strings)
            .expect("write Strings");
        w.finish().expect("finish");
        out
    }
}

/// Reads everything a reader can read from `view`: every record of every
/// table, every string every record refers to, every stack's frames (and the
/// stacks allocations name), every content range, every section's bytes, and
/// `verify`. Errors are fine; panics are the bug this exists to find.
/// Returns a number derived from what it read so the work is not optimized
/// away.
pub fn exercise(view: &DumpView<'_>) -> u64 {
    let mut sum = 0u64;
    let mut add = |x: u64| sum = sum.wrapping_mul(31).wrapping_add(x);
    let string = |view: &DumpView<'_>, s: StrRef| -> u64 {
        match view.string(s) {
            Ok(bytes) => {
                let _ = view.string_lossy(s);
                bytes.len() as u64
            }
            Err(e) => e.to_string().len() as u64,
        }
    };
    let (major, minor) = view.version();
    add(u64::from(major) + u64::from(minor));
    for info in view.sections() {
        add(info.entry.length);
    }
    let process = view.process();
    add(string(view, process.exe));
    add(string(view, process.cmdline));
    for thread in view.threads().iter() {
        add(string(view, thread.name));
    }
    for module in view.modules().iter() {
        add(string(view, module.path));
        add(string(view, module.build_id));
    }
    for segment in view.segments().iter() {
        add(segment.start);
    }
    for root in view.roots().iter() {
        add(string(view, root.name));
    }
    let stacks = view.stacks();
    for id in 0..=stacks.len() {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        match view.stack_frames(id) {
            Ok(frames) => {
                for frame in frames.iter() {
                    add(frame.pc);
                }
                add(frames.get(0).map_or(0, |f| f.pc));
                add(frames.file_offset(frames.len()));
            }
            Err(e) => add(e.to_string().len() as u64),
        }
    }
    let _ = view.stack_frames(u32::MAX);
    for allocation in view.allocations().iter() {
        add(allocation.address);
        match view.stack_frames(allocation.stack) {
            Ok(frames) => add(frames.len() as u64),
            Err(e) => add(e.to_string().len() as u64),
        }
    }
    for frame in view.frames().iter().rev() {
        add(frame.pc);
    }
    match view.frame_names() {
        Ok(Some(names)) => {
            for name in names.iter() {
                add(string(view, name.name));
            }
        }
        Ok(None) => {}
        Err(e) => add(e.to_string().len() as u64),
    }
    for edge in view.edges().iter() {
        add(edge.source_offset);
    }
    // Random access and reverse iteration unpack version 2's edges (and
    // look up their escape records) by another path than `iter`.
    let edges = view.edges();
    for index in [
        0,
        edges.len() / 2,
        edges.len().saturating_sub(1),
        edges.len(),
    ] {
        add(edges.get(index).map_or(0, |e| e.target_offset));
    }
    for edge in edges.slice(edges.len() / 3, usize::MAX).iter().rev() {
        add(edge.target_offset ^ u64::from(edge.flags));
    }
    for escape in view.edge_escapes().iter() {
        add(u64::from(escape.edge));
    }
    for content in view.contents().iter() {
        match view.content_bytes(&content) {
            Ok(bytes) => add(bytes.len() as u64),
            Err(e) => add(e.to_string().len() as u64),
        }
    }
    let allocations = view.allocations();
    let _ = allocations.get(allocations.len());
    let _ = allocations.get(usize::MAX);
    add(allocations.file_offset(usize::MAX));
    let half = allocations.slice(allocations.len() / 2, usize::MAX);
    add(half.iter().count() as u64);
    let _ = allocations.slice(usize::MAX, 0);
    add(view.byte_section(SectionKind::Strings).len() as u64);
    add(view.byte_section(SectionKind::ContentBytes).len() as u64);
    for problem in verify(view) {
        add(problem.to_string().len() as u64);
    }
    sum
}

/// Byte positions of `bytes` (a dump that parses) that no check covers:
/// the minor version (any minor is accepted) and the zero padding between
/// sections and before the section table. Flipping one of these leaves the
/// dump's content unchanged; every other byte is covered by the magic,
/// major version, byte-order mark, a section CRC, the table CRC or the
/// trailer's own consistency checks.
pub fn uncovered_bytes(view: &DumpView<'_>) -> Vec<std::ops::Range<usize>> {
    let mut covered: Vec<(u64, u64)> = view
        .sections()
        .iter()
        .map(|s| (s.entry.offset, s.entry.offset + s.entry.length))
        .collect();
    let len = view.bytes().len() as u64;
    let table_offset = len - TRAILER_SIZE as u64 - view.sections().len() as u64 * 40;
    covered.push((0, 10));
    covered.push((12, HEADER_SIZE as u64));
    covered.push((table_offset, len));
    covered.sort();
    let mut gaps = Vec::new();
    let mut at = 0u64;
    for (start, end) in covered {
        if start > at {
            gaps.push(at as usize..start as usize);
        }
        at = at.max(end);
    }
    gaps
}

/// What [`check_corruption`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorruptionReport {
    /// Strict prefixes parsed (all must fail).
    pub truncations: u64,
    /// Single-byte flips tried (CRCs left as they were).
    pub flips: u64,
    /// Flips that parsed anyway, all in bytes no check covers.
    pub flips_in_uncovered_bytes: u64,
    /// Flips after which the CRCs were recomputed, so the reader's structural
    /// checks, `verify` and every accessor see semantically corrupt records.
    pub resealed_flips: u64,
    /// Resealed flips that still parsed (and were then fully exercised).
    pub resealed_parsed: u64,
}

/// How hard [`check_corruption`] tries.
#[derive(Clone, Debug)]
pub struct CorruptionOptions {
    /// Flip every byte when the dump is at most this long; otherwise a dense
    /// stride plus `random_flips` random positions, plus every byte of the
    /// header, section table and trailer.
    pub every_byte_up_to: usize,
    /// Stride positions when not flipping every byte.
    pub stride_positions: usize,
    /// Random positions when not flipping every byte.
    pub random_flips: usize,
    /// XOR masks applied at each position.
    pub masks: Vec<u8>,
    /// Seed for the random positions.
    pub seed: u64,
    /// Also truncate at every offset.
    pub truncate: bool,
    /// Upper bound on the bytes parsed by the flip phase (each flip parses
    /// the whole dump up to twice), so a multi-megabyte real dump takes
    /// seconds, not hours. The header, table, trailer and section edges are
    /// always flipped; the stride and random positions are thinned to fit.
    pub max_parse_bytes: u64,
}

impl Default for CorruptionOptions {
    fn default() -> Self {
        CorruptionOptions {
            every_byte_up_to: 8 * 1024,
            stride_positions: 2048,
            random_flips: 1024,
            masks: vec![0x01, 0x80, 0xff],
            seed: 0x5eed,
            truncate: true,
            max_parse_bytes: 1 << 30,
        }
    }
}

/// Runs [`check_corruption`] with default options. Panics (with the offset
/// and mask) if the reader panics, accepts a strict prefix, or accepts a
/// flipped byte that some check should have caught.
pub fn assert_survives_corruption(bytes: &[u8]) -> CorruptionReport {
    check_corruption(bytes, &CorruptionOptions::default())
}

/// The corruption test over any sound dump `bytes`:
///
/// 1. every strict prefix `bytes[..n]` fails to parse;
/// 2. each chosen byte, flipped with each mask, either fails to parse or lies
///    in [`uncovered_bytes`] (and then the dump reads exactly as before);
///    either way the error message, `verify` and [`exercise`] run without
///    panicking;
/// 3. the same flips, with the covering section CRC and the table CRC
///    recomputed ("resealed"), so the flipped record reaches the reader's
///    structural checks, `verify` and every accessor: no panic.
pub fn check_corruption(bytes: &[u8], options: &CorruptionOptions) -> CorruptionReport {
    let view = DumpView::parse(bytes).expect("the dump under test must parse");
    exercise(&view);
    let uncovered = uncovered_bytes(&view);
    let original_sections = view.sections().to_vec();
    let mut report = CorruptionReport::default();

    if options.truncate {
        for n in 0..bytes.len() {
            let result = DumpView::parse(&bytes[..n]);
            match result {
                Err(e) => {
                    let _ = e.to_string();
                }
                Ok(_) => panic!("a dump cut to {n} of {} bytes parsed", bytes.len()),
            }
            report.truncations += 1;
        }
    }

    let positions = flip_positions(bytes, &view, options);
    let mut copy = bytes.to_vec();
    for &at in &positions {
        for &mask in &options.masks {
            if mask == 0 {
                continue;
            }
            copy[at] ^= mask;
            report.flips += 1;
            match DumpView::parse(&copy) {
                Err(e) => {
                    let _ = e.to_string();
                }
                Ok(flipped) => {
                    assert!(
                        uncovered.iter().any(|r| r.contains(&at)),
                        "byte {at} xor {mask:#04x} went undetected"
                    );
                    assert_eq!(flipped.sections(), &original_sections[..]);
                    exercise(&flipped);
                    report.flips_in_uncovered_bytes += 1;
                }
            }
            copy[at] ^= mask;

            if let Some(resealed) = reseal_flip(bytes, &view, at, mask) {
                report.resealed_flips += 1;
                if let Ok(flipped) = DumpView::parse(&resealed) {
                    exercise(&flipped);
                    report.resealed_parsed += 1;
                }
            }
        }
    }
    report
}

fn flip_positions(bytes: &[u8], view: &DumpView<'_>, options: &CorruptionOptions) -> Vec<usize> {
    let len = bytes.len();
    if len <= options.every_byte_up_to {
        return (0..len).collect();
    }
    let mut positions: Vec<usize> = Vec::new();
    // The structure: header, section table and trailer, every byte.
    positions.extend(0..HEADER_SIZE);
    let table_offset = len - TRAILER_SIZE - view.sections().len() * SectionEntry::SIZE;
    positions.extend(table_offset..len);
    // The first and last record of every section.
    for info in view.sections() {
        let start = info.entry.offset as usize;
        let end = start + info.entry.length as usize;
        let record = (info.entry.record_size as usize).max(8);
        positions.extend(start..end.min(start + record));
        positions.extend(end.saturating_sub(record).max(start)..end);
    }
    // Thin the sampled positions to the parse budget.
    let per_position = 2 * len as u64 * options.masks.len().max(1) as u64;
    let affordable = (options.max_parse_bytes / per_position.max(1)) as usize;
    let sampled = affordable
        .saturating_sub(positions.len())
        .max(64)
        .min(options.stride_positions + options.random_flips);
    let share = |n: usize| n * sampled / (options.stride_positions + options.random_flips).max(1);
    let stride = (len / share(options.stride_positions).max(1)).max(1);
    positions.extend((0..len).step_by(stride));
    let mut rng = SplitMix64(options.seed);
    positions.extend((0..share(options.random_flips)).map(|_| rng.below(len as u64) as usize));
    positions.sort_unstable();
    positions.dedup();
    positions
}

/// `bytes` with `bytes[at] ^= mask` and the CRCs that cover `at` recomputed,
/// or `None` when `at` is in the header or trailer (nothing to reseal).
pub fn reseal_flip(bytes: &[u8], view: &DumpView<'_>, at: usize, mask: u8) -> Option<Vec<u8>> {
    use crate::crc32::crc32;
    let len = bytes.len();
    let count = view.sections().len();
    let table_offset = len - TRAILER_SIZE - count * SectionEntry::SIZE;
    let trailer_at = len - TRAILER_SIZE;
    let mut out = bytes.to_vec();
    out[at] ^= mask;
    if (table_offset..trailer_at).contains(&at) {
        // A table entry changed: only the table CRC needs fixing.
    } else if let Some(index) = view.sections().iter().position(|s| {
        (s.entry.offset as usize..(s.entry.offset + s.entry.length) as usize).contains(&at)
    }) {
        let s = view.sections()[index].entry;
        let body = &out[s.offset as usize..(s.offset + s.length) as usize];
        let crc = crc32(body);
        let entry_at = table_offset + index * SectionEntry::SIZE;
        out[entry_at + 32..entry_at + 36].copy_from_slice(&crc.to_le_bytes());
    } else {
        return None;
    }
    let table_crc = crc32(&out[table_offset..trailer_at]);
    out[trailer_at + 12..trailer_at + 16].copy_from_slice(&table_crc.to_le_bytes());
    Some(out)
}

/// Parses `bytes` and, if it parses, [`exercise`]s it: the body of the fuzz
/// target, here so that tests can replay a fuzz input.
pub fn parse_and_exercise(bytes: &[u8]) -> Result<u64, FormatError> {
    let view = DumpView::parse(bytes)?;
    Ok(exercise(&view))
}

/// `bytes` with every checksum recomputed where the trailer and table make
/// that possible: each section CRC for the entries whose range lies inside
/// the file, then the table CRC. Arbitrary input in, so the fuzz target can
/// reach past the checksums into the structural and semantic checks. Never
/// panics; returns the input unchanged when there is no plausible table.
pub fn reseal(bytes: &[u8]) -> Vec<u8> {
    use crate::crc32::crc32;
    let mut out = bytes.to_vec();
    let len = out.len();
    let Some(trailer_at) = len.checked_sub(TRAILER_SIZE) else {
        return out;
    };
    let read_u64 = |b: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    let Some(table_offset) = read_u64(&out, trailer_at) else {
        return out;
    };
    let Some(count) = out
        .get(trailer_at + 8..trailer_at + 12)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
    else {
        return out;
    };
    let Ok(table_offset) = usize::try_from(table_offset) else {
        return out;
    };
    let table_end = (count as usize)
        .checked_mul(SectionEntry::SIZE)
        .and_then(|n| n.checked_add(table_offset));
    if table_end != Some(trailer_at) {
        return out;
    }
    for i in 0..count as usize {
        let entry_at = table_offset + i * SectionEntry::SIZE;
        let (Some(offset), Some(length)) =
            (read_u64(&out, entry_at + 8), read_u64(&out, entry_at + 16))
        else {
            return out;
        };
        let end = offset.checked_add(length);
        let body = usize::try_from(offset)
            .ok()
            .zip(end.and_then(|e| usize::try_from(e).ok()))
            .and_then(|(start, end)| out.get(start..end));
        if let Some(body) = body {
            let crc = crc32(body).to_le_bytes();
            if let Some(slot) = out.get_mut(entry_at + 32..entry_at + 36) {
                slot.copy_from_slice(&crc);
            }
        }
    }
    let table_crc = crc32(out.get(table_offset..trailer_at).unwrap_or(&[])).to_le_bytes();
    if let Some(slot) = out.get_mut(trailer_at + 12..trailer_at + 16) {
        slot.copy_from_slice(&table_crc);
    }
    out
}
