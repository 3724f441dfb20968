/* Mixture-of-experts models on Vulkan (lavapipe in CI) against the CPU
 * backend: synthetic qwen3moe, olmoe and qwen2moe files (runtime/synth.c)
 * in several weight types, each with 2 layers and 8 experts of which 3
 * run per token (qwen2moe adds its gated shared expert); qwen2moe Q8_0
 * also split, layer 0 on the CPU and layer 1 on the device. The routing,
 * the experts and the weighted sum run on the device (shaders/moe.comp,
 * the exact kernel's expert variant) in exact mode, so the greedy
 * tokens of a prompt batch and N_GEN decode steps must equal the CPU's,
 * and at every step the logits must be the CPU's bit for bit, which a
 * wrong expert, weight or normalisation fails. The session must run on
 * the device (no fallback to the CPU) and the Khronos validation layer
 * must stay silent. Skips (77) without a Vulkan device. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/vk.h"
#include "kestrel/kestrel.h"
#include "runtime/model_priv.h"
#include "runtime/synth.h"

enum { N_GEN = 12, N_PROMPT = 9 };

typedef struct moe_case {
    const char *arch;
    ks_qtype    type;
    uint32_t    n_embd;
} moe_case;

static const moe_case cases[] = {
    { "qwen3moe", KS_QUANT_Q8_0, 64 },
    { "olmoe", KS_QUANT_Q4_0, 64 },
    { "qwen2moe", KS_QUANT_Q8_0, 64 },
    { "qwen3moe", KS_QUANT_Q4_K, 256 },
    { "qwen2moe", KS_QUANT_F16, 64 },
    { "qwen3moe", KS_QUANT_Q4_1, 64 },
    { "olmoe", KS_QUANT_Q6_K, 256 },
    { "qwen2moe", KS_QUANT_IQ4_NL, 64 },
};

static ks_model *
load(const char *path, ks_backend be, const char *split, ks_runtime **rt)
{
    ks_runtime_params rp = { .backend = be, .n_threads = 2, .split = split };
    ks_model *m = NULL;

    ck_assert_msg(ks_runtime_create(&rp, rt) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_model_load(*rt, path, NULL, &m) == KS_OK, "%s", ks_last_error());
    return m;
}

/* Greedy decoding of |prompt| in batches of n_batch, then N_GEN - 1 single
 * tokens; logits [N_GEN][n_vocab]. */
static void
greedy(ks_model *m, const int32_t *prompt, bool want_device, int32_t *ids, float *logits,
       uint32_t n_vocab, const char *what, uint32_t n_batch)
{
    ks_session_params sp = { .n_ctx = 128, .n_batch = n_batch };
    ks_session *s = NULL;
    ks_stats st;

    ck_assert_msg(ks_session_create(m, &sp, &s) == KS_OK, "%s: %s", what, ks_last_error());
    if (want_device)
        ck_assert_msg(strstr(ks_session_placement(s), "vulkan") != NULL, "%s: placed as %s",
                      what, ks_session_placement(s));
    ck_assert_msg(ks_session_eval(s, prompt, N_PROMPT, logits) == KS_OK, "%s: %s", what,
                  ks_last_error());
    for (int i = 0; i < N_GEN; i++) {
        const float *lg = logits + (size_t)i * n_vocab;
        int32_t best = 0;
        for (uint32_t v = 1; v < n_vocab; v++)
            if (lg[v] > lg[best])
                best = (int32_t)v;
        ids[i] = best;
        if (i + 1 < N_GEN)
            ck_assert_msg(ks_session_eval(s, &best, 1, logits + (size_t)(i + 1) * n_vocab) ==
                          KS_OK, "%s: %s", what, ks_last_error());
    }
    ks_session_stats(s, &st);
    if (want_device)
        ck_assert_msg(st.n_fallbacks == 0, "%s: the device gave up: %s", what, st.fallback);
    ks_session_destroy(s);
}

START_TEST(moe_matches_cpu)
{
    const moe_case *c = &cases[_i];
    char path[] = "/tmp/kestrel-vk-moe-XXXXXX";
    ks_synth_params p = {
        .arch = c->arch, .n_embd = c->n_embd, .n_layers = 2, .n_head = 4, .n_head_kv = 2,
        .n_ff = 128, .n_vocab = 320, .wtype = c->type, .seed = 5 + (uint64_t)_i,
        .n_expert = 8, .n_expert_used = 3, .n_ff_exp = 64, .n_ff_shexp = 96,
    };
    ks_runtime *rt_c = NULL, *rt_v = NULL;
    ks_model *mc, *mv;
    int32_t prompt[N_PROMPT], want[N_GEN], got[N_GEN];
    float *lc, *lv;
    char what[96];
    int fd = mkstemp(path);

    ck_assert(fd >= 0);
    close(fd);
    ck_assert_msg(ks_synth_write(&p, path) == KS_OK, "%s", ks_last_error());
    mc = load(path, KS_BACKEND_CPU, NULL, &rt_c);
    mv = load(path, KS_BACKEND_VULKAN, NULL, &rt_v);
    uint32_t n_vocab = mc->hp.n_vocab;
    lc = malloc((size_t)N_GEN * n_vocab * sizeof(float));
    lv = malloc((size_t)N_GEN * n_vocab * sizeof(float));
    ck_assert(lc && lv);
    for (int i = 0; i < N_PROMPT; i++)
        prompt[i] = (int32_t)(7 + 31 * i) % (int32_t)n_vocab;
    snprintf(what, sizeof what, "%s %s", c->arch, ks_qtype_name(c->type));
    greedy(mc, prompt, false, want, lc, n_vocab, what, 16);
    greedy(mv, prompt, true, got, lv, n_vocab, what, 16);
    for (int i = 0; i < N_GEN; i++) {
        ck_assert_msg(got[i] == want[i], "%s: token %d is %d on Vulkan, %d on the CPU", what,
                      i, got[i], want[i]);
        for (uint32_t v = 0; v < n_vocab; v++) {
            float a = lv[(size_t)i * n_vocab + v], b = lc[(size_t)i * n_vocab + v];
            ck_assert_msg(memcmp(&a, &b, sizeof a) == 0, "%s: step %d logit %u is %a on "
                          "Vulkan, %a on the CPU", what, i, v, (double)a, (double)b);
        }
    }
    fprintf(stderr, "vk-moe-model: %s: %d tokens and their logits identical to the CPU's\n",
            what, N_GEN);
    if (_i == 2) {
        /* layer 0 on the CPU, layer 1 and the head on the device, the
         * prompt in pipelined batches of 2, against the CPU's batches of 2 */
        ks_runtime *rt_s = NULL;
        ks_model *ms = load(path, KS_BACKEND_AUTO, "cpu:0-0,vulkan:1-1", &rt_s);
        greedy(mc, prompt, false, want, lc, n_vocab, what, 2);
        greedy(ms, prompt, true, got, lv, n_vocab, what, 2);
        for (int i = 0; i < N_GEN; i++)
            ck_assert_msg(got[i] == want[i] &&
                          memcmp(lv + (size_t)i * n_vocab, lc + (size_t)i * n_vocab,
                                 n_vocab * sizeof(float)) == 0,
                          "%s split: step %d differs from the CPU (token %d, the CPU's %d)",
                          what, i, got[i], want[i]);
        fprintf(stderr, "vk-moe-model: %s split cpu:0-0,vulkan:1-1: identical\n", what);
        ks_model_destroy(ms);
        ks_runtime_destroy(rt_s);
    }
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
    ks_model_destroy(mv);
    ks_model_destroy(mc);
    ks_runtime_destroy(rt_v);
    ks_runtime_destroy(rt_c);
    unlink(path);
    free(lc);
    free(lv);
}
END_TEST

int
main(void)
{
    ks_vk_device_info dev;
    uint32_t n_dev = 1;
    Suite *s;
    TCase *tc;
    SRunner *sr;
    int failed;

    unsetenv("KESTREL_VK_FAST");
    if (ks_vk_devices_list(&dev, &n_dev) != KS_OK || n_dev == 0) {
        fprintf(stderr, "vk-moe-model: no Vulkan device (%s), skipped\n", ks_last_error());
        return 77;
    }
    s = suite_create("vk-moe-model");
    tc = tcase_create("greedy");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, moe_matches_cpu, 0, (int)(sizeof cases / sizeof cases[0]));
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
