//! `heapdump tosqlite`: the database of a dump built on purpose answers
//! every query documented in `analyze/EXPORTS.md` exactly, run as the
//! documentation says (with the `sqlite3` command; Debian package
//! `sqlite3`); the schema in the documentation is the one written.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use heapdump_analyze::export::HeapModel;
use heapdump_analyze::export::sqlite::{INDEXES, SCHEMA, VIEWS, write_sqlite};

mod export_common;
use export_common::{frames_of, test_dump};

fn exports_md() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("EXPORTS.md");
    std::fs::read_to_string(&path).expect("read analyze/EXPORTS.md")
}

/// The `<!-- query: NAME -->` SQL blocks of EXPORTS.md, by name.
fn documented_queries() -> BTreeMap<String, String> {
    let text = exports_md();
    let mut queries = BTreeMap::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("<!-- query: ") {
        rest = &rest[at + "<!-- query: ".len()..];
        let (name, after) = rest.split_once(" -->").expect("query marker closes");
        let body = after
            .trim_start()
            .strip_prefix("```sql\n")
            .expect("a ```sql block follows the marker");
        let (sql, after) = body.split_once("\n```").expect("the block closes");
        queries.insert(name.to_owned(), sql.to_owned());
        rest = after;
    }
    queries
}

fn build_database(name: &str) -> PathBuf {
    let dump = test_dump();
    let model = HeapModel::build(dump.view(), frames_of).expect("model");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.db"));
    write_sqlite(&model, &path, "test.hdump").expect("write the database");
    path
}

fn sqlite3(db: &Path, script: &str) -> String {
    let mut child = Command::new("sqlite3")
        .arg("-batch")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run the sqlite3 command; install the sqlite3 package");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write to sqlite3");
    let output = child.wait_with_output().expect("sqlite3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stderr.is_empty(),
        "sqlite3 failed: {stderr}\n{script}"
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Parameters and the exact answer of every documented query on the test
/// dump (see tests/export_common for its objects).
fn expected() -> BTreeMap<&'static str, (&'static str, &'static str)> {
    BTreeMap::from([
        (
            "top_sites",
            (
                "",
                "app::fill:20|2|192\napp::build:10|2|64\napp::make:7|2|32\napp::name:30|1|8\n",
            ),
        ),
        (
            "top_types",
            (
                "",
                "Vec<u64> buffer|2|192\napp::Node|2|64\nalloc@app::make:7|2|32\nVec<&str> buffer|1|8\n",
            ),
        ),
        ("typed_share", ("", "89.19%\n")),
        (
            "leak_summary",
            (
                "",
                "definitely_lost|1|16\nindirectly_lost|1|16\nstill_reachable|5|264\n",
            ),
        ),
        ("lost_by_site", ("", "app::make:7|2|32\n")),
        (
            "top_retainers",
            (
                "",
                "1|32|168|app::Node\n5|8|136|Vec<&str> buffer\n6|128|128|Vec<u64> buffer\n",
            ),
        ),
        (
            "dominator_chain",
            (
                ".param set :id 6",
                "1|5|136|Vec<&str> buffer\n2|1|168|app::Node\n",
            ),
        ),
        (
            "object_at",
            (".param set :addr 0x2008", "1|0x2000|32|app::Node\n"),
        ),
        (
            "who_points_to",
            (
                ".param set :id 1",
                "object|0|app::Node|8|0\nroot|2|REGISTERS thread 42 (main)|104|0\n",
            ),
        ),
        (
            "points_to",
            (
                ".param set :id 1",
                "2|Vec<u64> buffer|16|0\n5|Vec<&str> buffer|24|0\n",
            ),
        ),
        (
            "path_from_roots",
            (
                ".param set :id 6",
                "REGISTERS thread 42 (main) -> #1 -> #5 -> #6\n",
            ),
        ),
        (
            "allocation_stack",
            (
                ".param set :id 0",
                "0|__rust_alloc|/app/src/main.rs|1|1\n1|new<app::Node>|/rustc/0000/library/alloc/src/boxed.rs|2|1\n2|app::build|/app/src/main.rs|10|0\n",
            ),
        ),
        (
            "largest_of_type",
            (
                ".param set :type \"'Vec<u64> buffer'\"",
                "6|0x7000|128|app::fill:20\n2|0x3000|64|app::fill:20\n",
            ),
        ),
        ("bytes_by_thread", ("", "42|main|7|296\n")),
        ("roots_by_kind", ("", "REGISTERS|1\nTHREAD_STACK|1\n")),
    ])
}

#[test]
fn every_documented_query_gives_the_expected_answer() {
    let db = build_database("queries");
    let queries = documented_queries();
    let expected = expected();
    // A query documented without an expected answer here, or an answer for
    // a query the documentation dropped, fails the test.
    assert_eq!(
        queries.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );
    for (name, sql) in &queries {
        let (params, answer) = expected[name.as_str()];
        let out = sqlite3(&db, &format!("{params}\n{sql}\n"));
        assert_eq!(out, answer, "query {name}:\n{sql}");
    }
    // The writer does not enforce foreign keys; they hold all the same.
    assert_eq!(sqlite3(&db, "PRAGMA foreign_key_check;\n"), "");
    // Every page, cell and record is sound, and every index holds exactly
    // the entries of its table (SQLite cross-checks them).
    assert_eq!(sqlite3(&db, "PRAGMA integrity_check;\n"), "ok\n");
}

/// Writes the database of `dump` (symbolized by `frames`) and checks it
/// with SQLite's own integrity and foreign-key checks.
fn sound_database(
    name: &str,
    dump: &heapdump_formats::read::Dump,
    frames: impl Fn(u32) -> anyhow::Result<Vec<heapdump_analyze::symbolize::Frame>>,
) -> PathBuf {
    let model = HeapModel::build(dump.view(), frames).expect("model");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.db"));
    write_sqlite(&model, &path, "test.hdump").expect("write the database");
    assert_eq!(sqlite3(&path, "PRAGMA integrity_check;\n"), "ok\n");
    assert_eq!(sqlite3(&path, "PRAGMA foreign_key_check;\n"), "");
    path
}

#[test]
fn an_empty_heap_gives_a_sound_database_with_empty_tables() {
    let mut b = heapdump_formats::testing::DumpBuilder::default();
    b.process.pointer_size = 8;
    b.process.machine = 62;
    b.process.flags = heapdump_formats::records::process_flags::HAS_SCAN;
    b.fix_totals();
    let dump = heapdump_formats::read::Dump::from_vec(b.to_bytes()).expect("dump");
    let db = sound_database("empty", &dump, |_| Ok(Vec::new()));
    assert_eq!(
        sqlite3(
            &db,
            "SELECT (SELECT count(*) FROM objects), (SELECT count(*) FROM edges), \
             (SELECT count(*) FROM root_edges), (SELECT count(*) FROM leak_summary), \
             (SELECT value FROM meta WHERE key = 'schema_version');\n"
        ),
        "0|0|0|0|2\n"
    );
}

#[test]
fn names_longer_than_a_page_go_to_overflow_pages_and_read_back_whole() {
    // A function name of 150,000 bytes: the site's and the frame's rows
    // need three overflow pages each (a table cell keeps at most 65,501
    // bytes in its page); the type is named after the site.
    let long: String = (0..150_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let dump = test_dump();
    let db = sound_database("overflow", &dump, |stack| {
        // Stack 3 is the program's own allocation in app::make (line 7).
        let mut frames = frames_of(stack)?;
        if stack == 3 {
            frames[1] = export_common::frame(&long, "/app/src/main.rs", 7, false);
        }
        Ok(frames)
    });
    let out = sqlite3(
        &db,
        &format!(
            "SELECT count(*), max(length(function)), sum(function = '{long}') FROM frames;\n\
             SELECT length(name), length(function), function = '{long}' FROM sites \
             WHERE length(function) > 1000;\n\
             SELECT count(*) FROM object_info WHERE length(site) > 150000;\n"
        ),
    );
    assert_eq!(out, "11|150000|1\n150002|150000|1\n2\n");
}

#[test]
fn the_documented_schema_is_the_one_written() {
    let doc = exports_md();
    for (what, sql) in [("schema", SCHEMA), ("indexes", INDEXES), ("views", VIEWS)] {
        assert!(
            doc.contains(&format!("```sql\n{sql}```")),
            "analyze/EXPORTS.md does not show the {what} as written"
        );
    }
    let db = build_database("schema");
    let tables = sqlite3(
        &db,
        "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name;",
    );
    assert_eq!(
        tables,
        "index|edges_source\nindex|edges_target\nindex|objects_address\nindex|objects_site\n\
         index|objects_type\nindex|root_edges_target\n\
         table|edges\ntable|frames\ntable|meta\ntable|modules\ntable|objects\ntable|root_edges\n\
         table|roots\ntable|sites\ntable|stack_frames\ntable|stacks\ntable|threads\ntable|types\n\
         view|incoming\nview|leak_summary\nview|object_info\nview|top_sites\nview|top_types\n"
    );
    assert_eq!(
        sqlite3(
            &db,
            "SELECT value FROM meta WHERE key IN ('schema_version', 'live_count', 'typed_bytes') ORDER BY key;"
        ),
        "7\n2\n264\n"
    );
}

#[test]
fn cli_requires_an_output_file_and_replaces_it_whole() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dump_path = dir.join("export-sqlite.hdump");
    std::fs::write(&dump_path, test_dump().bytes()).expect("write dump");
    let heapdump = || Command::new(env!("CARGO_BIN_EXE_heapdump"));

    let output = heapdump()
        .arg("tosqlite")
        .arg(&dump_path)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "-o is required");
    assert!(output.stdout.is_empty());
    let output = heapdump()
        .arg("tosqlite")
        .arg(&dump_path)
        .args(["-o", "-"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());

    let db = dir.join("export-sqlite.db");
    std::fs::write(&db, b"not a database").expect("write");
    let output = heapdump()
        .arg("tosqlite")
        .arg(&dump_path)
        .arg("-o")
        .arg(&db)
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("objects 7") && stderr.contains("edges 6"),
        "{stderr}"
    );
    // No module in the dump, so frames are addresses: ids of the stacks only.
    assert_eq!(sqlite3(&db, "SELECT count(*) FROM objects;"), "7\n");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("export-sqlite.db.tmp")
        })
        .collect();
    assert!(leftovers.is_empty());
}

/// Load rate on a 1M-object, 3M-edge dump. Timing is printed, never
/// asserted: `cargo test --release -p heapdump-analyze --test export_sqlite
/// -- --ignored --nocapture load_rate`.
#[test]
#[ignore]
fn load_rate_on_a_million_objects_and_three_million_edges() {
    use heapdump_formats::read::Dump;
    use heapdump_formats::records::{AllocationRecord, EdgeRecord, edge_flags};
    use heapdump_formats::testing::{DumpBuilder, SplitMix64};

    let objects = 1_000_000u64;
    let mut b = DumpBuilder::default();
    b.process.pointer_size = 8;
    b.process.machine = 62;
    b.stack(&[]);
    for s in 1..=64u64 {
        b.stack(&[0x1000 * s]);
    }
    for i in 0..objects {
        b.allocations.push(AllocationRecord {
            address: 0x10_0000 + i * 64,
            size: 64,
            sequence: i,
            stack: (i % 64 + 1) as u32,
            thread: u32::MAX,
            align: 8,
            flags: 0,
        });
    }
    let mut rng = SplitMix64(7);
    for i in 0..objects {
        for slot in 0..3u64 {
            b.edges.push(EdgeRecord {
                source: i as u32,
                target: rng.below(objects) as u32,
                source_offset: slot * 8,
                target_offset: 0,
                flags: 0,
                reserved: 0,
            });
        }
    }
    b.roots.push(heapdump_formats::records::RootRecord {
        kind: heapdump_formats::records::root_kind::OTHER,
        size: 8,
        ..Default::default()
    });
    b.edges.push(EdgeRecord {
        source: 0,
        target: 0,
        source_offset: 0,
        target_offset: 0,
        flags: edge_flags::FROM_ROOT,
        reserved: 0,
    });
    b.fix_totals();
    let dump = Dump::from_vec(b.to_bytes()).expect("dump");
    let start = std::time::Instant::now();
    let model = HeapModel::build(dump.view(), |_: u32| Ok(Vec::new())).expect("model");
    let model_seconds = start.elapsed().as_secs_f64();
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("load-rate.db");
    let summary = write_sqlite(&model, &path, "synthetic").expect("write");
    let rows = summary.rows();
    println!(
        "model {model_seconds:.2} s; {rows} rows and indexes written in {:.2} s = {:.0} rows/s; schema and ANALYZE {:.2} s; {} MB",
        summary.load_seconds,
        rows as f64 / summary.load_seconds,
        summary.index_seconds,
        std::fs::metadata(&path).map_or(0, |m| m.len()) / 1_000_000
    );
}
