/* Attention accumulation with F16C conversions, eight lanes at a time;
 * compiled with -mavx2 -mfma -mf16c and called only when the CPU has them.
 * Rounding matches the portable version: fp32 FMA, then round to nearest
 * even into fp16. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "runtime/cpu/attn.h"
#include "runtime/cpu/quant.h"
#include "runtime/cpu/quant_priv.h"

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

/* 8 values of a cache row (f16 or f32) as floats */
static inline __m256
kv_load8(ks_qtype t, const uint8_t *row, uint32_t d)
{
    if (t == KS_QUANT_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * (uint64_t)d)));
    return _mm256_loadu_ps((const float *)(row + 4 * (uint64_t)d));
}

static inline float
kv_load1(ks_qtype t, const uint8_t *row, uint32_t d)
{
    float f;

    if (t == KS_QUANT_F16) {
        uint16_t h;
        memcpy(&h, row + 2 * (uint64_t)d, 2);
        return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
    }
    memcpy(&f, row + 4 * (uint64_t)d, 4);
    return f;
}

/* r[0..7] (rows) to columns, in place */
static inline void
transpose8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* scores of 8 keys at a time, one per lane, each an fma chain over the
 * head dimension in order (hd % 8 == 0); the rest one by one */
static void
kq_tile(ks_qtype t, float *kq, const float *q, const uint8_t *K,
        uint64_t row_bytes, uint32_t hd, uint32_t n, float scale)
{
    uint32_t k = 0;

    for (; k + 8 <= n; k += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (uint32_t d = 0; d < hd; d += 8) {
            __m256 r[8];
            for (int j = 0; j < 8; j++)
                r[j] = kv_load8(t, K + (uint64_t)(k + (uint32_t)j) * row_bytes, d);
            transpose8(r);
            for (int j = 0; j < 8; j++)
                acc = _mm256_fmadd_ps(r[j], _mm256_set1_ps(q[d + (uint32_t)j]), acc);
        }
        acc = _mm256_add_ps(_mm256_mul_ps(acc, _mm256_set1_ps(scale)), _mm256_setzero_ps());
        _mm256_storeu_ps(kq + k, acc);
    }
    for (; k < n; k++) {
        const uint8_t *row = K + (uint64_t)k * row_bytes;
        float s = 0.0f;
        for (uint32_t d = 0; d < hd; d++)
            s = fmaf(kv_load1(t, row, d), q[d], s);
        kq[k] = s * scale + 0.0f;
    }
}

static double
exp_tile(float *kq, float max)
{
    double sum = 0.0;

    for (int g = 0; g < 64; g += 8) {
        __m256 v = ks_v_expf8(_mm256_sub_ps(_mm256_loadu_ps(kq + g), _mm256_set1_ps(max)));
        _mm256_storeu_ps(kq + g, v);
        __m128 h = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        sum += (double)_mm_cvtss_f32(h);
    }
    return sum;
}

static void
v_tile(ks_qtype t, float *acc, const float *p, const uint8_t *V,
       uint64_t row_bytes, uint32_t hd, uint32_t n)
{
    for (uint32_t d = 0; d < hd; d += 8) {
        __m256 a = _mm256_loadu_ps(acc + d);
        const uint8_t *v = V;
        for (uint32_t k = 0; k < n; k++, v += row_bytes)
            a = _mm256_fmadd_ps(kv_load8(t, v, d), _mm256_set1_ps(p[k]), a);
        _mm256_storeu_ps(acc + d, a);
    }
}

#define ATTN_FN attn_f16c
#define SCALE_F16 scale_f16
#define MAD_F16 mad_f16
#define ATTN_TILED_FN attn_tiled_avx2
#define KQ_TILE kq_tile
#define EXP_TILE exp_tile
#define V_TILE v_tile
#include "runtime/cpu/attn_body.h"

void ks_cpu_attn_tiled_avx2(ks_qtype kv_type, const float *q, const void *K,
                            const void *V, uint64_t row_bytes, uint32_t hd,
                            uint32_t first, uint32_t n_keys, float scale,
                            float *kq, float *acc, float *out);

void
ks_cpu_attn_tiled_avx2(ks_qtype kv_type, const float *q, const void *K,
                       const void *V, uint64_t row_bytes, uint32_t hd,
                       uint32_t first, uint32_t n_keys, float scale,
                       float *kq, float *acc, float *out)
{
    attn_tiled_avx2(kv_type, q, K, V, row_bytes, hd, first, n_keys, scale,
                    kq, acc, out);
}

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
