//! The dump the export tests share: seven allocations of four types
//! (one untyped), three roots, pointers between them, a lost pair.

#![allow(dead_code)]

use heapdump_analyze::symbolize::Frame;
use heapdump_formats::read::Dump;
use heapdump_formats::records::{
    AllocationRecord, EdgeRecord, RootRecord, StrRef, ThreadRecord, edge_flags, owner_kind,
    process_flags, root_kind, thread_flags,
};
use heapdump_formats::testing::DumpBuilder;

pub const STD: &str = "/rustc/0000/library";

pub fn frame(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
    Frame {
        pc: 0x1000,
        function: Some(function.to_owned()),
        file: Some(file.to_owned()),
        line: Some(line),
        inlined,
        module: None,
        module_offset: None,
    }
}

/// The symbolized stacks of the test dump, by stack id: 1 boxes an
/// `app::Node`, 2 makes a `Vec<u64>`, 3 is the program's own allocation
/// (no constructor frame), 4 makes a `Vec<&str>` (a buffer of pointers:
/// a `String`'s bytes would hold none).
pub fn frames_of(stack: u32) -> anyhow::Result<Vec<Frame>> {
    let alloc = frame("__rust_alloc", "/app/src/main.rs", 1, true);
    let app = |name: &str, line| frame(name, "/app/src/main.rs", line, false);
    let frames = match stack {
        1 => vec![
            alloc,
            frame(
                "new<app::Node>",
                &format!("{STD}/alloc/src/boxed.rs"),
                2,
                true,
            ),
            app("app::build", 10),
        ],
        2 => vec![
            alloc,
            frame(
                "with_capacity_in<u64, alloc::alloc::Global>",
                &format!("{STD}/alloc/src/raw_vec/mod.rs"),
                3,
                true,
            ),
            app("app::fill", 20),
        ],
        3 => vec![alloc, app("app::make", 7)],
        4 => vec![
            alloc,
            frame(
                "with_capacity_in<&str, alloc::alloc::Global>",
                &format!("{STD}/alloc/src/raw_vec/mod.rs"),
                4,
                true,
            ),
            app("app::name", 30),
        ],
        _ => anyhow::bail!("no stack {stack}"),
    };
    // One return address per frame, distinct across stacks.
    Ok(frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| Frame {
            pc: 0x1000 * u64::from(stack) + i as u64,
            ..f
        })
        .collect())
}

/// Allocations 0-6; roots 0 (thread stack), 1 (data segment, points at
/// nothing), 2 (registers). Reachable: 0, 1, 2, 5, 6 (6 only through the
/// 8-byte 5); lost: 3 (definitely), 4 (indirectly, from 3).
pub fn test_dump() -> Dump {
    let mut b = DumpBuilder::default();
    let name = b.string(b"main");
    b.process.pointer_size = 8;
    b.process.page_size = 4096;
    b.process.machine = 62;
    b.process.flags = process_flags::HAS_SCAN | process_flags::WORLD_STOPPED;
    b.threads.push(ThreadRecord {
        tid: 42,
        flags: thread_flags::ALIVE | thread_flags::MAIN | thread_flags::DUMPING,
        name,
        ..Default::default()
    });
    b.stack(&[]);
    for pc in 1..=4u64 {
        b.stack(&[0x1000 * pc]);
    }
    for (i, (size, stack)) in [
        (32, 1),
        (32, 1),
        (64, 2),
        (16, 3),
        (16, 3),
        (8, 4),
        (128, 2),
    ]
    .into_iter()
    .enumerate()
    {
        b.allocations.push(AllocationRecord {
            address: 0x1000 * (i as u64 + 1),
            size,
            sequence: i as u64,
            stack,
            thread: 0,
            align: 8,
            flags: 0,
        });
    }
    let root = |kind, owner_kind, address, size| RootRecord {
        kind,
        owner_kind,
        owner: 0,
        address,
        size,
        name: StrRef::EMPTY,
        reserved: 0,
    };
    b.roots.push(root(
        root_kind::THREAD_STACK,
        owner_kind::THREAD,
        0x7000_0000,
        0x1000,
    ));
    b.roots.push(root(
        root_kind::DATA_SEGMENT,
        owner_kind::NONE,
        0x6000_0000,
        0x100,
    ));
    b.roots
        .push(root(root_kind::REGISTERS, owner_kind::THREAD, 0, 184));
    let edge = |source, target, source_offset, target_offset, flags| EdgeRecord {
        source,
        target,
        source_offset,
        target_offset,
        flags,
        reserved: 0,
    };
    b.edges.extend([
        edge(0, 1, 8, 0, 0),
        edge(0, 2, 16, 8, 0),
        edge(1, 2, 16, 0, 0),
        edge(1, 5, 24, 0, 0),
        edge(3, 4, 0, 0, 0),
        edge(5, 6, 0, 0, 0),
        edge(0, 0, 0x10, 0, edge_flags::FROM_ROOT),
        edge(0, 0, 0x18, 0, edge_flags::FROM_ROOT),
        edge(2, 1, 13 * 8, 0, edge_flags::FROM_ROOT),
    ]);
    b.sort_edges();
    b.fix_totals();
    Dump::from_vec(b.to_bytes()).expect("the test dump parses")
}
