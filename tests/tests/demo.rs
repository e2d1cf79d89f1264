//! The demo of the README's first command: what it says it shows is what
//! heapdump finds in its dump.

use std::ffi::OsStr;
use std::process::Command;

use heapdump_tests::{binary, heapdump, run_ok, scratch_dir};

/// The demo plants one leak, a `Room` and its `Member` holding each other
/// through `Rc`: 170 bytes in 5 blocks (the two `Rc` boxes of 72 and 56
/// bytes, the member list's 32-byte buffer, the two 5-byte names). Nothing
/// else of the process is lost, and nothing is possibly lost.
#[test]
fn the_demo_loses_exactly_its_rc_cycle_one_block_definitely_and_four_indirectly() {
    let dir = scratch_dir("demo_leaks");
    let dump = dir.join("demo.hdump");
    run_ok(Command::new(binary("demo")).arg(&dump));
    let json = heapdump(&[
        OsStr::new("leaks"),
        dump.as_os_str(),
        OsStr::new("--show"),
        OsStr::new("definite,indirect,possible"),
        OsStr::new("--json"),
    ]);
    let leaks: serde_json::Value = serde_json::from_str(&json).expect("leaks --json is JSON");
    let summary = |class: &str| {
        let row = leaks["summary"]
            .as_array()
            .expect("a summary")
            .iter()
            .find(|row| row["class"] == class)
            .expect("every class is in the summary");
        (
            row["blocks"].as_u64().unwrap(),
            row["bytes"].as_u64().unwrap(),
        )
    };
    let (definite_blocks, definite_bytes) = summary("definitely_lost");
    let (indirect_blocks, indirect_bytes) = summary("indirectly_lost");
    assert_eq!((definite_blocks, indirect_blocks), (1, 4), "{leaks}");
    assert_eq!(definite_bytes + indirect_bytes, 170, "{leaks}");
    assert_eq!(summary("possibly_lost"), (0, 0), "{leaks}");

    let mut lost: Vec<(String, u64, String)> = leaks["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|record| {
            (
                record["class"].as_str().unwrap().to_owned(),
                record["direct_bytes"].as_u64().unwrap(),
                record["site"]["function"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    lost.sort_by_key(|(_, bytes, _)| *bytes);
    let sizes: Vec<u64> = lost.iter().map(|(_, bytes, _)| *bytes).collect();
    assert_eq!(sizes, [5, 5, 32, 56, 72], "{leaks}");
    assert!(
        lost.iter().all(|(_, _, site)| site == "demo::open_room"),
        "{lost:?}"
    );
}
