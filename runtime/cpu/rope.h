/* Rotary position embedding on the CPU, as llama.cpp's CPU rope computes
 * it: a table of cos/sin per token and rotated pair, then the rotation
 * of each q or k head in place. shaders/rope.comp rotates by the same
 * table (the Vulkan path uploads it), in the same two modes: normal
 * (pairs (2i, 2i+1)) and NEOX (pairs (i, i + n_rot/2), KS_NEOX). Its
 * KS_QK_NORM is ks_cpu_norm_rms on each head before the rotation. */
#ifndef KS_CPU_ROPE_H
#define KS_CPU_ROPE_H

#include <stdbool.h>
#include <stdint.h>

/* cs[t * n_rot + 2i] = cos(theta), cs[t * n_rot + 2i + 1] = sin(theta)
 * for the tokens at positions pos0 + t, t < n_tok, and the pairs i <
 * n_rot / 2, with theta = (pos0 + t) * base^(-2i/n_rot) / scale, the
 * powers taken by repeated multiplication in float as llama.cpp's rope
 * cache takes them. |scale| is the linear scaling factor (1: none). cs
 * holds n_tok * n_rot floats; n_rot is even. Safe from any thread. */
void ks_cpu_rope_table(float *cs, uint32_t pos0, uint32_t n_tok, uint32_t n_rot,
                       float base, float scale);

/* Rotates the first n_rot values of one head |v| in place by one token's
 * row of the table (cs: n_rot floats from ks_cpu_rope_table); the values
 * past n_rot are untouched. NEOX mode when |neox|. Each rotated value is
 * one fused multiply-add, as GCC compiled llama.cpp's (checked bit for
 * bit against the peer's tensors). Safe from any thread on distinct
 * heads. */
void ks_cpu_rope_apply(float *v, const float *cs, uint32_t n_rot, bool neox);

#endif
