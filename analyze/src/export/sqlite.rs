//! `heapdump tosqlite`: the heap as a SQLite database, so questions no
//! command answers are one query away. The schema, its views and the
//! queries people run are documented in `analyze/EXPORTS.md`; a test runs
//! every query there with the `sqlite3` command and checks the answers.
//!
//! The load is one transaction with one prepared statement per table, and
//! indexes are created after the rows are in (building an index once is
//! cheaper than updating it a million times). Through
//! [`super::write_export`], the database is written to a temporary file
//! beside the target and renamed into place, so a failed export never
//! leaves a half-written database under the requested name.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use heapdump_formats::records::{UNKNOWN_THREAD, owner_kind, stack_flags, thread_flags};
use rusqlite::{Connection, params};

use super::{HeapModel, root_kind_name};
use crate::leaks::LeakClass;
use crate::sampling::StackSampling;
use crate::symbolize::hex;

/// Version of the schema below; stored in `meta` as `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

/// The tables. Kept byte-for-byte in `analyze/EXPORTS.md` (a test checks).
pub const SCHEMA: &str = "\
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT
) WITHOUT ROWID;
CREATE TABLE threads (
    id         INTEGER PRIMARY KEY, -- thread index in the dump
    tid        INTEGER NOT NULL,    -- kernel thread id
    name       TEXT,
    alive      INTEGER NOT NULL,    -- 1 if alive at the snapshot
    main       INTEGER NOT NULL,    -- 1 for the main thread
    live_count INTEGER NOT NULL     -- live allocations it made
);
CREATE TABLE modules (
    id            INTEGER PRIMARY KEY, -- module index in the dump
    path          TEXT NOT NULL,
    build_id      TEXT NOT NULL,       -- hex; empty if none
    load_bias     INTEGER NOT NULL,
    start_address INTEGER NOT NULL,
    end_address   INTEGER NOT NULL,
    main          INTEGER NOT NULL     -- 1 for the main executable
);
CREATE TABLE types (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL,    -- 'Vec<u8> buffer', 'app::Node', 'alloc@app::f:12'
    recovered INTEGER NOT NULL  -- 1 if read from a constructor frame, 0 if named after the site
);
CREATE TABLE sites (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL, -- 'function:line'
    function     TEXT NOT NULL,
    file         TEXT,
    line         INTEGER,
    inlined_into TEXT
);
CREATE TABLE frames (
    id            INTEGER PRIMARY KEY,
    pc            INTEGER NOT NULL, -- return address as recorded
    function      TEXT,
    file          TEXT,
    line          INTEGER,
    inlined       INTEGER NOT NULL, -- 1 if inlined into the next frame
    module        TEXT,
    module_offset INTEGER
);
CREATE TABLE stacks (
    id        INTEGER PRIMARY KEY,  -- stack id in the dump; 0 = unknown
    type_id   INTEGER NOT NULL REFERENCES types(id),
    site_id   INTEGER NOT NULL REFERENCES sites(id),
    truncated INTEGER NOT NULL      -- 1 if the walk hit the frame limit
);
CREATE TABLE stack_frames (
    stack_id INTEGER NOT NULL REFERENCES stacks(id),
    position INTEGER NOT NULL,      -- 0 = innermost, inlined frames counted
    frame_id INTEGER NOT NULL REFERENCES frames(id),
    PRIMARY KEY (stack_id, position)
) WITHOUT ROWID;
CREATE TABLE objects (
    id         INTEGER PRIMARY KEY, -- allocation index in the dump (address order)
    address    INTEGER NOT NULL,
    size       INTEGER NOT NULL,
    type_id    INTEGER NOT NULL REFERENCES types(id),
    site_id    INTEGER NOT NULL REFERENCES sites(id),
    stack_id   INTEGER NOT NULL REFERENCES stacks(id),
    thread_id  INTEGER REFERENCES threads(id), -- NULL if unknown
    sequence   INTEGER NOT NULL,    -- allocation order, smaller is older
    leak_class TEXT NOT NULL,       -- definitely_lost, indirectly_lost, possibly_lost, still_reachable
    retained   INTEGER NOT NULL,    -- bytes freed if this object were freed (its dominator subtree)
    dominator  INTEGER REFERENCES objects(id) DEFERRABLE INITIALLY DEFERRED, -- immediate dominator; NULL: the roots, or unreachable
    stack_weight REAL NOT NULL      -- blocks this one stands for by site or type: 1; with sampled stacks 1/(1 - exp(-size/S)) if sampled, else 0
);
CREATE TABLE roots (
    id        INTEGER PRIMARY KEY,  -- root index in the dump
    kind      TEXT NOT NULL,        -- REGISTERS, THREAD_STACK, STATIC_TLS, DYNAMIC_TLS, DATA_SEGMENT, OTHER
    name      TEXT NOT NULL,        -- kind and owner, as todot labels it
    thread_id INTEGER REFERENCES threads(id),
    module_id INTEGER REFERENCES modules(id),
    address   INTEGER NOT NULL,
    size      INTEGER NOT NULL
);
CREATE TABLE edges (                -- a pointer from one object into another
    source        INTEGER NOT NULL REFERENCES objects(id),
    target        INTEGER NOT NULL REFERENCES objects(id),
    source_offset INTEGER NOT NULL, -- where the pointer is in the source
    target_offset INTEGER NOT NULL, -- where it points in the target; 0 = the start
    field         TEXT              -- the source's field ('next', '[3].next'); needs debug = 2
);
CREATE TABLE root_edges (           -- a pointer from a root into an object
    root_id       INTEGER NOT NULL REFERENCES roots(id),
    target        INTEGER NOT NULL REFERENCES objects(id),
    source_offset INTEGER NOT NULL,
    target_offset INTEGER NOT NULL
);
";

/// Indexes, created after the load.
pub const INDEXES: &str = "\
CREATE INDEX objects_address ON objects(address);
CREATE INDEX objects_type ON objects(type_id);
CREATE INDEX objects_site ON objects(site_id);
CREATE INDEX edges_source ON edges(source);
CREATE INDEX edges_target ON edges(target);
CREATE INDEX root_edges_target ON root_edges(target);
";

/// Views for the common questions.
pub const VIEWS: &str = "\
CREATE VIEW object_info AS
    SELECT o.id, printf('0x%x', o.address) AS address, o.size, t.name AS type,
           s.name AS site, o.leak_class, o.thread_id
    FROM objects AS o
    JOIN types AS t ON t.id = o.type_id
    JOIN sites AS s ON s.id = o.site_id;
CREATE VIEW top_sites AS
    SELECT s.name AS site, CAST(round(sum(o.stack_weight)) AS INTEGER) AS objects,
           CAST(round(sum(o.size * o.stack_weight)) AS INTEGER) AS bytes
    FROM objects AS o JOIN sites AS s ON s.id = o.site_id
    WHERE o.stack_weight > 0
    GROUP BY s.id ORDER BY bytes DESC, site;
CREATE VIEW top_types AS
    SELECT t.name AS type, CAST(round(sum(o.stack_weight)) AS INTEGER) AS objects,
           CAST(round(sum(o.size * o.stack_weight)) AS INTEGER) AS bytes
    FROM objects AS o JOIN types AS t ON t.id = o.type_id
    WHERE o.stack_weight > 0
    GROUP BY t.id ORDER BY bytes DESC, type;
CREATE VIEW incoming AS
    SELECT 'object' AS source_kind, e.source AS source_id, t.name AS source_name,
           e.target, e.source_offset, e.target_offset
    FROM edges AS e
    JOIN objects AS o ON o.id = e.source
    JOIN types AS t ON t.id = o.type_id
    UNION ALL
    SELECT 'root', re.root_id, r.name, re.target, re.source_offset, re.target_offset
    FROM root_edges AS re JOIN roots AS r ON r.id = re.root_id;
CREATE VIEW leak_summary AS
    SELECT leak_class, count(*) AS objects, sum(size) AS bytes
    FROM objects GROUP BY leak_class ORDER BY leak_class;
";

/// Rows written, per table, and how long the load took.
#[derive(Clone, Debug, Default)]
pub struct SqliteSummary {
    /// (table, rows), in load order.
    pub tables: Vec<(&'static str, u64)>,
    /// Seconds from opening the database to the committed load (rows only).
    pub load_seconds: f64,
    /// Seconds creating indexes and views, and closing.
    pub index_seconds: f64,
}

impl SqliteSummary {
    /// Rows in every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

/// The name `objects.leak_class` uses.
pub fn leak_class_name(class: LeakClass) -> &'static str {
    match class {
        LeakClass::DefinitelyLost => "definitely_lost",
        LeakClass::IndirectlyLost => "indirectly_lost",
        LeakClass::PossiblyLost => "possibly_lost",
        LeakClass::StillReachable => "still_reachable",
    }
}

/// SQLite integers are signed 64-bit; user-space addresses fit, and
/// anything above `i64::MAX` keeps its bits (reads back negative).
fn int(value: u64) -> i64 {
    value as i64
}

/// Options of the SQLite export.
#[derive(Clone, Debug, Default)]
pub struct SqliteOptions {
    /// The dump's name as `meta.dump_file` records it.
    pub dump_name: String,
}

impl super::Export for SqliteOptions {
    type Summary = SqliteSummary;

    fn name(&self) -> &'static str {
        "SQLite database"
    }

    fn file_name(&self) -> &'static str {
        "FILE.db"
    }

    fn kind(&self) -> super::OutputKind {
        super::OutputKind::FileOnly
    }

    fn needs_graph(&self) -> bool {
        true
    }

    fn write(&self, model: &HeapModel<'_>, out: &mut super::Output) -> Result<SqliteSummary> {
        let path = out
            .file_path()
            .context("a SQLite database is written to a file")?;
        write_sqlite(model, path, &self.dump_name)
    }
}

/// Writes the database for `model` to `path`, replacing a file there;
/// `dump_name` is recorded in `meta`. Written in place: through
/// [`super::write_export`] it goes to a temporary file beside the target,
/// moved into place when complete.
pub fn write_sqlite(model: &HeapModel<'_>, path: &Path, dump_name: &str) -> Result<SqliteSummary> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot replace {}", path.display()));
        }
        _ => {}
    }
    load(model, path, dump_name)
}

fn load(model: &HeapModel<'_>, path: &Path, dump_name: &str) -> Result<SqliteSummary> {
    let context = || format!("cannot write the database {}", path.display());
    let start = Instant::now();
    let mut db = Connection::open(path).with_context(context)?;
    // A fresh file that is renamed into place only when complete: no
    // journal and no fsync are needed while loading it.
    // A large page cache keeps the B-trees of the big tables in memory
    // while they grow, and again while their indexes are built.
    // Foreign keys are not enforced while loading (two index probes per
    // edge row otherwise, a third of the load time); the rows come from one
    // consistent model, and the tests run `PRAGMA foreign_key_check` on the
    // result.
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA locking_mode = EXCLUSIVE; PRAGMA cache_size = -262144; \
         PRAGMA temp_store = MEMORY; PRAGMA foreign_keys = OFF;",
    )
    .with_context(context)?;
    db.execute_batch(SCHEMA).with_context(context)?;
    let mut summary = SqliteSummary::default();
    let tx = db.transaction().with_context(context)?;
    load_rows(model, &tx, dump_name, &mut summary).with_context(context)?;
    tx.commit().with_context(context)?;
    summary.load_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    db.execute_batch(INDEXES).with_context(context)?;
    db.execute_batch(VIEWS).with_context(context)?;
    db.execute_batch("ANALYZE;").with_context(context)?;
    db.close().map_err(|(_, e)| e).with_context(context)?;
    summary.index_seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

fn load_rows(
    model: &HeapModel<'_>,
    tx: &rusqlite::Transaction<'_>,
    dump_name: &str,
    summary: &mut SqliteSummary,
) -> rusqlite::Result<()> {
    let view = model.view();
    let process = view.process();
    let (typed, total) = model.typed_bytes();
    let (major, minor) = view.version();
    let lossy = |s| {
        view.string_lossy(s)
            .map(|s| s.into_owned())
            .unwrap_or_default()
    };
    {
        let mut insert = tx.prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")?;
        let meta: [(&str, String); 13] = [
            ("schema_version", SCHEMA_VERSION.to_string()),
            ("heapdump_version", env!("CARGO_PKG_VERSION").to_owned()),
            ("dump_file", dump_name.to_owned()),
            ("format_version", format!("{major}.{minor}")),
            ("pid", process.pid.to_string()),
            ("exe", lossy(process.exe)),
            ("timestamp_ns", process.timestamp_ns.to_string()),
            ("pointer_size", process.pointer_size.to_string()),
            ("live_bytes", total.to_string()),
            ("live_count", model.node_count().to_string()),
            ("typed_bytes", typed.to_string()),
            (
                "stack_sample_interval",
                process.stack_sample_interval.to_string(),
            ),
            ("skipped_edges", model.skipped_edges().to_string()),
        ];
        for (key, value) in &meta {
            insert.execute(params![key, value])?;
        }
        summary.tables.push(("meta", meta.len() as u64));
    }
    {
        let mut insert = tx.prepare(
            "INSERT INTO threads (id, tid, name, alive, main, live_count) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let threads = view.threads();
        for (i, t) in threads.iter().enumerate() {
            let name = lossy(t.name);
            insert.execute(params![
                i as i64,
                t.tid,
                (!name.is_empty()).then_some(name),
                t.flags & thread_flags::ALIVE != 0,
                t.flags & thread_flags::MAIN != 0,
                int(t.live_count),
            ])?;
        }
        summary.tables.push(("threads", threads.len() as u64));
    }
    {
        let mut insert = tx.prepare(
            "INSERT INTO modules (id, path, build_id, load_bias, start_address, end_address, main) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let modules = view.modules();
        for (i, m) in modules.iter().enumerate() {
            let build_id = view.string(m.build_id).map(hex).unwrap_or_default();
            insert.execute(params![
                i as i64,
                lossy(m.path),
                build_id,
                int(m.load_bias),
                int(m.start),
                int(m.end),
                m.flags & heapdump_formats::records::module_flags::MAIN_EXECUTABLE != 0,
            ])?;
        }
        summary.tables.push(("modules", modules.len() as u64));
    }
    {
        let mut insert =
            tx.prepare("INSERT INTO types (id, name, recovered) VALUES (?1, ?2, ?3)")?;
        for (i, t) in model.types.iter().enumerate() {
            insert.execute(params![i as i64, t.label, t.recovered])?;
        }
        summary.tables.push(("types", model.types.len() as u64));
    }
    {
        let mut insert = tx.prepare(
            "INSERT INTO sites (id, name, function, file, line, inlined_into) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (i, s) in model.sites.iter().enumerate() {
            insert.execute(params![
                i as i64,
                s.label,
                s.site.function,
                s.site.file,
                s.site.line,
                s.site.inlined_into,
            ])?;
        }
        summary.tables.push(("sites", model.sites.len() as u64));
    }
    load_stacks(model, tx, summary)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO objects (id, address, size, type_id, site_id, stack_id, thread_id, sequence, leak_class, retained, dominator, stack_weight) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let allocations = view.allocations();
        let sampling = StackSampling::of(view);
        for (i, a) in allocations.iter().enumerate() {
            let node = i as u32;
            insert.execute(params![
                i as i64,
                int(a.address),
                int(a.size),
                model.alloc_type[i],
                model.alloc_site[i],
                a.stack,
                (a.thread != UNKNOWN_THREAD && (a.thread as usize) < view.threads().len())
                    .then_some(a.thread),
                int(a.sequence),
                leak_class_name(model.leak_class(node)),
                int(model.retained(node)),
                model.dominator(node),
                sampling.weight(&a),
            ])?;
        }
        summary.tables.push(("objects", allocations.len() as u64));
    }
    {
        let mut insert = tx.prepare(
            "INSERT INTO roots (id, kind, name, thread_id, module_id, address, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let roots = view.roots();
        for (i, r) in roots.iter().enumerate() {
            let thread = (r.owner_kind == owner_kind::THREAD
                && (r.owner as usize) < view.threads().len())
            .then_some(r.owner);
            let module = (r.owner_kind == owner_kind::MODULE
                && (r.owner as usize) < view.modules().len())
            .then_some(r.owner);
            insert.execute(params![
                i as i64,
                root_kind_name(r.kind),
                model.root_label(&r),
                thread,
                module,
                int(r.address),
                int(r.size),
            ])?;
        }
        summary.tables.push(("roots", roots.len() as u64));
    }
    {
        let mut insert = tx.prepare(
            "INSERT INTO edges (source, target, source_offset, target_offset, field) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut count = 0u64;
        for e in model.allocation_edges() {
            insert.execute(params![
                e.source,
                e.target,
                int(e.source_offset),
                int(e.target_offset),
                model.field_label(e.source, e.source_offset),
            ])?;
            count += 1;
        }
        summary.tables.push(("edges", count));
    }
    {
        let mut insert = tx.prepare(
            "INSERT INTO root_edges (root_id, target, source_offset, target_offset) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut count = 0u64;
        for e in model.root_edges() {
            insert.execute(params![
                e.source,
                e.target,
                int(e.source_offset),
                int(e.target_offset)
            ])?;
            count += 1;
        }
        summary.tables.push(("root_edges", count));
    }
    Ok(())
}

/// `stacks`, `frames` and `stack_frames`.
fn load_stacks(
    model: &HeapModel<'_>,
    tx: &rusqlite::Transaction<'_>,
    summary: &mut SqliteSummary,
) -> rusqlite::Result<()> {
    let view = model.view();
    let mut stack_ids: Vec<(u32, (u32, u32))> = model
        .stack_names
        .iter()
        .map(|(&s, &ids)| (s, ids))
        .collect();
    stack_ids.sort_unstable();
    let mut insert_stack =
        tx.prepare("INSERT INTO stacks (id, type_id, site_id, truncated) VALUES (?1, ?2, ?3, ?4)")?;
    let mut insert_frame = tx.prepare(
        "INSERT INTO frames (id, pc, function, file, line, inlined, module, module_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut insert_link =
        tx.prepare("INSERT INTO stack_frames (stack_id, position, frame_id) VALUES (?1, ?2, ?3)")?;
    for (id, frame) in model.frames().iter().enumerate() {
        insert_frame.execute(params![
            id as i64,
            int(frame.pc),
            frame.function,
            frame.file,
            frame.line,
            frame.inlined,
            frame.module,
            frame.module_offset.map(int),
        ])?;
    }
    let (mut stack_rows, mut link_rows) = (0u64, 0u64);
    for &(stack, (type_id, site_id)) in &stack_ids {
        let truncated = view
            .stacks()
            .get(stack as usize)
            .is_some_and(|s| s.flags & stack_flags::TRUNCATED != 0);
        insert_stack.execute(params![stack, type_id, site_id, truncated])?;
        stack_rows += 1;
        for (position, &frame_id) in model.stack_frames(stack).iter().enumerate() {
            insert_link.execute(params![stack, position as i64, frame_id])?;
            link_rows += 1;
        }
    }
    summary.tables.push(("stacks", stack_rows));
    summary.tables.push(("frames", model.frames().len() as u64));
    summary.tables.push(("stack_frames", link_rows));
    Ok(())
}
