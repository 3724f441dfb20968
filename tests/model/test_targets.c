/* The execution-target interface (scheduler/target.h), driven through a
 * mock target kind that this test registers: the session places ranges on
 * it by name, overlaps it with the CPU on prefill batches, falls back to
 * the CPU when it reports a lost device, and moves layers across it when
 * the governor asks. No line of the session knows the mock; adding it took
 * this file only.
 *
 * The mock runs its layers with a CPU target inside (so results are
 * exact) and logs every call; a synthetic model keeps it fast. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/base.h"
#include "kestrel/kestrel.h"
#include "runtime/model_priv.h"
#include "runtime/session_priv.h"
#include "runtime/synth.h"
#include "scheduler/profile.h"
#include "scheduler/target.h"

enum { N_LAYERS = 4, N_GEN = 10, MAX_EV = 4096 };

/* ---- the mock kind ---- */

typedef struct mock {
    ks_target *inner;       /* a CPU target for the same range */
    float     *x;           /* the copy a submit works on */
    float      logits[512];
    uint32_t   n;
    uint64_t   n_embd, n_vocab;
    bool       want_logits, head;
    ks_profile *prof;       /* the session's op profile; NULL: off */
} mock;

static struct {
    char     ev[MAX_EV];    /* 'r' run, 's' submit, 'f' finish, 'c' CPU run */
    int      n_ev;
    int      n_calls;       /* run + submit calls */
    int      fail_at;       /* the call that reports a lost device; 0: none */
    int      n_created, n_destroyed;
    int      refuse_creates; /* so many creates fail as on a full device */
    bool     async;         /* offer submit/finish */
    bool     profile;       /* sessions made with ks_session_params.profile */
    uint32_t last_l0;
} g;

static void
event(char c)
{
    if (g.n_ev < MAX_EV - 1)
        g.ev[g.n_ev++] = c;
}

static ks_status
lost_now(void)
{
    if (g.fail_at && ++g.n_calls == g.fail_at)
        return ks_error(KS_ERR_DEVICE_LOST, "mock: device lost (test)");
    return KS_OK;
}

static ks_status
mock_run(ks_target *t, float *x, uint32_t n, uint32_t pos0, bool want_logits, float *logits)
{
    mock *mk = t->impl;
    ks_status st;

    event('r');
    if ((st = lost_now()) != KS_OK)
        return st;
    /* what a device target does after its fence: one entry per
     * dispatch, timed on the device (here a made-up 1 us, 64 bytes) */
    ks_profile_add(mk->prof, "mock", KS_PROF_ATTN, (int32_t)t->l0, 1000, 64);
    return mk->inner->ops->run(mk->inner, x, n, pos0, want_logits, logits);
}

static ks_status
mock_submit(ks_target *t, const float *x, uint32_t n, uint32_t pos0, bool want_logits)
{
    mock *mk = t->impl;
    ks_status st;

    event('s');
    if ((st = lost_now()) != KS_OK)
        return st;
    memcpy(mk->x, x, (size_t)n * mk->n_embd * sizeof(float));
    mk->n = n;
    mk->want_logits = want_logits;
    return mk->inner->ops->run(mk->inner, mk->x, n, pos0, want_logits, mk->logits);
}

static ks_status
mock_finish(ks_target *t, float *x, float *logits)
{
    mock *mk = t->impl;

    event('f');
    if (mk->head && mk->want_logits)
        memcpy(logits, mk->logits, mk->n_vocab * sizeof(float));
    else if (!mk->head)
        memcpy(x, mk->x, (size_t)mk->n * mk->n_embd * sizeof(float));
    return KS_OK;
}

static void
mock_destroy(ks_target *t)
{
    mock *mk = t->impl;

    g.n_destroyed++;
    mk->inner->ops->destroy(mk->inner);
    free(mk->x);
    free(mk);
    free(t);
}

static const ks_target_ops mock_sync_ops = { mock_run, mock_destroy, NULL, NULL, NULL, NULL };
static const ks_target_ops mock_async_ops = { mock_run, mock_destroy, mock_submit,
                                              mock_finish, NULL, NULL };

static const char *
mock_supports(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head)
{
    (void)l0, (void)l1, (void)head;
    return env->kv_f32 ? "the mock keeps an f16 KV cache" : NULL;
}

static ks_status
mock_create(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head, ks_target **out)
{
    ks_target *t = calloc(1, sizeof(*t));
    mock *mk = calloc(1, sizeof(*mk));
    const ks_model *m = env->model;
    ks_status st;

    *out = NULL;
    if (g.refuse_creates > 0) {
        g.refuse_creates--;
        free(t);
        free(mk);
        return ks_error(KS_ERR_DEVICE_OOM, "mock: out of device memory (test)");
    }
    if (!t || !mk || !(mk->x = calloc((size_t)env->n_batch * m->hp.n_embd, sizeof(float))) ||
        (st = ks_cpu_target_kind.create(env, l0, l1, head, &mk->inner)) != KS_OK)
        abort();
    mk->head = head;
    mk->prof = env->profile;
    mk->n_embd = m->hp.n_embd;
    mk->n_vocab = m->hp.n_vocab;
    ks_target_init(t, g.async ? &mock_async_ops : &mock_sync_ops, mk, "mock", l0, l1, head,
                   true);
    g.n_created++;
    g.last_l0 = l0;
    *out = t;
    return KS_OK;
}

static const ks_target_kind mock_kind = { "mock", mock_supports, NULL, NULL, mock_create };

/* ---- the CPU, logged: a kind named "logcpu" that wraps it ---- */

static ks_status
logcpu_run(ks_target *t, float *x, uint32_t n, uint32_t pos0, bool want_logits,
           float *logits)
{
    ks_target *inner = t->impl;

    event('c');
    return inner->ops->run(inner, x, n, pos0, want_logits, logits);
}

static void
logcpu_destroy(ks_target *t)
{
    ks_target *inner = t->impl;

    inner->ops->destroy(inner);
    free(t);
}

static const ks_target_ops logcpu_ops = { logcpu_run, logcpu_destroy, NULL, NULL, NULL, NULL };

static ks_status
logcpu_create(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head, ks_target **out)
{
    ks_target *t = calloc(1, sizeof(*t));

    if (!t || ks_cpu_target_kind.create(env, l0, l1, head, (ks_target **)&t->impl) != KS_OK)
        abort();
    ks_target_init(t, &logcpu_ops, t->impl, "logcpu", l0, l1, head, false);
    *out = t;
    return KS_OK;
}

static const ks_target_kind logcpu_kind = { "logcpu", mock_supports, NULL, NULL,
                                            logcpu_create };

/* ---- fixtures ---- */

static char dir[] = "/tmp/kestrel-test-targets-XXXXXX";
static char path[256];
static const int32_t prompt[] = { 1, 45, 200, 17, 99, 250, 3, 8, 64 };
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

static void
reset(void)
{
    memset(&g, 0, sizeof g);
}

typedef struct run {
    ks_runtime *rt;
    ks_model   *m;
    ks_session *s;
} run;

static ks_status
open_run(run *r, const char *split, uint32_t n_batch, ks_kv_type kv)
{
    ks_runtime_params rp = { .backend = split ? KS_BACKEND_AUTO : KS_BACKEND_CPU,
                             .n_threads = 1, .split = split, .no_governor = true };
    ks_session_params sp = { .n_ctx = 64, .n_batch = n_batch, .kv_type = kv,
                             .profile = g.profile };

    ck_assert_int_eq(ks_runtime_create(&rp, &r->rt), KS_OK);
    ck_assert_msg(ks_model_load(r->rt, path, NULL, &r->m) == KS_OK, "%s", ks_last_error());
    return ks_session_create(r->m, &sp, &r->s);
}

static void
close_run(run *r)
{
    ks_session_destroy(r->s);
    ks_model_destroy(r->m);
    ks_runtime_destroy(r->rt);
}

static void
greedy(ks_session *s, const int32_t *p, size_t n, int32_t *out, uint32_t n_gen)
{
    ks_generate_params gp = { .prompt = p, .n_prompt = n, .n_predict = n_gen,
                              .ignore_eog = true, .out_tokens = out, .out_cap = n_gen };

    ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "%s", ks_last_error());
    ck_assert_uint_eq(gp.n_out, n_gen);
}

/* The CPU-only tokens for the prompt, with batches of n_batch. */
static void
reference(uint32_t n_batch, int32_t *out)
{
    run r;

    ck_assert_int_eq(open_run(&r, NULL, n_batch, KS_KV_F16), KS_OK);
    greedy(r.s, prompt, N_PROMPT, out, N_GEN);
    close_run(&r);
}

/* ---- tests ---- */

START_TEST(placed_on_the_mock_by_name)
{
    int32_t want[N_GEN], got[N_GEN];
    run r;

    reference(512, want);
    reset();
    ck_assert_int_eq(open_run(&r, "cpu:0-1,mock:2-3", 512, KS_KV_F16), KS_OK);
    ck_assert_str_eq(ks_session_placement(r.s), "cpu:0-1,mock:2-3+head");
    ck_assert_str_eq(ks_session_backend_name(r.s), "split");
    ck_assert_int_eq(g.n_created, 1);
    ck_assert_uint_eq(g.last_l0, 2);
    greedy(r.s, prompt, N_PROMPT, got, N_GEN);
    ck_assert_mem_eq(got, want, sizeof want);
    /* one prefill batch, then one run per decoded token but the last */
    ck_assert_int_eq(g.n_ev, N_GEN);
    close_run(&r);
    ck_assert_int_eq(g.n_destroyed, 1);
}
END_TEST

START_TEST(supports_refusal_is_an_error)
{
    run r;

    reset();
    ck_assert_int_eq(open_run(&r, "cpu:0-1,mock:2-3", 512, KS_KV_F32), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "mock keeps an f16 KV cache"));
    ck_assert_int_eq(g.n_created, 0);
    close_run(&r);
}
END_TEST

/* A CPU range, then the mock with submit/finish: the prompt's batches
 * overlap, the CPU running batch k+1 while the mock holds batch k. */
START_TEST(overlaps_the_cpu_on_prefill)
{
    int32_t want[N_GEN], got[N_GEN];
    run r;

    reference(2, want);
    reset();
    g.async = true;
    ck_assert_int_eq(open_run(&r, "logcpu:0-1,mock:2-3", 2, KS_KV_F16), KS_OK);
    greedy(r.s, prompt, N_PROMPT, got, N_GEN);
    ck_assert_mem_eq(got, want, sizeof want);
    g.ev[g.n_ev] = '\0';
    /* 5 batches of the 9-token prompt: c s c f s c f s c f s c f s f, then
     * one c s f per decoded token (a single batch runs without overlap) */
    ck_assert_msg(strncmp(g.ev, "cscfscfscfscfsf", 15) == 0, "calls: %s", g.ev);
    close_run(&r);
}
END_TEST

/* The mock reports a lost device at each of its first calls in turn: the
 * session moves every layer to the CPU and the tokens stay the CPU's. */
START_TEST(lost_device_falls_back_to_the_cpu)
{
    int32_t want[N_GEN], got[N_GEN];
    ks_stats st;

    reference(2, want);
    for (int at = 1; at <= 12; at++) {
        run r;
        reset();
        g.async = at % 2 == 0;
        g.fail_at = at;
        ck_assert_int_eq(open_run(&r, "cpu:0-1,mock:2-3", 2, KS_KV_F16), KS_OK);
        greedy(r.s, prompt, N_PROMPT, got, N_GEN);
        ck_assert_msg(memcmp(got, want, sizeof want) == 0, "lost at call %d", at);
        ks_session_stats(r.s, &st);
        ck_assert_uint_eq(st.n_fallbacks, 1);
        ck_assert_ptr_nonnull(strstr(st.fallback, "mock: device lost"));
        ck_assert_str_eq(ks_session_placement(r.s), "cpu:0-3+head");
        ck_assert_int_eq(g.n_destroyed, 1);
        close_run(&r);
    }
}
END_TEST

/* The governor's hints move a layer at a time across the boundary; the
 * moved layers' KV cache is rebuilt, so generation goes on as before. */
START_TEST(governor_hints_move_layers)
{
    int32_t want[2 * N_GEN], got[2 * N_GEN];
    run r;

    ck_assert_int_eq(open_run(&r, NULL, 512, KS_KV_F16), KS_OK);
    greedy(r.s, prompt, N_PROMPT, want, 2 * N_GEN);
    close_run(&r);

    reset();
    ck_assert_int_eq(open_run(&r, "cpu:0-1,mock:2-3", 512, KS_KV_F16), KS_OK);
    greedy(r.s, prompt, N_PROMPT, got, N_GEN / 2);
    ck_assert_int_eq(ks_session_move(r.s, KS_GOV_PLACE_TO_CPU), KS_OK);
    ck_assert_str_eq(ks_session_placement(r.s), "cpu:0-2,mock:3+head");
    greedy(r.s, NULL, 0, got + N_GEN / 2, N_GEN / 2);
    ck_assert_int_eq(ks_session_move(r.s, KS_GOV_PLACE_TO_GPU), KS_OK);
    ck_assert_int_eq(ks_session_move(r.s, KS_GOV_PLACE_TO_GPU), KS_OK);
    ck_assert_str_eq(ks_session_placement(r.s), "cpu:0,mock:1-3+head");
    greedy(r.s, NULL, 0, got + N_GEN, N_GEN / 2);
    /* a device that refuses the new range keeps the old one */
    g.refuse_creates = 1;
    ck_assert_int_eq(ks_session_move(r.s, KS_GOV_PLACE_TO_GPU), KS_OK);
    ck_assert_str_eq(ks_session_placement(r.s), "cpu:0,mock:1-3+head");
    ck_assert_int_eq(ks_session_move(r.s, KS_GOV_PLACE_TO_GPU), KS_OK);
    ck_assert_str_eq(ks_session_placement(r.s), "mock:0-3+head");
    ck_assert_int_eq(ks_session_move(r.s, KS_GOV_PLACE_TO_GPU), KS_ERR_UNSUPPORTED);
    greedy(r.s, NULL, 0, got + 3 * N_GEN / 2, N_GEN / 2);
    ck_assert_mem_eq(got, want, sizeof want);
    close_run(&r);
}
END_TEST

/* ---- the op profile ---- */

static const ks_profile_row *
find_row(const ks_profile_row *rows, size_t n, const char *target, const char *op,
         int32_t layer)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(rows[i].target, target) && !strcmp(rows[i].op, op) &&
            rows[i].layer == layer)
            return &rows[i];
    return NULL;
}

START_TEST(profile_covers_every_layer_and_op)
{
    static const char *const ops[] = { "norm", "qkv", "rope_kv", "attn", "attn_out", "add",
                                       "gate_up", "act", "down" };
    int32_t want[N_GEN], got[N_GEN];
    ks_profile_row rows[256];
    size_t n = 0, n_all;
    uint64_t total_ns = 0;
    const ks_profile_row *r;
    run rn;

    reference(512, want);
    reset();
    g.profile = true;
    ck_assert_int_eq(open_run(&rn, NULL, 512, KS_KV_F16), KS_OK);
    greedy(rn.s, prompt, N_PROMPT, got, N_GEN);
    /* timing changes no token */
    ck_assert_mem_eq(got, want, sizeof want);
    ck_assert_int_eq(ks_session_profile(rn.s, NULL, &n), KS_OK);
    n_all = n;
    ck_assert_uint_eq(n_all, N_LAYERS * 9 + 2);
    n = sizeof rows / sizeof rows[0];
    ck_assert_int_eq(ks_session_profile(rn.s, rows, &n), KS_OK);
    ck_assert_uint_eq(n, n_all);
    for (int32_t l = 0; l < N_LAYERS; l++) {
        const ks_layer *L = &rn.m->layers[l];
        uint64_t w = L->wq.row_bytes * L->wq.ne1 + L->wk.row_bytes * L->wk.ne1 +
                     L->wv.row_bytes * L->wv.ne1;
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
            r = find_row(rows, n, "cpu", ops[o], l);
            ck_assert_msg(r, "no row for %s in layer %d", ops[o], l);
            ck_assert_uint_gt(r->bytes, 0);
            total_ns += r->ns;
        }
        /* the prompt in one batch, then a run per decoded token but the
         * last; the weights are read once per run */
        r = find_row(rows, n, "cpu", "qkv", l);
        ck_assert_uint_eq(r->calls, N_GEN);
        ck_assert_uint_ge(r->bytes, N_GEN * w);
    }
    ck_assert_uint_gt(total_ns, 0);
    r = find_row(rows, n, "cpu", "head", -1);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->calls, N_GEN);
    ck_assert_int_eq(rows[n - 1].layer, -1);
    /* fill stops at the room given */
    n = 3;
    ck_assert_int_eq(ks_session_profile(rn.s, rows, &n), KS_OK);
    ck_assert_uint_eq(n, 3);
    ks_session_profile_reset(rn.s);
    ck_assert_int_eq(ks_session_profile(rn.s, NULL, &n), KS_OK);
    ck_assert_uint_eq(n, 0);
    close_run(&rn);
}
END_TEST

/* A device target fills the same table through env->profile, beside the
 * CPU's rows (here the mock, which runs a CPU target inside). */
START_TEST(profile_takes_another_target_kind)
{
    int32_t got[N_GEN];
    ks_profile_row rows[256];
    size_t n = sizeof rows / sizeof rows[0];
    const ks_profile_row *r;
    run rn;

    reset();
    g.profile = true;
    ck_assert_int_eq(open_run(&rn, "cpu:0-1,mock:2-3", 512, KS_KV_F16), KS_OK);
    greedy(rn.s, prompt, N_PROMPT, got, N_GEN);
    ck_assert_int_eq(ks_session_profile(rn.s, rows, &n), KS_OK);
    r = find_row(rows, n, "mock", "attn", 2);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(r->calls, (uint64_t)g.n_ev);
    ck_assert_uint_eq(r->ns, 1000 * r->calls);
    ck_assert_uint_eq(r->bytes, 64 * r->calls);
    ck_assert_ptr_null(find_row(rows, n, "mock", "attn", 3));
    ck_assert_ptr_nonnull(find_row(rows, n, "cpu", "qkv", 0));
    /* rows come by target: every cpu row before the first mock row */
    for (size_t i = 1; i < n; i++)
        ck_assert(!(strcmp(rows[i - 1].target, "mock") == 0 &&
                    strcmp(rows[i].target, "cpu") == 0));
    close_run(&rn);
}
END_TEST

int
main(void)
{
    ks_synth_params p = {
        .arch = "llama", .n_embd = 64, .n_layers = N_LAYERS, .n_head = 4, .n_head_kv = 2,
        .n_ff = 96, .n_vocab = 320, .n_ctx = 256, .wtype = KS_QUANT_Q8_0, .seed = 7,
    };
    Suite *su = suite_create("targets");
    TCase *tc = tcase_create("mock target");
    SRunner *sr;
    int failed;

    if (!mkdtemp(dir))
        abort();
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    if (ks_synth_write(&p, path) != KS_OK) {
        fprintf(stderr, "targets: %s\n", ks_last_error());
        return 1;
    }
    ks_target_register(&mock_kind);
    ks_target_register(&logcpu_kind);
    tcase_add_test(tc, placed_on_the_mock_by_name);
    tcase_add_test(tc, supports_refusal_is_an_error);
    tcase_add_test(tc, overlaps_the_cpu_on_prefill);
    tcase_add_test(tc, lost_device_falls_back_to_the_cpu);
    tcase_add_test(tc, governor_hints_move_layers);
    suite_add_tcase(su, tc);
    tc = tcase_create("profile");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, profile_covers_every_layer_and_op);
    tcase_add_test(tc, profile_takes_another_target_kind);
    suite_add_tcase(su, tc);
    sr = srunner_create(su);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unlink(path);
    rmdir(dir);
    return failed ? 1 : 0;
}
