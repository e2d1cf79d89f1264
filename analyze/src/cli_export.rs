//! The export commands of `heapdump` (`todot`, `tosqlite`, `tohprof`): argument
//! structs and the glue from them to `heapdump_analyze::export`. Kept out
//! of `main.rs` so that file stays a list of commands.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use heapdump_analyze::export::HeapModel;
use heapdump_analyze::export::dot::{self, DotOptions, GroupBy};
use heapdump_analyze::export::hprof::{self, HprofOptions};
use heapdump_analyze::export::sqlite;
use heapdump_analyze::fields::FieldIndex;
use heapdump_analyze::heap_report::{StackFrames as _, TypedFrames};
use heapdump_analyze::symbolize::{Frame, Symbolizer};
use heapdump_formats::read::DumpView;
use heapdump_formats::records::module_flags;

use crate::{display, spinner, symbolizer_for};

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump todot /tmp/app.hdump | dot -Tsvg > heap.svg\n",
    "    heapdump todot /tmp/app.hdump ./target/release/app -o heap.dot\n",
    "    heapdump todot /tmp/app.hdump --group-by type | dot -Tsvg > types.svg\n",
    "    heapdump todot /tmp/app.hdump --from 'app::Node' --depth 3\n",
    "    heapdump todot /tmp/app.hdump --from 0x55d0c0a01f20 --max-nodes 50\n",
    "    heapdump todot /tmp/app.hdump --min-size 4096 --max-nodes 500\n\n",
    "Without --group-by, each drawn object is one box: its type (recovered from the\n",
    "allocation stack's constructor frames, or alloc@SITE), size and address; the\n",
    "tooltip names the allocation site. Objects are drawn breadth-first from the\n",
    "roots, nearest first, up to --max-nodes; a quarter of that is kept for objects\n",
    "no root reaches, which are red (definitely lost) or orange (indirectly lost).\n",
    "Yellow: reached only through interior pointers (possibly lost). Edges are\n",
    "labelled +OFFSET, the byte offset of the pointer in its source; dashed edges\n",
    "point inside their target (+OFFSET → +TARGET_OFFSET); dotted edges stand for\n",
    "a path through objects smaller than --min-size. Roots are drawn by kind:\n",
    "house = thread stack, cds = registers (edges named by register), hexagon =\n",
    "TLS, folder = data segment, diamond = other. When the binary has DWARF type\n",
    "information (debug = 2), edges out of typed objects are labelled with the field\n",
    "the pointer is in (next, [3].next, value.next) instead of +OFFSET.\n\n",
    "--from takes an address inside an allocation (0x…), or a type or site label\n",
    "as the graph shows it (exact, else every label containing the text).\n",
    "With --group-by, one node per type or site with its object count and bytes,\n",
    "and one edge per pair of groups with the number of pointers; roots are one\n",
    "node per kind. When --max-nodes cuts the graph, stderr says how much.\n",
    "Node ids: a<N> = allocation N, r<N> = root N, t<N>/s<N> = type/site group,\n",
    "k<KIND> = roots of one kind."
))]
pub struct TodotArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// Write the DOT here instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Start from an address, type or site instead of the roots.
    #[arg(long, value_name = "ADDR|TYPE|SITE")]
    from: Option<String>,
    /// Follow at most N pointers from where the walk starts.
    #[arg(long, value_name = "N")]
    depth: Option<u32>,
    /// Draw at most N objects (or groups).
    #[arg(long, value_name = "N", default_value_t = 200)]
    max_nodes: usize,
    /// Leave out objects (or groups) smaller than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    min_size: u64,
    /// One node per type or per allocation site.
    #[arg(long, value_enum)]
    group_by: Option<GroupBy>,
}

/// The program's struct layouts and generic instances, from the DWARF of
/// its executable: a bonus, since a binary without DWARF types (anything
/// below debug = 2) keeps byte offsets, and says so. Nothing from a binary
/// that is missing or not the one that wrote the dump (its build-id differs):
/// the symbolizer says so once, and names functions from the dump.
fn load_fields(view: &DumpView<'_>, executable: Option<&Path>, quiet: bool) -> Option<FieldIndex> {
    let executable = executable?;
    if !is_dumped_binary(view, executable) {
        return None;
    }
    match FieldIndex::load(executable) {
        Ok(fields) if !fields.is_empty() => Some(fields),
        Ok(_) => {
            if !quiet {
                eprintln!(
                    "note: {} has no DWARF type information (build with debug = 2 for field names); edges are labelled with byte offsets",
                    display(executable)
                );
            }
            None
        }
        Err(error) => {
            eprintln!("warning: no field names: {error:#}");
            None
        }
    }
}

/// Builds the export model, symbolizing with the binary; every stack's
/// frames are also handed to `keep` (the SQLite export stores them).
fn open_model<'a>(
    view: DumpView<'a>,
    dump: &Path,
    binary: Option<PathBuf>,
    fields: Option<&FieldIndex>,
    keep: impl FnMut(u32, &[Frame]),
) -> anyhow::Result<HeapModel<'a>> {
    let mut symbolizer = symbolizer_for(&view, dump, binary.clone())?;
    open_model_with(view, dump, binary, &mut symbolizer, fields, keep)
}

/// [`open_model`] with a symbolizer the caller keeps using afterwards.
fn open_model_with<'a>(
    view: DumpView<'a>,
    dump: &Path,
    binary: Option<PathBuf>,
    symbolizer: &mut Symbolizer,
    fields: Option<&FieldIndex>,
    mut keep: impl FnMut(u32, &[Frame]),
) -> anyhow::Result<HeapModel<'a>> {
    let executable = executable(&view, binary.as_deref());
    let mut typed = TypedFrames {
        symbolizer,
        fields,
        module: executable.as_deref().map(display).unwrap_or_default(),
    };
    let spinner = spinner("symbolizing and building the heap graph");
    // The closure reads stacks through its own copy of the view (a few
    // slices), while the model keeps the other.
    let stacks = view.clone();
    let model = HeapModel::build(view, |stack| {
        let frames = typed.stack_frames(&stacks, stack)?;
        keep(stack, &frames);
        Ok(frames)
    })
    .with_context(|| format!("cannot analyze {}", display(dump)))?;
    spinner.finish_and_clear();
    for warning in &model.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(model)
}

/// `heapdump todot`.
pub fn todot(args: TodotArgs) -> anyhow::Result<ExitCode> {
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let executable = executable(&file.view(), args.binary.as_deref());
    let fields = load_fields(&file.view(), executable.as_deref(), false);
    let mut model = open_model(
        file.view(),
        &args.dump,
        args.binary,
        fields.as_ref(),
        |_, _| {},
    )?;
    if let Some(fields) = fields {
        model.set_fields(fields);
    }
    let options = DotOptions {
        from: args.from,
        depth: args.depth,
        max_nodes: args.max_nodes,
        min_size: args.min_size,
        group_by: args.group_by,
    };
    let summary = match &args.output {
        Some(path) => {
            let mut out = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", display(path)))?;
            let summary = dot::write_dot(&model, &options, &mut out)?;
            out.flush()
                .with_context(|| format!("cannot write {}", display(path)))?;
            summary
        }
        None => {
            let mut out = std::io::stdout().lock();
            let summary = dot::write_dot(&model, &options, &mut out)?;
            out.flush()?;
            summary
        }
    };
    if summary.cut > 0 {
        let what = if options.group_by.is_some() {
            "groups"
        } else {
            "objects"
        };
        eprintln!(
            "note: drew {} {what}; {} more were left out by --max-nodes {} (narrow with --from, --depth, --min-size or --group-by)",
            summary.nodes, summary.cut, options.max_nodes
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump tosqlite /tmp/app.hdump -o heap.db\n",
    "    heapdump tosqlite /tmp/app.hdump ./target/release/app -o heap.db\n",
    "    sqlite3 heap.db 'SELECT site, objects, bytes FROM top_sites LIMIT 10'\n",
    "    sqlite3 heap.db 'SELECT type, objects, bytes FROM top_types LIMIT 10'\n\n",
    "Tables: meta, threads, modules, types, sites, frames, stacks, stack_frames,\n",
    "objects, roots, edges, root_edges; views: object_info, top_sites, top_types,\n",
    "incoming (who points to an object), leak_summary. Object ids are allocation\n",
    "indexes in the dump, in address order. analyze/EXPORTS.md documents every\n",
    "column and the queries for common questions (path from the roots, unreachable\n",
    "bytes by site, an object's allocation stack, …).\n\n",
    "The database is written beside FILE under a temporary name and renamed into\n",
    "place when complete, replacing FILE. A binary database is never written to a\n",
    "terminal: -o is required. stderr reports the rows written and the load rate."
))]
pub struct TosqliteArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// The database file to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE.db", required = true)]
    output: PathBuf,
}

/// What names a dump's stacks and, when asked, its types the way the
/// exports do (`top --retained`, `retainers`, `diff --by type`): the
/// symbolizer, and the executable's generic instances from its DWARF
/// (BINARY, or the path the dump records).
pub(crate) struct Namer {
    symbolizer: Symbolizer,
    fields: Option<FieldIndex>,
    module: String,
}

impl Namer {
    /// `types`: whether to load the executable's DWARF (only type names
    /// need it, and it takes a while on a big binary).
    pub(crate) fn new(
        view: &DumpView<'_>,
        dump: &Path,
        binary: Option<PathBuf>,
        types: bool,
    ) -> anyhow::Result<Namer> {
        let executable = executable(view, binary.as_deref());
        let fields = if types {
            load_fields(view, executable.as_deref(), true)
        } else {
            None
        };
        Ok(Namer {
            symbolizer: symbolizer_for(view, dump, binary)?,
            fields,
            module: executable.as_deref().map(display).unwrap_or_default(),
        })
    }

    /// The frames source the reports take.
    pub(crate) fn frames(&mut self) -> TypedFrames<'_> {
        TypedFrames {
            symbolizer: &mut self.symbolizer,
            fields: self.fields.as_ref(),
            module: self.module.clone(),
        }
    }
}

/// Whether `executable` exists and has the build-id the dump records for
/// its main module (or the dump records none).
fn is_dumped_binary(view: &DumpView<'_>, executable: &Path) -> bool {
    let recorded = view
        .modules()
        .iter()
        .find(|m| m.flags & module_flags::MAIN_EXECUTABLE != 0)
        .and_then(|m| view.string(m.build_id).ok())
        .unwrap_or_default();
    if !executable.exists() {
        return false;
    }
    recorded.is_empty()
        || heapdump_analyze::symbolize::elf_build_id(executable)
            .ok()
            .flatten()
            .as_deref()
            == Some(recorded)
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

/// `heapdump tosqlite`.
pub fn tosqlite(args: TosqliteArgs) -> anyhow::Result<ExitCode> {
    if args.output.as_os_str() == "-" {
        anyhow::bail!("tosqlite writes a database file, not a stream; pass -o FILE.db");
    }
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let executable = executable(&file.view(), args.binary.as_deref());
    let fields = load_fields(&file.view(), executable.as_deref(), true);
    let mut frames = std::collections::HashMap::new();
    let mut model = open_model(
        file.view(),
        &args.dump,
        args.binary,
        fields.as_ref(),
        |stack, symbolized| {
            frames.insert(stack, symbolized.to_vec());
        },
    )?;
    if let Some(fields) = fields {
        model.set_fields(fields);
    }
    let spinner = spinner("writing the database");
    let summary = sqlite::write_sqlite(&model, &frames, &args.output, &display(&args.dump))?;
    spinner.finish_and_clear();
    let rows = summary.rows();
    let tables: Vec<String> = summary
        .tables
        .iter()
        .map(|(table, n)| format!("{table} {n}"))
        .collect();
    eprintln!(
        "wrote {}: {rows} rows ({}) loaded in {:.2} s ({:.0} rows/s), indexed in {:.2} s",
        display(&args.output),
        tables.join(", "),
        summary.load_seconds,
        rows as f64 / summary.load_seconds.max(1e-9),
        summary.index_seconds
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump tohprof /tmp/app.hdump -o heap.hprof && visualvm --openfile heap.hprof\n",
    "    heapdump tohprof /tmp/app.hdump ./target/release/app -o heap.hprof\n",
    "    heapdump tohprof /tmp/app.hdump | gzip > heap.hprof.gz\n\n",
    "Writes Java HPROF 1.0.2 (8-byte ids, heap dump segments) that VisualVM and\n",
    "other HPROF readers open. Every allocation is one instance whose class is its\n",
    "recovered type (one class per type and size, so VisualVM's sizes are the real\n",
    "allocation sizes and its total is the live bytes); its fields are the pointers\n",
    "the scan found, named by DWARF (debug = 2) or by byte offset (+0x18). Thread\n",
    "stacks, registers and TLS are roots of one java.lang.Thread per thread; pointers\n",
    "in data segments are static fields of a `statics of MODULE` class, named by\n",
    "symbol. Each instance's stack trace is its allocation stack. analyze/EXPORTS.md\n",
    "documents the mapping and its limits.\n\n",
    "Without -o the file goes to stdout, which must not be a terminal."
))]
pub struct TohprofArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// Write the HPROF file here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE.hprof")]
    output: Option<PathBuf>,
}

/// `heapdump tohprof`.
pub fn tohprof(args: TohprofArgs) -> anyhow::Result<ExitCode> {
    if args.output.is_none() && std::io::stdout().is_terminal() {
        anyhow::bail!(
            "tohprof writes a binary HPROF file; pass -o FILE.hprof or redirect stdout to a file or pipe"
        );
    }
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let view = file.view();
    let executable = executable(&view, args.binary.as_deref());
    let fields = load_fields(&view, executable.as_deref(), true);
    let mut symbolizer = symbolizer_for(&view, &args.dump, args.binary.clone())?;
    let mut frames = std::collections::HashMap::new();
    let mut model = open_model_with(
        file.view(),
        &args.dump,
        args.binary,
        &mut symbolizer,
        fields.as_ref(),
        |stack, symbolized| {
            frames.insert(stack, symbolized.to_vec());
        },
    )?;
    if let Some(fields) = fields {
        model.set_fields(fields);
    }
    let static_name = |address: u64| symbolizer.symbol_at(address);
    let options = HprofOptions::default();
    let spinner = spinner("writing the HPROF file");
    let start = std::time::Instant::now();
    let summary = match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", display(path)))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let summary = hprof::write_hprof(&model, &frames, &static_name, &options, &mut out)
                .with_context(|| format!("cannot write {}", display(path)))?;
            out.flush()
                .with_context(|| format!("cannot write {}", display(path)))?;
            summary
        }
        None => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            let summary = hprof::write_hprof(&model, &frames, &static_name, &options, &mut out)?;
            out.flush()?;
            summary
        }
    };
    spinner.finish_and_clear();
    let target = args.output.as_deref().map_or("stdout".into(), display);
    eprintln!(
        "wrote {target}: {} instances ({} bytes), {} classes ({} for heap types), {} GC roots, {} threads, {} stack traces in {:.2} s",
        summary.instances,
        summary.bytes,
        summary.classes,
        summary.heap_classes,
        summary.roots,
        summary.threads,
        summary.stack_traces,
        start.elapsed().as_secs_f64()
    );
    if summary.continuations > 0 {
        eprintln!(
            "note: {} continuation objects (size 0) carry the pointers of objects with more than 32,766 of them",
            summary.continuations
        );
    }
    if summary.clamped > 0 {
        eprintln!(
            "warning: {} allocations above 2 GiB are shown as 2 GiB - 1 bytes (HPROF instance sizes are 32-bit)",
            summary.clamped
        );
    }
    Ok(ExitCode::SUCCESS)
}
