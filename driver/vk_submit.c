/* Replayable command buffers (see vk_submit.h). */
#include "driver/fault.h"
#include "driver/vk_submit.h"

#include <string.h>

#include "driver/base.h"

/* How long a submission may take before the device counts as hung: a
 * fixed 30 s, plus its work at 100 M multiply-adds a second, slower than
 * any device that runs Kestrel (lavapipe on one core does several G). A
 * 512-token prefill of a 1.5B model is allowed about 2 h; one decode step
 * of a 135M model about 31 s. */
#define FENCE_BASE_NS (30ull * 1000000000ull)
#define FENCE_MACS_PER_S 100000000ull

uint64_t
ks_vk_fence_timeout_ns(uint64_t work_macs)
{
    return FENCE_BASE_NS + work_macs / FENCE_MACS_PER_S * 1000000000ull;
}

ks_status
ks_vk_cmdbuf_init(ks_vk_ctx *ctx, ks_vk_cmdbuf *c)
{
    VkCommandBufferAllocateInfo cai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = ctx->cmd_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    ks_status st;

    memset(c, 0, sizeof(*c));
    st = ks_vk_check(vkAllocateCommandBuffers(ctx->device, &cai, &c->cb),
                     "vkAllocateCommandBuffers");
    if (st == KS_OK)
        st = ks_vk_check(vkCreateFence(ctx->device, &fci, NULL, &c->fence), "vkCreateFence");
    if (st != KS_OK)
        ks_vk_cmdbuf_fini(ctx, c);
    return st;
}

void
ks_vk_cmdbuf_fini(ks_vk_ctx *ctx, ks_vk_cmdbuf *c)
{
    if (c->fence)
        vkDestroyFence(ctx->device, c->fence, NULL);
    if (c->cb)
        vkFreeCommandBuffers(ctx->device, ctx->cmd_pool, 1, &c->cb);
    memset(c, 0, sizeof(*c));
}

ks_status
ks_vk_cmdbuf_begin(ks_vk_ctx *ctx, ks_vk_cmdbuf *c)
{
    VkCommandBufferBeginInfo bi = { .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO };

    (void)ctx;
    c->recorded = false;
    return ks_vk_check(vkBeginCommandBuffer(c->cb, &bi), "vkBeginCommandBuffer");
}

ks_status
ks_vk_cmdbuf_end(ks_vk_ctx *ctx, ks_vk_cmdbuf *c)
{
    ks_status st;

    (void)ctx;
    st = ks_vk_check(vkEndCommandBuffer(c->cb), "vkEndCommandBuffer");
    c->recorded = st == KS_OK;
    return st;
}

ks_status
ks_vk_cmdbuf_submit(ks_vk_ctx *ctx, ks_vk_cmdbuf *c)
{
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &c->cb,
    };
    ks_status st;
    VkResult r;

    if (ctx->lost)
        return ks_error(KS_ERR_DEVICE_LOST, "vk: device %s was lost earlier", ctx->info.name);
    if (ks_fault_hit("vk_submit_lost")) {
        ctx->lost = true;
        return ks_error(KS_ERR_DEVICE_LOST, "vk: device %s was lost at a queue submit "
                        "(injected: KESTREL_FAULT)", ctx->info.name);
    }
    if (!c->recorded)
        return ks_error(KS_ERR_INTERNAL, "vk: replay of a command buffer never recorded");
    if ((st = ks_vk_check(vkResetFences(ctx->device, 1, &c->fence), "vkResetFences")) != KS_OK)
        return st;
    r = vkQueueSubmit(ctx->queue, 1, &si, c->fence);
    if (r == VK_ERROR_DEVICE_LOST)
        ctx->lost = true;
    return ks_vk_check(r, "vkQueueSubmit");
}

/* A fence wait, or a timeout injected (KESTREL_FAULT=vk_fence_timeout)
 * when |inject| says the point applies. */
static VkResult
fence_wait(ks_vk_ctx *ctx, VkFence fence, uint64_t timeout_ns, bool inject)
{
    if (inject && ks_fault_hit("vk_fence_timeout"))
        return VK_TIMEOUT;
    return vkWaitForFences(ctx->device, 1, &fence, VK_TRUE, timeout_ns);
}

static ks_status
wait(ks_vk_ctx *ctx, VkFence fence, uint64_t timeout_ns, bool inject)
{
    VkResult r = fence_wait(ctx, fence, timeout_ns, inject);
    uint64_t waited_ns = timeout_ns;

    /* A software device runs on the same cores as everything else: a
     * loaded machine can slow it far below its usual pace without
     * anything being wrong. It gets a second, longer wait before the
     * device counts as lost; a real GPU does not. */
    if (r == VK_TIMEOUT && ctx->info.type == KS_VK_TYPE_CPU) {
        uint64_t more_ns = KS_VK_SECOND_WAIT_FACTOR * timeout_ns;
        ks_log(KS_LOG_WARN, "vk", "%s (a software device) has not finished a submission "
               "after %llu s; the machine may be busy, waiting %llu s more", ctx->info.name,
               (unsigned long long)(timeout_ns / 1000000000ull),
               (unsigned long long)(more_ns / 1000000000ull));
        r = fence_wait(ctx, fence, more_ns, inject);
        waited_ns += more_ns;
    }
    if (r == VK_TIMEOUT) {
        ctx->lost = true;
        return ks_error(KS_ERR_DEVICE_LOST, "vk: device %s did not finish a submission "
                        "within %llu s; treating it as lost", ctx->info.name,
                        (unsigned long long)(waited_ns / 1000000000ull));
    }
    if (r == VK_ERROR_DEVICE_LOST)
        ctx->lost = true;
    return ks_vk_check(r, "vkWaitForFences");
}

ks_status
ks_vk_fence_wait(ks_vk_ctx *ctx, VkFence fence, uint64_t timeout_ns)
{
    return wait(ctx, fence, timeout_ns, false);
}

ks_status
ks_vk_cmdbuf_wait(ks_vk_ctx *ctx, ks_vk_cmdbuf *c)
{
    return wait(ctx, c->fence, ks_vk_fence_timeout_ns(c->work_macs), true);
}

ks_status
ks_vk_cmdbuf_run(ks_vk_ctx *ctx, ks_vk_cmdbuf *c)
{
    ks_status st = ks_vk_cmdbuf_submit(ctx, c);

    return st == KS_OK ? ks_vk_cmdbuf_wait(ctx, c) : st;
}

void
ks_vk_cmd_copy(VkCommandBuffer cb, const ks_vk_buffer *src, uint64_t src_off,
               const ks_vk_buffer *dst, uint64_t dst_off, uint64_t n)
{
    VkBufferCopy r = { .srcOffset = src_off, .dstOffset = dst_off, .size = n };

    vkCmdCopyBuffer(cb, src->buffer, dst->buffer, 1, &r);
}

void
ks_vk_cmd_host_barrier(VkCommandBuffer cb)
{
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
    };

    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
}
