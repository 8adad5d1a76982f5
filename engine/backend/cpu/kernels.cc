#include "engine/backend/cpu/kernels.h"

#include <immintrin.h>

#include <cmath>

#include "engine/backend/cpu/fdot.h"
#include "engine/quant/half.h"
#include "engine/quant/quantize.h"

namespace ferry::cpu {
namespace {

float DotScalar(const float* a, const float* b, int64_t n) {
  // Four partial sums, like the SIMD paths, so the rounding is comparable.
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) s[k] += a[i + k] * b[i + k];
  }
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

__attribute__((target("avx2,fma"))) float HorizontalSum(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int64_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(),
         acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target("avx512f"))) float DotAvx512(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  alignas(64) float lanes[16];  // (gcc 12's _mm512_reduce_add_ps trips -Wuninitialized)
  _mm512_store_ps(lanes, _mm512_add_ps(acc0, acc1));
  float s = 0.0f;
  for (float lane : lanes) s += lane;
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

float DotF16Scalar(const float* a, const uint16_t* h, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * quant::HalfToFloat(h[i]);
  return s;
}

void AxpyF16Scalar(float a, const uint16_t* h, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += a * quant::HalfToFloat(h[i]);
}

__attribute__((target("avx2,fma,f16c"))) float DotF16Avx2(const float* a, const uint16_t* h, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 k = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), k, acc);
  }
  float s = HorizontalSum(acc);
  for (; i < n; ++i) s += a[i] * _cvtsh_ss(h[i]);
  return s;
}

__attribute__((target("avx2,fma,f16c"))) void AxpyF16Avx2(float a, const uint16_t* h, float* out, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
    _mm256_storeu_ps(out + i, _mm256_fmadd_ps(av, v, _mm256_loadu_ps(out + i)));
  }
  for (; i < n; ++i) out[i] += a * _cvtsh_ss(h[i]);
}

using DotFn = float (*)(const float*, const float*, int64_t);

// Below about 64K multiply-adds a product finishes in microseconds, less
// than it takes to wake the other threads.
constexpr int64_t kSerialMatMulWork = 1 << 16;

// From this many tokens a product goes to the AMX kernels (qdot_amx.cc),
// whose tiles take 16 tokens at a time.
constexpr int kAmxMinTokens = 16;

Isa Detect() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa g_isa = Detect();
DotFn g_dot = g_isa == Isa::kAvx512 ? DotAvx512 : g_isa == Isa::kAvx2 ? DotAvx2 : DotScalar;

}  // namespace

Isa BestIsa() { return Detect(); }
Isa ActiveIsa() { return g_isa; }

void SetIsa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(BestIsa())) isa = BestIsa();
  g_isa = isa;
  g_dot = isa == Isa::kAvx512 ? DotAvx512 : isa == Isa::kAvx2 ? DotAvx2 : DotScalar;
}

absl::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

float Dot(const float* a, const float* b, int64_t n) { return g_dot(a, b, n); }

float DotF16(const float* a, const uint16_t* h, int64_t n) {
  return g_isa != Isa::kScalar ? DotF16Avx2(a, h, n) : DotF16Scalar(a, h, n);
}

void AxpyF16(float a, const uint16_t* h, float* out, int64_t n) {
  if (g_isa != Isa::kScalar) {
    AxpyF16Avx2(a, h, out, n);
  } else {
    AxpyF16Scalar(a, h, out, n);
  }
}

namespace {

// f32, f16 and bf16 (fdot.h), two groups of 8 rows a unit: groups of the
// grouped layout as they are, rows in the file's layout (the sim device's,
// the grouped layout's last rows) widened into an f32 group first. Every
// kernel forms a row's result the same way, bit for bit.
void MatMulFloat(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y, int64_t y_stride,
                 ThreadPool& pool, MatMulScratch& scratch) {
  // No tokens (a prompt chunk that wants no logits reaches the head so):
  // nothing to compute, and the kernels below assume at least one token.
  if (n_tokens <= 0) return;
  const int64_t cols = w.cols;
  const uint64_t row_bytes = w.row_bytes();
  const bool simd = g_isa != Isa::kScalar;
  const FloatGroupDotFn group_dot = GetFloatGroupDot(w.type, simd);
  const FloatGroupDotFn f32_dot = GetFloatGroupDot(quant::TensorType::kF32, simd);
  const int64_t groups = w.group_bytes != 0 ? w.rows / kGroupRows : 0;
  const int64_t all_groups = (w.rows + kGroupRows - 1) / kGroupRows;
  const uint8_t* tail = w.data + groups * w.group_bytes;
  // The activations by column pair, a tile of kFloatTile tokens after another.
  float* paired = scratch.paired();
  const int tiles = (n_tokens + kFloatTile - 1) / kFloatTile;
  for (int i = 0; i < tiles; ++i) {
    PairTokens(x + i * kFloatTile * x_stride, x_stride, std::min(kFloatTile, n_tokens - i * kFloatTile), cols,
               paired + i * kFloatTile * cols);
  }
  pool.ParallelFor((all_groups + 1) / 2, [&](int thread, int64_t begin, int64_t end) {
    float out[2 * kFloatSpan * kGroupRows];
    float* widened = scratch.row(thread);  // one group of 8 f32 rows
    for (int64_t u = begin; u < end; ++u) {
      const int64_t g0 = 2 * u;
      const int n_groups = static_cast<int>(std::min<int64_t>(2, all_groups - g0));
      auto store = [&](int64_t g, int t0, int nt, const float* from) {
        const int64_t r0 = g * kGroupRows;
        const int64_t n_rows = std::min<int64_t>(kGroupRows, w.rows - r0);
        for (int t = 0; t < nt; ++t) std::copy_n(from + t * kGroupRows, n_rows, y + (t0 + t) * y_stride + r0);
      };
      if (g0 + n_groups <= groups) {  // all in place: both groups in one pass
        for (int t0 = 0; t0 < n_tokens; t0 += kFloatSpan) {
          const int nt = std::min(kFloatSpan, n_tokens - t0);
          group_dot(w.data + g0 * w.group_bytes, w.group_bytes, n_groups, paired + t0 * cols, nt, cols, out);
          for (int g = 0; g < n_groups; ++g) store(g0 + g, t0, nt, out + g * nt * kGroupRows);
        }
        continue;
      }
      for (int64_t g = g0; g < g0 + n_groups; ++g) {
        const bool in_place = g < groups;
        if (!in_place) {
          const int64_t r0 = g * kGroupRows;
          GroupFloatRowsAsF32(w.type, tail + (r0 - groups * kGroupRows) * row_bytes, row_bytes,
                              static_cast<int>(std::min<int64_t>(kGroupRows, w.rows - r0)), cols, widened);
        }
        for (int t0 = 0; t0 < n_tokens; t0 += kFloatSpan) {
          const int nt = std::min(kFloatSpan, n_tokens - t0);
          if (in_place) {
            group_dot(w.data + g * w.group_bytes, 0, 1, paired + t0 * cols, nt, cols, out);
          } else {
            f32_dot(reinterpret_cast<const uint8_t*>(widened), 0, 1, paired + t0 * cols, nt, cols, out);
          }
          store(g, t0, nt, out);
        }
      }
    }
  }, w.rows * cols * std::max(n_tokens, 1), kSerialMatMulWork);
}

}  // namespace

void MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y, int64_t y_stride,
            ThreadPool& pool, MatMulScratch& scratch) {
  // No tokens (a prompt chunk that wants no logits reaches the head so):
  // nothing to compute, and the kernels below assume at least one token.
  if (n_tokens <= 0) return;
  const int64_t cols = w.cols;
  const uint64_t row_bytes = w.row_bytes();
  const int64_t work = w.rows * cols * std::max(n_tokens, 1);
  const bool simd = g_isa != Isa::kScalar;
  const int64_t block = quant::Info(w.type).block_elems;
  if (const QDotFn qdot = GetQDot(w.type, simd); qdot != nullptr && cols % block == 0 && cols % 32 == 0) {
    const int64_t blocks = cols / 32;
    BlockQ8* act = scratch.act();
    for (int t = 0; t < n_tokens; ++t) QuantizeActivations(x + t * x_stride, cols, act + t * blocks);
    // Rows in units of 8: a group in the grouped layout (the cpu device's
    // copy, see qdot.h), else 8 rows (the file's layout; the grouped
    // layout's rows past the last full group) one by one. Both kernels form
    // a row's result the same way, bit for bit.
    const GroupDotFn group_dot = w.group_bytes != 0 ? GetGroupDot(w.type, simd) : nullptr;
    const int64_t groups = group_dot != nullptr ? w.rows / kGroupRows : 0;
    const uint8_t* tail = w.data + groups * w.group_bytes;
    const int64_t units = (w.rows + kGroupRows - 1) / kGroupRows;
    // Steps of many tokens go to AMX where the CPU has it, two groups at a
    // time; an odd last group and the rows past the last group stay below.
    int64_t first = 0;
    const AmxPairDotFn amx =
        g_isa == Isa::kAvx512 && groups >= 2 && n_tokens >= kAmxMinTokens && CpuHasAmx() ? GetAmxPairDot(w.type)
                                                                                        : nullptr;
    if (amx != nullptr) {
      uint8_t* tokens = scratch.amx_tokens();
      PackAmxTokens(act, n_tokens, cols, tokens);
      pool.ParallelFor(groups / 2, [&](int thread, int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          amx(w.data + 2 * p * w.group_bytes, w.group_bytes, tokens, n_tokens, cols, scratch.panel(thread),
              y + 2 * p * kGroupRows, y_stride);
        }
      }, work, kSerialMatMulWork);
      first = groups / 2 * 2;
      if (first == units) return;
    }
    // A token or two: two groups at a time in 512-bit registers where the
    // CPU has them (a span of 2 units; otherwise 1).
    const GroupPairDotFn pair_dot =
        group_dot != nullptr && n_tokens <= kPairMaxTokens && g_isa == Isa::kAvx512 ? GetGroupPairDot(w.type) : nullptr;
    const int64_t span = pair_dot != nullptr ? 2 : 1;
    pool.ParallelFor((units - first + span - 1) / span, [&](int, int64_t begin, int64_t end) {
      const BlockQ8* xs[kQDotTile];
      float out[kQDotTile * 2 * kGroupRows];
      for (int64_t i = begin; i < end; ++i) {
        const int64_t u0 = first + i * span;
        if (span == 2 && u0 + 1 < groups) {
          for (int t = 0; t < n_tokens; ++t) xs[t] = act + t * blocks;
          pair_dot(w.data + u0 * w.group_bytes, w.group_bytes, xs, n_tokens, cols, out);
          for (int t = 0; t < n_tokens; ++t) {
            std::copy_n(out + t * 2 * kGroupRows, 2 * kGroupRows, y + t * y_stride + u0 * kGroupRows);
          }
          continue;
        }
        // Tokens innermost: a unit's weights stay in cache for every tile.
        for (int64_t u = u0; u < std::min(u0 + span, units); ++u) {
          const int64_t r0 = u * kGroupRows;
          for (int t0 = 0; t0 < n_tokens; t0 += kQDotTile) {
            const int nt = std::min(kQDotTile, n_tokens - t0);
            for (int t = 0; t < nt; ++t) xs[t] = act + (t0 + t) * blocks;
            if (u < groups) {
              group_dot(w.data + u * w.group_bytes, xs, nt, cols, out);
              for (int t = 0; t < nt; ++t) std::copy_n(out + t * kGroupRows, kGroupRows, y + (t0 + t) * y_stride + r0);
              continue;
            }
            for (int64_t r = r0; r < std::min(r0 + kGroupRows, w.rows); ++r) {
              qdot(tail + (r - groups * kGroupRows) * row_bytes, xs, nt, cols, out);
              for (int t = 0; t < nt; ++t) y[(t0 + t) * y_stride + r] = out[t];
            }
          }
        }
      }
    }, work, kSerialMatMulWork);
    return;
  }
  if (IsFloatType(w.type) && cols % 2 == 0) return MatMulFloat(w, x, x_stride, n_tokens, y, y_stride, pool, scratch);
  // Odd widths of the float types and the types without an integer kernel.
  const quant::DequantizeFn decode = quant::GetDequantizer(w.type);
  const DotFn dot = g_dot;
  pool.ParallelFor(w.rows, [&](int thread, int64_t begin, int64_t end) {
    float* row = scratch.row(thread);
    for (int64_t r = begin; r < end; ++r) {
      const float* wr = row;
      if (w.type == quant::TensorType::kF32) {
        wr = reinterpret_cast<const float*>(w.data + r * row_bytes);
      } else {
        decode(w.data + r * row_bytes, cols, row);
      }
      for (int t = 0; t < n_tokens; ++t) y[t * y_stride + r] = dot(wr, x + t * x_stride, cols);
    }
  }, work, kSerialMatMulWork);
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void Softmax(float* x, int64_t n) {
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = std::max(max, x[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

float GeluTanh(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

}  // namespace ferry::cpu
