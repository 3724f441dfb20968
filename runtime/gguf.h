/* GGUF files: a validating reader (gguf.c) and a writer (gguf_write.c).
 *
 * The reader maps a file (or borrows a caller's buffer), checks every count,
 * length, offset and size against the file before using it, and builds a
 * metadata table and a tensor table in one arena that lives as long as the
 * ks_gguf. Tensor data is never copied: ks_gguf_tensor.data points into the
 * mapping. Layout reference: shared/reference/gguf-and-quants.md section 1.
 *
 * Thread safety: opening and destroying are per-object; every read-only
 * accessor may be called from several threads at once on one ks_gguf.
 * Internal; not installed. */
#ifndef KS_GGUF_H
#define KS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"

/* Metadata value types, numbered as in the file. */
typedef enum ks_gguf_type {
    KS_GGUF_U8 = 0,
    KS_GGUF_I8 = 1,
    KS_GGUF_U16 = 2,
    KS_GGUF_I16 = 3,
    KS_GGUF_U32 = 4,
    KS_GGUF_I32 = 5,
    KS_GGUF_F32 = 6,
    KS_GGUF_BOOL = 7,
    KS_GGUF_STR = 8,
    KS_GGUF_ARR = 9,
    KS_GGUF_U64 = 10,
    KS_GGUF_I64 = 11,
    KS_GGUF_F64 = 12,
    KS_GGUF_TYPE_COUNT = 13,
} ks_gguf_type;

#define KS_GGUF_DEFAULT_ALIGNMENT 32u
#define KS_GGUF_MAX_NAME 64u       /* tensor names are shorter (ggml) */
#define KS_GGUF_MAX_ARRAY_DEPTH 8u /* deeper nested arrays are refused */

typedef struct ks_gguf ks_gguf;

/* An array value. Elements stay in the file: numeric elements are packed
 * little-endian and may be unaligned, so read them with the element getters
 * below (or memcpy from |data| on a little-endian host). */
typedef struct ks_gguf_arr {
    uint32_t                  type;    /* element type (ks_gguf_type) */
    uint64_t                  n;       /* element count */
    const uint8_t            *data;    /* first element, in the mapping */
    uint64_t                  n_bytes; /* bytes of all elements in the file */
    const uint64_t           *str_off; /* KS_GGUF_STR: offset from |data| of
                                        * each element's u64 length prefix */
    const struct ks_gguf_arr *sub;     /* KS_GGUF_ARR: the n nested arrays */
} ks_gguf_arr;

/* One metadata record. Scalars are decoded into |v|: unsigned types into
 * v.u64, signed into v.i64, f32/f64 into v.f64, bool into v.b. */
typedef struct ks_gguf_kv {
    const char *key;      /* NUL-terminated copy */
    size_t      key_len;
    uint32_t    type;     /* ks_gguf_type */
    union {
        uint64_t u64;
        int64_t  i64;
        double   f64;
        bool     b;
    } v;
    const char *str;      /* KS_GGUF_STR: NUL-terminated copy ... */
    size_t      str_len;  /* ... of this many bytes (may contain NULs) */
    ks_gguf_arr arr;      /* KS_GGUF_ARR */
    uint64_t    offset;   /* file offset of the record (its key) */
} ks_gguf_kv;

typedef struct ks_gguf_tensor {
    const char *name;       /* NUL-terminated copy, < KS_GGUF_MAX_NAME bytes */
    uint32_t    type;       /* ks_qtype id */
    uint32_t    n_dims;     /* 1..4 */
    uint64_t    ne[4];      /* ne[0] innermost (contiguous); unused dims = 1 */
    uint64_t    n_elems;
    uint64_t    size_bytes;
    uint64_t    offset;     /* absolute file offset of the data */
    const void *data;       /* into the mapping (or the caller's buffer) */
    uint64_t    index;      /* position in the file's tensor table */
} ks_gguf_tensor;

/* Maps |path| read-only and validates it. On failure *out is NULL and
 * ks_last_error() names the field or tensor: KS_ERR_IO (cannot open/map),
 * KS_ERR_CORRUPT (malformed), KS_ERR_UNSUPPORTED (version other than 2 or
 * 3, byte-swapped file), KS_ERR_NOMEM. */
ks_status ks_gguf_open(const char *path, ks_gguf **out);

/* As ks_gguf_open on a caller's buffer, which is borrowed: it must stay
 * valid and unchanged until ks_gguf_destroy. */
ks_status ks_gguf_open_mem(const void *bytes, size_t n, ks_gguf **out);

/* Unmaps and frees everything, including every string and table handed
 * out. NULL is a no-op. */
void ks_gguf_destroy(ks_gguf *g);

uint32_t    ks_gguf_version(const ks_gguf *g);
uint64_t    ks_gguf_file_size(const ks_gguf *g);
uint64_t    ks_gguf_data_offset(const ks_gguf *g);   /* data blob start */
uint32_t    ks_gguf_alignment(const ks_gguf *g);
const void *ks_gguf_base(const ks_gguf *g);          /* byte 0 of the file */
const char *ks_gguf_path(const ks_gguf *g);          /* "<memory>" for _mem */

/* ---- metadata ---- */

uint64_t          ks_gguf_n_kv(const ks_gguf *g);
const ks_gguf_kv *ks_gguf_kv_at(const ks_gguf *g, uint64_t i); /* file order */
const ks_gguf_kv *ks_gguf_find(const ks_gguf *g, const char *key); /* hashed */

/* "u32", "string", "array", ...; "type N" for unknown ids. */
const char *ks_gguf_type_name(uint32_t type);

/* Scalar getters: false if |key| is absent, has another type, or (for the
 * integer getters) its value does not fit; *out is untouched then.
 * get_u64/get_u32/get_i64 accept every integer type, get_f32/get_f64 accept
 * f32 and f64. */
bool        ks_gguf_get_u64(const ks_gguf *g, const char *key, uint64_t *out);
bool        ks_gguf_get_u32(const ks_gguf *g, const char *key, uint32_t *out);
bool        ks_gguf_get_i64(const ks_gguf *g, const char *key, int64_t *out);
bool        ks_gguf_get_f32(const ks_gguf *g, const char *key, float *out);
bool        ks_gguf_get_f64(const ks_gguf *g, const char *key, double *out);
bool        ks_gguf_get_bool(const ks_gguf *g, const char *key, bool *out);
/* NUL-terminated copy that lives as long as |g|; NULL if absent or not a
 * string. *len (may be NULL) gets the length, which can be shorter than
 * strlen would say only if the value holds NULs. */
const char *ks_gguf_get_str(const ks_gguf *g, const char *key, size_t *len);
bool        ks_gguf_get_arr(const ks_gguf *g, const char *key,
                            ks_gguf_arr *out);

/* For per-layer hyper-parameters that are a scalar or an array with one
 * entry per layer (head_count_kv, feed_forward_length, ...): the scalar, or
 * element |layer| of an integer array. False if absent, of another type,
 * negative, or |layer| is past the array's end. */
bool ks_gguf_get_u64_layer(const ks_gguf *g, const char *key, uint64_t layer,
                           uint64_t *out);

/* Required metadata: KS_ERR_CORRUPT with "missing required metadata key
 * 'llama.block_count'" (or a wrong type / range message) when the key is
 * not there or does not fit. */
ks_status ks_gguf_require_u64(const ks_gguf *g, const char *key,
                              uint64_t *out);
ks_status ks_gguf_require_u32(const ks_gguf *g, const char *key,
                              uint32_t *out);
ks_status ks_gguf_require_f32(const ks_gguf *g, const char *key, float *out);
ks_status ks_gguf_require_str(const ks_gguf *g, const char *key,
                              const char **out);

/* O(1) element access. Out-of-range |i| or a non-matching element type
 * gives NULL / 0. arr_u64/arr_i64 convert from any integer or bool type
 * (arr_i64 of a u64 above INT64_MAX and arr_u64 of a negative value wrap,
 * as a cast would); arr_f64 converts from any numeric type. */
const char *ks_gguf_arr_str(const ks_gguf_arr *a, uint64_t i, size_t *len);
uint64_t    ks_gguf_arr_u64(const ks_gguf_arr *a, uint64_t i);
int64_t     ks_gguf_arr_i64(const ks_gguf_arr *a, uint64_t i);
double      ks_gguf_arr_f64(const ks_gguf_arr *a, uint64_t i);
const ks_gguf_arr *ks_gguf_arr_sub(const ks_gguf_arr *a, uint64_t i);
/* Bytes one element of |type| takes in the file; 0 for strings, arrays and
 * unknown types. */
size_t      ks_gguf_type_size(uint32_t type);

/* ---- tensors ---- */

uint64_t              ks_gguf_n_tensors(const ks_gguf *g);
const ks_gguf_tensor *ks_gguf_tensor_at(const ks_gguf *g, uint64_t i);
const ks_gguf_tensor *ks_gguf_tensor_find(const ks_gguf *g, const char *name);

/* Tells the kernel it may drop the whole pages inside [p, p + n) of the
 * file mapping (madvise MADV_DONTNEED), e.g. after weights were repacked
 * into another buffer; the bytes read back from the file if touched again.
 * Ranges outside the mapping are clipped; a no-op for ks_gguf_open_mem. */
void ks_gguf_release_pages(const ks_gguf *g, const void *p, uint64_t n);

/* ---- writer (gguf_write.c) ----
 *
 * Builds a GGUF file in memory order: metadata in the order keys were first
 * set, then tensors in the order added. Output is version 3 (2 on request,
 * for tests), every tensor offset padded to the alignment (default 32),
 * offsets relative to the data start. Not thread safe per writer. */

typedef struct ks_gguf_writer ks_gguf_writer;

ks_status ks_gguf_writer_create(ks_gguf_writer **out);
void      ks_gguf_writer_destroy(ks_gguf_writer *w); /* NULL is a no-op */

/* Scalar setters. Setting a key again replaces its value and keeps its
 * place. Keys and string values are copied. */
ks_status ks_gguf_writer_set_u8(ks_gguf_writer *w, const char *key, uint8_t v);
ks_status ks_gguf_writer_set_i8(ks_gguf_writer *w, const char *key, int8_t v);
ks_status ks_gguf_writer_set_u16(ks_gguf_writer *w, const char *key,
                                 uint16_t v);
ks_status ks_gguf_writer_set_i16(ks_gguf_writer *w, const char *key,
                                 int16_t v);
ks_status ks_gguf_writer_set_u32(ks_gguf_writer *w, const char *key,
                                 uint32_t v);
ks_status ks_gguf_writer_set_i32(ks_gguf_writer *w, const char *key,
                                 int32_t v);
ks_status ks_gguf_writer_set_u64(ks_gguf_writer *w, const char *key,
                                 uint64_t v);
ks_status ks_gguf_writer_set_i64(ks_gguf_writer *w, const char *key,
                                 int64_t v);
ks_status ks_gguf_writer_set_f32(ks_gguf_writer *w, const char *key, float v);
ks_status ks_gguf_writer_set_f64(ks_gguf_writer *w, const char *key, double v);
ks_status ks_gguf_writer_set_bool(ks_gguf_writer *w, const char *key, bool v);
ks_status ks_gguf_writer_set_str(ks_gguf_writer *w, const char *key,
                                 const char *v);
ks_status ks_gguf_writer_set_str_n(ks_gguf_writer *w, const char *key,
                                   const char *v, size_t len);

/* Numeric (or bool) array: |elems| holds |n| host-order values of the
 * C type matching |elem_type| (uint8_t for U8, float for F32, bool stored
 * as one byte 0/1, ...). Copied. */
ks_status ks_gguf_writer_set_arr(ks_gguf_writer *w, const char *key,
                                 uint32_t elem_type, const void *elems,
                                 uint64_t n);
/* String array; |lens| may be NULL (then each string is NUL-terminated).
 * Copied. */
ks_status ks_gguf_writer_set_arr_str(ks_gguf_writer *w, const char *key,
                                     const char *const *strs,
                                     const size_t *lens, uint64_t n);
/* Low level: a KV whose value (everything after the u32 type field) is
 * |n| raw bytes, written verbatim without any check — for nested arrays
 * and for tests that build damaged files. Always appends, even when |key|
 * exists. Copied. */
ks_status ks_gguf_writer_add_raw_kv(ks_gguf_writer *w, const char *key,
                                    uint32_t type, const void *value,
                                    size_t n);

/* A power of two >= 1; also sets general.alignment (u32) unless it is the
 * default 32 and the key was never set. */
ks_status ks_gguf_writer_set_alignment(ks_gguf_writer *w, uint32_t align);
/* Test-only: write version 2 (same layout) instead of 3. */
ks_status ks_gguf_writer_set_version(ks_gguf_writer *w, uint32_t version);

/* Adds a tensor. |ne| has |n_dims| (1..4) entries, ne[0] innermost.
 * |size_bytes| must equal the size the type and shape give. |data| is
 * BORROWED: it must stay valid until the last write call (NULL writes
 * zeros). ks_gguf_writer_add_tensor_copy copies it instead. Refuses names of
 * 64 bytes or more, duplicates, unknown types and ne[0] not a multiple of
 * the block size (KS_ERR_INVALID_ARG). */
ks_status ks_gguf_writer_add_tensor(ks_gguf_writer *w, const char *name,
                                    uint32_t type, uint32_t n_dims,
                                    const uint64_t *ne, const void *data,
                                    uint64_t size_bytes);
ks_status ks_gguf_writer_add_tensor_copy(ks_gguf_writer *w, const char *name,
                                         uint32_t type, uint32_t n_dims,
                                         const uint64_t *ne, const void *data,
                                         uint64_t size_bytes);

/* Writes |path| through a temporary file in the same folder, renamed over
 * |path| only when complete. KS_ERR_IO on failure (no partial file left);
 * KS_ERR_INVALID_ARG when |path| is a FIFO, device or directory (checked
 * with stat, without blocking; never replaced). */
ks_status ks_gguf_writer_write_file(ks_gguf_writer *w, const char *path);
/* The whole file in one malloc'd buffer the caller frees. */
ks_status ks_gguf_writer_write_mem(ks_gguf_writer *w, void **bytes,
                                   size_t *n);

#endif
