/* Tokenizer conformance against llama.cpp's own test vectors: every
 * ggml-vocab-*.gguf in $KESTREL_VOCAB_DIR (default ~/.cache/kestrel/vocab,
 * filled by ci/fetch-vocab.sh from the pinned llama-cpp-python sdist) that
 * has a .inp/.out pair. Each .inp holds inputs ended by
 * "\n__ggml_vocab_test__\n"; the .out line of the same index holds the ids
 * llama.cpp gives with add_special and parse_special off (its
 * tests/test-tokenizer-0). The files are loaded through the public API with
 * ks_model_params.vocab_only.
 *
 * Every file whose tokenizer model Kestrel takes (tokenizer.ggml.model
 * "llama" or "gpt2") must load and pass all its cases; the others (bert,
 * t5, gemma4, ...) are listed as skipped with the reason. The count of
 * passing cases per file is printed either way. */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "runtime/gguf.h"

#define SEP "\n__ggml_vocab_test__\n"
#define MAX_FILES 64

static char g_dir[4096];
static char *g_names[MAX_FILES]; /* "ggml-vocab-xxx.gguf", sorted */
static int g_n_files;

static char *
read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* Prints |s| with control characters and non-ASCII escaped, cut at 60. */
static void
print_escaped(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n && i < 60; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c >= 0x7F)
            printf("\\x%02X", c);
        else
            putchar(c);
    }
    fputs(n > 60 ? "\"..." : "\"", stdout);
}

/* tokenizer.ggml.model of |path| (malloc'd), or NULL. */
static char *
tokenizer_model(const char *path)
{
    ks_gguf *g = NULL;
    char *model = NULL;

    if (ks_gguf_open(path, &g) != KS_OK)
        return NULL;
    const char *s = ks_gguf_get_str(g, "tokenizer.ggml.model", NULL);
    if (s)
        model = strdup(s);
    ks_gguf_destroy(g);
    return model;
}

static ks_model *
load_vocab(ks_runtime *rt, const char *path)
{
    ks_model_params mp = { 0 };
    ks_model *m = NULL;
    ks_status st;

    mp.vocab_only = true;
    st = ks_model_load(rt, path, &mp, &m);
    ck_assert_msg(st == KS_OK, "%s: vocab-only load failed: %s", path,
                  ks_last_error());
    return m;
}

START_TEST(vocab_file_matches_llama_cpp)
{
    const char *name = g_names[_i];
    char path[4200], inp_path[4300], out_path[4300];
    ks_runtime_params rp = { 0 };
    ks_runtime *rt = NULL;
    ks_model *m = NULL;
    char *inp = NULL, *out = NULL, *model;
    size_t inp_len = 0, out_len = 0;
    int n_cases = 0, n_pass = 0, n_shown = 0;

    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    snprintf(inp_path, sizeof inp_path, "%s.inp", path);
    snprintf(out_path, sizeof out_path, "%s.out", path);
    model = tokenizer_model(path);
    ck_assert_msg(model != NULL, "%s: no tokenizer.ggml.model", path);
    if (strcmp(model, "llama") != 0 && strcmp(model, "gpt2") != 0) {
        printf("%-32s skipped: tokenizer.ggml.model '%s' is not a tokenizer "
               "Kestrel takes (only llama/SPM and gpt2/BPE)\n", name, model);
        free(model);
        return;
    }
    free(model);

    inp = read_all(inp_path, &inp_len);
    out = read_all(out_path, &out_len);
    ck_assert_msg(inp && out, "%s: cannot read its .inp/.out", path);
    rp.backend = KS_BACKEND_CPU;
    rp.no_governor = true;
    ck_assert_int_eq(ks_runtime_create(&rp, &rt), KS_OK);
    m = load_vocab(rt, path);

    char *text = inp, *line = out;
    for (;;) {
        char *sep = strstr(text, SEP);
        if (!sep)
            break;
        size_t len = (size_t)(sep - text);
        char *eol = strchr(line, '\n');
        ck_assert_msg(eol != NULL, "%s: fewer output lines than inputs",
                      out_path);
        *eol = '\0';

        int32_t want[512];
        size_t n_want = 0;
        for (char *p = line, *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            ck_assert_msg(n_want < 512, "%s: a case with over 512 ids",
                          out_path);
            want[n_want++] = (int32_t)v;
        }

        size_t n_got = 0;
        ck_assert_int_eq(ks_model_tokenize(m, text, len, false, false, NULL,
                                           0, &n_got), KS_OK);
        int32_t *got = malloc((n_got + 1) * sizeof(int32_t));
        ck_assert_ptr_nonnull(got);
        ck_assert_int_eq(ks_model_tokenize(m, text, len, false, false, got,
                                           n_got, &n_got), KS_OK);
        bool same = n_got == n_want &&
                    memcmp(got, want, n_got * sizeof(int32_t)) == 0;
        if (same) {
            n_pass++;
        } else if (n_shown++ < 5) {
            printf("%s case %d: ", name, n_cases);
            print_escaped(text, len);
            printf("\n  llama.cpp:");
            for (size_t i = 0; i < n_want; i++)
                printf(" %d", want[i]);
            printf("\n  kestrel:  ");
            for (size_t i = 0; i < n_got; i++)
                printf(" %d", got[i]);
            printf("\n");
        }
        free(got);
        n_cases++;
        text = sep + strlen(SEP);
        line = eol + 1;
    }
    printf("%-32s %d/%d cases pass\n", name, n_pass, n_cases);
    fflush(stdout);

    ks_model_destroy(m);
    ks_runtime_destroy(rt);
    free(inp);
    free(out);
    ck_assert_msg(n_cases > 0, "%s: no cases", inp_path);
    ck_assert_msg(n_pass == n_cases, "%s: %d of %d cases differ from "
                  "llama.cpp", name, n_cases - n_pass, n_cases);
}
END_TEST

/* The first file whose tokenizer Kestrel takes, or NULL. */
static const char *
first_loadable(void)
{
    for (int i = 0; i < g_n_files; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", g_dir, g_names[i]);
        char *model = tokenizer_model(path);
        bool ok = model && strcmp(model, "llama") == 0;
        free(model);
        if (ok)
            return g_names[i];
    }
    return NULL;
}

START_TEST(vocab_only_model_has_no_session)
{
    const char *name = first_loadable();
    char path[4200];
    ks_runtime_params rp = { 0 };
    ks_runtime *rt = NULL;
    ks_model *m = NULL;
    ks_session *s = NULL;
    ks_model_desc d;
    int32_t ids[8];
    size_t n = 0;

    ck_assert_msg(name != NULL, "no SPM vocab file in %s", g_dir);
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    rp.backend = KS_BACKEND_CPU;
    rp.no_governor = true;
    ck_assert_int_eq(ks_runtime_create(&rp, &rt), KS_OK);
    /* without the flag the file is no model: it has no tensors */
    ck_assert_int_ne(ks_model_load(rt, path, NULL, &m), KS_OK);
    ck_assert_ptr_null(m);
    m = load_vocab(rt, path);
    ks_model_describe(m, &d);
    ck_assert_uint_gt(d.n_vocab, 0);
    ck_assert_uint_eq(d.n_layers, 0);
    ck_assert_int_eq(ks_model_tokenize(m, "Hello world", 11, true, false,
                                       ids, 8, &n), KS_OK);
    ck_assert_uint_gt(n, 0);
    ck_assert_int_eq(ks_session_create(m, NULL, &s), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(s);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "vocab-only"));
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
}
END_TEST

/* ks_model_load passes pre_fallback_gpt2 on: a copy of a BPE vocab file
 * whose tokenizer.ggml.pre value has its last letter changed is refused,
 * naming the value, unless the flag is set. */
START_TEST(unknown_pre_refused_at_load)
{
    static const char key[] = "tokenizer.ggml.pre";
    char path[4200], tmp[] = "/tmp/kestrel-vocab-XXXXXX";
    ks_runtime_params rp = { 0 };
    ks_model_params mp = { 0 };
    ks_runtime *rt = NULL;
    ks_model *m = NULL;
    char *bytes, *at = NULL, *value;
    size_t len = 0;
    int fd;

    snprintf(path, sizeof path, "%s/ggml-vocab-gpt-2.gguf", g_dir);
    bytes = read_all(path, &len);
    ck_assert_msg(bytes != NULL, "cannot read %s", path);
    /* key, then its type (u32, 8: string) and the value's length (u64) */
    for (size_t i = 0; i + sizeof key - 1 + 12 < len; i++) {
        if (memcmp(bytes + i, key, sizeof key - 1) == 0) {
            at = bytes + i + sizeof key - 1;
            break;
        }
    }
    ck_assert_msg(at != NULL, "%s has no %s", path, key);
    uint64_t n;
    memcpy(&n, at + 4, 8);
    ck_assert_msg(n > 0 && n < 64, "%s: odd %s length", path, key);
    value = at + 12;
    value[n - 1] = 'x';  /* "gpt-2" -> "gpt-x" */
    fd = mkstemp(tmp);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bytes, len), (ssize_t)len);
    close(fd);
    free(bytes);

    rp.backend = KS_BACKEND_CPU;
    rp.no_governor = true;
    ck_assert_int_eq(ks_runtime_create(&rp, &rt), KS_OK);
    mp.vocab_only = true;
    ck_assert_int_eq(ks_model_load(rt, tmp, &mp, &m), KS_ERR_UNSUPPORTED);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "'gpt-x'"));
    mp.pre_fallback_gpt2 = true;
    ck_assert_int_eq(ks_model_load(rt, tmp, &mp, &m), KS_OK);
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
    unlink(tmp);
}
END_TEST

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the ggml-vocab-*.gguf files that have a .inp beside them. */
static int
list_files(void)
{
    DIR *d = opendir(g_dir);
    struct dirent *e;

    if (!d)
        return 0;
    while ((e = readdir(d)) && g_n_files < MAX_FILES) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "ggml-vocab-", 11) != 0 || n < 9 ||
            strcmp(e->d_name + n - 9, ".gguf.inp") != 0)
            continue;
        char *name = strndup(e->d_name, n - 4);
        if (name)
            g_names[g_n_files++] = name;
    }
    closedir(d);
    qsort(g_names, (size_t)g_n_files, sizeof(char *), cmp_str);
    return g_n_files;
}

static Suite *
vocab_suite(void)
{
    Suite *s = suite_create("tokenizer_vocab");
    TCase *tc = tcase_create("llama_cpp_vectors");

    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, vocab_file_matches_llama_cpp, 0, g_n_files);
    tcase_add_test(tc, vocab_only_model_has_no_session);
    tcase_add_test(tc, unknown_pre_refused_at_load);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    const char *dir = getenv("KESTREL_VOCAB_DIR");
    const char *home = getenv("HOME");
    int failed;

    if (dir && *dir)
        snprintf(g_dir, sizeof g_dir, "%s", dir);
    else
        snprintf(g_dir, sizeof g_dir, "%s/.cache/kestrel/vocab",
                 home ? home : ".");
    if (list_files() == 0) {
        printf("test_vocab: no ggml-vocab-*.gguf.inp in %s; run "
               "ci/fetch-vocab.sh (or set KESTREL_VOCAB_DIR) to fetch "
               "llama.cpp's tokenizer test vectors; skipping\n", g_dir);
        return 77;
    }
    SRunner *sr = srunner_create(vocab_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    for (int i = 0; i < g_n_files; i++)
        free(g_names[i]);
    return failed ? 1 : 0;
}
