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

/* Submits the recording and waits for it (the context's fence timeout,
 * then KS_ERR_DEVICE_LOST and ctx->lost). A lost context refuses. */
ks_status ks_vk_cmdbuf_run(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);

/* The two halves of ks_vk_cmdbuf_run: submit returns at once; wait blocks
 * until the submission is done (same timeout and loss handling). */
ks_status ks_vk_cmdbuf_submit(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);
ks_status ks_vk_cmdbuf_wait(ks_vk_ctx *ctx, ks_vk_cmdbuf *c);

/* Records a buffer-to-buffer copy of |n| bytes. */
void ks_vk_cmd_copy(VkCommandBuffer cb, const ks_vk_buffer *src, uint64_t src_off,
                    const ks_vk_buffer *dst, uint64_t dst_off, uint64_t n);

/* Makes shader and transfer writes before it visible to host reads after
 * the submission's fence. */
void ks_vk_cmd_host_barrier(VkCommandBuffer cb);

#endif
