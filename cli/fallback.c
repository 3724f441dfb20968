/* kestrel run --fallback-url: one completion from an OpenAI-compatible
 * server (BASE/completions), for a request the local model cannot serve.
 * HTTP is libcurl, JSON cJSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
