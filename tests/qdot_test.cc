// Integer dot-product kernels: scalar and SIMD versions against the float
// dot product of the decoded weights with the decoded 8-bit activations.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/backend/cpu/qdot.h"
#include "engine/quant/quantize.h"

namespace ferry::cpu {
namespace {

using quant::TensorType;

class QDot : public ::testing::TestWithParam<TensorType> {};

TEST_P(QDot, ScalarAndSimdEqualTheDecodedFloatDot) {
  const TensorType type = GetParam();
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int n = 256 * 8 + (GetParam() == TensorType::kQ4_0 || GetParam() == TensorType::kQ8_0 ? 32 : 0);  // odd block count too
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> w(n), x(n);
    for (float& v : w) v = normal(rng);
    for (float& v : x) v = normal(rng) * (trial % 2 ? 10.0f : 0.1f);
    std::vector<uint8_t> row(*quant::RowBytes(type, n));
    ASSERT_TRUE(quant::QuantizeRow(type, w, row).ok());
    std::vector<BlockQ8> xq(n / 32);
    QuantizeActivations(x.data(), n, xq.data());
    // The exact value both kernels approximate: decoded weights . decoded activations.
    std::vector<float> wd(n);
    ASSERT_TRUE(quant::DequantizeRow(type, row, wd).ok());
    double want = 0, mag = 0;
    for (int i = 0; i < n; ++i) {
      const double xd = static_cast<double>(xq[i / 32].d) * xq[i / 32].qs[i % 32];
      want += wd[i] * xd;
      mag += std::fabs(wd[i] * xd);
    }
    // Every kernel set this CPU can run: scalar, AVX2, AVX-512 VNNI.
    std::vector<std::pair<const char*, QDotFn>> kernels = {{"scalar", GetQDot(type, false)}};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      kernels.emplace_back("avx2", GetQDotAvx2(type));
    }
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
      kernels.emplace_back("vnni", GetQDotVnni(type));
    }
    for (const auto& [isa, kernel] : kernels) {
      // The same activations in every slot of a full tile, and a tile of one.
      const BlockQ8* xs[kQDotTile];
      for (const BlockQ8*& p : xs) p = xq.data();
      float got[kQDotTile];
      for (int nt : {1, kQDotTile}) {
        kernel(row.data(), xs, nt, n, got);
        for (int t = 0; t < nt; ++t) {
          // Only float rounding differs: a few ulps of the sum of magnitudes.
          EXPECT_NEAR(got[t], want, 1e-5 * mag) << quant::Info(type).name << " " << isa << " tile " << nt;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, QDot,
                         ::testing::Values(TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kQ6_K),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

TEST(QuantizeActivations, WithinHalfAStepAndSumsMatch) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(32 * 16);
  for (float& v : x) v = normal(rng);
  std::vector<BlockQ8> q(16);
  QuantizeActivations(x.data(), x.size(), q.data());
  for (int b = 0; b < 16; ++b) {
    int s = 0;
    for (int i = 0; i < 32; ++i) {
      EXPECT_LE(std::fabs(q[b].d * q[b].qs[i] - x[b * 32 + i]), q[b].d * 0.5f + 1e-6f);
      s += q[b].qs[i];
    }
    EXPECT_EQ(q[b].isum, s);
  }
}

}  // namespace
}  // namespace ferry::cpu

namespace ferry::cpu {
namespace {

// The 4-row register-blocked kernels against the single-row scalar kernel.
TEST(QDotRows, MatchTheSingleRowKernel) {
  for (quant::TensorType type : {quant::TensorType::kQ4_0, quant::TensorType::kQ8_0}) {
    std::vector<std::pair<const char*, QDotRowsFn>> kernels;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
      kernels.emplace_back("avx2", GetQDotRowsAvx2(type));
    }
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
      kernels.emplace_back("vnni", GetQDotRowsVnni(type));
    }
    if (kernels.empty()) GTEST_SKIP() << "this CPU has neither AVX2 nor AVX-512 VNNI";
    std::mt19937 rng(23);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int n = 32 * 37;
    const uint64_t row_bytes = *quant::RowBytes(type, n);
    std::vector<uint8_t> rows(row_bytes * kQDotRowsTile);
    std::vector<float> w(n);
    for (int r = 0; r < kQDotRowsTile; ++r) {
      for (float& v : w) v = normal(rng);
      ASSERT_TRUE(quant::QuantizeRow(type, w, std::span(rows).subspan(r * row_bytes, row_bytes)).ok());
    }
    std::vector<std::vector<BlockQ8>> acts(kQDotRowsTile, std::vector<BlockQ8>(n / 32));
    const BlockQ8* xs[kQDotTile];
    for (int t = 0; t < kQDotRowsTile; ++t) {
      std::vector<float> x(n);
      for (float& v : x) v = normal(rng);
      QuantizeActivations(x.data(), n, acts[t].data());
      xs[t] = acts[t].data();
    }
    for (const auto& [isa, kernel] : kernels) {
      for (int nt = 1; nt <= kQDotRowsTile; ++nt) {
        float out[kQDotRowsTile * kQDotRowsTile];
        kernel(rows.data(), row_bytes, xs, nt, n, out);
        for (int r = 0; r < kQDotRowsTile; ++r) {
          float want[kQDotTile];
          GetQDot(type, false)(rows.data() + r * row_bytes, xs, nt, n, want);
          for (int t = 0; t < nt; ++t) {
            EXPECT_NEAR(out[r * kQDotRowsTile + t], want[t], 1e-4f * (1.0f + std::fabs(want[t])))
                << quant::Info(type).name << " " << isa << " row " << r << " token " << t << " of " << nt;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace ferry::cpu
