/* The NEON kernels, written once and compiled three times (quant_neon.c,
 * quant_neon_dot.c, quant_neon_i8mm.c) for the integer dot-product level
 * KS_NEON_LEVEL names:
 *   0  ARMv8.0 Advanced SIMD: vmull_s8 into int16, widened pairwise;
 *   1  + dotprod (ARMv8.2 FEAT_DotProd): sdot sums four bytes per lane;
 *   2  + i8mm (FEAT_I8MM): smmla sums eight bytes for a 2x2 tile of
 *      (weight row, activation row) pairs, where the order allows it.
 * KS_NEON_FILL names the function that fills the ops table.
 *
 * Every kernel here is bit-identical to the scalar reference
 * (quant_ref.c), which follows llama.cpp's AVX2 kernels: integer sums are
 * exact however they are formed, so each level forms the same integer
 * lane sums (lane l of a 32-element block holds elements 4l..4l+3) and
 * then runs the reference's float operations in its order: fused
 * multiply-adds into two float32x4 halves of the 8-lane accumulator,
 * and hsum8's tree of additions (never vaddvq_f32, which pairs lanes
 * otherwise). Types and paths without an entry keep the scalar kernel:
 * the K-quants, IQ4_NL's BLAS order and the float types.
 *
 * 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) run in tiles of
 * up to 4 weight rows x 2 activation rows: each weight block is decoded
 * once into two int8x16 vectors of signed values, each activation block
 * serves every row of the tile. */
#include <arm_neon.h>
#include <math.h>

#include "runtime/cpu/quant_priv.h"

#define KS_AI static inline __attribute__((always_inline))

KS_AI float
h2f(const void *p)
{
    uint16_t h;

    memcpy(&h, p, 2);
    return ks_h2f(h);
}

/* Four int32 lanes, lane l the sum of a[i]*b[i] for i in 4l..4l+3. */
KS_AI int32x4_t
quad16(int8x16_t a, int8x16_t b)
{
#if KS_NEON_LEVEL >= 1
    return vdotq_s32(vdupq_n_s32(0), a, b);
#else
    /* each int16 holds one product (|p| <= 128 * 128), widened pairwise */
    int16x8_t p0 = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    int16x8_t p1 = vmull_high_s8(a, b);
    return vpaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1));
#endif
}

/* hsum8 of quant_ref.c over lanes lo (0..3) and hi (4..7):
 * t = lo + hi, then (t0 + t2) + (t1 + t3). */
KS_AI float
hsum8(float32x4_t lo, float32x4_t hi)
{
    float32x4_t t = vaddq_f32(lo, hi);
    float32x2_t u = vadd_f32(vget_low_f32(t), vget_high_f32(t));

    return vget_lane_f32(u, 0) + vget_lane_f32(u, 1);
}

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

/* One tile of R weight rows x T activation rows, summed as the
 * reference's dot32 sums each pair. CHAIN (the repacked GEMV/GEMM order
 * of Q4_0 and IQ4_NL): one float per pair, fma(integer block sum,
 * d_w*d_x) per block. Otherwise the vec_dot order: 8 lanes,
 * fma(d_w*d_x, lane), hsum8, plus fma(m, s) for the types with a min;
 * IQ4_NL alternates two accumulators over block pairs and adds an odd
 * last block with one scalar fma. */
KS_AI void
tile32(const int ty, const int chain, const int R, const int T,
       const uint8_t *W, uint64_t rb, int64_t nb, const uint8_t *X,
       uint64_t xs, float *y, uint64_t ldy)
{
    const int pairs = ty == T_IQ4 && !chain;
    const int64_t nmain = pairs && nb % 2 == 1 ? nb - 1 : nb;
    float32x4_t acc[4][2][2][2]; /* [row][token][block parity][half] */
    float ch[4][2], summs[4][2];

    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            for (int p = 0; p < 2; p++)
                acc[r][t][p][0] = acc[r][t][p][1] = vdupq_n_f32(0.0f);
            ch[r][t] = summs[r][t] = 0.0f;
        }
    for (int64_t b = 0; b < nb; b++) {
        int8x16_t a0[2], a1[2], w0[4], w1[4];
        float dx[2], sx[2], dw[4], mw[4];

        for (int t = 0; t < T; t++) {
            const uint8_t *xb = X + (uint64_t)t * xs + (uint64_t)b * ABYTES(ty);
            const int8_t *q = (const int8_t *)xb + (HAS_MIN(ty) ? 4 : 2);
            a0[t] = vld1q_s8(q);
            a1[t] = vld1q_s8(q + 16);
            dx[t] = h2f(xb);
            sx[t] = HAS_MIN(ty) ? h2f(xb + 2) : 0.0f;
        }
        for (int r = 0; r < R; r++) {
            const uint8_t *wb = W + (uint64_t)r * rb + (uint64_t)b * WBYTES(ty);
            dw[r] = h2f(wb);
            mw[r] = HAS_MIN(ty) ? h2f(wb + 2) : 0.0f;
            unpack32(ty, wb, &w0[r], &w1[r]);
        }
#if KS_NEON_LEVEL >= 2
        if (chain && R == 2 && T == 2) {
            /* smmla: rows {0, 1} x tokens {0, 1}, 8 elements a step */
#define ZIP(f, v) vreinterpretq_s8_s64(f(vreinterpretq_s64_s8(v[0]), \
                                         vreinterpretq_s64_s8(v[1])))
            int32x4_t s = vdupq_n_s32(0);
            s = vmmlaq_s32(s, ZIP(vzip1q_s64, w0), ZIP(vzip1q_s64, a0));
            s = vmmlaq_s32(s, ZIP(vzip2q_s64, w0), ZIP(vzip2q_s64, a0));
            s = vmmlaq_s32(s, ZIP(vzip1q_s64, w1), ZIP(vzip1q_s64, a1));
            s = vmmlaq_s32(s, ZIP(vzip2q_s64, w1), ZIP(vzip2q_s64, a1));
#undef ZIP
            ch[0][0] = fmaf((float)vgetq_lane_s32(s, 0), dw[0] * dx[0], ch[0][0]);
            ch[0][1] = fmaf((float)vgetq_lane_s32(s, 1), dw[0] * dx[1], ch[0][1]);
            ch[1][0] = fmaf((float)vgetq_lane_s32(s, 2), dw[1] * dx[0], ch[1][0]);
            ch[1][1] = fmaf((float)vgetq_lane_s32(s, 3), dw[1] * dx[1], ch[1][1]);
            continue;
        }
#endif
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) {
                int32x4_t lo = quad16(w0[r], a0[t]), hi = quad16(w1[r], a1[t]);
                float dd = dw[r] * dx[t];
                if (chain) {
                    ch[r][t] = fmaf((float)vaddvq_s32(vaddq_s32(lo, hi)), dd, ch[r][t]);
                } else if (b >= nmain) { /* IQ4_NL's odd last block */
                    float32x4_t *a = acc[r][t][0], *c = acc[r][t][1];
                    ch[r][t] = fmaf((float)vaddvq_s32(vaddq_s32(lo, hi)), dx[t] * dw[r],
                                    hsum8(vaddq_f32(a[0], c[0]), vaddq_f32(a[1], c[1])));
                } else {
                    float32x4_t *a = acc[r][t][pairs ? b % 2 : 0];
                    a[0] = vfmaq_n_f32(a[0], vcvtq_f32_s32(lo), dd);
                    a[1] = vfmaq_n_f32(a[1], vcvtq_f32_s32(hi), dd);
                    if (HAS_MIN(ty))
                        summs[r][t] = fmaf(mw[r], sx[t], summs[r][t]);
                }
            }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float32x4_t *a = acc[r][t][0], *c = acc[r][t][1];
            float v;
            if (chain || nmain < nb)
                v = ch[r][t];
            else if (pairs)
                v = hsum8(vaddq_f32(a[0], c[0]), vaddq_f32(a[1], c[1]));
            else if (HAS_MIN(ty))
                v = hsum8(a[0], a[1]) + summs[r][t];
            else
                v = hsum8(a[0], a[1]);
            y[(uint64_t)t * ldy + (uint64_t)r] = v;
        }
}

/* Splits a product into tiles: 4 rows x 2 tokens, or 2 x 2 for the
 * smmla order. */
KS_AI void
mm32(const int ty, const int chain, const void *W, uint64_t rb, uint64_t n,
     int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    const int rt = KS_NEON_LEVEL >= 2 && chain ? 2 : 4;
    int64_t nb = (int64_t)(n / 32);

    for (int64_t t = 0; t < nt; t += 2) {
        const uint8_t *xt = x + (uint64_t)t * xs;
        float *yt = y + (uint64_t)t * ldy;
        int64_t r = 0;
        if (t + 1 < nt) {
            for (; r + rt <= nr; r += rt) {
                if (rt == 2)
                    tile32(ty, chain, 2, 2, w + r * rb, rb, nb, xt, xs, yt + r, ldy);
                else
                    tile32(ty, chain, 4, 2, w + r * rb, rb, nb, xt, xs, yt + r, ldy);
            }
            for (; r < nr; r++)
                tile32(ty, chain, 1, 2, w + r * rb, rb, nb, xt, xs, yt + r, ldy);
        } else {
            for (; r + 4 <= nr; r += 4)
                tile32(ty, chain, 4, 1, w + r * rb, rb, nb, xt, xs, yt + r, ldy);
            for (; r < nr; r++)
                tile32(ty, chain, 1, 1, w + r * rb, rb, nb, xt, xs, yt + r, ldy);
        }
    }
}

#define KS_MM(name, ty, chain)                                              \
    static void mm_##name(const void *W, uint64_t rb, uint64_t n,           \
                          int64_t nr, const void *xq, uint64_t xs,          \
                          int64_t nt, float *y, uint64_t ldy)               \
    {                                                                       \
        mm32(ty, chain, W, rb, n, nr, xq, xs, nt, y, ldy);                  \
    }
#define KS_MV(name, ty)                                                     \
    static void mv_##name(const void *W, uint64_t rb, uint64_t n,           \
                          int64_t nr, const void *xq, float *y)             \
    {                                                                       \
        mm32(ty, 0, W, rb, n, nr, xq, 0, 1, y, 0);                          \
    }

KS_MM(q4_0, T_Q4_0, 0) KS_MV(q4_0, T_Q4_0)
KS_MM(q4_1, T_Q4_1, 0) KS_MV(q4_1, T_Q4_1)
KS_MM(q5_0, T_Q5_0, 0) KS_MV(q5_0, T_Q5_0)
KS_MM(q5_1, T_Q5_1, 0) KS_MV(q5_1, T_Q5_1)
KS_MM(q8_0, T_Q8_0, 0) KS_MV(q8_0, T_Q8_0)
KS_MM(iq4_nl, T_IQ4, 0) KS_MV(iq4_nl, T_IQ4)
KS_MM(q4_0_chain, T_Q4_0, 1)
KS_MM(iq4_nl_chain, T_IQ4, 1)

#if KS_NEON_LEVEL == 0
static void
#else
void
#endif
KS_NEON_FILL(ks_quant_ops *ops)
{
#define SET(T, name)                       \
    ops->matvec[KS_QUANT_##T] = mv_##name; \
    ops->matmul[KS_QUANT_##T] = mm_##name;
    SET(Q4_0, q4_0)
    SET(Q4_1, q4_1)
    SET(Q5_0, q5_0)
    SET(Q5_1, q5_1)
    SET(Q8_0, q8_0)
    SET(IQ4_NL, iq4_nl)
#undef SET
    ops->mm_gemv[KS_QUANT_Q4_0] = mm_q4_0_chain;
    ops->mm_gemm[KS_QUANT_Q4_0] = mm_q4_0_chain;
    ops->mm_gemv[KS_QUANT_IQ4_NL] = mm_iq4_nl_chain;
    ops->mm_gemm[KS_QUANT_IQ4_NL] = mm_iq4_nl_chain;
}
