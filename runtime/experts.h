/* Expert placement under a memory budget (ks_model_params.mem_budget_bytes):
 * the hot experts of a mixture of experts are copied into RAM the runtime
 * owns (locked with mlock where allowed), the cold ones are read from the
 * mapped file and their pages dropped after each use, so they really come
 * from storage. The store counts each expert's uses, re-plans when the
 * counts drift (at most KS_XSTORE_MOVES_PER_MIN moves a minute) and reads
 * ahead the experts that the next layer's router is predicted to choose.
 * One store per model, shared by its sessions. Internal. */
#ifndef KS_EXPERTS_H
#define KS_EXPERTS_H

#include <stdint.h>

#include "kestrel/model.h"
#include "kestrel/status.h"

struct ks_model;

/* Moves (an evicted resident expert, a cold one copied in) per minute at
 * most; also the most one re-plan may make after a quiet minute. */
#define KS_XSTORE_MOVES_PER_MIN 4

typedef struct ks_xstore ks_xstore;

/* Where expert |e| of a layer is read from during ks_xstore_begin/end:
 * its gate, up and down matrices (resident copy or the mapping). */
typedef struct ks_xptr {
    const uint8_t *gate, *up, *down;
} ks_xptr;

/* A store for |m| (a mixture of experts) under |budget_bytes| for all its
 * weights: the bytes outside the experts stay mapped and count first, the
 * rest holds whole experts. KS_ERR_INVALID_ARG when the budget is below
 * the weights outside the experts (both named in MiB). A budget that
 * holds every expert makes a store that only counts. */
ks_status ks_xstore_create(const struct ks_model *m, uint64_t budget_bytes,
                           ks_xstore **out);
void      ks_xstore_destroy(ks_xstore *xs);   /* NULL is a no-op */

/* Layer |il| is about to use the |n| distinct experts ids[i], uses[i]
 * choices each, for a batch of |n_tok| tokens: counts them, copies a
 * cold one into a free slot, re-plans when a second has passed since the
 * last check, and fills ptr[i]. The pointers stay valid (no slot moves)
 * until ks_xstore_end, which then drops the cold experts' pages. Thread
 * safe; the two calls bracket the layer on one thread. */
void ks_xstore_begin(ks_xstore *xs, uint32_t il, const uint32_t *ids,
                     const uint32_t *uses, uint32_t n, uint32_t n_tok, ks_xptr *ptr);
void ks_xstore_end(ks_xstore *xs, uint32_t il, const uint32_t *ids, uint32_t n);

/* Layer |il|'s router is predicted to choose the |n| experts ids[] next:
 * the cold ones are read ahead (madvise WILLNEED), and ks_xstore_begin
 * on |il| scores the prediction. */
void ks_xstore_prefetch(ks_xstore *xs, uint32_t il, const uint32_t *ids, uint32_t n);

/* One re-plan at |now_ns| (on the store's clock): moves while a cold
 * expert's count clearly beats the coldest resident one's and the rate
 * limit allows. Returns the moves made. Thread safe. */
uint32_t ks_xstore_replan(ks_xstore *xs, uint64_t now_ns);

/* Tests: the clock that begin's re-plans read (NULL: CLOCK_MONOTONIC). */
void ks_xstore_set_clock(ks_xstore *xs, uint64_t (*now_ns)(void *), void *ctx);

void ks_xstore_stats(const ks_xstore *xs, ks_expert_stats *out);

/* Count-then-fill of layer |il|'s resident experts in increasing order;
 * returns how many there are (ids may be NULL). */
uint32_t ks_xstore_resident(const ks_xstore *xs, uint32_t il, uint32_t *ids,
                            uint32_t cap);

#endif
