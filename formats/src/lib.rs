//! The `.hdump` heap snapshot format, from both sides.
//!
//! ```
//! use heapdump_formats::records::{ProcessRecord, SectionKind};
//! use heapdump_formats::write::DumpWriter;
//!
//! let mut file = Vec::new();
//! let mut buffer = [0u8; 4096];
//! let mut writer = DumpWriter::new(&mut file, &mut buffer).unwrap();
//! writer.section([ProcessRecord { pid: 42, ..Default::default() }]).unwrap();
//! writer.finish().unwrap();
//!
//! # #[cfg(feature = "read")] {
//! let dump = heapdump_formats::read::Dump::from_vec(file).unwrap();
//! assert_eq!(dump.view().process().pid, 42);
//! # }
//! ```
//!
//! - [`records`]: every record layout, described once (the spec in prose is
//!   `FORMAT.md`).
//! - [`constants`]: the format's vocabulary as named types (root and owner
//!   kinds, machines, registers, every record's flags), each with its
//!   names and a `Display`.
//! - [`packed`]: version 2's packed allocation and edge forms, which the
//!   writer and reader translate to and from the records transparently.
//! - [`mod@write`]: the allocation-free streaming writer used inside the traced
//!   process. Always available; no dependencies.
//! - [`read`] (feature `read`, on by default): the validating reader over a
//!   memory map.
//! - [`verify`] (feature `read`): the semantic rules a sound dump keeps,
//!   checked over a parsed dump.
//! - `testing` (feature `testing`): a dump builder, a realistic sample and
//!   the truncation/bit-flip robustness check, for this crate's tests, the
//!   end-to-end tests and the fuzz target.

pub mod constants;
pub mod crc32;
pub mod packed;
pub mod records;
pub mod write;

#[cfg(feature = "read")]
pub mod read;
#[cfg(all(feature = "read", any(test, feature = "testing")))]
pub mod testing;
#[cfg(feature = "read")]
pub mod verify;
