//! What the capture integration tests share: a sequential test runner (the
//! tests compare exact counts in one process-wide tracker, so libtest's
//! threads must not allocate in the middle of a measurement) and dumping
//! into an unlinked scratch file that is read back and verified.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};

use std::sync::atomic::{AtomicBool, Ordering};

use heapdump_capture::{DumpStats, Mode};
use heapdump_formats::read::Dump;
use heapdump_formats::verify::verify;

/// Runs `tests` in order on the calling thread, `before_each` first; a
/// non-flag command-line argument filters them by name, as libtest does.
pub fn run_tests(tests: &[(&str, fn())], before_each: fn()) {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for &(name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        before_each();
        test();
        println!("test {name} ... ok");
    }
}

/// A read-write scratch file that is already unlinked.
pub fn tempfile() -> File {
    let path = std::env::temp_dir().join(format!(
        "heapdump-capture-test-{}-{:?}.hdump",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_file(&path);
    let file = File::options()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("cannot create a scratch file");
    std::fs::remove_file(&path).expect("cannot unlink the scratch file");
    file
}

/// Reads back everything written to `file`.
pub fn read_back(file: &File) -> Vec<u8> {
    std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("cannot read the dump back")
}

static STOP_MODE: AtomicBool = AtomicBool::new(false);

/// The mode [`dump_with_stats`] dumps in.
#[allow(dead_code)] // Only the snapshot tests switch modes.
pub fn set_mode(mode: Mode) {
    STOP_MODE.store(mode == Mode::Stop, Ordering::Relaxed);
}

pub fn mode() -> Mode {
    if STOP_MODE.load(Ordering::Relaxed) {
        Mode::Stop
    } else {
        Mode::Fork
    }
}

/// Writes a dump with `write_heap_dump_with` in the mode of [`set_mode`]
/// and reads it back.
pub fn dump_with_stats() -> (Vec<u8>, DumpStats) {
    let file = tempfile();
    let stats = heapdump_capture::write_heap_dump_with(file.as_fd(), mode()).expect("dump failed");
    assert_eq!(stats.mode, mode(), "the dump fell back to another mode");
    let bytes = read_back(&file);
    assert_eq!(bytes.len() as u64, stats.bytes_written);
    (bytes, stats)
}

/// Parses a dump and checks that `verify` finds no problem.
pub fn parse_and_verify(bytes: Vec<u8>) -> Dump {
    let dump = Dump::from_vec(bytes).expect("the dump does not parse");
    let problems = verify(&dump.view());
    assert!(problems.is_empty(), "verify found problems: {problems:#?}");
    dump
}

/// Blocks every signal in the calling thread: a thread a dump cannot stop.
#[allow(dead_code)] // Not every test binary has such a thread.
pub fn block_all_signals() {
    // SAFETY: a zeroed sigset_t is a valid argument to sigfillset, and the
    // mask is this thread's own.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut()),
            0
        );
    }
}
