/* Attention accumulation with F16C conversions, eight lanes at a time;
 * compiled with -mavx2 -mfma -mf16c and called only when the CPU has them.
 * Rounding matches the portable version: fp32 FMA, then round to nearest
 * even into fp16. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "runtime/cpu/attn.h"
#include "runtime/cpu/quant.h"

static void
scale_f16(uint16_t *acc, float ms, uint32_t hd)
{
    __m256 m = _mm256_set1_ps(ms);

    for (uint32_t d = 0; d < hd; d += 8) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc + d)));
        _mm_storeu_si128((__m128i *)(acc + d),
                         _mm256_cvtps_ph(_mm256_mul_ps(a, m),
                                         _MM_FROUND_TO_NEAREST_INT));
    }
}

static void
mad_f16(uint16_t *acc, const uint16_t *v, float vs, uint32_t hd)
{
    __m256 s = _mm256_set1_ps(vs);

    for (uint32_t d = 0; d < hd; d += 8) {
        __m256 a = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(acc + d)));
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + d)));
        _mm_storeu_si128((__m128i *)(acc + d),
                         _mm256_cvtps_ph(_mm256_fmadd_ps(x, s, a),
                                         _MM_FROUND_TO_NEAREST_INT));
    }
}

#define ATTN_FN attn_f16c
#define SCALE_F16 scale_f16
#define MAD_F16 mad_f16
#include "runtime/cpu/attn_body.h"

void ks_cpu_attn_accum_f16c(ks_qtype kv_type, const void *V,
                            uint64_t row_bytes, uint32_t hd, uint32_t n_keys,
                            const float *scores, float scale, float *work,
                            float *out);

void
ks_cpu_attn_accum_f16c(ks_qtype kv_type, const void *V, uint64_t row_bytes,
                       uint32_t hd, uint32_t n_keys, const float *scores,
                       float scale, float *work, float *out)
{
    attn_f16c(kv_type, V, row_bytes, hd, n_keys, scores, scale, work, out);
}

void ks_cpu_attn_scores_f16_avx2(const void *K, uint64_t row_bytes,
                                 uint32_t hd, uint32_t n_keys,
                                 const uint16_t *q, float *scores);

void
ks_cpu_attn_scores_f16_avx2(const void *K, uint64_t row_bytes, uint32_t hd,
                            uint32_t n_keys, const uint16_t *q,
                            float *scores)
{
    const uint8_t *k = K;
    uint32_t np = hd & ~31u;

    for (uint32_t r = 0; r < n_keys; r++, k += row_bytes) {
        const uint16_t *x = (const uint16_t *)k;
        __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(),
                          _mm256_setzero_ps(), _mm256_setzero_ps() };
        __m128 t;
        double sum;

        for (uint32_t i = 0; i < np; i += 32)
            for (int j = 0; j < 4; j++) {
                __m256 a = _mm256_cvtph_ps(
                    _mm_loadu_si128((const __m128i *)(x + i + 8 * j)));
                __m256 b = _mm256_cvtph_ps(
                    _mm_loadu_si128((const __m128i *)(q + i + 8 * j)));
                acc[j] = _mm256_fmadd_ps(a, b, acc[j]);
            }
        acc[0] = _mm256_add_ps(acc[0], acc[2]);
        acc[1] = _mm256_add_ps(acc[1], acc[3]);
        acc[0] = _mm256_add_ps(acc[0], acc[1]);
        t = _mm_add_ps(_mm256_castps256_ps128(acc[0]),
                       _mm256_extractf128_ps(acc[0], 1));
        t = _mm_hadd_ps(t, t);
        sum = (double)_mm_cvtss_f32(_mm_hadd_ps(t, t));
        for (uint32_t i = np; i < hd; i++)
            sum += (double)(ks_fp16_to_f32(x[i]) * ks_fp16_to_f32(q[i]));
        scores[r] = (float)sum;
    }
}
