//! The validating zero-copy reader. A dump is untrusted input: every offset,
//! length and count is checked before use, every section's CRC is verified,
//! and every failure names the section and the byte offset. Records are
//! decoded on access straight from the mapped file.
//!
//! ```no_run
//! use heapdump_formats::read::Dump;
//! let dump = Dump::open("app.hdump".as_ref())?;
//! let view = dump.view();
//! for allocation in view.allocations().iter() {
//!     println!("{:#x} {} bytes", allocation.address, allocation.size);
//! }
//! # Ok::<(), heapdump_formats::read::ReadError>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::packed::EscapeRecords;
use crate::records::*;

/// Names a section in errors: known kinds by name, others by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionId(pub u32);

impl fmt::Display for SectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SectionKind::from_u32(self.0) {
            Some(kind) => write!(f, "{kind}"),
            None => write!(f, "unknown kind {}", self.0),
        }
    }
}

/// What is wrong with a dump's bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Shorter than a header plus a trailer.
    #[error(
        "file is {len} bytes, too short for a heap dump (at least {min} bytes); it is empty or was cut off"
    )]
    TooShort {
        /// File length.
        len: u64,
        /// Minimum length.
        min: u64,
    },
    /// The first eight bytes are not the magic.
    #[error("not a heap dump: the first 8 bytes are not the .hdump magic")]
    BadMagic,
    /// A major version this reader does not know.
    #[error(
        "format version {major}.{minor} is not supported (this reader knows {OLDEST_MAJOR}.x to {VERSION_MAJOR}.x); use a newer heapdump"
    )]
    UnsupportedVersion {
        /// Major version in the header.
        major: u16,
        /// Minor version in the header.
        minor: u16,
    },
    /// The byte-order mark is wrong.
    #[error(
        "byte-order mark at byte 12 is {found:#010x}, expected {ENDIAN_MARK:#010x}: not a little-endian dump, or corrupt"
    )]
    BadEndianness {
        /// The mark found.
        found: u32,
    },
    /// The end marker is missing: the dump is truncated or still being written.
    #[error(
        "no end marker at byte {offset}: the dump is truncated (the writer died or the copy was cut short)"
    )]
    Truncated {
        /// Where the end marker should be.
        offset: u64,
    },
    /// The footer's section table is inconsistent.
    #[error("section table at byte {offset}: {problem}")]
    BadTable {
        /// Byte offset of the table (or of the trailer).
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A section's table entry or contents are inconsistent.
    #[error("section {section} at byte {offset}: {problem}")]
    BadSection {
        /// The section.
        section: SectionId,
        /// Byte offset of the section.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// One record refers to something that does not exist.
    #[error("{section} record {index} at byte {offset}: {problem}")]
    BadRecord {
        /// The section.
        section: SectionKind,
        /// Record index.
        index: u64,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
}

/// Opening a dump failed: the file could not be read, or its bytes are bad.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The OS refused.
    // The cause is in the message, so it is not also a `#[source]`: error
    // chain printers (anyhow's `{:#}`, `Error: … Caused by: …`) would show
    // it twice.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The bytes are not a sound dump.
    #[error("{}: {error}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: FormatError,
    },
}

/// Where a section is and how its records are laid out, after validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    /// The raw table entry.
    pub entry: SectionEntry,
    /// The kind, if this version knows it.
    pub kind: Option<SectionKind>,
}

/// Bytes the checksum pass of [`Dump::open`] reads between two releases
/// of the file's resident pages.
const CHECKSUM_STRETCH: usize = 32 << 20;

/// Upper bound on sections read, known or not, so a corrupt count cannot
/// make the reader walk gigabytes of "table".
const MAX_READ_SECTIONS: u64 = 4096;

/// A validated dump borrowed from bytes: header, trailer, section table,
/// section bounds and CRCs have all been checked.
#[derive(Clone, Debug)]
pub struct DumpView<'a> {
    bytes: &'a [u8],
    version: (u16, u16),
    sections: Vec<SectionInfo>,
    /// The file mapping `bytes` is, when the view comes from
    /// [`Dump::open`] (for [`release_resident_pages`](Self::release_resident_pages)).
    map: Option<&'a memmap2::Mmap>,
}

impl<'a> DumpView<'a> {
    /// Validates `bytes` as a dump. Checks structure and checksums; the
    /// cross-references between records are checked by
    /// `heapdump verify` and on access.
    pub fn parse(bytes: &'a [u8]) -> Result<DumpView<'a>, FormatError> {
        Self::parse_releasing(bytes, &|| {})
    }

    /// [`parse`](Self::parse), calling `release` after each stretch of
    /// [`CHECKSUM_STRETCH`] bytes the checksums have read (so a mapped
    /// file's pages can leave the resident set as the pass goes).
    fn parse_releasing(bytes: &'a [u8], release: &dyn Fn()) -> Result<DumpView<'a>, FormatError> {
        let len = bytes.len() as u64;
        let min = (HEADER_SIZE + TRAILER_SIZE) as u64;
        if len < min {
            return Err(FormatError::TooShort { len, min });
        }
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        let major = u16::get(&bytes[8..10]);
        let minor = u16::get(&bytes[10..12]);
        if !(OLDEST_MAJOR..=VERSION_MAJOR).contains(&major) {
            return Err(FormatError::UnsupportedVersion { major, minor });
        }
        let mark = u32::get(&bytes[12..16]);
        if mark != ENDIAN_MARK {
            return Err(FormatError::BadEndianness { found: mark });
        }

        let trailer_at = len - TRAILER_SIZE as u64;
        let trailer = &bytes[trailer_at as usize..];
        if trailer[16..24] != END_MAGIC {
            return Err(FormatError::Truncated {
                offset: trailer_at + 16,
            });
        }
        let table_offset = u64::get(&trailer[0..8]);
        let count = u32::get(&trailer[8..12]) as u64;
        let table_crc = u32::get(&trailer[12..16]);
        let table_err = |problem: String| FormatError::BadTable {
            offset: table_offset,
            problem,
        };
        if count > MAX_READ_SECTIONS {
            return Err(FormatError::BadTable {
                offset: trailer_at,
                problem: format!(
                    "trailer claims {count} sections, more than the {MAX_READ_SECTIONS} a reader accepts"
                ),
            });
        }
        let table_len = count * SectionEntry::SIZE as u64;
        if table_offset < HEADER_SIZE as u64
            || table_offset.checked_add(table_len) != Some(trailer_at)
        {
            return Err(FormatError::BadTable {
                offset: trailer_at,
                problem: format!(
                    "trailer says {count} sections at byte {table_offset}, which does not end where the trailer starts (byte {trailer_at})"
                ),
            });
        }
        let table = &bytes[table_offset as usize..trailer_at as usize];
        if crc32fast::hash(table) != table_crc {
            return Err(table_err(
                "checksum mismatch: the section table is corrupt".into(),
            ));
        }

        let mut sections = Vec::with_capacity(count as usize);
        for raw in table.chunks_exact(SectionEntry::SIZE) {
            let mut fixed = [0u8; SectionEntry::SIZE];
            fixed.copy_from_slice(raw);
            let entry = SectionEntry::decode(&fixed);
            let info = check_entry(bytes, table_offset, entry, major, release)?;
            if let Some(kind) = info.kind
                && sections.iter().any(|s: &SectionInfo| s.kind == Some(kind))
            {
                return Err(FormatError::BadSection {
                    section: SectionId(entry.kind),
                    offset: entry.offset,
                    problem: "appears twice in the section table".into(),
                });
            }
            sections.push(info);
        }
        let mut by_offset: Vec<&SectionInfo> = sections.iter().collect();
        by_offset.sort_by_key(|s| s.entry.offset);
        for pair in by_offset.windows(2) {
            let (a, b) = (pair[0].entry, pair[1].entry);
            if a.offset + a.length > b.offset {
                return Err(FormatError::BadSection {
                    section: SectionId(b.kind),
                    offset: b.offset,
                    problem: format!(
                        "overlaps section {} at byte {}",
                        SectionId(a.kind),
                        a.offset
                    ),
                });
            }
        }

        let view = DumpView {
            bytes,
            version: (major, minor),
            sections,
            map: None,
        };
        match view.section(SectionKind::Process) {
            Some(info) if info.entry.count == 1 => {}
            Some(info) => {
                return Err(FormatError::BadSection {
                    section: SectionId(SectionKind::Process as u32),
                    offset: info.entry.offset,
                    problem: format!("holds {} records, expected exactly 1", info.entry.count),
                });
            }
            None => {
                return Err(table_err("the required Process section is missing".into()));
            }
        }
        Ok(view)
    }

    /// The whole file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// (major, minor) format version.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// Every section in the table, known kinds and unknown.
    pub fn sections(&self) -> &[SectionInfo] {
        &self.sections
    }

    /// The section of a kind, if present.
    pub fn section(&self, kind: SectionKind) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.kind == Some(kind))
    }

    /// The records of a section; empty if the section is absent. In a
    /// version-2 dump, allocations and edges are unpacked on access.
    pub fn table<R: Record>(&self) -> Table<'a, R> {
        match self.section(R::KIND) {
            Some(info) => {
                let e = info.entry;
                let packed = self.version.0 >= 2;
                let escapes = if packed && R::KIND == SectionKind::Edges {
                    self.escape_records()
                } else {
                    EscapeRecords::default()
                };
                Table {
                    bytes: self.section_bytes(&e),
                    record_size: e.record_size as usize,
                    count: e.count as usize,
                    file_offset: e.offset,
                    packed,
                    first_index: 0,
                    escapes,
                    map: self.map,
                    _record: PhantomData,
                }
            }
            None => Table::empty(),
        }
    }

    /// The bytes of a section whose entry `parse` checked.
    fn section_bytes(&self, entry: &SectionEntry) -> &'a [u8] {
        usize::try_from(entry.offset)
            .ok()
            .zip(usize::try_from(entry.offset.saturating_add(entry.length)).ok())
            .and_then(|(start, end)| self.bytes.get(start..end))
            .unwrap_or_default()
    }

    /// The `EdgeEscapes` section, for unpacking escaped edges.
    fn escape_records(&self) -> EscapeRecords<'a> {
        match self.section(SectionKind::EdgeEscapes) {
            Some(info) if info.entry.record_size as usize >= EdgeEscapeRecord::SIZE => {
                EscapeRecords {
                    bytes: self.section_bytes(&info.entry),
                    record_size: info.entry.record_size as usize,
                }
            }
            _ => EscapeRecords::default(),
        }
    }

    /// The escape records of a version-2 dump's edges, sorted by edge.
    pub fn edge_escapes(&self) -> Table<'a, EdgeEscapeRecord> {
        self.table()
    }

    /// The bytes of a byte section; empty if absent.
    pub fn byte_section(&self, kind: SectionKind) -> &'a [u8] {
        match self.section(kind) {
            Some(info) if info.entry.record_size == 0 => {
                &self.bytes
                    [info.entry.offset as usize..(info.entry.offset + info.entry.length) as usize]
            }
            _ => &[],
        }
    }

    /// The process record (always present in a valid dump).
    pub fn process(&self) -> ProcessRecord {
        self.table::<ProcessRecord>().get(0).unwrap_or_default()
    }

    /// Threads, indexed by thread index.
    pub fn threads(&self) -> Table<'a, ThreadRecord> {
        self.table()
    }

    /// Loaded modules.
    pub fn modules(&self) -> Table<'a, ModuleRecord> {
        self.table()
    }

    /// Module segments.
    pub fn segments(&self) -> Table<'a, SegmentRecord> {
        self.table()
    }

    /// Live allocations, sorted by address.
    pub fn allocations(&self) -> Table<'a, AllocationRecord> {
        self.table()
    }

    /// Interned stacks, indexed by stack id.
    pub fn stacks(&self) -> Table<'a, StackRecord> {
        self.table()
    }

    /// All stack frames.
    pub fn frames(&self) -> Table<'a, FrameRecord> {
        self.table()
    }

    /// Roots.
    pub fn roots(&self) -> Table<'a, RootRecord> {
        self.table()
    }

    /// Takes the file's pages out of this process's resident set (the
    /// kernel keeps them in its page cache while memory allows, and a read
    /// maps them back in), so that a pass over gigabytes of records does
    /// not leave them counted against the process. Does nothing for a view
    /// of bytes in memory ([`parse`](Self::parse), [`Dump::from_vec`]). A
    /// hint: failure is ignored.
    pub fn release_resident_pages(&self) {
        if let Some(map) = self.map {
            release_map(map);
        }
    }

    /// Edges.
    pub fn edges(&self) -> Table<'a, EdgeRecord> {
        self.table()
    }

    /// A string from the `Strings` section, checked against its bounds.
    pub fn string(&self, string: StrRef) -> Result<&'a [u8], FormatError> {
        if string.len == 0 {
            return Ok(&[]);
        }
        let strings = self.byte_section(SectionKind::Strings);
        // In u64: on a 32-bit host `offset + len` can overflow usize.
        let start = u64::from(string.offset);
        let end = start + u64::from(string.len);
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(start, end)| strings.get(start..end));
        range.ok_or_else(|| {
            let offset = self
                .section(SectionKind::Strings)
                .map_or(0, |s| s.entry.offset);
            FormatError::BadSection {
                section: SectionId(SectionKind::Strings as u32),
                offset,
                problem: format!(
                    "string at {start}..{end} lies outside the section's {} bytes",
                    strings.len()
                ),
            }
        })
    }

    /// Allocation contents: where each dumped allocation's bytes are.
    pub fn contents(&self) -> Table<'a, ContentRecord> {
        self.table()
    }

    /// The function name of every frame: record `i` names `Frames` record
    /// `i`. `Ok(None)` when the dump carries no names (written before
    /// version 1, or by a capture that did not name its frames). A section
    /// whose count differs from the number of frames is an error: its names
    /// cannot be matched to frames, so none of them can be trusted.
    pub fn frame_names(&self) -> Result<Option<Table<'a, FrameNameRecord>>, FormatError> {
        let Some(info) = self.section(SectionKind::FrameNames) else {
            return Ok(None);
        };
        let frames = self.frames().len() as u64;
        if info.entry.count != frames {
            return Err(FormatError::BadSection {
                section: SectionId(SectionKind::FrameNames as u32),
                offset: info.entry.offset,
                problem: format!(
                    "holds {} names for the {frames} records of Frames; they must be one per frame",
                    info.entry.count
                ),
            });
        }
        Ok(Some(self.table()))
    }

    /// The bytes a [`ContentRecord`] refers to, checked against
    /// `ContentBytes`.
    pub fn content_bytes(&self, content: &ContentRecord) -> Result<&'a [u8], FormatError> {
        let bytes = self.byte_section(SectionKind::ContentBytes);
        let end = content.offset.checked_add(content.len);
        let range = usize::try_from(content.offset)
            .ok()
            .zip(end.and_then(|end| usize::try_from(end).ok()))
            .and_then(|(start, end)| bytes.get(start..end));
        range.ok_or_else(|| FormatError::BadSection {
            section: SectionId(SectionKind::ContentBytes as u32),
            offset: self
                .section(SectionKind::ContentBytes)
                .map_or(0, |s| s.entry.offset),
            problem: format!(
                "content of allocation {} at {}..{}+{} lies outside the section's {} bytes",
                content.allocation,
                content.offset,
                content.offset,
                content.len,
                bytes.len()
            ),
        })
    }

    /// A string decoded lossily as UTF-8 (paths and names come from the OS).
    pub fn string_lossy(&self, string: StrRef) -> Result<std::borrow::Cow<'a, str>, FormatError> {
        self.string(string).map(String::from_utf8_lossy)
    }

    /// The frames of a stack, innermost first, checked against `Frames`.
    pub fn stack_frames(&self, stack_id: u32) -> Result<Table<'a, FrameRecord>, FormatError> {
        let stacks = self.stacks();
        let stack = stacks
            .get(stack_id as usize)
            .ok_or_else(|| FormatError::BadRecord {
                section: SectionKind::Stacks,
                index: stack_id as u64,
                offset: stacks.file_offset(stacks.len()),
                problem: format!(
                    "stack id {stack_id} does not exist ({} stacks)",
                    stacks.len()
                ),
            })?;
        let frames = self.frames();
        let start = stack.first_frame;
        let end = start.checked_add(stack.frame_count as u64);
        match end {
            Some(end) if end <= frames.len() as u64 => {
                Ok(frames.slice(start as usize, end as usize))
            }
            _ => Err(FormatError::BadRecord {
                section: SectionKind::Stacks,
                index: stack_id as u64,
                offset: stacks.file_offset(stack_id as usize),
                problem: format!(
                    "frames {start}..{start}+{} lie outside the {} frames in Frames",
                    stack.frame_count,
                    frames.len()
                ),
            }),
        }
    }
}

fn check_entry(
    bytes: &[u8],
    table_offset: u64,
    entry: SectionEntry,
    major: u16,
    release: &dyn Fn(),
) -> Result<SectionInfo, FormatError> {
    let bad = |problem: String| FormatError::BadSection {
        section: SectionId(entry.kind),
        offset: entry.offset,
        problem,
    };
    if entry.offset < HEADER_SIZE as u64 || !entry.offset.is_multiple_of(SECTION_ALIGN) {
        return Err(bad(format!(
            "starts at byte {}, which is inside the header or not {SECTION_ALIGN}-byte aligned",
            entry.offset
        )));
    }
    match entry.offset.checked_add(entry.length) {
        Some(end) if end <= table_offset => {}
        _ => {
            return Err(bad(format!(
                "{} bytes from byte {} run past the section table at byte {table_offset}",
                entry.length, entry.offset
            )));
        }
    }
    let kind = SectionKind::from_u32(entry.kind);
    let expected_len = if entry.record_size == 0 {
        Some(entry.count)
    } else {
        entry.count.checked_mul(entry.record_size as u64)
    };
    if expected_len != Some(entry.length) {
        return Err(bad(format!(
            "{} records of {} bytes do not fill its {} bytes",
            entry.count, entry.record_size, entry.length
        )));
    }
    if let Some(kind) = kind {
        let known = kind.record_size_in(major);
        if known == 0 && entry.record_size != 0 {
            return Err(bad(format!(
                "is a byte section but claims {}-byte records",
                entry.record_size
            )));
        }
        if known != 0 && entry.record_size < known {
            return Err(bad(format!(
                "records are {} bytes, smaller than the {known} bytes of version {major}.0",
                entry.record_size
            )));
        }
        if matches!(
            kind,
            SectionKind::Allocations
                | SectionKind::Edges
                | SectionKind::Stacks
                | SectionKind::Threads
                | SectionKind::Roots
                | SectionKind::Modules
                | SectionKind::ContentIndex
                | SectionKind::EdgeEscapes
        ) && entry.count > u32::MAX as u64
        {
            return Err(bad(format!(
                "{} records, more than 32-bit indexes can address",
                entry.count
            )));
        }
    }
    let body = &bytes[entry.offset as usize..(entry.offset + entry.length) as usize];
    let mut crc = crc32fast::Hasher::new();
    for stretch in body.chunks(CHECKSUM_STRETCH) {
        crc.update(stretch);
        if stretch.len() == CHECKSUM_STRETCH {
            release();
        }
    }
    if crc.finalize() != entry.crc32 {
        return Err(bad(
            "checksum mismatch: the section's bytes are corrupt".into()
        ));
    }
    Ok(SectionInfo { entry, kind })
}

/// The records of one section, decoded on access (and unpacked, for the
/// kinds version 2 packs).
#[derive(Clone, Copy)]
pub struct Table<'a, R> {
    bytes: &'a [u8],
    record_size: usize,
    count: usize,
    file_offset: u64,
    /// Records are in version 2's form ([`Record::decode_packed`]).
    packed: bool,
    /// Index in the whole section of this table's first record (a slice's
    /// start), which names an edge in its escape record.
    first_index: usize,
    /// The dump's `EdgeEscapes`, for a version-2 `Edges` table.
    escapes: EscapeRecords<'a>,
    /// The file mapping `bytes` lie in, for a table of a [`Dump::open`]ed
    /// file: [`iter`](Self::iter) releases the pages it has read.
    map: Option<&'a memmap2::Mmap>,
    _record: PhantomData<R>,
}

impl<R> fmt::Debug for Table<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("count", &self.count)
            .field("record_size", &self.record_size)
            .field("file_offset", &self.file_offset)
            .finish()
    }
}

impl<'a, R: Record> Table<'a, R> {
    /// A table with no records.
    pub fn empty() -> Table<'a, R> {
        Table {
            bytes: &[],
            record_size: R::SIZE,
            count: 0,
            file_offset: 0,
            packed: false,
            first_index: 0,
            escapes: EscapeRecords::default(),
            map: None,
            _record: PhantomData,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Record `index`, or `None` past the end.
    #[inline]
    pub fn get(&self, index: usize) -> Option<R> {
        if index >= self.count {
            return None;
        }
        let start = index * self.record_size;
        let bytes = self.bytes.get(start..start + self.record_size)?;
        if self.packed {
            R::decode_packed(bytes, (self.first_index + index) as u64, self.escapes)
        } else {
            R::decode(bytes)
        }
    }

    /// Byte offset in the file of record `index` (for error messages).
    /// Saturates rather than overflowing for absurd indexes.
    pub fn file_offset(&self, index: usize) -> u64 {
        (index as u64)
            .saturating_mul(self.record_size as u64)
            .saturating_add(self.file_offset)
    }

    /// Records `start..end` as a table of their own.
    pub fn slice(&self, start: usize, end: usize) -> Table<'a, R> {
        let end = end.min(self.count);
        let start = start.min(end);
        Table {
            bytes: &self.bytes[start * self.record_size..end * self.record_size],
            record_size: self.record_size,
            count: end - start,
            file_offset: self.file_offset(start),
            packed: self.packed,
            first_index: self.first_index + start,
            escapes: self.escapes,
            map: self.map,
            _record: PhantomData,
        }
    }

    /// All records in order. For a table of a [`Dump::open`]ed file, each
    /// stretch of [`RELEASE_STRETCH`] records read leaves the process's
    /// resident set as the pass ends it (either way round):
    /// a pass over a table of gigabytes holds a few MiB of it at a time.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = R> + DoubleEndedIterator + 'a {
        let record_size = self.record_size;
        let (packed, first_index, escapes) = (self.packed, self.first_index, self.escapes);
        let (map, bytes, count) = (self.map, self.bytes, self.count);
        self.bytes
            .chunks_exact(record_size.max(1))
            .take(self.count)
            .enumerate()
            // Every chunk is record_size bytes, at least the size of the
            // dump's version (checked when the table was read), so decoding
            // cannot fail.
            .map(move |(index, chunk)| {
                if let Some(map) = map {
                    // The last record of a stretch (or of the table) going
                    // forward, or the first going backward, ends it.
                    let place = index % RELEASE_STRETCH;
                    if place == 0 || place == RELEASE_STRETCH - 1 || index + 1 == count {
                        let first = index - place;
                        let stretch = first * record_size..(first + RELEASE_STRETCH) * record_size;
                        release_map_range(map, bytes, stretch);
                    }
                }
                if packed {
                    R::decode_packed(chunk, (first_index + index) as u64, escapes)
                } else {
                    R::decode(chunk)
                }
                .unwrap_or_default()
            })
    }
}

/// [`DumpView::release_resident_pages`] for a dump's mapping.
fn release_map(map: &memmap2::Mmap) {
    // The map is a read-only private mapping of a file that is never
    // written in place (the reader contract in `Dump::open`), and nothing
    // writes through it, so it has no copy-on-write pages: MADV_DONTNEED
    // only drops the page table entries, and the next read of any byte
    // maps the same file page again.
    // SAFETY: as above, every borrow of the bytes keeps seeing the same values.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
}

/// Records a table's [`Table::iter`] reads between two releases of the
/// pages it has read.
pub const RELEASE_STRETCH: usize = 1 << 20;

/// Alignment of the pages [`release_map_range`] releases: a multiple of
/// every page size Linux uses on the machines the format is read on.
const RELEASE_ALIGN: usize = 64 << 10;

/// Releases the whole pages of `map` that lie within `range` of `bytes`
/// (a slice of `map`), as [`release_map`] does for all of it.
fn release_map_range(map: &memmap2::Mmap, bytes: &[u8], range: std::ops::Range<usize>) {
    let base = map.as_ptr() as usize;
    let start = (bytes.as_ptr() as usize).saturating_sub(base);
    if start.saturating_add(bytes.len()) > map.len() {
        return;
    }
    let end = base + start + range.end.min(bytes.len());
    let start = base + start + range.start.min(bytes.len());
    // Whole aligned pages inside the range only: the neighbours' records
    // may still be wanted.
    let first = start.next_multiple_of(RELEASE_ALIGN);
    let last = end / RELEASE_ALIGN * RELEASE_ALIGN;
    if last <= first {
        return;
    }
    let (first, last) = (first - base, last - base);
    // SAFETY: as in `release_map`: a read-only private file mapping with
    // no copy-on-write pages, so the released pages read back the same
    // bytes; the range lies inside the map (checked above).
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, first, last - first)
    };
}

enum Backing {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A dump file, memory-mapped and validated.
pub struct Dump {
    backing: Backing,
    version: (u16, u16),
    sections: Vec<SectionInfo>,
    path: Option<PathBuf>,
}

impl fmt::Debug for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dump")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("sections", &self.sections.len())
            .finish()
    }
}

impl Dump {
    /// Maps and validates a dump file. Errors name the file.
    pub fn open(path: &Path) -> Result<Dump, ReadError> {
        let io = |error| ReadError::Io {
            path: path.to_owned(),
            error,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            return Err(io(std::io::Error::other("not a regular file")));
        }
        let backing = if metadata.len() == 0 {
            Backing::Owned(Vec::new())
        } else {
            // If another process truncated the file while it is mapped, reads
            // past the new end would raise SIGBUS; dumps are written once with
            // O_EXCL and never modified in place (FORMAT.md's reader contract).
            // SAFETY: the map is read-only and private to this process.
            Backing::Mapped(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        let mut dump = Dump {
            backing,
            version: (0, 0),
            sections: Vec::new(),
            path: Some(path.to_owned()),
        };
        let release = || {
            if let Backing::Mapped(map) = &dump.backing {
                release_map(map);
            }
        };
        let view = DumpView::parse_releasing(dump.bytes(), &release).map_err(|error| {
            ReadError::Format {
                path: path.to_owned(),
                error,
            }
        })?;
        let (version, sections) = (view.version, view.sections);
        dump.version = version;
        dump.sections = sections;
        // The checksums read every byte; what is read next comes back on use.
        dump.release_resident_pages();
        Ok(dump)
    }

    /// Validates an in-memory dump.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Dump, FormatError> {
        let view = DumpView::parse(&bytes)?;
        let (version, sections) = (view.version, view.sections);
        Ok(Dump {
            backing: Backing::Owned(bytes),
            version,
            sections,
            path: None,
        })
    }

    /// The file this dump was opened from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(map) => map,
            Backing::Owned(bytes) => bytes,
        }
    }

    /// A view for reading records; validation already happened in `open`.
    pub fn view(&self) -> DumpView<'_> {
        DumpView {
            bytes: self.bytes(),
            version: self.version,
            sections: self.sections.clone(),
            map: match &self.backing {
                Backing::Mapped(map) => Some(map),
                Backing::Owned(_) => None,
            },
        }
    }

    /// [`DumpView::release_resident_pages`] for the whole file.
    pub fn release_resident_pages(&self) {
        self.view().release_resident_pages();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::DumpBuilder;

    #[test]
    fn out_of_range_string_and_content_refs_are_errors_not_panics() {
        let bytes = DumpBuilder::small().to_bytes();
        let view = DumpView::parse(&bytes).unwrap();
        let huge = StrRef {
            offset: u32::MAX,
            len: u32::MAX,
        };
        let err = view.string(huge).unwrap_err().to_string();
        assert!(
            err.contains("string at 4294967295..8589934590 lies outside"),
            "{err}"
        );
        let content = ContentRecord {
            allocation: 0,
            reserved: 0,
            offset: u64::MAX,
            len: 2,
        };
        assert!(view.content_bytes(&content).is_err());
        let first = view.contents().get(0).unwrap();
        assert_eq!(
            view.content_bytes(&first).unwrap(),
            &(0..0x20u8).collect::<Vec<_>>()[..]
        );
    }

    #[test]
    fn frame_names_are_one_per_frame_or_rejected() {
        let mut b = DumpBuilder::small();
        let bytes = b.to_bytes();
        let view = DumpView::parse(&bytes).unwrap();
        let names = view
            .frame_names()
            .unwrap()
            .expect("small() names its frames");
        assert_eq!(names.len(), view.frames().len());
        let first = view.string(names.get(1).unwrap().name).unwrap();
        assert_eq!(first, b"_ZN3app4main17h0123456789abcdefE");

        // One name too many: the section is refused, the rest still reads.
        b.frame_names.push(FrameNameRecord::default());
        let bytes = b.to_bytes();
        let view = DumpView::parse(&bytes).unwrap();
        let err = view.frame_names().unwrap_err().to_string();
        assert!(
            err.starts_with("section FrameNames at byte ")
                && err.ends_with(
                    "holds 4 names for the 3 records of Frames; they must be one per frame"
                ),
            "{err}"
        );
        assert_eq!(view.frames().len(), 3);

        // No section: no names, no error (version-1 dumps).
        b.frame_names.clear();
        let bytes = b.to_bytes();
        let view = DumpView::parse(&bytes).unwrap();
        assert!(view.frame_names().unwrap().is_none());
    }

    #[test]
    fn table_offsets_and_slices_saturate_instead_of_overflowing() {
        let bytes = DumpBuilder::small().to_bytes();
        let view = DumpView::parse(&bytes).unwrap();
        let allocations = view.allocations();
        assert_eq!(allocations.file_offset(usize::MAX), u64::MAX);
        assert!(allocations.slice(usize::MAX, usize::MAX).is_empty());
        assert_eq!(allocations.slice(1, usize::MAX).len(), 2);
        assert!(allocations.get(usize::MAX).is_none());
        assert!(view.stack_frames(u32::MAX).is_err());
    }

    #[test]
    fn read_errors_name_their_cause_once() {
        use std::error::Error as _;
        let missing = std::env::temp_dir().join("heapdump-formats-no-such-file.hdump");
        let err = Dump::open(&missing).unwrap_err();
        assert!(matches!(err, ReadError::Io { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", missing.display()))
        );
        // The cause is in the message; it is not also a source, so chain
        // printers do not repeat it.
        assert!(err.source().is_none());

        let garbage = std::env::temp_dir().join(format!(
            "heapdump-formats-garbage-{}.hdump",
            std::process::id()
        ));
        std::fs::write(&garbage, b"not a heap dump at all").unwrap();
        let err = Dump::open(&garbage).unwrap_err();
        let _ = std::fs::remove_file(&garbage);
        assert!(matches!(err, ReadError::Format { .. }), "{err:?}");
        assert!(err.source().is_none());
    }

    /// Resident KiB of the mapping that starts at `start`, from
    /// `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn resident_kib(start: *const u8) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{:x}-", start as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        assert!(lines.next().is_some(), "no mapping at {head}");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn released_pages_leave_the_resident_set_and_read_back_the_same_records() {
        let bytes = DumpBuilder::realistic(400_000).to_bytes();
        let path = std::env::temp_dir().join(format!(
            "heapdump-formats-release-{}.hdump",
            std::process::id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let dump = Dump::open(&path);
        let _ = std::fs::remove_file(&path);
        let dump = dump.unwrap();
        let in_memory = DumpView::parse(&bytes).unwrap();
        let view = dump.view();
        let start = dump.bytes().as_ptr();
        // The checksum pass read every byte; `open` released them.
        assert!(resident_kib(start) < 64, "{} KiB", resident_kib(start));

        let allocations: Vec<AllocationRecord> = view.allocations().iter().collect();
        // Pages at the ends of a released stretch may stay mapped (the
        // kernel maps a file's large folios whole, up to 2 MiB each).
        let allocation_kib = (view.allocations().len() * 24 / 1024) as u64;
        assert!(allocation_kib > 8 * 1024, "{allocation_kib} KiB");
        assert!(resident_kib(start) <= 4096, "{} KiB", resident_kib(start));
        assert_eq!(
            allocations,
            in_memory.allocations().iter().collect::<Vec<_>>()
        );
        let edges = view.edges();
        assert!(edges.len() * 12 > 4 << 20, "{} edges", edges.len());
        // A pass releases the stretches it has read (here the whole table
        // is one stretch, released as the pass starts and as it ends);
        // backwards too.
        let forward: Vec<EdgeRecord> = edges.iter().collect();
        assert!(resident_kib(start) <= 4096, "{} KiB", resident_kib(start));
        let mut backward: Vec<EdgeRecord> = edges.iter().rev().collect();
        backward.reverse();
        assert!(resident_kib(start) <= 4096, "{} KiB", resident_kib(start));
        assert_eq!(forward, backward);
        assert_eq!(forward, in_memory.edges().iter().collect::<Vec<_>>());
        // Random reads after a release see the file's bytes again.
        view.release_resident_pages();
        assert!(resident_kib(start) < 64, "{} KiB", resident_kib(start));
        for i in [0, edges.len() / 2, edges.len() - 1] {
            assert_eq!(edges.get(i), in_memory.edges().get(i));
        }
        assert_eq!(dump.bytes(), &bytes[..]);
    }
}
