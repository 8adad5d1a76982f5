// AVX-512 float group kernels (built with -mavx512f; chosen at run time when
// the CPU has it). gcc 12's AVX-512 intrinsics pass _mm512_undefined_*()
// values through, which its -Wuninitialized flags wherever they inline.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define FERRY_FDOT_AVX512 1
#include "engine/backend/cpu/fdot_simd.inc"
