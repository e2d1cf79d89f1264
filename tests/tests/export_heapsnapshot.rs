//! `heapdump toheapsnapshot` read back by memlab's heap snapshot parser, an
//! implementation independent of ours (tests/node, installed by `npm ci`
//! there): every block is an object node named by its type, the retained
//! sizes memlab computes from its own dominator tree equal `top
//! --retained`'s, pointers are named by their fields, and the lost blocks
//! hang from `(lost)`. Needs Node.js (Debian packages nodejs and npm).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::process::Command;

use heapdump_formats::read::Dump;
use heapdump_tests::{binary, heapdump_json, run_ok, scratch_dir, workspace_root};
use serde_json::Value;

/// Ids of allocation nodes: the writer's base plus twice the sequence.
const ALLOCATION_ID_BASE: u64 = 1_000_000_001;

/// memlab's view of `file`: every node, by id.
fn read_with_memlab(file: &std::path::Path) -> HashMap<u64, Value> {
    let node_dir = workspace_root().join("tests/node");
    assert!(
        node_dir.join("node_modules/@memlab/heap-analysis").exists(),
        "memlab is not installed: run `npm ci` in tests/node (scripts/test.sh does)"
    );
    let output = run_ok(
        Command::new("node")
            .arg(node_dir.join("read_heapsnapshot.js"))
            .arg(file),
    );
    let nodes: Vec<Value> = serde_json::from_slice(&output.stdout).expect("memlab printed JSON");
    nodes
        .into_iter()
        .map(|node| (node["id"].as_u64().expect("an id"), node))
        .collect()
}

#[test]
fn memlab_reads_the_snapshot_with_top_retaineds_sizes_names_and_fields() {
    let dir = scratch_dir("export_heapsnapshot");
    let dump_path = dir.join("leaks.hdump");
    run_ok(Command::new(binary("leaks")).arg(&dump_path));
    let snapshot = dir.join("leaks.heapsnapshot");
    run_ok(
        Command::new(binary("heapdump"))
            .arg("toheapsnapshot")
            .arg(&dump_path)
            .arg(binary("leaks"))
            .arg("-o")
            .arg(&snapshot),
    );
    let nodes = read_with_memlab(&snapshot);

    let dump = Dump::open(&dump_path).expect("the dump opens");
    let view = dump.view();
    let allocations: Vec<_> = view.allocations().iter().collect();
    let node_of = |index: usize| -> &Value {
        let id = ALLOCATION_ID_BASE + 2 * allocations[index].sequence;
        nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node for allocation {index}"))
    };
    // Every block once, as an object of its own size; the rest are the
    // synthetic root nodes.
    let objects = nodes.values().filter(|n| n["type"] == "object").count();
    assert_eq!(objects, allocations.len());
    for (index, allocation) in allocations.iter().enumerate() {
        assert_eq!(
            node_of(index)["self_size"],
            allocation.size,
            "allocation {index}"
        );
    }

    // Every block's retained size and name are `top --retained`'s.
    let top = heapdump_json(&[
        OsStr::new("top"),
        dump_path.as_os_str(),
        binary("leaks").as_os_str(),
        OsStr::new("--retained"),
        OsStr::new("--limit"),
        OsStr::new("100000"),
    ]);
    let listed = top["objects"].as_array().expect("an objects table");
    assert_eq!(listed.len(), allocations.len());
    for object in listed {
        let index = object["index"].as_u64().unwrap() as usize;
        let node = node_of(index);
        assert_eq!(node["retained_size"], object["retained"], "{object}");
        assert_eq!(node["name"], object["type"], "{object}");
    }
    let root = nodes.values().find(|n| n["name"] == "(root)").unwrap();
    assert_eq!(root["retained_size"], top["total_bytes"]);

    // The lost list: 100 nodes linked by their `next` field, the head
    // retaining all of them, and the head hung from `(lost)` as one of the
    // definitely-lost blocks `leaks` counts.
    let leaks = heapdump_json(&[OsStr::new("leaks"), dump_path.as_os_str()]);
    let definitely_lost = leaks["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "definitely_lost")
        .unwrap()["blocks"]
        .clone();
    let lost = nodes.values().find(|n| n["name"] == "(lost)").unwrap();
    let lost_refs = lost["references"].as_array().unwrap();
    assert_eq!(Value::from(lost_refs.len()), definitely_lost);
    let list_nodes: Vec<&Value> = nodes
        .values()
        .filter(|n| n["name"] == "leaks::ListNode")
        .collect();
    assert_eq!(list_nodes.len(), 100);
    let head = list_nodes
        .iter()
        .max_by_key(|n| n["retained_size"].as_u64())
        .unwrap();
    assert!(lost_refs.iter().any(|r| r[2] == head["id"]), "{head}");
    let mut linked = 0;
    for node in &list_nodes {
        for reference in node["references"].as_array().unwrap() {
            if reference[0] == "property" && reference[1] == "next" {
                let target = &nodes[&reference[2].as_u64().unwrap()];
                assert_eq!(target["name"], "leaks::ListNode");
                linked += 1;
            }
        }
    }
    assert_eq!(linked, 99);
}
