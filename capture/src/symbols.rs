//! Function names for a dump's frames, from the symbol tables of the loaded
//! modules' ELF files, so a dump can be read when the binary is gone.
//!
//! [`name_frames`] maps each module's file read-only, takes its `.symtab`
//! (else `.dynsym`), sorts the function symbols in scratch memory and names
//! every frame whose `pc - 1` lies inside one. The name is the raw (mangled)
//! symbol; the analyzer demangles.
//!
//! The file is untrusted input: it may be truncated, replaced since it was
//! loaded (its build-id is checked against the module's), or not ELF at
//! all. Every offset and length is checked; anything wrong yields no names
//! for that module, never a wrong name, a panic or a fault. Nothing here
//! allocates on the heap.
//!
//! **Never call this while other threads are stopped**: opening and
//! reading files can block (a slow or network file system), and a stopped
//! thread may hold a lock that file access needs (the dynamic loader's, for
//! one). The dump names frames after it has resumed the world.

use core::cmp::Ordering;
use core::ffi::CStr;

use heapdump_formats::records::{FrameNameRecord, ModuleRecord, StrRef, module_flags};
use heapdump_formats::write::{DumpWriter, Sink, StringTable, WriteError};

use crate::modules::find_build_id;
use crate::sys::{self, Scratch, Zeroable};

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EHDR_SIZE: usize = 64;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;
const SHT_SYMTAB: u32 = 2;
const SHT_NOTE: u32 = 7;
const SHT_NOBITS: u32 = 8;
const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;
/// Longer names are cut off by no one: a symbol whose name is longer than
/// this (or has no terminating NUL) is left unnamed.
const MAX_NAME: usize = 64 << 10;
/// Section headers read at most (a corrupt count cannot make us walk more).
const MAX_SECTIONS: usize = 1 << 16;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut raw = [0u8; 8];
    raw.copy_from_slice(b);
    Some(u64::from_le_bytes(raw))
}

/// One section header, the fields we use.
#[derive(Clone, Copy)]
struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
    entsize: u64,
}

/// The symbol and string tables of an ELF64 little-endian file.
pub struct ElfSymbols<'a> {
    symbols: &'a [u8],
    names: &'a [u8],
}

/// The bytes of a section, if it has bytes in the file and they lie inside.
fn section_bytes<'a>(file: &'a [u8], section: &Section) -> Option<&'a [u8]> {
    if section.kind == SHT_NOBITS {
        return None;
    }
    let start = usize::try_from(section.offset).ok()?;
    let end = start.checked_add(usize::try_from(section.size).ok()?)?;
    file.get(start..end)
}

/// Section headers: where they are, how many, and header `i`.
struct Headers<'a> {
    file: &'a [u8],
    table: usize,
    count: usize,
}

impl<'a> Headers<'a> {
    fn new(file: &'a [u8]) -> Option<Headers<'a>> {
        let ident = file.get(..16)?;
        if ident[..4] != ELF_MAGIC || ident[4] != ELFCLASS64 || ident[5] != ELFDATA2LSB {
            return None;
        }
        if file.len() < EHDR_SIZE {
            return None;
        }
        let table = usize::try_from(u64_at(file, 0x28)?).ok()?;
        let entsize = usize::from(u16_at(file, 0x3a)?);
        if table == 0 || entsize != SHDR_SIZE {
            return None;
        }
        let mut headers = Headers {
            file,
            table,
            count: usize::from(u16_at(file, 0x3c)?),
        };
        // More than 0xff00 sections: the count is in section 0's size.
        if headers.count == 0 {
            headers.count = 1;
            headers.count = usize::try_from(headers.get(0)?.size).ok()?;
        }
        // Every header must be inside the file.
        let bytes = headers.count.checked_mul(SHDR_SIZE)?;
        file.get(table..table.checked_add(bytes)?)?;
        (headers.count <= MAX_SECTIONS).then_some(headers)
    }

    fn get(&self, index: usize) -> Option<Section> {
        if index >= self.count {
            return None;
        }
        let at = self.table.checked_add(index.checked_mul(SHDR_SIZE)?)?;
        let header = self.file.get(at..at.checked_add(SHDR_SIZE)?)?;
        Some(Section {
            kind: u32_at(header, 4)?,
            offset: u64_at(header, 24)?,
            size: u64_at(header, 32)?,
            link: u32_at(header, 40)?,
            entsize: u64_at(header, 56)?,
        })
    }

    fn iter(&self) -> impl Iterator<Item = Section> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }
}

impl<'a> ElfSymbols<'a> {
    /// The file's `.symtab`, else its `.dynsym`, with its string table.
    /// `None` for anything that is not a sound ELF64 little-endian file
    /// with one of them.
    pub fn parse(file: &'a [u8]) -> Option<ElfSymbols<'a>> {
        let headers = Headers::new(file)?;
        let table = headers
            .iter()
            .find(|s| s.kind == SHT_SYMTAB)
            .or_else(|| headers.iter().find(|s| s.kind == SHT_DYNSYM))?;
        if table.entsize != SYM_SIZE as u64 {
            return None;
        }
        let symbols = section_bytes(file, &table)?;
        let names = section_bytes(file, &headers.get(usize::try_from(table.link).ok()?)?)?;
        Some(ElfSymbols { symbols, names })
    }

    /// The GNU build-id of the file (from its `SHT_NOTE` sections); empty
    /// if it has none or the file is not sound.
    pub fn build_id(file: &'a [u8]) -> &'a [u8] {
        let Some(headers) = Headers::new(file) else {
            return &[];
        };
        headers
            .iter()
            .filter(|s| s.kind == SHT_NOTE)
            .filter_map(|s| section_bytes(file, &s))
            .map(find_build_id)
            .find(|id| !id.is_empty())
            .unwrap_or(&[])
    }

    /// How many symbols the table holds.
    pub fn len(&self) -> usize {
        self.symbols.len() / SYM_SIZE
    }

    /// Function symbol `index` as (start, size, name offset), if it is a
    /// defined function (or ifunc) with a non-zero size.
    pub fn function(&self, index: usize) -> Option<FunctionSymbol> {
        let at = index.checked_mul(SYM_SIZE)?;
        let symbol = self.symbols.get(at..at.checked_add(SYM_SIZE)?)?;
        let kind = symbol[4] & 0xf;
        let section = u16_at(symbol, 6)?;
        let start = u64_at(symbol, 8)?;
        let size = u64_at(symbol, 16)?;
        if (kind != STT_FUNC && kind != STT_GNU_IFUNC) || section == SHN_UNDEF || size == 0 {
            return None;
        }
        Some(FunctionSymbol {
            start,
            end: start.checked_add(size)?,
            name: u32_at(symbol, 0)?,
            named: StrRef::EMPTY,
        })
    }

    /// The NUL-terminated name at `offset` in the string table, without the
    /// NUL; `None` if empty, unterminated, too long or outside the table.
    pub fn name(&self, offset: u32) -> Option<&'a [u8]> {
        let rest = self.names.get(usize::try_from(offset).ok()?..)?;
        let rest = rest.get(..rest.len().min(MAX_NAME + 1))?;
        let end = rest.iter().position(|&b| b == 0)?;
        (end > 0).then(|| &rest[..end])
    }
}

/// A function's extent in the file's address space and its name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// `st_value`.
    pub start: u64,
    /// `st_value + st_size`.
    pub end: u64,
    /// `st_name`: offset in the string table.
    pub name: u32,
    /// The name once added to the dump's strings (shared by every frame in
    /// the function).
    named: StrRef,
}

// SAFETY: integers (and a `StrRef` of integers); zero is valid.
unsafe impl Zeroable for FunctionSymbol {}
// SAFETY: two integers; zero is valid (the empty string).
unsafe impl Zeroable for StrRef {}

/// The function symbols of a table, sorted by start, in scratch memory.
pub struct SortedFunctions<'s> {
    list: &'s mut [FunctionSymbol],
}

impl<'s> SortedFunctions<'s> {
    /// Scratch memory for the function symbols of `symbols`; `None` when
    /// there are none or no memory.
    pub fn scratch(symbols: &ElfSymbols<'_>) -> Option<Scratch> {
        let count = (0..symbols.len())
            .filter(|&i| symbols.function(i).is_some())
            .count();
        if count == 0 {
            return None;
        }
        Scratch::new(
            count
                .checked_mul(size_of::<FunctionSymbol>())?
                .checked_add(64)?,
        )
    }

    /// Collects and sorts, in `memory` from [`scratch`](Self::scratch) for
    /// the same symbols; `None` when it is too small.
    pub fn new(symbols: &ElfSymbols<'_>, memory: &'s Scratch) -> Option<SortedFunctions<'s>> {
        let count = (0..symbols.len())
            .filter(|&i| symbols.function(i).is_some())
            .count();
        let list = memory.take::<FunctionSymbol>(count)?;
        let mut filled = 0;
        for function in (0..symbols.len()).filter_map(|i| symbols.function(i)) {
            if let Some(slot) = list.get_mut(filled) {
                *slot = function;
                filled += 1;
            }
        }
        // Aliases share a start: the order among them is fixed by the name
        // offset, so the same file always gives the same name.
        let list = &mut list[..filled];
        list.sort_unstable_by(|a, b| match a.start.cmp(&b.start) {
            Ordering::Equal => (a.end, a.name).cmp(&(b.end, b.name)),
            other => other,
        });
        Some(SortedFunctions { list })
    }

    /// The index of a function whose extent holds `address`.
    pub fn find(&self, address: u64) -> Option<usize> {
        // The last function starting at or below the address, then a few
        // before it, for a function nested inside a bigger one's extent.
        let after = self.list.partition_point(|f| f.start <= address);
        (after.saturating_sub(8)..after)
            .rev()
            .find(|&i| self.list.get(i).is_some_and(|f| address < f.end))
    }
}

/// A module's file, mapped read-only for as long as this lives.
struct MappedFile {
    base: *const u8,
    len: usize,
}

impl MappedFile {
    /// Maps the file at `path`; `None` on any error (a missing or empty
    /// file, not a regular file).
    fn open(path: &CStr) -> Option<MappedFile> {
        let fd = sys::open_read_only(path).ok()?;
        let len = sys::regular_file_size(fd).and_then(|size| usize::try_from(size).ok());
        let base = len.and_then(|len| sys::map_file_read_only(fd, len));
        // The mapping stays valid once the file is closed.
        let _ = sys::close(fd);
        Some(MappedFile {
            base: base?,
            len: len?,
        })
    }

    fn bytes(&self) -> &[u8] {
        // A file truncated by someone else meanwhile would fault on the
        // pages past its new end (SIGBUS), as any reader of a mapped file
        // risks; modules' files are replaced by rename, not truncated.
        // SAFETY: `base..base + len` is our readable mapping, alive until drop.
        unsafe { core::slice::from_raw_parts(self.base, self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, no longer borrowed.
        unsafe { sys::unmap(self.base.cast_mut(), self.len) }
    }
}

/// Names the frames at `pcs` (return addresses) into `out` (same length):
/// the raw symbol of the function holding `pc - 1`, added to `strings`,
/// or [`StrRef::EMPTY`] when unknown. `modules` are the dump's module
/// records, whose `path` strings are in `strings`. A name that does not fit
/// in `strings` is left empty. Returns how many frames were named.
///
/// Opens and maps files: call it only while no thread is stopped (see the
/// module docs).
pub fn name_frames(
    modules: &[ModuleRecord],
    pcs: &[u64],
    strings: &mut StringTable<'_>,
    out: &mut [StrRef],
) -> usize {
    let mut named = 0;
    for name in out.iter_mut() {
        *name = StrRef::EMPTY;
    }
    for module in modules {
        if module.flags & module_flags::VDSO != 0 || module.start >= module.end {
            continue;
        }
        let inside = |pc: u64| pc > module.start && pc - 1 < module.end;
        if !pcs.iter().any(|&pc| inside(pc)) {
            continue;
        }
        // The executable through /proc/self/exe: it opens even after the
        // file was deleted or replaced on disk.
        let mut path = sys::PathBuf::<4096>::new();
        let pushed = if module.flags & module_flags::MAIN_EXECUTABLE != 0 {
            path.push(b"/proc/self/exe")
        } else {
            let recorded = strings
                .as_bytes()
                .get(module.path.offset as usize..)
                .and_then(|rest| rest.get(..module.path.len as usize))
                .unwrap_or(&[]);
            !recorded.is_empty() && !recorded.contains(&0) && path.push(recorded)
        };
        if !pushed {
            continue;
        }
        let Some(file) = MappedFile::open(path.as_c_str()) else {
            continue;
        };
        let bytes = file.bytes();
        // A file that is not the one the process loaded would give wrong
        // names: none is better.
        let expected = strings
            .as_bytes()
            .get(module.build_id.offset as usize..)
            .and_then(|rest| rest.get(..module.build_id.len as usize))
            .unwrap_or(&[]);
        if !expected.is_empty() && ElfSymbols::build_id(bytes) != expected {
            continue;
        }
        let Some(symbols) = ElfSymbols::parse(bytes) else {
            continue;
        };
        let Some(memory) = SortedFunctions::scratch(&symbols) else {
            continue;
        };
        let Some(functions) = SortedFunctions::new(&symbols, &memory) else {
            continue;
        };
        for (pc, name) in pcs.iter().zip(out.iter_mut()) {
            if !inside(*pc) {
                continue;
            }
            let address = pc.wrapping_sub(1).wrapping_sub(module.load_bias);
            let Some(function) = functions
                .find(address)
                .and_then(|index| functions.list.get_mut(index))
            else {
                continue;
            };
            if function.named.len == 0
                && let Some(text) = symbols.name(function.name)
                && let Some(added) = strings.add(text)
            {
                function.named = added;
            }
            if function.named.len != 0 {
                *name = function.named;
                named += 1;
            }
        }
    }
    named
}

/// Names the frames at `pcs` ([`name_frames`]) and writes them as the
/// `FrameNames` section, one record per frame. Must run before the
/// `Strings` section is written (the names go there) and, like
/// [`name_frames`], only while no thread is stopped. Without scratch
/// memory for the names it writes no section: the dump is whole without
/// one. Returns how many frames were named.
pub fn write_frame_names<S: Sink>(
    writer: &mut DumpWriter<'_, S>,
    modules: &[ModuleRecord],
    pcs: &[u64],
    strings: &mut StringTable<'_>,
) -> Result<usize, WriteError<S::Error>> {
    let Some(memory) = Scratch::new(pcs.len().saturating_mul(size_of::<StrRef>())) else {
        return Ok(0);
    };
    let Some(names) = memory.take::<StrRef>(pcs.len()) else {
        return Ok(0);
    };
    let named = name_frames(modules, pcs, strings, names);
    writer.section(names.iter().map(|&name| FrameNameRecord { name }))?;
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::{Modules, TlsModule, gather};
    use heapdump_formats::records::SegmentRecord;

    #[inline(never)]
    fn a_function_with_a_known_name(x: u64) -> u64 {
        core::hint::black_box(x).wrapping_mul(3)
    }

    fn own_executable() -> Vec<u8> {
        std::fs::read("/proc/self/exe").unwrap()
    }

    /// The load bias of the main executable.
    fn main_bias() -> u64 {
        let mut modules = [ModuleRecord::default(); 64];
        let mut segments = [SegmentRecord::default(); 256];
        let mut string_bytes = [0u8; 16384];
        let mut strings = StringTable::new(&mut string_bytes);
        let mut tls = [TlsModule::default(); 16];
        let mut out = Modules {
            modules: &mut modules,
            module_count: 0,
            segments: &mut segments,
            segment_count: 0,
            strings: &mut strings,
            tls: &mut tls,
            tls_count: 0,
            overflowed: false,
        };
        gather(&mut out);
        modules[0].load_bias
    }

    #[test]
    fn resolves_a_known_function_of_this_test_binary() {
        let file = own_executable();
        let symbols = ElfSymbols::parse(&file).expect("the test binary has a symbol table");
        let memory = SortedFunctions::scratch(&symbols).unwrap();
        let functions = SortedFunctions::new(&symbols, &memory).unwrap();
        let here = a_function_with_a_known_name as *const () as u64;
        assert_eq!(a_function_with_a_known_name(2), 6);
        // A return address just past the function's first byte.
        let index = functions.find(here + 1 - 1 - main_bias()).unwrap();
        let name = symbols.name(functions.list[index].name).unwrap();
        let name = std::str::from_utf8(name).unwrap();
        assert!(name.contains("a_function_with_a_known_name"), "{name}");
        assert_eq!(functions.list[index].start, here - main_bias());
        // Far outside every function: nothing.
        assert_eq!(functions.find(u64::MAX - 1), None);
        assert!(!ElfSymbols::build_id(&file).is_empty());
    }

    #[test]
    fn truncated_and_corrupt_files_give_no_symbols_and_never_panic() {
        let file = own_executable();
        let whole = ElfSymbols::parse(&file).unwrap();
        assert!(whole.len() > 100);
        // Cut anywhere: the section headers are at the end, so no prefix
        // parses; a 1 MiB step keeps the test fast on a big binary, and the
        // first and last KiB go byte by byte.
        let cuts = (0..1024)
            .chain((0..file.len()).step_by(1 << 20))
            .chain(file.len().saturating_sub(1024)..file.len());
        for cut in cuts {
            let prefix = &file[..cut];
            assert!(ElfSymbols::parse(prefix).is_none(), "cut at {cut}");
            let _ = ElfSymbols::build_id(prefix);
        }
        // Header fields pointing anywhere.
        let mut corrupt = file.clone();
        corrupt[4] = 1; // ELFCLASS32
        assert!(ElfSymbols::parse(&corrupt).is_none());
        for (at, value) in [
            (0x28, u64::MAX),          // e_shoff
            (0x28, file.len() as u64), // e_shoff at the end
            (0x28, file.len() as u64 - 8),
        ] {
            let mut corrupt = file.clone();
            corrupt[at..at + 8].copy_from_slice(&value.to_le_bytes());
            assert!(ElfSymbols::parse(&corrupt).is_none(), "{at:#x}={value:#x}");
        }
        let mut corrupt = file.clone();
        corrupt[0x3c..0x3e].copy_from_slice(&u16::MAX.to_le_bytes()); // e_shnum
        assert!(ElfSymbols::parse(&corrupt).is_none());
        // Every section header's offset, size and link set to huge values:
        // the symbol table's own bytes are then outside the file.
        let table = u64_at(&file, 0x28).unwrap() as usize;
        let count = u16_at(&file, 0x3c).unwrap() as usize;
        for field in [24, 32, 40] {
            let mut corrupt = file.clone();
            for i in 0..count {
                let at = table + i * SHDR_SIZE + field;
                corrupt[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                if field != 40 {
                    corrupt[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
                }
            }
            assert!(ElfSymbols::parse(&corrupt).is_none(), "field {field}");
        }
        // Symbols whose names lie outside the string table, or have no NUL.
        let names = [0u8, b'a', b'b'];
        let mut symbol = [0u8; SYM_SIZE];
        symbol[4] = STT_FUNC;
        symbol[6] = 1;
        symbol[16] = 4;
        let table = ElfSymbols {
            symbols: &symbol,
            names: &names,
        };
        let function = table.function(0).unwrap();
        assert_eq!(table.name(function.name), None); // empty name
        assert_eq!(table.name(1), None); // no NUL
        assert_eq!(table.name(u32::MAX), None);
        assert_eq!(
            ElfSymbols {
                symbols: &symbol[..SYM_SIZE - 1],
                names: &names
            }
            .function(0),
            None
        );
        assert!(ElfSymbols::parse(b"").is_none());
        assert!(ElfSymbols::parse(&[0x7f, b'E', b'L', b'F', 2, 1]).is_none());
    }

    #[test]
    fn name_frames_names_this_binary_and_nothing_from_a_cut_copy() {
        let mut modules = [ModuleRecord::default(); 64];
        let mut segments = [SegmentRecord::default(); 256];
        let mut string_bytes = vec![0u8; 1 << 20];
        let mut strings = StringTable::new(&mut string_bytes);
        let mut tls = [TlsModule::default(); 16];
        let mut found = Modules {
            modules: &mut modules,
            module_count: 0,
            segments: &mut segments,
            segment_count: 0,
            strings: &mut strings,
            tls: &mut tls,
            tls_count: 0,
            overflowed: false,
        };
        gather(&mut found);
        let count = found.module_count;
        let here = a_function_with_a_known_name as *const () as u64;
        // A frame in the function, one in no module, one twice.
        let pcs = [here + 1, 8, here + 1];
        let mut out = [StrRef::EMPTY; 3];
        let named = name_frames(&modules[..count], &pcs, &mut strings, &mut out);
        assert_eq!(named, 2);
        let text = strings.as_bytes();
        let name = &text[out[0].offset as usize..][..out[0].len as usize];
        let name = std::str::from_utf8(name).unwrap();
        assert!(name.contains("a_function_with_a_known_name"), "{name}");
        assert_eq!(out[1], StrRef::EMPTY);
        // One string for both frames in the same function.
        assert_eq!(out[2], out[0]);

        // The same module read from a cut copy of the file (as a library,
        // so by its recorded path): no names at all.
        let file = own_executable();
        let dir = std::env::temp_dir().join(format!("heapdump-symbols-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cut = dir.join("cut");
        std::fs::write(&cut, &file[..file.len() / 2]).unwrap();
        let path = strings.add(cut.as_os_str().as_encoded_bytes()).unwrap();
        let mut module = modules[0];
        module.flags = 0;
        module.path = path;
        let mut out = [StrRef::EMPTY; 3];
        assert_eq!(name_frames(&[module], &pcs, &mut strings, &mut out), 0);
        assert_eq!(out, [StrRef::EMPTY; 3]);
        // A missing file, and a whole copy with another build-id: none.
        module.path = strings
            .add(dir.join("missing").as_os_str().as_encoded_bytes())
            .unwrap();
        assert_eq!(name_frames(&[module], &pcs, &mut strings, &mut out), 0);
        let copy = dir.join("copy");
        std::fs::write(&copy, &file).unwrap();
        module.path = strings.add(copy.as_os_str().as_encoded_bytes()).unwrap();
        let mut other_id = [0u8; 20];
        other_id[0] = 1;
        module.build_id = strings.add(&other_id).unwrap();
        assert_eq!(name_frames(&[module], &pcs, &mut strings, &mut out), 0);
        let _ = std::fs::remove_dir_all(&dir);

        // Strings full: frames stay unnamed rather than wrongly named.
        let mut tiny_bytes = [0u8; 8];
        let mut tiny = StringTable::new(&mut tiny_bytes);
        let mut main = modules[0];
        main.build_id = StrRef::EMPTY;
        assert_eq!(name_frames(&[main], &pcs, &mut tiny, &mut out), 0);
        assert_eq!(out, [StrRef::EMPTY; 3]);
    }
}
