//! Field names from DWARF: this test binary is built with full debug
//! information (the dev profile's `debug = 2`), so the layouts of the
//! types below are in it, at the offsets the compiler chose.

use std::mem::{offset_of, size_of};
use std::rc::Rc;

use heapdump_analyze::fields::FieldIndex;
use heapdump_analyze::types::{TypeKind, TypeName};

#[derive(Debug)]
pub struct Inner {
    pub head: *const u8,
    pub count: usize,
}

#[derive(Debug)]
pub struct FieldNode {
    pub value: u64,
    pub next: Option<Box<FieldNode>>,
    pub children: [u32; 4],
    pub inner: Inner,
}

fn index() -> FieldIndex {
    // Make sure the types (and Rc's inner block of one) are in the binary.
    let node = Rc::new(FieldNode {
        value: 1,
        next: None,
        children: [0; 4],
        inner: Inner {
            head: std::ptr::null(),
            count: 0,
        },
    });
    std::hint::black_box(&node);
    let exe = std::env::current_exe().expect("test executable");
    FieldIndex::load(&exe).expect("DWARF of the test executable")
}

#[test]
fn struct_offsets_name_fields_nested_fields_and_array_elements() {
    let index = index();
    let ty = "export_fields::FieldNode";
    assert_eq!(index.size_of(ty), Some(size_of::<FieldNode>() as u64));
    let at = |offset: usize| index.field_at(ty, offset as u64);
    assert_eq!(at(offset_of!(FieldNode, value)).as_deref(), Some("value"));
    assert_eq!(at(offset_of!(FieldNode, next)).as_deref(), Some("next"));
    assert_eq!(
        at(offset_of!(FieldNode, children) + 8).as_deref(),
        Some("children[2]")
    );
    assert_eq!(
        at(offset_of!(FieldNode, inner) + offset_of!(Inner, count)).as_deref(),
        Some("inner.count")
    );
    assert_eq!(index.field_at("no::such::Type", 0), None);
}

#[test]
fn recovered_types_find_their_layouts() {
    let index = index();
    let node = "export_fields::FieldNode";
    let next = offset_of!(FieldNode, next) as u64;
    let size = size_of::<FieldNode>() as u64;
    assert_eq!(
        index
            .field_of(&TypeName::new(TypeKind::Box, node), next)
            .as_deref(),
        Some("next")
    );
    assert_eq!(
        index
            .field_of(&TypeName::new(TypeKind::VecBuffer, node), 2 * size + next)
            .as_deref(),
        Some("[2].next")
    );
    // RcInner<T> is strong, weak, then the value.
    assert_eq!(
        index
            .field_of(&TypeName::new(TypeKind::RcInner, node), 16 + next)
            .as_deref(),
        Some("value.next")
    );
    assert_eq!(
        index.field_of(&TypeName::new(TypeKind::StringBuffer, ""), 0),
        None
    );
}

/// A generic method kept out of line, so its instance for `u64` has its
/// own code and template parameter in the DWARF; full debug info names it
/// after its impl, `Holder<T>::make_boxed`.
#[derive(Debug)]
pub struct Holder<T>(T);

impl<T: Default> Holder<T> {
    #[inline(never)]
    fn make_boxed() -> Box<T> {
        Box::new(T::default())
    }
}

/// A non-generic function with a plain symbol, to find the load bias.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn export_fields_anchor() -> u32 {
    7
}

/// The frames the symbolizer reports for the start of out-of-line function
/// `code` (the generic names, `Holder<T>::make_boxed`), as a stack of one
/// return address in module `exe`.
fn frames_at(code: usize) -> Vec<heapdump_analyze::symbolize::Frame> {
    use object::{Object as _, ObjectSymbol as _};

    let exe = std::env::current_exe().expect("test executable");
    let data = std::fs::read(&exe).expect("read the test executable");
    let file = object::File::parse(&*data).expect("parse");
    let anchor = file
        .symbols()
        .find(|s| s.name() == Ok("export_fields_anchor"))
        .expect("anchor symbol")
        .address();
    let anchor_fn = export_fields_anchor as extern "C" fn() -> u32;
    let bias = (anchor_fn as usize as u64).wrapping_sub(anchor);
    let probe = (code as u64).wrapping_sub(bias) + 1;

    let loader = addr2line::Loader::new(&exe).expect("addr2line");
    let mut frames = Vec::new();
    let mut iter = loader.find_frames(probe).expect("frames");
    while let Ok(Some(frame)) = iter.next() {
        frames.push(heapdump_analyze::symbolize::Frame {
            pc: probe + 1,
            function: frame
                .function
                .and_then(|f| f.demangle().ok().map(|n| n.into_owned())),
            file: None,
            line: None,
            inlined: true,
            module: Some("exe".into()),
            module_offset: Some(probe + 1),
        });
    }
    frames
}

/// The outermost function name of `frames`, before and after
/// `resolve_stack`.
fn outer_name_resolved(
    index: &FieldIndex,
    mut frames: Vec<heapdump_analyze::symbolize::Frame>,
) -> (String, String) {
    let outer = frames
        .last()
        .and_then(|f| f.function.clone())
        .expect("a name");
    index.resolve_stack(&mut frames, "exe");
    let resolved = frames
        .last()
        .and_then(|f| f.function.clone())
        .unwrap_or_default();
    (outer, resolved)
}

#[test]
fn full_debug_names_get_their_generic_parameters_back() {
    let instance = Holder::<u64>::make_boxed as fn() -> Box<u64>;
    std::hint::black_box(instance());
    let (outer, resolved) = outer_name_resolved(&index(), frames_at(instance as usize));
    assert!(outer.ends_with("Holder<T>::make_boxed"), "{outer}");
    assert!(
        resolved.ends_with("Holder<u64>::make_boxed"),
        "{outer} resolved to {resolved}"
    );
}

/// A `T` that is itself a thin pointer (`Box<U>`, `&U`): LLVM writes its
/// `DW_TAG_pointer_type` without a byte size, and the parameter must still
/// be named, as for the element of a `Vec<Box<[u8; 4096]>>`.
#[test]
fn a_pointer_type_parameter_is_named_and_one_address_wide() {
    let instance = Holder::<Box<u64>>::make_boxed as fn() -> Box<Box<u64>>;
    std::hint::black_box(instance());
    let index = index();
    let (outer, resolved) = outer_name_resolved(&index, frames_at(instance as usize));
    assert!(outer.ends_with("Holder<T>::make_boxed"), "{outer}");
    assert!(
        resolved.ends_with("Holder<Box<u64>>::make_boxed"),
        "{outer} resolved to {resolved}"
    );
    assert_eq!(index.size_of("Box<u64>"), Some(size_of::<usize>() as u64));
    // So a `Vec<Box<u64>>` buffer's pointers are elements, not offsets.
    assert_eq!(
        index
            .field_of(&TypeName::new(TypeKind::VecBuffer, "Box<u64>"), 24)
            .as_deref(),
        Some("[3]")
    );
}

/// `tohprof` names a class's pointer fields after the DWARF members.
#[test]
fn hprof_fields_are_named_after_the_struct_members() {
    use heapdump_analyze::export::HeapModel;
    use heapdump_analyze::export::hprof::{HprofOptions, write_hprof};
    use heapdump_analyze::symbolize::Frame;
    use heapdump_formats::read::Dump;
    use heapdump_formats::records::{AllocationRecord, EdgeRecord};
    use heapdump_formats::testing::DumpBuilder;
    use jvm_hprof::heap_dump::SubRecord;
    use jvm_hprof::{RecordTag, parse_hprof};

    let size = size_of::<FieldNode>() as u64;
    let next = offset_of!(FieldNode, next) as u64;
    let mut b = DumpBuilder::default();
    b.process.pointer_size = 8;
    // A scanned dump (it has edges): exports refuse dumps without a scan.
    b.process.flags |= heapdump_formats::records::process_flags::HAS_SCAN;
    b.stack(&[]);
    b.stack(&[0x1000]);
    for i in 0..2u64 {
        b.allocations.push(AllocationRecord {
            address: 0x1000 * (i + 1),
            size,
            sequence: i,
            stack: 1,
            thread: u32::MAX,
            align: 8,
            flags: 0,
        });
    }
    b.edges.push(EdgeRecord {
        source: 0,
        target: 1,
        source_offset: next,
        target_offset: 0,
        flags: 0,
        reserved: 0,
    });
    b.fix_totals();
    let dump = Dump::from_vec(b.to_bytes()).expect("parses");
    let frame = |function: &str, file: &str| Frame {
        pc: 0x1000,
        function: Some(function.to_owned()),
        file: Some(file.to_owned()),
        line: Some(1),
        inlined: true,
        module: None,
        module_offset: None,
    };
    let mut model = HeapModel::build(dump.view(), |_: u32| {
        Ok(vec![
            frame("__rust_alloc", "/app/src/main.rs"),
            frame(
                "new<export_fields::FieldNode>",
                "/rustc/0000/library/alloc/src/boxed.rs",
            ),
        ])
    })
    .expect("model");
    model.set_fields(index());
    let mut out = Vec::new();
    write_hprof(&model, &HprofOptions::default(), &mut out).expect("export");

    let hprof = parse_hprof(&out).expect("header");
    let mut strings = std::collections::HashMap::new();
    let mut field_names = Vec::new();
    for record in hprof.records_iter() {
        let record = record.expect("record");
        match record.tag() {
            RecordTag::Utf8 => {
                let u = record.as_utf_8().unwrap().expect("utf8");
                strings.insert(u.name_id().id(), u.text_as_str().expect("utf-8").to_owned());
            }
            RecordTag::HeapDumpSegment => {
                let segment = record.as_heap_dump_segment().unwrap().expect("segment");
                for sub in segment.sub_records() {
                    if let SubRecord::Class(c) = sub.expect("sub-record") {
                        for f in c.instance_field_descriptors() {
                            field_names.push(f.expect("field").name_id().id());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let names: Vec<&str> = field_names.iter().map(|id| strings[id].as_str()).collect();
    assert!(names.contains(&"next"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("+0x")), "{names:?}");
}
