/* Block decoders for every weight type the CPU kernels handle, chosen by
 * one KS_QUANT_<TYPE> define, for shaders that dot weight rows with f32
 * activations. Layouts: shared/reference/gguf-and-quants.md section 2.
 * Weights arrive as 32-bit words (no 8/16-bit storage needed); all
 * arithmetic is fp32.
 *
 * A row is walked in "units". Types with small blocks use units of
 * KS_UNIT_BLOCKS blocks that are a whole number of 16-byte texels, so a
 * unit costs its own texels (one more when rows do not start on a texel)
 * and every field sits at a constant offset; the last unit of a row may be
 * partial (blocks past the row's end are decoded from clamped reads and
 * dropped). Q2_K, Q3_K and Q6_K (KS_BLOCK_MODE), whose sizes would make
 * such units 4 or 8 super-blocks long, use one block per unit, read from
 * the texels that cover it wherever it starts.
 *
 * The including shader fills ks_xv[] with the unit's activations (or
 * defines KS_X(i), the activation at unit-relative index i), fills the
 * texel window ks_win[] and calls ks_realign() with the byte phase of the
 * unit's first byte in the window, then ks_unit_dot(). Offsets into
 * ks_u[] and ks_xv[] are constants once the [[unroll]] loops are
 * unrolled, so everything stays in registers (or plain stack slots). */

#if defined(KS_QUANT_F32)
#define KS_BLOCK_ELEMS 1u
#define KS_BLOCK_BYTES 4u
#define KS_UNIT_BLOCKS 32u
#elif defined(KS_QUANT_F16) || defined(KS_QUANT_BF16)
#define KS_BLOCK_ELEMS 1u
#define KS_BLOCK_BYTES 2u
#define KS_UNIT_BLOCKS 64u
#elif defined(KS_QUANT_Q4_0) || defined(KS_QUANT_IQ4_NL)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 18u
#define KS_UNIT_BLOCKS 8u
#elif defined(KS_QUANT_Q4_1)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 20u
#define KS_UNIT_BLOCKS 4u
#elif defined(KS_QUANT_Q5_0)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 22u
#define KS_UNIT_BLOCKS 8u
#elif defined(KS_QUANT_Q5_1)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 24u
#define KS_UNIT_BLOCKS 2u
#elif defined(KS_QUANT_Q8_0)
#define KS_BLOCK_ELEMS 32u
#define KS_BLOCK_BYTES 34u
#define KS_UNIT_BLOCKS 8u
#elif defined(KS_QUANT_Q2_K)
#define KS_BLOCK_ELEMS 256u
#define KS_BLOCK_BYTES 84u
#define KS_UNIT_BLOCKS 1u
#define KS_BLOCK_MODE 1
#elif defined(KS_QUANT_Q3_K)
#define KS_BLOCK_ELEMS 256u
#define KS_BLOCK_BYTES 110u
#define KS_UNIT_BLOCKS 1u
#define KS_BLOCK_MODE 1
#elif defined(KS_QUANT_Q4_K)
#define KS_BLOCK_ELEMS 256u
#define KS_BLOCK_BYTES 144u
#define KS_UNIT_BLOCKS 1u
#elif defined(KS_QUANT_Q5_K)
#define KS_BLOCK_ELEMS 256u
#define KS_BLOCK_BYTES 176u
#define KS_UNIT_BLOCKS 1u
#elif defined(KS_QUANT_Q6_K)
#define KS_BLOCK_ELEMS 256u
#define KS_BLOCK_BYTES 210u
#define KS_UNIT_BLOCKS 1u
#define KS_BLOCK_MODE 1
#else
#error "define one KS_QUANT_<TYPE>"
#endif

#define KS_UNIT_ELEMS (KS_BLOCK_ELEMS * KS_UNIT_BLOCKS)
#define KS_UNIT_BYTES (KS_BLOCK_BYTES * KS_UNIT_BLOCKS)
/* Realigned words of one unit (the last may hold bytes past it). */
#define KS_UNIT_WORDS ((KS_UNIT_BYTES + 3u) / 4u)
/* Texels that hold a unit starting at any even byte of the first one:
 * units are whole texels, so one more; a block needs up to 14 bytes more. */
#if defined(KS_BLOCK_MODE)
#define KS_WIN_TEXELS ((KS_UNIT_BYTES + 14u + 15u) / 16u)
#else
#define KS_WIN_TEXELS (KS_UNIT_BYTES / 16u + 1u)
#endif
#define KS_WIN_WORDS (KS_WIN_TEXELS * 4u)

/* Texels read for the current unit, and the unit as words from its first
 * byte. */
uint ks_win[KS_WIN_WORDS];
uint ks_u[KS_UNIT_WORDS];

/* The unit's activations, 4 per texel. */
vec4 ks_xv[KS_UNIT_ELEMS / 4u];
#if !defined(KS_X)
#define KS_X(i) ks_xv[(i) / 4u][(i) % 4u]
#endif

/* Hook for Q4_1 and Q5_1: when the includer defines KS_XSUM(b), the sum
 * of the activations of the unit's block b (a constant index once
 * unrolled), the decoders take the min term as m·KS_XSUM(b) instead of
 * m·Σx. Activations quantized to Q8_1 and dequantized again then give
 * llama.cpp's result, which uses the block's stored fp16(d·Σq). */

void
ks_win_set(uint t, uvec4 v)
{
    ks_win[4u * t] = v.x;
    ks_win[4u * t + 1u] = v.y;
    ks_win[4u * t + 2u] = v.z;
    ks_win[4u * t + 3u] = v.w;
}

uint
ks_win_at(uint i)
{
    return ks_win[min(i, KS_WIN_WORDS - 1u)];
}

/* ks_u[j] = the 4 bytes at window byte ph + 4j. |ph| is even and below
 * 16; |align| (16, 4 or 2) is a constant that ph is known to be a
 * multiple of (ph = 0 for 16), so the selects and shifts fold away. */
void
ks_realign(uint ph, uint align)
{
    uint q = align >= 16u ? 0u : ph >> 2;
    bool odd = align < 4u && (ph & 2u) != 0u;

    [[unroll]] for (uint j = 0u; j < KS_UNIT_WORDS; j++) {
        uint lo = q == 0u ? ks_win_at(j) : q == 1u ? ks_win_at(j + 1u) :
                  q == 2u ? ks_win_at(j + 2u) : ks_win_at(j + 3u);
        uint hi = q == 0u ? ks_win_at(j + 1u) : q == 1u ? ks_win_at(j + 2u) :
                  q == 2u ? ks_win_at(j + 3u) : ks_win_at(j + 4u);
        ks_u[j] = odd ? (lo >> 16) | (hi << 16) : lo;
    }
}

/* Readers of the realigned unit; |c| is a byte offset (even for 16/32). */
uint
ks_b8(uint c)
{
    return (ks_u[c >> 2] >> ((c & 3u) * 8u)) & 0xFFu;
}

int
ks_s8(uint c)
{
    return bitfieldExtract(int(ks_u[c >> 2]), int((c & 3u) * 8u), 8);
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

float
ks_f16(uint c)
{
    return unpackHalf2x16(ks_b16(c)).x;
}

/* Small unsigned values to float through int: x86 without AVX-512 has no
 * unsigned conversion, and LLVM expands uint -> float to several
 * instructions per lane. */
float
ks_u2f(uint v)
{
    return float(int(v));
}

/* Σ byte_k(v) · x[xi + k] over the four unsigned bytes of |v|. */
float
ks_dot_u8x4(uint v, uint xi)
{
    return ks_u2f(v & 0xFFu) * KS_X(xi) + ks_u2f((v >> 8) & 0xFFu) * KS_X(xi + 1u) +
           ks_u2f((v >> 16) & 0xFFu) * KS_X(xi + 2u) + ks_u2f(v >> 24) * KS_X(xi + 3u);
}

/* The same with the bytes read as signed. */
float
ks_dot_s8x4(uint v, uint xi)
{
    int s = int(v);
    return float(bitfieldExtract(s, 0, 8)) * KS_X(xi) +
           float(bitfieldExtract(s, 8, 8)) * KS_X(xi + 1u) +
           float(bitfieldExtract(s, 16, 8)) * KS_X(xi + 2u) +
           float(s >> 24) * KS_X(xi + 3u);
}

float
ks_sum4(uint xi)
{
    return (KS_X(xi) + KS_X(xi + 1u)) + (KS_X(xi + 2u) + KS_X(xi + 3u));
}

float
ks_sum16(uint xi)
{
    return (ks_sum4(xi) + ks_sum4(xi + 4u)) + (ks_sum4(xi + 8u) + ks_sum4(xi + 12u));
}

/* Moves bit i of the 4-bit |h| to bit 4 of byte i: the four shifted
 * copies of h<<4 land on disjoint bits, so the product has no carries. */
uint
ks_spread4(uint h)
{
    return ((h << 4) * 0x00204081u) & 0x10101010u;
}

/* ---- 32-element blocks ------------------------------------------------ */

/* Byte qs[j] holds element j (low nibble) and j + 16 (high nibble); the
 * fifth bit of element i is bit i of qh. Returns Σ q·x over the block
 * and, in |sx|, Σ x. */
#if defined(KS_QUANT_Q4_0) || defined(KS_QUANT_Q4_1) || defined(KS_QUANT_Q5_0) || \
    defined(KS_QUANT_Q5_1)
float
ks_dot_q4(uint qs, uint qh, bool five, uint xi, out float sx)
{
    float s = 0.0;

    sx = 0.0;
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        uint q = ks_b32(qs + 4u * k);
        uint lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
        if (five) {
            lo |= ks_spread4((qh >> (4u * k)) & 0xFu);
            hi |= ks_spread4((qh >> (16u + 4u * k)) & 0xFu);
        }
        s += ks_dot_u8x4(lo, xi + 4u * k) + ks_dot_u8x4(hi, xi + 16u + 4u * k);
        sx += ks_sum4(xi + 4u * k) + ks_sum4(xi + 16u + 4u * k);
    }
    return s;
}
#endif

#if defined(KS_QUANT_IQ4_NL)
/* IQ4_NL's non-linear levels K[n] (gguf-and-quants.md section 2) plus 128,
 * as bytes of four words: K[n] = byte n % 4 of word n / 4, minus 128. A
 * const array indexed per lane compiles to something very slow on
 * lavapipe; selects and shifts do not. */
float
ks_iq4nl(uint n)
{
    uint w = n < 8u ? (n < 4u ? 0x3F2D1801u : 0x766A5D4Fu)
                    : (n < 12u ? 0xA6998D81u : 0xF1D9C5B5u);
    return float(int((w >> ((n & 3u) * 8u)) & 0xFFu) - 128);
}
#endif

/* ---- one block: Σ w·x for the block at unit byte c, activations from
 * unit index xi ----------------------------------------------------------- */

float
ks_block_dot(uint c, uint xi)
{
#if defined(KS_QUANT_F32) || defined(KS_QUANT_F16) || defined(KS_QUANT_BF16)
    return 0.0;  /* plain types are dotted whole units at a time */
#elif defined(KS_QUANT_Q4_0)
    float sx, s = ks_dot_q4(c + 2u, 0u, false, xi, sx);
    return ks_f16(c) * (s - 8.0 * sx);
#elif defined(KS_QUANT_Q4_1)
    float sx, s = ks_dot_q4(c + 4u, 0u, false, xi, sx);
#if defined(KS_XSUM)
    sx = KS_XSUM(xi / KS_BLOCK_ELEMS);
#endif
    return ks_f16(c) * s + ks_f16(c + 2u) * sx;
#elif defined(KS_QUANT_Q5_0)
    float sx, s = ks_dot_q4(c + 6u, ks_b32(c + 2u), true, xi, sx);
    return ks_f16(c) * (s - 16.0 * sx);
#elif defined(KS_QUANT_Q5_1)
    float sx, s = ks_dot_q4(c + 8u, ks_b32(c + 4u), true, xi, sx);
#if defined(KS_XSUM)
    sx = KS_XSUM(xi / KS_BLOCK_ELEMS);
#endif
    return ks_f16(c) * s + ks_f16(c + 2u) * sx;
#elif defined(KS_QUANT_Q8_0)
    float s = 0.0;
    [[unroll]] for (uint k = 0u; k < 8u; k++)
        s += ks_dot_s8x4(ks_b32(c + 2u + 4u * k), xi + 4u * k);
    return ks_f16(c) * s;
#elif defined(KS_QUANT_IQ4_NL)
    float s = 0.0;
    [[unroll]] for (uint k = 0u; k < 4u; k++) {
        uint q = ks_b32(c + 2u + 4u * k);
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            s += ks_iq4nl((q >> (8u * i)) & 0xFu) * KS_X(xi + 4u * k + i);
            s += ks_iq4nl((q >> (8u * i + 4u)) & 0xFu) * KS_X(xi + 16u + 4u * k + i);
        }
    }
    return ks_f16(c) * s;
#elif defined(KS_QUANT_Q2_K)
    /* scales[16] @0 (low nibble scale, high nibble min), qs[64] @16,
     * d @80, dmin @82. Sub-block k = 8h + 2i + j holds elements
     * 128h + 32i + 16j + l, q = (qs[32h + 16j + l] >> 2i) & 3. */
    float acc = 0.0, accm = 0.0;
    [[unroll]] for (uint h = 0u; h < 2u; h++) {
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            [[unroll]] for (uint j = 0u; j < 2u; j++) {
                uint sc = ks_b8(c + 8u * h + 2u * i + j);
                uint xb = xi + 128u * h + 32u * i + 16u * j;
                float s = 0.0;
                [[unroll]] for (uint m = 0u; m < 4u; m++) {
                    uint q = ks_b32(c + 16u + 32u * h + 16u * j + 4u * m);
                    s += ks_dot_u8x4((q >> (2u * i)) & 0x03030303u, xb + 4u * m);
                }
                acc += ks_u2f(sc & 0xFu) * s;
                accm += ks_u2f(sc >> 4) * ks_sum16(xb);
            }
        }
    }
    return ks_f16(c + 80u) * acc - ks_f16(c + 82u) * accm;
#elif defined(KS_QUANT_Q3_K)
    /* hmask[32] @0, qs[64] @32, scales[12] @96, d @108. Traversal as Q2_K;
     * element at byte position p = 16j + l takes bit 4h + i of hmask[p]
     * as its third bit; q = low2 + 4·bit − 4. Scale k: low 4 bits from
     * b[k] (k < 8) or b[k − 8] >> 4, high 2 bits (b[8 + k%4] >> 2(k/4)). */
    float acc = 0.0;
    [[unroll]] for (uint h = 0u; h < 2u; h++) {
        [[unroll]] for (uint i = 0u; i < 4u; i++) {
            [[unroll]] for (uint j = 0u; j < 2u; j++) {
                uint k = 8u * h + 2u * i + j;
                uint lo4 = k < 8u ? ks_b8(c + 96u + k) & 0xFu : ks_b8(c + 96u + k - 8u) >> 4;
                uint hi2 = (ks_b8(c + 104u + (k & 3u)) >> (2u * (k >> 2))) & 3u;
                int sc = int(lo4 | (hi2 << 4)) - 32;
                uint xb = xi + 128u * h + 32u * i + 16u * j;
                float s = 0.0;
                [[unroll]] for (uint m = 0u; m < 4u; m++) {
                    uint q = ks_b32(c + 32u + 32u * h + 16u * j + 4u * m);
                    uint hm = ks_b32(c + 16u * j + 4u * m);
                    uint v = ((q >> (2u * i)) & 0x03030303u) |
                             (((hm >> (4u * h + i)) & 0x01010101u) << 2);
                    s += ks_dot_u8x4(v, xb + 4u * m);
                }
                acc += float(sc) * (s - 4.0 * ks_sum16(xb));
            }
        }
    }
    return ks_f16(c + 108u) * acc;
#elif defined(KS_QUANT_Q4_K) || defined(KS_QUANT_Q5_K)
    /* d @0, dmin @2, scales[12] @4; Q5_K: qh[32] @16, qs[128] @48;
     * Q4_K: qs[128] @16. Group g: qs bytes 32g..32g+31, low nibbles are
     * sub-block 2g (elements 64g + l), high nibbles 2g + 1 (64g + 32 + l);
     * Q5_K's fifth bits are bits 2g and 2g + 1 of qh[l]. */
#if defined(KS_QUANT_Q5_K)
    const uint qs0 = 48u;
#else
    const uint qs0 = 16u;
#endif
    float acc = 0.0, accm = 0.0;
    [[unroll]] for (uint g = 0u; g < 4u; g++) {
        float s0 = 0.0, s1 = 0.0;
        [[unroll]] for (uint m = 0u; m < 8u; m++) {
            uint q = ks_b32(c + qs0 + 32u * g + 4u * m);
            uint lo = q & 0x0F0F0F0Fu, hi = (q >> 4) & 0x0F0F0F0Fu;
#if defined(KS_QUANT_Q5_K)
            uint qh = ks_b32(c + 16u + 4u * m);
            lo |= ((qh >> (2u * g)) & 0x01010101u) << 4;
            hi |= ((qh >> (2u * g + 1u)) & 0x01010101u) << 4;
#endif
            s0 += ks_dot_u8x4(lo, xi + 64u * g + 4u * m);
            s1 += ks_dot_u8x4(hi, xi + 64u * g + 32u + 4u * m);
        }
        /* 6-bit scale and min of sub-blocks 2g and 2g + 1. */
        [[unroll]] for (uint t = 0u; t < 2u; t++) {
            uint k = 2u * g + t, sc, mn;
            if (k < 4u) {
                sc = ks_b8(c + 4u + k) & 63u;
                mn = ks_b8(c + 8u + k) & 63u;
            } else {
                sc = (ks_b8(c + 8u + k) & 0xFu) | ((ks_b8(c + k) >> 6) << 4);
                mn = (ks_b8(c + 8u + k) >> 4) | ((ks_b8(c + 4u + k) >> 6) << 4);
            }
            uint xb = xi + 64u * g + 32u * t;
            acc += ks_u2f(sc) * (t == 0u ? s0 : s1);
            accm += ks_u2f(mn) * (ks_sum16(xb) + ks_sum16(xb + 16u));
        }
    }
    return ks_f16(c) * acc - ks_f16(c + 2u) * accm;
#elif defined(KS_QUANT_Q6_K)
    /* ql[128] @0, qh[64] @128, scales int8[16] @192, d @208. Half h, byte
     * l (0..31): elements 128h + l, +32, +64, +96 take the low nibble of
     * ql[64h + l], of ql[64h + l + 32], the high nibbles of the same, and
     * bits 0-1, 2-3, 4-5, 6-7 of qh[32h + l]; q − 32 is the value. Scale
     * of 16-element sub-block k (elements 16k..16k+15) is scales[k]. */
    float acc = 0.0;
    [[unroll]] for (uint h = 0u; h < 2u; h++) {
        float s[8];
        [[unroll]] for (uint t = 0u; t < 8u; t++)
            s[t] = 0.0;
        [[unroll]] for (uint m = 0u; m < 8u; m++) {
            uint ql0 = ks_b32(c + 64u * h + 4u * m);
            uint ql1 = ks_b32(c + 64u * h + 32u + 4u * m);
            uint qh = ks_b32(c + 128u + 32u * h + 4u * m);
            uint half16 = m >> 2;  /* which 16 of the 32 bytes */
            uint xb = xi + 128u * h + 4u * m;
            s[0u + half16] += ks_dot_u8x4((ql0 & 0x0F0F0F0Fu) | ((qh & 0x03030303u) << 4), xb);
            s[2u + half16] += ks_dot_u8x4((ql1 & 0x0F0F0F0Fu) |
                                          (((qh >> 2) & 0x03030303u) << 4), xb + 32u);
            s[4u + half16] += ks_dot_u8x4(((ql0 >> 4) & 0x0F0F0F0Fu) |
                                          (((qh >> 4) & 0x03030303u) << 4), xb + 64u);
            s[6u + half16] += ks_dot_u8x4(((ql1 >> 4) & 0x0F0F0F0Fu) |
                                          (((qh >> 6) & 0x03030303u) << 4), xb + 96u);
        }
        [[unroll]] for (uint t = 0u; t < 8u; t++) {
            uint xb = xi + 128u * h + 16u * t;
            acc += float(ks_s8(c + 192u + 8u * h + t)) * (s[t] - 32.0 * ks_sum16(xb));
        }
    }
    return ks_f16(c + 208u) * acc;
#endif
}

/* ---- one unit: Σ w·x over its first |nv| blocks ------------------------- */

float
ks_unit_dot(uint nv)
{
    float s = 0.0;
#if defined(KS_QUANT_F32) || defined(KS_QUANT_F16) || defined(KS_QUANT_BF16)
    [[unroll]] for (uint j = 0u; j < KS_UNIT_WORDS; j++) {
#if defined(KS_QUANT_F32)
        float p = uintBitsToFloat(ks_u[j]) * KS_X(j);
        s += j < nv ? p : 0.0;
#else
#if defined(KS_QUANT_F16)
        vec2 w = unpackHalf2x16(ks_u[j]);
#else
        vec2 w = vec2(uintBitsToFloat(ks_u[j] << 16), uintBitsToFloat(ks_u[j] & 0xFFFF0000u));
#endif
        float p0 = w.x * KS_X(2u * j), p1 = w.y * KS_X(2u * j + 1u);
        s += (2u * j < nv ? p0 : 0.0) + (2u * j + 1u < nv ? p1 : 0.0);
#endif
    }
#else
    [[unroll]] for (uint b = 0u; b < KS_UNIT_BLOCKS; b++) {
        float p = ks_block_dot(b * KS_BLOCK_BYTES, b * KS_BLOCK_ELEMS);
        s += b < nv ? p : 0.0;
    }
#endif
    return s;
}
