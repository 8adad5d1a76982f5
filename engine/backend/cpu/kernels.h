// CPU kernels: matrix products on stored (quantized) weights and the small
// vector operations of a transformer layer. SIMD variants are chosen once at
// start-up from the CPU's features; the scalar path is always available and
// tested.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/backend/cpu/fdot.h"
#include "engine/backend/cpu/qdot.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/model/weights.h"

namespace ferry::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };
Isa BestIsa();                 // what this CPU supports
Isa ActiveIsa();
void SetIsa(Isa isa);          // tests force the scalar path; clamped to BestIsa()
absl::string_view IsaName(Isa isa);

// Buffers a matrix product needs, sized once for the largest product: 8
// decoded weight rows per thread (a float group widened to f32, or one row),
// an AMX panel per thread (qdot.h), the activations quantized to 8 bits
// (and again as the AMX kernels read them) and the float kernels' paired
// activations.
class MatMulScratch {
 public:
  MatMulScratch(int threads, int64_t max_cols, int max_tokens)
      : rows_(threads, std::vector<float>(kGroupRows * max_cols)),
        panels_(threads, std::vector<uint8_t>(AmxPanelBytes(max_cols))),
        act_(static_cast<size_t>(max_tokens) * (max_cols / 32 + 1)),
        amx_tokens_(AmxTokenBytes(max_tokens, max_cols + 32)),
        paired_(static_cast<size_t>(RoundUp(max_tokens, kFloatTile)) * max_cols) {}
  float* row(int thread) { return rows_[thread].data(); }
  uint8_t* panel(int thread) { return panels_[thread].data(); }
  BlockQ8* act() { return act_.data(); }
  uint8_t* amx_tokens() { return amx_tokens_.data(); }  // PackAmxTokens' layout
  float* paired() { return paired_.data(); }  // the float kernels' activations (fdot.h's PairTokens)

 private:
  static int RoundUp(int n, int to) { return (n + to - 1) / to * to; }
  std::vector<std::vector<float>> rows_;
  std::vector<std::vector<uint8_t>> panels_;
  std::vector<BlockQ8> act_;
  std::vector<uint8_t> amx_tokens_;
  std::vector<float> paired_;
};

// y[t * y_stride + r] = dot(w.row(r), x + t * x_stride) for every row r of w
// and token t < n_tokens. Rows are split across the pool's threads; each
// weight row is read once and used for every token. Weight types with an
// integer kernel (q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K) take the activations quantized to
// 8 bits per block of 32, as llama.cpp does; f32, f16 and bf16 the float
// kernels of fdot.h (even widths); the others decode each row to f32 and
// use a float dot product.
void MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y, int64_t y_stride,
            ThreadPool& pool, MatMulScratch& scratch);

float Dot(const float* a, const float* b, int64_t n);
// dot(a, h) and out += a_scalar * h for h in IEEE half precision (the KV cache).
float DotF16(const float* a, const uint16_t* h, int64_t n);
void AxpyF16(float a, const uint16_t* h, float* out, int64_t n);

// out = x / rms(x) * weight
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// Softmax in place over n values.
void Softmax(float* x, int64_t n);

inline float Silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
float GeluTanh(float x);

}  // namespace ferry::cpu
