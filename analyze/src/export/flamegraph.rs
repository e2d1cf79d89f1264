//! `heapdump toflamegraph`: live memory as an SVG flame graph, drawn by
//! inferno. `analyze/EXPORTS.md` documents what each view shows.
//!
//! - By allocation stack (the default): each block counts under its
//!   stack, outermost frame at the bottom, as [`HeapModel::profile_frames`]
//!   gives them (allocator frames trimmed, nothing below the runtime's
//!   entry); an inlined frame is a frame of its own. Width is live bytes,
//!   or blocks with [`FlameWeight::Blocks`]. In a sampled dump each sampled
//!   block counts `1/p(size)` times ([`StackSampling`]): the figures are
//!   estimates, and the subtitle says so.
//! - Retained ([`FlameView::Retained`]): the dominator tree, each block
//!   named by its type label; a block's frame is as wide as its retained
//!   size. A run of blocks of one type (a list's nodes) is one frame.
//! - With a base model (`--diff`), widths are the newer dump's and colours
//!   show growth (red) and shrinkage (blue) since the base.
//!
//! inferno titles frames with one figure; each frame's title is rewritten
//! afterwards with bytes, blocks and share, found by the frame's depth
//! and position in the graph's own units (`fg:x`), which are known here
//! because the lines are handed over already in the order inferno draws.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use anyhow::{Context as _, Result};
use inferno::flamegraph::{self, Options, color};

use super::HeapModel;
use crate::sampling::StackSampling;
use crate::text::human_bytes;

/// What a frame's width measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlameWeight {
    /// Live bytes.
    #[default]
    Bytes,
    /// Live blocks.
    Blocks,
}

/// What the frames are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlameView {
    /// Allocation stacks.
    #[default]
    Stacks,
    /// The dominator tree, by type.
    Retained,
}

/// Options of the flame graph export.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlameGraphOptions<'m, 'd> {
    /// Width by bytes or blocks.
    pub weight: FlameWeight,
    /// Stacks or dominator tree.
    pub view: FlameView,
    /// The older dump's model, for a differential graph of growth.
    pub base: Option<&'m HeapModel<'d>>,
    /// The graph's title; empty for one that says what is shown.
    pub title: &'m str,
}

/// What was drawn.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlameGraphSummary {
    /// Distinct paths (folded stacks) drawn.
    pub paths: usize,
    /// Bytes under all frames (estimated in a sampled dump).
    pub bytes: u64,
    /// Blocks under all frames (estimated in a sampled dump).
    pub blocks: u64,
    /// The graph's figures are estimates from a stack sample.
    pub estimated: bool,
}

/// Bytes and blocks under one path (or frame), in the newer dump and the base.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Figures {
    bytes: u64,
    blocks: u64,
    old_bytes: u64,
    old_blocks: u64,
}

/// A frame name as a folded line may hold it: `;` separates frames there.
fn folded_name(name: &str) -> String {
    name.replace(';', "；")
}

/// Frame names from the bottom up, and the (bytes, blocks) under each
/// path, before rounding.
type Paths = BTreeMap<Vec<String>, (f64, f64)>;

/// The paths of one model, and whether they are estimates.
fn paths(model: &HeapModel<'_>, view: FlameView) -> Result<(Paths, bool)> {
    let mut out = Paths::new();
    let allocations = model.view().allocations();
    match view {
        FlameView::Stacks => {
            let sampling = StackSampling::of(model.view());
            for (stack, figures) in sampling.live_by_stack(allocations.iter()).stacks {
                let mut path: Vec<String> = model
                    .profile_frames(stack)
                    .iter()
                    .rev()
                    .map(|&id| {
                        let frame = &model.frames()[id as usize];
                        let name = folded_name(&frame.name());
                        // inferno's mark of an inlined frame, dropped from
                        // what it displays.
                        if frame.inlined {
                            format!("{name}_[i]")
                        } else {
                            name
                        }
                    })
                    .collect();
                if path.is_empty() {
                    path.push("[no stack]".to_owned());
                }
                let entry = out.entry(path).or_default();
                entry.0 += figures.bytes;
                entry.1 += figures.blocks;
            }
            Ok((out, sampling.is_sampled()))
        }
        FlameView::Retained => {
            let analysis = model
                .analysis()
                .context("the retained view needs the heap graph (a dump with a scan)")?;
            let tree = analysis
                .dominators
                .as_ref()
                .context("the dominator tree was not computed")?;
            let (start, children) = tree.children();
            let n = model.node_count();
            // A trie of labels along the dominator tree: `trie[i]` is
            // (parent entry, label); a block joins its dominator's entry
            // when it has the same label, so a list is one frame.
            let mut trie: Vec<(usize, String)> = vec![(usize::MAX, String::new())];
            let mut child_of: HashMap<(usize, &str), usize> = HashMap::new();
            let mut depth: Vec<usize> = vec![0];
            let mut weight: Vec<(f64, f64)> = vec![(0.0, 0.0)];
            // Walk from the super-root (row n) with an explicit stack: the
            // tree of a long list is as deep as the list.
            let mut pending: Vec<(u32, usize)> = Vec::new();
            let row = |r: usize| &children[start[r] as usize..start[r + 1] as usize];
            pending.extend(row(n).iter().map(|&c| (c, 0usize)));
            while let Some((node, parent)) = pending.pop() {
                let label = model.type_label(node);
                let entry = if parent != 0 && trie[parent].1 == label {
                    parent
                } else if depth[parent] >= MAX_RETAINED_DEPTH {
                    // Deeper than anyone reads: folded into the frame above.
                    parent
                } else {
                    *child_of.entry((parent, label)).or_insert_with(|| {
                        trie.push((parent, folded_name(label)));
                        depth.push(depth[parent] + 1);
                        weight.push((0.0, 0.0));
                        trie.len() - 1
                    })
                };
                let size = allocations.get(node as usize).map_or(0, |a| a.size);
                weight[entry].0 += size as f64;
                weight[entry].1 += 1.0;
                pending.extend(row(node as usize).iter().map(|&c| (c, entry)));
            }
            for (entry, &(bytes, blocks)) in weight.iter().enumerate().skip(1) {
                if blocks == 0.0 {
                    continue;
                }
                let mut path = Vec::with_capacity(depth[entry]);
                let mut at = entry;
                while at != 0 {
                    path.push(trie[at].1.clone());
                    at = trie[at].0;
                }
                path.reverse();
                let e = out.entry(path).or_default();
                e.0 += bytes;
                e.1 += blocks;
            }
            Ok((out, false))
        }
    }
}

/// Frames deeper than this in the retained view are folded into their
/// parent: inferno draws every level, and nobody reads a thousand.
const MAX_RETAINED_DEPTH: usize = 256;

impl super::Export for FlameGraphOptions<'_, '_> {
    type Summary = FlameGraphSummary;

    fn name(&self) -> &'static str {
        "flame graph"
    }

    fn file_name(&self) -> &'static str {
        "FILE.svg"
    }

    fn kind(&self) -> super::OutputKind {
        super::OutputKind::Text
    }

    fn needs_graph(&self) -> bool {
        self.view == FlameView::Retained
    }

    fn write(&self, model: &HeapModel<'_>, out: &mut super::Output) -> Result<FlameGraphSummary> {
        write_flamegraph(model, self, out)
    }
}

/// Writes the flame graph of `model` as SVG to `out`.
pub fn write_flamegraph(
    model: &HeapModel<'_>,
    options: &FlameGraphOptions<'_, '_>,
    out: &mut dyn Write,
) -> Result<FlameGraphSummary> {
    let (new, mut estimated) = paths(model, options.view)?;
    // Keyed by the folded stack: inferno wants its lines sorted as text.
    let mut lines: BTreeMap<String, Figures> = BTreeMap::new();
    // Rounded per path, so every figure shown is a sum of the same integers.
    for (path, (bytes, blocks)) in new {
        let e = lines.entry(path.join(";")).or_default();
        e.bytes = bytes.round() as u64;
        e.blocks = blocks.round() as u64;
    }
    if let Some(base) = options.base {
        let (old, old_estimated) = paths(base, options.view)?;
        estimated |= old_estimated;
        for (path, (bytes, blocks)) in old {
            let e = lines.entry(path.join(";")).or_default();
            e.old_bytes = bytes.round() as u64;
            e.old_blocks = blocks.round() as u64;
        }
    }
    let width = |f: &Figures| match options.weight {
        FlameWeight::Bytes => f.bytes,
        FlameWeight::Blocks => f.blocks,
    };
    let old_width = |f: &Figures| match options.weight {
        FlameWeight::Bytes => f.old_bytes,
        FlameWeight::Blocks => f.old_blocks,
    };

    // Folded lines, in the (sorted) order inferno will draw them, and
    // each frame's figures keyed by (depth, first position), depth 0
    // being inferno's `all`.
    let mut folded = Vec::with_capacity(lines.len());
    let mut frames: HashMap<(usize, u64), (String, Figures)> = HashMap::new();
    let mut total = Figures::default();
    let mut x = 0u64;
    let mut open: Vec<(String, u64)> = Vec::new();
    for (stack, figures) in &lines {
        add(&mut total, figures);
        // Nothing to draw (a path only the base has); a frame of no width
        // would share its position with the next one.
        if width(figures) == 0 {
            continue;
        }
        let path: Vec<&str> = stack.split(';').collect();
        let mut line = stack.clone();
        if options.base.is_some() {
            line.push_str(&format!(" {}", old_width(figures)));
        }
        line.push_str(&format!(" {}", width(figures)));
        folded.push(line);
        // The frames this line continues keep their start; the others
        // start here.
        let shared = open
            .iter()
            .zip(&path)
            .take_while(|((name, _), p)| name == *p)
            .count();
        open.truncate(shared);
        for name in &path[shared..] {
            open.push(((*name).to_owned(), x));
        }
        for (depth, (name, start)) in open.iter().enumerate() {
            let entry = frames
                .entry((depth + 1, *start))
                .or_insert_with(|| (name.clone(), Figures::default()));
            add(&mut entry.1, figures);
        }
        x += width(figures);
    }
    frames.insert((0, 0), ("all".to_owned(), total));

    let unit = match options.weight {
        FlameWeight::Bytes => "bytes",
        FlameWeight::Blocks => "blocks",
    };
    let title = if !options.title.is_empty() {
        options.title.to_owned()
    } else {
        let what = match (options.view, options.base.is_some()) {
            (FlameView::Stacks, false) => "Live memory by allocation stack",
            (FlameView::Stacks, true) => "Growth by allocation stack",
            (FlameView::Retained, false) => "Retained memory along the dominator tree",
            (FlameView::Retained, true) => "Growth of retained memory along the dominator tree",
        };
        format!("{what} ({unit})")
    };
    let mut subtitle = format!(
        "{} bytes ({}) in {} blocks",
        total.bytes,
        human_bytes(total.bytes),
        total.blocks
    );
    if options.base.is_some() {
        subtitle.push_str(&format!(
            "; {} bytes in {} blocks before",
            total.old_bytes, total.old_blocks
        ));
    }
    if estimated {
        subtitle.push_str("; estimates from a stack sample");
    }

    let mut inferno = Options::default();
    inferno.title = title;
    inferno.subtitle = Some(subtitle);
    inferno.count_name = unit.to_owned();
    inferno.name_type = if options.view == FlameView::Retained {
        "Type:".to_owned()
    } else {
        "Function:".to_owned()
    };
    inferno.colors = color::Palette::Basic(color::BasicPalette::Mem);
    // A narrow frame keeps the start of its name (the crate and function),
    // not its end (`..(inlined)`).
    inferno.text_truncate_direction = flamegraph::TextTruncateDirection::Right;
    // The same dump gives the same picture.
    inferno.hash = true;
    inferno.deterministic = true;
    inferno.no_sort = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut inferno, folded.iter().map(String::as_str), &mut svg)
        .context("inferno could not draw the flame graph")?;
    let svg = String::from_utf8(svg).context("inferno wrote an SVG that is not UTF-8")?;
    let svg = retitle(&svg, |depth, x| {
        let (name, f) = frames.get(&(depth, x))?;
        Some(frame_title(
            name,
            f,
            &total,
            options.base.is_some(),
            estimated,
        ))
    })?;
    out.write_all(svg.as_bytes())?;
    Ok(FlameGraphSummary {
        paths: folded.len(),
        bytes: total.bytes,
        blocks: total.blocks,
        estimated,
    })
}

fn add(to: &mut Figures, f: &Figures) {
    to.bytes += f.bytes;
    to.blocks += f.blocks;
    to.old_bytes += f.old_bytes;
    to.old_blocks += f.old_blocks;
}

/// `app::fill (4096 bytes = 4.0 KiB, 2 blocks, 12.50% of bytes)`, and the
/// change with a base, all in one trailing group without inner
/// parentheses: inferno's script labels a frame with its title minus such
/// a group, so a narrow frame shows the start of its name, not figures.
fn frame_title(name: &str, f: &Figures, total: &Figures, diff: bool, estimated: bool) -> String {
    let name = name
        .strip_suffix("_[i]")
        .map_or(name.to_owned(), |n| format!("{n} (inlined)"));
    let share = if total.bytes == 0 {
        0.0
    } else {
        f.bytes as f64 * 100.0 / total.bytes as f64
    };
    let about = if estimated { "≈" } else { "" };
    let mut title = format!(
        "{name} ({about}{} bytes = {}, {about}{} block{}, {share:.2}% of bytes",
        f.bytes,
        human_bytes(f.bytes),
        f.blocks,
        if f.blocks == 1 { "" } else { "s" }
    );
    if diff {
        let delta = f.bytes as i128 - f.old_bytes as i128;
        let blocks = f.blocks as i128 - f.old_blocks as i128;
        title.push_str(&format!(
            "; before: {} bytes, {} blocks; change: {delta:+} bytes, {blocks:+} blocks",
            f.old_bytes, f.old_blocks
        ));
    }
    title.push(')');
    title
}

/// Replaces the text of every frame's `<title>` in inferno's SVG by
/// `title(depth, fg_x)`, where depth counts levels from the bottom (0 =
/// `all`) and `fg_x` is the frame's start in the graph's units. Each frame
/// is `<g><title>…</title><rect … y="Y" … fg:x="X" …/>…</g>`; levels are
/// told apart by their `y`, every level from 0 up having a frame.
fn retitle(svg: &str, title: impl Fn(usize, u64) -> Option<String>) -> Result<String> {
    let body = svg
        .find("<svg id=\"frames\"")
        .context("inferno's SVG has no frames element")?;
    // First pass: the frames' y values, to number the levels.
    let mut frames: Vec<(usize, usize, u64, u64)> = Vec::new(); // title start, end, y, x
    let mut at = body;
    while let Some(open) = svg[at..].find("<title>") {
        let start = at + open + "<title>".len();
        let end = start
            + svg[start..]
                .find("</title>")
                .context("inferno's SVG has an unclosed title")?;
        let rect_at = end
            + svg[end..]
                .find("<rect ")
                .context("a frame of inferno's SVG has no rect")?;
        let rect_end = rect_at + svg[rect_at..].find("/>").unwrap_or(0);
        let rect = &svg[rect_at..rect_end];
        let y = attribute(rect, "y").context("a frame's rect has no y")?;
        let x = attribute(rect, "fg:x").context("a frame's rect has no fg:x")?;
        frames.push((start, end, y, x));
        at = rect_end;
    }
    let mut levels: Vec<u64> = frames.iter().map(|f| f.2).collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    let mut out = String::with_capacity(svg.len() + svg.len() / 4);
    let mut copied = 0;
    for (start, end, y, x) in frames {
        let depth = levels.iter().position(|&l| l == y).unwrap_or(0);
        if let Some(text) = title(depth, x) {
            out.push_str(&svg[copied..start]);
            out.push_str(&escape(&text));
            copied = end;
        }
    }
    out.push_str(&svg[copied..]);
    Ok(out)
}

/// The integer value of `name="…"` in a tag's text.
fn attribute(tag: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    tag[start..end].parse().ok()
}

/// Text as XML character data.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
