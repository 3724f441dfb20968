/* The public API's NULL-argument rule (include/kestrel/status.h): every
 * KS_API function is called with each of its pointer arguments NULL in
 * turn, the others valid, on a small synthetic model the test writes
 * itself. Status-returning functions must give KS_ERR_INVALID_ARG with a
 * message naming the function and the argument, value-returning ones a
 * neutral value, destroy functions nothing; optional arguments must work.
 *
 * Each probe runs in its own forked child, so a crash fails that probe
 * alone. The table names the function and argument of every probe;
 * tests/api/check_api.py compares it with the headers, so a new API
 * function or pointer argument without a probe fails the 'api-symbols'
 * test. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/devices.h"
#include "kestrel/inspect.h"
#include "kestrel/kestrel.h"
#include "kestrel/quality.h"
#include "kestrel/quantize.h"
#include "runtime/synth.h"

static char dir[] = "/tmp/kestrel-test-api-XXXXXX";
static char model_path[256];
static char quant_path[256];

/* What a probe works on: everything valid, then one argument NULL. */
typedef struct fixture {
    ks_runtime *rt;
    ks_model   *m;
    ks_session *s;
} fixture;

static fixture f;

static void
open_all(void)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 1,
                             .no_governor = true };
    ks_session_params sp = { .n_ctx = 32, .n_batch = 8 };

    ck_assert_int_eq(ks_runtime_create(&rp, &f.rt), KS_OK);
    ck_assert_msg(ks_model_load(f.rt, model_path, NULL, &f.m) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_msg(ks_session_create(f.m, &sp, &f.s) == KS_OK, "%s",
                  ks_last_error());
}

static void
close_all(void)
{
    ks_session_destroy(f.s);
    ks_model_destroy(f.m);
    ks_runtime_destroy(f.rt);
    memset(&f, 0, sizeof f);
}

/* The documented result for a NULL argument of a status function. */
static void
expect_null_arg(ks_status st, const char *fn, const char *arg)
{
    char want[160];

    snprintf(want, sizeof want, "%s: argument '%s' is NULL", fn, arg);
    ck_assert_int_eq(st, KS_ERR_INVALID_ARG);
    ck_assert_msg(strstr(ks_last_error(), want), "expected '%s' in '%s'",
                  want, ks_last_error());
}

static const int32_t toks[] = { 1, 270, 5, 300 };
static const ks_chat_message conv[] = { { "user", "hello" } };
static void *const sentinel = (void *)&f;

/* ---- runtimes ---- */

static void
runtime_create_p(void)
{
    ks_runtime *rt = NULL;

    ck_assert_int_eq(ks_runtime_create(NULL, &rt), KS_OK);
    ck_assert_ptr_nonnull(rt);
    ck_assert_str_eq(ks_runtime_backend_name(rt), "auto");
    ks_runtime_destroy(rt);
}

static void
runtime_create_out(void)
{
    ks_runtime_params rp = { 0 };

    expect_null_arg(ks_runtime_create(&rp, NULL), "ks_runtime_create", "out");
}

static void
runtime_destroy_rt(void)
{
    ks_runtime_destroy(NULL);
}

static void
runtime_backend_name_rt(void)
{
    ck_assert_str_eq(ks_runtime_backend_name(NULL), "");
}

/* ---- models ---- */

static void
model_load_rt(void)
{
    ks_model *m = sentinel;

    expect_null_arg(ks_model_load(NULL, model_path, NULL, &m),
                    "ks_model_load", "rt");
    ck_assert_ptr_null(m);
}

static void
model_load_path(void)
{
    ks_model *m = sentinel;

    open_all();
    expect_null_arg(ks_model_load(f.rt, NULL, NULL, &m), "ks_model_load",
                    "path");
    ck_assert_ptr_null(m);
    close_all();
}

static void
model_load_p(void)
{
    ks_model *m = NULL;

    open_all();
    ck_assert_int_eq(ks_model_load(f.rt, model_path, NULL, &m), KS_OK);
    ck_assert_ptr_nonnull(m);
    ks_model_destroy(m);
    close_all();
}

static void
model_load_out(void)
{
    open_all();
    expect_null_arg(ks_model_load(f.rt, model_path, NULL, NULL),
                    "ks_model_load", "out");
    close_all();
}

static void
model_destroy_m(void)
{
    ks_model_destroy(NULL);
}

static void
model_describe_m(void)
{
    ks_model_desc d;

    memset(&d, 0xa5, sizeof d);
    ks_model_describe(NULL, &d);
    ck_assert_ptr_null(d.arch);
    ck_assert_ptr_null(d.name);
    ck_assert_uint_eq(d.n_layers, 0);
    ck_assert_uint_eq(d.n_vocab, 0);
    ck_assert_uint_eq(d.n_params, 0);
}

static void
model_describe_out(void)
{
    open_all();
    ks_model_describe(f.m, NULL);
    close_all();
}

/* The expert-placement readers (a dense fixture model: no budget): a
 * NULL model zeroes the stats and holds no resident experts; a NULL out
 * is a no-op; a NULL ids asks only for the count. */
static void
model_expert_stats_m(void)
{
    ks_expert_stats st;

    memset(&st, 0xa5, sizeof st);
    ks_model_expert_stats(NULL, &st);
    ck_assert_uint_eq(st.n_moves, 0);
    ck_assert_uint_eq(st.n_fills, 0);
}

static void
model_expert_stats_out(void)
{
    open_all();
    ks_model_expert_stats(f.m, NULL);
    close_all();
}

static void
model_expert_resident_m(void)
{
    uint32_t ids[4] = { 7, 7, 7, 7 };

    ck_assert_uint_eq(ks_model_expert_resident(NULL, 0, ids, 4), 0);
    ck_assert_uint_eq(ids[0], 7);
}

static void
model_expert_resident_ids(void)
{
    open_all();
    ck_assert_uint_eq(ks_model_expert_resident(f.m, 0, NULL, 4), 0);
    close_all();
}

static void
model_tokenize_m(void)
{
    int32_t out[16];
    size_t n = 99;

    expect_null_arg(ks_model_tokenize(NULL, "hi", 2, true, false, out, 16, &n),
                    "ks_model_tokenize", "m");
    ck_assert_uint_eq(n, 0);
}

static void
model_tokenize_text(void)
{
    int32_t out[16];
    size_t n = 99;

    open_all();
    expect_null_arg(ks_model_tokenize(f.m, NULL, 5, true, false, out, 16, &n),
                    "ks_model_tokenize", "text");
    ck_assert_uint_eq(n, 0);
    /* NULL with length 0 is the empty text */
    ck_assert_int_eq(ks_model_tokenize(f.m, NULL, 0, false, false, out, 16, &n),
                     KS_OK);
    ck_assert_uint_eq(n, 0);
    close_all();
}

static void
model_tokenize_out(void)
{
    int32_t out[64];
    size_t n_count = 0, n = 0;

    open_all();
    ck_assert_int_eq(ks_model_tokenize(f.m, "hello world", 11, true, false,
                                       NULL, 64, &n_count), KS_OK);
    ck_assert_uint_gt(n_count, 0);
    ck_assert_int_eq(ks_model_tokenize(f.m, "hello world", 11, true, false,
                                       out, 64, &n), KS_OK);
    ck_assert_uint_eq(n, n_count);
    close_all();
}

static void
model_tokenize_n_out(void)
{
    int32_t out[16];

    open_all();
    expect_null_arg(ks_model_tokenize(f.m, "hi", 2, true, false, out, 16, NULL),
                    "ks_model_tokenize", "n_out");
    close_all();
}

static void
model_token_piece_m(void)
{
    char buf[16];

    ck_assert_uint_eq(ks_model_token_piece(NULL, 270, buf, sizeof buf), 0);
}

static void
model_token_piece_buf(void)
{
    char buf[64];
    size_t n;

    open_all();
    n = ks_model_token_piece(f.m, 270, buf, sizeof buf);
    ck_assert_uint_gt(n, 0);
    /* NULL asks only for the length, whatever cap says */
    ck_assert_uint_eq(ks_model_token_piece(f.m, 270, NULL, 64), n);
    close_all();
}

static void
model_detokenize_m(void)
{
    char buf[64];
    size_t n = 99;

    expect_null_arg(ks_model_detokenize(NULL, toks, 4, buf, sizeof buf, &n),
                    "ks_model_detokenize", "m");
    ck_assert_uint_eq(n, 0);
}

static void
model_detokenize_ids(void)
{
    char buf[64];
    size_t n = 99;

    open_all();
    expect_null_arg(ks_model_detokenize(f.m, NULL, 4, buf, sizeof buf, &n),
                    "ks_model_detokenize", "ids");
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(ks_model_detokenize(f.m, NULL, 0, buf, sizeof buf, &n),
                     KS_OK);
    ck_assert_uint_eq(n, 0);
    close_all();
}

static void
model_detokenize_buf(void)
{
    char buf[256];
    size_t n_count = 0, n = 0;

    open_all();
    ck_assert_int_eq(ks_model_detokenize(f.m, toks, 4, NULL, 256, &n_count),
                     KS_OK);
    ck_assert_uint_gt(n_count, 0);
    ck_assert_int_eq(ks_model_detokenize(f.m, toks, 4, buf, sizeof buf, &n),
                     KS_OK);
    ck_assert_uint_eq(n, n_count);
    close_all();
}

static void
model_detokenize_n_out(void)
{
    char buf[64];

    open_all();
    expect_null_arg(ks_model_detokenize(f.m, toks, 4, buf, sizeof buf, NULL),
                    "ks_model_detokenize", "n_out");
    close_all();
}

static void
model_token_is_eog_m(void)
{
    ck_assert(!ks_model_token_is_eog(NULL, 2));
}

static void
model_chat_format_m(void)
{
    char buf[256];
    size_t n = 99;

    expect_null_arg(ks_model_chat_format(NULL, conv, 1, true, buf, sizeof buf,
                                         &n), "ks_model_chat_format", "m");
    ck_assert_uint_eq(n, 0);
}

static void
model_chat_format_msgs(void)
{
    char buf[256];
    size_t n = 99;

    open_all();
    expect_null_arg(ks_model_chat_format(f.m, NULL, 1, true, buf, sizeof buf,
                                         &n), "ks_model_chat_format", "msgs");
    ck_assert_uint_eq(n, 0);
    close_all();
}

static void
model_chat_format_role(void)
{
    const ks_chat_message bad[] = { { "user", "hi" }, { NULL, "there" } };
    char buf[256];
    size_t n = 99;

    open_all();
    expect_null_arg(ks_model_chat_format(f.m, bad, 2, true, buf, sizeof buf,
                                         &n), "ks_model_chat_format",
                    "msgs[1].role");
    close_all();
}

static void
model_chat_format_content(void)
{
    const ks_chat_message bad[] = { { "user", NULL } };
    char buf[256];
    size_t n = 99;

    open_all();
    expect_null_arg(ks_model_chat_format(f.m, bad, 1, true, buf, sizeof buf,
                                         &n), "ks_model_chat_format",
                    "msgs[0].content");
    close_all();
}

static void
model_chat_format_buf(void)
{
    char buf[512];
    size_t n_count = 0, n = 0;

    open_all();
    ck_assert_int_eq(ks_model_chat_format(f.m, conv, 1, true, NULL, 512,
                                          &n_count), KS_OK);
    ck_assert_uint_gt(n_count, 0);
    ck_assert_int_eq(ks_model_chat_format(f.m, conv, 1, true, buf, sizeof buf,
                                          &n), KS_OK);
    ck_assert_uint_eq(n, n_count);
    close_all();
}

static void
chat_tokenize_null(const char *arg)
{
    const ks_chat_message bad[] = { { "user", NULL } };
    int32_t ids[256];
    size_t n = 99, n_count = 0;

    open_all();
    if (strcmp(arg, "m") == 0)
        expect_null_arg(ks_model_chat_tokenize(NULL, conv, 1, true, ids, 256, &n),
                        "ks_model_chat_tokenize", "m");
    else if (strcmp(arg, "msgs") == 0)
        expect_null_arg(ks_model_chat_tokenize(f.m, NULL, 1, true, ids, 256, &n),
                        "ks_model_chat_tokenize", "msgs");
    else if (strcmp(arg, "msgs[0].content") == 0)
        expect_null_arg(ks_model_chat_tokenize(f.m, bad, 1, true, ids, 256, &n),
                        "ks_model_chat_tokenize", "msgs[0].content");
    else if (strcmp(arg, "n_out") == 0)
        expect_null_arg(ks_model_chat_tokenize(f.m, conv, 1, true, ids, 256, NULL),
                        "ks_model_chat_tokenize", "n_out");
    if (strncmp(arg, "msgs[", 5) == 0 || strcmp(arg, "n_out") == 0 || strcmp(arg, "m") == 0 ||
        strcmp(arg, "msgs") == 0) {
        if (strcmp(arg, "n_out") != 0)
            ck_assert_uint_eq(n, 0);
    } else {  /* out: count only */
        ck_assert_int_eq(ks_model_chat_tokenize(f.m, conv, 1, true, NULL, 0, &n_count), KS_OK);
        ck_assert_uint_gt(n_count, 0);
        ck_assert_int_eq(ks_model_chat_tokenize(f.m, conv, 1, true, ids, 256, &n), KS_OK);
        ck_assert_uint_eq(n, n_count);
    }
    close_all();
}

static void chat_tokenize_m(void) { chat_tokenize_null("m"); }
static void chat_tokenize_msgs(void) { chat_tokenize_null("msgs"); }
static void chat_tokenize_content(void) { chat_tokenize_null("msgs[0].content"); }
static void chat_tokenize_out(void) { chat_tokenize_null("out"); }
static void chat_tokenize_n_out(void) { chat_tokenize_null("n_out"); }

static void
model_chat_format_n_out(void)
{
    char buf[256];

    open_all();
    expect_null_arg(ks_model_chat_format(f.m, conv, 1, true, buf, sizeof buf,
                                         NULL), "ks_model_chat_format",
                    "n_out");
    close_all();
}

/* ---- sessions ---- */

static void
session_create_m(void)
{
    ks_session *s = sentinel;

    expect_null_arg(ks_session_create(NULL, NULL, &s), "ks_session_create",
                    "m");
    ck_assert_ptr_null(s);
}

static void
session_create_p(void)
{
    ks_session *s = NULL;

    open_all();
    ck_assert_int_eq(ks_session_create(f.m, NULL, &s), KS_OK);
    ck_assert_uint_gt(ks_session_n_ctx(s), 0);
    ks_session_destroy(s);
    close_all();
}

static void
session_create_out(void)
{
    open_all();
    expect_null_arg(ks_session_create(f.m, NULL, NULL), "ks_session_create",
                    "out");
    close_all();
}

static void
session_destroy_s(void)
{
    ks_session_destroy(NULL);
}

static void
session_n_past_s(void)
{
    ck_assert_uint_eq(ks_session_n_past(NULL), 0);
}

static void
session_n_ctx_s(void)
{
    ck_assert_uint_eq(ks_session_n_ctx(NULL), 0);
}

static void
session_truncate_s(void)
{
    expect_null_arg(ks_session_truncate(NULL, 0), "ks_session_truncate", "s");
}

static void
session_eval_s(void)
{
    expect_null_arg(ks_session_eval(NULL, toks, 4, NULL), "ks_session_eval",
                    "s");
}

static void
session_eval_tokens(void)
{
    open_all();
    expect_null_arg(ks_session_eval(f.s, NULL, 4, NULL), "ks_session_eval",
                    "tokens");
    ck_assert_uint_eq(ks_session_n_past(f.s), 0);
    close_all();
}

static void
session_eval_logits(void)
{
    open_all();
    ck_assert_int_eq(ks_session_eval(f.s, toks, 4, NULL), KS_OK);
    ck_assert_uint_eq(ks_session_n_past(f.s), 4);
    close_all();
}

static void
session_eval_all_s(void)
{
    float l[1];

    expect_null_arg(ks_session_eval_all(NULL, toks, 4, l), "ks_session_eval_all", "s");
    ck_assert_ptr_nonnull(ks_session_eval_all_unsupported(NULL));
}

static void
session_eval_all_tokens(void)
{
    float l[1];

    open_all();
    expect_null_arg(ks_session_eval_all(f.s, NULL, 4, l), "ks_session_eval_all", "tokens");
    ck_assert_uint_eq(ks_session_n_past(f.s), 0);
    close_all();
}

static void
session_eval_all_logits(void)
{
    open_all();
    expect_null_arg(ks_session_eval_all(f.s, toks, 4, NULL), "ks_session_eval_all",
                    "logits");
    ck_assert_uint_eq(ks_session_n_past(f.s), 0);
    close_all();
}

static void
spec_names(void)
{
    ks_spec_mode m = KS_SPEC_OFF;

    ck_assert_str_eq(ks_spec_name(KS_SPEC_LOOKUP), "lookup");
    ck_assert(ks_spec_parse("self", &m) && m == KS_SPEC_SELF);
    ck_assert_str_eq(ks_spec_name((ks_spec_mode)99), "unknown");
    ck_assert(!ks_spec_parse(NULL, &m));
    ck_assert(!ks_spec_parse("draft", NULL));
    ck_assert(ks_spec_parse("draft", &m) && m == KS_SPEC_DRAFT);
}

static void
json_schema_check_schema(void)
{
    ck_assert_int_eq(ks_json_schema_check(NULL), KS_ERR_INVALID_ARG);
    ck_assert(strstr(ks_last_error(), "ks_json_schema_check"));
}

static void
stop_name_none(void)
{
    ck_assert_str_eq(ks_stop_name(KS_STOP_EOG), "eog");
    ck_assert_str_eq(ks_stop_name((ks_stop)99), "unknown");
}

static void
session_generate_s(void)
{
    ks_generate_params gp = { .prompt = toks, .n_prompt = 4, .n_predict = 2,
                              .n_out = 7, .stop = KS_STOP_ERROR };

    expect_null_arg(ks_session_generate(NULL, &gp), "ks_session_generate",
                    "s");
    ck_assert_uint_eq(gp.n_out, 0);
    ck_assert_int_eq(gp.stop, KS_STOP_NONE);
}

static void
session_generate_p(void)
{
    open_all();
    expect_null_arg(ks_session_generate(f.s, NULL), "ks_session_generate",
                    "p");
    close_all();
}

static void
session_generate_prompt(void)
{
    ks_generate_params gp = { .prompt = NULL, .n_prompt = 4, .n_predict = 2 };

    open_all();
    expect_null_arg(ks_session_generate(f.s, &gp), "ks_session_generate",
                    "p->prompt");
    ck_assert_uint_eq(ks_session_n_past(f.s), 0);
    close_all();
}

static void
session_generate_optional(void)
{
    /* on_token, cancel and out_tokens are optional */
    ks_generate_params gp = { .prompt = toks, .n_prompt = 4, .n_predict = 2,
                              .ignore_eog = true, .out_cap = 8 };

    open_all();
    ck_assert_msg(ks_session_generate(f.s, &gp) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_uint_eq(gp.n_out, 2);
    ck_assert_int_eq(gp.stop, KS_STOP_LENGTH);
    close_all();
}

static void
session_stats_s(void)
{
    ks_stats st;

    memset(&st, 0xa5, sizeof st);
    ks_session_stats(NULL, &st);
    ck_assert_uint_eq(st.n_gen, 0);
    ck_assert_uint_eq(st.kv_bytes, 0);
    ck_assert(!st.governed);
}

static void
session_stats_out(void)
{
    open_all();
    ks_session_stats(f.s, NULL);
    close_all();
}

static void
session_profile_s(void)
{
    size_t n = 5;

    expect_null_arg(ks_session_profile(NULL, NULL, &n), "ks_session_profile", "s");
    ks_session_profile_reset(NULL);
}

static void
session_profile_n(void)
{
    open_all();
    expect_null_arg(ks_session_profile(f.s, NULL, NULL), "ks_session_profile", "n");
    close_all();
}

static void
session_profile_rows(void)
{
    size_t n = 5;

    /* rows NULL counts; a session made without profile has none */
    open_all();
    ck_assert_int_eq(ks_session_profile(f.s, NULL, &n), KS_OK);
    ck_assert_uint_eq(n, 0);
    close_all();
}

static void
session_backend_name_s(void)
{
    ck_assert_str_eq(ks_session_backend_name(NULL), "");
}

static void
session_placement_s(void)
{
    ck_assert_str_eq(ks_session_placement(NULL), "");
}

static void
thermal_headroom_s(void)
{
    ck_assert(isnan(ks_thermal_headroom(NULL, 10.0)));
    ck_assert(isnan(ks_thermal_forecast_c(NULL, 10.0)));
}

static void
headroom_cb(void *user, double headroom)
{
    (void)user;
    (void)headroom;
}

static void
thermal_headroom_notify_s(void)
{
    expect_null_arg(ks_thermal_headroom_notify(NULL, 0.8, 10.0, headroom_cb,
                                               NULL),
                    "ks_thermal_headroom_notify", "s");
}

static void
thermal_headroom_notify_user(void)
{
    /* |user| is the caller's and may be NULL; an ungoverned session has
     * no headroom; a threshold outside 0..1 is refused */
    open_all();
    ck_assert_int_eq(ks_thermal_headroom_notify(f.s, 0.8, 10.0, headroom_cb,
                                                NULL), KS_OK);
    ck_assert(isnan(ks_thermal_headroom(f.s, 10.0)));
    ck_assert_int_eq(ks_thermal_headroom_notify(f.s, 1.5, 10.0, headroom_cb,
                                                NULL), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "threshold 1.5"));
    close_all();
}

/* ---- status, devices, files ---- */

static void
last_error_none(void)
{
    ks_status_str(KS_OK);
    ck_assert_ptr_nonnull(ks_last_error());
}

static void
status_str_none(void)
{
    ck_assert_str_eq(ks_status_str(KS_ERR_INVALID_ARG), "invalid argument");
    ck_assert_ptr_nonnull(ks_status_str((ks_status)999));
}

static void
log_set_level_none(void)
{
    ks_log_set_level(KS_LOG_WARN);
}

static void
devices_print_out(void)
{
    expect_null_arg(ks_devices_print(NULL, KS_DEVICES_QUICK),
                    "ks_devices_print", "out");
}

static void
inspect_file_path(void)
{
    FILE *out = fopen("/dev/null", "w");

    ck_assert_ptr_nonnull(out);
    expect_null_arg(ks_inspect_file(NULL, out, 0), "ks_inspect_file", "path");
    fclose(out);
}

static void
inspect_file_out(void)
{
    expect_null_arg(ks_inspect_file(model_path, NULL, 0), "ks_inspect_file",
                    "out");
}

static void
quantize_file_in(void)
{
    expect_null_arg(ks_quantize_file(NULL, quant_path, "Q8_0", 1),
                    "ks_quantize_file", "in");
}

static void
quantize_file_out(void)
{
    expect_null_arg(ks_quantize_file(model_path, NULL, "Q8_0", 1),
                    "ks_quantize_file", "out");
}

static void
quantize_file_type(void)
{
    expect_null_arg(ks_quantize_file(model_path, quant_path, NULL, 1),
                    "ks_quantize_file", "type");
    ck_assert_int_ne(access(quant_path, F_OK), 0);
}

static void
perplexity_s(void)
{
    ks_ppl_result r;

    expect_null_arg(ks_perplexity(NULL, toks, 4, NULL, &r), "ks_perplexity", "s");
}

static void
perplexity_tokens(void)
{
    ks_ppl_result r;

    open_all();
    expect_null_arg(ks_perplexity(f.s, NULL, 4, NULL, &r), "ks_perplexity", "tokens");
    close_all();
}

/* p NULL: the defaults, which this short text does not fill (not a crash) */
static void
perplexity_p(void)
{
    ks_ppl_result r;

    open_all();
    ck_assert_int_eq(ks_perplexity(f.s, toks, 4, NULL, &r), KS_ERR_INVALID_ARG);
    close_all();
}

static void
perplexity_out(void)
{
    open_all();
    expect_null_arg(ks_perplexity(f.s, toks, 4, NULL, NULL), "ks_perplexity", "out");
    close_all();
}

static void
prune_file_in(void)
{
    expect_null_arg(ks_prune_file(NULL, quant_path, NULL, 0), "ks_prune_file", "in");
}

static void
prune_file_out(void)
{
    expect_null_arg(ks_prune_file(model_path, NULL, NULL, 0), "ks_prune_file", "out");
}

static void
prune_file_drop(void)
{
    expect_null_arg(ks_prune_file(model_path, quant_path, NULL, 1), "ks_prune_file", "drop");
    ck_assert_int_ne(access(quant_path, F_OK), 0);
}

/* Every KS_API function and each of its pointer arguments. The argument
 * "-" marks a function that takes no pointer; a name such as "p->prompt"
 * or "msgs[1].role" is a pointer inside a struct argument, "optional"
 * checks that the optional pointers of a struct may be NULL.
 * tests/api/check_api.py reads the PROBE lines. */
typedef struct probe {
    const char *fn;
    const char *arg;
    void (*run)(void);
} probe;

#define PROBE(fn, arg, run) { fn, arg, run }

static const probe probes[] = {
    PROBE("ks_last_error", "-", last_error_none),
    PROBE("ks_status_str", "-", status_str_none),
    PROBE("ks_log_set_level", "-", log_set_level_none),
    PROBE("ks_runtime_create", "p", runtime_create_p),
    PROBE("ks_runtime_create", "out", runtime_create_out),
    PROBE("ks_runtime_destroy", "rt", runtime_destroy_rt),
    PROBE("ks_runtime_backend_name", "rt", runtime_backend_name_rt),
    PROBE("ks_model_load", "rt", model_load_rt),
    PROBE("ks_model_load", "path", model_load_path),
    PROBE("ks_model_load", "p", model_load_p),
    PROBE("ks_model_load", "out", model_load_out),
    PROBE("ks_model_destroy", "m", model_destroy_m),
    PROBE("ks_model_describe", "m", model_describe_m),
    PROBE("ks_model_describe", "out", model_describe_out),
    PROBE("ks_model_expert_stats", "m", model_expert_stats_m),
    PROBE("ks_model_expert_stats", "out", model_expert_stats_out),
    PROBE("ks_model_expert_resident", "m", model_expert_resident_m),
    PROBE("ks_model_expert_resident", "ids", model_expert_resident_ids),
    PROBE("ks_model_tokenize", "m", model_tokenize_m),
    PROBE("ks_model_tokenize", "text", model_tokenize_text),
    PROBE("ks_model_tokenize", "out", model_tokenize_out),
    PROBE("ks_model_tokenize", "n_out", model_tokenize_n_out),
    PROBE("ks_model_token_piece", "m", model_token_piece_m),
    PROBE("ks_model_token_piece", "buf", model_token_piece_buf),
    PROBE("ks_model_detokenize", "m", model_detokenize_m),
    PROBE("ks_model_detokenize", "ids", model_detokenize_ids),
    PROBE("ks_model_detokenize", "buf", model_detokenize_buf),
    PROBE("ks_model_detokenize", "n_out", model_detokenize_n_out),
    PROBE("ks_model_token_is_eog", "m", model_token_is_eog_m),
    PROBE("ks_model_chat_format", "m", model_chat_format_m),
    PROBE("ks_model_chat_format", "msgs", model_chat_format_msgs),
    PROBE("ks_model_chat_format", "msgs[1].role", model_chat_format_role),
    PROBE("ks_model_chat_format", "msgs[0].content", model_chat_format_content),
    PROBE("ks_model_chat_format", "buf", model_chat_format_buf),
    PROBE("ks_model_chat_format", "n_out", model_chat_format_n_out),
    PROBE("ks_model_chat_tokenize", "m", chat_tokenize_m),
    PROBE("ks_model_chat_tokenize", "msgs", chat_tokenize_msgs),
    PROBE("ks_model_chat_tokenize", "msgs[0].content", chat_tokenize_content),
    PROBE("ks_model_chat_tokenize", "out", chat_tokenize_out),
    PROBE("ks_model_chat_tokenize", "n_out", chat_tokenize_n_out),
    PROBE("ks_session_create", "m", session_create_m),
    PROBE("ks_session_create", "p", session_create_p),
    PROBE("ks_session_create", "out", session_create_out),
    PROBE("ks_session_destroy", "s", session_destroy_s),
    PROBE("ks_session_n_past", "s", session_n_past_s),
    PROBE("ks_session_n_ctx", "s", session_n_ctx_s),
    PROBE("ks_session_truncate", "s", session_truncate_s),
    PROBE("ks_session_eval", "s", session_eval_s),
    PROBE("ks_session_eval", "tokens", session_eval_tokens),
    PROBE("ks_session_eval", "logits", session_eval_logits),
    PROBE("ks_stop_name", "-", stop_name_none),
    PROBE("ks_session_eval_all", "s", session_eval_all_s),
    PROBE("ks_session_eval_all", "tokens", session_eval_all_tokens),
    PROBE("ks_session_eval_all", "logits", session_eval_all_logits),
    PROBE("ks_session_eval_all_unsupported", "s", session_eval_all_s),
    PROBE("ks_spec_name", "-", spec_names),
    PROBE("ks_spec_parse", "name", spec_names),
    PROBE("ks_spec_parse", "out", spec_names),
    PROBE("ks_json_schema_check", "schema", json_schema_check_schema),
    PROBE("ks_session_generate", "s", session_generate_s),
    PROBE("ks_session_generate", "p", session_generate_p),
    PROBE("ks_session_generate", "p->prompt", session_generate_prompt),
    PROBE("ks_session_generate", "optional", session_generate_optional),
    PROBE("ks_perplexity", "s", perplexity_s),
    PROBE("ks_perplexity", "tokens", perplexity_tokens),
    PROBE("ks_perplexity", "p", perplexity_p),
    PROBE("ks_perplexity", "out", perplexity_out),
    PROBE("ks_prune_file", "in", prune_file_in),
    PROBE("ks_prune_file", "out", prune_file_out),
    PROBE("ks_prune_file", "drop", prune_file_drop),
    PROBE("ks_session_stats", "s", session_stats_s),
    PROBE("ks_session_stats", "out", session_stats_out),
    PROBE("ks_session_profile", "s", session_profile_s),
    PROBE("ks_session_profile", "n", session_profile_n),
    PROBE("ks_session_profile", "rows", session_profile_rows),
    PROBE("ks_session_profile_reset", "s", session_profile_s),
    PROBE("ks_session_backend_name", "s", session_backend_name_s),
    PROBE("ks_session_placement", "s", session_placement_s),
    PROBE("ks_thermal_headroom", "s", thermal_headroom_s),
    PROBE("ks_thermal_forecast_c", "s", thermal_headroom_s),
    PROBE("ks_thermal_headroom_notify", "s", thermal_headroom_notify_s),
    PROBE("ks_thermal_headroom_notify", "user", thermal_headroom_notify_user),
    PROBE("ks_devices_print", "out", devices_print_out),
    PROBE("ks_inspect_file", "path", inspect_file_path),
    PROBE("ks_inspect_file", "out", inspect_file_out),
    PROBE("ks_quantize_file", "in", quantize_file_in),
    PROBE("ks_quantize_file", "out", quantize_file_out),
    PROBE("ks_quantize_file", "type", quantize_file_type),
};

#define N_PROBES ((int)(sizeof probes / sizeof probes[0]))

START_TEST(null_argument)
{
    /* named on stderr so that a crash (a signal in the forked child) says
     * which call it was */
    fprintf(stderr, "probe %d: %s(%s = NULL)\n", _i, probes[_i].fn,
            probes[_i].arg);
    probes[_i].run();
}
END_TEST

static Suite *
api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("null arguments");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, null_argument, 0, N_PROBES);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    ks_synth_params p = {
        .arch = "llama", .n_embd = 64, .n_layers = 1, .n_head = 4,
        .n_head_kv = 2, .n_ff = 96, .n_vocab = 320, .n_ctx = 64,
        .wtype = KS_QUANT_Q8_0, .seed = 99,
    };
    SRunner *sr;
    int failed;

    if (!mkdtemp(dir))
        return 99;
    snprintf(model_path, sizeof model_path, "%s/llama.gguf", dir);
    snprintf(quant_path, sizeof quant_path, "%s/q.gguf", dir);
    if (ks_synth_write(&p, model_path) != KS_OK) {
        fprintf(stderr, "synth: %s\n", ks_last_error());
        return 99;
    }
    sr = srunner_create(api_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unlink(quant_path);
    unlink(model_path);
    rmdir(dir);
    return failed ? 1 : 0;
}
