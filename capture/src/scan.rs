//! The conservative scan: every aligned word of every root range and every
//! live allocation whose value lies inside a live allocation is an edge.
//!
//! Lookup is a two-step filter. Most words are not heap addresses at all
//! (small integers, lengths, code addresses), so a value is first checked
//! against the heap's overall bounds and then against a hash set of the
//! 64 KiB chunks that live allocations touch; only survivors do a binary
//! search, and only over the allocations of their 64 KiB chunk. Each chunk entry
//! remembers the range of allocation indices overlapping it.

use core::ffi::CStr;

use heapdump_formats::records::{EdgeRecord, edge_flags};

use crate::sys::{self, Scratch, Zeroable};

const CHUNK_SHIFT: u32 = 16;

#[derive(Clone, Copy, Default)]
struct ChunkEntry {
    /// Chunk number + 1; 0 marks an empty entry.
    key: u64,
    first: u32,
    last: u32,
}

// SAFETY: integers only.
unsafe impl Zeroable for ChunkEntry {}

/// Finds the live allocation containing an address.
pub struct PointerIndex<'a> {
    starts: &'a [u64],
    ends: &'a [u64],
    chunks: &'a [ChunkEntry],
    low: u64,
    high: u64,
}

impl<'a> PointerIndex<'a> {
    /// Scratch bytes [`new`](Self::new) needs for these allocations.
    pub fn scratch_bytes(starts: &[u64], ends: &[u64]) -> usize {
        Self::capacity(starts, ends) * size_of::<ChunkEntry>() + sys::PAGE
    }

    fn capacity(starts: &[u64], ends: &[u64]) -> usize {
        let chunk_count: u64 = starts
            .iter()
            .zip(ends)
            .map(|(&start, &end)| ((end - 1) >> CHUNK_SHIFT) - (start >> CHUNK_SHIFT) + 1)
            .sum();
        (chunk_count.max(8) * 2).next_power_of_two() as usize
    }

    /// Builds the index over allocations sorted by address (`starts` and
    /// `ends` parallel, non-overlapping). `None` if scratch memory runs out.
    pub fn new(
        starts: &'a [u64],
        ends: &'a [u64],
        scratch: &'a Scratch,
    ) -> Option<PointerIndex<'a>> {
        let capacity = Self::capacity(starts, ends);
        let chunks = scratch.take::<ChunkEntry>(capacity)?;
        let mask = capacity - 1;
        for (index, (&start, &end)) in starts.iter().zip(ends).enumerate() {
            for chunk in (start >> CHUNK_SHIFT)..=((end - 1) >> CHUNK_SHIFT) {
                let mut at = chunk_slot(chunk) & mask;
                loop {
                    let entry = &mut chunks[at];
                    if entry.key == 0 {
                        *entry = ChunkEntry {
                            key: chunk + 1,
                            first: index as u32,
                            last: index as u32,
                        };
                        break;
                    }
                    if entry.key == chunk + 1 {
                        // Indices arrive in increasing order.
                        entry.last = index as u32;
                        break;
                    }
                    at = (at + 1) & mask;
                }
            }
        }
        Some(PointerIndex {
            starts,
            ends,
            chunks,
            low: starts.first().copied().unwrap_or(u64::MAX),
            high: ends.last().copied().unwrap_or(0),
        })
    }

    /// The allocation containing `value`, and the offset into it.
    #[inline]
    pub fn find(&self, value: u64) -> Option<(u32, u64)> {
        if value < self.low || value >= self.high {
            return None;
        }
        let chunk = value >> CHUNK_SHIFT;
        let mask = self.chunks.len() - 1;
        let mut at = chunk_slot(chunk) & mask;
        let entry = loop {
            let entry = self.chunks[at];
            if entry.key == chunk + 1 {
                break entry;
            }
            if entry.key == 0 {
                return None;
            }
            at = (at + 1) & mask;
        };
        let (first, last) = (entry.first as usize, entry.last as usize);
        let starts = &self.starts[first..=last];
        // The last allocation starting at or below `value`.
        let below = starts.partition_point(|&start| start <= value);
        if below == 0 {
            return None;
        }
        let index = first + below - 1;
        let start = self.starts[index];
        (value < self.ends[index]).then_some((index as u32, value - start))
    }
}

#[inline]
fn chunk_slot(chunk: u64) -> usize {
    (chunk.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

/// Edges gathered during the scan, in mappings of a million records each,
/// so the count need not be known in advance and nothing is copied when it
/// grows.
pub struct EdgeBuffer {
    chunks: [*mut EdgeRecord; MAX_EDGE_CHUNKS],
    chunk_count: usize,
    len: u64,
    /// The last chunk could not be mapped: edges after it were lost.
    pub overflowed: bool,
}

const EDGES_PER_CHUNK: usize = 1 << 20;
const MAX_EDGE_CHUNKS: usize = 4096;

// SAFETY: records of integers; zero is valid.
unsafe impl Zeroable for EdgeRecord {}

impl EdgeBuffer {
    pub fn new() -> EdgeBuffer {
        EdgeBuffer {
            chunks: [core::ptr::null_mut(); MAX_EDGE_CHUNKS],
            chunk_count: 0,
            len: 0,
            overflowed: false,
        }
    }

    #[inline]
    pub fn push(&mut self, edge: EdgeRecord) {
        let within = (self.len % EDGES_PER_CHUNK as u64) as usize;
        if within == 0 && !self.grow() {
            self.overflowed = true;
            return;
        }
        // SAFETY: the last chunk is mapped for EDGES_PER_CHUNK records and
        // `within` is below that.
        unsafe { self.chunks[self.chunk_count - 1].add(within).write(edge) };
        self.len += 1;
    }

    #[cold]
    fn grow(&mut self) -> bool {
        if self.chunk_count == MAX_EDGE_CHUNKS {
            return false;
        }
        let Some(memory) = sys::map_zeroed(EDGES_PER_CHUNK * size_of::<EdgeRecord>()) else {
            return false;
        };
        self.chunks[self.chunk_count] = memory.cast();
        self.chunk_count += 1;
        true
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// The edges, in the order they were pushed. `Clone`: the writer's
    /// `section` walks them twice (the edges, then their escape records).
    pub fn iter(&self) -> impl Iterator<Item = EdgeRecord> + Clone + '_ {
        (0..self.chunk_count).flat_map(move |chunk| {
            let start = chunk as u64 * EDGES_PER_CHUNK as u64;
            let count = (self.len.saturating_sub(start)).min(EDGES_PER_CHUNK as u64) as usize;
            // SAFETY: chunk `chunk` is mapped and its first `count` records
            // were written by `push`.
            unsafe { core::slice::from_raw_parts(self.chunks[chunk], count) }
                .iter()
                .copied()
        })
    }
}

impl Drop for EdgeBuffer {
    fn drop(&mut self) {
        for &chunk in &self.chunks[..self.chunk_count] {
            // SAFETY: each chunk was mapped by `grow` with this size and the
            // buffer's slices do not outlive it.
            unsafe { sys::unmap(chunk.cast(), EDGES_PER_CHUNK * size_of::<EdgeRecord>()) };
        }
    }
}

/// Scans `words` (the contents of a source) and pushes an edge for every
/// word that points into a live allocation. `base_offset` is the offset of
/// `words[0]` within the source.
///
/// # Safety
/// `words .. words + count` must be readable for the whole call.
#[inline]
pub unsafe fn scan_words(
    index: &PointerIndex<'_>,
    words: *const u64,
    count: usize,
    base_offset: u64,
    source: u32,
    flags: u32,
    edges: &mut EdgeBuffer,
) {
    let mut push = |i: usize, value: u64| {
        if let Some((target, target_offset)) = index.find(value) {
            edges.push(EdgeRecord {
                source,
                target,
                source_offset: base_offset + (i * 8) as u64,
                target_offset,
                flags,
                reserved: 0,
            });
        }
    };
    // Words are read eight at a time and range-checked without branches:
    // nearly every word is rejected by the range check, and a branch per
    // word costs more than the check.
    const LANES: usize = 8;
    let (low, span) = (index.low, index.high.wrapping_sub(index.low));
    let mut i = 0;
    while i + LANES <= count {
        let mut block = [0u64; LANES];
        for (lane, value) in block.iter_mut().enumerate() {
            // Volatile: threads that did not stop may write these words
            // while we read them; each read must really happen, once.
            // SAFETY: the caller guarantees the range is readable.
            *value = unsafe { words.add(i + lane).read_volatile() };
        }
        let mut hits = 0u32;
        for (lane, &value) in block.iter().enumerate() {
            hits |= u32::from(value.wrapping_sub(low) < span) << lane;
        }
        while hits != 0 {
            let lane = hits.trailing_zeros() as usize;
            hits &= hits - 1;
            push(i + lane, block[lane]);
        }
        i += LANES;
    }
    for i in i..count {
        // SAFETY: as above.
        let value = unsafe { words.add(i).read_volatile() };
        push(i, value);
    }
}

/// The size and alignment of glibc's heaps for arenas other than the
/// main one (`HEAP_MAX_SIZE` on 64-bit targets).
const ARENA_HEAP: u64 = 64 << 20;

/// One line of `/proc/self/maps`.
struct MapsEntry<'t> {
    start: u64,
    end: u64,
    perms: &'t [u8],
    /// No file: anonymous memory (`[anon:NAME]` included).
    anonymous: bool,
}

fn parse_maps_entry(line: &[u8]) -> Option<MapsEntry<'_>> {
    let ((start, end), perms) = parse_maps_line(line)?;
    // Fields: range, perms, offset, device, inode, then the path.
    let path = line
        .split(|&b| b == b' ')
        .filter(|field| !field.is_empty())
        .nth(5);
    Some(MapsEntry {
        start,
        end,
        perms,
        anonymous: path.is_none_or(|path| path.starts_with(b"[anon:")),
    })
}

/// The largest inaccessible mapping taken for a thread stack's guard.
const GUARD_MAX: u64 = 64 << 10;

/// `FROM_ROOT`, for callers that scan roots.
pub const FROM_ROOT: u32 = edge_flags::FROM_ROOT;

/// Readable mappings of the process, from `/proc/self/maps`.
pub struct Mappings<'a> {
    ranges: &'a [(u64, u64)],
    /// The file's text, as read.
    text: &'a [u8],
}

impl<'a> Mappings<'a> {
    /// Parses `/proc/self/maps` into `out`, keeping readable ranges only.
    pub fn read(text: &'a mut [u8], out: &'a mut [(u64, u64)]) -> Mappings<'a> {
        Self::read_file(c"/proc/self/maps", text, out)
    }

    /// [`read`](Self::read) of another process's map (`path`).
    pub fn read_file(path: &CStr, text: &'a mut [u8], out: &'a mut [(u64, u64)]) -> Mappings<'a> {
        let len = sys::read_file(path, text);
        let mut count = 0;
        for line in text[..len].split(|&b| b == b'\n') {
            let Some((range, perms)) = parse_maps_line(line) else {
                continue;
            };
            if perms.first() != Some(&b'r') || count == out.len() {
                continue;
            }
            // `[vvar]` pages may fault on read; never scan them.
            if line.ends_with(b"[vvar]") || line.ends_with(b"[vvar_vclock]") {
                continue;
            }
            out[count] = range;
            count += 1;
        }
        Mappings {
            ranges: &out[..count],
            text: &text[..len],
        }
    }

    /// Whether the process runs under valgrind (its preloaded libraries
    /// are mapped): the tool's own memory then looks like the program's
    /// anonymous memory, and holds every block's address.
    pub fn under_valgrind(&self) -> bool {
        self.text
            .split(|&b| b == b'\n')
            .any(|line| line.windows(11).any(|window| window == b"/vgpreload_"))
    }

    /// The anonymous read-write mappings (named ones, `[anon:NAME]`,
    /// included), private or shared, but not the main heap (`[heap]`, whose
    /// blocks are scanned one by one), the other special ones (`[stack]`,
    /// `[vvar]`, ...), one right above a small inaccessible mapping (a
    /// thread stack above its guard page, which, when the thread has ended,
    /// the C library keeps for reuse, full of stale words), or the used part
    /// of one of glibc's other arenas (a 64 MiB-aligned reservation whose
    /// rest is inaccessible), whose free chunks hold stale words. Where a
    /// program keeps its own arenas and runtimes their heaps (Python's
    /// objects, V8's).
    pub fn anonymous_writable(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut lines = self
            .text
            .split(|&b| b == b'\n')
            .filter_map(parse_maps_entry)
            .peekable();
        // The end of the last inaccessible anonymous mapping of at most
        // `GUARD_MAX` bytes.
        let mut guard_end = 0;
        core::iter::from_fn(move || {
            loop {
                let entry = lines.next()?;
                let above_guard = guard_end == entry.start;
                let inaccessible = entry.anonymous && entry.perms.starts_with(b"---");
                guard_end = if inaccessible && entry.end - entry.start <= GUARD_MAX {
                    entry.end
                } else {
                    0
                };
                if !entry.perms.starts_with(b"rw") || !entry.anonymous || above_guard {
                    continue;
                }
                // glibc's arena heap: its used part starts a 64 MiB
                // aligned reservation (or a mapping merged with it) and
                // the rest follows, inaccessible.
                let heap = (entry.end - 1) / ARENA_HEAP * ARENA_HEAP;
                let arena_tail = entry.start <= heap
                    && lines.peek().is_some_and(|next| {
                        next.anonymous
                            && next.perms.starts_with(b"---")
                            && next.start == entry.end
                            && next.end == heap + ARENA_HEAP
                    });
                let end = if arena_tail { heap } else { entry.end };
                if entry.start < end {
                    return Some((entry.start, end));
                }
            }
        })
    }

    /// The readable parts of `[start, end)`, aligned to 8 bytes.
    pub fn readable(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges[first..]
            .iter()
            .take_while(move |&&(s, _)| s < end)
            .filter_map(move |&(s, e)| {
                let from = start.max(s).next_multiple_of(8);
                let to = end.min(e) & !7;
                (from < to).then_some((from, to))
            })
    }

    /// The mapping containing `address`.
    pub fn containing(&self, address: u64) -> Option<(u64, u64)> {
        let at = self.ranges.partition_point(|&(_, e)| e <= address);
        self.ranges
            .get(at)
            .copied()
            .filter(|&(s, e)| s <= address && address < e)
    }
}

fn parse_maps_line(line: &[u8]) -> Option<((u64, u64), &[u8])> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let perms = fields.next()?;
    let dash = range.iter().position(|&b| b == b'-')?;
    let start = parse_hex(&range[..dash])?;
    let end = parse_hex(&range[dash + 1..])?;
    Some(((start, end), perms))
}

fn parse_hex(text: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for &b in text {
        let digit = (b as char).to_digit(16)?;
        value = value.checked_mul(16)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_finds_starts_interiors_and_nothing_between() {
        let starts = [0x1000, 0x1040, 0x20_0000, 0x7f00_0000_0000];
        let ends = [0x1030, 0x1100, 0x30_0010, 0x7f00_0000_0010];
        let scratch = Scratch::new(1 << 20).unwrap();
        let index = PointerIndex::new(&starts, &ends, &scratch).unwrap();
        assert_eq!(index.find(0x1000), Some((0, 0)));
        assert_eq!(index.find(0x102f), Some((0, 0x2f)));
        assert_eq!(index.find(0x1030), None);
        assert_eq!(index.find(0x1040), Some((1, 0)));
        assert_eq!(index.find(0x25_0000), Some((2, 0x5_0000)));
        assert_eq!(index.find(0x30_0010), None);
        assert_eq!(index.find(0x7f00_0000_0008), Some((3, 8)));
        assert_eq!(index.find(0), None);
        assert_eq!(index.find(u64::MAX), None);
        assert_eq!(index.find(0x50_0000), None);
    }

    #[test]
    fn index_agrees_with_a_linear_search_on_random_blocks() {
        let mut state = 0x1234_5678_9abc_def1_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut at = 0x5555_0000_0000u64;
        for _ in 0..5000 {
            at += 16 + (next() % 4096) / 16 * 16;
            let size = 1 + next() % 3000;
            starts.push(at);
            ends.push(at + size);
            at += size;
            if next() % 100 == 0 {
                at += 1 << 24;
            }
        }
        let scratch = Scratch::new(1 << 22).unwrap();
        let index = PointerIndex::new(&starts, &ends, &scratch).unwrap();
        for _ in 0..20_000 {
            let probe = starts[0] - 100 + next() % (ends[ends.len() - 1] - starts[0] + 200);
            let expected = starts
                .iter()
                .zip(&ends)
                .position(|(&s, &e)| s <= probe && probe < e)
                .map(|i| (i as u32, probe - starts[i]));
            assert_eq!(index.find(probe), expected, "{probe:#x}");
        }
    }

    #[test]
    fn maps_are_parsed_and_clip_ranges() {
        let mut text = vec![0u8; 1 << 20];
        let mut out = vec![(0u64, 0u64); 65536];
        let maps = Mappings::read(&mut text, &mut out);
        let local = 7u64;
        let here = &local as *const u64 as u64;
        let (start, end) = maps.containing(here).expect("the stack is mapped");
        assert!(start <= here && here < end);
        let parts: Vec<_> = maps.readable(here, here + 64).collect();
        assert_eq!(parts, [(here, here + 64)]);
        assert_eq!(maps.readable(0, 4096).count(), 0);
    }

    #[test]
    fn edge_buffer_keeps_order_across_chunks() {
        let mut edges = EdgeBuffer::new();
        for i in 0..(EDGES_PER_CHUNK as u64 + 10) {
            edges.push(EdgeRecord {
                source_offset: i,
                ..EdgeRecord::default()
            });
        }
        assert_eq!(edges.len(), EDGES_PER_CHUNK as u64 + 10);
        assert!(
            edges
                .iter()
                .enumerate()
                .all(|(i, e)| e.source_offset == i as u64)
        );
    }
}
