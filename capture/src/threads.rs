//! The thread registry: a slot per thread that ever allocated, holding its
//! kernel id and stack bounds, indexed by the thread index that allocation
//! records carry. The calling thread's index and stack bounds are cached in
//! `const`-initialized thread-locals without destructors, which stay usable
//! in thread-local destructors and never allocate.

use core::cell::Cell;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::live::MAX_THREAD_INDEX;
use crate::sys;

/// Registry capacity: thread indices beyond it are recorded as unknown.
pub const MAX_THREADS: usize = MAX_THREAD_INDEX as usize + 1;

const NOT_REGISTERED: u32 = u32::MAX - 1;

/// One registered thread.
#[repr(C)]
pub struct ThreadSlot {
    pub tid: AtomicU32,
    pub stack_low: AtomicU64,
    pub stack_high: AtomicU64,
}

static REGISTRY: AtomicPtr<ThreadSlot> = AtomicPtr::new(core::ptr::null_mut());
static REGISTERED: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static INDEX: Cell<u32> = const { Cell::new(NOT_REGISTERED) };
    static STACK: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// The calling thread as the tracker knows it.
#[derive(Clone, Copy, Debug)]
pub struct CurrentThread {
    /// Registry index, or `UNKNOWN_THREAD` when the registry is full.
    pub index: u32,
    /// Stack `[low, high)`, empty when unknown.
    pub stack: (usize, usize),
}

/// The calling thread, registering it on first use.
#[inline]
pub fn current() -> CurrentThread {
    let index = INDEX.get();
    if index != NOT_REGISTERED {
        return CurrentThread {
            index,
            stack: STACK.get(),
        };
    }
    register()
}

#[cold]
fn register() -> CurrentThread {
    crate::fork::install_handlers();
    let stack = current_stack_bounds();
    STACK.set(stack);
    let index = match registry() {
        Some(slots) => {
            let index = REGISTERED.fetch_add(1, Ordering::AcqRel);
            if (index as usize) < MAX_THREADS {
                // SAFETY: `index` is below the registry's capacity and was
                // handed to this thread alone by the fetch_add.
                let slot = unsafe { &*slots.add(index as usize) };
                slot.stack_low.store(stack.0 as u64, Ordering::Relaxed);
                slot.stack_high.store(stack.1 as u64, Ordering::Relaxed);
                // The tid goes last: a dump treats tid 0 as a slot still
                // being filled.
                slot.tid.store(sys::thread_id(), Ordering::Release);
                index
            } else {
                heapdump_formats::records::UNKNOWN_THREAD
            }
        }
        None => heapdump_formats::records::UNKNOWN_THREAD,
    };
    INDEX.set(index);
    CurrentThread { index, stack }
}

/// Forgets the calling thread's registration (in a fork child, where the
/// thread has a new id).
pub fn forget_current() {
    INDEX.set(NOT_REGISTERED);
}

fn registry() -> Option<*mut ThreadSlot> {
    sys::map_once(&REGISTRY, MAX_THREADS * size_of::<ThreadSlot>())
}

/// A registered thread as a dump reads it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisteredThread {
    /// Kernel id; 0 while the slot is being filled.
    pub tid: u32,
    pub stack_low: u64,
    pub stack_high: u64,
}

/// The registered threads, in index order.
pub fn registered() -> impl Iterator<Item = RegisteredThread> {
    let slots = REGISTRY.load(Ordering::Acquire);
    let count = if slots.is_null() {
        0
    } else {
        (REGISTERED.load(Ordering::Acquire) as usize).min(MAX_THREADS)
    };
    (0..count).map(move |i| {
        // SAFETY: `i < count <= MAX_THREADS` and the registry is mapped for
        // the life of the process; the fields are atomics.
        let slot = unsafe { &*slots.add(i) };
        RegisteredThread {
            tid: slot.tid.load(Ordering::Acquire),
            stack_low: slot.stack_low.load(Ordering::Relaxed),
            stack_high: slot.stack_high.load(Ordering::Relaxed),
        }
    })
}

/// Bytes the registry occupies once touched.
pub fn tracking_bytes() -> u64 {
    let count = (REGISTERED.load(Ordering::Relaxed) as usize).min(MAX_THREADS);
    sys::round_to_pages(count * size_of::<ThreadSlot>()) as u64
}

/// The calling thread's stack `[low, high)`: the mapping of
/// `/proc/self/maps` that holds the stack pointer; `(0, 0)` if
/// unavailable. For a thread glibc made, the mapping also holds the
/// thread's descriptor and static TLS above the stack (scanned with it,
/// harmlessly).
///
/// Not `pthread_getattr_np`: it calls `fopen` (main thread) or `realloc`
/// (every thread) while holding the thread's lock, so from inside
/// `malloc` (its own allocation is often the thread's first) it would wait
/// on itself.
pub fn current_stack_bounds() -> (usize, usize) {
    let marker = 0u8;
    let here = core::hint::black_box(&marker) as *const u8 as u64;
    let Some((low, high)) = sys::mapping_containing(here) else {
        return (0, 0);
    };
    if sys::thread_id() == sys::process_id() {
        // The main thread's stack mapping grows down on demand, up to the
        // stack size limit: its low end now says nothing of deeper frames
        // later.
        return (main_stack_low(high) as usize, high as usize);
    }
    (low as usize, high as usize)
}

/// The lowest address the main thread's stack may grow down to.
fn main_stack_low(high: u64) -> u64 {
    // Unlimited (or unknown): 1 GiB, far beyond any real stack.
    let size = sys::stack_size_limit().map_or(1 << 30, |limit| limit.min(1 << 30));
    high.saturating_sub(size)
}

/// Kernel ids of the threads alive now, from `/proc/self/task`; fills
/// `out` and returns how many it wrote (more threads than fit are left out).
pub fn alive_tids(out: &mut [u32]) -> usize {
    let Ok(fd) = sys::open_directory(c"/proc/self/task") else {
        return 0;
    };
    let mut found = 0;
    let mut buffer = [0u8; 4096];
    'read: loop {
        let n = match sys::read_directory(fd, &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut at = 0usize;
        // linux_dirent64: ino u64, off i64, reclen u16, type u8, name.
        while at + 19 < n {
            let reclen = u16::from_ne_bytes([buffer[at + 16], buffer[at + 17]]) as usize;
            if reclen == 0 || at + reclen > n {
                break;
            }
            let name = &buffer[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(tid) = parse_decimal(name) {
                if found == out.len() {
                    break 'read;
                }
                out[found] = tid;
                found += 1;
            }
            at += reclen;
        }
    }
    let _ = sys::close(fd);
    found
}

fn parse_decimal(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() {
        return None;
    }
    let mut value: u32 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(value)
}

/// Reads the name of thread `tid` of process `pid` into `out`; returns its
/// length. By process id, not `/proc/self`: a fork child names the
/// parent's threads.
pub fn thread_name(pid: u32, tid: u32, out: &mut [u8]) -> usize {
    let mut path = sys::PathBuf::<64>::new();
    let _ = path.push(b"/proc/")
        && path.push_decimal(u64::from(pid))
        && path.push(b"/task/")
        && path.push_decimal(u64::from(tid))
        && path.push(b"/comm");
    let n = sys::read_file(path.as_c_str(), out);
    // `comm` ends with a newline.
    if n > 0 && out[n - 1] == b'\n' {
        n - 1
    } else {
        n
    }
}

/// How many threads have registered (allocated at least once).
pub fn registered_count() -> u64 {
    u64::from(REGISTERED.load(Ordering::Relaxed)).min(MAX_THREADS as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_tids_lists_this_thread_and_a_spawned_one() {
        let me = sys::thread_id();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("lister-probe".into())
            .spawn(move || {
                tx.send(sys::thread_id()).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        let other = rx.recv().unwrap();
        let mut tids = [0u32; 1024];
        let n = alive_tids(&mut tids);
        assert!(tids[..n].contains(&me));
        assert!(tids[..n].contains(&other));
        let mut name = [0u8; 32];
        let len = thread_name(std::process::id(), other, &mut name);
        assert_eq!(&name[..len], b"lister-probe");
        done_tx.send(()).unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn stack_bounds_contain_a_local() {
        let local = 0u64;
        let (low, high) = current_stack_bounds();
        let at = &local as *const u64 as usize;
        assert!(low < at && at < high, "{low:#x} {at:#x} {high:#x}");
    }
}
