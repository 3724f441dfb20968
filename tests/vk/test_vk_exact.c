/* Tests of the bit-exact Vulkan matrix kernel (driver/vk_exact.c) against
 * the CPU backend's ks_cpu_matmul_rows: every output must equal the CPU's
 * bit for bit (memcmp), on the AVX2 path and on the scalar one.
 *
 * For every weight type: weights quantized from random floats with
 * ks_cpu_quantize_row, or random bytes with sane scales (every bit
 * pattern of the quants and sub-block scales); activations quantized with
 * ks_cpu_quantize_act and packed with ks_vk_act_from_cpu; odd and even
 * shapes (rows not a multiple of 8, partial shader units, column counts
 * that leave vec_dot tails), batches of 1, 2, 3, 4, 5, 8 and 9 tokens, and
 * matrices whose row count (ne1) is a multiple of 8 or not, so that every
 * summation path the CPU takes is crossed (vec_dot, tinyBLAS, the
 * repacked GEMV and GEMM, the tiled K-quant kernel). Rows start at any
 * even byte. Also: the epilogues (bias, residual, in place), a batch split
 * over two dispatches, rows long enough that a loop left rolled would hit
 * lavapipe's silent cut at 65,535 trips, the packed activation layout and
 * bad arguments. Every context runs the Khronos validation layer and
 * fails on any message.
 *
 * Skips (77) without a Vulkan device or without glslang. The disk cache
 * goes to a temporary directory removed at the end. */
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
#include "driver/vk_exact.h"
#endif

#if defined(KS_HAVE_VULKAN) && defined(KS_HAVE_GLSLANG)

_Static_assert(KS_VK_EXACT_PATH_VD == (int)KS_CPU_PATH_VD &&
               KS_VK_EXACT_PATH_BLAS == (int)KS_CPU_PATH_BLAS &&
               KS_VK_EXACT_PATH_GEMV == (int)KS_CPU_PATH_GEMV &&
               KS_VK_EXACT_PATH_GEMM == (int)KS_CPU_PATH_GEMM &&
               KS_VK_EXACT_PATH_TILED == (int)KS_CPU_PATH_TILED,
               "the driver's path numbers are ks_cpu_path's");

static const ks_qtype types[] = {
    KS_QUANT_F32,  KS_QUANT_F16,  KS_QUANT_BF16, KS_QUANT_Q4_0, KS_QUANT_Q4_1,
    KS_QUANT_Q5_0, KS_QUANT_Q5_1, KS_QUANT_Q8_0, KS_QUANT_Q2_K, KS_QUANT_Q3_K,
    KS_QUANT_Q4_K, KS_QUANT_Q5_K, KS_QUANT_Q6_K, KS_QUANT_IQ4_NL,
};
#define N_TYPES (sizeof types / sizeof types[0])

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t
rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static float
frand(void)  /* uniform in [-1, 1) */
{
    return (float)((double)(rnd() >> 11) / (double)(1ull << 52) - 1.0);
}

/* A context on lavapipe when it is there (the device CI has), with the
 * features of |mask| hidden (NULL: none). */
static ks_vk_ctx *
make_ctx_masked(const char *mask)
{
    ks_vk_device_info d[16];
    uint32_t n = 16;
    ks_vk_ctx_params p = { .mask = mask };
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

static ks_vk_ctx *
make_ctx(void)
{
    return make_ctx_masked(NULL);
}

static void
done_ctx(ks_vk_ctx *ctx)
{
    ck_assert_uint_eq(ks_vk_ctx_validation_count(ctx), 0);
    ks_vk_ctx_destroy(ctx);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
}

/* ---- weights ------------------------------------------------------------ */

/* Byte offsets of the fp16 scale fields of a block (-1: none). */
static void
scale_fields(ks_qtype t, int f[2])
{
    f[0] = 0;
    f[1] = -1;
    switch (t) {
    case KS_QUANT_Q4_1: case KS_QUANT_Q5_1: case KS_QUANT_Q4_K: case KS_QUANT_Q5_K:
        f[1] = 2;
        break;
    case KS_QUANT_Q2_K:
        f[0] = 80;
        f[1] = 82;
        break;
    case KS_QUANT_Q3_K:
        f[0] = 108;
        break;
    case KS_QUANT_Q6_K:
        f[0] = 208;
        break;
    default:
        break;
    }
}

/* One weight row of |cols| elements: random floats quantized, or random
 * bytes with scales of sane size (every quant and sub-scale pattern). */
static void
make_row(ks_qtype t, uint32_t cols, bool random_bytes, float scale, uint8_t *row)
{
    const ks_qtype_info *qi = ks_qtype_get(t);
    uint64_t nb = cols / qi->block_elems;
    float *src = malloc(cols * sizeof(float));

    ck_assert_ptr_nonnull(src);
    for (uint32_t j = 0; j < cols; j++)
        src[j] = frand() * scale * (j % 11 == 0 ? 4.0f : 1.0f);
    if (!random_bytes || qi->block_elems == 1) {
        ks_cpu_quantize_row(t, src, row, cols);
        free(src);
        return;
    }
    free(src);
    for (uint64_t i = 0; i < nb * qi->block_bytes; i++)
        row[i] = (uint8_t)rnd();
    for (uint64_t b = 0; b < nb; b++) {
        int f[2];
        scale_fields(t, f);
        for (int k = 0; k < 2; k++) {
            if (f[k] < 0)
                continue;
            float v = (0.002f + 0.03f * fabsf(frand())) * (rnd() & 1 ? -1.0f : 1.0f);
            uint16_t h = ks_f32_to_fp16(v * scale);
            memcpy(row + b * qi->block_bytes + (uint32_t)f[k], &h, 2);
        }
    }
}

/* ---- one case ----------------------------------------------------------- */

typedef struct ex_case {
    ks_qtype t;
    uint32_t rows, cols;
    uint32_t ne1;         /* rows of the whole matrix (the CPU path); 0: rows */
    uint32_t n_batch;     /* tokens the CPU computes together; 0: 1 */
    uint32_t split;       /* > 0: two dispatches, tokens [0, split) and the rest */
    uint32_t flags;       /* KS_VK_EXACT_BIAS / RESIDUAL */
    bool     in_place;    /* the residual is y itself */
    uint32_t w_off;       /* bytes before row 0 */
    uint32_t stride_pad;  /* bytes between rows beyond the row's own */
    bool     random_bytes;
} ex_case;

/* Fills the path fields of |a| for tokens [tok0, tok0 + n) of a CPU batch
 * of |n_batch| tokens, as a caller of the driver does. */
static void
set_paths(ks_vk_exact_args *a, ks_qtype t, uint32_t cols, uint32_t ne1, uint32_t n_batch,
          uint32_t tok0, uint32_t n)
{
    ks_cpu_path p0 = ks_cpu_matmul_path(t, cols, ne1, n_batch, tok0), p1 = p0;
    uint32_t k = 1;

    while (k < n && ks_cpu_matmul_path(t, cols, ne1, n_batch, tok0 + k) == p0)
        k++;
    if (k < n)
        p1 = ks_cpu_matmul_path(t, cols, ne1, n_batch, tok0 + k);
    for (uint32_t j = k; j < n; j++)
        ck_assert_int_eq(ks_cpu_matmul_path(t, cols, ne1, n_batch, tok0 + j), p1);
    a->path = p0;
    a->n_first = k < n ? k : 0;
    a->path_rest = p1;
}

/* Paths seen per type, to check that the cases cross all of them. */
static uint32_t paths_seen[KS_QUANT_COUNT];

static void run_case_aligned(ks_vk_ctx *ctx, const ex_case *c);

/* F32 rows start at multiples of 4 bytes in any GGUF file (and the CPU
 * reads them as floats): offsets and paddings that are only even are
 * rounded up for F32. */
static void
run_case(ks_vk_ctx *ctx, const ex_case *c)
{
    ex_case a = *c;

    if (a.t == KS_QUANT_F32) {
        a.w_off = (a.w_off + 3u) & ~3u;
        a.stride_pad = (a.stride_pad + 3u) & ~3u;
    }
    run_case_aligned(ctx, &a);
}

static void
run_case_aligned(ks_vk_ctx *ctx, const ex_case *c)
{
    const ks_qtype_info *qi = ks_qtype_get(c->t);
    const uint32_t n_batch = c->n_batch ? c->n_batch : 1, ne1 = c->ne1 ? c->ne1 : c->rows;
    const uint64_t nb = c->cols / qi->block_elems, row_bytes = nb * qi->block_bytes;
    const uint64_t stride = row_bytes + c->stride_pad;
    const uint64_t w_bytes = ks_align_up(c->w_off + (c->rows - 1) * stride + row_bytes, 16);
    const uint64_t xq_bytes = ks_cpu_act_bytes(c->t, c->cols);
    const uint32_t act_words = ks_vk_act_words(c->t, c->cols);
    /* Offsets and strides with gaps between tokens. */
    const uint32_t x_off = 3, x_stride = act_words + 5;
    const uint32_t y_off = 2, y_stride = c->rows + 3;
    const uint32_t r_off = c->in_place ? y_off : 1, r_stride = c->in_place ? y_stride
                                                                         : c->rows + 2;
    const uint32_t n_x = x_off + n_batch * x_stride, n_y = y_off + n_batch * y_stride + 2;
    const uint32_t n_r = r_off + n_batch * r_stride;
    uint8_t *w = calloc(1, w_bytes), *xq = malloc(n_batch * xq_bytes);
    float *xf = malloc(c->cols * sizeof(float));
    float *ref = malloc((size_t)n_batch * c->rows * sizeof(float));
    float *ref2 = malloc((size_t)n_batch * c->rows * sizeof(float));
    float *bias = malloc(c->rows * sizeof(float)), *res = malloc(n_r * sizeof(float));
    float *y0 = malloc(n_y * sizeof(float)), *y = malloc(n_y * sizeof(float));
    uint32_t *xw = malloc(n_x * 4u);
    ks_vk_buffer wb, xb, yb, bb = { 0 }, rb = { 0 };
    ks_vk_exact *k = NULL;
    VkDescriptorSet set;
    VkCommandBuffer cb;
    ks_simd simd = ks_cpu_simd();

    ck_assert(w && xq && xf && ref && ref2 && bias && res && y0 && y && xw);
    ck_assert_uint_gt(act_words, 0);
    for (uint32_t r = 0; r < c->rows; r++)
        make_row(c->t, c->cols, c->random_bytes && r % 3 != 1,
                 r % 7 == 5 ? 0.0f : 0.25f * (float)(1 + r % 5),
                 w + c->w_off + r * stride);
    for (uint32_t i = 0; i < n_x; i++)
        xw[i] = 0xDEADBEEFu;  /* poison between tokens */
    for (uint32_t t = 0; t < n_batch; t++) {
        for (uint32_t j = 0; j < c->cols; j++)
            xf[j] = (t == 2 && j < 256) ? 0.0f : frand() * (1.0f + (float)((j + t) % 7));
        ks_cpu_quantize_act(c->t, xf, xq + t * xq_bytes, c->cols);
        ks_vk_act_from_cpu(c->t, xq + t * xq_bytes, c->cols, xw + x_off + t * x_stride);
    }
    for (uint32_t r = 0; r < c->rows; r++)
        bias[r] = frand();
    for (uint32_t i = 0; i < n_r; i++)
        res[i] = frand() * 3.0f;
    for (uint32_t i = 0; i < n_y; i++)
        y0[i] = 12345.0f + (float)i;
    if (c->in_place)
        for (uint32_t i = 0; i < n_r && i < n_y; i++)
            y0[i] = res[i];

    /* The CPU's results, on the scalar path and on the SIMD one: equal. */
    ks_cpu_simd_force(KS_SIMD_SCALAR);
    ks_cpu_matmul_rows(c->t, w + c->w_off, stride, c->cols, ne1, c->rows, xq, xq_bytes,
                       n_batch, ref2, c->rows);
    ks_cpu_simd_force(simd);
    ks_cpu_matmul_rows(c->t, w + c->w_off, stride, c->cols, ne1, c->rows, xq, xq_bytes,
                       n_batch, ref, c->rows);
    ck_assert_msg(memcmp(ref, ref2, (size_t)n_batch * c->rows * sizeof(float)) == 0,
                  "%s: the CPU's %s and scalar results differ", qi->name,
                  ks_cpu_simd_name(simd));

    ck_assert_int_eq(ks_vk_buffer_init(ctx, "w", w_bytes, KS_VK_MEM_DEVICE, &wb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "x", n_x * 4u, KS_VK_MEM_DEVICE, &xb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "y", n_y * 4u, KS_VK_MEM_DEVICE, &yb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &wb, 0, w, w_bytes), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &xb, 0, xw, n_x * 4u), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &yb, 0, y0, n_y * 4u), KS_OK);
    ks_vk_exact_bufs bufs = { .w = &wb, .x = &xb, .y = &yb };
    if (c->flags & KS_VK_EXACT_BIAS) {
        ck_assert_int_eq(ks_vk_buffer_init(ctx, "b", c->rows * 4u, KS_VK_MEM_DEVICE, &bb),
                         KS_OK);
        ck_assert_int_eq(ks_vk_buffer_upload(ctx, &bb, 0, bias, c->rows * 4u), KS_OK);
        bufs.bias = &bb;
    }
    if ((c->flags & KS_VK_EXACT_RESIDUAL) && c->in_place) {
        bufs.residual = &yb;
    } else if (c->flags & KS_VK_EXACT_RESIDUAL) {
        ck_assert_int_eq(ks_vk_buffer_init(ctx, "r", n_r * 4u, KS_VK_MEM_DEVICE, &rb), KS_OK);
        ck_assert_int_eq(ks_vk_buffer_upload(ctx, &rb, 0, res, n_r * 4u), KS_OK);
        bufs.residual = &rb;
    }
    ck_assert_msg(ks_vk_exact_get(ctx, c->t, c->flags, &k) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_vk_exact_set(ctx, k, &bufs, &set) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_cmd_begin(ctx, &cb), KS_OK);
    for (uint32_t part = 0; part < 2; part++) {
        uint32_t t0 = part == 0 ? 0 : c->split, n = c->split ? (part == 0 ? c->split
                                                                          : n_batch - c->split)
                                                             : n_batch;
        if (part == 1 && !c->split)
            break;
        ks_vk_exact_args a = {
            .rows = c->rows, .cols = c->cols, .w_off_bytes = c->w_off,
            .row_stride_bytes = stride, .n_tok = n,
            .x_off_words = x_off + t0 * x_stride, .x_stride_words = x_stride,
            .y_off = y_off + t0 * y_stride, .y_stride = y_stride,
            .r_off = r_off + t0 * r_stride, .r_stride = r_stride,
        };
        set_paths(&a, c->t, c->cols, ne1, n_batch, t0, n);
        paths_seen[c->t] |= 1u << a.path;
        if (a.n_first)
            paths_seen[c->t] |= 1u << a.path_rest;
        ck_assert_msg(ks_vk_exact_check(k, &a, &bufs) == KS_OK, "%s", ks_last_error());
        ck_assert_msg(ks_vk_exact_record(ctx, cb, k, set, &a) == KS_OK, "%s",
                      ks_last_error());
        ks_vk_cmd_barrier(cb);
    }
    ck_assert_msg(ks_vk_cmd_submit(ctx) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &yb, 0, y, n_y * 4u), KS_OK);

    for (uint32_t i = 0; i < n_y; i++) {
        uint32_t t = i >= y_off ? (i - y_off) / y_stride : 0, r = i >= y_off ? (i - y_off) % y_stride : 0;
        if (i >= y_off && t < n_batch && r < c->rows)
            continue;
        ck_assert_msg(memcmp(&y[i], &y0[i], 4) == 0, "%s %ux%u: y[%u] outside the outputs "
                      "was written (%g)", qi->name, c->rows, c->cols, i, (double)y[i]);
    }
    for (uint32_t t = 0; t < n_batch; t++)
        for (uint32_t r = 0; r < c->rows; r++) {
            float want = ref[(size_t)t * c->rows + r], got = y[y_off + t * y_stride + r];
            if (c->flags & KS_VK_EXACT_BIAS)
                want = want + bias[r];
            if (c->flags & KS_VK_EXACT_RESIDUAL)
                want = want + res[r_off + t * r_stride + r];
            ck_assert_msg(memcmp(&want, &got, 4) == 0,
                          "%s %ux%u ne1 %u, %u tokens%s, w_off %u stride %" PRIu64 "%s, "
                          "flags %u: token %u (path %d) row %u: got %a (%.9g), the CPU %a "
                          "(%.9g)", qi->name, c->rows, c->cols, ne1, n_batch,
                          c->split ? " split" : "", c->w_off, stride,
                          c->random_bytes ? ", random bytes" : "", c->flags, t,
                          (int)ks_cpu_matmul_path(c->t, c->cols, ne1, n_batch, t), r,
                          (double)got, (double)got, (double)want, (double)want);
        }

    ks_vk_buffer_fini(ctx, &wb);
    ks_vk_buffer_fini(ctx, &xb);
    ks_vk_buffer_fini(ctx, &yb);
    ks_vk_buffer_fini(ctx, &bb);
    ks_vk_buffer_fini(ctx, &rb);
    free(w);
    free(xq);
    free(xf);
    free(ref);
    free(ref2);
    free(bias);
    free(res);
    free(y0);
    free(y);
    free(xw);
}

/* ---- every type, shape, batch size and matrix height ------------------- */

START_TEST(type_shapes)
{
    static const uint32_t batches[] = { 1, 2, 3, 4, 5, 8, 9 };
    /* (rows, ne1): rows not a multiple of 8 of a matrix whose height is
     * (13/16) or is not (13/13, 16/20: tinyBLAS for the float types, not
     * repacked) a multiple of 8. */
    static const uint32_t shapes[][2] = { { 13, 13 }, { 13, 16 }, { 16, 20 } };
    ks_qtype t = types[_i];
    const ks_qtype_info *qi = ks_qtype_get(t);
    uint32_t be = qi->block_elems;
    /* Floats: whole steps of 32, a rest of 13 (no tinyBLAS), a rest of 8.
     * 32-element blocks: an odd count below one unit, 13, 16. K: 1, 3, 5. */
    const uint32_t all_cols[3] = { be == 1 ? 96 : be == 32 ? 96 : 256,
                                   be == 1 ? 333 : be == 32 ? 416 : 768,
                                   be == 1 ? 520 : be == 32 ? 512 : 1280 };
    uint64_t t0 = ks_now_ns();
    ks_vk_ctx *ctx = make_ctx();
    uint32_t n = 0;

    for (size_t ci = 0; ci < 3; ci++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++, n++)
                run_case(ctx, &(ex_case){
                    .t = t, .rows = shapes[si][0], .ne1 = shapes[si][1],
                    .cols = all_cols[ci], .n_batch = batches[bi],
                    .random_bytes = n % 2 == 1,
                    .w_off = n % 3 == 1 ? 2 : n % 3 == 2 ? 4 : 0,
                    .stride_pad = n % 3 == 1 ? 6 : n % 3 == 2 ? 2 : 0 });
    /* Every path the CPU takes for this type was crossed. */
    uint32_t want = 1u << KS_CPU_PATH_VD;
    if (be == 1 || t == KS_QUANT_IQ4_NL)
        want |= 1u << KS_CPU_PATH_BLAS;
    if (t == KS_QUANT_Q4_0 || t == KS_QUANT_IQ4_NL || t == KS_QUANT_Q4_K)
        want |= 1u << KS_CPU_PATH_GEMV | 1u << KS_CPU_PATH_GEMM;
    if (be == 256)
        want |= 1u << KS_CPU_PATH_TILED;
    ck_assert_uint_eq(paths_seen[t], want);
    printf("%-6s %u cases bit-exact (paths 0x%x), %.1f s\n", qi->name, n, paths_seen[t],
           (double)(ks_now_ns() - t0) / 1e9);
    done_ctx(ctx);
}
END_TEST

/* ---- epilogues and split batches ----------------------------------------- */

START_TEST(epilogues)
{
    static const ks_qtype ts[] = { KS_QUANT_Q4_0, KS_QUANT_Q6_K, KS_QUANT_F32,
                                   KS_QUANT_Q5_1 };
    ks_vk_ctx *ctx = make_ctx();

    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        uint32_t cols = ts[i] == KS_QUANT_Q6_K ? 768 : 640;
        for (uint32_t nb = 1; nb <= 5; nb += 2) {
            run_case(ctx, &(ex_case){ .t = ts[i], .rows = 45, .cols = cols, .n_batch = nb,
                                      .flags = KS_VK_EXACT_BIAS });
            run_case(ctx, &(ex_case){ .t = ts[i], .rows = 45, .cols = cols, .n_batch = nb,
                                      .flags = KS_VK_EXACT_RESIDUAL, .w_off = 2 });
            run_case(ctx, &(ex_case){ .t = ts[i], .rows = 40, .cols = cols, .n_batch = nb,
                                      .flags = KS_VK_EXACT_BIAS | KS_VK_EXACT_RESIDUAL });
            /* h = h + W·x with the residual read from y itself. */
            run_case(ctx, &(ex_case){ .t = ts[i], .rows = 30, .cols = cols, .n_batch = nb,
                                      .flags = KS_VK_EXACT_RESIDUAL, .in_place = true });
        }
    }
    done_ctx(ctx);
}
END_TEST

/* A batch computed as two dispatches: the second starts inside the CPU's
 * GEMM tokens and ends on its GEMV token. */
START_TEST(split_batch)
{
    static const ks_qtype ts[] = { KS_QUANT_Q4_K, KS_QUANT_Q4_0, KS_QUANT_IQ4_NL,
                                   KS_QUANT_F16, KS_QUANT_Q6_K };
    ks_vk_ctx *ctx = make_ctx();

    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        uint32_t cols = ts[i] == KS_QUANT_Q4_K || ts[i] == KS_QUANT_Q6_K ? 512 : 256;
        run_case(ctx, &(ex_case){ .t = ts[i], .rows = 24, .cols = cols, .n_batch = 9,
                                  .split = 3, .flags = KS_VK_EXACT_BIAS });
        run_case(ctx, &(ex_case){ .t = ts[i], .rows = 11, .ne1 = 16, .cols = cols,
                                  .n_batch = 6, .split = 5, .random_bytes = true });
    }
    done_ctx(ctx);
}
END_TEST

/* ---- shapes that a loop cut would break --------------------------------- */

/* Rows whose units take the most trips the host allows (16,384) and
 * others long enough that any inner loop left rolled would pass lavapipe's
 * 65,535 trips per invocation and cut the sums short. */
START_TEST(long_rows)
{
    ks_vk_ctx *ctx = make_ctx();

    run_case(ctx, &(ex_case){ .t = KS_QUANT_Q8_0, .rows = 3, .cols = 32u * 2u * 16384u });
    run_case(ctx, &(ex_case){ .t = KS_QUANT_F32, .rows = 2, .cols = 32u * 16384u + 13u });
    run_case(ctx, &(ex_case){ .t = KS_QUANT_Q6_K, .rows = 9, .cols = 256u * 301u,
                              .n_batch = 2 });
    run_case(ctx, &(ex_case){ .t = KS_QUANT_Q4_K, .rows = 8, .cols = 256u * 4100u,
                              .n_batch = 9 });
    done_ctx(ctx);
}
END_TEST

/* Tall matrices, where an invocation computes several rows (the head's
 * shape on lavapipe): every row, the last partial group of rows included,
 * and rows of 1,024 blocks, still match the CPU. */
START_TEST(tall_matrices)
{
    ks_vk_ctx *ctx = make_ctx();

    run_case(ctx, &(ex_case){ .t = KS_QUANT_Q8_0, .rows = 8u * 64u * 16u * 2u + 13u,
                              .cols = 576, .w_off = 4 });
    run_case(ctx, &(ex_case){ .t = KS_QUANT_Q4_0, .rows = 8u * 64u * 5u + 3u, .cols = 768,
                              .n_batch = 3 });
    run_case(ctx, &(ex_case){ .t = KS_QUANT_Q4_1, .rows = 8u * 64u * 3u, .cols = 32u * 1024u,
                              .random_bytes = true });
    done_ctx(ctx);
}
END_TEST

/* ---- the fma emulation ------------------------------------------------------ */

/* exact.comp's probe variant with KS_EXACT_FMA_EMU on 2^18 triples: random
 * ones of wide exponent range, products cancelled by c, and sums that fall
 * within a few double ulps of a float midpoint, where rounding to double
 * and then to float goes wrong (the test counts how often a plain double
 * evaluation would). Every result must equal fmaf's. */
START_TEST(fma_emulation)
{
    enum { N = 1 << 18 };
    const char *defines[2] = { "KS_EXACT_PROBE", "KS_EXACT_FMA_EMU" };
    ks_vk_ctx *ctx = make_ctx();
    float *in = malloc(3u * N * sizeof(float)), *out = malloc(N * sizeof(float));
    ks_vk_spirv spv = { 0 };
    ks_vk_pipeline *pl = NULL;
    ks_vk_buffer ib, ob;
    VkDescriptorSet set;
    uint32_t naive_wrong = 0, wrong = 0;

    ck_assert(in && out);
    if (!ctx->caps.float64) {
        printf("fma emulation: %s has no shaderFloat64, not tested\n", ctx->info.name);
        done_ctx(ctx);
        free(in);
        free(out);
        return;
    }
    for (uint32_t i = 0; i < N; i++) {
        float a = ldexpf(1.0f + (float)(rnd() >> 41) * 0x1p-23f, (int)(rnd() % 61) - 30);
        float b = ldexpf(1.0f + (float)(rnd() >> 41) * 0x1p-23f, (int)(rnd() % 21) - 10);
        double p;
        float c;
        a = rnd() & 1 ? -a : a;
        p = (double)a * (double)b;
        switch (i % 4) {
        case 0:
            c = ldexpf(frand(), (int)(rnd() % 81) - 40);
            break;
        case 1:
            c = nextafterf(-(float)p, (rnd() & 1) ? INFINITY : -INFINITY);
            break;
        default: {
            /* c puts a·b + c next to the midpoint between f and its
             * neighbour, give or take a few ulps of c. */
            float f = (float)p, g = nextafterf(f, (rnd() & 1) ? INFINITY : -INFINITY);
            double mid = ((double)f + (double)g) / 2.0;
            c = (float)(mid - p);
            for (int k = (int)(rnd() % 5) - 2; k != 0; k += k > 0 ? -1 : 1)
                c = nextafterf(c, k > 0 ? INFINITY : -INFINITY);
            break;
        }
        }
        in[3 * i] = a;
        in[3 * i + 1] = b;
        in[3 * i + 2] = c;
        float want = fmaf(a, b, c), naive = (float)(p + (double)c);
        naive_wrong += memcmp(&want, &naive, 4) != 0;
    }
    ks_vk_compile_params cp = { .name = "fma emulation", .defines = defines, .n_defines = 2 };
    ck_assert_msg(ks_vk_shader_get(ctx, "exact.comp", &cp, &spv) == KS_OK, "%s",
                  ks_last_error());
    uint32_t spec[1] = { 64 };
    ks_vk_pipeline_params pp = {
        .name = "fma emulation", .spirv = spv.words, .n_words = spv.n_words, .n_buffers = 2,
        .spec = spec, .n_spec = 1,
    };
    ck_assert_msg(ks_vk_pipeline_create(ctx, &pp, &pl) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "in", 3u * N * 4u, KS_VK_MEM_DEVICE, &ib), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "out", N * 4u, KS_VK_MEM_DEVICE, &ob), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_upload(ctx, &ib, 0, in, 3u * N * 4u), KS_OK);
    const ks_vk_buffer *bufs[2] = { &ib, &ob };
    ck_assert_int_eq(ks_vk_pipeline_set(ctx, pl, bufs, 2, &set), KS_OK);
    ck_assert_msg(ks_vk_dispatch(ctx, pl, set, NULL, N / 64, 1, 1) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_int_eq(ks_vk_buffer_download(ctx, &ob, 0, out, N * 4u), KS_OK);
    for (uint32_t i = 0; i < N; i++) {
        float want = fmaf(in[3 * i], in[3 * i + 1], in[3 * i + 2]);
        if (memcmp(&want, &out[i], 4) != 0 && wrong++ < 5)
            printf("fma(%a, %a, %a): got %a, fmaf %a\n", (double)in[3 * i],
                   (double)in[3 * i + 1], (double)in[3 * i + 2], (double)out[i],
                   (double)want);
    }
    printf("fma emulation: %u of %u results differ from fmaf (a plain double "
           "evaluation: %u)\n", wrong, N, naive_wrong);
    ck_assert_uint_eq(wrong, 0);
    ck_assert_uint_gt(naive_wrong, 0);
    ks_vk_buffer_fini(ctx, &ib);
    ks_vk_buffer_fini(ctx, &ob);
    ks_vk_pipeline_destroy(ctx, pl);
    ks_vk_spirv_fini(&spv);
    free(in);
    free(out);
    done_ctx(ctx);
}
END_TEST

/* ---- the packed activation layout ---------------------------------------- */

START_TEST(act_layout)
{
    float x[512];
    uint8_t q[1024];
    uint32_t w[200];
    uint16_t h;
    int32_t v;

    for (int i = 0; i < 512; i++)
        x[i] = frand() * (float)(1 + i % 5);
    for (size_t i = 0; i < N_TYPES; i++) {
        ks_qtype t = types[i], a = ks_cpu_act_type(t);
        uint32_t n = ks_qtype_get(a)->block_elems == 256 ? 512 : 96;
        uint32_t want = a == KS_QUANT_F32 ? n : a == KS_QUANT_F16 || a == KS_QUANT_BF16
                      ? n / 2 : a == KS_QUANT_Q8_K ? n / 256 * 73 : n / 32 * 10;
        ck_assert_uint_eq(ks_vk_act_words(t, n), want);
        ck_assert(ks_vk_exact_supports(t));
    }
    ck_assert_uint_eq(ks_vk_act_words(KS_QUANT_F16, 7), 4);
    ck_assert_uint_eq(ks_vk_act_words(KS_QUANT_Q4_0, 48), 0);
    ck_assert_uint_eq(ks_vk_act_words(KS_QUANT_Q8_1, 32), 0);
    ck_assert(!ks_vk_exact_supports(KS_QUANT_Q8_K));

    /* Q8_1 (for Q4_1): d and s as floats, then the quants. */
    ks_cpu_quantize_act(KS_QUANT_Q4_1, x, q, 64);
    ks_vk_act_from_cpu(KS_QUANT_Q4_1, q, 64, w);
    for (int b = 0; b < 2; b++) {
        float f;
        memcpy(&h, q + 36 * b, 2);
        memcpy(&f, &w[10 * b], 4);
        ck_assert(f == ks_fp16_to_f32(h));
        memcpy(&h, q + 36 * b + 2, 2);
        memcpy(&f, &w[10 * b + 1], 4);
        ck_assert(f == ks_fp16_to_f32(h));
        for (int j = 0; j < 32; j++)
            ck_assert_int_eq((int8_t)(w[10 * b + 2 + j / 4] >> (8 * (j % 4))),
                             (int8_t)q[36 * b + 4 + j]);
    }
    /* Q8_0: s is 0. */
    ks_cpu_quantize_act(KS_QUANT_Q8_0, x, q, 32);
    ks_vk_act_from_cpu(KS_QUANT_Q8_0, q, 32, w);
    ck_assert_uint_eq(w[1], 0);
    ck_assert_int_eq((int8_t)(w[9] >> 24), (int8_t)q[2 + 31]);
    /* Q8_K: d, quants, bsum 2k low and 2k + 1 high in word 65 + k. */
    ks_cpu_quantize_act(KS_QUANT_Q4_K, x, q, 256);
    ks_vk_act_from_cpu(KS_QUANT_Q4_K, q, 256, w);
    ck_assert_int_eq(memcmp(&w[0], q, 4), 0);
    ck_assert_int_eq((int8_t)(w[64] >> 24), (int8_t)q[4 + 255]);
    for (int k = 0; k < 8; k++) {
        int16_t lo, hi;
        memcpy(&lo, q + 260 + 4 * k, 2);
        memcpy(&hi, q + 262 + 4 * k, 2);
        v = (int32_t)w[65 + k];
        ck_assert_int_eq((int16_t)(v & 0xFFFF), lo);
        ck_assert_int_eq((int16_t)(v >> 16), hi);
    }
    /* F16 with an odd count: the last word holds one half, low. */
    ks_cpu_quantize_act(KS_QUANT_F16, x, q, 7);
    ks_vk_act_from_cpu(KS_QUANT_F16, q, 7, w);
    memcpy(&h, q + 12, 2);
    ck_assert_uint_eq(w[3], h);
}
END_TEST

/* ---- bad arguments --------------------------------------------------------- */

START_TEST(bad_arguments)
{
    ks_vk_ctx *ctx = make_ctx();
    ks_vk_exact *k = NULL, *kb = NULL;
    ks_vk_buffer wb, xb, yb;
    VkDescriptorSet set;

    ck_assert_int_eq(ks_vk_exact_get(ctx, KS_QUANT_Q8_K, 0, &k), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_null(k);
    ck_assert_int_eq(ks_vk_exact_get(ctx, KS_QUANT_Q4_0, 1u << 5, &k), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "flags"));
    ck_assert_int_eq(ks_vk_exact_get(ctx, KS_QUANT_Q5_0, 0, &k), KS_OK);
    ck_assert_int_eq(ks_vk_exact_get(ctx, KS_QUANT_F32, KS_VK_EXACT_BIAS, &kb), KS_OK);

    ck_assert_int_eq(ks_vk_buffer_init(ctx, "w", 4096, KS_VK_MEM_DEVICE, &wb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "x", 4096, KS_VK_MEM_DEVICE, &xb), KS_OK);
    ck_assert_int_eq(ks_vk_buffer_init(ctx, "y", 256, KS_VK_MEM_DEVICE, &yb), KS_OK);
    ks_vk_exact_bufs b = { .w = &wb, .x = &xb, .y = &yb };
    ks_vk_exact_args a = { .rows = 8, .cols = 256, .row_stride_bytes = 176 };

    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_OK);
    a.path = KS_VK_EXACT_PATH_GEMV;
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "not a summation path of Q5_0"));
    a.path = KS_VK_EXACT_PATH_VD;
    a.n_tok = 2;
    a.n_first = 1;
    a.path_rest = 9;
    a.x_stride_words = 80;
    a.y_stride = 8;
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "path_rest 9"));
    a.path_rest = KS_VK_EXACT_PATH_VD;
    a.x_stride_words = 79;
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "x_stride_words 79"));
    a.x_stride_words = 80;
    a.y_stride = 7;
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "y_stride"));
    a = (ks_vk_exact_args){ .rows = 8, .cols = 250, .row_stride_bytes = 176 };
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "block size"));
    a = (ks_vk_exact_args){ .rows = 8, .cols = 256, .row_stride_bytes = 175 };
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "even"));
    a = (ks_vk_exact_args){ .rows = 8, .cols = 256, .row_stride_bytes = 170 };
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "row stride"));
    a = (ks_vk_exact_args){ .rows = 30, .cols = 256, .row_stride_bytes = 176 };
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "buffer 'w'"));
    a = (ks_vk_exact_args){ .rows = 8, .cols = 256, .row_stride_bytes = 176,
                            .x_off_words = 1000 };
    ck_assert_int_eq(ks_vk_exact_check(k, &a, &b), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "buffer 'x'"));
    a = (ks_vk_exact_args){ .rows = 1, .cols = 32u * 8u * 16385u };
    ck_assert_int_eq(ks_vk_exact_check(k, &a, NULL), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "loop"));

    /* tinyBLAS of floats exists for cols % 8 == 0 only. */
    a = (ks_vk_exact_args){ .rows = 4, .cols = 100, .row_stride_bytes = 400,
                            .path = KS_VK_EXACT_PATH_BLAS };
    ck_assert_int_eq(ks_vk_exact_check(kb, &a, NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "multiples of 8"));

    ck_assert_int_eq(ks_vk_exact_set(ctx, kb, &b, &set), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "bias buffer missing"));
    b.bias = &yb;
    ck_assert_int_eq(ks_vk_exact_set(ctx, k, &b, &set), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "without a bias"));
    b.bias = NULL;
    b.x = NULL;
    ck_assert_int_eq(ks_vk_exact_set(ctx, k, &b, &set), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "buffer x missing"));

    ks_vk_buffer_fini(ctx, &wb);
    ks_vk_buffer_fini(ctx, &xb);
    ks_vk_buffer_fini(ctx, &yb);
    bool emulated = k->fma_emu;
    done_ctx(ctx);

    /* Where fma() rounds twice, the kernels need doubles to emulate it. */
    if (emulated) {
        ctx = make_ctx_masked("nofp64");
        ck_assert_int_eq(ks_vk_exact_get(ctx, KS_QUANT_Q4_0, 0, &k), KS_ERR_UNSUPPORTED);
        ck_assert_ptr_nonnull(strstr(ks_last_error(), "shaderFloat64"));
        done_ctx(ctx);
    }
}
END_TEST

static Suite *
exact_suite(void)
{
    Suite *s = suite_create("vk_exact");
    TCase *t = tcase_create("types");

    tcase_set_timeout(t, 900);
    tcase_add_loop_test(t, type_shapes, 0, (int)N_TYPES);
    suite_add_tcase(s, t);

    t = tcase_create("variants");
    tcase_set_timeout(t, 900);
    tcase_add_test(t, epilogues);
    tcase_add_test(t, split_batch);
    suite_add_tcase(s, t);

    t = tcase_create("loop_limit");
    tcase_set_timeout(t, 900);
    tcase_add_test(t, long_rows);
    tcase_add_test(t, tall_matrices);
    suite_add_tcase(s, t);

    t = tcase_create("layout_and_errors");
    tcase_set_timeout(t, 300);
    tcase_add_test(t, fma_emulation);
    tcase_add_test(t, act_layout);
    tcase_add_test(t, bad_arguments);
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
    /* A disk cache of this run's own: kernels compile on first use, later
     * tests (forked processes) read them back, and $HOME stays clean. */
    char cache_dir[64] = "/tmp/kestrel-test-exact-XXXXXX";
    if (!mkdtemp(cache_dir)) {
        perror("mkdtemp");
        return 1;
    }
    setenv("KESTREL_CACHE_DIR", cache_dir, 1);
    unsetenv("KESTREL_NO_CACHE");
    sr = srunner_create(exact_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    nftw(cache_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return failed ? 1 : 0;
#endif
}
