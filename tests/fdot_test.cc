// Float group kernels (f32, f16, bf16): every kernel bit for bit against the
// reference order written out here, and the matrix product the same in
// either layout and at every token count.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/backend/cpu/fdot.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/qdot.h"
#include "engine/quant/quantize.h"

namespace ferry::cpu {
namespace {

using quant::TensorType;

// fdot.h's order: per row and token, an fma chain over the even columns and
// one over the odd ones, then even + odd.
float ReferenceDot(const float* w, const float* x, int64_t n) {
  float even = 0.0f, odd = 0.0f;
  for (int64_t p = 0; p < n / 2; ++p) {
    even = std::fma(w[2 * p], x[2 * p], even);
    odd = std::fma(w[2 * p + 1], x[2 * p + 1], odd);
  }
  return even + odd;
}

struct Rows {
  std::vector<uint8_t> bytes;  // the file's layout
  std::vector<float> values;   // decoded
  uint64_t row_bytes;
};

Rows RandomRows(TensorType type, int rows, int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(rows * n);
  for (float& f : v) f = normal(rng);
  Rows out;
  out.row_bytes = *quant::RowBytes(type, n);
  out.bytes.resize(out.row_bytes * rows);
  out.values.resize(v.size());
  for (int r = 0; r < rows; ++r) {
    EXPECT_TRUE(quant::QuantizeRow(type, std::span(v).subspan(r * n, n),
                                   std::span(out.bytes).subspan(r * out.row_bytes, out.row_bytes))
                    .ok());
    EXPECT_TRUE(quant::DequantizeRow(type, std::span(out.bytes).subspan(r * out.row_bytes, out.row_bytes),
                                     std::span(out.values).subspan(r * n, n))
                    .ok());
  }
  return out;
}

std::vector<std::pair<const char*, FloatGroupDotFn>> Kernels(TensorType type) {
  std::vector<std::pair<const char*, FloatGroupDotFn>> k = {{"scalar", GetFloatGroupDot(type, false)}};
  if (CpuHasAvx2()) k.emplace_back("avx2", GetFloatGroupDotAvx2(type));
  if (CpuHasAvx512()) k.emplace_back("avx512", GetFloatGroupDotAvx512(type));
  return k;
}

class FloatGroups : public ::testing::TestWithParam<TensorType> {};

// Every token count up to kFloatSpan (several tiles, odd counts, sub-tiles
// of every size), one group and two, and widths of one partial column
// block and of several blocks with a partial last one (the AVX-512 kernel
// takes 128 column pairs a block).
TEST_P(FloatGroups, EveryKernelGivesTheReferenceOrderBitForBit) {
  const TensorType type = GetParam();
  std::mt19937 rng(41);
  for (const int64_t n : {int64_t{2 * 3 * 37}, int64_t{2 * (2 * 128 + 37)}}) {  // even, not a multiple of any vector
    const Rows rows = RandomRows(type, 2 * kGroupRows, n, rng);
    const uint64_t group_bytes = FloatGroupBytes(type, n);
    ASSERT_EQ(group_bytes, kGroupRows * rows.row_bytes);
    std::vector<uint8_t> groups(2 * group_bytes);
    for (int g = 0; g < 2; ++g) {
      GroupFloatRows(type, rows.bytes.data() + g * kGroupRows * rows.row_bytes, rows.row_bytes, n,
                     groups.data() + g * group_bytes);
    }
    // The rows widened to f32 groups, as the file layout's rows go through the f32 kernel.
    std::vector<float> widened(2 * kGroupRows * n);
    for (int g = 0; g < 2; ++g) {
      GroupFloatRowsAsF32(type, rows.bytes.data() + g * kGroupRows * rows.row_bytes, rows.row_bytes, kGroupRows, n,
                          widened.data() + g * kGroupRows * n);
    }
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t x_stride = n + 6;
    std::vector<float> x(kFloatSpan * x_stride);
    for (float& v : x) v = normal(rng);
    // want[(row * kFloatSpan + t)]: row of the 16, token t.
    std::vector<float> want(2 * kGroupRows * kFloatSpan);
    for (int row = 0; row < 2 * kGroupRows; ++row) {
      for (int t = 0; t < kFloatSpan; ++t) {
        want[row * kFloatSpan + t] = ReferenceDot(&rows.values[row * n], &x[t * x_stride], n);
      }
    }
    int compared = 0;
    for (int nt = 1; nt <= kFloatSpan; ++nt) {
      // As cpu::MatMul lays them out: tile after tile.
      std::vector<float> xt(kFloatSpan * n, NAN);
      for (int t0 = 0; t0 < nt; t0 += kFloatTile) {
        PairTokens(x.data() + t0 * x_stride, x_stride, std::min(kFloatTile, nt - t0), n, xt.data() + t0 * n);
      }
      for (int n_groups = 1; n_groups <= 2; ++n_groups) {
        std::vector<std::pair<std::string, std::vector<float>>> got;
        for (const auto& [isa, kernel] : Kernels(type)) {
          std::vector<float> out(2 * kFloatSpan * kGroupRows);
          kernel(groups.data(), group_bytes, n_groups, xt.data(), nt, n, out.data());
          got.emplace_back(std::string(isa), out);
        }
        for (const auto& [isa, kernel] : Kernels(TensorType::kF32)) {
          std::vector<float> out(2 * kFloatSpan * kGroupRows);
          kernel(reinterpret_cast<const uint8_t*>(widened.data()), kGroupRows * n * sizeof(float), n_groups,
                 xt.data(), nt, n, out.data());
          got.emplace_back(std::string(isa) + " widened to f32", out);
        }
        for (const auto& [isa, out] : got) {
          for (int g = 0; g < n_groups; ++g) {
            for (int t = 0; t < nt; ++t) {
              for (int r = 0; r < kGroupRows; ++r, ++compared) {
                const float w = want[(g * kGroupRows + r) * kFloatSpan + t];
                const float v = out[(g * nt + t) * kGroupRows + r];
                ASSERT_EQ(std::bit_cast<uint32_t>(v), std::bit_cast<uint32_t>(w))
                    << isa << ": n " << n << ", group " << g << " of " << n_groups << ", token " << t << " of " << nt
                    << ", row " << r << ": " << v << " vs " << w;
              }
            }
          }
        }
      }
    }
    EXPECT_GT(compared, 0);
  }
}

// The reference order itself is a dot product: within a few ulps of the
// magnitudes against double precision.
TEST_P(FloatGroups, ReferenceOrderIsADotProduct) {
  std::mt19937 rng(3);
  const int64_t n = 4096;
  const Rows rows = RandomRows(GetParam(), 1, n, rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  double want = 0, mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    want += static_cast<double>(rows.values[i]) * x[i];
    mag += std::fabs(static_cast<double>(rows.values[i]) * x[i]);
  }
  EXPECT_NEAR(ReferenceDot(rows.values.data(), x.data(), n), want, 1e-5 * mag);
}

// cpu::MatMul on a matrix in the grouped layout (with rows past the last
// group) and in the file's, at token counts across the tile size: the same
// bits, and each token's as when it is alone.
TEST_P(FloatGroups, MatMulIsTheSameInEitherLayoutAndAnyBatch) {
  const TensorType type = GetParam();
  std::mt19937 rng(8);
  const int64_t n = 2 * 150, n_rows = 3 * kGroupRows + 5;  // two column blocks (fdot_simd.inc)
  const Rows rows = RandomRows(type, n_rows, n, rng);
  const uint64_t group_bytes = FloatGroupBytes(type, n);
  std::vector<uint8_t> grouped(3 * group_bytes + 5 * rows.row_bytes);
  for (int g = 0; g < 3; ++g) {
    GroupRows(type, rows.bytes.data() + g * kGroupRows * rows.row_bytes, rows.row_bytes, n,
              grouped.data() + g * group_bytes);
  }
  std::memcpy(grouped.data() + 3 * group_bytes, rows.bytes.data() + 3 * kGroupRows * rows.row_bytes,
              5 * rows.row_bytes);
  model::Matrix file{rows.bytes.data(), type, n, n_rows, rows.bytes.size(), "file"};
  model::Matrix in_place = file;
  in_place.data = grouped.data();
  in_place.group_bytes = group_bytes;
  const int max_tokens = kFloatSpan + kFloatTile + 3;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(max_tokens * n);
  for (float& v : x) v = normal(rng);
  ThreadPool pool(2);
  MatMulScratch scratch(pool.size(), n, max_tokens);
  std::vector<float> alone(max_tokens * n_rows);
  for (int t = 0; t < max_tokens; ++t) {
    MatMul(file, x.data() + t * n, n, 1, alone.data() + t * n_rows, n_rows, pool, scratch);
    for (int r = 0; r < n_rows; ++r) {
      const float want = ReferenceDot(&rows.values[r * n], &x[t * n], n);
      ASSERT_EQ(std::bit_cast<uint32_t>(alone[t * n_rows + r]), std::bit_cast<uint32_t>(want)) << "token " << t;
    }
  }
  for (int tokens : {1, 2, 5, kFloatTile, kFloatTile + 1, kFloatSpan, max_tokens}) {
    for (const model::Matrix* m : {&file, &in_place}) {
      std::vector<float> y(tokens * n_rows, NAN);
      MatMul(*m, x.data(), n, tokens, y.data(), n_rows, pool, scratch);
      EXPECT_EQ(std::memcmp(y.data(), alone.data(), y.size() * sizeof(float)), 0)
          << m->name << " layout, " << tokens << " tokens";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, FloatGroups, ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

}  // namespace
}  // namespace ferry::cpu
