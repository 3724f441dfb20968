/* Sampler tests: greedy, determinism, each filter against a brute-force
 * reference, the repetition penalty rule and the drawn distribution.
 * Step times are bench_sample's (not a test). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/sample.h"

/* A small deterministic generator for test logits (independent of the
 * sampler's own). */
static uint64_t test_rng = 88172645463325252ull;

static double
trand(void)
{
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (double)(test_rng >> 11) * (1.0 / 9007199254740992.0);
}

static void
random_logits(float *l, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) {
        /* sum of uniforms: roughly normal, unbounded enough */
        double g = trand() + trand() + trand() + trand() - 2.0;
        l[i] = (float)(g * scale);
    }
}

static ks_sampler *
make(const ks_sampler_params *p, uint32_t n)
{
    ks_sampler *s = NULL;
    ck_assert_int_eq(ks_sampler_create(p, n, &s), KS_OK);
    ck_assert_ptr_nonnull(s);
    return s;
}

static int32_t
argmax_ref(const float *l, size_t n)
{
    int32_t b = 0;
    for (size_t i = 1; i < n; i++)
        if (l[i] > l[b])
            b = (int32_t)i;
    return b;
}

/* ---- greedy ---- */

START_TEST(greedy_picks_argmax)
{
    float l[1000];
    ks_sampler *s;

    random_logits(l, 1000, 3.0f);
    s = make(NULL, 1000);
    ck_assert_int_eq(ks_sampler_sample(s, l), argmax_ref(l, 1000));
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(greedy_ties_lowest_id_and_ignores_seed)
{
    float l[8] = { 0, 1, 5, 3, 5, 5, -1, 2 };
    float nan_l[4] = { NAN, 1.0f, NAN, 0.5f };

    for (uint64_t seed = 0; seed < 5; seed++) {
        ks_sampler_params p = { .temp = 0.0f, .seed = seed * 7919 };
        ks_sampler *s = make(&p, 8);
        ck_assert_int_eq(ks_sampler_sample(s, l), 2);
        ck_assert_int_eq(ks_sampler_sample(s, l), 2);
        ks_sampler_destroy(s);
    }
    {
        ks_sampler_params p = { .temp = -1.0f };
        ks_sampler *s = make(&p, 4);
        ck_assert_int_eq(ks_sampler_sample(s, nan_l), 1);
        ks_sampler_destroy(s);
    }
}
END_TEST

START_TEST(logits_are_not_modified)
{
    float l[500], copy[500];
    ks_sampler_params p = { .temp = 0.7f, .top_k = 20, .top_p = 0.9f,
                            .min_p = 0.05f, .repeat_penalty = 1.3f,
                            .seed = 3 };
    ks_sampler *s;

    random_logits(l, 500, 2.0f);
    memcpy(copy, l, sizeof l);
    s = make(&p, 500);
    for (int i = 0; i < 50; i++)
        ks_sampler_accept(s, ks_sampler_sample(s, l));
    ck_assert_int_eq(memcmp(copy, l, sizeof l), 0);
    ks_sampler_destroy(s);
}
END_TEST

/* ---- determinism ---- */

static void
run_seq(uint64_t seed, const float *l, uint32_t n, int32_t *out, int len)
{
    ks_sampler_params p = { .temp = 1.0f, .seed = seed };
    ks_sampler *s = make(&p, n);
    for (int i = 0; i < len; i++)
        out[i] = ks_sampler_sample(s, l);
    ks_sampler_destroy(s);
}

START_TEST(same_seed_same_sequence)
{
    enum { N = 64, LEN = 200 };
    float l[N];
    int32_t a[LEN], b[LEN], c[LEN];
    int differ = 0;

    for (int i = 0; i < N; i++)
        l[i] = 0.0f;             /* flat: every draw is pure randomness */
    run_seq(42, l, N, a, LEN);
    run_seq(42, l, N, b, LEN);
    run_seq(43, l, N, c, LEN);
    ck_assert_int_eq(memcmp(a, b, sizeof a), 0);
    for (int i = 0; i < LEN; i++)
        differ += a[i] != c[i];
    ck_assert_int_gt(differ, LEN / 2);
}
END_TEST

START_TEST(reset_restarts_the_sequence)
{
    enum { N = 32, LEN = 50 };
    float l[N];
    int32_t a[LEN];
    ks_sampler_params p = { .temp = 1.0f, .repeat_penalty = 1.5f, .seed = 9 };
    ks_sampler *s;

    random_logits(l, N, 1.0f);
    s = make(&p, N);
    for (int i = 0; i < LEN; i++) {
        a[i] = ks_sampler_sample(s, l);
        ks_sampler_accept(s, a[i]);
    }
    ks_sampler_reset(s);
    for (int i = 0; i < LEN; i++) {
        int32_t t = ks_sampler_sample(s, l);
        ck_assert_int_eq(t, a[i]);
        ks_sampler_accept(s, t);
    }
    ks_sampler_destroy(s);
}
END_TEST

/* ---- filters ---- */

START_TEST(top_k_1_equals_greedy)
{
    enum { N = 3000 };
    static float l[N];

    for (int round = 0; round < 20; round++) {
        ks_sampler_params p = { .temp = 1.5f, .top_k = 1,
                                .seed = (uint64_t)round };
        ks_sampler *s = make(&p, N);
        random_logits(l, N, 1.0f);
        ck_assert_int_eq(ks_sampler_sample(s, l), argmax_ref(l, N));
        ks_sampler_destroy(s);
    }
}
END_TEST

START_TEST(top_k_draws_only_from_the_k_best)
{
    enum { N = 5000, K = 10, DRAWS = 4000 };
    static float l[N], sorted[N];
    int seen[K] = { 0 };
    ks_sampler_params p = { .temp = 1.0f, .top_k = K, .seed = 5 };
    ks_sampler *s = make(&p, N);
    float kth;

    random_logits(l, N, 0.3f);    /* nearly flat: all K get drawn */
    memcpy(sorted, l, sizeof l);
    for (int i = 0; i < K; i++)   /* partial selection sort for reference */
        for (int j = i + 1; j < N; j++)
            if (sorted[j] > sorted[i]) {
                float t = sorted[i];
                sorted[i] = sorted[j];
                sorted[j] = t;
            }
    kth = sorted[K - 1];
    for (int d = 0; d < DRAWS; d++) {
        int32_t t = ks_sampler_sample(s, l);
        ck_assert_int_ge(t, 0);
        ck_assert_int_lt(t, N);
        ck_assert_msg(l[t] >= kth, "token %d (logit %g) is below the %dth "
                      "best logit %g", t, (double)l[t], K, (double)kth);
        for (int i = 0; i < K; i++)
            if (l[t] == sorted[i])
                seen[i] = 1;
    }
    for (int i = 0; i < K; i++)
        ck_assert_msg(seen[i], "rank %d never drawn", i);
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(top_p_small_keeps_only_the_top_token)
{
    enum { N = 2000 };
    static float l[N];
    ks_sampler_params p = { .temp = 1.0f, .top_p = 0.001f, .seed = 11 };
    ks_sampler *s = make(&p, N);

    random_logits(l, N, 1.0f);
    for (int d = 0; d < 200; d++)
        ck_assert_int_eq(ks_sampler_sample(s, l), argmax_ref(l, N));
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(top_p_keeps_the_smallest_prefix)
{
    /* probabilities 0.1 0.4 0.2 0.3 (shuffled ids): p = 0.6 keeps
     * {0.4, 0.3} (0.4 < 0.6 <= 0.7), renormalized to 4/7 and 3/7. */
    float l[4] = { logf(0.1f), logf(0.4f), logf(0.2f), logf(0.3f) };
    ks_sampler_params p = { .temp = 1.0f, .top_p = 0.6f, .seed = 77 };
    ks_sampler *s = make(&p, 4);
    int cnt[4] = { 0 };
    enum { DRAWS = 20000 };

    for (int d = 0; d < DRAWS; d++)
        cnt[ks_sampler_sample(s, l)]++;
    ck_assert_int_eq(cnt[0], 0);
    ck_assert_int_eq(cnt[2], 0);
    ck_assert_double_eq_tol(cnt[1] / (double)DRAWS, 4.0 / 7.0, 0.02);
    ck_assert_double_eq_tol(cnt[3] / (double)DRAWS, 3.0 / 7.0, 0.02);
    ks_sampler_destroy(s);
}
END_TEST

static int
cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

START_TEST(top_p_matches_sorted_reference_on_large_vocab)
{
    enum { N = 50000, DRAWS = 3000 };
    static float l[N], sorted[N];
    double z = 0.0, acc = 0.0, mx;
    float cut = 0.0f;
    ks_sampler_params p = { .temp = 1.0f, .top_p = 0.5f, .seed = 123 };
    ks_sampler *s = make(&p, N);

    random_logits(l, N, 4.0f);
    memcpy(sorted, l, sizeof l);
    qsort(sorted, N, sizeof(float), cmp_desc);
    mx = sorted[0];
    for (int i = 0; i < N; i++)
        z += exp(sorted[i] - mx);
    for (int i = 0; i < N; i++) {
        acc += exp(sorted[i] - mx);
        if (acc >= 0.5 * z) {
            cut = sorted[i];
            break;
        }
    }
    for (int d = 0; d < DRAWS; d++) {
        int32_t t = ks_sampler_sample(s, l);
        ck_assert_msg(l[t] >= cut, "token %d logit %g below the top-p cut "
                      "%g", t, (double)l[t], (double)cut);
    }
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(top_p_on_equal_logits_keeps_the_lowest_ids)
{
    /* all equal: the order is by id, so p = 0.5 keeps ids 0..499 */
    enum { N = 1000, DRAWS = 5000 };
    static float l[N];
    ks_sampler_params p = { .temp = 1.0f, .top_p = 0.5f, .seed = 6 };
    ks_sampler *s = make(&p, N);
    int32_t hi = 0;

    for (int d = 0; d < DRAWS; d++) {
        int32_t t = ks_sampler_sample(s, l);
        ck_assert_int_lt(t, 500);
        hi = t > hi ? t : hi;
    }
    ck_assert_int_gt(hi, 480);
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(top_k_then_top_p_matches_reference)
{
    /* top-p after top-k looks at the softmax of the k survivors only */
    enum { N = 5000, K = 50, DRAWS = 5000 };
    static float l[N], sorted[N];
    double z = 0.0, acc = 0.0;
    float cut = 0.0f;
    int kept = 0;
    ks_sampler_params p = { .temp = 1.0f, .top_k = K, .top_p = 0.6f,
                            .seed = 31 };
    ks_sampler *s = make(&p, N);

    random_logits(l, N, 1.0f);
    memcpy(sorted, l, sizeof l);
    qsort(sorted, N, sizeof(float), cmp_desc);
    for (int i = 0; i < K; i++)
        z += exp(sorted[i] - sorted[0]);
    for (int i = 0; i < K; i++) {
        acc += exp(sorted[i] - sorted[0]);
        if (acc >= 0.6 * z) {
            cut = sorted[i];
            kept = i + 1;
            break;
        }
    }
    ck_assert_int_gt(kept, 5);       /* the case is not degenerate */
    ck_assert_int_lt(kept, K);
    for (int d = 0; d < DRAWS; d++) {
        int32_t t = ks_sampler_sample(s, l);
        ck_assert_msg(l[t] >= cut, "token %d logit %g below the cut %g",
                      t, (double)l[t], (double)cut);
    }
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(min_p_filters)
{
    /* probs 0.5 0.3 0.15 0.05; min_p 0.2 keeps p >= 0.1: ids 0..2 */
    float l[4] = { logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f) };
    ks_sampler_params p = { .temp = 1.0f, .min_p = 0.2f, .seed = 1 };
    ks_sampler *s = make(&p, 4);
    int cnt[4] = { 0 };
    enum { DRAWS = 20000 };

    for (int d = 0; d < DRAWS; d++)
        cnt[ks_sampler_sample(s, l)]++;
    ck_assert_int_eq(cnt[3], 0);
    ck_assert_double_eq_tol(cnt[0] / (double)DRAWS, 0.5 / 0.95, 0.02);
    ck_assert_double_eq_tol(cnt[1] / (double)DRAWS, 0.3 / 0.95, 0.02);
    ck_assert_double_eq_tol(cnt[2] / (double)DRAWS, 0.15 / 0.95, 0.02);
    ks_sampler_destroy(s);
}
END_TEST

/* ---- repetition penalty ---- */

START_TEST(repeat_penalty_changes_the_pick)
{
    float pos[3] = { 2.0f, 1.9f, 0.0f };     /* 2.0 / 1.1 = 1.82 < 1.9 */
    float neg[3] = { -1.0f, -1.05f, -5.0f }; /* -1.0 * 1.1 = -1.1 < -1.05 */
    ks_sampler_params p = { .temp = 0.0f, .repeat_penalty = 1.1f };
    ks_sampler *s = make(&p, 3);

    ck_assert_int_eq(ks_sampler_sample(s, pos), 0);
    ks_sampler_accept(s, 0);
    ck_assert_int_eq(ks_sampler_sample(s, pos), 1);
    ck_assert_int_eq(ks_sampler_sample(s, neg), 1);
    ks_sampler_destroy(s);

    /* The same with sampling at a tiny temperature and top-k 2 */
    p.temp = 0.001f;
    p.top_k = 2;
    s = make(&p, 3);
    ks_sampler_accept(s, 0);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(ks_sampler_sample(s, pos), 1);
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(repeat_penalty_once_per_token_and_windowed)
{
    float l[8] = { 2.0f, 1.7f, 0, 0, 0, 0, 0, 0 };
    ks_sampler_params p = { .temp = 0.0f, .repeat_penalty = 1.1f,
                            .repeat_last_n = 2 };
    ks_sampler *s = make(&p, 8);

    /* 2.0 / 1.1 = 1.82 > 1.7; twice would be 1.65 < 1.7 */
    ks_sampler_accept(s, 0);
    ks_sampler_accept(s, 0);
    ck_assert_int_eq(ks_sampler_sample(s, l), 0);
    /* now with penalty 1.2 for a visible effect, token 0 leaves the window */
    ks_sampler_destroy(s);
    p.repeat_penalty = 1.2f;
    s = make(&p, 8);
    ks_sampler_accept(s, 0);
    ck_assert_int_eq(ks_sampler_sample(s, l), 1);
    ks_sampler_accept(s, 5);
    ck_assert_int_eq(ks_sampler_sample(s, l), 1);
    ks_sampler_accept(s, 6);     /* window of 2: {5, 6}, 0 dropped */
    ck_assert_int_eq(ks_sampler_sample(s, l), 0);
    ks_sampler_accept(s, 99);    /* out of range: ignored */
    ks_sampler_accept(s, -1);
    ck_assert_int_eq(ks_sampler_sample(s, l), 0);
    ks_sampler_reset(s);
    ks_sampler_accept(s, 0);
    ck_assert_int_eq(ks_sampler_sample(s, l), 1);
    ks_sampler_destroy(s);
}
END_TEST

/* ---- distribution ---- */

START_TEST(distribution_matches_softmax)
{
    float l[3] = { logf(0.5f), logf(0.3f), logf(0.2f) };
    ks_sampler_params p = { .temp = 1.0f, .seed = 2024 };
    ks_sampler *s = make(&p, 3);
    int cnt[3] = { 0 };
    enum { DRAWS = 20000 };

    for (int d = 0; d < DRAWS; d++)
        cnt[ks_sampler_sample(s, l)]++;
    ck_assert_double_eq_tol(cnt[0] / (double)DRAWS, 0.5, 0.02);
    ck_assert_double_eq_tol(cnt[1] / (double)DRAWS, 0.3, 0.02);
    ck_assert_double_eq_tol(cnt[2] / (double)DRAWS, 0.2, 0.02);
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(temperature_sharpens)
{
    /* temp 0.5 squares the probabilities: 0.25 : 0.09 : 0.04 */
    float l[3] = { logf(0.5f), logf(0.3f), logf(0.2f) };
    ks_sampler_params p = { .temp = 0.5f, .seed = 8 };
    ks_sampler *s = make(&p, 3);
    int cnt[3] = { 0 };
    enum { DRAWS = 20000 };

    for (int d = 0; d < DRAWS; d++)
        cnt[ks_sampler_sample(s, l)]++;
    ck_assert_double_eq_tol(cnt[0] / (double)DRAWS, 0.25 / 0.38, 0.02);
    ck_assert_double_eq_tol(cnt[2] / (double)DRAWS, 0.04 / 0.38, 0.02);
    ks_sampler_destroy(s);
}
END_TEST

START_TEST(odd_logits_are_safe)
{
    float l[5] = { NAN, -INFINITY, INFINITY, 1.0f, NAN };
    float all_inf[3] = { -INFINITY, -INFINITY, -INFINITY };
    ks_sampler_params p = { .temp = 1.0f, .top_p = 0.9f, .min_p = 0.1f,
                            .seed = 4 };
    ks_sampler *s = make(&p, 5);

    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(ks_sampler_sample(s, l), 2);
    ks_sampler_destroy(s);
    s = make(&p, 3);
    ck_assert_int_eq(ks_sampler_sample(s, all_inf), 0);
    ks_sampler_destroy(s);
}
END_TEST

/* ---- parameters ---- */

START_TEST(bad_params_are_rejected)
{
    ks_sampler *s = (ks_sampler *)&s;
    ks_sampler_params p = { .top_k = -1 };

    ck_assert_int_eq(ks_sampler_create(&p, 10, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "top_k"));
    p = (ks_sampler_params){ .min_p = 1.5f };
    ck_assert_int_eq(ks_sampler_create(&p, 10, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "min_p"));
    p = (ks_sampler_params){ .top_p = -0.1f };
    ck_assert_int_eq(ks_sampler_create(&p, 10, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "top_p"));
    p = (ks_sampler_params){ .repeat_last_n = -1 };
    ck_assert_int_eq(ks_sampler_create(&p, 10, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "repeat_last_n"));
    p = (ks_sampler_params){ .temp = NAN };
    ck_assert_int_eq(ks_sampler_create(&p, 10, &s), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_sampler_create(NULL, 0, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "n_vocab"));
    ks_sampler_destroy(NULL);
}
END_TEST

static Suite *
sample_suite(void)
{
    Suite *s = suite_create("sample");
    TCase *tc;

    tc = tcase_create("greedy");
    tcase_add_test(tc, greedy_picks_argmax);
    tcase_add_test(tc, greedy_ties_lowest_id_and_ignores_seed);
    tcase_add_test(tc, logits_are_not_modified);
    suite_add_tcase(s, tc);

    tc = tcase_create("determinism");
    tcase_add_test(tc, same_seed_same_sequence);
    tcase_add_test(tc, reset_restarts_the_sequence);
    suite_add_tcase(s, tc);

    tc = tcase_create("filters");
    tcase_add_test(tc, top_k_1_equals_greedy);
    tcase_add_test(tc, top_k_draws_only_from_the_k_best);
    tcase_add_test(tc, top_p_small_keeps_only_the_top_token);
    tcase_add_test(tc, top_p_keeps_the_smallest_prefix);
    tcase_add_test(tc, top_p_matches_sorted_reference_on_large_vocab);
    tcase_add_test(tc, top_p_on_equal_logits_keeps_the_lowest_ids);
    tcase_add_test(tc, top_k_then_top_p_matches_reference);
    tcase_add_test(tc, min_p_filters);
    suite_add_tcase(s, tc);

    tc = tcase_create("penalty");
    tcase_add_test(tc, repeat_penalty_changes_the_pick);
    tcase_add_test(tc, repeat_penalty_once_per_token_and_windowed);
    suite_add_tcase(s, tc);

    tc = tcase_create("distribution");
    tcase_add_test(tc, distribution_matches_softmax);
    tcase_add_test(tc, temperature_sharpens);
    tcase_add_test(tc, odd_logits_are_safe);
    suite_add_tcase(s, tc);

    tc = tcase_create("params");
    tcase_add_test(tc, bad_params_are_rejected);
    suite_add_tcase(s, tc);

    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(sample_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
