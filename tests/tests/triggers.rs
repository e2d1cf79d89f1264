//! Dumps without code changes: the `triggered` example never calls the dump
//! API, and every dump here comes from the `HEAPDUMP` variable. Each
//! trigger fires the exact number of times, each file is named
//! `heapdump.PID.SEQ.TRIGGER.hdump` with mode 0600, passes `verify`, and
//! holds the program's known heap; a bad variable is reported and the rest
//! of it still applies.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heapdump_formats::read::Dump;
use heapdump_formats::records::process_flags;
use heapdump_formats::verify::verify;
use heapdump_tests::{binary, scratch_dir};

/// The dumps in `dir`, by name: its `.hdump` files (a dump being written
/// has another name until it is whole).
fn dumps_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension() == Some(std::ffi::OsStr::new("hdump")))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// Opens a dump, checks it is sound and holds the example's known heap:
/// 100 blocks of 1000 bytes and 50 list nodes linked by 49 edges (plus the
/// static's edge to the head). Returns it with its live bytes.
fn check_known_heap(path: &Path) -> (Dump, u64) {
    let mode = std::fs::metadata(path)
        .expect("dump missing")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} is not 0600", path.display());
    let dump = Dump::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let view = dump.view();
    let problems = verify(&view);
    assert!(problems.is_empty(), "{}: {problems:#?}", path.display());
    let thousands = view.allocations().iter().filter(|a| a.size == 1000).count();
    assert_eq!(thousands, 100, "{}: blocks of 1000 bytes", path.display());
    let live_bytes = view.process().live_bytes;
    drop(view);
    (dump, live_bytes)
}

/// The file name's parts after `heapdump.`: (pid, seq, trigger).
fn name_parts(path: &Path) -> (u32, u32, String) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let parts: Vec<&str> = name.split('.').collect();
    assert_eq!(parts.len(), 5, "{name}");
    assert_eq!((parts[0], parts[4]), ("heapdump", "hdump"), "{name}");
    (
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
        parts[3].to_string(),
    )
}

fn triggered(dir: &Path, heapdump: &str) -> Command {
    let mut command = Command::new(binary("triggered"));
    command
        .env("HEAPDUMP", heapdump.replace("DIR", dir.to_str().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn wait_for_dumps(dir: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while dumps_in(dir).len() < count {
        assert!(
            Instant::now() < deadline,
            "no dump {count} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_signal_writes_one_dump_and_the_program_runs_on() {
    let dir = scratch_dir("trigger_signal");
    let out = dir.join("dumps");
    let mut child = triggered(&out, "dir=DIR,on=signal:USR2")
        .arg("hold")
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot start triggered");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "ready" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no ready line");
    }
    for n in 1..=2 {
        let status = Command::new("kill")
            .args(["-USR2", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for_dumps(&out, n);
        // Each dump is complete before the next signal.
        let last = dumps_in(&out).pop().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Dump::open(&last).is_err() {
            assert!(
                Instant::now() < deadline,
                "{} never completed",
                last.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    drop(child.stdin.take());
    let pid = child.id();
    let output = child.wait_with_output().expect("triggered did not end");
    assert!(output.status.success(), "{output:?}");
    let dumps = dumps_in(&out);
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    for (seq, dump) in dumps.iter().enumerate() {
        let (file_pid, file_seq, trigger) = name_parts(dump);
        assert_eq!(file_pid, pid);
        assert_eq!(file_seq as usize, seq + 1);
        assert_eq!(trigger, "signal");
        let (dump, _) = check_known_heap(dump);
        let process = dump.view().process();
        assert_eq!(process.pid, pid);
        // The default mode forks: the child scanned and wrote.
        assert_ne!(process.flags & process_flags::FORKED, 0);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.matches("heapdump: signal: wrote ").count(),
        2,
        "{stderr}"
    );
    // The output directory was created 0700.
    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn exit_dump_is_complete_before_the_process_ends() {
    for mode in ["fork", "stop"] {
        let dir = scratch_dir(&format!("trigger_exit_{mode}"));
        let output = triggered(&dir, &format!("dir=DIR,on=exit,mode={mode}"))
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let dumps = dumps_in(&dir);
        assert_eq!(dumps.len(), 1, "{dumps:?}");
        let (_, seq, trigger) = name_parts(&dumps[0]);
        assert_eq!((seq, trigger.as_str()), (1, "exit"));
        let (dump, _) = check_known_heap(&dumps[0]);
        let forked = dump.view().process().flags & process_flags::FORKED != 0;
        assert_eq!(forked, mode == "fork");
    }
}

#[test]
fn growth_dumps_once_per_step_of_live_bytes() {
    let dir = scratch_dir("trigger_growth");
    // 5 steps of 1 MiB + 4 KiB with a 2 MiB trigger: levels start + 2 MiB
    // and start + 4 MiB are crossed, start + 6 MiB is not.
    let output = triggered(&dir, "dir=DIR,on=growth:2MiB")
        .args(["grow", "5"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let dumps = dumps_in(&dir);
    assert_eq!(dumps.len(), 2, "{dumps:?}");
    let mut levels = Vec::new();
    for dump in &dumps {
        assert_eq!(name_parts(dump).2, "growth");
        let (dump, live_bytes) = check_known_heap(dump);
        let grown = dump
            .view()
            .allocations()
            .iter()
            .filter(|a| a.size == (1 << 20) + 4096)
            .count();
        levels.push((grown, live_bytes));
    }
    // The first dump saw 2 grown blocks, the second 4.
    assert_eq!(levels[0].0, 2, "{levels:?}");
    assert_eq!(levels[1].0, 4, "{levels:?}");
}

#[test]
fn interval_dumps_stop_at_max_and_say_so() {
    let dir = scratch_dir("trigger_interval");
    let output = triggered(&dir, "dir=DIR,on=interval:150ms,max=3,mode=stop")
        .args(["sleep", "1500"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let dumps = dumps_in(&dir);
    let seqs: BTreeSet<u32> = dumps.iter().map(|d| name_parts(d).1).collect();
    assert_eq!(seqs, BTreeSet::from([1, 2, 3]), "{dumps:?}");
    for dump in &dumps {
        assert_eq!(name_parts(dump).2, "interval");
        let (dump, _) = check_known_heap(dump);
        assert_eq!(dump.view().process().flags & process_flags::FORKED, 0);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max=3 dumps written; no more"), "{stderr}");
}

#[test]
fn a_failed_allocation_is_dumped_before_the_program_sees_it() {
    let dir = scratch_dir("trigger_oom");
    let output = triggered(&dir, "dir=DIR,on=oom")
        .arg("fail")
        .output()
        .unwrap();
    // handle_alloc_error aborts: the failure reached the program unchanged.
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("memory allocation of"), "{stderr}");
    let dumps = dumps_in(&dir);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    assert_eq!(name_parts(&dumps[0]).2, "oom");
    check_known_heap(&dumps[0]);
}

#[test]
fn a_bad_heapdump_value_is_reported_and_the_rest_applies() {
    let dir = scratch_dir("trigger_bad_value");
    let output = triggered(&dir, "on=bogus,colour=red,dir=DIR,max=x,on=exit")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("heapdump: HEAPDUMP: "))
        .collect();
    assert_eq!(problems.len(), 3, "{stderr}");
    assert!(problems[0].contains("on=bogus: unknown trigger; accepted: exit, signal:SIG"));
    assert!(problems[1].contains("'colour=red' is not understood; accepted: dir=PATH"));
    assert!(problems[2].contains("max=x"));
    // on=exit and dir= still applied.
    assert_eq!(dumps_in(&dir).len(), 1);
}

#[test]
fn a_dump_that_cannot_be_written_is_reported_and_the_program_goes_on() {
    let dir = scratch_dir("trigger_unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let output = triggered(&file, "dir=DIR,on=exit").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("heapdump: exit: no dump written to")
            && stderr.contains("cannot use the directory (dir=): Not a directory"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

#[test]
fn a_service_streams_its_heap_dump_over_http() {
    use std::io::{Read, Write};
    let mut server = Command::new(binary("debug_server"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start debug_server");
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .write_all(b"GET /debug/heapdump HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers")
        + 4;
    let head = String::from_utf8_lossy(&response[..split]);
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let dump = Dump::from_vec(response[split..].to_vec()).expect("the body is not a dump");
    let view = dump.view();
    assert!(verify(&view).is_empty());
    // The service's 1000 sessions of 512 bytes are in it.
    let sessions = view.allocations().iter().filter(|a| a.size == 512).count();
    assert_eq!(sessions, 1000);
}

#[test]
fn a_terminating_signal_dumps_then_ends_the_process_as_it_would_have() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch_dir("trigger_sigterm");
    let mut child = triggered(&dir, "dir=DIR,on=signal:TERM")
        .arg("hold")
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot start triggered");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "ready" {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "no ready line");
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // stdin stays open: only the signal can end it.
    let stdin = child.stdin.take();
    let status = child.wait().expect("triggered did not end");
    drop(stdin);
    assert_eq!(status.signal(), Some(15), "{status:?}");
    let dumps = dumps_in(&dir);
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    assert_eq!(name_parts(&dumps[0]).2, "signal");
    check_known_heap(&dumps[0]);
}
