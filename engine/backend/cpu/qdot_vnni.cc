// AVX-512 VNNI kernels, on 256-bit registers and, for two groups at once,
// 512-bit ones (built with -mavx512vnni -mavx512vl -mavx512bw; chosen at run
// time when the CPU has them). gcc 12's AVX-512 intrinsics pass
// _mm512_undefined_*() values through, which its -Wuninitialized flags.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define FERRY_QDOT_VNNI 1
#include "engine/backend/cpu/qdot_simd.inc"
