/* A session's state: the tokens it holds, its targets (which own the
 * weights' placement, the KV cache and scratch of their layers), the
 * hidden state passed between them, the governor. forward.c runs the held
 * tokens through the targets; session.c is the public API around it. */
#ifndef KS_SESSION_PRIV_H
#define KS_SESSION_PRIV_H

#include <stdint.h>

#include "kestrel/session.h"
#include "runtime/model_priv.h"
#include "scheduler/governor.h"

struct ks_telemetry;
struct ks_governor;
struct ks_trace;
struct ks_target;

struct ks_session {
    ks_model   *m;
    int         n_threads;   /* CPU threads for the next run */
    uint32_t    n_ctx;
    uint32_t    n_batch;
    ks_kv_type  kv_type;
    uint32_t    n_layers;    /* layers run, [0, n_layers), then the head
                                (ks_session_params.n_layers) */

    /* The tokens the session holds (session.h: the contract). The
     * targets hold keys and values for the first n_kv of them; the rest
     * (a token generate emitted last, a prompt a cancel or a fault cut
     * short) run at the next call. */
    uint32_t    n_past;
    uint32_t    n_kv;          /* <= n_past */
    int32_t    *hist;          /* [n_ctx] token ids */
    uint8_t    *batch_start;   /* [n_ctx] 1 where a forward batch began, so a
                                  replay on another target runs the same
                                  batches and so the same arithmetic */
    bool        logits_ok;     /* s->logits belong to hist[n_past - 1] */
    bool        check_layers;  /* KESTREL_CHECK=1: each CPU layer's output is
                                  checked for NaN and Inf */

    /* The hidden state handed from range to range, and the logits of
     * the last token of a run. */
    float      *x;           /* [n_batch][n_embd] */
    float      *logits;      /* [n_vocab] */

    ks_stats    stats;

    /* The governor, when one runs (see ks_runtime_params). */
    struct ks_telemetry *tel;
    struct ks_governor  *gov;
    struct ks_trace     *trace;
    struct ks_profile   *profile;  /* ks_session_params.profile; NULL: off */
    int                  max_threads;  /* the CPU threads a target may use */
    /* ks_thermal_headroom_notify: the callback, its threshold and
     * horizon, and which side of the threshold was last seen (-1: none). */
    ks_headroom_fn       headroom_fn;
    void                *headroom_user;
    double               headroom_threshold;
    double               headroom_forecast_s;
    int                  headroom_side;

    /* Where the layers run: targets in layer order (scheduler/target.h),
     * as the placement chose them. */
    struct ks_target    *targets[8];
    uint32_t             n_targets;
    char                 plan[160];   /* ks_plan_format of the placement */
    uint32_t             placement_gen;  /* changes whenever layers move */
    uint64_t             last_move_ns;   /* the governor's last move */
    uint64_t             gpu_busy_seen;  /* device busy time already told
                                            to the governor */
};

/* The CPU as a target kind (cpu_target.c). */
struct ks_target_kind;
extern const struct ks_target_kind ks_cpu_target_kind;

/* Registers the kinds this build has (runtime/targets.c). Idempotent. */
void ks_targets_register_builtin(void);

/* Runs the held tokens the targets lack, hist[n_kv..n_past), in batches
 * of n_batch, so that n_kv = n_past and s->logits are the last token's
 * (logits_ok). With a CPU range followed by a device range the batches
 * are pipelined: the device runs batch k while the CPU runs its layers of
 * batch k + 1 (the same arithmetic, so the same result). Between batches
 * it stops with KS_ERR_CANCELLED when *cancel reads non-zero (cancel may
 * be NULL); n_kv then counts the batches that finished. A device fault
 * (KS_ERR_DEVICE_LOST) moves every layer to the CPU, which replays the
 * held tokens in their original batches, and the run goes on there. */
ks_status ks_forward_sync(ks_session *s, const volatile int *cancel);

/* As ks_forward_sync, and the logits of every held token at position
 * >= |first| (n_kv <= first < n_past) go to out[(pos - first) * n_vocab]
 * (the last also to s->logits). KS_ERR_UNSUPPORTED when the target with
 * the head can give only the last token's logits (ops->run_logits NULL)
 * and more than one is wanted of one batch. */
ks_status ks_forward_sync_all(ks_session *s, uint32_t first, float *out,
                              const volatile int *cancel);

/* After a device fault (|why|, the target's message): drops every target
 * and puts all layers on the CPU, says so once on stderr and in the
 * stats. The caller replays the held tokens. */
ks_status ks_session_fall_back(ks_session *s, const char *why);

/* Runs the held tokens the targets hold, hist[0..n_kv), again on the
 * targets now in place, in the batches they first ran in. */
ks_status ks_forward_replay(ks_session *s);

/* Moves one step of layers (a quarter of them, at least one) across the
 * boundary of a CPU range followed by a device range, toward the device
 * or the CPU as |place| (scheduler/governor.h) says, and replays the held
 * tokens so the moved layers have their KV cache. KS_ERR_UNSUPPORTED
 * when the placement has another shape or nothing can move that way; a
 * device that refuses the new range keeps the old placement. */
ks_status ks_session_move(ks_session *s, ks_gov_place place);

/* ks_session_generate with p->early_exit > 0 (early_exit.c), after the
 * stats were reset. */
ks_status ks_early_exit_generate(ks_session *s, ks_generate_params *p);

#endif
