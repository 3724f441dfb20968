/* bench_sample: the sampler's step time on a Gemma-3-sized vocabulary
 * (262144 logits) for the usual filter chains, at two logit scales. A
 * tool, not a test: it prints the fastest of 20 steps (the least
 * disturbed by other load) and asserts nothing about speed.
 *
 *     build/tests/sample/bench_sample [reps]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "driver/base.h"
#include "runtime/sample.h"

enum { N_VOCAB = 262144 };

/* xorshift64: logits independent of the sampler's own generator. */
static uint64_t rng = 88172645463325252ull;

static double
urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) * (1.0 / 9007199254740992.0);
}

/* The fastest of |reps| steps in ms, after 64 accepted tokens (so the
 * repetition penalty has a window to apply); -1 on error. */
static double
time_step(const ks_sampler_params *p, const float *l, int reps)
{
    ks_sampler *s = NULL;
    uint64_t best = UINT64_MAX;

    if (ks_sampler_create(p, N_VOCAB, &s) != KS_OK) {
        fprintf(stderr, "bench_sample: %s\n", ks_last_error());
        return -1;
    }
    for (int i = 0; i < 64; i++)
        ks_sampler_accept(s, (int32_t)(i * 997 % N_VOCAB));
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = ks_now_ns(), dt;

        (void)ks_sampler_sample(s, l);
        dt = ks_now_ns() - t0;
        best = dt < best ? dt : best;
    }
    ks_sampler_destroy(s);
    return (double)best / 1e6;
}

int
main(int argc, char **argv)
{
    static const struct { const char *name; ks_sampler_params p; } cfg[] = {
        { "greedy", { .temp = 0.0f } },
        { "greedy+penalty", { .temp = 0.0f, .repeat_penalty = 1.1f } },
        { "temp 0.8 only", { .temp = 0.8f } },
        { "top_k 40, top_p 0.95, min_p 0.05, temp 0.8, penalty 1.1",
          { .temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
            .repeat_penalty = 1.1f } },
        { "top_p 0.95 (no top_k), temp 0.8",
          { .temp = 0.8f, .top_p = 0.95f } },
        { "top_p 0.95, min_p 0.05, temp 0.8",
          { .temp = 0.8f, .top_p = 0.95f, .min_p = 0.05f } },
    };
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    float *l = malloc(N_VOCAB * sizeof(float));

    if (!l || reps < 1) {
        fprintf(stderr, "usage: bench_sample [reps >= 1]\n");
        free(l);
        return 2;
    }
    for (int scale = 0; scale < 2; scale++) {
        /* A sum of uniforms: roughly normal logits. */
        for (size_t i = 0; i < N_VOCAB; i++)
            l[i] = (float)((urand() + urand() + urand() + urand() - 2.0) *
                           (scale ? 8.0 : 2.0));
        for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
            double ms = time_step(&cfg[i].p, l, reps);

            if (ms < 0) {
                free(l);
                return 1;
            }
            printf("sampler n_vocab=%d, logit scale %s: %-56s %.3f ms "
                   "(best of %d)\n", N_VOCAB, scale ? "8" : "2", cfg[i].name,
                   ms, reps);
        }
    }
    free(l);
    return 0;
}
