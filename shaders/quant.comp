#version 450
/* Rounds rows of activations into one format (KS_FMT0, common/actq.glsl
 * numbers) for a matrix kernel: the attention output before the output
 * projection, or a third format a norm could not fuse. One workgroup per
 * token. */
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Args {
    uint n;
    uint x_stride;  /* floats between tokens in the source */
    uint q_stride;  /* in the output */
    uint s_stride;  /* in the Q8_1 sums */
    uint tok0;      /* first token */
} a;

layout(std430, set = 0, binding = 0) restrict readonly buffer XBuf { float ks_src[]; };
layout(std430, set = 0, binding = 1) restrict writeonly buffer QBuf { uint ks_q[]; };
layout(std430, set = 0, binding = 2) restrict writeonly buffer SBuf { float ks_s[]; };

#include "common/numerics.glsl"

uint ks_row, ks_qrow, ks_srow;

float ks_aq_src(uint i) { return ks_src[ks_row + i]; }
void ks_aq_dst(uint w, uint i, uint v) { ks_q[ks_qrow + i] = v; }
void ks_aq_sum(uint b, float s) { ks_s[ks_srow + b] = s; }

#include "common/actq.glsl"

void
main()
{
    uint tok = a.tok0 + gl_WorkGroupID.x;
    ks_row = tok * a.x_stride;
    ks_qrow = tok * a.q_stride;
    ks_srow = tok * a.s_stride;
    ks_actq(KS_FMT0, 0u, a.n, gl_LocalInvocationID.x, WG);
}
