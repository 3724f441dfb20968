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

/* The governor's cap on drafting. Drafting spends energy on tokens that
 * may be thrown away; it runs only where it raises the expected tokens
 * per joule. The draft length is chosen for the most expected tokens per
 * millisecond of computing (drafting and verifying), and on one device
 * the energy of a round is that time times the power drawn while
 * computing, so without a limit tokens per ms and tokens per joule pick
 * the same length. Under a limit the governor paces decoding to a power
 * budget, so the tokens per second are the budget times the tokens per
 * joule: drafting must then beat plain decoding's expected tokens per
 * computing ms by a margin, because a verifying pass of k + 1 rows draws
 * more power per ms than one-token decoding (the weights stay in cache
 * and the cores do more arithmetic per byte) and the model does not see
 * that. The margin, by the governor's state (ks_gov_state, -1: no
 * governor): none when no limit binds (cool, start, target rate);
 * 1.25x under the power cap, the temperature limit, the battery policy or
 * without a temperature reading (blind); within 5 C of the critical trip,
 * no drafting at all (INFINITY). Under a margin above
 * KS_SPEC_EXPLORE_GAIN, rounds that draft only to keep measuring stop
 * too. */
#define KS_SPEC_EXPLORE_GAIN 1.0
double ks_spec_min_gain(int gov_state);

/* Tests only: a broken acceptance rule, to show that the distribution
 * test catches one. 0: the right rule; 1: keep every drafted token;
 * 2: on rejection draw from p instead of max(0, p - q). */
extern int ks_spec_test_break;

#endif
