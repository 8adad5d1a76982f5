// The device memory a GPU backend's kernels need besides the executor's
// buffers: a table of the step's token positions and logit rows, the rope
// frequencies, and for steps of more than kMatVecMaxTokens tokens the f32
// tile that quantized rows are decoded into for the tensor-core GEMM plus
// cuBLAS's workspace. One formula for the planner, the cuda device (which
// allocates it) and the sim device (which allocates the same bytes so that
// it runs out of memory exactly where a GPU would). Plain C++: nvcc and the
// host compiler both read it.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ferry::backend {

inline constexpr int kMatVecMaxTokens = 8;                      // matvec kernel up to here, GEMM above
inline constexpr uint64_t kGemmTileValues = uint64_t{16} << 20; // f32 values: 64 MiB at most
inline constexpr uint64_t kCublasWorkspaceBytes = uint64_t{4} << 20;
inline constexpr int kMaxRopePairs = 512;                       // rope dims up to 1024

struct KernelScratch {
  uint64_t tokens = 0;     // (seq, pos) int32 pairs, max_tokens
  uint64_t rows = 0;       // logit rows, int32, max_tokens
  uint64_t rope = 0;       // f32, kMaxRopePairs
  uint64_t tile = 0;       // f32 GEMM tile, values
  uint64_t workspace = 0;  // cuBLAS
  uint64_t int8 = 0;       // int8 matvec: activations of up to kMatVecMaxTokens tokens, values
  static constexpr uint64_t Align(uint64_t b) { return (b + 255) / 256 * 256; }
  // int8 activations: the quants, then a float scale and an int32 sum per 32.
  static constexpr uint64_t Int8Bytes(uint64_t values) { return Align(values) + 2 * Align(values / 32 * 4); }
  uint64_t bytes() const {
    return Align(tokens * 8) + Align(rows * 4) + Align(rope * 4) + (tile ? Align(tile * 4) : 0) + Align(workspace) +
           Int8Bytes(int8);
  }
};

// For matrices of at most `max_rows` rows of `max_width` values and steps of
// at most `max_tokens` tokens.
inline KernelScratch KernelScratchFor(int64_t max_rows, int64_t max_width, int max_tokens) {
  KernelScratch s;
  s.tokens = static_cast<uint64_t>(max_tokens);
  s.rows = static_cast<uint64_t>(max_tokens);
  s.rope = kMaxRopePairs;
  s.int8 = static_cast<uint64_t>(std::min(max_tokens, kMatVecMaxTokens)) * static_cast<uint64_t>(max_width);
  if (max_tokens > kMatVecMaxTokens) {
    s.tile = std::min<uint64_t>(static_cast<uint64_t>(max_rows) * static_cast<uint64_t>(max_width), kGemmTileValues);
    s.workspace = kCublasWorkspaceBytes;
  }
  return s;
}

}  // namespace ferry::backend
