//! The demo: a small server-like program with a deliberate heap — a
//! thumbnail cache (the biggest consumer), a session table, a request log,
//! worker threads each holding an I/O buffer, and one leak on purpose (a
//! chat room and its member holding each other through `Rc`, dropped by a
//! thread that has ended) — that writes a heap dump of itself.
//! `scripts/demo.sh` runs it and then the analyzer on the dump.
//!
//! `demo DUMP_PATH`

use std::alloc::System;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::mpsc;

use heapdump_capture::Tracker;

#[global_allocator]
static ALLOCATOR: Tracker<System> = Tracker::system();

struct Session {
    user: String,
    history: Vec<u64>,
}

#[inline(never)]
fn load_thumbnails(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| vec![i as u8; 256 * 1024]).collect()
}

#[inline(never)]
fn open_sessions(count: u64) -> HashMap<u64, Session> {
    (0..count)
        .map(|id| {
            let session = Session {
                user: format!("user-{id:05}@example.com"),
                history: (0..id % 32).collect(),
            };
            (id, session)
        })
        .collect()
}

#[inline(never)]
fn log_requests(log: &mut VecDeque<String>, count: usize) {
    for i in 0..count {
        if log.len() == 500 {
            log.pop_front();
        }
        log.push_back(format!("GET /thumbnails/{i} 200"));
    }
}

/// A room and its members point at each other through `Rc`, so neither
/// count ever reaches zero: once the last outside handle is dropped, the
/// five blocks (two `Rc` boxes, two names, the member list) are alive with
/// nothing pointing into them. Rust's safe-code leak.
struct Room {
    #[expect(dead_code, reason = "never read: there to be leaked with the cycle")]
    name: String,
    members: RefCell<Vec<Rc<Member>>>,
}

struct Member {
    #[expect(dead_code, reason = "never read: there to be leaked with the cycle")]
    name: String,
    room: RefCell<Option<Rc<Room>>>,
}

#[inline(never)]
fn open_room() {
    let room = Rc::new(Room {
        name: String::from("lobby"),
        members: RefCell::new(Vec::new()),
    });
    let member = Rc::new(Member {
        name: String::from("alice"),
        room: RefCell::new(None),
    });
    *member.room.borrow_mut() = Some(Rc::clone(&room));
    room.members.borrow_mut().push(member);
    // The forgotten step: `room.members.borrow_mut().clear()` would break
    // the cycle before the handle goes.
    drop(room);
}

#[inline(never)]
fn worker_buffer() -> Vec<u8> {
    vec![0u8; 64 * 1024]
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: demo DUMP_PATH");
        std::process::exit(2);
    };

    let thumbnails = load_thumbnails(20);
    let sessions = open_sessions(2000);
    let mut log = VecDeque::new();
    log_requests(&mut log, 5000);
    // On a thread that has ended: no stack or register of a live thread
    // can still hold a stale pointer to the cycle.
    std::thread::spawn(open_room)
        .join()
        .expect("the room thread does not panic");

    // Three workers, each parked on a channel while holding its buffer.
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut stops = Vec::new();
    let mut workers = Vec::new();
    for n in 0..3 {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let ready_tx = ready_tx.clone();
        stops.push(stop_tx);
        workers.push(
            std::thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn(move || {
                    let buffer = worker_buffer();
                    ready_tx.send(()).ok();
                    stop_rx.recv().ok();
                    buffer.len()
                })
                .expect("cannot start a worker thread"),
        );
    }
    for _ in 0..3 {
        ready_rx.recv().ok();
    }

    match heapdump_capture::dump_to_path(&path) {
        Ok(stats) => println!(
            "demo: wrote {path}: {} live allocations, {} bytes",
            stats.allocations, stats.live_bytes
        ),
        Err(error) => {
            eprintln!("demo: cannot write {path}: {error}");
            std::process::exit(1);
        }
    }

    let remembered: usize = sessions
        .values()
        .map(|s| s.user.len() + s.history.len())
        .sum();
    println!(
        "demo: {} sessions remember {remembered} items",
        sessions.len()
    );
    drop(stops);
    for worker in workers {
        worker.join().ok();
    }
    std::hint::black_box((&thumbnails, &sessions, &log));
}
