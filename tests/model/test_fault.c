/* Device faults mid-generation (issue: hardening, item 6). A device lost
 * at a random queue submit, or a fence that times out, must not lose
 * output: the session moves its layers to the CPU, replays the held
 * tokens there, and generates the tokens a CPU-only run gives, saying so
 * once in the stats. Faults come from KESTREL_FAULT (driver/fault.h).
 *
 * Models: stories260K Q8_0 (shared folder; KESTREL_FAULT_RUNS runs, 50 by
 * default) and SmolLM2-135M Q4_1 (model cache; KESTREL_FAULT_RUNS_SMOL,
 * 50 by default; about 2 minutes on lavapipe). Each run puts the fault at
 * a random submit of its session. The validation
 * layer is on; no device skips the test. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/fault.h"
#include "driver/vk.h"
#include "kestrel/kestrel.h"

enum { N_GEN = 12, N_CTX = 128 };

static char stories[1024], smol[1024];
static bool software;  /* the device picked is a software renderer */
static uint64_t rng = 12345;

static uint32_t
rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static ks_model *
load(const char *path, ks_backend be, const char *split, ks_runtime **rt)
{
    ks_runtime_params rp = { .backend = be, .n_threads = 2, .split = split,
                             .no_governor = true };
    ks_model *m = NULL;

    ck_assert_msg(ks_runtime_create(&rp, rt) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_model_load(*rt, path, NULL, &m) == KS_OK, "%s", ks_last_error());
    return m;
}

/* Greedy tokens for |prompt| on a new session of |m|; the session's stats
 * and placement afterwards. */
static void
generate(ks_model *m, uint32_t n_batch, const int32_t *prompt, size_t n_prompt,
         int32_t *out, ks_stats *st, char *placement, size_t cap)
{
    ks_session_params sp = { .n_ctx = N_CTX, .n_batch = n_batch };
    ks_generate_params gp = { .prompt = prompt, .n_prompt = n_prompt, .n_predict = N_GEN,
                              .ignore_eog = true, .out_tokens = out, .out_cap = N_GEN };
    ks_session *s = NULL;

    ck_assert_msg(ks_session_create(m, &sp, &s) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "%s", ks_last_error());
    ck_assert_uint_eq(gp.n_out, N_GEN);
    ck_assert_int_eq(gp.stop, KS_STOP_LENGTH);
    ks_session_stats(s, st);
    snprintf(placement, cap, "%s", ks_session_placement(s));
    ks_session_destroy(s);
}

/* |runs| sessions of |path| placed by |split| (NULL: all on Vulkan), each
 * with fault |point| at a random submit among the first |max_submit|
 * (|every|: that one and every one after); every one must give the
 * CPU-only tokens and record one fallback when |lost|, none otherwise. */
static void
faults(const char *path, const char *split, uint32_t n_batch, const char *point, bool every,
       int runs, uint32_t max_submit, bool lost)
{
    ks_runtime *rt_c, *rt_v;
    ks_model *mc = load(path, KS_BACKEND_CPU, NULL, &rt_c);
    ks_model *mv = load(path, split ? KS_BACKEND_AUTO : KS_BACKEND_VULKAN, split, &rt_v);
    int32_t prompt[16], want[N_GEN], got[N_GEN];
    size_t n_prompt;
    char placement[160];
    ks_stats st;

    ck_assert_int_eq(ks_model_tokenize(mc, "Once upon a time, there was a little", 36, true,
                                       false, prompt, 16, &n_prompt), KS_OK);
    generate(mc, n_batch, prompt, n_prompt, want, &st, placement, sizeof placement);
    for (int r = 0; r < runs; r++) {
        char spec[64];
        uint32_t at = 1 + rnd(max_submit);
        snprintf(spec, sizeof spec, "%s@%u%s", point, at, every ? "+" : "");
        setenv("KESTREL_FAULT", spec, 1);
        ks_fault_reset();
        generate(mv, n_batch, prompt, n_prompt, got, &st, placement, sizeof placement);
        ck_assert_msg(memcmp(got, want, sizeof want) == 0, "%s, %s: tokens differ from the "
                      "CPU's", path, spec);
        ck_assert_msg(st.n_fallbacks == (lost ? 1u : 0u), "%s, %s: %u fallbacks", path, spec,
                      st.n_fallbacks);
        if (lost) {
            ck_assert_ptr_nonnull(strstr(st.fallback, "lost"));
            ck_assert_msg(strncmp(placement, "cpu:0-", 6) == 0 && !strstr(placement, "vulkan"),
                          "placement after the fault: %s", placement);
        } else {
            ck_assert_msg(strstr(placement, "vulkan") != NULL, "placement after a "
                          "recovered timeout: %s", placement);
        }
    }
    unsetenv("KESTREL_FAULT");
    ks_fault_reset();
    /* without a fault the device keeps the layers */
    generate(mv, n_batch, prompt, n_prompt, got, &st, placement, sizeof placement);
    ck_assert_uint_eq(st.n_fallbacks, 0);
    ck_assert_mem_eq(got, want, sizeof want);
    ck_assert_uint_eq(ks_vk_validation_total(), 0);
    ks_model_destroy(mv);
    ks_runtime_destroy(rt_v);
    ks_model_destroy(mc);
    ks_runtime_destroy(rt_c);
    fprintf(stderr, "fault: %s, %s%s%s, %s%s: %d runs gave the CPU's tokens%s\n", path,
            split ? "split " : "vulkan", split ? split : "", n_batch > 1 ? "" : ", batch 1",
            point, every ? " (every wait after)" : "", runs,
            lost ? " after a fallback" : " on the device");
}

static int
env_int(const char *name, int def)
{
    const char *e = getenv(name);
    return e && *e ? atoi(e) : def;
}

START_TEST(stories_device_lost)
{
    int runs = env_int("KESTREL_FAULT_RUNS", 50);

    if (!*stories)
        return;
    /* one prefill submit and N_GEN - 1 decode submits */
    faults(stories, NULL, 512, "vk_submit_lost", false, runs, N_GEN, true);
    /* one timed-out wait: a software device waits a second time and
     * carries on (driver/vk_submit.c); a GPU is declared lost */
    faults(stories, NULL, 512, "vk_fence_timeout", false, runs / 5 + 1, N_GEN, !software);
    /* the second wait times out too: lost everywhere */
    faults(stories, NULL, 512, "vk_fence_timeout", true, runs / 5 + 1, N_GEN, true);
    /* a CPU range, then the device: the prompt in pipelined batches of 2 */
    faults(stories, "cpu:0-2,vulkan:3-4", 2, "vk_submit_lost", false, runs / 5 + 1, N_GEN + 4,
           true);
}
END_TEST

START_TEST(smollm2_device_lost)
{
    if (!*smol)
        return;
    faults(smol, NULL, 512, "vk_submit_lost", false, env_int("KESTREL_FAULT_RUNS_SMOL", 50),
           N_GEN, true);
}
END_TEST

static void
find(char *out, size_t cap, const char *dir, const char *sub, const char *file)
{
    int len;

    out[0] = '\0';
    if (!dir)
        return;
    len = snprintf(out, cap, "%s%s/%s", dir, sub, file);
    if (len < 0 || (size_t)len >= cap || access(out, R_OK) != 0) {
        fprintf(stderr, "fault: %s%s/%s absent, skipped\n", dir, sub, file);
        out[0] = '\0';
    }
}

int
main(void)
{
    const char *home = getenv("HOME"), *mdir = getenv("KESTREL_MODEL_DIR");
    char cache[1024];
    ks_vk_device_info devs[8];
    uint32_t n_dev = 8, pick;
    Suite *su = suite_create("fault");
    TCase *tc = tcase_create("device lost");
    SRunner *sr;
    int failed;

    if (ks_vk_devices_list(devs, &n_dev) != KS_OK || n_dev == 0 ||
        ks_vk_device_choose(devs, n_dev, -1, &pick) != KS_OK) {
        fprintf(stderr, "fault: no Vulkan device (%s), skipped\n", ks_last_error());
        return 77;
    }
    software = devs[pick].type == KS_VK_TYPE_CPU;
    find(stories, sizeof stories, getenv("KESTREL_SHARED_DIR"), "/models/stories260K",
         "stories260K-Q8_0.gguf");
    snprintf(cache, sizeof cache, "%s/.cache/kestrel/models", home ? home : "");
    find(smol, sizeof smol, mdir ? mdir : cache, "", "SmolLM2-135M-Instruct.Q4_1.gguf");
    if (!*stories && !*smol) {
        fprintf(stderr, "fault: no model, skipped\n");
        return 77;
    }
    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, stories_device_lost);
    tcase_add_test(tc, smollm2_device_lost);
    suite_add_tcase(su, tc);
    sr = srunner_create(su);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
