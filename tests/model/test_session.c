/* The session contract (include/kestrel/session.h): after any sequence of
 * generate, eval and truncate calls, a session holds exactly the tokens it
 * was given and emitted, and continues as a fresh session fed those
 * tokens would. Regression tests for the faults that broke it (the last
 * generated token missing from the KV cache, a token sampled twice, stale
 * logits after a truncate), then the property over random call sequences.
 *
 * Sessions run batches of one token, so every token goes through the same
 * kernels whatever the grouping of calls, and results compare bit for
 * bit; a synthetic model without an end-of-generation token in its
 * range keeps generation going. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcntl.h>
#include <math.h>

#include "kestrel/kestrel.h"
#include "runtime/gguf.h"
#include "runtime/session_priv.h"
#include "runtime/synth.h"

enum { N_CTX = 96, MAX_SEQ = 96 };

static char dir[] = "/tmp/kestrel-test-session-XXXXXX";
static char path[256];
static ks_runtime *rt;
static ks_model *model;

static void
setup(void)
{
    ks_synth_params p = {
        .arch = "qwen2", .n_embd = 32, .n_layers = 2, .n_head = 4, .n_head_kv = 2,
        .n_ff = 48, .n_vocab = 300, .n_ctx = 256, .wtype = KS_QUANT_Q8_0, .seed = 99,
    };
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 1, .no_governor = true };

    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    if (ks_synth_write(&p, path) != KS_OK || ks_runtime_create(&rp, &rt) != KS_OK ||
        ks_model_load(rt, path, NULL, &model) != KS_OK) {
        fprintf(stderr, "test_session: %s\n", ks_last_error());
        abort();
    }
}

static void
teardown(void)
{
    ks_model_destroy(model);
    ks_runtime_destroy(rt);
    unlink(path);
    rmdir(dir);
}

static ks_session *
new_session(void)
{
    ks_session_params sp = { .n_ctx = N_CTX, .n_batch = 1 };
    ks_session *s = NULL;

    ck_assert_msg(ks_session_create(model, &sp, &s) == KS_OK, "%s", ks_last_error());
    return s;
}

/* Greedy generation of n tokens after |prompt| into out; returns the count. */
static size_t
gen(ks_session *s, const int32_t *prompt, size_t n_prompt, uint32_t n, float penalty,
    int32_t *out)
{
    ks_generate_params gp = { .prompt = prompt, .n_prompt = n_prompt, .n_predict = n,
                              .ignore_eog = true, .out_tokens = out, .out_cap = n };

    gp.sampling.repeat_penalty = penalty;
    ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(gp.stop, KS_STOP_LENGTH);
    return gp.n_out;
}

/* What a fresh session fed |held| generates next. */
static void
fresh_continuation(const int32_t *held, size_t n_held, uint32_t n, float penalty,
                   int32_t *out)
{
    ks_session *f = new_session();

    ck_assert_int_eq(ks_session_eval(f, held, n_held, NULL), KS_OK);
    gen(f, NULL, 0, n, penalty, out);
    ks_session_destroy(f);
}

static const int32_t prompt[] = { 3, 17, 250, 99, 4, 128 };
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

/* The token generate stopped on at n_predict is held: n_past counts it,
 * and the session goes on as a fresh one fed prompt + output. */
START_TEST(last_generated_token_is_held)
{
    ks_session *s = new_session();
    int32_t held[N_PROMPT + 4], a[4], b[4];

    memcpy(held, prompt, sizeof prompt);
    ck_assert_uint_eq(gen(s, prompt, N_PROMPT, 4, 0, held + N_PROMPT), 4);
    ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT + 4);
    gen(s, NULL, 0, 4, 0, a);
    fresh_continuation(held, N_PROMPT + 4, 4, 0, b);
    ck_assert_mem_eq(a, b, sizeof a);
    ks_session_destroy(s);
}
END_TEST

/* generate(4) then generate(4) with no prompt = generate(8). */
static bool stop_after_3(void *user, int32_t tok, const char *piece, size_t len)
{
    int *n = user;
    (void)tok, (void)piece, (void)len;
    return ++*n < 3;
}

START_TEST(continuing_repeats_no_token)
{
    ks_session *s = new_session();
    int32_t eight[8], split[8];

    gen(s, prompt, N_PROMPT, 8, 0, eight);
    ks_session_truncate(s, 0);
    gen(s, prompt, N_PROMPT, 4, 0, split);
    gen(s, NULL, 0, 4, 0, split + 4);
    ck_assert_mem_eq(eight, split, sizeof eight);
    ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT + 8);

    /* the same when the callback stops it */
    {
        int n = 0;
        ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = 8,
                                  .ignore_eog = true, .on_token = stop_after_3, .user = &n,
                                  .out_tokens = split, .out_cap = 8 };
        ks_session_truncate(s, 0);
        ck_assert_int_eq(ks_session_generate(s, &gp), KS_OK);
        ck_assert_int_eq(gp.stop, KS_STOP_CALLBACK);
        ck_assert_uint_eq(gp.n_out, 3);
        ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT + 3);
        gen(s, NULL, 0, 5, 0, split + 3);
        ck_assert_mem_eq(eight, split, sizeof eight);
    }
    ks_session_destroy(s);
}
END_TEST

/* After truncate(n), a generate with no prompt samples from token n-1's
 * logits, not from the logits the session had before. */
START_TEST(truncate_drops_stale_logits)
{
    ks_session *s = new_session();
    int32_t a[4], b[4];

    ck_assert_int_eq(ks_session_eval(s, prompt, N_PROMPT, NULL), KS_OK);
    ck_assert_int_eq(ks_session_truncate(s, 3), KS_OK);
    gen(s, NULL, 0, 4, 0, a);
    fresh_continuation(prompt, 3, 4, 0, b);
    ck_assert_mem_eq(a, b, sizeof a);
    /* truncating to where it is changes nothing */
    ck_assert_int_eq(ks_session_truncate(s, ks_session_n_past(s)), KS_OK);
    ck_assert_int_eq(ks_session_truncate(s, 1000), KS_ERR_INVALID_ARG);
    ks_session_destroy(s);
}
END_TEST

/* Bad calls append nothing. */
START_TEST(refused_calls_hold_nothing)
{
    ks_session *s = new_session();
    int32_t bad[] = { 5, 300 }, big[N_CTX + 1] = { 0 };
    int32_t a[4], b[4];

    ck_assert_int_eq(ks_session_eval(s, prompt, N_PROMPT, NULL), KS_OK);
    ck_assert_int_eq(ks_session_eval(s, bad, 2, NULL), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(ks_session_eval(s, big, N_CTX + 1, NULL), KS_ERR_CONTEXT_FULL);
    ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT);
    gen(s, NULL, 0, 4, 0, a);
    fresh_continuation(prompt, N_PROMPT, 4, 0, b);
    ck_assert_mem_eq(a, b, sizeof a);
    ks_session_destroy(s);
}
END_TEST

/* A weight that is NaN gives NaN logits: generation stops with
 * KS_ERR_CORRUPT instead of emitting token 0 forever; KESTREL_CHECK=1
 * names the first layer whose output went bad. */
START_TEST(nan_logits_are_an_error)
{
    ks_synth_params p = {
        .arch = "llama", .n_embd = 32, .n_layers = 3, .n_head = 4, .n_ff = 48,
        .n_vocab = 300, .n_ctx = 256, .wtype = KS_QUANT_F32, .seed = 5,
    };
    char nan_path[300];
    ks_gguf *g = NULL;
    const ks_gguf_tensor *t;
    float nan_v = NAN;
    ks_model *m = NULL;
    ks_session *s = NULL;
    int32_t out[4];
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = 4,
                              .out_tokens = out, .out_cap = 4 };
    int fd;

    snprintf(nan_path, sizeof nan_path, "%s/nan.gguf", dir);
    ck_assert_int_eq(ks_synth_write(&p, nan_path), KS_OK);
    ck_assert_int_eq(ks_gguf_open(nan_path, &g), KS_OK);
    ck_assert_ptr_nonnull(t = ks_gguf_tensor_find(g, "blk.1.ffn_norm.weight"));
    fd = open(nan_path, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, &nan_v, sizeof nan_v, (off_t)t->offset + 8), sizeof nan_v);
    close(fd);
    ks_gguf_destroy(g);

    ck_assert_int_eq(ks_model_load(rt, nan_path, NULL, &m), KS_OK);
    for (int check = 0; check < 2; check++) {
        ks_session_params sp = { .n_ctx = 32 };
        if (check)
            setenv("KESTREL_CHECK", "1", 1);
        ck_assert_int_eq(ks_session_create(m, &sp, &s), KS_OK);
        ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_CORRUPT);
        ck_assert_int_eq(gp.stop, KS_STOP_ERROR);
        ck_assert_uint_eq(gp.n_out, 0);
        ck_assert_ptr_nonnull(strstr(ks_last_error(), check ? "layer 1 produced NaN"
                                                            : "is NaN"));
        ks_session_destroy(s);
        unsetenv("KESTREL_CHECK");
    }
    ks_model_destroy(m);
    unlink(nan_path);
}
END_TEST

/* A cancel during prefill stops between batches, the prompt held but not
 * yet run; the next call resumes it. */
START_TEST(prefill_honours_cancel)
{
    ks_session_params sp = { .n_ctx = N_CTX, .n_batch = 2 };
    ks_session *s = NULL;
    volatile int cancel = 1;
    int32_t out[4], want[4];
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = 4,
                              .ignore_eog = true, .out_tokens = out, .out_cap = 4,
                              .cancel = &cancel };

    ck_assert_int_eq(ks_session_create(model, &sp, &s), KS_OK);
    ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_CANCELLED);
    ck_assert_int_eq(gp.stop, KS_STOP_CANCELLED);
    ck_assert_uint_eq(gp.n_out, 0);
    ck_assert_uint_eq(ks_session_n_past(s), N_PROMPT);
    ck_assert_uint_eq(s->n_kv, 0);  /* no batch ran */
    gen(s, NULL, 0, 4, 0, out);
    ks_session_destroy(s);
    /* the same as a session that was never cancelled, batches and all */
    ck_assert_int_eq(ks_session_create(model, &sp, &s), KS_OK);
    gen(s, prompt, N_PROMPT, 4, 0, want);
    ck_assert_mem_eq(out, want, sizeof want);
    ks_session_destroy(s);
}
END_TEST

/* ---- random call sequences ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t
rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* One sequence of 1..6 random calls, tracking what the session must hold;
 * then it must continue as a fresh session fed that. */
static void
one_sequence(ks_session *s, int seq)
{
    int32_t held[MAX_SEQ], toks[8], a[3], b[3];
    uint32_t n_held = 0, n_ops = 1 + rnd(6);
    float penalty = rnd(3) == 0 ? 1.3f : 0.0f;

    ck_assert_int_eq(ks_session_truncate(s, 0), KS_OK);
    for (uint32_t op = 0; op < n_ops; op++) {
        uint32_t kind = n_held == 0 ? rnd(2) : rnd(3), n = 1 + rnd(4);
        if (n_held + n + 4 > N_CTX - 3)
            kind = 2;
        for (uint32_t i = 0; i < n; i++)
            toks[i] = (int32_t)rnd(300);
        if (kind == 0) {  /* eval */
            ck_assert_int_eq(ks_session_eval(s, toks, n, NULL), KS_OK);
            memcpy(held + n_held, toks, n * sizeof(int32_t));
            n_held += n;
        } else if (kind == 1) {  /* generate, with or without a prompt */
            uint32_t np = n_held == 0 ? n : rnd(n + 1), got;
            memcpy(held + n_held, toks, np * sizeof(int32_t));
            n_held += np;
            got = (uint32_t)gen(s, toks, np, 1 + rnd(4), penalty, held + n_held);
            n_held += got;
        } else {  /* truncate */
            n_held = n_held ? rnd(n_held + 1) : 0;
            ck_assert_int_eq(ks_session_truncate(s, n_held), KS_OK);
        }
        ck_assert_msg(ks_session_n_past(s) == n_held, "sequence %d call %u: %u held, "
                      "expected %u", seq, op, ks_session_n_past(s), n_held);
    }
    if (n_held == 0)
        return;
    gen(s, NULL, 0, 3, penalty, a);
    fresh_continuation(held, n_held, 3, penalty, b);
    ck_assert_msg(memcmp(a, b, sizeof a) == 0, "sequence %d: continues with %d %d %d, a "
                  "fresh session with %d %d %d", seq, a[0], a[1], a[2], b[0], b[1], b[2]);
}

START_TEST(random_call_sequences_match_a_fresh_session)
{
    const char *e = getenv("KESTREL_SESSION_SEQUENCES");
    int n = e ? atoi(e) : 10000;
    ks_session *s = new_session();

    for (int i = 0; i < n; i++)
        one_sequence(s, i);
    ks_session_destroy(s);
    fprintf(stderr, "test_session: %d random call sequences matched a fresh session\n", n);
}
END_TEST

/* -sum p log p of softmax(x), the plain way, in double. */
static double
entropy_ref(const float *x, size_t n)
{
    double mx = x[0], z = 0, h = 0;

    for (size_t i = 1; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (size_t i = 0; i < n; i++)
        z += exp(x[i] - mx);
    for (size_t i = 0; i < n; i++) {
        double p = exp(x[i] - mx) / z;
        if (p > 0)
            h -= p * log(p);
    }
    return h;
}

/* out_entropy[i] is the entropy of the logits token i was sampled from,
 * for the first entropy_cap tokens only. */
START_TEST(entropy_is_that_of_the_sampled_logits)
{
    ks_session *s = new_session(), *f = new_session();
    ks_model_desc md;
    float h[4] = { -1, -1, -1, -1 }, *lg;
    int32_t out[4];
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = 4,
                              .ignore_eog = true, .out_tokens = out, .out_cap = 4,
                              .out_entropy = h, .entropy_cap = 3 };

    ks_model_describe(model, &md);
    lg = malloc(md.n_vocab * sizeof(float));
    ck_assert_ptr_nonnull(lg);
    ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "%s", ks_last_error());
    ck_assert_uint_eq(gp.n_out, 4);
    ck_assert_int_eq(ks_session_eval(f, prompt, N_PROMPT, lg), KS_OK);
    for (int i = 0; i < 3; i++) {
        double ref = entropy_ref(lg, md.n_vocab);
        ck_assert_msg(fabs(h[i] - ref) < 1e-3, "token %d: entropy %g, expected %g", i,
                      h[i], ref);
        ck_assert_msg(ref > 0 && ref <= log(md.n_vocab) + 1e-3, "entropy %g", ref);
        ck_assert_int_eq(ks_session_eval(f, &out[i], 1, lg), KS_OK);
    }
    ck_assert_float_eq(h[3], -1);   /* past entropy_cap: untouched */
    free(lg);
    ks_session_destroy(f);
    ks_session_destroy(s);
}
END_TEST

int
main(void)
{
    Suite *su = suite_create("session");
    TCase *tc = tcase_create("contract");
    SRunner *sr;
    int failed;

    setup();
    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, last_generated_token_is_held);
    tcase_add_test(tc, continuing_repeats_no_token);
    tcase_add_test(tc, truncate_drops_stale_logits);
    tcase_add_test(tc, refused_calls_hold_nothing);
    tcase_add_test(tc, nan_logits_are_an_error);
    tcase_add_test(tc, prefill_honours_cancel);
    tcase_add_test(tc, random_call_sequences_match_a_fresh_session);
    tcase_add_test(tc, entropy_is_that_of_the_sampled_logits);
    suite_add_tcase(su, tc);
    sr = srunner_create(su);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    teardown();
    return failed ? 1 : 0;
}
