/* Scalar reference kernels: fp16/bf16 conversion, dequantization of every
 * CPU type, activation quantization, dot products and weight quantizers.
 *
 * Data flow: a weight row is a run of blocks (shared/reference/
 * gguf-and-quants.md section 2); an activation row is quantized once per
 * matvec into the format ks_cpu_act_type() names, then each weight row is
 * dotted with it using integer sums per block and one float scale per
 * block (or sub-block), as llama.cpp does, so results track it.
 *
 * K-quant super-blocks are first unpacked into 256 small integers with a
 * scale (and min) per 16 elements; the dot product and the dequantizer
 * share that one decoder of the bit layouts.
 *
 * Every product reproduces the float operations of the llama.cpp kernel
 * that computes it (quant_priv.h names them) in portable C: its 8-lane
 * accumulators as arrays updated with fmaf, its horizontal sums as the
 * same trees of additions. The AVX2 file must match these results, and
 * the activation quantizers, bit for bit (tests/quant checks both, and
 * both against hashes of llama.cpp's own results). */
#include <float.h>
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#include "runtime/cpu/quant_priv.h"

const int8_t ks_iq4nl_values[16] = {
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
};

float
ks_fp16_to_f32(uint16_t h)
{
    return ks_h2f(h);
}

#if defined(__x86_64__)
/* The forward pass converts every K and V value it caches one at a time:
 * F16C's vcvtps2ph rounds exactly as ks_f2h (tests/quant checks the two
 * agree, NaNs included) in a fraction of the time. */
__attribute__((target("f16c"))) static uint16_t
f2h_f16c(float f)
{
    return (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0);
}

static int f16c_state; /* 0: not probed yet, 1: present, 2: absent */

static int
probe_f16c(void)
{
    unsigned a, b, c, d;
    int st = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) ? 1 : 2;

    __atomic_store_n(&f16c_state, st, __ATOMIC_RELAXED);
    return st;
}
#endif

uint16_t
ks_f32_to_fp16(float f)
{
#if defined(__x86_64__)
    int st = __atomic_load_n(&f16c_state, __ATOMIC_RELAXED);
    if (__builtin_expect(st == 0, 0))
        st = probe_f16c();
    if (st == 1)
        return f2h_f16c(f);
#endif
    return ks_f2h(f);
}

float
ks_bf16_to_f32(uint16_t h)
{
    return ks_bf2f(h);
}

uint16_t
ks_f32_to_bf16(float f)
{
    return ks_f2bf(f);
}

/* ---- K-quant super-block decoding ------------------------------------ */

/* One super-block as small integers: x[i] = d*sc[i/16]*q[i] - dmin*mn[i/16]. */
typedef struct kblock {
    int8_t q[256];
    int16_t sc[16];
    int16_t mn[16];
    float d, dmin;
} kblock;

static void
unpack_q2_k(const ks_blk_q2_k *b, kblock *k)
{
    int pos = 0;

    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 8; s += 2)
            for (int half = 0; half < 2; half++)
                for (int l = 0; l < 16; l++)
                    k->q[pos++] = (int8_t)((b->qs[32 * h + 16 * half + l] >> s) & 3);
    for (int i = 0; i < 16; i++) {
        k->sc[i] = b->scales[i] & 0xF;
        k->mn[i] = b->scales[i] >> 4;
    }
    k->d = ks_h2f(b->d);
    k->dmin = ks_h2f(b->dmin);
}

static void
unpack_q3_k(const ks_blk_q3_k *b, kblock *k)
{
    int8_t sc[16];
    int pos = 0;

    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 8; s += 2)
            for (int half = 0; half < 2; half++)
                for (int l = 0; l < 16; l++) {
                    int p = 16 * half + l;
                    int m = 4 * h + s / 2;
                    int lo = (b->qs[32 * h + p] >> s) & 3;
                    k->q[pos++] = (int8_t)(lo - ((b->hmask[p] >> m) & 1 ? 0 : 4));
                }
    ks_k3_scales(b->scales, sc);
    for (int i = 0; i < 16; i++) {
        k->sc[i] = sc[i];
        k->mn[i] = 0;
    }
    k->d = ks_h2f(b->d);
    k->dmin = 0;
}

static void
unpack_q4_k(const ks_blk_q4_k *b, kblock *k)
{
    uint8_t sc[8], mn[8];

    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            k->q[64 * g + l] = (int8_t)(b->qs[32 * g + l] & 0xF);
            k->q[64 * g + 32 + l] = (int8_t)(b->qs[32 * g + l] >> 4);
        }
    ks_k4_scales(b->scales, sc, mn);
    for (int i = 0; i < 16; i++) {
        k->sc[i] = sc[i / 2];
        k->mn[i] = mn[i / 2];
    }
    k->d = ks_h2f(b->d);
    k->dmin = ks_h2f(b->dmin);
}

static void
unpack_q5_k(const ks_blk_q5_k *b, kblock *k)
{
    uint8_t sc[8], mn[8];

    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            int lo = b->qs[32 * g + l] & 0xF, hi = b->qs[32 * g + l] >> 4;
            lo |= ((b->qh[l] >> (2 * g)) & 1) << 4;
            hi |= ((b->qh[l] >> (2 * g + 1)) & 1) << 4;
            k->q[64 * g + l] = (int8_t)lo;
            k->q[64 * g + 32 + l] = (int8_t)hi;
        }
    ks_k4_scales(b->scales, sc, mn);
    for (int i = 0; i < 16; i++) {
        k->sc[i] = sc[i / 2];
        k->mn[i] = mn[i / 2];
    }
    k->d = ks_h2f(b->d);
    k->dmin = ks_h2f(b->dmin);
}

static void
unpack_q6_k(const ks_blk_q6_k *b, kblock *k)
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *q = k->q + 128 * h;
        for (int l = 0; l < 32; l++) {
            q[l] = (int8_t)(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
            q[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
    for (int i = 0; i < 16; i++) {
        k->sc[i] = b->scales[i];
        k->mn[i] = 0;
    }
    k->d = ks_h2f(b->d);
    k->dmin = 0;
}

static void
unpack_k(ks_qtype t, const void *blk, kblock *k)
{
    switch (t) {
    case KS_QUANT_Q2_K: unpack_q2_k(blk, k); break;
    case KS_QUANT_Q3_K: unpack_q3_k(blk, k); break;
    case KS_QUANT_Q4_K: unpack_q4_k(blk, k); break;
    case KS_QUANT_Q5_K: unpack_q5_k(blk, k); break;
    default:            unpack_q6_k(blk, k); break;
    }
}

/* ---- dequantization ---------------------------------------------------- */

static void
dq_f32(const void *src, float *dst, uint64_t n)
{
    memcpy(dst, src, n * sizeof(float));
}

static void
dq_f16(const void *src, float *dst, uint64_t n)
{
    const uint16_t *s = src;

    for (uint64_t i = 0; i < n; i++)
        dst[i] = ks_h2f(s[i]);
}

static void
dq_bf16(const void *src, float *dst, uint64_t n)
{
    const uint16_t *s = src;

    for (uint64_t i = 0; i < n; i++)
        dst[i] = ks_bf2f(s[i]);
}

static void
dq_q4_0(const void *src, float *dst, uint64_t n)
{
    const ks_blk_q4_0 *b = src;

    for (uint64_t i = 0; i < n / 32; i++, dst += 32) {
        float d = ks_h2f(b[i].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)((b[i].qs[j] & 0xF) - 8) * d;
            dst[j + 16] = (float)((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

static void
dq_q4_1(const void *src, float *dst, uint64_t n)
{
    const ks_blk_q4_1 *b = src;

    for (uint64_t i = 0; i < n / 32; i++, dst += 32) {
        float d = ks_h2f(b[i].d), m = ks_h2f(b[i].m);
        for (int j = 0; j < 16; j++) {
            dst[j] = (float)(b[i].qs[j] & 0xF) * d + m;
            dst[j + 16] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static void
dq_q5_0(const void *src, float *dst, uint64_t n)
{
    const ks_blk_q5_0 *b = src;

    for (uint64_t i = 0; i < n / 32; i++, dst += 32) {
        float d = ks_h2f(b[i].d);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < 16; j++) {
            int lo = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = (float)(lo - 16) * d;
            dst[j + 16] = (float)(hi - 16) * d;
        }
    }
}

static void
dq_q5_1(const void *src, float *dst, uint64_t n)
{
    const ks_blk_q5_1 *b = src;

    for (uint64_t i = 0; i < n / 32; i++, dst += 32) {
        float d = ks_h2f(b[i].d), m = ks_h2f(b[i].m);
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        for (int j = 0; j < 16; j++) {
            int lo = (b[i].qs[j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            int hi = (b[i].qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
            dst[j] = (float)lo * d + m;
            dst[j + 16] = (float)hi * d + m;
        }
    }
}

static void
dq_q8_0(const void *src, float *dst, uint64_t n)
{
    const ks_blk_q8_0 *b = src;

    for (uint64_t i = 0; i < n / 32; i++, dst += 32) {
        float d = ks_h2f(b[i].d);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

static void
dq_q8_1(const void *src, float *dst, uint64_t n)
{
    const ks_blk_q8_1 *b = src;

    for (uint64_t i = 0; i < n / 32; i++, dst += 32) {
        float d = ks_h2f(b[i].d);
        for (int j = 0; j < 32; j++)
            dst[j] = (float)b[i].qs[j] * d;
    }
}

static void
dq_q8_k(const void *src, float *dst, uint64_t n)
{
    const ks_blk_q8_k *b = src;

    for (uint64_t i = 0; i < n / 256; i++, dst += 256)
        for (int j = 0; j < 256; j++)
            dst[j] = (float)b[i].qs[j] * b[i].d;
}

static void
dq_iq4_nl(const void *src, float *dst, uint64_t n)
{
    const ks_blk_iq4_nl *b = src;

    for (uint64_t i = 0; i < n / 32; i++, dst += 32) {
        float d = ks_h2f(b[i].d);
        for (int j = 0; j < 16; j++) {
            dst[j] = d * (float)ks_iq4nl_values[b[i].qs[j] & 0xF];
            dst[j + 16] = d * (float)ks_iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

static void
dq_k(ks_qtype t, const void *src, float *dst, uint64_t n)
{
    uint32_t bytes = ks_qtype_get(t)->block_bytes;
    kblock k;

    for (uint64_t i = 0; i < n / 256; i++, dst += 256) {
        unpack_k(t, (const uint8_t *)src + i * bytes, &k);
        for (int s = 0; s < 16; s++) {
            float dl = k.d * (float)k.sc[s], ml = k.dmin * (float)k.mn[s];
            for (int l = 0; l < 16; l++)
                dst[16 * s + l] = dl * (float)k.q[16 * s + l] - ml;
        }
    }
}

static void dq_q2_k(const void *s, float *d, uint64_t n) { dq_k(KS_QUANT_Q2_K, s, d, n); }
static void dq_q3_k(const void *s, float *d, uint64_t n) { dq_k(KS_QUANT_Q3_K, s, d, n); }
static void dq_q4_k(const void *s, float *d, uint64_t n) { dq_k(KS_QUANT_Q4_K, s, d, n); }
static void dq_q5_k(const void *s, float *d, uint64_t n) { dq_k(KS_QUANT_Q5_K, s, d, n); }
static void dq_q6_k(const void *s, float *d, uint64_t n) { dq_k(KS_QUANT_Q6_K, s, d, n); }

/* ---- activation quantization ----------------------------------------- */

/* llama.cpp's x86 quantize_row_q8_0/q8_1: d = amax/127 stored as fp16,
 * quants round(x * 127/amax) with ties to even (not x / fp16(d)). */
static void
qa_q8_0(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_0 *y = xq;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.f;
        float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = ks_f2h(d);
        for (int j = 0; j < 32; j++) {
            float v = x[j] * id;
            y[i].qs[j] = (int8_t)ks_nearest_int(v);
        }
    }
}

static void
qa_q8_1(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_1 *y = xq;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.f;
        float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = ks_f2h(d);
        for (int j = 0; j < 32; j++) {
            float v = x[j] * id;
            int q = ks_nearest_int(v);
            y[i].qs[j] = (int8_t)q;
            sum += q;
        }
        y[i].s = ks_f2h(d * (float)sum);
    }
}

/* llama.cpp's quantize_row_q8_K_ref: scale by -127/max where max is the
 * signed value of largest magnitude (first one on ties). */
static void
qa_q8_k(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_k *y = xq;

    for (uint64_t i = 0; i < n / 256; i++, x += 256) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        float iscale = -127.f / max;
        for (int j = 0; j < 256; j++) {
            float v = iscale * x[j];
            int q = ks_nearest_int(v);
            y[i].qs[j] = (int8_t)(q < 127 ? q : 127);
        }
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++)
                sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

static void
qa_f32(const float *x, void *xq, uint64_t n)
{
    memcpy(xq, x, n * sizeof(float));
}

static void
qa_f16(const float *x, void *xq, uint64_t n)
{
    uint16_t *y = xq;

    for (uint64_t i = 0; i < n; i++)
        y[i] = ks_f2h(x[i]);
}

static void
qa_bf16(const float *x, void *xq, uint64_t n)
{
    uint16_t *y = xq;

    for (uint64_t i = 0; i < n; i++)
        y[i] = ks_f2bf(x[i]);
}

/* ---- dot products ------------------------------------------------------
 * Each product reproduces, operation by operation, the llama.cpp AVX2
 * kernel that computes it there (quant_priv.h lists them): an 8-lane
 * float accumulator becomes an array of 8 floats updated with fmaf in
 * the same order, a horizontal sum the same tree of additions. Integer
 * sums are exact in any order, but which elements a lane holds decides
 * the float results, and is kept: lane l of a 32-byte step holds its
 * bytes 4l..4l+3. */

/* ggml's hsum_float_8 and llamafile's hsum: high + low half, then
 * (0 + 2) + (1 + 3). */
static float
hsum8(const float a[8])
{
    float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6];
    float t3 = a[3] + a[7];

    return (t0 + t2) + (t1 + t3);
}

/* GGML_F32x8_REDUCE of four accumulators: (0 + 2) + (1 + 3) lane-wise,
 * low + high half, then two horizontal adds: (0 + 1) + (2 + 3). */
static float
reduce4x8(float a[4][8])
{
    float v[8], t0, t1, t2, t3;

    for (int l = 0; l < 8; l++)
        v[l] = (a[0][l] + a[2][l]) + (a[1][l] + a[3][l]);
    t0 = v[0] + v[4];
    t1 = v[1] + v[5];
    t2 = v[2] + v[6];
    t3 = v[3] + v[7];
    return (t0 + t1) + (t2 + t3);
}

typedef float (*load_fn)(const void *p, uint64_t i);

static float ld_f32(const void *p, uint64_t i) { return ((const float *)p)[i]; }
static float ld_f16(const void *p, uint64_t i) { return ks_h2f(((const uint16_t *)p)[i]); }
static float ld_bf16(const void *p, uint64_t i) { return ks_bf2f(((const uint16_t *)p)[i]); }

/* ggml_vec_dot_f32: four 8-lane accumulators over steps of 32, reduced
 * to a float; of the rest, what GCC vectorized (groups of 8, then of 4)
 * is multiplied and then added one by one, the last 0-3 are fused. */
static float
dot_f32_vd(const void *w, const void *x, uint64_t n)
{
    const float *a = w, *b = x;
    uint64_t np = n & ~(uint64_t)31, rest = n - np, i, nm;
    float acc[4][8] = { { 0 } }, s;

    for (i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++)
                acc[j][l] = fmaf(a[i + 8 * j + l], b[i + 8 * j + l],
                                 acc[j][l]);
    s = reduce4x8(acc);
    nm = rest >= 8 ? rest & ~(uint64_t)7 : 0;
    nm += rest - nm >= 4 ? 4 : 0;
    for (i = np; i < np + nm; i++) {
        float p = a[i] * b[i]; /* rounded: no contraction across statements */
        s = s + p;
    }
    for (; i < n; i++)
        s = fmaf(a[i], b[i], s);
    return s;
}

/* ggml_vec_dot_f16: the same four accumulators and reduction, the rest
 * summed in double. */
static float
dot_f16_vd(const void *w, const void *x, uint64_t n)
{
    uint64_t np = n & ~(uint64_t)31, i;
    float acc[4][8] = { { 0 } };
    double s;

    for (i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++)
                acc[j][l] = fmaf(ld_f16(w, i + 8 * j + l),
                                 ld_f16(x, i + 8 * j + l), acc[j][l]);
    s = (double)reduce4x8(acc);
    for (; i < n; i++)
        s += (double)(ld_f16(w, i) * ld_f16(x, i));
    return (float)s;
}

/* ggml_vec_dot_bf16: four accumulators over steps of 32, summed as
 * (0 + 2) + (1 + 3) and then by hsum8, the rest in double. */
static float
dot_bf16_vd(const void *w, const void *x, uint64_t n)
{
    float acc[4][8] = { { 0 } }, v[8];
    uint64_t i = 0;
    double s;

    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++)
                acc[j][l] = fmaf(ld_bf16(w, i + 8 * j + l),
                                 ld_bf16(x, i + 8 * j + l), acc[j][l]);
    for (int l = 0; l < 8; l++)
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    s = 0.0 + (double)hsum8(v);
    for (; i < n; i++)
        s += (double)(ld_bf16(w, i) * ld_bf16(x, i));
    return (float)s;
}

/* llamafile's tinyBLAS for float types: one 8-lane accumulator over
 * steps of 8, then hsum8 (used only when n is a multiple of 8; a rest
 * would be added in order). */
static float
dot_float_blas(load_fn ld, const void *w, const void *x, uint64_t n)
{
    float acc[8] = { 0 }, s;
    uint64_t i = 0;

    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] = fmaf(ld(w, i + (uint64_t)l), ld(x, i + (uint64_t)l),
                          acc[l]);
    s = hsum8(acc);
    for (; i < n; i++)
        s = fmaf(ld(w, i), ld(x, i), s);
    return s;
}

static float dot_f32_blas(const void *w, const void *x, uint64_t n) { return dot_float_blas(ld_f32, w, x, n); }
static float dot_f16_blas(const void *w, const void *x, uint64_t n) { return dot_float_blas(ld_f16, w, x, n); }
static float dot_bf16_blas(const void *w, const void *x, uint64_t n) { return dot_float_blas(ld_bf16, w, x, n); }

/* ---- 32-element blocks ---- */

/* Weight block |b| of type |t| as 32 integers in element order (offsets
 * applied for the symmetric types); *d and *m get its scale and min. */
static void
unpack32(ks_qtype t, const uint8_t *b, int q[32], float *d, float *m)
{
    uint16_t h;
    uint32_t qh;

    memcpy(&h, b, 2);
    *d = ks_h2f(h);
    *m = 0.0f;
    switch (t) {
    case KS_QUANT_Q4_0:
        for (int j = 0; j < 16; j++) {
            q[j] = (b[2 + j] & 0xF) - 8;
            q[j + 16] = (b[2 + j] >> 4) - 8;
        }
        break;
    case KS_QUANT_Q4_1:
        memcpy(&h, b + 2, 2);
        *m = ks_h2f(h);
        for (int j = 0; j < 16; j++) {
            q[j] = b[4 + j] & 0xF;
            q[j + 16] = b[4 + j] >> 4;
        }
        break;
    case KS_QUANT_Q5_0:
        memcpy(&qh, b + 2, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = ((b[6 + j] & 0xF) | (int)(((qh >> j) & 1) << 4)) - 16;
            q[j + 16] = ((b[6 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4)) - 16;
        }
        break;
    case KS_QUANT_Q5_1:
        memcpy(&h, b + 2, 2);
        *m = ks_h2f(h);
        memcpy(&qh, b + 4, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (b[8 + j] & 0xF) | (int)(((qh >> j) & 1) << 4);
            q[j + 16] = (b[8 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        }
        break;
    case KS_QUANT_Q8_0:
        for (int j = 0; j < 32; j++)
            q[j] = (int8_t)b[2 + j];
        break;
    default: /* IQ4_NL */
        for (int j = 0; j < 16; j++) {
            q[j] = ks_iq4nl_values[b[2 + j] & 0xF];
            q[j + 16] = ks_iq4nl_values[b[2 + j] >> 4];
        }
        break;
    }
}

/* Activation block: 32 int8, scale, and Q8_1's s. */
static const int8_t *
act32(ks_qtype t, const uint8_t *x, uint64_t i, float *d, float *s)
{
    uint16_t h;

    if (ks_cpu_act_type(t) == KS_QUANT_Q8_1) {
        const uint8_t *b = x + i * sizeof(ks_blk_q8_1);
        memcpy(&h, b, 2);
        *d = ks_h2f(h);
        memcpy(&h, b + 2, 2);
        *s = ks_h2f(h);
        return (const int8_t *)(b + 4);
    }
    x += i * sizeof(ks_blk_q8_0);
    memcpy(&h, x, 2);
    *d = ks_h2f(h);
    *s = 0.0f;
    return (const int8_t *)(x + 2);
}

enum { ORD_VD, ORD_BLAS, ORD_GEMV, ORD_GEMM, ORD_TILED };

/* The 32-element types. ORD_VD: ggml_vec_dot_* (and tinyBLAS, which sums
 * Q4_0/Q5_0/Q8_0 the same way): 8 lanes, fma(d_w*d_x, lane), hsum8,
 * plus a fused sum of m*s for Q4_1/Q5_1; IQ4_NL alternates two
 * accumulators over block pairs and fuses an odd last block in scalar.
 * ORD_BLAS (IQ4_NL): one accumulator. ORD_GEMV/GEMM (repacked Q4_0,
 * IQ4_NL): a single float, fma(integer sum, d_w*d_x) per block. */
static float
dot32(ks_qtype t, int ord, const void *w, const void *x, uint64_t n)
{
    const uint32_t bb = ks_qtype_get(t)->block_bytes;
    const uint64_t nb = n / 32;
    float acc[2][8] = { { 0 } }, chain = 0.0f, summs = 0.0f;
    bool with_min = t == KS_QUANT_Q4_1 || t == KS_QUANT_Q5_1;

    for (uint64_t i = 0; i < nb; i++) {
        int q[32], lane[8] = { 0 }, sum = 0;
        float dw, mw, dx, sx;
        const int8_t *y = act32(t, x, i, &dx, &sx);
        unpack32(t, (const uint8_t *)w + i * bb, q, &dw, &mw);
        for (int e = 0; e < 32; e++)
            lane[e / 4] += q[e] * y[e];
        for (int l = 0; l < 8; l++)
            sum += lane[l];
        if (ord == ORD_GEMV || ord == ORD_GEMM) {
            chain = fmaf((float)sum, dw * dx, chain);
            continue;
        }
        if (t == KS_QUANT_IQ4_NL && ord == ORD_VD && i == nb - 1 &&
            nb % 2 == 1) { /* the scalar tail; the pairs are done */
            float v[8];
            for (int l = 0; l < 8; l++)
                v[l] = acc[0][l] + acc[1][l];
            return fmaf((float)sum, dx * dw, hsum8(v));
        }
        float *a = acc[t == KS_QUANT_IQ4_NL && ord == ORD_VD ? i % 2 : 0];
        float dd = dw * dx;
        for (int l = 0; l < 8; l++)
            a[l] = fmaf(dd, (float)lane[l], a[l]);
        if (with_min)
            summs = fmaf(mw, sx, summs);
    }
    if (ord == ORD_GEMV || ord == ORD_GEMM)
        return chain;
    if (t == KS_QUANT_IQ4_NL && ord == ORD_VD) {
        float v[8];
        for (int l = 0; l < 8; l++)
            v[l] = acc[0][l] + acc[1][l];
        return hsum8(v);
    }
    return with_min ? hsum8(acc[0]) + summs : hsum8(acc[0]);
}

/* ---- K-quants against Q8_K ---- */

/* ORD_VD: ggml_vec_dot_qN_K_q8_K. Lane l holds the elements e with
 * e % 32 in 4l..4l+3, each times its 16-element sub-block's scale;
 * one fma(d_w*d_x, lane) per super-block, then hsum8. Mins and offsets:
 *   Q2_K  a first fma(-d_x*dmin, mins of sub-blocks 2l, 2l+1) per lane;
 *   Q3_K  signed quants, no separate term;
 *   Q4_K  a 4-lane accumulator of -d_x*dmin * (mins of pairs of 32),
 *         added as (0 + 2) + (1 + 3) after hsum8;
 *   Q5_K  a scalar fma(-d_x*dmin, all mins) per super-block, added last;
 *   Q6_K  unsigned quants, minus 32 * (scale * bsum of sub-blocks 2l,
 *         2l+1) in lane l.
 * ORD_GEMV (repacked Q4_K): two single floats, fma(integer sum,
 * d_w*d_x) and fma(integer mins, dmin_w*d_x), subtracted at the end;
 * ORD_GEMM the same per pair of 32-element sub-blocks.
 * ORD_TILED (ggml's tiled K-quant kernel, 8 or more tokens): one float,
 * per super-block fma(d_w * signed integer sum [- dmin_w * mins], d_x),
 * the mins (Q2_K, Q4_K, Q5_K) fused in with fma(-dmin_w, mins, .). */
/* One weight row against |nt| activation rows |xs| bytes apart (token j's
 * result to y[j * ldy]), each summed exactly as dot_k sums it alone: a
 * super-block is unpacked once for up to KT tokens (verification). */
#define KT 8

static void
dot_k_rows(ks_qtype t, int ord, const void *w, const void *x, uint64_t xs,
           uint64_t n, int64_t nt, float *y, uint64_t ldy)
{
    uint32_t bytes = ks_qtype_get(t)->block_bytes;

    for (int64_t j0 = 0; j0 < nt; j0 += KT) {
        int64_t m = nt - j0 < KT ? nt - j0 : KT;
        float acc[KT][8] = { { 0 } }, accm[KT][4] = { { 0 } }, summs[KT] = { 0 };
        float chain[KT] = { 0 }, chain_m[KT] = { 0 };
        kblock k;

        for (uint64_t i = 0; i < n / 256; i++) {
            unpack_k(t, (const uint8_t *)w + i * bytes, &k);
            for (int64_t u = 0; u < m; u++) {
                const ks_blk_q8_k *bi =
                    (const ks_blk_q8_k *)((const uint8_t *)x + (uint64_t)(j0 + u) * xs) + i;
                int lane[8] = { 0 }, sub[16] = { 0 };
                for (int e = 0; e < 256; e++) {
                    int q = k.q[e] + (t == KS_QUANT_Q6_K ? 32 : 0);
                    lane[(e % 32) / 4] += k.sc[e / 16] * q * bi->qs[e];
                    sub[e / 16] += q * bi->qs[e];
                }
                if (ord == ORD_TILED) {
                    int s1 = 0, s2 = 0;
                    for (int l = 0; l < 8; l++)
                        s1 += lane[l];
                    if (t == KS_QUANT_Q6_K)
                        for (int j = 0; j < 16; j++)
                            s1 -= 32 * k.sc[j] * bi->bsums[j];
                    for (int j = 0; j < 16; j++)
                        s2 += k.mn[j] * bi->bsums[j];
                    float res = k.d * (float)s1;
                    if (t == KS_QUANT_Q2_K || t == KS_QUANT_Q4_K || t == KS_QUANT_Q5_K)
                        res = fmaf(-k.dmin, (float)s2, res);
                    chain[u] = fmaf(res, bi->d, chain[u]);
                    continue;
                }
                if (ord == ORD_GEMV || ord == ORD_GEMM) { /* Q4_K */
                    float dd = k.d * bi->d, dm = k.dmin * bi->d;
                    int is = 0, im = 0;
                    for (int p = 0; p < 4; p++) {
                        int s2 = 0, m2 = 0;
                        for (int j = 2 * p; j < 2 * p + 2; j++) {
                            s2 += k.sc[2 * j] * (sub[2 * j] + sub[2 * j + 1]);
                            m2 += k.mn[2 * j] * (bi->bsums[2 * j] + bi->bsums[2 * j + 1]);
                        }
                        if (ord == ORD_GEMM) {
                            chain[u] = fmaf((float)s2, dd, chain[u]);
                            chain_m[u] = fmaf((float)m2, dm, chain_m[u]);
                        }
                        is += s2;
                        im += m2;
                    }
                    if (ord == ORD_GEMV) {
                        chain[u] = fmaf((float)is, dd, chain[u]);
                        chain_m[u] = fmaf((float)im, dm, chain_m[u]);
                    }
                    continue;
                }
                float d = bi->d * k.d, dmin = -bi->d * k.dmin;
                if (t == KS_QUANT_Q6_K)
                    for (int l = 0; l < 8; l++)
                        lane[l] -= 32 * (k.sc[2 * l] * bi->bsums[2 * l] +
                                         k.sc[2 * l + 1] * bi->bsums[2 * l + 1]);
                if (t == KS_QUANT_Q2_K)
                    for (int l = 0; l < 8; l++)
                        acc[u][l] = fmaf(dmin, (float)(k.mn[2 * l] * bi->bsums[2 * l] +
                                                    k.mn[2 * l + 1] * bi->bsums[2 * l + 1]),
                                      acc[u][l]);
                if (t == KS_QUANT_Q4_K)
                    for (int l = 0; l < 4; l++)
                        accm[u][l] = fmaf(dmin, (float)(
                            k.mn[4 * l] * (bi->bsums[4 * l] + bi->bsums[4 * l + 1]) +
                            k.mn[4 * l + 2] * (bi->bsums[4 * l + 2] + bi->bsums[4 * l + 3])),
                            accm[u][l]);
                if (t == KS_QUANT_Q5_K) {
                    int im = 0;
                    for (int j = 0; j < 8; j++)
                        im += k.mn[2 * j] * (bi->bsums[2 * j] + bi->bsums[2 * j + 1]);
                    summs[u] = fmaf((float)im, dmin, summs[u]);
                }
                for (int l = 0; l < 8; l++)
                    acc[u][l] = fmaf(d, (float)lane[l], acc[u][l]);
            }
        }
        for (int64_t u = 0; u < m; u++) {
            float v;
            if (ord == ORD_TILED)
                v = chain[u];
            else if (ord == ORD_GEMV || ord == ORD_GEMM)
                v = chain[u] - chain_m[u];
            else if (t == KS_QUANT_Q4_K)
                v = hsum8(acc[u]) + ((accm[u][0] + accm[u][2]) + (accm[u][1] + accm[u][3]));
            else if (t == KS_QUANT_Q5_K)
                v = hsum8(acc[u]) + summs[u];
            else
                v = hsum8(acc[u]);
            y[(uint64_t)(j0 + u) * ldy] = v;
        }
    }
}

#define DOT32(name, T)                                                      \
    static float dot_##name##_vd(const void *w, const void *x, uint64_t n)  \
    { return dot32(KS_QUANT_##T, ORD_VD, w, x, n); }
DOT32(q4_0, Q4_0)
DOT32(q4_1, Q4_1)
DOT32(q5_0, Q5_0)
DOT32(q5_1, Q5_1)
DOT32(q8_0, Q8_0)
DOT32(iq4_nl, IQ4_NL)
#undef DOT32
static float dot_iq4_nl_blas(const void *w, const void *x, uint64_t n) { return dot32(KS_QUANT_IQ4_NL, ORD_BLAS, w, x, n); }
static float dot_q4_0_gemv(const void *w, const void *x, uint64_t n) { return dot32(KS_QUANT_Q4_0, ORD_GEMV, w, x, n); }
static float dot_iq4_nl_gemv(const void *w, const void *x, uint64_t n) { return dot32(KS_QUANT_IQ4_NL, ORD_GEMV, w, x, n); }


#define KS_SCALAR_MM(name, dot)                                             \
    static void mm_##name(const void *W, uint64_t row_bytes, uint64_t n,    \
                          int64_t n_rows, const void *xq, uint64_t xs,      \
                          int64_t n_tok, float *y, uint64_t ldy)            \
    {                                                                       \
        for (int64_t t = 0; t < n_tok; t++)                                 \
            for (int64_t r = 0; r < n_rows; r++)                            \
                y[(uint64_t)t * ldy + (uint64_t)r] = dot(                   \
                    (const uint8_t *)W + (uint64_t)r * row_bytes,           \
                    (const uint8_t *)xq + (uint64_t)t * xs, n);             \
    }

#define KS_SCALAR_MV(name)                                                  \
    static void mv_##name(const void *W, uint64_t row_bytes, uint64_t n,    \
                          int64_t n_rows, const void *xq, float *y)         \
    {                                                                       \
        mm_##name(W, row_bytes, n, n_rows, xq, 0, 1, y, 0);                 \
    }

#define KS_SCALAR_VD(name) KS_SCALAR_MM(name, dot_##name##_vd) KS_SCALAR_MV(name)

/* K-quants: one weight row at a time against all tokens (dot_k_rows). */
#define KS_SCALAR_MMK(name, T, ord)                                         \
    static void mm_##name(const void *W, uint64_t row_bytes, uint64_t n,    \
                          int64_t n_rows, const void *xq, uint64_t xs,      \
                          int64_t n_tok, float *y, uint64_t ldy)            \
    {                                                                       \
        for (int64_t r = 0; r < n_rows; r++)                                \
            dot_k_rows(KS_QUANT_##T, ord,                                   \
                       (const uint8_t *)W + (uint64_t)r * row_bytes, xq,    \
                       xs, n, n_tok, y + r, ldy);                           \
    }

KS_SCALAR_VD(f32)
KS_SCALAR_VD(f16)
KS_SCALAR_VD(bf16)
KS_SCALAR_VD(q4_0)
KS_SCALAR_VD(q4_1)
KS_SCALAR_VD(q5_0)
KS_SCALAR_VD(q5_1)
KS_SCALAR_VD(q8_0)
KS_SCALAR_VD(iq4_nl)
KS_SCALAR_MMK(q2_k, Q2_K, ORD_VD) KS_SCALAR_MV(q2_k)
KS_SCALAR_MMK(q3_k, Q3_K, ORD_VD) KS_SCALAR_MV(q3_k)
KS_SCALAR_MMK(q4_k, Q4_K, ORD_VD) KS_SCALAR_MV(q4_k)
KS_SCALAR_MMK(q5_k, Q5_K, ORD_VD) KS_SCALAR_MV(q5_k)
KS_SCALAR_MMK(q6_k, Q6_K, ORD_VD) KS_SCALAR_MV(q6_k)
KS_SCALAR_MM(f32_blas, dot_f32_blas)
KS_SCALAR_MM(f16_blas, dot_f16_blas)
KS_SCALAR_MM(bf16_blas, dot_bf16_blas)
KS_SCALAR_MM(iq4_nl_blas, dot_iq4_nl_blas)
KS_SCALAR_MM(q4_0_gemv, dot_q4_0_gemv)
KS_SCALAR_MM(iq4_nl_gemv, dot_iq4_nl_gemv)
KS_SCALAR_MMK(q4_k_gemv, Q4_K, ORD_GEMV)
KS_SCALAR_MMK(q4_k_gemm, Q4_K, ORD_GEMM)
KS_SCALAR_MMK(q2_k_tiled, Q2_K, ORD_TILED)
KS_SCALAR_MMK(q3_k_tiled, Q3_K, ORD_TILED)
KS_SCALAR_MMK(q4_k_tiled, Q4_K, ORD_TILED)
KS_SCALAR_MMK(q5_k_tiled, Q5_K, ORD_TILED)
KS_SCALAR_MMK(q6_k_tiled, Q6_K, ORD_TILED)

/* ---- SiLU ---------------------------------------------------------------
 * x / (1 + exp(-x)) * u as ggml_vec_swiglu_f32's vector loop computes
 * it, with ks_v_expf (quant_priv.h). */

static void
silu_mul(float *g, const float *u, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + ks_v_expf(0.0f - g[i])) * u[i];
}

/* ---- GELU: llama.cpp's fp16 table, exact outside (-10, 10) ---------- */

static void
gelu_mul(float *g, const float *u, uint64_t n)
{
    const uint16_t *tab = ks_gelu_table();

    for (uint64_t i = 0; i < n; i++) {
        float x = g[i], y;
        if (x <= -10.0f)
            y = 0.0f;
        else if (x >= 10.0f)
            y = x;
        else
            y = ks_h2f(tab[ks_f2h(x)]);
        g[i] = y * u[i];
    }
}

void
ks_quant_ops_scalar(ks_quant_ops *ops)
{
    memset(ops, 0, sizeof(*ops));
#define SET(T, name)                         \
    ops->matvec[KS_QUANT_##T] = mv_##name;   \
    ops->matmul[KS_QUANT_##T] = mm_##name;   \
    ops->dequant[KS_QUANT_##T] = dq_##name;
    SET(F32, f32)
    SET(F16, f16)
    SET(BF16, bf16)
    SET(Q4_0, q4_0)
    SET(Q4_1, q4_1)
    SET(Q5_0, q5_0)
    SET(Q5_1, q5_1)
    SET(Q8_0, q8_0)
    SET(IQ4_NL, iq4_nl)
    SET(Q2_K, q2_k)
    SET(Q3_K, q3_k)
    SET(Q4_K, q4_k)
    SET(Q5_K, q5_k)
    SET(Q6_K, q6_k)
#undef SET
    ops->mm_blas[KS_QUANT_F32] = mm_f32_blas;
    ops->mm_blas[KS_QUANT_F16] = mm_f16_blas;
    ops->mm_blas[KS_QUANT_BF16] = mm_bf16_blas;
    ops->mm_blas[KS_QUANT_IQ4_NL] = mm_iq4_nl_blas;
    ops->mm_gemv[KS_QUANT_Q4_0] = mm_q4_0_gemv;
    ops->mm_gemm[KS_QUANT_Q4_0] = mm_q4_0_gemv;
    ops->mm_gemv[KS_QUANT_IQ4_NL] = mm_iq4_nl_gemv;
    ops->mm_gemm[KS_QUANT_IQ4_NL] = mm_iq4_nl_gemv;
    ops->mm_gemv[KS_QUANT_Q4_K] = mm_q4_k_gemv;
    ops->mm_gemm[KS_QUANT_Q4_K] = mm_q4_k_gemm;
    ops->mm_tiled[KS_QUANT_Q2_K] = mm_q2_k_tiled;
    ops->mm_tiled[KS_QUANT_Q3_K] = mm_q3_k_tiled;
    ops->mm_tiled[KS_QUANT_Q4_K] = mm_q4_k_tiled;
    ops->mm_tiled[KS_QUANT_Q5_K] = mm_q5_k_tiled;
    ops->mm_tiled[KS_QUANT_Q6_K] = mm_q6_k_tiled;
    ops->dequant[KS_QUANT_Q8_1] = dq_q8_1;
    ops->dequant[KS_QUANT_Q8_K] = dq_q8_k;
    ops->quant_act[KS_QUANT_F32] = qa_f32;
    ops->quant_act[KS_QUANT_F16] = qa_f16;
    ops->quant_act[KS_QUANT_BF16] = qa_bf16;
    ops->quant_act[KS_QUANT_Q8_0] = qa_q8_0;
    ops->quant_act[KS_QUANT_Q8_1] = qa_q8_1;
    ops->quant_act[KS_QUANT_Q8_K] = qa_q8_k;
    ops->silu_mul = silu_mul;
    ops->gelu_mul = gelu_mul;
}

/* ---- weight quantization ------------------------------------------------
 * The 32-element types follow llama.cpp's quantize_row_*_ref exactly, so
 * files we write match llama-quantize's output. The K-quants and IQ4_NL
 * use a simpler direct fit (min/max per sub-block, one least-squares
 * refinement for IQ4_NL): correct and close, not bit-identical. */

static void
qw_q4_0(const float *x, void *dst, uint64_t n)
{
    ks_blk_q4_0 *y = dst;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ks_f2h(d);
        for (int j = 0; j < 16; j++) {
            int a = (int)(x[j] * id + 8.5f), b = (int)(x[j + 16] * id + 8.5f);
            a = a < 15 ? a : 15;
            b = b < 15 ? b : 15;
            y[i].qs[j] = (uint8_t)(a | b << 4);
        }
    }
}

static void
qw_q4_1(const float *x, void *dst, uint64_t n)
{
    ks_blk_q4_1 *y = dst;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            min = x[j] < min ? x[j] : min;
            max = x[j] > max ? x[j] : max;
        }
        float d = (max - min) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ks_f2h(d);
        y[i].m = ks_f2h(min);
        for (int j = 0; j < 16; j++) {
            int a = (int)((x[j] - min) * id + 0.5f);
            int b = (int)((x[j + 16] - min) * id + 0.5f);
            a = a < 15 ? a : 15;
            b = b < 15 ? b : 15;
            y[i].qs[j] = (uint8_t)(a | b << 4);
        }
    }
}

static void
qw_q5_0(const float *x, void *dst, uint64_t n)
{
    ks_blk_q5_0 *y = dst;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f, max = 0.0f;
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -16.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ks_f2h(d);
        for (int j = 0; j < 16; j++) {
            int a = (int)(x[j] * id + 16.5f), b = (int)(x[j + 16] * id + 16.5f);
            a = a < 31 ? a : 31;
            b = b < 31 ? b : 31;
            y[i].qs[j] = (uint8_t)((a & 0xF) | (b & 0xF) << 4);
            qh |= (uint32_t)((a >> 4) & 1) << j;
            qh |= (uint32_t)((b >> 4) & 1) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

static void
qw_q5_1(const float *x, void *dst, uint64_t n)
{
    ks_blk_q5_1 *y = dst;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++) {
            min = x[j] < min ? x[j] : min;
            max = x[j] > max ? x[j] : max;
        }
        float d = (max - min) / 31.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ks_f2h(d);
        y[i].m = ks_f2h(min);
        for (int j = 0; j < 16; j++) {
            int a = (int)((x[j] - min) * id + 0.5f);
            int b = (int)((x[j + 16] - min) * id + 0.5f);
            a = a < 31 ? a : 31;
            b = b < 31 ? b : 31;
            y[i].qs[j] = (uint8_t)((a & 0xF) | (b & 0xF) << 4);
            qh |= (uint32_t)((a >> 4) & 1) << j;
            qh |= (uint32_t)((b >> 4) & 1) << (j + 16);
        }
        memcpy(y[i].qh, &qh, 4);
    }
}

static void
qw_q8_0(const float *x, void *dst, uint64_t n)
{
    ks_blk_q8_0 *y = dst;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = ks_f2h(d);
        for (int j = 0; j < 32; j++)
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static int
iq4nl_index(float v)
{
    int best = 0;
    float err = fabsf(v - (float)ks_iq4nl_values[0]);

    for (int k = 1; k < 16; k++) {
        float e = fabsf(v - (float)ks_iq4nl_values[k]);
        if (e < err) {
            err = e;
            best = k;
        }
    }
    return best;
}

static void
qw_iq4_nl(const float *x, void *dst, uint64_t n)
{
    ks_blk_iq4_nl *y = dst;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = 0.0f, max = 0.0f;
        int idx[32];
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / (float)ks_iq4nl_values[0];
        if (d != 0.0f) {
            /* assign, refit the scale by least squares, assign again */
            float sxq = 0.0f, sqq = 0.0f;
            for (int j = 0; j < 32; j++) {
                idx[j] = iq4nl_index(x[j] / d);
                float q = (float)ks_iq4nl_values[idx[j]];
                sxq += x[j] * q;
                sqq += q * q;
            }
            if (sqq > 0.0f && sxq != 0.0f)
                d = sxq / sqq;
            float hd = ks_h2f(ks_f2h(d));
            for (int j = 0; j < 32; j++)
                idx[j] = hd != 0.0f ? iq4nl_index(x[j] / hd) : 8;
        } else {
            for (int j = 0; j < 32; j++)
                idx[j] = 8;
        }
        y[i].d = ks_f2h(d);
        for (int j = 0; j < 16; j++)
            y[i].qs[j] = (uint8_t)(idx[j] | idx[j + 16] << 4);
    }
}

static int
clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Asymmetric fit of |len| values to q in 0..qmax: x ~ scale*q - min, with
 * min >= 0 (the range always includes zero, as ggml's K-quants do). */
static void
fit_min_max(const float *x, int len, int qmax, float *scale, float *min)
{
    float lo = 0.0f, hi = 0.0f;

    for (int j = 0; j < len; j++) {
        lo = x[j] < lo ? x[j] : lo;
        hi = x[j] > hi ? x[j] : hi;
    }
    *scale = (hi - lo) / (float)qmax;
    *min = -lo;
}

static void
pack_k4_scales(const int sc[8], const int mn[8], uint8_t *b)
{
    for (int k = 0; k < 4; k++) {
        b[k] = (uint8_t)(sc[k] | ((sc[k + 4] >> 4) << 6));
        b[k + 4] = (uint8_t)(mn[k] | ((mn[k + 4] >> 4) << 6));
        b[k + 8] = (uint8_t)((sc[k + 4] & 0xF) | ((mn[k + 4] & 0xF) << 4));
    }
}

/* Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins. */
static void
qw_q45_k(const float *x, uint16_t *pd, uint16_t *pdmin, uint8_t *scales,
         uint8_t q[256], int qmax)
{
    float fs[8], fm[8], max_s = 0.0f, max_m = 0.0f;
    int sc[8], mn[8];

    for (int j = 0; j < 8; j++) {
        fit_min_max(x + 32 * j, 32, qmax, &fs[j], &fm[j]);
        max_s = fs[j] > max_s ? fs[j] : max_s;
        max_m = fm[j] > max_m ? fm[j] : max_m;
    }
    float d = max_s / 63.0f, dmin = max_m / 63.0f;
    for (int j = 0; j < 8; j++) {
        sc[j] = d > 0.0f ? clampi(ks_nearest_int(fs[j] / d), 0, 63) : 0;
        mn[j] = dmin > 0.0f ? clampi(ks_nearest_int(fm[j] / dmin), 0, 63) : 0;
    }
    *pd = ks_f2h(d);
    *pdmin = ks_f2h(dmin);
    pack_k4_scales(sc, mn, scales);
    float hd = ks_h2f(*pd), hm = ks_h2f(*pdmin);
    for (int j = 0; j < 8; j++) {
        float dl = hd * (float)sc[j], ml = hm * (float)mn[j];
        for (int l = 0; l < 32; l++) {
            int v = dl > 0.0f ? ks_nearest_int((x[32 * j + l] + ml) / dl) : 0;
            q[32 * j + l] = (uint8_t)clampi(v, 0, qmax);
        }
    }
}

static void
qw_q4_k(const float *x, void *dst, uint64_t n)
{
    ks_blk_q4_k *y = dst;
    uint8_t q[256];

    for (uint64_t i = 0; i < n / 256; i++, x += 256) {
        qw_q45_k(x, &y[i].d, &y[i].dmin, y[i].scales, q, 15);
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++)
                y[i].qs[32 * g + l] = (uint8_t)(q[64 * g + l] | q[64 * g + 32 + l] << 4);
    }
}

static void
qw_q5_k(const float *x, void *dst, uint64_t n)
{
    ks_blk_q5_k *y = dst;
    uint8_t q[256];

    for (uint64_t i = 0; i < n / 256; i++, x += 256) {
        qw_q45_k(x, &y[i].d, &y[i].dmin, y[i].scales, q, 31);
        memset(y[i].qh, 0, 32);
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                int lo = q[64 * g + l], hi = q[64 * g + 32 + l];
                y[i].qs[32 * g + l] = (uint8_t)((lo & 0xF) | (hi & 0xF) << 4);
                y[i].qh[l] |= (uint8_t)(((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1)));
            }
    }
}

/* Signed value of largest magnitude among |len| values. */
static float
signed_max(const float *x, int len)
{
    float amax = 0.0f, max = 0.0f;

    for (int j = 0; j < len; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void
qw_q6_k(const float *x, void *dst, uint64_t n)
{
    ks_blk_q6_k *y = dst;

    for (uint64_t i = 0; i < n / 256; i++, x += 256) {
        float fs[16], max_s = 0.0f, amax_s = 0.0f;
        uint8_t q[256];
        for (int j = 0; j < 16; j++) {
            fs[j] = signed_max(x + 16 * j, 16) / -32.0f;
            if (fabsf(fs[j]) > amax_s) {
                amax_s = fabsf(fs[j]);
                max_s = fs[j];
            }
        }
        memset(&y[i], 0, sizeof(y[i]));
        if (amax_s == 0.0f)
            continue;
        float iscale = -128.0f / max_s;
        for (int j = 0; j < 16; j++)
            y[i].scales[j] = (int8_t)clampi(ks_nearest_int(iscale * fs[j]), -128, 127);
        y[i].d = ks_f2h(1.0f / iscale);
        float hd = ks_h2f(y[i].d);
        for (int j = 0; j < 16; j++) {
            float dl = hd * (float)y[i].scales[j];
            for (int l = 0; l < 16; l++) {
                int v = dl != 0.0f ? ks_nearest_int(x[16 * j + l] / dl) : 0;
                q[16 * j + l] = (uint8_t)(clampi(v, -32, 31) + 32);
            }
        }
        for (int h = 0; h < 2; h++) {
            const uint8_t *qq = q + 128 * h;
            uint8_t *ql = y[i].ql + 64 * h, *qh = y[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((qq[l] & 0xF) | (qq[l + 64] & 0xF) << 4);
                ql[l + 32] = (uint8_t)((qq[l + 32] & 0xF) | (qq[l + 96] & 0xF) << 4);
                qh[l] = (uint8_t)((qq[l] >> 4) | (qq[l + 32] >> 4) << 2 |
                                  (qq[l + 64] >> 4) << 4 | (qq[l + 96] >> 4) << 6);
            }
        }
    }
}

/* The Q2_K/Q3_K element order: output index 16k+l of the super-block
 * sits at qs byte 32h + 16*half + l, shift s, with k = 8h + s + half
 * (s = 0..3 counting 2-bit shifts). */
static void
qw_q2_k(const float *x, void *dst, uint64_t n)
{
    ks_blk_q2_k *y = dst;

    for (uint64_t i = 0; i < n / 256; i++, x += 256) {
        float fs[16], fm[16], max_s = 0.0f, max_m = 0.0f;
        int sc[16], mn[16];
        memset(&y[i], 0, sizeof(y[i]));
        for (int j = 0; j < 16; j++) {
            fit_min_max(x + 16 * j, 16, 3, &fs[j], &fm[j]);
            max_s = fs[j] > max_s ? fs[j] : max_s;
            max_m = fm[j] > max_m ? fm[j] : max_m;
        }
        float d = max_s / 15.0f, dmin = max_m / 15.0f;
        y[i].d = ks_f2h(d);
        y[i].dmin = ks_f2h(dmin);
        float hd = ks_h2f(y[i].d), hm = ks_h2f(y[i].dmin);
        for (int j = 0; j < 16; j++) {
            sc[j] = d > 0.0f ? clampi(ks_nearest_int(fs[j] / d), 0, 15) : 0;
            mn[j] = dmin > 0.0f ? clampi(ks_nearest_int(fm[j] / dmin), 0, 15) : 0;
            y[i].scales[j] = (uint8_t)(sc[j] | mn[j] << 4);
            float dl = hd * (float)sc[j], ml = hm * (float)mn[j];
            int h = j / 8, s = (j % 8) / 2, half = j % 2;
            for (int l = 0; l < 16; l++) {
                int v = dl > 0.0f ? ks_nearest_int((x[16 * j + l] + ml) / dl) : 0;
                v = clampi(v, 0, 3);
                y[i].qs[32 * h + 16 * half + l] |= (uint8_t)(v << (2 * s));
            }
        }
    }
}

static void
qw_q3_k(const float *x, void *dst, uint64_t n)
{
    ks_blk_q3_k *y = dst;

    for (uint64_t i = 0; i < n / 256; i++, x += 256) {
        float fs[16], max_s = 0.0f, amax_s = 0.0f;
        int sc[16];
        memset(&y[i], 0, sizeof(y[i]));
        for (int j = 0; j < 16; j++) {
            fs[j] = signed_max(x + 16 * j, 16) / -4.0f;
            if (fabsf(fs[j]) > amax_s) {
                amax_s = fabsf(fs[j]);
                max_s = fs[j];
            }
        }
        float iscale = amax_s > 0.0f ? -32.0f / max_s : 0.0f;
        for (int j = 0; j < 16; j++)
            sc[j] = clampi(ks_nearest_int(iscale * fs[j]), -32, 31);
        y[i].d = ks_f2h(amax_s > 0.0f ? 1.0f / iscale : 0.0f);
        for (int k = 0; k < 16; k++) {
            int u = sc[k] + 32;
            if (k < 8)
                y[i].scales[k] |= (uint8_t)(u & 0xF);
            else
                y[i].scales[k - 8] |= (uint8_t)((u & 0xF) << 4);
            y[i].scales[8 + k % 4] |= (uint8_t)((u >> 4) << (2 * (k / 4)));
        }
        float hd = ks_h2f(y[i].d);
        for (int j = 0; j < 16; j++) {
            float dl = hd * (float)sc[j];
            int h = j / 8, s = (j % 8) / 2, half = j % 2;
            for (int l = 0; l < 16; l++) {
                int v = dl != 0.0f ? ks_nearest_int(x[16 * j + l] / dl) : 0;
                int u = clampi(v, -4, 3) + 4;
                int p = 16 * half + l;
                y[i].qs[32 * h + p] |= (uint8_t)((u & 3) << (2 * s));
                if (u & 4)
                    y[i].hmask[p] |= (uint8_t)(1 << (4 * h + s));
            }
        }
    }
}

static void
qw_f32(const float *x, void *dst, uint64_t n)
{
    memcpy(dst, x, n * sizeof(float));
}

bool
ks_cpu_can_quantize(ks_qtype t)
{
    switch (t) {
    case KS_QUANT_F32: case KS_QUANT_F16: case KS_QUANT_BF16:
    case KS_QUANT_Q4_0: case KS_QUANT_Q4_1: case KS_QUANT_Q5_0:
    case KS_QUANT_Q5_1: case KS_QUANT_Q8_0: case KS_QUANT_IQ4_NL:
    case KS_QUANT_Q2_K: case KS_QUANT_Q3_K: case KS_QUANT_Q4_K:
    case KS_QUANT_Q5_K: case KS_QUANT_Q6_K:
        return true;
    default:
        return false;
    }
}

void
ks_cpu_quantize_row(ks_qtype t, const float *src, void *dst, uint64_t n)
{
    switch (t) {
    case KS_QUANT_F32:    qw_f32(src, dst, n); break;
    case KS_QUANT_F16:    qa_f16(src, dst, n); break;
    case KS_QUANT_BF16:   qa_bf16(src, dst, n); break;
    case KS_QUANT_Q4_0:   qw_q4_0(src, dst, n); break;
    case KS_QUANT_Q4_1:   qw_q4_1(src, dst, n); break;
    case KS_QUANT_Q5_0:   qw_q5_0(src, dst, n); break;
    case KS_QUANT_Q5_1:   qw_q5_1(src, dst, n); break;
    case KS_QUANT_Q8_0:   qw_q8_0(src, dst, n); break;
    case KS_QUANT_IQ4_NL: qw_iq4_nl(src, dst, n); break;
    case KS_QUANT_Q2_K:   qw_q2_k(src, dst, n); break;
    case KS_QUANT_Q3_K:   qw_q3_k(src, dst, n); break;
    case KS_QUANT_Q4_K:   qw_q4_k(src, dst, n); break;
    case KS_QUANT_Q5_K:   qw_q5_k(src, dst, n); break;
    case KS_QUANT_Q6_K:   qw_q6_k(src, dst, n); break;
    default:              break;
    }
}
