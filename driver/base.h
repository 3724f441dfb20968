/* Base services every layer uses: error reporting, logging, checked size
 * arithmetic and a monotonic clock. Internal; not installed. */
#ifndef KS_BASE_H
#define KS_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"

#if defined(__GNUC__)
#define KS_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KS_PRINTF(a, b)
#endif

/* Stores a thread-local message for ks_last_error() and returns |st|. */
ks_status ks_error(ks_status st, const char *fmt, ...) KS_PRINTF(2, 3);

/* The NULL-argument rule of include/kestrel/status.h: returns
 * KS_ERR_INVALID_ARG with a message naming the public function |fn| and
 * its argument |arg|. */
ks_status ks_null_arg(const char *fn, const char *arg);

/* One logging function for the whole project; |tag| names the module
 * ("gguf", "gov", ...). Output goes to stderr. */
void ks_log(ks_log_level level, const char *tag, const char *fmt, ...)
    KS_PRINTF(3, 4);
bool ks_log_enabled(ks_log_level level);

/* Overflow-checked arithmetic on sizes read from files: false on overflow,
 * *out untouched then. */
static inline bool
ks_mul_size(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

static inline bool
ks_add_size(uint64_t a, uint64_t b, uint64_t *out)
{
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return false;
    *out = r;
    return true;
}

static inline uint64_t
ks_align_up(uint64_t x, uint64_t align)
{
    return (x + align - 1) / align * align;
}

/* Monotonic clock in nanoseconds. */
uint64_t ks_now_ns(void);

/* Peak resident set size of this process in bytes (0 if unknown). */
uint64_t ks_peak_rss_bytes(void);

#endif
