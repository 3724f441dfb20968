/* NEON kernels for aarch64 at the baseline ARMv8.0 level (every aarch64
 * CPU has Advanced SIMD), and the activation quantizers that all NEON
 * levels share. The kernels themselves are in quant_neon_body.h;
 * quant_neon_dot.c and quant_neon_i8mm.c compile them again for CPUs
 * with the dot-product and int8 matrix-multiply extensions, and quant.c
 * picks one from HWCAP. */
#define KS_NEON_LEVEL 0
#define KS_NEON_FILL  neon_kernels
#include "runtime/cpu/quant_neon_body.h"

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
    neon_kernels(ops);
    ops->quant_act[KS_QUANT_Q8_0] = qa_q8_0;
    ops->quant_act[KS_QUANT_Q8_1] = qa_q8_1;
}
