/* Error messages, logging, clock. The error message lives in a thread-local
 * buffer so that two sessions on two threads never see each other's
 * errors; the log level is read once from KESTREL_LOG. */
#include "base.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

static _Thread_local char last_error[1024];
static atomic_int log_level = -1;

ks_status
ks_error(ks_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

ks_status
ks_null_arg(const char *fn, const char *arg)
{
    return ks_error(KS_ERR_INVALID_ARG, "%s: argument '%s' is NULL", fn, arg);
}

const char *
ks_last_error(void)
{
    return last_error;
}

const char *
ks_status_str(ks_status st)
{
    switch (st) {
    case KS_OK: return "ok";
    case KS_ERR_INVALID_ARG: return "invalid argument";
    case KS_ERR_NOMEM: return "out of memory";
    case KS_ERR_IO: return "I/O error";
    case KS_ERR_CORRUPT: return "corrupt file";
    case KS_ERR_UNSUPPORTED: return "unsupported";
    case KS_ERR_CONTEXT_FULL: return "context full";
    case KS_ERR_CANCELLED: return "cancelled";
    case KS_ERR_NO_DEVICE: return "no device";
    case KS_ERR_DEVICE_OOM: return "device out of memory";
    case KS_ERR_DEVICE_LOST: return "device lost";
    case KS_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

void
ks_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

const char *
ks_env_str(const char *name)
{
    const char *e = getenv(name);

    return e && *e ? e : NULL;
}

bool
ks_env_flag(const char *name)
{
    const char *e = ks_env_str(name);

    return e && strcmp(e, "0") != 0;
}

static int
level_from_env(void)
{
    const char *e = ks_env_str("KESTREL_LOG");
    static const char *names[] = { "debug", "info", "warn", "error", "none" };

    if (e)
        for (int i = 0; i < 5; i++)
            if (strcasecmp(e, names[i]) == 0)
                return i;
    return KS_LOG_WARN;
}

void
ks_log_set_level(ks_log_level level)
{
    atomic_store(&log_level, (int)level);
}

bool
ks_log_enabled(ks_log_level level)
{
    int cur = atomic_load(&log_level);

    if (cur < 0) {
        cur = level_from_env();
        atomic_store(&log_level, cur);
    }
    return (int)level >= cur;
}

void
ks_log(ks_log_level level, const char *tag, const char *fmt, ...)
{
    static const char *names[] = { "debug", "info", "warn", "error" };
    char line[2048];
    va_list ap;
    int n;

    if (!ks_log_enabled(level) || level >= KS_LOG_NONE)
        return;
    n = snprintf(line, sizeof line, "kestrel %s [%s] ", names[level], tag);
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* One fputs per line keeps lines from two threads whole. */
    strncat(line, "\n", sizeof line - strlen(line) - 1);
    fputs(line, stderr);
}

uint64_t
ks_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
ks_peak_rss_bytes(void)
{
    struct rusage ru;

    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u;
}
