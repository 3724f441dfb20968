/* kestrel perplexity: llama-perplexity's perplexity and KL divergence
 * (ks_perplexity). kestrel calibrate: what an early exit costs in quality
 * and gains in speed, for self-drafting (--spec self) and early exit.
 *
 * calibrate runs the text in chunks through the full model and through
 * sessions that exit after a few candidate layers L (ks_session_params.
 * n_layers), each giving every position's logits (teacher-forced, so
 * every position sees the full model's keys and values of the text
 * before it, as early exit with its skipped layers filled later does).
 * Per position and L it keeps the exit's top probability, whether its top
 * token is the full model's, and KL(full || exit). From these:
 *   self-drafting: per L, top-1 agreement and KL (agreement is the draft's
 *   acceptance rate), the decode speed of the L-layer draft and the
 *   measured speed of --spec self at L against plain decoding;
 *   early exit: per threshold T, the output when each position exits at
 *   the first candidate L whose top probability reaches T, its agreement
 *   and KL, and a speed modelled from the measured decode time of the
 *   L-layer sessions (a + b * L) with one head per candidate tried. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kestrel/kestrel.h"
#include "kestrel/quality.h"
#include "quality.h"

enum { MAX_CAND = 8 };

typedef struct qopts {
    const char *model, *file, *kl_save, *kl_base;
    uint32_t    n_ctx, n_chunks, n_layers, n_gen;
    int32_t     n_threads;
    bool        json;
} qopts;

static void
usage_fail(const char *cmd, const char *what, const char *arg)
{
    fprintf(stderr, "kestrel %s: %s%s%s\nTry 'kestrel %s --help'.\n", cmd, what,
            arg ? " " : "", arg ? arg : "", cmd);
    exit(2);
}

static uint32_t
num(const char *cmd, const char *flag, const char *v, long lo, long hi)
{
    char *end;
    long x;

    errno = 0;
    x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "kestrel %s: %s expects an integer in %ld..%ld, got '%s'\n", cmd,
                flag, lo, hi, v ? v : "");
        exit(2);
    }
    return (uint32_t)x;
}

static void
help(const char *cmd)
{
    if (strcmp(cmd, "perplexity") == 0)
        printf("Usage: kestrel perplexity -m FILE -f TEXT [OPTIONS]\n\n"
               "Perplexity of the model over TEXT as llama-perplexity measures it:\n"
               "chunks of CTX tokens (BOS first when the model adds one), the second\n"
               "half of each scored. Runs on the CPU.\n\nOptions:\n"
               "  -c, --ctx-size N    tokens per chunk (default 512)\n"
               "      --chunks N      most chunks (default: all)\n"
               "  -t, --threads N     CPU threads\n"
               "      --layers L      exit after layer L-1: the first L layers, the final\n"
               "                      norm and the head (default: all)\n"
               "      --kl-save FILE  save every scored position's log-probabilities\n"
               "                      (llama-perplexity's --kl-divergence-base format)\n"
               "      --kl-base FILE  mean and 99th-percentile KL divergence and top-1\n"
               "                      agreement against FILE (ours or llama-perplexity's;\n"
               "                      the text and CTX come from it, no -f needed)\n"
               "      --json          one JSON object\n");
    else
        printf("Usage: kestrel calibrate -m FILE -f TEXT [OPTIONS]\n\n"
               "Tables of exit layer against top-1 agreement, KL divergence and speed\n"
               "for self-drafting (--spec self --self-layers L), and of confidence\n"
               "threshold against the same for early exit, measured on TEXT. Runs on\n"
               "the CPU.\n\nOptions:\n"
               "  -c, --ctx-size N    tokens per chunk (default 128)\n"
               "      --chunks N      most chunks (default 4)\n"
               "  -n N                tokens generated per speed sample (default 32)\n"
               "  -t, --threads N     CPU threads\n");
}

static void
parse(const char *cmd, int argc, char **argv, qopts *o)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool val = true;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help(cmd);
            exit(0);
        } else if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
            o->model = v;
        } else if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
            o->file = v;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--ctx-size") == 0) {
            o->n_ctx = num(cmd, a, v, 4, 1 << 20);
        } else if (strcmp(a, "--chunks") == 0) {
            o->n_chunks = num(cmd, a, v, 1, 1 << 20);
        } else if (strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) {
            o->n_threads = (int32_t)num(cmd, a, v, 1, 1024);
        } else if (strcmp(a, "-n") == 0 && strcmp(cmd, "calibrate") == 0) {
            o->n_gen = num(cmd, a, v, 1, 256);
        } else if (strcmp(a, "--layers") == 0 && strcmp(cmd, "perplexity") == 0) {
            o->n_layers = num(cmd, a, v, 1, 100000);
        } else if (strcmp(a, "--kl-save") == 0 && strcmp(cmd, "perplexity") == 0) {
            o->kl_save = v;
        } else if (strcmp(a, "--kl-base") == 0 && strcmp(cmd, "perplexity") == 0) {
            o->kl_base = v;
        } else if (strcmp(a, "--json") == 0 && strcmp(cmd, "perplexity") == 0) {
            o->json = true;
            val = false;
        } else {
            usage_fail(cmd, "unknown option", a);
        }
        if (val && !v)
            usage_fail(cmd, "a value is missing after", a);
        i += val;
    }
    if (!o->model)
        usage_fail(cmd, "no model given (-m FILE)", NULL);
    if (!o->file && !o->kl_base)
        usage_fail(cmd, "no text given (-f FILE)", NULL);
    if (o->kl_save && o->kl_base)
        usage_fail(cmd, "--kl-save and --kl-base exclude each other", NULL);
}

static int
fail(const char *cmd)
{
    fprintf(stderr, "kestrel %s: error: %s\n", cmd, ks_last_error());
    return 1;
}

/* The text of |path| tokenized as llama-perplexity does (BOS as the
 * model asks, no special tokens parsed). */
static int32_t *
read_tokens(const char *cmd, const ks_model *m, const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    int32_t *ids = NULL;
    long len;

    if (!f || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || !(text = malloc((size_t)len + 1)) ||
        fread(text, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "kestrel %s: error: cannot read %s: %s\n", cmd, path,
                strerror(errno));
        goto out;
    }
    if (ks_model_tokenize(m, text, (size_t)len, true, false, NULL, 0, n) != KS_OK ||
        !(ids = malloc((*n ? *n : 1) * sizeof(*ids))) ||
        ks_model_tokenize(m, text, (size_t)len, true, false, ids, *n, n) != KS_OK) {
        fail(cmd);
        free(ids);
        ids = NULL;
    }
out:
    if (f)
        fclose(f);
    free(text);
    return ids;
}

typedef struct loaded {
    ks_runtime *rt;
    ks_model   *m;
    ks_model_desc d;
} loaded;

static int
load(const char *cmd, const qopts *o, loaded *l)
{
    ks_runtime_params rp = { .backend = KS_BACKEND_CPU, .n_threads = o->n_threads,
                             .no_governor = true };

    memset(l, 0, sizeof(*l));
    if (ks_runtime_create(&rp, &l->rt) != KS_OK || ks_model_load(l->rt, o->model, NULL,
                                                                 &l->m) != KS_OK)
        return fail(cmd);
    ks_model_describe(l->m, &l->d);
    return 0;
}

static void
unload(loaded *l)
{
    ks_model_destroy(l->m);
    ks_runtime_destroy(l->rt);
}

/* A session for chunks of n_ctx and for speed samples (32 prompt tokens,
 * up to 256 generated). */
static ks_session *
session(const loaded *l, uint32_t n_ctx, uint32_t n_layers)
{
    ks_session_params sp = { .n_ctx = n_ctx > 320 ? n_ctx : 320, .n_layers = n_layers };
    ks_session *s = NULL;

    if (ks_session_create(l->m, &sp, &s) != KS_OK)
        return NULL;
    return s;
}

/* ---- perplexity ---- */

int
ks_cli_perplexity(int argc, char **argv)
{
    qopts o = { 0 };
    loaded l;
    ks_session *s = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    ks_ppl_params p = { 0 };
    ks_ppl_result r;
    int rc = 1;

    parse("perplexity", argc, argv, &o);
    if (load("perplexity", &o, &l) != 0)
        return 1;
    p.n_ctx = o.n_ctx ? o.n_ctx : 512;
    p.n_chunks = o.n_chunks;
    p.kl_save = o.kl_save;
    p.kl_base = o.kl_base;
    if (o.file && !o.kl_base && !(ids = read_tokens("perplexity", l.m, o.file, &n)))
        goto out;
    /* a kl_base file sets n_ctx: the session is sized when it is known */
    if (o.kl_base) {
        FILE *f = fopen(o.kl_base, "rb");
        char hdr[12];
        if (f && fread(hdr, 1, 12, f) == 12)
            memcpy(&p.n_ctx, hdr + 8, 4);
        if (f)
            fclose(f);
    }
    if (!(s = session(&l, p.n_ctx >= 4 && p.n_ctx <= (1u << 20) ? p.n_ctx : 512,
                      o.n_layers))) {
        fail("perplexity");
        goto out;
    }
    if (ks_perplexity(s, ids, n, &p, &r) != KS_OK) {
        fail("perplexity");
        goto out;
    }
    if (o.json) {
        printf("{\"model\":\"%s\",\"n_layers\":%u,\"n_ctx\":%u,\"n_chunks\":%u,"
               "\"n_scored\":%llu,\"ppl\":%.6f,\"ppl_err\":%.6f,\"eval_ms\":%.1f",
               l.d.arch, o.n_layers ? o.n_layers : l.d.n_layers, r.n_ctx, r.n_chunks,
               (unsigned long long)r.n_scored, r.ppl, r.ppl_err, r.eval_ms);
        if (r.have_kl)
            printf(",\"ppl_base\":%.6f,\"kl_mean\":%.6g,\"kl_p99\":%.6g,\"kl_max\":%.6g,"
                   "\"top1\":%.6f", r.ppl_base, r.kl_mean, r.kl_p99, r.kl_max, r.top1);
        printf("}\n");
    } else {
        printf("kestrel perplexity: %u chunks of %u tokens, %llu positions scored, "
               "%u of %u layers, %.1f s\n", r.n_chunks, r.n_ctx,
               (unsigned long long)r.n_scored, o.n_layers ? o.n_layers : l.d.n_layers,
               l.d.n_layers, r.eval_ms / 1000.0);
        printf("Final estimate: PPL = %.4f +/- %.5f\n", r.ppl, r.ppl_err);
        if (r.have_kl)
            printf("PPL(base)   : %.4f\nMean    KLD : %.6f\n99.0%%   KLD : %.6f\n"
                   "Maximum KLD : %.6f\nSame top p  : %.3f %%\n", r.ppl_base, r.kl_mean,
                   r.kl_p99, r.kl_max, 100.0 * r.top1);
    }
    rc = 0;
out:
    ks_session_destroy(s);
    free(ids);
    unload(&l);
    return rc;
}

/* ---- calibrate ---- */

/* Per scored position and candidate exit layer. */
typedef struct exit_stat {
    float p_top;   /* the exit's top probability */
    float kl;      /* KL(full || exit), nats */
    bool  same;    /* its top token is the full model's */
} exit_stat;

/* log(sum(exp(l))) of a row (in double, from its max) and its argmax. */
static double
log_sum_exp(const float *l, uint32_t n_vocab, uint32_t *imax)
{
    float max = l[0];
    double sum = 0;

    *imax = 0;
    for (uint32_t i = 1; i < n_vocab; i++)
        if (l[i] > max) {
            max = l[i];
            *imax = i;
        }
    for (uint32_t i = 0; i < n_vocab; i++)
        sum += exp((double)l[i] - max);
    return max + log(sum);
}

/* The logits of the scored half of a chunk, as ks_perplexity scores it. */
static ks_status
chunk_logits(ks_session *s, const int32_t *chunk, uint32_t n_ctx, float *out)
{
    uint32_t first = n_ctx / 2;
    ks_status st;

    if ((st = ks_session_truncate(s, 0)) != KS_OK ||
        (st = ks_session_eval(s, chunk, first, NULL)) != KS_OK)
        return st;
    return ks_session_eval_all(s, chunk + first, n_ctx - 1 - first, out);
}

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Greedy generation of n tokens after |prompt| from an empty session:
 * decode tokens per second; with a draft, speculation's stats too. */
static ks_status
gen_speed(ks_session *s, ks_session *draft, const int32_t *prompt, size_t n_prompt,
          uint32_t n, ks_stats *st)
{
    ks_generate_params gp = { .prompt = prompt, .n_prompt = n_prompt, .n_predict = n,
                              .ignore_eog = true, .draft = draft,
                              .spec = draft ? KS_SPEC_SELF : KS_SPEC_OFF };
    ks_status rc;

    if ((rc = ks_session_truncate(s, 0)) != KS_OK ||
        (draft && (rc = ks_session_truncate(draft, 0)) != KS_OK) ||
        (rc = ks_session_generate(s, &gp)) != KS_OK)
        return rc;
    ks_session_stats(s, st);
    return KS_OK;
}

static int
cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;

    return x < y ? -1 : x > y;
}

/* Mean and 99th percentile (as llama-perplexity) of v[0..n), sorted in place. */
static void
mean_p99(float *v, size_t n, double *mean, double *p99)
{
    double sum = 0, p = 0.99 * (double)(n - 1);
    size_t i = (size_t)p;

    for (size_t k = 0; k < n; k++)
        sum += v[k];
    qsort(v, n, sizeof(*v), cmp_float);
    *mean = sum / (double)n;
    p -= (double)i;
    *p99 = (1 - p) * v[i] + p * v[i + 1 < n ? i + 1 : n - 1];
}

int
ks_cli_calibrate(int argc, char **argv)
{
    static const double fractions[] = { 0.25, 0.375, 0.5, 0.625, 0.75, 0.875 };
    static const float thresholds[] = { 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 0.95f, 0.99f };
    qopts o = { 0 };
    loaded l;
    ks_session *full = NULL, *ex[MAX_CAND] = { 0 };
    uint32_t cand[MAX_CAND], nc = 0, n_ctx, n_chunks, n_score, V, N, n_gen, bos_n = 0;
    int32_t *ids = NULL, *chunk = NULL, bos = -1;
    float *lf = NULL, *le = NULL, *tmp = NULL;
    double *lse_f = NULL, ms_full = 0, ms_ex[MAX_CAND], a = 0, b = 0, t0;
    uint32_t *top_f = NULL;
    exit_stat *es = NULL;
    size_t n = 0, n_pos;
    ks_stats st;
    int rc = 1;

    parse("calibrate", argc, argv, &o);
    if (load("calibrate", &o, &l) != 0)
        return 1;
    N = l.d.n_layers;
    V = l.d.n_vocab;
    n_ctx = o.n_ctx ? o.n_ctx : 128;
    n_gen = o.n_gen ? o.n_gen : 32;
    if (!(ids = read_tokens("calibrate", l.m, o.file, &n)))
        goto out;
    n_chunks = (uint32_t)(n / n_ctx);
    if (n_chunks > (o.n_chunks ? o.n_chunks : 4))
        n_chunks = o.n_chunks ? o.n_chunks : 4;
    if (n_chunks == 0 || N < 2) {
        fprintf(stderr, "kestrel calibrate: error: the text has %zu tokens, less than one "
                "chunk of %u (-c), or the model has one layer\n", n, n_ctx);
        goto out;
    }
    /* BOS as llama-perplexity puts it first in every chunk */
    if (ks_model_tokenize(l.m, "", 0, true, false, &bos, 1, &n_pos) == KS_OK &&
        n_pos == 1)
        bos_n = 1;
    for (size_t i = 0; i < sizeof fractions / sizeof fractions[0]; i++) {
        uint32_t c = (uint32_t)lround(fractions[i] * N);
        if (c < 1)
            c = 1;
        if (c < N && (nc == 0 || cand[nc - 1] != c))
            cand[nc++] = c;
    }
    n_score = n_ctx - 1 - n_ctx / 2;
    n_pos = (size_t)n_chunks * n_score;
    lf = malloc((size_t)n_score * V * sizeof(*lf));
    le = malloc((size_t)n_score * V * sizeof(*le));
    tmp = malloc(n_pos * sizeof(*tmp));
    lse_f = malloc(n_score * sizeof(*lse_f));
    top_f = malloc(n_score * sizeof(*top_f));
    es = calloc(n_pos * nc, sizeof(*es));
    chunk = malloc(n_ctx * sizeof(*chunk));
    if (!lf || !le || !tmp || !lse_f || !top_f || !es || !chunk) {
        fprintf(stderr, "kestrel calibrate: error: no memory for the logits of %u "
                "positions\n", n_score);
        goto out;
    }
    if (!(full = session(&l, n_ctx, 0)))
        goto fail;
    for (uint32_t c = 0; c < nc; c++)
        if (!(ex[c] = session(&l, n_ctx, cand[c])))
            goto fail;

    fprintf(stderr, "kestrel calibrate: %u chunks of %u tokens (%zu positions scored), "
            "exits after %u candidate layers of %u\n", n_chunks, n_ctx, n_pos, nc, N);
    t0 = now_ms();
    for (uint32_t k = 0; k < n_chunks; k++) {
        memcpy(chunk, ids + (size_t)k * n_ctx, n_ctx * sizeof(*chunk));
        if (bos_n)
            chunk[0] = bos;
        if (chunk_logits(full, chunk, n_ctx, lf) != KS_OK)
            goto fail;
        for (uint32_t j = 0; j < n_score; j++)
            lse_f[j] = log_sum_exp(lf + (size_t)j * V, V, &top_f[j]);
        for (uint32_t c = 0; c < nc; c++) {
            if (chunk_logits(ex[c], chunk, n_ctx, le) != KS_OK)
                goto fail;
            for (uint32_t j = 0; j < n_score; j++) {
                const float *f = lf + (size_t)j * V, *e = le + (size_t)j * V;
                uint32_t top_e;
                double lse_e = log_sum_exp(e, V, &top_e), kl = 0;
                exit_stat *x = &es[((size_t)k * n_score + j) * nc + c];
                for (uint32_t i = 0; i < V; i++) {
                    double lpf = f[i] - lse_f[j];
                    if (lpf > -30)
                        kl += exp(lpf) * (lpf - (e[i] - lse_e));
                }
                x->p_top = (float)exp(e[top_e] - lse_e);
                x->kl = (float)kl;
                x->same = top_e == top_f[j];
            }
        }
    }
    fprintf(stderr, "kestrel calibrate: logits in %.1f s; measuring speed (%u tokens per "
            "sample, greedy)\n", (now_ms() - t0) / 1000.0, n_gen);

    /* decode time per token: full, each exit, and a + b * L fitted to them */
    {
        size_t np = n < 32 ? n : 32;
        double sx = 0, sy = 0, sxx = 0, sxy = 0, m = nc + 1;
        if (gen_speed(full, NULL, ids, np, n_gen, &st) != KS_OK)
            goto fail;
        ms_full = 1000.0 / st.decode_tps;
        for (uint32_t c = 0; c < nc; c++) {
            if (gen_speed(ex[c], NULL, ids, np, n_gen, &st) != KS_OK)
                goto fail;
            ms_ex[c] = 1000.0 / st.decode_tps;
            sx += cand[c], sy += ms_ex[c], sxx += (double)cand[c] * cand[c];
            sxy += cand[c] * ms_ex[c];
        }
        sx += N, sy += ms_full, sxx += (double)N * N, sxy += N * ms_full;
        b = (m * sxy - sx * sy) / (m * sxx - sx * sx);
        a = (sy - b * sx) / m;
        if (a < 0)
            a = 0;

        printf("## %s (%s, %u layers): self-drafting, exit after layer L-1\n\n"
               "full model: %.2f tokens/s decode (%.1f ms/token; fit: %.2f ms + %.2f ms "
               "per layer)\n\n"
               "| L | top-1 agree | KL mean | KL p99 | draft t/s | --spec self t/s | "
               "accept | tokens/pass | speed-up |\n"
               "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
               l.d.name, l.d.arch, N, 1000.0 / ms_full, ms_full, a, b);
        for (uint32_t c = 0; c < nc; c++) {
            double agree = 0, kl_mean, kl_p99;
            for (size_t p = 0; p < n_pos; p++) {
                agree += es[p * nc + c].same;
                tmp[p] = es[p * nc + c].kl;
            }
            mean_p99(tmp, n_pos, &kl_mean, &kl_p99);
            if (gen_speed(full, ex[c], ids, np, n_gen, &st) != KS_OK)
                goto fail;
            printf("| %u | %.1f %% | %.4f | %.3f | %.2f | %.2f | %.1f %% | %.2f | %.2fx |\n",
                   cand[c], 100.0 * agree / (double)n_pos, kl_mean, kl_p99,
                   1000.0 / ms_ex[c], st.decode_tps, 100.0 * st.accept_rate,
                   st.tokens_per_verify, st.decode_tps * ms_full / 1000.0);
            fflush(stdout);
        }
    }

    /* early exit at the first candidate whose top probability reaches T */
    printf("\n## %s: early exit at the first L above whose top probability >= T\n\n"
           "candidates L = ", l.d.name);
    for (uint32_t c = 0; c < nc; c++)
        printf("%u%s", cand[c], c + 1 < nc ? ", " : "");
    printf(" (else all %u); speed modelled as %.2f ms per head tried + %.2f ms per "
           "layer run\n\n| T | top-1 agree | KL mean | KL p99 | mean layers | exited | "
           "model t/s | speed-up |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
           "---: |\n", N, a, b);
    for (size_t t = 0; t < sizeof thresholds / sizeof thresholds[0]; t++) {
        double agree = 0, layers = 0, cost = 0, exited = 0, kl_mean, kl_p99;
        for (size_t p = 0; p < n_pos; p++) {
            uint32_t c = 0;
            while (c < nc && es[p * nc + c].p_top < thresholds[t])
                c++;
            if (c < nc) {
                agree += es[p * nc + c].same;
                tmp[p] = es[p * nc + c].kl;
                layers += cand[c];
                cost += b * cand[c] + a * (c + 1);
                exited++;
            } else {
                agree++;
                tmp[p] = 0;
                layers += N;
                cost += b * N + a * (nc + 1);
            }
        }
        mean_p99(tmp, n_pos, &kl_mean, &kl_p99);
        cost /= (double)n_pos;
        printf("| %.2f | %.1f %% | %.4f | %.3f | %.1f | %.0f %% | %.2f | %.2fx |\n",
               (double)thresholds[t], 100.0 * agree / (double)n_pos, kl_mean, kl_p99,
               layers / (double)n_pos, 100.0 * exited / (double)n_pos, 1000.0 / cost,
               (a + b * N) / cost);
    }
    rc = 0;
    goto out;
fail:
    fail("calibrate");
out:
    for (uint32_t c = 0; c < nc; c++)
        ks_session_destroy(ex[c]);
    ks_session_destroy(full);
    free(ids);
    free(chunk);
    free(lf);
    free(le);
    free(tmp);
    free(lse_f);
    free(top_f);
    free(es);
    unload(&l);
    return rc;
}

/* ---- prune ---- */

/* Perplexity of |path| against the reference in |base|, and its decode
 * speed over n_gen greedy tokens after the text's first 32. */
static int
measure(const qopts *o, const char *path, const char *base, const int32_t *ids, size_t n,
        uint32_t n_gen, ks_ppl_result *r, double *tps)
{
    qopts mo = *o;
    loaded l;
    ks_session *s;
    ks_ppl_params p = { .kl_base = base };
    ks_stats st;
    int rc = 1;

    mo.model = path;
    if (load("prune", &mo, &l) != 0)
        return 1;
    memset(r, 0, sizeof(*r));
    if (!(s = session(&l, o->n_ctx, 0)))
        goto out;
    if (base && ks_perplexity(s, NULL, 0, &p, r) != KS_OK)
        goto out;
    if (gen_speed(s, NULL, ids, n < 32 ? n : 32, n_gen, &st) != KS_OK)
        goto out;
    *tps = st.decode_tps;
    rc = 0;
out:
    if (rc)
        fail("prune");
    ks_session_destroy(s);
    unload(&l);
    return rc;
}

int
ks_cli_prune(int argc, char **argv)
{
    qopts o = { 0 };
    const char *in = NULL, *out = NULL, *list = NULL;
    uint32_t drop[256], n_drop = 0, n_auto = 0;
    char dir[] = "/tmp/kestrel-prune-XXXXXX", base[64], tmp[64];
    int32_t *ids = NULL;
    size_t n = 0;
    ks_ppl_result r_in, r_out;
    double tps_in = 0, tps_out = 0;
    bool have_dir = false;
    int rc = 1;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("Usage: kestrel prune IN OUT --drop-layers auto[:K]|LIST [OPTIONS]\n\n"
                   "Writes OUT: the GGUF file IN without some of its layers. LIST names\n"
                   "them (0-based, comma-separated); auto:K measures, on the text of -f,\n"
                   "the KL divergence that removing each layer alone costs and drops the\n"
                   "K cheapest (auto: K = 1). Then prints the perplexity, KL and top-1\n"
                   "agreement of OUT against IN on the text, and both decode speeds.\n"
                   "Runs on the CPU.\n\nOptions:\n"
                   "  -f, --file TEXT     the calibration text (needed by auto)\n"
                   "  -c, --ctx-size N    tokens per chunk (default 128)\n"
                   "      --chunks N      most chunks (default 2)\n"
                   "  -t, --threads N     CPU threads\n");
            return 0;
        } else if (strcmp(a, "--drop-layers") == 0 && v) {
            list = v;
            i++;
        } else if ((strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) && v) {
            o.file = v;
            i++;
        } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--ctx-size") == 0) && v) {
            o.n_ctx = num("prune", a, v, 4, 1 << 20);
            i++;
        } else if (strcmp(a, "--chunks") == 0 && v) {
            o.n_chunks = num("prune", a, v, 1, 1 << 20);
            i++;
        } else if ((strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) && v) {
            o.n_threads = (int32_t)num("prune", a, v, 1, 1024);
            i++;
        } else if (a[0] == '-') {
            usage_fail("prune", "unknown option or missing value:", a);
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            usage_fail("prune", "unexpected argument", a);
        }
    }
    if (!in || !out || !list)
        usage_fail("prune", "expected IN OUT --drop-layers auto[:K]|LIST", NULL);
    if (!o.n_ctx)
        o.n_ctx = 128;
    if (!o.n_chunks)
        o.n_chunks = 2;
    if (strncmp(list, "auto", 4) == 0) {
        n_auto = list[4] == ':' ? num("prune", "--drop-layers auto:K", list + 5, 1, 255) : 1;
        if (list[4] && list[4] != ':')
            usage_fail("prune", "--drop-layers expects auto, auto:K or a list, got", list);
        if (!o.file)
            usage_fail("prune", "--drop-layers auto measures on a text: give -f TEXT", NULL);
    } else {
        for (const char *p = list; *p; n_drop++) {
            char *end;
            long x = strtol(p, &end, 10);
            if (end == p || x < 0 || x > 100000 || (*end && *end != ',') || n_drop == 256)
                usage_fail("prune", "--drop-layers expects layer numbers like 3,7,12, got",
                           list);
            drop[n_drop] = (uint32_t)x;
            p = *end ? end + 1 : end;
        }
    }

    if (!mkdtemp(dir)) {
        fprintf(stderr, "kestrel prune: error: cannot make a directory in /tmp: %s\n",
                strerror(errno));
        return 1;
    }
    have_dir = true;
    snprintf(base, sizeof base, "%s/base.kld", dir);
    snprintf(tmp, sizeof tmp, "%s/candidate.gguf", dir);
    if (o.file) {
        /* the reference: IN's log-probabilities on the text */
        loaded l;
        ks_session *s;
        ks_ppl_params p = { .n_ctx = o.n_ctx, .n_chunks = o.n_chunks, .kl_save = base };
        qopts io = o;
        io.model = in;
        if (load("prune", &io, &l) != 0)
            goto out;
        if (!(ids = read_tokens("prune", l.m, o.file, &n)) ||
            !(s = session(&l, o.n_ctx, 0)) || ks_perplexity(s, ids, n, &p, &r_in) != KS_OK) {
            if (ids)
                fail("prune");
            unload(&l);
            goto out;
        }
        ks_session_destroy(s);
        if (n_auto) {
            uint32_t N = l.d.n_layers;
            double *kl = calloc(N, sizeof(*kl));
            bool *used = calloc(N, sizeof(*used));
            if (!kl || !used || n_auto >= N) {
                fprintf(stderr, "kestrel prune: error: cannot drop %u of %u layers\n", n_auto,
                        N);
                free(kl);
                free(used);
                unload(&l);
                goto out;
            }
            fprintf(stderr, "kestrel prune: the KL divergence that dropping each layer alone "
                    "costs (%u chunks of %u tokens):\n", r_in.n_chunks, r_in.n_ctx);
            for (uint32_t i = 0; i < N; i++) {
                ks_ppl_result r;
                double t;
                if (ks_prune_file(in, tmp, &i, 1) != KS_OK ||
                    measure(&o, tmp, base, ids, n, 1, &r, &t) != 0) {
                    fail("prune");
                    free(kl);
                    free(used);
                    unload(&l);
                    goto out;
                }
                kl[i] = r.kl_mean;
                fprintf(stderr, "  layer %2u: KL %.4f, top-1 %.1f %%, PPL %.3f\n", i,
                        r.kl_mean, 100.0 * r.top1, r.ppl);
            }
            for (uint32_t k = 0; k < n_auto; k++) {
                uint32_t best = N;
                for (uint32_t i = 0; i < N; i++)
                    if (!used[i] && (best == N || kl[i] < kl[best]))
                        best = i;
                used[best] = true;
                drop[n_drop++] = best;
            }
            free(kl);
            free(used);
        }
        unload(&l);
    }
    if (ks_prune_file(in, out, drop, n_drop) != KS_OK) {
        fail("prune");
        goto out;
    }
    printf("kestrel prune: wrote %s without layer%s", out, n_drop > 1 ? "s" : "");
    for (uint32_t k = 0; k < n_drop; k++)
        printf("%s%u", k ? "," : " ", drop[k]);
    printf("\n");
    if (measure(&o, in, NULL, ids, n, 32, &r_out, &tps_in) != 0 ||
        measure(&o, out, o.file ? base : NULL, ids, n, 32, &r_out, &tps_out) != 0)
        goto out;
    if (o.file)
        printf("quality on %s: PPL %.4f (was %.4f), KL mean %.4f, p99 %.4f, top-1 "
               "%.1f %%\n", o.file, r_out.ppl, r_in.ppl, r_out.kl_mean, r_out.kl_p99,
               100.0 * r_out.top1);
    printf("decode: %.2f tokens/s (was %.2f), %.2fx\n", tps_out, tps_in,
           tps_in > 0 ? tps_out / tps_in : 0.0);
    rc = 0;
out:
    free(ids);
    if (have_dir) {
        unlink(base);
        unlink(tmp);
        rmdir(dir);
    }
    return rc;
}
