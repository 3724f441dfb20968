/* Layer pruning (kestrel/quality.h: ks_prune_file): a GGUF file without
 * some of its transformer blocks. The metadata is copied with
 * <arch>.block_count lowered; tensors blk.I.* of a dropped layer are left
 * out and the others renumbered in order, their data written from the
 * input's mapping by the project's GGUF writer. Which layers to drop is
 * the caller's choice (kestrel prune measures it with ks_perplexity). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "kestrel/quality.h"
#include "runtime/gguf.h"

/* The bytes of a metadata value after its type (as the file stores it). */
static uint64_t
value_bytes(const ks_gguf_kv *kv)
{
    if (kv->type == KS_GGUF_STR)
        return 8 + kv->str_len;
    if (kv->type == KS_GGUF_ARR)
        return 4 + 8 + kv->arr.n_bytes;
    return ks_gguf_type_size(kv->type);
}

/* The layer a tensor name belongs to ("blk.I."), -1 for none; *rest the
 * name after "blk.I.". */
static long
layer_of(const char *name, const char **rest)
{
    char *end;
    long i;

    if (strncmp(name, "blk.", 4) != 0)
        return -1;
    i = strtol(name + 4, &end, 10);
    if (end == name + 4 || *end != '.' || i < 0)
        return -1;
    *rest = end + 1;
    return i;
}

KS_API ks_status
ks_prune_file(const char *in, const char *out, const uint32_t *drop, size_t n_drop)
{
    ks_gguf *g = NULL;
    ks_gguf_writer *w = NULL;
    bool *gone = NULL;
    uint32_t *new_index = NULL, n_layers, kept = 0;
    const char *arch;
    char key[128];
    ks_status st;

    if (!in)
        return ks_null_arg("ks_prune_file", "in");
    if (!out)
        return ks_null_arg("ks_prune_file", "out");
    if (!drop && n_drop)
        return ks_null_arg("ks_prune_file", "drop");
    if ((st = ks_file_check_replaceable(out)) != KS_OK)
        return st;
    if ((st = ks_gguf_open(in, &g)) != KS_OK)
        return st;
    if (!(arch = ks_gguf_get_str(g, "general.architecture", NULL))) {
        st = ks_error(KS_ERR_CORRUPT, "prune: %s has no general.architecture", in);
        goto out;
    }
    /* gemma3 places its global-attention layers by index: dropping one
     * would turn local layers into global ones */
    if (strcmp(arch, "gemma3") == 0) {
        st = ks_error(KS_ERR_UNSUPPORTED, "prune: gemma3 chooses sliding-window layers by "
                      "their index, so removing a layer changes the others; not supported");
        goto out;
    }
    snprintf(key, sizeof key, "%s.block_count", arch);
    if ((st = ks_gguf_require_u32(g, key, &n_layers)) != KS_OK)
        goto out;
    gone = calloc(n_layers ? n_layers : 1, sizeof(*gone));
    new_index = calloc(n_layers ? n_layers : 1, sizeof(*new_index));
    if (!gone || !new_index) {
        st = ks_error(KS_ERR_NOMEM, "prune: no memory");
        goto out;
    }
    for (size_t i = 0; i < n_drop; i++) {
        if (drop[i] >= n_layers || gone[drop[i]]) {
            st = ks_error(KS_ERR_INVALID_ARG, "prune: layer %u %s (the model has layers "
                          "0..%u)", drop[i], drop[i] >= n_layers ? "does not exist"
                                                                 : "is listed twice",
                          n_layers - 1);
            goto out;
        }
        gone[drop[i]] = true;
    }
    for (uint32_t l = 0; l < n_layers; l++)
        if (!gone[l])
            new_index[l] = kept++;
    if (kept == 0) {
        st = ks_error(KS_ERR_INVALID_ARG, "prune: every layer would be dropped");
        goto out;
    }
    if ((st = ks_gguf_writer_create(&w)) != KS_OK ||
        (st = ks_gguf_writer_set_alignment(w, ks_gguf_alignment(g))) != KS_OK)
        goto out;
    for (uint64_t i = 0; i < ks_gguf_n_kv(g); i++) {
        const ks_gguf_kv *kv = ks_gguf_kv_at(g, i);
        const uint8_t *base = ks_gguf_base(g);

        if (strcmp(kv->key, "general.alignment") == 0)
            continue;
        if (strcmp(kv->key, key) == 0) {
            st = ks_gguf_writer_set_u32(w, key, kept);
        } else if (kv->type == KS_GGUF_ARR && kv->arr.n == n_layers && n_layers > 1) {
            /* a value per layer (head counts, window flags): not kept in step */
            st = ks_error(KS_ERR_UNSUPPORTED, "prune: %s holds one value per layer; "
                          "pruning such a file is not supported", kv->key);
        } else {
            st = ks_gguf_writer_add_raw_kv(w, kv->key, kv->type,
                                           base + kv->offset + 8 + kv->key_len + 4,
                                           value_bytes(kv));
        }
        if (st != KS_OK)
            goto out;
    }
    for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
        const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);
        const char *rest = NULL, *name = t->name;
        long l = layer_of(t->name, &rest);
        char renamed[KS_GGUF_MAX_NAME + 16];

        if (l >= (long)n_layers) {
            st = ks_error(KS_ERR_CORRUPT, "prune: tensor %s names layer %ld of %u", t->name,
                          l, n_layers);
            goto out;
        }
        if (l >= 0 && gone[l])
            continue;
        if (l >= 0) {
            snprintf(renamed, sizeof renamed, "blk.%u.%s", new_index[l], rest);
            name = renamed;
        }
        if ((st = ks_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data,
                                            t->size_bytes)) != KS_OK)
            goto out;
    }
    st = ks_gguf_writer_write_file(w, out);
    if (st == KS_OK)
        ks_log(KS_LOG_INFO, "prune", "%s: %u of %u layers kept -> %s", in, kept, n_layers,
               out);
out:
    free(gone);
    free(new_index);
    ks_gguf_writer_destroy(w);
    ks_gguf_destroy(g);
    return st;
}
