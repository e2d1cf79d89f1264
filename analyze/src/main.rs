//! `heapdump`: the command line over `heapdump_analyze`. It parses
//! arguments, calls the library and prints; nothing else lives here.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use heapdump_analyze::report::{self, GroupBy, TopOptions};
use heapdump_analyze::symbolize::{SymbolizeOptions, Symbolizer};
use serde::Serialize;

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
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// Live bytes and allocations grouped by allocation site, largest first.
    #[command(after_help = concat!(
        "EXAMPLES:\n",
        "    heapdump top /tmp/app.hdump                 # uses the executable path recorded in the dump\n",
        "    heapdump top /tmp/app.hdump ./target/release/app\n",
        "    heapdump top /tmp/app.hdump --by function -n 10 --json\n\n",
        "The site of an allocation is the innermost frame of its stack that is the\n",
        "program's own code: allocator and tracker frames are trimmed, then std, core,\n",
        "alloc and hashbrown frames are skipped (inlined frames count as frames).\n",
        "BINARY must have the build-id the dump records; shared libraries that are\n",
        "missing are shown as module+0xoffset. A closure that debug info names only\n",
        "{closure#N} is shown with the function that defines it (app::load::{closure#0}).\n",
        "The text shows \"inlined into\" names without generic arguments; JSON has them in full.\n\n",
        "JSON (stable): {\"total_bytes\": u64, \"total_count\": u64, \"by\": \"site\"|\"function\"|\"file\",\n",
        "  \"rows\": [{\"bytes\": u64, \"count\": u64, \"percent\": f64,\n",
        "            \"function\": str|null, \"file\": str|null, \"line\": u32|null,\n",
        "            \"inlined_into\": str|null,\n",
        "            \"stack_example\": [{\"pc\": \"0x..\", \"function\": str|null, \"file\": str|null,\n",
        "                               \"line\": u32|null, \"inlined\": bool, \"module\": str|null,\n",
        "                               \"module_offset\": \"0x..\"|null}]}],\n",
        "  \"omitted_rows\": usize, \"omitted_bytes\": u64, \"omitted_count\": u64}\n",
        "function is null when grouping by file; file, line are null when grouping by\n",
        "function; line and inlined_into are set only when grouping by site. Files are\n",
        "as DWARF records them. total_* are the sums over every live allocation."
    ))]
    Top {
        /// The .hdump file.
        dump: PathBuf,
        /// The program's executable, if not at the path the dump records.
        binary: Option<PathBuf>,
        /// Group by site (function+file+line), function, or file.
        #[arg(long, value_enum, default_value = "site")]
        by: GroupBy,
        /// Rows to show.
        #[arg(short = 'n', long = "limit", default_value_t = 20)]
        n: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            let report = report::info(&file.view(), &display(&dump));
            emit(json, &report, || report.to_text())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { dump, json } => {
            let file = heapdump_analyze::open_dump(&dump)?;
            let report = report::verify_report(&file.view(), &display(&dump));
            emit(json, &report, || report.to_text())?;
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Top {
            dump,
            binary,
            by,
            n,
            json,
        } => {
            let file = heapdump_analyze::open_dump(&dump)?;
            let view = file.view();
            let options = SymbolizeOptions { binary };
            let mut symbolizer = Symbolizer::new(&view, &options)
                .with_context(|| format!("cannot symbolize {}", display(&dump)))?;
            for warning in symbolizer.warnings() {
                eprintln!("warning: {warning}");
            }
            let progress = progress_bar("symbolizing stacks");
            let mut warnings = Vec::new();
            let top = report::top(
                &view,
                &mut symbolizer,
                &TopOptions { by, limit: n },
                &progress,
                &mut warnings,
            );
            progress.finish_and_clear();
            let process = view.process();
            if process.live_bytes != top.total_bytes || process.live_count != top.total_count {
                warnings.push(format!(
                    "the dump's process record says {} bytes in {} allocations, but its allocations add up to {} in {}; run `heapdump verify`",
                    process.live_bytes, process.live_count, top.total_bytes, top.total_count
                ));
            }
            if process.dropped_allocations != 0 {
                warnings.push(format!(
                    "{} live allocations were not recorded by the tracker and are missing here",
                    process.dropped_allocations
                ));
            }
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            emit(json, &top, || top.to_text())?;
            Ok(ExitCode::SUCCESS)
        }
    }
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

/// Prints JSON or text to stdout. A closed pipe comes back as an
/// `io::Error` of kind `BrokenPipe`, which `main` turns into a quiet exit.
fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    let mut out = if json {
        serde_json::to_string_pretty(value)?
    } else {
        text()
    };
    if json {
        out.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
