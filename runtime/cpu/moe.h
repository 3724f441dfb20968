/* Mixture-of-experts FFN on the CPU (qwen3moe, olmoe, qwen2moe): the
 * router, the top-k choice and its weights (ks_moe_route, the one place
 * routing is decided), the grouping of a batch's tokens by expert
 * (ks_moe_group), and the layer's FFN run on the thread pool
 * (ks_moe_ffn), which reads only the rows of the experts some token
 * chose. llama.cpp's build_moe_ffn (src/llama-graph.cpp) is the
 * reference for the arithmetic. */
#ifndef KS_CPU_MOE_H
#define KS_CPU_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "kestrel/status.h"
#include "runtime/model_priv.h"

struct ks_pool;

/* Routes one token: p = softmax(logits[0..n_expert)), ids[0..k) the
 * indices of the k largest p in falling order (ties to the lower index),
 * w[j] = p[ids[j]], divided by the sum of the k (clamped below at
 * 6.103515625e-5, as llama.cpp clamps it) when |norm|. |probs| is
 * scratch of n_expert floats. 1 <= k <= n_expert. */
void ks_moe_route(const float *logits, uint32_t n_expert, uint32_t k, bool norm,
                  float *probs, int32_t *ids, float *w);

/* Groups the n_tok * k choices ids[t * k + j] by expert (a counting sort,
 * stable in t then j): choices of expert e are order[offs[e] .. offs[e +
 * 1]), each the flat index t * k + j. offs has n_expert + 1 entries. */
void ks_moe_group(const int32_t *ids, uint32_t n_tok, uint32_t k, uint32_t n_expert,
                  uint32_t *offs, uint32_t *order);

/* Scratch for a layer's MoE FFN on batches of up to n_batch tokens;
 * made once per target (nothing is allocated per token). */
typedef struct ks_moe ks_moe;

/* For the MoE layers [l0, l1) of |m| (which must be a MoE model). */
ks_status ks_moe_create(const ks_model *m, uint32_t l0, uint32_t l1, uint32_t n_batch,
                        ks_moe **out);
void      ks_moe_destroy(ks_moe *mo);   /* NULL is a no-op */

/* out[t] = the MoE FFN of layer |L| for the normed input rows
 * xn[t * ldx ..] (t < n_tok <= n_batch): sum over the token's k experts
 * of w_j * down_e(silu(gate_e · x) * up_e · x), added in slot order, plus
 * qwen2moe's shared expert times sigmoid(gate_inp_shexp · x). Runs on
 * the first |n_threads| workers of |pool| from the pool's owner thread;
 * |rowwise|: each token with the one-token kernels (verification). out
 * may be xn (all reads of xn come first). */
void ks_moe_ffn(ks_moe *mo, const ks_layer *L, struct ks_pool *pool, int n_threads,
                bool rowwise, const float *xn, uint64_t ldx, uint32_t n_tok, float *out,
                uint64_t ldo);

/* How often each expert of layer |il| was chosen since create (for
 * placement and for tests of skewed routers): n_expert counts. */
const uint64_t *ks_moe_hits(const ks_moe *mo, uint32_t il);

/* Bytes of expert weights the last ks_moe_ffn call read (the active
 * experts' gate, up and down rows, the shared expert and the router). */
uint64_t ks_moe_last_bytes(const ks_moe *mo);

#endif
