//! A heap shaped like the ones real programs make, each shape with its own
//! block size so a test can find it:
//!
//! | size | shape | what the reports should say |
//! |---:|---|---|
//! | 800 | a `SmallVec` that spilled, grown by the `smallvec` crate for `index_words` | site in `smallvec`, from `real_heaps::index_words` |
//! | 72 | a block whose only "pointer" is bytes in a `Vec<u8>` held by a static | definitely lost: a byte buffer holds no pointer |
//! | 64 | that `Vec<u8>` | still reachable |
//! | 40 × 12 | `Rc<Holder>`s from one site, each holding a `Vec<u64>` of 8 × (i + 1) elements | one row of 12 objects retaining 104 B to 808 B |
//! | 32 | a `Box<Reading>` (a struct of numbers only, an enum among them) whose `f64` holds the bits of an 88-byte block's address | the 88-byte block is definitely lost: DWARF says a `Reading` holds no pointer |
//! | 64 | a `Vec<Reading>` buffer whose second element's `f64` holds a 96-byte block's address | the 96-byte block is definitely lost |
//! | 16 | a `Box<Keeper>` whose `Box<[u32; 26]>` field points to a 104-byte block | still reachable: a `Box` field is a pointer |
//! | 16 | a `Box<Handle>` whose `usize` field holds a 112-byte block's address | still reachable: an address-wide integer may hold an address |
//! | 10 | a `Box<Wrapper<Wrapper<…<[u16; 5]>…>>>`, six deep, from `boxed::<Wrapper<…>>` | a type and a function name over 100 characters, abbreviated in text tables, DOT labels and HPROF class names |
//!
//! It writes a dump to the path given as its argument and exits.
//!
//! `cargo run --release -p heapdump-examples --bin real_heaps -- real.hdump`

use std::alloc::System;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Mutex;

use heapdump_capture::Tracker;
use smallvec::SmallVec;

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system();

/// The byte buffer that holds a block's address as data.
static BYTES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The positions of the words of `text`: 100 words spill the `SmallVec`
/// to the heap, where `smallvec`'s own code grows it (to 100 `u64`s).
#[inline(never)]
fn index_words(text: &str) -> SmallVec<[u64; 4]> {
    let mut positions = SmallVec::new();
    let mut at = 0u64;
    for word in text.split(' ') {
        positions.push(at);
        at += word.len() as u64 + 1;
    }
    positions.shrink_to_fit(); // own frame: index_words
    positions
}

/// A 72-byte block whose address is then written, as bytes, into a
/// 64-byte `Vec<u8>` kept in a static: a conservative scan sees a pointer,
/// but a byte buffer cannot hold one.
#[inline(never)]
fn hide_in_bytes() {
    let block = Box::into_raw(Box::new([7u64; 9])) as usize; // site: hidden block
    let mut bytes: Vec<u8> = Vec::with_capacity(64); // site: byte buffer
    bytes.extend_from_slice(&block.to_ne_bytes());
    bytes.resize(64, 0);
    *BYTES.lock().unwrap_or_else(|e| e.into_inner()) = bytes;
}

/// A reading of numbers only: no member, recursively, can hold a pointer.
#[derive(Clone, Copy)]
struct Reading {
    celsius: f64,
    samples: [f32; 4],
    station: u32,
    unit: Unit,
}

/// Numbers in an enum's variants: still no pointer.
#[derive(Clone, Copy)]
enum Unit {
    Celsius,
    Kelvin(u16),
    Fahrenheit { offset: i16 },
}

/// A struct whose `Box` field is a pointer.
struct Keeper {
    id: u32,
    kept: Box<[u32; 26]>,
}

/// A struct whose `usize` may hold an address (a handle, a `uintptr_t`).
struct Handle {
    id: u32,
    raw: usize,
}

static READING: Mutex<Option<Box<Reading>>> = Mutex::new(None);
static READINGS: Mutex<Vec<Reading>> = Mutex::new(Vec::new());
static KEEPER: Mutex<Option<Box<Keeper>>> = Mutex::new(None);
static HANDLE: Mutex<Option<Box<Handle>>> = Mutex::new(None);

/// A generic struct nested six deep has a name longer than the text tables
/// show whole.
struct Wrapper<T>(T);

type Deep = Wrapper<Wrapper<Wrapper<Wrapper<Wrapper<Wrapper<[u16; 5]>>>>>>;

static DEEP: Mutex<Option<Box<Deep>>> = Mutex::new(None);

/// A generic function: its instance's name is as long as its argument's.
#[inline(never)]
fn boxed<T>(value: T) -> Box<T> {
    Box::new(value) // site: deep
}

/// One block of a type with a long name, allocated in a function with one.
#[inline(never)]
fn wrap_deeply() {
    let deep = Wrapper(Wrapper(Wrapper(Wrapper(Wrapper(Wrapper([6u16; 5]))))));
    *DEEP.lock().unwrap_or_else(|e| e.into_inner()) = Some(boxed(deep));
}

/// A reading whose `celsius` holds the bits of `address`.
fn reading(address: usize, unit: Unit) -> Reading {
    Reading {
        celsius: f64::from_bits(address as u64),
        samples: [1.0, 2.0, 3.0, 4.0],
        station: 7,
        unit,
    }
}

/// The blocks of the table above whose only "pointers" are in numbers,
/// and two whose fields do point.
#[inline(never)]
fn hide_in_numbers() {
    let in_box = Box::into_raw(Box::new([3u32; 22])) as usize; // site: hidden by a Reading
    *READING.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(Box::new(reading(in_box, Unit::Kelvin(273)))); // site: boxed Reading
    let in_vec = Box::into_raw(Box::new([5u32; 24])) as usize; // site: hidden by a Vec<Reading>
    let mut readings = Vec::with_capacity(2); // site: Reading buffer
    readings.extend([
        reading(0, Unit::Celsius),
        reading(in_vec, Unit::Fahrenheit { offset: 32 }),
    ]);
    *READINGS.lock().unwrap_or_else(|e| e.into_inner()) = readings;
    *KEEPER.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(Keeper {
        id: 1,
        kept: Box::new([8u32; 26]), // site: kept by a Box field
    }));
    let raw = Box::into_raw(Box::new([9u32; 28])) as usize; // site: held by a usize
    *HANDLE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(Handle { id: 2, raw }));
}

/// Reads every field, so none is dead code.
fn checksum() -> f64 {
    let unit = |u: Unit| match u {
        Unit::Celsius => 0.0,
        Unit::Kelvin(k) => f64::from(k),
        Unit::Fahrenheit { offset } => f64::from(offset),
    };
    let of = |r: &Reading| {
        r.celsius.to_bits() as f64
            + r.samples.iter().map(|&s| f64::from(s)).sum::<f64>()
            + f64::from(r.station)
            + unit(r.unit)
    };
    let mut sum = READING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_deref()
        .map_or(0.0, of);
    sum += READINGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(of)
        .sum::<f64>();
    if let Some(k) = KEEPER.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        sum += f64::from(k.id) + f64::from(k.kept[0]);
    }
    if let Some(h) = HANDLE.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        sum += f64::from(h.id) + (h.raw & 1) as f64;
    }
    if let Some(d) = DEEP.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        sum += f64::from(d.0.0.0.0.0.0[0]);
    }
    sum
}

/// One of many holders from one site: an `RcInner<Holder>` of 40 bytes.
struct Holder {
    data: Vec<u64>,
}

/// Twelve holders from one line, holding 64 to 768 bytes each.
#[inline(never)]
fn make_holders() -> Vec<Rc<Holder>> {
    (0..12)
        .map(|i| {
            Rc::new(Holder {
                data: vec![i as u64; 8 * (i + 1)],
            })
        })
        .collect()
}

/// Overwrites the stack below the caller, so no stale copy of the hidden
/// block's address survives in a dead frame.
#[inline(never)]
fn scrub_stack() {
    let zeros = black_box([0u64; 16 * 1024]);
    black_box(&zeros);
}

/// The dump path, parsed in a frame of its own (see `leaks.rs`).
#[inline(never)]
fn dump_path() -> Option<String> {
    std::env::args().nth(1)
}

fn main() {
    let Some(path) = dump_path() else {
        eprintln!("usage: real_heaps DUMP_PATH");
        std::process::exit(2);
    };
    let text = "word ".repeat(99) + "end";
    let positions = index_words(&text);
    drop(text);
    hide_in_bytes();
    hide_in_numbers();
    wrap_deeply();
    let holders = make_holders();
    scrub_stack();
    if let Err(error) = heapdump_capture::dump_to_path(&path) {
        eprintln!("real_heaps: cannot write {path}: {error}");
        std::process::exit(1);
    }
    let held: usize = holders.iter().map(|h| h.data.len()).sum();
    println!(
        "RESULT positions={} held={held} checksum={}",
        positions.len(),
        checksum()
    );
    black_box((&positions, &holders));
}
