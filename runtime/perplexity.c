/* Perplexity and KL divergence over a text (kestrel/quality.h), measured
 * as llama.cpp's llama-perplexity measures them (tools/perplexity/
 * perplexity.cpp: perplexity() and kl_divergence()), so the figures of
 * the two compare.
 *
 * Per chunk of n_ctx tokens: the session is emptied, the first half runs
 * with ks_session_eval (no logits needed), the rest but the last token
 * with ks_session_eval_all, whose logits at positions n_ctx/2 .. n_ctx-2
 * are scored against the next token. Each scored row's log-softmax is
 * written to the kl_save file, or compared with the kl_base file's row:
 * KL(base || this) over the base's tokens within 16 nats of its top,
 * and whether the two top tokens agree. The per-position KL values are
 * kept for the percentile; nothing else grows with the text. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include "driver/base.h"
#include "kestrel/quality.h"
#include "runtime/session_priv.h"
#include "runtime/tokenizer.h"

static const char kl_magic[8] = { '_', 'l', 'o', 'g', 'i', 't', 's', '_' };

/* u16 per row of the file: 2 floats, then n_vocab rounded up to even. */
static uint64_t
row_u16(uint32_t n_vocab)
{
    return 2 * (((uint64_t)n_vocab + 1) / 2) + 4;
}

/* The top logit (the first when tied), its index and log(sum(exp(l - max))). */
static void
row_stats(const float *l, uint32_t n_vocab, float *max, uint32_t *imax, double *log_sum)
{
    double sum = 0.0;

    *max = l[0];
    *imax = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        if (l[i] > *max) {
            *max = l[i];
            *imax = i;
        }
    for (uint32_t i = 0; i < n_vocab; i++)
        sum += expf(l[i] - *max);
    *log_sum = log(sum);
}

/* llama-perplexity's row of log-probabilities: a step of (max - min) /
 * 65535 over [min, max], min no lower than max - 16 (anything below is
 * 0), and the log-probability of step 0 as the offset. */
static void
encode_row(const float *l, uint32_t n_vocab, uint16_t *out)
{
    float max, min = l[0], scale, min_lp;
    uint32_t imax;
    double log_sum;
    uint16_t *q = out + 4;

    row_stats(l, n_vocab, &max, &imax, &log_sum);
    for (uint32_t i = 1; i < n_vocab; i++)
        if (l[i] < min)
            min = l[i];
    if (min < max - 16)
        min = max - 16;
    scale = (max - min) / 65535.f;
    min_lp = min - max - (float)log_sum;
    memcpy(out, &scale, sizeof scale);
    memcpy(out + 2, &min_lp, sizeof min_lp);
    memset(q, 0, (row_u16(n_vocab) - 4) * sizeof(*q));
    if (scale == 0)
        return;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (l[i] > min) {
            long v = lrintf((1 / scale) * (l[i] - min));
            q[i] = (uint16_t)(v > 65535 ? 65535 : v);
        }
    }
}

/* KL(base || l) over the base's entries above -16 nats, as llama.cpp
 * sums it; *nll_base the base's NLL of |tok|, *same_top whether the two
 * agree on the top token. */
static double
kl_row(const float *l, uint32_t n_vocab, const uint16_t *base, int32_t tok, double *nll_base,
       bool *same_top)
{
    float max, scale, min_lp, top_base = 0;
    uint32_t imax, imax_base = 0;
    double log_sum, sum = 0.0;
    const uint16_t *q = base + 4;

    row_stats(l, n_vocab, &max, &imax, &log_sum);
    memcpy(&scale, base, sizeof scale);
    memcpy(&min_lp, base + 2, sizeof min_lp);
    *nll_base = -(scale * q[tok] + min_lp);
    for (uint32_t i = 0; i < n_vocab; i++) {
        float lp_base = scale * q[i] + min_lp;
        if (i == 0 || lp_base > top_base) {
            top_base = lp_base;
            imax_base = i;
        }
        if (lp_base > -16.f)
            sum += expf(lp_base) * (lp_base - (l[i] - max - (float)log_sum));
    }
    *same_top = imax == imax_base;
    return sum;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* As llama-perplexity: linear between the two nearest ranks. */
static double
percentile(const double *v, uint64_t n, double fraction)
{
    double p = fraction * (double)(n - 1);
    uint64_t i = (uint64_t)p;

    p -= (double)i;
    return (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

typedef struct kl_file {
    FILE       *f;
    const char *path;
    uint32_t    n_ctx;
    int32_t     n_vocab;
    int32_t     n_chunk;
    int32_t    *tokens;   /* [n_chunk][n_ctx] */
} kl_file;

static ks_status
read_exact(kl_file *k, void *dst, size_t n, const char *what)
{
    if (fread(dst, 1, n, k->f) != n)
        return ks_error(ferror(k->f) ? KS_ERR_IO : KS_ERR_CORRUPT,
                        "perplexity: %s: cannot read %s (the file ends early)", k->path, what);
    return KS_OK;
}

/* Opens a kl_base file, checks its header against the model and its size
 * against the header, and reads its tokens. */
static ks_status
kl_open(kl_file *k, const char *path, uint32_t n_vocab)
{
    char magic[8];
    uint64_t n_score, want, size;
    long end;
    ks_status st;

    k->path = path;
    if (!(k->f = fopen(path, "rb")))
        return ks_error(KS_ERR_IO, "perplexity: cannot open %s: %s", path, strerror(errno));
    if ((st = read_exact(k, magic, sizeof magic, "the magic")) != KS_OK ||
        (st = read_exact(k, &k->n_ctx, 4, "n_ctx")) != KS_OK ||
        (st = read_exact(k, &k->n_vocab, 4, "n_vocab")) != KS_OK ||
        (st = read_exact(k, &k->n_chunk, 4, "n_chunk")) != KS_OK)
        return st;
    if (memcmp(magic, kl_magic, sizeof magic) != 0)
        return ks_error(KS_ERR_CORRUPT, "perplexity: %s is not a file of log-probabilities "
                        "(expected the magic \"_logits_\")", path);
    if (k->n_vocab <= 0 || (uint32_t)k->n_vocab != n_vocab)
        return ks_error(KS_ERR_CORRUPT, "perplexity: %s holds n_vocab %d, the model has %u",
                        path, k->n_vocab, n_vocab);
    if (k->n_ctx < 4 || k->n_ctx > (1u << 24) || k->n_chunk <= 0 || k->n_chunk > (1 << 24))
        return ks_error(KS_ERR_CORRUPT, "perplexity: %s holds n_ctx %u and n_chunk %d; "
                        "expected 4..16M and 1..16M", path, k->n_ctx, k->n_chunk);
    n_score = (uint64_t)k->n_chunk * (k->n_ctx - 1 - k->n_ctx / 2);
    want = 20 + 4 * (uint64_t)k->n_chunk * k->n_ctx + n_score * row_u16(n_vocab) * 2;
    if (fseek(k->f, 0, SEEK_END) != 0 || (end = ftell(k->f)) < 0 ||
        fseek(k->f, 20, SEEK_SET) != 0)
        return ks_error(KS_ERR_IO, "perplexity: cannot seek in %s", path);
    size = (uint64_t)end;
    if (size != want)
        return ks_error(KS_ERR_CORRUPT, "perplexity: %s is %llu bytes; its header (n_ctx "
                        "%u, %d chunks, n_vocab %d) says %llu", path,
                        (unsigned long long)size, k->n_ctx, k->n_chunk, k->n_vocab,
                        (unsigned long long)want);
    if (!(k->tokens = malloc((uint64_t)k->n_chunk * k->n_ctx * sizeof(*k->tokens))))
        return ks_error(KS_ERR_NOMEM, "perplexity: no memory for the tokens of %s", path);
    if ((st = read_exact(k, k->tokens, (uint64_t)k->n_chunk * k->n_ctx * 4, "the tokens")))
        return st;
    for (uint64_t i = 0; i < (uint64_t)k->n_chunk * k->n_ctx; i++)
        if (k->tokens[i] < 0 || k->tokens[i] >= k->n_vocab)
            return ks_error(KS_ERR_CORRUPT, "perplexity: %s: token %llu is %d, outside the "
                            "vocabulary", path, (unsigned long long)i, k->tokens[i]);
    return KS_OK;
}

static ks_status
save_open(FILE **f, const char *path, uint32_t n_ctx, uint32_t n_vocab, uint32_t n_chunks,
          const int32_t *tokens)
{
    int32_t v = (int32_t)n_vocab, c = (int32_t)n_chunks;

    if (!(*f = fopen(path, "wb")))
        return ks_error(KS_ERR_IO, "perplexity: cannot create %s: %s", path, strerror(errno));
    if (fwrite(kl_magic, 1, 8, *f) != 8 || fwrite(&n_ctx, 4, 1, *f) != 1 ||
        fwrite(&v, 4, 1, *f) != 1 || fwrite(&c, 4, 1, *f) != 1 ||
        fwrite(tokens, 4, (size_t)n_chunks * n_ctx, *f) != (size_t)n_chunks * n_ctx)
        return ks_error(KS_ERR_IO, "perplexity: cannot write %s: %s", path, strerror(errno));
    return KS_OK;
}

/* The sums over scored positions. */
typedef struct ppl_sums {
    double   nll, nll2, nll_base;
    uint64_t count, same_top;
    double  *kl;   /* [count] */
} ppl_sums;

/* One chunk: run it, score its second half, save or compare each row. */
static ks_status
run_chunk(ks_session *s, int32_t *chunk, uint32_t n_ctx, float *logits, FILE *save,
          kl_file *base, uint16_t *row, ppl_sums *sum, double *ms)
{
    uint32_t V = s->m->hp.n_vocab, first = n_ctx / 2, n_score = n_ctx - 1 - first;
    uint64_t nv = row_u16(V);
    int32_t tok0 = chunk[0];
    uint64_t t0 = ks_now_ns();
    ks_status st;

    if (ks_tokenizer_add_bos(s->m->tok) && ks_tokenizer_bos(s->m->tok) >= 0)
        chunk[0] = ks_tokenizer_bos(s->m->tok);
    if ((st = ks_session_truncate(s, 0)) == KS_OK &&
        (st = ks_session_eval(s, chunk, first, NULL)) == KS_OK)
        st = ks_session_eval_all(s, chunk + first, n_score, logits);
    chunk[0] = tok0;
    *ms += (double)(ks_now_ns() - t0) / 1e6;
    if (st != KS_OK)
        return st;
    for (uint32_t j = 0; j < n_score; j++) {
        const float *l = logits + (uint64_t)j * V;
        int32_t tok = chunk[first + j + 1];
        float max;
        uint32_t imax;
        double log_sum, nll;

        row_stats(l, V, &max, &imax, &log_sum);
        nll = (double)max + log_sum - l[tok];
        if (!isfinite(nll))
            return ks_error(KS_ERR_CORRUPT, "perplexity: the logits at position %u are not "
                            "finite", first + j);
        sum->nll += nll;
        sum->nll2 += nll * nll;
        if (save) {
            encode_row(l, V, row);
            if (fwrite(row, 2, nv, save) != nv)
                return ks_error(KS_ERR_IO, "perplexity: cannot write %s: %s",
                                "the kl_save file", strerror(errno));
        }
        if (base) {
            double nll_base;
            bool same;
            if ((st = read_exact(base, row, nv * 2, "a row of log-probabilities")) != KS_OK)
                return st;
            sum->kl[sum->count] = kl_row(l, V, row, tok, &nll_base, &same);
            sum->nll_base += nll_base;
            sum->same_top += same;
        }
        sum->count++;
    }
    return KS_OK;
}

KS_API ks_status
ks_perplexity(ks_session *s, const int32_t *tokens, size_t n, const ks_ppl_params *p,
              ks_ppl_result *out)
{
    ks_ppl_params def = { 0 };
    kl_file base = { 0 };
    ppl_sums sum = { 0 };
    FILE *save = NULL;
    float *logits = NULL;
    int32_t *chunk = NULL;
    uint16_t *row = NULL;
    uint32_t n_ctx, n_chunks, V;
    ks_status st = KS_OK;

    if (!s)
        return ks_null_arg("ks_perplexity", "s");
    if (!out)
        return ks_null_arg("ks_perplexity", "out");
    memset(out, 0, sizeof(*out));
    if (!p)
        p = &def;
    V = s->m->hp.n_vocab;
    n_ctx = p->n_ctx ? p->n_ctx : 512;
    if (p->kl_base) {
        if ((st = kl_open(&base, p->kl_base, V)) != KS_OK)
            goto done;
        n_ctx = base.n_ctx;
        tokens = base.tokens;
        n = (size_t)base.n_chunk * n_ctx;
    } else if (!tokens && n) {
        return ks_null_arg("ks_perplexity", "tokens");
    }
    if (n_ctx < 4 || n_ctx > s->n_ctx) {
        st = ks_error(KS_ERR_INVALID_ARG, "perplexity: chunks of %u tokens; expected 4 up "
                      "to the session's context, %u", n_ctx, s->n_ctx);
        goto done;
    }
    if (!p->kl_base && n < 2 * (size_t)n_ctx) {
        st = ks_error(KS_ERR_INVALID_ARG, "perplexity: the text has %zu tokens; chunks of "
                      "%u need at least %u (or a smaller -c)", n, n_ctx, 2 * n_ctx);
        goto done;
    }
    n_chunks = (uint32_t)(n / n_ctx);
    if (p->n_chunks && p->n_chunks < n_chunks)
        n_chunks = p->n_chunks;
    logits = malloc((uint64_t)(n_ctx - 1 - n_ctx / 2) * V * sizeof(float));
    chunk = malloc((uint64_t)n_ctx * sizeof(*chunk));
    row = malloc(row_u16(V) * sizeof(*row));
    sum.kl = p->kl_base ? malloc((uint64_t)n_chunks * (n_ctx - 1 - n_ctx / 2) *
                                 sizeof(*sum.kl)) : NULL;
    if (!logits || !chunk || !row || (p->kl_base && !sum.kl)) {
        st = ks_error(KS_ERR_NOMEM, "perplexity: no memory for the logits of %u tokens",
                      n_ctx / 2);
        goto done;
    }
    if (p->kl_save && (st = save_open(&save, p->kl_save, n_ctx, V, n_chunks, tokens)))
        goto done;
    for (uint32_t c = 0; c < n_chunks; c++) {
        if (p->cancel && *p->cancel) {
            st = ks_error(KS_ERR_CANCELLED, "perplexity: cancelled at chunk %u of %u", c,
                          n_chunks);
            goto done;
        }
        memcpy(chunk, tokens + (uint64_t)c * n_ctx, n_ctx * sizeof(*chunk));
        if ((st = run_chunk(s, chunk, n_ctx, logits, save, p->kl_base ? &base : NULL, row,
                            &sum, &out->eval_ms)) != KS_OK)
            goto done;
        ks_log(KS_LOG_DEBUG, "ppl", "chunk %u of %u: ppl so far %.4f", c + 1, n_chunks,
               exp(sum.nll / (double)sum.count));
    }
    out->n_ctx = n_ctx;
    out->n_chunks = n_chunks;
    out->n_scored = sum.count;
    out->nll = sum.nll / (double)sum.count;
    out->ppl = exp(out->nll);
    {
        double var = sum.nll2 / (double)sum.count - out->nll * out->nll;
        out->ppl_err = var > 0 && sum.count > 1
                           ? sqrt(var / (double)(sum.count - 1)) * out->ppl : 0;
    }
    if (p->kl_base) {
        double total = 0;
        for (uint64_t i = 0; i < sum.count; i++)
            total += sum.kl[i];
        qsort(sum.kl, sum.count, sizeof(*sum.kl), cmp_double);
        out->have_kl = true;
        out->ppl_base = exp(sum.nll_base / (double)sum.count);
        out->kl_mean = total / (double)sum.count;
        out->kl_p99 = percentile(sum.kl, sum.count, 0.99);
        out->kl_max = sum.kl[sum.count - 1];
        out->top1 = (double)sum.same_top / (double)sum.count;
    }
done:
    if (save && fclose(save) != 0 && st == KS_OK)
        st = ks_error(KS_ERR_IO, "perplexity: cannot write %s: %s", p->kl_save,
                      strerror(errno));
    if (base.f)
        fclose(base.f);
    free(base.tokens);
    free(sum.kl);
    free(logits);
    free(chunk);
    free(row);
    return st;
}
