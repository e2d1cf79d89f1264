//! Where the reports and the exports get the names of a dump's stacks:
//! the [`StackFrames`] trait (the symbolizer, [`TypedFrames`], or any
//! closure), [`Namer`] (the symbolizer plus the executable's DWARF, as the
//! CLI and the export model use them), and the per-stack cache the reports
//! share (site, type label, frames).
//!
//! ```no_run
//! use heapdump_analyze::site::OwnCode;
//! use heapdump_analyze::stacks::{Namer, StackFrames, Types};
//! use heapdump_analyze::symbolize::SymbolizeOptions;
//!
//! let dump = heapdump_analyze::open_dump("app.hdump".as_ref())?;
//! let view = dump.view();
//! let mut namer = Namer::new(&view, "app.hdump".as_ref(), SymbolizeOptions::default(), Types::Load, OwnCode::default())?;
//! for warning in namer.warnings() {
//!     eprintln!("warning: {warning}");
//! }
//! let frames = namer.frames().stack_frames(&view, 1)?;
//! println!("{} frames", frames.len());
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use heapdump_formats::read::DumpView;
use heapdump_formats::records::module_flags;

use crate::fields::FieldIndex;
use crate::site::{OwnCode, SOURCE_TREE, Site, site_index};
use crate::symbolize::{Frame, SymbolizeOptions, Symbolizer};
use crate::types::{AllocationName, TypeName};

/// Where the reports get the symbolized frames of a stack: the
/// [`Symbolizer`], or any `FnMut(stack_id) -> anyhow::Result<Vec<Frame>>`
/// (frames innermost first), as [`crate::export::HeapModel::build`] takes.
pub trait StackFrames {
    /// The frames of stack `stack` of `view`, innermost first.
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>>;

    /// The field at byte `offset` of a block of recovered type `ty`
    /// (`next`, `[2].next`, `value.next`), as the DOT export labels edges
    /// ([`FieldIndex::field_of`]); `None` without the program's DWARF
    /// layouts, which only [`TypedFrames`] has.
    fn field_of(&self, _ty: &TypeName, _offset: u64) -> Option<String> {
        None
    }

    /// The symbol (`app::CACHE+0x8`) at `address`, for naming a static that
    /// holds a root pointer ([`Symbolizer::symbol_at`]); `None` for a source
    /// without a symbolizer.
    fn symbol_at(&self, _address: u64) -> Option<String> {
        None
    }

    /// Which code is the program's own, for the frame a site in a
    /// dependency also names ([`Site::of_stack_in`]).
    fn own_code(&self) -> &OwnCode {
        &SOURCE_TREE
    }
}

impl StackFrames for Symbolizer {
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        self.symbolize_stack(view, stack)
    }

    fn symbol_at(&self, address: u64) -> Option<String> {
        Symbolizer::symbol_at(self, address)
    }
}

impl<F: FnMut(u32) -> anyhow::Result<Vec<Frame>>> StackFrames for F {
    fn stack_frames(&mut self, _: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        self(stack)
    }
}

/// Frames as the exports name types from them: symbolized, then, for the
/// main executable's frames, with the generic parameters its DWARF gives
/// back ([`FieldIndex::resolve_stack`]; full debug info names a generic
/// function without them).
#[derive(Debug)]
pub struct TypedFrames<'s> {
    /// Symbolizes the return addresses.
    pub symbolizer: &'s mut Symbolizer,
    /// The executable's generic instances, if its DWARF could be read.
    pub fields: Option<&'s FieldIndex>,
    /// The executable as frames name their module.
    pub module: String,
    /// Which code is the program's own.
    pub own: &'s OwnCode,
}

impl StackFrames for TypedFrames<'_> {
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        let mut frames = self.symbolizer.symbolize_stack(view, stack)?;
        if let Some(fields) = self.fields {
            fields.resolve_stack(&mut frames, &self.module);
        }
        Ok(frames)
    }

    fn field_of(&self, ty: &TypeName, offset: u64) -> Option<String> {
        self.fields?.field_of(ty, offset)
    }

    fn symbol_at(&self, address: u64) -> Option<String> {
        self.symbolizer.symbol_at(address)
    }

    fn own_code(&self) -> &OwnCode {
        self.own
    }
}

/// What the reports know about one stack.
pub(crate) struct StackInfo {
    /// Recovered type (or site fallback) and site, as the exports name them.
    pub(crate) name: AllocationName,
    /// The type label the exports show ([`AllocationName::type_label`]).
    pub(crate) type_label: String,
    frames: Vec<Frame>,
    /// Index of the site frame in `frames`.
    site_frame: usize,
}

/// Symbolizes each stack once and names it: site and type.
pub(crate) struct Stacks<'s, S: StackFrames + ?Sized> {
    source: &'s mut S,
    cache: HashMap<u32, StackInfo>,
    bad: u64,
}

impl<'s, S: StackFrames + ?Sized> Stacks<'s, S> {
    pub(crate) fn new(source: &'s mut S) -> Stacks<'s, S> {
        Stacks {
            source,
            cache: HashMap::new(),
            bad: 0,
        }
    }

    /// What names the stacks (for the symbols and fields it also knows).
    pub(crate) fn source(&self) -> &S {
        self.source
    }

    /// Names, frames and the index of the site frame of `stack`.
    pub(crate) fn get(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        warnings: &mut Vec<String>,
    ) -> &StackInfo {
        if !self.cache.contains_key(&stack) {
            let frames = match self.source.stack_frames(view, stack) {
                Ok(frames) => frames,
                Err(e) => {
                    self.bad += 1;
                    if self.bad <= 5 {
                        warnings.push(format!(
                            "stack {stack} unreadable, counted as <unknown>: {e}"
                        ));
                    }
                    Vec::new()
                }
            };
            let name = AllocationName::of_stack_in(&frames, self.source.own_code());
            let info = StackInfo {
                type_label: name.type_label(),
                name,
                site_frame: site_index(&frames).unwrap_or(0),
                frames,
            };
            self.cache.insert(stack, info);
        }
        &self.cache[&stack]
    }

    /// The site frame and up to `count - 1` of its callers, stopping at
    /// the runtime's entry frame.
    pub(crate) fn frames(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        count: usize,
        warnings: &mut Vec<String>,
    ) -> Vec<Frame> {
        let info = self.get(view, stack, warnings);
        info.frames
            .iter()
            .skip(info.site_frame)
            .take_while(|f| !crate::site::is_runtime_entry(f))
            .take(count)
            .cloned()
            .collect()
    }

    pub(crate) fn site(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        warnings: &mut Vec<String>,
    ) -> Site {
        self.get(view, stack, warnings).name.site.clone()
    }

    /// The type label of `stack`, as `top --retained` and the exports show it.
    pub(crate) fn type_label(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        warnings: &mut Vec<String>,
    ) -> String {
        self.get(view, stack, warnings).type_label.clone()
    }

    /// The field at `offset` of a block allocated at `stack`, when its type
    /// was recovered and the source has the layout.
    pub(crate) fn field_of(
        &mut self,
        view: &DumpView<'_>,
        stack: u32,
        offset: u64,
        warnings: &mut Vec<String>,
    ) -> Option<String> {
        let ty = self.get(view, stack, warnings).name.recovered.clone()?;
        self.source.field_of(&ty, offset)
    }
}

/// What names a dump's stacks and, when asked, its types the way the
/// exports do (`top --retained`, `retainers`, `diff --by type`): the
/// symbolizer, and the executable's generic instances from its DWARF
/// (BINARY, or the path the dump records).
///
/// Expensive to build: it reads the executable's symbol table and line
/// tables, and with [`Types::Load`] every type of its DWARF (seconds for a
/// large binary). Build one per dump and pass [`frames`](Self::frames) to
/// every report.
#[derive(Debug)]
pub struct Namer {
    symbolizer: Symbolizer,
    fields: Option<FieldIndex>,
    module: String,
    own: OwnCode,
    warnings: Vec<String>,
}

impl Namer {
    /// The namer of `view` (read from the file `dump`, which errors name),
    /// with the executable `binary` (default: the path the dump records),
    /// loading its DWARF types or not (only type names need them), and
    /// `own` as the program's own code.
    pub fn new(
        view: &DumpView<'_>,
        dump: &Path,
        options: SymbolizeOptions,
        types: Types,
        own: OwnCode,
    ) -> anyhow::Result<Namer> {
        let executable = executable(view, options.binary.as_deref());
        let symbolizer = Symbolizer::new(view, &options)
            .with_context(|| format!("cannot symbolize {}", dump.display()))?;
        let mut warnings = symbolizer.warnings().to_vec();
        let fields = match types {
            Types::Skip => None,
            Types::Load => load_fields(symbolizer.main_debug_source(), &mut warnings),
        };
        // Whether the binary has DWARF types, for the warning about what
        // it lacks; not asked when types are not named.
        let has_types = fields.as_ref().map(|fields| !fields.is_empty());
        let fields = fields.filter(|fields| !fields.is_empty());
        warnings.extend(symbolizer.debug_info_warning(has_types));
        Ok(Namer {
            symbolizer,
            fields,
            module: executable
                .as_deref()
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            own,
            warnings,
        })
    }

    /// What the namer could not do, for the user (a binary missing, not
    /// the dumped one, or lacking debug info), in the order found; empty
    /// when it names everything it can.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The frames source the reports take.
    pub fn frames(&mut self) -> TypedFrames<'_> {
        TypedFrames {
            symbolizer: &mut self.symbolizer,
            fields: self.fields.as_ref(),
            module: self.module.clone(),
            own: &self.own,
        }
    }
}

/// The export model owns its namer: names, statics and fields all come
/// from it, as for the reports.
impl StackFrames for Namer {
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        self.frames().stack_frames(view, stack)
    }

    fn field_of(&self, ty: &TypeName, offset: u64) -> Option<String> {
        self.fields.as_ref()?.field_of(ty, offset)
    }

    fn symbol_at(&self, address: u64) -> Option<String> {
        self.symbolizer.symbol_at(address)
    }

    fn own_code(&self) -> &OwnCode {
        &self.own
    }
}

/// A namer lent to a model that lives shorter than it (`serve` draws its
/// flame graph with the namer its reports then use, so stacks are
/// symbolized once).
impl StackFrames for &mut Namer {
    fn stack_frames(&mut self, view: &DumpView<'_>, stack: u32) -> anyhow::Result<Vec<Frame>> {
        (**self).stack_frames(view, stack)
    }

    fn field_of(&self, ty: &TypeName, offset: u64) -> Option<String> {
        (**self).field_of(ty, offset)
    }

    fn symbol_at(&self, address: u64) -> Option<String> {
        (**self).symbol_at(address)
    }

    fn own_code(&self) -> &OwnCode {
        (**self).own_code()
    }
}

/// The program's executable: BINARY if given, else the main module's path
/// as the dump records it.
fn executable(view: &DumpView<'_>, binary: Option<&Path>) -> Option<PathBuf> {
    if let Some(binary) = binary {
        return Some(binary.to_path_buf());
    }
    let module = view
        .modules()
        .iter()
        .find(|m| m.flags & module_flags::MAIN_EXECUTABLE != 0)?;
    let path = view.string_lossy(module.path).ok()?;
    (!path.is_empty()).then(|| PathBuf::from(path.into_owned()))
}

/// The program's struct layouts and generic instances, from the DWARF in
/// `source` (the executable's own, or its separate debug file's): a bonus,
/// since a binary without DWARF types (anything below debug = 2) keeps
/// byte offsets; the index is then empty, and the [`Namer`] warns. Nothing
/// when the executable was not used (missing, or not the one that wrote
/// the dump: the symbolizer says so once, and names functions from the
/// dump).
fn load_fields(source: Option<&Path>, warnings: &mut Vec<String>) -> Option<FieldIndex> {
    match FieldIndex::load(source?) {
        Ok(fields) => Some(fields),
        Err(error) => {
            warnings.push(format!("no field names: {error:#}"));
            None
        }
    }
}

/// Which of the executable's DWARF a [`Namer`] loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Types {
    /// None: sites and functions only.
    Skip,
    /// Generic instances and struct layouts.
    Load,
}
