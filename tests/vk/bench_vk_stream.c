/* How fast a shader can read memory on this device: the ceiling a decode
 * step's GB/s is compared with (issue 12, item 5).
 *
 * usage: bench_vk_stream [-m MIB] [-n ITERS]
 * A read-only kernel sums MIB (default 96) of uvec4s into one word per
 * invocation, for several workgroup sizes and two layouts: "own range"
 * (each invocation streams its own contiguous slice, which lavapipe
 * favours) and "interleaved" (neighbouring invocations read neighbouring
 * uvec4s, the usual GPU pattern). Every invocation runs at most a few
 * thousand loop trips, far under lavapipe's 65,535-trip cut, and the sum
 * is checked against the CPU's, so a cut loop shows as an error instead
 * of a fast figure. Each figure is the median of ITERS (default 5)
 * dispatches: wall clock around submit and wait, and the process's CPU
 * time. Not a test: timing is never asserted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "driver/base.h"
#ifdef KS_HAVE_VULKAN
#include "driver/vk.h"
#endif

#ifdef KS_HAVE_VULKAN
static const char stream_src[] =
    "#version 450\n"
    "layout(constant_id = 0) const uint WG = 8;\n"
    "layout(local_size_x_id = 0) in;\n"
    "layout(std430, binding = 0) readonly buffer In { uvec4 v[]; } src;\n"
    "layout(std430, binding = 1) writeonly buffer Out { uint s[]; } dst;\n"
    "layout(push_constant) uniform Args { uint n_vec; uint per_inv; uint interleave; } a;\n"
    "void main() {\n"
    "    uint id = gl_GlobalInvocationID.x;\n"
    "    uint n_inv = gl_NumWorkGroups.x * WG;\n"
    "    uvec4 acc = uvec4(0);\n"
    "    for (uint i = 0; i < a.per_inv; i++) {\n"
    "        uint at = a.interleave != 0u ? i * n_inv + id : id * a.per_inv + i;\n"
    "        if (at < a.n_vec)\n"
    "            acc += src.v[at];\n"
    "    }\n"
    "    dst.s[id] = acc.x + acc.y + acc.z + acc.w;\n"
    "}\n";

typedef struct stream_args {
    uint32_t n_vec, per_inv, interleave;
} stream_args;

static double
cpu_seconds(void)
{
    struct timespec t;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One configuration: median wall and CPU seconds of |iters| dispatches;
 * false (with a message) when the sum is wrong. */
static bool
measure(ks_vk_ctx *ctx, const ks_vk_spirv *spv, const ks_vk_buffer *in, ks_vk_buffer *out,
        uint32_t n_vec, uint32_t want, uint32_t wg, bool interleave, int iters,
        double *wall_s, double *cpu_s)
{
    enum { N_INV = 8192 };
    uint32_t spec[1] = { wg }, n_inv = N_INV, groups = n_inv / wg;
    ks_vk_pipeline_params pp = {
        .name = "stream", .spirv = spv->words, .n_words = spv->n_words, .n_buffers = 2,
        .push_bytes = sizeof(stream_args), .spec = spec, .n_spec = 1,
    };
    stream_args a = { n_vec, (n_vec + n_inv - 1) / n_inv, interleave };
    const ks_vk_buffer *b[2] = { in, out };
    ks_vk_pipeline *pl = NULL;
    VkDescriptorSet set;
    double wall[64], cpu[64];
    uint32_t *sums = malloc(n_inv * sizeof(uint32_t)), got = 0;
    bool ok = false;

    if (!sums || iters > 64)
        goto done;
    if (ks_vk_pipeline_create(ctx, &pp, &pl) != KS_OK ||
        ks_vk_pipeline_set(ctx, pl, b, 2, &set) != KS_OK ||
        ks_vk_dispatch(ctx, pl, set, &a, groups, 1, 1) != KS_OK) {  /* warm-up */
        fprintf(stderr, "bench_vk_stream: %s\n", ks_last_error());
        goto done;
    }
    for (int i = 0; i < iters; i++) {
        uint64_t t0 = ks_now_ns();
        double c0 = cpu_seconds();
        if (ks_vk_dispatch(ctx, pl, set, &a, groups, 1, 1) != KS_OK) {
            fprintf(stderr, "bench_vk_stream: %s\n", ks_last_error());
            goto done;
        }
        wall[i] = (double)(ks_now_ns() - t0) / 1e9;
        cpu[i] = cpu_seconds() - c0;
    }
    if (ks_vk_buffer_download(ctx, out, 0, sums, n_inv * sizeof(uint32_t)) != KS_OK) {
        fprintf(stderr, "bench_vk_stream: %s\n", ks_last_error());
        goto done;
    }
    for (uint32_t i = 0; i < n_inv; i++)
        got += sums[i];
    if (got != want) {
        fprintf(stderr, "bench_vk_stream: wg %u %s: sum %u, the CPU's %u (a loop cut "
                "short?)\n", wg, interleave ? "interleaved" : "own range", got, want);
        goto done;
    }
    qsort(wall, (size_t)iters, sizeof(double), cmp_double);
    qsort(cpu, (size_t)iters, sizeof(double), cmp_double);
    *wall_s = wall[iters / 2];
    *cpu_s = cpu[iters / 2];
    ok = true;
done:
    ks_vk_pipeline_destroy(ctx, pl);
    free(sums);
    return ok;
}
#endif

int
main(int argc, char **argv)
{
#ifdef KS_HAVE_VULKAN
    static const uint32_t wgs[] = { 8, 16, 32, 64 };
    uint64_t mib = 96;
    int iters = 5, rc = 0;
    ks_vk_ctx_params p = { 0 };
    ks_vk_ctx *ctx = NULL;
    ks_vk_buffer in = { 0 }, out = { 0 };
    ks_vk_compile_params cp = { .name = "stream" };
    ks_vk_spirv spv = { 0 };
    uint32_t *data, want = 0;
    uint64_t bytes;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            mib = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_vk_stream [-m MIB] [-n ITERS]\n");
            return 2;
        }
    }
    if (mib == 0 || mib > 120 || iters < 1 || iters > 64) {
        fprintf(stderr, "bench_vk_stream: -m 1..120 (maxStorageBufferRange is 128 MiB on "
                "lavapipe), -n 1..64\n");
        return 2;
    }
    bytes = mib << 20;
    data = malloc(bytes);
    if (!data)
        return 1;
    for (uint64_t i = 0; i < bytes / 4u; i++) {
        data[i] = (uint32_t)(i * 2654435761u) >> 7;
        want += data[i];
    }
    if (ks_vk_ctx_create(&p, &ctx) != KS_OK) {
        fprintf(stderr, "bench_vk_stream: no device: %s\n", ks_last_error());
        free(data);
        return 77;
    }
    if (ks_vk_compile(stream_src, &cp, &spv) != KS_OK ||
        ks_vk_buffer_init(ctx, "stream in", bytes, KS_VK_MEM_DEVICE, &in) != KS_OK ||
        ks_vk_buffer_init(ctx, "stream out", 8192u * 4u, KS_VK_MEM_DEVICE, &out) != KS_OK ||
        ks_vk_buffer_upload(ctx, &in, 0, data, bytes) != KS_OK) {
        fprintf(stderr, "bench_vk_stream: %s\n", ks_last_error());
        rc = 1;
        goto done;
    }
    printf("%s: %llu MiB read per dispatch, 8192 invocations, median of %d\n",
           ctx->info.name, (unsigned long long)mib, iters);
    printf("%-12s %4s %10s %8s %12s\n", "layout", "wg", "ms", "GB/s", "GB/s/cpu-s");
    for (int il = 0; il < 2; il++)
        for (size_t w = 0; w < sizeof wgs / sizeof wgs[0]; w++) {
            double wall, cpu;
            if (!measure(ctx, &spv, &in, &out, (uint32_t)(bytes / 16u), want, wgs[w], il,
                         iters, &wall, &cpu)) {
                rc = 1;
                continue;
            }
            printf("%-12s %4u %10.2f %8.2f %12.2f\n", il ? "interleaved" : "own range",
                   wgs[w], wall * 1e3, (double)bytes / wall / 1e9, (double)bytes / cpu / 1e9);
        }
done:
    ks_vk_spirv_fini(&spv);
    ks_vk_buffer_fini(ctx, &out);
    ks_vk_buffer_fini(ctx, &in);
    ks_vk_ctx_destroy(ctx);
    free(data);
    return rc;
#else
    (void)argc, (void)argv;
    fprintf(stderr, "bench_vk_stream: built without Vulkan\n");
    return 77;
#endif
}
