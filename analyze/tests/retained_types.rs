//! `top --retained`'s types, `top --by type` and `diff --by type` through the library, on
//! heaps built on purpose whose stacks are given typed frames (the
//! exports' test frames), so exact retained bytes per type can be checked.

mod export_common;

use export_common::{STD, frame};
use heapdump_analyze::analysis::HeapAnalysis;
use heapdump_analyze::heuristics::Heuristics;
use heapdump_analyze::report::diff::{DiffBy, DiffKey, DiffReport};
use heapdump_analyze::report::retained::{RetainedOptions, RetainedReport, RetainedType};
use heapdump_analyze::report::retainers::RetainersReport;
use heapdump_analyze::report::top::{GroupBy, TopOptions, TopReport};
use heapdump_analyze::symbolize::Frame;
use heapdump_formats::read::Dump;
use heapdump_formats::records::{
    AllocationRecord, EdgeRecord, ProcessRecord, RootRecord, StrRef, ThreadRecord, edge_flags,
    machine, owner_kind, process_flags, root_kind, thread_flags,
};
use heapdump_formats::testing::DumpBuilder;

/// Stacks 1-4 as the export tests name them (1 boxes an `app::Node` in
/// `app::build`, 2 makes a `Vec<u64>` buffer in `app::fill`, 3 is
/// `alloc@app::make:7`, 4 a `Vec<&str>` buffer); stack 5 boxes an
/// `app::Node` too, but in `app::grow`: same type, another site.
fn frames_of(stack: u32) -> anyhow::Result<Vec<Frame>> {
    if stack != 5 {
        return export_common::frames_of(stack);
    }
    Ok(vec![
        frame("__rust_alloc", "/app/src/main.rs", 1, true),
        frame(
            "new<app::Node>",
            &format!("{STD}/alloc/src/boxed.rs"),
            2,
            true,
        ),
        frame("app::grow", "/app/src/main.rs", 40, false),
    ])
}

const NODE: u32 = 1;
const VEC: u32 = 2;
const UNTYPED: u32 = 3;
const STRING: u32 = 4;
const NODE_ELSEWHERE: u32 = 5;

/// A heap under one thread-stack root, block `i` at `0x1000 * (i + 1)`.
struct Heap {
    b: DumpBuilder,
}

impl Heap {
    fn new(dump_number: u32) -> Heap {
        let mut b = DumpBuilder::default();
        let name = b.string(b"main");
        b.process = ProcessRecord {
            pid: 9,
            pointer_size: 8,
            page_size: 4096,
            machine: 62,
            flags: process_flags::HAS_SCAN | process_flags::WORLD_STOPPED,
            dump_number,
            next_sequence: 1000,
            ..Default::default()
        };
        b.threads.push(ThreadRecord {
            tid: 9,
            flags: thread_flags::ALIVE | thread_flags::MAIN | thread_flags::DUMPING,
            name,
            ..Default::default()
        });
        b.stack(&[]);
        for pc in 1..=5u64 {
            b.stack(&[0x1000 * pc]);
        }
        b.roots.push(RootRecord {
            kind: root_kind::THREAD_STACK,
            owner_kind: owner_kind::THREAD,
            owner: 0,
            address: 0x7000_0000,
            size: 0x1000,
            name: StrRef::EMPTY,
            reserved: 0,
        });
        Heap { b }
    }

    /// Block `i` (allocations must be added in address order).
    fn alloc(&mut self, i: u64, size: u64, stack: u32) {
        self.b.allocations.push(AllocationRecord {
            address: 0x1000 * (i + 1),
            size,
            sequence: i,
            stack,
            thread: 0,
            align: 8,
            flags: 0,
        });
    }

    fn edge(&mut self, source: u32, target: u32, source_offset: u64) {
        self.b.edges.push(EdgeRecord {
            source,
            target,
            source_offset,
            target_offset: 0,
            flags: 0,
            reserved: 0,
        });
    }

    fn root(&mut self, target: u32, source_offset: u64) {
        self.b.edges.push(EdgeRecord {
            source: 0,
            target,
            source_offset,
            target_offset: 0,
            flags: edge_flags::FROM_ROOT,
            reserved: 0,
        });
    }

    fn dump(mut self) -> Dump {
        self.b.sort_edges();
        self.b.fix_totals();
        Dump::from_vec(self.b.to_bytes()).expect("the test dump parses")
    }
}

/// Blocks:
///
/// - 0-6: a binary tree of 32-byte `app::Node`s (`i -> 2i+1, 2i+2`) whose
///   root, block 0, the stack points to; 5 and 6 allocated in `app::grow`,
///   the rest in `app::build`;
/// - 7: a 64-byte `Vec<u64>` buffer of leaf 3;
/// - 8: a 128-byte `Vec<u64>` buffer on the stack, holding 9, a 256-byte
///   `Vec<u64>` buffer (a vector of vectors);
/// - 10: a 16-byte `String` buffer both leaves 5 and 6 point to;
/// - 11: 24 untyped bytes nothing points to (definitely lost).
///
/// 712 live bytes.
fn tree_heap(dump_number: u32) -> Heap {
    let mut h = Heap::new(dump_number);
    for i in 0..7 {
        h.alloc(i, 32, if i >= 5 { NODE_ELSEWHERE } else { NODE });
    }
    h.alloc(7, 64, VEC);
    h.alloc(8, 128, VEC);
    h.alloc(9, 256, VEC);
    h.alloc(10, 16, STRING);
    h.alloc(11, 24, UNTYPED);
    for i in 0..3 {
        h.edge(i, 2 * i + 1, 8);
        h.edge(i, 2 * i + 2, 16);
    }
    h.edge(3, 7, 24);
    h.edge(8, 9, 0);
    h.edge(5, 10, 0);
    h.edge(6, 10, 0);
    h.root(0, 0x10);
    h.root(8, 0x18);
    h
}

fn type_row<'r>(rows: &'r [RetainedType], name: &str) -> &'r RetainedType {
    rows.iter()
        .find(|r| r.type_name == name)
        .unwrap_or_else(|| panic!("no type row {name} in {rows:#?}"))
}

/// `top --retained -n 10`, grouped.
const TOP_10: RetainedOptions = RetainedOptions {
    limit: 10,
    per_object: false,
};

#[test]
fn a_tree_of_boxed_nodes_retains_its_nodes_once_as_a_type() {
    let dump = tree_heap(1).dump();
    let view = dump.view();
    let analysis = HeapAnalysis::new(&view, &Heuristics::default(), true, &mut frames_of).unwrap();
    let mut frames = frames_of;
    let report = RetainedReport::build(&view, &analysis, &mut frames, &TOP_10).unwrap();
    assert_eq!(report.warnings, Vec::<String>::new());
    assert_eq!(report.total_bytes, 712);

    // The tree's root retains the 7 nodes, the leaf's vector and the
    // shared string: the app::Node row is that, once, from both sites'
    // nodes, not the 768 bytes the 7 nodes' retained sizes add up to.
    let tree = analysis.dominators.as_ref().unwrap();
    let each: u64 = (0..7).map(|i| tree.retained(i)).sum();
    assert_eq!(each, 768);
    let summary: Vec<(&str, u64, u64, bool)> = report
        .types
        .iter()
        .map(|r| (r.type_name.as_str(), r.retained, r.objects, r.recovered))
        .collect();
    assert_eq!(
        summary,
        [
            // Blocks 8 (retaining 9) and 7: 384 + 64, not + 256 again.
            ("Vec<u64> buffer", 448, 2, true),
            ("app::Node", 7 * 32 + 64 + 16, 1, true),
            ("alloc@app::make:7", 24, 1, false),
            ("Vec<&str> buffer", 16, 1, true),
        ]
    );
    let node = type_row(&report.types, "app::Node");
    assert!((node.percent - 304.0 * 100.0 / 712.0).abs() < 1e-9);

    // Sites split the nodes by where they were allocated: app::grow's
    // leaves 5 and 6 are not under one another, so both count.
    let sites: Vec<(&str, u64, u64)> = report
        .sites
        .iter()
        .map(|r| (r.site.function.as_str(), r.retained, r.objects))
        .collect();
    assert_eq!(
        sites,
        [
            ("app::fill", 448, 2),
            ("app::build", 304, 1),
            ("app::grow", 64, 2),
            ("app::make", 24, 1),
            ("app::name", 16, 1),
        ]
    );

    let text = report.to_string();
    assert!(text.contains("\ntypes retaining the most:\n"), "{text}");
    assert!(
        text.contains("           304      304 B  42.7%         1  app::Node\n"),
        "{text}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["types"][1],
        serde_json::json!({
            "retained": 304,
            "percent": 304.0 * 100.0 / 712.0,
            "objects": 1,
            "type": "app::Node",
            "recovered": true,
        })
    );
}

#[test]
fn diff_by_type_merges_sites_of_one_type_and_by_site_keeps_them_apart() {
    let old = tree_heap(1).dump();
    // NEW: two more nodes (allocated in app::grow) under leaves 3 and 4;
    // the 256-byte vector and the lost block are freed.
    let mut new = Heap::new(2);
    for i in 0..7 {
        new.alloc(i, 32, if i >= 5 { NODE_ELSEWHERE } else { NODE });
    }
    new.alloc(7, 64, VEC);
    new.alloc(8, 128, VEC);
    new.alloc(10, 16, STRING);
    new.alloc(12, 32, NODE_ELSEWHERE);
    new.alloc(13, 32, NODE_ELSEWHERE);
    // Indexes: 0-6 nodes, 7 and 8 vectors, 9 string, 10 and 11 new nodes.
    for i in 0..3 {
        new.edge(i, 2 * i + 1, 8);
        new.edge(i, 2 * i + 2, 16);
    }
    new.edge(3, 7, 24);
    new.edge(5, 9, 0);
    new.edge(6, 9, 0);
    new.edge(3, 10, 8);
    new.edge(4, 11, 8);
    new.root(0, 0x10);
    new.root(8, 0x18);
    let new = new.dump();
    let (old_view, new_view) = (old.view(), new.view());

    let diff = |by| {
        let report = DiffReport::build(
            &old_view,
            "old.hdump",
            &mut frames_of,
            &new_view,
            "new.hdump",
            &mut frames_of,
            by,
            20,
        );
        assert_eq!(report.warnings, Vec::<String>::new());
        report
    };

    let by_type = diff(DiffBy::Type);
    assert_eq!(by_type.new_objects, 2);
    assert_eq!(by_type.new_object_bytes, 64);
    let rows: Vec<(DiffKey, i64, i64, u64, u64)> = by_type
        .rows
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                r.delta_bytes,
                r.delta_count,
                r.new_objects,
                r.new_object_bytes,
            )
        })
        .collect();
    let ty = |s: &str| DiffKey::Type(s.to_owned());
    assert_eq!(
        rows,
        [
            (ty("app::Node"), 64, 2, 2, 64),
            (ty("alloc@app::make:7"), -24, -1, 0, 0),
            (ty("Vec<u64> buffer"), -256, -1, 0, 0),
        ]
    );
    let node = &by_type.rows[0];
    assert_eq!(
        (
            node.old_bytes,
            node.old_count,
            node.new_bytes,
            node.new_count
        ),
        (224, 7, 288, 9)
    );
    let json = serde_json::to_value(&by_type).unwrap();
    assert_eq!(json["by"], "type");
    assert_eq!(json["rows"][0]["type"], "app::Node");
    assert!(json["rows"][0].get("site").is_none());
    let text = by_type.to_string();
    assert!(text.contains("  type\n"), "{text}");
    assert!(
        text.contains("           +64        +2             64         2  app::Node\n"),
        "{text}"
    );

    // By site, the new nodes are app::grow's and app::build's nodes did not change.
    let by_site = diff(DiffBy::Site);
    let rows: Vec<(String, i64)> = by_site
        .rows
        .iter()
        .map(|r| match &r.key {
            DiffKey::Site(site) => (site.function.clone(), r.delta_bytes),
            DiffKey::Type(t) => panic!("a type row {t} in a diff by site"),
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("app::grow".to_owned(), 64),
            ("app::make".to_owned(), -24),
            ("app::fill".to_owned(), -256),
        ]
    );
    let json = serde_json::to_value(&by_site).unwrap();
    assert_eq!(json["by"], "site");
    assert_eq!(json["rows"][0]["site"]["function"], "app::grow");
    assert_eq!(json["rows"][0]["site"]["line"], 40);
    assert!(json["rows"][0].get("type").is_none());
}

/// The test frames, with `app::Node`'s layout as DWARF would give it: a
/// pointer `left` at 8 and `right` at 16.
struct NodeLayout;

impl heapdump_analyze::stacks::StackFrames for NodeLayout {
    fn stack_frames(
        &mut self,
        _: &heapdump_formats::read::DumpView<'_>,
        stack: u32,
    ) -> anyhow::Result<Vec<Frame>> {
        frames_of(stack)
    }

    fn field_of(&self, ty: &heapdump_analyze::types::TypeName, offset: u64) -> Option<String> {
        match (ty.argument.as_str(), offset) {
            ("app::Node", 8) => Some("left".into()),
            ("app::Node", 16) => Some("right".into()),
            _ => None,
        }
    }
}

#[test]
fn retainers_by_type_take_the_exact_label_else_substrings_and_name_path_fields() {
    use heapdump_analyze::report::retainers::RetainersQuery;

    let dump = tree_heap(1).dump();
    let view = dump.view();
    let analysis = HeapAnalysis::new(&view, &Heuristics::default(), true, &mut frames_of).unwrap();
    let mut warnings = Vec::new();
    let mut select = |query: RetainersQuery, limit: usize| {
        let report =
            RetainersReport::build(&view, &analysis, &mut NodeLayout, &query, limit, 1).unwrap();
        warnings.extend(report.warnings.iter().cloned());
        report
    };
    let picked = |report: &RetainersReport| -> Vec<(u32, String, u64)> {
        report
            .objects
            .iter()
            .map(|r| {
                (
                    r.object.index,
                    r.object.type_name.clone(),
                    r.object.retained,
                )
            })
            .collect()
    };

    // Exact: the seven nodes, largest retained first, ties by index.
    let nodes = select(RetainersQuery::Type("app::Node".into()), 10);
    let node = |i: u32, retained: u64| (i, "app::Node".to_owned(), retained);
    assert_eq!(
        picked(&nodes),
        [
            node(0, 304),
            node(1, 160),
            node(2, 112),
            node(3, 96),
            node(4, 32),
            node(5, 32),
            node(6, 32),
        ]
    );
    assert_eq!(nodes.objects[1].dominators[0].index, 0);
    // A label that is not exact matches as a substring: every buffer.
    let buffers = select(RetainersQuery::Type("buffer".into()), 10);
    let types: Vec<(u32, String, u64)> = picked(&buffers);
    assert_eq!(
        types,
        [
            (8, "Vec<u64> buffer".to_owned(), 384),
            (9, "Vec<u64> buffer".to_owned(), 256),
            (7, "Vec<u64> buffer".to_owned(), 64),
            (10, "Vec<&str> buffer".to_owned(), 16),
        ]
    );
    // -n limits the blocks.
    assert_eq!(
        select(RetainersQuery::Type("buffer".into()), 1)
            .objects
            .len(),
        1
    );

    // Block 4 is node 1's right child, node 1 the root node's left one.
    let r = &select(RetainersQuery::Address(0x1000 * 5), 1).objects[0];
    let steps: Vec<(u32, Option<u64>, Option<&str>)> = r.paths[0]
        .steps
        .iter()
        .map(|s| (s.object.index, s.field_offset, s.field.as_deref()))
        .collect();
    assert_eq!(
        steps,
        [
            (0, Some(0x10), None),
            (1, Some(8), Some("left")),
            (4, Some(16), Some("right"))
        ]
    );
    let json = serde_json::to_value(&r.paths[0].steps[2]).unwrap();
    assert_eq!(json["field"], "right");
    assert_eq!(json["object"]["type"], "app::Node");
    let text = RetainersReport {
        objects: vec![r.clone()],
        names: heapdump_analyze::site::Names::Abbreviated,
        warnings: Vec::new(),
    }
    .to_string();
    assert!(
        text.contains("    [0x8 .left] -> 0x2000 32 B app::Node  app::build"),
        "{text}"
    );
    assert!(
        text.contains("    [0x10 .right] -> 0x5000 32 B app::Node  app::build"),
        "{text}"
    );

    // Nothing of that type.
    let none = RetainersReport::build(
        &view,
        &analysis,
        &mut NodeLayout,
        &RetainersQuery::Type("app::Missing".into()),
        10,
        1,
    );
    assert!(none.is_err());
    assert_eq!(warnings, Vec::<String>::new());
}

#[test]
fn top_by_type_sums_live_bytes_per_retained_type_label_across_sites() {
    let dump = tree_heap(1).dump();
    let view = dump.view();
    let mut frames = frames_of;
    let top = TopReport::build(
        &view,
        &mut frames,
        &TopOptions {
            by: GroupBy::Type,
            limit: 3,
        },
        &indicatif::ProgressBar::hidden(),
    );
    assert_eq!(top.warnings, Vec::<String>::new());
    assert_eq!((top.total_bytes, top.total_count), (712, 12));
    assert_eq!(top.by, GroupBy::Type);
    let rows: Vec<(&str, u64, u64)> = top
        .rows
        .iter()
        .map(|r| (r.type_label.as_deref().unwrap(), r.bytes, r.count))
        .collect();
    assert_eq!(
        rows,
        [
            // Blocks 7, 8 and 9.
            ("Vec<u64> buffer", 64 + 128 + 256, 3),
            // Nodes 0-4 from app::build and 5-6 from app::grow: one row.
            ("app::Node", 7 * 32, 7),
            ("alloc@app::make:7", 24, 1),
        ]
    );
    // The Vec<&str> buffer's row is the one the limit left out.
    assert_eq!(
        (top.omitted_rows, top.omitted_bytes, top.omitted_count),
        (1, 16, 1)
    );
    for row in &top.rows {
        assert_eq!(
            (&row.function, &row.file, row.line, &row.inlined_into),
            (&None, &None, None, &None),
            "{row:?}"
        );
    }

    // The labels are those of `top --retained`'s types table.
    let analysis = HeapAnalysis::new(&view, &Heuristics::default(), true, &mut frames_of).unwrap();
    let retained = RetainedReport::build(&view, &analysis, &mut frames, &TOP_10).unwrap();
    assert_eq!(retained.warnings, Vec::<String>::new());
    let mut retained_labels: Vec<&str> = retained
        .types
        .iter()
        .map(|t| t.type_name.as_str())
        .collect();
    retained_labels.sort_unstable();
    assert_eq!(
        retained_labels,
        [
            "Vec<&str> buffer",
            "Vec<u64> buffer",
            "alloc@app::make:7",
            "app::Node"
        ]
    );

    // JSON: the row's key is its "type" member; text: the label column.
    let json = serde_json::to_value(&top).unwrap();
    assert_eq!(json["by"], "type");
    assert_eq!(json["rows"][0]["type"], "Vec<u64> buffer");
    assert_eq!(json["rows"][0]["bytes"], 448);
    assert_eq!(json["rows"][0]["function"], serde_json::Value::Null);
    let text = top.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "live: 712 bytes (712 B) in 12 allocations, by type"
    );
    assert!(lines[2].ends_with("  Vec<u64> buffer"), "{text}");
    assert!(lines[3].ends_with("  app::Node"), "{text}");
    assert!(lines[5].ends_with("(1 more groups)"), "{text}");
}

/// `retainers` names a REGISTERS root's slot by the dumped machine's
/// register: x86_64's `rsp` for slot 15, and on aarch64 (whose registers
/// heapdump-capture does not save under names) `register 15`, never an
/// x86_64 name.
#[test]
fn register_roots_are_named_by_the_dumped_machines_registers() {
    use heapdump_analyze::report::retainers::RetainersQuery;

    let location = |machine: u32| {
        let mut h = Heap::new(1);
        h.b.process.machine = machine;
        h.alloc(0, 32, NODE);
        h.b.roots.push(RootRecord {
            kind: root_kind::REGISTERS,
            owner_kind: owner_kind::THREAD,
            owner: 0,
            address: 0,
            size: 23 * 8,
            name: StrRef::EMPTY,
            reserved: 0,
        });
        // Slot 15 of root 1 (the registers) holds block 0.
        h.b.edges.push(EdgeRecord {
            source: 1,
            target: 0,
            source_offset: 15 * 8,
            target_offset: 0,
            flags: edge_flags::FROM_ROOT,
            reserved: 0,
        });
        let dump = h.dump();
        let view = dump.view();
        let analysis =
            HeapAnalysis::new(&view, &Heuristics::default(), true, &mut frames_of).unwrap();
        let query = RetainersQuery::Address(0x1000);
        let report =
            RetainersReport::build(&view, &analysis, &mut frames_of, &query, 1, 1).unwrap();
        assert_eq!(report.warnings, Vec::<String>::new());
        let root = &report.objects[0].paths[0].root;
        assert_eq!(root.kind, "REGISTERS");
        root.location.clone()
    };
    assert_eq!(location(machine::X86_64), "rsp");
    assert_eq!(location(machine::AARCH64), "register 15");
}
