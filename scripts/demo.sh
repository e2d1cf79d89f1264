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
echo "\$ heapdump leaks $out/demo.hdump -n 3"
target/release/heapdump leaks "$out/demo.hdump" -n 3
