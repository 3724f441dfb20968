/* The AVX-VNNI kernels (256-bit vpdpbusd, VEX-encoded, for CPUs that have
 * it without AVX-512): quant_avx2.c's, compiled with -mavxvnni
 * (meson.build). Results: bit-identical to the AVX2 build and to scalar. */
#define KS_QUANT_OPS_FN ks_quant_ops_avxvnni
#include "runtime/cpu/quant_avx2.c"
