/* kestrel run --fallback-url: a completion from an OpenAI-compatible
 * server (cli/fallback.c). */
#ifndef KESTREL_CLI_FALLBACK_H
#define KESTREL_CLI_FALLBACK_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
