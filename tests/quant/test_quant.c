/* Tests of the CPU quantization kernels (runtime/cpu/quant.h).
 *
 * - fp16/bf16 conversion: exact values, rounding ties, subnormals, inf, NaN.
 * - layouts: hand-built blocks of every type whose dequantized elements are
 *   worked out by hand from shared/reference/gguf-and-quants.md section 2.
 * - activation quantizers: the llama.cpp formulas on hand-picked values.
 * - weight quantizers: quantize -> dequantize error bounds per type.
 * - dot products: scalar kernels against dequantized weights . dequantized
 *   activations in double.
 * - SIMD (AVX2 or NEON) against scalar on random data, odd and even
 *   shapes, matvec and matmul; skipped with a message without the ISA. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    ck_assert(ks_cpu_simd_available(KS_SIMD_SCALAR));
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

static ks_simd
simd_path(void)
{
    if (ks_cpu_simd_available(KS_SIMD_AVX2))
        return KS_SIMD_AVX2;
    if (ks_cpu_simd_available(KS_SIMD_NEON))
        return KS_SIMD_NEON;
    return KS_SIMD_SCALAR;
}

START_TEST(simd_act_quant_bit_exact)
{
    enum { N = 2048 };
    static float x[N];
    static uint8_t a[N * 4], b[N * 4];
    const ks_qtype ws[] = { KS_QUANT_Q4_0, KS_QUANT_Q4_1, KS_QUANT_Q4_K,
                            KS_QUANT_F16, KS_QUANT_BF16, KS_QUANT_F32 };
    ks_simd s = simd_path();

    if (s == KS_SIMD_SCALAR) {
        printf("quant: no SIMD path on this CPU; SIMD comparisons skipped\n");
        return;
    }
    for (int rep = 0; rep < 8; rep++) {
        for (int i = 0; i < N; i++)
            x[i] = rnd_gauss() * (rep + 1);
        if (rep == 1) /* exact ties: k + 0.5 after scaling by 127/amax */
            for (int i = 0; i < N; i++)
                x[i] = (i % 32 == 0) ? 127.0f : (float)((int)(rnd_u32() % 254) - 127) + 0.5f;
        if (rep == 2) /* fp16 specials, subnormals, ties */
            for (int i = 0; i < N; i += 8) {
                x[i] = 0x1.8p-24f; x[i + 1] = 65520.0f; x[i + 2] = -INFINITY;
                x[i + 3] = 1.0f + 0x1p-11f; x[i + 4] = 0x1p-30f; x[i + 5] = NAN;
                x[i + 6] = -0.0f; x[i + 7] = 1e-7f;
            }
        if (rep == 3) /* largest magnitude twice with both signs */
            for (int i = 0; i < N; i += 256) {
                x[i + 7] = -50.0f;
                x[i + 100] = 50.0f;
            }
        if (rep == 4)
            memset(x, 0, 256 * sizeof(float)); /* an all-zero block */
        for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++) {
            if (rep == 2 && ws[k] != KS_QUANT_F16 && ws[k] != KS_QUANT_BF16)
                continue;
            uint64_t nb = ks_cpu_act_bytes(ws[k], N);
            ks_cpu_simd_force(KS_SIMD_SCALAR);
            ks_cpu_quantize_act(ws[k], x, a, N);
            ks_cpu_simd_force(s);
            ks_cpu_quantize_act(ws[k], x, b, N);
            ck_assert_msg(memcmp(a, b, nb) == 0, "%s act (rep %d) differs",
                          ks_qtype_name(ks_cpu_act_type(ws[k])), rep);
        }
    }
}
END_TEST

static void
compare_simd(ks_qtype t, uint64_t n, int64_t rows)
{
    static const int64_t toks[] = { 1, 2, 3, 5, 8, 13 };
    ks_simd s = simd_path();
    uint64_t rb, ab = ks_cpu_act_bytes(t, n), stride = ab + 64;
    uint8_t *w = random_weights(t, n, rows, &rb);
    float *x = random_acts(n, 13);
    uint8_t *xq = malloc(stride * 13);
    float *ref = malloc(sizeof(float) * (uint64_t)rows * 13);
    float *mag = malloc(sizeof(float) * (uint64_t)rows * 13);
    uint64_t ldy = (uint64_t)rows + 3;
    float *y = malloc(sizeof(float) * ldy * 13);
    float *wd = malloc(n * sizeof(float)), *xd = malloc(n * 13 * sizeof(float));

    ks_cpu_simd_force(KS_SIMD_SCALAR);
    for (int64_t k = 0; k < 13; k++) {
        ks_cpu_quantize_act(t, x + (uint64_t)k * n, xq + (uint64_t)k * stride, n);
        ks_cpu_dequant_row(ks_cpu_act_type(t), xq + (uint64_t)k * stride, xd + (uint64_t)k * n, n);
        ks_cpu_matvec(t, w, rb, n, rows, xq + (uint64_t)k * stride, ref + (uint64_t)k * rows);
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
    ks_cpu_simd_force(s);
    for (size_t ti = 0; ti < sizeof toks / sizeof toks[0]; ti++) {
        int64_t nt = toks[ti];
        for (uint64_t i = 0; i < ldy * 13; i++)
            y[i] = -12345.0f;
        if (nt == 1)
            ks_cpu_matvec(t, w, rb, n, rows, xq, y);
        else
            ks_cpu_matmul(t, w, rb, n, rows, xq, stride, nt, y, ldy);
        for (int64_t k = 0; k < nt; k++)
            for (int64_t r = 0; r < rows; r++) {
                float got = y[(uint64_t)k * ldy + (uint64_t)r];
                float want = ref[(uint64_t)k * rows + (uint64_t)r];
                float m = mag[(uint64_t)k * rows + (uint64_t)r];
                ck_assert_msg(fabsf(got - want) <= 1e-5f * m + 1e-30f,
                              "%s %s n=%d rows=%d tok=%d/%d row %d: %.9g vs scalar %.9g (mag %g)",
                              ks_qtype_name(t), ks_cpu_simd_name(s), (int)n, (int)rows,
                              (int)k, (int)nt, (int)r, got, want, m);
            }
        /* padding between output rows is untouched */
        if (nt > 1)
            for (int64_t k = 0; k < nt; k++)
                for (uint64_t r = (uint64_t)rows; r < ldy; r++)
                    ck_assert_float_eq(y[(uint64_t)k * ldy + r], -12345.0f);
    }
    free(w); free(x); free(xq); free(ref); free(mag); free(y); free(wd); free(xd);
}

START_TEST(simd_vs_scalar)
{
    static const uint64_t cols[] = { 256, 512, 1536, 2048 };
    static const int64_t rows[] = { 1, 3, 4, 7, 33 };
    ks_qtype t = all_types[_i];

    if (simd_path() == KS_SIMD_SCALAR) {
        printf("quant: no SIMD path on this CPU; SIMD comparisons skipped\n");
        return;
    }
    for (size_t c = 0; c < 4; c++)
        for (size_t r = 0; r < 5; r++)
            compare_simd(t, cols[c], rows[r]);
    /* float types also take lengths that are not a multiple of 8 */
    if (ks_qtype_get(t)->block_elems == 1) {
        compare_simd(t, 13, 5);
        compare_simd(t, 1001, 9);
    }
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
    tcase_add_test(tc, simd_force_and_env_names);
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
