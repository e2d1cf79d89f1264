//! Running the `heapdump` binary on dumps written for one test.

#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// Writes `bytes` as `<suite>-<name>.hdump` in this package's test
/// scratch directory.
pub fn write_dump(suite: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{suite}-{name}.hdump"));
    std::fs::write(&path, bytes).expect("write test dump");
    path
}

/// Runs `heapdump ARGS...`.
pub fn heapdump(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heapdump"))
        .args(args)
        .output()
        .expect("run heapdump")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("utf-8 stderr")
}

/// Stdout parsed as JSON.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}
