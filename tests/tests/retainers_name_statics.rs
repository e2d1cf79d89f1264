//! `heapdump retainers` on a real dump: a block held by a static is traced
//! to a DATA_SEGMENT root of the executable, named after the static, with
//! the pointer's offset into the block.

use std::ffi::OsStr;
use std::process::Command;

use heapdump_tests::{binary, heapdump_json, run_ok, scratch_dir};

fn retainers(dump: &std::path::Path, site: &str) -> serde_json::Value {
    heapdump_json(&[
        OsStr::new("retainers"),
        dump.as_os_str(),
        OsStr::new("--site"),
        OsStr::new(site),
        OsStr::new("-n"),
        OsStr::new("1"),
    ])
}

#[test]
fn blocks_held_by_statics_are_traced_to_the_named_static() {
    let dir = scratch_dir("retainers_name_statics");
    let dump = dir.join("leaks.hdump");
    run_ok(Command::new(binary("leaks")).arg(&dump));

    for (site, size, symbol, target_offset) in [
        ("hold_in_static", 2000, "leaks::REACHABLE", 0),
        ("hold_interior_pointer", 2016, "leaks::INTERIOR", 8),
        ("hold_tagged_pointer", 2032, "leaks::TAGGED", 1),
    ] {
        let report = retainers(&dump, site);
        let object = &report["objects"][0];
        assert_eq!(object["object"]["size"].as_u64(), Some(size), "{report}");
        let path = &object["paths"][0];
        let root = &path["root"];
        assert_eq!(root["kind"].as_str(), Some("DATA_SEGMENT"), "{report}");
        assert!(
            root["owner"]
                .as_str()
                .is_some_and(|owner| owner.ends_with("/leaks")),
            "{report}"
        );
        // The static's symbol (LLVM may add a `.0` suffix to a split global).
        let named = root["symbol"].as_str().unwrap_or_default();
        assert!(
            named == symbol || named.starts_with(&format!("{symbol}.")),
            "{site}: root symbol {named:?}, expected {symbol}"
        );
        let steps = path["steps"].as_array().expect("steps");
        assert_eq!(steps.len(), 1, "{report}");
        assert_eq!(
            steps[0]["target_offset"].as_u64(),
            Some(target_offset),
            "{report}"
        );
    }
}

#[test]
fn type_selects_exactly_the_lost_lists_nodes_largest_retained_first() {
    let dir = scratch_dir("retainers_type_leaks");
    let dump = dir.join("leaks.hdump");
    run_ok(Command::new(binary("leaks")).arg(&dump));
    let select = |ty: &str| {
        heapdump_json(&[
            OsStr::new("retainers"),
            dump.as_os_str(),
            OsStr::new("--type"),
            OsStr::new(ty),
            OsStr::new("-n"),
            OsStr::new("1000"),
            OsStr::new("--paths"),
            OsStr::new("1"),
        ])
    };
    let report = select("leaks::ListNode");
    let objects = report["objects"].as_array().expect("objects");
    // The 100 nodes of the lost list, and nothing else: the head retains
    // the list, each next node 1000 bytes less.
    let picked: Vec<(&str, u64, u64, &str)> = objects
        .iter()
        .map(|o| {
            let object = &o["object"];
            (
                object["type"].as_str().unwrap_or_default(),
                object["size"].as_u64().unwrap_or_default(),
                object["retained"].as_u64().unwrap_or_default(),
                object["class"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let expected: Vec<(&str, u64, u64, &str)> = (0..100u64)
        .map(|i| {
            let class = if i == 0 {
                "definitely_lost"
            } else {
                "indirectly_lost"
            };
            ("leaks::ListNode", 1000, (100 - i) * 1000, class)
        })
        .collect();
    assert_eq!(picked, expected);
    // Lost: no root paths; the third node is dominated by the two before it.
    assert!(objects.iter().all(|o| o["paths"] == serde_json::json!([])));
    let chain: Vec<&serde_json::Value> = objects[2]["dominators"]
        .as_array()
        .expect("dominators")
        .iter()
        .map(|d| &d["address"])
        .collect();
    assert_eq!(
        chain,
        [
            &objects[1]["object"]["address"],
            &objects[0]["object"]["address"]
        ]
    );
    // No type is exactly `ListNode`: the substring picks the same blocks.
    assert_eq!(select("ListNode")["objects"], report["objects"]);
}
