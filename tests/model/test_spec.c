/* Verification and speculative decoding (session.h: ks_session_eval_all,
 * ks_generate_params.spec) on synthetic pairs that share a vocabulary:
 * the logits of every token of a run, the KV cache rolled back at every
 * position a draft can be rejected at, and greedy speculation giving the
 * tokens plain greedy decoding gives, with a draft model and with prompt
 * lookup, across the end of the context and when cancelled.
 *
 * The target and its drafts: the target has 2 layers; "half" is written
 * from the same seed with 1 layer (the same embeddings and first layer,
 * so it agrees with the target often, not always); "other" has another
 * seed (it rarely agrees); the target itself is a draft that always
 * agrees. Verification runs every token with the one-token kernels, so
 * the comparisons are bit for bit. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <math.h>

#include "kestrel/kestrel.h"
#include "runtime/session_priv.h"
#include "runtime/synth.h"

enum { N_CTX = 128, N_VOCAB = 300, N_BATCH = 16 };

static char dir[] = "/tmp/kestrel-test-spec-XXXXXX";
static char paths[4][256];
static ks_runtime *rt;
static ks_model *target, *half, *other, *k4;

static ks_model *
write_load(int i, uint32_t n_layers, uint64_t seed)
{
    ks_synth_params p = {
        .arch = "qwen2", .n_embd = 32, .n_layers = n_layers, .n_head = 4, .n_head_kv = 2,
        .n_ff = 48, .n_vocab = N_VOCAB, .n_ctx = 256, .wtype = KS_QUANT_Q8_0, .seed = seed,
    };
    ks_model *m = NULL;

    if (i == 3) {  /* Q4_K rows of 256: batches take other kernels than one token */
        p.n_embd = 256;
        p.n_ff = 512;
        p.wtype = KS_QUANT_Q4_K;
    }
    snprintf(paths[i], sizeof paths[i], "%s/m%d.gguf", dir, i);
    if (ks_synth_write(&p, paths[i]) != KS_OK || ks_model_load(rt, paths[i], NULL, &m) != KS_OK) {
        fprintf(stderr, "test_spec: %s\n", ks_last_error());
        abort();
    }
    return m;
}

static void
setup(void)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 1, .no_governor = true };

    if (!mkdtemp(dir) || ks_runtime_create(&rp, &rt) != KS_OK)
        abort();
    target = write_load(0, 2, 99);
    half = write_load(1, 1, 99);
    other = write_load(2, 2, 7);
    k4 = write_load(3, 2, 11);
}

static void
teardown(void)
{
    ks_model_destroy(target);
    ks_model_destroy(half);
    ks_model_destroy(other);
    ks_model_destroy(k4);
    ks_runtime_destroy(rt);
    for (int i = 0; i < 4; i++)
        unlink(paths[i]);
    rmdir(dir);
}

static ks_session *
new_session(ks_model *m, uint32_t n_ctx)
{
    ks_session_params sp = { .n_ctx = n_ctx, .n_batch = N_BATCH };
    ks_session *s = NULL;

    ck_assert_msg(ks_session_create(m, &sp, &s) == KS_OK, "%s", ks_last_error());
    return s;
}

static const int32_t prompt[] = { 3, 17, 250, 99, 4, 128, 17, 250 };
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

/* The draft's confidence cut-off for run_gen: the synthetic models' top
 * probabilities are low, so by default they draft nothing. */
static float p_min = -1.0f;
/* The draft length for run_gen: 0 adaptive, else fixed. */
static uint32_t k_fixed;

/* Greedy generation; returns the status, *n_out and *stop set. */
static ks_status
run_gen(ks_session *s, ks_spec_mode spec, ks_session *draft, const int32_t *pr, size_t n_pr,
        uint32_t n, float penalty, int32_t *out, size_t cap, size_t *n_out, ks_stop *stop)
{
    ks_generate_params gp = { .prompt = pr, .n_prompt = n_pr, .n_predict = n,
                              .ignore_eog = true, .out_tokens = out, .out_cap = cap,
                              .spec = spec, .draft = draft, .draft_p_min = p_min,
                              .draft_min = k_fixed, .draft_max = k_fixed };
    ks_status st;

    gp.sampling.repeat_penalty = penalty;
    st = ks_session_generate(s, &gp);
    *n_out = gp.n_out;
    *stop = gp.stop;
    return st;
}

/* Plain greedy decoding of the target: n tokens after |pr|. */
static void
plain(const int32_t *pr, size_t n_pr, uint32_t n, float penalty, uint32_t n_ctx,
      int32_t *out, size_t *n_out, ks_stop *stop, ks_status *st)
{
    ks_session *s = new_session(target, n_ctx);

    *st = run_gen(s, KS_SPEC_OFF, NULL, pr, n_pr, n, penalty, out, 256, n_out, stop);
    ks_session_destroy(s);
}

/* eval_all gives every token's logits, each bitwise what decoding the
 * tokens one at a time gives (the verification contract: greedy
 * speculation then emits plain greedy's tokens); the last also to
 * s->logits, so a generate after it samples from it. */
START_TEST(eval_all_gives_every_row)
{
    ks_model *m = _i == 0 ? target : k4;
    ks_session *s = new_session(m, N_CTX), *f = new_session(m, N_CTX);
    float *rows = malloc(sizeof(float) * N_VOCAB * N_PROMPT);
    float *one = malloc(sizeof(float) * N_VOCAB);

    ck_assert_int_eq(ks_session_eval(s, prompt, 1, NULL), KS_OK);
    ck_assert_int_eq(ks_session_eval_all(s, prompt + 1, N_PROMPT - 1, rows), KS_OK);
    ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT);
    ck_assert_int_eq(ks_session_eval(f, prompt, 1, NULL), KS_OK);
    for (size_t i = 1; i < N_PROMPT; i++) {
        ck_assert_int_eq(ks_session_eval(f, prompt + i, 1, one), KS_OK);
        ck_assert_msg(memcmp(rows + (i - 1) * N_VOCAB, one, sizeof(float) * N_VOCAB) == 0,
                      "row %zu differs from decoding its token alone", i);
    }
    ck_assert_mem_eq(s->logits, one, sizeof(float) * N_VOCAB);
    ck_assert_int_eq(ks_session_eval_all(s, prompt, 0, rows), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_session_eval_all(s, prompt, 2, NULL), KS_ERR_INVALID_ARG);
    free(rows);
    free(one);
    ks_session_destroy(s);
    ks_session_destroy(f);
}
END_TEST

/* Rejection at every position j of a verified run of k drafts: after
 * truncate(P + j) the session generates what a fresh session fed the
 * prompt and the first j drafts generates. */
START_TEST(rollback_at_every_position)
{
    const int32_t drafts[] = { 40, 41, 42, 43, 44, 45 };
    enum { K = 6, N = 6 };
    float *rows = malloc(sizeof(float) * N_VOCAB * K);

    for (uint32_t j = 0; j <= K; j++) {
        ks_session *s = new_session(target, N_CTX), *f = new_session(target, N_CTX);
        int32_t held[N_PROMPT + K], a[N], b[N];
        size_t na, nb;
        ks_stop sa, sb;

        ck_assert_int_eq(ks_session_eval(s, prompt, N_PROMPT, NULL), KS_OK);
        ck_assert_int_eq(ks_session_eval_all(s, drafts, K, rows), KS_OK);
        ck_assert_int_eq(ks_session_truncate(s, N_PROMPT + j), KS_OK);
        ck_assert_int_eq(run_gen(s, KS_SPEC_OFF, NULL, NULL, 0, N, 0, a, N, &na, &sa), KS_OK);
        memcpy(held, prompt, sizeof prompt);
        memcpy(held + N_PROMPT, drafts, j * sizeof(int32_t));
        ck_assert_int_eq(run_gen(f, KS_SPEC_OFF, NULL, held, N_PROMPT + j, N, 0, b, N, &nb,
                                 &sb), KS_OK);
        ck_assert_uint_eq(na, N);
        ck_assert_msg(memcmp(a, b, sizeof a) == 0, "rejected at %u: tokens differ", j);
        ks_session_destroy(s);
        ks_session_destroy(f);
    }
    free(rows);
}
END_TEST

/* Greedy speculation with each draft, with and without the repeat
 * penalty: the tokens of plain greedy decoding, the session holding
 * exactly them, and a plain continuation after it as after plain. */
START_TEST(draft_greedy_identity)
{
    ks_model *drafts[] = { target, half, other };
    const char *names[] = { "self", "half", "other" };
    const float penalties[] = { 0.0f, 1.3f };
    const uint32_t ks[] = { 0, 1, 4, 8 };
    enum { N = 48 };

    for (int d = 0; d < 3 * 4; d++) {
        for (int pi = 0; pi < 2; pi++) {
            int32_t want[N + 8], got[N + 8];
            size_t nw, ng;
            ks_stop sw, sg;
            ks_status stw;
            ks_session *s = new_session(target, N_CTX), *ds = new_session(drafts[d / 4], N_CTX);
            ks_stats st;

            k_fixed = ks[d % 4];
            plain(prompt, N_PROMPT, N + 8, penalties[pi], N_CTX, want, &nw, &sw, &stw);
            ck_assert_int_eq(stw, KS_OK);
            ck_assert_int_eq(run_gen(s, KS_SPEC_DRAFT, ds, prompt, N_PROMPT, N, penalties[pi],
                                     got, N, &ng, &sg), KS_OK);
            ck_assert_int_eq(sg, KS_STOP_LENGTH);
            ck_assert_uint_eq(ng, N);
            ck_assert_msg(memcmp(want, got, N * sizeof(int32_t)) == 0,
                          "draft %s, k %u, penalty %g: tokens differ from plain greedy",
                          names[d / 4], k_fixed, (double)penalties[pi]);
            ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT + N);
            ks_session_stats(s, &st);
            fprintf(stderr, "draft %s k %u penalty %.1f: drafted %u accepted %u verify %u\n",
                    names[d / 4], k_fixed, (double)penalties[pi], st.n_drafted,
                    st.n_accepted, st.n_verify);
            ck_assert_uint_gt(st.n_verify, 0);
            ck_assert_uint_le(st.n_accepted, st.n_drafted);
            if (d == 2) {  /* self, k 4 */
                ck_assert_uint_gt(st.n_drafted, 0);
                /* all but the drafts past n_predict in the last round */
                ck_assert_uint_ge(st.n_accepted + 4, st.n_drafted);
                ck_assert_uint_lt(st.n_verify, N / 2);
            }
            /* then plain decoding goes on as after plain decoding */
            ck_assert_int_eq(run_gen(s, KS_SPEC_OFF, NULL, NULL, 0, 8, penalties[pi], got, 8,
                                     &ng, &sg), KS_OK);
            ck_assert_msg(memcmp(want + N, got, 8 * sizeof(int32_t)) == 0,
                          "draft %s: continuation differs", names[d / 4]);
            ks_session_destroy(s);
            ks_session_destroy(ds);
        }
    }
    k_fixed = 0;
}
END_TEST

/* The "other" draft is rejected somewhere in most rounds and "half" in
 * some: between them rejections land at several positions, and the
 * tokens still match (the identity test); here the counts show it. */
START_TEST(rejections_happen)
{
    ks_session *s = new_session(target, N_CTX), *ds = new_session(other, N_CTX);
    int32_t got[48];
    size_t ng;
    ks_stop sg;
    ks_stats st;
    ks_generate_params gp = { 0 };

    k_fixed = 4;
    ck_assert_int_eq(run_gen(s, KS_SPEC_DRAFT, ds, prompt, N_PROMPT, 48, 0, got, 48, &ng, &sg),
                     KS_OK);
    k_fixed = 0;
    ks_session_stats(s, &st);
    ck_assert_uint_lt(st.n_accepted, st.n_drafted);
    /* sampled speculation runs (test_spec_sample checks its law) */
    gp.n_predict = 4;
    gp.spec = KS_SPEC_DRAFT;
    gp.draft = ds;
    gp.sampling.temp = 0.8f;
    ck_assert_int_eq(ks_session_generate(s, &gp), KS_OK);
    gp.sampling.temp = 0;
    gp.draft = NULL;
    ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_INVALID_ARG);
    ks_session_destroy(s);
    ks_session_destroy(ds);
}
END_TEST

/* The confidence cut-off: a draft whose top probability is below
 * draft_p_min drafts nothing, and the tokens stay those of plain. */
START_TEST(confidence_cut_off)
{
    int32_t want[16], got[16];
    size_t nw, ng;
    ks_stop sw, sg;
    ks_status stw;
    ks_session *s = new_session(target, N_CTX), *ds = new_session(target, N_CTX);
    ks_stats st;

    plain(prompt, N_PROMPT, 16, 0, N_CTX, want, &nw, &sw, &stw);
    p_min = 0.999f;
    ck_assert_int_eq(run_gen(s, KS_SPEC_DRAFT, ds, prompt, N_PROMPT, 16, 0, got, 16, &ng, &sg),
                     KS_OK);
    p_min = -1.0f;
    ks_session_stats(s, &st);
    /* the draft model drafted nothing; prompt lookup may have */
    ck_assert_uint_eq(st.n_drafted, st.n_lookup);
    ck_assert_mem_eq(want, got, sizeof want);
    ks_session_destroy(s);
    ks_session_destroy(ds);
}
END_TEST

/* Speculating into the end of the context stops where plain decoding
 * stops, with the same tokens and KS_ERR_CONTEXT_FULL. */
START_TEST(drafting_across_end_of_context)
{
    enum { CTX = 40 };
    ks_model *drafts[] = { target, half };

    for (int d = 0; d < 2; d++) {
        int32_t want[64], got[64];
        size_t nw, ng;
        ks_stop sw, sg;
        ks_status stw, stg;
        ks_session *s = new_session(target, CTX), *ds = new_session(drafts[d], CTX);

        plain(prompt, N_PROMPT, 0, 0, CTX, want, &nw, &sw, &stw);
        ck_assert_int_eq(stw, KS_ERR_CONTEXT_FULL);
        k_fixed = 8;
        stg = run_gen(s, KS_SPEC_DRAFT, ds, prompt, N_PROMPT, 0, 0, got, 64, &ng, &sg);
        k_fixed = 0;
        ck_assert_int_eq(stg, KS_ERR_CONTEXT_FULL);
        ck_assert_int_eq(sg, KS_STOP_CONTEXT);
        ck_assert_uint_eq(ng, nw);
        ck_assert_uint_eq(ng, CTX - N_PROMPT);
        ck_assert_mem_eq(want, got, nw * sizeof(int32_t));
        ck_assert_uint_eq(ks_session_n_past(s), CTX);
        ks_session_destroy(s);
        ks_session_destroy(ds);
    }
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

/* A cancel raised after the i-th token, for every i, whether it is seen
 * before the next token, in the draft or before the verifying pass:
 * exactly the emitted tokens are held, none of the drafts, and plain
 * decoding then goes on as it would have. */
START_TEST(cancel_mid_verification)
{
    enum { N = 24 };
    int32_t want[N + 8], got[N + 8];
    size_t nw;
    ks_stop sw;
    ks_status stw;

    plain(prompt, N_PROMPT, N + 8, 0, N_CTX, want, &nw, &sw, &stw);
    for (int mode = 0; mode < 2; mode++) {
        for (size_t at = 1; at < N; at++) {
            ks_session *s = new_session(target, N_CTX);
            ks_session *ds = mode == 0 ? new_session(half, N_CTX) : NULL;
            cancel_at c = { 0, 0, at };
            ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = N,
                                      .ignore_eog = true, .out_tokens = got, .out_cap = N,
                                      .on_token = cancel_cb, .user = &c, .cancel = &c.flag,
                                      .spec = mode == 0 ? KS_SPEC_DRAFT : KS_SPEC_LOOKUP,
                                      .draft = ds, .draft_p_min = -1.0f,
                                      .draft_min = 3, .draft_max = 3 };
            size_t ng;
            ks_stop sg;

            ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_CANCELLED);
            ck_assert_int_eq(gp.stop, KS_STOP_CANCELLED);
            ck_assert_uint_eq(gp.n_out, at);
            ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT + at);
            ck_assert_int_eq(run_gen(s, KS_SPEC_OFF, NULL, NULL, 0, (uint32_t)(N + 8 - at), 0,
                                     got + at, N + 8 - at, &ng, &sg), KS_OK);
            ck_assert_msg(memcmp(want, got, (N + 8) * sizeof(int32_t)) == 0,
                          "mode %d cancelled at %zu: tokens differ", mode, at);
            ks_session_destroy(s);
            ks_session_destroy(ds);
        }
    }
}
END_TEST

/* Prompt lookup: greedy identity, on a prompt that repeats itself. */
START_TEST(lookup_greedy_identity)
{
    int32_t pr[40], want[72], got[72];
    size_t nw, ng;
    ks_stop sw, sg;
    ks_status stw;
    ks_session *s = new_session(target, N_CTX);
    ks_stats st;

    for (int i = 0; i < 40; i++)
        pr[i] = prompt[i % N_PROMPT] + i / 16;
    plain(pr, 40, 64, 0, N_CTX, want, &nw, &sw, &stw);
    ck_assert_int_eq(run_gen(s, KS_SPEC_LOOKUP, NULL, pr, 40, 64, 0, got, 64, &ng, &sg), KS_OK);
    ck_assert_uint_eq(ng, 64);
    ck_assert_mem_eq(want, got, 64 * sizeof(int32_t));
    ks_session_stats(s, &st);
    fprintf(stderr, "lookup: drafted %u accepted %u verify %u\n", st.n_drafted, st.n_accepted,
            st.n_verify);
    ck_assert_uint_gt(st.n_drafted, 0);
    ks_session_destroy(s);
}
END_TEST

/* A draft model with an adaptive length drafts by lookup first where the
 * text repeats; the tokens are still plain greedy's. */
START_TEST(draft_with_lookup_greedy_identity)
{
    int32_t pr[40], want[72], got[72];
    size_t nw, ng;
    ks_stop sw, sg;
    ks_status stw;
    ks_session *s = new_session(target, N_CTX), *ds = new_session(other, N_CTX);
    ks_stats st;

    for (int i = 0; i < 40; i++)
        pr[i] = prompt[i % N_PROMPT] + i / 16;
    plain(pr, 40, 64, 0, N_CTX, want, &nw, &sw, &stw);
    ck_assert_int_eq(run_gen(s, KS_SPEC_DRAFT, ds, pr, 40, 64, 0, got, 64, &ng, &sg), KS_OK);
    ck_assert_uint_eq(ng, 64);
    ck_assert_mem_eq(want, got, 64 * sizeof(int32_t));
    ks_session_stats(s, &st);
    fprintf(stderr, "draft+lookup: drafted %u (lookup %u) accepted %u verify %u\n",
            st.n_drafted, st.n_lookup, st.n_accepted, st.n_verify);
    ck_assert_uint_gt(st.n_lookup, 0);
    ck_assert_uint_le(st.n_lookup, st.n_drafted);
    ks_session_destroy(s);
    ks_session_destroy(ds);
}
END_TEST

static Suite *
spec_suite(void)
{
    Suite *s = suite_create("spec");
    TCase *tc = tcase_create("spec");

    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, eval_all_gives_every_row, 0, 2);
    tcase_add_test(tc, rollback_at_every_position);
    tcase_add_test(tc, draft_greedy_identity);
    tcase_add_test(tc, rejections_happen);
    tcase_add_test(tc, confidence_cut_off);
    tcase_add_test(tc, drafting_across_end_of_context);
    tcase_add_test(tc, cancel_mid_verification);
    tcase_add_test(tc, lookup_greedy_identity);
    tcase_add_test(tc, draft_with_lookup_greedy_identity);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(spec_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
