/* Tests of the Vulkan matvec kernels (driver/vk_matvec.c) against the CPU.
 *
 * For every weight type: random f32 rows quantized with
 * ks_cpu_quantize_row, random x, odd and even shapes, offsets, unaligned
 * rows, epilogues, and other work splits; the reference is the dequantized
 * row (ks_cpu_dequant_row) dotted with x in double precision, and the
 * allowed error is a per-type fraction of sum |w|·|x| (one table). Large
 * and long-row shapes catch lavapipe's silent loop cut (65,535 trips per
 * invocation). Every context runs the Khronos validation layer and fails
 * on any message.
 *
 * Batches of vectors are checked bit for bit against single-vector
 * dispatches, and the x-sum epilogue of Q4_1/Q5_1 against ks_cpu_matvec on
 * Q8_1 activations.
 *
 * Run as `test_vk_matvec plain` or `test_vk_matvec masked` (the device's
 * 8/16-bit storage and fp16 masked off: KESTREL_VK_MASK=no8bit,no16bit,
 * nofp16). Skips (77) without a Vulkan device or without glslang. The
 * disk cache goes to a temporary directory removed at the end. */
#include <check.h>
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver/base.h"
#include "runtime/cpu/quant.h"
#include "runtime/qtype.h"
#ifdef KS_HAVE_VULKAN
#include "driver/vk.h"
#include "driver/vk_matvec.h"
#endif

#if defined(KS_HAVE_VULKAN) && defined(KS_HAVE_GLSLANG)

static bool masked_run;

/* Allowed |y - ref| as a fraction of sum |w_i·x_i| per row. The kernels
 * sum in fp32 with per-block scales; on lavapipe the worst seen is ~2e-7
 * for every type (printed per type below). */
static const struct {
    ks_qtype t;
    double   tol;
} types[] = {
    { KS_QUANT_F32, 1e-5 },  { KS_QUANT_F16, 1e-5 },  { KS_QUANT_BF16, 1e-5 },
    { KS_QUANT_Q4_0, 1e-5 }, { KS_QUANT_Q4_1, 1e-5 }, { KS_QUANT_Q5_0, 1e-5 },
    { KS_QUANT_Q5_1, 1e-5 }, { KS_QUANT_Q8_0, 1e-5 }, { KS_QUANT_Q2_K, 1e-5 },
    { KS_QUANT_Q3_K, 1e-5 }, { KS_QUANT_Q4_K, 1e-5 }, { KS_QUANT_Q5_K, 1e-5 },
    { KS_QUANT_Q6_K, 1e-5 }, { KS_QUANT_IQ4_NL, 1e-5 },
};
#define N_TYPES (sizeof types / sizeof types[0])

static double
tol_of(ks_qtype t)
{
    for (size_t i = 0; i < N_TYPES; i++)
        if (types[i].t == t)
            return types[i].tol;
    return 0.0;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static float
frand(void)  /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / (double)(1ull << 52) - 1.0);
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
    if (masked_run)
        ck_assert(!ctx->caps.storage_8bit && !ctx->caps.storage_16bit && !ctx->caps.float16);
    return ctx;
}

static void
done_ctx(ks_vk_ctx *ctx)
{
    ck_assert_uint_eq(ks_vk_ctx_validation_count(ctx), 0);
    ks_vk_ctx_destroy(ctx);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}

/* One dispatch to check. Zero fields: defaults. */
typedef struct mv_case {
    ks_qtype  t;
    uint32_t  rows, cols;
    uint32_t  flags;          /* KS_VK_MATVEC_BIAS / RESIDUAL */
    uint32_t  w_off;          /* bytes before row 0 */
    uint32_t  stride_pad;     /* bytes between rows beyond the row's own */
    uint32_t  x_off, y_off;   /* floats */
    bool      in_place;       /* residual is y itself */
    const ks_vk_matvec_tune *tune;  /* NULL: the cached default kernel */
} mv_case;

/* Largest error seen, as a fraction of sum |w·x|, per type. */
static double worst[KS_QUANT_COUNT];

static void
run_case(ks_vk_ctx *ctx, const mv_case *c)
{
    const ks_qtype_info *qi = ks_qtype_get(c->t);
    uint64_t nb = c->cols / qi->block_elems, row_bytes = nb * qi->block_bytes;
    uint64_t stride = row_bytes + c->stride_pad;
    uint64_t w_bytes = ks_align_up(c->w_off + (c->rows - 1) * stride + row_bytes, 16);
    uint32_t n_y = c->y_off + c->rows + 5, n_x = (c->x_off + c->cols + 3) / 4 * 4;
    uint8_t *w = calloc(1, w_bytes), *qrow = malloc(row_bytes + 16);
    float *src = malloc(c->cols * sizeof(float)), *deq = malloc(c->cols * sizeof(float));
    float *x = malloc(n_x * sizeof(float)), *y = malloc(n_y * sizeof(float));
    float *y0 = malloc(n_y * sizeof(float)), *bias = malloc(c->rows * sizeof(float));
    float *res = malloc(c->rows * sizeof(float));
    double *ref = malloc(c->rows * sizeof(double)), *mag = malloc(c->rows * sizeof(double));
    ks_vk_buffer wb, xb, yb, bb = { 0 }, rb = { 0 };
    ks_vk_matvec *mv = NULL;
    VkDescriptorSet set;
    VkCommandBuffer cb;
    bool own = c->tune != NULL;
    double tol = tol_of(c->t);

    ck_assert(w && qrow && src && deq && x && y && y0 && bias && res && ref && mag);
    /* Activations outside the row's range are poison: a kernel that used
     * them (instead of dropping partial units' extra lanes) would fail. */
    for (uint32_t i = 0; i < n_x; i++)
        x[i] = i < c->x_off ? 1e30f : i >= c->x_off + c->cols ? NAN
                                     : frand() * (1.0f + (float)(i % 7));
    /* Up to DISTINCT rows are quantized (the CPU quantizers of some types
     * are slow); later rows repeat them with a period prime to every
     * workgroup size, so a row mix-up still shows. */
    enum { DISTINCT = 127 };
    for (uint32_t r = 0; r < c->rows; r++) {
        float scale = r % 5 == 3 ? 0.0f : 0.25f * (float)(1 + r % 9);

        bias[r] = frand();
        res[r] = frand() * 3.0f;
        if (r >= DISTINCT) {
            memcpy(w + c->w_off + r * stride, w + c->w_off + (r % DISTINCT) * stride,
                   row_bytes);
            ref[r] = ref[r % DISTINCT];
            mag[r] = mag[r % DISTINCT];
            continue;
        }
        for (uint32_t j = 0; j < c->cols; j++)
            src[j] = frand() * scale * (j % 11 == 0 ? 4.0f : 1.0f);
        ks_cpu_quantize_row(c->t, src, qrow, c->cols);
        ks_cpu_dequant_row(c->t, qrow, deq, c->cols);
        memcpy(w + c->w_off + r * stride, qrow, row_bytes);
        ref[r] = mag[r] = 0.0;
        for (uint32_t j = 0; j < c->cols; j++) {
            ref[r] += (double)deq[j] * (double)x[c->x_off + j];
            mag[r] += fabs((double)deq[j] * (double)x[c->x_off + j]);
        }
    }
    for (uint32_t i = 0; i < n_y; i++)
        y0[i] = 12345.0f + (float)i;
    if (c->in_place)
        memcpy(y0 + c->y_off, res, c->rows * sizeof(float));

    ck_assert_int_eq(ks_vk_buffer_init(ctx, "w", w_bytes, KS_VK_MEM_DEVICE, &wb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "x", n_x * 4u, KS_VK_MEM_DEVICE, &xb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "y", n_y * 4u, KS_VK_MEM_DEVICE, &yb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &wb, 0, w, w_bytes), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &xb, 0, x, n_x * 4u), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &yb, 0, y0, n_y * 4u), KS_OK);
    ks_vk_matvec_bufs bufs = { .w = &wb, .x = &xb, .y = &yb };
    if (c->flags & KS_VK_MATVEC_BIAS) {
        ck_assert_int_eq(ks_vk_buffer_init(ctx, "b", c->rows * 4u, KS_VK_MEM_DEVICE, &bb),
                         KS_OK);
        ck_assert_int_eq(ks_vk_buffer_upload(ctx, &bb, 0, bias, c->rows * 4u), KS_OK);
        bufs.bias = &bb;
    }
    if ((c->flags & KS_VK_MATVEC_RESIDUAL) && c->in_place) {
        bufs.residual = &yb;
    } else if (c->flags & KS_VK_MATVEC_RESIDUAL) {
        ck_assert_int_eq(ks_vk_buffer_init(ctx, "r", c->rows * 4u, KS_VK_MEM_DEVICE, &rb),
                         KS_OK);
        ck_assert_int_eq(ks_vk_buffer_upload(ctx, &rb, 0, res, c->rows * 4u), KS_OK);
        bufs.residual = &rb;
    }

    uint32_t flags = c->flags | ks_vk_matvec_layout_flags(c->w_off, stride);
    if (own)
        ck_assert_msg(ks_vk_matvec_create(ctx, c->t, flags, c->tune, &mv) == KS_OK, "%s",
                      ks_last_error());
    else
        ck_assert_msg(ks_vk_matvec_pipeline_get(ctx, c->t, flags, &mv) == KS_OK, "%s",
                      ks_last_error());
    ks_vk_matvec_args a = {
        .rows = c->rows, .cols = c->cols, .w_off_bytes = c->w_off,
        .row_stride_bytes = stride, .x_off = c->x_off, .y_off = c->y_off,
        .r_off = c->in_place ? c->y_off : 0,
    };
    ck_assert_msg(ks_vk_matvec_check(mv, &a, &bufs) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_vk_matvec_set(ctx, mv, &bufs, &set) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_cmd_begin(ctx, &cb), KS_OK);
    ck_assert_msg(ks_vk_matvec_record(ctx, cb, mv, set, &a) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_vk_cmd_submit(ctx) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &yb, 0, y, n_y * 4u), KS_OK);

    for (uint32_t i = 0; i < n_y; i++) {
        if (i >= c->y_off && i < c->y_off + c->rows)
            continue;
        ck_assert_msg(y[i] == y0[i], "%s %ux%u: y[%u] outside the rows was written (%g)",
                      qi->name, c->rows, c->cols, i, (double)y[i]);
    }
    for (uint32_t r = 0; r < c->rows; r++) {
        double want = ref[r], got = y[c->y_off + r];

        if (c->flags & KS_VK_MATVEC_BIAS)
            want += bias[r];
        if (c->flags & KS_VK_MATVEC_RESIDUAL)
            want += res[r];
        double err = fabs(got - want), allowed = tol * mag[r] + 1e-6 * (1.0 + fabs(want));
        if (mag[r] > 0 && err / mag[r] > worst[c->t])
            worst[c->t] = err / mag[r];
        ck_assert_msg(err <= allowed, "%s %ux%u flags %u w_off %u stride %" PRIu64
                      " split %u: row %u: got %.9g, expected %.9g (err %.3g, allowed %.3g)",
                      qi->name, c->rows, c->cols, flags, c->w_off, stride, mv->split, r, got,
                      want, err, allowed);
    }

    if (own)
        ks_vk_matvec_destroy(ctx, mv);
    ks_vk_buffer_fini(ctx, &wb);
    ks_vk_buffer_fini(ctx, &xb);
    ks_vk_buffer_fini(ctx, &yb);
    ks_vk_buffer_fini(ctx, &bb);
    ks_vk_buffer_fini(ctx, &rb);
    free(w);
    free(qrow);
    free(src);
    free(deq);
    free(x);
    free(y);
    free(y0);
    free(bias);
    free(res);
    free(ref);
    free(mag);
}

/* ---- every type, odd and even shapes ---------------------------------- */

START_TEST(type_shapes)
{
    static const uint32_t all_rows[] = { 1, 7, 64, 333 };
    static const uint32_t all_cols[] = { 96, 256, 512, 640, 1536, 2048 };
    ks_qtype t = types[_i].t;
    const ks_qtype_info *qi = ks_qtype_get(t);
    uint64_t t0 = ks_now_ns();
    ks_vk_ctx *ctx = make_ctx();

    for (size_t ci = 0; ci < sizeof all_cols / sizeof all_cols[0]; ci++) {
        uint32_t cols = all_cols[ci];

        if (cols % qi->block_elems)
            continue;
        for (size_t ri = 0; ri < sizeof all_rows / sizeof all_rows[0]; ri++)
            run_case(ctx, &(mv_case){ .t = t, .rows = all_rows[ri],
                                      .cols = cols });
    }
    /* Offsets into x, y and W; padded rows starting at 2 or 4 mod 16
     * bytes; odd block counts (partial units, rows at 2 mod 4 bytes for
     * 18/22/34/110/210-byte blocks). */
    uint32_t be = qi->block_elems, odd_cols = be == 1 ? 333 : be == 32 ? 32 * 13 : 256 * 3;
    run_case(ctx, &(mv_case){ .t = t, .rows = 37, .cols = odd_cols,
                              .x_off = 4, .y_off = 5 });
    run_case(ctx, &(mv_case){ .t = t, .rows = 21, .cols = 2 * be * 8,
                              .w_off = 2, .stride_pad = 6, .x_off = 8 });
    run_case(ctx, &(mv_case){ .t = t, .rows = 19, .cols = odd_cols,
                              .w_off = 4, .stride_pad = 4 });
    run_case(ctx, &(mv_case){ .t = t, .rows = 9, .cols = 256,
                              .w_off = 64, .stride_pad = 32, .y_off = 1 });
    if (be == 1)
        run_case(ctx, &(mv_case){ .t = t, .rows = 10, .cols = 7 });
    printf("%-6s worst error %.2e of sum |w x| (tolerance %.0e), %.1f s\n", qi->name,
           worst[t], types[_i].tol, (double)(ks_now_ns() - t0) / 1e9);
    done_ctx(ctx);
}
END_TEST

/* ---- epilogues ---------------------------------------------------------- */

START_TEST(epilogues)
{
    ks_vk_ctx *ctx = make_ctx();
    static const ks_qtype ts[] = { KS_QUANT_Q4_0, KS_QUANT_Q6_K, KS_QUANT_F32 };

    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        uint32_t cols = ts[i] == KS_QUANT_Q6_K ? 768 : 640;
        run_case(ctx, &(mv_case){ .t = ts[i], .rows = 45, .cols = cols,
                                  .flags = KS_VK_MATVEC_BIAS });
        run_case(ctx, &(mv_case){ .t = ts[i], .rows = 45, .cols = cols,
                                  .flags = KS_VK_MATVEC_RESIDUAL });
        run_case(ctx, &(mv_case){ .t = ts[i], .rows = 45, .cols = cols,
                                  .flags = KS_VK_MATVEC_BIAS | KS_VK_MATVEC_RESIDUAL,
                                  .y_off = 3 });
        /* h += W·x with the residual read from y itself. */
        run_case(ctx, &(mv_case){ .t = ts[i], .rows = 30, .cols = cols,
                                  .flags = KS_VK_MATVEC_RESIDUAL, .in_place = true,
                                  .y_off = 2 });
    }
    done_ctx(ctx);
}
END_TEST

/* ---- other work splits (the shared-memory reduction path) --------------- */

START_TEST(work_splits)
{
    static const ks_vk_matvec_tune tunes[] = {
        { .wg_size = 8, .split = 8, .rows = 1 },
        { .wg_size = 32, .split = 4, .rows = 3 },
        { .wg_size = 8, .split = 1, .rows = 2 },
        { .wg_size = 64, .split = 16, .rows = 16 },
    };
    static const ks_qtype ts[] = { KS_QUANT_Q4_K, KS_QUANT_Q5_0, KS_QUANT_Q8_0,
                                   KS_QUANT_F16 };
    ks_vk_ctx *ctx = make_ctx();

    for (size_t k = 0; k < sizeof tunes / sizeof tunes[0]; k++)
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            uint32_t cols = ts[i] == KS_QUANT_Q4_K ? 1536 : 32 * 15;
            run_case(ctx, &(mv_case){ .t = ts[i], .rows = 29, .cols = cols,
                                      .flags = KS_VK_MATVEC_BIAS, .tune = &tunes[k] });
            run_case(ctx, &(mv_case){ .t = ts[i], .rows = 3, .cols = cols,
                                      .w_off = 2, .tune = &tunes[k] });
        }
    done_ctx(ctx);
}
END_TEST

/* ---- shapes that a loop cut would break --------------------------------- */

/* Rows of 16,384 loop trips per lane, the most the host allows: 2^19
 * f32 with the default kernel (a lane per slot on lavapipe) and 2^22
 * with 8 lanes per slot; 2^20 Q4_0: were any inner loop (activation
 * fetch, rows, decoders) left rolled, lanes would pass lavapipe's 65,535
 * trips and the sums would come out short. One unit more than the budget
 * is refused. */
START_TEST(long_rows)
{
    static const ks_vk_matvec_tune split8 = { 8, 8, 8 };
    ks_vk_ctx *ctx = make_ctx();
    ks_vk_matvec *mv;

    run_case(ctx, &(mv_case){ .t = KS_QUANT_F32, .rows = 2, .cols = 1u << 19 });
    run_case(ctx, &(mv_case){ .t = KS_QUANT_F32, .rows = 2, .cols = 1u << 22,
                              .tune = &split8 });
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_F32, 0, &mv), KS_OK);
    if (mv->split == 1) {
        ks_vk_matvec_args a = { .rows = 2, .cols = (1u << 19) + 32u,
                                .row_stride_bytes = 4u * ((1u << 19) + 32u) };
        ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_UNSUPPORTED);
    }
    run_case(ctx, &(mv_case){ .t = KS_QUANT_Q4_0, .rows = 3, .cols = 1u << 20 });
    run_case(ctx, &(mv_case){ .t = KS_QUANT_Q6_K, .rows = 9,
                              .cols = 256 * 301 });
    done_ctx(ctx);
}
END_TEST

/* Gemma 3's tied output matrix: 262,144 rows of 640 Q8_0 (178 MB, more
 * than lavapipe's 128 MiB storage-buffer range; texel views reach
 * further), every row checked. */
START_TEST(large_matrix)
{
    ks_vk_ctx *ctx = make_ctx();

    run_case(ctx, &(mv_case){ .t = KS_QUANT_Q8_0, .rows = 262144, .cols = 640 });
    done_ctx(ctx);
}
END_TEST

/* ---- batches of vectors, and the x-sum epilogue ------------------------ */

/* One batched dispatch of n_tok vectors (x, y, residual and x-sums at
 * strides with gaps of poison between them) and the same n_tok vectors as
 * n_tok single-vector dispatches: the results must be equal bit for bit,
 * and the floats between the vectors untouched. Each vector is also
 * checked against the CPU: with KS_VK_MATVEC_XSUM, x is Q8_1 from the
 * CPU's activation quantizer dequantized again, and the reference is
 * ks_cpu_matvec on those Q8_1 blocks. Returns the largest |y - ref| /
 * sum |w·x| over rows without epilogues (0 with them). */
typedef struct batch_case {
    ks_qtype t;
    uint32_t rows, cols, n_tok;
    uint32_t flags;     /* BIAS / RESIDUAL / XSUM */
    bool     in_place;  /* residual is y itself, at y's offsets */
    bool     q8_1_x;    /* x from Q8_1 and the CPU's result on it as the
                         * reference (always with XSUM) */
    double   tol;       /* of sum |w·x|; 0: 1e-5 */
} batch_case;

static double
run_batch(ks_vk_ctx *ctx, const batch_case *c)
{
    const ks_qtype_info *qi = ks_qtype_get(c->t);
    const uint32_t n = c->n_tok ? c->n_tok : 1, nb = c->cols / qi->block_elems;
    const uint64_t row_bytes = (uint64_t)nb * qi->block_bytes;
    const uint64_t w_bytes = ks_align_up(c->rows * row_bytes, 16);
    const bool xsum = c->flags & KS_VK_MATVEC_XSUM, q81 = xsum || c->q8_1_x;
    /* Offsets and strides in floats, with gaps. */
    const uint32_t x_off = 4, x_stride = (c->cols + 3) / 4 * 4 + 8;
    const uint32_t y_off = 3, y_stride = c->rows + 2;
    const uint32_t r_off = c->in_place ? y_off : 1, r_stride = c->in_place ? y_stride
                                                                         : c->rows + 5;
    const uint32_t s_off = 2, s_stride = nb + 3;
    const uint32_t n_x = x_off + n * x_stride, n_y = y_off + n * y_stride + 4;
    const uint32_t n_r = r_off + n * r_stride, n_s = s_off + n * s_stride;
    uint8_t *w = calloc(1, w_bytes);
    const uint64_t xq_bytes = ks_cpu_act_bytes(c->t, c->cols);
    uint8_t *xq_all = malloc(n * xq_bytes);
    float *src = malloc(c->cols * sizeof(float)), *deq = malloc(c->cols * sizeof(float));
    float *x = malloc(n_x * 4), *y0 = malloc(n_y * 4), *y1 = malloc(n_y * 4);
    float *y2 = malloc(n_y * 4), *res = malloc(n_r * 4), *sums = malloc(n_s * 4);
    float *bias = malloc(c->rows * 4), *ycpu = malloc(c->rows * 4);
    float *deq_all = malloc((size_t)c->rows * c->cols * sizeof(float));
    ks_vk_buffer wb, xb, yb, bb = { 0 }, rb = { 0 }, sb = { 0 };
    ks_vk_matvec *mv = NULL;
    VkDescriptorSet set;
    VkCommandBuffer cb;
    double worst_rel = 0.0;

    ck_assert(w && xq_all && src && deq && x && y0 && y1 && y2 && res && sums && bias &&
              ycpu && deq_all);
    for (uint32_t r = 0; r < c->rows; r++) {
        for (uint32_t j = 0; j < c->cols; j++)
            src[j] = frand() * 0.5f * (float)(1 + r % 5) * (j % 13 == 0 ? 3.0f : 1.0f);
        ks_cpu_quantize_row(c->t, src, w + r * row_bytes, c->cols);
        ks_cpu_dequant_row(c->t, w + r * row_bytes, deq_all + (size_t)r * c->cols, c->cols);
        bias[r] = frand();
    }
    for (uint32_t i = 0; i < n_x; i++)
        x[i] = NAN;
    for (uint32_t i = 0; i < n_r; i++)
        res[i] = 1e30f;
    for (uint32_t i = 0; i < n_s; i++)
        sums[i] = NAN;
    for (uint32_t i = 0; i < n_y; i++)
        y0[i] = 12345.0f + (float)i;
    for (uint32_t t = 0; t < n; t++) {
        float *xt = x + x_off + t * x_stride;
        uint8_t *xq = xq_all + t * xq_bytes;

        for (uint32_t j = 0; j < c->cols; j++)
            xt[j] = frand() * (1.0f + (float)((j + t) % 7));
        if (q81) {
            /* Q8_1 blocks: fp16 d, fp16 s = fp16(d·Σq), 32 int8. */
            ks_cpu_quantize_act(c->t, xt, xq, c->cols);
            for (uint32_t b = 0; b < nb; b++) {
                const uint8_t *blk = xq + 36u * b;
                uint16_t d, sm;

                memcpy(&d, blk, 2);
                memcpy(&sm, blk + 2, 2);
                for (uint32_t j = 0; j < 32; j++)
                    xt[32 * b + j] = ks_fp16_to_f32(d) * (float)(int8_t)blk[4 + j];
                sums[s_off + t * s_stride + b] = ks_fp16_to_f32(sm);
            }
        }
        for (uint32_t r = 0; r < c->rows; r++) {
            float v = frand() * 2.0f;
            if (c->in_place)
                y0[y_off + t * y_stride + r] = v;
            else
                res[r_off + t * r_stride + r] = v;
        }
    }

    ck_assert_int_eq(ks_vk_buffer_init(ctx, "w", w_bytes, KS_VK_MEM_DEVICE, &wb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "x", n_x * 4u, KS_VK_MEM_DEVICE, &xb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "y", n_y * 4u, KS_VK_MEM_DEVICE, &yb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &wb, 0, w, w_bytes), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &xb, 0, x, n_x * 4u), KS_OK);
    ks_vk_matvec_bufs bufs = { .w = &wb, .x = &xb, .y = &yb };
    if (c->flags & KS_VK_MATVEC_BIAS) {
        ck_assert_int_eq(ks_vk_buffer_init(ctx, "b", c->rows * 4u, KS_VK_MEM_DEVICE, &bb),
                         KS_OK);
        ck_assert_int_eq(ks_vk_buffer_upload(ctx, &bb, 0, bias, c->rows * 4u), KS_OK);
        bufs.bias = &bb;
    }
    if ((c->flags & KS_VK_MATVEC_RESIDUAL) && c->in_place) {
        bufs.residual = &yb;
    } else if (c->flags & KS_VK_MATVEC_RESIDUAL) {
        ck_assert_int_eq(ks_vk_buffer_init(ctx, "r", n_r * 4u, KS_VK_MEM_DEVICE, &rb), KS_OK);
        ck_assert_int_eq(ks_vk_buffer_upload(ctx, &rb, 0, res, n_r * 4u), KS_OK);
        bufs.residual = &rb;
    }
    if (xsum) {
        ck_assert_int_eq(ks_vk_buffer_init(ctx, "s", n_s * 4u, KS_VK_MEM_DEVICE, &sb), KS_OK);
        ck_assert_int_eq(ks_vk_buffer_upload(ctx, &sb, 0, sums, n_s * 4u), KS_OK);
        bufs.xsum = &sb;
    }
    uint32_t flags = c->flags | ks_vk_matvec_layout_flags(0, row_bytes);
    ck_assert_msg(ks_vk_matvec_pipeline_get(ctx, c->t, flags, &mv) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_msg(ks_vk_matvec_set(ctx, mv, &bufs, &set) == KS_OK, "%s", ks_last_error());
    ks_vk_matvec_args a = {
        .rows = c->rows, .cols = c->cols, .row_stride_bytes = row_bytes,
        .x_off = x_off, .y_off = y_off, .r_off = r_off, .s_off = s_off, .n_tok = c->n_tok,
        .x_stride = x_stride, .y_stride = y_stride, .r_stride = r_stride,
        .s_stride = s_stride,
    };
    ck_assert_msg(ks_vk_matvec_check(mv, &a, &bufs) == KS_OK, "%s", ks_last_error());

    /* The batch. */
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &yb, 0, y0, n_y * 4u), KS_OK);
    ck_assert_int_eq(ks_vk_cmd_begin(ctx, &cb), KS_OK);
    ck_assert_msg(ks_vk_matvec_record(ctx, cb, mv, set, &a) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_vk_cmd_submit(ctx) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &yb, 0, y1, n_y * 4u), KS_OK);

    /* The same vectors one dispatch each. */
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &yb, 0, y0, n_y * 4u), KS_OK);
    ck_assert_int_eq(ks_vk_cmd_begin(ctx, &cb), KS_OK);
    for (uint32_t t = 0; t < n; t++) {
        ks_vk_matvec_args one = {
            .rows = c->rows, .cols = c->cols, .row_stride_bytes = row_bytes,
            .x_off = x_off + t * x_stride, .y_off = y_off + t * y_stride,
            .r_off = r_off + t * r_stride, .s_off = s_off + t * s_stride,
        };
        ck_assert_msg(ks_vk_matvec_check(mv, &one, &bufs) == KS_OK, "%s", ks_last_error());
        ck_assert_int_eq(ks_vk_matvec_record(ctx, cb, mv, set, &one), KS_OK);
    }
    ck_assert_msg(ks_vk_cmd_submit(ctx) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &yb, 0, y2, n_y * 4u), KS_OK);

    for (uint32_t i = 0; i < n_y; i++) {
        uint32_t t = (i - y_off) / y_stride, r = (i - y_off) % y_stride;
        bool out = i >= y_off && t < n && r < c->rows;

        ck_assert_msg(memcmp(&y1[i], &y2[i], 4) == 0, "%s n_tok %u flags %u: y[%u] = %.9g "
                      "batched, %.9g alone", qi->name, n, c->flags, i, (double)y1[i],
                      (double)y2[i]);
        if (!out)
            ck_assert_msg(y1[i] == y0[i], "%s n_tok %u: y[%u] between vectors written",
                          qi->name, n, i);
    }

    /* Against the CPU. */
    for (uint32_t t = 0; t < n; t++) {
        const float *xt = x + x_off + t * x_stride;

        /* The CPU on the very Q8_1 blocks x and the x-sums came from. */
        if (q81)
            ks_cpu_matvec(c->t, w, row_bytes, c->cols, c->rows, xq_all + t * xq_bytes, ycpu);
        for (uint32_t r = 0; r < c->rows; r++) {
            const float *dr = deq_all + (size_t)r * c->cols;
            double ref = 0.0, mag = 0.0, extra = 0.0;

            for (uint32_t j = 0; j < c->cols; j++) {
                ref += (double)dr[j] * xt[j];
                mag += fabs((double)dr[j] * xt[j]);
            }
            if (q81)
                ref = ycpu[r];
            if (c->flags & KS_VK_MATVEC_BIAS)
                extra += bias[r];
            if (c->flags & KS_VK_MATVEC_RESIDUAL)
                extra += c->in_place ? y0[y_off + t * y_stride + r]
                                     : res[r_off + t * r_stride + r];
            double got = y1[y_off + t * y_stride + r], want = ref + extra;
            double err = fabs(got - want);
            double allowed = (c->tol ? c->tol : 1e-5) * mag + 1e-6 * (1.0 + fabs(want));
            if (!(c->flags & (KS_VK_MATVEC_BIAS | KS_VK_MATVEC_RESIDUAL)) && mag > 0 &&
                err / mag > worst_rel)
                worst_rel = err / mag;
            ck_assert_msg(err <= allowed, "%s n_tok %u flags %u: vector %u row %u: got %.9g, "
                          "expected %.9g (err %.3g, allowed %.3g)", qi->name, n, c->flags, t,
                          r, got, want, err, allowed);
        }
    }

    ks_vk_buffer_fini(ctx, &wb);
    ks_vk_buffer_fini(ctx, &xb);
    ks_vk_buffer_fini(ctx, &yb);
    ks_vk_buffer_fini(ctx, &bb);
    ks_vk_buffer_fini(ctx, &rb);
    ks_vk_buffer_fini(ctx, &sb);
    free(w);
    free(xq_all);
    free(src);
    free(deq);
    free(x);
    free(y0);
    free(y1);
    free(y2);
    free(res);
    free(sums);
    free(bias);
    free(ycpu);
    free(deq_all);
    return worst_rel;
}

START_TEST(batched)
{
    static const ks_qtype ts[] = { KS_QUANT_Q4_0, KS_QUANT_Q6_K, KS_QUANT_F16,
                                   KS_QUANT_Q5_1 };
    static const uint32_t toks[] = { 1, 3, 7 };
    ks_vk_ctx *ctx = make_ctx();

    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        uint32_t cols = ts[i] == KS_QUANT_Q6_K ? 768 : 32 * 13;
        for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
            run_batch(ctx, &(batch_case){ .t = ts[i], .rows = 37, .cols = cols,
                                          .n_tok = toks[k] });
            run_batch(ctx, &(batch_case){ .t = ts[i], .rows = 20, .cols = cols,
                                          .n_tok = toks[k],
                                          .flags = KS_VK_MATVEC_BIAS |
                                                   KS_VK_MATVEC_RESIDUAL });
        }
        run_batch(ctx, &(batch_case){ .t = ts[i], .rows = 16, .cols = cols, .n_tok = 3,
                                      .flags = KS_VK_MATVEC_RESIDUAL, .in_place = true });
    }
    /* n_tok 0 means one vector. */
    run_batch(ctx, &(batch_case){ .t = KS_QUANT_Q8_0, .rows = 9, .cols = 64 });
    done_ctx(ctx);
}
END_TEST

/* Q4_1 and Q5_1 with activations from Q8_1: the x-sum epilogue matches the
 * CPU (llama.cpp's arithmetic) within XSUM_TOL of sum |w·x| per row; the
 * plain kernel, which sums the dequantized x itself, is further off. */
#define XSUM_TOL 1e-5

START_TEST(xsum)
{
    static const ks_qtype ts[] = { KS_QUANT_Q4_1, KS_QUANT_Q5_1 };
    static const uint32_t shapes[][2] = { { 37, 32 * 13 }, { 64, 2048 }, { 5, 32 } };
    ks_vk_ctx *ctx = make_ctx();

    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        double worst_x = 0.0, worst_plain = 0.0;

        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (uint32_t n = 1; n <= 3; n += 2) {
                batch_case c = { .t = ts[i], .rows = shapes[k][0], .cols = shapes[k][1],
                                 .n_tok = n, .flags = KS_VK_MATVEC_XSUM };
                double e = run_batch(ctx, &c);
                worst_x = e > worst_x ? e : worst_x;
                c.flags = 0;
                c.q8_1_x = true;
                c.tol = 1e-2;
                e = run_batch(ctx, &c);
                worst_plain = e > worst_plain ? e : worst_plain;
            }
        run_batch(ctx, &(batch_case){ .t = ts[i], .rows = 21, .cols = 256, .n_tok = 3,
                                      .flags = KS_VK_MATVEC_XSUM | KS_VK_MATVEC_BIAS |
                                               KS_VK_MATVEC_RESIDUAL });
        run_batch(ctx, &(batch_case){ .t = ts[i], .rows = 12, .cols = 256, .n_tok = 2,
                                      .flags = KS_VK_MATVEC_XSUM | KS_VK_MATVEC_RESIDUAL,
                                      .in_place = true });
        printf("%-6s xsum: worst |y - cpu| %.2e of sum |w x| (bound %.0e); plain kernel "
               "%.2e\n", ks_qtype_get(ts[i])->name, worst_x, XSUM_TOL, worst_plain);
        ck_assert(worst_x < XSUM_TOL);
        ck_assert(worst_plain > 10.0 * worst_x);  /* the epilogue is what matches */
    }
    done_ctx(ctx);
}
END_TEST

/* ---- errors ------------------------------------------------------------- */

START_TEST(bad_arguments)
{
    ks_vk_ctx *ctx = make_ctx();
    ks_vk_matvec *mv = NULL;
    ks_vk_buffer wb, xb, yb;
    VkDescriptorSet set;

    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_IQ4_XS, 0, &mv),
                     KS_ERR_UNSUPPORTED);
    ck_assert_ptr_null(mv);
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q8_1, 0, &mv),
                     KS_ERR_UNSUPPORTED);
    ck_assert(!ks_vk_matvec_supports(KS_QUANT_Q8_K));
    ck_assert(ks_vk_matvec_supports(KS_QUANT_IQ4_NL));
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 64, &mv),
                     KS_ERR_INVALID_ARG);
    ks_vk_matvec_tune bad = { .wg_size = 8, .split = 3 };
    ck_assert_int_eq(ks_vk_matvec_create(ctx, KS_QUANT_Q4_0, 0, &bad, &mv),
                     KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "lanes per slot"));
    bad = (ks_vk_matvec_tune){ .rows = 17 };
    ck_assert_int_eq(ks_vk_matvec_create(ctx, KS_QUANT_Q4_0, 0, &bad, &mv),
                     KS_ERR_INVALID_ARG);

    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 0, &mv), KS_OK);
    ks_vk_matvec *again = NULL;
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, 0, &again), KS_OK);
    ck_assert_ptr_eq(mv, again);  /* made once, kept in the context */

    ks_vk_matvec_args a = { .rows = 4, .cols = 100, .row_stride_bytes = 72 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "cols 100"));
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 96, .row_stride_bytes = 54 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "KS_VK_MATVEC_ALIGN2"));
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 96, .row_stride_bytes = 56 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "KS_VK_MATVEC_ALIGN4"));
    a.rows = 1;  /* one row: the stride does not matter */
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_OK);
    a = (ks_vk_matvec_args){ .rows = 2, .cols = 64, .row_stride_bytes = 48, .x_off = 2 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "x_off 2"));
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 128, .row_stride_bytes = 60 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "row stride 60"));
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 64, .row_stride_bytes = 48, .w_off_bytes = 3 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    a = (ks_vk_matvec_args){ .rows = 0, .cols = 64 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    /* Rows too long for one lane's loop budget (16,385 units per lane). */
    a = (ks_vk_matvec_args){ .rows = 1, .cols = 256u * 8u * 16385u };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "loop"));

    /* Ranges against buffers, and the binding count. */
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "weights", 192, KS_VK_MEM_DEVICE, &wb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "x", 64 * 4, KS_VK_MEM_DEVICE, &xb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "y", 4 * 4, KS_VK_MEM_DEVICE, &yb), KS_OK);
    ks_vk_matvec_bufs b = { .w = &wb, .x = &xb, .y = &yb };
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 64, .row_stride_bytes = 48 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, &b), KS_OK);
    a.rows = 5;
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'weights'"));
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 64, .row_stride_bytes = 48, .x_off = 4 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'x'"));
    b.bias = &yb;
    ck_assert_int_eq(ks_vk_matvec_set(ctx, mv, &b, &set), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "bias"));
    b.bias = NULL;
    b.xsum = &yb;
    ck_assert_int_eq(ks_vk_matvec_set(ctx, mv, &b, &set), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "xsum"));
    b.xsum = NULL;
    ck_assert_int_eq(ks_vk_matvec_set(ctx, mv, &b, &set), KS_OK);

    /* Batches: stride rules, the device's z limit, and the buffers must
     * hold the last vector. */
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 64, .row_stride_bytes = 48, .n_tok = 2,
                             .x_stride = 6, .y_stride = 4 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "x_stride 6"));
    a.x_stride = 0;  /* every vector reads the same x: allowed */
    a.y_stride = 3;
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "y_stride 3"));
    a.y_stride = 4;
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_OK);
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'y'"));
    a = (ks_vk_matvec_args){ .rows = 2, .cols = 64, .row_stride_bytes = 48, .n_tok = 2,
                             .x_stride = 64, .y_stride = 2 };
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'x'"));
    a.n_tok = 1;  /* strides of one vector do not matter */
    ck_assert_int_eq(ks_vk_matvec_check(mv, &a, &b), KS_OK);
    a.n_tok = ctx->info.max_wg_count[2] + 1u;
    if (a.n_tok > ctx->info.max_wg_count[2]) {
        a.y_stride = 4;
        ck_assert_int_eq(ks_vk_matvec_check(mv, &a, NULL), KS_ERR_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(ks_last_error(), "n_tok"));
    }

    /* The x-sum epilogue: Q4_1 and Q5_1 only, and its buffer is checked. */
    ks_vk_matvec *xs = NULL;
    ck_assert_int_eq(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_0, KS_VK_MATVEC_XSUM, &xs),
                     KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "Q4_0"));
    ck_assert_int_eq(ks_vk_matvec_create(ctx, KS_QUANT_Q4_K, KS_VK_MATVEC_XSUM, NULL, &xs),
                     KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "Q4_K"));
    ck_assert_msg(ks_vk_matvec_pipeline_get(ctx, KS_QUANT_Q4_1, KS_VK_MATVEC_XSUM, &xs) ==
                  KS_OK, "%s", ks_last_error());
    b = (ks_vk_matvec_bufs){ .w = &wb, .x = &xb, .y = &yb };
    ck_assert_int_eq(ks_vk_matvec_set(ctx, xs, &b, &set), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "xsum buffer missing"));
    a = (ks_vk_matvec_args){ .rows = 4, .cols = 64, .row_stride_bytes = 48 };
    ck_assert_int_eq(ks_vk_matvec_check(xs, &a, &b), KS_ERR_INVALID_ARG);
    b.xsum = &yb;  /* 4 floats: two vectors of two blocks, no more */
    a = (ks_vk_matvec_args){ .rows = 2, .cols = 64, .row_stride_bytes = 48, .n_tok = 2,
                             .y_stride = 2, .s_stride = 2 };
    ck_assert_int_eq(ks_vk_matvec_check(xs, &a, &b), KS_OK);
    a.s_off = 1;
    ck_assert_int_eq(ks_vk_matvec_check(xs, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "xsum"));
    ck_assert_int_eq(ks_vk_matvec_set(ctx, xs, &b, &set), KS_OK);

    ks_vk_buffer_fini(ctx, &wb);
    ks_vk_buffer_fini(ctx, &xb);
    ks_vk_buffer_fini(ctx, &yb);
    done_ctx(ctx);
}
END_TEST

static Suite *
matvec_suite(void)
{
    Suite *s = suite_create("vk_matvec");
    TCase *t = tcase_create("types");

    tcase_set_timeout(t, 600);
    tcase_add_loop_test(t, type_shapes, 0, (int)N_TYPES);
    suite_add_tcase(s, t);

    t = tcase_create("variants");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, epilogues);
    tcase_add_test(t, work_splits);
    tcase_add_test(t, batched);
    tcase_add_test(t, xsum);
    suite_add_tcase(s, t);

    t = tcase_create("loop_limit");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, long_rows);
    if (!masked_run)
        tcase_add_test(t, large_matrix);
    suite_add_tcase(s, t);

    t = tcase_create("errors");
    tcase_add_test(t, bad_arguments);
    suite_add_tcase(s, t);
    return s;
}
#endif

#if defined(KS_HAVE_VULKAN) && defined(KS_HAVE_GLSLANG)
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
main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "plain";

    setenv("KESTREL_VALIDATE", "1", 1);
    unsetenv("KESTREL_VK_BUDGET_MB");
    if (strcmp(mode, "masked") == 0)
        setenv("KESTREL_VK_MASK", "no8bit,no16bit,nofp16", 1);
    else
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

    masked_run = strcmp(mode, "masked") == 0;
    if (ks_vk_devices_list(NULL, &n) != KS_OK || n == 0) {
        printf("skip: no Vulkan device: %s\n", ks_last_error());
        return 77;
    }
    /* A disk cache of this run's own: kernels compile on first use, later
     * tests (forked processes) read them back, and $HOME stays clean. */
    char cache_dir[64] = "/tmp/kestrel-test-matvec-XXXXXX";
    if (!mkdtemp(cache_dir)) {
        perror("mkdtemp");
        return 1;
    }
    setenv("KESTREL_CACHE_DIR", cache_dir, 1);
    unsetenv("KESTREL_NO_CACHE");
    sr = srunner_create(matvec_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(cache_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
#endif
}
