//! `heapdump retainers` on a real dump of this test program, built with
//! full DWARF (the dev profile): a list held by a static is selected with
//! `--type`, and the path from the static to its last node goes through
//! the nodes' `next` fields, named.

use std::ffi::OsStr;
use std::hint::black_box;
use std::mem::offset_of;
use std::sync::atomic::{AtomicPtr, Ordering};

use heapdump_capture::Tracker;
use heapdump_tests::{heapdump, heapdump_json, scratch_dir};

#[global_allocator]
static ALLOCATOR: Tracker = Tracker::system();

/// A 1000-byte list node.
#[allow(dead_code)]
struct ListNode {
    next: Option<Box<ListNode>>,
    payload: [u8; 992],
}

/// The list's head; its nodes are reached only through it.
static HEAD: AtomicPtr<ListNode> = AtomicPtr::new(std::ptr::null_mut());

/// Nodes in the list.
const NODES: u64 = 4;

/// Links `NODES` nodes and keeps the head in `HEAD`.
#[inline(never)]
fn hold_list() {
    let mut head: Option<Box<ListNode>> = None;
    for i in 0..NODES {
        head = Some(Box::new(ListNode {
            next: head.take(),
            payload: [i as u8; 992],
        }));
    }
    if let Some(head) = head {
        HEAD.store(Box::into_raw(head), Ordering::SeqCst);
    }
}

/// Overwrites the stack below the caller, so no stale pointer to a node
/// left in a dead frame makes a shorter path than the one through `HEAD`.
#[inline(never)]
fn scrub_stack() {
    let zeros = black_box([0u64; 16 * 1024]);
    black_box(&zeros);
}

#[test]
fn a_list_held_by_a_static_is_found_by_type_and_traced_through_next_fields() {
    let dir = scratch_dir("retainers_field_paths");
    let dump = dir.join("self.hdump");
    hold_list();
    scrub_stack();
    heapdump_capture::dump_to_path(&dump).expect("cannot write the dump");
    black_box(HEAD.load(Ordering::SeqCst));

    let ty = "retainers_field_paths::ListNode";
    let report = heapdump_json(&[
        OsStr::new("retainers"),
        dump.as_os_str(),
        OsStr::new("--type"),
        OsStr::new(ty),
        OsStr::new("-n"),
        OsStr::new("10"),
    ]);
    let objects = report["objects"].as_array().expect("objects");
    // Exactly the list's nodes, head (retaining all) first.
    let picked: Vec<(&str, u64, u64)> = objects
        .iter()
        .map(|o| {
            let object = &o["object"];
            (
                object["type"].as_str().unwrap_or_default(),
                object["size"].as_u64().unwrap_or_default(),
                object["retained"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(&str, u64, u64)> =
        (0..NODES).map(|i| (ty, 1000, (NODES - i) * 1000)).collect();
    assert_eq!(picked, expected, "{report:#}");

    // The filters take what the outputs print: the type's last path
    // component, and the site as `top` shows it, FILE:LINE.
    let addresses = |report: &serde_json::Value| -> Vec<String> {
        report["objects"]
            .as_array()
            .expect("objects")
            .iter()
            .map(|o| {
                o["object"]["address"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let retainers = |option: &str, value: &str| {
        heapdump_json(&[
            OsStr::new("retainers"),
            dump.as_os_str(),
            OsStr::new(option),
            OsStr::new(value),
            OsStr::new("-n"),
            OsStr::new("10"),
        ])
    };
    assert_eq!(
        addresses(&retainers("--type", "ListNode")),
        addresses(&report)
    );
    let top = heapdump_json(&[
        OsStr::new("top"),
        dump.as_os_str(),
        OsStr::new("-n"),
        OsStr::new("1000"),
    ]);
    let row = top["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["function"] == "retainers_field_paths::hold_list")
        .expect("a row for hold_list");
    assert_eq!(row["count"], NODES, "{row}");
    let site = format!(
        "retainers_field_paths.rs:{}",
        row["line"].as_u64().expect("a line")
    );
    assert_eq!(addresses(&retainers("--site", &site)), addresses(&report));

    // The last node: dominated by the three before it, nearest first, and
    // reached from HEAD through three `next` fields.
    let last = &objects[NODES as usize - 1];
    let chain: Vec<u64> = last["dominators"]
        .as_array()
        .expect("dominators")
        .iter()
        .map(|d| d["retained"].as_u64().unwrap_or_default())
        .collect();
    assert_eq!(chain, [2000, 3000, 4000], "{report:#}");
    let path = &last["paths"][0];
    assert_eq!(path["root"]["kind"], "DATA_SEGMENT", "{report:#}");
    let symbol = path["root"]["symbol"].as_str().unwrap_or_default();
    assert!(
        symbol == "retainers_field_paths::HEAD"
            || symbol.starts_with("retainers_field_paths::HEAD."),
        "root symbol {symbol:?}"
    );
    let next = offset_of!(ListNode, next) as u64;
    /// A step: field, field offset, target offset, retained bytes.
    type Step<'a> = (Option<&'a str>, Option<u64>, Option<u64>, u64);
    let steps: Vec<Step<'_>> = path["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["field"].as_str(),
                s["field_offset"].as_u64(),
                s["target_offset"].as_u64(),
                s["object"]["retained"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            // The root's pointer: its offset is within the data segment.
            (None, path["root"]["source_offset"].as_u64(), Some(0), 4000),
            (Some("next"), Some(next), Some(0), 3000),
            (Some("next"), Some(next), Some(0), 2000),
            (Some("next"), Some(next), Some(0), 1000),
        ],
        "{report:#}"
    );

    // The text shows the field after the offset.
    let address = last["object"]["address"].as_str().expect("address");
    let text = heapdump(&[
        OsStr::new("retainers"),
        dump.as_os_str(),
        OsStr::new(address),
    ]);
    assert!(
        text.contains(&format!("    [{next:#x} .next] -> {address} 1000 B {ty}  ")),
        "{text}"
    );
}
