// Integer dot-product kernels: scalar and SIMD versions against the float
// dot product of the decoded weights with the decoded 8-bit activations.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/qdot.h"
#include "engine/quant/half.h"
#include "engine/quant/quantize.h"

namespace ferry::cpu {
namespace {

using quant::TensorType;

class QDot : public ::testing::TestWithParam<TensorType> {};

TEST_P(QDot, ScalarAndSimdEqualTheDecodedFloatDot) {
  const TensorType type = GetParam();
  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int n = 256 * 8 + (quant::Info(type).block_elems == 32 ? 32 : 0);  // odd block count too
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

// Every type with an integer kernel.
constexpr TensorType kIntegerTypes[] = {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0,
                                        TensorType::kQ5_1, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K};

INSTANTIATE_TEST_SUITE_P(Types, QDot, ::testing::ValuesIn(kIntegerTypes),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

TEST(QuantizeActivations, SimdGivesTheScalarBytes) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(32 * 64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = normal(rng) * std::pow(10.0f, static_cast<float>(i / 32 % 9) - 4.0f);
  std::fill_n(x.begin() + 32 * 3, 32, 0.0f);                    // an all-zero block
  x[32 * 5 + 7] = std::numeric_limits<float>::quiet_NaN();       // non-finite blocks
  x[32 * 6 + 31] = -std::numeric_limits<float>::infinity();
  // d = 1, id = 1: every other value is a tie (k + 0.5), rounded to even.
  for (int i = 0; i < 32; ++i) x[32 * 8 + i] = i == 0 ? 127.0f : static_cast<float>(i - 16) + 0.5f;
  std::vector<BlockQ8> simd(64), scalar(64);
  QuantizeActivations(x.data(), x.size(), simd.data());
  QuantizeActivationsScalar(x.data(), x.size(), scalar.data());
  for (int b = 0; b < 64; ++b) {
    EXPECT_EQ(std::memcmp(simd[b].qs, scalar[b].qs, 32), 0) << "block " << b;
    EXPECT_EQ(simd[b].hsum[0], scalar[b].hsum[0]) << "block " << b;
    EXPECT_EQ(simd[b].hsum[1], scalar[b].hsum[1]) << "block " << b;
    EXPECT_EQ(std::bit_cast<uint32_t>(simd[b].d), std::bit_cast<uint32_t>(scalar[b].d)) << "block " << b;
  }
  EXPECT_TRUE(std::isnan(simd[5].d));
}

TEST(QuantizeActivations, WithinHalfAStepAndSumsMatch) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(32 * 16);
  for (float& v : x) v = normal(rng);
  std::vector<BlockQ8> q(16);
  QuantizeActivations(x.data(), x.size(), q.data());
  for (int b = 0; b < 16; ++b) {
    int s[2] = {0, 0};
    for (int i = 0; i < 32; ++i) {
      EXPECT_LE(std::fabs(q[b].d * q[b].qs[i] - x[b * 32 + i]), q[b].d * 0.5f + 1e-6f);
      s[i / 16] += q[b].qs[i];
    }
    EXPECT_EQ(q[b].hsum[0], s[0]);
    EXPECT_EQ(q[b].hsum[1], s[1]);
    EXPECT_EQ(q[b].isum(), s[0] + s[1]);
  }
}

}  // namespace
}  // namespace ferry::cpu

namespace ferry::cpu {
namespace {

// Rows of random bytes (every bit pattern of the weights, q8_0's -128
// included) with finite scales: d (and q4_K's dmin, q4_1's m) set to
// +-[0.5, 2).
std::vector<uint8_t> RandomRows(quant::TensorType type, int rows, int64_t n, std::mt19937& rng) {
  const uint64_t row_bytes = *quant::RowBytes(type, n);
  std::vector<uint8_t> data(row_bytes * rows);
  for (uint8_t& b : data) b = static_cast<uint8_t>(rng());
  const quant::TypeInfo info = quant::Info(type);
  std::uniform_real_distribution<float> scale(0.5f, 2.0f);
  for (uint64_t at = 0; at < data.size(); at += info.block_bytes) {
    // Where the f16 scales are: d (and dmin) first, q6_K's d last.
    const bool two = type == quant::TensorType::kQ4_K || type == quant::TensorType::kQ5_K ||
                     type == quant::TensorType::kQ4_1 || type == quant::TensorType::kQ5_1;
    const uint64_t first = type == quant::TensorType::kQ6_K ? info.block_bytes - 2 : 0;
    for (int k = 0; k < (two ? 2 : 1); ++k) {
      const uint16_t h = quant::FloatToHalf(scale(rng) * (rng() % 2 ? 1.0f : -1.0f));
      std::memcpy(&data[at + first + 2 * k], &h, 2);
    }
  }
  return data;
}

std::vector<std::pair<const char*, QDotFn>> RowKernels(quant::TensorType type) {
  std::vector<std::pair<const char*, QDotFn>> k = {{"scalar", GetQDot(type, false)}};
  if (CpuHasAvx2()) k.emplace_back("avx2", GetQDotAvx2(type));
  if (CpuHasVnni()) k.emplace_back("vnni", GetQDotVnni(type));
  return k;
}

std::vector<std::pair<const char*, GroupDotFn>> GroupKernels(quant::TensorType type) {
  std::vector<std::pair<const char*, GroupDotFn>> k = {{"scalar", GetGroupDot(type, false)}};
  if (CpuHasAvx2()) k.emplace_back("avx2", GetGroupDotAvx2(type));
  if (CpuHasVnni()) k.emplace_back("vnni", GetGroupDotVnni(type));
  return k;
}

// Every kernel of a type, file layout or grouped, scalar or SIMD, at every
// token count, gives the scalar file-layout kernel's result bit for bit.
class Grouped : public ::testing::TestWithParam<quant::TensorType> {};

TEST_P(Grouped, EveryKernelGivesTheScalarRowResultBitForBit) {
  const quant::TensorType type = GetParam();
  std::mt19937 rng(29);
  const int64_t n = 256 * 3;
  const uint64_t row_bytes = *quant::RowBytes(type, n);
  const std::vector<uint8_t> rows = RandomRows(type, kGroupRows, n, rng);
  std::vector<uint8_t> group(GroupBytes(type, n));
  GroupRows(type, rows.data(), row_bytes, n, group.data());

  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<BlockQ8>> acts(kQDotTile, std::vector<BlockQ8>(n / 32));
  const BlockQ8* xs[kQDotTile];
  for (int t = 0; t < kQDotTile; ++t) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) * (t % 2 ? 5.0f : 0.2f);
    QuantizeActivations(x.data(), n, acts[t].data());
    xs[t] = acts[t].data();
  }
  float want[kGroupRows][kQDotTile];
  for (int r = 0; r < kGroupRows; ++r) GetQDot(type, false)(rows.data() + r * row_bytes, xs, kQDotTile, n, want[r]);

  int compared = 0;
  for (int nt = 1; nt <= kQDotTile; ++nt) {
    for (const auto& [isa, kernel] : RowKernels(type)) {
      for (int r = 0; r < kGroupRows; ++r) {
        float got[kQDotTile];
        kernel(rows.data() + r * row_bytes, xs, nt, n, got);
        for (int t = 0; t < nt; ++t, ++compared) {
          EXPECT_EQ(std::bit_cast<uint32_t>(got[t]), std::bit_cast<uint32_t>(want[r][t]))
              << "row kernel " << isa << " row " << r << " token " << t << " of " << nt << ": " << got[t] << " vs "
              << want[r][t];
        }
      }
    }
    for (const auto& [isa, kernel] : GroupKernels(type)) {
      float got[kQDotTile * kGroupRows];
      kernel(group.data(), xs, nt, n, got);
      for (int t = 0; t < nt; ++t) {
        for (int r = 0; r < kGroupRows; ++r, ++compared) {
          EXPECT_EQ(std::bit_cast<uint32_t>(got[t * kGroupRows + r]), std::bit_cast<uint32_t>(want[r][t]))
              << "group kernel " << isa << " row " << r << " token " << t << " of " << nt << ": "
              << got[t * kGroupRows + r] << " vs " << want[r][t];
        }
      }
    }
  }
  EXPECT_GT(compared, 0);
}

INSTANTIATE_TEST_SUITE_P(Types, Grouped, ::testing::ValuesIn(kIntegerTypes),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

// Two groups of random rows: the rows in the file's layout and the same rows
// as two adjacent groups, what the pair kernels (VNNI, AMX) take.
struct GroupPair {
  std::vector<uint8_t> rows, pair;
  uint64_t row_bytes, group_bytes;
};
GroupPair RandomGroupPair(quant::TensorType type, int64_t n, std::mt19937& rng) {
  GroupPair p{RandomRows(type, 2 * kGroupRows, n, rng), {}, *quant::RowBytes(type, n), GroupBytes(type, n)};
  p.pair.resize(2 * p.group_bytes);
  for (int g = 0; g < 2; ++g) {
    GroupRows(type, p.rows.data() + g * kGroupRows * p.row_bytes, p.row_bytes, n, p.pair.data() + g * p.group_bytes);
  }
  return p;
}

// The 512-bit kernels for two groups and a token or two (the 32-element
// types, where the CPU has AVX-512 VNNI): the scalar row kernel's bits.
class Pair : public ::testing::TestWithParam<quant::TensorType> {};

TEST_P(Pair, GivesTheScalarRowResultBitForBit) {
  const quant::TensorType type = GetParam();
  if (GetGroupPairDot(type) == nullptr) GTEST_SKIP() << "no AVX-512 VNNI and BW on this CPU";
  std::mt19937 rng(43);
  const int64_t n = 256 * 3, blocks = n / 32;
  const auto [rows, pair, row_bytes, group_bytes] = RandomGroupPair(type, n, rng);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<BlockQ8> act(kPairMaxTokens * blocks);
  const BlockQ8* xs[kPairMaxTokens];
  for (int t = 0; t < kPairMaxTokens; ++t) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) * (t % 2 ? 3.0f : 0.2f);
    QuantizeActivations(x.data(), n, act.data() + t * blocks);
    xs[t] = act.data() + t * blocks;
  }
  int compared = 0;
  for (int nt = 1; nt <= kPairMaxTokens; ++nt) {
    std::vector<float> out(nt * 2 * kGroupRows, NAN);
    GetGroupPairDot(type)(pair.data(), group_bytes, xs, nt, n, out.data());
    for (int t = 0; t < nt; ++t) {
      for (int r = 0; r < 2 * kGroupRows; ++r, ++compared) {
        float want;
        GetQDot(type, false)(rows.data() + r * row_bytes, &xs[t], 1, n, &want);
        ASSERT_EQ(std::bit_cast<uint32_t>(out[t * 2 * kGroupRows + r]), std::bit_cast<uint32_t>(want))
            << nt << " tokens: token " << t << " row " << r;
      }
    }
  }
  EXPECT_GT(compared, 0);
}

INSTANTIATE_TEST_SUITE_P(Types, Pair,
                         ::testing::Values(quant::TensorType::kQ8_0, quant::TensorType::kQ4_0, quant::TensorType::kQ4_1,
                                           quant::TensorType::kQ5_0, quant::TensorType::kQ5_1),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

// The AMX kernel, two groups at a time, at token counts around its tile of
// 16: the scalar row kernel's results bit for bit.
TEST_P(Grouped, AmxGivesTheScalarRowResultBitForBit) {
  if (!CpuHasAmx()) GTEST_SKIP() << "no AMX-INT8 on this CPU (or the kernel refuses the tile state)";
  const quant::TensorType type = GetParam();
  std::mt19937 rng(31);
  const int64_t n = 256 * 3, blocks = n / 32;
  const auto [rows, pair, row_bytes, group_bytes] = RandomGroupPair(type, n, rng);
  constexpr int kMaxTokens = 2 * kAmxTokens + 3;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<BlockQ8> act(kMaxTokens * blocks);
  for (int t = 0; t < kMaxTokens; ++t) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng) * (t % 3 ? 4.0f : 0.3f);
    QuantizeActivations(x.data(), n, act.data() + t * blocks);
  }
  std::vector<uint8_t> panel(AmxPanelBytes(n)), tokens(AmxTokenBytes(kMaxTokens, n));
  int compared = 0;
  for (int nt : {1, 7, kAmxTokens, kAmxTokens + 1, kMaxTokens}) {
    std::vector<float> y(nt * 2 * kGroupRows, NAN);
    PackAmxTokens(act.data(), nt, n, tokens.data());
    GetAmxPairDot(type)(pair.data(), group_bytes, tokens.data(), nt, n, panel.data(), y.data(), 2 * kGroupRows);
    for (int t = 0; t < nt; ++t) {
      const BlockQ8* xs[1] = {act.data() + t * blocks};
      for (int r = 0; r < 2 * kGroupRows; ++r, ++compared) {
        float want;
        GetQDot(type, false)(rows.data() + r * row_bytes, xs, 1, n, &want);
        ASSERT_EQ(std::bit_cast<uint32_t>(y[t * 2 * kGroupRows + r]), std::bit_cast<uint32_t>(want))
            << nt << " tokens: token " << t << " row " << r << ": " << y[t * 2 * kGroupRows + r] << " vs " << want;
      }
    }
  }
  EXPECT_GT(compared, 0);
}

// cpu::MatMul on a matrix in the grouped layout with an odd number of
// groups and rows past the last one, and in the file's: every token count
// (AMX from 16 tokens where the CPU has it, the group and row kernels
// otherwise and for the rows AMX leaves) gives each token's result alone.
TEST_P(Grouped, MatMulIsTheSameInEitherLayoutAndAnyBatch) {
  const quant::TensorType type = GetParam();
  std::mt19937 rng(12);
  const int64_t n = 256 * 2, n_rows = 5 * kGroupRows + 3;
  const uint64_t row_bytes = *quant::RowBytes(type, n), group_bytes = GroupBytes(type, n);
  const std::vector<uint8_t> rows = RandomRows(type, n_rows, n, rng);
  std::vector<uint8_t> grouped(5 * group_bytes + 3 * row_bytes);
  for (int g = 0; g < 5; ++g) {
    GroupRows(type, rows.data() + g * kGroupRows * row_bytes, row_bytes, n, grouped.data() + g * group_bytes);
  }
  std::memcpy(grouped.data() + 5 * group_bytes, rows.data() + 5 * kGroupRows * row_bytes, 3 * row_bytes);
  model::Matrix file{rows.data(), type, n, n_rows, rows.size(), "file"};
  model::Matrix in_place = file;
  in_place.data = grouped.data();
  in_place.group_bytes = group_bytes;
  constexpr int kMaxTokens = 2 * kAmxTokens + 9;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(kMaxTokens * n);
  for (float& v : x) v = normal(rng);
  ThreadPool pool(2);
  MatMulScratch scratch(pool.size(), n, kMaxTokens);
  std::vector<float> alone(kMaxTokens * n_rows);
  for (int t = 0; t < kMaxTokens; ++t) MatMul(file, x.data() + t * n, n, 1, alone.data() + t * n_rows, n_rows, pool, scratch);
  for (const model::Matrix* m : {&file, &in_place}) {  // no tokens: nothing read or written
    std::vector<float> y(n_rows, NAN);
    MatMul(*m, x.data(), n, 0, y.data(), n_rows, pool, scratch);
    EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](float v) { return std::isnan(v); })) << m->name << " layout, 0 tokens";
  }
  for (int tokens : {1, 2, 3, kQDotTile + 1, kAmxTokens, kAmxTokens + 1, kMaxTokens}) {
    for (const model::Matrix* m : {&file, &in_place}) {
      std::vector<float> y(tokens * n_rows, NAN);
      MatMul(*m, x.data(), n, tokens, y.data(), n_rows, pool, scratch);
      EXPECT_EQ(std::memcmp(y.data(), alone.data(), y.size() * sizeof(float)), 0)
          << m->name << " layout, " << tokens << " tokens";
    }
  }
}

TEST(Grouped, GroupBytes) {
  // q4_0 and q8_0 groups are the 8 rows' bytes; q4_K adds 32 per super-block.
  EXPECT_EQ(GroupBytes(quant::TensorType::kQ4_0, 4096), 8 * *quant::RowBytes(quant::TensorType::kQ4_0, 4096));
  EXPECT_EQ(GroupBytes(quant::TensorType::kQ8_0, 4096), 8 * *quant::RowBytes(quant::TensorType::kQ8_0, 4096));
  EXPECT_EQ(GroupBytes(quant::TensorType::kQ4_K, 4096), 8 * *quant::RowBytes(quant::TensorType::kQ4_K, 4096) + 16 * 32);
  EXPECT_EQ(GroupBytes(quant::TensorType::kQ5_K, 4096), 8 * *quant::RowBytes(quant::TensorType::kQ5_K, 4096) + 16 * 32);
  EXPECT_EQ(GroupBytes(quant::TensorType::kQ6_K, 4096), 8 * *quant::RowBytes(quant::TensorType::kQ6_K, 4096));
  for (quant::TensorType t : {quant::TensorType::kQ4_1, quant::TensorType::kQ5_0, quant::TensorType::kQ5_1}) {
    EXPECT_EQ(GroupBytes(t, 4096), 8 * *quant::RowBytes(t, 4096)) << quant::Info(t).name;
  }
  // The float types' groups (fdot.h): exactly the 8 rows, for even widths.
  EXPECT_EQ(GroupBytes(quant::TensorType::kF16, 4096), 8 * *quant::RowBytes(quant::TensorType::kF16, 4096));
  EXPECT_EQ(GroupBytes(quant::TensorType::kBF16, 4095), 0u);
  EXPECT_FALSE(HasGroupedLayout(quant::TensorType::kQ2_K));
}

}  // namespace
}  // namespace ferry::cpu
