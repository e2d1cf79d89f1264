//! The allocation-free writer. It streams: sections are written one after
//! another and the section table goes in the footer, so a dump can be written
//! to a pipe. All memory it uses is the caller's buffer and a fixed array.
//!
//! ```
//! use heapdump_formats::write::{DumpWriter, SliceSink};
//! use heapdump_formats::records::{AllocationRecord, SectionKind};
//!
//! let mut file = [0u8; 4096];
//! let mut buffer = [0u8; 256];
//! let mut writer = DumpWriter::new(SliceSink::new(&mut file), &mut buffer).unwrap();
//! writer.begin_section(SectionKind::Allocations).unwrap();
//! writer.write_record(&AllocationRecord { address: 0x1000, size: 64, ..Default::default() }).unwrap();
//! writer.end_section().unwrap();
//! let (sink, total) = writer.finish().unwrap();
//! assert_eq!(sink.written(), total as usize);
//! ```

use crate::crc32::Crc32;
use crate::packed::Packed;
use crate::records::{
    EdgeEscapeRecord, EdgeRecord, MAX_SECTIONS, OLDEST_MAJOR, Record, SECTION_ALIGN, SectionEntry,
    SectionKind, StrRef, VERSION_MAJOR, encode_header, encode_trailer,
};

/// Where the bytes go: a file descriptor on the capture side, a `Vec` or a
/// slice elsewhere.
pub trait Sink {
    /// The sink's own error.
    type Error: Copy + core::fmt::Debug;
    /// Writes all of `bytes` or fails.
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

/// Why writing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError<E> {
    /// The sink failed.
    Sink(E),
    /// `write_record`/`write_bytes`/`end_section` without an open section,
    /// or `begin_section`/`finish` with one still open.
    SectionState,
    /// A record of another kind than the open section's.
    WrongKind,
    /// More than [`MAX_SECTIONS`] sections.
    TooManySections,
    /// The caller's buffer is smaller than the largest record.
    BufferTooSmall,
    /// A record's field does not fit the packed form of this format
    /// version, which has no escape for it (FORMAT.md §7): the record is
    /// refused rather than written wrong.
    DoesNotFit {
        /// The section.
        kind: SectionKind,
        /// The field, as FORMAT.md names it.
        field: &'static str,
    },
    /// More escaped edges in one `Edges` section than the caller's buffer
    /// can hold until the section ends (each takes
    /// [`EdgeEscapeRecord::SIZE`] bytes of it); a larger buffer holds more.
    TooManyEscapes,
    /// A major version this writer cannot write.
    UnsupportedVersion,
}

impl<E: core::fmt::Debug> core::fmt::Display for WriteError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WriteError::Sink(e) => write!(f, "write failed: {e:?}"),
            WriteError::SectionState => f.write_str("section opened or closed out of order"),
            WriteError::WrongKind => f.write_str("record kind does not match the open section"),
            WriteError::TooManySections => f.write_str("too many sections"),
            WriteError::BufferTooSmall => f.write_str("write buffer is too small"),
            WriteError::DoesNotFit { kind, field } => write!(
                f,
                "a {kind} record's {field} does not fit the format's packed record; it was refused rather than written wrong"
            ),
            WriteError::TooManyEscapes => f.write_str(
                "too many edges need an EdgeEscapes record for the write buffer; use a larger buffer",
            ),
            WriteError::UnsupportedVersion => f.write_str("this writer cannot write that format version"),
        }
    }
}

/// The smallest buffer [`DumpWriter::new`] accepts.
pub const MIN_BUFFER: usize = 256;

struct OpenSection {
    kind: u32,
    record_size: u32,
    offset: u64,
    count: u64,
    crc: Crc32,
}

/// Streams a dump into a [`Sink`] through a caller-provided buffer.
pub struct DumpWriter<'b, S: Sink> {
    sink: S,
    buffer: &'b mut [u8],
    filled: usize,
    offset: u64,
    sections: [SectionEntry; MAX_SECTIONS],
    section_count: usize,
    open: Option<OpenSection>,
    /// Major version being written.
    major: u16,
    /// Bytes at the end of `buffer` holding the open `Edges` section's
    /// escape records, newest first (they grow down from the end); written
    /// as `EdgeEscapes` when the section ends.
    escape_bytes: usize,
    /// [`section`](DumpWriter::section) is writing `Edges` and writes the
    /// escape records in a second pass, so `write_record` does not keep them.
    escapes_in_second_pass: bool,
}

impl<S: Sink> core::fmt::Debug for DumpWriter<'_, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DumpWriter")
            .field("offset", &self.offset)
            .field("section_count", &self.section_count)
            .finish_non_exhaustive()
    }
}

type WriteResult<T, E> = core::result::Result<T, WriteError<E>>;

impl<'b, S: Sink> DumpWriter<'b, S> {
    /// Starts a dump: writes the header. `buffer` batches small writes and
    /// must be at least [`MIN_BUFFER`] bytes; larger is faster.
    pub fn new(sink: S, buffer: &'b mut [u8]) -> WriteResult<Self, S::Error> {
        Self::with_version(sink, buffer, VERSION_MAJOR)
    }

    /// Like [`new`](Self::new), but writes major version `major`: this
    /// version or an older one this crate still reads (1), for tests and
    /// tools that need dumps of an older version.
    pub fn with_version(sink: S, buffer: &'b mut [u8], major: u16) -> WriteResult<Self, S::Error> {
        if buffer.len() < MIN_BUFFER {
            return Err(WriteError::BufferTooSmall);
        }
        if !(OLDEST_MAJOR..=VERSION_MAJOR).contains(&major) {
            return Err(WriteError::UnsupportedVersion);
        }
        let mut writer = DumpWriter {
            sink,
            buffer,
            filled: 0,
            offset: 0,
            sections: [SectionEntry::default(); MAX_SECTIONS],
            section_count: 0,
            open: None,
            major,
            escape_bytes: 0,
            escapes_in_second_pass: false,
        };
        writer.put(&encode_header(major))?;
        Ok(writer)
    }

    /// Bytes written so far, header included.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Opens a section of a kind this version knows. `EdgeEscapes` is not
    /// opened by callers: the writer writes it after `Edges`.
    pub fn begin_section(&mut self, kind: SectionKind) -> WriteResult<(), S::Error> {
        if kind == SectionKind::EdgeEscapes {
            return Err(WriteError::WrongKind);
        }
        self.begin_raw_section(kind as u32, kind.record_size_in(self.major))
    }

    /// Opens a section with any kind number and record size (0 for bytes).
    /// Used by tests to write kinds a reader must skip.
    pub fn begin_raw_section(&mut self, kind: u32, record_size: u32) -> WriteResult<(), S::Error> {
        if self.open.is_some() {
            return Err(WriteError::SectionState);
        }
        if self.section_count >= MAX_SECTIONS {
            return Err(WriteError::TooManySections);
        }
        self.pad_to_alignment()?;
        self.open = Some(OpenSection {
            kind,
            record_size,
            offset: self.offset,
            count: 0,
            crc: Crc32::new(),
        });
        Ok(())
    }

    /// Appends one record to the open section, in the form of the version
    /// being written (version 2 packs allocations and edges; an edge that
    /// needs an escape record keeps it in the buffer until the section ends).
    #[inline]
    pub fn write_record<R: Record>(&mut self, record: &R) -> WriteResult<(), S::Error> {
        let packed = self.major >= 2;
        let size = if packed { R::PACKED_SIZE } else { R::SIZE };
        let index = match &self.open {
            Some(open) if open.kind == R::KIND as u32 && open.record_size as usize == size => {
                open.count
            }
            Some(_) => return Err(WriteError::WrongKind),
            None => return Err(WriteError::SectionState),
        };
        // Room for the record and, in case it escapes, its escape record.
        let needed = size + if packed { EdgeEscapeRecord::SIZE } else { 0 };
        if self.batch_capacity() - self.filled < needed {
            self.flush()?;
            if self.batch_capacity() < needed {
                return Err(if self.escape_bytes > 0 {
                    WriteError::TooManyEscapes
                } else {
                    WriteError::BufferTooSmall
                });
            }
        }
        let Some(slot) = self.buffer.get_mut(self.filled..self.filled + size) else {
            return Err(WriteError::BufferTooSmall);
        };
        slot.fill(0);
        if packed {
            match record.encode_packed(slot, index) {
                Ok(Packed::Whole) => {}
                Ok(Packed::Escape(_)) if self.escapes_in_second_pass => {}
                Ok(Packed::Escape(escape)) => {
                    let end = self.buffer.len() - self.escape_bytes;
                    let start = end - EdgeEscapeRecord::SIZE;
                    // The room check above keeps the escape records clear of
                    // the batch area, this record included.
                    if let Some(dst) = self.buffer.get_mut(start..end) {
                        escape.encode(dst);
                    }
                    self.escape_bytes += EdgeEscapeRecord::SIZE;
                }
                Err(e) => {
                    return Err(WriteError::DoesNotFit {
                        kind: R::KIND,
                        field: e.field,
                    });
                }
            }
        } else {
            record.encode(slot);
        }
        let Some(slot) = self.buffer.get(self.filled..self.filled + size) else {
            return Err(WriteError::BufferTooSmall);
        };
        if let Some(open) = &mut self.open {
            open.crc = open.crc.update(slot);
            open.count += 1;
        }
        self.filled += size;
        self.offset += size as u64;
        Ok(())
    }

    /// The part of the buffer that batches writes: all of it but the
    /// escape records at its end.
    fn batch_capacity(&self) -> usize {
        self.buffer.len() - self.escape_bytes
    }

    /// Appends raw bytes to the open byte section (record size 0).
    pub fn write_bytes(&mut self, bytes: &[u8]) -> WriteResult<(), S::Error> {
        match &mut self.open {
            Some(open) if open.record_size == 0 => {
                open.crc = open.crc.update(bytes);
                open.count += bytes.len() as u64;
            }
            Some(_) => return Err(WriteError::WrongKind),
            None => return Err(WriteError::SectionState),
        }
        self.put(bytes)
    }

    /// Writes a whole record section from an iterator. In version 2,
    /// `Edges` walks the iterator twice (a clone of it first): once for the
    /// edges and once for the escape records of those that need one, which
    /// follow as `EdgeEscapes`. So any number of edges may escape, where
    /// edges written one by one with [`write_record`](Self::write_record)
    /// keep their escape records in the buffer (about `buffer.len() / 24`
    /// of them). Both walks must yield the same records.
    pub fn section<R, I>(&mut self, records: I) -> WriteResult<(), S::Error>
    where
        R: Record,
        I: IntoIterator<Item = R>,
        I::IntoIter: Clone,
    {
        let records = records.into_iter();
        self.begin_section(R::KIND)?;
        let escapes_in_second_pass = self.major >= 2 && R::KIND == SectionKind::Edges;
        self.escapes_in_second_pass = escapes_in_second_pass;
        let first_pass = records
            .clone()
            .try_for_each(|record| self.write_record(&record));
        self.escapes_in_second_pass = false;
        first_pass?;
        if !escapes_in_second_pass {
            return self.end_section();
        }
        self.close_section()?;
        let kind = SectionKind::EdgeEscapes;
        self.begin_raw_section(kind as u32, kind.record_size_in(self.major))?;
        let mut scratch = [0u8; EdgeRecord::PACKED_SIZE];
        for (index, record) in records.enumerate() {
            if let Ok(Packed::Escape(escape)) = record.encode_packed(&mut scratch, index as u64) {
                self.write_record(&escape)?;
            }
        }
        self.close_section()
    }

    /// Writes a whole byte section.
    pub fn byte_section(&mut self, kind: SectionKind, bytes: &[u8]) -> WriteResult<(), S::Error> {
        self.begin_section(kind)?;
        self.write_bytes(bytes)?;
        self.end_section()
    }

    /// Closes the open section and records it in the table. In version 2,
    /// closing `Edges` also writes `EdgeEscapes` (empty if no edge escaped).
    pub fn end_section(&mut self) -> WriteResult<(), S::Error> {
        let edges_closed =
            matches!(&self.open, Some(open) if open.kind == SectionKind::Edges as u32);
        self.close_section()?;
        if edges_closed && self.major >= 2 {
            self.write_escapes()?;
        }
        Ok(())
    }

    /// Writes the escape records kept at the end of the buffer as the
    /// `EdgeEscapes` section, in edge order, and frees their room.
    fn write_escapes(&mut self) -> WriteResult<(), S::Error> {
        let kind = SectionKind::EdgeEscapes;
        self.begin_raw_section(kind as u32, kind.record_size_in(self.major))?;
        self.flush()?;
        let start = self.buffer.len() - self.escape_bytes;
        let escapes = self.buffer.get_mut(start..).unwrap_or_default();
        // They were stored newest first; the section lists them by edge.
        let count = escapes.len() / EdgeEscapeRecord::SIZE;
        for i in 0..count / 2 {
            let (front, back) = escapes.split_at_mut((count - 1 - i) * EdgeEscapeRecord::SIZE);
            if let (Some(a), Some(b)) = (
                front.get_mut(i * EdgeEscapeRecord::SIZE..(i + 1) * EdgeEscapeRecord::SIZE),
                back.get_mut(..EdgeEscapeRecord::SIZE),
            ) {
                a.swap_with_slice(b);
            }
        }
        let escapes = self.buffer.get(start..).unwrap_or_default();
        if let Some(open) = &mut self.open {
            open.crc = open.crc.update(escapes);
            open.count = count as u64;
        }
        self.sink.write_all(escapes).map_err(WriteError::Sink)?;
        self.offset += escapes.len() as u64;
        self.escape_bytes = 0;
        self.close_section()
    }

    fn close_section(&mut self) -> WriteResult<(), S::Error> {
        let open = self.open.take().ok_or(WriteError::SectionState)?;
        let entry = SectionEntry {
            kind: open.kind,
            record_size: open.record_size,
            offset: open.offset,
            length: self.offset - open.offset,
            count: open.count,
            crc32: open.crc.finish(),
            reserved: 0,
        };
        let slot = self
            .sections
            .get_mut(self.section_count)
            .ok_or(WriteError::TooManySections)?;
        *slot = entry;
        self.section_count += 1;
        Ok(())
    }

    /// Writes the section table and trailer, flushes, and returns the sink
    /// and the total number of bytes written.
    pub fn finish(mut self) -> WriteResult<(S, u64), S::Error> {
        if self.open.is_some() {
            return Err(WriteError::SectionState);
        }
        self.pad_to_alignment()?;
        let table_offset = self.offset;
        let mut table_crc = Crc32::new();
        for index in 0..self.section_count {
            let Some(entry) = self.sections.get(index).copied() else {
                break;
            };
            let bytes = entry.encode();
            table_crc = table_crc.update(&bytes);
            self.put(&bytes)?;
        }
        let trailer = encode_trailer(table_offset, self.section_count as u32, table_crc.finish());
        self.put(&trailer)?;
        self.flush()?;
        Ok((self.sink, self.offset))
    }

    fn pad_to_alignment(&mut self) -> WriteResult<(), S::Error> {
        let pad = (SECTION_ALIGN - self.offset % SECTION_ALIGN) % SECTION_ALIGN;
        self.put(&[0u8; SECTION_ALIGN as usize][..pad as usize])
    }

    fn put(&mut self, mut bytes: &[u8]) -> WriteResult<(), S::Error> {
        self.offset += bytes.len() as u64;
        let capacity = self.batch_capacity();
        while !bytes.is_empty() {
            if self.filled == capacity {
                self.flush()?;
            }
            // Large writes bypass the buffer once it is empty.
            if self.filled == 0 && bytes.len() >= capacity {
                return self.sink.write_all(bytes).map_err(WriteError::Sink);
            }
            let room = capacity - self.filled;
            let take = room.min(bytes.len());
            let (now, later) = bytes.split_at(take);
            if let Some(dst) = self.buffer.get_mut(self.filled..self.filled + take) {
                dst.copy_from_slice(now);
            }
            self.filled += take;
            bytes = later;
        }
        Ok(())
    }

    fn flush(&mut self) -> WriteResult<(), S::Error> {
        if self.filled > 0 {
            let pending = self.buffer.get(..self.filled).unwrap_or(&[]);
            self.sink.write_all(pending).map_err(WriteError::Sink)?;
            self.filled = 0;
        }
        Ok(())
    }
}

/// Builds the `Strings` section in a caller-provided buffer.
pub struct StringTable<'b> {
    buffer: &'b mut [u8],
    len: usize,
}

impl core::fmt::Debug for StringTable<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StringTable")
            .field("len", &self.len)
            .finish()
    }
}

impl<'b> StringTable<'b> {
    /// An empty table that can hold `buffer.len()` bytes of strings.
    pub fn new(buffer: &'b mut [u8]) -> StringTable<'b> {
        StringTable { buffer, len: 0 }
    }

    /// Adds a string; `None` when the buffer is full (callers record an
    /// empty string rather than fail the dump). Empty input gives
    /// [`StrRef::EMPTY`].
    pub fn add(&mut self, bytes: &[u8]) -> Option<StrRef> {
        if bytes.is_empty() {
            return Some(StrRef::EMPTY);
        }
        let end = self.len.checked_add(bytes.len())?;
        let offset = u32::try_from(self.len).ok()?;
        let len = u32::try_from(bytes.len()).ok()?;
        self.buffer.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(StrRef { offset, len })
    }

    /// Like [`add`](Self::add), but gives [`StrRef::EMPTY`] when full.
    pub fn add_or_empty(&mut self, bytes: &[u8]) -> StrRef {
        self.add(bytes).unwrap_or(StrRef::EMPTY)
    }

    /// The section's bytes so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.get(..self.len).unwrap_or(&[])
    }
}

/// A [`Sink`] over a fixed byte slice (tests, fuzzing, no_std callers).
#[derive(Debug)]
pub struct SliceSink<'a> {
    out: &'a mut [u8],
    written: usize,
}

/// The slice given to a [`SliceSink`] is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceFull;

impl<'a> SliceSink<'a> {
    /// A sink that fills `out` from the start.
    pub fn new(out: &'a mut [u8]) -> SliceSink<'a> {
        SliceSink { out, written: 0 }
    }

    /// Bytes written.
    pub fn written(&self) -> usize {
        self.written
    }
}

impl Sink for SliceSink<'_> {
    type Error = SliceFull;
    fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), SliceFull> {
        let end = self.written.checked_add(bytes.len()).ok_or(SliceFull)?;
        self.out
            .get_mut(self.written..end)
            .ok_or(SliceFull)?
            .copy_from_slice(bytes);
        self.written = end;
        Ok(())
    }
}

impl Sink for &mut Vec<u8> {
    type Error = core::convert::Infallible;
    fn write_all(&mut self, bytes: &[u8]) -> core::result::Result<(), Self::Error> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}
