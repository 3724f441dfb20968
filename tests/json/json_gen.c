/* Constrained generation for tests and measurements: generates with a
 * JSON schema over several seeds and prints one line per seed,
 * "<stop>\t<output>" (JSON text holds no raw newline).
 *
 *   json_gen SCHEMA_FILE MODEL.gguf|synth N_SEEDS TEMP N_PREDICT
 *
 * "synth" writes a small synthetic model (random weights, a SentencePiece
 * vocabulary of byte tokens and words) to a temporary folder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "runtime/synth.h"

typedef struct text {
    char  *buf;
    size_t n, cap;
} text;

static bool
on_token(void *user, int32_t token, const char *piece, size_t len)
{
    text *t = user;
    (void)token;
    if (t->n + len + 1 > t->cap) {
        size_t nc = (t->n + len + 1) * 2;
        char *nb = realloc(t->buf, nc);
        if (!nb)
            return false;
        t->buf = nb;
        t->cap = nc;
    }
    memcpy(t->buf + t->n, piece, len);
    t->n += len;
    t->buf[t->n] = 0;
    return true;
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (s = malloc((size_t)n + 1)) != NULL) {
        if (fread(s, 1, (size_t)n, f) != (size_t)n) {
            free(s);
            s = NULL;
        } else
            s[n] = 0;
    }
    fclose(f);
    return s;
}

int
main(int argc, char **argv)
{
    char dir[] = "/tmp/kestrel-json-gen-XXXXXX", path[256];
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = 1, .no_governor = true };
    ks_session_params sp = { .n_ctx = 2048 };
    ks_runtime *rt = NULL;
    ks_model *m = NULL;
    ks_session *s = NULL;
    char *schema;
    text out = { 0 };
    int rc = 1, n_seeds;
    bool synth;

    if (argc != 6) {
        fprintf(stderr, "usage: json_gen SCHEMA_FILE MODEL.gguf|synth N_SEEDS TEMP N_PREDICT\n");
        return 2;
    }
    if (!(schema = slurp(argv[1]))) {
        fprintf(stderr, "json_gen: cannot read %s\n", argv[1]);
        return 1;
    }
    n_seeds = atoi(argv[3]);
    synth = strcmp(argv[2], "synth") == 0;
    if (synth) {
        ks_synth_params p = {
            .arch = "llama", .n_embd = 32, .n_layers = 2, .n_head = 4, .n_ff = 48,
            .n_vocab = 700, .n_ctx = 2048, .wtype = KS_QUANT_Q8_0, .seed = 7,
        };
        if (!mkdtemp(dir))
            goto out;
        snprintf(path, sizeof path, "%s/m.gguf", dir);
        if (ks_synth_write(&p, path) != KS_OK)
            goto fail;
    } else
        snprintf(path, sizeof path, "%s", argv[2]);
    if (ks_runtime_create(&rp, &rt) != KS_OK || ks_model_load(rt, path, NULL, &m) != KS_OK ||
        ks_session_create(m, &sp, &s) != KS_OK)
        goto fail;
    for (int seed = 1; seed <= n_seeds; seed++) {
        int32_t prompt[64];
        size_t n_prompt = 0;
        ks_generate_params gp = { .n_predict = (uint32_t)atoi(argv[5]), .on_token = on_token,
                                  .user = &out, .json_schema = schema,
                                  /* a schema ends generation at a whole value
                                   * even so */
                                  .ignore_eog = true };
        ks_stats st;
        gp.sampling.temp = (float)atof(argv[4]);
        gp.sampling.seed = (uint64_t)seed;
        if (ks_session_truncate(s, 0) != KS_OK ||
            ks_model_tokenize(m, "JSON:", 5, true, false, prompt, 64, &n_prompt) != KS_OK)
            goto fail;
        gp.prompt = prompt;
        gp.n_prompt = n_prompt;
        out.n = 0;
        if (!on_token(&out, 0, "", 0))
            goto fail;
        if (ks_session_generate(s, &gp) != KS_OK)
            goto fail;
        ks_session_stats(s, &st);
        printf("%s\t%s\n", ks_stop_name(gp.stop), out.buf);
        fprintf(stderr, "seed %d: %u tokens, %.1f tokens/s\n", seed, st.n_gen, st.decode_tps);
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "json_gen: %s\n", ks_last_error());
out:
    ks_session_destroy(s);
    ks_model_destroy(m);
    ks_runtime_destroy(rt);
    if (synth) {
        unlink(path);
        rmdir(dir);
    }
    free(out.buf);
    free(schema);
    return rc;
}
