/* Remote verification: speculative decoding across the network.
 *
 * The local session drafts k tokens greedily with its own model; one POST
 * to URL/v1/kestrel/verify (cli/serve.c) sends the context's ids and the
 * draft, and the server answers with the prefix of the draft that greedy
 * decoding with its model (the target) agrees with, plus the target's
 * next token. Those are emitted; the local session drops the drafted
 * tokens that were not accepted and is given the next token with the
 * following draft. k is chosen every round for the most expected tokens
 * per millisecond: each round costs k draft steps and one round trip, and
 * is worth the expected accepted tokens plus one (acceptance measured over
 * the rounds), so a slow link drafts longer.
 *
 * Any failure of the server (no connection, no answer within the
 * deadline, an HTTP error, a body that is not a well-formed answer) gives
 * it up for the rest of the call: the local model generates the rest from
 * the tokens emitted so far, as plain decoding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/remote.h"
#include "runtime/session_priv.h"

#ifndef KS_HAVE_CURL

ks_status
ks_remote_generate(ks_session *s, ks_generate_params *p)
{
    (void)s;
    (void)p;
    return ks_error(KS_ERR_UNSUPPORTED, "verify_url: this build of kestrel "
                    "has no libcurl");
}

#else

#include <pthread.h>
#include <curl/curl.h>
#include <cjson/cJSON.h>

#define REPLY_MAX (1 << 20)   /* a longer answer is garbage */
#define DRAFT_LIMIT 64        /* the server's limit on a draft */

typedef struct remote {
    CURL              *curl;
    struct curl_slist *headers;
    char              *url;
    char              *body;     /* the request */
    size_t             body_cap;
    char              *reply;
    size_t             len, cap;
} remote;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void
curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t
on_data(char *ptr, size_t size, size_t n, void *user)
{
    remote *rm = user;
    size_t len = size * n;

    if (rm->len + len + 1 > REPLY_MAX)
        return 0;               /* stops the transfer: an error */
    if (rm->len + len + 1 > rm->cap) {
        size_t nc = rm->cap ? rm->cap : 4096;
        while (nc < rm->len + len + 1)
            nc *= 2;
        char *nb = realloc(rm->reply, nc);
        if (!nb)
            return 0;
        rm->reply = nb;
        rm->cap = nc;
    }
    memcpy(rm->reply + rm->len, ptr, len);
    rm->len += len;
    rm->reply[rm->len] = '\0';
    return len;
}

static void
remote_close(remote *rm)
{
    if (rm->curl)
        curl_easy_cleanup(rm->curl);
    curl_slist_free_all(rm->headers);
    free(rm->url);
    free(rm->body);
    free(rm->reply);
}

static bool
remote_open(remote *rm, const char *base, uint32_t timeout_ms, size_t n_ctx,
            char *why, size_t why_cap)
{
    size_t bl = strlen(base);
    static const char path[] = "/v1/kestrel/verify";

    pthread_once(&curl_once, curl_init_once);
    while (bl > 0 && base[bl - 1] == '/')
        bl--;
    rm->url = malloc(bl + sizeof path);
    rm->body_cap = (n_ctx + DRAFT_LIMIT) * 12 + 128;
    rm->body = malloc(rm->body_cap);
    rm->curl = curl_easy_init();
    rm->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (!rm->url || !rm->body || !rm->curl || !rm->headers) {
        snprintf(why, why_cap, "no memory for the HTTP client");
        return false;
    }
    memcpy(rm->url, base, bl);
    memcpy(rm->url + bl, path, sizeof path);
    curl_easy_setopt(rm->curl, CURLOPT_URL, rm->url);
    curl_easy_setopt(rm->curl, CURLOPT_HTTPHEADER, rm->headers);
    curl_easy_setopt(rm->curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(rm->curl, CURLOPT_WRITEDATA, rm);
    curl_easy_setopt(rm->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(rm->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(rm->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(rm->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    return true;
}

static size_t
put_ids(char *out, const char *key, const int32_t *ids, size_t n)
{
    size_t k = (size_t)sprintf(out, "\"%s\":[", key);
    for (size_t i = 0; i < n; i++)
        k += (size_t)sprintf(out + k, i ? ",%d" : "%d", (int)ids[i]);
    out[k++] = ']';
    return k;
}

/* One round: *n_acc of the draft accepted and the target's next token, or
 * false with why. */
static bool
verify_round(remote *rm, const ks_model *m, const int32_t *ctx, size_t n,
             size_t n_prompt, const int32_t *draft, size_t nd,
             long timeout_ms, size_t *n_acc,
             int32_t *next, char *why, size_t why_cap)
{
    size_t k = 0;
    long http = 0;
    bool ok = false;
    cJSON *root = NULL, *acc, *nx, *v;

    rm->body[k++] = '{';
    k += put_ids(rm->body + k, "tokens", ctx, n);
    rm->body[k++] = ',';
    k += put_ids(rm->body + k, "draft", draft, nd);
    k += (size_t)sprintf(rm->body + k, ",\"n_prompt\":%zu}", n_prompt);
    rm->body[k] = '\0';
    rm->len = 0;
    curl_easy_setopt(rm->curl, CURLOPT_POSTFIELDS, rm->body);
    curl_easy_setopt(rm->curl, CURLOPT_POSTFIELDSIZE, (long)k);
    curl_easy_setopt(rm->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    CURLcode cc = curl_easy_perform(rm->curl);
    if (cc != CURLE_OK) {
        snprintf(why, why_cap, "%s: %s", rm->url, curl_easy_strerror(cc));
        return false;
    }
    curl_easy_getinfo(rm->curl, CURLINFO_RESPONSE_CODE, &http);
    if (http != 200) {
        snprintf(why, why_cap, "%s: HTTP %ld", rm->url, http);
        return false;
    }
    root = cJSON_ParseWithLength(rm->reply ? rm->reply : "", rm->len);
    acc = cJSON_GetObjectItemCaseSensitive(root, "accepted");
    nx = cJSON_GetObjectItemCaseSensitive(root, "next");
    if (!cJSON_IsArray(acc) || !cJSON_IsNumber(nx) ||
        (size_t)cJSON_GetArraySize(acc) > nd) {
        snprintf(why, why_cap, "%s: not a verification answer", rm->url);
        goto done;
    }
    *n_acc = 0;
    cJSON_ArrayForEach(v, acc) {
        if (!cJSON_IsNumber(v) || v->valuedouble != draft[*n_acc]) {
            snprintf(why, why_cap, "%s: the accepted ids are not a prefix "
                     "of the draft", rm->url);
            goto done;
        }
        (*n_acc)++;
    }
    ks_model_desc md;
    ks_model_describe(m, &md);
    if (!(nx->valuedouble >= 0 && nx->valuedouble < md.n_vocab &&
          nx->valuedouble == floor(nx->valuedouble))) {
        snprintf(why, why_cap, "%s: the next token is not an id of the "
                 "local vocabulary", rm->url);
        goto done;
    }
    *next = (int32_t)nx->valuedouble;
    ok = true;
done:
    cJSON_Delete(root);
    return ok;
}

/* The draft length with the most expected tokens per millisecond: a
 * round of k drafts emits (1 - a^(k+1)) / (1 - a) tokens on average for a
 * per-token acceptance a, and costs k draft steps and a round trip. */
static uint32_t
choose_k(const ks_verify_stats *vs, uint32_t kmin, uint32_t kmax)
{
    if (vs->n_rounds == 0 || vs->n_drafted == 0)
        return kmin > 4 ? kmin : (kmax < 4 ? kmax : 4);
    double a = (vs->n_accepted + 1.0) / (vs->n_drafted + 2.0);
    double td = vs->draft_ms / vs->n_drafted;
    uint32_t best = kmin;
    double best_rate = -1;

    if (a > 0.95)
        a = 0.95;
    for (uint32_t k = kmin; k <= kmax; k++) {
        double rate = (1 - pow(a, k + 1)) / (1 - a) /
                      (k * td + vs->rtt_ms + 1e-3);
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    return best;
}

/* Hands a token to the caller as generate does; false: stop, why in *stop. */
static bool
emit(ks_session *s, ks_generate_params *p, int32_t t, size_t *n_out,
     ks_stop *stop)
{
    char piece[256];

    if (p->out_tokens && *n_out < p->out_cap)
        p->out_tokens[*n_out] = t;
    (*n_out)++;
    if (p->on_token) {
        size_t len = ks_model_token_piece(s->m, t, piece, sizeof piece);
        if (len > sizeof piece)
            len = sizeof piece;
        if (!p->on_token(p->user, t, piece, len)) {
            *stop = KS_STOP_CALLBACK;
            return false;
        }
    }
    if (p->n_predict && *n_out >= p->n_predict) {
        *stop = KS_STOP_LENGTH;
        return false;
    }
    return true;
}

ks_status
ks_remote_generate(ks_session *s, ks_generate_params *p)
{
    ks_verify_stats vs = { 0 };
    remote rm = { 0 };
    ks_status st = KS_OK;
    ks_stop stop = KS_STOP_NONE;
    uint32_t n_ctx = s->n_ctx;
    uint32_t kmax = p->draft_max ? p->draft_max : 16;
    uint32_t kmin;
    int32_t *ctx = NULL, *draft = NULL;
    size_t n, n_pend, n_prompt, n_out = 0;
    double verify_ms = 0, prefill_ms = 0;
    uint32_t timeout_ms = p->verify_timeout_ms ? p->verify_timeout_ms : 3000;
    size_t n_seen = 0;          /* context tokens the server has run */
    uint32_t n_prefilled = 0;
    uint64_t t_start = ks_now_ns();

    if (p->sampling.temp > 0 || p->json_schema || p->draft ||
        (p->spec != KS_SPEC_AUTO && p->spec != KS_SPEC_OFF) ||
        (p->sampling.repeat_penalty != 0 && p->sampling.repeat_penalty != 1))
        return ks_error(KS_ERR_UNSUPPORTED, "verify_url: remote verification "
                        "is greedy (temperature 0, no repeat penalty) and "
                        "goes with no json_schema or local speculation");
    if (s->n_past + p->n_prompt > n_ctx) {
        p->stop = KS_STOP_CONTEXT;
        return ks_error(KS_ERR_CONTEXT_FULL, "the prompt (%zu tokens after "
                        "%u) does not fit the context of %u", p->n_prompt,
                        s->n_past, n_ctx);
    }
    if (kmax > DRAFT_LIMIT)
        kmax = DRAFT_LIMIT;
    kmin = p->draft_min ? (p->draft_min < kmax ? p->draft_min : kmax) : 1;
    ctx = malloc((size_t)n_ctx * sizeof(int32_t));
    draft = malloc(kmax * sizeof(int32_t));
    if (!ctx || !draft) {
        st = ks_error(KS_ERR_NOMEM, "verify_url: no memory for the context");
        goto out;
    }
    /* ctx: every token held after this call's emits; the session holds
     * ctx[0 .. n - n_pend) and perhaps drafted tokens after them. */
    memcpy(ctx, s->hist, s->n_past * sizeof(int32_t));
    if (p->n_prompt)
        memcpy(ctx + s->n_past, p->prompt, p->n_prompt * sizeof(int32_t));
    n = s->n_past + p->n_prompt;
    n_pend = p->n_prompt;
    n_prompt = n;
    if (n == 0)
        snprintf(vs.why, sizeof vs.why, "no context to verify (the session "
                 "is empty and so is the prompt)");
    else
        remote_open(&rm, p->verify_url, timeout_ms, n_ctx, vs.why,
                    sizeof vs.why);
    vs.lost = vs.why[0] != '\0';

    while (!vs.lost) {
        if (p->cancel && *p->cancel) {
            stop = KS_STOP_CANCELLED;
            st = ks_error(KS_ERR_CANCELLED, "generation cancelled");
            break;
        }
        if (n >= n_ctx) {
            stop = KS_STOP_CONTEXT;
            st = ks_error(KS_ERR_CONTEXT_FULL, "the context (%u tokens) is "
                          "full", n_ctx);
            break;
        }
        /* room: the draft and the next token in the context, and no more
         * than the tokens still wanted */
        size_t k = choose_k(&vs, kmin, kmax), nd = 0, n_acc = 0;
        if (k > n_ctx - n - 1)
            k = n_ctx - n - 1;
        if (p->n_predict && k > p->n_predict - n_out - 1)
            k = p->n_predict - n_out - 1;
        if (k > 0) {
            ks_generate_params d = { 0 };
            d.prompt = ctx + n - n_pend;
            d.n_prompt = n_pend;
            d.n_predict = (uint32_t)k;
            d.cancel = p->cancel;
            d.out_tokens = draft;
            d.out_cap = kmax;
            uint64_t t0 = ks_now_ns();
            st = ks_session_generate(s, &d);
            vs.draft_ms += (double)(ks_now_ns() - t0) / 1e6;
            if (st != KS_OK) {
                stop = d.stop;
                break;
            }
            if (vs.n_rounds == 0) {     /* the prompt's prefill */
                prefill_ms = s->stats.prefill_ms;
                n_prefilled = s->stats.n_prompt;
            }
            nd = d.n_out;
            n_pend = 0;
        }
        int32_t next = 0;
        uint64_t t0 = ks_now_ns();
        /* the deadline, and 50 ms more for each context token the server
         * has not run yet (the first round prefills the whole context) */
        long deadline_ms = (long)timeout_ms + 50L * (long)(n - n_seen);
        if (!verify_round(&rm, s->m, ctx, n, n_prompt, draft, nd, deadline_ms,
                          &n_acc, &next, vs.why, sizeof vs.why)) {
            vs.lost = true;
            ks_session_truncate(s, (uint32_t)(n - n_pend));
            break;
        }
        double ms = (double)(ks_now_ns() - t0) / 1e6;
        verify_ms += ms;
        vs.n_rounds++;
        vs.rtt_ms += (ms - vs.rtt_ms) / vs.n_rounds;
        vs.n_drafted += (uint32_t)nd;
        vs.n_accepted += (uint32_t)n_acc;

        size_t n_before = n, i;
        n_seen = n + n_acc;
        bool go = true;
        for (i = 0; go && i <= n_acc; i++) {
            int32_t t = i < n_acc ? draft[i] : next;
            if (ks_model_token_is_eog(s->m, t) && !p->ignore_eog) {
                stop = KS_STOP_EOG;
                break;
            }
            ctx[n++] = t;
            vs.n_remote++;
            go = emit(s, p, t, &n_out, &stop);
        }
        /* keep the accepted drafts that were emitted; the rest of the
         * emitted tokens are given to the session with the next draft */
        size_t keep = n_before - n_pend + (n_pend ? 0 : (n - n_before < n_acc
                                                         ? n - n_before
                                                         : n_acc));
        if (s->n_past > keep)
            ks_session_truncate(s, (uint32_t)keep);
        n_pend = n - keep;
        if (stop != KS_STOP_NONE)
            break;
    }

    if (vs.lost && stop == KS_STOP_NONE) {
        /* the server is given up: the local model goes on from here */
        ks_generate_params l = *p;
        size_t done = n_out < p->out_cap ? n_out : p->out_cap;
        l.verify_url = NULL;
        l.verify_stats = NULL;
        l.prompt = ctx + n - n_pend;
        l.n_prompt = n_pend;
        l.n_predict = p->n_predict ? p->n_predict - (uint32_t)n_out : 0;
        l.out_tokens = p->out_tokens ? p->out_tokens + done : NULL;
        l.out_cap = p->out_tokens ? p->out_cap - done : 0;
        n_pend = 0;
        st = ks_session_generate(s, &l);
        n_out += l.n_out;
        vs.n_local = (uint32_t)l.n_out;
        stop = l.stop;
    } else if (n_pend > 0 && s->n_past + n_pend <= n_ctx) {
        /* emitted tokens not yet given to the session: held, to be run
         * at the next call (the contract's late keys and values) */
        memcpy(s->hist + s->n_past, ctx + n - n_pend,
               n_pend * sizeof(int32_t));
        s->n_past += (uint32_t)n_pend;
        s->logits_ok = false;
    }
    /* the whole call's figures: the first round's prefill, and the rest
     * (drafting, round trips, local continuation) as decoding */
    s->stats.n_gen = (uint32_t)n_out;
    if (vs.n_rounds > 0) {
        s->stats.n_prompt = n_prefilled;
        s->stats.prefill_ms = prefill_ms;
        s->stats.prefill_tps = prefill_ms > 0 ? n_prefilled * 1e3 /
                                                prefill_ms : 0;
        s->stats.decode_ms = (double)(ks_now_ns() - t_start) / 1e6 -
                             prefill_ms;
        s->stats.decode_tps = s->stats.decode_ms > 0 ? n_out * 1e3 /
                                                       s->stats.decode_ms : 0;
    }
    s->stats.n_drafted = vs.n_drafted;
    s->stats.n_accepted = vs.n_accepted;
    s->stats.n_verify = vs.n_rounds;
    s->stats.accept_rate = vs.n_drafted ? (double)vs.n_accepted /
                                          vs.n_drafted : 0;
    s->stats.tokens_per_verify = vs.n_rounds ? (double)vs.n_remote /
                                               vs.n_rounds : 0;
    s->stats.draft_ms = vs.draft_ms;
    s->stats.verify_ms = verify_ms;
out:
    p->n_out = n_out;
    p->stop = stop != KS_STOP_NONE ? stop
            : st == KS_OK ? KS_STOP_NONE : KS_STOP_ERROR;
    if (p->verify_stats)
        *p->verify_stats = vs;
    remote_close(&rm);
    free(ctx);
    free(draft);
    return st;
}

#endif
