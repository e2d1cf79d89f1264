#!/usr/bin/env bash
# `heapdump serve` on a big dump: time until the URL is printed (open,
# symbolize, analyze, draw the flame graph, answer the first page's
# requests), then the time to first byte and the total time of the page and
# of each JSON request the page makes first, of requests nobody made before
# (a level of the dominator tree, retainers, top by file), and the peak RSS.
#
#   bash scripts/bench_serve.sh DUMP [RUNS]        # default 5 runs, medians
#
# Make a dump of one million blocks with the heap-graph benchmark:
#   cargo build --release -p heapdump-analyze --example graph_bench
#   $CARGO_TARGET_DIR/release/examples/graph_bench 1000000 /tmp/hg1m.hdump
# Needs curl. HEAPDUMP_BIN overrides the heapdump binary
# (default: $CARGO_TARGET_DIR/release/heapdump, else target/release/heapdump).
set -euo pipefail
dump=${1:?usage: bench_serve.sh DUMP [RUNS]}
runs=${2:-5}
cd "$(dirname "$0")/.."
heapdump=${HEAPDUMP_BIN:-${CARGO_TARGET_DIR:-target}/release/heapdump}
[ -x "$heapdump" ] || { echo "no $heapdump: cargo build --release -p heapdump-analyze" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Each line: name, then one figure per run.
declare -A figures
names=()
record() {
  local name=$1 value=$2
  [ -n "${figures[$name]+x}" ] || names+=("$name")
  figures[$name]="${figures[$name]:-} $value"
}

for run in $(seq "$runs"); do
  start=$(date +%s.%N)
  "$heapdump" serve "$dump" --port 0 >"$work/out" 2>"$work/err" &
  pid=$!
  until grep -q 'http://' "$work/out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
    sleep 0.02
  done
  ready=$(date +%s.%N)
  record "startup until the URL is printed (s)" "$(echo "$ready - $start" | bc -l)"
  url=$(grep -o 'http://[^ ]*' "$work/out")
  # The page, then what its script asks for, in its order.
  first_node=""
  for path in "" app.js app.css "api/info" "api/top?by=site&n=20" \
      "api/dominators?offset=0&limit=100" "api/retained?n=20" "api/leaks" \
      "api/diff?by=site&n=20" flamegraph.svg; do
    timing=$(curl -s -o "$work/body" -w '%{time_starttransfer} %{time_total}' "$url$path")
    record "GET /$path: first byte, total (ms)" \
      "$(echo "$timing" | awk '{printf "%.1f/%.1f", $1*1000, $2*1000}')"
    if [ "$path" = "api/dominators?offset=0&limit=100" ]; then
      first_node=$(grep -o '"index": [0-9]*' "$work/body" | head -1 | grep -o '[0-9]*')
      address=$(grep -o '"address": "0x[0-9a-f]*"' "$work/body" | sed -n 2p | grep -o '0x[0-9a-f]*')
    fi
  done
  # Requests not answered in advance.
  for path in "api/dominators?node=$first_node&offset=0&limit=100" \
      "api/retainers?address=$address" "api/top?by=file&n=20"; do
    timing=$(curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}' "$url$path")
    record "GET /${path%%\?*} (not kept): first byte, total (ms)" \
      "$(echo "$timing" | awk '{printf "%.1f/%.1f", $1*1000, $2*1000}')"
  done
  record "peak RSS (MiB)" "$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status")"
  kill -INT "$pid"
  wait "$pid"
  grep -q 'stopped' "$work/err"
done

median() {
  # Medians of a/b pairs are taken field by field.
  tr ' ' '\n' | grep -v '^$' | awk -F/ '
    { for (i = 1; i <= NF; i++) v[i, NR] = $i; n = NR; f = NF }
    END {
      out = ""
      for (i = 1; i <= f; i++) {
        m = 0; for (r = 1; r <= n; r++) a[r] = v[i, r]
        for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
        med = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        out = out (i > 1 ? " / " : "") sprintf("%.2f", med)
      }
      print out
    }'
}

echo "| $dump, $runs runs | median | runs |"
echo "|---|---:|---|"
for name in "${names[@]}"; do
  echo "| $name | $(echo "${figures[$name]}" | median) | ${figures[$name]# } |"
done
