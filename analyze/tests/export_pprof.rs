//! `topprof` on the shared test dump, opened by `go tool pprof` (Debian
//! package golang-go): its totals, functions, files, lines and inlined
//! frames are read back from `-raw` and `-top`.

mod export_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use heapdump_analyze::export::pprof::{PprofOptions, write_pprof};
use heapdump_analyze::export::{HeapModel, ModelOptions};
use heapdump_analyze::symbolize::Frame;

use export_common::{frames_of, test_dump};

/// The test dump's stacks, with stack 1's inlined constructor at the same
/// return address as the function it was inlined into (as a symbolizer
/// gives them): one pprof location with two lines.
fn shared_pc_frames(stack: u32) -> anyhow::Result<Vec<Frame>> {
    let mut frames = frames_of(stack)?;
    if stack == 1 {
        for f in &mut frames {
            f.pc = 0x1000;
        }
    }
    Ok(frames)
}

fn go_pprof(args: &[&str], profile: &Path) -> String {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-home");
    std::fs::create_dir_all(&home).expect("go home");
    let output = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .arg(profile)
        // pprof writes its cache under HOME; keep it out of the user's.
        .env("HOME", &home)
        .env("GOCACHE", home.join("cache"))
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("cannot run `go tool pprof`; install the golang-go package");
    assert!(
        output.status.success(),
        "go tool pprof {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn write(name: &str, model: &HeapModel<'_>) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let mut out = Vec::new();
    write_pprof(model, &PprofOptions::default(), &mut out).expect("profile");
    std::fs::write(&path, out).expect("write the profile");
    path
}

/// A sample of `go tool pprof -raw`: its values, and per location (leaf
/// first) the `file:line` of each line (inlined ones first).
type RawSample = (u64, u64, Vec<Vec<String>>);

fn parse_raw(raw: &str) -> Vec<RawSample> {
    let samples = raw
        .split("Samples:\n")
        .nth(1)
        .and_then(|s| s.split("Locations\n").next())
        .expect("a Samples section");
    let locations_text = raw
        .split("Locations\n")
        .nth(1)
        .and_then(|s| s.split("Mappings\n").next())
        .expect("a Locations section");
    // `     3: 0x1000 M=1 NAME FILE:LINE s=0(...)`, then indented lines
    // `             NAME FILE:LINE s=0` for the frames it was inlined into.
    let mut locations: std::collections::HashMap<u64, Vec<String>> = Default::default();
    let mut current = 0;
    let file_line = |line: &str| {
        line.split_whitespace()
            .find(|t| t.starts_with('/'))
            .expect("a file:line")
            .to_owned()
    };
    for line in locations_text.lines() {
        let trimmed = line.trim_start();
        if let Some((id, rest)) = trimmed.split_once(": 0x") {
            current = id.parse().expect("location id");
            locations.entry(current).or_default().push(file_line(rest));
        } else if !trimmed.is_empty() {
            locations
                .get_mut(&current)
                .expect("a location")
                .push(file_line(trimmed));
        }
    }
    let mut out: Vec<RawSample> = samples
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (values, ids) = l.split_once(':').expect("values: locations");
            let mut values = values.split_whitespace().map(|v| v.parse().expect("value"));
            let stack = ids
                .split_whitespace()
                .map(|id| locations[&id.parse::<u64>().expect("id")].clone())
                .collect();
            (values.next().unwrap(), values.next().unwrap(), stack)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn go_tool_pprof_reads_exact_totals_functions_files_and_inlined_lines() {
    let dump = test_dump();
    let model = HeapModel::build_with(
        dump.view(),
        shared_pc_frames,
        &ModelOptions { graph: false },
    )
    .expect("model");
    let path = write("test.pb.gz", &model);
    let lib = "/rustc/0000/library/alloc/src";
    let app = "/app/src/main.rs";
    let loc = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
    // Allocator frames trimmed; stack 1's constructor and app::build share
    // their return address: one location of two lines.
    let mut expected: Vec<RawSample> = vec![
        (
            1,
            8,
            vec![
                loc(&[&format!("{lib}/raw_vec/mod.rs:4")]),
                loc(&[&format!("{app}:30")]),
            ],
        ),
        (2, 32, vec![loc(&[&format!("{app}:7")])]),
        (
            2,
            64,
            vec![loc(&[&format!("{lib}/boxed.rs:2"), &format!("{app}:10")])],
        ),
        (
            2,
            192,
            vec![
                loc(&[&format!("{lib}/raw_vec/mod.rs:3")]),
                loc(&[&format!("{app}:20")]),
            ],
        ),
    ];
    expected.sort();
    assert_eq!(parse_raw(&go_pprof(&["-raw"], &path)), expected);

    // Byte totals and cumulative bytes by function, as pprof prints them.
    let top = go_pprof(&["-top", "-sample_index=inuse_space"], &path);
    assert!(
        top.contains("Showing nodes accounting for 296B, 100% of 296B total"),
        "{top}"
    );
    let top_objects = go_pprof(&["-top", "-sample_index=inuse_objects"], &path);
    assert!(
        top_objects.contains("Showing nodes accounting for 7, 100% of 7 total"),
        "{top_objects}"
    );
    let cum: Vec<(String, String)> = top
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (t.len() == 6 && t[5].starts_with("app::")).then(|| (t[5].to_owned(), t[3].to_owned()))
        })
        .collect();
    let mut cum = cum;
    cum.sort();
    assert_eq!(
        cum,
        [
            ("app::build", "64B"),
            ("app::fill", "192B"),
            ("app::make", "32B"),
            ("app::name", "8B")
        ]
        .map(|(f, b)| (f.to_owned(), b.to_owned()))
    );
}

#[test]
fn cli_writes_the_profile_to_a_file_or_a_pipe_and_fails_clearly() {
    let dump = test_dump();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("export-pprof.hdump");
    std::fs::write(&path, dump.bytes()).expect("write dump");
    let out = dir.join("export-pprof.pb.gz");
    let _ = std::fs::remove_file(&out);
    let heapdump = || Command::new(env!("CARGO_BIN_EXE_heapdump"));
    let output = heapdump()
        .arg("topprof")
        .arg(&path)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run heapdump");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("inuse_space 296 bytes, inuse_objects 7"),
        "{stderr}"
    );
    let from_file = std::fs::read(&out).expect("the profile is written");
    let top = go_pprof(&["-top"], &out);
    assert!(top.contains("of 296B total"), "{top}");

    // Stdout is a pipe here: the same profile.
    let output = heapdump()
        .arg("topprof")
        .arg(&path)
        .output()
        .expect("run heapdump");
    assert!(output.status.success());
    assert_eq!(output.stdout, from_file);

    // A dump that is not there: exit 1, and the error names it.
    let missing = dir.join("no-such-dump.hdump");
    let output = heapdump()
        .arg("topprof")
        .arg(&missing)
        .output()
        .expect("run heapdump");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-dump.hdump"), "{stderr}");
    assert!(output.stdout.is_empty());
}
