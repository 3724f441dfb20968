/* GGUF reader. The file is mapped read-only (or a caller's buffer is
 * borrowed) and parsed front to back with a cursor that checks each read
 * against the bytes left: header, key/value records, tensor-info records,
 * then the data blob at the aligned end of the infos. Every count is checked
 * against what the remaining bytes could hold before anything is allocated,
 * and every size goes through ks_mul_size/ks_add_size. Metadata keys, string
 * copies, the string-array offset indexes, both hash tables and the tensor
 * table live in one arena of chunks freed with the ks_gguf.
 * Layout: shared/reference/gguf-and-quants.md section 1. */
#include "runtime/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/base.h"
#include "runtime/qtype.h"

/* Smallest possible records, for the count guards: a KV is a non-empty key
 * (8 + 1), a type (4) and a one-byte value; a tensor info is an empty name
 * (8), n_dims (4), one dimension (8), type (4) and offset (8). */
#define MIN_KV_BYTES 14u
#define MIN_TENSOR_INFO_BYTES 32u
#define ARENA_CHUNK (64u * 1024u)

typedef struct chunk {
    struct chunk *next;
    size_t        cap;
    size_t        used;
} chunk;

#define CHUNK_HDR ((sizeof(chunk) + 15u) & ~(size_t)15u)

struct ks_gguf {
    const uint8_t  *base;
    uint64_t        size;
    void           *map;      /* non-NULL when we own a mapping */
    size_t          map_len;
    char            path[256];
    uint32_t        version;
    uint32_t        alignment;
    uint64_t        data_offset;
    uint64_t        n_kv;
    uint64_t        n_tensors;
    ks_gguf_kv     *kvs;
    ks_gguf_tensor *tensors;
    uint64_t       *kv_hash;  /* index + 1; 0 = empty slot */
    uint64_t        kv_mask;
    uint64_t       *t_hash;
    uint64_t        t_mask;
    chunk          *arena;
};

/* A read position in the file. */
typedef struct cursor {
    const uint8_t *p;
    uint64_t       size;
    uint64_t       pos;
} cursor;

/* ---- errors ---- */

static ks_status KS_PRINTF(3, 4)
fail(const ks_gguf *g, ks_status st, const char *fmt, ...)
{
    char    msg[768];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ks_error(st, "%s: %s", g->path, msg);
}

/* Printable rendering of file bytes for messages (names of bad tensors). */
static const char *
shown(const uint8_t *s, uint64_t n, char *buf, size_t cap)
{
    size_t j = 0;

    for (uint64_t i = 0; i < n && j + 4 < cap; i++) {
        unsigned char c = s[i];
        buf[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (j + 4 >= cap && n > j) {
        buf[j++] = '.';
        buf[j++] = '.';
        buf[j++] = '.';
    }
    buf[j] = '\0';
    return buf;
}

/* ---- arena ---- */

static void *
arena_alloc(ks_gguf *g, uint64_t n)
{
    chunk *c = g->arena;
    size_t need;

    if (n > SIZE_MAX - 64)
        return NULL;
    need = ((size_t)n + 15u) & ~(size_t)15u;
    if (need == 0)
        need = 16;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > ARENA_CHUNK / 4 ? need : ARENA_CHUNK;
        chunk *nc = calloc(1, CHUNK_HDR + cap);

        if (!nc)
            return NULL;
        nc->cap = cap;
        if (c && cap == need) {
            /* A large block gets its own chunk; keep bumping the old one. */
            nc->next = c->next;
            c->next = nc;
            nc->used = need;
            return (uint8_t *)nc + CHUNK_HDR;
        }
        nc->next = c;
        g->arena = c = nc;
    }
    void *p = (uint8_t *)c + CHUNK_HDR + c->used;
    c->used += need;
    return p;
}

static ks_status
nomem(const ks_gguf *g, const char *what, uint64_t n)
{
    return fail(g, KS_ERR_NOMEM, "no memory for %s (%llu bytes)", what,
                (unsigned long long)n);
}

/* Allocation of |count| elements of |size| bytes, both already bounded by
 * the file size. */
static void *
arena_array(ks_gguf *g, uint64_t count, uint64_t size)
{
    uint64_t bytes;

    if (!ks_mul_size(count, size, &bytes))
        return NULL;
    return arena_alloc(g, bytes);
}

/* ---- little-endian reads ---- */

static uint16_t
le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint64_t
le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32);
}

static uint64_t
left(const cursor *c)
{
    return c->size - c->pos;
}

/* ---- hashing ---- */

static uint64_t
hash_bytes(const char *s, size_t n)
{
    return ks_fnv1a(KS_FNV1A_INIT, s, n);
}

static uint64_t
table_cap(uint64_t n)
{
    uint64_t cap = 16;

    while (cap < n * 2)
        cap *= 2;
    return cap;
}

/* ---- value types ---- */

size_t
ks_gguf_type_size(uint32_t type)
{
    switch (type) {
    case KS_GGUF_U8: case KS_GGUF_I8: case KS_GGUF_BOOL: return 1;
    case KS_GGUF_U16: case KS_GGUF_I16: return 2;
    case KS_GGUF_U32: case KS_GGUF_I32: case KS_GGUF_F32: return 4;
    case KS_GGUF_U64: case KS_GGUF_I64: case KS_GGUF_F64: return 8;
    default: return 0;
    }
}

const char *
ks_gguf_type_name(uint32_t type)
{
    static const char *names[KS_GGUF_TYPE_COUNT] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string",
        "array", "u64", "i64", "f64",
    };
    static _Thread_local char buf[24];

    if (type < KS_GGUF_TYPE_COUNT)
        return names[type];
    snprintf(buf, sizeof buf, "type %u", type);
    return buf;
}

static bool
is_int_type(uint32_t t)
{
    switch (t) {
    case KS_GGUF_U8: case KS_GGUF_I8: case KS_GGUF_U16: case KS_GGUF_I16:
    case KS_GGUF_U32: case KS_GGUF_I32: case KS_GGUF_U64: case KS_GGUF_I64:
        return true;
    default:
        return false;
    }
}

static bool
is_signed_type(uint32_t t)
{
    return t == KS_GGUF_I8 || t == KS_GGUF_I16 || t == KS_GGUF_I32 ||
           t == KS_GGUF_I64;
}

/* Decodes one fixed-size element at |p|. Unsigned and bool go to *u, signed
 * to *i, floats to *f. */
static void
decode_scalar(uint32_t type, const uint8_t *p, uint64_t *u, int64_t *i,
              double *f)
{
    uint32_t b32;
    uint64_t b64;
    float    f32;

    switch (type) {
    case KS_GGUF_U8: case KS_GGUF_BOOL: *u = p[0]; break;
    case KS_GGUF_I8: *i = (int8_t)p[0]; break;
    case KS_GGUF_U16: *u = le16(p); break;
    case KS_GGUF_I16: *i = (int16_t)le16(p); break;
    case KS_GGUF_U32: *u = le32(p); break;
    case KS_GGUF_I32: *i = (int32_t)le32(p); break;
    case KS_GGUF_U64: *u = le64(p); break;
    case KS_GGUF_I64: *i = (int64_t)le64(p); break;
    case KS_GGUF_F32:
        b32 = le32(p);
        memcpy(&f32, &b32, 4);
        *f = f32;
        break;
    case KS_GGUF_F64:
        b64 = le64(p);
        memcpy(f, &b64, 8);
        break;
    default:
        break;
    }
}

/* ---- parsing ---- */

static ks_status parse_array(ks_gguf *g, cursor *c, const char *key,
                             ks_gguf_arr *a, unsigned depth);

static ks_status
parse_string_array(ks_gguf *g, cursor *c, const char *key, ks_gguf_arr *a)
{
    uint64_t  start = c->pos;
    uint64_t *off;

    /* Each element needs at least its 8-byte length. */
    if (a->n > left(c) / 8)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': array of %llu strings at offset %llu runs past "
                    "the end of the file (%llu bytes left, each string needs "
                    "at least 8)", key, (unsigned long long)a->n,
                    (unsigned long long)c->pos,
                    (unsigned long long)left(c));
    off = arena_array(g, a->n ? a->n : 1, sizeof(uint64_t));
    if (!off)
        return nomem(g, "a string array index", a->n * 8);
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t len;

        if (left(c) < 8)
            return fail(g, KS_ERR_CORRUPT,
                        "key '%s': string element %llu of %llu: its length at "
                        "offset %llu runs past the end of the file",
                        key, (unsigned long long)i, (unsigned long long)a->n,
                        (unsigned long long)c->pos);
        len = le64(c->p + c->pos);
        if (len > left(c) - 8)
            return fail(g, KS_ERR_CORRUPT,
                        "key '%s': string element %llu of %llu (%llu bytes) at "
                        "offset %llu runs past the end of the file (%llu "
                        "bytes left)", key, (unsigned long long)i,
                        (unsigned long long)a->n, (unsigned long long)len,
                        (unsigned long long)c->pos,
                        (unsigned long long)(left(c) - 8));
        off[i] = c->pos - start;
        c->pos += 8 + len;
    }
    a->str_off = off;
    a->n_bytes = c->pos - start;
    return KS_OK;
}

static ks_status
parse_nested_array(ks_gguf *g, cursor *c, const char *key, ks_gguf_arr *a,
                   unsigned depth)
{
    uint64_t     start = c->pos;
    ks_gguf_arr *sub;
    ks_status    st;

    if (depth + 1 >= KS_GGUF_MAX_ARRAY_DEPTH)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': arrays nested more than %u levels deep", key,
                    KS_GGUF_MAX_ARRAY_DEPTH);
    if (a->n > left(c) / 12)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': array of %llu arrays at offset %llu runs past "
                    "the end of the file (%llu bytes left, each array needs "
                    "at least 12)", key, (unsigned long long)a->n,
                    (unsigned long long)c->pos,
                    (unsigned long long)left(c));
    sub = arena_array(g, a->n ? a->n : 1, sizeof(*sub));
    if (!sub)
        return nomem(g, "a nested array", a->n * sizeof(*sub));
    for (uint64_t i = 0; i < a->n; i++)
        if ((st = parse_array(g, c, key, &sub[i], depth + 1)) != KS_OK)
            return st;
    a->sub = sub;
    a->n_bytes = c->pos - start;
    return KS_OK;
}

/* Parses an array value (element type, count, elements) at the cursor. */
static ks_status
parse_array(ks_gguf *g, cursor *c, const char *key, ks_gguf_arr *a,
            unsigned depth)
{
    uint64_t at = c->pos;
    size_t   esize;
    uint64_t bytes;

    if (left(c) < 12)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': array header (element type and count) at "
                    "offset %llu runs past the end of the file (%llu bytes "
                    "left, 12 needed)", key, (unsigned long long)at,
                    (unsigned long long)left(c));
    a->type = le32(c->p + c->pos);
    a->n = le64(c->p + c->pos + 4);
    c->pos += 12;
    a->data = c->p + c->pos;
    if (a->type >= KS_GGUF_TYPE_COUNT)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': unknown array element type %u at offset %llu "
                    "(expected 0..12)", key, a->type,
                    (unsigned long long)at);
    if (a->type == KS_GGUF_STR)
        return parse_string_array(g, c, key, a);
    if (a->type == KS_GGUF_ARR)
        return parse_nested_array(g, c, key, a, depth);
    esize = ks_gguf_type_size(a->type);
    if (!ks_mul_size(a->n, esize, &bytes) || bytes > left(c))
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': array of %llu %s elements at offset %llu runs "
                    "past the end of the file (%llu bytes left)", key,
                    (unsigned long long)a->n, ks_gguf_type_name(a->type),
                    (unsigned long long)c->pos,
                    (unsigned long long)left(c));
    if (a->type == KS_GGUF_BOOL)
        for (uint64_t i = 0; i < a->n; i++)
            if (a->data[i] > 1)
                return fail(g, KS_ERR_CORRUPT,
                            "key '%s': invalid bool %u in element %llu "
                            "(expected 0 or 1)", key, a->data[i],
                            (unsigned long long)i);
    a->n_bytes = bytes;
    c->pos += bytes;
    return KS_OK;
}

static ks_status
parse_kv(ks_gguf *g, cursor *c, uint64_t idx, ks_gguf_kv *kv)
{
    uint64_t len;
    char    *key;
    size_t   esize;

    kv->offset = c->pos;
    if (left(c) < 8)
        return fail(g, KS_ERR_CORRUPT,
                    "kv %llu of %llu: key length at offset %llu runs past the "
                    "end of the file", (unsigned long long)idx,
                    (unsigned long long)g->n_kv, (unsigned long long)c->pos);
    len = le64(c->p + c->pos);
    if (len > left(c) - 8)
        return fail(g, KS_ERR_CORRUPT,
                    "kv %llu of %llu: key of %llu bytes at offset %llu runs "
                    "past the end of the file (%llu bytes left)",
                    (unsigned long long)idx, (unsigned long long)g->n_kv,
                    (unsigned long long)len, (unsigned long long)c->pos,
                    (unsigned long long)(left(c) - 8));
    if (len == 0)
        return fail(g, KS_ERR_CORRUPT, "kv %llu at offset %llu: empty key",
                    (unsigned long long)idx, (unsigned long long)c->pos);
    key = arena_alloc(g, len + 1);
    if (!key)
        return nomem(g, "a metadata key", len + 1);
    memcpy(key, c->p + c->pos + 8, (size_t)len);
    key[len] = '\0';
    kv->key = key;
    kv->key_len = (size_t)len;
    c->pos += 8 + len;

    if (left(c) < 4)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': value type at offset %llu runs past the end of "
                    "the file", key, (unsigned long long)c->pos);
    kv->type = le32(c->p + c->pos);
    c->pos += 4;

    switch (kv->type) {
    case KS_GGUF_STR:
        if (left(c) < 8)
            return fail(g, KS_ERR_CORRUPT,
                        "key '%s': string length at offset %llu runs past the "
                        "end of the file", key, (unsigned long long)c->pos);
        len = le64(c->p + c->pos);
        if (len > left(c) - 8)
            return fail(g, KS_ERR_CORRUPT,
                        "key '%s': string of %llu bytes at offset %llu runs "
                        "past the end of the file (%llu bytes left)", key,
                        (unsigned long long)len, (unsigned long long)c->pos,
                        (unsigned long long)(left(c) - 8));
        {
            char *s = arena_alloc(g, len + 1);

            if (!s)
                return nomem(g, "a metadata string", len + 1);
            memcpy(s, c->p + c->pos + 8, (size_t)len);
            s[len] = '\0';
            kv->str = s;
            kv->str_len = (size_t)len;
        }
        c->pos += 8 + len;
        return KS_OK;
    case KS_GGUF_ARR:
        return parse_array(g, c, key, &kv->arr, 0);
    default:
        break;
    }
    esize = ks_gguf_type_size(kv->type);
    if (esize == 0)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': unknown value type %u at offset %llu (expected "
                    "0..12)", key, kv->type,
                    (unsigned long long)(c->pos - 4));
    if (left(c) < esize)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': %s value at offset %llu runs past the end of "
                    "the file (%llu bytes left, %zu needed)", key,
                    ks_gguf_type_name(kv->type), (unsigned long long)c->pos,
                    (unsigned long long)left(c), esize);
    if (kv->type == KS_GGUF_BOOL && c->p[c->pos] > 1)
        return fail(g, KS_ERR_CORRUPT,
                    "key '%s': invalid bool %u at offset %llu (expected 0 or "
                    "1)", key, c->p[c->pos], (unsigned long long)c->pos);
    {
        uint64_t u = 0;
        int64_t  i = 0;
        double   f = 0;

        decode_scalar(kv->type, c->p + c->pos, &u, &i, &f);
        if (kv->type == KS_GGUF_BOOL)
            kv->v.b = u != 0;
        else if (kv->type == KS_GGUF_F32 || kv->type == KS_GGUF_F64)
            kv->v.f64 = f;
        else if (is_signed_type(kv->type))
            kv->v.i64 = i;
        else
            kv->v.u64 = u;
    }
    c->pos += esize;
    return KS_OK;
}

static ks_status
read_header(ks_gguf *g, cursor *c)
{
    static const char *fields[] = { "tensor count", "kv count" };
    uint64_t counts[2];
    uint32_t v;

    if (g->size < 4)
        return fail(g, KS_ERR_CORRUPT,
                    "truncated header: magic needs 4 bytes, the file has %llu",
                    (unsigned long long)g->size);
    if (memcmp(g->base, "FUGG", 4) == 0)
        return fail(g, KS_ERR_UNSUPPORTED,
                    "byte-swapped (big-endian) GGUF file: magic reads 'FUGG'; "
                    "only little-endian files are supported");
    if (memcmp(g->base, "GGUF", 4) != 0) {
        char s[8];
        return fail(g, KS_ERR_CORRUPT,
                    "bad magic: expected 'GGUF' (47 47 55 46), found '%s' "
                    "(%02x %02x %02x %02x); not a GGUF file",
                    shown(g->base, 4, s, sizeof s), g->base[0], g->base[1],
                    g->base[2], g->base[3]);
    }
    if (g->size < 8)
        return fail(g, KS_ERR_CORRUPT,
                    "truncated header: version needs bytes 4..7, the file has "
                    "%llu bytes", (unsigned long long)g->size);
    v = le32(g->base + 4);
    if (v != 0 && (v & 0xffffu) == 0)
        return fail(g, KS_ERR_UNSUPPORTED,
                    "byte-swapped (big-endian) GGUF file: version reads "
                    "0x%08x; only little-endian files are supported", v);
    if (v == 1)
        return fail(g, KS_ERR_UNSUPPORTED,
                    "unsupported GGUF version 1 (obsolete, 32-bit counts); "
                    "expected version 2 or 3");
    if (v < 2 || v > 3)
        return fail(g, KS_ERR_UNSUPPORTED,
                    "unsupported GGUF version %u; expected version 2 or 3", v);
    g->version = v;
    for (int i = 0; i < 2; i++) {
        uint64_t at = 8 + 8 * (uint64_t)i;

        if (g->size < at + 8)
            return fail(g, KS_ERR_CORRUPT,
                        "truncated header: %s needs bytes %llu..%llu, the "
                        "file has %llu bytes", fields[i],
                        (unsigned long long)at, (unsigned long long)(at + 7),
                        (unsigned long long)g->size);
        counts[i] = le64(g->base + at);
    }
    g->n_tensors = counts[0];
    g->n_kv = counts[1];
    c->p = g->base;
    c->size = g->size;
    c->pos = 24;
    if (g->n_kv > left(c) / MIN_KV_BYTES)
        return fail(g, KS_ERR_CORRUPT,
                    "kv count %llu is impossible: the %llu bytes after the "
                    "header hold at most %llu key/value records",
                    (unsigned long long)g->n_kv, (unsigned long long)left(c),
                    (unsigned long long)(left(c) / MIN_KV_BYTES));
    if (g->n_tensors > left(c) / MIN_TENSOR_INFO_BYTES)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor count %llu is impossible: the %llu bytes after the "
                    "header hold at most %llu tensor infos",
                    (unsigned long long)g->n_tensors,
                    (unsigned long long)left(c),
                    (unsigned long long)(left(c) / MIN_TENSOR_INFO_BYTES));
    return KS_OK;
}

static ks_status
read_kvs(ks_gguf *g, cursor *c)
{
    ks_status st;
    uint64_t  cap = table_cap(g->n_kv);

    g->kvs = arena_array(g, g->n_kv ? g->n_kv : 1, sizeof(ks_gguf_kv));
    g->kv_hash = arena_array(g, cap, sizeof(uint64_t));
    if (!g->kvs || !g->kv_hash)
        return nomem(g, "the metadata table", g->n_kv * sizeof(ks_gguf_kv));
    g->kv_mask = cap - 1;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        ks_gguf_kv *kv = &g->kvs[i];
        uint64_t    h;

        if ((st = parse_kv(g, c, i, kv)) != KS_OK)
            return st;
        h = hash_bytes(kv->key, kv->key_len) & g->kv_mask;
        for (;; h = (h + 1) & g->kv_mask) {
            uint64_t slot = g->kv_hash[h];

            if (slot == 0) {
                g->kv_hash[h] = i + 1;
                break;
            }
            if (g->kvs[slot - 1].key_len == kv->key_len &&
                memcmp(g->kvs[slot - 1].key, kv->key, kv->key_len) == 0)
                return fail(g, KS_ERR_CORRUPT,
                            "duplicate key '%s' (kv %llu and kv %llu)",
                            kv->key, (unsigned long long)(slot - 1),
                            (unsigned long long)i);
        }
    }
    return KS_OK;
}

static ks_status
read_alignment(ks_gguf *g)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, "general.alignment");

    g->alignment = KS_GGUF_DEFAULT_ALIGNMENT;
    if (!kv)
        return KS_OK;
    if (kv->type != KS_GGUF_U32)
        return fail(g, KS_ERR_CORRUPT,
                    "general.alignment has type %s, expected u32",
                    ks_gguf_type_name(kv->type));
    if (kv->v.u64 == 0 || (kv->v.u64 & (kv->v.u64 - 1)) != 0)
        return fail(g, KS_ERR_CORRUPT,
                    "general.alignment = %llu is not a power of two",
                    (unsigned long long)kv->v.u64);
    g->alignment = (uint32_t)kv->v.u64;
    return KS_OK;
}

static ks_status
parse_tensor_info(ks_gguf *g, cursor *c, uint64_t idx, ks_gguf_tensor *t,
                  uint64_t *rel_off)
{
    const ks_qtype_info *qi;
    uint64_t             len, n, rows, row_bytes, size;
    char                *name;
    char                 sb[80];

    t->index = idx;
    if (left(c) < 8)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor %llu of %llu: name length at offset %llu runs "
                    "past the end of the file", (unsigned long long)idx,
                    (unsigned long long)g->n_tensors,
                    (unsigned long long)c->pos);
    len = le64(c->p + c->pos);
    if (len > left(c) - 8)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor %llu of %llu: name of %llu bytes at offset %llu "
                    "runs past the end of the file (%llu bytes left)",
                    (unsigned long long)idx, (unsigned long long)g->n_tensors,
                    (unsigned long long)len, (unsigned long long)c->pos,
                    (unsigned long long)(left(c) - 8));
    if (len >= KS_GGUF_MAX_NAME)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor %llu: name '%s' is %llu bytes long; names must be "
                    "shorter than %u bytes", (unsigned long long)idx,
                    shown(c->p + c->pos + 8, len, sb, 48),
                    (unsigned long long)len, KS_GGUF_MAX_NAME);
    name = arena_alloc(g, len + 1);
    if (!name)
        return nomem(g, "a tensor name", len + 1);
    memcpy(name, c->p + c->pos + 8, (size_t)len);
    name[len] = '\0';
    t->name = name;
    c->pos += 8 + len;

    if (left(c) < 4)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor '%s': n_dims at offset %llu runs past the end of "
                    "the file", name, (unsigned long long)c->pos);
    t->n_dims = le32(c->p + c->pos);
    c->pos += 4;
    if (t->n_dims < 1 || t->n_dims > 4)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor '%s': n_dims = %u, expected 1..4", name,
                    t->n_dims);
    if (left(c) < 8ull * t->n_dims + 12)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor '%s': shape, type and offset at offset %llu run "
                    "past the end of the file (%llu bytes left, %llu needed)",
                    name, (unsigned long long)c->pos,
                    (unsigned long long)left(c),
                    (unsigned long long)(8ull * t->n_dims + 12));
    n = 1;
    for (uint32_t d = 0; d < 4; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        t->ne[d] = le64(c->p + c->pos + 8ull * d);
        if (t->ne[d] == 0 || t->ne[d] > (uint64_t)INT64_MAX)
            return fail(g, KS_ERR_CORRUPT,
                        "tensor '%s': ne[%u] = %llu, expected 1..2^63-1", name,
                        d, (unsigned long long)t->ne[d]);
        if (!ks_mul_size(n, t->ne[d], &n) || n > (uint64_t)INT64_MAX)
            return fail(g, KS_ERR_CORRUPT,
                        "tensor '%s': element count overflows (dimension "
                        "product exceeds 2^63-1 at ne[%u] = %llu)", name, d,
                        (unsigned long long)t->ne[d]);
    }
    c->pos += 8ull * t->n_dims;
    t->n_elems = n;
    t->type = le32(c->p + c->pos);
    *rel_off = le64(c->p + c->pos + 4);
    c->pos += 12;

    qi = ks_qtype_get(t->type);
    if (!qi)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor '%s': unknown tensor type id %u", name, t->type);
    if (t->ne[0] % qi->block_elems != 0)
        return fail(g, KS_ERR_CORRUPT,
                    "tensor '%s': ne[0] = %llu is not a multiple of the %s "
                    "block size %u", name, (unsigned long long)t->ne[0],
                    qi->name, qi->block_elems);
    rows = n / t->ne[0];
    if (!ks_mul_size(t->ne[0] / qi->block_elems, qi->block_bytes,
                     &row_bytes) ||
        !ks_mul_size(row_bytes, rows, &size))
        return fail(g, KS_ERR_CORRUPT,
                    "tensor '%s': byte size of %llu %s elements overflows",
                    name, (unsigned long long)n, qi->name);
    t->size_bytes = size;
    return KS_OK;
}

static int
cmp_by_offset(const void *a, const void *b)
{
    const ks_gguf_tensor *x = *(const ks_gguf_tensor *const *)a;
    const ks_gguf_tensor *y = *(const ks_gguf_tensor *const *)b;

    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

static ks_status
read_tensors(ks_gguf *g, cursor *c)
{
    ks_status        st;
    uint64_t         cap = table_cap(g->n_tensors);
    uint64_t        *rel;
    ks_gguf_tensor **order = NULL;

    g->tensors = arena_array(g, g->n_tensors ? g->n_tensors : 1,
                             sizeof(ks_gguf_tensor));
    rel = arena_array(g, g->n_tensors ? g->n_tensors : 1, sizeof(uint64_t));
    g->t_hash = arena_array(g, cap, sizeof(uint64_t));
    if (!g->tensors || !rel || !g->t_hash)
        return nomem(g, "the tensor table",
                     g->n_tensors * sizeof(ks_gguf_tensor));
    g->t_mask = cap - 1;

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        ks_gguf_tensor *t = &g->tensors[i];
        size_t          nlen;
        uint64_t        h;

        if ((st = parse_tensor_info(g, c, i, t, &rel[i])) != KS_OK)
            return st;
        nlen = strlen(t->name);
        h = hash_bytes(t->name, nlen) & g->t_mask;
        for (;; h = (h + 1) & g->t_mask) {
            uint64_t slot = g->t_hash[h];

            if (slot == 0) {
                g->t_hash[h] = i + 1;
                break;
            }
            if (strcmp(g->tensors[slot - 1].name, t->name) == 0)
                return fail(g, KS_ERR_CORRUPT,
                            "duplicate tensor name '%s' (tensors %llu and "
                            "%llu)", t->name, (unsigned long long)(slot - 1),
                            (unsigned long long)i);
        }
    }

    if (!ks_add_size(c->pos, g->alignment - 1, &g->data_offset))
        return fail(g, KS_ERR_CORRUPT, "data offset overflows");
    g->data_offset = g->data_offset / g->alignment * g->alignment;

    for (uint64_t i = 0; i < g->n_tensors; i++) {
        ks_gguf_tensor *t = &g->tensors[i];
        uint64_t        end;

        if (rel[i] % g->alignment != 0)
            return fail(g, KS_ERR_CORRUPT,
                        "tensor '%s': offset %llu is not a multiple of the "
                        "alignment %u", t->name, (unsigned long long)rel[i],
                        g->alignment);
        if (!ks_add_size(g->data_offset, rel[i], &t->offset) ||
            !ks_add_size(t->offset, t->size_bytes, &end) || end > g->size)
            return fail(g, KS_ERR_CORRUPT,
                        "tensor '%s': data (%llu bytes at relative offset "
                        "%llu, data start %llu) lies outside the file of %llu "
                        "bytes", t->name, (unsigned long long)t->size_bytes,
                        (unsigned long long)rel[i],
                        (unsigned long long)g->data_offset,
                        (unsigned long long)g->size);
        t->data = g->base + t->offset;
    }

    if (g->n_tensors < 2)
        return KS_OK;
    order = malloc((size_t)g->n_tensors * sizeof(*order));
    if (!order)
        return nomem(g, "the overlap check", g->n_tensors * sizeof(*order));
    for (uint64_t i = 0; i < g->n_tensors; i++)
        order[i] = &g->tensors[i];
    qsort(order, (size_t)g->n_tensors, sizeof(*order), cmp_by_offset);
    st = KS_OK;
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        const ks_gguf_tensor *a = order[i - 1], *b = order[i];

        if (a->offset + a->size_bytes > b->offset) {
            st = fail(g, KS_ERR_CORRUPT,
                      "tensors '%s' and '%s' overlap: '%s' covers file bytes "
                      "%llu..%llu, '%s' starts at %llu", a->name, b->name,
                      a->name, (unsigned long long)a->offset,
                      (unsigned long long)(a->offset + a->size_bytes - 1),
                      b->name, (unsigned long long)b->offset);
            break;
        }
    }
    free(order);
    return st;
}

static ks_status
parse(ks_gguf *g)
{
    cursor    c = { 0 };
    ks_status st;

    if ((st = read_header(g, &c)) != KS_OK)
        return st;
    if ((st = read_kvs(g, &c)) != KS_OK)
        return st;
    if ((st = read_alignment(g)) != KS_OK)
        return st;
    return read_tensors(g, &c);
}

static ks_gguf *
new_gguf(const char *path)
{
    ks_gguf *g = calloc(1, sizeof(*g));

    if (g)
        snprintf(g->path, sizeof g->path, "%s", path);
    return g;
}

ks_status
ks_gguf_open_mem(const void *bytes, size_t n, ks_gguf **out)
{
    ks_status st;
    ks_gguf  *g;

    *out = NULL;
    if (!bytes && n)
        return ks_error(KS_ERR_INVALID_ARG, "gguf: NULL buffer of %zu bytes",
                        n);
    g = new_gguf("<memory>");
    if (!g)
        return ks_error(KS_ERR_NOMEM, "gguf: no memory to open a buffer");
    g->base = bytes ? bytes : (const uint8_t *)"";
    g->size = n;
    if ((st = parse(g)) != KS_OK)
        goto fail;
    *out = g;
    return KS_OK;
fail:
    ks_gguf_destroy(g);
    return st;
}

ks_status
ks_gguf_open(const char *path, ks_gguf **out)
{
    ks_status   st;
    struct stat sb;
    int         fd = -1;
    ks_gguf    *g;

    *out = NULL;
    g = new_gguf(path);
    if (!g)
        return ks_error(KS_ERR_NOMEM, "gguf: no memory to open %s", path);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = ks_error(KS_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &sb) != 0) {
        st = ks_error(KS_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = ks_error(KS_ERR_IO, "%s is not a regular file", path);
        goto fail;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = ks_error(KS_ERR_IO, "%s: %lld bytes do not fit the address space",
                      path, (long long)sb.st_size);
        goto fail;
    }
    g->size = (uint64_t)sb.st_size;
    g->base = (const uint8_t *)"";
    if (g->size > 0) {
        void *m = mmap(NULL, (size_t)g->size, PROT_READ, MAP_PRIVATE, fd, 0);

        if (m == MAP_FAILED) {
            st = ks_error(KS_ERR_IO, "cannot map %s (%llu bytes): %s", path,
                          (unsigned long long)g->size, strerror(errno));
            goto fail;
        }
        g->map = m;
        g->map_len = (size_t)g->size;
        g->base = m;
    }
    close(fd);
    fd = -1;
    if ((st = parse(g)) != KS_OK)
        goto fail;
    ks_log(KS_LOG_DEBUG, "gguf", "%s: v%u, %llu tensors, %llu kv, data at %llu",
           path, g->version, (unsigned long long)g->n_tensors,
           (unsigned long long)g->n_kv, (unsigned long long)g->data_offset);
    *out = g;
    return KS_OK;
fail:
    if (fd >= 0)
        close(fd);
    ks_gguf_destroy(g);
    return st;
}

void
ks_gguf_destroy(ks_gguf *g)
{
    if (!g)
        return;
    if (g->map)
        munmap(g->map, g->map_len);
    for (chunk *c = g->arena, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(g);
}

/* ---- header getters ---- */

uint32_t ks_gguf_version(const ks_gguf *g) { return g->version; }
uint64_t ks_gguf_file_size(const ks_gguf *g) { return g->size; }
uint64_t ks_gguf_data_offset(const ks_gguf *g) { return g->data_offset; }
uint32_t ks_gguf_alignment(const ks_gguf *g) { return g->alignment; }
const void *ks_gguf_base(const ks_gguf *g) { return g->base; }
const char *ks_gguf_path(const ks_gguf *g) { return g->path; }

/* ---- metadata ---- */

uint64_t
ks_gguf_n_kv(const ks_gguf *g)
{
    return g->n_kv;
}

const ks_gguf_kv *
ks_gguf_kv_at(const ks_gguf *g, uint64_t i)
{
    return i < g->n_kv ? &g->kvs[i] : NULL;
}

const ks_gguf_kv *
ks_gguf_find(const ks_gguf *g, const char *key)
{
    size_t   n;
    uint64_t h;

    if (!g->kv_hash || !key)
        return NULL;
    n = strlen(key);
    h = hash_bytes(key, n) & g->kv_mask;
    for (;; h = (h + 1) & g->kv_mask) {
        uint64_t slot = g->kv_hash[h];

        if (slot == 0)
            return NULL;
        if (g->kvs[slot - 1].key_len == n &&
            memcmp(g->kvs[slot - 1].key, key, n) == 0)
            return &g->kvs[slot - 1];
    }
}

bool
ks_gguf_get_u64(const ks_gguf *g, const char *key, uint64_t *out)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv || !is_int_type(kv->type))
        return false;
    if (is_signed_type(kv->type)) {
        if (kv->v.i64 < 0)
            return false;
        *out = (uint64_t)kv->v.i64;
    } else {
        *out = kv->v.u64;
    }
    return true;
}

bool
ks_gguf_get_u32(const ks_gguf *g, const char *key, uint32_t *out)
{
    uint64_t v;

    if (!ks_gguf_get_u64(g, key, &v) || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

bool
ks_gguf_get_i64(const ks_gguf *g, const char *key, int64_t *out)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv || !is_int_type(kv->type))
        return false;
    if (is_signed_type(kv->type)) {
        *out = kv->v.i64;
    } else {
        if (kv->v.u64 > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)kv->v.u64;
    }
    return true;
}

bool
ks_gguf_get_f64(const ks_gguf *g, const char *key, double *out)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv || (kv->type != KS_GGUF_F32 && kv->type != KS_GGUF_F64))
        return false;
    *out = kv->v.f64;
    return true;
}

bool
ks_gguf_get_f32(const ks_gguf *g, const char *key, float *out)
{
    double d;

    if (!ks_gguf_get_f64(g, key, &d))
        return false;
    *out = (float)d;
    return true;
}

bool
ks_gguf_get_bool(const ks_gguf *g, const char *key, bool *out)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv || kv->type != KS_GGUF_BOOL)
        return false;
    *out = kv->v.b;
    return true;
}

const char *
ks_gguf_get_str(const ks_gguf *g, const char *key, size_t *len)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv || kv->type != KS_GGUF_STR)
        return NULL;
    if (len)
        *len = kv->str_len;
    return kv->str;
}

bool
ks_gguf_get_arr(const ks_gguf *g, const char *key, ks_gguf_arr *out)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv || kv->type != KS_GGUF_ARR)
        return false;
    *out = kv->arr;
    return true;
}

bool
ks_gguf_get_u64_layer(const ks_gguf *g, const char *key, uint64_t layer,
                      uint64_t *out)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv)
        return false;
    if (kv->type != KS_GGUF_ARR)
        return ks_gguf_get_u64(g, key, out);
    if (!is_int_type(kv->arr.type) || layer >= kv->arr.n)
        return false;
    if (is_signed_type(kv->arr.type) && ks_gguf_arr_i64(&kv->arr, layer) < 0)
        return false;
    *out = ks_gguf_arr_u64(&kv->arr, layer);
    return true;
}

static ks_status
require_fail(const ks_gguf *g, const char *key, bool want_int,
             const char *expected)
{
    const ks_gguf_kv *kv = ks_gguf_find(g, key);

    if (!kv)
        return fail(g, KS_ERR_CORRUPT, "missing required metadata key '%s'",
                    key);
    if (want_int && is_int_type(kv->type) && is_signed_type(kv->type))
        return fail(g, KS_ERR_CORRUPT,
                    "metadata key '%s' = %lld is out of range for %s", key,
                    (long long)kv->v.i64, expected);
    if (want_int && is_int_type(kv->type))
        return fail(g, KS_ERR_CORRUPT,
                    "metadata key '%s' = %llu is out of range for %s", key,
                    (unsigned long long)kv->v.u64, expected);
    return fail(g, KS_ERR_CORRUPT, "metadata key '%s' has type %s, expected %s",
                key, ks_gguf_type_name(kv->type), expected);
}

ks_status
ks_gguf_require_u64(const ks_gguf *g, const char *key, uint64_t *out)
{
    return ks_gguf_get_u64(g, key, out) ? KS_OK
           : require_fail(g, key, true, "an unsigned integer");
}

ks_status
ks_gguf_require_u32(const ks_gguf *g, const char *key, uint32_t *out)
{
    return ks_gguf_get_u32(g, key, out) ? KS_OK
           : require_fail(g, key, true, "an integer in 0..4294967295");
}

ks_status
ks_gguf_require_f32(const ks_gguf *g, const char *key, float *out)
{
    return ks_gguf_get_f32(g, key, out) ? KS_OK
           : require_fail(g, key, false, "f32 or f64");
}

ks_status
ks_gguf_require_str(const ks_gguf *g, const char *key, const char **out)
{
    const char *s = ks_gguf_get_str(g, key, NULL);

    if (!s)
        return require_fail(g, key, false, "string");
    *out = s;
    return KS_OK;
}

/* ---- array elements ---- */

const char *
ks_gguf_arr_str(const ks_gguf_arr *a, uint64_t i, size_t *len)
{
    const uint8_t *p;

    if (!a || a->type != KS_GGUF_STR || i >= a->n || !a->str_off)
        return NULL;
    p = a->data + a->str_off[i];
    if (len)
        *len = (size_t)le64(p);
    return (const char *)p + 8;
}

const ks_gguf_arr *
ks_gguf_arr_sub(const ks_gguf_arr *a, uint64_t i)
{
    if (!a || a->type != KS_GGUF_ARR || i >= a->n || !a->sub)
        return NULL;
    return &a->sub[i];
}

/* Element |i| decoded; false for non-numeric types or |i| out of range. */
static bool
element(const ks_gguf_arr *a, uint64_t i, uint64_t *u, int64_t *s, double *f)
{
    size_t sz;

    if (!a || i >= a->n)
        return false;
    sz = ks_gguf_type_size(a->type);
    if (sz == 0)
        return false;
    *u = 0;
    *s = 0;
    *f = 0;
    decode_scalar(a->type, a->data + i * sz, u, s, f);
    return true;
}

uint64_t
ks_gguf_arr_u64(const ks_gguf_arr *a, uint64_t i)
{
    uint64_t u;
    int64_t  s;
    double   f;

    if (!a || (!is_int_type(a->type) && a->type != KS_GGUF_BOOL) ||
        !element(a, i, &u, &s, &f))
        return 0;
    return is_signed_type(a->type) ? (uint64_t)s : u;
}

int64_t
ks_gguf_arr_i64(const ks_gguf_arr *a, uint64_t i)
{
    uint64_t u;
    int64_t  s;
    double   f;

    if (!a || (!is_int_type(a->type) && a->type != KS_GGUF_BOOL) ||
        !element(a, i, &u, &s, &f))
        return 0;
    return is_signed_type(a->type) ? s : (int64_t)u;
}

double
ks_gguf_arr_f64(const ks_gguf_arr *a, uint64_t i)
{
    uint64_t u;
    int64_t  s;
    double   f;

    if (!element(a, i, &u, &s, &f))
        return 0;
    if (a->type == KS_GGUF_F32 || a->type == KS_GGUF_F64)
        return f;
    return is_signed_type(a->type) ? (double)s : (double)u;
}

/* ---- tensors ---- */

uint64_t
ks_gguf_n_tensors(const ks_gguf *g)
{
    return g->n_tensors;
}

const ks_gguf_tensor *
ks_gguf_tensor_at(const ks_gguf *g, uint64_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const ks_gguf_tensor *
ks_gguf_tensor_find(const ks_gguf *g, const char *name)
{
    uint64_t h;

    if (!g->t_hash || !name)
        return NULL;
    h = hash_bytes(name, strlen(name)) & g->t_mask;
    for (;; h = (h + 1) & g->t_mask) {
        uint64_t slot = g->t_hash[h];

        if (slot == 0)
            return NULL;
        if (strcmp(g->tensors[slot - 1].name, name) == 0)
            return &g->tensors[slot - 1];
    }
}

void
ks_gguf_release_pages(const ks_gguf *g, const void *p, uint64_t n)
{
    uintptr_t lo, hi, start, end, page;
    long      ps;

    if (!g || !g->map || !p || n == 0)
        return;
    ps = sysconf(_SC_PAGESIZE);
    page = ps > 0 ? (uintptr_t)ps : 4096u;
    lo = (uintptr_t)p;
    hi = n > UINTPTR_MAX - lo ? UINTPTR_MAX : lo + (uintptr_t)n;
    start = (uintptr_t)g->map;
    end = start + g->map_len;
    if (lo < start)
        lo = start;
    if (hi > end)
        hi = end;
    lo = (lo + page - 1) / page * page;
    hi = hi / page * page;
    if (lo >= hi)
        return;
    if (madvise((void *)lo, hi - lo, MADV_DONTNEED) != 0)
        ks_log(KS_LOG_DEBUG, "gguf", "madvise(DONTNEED) of %zu bytes: %s",
               (size_t)(hi - lo), strerror(errno));
}
