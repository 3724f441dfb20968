/* Base services every layer uses: error reporting, logging, checked size
 * arithmetic and a monotonic clock. Internal; not installed. */
#ifndef KS_BASE_H
#define KS_BASE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

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

/* ---- Files that must not block ----------------------------------------
 * A FIFO, a character device or a socket where a cache entry, a sysfs
 * attribute or a data file is expected would block a plain open() or
 * read() forever (a FIFO with no writer, a tty). These open with
 * O_NONBLOCK and then fstat the descriptor: anything but a regular file is
 * refused before a byte is read. Sysfs attributes are regular files, so
 * they pass. */

/* Opens |path| read-only (O_NONBLOCK, O_CLOEXEC, O_NOCTTY) and checks that
 * it is a regular file (symlinks followed). Returns the descriptor, or -1
 * with errno set: open's own errno (ENOENT: absent, EACCES, ...), or
 * KS_ENOTREG when the path is a FIFO, device, socket or directory; then
 * *kind (when |kind| is not NULL) names what it was for messages ("a
 * FIFO", "a directory", ...). */
int ks_file_open_regular(const char *path, const char **kind);

/* errno value ks_file_open_regular and ks_file_read use for "not a regular
 * file" (Linux has no EFTYPE; EBADFD is never returned by open or read). */
#define KS_ENOTREG EBADFD

/* Reads the whole regular file at |path| through ks_file_open_regular into
 * a malloc'd buffer with a NUL after the last byte (*out, *size bytes not
 * counting the NUL). The size is found by reading to end of file, not from
 * st_size (sysfs reports 4096 for every attribute). Errors, each naming
 * the path, with errno set as for ks_file_open_regular: KS_ERR_IO (cannot
 * open or read; errno ENOENT when absent), KS_ERR_UNSUPPORTED (not a
 * regular file: the message says "not a regular file (a FIFO)"),
 * KS_ERR_CORRUPT (more than |max_bytes| bytes), KS_ERR_NOMEM. *out is NULL
 * on failure. */
ks_status ks_file_read(const char *path, size_t max_bytes, char **out,
                       size_t *size);

/* For writers that replace |path| by rename() of a temporary file: KS_OK
 * when |path| does not exist or is a regular file (symlinks followed);
 * KS_ERR_INVALID_ARG naming the path and what it is otherwise (a FIFO, a
 * device, a directory, a socket), which rename() would replace or fail on.
 * Only stat()s: never opens, so never blocks. */
ks_status ks_file_check_replaceable(const char *path);

/* Scalar IEEE half <-> float, exact and round-to-nearest-even, for every
 * layer: runtime/cpu's ks_fp16_to_f32/ks_f32_to_fp16 wrap these, the
 * Vulkan kernels' CPU side calls them directly. NaN keeps its sign and top
 * payload bits and becomes quiet, as F16C's vcvtps2ph does. */
static inline float
ks_h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
    float f;

    if (e == 0) {
        f = (float)m * 0x1p-24f; /* zero or subnormal, exact */
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (m << 13);
    } else {
        bits = sign | ((e + 112) << 23) | (m << 13);
    }
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t
ks_f2h(float f)
{
    uint32_t x, ax, h, rem;
    uint16_t sign;

    memcpy(&x, &f, 4);
    sign = (uint16_t)((x >> 16) & 0x8000);
    ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) /* rounds past 65504, or inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* below 2^-14: subnormal half or zero */
        uint32_t e = ax >> 23, mant, shift, half;
        if (e < 102) /* below 2^-25: rounds to zero */
            return sign;
        mant = (ax & 0x7fffffu) | 0x800000u;
        shift = 126 - e;
        h = mant >> shift;
        rem = mant & ((1u << shift) - 1);
        half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    h = (ax >> 13) - (112u << 10);
    rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

/* 64-bit FNV-1a over |n| bytes, continuing from |h|: start with
 * KS_FNV1A_INIT (the offset basis). The one FNV of the project, for hash
 * tables and cache keys (not cryptographic). Constants:
 * http://www.isthe.com/chongo/tech/comp/fnv/ (FNV-1a, 64-bit). */
#define KS_FNV1A_INIT 0xcbf29ce484222325ull

static inline uint64_t
ks_fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Writes |s| as a JSON string, quoted and escaped; NULL as "". */
void ks_json_str(FILE *f, const char *s);

/* Environment variables, read the same way everywhere: ks_env_str gives
 * the value, or NULL when the variable is unset or empty; ks_env_flag is
 * true when it is set to anything but "" or "0" (KESTREL_VALIDATE=1). */
const char *ks_env_str(const char *name);
bool ks_env_flag(const char *name);

/* Monotonic clock in nanoseconds. */
uint64_t ks_now_ns(void);

/* Kestrel's cache directory: $KESTREL_CACHE_DIR, else
 * $XDG_CACHE_HOME/kestrel (absolute XDG paths only), else
 * ~/.cache/kestrel, without a trailing slash. NULL when none is set or it
 * does not fit |size|. The directory may not exist yet. */
const char *ks_cache_dir(char *buf, size_t size);

/* Peak resident set size of this process in bytes (0 if unknown). */
uint64_t ks_peak_rss_bytes(void);

#endif
