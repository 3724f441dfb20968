/* Command buffers recorded once and replayed: a layer range's work for
 * one batch size is recorded at set-up, then submitted again for every
 * token, the values that change (position, inputs) living in buffers the
 * host rewrites between submissions. Threading as for the context.
 * Internal; not installed. */
#ifndef KS_VK_SUBMIT_H
#define KS_VK_SUBMIT_H

#include <stdbool.h>
#include <stdint.h>

#include "driver/vk.h"

typedef struct ks_vk_cmdbuf {
    VkCommandBuffer cb;
    VkFence         fence;
    bool            recorded;
    uint64_t        work_macs;  /* multiply-adds a replay costs, about: the
                                   fence timeout grows with it (0: none) */
} ks_vk_cmdbuf;

/* Allocates the command buffer and its fence (from the context's pool).
 * *c is zeroed on failure. */
ks_status ks_vk_cmdbuf_init(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);
void      ks_vk_cmdbuf_fini(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);  /* zeroed: no-op */

/* Starts a (re-)recording; the previous one is dropped. */
ks_status ks_vk_cmdbuf_begin(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);
ks_status ks_vk_cmdbuf_end(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);

/* Submits the recording and waits for it (ks_vk_fence_timeout_ns of its
 * work_macs, as ks_vk_fence_wait), then KS_ERR_DEVICE_LOST and ctx->lost).
 * A lost context refuses. Each of the (one or two) waits is a count of
 * fault point vk_fence_timeout. */
ks_status ks_vk_cmdbuf_run(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);

/* The two halves of ks_vk_cmdbuf_run: submit returns at once; wait blocks
 * until the submission is done (same timeout and loss handling). */
ks_status ks_vk_cmdbuf_submit(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);
ks_status ks_vk_cmdbuf_wait(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);

/* How long a submission of |work_macs| multiply-adds may take before its
 * device counts as hung: a fixed 30 s plus the work at a pace slower than
 * any device that runs Kestrel. */
uint64_t ks_vk_fence_timeout_ns(uint64_t work_macs);

/* A software device (KS_VK_TYPE_CPU) that times out gets a second wait
 * this many times longer before it counts as lost. */
#define KS_VK_SECOND_WAIT_FACTOR 4u

/* Waits for |fence| up to |timeout_ns| (a software device: then a second,
 * KS_VK_SECOND_WAIT_FACTOR times longer wait). A timeout after that, or
 * VK_ERROR_DEVICE_LOST, sets ctx->lost and returns KS_ERR_DEVICE_LOST. */
ks_status ks_vk_fence_wait(ks_vk_ctx *ctx, VkFence fence, uint64_t timeout_ns);

/* Records a buffer-to-buffer copy of |n| bytes. */
void ks_vk_cmd_copy(VkCommandBuffer cb, const ks_vk_buffer *src, uint64_t src_off,
                    const ks_vk_buffer *dst, uint64_t dst_off, uint64_t n);

/* Makes shader and transfer writes before it visible to host reads after
 * the submission's fence. */
void ks_vk_cmd_host_barrier(VkCommandBuffer cb);

#endif
