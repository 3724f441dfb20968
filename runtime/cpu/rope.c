/* Rotary position embedding: the cos/sin table of a batch, then the
 * rotation of each head by its token's row of it (rope.h). */
#include "runtime/cpu/rope.h"

#include <math.h>

void
ks_cpu_rope_table(float *cs, uint32_t pos0, uint32_t n_tok, uint32_t n_rot,
                  float base, float scale)
{
    float theta_scale = powf(base, -2.0f / (float)n_rot);
    float freq_scale = 1.0f / scale;

    for (uint32_t t = 0; t < n_tok; t++) {
        float theta = (float)(pos0 + t);
        float *c = cs + (uint64_t)t * n_rot;
        for (uint32_t i = 0; i < n_rot / 2; i++) {
            float th = freq_scale * theta;
            c[2 * i] = cosf(th);
            c[2 * i + 1] = sinf(th);
            theta *= theta_scale;
        }
    }
}

void
ks_cpu_rope_apply(float *v, const float *cs, uint32_t n_rot, bool neox)
{
    uint32_t half = n_rot / 2;

    for (uint32_t i = 0; i < half; i++) {
        float c = cs[2 * i], sn = cs[2 * i + 1];
        uint32_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        float x0 = v[a], x1 = v[b];
        v[a] = fmaf(x0, c, -(x1 * sn));
        v[b] = fmaf(x0, sn, x1 * c);
    }
}
