/* Buffers and device memory. Each ks_vk_buffer owns one VkBuffer and one
 * allocation (sub-allocation comes later, with the weight arena). Before
 * allocating, the size is checked against a simulated budget
 * (KESTREL_VK_BUDGET_MB, for testing placement without a small GPU), the
 * heap's budget and the largest allocation the driver allows, so a model
 * that does not fit fails with KS_ERR_DEVICE_OOM naming the buffer rather
 * than deep inside the driver. Device-local buffers are filled and read
 * through two host-visible staging chunks kept by the context. */
#include "driver/vk.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"

#define KS_VK_STAGING_BYTES (4u << 20)

static double
mib(uint64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

/* Picks the memory type allowed by |bits| that has all |need| flags and the
 * most |want| flags, without |avoid| flags where possible. */
static int
pick_type(const VkPhysicalDeviceMemoryProperties *mp, uint32_t bits,
          VkMemoryPropertyFlags need, VkMemoryPropertyFlags want,
          VkMemoryPropertyFlags avoid)
{
    int best = -1, best_score = -1;

    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        int score;

        if (!(bits & (1u << i)) || (f & need) != need)
            continue;
        score = 2 * __builtin_popcount(f & want) + ((f & avoid) ? 0 : 1);
        if (score > best_score) {
            best = (int)i;
            best_score = score;
        }
    }
    return best;
}

ks_status
ks_vk_heap_budget(ks_vk_ctx *ctx, uint32_t heap, uint64_t *budget_bytes,
                  uint64_t *usage_bytes)
{
    if (heap >= ctx->mem_props.memoryHeapCount)
        return ks_error(KS_ERR_INVALID_ARG, "vk: heap %u does not exist (device has %u)",
                        heap, ctx->mem_props.memoryHeapCount);
    if (ctx->caps.memory_budget) {
        /* Values change with other processes' use: query every time. */
        VkPhysicalDeviceMemoryBudgetPropertiesEXT b = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT,
        };
        VkPhysicalDeviceMemoryProperties2 mp = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
            .pNext = &b,
        };
        vkGetPhysicalDeviceMemoryProperties2(ctx->phys, &mp);
        *budget_bytes = b.heapBudget[heap];
        *usage_bytes = b.heapUsage[heap];
    } else {
        *budget_bytes = ctx->mem_props.memoryHeaps[heap].size;
        *usage_bytes = ctx->heap_bytes[heap];
    }
    return KS_OK;
}

static ks_status
check_fits(ks_vk_ctx *ctx, const char *name, ks_vk_mem_kind kind, uint32_t heap,
           uint64_t size)
{
    uint64_t budget = 0, usage = 0, total;
    ks_status st;

    if (kind == KS_VK_MEM_DEVICE && ctx->budget_bytes) {
        if (!ks_add_size(ctx->device_bytes, size, &total) || total > ctx->budget_bytes)
            return ks_error(KS_ERR_DEVICE_OOM, "vk: buffer '%s' (%.1f MiB) does not fit "
                            "the simulated device memory budget: %.1f MiB of %.1f MiB "
                            "already in use (KESTREL_VK_BUDGET_MB)", name, mib(size),
                            mib(ctx->device_bytes), mib(ctx->budget_bytes));
    }
    if ((st = ks_vk_heap_budget(ctx, heap, &budget, &usage)) != KS_OK)
        return st;
    if (!ks_add_size(usage, size, &total) || total > budget)
        return ks_error(KS_ERR_DEVICE_OOM, "vk: buffer '%s' (%.1f MiB) does not fit "
                        "memory heap %u of %s: budget %.1f MiB, %.1f MiB in use", name,
                        mib(size), heap, ctx->info.name, mib(budget), mib(usage));
    if (ctx->info.max_allocation_bytes && size > ctx->info.max_allocation_bytes)
        return ks_error(KS_ERR_DEVICE_OOM, "vk: buffer '%s' (%.1f MiB) is larger than "
                        "the largest allocation %s allows (%.1f MiB)", name, mib(size),
                        ctx->info.name, mib(ctx->info.max_allocation_bytes));
    return KS_OK;
}

ks_status
ks_vk_buffer_init(ks_vk_ctx *ctx, const char *name, uint64_t size_bytes,
                  ks_vk_mem_kind kind, ks_vk_buffer *b)
{
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size_bytes,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkMemoryPropertyFlags need, want, avoid;
    VkMemoryRequirements req;
    int type;
    ks_status st;
    VkResult r;
    char what[128];

    memset(b, 0, sizeof(*b));
    snprintf(b->name, sizeof b->name, "%s", name ? name : "buffer");
    b->kind = kind;
    b->size_bytes = size_bytes;
    if (size_bytes == 0)
        return ks_error(KS_ERR_INVALID_ARG, "vk: buffer '%s': size must be > 0", b->name);
    switch (kind) {
    case KS_VK_MEM_DEVICE:
        /* Texel-buffer use: the matvec kernels read W and x through
         * texel buffer views (vk_matvec.c). */
        bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                    VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT;
        need = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
        want = 0;
        avoid = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;  /* VRAM proper on discrete GPUs */
        break;
    case KS_VK_MEM_UPLOAD:
        bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                    VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT;
        need = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
        want = 0;
        avoid = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
        break;
    case KS_VK_MEM_READBACK:
        bci.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
        need = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
        want = VK_MEMORY_PROPERTY_HOST_CACHED_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
        avoid = 0;
        break;
    default:
        return ks_error(KS_ERR_INVALID_ARG, "vk: buffer '%s': unknown memory kind %d",
                        b->name, (int)kind);
    }

    snprintf(what, sizeof what, "vkCreateBuffer '%s' (%" PRIu64 " bytes)", b->name,
             size_bytes);
    if ((st = ks_vk_check(vkCreateBuffer(ctx->device, &bci, NULL, &b->buffer), what)) != KS_OK)
        goto fail;
    vkGetBufferMemoryRequirements(ctx->device, b->buffer, &req);
    type = pick_type(&ctx->mem_props, req.memoryTypeBits, need, want, avoid);
    if (type < 0 && kind == KS_VK_MEM_DEVICE)  /* any memory will do */
        type = pick_type(&ctx->mem_props, req.memoryTypeBits, 0, 0, avoid);
    if (type < 0) {
        st = ks_error(KS_ERR_UNSUPPORTED, "vk: buffer '%s': %s has no memory type "
                      "with flags 0x%x for it", b->name, ctx->info.name, (unsigned)need);
        goto fail;
    }
    b->mem_type = (uint32_t)type;
    b->heap = ctx->mem_props.memoryTypes[type].heapIndex;
    b->coherent = (ctx->mem_props.memoryTypes[type].propertyFlags &
                   VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
    if ((st = check_fits(ctx, b->name, kind, b->heap, req.size)) != KS_OK)
        goto fail;

    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = b->mem_type,
    };
    r = vkAllocateMemory(ctx->device, &mai, NULL, &b->memory);
    if (r != VK_SUCCESS) {
        b->memory = VK_NULL_HANDLE;
        snprintf(what, sizeof what, "buffer '%s' (%.1f MiB): vkAllocateMemory", b->name,
                 mib(req.size));
        st = ks_vk_check(r, what);
        goto fail;
    }
    b->alloc_bytes = req.size;
    ctx->heap_bytes[b->heap] += req.size;
    if (kind == KS_VK_MEM_DEVICE)
        ctx->device_bytes += req.size;
    if ((st = ks_vk_check(vkBindBufferMemory(ctx->device, b->buffer, b->memory, 0),
                          "vkBindBufferMemory")) != KS_OK)
        goto fail;
    if (kind != KS_VK_MEM_DEVICE) {
        st = ks_vk_check(vkMapMemory(ctx->device, b->memory, 0, VK_WHOLE_SIZE, 0, &b->map),
                         "vkMapMemory");
        if (st != KS_OK)
            goto fail;
    }
    ks_log(KS_LOG_DEBUG, "vk", "buffer '%s': %" PRIu64 " bytes, type %u, heap %u",
           b->name, size_bytes, b->mem_type, b->heap);
    return KS_OK;
fail:
    ks_vk_buffer_fini(ctx, b);
    return st;
}

ks_status
ks_vk_buffer_import(ks_vk_ctx *ctx, const char *name, const void *host, uint64_t size_bytes,
                    ks_vk_buffer *b, uint64_t *offset)
{
    uint64_t align = ctx->info.host_import_align_bytes;
    uintptr_t p0, p1;
    PFN_vkGetMemoryHostPointerPropertiesEXT get_props;
    VkMemoryHostPointerPropertiesEXT hp = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT,
    };
    VkExternalMemoryBufferCreateInfo ebci = {
        .sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
        .handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
    };
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .pNext = &ebci,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkMemoryRequirements req;
    ks_status st;
    int type;

    memset(b, 0, sizeof(*b));
    *offset = 0;
    snprintf(b->name, sizeof b->name, "%s", name ? name : "buffer");
    b->kind = KS_VK_MEM_DEVICE;
    /* the range widened to the import alignment must stay inside the
     * pages of the caller's mapping: alignments up to a page only */
    if (!ctx->caps.external_memory_host || align == 0 || align > 4096 || size_bytes == 0)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: buffer '%s': %s cannot import host memory "
                        "(alignment %" PRIu64 ")", b->name, ctx->info.name, align);
    get_props = (PFN_vkGetMemoryHostPointerPropertiesEXT)vkGetDeviceProcAddr(
        ctx->device, "vkGetMemoryHostPointerPropertiesEXT");
    if (!get_props)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: no vkGetMemoryHostPointerPropertiesEXT");
    p0 = (uintptr_t)host & ~(uintptr_t)(align - 1);
    p1 = ((uintptr_t)host + size_bytes + align - 1) & ~(uintptr_t)(align - 1);
    b->size_bytes = p1 - p0;
    *offset = (uintptr_t)host - p0;
    if ((st = ks_vk_check(get_props(ctx->device,
                                    VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
                                    (void *)p0, &hp), "vkGetMemoryHostPointerPropertiesEXT")) != KS_OK)
        return st;
    bci.size = b->size_bytes;
    if ((st = ks_vk_check(vkCreateBuffer(ctx->device, &bci, NULL, &b->buffer),
                          "vkCreateBuffer (imported)")) != KS_OK)
        goto fail;
    vkGetBufferMemoryRequirements(ctx->device, b->buffer, &req);
    type = pick_type(&ctx->mem_props, req.memoryTypeBits & hp.memoryTypeBits, 0, 0, 0);
    if (type < 0 || req.size > b->size_bytes) {
        st = ks_error(KS_ERR_UNSUPPORTED, "vk: buffer '%s': no memory type for imported host "
                      "memory", b->name);
        goto fail;
    }
    b->mem_type = (uint32_t)type;
    b->heap = ctx->mem_props.memoryTypes[type].heapIndex;
    if ((st = check_fits(ctx, b->name, KS_VK_MEM_DEVICE, b->heap, b->size_bytes)) != KS_OK)
        goto fail;
    VkImportMemoryHostPointerInfoEXT imp = {
        .sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
        .handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
        .pHostPointer = (void *)p0,
    };
    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .pNext = &imp,
        .allocationSize = b->size_bytes,
        .memoryTypeIndex = b->mem_type,
    };
    if ((st = ks_vk_check(vkAllocateMemory(ctx->device, &mai, NULL, &b->memory),
                          "vkAllocateMemory (imported host memory)")) != KS_OK) {
        b->memory = VK_NULL_HANDLE;
        goto fail;
    }
    b->alloc_bytes = b->size_bytes;
    ctx->heap_bytes[b->heap] += b->alloc_bytes;
    ctx->device_bytes += b->alloc_bytes;
    if ((st = ks_vk_check(vkBindBufferMemory(ctx->device, b->buffer, b->memory, 0),
                          "vkBindBufferMemory (imported)")) != KS_OK)
        goto fail;
    ks_log(KS_LOG_DEBUG, "vk", "buffer '%s': %" PRIu64 " bytes imported from host memory "
           "(offset %" PRIu64 ")", b->name, b->size_bytes, *offset);
    return KS_OK;
fail:
    ks_vk_buffer_fini(ctx, b);
    *offset = 0;
    return st;
}

ks_status
ks_vk_buffer_view(ks_vk_ctx *ctx, const char *who, const ks_vk_buffer *b, VkFormat format,
                  uint32_t texel_bytes, VkBufferView *out)
{
    VkPhysicalDeviceProperties props;
    uint64_t texels = b->size_bytes / texel_bytes;

    vkGetPhysicalDeviceProperties(ctx->phys, &props);
    if (texels == 0)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s: buffer '%s' has %" PRIu64 " bytes, "
                        "less than one %u-byte texel", who, b->name, b->size_bytes,
                        texel_bytes);
    if (texels > props.limits.maxTexelBufferElements)
        return ks_error(KS_ERR_UNSUPPORTED, "vk: %s: buffer '%s' is %" PRIu64 " texels of "
                        "%u bytes, %s views at most %u", who, b->name, texels, texel_bytes,
                        ctx->info.name, props.limits.maxTexelBufferElements);
    VkBufferViewCreateInfo bv = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
        .buffer = b->buffer,
        .format = format,
        .offset = 0,
        .range = texels * texel_bytes,
    };
    return ks_vk_check(vkCreateBufferView(ctx->device, &bv, NULL, out), "vkCreateBufferView");
}

void
ks_vk_buffer_fini(ks_vk_ctx *ctx, ks_vk_buffer *b)
{
    if (!b)
        return;
    if (b->map)
        vkUnmapMemory(ctx->device, b->memory);
    if (b->buffer)
        vkDestroyBuffer(ctx->device, b->buffer, NULL);
    if (b->memory) {
        vkFreeMemory(ctx->device, b->memory, NULL);
        ctx->heap_bytes[b->heap] -= b->alloc_bytes;
        if (b->kind == KS_VK_MEM_DEVICE)
            ctx->device_bytes -= b->alloc_bytes;
    }
    memset(b, 0, sizeof(*b));
}

void
ks_vk_mem_ctx_fini(ks_vk_ctx *ctx)
{
    ks_vk_buffer_fini(ctx, ctx->staging_up);
    ks_vk_buffer_fini(ctx, ctx->staging_down);
    free(ctx->staging_up);
    free(ctx->staging_down);
    ctx->staging_up = ctx->staging_down = NULL;
}

static ks_status
staging(ks_vk_ctx *ctx, ks_vk_mem_kind kind, ks_vk_buffer **out)
{
    ks_vk_buffer **slot = kind == KS_VK_MEM_UPLOAD ? &ctx->staging_up : &ctx->staging_down;
    ks_vk_buffer *b;
    ks_status st;

    if (!*slot) {
        b = calloc(1, sizeof(*b));
        if (!b)
            return ks_error(KS_ERR_NOMEM, "vk: no memory for a staging buffer");
        st = ks_vk_buffer_init(ctx, kind == KS_VK_MEM_UPLOAD ? "staging-upload"
                                                             : "staging-readback",
                               KS_VK_STAGING_BYTES, kind, b);
        if (st != KS_OK) {
            free(b);
            return st;
        }
        *slot = b;
    }
    *out = *slot;
    return KS_OK;
}

static ks_status
check_range(const ks_vk_buffer *b, uint64_t offset, uint64_t size, const char *op)
{
    uint64_t end;

    if (!b->buffer)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s on a buffer that was never made", op);
    if (!ks_add_size(offset, size, &end) || end > b->size_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: %s of %" PRIu64 " bytes at offset %"
                        PRIu64 " overruns buffer '%s' of %" PRIu64 " bytes", op, size,
                        offset, b->name, b->size_bytes);
    return KS_OK;
}

static ks_status
flush_or_invalidate(ks_vk_ctx *ctx, const ks_vk_buffer *b, bool flush)
{
    VkMappedMemoryRange range = {
        .sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
        .memory = b->memory,
        .offset = 0,
        .size = VK_WHOLE_SIZE,
    };

    if (b->coherent)
        return KS_OK;
    if (flush)
        return ks_vk_check(vkFlushMappedMemoryRanges(ctx->device, 1, &range),
                           "vkFlushMappedMemoryRanges");
    return ks_vk_check(vkInvalidateMappedMemoryRanges(ctx->device, 1, &range),
                       "vkInvalidateMappedMemoryRanges");
}

ks_status
ks_vk_buffer_upload(ks_vk_ctx *ctx, ks_vk_buffer *dst, uint64_t offset,
                    const void *src, uint64_t size_bytes)
{
    const uint8_t *p = src;
    ks_vk_buffer *stage = NULL;
    ks_status st;

    if ((st = check_range(dst, offset, size_bytes, "upload")) != KS_OK)
        return st;
    if (dst->map) {
        memcpy((uint8_t *)dst->map + offset, src, size_bytes);
        return flush_or_invalidate(ctx, dst, true);
    }
    if ((st = staging(ctx, KS_VK_MEM_UPLOAD, &stage)) != KS_OK)
        return st;
    while (size_bytes > 0) {
        uint64_t n = size_bytes < stage->size_bytes ? size_bytes : stage->size_bytes;
        VkBufferCopy region = { .srcOffset = 0, .dstOffset = offset, .size = n };
        VkCommandBuffer cb;

        memcpy(stage->map, p, n);
        if ((st = flush_or_invalidate(ctx, stage, true)) != KS_OK)
            return st;
        if ((st = ks_vk_cmd_begin(ctx, &cb)) != KS_OK)
            return st;
        /* Earlier shader reads/writes of |dst| finish before the copy. */
        ks_vk_cmd_barrier(cb);
        vkCmdCopyBuffer(cb, stage->buffer, dst->buffer, 1, &region);
        ks_vk_cmd_barrier(cb);
        if ((st = ks_vk_cmd_submit(ctx)) != KS_OK)
            return st;
        p += n;
        offset += n;
        size_bytes -= n;
    }
    return KS_OK;
}

ks_status
ks_vk_buffer_download(ks_vk_ctx *ctx, const ks_vk_buffer *src, uint64_t offset,
                      void *dst, uint64_t size_bytes)
{
    uint8_t *p = dst;
    ks_vk_buffer *stage = NULL;
    ks_status st;
    VkMemoryBarrier to_host = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
    };

    if ((st = check_range(src, offset, size_bytes, "download")) != KS_OK)
        return st;
    if (src->map) {
        if ((st = flush_or_invalidate(ctx, src, false)) != KS_OK)
            return st;
        memcpy(dst, (const uint8_t *)src->map + offset, size_bytes);
        return KS_OK;
    }
    if ((st = staging(ctx, KS_VK_MEM_READBACK, &stage)) != KS_OK)
        return st;
    while (size_bytes > 0) {
        uint64_t n = size_bytes < stage->size_bytes ? size_bytes : stage->size_bytes;
        VkBufferCopy region = { .srcOffset = offset, .dstOffset = 0, .size = n };
        VkCommandBuffer cb;

        if ((st = ks_vk_cmd_begin(ctx, &cb)) != KS_OK)
            return st;
        ks_vk_cmd_barrier(cb);
        vkCmdCopyBuffer(cb, src->buffer, stage->buffer, 1, &region);
        /* Device writes become visible to the host only through a barrier
         * to the host stage; the fence alone is not enough. */
        vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                             0, 1, &to_host, 0, NULL, 0, NULL);
        if ((st = ks_vk_cmd_submit(ctx)) != KS_OK)
            return st;
        if ((st = flush_or_invalidate(ctx, stage, false)) != KS_OK)
            return st;
        memcpy(p, stage->map, n);
        p += n;
        offset += n;
        size_bytes -= n;
    }
    return KS_OK;
}
