/* Synthetic models: GGUF files of any supported architecture with random
 * weights and a small SentencePiece vocabulary, written with the
 * project's GGUF writer. Tests run them through the whole runtime;
 * benchmarks use them at realistic sizes. Internal. */
#ifndef KS_SYNTH_H
#define KS_SYNTH_H

#include <stdint.h>

#include "kestrel/status.h"
#include "runtime/qtype.h"

typedef struct ks_synth_params {
    const char *arch;       /* "llama", "qwen2", "qwen3", "gemma3" */
    uint32_t    n_embd;
    uint32_t    n_layers;
    uint32_t    n_head;
    uint32_t    n_head_kv;  /* 0: n_head */
    uint32_t    head_dim;   /* 0: n_embd / n_head */
    uint32_t    n_ff;
    uint32_t    n_vocab;    /* at least 300 */
    uint32_t    n_ctx;      /* 0: 2048 */
    ks_qtype    wtype;      /* 2-D weights and the tied embedding; rows
                               that do not fit its block fall back as
                               llama-quantize does */
    uint64_t    seed;
} ks_synth_params;

ks_status ks_synth_write(const ks_synth_params *p, const char *path);

/* The type llama-quantize would give a row of |ne0| elements when |want|
 * is asked for: K-quants need rows of 256, the rest rows of 32. */
ks_qtype ks_synth_fallback_type(ks_qtype want, uint64_t ne0);

#endif
