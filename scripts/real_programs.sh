#!/usr/bin/env bash
# Two real programs nobody here wrote, ripgrep and jaq, run unmodified under
# `heapdump run` (the preload library), then read with the default
# heuristics and with the same minus pointer-free-types (every word of
# every block a pointer, as memcheck has it; `--heuristics none` also drops
# the interior-pointer shapes): how many edges types rule out, how the leak
# classes move, and how many objects' retained sizes change. The numbers in
# BENCHMARKS.md ("Edges that types rule out") come from this script.
#
#   scripts/real_programs.sh [WORKDIR]      (default target/real-programs)
#
# Needs cargo (to install both programs from crates.io with full debug
# info, so stacks have names, types can be recovered, and DWARF says which
# of their own types hold no pointer) and jq. Nothing is vendored.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-target/real-programs}
mkdir -p "$work"
work=$(cd "$work" && pwd)

# HEAPDUMP_ANALYZER: an analyzer already built; else this tree's is built.
heapdump=${HEAPDUMP_ANALYZER:-}
if [[ -z $heapdump ]]; then
    cargo build --release --locked -p heapdump-analyze --bin heapdump
    heapdump=$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/heapdump
fi

# The stamp says the programs were built with full debug info (an earlier
# version of this script built them with line tables only).
if [[ ! -x $work/bin/rg || ! -x $work/bin/jaq || ! -e $work/debug-full ]]; then
    # Full debug info (names, types, struct layouts) and frame pointers
    # (fast stacks); the programs' allocator is the C one, which the
    # preload library wraps.
    CARGO_PROFILE_RELEASE_DEBUG=full CARGO_PROFILE_RELEASE_STRIP=none \
        RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR="$work/target" \
        cargo install --force --root "$work" ripgrep
    # jaq's default feature links mimalloc, which the preload library
    # cannot see: without it jaq allocates through the C library.
    CARGO_PROFILE_RELEASE_DEBUG=full CARGO_PROFILE_RELEASE_STRIP=none \
        RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR="$work/target" \
        cargo install --force --root "$work" --no-default-features jaq
    touch "$work/debug-full"
fi

# A JSON document of nested objects and strings, for jaq to parse and keep.
doc=$work/doc.json
if [[ ! -s $doc ]]; then
    jq -n '[range(0; 60000) | {id: ., name: ("item-" + tostring), tags: ["a", "b", (. % 7 | tostring)],
            nested: {depth: (. % 5), label: ("label " * 3)}}]' > "$doc"
fi

# ripgrep frees its buffers before it exits: dump while it searches /usr
# (a dump every 400 ms; the last one mid-search is measured).
rm -rf "${work:?}/rg"
mkdir -p "$work/rg"
"$heapdump" run --dir "$work/rg" --on interval:400ms -- \
    "$work/bin/rg" --no-messages -c 'fn [a-z_]+\(' /usr > /dev/null || true
rg_dump=$(ls -t "$work/rg"/*.hdump | head -n 1)
# jaq frees the document before it exits: dump each time its heap grows by
# 16 MiB while it holds the parsed document (the last such dump is measured).
rm -rf "${work:?}/jaq"
mkdir -p "$work/jaq"
"$heapdump" run --dir "$work/jaq" --on growth:16MiB -- \
    "$work/bin/jaq" -c '[.[] | select(.id % 3 == 0)] | length' "$doc" > /dev/null
jaq_dump=$(ls -t "$work/jaq"/*.hdump | head -n 1)

# Per dump: live blocks, the edges left out, the leak classes under both
# rules, and the objects whose retained size differs between them.
measure() {
    local name=$1 dump=$2
    local count
    count=$("$heapdump" info "$dump" --json | jq '.heap.live_count')
    local untyped=hashbrown,rc-into-raw,tagged
    "$heapdump" leaks "$dump" --json > "$work/$name.leaks.typed.json"
    "$heapdump" leaks "$dump" --json --heuristics $untyped > "$work/$name.leaks.untyped.json"
    "$heapdump" top "$dump" --retained -n "$count" --json > "$work/$name.retained.typed.json"
    "$heapdump" top "$dump" --retained -n "$count" --json --heuristics $untyped \
        > "$work/$name.retained.untyped.json"
    echo "== $name: $count live blocks"
    jq -r '"edges left out by pointer-free-types: \(.pointer_free_edges)"' \
        "$work/$name.leaks.typed.json"
    for rule in typed untyped; do
        jq -r --arg rule "$rule" \
            '"leak classes (\($rule)): " + ([.summary[] | "\(.class) \(.blocks) blocks \(.bytes) B"] | join(", "))' \
            "$work/$name.leaks.$rule.json"
    done
    jq -n -r --slurpfile typed "$work/$name.retained.typed.json" \
        --slurpfile untyped "$work/$name.retained.untyped.json" '
        ($typed[0].objects | map({key: (.index | tostring), value: .retained}) | from_entries) as $t
        | [$untyped[0].objects[] | {untyped: .retained, typed: ($t[.index | tostring] // 0)}
           | select(.untyped != .typed)] as $changed
        | "objects whose retained size changes: \($changed | length); "
          + "bytes lost by those that shrink: \([$changed[] | select(.typed < .untyped) | .untyped - .typed] | add // 0), "
          + "gained by those that grow (one path fewer: a single holder now dominates): \([$changed[] | select(.typed > .untyped) | .typed - .untyped] | add // 0); "
          + "largest retained size: \([$untyped[0].objects[].retained] | max) B (untyped), "
          + "\([$typed[0].objects[].retained] | max) B (typed)"'
}
measure rg "$rg_dump"
measure jaq "$jaq_dump"
