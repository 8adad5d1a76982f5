#include "engine/backend/cpu/fdot.h"

#include <cmath>
#include <cstring>

#include "engine/backend/cpu/qdot.h"
#include "engine/quant/half.h"

namespace ferry::cpu {
namespace {

using quant::TensorType;

int ElemBytes(TensorType type) { return type == TensorType::kF32 ? 4 : 2; }

float ValueAt(TensorType type, const uint8_t* p) {
  if (type == TensorType::kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return type == TensorType::kF16 ? quant::HalfToFloat(h) : quant::Bf16ToFloat(h);
}

// The reference order (fdot.h), reading the group's values back.
template <TensorType kType>
void FloatGroupsScalar(const uint8_t* group, uint64_t group_stride, int n_groups, const float* xt, int nt, int64_t n,
                       float* out) {
  const int elem = ElemBytes(kType);
  for (int g = 0; g < n_groups; ++g) {
    const uint8_t* base = group + g * group_stride;
    for (int t = 0; t < nt; ++t) {
      for (int r = 0; r < kGroupRows; ++r) {
        float even = 0.0f, odd = 0.0f;
        for (int64_t p = 0; p < n / 2; ++p) {
          const uint8_t* at = base + (p * 2 * kGroupRows + 2 * r) * elem;
          const float* x = xt + (t / kFloatTile) * kFloatTile * n + 2 * (p * kFloatTile + t % kFloatTile);
          even = std::fma(ValueAt(kType, at), x[0], even);
          odd = std::fma(ValueAt(kType, at + elem), x[1], odd);
        }
        out[(g * nt + t) * kGroupRows + r] = even + odd;
      }
    }
  }
}

}  // namespace

bool IsFloatType(TensorType type) {
  return type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16;
}

uint64_t FloatGroupBytes(TensorType type, int64_t n) {
  if (!IsFloatType(type) || n % 2 != 0) return 0;
  return static_cast<uint64_t>(n) * kGroupRows * ElemBytes(type);
}

void GroupFloatRows(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t n, uint8_t* group) {
  const int elem = ElemBytes(type);
  for (int64_t p = 0; p < n / 2; ++p) {
    for (int r = 0; r < kGroupRows; ++r) {
      std::memcpy(group + (p * 2 * kGroupRows + 2 * r) * elem, rows + r * row_bytes + 2 * p * elem, 2 * elem);
    }
  }
}

void GroupFloatRowsAsF32(TensorType type, const uint8_t* rows, uint64_t row_bytes, int n_rows, int64_t n,
                         float* group) {
  const int elem = ElemBytes(type);
  for (int r = 0; r < kGroupRows; ++r) {
    const uint8_t* row = rows + r * row_bytes;
    for (int64_t c = 0; c < n; ++c) {
      group[(c / 2) * 2 * kGroupRows + 2 * r + c % 2] = r < n_rows ? ValueAt(type, row + c * elem) : 0.0f;
    }
  }
}

void PairTokens(const float* x, int64_t x_stride, int nt, int64_t n, float* xt) {
  for (int64_t p = 0; p < n / 2; ++p) {
    for (int t = 0; t < nt; ++t) std::memcpy(xt + 2 * (p * kFloatTile + t), x + t * x_stride + 2 * p, 8);
  }
}

bool CpuHasAvx512() {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && CpuHasAvx2();
  return avx512;
}

FloatGroupDotFn GetFloatGroupDot(TensorType type, bool simd) {
  if (simd) {
    if (CpuHasAvx512()) return GetFloatGroupDotAvx512(type);
    if (CpuHasAvx2()) return GetFloatGroupDotAvx2(type);
  }
  switch (type) {
    case TensorType::kF32: return FloatGroupsScalar<TensorType::kF32>;
    case TensorType::kF16: return FloatGroupsScalar<TensorType::kF16>;
    case TensorType::kBF16: return FloatGroupsScalar<TensorType::kBF16>;
    default: return nullptr;
  }
}

}  // namespace ferry::cpu
