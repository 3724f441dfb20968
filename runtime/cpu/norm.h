/* RMS norm on the CPU: the arithmetic that shaders/norm.comp reproduces
 * (its KS_POST and KS_ADD variants are ks_cpu_norm_add, its pre-norm is
 * ks_cpu_norm_rms), and that rope.comp's KS_QK_NORM applies per head.
 * The squares are summed in double in index order, as ggml sums them;
 * changing that order changes greedy tokens against llama.cpp's. */
#ifndef KS_CPU_NORM_H
#define KS_CPU_NORM_H

#include <stdint.h>

/* y[i] = x[i] * scale * w[i] for i < n, with scale = 1 / sqrt(mean(x²) +
 * eps): each square in float, their sum in double, the mean rounded to
 * float before eps is added. y, x and w are f32 rows of n values; y may
 * be x (in place), otherwise the rows must not overlap. n > 0. No
 * allocation or shared state: safe from any thread on distinct rows. */
void ks_cpu_norm_rms(float *y, const float *x, const float *w, uint64_t n, float eps);

/* The residual add of one token, x[i] += o[i], with gemma3's post-norm
 * first when |pw| is not NULL: o = ks_cpu_norm_rms(o, pw), in place, so
 * o is overwritten with the normed values. x, o and pw are f32 rows of n
 * values that do not overlap. Safe from any thread on distinct rows. */
void ks_cpu_norm_add(float *x, float *o, const float *pw, uint64_t n, float eps);

#endif
