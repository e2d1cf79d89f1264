//! A SQLite database file written directly in SQLite's documented file
//! format (<https://www.sqlite.org/fileformat2.html>), for `tosqlite`.
//!
//! Loading tens of millions of rows through SQLite's own insert path and
//! then building its indexes costs a minute on a 13M-object heap; most of
//! that is B-tree maintenance and SQLite's external sort. Here every
//! B-tree is built bottom-up from rows already in key order: table rows
//! arrive in rowid order, index keys are sorted in memory as compact
//! integer pairs, and each page is filled once and written once.
//!
//! What it writes: rowid tables (an `INTEGER PRIMARY KEY` column is the
//! rowid and stored as NULL in the record), `WITHOUT ROWID` tables (index
//! B-trees ordered by the primary key, which must be the leading columns,
//! ascending, with the BINARY collation),
//! single-integer-column indexes, views, overflow pages for long payloads,
//! schema format 4 and UTF-8 text, 64 KiB pages, no free pages. What it
//! does not: other index shapes (unique, partial, multi-column, on text),
//! secondary indexes on `WITHOUT ROWID` tables, BLOBs. The schema text is
//! parsed by SQLite itself (an in-memory database runs the DDL), so the
//! `sqlite_schema` rows are exactly those SQLite would store, and a schema
//! this writer cannot build is refused with an error naming the object.

use std::cmp::Ordering;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use rusqlite::Connection;

use super::tables::{RowSink, Value};

/// Bytes per page: the largest SQLite allows. It keeps the schema in page
/// 1, interior levels shallow and the per-page overhead small.
pub const PAGE_SIZE: usize = 65536;
/// Usable bytes per page (no reserved bytes at the end of pages).
const USABLE: usize = PAGE_SIZE;
/// The page that holds byte offset 2^30 (SQLite's lock byte); never used.
const LOCK_BYTE_PAGE: u32 = (0x4000_0000 / PAGE_SIZE) as u32 + 1;
/// Largest payload kept whole in a table-leaf cell.
const TABLE_MAX_LOCAL: usize = USABLE - 35;
/// Largest payload kept whole in an index cell (leaf or interior).
const INDEX_MAX_LOCAL: usize = (USABLE - 12) * 64 / 255 - 23;
/// Smallest local part of a payload that overflows (both kinds).
const MIN_LOCAL: usize = (USABLE - 12) * 32 / 255 - 23;
/// Payload bytes per overflow page (after its next-page number).
const OVERFLOW_BYTES: usize = USABLE - 4;

const INDEX_INTERIOR: u8 = 0x02;
const TABLE_INTERIOR: u8 = 0x05;
const INDEX_LEAF: u8 = 0x0a;
const TABLE_LEAF: u8 = 0x0d;

/// SQLite's variable-length integer: big-endian 7-bit groups, the ninth
/// byte carrying 8 bits. One and two bytes (below 16384) are most
/// lengths, serial types and keys, and take the short way.
#[inline]
fn put_varint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
    } else if value < 0x4000 {
        out.extend_from_slice(&[(value >> 7) as u8 | 0x80, value as u8 & 0x7f]);
    } else {
        put_long_varint(out, value);
    }
}

fn put_long_varint(out: &mut Vec<u8>, value: u64) {
    if value >> 56 != 0 {
        for shift in (1..=8).rev() {
            out.push(((value >> (shift * 7 + 1)) as u8 & 0x7f) | 0x80);
        }
        out.push(value as u8);
        return;
    }
    let groups = (64 - value.leading_zeros() as usize).div_ceil(7).max(1);
    for group in (1..groups).rev() {
        out.push(((value >> (group * 7)) as u8 & 0x7f) | 0x80);
    }
    out.push(value as u8 & 0x7f);
}

fn varint_len(value: u64) -> usize {
    if value >> 56 != 0 {
        9
    } else {
        (64 - value.leading_zeros() as usize).div_ceil(7).max(1)
    }
}

/// The serial type and body length of an integer (schema format 4: 0 and
/// 1 take no body bytes).
fn integer_serial(value: i64) -> (u64, usize) {
    let magnitude = if value < 0 { !value } else { value } as u64;
    match (value, magnitude) {
        (0, _) => (8, 0),
        (1, _) => (9, 0),
        (_, m) if m <= 0x7f => (1, 1),
        (_, m) if m <= 0x7fff => (2, 2),
        (_, m) if m <= 0x7f_ffff => (3, 3),
        (_, m) if m <= 0x7fff_ffff => (4, 4),
        (_, m) if m <= 0x7fff_ffff_ffff => (5, 6),
        _ => (6, 8),
    }
}

/// A column value as a record stores it.
#[derive(Clone, Copy, Debug)]
enum Stored<'a> {
    Null,
    Integer(i64),
    Real(f64),
    Text(&'a str),
}

impl<'a> Stored<'a> {
    fn of(value: &Value<'a>) -> Stored<'a> {
        match *value {
            Value::Integer(v) => Stored::Integer(v),
            Value::Boolean(v) => Stored::Integer(v.into()),
            // SQLite stores a NaN as NULL.
            Value::Real(v) if v.is_nan() => Stored::Null,
            Value::Real(v) => Stored::Real(v),
            Value::Text(v) => Stored::Text(v),
            Value::Null => Stored::Null,
        }
    }

    fn serial(&self) -> (u64, usize) {
        match *self {
            Stored::Null => (0, 0),
            Stored::Integer(v) => integer_serial(v),
            Stored::Real(_) => (7, 8),
            Stored::Text(t) => (2 * t.len() as u64 + 13, t.len()),
        }
    }
}

/// Appends the record of `values` to `out`: header (its own length, then
/// one serial type per value) and body.
fn put_record(out: &mut Vec<u8>, values: &[Stored<'_>]) {
    let start = out.len();
    out.push(0);
    for value in values {
        put_varint(out, value.serial().0);
    }
    let header_len = out.len() - start;
    if header_len < 0x80 {
        out[start] = header_len as u8;
    } else {
        // A header of 128 bytes or more: its length takes more than one
        // byte, which counts in the length itself.
        let types = out.split_off(start + 1);
        out.truncate(start);
        let mut len_bytes = 2;
        while varint_len((types.len() + len_bytes) as u64) > len_bytes {
            len_bytes += 1;
        }
        put_varint(out, (types.len() + len_bytes) as u64);
        out.extend_from_slice(&types);
    }
    for value in values {
        match *value {
            Stored::Null => {}
            Stored::Integer(v) => {
                let (_, len) = integer_serial(v);
                out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
            }
            Stored::Real(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            Stored::Text(t) => out.extend_from_slice(t.as_bytes()),
        }
    }
}

/// How many bytes of a `payload`-byte payload stay in the cell.
fn local_size(payload: usize, max_local: usize) -> usize {
    if payload <= max_local {
        return payload;
    }
    let k = MIN_LOCAL + (payload - MIN_LOCAL) % OVERFLOW_BYTES;
    if k <= max_local { k } else { MIN_LOCAL }
}

/// A page on its way to the file: its number and its bytes.
type PageWrite = (u32, Box<[u8]>);

/// Pages queued for the writing thread at most: 4 MiB.
const QUEUED_PAGES: usize = 64;

/// The file and its page allocator, shared by the threads building trees.
/// Pages go to a thread of their own that writes them, so that the
/// kernel's copy into the page cache (a fifth of the work) runs beside the
/// encoding of the next rows.
struct PageFile {
    /// The next page number to hand out.
    next: Mutex<u32>,
    /// The writing thread's queue; `None` once the last page is sent.
    queue: Mutex<Option<std::sync::mpsc::SyncSender<PageWrite>>>,
    /// Page buffers the writing thread is done with, for reuse.
    spare: Arc<Mutex<Vec<Box<[u8]>>>>,
    /// Why the writing thread stopped, if it failed.
    failure: Arc<Mutex<Option<String>>>,
}

impl PageFile {
    fn allocate(&self) -> u32 {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if *next == LOCK_BYTE_PAGE {
            *next += 1;
        }
        let page = *next;
        *next += 1;
        page
    }

    /// Pages in the file: the highest handed out.
    fn page_count(&self) -> u32 {
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) - 1
    }

    /// Starts the writing thread for `file`.
    fn start(file: File) -> Result<(PageFile, JoinHandle<Result<()>>)> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<PageWrite>(QUEUED_PAGES);
        let spare = Arc::new(Mutex::new(Vec::new()));
        let returned = Arc::clone(&spare);
        let failure = Arc::new(Mutex::new(None));
        let failed = Arc::clone(&failure);
        let writer = std::thread::Builder::new()
            .name("sqlite-pages".into())
            .spawn(move || -> Result<()> {
                for (page, bytes) in receiver {
                    let offset = (u64::from(page) - 1) * PAGE_SIZE as u64;
                    if let Err(e) = file.write_all_at(&bytes, offset) {
                        let message = format!("cannot write page {page}: {e}");
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
                        bail!(message);
                    }
                    let mut spare = returned.lock().unwrap_or_else(|e| e.into_inner());
                    if spare.len() < QUEUED_PAGES {
                        spare.push(bytes);
                    }
                }
                Ok(())
            })
            .context("cannot start the page-writing thread")?;
        let pages = PageFile {
            next: Mutex::new(2),
            queue: Mutex::new(Some(sender)),
            spare,
            failure,
        };
        Ok((pages, writer))
    }

    fn write(&self, page: u32, bytes: &[u8]) -> Result<()> {
        debug_assert_eq!(bytes.len(), PAGE_SIZE);
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut copy = spare.unwrap_or_else(|| vec![0u8; PAGE_SIZE].into_boxed_slice());
        copy.copy_from_slice(bytes);
        let queue = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .context("the database is already closed")?;
        // A send fails only when the writing thread stopped on an error.
        queue.send((page, copy)).map_err(|_| {
            let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            anyhow!(
                "{}",
                failure
                    .as_deref()
                    .unwrap_or("the page-writing thread stopped")
            )
        })
    }

    /// Closes the queue: the writing thread ends after the pages sent.
    fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Appends to `cell` the first `local` bytes of `payload` and, if it
    /// does not fit, the number of the first of the overflow pages written
    /// for the rest.
    fn put_payload(&self, cell: &mut Vec<u8>, payload: &[u8], max_local: usize) -> Result<()> {
        let local = local_size(payload.len(), max_local);
        cell.extend_from_slice(&payload[..local]);
        if local == payload.len() {
            return Ok(());
        }
        let chunks: Vec<&[u8]> = payload[local..].chunks(OVERFLOW_BYTES).collect();
        let pages: Vec<u32> = chunks.iter().map(|_| self.allocate()).collect();
        cell.extend_from_slice(&pages[0].to_be_bytes());
        let mut page = vec![0u8; PAGE_SIZE];
        for (i, chunk) in chunks.iter().enumerate() {
            let next = pages.get(i + 1).copied().unwrap_or(0);
            page[..4].copy_from_slice(&next.to_be_bytes());
            page[4..4 + chunk.len()].copy_from_slice(chunk);
            page[4 + chunk.len()..].fill(0);
            self.write(pages[i], &page)?;
        }
        Ok(())
    }
}

/// One B-tree page being filled: the cell pointers grow from the header,
/// the cells from the end of the page.
struct Page {
    bytes: Box<[u8]>,
    /// Where the page header starts: 100 on page 1, after the file header.
    header_at: usize,
    kind: u8,
    cells: usize,
    /// Start of the cell content area.
    content: usize,
}

impl Page {
    fn new(kind: u8) -> Page {
        Page {
            bytes: vec![0u8; PAGE_SIZE].into_boxed_slice(),
            header_at: 0,
            kind,
            cells: 0,
            content: PAGE_SIZE,
        }
    }

    fn header_len(&self) -> usize {
        if self.kind == TABLE_LEAF || self.kind == INDEX_LEAF {
            8
        } else {
            12
        }
    }

    fn fits(&self, cell_len: usize) -> bool {
        self.header_at + self.header_len() + 2 * (self.cells + 1) + cell_len <= self.content
    }

    fn push(&mut self, cell: &[u8]) {
        debug_assert!(self.fits(cell.len()));
        self.content -= cell.len();
        self.bytes[self.content..self.content + cell.len()].copy_from_slice(cell);
        let pointer = self.header_at + self.header_len() + 2 * self.cells;
        self.bytes[pointer..pointer + 2].copy_from_slice(&(self.content as u16).to_be_bytes());
        self.cells += 1;
    }

    /// Removes the last cell pushed and returns it (cells are laid out
    /// downwards, so it ends where the one before it starts).
    fn pop(&mut self) -> Vec<u8> {
        debug_assert!(self.cells > 0);
        let end = if self.cells == 1 {
            PAGE_SIZE
        } else {
            let pointer = self.header_at + self.header_len() + 2 * (self.cells - 2);
            usize::from(u16::from_be_bytes([
                self.bytes[pointer],
                self.bytes[pointer + 1],
            ]))
        };
        let cell = self.bytes[self.content..end].to_vec();
        self.content = end;
        self.cells -= 1;
        cell
    }

    /// Fills in the page header; `right` is an interior page's right-most
    /// child.
    fn seal(&mut self, right: Option<u32>) -> &[u8] {
        // Bytes between the pointers and the content are unallocated
        // space; SQLite expects zeros nowhere, but a clean file is easier
        // to inspect.
        let pointers_end = self.header_at + self.header_len() + 2 * self.cells;
        self.bytes[pointers_end..self.content].fill(0);
        let h = self.header_at;
        self.bytes[h] = self.kind;
        self.bytes[h + 1..h + 3].fill(0); // no freeblocks
        self.bytes[h + 3..h + 5].copy_from_slice(&(self.cells as u16).to_be_bytes());
        // 65536 is written as 0.
        self.bytes[h + 5..h + 7].copy_from_slice(&(self.content as u16).to_be_bytes());
        self.bytes[h + 7] = 0; // no fragmented bytes
        if let Some(right) = right {
            self.bytes[h + 8..h + 12].copy_from_slice(&right.to_be_bytes());
        }
        &self.bytes
    }

    fn clear(&mut self) {
        self.cells = 0;
        self.content = PAGE_SIZE;
    }
}

/// A table B-tree built from rows in rowid order.
struct TableTree {
    leaf: Page,
    leaf_max: i64,
    /// Leaves written: page and largest rowid.
    children: Vec<(u32, i64)>,
    last_rowid: Option<i64>,
    cell: Vec<u8>,
}

impl TableTree {
    fn new() -> TableTree {
        TableTree {
            leaf: Page::new(TABLE_LEAF),
            leaf_max: 0,
            children: Vec::new(),
            last_rowid: None,
            cell: Vec::new(),
        }
    }

    fn push(&mut self, file: &PageFile, rowid: i64, payload: &[u8]) -> Result<()> {
        if self.last_rowid.is_some_and(|last| rowid <= last) {
            bail!(
                "rowid {rowid} does not follow {}",
                self.last_rowid.unwrap_or(0)
            );
        }
        self.last_rowid = Some(rowid);
        self.cell.clear();
        put_varint(&mut self.cell, payload.len() as u64);
        put_varint(&mut self.cell, rowid as u64);
        let mut cell = std::mem::take(&mut self.cell);
        file.put_payload(&mut cell, payload, TABLE_MAX_LOCAL)?;
        if !self.leaf.fits(cell.len()) {
            self.write_leaf(file)?;
        }
        self.leaf.push(&cell);
        self.leaf_max = rowid;
        self.cell = cell;
        Ok(())
    }

    fn write_leaf(&mut self, file: &PageFile) -> Result<()> {
        let page = file.allocate();
        file.write(page, self.leaf.seal(None))?;
        self.children.push((page, self.leaf_max));
        self.leaf.clear();
        Ok(())
    }

    /// Writes the last leaf and the interior levels; returns the root.
    fn finish(mut self, file: &PageFile) -> Result<u32> {
        if self.leaf.cells > 0 || self.children.is_empty() {
            self.write_leaf(file)?;
        }
        let mut children = self.children;
        // An interior cell is a child number and a rowid varint: at most
        // 13 bytes and a 2-byte pointer, so 4,000 children always fit.
        // Children are spread evenly so that no page is left with one.
        // The unit tests use a fan-out of 5 to get several interior
        // levels from a few megabytes of rows.
        const MAX_CHILDREN: usize = if cfg!(test) { 5 } else { 4000 };
        let mut page = Page::new(TABLE_INTERIOR);
        let mut cell = Vec::new();
        while children.len() > 1 {
            let pages = children.len().div_ceil(MAX_CHILDREN);
            let mut parents = Vec::with_capacity(pages);
            let mut start = 0;
            for p in 0..pages {
                let end = children.len() * (p + 1) / pages;
                let group = &children[start..end];
                page.clear();
                for &(child, key) in &group[..group.len() - 1] {
                    cell.clear();
                    cell.extend_from_slice(&child.to_be_bytes());
                    put_varint(&mut cell, key as u64);
                    page.push(&cell);
                }
                let (right, max) = group[group.len() - 1];
                let number = file.allocate();
                file.write(number, page.seal(Some(right)))?;
                parents.push((number, max));
                start = end;
            }
            children = parents;
        }
        Ok(children[0].0)
    }
}

/// An index B-tree (also a `WITHOUT ROWID` table) built from records in
/// key order. Interior cells hold real entries: the entry after a full
/// leaf goes up as the divider instead of into a leaf.
struct IndexTree {
    leaf: Page,
    /// A full leaf, written when the entry after its divider arrives (so
    /// that the last leaf is never empty).
    full: Page,
    divider: Option<Vec<u8>>,
    children: Vec<u32>,
    /// `dividers[i]` lies between `children[i]` and `children[i + 1]`.
    dividers: Vec<Vec<u8>>,
    cell: Vec<u8>,
}

impl IndexTree {
    fn new() -> IndexTree {
        IndexTree {
            leaf: Page::new(INDEX_LEAF),
            full: Page::new(INDEX_LEAF),
            divider: None,
            children: Vec::new(),
            dividers: Vec::new(),
            cell: Vec::new(),
        }
    }

    fn push(&mut self, file: &PageFile, record: &[u8]) -> Result<()> {
        let mut cell = std::mem::take(&mut self.cell);
        cell.clear();
        put_varint(&mut cell, record.len() as u64);
        file.put_payload(&mut cell, record, INDEX_MAX_LOCAL)?;
        if let Some(divider) = self.divider.take() {
            let page = file.allocate();
            file.write(page, self.full.seal(None))?;
            self.children.push(page);
            self.dividers.push(divider);
            self.leaf.push(&cell);
        } else if self.leaf.fits(cell.len()) {
            self.leaf.push(&cell);
        } else {
            std::mem::swap(&mut self.leaf, &mut self.full);
            self.leaf.clear();
            self.divider = Some(cell.clone());
        }
        self.cell = cell;
        Ok(())
    }

    fn finish(mut self, file: &PageFile) -> Result<u32> {
        if let Some(divider) = self.divider.take() {
            // The entries ended right after a full leaf: its last entry
            // becomes the divider, the pending one the last leaf.
            let last = self.full.pop();
            let page = file.allocate();
            file.write(page, self.full.seal(None))?;
            self.children.push(page);
            self.dividers.push(last);
            self.leaf.push(&divider);
        }
        let page = file.allocate();
        file.write(page, self.leaf.seal(None))?;
        self.children.push(page);
        let (mut children, mut dividers) = (self.children, self.dividers);
        let mut page = Page::new(INDEX_INTERIOR);
        let mut cell = Vec::new();
        while children.len() > 1 {
            // Groups of children: page g holds cells for children
            // start..end (exclusive of its right-most child `end`), and
            // divider `end` goes up unless it is the last group.
            let mut groups: Vec<(usize, usize)> = Vec::new();
            let mut start = 0;
            page.clear();
            for (i, divider) in dividers.iter().enumerate() {
                if page.fits(4 + divider.len()) {
                    page.push(&[&[0u8; 4][..], divider].concat());
                } else {
                    groups.push((start, i));
                    start = i + 1;
                    page.clear();
                }
            }
            let last = children.len() - 1;
            if start == last {
                // The last page would have no cell: move the previous
                // page's last cell into it (a page holds at least three).
                let (previous_start, previous_end) = groups.pop().expect("an earlier group");
                groups.push((previous_start, previous_end - 1));
                start = previous_end;
            }
            groups.push((start, last));
            let mut parents = Vec::with_capacity(groups.len());
            let mut parent_dividers = Vec::with_capacity(groups.len());
            for &(start, end) in &groups {
                page.clear();
                for i in start..end {
                    cell.clear();
                    cell.extend_from_slice(&children[i].to_be_bytes());
                    cell.extend_from_slice(&dividers[i]);
                    page.push(&cell);
                }
                let number = file.allocate();
                file.write(number, page.seal(Some(children[end])))?;
                parents.push(number);
                if end < last {
                    parent_dividers.push(std::mem::take(&mut dividers[end]));
                }
            }
            children = parents;
            dividers = parent_dividers;
        }
        Ok(children[0])
    }
}

/// An index over one integer column: its keys and rowids, sorted when the
/// table is complete. Pairs that fit 32 bits each are packed into one u64
/// (8 bytes an entry instead of 16); the first that does not widens all.
enum IndexKeys {
    Packed(Vec<u64>),
    Wide(Vec<(i64, i64)>),
}

impl IndexKeys {
    fn push(&mut self, key: i64, rowid: i64) {
        match self {
            IndexKeys::Packed(keys) => {
                if (0..=u32::MAX as i64).contains(&key) && (0..=u32::MAX as i64).contains(&rowid) {
                    keys.push((key as u64) << 32 | rowid as u64);
                } else {
                    let mut wide: Vec<(i64, i64)> = Vec::with_capacity(keys.len() + 1);
                    wide.extend(
                        keys.iter()
                            .map(|&k| ((k >> 32) as i64, (k & 0xffff_ffff) as i64)),
                    );
                    wide.push((key, rowid));
                    *self = IndexKeys::Wide(wide);
                }
            }
            IndexKeys::Wide(keys) => keys.push((key, rowid)),
        }
    }

    /// Sorts the entries and writes their B-tree; returns its root.
    fn build(self, file: &PageFile) -> Result<u32> {
        let mut tree = IndexTree::new();
        let mut record = Vec::with_capacity(32);
        let mut entry = |key: i64, rowid: i64| {
            record.clear();
            put_record(&mut record, &[Stored::Integer(key), Stored::Integer(rowid)]);
            tree.push(file, &record)
        };
        match self {
            IndexKeys::Packed(mut keys) => {
                keys.sort_unstable();
                for k in keys {
                    entry((k >> 32) as i64, (k & 0xffff_ffff) as i64)?;
                }
            }
            IndexKeys::Wide(mut keys) => {
                keys.sort_unstable();
                for (key, rowid) in keys {
                    entry(key, rowid)?;
                }
            }
        }
        tree.finish(file)
    }
}

/// How a table's rows are keyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// A rowid table; the column that is the rowid, if one is
    /// (`INTEGER PRIMARY KEY`), else rowids 1, 2, … in row order.
    Rowid(Option<usize>),
    /// A `WITHOUT ROWID` table whose primary key is its first columns.
    WithoutRowid(usize),
}

#[derive(Clone, Debug)]
struct TablePlan {
    name: String,
    columns: usize,
    /// Whether each column is `NOT NULL` (a `WITHOUT ROWID` key column
    /// is, said or not): SQLite refuses a NULL there, and so does this.
    not_null: Vec<(usize, String)>,
    layout: Layout,
    /// Indexes on it: name and the column they index.
    indexes: Vec<(String, usize)>,
}

/// A row of `sqlite_schema`, as SQLite stores it for the DDL.
#[derive(Clone, Debug)]
struct SchemaRow {
    kind: String,
    name: String,
    table: String,
    sql: Option<String>,
}

/// What SQLite makes of the DDL: the `sqlite_schema` rows and the shape
/// of every table and index.
fn plan(ddl: &str) -> Result<(Vec<SchemaRow>, Vec<TablePlan>)> {
    let db = Connection::open_in_memory()?;
    db.execute_batch(ddl).context("the schema does not parse")?;
    let rows: Vec<SchemaRow> = db
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY rowid")?
        .query_map([], |r| {
            Ok(SchemaRow {
                kind: r.get(0)?,
                name: r.get(1)?,
                table: r.get(2)?,
                sql: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut tables = Vec::new();
    for row in rows.iter().filter(|r| r.kind == "table") {
        let without_rowid: bool = db.query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            [&row.name],
            |r| r.get(0),
        )?;
        // (cid, declared type, pk position)
        let columns: Vec<(usize, String, usize)> = db
            .prepare("SELECT cid, type, pk FROM pragma_table_info(?1) ORDER BY cid")?
            .query_map([&row.name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let not_null: Vec<(usize, String)> = db
            .prepare(
                "SELECT cid, name FROM pragma_table_info(?1) \
                 WHERE \"notnull\" OR (?2 AND pk > 0) ORDER BY cid",
            )?
            .query_map((&row.name, without_rowid), |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let keys: Vec<&(usize, String, usize)> = columns.iter().filter(|c| c.2 > 0).collect();
        let layout = if without_rowid {
            ensure!(
                keys.iter().all(|&&(cid, _, pk)| cid + 1 == pk),
                "table {}: the primary key of a WITHOUT ROWID table must be its first columns, in order",
                row.name
            );
            // The rows are sorted by value, bytes for text: a key in
            // another order would be written out of order, and SQLite
            // would find no row by it.
            let binary_ascending: bool = db.query_row(
                "SELECT count(*) = 0 FROM pragma_index_list(?1) AS i \
                 JOIN pragma_index_xinfo(i.name) AS x \
                 WHERE i.origin = 'pk' AND x.key AND (x.\"desc\" OR x.coll <> 'BINARY')",
                [&row.name],
                |r| r.get(0),
            )?;
            ensure!(
                binary_ascending,
                "table {}: the primary key of a WITHOUT ROWID table must be ascending, with the BINARY collation",
                row.name
            );
            Layout::WithoutRowid(keys.len())
        } else {
            match keys.as_slice() {
                [] => Layout::Rowid(None),
                [(cid, ty, _)] if ty.eq_ignore_ascii_case("INTEGER") => Layout::Rowid(Some(*cid)),
                _ => bail!(
                    "table {}: a primary key other than one INTEGER column is not supported",
                    row.name
                ),
            }
        };
        tables.push(TablePlan {
            name: row.name.clone(),
            columns: columns.len(),
            not_null,
            layout,
            indexes: Vec::new(),
        });
    }
    for row in rows.iter().filter(|r| r.kind == "index") {
        let (unique, partial): (bool, bool) = db.query_row(
            "SELECT \"unique\", partial FROM pragma_index_list(?1) WHERE name = ?2",
            [&row.table, &row.name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let columns: Vec<(Option<usize>, bool, String)> = db
            .prepare("SELECT cid, desc, coll FROM pragma_index_xinfo(?1) WHERE key")?
            .query_map([&row.name], |r| {
                Ok((r.get::<_, i64>(0)?.try_into().ok(), r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let table = tables
            .iter_mut()
            .find(|t| t.name == row.table)
            .ok_or_else(|| anyhow!("index {} is on an unknown table", row.name))?;
        let column = match columns.as_slice() {
            [(Some(cid), false, coll)]
                if !unique
                    && !partial
                    && row.sql.is_some()
                    && coll == "BINARY"
                    && matches!(table.layout, Layout::Rowid(_)) =>
            {
                *cid
            }
            _ => bail!(
                "index {}: only plain ascending single-column indexes on rowid tables are supported",
                row.name
            ),
        };
        table.indexes.push((row.name.clone(), column));
    }
    Ok((rows, tables))
}

/// Work running on the helper thread: index builds, each returning its
/// name and root page.
type Background = JoinHandle<Result<Vec<(String, u32)>>>;

/// A database file being written. Tables are given their rows one after
/// another through [`DatabaseWriter::table`]; [`DatabaseWriter::finish`]
/// writes the schema and the header.
pub struct DatabaseWriter {
    file: Arc<PageFile>,
    /// The thread writing the pages.
    page_writer: Option<JoinHandle<Result<()>>>,
    schema: Vec<SchemaRow>,
    tables: Vec<TablePlan>,
    roots: Vec<(String, u32)>,
    background: Option<Background>,
}

impl DatabaseWriter {
    /// Creates `path` (truncating a file there) for the tables, indexes
    /// and views of `ddl`.
    pub fn create(path: &Path, ddl: &str) -> Result<DatabaseWriter> {
        let (schema, tables) = plan(ddl)?;
        let file = File::create(path)?;
        let (file, page_writer) = PageFile::start(file)?;
        Ok(DatabaseWriter {
            file: Arc::new(file),
            page_writer: Some(page_writer),
            schema,
            tables,
            roots: Vec::new(),
            background: None,
        })
    }

    /// The names of the tables, in the order the DDL creates them.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    /// A sink for the rows of `table`, in rowid order (by the
    /// `INTEGER PRIMARY KEY` column, or any order for other rowid tables
    /// and `WITHOUT ROWID` tables); [`TableRows::finish`] completes it.
    pub fn table(&mut self, table: &str) -> Result<TableRows<'_>> {
        let plan = self
            .tables
            .iter()
            .find(|t| t.name == table)
            .ok_or_else(|| anyhow!("the schema has no table {table}"))?
            .clone();
        ensure!(
            !self.roots.iter().any(|(name, _)| name == table),
            "table {table} is written twice"
        );
        let indexes = plan
            .indexes
            .iter()
            .map(|_| IndexKeys::Packed(Vec::new()))
            .collect();
        Ok(TableRows {
            file: Arc::clone(&self.file),
            writer: self,
            plan,
            tree: TableTree::new(),
            index_keys: indexes,
            unkeyed: Vec::new(),
            record: Vec::new(),
            rows: 0,
        })
    }

    /// Sends no more pages and waits until those sent are written.
    fn close_file(&mut self) -> Result<()> {
        self.file.close();
        match self.page_writer.take() {
            Some(writer) => writer
                .join()
                .map_err(|_| anyhow!("the page-writing thread panicked"))?,
            None => Ok(()),
        }
    }

    fn join_background(&mut self) -> Result<()> {
        if let Some(job) = self.background.take() {
            let roots = job
                .join()
                .map_err(|_| anyhow!("the index-building thread panicked"))??;
            self.roots.extend(roots);
        }
        Ok(())
    }

    /// Waits for the indexes, writes page 1 (file header and schema) and
    /// closes the file. Every table must have been written.
    pub fn finish(mut self) -> Result<()> {
        self.join_background()?;
        let mut page = Page::new(TABLE_LEAF);
        page.header_at = 100;
        let mut record = Vec::new();
        let mut cell = Vec::new();
        for (i, row) in self.schema.iter().enumerate() {
            let root = match row.kind.as_str() {
                "table" | "index" => {
                    self.roots
                        .iter()
                        .find(|(name, _)| *name == row.name)
                        .ok_or_else(|| anyhow!("table {} was not written", row.name))?
                        .1
                }
                _ => 0,
            };
            record.clear();
            put_record(
                &mut record,
                &[
                    Stored::Text(&row.kind),
                    Stored::Text(&row.name),
                    Stored::Text(&row.table),
                    Stored::Integer(root.into()),
                    row.sql.as_deref().map_or(Stored::Null, Stored::Text),
                ],
            );
            cell.clear();
            put_varint(&mut cell, record.len() as u64);
            put_varint(&mut cell, i as u64 + 1);
            self.file.put_payload(&mut cell, &record, TABLE_MAX_LOCAL)?;
            ensure!(
                page.fits(cell.len()),
                "the schema does not fit in the first page"
            );
            page.push(&cell);
        }
        let pages = self.file.page_count();
        page.seal(None);
        let header = &mut page.bytes[..100];
        header[..16].copy_from_slice(b"SQLite format 3\0");
        // Page size 65536 is written as 1.
        header[16..18].copy_from_slice(&1u16.to_be_bytes());
        header[18] = 1; // file format write version: rollback journal
        header[19] = 1; // read version
        header[20] = 0; // reserved bytes per page
        header[21] = 64; // maximum embedded payload fraction
        header[22] = 32; // minimum embedded payload fraction
        header[23] = 32; // leaf payload fraction
        header[24..28].copy_from_slice(&1u32.to_be_bytes()); // change counter
        header[28..32].copy_from_slice(&pages.to_be_bytes()); // pages in the file
        header[32..40].fill(0); // no free pages
        header[40..44].copy_from_slice(&1u32.to_be_bytes()); // schema cookie
        header[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
        header[48..56].fill(0); // default cache size; no auto-vacuum
        header[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
        header[60..92].fill(0); // user version, incremental vacuum, application id, reserved
        header[92..96].copy_from_slice(&1u32.to_be_bytes()); // version-valid-for = change counter
        header[96..100].copy_from_slice(&(rusqlite::version_number() as u32).to_be_bytes());
        // A page the writing thread failed on comes out here; a failed
        // send is that failure too.
        let sent = self.file.write(1, &page.bytes);
        self.close_file()?;
        sent
    }
}

impl Drop for DatabaseWriter {
    /// A writer abandoned on an error still waits for its index thread, so
    /// no thread goes on writing into a file the caller removes.
    fn drop(&mut self) {
        let _ = self.join_background();
        let _ = self.close_file();
    }
}

impl std::fmt::Debug for DatabaseWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseWriter")
            .field("tables", &self.tables)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// The rows of one table on their way into the file.
pub struct TableRows<'w> {
    writer: &'w mut DatabaseWriter,
    file: Arc<PageFile>,
    plan: TablePlan,
    tree: TableTree,
    index_keys: Vec<IndexKeys>,
    /// A `WITHOUT ROWID` table's rows, sorted by key when complete.
    unkeyed: Vec<Vec<OwnedValue>>,
    record: Vec<u8>,
    rows: u64,
}

/// A value kept for sorting a `WITHOUT ROWID` table.
#[derive(Clone, Debug, PartialEq)]
enum OwnedValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
}

impl OwnedValue {
    fn stored(&self) -> Stored<'_> {
        match self {
            OwnedValue::Null => Stored::Null,
            OwnedValue::Integer(v) => Stored::Integer(*v),
            OwnedValue::Real(v) => Stored::Real(*v),
            OwnedValue::Text(v) => Stored::Text(v),
        }
    }

    /// SQLite's order: NULL, numbers by value, text by bytes (BINARY).
    fn compare(&self, other: &OwnedValue) -> Ordering {
        use OwnedValue::*;
        let class = |v: &OwnedValue| match v {
            Null => 0,
            Integer(_) | Real(_) => 1,
            Text(_) => 2,
        };
        match (self, other) {
            (Integer(a), Integer(b)) => a.cmp(b),
            (Integer(a), Real(b)) => (*a as f64).total_cmp(b),
            (Real(a), Integer(b)) => a.total_cmp(&(*b as f64)),
            (Real(a), Real(b)) => a.total_cmp(b),
            (Text(a), Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            _ => class(self).cmp(&class(other)),
        }
    }
}

impl std::fmt::Debug for TableRows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableRows")
            .field("table", &self.plan.name)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl TableRows<'_> {
    /// Writes the table's B-tree and starts (or runs) its indexes; returns
    /// its row count.
    pub fn finish(self) -> Result<u64> {
        let TableRows {
            writer,
            file,
            plan,
            tree,
            index_keys,
            mut unkeyed,
            mut record,
            rows,
        } = self;
        let root = if let Layout::WithoutRowid(keys) = plan.layout {
            let order = |a: &Vec<OwnedValue>, b: &Vec<OwnedValue>| {
                a[..keys]
                    .iter()
                    .zip(&b[..keys])
                    .map(|(x, y)| x.compare(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(Ordering::Equal)
            };
            unkeyed.sort_by(order);
            if let Some(pair) = unkeyed.windows(2).find(|w| order(&w[0], &w[1]).is_eq()) {
                bail!(
                    "table {}: two rows have the primary key {:?}",
                    plan.name,
                    &pair[0][..keys]
                );
            }
            let mut tree = IndexTree::new();
            for row in &unkeyed {
                record.clear();
                let values: Vec<Stored<'_>> = row.iter().map(OwnedValue::stored).collect();
                put_record(&mut record, &values);
                tree.push(&file, &record)?;
            }
            tree.finish(&file)?
        } else {
            tree.finish(&file)?
        };
        writer.roots.push((plan.name.clone(), root));
        // One index build runs on the helper thread while the caller goes
        // on with the next table (or builds the other indexes of this
        // one); waiting for the previous one first bounds the memory held
        // in sorted keys to two tables' worth.
        writer.join_background()?;
        let mut jobs: Vec<(String, IndexKeys)> = plan
            .indexes
            .iter()
            .map(|(name, _)| name.clone())
            .zip(index_keys)
            .collect();
        let here = jobs.split_off(jobs.len() / 2);
        if !jobs.is_empty() {
            let file = Arc::clone(&file);
            writer.background = Some(
                std::thread::Builder::new()
                    .name("sqlite-index".into())
                    .spawn(move || {
                        jobs.into_iter()
                            .map(|(name, keys)| Ok((name, keys.build(&file)?)))
                            .collect()
                    })
                    .context("cannot start the index thread")?,
            );
        }
        for (name, keys) in here {
            let root = keys.build(&file)?;
            writer.roots.push((name, root));
        }
        Ok(rows)
    }
}

impl RowSink for TableRows<'_> {
    fn row(&mut self, values: &[Value<'_>]) -> Result<()> {
        ensure!(
            values.len() == self.plan.columns,
            "table {}: a row of {} values for {} columns",
            self.plan.name,
            values.len(),
            self.plan.columns
        );
        for (column, name) in &self.plan.not_null {
            ensure!(
                !matches!(Stored::of(&values[*column]), Stored::Null),
                "table {}: a NULL in the NOT NULL column {name}",
                self.plan.name
            );
        }
        self.rows += 1;
        let rowid = match self.plan.layout {
            Layout::WithoutRowid(_) => {
                self.unkeyed.push(
                    values
                        .iter()
                        .map(|v| match Stored::of(v) {
                            Stored::Null => OwnedValue::Null,
                            Stored::Integer(i) => OwnedValue::Integer(i),
                            Stored::Real(r) => OwnedValue::Real(r),
                            Stored::Text(t) => OwnedValue::Text(t.to_owned()),
                        })
                        .collect(),
                );
                return Ok(());
            }
            Layout::Rowid(None) => self.rows as i64,
            Layout::Rowid(Some(key)) => match Stored::of(&values[key]) {
                Stored::Integer(id) => id,
                other => bail!(
                    "table {}: the key column holds {other:?}, not an integer",
                    self.plan.name
                ),
            },
        };
        for ((name, column), keys) in self.plan.indexes.iter().zip(&mut self.index_keys) {
            match Stored::of(&values[*column]) {
                Stored::Integer(key) => keys.push(key, rowid),
                other => bail!("index {name}: a key of {other:?}; only integer keys are supported"),
            }
        }
        let key = match self.plan.layout {
            Layout::Rowid(key) => key,
            Layout::WithoutRowid(_) => None,
        };
        // The values as stored, on the stack for up to 32 columns.
        const INLINE: usize = 32;
        let mut inline = [Stored::Null; INLINE];
        let mut heap = Vec::new();
        let stored: &mut [Stored<'_>] = if values.len() <= INLINE {
            &mut inline[..values.len()]
        } else {
            heap.resize(values.len(), Stored::Null);
            &mut heap
        };
        for (i, (slot, value)) in stored.iter_mut().zip(values).enumerate() {
            *slot = if Some(i) == key {
                Stored::Null
            } else {
                Stored::of(value)
            };
        }
        self.record.clear();
        put_record(&mut self.record, stored);
        // The caller names the table in its errors.
        self.tree.push(&self.file, rowid, &self.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapdump_formats::testing::SplitMix64;
    use rusqlite::types::Value as Sql;

    const DDL: &str = "\
CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER NOT NULL, r REAL, s TEXT, n INTEGER);
CREATE TABLE plain (x INTEGER NOT NULL, s TEXT);
CREATE TABLE kv (k TEXT NOT NULL, j INTEGER NOT NULL, v TEXT, PRIMARY KEY (k, j)) WITHOUT ROWID;
CREATE INDEX t_a ON t(a);
CREATE INDEX plain_x ON plain(x);
CREATE VIEW t_count AS SELECT count(*) AS rows FROM t;
";

    /// An integer of a random size class, the boundaries included.
    fn integer(rng: &mut SplitMix64) -> i64 {
        const EDGES: [i64; 18] = [
            0,
            1,
            -1,
            2,
            127,
            128,
            -128,
            -129,
            32767,
            -32769,
            8_388_607,
            8_388_608,
            2_147_483_647,
            -2_147_483_649,
            0x7fff_ffff_ffff,
            0x8000_0000_0000,
            i64::MAX,
            i64::MIN,
        ];
        match rng.below(3) {
            0 => EDGES[rng.below(EDGES.len() as u64) as usize],
            1 => (rng.next_u64() as i64) >> rng.below(64),
            _ => rng.below(5) as i64,
        }
    }

    fn text(rng: &mut SplitMix64, long: usize) -> String {
        let len = match rng.below(6) {
            0 => 0,
            1 => long,
            2 => long / 3,
            _ => rng.below(40) as usize,
        };
        (0..len)
            .map(|i| ['a', 'é', '€', 'z', '0'][(i + rng.below(5) as usize) % 5])
            .collect()
    }

    fn real(rng: &mut SplitMix64) -> Option<f64> {
        match rng.below(6) {
            0 => None,
            1 => Some(0.0),
            2 => Some(-2.5e300),
            3 => Some(3.0),
            _ => Some(
                f64::from_bits(rng.next_u64() >> 2) * if rng.below(2) == 0 { -1.0 } else { 1.0 },
            ),
        }
    }

    /// The first column of every row `sql` gives.
    /// Opens the database at `path`, asserting SQLite finds it intact.
    fn open_intact(path: &std::path::Path, context: &str) -> Connection {
        let conn = Connection::open(path).unwrap();
        let check: Vec<String> = first_column(&conn, "PRAGMA integrity_check");
        assert_eq!(check, ["ok"], "{context}");
        conn
    }

    fn first_column<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn sql_text(s: &Option<String>) -> Sql {
        s.clone().map_or(Sql::Null, Sql::Text)
    }

    /// Writes `rows` random rows to each table (long texts of `long`
    /// bytes) and checks every value, every index order and SQLite's
    /// integrity check.
    fn round_trip(seed: u64, rows: usize, long: usize) {
        let mut rng = SplitMix64(seed);
        let dir = std::env::temp_dir().join(format!(
            "heapdump-sqlite-file-{}-{seed}-{rows}",
            std::process::id()
        ));
        let path = dir.with_extension("db");
        type TRow = (i64, i64, Option<f64>, Option<String>, Option<i64>);
        let mut id = -3 - rng.below(3) as i64;
        let t: Vec<TRow> = (0..rows)
            .map(|_| {
                id += 1 + rng.below(3) as i64;
                let n = (rng.below(4) != 0).then(|| integer(&mut rng));
                (
                    id,
                    integer(&mut rng),
                    real(&mut rng),
                    (rng.below(5) != 0).then(|| text(&mut rng, long)),
                    n,
                )
            })
            .collect();
        let plain: Vec<(i64, Option<String>)> = (0..rows)
            .map(|_| {
                (
                    integer(&mut rng),
                    (rng.below(5) != 0).then(|| text(&mut rng, long)),
                )
            })
            .collect();
        let mut kv: Vec<(String, i64, Option<String>)> = Vec::new();
        for i in 0..rows {
            // Unique keys: texts differ by their suffix, some share a prefix.
            let k = format!("{}{i:05}", text(&mut rng, long));
            kv.push((
                k,
                integer(&mut rng),
                (rng.below(3) != 0).then(|| text(&mut rng, long)),
            ));
        }
        let mut db = DatabaseWriter::create(&path, DDL).unwrap();
        assert_eq!(db.table_names(), ["t", "plain", "kv"]);
        let mut sink = db.table("t").unwrap();
        for (id, a, r, s, n) in &t {
            sink.row(&[
                Value::Integer(*id),
                Value::Integer(*a),
                r.map_or(Value::Null, Value::Real),
                s.as_deref().map_or(Value::Null, Value::Text),
                n.map_or(Value::Null, Value::Integer),
            ])
            .unwrap();
        }
        assert_eq!(sink.finish().unwrap(), rows as u64);
        let mut sink = db.table("plain").unwrap();
        for (x, s) in &plain {
            sink.row(&[
                Value::Integer(*x),
                s.as_deref().map_or(Value::Null, Value::Text),
            ])
            .unwrap();
        }
        sink.finish().unwrap();
        let mut sink = db.table("kv").unwrap();
        for (k, j, v) in &kv {
            sink.row(&[
                Value::Text(k),
                Value::Integer(*j),
                v.as_deref().map_or(Value::Null, Value::Text),
            ])
            .unwrap();
        }
        sink.finish().unwrap();
        db.finish().unwrap();

        let conn = open_intact(&path, &format!("seed {seed}, {rows} rows"));
        let all = |sql: &str| -> Vec<Vec<Sql>> {
            let mut statement = conn.prepare(sql).unwrap();
            let columns = statement.column_count();
            statement
                .query_map([], |r| (0..columns).map(|i| r.get::<_, Sql>(i)).collect())
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let expected: Vec<Vec<Sql>> = t
            .iter()
            .map(|(id, a, r, s, n)| {
                vec![
                    Sql::Integer(*id),
                    Sql::Integer(*a),
                    r.map_or(Sql::Null, Sql::Real),
                    sql_text(s),
                    n.map_or(Sql::Null, Sql::Integer),
                ]
            })
            .collect();
        assert_eq!(all("SELECT id, a, r, s, n FROM t ORDER BY id"), expected);
        let mut by_a: Vec<(i64, i64)> = t.iter().map(|r| (r.1, r.0)).collect();
        by_a.sort_unstable();
        let by_a: Vec<Vec<Sql>> = by_a
            .iter()
            .map(|&(a, id)| vec![Sql::Integer(a), Sql::Integer(id)])
            .collect();
        assert_eq!(
            all("SELECT a, id FROM t INDEXED BY t_a ORDER BY a, id"),
            by_a
        );
        let expected: Vec<Vec<Sql>> = plain
            .iter()
            .enumerate()
            .map(|(i, (x, s))| vec![Sql::Integer(i as i64 + 1), Sql::Integer(*x), sql_text(s)])
            .collect();
        assert_eq!(
            all("SELECT rowid, x, s FROM plain ORDER BY rowid"),
            expected
        );
        let mut by_x: Vec<(i64, i64)> = plain
            .iter()
            .enumerate()
            .map(|(i, r)| (r.0, i as i64 + 1))
            .collect();
        by_x.sort_unstable();
        let by_x: Vec<Vec<Sql>> = by_x
            .iter()
            .map(|&(x, id)| vec![Sql::Integer(x), Sql::Integer(id)])
            .collect();
        assert_eq!(
            all("SELECT x, rowid FROM plain INDEXED BY plain_x ORDER BY x, rowid"),
            by_x
        );
        // A WITHOUT ROWID table is read in key order by its own B-tree.
        kv.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let expected: Vec<Vec<Sql>> = kv
            .iter()
            .map(|(k, j, v)| vec![Sql::Text(k.clone()), Sql::Integer(*j), sql_text(v)])
            .collect();
        assert_eq!(all("SELECT k, j, v FROM kv"), expected);
        assert_eq!(
            all("SELECT rows FROM t_count"),
            [[Sql::Integer(rows as i64)]]
        );
        drop(conn);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn random_rows_of_every_kind_read_back_exactly_in_table_and_index_order() {
        // Short texts: thousands of rows per page, two-level trees.
        round_trip(1, 20_000, 30);
        // Texts of 70,000 bytes (overflow in table leaves and indexes) and
        // 23,333 (overflow in index cells only).
        round_trip(2, 300, 70_000);
    }

    #[test]
    fn every_tree_shape_from_empty_to_three_levels_is_sound() {
        // With texts of up to 9,000 bytes a page holds a handful of cells
        // (and the tests' table fan-out is 5), so the counts up to 70 meet
        // each way a level can end (a leaf just full, a divider with
        // nothing after it, a last interior page with one cell: breaking
        // either repair makes this test fail), and 400 or 500 rows give
        // three levels.
        for rows in (0..=70).chain([400, 500]) {
            round_trip(100 + rows as u64, rows, 9_000);
        }
    }

    #[test]
    fn records_whose_header_needs_a_two_byte_length_read_back() {
        // 70 texts of 100 bytes: a 2-byte serial type each, a 141-byte
        // header, more columns than the stack buffer takes too.
        let columns: Vec<String> = (0..70).map(|i| format!("c{i} TEXT")).collect();
        let ddl = format!("CREATE TABLE wide ({});", columns.join(", "));
        let path = std::env::temp_dir().join(format!("heapdump-wide-{}.db", std::process::id()));
        let texts: Vec<String> = (0..70).map(|i| format!("{i:0>100}")).collect();
        let mut db = DatabaseWriter::create(&path, &ddl).unwrap();
        let mut sink = db.table("wide").unwrap();
        let row: Vec<Value<'_>> = texts.iter().map(|t| Value::Text(t)).collect();
        sink.row(&row).unwrap();
        sink.finish().unwrap();
        db.finish().unwrap();
        let conn = open_intact(&path, "");
        let back: Vec<String> = conn
            .query_row("SELECT * FROM wide", [], |r| {
                (0..70).map(|i| r.get(i)).collect()
            })
            .unwrap();
        assert_eq!(back, texts);
        drop(conn);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn varints_and_serial_types_match_the_format() {
        for (value, bytes) in [
            (0u64, &[0u8][..]),
            (127, &[0x7f]),
            (128, &[0x81, 0x00]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x81, 0x80, 0x00]),
            (u64::MAX, &[0xff; 9]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(varint_len(value), bytes.len());
        }
        let mut out = Vec::new();
        put_varint(&mut out, 1 << 56);
        assert_eq!(out, [0x80, 0xc0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
        assert_eq!(integer_serial(0), (8, 0));
        assert_eq!(integer_serial(1), (9, 0));
        assert_eq!(integer_serial(-1), (1, 1));
        assert_eq!(integer_serial(-129), (2, 2));
        assert_eq!(integer_serial(1 << 40), (5, 6));
        assert_eq!(integer_serial(i64::MIN), (6, 8));
    }

    /// A NULL (or a NaN, which SQLite stores as NULL) in a `NOT NULL`
    /// column, or in a `WITHOUT ROWID` key, is refused as SQLite refuses
    /// it, not written into a file that fails `PRAGMA integrity_check`.
    #[test]
    fn a_null_in_a_not_null_column_is_refused() {
        let path = std::env::temp_dir().join(format!(
            "heapdump-sqlite-file-{}-not-null.db",
            std::process::id()
        ));
        let ddl = "CREATE TABLE t (r REAL NOT NULL, s TEXT);
CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;
";
        for (table, row, column) in [
            ("t", [Value::Real(f64::NAN), Value::Text("x")], "r"),
            ("t", [Value::Null, Value::Null], "r"),
            ("kv", [Value::Null, Value::Text("x")], "k"),
        ] {
            let mut db = DatabaseWriter::create(&path, ddl).unwrap();
            let mut sink = db.table(table).unwrap();
            sink.row(&[Value::Real(1.5), Value::Text("kept")]).unwrap();
            let error = sink.row(&row).unwrap_err();
            assert_eq!(
                format!("{error:#}"),
                format!("table {table}: a NULL in the NOT NULL column {column}")
            );
        }
        std::fs::remove_file(&path).unwrap();
    }

    /// A `WITHOUT ROWID` key this writer cannot order (a collation other
    /// than BINARY, a descending column) is refused, not written in the
    /// wrong order.
    #[test]
    fn a_without_rowid_key_not_in_binary_ascending_order_is_refused() {
        let path = std::env::temp_dir().join(format!(
            "heapdump-sqlite-file-{}-order.db",
            std::process::id()
        ));
        for ddl in [
            "CREATE TABLE kv (k TEXT COLLATE NOCASE PRIMARY KEY, v TEXT) WITHOUT ROWID;",
            "CREATE TABLE kv (k INTEGER, v TEXT, PRIMARY KEY (k DESC)) WITHOUT ROWID;",
        ] {
            let error = DatabaseWriter::create(&path, ddl).unwrap_err();
            assert!(
                format!("{error:#}").contains("table kv"),
                "{ddl}: {error:#}"
            );
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Rows past 1 GiB: the lock-byte page is skipped, never referenced,
    /// and SQLite reads every row back. Ignored by default: it writes a
    /// 1.1 GB file (`cargo test -p heapdump-analyze --lib lock_byte --
    /// --ignored`).
    #[test]
    #[ignore]
    fn a_database_past_one_gibibyte_skips_the_lock_byte_page() {
        let path = std::env::temp_dir().join(format!(
            "heapdump-sqlite-file-{}-lock-byte.db",
            std::process::id()
        ));
        let ddl = "CREATE TABLE big (id INTEGER PRIMARY KEY, s TEXT NOT NULL);
CREATE TABLE small (x INTEGER NOT NULL);
CREATE INDEX small_x ON small(x);
";
        let mut db = DatabaseWriter::create(&path, ddl).unwrap();
        let text: String = (0..4 << 20)
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let mut sink = db.table("big").unwrap();
        for id in 0..270 {
            sink.row(&[Value::Integer(id as i64), Value::Text(&text[id..])])
                .unwrap();
        }
        sink.finish().unwrap();
        let small: Vec<i64> = (0..300_000i64)
            .map(|x| (x * 7919) % 300_000 - 150_000)
            .collect();
        let mut sink = db.table("small").unwrap();
        for &x in &small {
            sink.row(&[Value::Integer(x)]).unwrap();
        }
        sink.finish().unwrap();
        db.finish().unwrap();

        let conn = open_intact(&path, "");
        let pages: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        assert!(pages > u64::from(LOCK_BYTE_PAGE));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            pages * PAGE_SIZE as u64
        );
        let (rows, bytes): (i64, i64) = conn
            .query_row("SELECT count(*), sum(length(s)) FROM big", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (rows, bytes),
            (270, (0..270).map(|i| (4 << 20) - i).sum::<i64>())
        );
        let tail: String = conn
            .query_row("SELECT substr(s, -5) FROM big WHERE id = 269", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(tail, text[text.len() - 5..]);
        let by_index: Vec<i64> = first_column(
            &conn,
            "SELECT x FROM small INDEXED BY small_x WHERE x > -1000000 ORDER BY x",
        );
        let mut sorted = small;
        sorted.sort_unstable();
        assert_eq!(by_index, sorted);
        drop(conn);
        std::fs::remove_file(&path).unwrap();
    }
}
