/* Micro benchmark of the CPU matvec/matmul kernels, one thread.
 *
 *   bench_quant [--mib M] [--cols C] [--tok N] [--simd scalar|avx2|avxvnni|avx512|neon|all]
 *               [--time S] [--rows4] [--as-one] [--threads T] [TYPE...]
 *
 * For each TYPE (default: Q4_0 Q4_1 Q8_0 Q4_K Q6_K Q5_0) builds a weight
 * matrix of about M MiB (default 64) with C columns (default 2048) and
 * times ks_cpu_matvec (or ks_cpu_matmul with N activation rows) for about
 * S seconds (default 1); the row count is a multiple of 8, as in real
 * models, so Q4_0, IQ4_NL and Q4_K take llama.cpp's repacked-weight
 * order (--rows4: a multiple of 4 but not of 8, their vec_dot order;
 * --as-one: ks_cpu_matmul_rows_as_one, each token summed as it alone is),
 * on T threads (default 1) that split the rows in 16-row chunks as the
 * forward pass does, printing the weight bytes streamed per second:
 * mean over the wall time, best single pass, and mean over this thread's
 * CPU time (the last two are the fairer figures on a machine that other
 * jobs share). Not a test. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver/base.h"
#include "runtime/cpu/pool.h"
#include "runtime/cpu/quant.h"

static ks_qtype
type_by_name(const char *s)
{
    for (uint32_t t = 0; t < KS_QUANT_COUNT; t++) {
        const ks_qtype_info *i = ks_qtype_get(t);
        if (i && i->cpu && !strcmp(i->name, s))
            return (ks_qtype)t;
    }
    return KS_QUANT_COUNT;
}

static uint64_t
cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;

static float
rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

static bool rows4, as_one;
static ks_pool *pool;

typedef struct mm_job {
    ks_qtype       t;
    const uint8_t *w;
    uint64_t       rb, cols, ab;
    int64_t        rows, n_tok;
    const uint8_t *xq;
    float         *y;
} mm_job;

static void
mm_worker(void *ctx, int ith, int nth)
{
    const mm_job *j = ctx;
    int64_t r0, r1;

    ks_pool_range(j->rows, 16, ith, nth, &r0, &r1);
    if (r1 > r0 && as_one)
        ks_cpu_matmul_rows_as_one(j->t, j->w + (uint64_t)r0 * j->rb, j->rb, j->cols,
                                  j->rows, r1 - r0, j->xq, j->ab, j->n_tok,
                                  j->y + r0, (uint64_t)j->rows);
    else if (r1 > r0)
        ks_cpu_matmul_rows(j->t, j->w + (uint64_t)r0 * j->rb, j->rb, j->cols,
                           j->rows, r1 - r0, j->xq, j->ab, j->n_tok,
                           j->y + r0, (uint64_t)j->rows);
}

/* One whole product, on the pool's threads. */
static void
run_mm(const mm_job *j)
{
    ks_pool_run(pool, mm_worker, (void *)j);
}

static int
bench(ks_qtype t, ks_simd s, uint64_t mib, uint64_t cols, int64_t n_tok,
      double seconds)
{
    const uint64_t distinct = 16;
    uint64_t rb = ks_qtype_row_bytes(t, cols);
    int64_t rows = (int64_t)((mib << 20) / rb);
    uint64_t ab = ks_cpu_act_bytes(t, cols);
    uint8_t *w = malloc(rb * (uint64_t)rows);
    float *x = malloc(cols * (uint64_t)n_tok * sizeof(float));
    uint8_t *xq = malloc(ab * (uint64_t)n_tok);
    float *y = malloc(sizeof(float) * (uint64_t)rows * (uint64_t)n_tok);
    float *src = malloc(cols * sizeof(float));

    if (!w || !x || !xq || !y || !src) {
        fprintf(stderr, "bench_quant: no memory for %llu MiB\n",
                (unsigned long long)mib);
        return 1;
    }
    rows -= rows % 8;
    if (rows4 && rows > 8)
        rows -= 4;
    for (uint64_t r = 0; r < distinct && r < (uint64_t)rows; r++) {
        for (uint64_t i = 0; i < cols; i++)
            src[i] = rnd();
        ks_cpu_quantize_row(t, src, w + r * rb, cols);
    }
    for (uint64_t r = distinct; r < (uint64_t)rows; r++)
        memcpy(w + r * rb, w + (r % distinct) * rb, rb);
    for (uint64_t i = 0; i < cols * (uint64_t)n_tok; i++)
        x[i] = rnd();

    ks_cpu_simd_force(s);
    for (int64_t k = 0; k < n_tok; k++)
        ks_cpu_quantize_act(t, x + (uint64_t)k * cols, xq + (uint64_t)k * ab, cols);
    mm_job job = { t, w, rb, cols, ab, rows, n_tok, xq, y };
    /* warm up once, then time whole passes */
    run_mm(&job);
    uint64_t start = ks_now_ns(), cpu0 = cpu_ns(), now, prev = start;
    uint64_t best = UINT64_MAX;
    int iters = 0;
    do {
        run_mm(&job);
        iters++;
        now = ks_now_ns();
        if (now - prev < best)
            best = now - prev;
        prev = now;
    } while ((double)(now - start) < seconds * 1e9);
    double per = (double)(now - start) / iters;
    double per_cpu = (double)(cpu_ns() - cpu0) / iters;
    double bytes = (double)rb * (double)rows;
    printf("%-7s %-6s %6lld x %-5llu %6.1f MiB tok %-3lld thr %d %8.3f ms  %6.2f GB/s"
           "  best %6.2f GB/s  cpu %6.2f GB/s",
           ks_qtype_name(t), ks_cpu_simd_name(s), (long long)rows,
           (unsigned long long)cols, bytes / (1 << 20), (long long)n_tok,
           ks_pool_n_threads(pool),
           per / 1e6, bytes / per, bytes / (double)best, bytes / per_cpu);
    if (n_tok > 1)
        printf("  best %6.1f GMAC/s",
               (double)rows * (double)cols * (double)n_tok / (double)best);
    printf("  (y0 %.4g)\n", y[0]);
    free(w); free(x); free(xq); free(y); free(src);
    return 0;
}

int
main(int argc, char **argv)
{
    uint64_t mib = 64, cols = 2048;
    int64_t n_tok = 1;
    double seconds = 1.0;
    int n_threads = 1;
    const char *simd = "all";
    ks_qtype types[KS_QUANT_COUNT];
    int n_types = 0;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mib") && i + 1 < argc)
            mib = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--cols") && i + 1 < argc)
            cols = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--tok") && i + 1 < argc)
            n_tok = strtoll(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--time") && i + 1 < argc)
            seconds = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--simd") && i + 1 < argc)
            simd = argv[++i];
        else if (!strcmp(argv[i], "--rows4"))
            rows4 = true;
        else if (!strcmp(argv[i], "--as-one"))
            as_one = true;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            n_threads = atoi(argv[++i]);
        else if (type_by_name(argv[i]) != KS_QUANT_COUNT && n_types < KS_QUANT_COUNT)
            types[n_types++] = type_by_name(argv[i]);
        else {
            fprintf(stderr, "usage: %s [--mib M] [--cols C] [--tok N] "
                    "[--time S] [--simd scalar|avx2|avxvnni|avx512|neon|all] [--rows4] "
                    "[--as-one] [--threads T] [TYPE...]\n", argv[0]);
            return 2;
        }
    }
    if (n_types == 0) {
        const ks_qtype def[] = { KS_QUANT_Q4_0, KS_QUANT_Q4_1, KS_QUANT_Q8_0,
                                 KS_QUANT_Q4_K, KS_QUANT_Q6_K, KS_QUANT_Q5_0 };
        for (int i = 0; i < 6; i++)
            types[n_types++] = def[i];
    }
    if (n_tok < 1 || cols == 0 || cols % ks_qtype_get(types[0])->block_elems) {
        fprintf(stderr, "bench_quant: bad --tok or --cols\n");
        return 2;
    }
    if (ks_pool_create(n_threads, &pool) != KS_OK) {
        fprintf(stderr, "bench_quant: %s\n", ks_last_error());
        return 2;
    }
    for (int k = 0; k < n_types; k++) {
        if (cols % ks_qtype_get(types[k])->block_elems) {
            fprintf(stderr, "bench_quant: %llu columns is not a multiple of %s's block\n",
                    (unsigned long long)cols, ks_qtype_name(types[k]));
            continue;
        }
        for (int s = KS_SIMD_SCALAR; s < KS_SIMD_COUNT; s++) {
            if (!ks_cpu_simd_available((ks_simd)s))
                continue;
            if (strcmp(simd, "all") && strcmp(simd, ks_cpu_simd_name((ks_simd)s)))
                continue;
            if (bench(types[k], (ks_simd)s, mib, cols, n_tok, seconds))
                return 1;
        }
    }
    ks_pool_destroy(pool);
    return 0;
}
