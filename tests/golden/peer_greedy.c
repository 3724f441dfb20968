/* peer_greedy: greedy (argmax) generation with the llama.cpp peer, printed as
 * JSON, to record golden token ids for Kestrel's model tests.
 *
 * This is a developer tool, not part of the Kestrel build: it links against a
 * llama.cpp built by ci/peer.sh through llama.cpp's public C header. See
 * tests/golden/README.md for the exact build and run commands.
 *
 *   peer_greedy -m MODEL.gguf [-t THREADS] [-n N_PREDICT] [-v] [-a] -p PROMPT [-p PROMPT]...
 *
 * -a adds "prompt_logits": the logits at every position of the prompt
 * (n_prompt rows of n_vocab), each from a one-token step in a second
 * context (the arithmetic of decoding), for the logit goldens of small
 * models; the greedy run still evaluates the prompt in one batch.
 *
 * For every prompt, with a fresh context: tokenize with add_special = true and
 * parse_special = false (so BOS is added exactly when the model's metadata
 * asks for it), evaluate the prompt in one batch, then repeat N_PREDICT times:
 * take the argmax of the last position's logits (lowest id on a tie), append
 * it, stop after it if it is an end-of-generation token, else feed it back.
 * No sampler is involved. The output is one JSON object on stdout.
 */
#include <float.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

#define MAX_PROMPTS 16
#define TOP_K 5

static bool verbose;
static bool all_logits;  /* -a */

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    if (verbose || level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

/* Append |s| (n bytes) as a JSON string body. Invalid UTF-8 (a token piece
 * can be a lone byte of a multi-byte character) becomes U+FFFD, so the file
 * always parses; the ids, not the text, are the reference. */
static void json_str(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    fputc('"', f);
    while (i < n) {
        unsigned c = p[i];
        size_t len = 0;

        if (c < 0x80) {
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c == '\r')
                fputs("\\r", f);
            else if (c < 0x20 || c == 0x7f)
                fprintf(f, "\\u%04x", c);
            else
                fputc((int)c, f);
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4;
        bool ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = (p[i + k] & 0xc0) == 0x80;
        if (ok && len == 3) {
            /* reject overlong forms and UTF-16 surrogates */
            if ((c == 0xe0 && p[i + 1] < 0xa0) || (c == 0xed && p[i + 1] >= 0xa0))
                ok = false;
        }
        if (ok && len == 4) {
            if ((c == 0xf0 && p[i + 1] < 0x90) || (c == 0xf4 && p[i + 1] >= 0x90))
                ok = false;
        }
        if (ok) {
            fwrite(p + i, 1, len, f);
            i += len;
        } else {
            fputs("\\ufffd", f);
            i++;
        }
    }
    fputc('"', f);
}

static void json_ids(FILE *f, const llama_token *ids, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? ", " : "", (int)ids[i]);
    fputc(']', f);
}

/* Append the piece of |tok| to the growing buffer (*buf, *len, *cap). */
static int append_piece(const struct llama_vocab *vocab, llama_token tok,
                        char **buf, size_t *len, size_t *cap)
{
    char piece[256];
    int32_t n = llama_token_to_piece(vocab, tok, piece, (int32_t)sizeof(piece), 0, true);

    if (n < 0) {
        fprintf(stderr, "peer_greedy: token %d: piece longer than %zu bytes\n",
                (int)tok, sizeof(piece));
        return -1;
    }
    if (*len + (size_t)n + 1 > *cap) {
        size_t ncap = (*cap ? *cap * 2 : 1024) + (size_t)n;
        char *nb = realloc(*buf, ncap);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, piece, (size_t)n);
    *len += (size_t)n;
    (*buf)[*len] = '\0';
    return 0;
}

static llama_token argmax(const float *logits, int n_vocab)
{
    int best = 0;
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > logits[best])
            best = i;
    return (llama_token)best;
}

/* Indices of the k largest logits, largest first (lowest id on a tie). */
static void top_k(const float *logits, int n_vocab, int k, int *out)
{
    for (int j = 0; j < k; j++)
        out[j] = -1;
    for (int i = 0; i < n_vocab; i++) {
        int pos = k;
        while (pos > 0 && (out[pos - 1] < 0 || logits[i] > logits[out[pos - 1]]))
            pos--;
        if (pos == k)
            continue;
        for (int j = k - 1; j > pos; j--)
            out[j] = out[j - 1];
        out[pos] = i;
    }
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Evaluate |n| tokens at positions pos0.. and keep logits of the last one. */
static int eval(struct llama_context *ctx, struct llama_batch_ext *batch,
                const llama_token *toks, int n, llama_pos pos0)
{
    llama_batch_ext_clear(batch);
    for (int i = 0; i < n; i++) {
        int32_t idx = llama_batch_ext_add_token(batch, 0, toks[i]);
        llama_pos pos = pos0 + i;
        if (idx < 0 || !llama_batch_ext_set_pos(batch, idx, &pos)) {
            fprintf(stderr, "peer_greedy: cannot add token %d at position %d to the batch (%d)\n",
                    (int)toks[i], (int)pos, (int)idx);
            return -1;
        }
    }
    if (!llama_batch_ext_set_output_logits(batch, n - 1, true)) {
        fprintf(stderr, "peer_greedy: cannot request logits for batch index %d\n", n - 1);
        return -1;
    }
    int32_t rc = llama_process(ctx, LLAMA_PROCESS_TYPE_DECODE, batch);
    if (rc != 0) {
        fprintf(stderr, "peer_greedy: llama_process failed with %d\n", (int)rc);
        return -1;
    }
    return 0;
}

/* -a: the logits after each prompt token, the tokens evaluated one at a
 * time in a context of their own. */
static int one_by_one(struct llama_model *model, const struct llama_context_params *cp,
                      const llama_token *toks, int n, int n_vocab, float *out)
{
    struct llama_context *ctx = llama_init_from_model(model, *cp);
    struct llama_batch_ext *batch = ctx ? llama_batch_ext_init(ctx) : NULL;
    int ret = -1;

    if (!batch) {
        fprintf(stderr, "peer_greedy: cannot create a context for -a\n");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const float *l;
        if (eval(ctx, batch, toks + i, 1, i) != 0)
            goto out;
        l = llama_get_logits_ith(ctx, -1);
        if (!l) {
            fprintf(stderr, "peer_greedy: no logits at prompt position %d\n", i);
            goto out;
        }
        memcpy(out + (size_t)i * (size_t)n_vocab, l, (size_t)n_vocab * sizeof(float));
    }
    ret = 0;
out:
    if (batch)
        llama_batch_ext_free(batch);
    if (ctx)
        llama_free(ctx);
    return ret;
}

static int run_prompt(struct llama_model *model, const char *model_name,
                      const char *prompt, int n_threads, int n_predict, bool first)
{
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_context *ctx = NULL;
    struct llama_batch_ext *batch = NULL;
    llama_token *prompt_ids = NULL, *ids = NULL;
    float *margins = NULL, *plogits = NULL;
    char *text = NULL;
    size_t text_len = 0, text_cap = 0;
    int top[TOP_K];
    float top_val[TOP_K];
    int n_gen = 0;
    bool hit_eog = false;
    int ret = -1;

    int32_t plen = (int32_t)strlen(prompt);
    int32_t n_prompt = -llama_tokenize(vocab, prompt, plen, NULL, 0, true, false);
    if (n_prompt <= 0) {
        fprintf(stderr, "peer_greedy: prompt \"%s\" gave %d tokens\n", prompt, (int)n_prompt);
        goto fail;
    }
    prompt_ids = calloc((size_t)n_prompt, sizeof(*prompt_ids));
    ids = calloc((size_t)n_predict + 1, sizeof(*ids));
    margins = calloc((size_t)n_predict + 1, sizeof(*margins));
    if (!prompt_ids || !ids || !margins) {
        fprintf(stderr, "peer_greedy: out of memory\n");
        goto fail;
    }
    if (llama_tokenize(vocab, prompt, plen, prompt_ids, n_prompt, true, false) != n_prompt) {
        fprintf(stderr, "peer_greedy: tokenizing \"%s\" failed\n", prompt);
        goto fail;
    }

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n_prompt + n_predict + 16);
    cp.n_batch = cp.n_batch > (uint32_t)n_prompt ? cp.n_batch : (uint32_t)n_prompt;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.no_perf = true;
    ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "peer_greedy: cannot create a context\n");
        goto fail;
    }
    batch = llama_batch_ext_init(ctx);
    if (!batch) {
        fprintf(stderr, "peer_greedy: cannot create a batch\n");
        goto fail;
    }

    if (eval(ctx, batch, prompt_ids, n_prompt, 0) != 0)
        goto fail;
    if (all_logits) {
        plogits = malloc((size_t)n_prompt * (size_t)n_vocab * sizeof(float));
        if (!plogits || one_by_one(model, &cp, prompt_ids, n_prompt, n_vocab, plogits) != 0)
            goto fail;
    }
    for (int step = 0; step < n_predict; step++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        if (!logits) {
            fprintf(stderr, "peer_greedy: no logits at step %d\n", step);
            goto fail;
        }
        int t2[2];
        top_k(logits, n_vocab, 2, t2);
        margins[step] = logits[t2[0]] - logits[t2[1]];
        if (step == 0) {
            top_k(logits, n_vocab, TOP_K, top);
            for (int j = 0; j < TOP_K; j++)
                top_val[j] = logits[top[j]];
        }
        llama_token next = argmax(logits, n_vocab);
        ids[n_gen++] = next;
        if (append_piece(vocab, next, &text, &text_len, &text_cap) != 0)
            goto fail;
        if (llama_vocab_is_eog(vocab, next)) {
            hit_eog = true;
            break;
        }
        if (step + 1 < n_predict && eval(ctx, batch, &next, 1, n_prompt + step) != 0)
            goto fail;
    }

    printf("%s    {\n", first ? "" : ",\n");
    printf("      \"model\": ");
    json_str(stdout, model_name, strlen(model_name));
    printf(",\n      \"prompt\": ");
    json_str(stdout, prompt, strlen(prompt));
    printf(",\n      \"prompt_ids\": ");
    json_ids(stdout, prompt_ids, n_prompt);
    printf(",\n      \"ids\": ");
    json_ids(stdout, ids, n_gen);
    printf(",\n      \"text\": ");
    json_str(stdout, text ? text : "", text_len);
    printf(",\n      \"stopped_at_eog\": %s", hit_eog ? "true" : "false");
    printf(",\n      \"top5_first\": [");
    for (int j = 0; j < TOP_K; j++)
        printf("%s{\"id\": %d, \"logit\": %.9g}", j ? ", " : "", top[j], (double)top_val[j]);
    printf("],\n      \"margins\": [");
    for (int j = 0; j < n_gen; j++)
        printf("%s%.6g", j ? ", " : "", (double)margins[j]);
    printf("]");
    if (plogits) {
        printf(",\n      \"prompt_logits\": [");
        for (int i = 0; i < n_prompt; i++) {
            printf("%s\n        [", i ? "," : "");
            for (int j = 0; j < n_vocab; j++)
                printf("%s%.7g", j ? ", " : "", (double)plogits[(size_t)i * (size_t)n_vocab + (size_t)j]);
            printf("]");
        }
        printf("]");
    }
    printf("\n    }");
    ret = 0;
fail:
    if (batch)
        llama_batch_ext_free(batch);
    if (ctx)
        llama_free(ctx);
    free(prompt_ids);
    free(ids);
    free(margins);
    free(plogits);
    free(text);
    return ret;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: peer_greedy -m MODEL.gguf [-t THREADS] [-n N_PREDICT] [-v] [-a] -p PROMPT [-p PROMPT]...\n");
}

int main(int argc, char **argv)
{
    const char *model_path = NULL;
    const char *prompts[MAX_PROMPTS];
    int n_prompts = 0, n_threads = 2, n_predict = 64;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-v") == 0) {
            verbose = true;
            continue;
        }
        if (strcmp(a, "-a") == 0) {
            all_logits = true;
            continue;
        }
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "-m") == 0)
            model_path = v;
        else if (strcmp(a, "-t") == 0)
            n_threads = atoi(v);
        else if (strcmp(a, "-n") == 0)
            n_predict = atoi(v);
        else if (strcmp(a, "-p") == 0 && n_prompts < MAX_PROMPTS)
            prompts[n_prompts++] = v;
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (!model_path || n_prompts == 0 || n_threads < 1 || n_predict < 1) {
        usage();
        return 2;
    }

    llama_log_set(quiet_log, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) {
        fprintf(stderr, "peer_greedy: cannot load %s\n", model_path);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const char *name = base_name(model_path);

    printf("{\n  \"model\": ");
    json_str(stdout, name, strlen(name));
    printf(",\n  \"peer\": ");
    json_str(stdout, llama_print_system_info(), strlen(llama_print_system_info()));
    printf(",\n  \"n_threads\": %d,\n  \"n_predict\": %d,\n", n_threads, n_predict);
    printf("  \"add_bos\": %s,\n  \"bos\": %d,\n  \"n_vocab\": %d,\n  \"runs\": [\n",
           llama_vocab_get_add_bos(vocab) ? "true" : "false", (int)llama_vocab_bos(vocab),
           (int)llama_vocab_n_tokens(vocab));
    int rc = 0;
    for (int i = 0; i < n_prompts && rc == 0; i++)
        rc = run_prompt(model, name, prompts[i], n_threads, n_predict, i == 0);
    printf("\n  ]\n}\n");

    llama_model_free(model);
    llama_backend_free();
    return rc == 0 ? 0 : 1;
}
