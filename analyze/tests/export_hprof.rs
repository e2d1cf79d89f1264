//! `heapdump tohprof`: the HPROF written for a dump built on purpose,
//! read back with an independent parser (the `jvm-hprof` crate): one
//! instance per allocation with the real sizes, class names, reference
//! fields pointing at the right objects, roots by kind, stack traces.

use std::collections::{BTreeMap, HashMap};

use heapdump_analyze::export::HeapModel;
use heapdump_analyze::export::hprof::{HprofOptions, write_hprof};
use heapdump_analyze::stacks::StackFrames;
use heapdump_analyze::symbolize::Frame;
use heapdump_formats::read::{Dump, DumpView};
use heapdump_formats::records::{
    AllocationRecord, EdgeRecord, RootRecord, StrRef, ThreadRecord, owner_kind, root_kind,
    thread_flags,
};
use heapdump_formats::testing::DumpBuilder;
use jvm_hprof::heap_dump::{FieldType, FieldValue, SubRecord};
use jvm_hprof::{IdSize, RecordTag, parse_hprof};

mod export_common;
use export_common::{frames_of, test_dump};

/// A class dump: instance size, superclass id, fields (name, is object).
type ClassDump = (u32, u64, Vec<(String, bool)>);

/// What the parser found.
#[derive(Debug, Default)]
struct Parsed {
    timestamp_ms: u64,
    strings: HashMap<u64, String>,
    /// class id → name.
    class_names: HashMap<u64, String>,
    /// class id → (instance size, super id, field (name, is object)).
    class_dumps: HashMap<u64, ClassDump>,
    /// class id → static (name, value).
    statics: HashMap<u64, Vec<(String, u64)>>,
    /// object id → (class id, stack trace serial, field values).
    instances: BTreeMap<u64, (u64, u32, Vec<u64>)>,
    /// root kind → object ids.
    roots: BTreeMap<&'static str, Vec<u64>>,
    /// stack trace serial → frame ids.
    traces: HashMap<u32, Vec<u64>>,
    /// frame id → (method, file, line).
    frames: HashMap<u64, (String, String, i32)>,
    segments: usize,
    ended: bool,
}

impl Parsed {
    fn class_of(&self, object: u64) -> &str {
        let class = self.instances[&object].0;
        &self.class_names[&class]
    }

    /// Field values of `object` by field name.
    fn fields(&self, object: u64) -> BTreeMap<String, u64> {
        let (class, _, values) = &self.instances[&object];
        let names = &self.class_dumps[class].2;
        names
            .iter()
            .map(|(n, _)| n.clone())
            .zip(values.iter().copied())
            .collect()
    }
}

fn parse(bytes: &[u8]) -> Parsed {
    let hprof = parse_hprof(bytes).expect("the header parses");
    let header = hprof.header();
    assert_eq!(header.label().expect("label"), "JAVA PROFILE 1.0.2");
    assert!(matches!(header.id_size(), IdSize::U64));
    let mut p = Parsed {
        timestamp_ms: header.timestamp_millis(),
        ..Parsed::default()
    };
    let mut class_name_ids = HashMap::new();
    let mut raw_fields: HashMap<u64, Vec<(u64, bool)>> = HashMap::new();
    let mut raw_statics: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    let mut raw_instances = Vec::new();
    for record in hprof.records_iter() {
        let record = record.expect("a record parses");
        assert!(!p.ended, "no record after HEAP_DUMP_END");
        match record.tag() {
            RecordTag::Utf8 => {
                let utf8 = record.as_utf_8().unwrap().expect("utf8");
                p.strings.insert(
                    utf8.name_id().id(),
                    String::from_utf8(utf8.text().to_vec()).expect("utf-8"),
                );
            }
            RecordTag::LoadClass => {
                let lc = record.as_load_class().unwrap().expect("load class");
                class_name_ids.insert(lc.class_obj_id().id(), lc.class_name_id().id());
            }
            RecordTag::StackFrame => {
                let f = record.as_stack_frame().unwrap().expect("frame");
                let line = match f.line_num() {
                    jvm_hprof::LineNum::Normal(n) => n as i32,
                    _ => -1,
                };
                p.frames.insert(
                    f.id().id(),
                    (
                        f.method_name_id().id().to_string(),
                        f.source_file_name_id().id().to_string(),
                        line,
                    ),
                );
            }
            RecordTag::StackTrace => {
                let t = record.as_stack_trace().unwrap().expect("trace");
                let ids = t.frame_ids().map(|id| id.expect("id").id()).collect();
                p.traces.insert(t.stack_trace_serial().num(), ids);
            }
            RecordTag::HeapDumpSegment => {
                p.segments += 1;
                let segment = record.as_heap_dump_segment().unwrap().expect("segment");
                for sub in segment.sub_records() {
                    match sub.expect("sub-record") {
                        SubRecord::Class(c) => {
                            let id = c.obj_id().id();
                            let fields = c
                                .instance_field_descriptors()
                                .map(|f| {
                                    let f = f.expect("field");
                                    (
                                        f.name_id().id(),
                                        matches!(f.field_type(), FieldType::ObjectId),
                                    )
                                })
                                .collect();
                            raw_fields.insert(id, fields);
                            let statics = c
                                .static_fields()
                                .map(|s| {
                                    let s = s.expect("static");
                                    let value = match s.value() {
                                        FieldValue::ObjectId(id) => id.map_or(0, |id| id.id()),
                                        other => panic!("non-object static {other:?}"),
                                    };
                                    (s.name_id().id(), value)
                                })
                                .collect();
                            raw_statics.insert(id, statics);
                            p.class_dumps.insert(
                                id,
                                (
                                    c.instance_size_bytes(),
                                    c.super_class_obj_id().map_or(0, |id| id.id()),
                                    Vec::new(),
                                ),
                            );
                        }
                        SubRecord::Instance(i) => raw_instances.push((
                            i.obj_id().id(),
                            i.class_obj_id().id(),
                            i.stack_trace_serial().num(),
                            i.fields().to_vec(),
                        )),
                        SubRecord::GcRootJavaStackFrame(r) => p
                            .roots
                            .entry("java_frame")
                            .or_default()
                            .push(r.obj_id().id()),
                        SubRecord::GcRootNativeStack(r) => p
                            .roots
                            .entry("native_stack")
                            .or_default()
                            .push(r.obj_id().id()),
                        SubRecord::GcRootThreadBlock(r) => p
                            .roots
                            .entry("thread_block")
                            .or_default()
                            .push(r.obj_id().id()),
                        SubRecord::GcRootThreadObj(r) => p
                            .roots
                            .entry("thread_obj")
                            .or_default()
                            .push(r.thread_obj_id().map_or(0, |id| id.id())),
                        SubRecord::GcRootSystemClass(r) => p
                            .roots
                            .entry("sticky_class")
                            .or_default()
                            .push(r.obj_id().id()),
                        SubRecord::GcRootUnknown(r) => {
                            p.roots.entry("unknown").or_default().push(r.obj_id().id())
                        }
                        other => panic!("unexpected sub-record {other:?}"),
                    }
                }
            }
            RecordTag::HeapDumpEnd => p.ended = true,
            RecordTag::StartThread => {}
            other => panic!("unexpected record {other:?}"),
        }
    }
    assert!(p.ended, "the file ends with HEAP_DUMP_END");
    let string = |p: &Parsed, id: u64| p.strings.get(&id).cloned().expect("a named string");
    for (class, name) in &class_name_ids {
        p.class_names.insert(*class, string(&p, *name));
    }
    for (class, fields) in raw_fields {
        let named = fields
            .into_iter()
            .map(|(n, o)| (string(&p, n), o))
            .collect();
        p.class_dumps.get_mut(&class).expect("dump").2 = named;
    }
    for (class, statics) in raw_statics {
        let named = statics
            .into_iter()
            .map(|(n, v)| (string(&p, n), v))
            .collect();
        p.statics.insert(class, named);
    }
    for frame in p.frames.clone().into_iter() {
        let (id, (method, file, line)) = frame;
        let method = string(&p, method.parse().unwrap());
        let file = string(&p, file.parse().unwrap());
        p.frames.insert(id, (method, file, line));
    }
    for (id, class, trace, bytes) in raw_instances {
        let fields = &p.class_dumps.get(&class).expect("the class is dumped").2;
        assert!(fields.iter().all(|f| f.1), "every field is an object");
        assert_eq!(bytes.len(), fields.len() * 8, "instance {id:#x} byte count");
        let values = bytes
            .chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
        assert!(
            p.instances.insert(id, (class, trace, values)).is_none(),
            "object id {id:#x} is unique"
        );
    }
    p
}

/// The test dump's frames, and statics named by a test's function.
struct Names<'s> {
    statics: &'s dyn Fn(u64) -> Option<String>,
}

impl StackFrames for Names<'_> {
    fn stack_frames(&mut self, _: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        frames_of(stack)
    }

    fn symbol_at(&self, address: u64) -> Option<String> {
        (self.statics)(address)
    }
}

fn export(dump: &Dump, statics: &dyn Fn(u64) -> Option<String>) -> (Vec<u8>, Parsed) {
    let model = HeapModel::build(dump.view(), Names { statics }).expect("model");
    let mut out = Vec::new();
    let summary = write_hprof(&model, &HprofOptions::default(), &mut out).expect("export");
    let parsed = parse(&out);
    assert_eq!(summary.instances, dump.view().allocations().len() as u64);
    (out, parsed)
}

#[test]
fn every_allocation_is_one_instance_of_its_type_with_its_real_size() {
    let dump = test_dump();
    let (_, p) = export(&dump, &|_| None);
    let view = dump.view();
    let heap: Vec<u64> = view.allocations().iter().map(|a| a.address).collect();
    for &address in &heap {
        assert!(p.instances.contains_key(&address), "{address:#x} exported");
    }
    // Heap instances plus one thread object; nothing else.
    assert_eq!(p.instances.len(), heap.len() + 1);
    let thread_objects: Vec<_> = p
        .instances
        .keys()
        .filter(|&&id| p.class_of(id) == "java.lang.Thread")
        .collect();
    assert_eq!(thread_objects.len(), 1);
    let total: u64 = heap
        .iter()
        .map(|a| u64::from(p.class_dumps[&p.instances[a].0].0))
        .sum();
    assert_eq!(total, view.process().live_bytes);
    let all: u64 = p
        .instances
        .values()
        .map(|i| u64::from(p.class_dumps[&i.0].0))
        .sum();
    assert_eq!(all, total, "thread objects add no bytes");

    let names: Vec<&str> = heap.iter().map(|&a| p.class_of(a)).collect();
    assert_eq!(names[0], "app::Node");
    assert_eq!(names[1], "app::Node");
    // Vec<u64> buffers come in two sizes: one class each.
    assert_eq!(names[2], "Vec<u64> buffer [64 bytes]");
    assert_eq!(names[6], "Vec<u64> buffer [128 bytes]");
    assert!(names[3].starts_with("alloc@app::make"), "{}", names[3]);
    assert_eq!(names[3], names[4]);

    for required in [
        "java.lang.Object",
        "java.lang.Class",
        "java.lang.ref.Reference",
        "java.lang.ref.WeakReference",
        "java.lang.ref.SoftReference",
        "java.lang.ref.FinalReference",
        "java.lang.ref.PhantomReference",
    ] {
        let (id, _) = p
            .class_names
            .iter()
            .find(|(_, n)| n.as_str() == required)
            .unwrap_or_else(|| panic!("{required} is loaded"));
        assert!(p.class_dumps.contains_key(id), "{required} is dumped");
        if required == "java.lang.Object" {
            assert!(p.class_dumps[id].0 > 0, "Object's instance size > 0");
        }
        if required == "java.lang.ref.Reference" {
            assert_eq!(p.class_dumps[id].2, vec![("referent".to_owned(), true)]);
        }
    }
    for id in p.class_dumps.keys() {
        assert!(p.class_names.contains_key(id), "every class is loaded");
    }
    assert!(p.timestamp_ms > 1_600_000_000_000, "a real timestamp");
    assert!(p.segments >= 1);
}

#[test]
fn pointers_are_reference_fields_to_the_objects_they_point_into() {
    let dump = test_dump();
    let (_, p) = export(&dump, &|_| None);
    // Allocation 0 (0x1000) points at 1 from +8 and into 2 from +0x10;
    // allocation 1 (0x2000) at 2 from +0x10 and 5 from +0x18: the class
    // app::Node has the union of slots.
    let node0 = p.fields(0x1000);
    assert_eq!(
        node0,
        BTreeMap::from([
            ("+0x8".to_owned(), 0x2000),
            ("+0x10".to_owned(), 0x3000),
            ("+0x18".to_owned(), 0),
        ])
    );
    let node1 = p.fields(0x2000);
    assert_eq!(node1["+0x10"], 0x3000);
    assert_eq!(node1["+0x18"], 0x6000);
    assert_eq!(p.fields(0x4000)["+0x0"], 0x5000);
    assert_eq!(p.fields(0x6000)["+0x0"], 0x7000);
    assert!(p.fields(0x3000).is_empty());
}

#[test]
fn roots_map_to_thread_frames_native_stacks_and_thread_objects() {
    let dump = test_dump();
    let (_, p) = export(&dump, &|_| None);
    // Root 0 (thread stack) points at 0x1000 twice; root 2 (registers) at
    // 0x2000; root 1 (data segment) at nothing.
    assert_eq!(p.roots["java_frame"], vec![0x1000, 0x1000]);
    assert_eq!(p.roots["native_stack"], vec![0x2000]);
    assert_eq!(p.roots["thread_obj"].len(), 1);
    let thread = p.roots["thread_obj"][0];
    assert_eq!(p.class_of(thread), "java.lang.Thread");
    assert!(!p.roots.contains_key("sticky_class"));
    assert!(!p.roots.contains_key("unknown"));
}

#[test]
fn instances_carry_their_allocation_stack() {
    let dump = test_dump();
    let (_, p) = export(&dump, &|_| None);
    // Allocation 0 came from stack 1: Box<app::Node>::new in app::build.
    let trace = p.instances[&0x1000].1;
    let frames: Vec<_> = p.traces[&trace].iter().map(|f| &p.frames[f]).collect();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].0, "__rust_alloc [inlined]");
    assert_eq!(
        frames[2],
        &("app::build".to_owned(), "main.rs".to_owned(), 10)
    );
}

/// A dump with a data segment root holding two pointers, a TLS root, and
/// one 40,000-pointer object.
fn statics_and_big_dump() -> Dump {
    let mut b = DumpBuilder::default();
    let name = b.string(b"worker");
    let module = b.string(b"/usr/bin/app");
    b.process.pointer_size = 8;
    b.process.machine = 62;
    // A scanned dump (it has roots and edges): exports refuse dumps without.
    b.process.flags |= heapdump_formats::records::process_flags::HAS_SCAN;
    b.threads.push(ThreadRecord {
        tid: 7,
        flags: thread_flags::ALIVE,
        name,
        ..Default::default()
    });
    b.modules.push(heapdump_formats::records::ModuleRecord {
        path: module,
        start: 0x40_0000,
        end: 0x50_0000,
        flags: heapdump_formats::records::module_flags::MAIN_EXECUTABLE,
        ..Default::default()
    });
    b.stack(&[]);
    let big = 40_000u64;
    for (i, size) in [big * 8, 24, 24].into_iter().enumerate() {
        b.allocations.push(AllocationRecord {
            address: 0x100_0000 * (i as u64 + 1),
            size,
            sequence: i as u64,
            stack: 0,
            thread: 0,
            align: 8,
            flags: 0,
        });
    }
    let root = |kind, owner_kind, address| RootRecord {
        kind,
        owner_kind,
        owner: 0,
        address,
        size: 0x100,
        name: StrRef::EMPTY,
        reserved: 0,
    };
    b.roots
        .push(root(root_kind::DATA_SEGMENT, owner_kind::MODULE, 0x48_0000));
    b.roots
        .push(root(root_kind::STATIC_TLS, owner_kind::THREAD, 0x7000));
    let edge = |source, target, source_offset, flags| EdgeRecord {
        source,
        target,
        source_offset,
        target_offset: 0,
        flags,
        reserved: 0,
    };
    b.edges.push(edge(0, 0, 0, 1));
    b.edges.push(edge(0, 1, 8, 1));
    b.edges.push(edge(1, 2, 0, 1));
    for slot in 0..big {
        b.edges.push(edge(0, 1 + (slot % 2) as u32, slot * 8, 0));
    }
    b.sort_edges();
    b.fix_totals();
    Dump::from_vec(b.to_bytes()).expect("parses")
}

#[test]
fn statics_are_named_static_fields_and_huge_objects_chain() {
    let dump = statics_and_big_dump();
    let (_, p) = export(&dump, &|address| {
        (address == 0x48_0000).then(|| "app::CACHE".to_owned())
    });
    // Statics: one holder class, a sticky class root.
    let sticky = &p.roots["sticky_class"];
    assert_eq!(sticky.len(), 1);
    assert_eq!(p.class_names[&sticky[0]], "statics of app");
    assert_eq!(
        p.statics[&sticky[0]],
        vec![
            ("app::CACHE".to_owned(), 0x100_0000),
            ("0x480008".to_owned(), 0x200_0000)
        ]
    );
    assert_eq!(p.roots["thread_block"], vec![0x300_0000]);

    // The big object: 32,766 pointers, then `continued`, one continuation.
    let big = p.fields(0x100_0000);
    assert_eq!(big.len(), 32_767);
    assert_eq!(big["+0x0"], 0x200_0000);
    assert_eq!(big["+0x8"], 0x300_0000);
    let next = big["continued"];
    assert!(next >= 0xC000_0000_0000_0000, "synthetic id {next:#x}");
    assert!(p.class_of(next).ends_with("[continued 1]"));
    let rest = p.fields(next);
    assert_eq!(rest.len(), 40_000 - 32_766 + 1);
    assert_eq!(rest["continued"], 0);
    assert_eq!(rest[&format!("+{:#x}", 39_999 * 8)], 0x300_0000);
    let class = p.instances[&0x100_0000].0;
    assert_eq!(p.class_dumps[&class].0, 320_000);
    assert_eq!(p.class_dumps[&p.instances[&next].0].0, 0);
    let total: u64 = p
        .instances
        .values()
        .map(|i| u64::from(p.class_dumps[&i.0].0))
        .sum();
    assert_eq!(total, dump.view().process().live_bytes);
}

#[test]
fn segments_split_big_heaps_and_timestamps_change() {
    let mut b = DumpBuilder::realistic(200_000);
    b.fix_totals();
    let dump = Dump::from_vec(b.to_bytes()).expect("parses");
    let model = HeapModel::build(dump.view(), |_: u32| Ok(Vec::new())).expect("model");
    let mut out = Vec::new();
    let options = HprofOptions {
        timestamp_ms: 1_700_000_000_123,
        ..HprofOptions::default()
    };
    let summary = write_hprof(&model, &options, &mut out).expect("export");
    let p = parse(&out);
    assert_eq!(p.timestamp_ms, 1_700_000_000_123);
    assert!(p.segments > 1, "{} segments", p.segments);
    assert_eq!(summary.bytes, dump.view().process().live_bytes);
    let heap = p
        .instances
        .values()
        .filter(|i| p.class_names[&i.0] != "java.lang.Thread")
        .count() as u64;
    assert_eq!(heap, summary.instances + summary.continuations);
    assert_eq!(summary.instances, dump.view().allocations().len() as u64);
    let a = HprofOptions::default().timestamp_ms;
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(HprofOptions::default().timestamp_ms > a);
}

mod cli_common;

#[test]
fn the_command_writes_a_file_or_a_pipe_but_never_a_terminal() {
    // `small()` without modules, so no executable is needed.
    let mut b = DumpBuilder::small();
    b.modules.clear();
    b.segments.clear();
    b.roots.retain(|r| r.owner_kind != owner_kind::MODULE);
    b.edges
        .retain(|e| e.flags & heapdump_formats::records::edge_flags::FROM_ROOT == 0);
    let bytes = b.to_bytes();
    let dump = cli_common::write_dump("export_hprof", "small", &bytes);
    let allocations = Dump::from_vec(bytes)
        .expect("parses")
        .view()
        .allocations()
        .len();
    let dump = dump.to_str().expect("utf-8 path");
    let file = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("export_hprof.hprof");
    let output = cli_common::heapdump(&["tohprof", dump, "-o", file.to_str().expect("utf-8")]);
    assert!(output.status.success(), "{}", cli_common::stderr(&output));
    assert!(cli_common::stderr(&output).contains(&format!("{allocations} instances")));
    let from_file = parse(&std::fs::read(&file).expect("the file is written"));

    // Stdout is a pipe here: the same heap.
    let output = cli_common::heapdump(&["tohprof", dump]);
    assert!(output.status.success(), "{}", cli_common::stderr(&output));
    let from_pipe = parse(&output.stdout);
    assert_eq!(
        from_pipe
            .instances
            .keys()
            .filter(|&&id| id < 0xC000_0000_0000_0000)
            .count(),
        allocations
    );
    assert_eq!(
        from_pipe
            .instances
            .keys()
            .filter(|&&id| id < 0xC000_0000_0000_0000)
            .collect::<Vec<_>>(),
        from_file
            .instances
            .keys()
            .filter(|&&id| id < 0xC000_0000_0000_0000)
            .collect::<Vec<_>>()
    );

    // A terminal (`script` runs the command on a pseudo-terminal): refused.
    let command = format!("{} tohprof {dump}", env!("CARGO_BIN_EXE_heapdump"));
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("cannot run `script` (Debian package bsdutils) to get a terminal");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("pass -o FILE.hprof"), "{text}");
    assert!(!text.contains("JAVA PROFILE"), "{text}");
}

/// A dump that breaks the format's cross-references (stack, thread, owner
/// and edge indexes out of range, an unknown root kind, a size above
/// 2 GiB) still exports, without a panic.
#[test]
fn broken_references_export_without_panicking() {
    let mut b = DumpBuilder::small();
    // Version 1 holds any value; version 2's writer refuses a stack id of
    // 2^24 or more rather than write it wrong.
    b.major = Some(1);
    for a in &mut b.allocations {
        a.stack = u32::MAX;
        a.thread = u32::MAX - 1;
    }
    if let Some(a) = b.allocations.last_mut() {
        a.size = 5 << 30;
    }
    for r in &mut b.roots {
        r.owner = 999;
        r.kind = 77;
    }
    b.roots.push(RootRecord {
        kind: root_kind::THREAD_STACK,
        owner_kind: owner_kind::THREAD,
        owner: u32::MAX,
        address: 0x10,
        size: 8,
        name: StrRef::EMPTY,
        reserved: 0,
    });
    let last_root = (b.roots.len() - 1) as u32;
    b.edges.push(EdgeRecord {
        source: last_root,
        target: 0,
        source_offset: 0,
        target_offset: 0,
        flags: heapdump_formats::records::edge_flags::FROM_ROOT,
        reserved: 0,
    });
    b.edges.push(EdgeRecord {
        source: 0,
        target: 9999,
        source_offset: 0,
        target_offset: 0,
        flags: 0,
        reserved: 0,
    });
    // The reader checks structure; cross-references are `verify`'s job.
    let dump = Dump::from_vec(b.to_bytes()).expect("parses");
    let model = HeapModel::build(dump.view(), |_: u32| -> anyhow::Result<Vec<Frame>> {
        anyhow::bail!("no stacks")
    })
    .expect("model");
    let mut out = Vec::new();
    let summary = write_hprof(&model, &HprofOptions::default(), &mut out).expect("export");
    assert_eq!(summary.clamped, 1);
    let p = parse(&out);
    assert!(p.roots.contains_key("unknown"), "{:?}", p.roots);
}
