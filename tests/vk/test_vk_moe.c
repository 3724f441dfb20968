/* Part 2 (tcase "expert"): the exact kernel's expert variant
 * (KS_VK_EXACT_EXPERT) for every weight type: choice t reads expert
 * ids[e_off + t] of a 3-D weight and activation row t / k, and must give
 * ks_cpu_matmul_rows_as_one of that expert bit for bit; an id out of
 * range reads expert 0 (no fault).
 *
 * Part 1: the mixture-of-experts routing kernel (shaders/moe.comp) against the
 * CPU's routing (ks_moe_route, runtime/cpu/moe.c): for router logits of
 * several expert counts (8, 60 as qwen2moe, 64 as olmoe, 128 as
 * qwen3moe), k from 1 to 8, normalised weights or not, the chosen
 * experts, their weights and the probabilities, bit for bit with KS_F64
 * (shaderFloat64: glibc's expf and the double sums), else the same
 * experts and weights within 1e-6. The logits include exact ties (the
 * lower expert wins), a dominant expert (the others' probabilities
 * underflow) and all-equal rows; tokens start at tok0 > 0 with strided
 * rows, and the entries around them must stay untouched.
 *
 * Runs on lavapipe when there is one with the Khronos validation layer;
 * any validation message fails. Skips (77) without a Vulkan device or
 * glslang. */
#include <check.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver/base.h"
#include "runtime/cpu/moe.h"
#include "runtime/cpu/quant.h"
#include "runtime/qtype.h"
#ifdef KS_HAVE_VULKAN
#include "driver/vk.h"
#include "driver/vk_exact.h"
#endif

#if defined(KS_HAVE_VULKAN) && defined(KS_HAVE_GLSLANG)

enum { SENTINEL = 0x7FC0DEADu };

typedef struct route_args {
    uint32_t n_tok, n_expert, k, norm, l_stride, o_stride, tok0;
} route_args;

static uint64_t rng_state = 0x2545F4914F6CDD1Du;

static float
rnd(void)  /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

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

static ks_vk_pipeline *
route_pipe(ks_vk_ctx *ctx, bool f64)
{
    const char *defs[1] = { "KS_F64" };
    ks_vk_compile_params cp = { .name = "moe.comp", .defines = defs, .n_defines = f64 };
    ks_vk_spirv spv = { 0 };
    ks_vk_pipeline *pl = NULL;
    uint32_t spec[1] = { 8 };

    ck_assert_msg(ks_vk_shader_get(ctx, "moe.comp", &cp, &spv) == KS_OK, "%s",
                  ks_last_error());
    ks_vk_pipeline_params pp = {
        .name = "moe.comp", .spirv = spv.words, .n_words = spv.n_words, .n_buffers = 4,
        .push_bytes = sizeof(route_args), .spec = spec, .n_spec = 1, .max_sets = 64,
    };
    ck_assert_msg(ks_vk_pipeline_create(ctx, &pp, &pl) == KS_OK, "%s", ks_last_error());
    ks_vk_spirv_fini(&spv);
    return pl;
}

static void
buf_make(ks_vk_ctx *ctx, ks_vk_buffer *b, const char *name, const void *data, uint64_t bytes)
{
    ck_assert_int_eq(ks_vk_buffer_init(ctx, name, ks_align_up(bytes, 16), KS_VK_MEM_DEVICE,
                                       b), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, b, 0, data, bytes), KS_OK);
}

/* Row t of the logits of case |kind|: 0 random in [-4, 4); 1 with ties
 * (values from a few levels); 2 one expert far above the rest; 3 all
 * equal. */
static void
fill_logits(float *l, uint32_t X, int kind, uint32_t t)
{
    for (uint32_t e = 0; e < X; e++) {
        switch (kind) {
        case 0: l[e] = 4.0f * rnd(); break;
        case 1: l[e] = 0.5f * (float)((int)(4.0f * rnd())); break;
        case 2: l[e] = e == (t * 7u) % X ? 120.0f : rnd(); break;
        default: l[e] = 0.25f; break;
        }
    }
}

/* One (X, k, norm) case over every logits kind, n_tok tokens from tok0. */
static void
route_case(ks_vk_ctx *ctx, ks_vk_pipeline *pl, bool exact, uint32_t X, uint32_t k, bool norm)
{
    const uint32_t tok0 = 1, n_tok = 8, nt = tok0 + n_tok + 1;
    const uint32_t ls = X + 3, os = k + 2;
    uint64_t nl = (uint64_t)nt * ls, no = (uint64_t)nt * os;
    float *l = malloc(nl * 4), *p_gpu = malloc(nl * 4), *w_gpu = malloc(no * 4);
    int32_t *id_gpu = malloc(no * 4);
    uint32_t *fill = malloc((nl > no ? nl : no) * 4);
    float probs[256], w[16];
    int32_t ids[16];

    ck_assert(l && p_gpu && w_gpu && id_gpu && fill);
    for (uint64_t i = 0; i < (nl > no ? nl : no); i++)
        fill[i] = SENTINEL;
    for (int kind = 0; kind < 4; kind++) {
        ks_vk_buffer bl, bi, bw, bp;
        VkDescriptorSet set;

        memcpy(l, fill, nl * 4);
        for (uint32_t t = 0; t < nt; t++)
            fill_logits(l + (uint64_t)t * ls, X, kind, t);
        buf_make(ctx, &bl, "logits", l, nl * 4);
        buf_make(ctx, &bi, "ids", fill, no * 4);
        buf_make(ctx, &bw, "weights", fill, no * 4);
        buf_make(ctx, &bp, "probs", fill, nl * 4);
        route_args a = { n_tok, X, k, norm, ls, os, tok0 };
        const ks_vk_buffer *b[4] = { &bl, &bi, &bw, &bp };
        ck_assert_msg(ks_vk_pipeline_set(ctx, pl, b, 4, &set) == KS_OK, "%s", ks_last_error());
        ck_assert_msg(ks_vk_dispatch(ctx, pl, set, &a, (n_tok + 7) / 8, 1, 1) == KS_OK, "%s",
                      ks_last_error());
        ck_assert_int_eq(ks_vk_buffer_download(ctx, &bi, 0, id_gpu, no * 4), KS_OK);
        ck_assert_int_eq(ks_vk_buffer_download(ctx, &bw, 0, w_gpu, no * 4), KS_OK);
        ck_assert_int_eq(ks_vk_buffer_download(ctx, &bp, 0, p_gpu, nl * 4), KS_OK);

        for (uint32_t t = 0; t < nt; t++) {
            bool run = t >= tok0 && t < tok0 + n_tok;
            const float *lr = l + (uint64_t)t * ls;
            if (run)
                ks_moe_route(lr, X, k, norm, probs, ids, w);
            for (uint32_t j = 0; j < os; j++) {
                uint64_t i = (uint64_t)t * os + j;
                bool in = run && j < k;
                uint32_t wb;
                memcpy(&wb, &w_gpu[i], 4);
                if (!in) {
                    ck_assert_msg((uint32_t)id_gpu[i] == SENTINEL && wb == SENTINEL,
                                  "X=%u k=%u kind %d: token %u slot %u written outside the "
                                  "tokens", X, k, kind, t, j);
                    continue;
                }
                ck_assert_msg(id_gpu[i] == ids[j], "X=%u k=%u norm=%d kind %d token %u: "
                              "slot %u chose expert %d, the CPU %d", X, k, norm, kind, t, j,
                              id_gpu[i], ids[j]);
                if (exact)
                    ck_assert_msg(memcmp(&w_gpu[i], &w[j], 4) == 0, "X=%u k=%u norm=%d kind "
                                  "%d token %u slot %u: weight %a, the CPU %a", X, k, norm,
                                  kind, t, j, (double)w_gpu[i], (double)w[j]);
                else
                    ck_assert_msg(fabsf(w_gpu[i] - w[j]) <= 1e-6f, "X=%u k=%u kind %d "
                                  "token %u slot %u: weight %g, the CPU %g", X, k, kind, t,
                                  j, (double)w_gpu[i], (double)w[j]);
            }
            if (run && exact)
                ck_assert_msg(memcmp(p_gpu + (uint64_t)t * ls, probs, X * 4) == 0,
                              "X=%u kind %d token %u: probabilities differ", X, kind, t);
        }
        ks_vk_buffer_fini(ctx, &bl);
        ks_vk_buffer_fini(ctx, &bi);
        ks_vk_buffer_fini(ctx, &bw);
        ks_vk_buffer_fini(ctx, &bp);
    }
    free(l);
    free(p_gpu);
    free(w_gpu);
    free(id_gpu);
    free(fill);
}

/* _i = 0: KS_F64 (bit-exact; skipped without shaderFloat64); 1: float. */
START_TEST(route_vs_cpu)
{
    ks_vk_ctx *ctx = make_ctx();
    bool f64 = _i == 0;
    static const uint32_t shapes[][2] = {
        { 8, 1 }, { 8, 2 }, { 60, 4 }, { 64, 8 }, { 128, 8 }, { 128, 1 }, { 64, 6 },
    };

    if (f64 && !ctx->caps.float64) {
        printf("moe.comp KS_F64: skipped, %s has no shaderFloat64\n", ctx->info.name);
        ks_vk_ctx_destroy(ctx);
        return;
    }
    ks_vk_pipeline *pl = route_pipe(ctx, f64);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int norm = 0; norm < 2; norm++)
            route_case(ctx, pl, f64, shapes[s][0], shapes[s][1], norm != 0);
    printf("moe.comp%s: routing of %zu shapes x 2 x 4 kinds %s\n", f64 ? " KS_F64" : "",
           sizeof shapes / sizeof shapes[0], f64 ? "bit-exact" : "within 1e-6");
    ks_vk_pipeline_destroy(ctx, pl);
    ck_assert_uint_eq(ks_vk_ctx_validation_count(ctx), 0);
    ks_vk_ctx_destroy(ctx);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}
END_TEST

static const ks_qtype exp_types[] = {
    KS_QUANT_F32, KS_QUANT_F16, KS_QUANT_BF16, KS_QUANT_Q4_0, KS_QUANT_Q4_1,
    KS_QUANT_Q5_0, KS_QUANT_Q5_1, KS_QUANT_Q8_0, KS_QUANT_Q2_K, KS_QUANT_Q3_K,
    KS_QUANT_Q4_K, KS_QUANT_Q5_K, KS_QUANT_Q6_K, KS_QUANT_IQ4_NL,
};

START_TEST(expert_vs_cpu)
{
    ks_vk_ctx *ctx = make_ctx();
    ks_qtype t = exp_types[_i];
    enum { X = 5, ROWS = 24, COLS = 256, N_TOK = 3, K = 2, E_OFF = 1 };
    const uint32_t n_sl = N_TOK * K;
    /* choice ids after one unused entry; 7 and -1 are out of range */
    const int32_t ids[1 + N_TOK * K] = { 3, 4, 1, 7, 2, 0, -1 };
    uint64_t rb = ks_qtype_row_bytes(t, COLS), w_bytes = ks_align_up(X * ROWS * rb, 16);
    uint64_t xq_bytes = ks_cpu_act_bytes(t, COLS);
    uint32_t xw = ks_vk_act_words(t, COLS), x_stride = xw + 3;
    uint8_t *w = calloc(1, w_bytes), *xq = malloc(N_TOK * xq_bytes);
    uint32_t *xp = calloc((size_t)N_TOK * x_stride, 4);
    float src[COLS], ref[ROWS], *y = malloc(n_sl * ROWS * 4);
    ks_vk_buffer bw, bx, by, bi;
    ks_vk_exact *k = NULL;
    VkDescriptorSet set;
    VkCommandBuffer cb;

    ck_assert(w && xq && xp && y && xw > 0);
    for (uint32_t r = 0; r < X * ROWS; r++) {
        for (uint32_t i = 0; i < COLS; i++)
            src[i] = rnd() * (1.0f + (float)(r % 7));
        ks_cpu_quantize_row(t, src, w + r * rb, COLS);
    }
    for (uint32_t tk = 0; tk < N_TOK; tk++) {
        for (uint32_t i = 0; i < COLS; i++)
            src[i] = rnd();
        ks_cpu_quantize_act(t, src, xq + tk * xq_bytes, COLS);
        ks_vk_act_from_cpu(t, xq + tk * xq_bytes, COLS, xp + tk * x_stride);
    }
    buf_make(ctx, &bw, "w", w, w_bytes);
    buf_make(ctx, &bx, "x", xp, (uint64_t)N_TOK * x_stride * 4);
    buf_make(ctx, &by, "y", y, (uint64_t)n_sl * ROWS * 4);
    buf_make(ctx, &bi, "ids", ids, sizeof ids);
    ks_vk_exact_bufs b = { .w = &bw, .x = &bx, .y = &by, .ids = &bi };
    ks_vk_exact_args a = {
        .rows = ROWS, .cols = COLS, .row_stride_bytes = rb, .n_tok = n_sl,
        .path = (uint32_t)ks_cpu_matmul_path(t, COLS, ROWS, 1, 0),
        .x_stride_words = x_stride, .y_stride = ROWS,
        .n_expert = X, .e_stride_bytes = ROWS * rb, .e_off = E_OFF, .e_div = K,
    };
    ck_assert_msg(ks_vk_exact_get(ctx, t, KS_VK_EXACT_EXPERT, &k) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_msg(ks_vk_exact_set(ctx, k, &b, &set) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_vk_exact_check(k, &a, &b) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_cmd_begin(ctx, &cb), KS_OK);
    ck_assert_msg(ks_vk_exact_record(ctx, cb, k, set, &a) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_vk_cmd_submit(ctx) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &by, 0, y, (uint64_t)n_sl * ROWS * 4), KS_OK);
    for (uint32_t c = 0; c < n_sl; c++) {
        int32_t e = ids[E_OFF + c];
        if (e < 0 || e >= X)
            e = 0;
        ks_cpu_matmul_rows_as_one(t, w + (uint64_t)e * ROWS * rb, rb, COLS, ROWS, ROWS,
                                  xq + (c / K) * xq_bytes, xq_bytes, 1, ref, 0);
        for (uint32_t r = 0; r < ROWS; r++)
            ck_assert_msg(memcmp(&y[c * ROWS + r], &ref[r], 4) == 0, "%s: choice %u (expert "
                          "%d) row %u: %a, the CPU %a", ks_qtype_name(t), c, e, r,
                          (double)y[c * ROWS + r], (double)ref[r]);
    }
    /* the expert bound is checked: one expert too many runs past W */
    a.n_expert = X + 1;
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ks_vk_buffer_fini(ctx, &bw);
    ks_vk_buffer_fini(ctx, &bx);
    ks_vk_buffer_fini(ctx, &by);
    ks_vk_buffer_fini(ctx, &bi);
    free(w);
    free(xq);
    free(xp);
    free(y);
    ck_assert_uint_eq(ks_vk_ctx_validation_count(ctx), 0);
    ks_vk_ctx_destroy(ctx);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}
END_TEST

static Suite *
moe_suite(void)
{
    Suite *s = suite_create("vk_moe");
    TCase *t = tcase_create("route");

    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, route_vs_cpu, 0, 2);
    suite_add_tcase(s, t);
    t = tcase_create("expert");
    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, expert_vs_cpu, 0, (int)(sizeof exp_types / sizeof exp_types[0]));
    suite_add_tcase(s, t);
    return s;
}

static int
remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}
#endif

int
main(void)
{
    setenv("KESTREL_VALIDATE", "1", 1);
    unsetenv("KESTREL_VK_MASK");
#if !defined(KS_HAVE_VULKAN)
    printf("skip: Kestrel was built without Vulkan (install libvulkan-dev)\n");
    return 77;
#elif !defined(KS_HAVE_GLSLANG)
    printf("skip: Kestrel was built without glslang (install glslang-dev)\n");
    return 77;
#else
    uint32_t n = 0;
    char cache_dir[64] = "/tmp/kestrel-test-moe-XXXXXX";
    SRunner *sr;
    int failed;

    if (ks_vk_devices_list(NULL, &n) != KS_OK || n == 0) {
        printf("skip: no Vulkan device: %s\n", ks_last_error());
        return 77;
    }
    if (!mkdtemp(cache_dir)) {
        perror("mkdtemp");
        return 1;
    }
    setenv("KESTREL_CACHE_DIR", cache_dir, 1);
    unsetenv("KESTREL_NO_CACHE");
    sr = srunner_create(moe_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(cache_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
#endif
}
