/* AVX2 + FMA + F16C kernels, compiled with those flags only (see
 * meson.build) and entered only when CPUID reports all three.
 *
 * The 32-element types run in tiles of 4 weight rows x 2 activation rows:
 * each weight block is unpacked once and dotted with every activation
 * block of the tile, each activation block serves four rows, and every
 * (row, token) pair keeps its own 8-lane float accumulator, reduced once
 * at the end of the row. Integer products use maddubs (u8 x s8 -> s16)
 * and madd (s16 pairs -> s32). Unsigned weights with an offset (Q4_0 -8,
 * Q5_0 -16) subtract offset * sum(activation) in 16 bits; signed weights
 * (Q8_0, IQ4_NL) use the sign trick.
 *
 * K-quants run one weight row x up to 4 activation rows: a super-block is
 * unpacked once per tile, integer sums are scaled by the 6/8-bit
 * sub-scales with madd and kept in int32 lanes for the whole super-block;
 * mins and offsets come from the Q8_K block sums.
 *
 * Matvecs prefetch the weights two tiles ahead (the hardware prefetcher
 * alone left the four interleaved row streams at half the DRAM rate).
 * Matmuls walk activation rows in chunks small enough to stay in L2 while
 * all weight rows pass over them. */
#include <immintrin.h>

#include "runtime/cpu/quant_priv.h"

#define KS_AI static inline __attribute__((always_inline))

KS_AI float
h2f(const void *p)
{
    uint16_t h;

    memcpy(&h, p, 2);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

KS_AI float
hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

KS_AI __m256i
loadu256(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* 16 bytes of nibbles to 32 bytes: low nibbles first, then high ones. */
KS_AI __m256i
nibbles(const uint8_t *p)
{
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
    v = _mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0));
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* 32 bits at p to 32 bytes: 0x10 where the bit is set, else 0. */
KS_AI __m256i
high_bits(const uint8_t *p)
{
    uint32_t h;
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);

    memcpy(&h, p, 4);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
        _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                          0x0101010101010101LL, 0));
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* ---- 32-element block types ------------------------------------------ */

enum { T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q8_0, T_IQ4 };

#define WBYTES(ty) ((ty) == T_Q4_0 ? 18 : (ty) == T_Q4_1 ? 20 : \
                    (ty) == T_Q5_0 ? 22 : (ty) == T_Q5_1 ? 24 : \
                    (ty) == T_Q8_0 ? 34 : 18)
#define HAS_MIN(ty) ((ty) == T_Q4_1 || (ty) == T_Q5_1)
#define ABYTES(ty)  (HAS_MIN(ty) ? 36 : 34)
#define OFFSET(ty)  ((ty) == T_Q4_0 ? 8 : (ty) == T_Q5_0 ? 16 : 0)
#define SIGNED(ty)  ((ty) == T_Q8_0 || (ty) == T_IQ4)

KS_AI __m256i
unpack32(const int ty, const uint8_t *b)
{
    switch (ty) {
    case T_Q4_0: return nibbles(b + 2);
    case T_Q4_1: return nibbles(b + 4);
    case T_Q5_0: return _mm256_or_si256(nibbles(b + 6), high_bits(b + 2));
    case T_Q5_1: return _mm256_or_si256(nibbles(b + 8), high_bits(b + 4));
    case T_Q8_0: return loadu256(b + 2);
    default: {
        const __m256i tab = _mm256_broadcastsi128_si256(
            _mm_loadu_si128((const __m128i *)ks_iq4nl_values));
        return _mm256_shuffle_epi8(tab, nibbles(b + 2));
    }
    }
}

/* The fp16 pair at |p| (Q4_1/Q5_1 d and m; Q8_1 d and s) as [d, m, 0, 0];
 * for the other types lane 1 holds two quant bytes, never read. */
KS_AI __m128
h2f_pair(const void *p)
{
    int32_t v;

    memcpy(&v, p, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(v));
}

/* matvec prefetch distance in tiles, and in bytes along a K-quant row */
#define PF32 2

/* y[t*ldy + r] for r < R, t < T; W and X point at the tile's first row.
 * Per (row, token) pair: acc gets d_w*d_x*dot in 8 lanes; for the types
 * with a min, macc lane 1 gets m_w*s_x. */
KS_AI void
tile32(const int ty, const int R, const int T, const uint8_t *W,
       uint64_t rb, int64_t nb, const uint8_t *X, uint64_t xs, float *y,
       uint64_t ldy)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[8][4];
    __m128 macc[8][4];

    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            acc[r][t] = _mm256_setzero_ps();
            macc[r][t] = _mm_setzero_ps();
        }
    for (int64_t b = 0; b < nb; b++) {
        __m256i a[4], ao[4];
        __m128 ds[4];
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = X + (uint64_t)t * xs + (uint64_t)b * ABYTES(ty);
            a[t] = loadu256(xb + (HAS_MIN(ty) ? 4 : 2));
            ds[t] = h2f_pair(xb);
            if (OFFSET(ty))
                ao[t] = _mm256_maddubs_epi16(_mm256_set1_epi8(OFFSET(ty)), a[t]);
        }
        for (int r = 0; r < R; r++) {
            const uint8_t *wb = W + (uint64_t)r * rb + (uint64_t)b * WBYTES(ty);
            __m256i w = unpack32(ty, wb), aw = w;
            if (PF32)
                _mm_prefetch((const char *)wb + PF32 * R * rb, _MM_HINT_T0);
            __m128 dm = h2f_pair(wb);
            if (SIGNED(ty))
                aw = _mm256_sign_epi8(w, w);
            for (int t = 0; t < T; t++) {
                __m256i p;
                if (SIGNED(ty)) {
                    p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a[t], w));
                } else {
                    p = _mm256_maddubs_epi16(w, a[t]);
                    if (OFFSET(ty))
                        p = _mm256_sub_epi16(p, ao[t]);
                }
                __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
                __m128 prod = _mm_mul_ps(dm, ds[t]);
                acc[r][t] = _mm256_fmadd_ps(f, _mm256_broadcastss_ps(prod), acc[r][t]);
                if (HAS_MIN(ty))
                    macc[r][t] = _mm_add_ps(macc[r][t], prod);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float v = hsum(acc[r][t]);
            if (HAS_MIN(ty))
                v += _mm_cvtss_f32(_mm_movehdup_ps(macc[r][t]));
            y[(uint64_t)t * ldy + (uint64_t)r] = v;
        }
}

/* Activation rows per chunk: about 256 KiB of them, at least |tb|. */
static int64_t
tok_chunk(uint64_t act_row_bytes, int tb)
{
    int64_t c = (int64_t)((256u << 10) / (act_row_bytes ? act_row_bytes : 1));
    c = c / tb * tb;
    return c < tb ? tb : c;
}

/* Tile shapes: matvec MV32 rows x 1 token; matmul MR32 rows x MT32 tokens. */
#define MV32 4
#define MR32 4
#define MT32 4

KS_AI void
mm32(const int ty, const void *W, uint64_t rb, uint64_t n, int64_t nr,
     const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 32);

    if (nt == 1) {
        int64_t r = 0;
        for (; r + MV32 <= nr; r += MV32)
            tile32(ty, MV32, 1, w + r * rb, rb, nb, x, 0, y + r, 0);
        for (; r < nr; r++)
            tile32(ty, 1, 1, w + r * rb, rb, nb, x, 0, y + r, 0);
        return;
    }
    int64_t tc = tok_chunk((uint64_t)nb * ABYTES(ty), MT32);
    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        int64_t te = t0 + tc < nt ? t0 + tc : nt, r = 0, t;
        for (; r + MR32 <= nr; r += MR32) {
            for (t = t0; t + MT32 <= te; t += MT32)
                tile32(ty, MR32, MT32, w + r * rb, rb, nb, x + t * xs, xs,
                       y + t * ldy + r, ldy);
            for (; t < te; t++)
                tile32(ty, MR32, 1, w + r * rb, rb, nb, x + t * xs, xs,
                       y + t * ldy + r, ldy);
        }
        for (; r < nr; r++) {
            for (t = t0; t + MT32 <= te; t += MT32)
                tile32(ty, 1, MT32, w + r * rb, rb, nb, x + t * xs, xs,
                       y + t * ldy + r, ldy);
            for (; t < te; t++)
                tile32(ty, 1, 1, w + r * rb, rb, nb, x + t * xs, xs,
                       y + t * ldy + r, ldy);
        }
    }
}

#define KS_MM(name, call)                                                   \
    static void mm_##name(const void *W, uint64_t rb, uint64_t n,           \
                          int64_t nr, const void *xq, uint64_t xs,          \
                          int64_t nt, float *y, uint64_t ldy)               \
    {                                                                       \
        call(W, rb, n, nr, xq, xs, nt, y, ldy);                             \
    }                                                                       \
    static void mv_##name(const void *W, uint64_t rb, uint64_t n,           \
                          int64_t nr, const void *xq, float *y)             \
    {                                                                       \
        call(W, rb, n, nr, xq, 0, 1, y, 0);                                 \
    }

#define MM32(ty) mm32(ty, W, rb, n, nr, xq, xs, nt, y, ldy)

static void q4_0_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MM32(T_Q4_0); }
static void q4_1_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MM32(T_Q4_1); }
static void q5_0_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MM32(T_Q5_0); }
static void q5_1_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MM32(T_Q5_1); }
static void q8_0_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MM32(T_Q8_0); }
static void iq4_nl_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MM32(T_IQ4); }

KS_MM(q4_0, q4_0_all)
KS_MM(q4_1, q4_1_all)
KS_MM(q5_0, q5_0_all)
KS_MM(q5_1, q5_1_all)
KS_MM(q8_0, q8_0_all)
KS_MM(iq4_nl, iq4_nl_all)

/* ---- K-quants against Q8_K ---------------------------------------------- */

enum { T_Q2_K, T_Q3_K, T_Q4_K, T_Q5_K, T_Q6_K };

#define KBYTES(ty) ((ty) == T_Q2_K ? 84 : (ty) == T_Q3_K ? 110 : \
                    (ty) == T_Q4_K ? 144 : (ty) == T_Q5_K ? 176 : 210)

/* Picks int16 lane |lo| of each 128-bit half into all of the low half and
 * lane |hi| into all of the high half (for pshufb on a broadcast xmm). */
KS_AI __m256i
lane_pick(int lo, int hi)
{
    return _mm256_set_m128i(_mm_set1_epi16((short)(((2 * hi + 1) << 8) | (2 * hi))),
                            _mm_set1_epi16((short)(((2 * lo + 1) << 8) | (2 * lo))));
}

#define PFK 2048

/* One weight row x T activation rows. */
KS_AI void
tile_k(const int ty, const int T, const uint8_t *W, int64_t nb,
       const uint8_t *X, uint64_t xs, float *y, uint64_t ldy)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[4];

    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = W + (uint64_t)b * KBYTES(ty);
        const ks_blk_q8_k *xb[4];
        __m256i sumi[4];
        float dw, dmw = 0.0f;

        for (int t = 0; t < T; t++) {
            xb[t] = (const ks_blk_q8_k *)(X + (uint64_t)t * xs) + b;
            sumi[t] = _mm256_setzero_si256();
        }
        if (PFK)
            for (int l = 0; l < KBYTES(ty); l += 64)
                _mm_prefetch((const char *)wb + PFK + l, _MM_HINT_T0);
        if (ty == T_Q4_K || ty == T_Q5_K) {
            const ks_blk_q4_k *q = (const ks_blk_q4_k *)wb; /* same head */
            uint8_t sc[8], mn[8];
            ks_k4_scales(q->scales, sc, mn);
            dw = h2f(&q->d);
            dmw = h2f(&q->dmin);
            __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn));
            __m256i mins2 = _mm256_set_m128i(_mm_unpackhi_epi16(mins, mins),
                                             _mm_unpacklo_epi16(mins, mins));
            __m256i scl = _mm256_broadcastsi128_si256(
                _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
            const uint8_t *qs = ty == T_Q4_K ? q->qs : ((const ks_blk_q5_k *)wb)->qs;
            __m256i qh = _mm256_setzero_si256();
            if (ty == T_Q5_K)
                qh = loadu256(((const ks_blk_q5_k *)wb)->qh);
            /* mins: subtract dmin * sum_j mn[j] * (bsums[2j] + bsums[2j+1]) */
            for (int t = 0; t < T; t++) {
                __m256i pm = _mm256_madd_epi16(loadu256(xb[t]->bsums), mins2);
                acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm),
                                          _mm256_set1_ps(dmw * xb[t]->d), acc[t]);
            }
            for (int g = 0; g < 4; g++) {
                __m256i v = loadu256(qs + 32 * g);
                __m256i lo = _mm256_and_si256(v, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (ty == T_Q5_K) {
                    const __m256i one = _mm256_set1_epi8(1);
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(
                        _mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
                    qh = _mm256_srli_epi16(qh, 2);
                }
                __m256i s_lo = _mm256_shuffle_epi8(scl, lane_pick(2 * g, 2 * g));
                __m256i s_hi = _mm256_shuffle_epi8(scl, lane_pick(2 * g + 1, 2 * g + 1));
                for (int t = 0; t < T; t++) {
                    __m256i p0 = _mm256_maddubs_epi16(lo, loadu256(xb[t]->qs + 64 * g));
                    __m256i p1 = _mm256_maddubs_epi16(hi, loadu256(xb[t]->qs + 64 * g + 32));
                    p0 = _mm256_madd_epi16(p0, s_lo);
                    p1 = _mm256_madd_epi16(p1, s_hi);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p0, p1));
                }
            }
        } else if (ty == T_Q6_K) {
            const ks_blk_q6_k *q = (const ks_blk_q6_k *)wb;
            const __m256i m30 = _mm256_set1_epi8(0x30);
            __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)q->scales));
            dw = h2f(&q->d);
            /* the -32 offset: sum_k scale_k * 32 * bsums_k */
            for (int t = 0; t < T; t++)
                sumi[t] = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(
                    _mm256_madd_epi16(loadu256(xb[t]->bsums), sc16), 5));
            for (int h = 0; h < 2; h++) {
                __m256i ql0 = loadu256(q->ql + 64 * h), ql1 = loadu256(q->ql + 64 * h + 32);
                __m256i qh = loadu256(q->qh + 32 * h);
                __m256i qv[4];
                qv[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4),
                                        _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
                qv[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                        _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
                qv[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                        _mm256_and_si256(qh, m30));
                qv[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                        _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
                __m256i sch = _mm256_broadcastsi128_si256(
                    _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(q->scales + 8 * h))));
                for (int i = 0; i < 4; i++) {
                    __m256i s = _mm256_shuffle_epi8(sch, lane_pick(2 * i, 2 * i + 1));
                    for (int t = 0; t < T; t++) {
                        __m256i p = _mm256_maddubs_epi16(qv[i], loadu256(xb[t]->qs + 128 * h + 32 * i));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, s));
                    }
                }
            }
        } else { /* Q2_K, Q3_K: same 2-bit walk, 16 sub-blocks of 16 */
            const uint8_t *qs, *scb;
            int8_t sc3[16];
            __m256i hm = _mm256_setzero_si256(), sc16;
            const __m256i m3 = _mm256_set1_epi8(3);
            if (ty == T_Q2_K) {
                const ks_blk_q2_k *q = (const ks_blk_q2_k *)wb;
                __m128i raw = _mm_loadu_si128((const __m128i *)q->scales);
                __m128i lo4 = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
                __m128i hi4 = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
                dw = h2f(&q->d);
                dmw = h2f(&q->dmin);
                _mm_storeu_si128((__m128i *)sc3, lo4);
                sc16 = _mm256_cvtepu8_epi16(lo4);
                __m256i mins16 = _mm256_cvtepu8_epi16(hi4);
                for (int t = 0; t < T; t++) {
                    __m256i pm = _mm256_madd_epi16(loadu256(xb[t]->bsums), mins16);
                    acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm),
                                              _mm256_set1_ps(dmw * xb[t]->d), acc[t]);
                }
                qs = q->qs;
            } else {
                const ks_blk_q3_k *q = (const ks_blk_q3_k *)wb;
                ks_k3_scales(q->scales, sc3);
                dw = h2f(&q->d);
                sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc3));
                hm = loadu256(q->hmask);
                /* q = u - 4 with u = low2 + 4*hbit in 0..7: subtract
                 * 4 * sum_k scale_k * bsums_k */
                for (int t = 0; t < T; t++)
                    sumi[t] = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(
                        _mm256_madd_epi16(loadu256(xb[t]->bsums), sc16), 2));
                qs = q->qs;
            }
            scb = (const uint8_t *)sc3;
            for (int h = 0; h < 2; h++) {
                __m256i v = loadu256(qs + 32 * h);
                __m256i sch = ty == T_Q2_K
                    ? _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(scb + 8 * h))))
                    : _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(scb + 8 * h))));
                for (int s = 0; s < 4; s++) {
                    __m256i u = _mm256_and_si256(v, m3);
                    v = _mm256_srli_epi16(v, 2);
                    if (ty == T_Q3_K) {
                        u = _mm256_or_si256(u, _mm256_and_si256(_mm256_slli_epi16(hm, 2),
                                                                _mm256_set1_epi8(4)));
                        hm = _mm256_srli_epi16(hm, 1);
                    }
                    __m256i sv = _mm256_shuffle_epi8(sch, lane_pick(2 * s, 2 * s + 1));
                    for (int t = 0; t < T; t++) {
                        __m256i p = _mm256_maddubs_epi16(u, loadu256(xb[t]->qs + 128 * h + 32 * s));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sv));
                    }
                }
            }
        }
        for (int t = 0; t < T; t++)
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]),
                                     _mm256_set1_ps(dw * xb[t]->d), acc[t]);
    }
    for (int t = 0; t < T; t++)
        y[(uint64_t)t * ldy] = hsum(acc[t]);
}

#define TBK 4

KS_AI void
mmk(const int ty, const void *W, uint64_t rb, uint64_t n, int64_t nr,
    const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 256);
    int64_t tc = nt == 1 ? 1 : tok_chunk((uint64_t)nb * sizeof(ks_blk_q8_k), TBK);

    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        int64_t te = t0 + tc < nt ? t0 + tc : nt;
        for (int64_t r = 0; r < nr; r++) {
            int64_t t = t0;
            for (; t + TBK <= te; t += TBK)
                tile_k(ty, TBK, w + r * rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
            for (; t < te; t++)
                tile_k(ty, 1, w + r * rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
        }
    }
}

#define MMK(ty) mmk(ty, W, rb, n, nr, xq, xs, nt, y, ldy)
static void q2_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q2_K); }
static void q3_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q3_K); }
static void q4_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q4_K); }
static void q5_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q5_K); }
static void q6_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q6_K); }

KS_MM(q2_k, q2_k_all)
KS_MM(q3_k, q3_k_all)
KS_MM(q4_k, q4_k_all)
KS_MM(q5_k, q5_k_all)
KS_MM(q6_k, q6_k_all)

/* ---- float types ------------------------------------------------------- */

enum { T_F32, T_F16, T_BF16 };

KS_AI __m256
load8(const int ty, const uint8_t *p)
{
    if (ty == T_F32)
        return _mm256_loadu_ps((const float *)p);
    if (ty == T_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

KS_AI float
load1(const int ty, const uint8_t *p)
{
    if (ty == T_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (ty == T_F16)
        return h2f(p);
    uint16_t h;
    memcpy(&h, p, 2);
    return ks_bf2f(h);
}

KS_AI void
tile_f(const int ty, const int R, const int T, const uint8_t *W, uint64_t rb,
       uint64_t n, const uint8_t *X, uint64_t xs, float *y, uint64_t ldy)
{
    const int es = ty == T_F32 ? 4 : 2;
    __m256 acc[4][2];
    uint64_t i = 0;

    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++)
            acc[r][t] = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 xv[2];
        for (int t = 0; t < T; t++)
            xv[t] = load8(ty, X + (uint64_t)t * xs + i * es);
        for (int r = 0; r < R; r++) {
            __m256 wv = load8(ty, W + (uint64_t)r * rb + i * es);
            if (T == 1)
                _mm_prefetch((const char *)W + (uint64_t)r * rb + i * es + 2 * R * rb,
                             _MM_HINT_T0);
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) {
            float s = hsum(acc[r][t]);
            for (uint64_t j = i; j < n; j++)
                s += load1(ty, W + (uint64_t)r * rb + j * es) *
                     load1(ty, X + (uint64_t)t * xs + j * es);
            y[(uint64_t)t * ldy + (uint64_t)r] = s;
        }
}

KS_AI void
mmf(const int ty, const void *W, uint64_t rb, uint64_t n, int64_t nr,
    const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t tc = nt == 1 ? 1 : tok_chunk(n * (ty == T_F32 ? 4 : 2), 2);

    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        int64_t te = t0 + tc < nt ? t0 + tc : nt, r = 0, t;
        for (; r + 4 <= nr; r += 4) {
            for (t = t0; t + 2 <= te; t += 2)
                tile_f(ty, 4, 2, w + r * rb, rb, n, x + t * xs, xs, y + t * ldy + r, ldy);
            for (; t < te; t++)
                tile_f(ty, 4, 1, w + r * rb, rb, n, x + t * xs, xs, y + t * ldy + r, ldy);
        }
        for (; r < nr; r++) {
            for (t = t0; t + 2 <= te; t += 2)
                tile_f(ty, 1, 2, w + r * rb, rb, n, x + t * xs, xs, y + t * ldy + r, ldy);
            for (; t < te; t++)
                tile_f(ty, 1, 1, w + r * rb, rb, n, x + t * xs, xs, y + t * ldy + r, ldy);
        }
    }
}

#define MMF(ty) mmf(ty, W, rb, n, nr, xq, xs, nt, y, ldy)
static void f32_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMF(T_F32); }
static void f16_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMF(T_F16); }
static void bf16_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMF(T_BF16); }

KS_MM(f32, f32_all)
KS_MM(f16, f16_all)
KS_MM(bf16, bf16_all)

/* ---- activation quantization (bit-identical to quant_ref.c) ------------ */

KS_AI __m256
abs_ps(__m256 v)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

KS_AI float
hmax(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

/* Rounds (ties to even) 32 floats times |id| and packs them to int8 in
 * order; returns the 8 int32 partial sums. */
KS_AI __m256i
round_pack32(const float *x, __m256 id, int8_t *out)
{
    __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 16), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 24), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)out, p);
    return sum;
}

KS_AI float
amax32(const float *x)
{
    __m256 m = abs_ps(_mm256_loadu_ps(x));
    m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + 8)));
    m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + 16)));
    m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + 24)));
    return hmax(m);
}

static void
qa_q8_0(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_0 *y = xq;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = amax32(x);
        float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = ks_f2h(amax / 127.f);
        round_pack32(x, _mm256_set1_ps(id), y[i].qs);
    }
}

static void
qa_q8_1(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_1 *y = xq;

    for (uint64_t i = 0; i < n / 32; i++, x += 32) {
        float amax = amax32(x), d = amax / 127.f;
        float id = amax != 0.0f ? 127.f / amax : 0.0f;
        __m256i s = round_pack32(x, _mm256_set1_ps(id), y[i].qs);
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
        y[i].d = ks_f2h(d);
        y[i].s = ks_f2h(d * (float)_mm_cvtsi128_si32(s4));
    }
}

static void
qa_q8_k(const float *x, void *xq, uint64_t n)
{
    ks_blk_q8_k *y = xq;

    for (uint64_t i = 0; i < n / 256; i++, x += 256) {
        __m256 m = _mm256_setzero_ps();
        float max = 0.0f, amax;
        for (int j = 0; j < 256; j += 8)
            m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(x + j)));
        amax = hmax(m);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof(y[i]));
            continue;
        }
        /* the first element of largest magnitude gives the sign */
        __m256 am = _mm256_set1_ps(amax);
        for (int j = 0; j < 256; j += 8) {
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + j)), am, _CMP_EQ_OQ));
            if (mask) {
                max = x[j + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        float iscale = -127.f / max;
        __m256 is = _mm256_set1_ps(iscale);
        for (int j = 0; j < 256; j += 32)
            round_pack32(x + j, is, y[i].qs + j);
        /* MIN(127, q): only +127.5 could round past it; pack saturation
         * already clamps there. */
        for (int j = 0; j < 16; j++) {
            __m128i v = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(y[i].qs + 16 * j)));
            __m128i w = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(y[i].qs + 16 * j + 8)));
            v = _mm_madd_epi16(_mm_add_epi16(v, w), _mm_set1_epi16(1));
            v = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
            v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 1));
            y[i].bsums[j] = (int16_t)_mm_cvtsi128_si32(v);
        }
        y[i].d = 1.0f / iscale;
    }
}

static void
qa_f16(const float *x, void *xq, uint64_t n)
{
    uint16_t *y = xq;
    uint64_t i = 0;

    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        y[i] = ks_f2h(x[i]);
}

void
ks_quant_ops_avx2(ks_quant_ops *ops)
{
#define SET(T, name)                       \
    ops->matvec[KS_QUANT_##T] = mv_##name; \
    ops->matmul[KS_QUANT_##T] = mm_##name;
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
    ops->quant_act[KS_QUANT_Q8_0] = qa_q8_0;
    ops->quant_act[KS_QUANT_Q8_1] = qa_q8_1;
    ops->quant_act[KS_QUANT_Q8_K] = qa_q8_k;
    ops->quant_act[KS_QUANT_F16] = qa_f16;
}
