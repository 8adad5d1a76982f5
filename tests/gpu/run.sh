#!/usr/bin/env bash
# The one-call GPU validation (issue 5). Two halves, because the GPU
# machine has the driver, CUDA and cuBLAS but no Debian -dev packages:
#
#   tests/gpu/run.sh pack [DIR]   here: build the CUDA binaries (CUDA
#                                 runtime linked statically) and put them,
#                                 with the shared libraries ldd names that a
#                                 bare machine lacks, in DIR (default
#                                 build/gpu-carry, ~58 MB) and DIR.tgz
#                                 (~19 MB: carry this one, the device
#                                 tool's limit is 64 MiB)
#   tests/gpu/run.sh [DIR|DIR.tgz] on the GPU machine (a .tgz is unpacked
#                                 into a temporary folder first): the decode-kernel
#                                 bandwidth per quant type, the CUDA test
#                                 suite, the streaming benchmark of an
#                                 8B-shaped model under an 8 GiB budget at
#                                 batch 1, 8, 32, the offloading sweep of the
#                                 same model (0..100 % resident), its
#                                 all-resident decode on the float matvec,
#                                 without CUDA graphs, without fused launches
#                                 and with the defaults, a probe of the
#                                 host-memory paths, and an 8B-shaped q4_K
#                                 model under a budget that holds about a
#                                 third of its layers with the rest streamed,
#                                 on the CPU and split (three strategies at
#                                 batch 1, 8, 32, each beside the speed
#                                 model's prediction); the tables last.
#                                 Every stage has a time limit. Exits 2 with
#                                 "no CUDA device" where there is none, 1 on
#                                 a failure. FERRY_GPU_KEEP=DIR keeps the
#                                 stages' full output there.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"

if [[ "${1:-}" == pack ]]; then
  out="${2:-$root/build/gpu-carry}"
  set -e
  cmake -S "$root" -B "$root/build/gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFERRY_CUDA=ON -DFERRY_BUILD_TESTS=ON \
    -DFERRY_FUZZ=OFF >/dev/null
  cmake --build "$root/build/gpu" --target ferry cuda_test cuda_kernel_bench forward_reference_test
  rm -rf "$out"
  mkdir -p "$out/lib"
  cp "$root/build/gpu/service/ferry" "$root/build/gpu/tests/cuda_test" "$root/build/gpu/tests/cuda_kernel_bench" \
    "$root/build/gpu/tests/forward_reference_test" "$out/"
  # Everything ldd resolves except the C runtime and the driver, which every machine has.
  for bin in "$out/ferry" "$out/cuda_test" "$out/cuda_kernel_bench" "$out/forward_reference_test"; do
    ldd "$bin" | awk '/=>/ {print $3}'
  done | sort -u | grep -vE '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*|libcuda)\.so' |
    while read -r lib; do cp -L "$lib" "$out/lib/"; done
  strip --strip-unneeded "$out/ferry" "$out/cuda_test" "$out/cuda_kernel_bench" "$out/forward_reference_test" \
    2>/dev/null || true
  # The real models the golden tests read (../shared is not carried along).
  if compgen -G "$root/../shared/models/*.gguf" >/dev/null; then
    mkdir -p "$out/models"
    cp "$root"/../shared/models/*.gguf "$out/models/"
  fi
  tar -czf "$out.tgz" -C "$out" .
  du -sh "$out" "$out.tgz"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
bin="${1:-$root/build/gpu-carry}"
if [[ -f "$bin" && "$bin" == *.tgz ]]; then
  mkdir -p "$work/carry"
  tar -xzf "$bin" -C "$work/carry" || { echo "run.sh: cannot unpack $bin" >&2; exit 1; }
  bin="$work/carry"
fi
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export FERRY_BINARY="$bin/ferry"
[[ -d "$bin/models" ]] && export FERRY_SHARED_MODELS="$bin/models"
for f in ferry cuda_test cuda_kernel_bench forward_reference_test; do
  if [[ ! -x "$bin/$f" ]]; then
    echo "run.sh: $bin/$f is missing: run 'tests/gpu/run.sh pack' on the build machine and bring $bin along" >&2
    exit 1
  fi
done
start=$SECONDS

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
# Every stage has a time limit, so a hung kernel cannot eat the machine's time.
echo "== 1/7 kernel bandwidth per quant type (decode: 1 token x 16384 x 8192)"
timeout 45 "$bin/cuda_kernel_bench" | tee "$work/kernels.txt"
rc=${PIPESTATUS[0]}
if [[ $rc == 2 ]]; then
  echo "run.sh: no CUDA device; nothing to validate here"
  exit 2
fi
failed=0
[[ $rc == 0 ]] || failed=1

echo "== 2/7 the CUDA test suite"
if ! timeout 150 "$bin/cuda_test" 2>&1 | tee "$work/tests.txt" | grep -E '^\[  (FAILED|PASSED|SKIPPED) |^\[==========\]'; then
  failed=1
fi
grep -q '^\[  FAILED  \]' "$work/tests.txt" && failed=1
# The backend-parameterized forward suite's cuda cases (every arch x type vs the double reference).
if ! timeout 60 "$bin/forward_reference_test" --gtest_filter='*cuda_*' 2>&1 | tee "$work/forward.txt" |
    grep -E '^\[  (FAILED|PASSED) |^\[==========\]'; then
  failed=1
fi
grep -q '^\[  FAILED  \]' "$work/forward.txt" && failed=1
grep -q 'stories260K' "$work/tests.txt" && grep -q 'SKIPPED.*Stories' "$work/tests.txt" &&
  echo "note: the stories260K golden skipped: put ../shared/models beside the checkout to run it"

echo "== 3/7 streaming: an 8B-shaped llama (32 layers, 4096 wide, ff 14336, vocab 128256) in q8_0 under 8 GiB"
timeout 40 "$FERRY_BINARY" make-model --layers 32 --embd 4096 --heads 32 --kv_heads 8 --ff 14336 --vocab 128256 \
  --type q8_0 --out "$work/llama8b-q8_0.gguf" >/dev/null || failed=1
timeout 60 "$FERRY_BINARY" bench --model "$work/llama8b-q8_0.gguf" --device cuda:mem=8GiB --placement stream \
  --batches 1,8,32 --prompt_tokens 32 --gen_tokens 16 --repetitions 1 | tee "$work/bench.txt" || failed=1

echo "== 4/7 offloading sweep of the same model (no memory cap: 100% is all resident) at batch 1, the rest streamed, on the CPU and split"
timeout 120 "$FERRY_BINARY" bench --model "$work/llama8b-q8_0.gguf" --device cuda --sweep --batches 1 \
  --prompt_tokens 16 --gen_tokens 16 --repetitions 1 | tee "$work/sweep.txt" || failed=1
echo "== 5/7 all-resident decode of the same model: float matvec (int8=0), no CUDA graphs (graphs=0), one launch per op (fuse=0), the defaults"
for spec in cuda:int8=0 cuda:graphs=0 cuda:fuse=0 cuda; do
  timeout 40 "$FERRY_BINARY" bench --model "$work/llama8b-q8_0.gguf" --device "$spec" --batches 1,8 \
    --prompt_tokens 16 --gen_tokens 32 --repetitions 2 | tee -a "$work/resident.txt" || failed=1
done
echo "== 6/7 host memory paths (diagnostic: page-locking and pageable copies, 1 GiB each)"
timeout 60 "$bin/cuda_kernel_bench" --host-memory | tee "$work/host.txt"
echo "== 7/7 layers on the CPU beside streamed ones: an 8B-shaped q4_K model under 3 GiB (about a third resident)"
timeout 60 "$FERRY_BINARY" make-model --layers 32 --embd 4096 --heads 32 --kv_heads 8 --ff 14336 --vocab 128256 \
  --type q4_K --out "$work/llama8b-q4_K.gguf" >/dev/null || failed=1
for placement in stream cpu mixed; do
  timeout 90 "$FERRY_BINARY" bench --model "$work/llama8b-q4_K.gguf" --device cuda:mem=3GiB --placement "$placement" \
    --batches 1,8,32 --prompt_tokens 16 --gen_tokens 16 --repetitions 1 | tee -a "$work/mixed.txt" || failed=1
done
[[ -n "${FERRY_GPU_KEEP:-}" ]] && mkdir -p "$FERRY_GPU_KEEP" && cp "$work"/*.txt "$FERRY_GPU_KEEP/"

echo
echo "== summary ($((SECONDS - start)) s)"
grep -E '^cuda:' "$work/kernels.txt" | head -1
sed -n '/^type /,$p' "$work/kernels.txt"
grep '^host memory' "$work/host.txt"
grep -E 'tests? (ran|passed)|PASSED|FAILED' "$work/tests.txt" | tail -3
sed -n '/ batch /,$p' "$work/bench.txt"
sed -n '/ batch /,$p' "$work/sweep.txt"
grep -E 'weights on|^ +[0-9]+ ' "$work/resident.txt"
grep -E 'place|^ +[0-9]+ ' "$work/mixed.txt"
exit $failed
