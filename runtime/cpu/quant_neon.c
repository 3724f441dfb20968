/* NEON kernels for aarch64 (baseline ARMv8-A: no dot-product extension,
 * so int8 products go through vmull_s8/vmlal_s8 into int16 and are
 * widened pairwise into int32).
 *
 * The 32-element types run in tiles of 4 weight rows x 1..2 activation
 * rows like the AVX2 path: each weight block is decoded once into two
 * int8x16 vectors of signed values (offsets applied), each activation
 * block serves four rows, and each (row, token) pair keeps a float32x4
 * accumulator reduced once per row. Q4_K and Q6_K decode a super-block
 * into 256 int8 values and sixteen 16-element scales, then dot it with
 * each activation row. Types without an entry here use the scalar path.
 * Activation quantizers are bit-identical to quant_ref.c. */
#include <arm_neon.h>

#include "runtime/cpu/quant_priv.h"

#define KS_AI static inline __attribute__((always_inline))

KS_AI float
h2f(const void *p)
{
    uint16_t h;

    memcpy(&h, p, 2);
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* sum of a[i]*b[i] over 32 int8 pairs as four int32 lanes. Each int16
 * lane holds two products of at most 128*127, so it cannot overflow. */
KS_AI int32x4_t
dot32(int8x16_t a0, int8x16_t a1, int8x16_t b0, int8x16_t b1)
{
    int16x8_t p0 = vmull_s8(vget_low_s8(a0), vget_low_s8(b0));
    int16x8_t p1 = vmull_s8(vget_low_s8(a1), vget_low_s8(b1));
    p0 = vmlal_s8(p0, vget_high_s8(a0), vget_high_s8(b0));
    p1 = vmlal_s8(p1, vget_high_s8(a1), vget_high_s8(b1));
    return vpadalq_s16(vpaddlq_s16(p0), p1);
}

/* the same over 16 pairs */
KS_AI int32x4_t
dot16(int8x16_t a, int8x16_t b)
{
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b));
    return vpaddlq_s16(p);
}

/* ---- 32-element block types ------------------------------------------ */

enum { T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q8_0, T_IQ4 };

#define WBYTES(ty) ((ty) == T_Q4_0 ? 18 : (ty) == T_Q4_1 ? 20 : \
                    (ty) == T_Q5_0 ? 22 : (ty) == T_Q5_1 ? 24 : \
                    (ty) == T_Q8_0 ? 34 : 18)
#define HAS_MIN(ty) ((ty) == T_Q4_1 || (ty) == T_Q5_1)
#define ABYTES(ty)  (HAS_MIN(ty) ? 36 : 34)

/* The fifth bits of 16 elements (qh bits |base|..|base|+15) as 0x10. */
KS_AI uint8x16_t
high16(uint32_t qh, int base)
{
    static const uint8_t bit[16] = { 1, 2, 4, 8, 16, 32, 64, 128,
                                     1, 2, 4, 8, 16, 32, 64, 128 };
    uint8x8_t lo = vdup_n_u8((uint8_t)(qh >> base));
    uint8x8_t hi = vdup_n_u8((uint8_t)(qh >> (base + 8)));
    uint8x16_t v = vandq_u8(vcombine_u8(lo, hi), vld1q_u8(bit));
    return vandq_u8(vtstq_u8(v, v), vdupq_n_u8(0x10));
}

/* Decodes one weight block into elements 0..15 (*w0) and 16..31 (*w1)
 * as signed int8 values: q - 8, q - 16, plain q, or the IQ4_NL value. */
KS_AI void
unpack32(const int ty, const uint8_t *b, int8x16_t *w0, int8x16_t *w1)
{
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    uint8x16_t v, lo, hi;
    uint32_t qh;

    switch (ty) {
    case T_Q8_0:
        *w0 = vld1q_s8((const int8_t *)b + 2);
        *w1 = vld1q_s8((const int8_t *)b + 18);
        return;
    case T_Q4_0:
    case T_IQ4:
        v = vld1q_u8(b + 2);
        break;
    case T_Q4_1:
        v = vld1q_u8(b + 4);
        break;
    case T_Q5_0:
        v = vld1q_u8(b + 6);
        break;
    default:
        v = vld1q_u8(b + 8);
        break;
    }
    lo = vandq_u8(v, m4);
    hi = vshrq_n_u8(v, 4);
    if (ty == T_Q5_0 || ty == T_Q5_1) {
        memcpy(&qh, b + (ty == T_Q5_0 ? 2 : 4), 4);
        lo = vorrq_u8(lo, high16(qh, 0));
        hi = vorrq_u8(hi, high16(qh, 16));
    }
    if (ty == T_IQ4) {
        const int8x16_t tab = vld1q_s8(ks_iq4nl_values);
        *w0 = vqtbl1q_s8(tab, lo);
        *w1 = vqtbl1q_s8(tab, hi);
        return;
    }
    if (ty == T_Q4_0) {
        *w0 = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(8));
        *w1 = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(8));
    } else if (ty == T_Q5_0) {
        *w0 = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(16));
        *w1 = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(16));
    } else {
        *w0 = vreinterpretq_s8_u8(lo);
        *w1 = vreinterpretq_s8_u8(hi);
    }
}

KS_AI float
hsum(float32x4_t v)
{
    return vaddvq_f32(v);
}

KS_AI void
tile32(const int ty, const int R, const int T, const uint8_t *W,
       uint64_t rb, int64_t nb, const uint8_t *X, uint64_t xs, float *y,
       uint64_t ldy)
{
    float32x4_t acc[4][2];
    float macc[4][2];

    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            acc[r][t] = vdupq_n_f32(0.0f);
            macc[r][t] = 0.0f;
        }
    for (int64_t b = 0; b < nb; b++) {
        int8x16_t a0[2], a1[2];
        float da[2], sa[2];
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = X + (uint64_t)t * xs + (uint64_t)b * ABYTES(ty);
            const int8_t *q = (const int8_t *)xb + (HAS_MIN(ty) ? 4 : 2);
            a0[t] = vld1q_s8(q);
            a1[t] = vld1q_s8(q + 16);
            da[t] = h2f(xb);
            sa[t] = HAS_MIN(ty) ? h2f(xb + 2) : 0.0f;
        }
        for (int r = 0; r < R; r++) {
            const uint8_t *wb = W + (uint64_t)r * rb + (uint64_t)b * WBYTES(ty);
            int8x16_t w0, w1;
            float dw = h2f(wb), mw = HAS_MIN(ty) ? h2f(wb + 2) : 0.0f;
            unpack32(ty, wb, &w0, &w1);
            for (int t = 0; t < T; t++) {
                float32x4_t f = vcvtq_f32_s32(dot32(w0, w1, a0[t], a1[t]));
                acc[r][t] = vfmaq_n_f32(acc[r][t], f, dw * da[t]);
                if (HAS_MIN(ty))
                    macc[r][t] += mw * sa[t];
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            y[(uint64_t)t * ldy + (uint64_t)r] = hsum(acc[r][t]) + macc[r][t];
}

KS_AI void
mm32(const int ty, const void *W, uint64_t rb, uint64_t n, int64_t nr,
     const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 32);

    for (int64_t t = 0; t < nt; t += 2) {
        int two = t + 1 < nt;
        int64_t r = 0;
        for (; r + 4 <= nr; r += 4) {
            if (two)
                tile32(ty, 4, 2, w + r * rb, rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
            else
                tile32(ty, 4, 1, w + r * rb, rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
        }
        for (; r < nr; r++) {
            if (two)
                tile32(ty, 1, 2, w + r * rb, rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
            else
                tile32(ty, 1, 1, w + r * rb, rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
        }
    }
}

#define KS_MM(name, ty, call)                                               \
    static void mm_##name(const void *W, uint64_t rb, uint64_t n,           \
                          int64_t nr, const void *xq, uint64_t xs,          \
                          int64_t nt, float *y, uint64_t ldy)               \
    {                                                                       \
        call(ty, W, rb, n, nr, xq, xs, nt, y, ldy);                         \
    }                                                                       \
    static void mv_##name(const void *W, uint64_t rb, uint64_t n,           \
                          int64_t nr, const void *xq, float *y)             \
    {                                                                       \
        call(ty, W, rb, n, nr, xq, 0, 1, y, 0);                             \
    }

KS_MM(q4_0, T_Q4_0, mm32)
KS_MM(q4_1, T_Q4_1, mm32)
KS_MM(q5_0, T_Q5_0, mm32)
KS_MM(q5_1, T_Q5_1, mm32)
KS_MM(q8_0, T_Q8_0, mm32)
KS_MM(iq4_nl, T_IQ4, mm32)

/* ---- Q4_K and Q6_K against Q8_K ------------------------------------------ */

enum { T_Q4_K, T_Q6_K };

typedef struct kdec {
    int8_t q[256];
    int16_t sc[16];  /* per 16 elements */
    int16_t mn[16];  /* per 16 elements (Q4_K) */
    float d, dmin;
} kdec;

KS_AI void
decode_q4_k(const ks_blk_q4_k *b, kdec *k)
{
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    uint8_t sc[8], mn[8];

    for (int g = 0; g < 4; g++) {
        uint8x16_t v0 = vld1q_u8(b->qs + 32 * g), v1 = vld1q_u8(b->qs + 32 * g + 16);
        vst1q_u8((uint8_t *)k->q + 64 * g, vandq_u8(v0, m4));
        vst1q_u8((uint8_t *)k->q + 64 * g + 16, vandq_u8(v1, m4));
        vst1q_u8((uint8_t *)k->q + 64 * g + 32, vshrq_n_u8(v0, 4));
        vst1q_u8((uint8_t *)k->q + 64 * g + 48, vshrq_n_u8(v1, 4));
    }
    ks_k4_scales(b->scales, sc, mn);
    for (int i = 0; i < 16; i++) {
        k->sc[i] = sc[i / 2];
        k->mn[i] = mn[i / 2];
    }
    k->d = h2f(&b->d);
    k->dmin = h2f(&b->dmin);
}

KS_AI void
decode_q6_k(const ks_blk_q6_k *b, kdec *k)
{
    const uint8x16_t m4 = vdupq_n_u8(0x0F), m3 = vdupq_n_u8(3);
    const int8x16_t m32 = vdupq_n_s8(32);

    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l += 16) {
            uint8x16_t ql0 = vld1q_u8(b->ql + 64 * h + l);
            uint8x16_t ql1 = vld1q_u8(b->ql + 64 * h + 32 + l);
            uint8x16_t qh = vld1q_u8(b->qh + 32 * h + l);
            int8_t *q = k->q + 128 * h + l;
            uint8x16_t v0 = vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8(vandq_u8(qh, m3), 4));
            uint8x16_t v1 = vorrq_u8(vandq_u8(ql1, m4),
                                     vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), m3), 4));
            uint8x16_t v2 = vorrq_u8(vshrq_n_u8(ql0, 4),
                                     vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), m3), 4));
            uint8x16_t v3 = vorrq_u8(vshrq_n_u8(ql1, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4));
            vst1q_s8(q, vsubq_s8(vreinterpretq_s8_u8(v0), m32));
            vst1q_s8(q + 32, vsubq_s8(vreinterpretq_s8_u8(v1), m32));
            vst1q_s8(q + 64, vsubq_s8(vreinterpretq_s8_u8(v2), m32));
            vst1q_s8(q + 96, vsubq_s8(vreinterpretq_s8_u8(v3), m32));
        }
    for (int i = 0; i < 16; i++) {
        k->sc[i] = b->scales[i];
        k->mn[i] = 0;
    }
    k->d = h2f(&b->d);
    k->dmin = 0.0f;
}

/* dot of one decoded super-block with one Q8_K block */
KS_AI float
dot_kdec(const int ty, const kdec *k, const ks_blk_q8_k *x)
{
    int32x4_t isum = vdupq_n_s32(0);

    for (int g = 0; g < 16; g += 2) {
        int32x4_t s0 = dot16(vld1q_s8(k->q + 16 * g), vld1q_s8(x->qs + 16 * g));
        int32x4_t s1 = dot16(vld1q_s8(k->q + 16 * g + 16), vld1q_s8(x->qs + 16 * g + 16));
        isum = vmlaq_n_s32(isum, s0, k->sc[g]);
        isum = vmlaq_n_s32(isum, s1, k->sc[g + 1]);
    }
    float v = x->d * k->d * (float)vaddvq_s32(isum);
    if (ty == T_Q4_K) {
        int32x4_t m = vmull_s16(vld1_s16(x->bsums), vld1_s16(k->mn));
        m = vmlal_s16(m, vld1_s16(x->bsums + 4), vld1_s16(k->mn + 4));
        m = vmlal_s16(m, vld1_s16(x->bsums + 8), vld1_s16(k->mn + 8));
        m = vmlal_s16(m, vld1_s16(x->bsums + 12), vld1_s16(k->mn + 12));
        v -= x->d * k->dmin * (float)vaddvq_s32(m);
    }
    return v;
}

KS_AI void
mmk(const int ty, const void *W, uint64_t rb, uint64_t n, int64_t nr,
    const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 256);
    uint64_t bbytes = ty == T_Q4_K ? sizeof(ks_blk_q4_k) : sizeof(ks_blk_q6_k);
    kdec k;

    for (int64_t r = 0; r < nr; r++) {
        for (int64_t t = 0; t < nt; t++)
            y[(uint64_t)t * ldy + (uint64_t)r] = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            const void *blk = w + (uint64_t)r * rb + (uint64_t)b * bbytes;
            if (ty == T_Q4_K)
                decode_q4_k(blk, &k);
            else
                decode_q6_k(blk, &k);
            for (int64_t t = 0; t < nt; t++)
                y[(uint64_t)t * ldy + (uint64_t)r] += dot_kdec(ty, &k,
                    (const ks_blk_q8_k *)(x + (uint64_t)t * xs) + b);
        }
    }
}

KS_MM(q4_k, T_Q4_K, mmk)
KS_MM(q6_k, T_Q6_K, mmk)

/* ---- F32 and F16 --------------------------------------------------------- */

KS_AI void
mmf(const int f16, const void *W, uint64_t rb, uint64_t n, int64_t nr,
    const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    const uint64_t es = f16 ? 2 : 4;

    for (int64_t r = 0; r < nr; r++)
        for (int64_t t = 0; t < nt; t++) {
            const uint8_t *wr = w + (uint64_t)r * rb, *xr = x + (uint64_t)t * xs;
            float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
            uint64_t i = 0;
            float s;
            for (; i + 8 <= n; i += 8) {
                float32x4_t a0, a1, b0, b1;
                if (f16) {
                    float16x8_t wa = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)wr + i));
                    float16x8_t xa = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)xr + i));
                    a0 = vcvt_f32_f16(vget_low_f16(wa));
                    a1 = vcvt_high_f32_f16(wa);
                    b0 = vcvt_f32_f16(vget_low_f16(xa));
                    b1 = vcvt_high_f32_f16(xa);
                } else {
                    a0 = vld1q_f32((const float *)wr + i);
                    a1 = vld1q_f32((const float *)wr + i + 4);
                    b0 = vld1q_f32((const float *)xr + i);
                    b1 = vld1q_f32((const float *)xr + i + 4);
                }
                acc0 = vfmaq_f32(acc0, a0, b0);
                acc1 = vfmaq_f32(acc1, a1, b1);
            }
            s = vaddvq_f32(vaddq_f32(acc0, acc1));
            for (; i < n; i++) {
                if (f16)
                    s += h2f(wr + i * es) * h2f(xr + i * es);
                else {
                    float a, b;
                    memcpy(&a, wr + i * es, 4);
                    memcpy(&b, xr + i * es, 4);
                    s += a * b;
                }
            }
            y[(uint64_t)t * ldy + (uint64_t)r] = s;
        }
}

KS_MM(f32, 0, mmf)
KS_MM(f16, 1, mmf)

/* ---- activation quantization (bit-identical to quant_ref.c) -------------- */

/* Rounds x*id to nearest, ties to even (FCVTNS), packs 32 values to
 * int8 in order and returns their sum. */
KS_AI int
round_pack32(const float *x, float id, int8_t *out)
{
    int32x4_t sum = vdupq_n_s32(0);

    for (int j = 0; j < 32; j += 8) {
        int32x4_t i0 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j), id));
        int32x4_t i1 = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(x + j + 4), id));
        sum = vaddq_s32(sum, vaddq_s32(i0, i1));
        int16x8_t s16 = vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1));
        vst1_s8(out + j, vqmovn_s16(s16));
    }
    return vaddvq_s32(sum);
}

KS_AI float
amax32(const float *x)
{
    float32x4_t m = vabsq_f32(vld1q_f32(x));
    for (int j = 4; j < 32; j += 4)
        m = vmaxq_f32(m, vabsq_f32(vld1q_f32(x + j)));
    return vmaxvq_f32(m);
}

static void
qa_q8_0(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_0 *y = xq;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = amax32(x);
        float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = ks_f2h(amax / 127.f);
        round_pack32(x, id, y[i].qs);
    }
}

static void
qa_q8_1(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_1 *y = xq;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = amax32(x), d = amax / 127.f;
        float id = amax != 0.0f ? 127.f / amax : 0.0f;
        int sum = round_pack32(x, id, y[i].qs);
        y[i].d = ks_f2h(d);
        y[i].s = ks_f2h(d * (float)sum);
    }
}

void
ks_quant_ops_neon(ks_quant_ops *ops)
{
#define SET(T, name)                       \
    ops->matvec[KS_QUANT_##T] = mv_##name; \
    ops->matmul[KS_QUANT_##T] = mm_##name;
    SET(F32, f32)
    SET(F16, f16)
    SET(Q4_0, q4_0)
    SET(Q4_1, q4_1)
    SET(Q5_0, q5_0)
    SET(Q5_1, q5_1)
    SET(Q8_0, q8_0)
    SET(IQ4_NL, iq4_nl)
    SET(Q4_K, q4_k)
    SET(Q6_K, q6_k)
#undef SET
    ops->quant_act[KS_QUANT_Q8_0] = qa_q8_0;
    ops->quant_act[KS_QUANT_Q8_1] = qa_q8_1;
}
