/* The gated FFN activation on the CPU, g = act(g) * u, as llama.cpp's CPU
 * backend computes it; shaders/glu.comp reproduces it (KS_SILU,
 * KS_GELU). Both work on a range of flat indices into [rows][n_ff] f32
 * blocks, so a pool can split one batch among workers anywhere; the
 * result does not depend on where the ranges are cut. g is overwritten;
 * u is only read and must not overlap g. Safe from several threads on
 * disjoint ranges (the pool's workers); the first GELU call builds the
 * table, once, about a millisecond. */
#ifndef KS_CPU_GLU_H
#define KS_CPU_GLU_H

#include <stdint.h>

/* SwiGLU for the flat indices i0 <= i < i1: row by row through
 * ks_cpu_swiglu, since llama.cpp's vector SiLU covers only each row's
 * first n_ff / 8 * 8 columns (expf for the rest). */
void ks_cpu_glu_silu(float *g, const float *u, uint64_t n_ff, uint64_t i0, uint64_t i1);

/* GELU for the flat indices i0 <= i < i1, through ks_cpu_gelu_mul:
 * llama.cpp's table indexed by the fp16 value of x, holding fp16
 * results, exact outside (-10, 10). Elementwise, so n_ff only names the
 * layout. */
void ks_cpu_glu_gelu(float *g, const float *u, uint64_t n_ff, uint64_t i0, uint64_t i1);

#endif
