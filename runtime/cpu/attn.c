/* Portable attention accumulation and the dispatch to the F16C variant. */
#include "runtime/cpu/attn.h"

#include <math.h>
#include <string.h>

#include "runtime/cpu/quant.h"

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

#define ATTN_FN attn_ref
#define SCALE_F16 scale_f16
#define MAD_F16 mad_f16
#include "runtime/cpu/attn_body.h"

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
    if (ks_cpu_simd() == KS_SIMD_AVX2)
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
    if (ks_cpu_simd() == KS_SIMD_AVX2 && hd % 8 == 0) {
        ks_cpu_attn_accum_f16c(kv_type, V, row_bytes, hd, n_keys, scores,
                               scale, work, out);
        return;
    }
#endif
    attn_ref(kv_type, V, row_bytes, hd, n_keys, scores, scale, work, out);
}
