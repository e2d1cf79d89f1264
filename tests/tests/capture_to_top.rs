//! End to end: a program with a known heap writes a dump, and `heapdump
//! info`, `verify` and `top` read it back, symbolized against the program's
//! own binary (found through the module path recorded in the dump).

use std::ffi::OsStr;
use std::process::Command;

use heapdump_formats::read::Dump;
use heapdump_formats::testing::{CorruptionOptions, check_corruption};
use heapdump_tests::{binary, heapdump, key_values, line_of, run_ok, scratch_dir, workspace_root};

fn blocks_dump(
    test: &str,
) -> (
    std::path::PathBuf,
    std::collections::BTreeMap<String, String>,
) {
    let dir = scratch_dir(test);
    let dump = dir.join("blocks.hdump");
    let output = run_ok(Command::new(binary("blocks")).arg(&dump));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (dump, key_values(&stdout, "RESULT "))
}

fn number(values: &std::collections::BTreeMap<String, String>, key: &str) -> u64 {
    values[key].parse().expect("not a number")
}

#[test]
fn top_reports_make_blocks_and_make_vectors_with_exact_bytes_file_and_line() {
    let (dump, result) = blocks_dump("top_exact");
    let json = heapdump(&[OsStr::new("top"), dump.as_os_str(), OsStr::new("--json")]);
    let top: serde_json::Value = serde_json::from_str(&json).expect("top --json is not JSON");

    // Totals equal the tracker's own statistics taken at the dump.
    assert_eq!(
        top["total_bytes"].as_u64(),
        Some(number(&result, "live_bytes"))
    );
    assert_eq!(
        top["total_count"].as_u64(),
        Some(number(&result, "live_count"))
    );
    assert_eq!(
        number(&result, "live_count"),
        number(&result, "dumped_allocations")
    );

    let source = workspace_root().join("examples/src/bin/blocks.rs");
    let rows = top["rows"].as_array().expect("rows");
    let row = |function: &str| {
        rows.iter()
            .find(|row| row["function"].as_str() == Some(function))
            .unwrap_or_else(|| panic!("no row for {function} in {json}"))
    };
    for (function, marker, bytes, count) in [
        (
            "blocks::make_blocks",
            "// site: make_blocks",
            1000 * 4096,
            1000,
        ),
        (
            "blocks::make_vectors",
            "// site: make_vectors",
            10 * 8000,
            10,
        ),
    ] {
        let row = row(function);
        assert_eq!(row["bytes"].as_u64(), Some(bytes), "{row}");
        assert_eq!(row["count"].as_u64(), Some(count), "{row}");
        assert_eq!(
            row["file"].as_str(),
            Some(source.to_str().unwrap()),
            "{row}"
        );
        assert_eq!(
            row["line"].as_u64(),
            Some(u64::from(line_of(&source, marker))),
            "{row}"
        );
    }
    // The biggest site comes first.
    assert_eq!(rows[0]["function"].as_str(), Some("blocks::make_blocks"));
}

#[test]
fn top_by_type_names_the_boxed_blocks_as_top_retained_does() {
    let (dump, result) = blocks_dump("top_by_type");
    let json = heapdump(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("--by"),
        OsStr::new("type"),
        OsStr::new("--json"),
    ]);
    let top: serde_json::Value = serde_json::from_str(&json).expect("top --json is not JSON");
    assert_eq!(top["by"], "type");
    assert_eq!(
        top["total_bytes"].as_u64(),
        Some(number(&result, "live_bytes"))
    );
    let rows = top["rows"].as_array().expect("rows");
    // make_blocks: 1000 × Box<[u8; 4096]>, the biggest group; make_vectors:
    // 10 Vec<u64> of 1000 elements.
    assert_eq!(rows[0]["type"], "[u8; 4096]", "{json}");
    assert_eq!(rows[0]["bytes"].as_u64(), Some(4_096_000), "{json}");
    assert_eq!(rows[0]["count"].as_u64(), Some(1000), "{json}");
    assert_eq!(rows[0]["function"], serde_json::Value::Null, "{json}");
    assert_eq!(rows[1]["type"], "Vec<u64> buffer", "{json}");
    assert_eq!(rows[1]["bytes"].as_u64(), Some(80_000), "{json}");
    assert_eq!(rows[1]["count"].as_u64(), Some(10), "{json}");
    // main's `Vec::with_capacity(1000)` of the boxes: every constructor
    // frame is inlined into main and named `Vec<T>::with_capacity`; the `T`
    // (a `Box`, a DWARF pointer type) comes from the inlined instances'
    // template parameters.
    assert_eq!(rows[2]["type"], "Vec<Box<[u8; 4096]>> buffer", "{json}");
    assert_eq!(rows[2]["bytes"].as_u64(), Some(8_000), "{json}");
    assert_eq!(rows[2]["count"].as_u64(), Some(1), "{json}");

    // The same label as `top --retained`'s types table.
    let retained = heapdump(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("--retained"),
        OsStr::new("--json"),
    ]);
    let retained: serde_json::Value = serde_json::from_str(&retained).unwrap();
    let types = retained["types"].as_array().expect("types");
    let blocks = types
        .iter()
        .find(|t| t["type"] == "[u8; 4096]")
        .unwrap_or_else(|| panic!("no [u8; 4096] row in {retained}"));
    assert_eq!(blocks["retained"].as_u64(), Some(4_096_000), "{blocks}");
    assert_eq!(blocks["objects"].as_u64(), Some(1000), "{blocks}");
    // The object retaining the most is that buffer: itself and the boxes.
    let first = &retained["objects"][0];
    assert_eq!(first["type"], "Vec<Box<[u8; 4096]>> buffer", "{first}");
    assert_eq!(first["size"].as_u64(), Some(8_000), "{first}");
    assert_eq!(
        first["retained"].as_u64(),
        Some(8_000 + 4_096_000),
        "{first}"
    );
    assert_eq!(first["site"]["line"].as_u64(), Some(36), "{first}");

    // Rows by site have no "type" member.
    let by_site = heapdump(&[OsStr::new("top"), dump.as_os_str(), OsStr::new("--json")]);
    let by_site: serde_json::Value = serde_json::from_str(&by_site).unwrap();
    assert!(by_site["rows"][0].get("type").is_none(), "{by_site}");

    // --by has no meaning with --retained: a usage error.
    let output = Command::new(binary("heapdump"))
        .args([OsStr::new("top"), dump.as_os_str()])
        .args(["--retained", "--by", "type"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--retained"), "{stderr}");
}

#[test]
fn verify_passes_and_info_agrees_with_the_program() {
    let (dump, result) = blocks_dump("verify_info");
    let verify = heapdump(&[OsStr::new("verify"), dump.as_os_str()]);
    assert!(verify.contains("no problems"), "{verify}");
    let info = heapdump(&[OsStr::new("info"), dump.as_os_str(), OsStr::new("--json")]);
    let info: serde_json::Value = serde_json::from_str(&info).expect("info --json is not JSON");
    let text = info.to_string();
    assert!(
        text.contains(&format!("\"live_bytes\":{}", number(&result, "live_bytes"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"live_count\":{}", number(&result, "live_count"))),
        "{text}"
    );
    // The process record agrees with what the program printed.
    let parsed = Dump::open(&dump).expect("the dump does not parse");
    let process = parsed.view().process();
    assert_eq!(process.live_bytes, number(&result, "live_bytes"));
    assert_eq!(process.dropped_allocations, 0);
    assert_eq!(process.dropped_stacks, 0);
}

#[test]
fn a_real_dump_cut_at_every_offset_or_with_flipped_bytes_never_panics() {
    let (dump, _) = blocks_dump("corruption");
    let bytes = std::fs::read(&dump).expect("cannot read the dump");
    let report = check_corruption(
        &bytes,
        &CorruptionOptions {
            max_parse_bytes: 2 << 30,
            ..CorruptionOptions::default()
        },
    );
    // Every prefix is rejected (a dump is only whole with its trailer), and
    // thousands of flipped bytes were tried.
    assert_eq!(report.truncations as usize, bytes.len());
    assert!(report.flips > 1000, "{report:?}");
}

#[test]
fn cli_errors_name_the_file_and_exit_nonzero() {
    let (dump, _) = blocks_dump("cli_errors");
    let bytes = std::fs::read(&dump).unwrap();
    let cut = dump.with_file_name("cut.hdump");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for args in [
        vec![OsStr::new("info"), cut.as_os_str()],
        vec![OsStr::new("verify"), cut.as_os_str()],
        vec![OsStr::new("top"), cut.as_os_str()],
    ] {
        let output = Command::new(binary("heapdump"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} succeeded on a cut dump");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("cut.hdump"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // A binary that is not the one that was dumped is not used: its
    // build-id differs, so functions are named from the dump itself.
    let wrong = binary("demo");
    let output = Command::new(binary("heapdump"))
        .args([OsStr::new("top"), dump.as_os_str(), wrong.as_os_str()])
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is not the binary that wrote the dump (build-id",
            wrong.display()
        )),
        "{stderr}"
    );
    let top: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(top["rows"][0]["function"], "blocks::make_blocks", "{top}");
    assert_eq!(top["rows"][0]["file"], serde_json::Value::Null, "{top}");
}

#[test]
fn top_names_the_functions_after_the_executable_is_deleted() {
    // A copy of the program, so deleting it leaves the shared one alone.
    let dir = scratch_dir("executable_deleted");
    let program = dir.join("blocks-copy");
    std::fs::copy(binary("blocks"), &program).unwrap();
    let dump = dir.join("blocks.hdump");
    let output = run_ok(Command::new(&program).arg(&dump));
    let result = key_values(&String::from_utf8_lossy(&output.stdout), "RESULT ");
    // The dump is moved elsewhere and the executable is gone.
    let moved = dir.join("moved.hdump");
    std::fs::copy(&dump, &moved).unwrap();
    std::fs::remove_file(&dump).unwrap();
    std::fs::remove_file(&program).unwrap();
    assert!(!program.exists());

    let output = Command::new(binary("heapdump"))
        .args([OsStr::new("top"), moved.as_os_str(), OsStr::new("--json")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let top: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        top["total_bytes"].as_u64(),
        Some(number(&result, "live_bytes"))
    );
    let rows = top["rows"].as_array().expect("rows");
    let row = |function: &str| {
        rows.iter()
            .find(|row| row["function"].as_str() == Some(function))
            .unwrap_or_else(|| panic!("no row for {function} in {top}"))
    };
    // The same sites, sizes and counts as with the binary; no file or line.
    for (function, bytes, count) in [
        ("blocks::make_blocks", 1000 * 4096, 1000),
        ("blocks::make_vectors", 10 * 8000, 10),
    ] {
        let row = row(function);
        assert_eq!(row["bytes"].as_u64(), Some(bytes), "{row}");
        assert_eq!(row["count"].as_u64(), Some(count), "{row}");
        assert_eq!(row["file"], serde_json::Value::Null, "{row}");
        assert_eq!(row["line"], serde_json::Value::Null, "{row}");
    }
    assert_eq!(rows[0]["function"], "blocks::make_blocks");
    // Said once, naming the executable looked for.
    let warning = format!(
        "warning: the dumped program's executable {} was not found: functions are named from the symbol names the dump carries; file:line, inlined frames and types need that binary",
        program.display()
    );
    assert_eq!(stderr.matches(&warning).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("need that binary").count(), 1, "{stderr}");
    // The names are in the file: verify passes and every frame has a record.
    let parsed = Dump::open(&moved).unwrap();
    let view = parsed.view();
    let names = view.frame_names().unwrap().expect("no FrameNames section");
    assert_eq!(names.len(), view.frames().len());
    let verify = heapdump(&[OsStr::new("verify"), moved.as_os_str()]);
    assert!(verify.contains("no problems"), "{verify}");
}
