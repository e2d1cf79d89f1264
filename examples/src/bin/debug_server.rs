//! A service that serves its own heap dump over HTTP, with the standard
//! library only: `GET /debug/heapdump` streams `write_heap_dump` straight
//! into the socket (no file, no buffering of the dump in memory), so
//! `curl -o app.hdump http://127.0.0.1:PORT/debug/heapdump` gets a dump of
//! a running process.
//!
//! ```text
//! debug_server [PORT]        # default: any free port; prints "listening on 127.0.0.1:PORT"
//! curl -o app.hdump http://127.0.0.1:PORT/debug/heapdump
//! heapdump top app.hdump
//! ```
//!
//! It binds to loopback only: a heap dump holds the program's memory
//! layout and sizes, and must not be served to the network. The service's
//! own data (a session table of 1000 entries of 512 bytes) stands for what
//! a real service holds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use heapdump_capture::Tracker;

#[global_allocator]
static ALLOCATOR: Tracker = Tracker::system();

/// What the service keeps: sessions by id.
type Sessions = Arc<Mutex<HashMap<u64, Vec<u8>>>>;

fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        None => 0,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: debug_server [PORT]");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("debug_server: cannot listen on 127.0.0.1:{port}: {error}");
            std::process::exit(1);
        }
    };
    let sessions: Sessions = Arc::new(Mutex::new(
        (0..1000u64).map(|id| (id, vec![id as u8; 512])).collect(),
    ));
    match listener.local_addr() {
        Ok(address) => println!("listening on {address}"),
        Err(error) => eprintln!("debug_server: {error}"),
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let sessions = sessions.clone();
        std::thread::spawn(move || {
            if let Err(error) = serve(stream, &sessions) {
                eprintln!("debug_server: {error}");
            }
        });
    }
}

fn serve(mut stream: TcpStream, sessions: &Sessions) -> std::io::Result<()> {
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone()?);
    reader.read_line(&mut request_line)?;
    // The headers, up to the empty line.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some("/debug/heapdump")) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Disposition: attachment; filename=\"heapdump.{}.hdump\"\r\n\
                 Connection: close\r\n\r\n",
                std::process::id()
            )?;
            stream.flush()?;
            // The body is the dump itself, streamed as it is written; its
            // footer lets the client tell a complete dump from a cut one.
            if let Err(error) = heapdump_capture::write_heap_dump(stream.as_fd()) {
                eprintln!("debug_server: heap dump: {error}");
            }
            Ok(())
        }
        (Some("GET"), Some("/")) => {
            let count = sessions.lock().map_or(0, |s| s.len());
            let body = format!("{count} sessions\nheap dump: GET /debug/heapdump\n");
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
        }
        _ => stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}
