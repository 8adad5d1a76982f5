#!/usr/bin/env bash
# Runs a fuzzer for a bounded time on a scratch copy of its seed corpus.
# Any crash, sanitizer report, leak, timeout or allocation above the limit
# (code that over-allocates for a small hostile input) fails the test.
# usage: run.sh FUZZER SECONDS SEED_DIR WORK_DIR
set -euo pipefail
fuzzer=$1 seconds=$2 seeds=$3 work=$4
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
set +e
"$fuzzer" -max_total_time="$seconds" -max_len=65536 -malloc_limit_mb=64 -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds" >"$work/log" 2>&1
rc=$?
set -e
grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb|INFO: seed corpus|ERROR|SUMMARY" "$work/log" || true
echo "fuzzer exit code $rc; full log: $work/log"
exit $rc
