//! Agreement with valgrind memcheck: the `leaks` example runs under
//! `valgrind --leak-check=full`, writes its heap dump and exits; memcheck
//! checks leaks at that exit, so both tools judge the same heap. For every
//! block the example made on purpose (each shape has its own block size),
//! heapdump's class without heuristics must equal memcheck's verdict, and
//! the heuristics must change exactly the shapes they are documented to.
//!
//! The same for a C and a C++ program (`tests/programs/leak_shapes.*`),
//! compiled here: one run under `heapdump run`, one under memcheck, each
//! deliberate block classed alike by both.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use heapdump_analyze::graph::HeapGraph;
use heapdump_analyze::heuristics::Heuristics;
use heapdump_analyze::leaks::{LeakAnalysis, LeakClass};
use heapdump_formats::read::Dump;
use heapdump_tests::{binary, compile_program, heapdump_run, scratch_dir, the_dump};

/// Block sizes of the shapes `examples/src/bin/leaks.rs` makes, and what
/// memcheck says of each.
const SHAPES: [(u64, &str); 8] = [
    (2000, "held by a static"),
    (2008, "only pointer dropped"),
    (1000, "list whose head pointer was dropped"),
    (48, "Rc cycle without a handle"),
    (2016, "held through a pointer 8 bytes in"),
    (2024, "Arc::into_raw kept in a static"),
    (2032, "low-bit tagged pointer in a static"),
    (2040, "values of a HashMap held by a static"),
];

type Verdicts = BTreeMap<u64, BTreeMap<&'static str, u64>>;

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn memcheck_kind(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Leak_DefinitelyLost" => "definitely lost",
        "Leak_IndirectlyLost" => "indirectly lost",
        "Leak_PossiblyLost" => "possibly lost",
        "Leak_StillReachable" => "still reachable",
        _ => return None,
    })
}

fn class_name(class: LeakClass) -> &'static str {
    match class {
        LeakClass::DefinitelyLost => "definitely lost",
        LeakClass::IndirectlyLost => "indirectly lost",
        LeakClass::PossiblyLost => "possibly lost",
        LeakClass::StillReachable => "still reachable",
    }
}

/// Blocks per (size the program asked for, verdict) from memcheck's XML,
/// where memcheck saw each block `footer` bytes longer than asked for. A
/// definitely-lost record's byte count includes the indirect bytes its
/// blocks hold; the direct bytes are in its text ("1,000 (1,000 direct,
/// 99,000 indirect)").
fn memcheck_verdicts(xml: &Path, footer: u64) -> Verdicts {
    let text = std::fs::read_to_string(xml).expect("valgrind wrote no XML");
    let document = roxmltree::Document::parse(&text).expect("valgrind's XML does not parse");
    let mut verdicts = Verdicts::new();
    for error in document.descendants().filter(|n| n.has_tag_name("error")) {
        let Some(kind) = child(error, "kind")
            .and_then(|k| k.text())
            .and_then(memcheck_kind)
        else {
            continue;
        };
        let Some(what) = child(error, "xwhat") else {
            continue;
        };
        let number = |name: &str| -> u64 {
            child(what, name)
                .and_then(|n| n.text())
                .and_then(|t| t.parse().ok())
                .expect("a loss record without byte or block counts")
        };
        let (bytes, blocks) = (number("leakedbytes"), number("leakedblocks"));
        let description = child(what, "text").and_then(|t| t.text()).unwrap_or("");
        let direct = description
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(" direct"))
            .map(|(direct, _)| direct.replace(',', "").parse().expect("direct bytes"))
            .unwrap_or(bytes);
        let size = direct / blocks - footer;
        *verdicts.entry(size).or_default().entry(kind).or_default() += blocks;
    }
    verdicts
}

/// The kinds of memcheck's errors that are not loss records.
fn non_leak_errors(xml: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(xml).expect("valgrind wrote no XML");
    let document = roxmltree::Document::parse(&text).expect("valgrind's XML does not parse");
    document
        .descendants()
        .filter(|n| n.has_tag_name("error"))
        .filter_map(|error| child(error, "kind").and_then(|k| k.text()))
        .filter(|kind| memcheck_kind(kind).is_none())
        .map(str::to_owned)
        .collect()
}

fn heapdump_verdicts(dump: &Path, heuristics: Heuristics) -> Verdicts {
    let dump = Dump::open(dump).expect("the dump does not parse");
    let view = dump.view();
    let graph = HeapGraph::build(&view, &heuristics).expect("cannot build the heap graph");
    let analysis = LeakAnalysis::compute(&graph);
    let mut verdicts = Verdicts::new();
    for (node, allocation) in view.allocations().iter().enumerate() {
        *verdicts
            .entry(allocation.size)
            .or_default()
            .entry(class_name(analysis.class(node as u32)))
            .or_default() += 1;
    }
    verdicts
}

fn shapes_only(verdicts: &Verdicts) -> Verdicts {
    only_sizes(verdicts, SHAPES.iter().map(|&(size, _)| size))
}

/// The verdicts of the blocks of `sizes`, empty for a size without blocks.
fn only_sizes(verdicts: &Verdicts, sizes: impl Iterator<Item = u64>) -> Verdicts {
    sizes
        .map(|size| (size, verdicts.get(&size).cloned().unwrap_or_default()))
        .collect()
}

/// Each block size and its verdicts, as the tables below write them.
fn verdicts(table: &[(u64, &[(&'static str, u64)])]) -> Verdicts {
    table
        .iter()
        .map(|(size, classes)| (*size, classes.iter().copied().collect()))
        .collect()
}

/// Compiles `tests/programs/SOURCE` without frame pointers, as
/// distributions build C and C++, runs it under `heapdump run` and under memcheck, and checks that
/// memcheck's verdicts on the blocks of the sizes in `expected` are the
/// ones the program documents and that heapdump's classes equal them, with
/// no heuristic and with the default ones (none of which matches a C or C++
/// shape here).
fn compare_with_memcheck(source: &str, compiler: &str, expected: &Verdicts) {
    let valgrind = Command::new("valgrind").arg("--version").output();
    assert!(
        valgrind.is_ok_and(|o| o.status.success()),
        "valgrind is needed for this test (Debian package `valgrind`; .ci/run installs it)"
    );
    let dir = scratch_dir(&format!("leaks_vs_memcheck_{}", source.replace('.', "_")));
    let program = compile_program(
        &dir,
        source,
        compiler,
        "leak_shapes",
        &["-g", "-O1", "-fomit-frame-pointer"],
    );
    let dumps = dir.join("dumps");
    let output = heapdump_run(&dumps, &[std::ffi::OsStr::new("--"), program.as_os_str()]);
    assert!(output.status.success(), "{output:?}");
    let (dump, _) = the_dump(&dumps);

    let xml = dir.join("memcheck.xml");
    let status = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--xml=yes",
            "--error-exitcode=0",
        ])
        .arg(format!("--xml-file={}", xml.display()))
        .arg(&program)
        .status()
        .expect("cannot run valgrind");
    assert!(status.success(), "{source} failed under valgrind");
    // Nothing but loss records: the program does what it says.
    assert_eq!(non_leak_errors(&xml), Vec::<String>::new());

    let sizes = || expected.keys().copied();
    // Without the tracker, memcheck sees the blocks as asked for.
    let memcheck = only_sizes(&memcheck_verdicts(&xml, 0), sizes());
    assert_eq!(
        &memcheck, expected,
        "memcheck's verdicts on {source} changed"
    );
    let strict = only_sizes(&heapdump_verdicts(&dump, Heuristics::none()), sizes());
    assert_eq!(
        strict, memcheck,
        "heapdump without heuristics disagrees with memcheck on {source}"
    );
    let default = only_sizes(&heapdump_verdicts(&dump, Heuristics::default()), sizes());
    assert_eq!(
        default, memcheck,
        "heapdump's default heuristics disagree with memcheck on {source}"
    );
}

#[test]
fn every_deliberate_block_of_a_c_program_gets_memchecks_verdict() {
    // The shapes leak_shapes.c documents, by block size.
    let expected = verdicts(&[
        (300, &[("definitely lost", 1)]),
        (32, &[("definitely lost", 1), ("indirectly lost", 29)]),
        (700, &[("possibly lost", 1)]),
        (40, &[("still reachable", 1)]),
        (9, &[("still reachable", 3)]),
        (900, &[("still reachable", 1)]),
    ]);
    compare_with_memcheck("leak_shapes.c", "gcc", &expected);
}

#[test]
fn every_deliberate_block_of_a_cxx_program_gets_memchecks_verdict() {
    // The shapes leak_shapes.cpp documents, by block size: a list of
    // `new Node`s, a leaked object holding a std::vector, an interior
    // pointer to a `new char[]`, and a registry held by a global with a
    // std::vector, a std::map, a std::make_shared block and a std::string.
    let expected = verdicts(&[
        (56, &[("definitely lost", 1), ("indirectly lost", 19)]),
        (80, &[("definitely lost", 1)]),
        (400, &[("indirectly lost", 1)]),
        (1500, &[("possibly lost", 1)]),
        (120, &[("still reachable", 1)]),
        (4096, &[("still reachable", 1)]),
        (48, &[("still reachable", 3)]),
        (112, &[("still reachable", 1)]),
        (101, &[("still reachable", 1)]),
    ]);
    compare_with_memcheck("leak_shapes.cpp", "g++", &expected);
}

#[test]
fn every_deliberate_block_gets_memchecks_verdict() {
    let valgrind = Command::new("valgrind").arg("--version").output();
    assert!(
        valgrind.is_ok_and(|o| o.status.success()),
        "valgrind is needed for this test (Debian package `valgrind`; .ci/run installs it)"
    );
    let dir = scratch_dir("leaks_vs_memcheck");
    let dump = dir.join("leaks.hdump");
    let xml = dir.join("memcheck.xml");
    let status = Command::new("valgrind")
        .args([
            "--leak-check=full",
            "--show-leak-kinds=all",
            "--xml=yes",
            "--error-exitcode=0",
            // The dump's snapshot process (mode=fork) is a valgrind
            // process too: its own report would land in the same XML.
            "--child-silent-after-fork=yes",
        ])
        .arg(format!(
            "--suppressions={}/../capture/valgrind.supp",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(format!("--xml-file={}", xml.display()))
        .arg(binary("leaks"))
        .arg(&dump)
        .status()
        .expect("cannot run valgrind");
    assert!(status.success(), "the leaks example failed under valgrind");

    // With the suppressions the capture crate ships, memcheck reports no
    // error but the loss records: the tracker (footer included) reads and
    // writes nothing it should not, and the dump's scan of uninitialised
    // words is suppressed.
    assert_eq!(non_leak_errors(&xml), Vec::<String>::new());
    // Under the tracker, the allocator memcheck watches sees each block
    // with the tracker's footer after it.
    let memcheck = shapes_only(&memcheck_verdicts(
        &xml,
        heapdump_capture::FOOTER_BYTES as u64,
    ));
    let strict = shapes_only(&heapdump_verdicts(&dump, Heuristics::none()));
    // What the example's documentation promises, in memcheck's words.
    let expected: Verdicts = [
        (2000, vec![("still reachable", 1)]),
        (2008, vec![("definitely lost", 1)]),
        (1000, vec![("definitely lost", 1), ("indirectly lost", 99)]),
        (48, vec![("definitely lost", 1), ("indirectly lost", 1)]),
        (2016, vec![("possibly lost", 1)]),
        (2024, vec![("possibly lost", 1)]),
        (2032, vec![("possibly lost", 1)]),
        (2040, vec![("possibly lost", 10)]),
    ]
    .into_iter()
    .map(|(size, classes)| (size, classes.into_iter().collect()))
    .collect();
    assert_eq!(memcheck, expected, "memcheck's verdicts changed");
    assert_eq!(
        strict, memcheck,
        "heapdump without heuristics disagrees with memcheck"
    );

    // The Rc cycle: memcheck calls the lower-addressed block definitely
    // lost; so must heapdump.
    let parsed = Dump::open(&dump).unwrap();
    let view = parsed.view();
    let graph = HeapGraph::build(&view, &Heuristics::none()).unwrap();
    let analysis = LeakAnalysis::compute(&graph);
    let cycle: Vec<(u64, LeakClass)> = view
        .allocations()
        .iter()
        .enumerate()
        .filter(|(_, a)| a.size == 48)
        .map(|(i, a)| (a.address, analysis.class(i as u32)))
        .collect();
    assert_eq!(cycle.len(), 2);
    assert!(cycle[0].0 < cycle[1].0);
    assert_eq!(cycle[0].1, LeakClass::DefinitelyLost);
    assert_eq!(cycle[1].1, LeakClass::IndirectlyLost);

    // With every heuristic on, the Rust interior pointers (8 bytes into a
    // block, Arc::into_raw, a tagged pointer, hashbrown's control bytes)
    // count as start pointers: those shapes are reachable, the rest keep
    // memcheck's verdict.
    let lenient = shapes_only(&heapdump_verdicts(&dump, Heuristics::all()));
    let mut expected_lenient = memcheck.clone();
    for size in [2016, 2024, 2032, 2040] {
        let count: u64 = expected_lenient[&size].values().sum();
        expected_lenient.insert(size, [("still reachable", count)].into_iter().collect());
    }
    assert_eq!(
        lenient, expected_lenient,
        "heuristics changed the wrong shapes"
    );
}
