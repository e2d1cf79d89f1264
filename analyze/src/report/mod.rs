//! The reports of `heapdump`, one module per command. Each is a struct
//! that serializes (`serde`) to the command's documented `--json` output,
//! byte for byte as the CLI prints it with `serde_json::to_string_pretty`,
//! and displays (`Display`) as its text output. Each is built by one
//! function, `build`, from what the command loads; the CLI does nothing
//! else with it than print its `warnings` on stderr and the report on
//! stdout, so any other front end (a server returning the JSON, a test)
//! gets what the command gives.
//!
//! | command | report | built from |
//! |---|---|---|
//! | `info` | [`info::InfoReport`] | the dump |
//! | `verify` | [`verify::VerifyReport`] | the dump |
//! | `top` | [`top::TopReport`] | the dump and its stacks' names |
//! | `leaks` | [`leaks::LeaksReport`] | a [`HeapAnalysis`](crate::analysis::HeapAnalysis) and the names |
//! | `top --retained` | [`retained::RetainedReport`] | a [`HeapAnalysis`](crate::analysis::HeapAnalysis) with dominators, the names |
//! | `retainers` | [`retainers::RetainersReport`] | a [`HeapAnalysis`](crate::analysis::HeapAnalysis) with dominators, the names |
//! | `diff` | [`diff::DiffReport`] | two dumps and their names |
//!
//! What loading costs, so that a long-running caller does it once per
//! dump: opening ([`crate::open_dump`]) checksums the file; a
//! [`Namer`](crate::stacks::Namer) reads the executable's symbols and
//! line tables (with [`Types::Load`](crate::stacks::Types), its DWARF
//! types too: what `top --by type`, `top --retained`, `retainers`,
//! `diff --by type` and `leaks` with the `pointer-free-types` heuristic
//! name types with) and symbolizes each stack once; a [`HeapAnalysis`](crate::analysis::HeapAnalysis)
//! builds the graph and leak classes (with `dominators`, the dominator
//! tree that `top --retained` and `retainers` need). The reports
//! themselves are cheap next to these.
//!
//! ```no_run
//! use heapdump_analyze::analysis::HeapAnalysis;
//! use heapdump_analyze::heuristics::Heuristics;
//! use heapdump_analyze::report::leaks::{LeaksOptions, LeaksReport};
//! use heapdump_analyze::report::retained::{RetainedOptions, RetainedReport};
//! use heapdump_analyze::site::OwnCode;
//! use heapdump_analyze::stacks::{Namer, Types};
//! use heapdump_analyze::symbolize::SymbolizeOptions;
//!
//! let path = std::path::Path::new("app.hdump");
//! let dump = heapdump_analyze::open_dump(path)?;
//! let view = dump.view();
//! let mut namer = Namer::new(&view, path, SymbolizeOptions::default(), Types::Load, OwnCode::default())?;
//! let analysis = HeapAnalysis::new(&view, &Heuristics::default(), true, &mut namer.frames())?;
//!
//! let leaks = LeaksReport::build(&view, &analysis, &mut namer.frames(), &LeaksOptions::default());
//! print!("{leaks}"); // what `heapdump leaks` prints
//! let options = RetainedOptions { limit: 10, per_object: false };
//! let retained = RetainedReport::build(&view, &analysis, &mut namer.frames(), &options)?;
//! // What `heapdump top --retained -n 10 --json` prints.
//! println!("{}", serde_json::to_string_pretty(&retained)?);
//! for warning in namer.warnings().iter().chain(&analysis.warnings()).chain(&retained.warnings) {
//!     eprintln!("warning: {warning}");
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod diff;
pub mod info;
pub mod leaks;
pub mod objects;
pub mod retained;
pub mod retainers;
pub mod top;
pub mod verify;

/// The warning for a dump whose tracker could not store the stacks of
/// `dropped` allocations (the dump's `dropped_stacks`: counted once per
/// allocation, not per distinct stack), which `info` and `top` give: the
/// live ones have stack 0, so `top` puts them under `<unknown>`.
pub(crate) fn dropped_stacks_warning(dropped: u64) -> Option<String> {
    (dropped != 0).then(|| {
        format!(
            "the stacks of {dropped} allocations were NOT recorded (the stack table was full, or could not get memory; counted when made, so some may have been freed since): those still live show as <unknown>. A program that makes new stacks all its run (millions of call paths) fills the table (about 16.8 million stacks or 134 million frames): run it with stacks=sample:512KiB (in HEAPDUMP, or `heapdump run --stacks sample:512KiB`), which stores only the sampled blocks' stacks"
        )
    })
}
