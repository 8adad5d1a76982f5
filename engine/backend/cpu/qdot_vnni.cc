// AVX-512 VNNI kernels on 256-bit registers (built with -mavx512vnni
// -mavx512vl; chosen at run time when the CPU has them).
#define FERRY_QDOT_VNNI 1
#include "engine/backend/cpu/qdot_simd.inc"
