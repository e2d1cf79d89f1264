//! The `real_heaps` example read as a developer reads a real program's
//! heap: a site in a dependency names the program's frame that led there,
//! stacks start past the tracker, and a pointer that is only bytes in a
//! `Vec<u8>` keeps nothing alive unless `--heuristics none` asks for
//! memcheck's rules.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use heapdump_tests::{
    binary, heapdump, heapdump_json, line_of, run_ok, scratch_dir, workspace_root,
};

fn real_heaps_dump(test: &str) -> PathBuf {
    let dump = scratch_dir(test).join("real.hdump");
    run_ok(Command::new(binary("real_heaps")).arg(&dump));
    dump
}

fn source() -> PathBuf {
    workspace_root().join("examples/src/bin/real_heaps.rs")
}

#[test]
fn a_site_in_a_dependency_names_the_programs_frame_and_groups_by_it() {
    let dump = real_heaps_dump("real_heaps_own_frame");
    let top = heapdump_json(&[OsStr::new("top"), dump.as_os_str()]);
    let rows = top["rows"].as_array().expect("rows");
    let smallvec = rows
        .iter()
        .find(|r| {
            r["function"]
                .as_str()
                .is_some_and(|f| f.starts_with("smallvec::"))
        })
        .unwrap_or_else(|| panic!("no smallvec row in {top:#}"));
    // 100 positions of 8 bytes, after shrink_to_fit.
    assert_eq!(smallvec["bytes"], 800, "{smallvec}");
    assert_eq!(smallvec["count"], 1, "{smallvec}");
    assert!(
        smallvec["file"]
            .as_str()
            .is_some_and(|f| f.contains("/registry/src/") && f.contains("/smallvec-")),
        "{smallvec}"
    );
    let own = &smallvec["own_frame"];
    assert_eq!(own["function"], "real_heaps::index_words", "{smallvec}");
    assert_eq!(own["file"], source().to_str().unwrap(), "{smallvec}");
    assert_eq!(
        own["line"],
        line_of(&source(), "// own frame: index_words"),
        "{smallvec}"
    );
    // Sites in the program's own code name nothing more.
    for row in rows {
        if row["function"]
            .as_str()
            .is_some_and(|f| f.starts_with("real_heaps::"))
        {
            assert!(row["own_frame"].is_null(), "{row}");
        }
    }
    // No stack example starts in the allocator or the tracker.
    for row in rows {
        let first = row["stack_example"][0]["function"].as_str().unwrap_or("");
        assert!(
            !first.contains("heapdump_capture") && !first.contains("__rust_"),
            "{row}"
        );
    }

    let by_own = heapdump_json(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("--by"),
        OsStr::new("own-function"),
    ]);
    assert_eq!(by_own["by"], "own-function");
    let row = by_own["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["function"] == "real_heaps::index_words")
        .unwrap_or_else(|| panic!("no index_words row in {by_own:#}"));
    assert_eq!(row["bytes"], 800, "{row}");

    // Choosing smallvec as the program's own code makes its site own.
    let chosen = heapdump_json(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("--own-crate"),
        OsStr::new("smallvec"),
    ]);
    let row = chosen["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["bytes"] == 800)
        .unwrap_or_else(|| panic!("no 800-byte row in {chosen:#}"));
    assert!(row["own_frame"].is_null(), "{row}");
}

fn class_total(leaks: &serde_json::Value, class: &str) -> (u64, u64) {
    let total = leaks["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .find(|t| t["class"] == class)
        .unwrap_or_else(|| panic!("no {class} in {leaks:#}"));
    (
        total["blocks"].as_u64().unwrap(),
        total["bytes"].as_u64().unwrap(),
    )
}

#[test]
fn bytes_in_a_byte_buffer_keep_nothing_alive_unless_heuristics_are_none() {
    let dump = real_heaps_dump("real_heaps_pointer_free");
    let leaks = heapdump_json(&[OsStr::new("leaks"), dump.as_os_str()]);
    // The 72-byte block, and the two that `Reading`s hide (see the next
    // test).
    assert_eq!(
        class_total(&leaks, "definitely_lost"),
        (3, 72 + 88 + 96),
        "{leaks:#}"
    );
    assert_eq!(leaks["pointer_free_edges"], 3, "{leaks:#}");
    let record = leaks["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["site"]["function"] == "real_heaps::hide_in_bytes")
        .unwrap_or_else(|| panic!("no hide_in_bytes record in {leaks:#}"));
    assert_eq!(record["class"], "definitely_lost");
    assert_eq!(
        (&record["blocks"], &record["direct_bytes"]),
        (&1.into(), &72.into())
    );
    assert_eq!(
        record["site"]["line"],
        line_of(&source(), "// site: hidden block")
    );

    // Memcheck's rules: every word is a pointer, the block is reached.
    let memcheck = heapdump_json(&[
        OsStr::new("leaks"),
        dump.as_os_str(),
        OsStr::new("--heuristics"),
        OsStr::new("none"),
    ]);
    assert_eq!(class_total(&memcheck, "definitely_lost"), (0, 0));
    assert_eq!(memcheck["pointer_free_edges"], 0);
    let reachable = class_total(&memcheck, "still_reachable");
    assert_eq!(
        class_total(&leaks, "still_reachable"),
        (reachable.0 - 3, reachable.1 - 72 - 88 - 96)
    );

    // Retention follows: the byte buffer retains only itself, or, by
    // memcheck's rules, the block its bytes name too.
    let buffer_retains = |heuristics: &str| {
        let retained = heapdump_json(&[
            OsStr::new("top"),
            dump.as_os_str(),
            OsStr::new("--retained"),
            OsStr::new("-n"),
            OsStr::new("100"),
            OsStr::new("--heuristics"),
            OsStr::new(heuristics),
        ]);
        let line = line_of(&source(), "// site: byte buffer");
        let site = retained["sites"]
            .as_array()
            .expect("sites")
            .iter()
            .find(|s| s["site"]["line"] == line)
            .unwrap_or_else(|| panic!("no byte buffer site in {retained:#}"))
            .clone();
        (
            retained["pointer_free_edges"].clone(),
            site["retained"].clone(),
        )
    };
    assert_eq!(buffer_retains("default"), (3.into(), 64.into()));
    assert_eq!(buffer_retains("none"), (0.into(), (64 + 72).into()));
}

#[test]
fn dwarf_says_which_of_the_programs_own_structs_hold_no_pointer() {
    let dump = real_heaps_dump("real_heaps_dwarf_pointer_free");
    let leaks = |heuristics: &str| {
        heapdump_json(&[
            OsStr::new("leaks"),
            dump.as_os_str(),
            OsStr::new("--show"),
            OsStr::new("all"),
            OsStr::new("--heuristics"),
            OsStr::new(heuristics),
        ])
    };
    // The class, blocks and bytes of the loss record whose site is the
    // line marked `marker`.
    let record = |leaks: &serde_json::Value, marker: &str| {
        let line = line_of(&source(), marker);
        let found: Vec<&serde_json::Value> = leaks["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter(|r| r["site"]["line"] == line)
            .collect();
        assert_eq!(found.len(), 1, "{marker}: {found:#?}");
        (
            found[0]["class"].as_str().unwrap().to_owned(),
            found[0]["blocks"].as_u64().unwrap(),
            found[0]["direct_bytes"].as_u64().unwrap(),
        )
    };
    let typed = leaks("default");
    let lost = |bytes: u64| ("definitely_lost".to_owned(), 1, bytes);
    let reachable = |bytes: u64| ("still_reachable".to_owned(), 1, bytes);
    // A `Reading` is numbers only, an enum's variants among them: the f64
    // that holds an address is no pointer, in a `Box<Reading>` and in a
    // `Vec<Reading>` buffer alike.
    assert_eq!(record(&typed, "// site: hidden by a Reading"), lost(88));
    assert_eq!(
        record(&typed, "// site: hidden by a Vec<Reading>"),
        lost(96)
    );
    assert_eq!(record(&typed, "// site: boxed Reading"), reachable(32));
    assert_eq!(record(&typed, "// site: Reading buffer"), reachable(64));
    // A `Box` field is a pointer, and a `usize` may hold an address.
    assert_eq!(
        record(&typed, "// site: kept by a Box field"),
        reachable(104)
    );
    assert_eq!(record(&typed, "// site: held by a usize"), reachable(112));
    assert_eq!(typed["pointer_free_edges"], 3, "{typed:#}");

    // Memcheck's rules: every word is a pointer.
    let memcheck = leaks("none");
    assert_eq!(
        record(&memcheck, "// site: hidden by a Reading"),
        reachable(88)
    );
    assert_eq!(
        record(&memcheck, "// site: hidden by a Vec<Reading>"),
        reachable(96)
    );
    assert_eq!(class_total(&memcheck, "definitely_lost"), (0, 0));
}

#[test]
fn many_holders_from_one_site_are_one_row_with_the_range_they_retain() {
    let dump = real_heaps_dump("real_heaps_groups");
    let report = heapdump_json(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("--retained"),
        OsStr::new("-n"),
        OsStr::new("100"),
    ]);
    let groups = report["object_groups"].as_array().expect("object_groups");
    let group = |ty: &str| {
        groups
            .iter()
            .find(|g| g["largest"]["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} group in {report:#}"))
    };
    // Twelve 40-byte RcInner<Holder>, each retaining its Vec<u64> of
    // 64 × (i + 1) bytes.
    let holders = group("RcInner<real_heaps::Holder>");
    assert_eq!(holders["count"], 12, "{holders}");
    assert_eq!(holders["bytes"], 12 * 40, "{holders}");
    assert_eq!(holders["retained_min"], 40 + 64, "{holders}");
    assert_eq!(holders["retained_max"], 40 + 768, "{holders}");
    assert_eq!(holders["largest"]["retained"], 40 + 768, "{holders}");
    let buffers = group("Vec<u64> buffer");
    assert_eq!(buffers["count"], 12, "{buffers}");
    assert_eq!(buffers["bytes"], 64 * 78, "{buffers}");
    assert_eq!(
        (&buffers["retained_min"], &buffers["retained_max"]),
        (&64.into(), &768.into())
    );
    // Groups are ranked by their largest retained size; the per-object
    // list is still in the JSON, one by one.
    let maxima: Vec<u64> = groups
        .iter()
        .map(|g| g["retained_max"].as_u64().unwrap())
        .collect();
    assert!(maxima.windows(2).all(|w| w[0] >= w[1]), "{maxima:?}");
    assert_eq!(report["objects"].as_array().map(Vec::len), Some(40));
    let listed: u64 = groups.iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(listed, 40);

    // Blocks std allocates before `main` are sited in its runtime, not in
    // a bare `main` without a file.
    let top = heapdump_json(&[OsStr::new("top"), dump.as_os_str()]);
    for row in top["rows"].as_array().expect("rows") {
        assert!(row["function"] != "main" || !row["file"].is_null(), "{row}");
    }
    assert!(
        top["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["function"] == "std::rt::init"),
        "{top:#}"
    );
}

#[test]
fn long_type_names_are_abbreviated_in_text_unless_asked_in_full_and_whole_in_json() {
    let dump = real_heaps_dump("real_heaps_full_names");
    // The 10-byte block: six nested `Wrapper`s.
    let deep = format!(
        "{}[u16; 5]{}",
        "real_heaps::Wrapper<".repeat(6),
        ">".repeat(6)
    );
    let short = format!(
        "real_heaps::{}[u16; 5]{}",
        "Wrapper<".repeat(6),
        ">".repeat(6)
    );
    let text = |args: &[&str]| {
        let mut all = vec![OsStr::new(args[0]), dump.as_os_str()];
        all.extend(args[1..].iter().map(OsStr::new));
        heapdump(&all)
    };
    // `top --by type`: the 10-byte block's row.
    let row = |table: &str| -> String {
        table
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["10", "10"]))
            .unwrap_or_else(|| panic!("no 10-byte row in\n{table}"))
            .to_owned()
    };
    let by_type = text(&["top", "--by", "type", "-n", "100"]);
    assert!(row(&by_type).ends_with(&format!("  {short}")), "{by_type}");
    let by_type = text(&["top", "--by", "type", "-n", "100", "--full-names"]);
    assert!(row(&by_type).ends_with(&format!("  {deep}")), "{by_type}");
    // JSON has the name whole, with or without the flag.
    let json = heapdump_json(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("--by"),
        OsStr::new("type"),
        OsStr::new("-n"),
        OsStr::new("100"),
    ]);
    let rows = json["rows"].as_array().expect("rows");
    assert!(rows.iter().any(|r| r["type"] == deep.as_str()), "{json:#}");
    // `top --retained` names the block's type the same way.
    let retained = text(&["top", "--retained", "-n", "100"]);
    assert!(
        retained.contains(&short) && !retained.contains(&deep),
        "{retained}"
    );
    let retained = text(&["top", "--retained", "-n", "100", "--full-names"]);
    assert!(
        retained.contains(&deep) && !retained.contains(&short),
        "{retained}"
    );
    // And `todot`'s labels; its tooltips have the name whole either way.
    let dot = text(&["todot", "--group-by", "type"]);
    assert!(dot.contains(&format!("label=\"{short}\\n")), "{dot}");
    assert!(dot.contains(&format!("tooltip=\"{deep}\"")), "{dot}");
    let dot = text(&["todot", "--group-by", "type", "--full-names"]);
    assert!(dot.contains(&format!("label=\"{deep}\\n")), "{dot}");
    assert!(!dot.contains(&short), "{dot}");
}
