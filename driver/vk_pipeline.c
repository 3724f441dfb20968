/* Compute pipelines: SPIR-V in, a pipeline with its descriptor-set layout
 * (N storage or texel buffers at set 0), push-constant range, specialization
 * constants (workgroup and tile sizes) and a small descriptor pool out.
 * Pipelines are made through the context's VkPipelineCache, which is
 * loaded from and saved to a file the caller names, so a second start
 * compiles nothing. ks_vk_dispatch records, submits and waits for one
 * dispatch; the runtime records its own command buffers with
 * ks_vk_cmd_dispatch. */
#include "driver/vk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/base.h"
#include "driver/fault.h"

#define SPIRV_MAGIC 0x07230203u

static bool
is_texel(VkDescriptorType t)
{
    return t == VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER ||
           t == VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER;
}

static const char *
type_str(VkDescriptorType t)
{
    switch (t) {
    case VK_DESCRIPTOR_TYPE_STORAGE_BUFFER: return "storage buffer";
    case VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER: return "uniform texel buffer";
    case VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER: return "storage texel buffer";
    default: return "unsupported descriptor type";
    }
}

/* The driver's compile of |pl| from its module: the slow part on
 * lavapipe, safe to run on several threads at once (the pipeline cache is
 * internally synchronised). */
static ks_status
pipeline_build(ks_vk_ctx *ctx, ks_vk_pipeline *pl, const ks_vk_pipeline_params *p)
{
    VkSpecializationMapEntry entries[KS_VK_MAX_SPEC];
    ks_status st;

    if (p->n_spec > KS_VK_MAX_SPEC)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': %u spec constants, at most "
                        "%d", pl->name, p->n_spec, KS_VK_MAX_SPEC);
    for (uint32_t i = 0; i < p->n_spec; i++)
        entries[i] = (VkSpecializationMapEntry){
            .constantID = i, .offset = i * 4u, .size = 4,
        };
    VkSpecializationInfo spec = {
        .mapEntryCount = p->n_spec,
        .pMapEntries = entries,
        .dataSize = p->n_spec * 4u,
        .pData = p->spec,
    };
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rss = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO,
        .requiredSubgroupSize = p->required_subgroup_size,
    };
    VkComputePipelineCreateInfo cpci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .pNext = p->required_subgroup_size ? &rss : NULL,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = pl->module,
            .pName = "main",
            .pSpecializationInfo = p->n_spec ? &spec : NULL,
        },
        .layout = pl->layout,
    };
    uint64_t t0 = ks_now_ns();
    /* KESTREL_FAULT=vk_pipeline_unknown@N: the driver's VK_ERROR_UNKNOWN,
     * as a broken cache entry can provoke. */
    VkResult r = ks_fault_hit("vk_pipeline_unknown")
                     ? VK_ERROR_UNKNOWN
                     : vkCreateComputePipelines(ctx->device, ctx->pipeline_cache, 1, &cpci,
                                                NULL, &pl->pipeline);
    if ((st = ks_vk_check(r, "vkCreateComputePipelines")) != KS_OK) {
        pl->pipeline = VK_NULL_HANDLE;
        return st;
    }
    ks_log(KS_LOG_DEBUG, "vk", "pipeline '%s': %zu words, %u buffers, %u push bytes, "
           "%.2f ms%s", pl->name, p->n_words, p->n_buffers, p->push_bytes,
           (double)(ks_now_ns() - t0) / 1e6, ctx->pipeline_cache ? " (cached path)" : "");
    return KS_OK;
}

/* Everything of a pipeline but the driver's compile when |shell_only|. */
static ks_status
pipeline_make(ks_vk_ctx *ctx, const ks_vk_pipeline_params *p, bool shell_only,
              ks_vk_pipeline **out)
{
    VkDescriptorSetLayoutBinding *bindings = NULL;
    ks_vk_pipeline *pl;
    const char *name = p->name ? p->name : "pipeline";
    ks_status st;

    *out = NULL;
    if (!p->spirv || p->n_words < 5 || p->spirv[0] != SPIRV_MAGIC)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': not SPIR-V (%zu words, "
                        "magic 0x%08x, expected 0x%08x)", name, p->n_words,
                        p->spirv && p->n_words ? p->spirv[0] : 0, SPIRV_MAGIC);
    if (p->push_bytes % 4 || p->push_bytes > ctx->info.max_push_constants_bytes)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': push constants of %u "
                        "bytes (need a multiple of 4, at most %u on %s)", name,
                        p->push_bytes, ctx->info.max_push_constants_bytes, ctx->info.name);
    if (p->n_spec && !p->spec)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': %u spec constants "
                        "without values", name, p->n_spec);
    if (p->n_spec > KS_VK_MAX_SPEC)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': %u spec constants, at "
                        "most %d", name, p->n_spec, KS_VK_MAX_SPEC);
    if (p->n_buffers > KS_VK_MAX_BINDINGS)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': %u bindings, at most %u",
                        name, p->n_buffers, KS_VK_MAX_BINDINGS);
    for (uint32_t i = 0; p->types && i < p->n_buffers; i++)
        if (p->types[i] != VK_DESCRIPTOR_TYPE_STORAGE_BUFFER && !is_texel(p->types[i]))
            return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': binding %u has "
                            "descriptor type %d (expected a storage or texel buffer)",
                            name, i, (int)p->types[i]);
    if (p->required_subgroup_size &&
        (!ctx->caps.subgroup_size_control ||
         p->required_subgroup_size < ctx->info.subgroup_min ||
         p->required_subgroup_size > ctx->info.subgroup_max))
        return ks_error(KS_ERR_UNSUPPORTED, "vk: pipeline '%s': subgroup size %u "
                        "required, %s offers %u..%u%s", name, p->required_subgroup_size,
                        ctx->info.name, ctx->info.subgroup_min, ctx->info.subgroup_max,
                        ctx->caps.subgroup_size_control ? "" : " without size control");

    pl = calloc(1, sizeof(*pl));
    if (!pl)
        return ks_error(KS_ERR_NOMEM, "vk: no memory for pipeline '%s'", name);
    snprintf(pl->name, sizeof pl->name, "%s", name);
    pl->n_buffers = p->n_buffers;
    for (uint32_t i = 0; i < p->n_buffers; i++)
        pl->types[i] = p->types ? p->types[i] : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    pl->push_bytes = p->push_bytes;
    pl->max_sets = p->max_sets ? p->max_sets : 8;

    VkShaderModuleCreateInfo smci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = p->n_words * sizeof(uint32_t),
        .pCode = p->spirv,
    };
    if ((st = ks_vk_check(vkCreateShaderModule(ctx->device, &smci, NULL, &pl->module),
                          "vkCreateShaderModule")) != KS_OK)
        goto fail;

    if (p->n_buffers) {
        bindings = calloc(p->n_buffers, sizeof(*bindings));
        if (!bindings) {
            st = ks_error(KS_ERR_NOMEM, "vk: no memory for %u bindings", p->n_buffers);
            goto fail;
        }
    }
    for (uint32_t i = 0; i < p->n_buffers; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = pl->types[i],
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo dslci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = p->n_buffers,
        .pBindings = bindings,
    };
    if ((st = ks_vk_check(vkCreateDescriptorSetLayout(ctx->device, &dslci, NULL,
                                                      &pl->set_layout),
                          "vkCreateDescriptorSetLayout")) != KS_OK)
        goto fail;

    VkPushConstantRange pcr = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = p->push_bytes,
    };
    VkPipelineLayoutCreateInfo plci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &pl->set_layout,
        .pushConstantRangeCount = p->push_bytes ? 1 : 0,
        .pPushConstantRanges = p->push_bytes ? &pcr : NULL,
    };
    if ((st = ks_vk_check(vkCreatePipelineLayout(ctx->device, &plci, NULL, &pl->layout),
                          "vkCreatePipelineLayout")) != KS_OK)
        goto fail;

    if (p->n_buffers) {
        /* One pool size per descriptor type the layout uses. */
        static const VkDescriptorType kinds[] = {
            VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
            VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER,
        };
        VkDescriptorPoolSize ps[3];
        uint32_t n_ps = 0;

        for (uint32_t k = 0; k < 3; k++) {
            uint32_t n = 0;
            for (uint32_t i = 0; i < p->n_buffers; i++)
                n += pl->types[i] == kinds[k];
            if (n)
                ps[n_ps++] = (VkDescriptorPoolSize){
                    .type = kinds[k], .descriptorCount = n * pl->max_sets,
                };
        }
        VkDescriptorPoolCreateInfo dpci = {
            .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
            .maxSets = pl->max_sets,
            .poolSizeCount = n_ps,
            .pPoolSizes = ps,
        };
        if ((st = ks_vk_check(vkCreateDescriptorPool(ctx->device, &dpci, NULL, &pl->pool),
                              "vkCreateDescriptorPool")) != KS_OK)
            goto fail;
    }
    if (!shell_only && (st = pipeline_build(ctx, pl, p)) != KS_OK)
        goto fail;
    free(bindings);
    *out = pl;
    return KS_OK;
fail:
    free(bindings);
    ks_vk_pipeline_destroy(ctx, pl);
    return st;
}

ks_status
ks_vk_pipeline_create(ks_vk_ctx *ctx, const ks_vk_pipeline_params *p,
                      ks_vk_pipeline **out)
{
    return pipeline_make(ctx, p, false, out);
}

ks_status
ks_vk_pipeline_shell(ks_vk_ctx *ctx, const ks_vk_pipeline_params *p, ks_vk_pipeline **out)
{
    return pipeline_make(ctx, p, true, out);
}

ks_status
ks_vk_pipeline_build(ks_vk_ctx *ctx, ks_vk_pipeline *pl, const ks_vk_pipeline_params *p)
{
    return pipeline_build(ctx, pl, p);
}

ks_status
ks_vk_pipeline_remodule(ks_vk_ctx *ctx, ks_vk_pipeline *pl, const uint32_t *spirv,
                        size_t n_words)
{
    VkShaderModuleCreateInfo smci = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = n_words * sizeof(uint32_t),
        .pCode = spirv,
    };

    if (!spirv || n_words < 5 || spirv[0] != SPIRV_MAGIC)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': not SPIR-V", pl->name);
    if (pl->module)
        vkDestroyShaderModule(ctx->device, pl->module, NULL);
    pl->module = VK_NULL_HANDLE;
    return ks_vk_check(vkCreateShaderModule(ctx->device, &smci, NULL, &pl->module),
                       "vkCreateShaderModule");
}

void
ks_vk_pipeline_destroy(ks_vk_ctx *ctx, ks_vk_pipeline *pl)
{
    if (!pl)
        return;
    if (pl->pool)
        vkDestroyDescriptorPool(ctx->device, pl->pool, NULL);
    if (pl->pipeline)
        vkDestroyPipeline(ctx->device, pl->pipeline, NULL);
    if (pl->layout)
        vkDestroyPipelineLayout(ctx->device, pl->layout, NULL);
    if (pl->set_layout)
        vkDestroyDescriptorSetLayout(ctx->device, pl->set_layout, NULL);
    if (pl->module)
        vkDestroyShaderModule(ctx->device, pl->module, NULL);
    free(pl);
}

ks_status
ks_vk_pipeline_set_views(ks_vk_ctx *ctx, ks_vk_pipeline *pl, const ks_vk_buffer *const *bufs,
                         const VkBufferView *views, uint32_t n, VkDescriptorSet *out)
{
    VkDescriptorBufferInfo infos[KS_VK_MAX_BINDINGS];
    VkWriteDescriptorSet writes[KS_VK_MAX_BINDINGS];
    ks_status st;

    *out = VK_NULL_HANDLE;
    if (n != pl->n_buffers || n > KS_VK_MAX_BINDINGS)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s' binds %u buffers, "
                        "%u given", pl->name, pl->n_buffers, n);
    if (n == 0)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s' has no buffers to bind",
                        pl->name);
    if (pl->n_sets >= pl->max_sets)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s' has handed out all its "
                        "%u descriptor sets (raise max_sets)", pl->name, pl->max_sets);
    for (uint32_t i = 0; i < n; i++) {
        if (is_texel(pl->types[i])) {
            if (!views || !views[i])
                return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': binding %u is a "
                                "%s and has no buffer view%s", pl->name, i,
                                type_str(pl->types[i]),
                                views ? "" : " (use ks_vk_pipeline_set_views)");
            continue;
        }
        if (!bufs || !bufs[i] || !bufs[i]->buffer)
            return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': binding %u has no "
                            "buffer", pl->name, i);
        if (bufs[i]->size_bytes > ctx->info.max_storage_buffer_range)
            return ks_error(KS_ERR_UNSUPPORTED, "vk: pipeline '%s': buffer '%s' (%"
                            PRIu64 " bytes) exceeds maxStorageBufferRange (%" PRIu64
                            ") of %s", pl->name, bufs[i]->name, bufs[i]->size_bytes,
                            ctx->info.max_storage_buffer_range, ctx->info.name);
    }
    VkDescriptorSetAllocateInfo dsai = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = pl->pool,
        .descriptorSetCount = 1,
        .pSetLayouts = &pl->set_layout,
    };
    if ((st = ks_vk_check(vkAllocateDescriptorSets(ctx->device, &dsai, out),
                          "vkAllocateDescriptorSets")) != KS_OK) {
        *out = VK_NULL_HANDLE;
        return st;
    }
    pl->n_sets++;
    for (uint32_t i = 0; i < n; i++) {
        bool texel = is_texel(pl->types[i]);

        if (!texel)
            infos[i] = (VkDescriptorBufferInfo){
                .buffer = bufs[i]->buffer, .offset = 0, .range = VK_WHOLE_SIZE,
            };
        writes[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = *out,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = pl->types[i],
            .pBufferInfo = texel ? NULL : &infos[i],
            .pTexelBufferView = texel ? &views[i] : NULL,
        };
    }
    vkUpdateDescriptorSets(ctx->device, n, writes, 0, NULL);
    return KS_OK;
}

ks_status
ks_vk_pipeline_set(ks_vk_ctx *ctx, ks_vk_pipeline *pl, const ks_vk_buffer *const *bufs,
                   uint32_t n, VkDescriptorSet *out)
{
    return ks_vk_pipeline_set_views(ctx, pl, bufs, NULL, n, out);
}

void
ks_vk_cmd_dispatch(VkCommandBuffer cb, const ks_vk_pipeline *pl, VkDescriptorSet set,
                   const void *push, uint32_t gx, uint32_t gy, uint32_t gz)
{
    vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl->pipeline);
    if (set)
        vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pl->layout, 0, 1,
                                &set, 0, NULL);
    if (pl->push_bytes && push)
        vkCmdPushConstants(cb, pl->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                           pl->push_bytes, push);
    vkCmdDispatch(cb, gx, gy, gz);
}

ks_status
ks_vk_dispatch(ks_vk_ctx *ctx, const ks_vk_pipeline *pl, VkDescriptorSet set,
               const void *push, uint32_t gx, uint32_t gy, uint32_t gz)
{
    const uint32_t g[3] = { gx, gy, gz };
    VkMemoryBarrier to_host = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
    };
    VkCommandBuffer cb;
    ks_status st;

    for (int i = 0; i < 3; i++)
        if (g[i] == 0 || g[i] > ctx->info.max_wg_count[i])
            return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s': %u workgroups in "
                            "dimension %d (1..%u allowed on %s)", pl->name, g[i], i,
                            ctx->info.max_wg_count[i], ctx->info.name);
    if (pl->n_buffers && !set)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s' needs a descriptor set",
                        pl->name);
    if (pl->push_bytes && !push)
        return ks_error(KS_ERR_INVALID_ARG, "vk: pipeline '%s' needs %u bytes of push "
                        "constants", pl->name, pl->push_bytes);
    if ((st = ks_vk_cmd_begin(ctx, &cb)) != KS_OK)
        return st;
    ks_vk_cmd_barrier(cb);
    ks_vk_cmd_dispatch(cb, pl, set, push, gx, gy, gz);
    ks_vk_cmd_barrier(cb);
    /* Results in mapped buffers are read by the host next. */
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                         0, 1, &to_host, 0, NULL, 0, NULL);
    return ks_vk_cmd_submit(ctx);
}

/* ---- Pipeline cache --------------------------------------------------- */

/* VkPipelineCacheHeaderVersionOne: length, version, vendor, device, UUID. */
static bool
header_matches(const ks_vk_ctx *ctx, const uint8_t *data, size_t size, const char *path)
{
    uint32_t f[4];

    if (size < 16 + VK_UUID_SIZE) {
        ks_log(KS_LOG_DEBUG, "vk", "pipeline cache %s: %zu bytes, too short for a "
               "header; starting empty", path, size);
        return false;
    }
    memcpy(f, data, sizeof f);
    if (f[0] < 16 + VK_UUID_SIZE || f[0] > size ||
        f[1] != VK_PIPELINE_CACHE_HEADER_VERSION_ONE) {
        ks_log(KS_LOG_DEBUG, "vk", "pipeline cache %s: bad header (length %u, version "
               "%u); starting empty", path, f[0], f[1]);
        return false;
    }
    if (f[2] != ctx->info.vendor_id || f[3] != ctx->info.device_id ||
        memcmp(data + 16, ctx->info.pipeline_cache_uuid, VK_UUID_SIZE) != 0) {
        ks_log(KS_LOG_DEBUG, "vk", "pipeline cache %s: made by another device or "
               "driver (vendor 0x%x device 0x%x); starting empty", path, f[2], f[3]);
        return false;
    }
    return true;
}

/* The file's bytes, or none (*out NULL) when it is absent or not a regular
 * file (a FIFO there would block a plain read forever: ks_file_read opens
 * it without blocking and refuses it, and the next save replaces it). */
static ks_status
read_whole(const char *path, uint8_t **out, size_t *size)
{
    /* Far beyond any pipeline cache of ours; a larger file is not one. */
    const size_t max_bytes = (size_t)1 << 30;
    char *data;
    ks_status st;

    *out = NULL;
    *size = 0;
    st = ks_file_read(path, max_bytes, &data, size);
    if (st == KS_OK) {
        *out = (uint8_t *)data;
        return KS_OK;
    }
    if (st == KS_ERR_UNSUPPORTED || st == KS_ERR_CORRUPT) {
        ks_log(KS_LOG_WARN, "vk", "pipeline cache %s; ignored, starting empty",
               ks_last_error());
        return KS_OK;
    }
    if (st == KS_ERR_IO && errno == ENOENT)
        return KS_OK;
    char why[512];
    snprintf(why, sizeof why, "%s", ks_last_error());
    return ks_error(st, "vk: pipeline cache: %s", why);
}

ks_status
ks_vk_pipeline_cache_load(ks_vk_ctx *ctx, const char *path)
{
    uint8_t *data = NULL;
    size_t size = 0;
    VkPipelineCache loaded = VK_NULL_HANDLE;
    ks_status st;

    if ((st = read_whole(path, &data, &size)) != KS_OK)
        return st;
    VkPipelineCacheCreateInfo ci = { .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO };
    if (data && header_matches(ctx, data, size, path)) {
        ci.initialDataSize = size;
        ci.pInitialData = data;
    } else if (!data) {
        ks_log(KS_LOG_DEBUG, "vk", "pipeline cache %s: absent; starting empty", path);
    }
    st = ks_vk_check(vkCreatePipelineCache(ctx->device, &ci, NULL, &loaded),
                     "vkCreatePipelineCache");
    free(data);
    if (st != KS_OK)
        return st;
    ks_log(KS_LOG_DEBUG, "vk", "pipeline cache %s: %zu bytes loaded", path,
           (size_t)ci.initialDataSize);
    if (!ctx->pipeline_cache) {
        ctx->pipeline_cache = loaded;
        return KS_OK;
    }
    st = ks_vk_check(vkMergePipelineCaches(ctx->device, ctx->pipeline_cache, 1, &loaded),
                     "vkMergePipelineCaches");
    vkDestroyPipelineCache(ctx->device, loaded, NULL);
    return st;
}

static atomic_uint tmp_serial;

ks_status
ks_vk_pipeline_cache_save(ks_vk_ctx *ctx, const char *path)
{
    size_t size = 0;
    uint8_t *data = NULL;
    char tmp[4096];
    FILE *f;
    ks_status st;
    VkResult r;

    if (!ctx->pipeline_cache)
        return ks_error(KS_ERR_INVALID_ARG, "vk: no pipeline cache to save to %s "
                        "(call ks_vk_pipeline_cache_load first)", path);
    if ((st = ks_vk_check(vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &size,
                                                 NULL), "vkGetPipelineCacheData")) != KS_OK)
        return st;
    data = malloc(size ? size : 1);
    if (!data)
        return ks_error(KS_ERR_NOMEM, "vk: no memory for %zu bytes of pipeline cache", size);
    r = vkGetPipelineCacheData(ctx->device, ctx->pipeline_cache, &size, data);
    if ((st = ks_vk_check(r, "vkGetPipelineCacheData")) != KS_OK)
        goto out;
    /* pid and a counter: two contexts of one process may save at once. */
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&tmp_serial, 1u)) >= (int)sizeof tmp) {
        st = ks_error(KS_ERR_INVALID_ARG, "vk: pipeline cache path too long: %s", path);
        goto out;
    }
    f = fopen(tmp, "wb");
    if (!f) {
        st = ks_error(KS_ERR_IO, "vk: cannot write pipeline cache %s: %s", tmp,
                      strerror(errno));
        goto out;
    }
    bool written = fwrite(data, 1, size, f) == size;
    if (fclose(f) != 0 || !written) {
        remove(tmp);
        st = ks_error(KS_ERR_IO, "vk: cannot write pipeline cache %s", tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st = ks_error(KS_ERR_IO, "vk: cannot rename %s to %s: %s", tmp, path,
                      strerror(errno));
        remove(tmp);
        goto out;
    }
    ks_log(KS_LOG_DEBUG, "vk", "pipeline cache %s: %zu bytes saved", path, size);
out:
    free(data);
    return st;
}
