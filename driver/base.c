/* Error messages, logging, clock. The error message lives in a thread-local
 * buffer so that two sessions on two threads never see each other's
 * errors; the log level is read once from KESTREL_LOG. */
#include "base.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

const char *
ks_cache_dir(char *buf, size_t size)
{
    const char *e;
    int n;

    if (!buf || size == 0)
        return NULL;
    if ((e = getenv("KESTREL_CACHE_DIR")) && *e)
        n = snprintf(buf, size, "%s", e);
    else if ((e = getenv("XDG_CACHE_HOME")) && e[0] == '/')  /* XDG: absolute only */
        n = snprintf(buf, size, "%s/kestrel", e);
    else if ((e = getenv("HOME")) && *e)
        n = snprintf(buf, size, "%s/.cache/kestrel", e);
    else
        return NULL;
    if (n < 0 || (size_t)n >= size)
        return NULL;
    while (n > 1 && buf[n - 1] == '/')
        buf[--n] = '\0';
    return buf;
}

/* ---- Files that must not block ---------------------------------------- */

static const char *
kind_of(mode_t mode)
{
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a plain file";
}

int
ks_file_open_regular(const char *path, const char **kind)
{
    struct stat sb;
    int fd, err;

    if (kind)
        *kind = NULL;
    /* O_NONBLOCK: opening a FIFO with no writer returns at once instead of
     * waiting for one; for a regular file the flag changes nothing. */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    if (fstat(fd, &sb) != 0) {
        err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        if (kind)
            *kind = kind_of(sb.st_mode);
        close(fd);
        errno = KS_ENOTREG;
        return -1;
    }
    return fd;
}

ks_status
ks_file_read(const char *path, size_t max_bytes, char **out, size_t *size)
{
    const char *kind;
    char *buf = NULL, *grown;
    size_t cap = 0, len = 0;
    ks_status st;
    int fd, err;

    *out = NULL;
    *size = 0;
    if ((fd = ks_file_open_regular(path, &kind)) < 0) {
        err = errno;
        if (err == KS_ENOTREG)
            st = ks_error(KS_ERR_UNSUPPORTED, "%s: not a regular file (%s)", path, kind);
        else
            st = ks_error(KS_ERR_IO, "cannot open %s: %s", path, strerror(err));
        errno = err;
        return st;
    }
    for (;;) {
        if (len == cap) {
            /* One byte past the limit tells "exactly max" from "more". */
            size_t want = cap ? cap * 2 : 4096;
            if (want > max_bytes + 1)
                want = max_bytes + 1;
            if (want <= len) {
                st = ks_error(KS_ERR_CORRUPT, "%s: larger than %zu bytes", path,
                              max_bytes);
                err = EFBIG;
                goto fail;
            }
            if (!(grown = realloc(buf, want + 1))) {
                st = ks_error(KS_ERR_NOMEM, "no memory to read %s (%zu bytes)", path, want);
                err = ENOMEM;
                goto fail;
            }
            buf = grown;
            cap = want;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = errno;
            st = ks_error(KS_ERR_IO, "cannot read %s: %s", path, strerror(err));
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!buf && !(buf = malloc(1))) {
        errno = ENOMEM;
        return ks_error(KS_ERR_NOMEM, "no memory to read %s", path);
    }
    buf[len] = '\0';
    *out = buf;
    *size = len;
    return KS_OK;
fail:
    free(buf);
    close(fd);
    errno = err;
    return st;
}

ks_status
ks_file_check_replaceable(const char *path)
{
    struct stat sb;

    if (stat(path, &sb) != 0 || S_ISREG(sb.st_mode))
        return KS_OK;  /* absent, or unreachable: the write will say why */
    return ks_error(KS_ERR_INVALID_ARG, "%s is %s, not a regular file; refusing to "
                    "write over it", path, kind_of(sb.st_mode));
}
