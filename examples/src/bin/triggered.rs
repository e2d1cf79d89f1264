//! A program that never calls the dump API: its dumps come only from the
//! `HEAPDUMP` variable. It builds a known heap (100 blocks of 1000 bytes
//! held by a static, and a 50-node linked list), then does one thing:
//!
//! ```text
//! HEAPDUMP=dir=/tmp/d,on=signal:USR2 triggered hold      # prints "ready", waits for stdin to close
//! HEAPDUMP=dir=/tmp/d,on=growth:2MiB triggered grow 5    # grows by 5 steps of 1 MiB + 4 KiB, 150 ms apart
//! HEAPDUMP=dir=/tmp/d,on=interval:200ms triggered sleep 1000
//! HEAPDUMP=dir=/tmp/d,on=oom triggered fail               # asks for 64 TiB: the allocation fails, the process aborts
//! HEAPDUMP=dir=/tmp/d,on=exit triggered                   # returns from main at once
//! ```
//!
//! Prints `KNOWN blocks=100 block_size=1000 list=50` first, so tests know
//! what every dump must contain.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use heapdump_capture::Tracker;

#[global_allocator]
static ALLOCATOR: Tracker = Tracker::system();

/// The known heap, alive until the process ends (so the exit dump sees it).
/// Boxed: each block is one of the known allocations.
#[allow(clippy::vec_box)]
static KEPT: Mutex<Vec<Box<[u8; 1000]>>> = Mutex::new(Vec::new());

struct Node {
    _value: u64,
    _next: Option<Box<Node>>,
}

static LIST: Mutex<Option<Box<Node>>> = Mutex::new(None);

/// Allocations made by `grow`, kept alive.
static GROWN: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn main() {
    {
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        kept.reserve_exact(100);
        for i in 0..100u8 {
            kept.push(Box::new([i; 1000]));
        }
    }
    let mut list = None;
    for value in 0..50 {
        list = Some(Box::new(Node {
            _value: value,
            _next: list,
        }));
    }
    *LIST.lock().unwrap_or_else(|e| e.into_inner()) = list;
    println!("KNOWN blocks=100 block_size=1000 list=50");

    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => {}
        ["hold"] => {
            println!("ready");
            let mut sink = Vec::new();
            // Until the test closes our stdin.
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        ["grow", steps] => {
            let steps: usize = steps.parse().unwrap_or_else(|_| usage());
            for step in 0..steps {
                // Bigger than a step of 1 MiB, so small allocations made
                // meanwhile never keep a level from being reached.
                let block = vec![step as u8; (1 << 20) + 4096];
                GROWN.lock().unwrap_or_else(|e| e.into_inner()).push(block);
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        ["sleep", ms] => {
            let ms: u64 = ms.parse().unwrap_or_else(|_| usage());
            std::thread::sleep(Duration::from_millis(ms));
        }
        ["fail"] => {
            // 64 TiB: no machine grants it, so the allocator returns null
            // and `handle_alloc_error` aborts the process.
            let huge: Vec<u8> = Vec::with_capacity(1 << 46);
            std::hint::black_box(&huge);
            println!("the allocation did not fail");
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: triggered [hold | grow STEPS | sleep MS | fail]");
    std::process::exit(2);
}
