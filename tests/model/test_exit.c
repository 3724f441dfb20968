/* Logits from an intermediate layer (ks_session_params.n_layers), the
 * perplexity and KL arithmetic (kestrel/quality.h), and self-drafting
 * (KS_SPEC_SELF) on synthetic models.
 *
 * "full" has 2 layers; "half" is written from the same seed with 1 layer:
 * the same embeddings, output norm, tied head and first layer, so a
 * session on "full" that exits after layer 0 must give "half"'s logits
 * bit for bit. "other" has another seed. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "kestrel/quality.h"
#include "runtime/session_priv.h"
#include "runtime/synth.h"
#include "runtime/tokenizer.h"

enum { N_CTX = 64, N_VOCAB = 300, N_BATCH = 16, PPL_CTX = 16, N_TEXT = 3 * PPL_CTX + 5 };

static char dir[] = "/tmp/kestrel-test-exit-XXXXXX";
static char paths[3][256], kl_path[300];
static ks_runtime *rt;
static ks_model *full, *half, *other;
static int32_t text[N_TEXT];

static ks_model *
write_load(int i, uint32_t n_layers, uint64_t seed)
{
    ks_synth_params p = {
        .arch = "qwen2", .n_embd = 32, .n_layers = n_layers, .n_head = 4, .n_head_kv = 2,
        .n_ff = 48, .n_vocab = N_VOCAB, .n_ctx = 256, .wtype = KS_QUANT_Q8_0, .seed = seed,
    };
    ks_model *m = NULL;

    snprintf(paths[i], sizeof paths[i], "%s/m%d.gguf", dir, i);
    if (ks_synth_write(&p, paths[i]) != KS_OK || ks_model_load(rt, paths[i], NULL, &m) != KS_OK) {
        fprintf(stderr, "test_exit: %s\n", ks_last_error());
        abort();
    }
    return m;
}

static void
setup(void)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 1, .no_governor = true };
    uint64_t r = 12345;

    if (!mkdtemp(dir) || ks_runtime_create(&rp, &rt) != KS_OK)
        abort();
    full = write_load(0, 2, 99);
    half = write_load(1, 1, 99);
    other = write_load(2, 2, 7);
    snprintf(kl_path, sizeof kl_path, "%s/base.kld", dir);
    /* a text the synthetic models can half predict: a short cycle with noise */
    for (int i = 0; i < N_TEXT; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        text[i] = (r >> 33) % 4 == 0 ? (int32_t)((r >> 40) % N_VOCAB) : 5 + i % 7;
    }
}

static void
teardown(void)
{
    ks_model_destroy(full);
    ks_model_destroy(half);
    ks_model_destroy(other);
    ks_runtime_destroy(rt);
    for (int i = 0; i < 3; i++)
        unlink(paths[i]);
    unlink(kl_path);
    rmdir(dir);
}

static ks_session *
new_session(ks_model *m, uint32_t n_layers)
{
    ks_session_params sp = { .n_ctx = N_CTX, .n_batch = N_BATCH, .n_layers = n_layers };
    ks_session *s = NULL;

    ck_assert_msg(ks_session_create(m, &sp, &s) == KS_OK, "%s", ks_last_error());
    return s;
}

/* ---- the exit layer ---- */

START_TEST(exit_after_layer_0_is_the_one_layer_model)
{
    ks_session *a = new_session(full, 1), *b = new_session(half, 0), *c = new_session(full, 0);
    float la[N_VOCAB], lb[N_VOCAB], lc[N_VOCAB];

    ck_assert_int_eq(ks_session_eval(a, text, 20, la), KS_OK);
    ck_assert_int_eq(ks_session_eval(b, text, 20, lb), KS_OK);
    ck_assert_int_eq(ks_session_eval(c, text, 20, lc), KS_OK);
    ck_assert_mem_eq(la, lb, sizeof la);
    ck_assert(memcmp(la, lc, sizeof la) != 0);
    /* and token by token afterwards, through the one-token kernels */
    for (int i = 20; i < 30; i++) {
        ck_assert_int_eq(ks_session_eval(a, text + i, 1, la), KS_OK);
        ck_assert_int_eq(ks_session_eval(b, text + i, 1, lb), KS_OK);
        ck_assert_mem_eq(la, lb, sizeof la);
    }
    ks_session_destroy(a);
    ks_session_destroy(b);
    ks_session_destroy(c);
}
END_TEST

START_TEST(exit_layer_all_is_the_full_model)
{
    ks_session *a = new_session(full, 2), *c = new_session(full, 0);
    float la[N_VOCAB], lc[N_VOCAB];

    ck_assert_int_eq(ks_session_eval(a, text, 20, la), KS_OK);
    ck_assert_int_eq(ks_session_eval(c, text, 20, lc), KS_OK);
    ck_assert_mem_eq(la, lc, sizeof la);
    ks_session_destroy(a);
    ks_session_destroy(c);
}
END_TEST

START_TEST(exit_layer_past_the_model_is_refused)
{
    ks_session_params sp = { .n_ctx = N_CTX, .n_layers = 3 };
    ks_session *s = NULL;

    ck_assert_int_eq(ks_session_create(full, &sp, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "n_layers"));
}
END_TEST

/* ---- perplexity ---- */

/* The reference: every chunk token by token, each row's log-softmax in
 * double, the second half scored as llama-perplexity scores it. */
static double
ppl_by_hand(ks_model *m, uint32_t n_layers, uint32_t n_ctx, uint32_t n_chunks)
{
    ks_session *s = new_session(m, n_layers);
    float l[N_VOCAB];
    double nll = 0;
    uint32_t count = 0;

    for (uint32_t c = 0; c < n_chunks; c++) {
        const int32_t *ch = text + c * n_ctx;
        ks_session_truncate(s, 0);
        for (uint32_t j = 0; j + 1 < n_ctx; j++) {
            int32_t tok = ch[j];
            double max = -INFINITY, sum = 0;
            if (j == 0 && ks_tokenizer_add_bos(m->tok) && ks_tokenizer_bos(m->tok) >= 0)
                tok = ks_tokenizer_bos(m->tok);
            ck_assert_int_eq(ks_session_eval(s, &tok, 1, l), KS_OK);
            if (j < n_ctx / 2)
                continue;
            for (int v = 0; v < N_VOCAB; v++)
                max = l[v] > max ? l[v] : max;
            for (int v = 0; v < N_VOCAB; v++)
                sum += exp(l[v] - max);
            nll += max + log(sum) - l[ch[j + 1]];
            count++;
        }
    }
    ks_session_destroy(s);
    return exp(nll / count);
}

START_TEST(perplexity_matches_the_arithmetic)
{
    ks_session *s = new_session(full, 0);
    ks_ppl_params p = { .n_ctx = PPL_CTX };
    ks_ppl_result r;
    double want = ppl_by_hand(full, 0, PPL_CTX, 3);

    ck_assert_int_eq(ks_perplexity(s, text, N_TEXT, &p, &r), KS_OK);
    ck_assert_uint_eq(r.n_chunks, 3);
    ck_assert_uint_eq(r.n_scored, 3 * (PPL_CTX - 1 - PPL_CTX / 2));
    ck_assert_msg(fabs(r.ppl - want) < 1e-4 * want, "ppl %.6f, by hand %.6f", r.ppl, want);
    ck_assert(r.ppl > 1.0 && r.ppl < N_VOCAB * 4);
    ck_assert(r.ppl_err > 0);
    ck_assert(!r.have_kl);
    /* n_chunks caps them */
    p.n_chunks = 1;
    ck_assert_int_eq(ks_perplexity(s, text, N_TEXT, &p, &r), KS_OK);
    want = ppl_by_hand(full, 0, PPL_CTX, 1);
    ck_assert_msg(fabs(r.ppl - want) < 1e-4 * want, "ppl %.6f, by hand %.6f", r.ppl, want);
    ks_session_destroy(s);
}
END_TEST

START_TEST(perplexity_needs_two_chunks)
{
    ks_session *s = new_session(full, 0);
    ks_ppl_params p = { .n_ctx = PPL_CTX };
    ks_ppl_result r;

    ck_assert_int_eq(ks_perplexity(s, text, 2 * PPL_CTX - 1, &p, &r), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "at least 32"));
    p.n_ctx = N_CTX + 1;
    ck_assert_int_eq(ks_perplexity(s, text, N_TEXT, &p, &r), KS_ERR_INVALID_ARG);
    ks_session_destroy(s);
}
END_TEST

START_TEST(kl_against_itself_is_zero_and_grows_with_the_exit)
{
    ks_session *s = new_session(full, 0), *e = new_session(full, 1), *o = new_session(other, 0);
    ks_ppl_params save = { .n_ctx = PPL_CTX, .kl_save = kl_path };
    ks_ppl_params base = { .kl_base = kl_path };
    ks_ppl_result r0, r1, re, ro;
    FILE *f;
    long size;

    ck_assert_int_eq(ks_perplexity(s, text, N_TEXT, &save, &r0), KS_OK);
    /* llama-perplexity's layout: header, tokens, rows of 2 floats + even n_vocab u16 */
    ck_assert_ptr_nonnull(f = fopen(kl_path, "rb"));
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
    ck_assert_int_eq(size, 20 + 4 * 3 * PPL_CTX + 3 * 7 * (N_VOCAB + 4) * 2);

    /* the tokens come from the file: none given */
    ck_assert_int_eq(ks_perplexity(s, NULL, 0, &base, &r1), KS_OK);
    ck_assert(r1.have_kl);
    ck_assert_uint_eq(r1.n_ctx, PPL_CTX);
    ck_assert_uint_eq(r1.n_chunks, 3);
    ck_assert_double_eq_tol(r1.ppl, r0.ppl, 1e-9);
    ck_assert_double_eq_tol(r1.ppl_base, r0.ppl, 1e-3 * r0.ppl);
    /* only the file's 16-bit rounding of the log-probabilities is left */
    ck_assert_msg(fabs(r1.kl_mean) < 1e-4 && r1.kl_max < 1e-3, "kl %g max %g", r1.kl_mean,
                  r1.kl_max);
    ck_assert_double_eq(r1.top1, 1.0);

    ck_assert_int_eq(ks_perplexity(e, NULL, 0, &base, &re), KS_OK);
    ck_assert_msg(re.kl_mean > 1e-3, "exit kl %g", re.kl_mean);
    ck_assert(re.kl_p99 >= re.kl_mean && re.kl_max >= re.kl_p99);
    ck_assert(re.top1 < 1.0);
    ck_assert_double_eq_tol(re.ppl_base, r0.ppl, 1e-3 * r0.ppl);

    ck_assert_int_eq(ks_perplexity(o, NULL, 0, &base, &ro), KS_OK);
    ck_assert_msg(ro.kl_mean > re.kl_mean, "other %g exit %g", ro.kl_mean, re.kl_mean);
    ks_session_destroy(s);
    ks_session_destroy(e);
    ks_session_destroy(o);
}
END_TEST

START_TEST(bad_kl_files_are_refused)
{
    ks_session *s = new_session(full, 0);
    ks_ppl_params save = { .n_ctx = PPL_CTX, .kl_save = kl_path };
    ks_ppl_params base = { .kl_base = kl_path };
    ks_ppl_result r;
    char cut[320];
    FILE *f;

    ck_assert_int_eq(ks_perplexity(s, text, N_TEXT, &save, &r), KS_OK);
    /* cut short */
    ck_assert_int_eq(truncate(kl_path, 20 + 4 * 3 * PPL_CTX + 100), 0);
    ck_assert_int_eq(ks_perplexity(s, NULL, 0, &base, &r), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "its header"));
    /* another vocabulary */
    ck_assert_ptr_nonnull(f = fopen(kl_path, "r+b"));
    fseek(f, 12, SEEK_SET);
    fwrite(&(int32_t){ 301 }, 4, 1, f);
    fclose(f);
    ck_assert_int_eq(ks_perplexity(s, NULL, 0, &base, &r), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "n_vocab 301"));
    /* not such a file at all */
    snprintf(cut, sizeof cut, "%s", paths[0]);
    base.kl_base = cut;
    ck_assert_int_eq(ks_perplexity(s, NULL, 0, &base, &r), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "_logits_"));
    snprintf(cut, sizeof cut, "%s/absent.kld", dir);
    ck_assert_int_eq(ks_perplexity(s, NULL, 0, &base, &r), KS_ERR_IO);
    ks_session_destroy(s);
}
END_TEST

/* ---- self-drafting ---- */

static ks_status
gen(ks_session *s, ks_spec_mode spec, ks_session *draft, uint32_t k, int32_t *out,
    size_t *n_out)
{
    ks_generate_params gp = { .prompt = text, .n_prompt = 8, .n_predict = 40,
                              .ignore_eog = true, .out_tokens = out, .out_cap = 40,
                              .spec = spec, .draft = draft, .draft_p_min = -1.0f,
                              .draft_min = k, .draft_max = k };
    ks_status st = ks_session_generate(s, &gp);

    *n_out = gp.n_out;
    return st;
}

START_TEST(self_drafting_gives_plain_greedy_tokens)
{
    static const uint32_t ks[] = { 1, 3, 8 };
    int32_t want[40], got[40];
    size_t n_want, n_got;
    ks_session *s = new_session(full, 0);
    ks_stats st;

    ck_assert_int_eq(gen(s, KS_SPEC_OFF, NULL, 0, want, &n_want), KS_OK);
    ck_assert_uint_eq(n_want, 40);
    ks_session_destroy(s);
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        ks_session *t = new_session(full, 0), *d = new_session(full, 1);
        ck_assert_msg(gen(t, KS_SPEC_SELF, d, ks[i], got, &n_got) == KS_OK, "%s",
                      ks_last_error());
        ck_assert_uint_eq(n_got, 40);
        ck_assert_mem_eq(got, want, sizeof want);
        ks_session_stats(t, &st);
        ck_assert_uint_gt(st.n_drafted, 0);
        ck_assert_uint_gt(st.n_accepted, 0);
        ck_assert_uint_lt(st.n_accepted, st.n_drafted);
        ks_session_destroy(t);
        ks_session_destroy(d);
    }
}
END_TEST

START_TEST(self_drafting_needs_an_early_exit_of_the_same_model)
{
    ks_session *t = new_session(full, 0), *same = new_session(full, 0);
    ks_session *o = new_session(half, 0);
    int32_t out[40];
    size_t n;

    ck_assert_int_eq(gen(t, KS_SPEC_SELF, NULL, 2, out, &n), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(gen(t, KS_SPEC_SELF, same, 2, out, &n), KS_ERR_INVALID_ARG);
    ck_assert_int_eq(gen(t, KS_SPEC_SELF, o, 2, out, &n), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "fewer layers"));
    ck_assert_uint_eq(ks_session_n_past(t), 0);
    ks_session_destroy(t);
    ks_session_destroy(same);
    ks_session_destroy(o);
}
END_TEST

/* ---- early exit ---- */

static ks_status
gen_exit(ks_session *s, ks_session *e, float t, int32_t *out, size_t *n_out)
{
    ks_generate_params gp = { .prompt = text, .n_prompt = 8, .n_predict = 40,
                              .ignore_eog = true, .out_tokens = out, .out_cap = 40,
                              .draft = e, .early_exit = t };
    ks_status st = ks_session_generate(s, &gp);

    *n_out = gp.n_out;
    return st;
}

START_TEST(early_exit_at_certainty_is_plain_greedy)
{
    int32_t want[40], got[40];
    size_t n_want, n_got;
    ks_session *s = new_session(full, 0), *e = new_session(full, 1);
    ks_stats st;

    ck_assert_int_eq(gen(s, KS_SPEC_OFF, NULL, 0, want, &n_want), KS_OK);
    ks_session_truncate(s, 0);
    ck_assert_msg(gen_exit(s, e, 1.0f, got, &n_got) == KS_OK, "%s", ks_last_error());
    ck_assert_uint_eq(n_got, 40);
    ck_assert_mem_eq(got, want, sizeof want);
    ks_session_stats(s, &st);
    ck_assert_uint_eq(st.n_early_exit, 0);
    ck_assert_uint_eq(ks_session_n_past(s), 8 + 40);
    ks_session_destroy(s);
    ks_session_destroy(e);
}
END_TEST

/* After tokens that exited early, the full model's keys and values are a
 * full run's: the next token's logits are bitwise those of a session that
 * was given the same tokens one by one. */
START_TEST(early_exit_fills_the_skipped_layers)
{
    static const float ts[] = { 0.02f, 0.05f, 0.1f, 0.2f, 0.3f, 0.5f };
    int32_t got[40], next = 42;
    size_t n_got;
    float la[N_VOCAB], lb[N_VOCAB];
    bool tried = false;

    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        ks_session *s = new_session(full, 0), *e = new_session(full, 1), *r;
        ks_stats st;
        ck_assert_msg(gen_exit(s, e, ts[i], got, &n_got) == KS_OK, "%s", ks_last_error());
        ks_session_stats(s, &st);
        if (st.n_early_exit == 0 || st.n_early_exit >= 39) {
            ks_session_destroy(s);
            ks_session_destroy(e);
            continue;
        }
        tried = true;
        ck_assert_uint_eq(ks_session_n_past(s), 8 + 40);
        ck_assert_int_eq(ks_session_eval_all(s, &next, 1, la), KS_OK);
        r = new_session(full, 0);
        ck_assert_int_eq(ks_session_eval(r, text, 8, NULL), KS_OK);
        for (size_t k = 0; k < n_got; k++)
            ck_assert_int_eq(ks_session_eval(r, got + k, 1, NULL), KS_OK);
        ck_assert_int_eq(ks_session_eval(r, &next, 1, lb), KS_OK);
        ck_assert_mem_eq(la, lb, sizeof la);
        ks_session_destroy(r);
        ks_session_destroy(s);
        ks_session_destroy(e);
    }
    ck_assert_msg(tried, "no threshold made some tokens exit and others not");
}
END_TEST

START_TEST(early_exit_is_greedy_only)
{
    ks_session *s = new_session(full, 0), *e = new_session(full, 1);
    ks_generate_params gp = { .prompt = text, .n_prompt = 8, .n_predict = 4, .draft = e,
                              .early_exit = 0.5f };

    gp.sampling.temp = 0.7f;
    ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_UNSUPPORTED);
    gp.sampling.temp = 0;
    gp.draft = NULL;
    ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_INVALID_ARG);
    gp.draft = e;
    gp.early_exit = 1.5f;
    ck_assert_int_eq(ks_session_generate(s, &gp), KS_ERR_INVALID_ARG);
    ck_assert_uint_eq(ks_session_n_past(s), 0);
    ks_session_destroy(s);
    ks_session_destroy(e);
}
END_TEST

/* ---- pruning ---- */

START_TEST(pruning_the_last_layer_gives_the_one_layer_model)
{
    char out[300];
    uint32_t drop1 = 1, drop0 = 0, both[2] = { 0, 1 }, twice[2] = { 1, 1 }, far = 2;
    ks_model *p1 = NULL, *p0 = NULL;
    ks_model_desc d;
    ks_session *a, *b, *c;
    float la[N_VOCAB], lb[N_VOCAB], lc[N_VOCAB];

    snprintf(out, sizeof out, "%s/pruned1.gguf", dir);
    ck_assert_msg(ks_prune_file(paths[0], out, &drop1, 1) == KS_OK, "%s", ks_last_error());
    ck_assert_int_eq(ks_model_load(rt, out, NULL, &p1), KS_OK);
    ks_model_describe(p1, &d);
    ck_assert_uint_eq(d.n_layers, 1);
    ck_assert_int_eq(ks_prune_file(paths[0], out, &drop0, 1), KS_OK);
    ck_assert_int_eq(ks_model_load(rt, out, NULL, &p0), KS_OK);
    a = new_session(p1, 0);
    b = new_session(half, 0);
    c = new_session(p0, 0);
    ck_assert_int_eq(ks_session_eval(a, text, 20, la), KS_OK);
    ck_assert_int_eq(ks_session_eval(b, text, 20, lb), KS_OK);
    ck_assert_int_eq(ks_session_eval(c, text, 20, lc), KS_OK);
    ck_assert_mem_eq(la, lb, sizeof la);
    ck_assert(memcmp(lc, lb, sizeof lc) != 0);  /* layer 1 renumbered 0 ran instead */

    ck_assert_int_eq(ks_prune_file(paths[0], out, both, 2), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "every layer"));
    ck_assert_int_eq(ks_prune_file(paths[0], out, twice, 2), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "twice"));
    ck_assert_int_eq(ks_prune_file(paths[0], out, &far, 1), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "does not exist"));
    ks_session_destroy(a);
    ks_session_destroy(b);
    ks_session_destroy(c);
    ks_model_destroy(p1);
    ks_model_destroy(p0);
    unlink(out);
}
END_TEST

static Suite *
exit_suite(void)
{
    Suite *s = suite_create("exit");
    TCase *tc = tcase_create("exit_layer");

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, exit_after_layer_0_is_the_one_layer_model);
    tcase_add_test(tc, exit_layer_all_is_the_full_model);
    tcase_add_test(tc, exit_layer_past_the_model_is_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("perplexity");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, perplexity_matches_the_arithmetic);
    tcase_add_test(tc, perplexity_needs_two_chunks);
    tcase_add_test(tc, kl_against_itself_is_zero_and_grows_with_the_exit);
    tcase_add_test(tc, bad_kl_files_are_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("self_drafting");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, self_drafting_gives_plain_greedy_tokens);
    tcase_add_test(tc, self_drafting_needs_an_early_exit_of_the_same_model);
    suite_add_tcase(s, tc);

    tc = tcase_create("early_exit");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, early_exit_at_certainty_is_plain_greedy);
    tcase_add_test(tc, early_exit_fills_the_skipped_layers);
    tcase_add_test(tc, early_exit_is_greedy_only);
    suite_add_tcase(s, tc);

    tc = tcase_create("prune");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, pruning_the_last_layer_gives_the_one_layer_model);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    setup();
    sr = srunner_create(exit_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    teardown();
    return failed ? 1 : 0;
}
