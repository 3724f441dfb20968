/* RMS norm and the residual add around it, for one token's row; the
 * forward pass and the Vulkan kernel tests both call these (norm.h). */
#include "runtime/cpu/norm.h"

#include <math.h>

void
ks_cpu_norm_rms(float *y, const float *x, const float *w, uint64_t n, float eps)
{
    double sum = 0;
    float scale;

    for (uint64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    for (uint64_t i = 0; i < n; i++)
        y[i] = x[i] * scale * w[i];
}

void
ks_cpu_norm_add(float *x, float *o, const float *pw, uint64_t n, float eps)
{
    if (pw)
        ks_cpu_norm_rms(o, o, pw, n, eps);
    for (uint64_t i = 0; i < n; i++)
        x[i] += o[i];
}
