/* Kernel-level tests of the Vulkan op templates that runtime/vk_forward.c
 * uses besides the matrix kernels (shaders/quant.comp, norm.comp, glu.comp,
 * rope.comp, attn.comp) against the CPU code they reproduce:
 * ks_cpu_quantize_act, the CPU kernels named as the templates are
 * (runtime/cpu/norm.h, rope.h, glu.h: the ones forward.c runs), and the
 * CPU's one-query attention (ks_cpu_attn_scores_f16 + ks_cpu_attn_accum).
 *
 * Each case builds the template variant with the defines vk_forward.c
 * would pass, fills inputs with random rows (plus zeros, exact ties, fp16
 * subnormals, exponential over- and underflow), runs one dispatch on
 * strided rows starting at a token > 0 where the kernel takes tok0, and
 * compares every word of every output buffer with what the CPU computes,
 * sentinels around the rows included: bit for bit wherever the template
 * promises the CPU's arithmetic (KS_F64 on a device with shaderFloat64),
 * else within the tolerances of the one table below. A mismatch prints
 * the first differing words.
 *
 * fma(): Vulkan lets a driver round fma() twice (lavapipe does), so with
 * KS_F64 the templates emulate it in double precision (ks_fma in
 * shaders/common/numerics.glsl) unless KS_FMA_NATIVE says the device's
 * rounds once. These tests ask the exact kernel's probe
 * (driver/vk_exact.h) and pass KS_FMA_NATIVE where it found so; on
 * lavapipe they test the emulation, which the runtime uses everywhere.
 *
 * Runs on lavapipe when there is one (else the first device) with the
 * Khronos validation layer; any validation message fails. Skips (77)
 * without a Vulkan device or without glslang. The disk cache goes to a
 * temporary directory removed at the end. */
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver/base.h"
#include "runtime/cpu/attn.h"
#include "runtime/cpu/glu.h"
#include "runtime/cpu/norm.h"
#include "runtime/cpu/quant.h"
#include "runtime/cpu/quant_priv.h"
#include "runtime/cpu/rope.h"
#include "runtime/session_priv.h"
#ifdef KS_HAVE_VULKAN
#include "driver/vk.h"
#include "driver/vk_exact.h"
#endif

#if defined(KS_HAVE_VULKAN) && defined(KS_HAVE_GLSLANG)

/* Where a template is not bit-exact by design, the allowed error. */
static const struct {
    const char *what;
    double      tol;
} tols[] = {
    /* norm.comp without KS_F64 (the squares summed in float, in a tree):
     * xn against ks_cpu_norm_rms of the kernel's own x; lavapipe: 4 (0.6% of
     * the values are off by more than 2) */
    { "norm xn ulp", 4.0 },
    /* the residual after a KS_POST norm without KS_F64, in ulp of
     * |x| + |o'|; lavapipe: 3 */
    { "norm x ulp", 3.0 },
    /* rope.comp without KS_F64 (float QK-norm sums, the device's fma()),
     * in ulp of the head's largest value; the cache also one fp16 step;
     * lavapipe: 3 */
    { "rope ulp", 4.0 },
    /* attn.comp KS_ATTN_F32 against the CPU's tiled f32 attention (another
     * softmax order, ggml_v_expf), absolute with values in [-1, 1];
     * lavapipe: 2.4e-7 */
    { "attn f32", 2e-6 },
};

static double
tol_of(const char *what)
{
    for (size_t i = 0; i < sizeof tols / sizeof tols[0]; i++)
        if (strcmp(tols[i].what, what) == 0)
            return tols[i].tol;
    ck_abort_msg("no tolerance named %s", what);
    return 0.0;
}

/* Activation formats, as shaders/common/actq.glsl numbers them, and a
 * weight type whose activations take each (ks_cpu_act_type). */
enum { FMT_F32 = 0, FMT_F16, FMT_BF16, FMT_Q8_0, FMT_Q8_1, FMT_Q8_K, N_FMT };
static const ks_qtype fmt_wtype[N_FMT] = {
    KS_QUANT_F32, KS_QUANT_F16, KS_QUANT_BF16, KS_QUANT_Q8_0, KS_QUANT_Q4_1, KS_QUANT_Q4_K,
};
static const char *const fmt_names[N_FMT] = { "f32", "f16", "bf16", "q8_0", "q8_1", "q8_k" };

#define SENTINEL 0x7FC0DEADu  /* a NaN no kernel writes */

/* ---- random data ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static float
frand(void)  /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / (double)(1ull << 52) - 1.0);
}

static uint32_t
urand(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 33) % n);
}

static uint32_t
fbits(float f)
{
    uint32_t u;

    memcpy(&u, &f, 4);
    return u;
}

static float
bitsf(uint32_t u)
{
    float f;

    memcpy(&f, &u, 4);
    return f;
}

/* One activation row of |n| in one of four kinds:
 *   0: random, magnitudes varying by 32-block, one 32-block of zeros, a
 *      whole 256-block of zeros when n >= 512;
 *   1: exact ties: every 32-block holds +-127 first, so that the Q8 scale
 *      127/amax (Q8_K: -127/max) is +-1, then values k + 0.5;
 *   2: fp16 edge values: subnormals, halfway cases of fp16 and bf16,
 *      signed zeros, among random values;
 *   3: random, uniform in [-3, 3). */
static void
fill_row(float *x, uint32_t n, int kind)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t b = i / 32, j = i % 32;
        float v = frand();
        switch (kind) {
        case 0:
            v *= (float)(1u << (b % 5)) * (j % 11 == 0 ? 4.0f : 1.0f);
            if (b % 7 == 3 || (n >= 512 && i >= 256 && i < 512))
                v = 0.0f;
            break;
        case 1:
            if (j == 0)
                v = (b & 1) ? -127.0f : 127.0f;
            else
                v = (float)((int)urand(200) - 100) + 0.5f;
            break;
        case 2: {
            static const float edge[] = {
                0x1p-24f, -0x1p-24f, 0x1p-25f, -0x1.8p-25f, 0x1.8p-24f, 3e-7f, -6e-6f,
                0x1.ffcp-15f, 0x1.002p0f, 0x1.006p0f, -0x1.01p0f, 0x1.03p0f, 0.0f, -0.0f,
                65504.0f, 0x1.ffep15f, 1e-5f, -3e-8f,
            };
            if (j % 3 == 1)
                v = edge[(i / 3) % (sizeof edge / sizeof edge[0])];
            break;
        }
        default:
            v *= 3.0f;
            break;
        }
        x[i] = v;
    }
}

/* ---- the device ---- */

static ks_vk_ctx *
make_ctx(void)
{
    ks_vk_device_info d[16];
    uint32_t n = 16;
    ks_vk_ctx_params p = { 0 };
    ks_vk_ctx *ctx = NULL;

    if (ks_vk_devices_list(d, &n) == KS_OK)
        for (uint32_t i = 0; i < n; i++)
            if (d[i].driver_id == VK_DRIVER_ID_MESA_LLVMPIPE) {
                p.force_device = true;
                p.device_index = i;
                break;
            }
    ck_assert_msg(ks_vk_ctx_create(&p, &ctx) == KS_OK, "%s", ks_last_error());
    ck_assert(ctx->validation);
    return ctx;
}

static void
done_ctx(ks_vk_ctx *ctx)
{
    ck_assert_uint_eq(ks_vk_ctx_validation_count(ctx), 0);
    ks_vk_ctx_destroy(ctx);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}

/* The defines of one variant. */
typedef struct defset {
    char        s[10][24];
    const char *p[10];
    uint32_t    n;
} defset;

static void
def_add(defset *d, const char *fmt, ...)
{
    va_list ap;

    ck_assert_uint_lt(d->n, 10);
    va_start(ap, fmt);
    vsnprintf(d->s[d->n], sizeof d->s[0], fmt, ap);
    va_end(ap);
    d->p[d->n] = d->s[d->n];
    d->n++;
}

/* KS_F64 (when |f64| and the device has doubles) and KS_FMA_NATIVE (when
 * the device's fma() rounds once). */
static bool
f64_defs(ks_vk_ctx *ctx, defset *d, bool f64)
{
    ks_vk_exact *probe = NULL;

    if (!f64 || !ctx->caps.float64)
        return false;
    def_add(d, "KS_F64");
    ck_assert_msg(ks_vk_exact_get(ctx, KS_QUANT_F32, 0, &probe) == KS_OK, "%s",
                  ks_last_error());
    if (!probe->fma_emu)
        def_add(d, "KS_FMA_NATIVE");
    return true;
}

static ks_vk_pipeline *
pipe_make(ks_vk_ctx *ctx, const char *tmpl, const defset *d, uint32_t n_bufs,
          uint32_t push_bytes, uint32_t wg)
{
    ks_vk_compile_params cp = { .name = tmpl, .defines = d->p, .n_defines = d->n };
    ks_vk_spirv spv = { 0 };
    ks_vk_pipeline *pl = NULL;
    uint32_t spec[1] = { wg };

    ck_assert_msg(ks_vk_shader_get(ctx, tmpl, &cp, &spv) == KS_OK, "%s", ks_last_error());
    ks_vk_pipeline_params pp = {
        .name = tmpl, .spirv = spv.words, .n_words = spv.n_words, .n_buffers = n_bufs,
        .push_bytes = push_bytes, .spec = spec, .n_spec = 1, .max_sets = 16,
    };
    ck_assert_msg(ks_vk_pipeline_create(ctx, &pp, &pl) == KS_OK, "%s", ks_last_error());
    ks_vk_spirv_fini(&spv);
    return pl;
}

/* A device buffer of |bytes| (a multiple of 4) holding |data|. */
static void
buf_make(ks_vk_ctx *ctx, ks_vk_buffer *b, const char *name, const void *data, uint64_t bytes)
{
    ck_assert_int_eq(ks_vk_buffer_init(ctx, name, ks_align_up(bytes ? bytes : 4, 16),
                                       KS_VK_MEM_DEVICE, b), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, b, 0, data, bytes), KS_OK);
}

static void
buf_get(ks_vk_ctx *ctx, const ks_vk_buffer *b, void *out, uint64_t bytes)
{
    ck_assert_int_eq(ks_vk_buffer_download(ctx, b, 0, out, bytes), KS_OK);
}

static void
run(ks_vk_ctx *ctx, ks_vk_pipeline *pl, const ks_vk_buffer *const *bufs, uint32_t n_bufs,
    const void *push, uint32_t gx, uint32_t gy)
{
    VkDescriptorSet set;

    ck_assert_msg(ks_vk_pipeline_set(ctx, pl, bufs, n_bufs, &set) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_msg(ks_vk_dispatch(ctx, pl, set, push, gx, gy, 1) == KS_OK, "%s",
                  ks_last_error());
}

static uint32_t *
words_new(uint64_t n)  /* n words of SENTINEL */
{
    uint32_t *w = malloc((n ? n : 1) * 4);

    ck_assert_ptr_nonnull(w);
    for (uint64_t i = 0; i < n; i++)
        w[i] = SENTINEL;
    return w;
}

/* Words of got that differ from want; the first few are printed. */
static uint64_t
diff_words(const char *what, const uint32_t *got, const uint32_t *want, uint64_t n)
{
    uint64_t bad = 0;

    for (uint64_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ < 4)
            printf("  %s: word %llu: got %08x (%.9g) want %08x (%.9g)\n", what,
                   (unsigned long long)i, got[i], (double)bitsf(got[i]), want[i],
                   (double)bitsf(want[i]));
    if (bad)
        printf("  %s: %llu of %llu words differ\n", what, (unsigned long long)bad,
               (unsigned long long)n);
    return bad;
}

/* Distance in representable floats (0 for +0 and -0). */
static double
ulp_dist(float a, float b)
{
    int64_t ia = (int32_t)fbits(a), ib = (int32_t)fbits(b);

    if (ia < 0)
        ia = INT32_MIN - ia;
    if (ib < 0)
        ib = INT32_MIN - ib;
    return (double)llabs(ia - ib);
}

/* ---- the CPU side ---- */

static uint16_t
rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

/* What ks_actq writes for row |x| (|n| elements) in format |fmt|: words
 * into q (ks_vk_act_words of them when packed, n otherwise) and, for Q8_1
 * in the float layout, the block sums into s. From the CPU's blocks. */
static void
actq_ref(uint32_t fmt, bool packed, const float *x, uint32_t n, uint32_t *q, float *s)
{
    ks_qtype wt = fmt_wtype[fmt];
    uint8_t *blk = malloc(ks_cpu_act_bytes(wt, n));

    ck_assert_ptr_nonnull(blk);
    ks_cpu_quantize_act(wt, x, blk, n);
    if (packed) {
        ks_vk_act_from_cpu(wt, blk, n, q);
        free(blk);
        return;
    }
    switch (fmt) {
    case FMT_F32:
        memcpy(q, blk, (size_t)n * 4);
        break;
    case FMT_F16:
    case FMT_BF16:
        for (uint32_t i = 0; i < n; i++) {
            uint16_t h = rd16(blk + 2 * i);
            q[i] = fbits(fmt == FMT_F16 ? ks_h2f(h) : ks_bf2f(h));
        }
        break;
    case FMT_Q8_0:
    case FMT_Q8_1: {
        uint32_t bb = fmt == FMT_Q8_1 ? 36 : 34, qo = fmt == FMT_Q8_1 ? 4 : 2;
        for (uint32_t b = 0; b < n / 32; b++) {
            const uint8_t *p = blk + (size_t)b * bb;
            float d = ks_h2f(rd16(p));
            if (fmt == FMT_Q8_1)
                s[b] = ks_h2f(rd16(p + 2));
            for (uint32_t j = 0; j < 32; j++)
                q[32 * b + j] = fbits(d * (float)(int8_t)p[qo + j]);
        }
        break;
    }
    case FMT_Q8_K:
        for (uint32_t b = 0; b < n / 256; b++) {
            const uint8_t *p = blk + (size_t)b * 292;
            float d;
            memcpy(&d, p, 4);
            for (uint32_t j = 0; j < 256; j++)
                q[256 * b + j] = fbits(d * (float)(int8_t)p[4 + j]);
        }
        break;
    }
    free(blk);
}

/* Expected format output for token rows tok0.. of |src| (|n| used, |xs|
 * floats apart): q rows |qs| words apart, sums |ss| apart. */
static void
actq_ref_rows(uint32_t fmt, bool packed, const float *src, uint32_t xs, uint32_t n,
              uint32_t tok0, uint32_t n_tok, uint32_t *q, uint32_t qs, float *s, uint32_t ss)
{
    for (uint32_t t = tok0; t < tok0 + n_tok; t++)
        actq_ref(fmt, packed, src + (size_t)t * xs, n, q + (size_t)t * qs, s + (size_t)t * ss);
}

/* ---- quant.comp ---- */

typedef struct quant_args {
    uint32_t n, x_stride, q_stride, s_stride, tok0;
} quant_args;

/* Mismatching words over all cases of a test, for the summary lines. */
static uint64_t n_cases, n_words_checked;
/* norm.comp without KS_F64: xn values checked, off at all, off by more
 * than 2 ulp */
static uint64_t n_xn_values, n_xn_off, n_xn_over2;

START_TEST(quant_formats)
{
    ks_vk_ctx *ctx = make_ctx();

    for (uint32_t fmt = 0; fmt < N_FMT; fmt++) {
        for (int packed = 0; packed < 2; packed++) {
            defset d = { 0 };
            def_add(&d, "KS_FMT0=%u", fmt);
            if (packed)
                def_add(&d, "KS_AQ_PACKED");
            f64_defs(ctx, &d, true);
            ks_vk_pipeline *pl = pipe_make(ctx, "quant.comp", &d, 3, sizeof(quant_args), 64);
            static const uint32_t shapes[] = { 64, 576, 640, 96 };
            static const uint32_t shapes_k[] = { 512, 768, 2048 };
            bool k = fmt == FMT_Q8_K;
            uint32_t n_shapes = k ? 3 : 4;

            for (uint32_t si = 0; si < n_shapes; si++) {
                uint32_t n = k ? shapes_k[si] : shapes[si];
                uint32_t tok0 = si == 1 ? 2 : 0, n_tok = 4, nt = tok0 + n_tok;
                uint32_t xs = n + 8, qs = n + 16, ss = n / 32 + 2;
                float *x = malloc((size_t)nt * xs * 4);
                uint32_t *q = words_new((size_t)nt * qs), *qw = words_new((size_t)nt * qs);
                uint32_t *sb = words_new((size_t)nt * ss), *sw = words_new((size_t)nt * ss);
                ks_vk_buffer xb, qb, sbuf;

                ck_assert_ptr_nonnull(x);
                for (uint32_t i = 0; i < nt * xs; i++)
                    x[i] = NAN;
                for (uint32_t t = 0; t < nt; t++)
                    fill_row(x + (size_t)t * xs, n, (int)(t % 4));
                actq_ref_rows(fmt, packed, x, xs, n, tok0, n_tok, qw, qs, (float *)sw, ss);
                buf_make(ctx, &xb, "x", x, (size_t)nt * xs * 4);
                buf_make(ctx, &qb, "q", q, (size_t)nt * qs * 4);
                buf_make(ctx, &sbuf, "s", sb, (size_t)nt * ss * 4);
                quant_args a = { n, xs, qs, ss, tok0 };
                const ks_vk_buffer *bufs[3] = { &xb, &qb, &sbuf };
                run(ctx, pl, bufs, 3, &a, n_tok, 1);
                buf_get(ctx, &qb, q, (size_t)nt * qs * 4);
                buf_get(ctx, &sbuf, sb, (size_t)nt * ss * 4);
                char what[64];
                snprintf(what, sizeof what, "quant %s %s n=%u tok0=%u", fmt_names[fmt],
                         packed ? "packed" : "float", n, tok0);
                uint64_t bad = diff_words(what, q, qw, (size_t)nt * qs);
                bad += diff_words("sums", sb, sw, (size_t)nt * ss);
                ck_assert_msg(bad == 0, "%s: %llu words differ from the CPU's", what,
                              (unsigned long long)bad);
                n_cases++;
                n_words_checked += (size_t)nt * (qs + ss);
                ks_vk_buffer_fini(ctx, &xb);
                ks_vk_buffer_fini(ctx, &qb);
                ks_vk_buffer_fini(ctx, &sbuf);
                free(x);
                free(q);
                free(qw);
                free(sb);
                free(sw);
            }
            ks_vk_pipeline_destroy(ctx, pl);
        }
    }
    printf("quant.comp: %llu cases, %llu words, all bit-exact\n", (unsigned long long)n_cases,
           (unsigned long long)n_words_checked);
    done_ctx(ctx);
}
END_TEST

/* ---- norm.comp ---- */

typedef struct norm_args {
    uint32_t n, x_stride, q_stride, s_stride, tok0;
    float    eps;
} norm_args;

typedef struct norm_case {
    bool     add, post;
    int      fmt0, fmt1;  /* -1: none */
    bool     packed;
} norm_case;

/* Each fusion with no format, one and two formats; over the list every
 * format appears in both layouts. */
static const norm_case norm_cases[] = {
    { false, false, -1, -1, false },
    { false, false, FMT_Q8_0, -1, false },
    { false, false, FMT_Q8_1, FMT_Q8_K, true },
    { false, false, FMT_F16, FMT_Q8_1, false },
    { true, false, FMT_F32, -1, false },
    { true, false, FMT_Q8_0, FMT_BF16, true },
    { true, false, FMT_Q8_K, FMT_F32, false },
    { true, false, FMT_F16, -1, true },
    { true, true, -1, -1, false },
    { true, true, FMT_BF16, FMT_Q8_1, false },
    { true, true, FMT_Q8_K, -1, true },
    { true, true, FMT_Q8_1, FMT_F32, true },
};

static void
norm_run(ks_vk_ctx *ctx, const norm_case *c, bool f64_req, double *worst_xn, double *worst_x)
{
    defset d = { 0 };
    bool k = c->fmt0 == FMT_Q8_K || c->fmt1 == FMT_Q8_K;
    static const uint32_t shapes[] = { 64, 576, 640, 160 };
    static const uint32_t shapes_k[] = { 512, 768, 2048 };
    const float eps = 1e-6f;

    if (c->post)
        def_add(&d, "KS_POST");
    if (c->add)
        def_add(&d, "KS_ADD");
    if (c->fmt0 >= 0)
        def_add(&d, "KS_FMT0=%d", c->fmt0);
    if (c->fmt1 >= 0)
        def_add(&d, "KS_FMT1=%d", c->fmt1);
    if (c->packed)
        def_add(&d, "KS_AQ_PACKED");
    bool f64 = f64_defs(ctx, &d, f64_req);
    ks_vk_pipeline *pl = pipe_make(ctx, "norm.comp", &d, 8, sizeof(norm_args), 64);

    for (uint32_t si = 0; si < (k ? 3u : 4u); si++) {
        uint32_t n = k ? shapes_k[si] : shapes[si];
        uint32_t tok0 = si == 1 ? 3 : 0, n_tok = si == 2 ? 1 : 4, nt = tok0 + n_tok;
        uint32_t xs = n + 4, qs = n + 16, ss = n / 32 + 2;
        size_t nx = (size_t)nt * xs, nq = (size_t)nt * qs, ns = (size_t)nt * ss;
        float *x = malloc(nx * 4), *o = malloc(nx * 4), *w = malloc(n * 4), *pw = malloc(n * 4);
        float *xw = malloc(nx * 4), *ow = malloc(n * 4);
        uint32_t *xg = words_new(nx), *xn = words_new(nx), *xnw = words_new(nx);
        uint32_t *q[2] = { words_new(nq), words_new(nq) }, *qw[2] = { words_new(nq),
                                                                       words_new(nq) };
        uint32_t *s = words_new(ns), *sw = words_new(ns);
        ks_vk_buffer bx, bo, bpw, bw, bxn, bq0, bq1, bs;
        char what[96];

        ck_assert(x && o && w && pw && xw && ow);
        for (size_t i = 0; i < nx; i++)
            x[i] = o[i] = NAN;
        for (uint32_t t = 0; t < nt; t++) {
            fill_row(x + (size_t)t * xs, n, t % 2 ? 3 : 0);
            fill_row(o + (size_t)t * xs, n, 3);
        }
        for (uint32_t i = 0; i < n; i++) {
            w[i] = 1.0f + 0.5f * frand();
            pw[i] = 0.5f + frand();
        }
        /* the CPU, as forward.c: post-norm of o, x += o, xn = norm(x) */
        memcpy(xw, x, nx * 4);
        for (uint32_t t = tok0; t < nt; t++) {
            float *xr = xw + (size_t)t * xs, *xnr = (float *)xnw + (size_t)t * xs;
            if (c->add) {
                memcpy(ow, o + (size_t)t * xs, n * 4);
                ks_cpu_norm_add(xr, ow, c->post ? pw : NULL, n, eps);
            }
            ks_cpu_norm_rms(xnr, xr, w, n, eps);
        }

        buf_make(ctx, &bx, "x", x, nx * 4);
        buf_make(ctx, &bo, "o", o, nx * 4);
        buf_make(ctx, &bpw, "pw", pw, n * 4);
        buf_make(ctx, &bw, "w", w, n * 4);
        buf_make(ctx, &bxn, "xn", xn, nx * 4);
        buf_make(ctx, &bq0, "q0", q[0], nq * 4);
        buf_make(ctx, &bq1, "q1", q[1], nq * 4);
        buf_make(ctx, &bs, "s", s, ns * 4);
        norm_args a = { n, xs, qs, ss, tok0, eps };
        const ks_vk_buffer *bufs[8] = { &bx, &bo, &bpw, &bw, &bxn, &bq0, &bq1, &bs };
        run(ctx, pl, bufs, 8, &a, n_tok, 1);
        buf_get(ctx, &bx, xg, nx * 4);
        buf_get(ctx, &bxn, xn, nx * 4);
        buf_get(ctx, &bq0, q[0], nq * 4);
        buf_get(ctx, &bq1, q[1], nq * 4);
        buf_get(ctx, &bs, s, ns * 4);

        snprintf(what, sizeof what, "norm%s%s fmt %d,%d %s%s n=%u tok0=%u n_tok=%u",
                 c->add ? " add" : "", c->post ? " post" : "", c->fmt0, c->fmt1,
                 c->packed ? "packed" : "float", f64 ? " f64" : "", n, tok0, n_tok);
        uint64_t bad = 0;
        if (f64 || !c->post) {
            bad += diff_words("x", xg, (const uint32_t *)xw, nx);
        } else {
            /* the post-norm's scale from a float sum: near the CPU's x */
            for (uint32_t t = tok0; t < nt; t++) {
                for (uint32_t i = 0; i < n; i++) {
                    size_t at = (size_t)t * xs + i;
                    float got = bitsf(xg[at]), want = xw[at];
                    float mag = fabsf(x[at]) + fabsf(want - x[at]);
                    double e = fabs((double)got - (double)want) / (double)(nextafterf(mag, INFINITY) - mag);
                    if (e > *worst_x)
                        *worst_x = e;
                }
            }
            ck_assert_msg(*worst_x <= tol_of("norm x ulp"), "%s: x off by %.2f ulp", what,
                          *worst_x);
        }
        if (f64) {
            bad += diff_words("xn", xn, xnw, nx);
            n_xn_values += (uint64_t)n * n_tok;
        } else {
            /* xn from the GPU's own x, within a few ulp */
            for (uint32_t t = tok0; t < nt; t++) {
                float *xr = (float *)xg + (size_t)t * xs, *xnr = (float *)xnw + (size_t)t * xs;
                ks_cpu_norm_rms(xnr, xr, w, n, eps);
                for (uint32_t i = 0; i < n; i++) {
                    double e = ulp_dist(bitsf(xn[(size_t)t * xs + i]), xnr[i]);
                    if (e > *worst_xn)
                        *worst_xn = e;
                    n_xn_values++;
                    n_xn_off += e > 0.0;
                    n_xn_over2 += e > 2.0;
                }
            }
            ck_assert_msg(*worst_xn <= tol_of("norm xn ulp"), "%s: xn off by %.0f ulp", what,
                          *worst_xn);
        }
        /* the formats, from the GPU's own xn (so a norm difference shows
         * above, not twice) */
        int fm[2] = { c->fmt0, c->fmt1 };
        for (int wi = 0; wi < 2; wi++) {
            if (fm[wi] < 0)
                continue;
            actq_ref_rows((uint32_t)fm[wi], c->packed, (const float *)xn, xs, n, tok0, n_tok,
                          qw[wi], qs, (float *)sw, ss);
            bad += diff_words(fmt_names[fm[wi]], q[wi], qw[wi], nq);
        }
        bad += diff_words("sums", s, sw, ns);
        ck_assert_msg(bad == 0, "%s: %llu words differ from the CPU's", what,
                      (unsigned long long)bad);
        n_cases++;

        const ks_vk_buffer *all[8] = { &bx, &bo, &bpw, &bw, &bxn, &bq0, &bq1, &bs };
        for (int i = 0; i < 8; i++)
            ks_vk_buffer_fini(ctx, (ks_vk_buffer *)all[i]);
        free(x);
        free(o);
        free(w);
        free(pw);
        free(xw);
        free(ow);
        free(xg);
        free(xn);
        free(xnw);
        free(q[0]);
        free(q[1]);
        free(qw[0]);
        free(qw[1]);
        free(s);
        free(sw);
    }
    ks_vk_pipeline_destroy(ctx, pl);
}

START_TEST(norm_variants)
{
    ks_vk_ctx *ctx = make_ctx();
    bool f64 = _i == 1;
    double worst_xn = 0.0, worst_x = 0.0;

    if (f64 && !ctx->caps.float64) {
        printf("norm.comp KS_F64: the device has no shaderFloat64, not tested\n");
        done_ctx(ctx);
        return;
    }
    for (size_t i = 0; i < sizeof norm_cases / sizeof norm_cases[0]; i++)
        norm_run(ctx, &norm_cases[i], f64, &worst_xn, &worst_x);
    if (f64)
        printf("norm.comp KS_F64: %llu cases, x, xn (%llu values) and formats bit-exact\n",
               (unsigned long long)n_cases, (unsigned long long)n_xn_values);
    else
        printf("norm.comp without KS_F64: %llu cases, xn within %.0f ulp (%llu of %llu values "
               "off, %llu by more than 2), x (post) within %.2f ulp, formats bit-exact\n",
               (unsigned long long)n_cases, worst_xn, (unsigned long long)n_xn_off,
               (unsigned long long)n_xn_values, (unsigned long long)n_xn_over2, worst_x);
    done_ctx(ctx);
}
END_TEST

/* ---- glu.comp ---- */

START_TEST(glu_variants)
{
    ks_vk_ctx *ctx = make_ctx();
    bool gelu = _i == 1;
    const uint16_t *tab = ks_gelu_table();
    ks_vk_buffer bt;
    /* (format, layout); -1: none. Every format once in each layout. */
    static const int fmts[][2] = {
        { -1, 0 }, { FMT_F32, 0 }, { FMT_F16, 1 }, { FMT_BF16, 0 }, { FMT_Q8_0, 1 },
        { FMT_Q8_1, 0 }, { FMT_Q8_K, 1 }, { FMT_F32, 1 }, { FMT_F16, 0 }, { FMT_BF16, 1 },
        { FMT_Q8_0, 0 }, { FMT_Q8_1, 1 }, { FMT_Q8_K, 0 },
    };

    buf_make(ctx, &bt, "gelu table", tab, 65536u * 2u);
    for (size_t fi = 0; fi < sizeof fmts / sizeof fmts[0]; fi++) {
        int fmt = fmts[fi][0];
        bool packed = fmts[fi][1] != 0;
        defset d = { 0 };
        def_add(&d, gelu ? "KS_GELU" : "KS_SILU");
        if (fmt >= 0)
            def_add(&d, "KS_FMT0=%d", fmt);
        if (packed)
            def_add(&d, "KS_AQ_PACKED");
        f64_defs(ctx, &d, true);
        ks_vk_pipeline *pl = pipe_make(ctx, "glu.comp", &d, 5, sizeof(quant_args), 64);
        /* rows not a multiple of 8 (the CPU's vector SiLU stops at
         * n / 8 * 8) where the format allows */
        static const uint32_t shapes[] = { 64, 576, 640, 100 };
        static const uint32_t shapes32[] = { 64, 576, 640, 96 };
        static const uint32_t shapes_k[] = { 512, 768, 2048 };
        bool k = fmt == FMT_Q8_K, any = fmt < 0 || fmt <= FMT_BF16;

        for (uint32_t si = 0; si < (k ? 3u : 4u); si++) {
            uint32_t n = k ? shapes_k[si] : any ? shapes[si] : shapes32[si];
            uint32_t tok0 = si == 1 ? 1 : 0, n_tok = 3, nt = tok0 + n_tok;
            uint32_t gs = n + 4, qs = n + 16, ss = n / 32 + 2;
            size_t ng = (size_t)nt * gs, nq = (size_t)nt * qs, ns = (size_t)nt * ss;
            float *g = malloc(ng * 4), *u = malloc(ng * 4), *gw = malloc(ng * 4);
            uint32_t *gg = words_new(ng), *q = words_new(nq), *qw = words_new(nq);
            uint32_t *s = words_new(ns), *sw = words_new(ns);
            ks_vk_buffer bg, bu, bq, bs;
            char what[96];

            ck_assert(g && u && gw);
            for (size_t i = 0; i < ng; i++)
                g[i] = u[i] = NAN;
            for (uint32_t t = 0; t < nt; t++) {
                float *gr = g + (size_t)t * gs, *ur = u + (size_t)t * gs;
                fill_row(gr, n, t == 2 ? 2 : 3);
                fill_row(ur, n, 3);
                for (uint32_t i = 0; i < n; i++) {
                    if (t != 2)
                        gr[i] *= 4.0f;  /* [-12, 12): both GELU tails */
                    if (i % 29 == 7) {
                        static const float big[] = { -100.0f, 100.0f, -150.0f, 150.0f,
                                                     -87.5f, 88.8f, -10.0f, 10.0f,
                                                     -9.99f, 9.99f, -0x1.3ffp3f };
                        gr[i] = big[(i / 29 + t) % (sizeof big / sizeof big[0])];
                    }
                }
            }
            memcpy(gw, g, ng * 4);
            for (uint32_t t = tok0; t < nt; t++) {
                float *gr = gw + (size_t)t * gs, *ur = u + (size_t)t * gs;
                if (gelu)
                    ks_cpu_glu_gelu(gr, ur, n, 0, n);
                else
                    ks_cpu_glu_silu(gr, ur, n, 0, n);
            }
            buf_make(ctx, &bg, "g", g, ng * 4);
            buf_make(ctx, &bu, "u", u, ng * 4);
            buf_make(ctx, &bq, "q", q, nq * 4);
            buf_make(ctx, &bs, "s", s, ns * 4);
            quant_args a = { n, gs, qs, ss, tok0 };
            const ks_vk_buffer *bufs[5] = { &bg, &bu, &bq, &bs, &bt };
            run(ctx, pl, bufs, 5, &a, n_tok, 1);
            buf_get(ctx, &bg, gg, ng * 4);
            buf_get(ctx, &bq, q, nq * 4);
            buf_get(ctx, &bs, s, ns * 4);
            snprintf(what, sizeof what, "glu %s fmt %d %s n=%u tok0=%u", gelu ? "gelu" : "silu",
                     fmt, packed ? "packed" : "float", n, tok0);
            uint64_t bad = diff_words("g", gg, (const uint32_t *)gw, ng);
            if (fmt >= 0)
                actq_ref_rows((uint32_t)fmt, packed, (const float *)gg, gs, n, tok0, n_tok, qw,
                              qs, (float *)sw, ss);
            bad += diff_words("q", q, qw, nq);
            bad += diff_words("sums", s, sw, ns);
            ck_assert_msg(bad == 0, "%s: %llu words differ from the CPU's", what,
                          (unsigned long long)bad);
            n_cases++;
            ks_vk_buffer_fini(ctx, &bg);
            ks_vk_buffer_fini(ctx, &bu);
            ks_vk_buffer_fini(ctx, &bq);
            ks_vk_buffer_fini(ctx, &bs);
            free(g);
            free(u);
            free(gw);
            free(gg);
            free(q);
            free(qw);
            free(s);
            free(sw);
        }
        ks_vk_pipeline_destroy(ctx, pl);
    }
    ks_vk_buffer_fini(ctx, &bt);
    printf("glu.comp %s: %llu cases, bit-exact\n", gelu ? "KS_GELU" : "KS_SILU",
           (unsigned long long)n_cases);
    done_ctx(ctx);
}
END_TEST

/* ---- rope.comp ---- */

typedef struct rope_args {
    uint32_t n_head, n_head_kv, hd, n_rot, q_stride, kv_stride, cs_off, cs_stride, kv_words;
    float    eps;
} rope_args;

typedef struct rope_shape {
    uint32_t n_head, n_head_kv, hd, n_rot;
} rope_shape;

static const rope_shape rope_shapes[] = {
    { 4, 2, 64, 64 }, { 9, 3, 128, 128 }, { 2, 1, 256, 256 }, { 4, 4, 64, 32 },
    { 3, 1, 80, 80 }, { 2, 2, 8, 8 },
};

START_TEST(rope_variants)
{
    ks_vk_ctx *ctx = make_ctx();
    bool neox = _i & 1, qk_norm = _i & 2, f64_req = !(_i & 4);
    double worst = 0.0;
    defset d = { 0 };

    if (neox)
        def_add(&d, "KS_NEOX");
    if (qk_norm)
        def_add(&d, "KS_QK_NORM");
    bool f64 = f64_defs(ctx, &d, f64_req);
    ks_vk_pipeline *pl = pipe_make(ctx, "rope.comp", &d, 8, sizeof(rope_args), 32);
    const float eps = 1e-6f;
    bool exact = f64;

    for (size_t si = 0; si < sizeof rope_shapes / sizeof rope_shapes[0]; si++) {
        const rope_shape *r = &rope_shapes[si];
        uint32_t hd = r->hd, q_dim = r->n_head * hd, kv_dim = r->n_head_kv * hd;
        uint32_t n_tok = si == 2 ? 1 : 3, pos0 = si == 0 ? 0 : 5 + (uint32_t)si;
        uint32_t n_ctx = pos0 + n_tok + 2, qst = q_dim + 8, kvst = kv_dim + 6;
        uint32_t kvw = kv_dim / 2, cs_off = 4;
        size_t nq = (size_t)n_tok * qst, nkv = (size_t)n_tok * kvst, ncw = (size_t)n_ctx * kvw;
        size_t npar = cs_off + (size_t)n_tok * r->n_rot;
        float *q = malloc(nq * 4), *k = malloc(nkv * 4), *v = malloc(nkv * 4);
        float *qn = malloc(hd * 4), *kn = malloc(hd * 4), *par = malloc(npar * 4);
        float *qw = malloc(nq * 4), *kw = malloc(nkv * 4);
        uint32_t *qg = words_new(nq), *kc = words_new(ncw), *vc = words_new(ncw);
        uint32_t *kcw = words_new(ncw), *vcw = words_new(ncw);
        ks_vk_buffer bq, bk, bv, bqn, bkn, bp, bkc, bvc;
        char what[96];

        ck_assert(q && k && v && qn && kn && par && qw && kw);
        for (size_t i = 0; i < nq; i++)
            q[i] = i % qst < q_dim ? 2.0f * frand() : NAN;
        for (size_t i = 0; i < nkv; i++) {
            k[i] = i % kvst < kv_dim ? 2.0f * frand() : NAN;
            v[i] = i % kvst < kv_dim ? (i % 17 == 3 ? 3e-6f * frand() : frand()) : NAN;
        }
        for (uint32_t i = 0; i < hd; i++) {
            qn[i] = 1.0f + 0.5f * frand();
            kn[i] = 1.0f + 0.5f * frand();
        }
        memcpy(&par[0], &pos0, 4);
        par[1] = par[2] = par[3] = NAN;
        ks_cpu_rope_table(par + cs_off, pos0, n_tok, r->n_rot, 10000.0f, 1.0f);

        /* the CPU, as forward.c */
        memcpy(qw, q, nq * 4);
        memcpy(kw, k, nkv * 4);
        for (uint32_t t = 0; t < n_tok; t++) {
            const float *cs = par + cs_off + (size_t)t * r->n_rot;
            for (uint32_t h = 0; h < r->n_head; h++) {
                float *qh = qw + (size_t)t * qst + h * hd;
                if (qk_norm)
                    ks_cpu_norm_rms(qh, qh, qn, hd, eps);
                ks_cpu_rope_apply(qh, cs, r->n_rot, neox);
            }
            for (uint32_t h = 0; h < r->n_head_kv; h++) {
                float *kh = kw + (size_t)t * kvst + h * hd;
                if (qk_norm)
                    ks_cpu_norm_rms(kh, kh, kn, hd, eps);
                ks_cpu_rope_apply(kh, cs, r->n_rot, neox);
            }
            for (uint32_t i = 0; i < kv_dim; i += 2) {
                size_t at = (size_t)t * kvst + i, cw = (size_t)(pos0 + t) * kvw + i / 2;
                kcw[cw] = ks_f32_to_fp16(kw[at]) | (uint32_t)ks_f32_to_fp16(kw[at + 1]) << 16;
                vcw[cw] = ks_f32_to_fp16(v[at]) | (uint32_t)ks_f32_to_fp16(v[at + 1]) << 16;
            }
        }

        buf_make(ctx, &bq, "q", q, nq * 4);
        buf_make(ctx, &bk, "k", k, nkv * 4);
        buf_make(ctx, &bv, "v", v, nkv * 4);
        buf_make(ctx, &bqn, "q norm", qn, hd * 4);
        buf_make(ctx, &bkn, "k norm", kn, hd * 4);
        buf_make(ctx, &bp, "params", par, npar * 4);
        buf_make(ctx, &bkc, "k cache", kc, ncw * 4);
        buf_make(ctx, &bvc, "v cache", vc, ncw * 4);
        rope_args a = { r->n_head, r->n_head_kv, hd, r->n_rot, qst, kvst, cs_off, r->n_rot,
                        kvw, eps };
        const ks_vk_buffer *bufs[8] = { &bq, &bk, &bv, &bqn, &bkn, &bp, &bkc, &bvc };
        run(ctx, pl, bufs, 8, &a, r->n_head + r->n_head_kv, n_tok);
        buf_get(ctx, &bq, qg, nq * 4);
        buf_get(ctx, &bkc, kc, ncw * 4);
        buf_get(ctx, &bvc, vc, ncw * 4);

        snprintf(what, sizeof what, "rope%s%s%s heads %u/%u hd %u n_rot %u pos0 %u",
                 neox ? " neox" : "", qk_norm ? " qk_norm" : "", f64 ? " f64" : "",
                 r->n_head, r->n_head_kv, hd, r->n_rot, pos0);
        uint64_t bad = 0;
        if (exact) {
            bad += diff_words("q", qg, (const uint32_t *)qw, nq);
            bad += diff_words("k cache", kc, kcw, ncw);
        } else {
            /* float QK-norm sums and fma() as the device rounds it: q
             * within a few ulp of its head's largest value (the rotation
             * cancels, so not of each value); the cache rows are fp16 of
             * that, one fp16 step at most */
            for (uint32_t t = 0; t < n_tok; t++) {
                for (uint32_t h = 0; h < r->n_head; h++) {
                    size_t h0 = (size_t)t * qst + h * hd;
                    float mx = 0.0f;
                    for (uint32_t i = 0; i < hd; i++)
                        mx = fmaxf(mx, fabsf(qw[h0 + i]));
                    double ulp = (double)(nextafterf(mx, INFINITY) - mx);
                    for (uint32_t i = 0; i < hd; i++) {
                        double e = fabs((double)bitsf(qg[h0 + i]) - qw[h0 + i]) / ulp;
                        if (!(e <= worst))
                            worst = e;
                    }
                }
                for (uint32_t i = q_dim; i < qst; i++)
                    bad += qg[(size_t)t * qst + i] != fbits(q[(size_t)t * qst + i]);
            }
            for (uint32_t t = 0; t < n_tok; t++) {
                for (uint32_t h = 0; h < r->n_head_kv; h++) {
                    size_t h0 = (size_t)t * kvst + h * hd;
                    size_t w0 = (size_t)(pos0 + t) * kvw + h * hd / 2;
                    float mx = 0.0f;
                    for (uint32_t i = 0; i < hd; i++)
                        mx = fmaxf(mx, fabsf(kw[h0 + i]));
                    double ulp = (double)(nextafterf(mx, INFINITY) - mx);
                    for (uint32_t i = 0; i < hd; i++) {
                        uint16_t g16 = (uint16_t)(kc[w0 + i / 2] >> (16 * (i % 2)));
                        uint16_t w16 = ks_f32_to_fp16(kw[h0 + i]);
                        uint16_t a16 = w16 & 0x7FFF;
                        /* one fp16 step, and the f32 error */
                        double step = (double)(ks_h2f((uint16_t)(a16 + 1)) - ks_h2f(a16));
                        double e = (fabs((double)ks_h2f(g16) - ks_h2f(w16)) - step) / ulp;
                        if (!(e <= worst))
                            worst = e;
                    }
                }
            }
            for (size_t i = 0; i < ncw; i++)
                bad += (kc[i] == SENTINEL) != (kcw[i] == SENTINEL);
            ck_assert_msg(worst <= tol_of("rope ulp"), "%s: q off by %.1f ulp", what, worst);
        }
        bad += diff_words("v cache", vc, vcw, ncw);
        ck_assert_msg(bad == 0, "%s: %llu words differ from the CPU's", what,
                      (unsigned long long)bad);
        n_cases++;

        const ks_vk_buffer *all[8] = { &bq, &bk, &bv, &bqn, &bkn, &bp, &bkc, &bvc };
        for (int i = 0; i < 8; i++)
            ks_vk_buffer_fini(ctx, (ks_vk_buffer *)all[i]);
        free(q);
        free(k);
        free(v);
        free(qn);
        free(kn);
        free(par);
        free(qw);
        free(kw);
        free(qg);
        free(kc);
        free(vc);
        free(kcw);
        free(vcw);
    }
    ks_vk_pipeline_destroy(ctx, pl);
    if (exact)
        printf("rope.comp%s%s%s: %llu cases, bit-exact\n", neox ? " KS_NEOX" : "",
               qk_norm ? " KS_QK_NORM" : "", f64 ? " KS_F64" : "", (unsigned long long)n_cases);
    else
        printf("rope.comp%s%s: %llu cases, q within %.1f ulp\n", neox ? " KS_NEOX" : "",
               qk_norm ? " KS_QK_NORM" : "", (unsigned long long)n_cases, worst);
    done_ctx(ctx);
}
END_TEST

/* ---- attn.comp ---- */

typedef struct attn_args {
    uint32_t n_head, n_head_kv, hd, q_stride, kv_words, n_swa;
    float    s_scale, q_scale;
} attn_args;

typedef struct attn_case {
    uint32_t n_head, n_head_kv, hd;
    uint32_t pos0, n_tok, n_swa;
    bool     gemma;  /* the query scaled before rounding, scores by 1 */
} attn_case;

static const attn_case attn_cases[] = {
    { 9, 3, 64, 0, 3, 0, false },     /* 1..3 keys */
    { 9, 3, 64, 30, 4, 0, false },    /* across the 32-key chunk */
    { 4, 2, 8, 296, 4, 0, false },    /* 297..300 keys, head size 8 */
    { 2, 1, 256, 150, 2, 0, false },
    { 9, 3, 256, 70, 2, 40, false },  /* sliding window */
    { 4, 1, 72, 120, 3, 0, true },    /* a 32-multiple plus a tail; gemma3 */
    { 9, 3, 64, 200, 3, 64, true },
};

START_TEST(attn_variants)
{
    ks_vk_ctx *ctx = make_ctx();
    bool f32 = _i == 1;
    defset d = { 0 };
    double worst = 0.0;

    if (f32)
        def_add(&d, "KS_ATTN_F32");
    bool f64 = f64_defs(ctx, &d, true);
    if (!f32 && !f64) {
        printf("attn.comp: the device has no shaderFloat64; the default variant is not "
               "bit-exact there and is not tested\n");
        done_ctx(ctx);
        return;
    }
    ks_vk_pipeline *pl = pipe_make(ctx, "attn.comp", &d, 5, sizeof(attn_args), 32);

    for (size_t ci = 0; ci < sizeof attn_cases / sizeof attn_cases[0]; ci++) {
        const attn_case *c = &attn_cases[ci];
        uint32_t hd = c->hd, q_dim = c->n_head * hd, kv_dim = c->n_head_kv * hd;
        uint32_t n_ctx = c->pos0 + c->n_tok + 3, kvw = kv_dim / 2, qst = q_dim + 4;
        size_t nq = (size_t)c->n_tok * qst, ncw = (size_t)n_ctx * kvw;
        float attn_scale = 1.0f / sqrtf((float)hd);
        float *q = malloc(nq * 4), *outw = malloc(nq * 4);
        float *scores = malloc((size_t)n_ctx * 4), *work = malloc(hd * 4 + 64);
        float *qs = malloc(hd * 4), *kq = malloc(64 * 4);
        uint16_t *qh = malloc(hd * 2);
        uint32_t *kc = malloc(ncw * 4), *vc = malloc(ncw * 4), *out = words_new(nq);
        uint32_t par[4];
        ks_vk_buffer bq, bkc, bvc, bo, bp;
        char what[96];

        ck_assert(q && outw && scores && work && qs && kq && qh && kc && vc);
        for (size_t i = 0; i < nq; i++)
            q[i] = i % qst < q_dim ? 3.0f * frand() : NAN;
        for (size_t i = 0; i < ncw; i++) {
            kc[i] = ks_f32_to_fp16(frand()) | (uint32_t)ks_f32_to_fp16(frand()) << 16;
            vc[i] = ks_f32_to_fp16(frand()) | (uint32_t)ks_f32_to_fp16(frand()) << 16;
        }
        for (size_t i = 0; i < nq; i++)
            outw[i] = bitsf(SENTINEL);
        par[0] = c->pos0;
        par[1] = par[2] = par[3] = SENTINEL;

        /* the CPU, as forward.c's attn_worker for batches under 64 (and,
         * for the f32 variant, its tiled path) */
        uint64_t row_bytes = (uint64_t)kv_dim * 2;
        for (uint32_t t = 0; t < c->n_tok; t++) {
            for (uint32_t h = 0; h < c->n_head; h++) {
                uint32_t pos = c->pos0 + t, kvh = h / (c->n_head / c->n_head_kv);
                uint32_t first = c->n_swa && pos + 1 > c->n_swa ? pos + 1 - c->n_swa : 0;
                uint32_t n_keys = pos + 1 - first;
                const float *qr = q + (size_t)t * qst + h * hd;
                float *o = outw + (size_t)t * qst + h * hd, scale = attn_scale;
                const uint8_t *k0 = (const uint8_t *)kc + (uint64_t)kvh * hd * 2;
                const uint8_t *v0 = (const uint8_t *)vc + (uint64_t)kvh * hd * 2;

                if (c->gemma) {
                    for (uint32_t i = 0; i < hd; i++)
                        qs[i] = qr[i] * attn_scale;
                    qr = qs;
                    scale = 1.0f;
                }
                if (f32) {
                    ks_cpu_attn_tiled(KS_QUANT_F16, qr, k0, v0, row_bytes, hd, first, n_keys,
                                      scale, kq, work, o);
                    continue;
                }
                ks_cpu_quantize_act(KS_QUANT_F16, qr, qh, hd);
                ks_cpu_attn_scores_f16(k0 + first * row_bytes, row_bytes, hd, n_keys, qh,
                                       scores);
                ks_cpu_attn_accum(KS_QUANT_F16, v0 + first * row_bytes, row_bytes, hd, n_keys,
                                  scores, scale, work, o);
            }
        }

        buf_make(ctx, &bq, "q", q, nq * 4);
        buf_make(ctx, &bkc, "k cache", kc, ncw * 4);
        buf_make(ctx, &bvc, "v cache", vc, ncw * 4);
        buf_make(ctx, &bo, "out", out, nq * 4);
        buf_make(ctx, &bp, "params", par, sizeof par);
        attn_args a = { c->n_head, c->n_head_kv, hd, qst, kvw, c->n_swa,
                        c->gemma ? 1.0f : attn_scale, c->gemma ? attn_scale : 1.0f };
        const ks_vk_buffer *bufs[5] = { &bq, &bkc, &bvc, &bo, &bp };
        run(ctx, pl, bufs, 5, &a, c->n_head, c->n_tok);
        buf_get(ctx, &bo, out, nq * 4);

        snprintf(what, sizeof what, "attn%s heads %u/%u hd %u keys %u..%u swa %u%s",
                 f32 ? " f32" : "", c->n_head, c->n_head_kv, hd, c->pos0 + 1,
                 c->pos0 + c->n_tok, c->n_swa, c->gemma ? " gemma" : "");
        if (f32) {
            for (size_t i = 0; i < nq; i++) {
                if (i % qst >= q_dim) {
                    ck_assert_uint_eq(out[i], SENTINEL);
                    continue;
                }
                double e = fabs((double)bitsf(out[i]) - (double)outw[i]);
                if (!(e <= worst))
                    worst = e;
            }
            ck_assert_msg(worst <= tol_of("attn f32"), "%s: off by %g", what, worst);
        } else {
            uint64_t bad = diff_words("out", out, (const uint32_t *)outw, nq);
            ck_assert_msg(bad == 0, "%s: %llu words differ from the CPU's", what,
                          (unsigned long long)bad);
        }
        n_cases++;

        ks_vk_buffer_fini(ctx, &bq);
        ks_vk_buffer_fini(ctx, &bkc);
        ks_vk_buffer_fini(ctx, &bvc);
        ks_vk_buffer_fini(ctx, &bo);
        ks_vk_buffer_fini(ctx, &bp);
        free(q);
        free(outw);
        free(scores);
        free(work);
        free(qs);
        free(kq);
        free(qh);
        free(kc);
        free(vc);
        free(out);
    }
    ks_vk_pipeline_destroy(ctx, pl);
    if (f32)
        printf("attn.comp KS_ATTN_F32: %llu cases, within %.3g of the CPU's tiled f32\n",
               (unsigned long long)n_cases, worst);
    else
        printf("attn.comp%s: %llu cases, bit-exact\n", f64 ? " KS_F64" : "",
               (unsigned long long)n_cases);
    done_ctx(ctx);
}
END_TEST

static Suite *
ops_suite(void)
{
    Suite *s = suite_create("vk_ops");
    TCase *t;

    t = tcase_create("quant");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, quant_formats);
    suite_add_tcase(s, t);

    t = tcase_create("norm");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, norm_variants, 0, 2);
    suite_add_tcase(s, t);

    t = tcase_create("glu");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, glu_variants, 0, 2);
    suite_add_tcase(s, t);

    t = tcase_create("rope");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, rope_variants, 0, 8);
    suite_add_tcase(s, t);

    t = tcase_create("attn");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, attn_variants, 0, 2);
    suite_add_tcase(s, t);
    return s;
}

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}
#endif

int
main(void)
{
    setenv("KESTREL_VALIDATE", "1", 1);
    unsetenv("KESTREL_VK_BUDGET_MB");
    unsetenv("KESTREL_VK_MASK");
#if !defined(KS_HAVE_VULKAN)
    printf("skip: Kestrel was built without Vulkan (install libvulkan-dev)\n");
    return 77;
#elif !defined(KS_HAVE_GLSLANG)
    printf("skip: Kestrel was built without glslang (install glslang-dev)\n");
    return 77;
#else
    uint32_t n = 0;
    SRunner *sr;
    int failed;

    if (ks_vk_devices_list(NULL, &n) != KS_OK || n == 0) {
        printf("skip: no Vulkan device: %s\n", ks_last_error());
        return 77;
    }
    char cache_dir[64] = "/tmp/kestrel-test-ops-XXXXXX";
    if (!mkdtemp(cache_dir)) {
        perror("mkdtemp");
        return 1;
    }
    setenv("KESTREL_CACHE_DIR", cache_dir, 1);
    unsetenv("KESTREL_NO_CACHE");
    sr = srunner_create(ops_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(cache_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
#endif
}
