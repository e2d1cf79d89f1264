#!/usr/bin/env bash
# The demo: builds the example programs and the analyzer, runs a small
# server-like program that dumps its own heap, and shows what heapdump finds,
# saying what each finding means.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p heapdump-examples -p heapdump-analyze --bins
bin="${CARGO_TARGET_DIR:-target}/release"
out="${CARGO_TARGET_DIR:-target}/demo"
mkdir -p "$out"
rm -f "$out/demo.hdump"
"$bin/demo" "$out/demo.hdump"

# `show CMD...`: prints the command as typed, then runs it.
show() {
  echo
  echo "\$ heapdump $*"
  "$bin/heapdump" "$@"
}
# `means TEXT`: what the output above says about the demo's heap.
means() {
  echo "  ^ $*"
}

show info "$out/demo.hdump"
means "the process, its threads and modules, and the live totals: every block of the process, Rust's and C's"
show verify "$out/demo.hdump"
means "the file follows every rule of the format (exit status 0)"
show top "$out/demo.hdump" -n 8
means "live bytes by the line that allocated them: the thumbnail cache (20 x 256 KiB), the sessions' histories, their table, the workers' buffers, their user names, the request log"
show top "$out/demo.hdump" --retained -n 5
means "what keeps memory alive: the Vec holding the thumbnails retains them all, though it is 480 bytes itself"
show retainers "$out/demo.hdump" --type 'Vec<u8> buffer' -n 1 --paths 1
means "why the biggest buffer is alive: the chain of blocks from a root (a stack slot of main) down to it"
show leaks "$out/demo.hdump" -n 3
means "the planted leak, 170 bytes in 5 blocks: demo::open_room links a Room and its Member through Rc both ways, and drops its handle"
means "definitely lost: nothing reached points to the cycle; memcheck's rule counts its lowest-addressed block as the definitely lost one"
means "indirectly lost: the other 4 blocks of the cycle, reached only from lost blocks (--show all lists them)"
means "reachable via heuristic: the session table's hashbrown buffer (pointed to past its start) and the threads' TLS blocks (pointed to 16 bytes in)"

echo
echo "\$ heapdump todot $out/demo.hdump > $out/heap.dot"
"$bin/heapdump" todot "$out/demo.hdump" > "$out/heap.dot"
if command -v dot >/dev/null; then
  dot -Tsvg "$out/heap.dot" -o "$out/heap.svg"
  echo "rendered $out/heap.svg"
fi
rm -f "$out/heap.hprof" "$out/heap.db"
show tohprof "$out/demo.hdump" -o "$out/heap.hprof"
means "open it in VisualVM: one class per recovered type"
show tosqlite "$out/demo.hdump" -o "$out/heap.db"
if command -v sqlite3 >/dev/null; then
  echo "\$ sqlite3 $out/heap.db 'SELECT ... top types ...'"
  sqlite3 -header -column "$out/heap.db" \
    "SELECT t.name AS type, count(*) AS objects, sum(o.size) AS bytes
     FROM objects AS o JOIN types AS t ON t.id = o.type_id
     GROUP BY t.name ORDER BY bytes DESC LIMIT 5;"
fi
