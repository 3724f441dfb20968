/* The value side of attention for one query head: an online softmax over
 * key scores with the weighted sum of value rows kept in the KV cache's
 * own precision, as llama.cpp's CPU flash attention keeps it (fp16 for an
 * f16 cache). Following its rounding keeps greedy tokens identical to the
 * peer's. F16C is used where the CPU has it. */
#ifndef KS_CPU_ATTN_H
#define KS_CPU_ATTN_H

#include <stdint.h>

#include "runtime/qtype.h"

/* out[0..hd) = softmax(scores * scale) · V, where row i of V (KS_QUANT_F16
 * or KS_QUANT_F32) is |row_bytes| past row i-1. |work| holds hd floats. */
void ks_cpu_attn_accum(ks_qtype kv_type, const void *V, uint64_t row_bytes,
                       uint32_t hd, uint32_t n_keys, const float *scores,
                       float scale, float *work, float *out);

/* scores[i] = dot(K row i, q) for an f16 cache and an f16 query, summed
 * in the order of llama.cpp's AVX2 ggml_vec_dot_f16 (four 8-lane fp32
 * accumulators over steps of 32, a fixed reduction tree, the tail in
 * double), so the scores agree bit for bit with the peer's. */
void ks_cpu_attn_scores_f16(const void *K, uint64_t row_bytes, uint32_t hd,
                            uint32_t n_keys, const uint16_t *q,
                            float *scores);
void ks_cpu_attn_scores_f16_ref(const void *K, uint64_t row_bytes,
                                uint32_t hd, uint32_t n_keys,
                                const uint16_t *q, float *scores);

/* llama.cpp's tiled flash attention, which its CPU backend runs instead
 * for a batch of 64 or more query rows (the f32 query, 64-cell key tiles
 * from cell 0, f32 sums): out[0..hd) for one query row. K and V point at
 * cache cell 0 of the head, rows |row_bytes| apart; the keys are cells
 * [first, first + n_keys). |kq| holds 64 floats, |acc| hd. Bit-identical
 * on both paths. */
void ks_cpu_attn_tiled(ks_qtype kv_type, const float *q, const void *K,
                       const void *V, uint64_t row_bytes, uint32_t hd,
                       uint32_t first, uint32_t n_keys, float scale,
                       float *kq, float *acc, float *out);
void ks_cpu_attn_tiled_ref(ks_qtype kv_type, const float *q, const void *K,
                           const void *V, uint64_t row_bytes, uint32_t hd,
                           uint32_t first, uint32_t n_keys, float scale,
                           float *kq, float *acc, float *out);

/* The same, portable C only (the reference for tests). */
void ks_cpu_attn_accum_ref(ks_qtype kv_type, const void *V,
                           uint64_t row_bytes, uint32_t hd, uint32_t n_keys,
                           const float *scores, float scale, float *work,
                           float *out);

#endif
