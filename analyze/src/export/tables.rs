//! The tables of the relational exports, described once: SQLite
//! (`tosqlite`, [`super::sqlite`]) and Parquet (`toparquet`,
//! [`super::parquet`]) write the same columns from the same rows. A table
//! is its name, its columns (name, type, whether it may be NULL) and the
//! function that produces its rows from a [`HeapModel`]; each export turns
//! [`Column`]s into its own types and writes the rows a [`RowSink`] gets.
//!
//! SQLite's DDL (`sqlite::SCHEMA`, with its keys, references and
//! comments) is kept as the documentation shows it; a test checks that
//! its columns are these, in this order.

use anyhow::Result;
use heapdump_formats::records::{
    UNKNOWN_THREAD, module_flags, owner_kind, stack_flags, thread_flags,
};

use super::{HeapModel, root_kind_name};
use crate::leaks::LeakClass;
use crate::sampling::StackSampling;
use crate::symbolize::hex;

/// Version of the tables; `meta.schema_version`. 2 added
/// `objects.type_topmost`, `objects.site_topmost` and
/// `objects.indirect_bytes`.
pub const SCHEMA_VERSION: u32 = 2;

/// What a column holds. SQLite stores [`ColumnType::Boolean`] as an
/// INTEGER 0 or 1; Parquet as BOOLEAN. Integers are signed 64-bit in both
/// (an address above `i64::MAX` keeps its bits and reads back negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Signed 64-bit integer.
    Integer,
    /// 64-bit float.
    Real,
    /// UTF-8 text.
    Text,
    /// True or false.
    Boolean,
}

/// One column of a [`Table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: &'static str,
    /// What it holds.
    pub ty: ColumnType,
    /// Whether a row may have no value (NULL).
    pub nullable: bool,
}

/// A column that always has a value.
pub const fn required(name: &'static str, ty: ColumnType) -> Column {
    Column {
        name,
        ty,
        nullable: false,
    }
}

/// A column that may be NULL.
pub const fn optional(name: &'static str, ty: ColumnType) -> Column {
    Column {
        name,
        ty,
        nullable: true,
    }
}

use ColumnType::{Boolean, Integer, Real, Text};

/// A value of one row's column, as a [`RowSink`] gets it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// An [`ColumnType::Integer`].
    Integer(i64),
    /// A [`ColumnType::Real`].
    Real(f64),
    /// A [`ColumnType::Text`].
    Text(&'a str),
    /// A [`ColumnType::Boolean`].
    Boolean(bool),
    /// No value, in a nullable column.
    Null,
}

impl Value<'_> {
    /// An integer column's value from an unsigned one, keeping its bits.
    pub fn bits(value: u64) -> Value<'static> {
        Value::Integer(value as i64)
    }

    fn maybe(value: Option<u32>) -> Value<'static> {
        value.map_or(Value::Null, |v| Value::Integer(v.into()))
    }
}

impl<'a> Value<'a> {
    fn maybe_text(value: Option<&'a str>) -> Value<'a> {
        value.map_or(Value::Null, Value::Text)
    }
}

/// Where a table's rows go: one call per row, values in column order.
pub trait RowSink {
    /// Takes one row.
    fn row(&mut self, values: &[Value<'_>]) -> Result<()>;
}

/// What the rows are made from: the model, and the dump's name for `meta`.
#[derive(Clone, Copy, Debug)]
pub struct TableSource<'m, 'a> {
    /// The analyzed heap (with its graph).
    pub model: &'m HeapModel<'a>,
    /// The dump as `meta.dump_file` names it.
    pub dump_name: &'m str,
}

/// What makes a table's rows: gives each to the sink, returns how many.
pub type Producer = fn(&TableSource<'_, '_>, &mut dyn RowSink) -> Result<u64>;

/// One table: name, columns and rows.
#[derive(Clone, Copy)]
pub struct Table {
    /// Its name.
    pub name: &'static str,
    /// Its columns, in order.
    pub columns: &'static [Column],
    rows: Producer,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("columns", &self.columns)
            .finish_non_exhaustive()
    }
}

impl Table {
    /// A table named `name` with `columns`, whose rows `rows` makes.
    pub const fn new(name: &'static str, columns: &'static [Column], rows: Producer) -> Table {
        Table {
            name,
            columns,
            rows,
        }
    }

    /// Gives every row of the table to `sink`, in id order; returns how
    /// many. Each row has a value per column, of the column's type or
    /// NULL where it is nullable.
    pub fn write_rows(&self, source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
        (self.rows)(source, sink)
    }
}

/// The tables both exports write, in the order they are written.
pub const TABLES: [Table; 12] = [
    META,
    THREADS,
    MODULES,
    TYPES,
    SITES,
    FRAMES,
    STACKS,
    STACK_FRAMES,
    OBJECTS,
    ROOTS,
    EDGES,
    ROOT_EDGES,
];

/// `meta`: key and value of what the dump says about itself.
pub const META: Table = Table {
    name: "meta",
    columns: &[required("key", Text), optional("value", Text)],
    rows: meta_rows,
};

/// `threads`.
pub const THREADS: Table = Table {
    name: "threads",
    columns: &[
        required("id", Integer),
        required("tid", Integer),
        optional("name", Text),
        required("alive", Boolean),
        required("main", Boolean),
        required("live_count", Integer),
    ],
    rows: thread_rows,
};

/// `modules`.
pub const MODULES: Table = Table {
    name: "modules",
    columns: &[
        required("id", Integer),
        required("path", Text),
        required("build_id", Text),
        required("load_bias", Integer),
        required("start_address", Integer),
        required("end_address", Integer),
        required("main", Boolean),
    ],
    rows: module_rows,
};

/// `types`.
pub const TYPES: Table = Table {
    name: "types",
    columns: &[
        required("id", Integer),
        required("name", Text),
        required("recovered", Boolean),
    ],
    rows: type_rows,
};

/// `sites`.
pub const SITES: Table = Table {
    name: "sites",
    columns: &[
        required("id", Integer),
        required("name", Text),
        required("function", Text),
        optional("file", Text),
        optional("line", Integer),
        optional("inlined_into", Text),
    ],
    rows: site_rows,
};

/// `frames`.
pub const FRAMES: Table = Table {
    name: "frames",
    columns: &[
        required("id", Integer),
        required("pc", Integer),
        optional("function", Text),
        optional("file", Text),
        optional("line", Integer),
        required("inlined", Boolean),
        optional("module", Text),
        optional("module_offset", Integer),
    ],
    rows: frame_rows,
};

/// `stacks`.
pub const STACKS: Table = Table {
    name: "stacks",
    columns: &[
        required("id", Integer),
        required("type_id", Integer),
        required("site_id", Integer),
        required("truncated", Boolean),
    ],
    rows: stack_rows,
};

/// `stack_frames`.
pub const STACK_FRAMES: Table = Table {
    name: "stack_frames",
    columns: &[
        required("stack_id", Integer),
        required("position", Integer),
        required("frame_id", Integer),
    ],
    rows: stack_frame_rows,
};

/// `objects`: one row per allocation.
pub const OBJECTS: Table = Table {
    name: "objects",
    columns: &[
        required("id", Integer),
        required("address", Integer),
        required("size", Integer),
        required("type_id", Integer),
        required("site_id", Integer),
        required("stack_id", Integer),
        optional("thread_id", Integer),
        required("sequence", Integer),
        required("leak_class", Text),
        required("retained", Integer),
        optional("dominator", Integer),
        required("stack_weight", Real),
        required("type_topmost", Boolean),
        required("site_topmost", Boolean),
        required("indirect_bytes", Integer),
    ],
    rows: object_rows,
};

/// `roots`.
pub const ROOTS: Table = Table {
    name: "roots",
    columns: &[
        required("id", Integer),
        required("kind", Text),
        required("name", Text),
        optional("thread_id", Integer),
        optional("module_id", Integer),
        required("address", Integer),
        required("size", Integer),
    ],
    rows: root_rows,
};

/// `edges`: a pointer from one object into another.
pub const EDGES: Table = Table {
    name: "edges",
    columns: &[
        required("source", Integer),
        required("target", Integer),
        required("source_offset", Integer),
        required("target_offset", Integer),
        optional("field", Text),
    ],
    rows: edge_rows,
};

/// `root_edges`: a pointer from a root into an object.
pub const ROOT_EDGES: Table = Table {
    name: "root_edges",
    columns: &[
        required("root_id", Integer),
        required("target", Integer),
        required("source_offset", Integer),
        required("target_offset", Integer),
    ],
    rows: root_edge_rows,
};

/// The name `objects.leak_class` uses.
pub fn leak_class_name(class: LeakClass) -> &'static str {
    match class {
        LeakClass::DefinitelyLost => "definitely_lost",
        LeakClass::IndirectlyLost => "indirectly_lost",
        LeakClass::PossiblyLost => "possibly_lost",
        LeakClass::StillReachable => "still_reachable",
    }
}

fn lossy(source: &TableSource<'_, '_>, string: heapdump_formats::records::StrRef) -> String {
    source
        .model
        .view()
        .string_lossy(string)
        .map(|s| s.into_owned())
        .unwrap_or_default()
}

/// `meta`'s keys and values.
pub fn meta_entries(source: &TableSource<'_, '_>) -> Vec<(&'static str, String)> {
    let model = source.model;
    let view = model.view();
    let process = view.process();
    let (typed, total) = model.typed_bytes();
    let (major, minor) = view.version();
    vec![
        ("schema_version", SCHEMA_VERSION.to_string()),
        ("heapdump_version", env!("CARGO_PKG_VERSION").to_owned()),
        ("dump_file", source.dump_name.to_owned()),
        ("format_version", format!("{major}.{minor}")),
        ("pid", process.pid.to_string()),
        ("exe", lossy(source, process.exe)),
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
    ]
}

fn meta_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let entries = meta_entries(source);
    for (key, value) in &entries {
        sink.row(&[Value::Text(key), Value::Text(value)])?;
    }
    Ok(entries.len() as u64)
}

fn thread_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let threads = source.model.view().threads();
    for (i, t) in threads.iter().enumerate() {
        let name = lossy(source, t.name);
        sink.row(&[
            Value::Integer(i as i64),
            Value::Integer(t.tid.into()),
            Value::maybe_text((!name.is_empty()).then_some(name.as_str())),
            Value::Boolean(t.flags & thread_flags::ALIVE != 0),
            Value::Boolean(t.flags & thread_flags::MAIN != 0),
            Value::bits(t.live_count),
        ])?;
    }
    Ok(threads.len() as u64)
}

fn module_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let view = source.model.view();
    let modules = view.modules();
    for (i, m) in modules.iter().enumerate() {
        let build_id = view.string(m.build_id).map(hex).unwrap_or_default();
        sink.row(&[
            Value::Integer(i as i64),
            Value::Text(&lossy(source, m.path)),
            Value::Text(&build_id),
            Value::bits(m.load_bias),
            Value::bits(m.start),
            Value::bits(m.end),
            Value::Boolean(m.flags & module_flags::MAIN_EXECUTABLE != 0),
        ])?;
    }
    Ok(modules.len() as u64)
}

fn type_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let types = &source.model.types;
    for (i, t) in types.iter().enumerate() {
        sink.row(&[
            Value::Integer(i as i64),
            Value::Text(&t.label),
            Value::Boolean(t.recovered),
        ])?;
    }
    Ok(types.len() as u64)
}

fn site_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let sites = &source.model.sites;
    for (i, s) in sites.iter().enumerate() {
        sink.row(&[
            Value::Integer(i as i64),
            Value::Text(&s.label),
            Value::Text(&s.site.function),
            Value::maybe_text(s.site.file.as_deref()),
            Value::maybe(s.site.line),
            Value::maybe_text(s.site.inlined_into.as_deref()),
        ])?;
    }
    Ok(sites.len() as u64)
}

fn frame_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let frames = source.model.frames();
    for (id, frame) in frames.iter().enumerate() {
        sink.row(&[
            Value::Integer(id as i64),
            Value::bits(frame.pc),
            Value::maybe_text(frame.function.as_deref()),
            Value::maybe_text(frame.file.as_deref()),
            Value::maybe(frame.line),
            Value::Boolean(frame.inlined),
            Value::maybe_text(frame.module.as_deref()),
            frame.module_offset.map_or(Value::Null, Value::bits),
        ])?;
    }
    Ok(frames.len() as u64)
}

/// The stack ids some allocation uses, in id order, with their type and
/// site ids.
fn used_stacks(model: &HeapModel<'_>) -> Vec<(u32, (u32, u32))> {
    let mut stacks: Vec<(u32, (u32, u32))> = model
        .stack_names
        .iter()
        .map(|(&s, &ids)| (s, ids))
        .collect();
    stacks.sort_unstable();
    stacks
}

fn stack_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let view = source.model.view();
    let stacks = used_stacks(source.model);
    for &(stack, (type_id, site_id)) in &stacks {
        let truncated = view
            .stacks()
            .get(stack as usize)
            .is_some_and(|s| s.flags & stack_flags::TRUNCATED != 0);
        sink.row(&[
            Value::Integer(stack.into()),
            Value::Integer(type_id.into()),
            Value::Integer(site_id.into()),
            Value::Boolean(truncated),
        ])?;
    }
    Ok(stacks.len() as u64)
}

fn stack_frame_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let mut rows = 0u64;
    for (stack, _) in used_stacks(source.model) {
        for (position, &frame_id) in source.model.stack_frames(stack).iter().enumerate() {
            sink.row(&[
                Value::Integer(stack.into()),
                Value::Integer(position as i64),
                Value::Integer(frame_id.into()),
            ])?;
            rows += 1;
        }
    }
    Ok(rows)
}

fn object_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let model = source.model;
    let view = model.view();
    let allocations = view.allocations();
    let sampling = StackSampling::of(view);
    let threads = view.threads().len();
    let [type_topmost, site_topmost] = model.topmost_of_types_and_sites();
    for (i, a) in allocations.iter().enumerate() {
        let node = i as u32;
        let thread =
            (a.thread != UNKNOWN_THREAD && (a.thread as usize) < threads).then_some(a.thread);
        sink.row(&[
            Value::Integer(i as i64),
            Value::bits(a.address),
            Value::bits(a.size),
            Value::Integer(model.alloc_type[i].into()),
            Value::Integer(model.alloc_site[i].into()),
            Value::Integer(a.stack.into()),
            Value::maybe(thread),
            Value::bits(a.sequence),
            Value::Text(leak_class_name(model.leak_class(node))),
            Value::bits(model.retained(node)),
            Value::maybe(model.dominator(node)),
            Value::Real(sampling.weight(&a)),
            Value::Boolean(type_topmost[i]),
            Value::Boolean(site_topmost[i]),
            Value::bits(model.indirect_bytes(node)),
        ])?;
    }
    Ok(allocations.len() as u64)
}

fn root_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let model = source.model;
    let view = model.view();
    let roots = view.roots();
    for (i, r) in roots.iter().enumerate() {
        let thread = (r.owner_kind == owner_kind::THREAD
            && (r.owner as usize) < view.threads().len())
        .then_some(r.owner);
        let module = (r.owner_kind == owner_kind::MODULE
            && (r.owner as usize) < view.modules().len())
        .then_some(r.owner);
        sink.row(&[
            Value::Integer(i as i64),
            Value::Text(root_kind_name(r.kind)),
            Value::Text(&model.root_label(&r)),
            Value::maybe(thread),
            Value::maybe(module),
            Value::bits(r.address),
            Value::bits(r.size),
        ])?;
    }
    Ok(roots.len() as u64)
}

fn edge_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let model = source.model;
    let mut rows = 0u64;
    for e in model.allocation_edges() {
        let field = model.field_label(e.source, e.source_offset);
        sink.row(&[
            Value::Integer(e.source.into()),
            Value::Integer(e.target.into()),
            Value::bits(e.source_offset),
            Value::bits(e.target_offset),
            Value::maybe_text(field.as_deref()),
        ])?;
        rows += 1;
    }
    Ok(rows)
}

fn root_edge_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let mut rows = 0u64;
    for e in source.model.root_edges() {
        sink.row(&[
            Value::Integer(e.source.into()),
            Value::Integer(e.target.into()),
            Value::bits(e.source_offset),
            Value::bits(e.target_offset),
        ])?;
        rows += 1;
    }
    Ok(rows)
}
