/* Speculative decoding with the target on Vulkan (lavapipe in CI, with
 * the Khronos validation layer): the target's layers on the device and
 * its output head on the CPU (the CPU target gives every row's logits),
 * the draft model on the CPU. Greedy speculation, with the draft model
 * and with prompt lookup, gives the tokens plain greedy decoding gives
 * on the same placement. With the head on the device too, speculation
 * is refused (KS_ERR_UNSUPPORTED, saying why): the Vulkan target cannot
 * give the logits of every token of a run yet. Skips (77) without a
 * Vulkan device. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "runtime/synth.h"
#if defined(KS_HAVE_VULKAN)
#include "driver/vk.h"
#endif

enum { N_VOCAB = 300, N_CTX = 128, N = 40 };

static char dir[] = "/tmp/kestrel-test-vk-spec-XXXXXX";
static char tpath[256], dpath[256];

static void
write_model(const char *path, uint32_t n_layers)
{
    ks_synth_params p = {
        .arch = "qwen2", .n_embd = 64, .n_layers = n_layers, .n_head = 4, .n_head_kv = 2,
        .n_ff = 96, .n_vocab = N_VOCAB, .n_ctx = 256, .wtype = KS_QUANT_Q8_0, .seed = 99,
    };

    if (ks_synth_write(&p, path) != KS_OK) {
        fprintf(stderr, "test_vk_spec: %s\n", ks_last_error());
        abort();
    }
}

static ks_model *
load(ks_runtime **rt, ks_backend b, const char *split, const char *path)
{
    ks_runtime_params rp = { .backend = b, .n_threads = 1, .split = split,
                             .no_governor = true };
    ks_model *m = NULL;

    ck_assert_msg(ks_runtime_create(&rp, rt) == KS_OK, "%s", ks_last_error());
    ck_assert_msg(ks_model_load(*rt, path, NULL, &m) == KS_OK, "%s", ks_last_error());
    return m;
}

static const int32_t prompt[] = { 3, 17, 250, 99, 4, 128, 17, 250, 3, 17, 250, 99 };
enum { N_PROMPT = sizeof prompt / sizeof prompt[0] };

static ks_status
gen(ks_model *m, ks_spec_mode spec, ks_model *draft, uint32_t k, int32_t *out, ks_stats *st)
{
    ks_session_params sp = { .n_ctx = N_CTX };
    ks_session *s = NULL, *ds = NULL;
    ks_generate_params gp = { .prompt = prompt, .n_prompt = N_PROMPT, .n_predict = N,
                              .ignore_eog = true, .out_tokens = out, .out_cap = N,
                              .spec = spec, .draft_min = k, .draft_max = k,
                              .draft_p_min = -1.0f };
    ks_status r;

    ck_assert_msg(ks_session_create(m, &sp, &s) == KS_OK, "%s", ks_last_error());
    /* every target here runs its layers on the device */
    ck_assert_msg(strncmp(ks_session_placement(s), "vulkan:0-", 9) == 0, "placement %s",
                  ks_session_placement(s));
    if (draft)
        ck_assert_int_eq(ks_session_create(draft, &sp, &ds), KS_OK);
    gp.draft = ds;
    r = ks_session_generate(s, &gp);
    if (r == KS_OK)
        ck_assert_uint_eq(gp.n_out, N);
    ks_session_stats(s, st);
    ks_session_destroy(ds);
    ks_session_destroy(s);
    return r;
}

START_TEST(greedy_identity_on_a_split)
{
    ks_runtime *vrt = NULL, *crt = NULL;
    ks_model *t = load(&vrt, KS_BACKEND_VULKAN, "vulkan:0-1,cpu:2-2", tpath);
    ks_model *d = load(&crt, KS_BACKEND_CPU, NULL, dpath);
    const uint32_t ks[] = { 0, 4 };
    int32_t want[N], got[N];
    ks_stats st;

    ck_assert_int_eq(gen(t, KS_SPEC_OFF, NULL, 0, want, &st), KS_OK);
    for (int i = 0; i < 2; i++) {
        ck_assert_msg(gen(t, KS_SPEC_DRAFT, d, ks[i], got, &st) == KS_OK, "%s",
                      ks_last_error());
        ck_assert_msg(memcmp(want, got, sizeof want) == 0, "draft, k %u: tokens differ", ks[i]);
        ck_assert_uint_gt(st.n_verify, 0);
        fprintf(stderr, "split, draft k %u: drafted %u (lookup %u) accepted %u verify %u\n",
                ks[i], st.n_drafted, st.n_lookup, st.n_accepted, st.n_verify);
        ck_assert_int_eq(gen(t, KS_SPEC_LOOKUP, NULL, ks[i], got, &st), KS_OK);
        ck_assert_msg(memcmp(want, got, sizeof want) == 0, "lookup, k %u: tokens differ", ks[i]);
    }
    ks_model_destroy(d);
    ks_model_destroy(t);
    ks_runtime_destroy(crt);
    ks_runtime_destroy(vrt);
}
END_TEST

START_TEST(head_on_the_device_is_refused)
{
    ks_runtime *vrt = NULL;
    ks_model *t = load(&vrt, KS_BACKEND_VULKAN, "vulkan:0-2", tpath);
    int32_t got[N];
    ks_stats st;

    ck_assert_int_eq(gen(t, KS_SPEC_LOOKUP, NULL, 0, got, &st), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "logits of every"));
    ks_model_destroy(t);
    ks_runtime_destroy(vrt);
}
END_TEST

int
main(void)
{
    SRunner *sr;
    Suite *s;
    TCase *tc;
    uint32_t n = 0;
    int failed;

    setenv("KESTREL_VALIDATE", "1", 1);
#if !defined(KS_HAVE_VULKAN) || !defined(KS_HAVE_GLSLANG)
    (void)n;
    printf("skip: Kestrel was built without Vulkan or glslang\n");
    return 77;
#else
    if (ks_vk_devices_list(NULL, &n) != KS_OK || n == 0) {
        printf("skip: no Vulkan device: %s\n", ks_last_error());
        return 77;
    }
#endif
    if (!mkdtemp(dir))
        return 1;
    snprintf(tpath, sizeof tpath, "%s/target.gguf", dir);
    snprintf(dpath, sizeof dpath, "%s/draft.gguf", dir);
    write_model(tpath, 3);
    write_model(dpath, 1);
    s = suite_create("vk_spec");
    tc = tcase_create("split");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, greedy_identity_on_a_split);
    tcase_add_test(tc, head_on_the_device_is_refused);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unlink(tpath);
    unlink(dpath);
    rmdir(dir);
    return failed ? 1 : 0;
}
