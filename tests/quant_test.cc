// Half and bfloat16 conversions against independent references (the CPU's
// F16C instructions; exact double arithmetic), and the Q8_0 quantizer.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>

#include "engine/quant/blocks.h"
#include "engine/quant/int8_blocks.h"
#include "engine/quant/half.h"
#include "engine/quant/quantize.h"
#include "engine/quant/types.h"

namespace ferry::quant {
namespace {

__attribute__((target("f16c"))) uint16_t HardwareFloatToHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float HardwareHalfToFloat(uint16_t h) { return _cvtsh_ss(h); }

bool SameFloat(float a, float b) { return FloatBits(a) == FloatBits(b) || (std::isnan(a) && std::isnan(b)); }

TEST(Half, EveryHalfDecodesLikeF16C) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "this CPU has no F16C instructions to compare with";
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const float want = HardwareHalfToFloat(static_cast<uint16_t>(h));
    ASSERT_TRUE(SameFloat(HalfToFloat(static_cast<uint16_t>(h)), want)) << "half 0x" << std::hex << h;
  }
}

TEST(Half, EncodingMatchesF16COnEdgesAndRandomFloats) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "this CPU has no F16C instructions to compare with";
  std::vector<float> cases = {0.0f, -0.0f, 1.0f, 65504.0f, 65519.99f, 65520.0f, 1e-8f, 2.98e-8f, 2.9802322e-8f,
                              5.96e-8f, 6.1e-5f, 6.097555e-5f, INFINITY, -INFINITY, 1e30f, -1e-30f};
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite half and the midpoints next to it
    const float f = HardwareHalfToFloat(static_cast<uint16_t>(h));
    cases.push_back(f);
    cases.push_back(std::nextafter(f, INFINITY));
    cases.push_back(std::nextafter(f, -INFINITY));
    const float next = HardwareHalfToFloat(static_cast<uint16_t>(h + 1));
    cases.push_back(-(f + (next - f) / 2));  // exact tie
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) cases.push_back(BitsFloat(rng()));
  for (float f : cases) {
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f))));
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), HardwareFloatToHalf(f)) << "float " << f << " bits 0x" << std::hex << FloatBits(f);
  }
}

// bfloat16 reference: pick the nearer of the two neighbouring bf16 values in
// double arithmetic, ties to the even one.
uint16_t ReferenceBf16(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t lo = static_cast<uint16_t>(u >> 16);  // truncated toward zero
  const uint16_t hi = static_cast<uint16_t>(lo + 1);   // next magnitude up
  if ((u & 0xffff) == 0) return lo;
  const double x = std::fabs(static_cast<double>(f));
  const double a = std::fabs(static_cast<double>(Bf16ToFloat(lo)));
  // Past the largest finite bf16 the next step is 2^128 (infinity).
  const double b = (hi & 0x7f80) == 0x7f80 ? std::ldexp(1.0, 128) : std::fabs(static_cast<double>(Bf16ToFloat(hi)));
  if (x - a < b - x) return lo;
  if (b - x < x - a) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16, RoundsToNearestEven) {
  std::mt19937 rng(11);
  for (int i = 0; i < 2000000; ++i) {
    const float f = BitsFloat(rng());
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(f))));
      continue;
    }
    ASSERT_EQ(FloatToBf16(f), ReferenceBf16(f)) << std::hex << FloatBits(f);
  }
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.0f)), 1.0f);
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f818000u)), 0x3f82);  // tie -> even (up)
}

TEST(Q8_0, QuantizesWithinHalfAStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  const int n = 32 * 64;
  std::vector<float> x(n), y(n);
  for (float& v : x) v = normal(rng);
  x[5] = 0.0f;
  std::fill(x.begin() + 64, x.begin() + 96, 0.0f);  // an all-zero block
  std::vector<uint8_t> q(*RowBytes(TensorType::kQ8_0, n));
  ASSERT_EQ(q.size(), 64u * 34u);
  ASSERT_TRUE(QuantizeRow(TensorType::kQ8_0, x, q).ok());
  ASSERT_TRUE(DequantizeRow(TensorType::kQ8_0, q, y).ok());
  for (int b = 0; b < 64; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + i]));
    uint16_t d_half;
    std::memcpy(&d_half, &q[b * 34], 2);
    const float d = HalfToFloat(d_half);
    EXPECT_NEAR(d, amax / 127.0f, amax / 127.0f * 1e-3f + 1e-30f);
    for (int i = 0; i < 32; ++i) {
      // Rounding to the nearest step: error at most d/2 (plus float slack).
      EXPECT_LE(std::fabs(y[b * 32 + i] - x[b * 32 + i]), d * 0.5f + 1e-6f * amax) << b << " " << i;
    }
  }
  EXPECT_EQ(y[70], 0.0f);
}

TEST(Quantize, RefusesWrongSizesAndUnavailableTypes) {
  std::vector<float> x(31);
  std::vector<uint8_t> q(34);
  EXPECT_FALSE(QuantizeRow(TensorType::kQ8_0, x, q).ok());
  x.resize(32);
  q.resize(33);
  EXPECT_FALSE(QuantizeRow(TensorType::kQ8_0, x, q).ok());
  q.resize(84);
  x.resize(256);
  EXPECT_EQ(QuantizeRow(TensorType::kQ2_K, x, q).code(), absl::StatusCode::kUnimplemented);
}

// Quantizer error per type on N(0,1) data, as RMS error over RMS value.
// Rounding to a grid of step s costs s/sqrt(12) RMS. Blocks of 32 normal
// values span about 4.1 sigma, so a 16-level grid (4-bit) has s ~ 0.27 and
// error ~ 0.08; 32 levels ~ 0.04; Q6_K's 64 levels over 16-value sub-blocks
// ~ 0.02; Q8_0's 255 levels ~ 0.005; f16 and bf16 relative rounding ~ 2^-11
// and 2^-8 of each value. The bounds add about 50% to those estimates.
struct ErrorBound {
  TensorType type;
  double max_nrmse;
};

class QuantizerError : public ::testing::TestWithParam<ErrorBound> {};

TEST_P(QuantizerError, WithinTheTypeBound) {
  const ErrorBound bound = GetParam();
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int n = 256 * 64;
  std::vector<float> x(n), y(n), z(n);
  for (float& v : x) v = normal(rng);
  std::fill(x.begin(), x.begin() + 256, 0.0f);  // an all-zero super-block decodes to zeros
  std::vector<uint8_t> q(*RowBytes(bound.type, n)), q2(q.size());
  ASSERT_TRUE(QuantizeRow(bound.type, x, q).ok());
  ASSERT_TRUE(DequantizeRow(bound.type, q, y).ok());
  double err = 0, ref = 0;
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(y[i]));
    err += (y[i] - x[i]) * (y[i] - x[i]);
    ref += x[i] * x[i];
  }
  const double nrmse = std::sqrt(err / ref);
  EXPECT_LT(nrmse, bound.max_nrmse) << Info(bound.type).name;
  RecordProperty("nrmse", std::to_string(nrmse));
  std::printf("%s nrmse %.5f (bound %.3f)\n", std::string(Info(bound.type).name).c_str(), nrmse, bound.max_nrmse);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(y[i], 0.0f);
  // Decoded values are on the grid: quantizing them again changes little.
  ASSERT_TRUE(QuantizeRow(bound.type, y, q2).ok());
  ASSERT_TRUE(DequantizeRow(bound.type, q2, z).ok());
  double drift = 0;
  for (int i = 0; i < n; ++i) drift += (z[i] - y[i]) * (z[i] - y[i]);
  EXPECT_LT(std::sqrt(drift / ref), bound.max_nrmse) << Info(bound.type).name;
}

INSTANTIATE_TEST_SUITE_P(
    Types, QuantizerError,
    ::testing::Values(ErrorBound{TensorType::kF32, 1e-12}, ErrorBound{TensorType::kF16, 1e-3},
                      ErrorBound{TensorType::kBF16, 6e-3}, ErrorBound{TensorType::kQ8_0, 0.008},
                      ErrorBound{TensorType::kQ4_0, 0.12}, ErrorBound{TensorType::kQ4_1, 0.12},
                      ErrorBound{TensorType::kQ5_0, 0.06}, ErrorBound{TensorType::kQ5_1, 0.06},
                      ErrorBound{TensorType::kQ4_K, 0.12}, ErrorBound{TensorType::kQ5_K, 0.06},
                      ErrorBound{TensorType::kQ6_K, 0.03}),
    [](const auto& info) { return std::string(Info(info.param.type).name); });

// The GPU kernels decode 32 values at a time (DecodeSub); the CPU decodes
// whole blocks. Random bytes (finite scales) must decode to the same bits.
// Random bytes with finite scales (a NaN would compare unequal however decoded).
template <typename Block>
Block RandomBlock(std::mt19937& rng) {
  Block b;
  auto* bytes = reinterpret_cast<uint8_t*>(&b);
  for (size_t i = 0; i < sizeof(b); ++i) bytes[i] = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> scale(-2.0f, 2.0f);
  uint16_t* first = reinterpret_cast<uint16_t*>(&b);
  if constexpr (std::is_same_v<Block, BlockQ6_K>) {
    b.d = FloatToHalf(scale(rng));
  } else {
    first[0] = FloatToHalf(scale(rng));
    if constexpr (sizeof(Block) != sizeof(BlockQ4_0) && sizeof(Block) != sizeof(BlockQ5_0) &&
                  sizeof(Block) != sizeof(BlockQ8_0)) {
      first[1] = FloatToHalf(scale(rng));
    }
  }
  return b;
}

template <typename Block>
void ExpectSubBlocksMatchTheBlock(int elems, std::mt19937& rng) {
  for (int trial = 0; trial < 200; ++trial) {
    const Block b = RandomBlock<Block>(rng);
    std::vector<float> whole(elems), subs(elems);
    DecodeBlock(b, whole.data());
    for (int s = 0; s < elems / 32; ++s) DecodeSub(b, s, subs.data() + 32 * s);
    for (int i = 0; i < elems; ++i) ASSERT_EQ(FloatBits(whole[i]), FloatBits(subs[i])) << "element " << i;
    // The 8-value ranges a GPU lane decodes, and ranges of other lengths.
    for (int len : {8, 1, 5, 32}) {
      std::vector<float> parts(elems, -1.0f);
      for (int s = 0; s < elems / 32; ++s) {
        for (int l0 = 0; l0 < 32; l0 += len) DecodeRange(b, s, l0, std::min(len, 32 - l0), parts.data() + 32 * s + l0);
      }
      for (int i = 0; i < elems; ++i) {
        ASSERT_EQ(FloatBits(whole[i]), FloatBits(parts[i])) << "element " << i << ", ranges of " << len;
      }
    }
  }
}

TEST(Blocks, SubBlockAndRangeDecodingEqualBlockDecodingBitForBit) {
  std::mt19937 rng(7);
  ExpectSubBlocksMatchTheBlock<BlockQ4_0>(32, rng);
  ExpectSubBlocksMatchTheBlock<BlockQ4_1>(32, rng);
  ExpectSubBlocksMatchTheBlock<BlockQ5_0>(32, rng);
  ExpectSubBlocksMatchTheBlock<BlockQ5_1>(32, rng);
  ExpectSubBlocksMatchTheBlock<BlockQ8_0>(32, rng);
  ExpectSubBlocksMatchTheBlock<BlockQ4_K>(256, rng);
  ExpectSubBlocksMatchTheBlock<BlockQ5_K>(256, rng);
  ExpectSubBlocksMatchTheBlock<BlockQ6_K>(256, rng);
}

// The int8 matvec's view of each format (int8_blocks.h, the code the GPU
// runs): a row of random blocks dotted with random int8 activations, sub-
// block by sub-block through Load() and Dot(), equals the decoded weights
// times the activations in double precision (to float rounding).
template <typename Block, typename Int8>
void ExpectInt8DotMatchesTheDecodedRow(int block_elems, std::mt19937& rng) {
  constexpr int kValues = 512;
  const int n_blocks = kValues / block_elems;
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<Block> row(n_blocks);
    std::vector<float> w(kValues);
    for (int b = 0; b < n_blocks; ++b) {
      row[b] = RandomBlock<Block>(rng);
      DecodeBlock(row[b], w.data() + b * block_elems);
    }
    std::vector<int8_t> q(kValues);
    for (int8_t& v : q) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
    std::uniform_real_distribution<float> scale(0.001f, 0.1f);
    double want = 0, magnitude = 0;
    float got = 0;
    for (int s = 0; s < kValues / 32; ++s) {
      const float dx = scale(rng);
      int32_t x[8], isum = 0;
      std::memcpy(x, q.data() + 32 * s, 32);
      for (int i = 0; i < 32; ++i) {
        isum += q[32 * s + i];
        const double term = static_cast<double>(w[32 * s + i]) * dx * q[32 * s + i];
        want += term;
        magnitude += std::fabs(term);
      }
      typename Int8::W loaded;
      Int8::Load(reinterpret_cast<const uint8_t*>(row.data()), s, loaded);
      got += Int8::Dot(loaded, x, dx, isum);
    }
    ASSERT_NEAR(got, want, 1e-5 * magnitude) << "trial " << trial;
  }
}

TEST(Int8Blocks, DotEqualsTheDecodedRowTimesTheActivations) {
  std::mt19937 rng(11);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ8_0, Int8Q8_0>(32, rng);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ4_0, Int8Q4_0>(32, rng);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ4_1, Int8Qx1<false>>(32, rng);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ5_0, Int8Q5_0>(32, rng);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ5_1, Int8Qx1<true>>(32, rng);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ4_K, Int8K45<false>>(256, rng);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ5_K, Int8K45<true>>(256, rng);
  ExpectInt8DotMatchesTheDecodedRow<BlockQ6_K, Int8Q6_K>(256, rng);
}

TEST(Int8Blocks, ByteHelpersMatchTheDeviceIntrinsics) {
  // __vsubss4 saturates per byte; __dp4a multiplies signed bytes.
  EXPECT_EQ(Vsubss4(0x7F80050Fu, 0x01010A08u), 0x7E80FB07u);
  EXPECT_EQ(Vsubss4(0x00000080u, 0x00000001u), 0x00000080u);  // -128 - 1 saturates
  EXPECT_EQ(Dp4a(static_cast<int32_t>(0x02FF7F80u), static_cast<int32_t>(0x03020180u), 5),
            5 + (-128) * (-128) + 127 * 1 + (-1) * 2 + 2 * 3);
}

TEST(Types, TableIsConsistent) {
  for (const TypeInfo& info : AllTypes()) {
    EXPECT_EQ(FindType(static_cast<uint32_t>(info.type))->name, info.name);
    EXPECT_EQ(FindTypeByName(info.name)->type, info.type);
    EXPECT_EQ(*RowBytes(info.type, info.block_elems * 3), info.block_bytes * 3u);
    if (info.block_elems > 1) {
      EXPECT_FALSE(RowBytes(info.type, info.block_elems + 1).has_value());
    }
  }
  EXPECT_FALSE(FindType(4).has_value());  // retired q4_2
  EXPECT_FALSE(FindType(1000).has_value());
  EXPECT_EQ(FindTypeByName("Q4_K")->block_bytes, 144u);
}

}  // namespace
}  // namespace ferry::quant
