#!/usr/bin/env bash
# The demo: builds the example programs and the analyzer, runs a small
# server-like program that dumps its own heap, and shows what heapdump finds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p heapdump-examples -p heapdump-analyze --bins
out=target/demo
mkdir -p "$out"
rm -f "$out/demo.hdump"
target/release/demo "$out/demo.hdump"
echo
echo "\$ heapdump info $out/demo.hdump"
target/release/heapdump info "$out/demo.hdump"
echo
echo "\$ heapdump verify $out/demo.hdump"
target/release/heapdump verify "$out/demo.hdump"
echo
echo "\$ heapdump top $out/demo.hdump -n 8"
target/release/heapdump top "$out/demo.hdump" -n 8
echo
echo "\$ heapdump top $out/demo.hdump --retained -n 5"
target/release/heapdump top "$out/demo.hdump" --retained -n 5
echo
echo "\$ heapdump retainers $out/demo.hdump --type 'Vec<u8> buffer' -n 1 --paths 1"
target/release/heapdump retainers "$out/demo.hdump" --type 'Vec<u8> buffer' -n 1 --paths 1
echo
echo "\$ heapdump leaks $out/demo.hdump -n 3"
target/release/heapdump leaks "$out/demo.hdump" -n 3
echo
echo "\$ heapdump todot $out/demo.hdump > $out/heap.dot"
target/release/heapdump todot "$out/demo.hdump" > "$out/heap.dot"
if command -v dot >/dev/null; then
  dot -Tsvg "$out/heap.dot" -o "$out/heap.svg"
  echo "rendered $out/heap.svg"
fi
echo
echo "\$ heapdump tohprof $out/demo.hdump -o $out/heap.hprof    # open it in VisualVM"
rm -f "$out/heap.hprof"
target/release/heapdump tohprof "$out/demo.hdump" -o "$out/heap.hprof"
echo
echo "\$ heapdump tosqlite $out/demo.hdump -o $out/heap.db"
rm -f "$out/heap.db"
target/release/heapdump tosqlite "$out/demo.hdump" -o "$out/heap.db"
if command -v sqlite3 >/dev/null; then
  echo "\$ sqlite3 $out/heap.db 'SELECT ... top types ...'"
  sqlite3 -header -column "$out/heap.db" \
    "SELECT t.name AS type, count(*) AS objects, sum(o.size) AS bytes
     FROM objects AS o JOIN types AS t ON t.id = o.type_id
     GROUP BY t.name ORDER BY bytes DESC LIMIT 5;"
fi
