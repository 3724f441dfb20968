#version 450
/* Causal attention of query heads over this layer's fp16 KV cache, with
 * an optional sliding window (n_swa > 0), grouped-query heads sharing a
 * KV head. Workgroup (x, y) = (query head, token); query token t sits at
 * position pos0 + t and sees keys [first, pos] (first = pos + 1 - n_swa
 * in a window, else 0).
 *
 * Default: the arithmetic of the CPU backend's one-query path (llama.cpp's
 * flash attention on an fp16 cache): the query scaled by q_scale and
 * rounded to fp16; each score an fp16 dot product summed in the CPU's
 * lane order, times s_scale; an online softmax over the keys in order; the
 * value sum kept in fp16 (rounded after every scale and multiply-add);
 * every multiply-add rounded once, as the CPU's (ks_fma).
 * The lanes work in chunks of WG keys: each lane scores one key, then all
 * lanes walk the chunk in order, each keeping its own head dimensions.
 * KS_ATTN_F32 (batches of 64 tokens or more, where the CPU takes a tiled
 * f32 path): f32 query, scores and value sum.
 *
 * Loop trips per lane: about n_keys (the walk) + n_keys/WG * hd/32; far
 * below lavapipe's 65,535 for the contexts tests use, and the host keeps
 * n_ctx under a bound for this kernel. */
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require

layout(constant_id = 0) const uint WG = 32;
layout(local_size_x_id = 0) in;

#define KS_MAX_HD 512u
/* Head dimensions a lane keeps (lane + j·WG): the host passes
 * ceil(head_dim / WG) as KS_HD_LANE, so the unrolled loops do no dead
 * work; at most KS_MAX_HD / 32. */
#if defined(KS_HD_LANE)
#define KS_PER_LANE KS_HD_LANE
#else
#define KS_PER_LANE (KS_MAX_HD / 32u)
#endif

layout(push_constant) uniform Args {
    uint  n_head;
    uint  n_head_kv;
    uint  hd;
    uint  q_stride;   /* floats between tokens in q and the output */
    uint  kv_words;   /* 32-bit words per cache row */
    uint  n_swa;
    float s_scale;    /* score multiplier */
    float q_scale;    /* query multiplier before rounding (gemma3) */
} a;

layout(std430, set = 0, binding = 0) restrict readonly buffer QBuf { float ks_q[]; };
layout(std430, set = 0, binding = 1) restrict readonly buffer KCBuf { uint ks_kc[]; };
layout(std430, set = 0, binding = 2) restrict readonly buffer VCBuf { uint ks_vc[]; };
layout(std430, set = 0, binding = 3) restrict writeonly buffer OBuf { float ks_out[]; };
layout(std430, set = 0, binding = 4) restrict readonly buffer PBuf { float ks_par[]; };

shared float ks_qh[KS_MAX_HD];
shared float ks_sc[WG];

#include "common/numerics.glsl"

float
ks_half(uint word_base, uint i)
{
    vec2 p = unpackHalf2x16(ks_kc[word_base + i / 2u]);
    return (i & 1u) != 0u ? p.y : p.x;
}

float
ks_vhalf(uint word_base, uint i)
{
    vec2 p = unpackHalf2x16(ks_vc[word_base + i / 2u]);
    return (i & 1u) != 0u ? p.y : p.x;
}

/* One key's score. */
float
ks_score(uint kb)
{
#if defined(KS_ATTN_F32)
    /* an fma chain over the head dimension */
    precise float s = 0.0;
    for (uint d = 0u; d < a.hd; d++)
        s = fma(ks_half(kb, d), ks_qh[d], s);
    return s;
#else
    /* The CPU's fp16 dot: 32 accumulators acc[j][l] = element 8j + l of
     * each 32-wide step, folded as (a0 + a2) + (a1 + a3), then lanes
     * l + (l + 4), then pairs; a tail past the last multiple of 32 is
     * added product by product, in double as the CPU does (KS_F64), else
     * compensated. fp16 x fp16 products are exact in f32. */
    float acc[32];
    [[unroll]] for (uint l = 0u; l < 32u; l++)
        acc[l] = 0.0;
    uint np = a.hd & ~31u;
    for (uint i = 0u; i < np; i += 32u) {
        [[unroll]] for (uint w = 0u; w < 16u; w++) {
            vec2 k = unpackHalf2x16(ks_kc[kb + i / 2u + w]);
            precise float t0 = ks_fma(k.x, ks_qh[i + 2u * w], acc[2u * w]);
            precise float t1 = ks_fma(k.y, ks_qh[i + 2u * w + 1u], acc[2u * w + 1u]);
            acc[2u * w] = t0;
            acc[2u * w + 1u] = t1;
        }
    }
    float t[4];
    [[unroll]] for (uint l = 0u; l < 4u; l++) {
        precise float a0 = acc[l] + acc[16u + l];
        precise float a1 = acc[8u + l] + acc[24u + l];
        precise float b0 = acc[4u + l] + acc[20u + l];
        precise float b1 = acc[12u + l] + acc[28u + l];
        precise float s0 = a0 + a1;
        precise float s1 = b0 + b1;
        precise float tl = s0 + s1;
        t[l] = tl;
    }
    precise float s = (t[0] + t[1]) + (t[2] + t[3]);
#if defined(KS_F64)
    precise double sd = double(s);
    for (uint d = np; d < a.hd; d++) {
        precise float p = ks_half(kb, d) * ks_qh[d];
        sd += double(p);
    }
    return float(sd);
#else
    precise float c = 0.0;
    for (uint d = np; d < a.hd; d++) {
        precise float p = ks_half(kb, d) * ks_qh[d];
        precise float u = s + p;
        precise float z = u - s;
        precise float e = (s - (u - z)) + (p - z);
        c += e;
        s = u;
    }
    precise float r = s + c;
    return r;
#endif
#endif
}

void
main()
{
    uint lane = gl_LocalInvocationID.x;
    uint h = gl_WorkGroupID.x;
    uint tok = gl_WorkGroupID.y;
    uint kvh = h / (a.n_head / a.n_head_kv);
    uint pos = floatBitsToUint(ks_par[0]) + tok;
    uint first = (a.n_swa > 0u && pos + 1u > a.n_swa) ? pos + 1u - a.n_swa : 0u;
    uint n_keys = pos + 1u - first;
    uint qo = tok * a.q_stride + h * a.hd;
    uint head_w = kvh * a.hd / 2u;

    for (uint d = lane; d < a.hd; d += WG) {
        precise float qs = ks_q[qo + d] * a.q_scale;
#if defined(KS_ATTN_F32)
        ks_qh[d] = qs;
#else
        ks_qh[d] = ks_f16r(qs);
#endif
    }
    barrier();

    float acc[KS_PER_LANE];
    [[unroll]] for (uint j = 0u; j < KS_PER_LANE; j++)
        acc[j] = 0.0;
    float M = uintBitsToFloat(0xFF800000u);  /* -inf */
    float S = 0.0;

    for (uint c0 = 0u; c0 < n_keys; c0 += WG) {
        uint nc = min(WG, n_keys - c0);
        if (lane < nc) {
            precise float sc = ks_score((first + c0 + lane) * a.kv_words + head_w) * a.s_scale;
            ks_sc[lane] = sc;
        }
        barrier();
        for (uint i = 0u; i < nc; i++) {
            float s = ks_sc[i];
            float ms = 1.0, vs = 1.0;
            uint vb = (first + c0 + i) * a.kv_words + head_w;
            if (s > M) {
                ms = M == uintBitsToFloat(0xFF800000u) ? 0.0 : ks_expf(M - s);
                M = s;
                [[unroll]] for (uint j = 0u; j < KS_PER_LANE; j++) {
#if defined(KS_ATTN_F32)
                    precise float t = acc[j] * ms;
#else
                    precise float t = ks_f16r(acc[j] * ms);
#endif
                    acc[j] = t;
                }
            } else {
                vs = ks_expf(s - M);
            }
            [[unroll]] for (uint j = 0u; j < KS_PER_LANE; j++) {
                uint d = lane + j * WG;
                if (d < a.hd) {
#if defined(KS_ATTN_F32)
                    precise float t = fma(ks_vhalf(vb, d), vs, acc[j]);
#else
                    precise float t = ks_f16r(ks_fma(ks_vhalf(vb, d), vs, acc[j]));
#endif
                    acc[j] = t;
                }
            }
            precise float sn = ks_fma(S, ms, vs);
            S = sn;
        }
        barrier();
    }
    precise float inv = S == 0.0 ? 0.0 : 1.0 / S;
    [[unroll]] for (uint j = 0u; j < KS_PER_LANE; j++) {
        uint d = lane + j * WG;
        if (d < a.hd) {
            precise float o = acc[j] * inv;
            ks_out[qo + d] = o;
        }
    }
}
