//! `heapdump tohprof` on real dumps of the example programs: an independent
//! parser (the `jvm-hprof` crate) and VisualVM's own heap library (through
//! `tests/visualvm/Harness.java`) both see every live allocation, with the
//! live bytes of `heapdump info` as the total, the roots and the pointers.
//!
//! The VisualVM test needs `java`/`javac` (Debian `default-jdk-headless`)
//! and the heap library from the Debian package `visualvm`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use heapdump_tests::{binary, heapdump, run_ok, scratch_dir, workspace_root};
use jvm_hprof::heap_dump::SubRecord;
use jvm_hprof::{RecordTag, parse_hprof};

/// Live bytes and allocations, as `heapdump info --json` reports them.
fn live(dump: &Path) -> (u64, u64) {
    let json = heapdump(&[OsStr::new("info"), dump.as_os_str(), OsStr::new("--json")]);
    let info: serde_json::Value = serde_json::from_str(&json).expect("info --json is JSON");
    (
        info["heap"]["live_bytes"].as_u64().expect("live_bytes"),
        info["heap"]["live_count"].as_u64().expect("live_count"),
    )
}

fn dump_and_export(dir: &Path, example: &str) -> (PathBuf, PathBuf) {
    let dump = dir.join(format!("{example}.hdump"));
    run_ok(Command::new(binary(example)).arg(&dump));
    let hprof = dir.join(format!("{example}.hprof"));
    run_ok(
        Command::new(binary("heapdump"))
            .arg("tohprof")
            .arg(&dump)
            .arg("-o")
            .arg(&hprof),
    );
    (dump, hprof)
}

/// Per class name: (instances, bytes), with the parser's own bookkeeping.
fn class_totals(bytes: &[u8]) -> BTreeMap<String, (u64, u64)> {
    let hprof = parse_hprof(bytes).expect("header");
    let mut strings = HashMap::new();
    let mut names = HashMap::new();
    let mut sizes = HashMap::new();
    let mut instances = Vec::new();
    for record in hprof.records_iter() {
        let record = record.expect("record");
        match record.tag() {
            RecordTag::Utf8 => {
                let u = record.as_utf_8().unwrap().expect("utf8");
                strings.insert(u.name_id().id(), u.text_as_str().expect("utf-8").to_owned());
            }
            RecordTag::LoadClass => {
                let c = record.as_load_class().unwrap().expect("load class");
                names.insert(c.class_obj_id().id(), c.class_name_id().id());
            }
            RecordTag::HeapDumpSegment => {
                let segment = record.as_heap_dump_segment().unwrap().expect("segment");
                for sub in segment.sub_records() {
                    match sub.expect("sub-record") {
                        SubRecord::Class(c) => {
                            sizes.insert(c.obj_id().id(), c.instance_size_bytes());
                        }
                        SubRecord::Instance(i) => instances.push(i.class_obj_id().id()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for class in instances {
        let name = strings[&names[&class]].clone();
        let entry = totals.entry(name).or_default();
        entry.0 += 1;
        entry.1 += u64::from(sizes[&class]);
    }
    totals
}

#[test]
fn an_independent_parser_sees_every_live_allocation_of_real_dumps() {
    let dir = scratch_dir("export_hprof");
    for example in ["leaks", "blocks"] {
        let (dump, hprof) = dump_and_export(&dir, example);
        let (live_bytes, live_count) = live(&dump);
        let totals = class_totals(&std::fs::read(&hprof).expect("read the HPROF file"));
        let threads = totals.get("java.lang.Thread").copied().unwrap_or_default();
        assert!(threads.0 >= 1, "{example}: a thread object");
        assert_eq!(threads.1, 0, "{example}: thread objects have no bytes");
        let count: u64 = totals.values().map(|t| t.0).sum::<u64>() - threads.0;
        let bytes: u64 = totals.values().map(|t| t.1).sum();
        assert_eq!(count, live_count, "{example}: {totals:?}");
        assert_eq!(bytes, live_bytes, "{example}");
        if example == "leaks" {
            assert_eq!(totals["leaks::ListNode"], (100, 100_000), "{totals:?}");
        }
    }
}

/// Compiles the harness into `dir`; panics naming the packages to install.
fn harness(dir: &Path) -> (PathBuf, PathBuf) {
    let jar = PathBuf::from(
        "/usr/share/visualvm/visualvm/modules/org-graalvm-visualvm-lib-jfluid-heap.jar",
    );
    let javac = Command::new("javac").arg("-version").output();
    assert!(
        javac.is_ok_and(|o| o.status.success()),
        "javac not found: install the Debian package default-jdk-headless (Java 17)"
    );
    assert!(
        jar.exists(),
        "{} not found: install the Debian package visualvm",
        jar.display()
    );
    let classes = dir.join("harness");
    run_ok(
        Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg("-cp")
            .arg(&jar)
            .arg(workspace_root().join("tests/visualvm/Harness.java")),
    );
    (classes, jar)
}

/// Runs the harness on a private copy of `hprof` (VisualVM keeps an index
/// cache beside the file) and returns its lines split at tabs.
fn visualvm(dir: &Path, hprof: &Path, ids: &[u64]) -> Vec<Vec<String>> {
    let (classes, jar) = harness(dir);
    let private = dir.join(format!("visualvm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::create_dir_all(&private).expect("mkdir");
    let copy = private.join(hprof.file_name().expect("name"));
    std::fs::copy(hprof, &copy).expect("copy");
    let mut cp = classes.into_os_string();
    cp.push(":");
    cp.push(jar);
    let output = run_ok(
        Command::new("java")
            .arg("-cp")
            .arg(cp)
            .arg("Harness")
            .arg(&copy)
            .args(ids.iter().map(|id| format!("{id:x}"))),
    );
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// The rows of `sql` (columns joined by `|`) on the `tosqlite` database
/// of `dump` (written beside it on first use).
fn query(dump: &Path, sql: &str) -> Vec<String> {
    let db = dump.with_extension("db");
    if !db.exists() {
        run_ok(
            Command::new(binary("heapdump"))
                .arg("tosqlite")
                .arg(dump)
                .arg("-o")
                .arg(&db),
        );
    }
    let output = run_ok(Command::new("sqlite3").arg(&db).arg(sql));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The addresses of the allocations of `size` bytes.
fn addresses_of_size(dump: &Path, size: u64) -> Vec<u64> {
    query(
        dump,
        &format!("SELECT address FROM objects WHERE size = {size}"),
    )
    .iter()
    .map(|l| l.trim().parse().expect("an address"))
    .collect()
}

#[test]
fn visualvm_opens_the_export_with_the_live_totals_roots_and_pointers() {
    let dir = scratch_dir("export_hprof_visualvm");
    let (dump, hprof) = dump_and_export(&dir, "leaks");
    let (live_bytes, live_count) = live(&dump);
    // The block leaks::REACHABLE holds (2000 bytes) and the hash map's
    // table (288 bytes, pointing at its ten 2040-byte boxes).
    let reachable = addresses_of_size(&dump, 2000);
    let table = addresses_of_size(&dump, 288);
    assert_eq!((reachable.len(), table.len()), (1, 1));
    let lines = visualvm(&dir, &hprof, &[reachable[0], table[0]]);
    let find =
        |kind: &str| -> Vec<&Vec<String>> { lines.iter().filter(|l| l[0] == kind).collect() };

    // One thread object besides the allocations; it has no bytes.
    let total = find("total")[0];
    assert_eq!(total[1], (live_count + 1).to_string(), "{lines:?}");
    assert_eq!(total[2], live_bytes.to_string(), "{lines:?}");
    let summary = find("summary")[0];
    assert_eq!(summary[2], live_bytes.to_string(), "{lines:?}");

    let classes: BTreeMap<&str, (&str, &str)> = find("class")
        .into_iter()
        .map(|l| (l[1].as_str(), (l[2].as_str(), l[3].as_str())))
        .collect();
    assert_eq!(classes["leaks::ListNode"], ("100", "100000"), "{classes:?}");
    for required in [
        "java.lang.Object",
        "java.lang.Class",
        "java.lang.ref.Reference",
    ] {
        assert!(classes.contains_key(required), "{required}: {classes:?}");
    }

    let roots: BTreeMap<&str, &str> = find("root")
        .into_iter()
        .map(|l| (l[1].as_str(), l[2].as_str()))
        .collect();
    assert_eq!(roots.get("thread object"), Some(&"1"), "{roots:?}");
    assert!(roots.contains_key("Java frame"), "{roots:?}");
    assert!(roots.contains_key("sticky class"), "{roots:?}");

    // The static's block: its own size retained, reached from a class
    // (the `statics of leaks` holder), not unreachable.
    let objects = find("object");
    let block = objects
        .iter()
        .find(|l| l[1] == format!("{:x}", reachable[0]))
        .expect("the block is loaded");
    assert_eq!(block[3], "2000", "{block:?}");
    assert_eq!(block[4], "2000", "{block:?}");
    assert_ne!(block[5], "none", "{block:?}");
    // The table: ten pointer fields to 2040-byte boxes, which it retains.
    let table_line = objects
        .iter()
        .find(|l| l[1] == format!("{:x}", table[0]))
        .expect("the table is loaded");
    assert_eq!(table_line[3], "288");
    let retained: u64 = table_line[4].parse().expect("retained size");
    assert!(retained >= 288 + 2 * 2040, "{table_line:?}");
    let fields: Vec<_> = find("field")
        .into_iter()
        .filter(|l| l[1] == format!("{:x}", table[0]) && l[3] != "0")
        .collect();
    assert_eq!(fields.len(), 10, "{fields:?}");
}

#[test]
fn visualvm_sees_one_thread_object_per_thread_and_every_root_kind_of_the_demo() {
    let dir = scratch_dir("export_hprof_visualvm_demo");
    let (dump, hprof) = dump_and_export(&dir, "demo");
    let (live_bytes, live_count) = live(&dump);
    let json = heapdump(&[OsStr::new("info"), dump.as_os_str(), OsStr::new("--json")]);
    let info: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let threads = info["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .filter(|t| {
            t["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "ALIVE"))
        })
        .count() as u64;
    assert!(threads > 1, "the demo runs several threads");
    let lines = visualvm(&dir, &hprof, &[]);
    let total = lines.iter().find(|l| l[0] == "total").expect("total");
    assert_eq!(total[1], (live_count + threads).to_string(), "{lines:?}");
    assert_eq!(total[2], live_bytes.to_string(), "{lines:?}");
    let roots: BTreeMap<&str, &str> = lines
        .iter()
        .filter(|l| l[0] == "root")
        .map(|l| (l[1].as_str(), l[2].as_str()))
        .collect();
    assert_eq!(
        roots.get("thread object"),
        Some(&threads.to_string().as_str()),
        "{roots:?}"
    );
    // One GC root per pointer from a thread's stack, registers or TLS;
    // statics hang off sticky classes. Which kinds hold a pointer varies
    // from run to run, so the dump says what to expect.
    let by_kind: BTreeMap<String, u64> = query(
        &dump,
        "SELECT r.kind, count(*) FROM root_edges AS e JOIN roots AS r ON r.id = e.root_id GROUP BY r.kind",
    )
    .iter()
    .filter_map(|l| l.split_once('|'))
    .map(|(k, n)| (k.to_owned(), n.parse().expect("a count")))
    .collect();
    let count = |kind: &str| {
        roots
            .get(kind)
            .map_or(0, |n| n.parse::<u64>().expect("count"))
    };
    let ours = |kind: &str| by_kind.get(kind).copied().unwrap_or(0);
    assert_eq!(
        count("Java frame"),
        ours("THREAD_STACK"),
        "{by_kind:?} {roots:?}"
    );
    assert!(count("Java frame") > 0, "{roots:?}");
    assert_eq!(
        count("native stack"),
        ours("REGISTERS"),
        "{by_kind:?} {roots:?}"
    );
    assert_eq!(
        count("thread block"),
        ours("STATIC_TLS") + ours("DYNAMIC_TLS"),
        "{by_kind:?} {roots:?}"
    );
    assert_eq!(
        ours("DATA_SEGMENT") > 0,
        count("sticky class") > 0,
        "{by_kind:?} {roots:?}"
    );
}

#[test]
fn visualvm_shows_long_type_names_abbreviated_unless_asked_in_full() {
    let dir = scratch_dir("export_hprof_visualvm_names");
    let (dump, hprof) = dump_and_export(&dir, "real_heaps");
    // `real_heaps`'s 10-byte block: a `Box` of six nested `Wrapper`s.
    let full = format!(
        "{}[u16; 5]{}",
        "real_heaps::Wrapper<".repeat(6),
        ">".repeat(6)
    );
    let short = format!(
        "real_heaps::{}[u16; 5]{}",
        "Wrapper<".repeat(6),
        ">".repeat(6)
    );
    assert!(full.chars().count() > 100 && short.chars().count() <= 100);
    // Class name -> (instances, bytes), as VisualVM shows them.
    let classes = |hprof: &Path| -> BTreeMap<String, (String, String)> {
        visualvm(&dir, hprof, &[])
            .into_iter()
            .filter(|l| l[0] == "class")
            .map(|l| (l[1].clone(), (l[2].clone(), l[3].clone())))
            .collect()
    };
    let one = ("1".to_owned(), "10".to_owned());
    let abbreviated = classes(&hprof);
    assert_eq!(abbreviated.get(&short), Some(&one), "{abbreviated:#?}");
    assert!(!abbreviated.contains_key(&full), "{abbreviated:#?}");

    let in_full = dir.join("full.hprof");
    run_ok(
        Command::new(binary("heapdump"))
            .arg("tohprof")
            .arg(&dump)
            .arg("--full-names")
            .arg("-o")
            .arg(&in_full),
    );
    let in_full = classes(&in_full);
    assert_eq!(in_full.get(&full), Some(&one), "{in_full:#?}");
    assert!(!in_full.contains_key(&short), "{in_full:#?}");
}
