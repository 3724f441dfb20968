/* `kestrel quantize`: requantize the weight matrices of a GGUF file.
 *
 * Metadata is copied record by record (raw bytes, so every value type and
 * nested arrays survive), general.file_type is rewritten, and each 2-D
 * tensor is dequantized row by row to f32 and quantized to the target type
 * on the thread pool. Rows that do not fit the type's block fall back as
 * llama-quantize does. 1-D tensors (norms, biases) are copied as they are. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "driver/base.h"
#include "kestrel/quantize.h"
#include "runtime/cpu/pool.h"
#include "runtime/cpu/quant.h"
#include "runtime/gguf.h"
#include "runtime/synth.h"

static const struct {
    const char *name;
    ks_qtype    type;
    uint32_t    file_type;  /* general.file_type (llama_ftype) */
} targets[] = {
    { "F32", KS_QUANT_F32, 0 },     { "F16", KS_QUANT_F16, 1 },
    { "Q4_0", KS_QUANT_Q4_0, 2 },   { "Q4_1", KS_QUANT_Q4_1, 3 },
    { "Q8_0", KS_QUANT_Q8_0, 7 },   { "Q5_0", KS_QUANT_Q5_0, 8 },
    { "Q5_1", KS_QUANT_Q5_1, 9 },   { "Q4_K", KS_QUANT_Q4_K, 14 },
    { "Q6_K", KS_QUANT_Q6_K, 18 },  { "IQ4_NL", KS_QUANT_IQ4_NL, 25 },
};

/* Bytes of a KV value as stored after its type field. */
static uint64_t
value_bytes(const ks_gguf_kv *kv)
{
    if (kv->type == KS_GGUF_STR)
        return 8 + kv->str_len;
    if (kv->type == KS_GGUF_ARR)
        return 4 + 8 + kv->arr.n_bytes;
    return ks_gguf_type_size(kv->type);
}

typedef struct requant_job {
    const ks_gguf_tensor *t;
    ks_qtype              to;
    uint64_t              rows;
    uint64_t              in_row_bytes;
    uint64_t              out_row_bytes;
    uint8_t              *out;
    float                *scratch;  /* [nth][ne0] */
} requant_job;

static void
requant_worker(void *ctx, int ith, int nth)
{
    const requant_job *j = ctx;
    uint64_t ne0 = j->t->ne[0];
    float *row = j->scratch + (uint64_t)ith * ne0;
    int64_t r0, r1;

    ks_pool_range((int64_t)j->rows, 1, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        ks_cpu_dequant_row((ks_qtype)j->t->type,
                           (const uint8_t *)j->t->data +
                               (uint64_t)r * j->in_row_bytes,
                           row, ne0);
        ks_cpu_quantize_row(j->to, row, j->out + (uint64_t)r * j->out_row_bytes,
                            ne0);
    }
}

KS_API ks_status
ks_quantize_file(const char *in, const char *out, const char *type,
                 int n_threads)
{
    ks_gguf *g = NULL;
    ks_gguf_writer *w = NULL;
    ks_pool *pool = NULL;
    void **bufs = NULL;
    float *scratch = NULL;
    uint64_t n_t, max_ne0 = 0;
    ks_status st;
    int target = -1;

    if (!in)
        return ks_null_arg("ks_quantize_file", "in");
    if (!out)
        return ks_null_arg("ks_quantize_file", "out");
    if (!type)
        return ks_null_arg("ks_quantize_file", "type");
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
        if (strcasecmp(type, targets[i].name) == 0)
            target = (int)i;
    if (target < 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "quantize: unknown type '%s' (expected Q4_0, Q4_1, "
                        "Q5_0, Q5_1, Q8_0, Q4_K, Q6_K, IQ4_NL, F16 or F32)",
                        type);
    /* Before any work: the output must be a regular file or new. */
    if ((st = ks_file_check_replaceable(out)) != KS_OK)
        return st;
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if ((st = ks_gguf_open(in, &g)) || (st = ks_gguf_writer_create(&w)) ||
        (st = ks_pool_create(n_threads, &pool)) ||
        (st = ks_gguf_writer_set_alignment(w, ks_gguf_alignment(g))))
        goto out;

    for (uint64_t i = 0; i < ks_gguf_n_kv(g); i++) {
        const ks_gguf_kv *kv = ks_gguf_kv_at(g, i);
        const uint8_t *base = ks_gguf_base(g);
        uint64_t off = kv->offset + 8 + kv->key_len + 4;

        if (strcmp(kv->key, "general.file_type") == 0 ||
            strcmp(kv->key, "general.alignment") == 0)
            continue;
        if ((st = ks_gguf_writer_add_raw_kv(w, kv->key, kv->type, base + off,
                                            value_bytes(kv))))
            goto out;
    }
    if ((st = ks_gguf_writer_set_u32(w, "general.file_type",
                                     targets[target].file_type)))
        goto out;

    n_t = ks_gguf_n_tensors(g);
    bufs = calloc(n_t ? n_t : 1, sizeof(*bufs));
    for (uint64_t i = 0; i < n_t; i++)
        if (ks_gguf_tensor_at(g, i)->ne[0] > max_ne0)
            max_ne0 = ks_gguf_tensor_at(g, i)->ne[0];
    scratch = malloc((size_t)n_threads * (max_ne0 ? max_ne0 : 1) *
                     sizeof(float));
    if (!bufs || !scratch) {
        st = ks_error(KS_ERR_NOMEM, "quantize: no memory");
        goto out;
    }
    for (uint64_t i = 0; i < n_t; i++) {
        const ks_gguf_tensor *t = ks_gguf_tensor_at(g, i);
        const ks_qtype_info *qi = ks_qtype_get(t->type);
        ks_qtype to;
        requant_job j = { 0 };

        if (t->n_dims < 2 || !qi || !qi->cpu) {
            if (qi && !qi->cpu && t->n_dims >= 2)
                ks_log(KS_LOG_WARN, "quantize",
                       "%s: type %s cannot be converted; copied as it is",
                       t->name, qi->name);
            if ((st = ks_gguf_writer_add_tensor(w, t->name, t->type,
                                                t->n_dims, t->ne, t->data,
                                                t->size_bytes)))
                goto out;
            continue;
        }
        to = ks_synth_fallback_type(targets[target].type, t->ne[0]);
        j.t = t;
        j.to = to;
        j.rows = t->n_elems / t->ne[0];
        j.in_row_bytes = ks_qtype_row_bytes((ks_qtype)t->type, t->ne[0]);
        j.out_row_bytes = ks_qtype_row_bytes(to, t->ne[0]);
        j.out = bufs[i] = malloc(j.rows * j.out_row_bytes);
        j.scratch = scratch;
        if (!j.out) {
            st = ks_error(KS_ERR_NOMEM, "quantize: no memory for %s",
                          t->name);
            goto out;
        }
        ks_pool_run(pool, requant_worker, &j);
        ks_log(KS_LOG_INFO, "quantize", "%s: %s -> %s", t->name,
               ks_qtype_name(t->type), ks_qtype_name(to));
        if ((st = ks_gguf_writer_add_tensor(w, t->name, to, t->n_dims, t->ne,
                                            j.out,
                                            j.rows * j.out_row_bytes)))
            goto out;
    }
    st = ks_gguf_writer_write_file(w, out);
out:
    if (bufs && g)
        for (uint64_t i = 0; i < ks_gguf_n_tensors(g); i++)
            free(bufs[i]);
    free(bufs);
    free(scratch);
    ks_pool_destroy(pool);
    ks_gguf_writer_destroy(w);
    ks_gguf_destroy(g);
    return st;
}
