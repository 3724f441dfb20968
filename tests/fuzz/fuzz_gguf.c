/* libFuzzer target for the GGUF reader and the info printer. Each input is
 * parsed with ks_gguf_open_mem; when it opens, every KV, every array
 * element (nested ones too) and every tensor is read back through the
 * public accessors (first and last byte of each tensor's data), the hashed
 * lookups are checked against the tables, and the same bytes go through
 * ks_inspect_file (text and JSON) via a memfd. Any sanitizer report or
 * abort is a finding. Build and run: ci/fuzz.sh. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kestrel/inspect.h"
#include "runtime/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void
walk_arr(const ks_gguf_arr *a)
{
    for (uint64_t i = 0; i < a->n; i++) {
        if (a->type == KS_GGUF_STR) {
            size_t      len;
            const char *s = ks_gguf_arr_str(a, i, &len);

            if (!s)
                abort();
            if (len)
                sink += (unsigned char)s[0] + (unsigned char)s[len - 1];
        } else if (a->type == KS_GGUF_ARR) {
            const ks_gguf_arr *sub = ks_gguf_arr_sub(a, i);

            if (!sub)
                abort();
            walk_arr(sub);
        } else {
            sink += ks_gguf_arr_u64(a, i) + (uint64_t)ks_gguf_arr_i64(a, i);
            sink += (uint64_t)(ks_gguf_arr_f64(a, i) != 0);
        }
    }
    /* One past the end must be refused. */
    if (ks_gguf_arr_str(a, a->n, NULL) || ks_gguf_arr_sub(a, a->n))
        abort();
}

static void
inspect(const uint8_t *data, size_t size)
{
    static int   fd = -2;
    static FILE *devnull;
    static char  path[64];
    static unsigned flip;

    if (fd == -2) {
        fd = memfd_create("fuzz_gguf", 0);
        devnull = fopen("/dev/null", "w");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (fd < 0 || !devnull)
        return;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        return;
    /* The bytes opened once already, so they must open again. */
    if (ks_inspect_file(path, devnull, (flip++ & 1) ? KS_INSPECT_JSON : 0) !=
        KS_OK)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ks_gguf *g = NULL;

    if (ks_gguf_open_mem(data, size, &g) != KS_OK) {
        if (g)
            abort();
        return 0;
    }
    for (uint64_t i = 0; i < ks_gguf_n_kv(g); i++) {
        const ks_gguf_kv *kv = ks_gguf_kv_at(g, i);
        uint64_t          u;
        int64_t           s;
        float             f;
        bool              b;
        size_t            len;

        sink += strlen(kv->key);
        /* Keys holding a NUL cannot be found by C string; others must. */
        if (strlen(kv->key) == kv->key_len && ks_gguf_find(g, kv->key) != kv)
            abort();
        sink += ks_gguf_get_u64(g, kv->key, &u) + ks_gguf_get_i64(g, kv->key, &s)
              + ks_gguf_get_f32(g, kv->key, &f) + ks_gguf_get_bool(g, kv->key, &b);
        if (ks_gguf_get_u64_layer(g, kv->key, 3, &u))
            sink += u;
        if (kv->type == KS_GGUF_STR) {
            const char *str = ks_gguf_get_str(g, kv->key, &len);

            if (str && str[len] != '\0')
                abort();
        }
        if (kv->type == KS_GGUF_ARR)
            walk_arr(&kv->arr);
    }
    for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++) {
        const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);
        const uint8_t        *p = t->data;

        if (t->size_bytes == 0 || t->offset + t->size_bytes > size ||
            ks_gguf_tensor_find(g, t->name) != t)
            abort();
        sink += p[0] + p[t->size_bytes - 1];
    }
    ks_gguf_destroy(g);
    inspect(data, size);
    return 0;
}
