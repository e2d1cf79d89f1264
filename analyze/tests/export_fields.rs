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
