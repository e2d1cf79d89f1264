//! The library `heapdump run` preloads into an unmodified, dynamically
//! linked program (`LD_PRELOAD`): heapdump-capture's C allocation
//! functions (`malloc`, `free`, ... exported from here, so they come
//! before the C library's in the whole process) and, from the moment the
//! library is loaded, the dumps the `HEAPDUMP` variable asks for.
//!
//! ```text
//! heapdump run --on signal:USR2 -- python3 app.py      # sets LD_PRELOAD and HEAPDUMP
//! ```
//!
//! It has no API of its own. A Rust program that uses
//! `heapdump_capture::Tracker` needs no preloading.

/// Runs when the dynamic loader has loaded the library, before the
/// program's `main`: applies `HEAPDUMP` (there is no `Tracker` whose first
/// allocation would).
///
/// `heapdump run` watches the program's process only, through any `exec`
/// (a wrapper script that execs the real program keeps its process): it
/// sets `HEAPDUMP_RUN_PID` to its own id, and a process whose parent is
/// not `heapdump run` (a child the program started, which inherited
/// `LD_PRELOAD`) stays passive. Without that variable (the library
/// preloaded by hand), every process that loads it is tracked.
extern "C" fn start() {
    if !our_malloc_is_the_process_malloc() {
        // A program that tracks itself (`heapdump_capture::Tracker`) or
        // another allocator that comes first: that one serves `malloc`,
        // and this copy must not start a second set of triggers. A
        // `Tracker` reads HEAPDUMP itself.
        heapdump_capture::stay_passive();
        return;
    }
    // SAFETY: a NUL-terminated name; getenv neither allocates nor locks.
    let run_pid = unsafe { libc::getenv(c"HEAPDUMP_RUN_PID".as_ptr()) };
    let watched_by_run = if run_pid.is_null() {
        None
    } else {
        // SAFETY: getenv returned a NUL-terminated string.
        let text = unsafe { core::ffi::CStr::from_ptr(run_pid) };
        text.to_str().ok().and_then(|t| t.parse::<i32>().ok())
    };
    match watched_by_run {
        // SAFETY: getppid has no preconditions.
        Some(run) if unsafe { libc::getppid() } != run => heapdump_capture::stay_passive(),
        Some(_) => heapdump_capture::start_in_unmodified_program(true),
        None => heapdump_capture::start_in_unmodified_program(false),
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static START: extern "C" fn() = start;

/// Whether the `malloc` the process uses is the one in this library: the
/// object that defines the `malloc` symbol found first is this one, or
/// that symbol is a stub. A fixed-address (non-PIE) executable whose code
/// takes `malloc`'s address (Debian's `node`) holds malloc's "canonical
/// PLT" entry, an undefined symbol with an address, so that the function
/// has one address in the whole process: every lookup of `malloc` finds
/// that stub, which jumps to the real definition, ours when we are
/// preloaded. Only a definition in another object means another allocator
/// serves the process.
fn our_malloc_is_the_process_malloc() -> bool {
    /// `dladdr1`'s request for the symbol table entry (`<dlfcn.h>`).
    const RTLD_DL_SYMENT: libc::c_int = 1;
    /// The section index of an undefined symbol (`<elf.h>`).
    const SHN_UNDEF: u16 = 0;
    #[cfg(target_pointer_width = "64")]
    type ElfSymbol = libc::Elf64_Sym;
    #[cfg(target_pointer_width = "32")]
    type ElfSymbol = libc::Elf32_Sym;
    // dlsym, dladdr and dladdr1 read the loader's tables; the info structs
    // and the symbol pointer are valid out-parameters; `start` is a
    // function of this library.
    // SAFETY: as above; a symbol dladdr1 returns points into its object's
    // mapped symbol table.
    unsafe {
        let found = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
        let mut theirs: libc::Dl_info = core::mem::zeroed();
        let mut ours: libc::Dl_info = core::mem::zeroed();
        let mut symbol: *mut libc::c_void = core::ptr::null_mut();
        if found.is_null()
            || libc::dladdr1(found, &mut theirs, &mut symbol, RTLD_DL_SYMENT) == 0
            || libc::dladdr(start as *const libc::c_void, &mut ours) == 0
        {
            // Cannot tell: track (the usual case).
            return true;
        }
        let stub = !symbol.is_null() && (*symbol.cast::<ElfSymbol>()).st_shndx == SHN_UNDEF;
        theirs.dli_fbase == ours.dli_fbase || stub
    }
}
