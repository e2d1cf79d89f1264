//! Type recovery: what type an allocation holds, read from the generic
//! arguments of the constructor frames on its allocation stack.
//!
//! Rust monomorphizes `Box::<T>::new`, `RawVec::<T>::with_capacity_in`,
//! `Rc::<T>::new`, `hashbrown::RawTable::<T>::reserve`… for every `T`, and
//! debug info names each instance with its generic arguments, so the
//! innermost such frame on an allocation stack says what was allocated.
//! Two naming styles occur on the same stack and both are handled:
//!
//! - full paths (`<alloc::vec::Vec<u8>>::with_capacity`,
//!   `<alloc::boxed::Box<app::Node>>::new`), as full debug info and the
//!   precompiled standard library give them;
//! - short names with the generic arguments only (`new<app::Node>` in
//!   `…/library/alloc/src/boxed.rs`), as `debug = "line-tables-only"` names
//!   inlined functions; the source file says whose function it is.
//!
//! C++ instantiates its allocator templates the same way, and a demangled
//! C++ name always spells its template arguments out: the allocator's
//! `std::__new_allocator<T>::allocate` (GCC 12 and later; before that
//! `__gnu_cxx::new_allocator<T>`, and `std::allocator<T>` in libc++) says
//! what each block holds, and the containers around it (`std::vector<T>`,
//! `std::basic_string<C>`, `std::make_shared<T>`) say whose buffer it is.
//! Node-based containers allocate one node each
//! (`std::_Rb_tree_node<std::pair<int const, double>>`), named as it is.
//!
//! An allocation no constructor frame explains is named after its
//! allocation site, `alloc@function:line`, so every allocation has a name
//! (a C++ `new Node` is one: a new-expression leaves no template on the
//! stack).
//!
//! ```
//! use heapdump_analyze::symbolize::Frame;
//! use heapdump_analyze::types::{TypeName, recover_type};
//!
//! let frame = |function: &str, file: &str| Frame {
//!     pc: 0x1000,
//!     function: Some(function.to_owned()),
//!     file: Some(file.to_owned()),
//!     line: Some(1),
//!     inlined: true,
//!     module: None,
//!     module_offset: None,
//! };
//! let stack = [
//!     frame("__rust_alloc", "/src/main.rs"),
//!     frame("new<app::Node>", "/rustc/abc/library/alloc/src/boxed.rs"),
//!     frame("app::build", "/src/main.rs"),
//! ];
//! assert_eq!(recover_type(&stack), Some(TypeName::boxed("app::Node")));
//! assert_eq!(recover_type(&stack).unwrap().to_string(), "app::Node");
//! ```

use std::fmt;

use serde::Serialize;

use crate::site::{OwnCode, SOURCE_TREE, Site, site_index, strip_generics, trim_allocator_frames};
use crate::symbolize::Frame;

/// What kind of constructor made an allocation, which says how its type
/// name relates to the generic argument of that constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeKind {
    /// `Box<T>`: the allocation is one `T`.
    Box,
    /// The buffer of a `Vec<T>` (or `RawVec<T>`): `[T]`.
    VecBuffer,
    /// The buffer of a `String`: `[u8]`.
    StringBuffer,
    /// The buffer of a `VecDeque<T>`: `[T]` used as a ring.
    VecDequeBuffer,
    /// The allocation of an `Rc<T>`: `RcInner<T>` (counts, then `T`).
    RcInner,
    /// The allocation of an `Arc<T>`: `ArcInner<T>`.
    ArcInner,
    /// A hashbrown table (`HashMap<K, V>`, `HashSet<T>`): buckets of `T`
    /// (`(K, V)` for a map) followed by control bytes.
    HashTable,
    /// A node of a `BTreeMap<K, V>` or `BTreeSet<K>`.
    BTreeNode,
    /// The buffer of a C++ `std::vector<T>`: `T[]`.
    CxxVectorBuffer,
    /// The buffer of a C++ `std::basic_string<C>` (`std::string` for
    /// `char`).
    CxxStringBuffer,
    /// The block of a C++ `std::make_shared<T>` (or `allocate_shared`):
    /// the shared pointer's counts, then `T`.
    CxxSharedBlock,
    /// One C++ object from an allocator: a node of a `std::map`,
    /// `std::set`, `std::list` or `std::unordered_map`, named by its type.
    CxxNode,
    /// An array of `T` from `std::allocator<T>` outside the containers
    /// above (a `std::deque`'s chunks, a hash table's buckets).
    CxxArray,
}

/// A recovered type: the constructor kind and the type argument it names,
/// with standard-library paths shortened (`Vec<u8>`, not
/// `alloc::vec::Vec<u8, alloc::alloc::Global>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TypeName {
    /// The constructor kind.
    pub kind: TypeKind,
    /// The generic argument: `T` of `Box<T>`, the element of a vector, the
    /// bucket type of a hash table, the key and value of a B-tree node.
    /// Empty for a `String` buffer.
    pub argument: String,
}

impl TypeName {
    /// A `Box<argument>`.
    pub fn boxed(argument: &str) -> TypeName {
        TypeName::new(TypeKind::Box, argument)
    }

    /// A type of `kind` whose argument is `argument` (shortened here).
    pub fn new(kind: TypeKind, argument: &str) -> TypeName {
        TypeName {
            kind,
            argument: shorten_type(argument),
        }
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.argument;
        match self.kind {
            TypeKind::Box => write!(f, "{a}"),
            TypeKind::VecBuffer => write!(f, "Vec<{a}> buffer"),
            TypeKind::StringBuffer => write!(f, "String buffer"),
            TypeKind::VecDequeBuffer => write!(f, "VecDeque<{a}> buffer"),
            TypeKind::RcInner => write!(f, "RcInner<{a}>"),
            TypeKind::ArcInner => write!(f, "ArcInner<{a}>"),
            TypeKind::HashTable => write!(f, "hash table of {a}"),
            TypeKind::BTreeNode => write!(f, "BTree node of {a}"),
            TypeKind::CxxVectorBuffer => write!(f, "std::vector<{a}> buffer"),
            TypeKind::CxxStringBuffer if a == "char" => write!(f, "std::string buffer"),
            TypeKind::CxxStringBuffer => write!(f, "std::basic_string<{a}> buffer"),
            TypeKind::CxxSharedBlock => write!(f, "std::shared_ptr<{a}> block"),
            TypeKind::CxxNode => write!(f, "{a}"),
            TypeKind::CxxArray => write!(f, "{a}[]"),
        }
    }
}

impl TypeName {
    /// Whether a block of this type can hold no pointer, by its name: a
    /// `String` or C++ string buffer, or a block of plain data (numbers,
    /// `bool`, `char`, and arrays and tuples of them: `Vec<u8>` and
    /// `Vec<(u32, f64)>` buffers, `Box<[u8; 4096]>`, `RcInner<[u64; 4]>`, a
    /// hash table of `(u64, u32)`). Any word a conservative scan finds in
    /// such a block is data or a stale word in spare capacity, never a
    /// reference. Types of the program (`app::Pixel`) are not judged: their
    /// fields may hold pointers: [`holds_no_pointer_by`](Self::holds_no_pointer_by)
    /// judges them with the program's DWARF.
    pub fn holds_no_pointer(&self) -> bool {
        self.holds_no_pointer_by(&|_| false)
    }

    /// [`holds_no_pointer`](Self::holds_no_pointer), where a type the names
    /// alone cannot judge (the program's `app::Pixel`, an `Option<u32>`,
    /// as an argument, an array's element or a tuple's member) holds no
    /// pointer when `pointer_free` says so
    /// ([`FieldIndex::is_pointer_free`](crate::fields::FieldIndex::is_pointer_free):
    /// its DWARF says no member, recursively, is a pointer or an
    /// address-wide integer). An `Rc`'s or `Arc`'s counts are the library's
    /// numbers, never addresses: the value alone is judged.
    pub fn holds_no_pointer_by(&self, pointer_free: &dyn Fn(&str) -> bool) -> bool {
        match self.kind {
            TypeKind::StringBuffer | TypeKind::CxxStringBuffer => true,
            TypeKind::Box
            | TypeKind::VecBuffer
            | TypeKind::VecDequeBuffer
            | TypeKind::RcInner
            | TypeKind::ArcInner
            | TypeKind::HashTable
            | TypeKind::CxxVectorBuffer
            | TypeKind::CxxArray => is_plain_data(&self.argument, pointer_free),
            // A B-tree node has edges to its children; a shared_ptr block
            // and a C++ node have the library's pointers.
            TypeKind::BTreeNode | TypeKind::CxxSharedBlock | TypeKind::CxxNode => false,
        }
    }
}

/// Whether a type expression is plain data: a Rust or C numeric type
/// narrower than a pointer, a float, `bool`, `char`, `str`, or an array,
/// slice or tuple of plain data. Pointer-wide integers (`usize`, `u64`, C's
/// `long`, ...) are not: programs keep addresses in them (handles,
/// `uintptr_t`), and memcheck follows those words. Any other type is plain
/// data when `pointer_free` says so.
fn is_plain_data(ty: &str, pointer_free: &dyn Fn(&str) -> bool) -> bool {
    const SCALARS: &[&str] = &[
        "u8",
        "u16",
        "u32",
        "i8",
        "i16",
        "i32",
        "f32",
        "f64",
        "bool",
        "char",
        "str",
        "()", // C and C++ names, as demangled.
        "unsigned char",
        "signed char",
        "short",
        "unsigned short",
        "int",
        "unsigned int",
        "float",
        "double",
        "long double",
    ];
    let ty = ty.trim();
    if SCALARS.contains(&ty) {
        return true;
    }
    if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        // `[T; N]` or `[T]`: the element is what counts.
        let element = match split_top_level(inner, ';').as_slice() {
            [element, _count] => *element,
            [element] => *element,
            _ => return false,
        };
        return is_plain_data(element, pointer_free);
    }
    if let Some(inner) = ty.strip_prefix('(').and_then(|t| t.strip_suffix(')'))
        && split_top_level(inner, ',')
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .all(|t| is_plain_data(t, pointer_free))
    {
        return true;
    }
    // DWARF names a tuple type as the program spells it, so a tuple of
    // the program's types is judged whole too.
    pointer_free(ty)
}

/// `s` split at `sep` outside brackets.
fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '<' | '[' | '(' => depth += 1,
            '>' | ']' | ')' => depth = depth.saturating_sub(1),
            c if c == sep && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The name every allocation gets: its recovered type, or else its
/// allocation site.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AllocationName {
    /// The recovered type, if a constructor frame named it.
    pub recovered: Option<TypeName>,
    /// The allocation site (always known, possibly `<unknown>`).
    pub site: Site,
}

impl AllocationName {
    /// Names the allocation with symbolized stack `frames` (innermost first).
    pub fn of_stack(frames: &[Frame]) -> AllocationName {
        AllocationName::of_stack_in(frames, &SOURCE_TREE)
    }

    /// [`of_stack`](Self::of_stack), with the program's own code chosen
    /// ([`Site::of_stack_in`]).
    pub fn of_stack_in(frames: &[Frame], own: &OwnCode) -> AllocationName {
        AllocationName {
            recovered: recover_type(frames),
            site: Site::of_stack_in(frames, own),
        }
    }

    /// The type name, or `alloc@function:line` when no type was recovered.
    pub fn type_label(&self) -> String {
        match &self.recovered {
            Some(name) => name.to_string(),
            None => format!("alloc@{}", site_label(&self.site)),
        }
    }
}

/// `function:line` (generic arguments stripped), `function` without a line.
pub fn site_label(site: &Site) -> String {
    let function = strip_generics(&site.function);
    match site.line {
        Some(line) => format!("{function}:{line}"),
        None => function,
    }
}

/// Whose code a frame is, for the constructors type recovery knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Box,
    Vec,
    String,
    VecDeque,
    Rc,
    Arc,
    HashTable,
    BTree,
    /// C++'s allocators: the argument is what they allocate.
    CxxAllocator,
    CxxVector,
    CxxString,
    /// `std::make_shared<T>` and the libraries' blocks for it.
    CxxShared,
}

impl Owner {
    fn is_cxx(self) -> bool {
        matches!(
            self,
            Owner::CxxAllocator | Owner::CxxVector | Owner::CxxString | Owner::CxxShared
        )
    }
}

/// Full-path markers: a frame whose name contains one of these (as the self
/// type of a method) is that constructor's.
const PATH_MARKERS: &[(&str, Owner)] = &[
    ("alloc::boxed::Box<", Owner::Box),
    ("alloc::raw_vec::RawVec<", Owner::Vec),
    ("alloc::vec::Vec<", Owner::Vec),
    ("alloc::string::String>", Owner::String),
    ("alloc::string::String as", Owner::String),
    ("alloc::string::String::", Owner::String),
    ("alloc::fmt::format", Owner::String),
    ("alloc::collections::vec_deque::VecDeque<", Owner::VecDeque),
    ("alloc::rc::Rc<", Owner::Rc),
    ("alloc::sync::Arc<", Owner::Arc),
    ("hashbrown::raw::RawTable<", Owner::HashTable),
    ("hashbrown::raw::RawTableInner", Owner::HashTable),
    ("alloc::collections::btree::node::LeafNode<", Owner::BTree),
    (
        "alloc::collections::btree::node::InternalNode<",
        Owner::BTree,
    ),
    ("std::__new_allocator<", Owner::CxxAllocator),
    ("__gnu_cxx::new_allocator<", Owner::CxxAllocator),
    ("std::allocator<", Owner::CxxAllocator),
    ("std::vector<", Owner::CxxVector),
    ("std::_Vector_base<", Owner::CxxVector),
    ("std::__cxx11::basic_string<", Owner::CxxString),
    ("std::basic_string<", Owner::CxxString),
    ("std::make_shared<", Owner::CxxShared),
    ("std::allocate_shared<", Owner::CxxShared),
];

/// The C++ types of one block holding a `std::make_shared<T>`'s counts and
/// `T` (libstdc++'s, libc++'s): `T` is their first argument.
const CXX_SHARED_BLOCKS: &[&str] = &[
    "std::_Sp_counted_ptr_inplace<",
    "std::__shared_ptr_emplace<",
];

/// The node types of the C++ standard libraries' node-based containers,
/// which allocate one node at a time.
const CXX_NODES: &[&str] = &[
    "std::_Rb_tree_node<",
    "std::_List_node<",
    "std::_Fwd_list_node<",
    "std::__detail::_Hash_node<",
    "std::__tree_node<",
    "std::__list_node<",
    "std::__hash_node<",
];

/// Source-file markers for short names (line-tables-only debug info).
const FILE_MARKERS: &[(&str, Owner)] = &[
    ("/library/alloc/src/boxed.rs", Owner::Box),
    ("/library/alloc/src/boxed/", Owner::Box),
    ("/library/alloc/src/raw_vec/", Owner::Vec),
    ("/library/alloc/src/raw_vec.rs", Owner::Vec),
    ("/library/alloc/src/vec/", Owner::Vec),
    ("/library/alloc/src/slice.rs", Owner::Vec),
    ("/library/alloc/src/string.rs", Owner::String),
    ("/library/alloc/src/fmt.rs", Owner::String),
    ("/library/alloc/src/str.rs", Owner::String),
    ("/library/alloc/src/collections/vec_deque/", Owner::VecDeque),
    ("/library/alloc/src/rc.rs", Owner::Rc),
    ("/library/alloc/src/sync.rs", Owner::Arc),
    ("/hashbrown-", Owner::HashTable),
    ("/library/std/src/collections/hash/", Owner::HashTable),
    ("/library/alloc/src/collections/btree/", Owner::BTree),
];

fn owner_of(frame: &Frame) -> Option<(Owner, &str)> {
    let function = frame.function.as_deref()?;
    // Only as the function's own path or self type: the same paths inside
    // generic arguments (`{closure#0}<usize, alloc::vec::Vec<u8>>`) are
    // some other function's business.
    let own = function.strip_prefix('<').unwrap_or(function);
    if let Some(&(_, owner)) = PATH_MARKERS.iter().find(|(m, _)| own.starts_with(m)) {
        return Some((owner, own));
    }
    let file = frame.file.as_deref()?;
    let &(_, owner) = FILE_MARKERS.iter().find(|(m, _)| file.contains(m))?;
    Some((owner, function))
}

/// The type argument a constructor frame names, if it is concrete.
fn frame_argument(owner: Owner, name: &str) -> Option<String> {
    // `<u8 as <[_]>::to_vec_in::ConvertVec>::to_vec`: the self type is the
    // element (slice `to_vec`, behind `String::from(&str)` and `to_owned`).
    if let Some(rest) = name.strip_prefix('<')
        && name.contains("ConvertVec>")
        && let Some((self_type, _)) = rest.split_once(" as ")
    {
        return concrete(self_type.trim()).then(|| self_type.trim().to_owned());
    }
    let args = generic_args(name)?;
    if owner.is_cxx() {
        // A demangled C++ name is an instance: its arguments are types (or
        // values), never parameters. The first is the one that matters
        // (`std::vector<T, Alloc>`, `std::basic_string<C, Traits, Alloc>`).
        return args
            .first()
            .filter(|a| !a.is_empty())
            .map(|a| a.to_string());
    }
    let concrete_args: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !is_allocator(a) && !is_hasher(a))
        .collect();
    // A boxed closure is a real type; elsewhere a closure environment in
    // the arguments is a callback, not what is allocated.
    let concrete = |a: &str| match owner {
        Owner::Box | Owner::Rc | Owner::Arc => concrete(a) || is_closure_path(a),
        _ => concrete(a),
    };
    match owner {
        Owner::String => None,
        // Node constructors take the key and the value: name both.
        Owner::BTree => {
            let kv: Vec<&str> = concrete_args.iter().copied().take(2).collect();
            if kv.is_empty() || !kv.iter().all(|a| concrete(a)) {
                return None;
            }
            Some(if kv.len() == 1 {
                kv[0].to_owned()
            } else {
                format!("({})", kv.join(", "))
            })
        }
        // `reserve<u64, app::Session, RandomState, Global>` in map.rs is
        // (K, V); `reserve<(u64, app::Session), Global, …>` in raw/mod.rs
        // already is the bucket type.
        Owner::HashTable => {
            // Hashing helpers take the key type alone.
            let base = strip_generics(name);
            let base = base.rsplit("::").next().unwrap_or(&base);
            if base.starts_with("make_hash") || base.starts_with("equivalent") {
                return None;
            }
            let first = *concrete_args.first()?;
            if !concrete(first) {
                return None;
            }
            if name.contains("RawTable") || first.starts_with('(') || concrete_args.len() < 2 {
                return Some(first.to_owned());
            }
            // A map method: (K, V), but only with V known (`HashMap<u64,V>`
            // from full debug info is not a table of `u64`).
            let second = concrete_args[1];
            (concrete(second) && !second.contains("core::iter::"))
                .then(|| format!("({first}, {second})"))
        }
        _ => {
            let first = *concrete_args.first()?;
            concrete(first).then(|| first.to_owned())
        }
    }
}

/// The recovered type of an allocation with symbolized stack `frames`
/// (innermost first), or `None` if no constructor frame names it.
///
/// Only the frames between the allocator's and the allocation site are
/// looked at: what the program's own code does above that says nothing
/// about this allocation. The innermost frame with a concrete type argument
/// decides; then an outer `String`/`VecDeque` frame says whose buffer a
/// vector buffer is, and `Rc`/`Arc` frames say a boxed value is their
/// inner block.
pub fn recover_type(frames: &[Frame]) -> Option<TypeName> {
    let trimmed = trim_allocator_frames(frames);
    let start = frames.len() - trimmed.len();
    let end = site_index(frames)
        .filter(|&site| site > start)
        .unwrap_or(frames.len());
    let window = &frames[start..end];

    // The innermost candidate from an inlined frame wins over one from an
    // out-of-line function: identical-code folding merges instances whose
    // types have the same layout, so an out-of-line `RawVec<Vec<u8>>::grow_one`
    // may be serving a `VecDeque<String>`; inlined frames are never merged.
    let mut first: Option<(usize, Owner, String)> = None;
    let mut first_inlined: Option<(usize, Owner, String)> = None;
    for (i, frame) in window.iter().enumerate() {
        let Some((owner, name)) = owner_of(frame) else {
            continue;
        };
        let argument = if owner == Owner::String {
            Some(String::new())
        } else {
            frame_argument(owner, name)
        };
        let Some(argument) = argument else {
            continue;
        };
        if first.is_none() {
            first = Some((i, owner, argument.clone()));
        }
        if frame.inlined {
            first_inlined = Some((i, owner, argument));
            break;
        }
    }
    let (at, owner, argument) = first_inlined.or(first)?;
    let outer = || window[at + 1..].iter().filter_map(owner_of).map(|(o, _)| o);
    let kind = match owner {
        Owner::String => TypeKind::StringBuffer,
        Owner::Vec => match outer().find(|o| matches!(o, Owner::String | Owner::VecDeque)) {
            Some(Owner::String) if argument == "u8" => TypeKind::StringBuffer,
            Some(Owner::VecDeque) => TypeKind::VecDequeBuffer,
            _ => TypeKind::VecBuffer,
        },
        Owner::VecDeque => TypeKind::VecDequeBuffer,
        Owner::Box => {
            // `Rc::new` boxes an `RcInner<T>`; its name already says so.
            if argument.contains("::RcInner<") || argument.contains("::ArcInner<") {
                return Some(TypeName::boxed(&argument));
            }
            TypeKind::Box
        }
        Owner::Rc => TypeKind::RcInner,
        Owner::Arc => TypeKind::ArcInner,
        Owner::HashTable => TypeKind::HashTable,
        Owner::BTree => TypeKind::BTreeNode,
        Owner::CxxAllocator => return Some(cxx_allocated(&argument, outer())),
        Owner::CxxVector => TypeKind::CxxVectorBuffer,
        Owner::CxxString => TypeKind::CxxStringBuffer,
        Owner::CxxShared => TypeKind::CxxSharedBlock,
    };
    Some(TypeName::new(kind, &argument))
}

/// What a C++ allocator's block of `T`s is: a `make_shared` block or a
/// container node by `T` itself, else a vector's or string's buffer by the
/// nearest container frame outside it (`outer`, innermost first), else an
/// array of `T`.
fn cxx_allocated(argument: &str, mut outer: impl Iterator<Item = Owner>) -> TypeName {
    if CXX_SHARED_BLOCKS.iter().any(|b| argument.starts_with(b))
        && let Some(object) = generic_args(argument).and_then(|args| args.first().copied())
    {
        return TypeName::new(TypeKind::CxxSharedBlock, object);
    }
    if CXX_NODES.iter().any(|n| argument.starts_with(n)) {
        return TypeName::new(TypeKind::CxxNode, argument);
    }
    let kind = match outer.find(|o| matches!(o, Owner::CxxVector | Owner::CxxString)) {
        Some(Owner::CxxVector) => TypeKind::CxxVectorBuffer,
        Some(Owner::CxxString) => TypeKind::CxxStringBuffer,
        _ => TypeKind::CxxArray,
    };
    TypeName::new(kind, argument)
}

/// The top-level generic arguments of the first `<…>` list in `name` that
/// follows an identifier: `new<app::Node>` gives `["app::Node"]`,
/// `alloc::vec::Vec<u8, alloc::alloc::Global>::push` gives
/// `["u8", "alloc::alloc::Global"]`. Nested brackets, tuples, arrays and
/// `->` are respected.
fn generic_args(name: &str) -> Option<Vec<&str>> {
    let bytes = name.as_bytes();
    let open = (0..bytes.len()).find(|&i| {
        bytes[i] == b'<'
            && i > 0
            && (bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':')
    })?;
    let mut depth = 0usize;
    let mut args = Vec::new();
    let mut from = open + 1;
    for i in open..bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' if i > 0 && bytes[i - 1] == b'-' => {}
            b'>' | b')' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    args.push(name[from..i].trim());
                    return Some(args);
                }
            }
            b',' if depth == 1 => {
                args.push(name[from..i].trim());
                from = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// `path::{closure_env#N}` with generic arguments, a closure's type.
fn is_closure_path(arg: &str) -> bool {
    arg.contains("::{closure_env#") && !arg.starts_with('{')
}

fn is_allocator(arg: &str) -> bool {
    matches!(
        arg,
        "alloc::alloc::Global" | "std::alloc::System" | "Global" | "System" | "A"
    ) || arg.ends_with("::Global")
        || arg.ends_with("Allocator")
}

fn is_hasher(arg: &str) -> bool {
    arg.ends_with("RandomState") || arg.contains("BuildHasher") || arg.contains("make_hasher")
}

/// Whether a type argument is a real type rather than an unresolved
/// parameter (`T`, `K`) or a closure environment.
fn concrete(arg: &str) -> bool {
    if arg.is_empty() || arg.contains("closure_env") || arg.contains("{impl#") {
        return false;
    }
    let plain = arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !plain {
        return true;
    }
    const PRIMITIVES: &[&str] = &[
        "str", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
        "i64", "i128", "isize", "f32", "f64",
    ];
    // A bare identifier that is not a primitive is a generic parameter:
    // debug info always gives a concrete type its path.
    PRIMITIVES.contains(&arg)
}

/// Shortens standard-library paths and drops default allocator and hasher
/// arguments: `alloc::vec::Vec<alloc::string::String, alloc::alloc::Global>`
/// becomes `Vec<String>`.
pub fn shorten_type(ty: &str) -> String {
    const DROP: &[&str] = &[", alloc::alloc::Global", ", std::hash::random::RandomState"];
    const PATHS: &[(&str, &str)] = &[
        ("alloc::vec::Vec<", "Vec<"),
        ("alloc::string::String", "String"),
        ("alloc::boxed::Box<", "Box<"),
        ("alloc::rc::RcInner<", "RcInner<"),
        ("alloc::rc::Rc<", "Rc<"),
        ("alloc::rc::Weak<", "rc::Weak<"),
        ("alloc::sync::ArcInner<", "ArcInner<"),
        ("alloc::sync::Arc<", "Arc<"),
        ("alloc::sync::Weak<", "sync::Weak<"),
        ("alloc::collections::vec_deque::VecDeque<", "VecDeque<"),
        ("alloc::collections::btree::map::BTreeMap<", "BTreeMap<"),
        ("alloc::collections::btree::node::", ""),
        ("std::collections::hash::map::HashMap<", "HashMap<"),
        ("std::collections::hash::set::HashSet<", "HashSet<"),
        ("core::cell::RefCell<", "RefCell<"),
        ("core::cell::Cell<", "Cell<"),
        ("core::option::Option<", "Option<"),
    ];
    let mut out = ty.to_owned();
    for drop in DROP {
        out = out.replace(drop, "");
    }
    for (long, short) in PATHS {
        out = out.replace(long, short);
    }
    if out.contains("std::") {
        out = shorten_cxx_type(&out);
    }
    out
}

/// The C++ part of [`shorten_type`]: default template arguments dropped
/// (allocators, character traits, comparators, hashers, deleters, the
/// shared pointers' lock policy), libstdc++'s `__cxx11` namespace left out,
/// `std::string` for `basic_string<char>`, and `>>` for the demangler's
/// `> >`: `std::vector<std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >, std::allocator<…> >`
/// becomes `std::vector<std::string>`.
fn shorten_cxx_type(ty: &str) -> String {
    const DEFAULT_ARGUMENTS: &[&str] = &[
        ", std::allocator<",
        ", std::char_traits<",
        ", std::less<",
        ", std::hash<",
        ", std::equal_to<",
        ", std::default_delete<",
    ];
    let mut out = ty
        .replace(", (__gnu_cxx::_Lock_policy)2", "")
        .replace("std::__cxx11::", "std::");
    for argument in DEFAULT_ARGUMENTS {
        while let Some(start) = out.find(argument) {
            // The argument's own brackets close at depth 0.
            let open = start + argument.len() - 1;
            let mut depth = 0usize;
            let end = out[open..].char_indices().find_map(|(i, c)| {
                match c {
                    '<' => depth += 1,
                    '>' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(open + i + 1);
                        }
                    }
                    _ => {}
                }
                None
            });
            let Some(end) = end else { break };
            out.replace_range(start..end, "");
        }
    }
    // The demangler closes a list after a `>` with ` >`, and a dropped last
    // argument leaves its space (`basic_string<char >`).
    out.replace(" >", ">")
        .replace("std::basic_string<char>", "std::string")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STD: &str = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library";
    const HASHBROWN: &str = "/rust/deps/hashbrown-0.16.1/src";

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            pc: 0x1000 + u64::from(line),
            function: Some(function.to_owned()),
            file: Some(file.to_owned()),
            line: Some(line),
            inlined: true,
            module: Some("/bin/app".into()),
            module_offset: Some(u64::from(line)),
        }
    }

    fn alloc_frames() -> Vec<Frame> {
        vec![
            frame("heapdump_capture::record", "/work/capture/src/lib.rs", 176),
            frame("alloc<std::alloc::System>", "/work/capture/src/lib.rs", 203),
            frame("__rust_alloc", "/work/app/src/main.rs", 15),
            frame("alloc", &format!("{STD}/alloc/src/alloc.rs"), 95),
            frame("allocate", &format!("{STD}/alloc/src/alloc.rs"), 429),
        ]
    }

    fn stack(middle: &[(&str, String)]) -> Vec<Frame> {
        let mut frames = alloc_frames();
        frames.extend(middle.iter().map(|(f, file)| frame(f, file, 7)));
        frames.push(frame("app::build", "/work/app/src/main.rs", 30));
        frames.push(frame("app::main", "/work/app/src/main.rs", 40));
        frames
    }

    fn std(path: &str) -> String {
        format!("{STD}/{path}")
    }

    fn label(frames: &[Frame]) -> String {
        AllocationName::of_stack(frames).type_label()
    }

    #[test]
    fn box_new_with_short_names_names_the_boxed_type() {
        let frames = stack(&[
            ("box_new_uninit", std("alloc/src/boxed.rs")),
            ("new<[u8; 4096]>", std("alloc/src/boxed.rs")),
        ]);
        assert_eq!(label(&frames), "[u8; 4096]");
        let frames = stack(&[("new<app::Node>", std("alloc/src/boxed.rs"))]);
        assert_eq!(label(&frames), "app::Node");
    }

    #[test]
    fn box_with_full_paths_names_the_boxed_type_and_skips_parameters() {
        let frames = stack(&[
            ("alloc::boxed::Box<T>::new", std("alloc/src/boxed.rs")),
            (
                "<alloc::boxed::Box<app::Node>>::new",
                std("alloc/src/boxed.rs"),
            ),
        ]);
        assert_eq!(label(&frames), "app::Node");
        let frames = stack(&[(
            "<alloc::boxed::Box<str>>::try_clone_from_ref_in",
            std("alloc/src/boxed.rs"),
        )]);
        assert_eq!(label(&frames), "str");
    }

    #[test]
    fn vec_buffers_name_the_element_and_skip_allocator_arguments() {
        // vec![0u64; n] in a line-tables-only build.
        let frames = stack(&[
            (
                "try_allocate_in<alloc::alloc::Global>",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "with_capacity_in<alloc::alloc::Global>",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "with_capacity_in<u64, alloc::alloc::Global>",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "from_elem<u64, alloc::alloc::Global>",
                std("alloc/src/vec/spec_from_elem.rs"),
            ),
        ]);
        assert_eq!(label(&frames), "Vec<u64> buffer");
        // Growth through an unresolved RawVec<T,A>::grow_one, then push.
        let frames = stack(&[
            (
                "grow_one<alloc::alloc::Global>",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "alloc::raw_vec::RawVec<T,A>::grow_one",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "push_mut<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::alloc::Global>",
                std("alloc/src/vec/mod.rs"),
            ),
        ]);
        assert_eq!(label(&frames), "Vec<Vec<u8>> buffer");
    }

    #[test]
    fn string_buffers_are_recognised_by_string_and_format_frames() {
        let frames = stack(&[
            (
                "<alloc::raw_vec::RawVecInner>::try_allocate_in",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "<alloc::raw_vec::RawVec<u8>>::with_capacity_in",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "<alloc::vec::Vec<u8>>::with_capacity",
                std("alloc/src/vec/mod.rs"),
            ),
            (
                "<alloc::string::String>::with_capacity",
                std("alloc/src/string.rs"),
            ),
            ("alloc::fmt::format::format_inner", std("alloc/src/fmt.rs")),
        ]);
        assert_eq!(label(&frames), "String buffer");
        // `String::from(&str)` goes through the slice's `to_vec`.
        let frames = stack(&[
            (
                "<u8 as <[_]>::to_vec_in::ConvertVec>::to_vec::<alloc::alloc::Global>",
                std("alloc/src/slice.rs"),
            ),
            ("to_owned", std("alloc/src/str.rs")),
        ]);
        assert_eq!(label(&frames), "String buffer");
    }

    #[test]
    fn vecdeque_rc_arc_hash_tables_and_btree_nodes() {
        let frames = stack(&[
            (
                "with_capacity_in<alloc::string::String, alloc::alloc::Global>",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "grow<alloc::string::String, alloc::alloc::Global>",
                std("alloc/src/collections/vec_deque/mod.rs"),
            ),
        ]);
        assert_eq!(label(&frames), "VecDeque<String> buffer");

        let frames = stack(&[
            ("box_new_uninit", std("alloc/src/boxed.rs")),
            (
                "new<alloc::rc::RcInner<core::cell::RefCell<app::Node>>>",
                std("alloc/src/boxed.rs"),
            ),
            (
                "new<core::cell::RefCell<app::Node>>",
                std("alloc/src/rc.rs"),
            ),
        ]);
        assert_eq!(label(&frames), "RcInner<RefCell<app::Node>>");
        let frames = stack(&[("allocate_for_layout<app::Config>", std("alloc/src/sync.rs"))]);
        assert_eq!(label(&frames), "ArcInner<app::Config>");

        let frames = stack(&[
            (
                "do_alloc<alloc::alloc::Global>",
                format!("{HASHBROWN}/raw/alloc.rs"),
            ),
            (
                "new_uninitialized<alloc::alloc::Global>",
                format!("{HASHBROWN}/raw/mod.rs"),
            ),
            (
                "hashbrown::raw::RawTable<T,A>::reserve_rehash",
                format!("{HASHBROWN}/raw/mod.rs"),
            ),
            (
                "reserve<(u64, app::Session), alloc::alloc::Global, hashbrown::map::make_hasher::{closure_env#0}<u64, app::Session, std::hash::random::RandomState>>",
                format!("{HASHBROWN}/raw/mod.rs"),
            ),
            (
                "reserve<u64, app::Session, std::hash::random::RandomState, alloc::alloc::Global>",
                format!("{HASHBROWN}/map.rs"),
            ),
        ]);
        assert_eq!(label(&frames), "hash table of (u64, app::Session)");
        let frames = stack(&[(
            "reserve<u64, app::Session, std::hash::random::RandomState, alloc::alloc::Global>",
            format!("{HASHBROWN}/map.rs"),
        )]);
        assert_eq!(label(&frames), "hash table of (u64, app::Session)");

        let frames = stack(&[(
            "<alloc::boxed::Box<alloc::collections::btree::node::LeafNode<usize, app::Info>>>::try_new_uninit_in",
            std("alloc/src/boxed.rs"),
        )]);
        assert_eq!(label(&frames), "LeafNode<usize, app::Info>");
        let frames = stack(&[(
            "new<u32, alloc::string::String, alloc::alloc::Global>",
            std("alloc/src/collections/btree/node.rs"),
        )]);
        assert_eq!(label(&frames), "BTree node of (u32, String)");
    }

    #[test]
    fn inlined_frames_win_over_folded_out_of_line_instances() {
        // What the demo records for `VecDeque<String>::push_back`: the
        // out-of-line grow_one is the folded `RawVec<Vec<u8>>` instance.
        let mut frames = stack(&[
            (
                "<alloc::raw_vec::RawVecInner>::finish_grow",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "<alloc::raw_vec::RawVec<alloc::vec::Vec<u8>>>::grow_one",
                std("alloc/src/raw_vec/mod.rs"),
            ),
            (
                "alloc::collections::vec_deque::VecDeque<T,A>::grow",
                std("alloc/src/collections/vec_deque/mod.rs"),
            ),
            (
                "push_back<alloc::string::String, alloc::alloc::Global>",
                std("alloc/src/collections/vec_deque/mod.rs"),
            ),
        ]);
        for frame in &mut frames[5..8] {
            frame.inlined = false;
        }
        assert_eq!(label(&frames), "VecDeque<String> buffer");
        // With no inlined candidate, the out-of-line one is still used (a
        // type with the same layout as the real one, at worst).
        frames.remove(8);
        assert_eq!(label(&frames), "VecDeque<Vec<u8>> buffer");
    }

    #[test]
    fn boxed_closures_are_typed_but_closure_arguments_elsewhere_are_not() {
        let frames = stack(&[(
            "new<std::thread::lifecycle::spawn_unchecked::{closure_env#1}<app::main::{closure_env#0}, usize>>",
            std("alloc/src/boxed.rs"),
        )]);
        assert_eq!(
            label(&frames),
            "std::thread::lifecycle::spawn_unchecked::{closure_env#1}<app::main::{closure_env#0}, usize>"
        );
        let frames = stack(&[(
            "extend<app::main::{closure_env#0}>",
            std("alloc/src/vec/mod.rs"),
        )]);
        assert_eq!(label(&frames), "alloc@app::build:30");
    }

    #[test]
    fn hashing_helpers_do_not_name_a_hash_table() {
        let mut frames = stack(&[
            (
                "hashbrown::raw::RawTable<(u64, Box<[u8; 2040]>),alloc::alloc::Global>::reserve_rehash",
                format!("{HASHBROWN}/raw/mod.rs"),
            ),
            (
                "make_hash<u64, std::hash::random::RandomState>",
                format!("{HASHBROWN}/map.rs"),
            ),
        ]);
        frames[5].inlined = false;
        assert_eq!(label(&frames), "hash table of (u64, Box<[u8; 2040]>)");
    }

    #[test]
    fn untyped_allocations_are_named_after_their_site() {
        let frames = stack(&[]);
        assert_eq!(recover_type(&frames), None);
        assert_eq!(label(&frames), "alloc@app::build:30");
        assert_eq!(label(&[]), "alloc@<unknown>");
        // The program's own generic function is not a constructor, and
        // constructor frames outside the window (above the site) are ignored.
        let mut frames = alloc_frames();
        frames.push(frame("make<app::Node>", "/work/app/src/main.rs", 12));
        frames.push(frame("new<app::Other>", &std("alloc/src/boxed.rs"), 3));
        assert_eq!(label(&frames), "alloc@make:12");
    }

    const CXX: &str = "/usr/include/c++/12/bits";

    /// A C++ allocation stack as a `-O1` build records it: the tracker's
    /// `malloc`, `operator new`, then `middle` (inlined into one another
    /// down to the last, which is out of line), then the program's
    /// `function` (`keep()`) and `main`.
    fn cxx_stack(middle: &[(&str, &str)], function: &str) -> Vec<Frame> {
        let mut frames = vec![
            frame("malloc", "/src/capture/src/cmalloc.rs", 189),
            frame("operator new(unsigned long)", "/src/app/app.cpp", 96),
        ];
        frames.extend(
            middle
                .iter()
                .map(|(f, file)| frame(f, &format!("{CXX}/{file}"), 7)),
        );
        frames.push(frame(function, "/src/app/app.cpp", 74));
        frames.push(frame("main", "/src/app/app.cpp", 89));
        for frame in &mut frames {
            frame.inlined = false;
        }
        for frame in &mut frames[2..2 + middle.len().saturating_sub(1)] {
            frame.inlined = true;
        }
        frames
    }

    #[test]
    fn cxx_vector_buffers_name_their_element() {
        // push_back growing a std::vector<int>.
        let frames = cxx_stack(
            &[
                (
                    "std::__new_allocator<int>::allocate(unsigned long, void const*)",
                    "new_allocator.h",
                ),
                (
                    "std::allocator_traits<std::allocator<int> >::allocate(std::allocator<int>&, unsigned long)",
                    "alloc_traits.h",
                ),
                (
                    "std::_Vector_base<int, std::allocator<int> >::_M_allocate(unsigned long)",
                    "stl_vector.h",
                ),
                (
                    "std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)",
                    "vector.tcc",
                ),
            ],
            "keep()",
        );
        let name = AllocationName::of_stack(&frames);
        assert_eq!(name.site.function, "keep()");
        assert_eq!(
            name.recovered,
            Some(TypeName::new(TypeKind::CxxVectorBuffer, "int"))
        );
        assert_eq!(name.type_label(), "std::vector<int> buffer");
        // A vector of strings, with GCC 11's allocator.
        let frames = cxx_stack(
            &[
                (
                    "__gnu_cxx::new_allocator<std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> > >::allocate(unsigned long, void const*)",
                    "new_allocator.h",
                ),
                (
                    "std::vector<std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >, std::allocator<std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> > > >::reserve(unsigned long)",
                    "vector.tcc",
                ),
            ],
            "keep()",
        );
        assert_eq!(label(&frames), "std::vector<std::string> buffer");
    }

    #[test]
    fn cxx_container_nodes_and_make_shared_blocks() {
        let frames = cxx_stack(
            &[
                (
                    "std::__new_allocator<std::_Rb_tree_node<std::pair<int const, double> > >::allocate(unsigned long, void const*)",
                    "new_allocator.h",
                ),
                (
                    "std::_Rb_tree<int, std::pair<int const, double>, std::_Select1st<std::pair<int const, double> >, std::less<int>, std::allocator<std::pair<int const, double> > >::_M_get_node()",
                    "stl_tree.h",
                ),
                (
                    "std::map<int, double, std::less<int>, std::allocator<std::pair<int const, double> > >::operator[](int const&)",
                    "stl_map.h",
                ),
            ],
            "keep()",
        );
        assert_eq!(
            label(&frames),
            "std::_Rb_tree_node<std::pair<int const, double>>"
        );

        let frames = cxx_stack(
            &[
                (
                    "std::__new_allocator<std::_Sp_counted_ptr_inplace<Widget, std::allocator<void>, (__gnu_cxx::_Lock_policy)2> >::allocate(unsigned long, void const*)",
                    "new_allocator.h",
                ),
                (
                    "std::__allocated_ptr<std::allocator<std::_Sp_counted_ptr_inplace<Widget, std::allocator<void>, (__gnu_cxx::_Lock_policy)2> > > std::__allocate_guarded<std::allocator<std::_Sp_counted_ptr_inplace<Widget, std::allocator<void>, (__gnu_cxx::_Lock_policy)2> > >(std::allocator<std::_Sp_counted_ptr_inplace<Widget, std::allocator<void>, (__gnu_cxx::_Lock_policy)2> >&)",
                    "allocated_ptr.h",
                ),
                ("std::make_shared<Widget>", "shared_ptr.h"),
            ],
            "keep()",
        );
        assert_eq!(label(&frames), "std::shared_ptr<Widget> block");
        // Only make_shared's frame named (the allocator's out of sight).
        let frames = cxx_stack(
            &[("std::make_shared<app::Widget>", "shared_ptr.h")],
            "keep()",
        );
        assert_eq!(
            AllocationName::of_stack(&frames).recovered,
            Some(TypeName::new(TypeKind::CxxSharedBlock, "app::Widget"))
        );
    }

    #[test]
    fn cxx_string_buffers_and_other_arrays() {
        // std::string's code is in libstdc++.so, named from its symbols.
        let mut frames = cxx_stack(
            &[(
                "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_construct(unsigned long, char)",
                "basic_string.tcc",
            )],
            "keep()",
        );
        frames[2].file = None;
        frames[2].module = Some("/usr/lib/x86_64-linux-gnu/libstdc++.so.6".into());
        assert_eq!(label(&frames), "std::string buffer");
        let frames = cxx_stack(
            &[(
                "std::basic_string<wchar_t, std::char_traits<wchar_t>, std::allocator<wchar_t> >::reserve(unsigned long)",
                "basic_string.tcc",
            )],
            "keep()",
        );
        assert_eq!(label(&frames), "std::basic_string<wchar_t> buffer");
        // A deque's chunk: an allocator outside the containers known.
        let frames = cxx_stack(
            &[
                (
                    "std::allocator<app::Job>::allocate(unsigned long)",
                    "allocator.h",
                ),
                (
                    "std::_Deque_base<app::Job, std::allocator<app::Job> >::_M_allocate_node()",
                    "stl_deque.h",
                ),
            ],
            "keep()",
        );
        assert_eq!(label(&frames), "app::Job[]");
    }

    #[test]
    fn a_cxx_new_expression_is_named_after_its_site() {
        let frames = cxx_stack(&[], "lose_list()");
        assert_eq!(recover_type(&frames), None);
        assert_eq!(label(&frames), "alloc@lose_list():74");
    }

    #[test]
    fn cxx_default_template_arguments_are_dropped() {
        assert_eq!(
            shorten_type(
                "std::map<int, std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >, std::less<int>, std::allocator<std::pair<int const, std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> > > > >"
            ),
            "std::map<int, std::string>"
        );
        assert_eq!(
            shorten_type(
                "std::vector<std::vector<int, std::allocator<int> >, std::allocator<std::vector<int, std::allocator<int> > > >"
            ),
            "std::vector<std::vector<int>>"
        );
        assert_eq!(
            shorten_type("std::unique_ptr<Node, std::default_delete<Node> >"),
            "std::unique_ptr<Node>"
        );
        // Rust's paths are not touched by it.
        assert_eq!(
            shorten_type(
                "std::collections::hash::map::HashMap<u64, alloc::string::String, std::hash::random::RandomState>"
            ),
            "HashMap<u64, String>"
        );
    }

    #[test]
    fn generic_arguments_respect_nesting() {
        assert_eq!(
            generic_args(
                "with_capacity_in<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::alloc::Global>"
            ),
            Some(vec![
                "alloc::vec::Vec<u8, alloc::alloc::Global>",
                "alloc::alloc::Global"
            ])
        );
        assert_eq!(
            generic_args("call<fn(&str) -> u8, (u8, [u16; 4])>"),
            Some(vec!["fn(&str) -> u8", "(u8, [u16; 4])"])
        );
        assert_eq!(generic_args("box_new_uninit"), None);
        assert_eq!(
            generic_args("<alloc::vec::Vec<u8>>::push"),
            Some(vec!["u8"])
        );
        assert_eq!(generic_args("broken<a, <b"), None);
        assert!(concrete("u8") && concrete("app::Node") && concrete("[u8; 4]"));
        assert!(!concrete("T") && !concrete("K") && !concrete("demo::main::{closure_env#0}"));
    }

    #[test]
    fn byte_string_and_number_blocks_hold_no_pointer_and_others_may() {
        let holds_none = |kind, argument| TypeName::new(kind, argument).holds_no_pointer();
        assert!(holds_none(TypeKind::StringBuffer, ""));
        assert!(holds_none(TypeKind::CxxStringBuffer, "char"));
        assert!(holds_none(TypeKind::VecBuffer, "u8"));
        assert!(holds_none(TypeKind::VecBuffer, "(u32, f64)"));
        assert!(holds_none(TypeKind::Box, "[u8; 4096]"));
        assert!(holds_none(TypeKind::Box, "[[u16; 2]]"));
        assert!(holds_none(TypeKind::RcInner, "[u32; 4]"));
        assert!(holds_none(TypeKind::HashTable, "(i32, u32)"));
        assert!(holds_none(TypeKind::CxxVectorBuffer, "unsigned int"));
        assert!(holds_none(TypeKind::CxxArray, "double"));
        // Pointer-wide integers may hold addresses (handles, uintptr_t).
        assert!(!holds_none(TypeKind::VecBuffer, "usize"));
        assert!(!holds_none(TypeKind::RcInner, "[u64; 4]"));
        assert!(!holds_none(TypeKind::HashTable, "(u64, u32)"));
        assert!(!holds_none(TypeKind::CxxVectorBuffer, "unsigned long"));
        // Anything that may hold a pointer keeps its edges.
        assert!(!holds_none(TypeKind::VecBuffer, "String"));
        assert!(!holds_none(TypeKind::VecBuffer, "(u32, Box<u8>)"));
        assert!(!holds_none(TypeKind::VecBuffer, "&str"));
        assert!(!holds_none(TypeKind::VecBuffer, "*const u8"));
        assert!(!holds_none(TypeKind::Box, "app::Pixel"));
        assert!(!holds_none(TypeKind::Box, "[app::Node; 2]"));
        assert!(!holds_none(TypeKind::BTreeNode, "u64, u64"));
        assert!(!holds_none(TypeKind::CxxSharedBlock, "int"));
    }

    #[test]
    fn the_programs_own_types_hold_no_pointer_when_dwarf_says_so() {
        // As `FieldIndex::is_pointer_free` would answer for a program
        // whose `app::Pixel` is numbers only.
        let dwarf = |ty: &str| ty == "app::Pixel" || ty == "(app::Pixel, app::Pixel)";
        let holds_none = |kind, argument| TypeName::new(kind, argument).holds_no_pointer_by(&dwarf);
        assert!(holds_none(TypeKind::Box, "app::Pixel"));
        assert!(holds_none(TypeKind::VecBuffer, "app::Pixel"));
        assert!(holds_none(TypeKind::VecBuffer, "[app::Pixel; 4]"));
        assert!(holds_none(TypeKind::VecBuffer, "(u32, app::Pixel)"));
        assert!(holds_none(TypeKind::HashTable, "(app::Pixel, app::Pixel)"));
        // Counts are the library's: an Rc's value alone is judged.
        assert!(holds_none(TypeKind::RcInner, "app::Pixel"));
        assert!(!holds_none(TypeKind::Box, "app::Node"));
        assert!(!holds_none(TypeKind::VecBuffer, "(usize, app::Pixel)"));
        // Nodes and shared blocks have the library's pointers.
        assert!(!holds_none(TypeKind::BTreeNode, "app::Pixel"));
        assert!(!holds_none(TypeKind::CxxSharedBlock, "app::Pixel"));
    }
}
