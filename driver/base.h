/* Base services every layer uses: error reporting, logging, checked size
 * arithmetic and a monotonic clock. Internal; not installed. */
#ifndef KS_BASE_H
#define KS_BASE_H

#include <errno.h>
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
