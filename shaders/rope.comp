#version 450
/* Per-head work between the QKV projections and attention, fused:
 * optional QK-norm (KS_QK_NORM: rmsnorm of each q and k head with its
 * weights), rotary embedding of q and k (KS_NEOX: pairs (i, i + n_rot/2),
 * else (2i, 2i + 1)), and the KV append: the rotated k and the v of each
 * token stored as fp16 in this layer's caches at position pos0 + token.
 * Workgroup (x, y) = (head, token); heads 0..n_head-1 are query heads,
 * the next n_head_kv key/value heads. cos/sin come from the host's table
 * (the CPU's own rope_table, so both backends rotate by the same values);
 * the rotation is the CPU's: a' = fma(a, c, -(b*s)), b' = fma(a, s, b*c),
 * each rounded once (ks_fma). */
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint WG = 32;
layout(local_size_x_id = 0) in;

#define KS_MAX_HD 512u

layout(push_constant) uniform Args {
    uint  n_head;
    uint  n_head_kv;
    uint  hd;
    uint  n_rot;
    uint  q_stride;   /* floats between tokens in q */
    uint  kv_stride;  /* floats between tokens in k and v */
    uint  cs_off;     /* floats: this layer's cos/sin table in the params */
    uint  cs_stride;  /* floats between tokens in the table */
    uint  kv_words;   /* 32-bit words per cache row (kv_dim / 2) */
    float eps;
} a;

layout(std430, set = 0, binding = 0) buffer QBuf { float ks_qv[]; };
layout(std430, set = 0, binding = 1) restrict readonly buffer KBuf { float ks_kv[]; };
layout(std430, set = 0, binding = 2) restrict readonly buffer VBuf { float ks_vv[]; };
layout(std430, set = 0, binding = 3) restrict readonly buffer QNBuf { float ks_qn[]; };
layout(std430, set = 0, binding = 4) restrict readonly buffer KNBuf { float ks_kn[]; };
/* word 0: pos0 (as uint bits); cos/sin tables after it */
layout(std430, set = 0, binding = 5) restrict readonly buffer PBuf { float ks_par[]; };
layout(std430, set = 0, binding = 6) restrict writeonly buffer KCBuf { uint ks_kc[]; };
layout(std430, set = 0, binding = 7) restrict writeonly buffer VCBuf { uint ks_vc[]; };

shared float ks_red[WG];
#if defined(KS_F64)
shared double ks_redd[WG];
#endif
shared float ks_h[KS_MAX_HD];

#include "common/numerics.glsl"
#include "common/wgsum.glsl"

void
main()
{
    uint lane = gl_LocalInvocationID.x;
    uint head = gl_WorkGroupID.x;
    uint tok = gl_WorkGroupID.y;
    uint pos = floatBitsToUint(ks_par[0]) + tok;
    bool is_q = head < a.n_head;
    uint kvh = is_q ? 0u : head - a.n_head;
    uint src = is_q ? tok * a.q_stride + head * a.hd : tok * a.kv_stride + kvh * a.hd;

    for (uint i = lane; i < a.hd; i += WG)
        ks_h[i] = is_q ? ks_qv[src + i] : ks_kv[src + i];
    barrier();
#if defined(KS_QK_NORM)
    {
        KS_SQ_T ss = KS_SQ_T(0);
        for (uint i = lane; i < a.hd; i += WG) {
            precise float sq = ks_h[i] * ks_h[i];
            ss += KS_SQ_T(sq);
        }
        float sc = ks_rms_scale(ss, a.hd, a.eps);
        for (uint i = lane; i < a.hd; i += WG) {
            precise float y = ks_h[i] * sc * (is_q ? ks_qn[i] : ks_kn[i]);
            ks_h[i] = y;
        }
        barrier();
    }
#endif
    uint half_rot = a.n_rot / 2u;
    uint cs = a.cs_off + tok * a.cs_stride;
    for (uint p = lane; p < half_rot; p += WG) {
        float c = ks_par[cs + 2u * p], s = ks_par[cs + 2u * p + 1u];
#if defined(KS_NEOX)
        uint ia = p, ib = p + half_rot;
#else
        uint ia = 2u * p, ib = 2u * p + 1u;
#endif
        float x0 = ks_h[ia], x1 = ks_h[ib];
        precise float bs = x1 * s;
        precise float bc = x1 * c;
        precise float ra = ks_fma(x0, c, -bs);
        precise float rb = ks_fma(x0, s, bc);
        ks_h[ia] = ra;
        ks_h[ib] = rb;
    }
    barrier();

    if (is_q) {
        for (uint i = lane; i < a.hd; i += WG)
            ks_qv[src + i] = ks_h[i];
        return;
    }
    /* fp16 pairs into the caches: the k head rotated, the v head as is */
    uint w0 = pos * a.kv_words + kvh * a.hd / 2u;
    for (uint i = lane; i < a.hd / 2u; i += WG) {
        ks_kc[w0 + i] = packHalf2x16(vec2(ks_f16r(ks_h[2u * i]), ks_f16r(ks_h[2u * i + 1u])));
        ks_vc[w0 + i] = packHalf2x16(vec2(ks_f16r(ks_vv[src + 2u * i]),
                                          ks_f16r(ks_vv[src + 2u * i + 1u])));
    }
}
