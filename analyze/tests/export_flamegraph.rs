//! `toflamegraph` on the shared test dump: the SVG is read back as XML and
//! every frame's figures checked against the blocks built on purpose.

mod export_common;

use std::collections::BTreeMap;

use heapdump_analyze::export::flamegraph::{
    FlameGraphOptions, FlameView, FlameWeight, write_flamegraph,
};
use heapdump_analyze::export::{HeapModel, ModelOptions};
use heapdump_formats::read::Dump;
use heapdump_formats::records::AllocationRecord;
use heapdump_formats::testing::DumpBuilder;

use export_common::{frames_of, test_dump};

/// One drawn frame: its title, its level (0 = `all`), and its start and
/// width in the graph's units (`fg:x`, `fg:w`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Drawn {
    level: usize,
    x: u64,
    width: u64,
    title: String,
}

fn draw(model: &HeapModel<'_>, options: &FlameGraphOptions<'_, '_>) -> Vec<Drawn> {
    let mut out = Vec::new();
    write_flamegraph(model, options, &mut out).expect("flame graph");
    let svg = String::from_utf8(out).expect("utf-8 SVG");
    // inferno's SVG starts with the SVG 1.1 doctype.
    let xml = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(&svg, xml).expect("the SVG is well-formed XML");
    let frames = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("frames"))
        .expect("a frames element");
    let mut drawn: Vec<(u64, Drawn)> = Vec::new();
    for g in frames.children().filter(|n| n.has_tag_name("g")) {
        let title = g
            .children()
            .find(|n| n.has_tag_name("title"))
            .and_then(|t| t.text())
            .expect("every frame has a title")
            .to_owned();
        let rect = g
            .children()
            .find(|n| n.has_tag_name("rect"))
            .expect("every frame has a rect");
        let number = |name: &str| -> u64 {
            let (ns, local) = name.split_once(':').unwrap_or(("", name));
            rect.attributes()
                .find(|a| a.name() == local && (ns.is_empty() || a.namespace().is_some()))
                .and_then(|a| a.value().parse().ok())
                .unwrap_or_else(|| panic!("rect attribute {name}"))
        };
        drawn.push((
            number("y"),
            Drawn {
                level: 0,
                x: number("fg:x"),
                width: number("fg:w"),
                title,
            },
        ));
    }
    // Levels by height: the bottom one (largest y) is `all`.
    let mut ys: Vec<u64> = drawn.iter().map(|d| d.0).collect();
    ys.sort_unstable_by(|a, b| b.cmp(a));
    ys.dedup();
    let mut frames: Vec<Drawn> = drawn
        .into_iter()
        .map(|(y, mut d)| {
            d.level = ys.iter().position(|&l| l == y).unwrap();
            d
        })
        .collect();
    frames.sort();
    frames
}

fn titles(frames: &[Drawn]) -> Vec<(usize, u64, &str)> {
    frames
        .iter()
        .map(|d| (d.level, d.width, d.title.as_str()))
        .collect()
}

/// A dump without a scan holding `blocks` (size, stack) of the test
/// dump's stacks.
fn dump_of(blocks: &[(u64, u32)]) -> Dump {
    let mut b = DumpBuilder::default();
    b.process.pointer_size = 8;
    b.stack(&[]);
    for pc in 1..=4u64 {
        b.stack(&[0x1000 * pc]);
    }
    for (i, &(size, stack)) in blocks.iter().enumerate() {
        b.allocations.push(AllocationRecord {
            address: 0x1000 * (i as u64 + 1),
            size,
            sequence: i as u64,
            stack,
            thread: u32::MAX,
            align: 8,
            flags: 0,
        });
    }
    b.fix_totals();
    Dump::from_vec(b.to_bytes()).expect("parses")
}

#[test]
fn live_bytes_by_stack_outermost_first_with_bytes_blocks_and_share() {
    let dump = test_dump();
    let model = HeapModel::build(dump.view(), frames_of).expect("model");
    let frames = draw(&model, &FlameGraphOptions::default());
    // Allocator frames trimmed; inlined constructors are frames of their own.
    assert_eq!(
        titles(&frames),
        [
            (
                0,
                296,
                "all (296 bytes = 296 B, 7 blocks, 100.00% of bytes)"
            ),
            (
                1,
                64,
                "app::build (64 bytes = 64 B, 2 blocks, 21.62% of bytes)"
            ),
            (
                1,
                192,
                "app::fill (192 bytes = 192 B, 2 blocks, 64.86% of bytes)"
            ),
            (
                1,
                32,
                "app::make (32 bytes = 32 B, 2 blocks, 10.81% of bytes)"
            ),
            (1, 8, "app::name (8 bytes = 8 B, 1 block, 2.70% of bytes)"),
            (
                2,
                64,
                "new<app::Node> (inlined) (64 bytes = 64 B, 2 blocks, 21.62% of bytes)"
            ),
            (
                2,
                192,
                "with_capacity_in<u64, alloc::alloc::Global> (inlined) (192 bytes = 192 B, 2 blocks, 64.86% of bytes)"
            ),
            (
                2,
                8,
                "with_capacity_in<&str, alloc::alloc::Global> (inlined) (8 bytes = 8 B, 1 block, 2.70% of bytes)"
            ),
        ]
    );
}

#[test]
fn count_weighs_frames_by_blocks() {
    let dump = test_dump();
    let model = HeapModel::build(dump.view(), frames_of).expect("model");
    let options = FlameGraphOptions {
        weight: FlameWeight::Blocks,
        ..Default::default()
    };
    let widths: BTreeMap<String, u64> = draw(&model, &options)
        .into_iter()
        .filter(|d| d.level <= 1)
        .map(|d| (d.title.split(" (").next().unwrap().to_owned(), d.width))
        .collect();
    let expected: BTreeMap<String, u64> = [
        ("all", 7),
        ("app::build", 2),
        ("app::fill", 2),
        ("app::make", 2),
        ("app::name", 1),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into_iter()
    .collect();
    assert_eq!(widths, expected);
}

#[test]
fn diff_draws_the_newer_dump_and_titles_the_change() {
    // Old: one Vec<u64> of 64 bytes and one String. New: the Vec is joined
    // by another of 128 bytes, the String is gone, two blocks of make appear.
    let old = dump_of(&[(64, 2), (8, 4)]);
    let new = dump_of(&[(64, 2), (128, 2), (16, 3), (16, 3)]);
    let stacks_only = ModelOptions { graph: false };
    let base = HeapModel::build_with(old.view(), frames_of, &stacks_only).expect("old model");
    let model = HeapModel::build_with(new.view(), frames_of, &stacks_only).expect("model");
    let options = FlameGraphOptions {
        base: Some(&base),
        ..Default::default()
    };
    let frames = draw(&model, &options);
    // The String's path has no bytes left: it is not drawn, but counted
    // in `all`'s before.
    assert_eq!(
        titles(&frames)
            .into_iter()
            .filter(|f| f.0 <= 1)
            .collect::<Vec<_>>(),
        [
            (
                0,
                224,
                "all (224 bytes = 224 B, 4 blocks, 100.00% of bytes; before: 72 bytes, 2 blocks; change: +152 bytes, +2 blocks)"
            ),
            (
                1,
                192,
                "app::fill (192 bytes = 192 B, 2 blocks, 85.71% of bytes; before: 64 bytes, 1 blocks; change: +128 bytes, +1 blocks)"
            ),
            (
                1,
                32,
                "app::make (32 bytes = 32 B, 2 blocks, 14.29% of bytes; before: 0 bytes, 0 blocks; change: +32 bytes, +2 blocks)"
            ),
        ]
    );
}

#[test]
fn retained_follows_the_dominator_tree_by_type() {
    let dump = test_dump();
    let model = HeapModel::build(dump.view(), frames_of).expect("model");
    let options = FlameGraphOptions {
        view: FlameView::Retained,
        ..Default::default()
    };
    let frames = draw(&model, &options);
    // Blocks 0 and 1 (app::Node, each pointed to by a root) are one frame
    // as wide as their retained sizes together; the lost pair 3 -> 4 is one
    // frame of its type; block 2 is reached from 0 and from 1, so only the
    // roots dominate it.
    assert_eq!(
        titles(&frames),
        [
            (
                0,
                296,
                "all (296 bytes = 296 B, 7 blocks, 100.00% of bytes)"
            ),
            (
                1,
                64,
                "Vec<u64> buffer (64 bytes = 64 B, 1 block, 21.62% of bytes)"
            ),
            (
                1,
                32,
                "alloc@app::make:7 (32 bytes = 32 B, 2 blocks, 10.81% of bytes)"
            ),
            (
                1,
                200,
                "app::Node (200 bytes = 200 B, 4 blocks, 67.57% of bytes)"
            ),
            (
                2,
                136,
                "Vec<&str> buffer (136 bytes = 136 B, 2 blocks, 45.95% of bytes)"
            ),
            (
                3,
                128,
                "Vec<u64> buffer (128 bytes = 128 B, 1 block, 43.24% of bytes)"
            ),
        ]
    );
    assert_eq!(model.retained(0) + model.retained(1), 200);
    assert_eq!(model.retained(5), 136);
    assert_eq!(model.retained(3), 32);
}

#[test]
fn retained_needs_the_graph() {
    let dump = dump_of(&[(64, 2)]);
    let model = HeapModel::build_with(dump.view(), frames_of, &ModelOptions { graph: false })
        .expect("model");
    let options = FlameGraphOptions {
        view: FlameView::Retained,
        ..Default::default()
    };
    let error = write_flamegraph(&model, &options, &mut Vec::new()).unwrap_err();
    assert!(
        format!("{error:#}").contains("needs the heap graph"),
        "{error:#}"
    );
}
