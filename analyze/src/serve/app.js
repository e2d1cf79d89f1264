// heapdump serve: the page's script. Everything shown comes from the JSON
// endpoints of the server that sent this file; text from the dump (function,
// file and type names) is only ever set with textContent, never as HTML.
"use strict";

const params = new URLSearchParams(location.search);

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    const error = new Error(body.error || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

// As the CLI's human_bytes: binary prefixes, one decimal.
function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit + 1 < units.length) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function count(n) {
  return Number(n).toLocaleString("en-US");
}

function signedBytes(n) {
  return n < 0 ? `−${bytes(-n)}` : `+${bytes(n)}`;
}

function where(file, line) {
  if (!file) return "";
  return line ? `${file}:${line}` : file;
}

// A site as `top` prints it: function, file:line, and the program's own
// frame for a site in a dependency.
function siteCell(site) {
  return el(
    "td",
    { class: "name" },
    site.function,
    site.file ? el("span", { class: "where" }, "  ", where(site.file, site.line)) : null,
    site.inlined_into ? el("span", { class: "where" }, `  inlined into ${site.inlined_into}`) : null,
    site.own_frame
      ? el("span", { class: "where" }, `  (from ${site.own_frame.function} ${where(site.own_frame.file, site.own_frame.line)})`)
      : null,
  );
}

function bar(part, total) {
  const width = total > 0 ? Math.max(1, Math.round((part / total) * 80)) : 0;
  return el("span", { class: "bar", style: `width:${width}px` });
}

function classWords(cls) {
  return cls.replace("_", " ");
}

function table(headers, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headers.map(([text, numeric]) => el("th", { class: numeric ? "num" : null }, text)))),
    el("tbody", {}, rows),
  );
}

function body(sectionId) {
  return document.querySelector(`#${sectionId} .body`);
}

function show(sectionId, ...content) {
  const target = body(sectionId);
  target.replaceChildren(...content);
  target.dataset.state = "ready";
}

function fail(sectionId, error) {
  const target = body(sectionId);
  target.replaceChildren(el("p", { class: "error" }, `error: ${error.message}`));
  target.dataset.state = "error";
}

function retainersLink(address) {
  return el("a", { class: "act", onclick: () => showRetainers("address", address, true) }, "→ retainers");
}

// ------------------------------------------------------------------ summary

async function loadSummary() {
  const info = await getJSON("/api/info");
  document.getElementById("dump-name").textContent = info.file;
  document.title = `heapdump ${info.file}`;
  const p = info.process;
  const facts = [
    ["program", p.exe],
    ["command line", p.cmdline.join(" ")],
    ["process", `pid ${p.pid}, dump ${p.dump_number}, ${p.timestamp}`],
    ["live", `${bytes(info.heap.live_bytes)} (${count(info.heap.live_bytes)} bytes) in ${count(info.heap.live_count)} blocks`],
    ["peak", `${bytes(info.heap.peak_live_bytes)} in ${count(info.heap.peak_live_count)} blocks`],
    ["allocations", `${count(info.heap.total_allocations)} made, ${count(info.heap.total_frees)} freed`],
    ["threads", `${info.threads.length}`],
    ["modules", `${info.modules.length}`],
    ["stacks", `${count(info.stacks.stacks)} distinct (${p.stacks}${p.stack_sample_interval_bytes ? `, sample every ${bytes(p.stack_sample_interval_bytes)}` : ""})`],
    ["scan", info.scan.captured ? `${count(info.scan.roots)} roots, ${count(info.scan.edges)} pointers` : "none (no roots and pointers in this dump)"],
    ["dump", `format ${info.format_version}, mode ${p.mode}, pause ${(p.pause_ns / 1e6).toFixed(1)} ms`],
  ];
  show(
    "summary",
    el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    info.warnings.map((w) => el("p", { class: "warning" }, `warning: ${w}`)),
  );
}

// ------------------------------------------------------------------ top

async function loadTop(by) {
  for (const button of document.querySelectorAll("#top button")) {
    button.classList.toggle("active", button.dataset.by === by);
  }
  body("top").dataset.state = "loading";
  const top = await getJSON(`/api/top?by=${encodeURIComponent(by)}&n=20`);
  const rows = top.rows.map((row) => {
    let name;
    if (by === "type") name = el("td", { class: "name" }, row.type);
    else if (by === "file") name = el("td", { class: "name" }, row.file);
    else if (by === "function") name = el("td", { class: "name" }, row.function);
    else name = siteCell(row);
    return el(
      "tr",
      {},
      el("td", { class: "num" }, bar(row.bytes, top.total_bytes), bytes(row.bytes)),
      el("td", { class: "num" }, `${row.percent.toFixed(1)}%`),
      el("td", { class: "num" }, count(row.count)),
      name,
    );
  });
  const label = { site: "site", type: "type", function: "function", file: "file" }[by];
  show(
    "top",
    el("p", {}, `${bytes(top.total_bytes)} in ${count(top.total_count)} blocks${top.estimated ? " (ESTIMATED from a stack sample)" : ""}`),
    table([["bytes", true], ["share", true], ["blocks", true], [label]], rows),
    top.omitted_rows ? el("p", { class: "where" }, `${count(top.omitted_rows)} more ${label}s: ${bytes(top.omitted_bytes)} in ${count(top.omitted_count)} blocks`) : null,
  );
}

// ------------------------------------------------------------------ retained

async function loadRetained() {
  const report = await getJSON("/api/retained?n=20");
  const total = report.total_bytes;
  const groups = report.object_groups.map((g) =>
    el(
      "tr",
      {},
      el("td", { class: "num" }, bar(g.retained_max, total), bytes(g.retained_max)),
      el("td", { class: "num" }, g.retained_min === g.retained_max ? "" : `from ${bytes(g.retained_min)}`),
      el("td", { class: "num" }, count(g.count)),
      el("td", { class: `class-${g.largest.class}` }, classWords(g.largest.class)),
      el("td", { class: "name" }, g.largest.type),
      siteCell(g.largest.site),
      el("td", {}, retainersLink(g.largest.address)),
    ),
  );
  const types = report.types.slice(0, 10).map((t) =>
    el("tr", {}, el("td", { class: "num" }, bar(t.retained, total), bytes(t.retained)), el("td", { class: "num" }, `${t.percent.toFixed(1)}%`), el("td", { class: "num" }, count(t.objects)), el("td", { class: "name" }, t.type)),
  );
  const sites = report.sites.slice(0, 10).map((s) =>
    el("tr", {}, el("td", { class: "num" }, bar(s.retained, total), bytes(s.retained)), el("td", { class: "num" }, `${s.percent.toFixed(1)}%`), el("td", { class: "num" }, count(s.objects)), siteCell(s.site)),
  );
  show(
    "retained",
    el("h3", {}, "Objects (grouped by type and site)"),
    table([["retains", true], ["", true], ["blocks", true], ["class"], ["type"], ["site"], [""]], groups),
    el("h3", {}, "Types"),
    table([["retains", true], ["share", true], ["blocks", true], ["type"]], types),
    el("h3", {}, "Sites"),
    table([["retains", true], ["share", true], ["blocks", true], ["site"]], sites),
  );
}

// ------------------------------------------------------------------ dominator tree

let heapBytes = 0;

function treeNode(node) {
  const item = el("li", { "data-node": node.index });
  const toggle = el("span", { class: node.children ? "toggle" : "toggle leaf", title: node.children ? `${count(node.children)} blocks directly under it` : "dominates nothing" }, node.children ? "▸" : "·");
  const share = heapBytes ? ` ${((node.retained * 100) / heapBytes).toFixed(1)}%` : "";
  item.append(
    el(
      "div",
      { class: "node" },
      toggle,
      el("span", { class: "size", title: "retained: the bytes freed if this block were freed" }, bytes(node.retained)),
      el("span", { class: "where" }, share),
      el("span", { class: "type" }, node.type),
      el("span", { class: "where" }, `${bytes(node.size)} at ${node.address}`),
      node.class !== "still_reachable" ? el("span", { class: `class-${node.class}` }, classWords(node.class)) : null,
      el("span", { class: "where mono" }, node.site.function, node.site.file ? ` ${where(node.site.file, node.site.line)}` : ""),
      retainersLink(node.address),
    ),
  );
  if (node.children) {
    toggle.addEventListener("click", () => toggleNode(item, node));
  }
  return item;
}

// Appends one page of `parent`'s children (null: the top level) to `list`,
// with a button for the next page.
async function loadLevel(list, parent, offset) {
  return renderLevel(list, parent, offset, await getJSON(levelURL(parent, offset)));
}

function levelURL(parent, offset) {
  const query = new URLSearchParams({ offset: String(offset), limit: "100" });
  if (parent !== null) query.set("node", String(parent));
  return `/api/dominators?${query}`;
}

function renderLevel(list, parent, offset, level) {
  for (const child of level.children) list.append(treeNode(child));
  if (level.omitted_after > 0) {
    const more = el(
      "li",
      { class: "more" },
      el(
        "a",
        {
          class: "act",
          onclick: async () => {
            more.remove();
            await loadLevel(list, parent, offset + level.children.length);
          },
        },
        `${count(level.omitted_after)} more (${bytes(level.omitted_after_retained)})`,
      ),
    );
    list.append(more);
  }
  return level;
}

async function toggleNode(item, node) {
  const toggle = item.querySelector(".toggle");
  const open = item.querySelector(":scope > ul");
  if (open) {
    open.remove();
    toggle.textContent = "▸";
    item.dataset.open = "";
    return;
  }
  const list = el("ul", { class: "tree" });
  item.append(list);
  toggle.textContent = "▾";
  item.dataset.open = "true";
  await loadLevel(list, node.index, 0);
}

async function loadDominators() {
  const list = el("ul", { class: "tree top" });
  const container = body("dominators");
  container.replaceChildren(list);
  const level = await getJSON(levelURL(null, 0));
  // Shares are of the whole heap: what the top level retains.
  heapBytes = level.children_retained;
  renderLevel(list, null, 0, level);
  container.prepend(
    el("p", {}, `${count(level.child_count)} blocks at the top (pointed to by roots, or lost), retaining ${bytes(level.children_retained)}`),
  );
  container.dataset.state = "ready";
  // ?expand=N: open the largest block and its largest child, N levels deep.
  let depth = Number(params.get("expand") || 0);
  let item = list.querySelector("li[data-node]");
  while (depth > 0 && item) {
    const toggle = item.querySelector(".toggle");
    if (toggle.classList.contains("leaf")) break;
    const index = Number(item.dataset.node);
    const list = el("ul", { class: "tree" });
    item.append(list);
    toggle.textContent = "▾";
    item.dataset.open = "true";
    await loadLevel(list, index, 0);
    item = list.querySelector("li[data-node]");
    depth -= 1;
  }
}

// ------------------------------------------------------------------ retainers

function objectLine(o) {
  return el(
    "span",
    {},
    el("span", { class: "type" }, o.type),
    ` ${bytes(o.size)} at ${o.address}, retains ${bytes(o.retained)} `,
    o.class !== "still_reachable" ? el("span", { class: `class-${o.class}` }, classWords(o.class)) : null,
  );
}

async function showRetainers(kind, text, scroll) {
  document.getElementById("retainers-kind").value = kind;
  document.getElementById("retainers-text").value = text;
  if (scroll) document.getElementById("retainers").scrollIntoView();
  const target = body("retainers");
  target.dataset.state = "loading";
  const report = await getJSON(`/api/retainers?${kind}=${encodeURIComponent(text)}`).catch((error) => {
    fail("retainers", error);
    return null;
  });
  if (!report) return;
  const parts = report.objects.map((r) => {
    const paths = r.paths.map((path) => {
      const root = path.root;
      const rootText = [root.kind, root.owner, root.name, root.symbol || root.location].filter(Boolean).join(" ");
      return el(
        "div",
        { class: "path" },
        el("span", {}, `root: ${rootText}`),
        path.steps.map((step) =>
          el(
            "span",
            { class: "step" },
            "→ ",
            step.field ? el("b", {}, `.${step.field} `) : step.field_offset !== null ? `[+0x${step.field_offset.toString(16)}] ` : "",
            objectLine(step.object),
            step.target_offset ? ` (points +0x${step.target_offset.toString(16)} into it)` : "",
          ),
        ),
      );
    });
    return el(
      "div",
      {},
      el("h3", {}, objectLine(r.object)),
      el("p", { class: "where mono" }, r.object.site.function, " ", where(r.object.site.file, r.object.site.line)),
      el("p", {}, r.dominators.length ? "dominators (freeing any of them frees it), nearest first:" : "no block dominates it: only roots (or nothing) keep it"),
      el("ul", {}, r.dominators.map((d) => el("li", {}, objectLine(d), " ", retainersLink(d.address)))),
      el("p", {}, r.paths.length ? `shortest paths from roots (${r.paths.length}):` : "no root reaches it"),
      paths,
    );
  });
  show("retainers", parts.length ? parts : el("p", {}, "no block matches"));
}

// ------------------------------------------------------------------ leaks

async function loadLeaks() {
  const report = await getJSON("/api/leaks");
  const summary = report.summary.map((c) =>
    el("tr", {}, el("td", { class: `class-${c.class}` }, classWords(c.class)), el("td", { class: "num" }, count(c.blocks)), el("td", { class: "num" }, bytes(c.bytes))),
  );
  const records = report.records.map((r) =>
    el(
      "tr",
      {},
      el("td", { class: "num" }, r.number),
      el("td", { class: `class-${r.class}` }, classWords(r.class)),
      el("td", { class: "num" }, count(r.blocks)),
      el("td", { class: "num" }, bytes(r.direct_bytes)),
      el("td", { class: "num" }, bytes(r.indirect_bytes)),
      siteCell(r.site),
      el("td", { class: "mono" }, r.examples.map((a) => el("div", {}, a, " ", retainersLink(a)))),
    ),
  );
  show(
    "leaks",
    table([["class"], ["blocks", true], ["bytes", true]], summary),
    el("p", {}, `${count(report.record_count)} loss records of ${report.shown.map(classWords).join(", ")}, biggest first${report.omitted_records ? ` (${count(report.omitted_records)} more: ${bytes(report.omitted_bytes)})` : ""}`),
    records.length ? table([["#", true], ["class"], ["blocks", true], ["direct", true], ["indirect", true], ["site"], ["examples"]], records) : el("p", {}, "no block is lost"),
  );
}

// ------------------------------------------------------------------ diff

async function loadDiff(by) {
  for (const button of document.querySelectorAll("#diff button")) {
    button.classList.toggle("active", button.dataset.by === by);
  }
  let report;
  try {
    report = await getJSON(`/api/diff?by=${encodeURIComponent(by)}&n=20`);
  } catch (error) {
    if (error.status === 404) {
      document.querySelector("#diff .controls").hidden = true;
      show("diff", el("p", {}, "Start the server with --diff OLD.hdump to see the growth since an older dump."));
      return;
    }
    throw error;
  }
  document.getElementById("flame-diff").hidden = false;
  const rows = report.rows.map((r) =>
    el(
      "tr",
      {},
      el("td", { class: "num" }, signedBytes(r.delta_bytes)),
      el("td", { class: "num" }, `${r.delta_count >= 0 ? "+" : ""}${count(r.delta_count)}`),
      el("td", { class: "num" }, `${bytes(r.old_bytes)} → ${bytes(r.new_bytes)}`),
      el("td", { class: "num" }, count(r.new_objects)),
      r.site ? siteCell(r.site) : el("td", { class: "name" }, r.type),
    ),
  );
  show(
    "diff",
    el("p", {}, `${report.old.file} (${bytes(report.old.live_bytes)}) → ${report.new.file} (${bytes(report.new.live_bytes)}): ${count(report.new_objects)} blocks new since the older dump (${bytes(report.new_object_bytes)})`),
    table([["growth", true], ["blocks", true], ["bytes", true], ["new blocks", true], [by]], rows),
  );
}

// ------------------------------------------------------------------ start

for (const button of document.querySelectorAll("#top button")) {
  button.addEventListener("click", () => loadTop(button.dataset.by).catch((e) => fail("top", e)));
}
for (const button of document.querySelectorAll("#diff button")) {
  button.addEventListener("click", () => loadDiff(button.dataset.by).catch((e) => fail("diff", e)));
}
for (const button of document.querySelectorAll("#flamegraph button")) {
  button.addEventListener("click", () => {
    for (const other of document.querySelectorAll("#flamegraph button")) other.classList.toggle("active", other === button);
    document.getElementById("flame-frame").src = button.dataset.svg;
    document.getElementById("flame-open").href = button.dataset.svg;
  });
}
document.getElementById("retainers-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const kind = document.getElementById("retainers-kind").value;
  const text = document.getElementById("retainers-text").value.trim();
  if (text) showRetainers(kind, text, false);
});

// One after another: the server answers in turn anyway, and the summary
// and the top sites come first.
(async () => {
  await loadSummary().catch((e) => fail("summary", e));
  await loadTop("site").catch((e) => fail("top", e));
  await loadDominators().catch((e) => fail("dominators", e));
  await loadRetained().catch((e) => fail("retained", e));
  await loadLeaks().catch((e) => fail("leaks", e));
  await loadDiff("site").catch((e) => fail("diff", e));
  const address = params.get("retainers");
  if (address) await showRetainers("address", address, false);
  document.body.dataset.loaded = "true";
})();
