//! Symbolization against a real binary: this test executable. The dump's
//! module is the running test binary with its real path, build-id, mapping
//! and load bias (from /proc/self/maps), and its frames are addresses inside
//! known functions of this file, so `heapdump top` must name them, their
//! file and their line.

mod cli_common;

use cli_common::heapdump;

use std::path::{Path, PathBuf};
use std::process::Output;

use heapdump_formats::records::{AllocationRecord, FrameNameRecord, ModuleRecord, module_flags};
use heapdump_formats::testing::DumpBuilder;
use object::{Object as _, ObjectSegment as _};

// The marker functions' first instruction is attributed to their `fn` line.
const MARKER_LINE: u32 = line!() + 2;
#[inline(never)]
fn allocation_site_marker() -> Vec<u8> {
    std::hint::black_box(vec![7u8; 100])
}

const OUTER_LINE: u32 = line!() + 2;
#[inline(never)]
fn outer_caller_marker() -> usize {
    allocation_site_marker().len()
}

/// A return address that, minus one, lands inside `f`: what a stack walk
/// would record for a call made from `f`.
fn return_address_in(f: usize) -> u64 {
    f as u64 + 2
}

struct SelfImage {
    path: PathBuf,
    build_id: Vec<u8>,
    start: u64,
    end: u64,
    load_bias: u64,
}

/// Where this executable is mapped, read from /proc/self/maps, and its load
/// bias computed from the mapping that holds `probe` and the ELF segments.
fn self_image(probe: u64) -> SelfImage {
    let path = std::fs::canonicalize("/proc/self/exe").expect("resolve /proc/self/exe");
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read maps");
    let (mut start, mut end) = (u64::MAX, 0u64);
    let mut probe_file_offset = None;
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || Path::new(fields[5]) != path {
            continue;
        }
        let (lo, hi) = fields[0].split_once('-').unwrap();
        let lo = u64::from_str_radix(lo, 16).unwrap();
        let hi = u64::from_str_radix(hi, 16).unwrap();
        let offset = u64::from_str_radix(fields[2], 16).unwrap();
        start = start.min(lo);
        end = end.max(hi);
        if (lo..hi).contains(&probe) {
            probe_file_offset = Some(probe - lo + offset);
        }
    }
    let probe_file_offset = probe_file_offset.expect("probe address is in this executable");
    let data = std::fs::read(&path).expect("read own executable");
    let elf = object::File::parse(&*data).expect("parse own executable");
    let build_id = elf
        .build_id()
        .unwrap()
        .expect("test binary has a build-id")
        .to_vec();
    let segment = elf
        .segments()
        .find(|s| {
            let (off, size) = s.file_range();
            (off..off + size).contains(&probe_file_offset)
        })
        .expect("a PT_LOAD holds the probe");
    let vaddr = segment.address() + (probe_file_offset - segment.file_range().0);
    SelfImage {
        path,
        build_id,
        start,
        end,
        load_bias: probe - vaddr,
    }
}

const LIBRARY_BASE: u64 = 0x10_0000_0000;

/// A dump whose main module is this executable (recorded at `module_path`,
/// with `build_id`), plus a shared library that does not exist on disk.
///
/// Allocations: 300 bytes in 2 blocks from a Vec clone called by the
/// marker (site: the marker), 40 bytes from the outer function, 50 bytes
/// from the missing library called by the outer function, 8 bytes with an
/// unknown stack.
fn dump(module_path: &[u8], build_id: &[u8]) -> Vec<u8> {
    builder(module_path, build_id).to_bytes()
}

/// [`dump`] as a builder.
fn builder(module_path: &[u8], build_id: &[u8]) -> DumpBuilder {
    let marker = allocation_site_marker as fn() -> Vec<u8> as usize;
    let outer = outer_caller_marker as fn() -> usize as usize;
    let clone = <Vec<u8> as Clone>::clone as fn(&Vec<u8>) -> Vec<u8> as usize;
    std::hint::black_box(outer_caller_marker());
    let image = self_image(marker as u64);

    let mut b = DumpBuilder::default();
    let path = b.string(module_path);
    let id = b.string(build_id);
    b.process.pointer_size = 8;
    b.modules.push(ModuleRecord {
        path,
        build_id: id,
        load_bias: image.load_bias,
        start: image.start,
        end: image.end,
        flags: module_flags::MAIN_EXECUTABLE,
        reserved: 0,
    });
    let lib = b.string(b"/nonexistent/lib/libfake.so");
    b.modules.push(ModuleRecord {
        path: lib,
        build_id: heapdump_formats::records::StrRef::EMPTY,
        load_bias: LIBRARY_BASE,
        start: LIBRARY_BASE,
        end: LIBRARY_BASE + 0x10000,
        flags: 0,
        reserved: 0,
    });
    b.stack(&[]);
    let from_marker = b.stack(&[
        return_address_in(clone),
        return_address_in(marker),
        return_address_in(outer),
    ]);
    let from_outer = b.stack(&[return_address_in(outer)]);
    let from_library = b.stack(&[LIBRARY_BASE + 0x1235, return_address_in(outer)]);
    let allocation = |address, size, stack, sequence| AllocationRecord {
        address,
        size,
        sequence,
        stack,
        thread: heapdump_formats::records::UNKNOWN_THREAD,
        align: 8,
        flags: 0,
    };
    b.allocations = vec![
        allocation(0x1000, 200, from_marker, 1),
        allocation(0x2000, 100, from_marker, 2),
        allocation(0x3000, 40, from_outer, 3),
        allocation(0x4000, 50, from_library, 4),
        allocation(0x5000, 8, 0, 5),
    ];
    b.fix_totals();
    b
}

/// [`dump`] with the frame names a capture would store (raw symbols, made
/// up here so they can only have come from the dump): Vec's clone, the
/// marker, the outer function, and a C function in the missing library.
fn named_builder(module_path: &[u8], build_id: &[u8]) -> DumpBuilder {
    let mut b = builder(module_path, build_id);
    let clone = b.string(b"_ZN4core5clone5Clone5clone17h0123456789abcdefE");
    let marker = b.string(b"_ZN9symbolize22allocation_site_marker17h0123456789abcdefE");
    let outer = b.string(b"_ZN9symbolize19outer_caller_marker17h0123456789abcdefE");
    let library = b.string(b"fake_library_function");
    // Frames: [clone, marker, outer], [outer], [library, outer].
    b.frame_names = [clone, marker, outer, outer, library, outer]
        .map(|name| FrameNameRecord { name })
        .to_vec();
    b
}

fn write_dump(name: &str, bytes: &[u8]) -> PathBuf {
    cli_common::write_dump("symbolize", name, bytes)
}

fn this_file() -> String {
    format!("{}/tests/symbolize.rs", env!("CARGO_MANIFEST_DIR"))
}

fn own_path_and_id() -> (PathBuf, Vec<u8>) {
    let image = self_image(allocation_site_marker as fn() -> Vec<u8> as usize as u64);
    (image.path, image.build_id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// bytes, count, function, file, line
type SiteRow<'a> = (u64, u64, &'a str, Option<&'a str>, Option<u64>);

fn assert_sites(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr,
        "warning: shared library /nonexistent/lib/libfake.so not found; its frames are shown as offsets\n"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["total_bytes"], 398);
    assert_eq!(v["total_count"], 5);
    let rows = v["rows"].as_array().unwrap();
    let summary: Vec<SiteRow<'_>> = rows
        .iter()
        .map(|r| {
            (
                r["bytes"].as_u64().unwrap(),
                r["count"].as_u64().unwrap(),
                r["function"].as_str().unwrap(),
                r["file"].as_str(),
                r["line"].as_u64(),
            )
        })
        .collect();
    let file = this_file();
    assert_eq!(
        summary,
        [
            (
                300,
                2,
                "symbolize::allocation_site_marker",
                Some(file.as_str()),
                Some(u64::from(MARKER_LINE))
            ),
            (
                90,
                2,
                "symbolize::outer_caller_marker",
                Some(file.as_str()),
                Some(u64::from(OUTER_LINE))
            ),
            (8, 1, "<unknown>", None, None),
        ]
    );
    // The example stack of the biggest site starts in the library's Vec
    // clone, which the site skipped.
    let example = rows[0]["stack_example"].as_array().unwrap();
    let functions: Vec<&str> = example
        .iter()
        .map(|f| f["function"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        functions.last().copied(),
        Some("symbolize::outer_caller_marker")
    );
    assert!(
        functions[0].contains("clone"),
        "innermost frame should be Vec's clone: {functions:?}"
    );
    assert_eq!(
        functions[functions.len() - 2],
        "symbolize::allocation_site_marker"
    );
}

#[test]
fn top_names_function_file_and_line_of_real_return_addresses() {
    let (path, id) = own_path_and_id();
    let dump = write_dump("own", &dump(path.as_os_str().as_encoded_bytes(), &id));
    assert_sites(&heapdump(&["top", dump.to_str().unwrap(), "--json"]));
}

#[test]
fn binary_argument_overrides_the_recorded_path() {
    let (path, id) = own_path_and_id();
    let dump = write_dump("moved", &dump(b"/nonexistent/moved/app", &id));
    assert_sites(&heapdump(&[
        "top",
        dump.to_str().unwrap(),
        path.to_str().unwrap(),
        "--json",
    ]));
}

#[test]
fn frames_in_a_missing_library_are_module_offsets_and_not_sites() {
    let (path, id) = own_path_and_id();
    let dump = write_dump("library", &dump(path.as_os_str().as_encoded_bytes(), &id));
    let out = heapdump(&["top", dump.to_str().unwrap(), "--json", "--by", "site"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let outer = &v["rows"][1];
    // The outer function's group holds its own 40-byte stack and the
    // 50-byte one through the library; the example is the bigger one.
    let example = outer["stack_example"].as_array().unwrap();
    assert_eq!(example.len(), 2);
    assert_eq!(example[0]["function"], serde_json::Value::Null);
    assert_eq!(example[0]["module"], "/nonexistent/lib/libfake.so");
    assert_eq!(example[0]["module_offset"], "0x1235");
    assert_eq!(example[0]["pc"], format!("{:#x}", LIBRARY_BASE + 0x1235));

    let out = heapdump(&["top", dump.to_str().unwrap(), "--by", "file", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["rows"][0]["file"], this_file());
    assert_eq!(v["rows"][0]["bytes"], 390);
    assert_eq!(v["rows"][0]["function"], serde_json::Value::Null);
    assert_eq!(v["rows"][1]["file"], "<unknown file>");
}

#[test]
fn text_output_shows_site_file_and_line() {
    let (path, id) = own_path_and_id();
    let dump = write_dump("text", &dump(path.as_os_str().as_encoded_bytes(), &id));
    let out = heapdump(&["top", dump.to_str().unwrap(), "-n", "1"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().nth(2).unwrap(),
        format!(
            "           300      300 B  75.4%         2  symbolize::allocation_site_marker  {}:{MARKER_LINE}",
            this_file()
        )
    );
    assert_eq!(
        text.lines().nth(3).unwrap(),
        "            98       98 B  24.6%         3  (2 more groups)"
    );
}

#[test]
fn without_frame_names_a_wrong_build_id_is_an_error_naming_both_ids() {
    let (path, id) = own_path_and_id();
    let dump = write_dump(
        "wrong-id",
        &dump(path.as_os_str().as_encoded_bytes(), &[0x11; 20]),
    );
    let out = heapdump(&["top", dump.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: cannot symbolize {}: {} was built from different sources than the dumped process: build-id {} vs {} recorded in the dump; pass the exact binary that wrote the dump\n",
            dump.display(),
            path.display(),
            hex(&id),
            "11".repeat(20)
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn without_frame_names_a_missing_executable_is_an_error_naming_the_path() {
    let (_, id) = own_path_and_id();
    let dump = write_dump("missing-exe", &dump(b"/nonexistent/dir/app", &id));
    let out = heapdump(&["top", dump.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: cannot symbolize {}: the dumped program's executable /nonexistent/dir/app was not found; pass BINARY, the exact executable that wrote the dump\n",
            dump.display()
        )
    );

    let out = heapdump(&["top", dump.to_str().unwrap(), "/nonexistent/other/app"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: cannot symbolize {}: BINARY /nonexistent/other/app does not exist\n",
            dump.display()
        )
    );
}

#[test]
fn library_symbolizer_caches_and_subtracts_one_from_return_addresses() {
    let (path, id) = own_path_and_id();
    let bytes = dump(path.as_os_str().as_encoded_bytes(), &id);
    let view = heapdump_formats::read::DumpView::parse(&bytes).unwrap();
    let mut symbolizer = heapdump_analyze::symbolize::Symbolizer::new(
        &view,
        &heapdump_analyze::symbolize::SymbolizeOptions::default(),
    )
    .unwrap();
    let marker = allocation_site_marker as fn() -> Vec<u8> as usize as u64;
    // pc = function start + 1: pc - 1 is the function's first byte.
    let frames = symbolizer.symbolize_pc(marker + 1).to_vec();
    assert_eq!(
        frames.last().unwrap().function.as_deref(),
        Some("symbolize::allocation_site_marker")
    );
    // pc = function start: pc - 1 is before it, so never this function.
    let before = symbolizer.symbolize_pc(marker).to_vec();
    assert_ne!(
        before.last().unwrap().function.as_deref(),
        Some("symbolize::allocation_site_marker")
    );
    assert_eq!(symbolizer.symbolize_pc(marker + 1), &frames[..]);
}

/// bytes, count, function, file, line (owned).
type OwnedSiteRow = (u64, u64, String, Option<String>, Option<u64>);

/// The rows of `top --json`.
fn site_rows(out: &Output) -> Vec<OwnedSiteRow> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["bytes"].as_u64().unwrap(),
                r["count"].as_u64().unwrap(),
                r["function"].as_str().unwrap().to_owned(),
                r["file"].as_str().map(str::to_owned),
                r["line"].as_u64(),
            )
        })
        .collect()
}

/// The sites when every function is named from the dump: no files or
/// lines, and the library's function is a site of its own.
fn assert_sites_from_dump_names(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = |t: &str| t.to_owned();
    assert_eq!(
        site_rows(out),
        [
            (300, 2, s("symbolize::allocation_site_marker"), None, None),
            (50, 1, s("fake_library_function"), None, None),
            (40, 1, s("symbolize::outer_caller_marker"), None, None),
            (8, 1, s("<unknown>"), None, None),
        ]
    );
}

#[test]
fn missing_executable_names_functions_from_the_dump_and_says_once_what_needs_the_binary() {
    let (_, id) = own_path_and_id();
    let dump = write_dump(
        "names-missing-exe",
        &named_builder(b"/nonexistent/dir/app", &id).to_bytes(),
    );
    let out = heapdump(&["top", dump.to_str().unwrap(), "--json"]);
    assert_sites_from_dump_names(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "warning: the dumped program's executable /nonexistent/dir/app was not found: functions are named from the symbol names the dump carries; file:line, inlined frames and types need that binary\n\
         warning: shared library /nonexistent/lib/libfake.so not found; its functions are named from the dump\n"
    );

    // BINARY that does not exist: the same, naming BINARY.
    let out = heapdump(&[
        "top",
        dump.to_str().unwrap(),
        "/nonexistent/other/app",
        "--json",
    ]);
    assert_sites_from_dump_names(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("warning: BINARY /nonexistent/other/app does not exist: functions are named from the symbol names the dump carries"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("need that binary").count(), 1, "{stderr}");
}

#[test]
fn wrong_build_id_falls_back_to_the_dumps_names_naming_both_ids() {
    let (path, id) = own_path_and_id();
    let dump = write_dump(
        "names-wrong-id",
        &named_builder(path.as_os_str().as_encoded_bytes(), &[0x11; 20]).to_bytes(),
    );
    let out = heapdump(&["top", dump.to_str().unwrap(), "--json"]);
    assert_sites_from_dump_names(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().next().unwrap(),
        format!(
            "warning: {} is not the binary that wrote the dump (build-id {} vs {} recorded in the dump): functions are named from the symbol names the dump carries; file:line, inlined frames and types need that binary",
            path.display(),
            hex(&id),
            "11".repeat(20)
        )
    );
}

#[test]
fn a_matching_binary_wins_over_the_dumps_names() {
    let (path, id) = own_path_and_id();
    let dump = write_dump(
        "names-with-binary",
        &named_builder(path.as_os_str().as_encoded_bytes(), &id).to_bytes(),
    );
    let out = heapdump(&["top", dump.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let rows = site_rows(&out);
    // File and line from DWARF: the binary was used for the main module;
    // the missing library's function is named from the dump.
    assert_eq!(
        rows[0],
        (
            300,
            2,
            "symbolize::allocation_site_marker".to_owned(),
            Some(this_file()),
            Some(u64::from(MARKER_LINE))
        )
    );
    assert_eq!(rows[1].2, "fake_library_function");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "warning: shared library /nonexistent/lib/libfake.so not found; its functions are named from the dump\n"
    );
}

#[test]
fn frame_names_of_the_wrong_count_are_not_used() {
    let (path, id) = own_path_and_id();
    let mut b = named_builder(path.as_os_str().as_encoded_bytes(), &id);
    b.frame_names.pop();
    let dump = write_dump("names-wrong-count", &b.to_bytes());
    let out = heapdump(&["top", dump.to_str().unwrap(), "--json"]);
    // As without names: the library's frames are offsets.
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "warning: the dump's frame names are not used: section FrameNames at byte "
        ) && stderr.contains("holds 5 names for the 6 records of Frames"),
        "{stderr}"
    );
    assert!(stderr.contains("libfake.so not found; its frames are shown as offsets"));
    assert!(
        !site_rows(&out)
            .iter()
            .any(|r| r.2 == "fake_library_function")
    );
    // Without the binary there is nothing to fall back on.
    let mut b = named_builder(b"/nonexistent/dir/app", &id);
    b.frame_names.pop();
    let dump = write_dump("names-wrong-count-no-exe", &b.to_bytes());
    let out = heapdump(&["top", dump.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

/// A copy of this executable made by `objcopy FLAG` (`--strip-debug`,
/// `--strip-all`), and a dump of it: the build-id note stays, so the copy
/// is still the dumped binary. Returns the copy and the dump.
fn stripped_copy_and_dump(name: &str, flag: &str) -> (PathBuf, PathBuf) {
    let (path, id) = own_path_and_id();
    let dir = std::env::temp_dir().join(format!("heapdump-symbolize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join(name);
    let status = std::process::Command::new("objcopy")
        .arg(flag)
        .arg(&path)
        .arg(&copy)
        .status()
        .expect("binutils are installed");
    assert!(status.success(), "objcopy {flag}");
    let dump = write_dump(name, &dump(copy.as_os_str().as_encoded_bytes(), &id));
    (copy, dump)
}

const LIBRARY_WARNING: &str = "warning: shared library /nonexistent/lib/libfake.so not found; its frames are shown as offsets\n";

#[test]
fn a_binary_without_line_tables_is_warned_about_once_naming_the_cargo_setting() {
    let (copy, dump) = stripped_copy_and_dump("no-lines", "--strip-debug");
    let out = heapdump(&["top", dump.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let warning = format!(
        "warning: {} has no line tables (sites have no file:line, inlined calls are not seen); add `debug = \"line-tables-only\"` to [profile.release] in Cargo.toml\n",
        copy.display()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{LIBRARY_WARNING}{warning}")
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["rows"][0]["function"],
        "symbolize::allocation_site_marker"
    );
    assert_eq!(v["rows"][0]["file"], serde_json::Value::Null);

    // Two dumps of one binary: the same warnings, once (then `diff`'s own
    // about comparing a dump with itself).
    let path = dump.to_str().unwrap();
    let out = heapdump(&["diff", path, path]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{LIBRARY_WARNING}{warning}warning: OLD is dump 0 and NEW is dump 0 of the process: are they swapped?\n"
        )
    );

    // A command that names types also asks for DWARF types.
    let out = heapdump(&["top", path, "--by", "type"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{LIBRARY_WARNING}warning: {} has no line tables (sites have no file:line, inlined calls are not seen), no DWARF types (pointers are labelled with byte offsets instead of field names); add `debug = 2` to [profile.release] in Cargo.toml\n",
            copy.display()
        )
    );
}

#[test]
fn a_stripped_binary_is_warned_about_naming_strip_false_and_the_unstripped_binary() {
    let (copy, dump) = stripped_copy_and_dump("stripped", "--strip-all");
    let out = heapdump(&["top", dump.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "{LIBRARY_WARNING}warning: {} has no symbol table (frames are shown as module+0xoffset), no line tables (sites have no file:line, inlined calls are not seen); add `debug = \"line-tables-only\"` and `strip = false` to [profile.release] in Cargo.toml, or pass the unstripped binary of the same build as BINARY\n",
            copy.display()
        )
    );
}

#[test]
fn a_binary_with_full_debug_info_gets_no_warning_even_for_types() {
    let (path, id) = own_path_and_id();
    let dump = write_dump(
        "full-debug",
        &dump(path.as_os_str().as_encoded_bytes(), &id),
    );
    let out = heapdump(&["top", dump.to_str().unwrap(), "--by", "type"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), LIBRARY_WARNING);
}
