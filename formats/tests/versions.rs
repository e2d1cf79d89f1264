//! Version 2 reads exactly as version 1 did: the same records, written by
//! the same calls, come back identical from a dump of either version, and a
//! version-2 dump full of escaped edges survives corruption like any other.

use heapdump_formats::read::DumpView;
use heapdump_formats::records::*;
use heapdump_formats::testing::{DumpBuilder, assert_survives_corruption, exercise};
use heapdump_formats::verify::verify;
use heapdump_formats::write::{DumpWriter, WriteError};

/// Every record of every table, as a reader sees it.
fn contents(view: &DumpView<'_>) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        view.process(),
        view.threads().iter().collect::<Vec<_>>(),
        view.modules().iter().collect::<Vec<_>>(),
        view.segments().iter().collect::<Vec<_>>(),
        view.allocations().iter().collect::<Vec<_>>(),
        view.stacks().iter().collect::<Vec<_>>(),
        view.frames().iter().collect::<Vec<_>>(),
        view.roots().iter().collect::<Vec<_>>(),
        view.edges().iter().collect::<Vec<_>>(),
        view.contents().iter().collect::<Vec<_>>(),
    )
}

/// `realistic(n)` plus edges that need escape records: root pointers into
/// the middle of blocks and unknown flag bits.
fn with_escapes(n: usize) -> DumpBuilder {
    let mut b = DumpBuilder::realistic(n);
    let big = b
        .allocations
        .iter()
        .position(|a| a.size > 0x2000)
        .map(|i| i as u32);
    for (i, edge) in b.edges.iter_mut().enumerate() {
        let target_size = b.allocations[edge.target as usize].size;
        if edge.flags & edge_flags::FROM_ROOT != 0 && i % 2 == 0 && target_size > 8 {
            edge.target_offset = 8;
        }
        if i % 11 == 0
            && let Some(big) = big
        {
            edge.target = big;
            edge.target_offset = 0x1008;
            // A flag bit this version does not know takes the escape too.
            edge.flags |= 0x80;
        }
    }
    b.edges.push(EdgeRecord {
        source: 0,
        target: 0,
        source_offset: 0,
        target_offset: 0,
        flags: edge_flags::FROM_ROOT | 0x100,
        reserved: 0,
    });
    b.sort_edges();
    b
}

#[test]
fn a_version_1_dump_reads_exactly_as_the_same_dump_in_version_2() {
    for builder in [DumpBuilder::small(), with_escapes(400)] {
        let mut v1 = builder.clone();
        v1.major = Some(1);
        let (old, new) = (v1.to_bytes(), builder.to_bytes());
        let (old, new) = (
            DumpView::parse(&old).unwrap(),
            DumpView::parse(&new).unwrap(),
        );
        assert_eq!(old.version().0, 1);
        assert_eq!(new.version().0, 2);
        assert_eq!(contents(&old), contents(&new));
        assert_eq!(verify(&old), Vec::new());
        assert_eq!(verify(&new), Vec::new());
        exercise(&new);
        // Random access and slices agree with iteration.
        let edges = new.edges();
        let all: Vec<_> = edges.iter().collect();
        for (i, edge) in all.iter().enumerate() {
            assert_eq!(edges.get(i).as_ref(), Some(edge));
        }
        let back: Vec<_> = edges.slice(3, edges.len()).iter().rev().collect();
        assert!(back.iter().rev().eq(all[3..].iter()));
        assert_eq!(old.edges().iter().collect::<Vec<_>>(), all);
    }
}

#[test]
fn version_2_is_24_bytes_per_allocation_and_12_per_edge_plus_escapes() {
    let builder = with_escapes(400);
    let bytes = builder.to_bytes();
    let view = DumpView::parse(&bytes).unwrap();
    let entry = |kind| view.section(kind).unwrap().entry;
    assert_eq!(entry(SectionKind::Allocations).record_size, 24);
    assert_eq!(entry(SectionKind::Edges).record_size, 12);
    let escapes = view.edge_escapes();
    assert!(escapes.len() > 20, "{} escapes", escapes.len());
    assert!(escapes.len() < view.edges().len() / 2);
    let escaped: Vec<u32> = escapes.iter().map(|e| e.edge).collect();
    assert!(escaped.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn a_version_2_dump_with_escaped_edges_survives_corruption() {
    let bytes = with_escapes(200).to_bytes();
    let report = assert_survives_corruption(&bytes);
    assert_eq!(report.truncations, bytes.len() as u64);
}

#[test]
fn a_missing_or_stray_escape_record_is_reported_by_verify() {
    let builder = with_escapes(100);
    let mut bytes = builder.to_bytes();
    let view = DumpView::parse(&bytes).unwrap();
    let escapes = view.section(SectionKind::EdgeEscapes).unwrap().entry;
    let first = view.edge_escapes().get(0).unwrap().edge;
    // Point the first escape record at edge 0, a start pointer, and
    // reseal so only the semantic check can tell.
    let at = escapes.offset as usize;
    bytes[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    let bytes = heapdump_formats::testing::reseal(&bytes);
    let view = DumpView::parse(&bytes).unwrap();
    let checks: Vec<_> = verify(&view).iter().map(|p| (p.check, p.index)).collect();
    assert!(
        checks.contains(&("edge_escapes.edge", Some(0))),
        "{checks:?}"
    );
    assert!(
        checks.contains(&("edges.escape", Some(u64::from(first)))),
        "{checks:?}"
    );
    // The edge whose record is gone reads with zero offsets, never a panic.
    let edge = view.edges().get(first as usize).unwrap();
    assert_eq!(
        (edge.source_offset, edge.target_offset, edge.flags),
        (0, 0, 0)
    );
}

#[test]
fn the_writer_refuses_what_version_2_cannot_hold_and_escapes_beyond_its_buffer() {
    let mut out = Vec::new();
    let mut buffer = [0u8; 256];
    let mut w = DumpWriter::new(&mut out, &mut buffer).unwrap();
    w.begin_section(SectionKind::Allocations).unwrap();
    let tagged = AllocationRecord {
        address: 0xB400_0070_0000_1000,
        size: 16,
        align: 16,
        ..Default::default()
    };
    assert_eq!(
        w.write_record(&tagged),
        Err(WriteError::DoesNotFit {
            kind: SectionKind::Allocations,
            field: "address"
        })
    );
    w.end_section().unwrap();
    w.begin_section(SectionKind::Edges).unwrap();
    let escaped = |source| EdgeRecord {
        source,
        target: 0,
        source_offset: 0,
        target_offset: 1 << 20,
        flags: 0,
        reserved: 0,
    };
    // 256 bytes hold a few escape records next to one record being batched.
    let mut written = 0;
    let error = loop {
        match w.write_record(&escaped(written)) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(error, WriteError::TooManyEscapes);
    // Room for one 12-byte record plus its escape must stay: (256 - 36) / 24
    // escapes fit, and the record that would need one more is refused.
    assert_eq!(written, (256 - 12 - 24) / 24 + 1);
    w.end_section().unwrap();
    w.section([ProcessRecord::default()]).unwrap();
    w.finish().unwrap();
    let view = DumpView::parse(&out).unwrap();
    assert_eq!(view.edge_escapes().len(), written as usize);
    let escape_problems = verify(&view)
        .iter()
        .filter(|p| p.check.starts_with("edge_escapes") || p.check == "edges.escape")
        .count();
    assert_eq!(escape_problems, 0);
    assert_eq!(view.edges().get(3).unwrap(), escaped(3));
}

#[test]
fn section_writes_any_number_of_escapes_through_a_small_buffer() {
    let escaped = |source| EdgeRecord {
        source,
        target: 0,
        source_offset: 8,
        target_offset: 1 << 20,
        flags: 0,
        reserved: 0,
    };
    let edges: Vec<EdgeRecord> = (0..100)
        .map(|i| {
            if i % 3 == 0 {
                EdgeRecord {
                    target_offset: 0,
                    ..escaped(i)
                }
            } else {
                escaped(i)
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut buffer = [0u8; 256];
    let mut w = DumpWriter::new(&mut out, &mut buffer).unwrap();
    w.section(edges.iter().copied()).unwrap();
    w.section([ProcessRecord::default()]).unwrap();
    w.finish().unwrap();
    let view = DumpView::parse(&out).unwrap();
    assert_eq!(view.edges().iter().collect::<Vec<_>>(), edges);
    assert_eq!(view.edge_escapes().len(), 66);
    let escape_problems = verify(&view)
        .iter()
        .filter(|p| p.check.starts_with("edge_escapes") || p.check == "edges.escape")
        .count();
    assert_eq!(escape_problems, 0);
}
