/* A session's state: the KV cache, the activation scratch of one batch,
 * the thread pool. forward.c runs the transformer over it; session.c is
 * the public API around it. */
#ifndef KS_SESSION_PRIV_H
#define KS_SESSION_PRIV_H

#include <stdint.h>

#include "kestrel/session.h"
#include "runtime/cpu/pool.h"
#include "runtime/model_priv.h"

struct ks_telemetry;
struct ks_governor;
struct ks_trace;
struct ks_target;

/* Activation formats a dot product may need (ks_cpu_act_type); one
 * quantized copy of the current input per format. */
enum { KS_N_ACT_SLOTS = 6 };

typedef struct ks_act_slot {
    ks_qtype    type;    /* KS_QUANT_F32, F16, BF16, Q8_0, Q8_1 or Q8_K */
    uint8_t    *buf;     /* [n_batch][stride] */
    uint64_t    stride;  /* bytes per row for the widest input */
    const float *src;    /* the input it holds now; NULL: stale */
} ks_act_slot;

struct ks_session {
    ks_model   *m;
    ks_pool    *pool;
    int         n_threads;
    uint32_t    n_ctx;
    uint32_t    n_batch;
    ks_kv_type  kv_type;
    uint32_t    n_past;

    uint64_t    kv_dim;      /* n_head_kv * head_dim */
    uint64_t    kv_row_bytes;
    uint8_t    *k_cache;     /* [n_layers][n_ctx][kv_dim], f16 or f32 */
    uint8_t    *v_cache;     /* same */

    /* Scratch for one batch of up to n_batch tokens. */
    float      *x;           /* [n_batch][n_embd] residual stream */
    float      *xn;          /* [n_batch][max(n_embd, q_dim)] normed input */
    float      *q;           /* [n_batch][q_dim] */
    float      *k;           /* [n_batch][kv_dim] */
    float      *v;           /* [n_batch][kv_dim] */
    float      *att;         /* [n_batch][q_dim] attention output */
    float      *g;           /* [n_batch][n_ff] gate, then activation */
    float      *u;           /* [n_batch][n_ff] up */
    float      *rope;        /* [2][n_batch][n_rot] cos, sin pairs */
    float      *scores;      /* [n_threads][n_ctx] */
    float      *vtmp;        /* [n_threads][head_dim] */
    uint8_t    *qh;          /* [n_threads][head_dim] query in KV format */
    float      *logits;      /* [n_vocab] */
    ks_act_slot act[KS_N_ACT_SLOTS];

    ks_stats    stats;

    /* The governor, when one runs (see ks_runtime_params). */
    struct ks_telemetry *tel;
    struct ks_governor  *gov;
    struct ks_trace     *trace;
    int                  max_threads;  /* the pool's size */

    /* Where the layers run: targets in layer order (scheduler/target.h),
     * as the placement chose them. */
    struct ks_target    *targets[8];
    uint32_t             n_targets;
    char                 plan[160];   /* ks_plan_format of the placement */
};

/* The CPU as a target kind (forward.c); its targets run on the session's
 * pool, scratch and KV cache. */
struct ks_target_kind;
extern const struct ks_target_kind ks_cpu_target_kind;

/* Runs tokens[0..n) (n <= n_batch) at positions n_past.. and appends
 * their keys and values to the cache; fills s->logits with the last
 * token's logits when want_logits. */
ks_status ks_forward(ks_session *s, const int32_t *tokens, uint32_t n,
                     bool want_logits);

/* Runs any number of tokens in batches of n_batch, the last one's logits
 * in s->logits. With a CPU range followed by a device range the batches
 * are pipelined: the device runs batch k while the CPU runs its layers of
 * batch k + 1 (the same arithmetic, so the same result). */
ks_status ks_forward_tokens(ks_session *s, const int32_t *tokens, size_t n);

#endif
