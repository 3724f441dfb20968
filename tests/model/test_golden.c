/* Greedy output of the real models against llama.cpp's, recorded once in
 * tests/golden/<model>.json (how: tests/golden/README.md).
 *
 * For every prompt the prompt's token ids must be llama.cpp's, and the
 * first 32 generated ids must be llama.cpp's exactly, with the scalar
 * kernels and with the SIMD kernels. The models come from the shared
 * folder (stories260K) and the model cache (SmolLM2, gemma-3); a model
 * that is absent is skipped with a message. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "runtime/cpu/quant.h"

enum { N_CHECK = 32, MAX_IDS = 256, MAX_RUNS = 8 };

typedef struct run {
    char    prompt[512];
    int32_t prompt_ids[MAX_IDS];
    size_t  n_prompt_ids;
    int32_t ids[MAX_IDS];
    size_t  n_ids;
} run;

typedef struct golden {
    char model[256];
    run  runs[MAX_RUNS];
    int  n_runs;
} golden;

/* ---- a small reader for the golden files' JSON ---- */

static const char *
skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

/* Reads a JSON string at p (which points at the opening quote). */
static const char *
read_string(const char *p, char *out, size_t cap)
{
    size_t n = 0;

    if (*p++ != '"')
        return NULL;
    while (*p && *p != '"') {
        char c = *p++;
        if (c == '\\') {
            c = *p++;
            if (c == 'n')
                c = '\n';
            else if (c == 't')
                c = '\t';
            else if (c == 'r')
                c = '\r';
            else if (c == 'u') {
                unsigned v = (unsigned)strtoul((char[5]){ p[0], p[1], p[2],
                                                          p[3], 0 },
                                               NULL, 16);
                p += 4;
                if (v < 0x80) {
                    c = (char)v;
                } else {  /* the prompts are ASCII; keep the rest as '?' */
                    c = '?';
                }
            }
        }
        if (n + 1 < cap)
            out[n++] = c;
    }
    out[n] = '\0';
    return *p == '"' ? p + 1 : NULL;
}

static const char *
read_ids(const char *p, int32_t *out, size_t *n)
{
    *n = 0;
    p = skip_ws(p);
    if (*p++ != '[')
        return NULL;
    for (;;) {
        char *end;
        long v;
        p = skip_ws(p);
        if (*p == ']')
            return p + 1;
        v = strtol(p, &end, 10);
        if (end == p)
            return NULL;
        if (*n < MAX_IDS)
            out[(*n)++] = (int32_t)v;
        p = skip_ws(end);
        if (*p == ',')
            p++;
    }
}

/* Finds "key": after p within the current run object. */
static const char *
find_key(const char *p, const char *key)
{
    char pat[64];
    const char *k;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    k = strstr(p, pat);
    return k ? skip_ws(k + strlen(pat)) : NULL;
}

static bool
load_golden(const char *path, golden *g)
{
    FILE *f = fopen(path, "rb");
    char *text;
    long size;
    const char *p;

    memset(g, 0, sizeof(*g));
    if (!f)
        return false;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = calloc(1, (size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(text);
        return false;
    }
    fclose(f);
    p = find_key(text, "model");
    if (!p || !read_string(p, g->model, sizeof g->model))
        goto bad;
    p = find_key(text, "runs");
    while (p && g->n_runs < MAX_RUNS && (p = strstr(p, "\"prompt\":"))) {
        run *r = &g->runs[g->n_runs];
        const char *q = skip_ws(p + strlen("\"prompt\":"));
        if (!(q = read_string(q, r->prompt, sizeof r->prompt)) ||
            !(q = find_key(q, "prompt_ids")) ||
            !(q = read_ids(q, r->prompt_ids, &r->n_prompt_ids)) ||
            !(q = find_key(q, "ids")) ||
            !(q = read_ids(q, r->ids, &r->n_ids)))
            goto bad;
        g->n_runs++;
        p = q;
    }
    free(text);
    return g->n_runs > 0;
bad:
    free(text);
    return false;
}

/* ---- the test ---- */

static const char *golden_files[] = {
    "stories260K-f32.json", "stories260K-Q8_0.json",
    "stories260K-Q4_0.json", "stories260K-Q4_K_M.json",
    "SmolLM2-135M-Instruct.Q4_1.json", "gemma-3-270m-q4_k_m.json",
};
enum { N_FILES = sizeof golden_files / sizeof golden_files[0] };

static golden goldens[N_FILES];
static char model_paths[N_FILES][1024];
static bool present[N_FILES];

static void
greedy(ks_model *m, const run *r, int32_t *out)
{
    ks_session *s = NULL;
    ks_session_params sp = { .n_ctx = 256 };
    int32_t ids[MAX_IDS];
    size_t n = 0;
    ks_generate_params gp = { .n_predict = N_CHECK, .out_tokens = out,
                              .out_cap = N_CHECK, .ignore_eog = true };

    ck_assert_int_eq(ks_model_tokenize(m, r->prompt, strlen(r->prompt), true,
                                       false, ids, MAX_IDS, &n),
                     KS_OK);
    ck_assert_uint_eq(n, r->n_prompt_ids);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(ids[i], r->prompt_ids[i]);
    ck_assert_int_eq(ks_session_create(m, &sp, &s), KS_OK);
    gp.prompt = ids;
    gp.n_prompt = n;
    ck_assert_msg(ks_session_generate(s, &gp) == KS_OK, "%s",
                  ks_last_error());
    ck_assert_uint_eq(gp.n_out, N_CHECK);
    ks_session_destroy(s);
}

static void
check_model(int i, ks_simd simd)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 2 };
    ks_runtime *rt = NULL;
    ks_model *m = NULL;
    const golden *g = &goldens[i];

    if (!present[i]) {
        fprintf(stderr, "golden: %s absent, skipped\n", model_paths[i]);
        return;
    }
    if (!ks_cpu_simd_available(simd)) {
        fprintf(stderr, "golden: no %s kernels on this CPU, skipped\n",
                ks_cpu_simd_name(simd));
        return;
    }
    ks_cpu_simd_force(simd);
    ck_assert_int_eq(ks_runtime_create(&rp, &rt), KS_OK);
    ck_assert_msg(ks_model_load(rt, model_paths[i], NULL, &m) == KS_OK, "%s",
                  ks_last_error());
    for (int k = 0; k < g->n_runs; k++) {
        int32_t out[N_CHECK];
        const run *r = &g->runs[k];

        greedy(m, r, out);
        ck_assert_uint_ge(r->n_ids, N_CHECK);
        for (int t = 0; t < N_CHECK; t++)
            ck_assert_msg(out[t] == r->ids[t],
                          "%s (%s kernels), prompt \"%s\": token %d is %d, "
                          "llama.cpp gave %d", g->model,
                          ks_cpu_simd_name(simd), r->prompt, t, out[t],
                          r->ids[t]);
    }
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
}

/* The best SIMD path this CPU has, the one a run picks by default (AVX2,
 * reported absent, where there is none). */
static ks_simd
best_simd(void)
{
    ks_simd best = KS_SIMD_AVX2;

    for (int s = KS_SIMD_AVX2; s < KS_SIMD_COUNT; s++)
        if (ks_cpu_simd_available((ks_simd)s))
            best = (ks_simd)s;
    return best;
}

START_TEST(simd_matches_llama_cpp)
{
    check_model(_i, best_simd());
}
END_TEST

START_TEST(scalar_matches_llama_cpp)
{
    check_model(_i, KS_SIMD_SCALAR);
}
END_TEST

int
main(void)
{
    const char *gdir = getenv("KESTREL_GOLDEN_DIR");
    const char *shared = getenv("KESTREL_SHARED_DIR");
    const char *mdir = getenv("KESTREL_MODEL_DIR");
    const char *home = getenv("HOME");
    char path[1024];
    int n_present = 0, failed;
    Suite *s;
    TCase *tc;
    SRunner *sr;

    if (!gdir) {
        fprintf(stderr, "golden: KESTREL_GOLDEN_DIR is not set\n");
        return 1;
    }
    for (int i = 0; i < N_FILES; i++) {
        if (snprintf(path, sizeof path, "%s/%s", gdir, golden_files[i]) >=
            (int)sizeof path) {
            fprintf(stderr, "golden: path too long\n");
            return 1;
        }
        if (!load_golden(path, &goldens[i])) {
            fprintf(stderr, "golden: cannot read %s\n", path);
            return 1;
        }
        {
            int len;
            if (strncmp(goldens[i].model, "stories", 7) == 0)
                len = snprintf(model_paths[i], sizeof model_paths[i],
                               "%s/models/stories260K/%s",
                               shared ? shared : ".", goldens[i].model);
            else if (mdir && *mdir)
                len = snprintf(model_paths[i], sizeof model_paths[i],
                               "%s/%s", mdir, goldens[i].model);
            else
                len = snprintf(model_paths[i], sizeof model_paths[i],
                               "%s/.cache/kestrel/models/%s",
                               home ? home : ".", goldens[i].model);
            if (len < 0 || (size_t)len >= sizeof model_paths[i]) {
                fprintf(stderr, "golden: model path too long\n");
                return 1;
            }
        }
        present[i] = access(model_paths[i], R_OK) == 0;
        n_present += present[i];
        if (!present[i])
            fprintf(stderr, "golden: %s is absent (fetch real models with "
                    "ci/fetch-models.sh; stories260K comes from the shared "
                    "folder); its checks are skipped\n", model_paths[i]);
    }
    if (n_present == 0) {
        fprintf(stderr, "golden: no model present, skipping\n");
        return 77;
    }
    s = suite_create("golden");
    tc = tcase_create("greedy");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, simd_matches_llama_cpp, 0, N_FILES);
    tcase_add_loop_test(tc, scalar_matches_llama_cpp, 0, N_FILES);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
