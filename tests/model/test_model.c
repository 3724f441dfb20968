/* Whole-model tests on synthetic models the test writes itself, one per
 * architecture: batched prefill agrees with token-by-token evaluation,
 * KV truncation replays exactly, scalar and SIMD kernels pick the same
 * greedy tokens, two sessions on two threads agree, and bad models and
 * full contexts give clear errors. */
#include <check.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/base.h"
#include "kestrel/kestrel.h"
#include "kestrel/quantize.h"
#include "runtime/cpu/quant.h"
#include "runtime/gguf.h"
#include "runtime/synth.h"

static const char *archs[] = { "llama", "qwen2", "qwen3", "gemma3" };
static char paths[4][256];
static char dir[] = "/tmp/kestrel-test-model-XXXXXX";

static void
write_models(void)
{
    if (!mkdtemp(dir))
        abort();
    for (int i = 0; i < 4; i++) {
        ks_synth_params p = {
            .arch = archs[i], .n_embd = 64, .n_layers = 3, .n_head = 4,
            .n_head_kv = 2, .n_ff = 96, .n_vocab = 320, .n_ctx = 256,
            .wtype = i % 2 ? KS_QUANT_Q4_0 : KS_QUANT_Q8_0,
            .seed = 1234 + (uint64_t)i,
        };
        snprintf(paths[i], sizeof paths[i], "%s/%s.gguf", dir, archs[i]);
        if (ks_synth_write(&p, paths[i]) != KS_OK) {
            fprintf(stderr, "synth %s: %s\n", archs[i], ks_last_error());
            abort();
        }
    }
}

static void
remove_models(void)
{
    for (int i = 0; i < 4; i++)
        unlink(paths[i]);
    rmdir(dir);
}

typedef struct fixture {
    ks_runtime *rt;
    ks_model   *m;
    ks_session *s;
} fixture;

static void
open_model(fixture *f, int arch, int threads, uint32_t n_ctx)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = threads };
    ks_session_params sp = { .n_ctx = n_ctx, .n_batch = 8 };

    ck_assert_int_eq(ks_runtime_create(&rp, &f->rt), KS_OK);
    ck_assert_msg(ks_model_load(f->rt, paths[arch], NULL, &f->m) == KS_OK,
                  "%s", ks_last_error());
    ck_assert_int_eq(ks_session_create(f->m, &sp, &f->s), KS_OK);
}

static void
close_model(fixture *f)
{
    ks_session_destroy(f->s);
    ks_model_destroy(f->m);
    ks_runtime_destroy(f->rt);
}

static const int32_t prompt[] = { 1, 270, 5, 300, 261, 7, 299, 42, 100, 9, 11,
                                  12, 13 };
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

static void
greedy(ks_session *s, int32_t *out, uint32_t n)
{
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT,
                              .n_predict = n, .ignore_eog = true,
                              .out_tokens = out, .out_cap = n };

    ck_assert_int_eq(ks_session_truncate(s, 0), KS_OK);
    ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_uint_eq(gp.n_out, n);
}

/* Batched prefill (batch 8 over 13 tokens) against one token at a time. */
START_TEST(batch_matches_token_by_token)
{
    fixture f;
    float *a, *b;
    uint32_t n_vocab;
    ks_model_desc d;

    open_model(&f, _i, 2, 64);
    ks_model_describe(f.m, &d);
    n_vocab = d.n_vocab;
    a = malloc(n_vocab * sizeof(float));
    b = malloc(n_vocab * sizeof(float));
    ck_assert_int_eq(ks_session_eval(f.s, prompt, N_PROMPT, a), KS_OK);
    ck_assert_uint_eq(ks_session_n_past(f.s), N_PROMPT);
    ck_assert_int_eq(ks_session_truncate(f.s, 0), KS_OK);
    for (int i = 0; i < N_PROMPT; i++)
        ck_assert_int_eq(ks_session_eval(f.s, &prompt[i], 1, b), KS_OK);
    for (uint32_t i = 0; i < n_vocab; i++)
        ck_assert_msg(fabsf(a[i] - b[i]) <= 2e-3f + 2e-3f * fabsf(b[i]),
                      "%s logit %u: batched %f, one by one %f", archs[_i], i,
                      a[i], b[i]);
    free(a);
    free(b);
    close_model(&f);
}
END_TEST

/* Generate, truncate back to the prompt, generate again: same tokens. */
START_TEST(truncate_replays)
{
    fixture f;
    int32_t a[24], b[24];
    ks_generate_params gp = { .n_predict = 12, .ignore_eog = true,
                              .out_tokens = b + 12, .out_cap = 12 };

    open_model(&f, _i, 2, 128);
    greedy(f.s, a, 24);
    /* keep the prompt and the first 12 generated tokens in the cache... */
    ck_assert_int_eq(ks_session_truncate(f.s, N_PROMPT + 11), KS_OK);
    /* ...and feed the 12th again: the continuation must repeat. */
    gp.prompt = &a[11];
    gp.n_prompt = 1;
    ck_assert_int_eq(ks_session_generate(f.s, &gp), KS_OK);
    for (int i = 12; i < 24; i++)
        ck_assert_int_eq(a[i], b[i]);
    ck_assert_int_eq(ks_session_truncate(f.s, 1000), KS_ERR_INVALID_ARG);
    close_model(&f);
}
END_TEST

START_TEST(scalar_and_simd_agree)
{
    fixture f;
    int32_t a[32], b[32];
    ks_simd best = ks_cpu_simd();

    if (best == KS_SIMD_SCALAR)
        return;  /* nothing to compare on this CPU */
    open_model(&f, _i, 2, 128);
    ks_cpu_simd_force(KS_SIMD_SCALAR);
    greedy(f.s, a, 32);
    ks_cpu_simd_force(best);
    greedy(f.s, b, 32);
    for (int i = 0; i < 32; i++)
        ck_assert_msg(a[i] == b[i], "%s token %d: scalar %d, %s %d",
                      archs[_i], i, a[i], ks_cpu_simd_name(best), b[i]);
    close_model(&f);
}
END_TEST

typedef struct thread_arg {
    ks_model *m;
    int32_t   out[24];
    ks_status st;
} thread_arg;

static void *
run_session(void *p)
{
    thread_arg *a = p;
    ks_session *s = NULL;
    ks_session_params sp = { .n_ctx = 64, .n_threads = 1 };
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT,
                              .n_predict = 24, .ignore_eog = true,
                              .out_tokens = a->out, .out_cap = 24 };

    a->st = ks_session_create(a->m, &sp, &s);
    if (a->st == KS_OK)
        a->st = ks_session_generate(s, &gp);
    ks_session_destroy(s);
    return NULL;
}

START_TEST(two_sessions_two_threads)
{
    fixture f;
    thread_arg ta[2] = { 0 };
    pthread_t th[2];
    int32_t ref[24];

    open_model(&f, _i, 1, 64);
    greedy(f.s, ref, 24);
    for (int i = 0; i < 2; i++) {
        ta[i].m = f.m;
        ck_assert_int_eq(pthread_create(&th[i], NULL, run_session, &ta[i]),
                         0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(ta[i].st, KS_OK);
        for (int k = 0; k < 24; k++)
            ck_assert_int_eq(ta[i].out[k], ref[k]);
    }
    close_model(&f);
}
END_TEST

START_TEST(context_full_is_an_error)
{
    fixture f;
    int32_t out[64];
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT,
                              .n_predict = 64, .ignore_eog = true,
                              .out_tokens = out, .out_cap = 64 };

    open_model(&f, 0, 2, 20);
    ck_assert_int_eq(ks_session_generate(f.s, &gp), KS_ERR_CONTEXT_FULL);
    ck_assert_uint_eq(ks_session_n_past(f.s), 20);
    /* every emitted token is held: the context's 20 positions */
    ck_assert_uint_eq(gp.n_out, 20 - N_PROMPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "context"));
    /* a prompt that does not fit at all is refused whole */
    ck_assert_int_eq(ks_session_truncate(f.s, 15), KS_OK);
    ck_assert_int_eq(ks_session_eval(f.s, prompt, N_PROMPT, NULL),
                     KS_ERR_CONTEXT_FULL);
    ck_assert_uint_eq(ks_session_n_past(f.s), 15);
    close_model(&f);
}
END_TEST

START_TEST(sampling_is_seeded)
{
    fixture f;
    int32_t a[16], b[16], c[16];
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT,
                              .n_predict = 16, .ignore_eog = true,
                              .out_cap = 16 };
    int differ = 0;

    gp.sampling.temp = 1.5f;
    gp.sampling.seed = 7;
    open_model(&f, 0, 2, 64);
    gp.out_tokens = a;
    ck_assert_int_eq(ks_session_generate(f.s, &gp), KS_OK);
    ks_session_truncate(f.s, 0);
    gp.out_tokens = b;
    ck_assert_int_eq(ks_session_generate(f.s, &gp), KS_OK);
    ks_session_truncate(f.s, 0);
    gp.sampling.seed = 8;
    gp.out_tokens = c;
    ck_assert_int_eq(ks_session_generate(f.s, &gp), KS_OK);
    for (int i = 0; i < 16; i++) {
        ck_assert_int_eq(a[i], b[i]);
        differ += a[i] != c[i];
    }
    ck_assert_int_gt(differ, 0);
    close_model(&f);
}
END_TEST

static volatile int cancel_flag;

static bool
cancel_after_three(void *user, int32_t tok, const char *piece, size_t len)
{
    int *n = user;

    (void)tok;
    (void)piece;
    (void)len;
    if (++*n == 3)
        cancel_flag = 1;
    return true;
}

/* The cancel flag (what Ctrl-C sets in the CLI) stops generation before
 * the next token, with its own status. */
START_TEST(cancel_flag_stops)
{
    fixture f;
    int seen = 0;
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT,
                              .n_predict = 50, .ignore_eog = true,
                              .on_token = cancel_after_three, .user = &seen,
                              .cancel = &cancel_flag };

    cancel_flag = 0;
    open_model(&f, 0, 2, 128);
    ck_assert_int_eq(ks_session_generate(f.s, &gp), KS_ERR_CANCELLED);
    ck_assert_int_eq(seen, 3);
    ck_assert_uint_eq(gp.n_out, 3);
    close_model(&f);
}
END_TEST

/* ---- bad models ---- */

static ks_status
load_mem_file(ks_gguf_writer *w, const char *name)
{
    char path[300];
    ks_runtime *rt = NULL;
    ks_model *m = NULL;
    ks_status st;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    ck_assert_int_eq(ks_gguf_writer_write_file(w, path), KS_OK);
    ck_assert_int_eq(ks_runtime_create(NULL, &rt), KS_OK);
    st = ks_model_load(rt, path, NULL, &m);
    ck_assert_ptr_null(m);
    ks_runtime_destroy(rt);
    unlink(path);
    return st;
}

START_TEST(unknown_architecture)
{
    ks_gguf_writer *w;

    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    ks_gguf_writer_set_str(w, "general.architecture", "mamba");
    ck_assert_int_eq(load_mem_file(w, "mamba.gguf"), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'mamba'"));
    ks_gguf_writer_destroy(w);
}
END_TEST

static void
llama_keys(ks_gguf_writer *w, bool with_blocks)
{
    ks_gguf_writer_set_str(w, "general.architecture", "llama");
    ks_gguf_writer_set_u32(w, "llama.context_length", 128);
    ks_gguf_writer_set_u32(w, "llama.embedding_length", 64);
    if (with_blocks)
        ks_gguf_writer_set_u32(w, "llama.block_count", 1);
    ks_gguf_writer_set_u32(w, "llama.feed_forward_length", 64);
    ks_gguf_writer_set_u32(w, "llama.attention.head_count", 4);
    ks_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
}

START_TEST(missing_metadata)
{
    ks_gguf_writer *w;

    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    llama_keys(w, false);
    ck_assert_int_eq(load_mem_file(w, "noblocks.gguf"), KS_ERR_CORRUPT);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "llama.block_count"));
    ks_gguf_writer_destroy(w);
}
END_TEST

START_TEST(unsupported_tensor_type)
{
    ks_gguf_writer *w;
    uint64_t ne[2] = { 256, 320 };

    ck_assert_int_eq(ks_gguf_writer_create(&w), KS_OK);
    llama_keys(w, true);
    ck_assert_int_eq(ks_gguf_writer_add_tensor(w, "token_embd.weight",
                                               KS_QUANT_IQ2_XXS, 2, ne, NULL,
                                               66 * 320),
                     KS_OK);
    ks_gguf_writer_set_u32(w, "llama.embedding_length", 256);
    ck_assert_int_eq(load_mem_file(w, "iq2.gguf"), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "token_embd.weight"));
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "IQ2_XXS"));
    ks_gguf_writer_destroy(w);
}
END_TEST

START_TEST(quantize_roundtrip)
{
    char out[300];
    ks_runtime *rt;
    ks_model *m;
    ks_session *s;
    int32_t a[8];

    snprintf(out, sizeof out, "%s/requant.gguf", dir);
    ck_assert_msg(ks_quantize_file(paths[0], out, "Q4_0", 2) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_int_eq(ks_runtime_create(NULL, &rt), KS_OK);
    ck_assert_int_eq(ks_model_load(rt, out, NULL, &m), KS_OK);
    ck_assert_int_eq(ks_session_create(m, NULL, &s), KS_OK);
    greedy(s, a, 8);
    ks_session_destroy(s);
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
    ck_assert_int_eq(ks_quantize_file(paths[0], out, "Q3_XL", 2),
                     KS_ERR_INVALID_ARG);
    unlink(out);
}
END_TEST

static Suite *
model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("synthetic");
    TCase *bad = tcase_create("bad models");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, batch_matches_token_by_token, 0, 4);
    tcase_add_loop_test(tc, truncate_replays, 0, 4);
    tcase_add_loop_test(tc, scalar_and_simd_agree, 0, 4);
    tcase_add_loop_test(tc, two_sessions_two_threads, 0, 4);
    tcase_add_test(tc, context_full_is_an_error);
    tcase_add_test(tc, sampling_is_seeded);
    tcase_add_test(tc, cancel_flag_stops);
    tcase_add_test(tc, quantize_roundtrip);
    suite_add_tcase(s, tc);
    tcase_add_test(bad, unknown_architecture);
    tcase_add_test(bad, missing_metadata);
    tcase_add_test(bad, unsupported_tensor_type);
    suite_add_tcase(s, bad);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    write_models();
    sr = srunner_create(model_suite());
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    remove_models();
    return failed ? 1 : 0;
}
