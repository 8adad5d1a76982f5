// The cuda backend against the cpu backend and a double-precision
// reference. Every test that needs a GPU opens "cuda" first and skips with
// the reason when there is none (CI compiles all of this without a GPU;
// tests/gpu/run.sh runs it where one exists). The option parser and the
// no-device error run everywhere.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/cpu/qdot.h"
#include "engine/backend/cuda/options.h"
#include "engine/backend/device.h"
#include "engine/backend/scratch.h"
#include "engine/exec/forward.h"
#include "engine/quant/quantize.h"
#include "engine/quant/types.h"
#include "tests/in_memory_model.h"
#include "tests/reference_forward.h"
#include "tests/shared_models.h"
#include "tests/tiny_steps.h"

namespace ferry {
namespace {

using ::testing::HasSubstr;
using quant::TensorType;

#define FERRY_REQUIRE_CUDA(device)                                                         \
  std::unique_ptr<backend::Device> device;                                                 \
  {                                                                                        \
    auto opened = backend::OpenDevice("cuda:0,int8=0", 0);                                 \
    if (!opened.ok()) GTEST_SKIP() << "no GPU to run on: " << opened.status().message();   \
    device = std::move(*opened);                                                           \
  }

TEST(CudaOptions, ParsesIndexMemoryAndPoison) {
  auto o = backend::ParseCudaOptions("1,mem=8GiB,poison=1,int8=1");
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->index, 1);
  EXPECT_EQ(o->memory_bytes, 8ull << 30);
  EXPECT_TRUE(o->poison);
  EXPECT_TRUE(o->int8);
  o = backend::ParseCudaOptions("");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->index, 0);
  EXPECT_EQ(o->memory_bytes, 0u);
  EXPECT_TRUE(o->int8) << "the int8 matvec is the default";
  o = backend::ParseCudaOptions("int8=0");
  ASSERT_TRUE(o.ok());
  EXPECT_FALSE(o->int8);
  EXPECT_THAT(std::string(backend::ParseCudaOptions("x").status().message()), HasSubstr("device index"));
  EXPECT_THAT(std::string(backend::ParseCudaOptions("0,speed=9").status().message()), HasSubstr("unknown key 'speed'"));
  EXPECT_FALSE(backend::ParseCudaOptions("mem=0").ok());
  EXPECT_FALSE(backend::ParseCudaOptions("poison=2").ok());
  EXPECT_FALSE(backend::ParseCudaOptions("int8=yes").ok());
  EXPECT_TRUE(backend::ParseCudaOptions("").value().graphs);
  EXPECT_FALSE(backend::ParseCudaOptions("graphs=0").value().graphs);
  EXPECT_FALSE(backend::ParseCudaOptions("graphs=no").ok());
  EXPECT_TRUE(backend::ParseCudaOptions("").value().fuse);
  EXPECT_FALSE(backend::ParseCudaOptions("fuse=0").value().fuse);
  EXPECT_FALSE(backend::ParseCudaOptions("").value().int8_more) << "q4_1/q5_0/q5_1 int8 is off until a GPU run";
  EXPECT_TRUE(backend::ParseCudaOptions("int8_more=1").value().int8_more);
}

// Without a GPU (or without CUDA in the build) opening one is a clear
// error, never a crash; with one it describes the card.
TEST(CudaDevice, OpensOrSaysWhyNot) {
  auto d = backend::OpenDevice("cuda", 0);
  if (d.ok()) {
    EXPECT_THAT((*d)->Describe(), HasSubstr("cuda:0"));
    EXPECT_GT((*d)->capacity(), 0u);
    EXPECT_TRUE((*d)->health().ok());
    return;
  }
  EXPECT_TRUE(d.status().code() == absl::StatusCode::kFailedPrecondition ||
              d.status().code() == absl::StatusCode::kUnimplemented)
      << d.status();
  EXPECT_THAT(std::string(d.status().message()), ::testing::AnyOf(HasSubstr("no CUDA device"), HasSubstr("without CUDA")));
}

// Device buffers filled from and read back to host vectors.
struct OnDevice {
  backend::Device& d;
  std::vector<backend::DeviceBuffer> held;
  template <typename T>
  T* Put(const std::vector<T>& host) {
    held.push_back(*backend::DeviceBuffer::Make(d, std::max<size_t>(1, host.size()) * sizeof(T), "test"));
    d.CopyToDevice(backend::Queue::kCompute, held.back().bytes(), host.data(), host.size() * sizeof(T));
    return reinterpret_cast<T*>(held.back().bytes());
  }
  template <typename T>
  std::vector<T> Get(const T* p, size_t n) {
    std::vector<T> out(n);
    d.CopyToHost(out.data(), p, n * sizeof(T));
    return out;
  }
};

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The device spec for an int8 test of `type`: q4_1, q5_0 and q5_1 take the
// int8 matvec only with int8_more=1 (off by default until this suite has
// passed with them on a GPU).
std::string Int8Spec(const std::string& spec, TensorType type) {
  const bool more = type == TensorType::kQ4_1 || type == TensorType::kQ5_0 || type == TensorType::kQ5_1;
  return more ? spec + ",int8_more=1" : spec;
}

// max |a - b| / max |b|: the normalized error the tolerances are stated in.
double NormalizedError(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// A random matrix quantized to `type`, and its exact decoding.
struct QuantMatrix {
  std::vector<uint8_t> packed;
  std::vector<float> decoded;
};
QuantMatrix MakeMatrix(TensorType type, int64_t rows, int64_t cols) {
  const std::vector<float> w = Random(rows * cols, 1, 0.5f);
  const uint64_t row_bytes = *quant::RowBytes(type, cols);
  QuantMatrix m{std::vector<uint8_t>(rows * row_bytes), std::vector<float>(rows * cols)};
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_TRUE(quant::QuantizeRow(type, {w.data() + r * cols, static_cast<size_t>(cols)},
                                   {m.packed.data() + r * row_bytes, row_bytes}).ok());
    EXPECT_TRUE(quant::DequantizeRow(type, {m.packed.data() + r * row_bytes, row_bytes},
                                     {m.decoded.data() + r * cols, static_cast<size_t>(cols)}).ok());
  }
  return m;
}

// y (n x rows) = decoded x in double precision.
std::vector<float> Product(const QuantMatrix& m, int64_t rows, int64_t cols, const std::vector<double>& x, int n) {
  std::vector<float> y(n * rows);
  for (int t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += static_cast<double>(m.decoded[r * cols + c]) * x[t * cols + c];
      y[t * rows + r] = static_cast<float>(s);
    }
  }
  return y;
}

// The device's product of `m` with n rows of x.
std::vector<float> DeviceProduct(backend::Device& dev, const QuantMatrix& m, TensorType type, int64_t rows,
                                 int64_t cols, const std::vector<float>& x, int n) {
  OnDevice on{dev, {}};
  const model::Matrix w{on.Put(m.packed), type, cols, rows, m.packed.size(), "w"};
  float* y = on.Put(std::vector<float>(n * rows, NAN));
  dev.MatMul(w, on.Put(x), cols, n, y, rows);
  return on.Get(y, n * rows);
}

class CudaMatMul : public ::testing::TestWithParam<TensorType> {};

// Against a double-precision product with the dequantized weights (the
// CPU dequantizer is exact to the format): the matvec kernel accumulates
// in f32 (1e-5), the GEMM path multiplies in TF32 (10-bit mantissa: 2e-3).
TEST_P(CudaMatMul, MatchesADoubleReferenceOnTheDecodedWeights) {
  FERRY_REQUIRE_CUDA(dev);
  const TensorType type = GetParam();
  const int64_t rows = 96, cols = 512;
  const QuantMatrix m = MakeMatrix(type, rows, cols);
  ASSERT_TRUE(dev->ReserveKernelScratch(rows, cols, 32).ok());
  for (int n : {1, 3, 8, 17, 32}) {
    SCOPED_TRACE(absl::StrCat(n, " tokens"));
    const std::vector<float> x = Random(n * cols, 2 + n);
    const std::vector<float> got = DeviceProduct(*dev, m, type, rows, cols, x, n);
    ASSERT_TRUE(dev->health().ok()) << dev->health();
    const double tolerance = n <= backend::kMatVecMaxTokens ? 1e-5 : 2e-3;
    EXPECT_LE(NormalizedError(got, Product(m, rows, cols, std::vector<double>(x.begin(), x.end()), n)), tolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryType, CudaMatMul,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                                           TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1,
                                           TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

class CudaMatVecInt8 : public ::testing::TestWithParam<TensorType> {};

// The int8 matvec (cuda:...,int8=1) computes the weights times the
// activations as cpu::QuantizeActivations rounds them (the same bytes):
// against that product in double precision, only f32 accumulation differs
// (1e-5). A wrong nibble, bit or scale is off by order 1.
TEST_P(CudaMatVecInt8, IsTheExactProductWithTheInt8Activations) {
  auto opened = backend::OpenDevice(Int8Spec("cuda:0,int8=1", GetParam()), 0);
  if (!opened.ok()) GTEST_SKIP() << "no GPU to run on: " << opened.status().message();
  backend::Device& dev = **opened;
  EXPECT_THAT(dev.Describe(), HasSubstr("int8 matvec"));
  const TensorType type = GetParam();
  const int64_t rows = 96, cols = 512;
  const QuantMatrix m = MakeMatrix(type, rows, cols);
  ASSERT_TRUE(dev.ReserveKernelScratch(rows, cols, 32).ok());
  for (int n : {1, 3, 8}) {
    SCOPED_TRACE(absl::StrCat(n, " tokens"));
    const std::vector<float> x = Random(n * cols, 2 + n);
    std::vector<cpu::BlockQ8> blocks(n * cols / 32);
    cpu::QuantizeActivationsScalar(x.data(), n * cols, blocks.data());
    std::vector<double> xq(n * cols);
    for (int64_t i = 0; i < n * cols; ++i) xq[i] = static_cast<double>(blocks[i / 32].d) * blocks[i / 32].qs[i % 32];
    const std::vector<float> got = DeviceProduct(dev, m, type, rows, cols, x, n);
    ASSERT_TRUE(dev.health().ok()) << dev.health();
    EXPECT_LE(NormalizedError(got, Product(m, rows, cols, xq, n)), 1e-5);
  }
}

// The fused launches equal the separate ones: q, k and v over one x in one
// launch (MatMulShared) bit for bit (the same per-row sums); gate and up
// with the gating in one launch (GatedMatMul) within float rounding of the
// gating (the same sums, the gate computed in another kernel). And new
// values copied into the same x are quantized anew, not reused stale.
TEST_P(CudaMatVecInt8, SharedAndGatedLaunchesEqualSeparateProducts) {
  auto opened = backend::OpenDevice(Int8Spec("cuda:0", GetParam()), 0);  // the int8 matvec is the default
  if (!opened.ok()) GTEST_SKIP() << "no GPU to run on: " << opened.status().message();
  backend::Device& dev = **opened;
  const TensorType type = GetParam();
  const int64_t cols = 512, rows[3] = {96, 32, 64};
  const QuantMatrix m[3] = {MakeMatrix(type, rows[0], cols), MakeMatrix(type, rows[1], cols),
                            MakeMatrix(type, rows[2], cols)};
  const QuantMatrix up = MakeMatrix(type, rows[2], cols);
  ASSERT_TRUE(dev.ReserveKernelScratch(96, cols, 32).ok());
  OnDevice on{dev, {}};
  model::Matrix w[3], w_up{on.Put(up.packed), type, cols, rows[2], up.packed.size(), "up"};
  for (int i = 0; i < 3; ++i) w[i] = {on.Put(m[i].packed), type, cols, rows[i], m[i].packed.size(), "w"};
  for (int n : {1, 3, 8}) {
    for (bool gelu : {false, true}) {
      SCOPED_TRACE(absl::StrCat(n, " tokens, ", gelu ? "GELU" : "SiLU"));
      const std::vector<float> x = Random(n * cols, 7 + n + gelu);
      float* xd = on.Put(x);
      std::vector<float*> sep(3), fused(3);
      for (int i = 0; i < 3; ++i) {
        sep[i] = on.Put(std::vector<float>(n * rows[i], NAN));
        fused[i] = on.Put(std::vector<float>(n * rows[i], NAN));
        dev.MatMul(w[i], xd, cols, n, sep[i], rows[i]);
      }
      const backend::MatMulOut outs[] = {{&w[0], fused[0], rows[0]}, {&w[1], fused[1], rows[1]},
                                         {&w[2], fused[2], rows[2]}};
      dev.MatMulShared(outs, xd, cols, n);
      const model::Activation act = gelu ? model::Activation::kGeluTanh : model::Activation::kSilu;
      float* g_sep = on.Put(std::vector<float>(n * rows[2], NAN));
      float* u_sep = on.Put(std::vector<float>(n * rows[2], NAN));
      float* g_fused = on.Put(std::vector<float>(n * rows[2], NAN));
      float* u_fused = on.Put(std::vector<float>(n * rows[2], NAN));
      dev.MatMul(w[2], xd, cols, n, g_sep, rows[2]);
      dev.MatMul(w_up, xd, cols, n, u_sep, rows[2]);
      dev.GatedActivation(g_sep, u_sep, n * rows[2], act);
      dev.GatedMatMul(w[2], w_up, xd, cols, n, g_fused, u_fused, rows[2], act);
      ASSERT_TRUE(dev.health().ok()) << dev.health();
      for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(NormalizedError(on.Get(fused[i], n * rows[i]), on.Get(sep[i], n * rows[i])), 0.0) << "part " << i;
      }
      EXPECT_LE(NormalizedError(on.Get(g_fused, n * rows[2]), on.Get(g_sep, n * rows[2])), 1e-6);
      // New values in the same x: its product is the one from a fresh buffer.
      const std::vector<float> x2 = Random(n * cols, 100 + n);
      dev.CopyToDevice(backend::Queue::kCompute, xd, x2.data(), x2.size() * sizeof(float));
      float* again = on.Put(std::vector<float>(n * rows[0], NAN));
      float* fresh = on.Put(std::vector<float>(n * rows[0], NAN));
      dev.MatMul(w[0], xd, cols, n, again, rows[0]);
      dev.MatMul(w[0], on.Put(x2), cols, n, fresh, rows[0]);
      EXPECT_EQ(NormalizedError(on.Get(again, n * rows[0]), on.Get(fresh, n * rows[0])), 0.0);
    }
  }
}

// The other fused launches (the default; fuse=0 turns them off) give the
// separate ops' results bit for bit: RMSNorm that also quantizes for the
// next int8 product (the product that then skips its quantize kernel
// equals one that quantizes), the residual add inside the product
// (MatMulAdd), rope of q and k in one launch (RopeQK).
TEST_P(CudaMatVecInt8, FusedNormRopeAndResidualAddEqualSeparateOps) {
  const TensorType type = GetParam();
  const int64_t rows = 512, cols = 512;  // square: the residual stream is as wide as the product
  const QuantMatrix m = MakeMatrix(type, rows, cols);
  const std::vector<float> norm_w = Random(cols, 3);
  std::vector<float> inv_freq(32);
  for (int i = 0; i < 32; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * i / 64);
  const backend::RopeParams rope{inv_freq.data(), 64, false, 64};
  constexpr int kCounts[] = {1, 3, 8};
  const char* what[4] = {"rmsnorm", "product of the normed x", "residual add", "rope q and k"};
  // got[device][token count][what]. One device at a time: a second one
  // opened beside the first would count the first's memory as its own
  // context overhead and refuse to open.
  std::vector<float> got[2][3][4];
  for (int i = 0; i < 2; ++i) {
    auto opened = backend::OpenDevice(Int8Spec(i == 0 ? "cuda:0,mem=1GiB" : "cuda:0,mem=1GiB,fuse=0", type), 0);
    if (!opened.ok()) GTEST_SKIP() << "no GPU to run on: " << opened.status().message();
    backend::Device& dev = **opened;
    ASSERT_TRUE(dev.ReserveKernelScratch(rows, cols, 32).ok());
    for (int c = 0; c < 3; ++c) {
      const int n = kCounts[c];
      SCOPED_TRACE(absl::StrCat(i == 0 ? "fused, " : "fuse=0, ", n, " tokens"));
      std::vector<backend::TokenPos> tokens;
      for (int t = 0; t < n; ++t) tokens.push_back({0, 5 + 7 * t});
      const std::vector<float> x = Random(n * cols, 11 + n), acc = Random(n * rows, 21 + n);
      const std::vector<float> q = Random(n * 4 * 64, 31 + n), k = Random(n * 2 * 64, 41 + n);
      OnDevice on{dev, {}};
      const model::Matrix w{on.Put(m.packed), type, cols, rows, m.packed.size(), "w"};
      float* xd = on.Put(x);
      float* xn = on.Put(std::vector<float>(n * cols, NAN));
      float* y = on.Put(std::vector<float>(n * rows, NAN));
      dev.RmsNormBefore(w, xd, n, cols, on.Put(norm_w), 1e-5f, xn);
      dev.MatMul(w, xn, cols, n, y, rows);  // fused: reads the int8 blocks the norm wrote
      float* accd = on.Put(acc);
      dev.MatMulAdd(w, xd, cols, n, on.Put(std::vector<float>(n * rows, NAN)), accd, rows);
      float* qd = on.Put(q);
      float* kd = on.Put(k);
      dev.RopeQK(qd, 4, kd, 2, n, tokens, rope);
      ASSERT_TRUE(dev.health().ok()) << dev.health();
      got[i][c][0] = on.Get(xn, n * cols);
      got[i][c][1] = on.Get(y, n * rows);
      got[i][c][2] = on.Get(accd, n * rows);
      got[i][c][3] = on.Get(qd, q.size());
      std::vector<float> kk = on.Get(kd, k.size());
      got[i][c][3].insert(got[i][c][3].end(), kk.begin(), kk.end());
    }
    dev.ReleaseKernelScratch();
  }
  for (int c = 0; c < 3; ++c) {
    for (int j = 0; j < 4; ++j) EXPECT_EQ(NormalizedError(got[0][c][j], got[1][c][j]), 0.0) << kCounts[c] << " tokens: " << what[j];
  }
}

// Before a product that does not take int8 input (f16 here) the norm is
// the plain one: the same output and the same float product, bit for bit.
// (Whether it also quantized is not visible in the values; the GPU script's
// stage 5 times fuse=0 against the default.)
TEST(CudaFusedNorm, BeforeAFloatProductIsThePlainNorm) {
  auto opened = backend::OpenDevice("cuda:0", 0);
  if (!opened.ok()) GTEST_SKIP() << "no GPU to run on: " << opened.status().message();
  backend::Device& dev = **opened;
  const int64_t rows = 64, cols = 256;
  const int n = 2;
  const QuantMatrix f16 = MakeMatrix(TensorType::kF16, rows, cols);
  ASSERT_TRUE(dev.ReserveKernelScratch(rows, cols, 32).ok());
  OnDevice on{dev, {}};
  const model::Matrix wf{on.Put(f16.packed), TensorType::kF16, cols, rows, f16.packed.size(), "f16"};
  float* xd = on.Put(Random(n * cols, 5));
  float* wn = on.Put(Random(cols, 7));
  float* plain = on.Put(std::vector<float>(n * cols, NAN));
  float* before = on.Put(std::vector<float>(n * cols, NAN));
  float* y_plain = on.Put(std::vector<float>(n * rows, NAN));
  float* y_before = on.Put(std::vector<float>(n * rows, NAN));
  dev.RmsNorm(xd, n, cols, wn, 1e-5f, plain);
  dev.MatMul(wf, plain, cols, n, y_plain, rows);
  dev.RmsNormBefore(wf, xd, n, cols, wn, 1e-5f, before);
  dev.MatMul(wf, before, cols, n, y_before, rows);
  ASSERT_TRUE(dev.health().ok()) << dev.health();
  EXPECT_EQ(NormalizedError(on.Get(before, n * cols), on.Get(plain, n * cols)), 0.0);
  EXPECT_EQ(NormalizedError(on.Get(y_before, n * rows), on.Get(y_plain, n * rows)), 0.0);
}

// A matrix of no rows (an empty tensor) launches nothing: no zero-size grid.
TEST_P(CudaMatVecInt8, ZeroRowMatrixLaunchesNothing) {
  auto opened = backend::OpenDevice(Int8Spec("cuda:0", GetParam()), 0);
  if (!opened.ok()) GTEST_SKIP() << "no GPU to run on: " << opened.status().message();
  backend::Device& dev = **opened;
  const int64_t cols = 256;
  ASSERT_TRUE(dev.ReserveKernelScratch(32, cols, 8).ok());
  OnDevice on{dev, {}};
  const model::Matrix w{on.Put(std::vector<uint8_t>(*quant::RowBytes(GetParam(), cols))), GetParam(), cols, 0, 0,
                        "empty"};
  float* y = on.Put(std::vector<float>(1, 7.0f));
  dev.MatMul(w, on.Put(Random(3 * cols, 9)), cols, 3, y, 0);
  ASSERT_TRUE(dev.health().ok()) << dev.health();
  EXPECT_EQ(on.Get(y, 1)[0], 7.0f);
}

INSTANTIATE_TEST_SUITE_P(Int8Types, CudaMatVecInt8,
                         ::testing::Values(TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kQ5_K,
                                           TensorType::kQ6_K, TensorType::kQ4_1, TensorType::kQ5_0,
                                           TensorType::kQ5_1),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

// Every other kernel against the cpu backend's (f32 arithmetic on both;
// the KV cache in f16 on both, so attention differs only in summation order).
TEST(CudaKernels, MatchTheCpuBackend) {
  FERRY_REQUIRE_CUDA(dev);
  backend::CpuDevice cpu(2);
  const int n = 5, width = 256, heads = 4, kv_heads = 2, hd = 64, ctx = 16;
  ASSERT_TRUE(dev->ReserveKernelScratch(width, width, 8).ok());
  ASSERT_TRUE(cpu.ReserveKernelScratch(width, width, 8).ok());
  OnDevice on{*dev, {}};
  const std::vector<float> x = Random(n * width, 5), y = Random(n * width, 6), wgt = Random(width, 7);
  auto both = [&](const char* what, auto on_cpu, auto on_cuda, size_t count, double tolerance) {
    SCOPED_TRACE(what);
    const std::vector<float> want = on_cpu();
    const std::vector<float> got = on_cuda();
    ASSERT_EQ(got.size(), count);
    ASSERT_TRUE(dev->health().ok()) << dev->health();
    EXPECT_LE(NormalizedError(got, want), tolerance);
  };
  both("rmsnorm", [&] { std::vector<float> o(x.size()); cpu.RmsNorm(x.data(), n, width, wgt.data(), 1e-5f, o.data()); return o; },
       [&] { float* o = on.Put(x); dev->RmsNorm(o, n, width, on.Put(wgt), 1e-5f, o); return on.Get(o, x.size()); },
       x.size(), 1e-6);
  both("add", [&] { std::vector<float> o = x; cpu.Add(o.data(), y.data(), o.size()); return o; },
       [&] { float* o = on.Put(x); dev->Add(o, on.Put(y), x.size()); return on.Get(o, x.size()); }, x.size(), 0);
  both("row bias", [&] { std::vector<float> o = x; cpu.AddRowBias(o.data(), n, width, wgt.data()); return o; },
       [&] { float* o = on.Put(x); dev->AddRowBias(o, n, width, on.Put(wgt)); return on.Get(o, x.size()); }, x.size(), 0);
  for (model::Activation act : {model::Activation::kSilu, model::Activation::kGeluTanh}) {
    both("gated", [&] { std::vector<float> o = x; cpu.GatedActivation(o.data(), y.data(), o.size(), act); return o; },
         [&] { float* o = on.Put(x); dev->GatedActivation(o, on.Put(y), x.size(), act); return on.Get(o, x.size()); },
         x.size(), 1e-6);
  }
  both("softcap", [&] { std::vector<float> o = x; cpu.SoftCap(o.data(), o.size(), 2.5f); return o; },
       [&] { float* o = on.Put(x); dev->SoftCap(o, x.size(), 2.5f); return on.Get(o, x.size()); }, x.size(), 1e-6);
  const std::vector<int32_t> rows = {4, 0, 2};
  both("gather", [&] { std::vector<float> o(3 * width); cpu.GatherRows(x.data(), rows, width, o.data()); return o; },
       [&] { float* o = on.Put(std::vector<float>(3 * width)); dev->GatherRows(on.Put(x), rows, width, o); return on.Get(o, 3 * width); },
       3 * width, 0);

  // Rope in both layouts, then the KV cache and attention over it: two
  // sequences, positions far enough apart to exercise the window.
  std::vector<backend::TokenPos> tokens = {{0, 0}, {0, 1}, {1, 3}, {0, 2}, {1, 9}};
  std::vector<float> inv_freq(hd / 2);
  for (int i = 0; i < hd / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / hd));
  for (bool neox : {false, true}) {
    const backend::RopeParams rope{inv_freq.data(), hd, neox, hd};
    both(neox ? "rope neox" : "rope normal",
         [&] { std::vector<float> o = x; cpu.Rope(o.data(), n, heads, tokens, rope); return o; },
         [&] { float* o = on.Put(x); dev->Rope(o, n, heads, tokens, rope); return on.Get(o, x.size()); }, x.size(), 1e-6);
  }
  const int kv_dim = kv_heads * hd;
  const std::vector<float> k = Random(n * kv_dim, 8), v = Random(n * kv_dim, 9), q = Random(n * heads * hd, 10);
  for (bool f16 : {true, false}) {
    for (const auto& [softcap, window] : {std::pair{0.0f, 0}, std::pair{30.0f, 3}}) {
      SCOPED_TRACE(absl::StrCat(f16 ? "f16" : "f32", " cache, softcap ", softcap, ", window ", window));
      const size_t cache = 2 * ctx * kv_dim * (f16 ? 2 : 4);
      std::vector<uint8_t> kc(cache), vc(cache);
      backend::KvLayer cpu_kv{kc.data(), vc.data(), f16, ctx, kv_dim};
      const backend::AttentionShape shape{heads, kv_heads, hd, 0.125f, softcap, window};
      std::vector<float> scratch(cpu.AttentionScratchFloats(n, heads, ctx));
      // Each token attends to the earlier positions of its sequence: fill
      // them all from this step's rows (positions 0..9 of each sequence).
      std::vector<backend::TokenPos> fill;
      std::vector<float> fk, fv;
      for (int s = 0; s < 2; ++s) {
        for (int p = 0; p < 10; ++p) {
          fill.push_back({s, p});
          const int from = (s * 10 + p) % n;
          fk.insert(fk.end(), k.begin() + from * kv_dim, k.begin() + (from + 1) * kv_dim);
          fv.insert(fv.end(), v.begin() + from * kv_dim, v.begin() + (from + 1) * kv_dim);
        }
      }
      std::vector<float> want(n * heads * hd);
      cpu.StoreKv(cpu_kv, fk.data(), fv.data(), fill);
      cpu.Attention(q.data(), cpu_kv, tokens, shape, scratch.data(), want.data());
      backend::KvLayer dev_kv{on.Put(std::vector<uint8_t>(cache)), on.Put(std::vector<uint8_t>(cache)), f16, ctx, kv_dim};
      float* out = on.Put(std::vector<float>(want.size(), NAN));
      float* dev_scratch = on.Put(std::vector<float>(dev->AttentionScratchFloats(n, heads, ctx)));
      ASSERT_TRUE(dev->ReserveKernelScratch(width, width, 32).ok());
      dev->StoreKv(dev_kv, on.Put(fk), on.Put(fv), fill);
      dev->Attention(on.Put(q), dev_kv, tokens, shape, dev_scratch, out);
      const std::vector<float> got = on.Get(out, want.size());
      ASSERT_TRUE(dev->health().ok()) << dev->health();
      EXPECT_LE(NormalizedError(got, want), 1e-5);
    }
  }
}

using Built = testing::InMemoryModel;

// The first sequence's prompt of 12 tokens takes the GEMM path (more than
// kMatVecMaxTokens tokens in the step).
constexpr int kLongPrompt = 12;

struct ArchType {
  const char* arch;
  TensorType type;
};

class CudaPlacement : public ::testing::TestWithParam<ArchType> {};

// RunSteps' logits from the double-precision reference (one sequence at a
// time, all positions recomputed), in RunSteps' order.
// RunSteps on a device opened from `spec`: the logits, the device's graph
// launches and description, and why it did not open or stay healthy
// (`error`, empty when it did).
struct DeviceSteps {
  std::vector<float> logits;
  uint64_t replays = 0;
  std::string device, error;
};
DeviceSteps StepsOn(const std::string& spec, const model::Model& m, const exec::ForwardOptions& o) {
  DeviceSteps s;
  auto dev = backend::OpenDevice(spec, 0);
  if (!dev.ok()) {
    s.error = absl::StrCat(spec, ": ", dev.status().message());
    return s;
  }
  s.logits = testing::RunSteps(m, dev->get(), o, kLongPrompt);
  s.replays = (*dev)->stats().replays;
  s.device = (*dev)->Describe();
  if (absl::Status h = (*dev)->health(); !h.ok()) s.error = absl::StrCat(spec, ": ", h.message());
  return s;
}

std::vector<float> ReferenceSteps(const Built& b, int first) {
  auto ref = testing::ReferenceModel::Load(*b.model->file);
  EXPECT_TRUE(ref.ok()) << ref.status();
  if (!ref.ok()) return {};
  const testing::StepTokens t = testing::MakeStepTokens(b.model->config.n_vocab, first);
  const auto l0 = ref->Logits(t.seq[0]), l1 = ref->Logits(t.seq[1]);
  std::vector<float> all;
  for (int step = 0; step < 4; ++step) {
    for (const auto* row : {&l0[first - 1 + step], &l1[2 + step]}) all.insert(all.end(), row->begin(), row->end());
  }
  return all;
}

double Nmse(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    err += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    ref += static_cast<double>(b[i]) * b[i];
  }
  return ref > 0 ? err / ref : err;
}

// The same executor as the sim. All resident on the GPU against the
// double-precision reference forward: TF32 prefill products (10-bit
// mantissas, ~5e-4 relative a product) and the f16 KV cache (~1e-3) give
// ~1e-3 of the logits' scale; bounds 2e-2 (max, normalized) and 1e-4
// (NMSE), far below what a wrong kernel gives (order 1). The cpu backend
// is not the yardstick: for q4_0/q8_0/q4_K/q6_K it rounds activations to
// 8 bits (~2e-2 off; see forward_reference_test). Then every placement
// and ring depth 1..4, with poisoned staging slots, gives the all-resident
// logits bit for bit: the same kernels on the same bytes.
TEST_P(CudaPlacement, EveryPlacementAndRingDepthGivesTheResidentLogits) {
  FERRY_REQUIRE_CUDA(probe);
  probe.reset();
  const Built b = testing::BuildInMemory(testing::Tiny(GetParam().arch, GetParam().type));
  const int L = b.model->config.n_layer;
  exec::ForwardOptions o{.max_batch = 16, .n_seq = 2, .n_ctx = 32, .threads = 2};
  // 1 GiB of the card is plenty and keeps each device's start quick.
  const char* kDevice = "cuda:0,mem=1GiB,poison=1,int8=0";  // the float matvec
  o.placement = {true, L, 1};
  const DeviceSteps all = StepsOn(kDevice, *b.model, o);
  ASSERT_TRUE(all.error.empty()) << all.error;
  const std::vector<float>& resident = all.logits;
  const std::vector<float> ref = ReferenceSteps(b, kLongPrompt);
  ASSERT_EQ(resident.size(), ref.size());
  const double max_err = NormalizedError(resident, ref), nmse = Nmse(resident, ref);
  std::printf("%s %s on cuda vs double reference: max normalized error %.2e, NMSE %.1e\n", GetParam().arch,
              std::string(quant::Info(GetParam().type).name).c_str(), max_err, nmse);
  EXPECT_LE(max_err, 2e-2);
  EXPECT_LE(nmse, 1e-4);
  for (int ring = 1; ring <= 4; ++ring) {
    std::vector<std::pair<bool, int>> placements = {{false, 0}};
    for (int r = 0; r < L; ++r) placements.push_back({true, r});
    for (const auto& [head, layers] : placements) {
      SCOPED_TRACE(absl::StrCat("ring ", ring, ", head ", head ? "resident" : "streamed", ", ", layers, "/", L));
      o.placement = {head, layers, ring};
      const DeviceSteps got = StepsOn(kDevice, *b.model, o);
      ASSERT_EQ(got.logits.size(), resident.size());
      ASSERT_TRUE(got.error.empty()) << got.error;
      EXPECT_EQ(NormalizedError(got.logits, resident), 0.0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, CudaPlacement,
                         ::testing::Values(ArchType{"llama", TensorType::kQ4_0}, ArchType{"qwen2", TensorType::kQ8_0},
                                           ArchType{"gemma2", TensorType::kQ4_K}, ArchType{"llama", TensorType::kQ6_K},
                                           ArchType{"llama", TensorType::kF16}, ArchType{"qwen3", TensorType::kQ8_0},
                                           ArchType{"gemma3", TensorType::kQ4_K}),
                         [](const auto& info) {
                           return absl::StrCat(info.param.arch, "_", quant::Info(info.param.type).name);
                         });

// The whole forward pass on the int8 matvec (the default): against
// the double reference within the cpu backend's bounds for 8-bit
// activations (forward_reference_test: 0.15 max, 1e-3 NMSE), and a
// streamed placement bit-identical to all-resident.
TEST_P(CudaPlacement, Int8MatvecWithinTheInt8BoundsAndPlacementFree) {
  FERRY_REQUIRE_CUDA(probe);
  probe.reset();
  const Built b = testing::BuildInMemory(testing::Tiny(GetParam().arch, GetParam().type));
  const int L = b.model->config.n_layer;
  exec::ForwardOptions o{.max_batch = 16, .n_seq = 2, .n_ctx = 32, .threads = 2};
  std::vector<std::vector<float>> runs;
  for (int resident : {L, 1}) {
    o.placement = {true, resident, 2};
    DeviceSteps got = StepsOn("cuda:0,mem=1GiB,poison=1", *b.model, o);  // int8 is the default
    ASSERT_TRUE(got.error.empty()) << got.error;
    EXPECT_THAT(got.device, HasSubstr("int8 matvec"));
    runs.push_back(std::move(got.logits));
  }
  const std::vector<float> ref = ReferenceSteps(b, kLongPrompt);
  ASSERT_EQ(runs[0].size(), ref.size());
  const double max_err = NormalizedError(runs[0], ref), nmse = Nmse(runs[0], ref);
  std::printf("%s %s on cuda int8 vs double reference: max normalized error %.2e, NMSE %.1e\n", GetParam().arch,
              std::string(quant::Info(GetParam().type).name).c_str(), max_err, nmse);
  EXPECT_LE(max_err, 0.15);
  EXPECT_LE(nmse, 1e-3);
  EXPECT_EQ(NormalizedError(runs[1], runs[0]), 0.0) << "1 layer resident vs all";
  // One launch per op (fuse=0): the same sums; the gating computed in
  // another kernel may round differently in the last bit.
  o.placement = {true, L, 2};
  const DeviceSteps unfused = StepsOn("cuda:0,mem=1GiB,fuse=0", *b.model, o);
  ASSERT_TRUE(unfused.error.empty()) << unfused.error;
  EXPECT_LE(NormalizedError(unfused.logits, runs[0]), 1e-5) << "fuse=0 vs the fused launches";
}

// Decode steps replayed from CUDA graphs (the default) give the logits of
// the same kernels launched one by one (graphs=0) bit for bit, all
// resident and with streamed units in a 2-slot ring (a graph per slot),
// and the graphs are really launched: a piece is captured the second time
// its shape comes, so the first decode step runs kernel by kernel, the
// second captures and launches, the third launches with new positions in
// the step's tables.
TEST_P(CudaPlacement, GraphReplaysGiveTheKernelByKernelLogits) {
  FERRY_REQUIRE_CUDA(probe);
  probe.reset();
  const Built b = testing::BuildInMemory(testing::Tiny(GetParam().arch, GetParam().type));
  const int L = b.model->config.n_layer;
  exec::ForwardOptions o{.max_batch = 16, .n_seq = 2, .n_ctx = 32, .threads = 2};
  for (int resident : {L, 1}) {
    SCOPED_TRACE(absl::StrCat(resident, "/", L, " layers resident"));
    o.placement = {true, resident, 2};
    std::vector<float> runs[2];
    uint64_t replays[2] = {0, 0};
    for (int graphs = 0; graphs < 2; ++graphs) {
      DeviceSteps got = StepsOn(absl::StrCat("cuda:0,mem=1GiB,poison=1,graphs=", graphs), *b.model, o);
      ASSERT_TRUE(got.error.empty()) << got.error;
      runs[graphs] = std::move(got.logits);
      replays[graphs] = got.replays;
    }
    ASSERT_EQ(runs[0].size(), runs[1].size());
    EXPECT_EQ(NormalizedError(runs[1], runs[0]), 0.0);
    EXPECT_EQ(replays[0], 0u);
    // Decode steps 2 and 3, one launch per recorded piece: at least 1 piece a step.
    EXPECT_GE(replays[1], 2u);
    std::printf("%s %s, %d/%d resident: %llu graph launches over 3 decode steps\n", GetParam().arch,
                std::string(quant::Info(GetParam().type).name).c_str(), resident, L,
                static_cast<unsigned long long>(replays[1]));
  }
}

// Logits copied straight into the executor's page-locked buffer
// (Forward(batch), as the server takes them) equal those that go through
// the bounce buffer into pageable memory, also past its n_seq rows.
TEST(CudaExecutor, LogitsInItsPageLockedBufferAreTheSame) {
  FERRY_REQUIRE_CUDA(probe);
  probe.reset();
  const Built b = testing::BuildInMemory(testing::Tiny("llama", TensorType::kQ8_0));
  const int V = b.model->config.n_vocab;
  exec::ForwardOptions o{.max_batch = 16, .n_seq = 2, .n_ctx = 32, .threads = 2};
  o.placement = {true, 1, 2};
  auto dev = backend::OpenDevice("cuda:0,mem=1GiB", 0);
  ASSERT_TRUE(dev.ok()) << dev.status();
  auto into = exec::Executor::Create(*b.model, dev->get(), o);
  ASSERT_TRUE(into.ok()) << into.status();
  std::vector<std::vector<float>> want;
  auto steps = [&](auto&& run) {
    std::vector<exec::BatchToken> batch;
    for (int p = 0; p < 5; ++p) batch.push_back({(p * 37) % V, 0, p, true});
    for (int step = 0; step < 3; ++step) {
      run(batch);
      batch = {{(step * 11) % V, 0, 5 + step, true}, {(step * 13) % V, 1, step, true}};
    }
  };
  steps([&](const std::vector<exec::BatchToken>& batch) {
    want.emplace_back(batch.size() * V);
    ASSERT_TRUE((*into)->Forward(batch, want.back()).ok());
  });
  into->reset();
  auto own = exec::Executor::Create(*b.model, dev->get(), o);
  ASSERT_TRUE(own.ok()) << own.status();
  size_t i = 0;
  steps([&](const std::vector<exec::BatchToken>& batch) {
    absl::StatusOr<std::span<float>> got = (*own)->Forward(batch);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), want[i].size());
    EXPECT_EQ(std::memcmp(got->data(), want[i].data(), want[i].size() * sizeof(float)), 0) << "step " << i;
    ++i;
  });
  ASSERT_TRUE((*dev)->health().ok()) << (*dev)->health();
}

// The golden text end to end through the CLI on the GPU.
TEST(CudaGolden, Stories260KGreedyFromBos) {
  FERRY_REQUIRE_CUDA(probe);
  probe.reset();
  const std::string path = testing::SharedModel("stories260K-f32.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  // FERRY_BINARY in the environment: where tests/gpu/run.sh unpacked it.
  const char* binary = std::getenv("FERRY_BINARY") ? std::getenv("FERRY_BINARY") : FERRY_BINARY;
  const std::string cmd = std::string(binary) + " generate --device cuda --model " + path +
                          " --temperature 0 -n 50 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, got);
  const int status = pclose(p);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_THAT(out, HasSubstr("Once upon a time, there was a little girl named Lily."));
}

}  // namespace
}  // namespace ferry
