/* Sampled speculation is lossless (session.h, ks_generate_params.spec
 * with temperature): the tokens it emits follow the target's own
 * distribution. A two-sample chi-square test compares, over many seeds,
 * the tokens at the positions that speculation chose (a drafted token
 * kept or rejected, the residual draw, the bonus row) with those of
 * plain sampling, under each sampler setting `run` accepts. The same test
 * with a wrong acceptance rule (runtime/spec_sample.h:
 * ks_spec_test_break, or KS_SPEC_TEST_BREAK=1|2 in the environment for
 * the whole file) fails: the threshold is tight enough to catch one.
 *
 * The pair: the target has 2 layers; the draft is written from another
 * seed, so its distribution differs from the target's and rejections are
 * frequent (the rule matters); "half" (the target's first layer) agrees
 * more often. A low temperature concentrates the mass on a few tokens so
 * that each cell of the test has many draws. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "runtime/spec_sample.h"
#include "runtime/synth.h"
#include "scheduler/governor.h"

enum { N_VOCAB = 300, N_DRAWS = 3000, N_GEN = 4, K = 3 };

static char dir[] = "/tmp/kestrel-test-spec-sample-XXXXXX";
static char paths[3][256];
static ks_runtime *rt;
static ks_model *target, *other, *half;

static ks_model *
write_load(int i, uint32_t n_layers, uint64_t seed)
{
    ks_synth_params p = {
        .arch = "qwen2", .n_embd = 32, .n_layers = n_layers, .n_head = 4, .n_head_kv = 2,
        .n_ff = 48, .n_vocab = N_VOCAB, .n_ctx = 64, .wtype = KS_QUANT_Q8_0, .seed = seed,
    };
    ks_model *m = NULL;

    snprintf(paths[i], sizeof paths[i], "%s/m%d.gguf", dir, i);
    if (ks_synth_write(&p, paths[i]) != KS_OK || ks_model_load(rt, paths[i], NULL, &m) != KS_OK) {
        fprintf(stderr, "test_spec_sample: %s\n", ks_last_error());
        abort();
    }
    return m;
}

static void
setup(void)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 1, .no_governor = true };
    const char *brk = getenv("KS_SPEC_TEST_BREAK");

    if (!mkdtemp(dir) || ks_runtime_create(&rp, &rt) != KS_OK)
        abort();
    target = write_load(0, 2, 99);
    other = write_load(1, 2, 7);
    half = write_load(2, 1, 99);
    ks_spec_test_break = brk ? atoi(brk) : 0;
}

static void
teardown(void)
{
    ks_model_destroy(target);
    ks_model_destroy(other);
    ks_model_destroy(half);
    ks_runtime_destroy(rt);
    for (int i = 0; i < 3; i++)
        unlink(paths[i]);
    rmdir(dir);
}

static const int32_t prompt[] = { 3, 17, 250, 99, 4, 128, 17, 250 };
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

/* The sampler settings: each stage of the chain, and all at once. */
static const ks_sampling settings[] = {
    { .temp = 0.25f },
    { .temp = 0.3f, .top_k = 6 },
    { .temp = 0.4f, .top_p = 0.2f },
    { .temp = 0.4f, .min_p = 0.5f },
    { .temp = 0.25f, .repeat_penalty = 1.5f, .repeat_last_n = 8 },
    { .temp = 0.3f, .top_k = 40, .top_p = 0.95f, .min_p = 0.02f, .repeat_penalty = 1.2f },
};
enum { N_SETTINGS = sizeof settings / sizeof settings[0] };

/* counts[pos][token] of the tokens generated at positions 1..N_GEN - 1
 * (position 0 comes from the prompt's logits, never from a draft) */
typedef struct tally {
    uint32_t counts[N_GEN - 1][N_VOCAB];
    uint64_t drafted, accepted;
} tally;

static void
draw_many(const ks_sampling *smp, ks_model *draft, ks_spec_mode mode, uint64_t seed0, tally *t)
{
    ks_session_params sp = { .n_ctx = 64 };
    ks_session *s = NULL, *ds = NULL;

    memset(t, 0, sizeof(*t));
    ck_assert_int_eq(ks_session_create(target, &sp, &s), KS_OK);
    if (draft)
        ck_assert_int_eq(ks_session_create(draft, &sp, &ds), KS_OK);
    for (uint32_t i = 0; i < N_DRAWS; i++) {
        int32_t out[N_GEN];
        ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = N_GEN,
                                  .ignore_eog = true, .out_tokens = out, .out_cap = N_GEN,
                                  .spec = mode, .draft = ds, .draft_min = K, .draft_max = K,
                                  .draft_p_min = -1.0f };
        ks_stats st;

        gp.sampling = *smp;
        gp.sampling.seed = seed0 + i;
        ck_assert_int_eq(ks_session_truncate(s, 0), KS_OK);
        ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "%s", ks_last_error());
        ck_assert_uint_eq(gp.n_out, N_GEN);
        for (int j = 1; j < N_GEN; j++)
            t->counts[j - 1][out[j]]++;
        ks_session_stats(s, &st);
        t->drafted += st.n_drafted;
        t->accepted += st.n_accepted;
    }
    ks_session_destroy(ds);
    ks_session_destroy(s);
}

/* The two-sample chi-square statistic of equal-sized samples a and b
 * over the tokens, cells with fewer than 10 draws in all pooled into
 * one; *df its degrees of freedom. */
static double
chi2_two(const uint32_t *a, const uint32_t *b, int *df)
{
    double x = 0.0;
    uint32_t ra = 0, rb = 0;
    int cells = 0;

    for (int i = 0; i < N_VOCAB; i++) {
        double n = (double)a[i] + b[i], d = (double)a[i] - b[i];
        if (n < 10) {
            ra += a[i];
            rb += b[i];
            continue;
        }
        x += d * d / n;
        cells++;
    }
    if (ra + rb > 0) {
        double d = (double)ra - rb;
        x += d * d / (ra + rb);
        cells++;
    }
    *df = cells - 1;
    return x;
}

/* The chi-square quantile at 1 - 1e-4 (Wilson-Hilferty): a right rule
 * fails about once in 10,000 seeds per comparison, and the seeds are
 * fixed. */
static double
chi2_limit(int df)
{
    double z = 3.719, h = 2.0 / (9.0 * df), c = 1.0 - h + z * sqrt(h);
    return df * c * c * c;
}

/* The worst ratio of statistic to limit over the positions. */
static double
compare(const tally *spec, const tally *plain, const char *what)
{
    double worst = 0.0;

    for (int j = 0; j < N_GEN - 1; j++) {
        int df;
        double x = chi2_two(spec->counts[j], plain->counts[j], &df), lim = chi2_limit(df);
        fprintf(stderr, "%s pos %d: chi2 %.1f df %d limit %.1f\n", what, j + 1, x, df, lim);
        worst = x / lim > worst ? x / lim : worst;
    }
    return worst;
}

START_TEST(sampled_draft_follows_target)
{
    static tally spec, plain;
    char what[64];
    double worst;

    draw_many(&settings[_i], NULL, KS_SPEC_OFF, 1000000, &plain);
    draw_many(&settings[_i], half, KS_SPEC_DRAFT, 1, &spec);
    snprintf(what, sizeof what, "setting %d draft half", _i);
    worst = compare(&spec, &plain, what);
    fprintf(stderr, "%s: acceptance %.3f\n", what, (double)spec.accepted / spec.drafted);
    /* both paths ran: drafts kept and drafts rejected */
    ck_assert_uint_gt(spec.accepted, spec.drafted / 20);
    ck_assert_uint_lt(spec.accepted, spec.drafted - spec.drafted / 20);
    ck_assert_msg(worst < 1.0, "%s: sampled speculation does not follow the target's "
                  "distribution (chi-square %.2f x the limit)", what, worst);
}
END_TEST

/* Lookup drafts without chance (q is 1 at the drafted token). */
START_TEST(sampled_lookup_follows_target)
{
    static tally spec, plain;
    char what[64];
    double worst;

    draw_many(&settings[_i], NULL, KS_SPEC_OFF, 2000000, &plain);
    draw_many(&settings[_i], NULL, KS_SPEC_LOOKUP, 3000000, &spec);
    snprintf(what, sizeof what, "setting %d lookup", _i);
    worst = compare(&spec, &plain, what);
    ck_assert_uint_gt(spec.drafted, 0);
    ck_assert_msg(worst < 1.0, "%s: sampled lookup does not follow the target's "
                  "distribution (chi-square %.2f x the limit)", what, worst);
}
END_TEST

/* The test can fail: each broken rule goes far past the limit. */
START_TEST(broken_rule_is_caught)
{
    static tally spec, plain;
    int keep = ks_spec_test_break;
    double worst;

    draw_many(&settings[0], NULL, KS_SPEC_OFF, 1000000, &plain);
    ks_spec_test_break = _i + 1;
    draw_many(&settings[0], half, KS_SPEC_DRAFT, 1, &spec);
    ks_spec_test_break = keep;
    worst = compare(&spec, &plain, _i == 0 ? "broken: keep every draft"
                                           : "broken: reject draws from p");
    ck_assert_msg(worst > 1.0, "broken rule %d passed the test (%.2f x the limit)", _i + 1,
                  worst);
}
END_TEST

/* Sampled speculation into the end of the context stops there as plain
 * decoding does (KS_ERR_CONTEXT_FULL, the context full of held tokens). */
START_TEST(sampled_across_end_of_context)
{
    enum { CTX = 40 };
    ks_session_params sp = { .n_ctx = CTX };
    ks_session *s = NULL, *ds = NULL;
    int32_t out[64];
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .ignore_eog = true,
                              .out_tokens = out, .out_cap = 64, .spec = KS_SPEC_DRAFT,
                              .draft_min = 8, .draft_max = 8, .draft_p_min = -1.0f };

    ck_assert_int_eq(ks_session_create(target, &sp, &s), KS_OK);
    ck_assert_int_eq(ks_session_create(half, &sp, &ds), KS_OK);
    gp.draft = ds;
    gp.sampling = settings[5];
    gp.sampling.seed = 42;
    ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_CONTEXT_FULL);
    ck_assert_int_eq(gp.stop, KS_STOP_CONTEXT);
    ck_assert_uint_eq(gp.n_out, CTX - N_PROMPT);
    ck_assert_uint_eq(ks_session_n_past(s), CTX);
    ks_session_destroy(ds);
    ks_session_destroy(s);
}
END_TEST

typedef struct cancel_at {
    volatile int flag;
    size_t       n, at;
} cancel_at;

static bool
cancel_cb(void *user, int32_t tok, const char *piece, size_t len)
{
    cancel_at *c = user;
    (void)tok, (void)piece, (void)len;
    if (++c->n == c->at)
        c->flag = 1;
    return true;
}

/* A cancel after the i-th token of sampled speculation, for every i:
 * exactly the emitted tokens are held, and the KV cache is theirs (a
 * greedy continuation equals that of a fresh session given them). */
START_TEST(sampled_cancel_mid_verification)
{
    enum { N = 16, M = 8 };
    ks_session_params sp = { .n_ctx = 64 };

    for (size_t at = 1; at < N; at++) {
        ks_session *s = NULL, *ds = NULL, *f = NULL;
        int32_t got[N + M], held[N_PROMPT + N], want[M];
        cancel_at c = { 0, 0, at };
        ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = N,
                                  .ignore_eog = true, .out_tokens = got, .out_cap = N,
                                  .on_token = cancel_cb, .user = &c, .cancel = &c.flag,
                                  .spec = KS_SPEC_DRAFT, .draft_min = 3, .draft_max = 3,
                                  .draft_p_min = -1.0f };
        ks_generate_params g2 = { .n_predict = M, .ignore_eog = true, .out_cap = M };

        ck_assert_int_eq(ks_session_create(target, &sp, &s), KS_OK);
        ck_assert_int_eq(ks_session_create(half, &sp, &ds), KS_OK);
        ck_assert_int_eq(ks_session_create(target, &sp, &f), KS_OK);
        gp.draft = ds;
        gp.sampling = settings[0];
        gp.sampling.seed = 7 + at;
        ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_CANCELLED);
        ck_assert_uint_eq(gp.n_out, at);
        ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT + at);
        g2.out_tokens = got + at;
        ck_assert_int_eq(ks_session_generate(s, &g2), KS_OK);
        memcpy(held, prompt, sizeof prompt);
        memcpy(held + N_PROMPT, got, at * sizeof(int32_t));
        g2.prompt = held;
        g2.n_prompt = N_PROMPT + at;
        g2.out_tokens = want;
        ck_assert_int_eq(ks_session_generate(f, &g2), KS_OK);
        ck_assert_msg(memcmp(want, got + at, M * sizeof(int32_t)) == 0,
                      "cancelled at %zu: the held tokens' KV cache is not theirs", at);
        ks_session_destroy(f);
        ks_session_destroy(ds);
        ks_session_destroy(s);
    }
}
END_TEST

/* The governor's cap (spec_sample.h): no margin without a limit, one
 * under each limit, no drafting near the critical trip. */
START_TEST(governor_caps_drafting)
{
    ck_assert(ks_spec_min_gain(-1) == 1.0);
    ck_assert(ks_spec_min_gain(KS_GOV_STATE_COOL) == 1.0);
    ck_assert(ks_spec_min_gain(KS_GOV_STATE_TARGET) == 1.0);
    ck_assert(ks_spec_min_gain(KS_GOV_STATE_POWER) > KS_SPEC_EXPLORE_GAIN);
    ck_assert(ks_spec_min_gain(KS_GOV_STATE_THERMAL) > KS_SPEC_EXPLORE_GAIN);
    ck_assert(ks_spec_min_gain(KS_GOV_STATE_BATTERY) > KS_SPEC_EXPLORE_GAIN);
    ck_assert(ks_spec_min_gain(KS_GOV_STATE_BLIND) > KS_SPEC_EXPLORE_GAIN);
    ck_assert(isinf(ks_spec_min_gain(KS_GOV_STATE_CRITICAL)));
}
END_TEST

static Suite *
spec_sample_suite(void)
{
    Suite *s = suite_create("spec_sample");
    TCase *tc = tcase_create("distribution");

    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, sampled_draft_follows_target, 0, N_SETTINGS);
    tcase_add_loop_test(tc, sampled_lookup_follows_target, 0, 2);
    tcase_add_loop_test(tc, broken_rule_is_caught, 0, 2);
    tcase_add_test(tc, governor_caps_drafting);
    tcase_add_test(tc, sampled_across_end_of_context);
    tcase_add_test(tc, sampled_cancel_mid_verification);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(spec_sample_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
