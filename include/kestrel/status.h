/* Status codes, error messages and logging shared by every public call.
 *
 * Every fallible public function returns a ks_status. On failure the calling
 * thread's last error message (ks_last_error) says what went wrong in words a
 * user can act on: which file, field, tensor or device, expected and found.
 *
 * NULL arguments. One rule holds for every KS_API function:
 *  - A function that returns a ks_status checks each pointer argument it
 *    needs and, for a NULL one, returns KS_ERR_INVALID_ARG with
 *    ks_last_error() naming the function and the argument
 *    ("ks_model_load: argument 'path' is NULL"). Out-parameters that are
 *    not NULL are cleared first (*out = NULL, *n_out = 0), so they hold a
 *    defined value on every failure.
 *  - Arguments the header calls optional may be NULL and then mean what it
 *    says: a NULL params struct means all defaults, a NULL output buffer
 *    (count-then-fill) asks only for the count, a NULL logits array asks
 *    for no logits. A pointer paired with a count may be NULL when the
 *    count is 0, never otherwise.
 *  - A function that returns a value and takes an object gives a neutral
 *    value for a NULL object: 0, false, or "" for strings (never NULL).
 *    Functions that fill a struct (ks_model_describe, ks_session_stats)
 *    zero it for a NULL object and do nothing for a NULL struct.
 *  - Destroy functions accept NULL and do nothing.
 * tests/api/test_api.c calls every KS_API function with each pointer
 * argument NULL in turn, and tests/api/check_api.py fails the build's tests
 * when a declared function or pointer argument has no probe there. */
#ifndef KESTREL_STATUS_H
#define KESTREL_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions libkestrel exports; everything else stays hidden. */
#if defined(__GNUC__)
#define KS_API __attribute__((visibility("default")))
#else
#define KS_API
#endif

typedef enum ks_status {
    KS_OK = 0,
    KS_ERR_INVALID_ARG,   /* a caller passed a bad argument or flag */
    KS_ERR_NOMEM,         /* host memory ran out */
    KS_ERR_IO,            /* a file could not be opened, read or written */
    KS_ERR_CORRUPT,       /* a file is malformed (GGUF, cache, ...) */
    KS_ERR_UNSUPPORTED,   /* valid input that Kestrel cannot run (type, arch) */
    KS_ERR_CONTEXT_FULL,  /* the session's context has no room left */
    KS_ERR_CANCELLED,     /* the caller's cancel flag stopped the work */
    KS_ERR_NO_DEVICE,     /* no usable execution device */
    KS_ERR_DEVICE_OOM,    /* device memory ran out */
    KS_ERR_DEVICE_LOST,   /* the device was lost mid-run */
    KS_ERR_INTERNAL,      /* a bug in Kestrel */
} ks_status;

/* The message of the last error on this thread; never NULL ("" if none).
 * Valid until the next failing call on the same thread. */
KS_API const char *ks_last_error(void);

/* A short constant name for a status ("corrupt file", ...). */
KS_API const char *ks_status_str(ks_status st);

typedef enum ks_log_level {
    KS_LOG_DEBUG = 0,
    KS_LOG_INFO,
    KS_LOG_WARN,
    KS_LOG_ERROR,
    KS_LOG_NONE,
} ks_log_level;

/* Messages below |level| are dropped. The default comes from the
 * environment variable KESTREL_LOG (debug|info|warn|error|none), else warn.
 * Thread safe. */
KS_API void ks_log_set_level(ks_log_level level);

#ifdef __cplusplus
}
#endif
#endif
