//! `heapdump`: the command line over `heapdump_analyze`. It parses
//! arguments, calls the library and prints; nothing else lives here.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use heapdump_analyze::analysis::HeapAnalysis;
use heapdump_analyze::heuristics::{Heuristic, Heuristics};
use heapdump_analyze::leaks::LeakClass;
use heapdump_analyze::report::diff::{DiffBy, DiffReport};
use heapdump_analyze::report::info::InfoReport;
use heapdump_analyze::report::leaks::{LeaksOptions, LeaksReport};
use heapdump_analyze::report::retained::{RetainedOptions, RetainedReport};
use heapdump_analyze::report::retainers::{RetainersQuery, RetainersReport};
use heapdump_analyze::report::top::{GroupBy, TopOptions, TopReport};
use heapdump_analyze::report::verify::VerifyReport;
use heapdump_analyze::site::OwnCode;
use heapdump_analyze::stacks::{Namer, StackFrames, Types};
use heapdump_analyze::symbolize::SymbolizeOptions;
use serde::Serialize;

mod cli_export;
mod cli_run;
mod cli_serve;

const EXIT_STATUS: &str = "\
EXIT STATUS:
    0  success (for verify: the dump has no problems)
    1  verify found problems, or the command failed (unreadable or corrupt dump,
       missing or mismatched binary); the reason is printed on stderr
    2  bad command-line usage";

#[derive(Parser, Debug)]
#[command(
    name = "heapdump",
    version,
    about = "Read .hdump heap snapshots: describe, verify, and show live memory by allocation site",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The program's own crates (repeat, or comma-separated), for the frame
    /// a site in a dependency also names. Default: the crates of the main
    /// binary's source tree (sources outside a cargo registry, git
    /// checkout, the toolchain and /usr). Name them for a program built by
    /// `cargo install`, or to see one crate of a workspace.
    #[arg(long, global = true, value_delimiter = ',', value_name = "CRATE")]
    own_crate: Vec<String>,
    /// A directory of separate debug files (repeat), searched before
    /// /usr/lib/debug for a stripped program or library: by build-id
    /// (DIR/.build-id/xx/REST.debug) and by the file's .gnu_debuglink
    /// (DIR/PATH-OF-ITS-DIRECTORY/NAME). The file's own directory and its
    /// .debug subdirectory are always searched for a debuglink.
    #[arg(long, global = true, value_name = "DIR")]
    debug_dir: Vec<PathBuf>,
}

/// The `--own-crate` choice, set once before any command runs: every
/// report and export names sites with it.
static OWN_CODE: std::sync::OnceLock<OwnCode> = std::sync::OnceLock::new();

/// Which code is the program's own, as `--own-crate` chose.
pub(crate) fn own_code() -> &'static OwnCode {
    OWN_CODE.get_or_init(OwnCode::default)
}

/// The `--debug-dir` directories followed by the system's, set once
/// before any command runs.
static DEBUG_DIRS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an unmodified program with the tracker preloaded and dump its heap
    /// (at exit by default).
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump run -- ./server --port 8080                  # one dump when it exits\n",
        "    heapdump run --on signal:USR2 --dir /tmp/d -- python3 app.py\n",
        "    kill -USR2 <pid of heapdump run>                     # passed on: a dump now\n",
        "    heapdump run --on growth:1GiB --on oom -- ./batch-job input.csv\n\n",
        "The program runs with LD_PRELOAD (heapdump's allocator functions, built into\n",
        "this binary) and HEAPDUMP (from the options; see capture/README.md). Its\n",
        "stdio is its own; HUP, TERM, USR1, USR2, ALRM and WINCH sent to heapdump run\n",
        "are passed on (INT and QUIT from a terminal reach it directly); its exit\n",
        "status is heapdump run's. The dumps it wrote are listed on stderr at the end.\n",
        "Statically linked and set-user-ID programs are refused: LD_PRELOAD cannot\n",
        "reach them. Code built without frame pointers is unwound by its call frame\n",
        "information (.eh_frame), on x86_64."
    ))]
    Run(cli_run::RunArgs),
    /// Describe a dump: process, threads, modules, live totals, sections.
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump info /tmp/app.hdump\n",
        "    heapdump info /tmp/app.hdump --json | jq .heap.live_bytes\n\n",
        "Dropped allocations or stacks (the tracker's tables were full) are printed\n",
        "as WARNING lines first, and listed under \"warnings\" in JSON."
    ))]
    Info {
        /// The .hdump file.
        dump: PathBuf,
        /// Print JSON (the fields of the text output, unabbreviated).
        #[arg(long)]
        json: bool,
    },
    /// Check a dump against every rule of the format; exit 1 if any is broken.
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump verify /tmp/app.hdump && echo sound\n",
        "    heapdump verify /tmp/app.hdump --json\n\n",
        "Each problem is printed as `check: Section record N at byte B: what is wrong`,\n",
        "then a line `FILE: N problems`. JSON: {\"file\", \"problem_count\",\n",
        "\"problems\": [{\"check\", \"section\", \"index\", \"offset\", \"message\"}]}.\n\n",
        "Exit status: 0 no problems; 1 problems found, or the file is not a readable\n",
        "dump (the error names the file, the section and the byte offset)."
    ))]
    Verify {
        /// The .hdump file.
        dump: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Live bytes and allocations grouped by allocation site (or type), largest first.
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump top /tmp/app.hdump                 # uses the executable path recorded in the dump\n",
        "    heapdump top /tmp/app.hdump ./target/release/app\n",
        "    heapdump top /tmp/app.hdump --by function -n 10 --json\n",
        "    heapdump top /tmp/app.hdump --by type        # live bytes by recovered type\n",
        "    heapdump top /tmp/app.hdump --retained -n 5   # objects, sites and types retaining the most\n\n",
        "The site of an allocation is the innermost frame of its stack that is the\n",
        "program's own code: allocator and tracker frames are trimmed, then std, core,\n",
        "alloc and hashbrown frames are skipped (inlined frames count as frames).\n",
        "A site in a dependency (a crate from a cargo registry or git checkout) also\n",
        "names the program's innermost own frame: `indexmap::…::reserve_entries  …\n",
        "(from app::index_words  src/index.rs:12)`; --by own-function and --by own-file\n",
        "group by that frame (the site's own when it is the program's). Own code is the\n",
        "main binary's source tree, or the crates named with --own-crate.\n",
        "BINARY must have the build-id the dump records; shared libraries that are\n",
        "missing are shown as module+0xoffset. A closure that debug info names only\n",
        "{closure#N} is shown with the function that defines it (app::load::{closure#0}).\n",
        "The text shows \"inlined into\" names without generic arguments; JSON has them in full.\n",
        "With --by type, the type is the label `top --retained` and the exports use: the\n",
        "recovered type (app::Node, Vec<u8> buffer, [u8; 4096]; in C++ std::vector<int>\n",
        "buffer, std::shared_ptr<Widget> block), or alloc@function:line\n",
        "when no constructor frame names it; the executable's DWARF is read for generic\n",
        "parameters only then.\n\n",
        "JSON (stable): {\"total_bytes\": u64, \"total_count\": u64,\n",
        "  \"by\": \"site\"|\"function\"|\"file\"|\"own-function\"|\"own-file\"|\"type\",\n",
        "  \"rows\": [{\"bytes\": u64, \"count\": u64, \"percent\": f64,\n",
        "            \"function\": str|null, \"file\": str|null, \"line\": u32|null,\n",
        "            \"inlined_into\": str|null, \"type\": str (by type only),\n",
        "            \"own_frame\": {\"function\": str, \"file\": str|null, \"line\": u32|null}|null,\n",
        "            \"stack_example\": [{\"pc\": \"0x..\", \"function\": str|null, \"file\": str|null,\n",
        "                               \"line\": u32|null, \"inlined\": bool, \"module\": str|null,\n",
        "                               \"module_offset\": \"0x..\"|null}]}],\n",
        "  \"omitted_rows\": usize, \"omitted_bytes\": u64, \"omitted_count\": u64}\n",
        "function is null when grouping by file; file, line are null when grouping by\n",
        "function; line, inlined_into and own_frame are set only when grouping by site\n",
        "(stack_example starts past the allocator's and the tracker's frames). By type, a\n",
        "row's key is its \"type\" member (as in `diff --by type`), function, file, line\n",
        "and inlined_into are null, and rows of other groupings have no \"type\" member.\n",
        "Files are as DWARF records them. total_* are the sums over every live allocation.\n\n",
        "With --retained: the objects, sites and types with the largest retained sizes\n",
        "(--by is a usage error with it, exit status 2). A site's or type's retained\n",
        "bytes are those of its set of blocks: the retained sizes of its blocks that no\n",
        "block of the same site or type dominates, so nested blocks of one type (a list's\n",
        "nodes) count once. The type is the label the exports use: the recovered type\n",
        "(app::Node, Vec<u8> buffer), or alloc@function:line when no constructor frame\n",
        "names it. Objects are grouped by type and site, ranked by the largest retained\n",
        "size in the group, with their count and range of retained sizes (the class,\n",
        "and for a group of one the address, are the largest's); --per-object lists\n",
        "them one by one.\n",
        "JSON (stable): {\"total_bytes\", \"total_count\", \"pointer_free_edges\",\n",
        "  \"objects\": [OBJ] (one by one),\n",
        "  \"object_groups\": [{\"count\", \"bytes\", \"retained_min\", \"retained_max\",\n",
        "                     \"largest\": OBJ}],\n",
        "  \"sites\": [{\"retained\": u64, \"percent\": f64, \"objects\": u64, \"site\": SITE}],\n",
        "  \"types\": [{\"retained\": u64, \"percent\": f64, \"objects\": u64, \"type\": str,\n",
        "             \"recovered\": bool}]}\n",
        "SITE = {\"function\", \"file\", \"line\", \"inlined_into\", \"own_frame\"}; objects in a sites or types\n",
        "row counts the blocks counted (those no other block of the row dominates);\n",
        "recovered is false for an alloc@ label. OBJ = {\"index\", \"address\": \"0x..\",\n",
        "\"size\", \"retained\", \"class\", \"site\": SITE, \"type\": str}."
    ))]
    Top {
        /// The .hdump file.
        dump: PathBuf,
        /// The program's executable, if not at the path the dump records.
        binary: Option<PathBuf>,
        /// Group by site (function+file+line), function, file, or recovered type.
        /// Not with --retained, which has its own sites and types tables.
        #[arg(long, value_enum, default_value = "site", conflicts_with = "retained")]
        by: GroupBy,
        /// Rows to show.
        #[arg(short = 'n', long = "limit", default_value_t = 20)]
        n: usize,
        /// Rank by retained size (dominator tree): the objects, sites and
        /// types that keep the most memory alive. Needs a dump with roots and edges.
        #[arg(long)]
        retained: bool,
        /// With --retained: list the objects one by one instead of grouped
        /// by type and site.
        #[arg(long, requires = "retained")]
        per_object: bool,
        /// Heuristics for the leak class shown with --retained (see `leaks --help`).
        #[arg(long, default_value_t = Heuristics::default(), value_parser = parse_heuristics)]
        heuristics: Heuristics,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Leak classes with valgrind memcheck's semantics: LEAK SUMMARY and loss records.
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump leaks /tmp/app.hdump\n",
        "    heapdump leaks /tmp/app.hdump ./target/release/app --show all -n 10\n",
        "    heapdump leaks /tmp/app.hdump --heuristics none      # memcheck's classes for a Rust program\n",
        "    heapdump leaks /tmp/app.hdump --fail-on-leak && echo no leaks\n\n",
        "Classes, as memcheck computes them: still reachable (a root reaches the block\n",
        "through start pointers), possibly lost (reached, but only through an interior\n",
        "pointer), definitely lost (nothing reached points to it), indirectly lost (only\n",
        "lost blocks point to it). Unreached blocks are visited in address order, so in\n",
        "a lost cycle the lowest-addressed block is the definitely lost one.\n\n",
        "HEURISTICS (--heuristics all|none|default|NAME,NAME;\n",
        "default: hashbrown,rc-into-raw,tagged,pointer-free-types). The first four\n",
        "count these interior pointers as start pointers:\n",
        "    hashbrown     pointer to the control bytes of a HashMap/HashSet table (buckets\n",
        "                  then control bytes; the block at least 16-aligned on x86_64)\n",
        "    rc-into-raw   Rc/Arc::into_raw: 16 bytes in (or at the block's alignment)\n",
        "    tagged        low-bit tag: 1..=7 bytes in, below the block's alignment\n",
        "    any-interior  any interior pointer (sub-slices, field pointers); off by default\n",
        "and one judges where a pointer was found:\n",
        "    pointer-free-types  no edge out of a block whose recovered type holds no\n",
        "                  pointer (String and Vec<u8> buffers, arrays of numbers): such\n",
        "                  words are data or stale words in spare capacity. The report\n",
        "                  says how many were left out (JSON: pointer_free_edges).\n",
        "Memcheck has no Rust heuristics and follows every word. `--heuristics none`\n",
        "gives the classes of memcheck run with --leak-check-heuristics=none. Valgrind's\n",
        "default is all of its own (stdstring, length64, newarray, multipleinheritance):\n",
        "a block that only those reach, through an interior pointer, is still reachable\n",
        "there, possibly lost here.\n\n",
        "Loss records group blocks by class and allocation stack, biggest (direct +\n",
        "indirect bytes) first; the summary counts direct bytes, like memcheck's. Each\n",
        "record shows three of its blocks; --blocks lists them all with their sizes\n",
        "(memcheck's block_list; the blocks a definitely lost one holds are in the\n",
        "indirectly lost records: --show definite,indirect).\n\n",
        "Exit status: 0 whether or not there are leaks; with --fail-on-leak, 1 if any\n",
        "block is definitely or possibly lost (memcheck's --errors-for-leak-kinds default).\n\n",
        "JSON (stable): {\"heuristics\": [str], \"summary\": [{\"class\", \"blocks\", \"bytes\"}],\n",
        "  \"reachable_via_heuristic\": [{\"heuristic\", \"blocks\", \"bytes\"}], \"shown\": [class],\n",
        "  \"record_count\": usize, \"records\": [{\"number\", \"class\", \"blocks\", \"direct_bytes\",\n",
        "  \"indirect_bytes\", \"stack\": u32, \"site\": {\"function\", \"file\", \"line\", \"inlined_into\",\n",
        "  \"own_frame\" (as in top)},\n",
        "  \"frames\": [frame as in top], \"examples\": [\"0x..\"],\n",
        "  \"block_list\": [{\"address\": \"0x..\", \"size\"}] (with --blocks only)}],\n",
        "  \"omitted_records\", \"omitted_bytes\", \"pointer_free_edges\": u64}\n",
        "class is definitely_lost | indirectly_lost | possibly_lost | still_reachable."
    ))]
    Leaks {
        /// The .hdump file.
        dump: PathBuf,
        /// The program's executable, if not at the path the dump records.
        binary: Option<PathBuf>,
        /// Heuristics: all, none, default, or a comma-separated list.
        #[arg(long, default_value_t = Heuristics::default(), value_parser = parse_heuristics)]
        heuristics: Heuristics,
        /// Classes whose loss records are listed: all, or a list of
        /// definite, indirect, possible, reachable.
        #[arg(long, default_value = "definite,possible", value_parser = parse_classes)]
        show: ClassList,
        /// Loss records to list.
        #[arg(short = 'n', long = "limit", default_value_t = 50)]
        n: usize,
        /// Exit 1 if any block is definitely or possibly lost.
        #[arg(long)]
        fail_on_leak: bool,
        /// List every block of each loss record with its size (memcheck's
        /// block_list), not three examples.
        #[arg(long)]
        blocks: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Why blocks are alive: their dominator chain and shortest paths from roots.
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump retainers /tmp/app.hdump 0x5555a0001040\n",
        "    heapdump retainers /tmp/app.hdump ./target/release/app --site app::cache::insert -n 3\n",
        "    heapdump retainers /tmp/app.hdump --site main.rs:39\n",
        "    heapdump retainers /tmp/app.hdump --type app::Node -n 5\n",
        "    heapdump retainers /tmp/app.hdump 0x5555a0001040 --json | jq '.objects[0].paths[0]'\n\n",
        "Give one of ADDR, --site and --type. ADDR may point anywhere inside a block.\n",
        "--site picks the blocks of a site as `top` prints it: FILE:LINE (or the file's\n",
        "last path components, main.rs:39), FILE, or text its function contains; a site\n",
        "in a dependency also by its own frame's FILE:LINE, FILE or function. --type\n",
        "picks those whose type is the text; else, whose type's path ends in it (Node:\n",
        "app::Node); else, whose type contains it (Vec<app::Node> buffer). The\n",
        "type is the label `top --retained` and the exports show: the recovered type\n",
        "(app::Node, Vec<u8> buffer), or alloc@function:line when no constructor frame\n",
        "names it. Both take the -n blocks of largest retained size.\n\n",
        "A dominator of a block is a block every path from the roots to it goes through:\n",
        "freeing it frees the block. Paths show, for each step, the offset of the pointer\n",
        "in the previous block (or the root's address or register), the field it is in\n",
        "when the program's DWARF has the previous block's layout ([0x3e0 .next]; build\n",
        "with debug = 2), and where it points in the next block.\n\n",
        "JSON (stable): {\"objects\": [{\"object\": OBJ, \"dominators\": [OBJ],\n",
        "  \"paths\": [{\"root\": {\"index\", \"kind\", \"owner\", \"name\", \"location\", \"symbol\",\n",
        "                        \"source_offset\"},\n",
        "             \"steps\": [{\"object\": OBJ, \"field_offset\": u64|null, \"field\": str|null,\n",
        "                        \"target_offset\": u64|null}]}]}]}\n",
        "OBJ = {\"index\", \"address\": \"0x..\", \"size\", \"retained\", \"class\", \"site\", \"type\": str}.\n",
        "A path's first step is the block the root points into: its field is null (the\n",
        "root's kind, owner and symbol say where the pointer is); later steps' field is\n",
        "the previous block's field at field_offset (next, value.next, [2].next), null\n",
        "when its type was not recovered or has no layout in the binary's DWARF."
    ))]
    Retainers {
        /// The .hdump file.
        dump: PathBuf,
        /// The program's executable (optional), then the address: `BINARY ADDR` or `ADDR`
        /// (with --site or --type: `BINARY` or nothing).
        #[arg(num_args = 0..=2)]
        args: Vec<String>,
        /// Blocks of this site (FILE:LINE, FILE, or text of its function), instead of ADDR.
        #[arg(long, group = "query")]
        site: Option<String>,
        /// Blocks whose type is this text (else ends in it, else contains it), instead of ADDR.
        #[arg(long = "type", value_name = "TYPE", group = "query")]
        type_name: Option<String>,
        /// Blocks to show for --site and --type.
        #[arg(short = 'n', long = "limit", default_value_t = 3)]
        n: usize,
        /// Shortest root paths per block.
        #[arg(long, default_value_t = 3)]
        paths: usize,
        /// Heuristics for the leak class shown (see `leaks --help`).
        #[arg(long, default_value_t = Heuristics::default(), value_parser = parse_heuristics)]
        heuristics: Heuristics,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Growth by site (or type) between two dumps of the same process.
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump diff /tmp/app.1.hdump /tmp/app.2.hdump\n",
        "    heapdump diff /tmp/app.1.hdump /tmp/app.2.hdump ./target/release/app -n 10 --json\n",
        "    heapdump diff /tmp/app.1.hdump /tmp/app.2.hdump --by type\n\n",
        "Rows are sites (or types) whose live bytes or counts changed, by growth in bytes.\n",
        "A block of NEW is new when OLD has no block with the same address and sequence\n",
        "number: it was allocated after OLD was written and is still alive. With --by type,\n",
        "the type is the label the exports use: the recovered type (app::Node, Vec<u8>\n",
        "buffer), or alloc@function:line when no constructor frame names it.\n\n",
        "JSON (stable): {\"old\": SIDE, \"new\": SIDE, \"by\": \"site\"|\"type\", \"new_objects\",\n",
        "  \"new_object_bytes\", \"rows\": [{\"site\": SITE (by site) | \"type\": str (by type),\n",
        "            \"old_bytes\", \"old_count\", \"new_bytes\", \"new_count\",\n",
        "            \"delta_bytes\": i64, \"delta_count\": i64, \"new_objects\", \"new_object_bytes\"}],\n",
        "  \"omitted_rows\"}; SIDE = {\"file\", \"pid\", \"dump_number\", \"live_bytes\", \"live_count\"};\n",
        "SITE = {\"function\", \"file\", \"line\", \"inlined_into\", \"own_frame\"}."
    ))]
    Diff {
        /// The older dump.
        old: PathBuf,
        /// The newer dump.
        new: PathBuf,
        /// The program's executable, if not at the path the dumps record.
        binary: Option<PathBuf>,
        /// Group by allocation site or by recovered type.
        #[arg(long, value_enum, default_value = "site")]
        by: DiffBy,
        /// Rows to show.
        #[arg(short = 'n', long = "limit", default_value_t = 20)]
        n: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The heap graph as Graphviz DOT: objects (or types, or sites), roots and pointers.
    Todot(cli_export::TodotArgs),
    /// The heap as a SQLite database: objects, edges, roots, types, sites, stacks, frames.
    Tosqlite(cli_export::TosqliteArgs),
    /// The SQLite export's tables as Parquet, one partition per dump: many dumps in one directory are one dataset (DuckDB, Spark).
    Toparquet(cli_export::ToparquetArgs),
    /// The heap as a Java HPROF file that VisualVM opens: classes per type, instances, roots, allocation stacks.
    Tohprof(cli_export::TohprofArgs),
    /// Live memory by allocation stack (or retained along the dominator tree) as an SVG flame graph.
    Toflamegraph(cli_export::ToflamegraphArgs),
    /// Live memory by allocation stack as a gzipped pprof profile (go tool pprof, Pyroscope, speedscope).
    Topprof(cli_export::TopprofArgs),
    /// The heap as a Chrome DevTools heap snapshot (Memory tab, memlab), with retained sizes.
    Toheapsnapshot(cli_export::ToheapsnapshotArgs),
    /// A local web page over one dump: summary, flame graph, top sites and types,
    /// dominator tree, retainers, leaks, diff; JSON endpoints as the commands' --json.
    Serve(cli_serve::ServeArgs),
}

/// Leak classes chosen with `--show`.
#[derive(Clone, Debug)]
struct ClassList(Vec<LeakClass>);

fn parse_heuristics(s: &str) -> Result<Heuristics, String> {
    s.parse()
}

fn parse_classes(s: &str) -> Result<ClassList, String> {
    if s.trim() == "all" {
        return Ok(ClassList(LeakClass::ALL.to_vec()));
    }
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(class) = LeakClass::ALL.into_iter().find(|c| c.kind_name() == name) else {
            return Err(format!(
                "unknown leak kind `{name}`; expected all, or a list of definite, indirect, possible, reachable"
            ));
        };
        if !out.contains(&class) {
            out.push(class);
        }
    }
    Ok(ClassList(out))
}

/// ADDR of `retainers`; the error is a usage error's message.
fn parse_address(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| {
        format!(
            "`{s}` is not an address (0x-prefixed hex or decimal); see `heapdump retainers --help`"
        )
    })
}

/// The namer of `view` (see [`Namer::new`]), with its warnings printed
/// once each.
fn namer(
    view: &heapdump_formats::read::DumpView<'_>,
    dump: &Path,
    binary: Option<PathBuf>,
    types: Types,
) -> anyhow::Result<Namer> {
    let options = SymbolizeOptions {
        binary,
        debug_dirs: DEBUG_DIRS
            .get()
            .cloned()
            .unwrap_or_else(|| SymbolizeOptions::default().debug_dirs),
    };
    let namer = Namer::new(view, dump, options, types, own_code().clone())?;
    for warning in namer.warnings() {
        warn_once(warning);
    }
    Ok(namer)
}

/// [`Types::Load`] when a command names types, else [`Types::Skip`].
fn types_if(names_types: bool) -> Types {
    if names_types {
        Types::Load
    } else {
        Types::Skip
    }
}

/// Prints `warning: MESSAGE` on stderr unless this process printed it
/// already: `diff` symbolizes two dumps of one binary, whose warnings about
/// it are the same.
fn warn_once(message: &str) {
    static PRINTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut printed = PRINTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !printed.iter().any(|m| m == message) {
        eprintln!("warning: {message}");
        printed.push(message.to_owned());
    }
}

fn analyze(
    view: &heapdump_formats::read::DumpView<'_>,
    dump: &Path,
    heuristics: &Heuristics,
    dominators: bool,
    frames: &mut impl StackFrames,
) -> anyhow::Result<HeapAnalysis> {
    let spinner = spinner(if dominators {
        "building the heap graph, leak classes and dominator tree"
    } else {
        "building the heap graph and leak classes"
    });
    let analysis = HeapAnalysis::with_types(view, heuristics, dominators, frames)
        .with_context(|| format!("cannot analyze {}", display(dump)))?;
    spinner.finish_and_clear();
    for warning in analysis.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(analysis)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = OWN_CODE.set(OwnCode::crates(&cli.own_crate));
    let _ = DEBUG_DIRS.set(
        cli.debug_dir
            .iter()
            .cloned()
            .chain(SymbolizeOptions::default().debug_dirs)
            .collect(),
    );
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Info { dump, json } => {
            let file = heapdump_analyze::open_dump(&dump)?;
            let report = InfoReport::build(&file.view(), &display(&dump));
            emit(json, &report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dump, json } => {
            let file = heapdump_analyze::open_dump(&dump)?;
            let report = VerifyReport::build(&file.view(), &display(&dump));
            emit(json, &report)?;
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Top {
            dump,
            binary,
            n,
            retained: true,
            per_object,
            heuristics,
            json,
            ..
        } => {
            let file = heapdump_analyze::open_dump(&dump)?;
            let view = file.view();
            let mut namer = namer(&view, &dump, binary, Types::Load)?;
            let mut frames = namer.frames();
            let analysis = analyze(&view, &dump, &heuristics, true, &mut frames)?;
            let options = RetainedOptions {
                limit: n,
                per_object,
            };
            let report = RetainedReport::build(&view, &analysis, &mut frames, &options)?;
            print_warnings(&report.warnings);
            emit(json, &report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Leaks {
            dump,
            binary,
            heuristics,
            show,
            n,
            fail_on_leak,
            blocks,
            json,
        } => {
            let file = heapdump_analyze::open_dump(&dump)?;
            let view = file.view();
            // Which blocks hold no pointer is told by their types, which
            // need the executable's generic instances.
            let types = heuristics.contains(Heuristic::PointerFreeTypes);
            let mut namer = namer(&view, &dump, binary, types_if(types))?;
            let analysis = analyze(&view, &dump, &heuristics, false, &mut namer.frames())?;
            let options = LeaksOptions {
                show: show.0,
                limit: n,
                blocks,
                ..LeaksOptions::default()
            };
            let report = LeaksReport::build(&view, &analysis, &mut namer.frames(), &options);
            print_warnings(&report.warnings);
            emit(json, &report)?;
            Ok(if fail_on_leak && report.lost_bytes() > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Retainers {
            dump,
            args,
            site,
            type_name,
            n,
            paths,
            heuristics,
            json,
        } => {
            // --site and --type exclude each other through their clap group;
            // ADDR shares the positionals with BINARY, so it is checked here.
            let selector = match (site, type_name) {
                (Some(site), _) => Some(RetainersQuery::Site(site)),
                (None, Some(type_name)) => Some(RetainersQuery::Type(type_name)),
                (None, None) => None,
            };
            let (binary, query) = match (args.as_slice(), selector) {
                ([], Some(query)) => (None, query),
                // One positional with --site/--type is BINARY; one that reads
                // as an address and names no file was meant as ADDR.
                ([binary], Some(_))
                    if parse_address(binary).is_ok() && !Path::new(binary).exists() =>
                {
                    return Ok(usage_error(RETAINERS_USAGE));
                }
                ([binary], Some(query)) => (Some(PathBuf::from(binary)), query),
                ([address], None) => match parse_address(address) {
                    Ok(address) => (None, RetainersQuery::Address(address)),
                    Err(error) => return Ok(usage_error(&error)),
                },
                ([binary, address], None) => match parse_address(address) {
                    Ok(address) => (
                        Some(PathBuf::from(binary)),
                        RetainersQuery::Address(address),
                    ),
                    Err(error) => return Ok(usage_error(&error)),
                },
                _ => return Ok(usage_error(RETAINERS_USAGE)),
            };
            let file = heapdump_analyze::open_dump(&dump)?;
            let view = file.view();
            let mut namer = namer(&view, &dump, binary, Types::Load)?;
            let mut frames = namer.frames();
            let analysis = analyze(&view, &dump, &heuristics, true, &mut frames)?;
            let report = RetainersReport::build(&view, &analysis, &mut frames, &query, n, paths)
                .with_context(|| display(&dump))?;
            print_warnings(&report.warnings);
            emit(json, &report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => cli_run::run(args),
        Command::Todot(args) => cli_export::todot(args),
        Command::Tosqlite(args) => cli_export::tosqlite(args),
        Command::Toparquet(args) => cli_export::toparquet(args),
        Command::Tohprof(args) => cli_export::tohprof(args),
        Command::Toflamegraph(args) => cli_export::toflamegraph(args),
        Command::Topprof(args) => cli_export::topprof(args),
        Command::Toheapsnapshot(args) => cli_export::toheapsnapshot(args),
        Command::Serve(args) => cli_serve::serve(args),
        Command::Diff {
            old,
            new,
            binary,
            by,
            n,
            json,
        } => {
            let old_file = heapdump_analyze::open_dump(&old)?;
            let new_file = heapdump_analyze::open_dump(&new)?;
            let (old_view, new_view) = (old_file.view(), new_file.view());
            // Types need the executables' generic instances (as the exports
            // name them); sites do not.
            let mut old_namer = namer(
                &old_view,
                &old,
                binary.clone(),
                types_if(by == DiffBy::Type),
            )?;
            let mut new_namer = namer(&new_view, &new, binary, types_if(by == DiffBy::Type))?;
            let report = DiffReport::build(
                &old_view,
                &display(&old),
                &mut old_namer.frames(),
                &new_view,
                &display(&new),
                &mut new_namer.frames(),
                by,
                n,
            );
            print_warnings(&report.warnings);
            emit(json, &report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Top {
            dump,
            binary,
            by,
            n,
            json,
            ..
        } => {
            let file = heapdump_analyze::open_dump(&dump)?;
            let view = file.view();
            // Types are named as `top --retained` and the exports name
            // them, with the executable's generic instances; only --by type
            // reads its DWARF.
            let mut namer = namer(&view, &dump, binary, types_if(by == GroupBy::Type))?;
            let progress = progress_bar("symbolizing stacks");
            let options = TopOptions { by, limit: n };
            let top = TopReport::build(&view, &mut namer.frames(), &options, &progress);
            progress.finish_and_clear();
            print_warnings(&top.warnings);
            emit(json, &top)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `retainers` given no block to look at, or ADDR with --site or --type.
const RETAINERS_USAGE: &str = "give exactly one of an address (ADDR), --site TEXT or --type TYPE; see `heapdump retainers --help`";

/// A usage error clap could not see (exit status 2, as clap's own).
fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A progress bar on a terminal; a hidden one when stderr is a pipe or file.
fn progress_bar(message: &'static str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_message(message);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len}") {
        bar.set_style(style);
    }
    bar
}

/// A spinner with the elapsed time, for a step whose length is not known,
/// on a terminal; a hidden one when stderr is a pipe or file. (Building the
/// heap graph and its dominators takes seconds on a dump of millions of
/// blocks.)
fn spinner(message: &'static str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(message);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Prints a report's warnings on stderr.
fn print_warnings(warnings: &[String]) {
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
}

/// A report as `--json` prints it (and `serve` answers it): pretty JSON
/// and a newline.
fn json_text<T: Serialize>(value: &T) -> anyhow::Result<String> {
    let mut out = serde_json::to_string_pretty(value)?;
    out.push('\n');
    Ok(out)
}

/// Prints a report to stdout, as JSON or as its text. A closed pipe comes
/// back as an `io::Error` of kind `BrokenPipe`, which `main` turns into a
/// quiet exit.
fn emit<T: Serialize + std::fmt::Display>(json: bool, report: &T) -> anyhow::Result<()> {
    let out = if json {
        json_text(report)?
    } else {
        report.to_string()
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
