// CPU kernels: matrix products on stored (quantized) weights and the small
// vector operations of a transformer layer. SIMD variants are chosen once at
// start-up from the CPU's features; the scalar path is always available and
// tested.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/model/weights.h"

namespace ferry::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };
Isa BestIsa();                 // what this CPU supports
Isa ActiveIsa();
void SetIsa(Isa isa);          // tests force the scalar path; clamped to BestIsa()
absl::string_view IsaName(Isa isa);

// Per-thread scratch for decoded weight rows, sized once.
class RowScratch {
 public:
  RowScratch(int threads, int64_t max_cols) : rows_(threads, std::vector<float>(max_cols)) {}
  float* get(int thread) { return rows_[thread].data(); }

 private:
  std::vector<std::vector<float>> rows_;
};

// y[t * y_stride + r] = dot(w.row(r), x + t * x_stride) for every row r of w
// and token t < n_tokens. Rows are split across the pool's threads; each
// weight row is decoded once and used for every token.
void MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y, int64_t y_stride,
            ThreadPool& pool, RowScratch& scratch);

float Dot(const float* a, const float* b, int64_t n);

// out = x / rms(x) * weight
void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out);

// Softmax in place over n values.
void Softmax(float* x, int64_t n);

inline float Silu(float x) { return x / (1.0f + __builtin_expf(-x)); }
float GeluTanh(float x);

}  // namespace ferry::cpu
