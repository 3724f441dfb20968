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
    const char *arch;       /* "llama", "qwen2", "qwen3", "gemma3", and the
                               mixtures of experts "qwen2moe", "qwen3moe",
                               "olmoe" */
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
    /* Mixtures of experts only: */
    uint32_t    n_expert;      /* expert_count */
    uint32_t    n_expert_used; /* expert_used_count */
    uint32_t    n_ff_exp;      /* expert_feed_forward_length; 0: n_ff (and
                                  olmoe's experts always take n_ff) */
    uint32_t    n_ff_shexp;    /* qwen2moe's shared expert; 0: n_ff */
    /* 0: a uniform router. s > 0: a skewed one, where the first
     * n_expert / 8 (at least one) experts take most tokens, more so as s
     * grows (1 to 4 is a useful range): the embeddings share a positive
     * offset, which the residual stream keeps, and those experts'
     * router rows lean toward it. */
    float       router_skew;
} ks_synth_params;

ks_status ks_synth_write(const ks_synth_params *p, const char *path);

/* The type llama-quantize would give a row of |ne0| elements when |want|
 * is asked for: K-quants need rows of 256, the rest rows of 32. */
ks_qtype ks_synth_fallback_type(ks_qtype want, uint64_t ne0);

#endif
