/* Quality measured, not assumed: perplexity over a text and the KL
 * divergence of a session's distributions against a saved reference, as
 * llama.cpp's llama-perplexity measures them (tools/perplexity). A session
 * with ks_session_params.n_layers below the model's measures an early
 * exit; a session on a requantized or pruned file measures that file. */
#ifndef KESTREL_QUALITY_H
#define KESTREL_QUALITY_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "kestrel/session.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ks_ppl_params {
    uint32_t    n_ctx;     /* tokens per chunk; 0: 512 (at least 4, at most
                              the session's context) */
    uint32_t    n_chunks;  /* most chunks; 0: every whole chunk of the text */
    /* Write the log-probabilities of every scored position to this file,
     * in llama-perplexity's --kl-divergence-base format: "_logits_",
     * n_ctx (u32), n_vocab (i32), n_chunk (i32), the chunks' tokens (i32),
     * then per scored position 2 floats (scale, minimum log-probability)
     * and n_vocab (rounded up to even) u16 steps above the minimum, with
     * everything more than 16 below the top logit at 0. NULL: none. */
    const char *kl_save;
    /* Compare with such a file (ours or llama-perplexity's): the tokens
     * and n_ctx come from it, and tokens/n of ks_perplexity are ignored.
     * NULL: none. */
    const char *kl_base;
    const volatile int *cancel;  /* read between chunks; may be NULL */
} ks_ppl_params;

typedef struct ks_ppl_result {
    uint32_t n_ctx;
    uint32_t n_chunks;
    uint64_t n_scored;     /* positions scored: n_chunks * (n_ctx - 1 - n_ctx / 2) */
    double   nll;          /* mean negative log-likelihood, nats */
    double   ppl;          /* exp(nll) */
    double   ppl_err;      /* its standard error, as llama-perplexity gives it */
    /* With kl_base: */
    bool     have_kl;
    double   ppl_base;     /* the reference's perplexity, from its file */
    double   kl_mean;      /* mean KL(base || this), nats */
    double   kl_p99;       /* its 99th percentile over the positions */
    double   kl_max;
    double   top1;         /* fraction of positions whose most likely token
                              is the reference's */
    double   eval_ms;      /* time the model ran */
} ks_ppl_result;

/* Perplexity of |tokens| (tokenized with BOS as the model asks, like
 * llama-perplexity) in chunks of n_ctx: each chunk runs from position 0
 * of the session (what it held is dropped), its first token replaced by
 * BOS when the model adds one, and the second half of it is scored: the
 * logits at positions n_ctx / 2 .. n_ctx - 2 against the next token.
 * KS_ERR_INVALID_ARG when the text has fewer than 2 * n_ctx tokens (as
 * llama-perplexity) or n_ctx does not fit the session; KS_ERR_IO or
 * KS_ERR_CORRUPT naming the file and field for a kl_base file that cannot
 * be read or does not match the model (vocabulary, n_ctx). The session
 * must be able to give every token's logits (ks_session_eval_all). It
 * holds the last chunk's tokens afterwards. */
KS_API ks_status ks_perplexity(ks_session *s, const int32_t *tokens, size_t n,
                               const ks_ppl_params *p, ks_ppl_result *out);

/* Writes |out|: |in| without the layers drop[0..n_drop) (indices of the
 * input, any order): their tensors left out, the rest renumbered in
 * order, <arch>.block_count lowered, all else copied. KS_ERR_INVALID_ARG
 * for an index out of range, twice, or all layers; KS_ERR_UNSUPPORTED
 * for a file whose layers are not interchangeable by index (gemma3's
 * sliding-window pattern, metadata with one value per layer). |out| must
 * be new or a regular file. */
KS_API ks_status ks_prune_file(const char *in, const char *out, const uint32_t *drop,
                               size_t n_drop);

#ifdef __cplusplus
}
#endif
#endif
