/* kestrel serve: an OpenAI-compatible HTTP server, a client of the public
 * API only.
 *
 * HTTP is libmicrohttpd with a thread per connection; JSON is cJSON. One
 * model is loaded; --parallel N slots each hold their own ks_session on it
 * and a worker thread. A request is tokenized in its connection thread,
 * then given to an idle slot (the one whose held tokens share the longest
 * prefix with the prompt, so a conversation reuses its KV cache) or put in
 * a bounded queue (--queue N; beyond it: 503 with Retry-After). The worker
 * publishes text as it comes into the job; the connection thread sends it,
 * as server-sent events when the request streams. A client that goes away
 * sets the job's cancel flag, which ks_session_generate reads between
 * tokens, so its slot is free at once. SIGINT/SIGTERM stop accepting,
 * let every admitted request finish, then exit.
 *
 * POST /v1/kestrel/verify is remote speculative decoding's target side:
 * {"tokens": [the context's ids], "draft": [drafted ids], "n_prompt": how
 * many of the tokens are the prompt (optional, 0)} runs in a slot
 * like a completion (the slot that holds the longest common prefix) and
 * answers {"accepted": [the prefix of the draft that greedy decoding of
 * the context gives], "next": the token after it}.
 *
 * With --fallback-url, a request goes to an OpenAI-compatible server
 * instead when it asks ("kestrel": {"route": "fallback"}), when its
 * prompt does not fit the local context, when the local model fails
 * before it showed anything, or (--fallback-when-unsure) when the mean
 * entropy of the answer's first tokens, held back until then, says the
 * local answer is weak. A thread of its own relays the
 * upstream's stream into the job's text, as a slot's worker would; when
 * the upstream fails (HTTP error, malformed JSON, a stream cut short, no
 * data within --fallback-timeout) and the prompt fits, the job goes to
 * the queue with what came so far appended to its prompt, and the local
 * model goes on from there; else it ends with an error, the text so far
 * kept. Every answer says its route: "kestrel": {"route", "why"}.
 * --privacy strict forbids every outbound request. The log names the host
 * and the bytes, never the content.
 *
 * KESTREL_SERVE_TOKEN_DELAY_MS=N makes each token wait N ms: a test hook,
 * so that tests can hold a slot busy without a slow model.
 *
 * Everything shared (queue, slots' state, jobs' text, counters) is under
 * one mutex, g.mu; generation runs outside it. */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "kestrel/kestrel.h"
#include "serve.h"
#ifdef KESTREL_FALLBACK
#include <curl/curl.h>
#include "fallback.h"
#endif

#define DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"
#define MAX_STOPS 4
#define MAX_UNSURE 64

/* ---- options ---- */

typedef struct sv_opts {
    const char *model;
    const char *host;
    int         port;
    int         parallel;
    int         queue;
    const char *api_key;
    long        max_body;
    long        max_prompt;     /* 0: the context minus one */
    long        max_tokens;     /* 0: the context */
    const char *fallback_url;   /* an OpenAI base URL (.../v1), or NULL */
    const char *fallback_key;
    const char *fallback_model; /* NULL: the request's own */
    long        fallback_timeout_ms;
    bool        privacy_strict; /* nothing leaves the device */
    float       unsure_nats;    /* --fallback-when-unsure; 0: off */
    long        unsure_tokens;  /* tokens the rule reads (1..MAX_UNSURE) */
    ks_runtime_params rp;
    ks_session_params sp;
} sv_opts;

/* ---- jobs and slots ---- */

enum { FIN_NONE = 0, FIN_STOP, FIN_LENGTH, FIN_CANCELLED, FIN_ERROR };
enum { ROUTE_LOCAL = 0, ROUTE_FALLBACK };
/* what a request's "kestrel": {"route"} asks */
enum { ASK_AUTO = 0, ASK_LOCAL, ASK_FALLBACK };

typedef struct job {
    int          refs;         /* connection + worker/queue */
    bool         chat, stream, include_usage;
    int32_t     *prompt;
    size_t       n_prompt;
    uint32_t     max_tokens;
    ks_sampling  sampling;
    bool         ignore_eos;
    char        *stops[MAX_STOPS];
    size_t       n_stops;
    char        *json_schema;  /* response_format: the schema text, or NULL */
    /* POST /v1/kestrel/verify: prompt is the context, draft the ids to
     * verify; the worker sets n_accepted and next_token */
    bool         verify;
    int32_t     *draft;
    size_t       n_draft;
    size_t       n_verify_prompt;  /* leading context ids that are prompt */
    uint32_t     n_accepted;
    int32_t      next_token;
    /* routing: where it runs and why; fwd is the body for the fallback
     * (the request with "stream": true), too_long when the prompt does
     * not fit the local context (only with a fallback) */
    int          ask, route;
    char         why[320];
    char        *fwd;
    bool         too_long;
    /* the confidence rule: the entropy of the first generated tokens; the
     * text is held back (holding) until the rule has read them */
    float        entropy[MAX_UNSURE];
    uint32_t     n_entropy;
    float        mean_entropy;
    bool         holding, unsure, checked, handed_off;
    char         model[128];
    char         id[48];
    long         created;
    /* output, under g.mu */
    char        *text;
    size_t       len, cap;
    uint32_t     n_gen, n_cached;
    int          finish;
    char         err[256];
    bool         done;
    volatile int cancel;
    pthread_cond_t cond;
    struct job  *next;         /* queue link */
    /* worker only: text not yet published (a possible stop string's start,
     * or a UTF-8 character's first bytes) */
    char        *pend;
    size_t       plen, pcap;
} job;

typedef struct slot {
    int            index;
    ks_session    *sess;
    int32_t       *held;       /* the tokens the session holds */
    uint32_t       n_held, cap;
    job           *job;        /* assigned, NULL when idle */
    pthread_cond_t cond;
    pthread_t      thread;
} slot;

static struct {
    pthread_mutex_t mu;
    sv_opts        o;
    ks_runtime    *rt;
    ks_model      *model;
    char           model_name[128];
    uint32_t       n_ctx;
    slot          *slots;
    int            n_slots;
    job           *q_head, *q_tail;
    int            n_queued;
    int            n_busy;
    int            n_active;   /* admitted requests not yet answered */
    pthread_cond_t idle;       /* n_active reached 0 */
    bool           quit;
    bool           draining;   /* a signal came: admit nothing new */
    long           token_delay_ms;  /* KESTREL_SERVE_TOKEN_DELAY_MS (tests) */
    uint64_t       id_seq;
    /* counters for /metrics */
    uint64_t       m_requests, m_errors, m_rejected, m_cancelled;
    uint64_t       m_prompt_tokens, m_cached_tokens, m_gen_tokens;
    uint64_t       m_verify_drafted, m_verify_accepted;
    uint64_t       m_fallback, m_fallback_failed, m_fallback_bytes_sent;
    double         m_gen_seconds;
    double         m_paced_seconds;  /* the governor's waits */
    bool           m_governed;       /* the last request was governed */
    int32_t        m_threads;        /* threads the last request ended on */
} g;

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The cancel flag is written by connection threads and read by the worker
 * (and by ks_session_generate through its volatile pointer). */
static bool
cancelled(job *j)
{
    return __atomic_load_n(&j->cancel, __ATOMIC_RELAXED) != 0;
}

static void
job_free(job *j)
{
    free(j->prompt);
    for (size_t i = 0; i < j->n_stops; i++)
        free(j->stops[i]);
    free(j->json_schema);
    free(j->fwd);
    free(j->draft);
    free(j->text);
    free(j->pend);
    pthread_cond_destroy(&j->cond);
    free(j);
}

/* Drops one reference under g.mu; the last one frees the job and ends the
 * request's count for draining. */
static void
job_unref_locked(job *j)
{
    if (--j->refs > 0)
        return;
    job_free(j);
    if (--g.n_active == 0)
        pthread_cond_broadcast(&g.idle);
}

static bool
buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 256);
        while (nc < *len + n + 1)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return false;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

/* The length of the longest common prefix of two token arrays. */
static size_t
common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

/* Gives queued jobs to idle slots, each to the idle slot that shares the
 * longest prefix with its prompt. Under g.mu. */
static void
dispatch_locked(void)
{
    while (g.q_head) {
        slot *best = NULL;
        size_t best_n = 0;
        job *j = g.q_head;

        for (int i = 0; i < g.n_slots; i++) {
            slot *s = &g.slots[i];
            if (s->job)
                continue;
            size_t n = common_prefix(s->held, s->n_held, j->prompt,
                                     j->n_prompt);
            if (!best || n > best_n) {
                best = s;
                best_n = n;
            }
        }
        if (!best)
            return;
        g.q_head = j->next;
        if (!g.q_head)
            g.q_tail = NULL;
        j->next = NULL;
        g.n_queued--;
        g.n_busy++;
        best->job = j;
        pthread_cond_signal(&best->cond);
    }
}

/* ---- generation (worker threads) ---- */

/* How many bytes at the end of s[0..n) begin a UTF-8 character that is not
 * complete yet (0 to 3). */
static size_t
utf8_partial_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80)
            continue;               /* a continuation byte: look further */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Moves pend[0..n) to the job's published text. */
static void
publish(job *j, size_t n)
{
    if (n == 0 || j->holding)
        return;
    pthread_mutex_lock(&g.mu);
    if (!buf_append(&j->text, &j->len, &j->cap, j->pend, n))
        __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&g.mu);
    memmove(j->pend, j->pend + n, j->plen - n);
    j->plen -= n;
}

/* The confidence rule over the first n generated tokens: their mean
 * entropy above --fallback-when-unsure. Sets j->unsure. */
static bool
unsure(job *j, uint32_t n)
{
    double sum = 0;

    if (n > (uint32_t)g.o.unsure_tokens)
        n = (uint32_t)g.o.unsure_tokens;
    for (uint32_t i = 0; i < n; i++)
        sum += j->entropy[i];
    j->checked = true;
    j->unsure = n > 0 && sum / n > g.o.unsure_nats;
    return j->unsure;
}

static bool
on_token(void *user, int32_t token, const char *piece, size_t len)
{
    job *j = user;
    size_t hold = 0;

    (void)token;
    if (g.token_delay_ms > 0) {
        struct timespec ts = { g.token_delay_ms / 1000,
                               (g.token_delay_ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
    }
    j->n_gen++;
    if (!buf_append(&j->pend, &j->plen, &j->pcap, piece, len))
        return false;
    /* A stop string: publish what comes before it and stop. Text already
     * published never holds the start of one (it is held back below). */
    size_t cut = SIZE_MAX;
    for (size_t i = 0; i < j->n_stops; i++) {
        char *at = memmem(j->pend, j->plen, j->stops[i], strlen(j->stops[i]));
        if (at && (size_t)(at - j->pend) < cut)
            cut = (size_t)(at - j->pend);
    }
    if (cut != SIZE_MAX) {
        j->plen = cut;
        publish(j, cut);
        j->finish = FIN_STOP;
        return false;
    }
    /* the confidence rule has read its tokens: stop to hand the request
     * to the fallback, or let the text out */
    if (j->holding && j->n_gen >= (uint32_t)g.o.unsure_tokens) {
        if (unsure(j, j->n_gen))
            return false;
        j->holding = false;
    }
    for (size_t i = 0; i < j->n_stops; i++) {
        size_t sl = strlen(j->stops[i]);
        for (size_t k = sl - 1; k > hold; k--)
            if (k <= j->plen &&
                memcmp(j->pend + j->plen - k, j->stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    size_t part = utf8_partial_tail(j->pend, j->plen);
    if (part > hold)
        hold = part;
    publish(j, j->plen - hold);
    return !cancelled(j);
}

#ifdef KESTREL_FALLBACK
static void *fallback_main(void *arg);
#endif

/* run_job gave the request up (j->handed_off, j->why says why; nothing
 * of the local answer was shown): it goes to the fallback, a thread of its
 * own with a reference of its own, which ends the job. Under g.mu, in the
 * worker, so that the fallback cannot hand the job back to a slot before
 * this one is free. False when the thread cannot start: the job ends with
 * an error. */
static bool
hand_to_fallback_locked(job *j)
{
    j->route = ROUTE_FALLBACK;
    j->handed_off = false;
#ifdef KESTREL_FALLBACK
    pthread_t t;
    pthread_attr_t at;
    bool ok;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    j->refs++;
    g.m_fallback++;
    if (!(ok = pthread_create(&t, &at, fallback_main, j) == 0))
        j->refs--;
    pthread_attr_destroy(&at);
    if (ok)
        return true;
#endif
    j->finish = FIN_ERROR;
    snprintf(j->err, sizeof j->err, "cannot start the fallback");
    return false;
}

static void
run_job(slot *s, job *j)
{
    ks_generate_params gp = { 0 };
    ks_status st;
    double t0;
    size_t common = common_prefix(s->held, s->n_held, j->prompt, j->n_prompt);

    /* Keep at least one prompt token to run, so the first sampled token
     * comes from logits computed now. */
    if (common == j->n_prompt && common > 0)
        common--;
    if (ks_session_truncate(s->sess, (uint32_t)common) != KS_OK) {
        ks_session_truncate(s->sess, 0);
        common = 0;
    }
    memcpy(s->held + common, j->prompt + common,
           (j->n_prompt - common) * sizeof(int32_t));
    s->n_held = (uint32_t)j->n_prompt;
    j->n_cached = (uint32_t)common;

    gp.prompt = j->prompt + common;
    gp.n_prompt = j->n_prompt - common;
    gp.n_predict = j->max_tokens;
    gp.sampling = j->sampling;
    gp.on_token = on_token;
    gp.user = j;
    gp.cancel = &j->cancel;
    gp.ignore_eog = j->ignore_eos;
    gp.json_schema = j->json_schema;
    gp.out_tokens = s->held + j->n_prompt;
    gp.out_cap = s->cap - j->n_prompt;
    gp.out_entropy = j->entropy;
    gp.entropy_cap = (size_t)g.o.unsure_tokens;
    j->holding = g.o.unsure_nats > 0 && j->fwd && j->ask != ASK_LOCAL &&
                 !j->checked;
    t0 = now_s();
    st = ks_session_generate(s->sess, &gp);
    double dt = now_s() - t0;
    {
        double sum = 0;
        j->n_entropy = (uint32_t)(gp.n_out < gp.entropy_cap ? gp.n_out
                                                           : gp.entropy_cap);
        for (uint32_t i = 0; i < j->n_entropy; i++)
            sum += j->entropy[i];
        j->mean_entropy = j->n_entropy ? (float)(sum / j->n_entropy) : 0;
    }
    /* ended before the rule read all its tokens: it reads those there are */
    if (j->holding && !j->unsure && !cancelled(j) && !unsure(j, gp.n_out))
        j->holding = false;

    /* What the session holds now: the prompt and what it emitted. */
    s->n_held = (uint32_t)(j->n_prompt + gp.n_out);
    if (ks_session_n_past(s->sess) != s->n_held) {
        ks_session_truncate(s->sess, 0);
        s->n_held = 0;
    }
    /* the worker hands it to the fallback: an unsure answer, or a local
     * model that failed before anything was shown */
    bool failed = gp.stop != KS_STOP_EOG && gp.stop != KS_STOP_LENGTH &&
                  gp.stop != KS_STOP_CONTEXT && gp.stop != KS_STOP_CALLBACK &&
                  gp.stop != KS_STOP_CANCELLED;
    if (j->holding && j->unsure)
        snprintf(j->why, sizeof j->why, "the local answer is unsure: its "
                 "first %u tokens' mean entropy %.3f nats is above %.3f "
                 "(--fallback-when-unsure)", j->n_entropy, j->mean_entropy,
                 g.o.unsure_nats);
    else if (failed && j->fwd && j->ask != ASK_LOCAL && !j->checked &&
             j->len == 0 && !cancelled(j))
        snprintf(j->why, sizeof j->why, "the local model failed to run (%s)",
                 st != KS_OK ? ks_last_error() : "unknown");
    else
        failed = false;
    if ((j->holding && j->unsure) || failed) {
        j->plen = 0;
        j->n_gen = 0;
        j->finish = FIN_NONE;
        j->checked = true;
        j->handed_off = true;
        return;
    }
    j->holding = false;
    if (j->finish == FIN_STOP)
        publish(j, j->plen);    /* held back until the rule had read */
    if (j->finish != FIN_STOP) {
        publish(j, j->plen);
        switch (gp.stop) {
        case KS_STOP_EOG:       j->finish = FIN_STOP; break;
        case KS_STOP_LENGTH:
        case KS_STOP_CONTEXT:   j->finish = FIN_LENGTH; break;
        case KS_STOP_CALLBACK:
        case KS_STOP_CANCELLED: j->finish = FIN_CANCELLED; break;
        default:
            j->finish = FIN_ERROR;
            snprintf(j->err, sizeof j->err, "generation failed: %s",
                     st != KS_OK ? ks_last_error() : "unknown");
        }
    }
    pthread_mutex_lock(&g.mu);
    g.m_prompt_tokens += j->n_prompt;
    g.m_cached_tokens += common;
    g.m_gen_tokens += j->n_gen;
    g.m_gen_seconds += dt;
    {
        ks_stats ks;
        ks_session_stats(s->sess, &ks);
        g.m_paced_seconds += ks.paced_ms / 1000.0;
        g.m_governed = ks.governed;
        g.m_threads = ks.n_threads;
    }
    if (j->finish == FIN_CANCELLED)
        g.m_cancelled++;
    pthread_mutex_unlock(&g.mu);
}

/* The index of the largest of n logits, the first one on a tie (as the
 * sampler's greedy pick). */
static int32_t
argmax(const float *x, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return (int32_t)best;
}

/* Verification for a remote drafter, greedy: the logits after the
 * context's last token and after each drafted token come from the target;
 * the drafted ids are accepted while they equal the target's greedy pick,
 * and the first pick that differs (or the one after the whole draft) is
 * the next token. The session keeps the context and the accepted ids, so
 * the next call (the context grown by them and the next token) runs one
 * token plus its draft. The tokens are computed as plain decoding of the
 * prompt (the first n_prompt ids) would compute them, bit for bit: the
 * prompt in batches from position 0 (so a slot reuses it only when it
 * holds all of it, with ids after it), every later id alone (eval_all). */
static void
run_verify(slot *s, job *j)
{
    ks_model_desc md;
    ks_status st;
    size_t n = j->n_prompt, nd = j->n_draft;
    size_t common = common_prefix(s->held, s->n_held, j->prompt, n);
    float *logits = NULL;
    int32_t *toks = NULL;

    ks_model_describe(g.model, &md);
    if (common == n)
        common--;               /* the last token's logits are needed */
    if (common < j->n_verify_prompt ||
        (common == j->n_verify_prompt && common == n - 1))
        common = 0;             /* the prompt runs again, in batches */
    if (ks_session_truncate(s->sess, (uint32_t)common) != KS_OK) {
        ks_session_truncate(s->sess, 0);
        common = 0;
    }
    s->n_held = (uint32_t)common;
    j->n_cached = (uint32_t)common;
    logits = malloc((nd + 1) * md.n_vocab * sizeof(float));
    toks = malloc((nd + 1) * sizeof(int32_t));
    if (!logits || !toks) {
        snprintf(j->err, sizeof j->err, "verification failed: no memory "
                 "for %zu rows of logits", nd + 1);
        goto fail;
    }
    /* the prompt's part not held, in batches; then the rest and the
     * draft alone, the logits of the context's last id in row 0 */
    size_t n_batch_end = j->n_verify_prompt > common ? j->n_verify_prompt
                                                     : common;
    st = KS_OK;
    if (n_batch_end == n) {
        st = ks_session_eval(s->sess, j->prompt + common, n - common, logits);
        if (st == KS_OK && nd > 0)
            st = ks_session_eval_all(s->sess, j->draft, nd,
                                     logits + md.n_vocab);
    } else {
        if (n_batch_end > common)
            st = ks_session_eval(s->sess, j->prompt + common,
                                 n_batch_end - common, NULL);
        size_t nr = n - n_batch_end;
        float *rows = logits;
        if (st == KS_OK && nr > 1) {   /* ids whose logits are not needed */
            free(logits);
            rows = logits = malloc((nr + nd) * md.n_vocab * sizeof(float));
            free(toks);
            toks = malloc((nr + nd) * sizeof(int32_t));
            if (!logits || !toks) {
                snprintf(j->err, sizeof j->err, "verification failed: no "
                         "memory for %zu rows of logits", nr + nd);
                goto fail;
            }
            rows = logits + (nr - 1) * md.n_vocab;
        }
        if (st == KS_OK) {
            memcpy(toks, j->prompt + n_batch_end, nr * sizeof(int32_t));
            memcpy(toks + nr, j->draft, nd * sizeof(int32_t));
            st = ks_session_eval_all(s->sess, toks, nr + nd, logits);
        }
        if (st == KS_OK && rows != logits)
            memmove(logits, rows, (nd + 1) * md.n_vocab * sizeof(float));
    }
    if (st != KS_OK)
        goto fail_st;
    size_t acc = 0;
    int32_t next = argmax(logits, md.n_vocab);
    while (acc < nd && next == j->draft[acc]) {
        acc++;
        next = argmax(logits + acc * md.n_vocab, md.n_vocab);
    }
    if ((st = ks_session_truncate(s->sess, (uint32_t)(n + acc))) != KS_OK)
        goto fail_st;
    memcpy(s->held + common, j->prompt + common,
           (n - common) * sizeof(int32_t));
    memcpy(s->held + n, j->draft, acc * sizeof(int32_t));
    s->n_held = (uint32_t)(n + acc);
    j->n_accepted = (uint32_t)acc;
    j->next_token = next;
    j->finish = FIN_STOP;
    free(logits);
    free(toks);
    pthread_mutex_lock(&g.mu);
    g.m_prompt_tokens += n;
    g.m_cached_tokens += common;
    g.m_verify_drafted += nd;
    g.m_verify_accepted += acc;
    pthread_mutex_unlock(&g.mu);
    return;
fail_st:
    snprintf(j->err, sizeof j->err, "verification failed: %s",
             ks_last_error());
fail:
    free(logits);
    free(toks);
    ks_session_truncate(s->sess, 0);
    s->n_held = 0;
    j->finish = FIN_ERROR;
}

static void *
worker(void *arg)
{
    slot *s = arg;

    pthread_mutex_lock(&g.mu);
    for (;;) {
        while (!s->job && !g.quit)
            pthread_cond_wait(&s->cond, &g.mu);
        if (!s->job)
            break;
        job *j = s->job;
        if (cancelled(j)) {
            j->finish = FIN_CANCELLED;
            g.m_cancelled++;
        } else {
            pthread_mutex_unlock(&g.mu);
            if (j->verify)
                run_verify(s, j);
            else
                run_job(s, j);
            pthread_mutex_lock(&g.mu);
        }
        if (!j->handed_off || !hand_to_fallback_locked(j))
            j->done = true;     /* else the fallback's thread ends it */
        pthread_cond_broadcast(&j->cond);
        s->job = NULL;
        g.n_busy--;
        job_unref_locked(j);
        dispatch_locked();
    }
    pthread_mutex_unlock(&g.mu);
    return NULL;
}

/* ---- JSON helpers ---- */

/* s[0..n) as a NUL-terminated string in valid UTF-8: each byte that is not
 * part of a valid sequence becomes U+FFFD, so cJSON's output is valid. */
static char *
utf8_clean(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    char *out = malloc(n * 3 + 1), *w = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2
                   : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4
                   : 0;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
        else if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
        bool ok = len > 0 && i + len <= n && c != 0;
        for (size_t k = 1; ok && k < len; k++) {
            unsigned char x = u[i + k];
            ok = x >= (k == 1 ? lo : 0x80) && x <= (k == 1 ? hi : 0xBF);
        }
        if (ok) {
            memcpy(w, u + i, len);
            w += len;
            i += len;
        } else {
            memcpy(w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        }
    }
    *w = '\0';
    return out;
}

static void
add_clean_string(cJSON *obj, const char *key, const char *s, size_t n)
{
    char *c = utf8_clean(s, n);
    cJSON_AddStringToObject(obj, key, c ? c : "");
    free(c);
}

/* ---- HTTP ---- */

typedef struct conn {
    char  *body;
    size_t len, cap;
    bool   too_big;
} conn;

static enum MHD_Result
send_text(struct MHD_Connection *c, unsigned code, const char *type,
          char *text, const char *retry_after)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (retry_after)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
send_json(struct MHD_Connection *c, unsigned code, cJSON *obj)
{
    char *text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!text)
        return MHD_NO;
    return send_text(c, code, "application/json", text, NULL);
}

static cJSON *
error_json(const char *message, const char *type, const char *param,
           const char *code)
{
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root,
                                                                    "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    return root;
}

/* An error in the OpenAI format. */
static enum MHD_Result
send_error(struct MHD_Connection *c, unsigned http, const char *param,
           const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static enum MHD_Result
send_error(struct MHD_Connection *c, unsigned http, const char *param,
           const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    const char *type = http == 401 ? "authentication_error"
                     : http == 404 ? "not_found_error"
                     : http == 503 ? "server_overloaded"
                     : http >= 500 ? "server_error" : "invalid_request_error";

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g.mu);
    g.m_errors++;
    pthread_mutex_unlock(&g.mu);
    cJSON *tree = error_json(msg, type, param, code);
    char *text = cJSON_PrintUnformatted(tree);
    cJSON_Delete(tree);
    if (!text)
        return MHD_NO;
    {
        struct MHD_Response *r = MHD_create_response_from_buffer(
            strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json");
        if (http == 503)
            MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        if (http == 401)
            MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                    "Bearer");
        enum MHD_Result ret = MHD_queue_response(c, http, r);
        MHD_destroy_response(r);
        return ret;
    }
}

/* ---- requests ---- */

typedef struct req_error {
    unsigned    http;
    const char *param;          /* NULL or param_buf */
    char        param_buf[64];
    const char *code;
    char        msg[400];
} req_error;

static bool
reject(req_error *e, unsigned http, const char *param, const char *code,
       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static bool
reject(req_error *e, unsigned http, const char *param, const char *code,
       const char *fmt, ...)
{
    va_list ap;

    e->http = http;
    e->param = NULL;
    if (param) {    /* a copy: it may name a key of a tree about to go */
        snprintf(e->param_buf, sizeof e->param_buf, "%s", param);
        e->param = e->param_buf;
    }
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

/* The fields a request may carry: ours, and OpenAI's that we accept and
 * ignore (they change nothing a client relies on). Any other is a 400, so
 * a misspelt parameter is never silently dropped. */
static const char *const chat_fields[] = {
    "model", "messages", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "stop", "seed", "n", "stream", "stream_options",
    "user", "top_k", "min_p", "ignore_eos", "response_format", "kestrel",
    NULL,
};
static const char *const completion_fields[] = {
    "model", "prompt", "temperature", "top_p", "max_tokens", "stop", "seed",
    "n", "stream", "stream_options", "user", "top_k", "min_p", "ignore_eos",
    "kestrel", NULL,
};

static bool
get_number(cJSON *root, const char *key, double lo, double hi, bool integer,
           double *out, bool *present, req_error *e)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);

    *present = false;
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsNumber(v))
        return reject(e, 400, key, "invalid_type", "'%s' must be a %s", key,
                      integer ? "integer" : "number");
    double x = v->valuedouble;
    if (integer && (x != floor(x)))
        return reject(e, 400, key, "invalid_type", "'%s' must be an integer, "
                      "got %g", key, x);
    if (!(x >= lo && x <= hi))
        return reject(e, 400, key, "invalid_value", "'%s' must be in "
                      "%g..%g, got %g", key, lo, hi, x);
    *out = x;
    *present = true;
    return true;
}

/* response_format (chat): {"type":"text"}, {"type":"json_object"} (any
 * object) or {"type":"json_schema","json_schema":{"schema":{...}}}: the
 * schema's text for ks_generate_params.json_schema, checked here so that
 * a schema outside the supported subset is a 400 naming the keyword. */
static bool
get_response_format(cJSON *root, job *j, req_error *e)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    cJSON *type, *js, *schema;
    char *text;

    if (!v || cJSON_IsNull(v))
        return true;
    type = cJSON_GetObjectItemCaseSensitive(v, "type");
    if (!cJSON_IsObject(v) || !cJSON_IsString(type))
        return reject(e, 400, "response_format", "invalid_type", "'response_format' "
                      "must be an object with a string 'type'");
    if (strcmp(type->valuestring, "text") == 0)
        return true;
    if (strcmp(type->valuestring, "json_object") == 0) {
        if (!(j->json_schema = strdup("{\"type\":\"object\"}")))
            return reject(e, 500, NULL, NULL, "out of memory");
        return true;
    }
    if (strcmp(type->valuestring, "json_schema") != 0)
        return reject(e, 400, "response_format", "invalid_value", "'response_format' "
                      "type must be text, json_object or json_schema, got '%.64s'",
                      type->valuestring);
    js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
    schema = cJSON_IsObject(js) ? cJSON_GetObjectItemCaseSensitive(js, "schema") : NULL;
    if (!cJSON_IsObject(schema))
        return reject(e, 400, "response_format", "invalid_type", "'response_format' "
                      "of type json_schema needs 'json_schema': {'schema': {...}}");
    if (!(text = cJSON_PrintUnformatted(schema)))
        return reject(e, 500, NULL, NULL, "out of memory");
    if (ks_json_schema_check(text) != KS_OK) {
        reject(e, 400, "response_format", "invalid_value", "%s", ks_last_error());
        cJSON_free(text);
        return false;
    }
    j->json_schema = strdup(text);
    cJSON_free(text);
    if (!j->json_schema)
        return reject(e, 500, NULL, NULL, "out of memory");
    return true;
}

static bool
get_bool(cJSON *root, const char *key, bool *out, req_error *e)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);

    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsBool(v))
        return reject(e, 400, key, "invalid_type", "'%s' must be a boolean",
                      key);
    *out = cJSON_IsTrue(v);
    return true;
}

/* A message's content: a string, or an array of {"type":"text","text"}
 * parts, joined. NULL (and *e set) when it is neither. */
static char *
message_content(cJSON *content, req_error *e)
{
    if (!content || cJSON_IsNull(content))
        return strdup("");
    if (cJSON_IsString(content))
        return strdup(content->valuestring);
    if (!cJSON_IsArray(content)) {
        reject(e, 400, "messages", "invalid_type", "a message's 'content' "
               "must be a string or an array of text parts");
        return NULL;
    }
    char *out = NULL;
    size_t len = 0, cap = 0;
    cJSON *part;
    buf_append(&out, &len, &cap, "", 0);
    cJSON_ArrayForEach(part, content) {
        cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") ||
            !cJSON_IsString(text)) {
            free(out);
            reject(e, 400, "messages", "invalid_value", "only content parts "
                   "of type 'text' with a string 'text' are supported");
            return NULL;
        }
        buf_append(&out, &len, &cap, text->valuestring,
                   strlen(text->valuestring));
    }
    return out;
}

/* Tokenizes the conversation (chat) or the prompt (completions) into
 * j->prompt. */
static bool
tokenize_request(cJSON *root, bool chat, job *j, req_error *e)
{
    size_t n = 0;
    ks_status st;

    if (chat) {
        cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
        if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
            return reject(e, 400, "messages", "invalid_type", "'messages' "
                          "must be a non-empty array");
        int nm = cJSON_GetArraySize(msgs);
        ks_chat_message *km = calloc((size_t)nm, sizeof(*km));
        char **contents = calloc((size_t)nm, sizeof(char *));
        bool ok = km && contents;
        int i = 0;
        cJSON *m;
        if (!ok)
            reject(e, 500, NULL, NULL, "out of memory");
        cJSON_ArrayForEach(m, msgs) {
            if (!ok)
                break;
            cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
                ok = reject(e, 400, "messages", "invalid_type", "messages[%d] "
                            "must be an object with a string 'role'", i);
                break;
            }
            const char *r = role->valuestring;
            if (strcmp(r, "developer") == 0)
                r = "system";
            if (strcmp(r, "system") && strcmp(r, "user") &&
                strcmp(r, "assistant")) {
                ok = reject(e, 400, "messages", "invalid_value",
                            "messages[%d].role must be system, developer, "
                            "user or assistant", i);
                break;
            }
            contents[i] = message_content(
                cJSON_GetObjectItemCaseSensitive(m, "content"), e);
            if (!contents[i]) {
                ok = false;
                break;
            }
            km[i].role = r;
            km[i].content = contents[i];
            i++;
        }
        if (ok) {
            st = ks_model_chat_tokenize(g.model, km, (size_t)nm, true, NULL,
                                        0, &n);
            if (st == KS_OK && n > 0 && (j->prompt = malloc(n * 4)))
                st = ks_model_chat_tokenize(g.model, km, (size_t)nm, true,
                                            j->prompt, n, &n);
            if (st != KS_OK || !j->prompt)
                ok = reject(e, 400, "messages", NULL, "cannot format the "
                            "conversation: %s", ks_last_error());
        }
        for (int k = 0; k < nm && contents; k++)
            free(contents[k]);
        free(contents);
        free(km);
        if (!ok)
            return false;
    } else {
        cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1)
            p = cJSON_GetArrayItem(p, 0);
        if (!cJSON_IsString(p))
            return reject(e, 400, "prompt", "invalid_type", "'prompt' must "
                          "be a string (or an array of one string)");
        const char *t = p->valuestring;
        st = ks_model_tokenize(g.model, t, strlen(t), true, false, NULL, 0,
                               &n);
        if (st == KS_OK && n > 0 && (j->prompt = malloc(n * 4)))
            st = ks_model_tokenize(g.model, t, strlen(t), true, false,
                                   j->prompt, n, &n);
        if (n == 0)
            return reject(e, 400, "prompt", "invalid_value", "'prompt' "
                          "gives no tokens");
        if (st != KS_OK || !j->prompt)
            return reject(e, 400, "prompt", NULL, "cannot tokenize the "
                          "prompt: %s", ks_last_error());
    }
    j->n_prompt = n;
    /* never more than the context holds (a slot keeps n_ctx + 1 ids) */
    long max_prompt = (long)g.n_ctx - 1;
    if (g.o.max_prompt && g.o.max_prompt < max_prompt)
        max_prompt = g.o.max_prompt;
    if ((long)n > max_prompt && j->fwd && j->ask != ASK_LOCAL) {
        j->too_long = true;     /* for the fallback */
        return true;
    }
    if ((long)n > max_prompt)
        return reject(e, 400, chat ? "messages" : "prompt",
                      "context_length_exceeded", "the prompt has %zu tokens; "
                      "this server takes at most %ld%s", n, max_prompt,
                      g.o.fallback_url && g.o.privacy_strict
                          ? " (--privacy strict: no fallback)" : "");
    return true;
}

static bool
fallback_usable(void)
{
#ifdef KESTREL_FALLBACK
    return g.o.fallback_url && !g.o.privacy_strict;
#else
    return false;
#endif
}

/* "kestrel": {"route": "auto" | "local" | "fallback"}, and with a fallback
 * usable, the body it would be sent: the request as given, streamed, its
 * model replaced by --fallback-model if set, without Kestrel's field. */
static bool
get_routing(cJSON *root, job *j, req_error *e)
{
    cJSON *k = cJSON_GetObjectItemCaseSensitive(root, "kestrel"), *v;

    if (k && !cJSON_IsNull(k)) {
        if (!cJSON_IsObject(k))
            return reject(e, 400, "kestrel", "invalid_type", "'kestrel' must "
                          "be an object");
        cJSON_ArrayForEach(v, k)
            if (strcmp(v->string, "route"))
                return reject(e, 400, "kestrel", "unknown_parameter",
                              "unknown parameter 'kestrel.%.64s'", v->string);
        v = cJSON_GetObjectItemCaseSensitive(k, "route");
        if (v && !cJSON_IsString(v))
            return reject(e, 400, "kestrel", "invalid_type",
                          "'kestrel.route' must be a string");
        if (!v || !strcmp(v->valuestring, "auto"))
            j->ask = ASK_AUTO;
        else if (!strcmp(v->valuestring, "local"))
            j->ask = ASK_LOCAL;
        else if (!strcmp(v->valuestring, "fallback"))
            j->ask = ASK_FALLBACK;
        else
            return reject(e, 400, "kestrel", "invalid_value", "'kestrel.route' "
                          "must be auto, local or fallback, got '%.64s'",
                          v->valuestring);
    }
    if (!fallback_usable() || j->ask == ASK_LOCAL)
        return true;
    cJSON *f = cJSON_Duplicate(root, true);
    if (!f)
        return reject(e, 500, NULL, NULL, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(f, "kestrel");
    cJSON_DeleteItemFromObjectCaseSensitive(f, "stream_options");
    cJSON_DeleteItemFromObjectCaseSensitive(f, "stream");
    cJSON_AddTrueToObject(f, "stream");
    if (g.o.fallback_model) {
        cJSON_DeleteItemFromObjectCaseSensitive(f, "model");
        cJSON_AddStringToObject(f, "model", g.o.fallback_model);
    }
    j->fwd = cJSON_PrintUnformatted(f);
    cJSON_Delete(f);
    if (!j->fwd)
        return reject(e, 500, NULL, NULL, "out of memory");
    return true;
}

/* Validates a request and fills a job from it. */
static bool
parse_request(const char *body, size_t len, bool chat, job *j, req_error *e)
{
    cJSON *root = cJSON_ParseWithLength(body, len), *v;
    double x;
    bool has, ok = false;

    if (!root)
        return reject(e, 400, NULL, "invalid_json", "the body is not valid "
                      "JSON (near byte %ld)",
                      cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - body)
                                          : 0L);
    if (!cJSON_IsObject(root)) {
        reject(e, 400, NULL, "invalid_type", "the body must be a JSON "
               "object");
        goto done;
    }
    cJSON_ArrayForEach(v, root) {
        const char *const *f = chat ? chat_fields : completion_fields;
        while (*f && strcmp(*f, v->string))
            f++;
        if (!*f) {
            reject(e, 400, v->string, "unknown_parameter", "unknown "
                   "parameter '%s'", v->string);
            goto done;
        }
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (v && !cJSON_IsNull(v) && !cJSON_IsString(v)) {
        reject(e, 400, "model", "invalid_type", "'model' must be a string");
        goto done;
    }
    snprintf(j->model, sizeof j->model, "%s",
             cJSON_IsString(v) ? v->valuestring : g.model_name);
    /* defaults: those of `kestrel run` */
    j->sampling.temp = 0.8f;
    j->sampling.top_k = 40;
    j->sampling.top_p = 0.95f;
    j->sampling.min_p = 0.05f;
    j->sampling.repeat_penalty = 1.0f;
    j->sampling.repeat_last_n = 64;
    j->sampling.seed = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)j << 16);
    if (!get_number(root, "temperature", 0, 2, false, &x, &has, e))
        goto done;
    if (has)
        j->sampling.temp = (float)x;
    if (!get_number(root, "top_p", 0, 1, false, &x, &has, e))
        goto done;
    if (has)
        j->sampling.top_p = (float)x;
    if (!get_number(root, "min_p", 0, 1, false, &x, &has, e))
        goto done;
    if (has)
        j->sampling.min_p = (float)x;
    if (!get_number(root, "top_k", 0, INT32_MAX, true, &x, &has, e))
        goto done;
    if (has)
        j->sampling.top_k = (int32_t)x;
    if (!get_number(root, "seed", -9007199254740992.0, 9007199254740992.0,
                    true, &x, &has, e))
        goto done;
    if (has)
        j->sampling.seed = (uint64_t)(int64_t)x;
    if (!get_number(root, "n", 1, 1, true, &x, &has, e)) {
        snprintf(e->msg, sizeof e->msg, "only n = 1 is supported");
        goto done;
    }
    long limit = g.o.max_tokens ? g.o.max_tokens : (long)g.n_ctx;
    j->max_tokens = (uint32_t)limit;
    const char *mt_key = "max_tokens";
    if (!get_number(root, mt_key, 1, 1e15, true, &x, &has, e))
        goto done;
    if (!has && chat) {
        mt_key = "max_completion_tokens";
        if (!get_number(root, mt_key, 1, 1e15, true, &x, &has, e))
            goto done;
    }
    if (has) {
        if (x > (double)limit) {
            reject(e, 400, mt_key, "invalid_value", "'%s' is %.0f; this "
                   "server allows at most %ld", mt_key, x, limit);
            goto done;
        }
        j->max_tokens = (uint32_t)x;
    }
    if (!get_bool(root, "stream", &j->stream, e) ||
        !get_bool(root, "ignore_eos", &j->ignore_eos, e))
        goto done;
    v = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsObject(v)) {
            reject(e, 400, "stream_options", "invalid_type",
                   "'stream_options' must be an object");
            goto done;
        }
        if (!get_bool(v, "include_usage", &j->include_usage, e))
            goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (v && !cJSON_IsNull(v)) {
        cJSON *s;
        if (cJSON_IsString(v)) {
            if (v->valuestring[0])
                j->stops[j->n_stops++] = strdup(v->valuestring);
        } else if (cJSON_IsArray(v) && cJSON_GetArraySize(v) <= MAX_STOPS) {
            cJSON_ArrayForEach(s, v) {
                if (!cJSON_IsString(s)) {
                    reject(e, 400, "stop", "invalid_type", "'stop' must be "
                           "a string or an array of strings");
                    goto done;
                }
                if (s->valuestring[0])
                    j->stops[j->n_stops++] = strdup(s->valuestring);
            }
        } else {
            reject(e, 400, "stop", "invalid_type", "'stop' must be a string "
                   "or an array of up to %d strings", MAX_STOPS);
            goto done;
        }
        for (size_t i = 0; i < j->n_stops; i++)
            if (!j->stops[i]) {
                reject(e, 500, NULL, NULL, "out of memory");
                goto done;
            }
    }
    if (chat && !get_response_format(root, j, e))
        goto done;
    if (!get_routing(root, j, e))
        goto done;
    j->chat = chat;
    ok = tokenize_request(root, chat, j, e);
done:
    cJSON_Delete(root);
    return ok;
}

static const char *
finish_name(int finish)
{
    return finish == FIN_LENGTH ? "length" : "stop";
}

static cJSON *
usage_json(const job *j)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)j->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", j->n_gen);
    cJSON_AddNumberToObject(u, "total_tokens",
                            (double)(j->n_prompt + j->n_gen));
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", j->n_cached);
    return u;
}

/* The common head of a response or a chunk. */
static cJSON *
response_head(const job *j, bool chunk)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", j->id);
    cJSON_AddStringToObject(r, "object",
                            j->chat ? (chunk ? "chat.completion.chunk"
                                             : "chat.completion")
                                    : "text_completion");
    cJSON_AddNumberToObject(r, "created", (double)j->created);
    cJSON_AddStringToObject(r, "model", j->model);
    cJSON_AddStringToObject(r, "system_fingerprint", "kestrel");
    return r;
}

/* One choice: text (NULL: none), finish reason (NULL: null), and for a
 * chat chunk whether the delta opens with the role. */
static cJSON *
choices_json(const job *j, bool chunk, const char *text, size_t n,
             const char *finish, bool role)
{
    cJSON *arr = cJSON_CreateArray(), *c = cJSON_CreateObject();
    cJSON_AddItemToArray(arr, c);
    cJSON_AddNumberToObject(c, "index", 0);
    if (j->chat) {
        cJSON *m = cJSON_AddObjectToObject(c, chunk ? "delta" : "message");
        if (role || !chunk)
            cJSON_AddStringToObject(m, "role", "assistant");
        if (text)
            add_clean_string(m, "content", text, n);
    } else {
        add_clean_string(c, "text", text ? text : "", text ? n : 0);
    }
    cJSON_AddNullToObject(c, "logprobs");
    if (finish)
        cJSON_AddStringToObject(c, "finish_reason", finish);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    return arr;
}

/* "kestrel": {"route", "why"}, read once the job is done (or under
 * g.mu); with a failed fallback's error, the text it sent ("text"), so
 * that nothing is lost. */
static cJSON *
kestrel_json(const job *j, bool with_text)
{
    cJSON *k = cJSON_CreateObject();

    cJSON_AddStringToObject(k, "route", j->route == ROUTE_FALLBACK
                                        ? "fallback" : "local");
    cJSON_AddStringToObject(k, "why", j->why);
    if (j->n_entropy > 0) {     /* the confidence rule's reading */
        cJSON_AddNumberToObject(k, "entropy", j->mean_entropy);
        cJSON_AddNumberToObject(k, "entropy_tokens", j->n_entropy);
    }
    if (with_text)
        add_clean_string(k, "text", j->text ? j->text : "", j->len);
    return k;
}

/* ---- streaming ---- */

typedef struct stream {
    job   *j;
    size_t sent;        /* bytes of j->text already sent */
    bool   role_sent, finished;
    char  *out;         /* framed bytes not yet given to MHD */
    size_t out_len, out_off, out_cap;
} stream;

static void
sse_event(stream *st, cJSON *obj)
{
    char *text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!text)
        return;
    buf_append(&st->out, &st->out_len, &st->out_cap, "data: ", 6);
    buf_append(&st->out, &st->out_len, &st->out_cap, text, strlen(text));
    buf_append(&st->out, &st->out_len, &st->out_cap, "\n\n", 2);
    free(text);
}

static ssize_t
stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream *st = cls;
    job *j = st->j;

    (void)pos;
    if (st->out_off == st->out_len) {
        if (st->finished)
            return MHD_CONTENT_READER_END_OF_STREAM;
        st->out_len = st->out_off = 0;
        if (j->chat && !st->role_sent) {
            cJSON *r = response_head(j, true);
            cJSON_AddItemToObject(r, "choices",
                                  choices_json(j, true, "", 0, NULL, true));
            sse_event(st, r);
            st->role_sent = true;
        } else {
            char *text = NULL;
            size_t n = 0;
            bool done;
            struct timespec dl;

            pthread_mutex_lock(&g.mu);
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_sec += 1;
            while (j->len == st->sent && !j->done)
                if (pthread_cond_timedwait(&j->cond, &g.mu, &dl) ==
                    ETIMEDOUT)
                    break;
            done = j->done;
            if (j->len > st->sent && (text = malloc(j->len - st->sent))) {
                n = j->len - st->sent;
                memcpy(text, j->text + st->sent, n);
                st->sent = j->len;
            }
            pthread_mutex_unlock(&g.mu);
            if (n) {
                cJSON *r = response_head(j, true);
                cJSON_AddItemToObject(r, "choices",
                                      choices_json(j, true, text, n, NULL,
                                                   false));
                sse_event(st, r);
            }
            free(text);
            if (done && j->finish == FIN_ERROR) {
                cJSON *r = error_json(j->err, "server_error", NULL, NULL);
                cJSON_AddItemToObject(r, "kestrel", kestrel_json(j, false));
                sse_event(st, r);
            } else if (done) {
                cJSON *r = response_head(j, true);
                cJSON_AddItemToObject(r, "choices",
                                      choices_json(j, true, NULL, 0,
                                                   finish_name(j->finish),
                                                   false));
                cJSON_AddItemToObject(r, "kestrel", kestrel_json(j, false));
                if (!j->include_usage)
                    cJSON_AddItemToObject(r, "usage", usage_json(j));
                sse_event(st, r);
                if (j->include_usage) {
                    r = response_head(j, true);
                    cJSON_AddItemToObject(r, "choices", cJSON_CreateArray());
                    cJSON_AddItemToObject(r, "usage", usage_json(j));
                    sse_event(st, r);
                }
            }
            if (done) {
                buf_append(&st->out, &st->out_len, &st->out_cap,
                           "data: [DONE]\n\n", 14);
                st->finished = true;
            } else if (!n) {
                /* nothing for a second (queued): a comment keeps the
                 * connection checked, so a client gone is noticed */
                buf_append(&st->out, &st->out_len, &st->out_cap,
                           ": waiting\n\n", 11);
            }
        }
    }
    size_t n = st->out_len - st->out_off;
    if (n > max)
        n = max;
    memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    return (ssize_t)n;
}

/* The response is gone: sent whole, or the client went away. */
static void
stream_free(void *cls)
{
    stream *st = cls;

    pthread_mutex_lock(&g.mu);
    if (!st->j->done)
        __atomic_store_n(&st->j->cancel, 1, __ATOMIC_RELAXED);
    job_unref_locked(st->j);
    pthread_mutex_unlock(&g.mu);
    free(st->out);
    free(st);
}

/* ---- endpoints ---- */

/* True when the peer of |fd| has closed or reset the connection. */
static bool
client_gone(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
    char b;

    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
        return true;
    /* readable: data (a pipelined request) or the end of the stream */
    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Reads an array of token ids into *out (malloc'd, *n of them; NULL for
 * an empty array): each an integer in [0, n_vocab). */
static bool
get_ids(cJSON *root, const char *key, size_t max, int32_t **out, size_t *n,
        req_error *e)
{
    cJSON *a = cJSON_GetObjectItemCaseSensitive(root, key), *v;
    ks_model_desc md;
    size_t i = 0;

    ks_model_describe(g.model, &md);
    *out = NULL;
    *n = 0;
    if (!cJSON_IsArray(a))
        return reject(e, 400, key, a ? "invalid_type" : "missing_parameter",
                      "'%s' must be an array of token ids", key);
    size_t len = (size_t)cJSON_GetArraySize(a);
    if (len > max)
        return reject(e, 400, key, "context_length_exceeded", "'%s' holds "
                      "%zu ids; at most %zu fit", key, len, max);
    /* never NULL, even for no ids: callers copy from it */
    if (!(*out = malloc((len ? len : 1) * sizeof(int32_t))))
        return reject(e, 500, NULL, "server_error", "out of memory");
    cJSON_ArrayForEach(v, a) {
        double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
        if (!(x >= 0 && x < md.n_vocab && x == floor(x))) {
            free(*out);
            *out = NULL;
            return reject(e, 400, key, "invalid_value", "'%s'[%zu] is not a "
                          "token id of this model (0 to %u)", key, i,
                          md.n_vocab - 1);
        }
        (*out)[i++] = (int32_t)x;
    }
    *n = len;
    return true;
}

/* POST /v1/kestrel/verify: {"tokens": [context ids], "draft": [ids]}, the
 * context at least one id; "model" is allowed and ignored. */
static bool
parse_verify(const char *body, size_t len, job *j, req_error *e)
{
    cJSON *root = cJSON_ParseWithLength(body, len), *v;
    bool ok = false;

    if (!root)
        return reject(e, 400, NULL, "invalid_json", "the body is not valid "
                      "JSON");
    if (!cJSON_IsObject(root)) {
        reject(e, 400, NULL, "invalid_type", "the body must be a JSON "
               "object");
        goto done;
    }
    cJSON_ArrayForEach(v, root)
        if (strcmp(v->string, "tokens") && strcmp(v->string, "draft") &&
            strcmp(v->string, "model") && strcmp(v->string, "n_prompt")) {
            reject(e, 400, v->string, "unknown_parameter", "unknown "
                   "parameter '%s'", v->string);
            goto done;
        }
    if (!get_ids(root, "draft", 64, &j->draft, &j->n_draft, e) ||
        !get_ids(root, "tokens", g.n_ctx - j->n_draft, &j->prompt,
                 &j->n_prompt, e))
        goto done;
    if (j->n_prompt == 0) {
        reject(e, 400, "tokens", "invalid_value", "'tokens' must hold at "
               "least one id");
        goto done;
    }
    v = cJSON_GetObjectItemCaseSensitive(root, "n_prompt");
    if (v && !(cJSON_IsNumber(v) && v->valuedouble >= 0 &&
               v->valuedouble <= (double)j->n_prompt &&
               v->valuedouble == floor(v->valuedouble))) {
        reject(e, 400, "n_prompt", "invalid_value", "'n_prompt' must be an "
               "integer from 0 to the number of ids in 'tokens'");
        goto done;
    }
    j->n_verify_prompt = v ? (size_t)v->valuedouble : 0;
    snprintf(j->model, sizeof j->model, "%s", g.model_name);
    j->verify = true;
    ok = true;
done:
    cJSON_Delete(root);
    return ok;
}

static cJSON *
verify_json(const job *j)
{
    cJSON *r = cJSON_CreateObject(), *a;

    cJSON_AddStringToObject(r, "object", "kestrel.verify");
    cJSON_AddStringToObject(r, "model", g.model_name);
    a = cJSON_AddArrayToObject(r, "accepted");
    for (uint32_t i = 0; i < j->n_accepted; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(j->draft[i]));
    cJSON_AddNumberToObject(r, "next", j->next_token);
    cJSON_AddBoolToObject(r, "next_is_eog",
                          ks_model_token_is_eog(g.model, j->next_token));
    cJSON_AddNumberToObject(r, "cached_tokens", j->n_cached);
    return r;
}

#ifdef KESTREL_FALLBACK
static bool
fb_text(void *user, const char *text, size_t n)
{
    job *j = user;

    pthread_mutex_lock(&g.mu);
    bool ok = buf_append(&j->text, &j->len, &j->cap, text, n);
    j->n_gen++;         /* a chunk, as near a token as we can tell */
    pthread_cond_broadcast(&j->cond);
    pthread_mutex_unlock(&g.mu);
    return ok && !cancelled(j);
}

static bool
fb_cancelled(void *user)
{
    return cancelled(user);
}

/* After a failed fallback: the prompt grown by the text received so far,
 * for the local model to go on from; false when it does not fit. */
static bool
continue_locally(job *j)
{
    size_t n = 0, room = g.n_ctx - 1;
    int32_t *p;

    if (j->too_long || j->n_prompt >= room)
        return false;
    if (j->len > 0 &&
        ks_model_tokenize(g.model, j->text, j->len, false, false, NULL, 0,
                          &n) != KS_OK)
        return false;
    if (j->n_prompt + n > room || !(p = realloc(j->prompt, (j->n_prompt + n
                                                + 1) * sizeof(int32_t))))
        return false;
    j->prompt = p;
    if (n > 0 && ks_model_tokenize(g.model, j->text, j->len, false, false,
                                   p + j->n_prompt, n, &n) != KS_OK)
        return false;
    j->n_prompt += n;
    j->max_tokens = j->max_tokens > j->n_gen ? j->max_tokens - j->n_gen : 0;
    j->checked = true;  /* the confidence rule does not send it back */
    return true;
}

/* The thread of one fallback request: relays the upstream's stream into
 * the job, then ends it, or hands it to the local model. Holds one of the
 * job's references. */
static void *
fallback_main(void *arg)
{
    job *j = arg;
    char host[256], finish[32], why[160];
    ks_fallback_stream q = {
        .base_url = g.o.fallback_url, .api_key = g.o.fallback_key,
        .path = j->chat ? "/chat/completions" : "/completions",
        .body = j->fwd, .timeout_ms = g.o.fallback_timeout_ms,
        .on_text = fb_text, .cancelled = fb_cancelled, .user = j,
    };

    ks_cli_url_host(g.o.fallback_url, host, sizeof host);
    fprintf(stderr, "kestrel serve: fallback: %s: %zu bytes to %s (%s)\n",
            j->id, strlen(j->fwd), host, j->why);
    bool ok = ks_cli_fallback_stream(&q, finish, sizeof finish, why,
                                     sizeof why);
    pthread_mutex_lock(&g.mu);
    size_t got = j->len;
    g.m_fallback_bytes_sent += strlen(j->fwd);
    pthread_mutex_unlock(&g.mu);
    fprintf(stderr, "kestrel serve: fallback: %s: %zu bytes of text from "
            "%s%s%s\n", j->id, got, host, ok ? "" : "; failed: ",
            ok ? "" : why);
    if (!ok && !cancelled(j) && continue_locally(j)) {
        pthread_mutex_lock(&g.mu);
        g.m_fallback_failed++;
        j->route = ROUTE_LOCAL;
        snprintf(j->why, sizeof j->why, "the fallback failed (%s) after %zu "
                 "bytes; the local model went on", why, got);
        if (j->max_tokens == 0) {
            j->finish = FIN_LENGTH;
        } else {    /* its reference passes to the queue */
            if (g.q_tail)
                g.q_tail->next = j;
            else
                g.q_head = j;
            g.q_tail = j;
            g.n_queued++;
            dispatch_locked();
            pthread_mutex_unlock(&g.mu);
            return NULL;
        }
    } else {
        pthread_mutex_lock(&g.mu);
        if (!ok)
            g.m_fallback_failed++;
    }
    if (ok) {
        j->finish = strcmp(finish, "length") == 0 ? FIN_LENGTH : FIN_STOP;
    } else if (cancelled(j)) {
        j->finish = FIN_CANCELLED;
        g.m_cancelled++;
    } else if (j->finish == FIN_NONE) {
        j->finish = FIN_ERROR;
        snprintf(j->err, sizeof j->err, "the fallback failed: %s%s", why,
                 got ? "; the text it sent so far is kept" : "");
    }
    j->done = true;
    pthread_cond_broadcast(&j->cond);
    job_unref_locked(j);
    pthread_mutex_unlock(&g.mu);
    return NULL;
}
#endif

/* Decides a completion's route; true when it goes to the fallback. */
static bool
choose_route(job *j)
{
    j->route = ROUTE_LOCAL;
    if (j->fwd && j->too_long) {
        j->route = ROUTE_FALLBACK;
        snprintf(j->why, sizeof j->why, "the prompt (%zu tokens) does not "
                 "fit the local context of %u", j->n_prompt, g.n_ctx);
    } else if (j->fwd && j->ask == ASK_FALLBACK) {
        j->route = ROUTE_FALLBACK;
        snprintf(j->why, sizeof j->why, "the request asks for it");
    } else if (j->ask == ASK_FALLBACK) {
        snprintf(j->why, sizeof j->why, "the request asks for the fallback, "
                 "but %s", g.o.fallback_url ? "--privacy strict forbids "
                 "outbound requests" : "none is set (--fallback-url)");
    } else {
        snprintf(j->why, sizeof j->why, "%s", j->ask == ASK_LOCAL
                 ? "the request asks for it" : "the local model serves it");
    }
    return j->route == ROUTE_FALLBACK;
}

static enum MHD_Result
handle_completion(struct MHD_Connection *c, conn *cx, bool chat, bool verify)
{
    req_error e = { 0 };
    job *j = calloc(1, sizeof(*j));

    if (!j)
        return send_error(c, 500, NULL, NULL, "out of memory");
    pthread_cond_init(&j->cond, NULL);
    if (verify ? !parse_verify(cx->body ? cx->body : "", cx->len, j, &e)
               : !parse_request(cx->body ? cx->body : "", cx->len, chat, j,
                                &e)) {
        job_free(j);
        return send_error(c, e.http, e.param, e.code, "%s", e.msg);
    }
    j->created = (long)time(NULL);
    bool fallback = !verify && choose_route(j);

    pthread_mutex_lock(&g.mu);
    bool idle_slot = g.n_busy + g.n_queued < g.n_slots;
    if (g.draining || (!fallback && !idle_slot && g.n_queued >= g.o.queue)) {
        g.m_rejected++;
        pthread_mutex_unlock(&g.mu);
        job_free(j);
        return send_error(c, 503, NULL, "server_busy", "all %d slots are "
                          "busy and the queue (%d) is full; retry later",
                          g.o.parallel, g.o.queue);
    }
    snprintf(j->id, sizeof j->id, "%s-%llu",
             verify ? "verify" : chat ? "chatcmpl" : "cmpl",
             (unsigned long long)++g.id_seq);
    j->refs = 2;
    g.n_active++;
    g.m_requests++;
    if (fallback) {
#ifdef KESTREL_FALLBACK
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        g.m_fallback++;
        if (pthread_create(&t, &at, fallback_main, j) != 0) {
            j->finish = FIN_ERROR;
            snprintf(j->err, sizeof j->err, "cannot start the fallback");
            j->done = true;
            job_unref_locked(j);
        }
        pthread_attr_destroy(&at);
#endif
    } else {
        if (g.q_tail)
            g.q_tail->next = j;
        else
            g.q_head = j;
        g.q_tail = j;
        g.n_queued++;
        dispatch_locked();
    }
    if (j->stream) {
        pthread_mutex_unlock(&g.mu);
        stream *st = calloc(1, sizeof(*st));
        struct MHD_Response *r = st ? MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, 16384, stream_read, st, stream_free) : NULL;
        if (!r) {
            pthread_mutex_lock(&g.mu);
            __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
            job_unref_locked(j);
            pthread_mutex_unlock(&g.mu);
            free(st);
            return MHD_NO;
        }
        st->j = j;
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "text/event-stream");
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL,
                                "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    /* Wait for the answer, looking at the socket every 200 ms: a client
     * that hung up cancels its request (and frees its slot) at once. */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    double next_check = now_s() + 0.2;
    while (!j->done) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 200000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        /* each published token wakes this too: check by the clock */
        pthread_cond_timedwait(&j->cond, &g.mu, &dl);
        if (!j->done && now_s() >= next_check) {
            next_check = now_s() + 0.2;
            if (ci && !cancelled(j) && client_gone(ci->connect_fd))
                __atomic_store_n(&j->cancel, 1, __ATOMIC_RELAXED);
        }
    }
    bool gone = j->finish == FIN_CANCELLED;
    pthread_mutex_unlock(&g.mu);
    if (gone) {
        pthread_mutex_lock(&g.mu);
        job_unref_locked(j);
        pthread_mutex_unlock(&g.mu);
        return MHD_NO;  /* nobody to answer: close the connection */
    }
    /* the worker is done with the job: read it without the lock */
    cJSON *resp = NULL;
    unsigned code = 200;
    if (j->finish == FIN_ERROR) {
        resp = error_json(j->err, "server_error", NULL, NULL);
        code = j->route == ROUTE_FALLBACK ? 502 : 500;
        if (!verify)
            cJSON_AddItemToObject(resp, "kestrel", kestrel_json(j, true));
    } else if (verify) {
        resp = verify_json(j);
    } else {
        resp = response_head(j, false);
        cJSON_AddItemToObject(resp, "choices",
                              choices_json(j, false, j->text ? j->text : "",
                                           j->len, finish_name(j->finish),
                                           false));
        cJSON_AddItemToObject(resp, "usage", usage_json(j));
        cJSON_AddItemToObject(resp, "kestrel", kestrel_json(j, false));
    }
    pthread_mutex_lock(&g.mu);
    job_unref_locked(j);
    pthread_mutex_unlock(&g.mu);
    return send_json(c, code, resp);
}

static enum MHD_Result
handle_metrics(struct MHD_Connection *c)
{
    char *text = NULL;
    size_t len = 0, cap = 0;
    char line[256];

    pthread_mutex_lock(&g.mu);
    struct { const char *name, *type, *help; double v; } m[] = {
        { "kestrel_requests_total", "counter",
          "completion requests admitted", (double)g.m_requests },
        { "kestrel_requests_rejected_total", "counter",
          "requests refused with 503 (queue full)", (double)g.m_rejected },
        { "kestrel_requests_cancelled_total", "counter",
          "requests whose client went away before the end",
          (double)g.m_cancelled },
        { "kestrel_errors_total", "counter", "error responses (4xx, 5xx)",
          (double)g.m_errors },
        { "kestrel_prompt_tokens_total", "counter", "prompt tokens",
          (double)g.m_prompt_tokens },
        { "kestrel_prompt_tokens_cached_total", "counter",
          "prompt tokens reused from a slot's KV cache",
          (double)g.m_cached_tokens },
        { "kestrel_completion_tokens_total", "counter", "generated tokens",
          (double)g.m_gen_tokens },
        { "kestrel_verify_drafted_tokens_total", "counter",
          "drafted tokens sent to /v1/kestrel/verify",
          (double)g.m_verify_drafted },
        { "kestrel_verify_accepted_tokens_total", "counter",
          "drafted tokens /v1/kestrel/verify accepted",
          (double)g.m_verify_accepted },
        { "kestrel_fallback_requests_total", "counter",
          "requests sent to --fallback-url", (double)g.m_fallback },
        { "kestrel_fallback_failures_total", "counter",
          "fallback requests whose upstream failed", (double)g.m_fallback_failed },
        { "kestrel_fallback_sent_bytes_total", "counter",
          "request bytes sent to the fallback", (double)g.m_fallback_bytes_sent },
        { "kestrel_generation_seconds_total", "counter",
          "time slots spent generating", g.m_gen_seconds },
        { "kestrel_tokens_per_second", "gauge",
          "generated tokens per second of slot time, over all requests",
          g.m_gen_seconds > 0 ? (double)g.m_gen_tokens / g.m_gen_seconds
                              : 0 },
        { "kestrel_queue_depth", "gauge", "requests waiting for a slot",
          g.n_queued },
        { "kestrel_slots_busy", "gauge", "slots generating", g.n_busy },
        { "kestrel_slots_total", "gauge", "slots (--parallel)", g.n_slots },
        { "kestrel_governor_active", "gauge",
          "1 when the governor paced or throttled the last request",
          g.m_governed ? 1 : 0 },
        { "kestrel_governor_paced_seconds_total", "counter",
          "time the governor made decoding wait", g.m_paced_seconds },
        { "kestrel_threads", "gauge",
          "CPU threads the last request ended on (the governor lowers them)",
          g.m_threads },
    };
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        int n = snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n"
                         "%s %.17g\n", m[i].name, m[i].help, m[i].name,
                         m[i].type, m[i].name, m[i].v);
        buf_append(&text, &len, &cap, line, (size_t)n);
    }
    if (!text)
        return MHD_NO;
    return send_text(c, 200, "text/plain; version=0.0.4", text, NULL);
}

static bool
authorized(struct MHD_Connection *c)
{
    const char *h;

    if (!g.o.api_key)
        return true;
    h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    /* compare in time independent of where they differ */
    size_t a = strlen(h), b = strlen(g.o.api_key);
    unsigned diff = (unsigned)(a != b);
    for (size_t i = 0; i < a && i < b; i++)
        diff |= (unsigned)(h[i] ^ g.o.api_key[i]);
    return diff == 0;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
           const char *method, const char *version, const char *upload,
           size_t *upload_size, void **con_cls)
{
    conn *cx = *con_cls;

    (void)cls;
    (void)version;
    if (!cx) {
        if (!(cx = calloc(1, sizeof(*cx))))
            return MHD_NO;
        *con_cls = cx;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!cx->too_big && cx->len + *upload_size > (size_t)g.o.max_body) {
            cx->too_big = true;
            free(cx->body);
            cx->body = NULL;
            cx->len = cx->cap = 0;
        }
        if (!cx->too_big &&
            !buf_append(&cx->body, &cx->len, &cx->cap, upload, *upload_size))
            cx->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    if (get && strcmp(url, "/health") == 0) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "status", "ok");
        return send_json(c, 200, r);
    }
    if (!authorized(c))
        return send_error(c, 401, NULL, "invalid_api_key", "this server "
                          "needs 'Authorization: Bearer KEY' with the key "
                          "given to --api-key");
    if (get && (strcmp(url, "/v1/models") == 0 ||
                strcmp(url, "/models") == 0)) {
        cJSON *r = cJSON_CreateObject(), *arr, *m = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "object", "list");
        arr = cJSON_AddArrayToObject(r, "data");
        cJSON_AddItemToArray(arr, m);
        cJSON_AddStringToObject(m, "id", g.model_name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", 0);
        cJSON_AddStringToObject(m, "owned_by", "kestrel");
        return send_json(c, 200, r);
    }
    if (get && strcmp(url, "/metrics") == 0)
        return handle_metrics(c);
    bool is_chat = strcmp(url, "/v1/chat/completions") == 0;
    bool is_cmpl = strcmp(url, "/v1/completions") == 0;
    bool is_verify = strcmp(url, "/v1/kestrel/verify") == 0;
    if (is_chat || is_cmpl || is_verify) {
        if (!post)
            return send_error(c, 405, NULL, "method_not_allowed", "%s takes "
                              "POST, not %s", url, method);
        if (cx->too_big)
            return send_error(c, 413, NULL, "request_too_large", "the body "
                              "is larger than this server's limit of %ld "
                              "bytes (--max-body)", g.o.max_body);
        return handle_completion(c, cx, is_chat, is_verify);
    }
    return send_error(c, 404, NULL, "not_found", "no endpoint %s %s", method,
                      url);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    conn *cx = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (cx) {
        free(cx->body);
        free(cx);
        *con_cls = NULL;
    }
}

/* ---- the command ---- */

static void
serve_help(void)
{
    printf(
"Usage: kestrel serve [OPTIONS]\n\n"
"Serves the model over HTTP with the OpenAI API: POST /v1/chat/completions\n"
"and /v1/completions (streaming with \"stream\": true), GET /v1/models,\n"
"GET /health, GET /metrics (Prometheus). Any 'model' name in a request is\n"
"served by the one loaded model. Errors use the OpenAI format. Ctrl-C or\n"
"SIGTERM stops accepting, finishes the running requests, then exits.\n\n"
"Options:\n"
"  -m, --model FILE       GGUF model (default: " DEFAULT_MODEL_FILE "\n"
"                         in $KESTREL_MODEL_DIR or ~/.cache/kestrel/models)\n"
"      --host ADDR        address to bind (default: 127.0.0.1)\n"
"      --port N           port (default: 8080; 0: any free port)\n"
"      --parallel N       requests generated at once, each in its own slot\n"
"                         (a session on the model; default: 1)\n"
"      --queue N          requests that may wait for a slot; beyond: 503\n"
"                         with Retry-After (default: 16)\n"
"      --api-key KEY      require 'Authorization: Bearer KEY' (401 without)\n"
"                         on every endpoint but /health\n"
"      --max-body N       largest request body in bytes (default: 1048576;\n"
"                         larger: 413)\n"
"      --max-prompt-tokens N  longest prompt (default and most: the\n"
"                         context - 1)\n"
"      --max-tokens N     largest max_tokens a request may ask, and the\n"
"                         default (default: the context)\n"
"  -t, --threads N        CPU threads per slot (default: all cores)\n"
"  -c, --ctx-size N       context length per slot (default: min(model's,\n"
"                         4096))\n"
"  -b, --batch-size N     prefill tokens per pass (default: 512)\n"
"      --backend B        auto|cpu|vulkan (default: auto)\n"
"      --temp-limit C     keep the device below C degrees Celsius\n"
"      --power-limit W    keep the device's power below W watts\n"
"      --policy P         performance|balanced|battery (default: balanced)\n"
"      --no-governor      never pace or throttle\n"
"      --fallback-url URL an OpenAI-compatible base URL (ending in /v1) for\n"
"                         requests that ask for it (\"kestrel\": {\"route\":\n"
"                         \"fallback\"}) or whose prompt does not fit\n"
"      --fallback-key KEY, --fallback-model NAME  for it\n"
"      --fallback-timeout MS  the fallback's deadline for connecting and for\n"
"                         each wait for data (default: 30000); past it, or\n"
"                         on any fault, the local model goes on\n"
"      --fallback-when-unsure T  the confidence rule: when the mean entropy\n"
"                         (nats) of an answer's first N tokens is above T,\n"
"                         the answer goes to the fallback instead (off by\n"
"                         default; those tokens are held back until then)\n"
"      --unsure-tokens N  the N the rule reads (default: 8, at most 64)\n"
"      --privacy MODE     off (default) or strict: no outbound request\n\n"
"Each answer says where it ran: \"kestrel\": {\"route\": \"local\" or\n"
"\"fallback\", \"why\": ...}; a request may say \"kestrel\": {\"route\":\n"
"\"auto\" | \"local\" | \"fallback\"}.\n\n"
"Sampling defaults are those of 'kestrel run' (temperature 0.8, top_k 40,\n"
"top_p 0.95, min_p 0.05); a request's temperature, top_p, seed, stop and\n"
"max_tokens override them. Extensions: top_k, min_p, ignore_eos.\n"
"It prints 'kestrel serve: listening on http://HOST:PORT' once ready.\n\n"
"Exit status: 0 after a signal drained the requests, 1 error, 2 bad "
"usage.\n");
}

static int
usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "kestrel serve: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'kestrel serve --help'.\n");
    return 2;
}

static bool
parse_num(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end;

    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "kestrel serve: %s expects an integer in %ld..%ld, "
                "got '%s'\n", flag, lo, hi, v ? v : "");
        return false;
    }
    *out = x;
    return true;
}

static bool
parse_real(const char *flag, const char *v, float lo, float hi, float *out)
{
    char *end;

    errno = 0;
    float x = v ? strtof(v, &end) : 0;
    if (!v || errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "kestrel serve: %s expects a number in %g..%g, got "
                "'%s'\n", flag, lo, hi, v ? v : "");
        return false;
    }
    *out = x;
    return true;
}

static int
parse_opts(int argc, char **argv, sv_opts *o)
{
    long x;

    memset(o, 0, sizeof(*o));
    o->host = "127.0.0.1";
    o->port = 8080;
    o->parallel = 1;
    o->queue = 16;
    o->max_body = 1 << 20;
    o->fallback_timeout_ms = 30000;
    o->unsure_tokens = 8;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NUM(lo, hi) do { if (!parse_num(a, v, lo, hi, &x)) return 2; i++; \
                    } while (0)
#define STR() do { if (!v) return usage_error("%s needs a value", a); i++; \
                  } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_help();
            return -1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            STR(); o->model = v;
        } else if (!strcmp(a, "--host")) {
            STR(); o->host = v;
        } else if (!strcmp(a, "--port")) {
            NUM(0, 65535); o->port = (int)x;
        } else if (!strcmp(a, "--parallel") || !strcmp(a, "-np")) {
            NUM(1, 256); o->parallel = (int)x;
        } else if (!strcmp(a, "--queue")) {
            NUM(0, 100000); o->queue = (int)x;
        } else if (!strcmp(a, "--api-key")) {
            STR(); o->api_key = v;
        } else if (!strcmp(a, "--max-body")) {
            NUM(64, 1L << 30); o->max_body = x;
        } else if (!strcmp(a, "--max-prompt-tokens")) {
            NUM(1, 1 << 24); o->max_prompt = x;
        } else if (!strcmp(a, "--max-tokens")) {
            NUM(1, 1 << 24); o->max_tokens = x;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NUM(1, 1024); o->rp.n_threads = (int32_t)x;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) {
            NUM(0, 1 << 24); o->sp.n_ctx = (uint32_t)x;
        } else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) {
            NUM(1, 8192); o->sp.n_batch = (uint32_t)x;
        } else if (!strcmp(a, "--backend")) {
            STR();
            if (!strcmp(v, "auto"))
                o->rp.backend = KS_BACKEND_AUTO;
            else if (!strcmp(v, "cpu"))
                o->rp.backend = KS_BACKEND_CPU;
            else if (!strcmp(v, "vulkan"))
                o->rp.backend = KS_BACKEND_VULKAN;
            else
                return usage_error("--backend expects auto, cpu or vulkan, "
                                   "got '%s'", v);
        } else if (!strcmp(a, "--temp-limit")) {
            if (!parse_real(a, v, 1, 150, &o->rp.temp_limit_c))
                return 2;
            i++;
        } else if (!strcmp(a, "--power-limit")) {
            if (!parse_real(a, v, 0.1f, 100000, &o->rp.power_limit_w))
                return 2;
            i++;
        } else if (!strcmp(a, "--policy")) {
            STR();
            if (!strcmp(v, "balanced"))
                o->rp.policy = KS_POLICY_BALANCED;
            else if (!strcmp(v, "performance"))
                o->rp.policy = KS_POLICY_PERFORMANCE;
            else if (!strcmp(v, "battery"))
                o->rp.policy = KS_POLICY_BATTERY;
            else
                return usage_error("--policy expects performance, balanced "
                                   "or battery, got '%s'", v);
        } else if (!strcmp(a, "--no-governor")) {
            o->rp.no_governor = true;
        } else if (!strcmp(a, "--fallback-url")) {
            STR(); o->fallback_url = v;
        } else if (!strcmp(a, "--fallback-key")) {
            STR(); o->fallback_key = v;
        } else if (!strcmp(a, "--fallback-model")) {
            STR(); o->fallback_model = v;
        } else if (!strcmp(a, "--fallback-when-unsure")) {
            if (!parse_real(a, v, 0.001f, 100, &o->unsure_nats))
                return 2;
            i++;
        } else if (!strcmp(a, "--unsure-tokens")) {
            NUM(1, MAX_UNSURE); o->unsure_tokens = x;
        } else if (!strcmp(a, "--fallback-timeout")) {
            NUM(1, 3600000); o->fallback_timeout_ms = x;
        } else if (!strcmp(a, "--privacy")) {
            STR();
            if (strcmp(v, "off") && strcmp(v, "strict"))
                return usage_error("--privacy expects off or strict, got "
                                   "'%s'", v);
            o->privacy_strict = !strcmp(v, "strict");
        } else {
            return usage_error("unknown option or argument '%s'", a);
        }
#undef NUM
#undef STR
    }
    return 0;
}

static const char *
default_model(char *buf, size_t cap)
{
    const char *dir = getenv("KESTREL_MODEL_DIR"), *home = getenv("HOME");

    if (dir && *dir)
        snprintf(buf, cap, "%s/%s", dir, DEFAULT_MODEL_FILE);
    else
        snprintf(buf, cap, "%s/.cache/kestrel/models/%s", home ? home : ".",
                 DEFAULT_MODEL_FILE);
    return buf;
}

static void
on_signal(int sig)
{
    (void)sig;  /* never runs: the signals are blocked and sigwait takes them */
}

int
ks_cli_serve(int argc, char **argv)
{
    char path_buf[4096];
    struct MHD_Daemon *d = NULL;
    sigset_t sigs;
    int rc = 1, sig = 0, started = 0;
    const char *path;

    memset(&g, 0, sizeof g);
    int prc = parse_opts(argc, argv, &g.o);
    if (prc)
        return prc < 0 ? 0 : prc;
    path = g.o.model ? g.o.model : default_model(path_buf, sizeof path_buf);
    if (!g.o.model && access(path, R_OK) != 0) {
        fprintf(stderr, "kestrel serve: error: no model given (-m FILE) and "
                "the default model %s is absent; fetch it with "
                "ci/fetch-models.sh\n", path);
        return 1;
    }
#ifndef KESTREL_FALLBACK
    if (g.o.fallback_url && !g.o.privacy_strict) {
        fprintf(stderr, "kestrel serve: error: --fallback-url: this kestrel "
                "was built without libcurl\n");
        return 1;
    }
#endif
    if (g.o.fallback_url && g.o.privacy_strict)
        fprintf(stderr, "kestrel serve: --privacy strict: nothing is sent to "
                "%s\n", g.o.fallback_url);
#ifdef KESTREL_FALLBACK
    if (fallback_usable()) {
        char host[256];
        curl_global_init(CURL_GLOBAL_DEFAULT);  /* before any thread */
        ks_cli_url_host(g.o.fallback_url, host, sizeof host);
        fprintf(stderr, "kestrel serve: fallback: %s\n", host);
    }
#endif
    const char *delay = getenv("KESTREL_SERVE_TOKEN_DELAY_MS");
    if (delay)
        g.token_delay_ms = atol(delay);
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.idle, NULL);

    /* Signals go to the main thread's sigwait only: block them before any
     * thread starts so every thread inherits the mask. */
    /* A shell starts background jobs with SIGINT ignored; whether an
     * ignored signal still reaches sigwait is left open by POSIX (Linux
     * delivers it): take both signals in any case. */
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (ks_runtime_create(&g.o.rp, &g.rt) != KS_OK ||
        ks_model_load(g.rt, path, NULL, &g.model) != KS_OK) {
        fprintf(stderr, "kestrel serve: error: %s\n", ks_last_error());
        goto out;
    }
    ks_model_desc desc;
    ks_model_describe(g.model, &desc);
    snprintf(g.model_name, sizeof g.model_name, "%s", desc.name);
    g.slots = calloc((size_t)g.o.parallel, sizeof(slot));
    if (!g.slots)
        goto out;
    for (int i = 0; i < g.o.parallel; i++) {
        slot *s = &g.slots[i];
        s->index = i;
        pthread_cond_init(&s->cond, NULL);
        if (ks_session_create(g.model, &g.o.sp, &s->sess) != KS_OK) {
            fprintf(stderr, "kestrel serve: error: slot %d: %s\n", i,
                    ks_last_error());
            goto out;
        }
        s->cap = ks_session_n_ctx(s->sess) + 1;
        if (!(s->held = malloc(s->cap * sizeof(int32_t))))
            goto out;
        g.n_slots++;
    }
    g.n_ctx = ks_session_n_ctx(g.slots[0].sess);
    for (int i = 0; i < g.n_slots; i++) {
        if (pthread_create(&g.slots[i].thread, NULL, worker, &g.slots[i])) {
            fprintf(stderr, "kestrel serve: error: cannot start a worker\n");
            goto out;
        }
        started++;
    }

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (strchr(g.o.host, ':')) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)g.o.port);
        if (inet_pton(AF_INET6, g.o.host, &a6->sin6_addr) != 1) {
            rc = usage_error("--host expects an IP address, got '%s'",
                             g.o.host);
            goto out;
        }
        flags |= MHD_USE_IPv6;
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)g.o.port);
        if (inet_pton(AF_INET, g.o.host, &a4->sin_addr) != 1) {
            rc = usage_error("--host expects an IP address, got '%s'",
                             g.o.host);
            goto out;
        }
    }
    d = MHD_start_daemon(flags, (uint16_t)g.o.port, NULL, NULL, on_request,
                         NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
                         /* a thread each: bound them */
                         MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)(g.o.parallel + g.o.queue + 64),
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "kestrel serve: error: cannot listen on %s:%d: %s\n",
                g.o.host, g.o.port, strerror(errno));
        goto out;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "kestrel serve: model %s, %d slot%s of %u tokens, "
            "queue %d\n", g.model_name, g.n_slots, g.n_slots == 1 ? "" : "s",
            g.n_ctx, g.o.queue);
    /* one write: scripts read the port from this line */
    char line[160];
    snprintf(line, sizeof line, "kestrel serve: listening on "
             "http://%s%s%s:%u\n", strchr(g.o.host, ':') ? "[" : "",
             g.o.host, strchr(g.o.host, ':') ? "]" : "",
             info ? (unsigned)info->port : (unsigned)g.o.port);
    fputs(line, stderr);

    sigwait(&sigs, &sig);
    pthread_mutex_lock(&g.mu);
    int n_active = g.n_active;
    pthread_mutex_unlock(&g.mu);
    fprintf(stderr, "kestrel serve: %s: finishing %d request%s, then "
            "exiting\n", sig == SIGINT ? "SIGINT" : "SIGTERM", n_active,
            n_active == 1 ? "" : "s");
    MHD_socket lfd = MHD_quiesce_daemon(d);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);     /* new connections are refused, not left waiting */
    pthread_mutex_lock(&g.mu);
    g.draining = true;
    while (g.n_active > 0)
        pthread_cond_wait(&g.idle, &g.mu);
    pthread_mutex_unlock(&g.mu);
    rc = 0;
out:
    if (d)
        MHD_stop_daemon(d);
    pthread_mutex_lock(&g.mu);
    g.quit = true;
    for (int i = 0; i < g.n_slots; i++)
        pthread_cond_signal(&g.slots[i].cond);
    pthread_mutex_unlock(&g.mu);
    for (int i = 0; i < started; i++)
        pthread_join(g.slots[i].thread, NULL);
    for (int i = 0; i < g.n_slots; i++) {
        ks_session_destroy(g.slots[i].sess);
        free(g.slots[i].held);
        pthread_cond_destroy(&g.slots[i].cond);
    }
    free(g.slots);
    ks_model_destroy(g.model);
    ks_runtime_destroy(g.rt);
    return rc;
}
