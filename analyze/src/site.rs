//! The allocation site of a symbolized stack: the innermost frame that is
//! the program's own code, after the allocator's and the tracker's frames
//! are trimmed. Library code is Rust's std, core, alloc and hashbrown, C++'s
//! standard library (`std::`, `__gnu_cxx::`, its headers' inlined frames)
//! and any frame in the C or C++ runtime libraries (`libc.so.6`,
//! `libstdc++.so.6`, …), so a `std::vector<T>::push_back` or a `strdup`
//! is passed over for the function that called it.
//!
//! ```
//! use heapdump_analyze::site::{is_allocator_function, is_library_function};
//! assert!(is_allocator_function("__rust_alloc"));
//! assert!(is_library_function("alloc::raw_vec::RawVec<T,A>::allocate_in"));
//! assert!(!is_library_function("<blocks::Block as core::clone::Clone>::clone"));
//! ```

use serde::Serialize;

use crate::symbolize::Frame;

/// Function-path prefixes of the allocator and the tracker: frames that are
/// how memory was allocated, not why.
const ALLOCATOR_PREFIXES: &[&str] = &[
    "heapdump_capture::",
    "<heapdump_capture::",
    "heapdump_preload::",
    "__rust_alloc",
    "__rust_realloc",
    "__rust_alloc_zeroed",
    "__rdl_",
    "__rg_",
    "alloc::alloc::",
    "std::alloc::",
    "<std::alloc::",
    "<alloc::alloc::Global",
];

/// The C allocation functions the tracker defines (and C++'s allocation
/// operators, which call them, as demangled with their parameters): whole
/// names, since `malloc_trim` or `freeze` are not allocators.
const C_ALLOCATOR_FUNCTIONS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "operator new(unsigned long)",
    "operator new[](unsigned long)",
    "operator new(unsigned long, std::align_val_t)",
    "operator new[](unsigned long, std::align_val_t)",
    "operator new(unsigned long, std::nothrow_t const&)",
    "operator new[](unsigned long, std::nothrow_t const&)",
    "operator new(unsigned long, std::align_val_t, std::nothrow_t const&)",
    "operator new[](unsigned long, std::align_val_t, std::nothrow_t const&)",
];

/// Paths of the standard libraries: Rust's crates and its allocation-heavy
/// internals, and C++'s namespaces (`std::` is both languages'; GCC's
/// extensions and older allocators are in `__gnu_cxx::`).
const LIBRARY_CRATES: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "hashbrown::",
    "__gnu_cxx::",
    "__cxxabiv1::",
];

/// File names of the C and C++ runtime libraries, up to the version:
/// every function in them is library code, named or not (a stripped
/// `libstdc++.so.6` names only its exported functions).
const RUNTIME_LIBRARIES: &[&str] = &[
    "libc.so.",
    "libstdc++.so.",
    "libc++.so.",
    "libc++abi.so.",
    "libgcc_s.so.",
];

/// Whether `function` belongs to the allocator or the tracker.
pub fn is_allocator_function(function: &str) -> bool {
    // Recent compilers name the allocator shims `__rustc::__rust_alloc`.
    let function = function.strip_prefix("__rustc::").unwrap_or(function);
    ALLOCATOR_PREFIXES.iter().any(|p| function.starts_with(p))
        || C_ALLOCATOR_FUNCTIONS.contains(&function)
}

/// File-name prefix of the preload library `heapdump run` puts into a
/// program: every frame in it is the tracker's, whatever its name (the
/// library is built without debug info, so its inner functions may be
/// unnamed or named only by the capture crate's mangled paths).
const PRELOAD_LIBRARY: &str = "libheapdump_preload";

/// Whether `frame` is the allocator's or the tracker's: by its function,
/// or by its module being the preload library.
pub fn is_allocator_frame(frame: &Frame) -> bool {
    frame.function.as_deref().is_some_and(is_allocator_function)
        || frame.module.as_deref().is_some_and(|module| {
            module
                .rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with(PRELOAD_LIBRARY))
        })
}

/// Whether `function` is standard-library code (std, core, alloc,
/// hashbrown; C++'s std and __gnu_cxx), including trait impls whose type and trait are both the
/// library's (`<alloc::vec::Vec<T> as core::clone::Clone>::clone`,
/// `<[T]>::to_vec`). An impl of a library trait for the program's type is
/// the program's code.
pub fn is_library_function(function: &str) -> bool {
    if LIBRARY_CRATES.iter().any(|c| function.starts_with(c)) {
        return true;
    }
    let Some(qualified) = function.strip_prefix('<') else {
        return false;
    };
    let Some((self_type, trait_path)) = split_qualified(qualified) else {
        return false;
    };
    is_library_type(self_type) && trait_path.is_none_or(is_library_type)
}

/// Splits `T as Trait>::rest` (after the opening `<`) into `T` and the
/// trait, or `T>::rest` into `T` and `None`, respecting nested brackets.
fn split_qualified(s: &str) -> Option<(&str, Option<&str>)> {
    let mut depth = 0usize;
    let mut as_at = None;
    for (i, c) in s.char_indices() {
        match c {
            '<' | '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            '>' if depth == 0 => {
                let self_type = &s[..as_at.unwrap_or(i)];
                let trait_path = as_at.map(|a| &s[a + 4..i]);
                return Some((self_type.trim(), trait_path.map(str::trim)));
            }
            '>' => depth -= 1,
            ' ' if depth == 0 && as_at.is_none() && s[i..].starts_with(" as ") => {
                as_at = Some(i);
            }
            _ => {}
        }
    }
    None
}

/// A type path that is the standard library's or a primitive: slices,
/// arrays, references, pointers, tuples, `str` and the numeric types.
fn is_library_type(ty: &str) -> bool {
    let ty = ty
        .trim_start_matches('&')
        .trim_start_matches("mut ")
        .trim_start_matches("*const ")
        .trim_start_matches("*mut ")
        .trim_start_matches("dyn ");
    if ty.starts_with('[') || ty.starts_with('(') {
        return true;
    }
    const PRIMITIVES: &[&str] = &[
        "str", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32",
        "i64", "i128", "isize", "f32", "f64",
    ];
    if PRIMITIVES.contains(&ty) {
        return true;
    }
    LIBRARY_CRATES.iter().any(|c| ty.starts_with(c))
}

/// Whether `file` is standard-library source (`/rustc/<hash>/library/std/…`
/// and friends, or hashbrown), or a C++ standard library header
/// (`/usr/include/c++/12/bits/stl_vector.h`, libc++'s `…/include/c++/v1/`).
/// With `debug = "line-tables-only"`, inlined functions have short names
/// without their path (`with_capacity<u8>`), and a C++ function inlined
/// from a header may be named without its class, so their file is what
/// says they are the library's.
pub fn is_library_file(file: &str) -> bool {
    [
        "/library/std/src/",
        "/library/core/src/",
        "/library/alloc/src/",
        "/include/c++/",
    ]
    .iter()
    .any(|dir| file.contains(dir))
        || file.contains("/hashbrown-")
}

/// Whether `module` (a path) is one of the C or C++ runtime libraries.
pub fn is_runtime_library(module: &str) -> bool {
    let name = module.rsplit('/').next().unwrap_or(module);
    RUNTIME_LIBRARIES.iter().any(|lib| {
        name.strip_prefix(lib).is_some_and(|version| {
            !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        })
    })
}

/// Whether `frame` is where Rust's runtime hands over to the program (the
/// short-backtrace marker std puts below `main` and below every spawned
/// thread's closure): it and everything outside it are the same for every
/// allocation, so reports stop there.
pub fn is_runtime_entry(frame: &Frame) -> bool {
    frame
        .function
        .as_deref()
        .is_some_and(|f| f.contains("__rust_begin_short_backtrace"))
}

/// Whether a frame is library code, by its function, its file or its module.
pub fn is_library_frame(frame: &Frame) -> bool {
    frame.function.as_deref().is_some_and(is_library_function)
        || frame.file.as_deref().is_some_and(is_library_file)
        || frame.module.as_deref().is_some_and(is_runtime_library)
}

/// The frames left after trimming allocator and tracker code: everything up
/// to and including the outermost allocator frame.
///
/// Per frame rather than per run, because in optimized builds the
/// `__rust_alloc` shim and the tracker are inlined into the program's own
/// function, and their inner frames may carry short names
/// (`alloc<std::alloc::System>`) that say nothing about whose they are.
pub fn trim_allocator_frames(frames: &[Frame]) -> &[Frame] {
    let cut = frames
        .iter()
        .rposition(is_allocator_frame)
        .map_or(0, |i| i + 1);
    &frames[cut..]
}

/// Index in `frames` of the allocation site: the innermost frame after the
/// allocator's that is neither library code nor unknown; if there is none,
/// the innermost frame after the allocator's. `None` for no frames.
pub fn site_index(frames: &[Frame]) -> Option<usize> {
    let trimmed = trim_allocator_frames(frames);
    let offset = frames.len() - trimmed.len();
    let own = trimmed
        .iter()
        .position(|f| f.function.is_some() && !is_library_frame(f));
    match own {
        // The C `main` that std's runtime runs in, without a source file:
        // a block std allocated while setting up before the program's
        // `main` (thread info, arguments). Its innermost `std::rt::` frame
        // says so (`std::rt::init  …/library/std/src/rt.rs:NN`).
        Some(i) if is_runtime_main(&trimmed[i]) => trimmed[..i]
            .iter()
            .position(|f| {
                f.function
                    .as_deref()
                    .is_some_and(|f| f.starts_with("std::rt::"))
            })
            .or(Some(i))
            .map(|r| offset + r),
        Some(i) => Some(offset + i),
        None if trimmed.is_empty() => frames.len().checked_sub(1),
        None => Some(offset),
    }
}

/// Whether `frame` is the C `main` that Rust's runtime is started from
/// (generated by the compiler, so without a source file).
fn is_runtime_main(frame: &Frame) -> bool {
    frame.function.as_deref() == Some("main") && frame.file.is_none()
}

/// Directories of source that is not the program's own: crates from a
/// cargo registry or git checkout (wherever `CARGO_HOME` is), the Rust
/// toolchain's library, and the system's headers and sources.
const DEPENDENCY_DIRS: &[&str] = &[
    "/registry/src/",
    "/git/checkouts/",
    "/rustc/",
    "/usr/include/",
    "/usr/src/",
    "/usr/lib/",
];

/// Which code is the program's own: by default the crates of the main
/// binary's source tree (a frame with a source file outside a cargo
/// registry, a git checkout, the toolchain and the system directories),
/// or the crates a user names (for a program installed with `cargo
/// install`, whose own sources are in the registry too, or to look at one
/// crate of a workspace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnCode {
    /// Crate names with `_` for `-`; empty: the source-tree rule.
    crates: Vec<String>,
}

/// The source-tree rule, for sources of frames that have no choice of crates.
pub static SOURCE_TREE: OwnCode = OwnCode { crates: Vec::new() };

impl OwnCode {
    /// The program's own code is these crates (`jaq`, `jaq-json` or
    /// `jaq_json`); an empty list is the source-tree rule.
    pub fn crates<S: AsRef<str>>(names: &[S]) -> OwnCode {
        OwnCode {
            crates: names
                .iter()
                .map(|n| n.as_ref().trim().replace('-', "_"))
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// Whether `frame` is the program's own code: named, neither the
    /// allocator's nor library code, and in a chosen crate (by its
    /// function's path, or for a name without a path, as line-tables-only
    /// debug info names inlined functions, by its file's crate directory)
    /// or, without a choice, with a source file outside the dependencies.
    pub fn is_own(&self, frame: &Frame) -> bool {
        let Some(function) = frame.function.as_deref() else {
            return false;
        };
        if is_allocator_frame(frame) || is_library_frame(frame) {
            return false;
        }
        if self.crates.is_empty() {
            return frame
                .file
                .as_deref()
                .is_some_and(|file| !DEPENDENCY_DIRS.iter().any(|dir| file.contains(dir)));
        }
        let chosen = |krate: &str| self.crates.iter().any(|c| c == krate);
        let crates = function_crates(function);
        if !crates.is_empty() {
            return crates.into_iter().any(chosen);
        }
        frame
            .file
            .as_deref()
            .and_then(file_crate)
            .is_some_and(|krate| chosen(&krate))
    }
}

/// The crates a function path belongs to: the first segment of a plain
/// path (`jaq_json::read::parse`), or of the type and the trait of a
/// qualified one (`<jaq_json::Val as core::cmp::Ord>::cmp`: an impl is in
/// the crate of one of them). Empty for a name without a path.
fn function_crates(function: &str) -> Vec<&str> {
    fn first_segment(path: &str) -> Option<&str> {
        let path = path
            .trim_start_matches('&')
            .trim_start_matches("mut ")
            .trim_start_matches("dyn ");
        path.split_once("::")
            .map(|(krate, _)| krate)
            .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    }
    match function.strip_prefix('<').and_then(split_qualified) {
        Some((self_type, trait_path)) => [Some(self_type), trait_path]
            .into_iter()
            .flatten()
            .filter_map(first_segment)
            .collect(),
        None => first_segment(function).into_iter().collect(),
    }
}

/// The crate of a source file, from the directory that holds its `src/`:
/// `…/jaq-json-1.1.0/src/read.rs` (a registry's, with its version) and
/// `…/jaq-json/src/read.rs` (a workspace's) are both `jaq_json`.
fn file_crate(file: &str) -> Option<String> {
    let (dir, _) = file.rsplit_once("/src/")?;
    let name = dir.rsplit('/').next()?;
    // A registry directory ends in `-MAJOR.MINOR.PATCH[-pre]`.
    let name = match name.rsplit_once('-') {
        Some((base, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => base,
        _ => name,
    };
    let name = match name.rsplit_once('-') {
        Some((base, version))
            if version.starts_with(|c: char| c.is_ascii_digit()) && version.contains('.') =>
        {
            base
        }
        _ => name,
    };
    (!name.is_empty()).then(|| name.replace('-', "_"))
}

/// Index in `frames` of the innermost frame in the program's own code at
/// or outside the site `site` (up to the runtime's entry), when the site
/// itself is not: the program's call into the dependency that allocated.
/// `None` when the site is the program's own or no frame is.
pub fn own_frame_index(frames: &[Frame], site: usize, own: &OwnCode) -> Option<usize> {
    let frame = frames.get(site)?;
    if own.is_own(frame) {
        return None;
    }
    frames[site + 1..]
        .iter()
        .take_while(|f| !is_runtime_entry(f))
        .position(|f| own.is_own(f))
        .map(|i| site + 1 + i)
}

/// `name` without generic arguments: `{closure#0}<usize, Vec<u8>>` becomes
/// `{closure#0}`, `do_call::<F, i32>` becomes `do_call`, and
/// `<alloc::vec::Vec<T> as core::clone::Clone>::clone` becomes
/// `<alloc::vec::Vec as core::clone::Clone>::clone` (the brackets of a
/// qualified path are kept, the generic arguments inside it are not).
pub fn strip_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // Depth of the generic-argument list being dropped; 0 when keeping.
    let mut skip = 0usize;
    let mut prev = None::<char>;
    for c in name.chars() {
        let arrow = c == '>' && prev == Some('-');
        prev = Some(c);
        if skip > 0 {
            match c {
                '<' => skip += 1,
                '>' if !arrow => skip -= 1,
                _ => {}
            }
            continue;
        }
        if c == '<' {
            let last = out.chars().last();
            let generic_args =
                last.is_some_and(|l| l.is_alphanumeric() || l == '_' || l == '}' || l == ':');
            if generic_args {
                // A turbofish (`f::<T>`) goes with its `::`.
                if out.ends_with("::") {
                    out.truncate(out.len() - 2);
                }
                skip = 1;
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The longest type label the text tables and graph labels show whole;
/// longer ones are abbreviated ([`abbreviate_type`]). JSON keeps them in
/// full.
pub const LABEL_WIDTH: usize = 100;

/// How the text tables, DOT labels and HPROF class names print long type
/// and function names. JSON always has them in full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Names {
    /// Types and functions longer than [`LABEL_WIDTH`] characters
    /// abbreviated ([`abbreviate_type`]), and the functions a site was
    /// inlined into or called from without their generic arguments: what
    /// the commands print by default.
    #[default]
    Abbreviated,
    /// Every name in full (`--full-names`).
    Full,
}

impl Names {
    /// [`Names::Full`] when `full`, as `--full-names` asks.
    pub fn full(full: bool) -> Names {
        if full {
            Names::Full
        } else {
            Names::Abbreviated
        }
    }

    /// A type or function name as a row or label shows it.
    pub fn name(self, name: &str) -> String {
        match self {
            Names::Abbreviated => abbreviate_type(name, LABEL_WIDTH),
            Names::Full => name.to_owned(),
        }
    }

    /// A function named beside a site (inlined into, called from), which
    /// matters less than the site's own.
    pub fn caller(self, name: &str) -> String {
        match self {
            Names::Abbreviated => strip_generics(name),
            Names::Full => name.to_owned(),
        }
    }
}

/// `name` in at most `max` characters where its generic arguments allow:
/// paths inside generic arguments first keep only their last segment
/// (`FlatMap<core::iter::adapters::map::Map<I, F>, …>` becomes
/// `FlatMap<Map<I, F>, …>`), then arguments are elided from the deepest
/// level up (`FlatMap<Map<…>, …>`, then `FlatMap<…>`). The outer path and
/// the kind of buffer stay, so rows still say what they are.
pub fn abbreviate_type(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_owned();
    }
    let short = last_segments_in_generics(name);
    let mut depth = generic_depth(&short);
    let mut out = short;
    while out.chars().count() > max && depth > 0 {
        depth -= 1;
        out = elide_generics_below(&out, depth);
    }
    out
}

/// Generic brackets in `name`: `(is '<', is '>')` for `c` after `prev`;
/// the `>` of a `->` is no bracket.
fn bracket(c: char, prev: Option<char>) -> (bool, bool) {
    (c == '<', c == '>' && prev != Some('-'))
}

/// Paths inside generic arguments cut to their last segment.
fn last_segments_in_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let (mut depth, mut token_start, mut prev) = (0usize, 0usize, None);
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        let (open, close) = bracket(c, prev);
        if c == ':' && chars.peek() == Some(&':') && depth > 0 {
            chars.next();
            out.truncate(token_start);
            prev = Some(':');
            continue;
        }
        out.push(c);
        if open {
            depth += 1;
        } else if close {
            depth = depth.saturating_sub(1);
        }
        if !(c.is_alphanumeric() || c == '_' || c == '{' || c == '}' || c == '#') {
            token_start = out.len();
        }
        prev = Some(c);
    }
    out
}

/// How deep generic brackets nest in `name`.
fn generic_depth(name: &str) -> usize {
    let (mut depth, mut deepest, mut prev) = (0usize, 0usize, None);
    for c in name.chars() {
        let (open, close) = bracket(c, prev);
        if open {
            depth += 1;
            deepest = deepest.max(depth);
        } else if close {
            depth = depth.saturating_sub(1);
        }
        prev = Some(c);
    }
    deepest
}

/// `name` with the contents of generic brackets deeper than `keep` levels
/// replaced by `…`.
fn elide_generics_below(name: &str, keep: usize) -> String {
    let mut out = String::with_capacity(name.len());
    let (mut depth, mut prev) = (0usize, None);
    for c in name.chars() {
        let (open, close) = bracket(c, prev);
        prev = Some(c);
        if open {
            depth += 1;
            if depth == keep + 1 {
                out.push_str("<…");
            }
            if depth > keep {
                continue;
            }
        } else if close {
            depth = depth.saturating_sub(1);
            if depth == keep {
                out.push('>');
                continue;
            }
        }
        if depth <= keep {
            out.push(c);
        }
    }
    out
}

/// The index `N` of a closure name without a path, `{closure#N}` (generic
/// arguments allowed after it), as line-tables-only debug info names
/// inlined closures. `Some("")` for the legacy `{{closure}}`; `None` for
/// anything else.
fn bare_closure_index(function: &str) -> Option<&str> {
    let head = function.split('<').next().unwrap_or(function);
    if head == "{{closure}}" {
        return Some("");
    }
    let n = head.strip_prefix("{closure#")?.strip_suffix('}')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(n)
}

/// The program's (not the library's) path `P` of a `P::{closure_env#N}`
/// that appears in `name`, usually in its generic arguments:
/// `demo::load_thumbnails` in
/// `{closure#0}<usize, …, demo::load_thumbnails::{closure_env#0}, …>`.
fn closure_env_path<'a>(name: &'a str, n: &str) -> Option<&'a str> {
    let needle = format!("::{{closure_env#{n}}}");
    let mut from = 0;
    while let Some(found) = name[from..].find(&needle) {
        let end = from + found;
        from = end + needle.len();
        // Walk back over the path: identifiers, `::` and `{…}` segments.
        let bytes = name.as_bytes();
        let mut start = end;
        let mut braces = 0usize;
        while start > 0 {
            let b = bytes[start - 1];
            match b {
                b'}' => braces += 1,
                b'{' if braces > 0 => braces -= 1,
                _ if braces > 0 => {}
                b'_' | b':' => {}
                _ if b.is_ascii_alphanumeric() => {}
                _ => break,
            }
            start -= 1;
        }
        let path = &name[start..end];
        if !path.is_empty() && !path.starts_with(':') && !is_library_function(path) {
            return Some(path);
        }
    }
    None
}

/// When the frame at `index` is a closure named without its path
/// (`{closure#0}`, as line-tables-only debug info names inlined closures),
/// its name qualified with the function that defines it:
/// `demo::load_thumbnails::{closure#0}`. The defining function is found in
/// the generic arguments of the outer frames (the closure's environment
/// type `demo::load_thumbnails::{closure_env#0}` is passed to the library
/// code that calls it), or else is the nearest outer frame that is the
/// program's code. `None` when the frame is not a bare closure or no outer
/// frame says whose it is.
pub fn qualify_closure(frames: &[Frame], index: usize) -> Option<String> {
    let function = frames.get(index)?.function.as_deref()?;
    let n = bare_closure_index(function)?;
    let closure = if n.is_empty() {
        "{{closure}}".to_owned()
    } else {
        format!("{{closure#{n}}}")
    };
    for outer in &frames[index + 1..] {
        let Some(name) = outer.function.as_deref() else {
            continue;
        };
        if !n.is_empty()
            && let Some(path) = closure_env_path(name, n)
        {
            return Some(format!("{path}::{closure}"));
        }
        if !is_library_frame(outer) && bare_closure_index(name).is_none() {
            return Some(format!("{}::{closure}", strip_generics(name)));
        }
    }
    None
}

/// Where an allocation was made.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Site {
    /// The function (or `module+0xoffset`, or `<unknown>` for an unknown stack).
    pub function: String,
    /// Its source file, as DWARF records it.
    pub file: Option<String>,
    /// Its line.
    pub line: Option<u32>,
    /// When the site's function was inlined, the function it was inlined into.
    pub inlined_into: Option<String>,
    /// When the site is outside the program's own code (in a dependency
    /// such as `indexmap`), the innermost frame that is the program's own:
    /// the call that made the dependency allocate. Sites that differ only
    /// here are different sites.
    pub own_frame: Option<OwnFrame>,
}

/// The program's own frame of a site in a dependency.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct OwnFrame {
    /// Its function (a bare closure qualified as for the site).
    pub function: String,
    /// Its source file.
    pub file: Option<String>,
    /// Its line.
    pub line: Option<u32>,
}

impl OwnFrame {
    /// `function  file:line`, the function as `names` names a caller
    /// (without generic arguments unless in full).
    pub fn text(&self, names: Names) -> String {
        let mut s = names.caller(&self.function);
        push_location(&mut s, self.file.as_deref(), self.line);
        s
    }
}

/// `  file:line` (or `  file`; nothing without a file).
fn push_location(s: &mut String, file: Option<&str>, line: Option<u32>) {
    if let Some(file) = file {
        s.push_str("  ");
        s.push_str(file);
        if let Some(line) = line {
            s.push_str(&format!(":{line}"));
        }
    }
}

impl Site {
    /// The site of an allocation whose stack is unknown (stack id 0, or a
    /// stack the tracker could not record).
    pub fn unknown() -> Site {
        Site {
            function: "<unknown>".to_owned(),
            file: None,
            line: None,
            inlined_into: None,
            own_frame: None,
        }
    }

    /// The allocation site of a symbolized stack (innermost first), with
    /// the program's own code found by the source-tree rule.
    pub fn of_stack(frames: &[Frame]) -> Site {
        Site::of_stack_in(frames, &SOURCE_TREE)
    }

    /// The allocation site of a symbolized stack (innermost first), and
    /// when it lies outside `own`, the program's frame that led there.
    pub fn of_stack_in(frames: &[Frame], own: &OwnCode) -> Site {
        let Some(index) = site_index(frames) else {
            return Site::unknown();
        };
        let own_frame = own_frame_index(frames, index, own).map(|i| OwnFrame {
            function: qualify_closure(frames, i).unwrap_or_else(|| frames[i].name()),
            file: frames[i].file.clone(),
            line: frames[i].line,
        });
        let frame = &frames[index];
        let inlined_into = if frame.inlined {
            frames.get(index + 1).map(Frame::name)
        } else {
            None
        };
        let function = qualify_closure(frames, index).unwrap_or_else(|| frame.name());
        Site {
            function,
            file: frame.file.clone(),
            line: frame.line,
            inlined_into,
            own_frame,
        }
    }

    /// The site as one line: `function  file:line`, and for a site in a
    /// dependency `  (from own_function  file:line)`, named as `names`
    /// says.
    pub fn text(&self, names: Names) -> String {
        self.line_of_text(names, false)
    }

    /// [`text`](Self::text) with `  (inlined into function)` after the
    /// line of an inlined site, as `top --by site` shows its rows.
    pub fn text_with_inlining(&self, names: Names) -> String {
        self.line_of_text(names, true)
    }

    fn line_of_text(&self, names: Names, inlining: bool) -> String {
        let mut s = names.name(&self.function);
        push_location(&mut s, self.file.as_deref(), self.line);
        if inlining && let Some(into) = &self.inlined_into {
            s.push_str(&format!("  (inlined into {})", names.caller(into)));
        }
        if let Some(own) = &self.own_frame {
            s.push_str(&format!("  (from {})", own.text(names)));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: Option<&str>, line: u32, inlined: bool) -> Frame {
        Frame {
            pc: 0x1000 + u64::from(line),
            function: function.map(str::to_owned),
            file: Some("/src/x.rs".into()),
            line: Some(line),
            inlined,
            module: Some("/bin/app".into()),
            module_offset: Some(u64::from(line)),
        }
    }

    #[test]
    fn the_runtime_entry_frame_is_recognized() {
        let entry = frame(
            Some("std::sys::backtrace::__rust_begin_short_backtrace::<fn(), ()>"),
            166,
            false,
        );
        assert!(is_runtime_entry(&entry));
        assert!(!is_runtime_entry(&frame(Some("app::main"), 3, false)));
        assert!(!is_runtime_entry(&frame(None, 0, false)));
    }

    #[test]
    fn allocator_and_library_frames_are_skipped_to_the_programs_frame() {
        let frames = [
            frame(Some("heapdump_capture::stack::walk"), 1, true),
            frame(
                Some("<heapdump_capture::Tracker<A> as core::alloc::global::GlobalAlloc>::alloc"),
                2,
                false,
            ),
            frame(Some("__rust_alloc"), 3, false),
            frame(Some("alloc::alloc::alloc"), 4, true),
            frame(Some("alloc::raw_vec::RawVec<T,A>::allocate_in"), 5, true),
            frame(
                Some("<alloc::vec::Vec<T> as core::clone::Clone>::clone"),
                6,
                true,
            ),
            frame(Some("blocks::make_blocks"), 21, true),
            frame(Some("blocks::main"), 40, false),
        ];
        assert_eq!(trim_allocator_frames(&frames).len(), 4);
        assert_eq!(site_index(&frames), Some(6));
        assert_eq!(
            Site::of_stack(&frames),
            Site {
                function: "blocks::make_blocks".into(),
                file: Some("/src/x.rs".into()),
                line: Some(21),
                inlined_into: Some("blocks::main".into()),
                own_frame: None,
            }
        );
    }

    #[test]
    fn short_inlined_library_names_are_classified_by_file() {
        let mut frames = vec![
            // One physical frame: the tracker, with a short-named inlined helper.
            frame(Some("record<std::alloc::System>"), 1, true),
            frame(
                Some("<heapdump_capture::Tracker<A> as core::alloc::global::GlobalAlloc>::alloc"),
                2,
                false,
            ),
            frame(Some("__rust_alloc"), 3, false),
            // Line-tables-only: inlined library code has short names.
            frame(Some("with_capacity<u8>"), 4, true),
            frame(Some("make_block<u8>"), 5, true),
            frame(Some("blocks::main"), 6, false),
        ];
        frames[3].file = Some(
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/vec/mod.rs".into(),
        );
        assert_eq!(trim_allocator_frames(&frames).len(), 3);
        assert_eq!(site_index(&frames), Some(4));
        assert_eq!(
            Site::of_stack(&frames).inlined_into.as_deref(),
            Some("blocks::main")
        );
    }

    #[test]
    fn a_user_function_with_inlined_allocator_code_is_not_trimmed() {
        let frames = [
            frame(Some("__rust_alloc"), 1, false),
            frame(Some("alloc::alloc::alloc"), 2, true),
            frame(Some("app::arena::grow"), 3, false),
        ];
        assert_eq!(trim_allocator_frames(&frames).len(), 1);
        assert_eq!(site_index(&frames), Some(2));
    }

    #[test]
    fn shim_and_tracker_inlined_into_the_programs_function_are_trimmed() {
        // What a release build of examples/blocks records: one physical
        // frame holding the tracker, the shim, Box::new and make_blocks.
        let mut frames = vec![
            frame(Some("heapdump_capture::record"), 174, false),
            frame(Some("alloc<std::alloc::System>"), 201, true),
            frame(Some("__rust_alloc"), 15, true),
            frame(Some("alloc"), 95, true),
            frame(Some("new<[u8; 4096]>"), 286, true),
            frame(Some("blocks::make_blocks"), 20, false),
            frame(Some("blocks::main"), 38, false),
        ];
        let std_file = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src";
        frames[3].file = Some(format!("{std_file}/alloc.rs"));
        frames[4].file = Some(format!("{std_file}/boxed.rs"));
        assert_eq!(trim_allocator_frames(&frames).len(), 4);
        assert_eq!(site_index(&frames), Some(5));
    }

    #[test]
    fn unknown_frames_inside_the_allocator_run_are_trimmed_but_not_chosen() {
        let frames = [
            frame(None, 1, false),
            frame(Some("__rdl_alloc"), 2, false),
            frame(None, 3, false),
            frame(
                Some("std::collections::hash::map::HashMap<K,V>::insert"),
                4,
                true,
            ),
            frame(Some("server::handle"), 5, false),
        ];
        assert_eq!(site_index(&frames), Some(4));
    }

    #[test]
    fn all_library_stack_uses_innermost_frame_after_allocator() {
        let frames = [
            frame(Some("__rust_alloc"), 1, false),
            frame(Some("std::rt::lang_start_internal"), 2, false),
            frame(Some("std::rt::lang_start"), 3, false),
        ];
        assert_eq!(site_index(&frames), Some(1));
        let only_allocator = [frame(Some("__rust_alloc"), 1, false)];
        assert_eq!(site_index(&only_allocator), Some(0));
        assert_eq!(site_index(&[]), None);
        assert_eq!(Site::of_stack(&[]), Site::unknown());
    }

    #[test]
    fn cxx_allocator_and_container_frames_are_skipped_to_the_programs_frame() {
        let cxx = "/usr/include/c++/12/bits";
        let mut frames = vec![
            frame(Some("malloc"), 1, false),
            frame(Some("operator new(unsigned long)"), 2, false),
            located(
                "std::__new_allocator<int>::allocate(unsigned long, void const*)",
                &format!("{cxx}/new_allocator.h"),
                137,
                true,
            ),
            // An inlined function GCC named without its class.
            located("_M_allocate", &format!("{cxx}/stl_vector.h"), 378, true),
            located(
                "std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)",
                &format!("{cxx}/vector.tcc"),
                453,
                false,
            ),
            located(
                "__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >::base() const",
                &format!("{cxx}/stl_iterator.h"),
                1,
                true,
            ),
            frame(Some("keep_registry()"), 74, false),
            frame(Some("main"), 89, false),
        ];
        assert_eq!(trim_allocator_frames(&frames).len(), 6);
        assert_eq!(site_index(&frames), Some(6));
        assert_eq!(Site::of_stack(&frames).function, "keep_registry()");
        // `new[]` inlined into the program's function is trimmed alone.
        frames.drain(2..6);
        frames[1].function = Some("operator new[](unsigned long)".into());
        frames[1].inlined = true;
        assert_eq!(Site::of_stack(&frames).function, "keep_registry()");
    }

    #[test]
    fn frames_in_the_c_and_cxx_runtime_libraries_are_library_code() {
        let in_module = |function: &str, module: &str| Frame {
            file: None,
            line: None,
            module: Some(module.to_owned()),
            ..frame(Some(function), 0, false)
        };
        let frames = [
            frame(Some("malloc"), 1, false),
            in_module("strdup", "/lib/x86_64-linux-gnu/libc.so.6"),
            frame(Some("keep_table"), 3, false),
        ];
        assert_eq!(Site::of_stack(&frames).function, "keep_table");
        assert!(is_runtime_library(
            "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
        ));
        assert!(is_runtime_library("/usr/lib/llvm-16/lib/libc++.so.1"));
        assert!(!is_runtime_library("/usr/lib/libcrypto.so.3"));
        assert!(!is_runtime_library("/opt/app/libc.so.helper"));
        assert!(is_library_function(
            "__gnu_cxx::new_allocator<Node>::allocate(unsigned long, void const*)"
        ));
        assert!(is_library_file("/usr/lib/llvm-16/include/c++/v1/vector"));
        assert!(is_allocator_function(
            "operator new[](unsigned long, std::align_val_t, std::nothrow_t const&)"
        ));
    }

    /// `IndexMap<String, usize>` filled in the program's `index_words`:
    /// indexmap's code (in the registry) allocates.
    fn index_words_stack() -> Vec<Frame> {
        let registry = "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        vec![
            frame(Some("__rust_realloc"), 1, false),
            located(
                "alloc::raw_vec::finish_grow",
                &format!("{STD}/alloc/src/raw_vec/mod.rs"),
                2,
                false,
            ),
            located(
                "indexmap::map::core::reserve_entries",
                &format!("{registry}/indexmap-2.14.2/src/map/core.rs"),
                215,
                true,
            ),
            located(
                "indexmap::map::core::IndexMapCore<K,V>::push_entry",
                &format!("{registry}/indexmap-2.14.2/src/map/core.rs"),
                300,
                false,
            ),
            located(
                "words::index_words",
                "/home/u/words/src/index.rs",
                12,
                false,
            ),
            located("words::main", "/home/u/words/src/main.rs", 4, false),
        ]
    }

    #[test]
    fn a_site_in_a_dependency_names_the_programs_innermost_frame() {
        let frames = index_words_stack();
        let site = Site::of_stack(&frames);
        assert_eq!(site.function, "indexmap::map::core::reserve_entries");
        assert_eq!(
            site.own_frame,
            Some(OwnFrame {
                function: "words::index_words".into(),
                file: Some("/home/u/words/src/index.rs".into()),
                line: Some(12),
            })
        );
        assert!(
            site.text(Names::Abbreviated)
                .ends_with("core.rs:215  (from words::index_words  /home/u/words/src/index.rs:12)"),
            "{}",
            site.text(Names::Abbreviated)
        );
        // A site in the program's own code names nothing more.
        let own = Site::of_stack(&frames[4..]);
        assert_eq!(own.function, "words::index_words");
        assert_eq!(own.own_frame, None);
    }

    #[test]
    fn chosen_crates_are_the_programs_own_code() {
        let frames = index_words_stack();
        // Choosing indexmap makes its frame the program's: nothing more to name.
        let indexmap = OwnCode::crates(&["indexmap"]);
        assert_eq!(Site::of_stack_in(&frames, &indexmap).own_frame, None);
        // A crate of a workspace: words's frames, by function path.
        let words = OwnCode::crates(&["words"]);
        assert_eq!(
            Site::of_stack_in(&frames, &words)
                .own_frame
                .map(|f| f.function),
            Some("words::index_words".into())
        );
        // A crate nothing on the stack belongs to: no frame is named.
        let other = OwnCode::crates(&["jaq-json"]);
        assert_eq!(Site::of_stack_in(&frames, &other).own_frame, None);
        // A name without a path (an inlined function with line-tables-only
        // debug info) goes by its file's crate directory, registry or not.
        let inlined = |file: &str| Frame {
            file: Some(file.into()),
            ..frame(Some("parse<u8>"), 143, true)
        };
        let jaq_json = OwnCode::crates(&["jaq-json"]);
        assert!(jaq_json.is_own(&inlined(
            "/r/registry/src/index.crates.io-1/jaq-json-1.1.0/src/read.rs"
        )));
        assert!(jaq_json.is_own(&inlined("/home/u/jaq/jaq-json/src/read.rs")));
        assert!(!jaq_json.is_own(&inlined("/home/u/jaq/jaq-core/src/read.rs")));
        // Trait impls belong to the crate of their type or their trait.
        let val = frame(Some("<jaq_json::Val as core::cmp::Ord>::cmp"), 1, false);
        assert!(jaq_json.is_own(&val));
        assert!(!OwnCode::crates(&["core"]).is_own(&frame(Some("core::f"), 1, false)));
    }

    #[test]
    fn blocks_std_allocates_before_main_are_sited_in_its_runtime() {
        let rt = format!("{STD}/std/src/rt.rs");
        let mut frames = vec![
            frame(Some("__rust_alloc"), 1, false),
            located(
                "std::sys::pal::unix::stack_overflow::thread_info::set_current_info",
                &format!("{STD}/std/src/sys/pal/unix/stack_overflow/thread_info.rs"),
                2,
                false,
            ),
            located("std::rt::init", &rt, 98, true),
            located("std::rt::lang_start_internal", &rt, 170, false),
            Frame {
                file: None,
                line: None,
                ..frame(Some("main"), 0, false)
            },
        ];
        let site = Site::of_stack(&frames);
        assert_eq!(site.function, "std::rt::init");
        assert_eq!(site.line, Some(98));
        // A C program's own `main`, with its file, stays the site.
        frames[4].file = Some("/src/prog.c".into());
        assert_eq!(Site::of_stack(&frames).function, "main");
    }

    #[test]
    fn frames_in_the_preload_library_are_the_trackers_whatever_their_name() {
        let preload = |function: Option<&str>| Frame {
            file: None,
            line: None,
            module: Some("/opt/heapdump/lib/libheapdump_preload.so".into()),
            ..frame(function, 0, false)
        };
        let frames = [
            preload(None),
            preload(Some("heapdump_capture::c_alloc::record")),
            preload(Some("calloc")),
            frame(Some("keep_table"), 3, false),
        ];
        assert_eq!(trim_allocator_frames(&frames).len(), 1);
        assert_eq!(Site::of_stack(&frames).function, "keep_table");
        assert!(is_allocator_frame(&preload(Some("helper"))));
        assert!(is_allocator_function("heapdump_preload::init"));
    }

    #[test]
    fn qualified_paths_are_library_only_when_type_and_trait_are() {
        assert!(is_library_function("<[T]>::to_vec"));
        assert!(is_library_function(
            "<str as alloc::string::ToString>::to_string"
        ));
        assert!(is_library_function(
            "<alloc::vec::Vec<T,A> as core::iter::traits::collect::Extend<&T>>::extend"
        ));
        assert!(!is_library_function(
            "<app::Node as core::clone::Clone>::clone"
        ));
        assert!(!is_library_function(
            "<alloc::vec::Vec<u8> as app::Encode>::encode"
        ));
        assert!(!is_library_function(
            "<&mut app::Writer as std::io::Write>::write"
        ));
        assert!(!is_library_function("app::std::helper"));
        assert!(is_library_function(
            "hashbrown::raw::RawTable<T,A>::reserve_rehash"
        ));
        assert!(!is_allocator_function("app::alloc::pool"));
        assert!(is_allocator_function("__rustc::__rust_alloc"));
        assert!(is_allocator_function("malloc"));
        assert!(is_allocator_function("operator new(unsigned long)"));
        assert!(!is_allocator_function("malloc_trim"));
        assert!(is_allocator_function(
            "<alloc::alloc::Global as core::alloc::Allocator>::allocate"
        ));
        assert!(is_allocator_function(
            "<std::alloc::System as core::alloc::global::GlobalAlloc>::alloc"
        ));
    }

    const STD: &str = "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library";

    fn located(function: &str, file: &str, line: u32, inlined: bool) -> Frame {
        Frame {
            file: Some(file.to_owned()),
            ..frame(Some(function), line, inlined)
        }
    }

    /// The stack of `vec![i as u8; 256 * 1024]` in the closure of
    /// `demo::load_thumbnails`, as a release build with
    /// `debug = "line-tables-only"` records it (allocator frames trimmed
    /// to the first ones, callers of `demo::main` left out).
    fn load_thumbnails_stack() -> Vec<Frame> {
        let demo = "/work/main/examples/src/bin/demo.rs";
        vec![
            located(
                "heapdump_capture::record",
                "/work/main/capture/src/lib.rs",
                174,
                false,
            ),
            located(
                "alloc<std::alloc::System>",
                "/work/main/capture/src/lib.rs",
                201,
                true,
            ),
            located("__rust_alloc", demo, 15, true),
            located("alloc", &format!("{STD}/alloc/src/alloc.rs"), 95, true),
            located(
                "from_elem<u8>",
                &format!("{STD}/alloc/src/vec/mod.rs"),
                3651,
                true,
            ),
            located("{closure#0}", demo, 24, true),
            located(
                "{closure#0}<usize, alloc::vec::Vec<u8, alloc::alloc::Global>, (), demo::load_thumbnails::{closure_env#0}, core::iter::traits::iterator::Iterator::for_each::call::{closure_env#0}<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::vec::{impl#21}::extend_trusted::{closure_env#0}<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::alloc::Global, core::iter::adapters::map::Map<core::ops::range::Range<usize>, demo::load_thumbnails::{closure_env#0}>>>>",
                &format!("{STD}/core/src/iter/adapters/map.rs"),
                88,
                true,
            ),
            located(
                "<core::iter::adapters::map::Map<I,F> as core::iter::traits::iterator::Iterator>::fold",
                &format!("{STD}/core/src/iter/adapters/map.rs"),
                128,
                false,
            ),
            located(
                "<alloc::vec::Vec<T> as alloc::vec::spec_from_iter_nested::SpecFromIterNested<T,I>>::from_iter",
                &format!("{STD}/alloc/src/vec/spec_from_iter_nested.rs"),
                60,
                false,
            ),
            located("demo::main", demo, 61, false),
        ]
    }

    #[test]
    fn bare_closures_are_qualified_by_the_closure_env_in_outer_generic_arguments() {
        let frames = load_thumbnails_stack();
        assert_eq!(site_index(&frames), Some(5));
        let site = Site::of_stack(&frames);
        assert_eq!(site.function, "demo::load_thumbnails::{closure#0}");
        assert_eq!(site.line, Some(24));
        // The full name is kept for JSON.
        assert_eq!(
            site.inlined_into.as_deref(),
            Some(frames[6].function.as_deref().unwrap())
        );

        // open_sessions: `(0..id % 32).collect()` in its closure.
        let mut frames = frames;
        frames[6].function = Some("{closure#0}<u64, (u64, demo::Session), (), demo::open_sessions::{closure_env#0}, core::iter::traits::iterator::Iterator::for_each::call::{closure_env#0}<(u64, demo::Session), hashbrown::map::{impl#82}::extend::{closure_env#0}<u64, demo::Session, std::hash::random::RandomState, alloc::alloc::Global, core::iter::adapters::map::Map<core::ops::range::Range<u64>, demo::open_sessions::{closure_env#0}>>>>".into());
        assert_eq!(
            Site::of_stack(&frames).function,
            "demo::open_sessions::{closure#0}"
        );
    }

    #[test]
    fn bare_closures_without_a_closure_env_take_the_nearest_program_frame() {
        let mut frames = load_thumbnails_stack();
        frames[6].function = Some("{closure#0}<usize, u8>".into());
        assert_eq!(Site::of_stack(&frames).function, "demo::main::{closure#0}");
        // A closure env of another index, or of library code, is not it.
        frames[6].function =
            Some("{closure#0}<demo::load_thumbnails::{closure_env#1}, alloc::fmt::format::{closure_env#0}>".into());
        assert_eq!(Site::of_stack(&frames).function, "demo::main::{closure#0}");
        // No outer frame says whose: the bare name stays.
        frames.truncate(9);
        frames[6].function = Some("{closure#0}".into());
        assert_eq!(Site::of_stack(&frames).function, "{closure#0}");
    }

    #[test]
    fn thread_closures_are_qualified_through_library_frames() {
        let demo = "/work/main/examples/src/bin/demo.rs";
        let frames = [
            located("__rust_alloc_zeroed", demo, 15, true),
            located("{closure#0}", demo, 78, true),
            located(
                "std::sys::backtrace::__rust_begin_short_backtrace",
                &format!("{STD}/std/src/sys/backtrace.rs"),
                166,
                false,
            ),
            located(
                "{closure#0}<demo::main::{closure_env#0}, usize>",
                &format!("{STD}/std/src/thread/lifecycle.rs"),
                91,
                true,
            ),
        ];
        assert_eq!(Site::of_stack(&frames).function, "demo::main::{closure#0}");
    }

    #[test]
    fn qualified_names_are_left_alone() {
        let frames = [
            frame(Some("__rust_alloc"), 1, false),
            frame(Some("demo::main::{closure#0}"), 2, true),
            frame(Some("demo::main"), 3, false),
        ];
        assert_eq!(Site::of_stack(&frames).function, "demo::main::{closure#0}");
        assert_eq!(qualify_closure(&frames, 1), None);
    }

    #[test]
    fn generic_arguments_are_stripped() {
        assert_eq!(
            strip_generics(
                "{closure#0}<usize, alloc::vec::Vec<u8, alloc::alloc::Global>, (), demo::load_thumbnails::{closure_env#0}, core::iter::traits::iterator::Iterator::for_each::call::{closure_env#0}<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::vec::{impl#21}::extend_trusted::{closure_env#0}<alloc::vec::Vec<u8, alloc::alloc::Global>, alloc::alloc::Global, core::iter::adapters::map::Map<core::ops::range::Range<usize>, demo::load_thumbnails::{closure_env#0}>>>>"
            ),
            "{closure#0}"
        );
        assert_eq!(
            strip_generics(
                "map_or_else<&str, alloc::string::String, alloc::fmt::format::{closure_env#0}, fn(&str) -> alloc::string::String>"
            ),
            "map_or_else"
        );
        assert_eq!(
            strip_generics(
                "std::panicking::catch_unwind::do_call::<std::rt::lang_start_internal::{closure#0}, isize>"
            ),
            "std::panicking::catch_unwind::do_call"
        );
        assert_eq!(
            strip_generics("<alloc::vec::Vec<T> as core::clone::Clone>::clone"),
            "<alloc::vec::Vec as core::clone::Clone>::clone"
        );
        assert_eq!(strip_generics("blocks::main"), "blocks::main");
    }

    #[test]
    fn long_generic_types_are_abbreviated_from_the_deepest_arguments_up() {
        let flat_map = "core::iter::adapters::flatten::FlatMap<core::iter::adapters::map::Map<alloc::vec::into_iter::IntoIter<jaq_json::Val>, jaq_core::filter::run::{closure_env#0}>, core::option::Option<jaq_json::Val>, jaq_core::filter::run::{closure_env#1}>";
        // Short enough: unchanged.
        assert_eq!(abbreviate_type("Vec<u8> buffer", 20), "Vec<u8> buffer");
        assert_eq!(abbreviate_type(flat_map, 1000), flat_map);
        // Paths inside the arguments keep their last segment first.
        assert_eq!(
            abbreviate_type(flat_map, 105),
            "core::iter::adapters::flatten::FlatMap<Map<IntoIter<Val>, {closure_env#0}>, Option<Val>, {closure_env#1}>"
        );
        assert_eq!(
            abbreviate_type(flat_map, 103),
            "core::iter::adapters::flatten::FlatMap<Map<IntoIter<…>, {closure_env#0}>, Option<Val>, {closure_env#1}>"
        );
        // Then arguments go, deepest first.
        assert_eq!(
            abbreviate_type(flat_map, 80),
            "core::iter::adapters::flatten::FlatMap<Map<…>, Option<…>, {closure_env#1}>"
        );
        assert_eq!(
            abbreviate_type(flat_map, 40),
            "core::iter::adapters::flatten::FlatMap<…>"
        );
        // A buffer's kind stays after its element is elided; `->` is no bracket.
        assert_eq!(
            abbreviate_type(
                "Vec<fn(app::very::long::Input) -> app::very::long::Output> buffer",
                30
            ),
            "Vec<…> buffer"
        );
    }
}
