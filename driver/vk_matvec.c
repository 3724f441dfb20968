/* Quantized matrix-vector kernels on Vulkan (see vk_matvec.h).
 *
 * Data flow: the embedded template shaders/matvec.comp is compiled (or
 * read from the disk cache, ks_vk_shader_get) with KS_QUANT_<TYPE>, the
 * epilogue defines, KS_EPI_XSUM and KS_SG_REDUCE (slots summed by
 * subgroupAdd); the work split (workgroup size, rows per slot, lanes per
 * slot) and the row alignment go in as specialization constants. The
 * pipeline comes from ks_vk_pipeline_create: W and x as uniform texel
 * buffers (RGBA32UI / RGBA32F views made by ks_vk_matvec_set), y, bias,
 * residual and xsum as storage buffers. Kernels made through
 * ks_vk_matvec_pipeline_get live in a per-context table indexed by
 * (type, flags). A dispatch runs one workgroup per rows_per_wg rows (a 2-D
 * grid when one dimension is not enough) times n_tok vectors in z, and
 * writes one float per row and vector.
 *
 * Why this shape (measured on lavapipe, Mesa 22.3, 2 contended cores):
 * every storage-buffer load becomes a per-lane loop with a branch per
 * lane, so a kernel that only sums a buffer reads ~0.5 GB/s that way and
 * ~10 GB/s through texelFetch of 16-byte texels; sharing activations
 * between lanes by subgroupBroadcast/Shuffle costs more than fetching
 * them, so each lane fetches the activations of its own columns once and
 * reuses them for 8 rows; decoding is then the largest cost. There a lane
 * is a whole slot (split 1: 64 rows per workgroup, no reduction): with 8
 * lanes sharing a row, rows of a few units (SmolLM2's 576 columns are 3
 * units of Q8_0) left most lanes idle; bench_vk_matvec gave 1.5-4x the
 * GB/s per CPU-second at 576-1536 columns for Q8_0, Q4_0, Q4_1, Q4_K and
 * Q6_K.
 *
 * Lavapipe ends every loop of an invocation after 65,535 trips in total,
 * silently (reference/glslang-at-runtime.md); ks_vk_matvec_check bounds
 * the trips a lane makes along its rows far below that. */
#include "driver/vk_matvec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "driver/qblock.h"

/* Loop trips one lane may make along a row (units and the reduction),
 * well under lavapipe's 65,535 per invocation. */
#define MAX_TRIPS 16384u
#define MAX_ROWS 16u
#define MAX_SETS 512u
#define N_TYPES KS_QBLOCK_COUNT
#define PUSH_WORDS 13u  /* the Args block of shaders/matvec.comp */
#define PUSH_BYTES (4u * PUSH_WORDS)
#define MAX_BUFFERS 6u

_Static_assert(PUSH_BYTES <= 128, "Vulkan guarantees 128 bytes of push constants");

/* What each ggml type number's kernel needs besides its block geometry
 * (driver/qblock.h); unit_blocks must match the
 * KS_UNIT_BLOCKS of shaders/common/quant.glsl. */
typedef struct type_info {
    const ks_qblock *q;  /* name and block geometry */
    uint32_t    unit_blocks;
    bool        has_min;  /* w = d·q + m per block: KS_VK_MATVEC_XSUM applies */
} type_info;

#define QB(n) &ks_qblocks[KS_QBLOCK_##n]
static const type_info types[N_TYPES] = {
    [KS_QBLOCK_F32] = { QB(F32), 32, false },
    [KS_QBLOCK_F16] = { QB(F16), 64, false },
    [KS_QBLOCK_Q4_0] = { QB(Q4_0), 8, false },
    [KS_QBLOCK_Q4_1] = { QB(Q4_1), 4, true },
    [KS_QBLOCK_Q5_0] = { QB(Q5_0), 8, false },
    [KS_QBLOCK_Q5_1] = { QB(Q5_1), 2, true },
    [KS_QBLOCK_Q8_0] = { QB(Q8_0), 8, false },
    [KS_QBLOCK_Q2_K] = { QB(Q2_K), 1, false },
    [KS_QBLOCK_Q3_K] = { QB(Q3_K), 1, false },
    [KS_QBLOCK_Q4_K] = { QB(Q4_K), 1, false },
    [KS_QBLOCK_Q5_K] = { QB(Q5_K), 1, false },
    [KS_QBLOCK_Q6_K] = { QB(Q6_K), 1, false },
    [KS_QBLOCK_IQ4_NL] = { QB(IQ4_NL), 8, false },
    [KS_QBLOCK_BF16] = { QB(BF16), 64, false },
};

struct ks_vk_matvec_cache {
    ks_vk_matvec *k[N_TYPES][KS_VK_MATVEC_FLAGS_ALL + 1];
};

static const type_info *
type_get(uint32_t qtype)
{
    return qtype < N_TYPES && types[qtype].q ? &types[qtype] : NULL;
}

bool
ks_vk_matvec_supports(uint32_t qtype)
{
    return type_get(qtype) != NULL;
}

uint32_t
ks_vk_matvec_layout_flags(uint64_t w_off_bytes, uint64_t row_stride_bytes)
{
    uint64_t v = w_off_bytes | row_stride_bytes;

    return (v & 3u) ? KS_VK_MATVEC_ALIGN2 : (v & 15u) ? KS_VK_MATVEC_ALIGN4 : 0u;
}

static uint32_t
row_align_of(uint32_t flags)
{
    return (flags & KS_VK_MATVEC_ALIGN2) ? 2u : (flags & KS_VK_MATVEC_ALIGN4) ? 4u : 16u;
}

static void
variant_name(const type_info *t, uint32_t flags, char *buf, size_t size)
{
    snprintf(buf, size, "matvec %s%s%s%s%s", t->q->name,
             flags & KS_VK_MATVEC_BIAS ? " +bias" : "",
             flags & KS_VK_MATVEC_RESIDUAL ? " +residual" : "",
             flags & KS_VK_MATVEC_XSUM ? " +xsum" : "",
             (flags & KS_VK_MATVEC_ALIGN2) ? " align2" :
             (flags & KS_VK_MATVEC_ALIGN4) ? " align4" : "");
}

static bool
is_pow2(uint32_t v)
{
    return v && !(v & (v - 1));
}

/* Flags a type cannot take: KS_ERR_INVALID_ARG naming them. */
static ks_status
check_flags(const type_info *t, uint32_t flags)
{
    if (flags & ~(uint32_t)KS_VK_MATVEC_FLAGS_ALL)
        return ks_error(KS_ERR_INVALID_ARG, "vk: matvec %s: unknown flags 0x%x",
                        t->q->name, flags & ~(uint32_t)KS_VK_MATVEC_FLAGS_ALL);
    if ((flags & KS_VK_MATVEC_XSUM) && !t->has_min)
        return ks_error(KS_ERR_INVALID_ARG, "vk: matvec %s: KS_VK_MATVEC_XSUM applies to "
                        "Q4_1 and Q5_1 weights only, not %s", t->q->name, t->q->name);
    return KS_OK;
}

ks_status
ks_vk_matvec_create(ks_vk_ctx *ctx, uint32_t qtype, uint32_t flags,
                    const ks_vk_matvec_tune *tune, ks_vk_matvec **out)
{
    static const ks_vk_matvec_tune none;
    const type_info *t = type_get(qtype);
    const char *defines[5];
    char qdef[32], name[64];
    ks_vk_matvec *mv = NULL;
    VkDescriptorType dtypes[MAX_BUFFERS];
    uint32_t n_def = 0, spec[4], required_sg = 0, hits = ctx->n_shader_hits;
    bool cpu = ctx->info.type == KS_VK_TYPE_CPU;
    ks_status st;

    *out = NULL;
    if (!tune)
        tune = &none;
    if (!t)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: matvec: no Vulkan kernel for tensor "
                        "type %u", qtype);
    if ((st = check_flags(t, flags)) != KS_OK)
        return st;
    variant_name(t, flags, name, sizeof name);

    mv = calloc(1, sizeof(*mv));
    if (!mv)
        return ks_error(KS_ERR_NOMEM, "vk: no memory for %s", name);
    mv->qtype = qtype;
    mv->flags = flags;
    mv->block_elems = t->q->block_elems;
    mv->block_bytes = t->q->block_bytes;
    mv->unit_blocks = t->unit_blocks;
    mv->row_align = row_align_of(flags);
    mv->wg_size = tune->wg_size ? tune->wg_size
                : cpu && ctx->caps.subgroup_size ? ctx->caps.subgroup_size : 64u;
    mv->rows = tune->rows ? tune->rows : cpu ? 8u : 2u;
    mv->split = tune->split ? tune->split : cpu ? 1u : 16u;
    if (mv->split > mv->wg_size && !tune->split)
        mv->split = mv->wg_size;
    mv->max_n_tok = ctx->info.max_wg_count[2];
    mv->n_buffers = 3u + !!(flags & KS_VK_MATVEC_BIAS) + !!(flags & KS_VK_MATVEC_RESIDUAL) +
                    !!(flags & KS_VK_MATVEC_XSUM);
    mv->views = calloc(2u * MAX_SETS, sizeof(*mv->views));
    if (!mv->views) {
        st = ks_error(KS_ERR_NOMEM, "vk: no memory for %s", name);
        goto fail;
    }
    if (mv->wg_size > ctx->info.max_wg_invocations || mv->wg_size > ctx->info.max_wg_size[0]) {
        st = ks_error(KS_ERR_INVALID_ARG, "vk: %s: workgroup size %u, %s allows at most %u",
                      name, mv->wg_size, ctx->info.name, ctx->info.max_wg_invocations);
        goto fail;
    }
    if (mv->rows > MAX_ROWS) {
        st = ks_error(KS_ERR_INVALID_ARG, "vk: %s: rows per slot %u, expected 1..%u",
                      name, mv->rows, MAX_ROWS);
        goto fail;
    }
    if (!is_pow2(mv->split) || mv->wg_size % mv->split) {
        st = ks_error(KS_ERR_INVALID_ARG, "vk: %s: %u lanes per slot, expected a power "
                      "of two dividing the workgroup size %u", name, mv->split, mv->wg_size);
        goto fail;
    }
    if ((uint64_t)mv->wg_size * 4u > ctx->info.max_shared_bytes) {
        st = ks_error(KS_ERR_INVALID_ARG, "vk: %s: workgroup size %u needs %u bytes of "
                      "shared memory, %s has %u", name, mv->wg_size, mv->wg_size * 4u,
                      ctx->info.name, ctx->info.max_shared_bytes);
        goto fail;
    }
    mv->rows_per_wg = mv->wg_size / mv->split * mv->rows;
    /* subgroupAdd sums a slot when the slot is exactly one subgroup. */
    if (mv->split == mv->wg_size && ctx->info.subgroup_in_compute &&
        (ctx->info.subgroup_ops & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
        mv->wg_size == ctx->caps.subgroup_size) {
        if (ctx->info.subgroup_min == ctx->info.subgroup_max &&
            ctx->info.subgroup_min == mv->wg_size) {
            mv->sg_reduce = true;
        } else if (ctx->caps.subgroup_size_control && ctx->info.subgroup_min <= mv->wg_size &&
                   mv->wg_size <= ctx->info.subgroup_max) {
            mv->sg_reduce = true;
            required_sg = mv->wg_size;
        }
    }

    snprintf(qdef, sizeof qdef, "KS_QUANT_%s", t->q->name);
    defines[n_def++] = qdef;
    if (flags & KS_VK_MATVEC_BIAS)
        defines[n_def++] = "KS_EPI_BIAS";
    if (flags & KS_VK_MATVEC_RESIDUAL)
        defines[n_def++] = "KS_EPI_RESIDUAL";
    if (flags & KS_VK_MATVEC_XSUM)
        defines[n_def++] = "KS_EPI_XSUM";
    if (mv->sg_reduce)
        defines[n_def++] = "KS_SG_REDUCE";
    ks_vk_compile_params cp = {
        .name = name, .defines = defines, .n_defines = n_def,
        .vk_api_version = ctx->api_version,
    };
    uint64_t t0 = ks_now_ns();

    spec[0] = mv->wg_size;
    spec[1] = mv->rows;
    spec[2] = mv->split;
    spec[3] = mv->row_align;
    /* W and x through texel views, the rest storage buffers. */
    for (uint32_t i = 0; i < mv->n_buffers; i++)
        dtypes[i] = i < 2 ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                          : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    ks_vk_pipeline_params pp = {
        .name = name, .n_buffers = mv->n_buffers, .types = dtypes, .push_bytes = PUSH_BYTES,
        .spec = spec, .n_spec = 4, .required_subgroup_size = required_sg,
        .max_sets = MAX_SETS,
    };
    /* Through the disk cache; an entry the driver rejects is rebuilt once. */
    if ((st = ks_vk_shader_pipeline_create(ctx, "matvec.comp", &cp, &pp, &mv->pl)) != KS_OK)
        goto fail;
    ks_log(KS_LOG_DEBUG, "vk", "%s: SPIR-V (%s) and pipeline in %.1f ms; "
           "workgroup %u, slots of %u lanes doing %u rows, rows at %u-byte multiples%s",
           name, ctx->n_shader_hits != hits ? "disk cache" : "compiled",
           (double)(ks_now_ns() - t0) / 1e6, mv->wg_size, mv->split, mv->rows,
           mv->row_align, mv->sg_reduce ? ", subgroupAdd" : "");
    *out = mv;
    return KS_OK;
fail:
    ks_vk_matvec_destroy(ctx, mv);
    return st;
}

void
ks_vk_matvec_destroy(ks_vk_ctx *ctx, ks_vk_matvec *mv)
{
    if (!mv)
        return;
    for (uint32_t i = 0; i < mv->n_views; i++)
        vkDestroyBufferView(ctx->device, mv->views[i], NULL);
    free(mv->views);
    ks_vk_pipeline_destroy(ctx, mv->pl);
    free(mv);
}

ks_status
ks_vk_matvec_pipeline_get(ks_vk_ctx *ctx, uint32_t qtype, uint32_t flags, ks_vk_matvec **out)
{
    ks_status st;

    *out = NULL;
    if (!type_get(qtype))
        return ks_error(KS_ERR_UNSUPPORTED, "vk: matvec: no Vulkan kernel for tensor "
                        "type %u", qtype);
    if ((st = check_flags(&types[qtype], flags)) != KS_OK)
        return st;
    if (!ctx->matvec_cache) {
        ctx->matvec_cache = calloc(1, sizeof(*ctx->matvec_cache));
        if (!ctx->matvec_cache)
            return ks_error(KS_ERR_NOMEM, "vk: no memory for the matvec kernel table");
    }
    ks_vk_matvec **slot = &ctx->matvec_cache->k[qtype][flags];
    if (!*slot && (st = ks_vk_matvec_create(ctx, qtype, flags, NULL, slot)) != KS_OK)
        return st;
    *out = *slot;
    return KS_OK;
}

void
ks_vk_matvec_ctx_fini(ks_vk_ctx *ctx)
{
    if (!ctx->matvec_cache)
        return;
    for (uint32_t t = 0; t < N_TYPES; t++)
        for (uint32_t f = 0; f <= KS_VK_MATVEC_FLAGS_ALL; f++)
            ks_vk_matvec_destroy(ctx, ctx->matvec_cache->k[t][f]);
    free(ctx->matvec_cache);
    ctx->matvec_cache = NULL;
}

/* A view of the whole 16-byte texels of |b|. */
static ks_status
make_view(ks_vk_ctx *ctx, ks_vk_matvec *mv, const ks_vk_buffer *b, VkFormat format,
          VkBufferView *out)
{
    return ks_vk_buffer_view(ctx, mv->pl->name, b, format, 16u, out);
}

ks_status
ks_vk_matvec_set(ks_vk_ctx *ctx, ks_vk_matvec *mv, const ks_vk_matvec_bufs *b,
                 VkDescriptorSet *out)
{
    static const struct {
        const char *what, *without;
        uint32_t    flag;
    } opt[3] = {
        { "bias", "a bias", KS_VK_MATVEC_BIAS },
        { "residual", "a residual", KS_VK_MATVEC_RESIDUAL },
        { "xsum", "KS_VK_MATVEC_XSUM", KS_VK_MATVEC_XSUM },
    };
    const ks_vk_buffer *given[3] = { b->bias, b->residual, b->xsum };
    const ks_vk_buffer *bufs[MAX_BUFFERS] = { NULL };
    VkBufferView views[MAX_BUFFERS] = { VK_NULL_HANDLE };
    const char *name = mv->pl->name;
    uint32_t n = 2;
    ks_status st;

    *out = VK_NULL_HANDLE;
    if (!b->w || !b->x || !b->y)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: buffer %s missing", name,
                        !b->w ? "w" : !b->x ? "x" : "y");
    bufs[n++] = b->y;
    for (uint32_t i = 0; i < 3; i++) {
        bool want = mv->flags & opt[i].flag;
        if (!given[i] != !want)
            return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %s buffer %s%s", name, opt[i].what,
                            want ? "missing" : "given to a kernel without ",
                            want ? "" : opt[i].without);
        if (want)
            bufs[n++] = given[i];
    }
    if (mv->pl->n_sets >= MAX_SETS)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s has handed out all its %u descriptor "
                        "sets", name, MAX_SETS);
    if ((st = make_view(ctx, mv, b->w, VK_FORMAT_R32G32B32A32_UINT, &views[0])) != KS_OK ||
        (st = make_view(ctx, mv, b->x, VK_FORMAT_R32G32B32A32_SFLOAT, &views[1])) != KS_OK)
        goto fail;
    if ((st = ks_vk_pipeline_set_views(ctx, mv->pl, bufs, views, n, out)) != KS_OK)
        goto fail;
    mv->views[mv->n_views++] = views[0];
    mv->views[mv->n_views++] = views[1];
    return KS_OK;
fail:
    for (int i = 0; i < 2; i++)
        if (views[i])
            vkDestroyBufferView(ctx->device, views[i], NULL);
    return st;
}

/* Checks that [off, off + count) floats, rounded up to |round| floats,
 * lie in |buf|. */
static ks_status
check_floats(const char *name, const char *what, const ks_vk_buffer *buf, uint64_t off,
             uint64_t count, uint64_t round)
{
    uint64_t end = ks_align_up(off + count, round) * 4u;

    if (end > buf->size_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %s needs %" PRIu64 " bytes of buffer "
                        "'%s', which has %" PRIu64, name, what, end, buf->name,
                        buf->size_bytes);
    return KS_OK;
}

ks_status
ks_vk_matvec_check(const ks_vk_matvec *mv, const ks_vk_matvec_args *a,
                   const ks_vk_matvec_bufs *b)
{
    const char *name = mv->pl ? mv->pl->name : "matvec";
    uint64_t row_bytes, end, nb, units, trips, red = 0;
    uint64_t stride = a->rows > 1 ? a->row_stride_bytes : 0;
    uint64_t n_tok = a->n_tok ? a->n_tok : 1u, last = n_tok - 1u;
    /* Each vector's first float: the last vector's offsets bound them all. */
    uint64_t x0 = a->x_off + last * a->x_stride, y0 = a->y_off + last * a->y_stride;
    uint64_t r0 = a->r_off + last * a->r_stride, s0 = a->s_off + last * a->s_stride;
    bool want_r = mv->flags & KS_VK_MATVEC_RESIDUAL, want_s = mv->flags & KS_VK_MATVEC_XSUM;
    uint32_t need;
    ks_status st;

    if (a->rows == 0 || a->cols == 0)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: shape %u x %u, expected rows and "
                        "cols >= 1", name, a->rows, a->cols);
    if (a->cols % mv->block_elems)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: cols %u is not a multiple of the "
                        "block size %u", name, a->cols, mv->block_elems);
    if ((a->w_off_bytes | stride) & 1u)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: w_off %" PRIu64 " and row stride %"
                        PRIu64 " must be even", name, a->w_off_bytes, a->row_stride_bytes);
    if (a->x_off % 4u)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: x_off %u is not a multiple of 4 floats",
                        name, a->x_off);
    if (n_tok > mv->max_n_tok)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: n_tok %" PRIu64 " vectors, the device "
                        "dispatches at most %u workgroups in z", name, n_tok, mv->max_n_tok);
    if (n_tok > 1 && a->x_stride % 4u)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: x_stride %u is not a multiple of 4 "
                        "floats", name, a->x_stride);
    if (n_tok > 1 && a->y_stride < a->rows)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: y_stride %u with %u rows: the %" PRIu64
                        " vectors' outputs would overlap (expected >= %u)", name, a->y_stride,
                        a->rows, n_tok, a->rows);
    nb = a->cols / mv->block_elems;
    row_bytes = nb * mv->block_bytes;
    if (a->rows > 1 && a->row_stride_bytes < row_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: row stride %" PRIu64 " bytes, rows "
                        "of %u elements take %" PRIu64, name, a->row_stride_bytes, a->cols,
                        row_bytes);
    need = row_align_of(ks_vk_matvec_layout_flags(a->w_off_bytes, stride));
    if (need < mv->row_align)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: rows at w_off %" PRIu64 " + k * %"
                        PRIu64 " start at multiples of %u bytes, this kernel needs %u "
                        "(flags from ks_vk_matvec_layout_flags: KS_VK_MATVEC_ALIGN%u)",
                        name, a->w_off_bytes, stride, need, mv->row_align, need);
    units = (nb + mv->unit_blocks - 1) / mv->unit_blocks;
    for (uint32_t s = mv->split; s > 1 && !mv->sg_reduce; s >>= 1)
        red++;  /* the shared-memory reduction's loop, once per row */
    trips = (units + mv->split - 1) / mv->split + red * mv->rows;
    if (trips > MAX_TRIPS)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: rows of %u elements take %" PRIu64
                        " loop trips per lane, at most %u fit lavapipe's loop limit "
                        "(use more lanes per slot)", name, a->cols, trips, MAX_TRIPS);
    /* The shader's byte offsets are 32-bit; W is read in whole texels. */
    end = ks_align_up(a->w_off_bytes + (uint64_t)(a->rows - 1) * stride + row_bytes, 16);
    if (a->w_off_bytes > UINT32_MAX || stride > UINT32_MAX || end > UINT32_MAX)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: weights end at byte %" PRIu64
                        ", beyond the 32-bit offsets the kernel uses", name, end);
    if (x0 + a->cols + 4u > UINT32_MAX / 4u || y0 + a->rows > UINT32_MAX / 4u ||
        (uint64_t)a->b_off + a->rows > UINT32_MAX / 4u ||
        (want_r && r0 + a->rows > UINT32_MAX / 4u) || (want_s && s0 + nb > UINT32_MAX / 4u))
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: a vector offset runs past 2^30 floats",
                        name);
    if (!b)
        return KS_OK;
    if (!b->w || !b->x || !b->y || (!b->bias && (mv->flags & KS_VK_MATVEC_BIAS)) ||
        (!b->residual && want_r) || (!b->xsum && want_s))
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: a buffer is missing", name);
    if (end > b->w->size_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %u rows at byte %" PRIu64 " with "
                        "stride %" PRIu64 " need %" PRIu64 " bytes (rounded up to 16) of "
                        "buffer '%s', which has %" PRIu64, name, a->rows, a->w_off_bytes,
                        a->row_stride_bytes, end, b->w->name, b->w->size_bytes);
    if ((st = check_floats(name, "x", b->x, x0, a->cols, 4)) != KS_OK ||
        (st = check_floats(name, "y", b->y, y0, a->rows, 1)) != KS_OK)
        return st;
    if ((mv->flags & KS_VK_MATVEC_BIAS) &&
        (st = check_floats(name, "bias", b->bias, a->b_off, a->rows, 1)) != KS_OK)
        return st;
    if (want_r && (st = check_floats(name, "residual", b->residual, r0, a->rows, 1)) != KS_OK)
        return st;
    if (want_s && (st = check_floats(name, "xsum", b->xsum, s0, nb, 1)) != KS_OK)
        return st;
    return KS_OK;
}

ks_status
ks_vk_matvec_record(ks_vk_ctx *ctx, VkCommandBuffer cb, const ks_vk_matvec *mv,
                    VkDescriptorSet set, const ks_vk_matvec_args *a)
{
    uint32_t push[PUSH_WORDS];
    uint32_t n_wg, gx, gy, max_x = ctx->info.max_wg_count[0];
    uint32_t n_tok = a->n_tok ? a->n_tok : 1u;
    ks_status st;

    if ((st = ks_vk_matvec_check(mv, a, NULL)) != KS_OK)
        return st;
    n_wg = (uint32_t)(((uint64_t)a->rows + mv->rows_per_wg - 1) / mv->rows_per_wg);
    gy = (n_wg + max_x - 1) / max_x;
    gx = (n_wg + gy - 1) / gy;
    if (gy > ctx->info.max_wg_count[1])
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: %u rows need %u x %u workgroups, "
                        "%s allows %u x %u", mv->pl->name, a->rows, gx, gy, ctx->info.name,
                        max_x, ctx->info.max_wg_count[1]);
    /* The order of the Args block in shaders/matvec.comp. Strides of a
     * single vector are never used: zero them so they cannot matter. */
    push[0] = a->rows;
    push[1] = a->cols;
    push[2] = (uint32_t)a->w_off_bytes;
    push[3] = a->rows > 1 ? (uint32_t)a->row_stride_bytes : 0u;
    push[4] = a->x_off;
    push[5] = a->y_off;
    push[6] = a->b_off;
    push[7] = a->r_off;
    push[8] = n_tok > 1 ? a->x_stride : 0u;
    push[9] = n_tok > 1 ? a->y_stride : 0u;
    push[10] = n_tok > 1 ? a->r_stride : 0u;
    push[11] = a->s_off;
    push[12] = n_tok > 1 ? a->s_stride : 0u;
    ks_vk_cmd_dispatch(cb, mv->pl, set, push, gx, gy, n_tok);
    return KS_OK;
}
