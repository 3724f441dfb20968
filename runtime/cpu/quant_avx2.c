/* AVX2 + FMA + F16C kernels, compiled with those flags only (see
 * meson.build) and entered only when CPUID reports all three.
 *
 * The 32-element types run in tiles of 4 weight rows x 4 activation rows
 * (matvecs: 1, 2 or 4 rows, MV32): each weight block is unpacked once
 * and dotted with every activation block of the tile, each activation
 * block serves every row, and every (row, token) pair keeps its own
 * 8-lane float accumulator, reduced once at the end of the row. Integer
 * products use maddubs (u8 x s8 -> s16) and madd (s16 pairs -> s32).
 * Unsigned weights with an offset (Q4_0 -8, Q5_0 -16) subtract offset *
 * sum(activation) in 16 bits; signed weights (Q8_0, IQ4_NL) use the sign
 * trick.
 *
 * K-quants run one weight row x up to 4 activation rows: a super-block is
 * unpacked once per tile, integer sums are scaled by the 6/8-bit
 * sub-scales with madd and kept in int32 lanes for the whole super-block;
 * mins and offsets come from the Q8_K block sums.
 *
 * Matvecs prefetch the weights two tiles ahead, eight rows for one-row
 * tiles (the hardware prefetcher alone left the four interleaved row
 * streams at half the DRAM rate; one sequential stream per thread, with
 * prefetch, comes closest to it).
 * Matmuls walk activation rows in chunks small enough to stay in L2 while
 * all weight rows pass over them.
 *
 * Every kernel's float operations are llama.cpp's, in its order, for the
 * path it takes (quant_priv.h), bit-identical to quant_ref.c: the tiles
 * above are its vec_dot order (one 8-lane accumulator per output, lane l
 * holding bytes 4l..4l+3 of each 32-byte step, hsum at the end); the
 * float types' vec_dot keeps four accumulators; weights llama.cpp
 * repacks (Q4_0, IQ4_NL, Q4_K with rows % 8 == 0) run 8 rows at a time,
 * one output per lane, their per-block integer sums transposed by a tree
 * of horizontal adds (Q4_0: the quants transposed instead, rq4_tile), and
 * prefetch their row tile ~28 KiB ahead. */
#include <immintrin.h>
#include <math.h>

#include "runtime/cpu/quant_priv.h"

#define KS_AI static inline __attribute__((always_inline))

/* This file is compiled three times (meson.build): for AVX2 as it is, and
 * by quant_avxvnni.c and quant_avx512.c with their flags, which give the
 * integer products below their VNNI form (vpdpbusd: u8 x s8, four at a
 * time, into int32) and, for AVX-512, 512-bit forms where a kernel has
 * two 256-bit products side by side. The integer sums are exact in every
 * form (no maddubs here saturates: see each kernel), so the float
 * operations, and the results, stay those of the AVX2 build. */
#ifndef KS_QUANT_OPS_FN
#define KS_QUANT_OPS_FN ks_quant_ops_avx2
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define KS_VNNI 1
#define KS_DPBUSD(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#elif defined(__AVXVNNI__)
#define KS_VNNI 1
#define KS_DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#else
#define KS_VNNI 0
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define KS_512 1
#else
#define KS_512 0
#endif

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

/* Prefetch distance of the 32-element tiles in weight rows: one row at
 * a time reads one sequential stream and runs ahead further. */
#define PFROWS(R) ((R) == 1 ? 8 : 2 * (R))

/* The fp16 at p, p + rb, p + 2 rb, p + 3 rb as 4 floats. */
KS_AI __m128
h2f_rows4(const uint8_t *p, uint64_t rb)
{
    uint16_t h[4];

    for (int r = 0; r < 4; r++)
        memcpy(&h[r], p + (uint64_t)r * rb, 2);
    uint64_t v = (uint64_t)h[0] | (uint64_t)h[1] << 16 | (uint64_t)h[2] << 32 |
                 (uint64_t)h[3] << 48;
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)v));
}

/* y[t*ldy + r] for r < R, t < T; W and X point at the tile's first row.
 * Per (row, token) pair: acc gets d_w*d_x*dot in 8 lanes; for the types
 * with a min, macc lane 1 gets m_w*s_x. Matmul tiles of 4 rows without
 * a min take the 16 products d_w*d_x from a small table, 4 at a time
 * (the same products; the broadcasts then come from memory). */
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
    const int TAB = !HAS_MIN(ty) && R == 4 && T > 1;
    for (int64_t b = 0; b < nb; b++) {
        __m256i a[4], ao[4];
        __m128 ds[4];
        float dd[4][4] __attribute__((aligned(16)));
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = X + (uint64_t)t * xs + (uint64_t)b * ABYTES(ty);
            a[t] = loadu256(xb + (HAS_MIN(ty) ? 4 : 2));
            ds[t] = h2f_pair(xb);
            if (OFFSET(ty))
#if KS_VNNI
                ao[t] = KS_DPBUSD(_mm256_setzero_si256(), _mm256_set1_epi8(OFFSET(ty)), a[t]);
#else
                ao[t] = _mm256_maddubs_epi16(_mm256_set1_epi8(OFFSET(ty)), a[t]);
#endif
        }
        if (TAB) {
            __m128 dw = h2f_rows4(W + (uint64_t)b * WBYTES(ty), rb);
            for (int t = 0; t < T; t++)
                _mm_store_ps(dd[t], _mm_mul_ps(dw, _mm_broadcastss_ps(ds[t])));
        }
        for (int r = 0; r < R; r++) {
            const uint8_t *wb = W + (uint64_t)r * rb + (uint64_t)b * WBYTES(ty);
            __m256i w = unpack32(ty, wb), aw = w;
            _mm_prefetch((const char *)wb + PFROWS(R) * rb, _MM_HINT_T0);
            __m128 dm = h2f_pair(wb);
            if (SIGNED(ty))
                aw = _mm256_sign_epi8(w, w);
            for (int t = 0; t < T; t++) {
                __m256 f;
#if KS_VNNI
                /* the same lane sums as maddubs + madd below */
                const __m256i z = _mm256_setzero_si256();
                __m256i p32;
                if (SIGNED(ty)) {
                    p32 = KS_DPBUSD(z, aw, _mm256_sign_epi8(a[t], w));
                } else {
                    p32 = KS_DPBUSD(z, w, a[t]);
                    if (OFFSET(ty))
                        p32 = _mm256_sub_epi32(p32, ao[t]);
                }
                f = _mm256_cvtepi32_ps(p32);
                (void)ones;
#else
                __m256i p;
                if (SIGNED(ty)) {
                    p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a[t], w));
                } else {
                    p = _mm256_maddubs_epi16(w, a[t]);
                    if (OFFSET(ty))
                        p = _mm256_sub_epi16(p, ao[t]);
                }
                f = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
#endif
                if (TAB) {
                    acc[r][t] = _mm256_fmadd_ps(f, _mm256_broadcast_ss(&dd[t][r]), acc[r][t]);
                    continue;
                }
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

/* Activation rows in the next tile when |left| remain: as few tiles of at
 * most |most| as possible, of nearly equal size (most 4: 5 is 3 + 2, 7 is
 * 4 + 3), so that a weight block is unpacked once per tile, not once per
 * token of a remainder (verification products have 2 to 9). */
KS_AI int64_t
tile_tokens(int64_t left, int64_t most)
{
    int64_t tiles = (left + most - 1) / most;

    return (left + tiles - 1) / tiles;
}

/* Activation rows per chunk: about 256 KiB of them, at least |tb|. */
static int64_t
tok_chunk(uint64_t act_row_bytes, int tb)
{
    int64_t c = (int64_t)((256u << 10) / (act_row_bytes ? act_row_bytes : 1));
    c = c / tb * tb;
    return c < tb ? tb : c;
}

/* Tile shapes: matvec MV32 rows x 1 token; matmul MR32 rows x MT32 tokens.
 * Matvec rows per tile: two threads streaming Q8_0 one row at a time (one
 * sequential stream per thread) reach ~25 GB/s here, four interleaved
 * rows ~17; Q4_1 does best with two; the types that cost more to unpack
 * share each activation block among four rows. */
#define MV32(ty) ((ty) == T_Q8_0 ? 1 : (ty) == T_Q4_1 ? 2 : 4)
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
        for (; r + MV32(ty) <= nr; r += MV32(ty))
            tile32(ty, MV32(ty), 1, w + r * rb, rb, nb, x, 0, y + r, 0);
        for (; r < nr; r++)
            tile32(ty, 1, 1, w + r * rb, rb, nb, x, 0, y + r, 0);
        return;
    }
    int64_t tc = tok_chunk((uint64_t)nb * ABYTES(ty), MT32);
    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        int64_t te = t0 + tc < nt ? t0 + tc : nt, r = 0, t, T;
        for (; r + MR32 <= nr; r += MR32) {
            for (t = t0; t < te; t += T) {
                const uint8_t *wr = w + r * rb, *xt = x + t * xs;
                float *yt = y + t * ldy + r;
                switch ((T = tile_tokens(te - t, MT32))) {
                case 4:  tile32(ty, MR32, 4, wr, rb, nb, xt, xs, yt, ldy); break;
                case 3:  tile32(ty, MR32, 3, wr, rb, nb, xt, xs, yt, ldy); break;
                case 2:  tile32(ty, MR32, 2, wr, rb, nb, xt, xs, yt, ldy); break;
                default: tile32(ty, MR32, 1, wr, rb, nb, xt, xs, yt, ldy); break;
                }
            }
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

#define KS_MMO(name, call)                                                  \
    static void mm_##name(const void *W, uint64_t rb, uint64_t n,           \
                          int64_t nr, const void *xq, uint64_t xs,          \
                          int64_t nt, float *y, uint64_t ldy)               \
    {                                                                       \
        call(W, rb, n, nr, xq, xs, nt, y, ldy);                             \
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
KS_MMO(iq4_nl, iq4_nl_all)

/* Horizontal sum of 8 int32 lanes (exact). */
KS_AI int
hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

/* p[r] holds 8 partial int32 sums of row r: returns the 8 row totals. */
KS_AI __m256i
rows8_sum(const __m256i p[8])
{
    __m256i h01 = _mm256_hadd_epi32(p[0], p[1]), h23 = _mm256_hadd_epi32(p[2], p[3]);
    __m256i h45 = _mm256_hadd_epi32(p[4], p[5]), h67 = _mm256_hadd_epi32(p[6], p[7]);
    __m256i q0 = _mm256_hadd_epi32(h01, h23), q1 = _mm256_hadd_epi32(h45, h67);
    return _mm256_add_epi32(_mm256_permute2x128_si256(q0, q1, 0x20),
                            _mm256_permute2x128_si256(q0, q1, 0x31));
}

/* Integer lanes of one 32-element block against one Q8_0 activation
 * block (lane l: elements 4l..4l+3), for the signed-offset types. */
KS_AI __m256i
lanes32(const int ty, __m256i w, __m256i a, __m256i ao)
{
    __m256i p;

    if (SIGNED(ty)) {
        p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    } else {
        p = _mm256_maddubs_epi16(w, a);
        if (OFFSET(ty))
            p = _mm256_sub_epi16(p, ao);
    }
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* ggml_vec_dot_iq4_nl_q8_0 for one row and one token: blocks in pairs
 * on two accumulators, an odd last block fused in scalar. */
static float
iq4_vd(const uint8_t *w, const uint8_t *x, int64_t nb)
{
    __m256 acc[2] = { _mm256_setzero_ps(), _mm256_setzero_ps() };
    const __m256i z = _mm256_setzero_si256();
    int64_t b = 0;
    float s;

    for (; b + 1 < nb; b += 2)
        for (int k = 0; k < 2; k++) {
            const uint8_t *wb = w + (uint64_t)(b + k) * 18, *xb = x + (uint64_t)(b + k) * 34;
            __m256i p = lanes32(T_IQ4, unpack32(T_IQ4, wb), loadu256(xb + 2), z);
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(h2f(xb) * h2f(wb)),
                                     _mm256_cvtepi32_ps(p), acc[k]);
        }
    s = hsum(_mm256_add_ps(acc[0], acc[1]));
    if (b < nb) {
        const uint8_t *wb = w + (uint64_t)b * 18, *xb = x + (uint64_t)b * 34;
        int sum = hsum_i32(lanes32(T_IQ4, unpack32(T_IQ4, wb), loadu256(xb + 2), z));
        s = fmaf((float)sum, h2f(xb) * h2f(wb), s);
    }
    return s;
}

static void
mm_iq4_vd(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq,
          uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    for (int64_t t = 0; t < nt; t++)
        for (int64_t r = 0; r < nr; r++)
            y[(uint64_t)t * ldy + (uint64_t)r] =
                iq4_vd((const uint8_t *)W + (uint64_t)r * rb,
                       (const uint8_t *)xq + (uint64_t)t * xs, (int64_t)(n / 32));
}

static void
mv_iq4_vd(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq,
          float *y)
{
    mm_iq4_vd(W, rb, n, nr, xq, 0, 1, y, 0);
}

/* Weights repacked by llama.cpp (Q4_0, IQ4_NL with rows % 8 == 0): its
 * GEMV and GEMM keep, per output, one float and add fma(block integer
 * sum, d_w*d_x) block after block. Eight rows at a time, one per lane;
 * other row counts fall to the scalar kernel. */
static ks_matmul_fn scalar_gemv32[2], scalar_gemv_k, scalar_gemm_k;

/* Prefetches the 64-byte lines that start in [p + i*step, p + (i+1)*step):
 * called once per step i, it streams a region ahead of its use at the
 * rate the kernel consumes its own (8-row tiles read a contiguous region
 * out of order, which the hardware prefetcher does not follow). */
KS_AI void
pf_slice(const uint8_t *p, uint64_t step, uint64_t i)
{
    uintptr_t a = (uintptr_t)p + i * step, e = a + step;

    for (a = (a + 63) & ~(uintptr_t)63; a < e; a += 64)
        _mm_prefetch((const char *)a, _MM_HINT_T0);
}

/* How far ahead 8-row tiles prefetch: whole tiles, about 28 KiB. */
KS_AI uint64_t
pf_ahead(uint64_t rb)
{
    uint64_t tiles = (28u << 10) / (8 * rb);

    return 8 * rb * (tiles ? tiles : 1);
}

/* The fp16 at p, p + rb, ..., p + 7 rb as 8 floats. */
KS_AI __m256
h2f_rows8(const uint8_t *p, uint64_t rb)
{
    uint16_t h[8];

    for (int r = 0; r < 8; r++)
        memcpy(&h[r], p + (uint64_t)r * rb, 2);
    __m128i v = _mm_cvtsi32_si128(h[0]);
    v = _mm_insert_epi16(v, h[1], 1);
    v = _mm_insert_epi16(v, h[2], 2);
    v = _mm_insert_epi16(v, h[3], 3);
    v = _mm_insert_epi16(v, h[4], 4);
    v = _mm_insert_epi16(v, h[5], 5);
    v = _mm_insert_epi16(v, h[6], 6);
    v = _mm_insert_epi16(v, h[7], 7);
    return _mm256_cvtph_ps(v);
}

/* m[r] holds 16 int16 partial sums of row r whose total fits int16:
 * returns the 8 row totals as int32. */
KS_AI __m256i
rows8_sum16(const __m256i m[8])
{
    __m256i h01 = _mm256_hadd_epi16(m[0], m[1]), h23 = _mm256_hadd_epi16(m[2], m[3]);
    __m256i h45 = _mm256_hadd_epi16(m[4], m[5]), h67 = _mm256_hadd_epi16(m[6], m[7]);
    /* each 128-bit half: the 8 rows' sums of its 8 values, in order */
    __m256i q = _mm256_hadd_epi16(_mm256_hadd_epi16(h01, h23), _mm256_hadd_epi16(h45, h67));
    __m128i s = _mm_add_epi16(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    return _mm256_cvtepi16_epi32(s);
}

KS_AI void
rp32_tile(const int ty, const int T, const uint8_t *W, uint64_t rb,
          int64_t nb, const uint8_t *X, uint64_t xs, float *y, uint64_t ldy)
{
    __m256 acc[4];

    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = W + (uint64_t)b * WBYTES(ty);
        __m256i w[8];
        pf_slice(W + pf_ahead(rb), 8 * WBYTES(ty), (uint64_t)b);
        for (int r = 0; r < 8; r++)
            w[r] = unpack32(ty, wb + (uint64_t)r * rb);
        __m256 dw = h2f_rows8(wb, rb);
        for (int t = 0; t < T; t++) {
            const uint8_t *xb = X + (uint64_t)t * xs + (uint64_t)b * 34;
            __m256i a = loadu256(xb + 2), isum, p[8];
            if (ty == T_Q4_0) {
                /* |sum| <= 32 * 8 * 127 fits int16 */
                __m256i ao = _mm256_maddubs_epi16(_mm256_set1_epi8(8), a);
                for (int r = 0; r < 8; r++)
                    p[r] = _mm256_sub_epi16(_mm256_maddubs_epi16(w[r], a), ao);
                isum = rows8_sum16(p);
            } else {
                for (int r = 0; r < 8; r++)
                    p[r] = lanes32(ty, w[r], a, _mm256_setzero_si256());
                isum = rows8_sum(p);
            }
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                     _mm256_mul_ps(dw, _mm256_set1_ps(h2f(xb))), acc[t]);
        }
    }
    for (int t = 0; t < T; t++)
        _mm256_storeu_ps(y + (uint64_t)t * ldy, acc[t]);
}

KS_AI void
rp32(const int ty, const void *W, uint64_t rb, uint64_t n, int64_t nr,
     const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 32), r = 0;

    for (; r + 8 <= nr; r += 8) {
        int64_t t = 0;
        for (; t + 4 <= nt; t += 4)
            rp32_tile(ty, 4, w + r * rb, rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
        for (; t < nt; t++)
            rp32_tile(ty, 1, w + r * rb, rb, nb, x + t * xs, xs, y + t * ldy + r, ldy);
    }
    if (r < nr)
        scalar_gemv32[ty == T_IQ4](w + r * rb, rb, n, nr - r, xq, xs, nt, y + r, ldy);
}

/* Q4_0 in the repacked order, a faster shape of rp32_tile. Per block the
 * 8 rows' quants are transposed once (unpack of dwords) so that each
 * 32-bit lane holds 4 quants of one row, lanes in the row order
 * [0 2 4 6 1 3 5 7], which the scales follow and one permute undoes at
 * the end. Per token, 8 maddubs against 4 activation bytes broadcast,
 * summed in 16 bits (at most 16 products of 15 * 127 per lane) and one
 * madd give the 8 row totals without horizontal adds. The -8 offset is
 * subtracted once per block as 8 * (sum of the activation block), from a
 * table made once per token chunk along with the activation scales as
 * floats. The float operations per output are rp32_tile's:
 * fma(isum, d_w * d_x, acc). */

/* The fp16 at p + r * rb for r = 0, 2, 4, 6, 1, 3, 5, 7, as 8 floats;
 * assembled in general registers (the vector ports are the busy ones). */
KS_AI __m256
h2f_rows8_perm(const uint8_t *p, uint64_t rb)
{
    uint16_t h[8];

    for (int r = 0; r < 8; r++)
        memcpy(&h[r], p + (uint64_t)r * rb, 2);
    uint64_t even = (uint64_t)h[0] | (uint64_t)h[2] << 16 | (uint64_t)h[4] << 32 |
                    (uint64_t)h[6] << 48;
    uint64_t odd = (uint64_t)h[1] | (uint64_t)h[3] << 16 | (uint64_t)h[5] << 32 |
                   (uint64_t)h[7] << 48;
    return _mm256_cvtph_ps(_mm_set_epi64x((long long)odd, (long long)even));
}

/* Entries (tokens x blocks) of rp_q4_0's activation tables, 32 KiB of
 * stack; rows of more blocks go to rp32. */
#define RQ4_TAB 4096

KS_AI void
rq4_tile(const int T, const uint8_t *W, uint64_t rb, int64_t nb,
         const uint8_t *X, uint64_t xs, const float *dx, const int32_t *ofs,
         float *y, uint64_t ldy)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc[4];

    for (int t = 0; t < T; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = W + (uint64_t)b * 18;
        __m256i v[4], g[8];
        pf_slice(W + pf_ahead(rb), 8 * 18, (uint64_t)b);
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++)
            v[p] = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(wb + 2 * (uint64_t)p * rb + 2))),
                _mm_loadu_si128((const __m128i *)(wb + (2 * (uint64_t)p + 1) * rb + 2)), 1);
        /* v[p] = [row 2p | row 2p+1], 4 dwords each: transpose to one
         * vector per dword, rows [0 2 4 6 | 1 3 5 7] */
        __m256i u0 = _mm256_unpacklo_epi32(v[0], v[1]), u1 = _mm256_unpackhi_epi32(v[0], v[1]);
        __m256i u2 = _mm256_unpacklo_epi32(v[2], v[3]), u3 = _mm256_unpackhi_epi32(v[2], v[3]);
        __m256i d[4] = { _mm256_unpacklo_epi64(u0, u2), _mm256_unpackhi_epi64(u0, u2),
                         _mm256_unpacklo_epi64(u1, u3), _mm256_unpackhi_epi64(u1, u3) };
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            g[j] = _mm256_and_si256(d[j], m4);
            g[j + 4] = _mm256_and_si256(_mm256_srli_epi16(d[j], 4), m4);
        }
        __m256 dw = h2f_rows8_perm(wb, rb);
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const uint8_t *xq = X + (uint64_t)t * xs + (uint64_t)b * 34 + 2;
            int32_t a4;
#if KS_VNNI
            __m256i s32 = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                memcpy(&a4, xq + 4 * j, 4);
                s32 = KS_DPBUSD(s32, g[j], _mm256_set1_epi32(a4));
            }
            (void)ones;
#else
            __m256i s16 = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                memcpy(&a4, xq + 4 * j, 4);
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(g[j], _mm256_set1_epi32(a4)));
            }
            __m256i s32 = _mm256_madd_epi16(s16, ones);
#endif
            __m256i isum = _mm256_sub_epi32(s32, _mm256_set1_epi32(ofs[(uint64_t)t * nb + b]));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                     _mm256_mul_ps(dw, _mm256_set1_ps(dx[(uint64_t)t * nb + b])),
                                     acc[t]);
        }
    }
    const __m256i unperm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int t = 0; t < T; t++)
        _mm256_storeu_ps(y + (uint64_t)t * ldy, _mm256_permutevar8x32_ps(acc[t], unperm));
}

#if KS_512
/* rq4_tile for 16 rows: rows 0-7 in the low 256 bits of every vector
 * and rows 8-15 in the high 256, each half laid out as rq4_tile lays out
 * its 8 rows, so that one 512-bit vpdpbusd serves 16 rows; every lane's
 * integer sum and float operations are rq4_tile's. */
KS_AI void
rq4_tile16(const int T, const uint8_t *W, uint64_t rb, int64_t nb,
           const uint8_t *X, uint64_t xs, const float *dx, const int32_t *ofs,
           float *y, uint64_t ldy)
{
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    uint64_t ahead = (28u << 10) / (16 * rb);
    __m512 acc[4];

    ahead = 16 * rb * (ahead ? ahead : 1);
    for (int t = 0; t < T; t++)
        acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = W + (uint64_t)b * 18;
        __m512i v[4], g[8];
        pf_slice(W + ahead, 16 * 18, (uint64_t)b);
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            /* [row 2p | row 2p+1 | row 2p+8 | row 2p+9] */
            __m512i z = _mm512_castsi128_si512(
                _mm_loadu_si128((const __m128i *)(wb + 2 * (uint64_t)p * rb + 2)));
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(wb + (2 * (uint64_t)p + 1) * rb + 2)), 1);
            z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(wb + (2 * (uint64_t)p + 8) * rb + 2)), 2);
            v[p] = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(wb + (2 * (uint64_t)p + 9) * rb + 2)), 3);
        }
        __m512i u0 = _mm512_unpacklo_epi32(v[0], v[1]), u1 = _mm512_unpackhi_epi32(v[0], v[1]);
        __m512i u2 = _mm512_unpacklo_epi32(v[2], v[3]), u3 = _mm512_unpackhi_epi32(v[2], v[3]);
        __m512i d[4] = { _mm512_unpacklo_epi64(u0, u2), _mm512_unpackhi_epi64(u0, u2),
                         _mm512_unpacklo_epi64(u1, u3), _mm512_unpackhi_epi64(u1, u3) };
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            g[j] = _mm512_and_si512(d[j], m4);
            g[j + 4] = _mm512_and_si512(_mm512_srli_epi16(d[j], 4), m4);
        }
        __m512 dw = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castpd256_pd512(_mm256_castps_pd(h2f_rows8_perm(wb, rb))),
            _mm256_castps_pd(h2f_rows8_perm(wb + 8 * rb, rb)), 1));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const uint8_t *xq = X + (uint64_t)t * xs + (uint64_t)b * 34 + 2;
            __m512i s32 = _mm512_setzero_si512();
            int32_t a4;
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                memcpy(&a4, xq + 4 * j, 4);
                s32 = _mm512_dpbusd_epi32(s32, g[j], _mm512_set1_epi32(a4));
            }
            __m512i isum = _mm512_sub_epi32(s32, _mm512_set1_epi32(ofs[(uint64_t)t * nb + b]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum),
                                     _mm512_mul_ps(dw, _mm512_set1_ps(dx[(uint64_t)t * nb + b])),
                                     acc[t]);
        }
    }
    const __m256i unperm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int t = 0; t < T; t++) {
        __m256 lo = _mm512_castps512_ps256(acc[t]);
        __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[t]), 1));
        _mm256_storeu_ps(y + (uint64_t)t * ldy, _mm256_permutevar8x32_ps(lo, unperm));
        _mm256_storeu_ps(y + (uint64_t)t * ldy + 8, _mm256_permutevar8x32_ps(hi, unperm));
    }
}
#endif

static void
rp_q4_0(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq,
        uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 32), r8 = nr / 8 * 8;
    float dx[RQ4_TAB];
    int32_t ofs[RQ4_TAB];

    if (nb > RQ4_TAB) {
        rp32(T_Q4_0, W, rb, n, nr, xq, xs, nt, y, ldy);
        return;
    }
    int64_t tc = RQ4_TAB / nb;
    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        int64_t te = t0 + tc < nt ? t0 + tc : nt;
        for (int64_t t = t0; t < te; t++)
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *xb = x + (uint64_t)t * xs + (uint64_t)b * 34;
                __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1),
                                                                   loadu256(xb + 2)),
                                              _mm256_set1_epi16(1));
                dx[(t - t0) * nb + b] = h2f(xb);
                ofs[(t - t0) * nb + b] = 8 * hsum_i32(s);
            }
        int64_t r = 0;
#if KS_512
        for (; r + 16 <= r8; r += 16) {
            int64_t t = t0;
            for (; t + 4 <= te; t += 4)
                rq4_tile16(4, w + r * rb, rb, nb, x + t * xs, xs, dx + (t - t0) * nb,
                           ofs + (t - t0) * nb, y + t * ldy + r, ldy);
            for (; t < te; t++)
                rq4_tile16(1, w + r * rb, rb, nb, x + t * xs, xs, dx + (t - t0) * nb,
                           ofs + (t - t0) * nb, y + t * ldy + r, ldy);
        }
#endif
        for (; r < r8; r += 8) {
            int64_t t = t0;
            for (; t + 4 <= te; t += 4)
                rq4_tile(4, w + r * rb, rb, nb, x + t * xs, xs, dx + (t - t0) * nb,
                         ofs + (t - t0) * nb, y + t * ldy + r, ldy);
            for (; t < te; t++)
                rq4_tile(1, w + r * rb, rb, nb, x + t * xs, xs, dx + (t - t0) * nb,
                         ofs + (t - t0) * nb, y + t * ldy + r, ldy);
        }
    }
    if (r8 < nr)
        scalar_gemv32[0](w + r8 * rb, rb, n, nr - r8, xq, xs, nt, y + r8, ldy);
}

static void rp_iq4_nl(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { rp32(T_IQ4, W, rb, n, nr, xq, xs, nt, y, ldy); }

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

/* One weight row x T activation rows. TL: ggml's tiled kernel instead
 * of vec_dot (one float per output: per super-block, fma(d_w * integer
 * sum [- dmin_w * mins, fused], d_x)). */
KS_AI void
tile_k(const int ty, const int TL, const int T, const uint8_t *W, int64_t nb,
       const uint8_t *X, uint64_t xs, float *y, uint64_t ldy)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[8];
    __m128 accm[8], tacc4 = _mm_setzero_ps();
    float tacc[8];
    __m256i pmt[8];

    for (int t = 0; t < T; t++) {
        acc[t] = _mm256_setzero_ps();
        accm[t] = _mm_setzero_ps();
        tacc[t] = 0.0f;
        pmt[t] = _mm256_setzero_si256();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = W + (uint64_t)b * KBYTES(ty);
        const ks_blk_q8_k *xb[8];
        __m256i sumi[8];
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
            /* mins, as ggml: lane l of mn . (pairs of bsums) holds the
             * sub-blocks 2l, 2l+1; Q4_K accumulates the 4 lanes times
             * -d_x*dmin, Q5_K their sum into a scalar */
            for (int t = 0; t < T; t++) {
                /* lane j of the madd: mn[j] * (bsums[2j] + bsums[2j+1]);
                 * the tiled kernel needs their total only */
                __m256i pj = _mm256_madd_epi16(loadu256(xb[t]->bsums), mins2);
                if (TL) {
                    pmt[t] = pj;
                    continue;
                }
                __m128i pm = _mm_hadd_epi32(_mm256_castsi256_si128(pj),
                                            _mm256_extracti128_si256(pj, 1));
                float dmin = -xb[t]->d * dmw;
                if (ty == T_Q4_K) {
                    accm[t] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(pm),
                                           accm[t]);
                } else { /* lane 0 of accm: the scalar sum */
                    pm = _mm_add_epi32(pm, _mm_unpackhi_epi64(pm, pm));
                    pm = _mm_add_epi32(pm, _mm_shuffle_epi32(pm, 1));
                    accm[t] = _mm_fmadd_ss(_mm_cvtepi32_ps(pm), _mm_set_ss(dmin), accm[t]);
                }
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
#if KS_512
                /* groups i and i+1 side by side against their 64
                 * contiguous activation bytes: the same int32 sums */
                for (int i = 0; i < 4; i += 2) {
                    __m512i qz = _mm512_inserti64x4(_mm512_castsi256_si512(qv[i]), qv[i + 1], 1);
                    __m512i sz = _mm512_inserti64x4(
                        _mm512_castsi256_si512(_mm256_shuffle_epi8(sch, lane_pick(2 * i, 2 * i + 1))),
                        _mm256_shuffle_epi8(sch, lane_pick(2 * i + 2, 2 * i + 3)), 1);
                    for (int t = 0; t < T; t++) {
                        __m512i pz = _mm512_madd_epi16(_mm512_maddubs_epi16(
                            qz, _mm512_loadu_si512((const void *)(xb[t]->qs + 128 * h + 32 * i))), sz);
                        sumi[t] = _mm256_add_epi32(sumi[t],
                                                   _mm256_add_epi32(_mm512_castsi512_si256(pz),
                                                                    _mm512_extracti64x4_epi64(pz, 1)));
                    }
                }
#endif
                for (int i = 0; !KS_512 && i < 4; i++) {
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
            __m256i hm = _mm256_setzero_si256();
            const __m256i m3 = _mm256_set1_epi8(3);
            if (ty == T_Q2_K) {
                const ks_blk_q2_k *q = (const ks_blk_q2_k *)wb;
                __m128i raw = _mm_loadu_si128((const __m128i *)q->scales);
                __m128i lo4 = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
                __m128i hi4 = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
                dw = h2f(&q->d);
                dmw = h2f(&q->dmin);
                _mm_storeu_si128((__m128i *)sc3, lo4);
                __m256i mins16 = _mm256_cvtepu8_epi16(hi4);
                for (int t = 0; t < T; t++) {
                    __m256i pm = _mm256_madd_epi16(loadu256(xb[t]->bsums), mins16);
                    if (TL)
                        pmt[t] = pm;
                    else
                        acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(pm),
                                                  _mm256_set1_ps(dmw * xb[t]->d), acc[t]);
                }
                qs = q->qs;
            } else {
                const ks_blk_q3_k *q = (const ks_blk_q3_k *)wb;
                ks_k3_scales(q->scales, sc3);
                dw = h2f(&q->d);
                hm = loadu256(q->hmask);
                qs = q->qs;
                /* the tiled kernel needs the block's total only: take q =
                 * u - 4 with u = low2 + 4*hbit unsigned, and subtract
                 * 4 * sum_k scale_k * bsums_k (one product, not two) */
                if (TL) {
                    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc3));
                    for (int t = 0; t < T; t++)
                        sumi[t] = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(
                            _mm256_madd_epi16(loadu256(xb[t]->bsums), sc16), 2));
                }
            }
            scb = (const uint8_t *)sc3;
            for (int h = 0; h < 2; h++) {
                __m256i v = loadu256(qs + 32 * h);
                __m256i sch = ty == T_Q2_K
                    ? _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(scb + 8 * h))))
                    : _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(scb + 8 * h))));
                for (int s = 0; s < 4; s++) {
                    __m256i u = _mm256_and_si256(v, m3), hn = u;
                    v = _mm256_srli_epi16(v, 2);
                    if (ty == T_Q3_K && TL) {
                        u = _mm256_or_si256(u, _mm256_and_si256(_mm256_slli_epi16(hm, 2),
                                                                _mm256_set1_epi8(4)));
                        hm = _mm256_srli_epi16(hm, 1);
                    } else if (ty == T_Q3_K) {
                        /* signed q = low2 - 4 where the high bit is clear,
                         * as two unsigned products (ggml's lanes) */
                        hn = _mm256_andnot_si256(_mm256_slli_epi16(hm, 2),
                                                 _mm256_set1_epi8(4));
                        hm = _mm256_srli_epi16(hm, 1);
                    }
                    __m256i sv = _mm256_shuffle_epi8(sch, lane_pick(2 * s, 2 * s + 1));
                    for (int t = 0; t < T; t++) {
                        __m256i a = loadu256(xb[t]->qs + 128 * h + 32 * s);
                        __m256i p = _mm256_maddubs_epi16(u, a);
                        if (ty == T_Q3_K && !TL)
                            p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(hn, a));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, sv));
                    }
                }
            }
        }
        if (TL && T == 4) { /* the 4 tokens' epilogues in one vector */
            __m256i q = _mm256_hadd_epi32(_mm256_hadd_epi32(sumi[0], sumi[1]),
                                          _mm256_hadd_epi32(sumi[2], sumi[3]));
            __m128i s1 = _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
            __m128 res = _mm_mul_ps(_mm_set1_ps(dw), _mm_cvtepi32_ps(s1));
            if (ty == T_Q2_K || ty == T_Q4_K || ty == T_Q5_K) {
                __m256i m = _mm256_hadd_epi32(_mm256_hadd_epi32(pmt[0], pmt[1]),
                                              _mm256_hadd_epi32(pmt[2], pmt[3]));
                __m128i s2 = _mm_add_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
                res = _mm_fnmadd_ps(_mm_set1_ps(dmw), _mm_cvtepi32_ps(s2), res);
            }
            tacc4 = _mm_fmadd_ps(res, _mm_setr_ps(xb[0]->d, xb[1]->d, xb[2]->d, xb[3]->d), tacc4);
        }
        for (int t = 0; t < T; t++) {
            if (TL && T == 4) {
                break;
            } else if (TL) {
                float res = dw * (float)hsum_i32(sumi[t]);
                if (ty == T_Q2_K || ty == T_Q4_K || ty == T_Q5_K)
                    res = fmaf(-dmw, (float)hsum_i32(pmt[t]), res);
                tacc[t] = fmaf(res, xb[t]->d, tacc[t]);
            } else {
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]),
                                         _mm256_set1_ps(dw * xb[t]->d), acc[t]);
            }
        }
    }
    for (int t = 0; t < T; t++) {
        float v = hsum(acc[t]);
        if (TL) {
            float tv[4];
            _mm_storeu_ps(tv, tacc4);
            y[(uint64_t)t * ldy] = T == 4 ? tv[t] : tacc[t];
            continue;
        }
        if (ty == T_Q4_K) {
            __m128 m = _mm_add_ps(accm[t], _mm_movehl_ps(accm[t], accm[t]));
            v += _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)));
        } else if (ty == T_Q5_K) {
            v += _mm_cvtss_f32(accm[t]);
        }
        y[(uint64_t)t * ldy] = v;
    }
}

#define TBK 4

KS_AI void
mmk(const int ty, const int TL, const void *W, uint64_t rb, uint64_t n, int64_t nr,
    const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 256);
    int64_t tc = nt == 1 ? 1 : tok_chunk((uint64_t)nb * sizeof(ks_blk_q8_k), TBK);

    for (int64_t t0 = 0; t0 < nt; t0 += tc) {
        int64_t te = t0 + tc < nt ? t0 + tc : nt;
        for (int64_t r = 0; r < nr; r++) {
            for (int64_t t = t0, T; t < te; t += T) {
                const uint8_t *wr = w + r * rb, *xt = x + t * xs;
                float *yt = y + t * ldy + r;
                /* vec_dot order up to 8 tokens a tile (a verification
                 * product unpacks each block once); the tiled kernel's
                 * prefill 4 (its 4-token epilogue) */
                switch ((T = tile_tokens(te - t, TL ? 4 : 8))) {
                case 8:  tile_k(ty, TL, 8, wr, nb, xt, xs, yt, ldy); break;
                case 7:  tile_k(ty, TL, 7, wr, nb, xt, xs, yt, ldy); break;
                case 6:  tile_k(ty, TL, 6, wr, nb, xt, xs, yt, ldy); break;
                case 5:  tile_k(ty, TL, 5, wr, nb, xt, xs, yt, ldy); break;
                case 4:  tile_k(ty, TL, 4, wr, nb, xt, xs, yt, ldy); break;
                case 3:  tile_k(ty, TL, 3, wr, nb, xt, xs, yt, ldy); break;
                case 2:  tile_k(ty, TL, 2, wr, nb, xt, xs, yt, ldy); break;
                default: tile_k(ty, TL, 1, wr, nb, xt, xs, yt, ldy); break;
                }
            }
        }
    }
}

/* Q4_K weights repacked by llama.cpp (rows % 8 == 0), eight rows at a
 * time, one per lane. Its GEMV keeps per output two floats, fma(integer
 * sum of a super-block, d_w*d_x) and fma(integer mins, dmin_w*d_x),
 * subtracted at the end; its GEMM does the same per pair of 32-element
 * sub-blocks (GEMM != 0). */
/* The 12 scale bytes of a Q4_K/Q5_K block at p (16 bytes are read) as
 * [sc0..sc7, mn0..mn7]. */
KS_AI __m128i
k4_scales_v(const uint8_t *p)
{
    const __m128i v = _mm_loadu_si128((const __m128i *)p);
    const __m128i m15 = _mm_set1_epi8(0x0F);
    __m128i lo6 = _mm_and_si128(v, _mm_set1_epi8(0x3F));
    __m128i top = _mm_and_si128(_mm_srli_epi16(v, 6), _mm_set1_epi8(3));
    __m128i nlo = _mm_and_si128(v, m15);
    __m128i nhi = _mm_and_si128(_mm_srli_epi16(v, 4), m15);
    __m128i a = _mm_shuffle_epi8(lo6, _mm_setr_epi8(0, 1, 2, 3, -1, -1, -1, -1,
                                                    4, 5, 6, 7, -1, -1, -1, -1));
    __m128i b = _mm_shuffle_epi8(nlo, _mm_setr_epi8(-1, -1, -1, -1, 8, 9, 10, 11,
                                                    -1, -1, -1, -1, -1, -1, -1, -1));
    __m128i c = _mm_shuffle_epi8(nhi, _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1,
                                                    -1, -1, -1, -1, 8, 9, 10, 11));
    __m128i d = _mm_shuffle_epi8(top, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3,
                                                    -1, -1, -1, -1, 4, 5, 6, 7));
    return _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, _mm_slli_epi16(d, 4)));
}

KS_AI void
rpk_tile(const int GEMM, const int T, const uint8_t *W, uint64_t rb,
         int64_t nb, const uint8_t *X, uint64_t xs, float *y, uint64_t ldy)
{
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256 acc[8], accm[8];

    for (int t = 0; t < T; t++) {
        acc[t] = _mm256_setzero_ps();
        accm[t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = W + (uint64_t)b * 144;
        const ks_blk_q8_k *xb[8];
        __m256i scl[8], tot[8][8], imin[8][4];
        __m128i mins[8];
        __m256 dd[8], dm[8];
        pf_slice(W + pf_ahead(rb), 8 * 144, (uint64_t)b);
        for (int r = 0; r < 8; r++) {
            __m128i sm = k4_scales_v(wb + (uint64_t)r * rb + 4);
            scl[r] = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
            mins[r] = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
        }
        __m256 dw = h2f_rows8(wb, rb), dmw = h2f_rows8(wb + 2, rb);
        for (int t = 0; t < T; t++) {
            __m128i pm[8];
            xb[t] = (const ks_blk_q8_k *)(X + (uint64_t)t * xs) + b;
            __m256i bs = loadu256(xb[t]->bsums);
            __m128i bp = _mm_hadd_epi16(_mm256_castsi256_si128(bs),
                                        _mm256_extracti128_si256(bs, 1));
            dd[t] = _mm256_mul_ps(dw, _mm256_set1_ps(xb[t]->d));
            dm[t] = _mm256_mul_ps(dmw, _mm256_set1_ps(xb[t]->d));
            for (int r = 0; r < 8; r++) {
                pm[r] = _mm_madd_epi16(mins[r], bp);
                tot[t][r] = _mm256_setzero_si256();
            }
            if (GEMM) {
                /* lane g of each row's pm: the mins of sub-block pair g */
                for (int h = 0; h < 2; h++) {
                    __m128i t0 = _mm_unpacklo_epi32(pm[4 * h], pm[4 * h + 1]);
                    __m128i t1 = _mm_unpacklo_epi32(pm[4 * h + 2], pm[4 * h + 3]);
                    __m128i t2 = _mm_unpackhi_epi32(pm[4 * h], pm[4 * h + 1]);
                    __m128i t3 = _mm_unpackhi_epi32(pm[4 * h + 2], pm[4 * h + 3]);
                    __m128i g4[4] = { _mm_unpacklo_epi64(t0, t1), _mm_unpackhi_epi64(t0, t1),
                                      _mm_unpacklo_epi64(t2, t3), _mm_unpackhi_epi64(t2, t3) };
                    for (int g = 0; g < 4; g++)
                        imin[t][g] = h == 0 ? _mm256_castsi128_si256(g4[g])
                                            : _mm256_inserti128_si256(imin[t][g], g4[g], 1);
                }
            } else {
                __m128i h01 = _mm_hadd_epi32(pm[0], pm[1]), h23 = _mm_hadd_epi32(pm[2], pm[3]);
                __m128i h45 = _mm_hadd_epi32(pm[4], pm[5]), h67 = _mm_hadd_epi32(pm[6], pm[7]);
                imin[t][0] = _mm256_set_m128i(_mm_hadd_epi32(h45, h67), _mm_hadd_epi32(h01, h23));
            }
        }
        for (int g = 0; GEMM && g < 4; g++) {
            /* rows in pairs, each pair folded at once into the row-sum
             * tree (h: rows 2p, 2p+1; q0: rows 0-3, q1: rows 4-7) so
             * that few vectors stay live */
            __m256i hp[8], q[2][8];
            /* every lane used is set below; this only quiets GCC's
             * maybe-uninitialized at -O2 */
            for (int t = 0; t < 8; t++)
                hp[t] = q[0][t] = q[1][t] = _mm256_setzero_si256();
            for (int rp = 0; rp < 4; rp++) {
                __m256i lo[2], hi[2], s_lo[2], s_hi[2];
                for (int k = 0; k < 2; k++) {
                    int r = 2 * rp + k;
                    __m256i v = loadu256(wb + (uint64_t)r * rb + 16 + 32 * g);
                    lo[k] = _mm256_and_si256(v, m4);
                    hi[k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                    s_lo[k] = _mm256_shuffle_epi8(scl[r], lane_pick(2 * g, 2 * g));
                    s_hi[k] = _mm256_shuffle_epi8(scl[r], lane_pick(2 * g + 1, 2 * g + 1));
                }
                for (int t = 0; t < T; t++) {
                    __m256i pk[2];
#if KS_512
                    /* both nibble halves in one product, as in the GEMV */
                    __m512i yz = _mm512_loadu_si512((const void *)(xb[t]->qs + 64 * g));
                    for (int k = 0; k < 2; k++) {
                        __m512i pz = _mm512_madd_epi16(
                            _mm512_maddubs_epi16(
                                _mm512_inserti64x4(_mm512_castsi256_si512(lo[k]), hi[k], 1), yz),
                            _mm512_inserti64x4(_mm512_castsi256_si512(s_lo[k]), s_hi[k], 1));
                        pk[k] = _mm256_add_epi32(_mm512_castsi512_si256(pz),
                                                 _mm512_extracti64x4_epi64(pz, 1));
                    }
#else
                    __m256i ylo = loadu256(xb[t]->qs + 64 * g), yhi = loadu256(xb[t]->qs + 64 * g + 32);
                    for (int k = 0; k < 2; k++)
                        pk[k] = _mm256_add_epi32(
                            _mm256_madd_epi16(_mm256_maddubs_epi16(lo[k], ylo), s_lo[k]),
                            _mm256_madd_epi16(_mm256_maddubs_epi16(hi[k], yhi), s_hi[k]));
#endif
                    __m256i h = _mm256_hadd_epi32(pk[0], pk[1]);
                    if (rp % 2 == 0)
                        hp[t] = h;
                    else
                        q[rp / 2][t] = _mm256_hadd_epi32(hp[t], h);
                }
            }
            for (int t = 0; t < T; t++) {
                __m256i isum = _mm256_add_epi32(_mm256_permute2x128_si256(q[0][t], q[1][t], 0x20),
                                                _mm256_permute2x128_si256(q[0][t], q[1][t], 0x31));
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), dd[t], acc[t]);
                accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin[t][g]), dm[t], accm[t]);
            }
        }
#if KS_512
        /* the low and the high nibbles of a 32-byte group side by side
         * in one register, against the group's 64 activation bytes: the
         * two products of the 256-bit form below in one, their int32
         * lanes folded once per block (integer sums: the same) */
        for (int r = 0; !GEMM && r < 8; r++) {
            __m512i tz[8];
            const __m512i m4z = _mm512_set1_epi8(0x0F);
            for (int t = 0; t < T; t++)
                tz[t] = _mm512_setzero_si512();
            for (int g = 0; g < 4; g++) {
                __m256i v = loadu256(wb + (uint64_t)r * rb + 16 + 32 * g);
                __m512i vz = _mm512_inserti64x4(_mm512_castsi256_si512(v),
                                                _mm256_srli_epi16(v, 4), 1);
                __m512i q = _mm512_and_si512(vz, m4z);
                __m512i sc = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_shuffle_epi8(scl[r], lane_pick(2 * g, 2 * g))),
                    _mm256_shuffle_epi8(scl[r], lane_pick(2 * g + 1, 2 * g + 1)), 1);
                for (int t = 0; t < T; t++) {
                    __m512i a = _mm512_loadu_si512((const void *)(xb[t]->qs + 64 * g));
                    tz[t] = _mm512_add_epi32(tz[t], _mm512_madd_epi16(_mm512_maddubs_epi16(q, a), sc));
                }
            }
            for (int t = 0; t < T; t++)
                tot[t][r] = _mm256_add_epi32(_mm512_castsi512_si256(tz[t]),
                                             _mm512_extracti64x4_epi64(tz[t], 1));
        }
#endif
        for (int g = 0; !GEMM && !KS_512 && g < 4; g++) {
            for (int r = 0; r < 8; r++) {
                __m256i v = loadu256(wb + (uint64_t)r * rb + 16 + 32 * g);
                __m256i lo = _mm256_and_si256(v, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                __m256i s_lo = _mm256_shuffle_epi8(scl[r], lane_pick(2 * g, 2 * g));
                __m256i s_hi = _mm256_shuffle_epi8(scl[r], lane_pick(2 * g + 1, 2 * g + 1));
                for (int t = 0; t < T; t++) {
                    __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, loadu256(xb[t]->qs + 64 * g)), s_lo);
                    __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, loadu256(xb[t]->qs + 64 * g + 32)), s_hi);
                    tot[t][r] = _mm256_add_epi32(tot[t][r], _mm256_add_epi32(p0, p1));
                }
            }
        }
        if (!GEMM)
            for (int t = 0; t < T; t++) {
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(rows8_sum(tot[t])), dd[t], acc[t]);
                accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin[t][0]), dm[t], accm[t]);
            }
    }
    for (int t = 0; t < T; t++)
        _mm256_storeu_ps(y + (uint64_t)t * ldy, _mm256_sub_ps(acc[t], accm[t]));
}

KS_AI void
rpk(const int GEMM, const void *W, uint64_t rb, uint64_t n, int64_t nr,
    const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    const uint8_t *w = W, *x = xq;
    int64_t nb = (int64_t)(n / 256), r = 0;

    for (; r + 8 <= nr; r += 8) {
        for (int64_t t = 0, T; t < nt; t += T) {
            const uint8_t *wr = w + r * rb, *xt = x + t * xs;
            float *yt = y + t * ldy + r;
            /* the GEMV (one-token order) up to 8 tokens a tile: a
             * verification product unpacks each block once */
            switch ((T = tile_tokens(nt - t, GEMM ? 4 : 8))) {
            case 8:  rpk_tile(GEMM, 8, wr, rb, nb, xt, xs, yt, ldy); break;
            case 7:  rpk_tile(GEMM, 7, wr, rb, nb, xt, xs, yt, ldy); break;
            case 6:  rpk_tile(GEMM, 6, wr, rb, nb, xt, xs, yt, ldy); break;
            case 5:  rpk_tile(GEMM, 5, wr, rb, nb, xt, xs, yt, ldy); break;
            case 4:  rpk_tile(GEMM, 4, wr, rb, nb, xt, xs, yt, ldy); break;
            case 3:  rpk_tile(GEMM, 3, wr, rb, nb, xt, xs, yt, ldy); break;
            case 2:  rpk_tile(GEMM, 2, wr, rb, nb, xt, xs, yt, ldy); break;
            default: rpk_tile(GEMM, 1, wr, rb, nb, xt, xs, yt, ldy); break;
            }
        }
    }
    if (r < nr)
        (GEMM ? scalar_gemm_k : scalar_gemv_k)(w + r * rb, rb, n, nr - r, xq, xs, nt, y + r, ldy);
}

static void rp_q4_k_gemv(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { rpk(0, W, rb, n, nr, xq, xs, nt, y, ldy); }
static void rp_q4_k_gemm(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { rpk(1, W, rb, n, nr, xq, xs, nt, y, ldy); }

#define MMK(ty) mmk(ty, 0, W, rb, n, nr, xq, xs, nt, y, ldy)
#define MMKT(ty) mmk(ty, 1, W, rb, n, nr, xq, xs, nt, y, ldy)
static void q2_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q2_K); }
static void q3_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q3_K); }
static void q4_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q4_K); }
static void q5_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q5_K); }
static void q6_k_all(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMK(T_Q6_K); }
static void q2_k_tl(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMKT(T_Q2_K); }
static void q3_k_tl(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMKT(T_Q3_K); }
static void q4_k_tl(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMKT(T_Q4_K); }
static void q5_k_tl(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMKT(T_Q5_K); }
static void q6_k_tl(const void *W, uint64_t rb, uint64_t n, int64_t nr, const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy) { MMKT(T_Q6_K); }

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

KS_MMO(f32, f32_all)
KS_MMO(f16, f16_all)
KS_MMO(bf16, bf16_all)

/* ggml_vec_dot_f32/_f16/_bf16 for one row and one token: four 8-lane
 * accumulators over steps of 32; F32 and F16 reduce them with
 * GGML_F32x8_REDUCE ((0+2)+(1+3), low + high, two hadds), BF16 with
 * (0+2)+(1+3) and hsum. Rests: F32 in float, the part GCC vectorized
 * multiplied then added, the last 0-3 fused; F16 and BF16 in double. */
KS_AI float
fvd(const int ty, const uint8_t *w, const uint8_t *x, uint64_t n)
{
    const int es = ty == T_F32 ? 4 : 2;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, v;
    uint64_t np = n & ~(uint64_t)31, i;

    for (i = 0; i < np; i += 32) {
        a0 = _mm256_fmadd_ps(load8(ty, w + i * es), load8(ty, x + i * es), a0);
        a1 = _mm256_fmadd_ps(load8(ty, w + (i + 8) * es), load8(ty, x + (i + 8) * es), a1);
        a2 = _mm256_fmadd_ps(load8(ty, w + (i + 16) * es), load8(ty, x + (i + 16) * es), a2);
        a3 = _mm256_fmadd_ps(load8(ty, w + (i + 24) * es), load8(ty, x + (i + 24) * es), a3);
    }
    v = _mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3));
    if (ty == T_BF16) {
        double s = 0.0 + (double)hsum(v);
        for (; i < n; i++)
            s += (double)(load1(ty, w + i * es) * load1(ty, x + i * es));
        return (float)s;
    }
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    t = _mm_hadd_ps(t, t);
    float r = _mm_cvtss_f32(_mm_hadd_ps(t, t));
    if (ty == T_F16) {
        double s = (double)r;
        for (; i < n; i++)
            s += (double)(load1(ty, w + i * es) * load1(ty, x + i * es));
        return (float)s;
    }
    uint64_t rest = n - np, nm = rest >= 8 ? rest & ~(uint64_t)7 : 0;
    nm += rest - nm >= 4 ? 4 : 0;
    for (; i < np + nm; i++) {
        float p = load1(ty, w + i * es) * load1(ty, x + i * es);
        r = r + p;
    }
    for (; i < n; i++)
        r = fmaf(load1(ty, w + i * es), load1(ty, x + i * es), r);
    return r;
}

KS_AI void
mm_fvd(const int ty, const void *W, uint64_t rb, uint64_t n, int64_t nr,
       const void *xq, uint64_t xs, int64_t nt, float *y, uint64_t ldy)
{
    for (int64_t t = 0; t < nt; t++)
        for (int64_t r = 0; r < nr; r++) {
            const uint8_t *w = (const uint8_t *)W + (uint64_t)r * rb;
            if (nt == 1)
                _mm_prefetch((const char *)w + 2 * rb, _MM_HINT_T0);
            y[(uint64_t)t * ldy + (uint64_t)r] =
                fvd(ty, w, (const uint8_t *)xq + (uint64_t)t * xs, n);
        }
}

#define KS_FVD(name, ty)                                                    \
    static void mm_##name##_vd(const void *W, uint64_t rb, uint64_t n,      \
                               int64_t nr, const void *xq, uint64_t xs,     \
                               int64_t nt, float *y, uint64_t ldy)          \
    {                                                                       \
        mm_fvd(ty, W, rb, n, nr, xq, xs, nt, y, ldy);                       \
    }                                                                       \
    static void mv_##name##_vd(const void *W, uint64_t rb, uint64_t n,      \
                               int64_t nr, const void *xq, float *y)        \
    {                                                                       \
        mm_fvd(ty, W, rb, n, nr, xq, 0, 1, y, 0);                           \
    }
KS_FVD(f32, T_F32)
KS_FVD(f16, T_F16)
KS_FVD(bf16, T_BF16)

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
         * already clamps there. The sums of each 16 quants: per 32 bytes
         * 4-byte sums in 32 bits (bytes 0-15 low half, 16-31 high), then
         * hadds leave [0 2 4 6 | 1 3 5 7] (q0) and [8 .. 14 | 9 .. 15]
         * (q1), packed to 16 bits and interleaved into order. */
        __m256i p[8];
        for (int k = 0; k < 8; k++)
            p[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1),
                                                          loadu256(y[i].qs + 32 * k)),
                                     _mm256_set1_epi16(1));
        __m256i q0 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
        __m256i q1 = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
        __m256i pk = _mm256_packs_epi32(q0, q1);
        __m128i ev = _mm256_castsi256_si128(pk), od = _mm256_extracti128_si256(pk, 1);
        _mm_storeu_si128((__m128i *)y[i].bsums, _mm_unpacklo_epi16(ev, od));
        _mm_storeu_si128((__m128i *)(y[i].bsums + 8), _mm_unpackhi_epi16(ev, od));
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

/* ---- SiLU: ggml_v_silu, as llama.cpp's AVX2 build ---- */

static ks_silu_mul_fn scalar_silu_mul;

static void
silu_mul(float *g, const float *u, uint64_t n)
{
    uint64_t i = 0;

    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 e = ks_v_expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        __m256 sl = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1), e));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(sl, _mm256_loadu_ps(u + i)));
    }
    if (i < n)
        scalar_silu_mul(g + i, u + i, n - i);
}

/* ---- GELU through llama.cpp's fp16 table (quant_ref.c's gelu_mul) ---- */

static void
gelu_mul(float *g, const float *u, uint64_t n)
{
    const uint16_t *tab = ks_gelu_table();
    const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
    uint64_t i = 0;

    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
        /* 32 bits at entry h: the entry in the low half */
        __m256i e = _mm256_i32gather_epi32((const int *)tab, h, 2);
        e = _mm256_and_si256(e, _mm256_set1_epi32(0xFFFF));
        e = _mm256_permute4x64_epi64(_mm256_packus_epi32(e, e), 0x08);
        __m256 y = _mm256_cvtph_ps(_mm256_castsi256_si128(e));
        y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
        y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LE_OQ), y);
        _mm256_storeu_ps(g + i, _mm256_mul_ps(y, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) {
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
KS_QUANT_OPS_FN(ks_quant_ops *ops)
{
#define SET(T, name)                       \
    ops->matvec[KS_QUANT_##T] = mv_##name; \
    ops->matmul[KS_QUANT_##T] = mm_##name;
    /* the llamafile tile kernels sum as tinyBLAS does (one 8-lane
     * accumulator); vec_dot keeps four */
    ops->mm_blas[KS_QUANT_F32] = mm_f32;
    ops->mm_blas[KS_QUANT_F16] = mm_f16;
    ops->mm_blas[KS_QUANT_BF16] = mm_bf16;
    ops->mm_blas[KS_QUANT_IQ4_NL] = mm_iq4_nl;
    scalar_gemv32[0] = ops->mm_gemv[KS_QUANT_Q4_0];
    scalar_gemv32[1] = ops->mm_gemv[KS_QUANT_IQ4_NL];
    scalar_gemv_k = ops->mm_gemv[KS_QUANT_Q4_K];
    scalar_gemm_k = ops->mm_gemm[KS_QUANT_Q4_K];
    scalar_silu_mul = ops->silu_mul;
    ops->mm_gemv[KS_QUANT_Q4_0] = rp_q4_0;
    ops->mm_gemm[KS_QUANT_Q4_0] = rp_q4_0;
    ops->mm_gemv[KS_QUANT_IQ4_NL] = rp_iq4_nl;
    ops->mm_gemm[KS_QUANT_IQ4_NL] = rp_iq4_nl;
    ops->mm_gemv[KS_QUANT_Q4_K] = rp_q4_k_gemv;
    ops->mm_gemm[KS_QUANT_Q4_K] = rp_q4_k_gemm;
    ops->mm_tiled[KS_QUANT_Q2_K] = q2_k_tl;
    ops->mm_tiled[KS_QUANT_Q3_K] = q3_k_tl;
    ops->mm_tiled[KS_QUANT_Q4_K] = q4_k_tl;
    ops->mm_tiled[KS_QUANT_Q5_K] = q5_k_tl;
    ops->mm_tiled[KS_QUANT_Q6_K] = q6_k_tl;
    ops->silu_mul = silu_mul;
    ops->gelu_mul = gelu_mul;
    SET(F32, f32_vd)
    SET(F16, f16_vd)
    SET(BF16, bf16_vd)
    SET(IQ4_NL, iq4_vd)
    SET(Q4_0, q4_0)
    SET(Q4_1, q4_1)
    SET(Q5_0, q5_0)
    SET(Q5_1, q5_1)
    SET(Q8_0, q8_0)
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
