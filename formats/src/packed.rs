//! The packed record forms of format version 2: an allocation in 24 bytes
//! and an edge in 12 (FORMAT.md §7, "Allocations" and "Edges").
//!
//! Callers never see these forms: the writer packs the same
//! [`AllocationRecord`] and [`EdgeRecord`] that version 1 stores whole, and
//! the reader's tables unpack them on access, so code written against
//! version 1 reads and writes version 2 unchanged. The field widths are the
//! capture side's own (`heapdump-capture`'s live table keeps 48-bit
//! addresses and sizes, 40-bit sequences, 24-bit stack ids and 16-bit thread
//! indexes), so everything it records fits.

use crate::records::{
    AllocationRecord, EdgeEscapeRecord, EdgeRecord, Field, Record, UNKNOWN_THREAD, edge_flags,
};

/// How [`Record::encode_packed`] stored a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packed {
    /// The packed record holds every field.
    Whole,
    /// The packed edge is an escape: this record, in `EdgeEscapes`, holds
    /// what did not fit.
    Escape(EdgeEscapeRecord),
}

/// A field's value does not fit its packed form and the kind has no escape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoesNotFit {
    /// The field, as named in FORMAT.md.
    pub field: &'static str,
}

/// The `EdgeEscapes` section's bytes and record size, for looking up an
/// escaped edge's record.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapeRecords<'a> {
    /// The section's bytes (`count × record_size`).
    pub bytes: &'a [u8],
    /// Bytes per record (at least [`EdgeEscapeRecord::SIZE`]).
    pub record_size: usize,
}

impl EscapeRecords<'_> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.record_size.max(1)
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `index`, if it exists.
    pub fn get(&self, index: usize) -> Option<EdgeEscapeRecord> {
        let start = index.checked_mul(self.record_size)?;
        EdgeEscapeRecord::decode(
            self.bytes
                .get(start..start.checked_add(self.record_size)?)?,
        )
    }

    /// The escape record of edge `edge`, by binary search (the records are
    /// sorted by edge index). `None` if there is none, or the section is not
    /// sorted where the search looked (`verify` reports both).
    pub fn find(&self, edge: u64) -> Option<EdgeEscapeRecord> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let record = self.get(mid)?;
            match u64::from(record.edge).cmp(&edge) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Some(record),
            }
        }
        None
    }
}

const LOW40: u64 = (1 << 40) - 1;
const LOW48: u64 = (1 << 48) - 1;

/// The packed allocation: 24 bytes, three little-endian words.
///
/// | bytes | field |
/// |---|---|
/// | 0–5 | address (48 bits) |
/// | 6–7 | thread (16 bits; `0xFFFF` unknown) |
/// | 8–13 | size (48 bits) |
/// | 14 | log2(align) |
/// | 15 | flags |
/// | 16–20 | sequence (40 bits) |
/// | 21–23 | stack (24 bits) |
pub mod allocation {
    use super::*;

    /// Bytes per packed allocation.
    pub const SIZE: usize = 24;
    /// The packed thread index meaning [`UNKNOWN_THREAD`].
    pub const UNKNOWN_THREAD_PACKED: u64 = 0xFFFF;
    /// The alignment exponent byte of an alignment of 0 (a record that did
    /// not say; `AllocationRecord::default()` has it), kept so that it reads
    /// back as 0 rather than being refused.
    pub const ALIGN_ZERO_PACKED: u64 = 0xFF;

    /// Packs `record` into `out` (at least [`SIZE`] bytes). There is no
    /// escape: a value that does not fit is refused, never truncated.
    #[inline]
    pub fn encode(record: &AllocationRecord, out: &mut [u8]) -> Result<Packed, DoesNotFit> {
        let refuse = |field| Err(DoesNotFit { field });
        let Some(out) = out.get_mut(..SIZE) else {
            return refuse("record buffer");
        };
        if record.address > LOW48 {
            return refuse("address");
        }
        if record.size > LOW48 {
            return refuse("size");
        }
        if record.sequence > LOW40 {
            return refuse("sequence");
        }
        if record.stack >= 1 << 24 {
            return refuse("stack");
        }
        let thread = match record.thread {
            UNKNOWN_THREAD => UNKNOWN_THREAD_PACKED,
            t if u64::from(t) < UNKNOWN_THREAD_PACKED => u64::from(t),
            _ => return refuse("thread"),
        };
        let align_log2 = match record.align {
            0 => ALIGN_ZERO_PACKED,
            a if a.is_power_of_two() => u64::from(a.trailing_zeros()),
            _ => return refuse("align"),
        };
        let Ok(flags) = u8::try_from(record.flags) else {
            return refuse("flags");
        };
        let words = [
            record.address | thread << 48,
            record.size | align_log2 << 48 | u64::from(flags) << 56,
            record.sequence | u64::from(record.stack) << 40,
        ];
        for (word, dst) in words.iter().zip(out.chunks_exact_mut(8)) {
            word.put(dst);
        }
        Ok(Packed::Whole)
    }

    /// [`encode`] in the signature every packed kind shares.
    #[inline]
    pub fn encode_record(
        record: &AllocationRecord,
        out: &mut [u8],
        _index: u64,
    ) -> Result<Packed, DoesNotFit> {
        encode(record, out)
    }

    /// [`decode`] in the signature every packed kind shares.
    #[inline]
    pub fn decode_record(
        bytes: &[u8],
        _index: u64,
        _escapes: EscapeRecords<'_>,
    ) -> Option<AllocationRecord> {
        decode(bytes)
    }

    /// Unpacks the first [`SIZE`] bytes; `None` if `bytes` is shorter. An
    /// alignment exponent of 32 or more decodes as 0 (0xFF is how an
    /// alignment of 0 is written), which `verify` reports as not a power of
    /// two.
    #[inline]
    pub fn decode(bytes: &[u8]) -> Option<AllocationRecord> {
        let a = u64::get(bytes.get(0..8)?);
        let b = u64::get(bytes.get(8..16)?);
        let c = u64::get(bytes.get(16..24)?);
        let thread = a >> 48;
        Some(AllocationRecord {
            address: a & LOW48,
            size: b & LOW48,
            sequence: c & LOW40,
            stack: (c >> 40) as u32,
            thread: if thread == UNKNOWN_THREAD_PACKED {
                UNKNOWN_THREAD
            } else {
                thread as u32
            },
            align: 1u32.checked_shl(((b >> 48) & 0xFF) as u32).unwrap_or(0),
            flags: (b >> 56) as u32,
        })
    }
}

/// The packed edge: 12 bytes, `source: u32`, `target: u32`, then a `u32`
/// whose top two bits say how the offsets and the root flag are stored:
///
/// | tag (bits 30–31) | form | low 30 bits |
/// |---|---|---|
/// | `00` | start pointer from an allocation | source_offset |
/// | `01` | interior pointer from an allocation | source_offset / 8 (bits 0–12), target_offset (bits 13–29, never 0) |
/// | `10` | start pointer from a root | source_offset |
/// | `11` | escape: offsets and flags are in `EdgeEscapes` | zero |
pub mod edge {
    use super::*;

    /// Bytes per packed edge.
    pub const SIZE: usize = 12;
    /// Tag values (the word's top two bits).
    pub const TAG_START: u32 = 0b00;
    /// An interior pointer with small offsets.
    pub const TAG_INTERIOR: u32 = 0b01;
    /// A start pointer from a root.
    pub const TAG_ROOT_START: u32 = 0b10;
    /// The offsets and flags are in the edge's `EdgeEscapes` record.
    pub const TAG_ESCAPE: u32 = 0b11;
    /// Source offsets of the start forms are below this.
    pub const START_OFFSET_LIMIT: u64 = 1 << 30;
    /// The interior form's source offset is a multiple of 8 below this ...
    pub const INTERIOR_SOURCE_LIMIT: u64 = 8 << INTERIOR_SOURCE_WORD_BITS;
    /// ... and its target offset below this.
    pub const INTERIOR_TARGET_LIMIT: u64 = 1 << (30 - INTERIOR_SOURCE_WORD_BITS);
    /// Bits of the interior form that hold the source offset in 8-byte
    /// words (a scan reads aligned words); the other 17 hold the target
    /// offset, which hash tables' control pointers and slices push past
    /// 4 KiB (seen in the capture tests' dumps).
    const INTERIOR_SOURCE_WORD_BITS: u32 = 13;
    const LOW30: u32 = (1 << 30) - 1;

    /// The tag of a packed edge's third word.
    #[inline]
    pub fn tag(bytes: &[u8]) -> Option<u32> {
        Some(u32::get(bytes.get(8..12)?) >> 30)
    }

    /// Packs `record` into `out` (at least [`SIZE`] bytes). `index` is the
    /// edge's index in `Edges`: an edge that fits no inline form gets an
    /// escape record naming it.
    #[inline]
    pub fn encode(record: &EdgeRecord, out: &mut [u8], index: u64) -> Result<Packed, DoesNotFit> {
        let Some(out) = out.get_mut(..SIZE) else {
            return Err(DoesNotFit {
                field: "record buffer",
            });
        };
        let from_root = record.flags == edge_flags::FROM_ROOT;
        let (tag, low, packed) = if record.flags == 0
            && record.target_offset == 0
            && record.source_offset < START_OFFSET_LIMIT
        {
            (TAG_START, record.source_offset as u32, Packed::Whole)
        } else if record.flags == 0
            && record.target_offset != 0
            && record.target_offset < INTERIOR_TARGET_LIMIT
            && record.source_offset < INTERIOR_SOURCE_LIMIT
            && record.source_offset.is_multiple_of(8)
        {
            let low = (record.source_offset / 8) as u32
                | (record.target_offset as u32) << INTERIOR_SOURCE_WORD_BITS;
            (TAG_INTERIOR, low, Packed::Whole)
        } else if from_root
            && record.target_offset == 0
            && record.source_offset < START_OFFSET_LIMIT
        {
            (TAG_ROOT_START, record.source_offset as u32, Packed::Whole)
        } else {
            let Ok(edge) = u32::try_from(index) else {
                return Err(DoesNotFit {
                    field: "edge index",
                });
            };
            let escape = EdgeEscapeRecord {
                edge,
                flags: record.flags,
                source_offset: record.source_offset,
                target_offset: record.target_offset,
            };
            (TAG_ESCAPE, 0, Packed::Escape(escape))
        };
        let (source, rest) = out.split_at_mut(4);
        let (target, rest) = rest.split_at_mut(4);
        record.source.put(source);
        record.target.put(target);
        (tag << 30 | low).put(rest);
        Ok(packed)
    }

    /// [`encode`] in the signature every packed kind shares.
    #[inline]
    pub fn encode_record(
        record: &EdgeRecord,
        out: &mut [u8],
        index: u64,
    ) -> Result<Packed, DoesNotFit> {
        encode(record, out, index)
    }

    /// [`decode`] in the signature every packed kind shares.
    #[inline]
    pub fn decode_record(
        bytes: &[u8],
        index: u64,
        escapes: EscapeRecords<'_>,
    ) -> Option<EdgeRecord> {
        decode(bytes, index, escapes)
    }

    /// Unpacks the first [`SIZE`] bytes of edge `index`; `None` if `bytes`
    /// is shorter. An escape whose record is missing from `escapes` reads
    /// with offsets and flags 0 (`verify` reports it as `edges.escape`).
    #[inline]
    pub fn decode(bytes: &[u8], index: u64, escapes: EscapeRecords<'_>) -> Option<EdgeRecord> {
        let source = u32::get(bytes.get(0..4)?);
        let target = u32::get(bytes.get(4..8)?);
        let word = u32::get(bytes.get(8..12)?);
        let low = word & LOW30;
        let (source_offset, target_offset, flags) = match word >> 30 {
            TAG_START => (u64::from(low), 0, 0),
            TAG_INTERIOR => {
                let words = low & ((1 << INTERIOR_SOURCE_WORD_BITS) - 1);
                (
                    u64::from(words) * 8,
                    u64::from(low >> INTERIOR_SOURCE_WORD_BITS),
                    0,
                )
            }
            TAG_ROOT_START => (u64::from(low), 0, edge_flags::FROM_ROOT),
            _ => match escapes.find(index) {
                Some(e) => (e.source_offset, e.target_offset, e.flags),
                None => (0, 0, 0),
            },
        };
        Some(EdgeRecord {
            source,
            target,
            source_offset,
            target_offset,
            flags,
            reserved: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::allocation_flags;

    #[test]
    fn allocations_round_trip_at_the_limits_of_every_field() {
        let record = AllocationRecord {
            address: LOW48,
            size: LOW48,
            sequence: LOW40,
            stack: (1 << 24) - 1,
            thread: 0xFFFE,
            align: 1 << 31,
            flags: allocation_flags::ZEROED | allocation_flags::REALLOCATED,
        };
        let mut bytes = [0u8; allocation::SIZE];
        assert_eq!(allocation::encode(&record, &mut bytes), Ok(Packed::Whole));
        assert_eq!(allocation::decode(&bytes), Some(record));
        let unknown = AllocationRecord {
            thread: UNKNOWN_THREAD,
            align: 0,
            ..record
        };
        assert_eq!(allocation::encode(&unknown, &mut bytes), Ok(Packed::Whole));
        assert_eq!(&bytes[6..8], &[0xFF, 0xFF]);
        assert_eq!(allocation::decode(&bytes), Some(unknown));
        assert_eq!(allocation::decode(&bytes[..23]), None);
    }

    #[test]
    fn allocation_values_that_do_not_fit_are_refused_and_name_their_field() {
        let sound = AllocationRecord {
            address: 0x1000,
            size: 16,
            sequence: 1,
            align: 8,
            ..Default::default()
        };
        let cases: [(&str, AllocationRecord); 7] = [
            (
                "address",
                AllocationRecord {
                    address: 1 << 48,
                    ..sound
                },
            ),
            (
                "size",
                AllocationRecord {
                    size: 1 << 48,
                    ..sound
                },
            ),
            (
                "sequence",
                AllocationRecord {
                    sequence: 1 << 40,
                    ..sound
                },
            ),
            (
                "stack",
                AllocationRecord {
                    stack: 1 << 24,
                    ..sound
                },
            ),
            (
                "thread",
                AllocationRecord {
                    thread: 0xFFFF,
                    ..sound
                },
            ),
            ("align", AllocationRecord { align: 24, ..sound }),
            (
                "flags",
                AllocationRecord {
                    flags: 0x100,
                    ..sound
                },
            ),
        ];
        for (field, record) in cases {
            let mut bytes = [0u8; allocation::SIZE];
            assert_eq!(
                allocation::encode(&record, &mut bytes),
                Err(DoesNotFit { field }),
                "{record:?}"
            );
        }
    }

    #[test]
    fn edges_take_the_smallest_form_that_holds_them_and_round_trip() {
        let edge = |source_offset, target_offset, flags| EdgeRecord {
            source: 7,
            target: 9,
            source_offset,
            target_offset,
            flags,
            reserved: 0,
        };
        let root = edge_flags::FROM_ROOT;
        let cases = [
            (edge(0, 0, 0), edge::TAG_START),
            (edge((1 << 30) - 1, 0, 0), edge::TAG_START),
            (edge(1 << 30, 0, 0), edge::TAG_ESCAPE),
            (edge(8, 16, 0), edge::TAG_INTERIOR),
            (edge(360, 10224, 0), edge::TAG_INTERIOR),
            (edge((1 << 16) - 8, (1 << 17) - 1, 0), edge::TAG_INTERIOR),
            (edge(1 << 16, 8, 0), edge::TAG_ESCAPE),
            (edge(8, 1 << 17, 0), edge::TAG_ESCAPE),
            (edge(12, 8, 0), edge::TAG_ESCAPE),
            (edge(1 << 40, 1 << 40, 0), edge::TAG_ESCAPE),
            (edge(56, 0, root), edge::TAG_ROOT_START),
            (edge(56, 8, root), edge::TAG_ESCAPE),
            (edge(56, 0, root | 0x80), edge::TAG_ESCAPE),
        ];
        for (index, (record, tag)) in cases.into_iter().enumerate() {
            let mut bytes = [0u8; edge::SIZE];
            let packed = edge::encode(&record, &mut bytes, index as u64).unwrap();
            assert_eq!(edge::tag(&bytes), Some(tag), "{record:?}");
            let mut escape_bytes = [0u8; EdgeEscapeRecord::SIZE];
            if let Packed::Escape(escape) = packed {
                assert_eq!(escape.edge, index as u32);
                escape.encode(&mut escape_bytes);
            }
            let escapes = EscapeRecords {
                bytes: if tag == edge::TAG_ESCAPE {
                    &escape_bytes
                } else {
                    &[]
                },
                record_size: EdgeEscapeRecord::SIZE,
            };
            assert_eq!(
                edge::decode(&bytes, index as u64, escapes),
                Some(record),
                "{record:?}"
            );
        }
    }

    #[test]
    fn an_escape_without_its_record_reads_as_zero_offsets() {
        let record = EdgeRecord {
            source: 1,
            target: 2,
            source_offset: 1 << 33,
            target_offset: 0,
            flags: 0,
            reserved: 0,
        };
        let mut bytes = [0u8; edge::SIZE];
        edge::encode(&record, &mut bytes, 3).unwrap();
        let decoded = edge::decode(&bytes, 3, EscapeRecords::default()).unwrap();
        assert_eq!((decoded.source, decoded.target), (1, 2));
        assert_eq!((decoded.source_offset, decoded.target_offset), (0, 0));
    }
}
