#!/usr/bin/env bash
# The one-call GPU validation (issue 5). Two halves, because the GPU
# machine has the driver, CUDA and cuBLAS but no Debian -dev packages:
#
#   tests/gpu/run.sh pack [DIR]   here: build the CUDA binaries (CUDA
#                                 runtime linked statically) and put them,
#                                 with the shared libraries ldd names that a
#                                 bare machine lacks, in DIR (default
#                                 build/gpu-carry, well under 64 MiB)
#   tests/gpu/run.sh [DIR]        on the GPU machine: the CUDA test suite,
#                                 the decode-kernel bandwidth per quant type,
#                                 and the streaming benchmark of an 8B-shaped
#                                 model under an 8 GiB budget at batch 1, 8,
#                                 32; the table last. Exits 2 with "no CUDA
#                                 device" where there is none, 1 on a failure.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

if [[ "${1:-}" == pack ]]; then
  out="${2:-$root/build/gpu-carry}"
  set -e
  cmake -S "$root" -B "$root/build/gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFERRY_CUDA=ON -DFERRY_BUILD_TESTS=ON \
    -DFERRY_FUZZ=OFF >/dev/null
  cmake --build "$root/build/gpu" --target ferry cuda_test cuda_kernel_bench
  rm -rf "$out"
  mkdir -p "$out/lib"
  cp "$root/build/gpu/service/ferry" "$root/build/gpu/tests/cuda_test" "$root/build/gpu/tests/cuda_kernel_bench" "$out/"
  # Everything ldd resolves except the C runtime and the driver, which every machine has.
  for bin in "$out/ferry" "$out/cuda_test" "$out/cuda_kernel_bench"; do
    ldd "$bin" | awk '/=>/ {print $3}'
  done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*|libcuda)\.so' |
    while read -r lib; do cp -L "$lib" "$out/lib/"; done
  strip --strip-unneeded "$out/ferry" "$out/cuda_test" "$out/cuda_kernel_bench" 2>/dev/null || true
  du -sh "$out"
  exit 0
fi

bin="${1:-$root/build/gpu-carry}"
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export FERRY_BINARY="$bin/ferry"
for f in ferry cuda_test cuda_kernel_bench; do
  if [[ ! -x "$bin/$f" ]]; then
    echo "run.sh: $bin/$f is missing: run 'tests/gpu/run.sh pack' on the build machine and bring $bin along" >&2
    exit 1
  fi
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS

echo "== 1/3 kernel bandwidth per quant type (decode: 1 token x 16384 x 8192)"
"$bin/cuda_kernel_bench" | tee "$work/kernels.txt"
rc=${PIPESTATUS[0]}
if [[ $rc == 2 ]]; then
  echo "run.sh: no CUDA device; nothing to validate here"
  exit 2
fi
failed=0
[[ $rc == 0 ]] || failed=1

echo "== 2/3 the CUDA test suite"
if ! "$bin/cuda_test" 2>&1 | tee "$work/tests.txt" | grep -E '^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]'; then
  failed=1
fi
grep -q '^\[  FAILED  \]' "$work/tests.txt" && failed=1
grep -q 'stories260K' "$work/tests.txt" && grep -q 'SKIPPED.*Stories' "$work/tests.txt" &&
  echo "note: the stories260K golden skipped: put ../shared/models beside the checkout to run it"

echo "== 3/3 streaming: an 8B-shaped llama (32 layers, 4096 wide, ff 14336, vocab 128256) in q8_0 under 8 GiB"
"$FERRY_BINARY" make-model --layers 32 --embd 4096 --heads 32 --kv_heads 8 --ff 14336 --vocab 128256 \
  --type q8_0 --out "$work/llama8b-q8_0.gguf" >/dev/null || failed=1
"$FERRY_BINARY" bench --model "$work/llama8b-q8_0.gguf" --device cuda:mem=8GiB --batches 1,8,32 \
  --prompt_tokens 64 --gen_tokens 16 | tee "$work/bench.txt" || failed=1

echo
echo "== summary ($((SECONDS - start)) s)"
grep -E '^cuda:' "$work/kernels.txt" | head -1
sed -n '/^type /,/^device-to-device/p' "$work/kernels.txt"
grep -E 'tests? (ran|passed)|PASSED|FAILED' "$work/tests.txt" | tail -3
sed -n '/ batch /,$p' "$work/bench.txt"
exit $failed
