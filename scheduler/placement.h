/* Placement of layer ranges on execution targets: the manual forms
 * (--split, --gpu-layers) and the automatic one, which picks the split
 * with the least estimated time per token within the device's memory.
 * Plain data in, plain data out; the session measures the costs (cost
 * model in runtime/, calibrated on first use and cached on disk).
 * Internal; not installed. */
#ifndef KS_PLACEMENT_H
#define KS_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"

enum { KS_PLAN_MAX = 8 };

typedef struct ks_range {
    char     kind[16];  /* a target kind: "cpu", "vulkan" */
    uint32_t l0, l1;    /* layers [l0, l1) */
    bool     head;      /* the final norm and logits too */
} ks_range;

typedef struct ks_plan {
    ks_range r[KS_PLAN_MAX];
    uint32_t n;
} ks_plan;

/* Parses an explicit map "KIND:A-B,KIND:C-D,..." (inclusive layer
 * numbers; "KIND:A" for one layer). The ranges must cover layers
 * 0..n_layers-1 in order without gaps or overlaps; the head goes with the
 * last layer. KS_ERR_INVALID_ARG names what is wrong. */
ks_status ks_place_parse_split(const char *text, uint32_t n_layers, ks_plan *out);

/* The last |n_gpu| layers on "vulkan" (as llama.cpp's -ngl offloads the
 * final ones), the rest on "cpu"; the head follows the last layer.
 * n_gpu above n_layers counts as n_layers. */
void ks_place_gpu_layers(uint32_t n_layers, uint32_t n_gpu, ks_plan *out);

/* What the automatic placement weighs: decode milliseconds per token for
 * one layer and for the head on each side, the cost of handing the hidden
 * state across, and the device's memory. */
typedef struct ks_place_cost {
    double          cpu_layer_ms;
    double          gpu_layer_ms;
    double          cpu_head_ms;
    double          gpu_head_ms;
    double          hop_ms;       /* one hand-over between targets */
    bool            gpu_ok;       /* a GPU target exists and takes the model */
    uint64_t        gpu_budget;   /* bytes the device may hold */
    const uint64_t *layer_bytes;  /* [n_layers]: weights + KV cache per layer */
    uint64_t        head_bytes;   /* output weights and buffers */
    uint64_t        fixed_bytes;  /* activations and scratch of any GPU range */
} ks_place_cost;

/* The plan with the least estimated time per token: a suffix of layers
 * [k, n) on "vulkan" (with the head) and the rest on "cpu", k chosen over
 * every value whose GPU part fits gpu_budget. *est_ms (NULL ok) gets the
 * estimate. */
void ks_place_auto(uint32_t n_layers, const ks_place_cost *c, ks_plan *out, double *est_ms);

/* "cpu:0-9,vulkan:10-29+head" into |buf|. */
void ks_plan_format(const ks_plan *p, char *buf, size_t size);

#endif
