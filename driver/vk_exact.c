/* The bit-exact matrix kernel (see vk_exact.h).
 *
 * Data flow: the embedded template shaders/exact.comp is compiled (or read
 * from the disk cache, ks_vk_shader_get) with KS_QUANT_<TYPE>, the
 * epilogue defines, KS_EXACT_FMA_EMU when the device's fma() rounds twice
 * and KS_EXACT_F64 when it has shaderFloat64; the workgroup size (invocations per
 * workgroup) goes in as a specialization constant. W and x are bound as
 * uniform texel buffers (RGBA32UI and R32UI views made by
 * ks_vk_exact_set), y, bias and residual as storage buffers. A dispatch
 * runs one invocation per row_reps rows and token: workgroups of wg_size
 * invocations (a 2-D grid when one dimension is not enough) times n_tok
 * tokens in z; row_reps > 1 on CPU-type devices for tall matrices; the
 * push constants carry the shape, offsets and the summation path of each
 * token.
 *
 * The fma probe: Vulkan lets fma() round like a multiply and an add
 * (its precision is "inherited from OpFMul followed by OpFAdd"), and
 * lavapipe does split it. The first ks_vk_exact_get of a context runs
 * exact.comp's KS_EXACT_PROBE variant on triples whose fused and unfused
 * results differ and compares with the C library's fmaf: kernels use
 * fma() where every result matched, the double-precision emulation where
 * not (checked the same way before it is trusted).
 *
 * Lavapipe ends every loop of an invocation after 65,535 trips in total,
 * silently (reference/glslang-at-runtime.md); the shader makes one trip
 * per unit of a row, and ks_vk_exact_check bounds the units far below. */
#include "driver/vk_exact.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "driver/qblock.h"

/* Loop trips one invocation may make along its row, well under
 * lavapipe's 65,535. */
#define MAX_TRIPS 16384u
#define MAX_SETS 512u
#define N_TYPES KS_QBLOCK_COUNT
#define PUSH_WORDS 19u  /* the Args block of shaders/exact.comp */
#define PUSH_BYTES (4u * PUSH_WORDS)
#define MAX_BUFFERS 6u
#define PROBE_N 256u
/* Rows per invocation on CPU-type devices: at most this many, and only
 * while a dispatch keeps at least WG_TARGET workgroups to share out. */
#define MAX_REPS 16u
#define WG_TARGET 64u

_Static_assert(PUSH_BYTES <= 128, "Vulkan guarantees 128 bytes of push constants");

/* Activation formats (the packed layout of vk_exact.h). */
typedef enum act_kind { ACT_F32, ACT_F16, ACT_BF16, ACT_Q8_0, ACT_Q8_1, ACT_Q8_K } act_kind;

#define P(x) (1u << KS_VK_EXACT_PATH_##x)

/* What each ggml type number's kernel needs besides its block geometry
 * (driver/qblock.h); unit_blocks must match
 * KS_UNIT_BLOCKS of shaders/exact.comp. */
typedef struct type_info {
    const ks_qblock *q;  /* name and block geometry */
    uint32_t    unit_blocks;
    act_kind    act;
    uint32_t    paths;  /* KS_VK_EXACT_PATH_* bits the CPU can take */
} type_info;

#define QB(n) &ks_qblocks[KS_QBLOCK_##n]
static const type_info types[N_TYPES] = {
    [KS_QBLOCK_F32] = { QB(F32), 32, ACT_F32, P(VD) | P(BLAS) },
    [KS_QBLOCK_F16] = { QB(F16), 32, ACT_F16, P(VD) | P(BLAS) },
    [KS_QBLOCK_Q4_0] = { QB(Q4_0), 2, ACT_Q8_0, P(VD) | P(GEMV) | P(GEMM) },
    [KS_QBLOCK_Q4_1] = { QB(Q4_1), 2, ACT_Q8_1, P(VD) },
    [KS_QBLOCK_Q5_0] = { QB(Q5_0), 2, ACT_Q8_0, P(VD) },
    [KS_QBLOCK_Q5_1] = { QB(Q5_1), 2, ACT_Q8_1, P(VD) },
    [KS_QBLOCK_Q8_0] = { QB(Q8_0), 2, ACT_Q8_0, P(VD) },
    [KS_QBLOCK_Q2_K] = { QB(Q2_K), 1, ACT_Q8_K, P(VD) | P(TILED) },
    [KS_QBLOCK_Q3_K] = { QB(Q3_K), 1, ACT_Q8_K, P(VD) | P(TILED) },
    [KS_QBLOCK_Q4_K] = { QB(Q4_K), 1, ACT_Q8_K, P(VD) | P(GEMV) | P(GEMM) | P(TILED) },
    [KS_QBLOCK_Q5_K] = { QB(Q5_K), 1, ACT_Q8_K, P(VD) | P(TILED) },
    [KS_QBLOCK_Q6_K] = { QB(Q6_K), 1, ACT_Q8_K, P(VD) | P(TILED) },
    [KS_QBLOCK_IQ4_NL] = { QB(IQ4_NL), 2, ACT_Q8_0, P(VD) | P(BLAS) | P(GEMV) | P(GEMM) },
    [KS_QBLOCK_BF16] = { QB(BF16), 32, ACT_BF16, P(VD) | P(BLAS) },
};

static const char *const path_names[] = { "vec_dot", "tinyBLAS", "GEMV", "GEMM", "tiled" };

/* fma() as the probe found it. */
typedef enum fma_kind { FMA_UNKNOWN = 0, FMA_NATIVE, FMA_EMULATED, FMA_NONE } fma_kind;

struct ks_vk_exact_cache {
    fma_kind     fma;
    ks_vk_exact *k[N_TYPES][KS_VK_EXACT_FLAGS_ALL + 1];
};

static const type_info *
type_get(uint32_t qtype)
{
    return qtype < N_TYPES && types[qtype].q ? &types[qtype] : NULL;
}

bool
ks_vk_exact_supports(uint32_t qtype)
{
    return type_get(qtype) != NULL;
}

/* ---- packed activations ------------------------------------------------ */

uint32_t
ks_vk_act_words(uint32_t wtype, uint32_t n)
{
    const type_info *t = type_get(wtype);

    if (!t)
        return 0;
    switch (t->act) {
    case ACT_F32:
        return n;
    case ACT_F16:
    case ACT_BF16:
        return (uint32_t)(((uint64_t)n + 1u) / 2u);
    case ACT_Q8_0:
    case ACT_Q8_1:
        return n % 32u ? 0u : n / 32u * 10u;
    case ACT_Q8_K:
        return n % 256u ? 0u : n / 256u * 73u;
    }
    return 0;
}

static uint32_t
rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t
rd32(const uint8_t *p)
{
    return rd16(p) | rd16(p + 2) << 16;
}

static uint32_t
half_word(const uint8_t *p)  /* fp16 at p, as the bits of the float it is */
{
    float f = ks_h2f((uint16_t)rd16(p));
    uint32_t w;

    memcpy(&w, &f, 4);
    return w;
}

void
ks_vk_act_from_cpu(uint32_t wtype, const void *cpu_row, uint32_t n, uint32_t *words)
{
    const type_info *t = type_get(wtype);
    const uint8_t *s = cpu_row;

    if (!t || ks_vk_act_words(wtype, n) == 0)
        return;
    switch (t->act) {
    case ACT_F32:
        memcpy(words, s, (size_t)n * 4u);
        break;
    case ACT_F16:
    case ACT_BF16:
        for (uint32_t k = 0; k < n / 2u; k++)
            words[k] = rd32(s + 4u * k);
        if (n % 2u)
            words[n / 2u] = rd16(s + 2u * (n - 1u));
        break;
    case ACT_Q8_0:
    case ACT_Q8_1:
        /* ks_blk_q8_0: fp16 d, 32 int8 (34 bytes); ks_blk_q8_1: fp16 d,
         * fp16 s, 32 int8 (36 bytes). */
        for (uint32_t b = 0; b < n / 32u; b++) {
            const uint8_t *blk = s + (size_t)b * (t->act == ACT_Q8_1 ? 36u : 34u);
            uint32_t *w = words + 10u * b;
            w[0] = half_word(blk);
            w[1] = t->act == ACT_Q8_1 ? half_word(blk + 2) : 0u;
            for (uint32_t k = 0; k < 8u; k++)
                w[2 + k] = rd32(blk + (t->act == ACT_Q8_1 ? 4u : 2u) + 4u * k);
        }
        break;
    case ACT_Q8_K:
        /* ks_blk_q8_k: float d, 256 int8, 16 int16 bsums (292 bytes). */
        for (uint32_t b = 0; b < n / 256u; b++) {
            const uint8_t *blk = s + (size_t)b * 292u;
            uint32_t *w = words + 73u * b;
            w[0] = rd32(blk);
            for (uint32_t k = 0; k < 64u; k++)
                w[1 + k] = rd32(blk + 4u + 4u * k);
            for (uint32_t k = 0; k < 8u; k++)
                w[65 + k] = rd32(blk + 260u + 4u * k);
        }
        break;
    }
}

/* ---- the fma probe ------------------------------------------------------ */

static uint64_t
next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Runs the probe variant (|emulate|: KS_EXACT_FMA_EMU) on PROBE_N triples
 * and sets *ok when every result equals fmaf's. */
static ks_status
probe_run(ks_vk_ctx *ctx, bool emulate, bool *ok)
{
    const char *defines[2] = { "KS_EXACT_PROBE", "KS_EXACT_FMA_EMU" };
    float in[3 * PROBE_N], out[PROBE_N];
    uint64_t rs = 0x2545F4914F6CDD1Du;
    ks_vk_buffer ib = { 0 }, ob = { 0 };
    ks_vk_pipeline *pl = NULL;
    VkDescriptorSet set;
    ks_status st;

    *ok = false;
    /* Triples where one rounding and two differ: c near -a·b (the fused
     * result is the product's rounding error, which a split multiply-add
     * loses) and, every fourth, a·b + c next to a float midpoint (where
     * rounding to double first would go wrong). */
    for (uint32_t i = 0; i < PROBE_N; i++) {
        float a = 1.0f + (float)(next_rand(&rs) >> 41) * 0x1p-23f;
        float b = 1.0f + (float)(next_rand(&rs) >> 41) * 0x1p-23f;
        double p = (double)a * (double)b;
        float c;
        if (i % 4u == 3u) {
            float f = (float)p, g = nextafterf(f, INFINITY);
            c = (float)(((double)f + (double)g) / 2.0 - p);
            if (next_rand(&rs) & 1)
                c = nextafterf(c, (next_rand(&rs) & 1) ? INFINITY : -INFINITY);
        } else {
            c = -(float)p + (float)((int32_t)(next_rand(&rs) % 7u) - 3) * 0x1p-30f;
        }
        in[3 * i] = a;
        in[3 * i + 1] = b;
        in[3 * i + 2] = c;
    }
    ks_vk_compile_params cp = {
        .name = emulate ? "exact fma probe (emulated)" : "exact fma probe",
        .defines = defines, .n_defines = emulate ? 2u : 1u,
        .vk_api_version = ctx->api_version,
    };
    uint32_t spec[1] = { 64 };
    ks_vk_pipeline_params pp = {
        .name = cp.name, .n_buffers = 2, .spec = spec, .n_spec = 1, .max_sets = 1,
    };
    if ((st = ks_vk_shader_pipeline_create(ctx, "exact.comp", &cp, &pp, &pl)) != KS_OK ||
        (st = ks_vk_buffer_init(ctx, "exact fma probe in", sizeof in, KS_VK_MEM_UPLOAD,
                                &ib)) != KS_OK ||
        (st = ks_vk_buffer_init(ctx, "exact fma probe out", sizeof out, KS_VK_MEM_READBACK,
                                &ob)) != KS_OK ||
        (st = ks_vk_buffer_upload(ctx, &ib, 0, in, sizeof in)) != KS_OK)
        goto done;
    const ks_vk_buffer *bufs[2] = { &ib, &ob };
    if ((st = ks_vk_pipeline_set(ctx, pl, bufs, 2, &set)) != KS_OK ||
        (st = ks_vk_dispatch(ctx, pl, set, NULL, PROBE_N / 64u, 1, 1)) != KS_OK ||
        (st = ks_vk_buffer_download(ctx, &ob, 0, out, sizeof out)) != KS_OK)
        goto done;
    uint32_t good = 0;
    for (uint32_t i = 0; i < PROBE_N; i++) {
        float want = fmaf(in[3 * i], in[3 * i + 1], in[3 * i + 2]);
        good += memcmp(&want, &out[i], 4) == 0;
    }
    *ok = good == PROBE_N;
    ks_log(KS_LOG_DEBUG, "vk", "%s: %u of %u results equal fmaf's", cp.name, good, PROBE_N);
done:
    ks_vk_buffer_fini(ctx, &ob);
    ks_vk_buffer_fini(ctx, &ib);
    ks_vk_pipeline_destroy(ctx, pl);
    return st;
}

static ks_status
probe_fma(ks_vk_ctx *ctx, struct ks_vk_exact_cache *c)
{
    bool ok;
    ks_status st;

    if (c->fma != FMA_UNKNOWN)
        return KS_OK;
    /* the probe dispatches its pipelines at once: never deferred */
    bool defer = ctx->defer, emu_ok = false;
    ctx->defer = false;
    st = probe_run(ctx, false, &ok);
    if (st == KS_OK && !ok && ctx->caps.float64)
        st = probe_run(ctx, true, &emu_ok);
    ctx->defer = defer;
    if (st != KS_OK)
        return st;
    c->fma = ok ? FMA_NATIVE : emu_ok ? FMA_EMULATED : FMA_NONE;
    ks_log(KS_LOG_DEBUG, "vk", "exact kernels on %s: fma() %s", ctx->info.name,
           c->fma == FMA_NATIVE ? "rounds once" :
           c->fma == FMA_EMULATED ? "rounds twice: emulated in double precision" :
           "rounds twice and cannot be emulated");
    return KS_OK;
}

/* ---- kernels ------------------------------------------------------------ */

static void
exact_destroy(ks_vk_ctx *ctx, ks_vk_exact *k)
{
    if (!k)
        return;
    for (uint32_t i = 0; i < k->n_views; i++)
        vkDestroyBufferView(ctx->device, k->views[i], NULL);
    free(k->views);
    ks_vk_pipeline_destroy(ctx, k->pl);
    free(k);
}

static ks_status
exact_create(ks_vk_ctx *ctx, const type_info *t, uint32_t qtype, uint32_t flags, bool emulate,
             ks_vk_exact **out)
{
    const char *defines[6];
    char qdef[32], name[64];
    ks_vk_exact *k = NULL;
    VkDescriptorType dtypes[MAX_BUFFERS];
    uint32_t n_def = 0, spec[1], hits = ctx->n_shader_hits;
    ks_status st;

    *out = NULL;
    snprintf(name, sizeof name, "exact %s%s%s%s", t->q->name,
             flags & KS_VK_EXACT_BIAS ? " +bias" : "",
             flags & KS_VK_EXACT_RESIDUAL ? " +residual" : "",
             flags & KS_VK_EXACT_EXPERT ? " +expert" : "");
    k = calloc(1, sizeof(*k));
    if (!k)
        return ks_error(KS_ERR_NOMEM, "vk: no memory for %s", name);
    k->qtype = qtype;
    k->flags = flags;
    k->block_elems = t->q->block_elems;
    k->block_bytes = t->q->block_bytes;
    k->unit_blocks = t->unit_blocks;
    k->fma_emu = emulate;
    k->f64 = ctx->caps.float64;
    k->max_n_tok = ctx->info.max_wg_count[2];
    /* On lavapipe a workgroup of one subgroup (8) streams memory best
     * (reference/glslang-at-runtime.md). */
    k->wg_size = ctx->info.type == KS_VK_TYPE_CPU && ctx->caps.subgroup_size
                     ? ctx->caps.subgroup_size : 64u;
    if (k->wg_size > ctx->info.max_wg_size[0])
        k->wg_size = ctx->info.max_wg_size[0];
    /* Lavapipe runs each workgroup as a task of its thread pool: a tall
     * matrix (the head's 49,152 rows) spends more on those than on its
     * bytes unless a workgroup takes several groups of rows. */
    k->max_reps = ctx->info.type == KS_VK_TYPE_CPU ? MAX_REPS : 1u;
    k->n_buffers = 3u + !!(flags & KS_VK_EXACT_BIAS) + !!(flags & KS_VK_EXACT_RESIDUAL) +
                   !!(flags & KS_VK_EXACT_EXPERT);
    k->views = calloc(2u * MAX_SETS, sizeof(*k->views));
    if (!k->views) {
        st = ks_error(KS_ERR_NOMEM, "vk: no memory for %s", name);
        goto fail;
    }

    snprintf(qdef, sizeof qdef, "KS_QUANT_%s", t->q->name);
    defines[n_def++] = qdef;
    if (flags & KS_VK_EXACT_BIAS)
        defines[n_def++] = "KS_EPI_BIAS";
    if (flags & KS_VK_EXACT_RESIDUAL)
        defines[n_def++] = "KS_EPI_RESIDUAL";
    if (flags & KS_VK_EXACT_EXPERT)
        defines[n_def++] = "KS_EXPERT";
    if (emulate)
        defines[n_def++] = "KS_EXACT_FMA_EMU";
    if (k->f64)
        defines[n_def++] = "KS_EXACT_F64";
    ks_vk_compile_params cp = {
        .name = name, .defines = defines, .n_defines = n_def,
        .vk_api_version = ctx->api_version,
    };
    uint64_t t0 = ks_now_ns();
    spec[0] = k->wg_size;
    for (uint32_t i = 0; i < k->n_buffers; i++)
        dtypes[i] = i < 2 ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                          : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    ks_vk_pipeline_params pp = {
        .name = name, .n_buffers = k->n_buffers, .types = dtypes, .push_bytes = PUSH_BYTES,
        .spec = spec, .n_spec = 1, .max_sets = MAX_SETS,
    };
    if ((st = ks_vk_shader_pipeline_create(ctx, "exact.comp", &cp, &pp, &k->pl)) != KS_OK)
        goto fail;
    ks_log(KS_LOG_DEBUG, "vk", "%s: SPIR-V (%s) and pipeline in %.1f ms; "
           "%u rows per workgroup%s%s", name,
           ctx->n_shader_hits != hits ? "disk cache" : "compiled",
           (double)(ks_now_ns() - t0) / 1e6, k->wg_size,
           emulate ? ", fma emulated" : "", k->f64 ? ", f64" : "");
    *out = k;
    return KS_OK;
fail:
    exact_destroy(ctx, k);
    return st;
}

/* The context's kernel table, made and probed on first use. */
static ks_status
exact_ready(ks_vk_ctx *ctx, const char *what)
{
    ks_status st;

    if (!ctx->exact_cache) {
        ctx->exact_cache = calloc(1, sizeof(*ctx->exact_cache));
        if (!ctx->exact_cache)
            return ks_error(KS_ERR_NOMEM, "vk: no memory for the exact kernel table");
    }
    if ((st = probe_fma(ctx, ctx->exact_cache)) != KS_OK)
        return st;
    if (ctx->exact_cache->fma == FMA_NONE)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: exact %s: fma() on %s rounds twice and "
                        "the device has no shaderFloat64 to emulate it", what,
                        ctx->info.name);
    return KS_OK;
}

ks_status
ks_vk_exact_fma(ks_vk_ctx *ctx, bool *native)
{
    ks_status st = exact_ready(ctx, "kernels");

    *native = st == KS_OK && ctx->exact_cache->fma == FMA_NATIVE;
    return st;
}

ks_status
ks_vk_exact_get(ks_vk_ctx *ctx, uint32_t qtype, uint32_t flags, ks_vk_exact **out)
{
    const type_info *t = type_get(qtype);
    ks_status st;

    *out = NULL;
    if (!t)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: exact kernel: no kernel for tensor type %u",
                        qtype);
    if (flags & ~(uint32_t)KS_VK_EXACT_FLAGS_ALL)
        return ks_error(KS_ERR_INVALID_ARG, "vk: exact %s: unknown flags 0x%x", t->q->name,
                        flags & ~(uint32_t)KS_VK_EXACT_FLAGS_ALL);
    if ((st = exact_ready(ctx, t->q->name)) != KS_OK)
        return st;
    ks_vk_exact **slot = &ctx->exact_cache->k[qtype][flags];
    if (!*slot && (st = exact_create(ctx, t, qtype, flags,
                                     ctx->exact_cache->fma == FMA_EMULATED, slot)) != KS_OK)
        return st;
    *out = *slot;
    return KS_OK;
}

void
ks_vk_exact_ctx_fini(ks_vk_ctx *ctx)
{
    if (!ctx->exact_cache)
        return;
    for (uint32_t t = 0; t < N_TYPES; t++)
        for (uint32_t f = 0; f <= KS_VK_EXACT_FLAGS_ALL; f++)
            exact_destroy(ctx, ctx->exact_cache->k[t][f]);
    free(ctx->exact_cache);
    ctx->exact_cache = NULL;
}

/* ---- descriptor sets ------------------------------------------------------ */

static ks_status
make_view(ks_vk_ctx *ctx, const ks_vk_exact *k, const ks_vk_buffer *b, VkFormat format,
          uint32_t texel_bytes, VkBufferView *out)
{
    return ks_vk_buffer_view(ctx, k->pl->name, b, format, texel_bytes, out);
}

ks_status
ks_vk_exact_set(ks_vk_ctx *ctx, ks_vk_exact *k, const ks_vk_exact_bufs *b,
                VkDescriptorSet *out)
{
    const ks_vk_buffer *bufs[MAX_BUFFERS] = { NULL };
    VkBufferView views[MAX_BUFFERS] = { VK_NULL_HANDLE };
    const char *name = k->pl->name;
    bool want_b = k->flags & KS_VK_EXACT_BIAS, want_r = k->flags & KS_VK_EXACT_RESIDUAL;
    bool want_i = k->flags & KS_VK_EXACT_EXPERT;
    uint32_t n = 2;
    ks_status st;

    *out = VK_NULL_HANDLE;
    if (!b->w || !b->x || !b->y)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: buffer %s missing", name,
                        !b->w ? "w" : !b->x ? "x" : "y");
    if (!b->bias != !want_b)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: bias buffer %s", name,
                        want_b ? "missing" : "given to a kernel without a bias");
    if (!b->residual != !want_r)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: residual buffer %s", name,
                        want_r ? "missing" : "given to a kernel without a residual");
    if (!b->ids != !want_i)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: expert id buffer %s", name,
                        want_i ? "missing" : "given to a kernel without experts");
    bufs[n++] = b->y;
    if (want_b)
        bufs[n++] = b->bias;
    if (want_r)
        bufs[n++] = b->residual;
    if (want_i)
        bufs[n++] = b->ids;
    if (k->pl->n_sets >= MAX_SETS)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s has handed out all its %u descriptor "
                        "sets", name, MAX_SETS);
    if ((st = make_view(ctx, k, b->w, VK_FORMAT_R32G32B32A32_UINT, 16, &views[0])) != KS_OK ||
        (st = make_view(ctx, k, b->x, VK_FORMAT_R32_UINT, 4, &views[1])) != KS_OK)
        goto fail;
    if ((st = ks_vk_pipeline_set_views(ctx, k->pl, bufs, views, n, out)) != KS_OK)
        goto fail;
    k->views[k->n_views++] = views[0];
    k->views[k->n_views++] = views[1];
    return KS_OK;
fail:
    for (int i = 0; i < 2; i++)
        if (views[i])
            vkDestroyBufferView(ctx->device, views[i], NULL);
    return st;
}

/* ---- checks and dispatch ---------------------------------------------------- */

/* [off, off + count) 4-byte words must lie in |buf|. */
static ks_status
check_words(const char *name, const char *what, const ks_vk_buffer *buf, uint64_t off,
            uint64_t count)
{
    uint64_t end = (off + count) * 4u;

    if (end > buf->size_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %s needs %" PRIu64 " bytes of buffer "
                        "'%s', which has %" PRIu64, name, what, end, buf->name,
                        buf->size_bytes);
    return KS_OK;
}

/* |path| must be one the CPU can take for this type and shape. */
static ks_status
check_path(const ks_vk_exact *k, const type_info *t, const char *name, const char *field,
           uint32_t path, uint32_t cols)
{
    enum { N_PATHS = sizeof path_names / sizeof path_names[0] };

    if (path >= N_PATHS)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %s %u is not a summation path", name,
                        field, path);
    if (!(t->paths & (1u << path)))
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %s %s is not a summation path of %s "
                        "weights", name, field, path_names[path], t->q->name);
    if (t->q->block_elems == 1 && path == KS_VK_EXACT_PATH_BLAS && cols % 8u)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %s tinyBLAS with cols %u, which the "
                        "CPU takes for multiples of 8 only", name, field, cols);
    if ((k->qtype == KS_QBLOCK_F16 || k->qtype == KS_QBLOCK_BF16) && path == KS_VK_EXACT_PATH_VD && cols % 32u &&
        !k->f64)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: vec_dot of %u columns sums its last "
                        "%u in double precision, and the device has no shaderFloat64",
                        name, cols, cols % 32u);
    return KS_OK;
}

/* Loop trips one invocation makes along a row of |cols| elements. */
static uint64_t
row_trips(const ks_vk_exact *k, uint32_t cols)
{
    uint64_t nb = cols / k->block_elems;

    return k->block_elems == 1 ? cols / 32u : (nb + k->unit_blocks - 1u) / k->unit_blocks;
}

/* Rows each invocation computes for |a|: as many as keep WG_TARGET
 * workgroups, up to max_reps, within the loop budget. */
static uint32_t
row_reps(const ks_vk_exact *k, const ks_vk_exact_args *a)
{
    uint64_t n_wg = ((uint64_t)a->rows + k->wg_size - 1u) / k->wg_size;
    uint64_t reps = n_wg / WG_TARGET, by_trips = MAX_TRIPS / row_trips(k, a->cols);

    if (reps > k->max_reps)
        reps = k->max_reps;
    if (reps > by_trips)
        reps = by_trips;
    return reps ? (uint32_t)reps : 1u;
}

ks_status
ks_vk_exact_check(const ks_vk_exact *k, const ks_vk_exact_args *a, const ks_vk_exact_bufs *b)
{
    const type_info *t = &types[k->qtype];
    const char *name = k->pl ? k->pl->name : "exact";
    uint64_t n_tok = a->n_tok ? a->n_tok : 1u, last = n_tok - 1u;
    uint64_t stride = a->rows > 1 ? a->row_stride_bytes : 0;
    uint64_t nb, row_bytes, trips, end, x_words, x_end, y_end, r_end;
    bool want_b = k->flags & KS_VK_EXACT_BIAS, want_r = k->flags & KS_VK_EXACT_RESIDUAL;
    bool mixed = a->n_first != 0 && a->n_first < n_tok;
    bool want_i = k->flags & KS_VK_EXACT_EXPERT;
    uint64_t e_div = a->e_div ? a->e_div : 1u, x_last = want_i ? last / e_div : last;
    ks_status st;

    if (a->rows == 0 || a->cols == 0)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: shape %u x %u, expected rows and "
                        "cols >= 1", name, a->rows, a->cols);
    if (a->cols % k->block_elems)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: cols %u is not a multiple of the "
                        "block size %u", name, a->cols, k->block_elems);
    if ((a->w_off_bytes | stride) & 1u)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: w_off %" PRIu64 " and row stride %"
                        PRIu64 " must be even", name, a->w_off_bytes, a->row_stride_bytes);
    nb = a->cols / k->block_elems;
    row_bytes = nb * k->block_bytes;
    if (a->rows > 1 && a->row_stride_bytes < row_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: row stride %" PRIu64 " bytes, rows "
                        "of %u elements take %" PRIu64, name, a->row_stride_bytes, a->cols,
                        row_bytes);
    if (n_tok > k->max_n_tok)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: n_tok %" PRIu64 " tokens, the device "
                        "dispatches at most %u workgroups in z", name, n_tok, k->max_n_tok);
    if ((st = check_path(k, t, name, "path", a->path, a->cols)) != KS_OK)
        return st;
    if (mixed && (st = check_path(k, t, name, "path_rest", a->path_rest, a->cols)) != KS_OK)
        return st;
    x_words = ks_vk_act_words(k->qtype, a->cols);
    if (n_tok > 1 && a->x_stride_words < x_words)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: x_stride_words %u, an activation row "
                        "of %u elements takes %" PRIu64 " words", name, a->x_stride_words,
                        a->cols, x_words);
    if (n_tok > 1 && a->y_stride < a->rows)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: y_stride %u with %u rows: the %" PRIu64
                        " tokens' outputs would overlap (expected >= %u)", name, a->y_stride,
                        a->rows, n_tok, a->rows);
    trips = row_trips(k, a->cols);
    if (trips > MAX_TRIPS)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: rows of %u elements take %" PRIu64
                        " loop trips per invocation, at most %u fit lavapipe's loop limit",
                        name, a->cols, trips, MAX_TRIPS);
    /* The shader's offsets are 32-bit; W is read in whole texels. */
    end = ks_align_up(a->w_off_bytes + (uint64_t)(a->rows - 1u) * stride + row_bytes, 16);
    if (want_i) {
        uint64_t one = (uint64_t)(a->rows - 1u) * stride + row_bytes;
        if (a->n_expert == 0 || (a->e_stride_bytes & 1u) ||
            (a->n_expert > 1 && a->e_stride_bytes < one))
            return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %u experts %" PRIu64 " bytes "
                            "apart, each of %" PRIu64 " bytes (expected >= 1 expert, an "
                            "even stride >= its bytes)", name, a->n_expert,
                            a->e_stride_bytes, one);
        end += (uint64_t)(a->n_expert - 1u) * a->e_stride_bytes;
        if (a->e_stride_bytes > UINT32_MAX ||
            (uint64_t)a->e_off + n_tok > UINT32_MAX / 4u)
            return ks_error(KS_ERR_INVALID_ARG, "vk: %s: the experts or their ids run past "
                            "the kernel's 32-bit offsets", name);
    }
    x_end = a->x_off_words + x_last * a->x_stride_words + x_words;
    y_end = a->y_off + last * a->y_stride + a->rows;
    r_end = a->r_off + last * a->r_stride + a->rows;
    if (end > UINT32_MAX || a->w_off_bytes > UINT32_MAX || stride > UINT32_MAX)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: weights end at byte %" PRIu64
                        ", beyond the 32-bit offsets the kernel uses", name, end);
    if (x_end > UINT32_MAX || y_end > UINT32_MAX / 4u || r_end > UINT32_MAX / 4u ||
        (uint64_t)a->b_off + a->rows > UINT32_MAX / 4u)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: an offset runs past the kernel's "
                        "32-bit indices", name);
    if (!b)
        return KS_OK;
    if (!b->w || !b->x || !b->y || (want_b && !b->bias) || (want_r && !b->residual) ||
        (want_i && !b->ids))
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: a buffer is missing", name);
    if (want_i && (st = check_words(name, "ids", b->ids, a->e_off, n_tok)) != KS_OK)
        return st;
    if (end > b->w->size_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: %u rows at byte %" PRIu64 " with "
                        "stride %" PRIu64 " need %" PRIu64 " bytes (rounded up to 16) of "
                        "buffer '%s', which has %" PRIu64, name, a->rows, a->w_off_bytes,
                        a->row_stride_bytes, end, b->w->name, b->w->size_bytes);
    if ((st = check_words(name, "x", b->x, x_end - x_words, x_words)) != KS_OK ||
        (st = check_words(name, "y", b->y, y_end - a->rows, a->rows)) != KS_OK)
        return st;
    if (want_b && (st = check_words(name, "bias", b->bias, a->b_off, a->rows)) != KS_OK)
        return st;
    if (want_r && (st = check_words(name, "residual", b->residual, r_end - a->rows,
                                    a->rows)) != KS_OK)
        return st;
    return KS_OK;
}

ks_status
ks_vk_exact_record(ks_vk_ctx *ctx, VkCommandBuffer cb, const ks_vk_exact *k,
                   VkDescriptorSet set, const ks_vk_exact_args *a)
{
    uint32_t push[PUSH_WORDS];
    uint32_t n_wg, gx, gy, max_x = ctx->info.max_wg_count[0];
    uint32_t n_tok = a->n_tok ? a->n_tok : 1u, reps;
    ks_status st;

    if ((st = ks_vk_exact_check(k, a, NULL)) != KS_OK)
        return st;
    reps = row_reps(k, a);
    n_wg = (uint32_t)(((uint64_t)a->rows + (uint64_t)k->wg_size * reps - 1u) /
                      ((uint64_t)k->wg_size * reps));
    gy = (n_wg + max_x - 1u) / max_x;
    gx = (n_wg + gy - 1u) / gy;
    if (gy > ctx->info.max_wg_count[1])
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: %u rows need %u x %u workgroups, "
                        "%s allows %u x %u", k->pl->name, a->rows, gx, gy, ctx->info.name,
                        max_x, ctx->info.max_wg_count[1]);
    /* The order of the Args block in shaders/exact.comp. Strides of a
     * single token are never used: zero them so they cannot matter. */
    push[0] = a->rows;
    push[1] = a->cols;
    push[2] = (uint32_t)a->w_off_bytes;
    push[3] = a->rows > 1 ? (uint32_t)a->row_stride_bytes : 0u;
    push[4] = a->x_off_words;
    push[5] = n_tok > 1 ? a->x_stride_words : 0u;
    push[6] = a->y_off;
    push[7] = n_tok > 1 ? a->y_stride : 0u;
    push[8] = a->b_off;
    push[9] = a->r_off;
    push[10] = n_tok > 1 ? a->r_stride : 0u;
    push[11] = a->path;
    push[12] = a->n_first != 0 && a->n_first < n_tok ? a->path_rest : a->path;
    push[13] = a->n_first != 0 && a->n_first < n_tok ? a->n_first : n_tok;
    push[14] = a->e_off;
    push[15] = a->e_div ? a->e_div : 1u;
    push[16] = (uint32_t)a->e_stride_bytes;
    push[17] = a->n_expert;
    push[18] = reps;
    ks_vk_cmd_dispatch(cb, k->pl, set, push, gx, gy, n_tok);
    return KS_OK;
}
