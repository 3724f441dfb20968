#version 450
/* The gated activation of the feed-forward block, g = act(g) * u, fused
 * with the rounding of the result into the down projection's activation
 * format (KS_FMT0; common/actq.glsl numbers). KS_SILU or KS_GELU picks
 * the activation, each computed as the CPU backend does:
 *   SiLU: g / (1 + exp(-g)) * u with ggml's vector exp (ks_v_expf), and
 *   glibc's expf (ks_expf) past the row's last multiple of 8 columns;
 *   GELU (tanh form): through llama.cpp's fp16 table (the host uploads the
 *   CPU's own, ks_gelu_table), indexed by x rounded to fp16, exact (0 or
 *   x) outside (-10, 10).
 * One workgroup per token. */
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Args {
    uint n;         /* n_ff */
    uint g_stride;  /* floats between tokens in g and u */
    uint q_stride;
    uint s_stride;
    uint tok0;      /* first token */
} a;

layout(std430, set = 0, binding = 0) buffer GBuf { float ks_g[]; };
layout(std430, set = 0, binding = 1) restrict readonly buffer UBuf { float ks_u[]; };
layout(std430, set = 0, binding = 2) restrict writeonly buffer QBuf { uint ks_q[]; };
/* KS_GELU: the CPU's table, gelu of every fp16 value as fp16, two a word */
layout(std430, set = 0, binding = 4) restrict readonly buffer TBuf { uint ks_gelu_tab[]; };
layout(std430, set = 0, binding = 3) restrict writeonly buffer SBuf { float ks_s[]; };

#include "common/numerics.glsl"

uint ks_row, ks_qrow, ks_srow;

float ks_aq_src(uint i) { return ks_g[ks_row + i]; }
void ks_aq_dst(uint w, uint i, uint v) { ks_q[ks_qrow + i] = v; }
void ks_aq_sum(uint b, float s) { ks_s[ks_srow + b] = s; }

#include "common/actq.glsl"

/* |tail|: a column the CPU's vector SiLU does not reach (it covers the
 * first n / 8 * 8 of a row; the rest take expf, ks_cpu_swiglu). */
float
ks_act(float x, bool tail)
{
#if defined(KS_SILU)
    precise float e = 1.0 + (tail ? ks_expf(0.0 - x) : ks_v_expf(0.0 - x));
    precise float y = x / e;
    return y;
#else
    if (x <= -10.0)
        return 0.0;
    if (x >= 10.0)
        return x;
    uint h = packHalf2x16(vec2(ks_f16r(x), 0.0)) & 0xFFFFu;
    return unpackHalf2x16(ks_gelu_tab[h >> 1] >> ((h & 1u) * 16u)).x;
#endif
}

void
main()
{
    uint lane = gl_LocalInvocationID.x;
    uint tok = a.tok0 + gl_WorkGroupID.x;
    ks_row = tok * a.g_stride;
    ks_qrow = tok * a.q_stride;
    ks_srow = tok * a.s_stride;

    for (uint i = lane; i < a.n; i += WG) {
        precise float y = ks_act(ks_g[ks_row + i], i >= (a.n & ~7u)) * ks_u[ks_row + i];
        ks_g[ks_row + i] = y;
    }
#if defined(KS_FMT0)
    memoryBarrierBuffer();
    barrier();
    ks_actq(KS_FMT0, 0u, a.n, lane, WG);
#endif
}
