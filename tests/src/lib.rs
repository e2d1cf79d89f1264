//! Support for the end-to-end tests: builds the example programs and the
//! `heapdump` binary once (release, frame pointers on, as users build them),
//! runs them, and parses what they print.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Directory holding the release binaries of `heapdump-examples` and
/// `heapdump-analyze`, built on first use into `e2e` under the target
/// directory (`CARGO_TARGET_DIR`, else `target`): a target directory of its
/// own, so the nested build never waits on the lock of the `cargo test`
/// that runs us.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), PathBuf::from)
            .join("e2e");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "heapdump-examples",
                "-p",
                "heapdump-analyze",
                "--bins",
            ])
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cannot run cargo to build the example programs");
        assert!(status.success(), "building the example programs failed");
        target.join("release")
    })
}

/// Path of one built binary.
pub fn binary(name: &str) -> PathBuf {
    binaries().join(name)
}

/// A fresh, empty directory for one test's files under `target/e2e-work`.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = workspace_root().join("target").join("e2e-work").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("cannot create a scratch directory");
    dir
}

/// Runs a command, failing the test with its output when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("cannot start the command");
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `heapdump ARGS...` and returns its stdout; fails the test if it fails.
pub fn heapdump(args: &[&std::ffi::OsStr]) -> String {
    let output = run_ok(Command::new(binary("heapdump")).args(args));
    String::from_utf8(output.stdout).expect("heapdump printed invalid UTF-8")
}

/// Runs `heapdump ARGS... --json` and parses what it prints; fails the test
/// if it fails or prints something that is not JSON.
pub fn heapdump_json(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let json_flag = std::ffi::OsStr::new("--json");
    let args: Vec<&std::ffi::OsStr> = args.iter().copied().chain([json_flag]).collect();
    let json = heapdump(&args);
    serde_json::from_str(&json)
        .unwrap_or_else(|error| panic!("heapdump {args:?} printed no JSON ({error}):\n{json}"))
}

/// The `key=value` pairs of the first line of `text` that starts with `prefix`.
pub fn key_values(text: &str, prefix: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The 1-based line number of the first line of `file` containing `marker`.
pub fn line_of(file: &Path, marker: &str) -> u32 {
    let text = std::fs::read_to_string(file).expect("cannot read source file");
    text.lines()
        .position(|line| line.contains(marker))
        .map(|index| index as u32 + 1)
        .unwrap_or_else(|| panic!("{marker:?} not found in {}", file.display()))
}

/// Compiles `tests/programs/SOURCE` into `dir/name` with `compiler` (`gcc`
/// or `g++`, Debian packages of the same names) and `flags`.
pub fn compile_program(
    dir: &Path,
    source: &str,
    compiler: &str,
    name: &str,
    flags: &[&str],
) -> PathBuf {
    let source = workspace_root().join("tests/programs").join(source);
    let output = dir.join(name);
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&output)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| {
            panic!("{compiler} is needed for this test (Debian package {compiler}): {e}")
        });
    assert!(
        status.success(),
        "{compiler} failed on {}",
        source.display()
    );
    output
}

/// Runs `heapdump run --dir DIR ARGS...` and returns what it did.
pub fn heapdump_run(dir: &Path, args: &[&std::ffi::OsStr]) -> Output {
    Command::new(binary("heapdump"))
        .arg("run")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("cannot run heapdump run")
}

/// The one dump in `dir`, opened and verified.
pub fn the_dump(dir: &Path) -> (PathBuf, heapdump_formats::read::Dump) {
    let dumps: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("no dump directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(std::ffi::OsStr::new("hdump")))
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let dump = heapdump_formats::read::Dump::open(&dumps[0]).expect("the dump does not open");
    let problems = heapdump_formats::verify::verify(&dump.view());
    assert!(problems.is_empty(), "{problems:#?}");
    (dumps[0].clone(), dump)
}
