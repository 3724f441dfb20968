/* Copies a GGUF file key by key and tensor by tensor through the project's
 * reader and writer, applying the caller's edits on the way. */
#include "tests/chat/gguf_edit.h"

#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/gguf.h"

static ks_status
copy_scalar(ks_gguf_writer *w, const ks_gguf_kv *kv)
{
    switch (kv->type) {
    case KS_GGUF_U8: return ks_gguf_writer_set_u8(w, kv->key, (uint8_t)kv->v.u64);
    case KS_GGUF_I8: return ks_gguf_writer_set_i8(w, kv->key, (int8_t)kv->v.i64);
    case KS_GGUF_U16: return ks_gguf_writer_set_u16(w, kv->key, (uint16_t)kv->v.u64);
    case KS_GGUF_I16: return ks_gguf_writer_set_i16(w, kv->key, (int16_t)kv->v.i64);
    case KS_GGUF_U32: return ks_gguf_writer_set_u32(w, kv->key, (uint32_t)kv->v.u64);
    case KS_GGUF_I32: return ks_gguf_writer_set_i32(w, kv->key, (int32_t)kv->v.i64);
    case KS_GGUF_U64: return ks_gguf_writer_set_u64(w, kv->key, kv->v.u64);
    case KS_GGUF_I64: return ks_gguf_writer_set_i64(w, kv->key, kv->v.i64);
    case KS_GGUF_F32: return ks_gguf_writer_set_f32(w, kv->key, (float)kv->v.f64);
    case KS_GGUF_F64: return ks_gguf_writer_set_f64(w, kv->key, kv->v.f64);
    case KS_GGUF_BOOL: return ks_gguf_writer_set_bool(w, kv->key, kv->v.b);
    case KS_GGUF_STR:
        return ks_gguf_writer_set_str_n(w, kv->key, kv->str, kv->str_len);
    }
    return ks_error(KS_ERR_UNSUPPORTED, "gguf_edit: key %s has type %u",
                    kv->key, kv->type);
}

/* A string array, with its last |n_specials| entries replaced. */
static ks_status
copy_str_arr(ks_gguf_writer *w, const ks_gguf_kv *kv,
             const char *const *specials, size_t n_specials)
{
    const ks_gguf_arr *a = &kv->arr;
    const char **strs = calloc(a->n ? a->n : 1, sizeof(*strs));
    size_t *lens = calloc(a->n ? a->n : 1, sizeof(*lens));
    ks_status st;

    if (!strs || !lens) {
        st = ks_error(KS_ERR_NOMEM, "gguf_edit: no memory");
        goto out;
    }
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t len;
        memcpy(&len, a->data + a->str_off[i], sizeof len);
        strs[i] = (const char *)a->data + a->str_off[i] + 8;
        lens[i] = (size_t)len;
    }
    for (size_t k = 0; k < n_specials && k < a->n; k++) {
        size_t i = (size_t)a->n - n_specials + k;
        strs[i] = specials[k];
        lens[i] = strlen(specials[k]);
    }
    st = ks_gguf_writer_set_arr_str(w, kv->key, strs, lens, a->n);
out:
    free(strs);
    free(lens);
    return st;
}

/* A numeric array; for token_type and scores, the last |n_specials|
 * entries become control (3) and 0. */
static ks_status
copy_num_arr(ks_gguf_writer *w, const ks_gguf_kv *kv, size_t n_specials)
{
    const ks_gguf_arr *a = &kv->arr;
    size_t esize = ks_gguf_type_size(a->type);
    uint8_t *copy = malloc(a->n_bytes ? a->n_bytes : 1);
    ks_status st;

    if (!copy)
        return ks_error(KS_ERR_NOMEM, "gguf_edit: no memory");
    memcpy(copy, a->data, a->n_bytes);
    for (size_t k = 0; k < n_specials && k < a->n; k++) {
        uint8_t *e = copy + ((size_t)a->n - n_specials + k) * esize;
        if (strcmp(kv->key, "tokenizer.ggml.token_type") == 0 &&
            a->type == KS_GGUF_I32) {
            int32_t ctl = 3;
            memcpy(e, &ctl, sizeof ctl);
        } else if (strcmp(kv->key, "tokenizer.ggml.scores") == 0 &&
                   a->type == KS_GGUF_F32) {
            float zero = 0;
            memcpy(e, &zero, sizeof zero);
        }
    }
    st = ks_gguf_writer_set_arr(w, kv->key, a->type, copy, a->n);
    free(copy);
    return st;
}

static ks_status
apply_edit(ks_gguf_writer *w, const test_gguf_edit *e)
{
    switch (e->type) {
    case TEST_EDIT_STR: return ks_gguf_writer_set_str(w, e->key, e->str);
    case TEST_EDIT_BOOL: return ks_gguf_writer_set_bool(w, e->key, e->b);
    case TEST_EDIT_U32: return ks_gguf_writer_set_u32(w, e->key, e->u32);
    case TEST_EDIT_DEL: return KS_OK;  /* left out of the copy */
    }
    return ks_error(KS_ERR_INVALID_ARG, "gguf_edit: edit of %s has type %d",
                    e->key, (int)e->type);
}

ks_status
test_gguf_copy(const char *in, const char *out, const test_gguf_edit *edits,
               size_t n_edits, const char *const *specials,
               size_t n_specials)
{
    ks_gguf *g = NULL;
    ks_gguf_writer *w = NULL;
    ks_status st;

    if ((st = ks_gguf_open(in, &g)) != KS_OK ||
        (st = ks_gguf_writer_create(&w)) != KS_OK ||
        (st = ks_gguf_writer_set_alignment(w, ks_gguf_alignment(g))) != KS_OK)
        goto out;
    for (uint64_t i = 0; i < ks_gguf_n_kv(g); i++) {
        const ks_gguf_kv *kv = ks_gguf_kv_at(g, i);
        bool tokens = strcmp(kv->key, "tokenizer.ggml.tokens") == 0, drop = false;

        for (size_t j = 0; j < n_edits; j++)
            drop |= edits[j].type == TEST_EDIT_DEL && strcmp(edits[j].key, kv->key) == 0;
        if (drop)
            continue;
        if (kv->type != KS_GGUF_ARR)
            st = copy_scalar(w, kv);
        else if (kv->arr.type == KS_GGUF_STR)
            st = copy_str_arr(w, kv, specials, tokens ? n_specials : 0);
        else if (kv->arr.type == KS_GGUF_ARR)
            st = ks_error(KS_ERR_UNSUPPORTED, "gguf_edit: %s is a nested "
                          "array", kv->key);
        else
            st = copy_num_arr(w, kv, n_specials);
        if (st != KS_OK)
            goto out;
    }
    for (size_t i = 0; i < n_edits; i++)
        if ((st = apply_edit(w, &edits[i])) != KS_OK)
            goto out;
    for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
        const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);
        if ((st = ks_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims,
                                            t->ne, t->data,
                                            t->size_bytes)) != KS_OK)
            goto out;
    }
    st = ks_gguf_writer_write_file(w, out);
out:
    ks_gguf_writer_destroy(w);
    ks_gguf_destroy(g);
    return st;
}
