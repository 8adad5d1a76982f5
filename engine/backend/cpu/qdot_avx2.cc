// AVX2 + FMA + F16C kernels (built with those flags; chosen at run time).
#define FERRY_QDOT_VNNI 0
#include "engine/backend/cpu/qdot_simd.inc"
