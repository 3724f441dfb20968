/* Tests of the CPU quantization kernels (runtime/cpu/quant.h).
 *
 * - fp16/bf16 conversion: exact values, rounding ties, subnormals, inf, NaN.
 * - layouts: hand-built blocks of every type whose dequantized elements are
 *   worked out by hand from shared/reference/gguf-and-quants.md section 2.
 * - activation quantizers: the llama.cpp formulas on hand-picked values.
 * - weight quantizers: quantize -> dequantize error bounds per type.
 * - dot products: scalar kernels against dequantized weights . dequantized
 *   activations in double.
 * - bit-exactness with llama.cpp: hashes of its mul_mat, SwiGLU and
 *   flash attention results on deterministic inputs (recorded once from the peer build,
 *   x86-64 AVX2) against the scalar kernels and the SIMD ones.
 * - SIMD against scalar on random data, odd and even shapes, every path
 *   of ks_cpu_matmul_rows, bit for bit (both follow llama.cpp's x86
 *   order); on aarch64 each NEON level (baseline, dotprod, i8mm) that the
 *   CPU has, and the level HWCAP selects against what ci/arm.sh expects
 *   of the qemu CPU model; skipped without the ISA. */
#include <check.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/cpu/attn.h"
#include "runtime/cpu/pool.h"
#include "runtime/cpu/quant.h"

/* ---- helpers ---------------------------------------------------------- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t
rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float
rnd_uniform(void) /* [-1, 1) */
{
    return (float)(rnd_u32() & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static float
rnd_gauss(void)
{
    float s = 0.0f;
    for (int i = 0; i < 4; i++)
        s += rnd_uniform();
    return s * 0.8660254f; /* variance ~1 */
}

static void
put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static uint16_t
h(float f)
{
    return ks_f32_to_fp16(f);
}

static float *
dequant_alloc(ks_qtype t, const void *src, uint64_t n)
{
    float *d = malloc(n * sizeof(float));
    ks_cpu_dequant_row(t, src, d, n);
    return d;
}

static const ks_qtype all_types[] = {
    KS_QUANT_F32, KS_QUANT_F16, KS_QUANT_BF16, KS_QUANT_Q4_0, KS_QUANT_Q4_1,
    KS_QUANT_Q5_0, KS_QUANT_Q5_1, KS_QUANT_Q8_0, KS_QUANT_Q2_K, KS_QUANT_Q3_K,
    KS_QUANT_Q4_K, KS_QUANT_Q5_K, KS_QUANT_Q6_K, KS_QUANT_IQ4_NL,
};
#define N_TYPES (sizeof(all_types) / sizeof(all_types[0]))

/* ---- fp16 / bf16 -------------------------------------------------------- */

START_TEST(fp16_exact_values)
{
    ck_assert_uint_eq(ks_f32_to_fp16(1.0f), 0x3C00);
    ck_assert_uint_eq(ks_f32_to_fp16(-2.0f), 0xC000);
    ck_assert_uint_eq(ks_f32_to_fp16(0.5f), 0x3800);
    ck_assert_uint_eq(ks_f32_to_fp16(65504.0f), 0x7BFF);
    ck_assert_uint_eq(ks_f32_to_fp16(0.0f), 0x0000);
    ck_assert_uint_eq(ks_f32_to_fp16(-0.0f), 0x8000);
    ck_assert_float_eq(ks_fp16_to_f32(0x3C00), 1.0f);
    ck_assert_float_eq(ks_fp16_to_f32(0xC000), -2.0f);
    ck_assert_float_eq(ks_fp16_to_f32(0x7BFF), 65504.0f);
    ck_assert_float_eq(ks_fp16_to_f32(0x3555), 0.333251953125f);
    ck_assert(signbit(ks_fp16_to_f32(0x8000)));
}
END_TEST

START_TEST(fp16_rounding_ties_to_even)
{
    /* halfway between 1 and 1+2^-10 goes down to the even 1.0 */
    ck_assert_uint_eq(ks_f32_to_fp16(1.0f + 0x1p-11f), 0x3C00);
    /* halfway between 1+2^-10 and 1+2^-9 goes up to the even 1+2^-9 */
    ck_assert_uint_eq(ks_f32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);
    /* just above halfway rounds up */
    ck_assert_uint_eq(ks_f32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f), 0x3C01);
    /* 65520 is halfway to 65536: ties to even overflow to inf */
    ck_assert_uint_eq(ks_f32_to_fp16(65520.0f), 0x7C00);
    ck_assert_uint_eq(ks_f32_to_fp16(65519.0f), 0x7BFF);
    ck_assert_uint_eq(ks_f32_to_fp16(-1e6f), 0xFC00);
}
END_TEST

START_TEST(fp16_subnormals)
{
    ck_assert_float_eq(ks_fp16_to_f32(0x0001), 0x1p-24f);
    ck_assert_float_eq(ks_fp16_to_f32(0x03FF), 1023 * 0x1p-24f);
    ck_assert_float_eq(ks_fp16_to_f32(0x8200), -512 * 0x1p-24f);
    ck_assert_uint_eq(ks_f32_to_fp16(0x1p-24f), 0x0001);
    ck_assert_uint_eq(ks_f32_to_fp16(0x1p-14f), 0x0400); /* smallest normal */
    ck_assert_uint_eq(ks_f32_to_fp16(0x1p-25f), 0x0000); /* tie to even 0 */
    ck_assert_uint_eq(ks_f32_to_fp16(0x1.8p-24f), 0x0002); /* tie to even 2 */
    ck_assert_uint_eq(ks_f32_to_fp16(0x1.1p-25f), 0x0001); /* above tie */
    ck_assert_uint_eq(ks_f32_to_fp16(-0x1p-30f), 0x8000);
    /* largest subnormal rounds up into the smallest normal */
    ck_assert_uint_eq(ks_f32_to_fp16(0x1p-14f - 0x1p-26f), 0x0400);
}
END_TEST

START_TEST(fp16_inf_nan)
{
    ck_assert(isinf(ks_fp16_to_f32(0x7C00)) && ks_fp16_to_f32(0x7C00) > 0);
    ck_assert(isinf(ks_fp16_to_f32(0xFC00)) && ks_fp16_to_f32(0xFC00) < 0);
    ck_assert(isnan(ks_fp16_to_f32(0x7E00)));
    ck_assert(isnan(ks_fp16_to_f32(0x7C01)));
    ck_assert_uint_eq(ks_f32_to_fp16(INFINITY), 0x7C00);
    ck_assert_uint_eq(ks_f32_to_fp16(-INFINITY), 0xFC00);
    uint16_t n = ks_f32_to_fp16(NAN);
    ck_assert_uint_eq(n & 0x7C00, 0x7C00);
    ck_assert_uint_ne(n & 0x03FF, 0);
    ck_assert_uint_eq(n & 0x0200, 0x0200); /* quiet */
}
END_TEST

START_TEST(fp16_round_trip_all)
{
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t v = (uint16_t)i;
        if ((v & 0x7C00) == 0x7C00 && (v & 0x3FF))
            continue; /* NaN payloads are quieted */
        ck_assert_uint_eq(ks_f32_to_fp16(ks_fp16_to_f32(v)), v);
    }
}
END_TEST

START_TEST(bf16_conversion)
{
    ck_assert_uint_eq(ks_f32_to_bf16(1.0f), 0x3F80);
    ck_assert_uint_eq(ks_f32_to_bf16(-2.0f), 0xC000);
    ck_assert_float_eq(ks_bf16_to_f32(0x3F80), 1.0f);
    ck_assert_float_eq(ks_bf16_to_f32(0x4049), 3.140625f);
    /* ties to even */
    ck_assert_uint_eq(ks_f32_to_bf16(1.0f + 0x1p-8f), 0x3F80);
    ck_assert_uint_eq(ks_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3F82);
    ck_assert_uint_eq(ks_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3F81);
    /* subnormals are kept, not flushed */
    ck_assert_uint_eq(ks_f32_to_bf16(0x1p-130f), 0x0008);
    ck_assert_float_eq(ks_bf16_to_f32(0x0008), 0x1p-130f);
    ck_assert_uint_eq(ks_f32_to_bf16(0x1p-133f + 0x1p-140f), 0x0001);
    ck_assert_uint_eq(ks_f32_to_bf16(INFINITY), 0x7F80);
    ck_assert_uint_eq(ks_f32_to_bf16(-INFINITY), 0xFF80);
    /* rounding overflows to inf */
    ck_assert_uint_eq(ks_f32_to_bf16(3.4e38f), 0x7F80);
    uint16_t n = ks_f32_to_bf16(NAN);
    ck_assert(isnan(ks_bf16_to_f32(n)));
    ck_assert_uint_eq(n & 0x40, 0x40);
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t v = (uint16_t)i;
        if ((v & 0x7F80) == 0x7F80 && (v & 0x7F))
            continue;
        ck_assert_uint_eq(ks_f32_to_bf16(ks_bf16_to_f32(v)), v);
    }
}
END_TEST

/* ---- hand-built blocks ------------------------------------------------- */

static void
check_elems(ks_qtype t, const uint8_t *blk, uint64_t n, const int *idx,
            const float *want, int count)
{
    float *d = dequant_alloc(t, blk, n);
    for (int i = 0; i < count; i++)
        ck_assert_msg(d[idx[i]] == want[i], "%s element %d: got %g want %g",
                      ks_qtype_name(t), idx[i], d[idx[i]], want[i]);
    free(d);
}

START_TEST(layout_q4_0)
{
    uint8_t b[18] = { 0 };
    put16(b, h(0.5f));
    b[2 + 0] = 0x3A;  /* element 0 = 0xA, element 16 = 0x3 */
    b[2 + 15] = 0xF0; /* element 15 = 0x0, element 31 = 0xF */
    int idx[] = { 0, 16, 15, 31, 1 };
    float want[] = { 1.0f, -2.5f, -4.0f, 3.5f, -4.0f };
    check_elems(KS_QUANT_Q4_0, b, 32, idx, want, 5);
}
END_TEST

START_TEST(layout_q4_1)
{
    uint8_t b[20] = { 0 };
    put16(b, h(0.25f));
    put16(b + 2, h(-1.0f));
    b[4 + 1] = 0x5C;
    int idx[] = { 1, 17, 0 };
    float want[] = { 12 * 0.25f - 1, 5 * 0.25f - 1, -1.0f };
    check_elems(KS_QUANT_Q4_1, b, 32, idx, want, 3);
}
END_TEST

START_TEST(layout_q5_0)
{
    uint8_t b[22] = { 0 };
    uint32_t qh = (1u << 3) | (1u << 20);
    put16(b, h(1.0f));
    memcpy(b + 2, &qh, 4);
    b[6 + 3] = 0x21;
    int idx[] = { 3, 19, 4, 20 };
    float want[] = { 1.0f, -14.0f, -16.0f, 0.0f };
    check_elems(KS_QUANT_Q5_0, b, 32, idx, want, 4);
}
END_TEST

START_TEST(layout_q5_1)
{
    uint8_t b[24] = { 0 };
    uint32_t qh = 1u << 31;
    put16(b, h(2.0f));
    put16(b + 2, h(0.5f));
    memcpy(b + 4, &qh, 4);
    b[8 + 15] = 0x7F;
    int idx[] = { 15, 31, 0 };
    float want[] = { 30.5f, 46.5f, 0.5f };
    check_elems(KS_QUANT_Q5_1, b, 32, idx, want, 3);
}
END_TEST

START_TEST(layout_q8_0_iq4_nl)
{
    uint8_t b[34] = { 0 };
    put16(b, h(0.125f));
    b[2 + 5] = (uint8_t)-100;
    b[2 + 31] = 127;
    int idx[] = { 5, 31, 0 };
    float want[] = { -12.5f, 15.875f, 0.0f };
    check_elems(KS_QUANT_Q8_0, b, 32, idx, want, 3);

    uint8_t c[18] = { 0 };
    put16(c, h(0.5f));
    c[2 + 2] = 0xF0;
    c[2 + 7] = 0x87;
    int idx2[] = { 2, 18, 7, 23, 0 };
    float want2[] = { -63.5f, 56.5f, -5.0f, 0.5f, -63.5f };
    check_elems(KS_QUANT_IQ4_NL, c, 32, idx2, want2, 5);
}
END_TEST

/* Q4_K/Q5_K scales: sc0=1 mn0=2, sc1=3 mn1=4, sc5=45 (0b10'1101),
 * mn5=50 (0b11'0010), others 0. Packed by hand:
 * b0=1, b1=3|(45>>4)<<6=0x83, b4=2, b5=4|(50>>4)<<6=0xC4,
 * b9=(45&15)|(50&15)<<4=0x2D. */
static void
k4_scales(uint8_t *s)
{
    memset(s, 0, 12);
    s[0] = 1;
    s[1] = 0x83;
    s[4] = 2;
    s[5] = 0xC4;
    s[9] = 0x2D;
}

START_TEST(layout_q4_k)
{
    uint8_t b[144] = { 0 };
    put16(b, h(1.0f));
    put16(b + 2, h(0.5f));
    k4_scales(b + 4);
    uint8_t *qs = b + 16;
    qs[0] = 0x97;      /* el 0 (sub 0) = 7, el 32 (sub 1) = 9 */
    qs[64 + 3] = 0xA0; /* group 2: el 131 (sub 4) = 0, el 163 (sub 5) = 10 */
    int idx[] = { 0, 32, 131, 163, 1, 170 };
    float want[] = { 1 * 7 - 0.5f * 2, 3 * 9 - 0.5f * 4, 0.0f, 45 * 10 - 0.5f * 50,
                     -1.0f, -25.0f };
    check_elems(KS_QUANT_Q4_K, b, 256, idx, want, 6);
}
END_TEST

START_TEST(layout_q5_k)
{
    uint8_t b[176] = { 0 };
    put16(b, h(1.0f));
    put16(b + 2, h(0.5f));
    k4_scales(b + 4);
    uint8_t *qh = b + 16, *qs = b + 48;
    qs[0] = 0x97;
    qs[64 + 3] = 0xA0;
    qh[0] = 0x01; /* bit 0: group 0 low nibble of byte 0 -> el 0 */
    qh[3] = 0x20; /* bit 5: group 2 high nibble of byte 3 -> el 163 */
    qh[1] = 0x02; /* bit 1: group 0 high nibble of byte 1 -> el 33 */
    int idx[] = { 0, 32, 163, 33, 131 };
    float want[] = { 23 - 1.0f, 27 - 2.0f, 45 * 26 - 25.0f, 3 * 16 - 2.0f, 0.0f };
    check_elems(KS_QUANT_Q5_K, b, 256, idx, want, 5);
}
END_TEST

START_TEST(layout_q6_k)
{
    uint8_t b[210] = { 0 };
    uint8_t *ql = b, *qh = b + 128;
    int8_t *sc = (int8_t *)(b + 192);
    put16(b + 208, h(0.5f));
    sc[0] = 2;
    sc[2] = -3;
    sc[4] = 7;
    sc[6] = 1;
    sc[9] = -2;
    ql[0] = 0x5A;
    ql[32] = 0x31;
    qh[0] = 0xE4; /* 2-bit fields: 0, 1, 2, 3 */
    ql[64 + 17] = 0x0F;
    qh[32 + 17] = 0x03;
    int idx[] = { 0, 32, 64, 96, 145 };
    /* q = (low | high<<4) - 32 */
    float want[] = { 0.5f * 2 * (10 - 32), 0.5f * -3 * (17 - 32), 0.5f * 7 * (37 - 32),
                     0.5f * 1 * (51 - 32), 0.5f * -2 * (63 - 32) };
    check_elems(KS_QUANT_Q6_K, b, 256, idx, want, 5);
}
END_TEST

START_TEST(layout_q2_k)
{
    uint8_t b[84] = { 0 };
    uint8_t *sc = b, *qs = b + 16;
    put16(b + 80, h(1.0f));
    put16(b + 82, h(0.5f));
    sc[0] = 0x23; /* scale 3, min 2 */
    sc[3] = 0x15; /* scale 5, min 1 */
    sc[9] = 0x0F; /* scale 15, min 0 */
    qs[0] = 0x03;  /* el 0: shift 0, bytes 0..15 */
    qs[18] = 0x08; /* el 50: half 0, shift 2, bytes 16..31 -> sub-block 3 */
    qs[53] = 0x01; /* el 149: half 1, shift 0, bytes 48..63 -> sub-block 9 */
    int idx[] = { 0, 50, 149, 1, 48 };
    float want[] = { 3 * 3 - 1.0f, 5 * 2 - 0.5f, 15.0f, -1.0f, -0.5f };
    check_elems(KS_QUANT_Q2_K, b, 256, idx, want, 5);
}
END_TEST

START_TEST(layout_q3_k)
{
    uint8_t b[110] = { 0 };
    uint8_t *hm = b, *qs = b + 32, *sc = b + 96;
    put16(b + 108, h(2.0f));
    /* 6-bit scales stored +32; all 32 (=0) except u0=40 (s 8), u5=63
     * (s 31), u9=20 (s -12). High 2 bits of every u=32 are 2: 0xAA. */
    sc[0] = 0x08;  /* u0 low 4 = 8 */
    sc[5] = 0x0F;  /* u5 low 4 = 15 */
    sc[1] = 0x40;  /* u9 low 4 = 4 in the high nibble of byte 1 */
    sc[8] = 0xAA;  /* u0,u4,u8,u12 high bits: 2 */
    sc[9] = 0x9E;  /* u1:2, u5:3 (bits 2-3), u9:1 (bits 4-5), u13:2 */
    sc[10] = 0xAA;
    sc[11] = 0xAA;
    qs[0] = 0x01;   /* el 0: low2 = 1, hmask[0] bit 0 clear -> 1 - 4 */
    qs[50] = 0x03;  /* el 146: half 1, shift 0, p = 18 -> sub-block 9 */
    hm[18] = 0x10;  /* bit 4 (= 4*1 + 0) set: no subtraction */
    qs[16] = 0x20;  /* el 80: half 0, shift 4, p = 16 -> sub-block 5 */
    hm[16] = 0x00;
    hm[1] = 0x01;   /* el 1: low2 = 0, bit set -> 0 */
    int idx[] = { 0, 146, 80, 1, 2, 200 };
    float want[] = { 2 * 8 * -3.0f, 2 * -12 * 3.0f, 2 * 31 * -2.0f, 0.0f, 2 * 8 * -4.0f, 0.0f };
    check_elems(KS_QUANT_Q3_K, b, 256, idx, want, 6);
}
END_TEST

START_TEST(layout_float_types)
{
    uint16_t hv[3] = { 0x3C00, 0xC200, 0x0001 };
    uint16_t bv[2] = { 0x3F80, 0xC040 };
    float fv[2] = { 1.5f, -7.25f };
    float d[3];
    ks_cpu_dequant_row(KS_QUANT_F16, hv, d, 3);
    ck_assert_float_eq(d[0], 1.0f);
    ck_assert_float_eq(d[1], -3.0f);
    ck_assert_float_eq(d[2], 0x1p-24f);
    ks_cpu_dequant_row(KS_QUANT_BF16, bv, d, 2);
    ck_assert_float_eq(d[0], 1.0f);
    ck_assert_float_eq(d[1], -3.0f);
    ks_cpu_dequant_row(KS_QUANT_F32, fv, d, 2);
    ck_assert_float_eq(d[1], -7.25f);
}
END_TEST

/* ---- activation quantization -------------------------------------------- */

START_TEST(act_q8_0_q8_1_formulas)
{
    float x[32] = { 0 };
    uint8_t q0[34], q1[36];
    x[0] = 1.0f;
    x[1] = -0.5f;  /* -63.5 rounds to even -64 */
    x[2] = 0.25f;  /* 31.75 -> 32 */
    x[3] = 0.5f;   /* 63.5 -> 64 */
    ks_cpu_simd_force(KS_SIMD_SCALAR);
    ks_cpu_quantize_act(KS_QUANT_Q4_0, x, q0, 32);
    uint16_t d;
    memcpy(&d, q0, 2);
    ck_assert_uint_eq(d, ks_f32_to_fp16(1.0f / 127.0f));
    ck_assert_int_eq((int8_t)q0[2], 127);
    ck_assert_int_eq((int8_t)q0[3], -64);
    ck_assert_int_eq((int8_t)q0[4], 32);
    ck_assert_int_eq((int8_t)q0[5], 64);
    ck_assert_int_eq((int8_t)q0[6], 0);
    ck_assert_uint_eq(ks_cpu_act_bytes(KS_QUANT_Q4_0, 32), 34);

    ks_cpu_quantize_act(KS_QUANT_Q4_1, x, q1, 32);
    uint16_t s;
    memcpy(&d, q1, 2);
    memcpy(&s, q1 + 2, 2);
    ck_assert_uint_eq(d, ks_f32_to_fp16(1.0f / 127.0f));
    ck_assert_uint_eq(s, ks_f32_to_fp16(1.0f / 127.0f * (127 - 64 + 32 + 64)));
    ck_assert_int_eq((int8_t)q1[4], 127);
    ck_assert_int_eq((int8_t)q1[5], -64);
    ck_assert_uint_eq(ks_cpu_act_bytes(KS_QUANT_Q5_1, 64), 72);

    memset(x, 0, sizeof x);
    ks_cpu_quantize_act(KS_QUANT_Q8_0, x, q0, 32);
    memcpy(&d, q0, 2);
    ck_assert_uint_eq(d, 0);
    ck_assert_int_eq((int8_t)q0[2], 0);
    ks_cpu_simd_force(ks_cpu_simd_available(KS_SIMD_AVX2) ? KS_SIMD_AVX2 :
                      ks_cpu_simd_available(KS_SIMD_NEON) ? KS_SIMD_NEON : KS_SIMD_SCALAR);
}
END_TEST

START_TEST(act_q8_k_formula)
{
    float x[256] = { 0 };
    uint8_t q[292];
    float d;
    int16_t bs[16];
    x[5] = -127.0f; /* first of largest magnitude: max = -127, iscale = 1 */
    x[6] = 127.0f;
    x[7] = 63.5f;   /* ties to even: 64 */
    x[8] = 31.75f;  /* 32 */
    x[40] = -0.5f;  /* ties to even: 0 */
    x[41] = -1.5f;  /* ties to even: -2 */
    ks_cpu_simd_force(KS_SIMD_SCALAR);
    ks_cpu_quantize_act(KS_QUANT_Q4_K, x, q, 256);
    memcpy(&d, q, 4);
    memcpy(bs, q + 4 + 256, 32);
    ck_assert_float_eq(d, 1.0f);
    ck_assert_int_eq((int8_t)q[4 + 5], -127);
    ck_assert_int_eq((int8_t)q[4 + 6], 127);
    ck_assert_int_eq((int8_t)q[4 + 7], 64);
    ck_assert_int_eq((int8_t)q[4 + 8], 32);
    ck_assert_int_eq((int8_t)q[4 + 40], 0);
    ck_assert_int_eq((int8_t)q[4 + 41], -2);
    ck_assert_int_eq(bs[0], -127 + 127 + 64 + 32);
    ck_assert_int_eq(bs[2], -2);
    ck_assert_int_eq(bs[1], 0);
    ck_assert_uint_eq(ks_cpu_act_bytes(KS_QUANT_Q6_K, 512), 584);

    /* a positive max gives a negative scale */
    memset(x, 0, sizeof x);
    x[0] = 4.0f;
    x[1] = -1.0f;
    ks_cpu_quantize_act(KS_QUANT_Q2_K, x, q, 256);
    memcpy(&d, q, 4);
    ck_assert_float_eq(d, -4.0f / 127.0f);
    ck_assert_int_eq((int8_t)q[4], -127);
    ck_assert_int_eq((int8_t)q[5], 32); /* 31.75 */
    ks_cpu_simd_force(ks_cpu_simd_available(KS_SIMD_AVX2) ? KS_SIMD_AVX2 :
                      ks_cpu_simd_available(KS_SIMD_NEON) ? KS_SIMD_NEON : KS_SIMD_SCALAR);
}
END_TEST

START_TEST(act_types_and_sizes)
{
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_F32), KS_QUANT_F32);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_F16), KS_QUANT_F16);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_BF16), KS_QUANT_BF16);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_Q4_0), KS_QUANT_Q8_0);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_Q5_0), KS_QUANT_Q8_0);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_Q8_0), KS_QUANT_Q8_0);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_IQ4_NL), KS_QUANT_Q8_0);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_Q4_1), KS_QUANT_Q8_1);
    ck_assert_int_eq(ks_cpu_act_type(KS_QUANT_Q5_1), KS_QUANT_Q8_1);
    for (int t = KS_QUANT_Q2_K; t <= KS_QUANT_Q6_K; t++)
        ck_assert_int_eq(ks_cpu_act_type((ks_qtype)t), KS_QUANT_Q8_K);
    ck_assert_uint_eq(ks_cpu_act_bytes(KS_QUANT_F16, 10), 20);
    ck_assert_uint_eq(ks_cpu_act_bytes(KS_QUANT_F32, 10), 40);
    for (size_t i = 0; i < N_TYPES; i++)
        ck_assert(ks_cpu_can_quantize(all_types[i]));
    ck_assert(!ks_cpu_can_quantize(KS_QUANT_IQ2_XXS));
    ck_assert_str_eq(ks_cpu_simd_name(KS_SIMD_SCALAR), "scalar");
    ck_assert_str_eq(ks_cpu_simd_name(KS_SIMD_AVX2), "avx2");
    ck_assert_str_eq(ks_cpu_simd_name(KS_SIMD_NEON_DOTPROD), "neon-dotprod");
    ck_assert_str_eq(ks_cpu_simd_name(KS_SIMD_NEON_I8MM), "neon-i8mm");
    ck_assert_str_eq(ks_cpu_simd_name(KS_SIMD_AVXVNNI), "avxvnni");
    ck_assert_str_eq(ks_cpu_simd_name(KS_SIMD_AVX512), "avx512");
    ck_assert(ks_cpu_simd_available(KS_SIMD_SCALAR));
    ck_assert(!ks_cpu_simd_available(KS_SIMD_COUNT));
}
END_TEST

START_TEST(act_dequant_close_to_input)
{
    enum { N = 1024 };
    static float x[N], back[N];
    static uint8_t q[N * 2];
    const ks_qtype ws[] = { KS_QUANT_Q4_0, KS_QUANT_Q4_1, KS_QUANT_Q4_K };
    for (int i = 0; i < N; i++)
        x[i] = rnd_gauss();
    for (int k = 0; k < 3; k++) {
        ks_cpu_quantize_act(ws[k], x, q, N);
        ks_cpu_dequant_row(ks_cpu_act_type(ws[k]), q, back, N);
        int bs = ws[k] == KS_QUANT_Q4_K ? 256 : 32;
        for (int b = 0; b < N / bs; b++) {
            float amax = 0;
            for (int j = 0; j < bs; j++)
                amax = fmaxf(amax, fabsf(x[b * bs + j]));
            for (int j = 0; j < bs; j++)
                ck_assert_float_le(fabsf(back[b * bs + j] - x[b * bs + j]),
                                   amax * (0.5f / 127 + 1e-3f));
        }
    }
}
END_TEST

/* ---- weight quantizers -------------------------------------------------- */

typedef struct rt_bound {
    ks_qtype t;
    float max_rel; /* max |err| / amax of the row */
    float rms_rel; /* rms(err) / rms(x) */
} rt_bound;

static const rt_bound rt_bounds[] = {
    { KS_QUANT_F32, 0.0f, 0.0f },
    { KS_QUANT_F16, 5e-4f, 5e-4f },
    { KS_QUANT_BF16, 4e-3f, 4e-3f },
    { KS_QUANT_Q8_0, 0.0045f, 0.006f },
    { KS_QUANT_Q4_0, 0.13f, 0.14f },
    { KS_QUANT_Q4_1, 0.07f, 0.10f },
    { KS_QUANT_Q5_0, 0.066f, 0.07f },
    { KS_QUANT_Q5_1, 0.035f, 0.05f },
    { KS_QUANT_IQ4_NL, 0.13f, 0.13f },
    { KS_QUANT_Q2_K, 0.5f, 0.5f },
    { KS_QUANT_Q3_K, 0.3f, 0.25f },
    { KS_QUANT_Q4_K, 0.11f, 0.12f },
    { KS_QUANT_Q5_K, 0.06f, 0.06f },
    { KS_QUANT_Q6_K, 0.03f, 0.03f },
};

START_TEST(quantize_round_trip)
{
    enum { N = 4096 };
    static float x[N], back[N];
    static uint8_t q[N * 4];
    const rt_bound *b = &rt_bounds[_i];

    for (int i = 0; i < N; i++)
        x[i] = rnd_gauss() * (i % 512 < 256 ? 1.0f : 0.01f); /* two scales */
    ks_cpu_quantize_row(b->t, x, q, N);
    ks_cpu_dequant_row(b->t, q, back, N);
    /* bound per 256-element stretch (one scale group) */
    for (int s = 0; s < N / 256; s++) {
        double e2 = 0, x2 = 0;
        float amax = 0, emax = 0;
        for (int j = 0; j < 256; j++) {
            float xv = x[256 * s + j], e = fabsf(back[256 * s + j] - xv);
            amax = fmaxf(amax, fabsf(xv));
            emax = fmaxf(emax, e);
            e2 += (double)e * e;
            x2 += (double)xv * xv;
        }
        ck_assert_msg(emax <= b->max_rel * amax, "%s: max err %g > %g * %g",
                      ks_qtype_name(b->t), emax, b->max_rel, amax);
        ck_assert_msg(sqrt(e2 / x2) <= b->rms_rel, "%s: rms err %g > %g",
                      ks_qtype_name(b->t), sqrt(e2 / x2), b->rms_rel);
    }
    /* all zeros stay zeros */
    memset(x, 0, sizeof x);
    ks_cpu_quantize_row(b->t, x, q, 512);
    ks_cpu_dequant_row(b->t, q, back, 512);
    for (int j = 0; j < 512; j++)
        ck_assert_float_eq(back[j], 0.0f);
}
END_TEST

START_TEST(quantize_matches_llama_ref_q4_0_q8_0)
{
    float x[32];
    uint8_t q[34];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16) * 0.1f; /* max magnitude -1.6 at j = 0 */
    ks_cpu_quantize_row(KS_QUANT_Q4_0, x, q, 32);
    uint16_t d;
    memcpy(&d, q, 2);
    ck_assert_uint_eq(d, ks_f32_to_fp16(-1.6f / -8.0f));
    ck_assert_uint_eq(q[2] & 0xF, 0);        /* -1.6 -> q 0 */
    ck_assert_uint_eq(q[2 + 15] >> 4, 15);   /* 1.5 -> 7.5+8.5 = 16 -> 15 */
    ck_assert_uint_eq(q[2 + 8] & 0xF, 4);    /* -0.8 -> -4+8.5 = 4.5 -> 4 */
    ks_cpu_quantize_row(KS_QUANT_Q8_0, x, q, 32);
    memcpy(&d, q, 2);
    ck_assert_uint_eq(d, ks_f32_to_fp16(1.6f / 127.0f));
    ck_assert_int_eq((int8_t)q[2], -127);
    ck_assert_int_eq((int8_t)q[2 + 31], (int)roundf(1.5f * (1.0f / (1.6f / 127.0f))));
}
END_TEST

/* ---- dot products vs float reference ------------------------------------ */

/* Fills |n_rows| rows of type |t| with random but valid content. */
static uint8_t *
random_weights(ks_qtype t, uint64_t n, int64_t n_rows, uint64_t *row_bytes)
{
    uint64_t rb = ks_qtype_row_bytes(t, n);
    uint8_t *w = malloc(rb * (uint64_t)n_rows);
    float *x = malloc(n * sizeof(float));

    for (int64_t r = 0; r < n_rows; r++) {
        float scale = 0.05f + (float)(rnd_u32() % 100) / 50.0f;
        for (uint64_t i = 0; i < n; i++)
            x[i] = rnd_gauss() * scale + (r % 3 == 1 ? 0.3f * scale : 0.0f);
        ks_cpu_quantize_row(t, x, w + (uint64_t)r * rb, n);
    }
    /* for the integer types, also scramble the quants (keep the scales) */
    const ks_qtype_info *inf = ks_qtype_get(t);
    if (inf->block_elems > 1) {
        for (int64_t r = 0; r < n_rows; r += 2)
            for (uint64_t i = 0; i < rb; i++) {
                uint64_t off = i % inf->block_bytes;
                bool is_scale;
                switch (t) {
                case KS_QUANT_Q4_1: case KS_QUANT_Q5_1: is_scale = off < 4; break;
                case KS_QUANT_Q2_K: is_scale = off >= 80; break;
                case KS_QUANT_Q3_K: is_scale = off >= 108; break;
                case KS_QUANT_Q4_K: case KS_QUANT_Q5_K: is_scale = off < 4; break;
                case KS_QUANT_Q6_K: is_scale = off >= 208; break;
                default: is_scale = off < 2; break;
                }
                if (!is_scale)
                    w[(uint64_t)r * rb + i] = (uint8_t)rnd_u32();
            }
    }
    free(x);
    *row_bytes = rb;
    return w;
}

static float *
random_acts(uint64_t n, int64_t n_tok)
{
    float *x = malloc(n * (uint64_t)n_tok * sizeof(float));
    for (uint64_t i = 0; i < n * (uint64_t)n_tok; i++)
        x[i] = rnd_gauss() * (i % 97 == 0 ? 8.0f : 1.0f);
    return x;
}

/* Relative tolerance against sum |w_i a_i| (the float reference is in
 * double; kernels sum integer products exactly, then in float). */
static const struct { ks_qtype t; double rel; } dot_tol[] = {
    { KS_QUANT_F32, 2e-5 }, { KS_QUANT_F16, 2e-5 }, { KS_QUANT_BF16, 2e-5 },
    { KS_QUANT_Q4_0, 1e-5 }, { KS_QUANT_Q4_1, 1e-5 }, { KS_QUANT_Q5_0, 1e-5 },
    { KS_QUANT_Q5_1, 1e-5 }, { KS_QUANT_Q8_0, 1e-5 }, { KS_QUANT_Q2_K, 1e-5 },
    { KS_QUANT_Q3_K, 1e-5 }, { KS_QUANT_Q4_K, 1e-5 }, { KS_QUANT_Q5_K, 1e-5 },
    { KS_QUANT_Q6_K, 1e-5 }, { KS_QUANT_IQ4_NL, 1e-5 },
};

START_TEST(dot_scalar_vs_float_reference)
{
    const ks_qtype t = dot_tol[_i].t;
    const uint64_t n = 512;
    const int64_t rows = 5;
    uint64_t rb;
    uint8_t *w = random_weights(t, n, rows, &rb);
    float *x = random_acts(n, 1);
    uint8_t *xq = malloc(ks_cpu_act_bytes(t, n));
    float *xd = malloc(n * sizeof(float)), *wd = malloc(n * sizeof(float));
    float y[5];

    ks_cpu_simd_force(KS_SIMD_SCALAR);
    ks_cpu_quantize_act(t, x, xq, n);
    ks_cpu_dequant_row(ks_cpu_act_type(t), xq, xd, n);
    ks_cpu_matvec(t, w, rb, n, rows, xq, y);
    for (int64_t r = 0; r < rows; r++) {
        double ref = 0, mag = 0;
        ks_cpu_dequant_row(t, w + (uint64_t)r * rb, wd, n);
        for (uint64_t i = 0; i < n; i++) {
            ref += (double)wd[i] * xd[i];
            mag += fabs((double)wd[i] * xd[i]);
        }
        if (t == KS_QUANT_Q4_1 || t == KS_QUANT_Q5_1) {
            /* Q8_1 carries s = fp16(d * sum q) and the kernels use it for
             * the min term: replace m * sum(a) by m * s per block */
            const uint8_t *wr = w + (uint64_t)r * rb;
            uint64_t bb = ks_qtype_get(t)->block_bytes;
            for (uint64_t b = 0; b < n / 32; b++) {
                uint16_t mh, sh;
                double sum_a = 0;
                memcpy(&mh, wr + b * bb + 2, 2);
                memcpy(&sh, xq + b * 36 + 2, 2);
                for (int j = 0; j < 32; j++)
                    sum_a += xd[32 * b + (uint64_t)j];
                ref += (double)ks_fp16_to_f32(mh) *
                       ((double)ks_fp16_to_f32(sh) - sum_a);
            }
        }
        ck_assert_msg(fabs(y[r] - ref) <= dot_tol[_i].rel * mag + 1e-30,
                      "%s row %d: %g vs %g (mag %g)", ks_qtype_name(t), (int)r,
                      y[r], ref, mag);
    }
    ks_cpu_simd_force(ks_cpu_simd_available(KS_SIMD_AVX2) ? KS_SIMD_AVX2 :
                      ks_cpu_simd_available(KS_SIMD_NEON) ? KS_SIMD_NEON : KS_SIMD_SCALAR);
    free(w); free(x); free(xq); free(xd); free(wd);
}
END_TEST

/* ---- SIMD vs scalar ---------------------------------------------------- */

/* The level simd_each_level_vs_scalar is testing; KS_SIMD_COUNT: none. */
static ks_simd level_under_test = KS_SIMD_COUNT;

static ks_simd
simd_path(void)
{
    if (level_under_test != KS_SIMD_COUNT)
        return level_under_test;
    if (ks_cpu_simd_available(KS_SIMD_NEON_I8MM))
        return KS_SIMD_NEON_I8MM;
    if (ks_cpu_simd_available(KS_SIMD_NEON_DOTPROD))
        return KS_SIMD_NEON_DOTPROD;
    if (ks_cpu_simd_available(KS_SIMD_AVX2))
        return KS_SIMD_AVX2;
    if (ks_cpu_simd_available(KS_SIMD_NEON))
        return KS_SIMD_NEON;
    return KS_SIMD_SCALAR;
}

/* Every SIMD level, each forced in turn where the CPU has it; every
 * level gives the scalar reference's bits. */
static const ks_simd simd_levels[] = { KS_SIMD_AVX2, KS_SIMD_AVXVNNI, KS_SIMD_AVX512,
                                       KS_SIMD_NEON, KS_SIMD_NEON_DOTPROD, KS_SIMD_NEON_I8MM };
enum { N_LEVELS = sizeof simd_levels / sizeof simd_levels[0] };

START_TEST(simd_act_quant_bit_exact)
{
    enum { N = 2048 };
    static float x[N];
    static uint8_t a[N * 4], b[N * 4];
    const ks_qtype ws[] = { KS_QUANT_Q4_0, KS_QUANT_Q4_1, KS_QUANT_Q4_K,
                            KS_QUANT_F16, KS_QUANT_BF16, KS_QUANT_F32 };
    if (simd_path() == KS_SIMD_SCALAR) {
        printf("quant: no SIMD path on this CPU; SIMD comparisons skipped\n");
        return;
    }
    for (int rep = 0; rep < 8 * N_LEVELS; rep++) {
        ks_simd s = simd_levels[rep / 8];
        if (!ks_cpu_simd_available(s))
            continue;
        for (int i = 0; i < N; i++)
            x[i] = rnd_gauss() * (rep % 8 + 1);
        if (rep % 8 == 1) /* exact ties: k + 0.5 after scaling by 127/amax */
            for (int i = 0; i < N; i++)
                x[i] = (i % 32 == 0) ? 127.0f : (float)((int)(rnd_u32() % 254) - 127) + 0.5f;
        if (rep % 8 == 2) /* fp16 specials, subnormals, ties */
            for (int i = 0; i < N; i += 8) {
                x[i] = 0x1.8p-24f; x[i + 1] = 65520.0f; x[i + 2] = -INFINITY;
                x[i + 3] = 1.0f + 0x1p-11f; x[i + 4] = 0x1p-30f; x[i + 5] = NAN;
                x[i + 6] = -0.0f; x[i + 7] = 1e-7f;
            }
        if (rep % 8 == 3) /* largest magnitude twice with both signs */
            for (int i = 0; i < N; i += 256) {
                x[i + 7] = -50.0f;
                x[i + 100] = 50.0f;
            }
        if (rep % 8 == 4)
            memset(x, 0, 256 * sizeof(float)); /* an all-zero block */
        for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++) {
            if (rep % 8 == 2 && ws[k] != KS_QUANT_F16 && ws[k] != KS_QUANT_BF16)
                continue;
            uint64_t nb = ks_cpu_act_bytes(ws[k], N);
            ks_cpu_simd_force(KS_SIMD_SCALAR);
            ks_cpu_quantize_act(ws[k], x, a, N);
            ks_cpu_simd_force(s);
            ks_cpu_quantize_act(ws[k], x, b, N);
            ck_assert_msg(memcmp(a, b, nb) == 0, "%s act (rep %d) differs on %s",
                          ks_qtype_name(ks_cpu_act_type(ws[k])), rep % 8,
                          ks_cpu_simd_name(s));
        }
    }
}
END_TEST

/* SIMD against scalar for every token count (which changes the path
 * for some types and shapes): the same call on both. */
static void
compare_level(ks_simd s, ks_qtype t, uint64_t n, int64_t rows)
{
    static const int64_t toks[] = { 1, 2, 3, 4, 5, 8, 13 };
    uint64_t rb, ab = ks_cpu_act_bytes(t, n), stride = ab + 64;
    uint8_t *w = random_weights(t, n, rows, &rb);
    float *x = random_acts(n, 13);
    uint8_t *xq = malloc(stride * 13);
    uint64_t ldy = (uint64_t)rows + 3;
    float *ref = malloc(sizeof(float) * ldy * 13);
    float *mag = malloc(sizeof(float) * (uint64_t)rows * 13);
    float *y = malloc(sizeof(float) * ldy * 13);
    float *wd = malloc(n * sizeof(float)), *xd = malloc(n * 13 * sizeof(float));

    ks_cpu_simd_force(KS_SIMD_SCALAR);
    for (int64_t k = 0; k < 13; k++) {
        ks_cpu_quantize_act(t, x + (uint64_t)k * n, xq + (uint64_t)k * stride, n);
        ks_cpu_dequant_row(ks_cpu_act_type(t), xq + (uint64_t)k * stride, xd + (uint64_t)k * n, n);
    }
    for (int64_t r = 0; r < rows; r++) {
        ks_cpu_dequant_row(t, w + (uint64_t)r * rb, wd, n);
        for (int64_t k = 0; k < 13; k++) {
            double m = 0;
            for (uint64_t i = 0; i < n; i++)
                m += fabs((double)wd[i] * xd[(uint64_t)k * n + i]);
            mag[(uint64_t)k * rows + (uint64_t)r] = (float)m;
        }
    }
    for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
        int64_t nt = toks[ti];
        for (uint64_t i = 0; i < ldy * 13; i++)
            y[i] = ref[i] = -12345.0f;
        ks_cpu_simd_force(KS_SIMD_SCALAR);
        if (nt == 1)
            ks_cpu_matvec(t, w, rb, n, rows, xq, ref);
        else
            ks_cpu_matmul(t, w, rb, n, rows, xq, stride, nt, ref, ldy);
        ks_cpu_simd_force(s);
        if (nt == 1)
            ks_cpu_matvec(t, w, rb, n, rows, xq, y);
        else
            ks_cpu_matmul(t, w, rb, n, rows, xq, stride, nt, y, ldy);
        for (int64_t k = 0; k < nt; k++)
            for (int64_t r = 0; r < rows; r++) {
                float got = y[(uint64_t)k * ldy + (uint64_t)r];
                float want = ref[(uint64_t)k * ldy + (uint64_t)r];
                float m = mag[(uint64_t)k * rows + (uint64_t)r];
                ck_assert_msg(memcmp(&got, &want, sizeof got) == 0,
                              "%s %s n=%d rows=%d tok=%d/%d row %d: %a vs scalar %a (mag %g)",
                              ks_qtype_name(t), ks_cpu_simd_name(s), (int)n, (int)rows,
                              (int)k, (int)nt, (int)r, got, want, m);
            }
        /* padding between output rows is untouched */
        if (nt > 1)
            for (int64_t k = 0; k < nt; k++)
                for (uint64_t r = (uint64_t)rows; r < ldy; r++)
                    ck_assert_float_eq(y[(uint64_t)k * ldy + r], -12345.0f);
        /* the verification kernels: every token as a product of it alone
         * (one-token scalar), bit for bit */
        if (nt > 1) {
            ks_cpu_simd_force(KS_SIMD_SCALAR);
            for (int64_t k = 0; k < nt; k++)
                ks_cpu_matmul_rows(t, w, rb, n, rows, rows, xq + (uint64_t)k * stride, stride,
                                   1, ref + (uint64_t)k * ldy, ldy);
            ks_cpu_simd_force(s);
            ks_cpu_matmul_rows_as_one(t, w, rb, n, rows, rows, xq, stride, nt, y, ldy);
            for (int64_t k = 0; k < nt; k++)
                for (int64_t r = 0; r < rows; r++) {
                    float got = y[(uint64_t)k * ldy + (uint64_t)r];
                    float want = ref[(uint64_t)k * ldy + (uint64_t)r];
                    ck_assert_msg(memcmp(&got, &want, sizeof got) == 0,
                                  "%s %s rows_as_one n=%d rows=%d tok=%d/%d row %d: %a vs "
                                  "one-token scalar %a", ks_qtype_name(t), ks_cpu_simd_name(s),
                                  (int)n, (int)rows, (int)k, (int)nt, (int)r, got, want);
                }
        }
    }
    free(w); free(x); free(xq); free(ref); free(mag); free(y); free(wd); free(xd);
}

static void
compare_simd(ks_qtype t, uint64_t n, int64_t rows)
{
    for (int i = 0; i < N_LEVELS; i++)
        if (ks_cpu_simd_available(simd_levels[i]))
            compare_level(simd_levels[i], t, n, rows);
    ks_cpu_simd_force(simd_path());
}

START_TEST(simd_vs_scalar)
{
    static const uint64_t cols[] = { 256, 512, 1536, 2048 };
    /* 8, 16, 40: Q4_0, IQ4_NL, Q4_K take llama.cpp's repacked order */
    static const int64_t rows[] = { 1, 3, 4, 7, 8, 16, 33, 40 };
    ks_qtype t = all_types[_i];

    if (simd_path() == KS_SIMD_SCALAR) {
        printf("quant: no SIMD path on this CPU; SIMD comparisons skipped\n");
        return;
    }
    for (size_t c = 0; c < 4; c++)
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
            compare_simd(t, cols[c], rows[r]);
    /* float types also take lengths that are not a multiple of 8 or 32,
     * and 32-element types an odd number of blocks */
    if (ks_qtype_get(t)->block_elems == 1) {
        compare_simd(t, 13, 5);
        compare_simd(t, 172, 8);
        compare_simd(t, 1001, 9);
    } else if (ks_qtype_get(t)->block_elems == 32) {
        compare_simd(t, 288, 8);
        compare_simd(t, 96, 12);
    }
}
END_TEST

/* SIMD against scalar, bit for bit, on shapes that cross the kernels'
 * internal blocking: many tokens (activation chunks, 4-token groups and
 * the rest), long rows (the repacked Q4_0 kernel's per-chunk tables, and
 * past 4096 blocks its fallback), split in two row ranges as the forward
 * pass may split them. */
static void
compare_wide(ks_qtype t, uint64_t n, int64_t rows, int64_t nt)
{
    ks_simd s = simd_path();
    uint64_t rb, ab = ks_cpu_act_bytes(t, n);
    uint8_t *w = random_weights(t, n, rows, &rb);
    float *x = random_acts(n, nt);
    uint8_t *xq = malloc(ab * (uint64_t)nt);
    float *ref = malloc(sizeof(float) * (uint64_t)(rows * nt));
    float *y = malloc(sizeof(float) * (uint64_t)(rows * nt));
    int64_t half = rows / 16 * 8;

    ks_cpu_simd_force(KS_SIMD_SCALAR);
    for (int64_t k = 0; k < nt; k++)
        ks_cpu_quantize_act(t, x + (uint64_t)k * n, xq + (uint64_t)k * ab, n);
    ks_cpu_matmul(t, w, rb, n, rows, xq, ab, nt, ref, (uint64_t)rows);
    ks_cpu_simd_force(s);
    ks_cpu_matmul_rows(t, w, rb, n, rows, half, xq, ab, nt, y, (uint64_t)rows);
    ks_cpu_matmul_rows(t, w + (uint64_t)half * rb, rb, n, rows, rows - half, xq, ab,
                       nt, y + half, (uint64_t)rows);
    for (int64_t i = 0; i < rows * nt; i++)
        ck_assert_msg(memcmp(&y[i], &ref[i], sizeof(float)) == 0,
                      "%s %s n=%d rows=%d nt=%d: row %d tok %d: %a vs scalar %a",
                      ks_qtype_name(t), ks_cpu_simd_name(s), (int)n, (int)rows,
                      (int)nt, (int)(i % rows), (int)(i / rows), y[i], ref[i]);
    free(w); free(x); free(xq); free(ref); free(y);
}

START_TEST(simd_vs_scalar_wide)
{
    if (simd_path() == KS_SIMD_SCALAR)
        return;
    compare_wide(KS_QUANT_Q4_0, 768, 24, 70);
    compare_wide(KS_QUANT_Q4_0, 16384, 16, 13);
    compare_wide(KS_QUANT_Q4_0, 131104, 8, 2);
    compare_wide(KS_QUANT_Q8_0, 640, 36, 70);
    compare_wide(KS_QUANT_Q5_0, 640, 36, 70);
    compare_wide(KS_QUANT_Q4_1, 576, 20, 67);
    compare_wide(KS_QUANT_Q4_K, 1024, 24, 70);
    compare_wide(KS_QUANT_Q4_K, 1024, 20, 9);
    compare_wide(KS_QUANT_Q6_K, 2048, 16, 70);
}
END_TEST

/* ks_cpu_matmul_rows_as_one (speculative verification) against n_tok
 * separate one-token products, bit for bit, on the scalar and the SIMD
 * path: n_tok 1..9 (the 4- and 2-token groups and the rest), an odd and
 * an even number of blocks per row, a matrix whose row count is odd and
 * one that takes the repacked order (24 rows), called as the forward
 * pass calls it, in two row ranges, with padded strides. */
static void
compare_as_one(ks_qtype t, uint64_t n, int64_t rows)
{
    uint64_t rb, ab = ks_cpu_act_bytes(t, n), xs = ab + 68, ldy = (uint64_t)rows + 3;
    uint8_t *w = random_weights(t, n, rows, &rb);
    float *x = random_acts(n, 9);
    uint8_t *xq = malloc(xs * 9);
    float *one = malloc(sizeof(float) * ldy * 9);
    float *all = malloc(sizeof(float) * ldy * 9);
    float *first = malloc(sizeof(float) * ldy * 9);
    int64_t half = rows >= 16 ? rows / 16 * 8 : rows / 2;
    ks_simd paths[2] = { KS_SIMD_SCALAR, simd_path() };

    for (int64_t k = 0; k < 9; k++)
        ks_cpu_quantize_act(t, x + (uint64_t)k * n, xq + (uint64_t)k * xs, n);
    for (int p = 0; p < 2; p++) {
        ks_cpu_simd_force(paths[p]);
        for (int64_t nt = 1; nt <= 9; nt++) {
            for (uint64_t i = 0; i < ldy * 9; i++)
                one[i] = all[i] = -12345.0f;
            for (int64_t k = 0; k < nt; k++)
                ks_cpu_matmul_rows(t, w, rb, n, rows, rows, xq + (uint64_t)k * xs, xs, 1,
                                   one + (uint64_t)k * ldy, ldy);
            ks_cpu_matmul_rows_as_one(t, w, rb, n, rows, half, xq, xs, nt, all, ldy);
            ks_cpu_matmul_rows_as_one(t, w + (uint64_t)half * rb, rb, n, rows, rows - half,
                                      xq, xs, nt, all + half, ldy);
            for (uint64_t i = 0; i < ldy * 9; i++)
                ck_assert_msg(memcmp(&all[i], &one[i], sizeof(float)) == 0,
                              "%s %s n=%d rows=%d nt=%d: row %d tok %d: %a, one token %a",
                              ks_qtype_name(t), ks_cpu_simd_name(paths[p]), (int)n,
                              (int)rows, (int)nt, (int)(i % ldy), (int)(i / ldy),
                              all[i], one[i]);
            if (nt == 9 && p == 0)
                memcpy(first, all, sizeof(float) * ldy * 9);
            else if (nt == 9)
                ck_assert_msg(memcmp(first, all, sizeof(float) * ldy * 9) == 0,
                              "%s n=%d rows=%d: %s differs from scalar", ks_qtype_name(t),
                              (int)n, (int)rows, ks_cpu_simd_name(paths[p]));
        }
    }
    ks_cpu_simd_force(simd_path());
    free(w); free(x); free(xq); free(one); free(all); free(first);
}

START_TEST(rows_as_one_matches_one_token)
{
    ks_qtype t = all_types[_i];
    uint64_t be = ks_qtype_get(t)->block_elems;
    uint64_t odd = be == 256 ? 768 : be == 32 ? 96 : 13, even = be == 256 ? 1536 : 256;

    compare_as_one(t, odd, 13);
    compare_as_one(t, odd, 24);
    compare_as_one(t, even, 13);
    compare_as_one(t, even, 24);
}
END_TEST

/* ---- the thread pool's claimed work items ------------------------------ */

typedef struct claim_job {
    int64_t     n_items;
    atomic_int *count;      /* [n_items]: times each item was claimed */
    atomic_int  n_by[4];    /* items each worker claimed */
    atomic_int  done1;      /* worker 1 has run out of items */
    atomic_int  bad;        /* claims out of range */
    bool        hold0;      /* worker 0 claims only after that */
} claim_job;

static void
claim_worker(void *ctx, int ith, int nth)
{
    claim_job *j = ctx;
    int64_t i;

    (void)nth;
    if (j->hold0 && ith == 0)
        while (!atomic_load(&j->done1))
            ;
    while ((i = ks_pool_claim(j->n_items)) >= 0) {
        if (i >= j->n_items) {
            atomic_fetch_add(&j->bad, 1);
            continue;
        }
        atomic_fetch_add(&j->count[i], 1);
        atomic_fetch_add(&j->n_by[ith], 1);
    }
    if (ith == 1)
        atomic_store(&j->done1, 1);
}

START_TEST(pool_claims_every_item_once)
{
    static const int64_t counts[] = { 0, 1, 2, 5, 37, 1000 };

    for (int n_threads = 1; n_threads <= 4; n_threads++) {
        ks_pool *p = NULL;
        ck_assert_int_eq(ks_pool_create(n_threads, &p), KS_OK);
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
            for (int rep = 0; rep < 3; rep++) {
                claim_job j = { .n_items = counts[c] };
                j.count = calloc((size_t)counts[c] + 1, sizeof(atomic_int));
                /* a job run on fewer workers than the pool has */
                int n = rep == 2 && n_threads > 1 ? n_threads - 1 : n_threads;
                ks_pool_run_n(p, n, claim_worker, &j);
                ck_assert_int_eq(atomic_load(&j.bad), 0);
                for (int64_t i = 0; i < counts[c]; i++)
                    ck_assert_int_eq(atomic_load(&j.count[i]), 1);
                for (int w = n; w < 4; w++)
                    ck_assert_int_eq(atomic_load(&j.n_by[w]), 0);
                free(j.count);
            }
        ks_pool_destroy(p);
    }
}
END_TEST

START_TEST(pool_claims_take_over_a_held_worker)
{
    /* worker 0 starts claiming only once worker 1 has run out: worker 1
     * must have taken worker 0's share as well as its own */
    ks_pool *p = NULL;
    claim_job j = { .n_items = 100, .hold0 = true };

    j.count = calloc(100, sizeof(atomic_int));
    ck_assert_int_eq(ks_pool_create(2, &p), KS_OK);
    ks_pool_run(p, claim_worker, &j);
    ck_assert_int_eq(atomic_load(&j.n_by[1]), 100);
    ck_assert_int_eq(atomic_load(&j.n_by[0]), 0);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(atomic_load(&j.count[i]), 1);
    ks_pool_destroy(p);
    free(j.count);
}
END_TEST

START_TEST(pool_claims_outside_a_job_count_up)
{
    for (int rep = 0; rep < 2; rep++) {
        for (int64_t i = 0; i < 3; i++)
            ck_assert_int_eq(ks_pool_claim(3), i);
        ck_assert_int_eq(ks_pool_claim(3), -1);
    }
    ck_assert_int_eq(ks_pool_claim(0), -1);
}
END_TEST

/* ---- bit-exactness with llama.cpp ------------------------------------- */

/* Deterministic inputs, generated alike by the program that recorded the
 * expected hashes from llama.cpp (its ggml mul_mat through the CPU
 * backend, weights repacked where it repacks them). */
static uint64_t gen_state;

static float
gen_f(void) /* [-2, 2) */
{
    gen_state = gen_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((int64_t)(gen_state >> 40) - (1 << 23)) / (float)(1 << 22);
}

static uint64_t
fnv_floats(const float *v, size_t n)
{
    uint64_t hsh = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, &v[i], 4);
        for (int k = 0; k < 4; k++) {
            hsh ^= (b >> (8 * k)) & 0xFF;
            hsh *= 0x100000001b3ull;
        }
    }
    return hsh;
}

/* FNV-1a of llama.cpp's k x m by k x nt products (its 0c1e570 build of
 * llama-cpp-python 0.3.36, x86-64 AVX2/FMA/F16C): vec_dot for one token,
 * llamafile's sgemm, repacked GEMV/GEMM for m % 8 == 0 (Q4_0, Q4_K,
 * IQ4_NL), the tiled K-quant kernel for 9 tokens, float tails for
 * k = 172, an odd block count for k = 288. */
static const struct {
    ks_qtype t;
    int64_t  k, m, nt;
    uint64_t hash;
} peer_mm[] = {
    { KS_QUANT_F32, 256, 8, 1, 0xcd3a8faeafec0520ull },
    { KS_QUANT_F32, 256, 8, 5, 0xcdfa0601cbc2bb4dull },
    { KS_QUANT_F32, 256, 8, 9, 0x1a8eab4fce72ac8full },
    { KS_QUANT_F32, 256, 12, 1, 0x9c7d699653eb9083ull },
    { KS_QUANT_F32, 256, 12, 5, 0x61d5d0aba2998465ull },
    { KS_QUANT_F32, 256, 12, 9, 0x07f2bddd9a709c7full },
    { KS_QUANT_F32, 172, 9, 1, 0x2f657c2a45200a9dull },
    { KS_QUANT_F32, 172, 9, 5, 0x49d08a8d7e645afdull },
    { KS_QUANT_F32, 172, 9, 9, 0x93a7a418dfe5bb68ull },
    { KS_QUANT_F16, 256, 8, 1, 0x9c8ab81765c0d192ull },
    { KS_QUANT_F16, 256, 8, 5, 0x2912f117c6f6c7ddull },
    { KS_QUANT_F16, 256, 8, 9, 0x79406244f09aeb72ull },
    { KS_QUANT_F16, 256, 12, 1, 0x4be33a8c5b3cd88bull },
    { KS_QUANT_F16, 256, 12, 5, 0x2869cb27abcff070ull },
    { KS_QUANT_F16, 256, 12, 9, 0xeaa6f8716007305aull },
    { KS_QUANT_F16, 172, 9, 1, 0xf72ca6f2b9676547ull },
    { KS_QUANT_F16, 172, 9, 5, 0xb17ef55133905974ull },
    { KS_QUANT_F16, 172, 9, 9, 0x5bfefaec01499fe5ull },
    { KS_QUANT_BF16, 256, 8, 1, 0xfc0bc043eede4103ull },
    { KS_QUANT_BF16, 256, 8, 5, 0xab43d0b307390b3bull },
    { KS_QUANT_BF16, 256, 8, 9, 0x3c54a61b715b15b4ull },
    { KS_QUANT_BF16, 256, 12, 1, 0x7c110b8a73f623c6ull },
    { KS_QUANT_BF16, 256, 12, 5, 0x66700f70bd4befbeull },
    { KS_QUANT_BF16, 256, 12, 9, 0x0f75210174bdd3acull },
    { KS_QUANT_BF16, 172, 9, 1, 0xb954697fb6020703ull },
    { KS_QUANT_BF16, 172, 9, 5, 0x79a8088de871e9a9ull },
    { KS_QUANT_BF16, 172, 9, 9, 0x05532fe5bdaeee6cull },
    { KS_QUANT_Q4_0, 256, 8, 1, 0x2eddc3edec5cf468ull },
    { KS_QUANT_Q4_0, 256, 8, 5, 0x18bafa672b27eab0ull },
    { KS_QUANT_Q4_0, 256, 8, 9, 0x64bd495f86615724ull },
    { KS_QUANT_Q4_0, 256, 12, 1, 0xad61fb3fbcb415e2ull },
    { KS_QUANT_Q4_0, 256, 12, 5, 0xcf89078489226ec2ull },
    { KS_QUANT_Q4_0, 256, 12, 9, 0x0b524835ddea5463ull },
    { KS_QUANT_Q4_0, 288, 9, 1, 0xb2b7c665099a478full },
    { KS_QUANT_Q4_0, 288, 9, 5, 0x747f9800e8379403ull },
    { KS_QUANT_Q4_0, 288, 9, 9, 0x0db3e05d8152d985ull },
    { KS_QUANT_Q4_1, 256, 8, 1, 0x78d3f1c95ff6d552ull },
    { KS_QUANT_Q4_1, 256, 8, 5, 0x9cca038939b38ea3ull },
    { KS_QUANT_Q4_1, 256, 8, 9, 0x19c0daf047425a88ull },
    { KS_QUANT_Q4_1, 256, 12, 1, 0x4ae56321cc65094cull },
    { KS_QUANT_Q4_1, 256, 12, 5, 0xb46f42815324c608ull },
    { KS_QUANT_Q4_1, 256, 12, 9, 0x20fdd3abe104bd77ull },
    { KS_QUANT_Q4_1, 288, 9, 1, 0xbf7ebd83ea58477eull },
    { KS_QUANT_Q4_1, 288, 9, 5, 0xa3fa22cb27a50100ull },
    { KS_QUANT_Q4_1, 288, 9, 9, 0xa6a916bd3d42993cull },
    { KS_QUANT_Q5_0, 256, 8, 1, 0xf467112c1217542dull },
    { KS_QUANT_Q5_0, 256, 8, 5, 0x0a3f6cad4acc9a13ull },
    { KS_QUANT_Q5_0, 256, 8, 9, 0x958f9e1e6ac00054ull },
    { KS_QUANT_Q5_0, 256, 12, 1, 0x62c42c856d4b8f42ull },
    { KS_QUANT_Q5_0, 256, 12, 5, 0xe7e5354d0cdcaef2ull },
    { KS_QUANT_Q5_0, 256, 12, 9, 0x8b95adad2c4ce512ull },
    { KS_QUANT_Q5_0, 288, 9, 1, 0x810c6e6c584e47daull },
    { KS_QUANT_Q5_0, 288, 9, 5, 0xacf16318c318a6c7ull },
    { KS_QUANT_Q5_0, 288, 9, 9, 0x4ea50f93b043dc2aull },
    { KS_QUANT_Q5_1, 256, 8, 1, 0x65aad4f902698491ull },
    { KS_QUANT_Q5_1, 256, 8, 5, 0x9536c327ef31c04bull },
    { KS_QUANT_Q5_1, 256, 8, 9, 0x17ee2e69e52d6826ull },
    { KS_QUANT_Q5_1, 256, 12, 1, 0xf0f49ab4fea2f51bull },
    { KS_QUANT_Q5_1, 256, 12, 5, 0xd1048c313fd53e37ull },
    { KS_QUANT_Q5_1, 256, 12, 9, 0x16eb9addcaed9f06ull },
    { KS_QUANT_Q5_1, 288, 9, 1, 0x849ada8f4ca60c47ull },
    { KS_QUANT_Q5_1, 288, 9, 5, 0xf75be6cba56e355bull },
    { KS_QUANT_Q5_1, 288, 9, 9, 0x190524f4e8029baaull },
    { KS_QUANT_Q8_0, 256, 8, 1, 0xb885da2ede897400ull },
    { KS_QUANT_Q8_0, 256, 8, 5, 0x03c6e1c3f3e7193eull },
    { KS_QUANT_Q8_0, 256, 8, 9, 0xbbe0e57714a23e4full },
    { KS_QUANT_Q8_0, 256, 12, 1, 0x70ed017623cf74ffull },
    { KS_QUANT_Q8_0, 256, 12, 5, 0xd5f1b08093e06fcfull },
    { KS_QUANT_Q8_0, 256, 12, 9, 0xf3e68cf554ab3f03ull },
    { KS_QUANT_Q8_0, 288, 9, 1, 0xf373cc39f88b5176ull },
    { KS_QUANT_Q8_0, 288, 9, 5, 0xe09b22c2c23ea15eull },
    { KS_QUANT_Q8_0, 288, 9, 9, 0xdae257ef41e43f5cull },
    { KS_QUANT_Q2_K, 256, 8, 1, 0x0025e532cdb45c25ull },
    { KS_QUANT_Q2_K, 256, 8, 5, 0x7bd660c22b84227bull },
    { KS_QUANT_Q2_K, 256, 8, 9, 0x6f995913f89166c9ull },
    { KS_QUANT_Q2_K, 256, 12, 1, 0xa9a94d79f9036832ull },
    { KS_QUANT_Q2_K, 256, 12, 5, 0x89400fb5a8a06c55ull },
    { KS_QUANT_Q2_K, 256, 12, 9, 0xd92d544ccca66b01ull },
    { KS_QUANT_Q2_K, 512, 9, 1, 0xd848bdfd5b06ff2bull },
    { KS_QUANT_Q2_K, 512, 9, 5, 0xd68c9d79fae81aaaull },
    { KS_QUANT_Q2_K, 512, 9, 9, 0x8f38f6c8fcaf11f8ull },
    { KS_QUANT_Q3_K, 256, 8, 1, 0x8296e8108672363eull },
    { KS_QUANT_Q3_K, 256, 8, 5, 0xdf1c129eedeedb61ull },
    { KS_QUANT_Q3_K, 256, 8, 9, 0xa70891c0a7ef2319ull },
    { KS_QUANT_Q3_K, 256, 12, 1, 0xa17d1ecb05182228ull },
    { KS_QUANT_Q3_K, 256, 12, 5, 0xddaf946e012ed327ull },
    { KS_QUANT_Q3_K, 256, 12, 9, 0x254fdbc951f7f247ull },
    { KS_QUANT_Q3_K, 512, 9, 1, 0xf6500b5f73503309ull },
    { KS_QUANT_Q3_K, 512, 9, 5, 0x5b99b97a4406657aull },
    { KS_QUANT_Q3_K, 512, 9, 9, 0xd40c2147a20ade19ull },
    { KS_QUANT_Q4_K, 256, 8, 1, 0x9bfc0fedc31f6a80ull },
    { KS_QUANT_Q4_K, 256, 8, 5, 0xf60e0e0d3e8d1242ull },
    { KS_QUANT_Q4_K, 256, 8, 9, 0xa7cfec18d50ea077ull },
    { KS_QUANT_Q4_K, 256, 12, 1, 0x5caf723ec8eaf388ull },
    { KS_QUANT_Q4_K, 256, 12, 5, 0x1165bc74d0f2bc56ull },
    { KS_QUANT_Q4_K, 256, 12, 9, 0x5a8a9f024808b8c0ull },
    { KS_QUANT_Q4_K, 512, 9, 1, 0x091af574eb2ea41eull },
    { KS_QUANT_Q4_K, 512, 9, 5, 0x0b109a79d99000fdull },
    { KS_QUANT_Q4_K, 512, 9, 9, 0x58b576842ba1f13cull },
    { KS_QUANT_Q5_K, 256, 8, 1, 0x14b70751520bc7ebull },
    { KS_QUANT_Q5_K, 256, 8, 5, 0xd9ac5192a2ad22e0ull },
    { KS_QUANT_Q5_K, 256, 8, 9, 0x511020f486c5546cull },
    { KS_QUANT_Q5_K, 256, 12, 1, 0xd1e07ab73105793dull },
    { KS_QUANT_Q5_K, 256, 12, 5, 0xf6c95a8649098a5bull },
    { KS_QUANT_Q5_K, 256, 12, 9, 0x83cc8968188012f7ull },
    { KS_QUANT_Q5_K, 512, 9, 1, 0x82c1fa304e028058ull },
    { KS_QUANT_Q5_K, 512, 9, 5, 0xf6c59b042e8cdac6ull },
    { KS_QUANT_Q5_K, 512, 9, 9, 0x49c42e83ba190809ull },
    { KS_QUANT_Q6_K, 256, 8, 1, 0xefbaebf04c7d1916ull },
    { KS_QUANT_Q6_K, 256, 8, 5, 0xfc7e86a9a963de5eull },
    { KS_QUANT_Q6_K, 256, 8, 9, 0xe4990c8861580323ull },
    { KS_QUANT_Q6_K, 256, 12, 1, 0x24a4012588030e14ull },
    { KS_QUANT_Q6_K, 256, 12, 5, 0xaabd9ed7ea7502fcull },
    { KS_QUANT_Q6_K, 256, 12, 9, 0xe09a522631fbc89bull },
    { KS_QUANT_Q6_K, 512, 9, 1, 0x7952fcd301ac8335ull },
    { KS_QUANT_Q6_K, 512, 9, 5, 0x7f22585c96536dd8ull },
    { KS_QUANT_Q6_K, 512, 9, 9, 0x955f9e76b3d54b95ull },
    { KS_QUANT_IQ4_NL, 256, 8, 1, 0x70763aa58fdf0f35ull },
    { KS_QUANT_IQ4_NL, 256, 8, 5, 0x288a68162c0f2402ull },
    { KS_QUANT_IQ4_NL, 256, 8, 9, 0xeaf7f99b9dca9ceaull },
    { KS_QUANT_IQ4_NL, 256, 12, 1, 0x8ae04498e53d4138ull },
    { KS_QUANT_IQ4_NL, 256, 12, 5, 0x7c5c2377e13e99c8ull },
    { KS_QUANT_IQ4_NL, 256, 12, 9, 0x2914430537ddc5b4ull },
    { KS_QUANT_IQ4_NL, 288, 9, 1, 0xc35e0d935a5ed2e9ull },
    { KS_QUANT_IQ4_NL, 288, 9, 5, 0x0bb8c28794a25c86ull },
    { KS_QUANT_IQ4_NL, 288, 9, 9, 0x3928b3c14a236520ull },
};

static const struct { int len; uint64_t hash; } peer_swiglu[] = {
    { 8, 0x2b07418289f10fa3ull },
    { 172, 0x30d15c597a2cbba7ull },
    { 1536, 0xa234f16bb7709953ull },
};

/* FNV-1a of llama.cpp's flash attention (ggml_flash_attn_ext, f16 K/V,
 * causal mask, scale 1/8) on deterministic data: under 64 queries its
 * one-row kernel (f16 query and value sums), from 64 on its tiled one. */
static const struct { int hd, n_head, n_head_kv, n_kv, n_q; uint64_t hash; } peer_attn[] = {
    { 64, 2, 1, 96, 5, 0xedc55312353fbaadull },
    { 64, 4, 2, 200, 40, 0x655d32b13d5d071dull },
    { 8, 8, 4, 120, 30, 0x5f7c75d314ce8608ull },
    { 64, 2, 1, 96, 70, 0xdf8beb19d1f857fcull },
    { 8, 2, 1, 80, 66, 0x87b492ef2c6711edull },
};

START_TEST(matmul_matches_llama_cpp)
{
    const ks_qtype t = peer_mm[_i].t;
    const int64_t k = peer_mm[_i].k, m = peer_mm[_i].m, nt = peer_mm[_i].nt;
    uint64_t rb = ks_qtype_row_bytes(t, (uint64_t)k), ab = ks_cpu_act_bytes(t, (uint64_t)k);
    uint8_t *w = malloc(rb * (uint64_t)m), *xq = malloc(ab * (uint64_t)nt);
    float *src = malloc(sizeof(float) * (uint64_t)k);
    float *x = malloc(sizeof(float) * (uint64_t)(k * nt));
    float *y = malloc(sizeof(float) * (uint64_t)(m * nt));
    const ks_simd paths[2] = { KS_SIMD_SCALAR, simd_path() };

    gen_state = (uint64_t)t * 1000003u + (uint64_t)k * 131u + (uint64_t)m * 7u + (uint64_t)nt;
    for (int64_t r = 0; r < m; r++) {
        float sc = 0.5f + (float)(r % 5) * 0.25f;
        for (int64_t i = 0; i < k; i++)
            src[i] = gen_f() * sc;
        ks_cpu_quantize_row(t, src, w + (uint64_t)r * rb, (uint64_t)k);
    }
    for (int64_t i = 0; i < k * nt; i++)
        x[i] = gen_f() * 1.5f;
    for (int p = 0; p < 2; p++) {
        ks_cpu_simd_force(paths[p]);
        for (int64_t j = 0; j < nt; j++)
            ks_cpu_quantize_act(t, x + j * k, xq + (uint64_t)j * ab, (uint64_t)k);
        memset(y, 0, sizeof(float) * (uint64_t)(m * nt));
        /* in two row ranges, as the forward pass splits work */
        ks_cpu_matmul_rows(t, w, rb, (uint64_t)k, m, m / 2, xq, ab, nt, y, (uint64_t)m);
        ks_cpu_matmul_rows(t, w + (uint64_t)(m / 2) * rb, rb, (uint64_t)k, m, m - m / 2,
                           xq, ab, nt, y + m / 2, (uint64_t)m);
        ck_assert_msg(fnv_floats(y, (size_t)(m * nt)) == peer_mm[_i].hash,
                      "%s k=%d m=%d nt=%d (%s): not llama.cpp's result (y0 %a)",
                      ks_qtype_name(t), (int)k, (int)m, (int)nt,
                      ks_cpu_simd_name(paths[p]), y[0]);
    }
    ks_cpu_simd_force(simd_path());
    free(w); free(xq); free(src); free(x); free(y);
}
END_TEST

START_TEST(attention_matches_llama_cpp)
{
    const int hd = peer_attn[_i].hd, nh = peer_attn[_i].n_head;
    const int nkv = peer_attn[_i].n_head_kv, n_kv = peer_attn[_i].n_kv;
    const int n_q = peer_attn[_i].n_q;
    const uint64_t row_bytes = (uint64_t)hd * (uint64_t)nkv * 2;
    float *q = malloc(sizeof(float) * (size_t)(hd * n_q * nh));
    uint16_t *kc = malloc(row_bytes * (uint64_t)n_kv), *vc = malloc(row_bytes * (uint64_t)n_kv);
    uint16_t *qh = malloc(sizeof(uint16_t) * (size_t)hd);
    float *out = malloc(sizeof(float) * (size_t)(hd * n_q * nh));
    float *scores = malloc(sizeof(float) * (size_t)(n_kv > 64 ? n_kv : 64));
    float *work = malloc(sizeof(float) * (size_t)hd);
    const ks_simd paths[2] = { KS_SIMD_SCALAR, simd_path() };

    gen_state = 1234u + (uint64_t)n_q * 17u + (uint64_t)hd;
    for (int i = 0; i < hd * n_q * nh; i++)
        q[i] = gen_f();
    for (int i = 0; i < hd * nkv * n_kv; i++)
        kc[i] = ks_f32_to_fp16(gen_f());
    for (int i = 0; i < hd * nkv * n_kv; i++)
        vc[i] = ks_f32_to_fp16(gen_f());
    for (int p = 0; p < 2; p++) {
        if (p == 1 && paths[1] != KS_SIMD_AVX2)
            break;
        ks_cpu_simd_force(paths[p]);
        for (int i = 0; i < n_q; i++)
            for (int h = 0; h < nh; h++) {
                const float *qi = q + ((size_t)i * (size_t)nh + (size_t)h) * (size_t)hd;
                float *o = out + ((size_t)i * (size_t)nh + (size_t)h) * (size_t)hd;
                const uint16_t *k0 = kc + (size_t)(h / (nh / nkv)) * (size_t)hd;
                const uint16_t *v0 = vc + (size_t)(h / (nh / nkv)) * (size_t)hd;
                uint32_t n_keys = (uint32_t)(n_kv - n_q + i + 1);
                if (n_q >= 64) {
                    ks_cpu_attn_tiled(KS_QUANT_F16, qi, k0, v0, row_bytes, (uint32_t)hd,
                                      0, n_keys, 0.125f, scores, work, o);
                } else {
                    ks_cpu_quantize_act(KS_QUANT_F16, qi, qh, (uint64_t)hd);
                    ks_cpu_attn_scores_f16(k0, row_bytes, (uint32_t)hd, n_keys, qh, scores);
                    ks_cpu_attn_accum(KS_QUANT_F16, v0, row_bytes, (uint32_t)hd, n_keys,
                                      scores, 0.125f, work, o);
                }
            }
        ck_assert_msg(fnv_floats(out, (size_t)(hd * n_q * nh)) == peer_attn[_i].hash,
                      "attention hd=%d n_q=%d (%s): not llama.cpp's result (out0 %a)",
                      hd, n_q, ks_cpu_simd_name(paths[p]), out[0]);
    }
    ks_cpu_simd_force(simd_path());
    free(q); free(kc); free(vc); free(qh); free(out); free(scores); free(work);
}
END_TEST

START_TEST(swiglu_matches_llama_cpp)
{
    const int len = peer_swiglu[_i].len;
    float *g = malloc(sizeof(float) * (size_t)len), *u = malloc(sizeof(float) * (size_t)len);
    float *y = malloc(sizeof(float) * (size_t)len), *y2 = malloc(sizeof(float) * (size_t)len);

    gen_state = 77u + (uint64_t)len;
    for (int i = 0; i < len; i++) {
        g[i] = gen_f() * (i % 7 == 0 ? 60.0f : 4.0f);
        u[i] = gen_f();
    }
    memcpy(y, g, sizeof(float) * (size_t)len);
    memcpy(y2, g, sizeof(float) * (size_t)len);
    ks_cpu_simd_force(KS_SIMD_SCALAR);
    ks_cpu_swiglu(y, u, (uint64_t)len, 0, (uint64_t)len);
    ck_assert_msg(fnv_floats(y, (size_t)len) == peer_swiglu[_i].hash,
                  "swiglu %d (scalar): not llama.cpp's", len);
    ks_cpu_simd_force(simd_path());
    /* in pieces that do not follow the 8-column groups */
    ks_cpu_swiglu(y2, u, (uint64_t)len, 0, (uint64_t)len / 3);
    ks_cpu_swiglu(y2, u, (uint64_t)len, (uint64_t)len / 3, (uint64_t)len);
    ck_assert_msg(memcmp(y, y2, sizeof(float) * (size_t)len) == 0,
                  "swiglu %d: %s differs from scalar", len, ks_cpu_simd_name(simd_path()));
    free(g); free(u); free(y); free(y2);
}
END_TEST

/* llama.cpp's GELU as the forward pass computed it before the table:
 * the fp16 value of x through the formula its table holds (GCC fused
 * 1 + a*x*x), rounded to fp16; exact outside (-10, 10). */
static float
gelu_formula(float x)
{
    float xh, y;

    if (x <= -10.0f)
        return 0.0f;
    if (x >= 10.0f)
        return x;
    xh = ks_fp16_to_f32(ks_f32_to_fp16(x));
    y = 0.5f * xh * (1.0f + tanhf(0.79788456080286535588f * xh *
                                  fmaf(0.044715f * xh, xh, 1.0f)));
    return ks_fp16_to_f32(ks_f32_to_fp16(y));
}

START_TEST(gelu_matches_formula)
{
    enum { N = 4099 };
    static const float edge[] = { -10.0f, 10.0f, -9.999f, 9.999f, -10.001f,
                                  10.001f, 0.0f, -0.0f, 1e-8f, -1e-8f,
                                  65504.0f, 1e6f, -1e6f, INFINITY, -INFINITY,
                                  NAN, 3.0e-5f, -2.0f, 0.5f, 70000.0f };
    float *g = malloc(sizeof(float) * N), *u = malloc(sizeof(float) * N);
    float *y = malloc(sizeof(float) * N);
    const ks_simd paths[2] = { KS_SIMD_SCALAR, simd_path() };

    gen_state = 4242u;
    for (int i = 0; i < N; i++) {
        g[i] = gen_f() * (i % 5 == 0 ? 8.0f : 3.0f);
        u[i] = i % 11 == 0 ? -gen_f() * 0.0f : gen_f();
    }
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++)
        g[17 * i + 3] = edge[i];
    /* fp16 values spread over the whole table, NaNs and infinities too */
    for (int i = 0; i < 2048; i++)
        g[N - 2048 + i] = ks_fp16_to_f32((uint16_t)(i * 32 + (i % 32)));
    for (int p = 0; p < 2; p++) {
        ks_cpu_simd_force(paths[p]);
        memcpy(y, g, sizeof(float) * N);
        /* in pieces that do not follow 8-value groups */
        ks_cpu_gelu_mul(y, u, 5);
        ks_cpu_gelu_mul(y + 5, u + 5, N / 2 - 5);
        ks_cpu_gelu_mul(y + N / 2, u + N / 2, N - N / 2);
        for (int i = 0; i < N; i++) {
            float want = gelu_formula(g[i]) * u[i];
            ck_assert_msg(memcmp(&y[i], &want, 4) == 0 || (isnan(want) && isnan(y[i])),
                          "gelu (%s) x=%a u=%a: %a, expected %a",
                          ks_cpu_simd_name(paths[p]), g[i], u[i], y[i], want);
        }
    }
    ks_cpu_simd_force(simd_path());
    free(g); free(u); free(y);
}
END_TEST

/* Every NEON level the CPU has (qemu's "max" model has all three), not
 * only the best, against scalar bit for bit: the 32-element types on
 * shapes that take each path (vec_dot, and with 8, 16 or 40 rows the
 * repacked order that the i8mm level sums with smmla), odd row and token
 * counts, and the wide shapes. */
START_TEST(simd_each_level_vs_scalar)
{
    static const ks_qtype types[] = { KS_QUANT_Q4_0, KS_QUANT_Q4_1, KS_QUANT_Q5_0,
                                      KS_QUANT_Q5_1, KS_QUANT_Q8_0, KS_QUANT_IQ4_NL };
    static const int64_t rows[] = { 1, 3, 8, 13, 40 };
    ks_simd s = (ks_simd)_i;

    if (!ks_cpu_simd_available(s)) {
        printf("quant: no %s on this CPU; its comparison skipped\n", ks_cpu_simd_name(s));
        return;
    }
    level_under_test = s;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++)
            compare_simd(types[k], 96, rows[r]);
        compare_simd(types[k], 512, 16);
        compare_wide(types[k], 640, 24, 11);
    }
    level_under_test = KS_SIMD_COUNT;
    ks_cpu_simd_force(simd_path());
}
END_TEST

/* The level chosen from HWCAP is the one expected of this CPU:
 * ci/arm.sh runs the suite under qemu CPU models with and without
 * dotprod and i8mm and names the level each must get in
 * KESTREL_TEST_EXPECT_SIMD. No level above the chosen one is offered. */
START_TEST(simd_selection_matches_cpu)
{
    const char *want = getenv("KESTREL_TEST_EXPECT_SIMD");
    ks_simd best = KS_SIMD_SCALAR;

    for (int s = 0; s < KS_SIMD_COUNT; s++)
        if (ks_cpu_simd_available((ks_simd)s))
            best = (ks_simd)s;
    if (!want || !*want) {
        printf("quant: KESTREL_TEST_EXPECT_SIMD unset; the best path here is %s\n",
               ks_cpu_simd_name(best));
        return;
    }
    ck_assert_str_eq(ks_cpu_simd_name(best), want);
    if (!getenv("KESTREL_SIMD"))
        ck_assert_str_eq(ks_cpu_simd_name(ks_cpu_simd()), want);
    if (best >= KS_SIMD_NEON && best <= KS_SIMD_NEON_I8MM)
        for (int s = KS_SIMD_NEON; s <= (int)best; s++)
            ck_assert_msg(ks_cpu_simd_available((ks_simd)s), "%s missing below %s",
                          ks_cpu_simd_name((ks_simd)s), want);
}
END_TEST

START_TEST(simd_force_and_env_names)
{
    ks_simd s = ks_cpu_simd();
    ck_assert(ks_cpu_simd_available(s));
    ks_cpu_simd_force(KS_SIMD_SCALAR);
    ck_assert_int_eq(ks_cpu_simd(), KS_SIMD_SCALAR);
    /* forcing a path the CPU lacks falls back to scalar */
    ks_simd other = ks_cpu_simd_available(KS_SIMD_AVX2) ? KS_SIMD_NEON : KS_SIMD_AVX2;
    ks_cpu_simd_force(other);
    ck_assert_int_eq(ks_cpu_simd(), KS_SIMD_SCALAR);
    ks_cpu_simd_force(s);
    ck_assert_int_eq(ks_cpu_simd(), s);
}
END_TEST

static Suite *
quant_suite(void)
{
    Suite *s = suite_create("quant");
    TCase *tc;

    tc = tcase_create("fp16");
    tcase_add_test(tc, fp16_exact_values);
    tcase_add_test(tc, fp16_rounding_ties_to_even);
    tcase_add_test(tc, fp16_subnormals);
    tcase_add_test(tc, fp16_inf_nan);
    tcase_add_test(tc, fp16_round_trip_all);
    tcase_add_test(tc, bf16_conversion);
    suite_add_tcase(s, tc);

    tc = tcase_create("layout");
    tcase_add_test(tc, layout_q4_0);
    tcase_add_test(tc, layout_q4_1);
    tcase_add_test(tc, layout_q5_0);
    tcase_add_test(tc, layout_q5_1);
    tcase_add_test(tc, layout_q8_0_iq4_nl);
    tcase_add_test(tc, layout_q4_k);
    tcase_add_test(tc, layout_q5_k);
    tcase_add_test(tc, layout_q6_k);
    tcase_add_test(tc, layout_q2_k);
    tcase_add_test(tc, layout_q3_k);
    tcase_add_test(tc, layout_float_types);
    suite_add_tcase(s, tc);

    tc = tcase_create("activation");
    tcase_add_test(tc, act_q8_0_q8_1_formulas);
    tcase_add_test(tc, act_q8_k_formula);
    tcase_add_test(tc, act_types_and_sizes);
    tcase_add_test(tc, act_dequant_close_to_input);
    suite_add_tcase(s, tc);

    tc = tcase_create("quantize");
    tcase_add_loop_test(tc, quantize_round_trip, 0,
                        (int)(sizeof rt_bounds / sizeof rt_bounds[0]));
    tcase_add_test(tc, quantize_matches_llama_ref_q4_0_q8_0);
    suite_add_tcase(s, tc);

    tc = tcase_create("dot");
    tcase_add_loop_test(tc, dot_scalar_vs_float_reference, 0,
                        (int)(sizeof dot_tol / sizeof dot_tol[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("simd");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, simd_act_quant_bit_exact);
    tcase_add_loop_test(tc, simd_vs_scalar, 0, (int)N_TYPES);
    tcase_add_test(tc, simd_vs_scalar_wide);
    tcase_add_loop_test(tc, rows_as_one_matches_one_token, 0, (int)N_TYPES);
    tcase_add_test(tc, simd_force_and_env_names);
    tcase_add_loop_test(tc, simd_each_level_vs_scalar, KS_SIMD_NEON, KS_SIMD_COUNT);
    tcase_add_test(tc, simd_selection_matches_cpu);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_add_test(tc, pool_claims_every_item_once);
    tcase_add_test(tc, pool_claims_take_over_a_held_worker);
    tcase_add_test(tc, pool_claims_outside_a_job_count_up);
    suite_add_tcase(s, tc);

    tc = tcase_create("llama_cpp");
    tcase_add_loop_test(tc, matmul_matches_llama_cpp, 0,
                        (int)(sizeof peer_mm / sizeof peer_mm[0]));
    tcase_add_test(tc, gelu_matches_formula);
    tcase_add_loop_test(tc, swiglu_matches_llama_cpp, 0,
                        (int)(sizeof peer_swiglu / sizeof peer_swiglu[0]));
    tcase_add_loop_test(tc, attention_matches_llama_cpp, 0,
                        (int)(sizeof peer_attn / sizeof peer_attn[0]));
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(quant_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
