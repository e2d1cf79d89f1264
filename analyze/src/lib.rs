//! The library behind the `heapdump` command: open a `.hdump`, symbolize
//! its stacks, find allocation sites, and build the reports that the CLI
//! prints as text or JSON. The CLI only parses arguments and calls these.
//!
//! ```no_run
//! use heapdump_analyze::report::top::{GroupBy, TopOptions, TopReport};
//! use heapdump_analyze::site::OwnCode;
//! use heapdump_analyze::stacks::{Namer, Types};
//! use heapdump_analyze::symbolize::SymbolizeOptions;
//!
//! let path = std::path::Path::new("app.hdump");
//! let dump = heapdump_analyze::open_dump(path)?;
//! let view = dump.view();
//! let mut namer = Namer::new(&view, path, SymbolizeOptions::default(), Types::Skip, OwnCode::default())?;
//! let options = TopOptions { by: GroupBy::Site, limit: 10 };
//! let top = TopReport::build(&view, &mut namer.frames(), &options, &indicatif::ProgressBar::hidden());
//! print!("{top}"); // what `heapdump top -n 10` prints; serde_json gives its --json
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Modules, lowest layer first (each uses only modules of the layers
//! before it, and of its own layer those listed before it):
//!
//! - Names: [`text`] (byte counts, addresses, timestamps and the dump's
//!   strings as the reports print them), [`symbolize`] (return addresses
//!   to inlined, demangled frames, the main executable checked against the
//!   dump's build-id), [`site`] (which frame of a stack is the allocation
//!   site, and which code is the program's own), [`types`] (what an
//!   allocation holds, from its constructor frames), [`fields`] (field
//!   names and generic instances from the program's DWARF), [`stacks`]
//!   (the [`stacks::StackFrames`] source of names, [`stacks::Namer`], and
//!   the per-stack cache the reports share), [`sampling`] (the weights of
//!   blocks in a production-mode dump), [`filter`] (what `--site` and
//!   `--type` accept).
//! - Graph: [`heuristics`] (which interior pointers count as start
//!   pointers), [`graph`] (the heap graph as CSR, its edges marked by the
//!   heuristics).
//! - Analysis: [`leaks`] (memcheck's leak classes), [`dominators`]
//!   (dominator tree, retained sizes), [`paths`] (shortest paths from
//!   roots), [`analysis`] ([`analysis::HeapAnalysis`]: the graph, classes
//!   and dominators of one dump, built once).
//! - Reports and exports: [`report`] (one module per command: `info`,
//!   `verify`, `top`, `leaks`, `top --retained`, `retainers`, `diff`, each a
//!   `Serialize + Display` struct), [`dominator_levels`] (the dominator
//!   tree a level at a time, for browsing), [`export`] (DOT, SQLite, HPROF, flame
//!   graph, pprof, Chrome heap snapshot and Parquet over one model).

use std::path::Path;

use heapdump_formats::read::Dump;

pub mod analysis;
pub mod dominator_levels;
pub mod dominators;
pub mod export;
pub mod fields;
pub mod filter;
pub mod graph;
pub mod heuristics;
pub mod leaks;
pub mod paths;
mod prefetch;
pub mod report;
pub mod sampling;
pub mod site;
pub mod stacks;
pub mod symbolize;
pub mod text;
pub mod types;

/// Opens and validates a dump. The error names the file and, for a corrupt
/// dump, the section and byte offset.
pub fn open_dump(path: &Path) -> anyhow::Result<Dump> {
    // ReadError's message includes its cause and has no `source()`, so the
    // anyhow chain prints the cause once.
    Ok(Dump::open(path)?)
}
