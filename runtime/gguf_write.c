/* GGUF writer. Each metadata value is encoded to its little-endian file
 * bytes when it is set; tensors are recorded with their shape and a
 * borrowed (or copied) data pointer. Writing computes every tensor's offset
 * (padded to the alignment, relative to the data start) and streams header,
 * metadata, tensor infos, padding and data to a sink: a malloc'd buffer or a
 * temporary file renamed into place at the end.
 * Layout: shared/reference/gguf-and-quants.md section 1. */
#include "runtime/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/base.h"
#include "runtime/qtype.h"

typedef struct wkv {
    char    *key;
    size_t   key_len;
    uint32_t type;
    uint8_t *val;     /* encoded value, after the type field */
    size_t   val_len;
} wkv;

typedef struct wtensor {
    char        name[KS_GGUF_MAX_NAME];
    uint32_t    type;
    uint32_t    n_dims;
    uint64_t    ne[4];
    const void *data;     /* borrowed, or == owned */
    void       *owned;
    uint64_t    size_bytes;
    uint64_t    rel_off;  /* set while writing */
} wtensor;

struct ks_gguf_writer {
    wkv     *kvs;
    size_t   n_kv, cap_kv;
    wtensor *ts;
    size_t   n_t, cap_t;
    uint32_t alignment;
    uint32_t version;
};

/* ---- encoding ---- */

static void
put_le(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

ks_status
ks_gguf_writer_create(ks_gguf_writer **out)
{
    ks_gguf_writer *w = calloc(1, sizeof(*w));

    *out = NULL;
    if (!w)
        return ks_error(KS_ERR_NOMEM, "gguf writer: no memory");
    w->alignment = KS_GGUF_DEFAULT_ALIGNMENT;
    w->version = 3;
    *out = w;
    return KS_OK;
}

void
ks_gguf_writer_destroy(ks_gguf_writer *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].val);
    }
    for (size_t i = 0; i < w->n_t; i++)
        free(w->ts[i].owned);
    free(w->kvs);
    free(w->ts);
    free(w);
}

/* Stores |val| (taken) under |key|: replaces an existing key in place
 * unless |append|. */
static ks_status
put_kv(ks_gguf_writer *w, const char *key, uint32_t type, uint8_t *val,
       size_t val_len, bool append)
{
    size_t klen;
    wkv   *kv = NULL;

    if (!w || !key || !*key) {
        free(val);
        return ks_error(KS_ERR_INVALID_ARG, "gguf writer: empty or NULL key");
    }
    klen = strlen(key);
    if (!append)
        for (size_t i = 0; i < w->n_kv; i++)
            if (w->kvs[i].key_len == klen &&
                memcmp(w->kvs[i].key, key, klen) == 0) {
                kv = &w->kvs[i];
                break;
            }
    if (kv) {
        free(kv->val);
        kv->type = type;
        kv->val = val;
        kv->val_len = val_len;
        return KS_OK;
    }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv   *n = realloc(w->kvs, cap * sizeof(*n));

        if (!n)
            goto nomem;
        w->kvs = n;
        w->cap_kv = cap;
    }
    kv = &w->kvs[w->n_kv];
    kv->key = malloc(klen + 1);
    if (!kv->key)
        goto nomem;
    memcpy(kv->key, key, klen + 1);
    kv->key_len = klen;
    kv->type = type;
    kv->val = val;
    kv->val_len = val_len;
    w->n_kv++;
    return KS_OK;
nomem:
    free(val);
    return ks_error(KS_ERR_NOMEM, "gguf writer: no memory for key '%s'", key);
}

static ks_status
set_scalar(ks_gguf_writer *w, const char *key, uint32_t type, uint64_t bits)
{
    size_t   n = ks_gguf_type_size(type);
    uint8_t *v = malloc(n);

    if (!v)
        return ks_error(KS_ERR_NOMEM, "gguf writer: no memory for '%s'", key);
    put_le(v, bits, n);
    return put_kv(w, key, type, v, n, false);
}

ks_status
ks_gguf_writer_set_u8(ks_gguf_writer *w, const char *key, uint8_t v)
{
    return set_scalar(w, key, KS_GGUF_U8, v);
}

ks_status
ks_gguf_writer_set_i8(ks_gguf_writer *w, const char *key, int8_t v)
{
    return set_scalar(w, key, KS_GGUF_I8, (uint8_t)v);
}

ks_status
ks_gguf_writer_set_u16(ks_gguf_writer *w, const char *key, uint16_t v)
{
    return set_scalar(w, key, KS_GGUF_U16, v);
}

ks_status
ks_gguf_writer_set_i16(ks_gguf_writer *w, const char *key, int16_t v)
{
    return set_scalar(w, key, KS_GGUF_I16, (uint16_t)v);
}

ks_status
ks_gguf_writer_set_u32(ks_gguf_writer *w, const char *key, uint32_t v)
{
    return set_scalar(w, key, KS_GGUF_U32, v);
}

ks_status
ks_gguf_writer_set_i32(ks_gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, KS_GGUF_I32, (uint32_t)v);
}

ks_status
ks_gguf_writer_set_u64(ks_gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, KS_GGUF_U64, v);
}

ks_status
ks_gguf_writer_set_i64(ks_gguf_writer *w, const char *key, int64_t v)
{
    return set_scalar(w, key, KS_GGUF_I64, (uint64_t)v);
}

ks_status
ks_gguf_writer_set_f32(ks_gguf_writer *w, const char *key, float v)
{
    uint32_t bits;

    memcpy(&bits, &v, 4);
    return set_scalar(w, key, KS_GGUF_F32, bits);
}

ks_status
ks_gguf_writer_set_f64(ks_gguf_writer *w, const char *key, double v)
{
    uint64_t bits;

    memcpy(&bits, &v, 8);
    return set_scalar(w, key, KS_GGUF_F64, bits);
}

ks_status
ks_gguf_writer_set_bool(ks_gguf_writer *w, const char *key, bool v)
{
    return set_scalar(w, key, KS_GGUF_BOOL, v ? 1 : 0);
}

ks_status
ks_gguf_writer_set_str_n(ks_gguf_writer *w, const char *key, const char *v,
                         size_t len)
{
    uint8_t *val;

    if (!v && len)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: NULL string for '%s'", key ? key : "");
    val = malloc(8 + len);
    if (!val)
        return ks_error(KS_ERR_NOMEM, "gguf writer: no memory for '%s'", key);
    put_le(val, len, 8);
    if (len)
        memcpy(val + 8, v, len);
    return put_kv(w, key, KS_GGUF_STR, val, 8 + len, false);
}

ks_status
ks_gguf_writer_set_str(ks_gguf_writer *w, const char *key, const char *v)
{
    return ks_gguf_writer_set_str_n(w, key, v, v ? strlen(v) : 0);
}

ks_status
ks_gguf_writer_set_arr(ks_gguf_writer *w, const char *key, uint32_t elem_type,
                       const void *elems, uint64_t n)
{
    size_t         esize = ks_gguf_type_size(elem_type);
    const uint8_t *src = elems;
    uint64_t       bytes, total;
    uint8_t       *val;

    if (esize == 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: '%s': element type %s is not numeric "
                        "(use set_arr_str or add_raw_kv)", key ? key : "",
                        ks_gguf_type_name(elem_type));
    if (!elems && n)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: '%s': NULL elements", key ? key : "");
    if (!ks_mul_size(n, esize, &bytes) || !ks_add_size(bytes, 12, &total) ||
        total > SIZE_MAX)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: '%s': %llu elements is too many",
                        key ? key : "", (unsigned long long)n);
    val = malloc((size_t)total);
    if (!val)
        return ks_error(KS_ERR_NOMEM, "gguf writer: no memory for '%s'", key);
    put_le(val, elem_type, 4);
    put_le(val + 4, n, 8);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t bits = 0;
        uint8_t  b8;
        uint16_t b16;
        uint32_t b32;

        switch (esize) {
        case 1:
            if (elem_type == KS_GGUF_BOOL) {
                bool b;
                memcpy(&b, src + i * sizeof(bool), sizeof(bool));
                bits = b ? 1 : 0;
            } else {
                memcpy(&b8, src + i, 1);
                bits = b8;
            }
            break;
        case 2: memcpy(&b16, src + i * 2, 2); bits = b16; break;
        case 4: memcpy(&b32, src + i * 4, 4); bits = b32; break;
        default: memcpy(&bits, src + i * 8, 8); break;
        }
        put_le(val + 12 + i * esize, bits, esize);
    }
    return put_kv(w, key, KS_GGUF_ARR, val, (size_t)total, false);
}

ks_status
ks_gguf_writer_set_arr_str(ks_gguf_writer *w, const char *key,
                           const char *const *strs, const size_t *lens,
                           uint64_t n)
{
    uint64_t total = 12;
    uint8_t *val, *p;

    if (!strs && n)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: '%s': NULL strings", key ? key : "");
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len = lens ? lens[i] : strlen(strs[i]);

        if (!ks_add_size(total, 8 + len, &total) || total > SIZE_MAX)
            return ks_error(KS_ERR_INVALID_ARG,
                            "gguf writer: '%s': string array too large",
                            key ? key : "");
    }
    val = malloc((size_t)total);
    if (!val)
        return ks_error(KS_ERR_NOMEM, "gguf writer: no memory for '%s'", key);
    put_le(val, KS_GGUF_STR, 4);
    put_le(val + 4, n, 8);
    p = val + 12;
    for (uint64_t i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(strs[i]);

        put_le(p, len, 8);
        if (len)
            memcpy(p + 8, strs[i], len);
        p += 8 + len;
    }
    return put_kv(w, key, KS_GGUF_ARR, val, (size_t)total, false);
}

ks_status
ks_gguf_writer_add_raw_kv(ks_gguf_writer *w, const char *key, uint32_t type,
                          const void *value, size_t n)
{
    uint8_t *val = malloc(n ? n : 1);

    if (!val)
        return ks_error(KS_ERR_NOMEM, "gguf writer: no memory for '%s'", key);
    if (n)
        memcpy(val, value, n);
    return put_kv(w, key, type, val, n, true);
}

ks_status
ks_gguf_writer_set_alignment(ks_gguf_writer *w, uint32_t align)
{
    bool had = false;

    if (align == 0 || (align & (align - 1)) != 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: alignment %u is not a power of two",
                        align);
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, "general.alignment") == 0)
            had = true;
    w->alignment = align;
    if (had || align != KS_GGUF_DEFAULT_ALIGNMENT)
        return ks_gguf_writer_set_u32(w, "general.alignment", align);
    return KS_OK;
}

ks_status
ks_gguf_writer_set_version(ks_gguf_writer *w, uint32_t version)
{
    if (version != 2 && version != 3)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: version %u, expected 2 or 3", version);
    w->version = version;
    return KS_OK;
}

static ks_status
add_tensor(ks_gguf_writer *w, const char *name, uint32_t type,
           uint32_t n_dims, const uint64_t *ne, const void *data,
           uint64_t size_bytes, bool copy)
{
    const ks_qtype_info *qi = ks_qtype_get(type);
    uint64_t             n = 1, size;
    size_t               nlen;
    wtensor             *t;

    if (!name || (nlen = strlen(name)) >= KS_GGUF_MAX_NAME)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: tensor name '%s' must be shorter than "
                        "%u bytes", name ? name : "(null)", KS_GGUF_MAX_NAME);
    if (!qi)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: tensor '%s': unknown type id %u", name,
                        type);
    if (n_dims < 1 || n_dims > 4 || !ne)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: tensor '%s': n_dims = %u, expected 1..4",
                        name, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        if (ne[d] == 0 || !ks_mul_size(n, ne[d], &n) ||
            n > (uint64_t)INT64_MAX)
            return ks_error(KS_ERR_INVALID_ARG,
                            "gguf writer: tensor '%s': bad shape at ne[%u] = "
                            "%llu", name, d, (unsigned long long)ne[d]);
    if (ne[0] % qi->block_elems != 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: tensor '%s': ne[0] = %llu is not a "
                        "multiple of the %s block size %u", name,
                        (unsigned long long)ne[0], qi->name, qi->block_elems);
    if (!ks_mul_size(n / qi->block_elems, qi->block_bytes, &size) ||
        size != size_bytes)
        return ks_error(KS_ERR_INVALID_ARG,
                        "gguf writer: tensor '%s': %llu bytes given, the %s "
                        "shape needs %llu", name,
                        (unsigned long long)size_bytes, qi->name,
                        (unsigned long long)(n / qi->block_elems *
                                             qi->block_bytes));
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->ts[i].name, name) == 0)
            return ks_error(KS_ERR_INVALID_ARG,
                            "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t   cap = w->cap_t ? w->cap_t * 2 : 16;
        wtensor *nt = realloc(w->ts, cap * sizeof(*nt));

        if (!nt)
            return ks_error(KS_ERR_NOMEM, "gguf writer: no memory");
        w->ts = nt;
        w->cap_t = cap;
    }
    t = &w->ts[w->n_t];
    memset(t, 0, sizeof(*t));
    memcpy(t->name, name, nlen + 1);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < 4; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->size_bytes = size_bytes;
    t->data = data;
    if (copy && data) {
        if (size_bytes > SIZE_MAX || !(t->owned = malloc(size_bytes ?
                                                         (size_t)size_bytes
                                                         : 1)))
            return ks_error(KS_ERR_NOMEM,
                            "gguf writer: no memory to copy tensor '%s' "
                            "(%llu bytes)", name,
                            (unsigned long long)size_bytes);
        memcpy(t->owned, data, (size_t)size_bytes);
        t->data = t->owned;
    }
    w->n_t++;
    return KS_OK;
}

ks_status
ks_gguf_writer_add_tensor(ks_gguf_writer *w, const char *name, uint32_t type,
                          uint32_t n_dims, const uint64_t *ne,
                          const void *data, uint64_t size_bytes)
{
    return add_tensor(w, name, type, n_dims, ne, data, size_bytes, false);
}

ks_status
ks_gguf_writer_add_tensor_copy(ks_gguf_writer *w, const char *name,
                               uint32_t type, uint32_t n_dims,
                               const uint64_t *ne, const void *data,
                               uint64_t size_bytes)
{
    return add_tensor(w, name, type, n_dims, ne, data, size_bytes, true);
}

/* ---- output ---- */

typedef struct sink {
    uint8_t *buf;   /* memory sink */
    uint64_t pos;
    FILE    *f;     /* file sink */
    bool     err;
} sink;

static void
emit(sink *s, const void *p, uint64_t n)
{
    if (s->err || n == 0)
        return;
    if (s->f) {
        if (fwrite(p, 1, (size_t)n, s->f) != n)
            s->err = true;
    } else {
        memcpy(s->buf + s->pos, p, (size_t)n);
    }
    s->pos += n;
}

static void
emit_zeros(sink *s, uint64_t n)
{
    static const uint8_t zeros[4096];

    while (n > 0 && !s->err) {
        uint64_t k = n < sizeof zeros ? n : sizeof zeros;

        emit(s, zeros, k);
        n -= k;
    }
}

static void
emit_le(sink *s, uint64_t v, size_t n)
{
    uint8_t b[8];

    put_le(b, v, n);
    emit(s, b, n);
}

/* Assigns tensor offsets and returns the total file size (0 on overflow);
 * *data_start gets the data blob's offset. */
static uint64_t
layout(ks_gguf_writer *w, uint64_t *data_start)
{
    uint64_t pos = 24, off = 0;

    for (size_t i = 0; i < w->n_kv; i++)
        if (!ks_add_size(pos, 12 + w->kvs[i].key_len + w->kvs[i].val_len,
                         &pos))
            return 0;
    for (size_t i = 0; i < w->n_t; i++)
        pos += 8 + strlen(w->ts[i].name) + 4 + 8ull * w->ts[i].n_dims + 12;
    pos = ks_align_up(pos, w->alignment);
    *data_start = pos;
    for (size_t i = 0; i < w->n_t; i++) {
        w->ts[i].rel_off = off;
        if (!ks_add_size(off, w->ts[i].size_bytes, &off))
            return 0;
        off = ks_align_up(off, w->alignment);
    }
    if (!ks_add_size(pos, off, &pos))
        return 0;
    return pos;
}

static void
emit_all(ks_gguf_writer *w, sink *s, uint64_t data_start)
{
    emit(s, "GGUF", 4);
    emit_le(s, w->version, 4);
    emit_le(s, w->n_t, 8);
    emit_le(s, w->n_kv, 8);
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kvs[i];

        emit_le(s, kv->key_len, 8);
        emit(s, kv->key, kv->key_len);
        emit_le(s, kv->type, 4);
        emit(s, kv->val, kv->val_len);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->ts[i];
        size_t         nlen = strlen(t->name);

        emit_le(s, nlen, 8);
        emit(s, t->name, nlen);
        emit_le(s, t->n_dims, 4);
        for (uint32_t d = 0; d < t->n_dims; d++)
            emit_le(s, t->ne[d], 8);
        emit_le(s, t->type, 4);
        emit_le(s, t->rel_off, 8);
    }
    emit_zeros(s, data_start - s->pos);
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->ts[i];

        emit_zeros(s, data_start + t->rel_off - s->pos);
        if (t->data)
            emit(s, t->data, t->size_bytes);
        else
            emit_zeros(s, t->size_bytes);
    }
    emit_zeros(s, ks_align_up(s->pos - data_start, w->alignment) + data_start -
                  s->pos);
}

ks_status
ks_gguf_writer_write_mem(ks_gguf_writer *w, void **bytes, size_t *n)
{
    uint64_t data_start = 0, total = layout(w, &data_start);
    sink     s = { 0 };

    *bytes = NULL;
    *n = 0;
    if (total == 0 || total > SIZE_MAX)
        return ks_error(KS_ERR_INVALID_ARG, "gguf writer: file too large");
    s.buf = malloc((size_t)total);
    if (!s.buf)
        return ks_error(KS_ERR_NOMEM,
                        "gguf writer: no memory for a %llu-byte file",
                        (unsigned long long)total);
    emit_all(w, &s, data_start);
    *bytes = s.buf;
    *n = (size_t)total;
    return KS_OK;
}

ks_status
ks_gguf_writer_write_file(ks_gguf_writer *w, const char *path)
{
    uint64_t  data_start = 0, total = layout(w, &data_start);
    size_t    plen = strlen(path);
    char     *tmp = malloc(plen + 16);
    sink      s = { 0 };
    int       fd = -1;
    ks_status st;

    if (!tmp)
        return ks_error(KS_ERR_NOMEM, "gguf writer: no memory");
    /* A FIFO, device or directory at |path| is refused up front: rename()
     * would silently replace the first two and fail on the last. */
    if ((st = ks_file_check_replaceable(path)) != KS_OK)
        goto fail_free;
    if (total == 0) {
        st = ks_error(KS_ERR_INVALID_ARG, "gguf writer: file too large");
        goto fail_free;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    fd = mkstemp(tmp);
    if (fd < 0) {
        st = ks_error(KS_ERR_IO, "cannot create a temporary file for %s: %s",
                      path, strerror(errno));
        goto fail_free;
    }
    fchmod(fd, 0644);
    s.f = fdopen(fd, "wb");
    if (!s.f) {
        st = ks_error(KS_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        goto fail_unlink;
    }
    emit_all(w, &s, data_start);
    if (fflush(s.f) != 0 || s.err)
        s.err = true;
    if (fclose(s.f) != 0 || s.err) {
        st = ks_error(KS_ERR_IO, "cannot write %s (%llu bytes): %s", path,
                      (unsigned long long)total, strerror(errno));
        goto fail_unlink;
    }
    if (rename(tmp, path) != 0) {
        st = ks_error(KS_ERR_IO, "cannot rename %s to %s: %s", tmp, path,
                      strerror(errno));
        goto fail_unlink;
    }
    free(tmp);
    return KS_OK;
fail_unlink:
    unlink(tmp);
fail_free:
    free(tmp);
    return st;
}
