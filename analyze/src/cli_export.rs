//! The export commands of `heapdump` (`todot`, `tosqlite`, `toparquet`,
//! `tohprof`, `toflamegraph`, `topprof`, `toheapsnapshot`): argument structs and the glue from them to
//! `heapdump_analyze::export`. Every one builds the one model and writes
//! one [`Export`] to its destination. Kept out of `main.rs` so that file
//! stays a list of commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use heapdump_analyze::export::dot::{DotOptions, GroupBy};
use heapdump_analyze::export::flamegraph::{FlameGraphOptions, FlameView, FlameWeight};
use heapdump_analyze::export::heapsnapshot::HeapSnapshotOptions;
use heapdump_analyze::export::hprof::HprofOptions;
use heapdump_analyze::export::parquet::{ParquetOptions, dump_id, existing_partitions};
use heapdump_analyze::export::pprof::PprofOptions;
use heapdump_analyze::export::sqlite::SqliteOptions;
use heapdump_analyze::export::{Destination, Export, HeapModel, ModelOptions, write_export};
use heapdump_analyze::site::Names;
use heapdump_analyze::stacks::Types;
use heapdump_formats::read::DumpView;

use crate::{display, namer, spinner};

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump todot /tmp/app.hdump | dot -Tsvg > heap.svg\n",
    "    heapdump todot /tmp/app.hdump ./target/release/app -o heap.dot\n",
    "    heapdump todot /tmp/app.hdump --group-by type | dot -Tsvg > types.svg\n",
    "    heapdump todot /tmp/app.hdump --from 'app::Node' --depth 3\n",
    "    heapdump todot /tmp/app.hdump --from 0x55d0c0a01f20 --max-nodes 50\n",
    "    heapdump todot /tmp/app.hdump --min-size 4096 --max-nodes 500\n",
    "    heapdump todot /tmp/app.hdump --group-by object --max-nodes 100   # objects, however many\n\n",
    "Without --group-by, the objects are drawn when they fit in --max-nodes (or with\n",
    "--from); a bigger heap is drawn as its type graph (--group-by type) instead, as\n",
    "a slice of it would show one container's insides; stderr and the picture's title\n",
    "say so. --group-by object draws objects however many there are.\n",
    "Each drawn object is one box: its type (recovered from the\n",
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
    "as the graph shows it (exact, else a type whose path ends in the text, Node for\n",
    "app::Node, else every label containing the text).\n",
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
    /// One node per object, per type or per allocation site. Default:
    /// objects when they fit in --max-nodes, else types.
    #[arg(long, value_enum)]
    group_by: Option<GroupBy>,
    /// Label nodes with long type and site names in full (by default those
    /// over 100 characters are abbreviated; tooltips are in full).
    #[arg(long)]
    full_names: bool,
}

/// Builds the export model of `view`, named by a
/// [`Namer`](heapdump_analyze::stacks::Namer) (so type labels
/// and fields are those of `top --retained` and `retainers`), with a
/// spinner, and prints its warnings.
fn build_model<'a>(
    view: DumpView<'a>,
    dump: &Path,
    binary: Option<PathBuf>,
    types: Types,
    options: &ModelOptions,
) -> anyhow::Result<HeapModel<'a>> {
    let namer = namer(&view, dump, binary, types)?;
    let spinner = spinner(if options.graph {
        "symbolizing and building the heap graph"
    } else {
        "symbolizing stacks"
    });
    let model = HeapModel::build_with(view, namer, options)
        .with_context(|| format!("cannot analyze {}", display(dump)))?;
    spinner.finish_and_clear();
    for warning in &model.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(model)
}

/// Writes `export` of `model` to `to` with a spinner.
fn export<E: Export>(
    export: &E,
    model: &HeapModel<'_>,
    to: &Destination,
    message: &'static str,
) -> anyhow::Result<E::Summary> {
    let spinner = spinner(message);
    let summary = write_export(export, model, to)?;
    spinner.finish_and_clear();
    Ok(summary)
}

/// The whole of an export command that writes one model of one dump:
/// the destination (refused before the long analysis if it cannot take
/// `options`' format), the dump opened and modelled, the export written.
/// Returns what the export reports and where it went.
fn export_dump<E: Export>(
    options: &E,
    dump: &Path,
    binary: Option<PathBuf>,
    output: Option<&Path>,
    types: Types,
    model_options: &ModelOptions,
    message: &'static str,
) -> anyhow::Result<(E::Summary, Destination)> {
    let to = Destination::from_option(output);
    to.check(options)?;
    let file = heapdump_analyze::open_dump(dump)?;
    let model = build_model(file.view(), dump, binary, types, model_options)?;
    let summary = export(options, &model, &to, message)?;
    Ok((summary, to))
}

/// `heapdump todot`.
pub fn todot(args: TodotArgs) -> anyhow::Result<ExitCode> {
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let model = build_model(
        file.view(),
        &args.dump,
        args.binary,
        Types::Load,
        &ModelOptions::default(),
    )?;
    let options = DotOptions {
        from: args.from,
        depth: args.depth,
        max_nodes: args.max_nodes,
        min_size: args.min_size,
        group_by: args.group_by,
        names: Names::full(args.full_names),
    };
    let to = Destination::from_option(args.output.as_deref());
    let summary = export(&options, &model, &to, "writing the DOT graph")?;
    if let Some(objects) = summary.types_instead_of {
        eprintln!(
            "note: {objects} objects are more than --max-nodes {}: drew the type graph instead ({} types{}); --group-by object draws the {} objects nearest the roots, --from ADDR|TYPE|SITE the part of the heap around some",
            options.max_nodes,
            summary.nodes,
            if summary.cut > 0 {
                format!(", {} smaller ones left out", summary.cut)
            } else {
                String::new()
            },
            options.max_nodes
        );
    } else if summary.cut > 0 {
        let what = match options.group_by {
            Some(GroupBy::Type | GroupBy::Site) => "groups",
            Some(GroupBy::Object) | None => "objects",
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

/// `heapdump tosqlite`.
pub fn tosqlite(args: TosqliteArgs) -> anyhow::Result<ExitCode> {
    let to = Destination::from_option(Some(&args.output));
    if to == Destination::Stdout {
        anyhow::bail!("tosqlite writes a database file, not a stream; pass -o FILE.db");
    }
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let model = build_model(
        file.view(),
        &args.dump,
        args.binary,
        Types::Load,
        &ModelOptions::default(),
    )?;
    let options = SqliteOptions {
        dump_name: display(&args.dump),
    };
    let summary = export(&options, &model, &to, "writing the database")?;
    let rows = summary.rows();
    let tables = table_counts(&summary.tables);
    eprintln!(
        "wrote {}: {rows} rows ({}) with their indexes in {:.2} s ({:.0} rows/s), schema and ANALYZE in {:.2} s",
        display(&args.output),
        tables,
        summary.load_seconds,
        rows as f64 / summary.load_seconds.max(1e-9),
        summary.index_seconds
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump toparquet /tmp/app.1.hdump -o heaps/\n",
    "    heapdump toparquet /tmp/app.2.hdump ./target/release/app -o heaps/\n",
    "    for d in /dumps/*.hdump; do heapdump toparquet \"$d\" -o heaps/; done\n",
    "    duckdb -c \"SELECT dump, sum(size) FROM read_parquet('heaps/objects/*/*.parquet', hive_partitioning = true) GROUP BY dump\"\n\n",
    "Writes the tables of tosqlite (objects, edges, roots, types, sites, stacks,\n",
    "stack_frames, frames, threads, modules, root_edges, meta) and a one-row `dumps`\n",
    "table (pid, exe, time, totals) as Parquet files, one partition per dump:\n",
    "DIR/TABLE/dump=ID/part-0.parquet. ID (p<pid>-<hash>) is derived from the dump\n",
    "itself, so the same dump always lands in the same partition, and the dumps of a\n",
    "fleet exported into one DIR form one dataset; engines add the `dump` column\n",
    "from the directory name, which joins the tables of one dump. An existing\n",
    "partition of the dump is refused unless --force. The partitions are written\n",
    "in a hidden directory inside DIR and moved into place when all are complete.\n",
    "analyze/EXPORTS.md documents the columns and queries across dumps (growth by\n",
    "site between the dumps of a process, top retained types across a fleet)."
))]
pub struct ToparquetArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// The dataset directory (created if missing; other dumps in it are kept).
    #[arg(short = 'o', long = "output", value_name = "DIR", required = true)]
    output: PathBuf,
    /// Replace this dump's partitions if it was exported into DIR before.
    #[arg(long)]
    force: bool,
}

/// `heapdump toparquet`.
pub fn toparquet(args: ToparquetArgs) -> anyhow::Result<ExitCode> {
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let id = dump_id(&file.view());
    // Refused before the long analysis; checked again when the
    // partitions are moved into place.
    if !args.force
        && let Some(existing) = existing_partitions(&args.output, &id).first()
    {
        anyhow::bail!(
            "{} exists already ({} was exported into {} before); pass --force to replace it",
            existing.display(),
            display(&args.dump),
            display(&args.output)
        );
    }
    let to = Destination::Directory {
        path: args.output.clone(),
        replace: args.force,
    };
    let model = build_model(
        file.view(),
        &args.dump,
        args.binary,
        Types::Load,
        &ModelOptions::default(),
    )?;
    let options = ParquetOptions {
        dump_name: display(&args.dump),
    };
    let summary = export(&options, &model, &to, "writing the Parquet files")?;
    let rows = summary.rows();
    let tables = table_counts(&summary.tables);
    eprintln!(
        "wrote dump={} into {}: {rows} rows ({}), {} bytes in {:.2} s ({:.0} rows/s)",
        summary.dump_id,
        display(&args.output),
        tables,
        summary.bytes,
        summary.seconds,
        rows as f64 / summary.seconds.max(1e-9)
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
    "symbol. Each instance's stack trace is its allocation stack. Class names of\n",
    "types over 100 characters are abbreviated (FlatMap<Map<…>, …>; --full-names\n",
    "keeps them whole). analyze/EXPORTS.md documents the mapping and its limits.\n\n",
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
    /// Name classes after long types in full (by default types over 100
    /// characters are abbreviated, as in the text tables).
    #[arg(long)]
    full_names: bool,
}

/// `heapdump tohprof`.
pub fn tohprof(args: TohprofArgs) -> anyhow::Result<ExitCode> {
    let start = std::time::Instant::now();
    let (summary, to) = export_dump(
        &HprofOptions {
            names: Names::full(args.full_names),
            ..HprofOptions::default()
        },
        &args.dump,
        args.binary,
        args.output.as_deref(),
        Types::Load,
        &ModelOptions::default(),
        "writing the HPROF file",
    )?;
    let target = to.describe();
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

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump toflamegraph /tmp/app.hdump -o heap.svg && xdg-open heap.svg\n",
    "    heapdump toflamegraph /tmp/app.hdump ./target/release/app -o heap.svg\n",
    "    heapdump toflamegraph /tmp/app.hdump --count -o blocks.svg\n",
    "    heapdump toflamegraph /tmp/app.2.hdump --diff /tmp/app.1.hdump -o growth.svg\n",
    "    heapdump toflamegraph /tmp/app.hdump --retained -o retained.svg\n\n",
    "Live memory by allocation stack as an SVG flame graph (drawn by inferno): the\n",
    "outermost frame at the bottom, each frame as wide as the live bytes allocated\n",
    "under it. Frames are `top`'s: symbolized, inlined functions shown as frames of\n",
    "their own (marked inlined), allocator and tracker frames trimmed, nothing below\n",
    "the runtime's entry. Hover over a frame for its bytes, blocks and share of all\n",
    "live bytes; click to zoom, Ctrl-F to search. Blocks without a recorded stack are\n",
    "under [no stack].\n\n",
    "--count: width by blocks instead of bytes.\n",
    "--diff OLD: a differential graph: widths are DUMP's, red frames grew since OLD,\n",
    "blue ones shrank; titles give both figures and the change. OLD is symbolized\n",
    "with the same BINARY.\n",
    "--retained: the dominator tree instead of stacks: each block is a frame named by\n",
    "its type (as `top --retained` names it), as wide as its retained size (the bytes\n",
    "freed if it were freed); a chain of blocks of one type (a list) is one frame.\n",
    "Needs a dump with a scan.\n\n",
    "In a dump with sampled stacks (stacks=sample), figures are estimates, as in `top`:\n",
    "each sampled block counts 1/(1 - exp(-size/S)) times; the subtitle says so.\n",
    "Without -o (or with -o -) the SVG goes to stdout."
))]
pub struct ToflamegraphArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// Write the SVG here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE.svg")]
    output: Option<PathBuf>,
    /// Width by live blocks instead of live bytes.
    #[arg(long)]
    count: bool,
    /// An older dump of the same program: show growth since it.
    #[arg(long, value_name = "OLD.hdump")]
    diff: Option<PathBuf>,
    /// Retained bytes along the dominator tree instead of allocation stacks.
    #[arg(long)]
    retained: bool,
    /// The graph's title.
    #[arg(long, value_name = "TEXT")]
    title: Option<String>,
}

/// `heapdump toflamegraph`.
pub fn toflamegraph(args: ToflamegraphArgs) -> anyhow::Result<ExitCode> {
    let to = Destination::from_option(args.output.as_deref());
    let view = if args.retained {
        FlameView::Retained
    } else {
        FlameView::Stacks
    };
    // The retained view names blocks by type (DWARF generics) and needs
    // the graph; stacks need neither.
    let (types, model_options) = match view {
        FlameView::Retained => (Types::Load, ModelOptions { graph: true }),
        FlameView::Stacks => (Types::Skip, ModelOptions { graph: false }),
    };
    let old_file = match &args.diff {
        Some(old) => Some(heapdump_analyze::open_dump(old)?),
        None => None,
    };
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let base = match (&old_file, &args.diff) {
        (Some(old_file), Some(old)) => Some(build_model(
            old_file.view(),
            old,
            args.binary.clone(),
            types,
            &model_options,
        )?),
        _ => None,
    };
    let model = build_model(file.view(), &args.dump, args.binary, types, &model_options)?;
    let title = args.title.unwrap_or_default();
    let options = FlameGraphOptions {
        weight: if args.count {
            FlameWeight::Blocks
        } else {
            FlameWeight::Bytes
        },
        view,
        base: base.as_ref(),
        title: &title,
    };
    let summary = export(&options, &model, &to, "drawing the flame graph")?;
    eprintln!(
        "wrote {}: {} paths, {}{} bytes in {}{} blocks{}",
        to.describe(),
        summary.paths,
        if summary.estimated { "≈" } else { "" },
        summary.bytes,
        if summary.estimated { "≈" } else { "" },
        summary.blocks,
        if summary.estimated {
            " (estimates from a stack sample)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump topprof /tmp/app.hdump -o heap.pb.gz\n",
    "    go tool pprof -top heap.pb.gz\n",
    "    go tool pprof -http :8080 heap.pb.gz                 # pprof's web UI\n",
    "    heapdump topprof /tmp/app.hdump ./target/release/app -o heap.pb.gz\n",
    "    heapdump topprof /tmp/app.hdump | gzip -dc | protoc --decode_raw\n\n",
    "Live memory as a gzipped pprof profile (profile.proto), as Go's heap profiles\n",
    "are: sample types inuse_objects (count) and inuse_space (bytes, the default).\n",
    "One sample per allocation stack, frames as in `top` (allocator frames trimmed);\n",
    "functions carry their file and line, inlined functions are the lines of one\n",
    "location, and each module of the dump is a mapping with its build-id. pprof,\n",
    "its web UI, Pyroscope and speedscope open it. In a dump with sampled stacks\n",
    "(stacks=sample) the values are `top`'s estimates, and the profile's comment\n",
    "says so.\n\n",
    "Without -o (or with -o -) the profile goes to stdout, which must not be a terminal."
))]
pub struct TopprofArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// Write the profile here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE.pb.gz")]
    output: Option<PathBuf>,
}

/// `heapdump topprof`.
pub fn topprof(args: TopprofArgs) -> anyhow::Result<ExitCode> {
    let options = PprofOptions {
        dump_name: display(&args.dump),
    };
    let (summary, to) = export_dump(
        &options,
        &args.dump,
        args.binary,
        args.output.as_deref(),
        Types::Skip,
        &ModelOptions { graph: false },
        "writing the profile",
    )?;
    eprintln!(
        "wrote {}: {} samples, {} locations, {} functions, {} mappings; inuse_space {}{} bytes, inuse_objects {}{}",
        to.describe(),
        summary.samples,
        summary.locations,
        summary.functions,
        summary.mappings,
        if summary.estimated { "≈" } else { "" },
        summary.bytes,
        if summary.estimated { "≈" } else { "" },
        summary.objects
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump toheapsnapshot /tmp/app.hdump -o heap.heapsnapshot\n",
    "    heapdump toheapsnapshot /tmp/app.hdump ./target/release/app -o heap.heapsnapshot\n\n",
    "The heap as a Chrome DevTools heap snapshot: open DevTools (any page, or\n",
    "about:blank), Memory tab, \"Load profile\", and pick the file. Each block is an\n",
    "object named by its type as `top --retained` names it (the Summary view groups\n",
    "by it), its size as shallow size; pointers are edges named by the DWARF field\n",
    "they are in, else by their byte offset ([16]). Roots are synthetic nodes by\n",
    "kind ((thread stacks), (data segments), ...), one per stack or segment, whose\n",
    "edges are named by the static at that address. Definitely-lost blocks hang from\n",
    "a synthetic (lost) node, so the retained sizes DevTools computes equal `top\n",
    "--retained`'s. Node ids are the blocks' sequence numbers: the Comparison view\n",
    "matches a block across two dumps of one process. memlab and other V8 heap\n",
    "tools read the file too. Needs a dump with a scan.\n\n",
    "Without -o (or with -o -) the snapshot goes to stdout."
))]
pub struct ToheapsnapshotArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// Write the snapshot here instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE.heapsnapshot")]
    output: Option<PathBuf>,
}

/// `heapdump toheapsnapshot`.
pub fn toheapsnapshot(args: ToheapsnapshotArgs) -> anyhow::Result<ExitCode> {
    let (summary, to) = export_dump(
        &HeapSnapshotOptions::default(),
        &args.dump,
        args.binary,
        args.output.as_deref(),
        Types::Load,
        &ModelOptions::default(),
        "writing the heap snapshot",
    )?;
    eprintln!(
        "wrote {}: {} objects, {} synthetic root nodes, {} edges ({} definitely-lost blocks under (lost))",
        to.describe(),
        summary.objects,
        summary.synthetic,
        summary.edges,
        summary.lost
    );
    Ok(ExitCode::SUCCESS)
}

/// `objects 12, edges 30, …`: the rows each table got, as the exports'
/// closing lines print them.
fn table_counts<T: std::fmt::Display, N: std::fmt::Display>(tables: &[(T, N)]) -> String {
    tables
        .iter()
        .map(|(table, n)| format!("{table} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
