//! Every example program's dump exports to DOT that Graphviz renders
//! (`dot -Tsvg`), in each view, with the types recovered for the bulk of
//! the bytes. Needs Graphviz's `dot` (Debian package `graphviz`).

use std::io::Write as _;
use std::process::{Command, Stdio};

use heapdump_tests::{binary, run_ok, scratch_dir};

fn render_svg(dot_text: &str) -> String {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
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
        "dot rejected the graph: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 SVG")
}

/// The percentage in the DOT header comment `types recovered for P% of bytes`.
fn typed_percent(dot_text: &str) -> f64 {
    let after = dot_text
        .split("types recovered for ")
        .nth(1)
        .expect("the DOT header states the typed share");
    after
        .split('%')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a percentage")
}

#[test]
fn every_example_dump_renders_with_graphviz_in_every_view() {
    let dir = scratch_dir("export_examples");
    for example in ["demo", "blocks", "leaks"] {
        let dump = dir.join(format!("{example}.hdump"));
        run_ok(Command::new(binary(example)).arg(&dump));
        for view in [
            &[][..],
            &["--group-by", "type"][..],
            &["--group-by", "site"][..],
            &["--min-size", "4096", "--max-nodes", "500"][..],
        ] {
            let output = run_ok(
                Command::new(binary("heapdump"))
                    .arg("todot")
                    .arg(&dump)
                    .args(view),
            );
            let text = String::from_utf8(output.stdout).expect("utf-8 DOT");
            let svg = render_svg(&text);
            assert!(svg.contains("<svg"), "{example} {view:?}");
            assert!(
                typed_percent(&text) > 90.0,
                "{example}: too few bytes typed\n{text}"
            );
        }
    }
}

fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let output = run_ok(Command::new("sqlite3").arg(db).arg(sql));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Every example's dump loads into SQLite with every foreign key holding
/// (dominators may come later in address order than what they dominate),
/// one row per live allocation, and retained sizes that add up.
#[test]
fn every_example_dump_loads_into_sqlite_with_consistent_keys() {
    let dir = scratch_dir("export_examples_sqlite");
    for example in ["demo", "blocks", "leaks"] {
        let dump = dir.join(format!("{example}.hdump"));
        run_ok(Command::new(binary(example)).arg(&dump));
        let db = dir.join(format!("{example}.db"));
        run_ok(
            Command::new(binary("heapdump"))
                .arg("tosqlite")
                .arg(&dump)
                .arg("-o")
                .arg(&db),
        );
        assert_eq!(sqlite(&db, "PRAGMA foreign_key_check;"), "", "{example}");
        let parsed = heapdump_formats::read::Dump::open(&dump).expect("the dump parses");
        let process = parsed.view().process();
        assert_eq!(
            sqlite(&db, "SELECT count(*), sum(size) FROM objects;"),
            format!("{}|{}\n", process.live_count, process.live_bytes),
            "{example}"
        );
        // An object retains at least itself, and what the objects directly
        // under the roots (and the unreachable leaders) retain is the heap.
        assert_eq!(
            sqlite(&db, "SELECT count(*) FROM objects WHERE retained < size;"),
            "0\n",
            "{example}"
        );
        assert_eq!(
            sqlite(
                &db,
                "SELECT sum(retained) FROM objects WHERE dominator IS NULL;"
            ),
            format!("{}\n", process.live_bytes),
            "{example}"
        );
    }
}

/// The examples are built with full DWARF (see the root Cargo.toml), as a
/// user who wants field names builds: every node of the `leaks` example's
/// 100-node `Box<ListNode>` list is typed `leaks::ListNode`, and each of the
/// 99 links is labelled `next`.
#[test]
fn list_nodes_are_typed_and_their_links_are_labelled_next() {
    let dir = scratch_dir("export_examples_next");
    let dump = dir.join("leaks.hdump");
    run_ok(Command::new(binary("leaks")).arg(&dump));
    let output = run_ok(
        Command::new(binary("heapdump"))
            .arg("todot")
            .arg(&dump)
            .args(["--max-nodes", "10000"]),
    );
    let text = String::from_utf8(output.stdout).expect("utf-8 DOT");
    let nodes: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('a') && l.contains("[label=\"leaks::ListNode\\n"))
        .map(|l| l.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(nodes.len(), 100, "{text}");
    let links: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            let mut ends = l.split(" -> ");
            match (ends.next(), ends.next()) {
                (Some(from), Some(to)) => {
                    let to = to.split_whitespace().next().unwrap_or_default();
                    nodes.contains(&from) && nodes.contains(&to)
                }
                _ => false,
            }
        })
        .collect();
    assert_eq!(links.len(), 99, "{links:#?}");
    assert!(
        links.iter().all(|l| l.contains("[label=\"next\"]")),
        "{links:#?}"
    );
}
