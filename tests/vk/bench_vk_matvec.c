/* Micro-benchmark of the Vulkan matvec kernels: GB/s of weight bytes read.
 *
 * usage: bench_vk_matvec [-m MIB] [-n ITERS] [-c COLS] [-w WG] [-r ROWS]
 *                        [-s SPLIT] [TYPE...]
 * Defaults: 64 MiB of weights per type, 2048 columns, 10 dispatches per
 * measurement, the kernel's default tuning, types Q4_0 Q4_1 Q8_0 Q4_K
 * Q6_K Q5_0. The matrix is a few hundred random quantized rows repeated,
 * the first rows are checked against the CPU, and the figures are the best
 * of three submits of ITERS dispatches each: wall clock around the submit,
 * and the process's CPU time (lavapipe's threads included), which stays
 * meaningful when other jobs share the cores. On lavapipe compare with the
 * ~8 GB/s a plain streaming shader reaches (shared/reference/
 * glslang-at-runtime.md). Not a test: timing is never asserted. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver/base.h"
#include "runtime/cpu/quant.h"
#include "runtime/qtype.h"
#ifdef KS_HAVE_VULKAN
#include "driver/vk.h"
#include "driver/vk_matvec.h"
#endif

#ifdef KS_HAVE_VULKAN
/* CPU time of the whole process (lavapipe's worker threads included): on
 * a shared machine it says what the kernel costs when wall time cannot. */
static double
cpu_seconds(void)
{
    struct timespec t;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t rng_state = 0x2545F4914F6CDD1Du;

static float
frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / (double)(1ull << 52) - 1.0);
}

static int
find_type(const char *name)
{
    for (uint32_t t = 0; t < KS_QUANT_COUNT; t++) {
        const ks_qtype_info *qi = ks_qtype_get(t);
        if (qi && qi->name && strcmp(qi->name, name) == 0)
            return (int)t;
    }
    return -1;
}

/* Runs one type; returns GB/s or a negative value on failure. */
static double
bench_type(ks_vk_ctx *ctx, ks_qtype t, uint64_t mib, uint32_t cols, uint32_t iters,
           const ks_vk_matvec_tune *tune)
{
    enum { DISTINCT = 256 };
    const ks_qtype_info *qi = ks_qtype_get(t);
    uint64_t row_bytes = ks_qtype_row_bytes(t, cols);
    uint32_t rows = (uint32_t)((mib << 20) / row_bytes);
    uint64_t w_bytes = ks_align_up(rows * row_bytes, 16);
    uint8_t *w = malloc(w_bytes);
    float *src = malloc(cols * sizeof(float)), *x = malloc(cols * sizeof(float));
    float *deq = malloc(cols * sizeof(float)), y[8];
    ks_vk_buffer wb = { 0 }, xb = { 0 }, yb = { 0 };
    ks_vk_matvec *mv = NULL;
    VkDescriptorSet set;
    VkCommandBuffer cb;
    double best = 1e30, best_cpu = 1e30, first = 0, gbs = -1.0;
    ks_status st;

    if (!w || !src || !x || !deq) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    for (uint32_t r = 0; r < DISTINCT && r < rows; r++) {
        for (uint32_t j = 0; j < cols; j++)
            src[j] = frand();
        ks_cpu_quantize_row(t, src, w + r * row_bytes, cols);
    }
    for (uint32_t r = DISTINCT; r < rows; r++)
        memcpy(w + r * row_bytes, w + (r % DISTINCT) * row_bytes, row_bytes);
    memset(w + rows * row_bytes, 0, w_bytes - rows * row_bytes);
    for (uint32_t j = 0; j < cols; j++)
        x[j] = frand();

    if ((st = ks_vk_buffer_init(ctx, "w", w_bytes, KS_VK_MEM_DEVICE, &wb)) != KS_OK ||
        (st = ks_vk_buffer_init(ctx, "x", cols * 4u, KS_VK_MEM_DEVICE, &xb)) != KS_OK ||
        (st = ks_vk_buffer_init(ctx, "y", rows * 4u, KS_VK_MEM_DEVICE, &yb)) != KS_OK ||
        (st = ks_vk_buffer_upload(ctx, &wb, 0, w, w_bytes)) != KS_OK ||
        (st = ks_vk_buffer_upload(ctx, &xb, 0, x, cols * 4u)) != KS_OK ||
        (st = ks_vk_matvec_create(ctx, t, ks_vk_matvec_layout_flags(0, row_bytes), tune,
                                  &mv)) != KS_OK)
        goto fail;
    ks_vk_matvec_bufs bufs = { .w = &wb, .x = &xb, .y = &yb };
    ks_vk_matvec_args a = { .rows = rows, .cols = cols, .row_stride_bytes = row_bytes };
    if ((st = ks_vk_matvec_check(mv, &a, &bufs)) != KS_OK ||
        (st = ks_vk_matvec_set(ctx, mv, &bufs, &set)) != KS_OK)
        goto fail;
    for (int rep = 0; rep < 4; rep++) {
        if ((st = ks_vk_cmd_begin(ctx, &cb)) != KS_OK)
            goto fail;
        for (uint32_t i = 0; i < (rep ? iters : 1u); i++) {
            if ((st = ks_vk_matvec_record(ctx, cb, mv, set, &a)) != KS_OK) {
                ks_vk_cmd_abort(ctx);
                goto fail;
            }
            ks_vk_cmd_barrier(cb);
        }
        uint64_t t0 = ks_now_ns();
        double c0 = cpu_seconds();
        if ((st = ks_vk_cmd_submit(ctx)) != KS_OK)
            goto fail;
        double s = (double)(ks_now_ns() - t0) / 1e9, c = cpu_seconds() - c0;
        if (rep && s < best)
            best = s;
        if (rep && c < best_cpu)
            best_cpu = c;
        if (!rep)
            first = s;
    }
    if ((st = ks_vk_buffer_download(ctx, &yb, 0, y, sizeof y)) != KS_OK)
        goto fail;
    for (uint32_t r = 0; r < 8 && r < rows; r++) {
        double ref = 0, mag = 0;
        ks_cpu_dequant_row(t, w + r * row_bytes, deq, cols);
        for (uint32_t j = 0; j < cols; j++) {
            ref += (double)deq[j] * x[j];
            mag += fabs((double)deq[j] * x[j]);
        }
        if (fabs(y[r] - ref) > 1e-4 * mag + 1e-6) {
            fprintf(stderr, "%s: row %u: got %g, expected %g\n", qi->name, r, (double)y[r], ref);
            goto done;
        }
    }
    gbs = (double)rows * (double)row_bytes * iters / best / 1e9;
    printf("%-6s %6u x %-5u %6.1f MiB  wg %2u split %2u rows %2u  %7.2f ms %6.2f GB/s  "
           "cpu %7.2f ms %6.2f GB/s/core  (first dispatch %.0f ms)\n", qi->name, rows, cols,
           (double)(rows * row_bytes) / 1048576.0, mv->wg_size, mv->split, mv->rows,
           best / iters * 1e3, gbs, best_cpu / iters * 1e3,
           (double)rows * (double)row_bytes * iters / best_cpu / 1e9, first * 1e3);
    goto done;
fail:
    fprintf(stderr, "%s: %s\n", qi->name, ks_last_error());
done:
    ks_vk_matvec_destroy(ctx, mv);
    ks_vk_buffer_fini(ctx, &wb);
    ks_vk_buffer_fini(ctx, &xb);
    ks_vk_buffer_fini(ctx, &yb);
    free(w);
    free(src);
    free(x);
    free(deq);
    return gbs;
}
#endif

int
main(int argc, char **argv)
{
#ifndef KS_HAVE_VULKAN
    (void)argc;
    (void)argv;
    fprintf(stderr, "built without Vulkan\n");
    return 1;
#else
    static const char *defaults[] = { "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "Q5_0" };
    ks_vk_matvec_tune tune = { 0 };
    uint64_t mib = 64;
    uint32_t cols = 2048, iters = 10;
    const char *names[32];
    int n_names = 0, failed = 0;
    ks_vk_ctx *ctx = NULL;
    ks_vk_device_info d[16];
    uint32_t n = 16;
    ks_vk_ctx_params p = { 0 };

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (o[0] == '-' && i + 1 < argc) {
            unsigned long v = strtoul(argv[++i], NULL, 10);
            switch (o[1]) {
            case 'm': mib = v; break;
            case 'n': iters = (uint32_t)v; break;
            case 'c': cols = (uint32_t)v; break;
            case 'w': tune.wg_size = (uint32_t)v; break;
            case 'r': tune.rows = (uint32_t)v; break;
            case 's': tune.split = (uint32_t)v; break;
            default: fprintf(stderr, "unknown option %s\n", o); return 2;
            }
        } else if (n_names < 32) {
            names[n_names++] = o;
        }
    }
    if (!n_names)
        for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
            names[n_names++] = defaults[i];
    if (ks_vk_devices_list(d, &n) == KS_OK)
        for (uint32_t i = 0; i < n; i++)
            if (d[i].driver_id == VK_DRIVER_ID_MESA_LLVMPIPE && !getenv("KESTREL_VK_DEVICE")) {
                p.force_device = true;
                p.device_index = i;
            }
    if (getenv("KESTREL_VK_DEVICE")) {
        p.force_device = true;
        p.device_index = (uint32_t)atoi(getenv("KESTREL_VK_DEVICE"));
    }
    if (ks_vk_ctx_create(&p, &ctx) != KS_OK) {
        fprintf(stderr, "no Vulkan context: %s\n", ks_last_error());
        return 1;
    }
    printf("device: %s (%s)\n", ctx->info.name, ctx->info.driver_info);
    for (int i = 0; i < n_names; i++) {
        int t = find_type(names[i]);
        if (t < 0 || !ks_vk_matvec_supports((uint32_t)t) || cols % ks_qtype_get(t)->block_elems) {
            fprintf(stderr, "%s: not a supported type for %u columns\n", names[i], cols);
            failed = 1;
            continue;
        }
        if (bench_type(ctx, (ks_qtype)t, mib, cols, iters, &tune) < 0)
            failed = 1;
    }
    ks_vk_ctx_destroy(ctx);
    return failed;
#endif
}
