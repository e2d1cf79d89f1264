#!/usr/bin/env bash
# The preload's cost on an unmodified, allocation-heavy C program
# (examples/c/alloc_churn.c): the plain program, `heapdump run` (dump at
# exit; `heapdump-sample`: production mode, --stacks sample:512KiB) and
# heaptrack (if installed), run in turn ROUNDS times; prints each
# run and the medians of wall and user time, and each tool's ratio to the
# plain run. The program is built twice: -O2 as distributions build C
# (no frame pointers: heapdump's stacks come from CFI), and `-fp` with
# frame pointers (compared with its own plain run).
#
# With --real, the program is Debian's sqlite3 instead (no frame pointers),
# running a script that fills, indexes and queries a table of STEPS rows
# in memory (default 200000).
#
#   bash scripts/bench_preload.sh [--real] [ROUNDS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
real=false
if [ "${1:-}" = --real ]; then
  real=true
  shift
fi
rounds=${1:-7}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet -p heapdump-analyze
heapdump=${CARGO_TARGET_DIR:-target}/release/heapdump
if $real; then
  steps=${2:-200000}
  cat >"$work/script.sql" <<SQL
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, value REAL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $steps)
INSERT INTO t SELECT i, hex(randomblob(8 + i % 24)), i * 0.5 FROM n;
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(length(name)) FROM t GROUP BY id % 97 ORDER BY 2 DESC LIMIT 3;
SQL
  program=(sqlite3 :memory:)
  tools=(plain heapdump heapdump-sample)
  command -v heaptrack >/dev/null && tools+=(heaptrack)
else
  steps=${2:-4000000}
  gcc -O2 -o "$work/churn" examples/c/alloc_churn.c
  gcc -O2 -fno-omit-frame-pointer -o "$work/churn-fp" examples/c/alloc_churn.c
  program=("$work/churn" "$steps")
  tools=(plain heapdump heapdump-sample)
  command -v heaptrack >/dev/null && tools+=(heaptrack)
  tools+=(plain-fp heapdump-fp)
fi

run() {
  local fp=("$work/churn-fp" "$steps")
  case "$1" in
    plain) "${program[@]}" ;;
    heapdump) "$heapdump" run --dir "$work/dumps" -- "${program[@]}" ;;
    heapdump-sample) "$heapdump" run --dir "$work/dumps" --stacks sample:512KiB -- "${program[@]}" ;;
    plain-fp) "${fp[@]}" ;;
    heapdump-fp) "$heapdump" run --dir "$work/dumps" -- "${fp[@]}" ;;
    heaptrack) heaptrack -o "$work/heaptrack" "${program[@]}" ;;
  esac
}

for ((round = 1; round <= rounds; round++)); do
  for tool in "${tools[@]}"; do
    rm -rf "$work/dumps" "$work"/heaptrack*
    # Wall seconds and user seconds (the program's and its children's).
    if $real; then exec <"$work/script.sql"; fi
    TIMEFORMAT="$tool %R %U"
    { time run "$tool" >/dev/null 2>&1; } 2>>"$work/all"
    tail -1 "$work/all"
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
# ns_per_step: the wall time added per step (an allocation and its free of
# alloc_churn; a row of the sqlite3 script).
printf '%-12s %8s %8s %11s %11s %12s\n' tool wall_s user_s wall_ratio user_ratio ns_per_step
base_wall=$(awk '$1=="plain"{print $2}' "$work/all" | median)
base_user=$(awk '$1=="plain"{print $3}' "$work/all" | median)
for tool in "${tools[@]}"; do
  wall=$(awk -v t="$tool" '$1==t{print $2}' "$work/all" | median)
  user=$(awk -v t="$tool" '$1==t{print $3}' "$work/all" | median)
  if [ "$tool" = plain-fp ]; then
    base_wall=$wall base_user=$user
  fi
  printf '%-12s %8s %8s %11.2f %11.2f %12.0f\n' "$tool" "$wall" "$user" \
    "$(echo "$wall / $base_wall" | bc -l)" "$(echo "$user / $base_user" | bc -l)" \
    "$(echo "($wall - $base_wall) * 1000000000 / $steps" | bc -l)"
done
