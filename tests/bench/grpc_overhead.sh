#!/usr/bin/env bash
# gRPC overhead: tokens/s through `ferry serve` (loadgen over loopback) next
# to the same load on an in-process runtime (`ferry loadgen --direct`), on
# the demo model on the CPU, at concurrency 1 and 16, measured side by side
# in one run (each pair alternates, best of --rounds). Prints the ratios.
# usage: tests/bench/grpc_overhead.sh [FERRY_BINARY] [extra engine flags, e.g. --threads 1]
set -euo pipefail
ferry=${1:-build/release/service/ferry}
shift || true
engine_flags=("$@")
rounds=5
port=$((20000 + RANDOM % 20000))
log=$(mktemp)
"$ferry" serve --port "$port" --metrics_port -1 --slots 16 "${engine_flags[@]}" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "ferry: serving" "$log" && break; sleep 0.1; done
grep -q "ferry: serving" "$log" || { cat "$log"; exit 1; }
tps() { grep -o 'throughput: [0-9.]*' | awk '{print $2}'; }
printf "%-12s %14s %14s %8s\n" concurrency "gRPC tok/s" "direct tok/s" ratio
for c in 1 16; do
  n=$((c * 16))
  best_grpc=0 best_direct=0
  for _ in $(seq $rounds); do
    g=$("$ferry" loadgen --target "127.0.0.1:$port" --concurrency $c --requests $n -n 64 | tps)
    d=$("$ferry" loadgen --direct --slots 16 "${engine_flags[@]}" --concurrency $c --requests $n -n 64 2>/dev/null | tps)
    best_grpc=$(awk -v a="$best_grpc" -v b="$g" 'BEGIN{print (b>a)?b:a}')
    best_direct=$(awk -v a="$best_direct" -v b="$d" 'BEGIN{print (b>a)?b:a}')
  done
  printf "%-12s %14.1f %14.1f %8.2f\n" $c "$best_grpc" "$best_direct" "$(awk -v a="$best_grpc" -v b="$best_direct" 'BEGIN{print a/b}')"
done
