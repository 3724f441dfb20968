/* Execution targets: one interface for every place a range of layers can
 * run (the CPU thread pool, a Vulkan device, an NPU once one has an
 * execution path). A target holds the weights of its layers and their KV
 * cache, runs its layer range for a batch of tokens, and hands the hidden
 * state on through host memory; the one holding the last layer also
 * computes the head (final norm and logits).
 *
 * A kind of target plugs in by filling a ks_target_kind and registering
 * it (ks_target_register); the session asks the registry by name for the
 * kinds a placement names, so a new accelerator does not touch runtime/.
 * The model is passed as an opaque pointer: an implementation includes
 * what it needs to read it. Internal; not installed. */
#ifndef KS_TARGET_H
#define KS_TARGET_H

#include <stdbool.h>
#include <stdint.h>

#include "kestrel/status.h"

typedef struct ks_target ks_target;

/* What a target reports of itself (ops->stats). */
typedef struct ks_target_stats {
    uint32_t n_kernels_cached;    /* kernels found in the disk cache at create */
    uint32_t n_kernels_compiled;  /* kernels compiled at create */
    double   setup_ms;            /* create: device, upload, kernels */
    uint64_t weight_bytes;        /* weights copied to the target's memory */
    uint64_t kv_bytes;            /* its KV cache */
    uint64_t busy_ns;             /* time its runs took, since create */
} ks_target_stats;

/* The contract every target keeps.
 *
 * Threads: a session calls its targets' members from the one thread that
 * runs the session (the caller of ks_session_eval / _generate), one call
 * at a time; a target may run work on threads of its own (the CPU pool,
 * a device queue) but has none running when run, finish or destroy
 * returns.
 * Ownership: a target owns what it allocates (its layers' weights on its
 * memory, the KV cache of its layers for every position of the context,
 * its scratch, recorded command buffers) and frees it in destroy. The
 * buffers passed to run, submit and finish are borrowed for the call.
 * The KV cache: a run of n tokens at pos0 writes the keys and values of
 * positions pos0..pos0+n-1 of its layers and reads those before pos0;
 * positions after are never read, so a session truncates by running the
 * next tokens at a lower pos0.
 * Failure: any error leaves positions pos0.. undefined (the session runs
 * them again). KS_ERR_DEVICE_LOST means the target cannot run any more
 * (device lost, a fence that timed out, an injected fault): the session
 * calls nothing of it but destroy, moves its layers to the CPU, and
 * rebuilds their KV cache there from the tokens it holds. */
typedef struct ks_target_ops {
    /* Runs layers [l0, l1) for n tokens at positions pos0..pos0+n-1. |x|
     * holds n rows of the hidden state entering l0 and receives the state
     * leaving l1-1; a target with the head puts the last token's logits
     * in |logits| instead when want_logits. */
    ks_status (*run)(ks_target *t, float *x, uint32_t n, uint32_t pos0, bool want_logits,
                     float *logits);
    void (*destroy)(ks_target *t);
    /* Optional (NULL: the target runs synchronously): run in two halves.
     * submit starts the run on a copy of |x| and returns; finish waits
     * for it and delivers what run would. One run in flight at a time;
     * the session uses them to overlap targets on consecutive batches.
     * After a failed submit there is nothing to finish. */
    ks_status (*submit)(ks_target *t, const float *x, uint32_t n, uint32_t pos0,
                        bool want_logits);
    ks_status (*finish)(ks_target *t, float *x, float *logits);
    /* Fills *out; any field the target does not know stays 0. */
    void (*stats)(const ks_target *t, ks_target_stats *out);
    /* Optional (NULL: the target can give the last token's logits only,
     * and verification for speculative decoding is refused on a placement
     * whose head is on it). The verification run: layers [l0, l1) for n
     * tokens as run, each token with the arithmetic of a run of that
     * token alone, so that its keys, values and logits are bitwise those
     * of decoding it by itself (a target whose kernels cannot keep that
     * must leave this NULL); the weights should still be read once for
     * all n. A target with the head puts the logits of the last
     * |n_logits| tokens (0 <= n_logits <= n; 0 without the head) in
     * logits[n_logits][n_vocab], row i holding token n - n_logits + i. */
    ks_status (*run_logits)(ks_target *t, float *x, uint32_t n, uint32_t pos0,
                            uint32_t n_logits, float *logits);
} ks_target_ops;

struct ks_target {
    const ks_target_ops *ops;
    void    *impl;
    uint32_t l0, l1;     /* layers [l0, l1) */
    bool     head;
    bool     accel;      /* runs off the CPU: its busy time is the GPU actor's */
    char     kind[16];   /* "cpu", "vulkan" */
    char     desc[128];  /* for logs: "vulkan (llvmpipe) layers 10-29 + head" */
};

/* Fills the fields every target has; desc starts as "KIND layers A-B[ +
 * head]" and a kind may write a longer one. */
void ks_target_init(ks_target *t, const ks_target_ops *ops, void *impl, const char *kind,
                    uint32_t l0, uint32_t l1, bool head, bool accel);

/* What a session offers a target kind when it asks about or makes one. */
typedef struct ks_target_env {
    const void *model;       /* const ks_model * */
    int32_t     device;      /* device index, -1: best */
    uint32_t    n_ctx;       /* positions the KV cache holds */
    uint32_t    n_batch;     /* most tokens in one run */
    bool        kv_f32;      /* an f32 KV cache (else f16) */
    bool        check_layers;/* KESTREL_CHECK=1: report the first layer whose
                                output has NaN or Inf (KS_ERR_CORRUPT) */
    int32_t     max_threads; /* CPU threads a target may use */
    const int  *threads_now; /* the CPU threads to use for the next run (the
                                governor changes it between tokens; read at
                                each run); NULL: max_threads */
    struct ks_profile *profile; /* where to add each op's time and bytes
                                   (scheduler/profile.h); NULL: off */
} ks_target_env;

/* A device kind's memory: what placement needs to fit ranges to it. */
typedef struct ks_target_memory {
    uint64_t *layer_bytes;  /* [n_layers], filled: weights, norms, biases and
                               the KV cache of env->n_ctx positions */
    uint64_t  head_bytes;   /* final norm, output matrix, logits */
    uint64_t  fixed_bytes;  /* activations and scratch of any range */
    uint64_t  avail_bytes;  /* what the device may hold */
    char      device[256];  /* its name */
} ks_target_memory;

/* A kind of target. Every member may be called from any thread and
 * touches no session state. */
typedef struct ks_target_kind {
    const char *name;
    /* NULL when this kind can run layers [l0, l1) (+ head) of the model
     * with env's settings, else why not, in words (an op, a quant type or
     * a head size without a kernel; an f32 KV cache). Cheap: opens no
     * device. The string is static or thread-local. */
    const char *(*supports)(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head);
    /* Optional. NULL when backend auto should weigh this kind, else why
     * not (no device; only a software device on these same cores). A
     * device asked for by number is never passed over. */
    const char *(*auto_skip)(const ks_target_env *env);
    /* Optional (NULL: memory does not limit this kind, as on the CPU).
     * KS_ERR_NO_DEVICE without a device. */
    ks_status (*memory)(const ks_target_env *env, ks_target_memory *out);
    /* Makes a target for [l0, l1) (+ head). *out is NULL on failure;
     * KS_ERR_DEVICE_OOM when its buffers do not fit. */
    ks_status (*create)(const ks_target_env *env, uint32_t l0, uint32_t l1, bool head,
                        ks_target **out);
} ks_target_kind;

/* Adds a kind to the process-wide registry (idempotent by name; up to 8
 * kinds). Thread safe. */
ks_status ks_target_register(const ks_target_kind *k);

/* The registered kind named |name|, or NULL. */
const ks_target_kind *ks_target_kind_find(const char *name);

/* All registered kinds: *n of them. */
const ks_target_kind *const *ks_target_kinds(uint32_t *n);

#endif
