#!/usr/bin/env bash
# The preload's cost on an unmodified, allocation-heavy C program
# (examples/c/alloc_churn.c): the plain program, `heapdump run` (dump at
# exit) and heaptrack (if installed), run in turn ROUNDS times; prints each
# run and the medians of wall and user time, and each tool's ratio to the
# plain run. The program is built twice: -O2 as distributions build C
# (no frame pointers: heapdump's stacks come from CFI), and `-fp` with
# frame pointers (compared with its own plain run).
#
#   bash scripts/bench_preload.sh [ROUNDS] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-7}
steps=${2:-4000000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet -p heapdump-analyze
gcc -O2 -o "$work/churn" examples/c/alloc_churn.c
gcc -O2 -fno-omit-frame-pointer -o "$work/churn-fp" examples/c/alloc_churn.c
heapdump=target/release/heapdump
tools=(plain heapdump)
command -v heaptrack >/dev/null && tools+=(heaptrack)
tools+=(plain-fp heapdump-fp)

run() {
  case "$1" in
    plain) "$work/churn" "$steps" ;;
    heapdump) "$heapdump" run --dir "$work/dumps" -- "$work/churn" "$steps" ;;
    plain-fp) "$work/churn-fp" "$steps" ;;
    heapdump-fp) "$heapdump" run --dir "$work/dumps" -- "$work/churn-fp" "$steps" ;;
    heaptrack) heaptrack -o "$work/heaptrack" "$work/churn" "$steps" ;;
  esac >/dev/null 2>&1
}

for ((round = 1; round <= rounds; round++)); do
  for tool in "${tools[@]}"; do
    rm -rf "$work/dumps" "$work"/heaptrack*
    # %e wall seconds, %U user seconds (the program's and its children's).
    /usr/bin/time -f "$tool %e %U" -o "$work/time" bash -c "$(declare -f run); work=$work steps=$steps heapdump=$heapdump run $tool"
    cat "$work/time" | tee -a "$work/all"
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
# ns_per_alloc: the wall time added per allocation (and its free).
printf '%-12s %8s %8s %11s %11s %13s\n' tool wall_s user_s wall_ratio user_ratio ns_per_alloc
base_wall=$(awk '$1=="plain"{print $2}' "$work/all" | median)
base_user=$(awk '$1=="plain"{print $3}' "$work/all" | median)
for tool in "${tools[@]}"; do
  wall=$(awk -v t="$tool" '$1==t{print $2}' "$work/all" | median)
  user=$(awk -v t="$tool" '$1==t{print $3}' "$work/all" | median)
  if [ "$tool" = plain-fp ]; then
    base_wall=$wall base_user=$user
  fi
  printf '%-12s %8s %8s %11.2f %11.2f %13.0f\n' "$tool" "$wall" "$user" \
    "$(echo "$wall / $base_wall" | bc -l)" "$(echo "$user / $base_user" | bc -l)" \
    "$(echo "($wall - $base_wall) * 1000000000 / $steps" | bc -l)"
done
