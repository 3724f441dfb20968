/* The gated FFN activation over a range of a batch (glu.h); the SIMD row
 * kernels behind it are quant.c's ks_cpu_swiglu and ks_cpu_gelu_mul. */
#include "runtime/cpu/glu.h"

#include "runtime/cpu/quant.h"

void
ks_cpu_glu_silu(float *g, const float *u, uint64_t n_ff, uint64_t i0, uint64_t i1)
{
    for (uint64_t i = i0; i < i1;) {
        uint64_t row = i / n_ff, c = i % n_ff;
        uint64_t ce = c + (i1 - i);
        if (ce > n_ff)
            ce = n_ff;
        ks_cpu_swiglu(g + row * n_ff, u + row * n_ff, n_ff, c, ce);
        i += ce - c;
    }
}

void
ks_cpu_glu_gelu(float *g, const float *u, uint64_t n_ff, uint64_t i0, uint64_t i1)
{
    (void)n_ff;
    if (i1 > i0)
        ks_cpu_gelu_mul(g + i0, u + i0, i1 - i0);
}
