/* The time of one token mask (ks_json_mask_apply) over a model's
 * vocabulary, in three states: inside a long string (most tokens pass),
 * before an object's member name, and inside a number; then decode
 * tokens/s of the model (2 threads, CPU, greedy, 150 tokens) without and
 * with a schema, alternating, the best of 7 rounds each (the least
 * disturbed by other load). A tool, not a test: timings are printed,
 * never asserted.
 *   bench_json MODEL.gguf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kestrel/kestrel.h"
#include "runtime/gguf.h"
#include "runtime/json_schema.h"
#include "runtime/tokenizer.h"

static double
now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int
main(int argc, char **argv)
{
    static const char *const prefixes[] = { "{\"story\":\"Once upon", "{", "{\"n\":12" };
    const char *schema = "{\"type\":\"object\",\"properties\":{\"story\":{\"type\":"
                         "\"string\"},\"n\":{\"type\":\"number\"},\"ok\":{\"type\":"
                         "\"boolean\"}},\"required\":[\"story\",\"n\"]}";
    ks_gguf *g = NULL;
    ks_tokenizer *tok = NULL;
    ks_json_schema *js = NULL;
    float *in, *out;
    uint32_t n;

    if (argc != 2 || ks_gguf_open(argv[1], &g) != KS_OK || ks_tokenizer_create(g, &tok) != KS_OK ||
        ks_json_schema_create(schema, &js) != KS_OK) {
        fprintf(stderr, "usage: bench_json MODEL.gguf (%s)\n", ks_last_error());
        return 1;
    }
    n = ks_tokenizer_n_vocab(tok);
    in = calloc(n, sizeof(*in));
    out = calloc(n, sizeof(*out));
    double t0 = now_ms();
    ks_json_mask *m;
    if (ks_json_mask_create(js, tok, n, &m) != KS_OK)
        return 1;
    printf("trie of %u tokens built in %.2f ms\n", n, now_ms() - t0);
    for (size_t p = 0; p < sizeof prefixes / sizeof prefixes[0]; p++) {
        int32_t ids[64];
        size_t n_ids, allowed = 0;
        bool done;
        ks_json_mask_reset(m);
        if (ks_tokenizer_encode(tok, prefixes[p], strlen(prefixes[p]), false, false, ids, 64,
                                &n_ids) != KS_OK)
            return 1;
        for (size_t i = 0; i < n_ids; i++)
            if (ks_json_mask_accept(m, ids[i]) != KS_OK) {
                fprintf(stderr, "%s\n", ks_last_error());
                return 1;
            }
        t0 = now_ms();
        int reps = 50;
        for (int r = 0; r < reps; r++)
            ks_json_mask_apply(m, in, out, &done);
        double ms = (now_ms() - t0) / reps;
        for (uint32_t i = 0; i < n; i++)
            allowed += out[i] == 0.0f;
        printf("after %-22s %6zu tokens allowed, %.3f ms per mask\n", prefixes[p], allowed, ms);
    }
    ks_json_mask_destroy(m);
    {
        static const char *const cases[] = {
            NULL,
            "{\"type\":\"object\",\"properties\":{\"story\":{\"type\":\"string\","
            "\"minLength\":700}},\"required\":[\"story\"]}",
            "{\"type\":\"array\",\"minItems\":40,\"items\":{\"type\":\"object\","
            "\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":10},\"age\":"
            "{\"type\":\"integer\"},\"city\":{\"enum\":[\"Paris\",\"Rome\",\"Oslo\"]}},"
            "\"required\":[\"name\",\"age\",\"city\"]}}",
        };
        static const char *const names[] = { "no schema", "long string", "array of objects" };
        ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 2, .no_governor = true };
        ks_session_params sp = { .n_ctx = 512 };
        ks_runtime *rt = NULL;
        ks_model *model = NULL;
        ks_session *s = NULL;
        double best[3] = { 0 };
        uint32_t n_gen[3] = { 0 };
        int32_t prompt[64];
        size_t n_prompt;

        if (ks_runtime_create(&rp, &rt) != KS_OK || ks_model_load(rt, argv[1], NULL, &model) != KS_OK ||
            ks_session_create(model, &sp, &s) != KS_OK ||
            ks_model_tokenize(model, "Write a story as JSON:", 22, true, false, prompt, 64,
                              &n_prompt) != KS_OK) {
            fprintf(stderr, "bench_json: %s\n", ks_last_error());
            return 1;
        }
        for (int round = 0; round < 7; round++) {
            for (int c = 2; c >= 0; c--) {
                ks_generate_params gp = { .prompt = prompt, .n_prompt = n_prompt,
                                          .n_predict = 150, .ignore_eog = true,
                                          .json_schema = cases[c] };
                ks_stats st;
                if (ks_session_truncate(s, 0) != KS_OK || ks_session_generate(s, &gp) != KS_OK) {
                    fprintf(stderr, "bench_json: %s\n", ks_last_error());
                    return 1;
                }
                ks_session_stats(s, &st);
                n_gen[c] = st.n_gen;
                if (st.decode_tps > best[c])
                    best[c] = st.decode_tps;
            }
        }
        for (int c = 0; c < 3; c++)
            printf("decode, %-17s %3u tokens, best of 7: %.2f tokens/s (%.3f ms/token)\n",
                   names[c], n_gen[c], best[c], 1e3 / best[c]);
        ks_session_destroy(s);
        ks_model_destroy(model);
        ks_runtime_destroy(rt);
    }
    ks_json_schema_destroy(js);
    ks_tokenizer_destroy(tok);
    ks_gguf_destroy(g);
    free(in);
    free(out);
    return 0;
}
