//! Field names for pointer offsets, from the DWARF type information of the
//! dumped program: the pointer at offset 8 of an `app::Node` is its `next`
//! field, the one at offset 40 of a `Vec<app::Node>` buffer is
//! `[1].next`.
//!
//! Only `debug = 2` ("full") builds carry the structure and member entries
//! this needs; with `line-tables-only` the index is empty and exports fall
//! back to byte offsets. Struct names are indexed by their full path with
//! the same shortening as recovered types (`Vec<u8>`, `RcInner<app::Node>`),
//! so a [`TypeName`] finds its layout.
//!
//! ```no_run
//! use heapdump_analyze::fields::FieldIndex;
//! let index = FieldIndex::load("target/debug/app".as_ref())?;
//! println!("{:?}", index.field_at("app::Node", 8)); // Some("next")
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use gimli::{AttributeValue, DebugInfoOffset, EndianSlice, RunTimeEndian};
use object::{Object as _, ObjectSection as _};

use crate::types::{TypeKind, TypeName, shorten_type};

/// What a member's type is, for looking inside it.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    offset: u64,
    type_ref: Option<usize>,
}

/// Layouts of the structs of one binary.
#[derive(Debug, Default)]
pub struct FieldIndex {
    /// Struct and union members by shortened full type name, by offset.
    structs: HashMap<String, Vec<Member>>,
    /// Byte size of every named type (structs, unions, enums, base and
    /// pointer types) by shortened name.
    sizes: HashMap<String, u64>,
    /// Shortened name of every named type entry, by `.debug_info` offset.
    names: HashMap<usize, String>,
    /// Array types: element type entry and element count.
    arrays: HashMap<usize, (Option<usize>, Option<u64>)>,
}

/// Kinds of entries on the walk's stack of enclosing entries.
enum Scope {
    Namespace(String),
    Struct(String),
    Array(usize),
    Other,
}

impl FieldIndex {
    /// Reads the DWARF of the ELF file at `path`. A file without type
    /// information gives an empty index (see [`is_empty`](Self::is_empty)).
    pub fn load(path: &Path) -> Result<FieldIndex> {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        FieldIndex::parse(&data).with_context(|| {
            format!(
                "cannot read the DWARF type information of {}",
                path.display()
            )
        })
    }

    /// Reads the DWARF of an object file's bytes.
    pub fn parse(data: &[u8]) -> Result<FieldIndex> {
        let object = object::File::parse(data)?;
        let endian = if object.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let sections = gimli::DwarfSections::load(|id| -> Result<Cow<'_, [u8]>> {
            Ok(match object.section_by_name(id.name()) {
                Some(section) => section.uncompressed_data()?,
                None => Cow::Borrowed(&[]),
            })
        })?;
        let dwarf = sections.borrow(|section| EndianSlice::new(section, endian));
        let mut index = FieldIndex::default();
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let unit = dwarf.unit(header)?;
            index.read_unit(&dwarf, &unit)?;
        }
        Ok(index)
    }

    fn read_unit(
        &mut self,
        dwarf: &gimli::Dwarf<EndianSlice<'_, RunTimeEndian>>,
        unit: &gimli::Unit<EndianSlice<'_, RunTimeEndian>>,
    ) -> Result<()> {
        let global = |offset: gimli::UnitOffset| -> Option<usize> {
            offset
                .to_debug_info_offset(&unit.header)
                .map(|DebugInfoOffset(o)| o)
        };
        let mut scopes: Vec<(isize, Scope)> = Vec::new();
        let mut entries = unit.entries();
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            while scopes.last().is_some_and(|(d, _)| *d >= depth) {
                scopes.pop();
            }
            let name = match entry.attr_value(gimli::DW_AT_name) {
                Some(value) => dwarf
                    .attr_string(unit, value)
                    .ok()
                    .map(|s| s.to_string_lossy().into_owned()),
                None => None,
            };
            let byte_size = entry
                .attr_value(gimli::DW_AT_byte_size)
                .and_then(|v| v.udata_value());
            let type_ref = match entry.attr_value(gimli::DW_AT_type) {
                Some(AttributeValue::UnitRef(offset)) => global(offset),
                Some(AttributeValue::DebugInfoRef(DebugInfoOffset(o))) => Some(o),
                _ => None,
            };
            let here = global(entry.offset());
            let path = || {
                let mut path = String::new();
                for (_, scope) in &scopes {
                    match scope {
                        Scope::Namespace(n) => {
                            path.push_str(n);
                            path.push_str("::");
                        }
                        // A struct's name is already its full path.
                        Scope::Struct(full) => {
                            path.clear();
                            path.push_str(full);
                            path.push_str("::");
                        }
                        _ => {}
                    }
                }
                path
            };
            let tag = entry.tag();
            let scope = if tag == gimli::DW_TAG_namespace {
                Scope::Namespace(name.unwrap_or_default())
            } else if tag == gimli::DW_TAG_structure_type
                || tag == gimli::DW_TAG_union_type
                || tag == gimli::DW_TAG_enumeration_type
            {
                let declaration = entry.attr_value(gimli::DW_AT_declaration).is_some();
                match (name, byte_size) {
                    (Some(name), Some(size)) if !declaration => {
                        let full = shorten_type(&format!("{}{name}", path()));
                        if let Some(here) = here {
                            self.names.insert(here, full.clone());
                        }
                        self.sizes.entry(full.clone()).or_insert(size);
                        if tag == gimli::DW_TAG_enumeration_type {
                            Scope::Other
                        } else {
                            // Another codegen unit's copy of the same type
                            // adds nothing: keep the first.
                            if self.structs.contains_key(&full) {
                                Scope::Other
                            } else {
                                self.structs.insert(full.clone(), Vec::new());
                                Scope::Struct(full)
                            }
                        }
                    }
                    _ => Scope::Other,
                }
            } else if tag == gimli::DW_TAG_base_type || tag == gimli::DW_TAG_pointer_type {
                if let (Some(name), Some(size)) = (name, byte_size) {
                    let name = shorten_type(&name);
                    if let Some(here) = here {
                        self.names.insert(here, name.clone());
                    }
                    self.sizes.entry(name).or_insert(size);
                }
                Scope::Other
            } else if tag == gimli::DW_TAG_array_type {
                if let Some(here) = here {
                    self.arrays.insert(here, (type_ref, None));
                    Scope::Array(here)
                } else {
                    Scope::Other
                }
            } else if tag == gimli::DW_TAG_subrange_type {
                if let Some((_, Scope::Array(array))) = scopes.last() {
                    let count = entry
                        .attr_value(gimli::DW_AT_count)
                        .and_then(|v| v.udata_value());
                    if let Some(slot) = self.arrays.get_mut(array) {
                        slot.1 = count;
                    }
                }
                Scope::Other
            } else if tag == gimli::DW_TAG_member {
                // Only members directly inside a struct: those inside an
                // enum's variant part belong to one variant.
                if let (Some((parent_depth, Scope::Struct(owner))), Some(name)) =
                    (scopes.last(), name)
                    && *parent_depth == depth - 1
                {
                    let offset = entry
                        .attr_value(gimli::DW_AT_data_member_location)
                        .and_then(|v| v.udata_value());
                    if let (Some(offset), Some(members)) = (offset, self.structs.get_mut(owner)) {
                        members.push(Member {
                            name,
                            offset,
                            type_ref,
                        });
                    }
                }
                Scope::Other
            } else {
                Scope::Other
            };
            if entry.has_children() {
                scopes.push((depth, scope));
            }
        }
        for members in self.structs.values_mut() {
            members.sort_by_key(|m| m.offset);
        }
        Ok(())
    }

    /// Whether the binary had no struct layouts (no `debug = 2`).
    pub fn is_empty(&self) -> bool {
        self.structs.is_empty()
    }

    /// Number of struct and union layouts indexed.
    pub fn len(&self) -> usize {
        self.structs.len()
    }

    /// Byte size of the type with shortened name `ty`, if known.
    pub fn size_of(&self, ty: &str) -> Option<u64> {
        self.sizes.get(ty).copied()
    }

    /// The field of struct `ty` at byte `offset`: `next`, `inner.head`,
    /// `items[3]`. Nested fields are followed into the program's own types,
    /// not into the standard library's (`next`, never
    /// `next.0.pointer.pointer` for an `Option<Box<Node>>`).
    pub fn field_at(&self, ty: &str, offset: u64) -> Option<String> {
        self.describe(ty, offset, 0)
    }

    fn describe(&self, ty: &str, offset: u64, depth: u32) -> Option<String> {
        let members = self.structs.get(ty)?;
        let index = members
            .partition_point(|m| m.offset <= offset)
            .checked_sub(1)?;
        let member = &members[index];
        let inner = offset - member.offset;
        let size = member
            .type_ref
            .and_then(|r| self.type_size(r))
            .or_else(|| {
                members
                    .get(index + 1)
                    .map(|next| next.offset - member.offset)
            })
            .or_else(|| self.size_of(ty).map(|s| s.saturating_sub(member.offset)))?;
        if inner >= size {
            return None;
        }
        let mut label = member
            .name
            .strip_prefix("__")
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or(&member.name)
            .to_owned();
        if depth >= 4 {
            return Some(label);
        }
        match member.type_ref {
            Some(r) if self.arrays.contains_key(&r) => {
                if let Some(rest) = self.describe_array(r, inner, depth) {
                    label.push_str(&rest);
                }
            }
            Some(r) => {
                if let Some(name) = self.names.get(&r)
                    && !is_library_type(name)
                    && let Some(rest) = self.describe(name, inner, depth + 1)
                {
                    label.push('.');
                    label.push_str(&rest);
                }
            }
            None => {}
        }
        Some(label)
    }

    /// `[i]` or `[i].field` for `offset` inside array type entry `array`.
    fn describe_array(&self, array: usize, offset: u64, depth: u32) -> Option<String> {
        let &(element, _) = self.arrays.get(&array)?;
        let element = element?;
        let size = self.type_size(element).filter(|&s| s > 0)?;
        let mut label = format!("[{}]", offset / size);
        if let Some(name) = self.names.get(&element)
            && !is_library_type(name)
            && let Some(rest) = self.describe(name, offset % size, depth + 1)
        {
            label.push('.');
            label.push_str(&rest);
        }
        Some(label)
    }

    fn type_size(&self, entry: usize) -> Option<u64> {
        if let Some(name) = self.names.get(&entry) {
            return self.size_of(name);
        }
        let &(element, count) = self.arrays.get(&entry)?;
        Some(self.type_size(element?)? * count?)
    }

    /// The field at `offset` of an allocation of recovered type `ty`:
    /// `next` in a boxed `app::Node`, `[2].next` in a `Vec<app::Node>`
    /// buffer, `value.next` in an `RcInner<app::Node>`. `None` when the
    /// binary has no layout for it (or the type has no fields, as a
    /// `String` buffer or a hash table's raw buckets).
    pub fn field_of(&self, ty: &TypeName, offset: u64) -> Option<String> {
        let argument = ty.argument.as_str();
        match ty.kind {
            TypeKind::Box => self.field_at(argument, offset),
            TypeKind::RcInner => self.field_at(&format!("RcInner<{argument}>"), offset),
            TypeKind::ArcInner => self.field_at(&format!("ArcInner<{argument}>"), offset),
            TypeKind::VecBuffer | TypeKind::VecDequeBuffer => {
                let size = self.size_of(argument).filter(|&s| s > 0)?;
                let mut label = format!("[{}]", offset / size);
                if let Some(field) = self.field_at(argument, offset % size) {
                    label.push('.');
                    label.push_str(&field);
                }
                Some(label)
            }
            TypeKind::StringBuffer | TypeKind::HashTable | TypeKind::BTreeNode => None,
        }
    }
}

/// Types whose insides are the standard library's business.
fn is_library_type(name: &str) -> bool {
    [
        "alloc::", "core::", "std::", "Vec<", "Box<", "String", "Option<", "Rc<", "Arc<",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || name.starts_with('*')
        || name.starts_with('&')
}
