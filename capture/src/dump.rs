//! Writing a dump: gather what needs no lock (modules, threads, command
//! line), lock the live table and the stack interner just long enough to copy
//! the live set, then sort and stream every section through
//! `heapdump_formats::write::DumpWriter` with plain `write(2)` calls.
//!
//! Nothing here allocates on the tracked heap: all scratch memory is
//! anonymous mappings returned when the dump ends.

use core::sync::atomic::{AtomicU32, Ordering};

use heapdump_formats::records::{
    AllocationRecord, FrameRecord, ProcessRecord, SectionKind, StackRecord, ThreadRecord,
    UNKNOWN_THREAD, process_flags, thread_flags,
};
use heapdump_formats::write::{DumpWriter, Sink, StringTable, WriteError};

use crate::live::Slot;
use crate::modules::{self, MAX_MODULES, MAX_SEGMENTS, Modules};
use crate::sys::{self, Scratch, Zeroable};
use crate::{DUMP_LOCK, DumpError, DumpStats, LIVE, SEQUENCE, STACKS, threads};

// SAFETY: plain integer records (and `StrRef`s of integers); zero is valid.
unsafe impl Zeroable for ThreadRecord {}
// SAFETY: as above.
unsafe impl Zeroable for heapdump_formats::records::ModuleRecord {}
// SAFETY: as above.
unsafe impl Zeroable for heapdump_formats::records::SegmentRecord {}

const STRINGS_BYTES: usize = 4 << 20;
const WRITE_BUFFER_BYTES: usize = 1 << 20;
const CMDLINE_BYTES: usize = 128 << 10;
const MAX_ALIVE_THREADS: usize = 1 << 16;
const THREAD_NAME_BYTES: usize = 64;

static DUMPS_WRITTEN: AtomicU32 = AtomicU32::new(0);

/// A file descriptor as a [`Sink`]: retries short writes and `EINTR`.
struct FdSink(i32);

impl Sink for FdSink {
    type Error = i32;
    fn write_all(&mut self, mut bytes: &[u8]) -> Result<(), i32> {
        while !bytes.is_empty() {
            // SAFETY: `bytes` is a valid readable buffer of its length.
            let n = unsafe { libc::write(self.0, bytes.as_ptr().cast(), bytes.len()) };
            if n < 0 {
                let errno = sys::errno();
                if errno == libc::EINTR {
                    continue;
                }
                return Err(errno);
            }
            if n == 0 {
                return Err(libc::EIO);
            }
            bytes = bytes.get(n as usize..).unwrap_or(&[]);
        }
        Ok(())
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
    modules: &'s [heapdump_formats::records::ModuleRecord],
    segments: &'s [heapdump_formats::records::SegmentRecord],
    alive: &'s [u32],
    exe: heapdump_formats::records::StrRef,
    cmdline: heapdump_formats::records::StrRef,
    incomplete: bool,
}

fn gather_unlocked(scratch: &mut Scratch) -> Result<Unlocked<'static>, DumpError> {
    let strings = scratch
        .take::<u8>(STRINGS_BYTES)
        .ok_or(DumpError::OutOfMemory)?;
    let mut strings = StringTable::new(strings);
    let module_slots = scratch.take(MAX_MODULES).ok_or(DumpError::OutOfMemory)?;
    let segment_slots = scratch.take(MAX_SEGMENTS).ok_or(DumpError::OutOfMemory)?;
    let mut found = Modules {
        modules: module_slots,
        module_count: 0,
        segments: segment_slots,
        segment_count: 0,
        strings: &mut strings,
        overflowed: false,
    };
    modules::gather(&mut found);
    let (module_count, segment_count, incomplete) =
        (found.module_count, found.segment_count, found.overflowed);

    let text = scratch
        .take::<u8>(CMDLINE_BYTES)
        .ok_or(DumpError::OutOfMemory)?;
    let n = modules::read_link(b"/proc/self/exe\0", text);
    let exe = strings.add_or_empty(&text[..n]);
    let mut n = sys::read_file(b"/proc/self/cmdline\0", text);
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
        exe,
        cmdline,
        incomplete,
    })
}

/// The live set and counters copied with every lock held.
struct Snapshot {
    slots: &'static mut [Slot],
    stacks: crate::stacks::StacksSnapshot,
    total_allocations: u64,
    total_frees: u64,
    live_tracking_bytes: u64,
    pause_ns: u64,
}

fn snapshot(memory: &mut Option<Scratch>) -> Result<Snapshot, DumpError> {
    let paused = sys::clock_ns(libc::CLOCK_MONOTONIC);
    let shards: [_; crate::live::SHARDS] = core::array::from_fn(|i| LIVE.shards[i].table.lock());
    let count: u64 = shards.iter().map(|s| s.count).sum();
    // Mapping memory with the locks held costs a system call, not a pause
    // proportional to the heap: the pages are touched by the copy anyway.
    let scratch = memory.insert(
        Scratch::new((count as usize).max(1) * size_of::<Slot>()).ok_or(DumpError::OutOfMemory)?,
    );
    let slots = scratch
        .take::<Slot>(count as usize)
        .ok_or(DumpError::OutOfMemory)?;
    let mut filled = 0;
    let (mut total_allocations, mut total_frees, mut mapped) = (0, 0, 0);
    for shard in &shards {
        for slot in shard.live() {
            if let Some(out) = slots.get_mut(filled) {
                *out = *slot;
                filled += 1;
            }
        }
        total_allocations += shard.total_allocations;
        total_frees += shard.total_frees;
        mapped += shard.mapped_bytes() as u64;
    }
    let stacks = {
        let _interning = STACKS.lock_all();
        STACKS.snapshot()
    };
    drop(shards);
    Ok(Snapshot {
        slots: &mut slots[..filled],
        stacks,
        total_allocations,
        total_frees,
        live_tracking_bytes: mapped,
        pause_ns: sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(paused),
    })
}

/// Writes a dump to `fd`. Serialized with other dumps by `DUMP_LOCK`.
pub fn write(fd: i32) -> Result<DumpStats, DumpError> {
    let started = sys::clock_ns(libc::CLOCK_MONOTONIC);
    let _one_at_a_time = DUMP_LOCK.lock();
    let dump_number = DUMPS_WRITTEN.fetch_add(1, Ordering::Relaxed) + 1;
    let timestamp_ns = sys::clock_ns(libc::CLOCK_REALTIME);

    let mut scratch = Scratch::new(
        STRINGS_BYTES
            + WRITE_BUFFER_BYTES
            + CMDLINE_BYTES
            + MAX_MODULES * 48
            + MAX_SEGMENTS * 32
            + MAX_ALIVE_THREADS * 4
            + 4 * sys::PAGE,
    )
    .ok_or(DumpError::OutOfMemory)?;
    let mut unlocked = gather_unlocked(&mut scratch)?;
    let write_buffer = scratch
        .take::<u8>(WRITE_BUFFER_BYTES)
        .ok_or(DumpError::OutOfMemory)?;

    let mut snapshot_memory = None;
    let snap = snapshot(&mut snapshot_memory)?;
    let next_sequence = SEQUENCE.load(Ordering::Relaxed);
    let dropped_stacks = STACKS.dropped();
    let writing = sys::clock_ns(libc::CLOCK_MONOTONIC);

    snap.slots.sort_unstable_by_key(|slot| slot.address());

    // Threads: every registered one (its index is what allocations carry),
    // then the alive ones that never allocated. Read after the snapshot so
    // every index an allocation names is covered.
    let registered = threads::registered_count() as usize;
    let mut thread_memory =
        Scratch::new((registered + unlocked.alive.len()) * (size_of::<ThreadRecord>() + 8) + 64)
            .ok_or(DumpError::OutOfMemory)?;
    let records = thread_memory
        .take::<ThreadRecord>(registered + unlocked.alive.len())
        .ok_or(DumpError::OutOfMemory)?;
    let claimed = thread_memory
        .take::<u8>(unlocked.alive.len())
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
        if let Ok(at) = unlocked.alive.binary_search(&record.tid)
            && claimed[at] == 0
        {
            claimed[at] = 1;
            record.flags |= thread_flags::ALIVE;
        }
    }
    for (&tid, _) in unlocked
        .alive
        .iter()
        .zip(claimed.iter())
        .filter(|(_, c)| **c == 0)
    {
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
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let me = sys::gettid();
    let mut name = [0u8; THREAD_NAME_BYTES];
    for record in records.iter_mut() {
        if record.tid == pid {
            record.flags |= thread_flags::MAIN;
        }
        if record.tid == me && record.flags & thread_flags::ALIVE != 0 {
            record.flags |= thread_flags::DUMPING;
        }
        if record.flags & thread_flags::ALIVE != 0 {
            let n = threads::thread_name(record.tid, &mut name);
            record.name = unlocked.strings.add_or_empty(&name[..n]);
        }
    }
    let mut live_bytes = 0u64;
    for slot in snap.slots.iter() {
        live_bytes += slot.size();
        let thread = slot.unpack().thread;
        if let Some(record) = records.get_mut(thread as usize) {
            record.live_count += 1;
        }
    }

    let (peak_live_bytes, peak_live_count, dropped_allocations) =
        LIVE.peaks_and_dropped(snap.slots.len() as u64, live_bytes);

    let mut writer = DumpWriter::new(FdSink(fd), write_buffer)?;
    writer.section(records.iter().copied())?;
    writer.section(unlocked.modules.iter().copied())?;
    writer.section(unlocked.segments.iter().copied())?;
    writer.begin_section(SectionKind::Allocations)?;
    for slot in snap.slots.iter() {
        let entry = slot.unpack();
        writer.write_record(&AllocationRecord {
            address: entry.address,
            size: entry.size,
            sequence: entry.sequence,
            stack: entry.stack,
            thread: if (entry.thread as usize) < thread_count {
                entry.thread
            } else {
                UNKNOWN_THREAD
            },
            align: entry.align as u32,
            flags: u32::from(entry.flags),
        })?;
    }
    writer.end_section()?;
    writer.begin_section(SectionKind::Stacks)?;
    for (id, stack) in snap.stacks.stacks.iter().enumerate() {
        // Id 0 is the empty stack by definition; its slot is never written.
        let record = if id == 0 {
            StackRecord::default()
        } else {
            StackRecord {
                first_frame: stack.first_frame,
                frame_count: stack.frame_count,
                flags: stack.flags,
            }
        };
        writer.write_record(&record)?;
    }
    if snap.stacks.stacks.is_empty() {
        writer.write_record(&StackRecord::default())?;
    }
    writer.end_section()?;
    writer.section(snap.stacks.frames.iter().map(|&pc| FrameRecord { pc }))?;
    writer.byte_section(SectionKind::Strings, unlocked.strings.as_bytes())?;

    let mut flags = 0;
    if dropped_allocations != 0 || dropped_stacks != 0 || unlocked.incomplete {
        flags |= process_flags::DROPPED_RECORDS;
    }
    let tracking_bytes =
        snap.live_tracking_bytes + STACKS.tracking_bytes() + threads::tracking_bytes();
    let write_ns = sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(writing);
    writer.section([ProcessRecord {
        pid,
        pointer_size: size_of::<usize>() as u32,
        // SAFETY: sysconf has no preconditions.
        page_size: unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32,
        flags,
        timestamp_ns,
        dump_number,
        machine: ELF_MACHINE,
        exe: unlocked.exe,
        cmdline: unlocked.cmdline,
        live_bytes,
        live_count: snap.slots.len() as u64,
        peak_live_bytes,
        total_allocations: snap.total_allocations,
        total_frees: snap.total_frees,
        dropped_allocations,
        dropped_stacks,
        tracking_bytes,
        next_sequence,
        pause_ns: snap.pause_ns,
        write_ns,
        peak_live_count,
        reserved: 0,
    }])?;
    let (_, bytes_written) = writer.finish()?;
    Ok(DumpStats {
        allocations: snap.slots.len() as u64,
        live_bytes,
        stacks: snap.stacks.stacks.len().saturating_sub(1) as u64,
        threads: thread_count as u64,
        modules: unlocked.modules.len() as u64,
        bytes_written,
        pause_ns: snap.pause_ns,
        total_ns: sys::clock_ns(libc::CLOCK_MONOTONIC).saturating_sub(started),
        ..DumpStats::default()
    })
}

#[cfg(target_arch = "x86_64")]
const ELF_MACHINE: u32 = 62;
#[cfg(target_arch = "aarch64")]
const ELF_MACHINE: u32 = 183;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ELF_MACHINE: u32 = 0;

/// Opens `path` for a new dump: created 0600, never following a symlink,
/// never replacing an existing file.
pub fn create(path: &[u8]) -> Result<i32, DumpError> {
    let mut c_path = sys::PathBuf::<4096>::new();
    if path.contains(&0) {
        return Err(DumpError::InvalidPath);
    }
    if !c_path.push(path) {
        return Err(DumpError::InvalidPath);
    }
    let c_path = c_path.as_c_bytes();
    // SAFETY: `c_path` is NUL-terminated; the flags create a new file only.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        Err(DumpError::Open {
            errno: sys::errno(),
        })
    } else {
        Ok(fd)
    }
}
