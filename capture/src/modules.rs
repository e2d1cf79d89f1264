//! The loaded ELF objects, from `dl_iterate_phdr`: path, load bias, mapped
//! range, `PT_LOAD` segments and GNU build-id, which is what the analyzer
//! needs to symbolize return addresses and to check it has the right binary.
//!
//! `dl_iterate_phdr` holds the dynamic loader's lock while it calls us, and
//! a thread inside `dlopen` may allocate while holding that lock, so modules
//! are gathered before the dump locks the live table, never after.

use core::ops::ControlFlow;

use heapdump_formats::records::{ModuleRecord, SegmentRecord, module_flags};
use heapdump_formats::write::StringTable;

use crate::sys::{self, LoadedObject};

/// Where [`gather`] puts what it finds.
pub struct Modules<'a, 's> {
    pub modules: &'a mut [ModuleRecord],
    pub module_count: usize,
    pub segments: &'a mut [SegmentRecord],
    pub segment_count: usize,
    pub strings: &'a mut StringTable<'s>,
    /// Modules with a `PT_TLS` segment.
    pub tls: &'a mut [TlsModule],
    pub tls_count: usize,
    /// Modules or segments that did not fit.
    pub overflowed: bool,
}

/// A module's thread-local storage, as the calling thread sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsModule {
    /// Index of the module in `Modules`.
    pub module: u32,
    /// The loader's TLS module id (index into each thread's DTV).
    pub id: u64,
    /// The calling thread's block for this module (0 if not allocated).
    pub block: u64,
    /// `PT_TLS` `p_memsz`: the size of each thread's block.
    pub size: u64,
}

// SAFETY: integers only; zero is valid.
unsafe impl crate::sys::Zeroable for TlsModule {}

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PT_TLS: u32 = 7;
const NT_GNU_BUILD_ID: u32 = 3;

/// Fills `out` with the objects loaded now.
pub fn gather(out: &mut Modules<'_, '_>) {
    sys::for_each_loaded_object(|object| {
        add(out, object);
        ControlFlow::Continue(())
    });
}

/// Adds `object`, its segments and its TLS to `out`.
fn add(out: &mut Modules<'_, '_>, object: &LoadedObject<'_>) {
    if out.module_count >= out.modules.len() {
        out.overflowed = true;
        return;
    }
    let module_index = out.module_count as u32;
    let bias = object.bias();
    let phdrs = object.program_headers();
    let name = object.name();
    let mut flags = 0;
    let mut exe_path = [0u8; 4096];
    let path = if name.is_empty() && module_index == 0 {
        flags |= module_flags::MAIN_EXECUTABLE;
        let n = sys::read_link(c"/proc/self/exe", &mut exe_path);
        &exe_path[..n]
    } else {
        if name.starts_with(b"linux-vdso") || name.starts_with(b"linux-gate") {
            flags |= module_flags::VDSO;
        }
        name
    };

    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut build_id: &[u8] = &[];
    for phdr in phdrs {
        let from = bias.wrapping_add(phdr.p_vaddr);
        match phdr.p_type {
            PT_LOAD => {
                start = start.min(from);
                end = end.max(from.saturating_add(phdr.p_memsz));
                if out.segment_count < out.segments.len() {
                    out.segments[out.segment_count] = SegmentRecord {
                        module: module_index,
                        flags: phdr.p_flags,
                        start: from,
                        end: from.saturating_add(phdr.p_memsz),
                        file_offset: phdr.p_offset,
                    };
                    out.segment_count += 1;
                } else {
                    out.overflowed = true;
                }
            }
            PT_TLS => {
                if out.tls_count < out.tls.len() {
                    out.tls[out.tls_count] = TlsModule {
                        module: module_index,
                        id: object.tls_module_id(),
                        block: object.tls_block(),
                        size: phdr.p_memsz,
                    };
                    out.tls_count += 1;
                } else {
                    out.overflowed = true;
                }
            }
            PT_NOTE if build_id.is_empty() => {
                // SAFETY: a PT_NOTE segment of a loaded object is mapped
                // readable at bias + p_vaddr for p_memsz bytes.
                let notes = unsafe {
                    core::slice::from_raw_parts(from as *const u8, phdr.p_memsz as usize)
                };
                build_id = find_build_id(notes);
            }
            _ => {}
        }
    }
    if start > end {
        start = bias;
        end = bias;
    }
    out.modules[out.module_count] = ModuleRecord {
        path: out.strings.add_or_empty(path),
        build_id: out.strings.add_or_empty(build_id),
        load_bias: bias,
        start,
        end,
        flags,
        reserved: 0,
    };
    out.module_count += 1;
}

/// The descriptor of the first `NT_GNU_BUILD_ID` note in `notes`.
pub(crate) fn find_build_id(notes: &[u8]) -> &[u8] {
    let word = |at: usize| -> Option<usize> {
        let bytes = notes.get(at..at + 4)?;
        Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
    };
    let mut at = 0;
    while let (Some(name_size), Some(desc_size), Some(kind)) =
        (word(at), word(at + 4), word(at + 8))
    {
        let name_at = at + 12;
        let desc_at = name_at + name_size.next_multiple_of(4);
        let next = desc_at + desc_size.next_multiple_of(4);
        if kind == NT_GNU_BUILD_ID as usize
            && notes.get(name_at..name_at + name_size) == Some(b"GNU\0".as_slice())
        {
            return notes.get(desc_at..desc_at + desc_size).unwrap_or(&[]);
        }
        if next <= at {
            break;
        }
        at = next;
    }
    &[]
}

/// Scratch sizes a dump reserves for modules.
pub const MAX_MODULES: usize = 4096;
pub const MAX_SEGMENTS: usize = 4 * MAX_MODULES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_test_binary_with_its_build_id_and_segments() {
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
        let (count, segment_count, tls_count) =
            (out.module_count, out.segment_count, out.tls_count);
        // Rust's std uses thread-locals, so the executable has a TLS block,
        // and this thread's instance lies below its thread pointer.
        let main_tls = tls[..tls_count].iter().find(|t| t.module == 0).unwrap();
        assert!(main_tls.size > 0 && main_tls.block != 0);
        let tp = crate::world::thread_pointer();
        assert!(main_tls.block < tp && tp - main_tls.block < 1 << 20);
        assert!(count >= 2, "{count}");
        let main = modules[0];
        assert_eq!(main.flags & module_flags::MAIN_EXECUTABLE, 1);
        let text = strings.as_bytes();
        let path = &text[main.path.offset as usize..][..main.path.len as usize];
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_eq!(path, exe.as_os_str().as_encoded_bytes());
        assert_eq!(main.build_id.len, 20, "rustc links with a 20-byte build-id");
        // This function's own address lies in an executable segment of the
        // main module.
        let here = finds_the_test_binary_with_its_build_id_and_segments as *const () as u64;
        assert!(
            segments[..segment_count]
                .iter()
                .any(|s| s.module == 0 && s.flags & 1 != 0 && (s.start..s.end).contains(&here))
        );
    }

    #[test]
    fn build_id_parser_skips_other_notes_and_survives_garbage() {
        let mut notes = Vec::new();
        for (name, kind, desc) in [
            (&b"XYZ\0"[..], 1u32, &[9u8; 5][..]),
            (b"GNU\0", 3, &[1, 2, 3, 4]),
        ] {
            notes.extend((name.len() as u32).to_ne_bytes());
            notes.extend((desc.len() as u32).to_ne_bytes());
            notes.extend(kind.to_ne_bytes());
            notes.extend(name);
            notes.extend(desc);
            notes.resize(notes.len().next_multiple_of(4), 0);
        }
        assert_eq!(find_build_id(&notes), [1, 2, 3, 4]);
        assert_eq!(find_build_id(&notes[..30]), b"");
        assert_eq!(find_build_id(&[0xff; 40]), b"");
    }
}
