//! Turning the return addresses of a dump's stacks into functions, files and
//! lines, with inlined frames, from the ELF files of the dumped process.
//!
//! The main executable should be the exact binary that wrote the dump (its
//! GNU build-id is checked); shared libraries are best effort. A module
//! whose file is missing or does not match is named from the function names
//! the dump carries (its `FrameNames` section, format 1.1): functions only,
//! without file, line or inlined frames, and one warning says so. A dump
//! without names needs the main executable, and shows a missing library's
//! frames as `module+0xoffset`.
//!
//! ```no_run
//! use heapdump_analyze::symbolize::{Symbolizer, SymbolizeOptions};
//! let dump = heapdump_analyze::open_dump("app.hdump".as_ref())?;
//! let view = dump.view();
//! let mut symbolizer = Symbolizer::new(&view, &SymbolizeOptions::default())?;
//! for frame in symbolizer.symbolize_stack(&view, 1)? {
//!     println!("{frame}");
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use heapdump_formats::read::DumpView;
use heapdump_formats::records::{ModuleRecord, module_flags};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use serde::Serialize;

/// How to find the files to symbolize with.
#[derive(Clone, Debug)]
pub struct SymbolizeOptions {
    /// The main executable to use instead of the path recorded in the dump
    /// (for a dump analyzed on another machine, or a binary that moved).
    pub binary: Option<PathBuf>,
    /// Directories of separate debug files, searched in order for a module
    /// stripped of its symbols or line tables (see [`separate_debug_file`]).
    pub debug_dirs: Vec<PathBuf>,
}

/// Where distributions install separate debug files (Debian's `-dbgsym`
/// and `-dbg` packages, Fedora's `-debuginfo`): searched by default.
pub const SYSTEM_DEBUG_DIR: &str = "/usr/lib/debug";

impl Default for SymbolizeOptions {
    fn default() -> Self {
        SymbolizeOptions {
            binary: None,
            debug_dirs: vec![PathBuf::from(SYSTEM_DEBUG_DIR)],
        }
    }
}

/// One symbolized frame. A return address yields one frame per inlined
/// function at that address, innermost first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The return address as recorded in the dump, as `0x…` hex.
    #[serde(serialize_with = "serialize_hex")]
    pub pc: u64,
    /// Demangled function name (without the hash), if known.
    pub function: Option<String>,
    /// Source file as recorded in DWARF (absolute when DWARF has it so).
    pub file: Option<String>,
    /// Source line.
    pub line: Option<u32>,
    /// This frame's function was inlined into the next (outer) frame.
    pub inlined: bool,
    /// Path of the module the address is in, if any module holds it.
    pub module: Option<String>,
    /// `pc` minus the module's load bias: the address in the ELF file.
    #[serde(serialize_with = "serialize_opt_hex")]
    pub module_offset: Option<u64>,
}

fn serialize_hex<S: serde::Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{value:#x}"))
}

fn serialize_opt_hex<S: serde::Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serialize_hex(value, s),
        None => s.serialize_none(),
    }
}

impl Frame {
    fn unknown(pc: u64) -> Frame {
        Frame {
            pc,
            function: None,
            file: None,
            line: None,
            inlined: false,
            module: None,
            module_offset: None,
        }
    }

    /// What to call this frame: the function, else `module+0xoffset`, else
    /// the bare address.
    pub fn name(&self) -> String {
        if let Some(function) = &self.function {
            return function.clone();
        }
        match (&self.module, self.module_offset) {
            (Some(module), Some(offset)) => {
                let base = module.rsplit('/').next().unwrap_or(module);
                format!("{base}+{offset:#x}")
            }
            _ => format!("{:#x}", self.pc),
        }
    }

    /// `file:line`, or `file`, or `None`.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        Some(match self.line {
            Some(line) => format!("{file}:{line}"),
            None => file.clone(),
        })
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if self.inlined {
            write!(f, " (inlined)")?;
        }
        if let Some(location) = self.location() {
            write!(f, " at {location}")?;
        }
        Ok(())
    }
}

/// Demangles a Rust symbol in the `{:#}` form (no hash), a C++ one if it is
/// one ([`demangle_cpp`]), and leaves anything else as it is.
pub fn demangle(name: &str) -> String {
    if let Ok(demangled) = rustc_demangle::try_demangle(name) {
        return format!("{demangled:#}");
    }
    demangle_cpp(name).unwrap_or_else(|| name.to_owned())
}

/// Demangles an Itanium C++ symbol (`_Z…`, as GCC and Clang mangle) with
/// its parameter list but without the return type, so that a name starts
/// with its scope (`std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(…)`,
/// not `void std::vector…`) and reports can tell library code by its
/// prefix. `None` if `name` is not a C++ symbol.
///
/// The demangler cannot parse every expression C++ puts in a symbol (the
/// `enable_if<!is_array<T>::value, …>` in the return type of
/// `std::make_shared<T>` is one); then the longest prefix that is a whole
/// name is demangled alone, without parameters: `std::make_shared<Widget>`
/// still says which function it is.
pub fn demangle_cpp(name: &str) -> Option<String> {
    if !name.starts_with("_Z") {
        return None;
    }
    let with_params = cpp_demangle::DemangleOptions::new().no_return_type();
    if let Some(text) = cpp_demangle::Symbol::new(name)
        .ok()
        .and_then(|symbol| symbol.demangle_with_options(&with_params).ok())
    {
        return Some(tidy_cpp(text));
    }
    // A name ends where its nested-name (`N…E`) or template arguments
    // (`I…E`) close: try each `E`, longest first.
    let name_only = with_params.no_params();
    name.char_indices()
        .rev()
        .filter(|&(_, c)| c == 'E')
        .find_map(|(at, _)| {
            cpp_demangle::Symbol::new(&name[..=at])
                .ok()?
                .demangle_with_options(&name_only)
                .ok()
        })
        .map(tidy_cpp)
}

/// The demangler prints an empty template parameter pack as a trailing
/// `, ` in the argument list (`make_shared<Widget, >`); C++ writes none.
fn tidy_cpp(text: String) -> String {
    if text.contains(", >") {
        text.replace(", >", ">")
    } else {
        text
    }
}

/// Reads the GNU build-id note of an ELF file; `None` if it has none.
pub fn elf_build_id(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // ReadCache reads only the headers and the note, not a whole (possibly
    // huge) binary.
    let cache = object::ReadCache::new(file);
    let object = object::File::parse(&cache)
        .with_context(|| format!("{} is not an object file heapdump can read", path.display()))?;
    let id = object
        .build_id()
        .with_context(|| format!("cannot read the build-id note of {}", path.display()))?;
    Ok(id.map(<[u8]>::to_vec))
}

/// The separate debug file of the ELF file at `binary`, if one is found:
/// by build-id, `DIR/.build-id/xx/rest.debug` for each of `debug_dirs`
/// (the file must carry the same build-id); then by the binary's
/// `.gnu_debuglink`, the named file next to the binary, in its `.debug`
/// directory, or under each of `debug_dirs` at the binary's own directory
/// (the file must carry the same build-id, or match the link's CRC when
/// the binary has none). These are the places and checks gdb uses, and
/// where distributions install debug packages.
pub fn separate_debug_file(binary: &Path, debug_dirs: &[PathBuf]) -> Option<PathBuf> {
    let file = File::open(binary).ok()?;
    let cache = object::ReadCache::new(file);
    let object = object::File::parse(&cache).ok()?;
    let build_id = object.build_id().ok().flatten().map(<[u8]>::to_vec);
    let same_build = |candidate: &Path| -> bool {
        candidate != binary
            && match &build_id {
                Some(id) => elf_build_id(candidate).ok().flatten().as_ref() == Some(id),
                None => false,
            }
    };
    if let Some(id) = build_id.as_deref().filter(|id| id.len() >= 2) {
        let name = hex(id);
        let (directory, file) = name.split_at(2);
        for dir in debug_dirs {
            let candidate = dir
                .join(".build-id")
                .join(directory)
                .join(format!("{file}.debug"));
            if same_build(&candidate) {
                return Some(candidate);
            }
        }
    }
    let (link, crc) = object.gnu_debuglink().ok().flatten()?;
    let link = Path::new(std::ffi::OsStr::from_bytes(link));
    // A link names a file, never a path.
    if link.components().count() != 1 {
        return None;
    }
    let binary_dir = std::fs::canonicalize(binary)
        .ok()
        .and_then(|real| real.parent().map(Path::to_path_buf))?;
    let mut candidates = vec![binary_dir.join(link), binary_dir.join(".debug").join(link)];
    let relative = binary_dir.strip_prefix("/").unwrap_or(&binary_dir);
    candidates.extend(debug_dirs.iter().map(|dir| dir.join(relative).join(link)));
    candidates.into_iter().find(|candidate| {
        candidate.is_file()
            && if build_id.is_some() {
                same_build(candidate)
            } else {
                file_crc32(candidate).is_some_and(|actual| actual == crc)
            }
    })
}

/// The CRC-32 of a file's bytes, as `.gnu_debuglink` records it.
fn file_crc32(path: &Path) -> Option<u32> {
    use std::io::Read as _;
    let mut file = File::open(path).ok()?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => return Some(hasher.finalize()),
            Ok(read) => hasher.update(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The file to read `binary`'s symbols and DWARF from, and what it
/// carries: the binary itself, or its separate debug file when the binary
/// lacks symbols or line tables and one is found in `debug_dirs`.
pub fn debug_source(binary: &Path, debug_dirs: &[PathBuf]) -> Result<(PathBuf, DebugInfo)> {
    let info = DebugInfo::of_file(binary)?;
    if info.symbols && info.line_tables {
        return Ok((binary.to_owned(), info));
    }
    if let Some(separate) = separate_debug_file(binary, debug_dirs)
        && let Ok(found) = DebugInfo::of_file(&separate)
        && (found.symbols || found.line_tables)
    {
        return Ok((
            separate,
            DebugInfo {
                symbols: info.symbols || found.symbols,
                line_tables: info.line_tables || found.line_tables,
                rust: info.rust || found.rust,
            },
        ));
    }
    Ok((binary.to_owned(), info))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct ModuleDebugInfo {
    path: String,
    start: u64,
    end: u64,
    load_bias: u64,
    loader: Option<addr2line::Loader>,
    /// No usable file: frames are named from the dump's `FrameNames`.
    names_from_dump: bool,
}

impl fmt::Debug for ModuleDebugInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModuleDebugInfo")
            .field("path", &self.path)
            .field("start", &format_args!("{:#x}", self.start))
            .field("end", &format_args!("{:#x}", self.end))
            .field("load_bias", &format_args!("{:#x}", self.load_bias))
            .field("has_debug_info", &self.loader.is_some())
            .field("names_from_dump", &self.names_from_dump)
            .finish()
    }
}

/// Symbolizes the addresses of one dump. Results are cached per address,
/// since the stacks of a process share most of their frames.
#[derive(Debug)]
pub struct Symbolizer {
    modules: Vec<ModuleDebugInfo>,
    cache: HashMap<u64, Vec<Frame>>,
    warnings: Vec<String>,
    /// The dump's own name (demangled) for each named return address.
    dump_names: HashMap<u64, String>,
    /// The main executable could not be used; its frames are named from
    /// the dump.
    main_from_dump: bool,
    /// The main executable's path and what it carries, when it was used.
    main_debug_info: Option<(String, DebugInfo)>,
    /// The file its debug information was read from: the executable, or
    /// its separate debug file.
    main_debug_source: Option<PathBuf>,
}

impl Symbolizer {
    /// Loads debug information for the dump's modules.
    ///
    /// When the main executable (the dump's, or `options.binary`) is
    /// missing or has a different build-id than the dump records, its
    /// frames are named from the names the dump carries, with one
    /// [warning](Symbolizer::warnings); a dump without names makes that an
    /// error. Problems with shared libraries are only warnings.
    pub fn new(view: &DumpView<'_>, options: &SymbolizeOptions) -> Result<Symbolizer> {
        let mut symbolizer = Symbolizer {
            modules: Vec::new(),
            cache: HashMap::new(),
            warnings: Vec::new(),
            dump_names: HashMap::new(),
            main_from_dump: false,
            main_debug_info: None,
            main_debug_source: None,
        };
        let has_names = match view.frame_names() {
            Ok(names) => names.is_some(),
            Err(error) => {
                symbolizer
                    .warnings
                    .push(format!("the dump's frame names are not used: {error}"));
                false
            }
        };
        let mut have_main = false;
        for (index, module) in view.modules().iter().enumerate() {
            let recorded = view
                .string_lossy(module.path)
                .map(|p| p.into_owned())
                .with_context(|| format!("module {index} has a bad path"))?;
            let is_main = module.flags & module_flags::MAIN_EXECUTABLE != 0 && !have_main;
            let mut names_from_dump = false;
            let loader = if module.flags & module_flags::VDSO != 0 {
                None
            } else if is_main {
                have_main = true;
                match load_main(
                    view,
                    &module,
                    &recorded,
                    options.binary.as_deref(),
                    &options.debug_dirs,
                ) {
                    Ok((loader, path, source, info)) => {
                        symbolizer.main_debug_info = Some((path.display().to_string(), info));
                        symbolizer.main_debug_source = Some(source);
                        Some(loader)
                    }
                    Err(problem) if has_names && problem.falls_back() => {
                        names_from_dump = true;
                        symbolizer.main_from_dump = true;
                        symbolizer.warnings.push(format!(
                            "{}: functions are named from the symbol names the dump carries; file:line, inlined frames and types need that binary",
                            problem.reason()
                        ));
                        None
                    }
                    Err(problem) => return Err(problem.into_error()),
                }
            } else {
                match load_library(view, &module, &recorded, &options.debug_dirs) {
                    Ok(loader) => Some(loader),
                    Err(error) => {
                        names_from_dump = has_names;
                        let fallback = if has_names {
                            "its functions are named from the dump"
                        } else {
                            "its frames are shown as offsets"
                        };
                        symbolizer.warnings.push(format!("{error:#}; {fallback}"));
                        None
                    }
                }
            };
            let path = match (&options.binary, is_main) {
                (Some(binary), true) => binary.display().to_string(),
                _ => recorded,
            };
            symbolizer.modules.push(ModuleDebugInfo {
                path,
                start: module.start,
                end: module.end,
                load_bias: module.load_bias,
                loader,
                names_from_dump,
            });
        }
        if symbolizer.modules.iter().any(|m| m.names_from_dump) {
            symbolizer.dump_names = dump_names(view, &symbolizer.modules)?;
        }
        if !have_main && let Some(binary) = &options.binary {
            symbolizer.warnings.push(format!(
                "the dump records no main executable module, so {} was not used",
                binary.display()
            ));
        }
        Ok(symbolizer)
    }

    /// Problems that did not stop symbolization (a shared library that
    /// could not be read, for instance), one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether the main executable's frames are named from the dump's own
    /// names because the binary is missing or does not match: its DWARF
    /// (types, fields) cannot be used either.
    pub fn main_from_dump(&self) -> bool {
        self.main_from_dump
    }

    /// The file the main executable's symbols and DWARF were read from
    /// (the executable, or its separate debug file); `None` when the
    /// executable was not used.
    pub fn main_debug_source(&self) -> Option<&Path> {
        self.main_debug_source.as_deref()
    }

    /// The one warning about what the main executable lacks for naming
    /// frames (symbols, line tables) and, when the caller names types
    /// (`types` is whether the binary's DWARF has any; `None` when types
    /// are not used), for types; `None` when nothing is missing or the
    /// executable was not used (a warning already says why).
    pub fn debug_info_warning(&self, types: Option<bool>) -> Option<String> {
        let (path, info) = self.main_debug_info.as_ref()?;
        debug_info_warning(path, *info, types)
    }

    /// The symbol (demangled) whose extent holds `address` in a loaded
    /// module, with the offset into it: `app::CACHE+0x8`. For naming the
    /// static a data-segment root's pointer lives in.
    pub fn symbol_at(&self, address: u64) -> Option<String> {
        let module = self
            .modules
            .iter()
            .find(|m| (m.start..m.end).contains(&address))?;
        let probe = address.wrapping_sub(module.load_bias);
        let symbol = module.loader.as_ref()?.find_symbol_info(probe)?;
        let name = demangle(symbol.name());
        Some(match probe - symbol.address() {
            0 => name,
            offset => format!("{name}+{offset:#x}"),
        })
    }

    /// The frames at return address `pc`, innermost (most inlined) first.
    /// Never empty: an address nothing knows is one frame with no function.
    pub fn symbolize_pc(&mut self, pc: u64) -> &[Frame] {
        let (modules, names) = (&self.modules, &self.dump_names);
        self.cache
            .entry(pc)
            .or_insert_with(|| lookup(modules, names, pc))
    }

    /// The symbolized frames of stack `stack_id`, innermost first. Stack 0
    /// (unknown) has none.
    pub fn symbolize_stack(&mut self, view: &DumpView<'_>, stack_id: u32) -> Result<Vec<Frame>> {
        if stack_id == 0 {
            return Ok(Vec::new());
        }
        let frames = view.stack_frames(stack_id)?;
        let mut out = Vec::with_capacity(frames.len());
        for frame in frames.iter() {
            out.extend_from_slice(self.symbolize_pc(frame.pc));
        }
        Ok(out)
    }
}

/// Why the main executable cannot be used.
enum MainProblem {
    /// BINARY was given and does not exist.
    BinaryMissing(PathBuf),
    /// The recorded executable does not exist (no BINARY).
    RecordedMissing(String),
    /// The file's build-id is not the dump's: (path, actual, expected).
    WrongBuild(PathBuf, String, String),
    /// Anything else (unreadable, not ELF, a bad dump string).
    Other(anyhow::Error),
}

impl MainProblem {
    /// Whether the dump's own names may stand in for the binary.
    fn falls_back(&self) -> bool {
        !matches!(self, MainProblem::Other(_))
    }

    /// The problem, naming the binary looked for.
    fn reason(&self) -> String {
        match self {
            MainProblem::BinaryMissing(path) => format!("BINARY {} does not exist", path.display()),
            MainProblem::RecordedMissing(path) => {
                format!("the dumped program's executable {path} was not found")
            }
            MainProblem::WrongBuild(path, actual, expected) => format!(
                "{} is not the binary that wrote the dump (build-id {actual} vs {expected} recorded in the dump)",
                path.display()
            ),
            MainProblem::Other(error) => format!("{error:#}"),
        }
    }

    /// The error when there is nothing to fall back on.
    fn into_error(self) -> anyhow::Error {
        match self {
            MainProblem::BinaryMissing(path) => anyhow!("BINARY {} does not exist", path.display()),
            MainProblem::RecordedMissing(path) => anyhow!(
                "the dumped program's executable {path} was not found; pass BINARY, the exact executable that wrote the dump"
            ),
            MainProblem::WrongBuild(path, actual, expected) => anyhow!(
                "{} was built from different sources than the dumped process: build-id {actual} vs {expected} recorded in the dump; pass the exact binary that wrote the dump",
                path.display()
            ),
            MainProblem::Other(error) => error,
        }
    }
}

/// What an executable carries for naming the frames of a stack, read from
/// its section headers and symbol table (no DWARF is parsed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugInfo {
    /// A symbol table with functions (`.symtab`): without it, frames are
    /// `module+0xoffset`.
    pub symbols: bool,
    /// DWARF line tables (`.debug_line`): without them, sites have no
    /// file:line and inlined frames are not seen.
    pub line_tables: bool,
    /// Built by rustc (its `.comment` says so): the advice for what is
    /// missing is then Cargo's settings, else a C compiler's and
    /// distributions' debug packages.
    pub rust: bool,
}

impl DebugInfo {
    /// Reads the section headers and symbol table of the ELF file at `path`.
    pub fn of_file(path: &Path) -> Result<DebugInfo> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // ReadCache reads the headers and the symbol table, not the whole
        // binary.
        let cache = object::ReadCache::new(file);
        let object = object::File::parse(&cache).with_context(|| {
            format!("{} is not an object file heapdump can read", path.display())
        })?;
        Ok(DebugInfo {
            symbols: object
                .symbols()
                .any(|symbol| symbol.kind() == object::SymbolKind::Text),
            // object finds a compressed `.zdebug_line` under this name too.
            line_tables: object
                .section_by_name(".debug_line")
                .is_some_and(|section| section.size() > 0),
            rust: object
                .section_by_name(".comment")
                .and_then(|section| section.data().ok())
                .is_some_and(|comment| {
                    comment
                        .split(|&byte| byte == 0)
                        .any(|line| line.starts_with(b"rustc version"))
                }),
        })
    }
}

/// The warning for an executable at `binary` that lacks symbols or line
/// tables, or DWARF types when `types` is `Some(false)` (the caller names
/// types and found none), naming the Cargo settings that add them; `None`
/// when nothing is missing. Cargo's release profile has no line tables and
/// no types by default, so most release binaries get this warning.
pub fn debug_info_warning(binary: &str, info: DebugInfo, types: Option<bool>) -> Option<String> {
    let mut missing = Vec::new();
    if !info.symbols {
        missing.push("no symbol table (frames are shown as module+0xoffset)");
    }
    if !info.line_tables {
        missing.push("no line tables (sites have no file:line, inlined calls are not seen)");
    }
    let no_types = types == Some(false);
    if no_types {
        missing.push(
            "no DWARF types (pointers are labelled with byte offsets instead of field names)",
        );
    }
    if missing.is_empty() {
        return None;
    }
    if !info.rust {
        // C and C++ programs, whose debug information comes from the
        // compiler's -g or from the distribution's debug package.
        return Some(format!(
            "{binary} has {}; build it with -g, or install its separate debug file (Debian: the package's -dbgsym or -dbg package) under {SYSTEM_DEBUG_DIR} or a directory named with --debug-dir",
            missing.join(", ")
        ));
    }
    let mut settings = Vec::new();
    if no_types {
        settings.push("`debug = 2`");
    } else if !info.line_tables {
        settings.push("`debug = \"line-tables-only\"`");
    }
    if !info.symbols {
        settings.push("`strip = false`");
    }
    // A stripped copy keeps the build-id, so the unstripped binary of the
    // same build can stand in for it.
    let unstripped = if info.symbols {
        ""
    } else {
        ", or pass the unstripped binary of the same build as BINARY"
    };
    Some(format!(
        "{binary} has {}; add {} to [profile.release] in Cargo.toml{unstripped}",
        missing.join(", "),
        settings.join(" and ")
    ))
}

/// Checks the main executable against the dump and loads its debug
/// information; returns the loader, the executable's path, the file the
/// loader read (the executable or its separate debug file) and what that
/// carries.
fn load_main(
    view: &DumpView<'_>,
    module: &ModuleRecord,
    recorded: &str,
    binary: Option<&Path>,
    debug_dirs: &[PathBuf],
) -> Result<(addr2line::Loader, PathBuf, PathBuf, DebugInfo), MainProblem> {
    let path = match binary {
        Some(binary) => {
            if !binary.exists() {
                return Err(MainProblem::BinaryMissing(binary.to_owned()));
            }
            binary.to_owned()
        }
        None => {
            let path = PathBuf::from(recorded);
            if !path.exists() {
                return Err(MainProblem::RecordedMissing(recorded.to_owned()));
            }
            path
        }
    };
    let expected = view
        .string(module.build_id)
        .map_err(|e| MainProblem::Other(e.into()))?;
    if !expected.is_empty() {
        let actual = elf_build_id(&path).map_err(MainProblem::Other)?;
        if actual.as_deref() != Some(expected) {
            let actual = actual.map_or_else(|| "none".to_owned(), |id| hex(&id));
            return Err(MainProblem::WrongBuild(path, actual, hex(expected)));
        }
    }
    let (source, info) = debug_source(&path, debug_dirs).map_err(MainProblem::Other)?;
    let loader = addr2line::Loader::new(&source).map_err(|e| {
        MainProblem::Other(anyhow!(
            "cannot read debug information from {}: {e}",
            source.display()
        ))
    })?;
    Ok((loader, path, source, info))
}

fn load_library(
    view: &DumpView<'_>,
    module: &ModuleRecord,
    recorded: &str,
    debug_dirs: &[PathBuf],
) -> Result<addr2line::Loader> {
    let path = Path::new(recorded);
    if !path.exists() {
        bail!("shared library {recorded} not found");
    }
    let expected = view.string(module.build_id)?;
    if !expected.is_empty() {
        let actual = elf_build_id(path)?;
        if actual.as_deref() != Some(expected) {
            // Symbols from a different build would be wrong, which is worse
            // than none.
            bail!(
                "shared library {recorded} on this machine is not the one the process loaded (build-id {} vs {})",
                actual.map_or_else(|| "none".to_owned(), |id| hex(&id)),
                hex(expected)
            );
        }
    }
    // A distribution's libraries are stripped to their dynamic symbols;
    // their debug package names the internal functions too.
    let (source, _) = debug_source(path, debug_dirs)?;
    addr2line::Loader::new(&source)
        .map_err(|e| anyhow!("cannot read symbols from shared library {recorded}: {e}"))
}

/// The dump's names (demangled) of the frames in modules named from the
/// dump, by return address.
fn dump_names(view: &DumpView<'_>, modules: &[ModuleDebugInfo]) -> Result<HashMap<u64, String>> {
    let mut out = HashMap::new();
    let Some(names) = view.frame_names()? else {
        return Ok(out);
    };
    // Frames in one function share one string: demangle each once.
    let mut demangled: HashMap<(u32, u32), String> = HashMap::new();
    for (frame, name) in view.frames().iter().zip(names.iter()) {
        let name = name.name;
        if name.len == 0 || out.contains_key(&frame.pc) {
            continue;
        }
        let in_named_module = modules
            .iter()
            .any(|m| m.names_from_dump && m.start <= frame.pc && frame.pc < m.end);
        if !in_named_module {
            continue;
        }
        let text = match demangled.get(&(name.offset, name.len)) {
            Some(text) => text.clone(),
            None => {
                let raw = view.string_lossy(name)?;
                let text = demangle(&raw);
                demangled.insert((name.offset, name.len), text.clone());
                text
            }
        };
        out.insert(frame.pc, text);
    }
    Ok(out)
}

fn lookup(modules: &[ModuleDebugInfo], dump_names: &HashMap<u64, String>, pc: u64) -> Vec<Frame> {
    let Some(module) = modules.iter().find(|m| m.start <= pc && pc < m.end) else {
        return vec![Frame::unknown(pc)];
    };
    let offset = pc.wrapping_sub(module.load_bias);
    let base = Frame {
        module: Some(module.path.clone()),
        module_offset: Some(offset),
        ..Frame::unknown(pc)
    };
    let Some(loader) = &module.loader else {
        let function = module
            .names_from_dump
            .then(|| dump_names.get(&pc).cloned())
            .flatten();
        return vec![Frame { function, ..base }];
    };
    // A return address points after the call; pc - 1 is inside it, so the
    // lookup finds the caller's line and inlining, not the next statement's.
    let probe = offset.wrapping_sub(1);
    let mut frames = Vec::new();
    if let Ok(mut iter) = loader.find_frames(probe) {
        while let Ok(Some(frame)) = iter.next() {
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok())
                .map(|raw| demangle(&raw));
            let (file, line) = match &frame.location {
                Some(location) => (location.file.map(str::to_owned), location.line),
                None => (None, None),
            };
            frames.push(Frame {
                function,
                file,
                line,
                inlined: true,
                ..base.clone()
            });
        }
    }
    let symbol = loader.find_symbol(probe).map(demangle);
    if frames.iter().all(|f| f.function.is_none()) {
        // No DWARF for this address (a library with only a symbol table).
        let location = loader.find_location(probe).ok().flatten();
        let (file, line) = match location {
            Some(l) => (l.file.map(str::to_owned), l.line),
            None => (None, None),
        };
        frames = vec![Frame {
            function: symbol,
            file: file.or_else(|| frames.first().and_then(|f| f.file.clone())),
            line: line.or_else(|| frames.first().and_then(|f| f.line)),
            ..base
        }];
    } else if let Some(outer) = frames.last_mut() {
        // With `debug = "line-tables-only"`, DWARF names functions without
        // their path (`clone<u8, alloc::alloc::Global>`); the symbol table
        // names the outermost one, the function the address is in, in full.
        if let (Some(symbol), Some(name)) = (symbol, &outer.function)
            && !is_qualified(name)
            && is_qualified(&symbol)
        {
            outer.function = Some(symbol);
        }
    }
    if let Some(outer) = frames.last_mut() {
        outer.inlined = false;
    }
    frames
}

/// Whether a function name has a path (`a::b`), ignoring the `::` inside
/// generic arguments (`clone<u8, alloc::alloc::Global>` has none).
fn is_qualified(name: &str) -> bool {
    let mut depth = 0usize;
    let mut previous = ' ';
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ':' if depth == 0 && previous == ':' => return true,
            _ => {}
        }
        previous = c;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_without_hash_and_leaves_plain_names() {
        assert_eq!(
            demangle("_ZN6blocks11make_blocks17h0123456789abcdefE"),
            "blocks::make_blocks"
        );
        assert_eq!(
            demangle("_RNvCs1234_6blocks11make_blocks"),
            "blocks::make_blocks"
        );
        assert_eq!(demangle("malloc"), "malloc");
    }

    #[test]
    fn demangles_cpp_with_parameters_and_without_return_type() {
        assert_eq!(demangle("_Znwm"), "operator new(unsigned long)");
        assert_eq!(
            demangle("_ZNSt6vectorIiSaIiEE9push_backERKi"),
            "std::vector<int, std::allocator<int> >::push_back(int const&)"
        );
        assert_eq!(
            demangle(
                "_ZNSt6vectorIiSaIiEE17_M_realloc_insertIJRKiEEEvN9__gnu_cxx17__normal_iteratorIPiS1_EEDpOT_"
            ),
            "std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)"
        );
        assert_eq!(demangle("_Z13keep_registryv"), "keep_registry()");
        // Not a whole C++ name: left as it is.
        assert_eq!(demangle("_Z3fo"), "_Z3fo");
        assert_eq!(demangle("main"), "main");
    }

    #[test]
    fn a_cpp_symbol_the_demangler_cannot_parse_keeps_its_name() {
        // std::make_shared<Widget>(), whose return type holds
        // `enable_if<!is_array<Widget>::value, Widget>`; the empty pack of
        // its arguments is not printed.
        assert_eq!(
            demangle(
                "_ZSt11make_sharedI6WidgetJEESt10shared_ptrINSt9enable_ifIXntsrSt8is_arrayIT_E5valueES4_E4typeEEDpOT0_"
            ),
            "std::make_shared<Widget>"
        );
    }

    #[test]
    fn frame_names_fall_back_to_module_offset_then_address() {
        let mut frame = Frame::unknown(0x7f00_0000_1234);
        assert_eq!(frame.name(), "0x7f0000001234");
        frame.module = Some("/usr/lib/libc.so.6".into());
        frame.module_offset = Some(0x1234);
        assert_eq!(frame.name(), "libc.so.6+0x1234");
        frame.function = Some("malloc".into());
        frame.file = Some("/src/malloc.c".into());
        frame.line = Some(7);
        frame.inlined = true;
        assert_eq!(frame.to_string(), "malloc (inlined) at /src/malloc.c:7");
    }

    #[test]
    fn qualified_means_a_path_outside_generic_arguments() {
        assert!(!is_qualified("clone<u8, alloc::alloc::Global>"));
        assert!(!is_qualified("malloc"));
        assert!(is_qualified(
            "<alloc::vec::Vec<T,A> as core::clone::Clone>::clone"
        ));
        assert!(is_qualified("blocks::make_blocks"));
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
