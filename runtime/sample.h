/* Token sampling on the CPU: repetition penalty, top-k, top-p, min-p,
 * temperature and a seeded draw, in the order of llama.cpp's common default
 * chain. Internal; the public generation API wraps it. */
#ifndef KS_SAMPLE_H
#define KS_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"

typedef struct ks_sampler ks_sampler;

typedef struct ks_sampler_params {
    float    temp;            /* <= 0: greedy (argmax, lowest id on ties) */
    int32_t  top_k;           /* 0: off */
    float    top_p;           /* 0 or >= 1: off */
    float    min_p;           /* 0: off; relative to the most likely token */
    float    repeat_penalty;  /* 0 or 1: off; llama.cpp's rule */
    int32_t  repeat_last_n;   /* 0: 64; tokens of history the penalty sees */
    uint64_t seed;            /* the same seed gives the same draws */
} ks_sampler_params;

/* Creates a sampler for a vocabulary of |n_vocab| logits. |p| may be NULL
 * (all defaults: greedy). Every work array is allocated here, so sampling
 * allocates nothing per token. Errors: KS_ERR_INVALID_ARG names the bad
 * field (negative top_k, top_p or min_p outside [0, 1], NaN temperature,
 * negative penalty or window, zero vocabulary); KS_ERR_NOMEM.
 * On failure *out is NULL. */
ks_status ks_sampler_create(const ks_sampler_params *p, uint32_t n_vocab,
                            ks_sampler **out);
void      ks_sampler_destroy(ks_sampler *s);  /* NULL is a no-op */

/* Picks the next token from |logits| (n_vocab floats, read only; NaN counts
 * as -inf). The chain is: repetition penalty over the last repeat_last_n
 * accepted tokens (a positive logit is divided by the penalty, a negative
 * one multiplied, once per distinct token) -> top-k -> top-p -> min-p ->
 * temperature -> softmax -> draw. Greedy (temp <= 0) applies the penalty
 * and then takes the argmax; it never consumes random numbers.
 * Ties between equal logits are broken towards the lower id everywhere.
 * The sampler does not record the token it returns: call
 * ks_sampler_accept with it. Not thread safe per sampler. */
int32_t ks_sampler_sample(ks_sampler *s, const float *logits);

/* Appends |token| to the penalty history; prompt tokens are accepted too.
 * Ids outside [0, n_vocab) are ignored. */
void ks_sampler_accept(ks_sampler *s, int32_t token);

/* Clears the history and restarts the random sequence from the seed. */
void ks_sampler_reset(ks_sampler *s);

/* The distribution ks_sampler_sample draws from: probs[i] (n_vocab
 * floats, summing to 1) is the probability of token i after the whole
 * chain, 0 for tokens a stage dropped; greedy gives 1 at the argmax.
 * Draws no random number. Speculative sampling compares these. */
void ks_sampler_probs(ks_sampler *s, const float *logits, float *probs);

/* The next number of the sampler's random sequence, uniform in [0, 1). */
double ks_sampler_uniform(ks_sampler *s);

/* Replaces the penalty history with the last repeat_last_n of |tokens|
 * (oldest first); the random sequence goes on. */
void ks_sampler_set_history(ks_sampler *s, const int32_t *tokens, size_t n);

#endif
