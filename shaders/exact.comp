#version 450
/* y = W·x exactly as the CPU backend computes it: the float operations of
 * ks_cpu_matmul_rows (runtime/cpu/quant.c), operation by operation and in
 * the same order, for the weight type KS_QUANT_<TYPE> and the summation
 * path the CPU takes for each activation row (runtime/cpu/quant_ref.c
 * emulates the same lanes in portable C: ORD_VD, ORD_BLAS, ORD_GEMV,
 * ORD_GEMM, ORD_TILED). Integer sums are exact in any order; every float
 * operation is `precise`, multiply-adds are fma() where the C has fmaf
 * and a separate multiply and add where it has those.
 *
 * One invocation computes args.row_reps outputs of token
 * gl_WorkGroupID.z, one after the other: workgroup w (over a 2-D grid when
 * rows need it) takes rows (w·row_reps + r)·WG_SIZE + lane, each walked
 * from its first block to its last. Epilogues:
 * KS_EPI_BIAS (y += bias[row]), then KS_EPI_RESIDUAL (y = y + r[row]; r
 * may be the y buffer itself). KS_EXPERT: each token's matrix is the
 * expert its id (a buffer the device wrote) names, of a 3-D weight.
 *
 * W arrives through a uniform texel buffer of RGBA32UI texels; rows start
 * at any even byte. The row is walked in units of KS_UNIT_BLOCKS blocks:
 * the texels covering a unit are fetched into ks_win[] and shifted to the
 * unit's first byte (ks_load_unit), after which every field sits at a
 * constant offset of ks_u[]. Units of 32-element blocks are two blocks:
 * with eight, an 18-block row (SmolLM2's 576 columns) decoded a mostly
 * empty third unit and each lane kept a 72-word window live, and the head
 * matvec (576 x 49152 Q8_0) streamed ~0.6 GB/s on lavapipe, half the rate
 * of the other matrices; with two it keeps up with them. x arrives through a uniform texel buffer of
 * R32UI texels (the activation buffer, packed as common/actq.glsl's
 * KS_AQ_PACKED layout says: Q8_0/Q8_1 10 words per 32 elements, Q8_K 73
 * words per 256, F16/BF16 two halves per word, F32 one float per word).
 * Texel fetches, not storage-buffer loads: on lavapipe (Mesa 22.3) a
 * storage-buffer load is a per-lane loop, about 20 times slower.
 *
 * fma(): where the device rounds fma() twice (lavapipe does: Mesa splits
 * it into a multiply and an add), KS_EXACT_FMA_EMU computes it in double
 * precision with round-to-odd, which gives the single rounding. The host
 * finds out which by running the KS_EXACT_PROBE variant once per context.
 * KS_EXACT_F64 (devices with shaderFloat64) enables the double-precision
 * tails of the F16 and BF16 vec_dot.
 *
 * Loop trips: one per unit of each of the invocation's args.row_reps rows,
 * plus one per row (lavapipe ends all loops of an invocation after 65,535
 * trips in total, silently); every inner loop is unrolled, and the host
 * bounds units times rows. */
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 0) const uint WG_SIZE = 8;
layout(local_size_x_id = 0) in;

/* ---- fma ---------------------------------------------------------------- */

#if defined(KS_EXACT_FMA_EMU)
/* a·b is exact in double; s = RN(a·b + c) and its error er (TwoSum) give
 * the exact sum s + er. Rounding that to odd in double (the neighbour of s
 * towards er when s is even and inexact) and then to float is the single
 * rounding of a·b + c: 29 extra bits are more than round-to-odd needs.
 * When the low word of s is 0, s is a float and any a·b + c within half
 * a double ulp of it rounds to s anyway: no borrow to handle. */
float
ks_fma(float a, float b, float c)
{
    precise double m = double(a) * double(b);
    precise double dc = double(c);
    precise double s = m + dc;
    precise double bb = s - m;
    precise double er = (m - (s - bb)) + (dc - bb);
    uvec2 w = unpackDouble2x32(s);

    if (er != 0.0LF && (w.x & 1u) == 0u && w.x != 0u)
        w.x += (er > 0.0LF) == (s > 0.0LF) ? 1u : 0xFFFFFFFFu;
    precise float r = float(packDouble2x32(w));
    return r;
}
#else
float
ks_fma(float a, float b, float c)
{
    precise float r = fma(a, b, c);
    return r;
}
#endif

#if defined(KS_EXACT_PROBE)
/* ---- the probe: fma() on the triples of |ks_in| -------------------------- */

layout(std430, set = 0, binding = 0) restrict readonly buffer InBuf { float ks_in[]; };
layout(std430, set = 0, binding = 1) restrict writeonly buffer OutBuf { float ks_out[]; };

void
main()
{
    uint i = gl_GlobalInvocationID.x;
    ks_out[i] = ks_fma(ks_in[3u * i], ks_in[3u * i + 1u], ks_in[3u * i + 2u]);
}

#else

#define KS_PATH_VD 0u
#define KS_PATH_BLAS 1u
#define KS_PATH_GEMV 2u
#define KS_PATH_GEMM 3u
#define KS_PATH_TILED 4u

layout(push_constant) uniform Args {
    uint rows;        /* rows to compute */
    uint cols;        /* elements per row, a multiple of the block size */
    uint w_off;       /* bytes: row 0 in W; even */
    uint row_stride;  /* bytes; even */
    uint x_off;       /* words: token 0's activation row */
    uint x_stride;    /* words between tokens' activation rows */
    uint y_off;       /* floats */
    uint y_stride;    /* floats between tokens */
    uint b_off;       /* floats, KS_EPI_BIAS */
    uint r_off;       /* floats, KS_EPI_RESIDUAL */
    uint r_stride;    /* floats between tokens */
    uint path_lo;     /* KS_PATH_* of the tokens below |split| */
    uint path_hi;     /* and of the others */
    uint split;       /* dispatch-relative token index */
    uint e_off;       /* KS_EXPERT: entries, token 0's expert id */
    uint e_div;       /* KS_EXPERT: tokens per activation row */
    uint e_stride;    /* KS_EXPERT: bytes between experts' matrices */
    uint n_expert;    /* KS_EXPERT: ids at or past it read expert 0 */
    uint row_reps;    /* rows per invocation: row_reps workgroup-wide passes */
} args;

layout(set = 0, binding = 0) uniform usamplerBuffer ks_wt;  /* W, RGBA32UI */
layout(set = 0, binding = 1) uniform usamplerBuffer ks_xt;  /* x, R32UI */
layout(std430, set = 0, binding = 2) buffer YBuf { float ks_y[]; };
#if defined(KS_EPI_BIAS)
layout(std430, set = 0, binding = 3) restrict readonly buffer BBuf { float ks_bias[]; };
#define KS_RES_BINDING 4
#else
#define KS_RES_BINDING 3
#endif
#if defined(KS_EPI_RESIDUAL)
layout(std430, set = 0, binding = KS_RES_BINDING) buffer RBuf { float ks_res[]; };
#define KS_IDS_BINDING (KS_RES_BINDING + 1)
#else
#define KS_IDS_BINDING KS_RES_BINDING
#endif
#if defined(KS_EXPERT)
/* mixture of experts: "token" t of the dispatch is a (token, slot)
 * choice; it reads expert ks_ids[e_off + t] of a 3-D weight and the
 * activation row t / e_div (shaders/moe.comp writes the ids) */
layout(std430, set = 0, binding = KS_IDS_BINDING) restrict readonly buffer IBuf { int ks_ids[]; };
#endif

/* ---- geometry ------------------------------------------------------------ */

#if defined(KS_QUANT_F32)
#define KS_BLOCK_ELEMS 1u
#define KS_BLOCK_BYTES 4u
#define KS_UNIT_BLOCKS 32u
#define KS_FLOAT_TYPE 1
#elif defined(KS_QUANT_F16) || defined(KS_QUANT_BF16)
#define KS_BLOCK_ELEMS 1u
#define KS_BLOCK_BYTES 2u
#define KS_UNIT_BLOCKS 32u
#define KS_FLOAT_TYPE 1
#elif defined(KS_QUANT_Q4_0) || defined(KS_QUANT_IQ4_NL)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 18u
#define KS_UNIT_BLOCKS 2u
#elif defined(KS_QUANT_Q4_1)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 20u
#define KS_UNIT_BLOCKS 2u
#elif defined(KS_QUANT_Q5_0)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 22u
#define KS_UNIT_BLOCKS 2u
#elif defined(KS_QUANT_Q5_1)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 24u
#define KS_UNIT_BLOCKS 2u
#elif defined(KS_QUANT_Q8_0)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 34u
#define KS_UNIT_BLOCKS 2u
#elif defined(KS_QUANT_Q2_K)
#define KS_BLOCK_BYTES 84u
#define KS_KQUANT 1
#elif defined(KS_QUANT_Q3_K)
#define KS_BLOCK_BYTES 110u
#define KS_KQUANT 1
#elif defined(KS_QUANT_Q4_K)
#define KS_BLOCK_BYTES 144u
#define KS_KQUANT 1
#elif defined(KS_QUANT_Q5_K)
#define KS_BLOCK_BYTES 176u
#define KS_KQUANT 1
#elif defined(KS_QUANT_Q6_K)
#define KS_BLOCK_BYTES 210u
#define KS_KQUANT 1
#else
#error "define one KS_QUANT_<TYPE>"
#endif
#if defined(KS_KQUANT)
#define KS_BLOCK_ELEMS 256u
#define KS_UNIT_BLOCKS 1u
#endif

#define KS_UNIT_ELEMS (KS_BLOCK_ELEMS * KS_UNIT_BLOCKS)
#define KS_UNIT_BYTES (KS_BLOCK_BYTES * KS_UNIT_BLOCKS)
#define KS_UNIT_WORDS ((KS_UNIT_BYTES + 3u) / 4u)
/* Texels that cover a unit starting at any even byte of the first one. */
#define KS_WIN_TEXELS ((KS_UNIT_BYTES + 14u + 15u) / 16u)
#define KS_WIN_WORDS (KS_WIN_TEXELS * 4u)

/* ---- the unit's weight bytes ---------------------------------------------- */

uint ks_win[KS_WIN_WORDS];
uint ks_u[KS_UNIT_WORDS];

/* Fetches the texels of the unit at byte |o| of W and realigns them so
 * that ks_u[j] holds its bytes 4j..4j+3. Texels past the view are
 * clamped to its last (those bytes are never used). */
void
ks_load_unit(uint o, int tmax)
{
    int t0 = int(o >> 4);
    uint ph = o & 15u, q = ph >> 2;
    bool odd = (ph & 2u) != 0u;

    [[unroll]] for (uint k = 0u; k < KS_WIN_TEXELS; k++) {
        uvec4 v = texelFetch(ks_wt, min(t0 + int(k), tmax));
        ks_win[4u * k] = v.x;
        ks_win[4u * k + 1u] = v.y;
        ks_win[4u * k + 2u] = v.z;
        ks_win[4u * k + 3u] = v.w;
    }
    [[unroll]] for (uint j = 0u; j < KS_UNIT_WORDS; j++) {
        uint a0 = ks_win[min(j, KS_WIN_WORDS - 1u)];
        uint a1 = ks_win[min(j + 1u, KS_WIN_WORDS - 1u)];
        uint a2 = ks_win[min(j + 2u, KS_WIN_WORDS - 1u)];
        uint a3 = ks_win[min(j + 3u, KS_WIN_WORDS - 1u)];
        uint a4 = ks_win[min(j + 4u, KS_WIN_WORDS - 1u)];
        uint lo = q == 0u ? a0 : q == 1u ? a1 : q == 2u ? a2 : a3;
        uint hi = q == 0u ? a1 : q == 1u ? a2 : q == 2u ? a3 : a4;
        ks_u[j] = odd ? (lo >> 16) | (hi << 16) : lo;
    }
}

/* Readers of the unit; |c| is a byte offset, a constant once unrolled
 * (even for 16 and 32 bits). */
uint
ks_b8(uint c)
{
    return (ks_u[c >> 2] >> ((c & 3u) * 8u)) & 0xFFu;
}

uint
ks_b16(uint c)
{
    return (ks_u[c >> 2] >> ((c & 2u) * 8u)) & 0xFFFFu;
}

uint
ks_b32(uint c)
{
    if ((c & 2u) == 0u)
        return ks_u[c >> 2];
    return (ks_u[c >> 2] >> 16) | (ks_u[min((c >> 2) + 1u, KS_UNIT_WORDS - 1u)] << 16);
}

/* IEEE half to float, exact for every input (subnormals too, which
 * unpackHalf2x16 may flush). */
float
ks_h2f(uint h)
{
    uint e = (h >> 10) & 31u, m = h & 1023u, s = (h & 0x8000u) << 16;
    precise float sub = float(int(m)) * 5.9604644775390625e-8;  /* m · 2^-24, exact */
    uint bits = e == 0u ? floatBitsToUint(sub) | s
              : e == 31u ? s | 0x7F800000u | (m << 13)
              : s | ((e + 112u) << 23) | (m << 13);
    return uintBitsToFloat(bits);
}

/* ---- activations ---------------------------------------------------------- */

uint
ks_xw(uint i)
{
    return texelFetch(ks_xt, int(i)).x;
}

/* Σ of the four signed bytes of |y|. */
int
ks_sum4(uint y)
{
    int v = int(y);
    return bitfieldExtract(v, 0, 8) + bitfieldExtract(v, 8, 8) +
           bitfieldExtract(v, 16, 8) + (v >> 24);
}

/* Σ_k byte_k(q) · sbyte_k(y): |q| has four unsigned bytes. */
int
ks_dot4u(uint q, uint y)
{
    int v = int(y);
    return int(q & 0xFFu) * bitfieldExtract(v, 0, 8) +
           int((q >> 8) & 0xFFu) * bitfieldExtract(v, 8, 8) +
           int((q >> 16) & 0xFFu) * bitfieldExtract(v, 16, 8) +
           int(q >> 24) * (v >> 24);
}

/* The same with signed bytes in |q|. */
int
ks_dot4s(uint q, uint y)
{
    int v = int(y), w = int(q);
    return bitfieldExtract(w, 0, 8) * bitfieldExtract(v, 0, 8) +
           bitfieldExtract(w, 8, 8) * bitfieldExtract(v, 8, 8) +
           bitfieldExtract(w, 16, 8) * bitfieldExtract(v, 16, 8) +
           (w >> 24) * (v >> 24);
}

/* ---- horizontal sums ---------------------------------------------------- */

/* ggml's hsum_float_8 (and llamafile's hsum): (0+4, 1+5, 2+6, 3+7), then
 * (0 + 2) + (1 + 3). */
float
ks_hsum8(float a[8])
{
    precise float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
    precise float r = (t0 + t2) + (t1 + t3);
    return r;
}

#if defined(KS_FLOAT_TYPE)
/* ---- F32, F16, BF16 ----------------------------------------------------- */

/* Element |i| (constant) of the unit's weights. */
float
ks_wel(uint i)
{
#if defined(KS_QUANT_F32)
    return uintBitsToFloat(ks_u[i]);
#elif defined(KS_QUANT_F16)
    return ks_h2f((ks_u[i >> 1] >> ((i & 1u) * 16u)) & 0xFFFFu);
#else
    return uintBitsToFloat(((ks_u[i >> 1] >> ((i & 1u) * 16u)) & 0xFFFFu) << 16);
#endif
}

/* The unit's activations, starting at element |e0| of the row at word x0. */
float ks_xv[32];

void
ks_load_x(uint x0, uint e0, uint n)
{
#if defined(KS_QUANT_F32)
    [[unroll]] for (uint i = 0u; i < 32u; i++)
        ks_xv[i] = uintBitsToFloat(ks_xw(x0 + min(e0 + i, n - 1u)));
#else
    [[unroll]] for (uint i = 0u; i < 16u; i++) {
        uint w = ks_xw(x0 + min(e0 / 2u + i, (n - 1u) / 2u));
#if defined(KS_QUANT_F16)
        ks_xv[2u * i] = ks_h2f(w & 0xFFFFu);
        ks_xv[2u * i + 1u] = ks_h2f(w >> 16);
#else
        ks_xv[2u * i] = uintBitsToFloat(w << 16);
        ks_xv[2u * i + 1u] = uintBitsToFloat(w & 0xFFFF0000u);
#endif
    }
#endif
}

float
ks_row_dot(uint o, uint x0, uint path, int tmax)
{
    const uint n = args.cols, np = n & ~31u, rest = n - np;
    precise float r;

    if (path == KS_PATH_BLAS) {
        /* tinyBLAS: one 8-lane accumulator over steps of 8, hsum8 (the
         * CPU takes this path only for n % 8 == 0). */
        precise float acc[8];
        [[unroll]] for (uint l = 0u; l < 8u; l++)
            acc[l] = 0.0;
        for (uint e = 0u; e < np; e += 32u) {
            ks_load_unit(o + e * KS_BLOCK_BYTES, tmax);
            ks_load_x(x0, e, n);
            [[unroll]] for (uint j = 0u; j < 4u; j++)
                [[unroll]] for (uint l = 0u; l < 8u; l++)
                    acc[l] = ks_fma(ks_wel(8u * j + l), ks_xv[8u * j + l], acc[l]);
        }
        if (rest > 0u) {
            ks_load_unit(o + np * KS_BLOCK_BYTES, tmax);
            ks_load_x(x0, np, n);
            [[unroll]] for (uint j = 0u; j < 3u; j++)
                [[unroll]] for (uint l = 0u; l < 8u; l++)
                    if (8u * j + 8u <= rest)
                        acc[l] = ks_fma(ks_wel(8u * j + l), ks_xv[8u * j + l], acc[l]);
        }
        r = ks_hsum8(acc);
        return r;
    }

    /* vec_dot: four 8-lane accumulators over steps of 32. */
    precise float acc[4][8];
    [[unroll]] for (uint j = 0u; j < 4u; j++)
        [[unroll]] for (uint l = 0u; l < 8u; l++)
            acc[j][l] = 0.0;
    for (uint e = 0u; e < np; e += 32u) {
        ks_load_unit(o + e * KS_BLOCK_BYTES, tmax);
        ks_load_x(x0, e, n);
        [[unroll]] for (uint j = 0u; j < 4u; j++)
            [[unroll]] for (uint l = 0u; l < 8u; l++)
                acc[j][l] = ks_fma(ks_wel(8u * j + l), ks_xv[8u * j + l], acc[j][l]);
    }
    precise float v[8];
    [[unroll]] for (uint l = 0u; l < 8u; l++)
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
#if defined(KS_QUANT_F32)
    /* GGML_F32x8_REDUCE: halves added, then (0 + 1) + (2 + 3); of the
     * rest, what GCC vectorized (groups of 8, then of 4) is multiplied
     * and added, the last 0-3 fused. */
    precise float t0 = v[0] + v[4], t1 = v[1] + v[5], t2 = v[2] + v[6], t3 = v[3] + v[7];
    precise float s = (t0 + t1) + (t2 + t3);
    if (rest > 0u) {
        uint nm = rest >= 8u ? rest & ~7u : 0u;
        nm += rest - nm >= 4u ? 4u : 0u;
        ks_load_unit(o + np * KS_BLOCK_BYTES, tmax);
        ks_load_x(x0, np, n);
        [[unroll]] for (uint i = 0u; i < 31u; i++) {
            precise float p = ks_wel(i) * ks_xv[i];
            precise float sm = s + p;
            float sf = ks_fma(ks_wel(i), ks_xv[i], s);
            s = i < nm ? sm : i < rest ? sf : s;
        }
    }
    r = s;
    return r;
#else
#if defined(KS_QUANT_F16)
    precise float t0 = v[0] + v[4], t1 = v[1] + v[5], t2 = v[2] + v[6], t3 = v[3] + v[7];
    precise float h = (t0 + t1) + (t2 + t3);
#else
    precise float h = ks_hsum8(v);
#endif
#if defined(KS_EXACT_F64)
    /* The rest summed in double (BF16: starting from 0.0 + the sum). */
#if defined(KS_QUANT_F16)
    precise double s = double(h);
#else
    precise double s = 0.0LF;
    s = s + double(h);
#endif
    if (rest > 0u) {
        ks_load_unit(o + np * KS_BLOCK_BYTES, tmax);
        ks_load_x(x0, np, n);
        [[unroll]] for (uint i = 0u; i < 31u; i++) {
            precise float p = ks_wel(i) * ks_xv[i];
            precise double sd = s + double(p);
            s = i < rest ? sd : s;
        }
    }
    r = float(s);
#else
    /* Without doubles the host allows no rest; BF16's 0.0 + h turns -0
     * into +0 as the double sum would. */
#if defined(KS_QUANT_F16)
    r = h;
#else
    r = h + 0.0;
#endif
#endif
    return r;
#endif
}

#elif defined(KS_KQUANT)
/* ---- K-quants against Q8_K ------------------------------------------------ */

/* Lane L of 8 holds the elements e with e % 32 in 4L..4L+3; ks_quad(g, L)
 * returns the four weights of 32-element chunk g in lane L as unsigned
 * bytes (Q3_K: q + 4, Q6_K: q + 32), ks_qoff the offset to subtract. */
#if defined(KS_QUANT_Q3_K)
#define KS_QOFF 4
#else
#define KS_QOFF 0
#endif

uint
ks_quad(uint g, uint L)
{
#if defined(KS_QUANT_Q2_K)
    /* scales[16] @0, qs[64] @16, d @80, dmin @82 */
    return (ks_b32(16u + 32u * (g >> 2) + 4u * L) >> (2u * (g & 3u))) & 0x03030303u;
#elif defined(KS_QUANT_Q3_K)
    /* hmask[32] @0, qs[64] @32, scales[12] @96, d @108 */
    uint lo = (ks_b32(32u + 32u * (g >> 2) + 4u * L) >> (2u * (g & 3u))) & 0x03030303u;
    uint hb = (ks_b32(4u * L) >> (4u * (g >> 2) + (g & 3u))) & 0x01010101u;
    return lo | (hb << 2);
#elif defined(KS_QUANT_Q4_K)
    /* d @0, dmin @2, scales[12] @4, qs[128] @16 */
    return (ks_b32(16u + 32u * (g >> 1) + 4u * L) >> (4u * (g & 1u))) & 0x0F0F0F0Fu;
#elif defined(KS_QUANT_Q5_K)
    /* d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48 */
    uint lo = (ks_b32(48u + 32u * (g >> 1) + 4u * L) >> (4u * (g & 1u))) & 0x0F0F0F0Fu;
    return lo | (((ks_b32(16u + 4u * L) >> g) & 0x01010101u) << 4);
#else
    /* Q6_K: ql[128] @0, qh[64] @128, scales[16] @192, d @208 */
    uint h = g >> 2, qt = g & 3u;
    uint lo = (ks_b32(64u * h + 32u * (qt & 1u) + 4u * L) >> (4u * (qt >> 1))) & 0x0F0F0F0Fu;
    return lo | (((ks_b32(128u + 32u * h + 4u * L) >> (2u * qt)) & 0x03030303u) << 4);
#endif
}

/* Scale of 16-element sub-block s (Q4_K/Q5_K: of 32-element sub-block
 * s / 2) and min (Q2_K, Q4_K, Q5_K). */
int
ks_scale(uint s)
{
#if defined(KS_QUANT_Q2_K)
    return int(ks_b8(s) & 0xFu);
#elif defined(KS_QUANT_Q3_K)
    uint lo = s < 8u ? ks_b8(96u + s) & 0xFu : ks_b8(96u + s - 8u) >> 4;
    uint hi = (ks_b8(104u + (s & 3u)) >> (2u * (s >> 2))) & 3u;
    return int(lo | (hi << 4)) - 32;
#elif defined(KS_QUANT_Q4_K) || defined(KS_QUANT_Q5_K)
    uint j = s >> 1;
    return int(j < 4u ? ks_b8(4u + j) & 63u
                      : (ks_b8(8u + j) & 0xFu) | ((ks_b8(j) >> 6) << 4));
#else
    return bitfieldExtract(int(ks_b8(192u + s)), 0, 8);
#endif
}

int
ks_min(uint s)
{
#if defined(KS_QUANT_Q2_K)
    return int(ks_b8(s) >> 4);
#elif defined(KS_QUANT_Q4_K) || defined(KS_QUANT_Q5_K)
    uint j = s >> 1;
    return int(j < 4u ? ks_b8(8u + j) & 63u
                      : (ks_b8(8u + j) >> 4) | ((ks_b8(4u + j) >> 6) << 4));
#else
    return 0;
#endif
}

float
ks_row_dot(uint o, uint x0, uint path, int tmax)
{
    const uint nb = args.cols / 256u;
    precise float acc[8], accm[4], summs = 0.0, chain = 0.0, chain_m = 0.0;
    precise float r;

    [[unroll]] for (uint l = 0u; l < 8u; l++)
        acc[l] = 0.0;
    [[unroll]] for (uint l = 0u; l < 4u; l++)
        accm[l] = 0.0;
    for (uint i = 0u; i < nb; i++) {
        uint xb = x0 + 73u * i;
        int lane[8], cc[8], bs[16];

        ks_load_unit(o + i * KS_BLOCK_BYTES, tmax);
        [[unroll]] for (uint L = 0u; L < 8u; L++)
            lane[L] = 0;
        [[unroll]] for (uint g = 0u; g < 8u; g++) {
            cc[g] = 0;
            [[unroll]] for (uint L = 0u; L < 8u; L++) {
                uint y = ks_xw(xb + 1u + 8u * g + L);
                int d4 = ks_dot4u(ks_quad(g, L), y) - KS_QOFF * ks_sum4(y);
                int v = ks_scale(2u * g + (L >> 2)) * d4;
                lane[L] += v;
                cc[g] += v;
            }
        }
        [[unroll]] for (uint k = 0u; k < 8u; k++) {
            int w = int(ks_xw(xb + 65u + k));
            bs[2u * k] = bitfieldExtract(w, 0, 16);
            bs[2u * k + 1u] = w >> 16;
        }
        float xd = uintBitsToFloat(ks_xw(xb));
#if defined(KS_QUANT_Q2_K)
        float kd = ks_h2f(ks_b16(80u)), kdmin = ks_h2f(ks_b16(82u));
#elif defined(KS_QUANT_Q3_K)
        float kd = ks_h2f(ks_b16(108u)), kdmin = 0.0;
#elif defined(KS_QUANT_Q6_K)
        float kd = ks_h2f(ks_b16(208u)), kdmin = 0.0;
#else
        float kd = ks_h2f(ks_b16(0u)), kdmin = ks_h2f(ks_b16(2u));
#endif
#if defined(KS_QUANT_Q6_K)
        /* The quants were taken as q + 32: lane L gives back
         * 32 · (scale · bsum) of sub-blocks 2L and 2L + 1. */
        [[unroll]] for (uint L = 0u; L < 8u; L++)
            lane[L] -= 32 * (ks_scale(2u * L) * bs[2u * L] +
                             ks_scale(2u * L + 1u) * bs[2u * L + 1u]);
#endif

        if (path == KS_PATH_TILED) {
            /* fma(d_w · signed sum [- dmin_w · mins], d_x) per block. */
            int s1 = 0, s2 = 0;
            [[unroll]] for (uint L = 0u; L < 8u; L++)
                s1 += lane[L];
            [[unroll]] for (uint j = 0u; j < 16u; j++)
                s2 += ks_min(j) * bs[j];
            precise float res = kd * float(s1);
#if defined(KS_QUANT_Q2_K) || defined(KS_QUANT_Q4_K) || defined(KS_QUANT_Q5_K)
            res = ks_fma(-kdmin, float(s2), res);
#endif
            chain = ks_fma(res, xd, chain);
            continue;
        }
#if defined(KS_QUANT_Q4_K)
        if (path == KS_PATH_GEMV || path == KS_PATH_GEMM) {
            /* Repacked: integer sums and mins per pair of 32-element
             * sub-blocks (GEMM) or per block (GEMV), each fused into
             * one float chain. */
            precise float dd = kd * xd, dm = kdmin * xd;
            int is = 0, im = 0;
            [[unroll]] for (uint p = 0u; p < 4u; p++) {
                int s2 = cc[2u * p] + cc[2u * p + 1u];
                int m2 = ks_min(4u * p) * (bs[4u * p] + bs[4u * p + 1u]) +
                         ks_min(4u * p + 2u) * (bs[4u * p + 2u] + bs[4u * p + 3u]);
                if (path == KS_PATH_GEMM) {
                    chain = ks_fma(float(s2), dd, chain);
                    chain_m = ks_fma(float(m2), dm, chain_m);
                }
                is += s2;
                im += m2;
            }
            if (path == KS_PATH_GEMV) {
                chain = ks_fma(float(is), dd, chain);
                chain_m = ks_fma(float(im), dm, chain_m);
            }
            continue;
        }
#endif
        /* vec_dot: one fma(d_w·d_x, lane) per lane and block. */
        precise float d = xd * kd;
        precise float dmin = -xd * kdmin;
#if defined(KS_QUANT_Q2_K)
        [[unroll]] for (uint L = 0u; L < 8u; L++)
            acc[L] = ks_fma(dmin, float(ks_min(2u * L) * bs[2u * L] +
                                        ks_min(2u * L + 1u) * bs[2u * L + 1u]), acc[L]);
#elif defined(KS_QUANT_Q4_K)
        [[unroll]] for (uint l = 0u; l < 4u; l++)
            accm[l] = ks_fma(dmin, float(ks_min(4u * l) * (bs[4u * l] + bs[4u * l + 1u]) +
                                         ks_min(4u * l + 2u) * (bs[4u * l + 2u] +
                                                                bs[4u * l + 3u])), accm[l]);
#elif defined(KS_QUANT_Q5_K)
        int im = 0;
        [[unroll]] for (uint j = 0u; j < 8u; j++)
            im += ks_min(2u * j) * (bs[2u * j] + bs[2u * j + 1u]);
        summs = ks_fma(float(im), dmin, summs);
#endif
        [[unroll]] for (uint L = 0u; L < 8u; L++)
            acc[L] = ks_fma(d, float(lane[L]), acc[L]);
    }
    if (path == KS_PATH_TILED) {
        r = chain;
        return r;
    }
#if defined(KS_QUANT_Q4_K)
    if (path == KS_PATH_GEMV || path == KS_PATH_GEMM) {
        r = chain - chain_m;
        return r;
    }
    r = ks_hsum8(acc) + ((accm[0] + accm[2]) + (accm[1] + accm[3]));
#elif defined(KS_QUANT_Q5_K)
    r = ks_hsum8(acc) + summs;
#else
    r = ks_hsum8(acc);
#endif
    return r;
}

#else
/* ---- 32-element blocks against Q8_0 / Q8_1 -------------------------------- */

#if defined(KS_QUANT_Q4_1) || defined(KS_QUANT_Q5_1)
#define KS_WITH_MIN 1
#endif

#if defined(KS_QUANT_IQ4_NL)
/* The IQ4_NL levels plus 128 as the bytes of four words (selects and
 * shifts: a const array indexed per lane is very slow on lavapipe). */
int
ks_iq4(uint n)
{
    uint w = n < 8u ? (n < 4u ? 0x3F2D1801u : 0x766A5D4Fu)
                    : (n < 12u ? 0xA6998D81u : 0xF1D9C5B5u);
    return int((w >> ((n & 3u) * 8u)) & 0xFFu) - 128;
}

int
ks_dot4nl(uint q, uint y)
{
    int v = int(y);
    return ks_iq4(q & 0xFu) * bitfieldExtract(v, 0, 8) +
           ks_iq4((q >> 8) & 0xFu) * bitfieldExtract(v, 8, 8) +
           ks_iq4((q >> 16) & 0xFu) * bitfieldExtract(v, 16, 8) +
           ks_iq4((q >> 24) & 0xFu) * (v >> 24);
}
#endif

/* Moves bit i of the 4-bit |h| to bit 4 of byte i (the four shifted
 * copies land on disjoint bits: no carries). */
uint
ks_spread4(uint h)
{
    return ((h << 4) * 0x00204081u) & 0x10101010u;
}

/* Lane sums of the block at unit byte |c| against the activation quants
 * y[8]: lane l = Σ q_e · y_e over elements 4l..4l+3 (elements 0-15 are
 * the low nibbles of qs, 16-31 the high ones). *dw and *mw get the
 * block's scale and min. */
void
ks_block_lanes(uint c, uint y[8], out int lane[8], out float dw, out float mw)
{
    dw = ks_h2f(ks_b16(c));
    mw = 0.0;
#if defined(KS_QUANT_Q8_0)
    [[unroll]] for (uint k = 0u; k < 8u; k++)
        lane[k] = ks_dot4s(ks_b32(c + 2u + 4u * k), y[k]);
#elif defined(KS_QUANT_IQ4_NL)
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        uint q = ks_b32(c + 2u + 4u * k);
        lane[k] = ks_dot4nl(q, y[k]);
        lane[k + 4u] = ks_dot4nl(q >> 4, y[k + 4u]);
    }
#else
#if defined(KS_QUANT_Q4_0)
    const uint qs = 2u;
    const int off = 8;
#elif defined(KS_QUANT_Q4_1)
    const uint qs = 4u;
    const int off = 0;
#elif defined(KS_QUANT_Q5_0)
    const uint qs = 6u;
    const int off = 16;
    uint qh = ks_b32(c + 2u);
#else
    const uint qs = 8u;
    const int off = 0;
    uint qh = ks_b32(c + 4u);
#endif
#if defined(KS_WITH_MIN)
    mw = ks_h2f(ks_b16(c + 2u));
#endif
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        uint q = ks_b32(c + qs + 4u * k);
        uint lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
#if defined(KS_QUANT_Q5_0) || defined(KS_QUANT_Q5_1)
        lo |= ks_spread4((qh >> (4u * k)) & 0xFu);
        hi |= ks_spread4((qh >> (16u + 4u * k)) & 0xFu);
#endif
        lane[k] = ks_dot4u(lo, y[k]);
        lane[k + 4u] = ks_dot4u(hi, y[k + 4u]);
        if (off != 0) {
            lane[k] -= off * ks_sum4(y[k]);
            lane[k + 4u] -= off * ks_sum4(y[k + 4u]);
        }
    }
#endif
}

float
ks_row_dot(uint o, uint x0, uint path, int tmax)
{
    const uint nb = args.cols / 32u;
    const uint n_units = (nb + KS_UNIT_BLOCKS - 1u) / KS_UNIT_BLOCKS;
    precise float acc[8], summs = 0.0, chain = 0.0;
#if defined(KS_QUANT_IQ4_NL)
    /* vec_dot alternates two accumulators over block pairs and fuses an
     * odd last block in alone. */
    precise float acc1[8];
    int last_sum = 0;
    float last_dd = 0.0;
    const bool odd_tail = path == KS_PATH_VD && (nb & 1u) == 1u;
#endif
    precise float r;

    [[unroll]] for (uint l = 0u; l < 8u; l++) {
        acc[l] = 0.0;
#if defined(KS_QUANT_IQ4_NL)
        acc1[l] = 0.0;
#endif
    }
    for (uint u = 0u; u < n_units; u++) {
        ks_load_unit(o + u * KS_UNIT_BYTES, tmax);
        [[unroll]] for (uint b = 0u; b < KS_UNIT_BLOCKS; b++) {
            /* A partial last unit: its missing blocks are skipped (their
             * activations clamped to the row's last block). */
            uint i = u * KS_UNIT_BLOCKS + b;
            uint xb = x0 + 10u * min(i, nb - 1u), y[8];
            int lane[8];
            float dw, mw;

            [[unroll]] for (uint k = 0u; k < 8u; k++)
                y[k] = ks_xw(xb + 2u + k);
            float xd = uintBitsToFloat(ks_xw(xb));
            ks_block_lanes(b * KS_BLOCK_BYTES, y, lane, dw, mw);
            if (i >= nb) {
            }
#if defined(KS_QUANT_Q4_0) || defined(KS_QUANT_IQ4_NL)
            else if (path == KS_PATH_GEMV || path == KS_PATH_GEMM) {
                /* Repacked: one float chain, fma(integer sum, d_w·d_x). */
                int sum = 0;
                [[unroll]] for (uint l = 0u; l < 8u; l++)
                    sum += lane[l];
                precise float dd = dw * xd;
                chain = ks_fma(float(sum), dd, chain);
            }
#endif
#if defined(KS_QUANT_IQ4_NL)
            else if (odd_tail && i == nb - 1u) {
                [[unroll]] for (uint l = 0u; l < 8u; l++)
                    last_sum += lane[l];
                precise float dd = xd * dw;
                last_dd = dd;
            } else if ((b & 1u) == 1u && path == KS_PATH_VD) {
                /* Odd blocks go to the second accumulator (vec_dot only):
                 * units hold an even number of blocks, so b's parity is
                 * i's. */
                precise float dd = dw * xd;
                [[unroll]] for (uint l = 0u; l < 8u; l++)
                    acc1[l] = ks_fma(dd, float(lane[l]), acc1[l]);
            }
#endif
            else {
                precise float dd = dw * xd;
                [[unroll]] for (uint l = 0u; l < 8u; l++)
                    acc[l] = ks_fma(dd, float(lane[l]), acc[l]);
#if defined(KS_WITH_MIN)
                summs = ks_fma(mw, uintBitsToFloat(ks_xw(xb + 1u)), summs);
#endif
            }
        }
    }
#if defined(KS_QUANT_Q4_0) || defined(KS_QUANT_IQ4_NL)
    if (path == KS_PATH_GEMV || path == KS_PATH_GEMM) {
        r = chain;
        return r;
    }
#endif
#if defined(KS_QUANT_IQ4_NL)
    if (path == KS_PATH_VD) {
        precise float v[8];
        [[unroll]] for (uint l = 0u; l < 8u; l++)
            v[l] = acc[l] + acc1[l];
        r = ks_hsum8(v);
        if (odd_tail)
            r = ks_fma(float(last_sum), last_dd, r);
        return r;
    }
#endif
#if defined(KS_WITH_MIN)
    r = ks_hsum8(acc) + summs;
#else
    r = ks_hsum8(acc);
#endif
    return r;
}
#endif

void
main()
{
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint tok = gl_WorkGroupID.z;
    uint path = tok < args.split ? args.path_lo : args.path_hi;
    int tmax = textureSize(ks_wt) - 1;
#if defined(KS_EXPERT)
    uint e = uint(ks_ids[args.e_off + tok]);
    uint w0 = args.w_off + (e < args.n_expert ? e : 0u) * args.e_stride;
    uint xrow = tok / args.e_div;
#else
    uint w0 = args.w_off, xrow = tok;
#endif

    /* A workgroup takes row_reps consecutive groups of WG_SIZE rows (fewer
     * workgroups for tall matrices: on lavapipe each one costs a task). */
    for (uint rep = 0u; rep < args.row_reps; rep++) {
        uint row = (wg * args.row_reps + rep) * WG_SIZE + gl_LocalInvocationID.x;
        if (row >= args.rows)
            break;
        precise float v = ks_row_dot(w0 + row * args.row_stride,
                                     args.x_off + xrow * args.x_stride, path, tmax);
#if defined(KS_EPI_BIAS)
        v = v + ks_bias[args.b_off + row];
#endif
#if defined(KS_EPI_RESIDUAL)
        v = v + ks_res[args.r_off + tok * args.r_stride + row];
#endif
        ks_y[args.y_off + tok * args.y_stride + row] = v;
    }
}
#endif
