/* Portable attention accumulation and the dispatch to the F16C variant. */
#include "runtime/cpu/attn.h"

#include <math.h>
#include <string.h>

#include "runtime/cpu/quant.h"
#include "runtime/cpu/quant_priv.h"

static void
scale_f16(uint16_t *acc, float ms, uint32_t hd)
{
    for (uint32_t d = 0; d < hd; d++)
        acc[d] = ks_f32_to_fp16(ks_fp16_to_f32(acc[d]) * ms);
}

static void
mad_f16(uint16_t *acc, const uint16_t *v, float vs, uint32_t hd)
{
    for (uint32_t d = 0; d < hd; d++)
        acc[d] = ks_f32_to_fp16(
            fmaf(ks_fp16_to_f32(v[d]), vs, ks_fp16_to_f32(acc[d])));
}

static float
kv_load(ks_qtype t, const uint8_t *row, uint32_t d)
{
    float f;

    if (t == KS_QUANT_F16) {
        uint16_t h;
        memcpy(&h, row + 2 * (uint64_t)d, 2);
        return ks_fp16_to_f32(h);
    }
    memcpy(&f, row + 4 * (uint64_t)d, 4);
    return f;
}

/* scores of n keys: an fma chain over the head dimension, times scale,
 * plus the mask's 0 */
static void
kq_tile(ks_qtype t, float *kq, const float *q, const uint8_t *K,
        uint64_t row_bytes, uint32_t hd, uint32_t n, float scale)
{
    for (uint32_t k = 0; k < n; k++, K += row_bytes) {
        float s = 0.0f;
        for (uint32_t d = 0; d < hd; d++)
            s = fmaf(kv_load(t, K, d), q[d], s);
        kq[k] = s * scale + 0.0f;
    }
}

/* ggml_vec_soft_max_f32 over the 64 scores, in place */
static double
exp_tile(float *kq, float max)
{
    double sum = 0.0;

    for (int g = 0; g < 64; g += 8) {
        float v[8], t0, t1, t2, t3;
        for (int l = 0; l < 8; l++)
            kq[g + l] = v[l] = ks_v_expf(kq[g + l] - max);
        t0 = v[0] + v[4];
        t1 = v[1] + v[5];
        t2 = v[2] + v[6];
        t3 = v[3] + v[7];
        sum += (double)((t0 + t2) + (t1 + t3));
    }
    return sum;
}

static void
v_tile(ks_qtype t, float *acc, const float *p, const uint8_t *V,
       uint64_t row_bytes, uint32_t hd, uint32_t n)
{
    for (uint32_t d = 0; d < hd; d++) {
        float a = acc[d];
        const uint8_t *v = V;
        for (uint32_t k = 0; k < n; k++, v += row_bytes)
            a = fmaf(kv_load(t, v, d), p[k], a);
        acc[d] = a;
    }
}

#define ATTN_FN attn_ref
#define SCALE_F16 scale_f16
#define MAD_F16 mad_f16
#define ATTN_TILED_FN attn_tiled_ref
#define KQ_TILE kq_tile
#define EXP_TILE exp_tile
#define V_TILE v_tile
#include "runtime/cpu/attn_body.h"

void
ks_cpu_attn_tiled_ref(ks_qtype kv_type, const float *q, const void *K,
                      const void *V, uint64_t row_bytes, uint32_t hd,
                      uint32_t first, uint32_t n_keys, float scale,
                      float *kq, float *acc, float *out)
{
    attn_tiled_ref(kv_type, q, K, V, row_bytes, hd, first, n_keys, scale,
                   kq, acc, out);
}

#if defined(__x86_64__)
void ks_cpu_attn_tiled_avx2(ks_qtype kv_type, const float *q, const void *K,
                            const void *V, uint64_t row_bytes, uint32_t hd,
                            uint32_t first, uint32_t n_keys, float scale,
                            float *kq, float *acc, float *out);
#endif

void
ks_cpu_attn_tiled(ks_qtype kv_type, const float *q, const void *K,
                  const void *V, uint64_t row_bytes, uint32_t hd,
                  uint32_t first, uint32_t n_keys, float scale, float *kq,
                  float *acc, float *out)
{
#if defined(__x86_64__)
    if (ks_cpu_simd_x86() && hd % 8 == 0) {
        ks_cpu_attn_tiled_avx2(kv_type, q, K, V, row_bytes, hd, first,
                               n_keys, scale, kq, acc, out);
        return;
    }
#endif
    attn_tiled_ref(kv_type, q, K, V, row_bytes, hd, first, n_keys, scale,
                   kq, acc, out);
}

void
ks_cpu_attn_accum_ref(ks_qtype kv_type, const void *V, uint64_t row_bytes,
                      uint32_t hd, uint32_t n_keys, const float *scores,
                      float scale, float *work, float *out)
{
    attn_ref(kv_type, V, row_bytes, hd, n_keys, scores, scale, work, out);
}

static float
dot_f16(const uint16_t *x, const uint16_t *y, uint32_t n)
{
    uint32_t np = n & ~31u;
    float acc[4][8] = { { 0 } }, t[4];
    double sum;

    for (uint32_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++)
                acc[j][l] = fmaf(ks_fp16_to_f32(x[i + 8 * j + l]),
                                 ks_fp16_to_f32(y[i + 8 * j + l]), acc[j][l]);
    for (int l = 0; l < 8; l++) {
        acc[0][l] += acc[2][l];
        acc[1][l] += acc[3][l];
        acc[0][l] += acc[1][l];
    }
    for (int l = 0; l < 4; l++)
        t[l] = acc[0][l] + acc[0][l + 4];
    sum = (double)((t[0] + t[1]) + (t[2] + t[3]));
    for (uint32_t i = np; i < n; i++)
        sum += (double)(ks_fp16_to_f32(x[i]) * ks_fp16_to_f32(y[i]));
    return (float)sum;
}

void
ks_cpu_attn_scores_f16_ref(const void *K, uint64_t row_bytes, uint32_t hd,
                           uint32_t n_keys, const uint16_t *q, float *scores)
{
    const uint8_t *k = K;

    for (uint32_t i = 0; i < n_keys; i++, k += row_bytes)
        scores[i] = dot_f16((const uint16_t *)k, q, hd);
}

#if defined(__x86_64__)
void ks_cpu_attn_scores_f16_avx2(const void *K, uint64_t row_bytes,
                                 uint32_t hd, uint32_t n_keys,
                                 const uint16_t *q, float *scores);

void
ks_cpu_attn_scores_f16(const void *K, uint64_t row_bytes, uint32_t hd,
                       uint32_t n_keys, const uint16_t *q, float *scores)
{
    if (ks_cpu_simd_x86())
        ks_cpu_attn_scores_f16_avx2(K, row_bytes, hd, n_keys, q, scores);
    else
        ks_cpu_attn_scores_f16_ref(K, row_bytes, hd, n_keys, q, scores);
}
#else
void
ks_cpu_attn_scores_f16(const void *K, uint64_t row_bytes, uint32_t hd,
                       uint32_t n_keys, const uint16_t *q, float *scores)
{
    ks_cpu_attn_scores_f16_ref(K, row_bytes, hd, n_keys, q, scores);
}
#endif

#if defined(__x86_64__)
void ks_cpu_attn_accum_f16c(ks_qtype kv_type, const void *V,
                            uint64_t row_bytes, uint32_t hd, uint32_t n_keys,
                            const float *scores, float scale, float *work,
                            float *out);
#endif

void
ks_cpu_attn_accum(ks_qtype kv_type, const void *V, uint64_t row_bytes,
                  uint32_t hd, uint32_t n_keys, const float *scores,
                  float scale, float *work, float *out)
{
#if defined(__x86_64__)
    if (ks_cpu_simd_x86() && hd % 8 == 0) {
        ks_cpu_attn_accum_f16c(kv_type, V, row_bytes, hd, n_keys, scores,
                               scale, work, out);
        return;
    }
#endif
    attn_ref(kv_type, V, row_bytes, hd, n_keys, scores, scale, work, out);
}
