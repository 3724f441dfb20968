#version 450
/* Mixture-of-experts routing on the device, as ks_moe_route
 * (runtime/cpu/moe.c) computes it, so that the expert FFNs that follow
 * can read the chosen experts without a round trip to the host:
 *   p = softmax(router logits): the max, exp(l - max) with glibc's expf
 *       (ks_expf), the exponentials summed in double in expert order,
 *       scaled by the float of 1 / sum;
 *   ids = the k largest p in falling order, ties to the lower expert
 *       (insertion into a sorted list, as the CPU does it);
 *   w[j] = p[ids[j]], divided by their double sum rounded to float
 *       (clamped below at 2^-14) when a.norm.
 * Divisions run in double and are rounded to float once: a float
 * quotient computed that way is the correctly rounded one (53 >= 2*24+2
 * bits), whatever the driver's float division does. Bit-exact with the
 * CPU needs KS_F64 (shaderFloat64); without it the sums are float and
 * exp is the driver's.
 *
 * One invocation per token: routing is k * n_expert compares a token,
 * far under lavapipe's 65,535 loop trips per invocation for any real
 * model (n_expert <= 256, k <= 16 is checked by the host). */
#extension GL_GOOGLE_include_directive : require

layout(constant_id = 0) const uint WG = 8;
layout(local_size_x_id = 0) in;

#include "common/numerics.glsl"

#if defined(KS_MOE_COMBINE)
/* KS_MOE_COMBINE: the experts' weighted sum and the residual, one
 * workgroup per token, as ks_moe_ffn and the CPU forward add them:
 *   o = y_0 * w_0, then o += y_j * w_j in slot order (a multiply and an
 *   add, each rounded: the CPU's C is compiled without contraction);
 *   KS_MOE_SHARED (qwen2moe): o += ys * g with v the shared gate's
 *   logit, s = v / (1 + expf(-v)) and g = s / v (0.5 for v = 0), as
 *   llama.cpp computes sigmoid(v) = silu(v) / v;
 *   x = x + o. */
layout(push_constant) uniform Args {
    uint n;         /* n_embd */
    uint k;         /* experts per token */
    uint y_stride;  /* floats between expert output rows */
    uint x_stride;  /* floats between tokens in x */
    uint tok0;      /* first token */
    uint sh_row0;   /* KS_MOE_SHARED: the shared expert's row of token 0 */
} a;

layout(std430, set = 0, binding = 0) restrict readonly buffer YBuf { float ks_y[]; };
layout(std430, set = 0, binding = 1) restrict readonly buffer WBuf { float ks_w[]; };
layout(std430, set = 0, binding = 2) buffer XBuf { float ks_x[]; };
layout(std430, set = 0, binding = 3) restrict readonly buffer SBuf { float ks_sg[]; };

void
main()
{
    uint tok = a.tok0 + gl_WorkGroupID.x;
    uint k = a.k;
#if defined(KS_MOE_SHARED)
    precise float v = ks_sg[tok];
    precise float den = 1.0 + ks_expf(0.0 - v);
#if defined(KS_F64)
    precise double sd = double(v) / double(den);
    float s = float(sd);
    precise double gd = double(s) / double(v);
    float gv = v != 0.0 ? float(gd) : 0.5;
#else
    precise float s = v / den;
    precise float gq = s / v;
    float gv = v != 0.0 ? gq : 0.5;
#endif
#endif
    for (uint i = gl_LocalInvocationID.x; i < a.n; i += WG) {
        precise float o = ks_y[(tok * k) * a.y_stride + i] * ks_w[tok * k];
        for (uint j = 1u; j < k; j++) {
            precise float t = ks_y[(tok * k + j) * a.y_stride + i] * ks_w[tok * k + j];
            o = o + t;
        }
#if defined(KS_MOE_SHARED)
        precise float t = ks_y[(a.sh_row0 + tok) * a.y_stride + i] * gv;
        o = o + t;
#endif
        precise float x = ks_x[tok * a.x_stride + i] + o;
        ks_x[tok * a.x_stride + i] = x;
    }
}

#else
layout(push_constant) uniform Args {
    uint n_tok;
    uint n_expert;
    uint k;
    uint norm;      /* nonzero: normalise the k weights */
    uint l_stride;  /* floats between tokens' logits */
    uint o_stride;  /* entries between tokens' ids and weights */
    uint tok0;      /* first token */
} a;

layout(std430, set = 0, binding = 0) restrict readonly buffer LBuf { float ks_logits[]; };
layout(std430, set = 0, binding = 1) restrict writeonly buffer IBuf { int ks_ids[]; };
layout(std430, set = 0, binding = 2) restrict writeonly buffer WBuf { float ks_w[]; };
/* the probabilities, [token][n_expert] (l_stride apart): scratch that a
 * test may read */
layout(std430, set = 0, binding = 3) restrict buffer PBuf { float ks_p[]; };

#if defined(KS_F64)
#define ks_acc double
#else
#define ks_acc float
#endif

/* The sorted choice so far; KS_MAX_K slots. */
const uint KS_MAX_K = 16u;

void
main()
{
    uint tok = a.tok0 + gl_GlobalInvocationID.x;
    int ids[KS_MAX_K];
    uint X = a.n_expert, k = a.k;

    if (gl_GlobalInvocationID.x >= a.n_tok)
        return;
    uint lr = tok * a.l_stride, orow = tok * a.o_stride;

    float mx = uintBitsToFloat(0xFF800000u);  /* -inf */
    for (uint e = 0u; e < X; e++)
        if (ks_logits[lr + e] > mx)
            mx = ks_logits[lr + e];
    precise ks_acc sum = ks_acc(0.0);
    for (uint e = 0u; e < X; e++) {
        precise float d = ks_logits[lr + e] - mx;
        float p = ks_expf(d);
        ks_p[lr + e] = p;
        sum += ks_acc(p);
    }
#if defined(KS_F64)
    precise double inv = 1.0LF / sum;
    float scale = float(inv);
#else
    precise float scale = 1.0 / sum;
#endif
    for (uint e = 0u; e < X; e++) {
        precise float p = ks_p[lr + e] * scale;
        ks_p[lr + e] = p;
    }
    memoryBarrierBuffer();

    for (uint j = 0u; j < k; j++)
        ids[j] = -1;
    for (uint e = 0u; e < X; e++) {
        float pe = ks_p[lr + e];
        uint j = k;
        while (j > 0u && (ids[j - 1u] < 0 || pe > ks_p[lr + uint(ids[j - 1u])]))
            j--;
        if (j == k)
            continue;
        for (uint i = k - 1u; i > j; i--)
            ids[i] = ids[i - 1u];
        ids[j] = int(e);
    }

    precise ks_acc wsum = ks_acc(0.0);
    for (uint j = 0u; j < k; j++)
        wsum += ks_acc(ks_p[lr + uint(ids[j])]);
    float ws = float(wsum);
    if (ws < 6.103515625e-5)
        ws = 6.103515625e-5;
    for (uint j = 0u; j < k; j++) {
        float w = ks_p[lr + uint(ids[j])];
        if (a.norm != 0u) {
#if defined(KS_F64)
            precise double q = double(w) / double(ws);
            w = float(q);
#else
            precise float q = w / ws;
            w = q;
#endif
        }
        ks_ids[orow + j] = ids[j];
        ks_w[orow + j] = w;
    }
}
#endif
