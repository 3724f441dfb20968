/* Lossless speculative sampling (Leviathan et al. 2023; Chen et al. 2023):
 * the choice between a drafted token and the target's own, such that the
 * tokens emitted follow the target's distribution exactly. Internal. */
#ifndef KS_SPEC_SAMPLE_H
#define KS_SPEC_SAMPLE_H

#include <stdint.h>

#include "runtime/sample.h"

/* The token for one position where the draft proposed |x|, drawn from
 * the distribution |q| (n_vocab floats; NULL: x was drafted without
 * chance, q is 1 at x, as prompt lookup). p is the target's distribution
 * after |smp|'s whole chain on |logits| (ks_sampler_probs, into |work|,
 * n_vocab floats). x is kept with probability min(1, p(x) / q(x));
 * otherwise the token is drawn from max(0, p - q), normalized, which
 * never gives x. Both draws come from smp's random sequence. With greedy
 * sampling p is 1 at the target's argmax, so this is the greedy rule. */
int32_t ks_spec_pick(ks_sampler *smp, const float *logits, const float *q, int32_t x,
                     float *work, uint32_t n_vocab);

/* Draws a token from |probs| (n_vocab floats summing to about 1) with one
 * number of smp's random sequence. */
int32_t ks_spec_draw(ks_sampler *smp, const float *probs, uint32_t n_vocab);

/* Tests only: a broken acceptance rule, to show that the distribution
 * test catches one. 0: the right rule; 1: keep every drafted token;
 * 2: on rejection draw from p instead of max(0, p - q). */
extern int ks_spec_test_break;

#endif
