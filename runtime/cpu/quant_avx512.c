/* The AVX-512 kernels (F, BW, VL, VNNI): quant_avx2.c's, compiled with
 * -mavx512f -mavx512bw -mavx512vl -mavx512vnni (meson.build), which gives
 * its integer products their vpdpbusd and 512-bit forms (quant_avx2.c
 * says where). quant.c enters them only when CPUID reports all four and
 * the OS saves the opmask and ZMM state. Results: bit-identical to the
 * AVX2 build and to scalar (tests/quant checks every level). */
#define KS_QUANT_OPS_FN ks_quant_ops_avx512
#include "runtime/cpu/quant_avx2.c"
