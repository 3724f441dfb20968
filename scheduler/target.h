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
     * the session uses them to overlap targets on consecutive batches. */
    ks_status (*submit)(ks_target *t, const float *x, uint32_t n, uint32_t pos0,
                        bool want_logits);
    ks_status (*finish)(ks_target *t, float *x, float *logits);
} ks_target_ops;

struct ks_target {
    const ks_target_ops *ops;
    void    *impl;
    uint32_t l0, l1;     /* layers [l0, l1) */
    bool     head;
    char     kind[16];   /* "cpu", "vulkan" */
    char     desc[128];  /* for logs: "vulkan (llvmpipe) layers 10-29 + head" */
};

/* What a session offers a target kind when it makes one. */
typedef struct ks_target_env {
    const void *model;     /* const ks_model * */
    void       *session;   /* ks_session *, for the CPU kind */
    int32_t     device;    /* Vulkan device index, -1: best */
    uint32_t    n_ctx;
    uint32_t    n_batch;
} ks_target_env;

typedef struct ks_target_kind {
    const char *name;
    /* NULL when this kind can run the model here, else why not (words). */
    const char *(*unavailable)(const ks_target_env *env);
    /* Makes a target for [l0, l1) (+ head). *out is NULL on failure. */
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
