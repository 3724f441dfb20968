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
 * a device of kind |dev| (its memory member is required), from cached or
 * fresh costs, and logs the decision with its figures. */
ks_status ks_costs_place(ks_session *s, const struct ks_target_kind *dev, ks_plan *plan);

#endif
