//! `heapdump serve` on the demo program's dumps: every JSON endpoint
//! answers byte for byte what the matching command prints with `--json`,
//! the dominator tree's levels add up, bad requests get the right status,
//! Ctrl-C ends the server with status 0; and headless Chromium (Debian's
//! `chromium`) renders the page with the biggest site and an opened level
//! of the dominator tree.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use heapdump_tests::{binary, heapdump, heapdump_json, run_ok, scratch_dir};
use serde_json::Value;

/// A running `heapdump serve`, stopped with SIGINT when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &[&OsStr]) -> Server {
        let mut child = Command::new(binary("heapdump"))
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start heapdump serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the URL line");
        let Some(url) = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .map(str::to_owned)
        else {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "serve printed no URL: {line:?}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        };
        Server { child, url }
    }

    /// `path` (starting with `/`) of this server: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        get_with_headers(&format!("{}{}", self.url, &path[1..]), &[])
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit status and stderr.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        run_ok(Command::new("kill").args(["-INT", &self.child.id().to_string()]));
        let status = self.child.wait().expect("wait for serve");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get_with_headers(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url);
    for &(name, value) in headers {
        request = request.header(name, value);
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, body)
}

fn demo_dump(dir: &Path, name: &str) -> PathBuf {
    let dump = dir.join(name);
    run_ok(Command::new(binary("demo")).arg(&dump));
    dump
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// What the command prints with `--json`, as text.
fn cli_json(args: &[&OsStr]) -> String {
    let mut args = args.to_vec();
    args.push(os("--json"));
    heapdump(&args)
}

#[test]
fn endpoints_answer_exactly_what_the_commands_print_with_json() {
    let dir = scratch_dir("serve_endpoints");
    let old = demo_dump(&dir, "old.hdump");
    let dump = demo_dump(&dir, "new.hdump");
    let server = Server::start(&[dump.as_os_str(), os("--diff"), old.as_os_str()]);
    let d = dump.as_os_str();

    let top_retained = heapdump_json(&[os("top"), d, os("--retained")]);
    let biggest = top_retained["objects"][0]["address"]
        .as_str()
        .expect("an object")
        .to_owned();
    let pairs: Vec<(String, Vec<&OsStr>)> = vec![
        ("/api/info".into(), vec![os("info"), d]),
        ("/api/top".into(), vec![os("top"), d]),
        (
            "/api/top?by=type&n=5".into(),
            vec![os("top"), d, os("--by"), os("type"), os("-n"), os("5")],
        ),
        (
            "/api/top?by=function".into(),
            vec![os("top"), d, os("--by"), os("function")],
        ),
        (
            "/api/top?by=own-file&n=3".into(),
            vec![os("top"), d, os("--by"), os("own-file"), os("-n"), os("3")],
        ),
        ("/api/retained".into(), vec![os("top"), d, os("--retained")]),
        (
            "/api/retained?n=4".into(),
            vec![os("top"), d, os("--retained"), os("-n"), os("4")],
        ),
        ("/api/leaks".into(), vec![os("leaks"), d]),
        (
            "/api/leaks?show=all&n=7&blocks=true".into(),
            vec![
                os("leaks"),
                d,
                os("--show"),
                os("all"),
                os("-n"),
                os("7"),
                os("--blocks"),
            ],
        ),
        (
            format!("/api/retainers?address={biggest}"),
            vec![os("retainers"), d, os(&biggest)],
        ),
        (
            "/api/retainers?type=RcInner&n=2&paths=1".into(),
            vec![
                os("retainers"),
                d,
                os("--type"),
                os("RcInner"),
                os("-n"),
                os("2"),
                os("--paths"),
                os("1"),
            ],
        ),
        ("/api/diff".into(), vec![os("diff"), old.as_os_str(), d]),
        (
            "/api/diff?by=type&n=3".into(),
            vec![
                os("diff"),
                old.as_os_str(),
                d,
                os("--by"),
                os("type"),
                os("-n"),
                os("3"),
            ],
        ),
    ];
    for (path, args) in &pairs {
        let (status, body) = server.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(
            body,
            cli_json(args),
            "{path} differs from heapdump {args:?} --json"
        );
    }

    // The flame graphs are toflamegraph's, byte for byte.
    let (status, svg) = server.get("/flamegraph.svg");
    assert_eq!(status, 200);
    assert_eq!(svg, heapdump(&[os("toflamegraph"), d]));
    let (status, svg) = server.get("/flamegraph-diff.svg");
    assert_eq!(status, 200);
    assert_eq!(
        svg,
        heapdump(&[os("toflamegraph"), d, os("--diff"), old.as_os_str()])
    );

    // The page and its assets, from the binary.
    for (path, marker) in [
        ("/", "<script src=\"/app.js\">"),
        ("/app.js", "/api/dominators"),
        ("/app.css", "ul.tree"),
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(marker), "{path}");
    }

    // Bad requests: status and a message naming the problem.
    for (path, status, words) in [
        ("/api/top?by=sites", 400, "expected one of site, function"),
        ("/api/top?limit=3", 400, "unknown parameter `limit`"),
        ("/api/top?n=-1", 400, "not a non-negative integer"),
        ("/api/info?x=1", 400, "takes none"),
        ("/api/retainers", 400, "exactly one of"),
        ("/api/retainers?address=0x10", 404, "0x10"),
        ("/api/dominators?node=99999999", 404, "the dump has"),
        ("/api/dominators?limit=100001", 400, "at most 100000"),
        ("/nothing", 404, "no page /nothing"),
    ] {
        let (got, body) = server.get(path);
        assert_eq!(got, status, "{path}: {body}");
        let error: Value = serde_json::from_str(&body).expect("a JSON error");
        let message = error["error"].as_str().expect("an error message");
        assert!(message.contains(words), "{path}: {message}");
    }
    // On loopback, a request for another host name (DNS rebinding) is refused.
    let (status, _) = get_with_headers(
        &format!("{}api/info", server.url),
        &[("Host", "evil.example")],
    );
    assert_eq!(status, 403);
    // A request a browser says another site's page made is refused; one
    // from the page itself is answered.
    for (site, expected) in [
        ("cross-site", 403),
        ("same-site", 403),
        ("same-origin", 200),
    ] {
        let (status, _) = get_with_headers(
            &format!("{}api/info", server.url),
            &[("Sec-Fetch-Site", site)],
        );
        assert_eq!(status, expected, "Sec-Fetch-Site: {site}");
    }

    let (status, stderr) = server.interrupt();
    assert!(status.success(), "serve ended with {status}: {stderr}");
    assert!(stderr.contains("heapdump serve: stopped"), "{stderr}");
}

/// The dominator tree, level by level: the top level holds every live
/// byte, a block's children and its own size make its retained size, and
/// pages put together are the whole level, largest first.
#[test]
fn dominator_levels_add_up_to_retained_sizes() {
    let dir = scratch_dir("serve_dominators");
    let dump = demo_dump(&dir, "demo.hdump");
    let info = heapdump_json(&[os("info"), dump.as_os_str()]);
    let retained = heapdump_json(&[os("top"), dump.as_os_str(), os("--retained")]);
    let server = Server::start(&[dump.as_os_str()]);
    let level = |query: &str| -> Value {
        let (status, body) = server.get(&format!("/api/dominators{query}"));
        assert_eq!(status, 200, "{query}: {body}");
        serde_json::from_str(&body).expect("JSON")
    };

    let top = level("?limit=100000");
    assert_eq!(top["parent"], Value::Null);
    assert_eq!(top["children_retained"], info["heap"]["live_bytes"]);
    let children = top["children"].as_array().expect("children");
    assert_eq!(children.len() as u64, top["child_count"].as_u64().unwrap());
    // The largest retainer of the heap is at the top, first.
    assert_eq!(children[0]["address"], retained["objects"][0]["address"]);
    assert_eq!(children[0]["retained"], retained["objects"][0]["retained"]);

    // Pages of 3 put together are the level.
    let mut paged = Vec::new();
    let mut offset = 0;
    loop {
        let page = level(&format!("?offset={offset}&limit=3"));
        let got = page["children"].as_array().unwrap().clone();
        offset += got.len();
        paged.extend(got);
        if page["omitted_after"] == 0 {
            break;
        }
        let rest: u64 = children[offset..]
            .iter()
            .map(|c| c["retained"].as_u64().unwrap())
            .sum();
        assert_eq!(page["omitted_after_retained"], rest);
    }
    assert_eq!(&paged, children);

    // Every block with children: its children and itself make its retained size.
    let mut opened = 0;
    for child in children.iter().filter(|c| c["children"] != 0).take(20) {
        let index = child["index"].as_u64().unwrap();
        let below = level(&format!("?node={index}&limit=100000"));
        assert_eq!(below["parent"]["address"], child["address"]);
        assert_eq!(below["child_count"], child["children"]);
        assert_eq!(
            below["children_retained"].as_u64().unwrap() + child["size"].as_u64().unwrap(),
            child["retained"].as_u64().unwrap(),
            "{child}"
        );
        let sizes: Vec<u64> = below["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["retained"].as_u64().unwrap())
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "largest first");
        opened += 1;
    }
    assert!(
        opened > 0,
        "the demo's heap has blocks that dominate others"
    );
}

/// A dump written without the conservative scan has no graph: the page
/// still has its summary, flame graph and top sites, and the graph views
/// answer 404 saying why.
#[test]
fn a_dump_without_a_scan_is_served_without_the_graph_views() {
    use heapdump_formats::records::AllocationRecord;
    use heapdump_formats::testing::DumpBuilder;

    let dir = scratch_dir("serve_no_scan");
    let mut b = DumpBuilder::default();
    b.process.pointer_size = 8;
    b.stack(&[]);
    b.stack(&[0x1000]);
    for i in 0..3u64 {
        b.allocations.push(AllocationRecord {
            address: 0x10_000 * (i + 1),
            size: 64 << i,
            sequence: i,
            stack: 1,
            thread: 0,
            align: 8,
            flags: 0,
        });
    }
    let dump = dir.join("no-scan.hdump");
    std::fs::write(&dump, b.to_bytes()).expect("write the dump");
    let server = Server::start(&[dump.as_os_str()]);
    let (status, body) = server.get("/api/top");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, cli_json(&[os("top"), dump.as_os_str()]));
    let top: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (top["total_bytes"].as_u64(), top["total_count"].as_u64()),
        (Some(448), Some(3))
    );
    for path in [
        "/api/leaks",
        "/api/retained",
        "/api/dominators",
        "/api/retainers?address=0x10000",
    ] {
        let (status, body) = server.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("HAS_SCAN"), "{path}: {body}");
    }
    let (status, _) = server.get("/flamegraph.svg");
    assert_eq!(status, 200);
    let (status, stderr) = server.interrupt();
    assert!(status.success());
    assert!(
        stderr.contains("the page has no retained sizes"),
        "{stderr}"
    );
}

/// The `chromium` binary, or why the test cannot use it.
fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "headless Chromium is needed: install the Debian package `chromium` (.ci/run does)"
    );
    path
}

/// `chromium --headless` with the flags it needs here: as root it runs only
/// without its sandbox, and there is no GPU.
fn headless(extra: &[&str], url: &str) -> std::process::Output {
    // Bounded: a hung browser must fail the test, not stall CI.
    Command::new("timeout")
        .arg("120")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=15000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("cannot run chromium")
}

/// Text as Chromium's --dump-dom serializes it inside an element.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[test]
fn chromium_renders_the_biggest_site_and_an_opened_dominator_level() {
    let dir = scratch_dir("serve_chromium");
    let dump = demo_dump(&dir, "demo.hdump");
    let top = heapdump_json(&[os("top"), dump.as_os_str()]);
    let biggest_site = top["rows"][0]["function"]
        .as_str()
        .expect("a site")
        .to_owned();
    let server = Server::start(&[dump.as_os_str()]);

    let profile = dir.join("profile");
    let user_data = format!("--user-data-dir={}", profile.display());
    let output = headless(
        &["--dump-dom", &user_data],
        &format!("{}?expand=1", server.url),
    );
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() && dom.trim().is_empty() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("sandbox") || stderr.contains("Missing X server") {
            println!("SKIPPED: chromium cannot run here: {stderr}");
            return;
        }
        panic!("chromium failed ({}):\n{stderr}", output.status);
    }
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page's script did not finish:\n{dom}"
    );
    assert!(
        dom.contains(&escaped(&biggest_site)),
        "the biggest site {biggest_site:?} is not on the page:\n{dom}"
    );

    // The largest top-level block is open, showing its children.
    let (_, body) = server.get("/api/dominators");
    let level: Value = serde_json::from_str(&body).unwrap();
    let first = &level["children"][0];
    let first_index = first["index"].as_u64().unwrap();
    let (_, body) = server.get(&format!("/api/dominators?node={first_index}"));
    let below: Value = serde_json::from_str(&body).unwrap();
    assert!(below["child_count"].as_u64().unwrap() > 0);
    assert!(
        dom.contains(&format!("data-node=\"{first_index}\" data-open=\"true\"")),
        "block {first_index} is not open:\n{dom}"
    );
    let shown_nodes = dom.matches("<li data-node=").count() as u64;
    let expected = level["children"].as_array().unwrap().len() as u64
        + below["children"].as_array().unwrap().len() as u64;
    assert_eq!(shown_nodes, expected, "top level plus one opened level");
    for child in below["children"].as_array().unwrap() {
        assert!(dom.contains(&format!("data-node=\"{}\"", child["index"])));
    }

    // A screenshot is a PNG of the window's size.
    let png = dir.join("serve.png");
    let screenshot = format!("--screenshot={}", png.display());
    let output = headless(
        &[&screenshot, "--window-size=1400,900", &user_data],
        &format!("{}?expand=1", server.url),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 900));
}
