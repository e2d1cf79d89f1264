//! The library behind the `heapdump` command: open a `.hdump`, symbolize
//! its stacks, find allocation sites, and build the reports that the CLI
//! prints as text or JSON. The CLI only parses arguments and calls these.
//!
//! ```no_run
//! use heapdump_analyze::report::{self, GroupBy, TopOptions};
//! use heapdump_analyze::symbolize::{SymbolizeOptions, Symbolizer};
//!
//! let dump = heapdump_analyze::open_dump("app.hdump".as_ref())?;
//! let view = dump.view();
//! let mut symbolizer = Symbolizer::new(&view, &SymbolizeOptions::default())?;
//! let options = TopOptions { by: GroupBy::Site, limit: 10 };
//! let top = report::top(&view, &mut symbolizer, &options, &indicatif::ProgressBar::hidden(), &mut Vec::new());
//! print!("{}", top.to_text());
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Modules, lowest layer first (nothing points upward):
//!
//! - Names: [`symbolize`] (return addresses to inlined, demangled frames,
//!   the main executable checked against the dump's build-id), [`site`]
//!   (which frame of a stack is the allocation site), [`types`] (what an
//!   allocation holds, from its constructor frames), [`fields`] (field
//!   names and generic instances from the program's DWARF), [`sampling`]
//!   (the weights of blocks in a production-mode dump), [`filter`] (what
//!   `--site` and `--type` accept).
//! - Graph: [`graph`] (the heap graph as CSR, with its pointer
//!   heuristics' edges).
//! - Analysis: [`leaks`] (memcheck's leak classes and the Rust
//!   heuristics), [`dominators`] (dominator tree, retained sizes),
//!   [`paths`] (shortest paths from roots), [`dominator_levels`] (the
//!   tree a level at a time, for browsing).
//! - Reports and exports: [`report`] (`info`, `verify`, `top`),
//!   [`heap_report`] (`leaks`, `top --retained`, `retainers`, `diff`),
//!   [`export`] (DOT, SQLite, HPROF, flame graph, pprof and Chrome heap
//!   snapshot over one model).

use std::path::Path;

use heapdump_formats::read::Dump;

pub mod dominator_levels;
pub mod dominators;
pub mod export;
pub mod fields;
pub mod filter;
pub mod graph;
pub mod heap_report;
pub mod leaks;
pub mod paths;
mod prefetch;
pub mod report;
pub mod sampling;
pub mod site;
pub mod symbolize;
pub mod types;

/// Opens and validates a dump. The error names the file and, for a corrupt
/// dump, the section and byte offset.
pub fn open_dump(path: &Path) -> anyhow::Result<Dump> {
    // ReadError's message includes its cause and has no `source()`, so the
    // anyhow chain prints the cause once.
    Ok(Dump::open(path)?)
}
