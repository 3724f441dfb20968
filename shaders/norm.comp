#version 450
/* RMS norm of the residual stream, with the ops around it fused:
 *   KS_POST: o = rmsnorm(o) * pw      (gemma3's post-attention / post-FFN norm)
 *   KS_ADD:  x = x + o                (the residual add; x is written back)
 *   then     xn = rmsnorm(x) * w      (the next block's pre-norm)
 * and xn rounded into up to two activation formats (KS_FMT0, KS_FMT1:
 * common/actq.glsl numbers) for the matrix kernels that read it.
 * One workgroup per token (token = tok0 + workgroup x). As the CPU
 * kernel: scale = 1/sqrt(mean(x²) + eps), y = x * scale * w; the squares
 * summed in double with KS_F64, as the CPU sums them. */
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Args {
    uint  n;         /* elements per row */
    uint  x_stride;  /* floats between tokens in x, o and xn */
    uint  q_stride;  /* floats between tokens in the format outputs */
    uint  s_stride;  /* floats between tokens in the Q8_1 sums */
    uint  tok0;
    float eps;
} a;

layout(std430, set = 0, binding = 0) buffer XBuf { float ks_x[]; };
layout(std430, set = 0, binding = 1) restrict readonly buffer OBuf { float ks_o[]; };
layout(std430, set = 0, binding = 2) restrict readonly buffer PBuf { float ks_pw[]; };
layout(std430, set = 0, binding = 3) restrict readonly buffer WBuf { float ks_w[]; };
layout(std430, set = 0, binding = 4) buffer NBuf { float ks_xn[]; };
layout(std430, set = 0, binding = 5) restrict writeonly buffer Q0Buf { uint ks_q0[]; };
layout(std430, set = 0, binding = 6) restrict writeonly buffer Q1Buf { uint ks_q1[]; };
layout(std430, set = 0, binding = 7) restrict writeonly buffer SBuf { float ks_s[]; };

shared float ks_red[WG];
#if defined(KS_F64)
shared double ks_redd[WG];
#endif

#include "common/numerics.glsl"
#include "common/wgsum.glsl"

uint ks_row;   /* float offset of this token's row in x / o / xn */
uint ks_qrow;  /* in the format outputs */
uint ks_srow;  /* in the sums */

float ks_aq_src(uint i) { return ks_xn[ks_row + i]; }
void
ks_aq_dst(uint w, uint i, uint v)
{
    if (w == 0u)
        ks_q0[ks_qrow + i] = v;
    else
        ks_q1[ks_qrow + i] = v;
}
void ks_aq_sum(uint b, float s) { ks_s[ks_srow + b] = s; }

#include "common/actq.glsl"

void
main()
{
    uint lane = gl_LocalInvocationID.x;
    uint tok = a.tok0 + gl_WorkGroupID.x;
    ks_row = tok * a.x_stride;
    ks_qrow = tok * a.q_stride;
    ks_srow = tok * a.s_stride;

#if defined(KS_ADD)
#if defined(KS_POST)
    KS_SQ_T so = KS_SQ_T(0);
    for (uint i = lane; i < a.n; i += WG) {
        precise float v = ks_o[ks_row + i] * ks_o[ks_row + i];
        so += KS_SQ_T(v);
    }
    float po = ks_rms_scale(so, a.n, a.eps);
#endif
    KS_SQ_T ss = KS_SQ_T(0);
    for (uint i = lane; i < a.n; i += WG) {
#if defined(KS_POST)
        precise float o = ks_o[ks_row + i] * po * ks_pw[i];
#else
        float o = ks_o[ks_row + i];
#endif
        precise float x = ks_x[ks_row + i] + o;
        ks_x[ks_row + i] = x;
        precise float sq = x * x;
        ss += KS_SQ_T(sq);
    }
#else
    KS_SQ_T ss = KS_SQ_T(0);
    for (uint i = lane; i < a.n; i += WG) {
        float x = ks_x[ks_row + i];
        precise float sq = x * x;
        ss += KS_SQ_T(sq);
    }
#endif
    float sc = ks_rms_scale(ss, a.n, a.eps);
    for (uint i = lane; i < a.n; i += WG) {
        precise float y = ks_x[ks_row + i] * sc * ks_w[i];
        ks_xn[ks_row + i] = y;
    }
    memoryBarrierBuffer();
    barrier();
#if defined(KS_FMT0)
    ks_actq(KS_FMT0, 0u, a.n, lane, WG);
#endif
#if defined(KS_FMT1)
    ks_actq(KS_FMT1, 1u, a.n, lane, WG);
#endif
}
