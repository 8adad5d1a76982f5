#!/usr/bin/env bash
# Service overhead: tokens/s through `ferry serve` over gRPC and over its
# OpenAI-compatible HTTP API (loadgen over loopback, --http for the latter)
# next to the same load on an in-process runtime (`ferry loadgen --direct`),
# on the demo model on the CPU, at concurrency 1 and 16, measured side by
# side in one run (each triple alternates, best of --rounds). Prints the
# ratios to direct.
# usage: tests/bench/grpc_overhead.sh [FERRY_BINARY] [extra engine flags, e.g. --threads 1]
set -euo pipefail
ferry=${1:-build/release/service/ferry}
shift || true
engine_flags=("$@")
rounds=5
port=$((20000 + RANDOM % 20000))
http_port=$((port + 1))
log=$(mktemp)
"$ferry" serve --port "$port" --http_port "$http_port" --metrics_port -1 --slots 16 "${engine_flags[@]}" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q "ferry: serving" "$log" && break; sleep 0.1; done
grep -q "ferry: serving" "$log" || { cat "$log"; exit 1; }
tps() { grep -o 'throughput: [0-9.]*' | awk '{print $2}'; }
best() { awk -v a="$1" -v b="$2" 'BEGIN{print (b>a)?b:a}'; }
printf "%-12s %14s %14s %14s %8s %8s\n" concurrency "HTTP tok/s" "gRPC tok/s" "direct tok/s" HTTP/d gRPC/d
for c in 1 16; do
  n=$((c * 64))
  best_http=0 best_grpc=0 best_direct=0
  for _ in $(seq $rounds); do
    h=$("$ferry" loadgen --http --target "127.0.0.1:$http_port" --concurrency $c --requests $n -n 64 | tps)
    g=$("$ferry" loadgen --target "127.0.0.1:$port" --concurrency $c --requests $n -n 64 | tps)
    d=$("$ferry" loadgen --direct --slots 16 "${engine_flags[@]}" --concurrency $c --requests $n -n 64 2>/dev/null | tps)
    best_http=$(best "$best_http" "$h")
    best_grpc=$(best "$best_grpc" "$g")
    best_direct=$(best "$best_direct" "$d")
  done
  printf "%-12s %14.1f %14.1f %14.1f %8.2f %8.2f\n" $c "$best_http" "$best_grpc" "$best_direct" \
    "$(awk -v a="$best_http" -v b="$best_direct" 'BEGIN{print a/b}')" \
    "$(awk -v a="$best_grpc" -v b="$best_direct" 'BEGIN{print a/b}')"
done
