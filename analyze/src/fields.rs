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
use std::collections::{HashMap, HashSet};
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
    /// Template type parameters (name, type entry) of each subprogram
    /// entry that has them.
    templates: HashMap<usize, Vec<(String, Option<usize>)>>,
    /// Name and abstract origin (or specification) of subprograms.
    subprograms: HashMap<usize, (Option<String>, Option<usize>)>,
    /// Code ranges of functions and inlined calls: (begin, end, depth,
    /// the entry itself, its abstract origin). Sorted by `begin` after
    /// loading, and kept only for those with template parameters.
    code: Vec<CodeRange>,
    /// Shortened names of the types that can hold no pointer: every
    /// member, recursively through structs, unions, enum variants and
    /// arrays, is a number narrower than an address, a float, `bool`,
    /// `char`, or a C enumeration ([`pointer_free_names`]).
    pointer_free: HashSet<String>,
}

/// What one type entry is made of, as far as holding a pointer goes: read
/// while the units are walked, then reduced to
/// [`FieldIndex::is_pointer_free`]'s set of names.
#[derive(Debug, Default)]
struct PointerShapes {
    /// Named structs, unions and enums (their first definition): the type
    /// entries of every member, those of enum variants included.
    named: HashMap<String, Vec<Option<usize>>>,
    /// Named scalars, pointers and C enumerations.
    named_leaves: HashMap<String, Leaf>,
    /// Names defined more than once with different sizes (two versions of
    /// a crate): never pointer-free, since which one a block is is unknown.
    ambiguous: HashSet<String>,
    /// Structs and unions without a name (C's anonymous members).
    anonymous: HashMap<usize, Vec<Option<usize>>>,
    /// Entries that are another entry under a typedef or a qualifier
    /// (`const`, `volatile`, `restrict`, `_Atomic`).
    aliases: HashMap<usize, Option<usize>>,
    /// Leaves without a name (C's pointer types).
    unnamed_leaves: HashMap<usize, Leaf>,
}

/// A type with no members to look into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    /// A pointer or reference (thin: fat ones are structs of pointers).
    Pointer,
    /// An integer as wide as an address or wider (`usize`, `u64`, C's
    /// `long`): programs keep addresses in them (handles, `uintptr_t`),
    /// and memcheck follows those words.
    AddressWideInteger,
    /// A narrower integer, a float, `bool`, `char`, or a C enumeration.
    Plain,
}

/// Where one function instance or inlined call lies in the code.
#[derive(Clone, Debug)]
struct CodeRange {
    begin: u64,
    end: u64,
    depth: isize,
    entry: usize,
    origin: Option<usize>,
}

/// Kinds of entries on the walk's stack of enclosing entries.
enum Scope {
    Namespace(String),
    Struct(String),
    /// Another unit's copy of a struct already indexed: its name scopes
    /// the types nested in it (an enum's variants), its members are not
    /// read again.
    Duplicate(String),
    /// A struct or union without a name, by entry.
    Anonymous(usize),
    /// An enum's variant part or one variant: its members are the
    /// enclosing enum's.
    Variant,
    Array(usize),
    Function(usize),
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
        let mut shapes = PointerShapes::default();
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let unit = dwarf.unit(header)?;
            index.read_unit(&dwarf, &unit, &mut shapes)?;
        }
        index.pointer_free = pointer_free_names(&shapes, &index.names, &index.arrays);
        for members in index.structs.values_mut() {
            members.sort_by_key(|m| m.offset);
        }
        let mut code = std::mem::take(&mut index.code);
        code.retain(|c| index.params_of(c).is_some());
        code.sort_by_key(|c| (c.begin, c.depth));
        index.code = code;
        Ok(index)
    }

    fn read_unit(
        &mut self,
        dwarf: &gimli::Dwarf<EndianSlice<'_, RunTimeEndian>>,
        unit: &gimli::Unit<EndianSlice<'_, RunTimeEndian>>,
        shapes: &mut PointerShapes,
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
                        Scope::Struct(full) | Scope::Duplicate(full) => {
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
                        let first_size = *self.sizes.entry(full.clone()).or_insert(size);
                        if first_size != size {
                            shapes.ambiguous.insert(full.clone());
                        }
                        if tag == gimli::DW_TAG_enumeration_type {
                            // Its values are numbers, whatever their width.
                            shapes.named_leaves.insert(full, Leaf::Plain);
                            Scope::Other
                        } else {
                            // Another codegen unit's copy of the same type
                            // adds nothing: keep the first.
                            if self.structs.contains_key(&full) {
                                Scope::Duplicate(full)
                            } else {
                                self.structs.insert(full.clone(), Vec::new());
                                shapes.named.insert(full.clone(), Vec::new());
                                Scope::Struct(full)
                            }
                        }
                    }
                    // Another unit defines it: its name finds that one.
                    (Some(name), _) if declaration => {
                        if let Some(here) = here {
                            self.names
                                .insert(here, shorten_type(&format!("{}{name}", path())));
                        }
                        Scope::Other
                    }
                    (None, _) if !declaration && tag != gimli::DW_TAG_enumeration_type => {
                        match here {
                            Some(here) => {
                                shapes.anonymous.insert(here, Vec::new());
                                Scope::Anonymous(here)
                            }
                            None => Scope::Other,
                        }
                    }
                    (None, _) if !declaration => {
                        if let Some(here) = here {
                            shapes.unnamed_leaves.insert(here, Leaf::Plain);
                        }
                        Scope::Other
                    }
                    _ => Scope::Other,
                }
            } else if tag == gimli::DW_TAG_base_type || tag == gimli::DW_TAG_pointer_type {
                // LLVM gives pointer types no `DW_AT_byte_size`: a thin
                // pointer (`Box<T>`, `&T`, `*const T`, `fn()`; fat ones are
                // structs) is one address wide. Without a name here a
                // `Vec<Box<T>>`'s template parameter `T` would be unnamed.
                let byte_size = byte_size.or_else(|| {
                    (tag == gimli::DW_TAG_pointer_type)
                        .then(|| u64::from(unit.header.address_size()))
                });
                let leaf = if tag == gimli::DW_TAG_pointer_type {
                    Leaf::Pointer
                } else {
                    let encoding = match entry.attr_value(gimli::DW_AT_encoding) {
                        Some(AttributeValue::Encoding(encoding)) => Some(encoding),
                        _ => None,
                    };
                    base_type_leaf(encoding, byte_size, unit.header.address_size())
                };
                match (name, byte_size) {
                    (Some(name), Some(size)) => {
                        let name = shorten_type(&name);
                        if let Some(here) = here {
                            self.names.insert(here, name.clone());
                        }
                        self.sizes.entry(name.clone()).or_insert(size);
                        // Two meanings of one name (C's `char` and Rust's):
                        // the one that may hold an address wins.
                        let known = shapes.named_leaves.entry(name).or_insert(leaf);
                        if leaf != Leaf::Plain {
                            *known = leaf;
                        }
                    }
                    _ => {
                        if let Some(here) = here {
                            shapes.unnamed_leaves.insert(here, leaf);
                        }
                    }
                }
                Scope::Other
            } else if tag == gimli::DW_TAG_reference_type
                || tag == gimli::DW_TAG_rvalue_reference_type
                || tag == gimli::DW_TAG_ptr_to_member_type
            {
                if let Some(here) = here {
                    shapes.unnamed_leaves.insert(here, Leaf::Pointer);
                }
                Scope::Other
            } else if tag == gimli::DW_TAG_typedef
                || tag == gimli::DW_TAG_const_type
                || tag == gimli::DW_TAG_volatile_type
                || tag == gimli::DW_TAG_restrict_type
                || tag == gimli::DW_TAG_atomic_type
            {
                if let Some(here) = here {
                    shapes.aliases.insert(here, type_ref);
                }
                Scope::Other
            } else if tag == gimli::DW_TAG_variant_part || tag == gimli::DW_TAG_variant {
                Scope::Variant
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
            } else if tag == gimli::DW_TAG_subprogram || tag == gimli::DW_TAG_inlined_subroutine {
                let origin = [gimli::DW_AT_abstract_origin, gimli::DW_AT_specification]
                    .into_iter()
                    .find_map(|at| match entry.attr_value(at) {
                        Some(AttributeValue::UnitRef(offset)) => global(offset),
                        Some(AttributeValue::DebugInfoRef(DebugInfoOffset(o))) => Some(o),
                        _ => None,
                    });
                if let Some(here) = here {
                    self.subprograms.insert(here, (name, origin));
                    let mut ranges = dwarf.die_ranges(unit, entry)?;
                    while let Some(range) = ranges.next()? {
                        if range.begin < range.end {
                            self.code.push(CodeRange {
                                begin: range.begin,
                                end: range.end,
                                depth,
                                entry: here,
                                origin,
                            });
                        }
                    }
                    Scope::Function(here)
                } else {
                    Scope::Other
                }
            } else if tag == gimli::DW_TAG_template_type_parameter {
                if let (Some((_, Scope::Function(function))), Some(name)) = (scopes.last(), name) {
                    self.templates
                        .entry(*function)
                        .or_default()
                        .push((name, type_ref));
                }
                Scope::Other
            } else if tag == gimli::DW_TAG_member || tag == gimli::DW_TAG_inheritance {
                // Whether the type can hold a pointer looks at every
                // member, an enum's variants and a C++ class's bases too.
                match scopes
                    .iter()
                    .rev()
                    .find(|(_, s)| !matches!(s, Scope::Variant))
                {
                    Some((_, Scope::Struct(owner))) => {
                        if let Some(members) = shapes.named.get_mut(owner) {
                            members.push(type_ref);
                        }
                    }
                    Some((_, Scope::Anonymous(owner))) => {
                        if let Some(members) = shapes.anonymous.get_mut(owner) {
                            members.push(type_ref);
                        }
                    }
                    _ => {}
                }
                // Field names: only members directly inside a struct, as
                // those inside an enum's variant part belong to one variant.
                if tag == gimli::DW_TAG_member
                    && let (Some((parent_depth, Scope::Struct(owner))), Some(name)) =
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
        Ok(())
    }

    /// The template parameters of a code range's function: its own, or its
    /// abstract origin's (or that one's specification's).
    fn params_of(&self, code: &CodeRange) -> Option<&Vec<(String, Option<usize>)>> {
        let mut entry = Some(code.entry);
        let mut next = code.origin;
        for _ in 0..3 {
            if let Some(params) = entry.and_then(|e| self.templates.get(&e)) {
                return Some(params);
            }
            entry = next;
            next = entry
                .and_then(|e| self.subprograms.get(&e))
                .and_then(|s| s.1);
        }
        None
    }

    /// Fills in the generic parameters that full debug information leaves
    /// in function names (`alloc::boxed::Box<T>::new`) from the template
    /// parameters of the function instance or inlined call at that code
    /// address, so type recovery sees `alloc::boxed::Box<app::Node>::new`.
    /// `frames` are the frames of one return address, innermost first, and
    /// `probe` the address looked up (module offset of the return address
    /// minus one). Line-tables-only names already carry their arguments.
    pub fn resolve_generics(&self, frames: &mut [crate::symbolize::Frame], probe: u64) {
        if self.code.is_empty() {
            return;
        }
        // Every instance with parameters whose code holds the address,
        // innermost (deepest) first.
        let end = self.code.partition_point(|c| c.begin <= probe);
        let mut holding: Vec<&CodeRange> =
            self.code[..end].iter().filter(|c| probe < c.end).collect();
        holding.sort_by_key(|c| std::cmp::Reverse(c.depth));
        let mut used = vec![false; holding.len()];
        for frame in frames.iter_mut() {
            let Some(function) = frame.function.as_deref() else {
                continue;
            };
            let last = function.rsplit("::").next().unwrap_or(function);
            let last = last.split('<').next().unwrap_or(last);
            let found = holding.iter().enumerate().find(|(i, c)| {
                !used[*i]
                    && self
                        .name_of(c)
                        .is_some_and(|n| n.split('<').next() == Some(last))
            });
            let Some((i, code)) = found else {
                continue;
            };
            used[i] = true;
            let Some(params) = self.params_of(code) else {
                continue;
            };
            let substitutions: Vec<(&str, String)> = params
                .iter()
                .filter_map(|(name, ty)| Some((name.as_str(), self.type_name(*ty)?)))
                .collect();
            if !substitutions.is_empty() {
                frame.function = Some(substitute(function, &substitutions));
            }
        }
    }

    /// [`resolve_generics`](Self::resolve_generics) for every return
    /// address of a symbolized stack that lies in `module` (the binary this
    /// index was read from, as the frames name it).
    pub fn resolve_stack(&self, frames: &mut [crate::symbolize::Frame], module: &str) {
        let mut start = 0;
        while start < frames.len() {
            let pc = frames[start].pc;
            let end = start + frames[start..].iter().take_while(|f| f.pc == pc).count();
            let run = &mut frames[start..end];
            if run[0].module.as_deref() == Some(module)
                && let Some(offset) = run[0].module_offset
            {
                // Return addresses: the call is at the byte before.
                self.resolve_generics(run, offset.wrapping_sub(1));
            }
            start = end;
        }
    }

    fn name_of(&self, code: &CodeRange) -> Option<&str> {
        let mut entry = Some(code.entry);
        for _ in 0..3 {
            let (name, next) = self.subprograms.get(&entry?)?;
            if let Some(name) = name {
                return Some(name);
            }
            entry = *next;
        }
        None
    }

    /// Whether the binary had no struct layouts (no `debug = 2`).
    pub fn is_empty(&self) -> bool {
        self.structs.is_empty()
    }

    /// Number of struct and union layouts indexed.
    pub fn len(&self) -> usize {
        self.structs.len()
    }

    /// Whether the type with shortened name `ty` (`app::Pixel`,
    /// `Option<u32>`) can hold no pointer, by its DWARF: every member,
    /// recursively through structs, unions, enum variants and arrays, is
    /// a float, `bool`, `char`, a C enumeration or an integer narrower
    /// than an address. `false` for a type this binary does not describe.
    /// [`TypeName::holds_no_pointer_by`] applies it to a recovered type.
    pub fn is_pointer_free(&self, ty: &str) -> bool {
        self.pointer_free.contains(ty)
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

    /// The Rust name of type entry `entry`: its (shortened) path, or
    /// `[T; N]` for an array.
    fn type_name(&self, entry: Option<usize>) -> Option<String> {
        let entry = entry?;
        if let Some(name) = self.names.get(&entry) {
            return Some(name.clone());
        }
        let &(element, count) = self.arrays.get(&entry)?;
        Some(format!("[{}; {}]", self.type_name(element)?, count?))
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
            TypeKind::Box | TypeKind::CxxNode => self.field_at(argument, offset),
            TypeKind::RcInner => self.field_at(&format!("RcInner<{argument}>"), offset),
            TypeKind::ArcInner => self.field_at(&format!("ArcInner<{argument}>"), offset),
            TypeKind::VecBuffer
            | TypeKind::VecDequeBuffer
            | TypeKind::CxxVectorBuffer
            | TypeKind::CxxArray => {
                let size = self.size_of(argument).filter(|&s| s > 0)?;
                let mut label = format!("[{}]", offset / size);
                if let Some(field) = self.field_at(argument, offset % size) {
                    label.push('.');
                    label.push_str(&field);
                }
                Some(label)
            }
            // A `make_shared` block's layout is the library's internal
            // type, which DWARF names differently in each library.
            TypeKind::StringBuffer
            | TypeKind::HashTable
            | TypeKind::BTreeNode
            | TypeKind::CxxStringBuffer
            | TypeKind::CxxSharedBlock => None,
        }
    }
}

/// What a base type is (`DW_TAG_base_type` of `encoding`, `byte_size` bytes, on a machine
/// with `address_size`-byte addresses): an integer as wide as an address
/// may hold one; floats, `bool`, `char` and narrower integers cannot.
fn base_type_leaf(
    encoding: Option<gimli::DwAte>,
    byte_size: Option<u64>,
    address_size: u8,
) -> Leaf {
    let narrow = byte_size.is_some_and(|size| size < u64::from(address_size));
    match encoding {
        Some(
            gimli::DW_ATE_float
            | gimli::DW_ATE_complex_float
            | gimli::DW_ATE_boolean
            | gimli::DW_ATE_UTF
            | gimli::DW_ATE_signed_char
            | gimli::DW_ATE_unsigned_char,
        ) => Leaf::Plain,
        Some(gimli::DW_ATE_address) => Leaf::Pointer,
        // Integers (and encodings this does not know) by their width.
        _ if narrow => Leaf::Plain,
        _ => Leaf::AddressWideInteger,
    }
}

/// The names of the types in `shapes` that can hold no pointer, judged
/// member by member (`names` and `arrays` resolve the members' type
/// entries). A member whose type is unknown, a pointer or an address-wide
/// integer makes its type hold a pointer; so does a type defined twice
/// differently, or one nested deeper than 64 levels.
fn pointer_free_names(
    shapes: &PointerShapes,
    names: &HashMap<usize, String>,
    arrays: &HashMap<usize, (Option<usize>, Option<u64>)>,
) -> HashSet<String> {
    /// Memoized judgement of named types: `None` while being judged (a
    /// type cannot contain itself by value: a cycle holds a pointer).
    struct Judge<'a> {
        shapes: &'a PointerShapes,
        names: &'a HashMap<usize, String>,
        arrays: &'a HashMap<usize, (Option<usize>, Option<u64>)>,
        by_name: HashMap<&'a str, Option<bool>>,
    }
    impl<'a> Judge<'a> {
        fn entry_is_free(&mut self, entry: Option<usize>, depth: u32) -> bool {
            let Some(entry) = entry else {
                return false;
            };
            if depth > 64 {
                return false;
            }
            if let Some(&(element, _)) = self.arrays.get(&entry) {
                return self.entry_is_free(element, depth + 1);
            }
            if let Some(&target) = self.shapes.aliases.get(&entry) {
                return self.entry_is_free(target, depth + 1);
            }
            if let Some(&leaf) = self.shapes.unnamed_leaves.get(&entry) {
                return leaf == Leaf::Plain;
            }
            if let Some(members) = self.shapes.anonymous.get(&entry) {
                return members.iter().all(|&m| self.entry_is_free(m, depth + 1));
            }
            match self.names.get(&entry) {
                Some(name) => self.name_is_free(name, depth + 1),
                None => false,
            }
        }

        fn name_is_free(&mut self, name: &'a str, depth: u32) -> bool {
            if let Some(&leaf) = self.shapes.named_leaves.get(name) {
                return leaf == Leaf::Plain && !self.shapes.ambiguous.contains(name);
            }
            match self.by_name.get(name) {
                Some(Some(known)) => return *known,
                Some(None) => return false,
                None => {}
            }
            let Some(members) = self.shapes.named.get(name) else {
                return false;
            };
            if self.shapes.ambiguous.contains(name) || depth > 64 {
                return false;
            }
            self.by_name.insert(name, None);
            let free = members.iter().all(|&m| self.entry_is_free(m, depth + 1));
            self.by_name.insert(name, Some(free));
            free
        }
    }
    let mut judge = Judge {
        shapes,
        names,
        arrays,
        by_name: HashMap::new(),
    };
    let mut free: HashSet<String> = shapes
        .named
        .keys()
        .filter(|name| judge.name_is_free(name, 0))
        .cloned()
        .collect();
    free.extend(
        shapes
            .named_leaves
            .iter()
            .filter(|(name, leaf)| **leaf == Leaf::Plain && !shapes.ambiguous.contains(*name))
            .map(|(name, _)| name.clone()),
    );
    free
}

/// Replaces the generic parameters named in `substitutions` (`T`, `A`)
/// inside the angle brackets of `function` by their types.
fn substitute(function: &str, substitutions: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(function.len() + 32);
    let mut depth = 0usize;
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String, depth: usize| {
        let previous = out.chars().last();
        let replacement = (depth > 0 && previous != Some(':'))
            .then(|| substitutions.iter().find(|(n, _)| *n == token.as_str()))
            .flatten();
        match replacement {
            Some((_, ty)) => out.push_str(ty),
            None => out.push_str(token),
        }
        token.clear();
    };
    for c in function.chars() {
        if c.is_alphanumeric() || c == '_' {
            token.push(c);
            continue;
        }
        flush(&mut token, &mut out, depth);
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        out.push(c);
    }
    flush(&mut token, &mut out, depth);
    out
}

/// Types whose insides are the standard library's business.
fn is_library_type(name: &str) -> bool {
    [
        "alloc::",
        "core::",
        "std::",
        "hashbrown::",
        "Vec<",
        "Box<",
        "String",
        "Option<",
        "Rc<",
        "Arc<",
        "RefCell<",
        "Cell<",
        "HashMap<",
        "HashSet<",
        "VecDeque<",
        "BTreeMap<",
        "RcInner<",
        "ArcInner<",
        "rc::Weak<",
        "sync::Weak<",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        || name.starts_with('*')
        || name.starts_with('&')
}
