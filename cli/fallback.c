/* The cloud fallback: a completion from an OpenAI-compatible server, for
 * a request the local model cannot or should not serve. kestrel run takes
 * one answer (BASE/completions); kestrel serve relays a streamed one
 * (server-sent events), piece by piece. HTTP is libcurl, JSON cJSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "fallback.h"

#define REPLY_MAX (16 << 20)

typedef struct reply {
    char  *buf;
    size_t len, cap;
} reply;

static size_t
on_data(char *ptr, size_t size, size_t n, void *user)
{
    reply *r = user;
    size_t len = size * n;

    if (r->len + len + 1 > REPLY_MAX)
        return 0;
    if (r->len + len + 1 > r->cap) {
        size_t nc = r->cap ? r->cap : 4096;
        while (nc < r->len + len + 1)
            nc *= 2;
        char *nb = realloc(r->buf, nc);
        if (!nb)
            return 0;
        r->buf = nb;
        r->cap = nc;
    }
    memcpy(r->buf + r->len, ptr, len);
    r->len += len;
    r->buf[r->len] = '\0';
    return len;
}

bool
ks_cli_fallback(const ks_fallback_req *q, char **text, char *finish,
                size_t finish_cap, char *why, size_t why_cap)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    cJSON *body = cJSON_CreateObject(), *root = NULL, *ch, *t, *fr;
    char *json = NULL, *url = NULL, auth[512];
    reply r = { 0 };
    bool ok = false;
    size_t bl = strlen(q->base_url);

    *text = NULL;
    while (bl > 0 && q->base_url[bl - 1] == '/')
        bl--;
    if (!c || !body || !(url = malloc(bl + 16))) {
        snprintf(why, why_cap, "no memory for the HTTP client");
        goto done;
    }
    memcpy(url, q->base_url, bl);
    strcpy(url + bl, "/completions");
    cJSON_AddStringToObject(body, "model", q->model ? q->model : "default");
    cJSON_AddStringToObject(body, "prompt", q->prompt);
    if (q->max_tokens > 0)
        cJSON_AddNumberToObject(body, "max_tokens", q->max_tokens);
    cJSON_AddNumberToObject(body, "temperature", q->temperature);
    if (!(json = cJSON_PrintUnformatted(body))) {
        snprintf(why, why_cap, "no memory for the request");
        goto done;
    }
    h = curl_slist_append(h, "Content-Type: application/json");
    if (q->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", q->api_key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, q->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, q->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(c);
    long http = 0;
    if (cc != CURLE_OK) {
        snprintf(why, why_cap, "%s: %s", url, curl_easy_strerror(cc));
        goto done;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
    if (http != 200) {
        snprintf(why, why_cap, "%s: HTTP %ld", url, http);
        goto done;
    }
    root = cJSON_ParseWithLength(r.buf ? r.buf : "", r.len);
    ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"),
                            0);
    t = cJSON_GetObjectItemCaseSensitive(ch, "text");
    fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
    if (!cJSON_IsString(t)) {
        snprintf(why, why_cap, "%s: not a completion answer", url);
        goto done;
    }
    if (!(*text = strdup(t->valuestring))) {
        snprintf(why, why_cap, "no memory for the answer");
        goto done;
    }
    snprintf(finish, finish_cap, "%s",
             cJSON_IsString(fr) ? fr->valuestring : "unknown");
    ok = true;
done:
    cJSON_Delete(root);
    cJSON_Delete(body);
    free(json);
    free(url);
    free(r.buf);
    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    return ok;
}

/* ---- the streamed completion (kestrel serve) ---- */

typedef struct sse {
    const ks_fallback_stream *q;
    CURL   *c;
    char   *line;           /* the event line being gathered */
    size_t  len, cap;
    bool    ended;          /* a finish_reason or [DONE] came */
    bool    failed;
    char   *finish;
    size_t  finish_cap;
    char   *why;
    size_t  why_cap;
    struct timespec last;   /* when data last came */
} sse;

static double
since_s(const struct timespec *t)
{
    struct timespec n;
    clock_gettime(CLOCK_MONOTONIC, &n);
    return (double)(n.tv_sec - t->tv_sec) +
           (double)(n.tv_nsec - t->tv_nsec) * 1e-9;
}

static bool
sse_fail(sse *s, const char *fmt, const char *arg)
{
    if (!s->failed)
        snprintf(s->why, s->why_cap, fmt, arg);
    s->failed = true;
    return false;
}

/* One line of the event stream: "data: {chunk}" or "data: [DONE]";
 * comments, other fields and blank lines carry nothing. */
static bool
sse_line(sse *s, char *l, size_t n)
{
    cJSON *root, *ch, *t, *fr, *err;
    bool ok = true;

    if (n > 0 && l[n - 1] == '\r')
        l[--n] = '\0';
    if (n < 5 || memcmp(l, "data:", 5) != 0)
        return true;
    l += 5;
    while (*l == ' ')
        l++;
    if (strcmp(l, "[DONE]") == 0) {
        s->ended = true;
        return true;
    }
    if (!(root = cJSON_Parse(l)))
        return sse_fail(s, "malformed JSON in the stream%s", "");
    err = cJSON_GetObjectItemCaseSensitive(root, "error");
    ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"),
                            0);
    t = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ch, "delta"), "content");
    if (!t)
        t = cJSON_GetObjectItemCaseSensitive(ch, "text");
    fr = cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
    if (err) {
        ok = sse_fail(s, "the stream carried an error%s", "");
    } else if (!cJSON_IsObject(root) || (!ch && !cJSON_GetObjectItem(root,
                                                                   "usage"))) {
        ok = sse_fail(s, "not a completion chunk%s", "");
    } else {
        if (cJSON_IsString(t) && t->valuestring[0] &&
            !s->q->on_text(s->q->user, t->valuestring, strlen(t->valuestring)))
            ok = sse_fail(s, "cancelled%s", "");
        if (ok && cJSON_IsString(fr)) {
            snprintf(s->finish, s->finish_cap, "%s", fr->valuestring);
            s->ended = true;
        }
    }
    cJSON_Delete(root);
    return ok;
}

static size_t
on_sse(char *ptr, size_t size, size_t n, void *user)
{
    sse *s = user;
    size_t len = size * n;
    long http = 0;

    clock_gettime(CLOCK_MONOTONIC, &s->last);
    curl_easy_getinfo(s->c, CURLINFO_RESPONSE_CODE, &http);
    if (http != 200) {
        char code[24];
        snprintf(code, sizeof code, "%ld", http);
        sse_fail(s, "HTTP %s", code);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (ptr[i] != '\n') {
            if (s->len + 2 > s->cap) {
                size_t nc = s->cap ? s->cap * 2 : 4096;
                char *nb = nc <= REPLY_MAX ? realloc(s->line, nc) : NULL;
                if (!nb) {
                    sse_fail(s, "an event line too long%s", "");
                    return 0;
                }
                s->line = nb;
                s->cap = nc;
            }
            s->line[s->len++] = ptr[i];
            continue;
        }
        if (!s->line)
            continue;
        s->line[s->len] = '\0';
        bool ok = sse_line(s, s->line, s->len);
        s->len = 0;
        if (!ok)
            return 0;
    }
    return len;
}

static int
on_progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut,
            curl_off_t un)
{
    sse *s = user;
    char ms[24];

    (void)dt; (void)dn; (void)ut; (void)un;
    if (s->q->cancelled && s->q->cancelled(s->q->user)) {
        sse_fail(s, "cancelled%s", "");
        return 1;
    }
    if (since_s(&s->last) * 1000 > (double)s->q->timeout_ms) {
        if (s->ended)
            return 1;   /* the answer is whole; the connection lingers */
        snprintf(ms, sizeof ms, "%ld", s->q->timeout_ms);
        sse_fail(s, "no data within the deadline of %s ms", ms);
        return 1;
    }
    return 0;
}

bool
ks_cli_fallback_stream(const ks_fallback_stream *q, char *finish,
                       size_t finish_cap, char *why, size_t why_cap)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char *url = NULL, auth[512];
    size_t bl = strlen(q->base_url);
    sse s = { .q = q, .c = c, .finish = finish, .finish_cap = finish_cap,
              .why = why, .why_cap = why_cap };

    snprintf(finish, finish_cap, "unknown");
    while (bl > 0 && q->base_url[bl - 1] == '/')
        bl--;
    if (!c || !(url = malloc(bl + strlen(q->path) + 1))) {
        sse_fail(&s, "no memory for the HTTP client%s", "");
        goto done;
    }
    memcpy(url, q->base_url, bl);
    strcpy(url + bl, q->path);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: text/event-stream");
    if (q->api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", q->api_key);
        h = curl_slist_append(h, auth);
    }
    clock_gettime(CLOCK_MONOTONIC, &s.last);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_sse);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, q->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(c);
    if (!s.failed && s.len > 0 && s.line) {   /* a last line without \n */
        s.line[s.len] = '\0';
        sse_line(&s, s.line, s.len);
    }
    long http = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
    if (!s.failed && cc == CURLE_OK && http != 200) {
        char code[24];
        snprintf(code, sizeof code, "%ld", http);
        sse_fail(&s, "HTTP %s", code);
    }
    if (!s.failed && cc != CURLE_OK && !s.ended)
        sse_fail(&s, "%s", curl_easy_strerror(cc));
    if (!s.failed && !s.ended)
        sse_fail(&s, "the stream stopped before its end%s", "");
done:
    free(s.line);
    free(url);
    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    return !s.failed;
}

char *
ks_cli_fallback_chat_body(const ks_chat_message *msgs, size_t n,
                          const char *model, long max_tokens,
                          double temperature)
{
    cJSON *b = cJSON_CreateObject(), *a, *m;
    char *json = NULL;

    if (!b)
        return NULL;
    cJSON_AddStringToObject(b, "model", model ? model : "default");
    a = cJSON_AddArrayToObject(b, "messages");
    for (size_t i = 0; a && i < n; i++) {
        if (!(m = cJSON_CreateObject()))
            goto done;
        cJSON_AddItemToArray(a, m);
        cJSON_AddStringToObject(m, "role", msgs[i].role);
        cJSON_AddStringToObject(m, "content", msgs[i].content);
    }
    if (max_tokens > 0)
        cJSON_AddNumberToObject(b, "max_tokens", (double)max_tokens);
    cJSON_AddNumberToObject(b, "temperature", temperature);
    cJSON_AddTrueToObject(b, "stream");
    json = cJSON_PrintUnformatted(b);
done:
    cJSON_Delete(b);
    return json;
}

void
ks_cli_url_host(const char *url, char *buf, size_t cap)
{
    CURLU *u = curl_url();
    char *host = NULL;

    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
        snprintf(buf, cap, "%s", host);
    else
        snprintf(buf, cap, "?");
    curl_free(host);
    curl_url_cleanup(u);
}
