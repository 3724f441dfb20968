/* kestrel run --fallback-url: a completion from an OpenAI-compatible
 * server (cli/fallback.c). */
#ifndef KESTREL_CLI_FALLBACK_H
#define KESTREL_CLI_FALLBACK_H

#include <stdbool.h>
#include <stddef.h>

#include "kestrel/kestrel.h"

typedef struct ks_fallback_req {
    const char *base_url;   /* ends in /v1; BASE/completions is asked */
    const char *api_key;    /* NULL: none */
    const char *model;      /* NULL: "default" */
    const char *prompt;     /* NUL-terminated */
    long        max_tokens; /* <= 0: the server's */
    double      temperature;
    long        timeout_ms;
} ks_fallback_req;

/* The completion's text (*text, malloc'd) and finish_reason, or false
 * with why (no connection, the deadline, an HTTP error, not a completion
 * answer). */
bool ks_cli_fallback(const ks_fallback_req *q, char **text, char *finish,
                     size_t finish_cap, char *why, size_t why_cap);

/* A streamed completion for kestrel serve: |body| (the request's JSON,
 * with "stream": true) is posted to BASE|path|, and each piece of text in
 * the server-sent events (choices[0].delta.content, or choices[0].text) is
 * given to on_text as it comes. The deadline (timeout_ms) bounds the
 * connection and every wait for data, not the whole answer. cancelled is
 * asked about every 100 ms and stops the transfer. Called from any thread
 * (curl_global_init must have run). */
typedef struct ks_fallback_stream {
    const char *base_url;
    const char *api_key;    /* NULL: none */
    const char *path;       /* "/chat/completions" or "/completions" */
    const char *body;       /* NUL-terminated JSON */
    long        timeout_ms;
    bool      (*on_text)(void *user, const char *text, size_t n);
    bool      (*cancelled)(void *user);
    void       *user;
} ks_fallback_stream;

/* True when the stream ended whole (a finish_reason or [DONE]), with the
 * finish reason in finish; false with why (the connection, HTTP status,
 * malformed JSON, the stream stopped before its end, the deadline, or
 * cancelled). Either way the text given to on_text stays given. */
bool ks_cli_fallback_stream(const ks_fallback_stream *q, char *finish,
                            size_t finish_cap, char *why, size_t why_cap);

/* The body of a streamed chat completion: the messages, model (NULL:
 * "default"), max_tokens (<= 0: the server's) and temperature; malloc'd
 * JSON, or NULL without memory. */
char *ks_cli_fallback_chat_body(const ks_chat_message *msgs, size_t n,
                                const char *model, long max_tokens,
                                double temperature);

/* The host part of a URL into buf ("?" when it has none), for the log. */
void ks_cli_url_host(const char *url, char *buf, size_t cap);

#endif
