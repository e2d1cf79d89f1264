//! A dump cut at any byte, or with any byte flipped, gives a clear error or
//! a correct result: never a panic, a hang or an out-of-bounds read.
//!
//! The core is `heapdump_formats::testing::check_corruption`, which the
//! end-to-end tests also run over real dumps from `heapdump-capture`. Set
//! `HEAPDUMP_CORRUPTION_DUMP=/path/to/file.hdump` to run it over any dump here.

use heapdump_formats::read::{DumpView, FormatError};
use heapdump_formats::records::*;
use heapdump_formats::testing::{
    CorruptionOptions, DumpBuilder, assert_survives_corruption, check_corruption, exercise,
    uncovered_bytes,
};
use heapdump_formats::verify::verify;

#[test]
fn small_dump_survives_truncation_at_every_offset_and_every_byte_flipped() {
    let bytes = DumpBuilder::small().to_bytes();
    let report = check_corruption(
        &bytes,
        &CorruptionOptions {
            every_byte_up_to: usize::MAX,
            masks: vec![0x01, 0x02, 0x10, 0x80, 0xff],
            ..Default::default()
        },
    );
    eprintln!("{} bytes: {report:?}", bytes.len());
    assert_eq!(report.truncations, bytes.len() as u64);
    assert_eq!(report.flips, bytes.len() as u64 * 5);
    // Only the minor version and the padding go unchecked, and flipping
    // them changes nothing a reader returns.
    let view = DumpView::parse(&bytes).unwrap();
    let uncovered: usize = uncovered_bytes(&view).iter().map(|r| r.len()).sum();
    assert_eq!(report.flips_in_uncovered_bytes, uncovered as u64 * 5);
    assert!(report.resealed_parsed > 0);
}

#[test]
fn realistic_dump_survives_truncation_and_dense_flips() {
    let builder = DumpBuilder::realistic(400);
    assert!(builder.edges.len() > 300, "{} edges", builder.edges.len());
    let bytes = builder.to_bytes();
    assert!(verify(&DumpView::parse(&bytes).unwrap()).is_empty());
    let report = assert_survives_corruption(&bytes);
    eprintln!("{} bytes: {report:?}", bytes.len());
    assert_eq!(report.truncations, bytes.len() as u64);
    assert!(report.flips >= 3 * 3000, "{report:?}");
}

#[test]
fn every_strict_prefix_names_what_is_missing() {
    let bytes = DumpBuilder::small().to_bytes();
    for n in [0, 1, 39] {
        assert_eq!(
            DumpView::parse(&bytes[..n]).unwrap_err(),
            FormatError::TooShort {
                len: n as u64,
                min: 40
            }
        );
    }
    let n = bytes.len() - 1;
    let err = DumpView::parse(&bytes[..n]).unwrap_err();
    assert_eq!(
        err,
        FormatError::Truncated {
            offset: n as u64 - 8
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "no end marker at byte {}: the dump is truncated (the writer died or the copy was cut short)",
            n - 8
        )
    );
}

#[test]
fn a_flipped_section_byte_is_reported_with_section_and_offset() {
    let bytes = DumpBuilder::small().to_bytes();
    let view = DumpView::parse(&bytes).unwrap();
    let allocations = view.section(SectionKind::Allocations).unwrap().entry;
    let mut copy = bytes.clone();
    copy[allocations.offset as usize + 3] ^= 0x40;
    assert_eq!(
        DumpView::parse(&copy).unwrap_err().to_string(),
        format!(
            "section Allocations at byte {}: checksum mismatch: the section's bytes are corrupt",
            allocations.offset
        )
    );
}

/// One section for [`assemble`]: (kind, record_size, count, body).
type RawSection = (u32, u32, u64, Vec<u8>);

/// A dump assembled by hand from FORMAT.md, independently of `DumpWriter`.
fn assemble(sections: &[RawSection]) -> Vec<u8> {
    use heapdump_formats::crc32::crc32;
    let mut out = Vec::new();
    out.extend_from_slice(b"\x89HDUMP\r\n");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&7u16.to_le_bytes()); // a future minor version
    out.extend_from_slice(&0x0A0B_0C0Du32.to_le_bytes());
    let mut table = Vec::new();
    for (kind, record_size, count, body) in sections {
        while out.len() % 8 != 0 {
            out.push(0);
        }
        table.extend_from_slice(&kind.to_le_bytes());
        table.extend_from_slice(&record_size.to_le_bytes());
        table.extend_from_slice(&(out.len() as u64).to_le_bytes());
        table.extend_from_slice(&(body.len() as u64).to_le_bytes());
        table.extend_from_slice(&count.to_le_bytes());
        table.extend_from_slice(&crc32(body).to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(body);
    }
    while out.len() % 8 != 0 {
        out.push(0);
    }
    let table_offset = out.len() as u64;
    out.extend_from_slice(&table);
    out.extend_from_slice(&table_offset.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&table).to_le_bytes());
    out.extend_from_slice(b"HDUMPEND");
    out
}

#[test]
fn newer_minor_versions_with_longer_records_and_unknown_sections_are_read() {
    // Process: 152 known bytes + 8 appended by a "future" minor version.
    let mut process = vec![0u8; ProcessRecord::SIZE + 8];
    ProcessRecord {
        pid: 77,
        live_count: 2,
        live_bytes: 32,
        ..Default::default()
    }
    .encode(&mut process);
    process[ProcessRecord::SIZE..].fill(0xee);
    // Two allocations of 48 bytes (40 known + 8 new).
    let mut allocations = vec![0u8; 2 * 48];
    for (i, chunk) in allocations.chunks_mut(48).enumerate() {
        AllocationRecord {
            address: 0x1000 + 0x100 * i as u64,
            size: 16,
            sequence: i as u64,
            align: 8,
            thread: UNKNOWN_THREAD,
            ..Default::default()
        }
        .encode(chunk);
        chunk[40..].fill(0xaa);
    }
    let bytes = assemble(&[
        (999, 12, 2, vec![0x55; 24]),
        (SectionKind::Allocations as u32, 48, 2, allocations),
        (SectionKind::Process as u32, 160, 1, process),
        (1000, 0, 5, b"bytes".to_vec()),
    ]);
    let view = DumpView::parse(&bytes).unwrap();
    assert_eq!(view.version(), (1, 7));
    assert_eq!(view.process().pid, 77);
    let addresses: Vec<u64> = view.allocations().iter().map(|a| a.address).collect();
    assert_eq!(addresses, [0x1000, 0x1100]);
    assert_eq!(view.sections().len(), 4);
    assert_eq!(view.sections()[0].kind, None);
    assert!(verify(&view).is_empty(), "{:?}", verify(&view));
    exercise(&view);
    check_corruption(
        &bytes,
        &CorruptionOptions {
            every_byte_up_to: usize::MAX,
            ..Default::default()
        },
    );
}

#[test]
fn structural_lies_in_the_table_are_errors() {
    let process = {
        let mut p = vec![0u8; ProcessRecord::SIZE];
        ProcessRecord::default().encode(&mut p);
        p
    };
    let p = SectionKind::Process as u32;
    let cases: Vec<(Vec<RawSection>, &str)> = vec![
        (vec![], "the required Process section is missing"),
        (
            vec![(p, 152, 1, process.clone()), (p, 152, 1, process.clone())],
            "appears twice in the section table",
        ),
        (
            vec![(p, 144, 1, process[..144].to_vec())],
            "records are 144 bytes, smaller than the 152 bytes",
        ),
        (
            vec![(p, 152, 2, process.clone())],
            "2 records of 152 bytes do not fill its 152 bytes",
        ),
        (
            vec![(p, 76, 2, process.clone())],
            "records are 76 bytes, smaller than the 152 bytes",
        ),
        (
            vec![(p, 152, 1, process.clone()), (1, 8, 1, vec![0; 8])],
            "is a byte section but claims 8-byte records",
        ),
    ];
    for (sections, expected) in cases {
        let err = DumpView::parse(&assemble(&sections))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
}

#[test]
fn a_dump_named_by_the_environment_survives_corruption() {
    let Some(path) = std::env::var_os("HEAPDUMP_CORRUPTION_DUMP") else {
        eprintln!("HEAPDUMP_CORRUPTION_DUMP not set; skipping");
        return;
    };
    let bytes = std::fs::read(&path).expect("read HEAPDUMP_CORRUPTION_DUMP");
    let report = assert_survives_corruption(&bytes);
    eprintln!(
        "{}: {} bytes: {report:?}",
        path.to_string_lossy(),
        bytes.len()
    );
}

#[test]
fn resealing_a_sound_dump_changes_nothing_and_garbage_does_not_panic() {
    let bytes = DumpBuilder::realistic(30).to_bytes();
    assert_eq!(heapdump_formats::testing::reseal(&bytes), bytes);
    let mut rng = heapdump_formats::testing::SplitMix64(9);
    for n in [0, 1, 23, 24, 25, 64, 200] {
        let garbage: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        let _ = heapdump_formats::testing::parse_and_exercise(&heapdump_formats::testing::reseal(
            &garbage,
        ));
    }
    // A flipped record with resealed checksums parses, and verify names it.
    let mut builder = DumpBuilder::small();
    builder.allocations[1].thread = 9;
    builder.fix_totals();
    let broken = builder.to_bytes();
    let view = DumpView::parse(&broken).unwrap();
    let problems = verify(&view);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].check, "allocations.thread");
}

#[test]
fn a_large_dump_is_checked_within_the_parse_budget() {
    let bytes = DumpBuilder::realistic(20_000).to_bytes();
    let options = CorruptionOptions {
        max_parse_bytes: 64 << 20,
        ..Default::default()
    };
    let report = check_corruption(&bytes, &options);
    eprintln!("{} bytes: {report:?}", bytes.len());
    // Header, table, trailer and section edges at least; not thousands.
    assert!(report.flips >= 3 * 200, "{report:?}");
    assert!(report.flips <= 3 * 1500, "{report:?}");
}
