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
