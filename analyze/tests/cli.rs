//! The `heapdump` command on dumps built on purpose: exit codes, exact
//! output, errors that name the file, and quiet broken pipes.

mod cli_common;

use cli_common::{heapdump, json, stderr, stdout};

use std::path::PathBuf;
use std::process::{Command, Stdio};

use heapdump_formats::read::DumpView;
use heapdump_formats::records::{SectionKind, allocation_flags};
use heapdump_formats::testing::DumpBuilder;

fn write_dump(name: &str, bytes: &[u8]) -> PathBuf {
    cli_common::write_dump("cli", name, bytes)
}

/// `small()` without modules, so `top` needs no executable: every frame is
/// an address nothing knows.
fn small_without_modules() -> DumpBuilder {
    let mut b = DumpBuilder::small();
    b.modules.clear();
    b.segments.clear();
    b.roots
        .retain(|r| r.owner_kind != heapdump_formats::records::owner_kind::MODULE);
    b.edges
        .retain(|e| e.flags & heapdump_formats::records::edge_flags::FROM_ROOT == 0);
    b
}

#[test]
fn info_json_describes_process_threads_modules_and_totals() {
    let path = write_dump("info", &DumpBuilder::small().to_bytes());
    let out = heapdump(&["info", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["format_version"], "2.0");
    assert_eq!(v["process"]["pid"], 1234);
    assert_eq!(v["process"]["exe"], "/usr/bin/app");
    assert_eq!(
        v["process"]["cmdline"],
        serde_json::json!(["app", "--serve"])
    );
    assert_eq!(v["process"]["timestamp"], "2023-11-14T22:13:20.000000000Z");
    assert_eq!(
        v["process"]["flags"],
        serde_json::json!(["HAS_CONTENTS", "HAS_SCAN", "WORLD_STOPPED"])
    );
    assert_eq!(v["heap"]["live_bytes"], 0x160);
    assert_eq!(v["heap"]["live_count"], 3);
    assert_eq!(v["heap"]["allocation_record_bytes"], 0x160);
    assert_eq!(v["threads"][0]["name"], "main");
    assert_eq!(
        v["threads"][0]["flags"],
        serde_json::json!(["ALIVE", "DUMPING", "MAIN"])
    );
    assert_eq!(v["threads"][0]["live_count"], 1);
    assert_eq!(v["threads"][1]["tid"], 1235);
    assert_eq!(v["modules"][0]["build_id"], "ab".repeat(20));
    assert_eq!(v["modules"][0]["start"], "0x555555550000");
    assert_eq!(
        v["modules"][0]["flags"],
        serde_json::json!(["MAIN_EXECUTABLE"])
    );
    assert_eq!(v["stacks"]["stacks"], 3);
    assert_eq!(v["stacks"]["frames"], 3);
    assert_eq!(v["stacks"]["allocations_without_stack"], 1);
    assert_eq!(v["scan"]["captured"], true);
    assert_eq!(
        v["scan"]["roots_by_kind"],
        serde_json::json!({"DATA_SEGMENT": 1, "REGISTERS": 1})
    );
    assert_eq!(v["scan"]["edges"], 5);
    assert_eq!(v["scan"]["edges_from_roots"], 2);
    assert_eq!(v["scan"]["interior_edges"], 1);
    assert_eq!(v["contents"]["bytes"], 0x20);
    // Every kind 1-12, FrameNames (small() names its frames) and
    // EdgeEscapes.
    let sections = v["sections"].as_array().unwrap();
    assert_eq!(sections.len(), 14);
    assert!(sections.iter().any(|s| s["kind"] == "FrameNames"));
    assert!(sections.iter().any(|s| s["kind"] == "EdgeEscapes"));
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn info_json_of_a_version_1_dump_is_the_same_but_for_the_version() {
    let mut v1 = DumpBuilder::small();
    v1.major = Some(1);
    let old = write_dump("info-v1", &v1.to_bytes());
    let new = write_dump("info-v2", &DumpBuilder::small().to_bytes());
    let mut old = json(&heapdump(&["info", old.to_str().unwrap(), "--json"]));
    let mut new = json(&heapdump(&["info", new.to_str().unwrap(), "--json"]));
    assert_eq!(old["format_version"], "1.0");
    assert_eq!(new["format_version"], "2.0");
    for v in [&mut old, &mut new] {
        v["format_version"] = serde_json::Value::Null;
        v["file"] = serde_json::Value::Null;
        v["file_bytes"] = serde_json::Value::Null;
        v["sections"] = serde_json::Value::Null;
    }
    assert_eq!(old, new);
}

#[test]
fn info_text_warns_loudly_about_dropped_records_and_says_scan_not_captured() {
    let mut b = DumpBuilder::default();
    b.process.dropped_allocations = 3;
    b.process.dropped_stacks = 2;
    let path = write_dump("dropped", &b.to_bytes());
    let out = heapdump(&["info", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "WARNING: 3 allocations were NOT recorded (the tracker could not get memory for them; counted when made); totals by site undercount",
            "WARNING: the stacks of 2 allocations were NOT recorded (the stack table was full, or could not get memory; counted when made, so some may have been freed since): those still live show as <unknown>. A program that makes new stacks all its run (millions of call paths) fills the table (about 16.8 million stacks or 134 million frames): run it with stacks=sample:512KiB (in HEAPDUMP, or `heapdump run --stacks sample:512KiB`), which stores only the sampled blocks' stacks",
        ]
    );
    assert!(
        lines.contains(&"roots, edges    not captured (0)"),
        "{text}"
    );
    assert!(
        lines.contains(&"contents        not captured (0)"),
        "{text}"
    );
    assert!(
        lines.contains(&"dropped         3 allocations, the stacks of 2 more"),
        "{text}"
    );
}

#[test]
fn verify_sound_dump_exits_zero() {
    let path = write_dump("sound", &DumpBuilder::realistic(300).to_bytes());
    let out = heapdump(&["verify", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{}: ok, no problems\n", path.display())
    );
}

#[test]
fn verify_planted_overlap_exits_one_and_names_record_and_offset() {
    let mut b = DumpBuilder::small();
    b.allocations[1].address = 0x1030;
    let bytes = b.to_bytes();
    let allocations = DumpView::parse(&bytes)
        .unwrap()
        .section(SectionKind::Allocations)
        .unwrap()
        .entry;
    let at = allocations.offset + u64::from(allocations.record_size);
    let path = write_dump("overlap", &bytes);
    let out = heapdump(&["verify", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!(
            "allocations.overlap: Allocations record 1 at byte {at}: overlaps record 0 (0x1000..0x1040)\n{}: 1 problem\n",
            path.display()
        )
    );

    let out = heapdump(&["verify", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["problem_count"], 1);
    assert_eq!(v["problems"][0]["check"], "allocations.overlap");
    assert_eq!(v["problems"][0]["section"], "Allocations");
    assert_eq!(v["problems"][0]["index"], 1);
    assert_eq!(v["problems"][0]["offset"], at);
}

#[test]
fn truncated_dump_is_an_error_naming_the_file_for_every_command() {
    let bytes = DumpBuilder::small().to_bytes();
    let path = write_dump("truncated", &bytes[..bytes.len() - 10]);
    let end = bytes.len() - 10 - 8;
    for command in ["info", "verify", "top"] {
        let out = heapdump(&[command, path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert_eq!(
            stderr(&out),
            format!(
                "error: {}: no end marker at byte {end}: the dump is truncated (the writer died or the copy was cut short)\n",
                path.display()
            ),
            "{command}"
        );
        assert_eq!(stdout(&out), "", "{command}");
    }
}

#[test]
fn missing_dump_file_is_an_error_naming_it() {
    let out = heapdump(&["info", "/nonexistent/dir/app.hdump"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: /nonexistent/dir/app.hdump: No such file or directory (os error 2)\n"
    );
}

#[test]
fn usage_errors_exit_two() {
    let out = heapdump(&["top"]);
    assert_eq!(out.status.code(), Some(2));
    let out = heapdump(&["top", "x.hdump", "--by", "color"]);
    assert_eq!(out.status.code(), Some(2));
    // --retained has its own sites and types tables: --by does not go with it.
    let out = heapdump(&["top", "x.hdump", "--retained", "--by", "function"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn top_text_groups_by_site_with_totals_of_the_dump() {
    let path = write_dump("top-small", &small_without_modules().to_bytes());
    let out = heapdump(&["top", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
live: 352 bytes (352 B) in 3 allocations, by site
         bytes                 %     count  site
           256      256 B  72.7%         1  <unknown>
            64       64 B  18.2%         1  0x555555551234
            32       32 B   9.1%         1  0x555555553000
"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn top_warns_that_blocks_whose_stacks_the_tracker_dropped_are_unknown() {
    let mut b = small_without_modules();
    b.process.dropped_stacks = 2;
    let path = write_dump("top-dropped-stacks", &b.to_bytes());
    let out = heapdump(&["top", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "warning: the stacks of 2 allocations were NOT recorded (the stack table was full, or could not get memory; counted when made, so some may have been freed since): those still live show as <unknown>. A program that makes new stacks all its run (millions of call paths) fills the table (about 16.8 million stacks or 134 million frames): run it with stacks=sample:512KiB (in HEAPDUMP, or `heapdump run --stacks sample:512KiB`), which stores only the sampled blocks' stacks\n"
    );
}

#[test]
fn top_json_limits_rows_and_accounts_for_the_rest() {
    let path = write_dump("top-json", &small_without_modules().to_bytes());
    let out = heapdump(&["top", path.to_str().unwrap(), "-n", "1", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        v,
        serde_json::json!({
            "total_bytes": 352,
            "total_count": 3,
            "by": "site",
            "rows": [{
                "bytes": 256,
                "count": 1,
                "percent": 256.0 * 100.0 / 352.0,
                "function": "<unknown>",
                "file": null,
                "line": null,
                "inlined_into": null,
                "own_frame": null,
                "stack_example": [],
            }],
            "omitted_rows": 2,
            "omitted_bytes": 96,
            "omitted_count": 2,
            "estimated": false,
            "stack_sample_interval_bytes": 0,
            "unsampled_bytes": 0,
            "unsampled_count": 0,
        })
    );
}

#[test]
fn top_totals_equal_the_process_record_on_a_large_dump() {
    let mut b = DumpBuilder::realistic(5000);
    b.modules.clear();
    b.segments.clear();
    b.roots.clear();
    b.edges.clear();
    b.fix_totals();
    let path = write_dump("top-large", &b.to_bytes());
    let out = heapdump(&["top", path.to_str().unwrap(), "--by", "function", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["total_bytes"], b.process.live_bytes);
    assert_eq!(v["total_count"], b.process.live_count);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 20);
    let listed: u64 = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert_eq!(
        listed + v["omitted_bytes"].as_u64().unwrap(),
        b.process.live_bytes
    );
    let bytes: Vec<u64> = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).collect();
    assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{bytes:?}");
    assert!(
        rows.iter()
            .all(|r| r["file"].is_null() && r["line"].is_null())
    );
}

#[test]
fn broken_pipe_exits_quietly() {
    let mut b = DumpBuilder::realistic(20_000);
    b.modules.clear();
    b.segments.clear();
    b.roots.clear();
    b.edges.clear();
    b.fix_totals();
    let path = write_dump("pipe", &b.to_bytes());
    let args = ["top", path.to_str().unwrap(), "-n", "1000000", "--json"];
    // The output must be far larger than a pipe buffer, or nothing is tested.
    assert!(heapdump(&args).stdout.len() > 1 << 20);
    let mut child = Command::new(env!("CARGO_BIN_EXE_heapdump"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run heapdump");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}

#[test]
fn top_on_a_sampled_dump_weights_sampled_blocks_and_keeps_exact_totals() {
    // Production mode with S = 128 bytes: the 64-byte block (stack 1) was
    // sampled with probability 1 - exp(-1/2) and stands for 1/0.3935 =
    // 2.54 blocks; the 256-byte block is at least S, sampled for sure
    // (its stack unknown here); the 32-byte one is outside the sample.
    let mut b = small_without_modules();
    b.process.stack_sample_interval = 128;
    b.allocations[0].flags |= allocation_flags::SAMPLED;
    b.allocations[1].stack = 0;
    b.allocations[2].flags |= allocation_flags::SAMPLED;
    let path = write_dump("top-sampled", &b.to_bytes());
    let out = heapdump(&["top", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["estimated"], true);
    assert_eq!(v["stack_sample_interval_bytes"], 128);
    assert_eq!(
        (v["total_bytes"].clone(), v["total_count"].clone()),
        (352.into(), 3.into())
    );
    assert_eq!(
        (v["unsampled_bytes"].clone(), v["unsampled_count"].clone()),
        (32.into(), 1.into())
    );
    let weight = 1.0 / (1.0 - (-0.5f64).exp());
    let rows: Vec<(u64, u64)> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["bytes"].as_u64().unwrap(), r["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [
            (256, 1),
            ((64.0 * weight).round() as u64, weight.round() as u64)
        ]
    );

    let text = stdout(&heapdump(&["top", path.to_str().unwrap()]));
    assert!(
        text.lines().nth(1).unwrap().starts_with("ESTIMATED: "),
        "{text}"
    );
    let info = json(&heapdump(&["info", path.to_str().unwrap(), "--json"]));
    assert_eq!(info["process"]["stack_sample_interval_bytes"], 128);
    assert_eq!(info["process"]["stacks"], "sample");
    assert_eq!(info["stacks"]["sampled_allocations"], 2);
}
