/* Expert placement under a memory budget (runtime/experts.c):
 *   tokens    a budget that leaves most experts cold gives the logits of
 *             the unbudgeted model bitwise, through a batched prompt
 *             (tokens grouped by expert) and greedy decoding, on a
 *             synthetic skewed qwen3moe;
 *   planner   after re-planning, the resident experts are the hottest
 *             ones that fit the budget;
 *   rate      re-plans move at most KS_XSTORE_MOVES_PER_MIN experts a
 *             minute (a virtual clock);
 *   budget    bad budgets get clear errors; a dense model ignores one. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/model.h"
#include "kestrel/session.h"
#include "runtime/experts.h"
#include "runtime/model_priv.h"
#include "runtime/synth.h"

static char dir[] = "/tmp/kestrel-test-experts-XXXXXX";
static char moe_path[300], dense_path[300];

/* 4 layers of 16 experts, 2 per token, skewed so a few are hot */
static const ks_synth_params moe_params = {
    .arch = "qwen3moe", .n_embd = 256, .n_layers = 4, .n_head = 4, .n_head_kv = 2,
    .n_ff = 256, .n_vocab = 400, .wtype = KS_QUANT_Q4_K, .seed = 11,
    .n_expert = 16, .n_expert_used = 2, .n_ff_exp = 256, .router_skew = 1.0f,
};

static ks_runtime *
cpu_runtime(void)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 2,
                             .no_governor = true };
    ks_runtime *rt = NULL;

    ck_assert_int_eq(ks_runtime_create(&rp, &rt), KS_OK);
    return rt;
}

static ks_model *
load(ks_runtime *rt, const char *path, uint64_t budget)
{
    ks_model_params mp = { .mem_budget_bytes = budget };
    ks_model *m = NULL;

    ck_assert_msg(ks_model_load(rt, path, &mp, &m) == KS_OK, "%s", ks_last_error());
    return m;
}

/* The bytes outside the experts and one expert's, from a store that
 * holds everything. */
static void
sizes(ks_runtime *rt, uint64_t *fixed, uint64_t *expert)
{
    ks_model *m = load(rt, moe_path, UINT64_MAX / 2);
    ks_expert_stats x;
    ks_model_desc d;

    ks_model_expert_stats(m, &x);
    ks_model_describe(m, &d);
    ck_assert(x.placed);
    ck_assert_uint_eq(x.n_experts, 4 * 16);
    ck_assert_uint_eq(x.n_resident, 4 * 16);
    *expert = x.expert_bytes;
    *fixed = d.file_bytes - (uint64_t)x.n_experts * x.expert_bytes;
    ks_model_destroy(m);
}

/* ---- tokens ---- */

/* Logits of a 16-token prompt (one batch) and of 24 greedy steps. */
static float *
run(ks_model *m, int *n_out)
{
    enum { N_PROMPT = 16, N_GEN = 24, V = 400 };
    ks_session_params sp = { .n_ctx = 64, .n_batch = 16 };
    ks_session *s = NULL;
    float *lg = calloc((size_t)(N_GEN + 1) * V, sizeof(float));
    int32_t prompt[N_PROMPT];

    ck_assert_ptr_nonnull(lg);
    for (int i = 0; i < N_PROMPT; i++)
        prompt[i] = 3 + (i * 37) % 390;
    ck_assert_int_eq(ks_session_create(m, &sp, &s), KS_OK);
    ck_assert_int_eq(ks_session_eval(s, prompt, N_PROMPT, lg), KS_OK);
    for (int t = 0; t < N_GEN; t++) {
        const float *l = lg + (size_t)t * V;
        int32_t best = 0;
        for (int32_t v = 1; v < V; v++)
            if (l[v] > l[best])
                best = v;
        ck_assert_int_eq(ks_session_eval(s, &best, 1, lg + (size_t)(t + 1) * V), KS_OK);
    }
    ks_session_destroy(s);
    *n_out = (N_GEN + 1) * V;
    return lg;
}

START_TEST(cold_experts_leave_logits_unchanged)
{
    ks_runtime *rt = cpu_runtime();
    uint64_t fixed, expert;
    ks_model *a, *b;
    ks_expert_stats x;
    float *la, *lb;
    int n, nb;

    sizes(rt, &fixed, &expert);
    a = load(rt, moe_path, 0);
    /* 5 of 64 experts resident: most uses go to the file */
    b = load(rt, moe_path, fixed + 5 * expert + expert / 2);
    la = run(a, &n);
    lb = run(b, &nb);
    ck_assert_int_eq(n, nb);
    ck_assert_msg(memcmp(la, lb, (size_t)n * sizeof(float)) == 0,
                  "a budget changed the logits");
    ks_model_expert_stats(b, &x);
    ck_assert(x.placed);
    ck_assert_uint_eq(x.n_slots, 5);
    ck_assert_uint_eq(x.n_resident, 5);
    ck_assert_uint_eq(x.n_tokens, 16 + 24);
    /* 2 choices a token a layer; the last layer runs the prompt's last
     * token only (the others' outputs are never read) */
    ck_assert_uint_eq(x.n_hits + x.n_misses, (uint64_t)3 * 2 * (16 + 24) + 2 * (1 + 24));
    ck_assert_msg(x.n_misses > 0 && x.n_hits > 0, "hits %llu misses %llu",
                  (unsigned long long)x.n_hits, (unsigned long long)x.n_misses);
    ck_assert_uint_ge(x.cold_bytes, x.expert_bytes * 5);
    /* the read-ahead guessed for layers 1..3 of every batch */
    ck_assert_uint_gt(x.n_used_after_prediction, 0);
    ck_assert_uint_le(x.n_predicted_used, x.n_used_after_prediction);
    ks_model_expert_stats(a, &x);
    ck_assert(!x.placed);
    free(la);
    free(lb);
    ks_model_destroy(a);
    ks_model_destroy(b);
    ks_runtime_destroy(rt);
}
END_TEST

/* ---- planner and rate ---- */

static uint64_t now_ns;

static uint64_t
virtual_clock(void *ctx)
{
    (void)ctx;
    return now_ns;
}

/* Layer |il| uses expert |e| |uses| times (one token). */
static void
use(ks_xstore *xs, uint32_t il, uint32_t e, uint32_t uses)
{
    ks_xptr p;

    ks_xstore_begin(xs, il, &e, &uses, 1, 1, &p);
    ck_assert_ptr_nonnull(p.gate);
    ks_xstore_end(xs, il, &e, 1);
}

START_TEST(planner_keeps_hottest_resident)
{
    ks_runtime *rt = cpu_runtime();
    uint64_t fixed, expert;
    ks_model *m;
    ks_xstore *xs;
    uint32_t ids[16], n, moves = 0;

    sizes(rt, &fixed, &expert);
    m = load(rt, moe_path, fixed + 4 * expert);
    xs = m->xstore;
    now_ns = 0;
    ks_xstore_set_clock(xs, virtual_clock, NULL);
    /* first uses fill the 4 slots: layer 0's experts 0..3 */
    for (uint32_t e = 0; e < 8; e++)
        use(xs, 0, e, 1);
    ck_assert_uint_eq(ks_xstore_resident(xs, 0, ids, 16), 4);
    for (uint32_t e = 0; e < 4; e++)
        ck_assert_uint_eq(ids[e], e);
    /* then the heat moves: 3 experts of layer 0, one of layer 2 */
    for (int r = 0; r < 40; r++) {
        use(xs, 0, 5, 2);
        use(xs, 0, 6, 1);
        use(xs, 0, 1, 1);
        use(xs, 2, 9, 1);
        use(xs, 2, 3, r % 4 == 0);   /* lukewarm: stays cold */
    }
    for (int i = 0; i < 10; i++) {
        now_ns += 60000000000ull;
        moves += ks_xstore_replan(xs, now_ns);
    }
    n = ks_xstore_resident(xs, 0, ids, 16);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(ids[0], 1);
    ck_assert_uint_eq(ids[1], 5);
    ck_assert_uint_eq(ids[2], 6);
    ck_assert_uint_eq(ks_xstore_resident(xs, 2, ids, 16), 1);
    ck_assert_uint_eq(ids[0], 9);
    ck_assert_uint_eq(ks_xstore_resident(xs, 1, NULL, 0), 0);
    /* 0, 2 and 3 left for 5, 6 and layer 2's 9; nothing else moved */
    ck_assert_uint_eq(moves, 3);
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
}
END_TEST

START_TEST(replans_are_rate_limited)
{
    ks_runtime *rt = cpu_runtime();
    uint64_t fixed, expert;
    ks_model *m;
    ks_xstore *xs;
    ks_expert_stats x;

    sizes(rt, &fixed, &expert);
    m = load(rt, moe_path, fixed + 8 * expert);
    xs = m->xstore;
    now_ns = 0;
    ks_xstore_set_clock(xs, virtual_clock, NULL);
    for (uint32_t e = 0; e < 8; e++)
        use(xs, 1, e, 1);
    /* 16 experts of layer 3, all far hotter than the residents */
    for (uint32_t e = 0; e < 16; e++)
        use(xs, 3, e, 100);
    ck_assert_uint_eq(ks_xstore_replan(xs, now_ns), KS_XSTORE_MOVES_PER_MIN);
    now_ns += 1000000000ull;
    ck_assert_uint_eq(ks_xstore_replan(xs, now_ns), 0);
    /* a quarter of a minute earns one move */
    now_ns += 15000000000ull;
    ck_assert_uint_eq(ks_xstore_replan(xs, now_ns), 1);
    ck_assert_uint_eq(ks_xstore_replan(xs, now_ns), 0);
    /* a quiet hour earns no more than a minute's worth */
    now_ns += 3600000000000ull;
    ck_assert_uint_eq(ks_xstore_replan(xs, now_ns), 3);   /* the rest of the 8 */
    ks_model_expert_stats(m, &x);
    ck_assert_uint_eq(x.n_moves, 8);
    ck_assert_uint_eq(ks_xstore_resident(xs, 3, NULL, 0), 8);
    ck_assert_uint_eq(ks_xstore_resident(xs, 1, NULL, 0), 0);
    /* the uses through begin re-plan too, under the same limit */
    for (uint32_t e = 0; e < 8; e++)
        use(xs, 0, e, 1000);
    now_ns += 60000000000ull;
    use(xs, 0, 0, 1);
    ks_model_expert_stats(m, &x);
    ck_assert_uint_eq(x.n_moves, 8 + KS_XSTORE_MOVES_PER_MIN);
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
}
END_TEST

/* ---- bad budgets ---- */

START_TEST(budget_below_fixed_weights_is_refused)
{
    ks_runtime *rt = cpu_runtime();
    uint64_t fixed, expert;
    ks_model_params mp = { 0 };
    ks_model *m = NULL;

    sizes(rt, &fixed, &expert);
    mp.mem_budget_bytes = fixed - 1;
    ck_assert_int_eq(ks_model_load(rt, moe_path, &mp, &m), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(ks_last_error(), "outside the experts") &&
                  strstr(ks_last_error(), "mem_budget"), "%s", ks_last_error());
    mp.mem_budget_bytes = 1;
    ck_assert_int_eq(ks_model_load(rt, moe_path, &mp, &m), KS_ERR_INVALID_ARG);
    /* exactly the fixed weights: every expert is cold, and it runs */
    m = load(rt, moe_path, fixed);
    {
        int n;
        ks_expert_stats x;
        free(run(m, &n));
        ks_model_expert_stats(m, &x);
        ck_assert_uint_eq(x.n_slots, 0);
        ck_assert_uint_eq(x.n_hits, 0);
        ck_assert_uint_gt(x.n_misses, 0);
    }
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
}
END_TEST

START_TEST(dense_model_ignores_budget)
{
    ks_runtime *rt = cpu_runtime();
    ks_model *m = load(rt, dense_path, 1);
    ks_expert_stats x;

    ks_model_expert_stats(m, &x);
    ck_assert(!x.placed);
    ck_assert_uint_eq(ks_model_expert_resident(m, 0, NULL, 0), 0);
    ks_model_destroy(m);
    ks_model_expert_stats(NULL, &x);
    ck_assert(!x.placed);
    ks_runtime_destroy(rt);
}
END_TEST

static Suite *
experts_suite(void)
{
    Suite *s = suite_create("experts");
    TCase *tc;

    tc = tcase_create("tokens");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, cold_experts_leave_logits_unchanged);
    suite_add_tcase(s, tc);

    tc = tcase_create("planner");
    tcase_add_test(tc, planner_keeps_hottest_resident);
    tcase_add_test(tc, replans_are_rate_limited);
    suite_add_tcase(s, tc);

    tc = tcase_create("budget");
    tcase_add_test(tc, budget_below_fixed_weights_is_refused);
    tcase_add_test(tc, dense_model_ignores_budget);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    ks_synth_params dense = {
        .arch = "qwen3", .n_embd = 64, .n_layers = 1, .n_head = 2, .n_ff = 128,
        .n_vocab = 320, .wtype = KS_QUANT_F32, .seed = 2,
    };
    SRunner *sr;
    int failed;

    if (!mkdtemp(dir))
        return 1;
    snprintf(moe_path, sizeof moe_path, "%s/skewed-qwen3moe.gguf", dir);
    snprintf(dense_path, sizeof dense_path, "%s/dense.gguf", dir);
    if (ks_synth_write(&moe_params, moe_path) != KS_OK ||
        ks_synth_write(&dense, dense_path) != KS_OK) {
        fprintf(stderr, "test_experts: cannot write the synthetic models: %s\n",
                ks_last_error());
        return 1;
    }
    sr = srunner_create(experts_suite());
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unlink(moe_path);
    unlink(dense_path);
    rmdir(dir);
    return failed ? 1 : 0;
}
