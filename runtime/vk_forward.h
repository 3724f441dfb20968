/* The transformer on a Vulkan device: a range of layers [l0, l1) and,
 * optionally, the head (final norm and logits), compiled into fused
 * kernels (the templates in shaders/) and recorded into command buffers that are
 * replayed for every batch of the same size.
 *
 * The hidden state enters and leaves through host memory, so a range can
 * follow or precede one on another target; a run of the whole model on
 * one device moves only the token embeddings in and the logits out.
 * Numerics follow the CPU backend (see shaders/common/actq.glsl and
 * attn.comp), so greedy tokens agree with it. Built only with Vulkan and
 * glslang. Internal. */
#ifndef KS_VK_FORWARD_H
#define KS_VK_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kestrel/status.h"
#include "runtime/model_priv.h"

typedef struct ks_vk_fw ks_vk_fw;

typedef struct ks_vk_fw_params {
    int32_t  device;      /* -1: the best device */
    uint32_t l0, l1;      /* layers [l0, l1) */
    bool     head;        /* also the final norm and logits (l1 = n_layers) */
    uint32_t n_ctx;
    uint32_t n_batch;     /* most tokens per run */
    struct ks_profile *profile; /* the session's op profile (bench --profile):
                                   timestamps go there too; NULL: off unless
                                   KESTREL_PROFILE=1 */
} ks_vk_fw_params;

typedef struct ks_vk_fw_info {
    char     device[256];     /* device name */
    uint64_t weight_bytes;    /* copied to the device */
    uint64_t imported_bytes;  /* read in place from the mapped file */
    uint64_t kv_bytes;
    uint32_t n_shader_hits;   /* SPIR-V found in the disk cache */
    uint32_t n_shader_compiled;
    double   setup_ms;        /* device, upload, kernels */
    uint32_t n_submits;       /* queue submissions of the latest run */
    uint64_t submit_macs;     /* the largest one's work (multiply-adds) */
} ks_vk_fw_info;

/* Why the model cannot run on Vulkan in this build or on this device
 * (quant type without a kernel, head size, ...): KS_OK when it can.
 * Cheap; does not touch a device. */
ks_status ks_vk_fw_supports(const ks_model *m);

/* NULL when backend auto should try Vulkan with device |device| (-1: the
 * best), else why not in words ("no Vulkan device", "the only Vulkan
 * device is llvmpipe, a software renderer on these same CPU cores"). A
 * device forced by number is never passed over. */
const char *ks_vk_auto_skip_reason(int32_t device);

/* Opens the device, uploads the range's weights, makes the KV cache and
 * the kernels. Errors: KS_ERR_NO_DEVICE, KS_ERR_UNSUPPORTED, KS_ERR_DEVICE_OOM
 * (a buffer that does not fit the device or the simulated budget, named),
 * and the compiler's and Vulkan's. */
ks_status ks_vk_fw_create(const ks_model *m, const ks_vk_fw_params *p, ks_vk_fw **out);
void      ks_vk_fw_destroy(ks_vk_fw *f);  /* NULL ok */

/* Runs tokens at positions pos0..pos0+n-1 through the range. |x| holds n
 * rows of n_embd floats: the hidden state entering layer l0 (the scaled
 * embeddings when l0 = 0). Without the head, |x| receives the state
 * leaving layer l1-1; with it, |logits| receives the last token's logits
 * (when want_logits; x is then left as it was). */
ks_status ks_vk_fw_run(ks_vk_fw *f, float *x, uint32_t n, uint32_t pos0, bool want_logits,
                       float *logits);

/* ks_vk_fw_run in two halves, so the caller can work while the device
 * does: submit copies |x| and returns; finish waits and delivers x or
 * the logits as run does. One run in flight at a time. */
ks_status ks_vk_fw_submit(ks_vk_fw *f, const float *x, uint32_t n, uint32_t pos0,
                          bool want_logits);
ks_status ks_vk_fw_finish(ks_vk_fw *f, float *x, float *logits);

void ks_vk_fw_info_get(const ks_vk_fw *f, ks_vk_fw_info *out);

/* One dispatch of a profiled run: device time between timestamps written
 * before and after it (vkCmdWriteTimestamp), and the bytes it reads and
 * writes, about (weights, activations, KV cache). */
typedef struct ks_vk_fw_prof_rec {
    const char *op;     /* "attn norm", "q", "k", "v", "rope", "attn", "quant",
                           "o", "ffn norm", "gate", "up", "glu", "down", "end norm",
                           "head norm", "head" (static strings) */
    int32_t     layer;  /* -1: the head */
    uint32_t    n_tok;  /* tokens the dispatch works on */
    uint64_t    bytes;
    uint64_t    ns;
} ks_vk_fw_prof_rec;

/* The dispatches of the latest finished run, in order, when profiling is
 * on (KESTREL_PROFILE=1 when the range was created): *recs is borrowed
 * until the next run or the destroy; *n = 0 when profiling is off or
 * nothing ran. With KESTREL_PROFILE=1, destroy also prints a table to
 * stderr: time, bytes, GB/s and share per op kind and per layer, prefill
 * and decode apart. */
void ks_vk_fw_profile(const ks_vk_fw *f, const ks_vk_fw_prof_rec **recs, uint32_t *n);

/* The device a target with |device| (-1: best) would open: its name and
 * the bytes it may hold (the largest device-local heap's budget, or
 * KESTREL_VK_BUDGET_MB when set). KS_ERR_NO_DEVICE without one. */
ks_status ks_vk_fw_device(int32_t device, char *name, size_t name_size,
                          uint64_t *budget_bytes);

/* Device memory for activations and scratch of any range, at n_batch. */
uint64_t ks_vk_fw_fixed_bytes(const ks_model *m, uint32_t n_batch);

/* The Vulkan device as a target kind (scheduler/target.h). This file is
 * built only with Vulkan and glslang; runtime/targets.c registers it. */
struct ks_target_kind;
extern const struct ks_target_kind ks_vk_target_kind;

#endif
