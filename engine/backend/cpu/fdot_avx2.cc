// AVX2 + FMA + F16C float group kernels (built with those flags; chosen at run time).
#define FERRY_FDOT_AVX512 0
#include "engine/backend/cpu/fdot_simd.inc"
