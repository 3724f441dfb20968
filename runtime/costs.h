/* The cost model behind automatic placement: decode milliseconds per
 * token for one layer and for the head, on the CPU and on the Vulkan
 * device, measured the first time a model meets a device (a few timed
 * single-token runs of one layer on each side) and kept in
 * <cache dir>/costs.tsv, keyed by model, size, layer count, thread count
 * and device. Internal. */
#ifndef KS_COSTS_H
#define KS_COSTS_H

#include "runtime/session_priv.h"
#include "scheduler/placement.h"

/* Fills |plan| with ks_place_auto's choice for |s|'s model on the CPU and
 * the runtime's Vulkan device, from cached or fresh costs, and logs the
 * decision with its figures. KS_ERR_NO_DEVICE / UNSUPPORTED when there is
 * nothing to weigh. */
ks_status ks_costs_place(ks_session *s, ks_plan *plan);

/* Bytes a Vulkan range of |s|'s model needs per layer (weights, norms,
 * biases and the KV cache of the session's context; layer_bytes has
 * n_layers entries) and for the head (output weights, norm, logits). */
void ks_costs_gpu_bytes(const ks_session *s, uint64_t *layer_bytes, uint64_t *head_bytes);

#endif
