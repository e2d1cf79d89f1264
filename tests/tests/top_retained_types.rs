//! `heapdump top --retained` on a real dump, with types recovered from the
//! program's DWARF: the `leaks` example's lost 100-node `Box<ListNode>`
//! list is one `leaks::ListNode` row retaining the 100 nodes once.

use std::ffi::OsStr;
use std::process::Command;

use heapdump_tests::{binary, heapdump_json, run_ok, scratch_dir};

#[test]
fn a_lost_list_of_boxed_nodes_is_one_type_row_retaining_each_node_once() {
    let dir = scratch_dir("top_retained_types");
    let dump = dir.join("leaks.hdump");
    run_ok(Command::new(binary("leaks")).arg(&dump));
    let report = heapdump_json(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("--retained"),
        OsStr::new("-n"),
        OsStr::new("1000"),
    ]);
    let types = report["types"].as_array().expect("a types array");
    let list = types
        .iter()
        .find(|t| t["type"] == "leaks::ListNode")
        .unwrap_or_else(|| panic!("no leaks::ListNode row in {report:#}"));
    // The head retains the whole list: 100 nodes of 1000 bytes, counted
    // once, not the 5,050,000 bytes of the 100 nodes' retained sizes.
    assert_eq!(list["retained"], 100_000, "{list}");
    assert_eq!(list["objects"], 1, "{list}");
    assert_eq!(list["recovered"], true, "{list}");
}
