//! `heapdump tosqlite`: the heap as a SQLite database, so questions no
//! command answers are one query away. The schema, its views and the
//! queries people run are documented in `analyze/EXPORTS.md`; a test runs
//! every query there with the `sqlite3` command and checks the answers.
//!
//! The rows are those of [`super::tables`], which the Parquet export
//! writes too. The database file is written directly in SQLite's file
//! format by [`super::sqlite_file`]: tables and indexes as B-trees built
//! bottom-up from rows in key order, the index keys sorted in memory, the
//! schema text exactly as SQLite stores it for [`SCHEMA`], [`INDEXES`] and
//! [`VIEWS`]. SQLite itself then only runs a sampled `ANALYZE` on the
//! file. Through [`super::write_export`], the database is written to a
//! temporary file beside the target and renamed into place, so a failed
//! export never leaves a half-written database under the requested name.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use rusqlite::Connection;

use super::HeapModel;
use super::sqlite_file::DatabaseWriter;
pub use super::tables::{SCHEMA_VERSION, leak_class_name};
use super::tables::{TABLES, TableSource};

/// The tables. Kept byte-for-byte in `analyze/EXPORTS.md` (a test checks),
/// with the columns of [`super::tables::TABLES`] (a test checks that too).
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
    sequence   INTEGER NOT NULL,    -- allocation order, smaller is older; 0 if production mode listed it without a record
    leak_class TEXT NOT NULL,       -- definitely_lost, indirectly_lost, possibly_lost, still_reachable
    retained   INTEGER NOT NULL,    -- bytes freed if this object were freed (its dominator subtree)
    dominator  INTEGER REFERENCES objects(id) DEFERRABLE INITIALLY DEFERRED, -- immediate dominator; NULL: the roots, or unreachable
    stack_weight REAL NOT NULL,     -- blocks this one stands for by site or type: 1; with sampled stacks 1/(1 - exp(-size/S)) if sampled, else 0
    type_topmost INTEGER NOT NULL,  -- 1 if no other object of its type dominates it: sum(retained) of these is the type's retained bytes (top --retained)
    site_topmost INTEGER NOT NULL,  -- the same for its site
    indirect_bytes INTEGER NOT NULL -- definitely lost: bytes of the objects only it holds (indirectly lost; memcheck's loss records); else 0
);
CREATE TABLE roots (
    id        INTEGER PRIMARY KEY,  -- root index in the dump
    kind      TEXT NOT NULL,        -- REGISTERS, THREAD_STACK, STATIC_TLS, DYNAMIC_TLS, DATA_SEGMENT, OTHER, ANONYMOUS_MAPPING
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

/// Indexes (built by the writer from the sorted keys).
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

/// Rows written, per table, and how long it took.
#[derive(Clone, Debug, Default)]
pub struct SqliteSummary {
    /// (table, rows), in the order written.
    pub tables: Vec<(&'static str, u64)>,
    /// Seconds writing the tables' rows and their indexes (index builds
    /// run beside the rows of the next table).
    pub load_seconds: f64,
    /// Seconds for the last index, the schema page and `ANALYZE`.
    pub index_seconds: f64,
}

impl SqliteSummary {
    /// Rows in every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
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
    let ddl = format!("{SCHEMA}{INDEXES}{VIEWS}");
    let mut db = DatabaseWriter::create(path, &ddl).with_context(context)?;
    let mut summary = SqliteSummary::default();
    let source = TableSource { model, dump_name };
    for table in &TABLES {
        // (Its errors name the table.)
        let mut rows = db.table(table.name).with_context(context)?;
        table
            .write_rows(&source, &mut rows)
            .with_context(|| format!("table {}", table.name))
            .with_context(context)?;
        let count = rows
            .finish()
            .with_context(|| format!("table {}", table.name))
            .with_context(context)?;
        summary.tables.push((table.name, count));
    }
    summary.load_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    db.finish().with_context(context)?;
    // The planner's statistics, by SQLite itself: ANALYZE samples each
    // index (enough for the planner's choices, not a full scan of every
    // one). The file is fresh and renamed into place only when complete,
    // so no journal and no fsync are needed.
    let db = Connection::open(path).with_context(context)?;
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
         PRAGMA analysis_limit = 1000; ANALYZE;",
    )
    .with_context(context)?;
    db.close().map_err(|(_, e)| e).with_context(context)?;
    summary.index_seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::tables::ColumnType;

    /// The DDL and the shared table description agree: same tables, same
    /// columns in the same order, SQLite's declared type for each kind, and
    /// NOT NULL where the description says a column is never NULL.
    #[test]
    fn schema_has_the_columns_of_the_shared_tables() {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch(SCHEMA).unwrap();
        let mut names: Vec<String> = db
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY rowid")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut described: Vec<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
        names.sort();
        described.sort();
        assert_eq!(names, described);
        for table in &TABLES {
            let columns: Vec<(String, String, bool, i64)> = db
                .prepare(&format!("PRAGMA table_info({})", table.name))
                .unwrap()
                .query_map([], |row| {
                    Ok((row.get(1)?, row.get(2)?, row.get(3)?, row.get(5)?))
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(columns.len(), table.columns.len(), "{}", table.name);
            for ((name, sql_type, not_null, key), column) in columns.iter().zip(table.columns) {
                assert_eq!(name, column.name, "{}", table.name);
                let expected = match column.ty {
                    ColumnType::Integer | ColumnType::Boolean => "INTEGER",
                    ColumnType::Real => "REAL",
                    ColumnType::Text => "TEXT",
                };
                assert_eq!(sql_type, expected, "{}.{name}", table.name);
                // A key column is never NULL without saying so.
                assert_eq!(
                    *not_null || *key > 0,
                    !column.nullable,
                    "{}.{name}: NOT NULL in one and nullable in the other",
                    table.name
                );
            }
        }
    }
}
