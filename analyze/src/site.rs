//! The allocation site of a symbolized stack: the innermost frame that is
//! the program's own code, after the allocator's and the tracker's frames
//! are trimmed.
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

/// Crate paths of the standard library and its allocation-heavy internals.
const LIBRARY_CRATES: &[&str] = &["std::", "core::", "alloc::", "hashbrown::"];

/// Whether `function` belongs to the allocator or the tracker.
pub fn is_allocator_function(function: &str) -> bool {
    // Recent compilers name the allocator shims `__rustc::__rust_alloc`.
    let function = function.strip_prefix("__rustc::").unwrap_or(function);
    ALLOCATOR_PREFIXES.iter().any(|p| function.starts_with(p))
}

/// Whether `function` is standard-library code (std, core, alloc,
/// hashbrown), including trait impls whose type and trait are both the
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
/// and friends, or hashbrown). With `debug = "line-tables-only"`, inlined
/// functions have short names without their path (`with_capacity<u8>`), so
/// their file is what says they are the library's.
pub fn is_library_file(file: &str) -> bool {
    [
        "/library/std/src/",
        "/library/core/src/",
        "/library/alloc/src/",
    ]
    .iter()
    .any(|dir| file.contains(dir))
        || file.contains("/hashbrown-")
}

/// Whether a frame is library code, by its function or its file.
pub fn is_library_frame(frame: &Frame) -> bool {
    frame.function.as_deref().is_some_and(is_library_function)
        || frame.file.as_deref().is_some_and(is_library_file)
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
        .rposition(|f| f.function.as_deref().is_some_and(is_allocator_function))
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
        Some(i) => Some(offset + i),
        None if trimmed.is_empty() => frames.len().checked_sub(1),
        None => Some(offset),
    }
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
        }
    }

    /// The allocation site of a symbolized stack (innermost first).
    pub fn of_stack(frames: &[Frame]) -> Site {
        let Some(index) = site_index(frames) else {
            return Site::unknown();
        };
        let frame = &frames[index];
        let inlined_into = if frame.inlined {
            frames.get(index + 1).map(Frame::name)
        } else {
            None
        };
        Site {
            function: frame.name(),
            file: frame.file.clone(),
            line: frame.line,
            inlined_into,
        }
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
        assert!(is_allocator_function(
            "<alloc::alloc::Global as core::alloc::Allocator>::allocate"
        ));
        assert!(is_allocator_function(
            "<std::alloc::System as core::alloc::global::GlobalAlloc>::alloc"
        ));
    }
}
