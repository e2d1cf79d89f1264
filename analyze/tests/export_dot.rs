//! `heapdump todot` on a dump built on purpose: the exact nodes and edges
//! of each view (objects, --min-size, --from, --depth, --group-by,
//! --max-nodes), checked on what Graphviz itself parses (`dot -Tplain`).
//! Needs Graphviz's `dot` (Debian package `graphviz`).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

use heapdump_analyze::export::HeapModel;
use heapdump_analyze::export::dot::{DotOptions, DotSummary, GroupBy, write_dot};

mod export_common;
use export_common::{frames_of, test_dump};

/// What Graphviz read: node names and (tail, head) pairs.
#[derive(Debug)]
struct Plain {
    nodes: BTreeSet<String>,
    edges: Vec<(String, String)>,
}

fn graphviz_plain(dot_text: &str) -> Plain {
    let mut child = Command::new("dot")
        .arg("-Tplain")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run Graphviz `dot`; install the graphviz package");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dot_text.as_bytes())
        .expect("write to dot");
    let output = child.wait_with_output().expect("dot runs");
    assert!(
        output.status.success(),
        "dot rejected the graph: {}\n{dot_text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let mut plain = Plain {
        nodes: BTreeSet::new(),
        edges: Vec::new(),
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.first() {
            Some(&"node") => {
                plain.nodes.insert(fields[1].to_owned());
            }
            Some(&"edge") => plain
                .edges
                .push((fields[1].to_owned(), fields[2].to_owned())),
            _ => {}
        }
    }
    plain.edges.sort();
    plain
}

fn render(options: &DotOptions) -> (String, DotSummary, Plain) {
    let dump = test_dump();
    let model = HeapModel::build(dump.view(), frames_of).expect("model");
    let mut out = Vec::new();
    let summary = write_dot(&model, options, &mut out).expect("write_dot");
    let text = String::from_utf8(out).expect("utf-8 DOT");
    let plain = graphviz_plain(&text);
    (text, summary, plain)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// The DOT line that defines or links `id` (`a3 [`, `r2 -> a1 [`).
fn line_of<'t>(text: &'t str, start: &str) -> &'t str {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in\n{text}"))
}

#[test]
fn objects_graph_draws_every_object_used_root_and_pointer() {
    let (text, summary, plain) = render(&DotOptions::default());
    assert_eq!(
        plain.nodes,
        set(&["a0", "a1", "a2", "a3", "a4", "a5", "a6", "r0", "r2"])
    );
    assert_eq!(
        plain.edges,
        pairs(&[
            ("r0", "a0"),
            ("r2", "a1"),
            ("a0", "a1"),
            ("a0", "a2"),
            ("a1", "a2"),
            ("a1", "a5"),
            ("a3", "a4"),
            ("a5", "a6"),
        ])
    );
    assert_eq!(
        summary,
        DotSummary {
            nodes: 7,
            edges: 8,
            cut: 0,
            types_instead_of: None,
        }
    );
    // Types, leak classes, root kinds and edge labels.
    assert!(line_of(&text, "a0 [").contains("app::Node\\n32 B (32 B) at 0x1000"));
    assert!(line_of(&text, "a2 [").contains("Vec<u64> buffer"));
    assert!(line_of(&text, "a5 [").contains("Vec<&str> buffer"));
    assert!(line_of(&text, "a3 [").contains("alloc@app::make:7"));
    assert!(line_of(&text, "a3 [").contains("unreachable: definitely lost"));
    assert!(line_of(&text, "a4 [").contains("unreachable: indirectly lost"));
    assert!(!line_of(&text, "a1 [").contains("unreachable"));
    // Retained sizes (dominator subtrees) where an object keeps more than
    // itself alive: #1 holds the only pointers to #5, which holds #6.
    assert!(line_of(&text, "a1 [").contains("retains 168 B"));
    assert!(!line_of(&text, "a6 [").contains("retains"));
    assert!(line_of(&text, "r0 [").contains("shape=house"));
    assert!(line_of(&text, "r0 [").contains("THREAD_STACK thread 42 (main)"));
    assert!(line_of(&text, "r2 [").contains("shape=cds"));
    assert!(line_of(&text, "r0 -> a0").contains("label=\"+0x10 (+1 more)\""));
    assert!(line_of(&text, "r2 -> a1").contains("label=\"rax\""));
    assert!(line_of(&text, "a0 -> a1").contains("label=\"+8\""));
    assert!(line_of(&text, "a0 -> a2").contains("label=\"+16 → +8\", style=dashed"));
    assert!(text.contains("types recovered for 89.19% of bytes"));
}

#[test]
fn min_size_hides_small_objects_and_bridges_paths_through_them() {
    let (text, summary, plain) = render(&DotOptions {
        min_size: 20,
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["a0", "a1", "a2", "a6", "r0", "r2"]));
    assert_eq!(
        plain.edges,
        pairs(&[
            ("r0", "a0"),
            ("r2", "a1"),
            ("a0", "a1"),
            ("a0", "a2"),
            ("a1", "a2"),
            ("a1", "a6"),
        ])
    );
    assert!(line_of(&text, "a1 -> a6").contains("style=dotted"));
    assert_eq!(summary.cut, 0);
}

#[test]
fn max_nodes_keeps_the_nearest_objects_and_counts_the_rest() {
    let (_, summary, plain) = render(&DotOptions {
        max_nodes: 2,
        group_by: Some(GroupBy::Object),
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["a0", "a1", "r0", "r2"]));
    assert_eq!(
        plain.edges,
        pairs(&[("r0", "a0"), ("r2", "a1"), ("a0", "a1")])
    );
    assert_eq!(summary.nodes, 2);
    assert_eq!(summary.cut, 5);
    // A quarter of the budget is kept for unreachable objects.
    let (_, _, plain) = render(&DotOptions {
        max_nodes: 4,
        group_by: Some(GroupBy::Object),
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["a0", "a1", "a2", "a3", "r0", "r2"]));
}

/// By default, a heap with more objects than --max-nodes is drawn as its
/// type graph (the same as --group-by type, with a title saying why); one
/// that fits, or a walk from --from, as objects.
#[test]
fn more_objects_than_max_nodes_draw_the_type_graph_instead() {
    let (text, summary, plain) = render(&DotOptions {
        max_nodes: 6,
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["t0", "t1", "t2", "t3", "k1", "k2"]));
    assert_eq!(plain.edges.len(), 7);
    assert_eq!(
        summary,
        DotSummary {
            nodes: 4,
            edges: 7,
            cut: 0,
            types_instead_of: Some(7),
        }
    );
    assert!(text.contains(
        "label=\"one node per type: 7 objects are more than --max-nodes 6 (todot --group-by object draws objects)\"; labelloc=t;"
    ));
    let (grouped, _, _) = render(&DotOptions {
        max_nodes: 6,
        group_by: Some(GroupBy::Type),
        ..DotOptions::default()
    });
    let without_title: String = text
        .lines()
        .filter(|l| !l.contains("labelloc=t"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(without_title, grouped);

    // Seven objects fit in seven nodes; four of at least 20 bytes in four.
    let (_, summary, plain) = render(&DotOptions {
        max_nodes: 7,
        ..DotOptions::default()
    });
    assert_eq!((summary.nodes, summary.types_instead_of), (7, None));
    assert!(plain.nodes.contains("a6"));
    let (_, summary, _) = render(&DotOptions {
        max_nodes: 4,
        min_size: 20,
        ..DotOptions::default()
    });
    assert_eq!((summary.nodes, summary.types_instead_of), (4, None));
    // A walk from --from stays a walk of objects, cut at --max-nodes.
    let (_, summary, plain) = render(&DotOptions {
        max_nodes: 2,
        from: Some("0x2000".into()),
        ..DotOptions::default()
    });
    assert_eq!((summary.nodes, summary.types_instead_of), (2, None));
    assert_eq!(plain.nodes, set(&["a1", "a2", "r2"]));
}

#[test]
fn from_an_address_type_or_site_walks_out_of_those_objects() {
    // Any address inside allocation 1.
    let (_, _, plain) = render(&DotOptions {
        from: Some("0x2008".into()),
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["a1", "a2", "a5", "a6", "r2"]));
    assert_eq!(
        plain.edges,
        pairs(&[("r2", "a1"), ("a1", "a2"), ("a1", "a5"), ("a5", "a6")])
    );
    let (_, _, plain) = render(&DotOptions {
        from: Some("app::Node".into()),
        depth: Some(0),
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["a0", "a1", "r0", "r2"]));
    assert_eq!(
        plain.edges,
        pairs(&[("r0", "a0"), ("r2", "a1"), ("a0", "a1")])
    );
    // A site label, by substring.
    let (_, _, plain) = render(&DotOptions {
        from: Some("app::make".into()),
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["a3", "a4"]));

    let dump = test_dump();
    let model = HeapModel::build(dump.view(), frames_of).expect("model");
    for bad in ["0x9999999", "0xzz", "no::such::Type"] {
        let options = DotOptions {
            from: Some(bad.into()),
            ..DotOptions::default()
        };
        let error = write_dot(&model, &options, &mut Vec::new()).unwrap_err();
        assert!(error.to_string().contains(bad), "{error}");
    }
}

#[test]
fn group_by_type_aggregates_objects_pointers_and_roots() {
    let (text, summary, plain) = render(&DotOptions {
        group_by: Some(GroupBy::Type),
        ..DotOptions::default()
    });
    // Types are numbered in the order allocations first use them.
    assert!(line_of(&text, "t0 [").contains("app::Node\\n2 objects, 64 B (64 B)"));
    assert!(line_of(&text, "t1 [").contains("Vec<u64> buffer\\n2 objects, 192 B (192 B)"));
    assert!(
        line_of(&text, "t2 [")
            .contains("alloc@app::make:7\\n2 objects, 32 B (32 B)\\n2 unreachable (32 B)")
    );
    assert!(line_of(&text, "t3 [").contains("Vec<&str> buffer\\n1 object, 8 B (8 B)"));
    assert_eq!(plain.nodes, set(&["t0", "t1", "t2", "t3", "k1", "k2"]));
    assert_eq!(
        plain.edges,
        pairs(&[
            ("k1", "t0"),
            ("k2", "t0"),
            ("t0", "t0"),
            ("t0", "t1"),
            ("t0", "t3"),
            ("t2", "t2"),
            ("t3", "t1"),
        ])
    );
    assert!(line_of(&text, "t0 -> t1").contains("2 pointers"));
    assert!(line_of(&text, "k2 -> t0").contains("2 pointers"));
    assert_eq!(summary.cut, 0);

    let (_, summary, plain) = render(&DotOptions {
        group_by: Some(GroupBy::Type),
        max_nodes: 2,
        ..DotOptions::default()
    });
    assert_eq!(plain.nodes, set(&["t0", "t1", "k1", "k2"]));
    assert_eq!(
        plain.edges,
        pairs(&[("k1", "t0"), ("k2", "t0"), ("t0", "t0"), ("t0", "t1")])
    );
    assert_eq!(summary.cut, 2);
}

#[test]
fn group_by_site_with_from_counts_only_what_the_walk_reaches() {
    let (text, _, plain) = render(&DotOptions {
        group_by: Some(GroupBy::Site),
        from: Some("0x2000".into()),
        ..DotOptions::default()
    });
    // From allocation 1: itself (app::build), 2 and 6 (app::fill), 5 (app::name).
    assert_eq!(plain.nodes, set(&["s0", "s1", "s3", "k1"]));
    assert!(line_of(&text, "s0 [").contains("app::build:10\\n1 object"));
    assert!(line_of(&text, "s1 [").contains("app::fill:20\\n2 objects"));
    assert_eq!(
        plain.edges,
        pairs(&[("k1", "s0"), ("s0", "s1"), ("s0", "s3"), ("s3", "s1")])
    );
}

#[test]
fn cli_writes_dot_to_a_file_and_refuses_bad_from() {
    // No modules, so no executable is needed to symbolize.
    let dump = test_dump();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("export-dot.hdump");
    std::fs::write(&path, dump.bytes()).expect("write dump");
    let out = dir.join("export-dot.dot");
    let _ = std::fs::remove_file(&out);
    let status = Command::new(env!("CARGO_BIN_EXE_heapdump"))
        .arg("todot")
        .arg(&path)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run heapdump");
    assert!(status.success());
    let text = std::fs::read_to_string(&out).expect("DOT written");
    assert_eq!(graphviz_plain(&text).nodes.len(), 9);

    // Too many objects for --max-nodes: the type graph, and stderr says so.
    let output = Command::new(env!("CARGO_BIN_EXE_heapdump"))
        .args(["todot", "--max-nodes", "3"])
        .arg(&path)
        .output()
        .expect("run heapdump");
    assert!(output.status.success());
    let plain = graphviz_plain(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(plain.nodes, set(&["t0", "t1", "t2", "k1", "k2"]));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(
            "note: 7 objects are more than --max-nodes 3: drew the type graph instead (3 types, 1 smaller ones left out)"
        ),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = Command::new(env!("CARGO_BIN_EXE_heapdump"))
        .args(["todot", "--from", "nothing-like-this"])
        .arg(&path)
        .output()
        .expect("run heapdump");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing-like-this"));
    assert!(output.stdout.is_empty());
}
