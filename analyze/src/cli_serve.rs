//! `heapdump serve`: a local web page over one analyzed dump. The dump is
//! opened, symbolized and analyzed once at start; the page (HTML, script
//! and style compiled into the binary) then asks JSON endpoints for what
//! it shows. Each endpoint answers with the report struct and the JSON
//! text of the command it mirrors (`/api/top` is `top --json`), so the two
//! cannot drift apart; only the dominator tree's levels have no command.
//!
//! One thread answers requests in turn (the reports need the symbolizer's
//! caches mutably); answers are kept, so a page opened twice costs nothing.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use heapdump_analyze::analysis::HeapAnalysis;
use heapdump_analyze::dominator_levels::DominatorLevels;
use heapdump_analyze::export::flamegraph::{FlameGraphOptions, write_flamegraph};
use heapdump_analyze::export::{HeapModel, ModelOptions};
use heapdump_analyze::heuristics::{Heuristic, Heuristics};
use heapdump_analyze::report::diff::{DiffBy, DiffReport};
use heapdump_analyze::report::info::InfoReport;
use heapdump_analyze::report::leaks::{LeaksOptions, LeaksReport};
use heapdump_analyze::report::retained::{RetainedOptions, RetainedReport};
use heapdump_analyze::report::retainers::{RetainersQuery, RetainersReport};
use heapdump_analyze::report::top::{GroupBy, TopOptions, TopReport};
use heapdump_analyze::stacks::{Namer, Types};
use heapdump_formats::read::DumpView;
use serde::Serialize;

use crate::{analyze, display, json_text, namer, parse_address, parse_classes, parse_heuristics};

#[derive(clap::Args, Debug)]
#[command(after_help = concat!(
    "EXAMPLES:\n",
    "    heapdump serve /tmp/app.hdump                       # then open the URL it prints\n",
    "    heapdump serve /tmp/app.hdump ./target/release/app --port 9000\n",
    "    heapdump serve /tmp/app.2.hdump --diff /tmp/app.1.hdump   # with the growth since OLD\n",
    "    heapdump serve /tmp/app.hdump --port 0              # any free port\n",
    "    curl -s 'http://127.0.0.1:7070/api/top?by=type&n=5'   # = top --by type -n 5 --json\n\n",
    "Opens, symbolizes and analyzes DUMP once (progress on stderr), then serves a\n",
    "page until Ctrl-C: the summary of `info`, the flame graph of live bytes, the\n",
    "top sites, types and functions, what retains the most (`top --retained`), the\n",
    "dominator tree opened level by level, the retainers of any block (its dominators\n",
    "and root paths with field names), the leak records, and with --diff the growth\n",
    "since OLD. The page, its script and style are part of this binary: nothing is\n",
    "fetched from elsewhere. The URL is printed on stdout once the server listens.\n\n",
    "It listens on 127.0.0.1 (this machine only) unless --bind says otherwise, and\n",
    "then warns: the page shows addresses, function and file names of the program.\n",
    "On loopback, requests naming another host are refused (DNS rebinding).\n\n",
    "JSON endpoints, each the exact output of the command in brackets (same options,\n",
    "same defaults; BINARY and --heuristics are serve's own):\n",
    "    /api/info                                  [info --json]\n",
    "    /api/top?by=site|function|file|own-function|own-file|type&n=20   [top --json]\n",
    "    /api/retained?n=20                         [top --retained --json]\n",
    "    /api/leaks?show=definite,possible&n=50&blocks=false   [leaks --json]\n",
    "    /api/retainers?address=0x..|site=TEXT|type=TEXT&n=3&paths=3   [retainers --json]\n",
    "    /api/diff?by=site|type&n=20                [diff OLD DUMP --json; with --diff]\n",
    "    /api/dominators?node=INDEX&offset=0&limit=100\n",
    "        the blocks INDEX dominates directly (no node: the top level), largest\n",
    "        retained size first: {\"parent\": OBJ|null, \"child_count\", \"children_retained\",\n",
    "        \"offset\", \"children\": [OBJ + \"children\": u64], \"omitted_after\",\n",
    "        \"omitted_after_retained\"}, OBJ as in `retainers --help`; limit at most 100000.\n",
    "    /flamegraph.svg, /flamegraph-diff.svg      [toflamegraph, toflamegraph --diff OLD]\n",
    "A bad parameter is status 400, something not found 404, both with {\"error\": str}.\n",
    "Page options: /?expand=N opens the largest block of the tree's top level and\n",
    "its largest child, N levels deep; /?retainers=0xADDR shows that block's retainers."
))]
pub struct ServeArgs {
    /// The .hdump file.
    dump: PathBuf,
    /// The program's executable, if not at the path the dump records.
    binary: Option<PathBuf>,
    /// The TCP port; 0 picks a free one.
    #[arg(long, default_value_t = 7070)]
    port: u16,
    /// The address to listen on. Anything but a loopback address lets other
    /// machines read the heap's names and addresses (a warning says so).
    #[arg(long, value_name = "ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// An older dump of the same program: the page adds the growth since it
    /// (`diff OLD DUMP`, and a differential flame graph).
    #[arg(long, value_name = "OLD.hdump")]
    diff: Option<PathBuf>,
    /// Heuristics for leak classes and retention (see `leaks --help`).
    #[arg(long, default_value_t = Heuristics::default(), value_parser = parse_heuristics)]
    heuristics: Heuristics,
}

const INDEX_HTML: &str = include_str!("serve/index.html");
const APP_JS: &str = include_str!("serve/app.js");
const APP_CSS: &str = include_str!("serve/app.css");

/// Set by SIGINT and SIGTERM: the request loop ends at its next turn.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: i32) {
    STOP.store(true, Ordering::SeqCst);
}

/// How long the loop waits for a request before it looks at [`STOP`].
const POLL: Duration = Duration::from_millis(200);

/// Answers kept before the oldest are dropped: every answer is a function
/// of the URL alone, but URLs (addresses, offsets) are unbounded.
const MAX_KEPT_ANSWERS: usize = 512;
/// Bytes of kept answers, and the largest answer kept: a few big pages of
/// the dominator tree or leak blocks must not grow the server without
/// bound.
const MAX_KEPT_BYTES: usize = 256 << 20;
const MAX_KEPT_ANSWER_BYTES: usize = 4 << 20;

/// The most blocks of one level `/api/dominators` gives at once: a page
/// of the top level of a big heap would otherwise be the whole heap.
const MAX_LEVEL_PAGE: usize = 100_000;

/// `heapdump serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let file = heapdump_analyze::open_dump(&args.dump)?;
    let old_file = match &args.diff {
        Some(old) => Some(heapdump_analyze::open_dump(old)?),
        None => None,
    };
    eprintln!(
        "heapdump serve: analyzing {} ({} live blocks)",
        display(&args.dump),
        file.view().allocations().len()
    );
    let old = match (&old_file, &args.diff) {
        (Some(old_file), Some(path)) => Some((old_file.view(), display(path))),
        _ => None,
    };
    let mut state = Served::load(file.view(), &args, old)?;
    eprintln!(
        "heapdump serve: analyzed in {:.2} s; preparing the first page",
        started.elapsed().as_secs_f64()
    );
    state.warm();

    let address = SocketAddr::new(args.bind, args.port);
    let server = tiny_http::Server::http(address).map_err(|error| {
        anyhow::anyhow!("cannot listen on {address}: {error} (choose another --port, or --port 0)")
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .context("the server did not listen on an IP address")?;
    if !args.bind.is_loopback() {
        eprintln!(
            "warning: listening on {bound}, reachable from other machines: anyone who can connect reads this heap's addresses, function and file names (default: --bind 127.0.0.1)"
        );
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `signal` with a valid handler has no other
        // precondition.
        unsafe { libc::signal(signal, request_stop as *const () as libc::sighandler_t) };
    }
    let url = page_url(bound);
    eprintln!(
        "heapdump serve: ready in {:.2} s; Ctrl-C to stop",
        started.elapsed().as_secs_f64()
    );
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "serving {} at {url}", display(&args.dump))?;
        stdout.flush()?;
    }

    while !STOP.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(POLL) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            // EINTR from the signal, or a broken connection: look at STOP.
            Err(_) => continue,
        };
        let answer = if args.bind.is_loopback() && !names_loopback(&request, bound.port()) {
            Answer::error(
                403,
                "this server answers requests for 127.0.0.1 or localhost only",
            )
        } else if from_another_site(&request) {
            Answer::error(403, "this server answers its own page only")
        } else if *request.method() != tiny_http::Method::Get
            && *request.method() != tiny_http::Method::Head
        {
            Answer::error(405, "only GET and HEAD")
        } else {
            state.answer(request.url())
        };
        // A client that went away is not the server's problem.
        let _ = request.respond(answer.into_response());
    }
    eprintln!("heapdump serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// `http://HOST:PORT/`, with the address in brackets for IPv6 and
/// `127.0.0.1` for an unspecified bind (0.0.0.0 is not a place to go).
fn page_url(bound: SocketAddr) -> String {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    match ip {
        IpAddr::V4(ip) => format!("http://{ip}:{}/", bound.port()),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}/", bound.port()),
    }
}

/// Whether a browser says the request comes from another site's page (an
/// `<img>` or a form there pointing here): such a page cannot read the
/// answer, but could still make the server build big ones.
fn from_another_site(request: &tiny_http::Request) -> bool {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Sec-Fetch-Site"))
        .is_some_and(|h| matches!(h.value.as_str(), "cross-site" | "same-site"))
}

/// Whether the request's Host header names this machine's loopback
/// (`127.0.0.1`, `localhost`, `[::1]`, with our port or none). A page from
/// elsewhere that rebinds its own name to 127.0.0.1 sends its own name.
fn names_loopback(request: &tiny_http::Request, port: u16) -> bool {
    let Some(host) = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| h.value.as_str().to_ascii_lowercase())
    else {
        // HTTP/1.0 clients may send none; a browser always does.
        return true;
    };
    let name = match host.rsplit_once(':') {
        Some((name, p)) if !name.ends_with(':') && p.parse::<u16>().is_ok() => {
            if p.parse::<u16>() != Ok(port) {
                return false;
            }
            name
        }
        _ => host.as_str(),
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]")
}

/// An HTTP answer.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Answer {
    fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status: 200,
            content_type,
            body: body.into(),
        }
    }

    /// A report as its command's `--json` prints it.
    fn json<T: Serialize>(value: &T) -> Answer {
        match json_text(value) {
            Ok(text) => Answer::ok("application/json", text),
            Err(error) => Answer::error(500, &format!("{error:#}")),
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            error: &'a str,
        }
        let body = json_text(&ErrorBody { error: message }).unwrap_or_default();
        Answer {
            status,
            content_type: "application/json",
            body: body.into_bytes(),
        }
    }

    fn into_response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let mut response = tiny_http::Response::from_data(self.body).with_status_code(self.status);
        for (field, value) in [
            ("Content-Type", self.content_type),
            // Another dump may be served on this port next time.
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ] {
            if let Ok(header) = tiny_http::Header::from_bytes(field, value) {
                response.add_header(header);
            }
        }
        response
    }
}

/// The older dump of `--diff`.
struct OldDump<'a> {
    view: DumpView<'a>,
    /// Its path as given, as `diff` prints it.
    name: String,
    plain: Namer,
    /// Made when `diff --by type` is first asked for.
    typed: Option<Namer>,
    binary: Option<PathBuf>,
    path: PathBuf,
}

/// The analyzed dump and what the page asked for so far.
struct Served<'a> {
    view: DumpView<'a>,
    /// The dump's path as given, as `info` and `diff` print it.
    name: String,
    /// Names sites and functions as `top` and `diff` do (no DWARF types).
    plain: Namer,
    /// Names types and fields as `top --retained`, `leaks` and
    /// `retainers` do (the executable's DWARF).
    typed: Namer,
    heuristics: Heuristics,
    /// The graph, leak classes and dominator tree with its levels, or why
    /// there are none (a dump written without the scan).
    graph: Result<(HeapAnalysis, DominatorLevels), String>,
    old: Option<OldDump<'a>>,
    flamegraph: Vec<u8>,
    diff_flamegraph: Option<Vec<u8>>,
    kept: HashMap<String, Answer>,
    kept_bytes: usize,
}

impl<'a> Served<'a> {
    fn load(
        view: DumpView<'a>,
        args: &ServeArgs,
        old: Option<(DumpView<'a>, String)>,
    ) -> anyhow::Result<Served<'a>> {
        let dump = &args.dump;
        let mut plain = namer(&view, dump, args.binary.clone(), Types::Skip)?;
        let mut typed = namer(&view, dump, args.binary.clone(), Types::Load)?;
        // As `top --retained` and `retainers` build it.
        // Without a graph (a dump written without the scan) the summary,
        // the flame graph, top and diff still have what they need.
        let graph = analyze(&view, dump, &args.heuristics, true, &mut typed.frames())
            .and_then(|analysis| Ok((DominatorLevels::new(&analysis)?, analysis)))
            .map(|(levels, analysis)| (analysis, levels))
            .map_err(|error| {
                let error = format!("{error:#}");
                eprintln!(
                    "warning: {error}; the page has no retained sizes, dominator tree, retainers or leaks"
                );
                error
            });
        let mut old = match (old, &args.diff) {
            (Some((old_view, name)), Some(path)) => Some(OldDump {
                plain: namer(&old_view, path, args.binary.clone(), Types::Skip)?,
                view: old_view,
                name,
                typed: None,
                binary: args.binary.clone(),
                path: path.clone(),
            }),
            _ => None,
        };
        let spinner = crate::spinner("drawing the flame graph");
        // As `toflamegraph` draws it: allocation stacks, no graph, no types.
        let model_options = ModelOptions { graph: false };
        let model = HeapModel::build_with(view.clone(), &mut plain, &model_options)
            .with_context(|| format!("cannot draw the flame graph of {}", display(dump)))?;
        let mut flamegraph = Vec::new();
        write_flamegraph(&model, &FlameGraphOptions::default(), &mut flamegraph)?;
        let diff_flamegraph = match old.as_mut() {
            Some(old) => {
                let base = HeapModel::build_with(old.view.clone(), &mut old.plain, &model_options)
                    .with_context(|| format!("cannot draw the flame graph of {}", old.name))?;
                let options = FlameGraphOptions {
                    base: Some(&base),
                    ..FlameGraphOptions::default()
                };
                let mut svg = Vec::new();
                write_flamegraph(&model, &options, &mut svg)?;
                Some(svg)
            }
            None => None,
        };
        drop(model);
        spinner.finish_and_clear();
        Ok(Served {
            name: display(dump),
            view,
            plain,
            typed,
            heuristics: args.heuristics,
            graph,
            old,
            flamegraph,
            diff_flamegraph,
            kept: HashMap::new(),
            kept_bytes: 0,
        })
    }

    /// Answers what the page asks for first, so it appears at once.
    fn warm(&mut self) {
        for url in [
            "/api/info",
            "/api/top?by=site&n=20",
            "/api/top?by=type&n=20",
            "/api/top?by=function&n=20",
            "/api/retained?n=20",
            "/api/leaks",
            "/api/dominators",
            "/api/diff?by=site&n=20",
        ] {
            self.answer(url);
        }
    }

    /// The answer to `url`, kept for the next time it is asked.
    fn answer(&mut self, url: &str) -> Answer {
        if let Some(answer) = self.kept.get(url) {
            return answer.clone();
        }
        let answer = self.route(url);
        if answer.status == 200
            && answer.content_type == "application/json"
            && answer.body.len() <= MAX_KEPT_ANSWER_BYTES
        {
            if self.kept.len() >= MAX_KEPT_ANSWERS
                || self.kept_bytes + answer.body.len() > MAX_KEPT_BYTES
            {
                self.kept.clear();
                self.kept_bytes = 0;
            }
            self.kept_bytes += answer.body.len();
            self.kept.insert(url.to_owned(), answer.clone());
        }
        answer
    }

    fn route(&mut self, url: &str) -> Answer {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let query = match Query::parse(query) {
            Ok(query) => query,
            Err(error) => return Answer::error(400, &error),
        };
        let result = match path {
            "/" | "/index.html" => return Answer::ok("text/html; charset=utf-8", INDEX_HTML),
            "/app.js" => return Answer::ok("text/javascript; charset=utf-8", APP_JS),
            "/app.css" => return Answer::ok("text/css; charset=utf-8", APP_CSS),
            "/flamegraph.svg" => return Answer::ok("image/svg+xml", self.flamegraph.clone()),
            "/flamegraph-diff.svg" => {
                return match &self.diff_flamegraph {
                    Some(svg) => Answer::ok("image/svg+xml", svg.clone()),
                    None => Answer::error(404, "no --diff OLD.hdump was given"),
                };
            }
            "/api/info" => query
                .only(&[])
                .map(|()| Answer::json(&InfoReport::build(&self.view, &self.name))),
            "/api/top" => self.top(&query),
            "/api/retained" => self.retained(&query),
            "/api/leaks" => self.leaks(&query),
            "/api/retainers" => self.retainers(&query),
            "/api/diff" => self.diff(&query),
            "/api/dominators" => self.dominators(&query),
            _ => Err(ApiError::NotFound(format!("no page {path}"))),
        };
        result.unwrap_or_else(|error| match error {
            ApiError::BadRequest(message) => Answer::error(400, &message),
            ApiError::NotFound(message) => Answer::error(404, &message),
        })
    }

    /// `top --by BY -n N --json`.
    fn top(&mut self, query: &Query) -> Result<Answer, ApiError> {
        query.only(&["by", "n"])?;
        let by = query.value_enum("by", GroupBy::Site)?;
        let limit = query.number("n", 20)?;
        // `top` loads the executable's DWARF for --by type only.
        let namer = if by == GroupBy::Type {
            &mut self.typed
        } else {
            &mut self.plain
        };
        let report = TopReport::build(
            &self.view,
            &mut namer.frames(),
            &TopOptions { by, limit },
            &indicatif::ProgressBar::hidden(),
        );
        Ok(Answer::json(&report))
    }

    /// `top --retained -n N --json`.
    fn retained(&mut self, query: &Query) -> Result<Answer, ApiError> {
        query.only(&["n"])?;
        let limit = query.number("n", 20)?;
        let (analysis, _) = graph_of(&self.graph)?;
        let options = RetainedOptions {
            limit,
            per_object: false,
        };
        let report =
            RetainedReport::build(&self.view, analysis, &mut self.typed.frames(), &options)
                .map_err(|e| ApiError::NotFound(format!("{e:#}")))?;
        Ok(Answer::json(&report))
    }

    /// `leaks --show CLASSES -n N [--blocks] --json`.
    fn leaks(&mut self, query: &Query) -> Result<Answer, ApiError> {
        query.only(&["show", "n", "blocks"])?;
        let defaults = LeaksOptions::default();
        let show = match query.get("show") {
            Some(text) => parse_classes(text).map_err(ApiError::BadRequest)?.0,
            None => defaults.show.clone(),
        };
        let options = LeaksOptions {
            show,
            limit: query.number("n", defaults.limit)?,
            blocks: query.flag("blocks")?,
            ..defaults
        };
        // `leaks` names types (and so loads DWARF) only when they decide
        // which blocks hold no pointer.
        let namer = if self.heuristics.contains(Heuristic::PointerFreeTypes) {
            &mut self.typed
        } else {
            &mut self.plain
        };
        let (analysis, _) = graph_of(&self.graph)?;
        let report = LeaksReport::build(&self.view, analysis, &mut namer.frames(), &options);
        Ok(Answer::json(&report))
    }

    /// `retainers ADDR | --site TEXT | --type TEXT -n N --paths P --json`.
    fn retainers(&mut self, query: &Query) -> Result<Answer, ApiError> {
        query.only(&["address", "site", "type", "n", "paths"])?;
        let selectors = [
            query
                .get("address")
                .map(|a| parse_address(a).map(RetainersQuery::Address)),
            query
                .get("site")
                .map(|s| Ok(RetainersQuery::Site(s.to_owned()))),
            query
                .get("type")
                .map(|t| Ok(RetainersQuery::Type(t.to_owned()))),
        ];
        let mut given = selectors.into_iter().flatten();
        let (Some(selector), None) = (given.next(), given.next()) else {
            return Err(ApiError::BadRequest(
                "give exactly one of address=0x.., site=TEXT, type=TEXT".to_owned(),
            ));
        };
        let selector = selector.map_err(ApiError::BadRequest)?;
        let (analysis, _) = graph_of(&self.graph)?;
        let report = RetainersReport::build(
            &self.view,
            analysis,
            &mut self.typed.frames(),
            &selector,
            query.number("n", 3)?,
            query.number("paths", 3)?,
        )
        .map_err(|e| ApiError::NotFound(format!("{e:#}")))?;
        Ok(Answer::json(&report))
    }

    /// `diff OLD DUMP --by BY -n N --json`.
    fn diff(&mut self, query: &Query) -> Result<Answer, ApiError> {
        query.only(&["by", "n"])?;
        let by = query.value_enum("by", DiffBy::Site)?;
        let limit = query.number("n", 20)?;
        let Some(old) = self.old.as_mut() else {
            return Err(ApiError::NotFound(
                "no --diff OLD.hdump was given".to_owned(),
            ));
        };
        // `diff` loads the executables' DWARF for --by type only.
        let (old_namer, new_namer) = if by == DiffBy::Type {
            if old.typed.is_none() {
                let namer = namer(&old.view, &old.path, old.binary.clone(), Types::Load)
                    .map_err(|e| ApiError::NotFound(format!("{e:#}")))?;
                old.typed = Some(namer);
            }
            (old.typed.as_mut(), &mut self.typed)
        } else {
            (Some(&mut old.plain), &mut self.plain)
        };
        let Some(old_namer) = old_namer else {
            return Err(ApiError::NotFound("the older dump has no names".to_owned()));
        };
        let report = DiffReport::build(
            &old.view,
            &old.name,
            &mut old_namer.frames(),
            &self.view,
            &self.name,
            &mut new_namer.frames(),
            by,
            limit,
        );
        Ok(Answer::json(&report))
    }

    /// One page of one level of the dominator tree.
    fn dominators(&mut self, query: &Query) -> Result<Answer, ApiError> {
        query.only(&["node", "offset", "limit"])?;
        let parent = match query.get("node") {
            None | Some("") => None,
            Some(_) => {
                let node = query.number("node", 0)?;
                let node = u32::try_from(node)
                    .ok()
                    .filter(|&n| (n as usize) < self.view.allocations().len())
                    .ok_or_else(|| {
                        ApiError::NotFound(format!(
                            "node {node}: the dump has {} blocks (0 to {})",
                            self.view.allocations().len(),
                            self.view.allocations().len().saturating_sub(1)
                        ))
                    })?;
                Some(node)
            }
        };
        let limit = query.number("limit", 100)?;
        if limit > MAX_LEVEL_PAGE {
            return Err(ApiError::BadRequest(format!(
                "limit={limit}: at most {MAX_LEVEL_PAGE} blocks a page (take the next with offset)"
            )));
        }
        let (analysis, levels) = graph_of(&self.graph)?;
        let level = levels.level(
            &self.view,
            analysis,
            &mut self.typed.frames(),
            parent,
            query.number("offset", 0)?,
            limit,
            &mut Vec::new(),
        );
        Ok(Answer::json(&level))
    }
}

/// The graph and the tree's levels, or a 404 saying why there are none.
fn graph_of(
    graph: &Result<(HeapAnalysis, DominatorLevels), String>,
) -> Result<(&HeapAnalysis, &DominatorLevels), ApiError> {
    match graph {
        Ok((analysis, levels)) => Ok((analysis, levels)),
        Err(error) => Err(ApiError::NotFound(error.clone())),
    }
}

/// Why an endpoint has no answer.
#[derive(Debug)]
enum ApiError {
    /// The request is wrong (400).
    BadRequest(String),
    /// What it asks for is not there (404).
    NotFound(String),
}

/// The parameters of a query string, percent-decoded.
#[derive(Debug, Default)]
struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(text: &str) -> Result<Query, String> {
        let mut pairs = Vec::new();
        for part in text.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((percent_decode(key)?, percent_decode(value)?));
        }
        Ok(Query { pairs })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Refuses parameters other than `known`, and repeated ones: a typo
    /// would otherwise be answered with the defaults.
    fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        for (i, (key, _)) in self.pairs.iter().enumerate() {
            if !known.contains(&key.as_str()) {
                return Err(ApiError::BadRequest(if known.is_empty() {
                    format!("unknown parameter `{key}`: this endpoint takes none")
                } else {
                    format!(
                        "unknown parameter `{key}`; this endpoint takes {}",
                        known.join(", ")
                    )
                }));
            }
            if self.pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(ApiError::BadRequest(format!("`{key}` is given twice")));
            }
        }
        Ok(())
    }

    fn number(&self, key: &str, default: usize) -> Result<usize, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                ApiError::BadRequest(format!("{key}={text}: not a non-negative integer"))
            }),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false" | "0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(text) => Err(ApiError::BadRequest(format!(
                "{key}={text}: expected true or false"
            ))),
        }
    }

    /// A value of a command-line enum, spelled as on the command line.
    fn value_enum<T: clap::ValueEnum + Copy>(&self, key: &str, default: T) -> Result<T, ApiError> {
        let Some(text) = self.get(key) else {
            return Ok(default);
        };
        T::from_str(text, false).map_err(|_| {
            let accepted: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|v| v.get_name().to_owned())
                .collect();
            ApiError::BadRequest(format!(
                "{key}={text}: expected one of {}",
                accepted.join(", ")
            ))
        })
    }
}

/// Decodes `%XX` and `+` (a space, as forms send it).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in `{text}`"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` is not UTF-8 once decoded"))
}

/// The page's assets name only what this module serves.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_takes_escapes_and_plus() {
        assert_eq!(
            percent_decode("app%3A%3ANode+buffer").unwrap(),
            "app::Node buffer"
        );
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let query = Query::parse("by=type&n=5").unwrap();
        assert!(query.only(&["by", "n"]).is_ok());
        assert!(query.only(&["n"]).is_err());
        assert!(Query::parse("n=1&n=2").unwrap().only(&["n"]).is_err());
        assert_eq!(
            query.value_enum("by", GroupBy::Site).unwrap(),
            GroupBy::Type
        );
        assert!(
            Query::parse("by=types")
                .unwrap()
                .value_enum("by", GroupBy::Site)
                .is_err()
        );
    }

    #[test]
    fn the_page_asks_only_for_what_is_served() {
        for path in [
            "/app.js",
            "/app.css",
            "/api/info",
            "/api/top",
            "/api/retained",
            "/api/leaks",
            "/api/retainers",
            "/api/diff",
            "/api/dominators",
            "/flamegraph.svg",
            "/flamegraph-diff.svg",
        ] {
            assert!(
                INDEX_HTML.contains(path) || APP_JS.contains(path),
                "{path} is served but the page never asks for it"
            );
        }
        for asset in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!asset.contains("http://") && !asset.contains("https://"));
        }
    }

    #[test]
    fn page_url_of_an_unspecified_bind_is_loopback() {
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert_eq!(page_url(any), "http://127.0.0.1:7070/");
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(page_url(v6), "http://[::1]:80/");
    }
}
