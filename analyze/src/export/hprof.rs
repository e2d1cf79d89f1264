//! `heapdump tohprof`: the heap as a Java HPROF 1.0.2 file that VisualVM
//! (and other HPROF readers) open. `analyze/EXPORTS.md` documents the
//! mapping; `shared/notes/hprof-for-visualvm.md` the reader's rules it
//! follows.
//!
//! - Ids are 8 bytes. An object's id is its address; classes, thread
//!   objects, stack frames, strings and continuation objects get synthetic
//!   ids at `0xC000…` and above, which no user-space address reaches.
//! - One class per recovered type and allocation size (VisualVM's shallow
//!   size is the class's instance size, exactly), named after the type
//!   (abbreviated past 100 characters as the text tables are, unless
//!   [`HprofOptions::names`] says in full), with ` [N bytes]` appended
//!   when the type has several sizes, and ` (2)`, ` (3)` when two types
//!   abbreviate to one name. Its
//!   fields are the offsets where the scan found pointers in any of its
//!   objects, named by DWARF (`next`, `[3].value`) or `+0x18`, all of type
//!   Object. Bytes without pointers are not written as fields: the
//!   instance size carries them, so totals equal live bytes.
//! - A class holds at most 32,767 fields. An object whose class would
//!   need more is split into a chain: the object keeps 32,766 pointer
//!   fields and a `continued` field pointing at a continuation object
//!   (class `TYPE [continued N]`, instance size 0) holding the next
//!   32,766, and so on. Continuation objects add to the object count but
//!   not to the bytes.
//! - Roots: a thread's stack → ROOT_JAVA_FRAME, registers →
//!   ROOT_NATIVE_STACK, TLS → ROOT_THREAD_BLOCK, all naming the thread's
//!   serial; each thread is a `java.lang.Thread` object (size 0) with
//!   ROOT_THREAD_OBJ and START_THREAD. Pointers in data segments become
//!   static fields of a `statics of MODULE` class (named by the symbol
//!   they live in), which is a ROOT_STICKY_CLASS. Anything else is
//!   ROOT_UNKNOWN.
//! - Each allocation stack is a STACK TRACE of STACK FRAMEs (function,
//!   file, line; inlined frames included), the frames' class being the
//!   module they are in; each instance names its stack's serial.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context as _, Result};
use heapdump_formats::records::{owner_kind, root_kind, thread_flags};

use super::HeapModel;
use crate::site::Names;

/// Most fields one class may have (VisualVM reads the count as i16).
pub const MAX_FIELDS: usize = 32_767;
/// Pointer fields per object, or per continuation, when chained.
const CHUNK: usize = MAX_FIELDS - 1;
/// A heap dump segment is flushed once it holds this many bytes.
const SEGMENT_BYTES: usize = 8 << 20;
/// First synthetic id.
const SYNTHETIC: u64 = 0xC000_0000_0000_0000;

/// Top-level record tags.
mod tag {
    pub const UTF8: u8 = 0x01;
    pub const LOAD_CLASS: u8 = 0x02;
    pub const STACK_FRAME: u8 = 0x04;
    pub const STACK_TRACE: u8 = 0x05;
    pub const START_THREAD: u8 = 0x0A;
    pub const HEAP_DUMP_SEGMENT: u8 = 0x1C;
    pub const HEAP_DUMP_END: u8 = 0x2C;
}

/// Heap dump sub-record tags.
mod sub {
    pub const ROOT_UNKNOWN: u8 = 0xFF;
    pub const ROOT_JAVA_FRAME: u8 = 0x03;
    pub const ROOT_NATIVE_STACK: u8 = 0x04;
    pub const ROOT_STICKY_CLASS: u8 = 0x05;
    pub const ROOT_THREAD_BLOCK: u8 = 0x06;
    pub const ROOT_THREAD_OBJ: u8 = 0x08;
    pub const CLASS_DUMP: u8 = 0x20;
    pub const INSTANCE_DUMP: u8 = 0x21;
}

/// HPROF basic type of an object reference.
const OBJECT: u8 = 2;

/// Options of [`write_hprof`].
#[derive(Clone, Debug)]
pub struct HprofOptions {
    /// Header timestamp, milliseconds since the Unix epoch. VisualVM keys
    /// its index cache on it, so it must change between exports.
    pub timestamp_ms: u64,
    /// How class names name long types (`--full-names`): abbreviated by
    /// default, as the text tables and DOT labels are.
    pub names: Names,
}

impl Default for HprofOptions {
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        HprofOptions {
            timestamp_ms: now.as_millis() as u64,
            names: Names::Abbreviated,
        }
    }
}

/// What [`write_hprof`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HprofSummary {
    /// Instances for allocations (one each).
    pub instances: u64,
    /// Sum of their instance sizes (live bytes, unless some were clamped).
    pub bytes: u64,
    /// Continuation objects of allocations with more than 32,766 pointer fields.
    pub continuations: u64,
    /// Classes written (heap classes, required Java classes, statics, modules).
    pub classes: u64,
    /// Heap classes: one per type and size.
    pub heap_classes: u64,
    /// GC root sub-records written.
    pub roots: u64,
    /// Thread objects.
    pub threads: u64,
    /// Stack traces written.
    pub stack_traces: u64,
    /// Allocations above 2 GiB - 1, written with that size.
    pub clamped: u64,
}

/// One class to write.
struct ClassDef {
    id: u64,
    name: u64,
    super_id: u64,
    instance_size: u32,
    /// (name string id, type).
    fields: Vec<(u64, u8)>,
    /// (name string id, object id).
    statics: Vec<(u64, u64)>,
}

/// Interned UTF8 strings.
#[derive(Default)]
struct Strings {
    ids: HashMap<String, u64>,
    order: Vec<String>,
}

impl Strings {
    const BASE: u64 = 0xD000_0000_0000_0000;

    fn id(&mut self, text: &str) -> u64 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = Self::BASE + 1 + self.order.len() as u64;
        self.ids.insert(text.to_owned(), id);
        self.order.push(text.to_owned());
        id
    }
}

/// A heap class: one recovered type at one size.
struct HeapClass {
    type_index: u32,
    size: u64,
    /// A node of this class, for DWARF field names.
    example: u32,
    /// Sorted distinct source offsets of pointers.
    slots: Vec<u64>,
    /// `slots` is deduplicated when it reaches this length.
    dedup_at: usize,
    /// Class ids: the owner's, then each continuation's.
    ids: Vec<u64>,
}

fn put_u8(buf: &mut Vec<u8>, v: u8) {
    buf.push(v);
}
fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_be_bytes());
}
fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Writes one top-level record.
fn record(out: &mut impl Write, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = tag;
    head[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
    out.write_all(&head)?;
    out.write_all(body)
}

/// Heap dump sub-records, flushed as HEAP_DUMP_SEGMENTs.
struct Segments<'w, W: Write> {
    out: &'w mut W,
    buf: Vec<u8>,
}

impl<W: Write> Segments<'_, W> {
    /// Call after each complete sub-record.
    fn done(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= SEGMENT_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            record(self.out, tag::HEAP_DUMP_SEGMENT, &self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl super::Export for HprofOptions {
    type Summary = HprofSummary;

    fn name(&self) -> &'static str {
        "HPROF file"
    }

    fn file_name(&self) -> &'static str {
        "FILE.hprof"
    }

    fn kind(&self) -> super::OutputKind {
        super::OutputKind::Binary
    }

    fn needs_graph(&self) -> bool {
        true
    }

    fn write(&self, model: &HeapModel<'_>, out: &mut super::Output) -> Result<HprofSummary> {
        write_hprof(model, self, out)
    }
}

/// Writes `model` as HPROF to `out`: each stack's frames are the model's,
/// and a data-segment pointer's static is named by
/// [`HeapModel::symbol_at`].
pub fn write_hprof<W: Write>(
    model: &HeapModel<'_>,
    options: &HprofOptions,
    out: &mut W,
) -> Result<HprofSummary> {
    write(model, options, out).context("cannot write the HPROF file")
}

fn write<W: Write>(
    model: &HeapModel<'_>,
    options: &HprofOptions,
    out: &mut W,
) -> Result<HprofSummary> {
    let view = model.view();
    let allocations = view.allocations();
    let threads = view.threads();
    let roots = view.roots();
    let mut summary = HprofSummary::default();
    let mut strings = Strings::default();
    let mut next_synthetic = SYNTHETIC;
    let mut synthetic = || {
        next_synthetic += 1;
        next_synthetic
    };
    let empty = strings.id("");
    let mut classes: Vec<ClassDef> = Vec::new();
    let new_class = |classes: &mut Vec<ClassDef>, id: u64, name: u64, super_id: u64| {
        classes.push(ClassDef {
            id,
            name,
            super_id,
            instance_size: 0,
            fields: Vec::new(),
            statics: Vec::new(),
        });
        classes.len() - 1
    };

    // The classes VisualVM needs.
    let object = synthetic();
    let c = new_class(&mut classes, object, strings.id("java.lang.Object"), 0);
    classes[c].instance_size = 16;
    let class_class = synthetic();
    new_class(
        &mut classes,
        class_class,
        strings.id("java.lang.Class"),
        object,
    );
    let reference = synthetic();
    let c = new_class(
        &mut classes,
        reference,
        strings.id("java.lang.ref.Reference"),
        object,
    );
    classes[c].fields.push((strings.id("referent"), OBJECT));
    classes[c].instance_size = 8;
    for name in ["Weak", "Soft", "Final", "Phantom"] {
        let id = synthetic();
        let c = new_class(
            &mut classes,
            id,
            strings.id(&format!("java.lang.ref.{name}Reference")),
            reference,
        );
        classes[c].instance_size = 8;
    }
    let thread_class = synthetic();
    new_class(
        &mut classes,
        thread_class,
        strings.id("java.lang.Thread"),
        object,
    );

    // Heap classes: one per (type, size).
    let mut class_of: HashMap<(u32, u64), u32> = HashMap::new();
    let mut heap: Vec<HeapClass> = Vec::new();
    let mut alloc_class: Vec<u32> = Vec::with_capacity(allocations.len());
    for (i, a) in allocations.iter().enumerate() {
        let t = model.alloc_type.get(i).copied().unwrap_or(0);
        let next = heap.len() as u32;
        let c = *class_of.entry((t, a.size)).or_insert_with(|| {
            heap.push(HeapClass {
                type_index: t,
                size: a.size,
                example: i as u32,
                slots: Vec::new(),
                dedup_at: 1024,
                ids: Vec::new(),
            });
            next
        });
        alloc_class.push(c);
        let class = &mut heap[c as usize];
        for e in model.out_edges(i as u32) {
            class.slots.push(e.source_offset);
        }
        // Many objects of one class repeat the same offsets: deduplicate
        // whenever the list doubles, so it stays near the distinct count.
        if class.slots.len() >= class.dedup_at {
            class.slots.sort_unstable();
            class.slots.dedup();
            class.dedup_at = (2 * class.slots.len()).max(1024);
        }
    }
    let mut sizes_per_type: HashMap<u32, u32> = HashMap::new();
    for class in &heap {
        *sizes_per_type.entry(class.type_index).or_default() += 1;
    }
    let continued = strings.id("continued");
    // Abbreviation can give two long types one name: the later classes
    // of a name are told apart by a number.
    let mut names_used: HashMap<String, u32> = HashMap::new();
    for class in &mut heap {
        class.slots.sort_unstable();
        class.slots.dedup();
        let label = model
            .types
            .get(class.type_index as usize)
            .map_or("alloc@<unknown>", |t| t.label.as_str());
        let label = options.names.name(label);
        let mut name = if label.starts_with('[') {
            format!("rust {label}")
        } else {
            label
        };
        if sizes_per_type.get(&class.type_index).copied().unwrap_or(0) > 1 {
            name.push_str(&format!(" [{} bytes]", class.size));
        }
        let uses = names_used.entry(name.clone()).or_default();
        *uses += 1;
        if *uses > 1 {
            name.push_str(&format!(" ({uses})"));
        }
        let instance_size = if class.size > i32::MAX as u64 {
            i32::MAX as u32
        } else {
            class.size as u32
        };
        let chunks: Vec<&[u64]> = if class.slots.len() <= MAX_FIELDS {
            vec![&class.slots[..]]
        } else {
            class.slots.chunks(CHUNK).collect()
        };
        let chained = chunks.len() > 1;
        for (k, chunk) in chunks.iter().enumerate() {
            let id = synthetic();
            class.ids.push(id);
            let class_name = if k == 0 {
                strings.id(&name)
            } else {
                strings.id(&format!("{name} [continued {k}]"))
            };
            let c = new_class(&mut classes, id, class_name, object);
            classes[c].instance_size = if k == 0 { instance_size } else { 0 };
            for &offset in chunk.iter() {
                let field = model
                    .field_label(class.example, offset)
                    .unwrap_or_else(|| format!("+{offset:#x}"));
                classes[c].fields.push((strings.id(&field), OBJECT));
            }
            if chained {
                classes[c].fields.push((continued, OBJECT));
            }
        }
    }
    summary.heap_classes = heap.len() as u64;

    // Statics: pointers in data segments, one holder class per module.
    let mut holders: HashMap<String, Vec<usize>> = HashMap::new();
    let mut holder_order: Vec<String> = Vec::new();
    for e in model.root_edges() {
        let Some(root) = roots.get(e.source as usize) else {
            continue;
        };
        if root.kind != root_kind::DATA_SEGMENT {
            continue;
        }
        let module = if root.owner_kind == owner_kind::MODULE {
            view.modules()
                .get(root.owner as usize)
                .and_then(|m| view.string_lossy(m.path).ok())
                .map(|p| p.rsplit('/').next().unwrap_or_default().to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let module = if module.is_empty() {
            "data".to_owned()
        } else {
            module
        };
        let address = root.address.wrapping_add(e.source_offset);
        let field = model
            .symbol_at(address)
            .unwrap_or_else(|| format!("{address:#x}"));
        let target = allocations.get(e.target as usize).map_or(0, |a| a.address);
        let list = match holders.get_mut(&module) {
            Some(list) => list,
            None => {
                holder_order.push(module.clone());
                holders.entry(module.clone()).or_default()
            }
        };
        let needs_new = match list.last() {
            Some(&c) => classes[c].statics.len() >= MAX_FIELDS,
            None => true,
        };
        if needs_new {
            let n = list.len();
            let name = if n == 0 {
                format!("statics of {module}")
            } else {
                format!("statics of {module} ({})", n + 1)
            };
            let id = synthetic();
            let c = new_class(&mut classes, id, strings.id(&name), object);
            list.push(c);
        }
        let c = *list.last().unwrap_or(&0);
        let sid = strings.id(&field);
        classes[c].statics.push((sid, target));
    }
    let sticky: Vec<u64> = holder_order
        .iter()
        .flat_map(|m| holders.get(m).into_iter().flatten())
        .map(|&c| classes[c].id)
        .collect();

    // Stack frames, one class per module for their class serials.
    let mut module_class: HashMap<String, usize> = HashMap::new();
    // The model's frame ids, and the HPROF id of each frame written so far.
    let mut frame_ids: HashMap<u32, u64> = HashMap::new();
    let mut frame_records: Vec<u8> = Vec::new();
    let mut trace_records: Vec<u8> = Vec::new();
    let mut stack_ids: Vec<u32> = model.stack_names.keys().copied().collect();
    stack_ids.sort_unstable();
    let max_stack = stack_ids.last().copied().unwrap_or(0);
    // Class serials are class index + 1; known once classes stop growing,
    // so frames record the class index and are patched below.
    let mut pending_frames: Vec<(u64, u64, u64, usize, i32)> = Vec::new();
    for &stack in &stack_ids {
        let list = model.stack_frames(stack);
        let mut body = Vec::with_capacity(12 + 8 * list.len());
        put_u32(&mut body, stack.wrapping_add(1));
        put_u32(&mut body, 0);
        put_u32(&mut body, list.len() as u32);
        for &frame_id in list {
            let id = match frame_ids.get(&frame_id) {
                Some(&id) => id,
                None => {
                    let frame = &model.frames()[frame_id as usize];
                    let id = synthetic();
                    frame_ids.insert(frame_id, id);
                    let module = frame
                        .module
                        .as_deref()
                        .map(|m| m.rsplit('/').next().unwrap_or(m).to_owned())
                        .unwrap_or_else(|| "<unknown module>".to_owned());
                    let c = match module_class.get(&module) {
                        Some(&c) => c,
                        None => {
                            let cid = synthetic();
                            let c = new_class(&mut classes, cid, strings.id(&module), object);
                            module_class.insert(module, c);
                            c
                        }
                    };
                    let method = frame
                        .function
                        .clone()
                        .unwrap_or_else(|| format!("{:#x}", frame.pc));
                    let method = if frame.inlined {
                        format!("{method} [inlined]")
                    } else {
                        method
                    };
                    let file = frame
                        .file
                        .as_deref()
                        .map_or(empty, |f| strings.id(f.rsplit('/').next().unwrap_or(f)));
                    let line = frame.line.map_or(-1, |l| l.min(i32::MAX as u32) as i32);
                    pending_frames.push((id, strings.id(&method), file, c, line));
                    id
                }
            };
            put_u64(&mut body, id);
        }
        record(&mut trace_records, tag::STACK_TRACE, &body)?;
        summary.stack_traces += 1;
    }

    // Threads: alive ones, and any a root names.
    let mut has_thread = vec![false; threads.len()];
    for (i, t) in threads.iter().enumerate() {
        if t.flags & thread_flags::ALIVE != 0 {
            has_thread[i] = true;
        }
    }
    for r in roots.iter() {
        if r.owner_kind == owner_kind::THREAD
            && let Some(flag) = has_thread.get_mut(r.owner as usize)
        {
            *flag = true;
        }
    }
    let native_frame = synthetic();
    let native_class = new_class(&mut classes, synthetic(), strings.id("native"), object);
    pending_frames.push((
        native_frame,
        strings.id("<native frames>"),
        empty,
        native_class,
        -3,
    ));
    let mut thread_records: Vec<u8> = Vec::new();
    let mut thread_objects: Vec<(u64, u32, u32)> = Vec::new();
    for (i, t) in threads.iter().enumerate() {
        if !has_thread[i] {
            continue;
        }
        // Serials wrap rather than panic on a dump with absurd counts.
        let serial = (i as u32).wrapping_add(1);
        let trace = max_stack.wrapping_add(2).wrapping_add(i as u32);
        let mut body = Vec::new();
        put_u32(&mut body, trace);
        put_u32(&mut body, serial);
        put_u32(&mut body, 1);
        put_u64(&mut body, native_frame);
        record(&mut trace_records, tag::STACK_TRACE, &body)?;
        summary.stack_traces += 1;
        let id = synthetic();
        let name = view.string_lossy(t.name).unwrap_or_default();
        let name = if name.is_empty() {
            format!("thread {}", t.tid)
        } else {
            format!("{name} (tid {})", t.tid)
        };
        let mut body = Vec::new();
        put_u32(&mut body, serial);
        put_u64(&mut body, id);
        put_u32(&mut body, trace);
        put_u64(&mut body, strings.id(&name));
        put_u64(&mut body, strings.id("main"));
        put_u64(&mut body, empty);
        record(&mut thread_records, tag::START_THREAD, &body)?;
        thread_objects.push((id, serial, trace));
    }
    for (id, name, file, c, line) in pending_frames {
        let mut body = Vec::new();
        put_u64(&mut body, id);
        put_u64(&mut body, name);
        put_u64(&mut body, empty);
        put_u64(&mut body, file);
        put_u32(&mut body, (c as u32).wrapping_add(1));
        put_u32(&mut body, line as u32);
        record(&mut frame_records, tag::STACK_FRAME, &body)?;
    }

    // Header, strings, classes, frames, traces, threads.
    out.write_all(b"JAVA PROFILE 1.0.2\0")?;
    out.write_all(&8u32.to_be_bytes())?;
    out.write_all(&options.timestamp_ms.to_be_bytes())?;
    let mut body = Vec::new();
    for (i, text) in strings.order.iter().enumerate() {
        body.clear();
        put_u64(&mut body, Strings::BASE + 1 + i as u64);
        body.extend_from_slice(text.as_bytes());
        record(out, tag::UTF8, &body)?;
    }
    for (i, class) in classes.iter().enumerate() {
        body.clear();
        put_u32(&mut body, (i as u32).wrapping_add(1));
        put_u64(&mut body, class.id);
        put_u32(&mut body, 1);
        put_u64(&mut body, class.name);
        record(out, tag::LOAD_CLASS, &body)?;
    }
    out.write_all(&frame_records)?;
    out.write_all(&trace_records)?;
    out.write_all(&thread_records)?;
    summary.classes = classes.len() as u64;
    summary.threads = thread_objects.len() as u64;

    let mut seg = Segments {
        out,
        buf: Vec::with_capacity(SEGMENT_BYTES + (1 << 20)),
    };
    for class in &classes {
        let b = &mut seg.buf;
        put_u8(b, sub::CLASS_DUMP);
        put_u64(b, class.id);
        put_u32(b, 1);
        put_u64(b, class.super_id);
        for _ in 0..5 {
            put_u64(b, 0);
        }
        put_u32(b, class.instance_size);
        put_u16(b, 0);
        put_u16(b, class.statics.len() as u16);
        for &(name, value) in &class.statics {
            put_u64(b, name);
            put_u8(b, OBJECT);
            put_u64(b, value);
        }
        put_u16(b, class.fields.len() as u16);
        for &(name, ty) in &class.fields {
            put_u64(b, name);
            put_u8(b, ty);
        }
        seg.done()?;
    }

    // Roots.
    for &id in &sticky {
        put_u8(&mut seg.buf, sub::ROOT_STICKY_CLASS);
        put_u64(&mut seg.buf, id);
        summary.roots += 1;
        seg.done()?;
    }
    for &(id, serial, trace) in &thread_objects {
        let b = &mut seg.buf;
        put_u8(b, sub::ROOT_THREAD_OBJ);
        put_u64(b, id);
        put_u32(b, serial);
        put_u32(b, trace);
        summary.roots += 1;
        seg.done()?;
    }
    for e in model.root_edges() {
        let (Some(root), Some(target)) = (
            roots.get(e.source as usize),
            allocations.get(e.target as usize),
        ) else {
            continue;
        };
        if root.kind == root_kind::DATA_SEGMENT {
            continue;
        }
        let serial = (root.owner_kind == owner_kind::THREAD
            && has_thread
                .get(root.owner as usize)
                .copied()
                .unwrap_or(false))
        .then_some(root.owner.wrapping_add(1));
        let b = &mut seg.buf;
        match (root.kind, serial) {
            (root_kind::THREAD_STACK, Some(serial)) => {
                put_u8(b, sub::ROOT_JAVA_FRAME);
                put_u64(b, target.address);
                put_u32(b, serial);
                put_u32(b, 0);
            }
            (root_kind::REGISTERS, Some(serial)) => {
                put_u8(b, sub::ROOT_NATIVE_STACK);
                put_u64(b, target.address);
                put_u32(b, serial);
            }
            (root_kind::STATIC_TLS | root_kind::DYNAMIC_TLS, Some(serial)) => {
                put_u8(b, sub::ROOT_THREAD_BLOCK);
                put_u64(b, target.address);
                put_u32(b, serial);
            }
            _ => {
                put_u8(b, sub::ROOT_UNKNOWN);
                put_u64(b, target.address);
            }
        }
        summary.roots += 1;
        seg.done()?;
    }

    // Thread objects, then one instance per allocation.
    for &(id, _, trace) in &thread_objects {
        let b = &mut seg.buf;
        put_u8(b, sub::INSTANCE_DUMP);
        put_u64(b, id);
        put_u32(b, trace);
        put_u64(b, thread_class);
        put_u32(b, 0);
        seg.done()?;
    }
    let mut values: Vec<u64> = Vec::new();
    let mut edges: Vec<(u64, u64)> = Vec::new();
    for (i, a) in allocations.iter().enumerate() {
        let class = &heap[alloc_class[i] as usize];
        edges.clear();
        edges.extend(model.out_edges(i as u32).map(|e| {
            let target = allocations.get(e.target as usize).map_or(0, |t| t.address);
            (e.source_offset, target)
        }));
        if !edges.is_sorted_by_key(|e| e.0) {
            edges.sort_unstable_by_key(|e| e.0);
        }
        values.clear();
        let mut next = edges.iter().peekable();
        for &slot in &class.slots {
            while next.peek().is_some_and(|e| e.0 < slot) {
                next.next();
            }
            values.push(match next.peek() {
                Some(&&(offset, target)) if offset == slot => target,
                _ => 0,
            });
        }
        let trace = a.stack.wrapping_add(1);
        let chunks = class.ids.len();
        let mut id = a.address;
        for (k, &class_id) in class.ids.iter().enumerate() {
            let part = if chunks == 1 {
                &values[..]
            } else {
                let end = ((k + 1) * CHUNK).min(values.len());
                &values[k * CHUNK..end]
            };
            let next_id = if k + 1 < chunks { synthetic() } else { 0 };
            let b = &mut seg.buf;
            put_u8(b, sub::INSTANCE_DUMP);
            put_u64(b, id);
            put_u32(b, trace);
            put_u64(b, class_id);
            let fields = part.len() + usize::from(chunks > 1);
            put_u32(b, (fields * 8) as u32);
            for &v in part {
                put_u64(b, v);
            }
            if chunks > 1 {
                put_u64(b, next_id);
            }
            if k > 0 {
                summary.continuations += 1;
            }
            id = next_id;
            seg.done()?;
        }
        summary.instances += 1;
        if a.size > i32::MAX as u64 {
            summary.clamped += 1;
            summary.bytes = summary.bytes.saturating_add(i32::MAX as u64);
        } else {
            summary.bytes = summary.bytes.saturating_add(a.size);
        }
    }
    seg.flush()?;
    record(seg.out, tag::HEAP_DUMP_END, &[])?;
    Ok(summary)
}
