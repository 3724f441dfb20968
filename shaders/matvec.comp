#version 450
/* y = W·x for one weight matrix of any KS_QUANT_<TYPE> (rows of |cols|
 * elements, |row_stride| bytes apart), f32 x and y, fp32 arithmetic, for
 * gl_NumWorkGroups.z vectors: vector t (gl_WorkGroupID.z) reads x, the
 * residual and the x-sums t strides after their offsets and writes y
 * likewise; every vector is computed as a lone one would be.
 * Epilogues: KS_EPI_BIAS (y += b, per row), KS_EPI_RESIDUAL (y += r; r
 * may be the y buffer itself, for an in-place residual add).
 * KS_EPI_XSUM (Q4_1 and Q5_1 only): the min term of each block is
 * m·xsum[s_off + t·s_stride + block] rather than m·Σx over the block, for
 * activations that were quantized to Q8_1 and dequantized again, whose
 * block sums llama.cpp takes from the Q8_1 block (fp16(d·Σq)), not from
 * the values.
 *
 * W and x are read through texel buffers of 16-byte texels (RGBA32UI /
 * RGBA32F): on lavapipe a texel fetch streams ~10 GB/s where a storage
 * buffer load, which gallivm emits as a branchy per-lane loop, reaches
 * ~0.5 GB/s (measured with Mesa 22.3).
 *
 * Work split: a workgroup is WG_SIZE / SPLIT slots of SPLIT lanes; a slot
 * computes ROWS consecutive rows. Its lanes take the units of the row
 * round-robin (lane k: units k, k + SPLIT, ...), fetch the activations of
 * their unit once and use them for all ROWS rows (the row loop is
 * unrolled), then add their partial sums: subgroupAdd when the slot is the
 * whole subgroup (KS_SG_REDUCE), shared memory otherwise, nothing for a
 * slot of one lane. On lavapipe the workgroup is one subgroup of 8 lanes,
 * each lane a slot of its own (SPLIT 1), making one loop trip per unit of
 * its rows; lavapipe silently ends loops after 65,535 trips
 * per invocation (reference/glslang-at-runtime.md), which the host keeps
 * far away by bounding units per row. */
#extension GL_EXT_control_flow_attributes : require
#extension GL_GOOGLE_include_directive : require
#if defined(KS_SG_REDUCE)
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(constant_id = 0) const uint WG_SIZE = 8;
layout(constant_id = 1) const uint ROWS = 8;       /* rows per slot, 1..16 */
layout(constant_id = 2) const uint SPLIT = 8;      /* lanes per slot: power of two <= WG_SIZE */
layout(constant_id = 3) const uint ROW_ALIGN = 16; /* rows start at multiples of this
                                                    * many bytes: 16, 4 or 2 */
layout(local_size_x_id = 0) in;

layout(push_constant) uniform Args {
    uint rows;        /* rows to compute */
    uint cols;        /* elements per row, a multiple of the block size */
    uint w_off;       /* bytes: row 0 in W */
    uint row_stride;  /* bytes */
    uint x_off;       /* floats, a multiple of 4 */
    uint y_off;       /* floats */
    uint b_off;       /* floats, KS_EPI_BIAS */
    uint r_off;       /* floats, KS_EPI_RESIDUAL */
    uint x_stride;    /* floats between vectors of x, a multiple of 4 */
    uint y_stride;    /* floats between vectors of y */
    uint r_stride;    /* floats between vectors of the residual */
    uint s_off;       /* floats, KS_EPI_XSUM: block b of vector t is */
    uint s_stride;    /* xsum[s_off + t * s_stride + b] */
} args;

layout(set = 0, binding = 0) uniform usamplerBuffer ks_wt;  /* W, RGBA32UI */
layout(set = 0, binding = 1) uniform samplerBuffer ks_xt;   /* x, RGBA32F */
layout(std430, set = 0, binding = 2) buffer YBuf { float ks_y[]; };
#if defined(KS_EPI_BIAS)
layout(std430, set = 0, binding = 3) restrict readonly buffer BBuf { float ks_bias[]; };
#define KS_RES_BINDING 4
#else
#define KS_RES_BINDING 3
#endif
#if defined(KS_EPI_RESIDUAL)
layout(std430, set = 0, binding = KS_RES_BINDING) buffer RBuf { float ks_res[]; };
#define KS_XSUM_BINDING (KS_RES_BINDING + 1)
#else
#define KS_XSUM_BINDING KS_RES_BINDING
#endif
#if defined(KS_EPI_XSUM)
#if !defined(KS_QUANT_Q4_1) && !defined(KS_QUANT_Q5_1)
#error "KS_EPI_XSUM applies to KS_QUANT_Q4_1 and KS_QUANT_Q5_1 only"
#endif
layout(std430, set = 0, binding = KS_XSUM_BINDING) restrict readonly buffer SBuf {
    float ks_xsum[];
};
/* quant.glsl's hook: the x-sum of the unit's block b, from ks_xs[]
 * (declared after the include, which sizes it). */
float ks_xs_at(uint b);
#define KS_XSUM(b) ks_xs_at(b)
#endif

#include "common/quant.glsl"

#if defined(KS_EPI_XSUM)
float ks_xs[KS_UNIT_BLOCKS];

float
ks_xs_at(uint b)
{
    return ks_xs[b];
}
#endif

#define KS_MAX_ROWS 16u
#if !defined(KS_SG_REDUCE)
shared float ks_red[WG_SIZE];
#endif

uvec4
ks_w_texel(uint t, int tmax)
{
    return texelFetch(ks_wt, min(int(t), tmax));
}

/* Σ of |v| over the SPLIT lanes of each slot, valid in the slot's lane 0. */
float
ks_slot_sum(float v, uint lane, uint part)
{
#if defined(KS_SG_REDUCE)
    return subgroupAdd(v);
#else
    if (SPLIT == 1u)
        return v;  /* a lane per slot: nothing to add, no barriers */
    ks_red[lane] = v;
    barrier();
    for (uint s = SPLIT / 2u; s > 0u; s >>= 1) {
        if (part < s)
            ks_red[lane] += ks_red[lane + s];
        barrier();
    }
    float r = ks_red[lane];
    barrier();  /* the next row reuses ks_red */
    return r;
#endif
}

void
main()
{
    /* Units never straddle texels in block mode: there the alignment that
     * matters is that of the blocks themselves. */
#if defined(KS_BLOCK_MODE)
    const uint align = min(ROW_ALIGN, KS_BLOCK_BYTES & (~KS_BLOCK_BYTES + 1u));
    const uint n_tex = KS_WIN_TEXELS;
#else
    const uint align = ROW_ALIGN;
    /* A unit is whole texels; one more when it starts inside a texel. */
    const uint n_tex = ROW_ALIGN >= 16u ? KS_WIN_TEXELS - 1u : KS_WIN_TEXELS;
#endif
    uint lane = gl_LocalInvocationID.x;
    uint slot = lane / SPLIT, part = lane % SPLIT;
    uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint tok = gl_WorkGroupID.z;
    uint row0 = (wg * (WG_SIZE / SPLIT) + slot) * ROWS;
    uint nb = args.cols / KS_BLOCK_ELEMS;
    uint n_units = (nb + KS_UNIT_BLOCKS - 1u) / KS_UNIT_BLOCKS;
    uint x_off = args.x_off + tok * args.x_stride;
    int tmax = textureSize(ks_wt) - 1;
    int xmax = int((x_off + args.cols - 1u) / 4u);
#if defined(KS_EPI_XSUM)
    uint s_off = args.s_off + tok * args.s_stride;
#endif
    uint start[KS_MAX_ROWS];
    float acc[KS_MAX_ROWS];

    /* Rows past the last one redo the last row and store nothing. */
    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        start[r] = args.w_off + min(row0 + r, args.rows - 1u) * args.row_stride;
        acc[r] = 0.0;
    }

    for (uint u = part; u < n_units; u += SPLIT) {
        /* The last unit may be partial: its missing blocks are decoded from
         * clamped reads and dropped. */
        uint nv = min(KS_UNIT_BLOCKS, nb - u * KS_UNIT_BLOCKS);
        int x0 = int(x_off / 4u + u * (KS_UNIT_ELEMS / 4u));
        [[unroll]] for (uint k = 0u; k < KS_UNIT_ELEMS / 4u; k++)
            ks_xv[k] = texelFetch(ks_xt, min(x0 + int(k), xmax));
#if defined(KS_EPI_XSUM)
        /* Read once per unit for all ROWS rows; blocks past the row's end
         * read the last block's sum and are dropped. */
        [[unroll]] for (uint k = 0u; k < KS_UNIT_BLOCKS; k++)
            ks_xs[k] = ks_xsum[s_off + min(u * KS_UNIT_BLOCKS + k, nb - 1u)];
#endif

        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint o = start[r] + u * KS_UNIT_BYTES;
            uint t0 = o >> 4;
            [[unroll]] for (uint k = 0u; k < n_tex; k++)
                ks_win_set(k, ks_w_texel(t0 + k, tmax));
            ks_realign(o & 15u, align);
            acc[r] += ks_unit_dot(nv);
        }
    }

    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        float v = ks_slot_sum(acc[r], lane, part);
        uint row = row0 + r;
        if (part == 0u && row < args.rows) {
#if defined(KS_EPI_BIAS)
            v += ks_bias[args.b_off + row];
#endif
#if defined(KS_EPI_RESIDUAL)
            v += ks_res[args.r_off + tok * args.r_stride + row];
#endif
            ks_y[args.y_off + tok * args.y_stride + row] = v;
        }
    }
}
