/* Private to runtime/cpu/quant*.c: the block structs of every type the
 * kernels handle and the kernel tables that quant.c dispatches through.
 * Layouts: shared/reference/gguf-and-quants.md section 2 (ggml-common.h). */
#ifndef KS_CPU_QUANT_PRIV_H
#define KS_CPU_QUANT_PRIV_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/cpu/quant.h"

#define KS_QK32 32
#define KS_QKK  256

/* Weight blocks. uint16_t fields hold IEEE half (fp16) bits. */
typedef struct { uint16_t d; uint8_t qs[16]; } ks_blk_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } ks_blk_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } ks_blk_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } ks_blk_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } ks_blk_q8_0;
typedef struct { uint16_t d; uint8_t qs[16]; } ks_blk_iq4_nl;
typedef struct {
    uint8_t scales[16]; /* low nibble scale, high nibble min */
    uint8_t qs[64];
    uint16_t d, dmin;
} ks_blk_q2_k;
typedef struct {
    uint8_t hmask[32];
    uint8_t qs[64];
    uint8_t scales[12];
    uint16_t d;
} ks_blk_q3_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[128];
} ks_blk_q4_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];
    uint8_t qs[128];
} ks_blk_q5_k;
typedef struct {
    uint8_t ql[128];
    uint8_t qh[64];
    int8_t scales[16];
    uint16_t d;
} ks_blk_q6_k;

/* Activation blocks. Q8_1's s is d * sum(qs) as fp16 (d unrounded, as
 * llama.cpp computes it). Q8_K keeps d as f32 and the sums of each 16
 * quants, which the K-quant kernels use for mins and offsets. */
typedef struct { uint16_t d, s; int8_t qs[32]; } ks_blk_q8_1;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } ks_blk_q8_k;

_Static_assert(sizeof(ks_blk_q4_0) == 18, "q4_0");
_Static_assert(sizeof(ks_blk_q4_1) == 20, "q4_1");
_Static_assert(sizeof(ks_blk_q5_0) == 22, "q5_0");
_Static_assert(sizeof(ks_blk_q5_1) == 24, "q5_1");
_Static_assert(sizeof(ks_blk_q8_0) == 34, "q8_0");
_Static_assert(sizeof(ks_blk_q8_1) == 36, "q8_1");
_Static_assert(sizeof(ks_blk_iq4_nl) == 18, "iq4_nl");
_Static_assert(sizeof(ks_blk_q2_k) == 84, "q2_k");
_Static_assert(sizeof(ks_blk_q3_k) == 110, "q3_k");
_Static_assert(sizeof(ks_blk_q4_k) == 144, "q4_k");
_Static_assert(sizeof(ks_blk_q5_k) == 176, "q5_k");
_Static_assert(sizeof(ks_blk_q6_k) == 210, "q6_k");
_Static_assert(sizeof(ks_blk_q8_k) == 292, "q8_k");

/* Scalar IEEE half <-> float: ks_h2f and ks_f2h in driver/base.h. */

static inline float
ks_bf2f(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;

    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t
ks_f2bf(float f)
{
    uint32_t x;

    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet */
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

/* Round to nearest, ties to even, for |v| < 2^22 (ggml's nearest_int). */
static inline int
ks_nearest_int(float v)
{
    float t = v + 12582912.f;
    int32_t i;

    memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* The IQ4_NL codebook (ggml kvalues_iq4nl). */
extern const int8_t ks_iq4nl_values[16];

/* Unpacks the 12-byte 6-bit scale/min array of Q4_K and Q5_K into eight
 * scales and eight mins (bytes). */
static inline void
ks_k4_scales(const uint8_t *b, uint8_t sc[8], uint8_t mn[8])
{
    uint32_t b0, b1, b2, s_hi, m_hi;

    memcpy(&b0, b, 4);
    memcpy(&b1, b + 4, 4);
    memcpy(&b2, b + 8, 4);
    s_hi = (b2 & 0x0f0f0f0fu) | (((b0 >> 6) & 0x03030303u) << 4);
    m_hi = ((b2 >> 4) & 0x0f0f0f0fu) | (((b1 >> 6) & 0x03030303u) << 4);
    b0 &= 0x3f3f3f3fu;
    b1 &= 0x3f3f3f3fu;
    memcpy(sc, &b0, 4);
    memcpy(sc + 4, &s_hi, 4);
    memcpy(mn, &b1, 4);
    memcpy(mn + 4, &m_hi, 4);
}

/* Unpacks Q3_K's sixteen 6-bit scales (stored +32) to signed values. */
static inline void
ks_k3_scales(const uint8_t *b, int8_t sc[16])
{
    for (int k = 0; k < 16; k++) {
        int lo = k < 8 ? (b[k] & 0xF) : (b[k - 8] >> 4);
        int hi = (b[8 + k % 4] >> (2 * (k / 4))) & 3;
        sc[k] = (int8_t)((lo | hi << 4) - 32);
    }
}

/* ggml_v_expf, llama.cpp's AVX2 exponential (an ARM optimized-routines
 * design, about 1.5 ulp), for one lane: fused multiply-adds and bit
 * operations exactly as the 8-lane version (ks_v_expf8) does them. */
static inline float
ks_v_expf(float x)
{
    const float r = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, r), n = z - r, k, u, j, s1, s2;
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    uint32_t zb, e, kb, g;

    memcpy(&zb, &z, 4);
    e = zb << 23;
    kb = e + 0x3f800000u; /* + bits of 1.0f */
    memcpy(&k, &kb, 4);
    u = b * b;
    j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                  fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
             u, 0x1.ffffecp-1f * b);
    if (!(fabsf(n) > 126.0f))
        return fmaf(j, k, k);
    g = n <= 0.0f ? 0x82000000u : 0u;
    kb = g + 0x7f000000u;
    memcpy(&s1, &kb, 4);
    kb = e - g;
    memcpy(&s2, &kb, 4);
    if (fabsf(n) > 192.0f)
        return s1 * s1;
    return fmaf(s2, j, s2) * s1;
}

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* The 8-lane ggml_v_expf (files compiled for AVX2+FMA only). */
static inline __m256
ks_v_expf8(__m256 x)
{
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(
        _mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
    const __m256i c = _mm256_castps_si256(
        _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n),
                      _mm256_set1_ps(126), _CMP_GT_OQ));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b,
                                        _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b,
                                        _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(_mm256_castsi256_ps(c)))
        return _mm256_fmadd_ps(j, k, k);
    const __m256i g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
        _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256i d = _mm256_castps_si256(
        _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n),
                      _mm256_set1_ps(192), _CMP_GT_OQ));
    return _mm256_or_ps(
        _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(_mm256_castsi256_ps(d),
            _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(c),
                                       _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                         _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)))));
}
#endif

/* Kernel signatures; see quant.h for the contracts. matmul with n_tok 1
 * is the matvec. */
typedef void (*ks_matmul_fn)(const void *W, uint64_t row_bytes, uint64_t n,
                             int64_t n_rows, const void *xq,
                             uint64_t xq_stride, int64_t n_tok, float *y,
                             uint64_t ldy);
typedef void (*ks_matvec_fn)(const void *W, uint64_t row_bytes, uint64_t n,
                             int64_t n_rows, const void *xq, float *y);
typedef void (*ks_dequant_fn)(const void *src, float *dst, uint64_t n);
typedef void (*ks_quant_act_fn)(const float *x, void *xq, uint64_t n);

/* g[i] = silu(g[i]) * u[i] for i < n, silu through llama.cpp's 8-lane
 * AVX2 exponential (ggml_v_expf), whatever n is. */
typedef void (*ks_silu_mul_fn)(float *g, const float *u, uint64_t n);

/* llama.cpp's GELU table (ggml_table_gelu_f16): entry h holds, as fp16
 * bits, GELU of the fp16 value h (quant.c builds it once, on first use;
 * 2 entries of padding follow for 32-bit gathers). Thread safe. */
const uint16_t *ks_gelu_table(void);

/* One implementation set. Entries are indexed by weight type, except
 * quant_act, indexed by activation type (F32, F16, BF16, Q8_0, Q8_1,
 * Q8_K). A SIMD filler overwrites the entries it implements and leaves
 * the scalar ones elsewhere.
 *
 * Every product follows, float operation by float operation, one of the
 * paths llama.cpp's CPU backend (x86-64, AVX2+FMA+F16C build) takes, so
 * that the scalar and the SIMD kernels agree bit for bit with each other
 * and with the peer (quant.c picks the path as llama.cpp does):
 *   matvec/matmul  the type's ggml_vec_dot_* (one token, or prefill for
 *                  the types llamafile computes in the same order);
 *   mm_blas        llamafile's tinyBLAS order where it differs from
 *                  vec_dot: F32, F16, BF16 (one 8-lane accumulator) and
 *                  IQ4_NL (one accumulator instead of two);
 *   mm_gemv        the GEMV of weights repacked 8 rows at a time (Q4_0,
 *                  IQ4_NL, Q4_K: one scalar accumulator per output);
 *   mm_gemm        their GEMM (4 tokens at a time; differs from the GEMV
 *                  for Q4_K only);
 *   mm_tiled       ggml's tiled kernel for K-quants (unpacked weights,
 *                  8 or more tokens). */
typedef struct ks_quant_ops {
    ks_matvec_fn    matvec[KS_QUANT_COUNT];
    ks_matmul_fn    matmul[KS_QUANT_COUNT];
    ks_matmul_fn    mm_blas[KS_QUANT_COUNT];
    ks_matmul_fn    mm_gemv[KS_QUANT_COUNT];
    ks_matmul_fn    mm_gemm[KS_QUANT_COUNT];
    ks_matmul_fn    mm_tiled[KS_QUANT_COUNT];
    ks_dequant_fn   dequant[KS_QUANT_COUNT];
    ks_quant_act_fn quant_act[KS_QUANT_COUNT];
    ks_silu_mul_fn  silu_mul;
    ks_silu_mul_fn  gelu_mul;  /* ks_cpu_gelu_mul for n values */
} ks_quant_ops;

void ks_quant_ops_scalar(ks_quant_ops *ops);
#if defined(__x86_64__)
void ks_quant_ops_avx2(ks_quant_ops *ops);
void ks_quant_ops_avxvnni(ks_quant_ops *ops);  /* quant_avxvnni.c */
void ks_quant_ops_avx512(ks_quant_ops *ops);   /* quant_avx512.c */
#endif
#if defined(__aarch64__)
/* ks_quant_ops_neon fills a whole NEON table; the other two overwrite its
 * dot products with their level's (quant_neon_body.h). */
void ks_quant_ops_neon(ks_quant_ops *ops);
void ks_quant_ops_neon_dot(ks_quant_ops *ops);
void ks_quant_ops_neon_i8mm(ks_quant_ops *ops);
#endif

#endif
