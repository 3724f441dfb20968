/* The time of one token mask (ks_json_mask_apply) over a model's
 * vocabulary, in three states: inside a long string (most tokens pass),
 * before an object's member name, and inside a number. A tool, not a
 * test: timings are printed, never asserted.
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
    ks_json_schema_destroy(js);
    ks_tokenizer_destroy(tok);
    ks_gguf_destroy(g);
    free(in);
    free(out);
    return 0;
}
