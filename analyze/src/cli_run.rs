//! `heapdump run`: dumps of an unmodified program. The preload library
//! (built into this binary by `build.rs`) goes into the program with
//! `LD_PRELOAD`, and `HEAPDUMP` says when to dump; the program's stdio is
//! its own, signals sent to `heapdump run` reach it, and its exit status
//! is passed on. Afterwards, the dumps it wrote are listed on stderr.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// The preload library, built by `build.rs` (empty if that build failed).
static PRELOAD_LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libheapdump_preload.so"));

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Directory the dumps go to, as heapdump.PID.SEQ.TRIGGER.hdump (created
    /// 0700 if missing). Default: the current directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// When to dump: exit, signal:SIG, growth:SIZE, interval:DURATION or oom
    /// (repeat for several). Default: exit.
    #[arg(long = "on", value_name = "TRIGGER")]
    on: Vec<String>,
    /// How dumps take their snapshot: fork (the program pauses only to fork)
    /// or stop (it pauses for the whole scan).
    #[arg(long, value_name = "MODE", value_parser = ["fork", "stop"])]
    mode: Option<String>,
    /// Allocation stacks: all (every block) or sample:SIZE (a byte-weighted
    /// sample), as the HEAPDUMP variable's stacks= key.
    #[arg(long, value_name = "all|sample:SIZE")]
    stacks: Option<String>,
    /// At most N dumps (default 16), per process.
    #[arg(long, value_name = "N")]
    max: Option<u32>,
    /// Also track the processes the program starts (each dumps on its own
    /// triggers, with its own id in the file names). By default only the
    /// program's process is, through any exec.
    #[arg(long)]
    children: bool,
    /// The program and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    command: Vec<OsString>,
}

/// Signals `heapdump run` passes on to the program (bit n: signal n
/// arrived). `SIGINT` and `SIGQUIT` are not among them: from a terminal
/// they reach the program directly (it is in the same process group).
static PENDING: AtomicU64 = AtomicU64::new(0);
const FORWARDED: [i32; 6] = [
    libc::SIGHUP,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
];

extern "C" fn note_signal(signal: i32) {
    PENDING.fetch_or(1 << signal, Ordering::SeqCst);
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    if PRELOAD_LIBRARY.is_empty() {
        bail!(
            "this heapdump was built without its preload library (the build printed why); \
             rebuild on Linux with `cargo install --path analyze`"
        );
    }
    let program = args.command[0].clone();
    let path = find_program(&program)
        .with_context(|| format!("{}: not found", program.to_string_lossy()))?;
    check_preloadable(&path)?;
    let dir = match &args.dir {
        Some(dir) => std::path::absolute(dir)
            .with_context(|| format!("{}: not a usable directory", dir.display()))?,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let heapdump = heapdump_variable(&args, &dir)?;
    let library = write_library().context("cannot write the preload library")?;
    let before = [dumps_in(&dir), partial_dumps_in(&dir)].concat();

    let mut preload = OsString::from(&library);
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    for signal in FORWARDED {
        // SAFETY: the handler only sets a bit in an atomic.
        unsafe { libc::signal(signal, note_signal as *const () as libc::sighandler_t) };
    }
    for signal in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: ignoring a signal has no preconditions.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let mut command = Command::new(&path);
    command
        .arg0(&program)
        .args(&args.command[1..])
        .env("LD_PRELOAD", &preload)
        .env("HEAPDUMP", &heapdump);
    if !args.children {
        // The program's process only (see preload/src/lib.rs).
        command.env("HEAPDUMP_RUN_PID", std::process::id().to_string());
    } else {
        command.env_remove("HEAPDUMP_RUN_PID");
    }
    // SAFETY: only async-signal-safe calls between fork and exec: the
    // program gets SIGINT and SIGQUIT back (ignored dispositions would be
    // inherited across exec), as it would have them without us.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", path.display()))?;
    let pid = child.id() as i32;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for the program")? {
            break status;
        }
        let pending = PENDING.swap(0, Ordering::SeqCst);
        for signal in FORWARDED {
            if pending & (1 << signal) != 0 {
                // SAFETY: sending a signal to our own child.
                unsafe { libc::kill(pid, signal) };
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    report_dumps(&dir, &before);
    if let Some(signal) = status.signal() {
        // Ended by a signal: end the same way, so a shell sees what it
        // would have seen without heapdump.
        let _ = std::io::stderr().flush();
        // No core file of ours (the program's, if any, must not be
        // replaced by one of heapdump); if we survive the signal (one that
        // does not kill), the shell convention 128 + N follows.
        // SAFETY: plain system calls on this process.
        unsafe {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return Ok(ExitCode::from((128 + signal) as u8));
    }
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

/// The `HEAPDUMP` value for the flags.
fn heapdump_variable(args: &RunArgs, dir: &Path) -> anyhow::Result<String> {
    let dir = dir
        .to_str()
        .with_context(|| format!("{}: the directory must be valid UTF-8", dir.display()))?;
    let mut keys = vec![format!("dir={dir}")];
    let on: Vec<&str> = if args.on.is_empty() {
        vec!["exit"]
    } else {
        args.on.iter().map(String::as_str).collect()
    };
    for value in on {
        keys.push(format!("on={value}"));
    }
    if let Some(mode) = &args.mode {
        keys.push(format!("mode={mode}"));
    }
    if let Some(stacks) = &args.stacks {
        keys.push(format!("stacks={stacks}"));
    }
    if let Some(max) = args.max {
        keys.push(format!("max={max}"));
    }
    if let Some(bad) = keys.iter().find(|k| k.matches(',').count() > 0) {
        bail!("{bad}: a value cannot contain ',' (it separates HEAPDUMP's keys)");
    }
    if std::env::var_os("HEAPDUMP").is_some() {
        eprintln!("heapdump: the HEAPDUMP variable is replaced by run's options");
    }
    Ok(keys.join(","))
}

/// The executable `program` names: a path, or a name looked up in `PATH`.
fn find_program(program: &std::ffi::OsStr) -> anyhow::Result<PathBuf> {
    let as_path = Path::new(program);
    if as_path.components().count() > 1 || program.to_string_lossy().contains('/') {
        return Ok(as_path.to_path_buf());
    }
    // As execvp: without PATH, the system's directories.
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(metadata) = candidate.metadata()
            && metadata.is_file()
            && metadata.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    bail!("no such program in PATH")
}

/// Refuses what `LD_PRELOAD` cannot reach: a statically linked executable
/// (no dynamic loader) and a set-user-ID or set-group-ID one (the loader
/// ignores `LD_PRELOAD` there). Scripts are fine: their interpreter gets it.
fn check_preloadable(path: &Path) -> anyhow::Result<()> {
    let metadata = path
        .metadata()
        .with_context(|| format!("{}: cannot read it", path.display()))?;
    if metadata.permissions().mode() & 0o6000 != 0 {
        bail!(
            "{} is set-user-ID or set-group-ID: the dynamic loader ignores LD_PRELOAD for it, \
             so heapdump run cannot track it",
            path.display()
        );
    }
    let bytes =
        std::fs::read(path).with_context(|| format!("{}: cannot read it", path.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let file = object::File::parse(&*bytes)
        .with_context(|| format!("{}: not an ELF file this machine can run", path.display()))?;
    let dynamic = match &file {
        object::File::Elf64(elf) => has_interpreter(elf),
        object::File::Elf32(elf) => has_interpreter(elf),
        _ => true,
    };
    if !dynamic {
        bail!(
            "{} is statically linked: LD_PRELOAD cannot reach its allocator. Link it \
             dynamically, or (for a Rust program) use heapdump_capture::Tracker instead",
            path.display()
        );
    }
    Ok(())
}

fn has_interpreter<Elf: object::read::elf::FileHeader>(
    elf: &object::read::elf::ElfFile<'_, Elf>,
) -> bool {
    use object::read::elf::ProgramHeader as _;
    let endian = elf.endian();
    elf.elf_program_headers()
        .iter()
        .any(|header| header.p_type(endian) == object::elf::PT_INTERP)
}

/// Writes the embedded library to a private directory of this user (0700)
/// once per version, and returns its path.
fn write_library() -> anyhow::Result<PathBuf> {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("heapdump-{uid}"));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error).with_context(|| format!("{}", dir.display())),
    }
    let metadata = std::fs::symlink_metadata(&dir)?;
    if !metadata.is_dir() || std::os::unix::fs::MetadataExt::uid(&metadata) != uid {
        bail!("{} is not a directory of this user", dir.display());
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let name = format!(
        "libheapdump_preload-{:016x}.so",
        fingerprint(PRELOAD_LIBRARY)
    );
    let library = dir.join(name);
    if std::fs::read(&library).is_ok_and(|bytes| bytes == PRELOAD_LIBRARY) {
        return Ok(library);
    }
    if library.to_string_lossy().contains([' ', ':']) {
        bail!(
            "{}: the dynamic loader splits LD_PRELOAD at spaces and ':'; set TMPDIR or \
             XDG_RUNTIME_DIR to a directory without them",
            library.display()
        );
    }
    let temporary = dir.join(format!(".preload-{}.tmp", std::process::id()));
    // Left by a run of an earlier process with the same id that died
    // between writing and renaming.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .open(&temporary)
        .with_context(|| format!("{}", temporary.display()))?;
    file.write_all(PRELOAD_LIBRARY)?;
    drop(file);
    std::fs::rename(&temporary, &library)?;
    Ok(library)
}

/// FNV-1a of the library's bytes: a new build gets a new file name.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The files in `dir` now whose names are `heapdump.*` + `suffix`.
fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("heapdump.") && n.ends_with(suffix))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The dump files in `dir` now.
fn dumps_in(dir: &Path) -> Vec<PathBuf> {
    files_in(dir, ".hdump")
}

/// The dumps in `dir` not yet whole: written under this name, renamed
/// without it once whole.
fn partial_dumps_in(dir: &Path) -> Vec<PathBuf> {
    files_in(dir, ".hdump.partial")
}

/// Lists on stderr the dumps that appeared in `dir` during the run, and
/// those not whole when the program ended.
fn report_dumps(dir: &Path, before: &[PathBuf]) {
    let new: Vec<PathBuf> = dumps_in(dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let partial: Vec<PathBuf> = partial_dumps_in(dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let mut stderr = std::io::stderr().lock();
    if !partial.is_empty() {
        let _ = writeln!(
            stderr,
            "heapdump: {} dump(s) not whole when the program ended (a snapshot process of \
             mode=fork may still be writing one, and renames it without .partial once \
             whole; one cut off by the program's end stays as it is):",
            partial.len()
        );
        for dump in &partial {
            let _ = writeln!(stderr, "  {}", dump.display());
        }
    }
    if new.is_empty() {
        if partial.is_empty() {
            let _ = writeln!(
                stderr,
                "heapdump: no dump was written to {} (a program that ends with _exit, abort or \
                 a fatal signal writes no exit dump; other causes are reported above)",
                dir.display()
            );
        }
        return;
    }
    let _ = writeln!(
        stderr,
        "heapdump: {} dump(s) in {}:",
        new.len(),
        dir.display()
    );
    for dump in &new {
        let _ = writeln!(stderr, "  {}", dump.display());
    }
    let _ = writeln!(
        stderr,
        "next: heapdump top {}",
        new[new.len() - 1].display()
    );
}
