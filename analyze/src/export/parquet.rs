//! `heapdump toparquet`: the tables of the SQLite export
//! ([`super::tables`]) as Parquet files, one partition per dump, so that
//! the dumps of a fleet written into one directory are one dataset that
//! DuckDB, Spark, Polars or pandas query across dumps:
//!
//! ```text
//! DIR/objects/dump=ID/part-0.parquet
//! DIR/edges/dump=ID/part-0.parquet
//! ...
//! DIR/dumps/dump=ID/part-0.parquet      one row: pid, exe, time, totals
//! ```
//!
//! One directory per table, partitioned hive-style by dump: Spark reads a
//! table with `spark.read.parquet("DIR/objects")` and DuckDB with
//! `read_parquet('DIR/objects/*/*.parquet', hive_partitioning = true)`,
//! both adding the `dump` column from the directory name. `ID` is derived
//! from the dump's own identity ([`dump_id`]), so exporting a dump again
//! finds its partition (refused unless replacing is asked for).
//!
//! Files are written with the `parquet` crate's column writers (no Arrow):
//! Snappy-compressed, dictionary-encoded where that pays, up to
//! [`ROW_GROUP_ROWS`] rows per row group. Column types are those Spark
//! reads: INT64 for every integer (addresses keep their bits, as in
//! SQLite), DOUBLE, BOOLEAN, and UTF-8 strings.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use heapdump_formats::read::DumpView;
use heapdump_formats::records::module_flags;
use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::{WriterProperties, WriterVersion};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::HeapModel;
use super::tables::{
    Column, ColumnType, RowSink, TABLES, Table, TableSource, Value, meta_entries, optional,
    required,
};

/// Rows per row group: large enough for good compression and few
/// groups, small enough that a table's buffered columns stay in the tens
/// of megabytes.
pub const ROW_GROUP_ROWS: usize = 1 << 20;

/// The file in each partition.
pub const PART_FILE: &str = "part-0.parquet";

/// The table only the Parquet export has (SQLite's `meta` holds the same
/// as key and value): one row per dump, typed, for filtering and joining
/// across dumps.
pub const DUMPS: Table = Table::new(
    "dumps",
    &[
        required("process", ColumnType::Text),
        required("pid", ColumnType::Integer),
        required("exe", ColumnType::Text),
        required("build_id", ColumnType::Text),
        required("timestamp_ns", ColumnType::Integer),
        required("dump_number", ColumnType::Integer),
        required("dump_file", ColumnType::Text),
        required("format_version", ColumnType::Text),
        required("heapdump_version", ColumnType::Text),
        required("live_bytes", ColumnType::Integer),
        required("live_count", ColumnType::Integer),
        required("typed_bytes", ColumnType::Integer),
        required("stack_sample_interval", ColumnType::Integer),
        required("skipped_edges", ColumnType::Integer),
        optional("cmdline", ColumnType::Text),
    ],
    dump_rows,
);

/// FNV-1a, 64-bit: a hash that never changes between versions or
/// machines (the ids below are file names others keep).
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// The main executable's build-id as hex, or empty.
fn main_build_id(view: &DumpView<'_>) -> String {
    view.modules()
        .iter()
        .find(|m| m.flags & module_flags::MAIN_EXECUTABLE != 0)
        .and_then(|m| view.string(m.build_id).ok())
        .map(crate::symbolize::hex)
        .unwrap_or_default()
}

/// What identifies the process that wrote a dump: its pid, executable,
/// command line and build. Dumps of one run share it; the same program
/// restarted with the same pid shares it too (a dump has no boot id or
/// host name to tell them apart).
fn process_key(view: &DumpView<'_>) -> u64 {
    let process = view.process();
    let mut hash = fnv1a(FNV_OFFSET, &process.pid.to_le_bytes());
    for string in [process.exe, process.cmdline] {
        let bytes = view.string(string).unwrap_or_default();
        hash = fnv1a(hash, &(bytes.len() as u64).to_le_bytes());
        hash = fnv1a(hash, bytes);
    }
    fnv1a(hash, main_build_id(view).as_bytes())
}

/// The `process` column: 16 hex digits of a hash of the pid, executable,
/// command line and main build-id.
pub fn process_id(view: &DumpView<'_>) -> String {
    format!("{:016x}", process_key(view))
}

/// The partition name of a dump: `p<pid>-<16 hex digits>`, the hex a hash
/// of what identifies the process and of the moment and counters of the
/// snapshot (time, dump number, live and total counts, next sequence
/// number). The same dump always gets the same id; two dumps of one
/// process differ at least in time and dump number. It starts with a
/// letter so that engines that guess partition types keep it a string.
pub fn dump_id(view: &DumpView<'_>) -> String {
    let process = view.process();
    let mut hash = fnv1a(FNV_OFFSET, &process_key(view).to_le_bytes());
    for value in [
        process.timestamp_ns,
        u64::from(process.dump_number),
        process.live_bytes,
        process.live_count,
        process.total_allocations,
        process.total_frees,
        process.next_sequence,
    ] {
        hash = fnv1a(hash, &value.to_le_bytes());
    }
    format!("p{}-{hash:016x}", process.pid)
}

/// The partition directory of `table` for dump `id`, relative to the
/// dataset's directory.
pub fn partition(table: &str, id: &str) -> PathBuf {
    Path::new(table).join(format!("dump={id}"))
}

/// Every table `toparquet` writes: the shared ones, then `dumps`.
pub fn tables() -> impl Iterator<Item = &'static Table> {
    TABLES.iter().chain(std::iter::once(&DUMPS))
}

/// The partitions of dump `id` that already exist under `dir`.
pub fn existing_partitions(dir: &Path, id: &str) -> Vec<PathBuf> {
    tables()
        .map(|t| dir.join(partition(t.name, id)))
        .filter(|p| p.exists())
        .collect()
}

/// Options of the Parquet export.
#[derive(Clone, Debug, Default)]
pub struct ParquetOptions {
    /// The dump's name as `meta.dump_file` and `dumps.dump_file` record it.
    pub dump_name: String,
}

/// Rows written per table, the dump's id, and how long it took.
#[derive(Clone, Debug, Default)]
pub struct ParquetSummary {
    /// The partition name (`dump=` this).
    pub dump_id: String,
    /// (table, rows), in write order.
    pub tables: Vec<(&'static str, u64)>,
    /// Bytes of Parquet written.
    pub bytes: u64,
    /// Seconds writing the files.
    pub seconds: f64,
}

impl ParquetSummary {
    /// Rows in every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }
}

impl super::Export for ParquetOptions {
    type Summary = ParquetSummary;

    fn name(&self) -> &'static str {
        "Parquet dataset"
    }

    fn file_name(&self) -> &'static str {
        "DIR"
    }

    fn kind(&self) -> super::OutputKind {
        super::OutputKind::Directory
    }

    fn needs_graph(&self) -> bool {
        true
    }

    fn write(&self, model: &HeapModel<'_>, out: &mut super::Output) -> Result<ParquetSummary> {
        let start = Instant::now();
        let id = dump_id(model.view());
        let source = TableSource {
            model,
            dump_name: &self.dump_name,
        };
        let properties = Arc::new(
            WriterProperties::builder()
                .set_writer_version(WriterVersion::PARQUET_1_0)
                .set_compression(Compression::SNAPPY)
                .set_created_by(format!("heapdump {}", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let mut summary = ParquetSummary {
            dump_id: id.clone(),
            ..Default::default()
        };
        for table in tables() {
            let dir = out.stage_directory(&partition(table.name, &id))?;
            let path = dir.join(PART_FILE);
            let rows = write_table(table, &source, &path, properties.clone())
                .with_context(|| format!("cannot write table {}", table.name))?;
            summary.bytes += std::fs::metadata(&path).map_or(0, |m| m.len());
            summary.tables.push((table.name, rows));
        }
        summary.seconds = start.elapsed().as_secs_f64();
        Ok(summary)
    }
}

/// The Parquet schema of `table`: one primitive column per column.
fn schema(table: &Table) -> Result<Type> {
    let fields = table
        .columns
        .iter()
        .map(|column| {
            let (physical, logical) = match column.ty {
                ColumnType::Integer => (PhysicalType::INT64, None),
                ColumnType::Real => (PhysicalType::DOUBLE, None),
                ColumnType::Boolean => (PhysicalType::BOOLEAN, None),
                ColumnType::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
            };
            let repetition = if column.nullable {
                Repetition::OPTIONAL
            } else {
                Repetition::REQUIRED
            };
            Ok(Arc::new(
                Type::primitive_type_builder(column.name, physical)
                    .with_repetition(repetition)
                    .with_logical_type(logical)
                    .build()?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Type::group_type_builder(table.name)
        .with_fields(fields)
        .build()?)
}

fn write_table(
    table: &Table,
    source: &TableSource<'_, '_>,
    path: &Path,
    properties: Arc<WriterProperties>,
) -> Result<u64> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let writer = SerializedFileWriter::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        Arc::new(schema(table)?),
        properties,
    )?;
    let mut sink = ColumnBuffers {
        writer,
        columns: table.columns.iter().map(ColumnBuffer::new).collect(),
        rows: 0,
    };
    let rows = table.write_rows(source, &mut sink)?;
    sink.flush()?;
    let writer = sink.writer.into_inner()?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(rows)
}

/// One column's values of the row group being filled, and its definition
/// levels (1 = a value, 0 = NULL) when it is nullable.
struct ColumnBuffer {
    values: ColumnValues,
    definitions: Option<Vec<i16>>,
}

enum ColumnValues {
    Integer(Vec<i64>),
    Real(Vec<f64>),
    Text(Vec<ByteArray>),
    Boolean(Vec<bool>),
}

impl ColumnBuffer {
    fn new(column: &Column) -> ColumnBuffer {
        ColumnBuffer {
            values: match column.ty {
                ColumnType::Integer => ColumnValues::Integer(Vec::new()),
                ColumnType::Real => ColumnValues::Real(Vec::new()),
                ColumnType::Text => ColumnValues::Text(Vec::new()),
                ColumnType::Boolean => ColumnValues::Boolean(Vec::new()),
            },
            definitions: column.nullable.then(Vec::new),
        }
    }

    fn push(&mut self, value: &Value<'_>) -> Result<()> {
        if let Value::Null = value {
            match &mut self.definitions {
                Some(definitions) => definitions.push(0),
                None => anyhow::bail!("NULL in a column that is never NULL"),
            }
            return Ok(());
        }
        if let Some(definitions) = &mut self.definitions {
            definitions.push(1);
        }
        match (&mut self.values, value) {
            (ColumnValues::Integer(values), Value::Integer(v)) => values.push(*v),
            (ColumnValues::Real(values), Value::Real(v)) => values.push(*v),
            (ColumnValues::Text(values), Value::Text(v)) => {
                // A repeated value (leak classes, kinds) shares the bytes
                // of the one before it instead of a copy of its own.
                let value = match values.last() {
                    Some(last) if last.data() == v.as_bytes() => last.clone(),
                    _ => ByteArray::from(*v),
                };
                values.push(value);
            }
            (ColumnValues::Boolean(values), Value::Boolean(v)) => values.push(*v),
            _ => anyhow::bail!("a value of another type than its column's: {value:?}"),
        }
        Ok(())
    }

    fn clear(&mut self) {
        match &mut self.values {
            ColumnValues::Integer(values) => values.clear(),
            ColumnValues::Real(values) => values.clear(),
            ColumnValues::Text(values) => values.clear(),
            ColumnValues::Boolean(values) => values.clear(),
        }
        if let Some(definitions) = &mut self.definitions {
            definitions.clear();
        }
    }
}

/// Buffers rows column by column and writes a row group every
/// [`ROW_GROUP_ROWS`] rows.
struct ColumnBuffers {
    writer: SerializedFileWriter<std::io::BufWriter<File>>,
    columns: Vec<ColumnBuffer>,
    rows: usize,
}

impl ColumnBuffers {
    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group()?;
        for column in &mut self.columns {
            let mut writer = group
                .next_column()?
                .context("the schema has fewer columns than the table")?;
            let definitions = column.definitions.as_deref();
            match &column.values {
                ColumnValues::Integer(values) => {
                    writer
                        .typed::<Int64Type>()
                        .write_batch(values, definitions, None)?;
                }
                ColumnValues::Real(values) => {
                    writer
                        .typed::<DoubleType>()
                        .write_batch(values, definitions, None)?;
                }
                ColumnValues::Text(values) => {
                    writer
                        .typed::<ByteArrayType>()
                        .write_batch(values, definitions, None)?;
                }
                ColumnValues::Boolean(values) => {
                    writer
                        .typed::<BoolType>()
                        .write_batch(values, definitions, None)?;
                }
            }
            writer.close()?;
            column.clear();
        }
        group.close()?;
        self.rows = 0;
        Ok(())
    }
}

impl RowSink for ColumnBuffers {
    fn row(&mut self, values: &[Value<'_>]) -> Result<()> {
        anyhow::ensure!(
            values.len() == self.columns.len(),
            "a row of {} values for {} columns",
            values.len(),
            self.columns.len()
        );
        for (column, value) in self.columns.iter_mut().zip(values) {
            column.push(value)?;
        }
        self.rows += 1;
        if self.rows == ROW_GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }
}

fn dump_rows(source: &TableSource<'_, '_>, sink: &mut dyn RowSink) -> Result<u64> {
    let view = source.model.view();
    let process = view.process();
    let meta: std::collections::HashMap<&str, String> = meta_entries(source).into_iter().collect();
    let number = |key: &str| -> Result<i64> {
        let text = meta.get(key).context("a meta entry is missing")?;
        Ok(text.parse::<u64>()? as i64)
    };
    let text = |key: &str| meta.get(key).map_or("", String::as_str);
    let cmdline = view
        .string_lossy(process.cmdline)
        .map(|s| s.replace('\0', " ").trim_end().to_owned())
        .unwrap_or_default();
    sink.row(&[
        Value::Text(&process_id(view)),
        Value::Integer(process.pid.into()),
        Value::Text(text("exe")),
        Value::Text(&main_build_id(view)),
        Value::bits(process.timestamp_ns),
        Value::Integer(process.dump_number.into()),
        Value::Text(text("dump_file")),
        Value::Text(text("format_version")),
        Value::Text(text("heapdump_version")),
        Value::Integer(number("live_bytes")?),
        Value::Integer(number("live_count")?),
        Value::Integer(number("typed_bytes")?),
        Value::Integer(number("stack_sample_interval")?),
        Value::Integer(number("skipped_edges")?),
        if cmdline.is_empty() {
            Value::Null
        } else {
            Value::Text(&cmdline)
        },
    ])?;
    Ok(1)
}
