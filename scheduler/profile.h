/* The op profile: time and bytes moved per (target kind, op kind, layer),
 * filled by the targets while a session runs with profiling on
 * (ks_session_params.profile) and read through ks_session_profile.
 *
 * How a target fills it: after each op of a run, one ks_profile_add with
 * the target's kind ("cpu", "vulkan"), the op, the layer (-1 for work
 * outside the layers: the head) and the op's duration and the bytes it
 * read and wrote (weights, activations, KV cache). A CPU target times on
 * the host clock around the pool job; a device target resolves its
 * timestamp queries after the fence and adds one entry per dispatch (or
 * per group of dispatches that make one op). Internal; not installed. */
#ifndef KS_PROFILE_H
#define KS_PROFILE_H

#include <stdint.h>

#include "kestrel/status.h"

typedef enum ks_prof_op {
    KS_PROF_NORM = 0,   /* RMS norm before attention, FFN and head */
    KS_PROF_QKV,        /* the Q, K, V products (+ bias) */
    KS_PROF_ROPE_KV,    /* q/k norm, rope, storing K and V */
    KS_PROF_ATTN,       /* scores, softmax, value sum */
    KS_PROF_ATTN_OUT,   /* the output projection */
    KS_PROF_ADD,        /* residual adds (with the post-norms) */
    KS_PROF_GATE_UP,    /* the gate and up products */
    KS_PROF_ACT,        /* SiLU/GELU times up */
    KS_PROF_DOWN,       /* the down product */
    KS_PROF_MOE,        /* a mixture-of-experts FFN (router, experts);
                           the CPU counts no bytes for it yet */
    KS_PROF_HEAD,       /* the output (logits) product */
    KS_PROF_N_OPS
} ks_prof_op;

enum { KS_PROF_MAX_KINDS = 4 };

typedef struct ks_prof_cell {
    uint64_t calls;
    uint64_t ns;
    uint64_t bytes;
} ks_prof_cell;

typedef struct ks_profile {
    uint32_t      n_layers;
    char          kind[KS_PROF_MAX_KINDS][16];  /* "" where unused */
    ks_prof_cell *cells;  /* [KS_PROF_MAX_KINDS][KS_PROF_N_OPS][n_layers + 1];
                             the last layer slot holds layer -1 */
} ks_profile;

/* "norm", "qkv", "rope_kv", "attn", "attn_out", "add", "gate_up", "act",
 * "down", "moe", "head". */
const char *ks_prof_op_name(ks_prof_op op);

ks_status ks_profile_create(uint32_t n_layers, ks_profile **out);
void      ks_profile_destroy(ks_profile *p);  /* NULL is a no-op */
void      ks_profile_reset(ks_profile *p);

/* Adds one op's time and bytes. |kind| beyond the fourth distinct one
 * and a layer outside -1..n_layers-1 are dropped. NULL |p| is a no-op.
 * Called from the session's thread (targets run there). */
void ks_profile_add(ks_profile *p, const char *kind, ks_prof_op op, int32_t layer,
                    uint64_t ns, uint64_t bytes);

/* The cell for (kind slot, op, layer); layer -1 is the head slot. */
static inline ks_prof_cell *
ks_profile_cell(const ks_profile *p, uint32_t kind, ks_prof_op op, int32_t layer)
{
    uint32_t l = layer < 0 ? p->n_layers : (uint32_t)layer;

    return &p->cells[((uint64_t)kind * KS_PROF_N_OPS + op) * (p->n_layers + 1) + l];
}

#endif
