/* The Vulkan driver layer: instance and device (vk_device.c), buffers and
 * memory budgets (vk_mem.c), compute pipelines and dispatch (vk_pipeline.c),
 * the run-time GLSL compiler (vk_compile.c) and the disk cache of SPIR-V
 * and pipelines (vk_cache.c).
 *
 * Only built when meson finds Vulkan (KS_HAVE_VULKAN); the compiler also
 * needs glslang (KS_HAVE_GLSLANG). Nothing here knows about transformers.
 *
 * Threading: a ks_vk_ctx and everything made from it is used by one thread
 * at a time (the caller serialises); ks_vk_devices_list, ks_vk_compile and
 * the pure helpers are thread safe. Internal; not installed. */
#ifndef KS_VK_H
#define KS_VK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vulkan/vulkan.h>

#include "driver/drm.h"
#include "kestrel/status.h"

/* ---- VkResult translation (the one place) ---------------------------- */

/* KS_OK for VK_SUCCESS and the other non-negative codes. Otherwise sets the
 * error message "vk: <what>: VK_ERROR_..." and returns the status:
 * VK_ERROR_DEVICE_LOST -> KS_ERR_DEVICE_LOST, VK_ERROR_OUT_OF_DEVICE_MEMORY
 * -> KS_ERR_DEVICE_OOM, VK_ERROR_OUT_OF_HOST_MEMORY -> KS_ERR_NOMEM,
 * VK_ERROR_INCOMPATIBLE_DRIVER / INITIALIZATION_FAILED -> KS_ERR_NO_DEVICE,
 * VK_ERROR_{LAYER,EXTENSION,FEATURE,FORMAT}_NOT_* -> KS_ERR_UNSUPPORTED,
 * anything else -> KS_ERR_INTERNAL. */
ks_status ks_vk_check(VkResult r, const char *what);
ks_status ks_vk_status_of(VkResult r);  /* the mapping alone, no message */
const char *ks_vk_result_str(VkResult r);

/* ---- Feature mask (KESTREL_VK_MASK) ---------------------------------- */

/* Features to pretend the device lacks, so kernel code picks its fallback
 * variants on a device that has them. Zero = mask nothing. */
typedef struct ks_vk_mask {
    bool     no8bit;    /* no 8-bit storage, no int8 arithmetic */
    bool     no16bit;   /* no 16-bit storage, no int16 arithmetic */
    bool     nofp16;    /* no float16 arithmetic */
    bool     nointdot;  /* no integer dot product */
    bool     nofp64;    /* no float64 arithmetic */
    uint32_t subgroup;  /* 0: device's; else the subgroup size kernels assume */
} ks_vk_mask;

/* Parses a comma list "no8bit,no16bit,nofp16,nointdot,nofp64,subgroup=N" (spaces
 * around items allowed, NULL or "" = nothing masked). An unknown item or a
 * subgroup size that is not a power of two in 1..256 gives
 * KS_ERR_INVALID_ARG naming the item; *out is zeroed then. */
ks_status ks_vk_mask_parse(const char *text, ks_vk_mask *out);

/* Writes the canonical text ("none" or "no8bit,subgroup=16"). */
void ks_vk_mask_format(const ks_vk_mask *m, char *buf, size_t size);

/* ---- Physical devices ------------------------------------------------ */

typedef enum ks_vk_type {
    KS_VK_TYPE_OTHER = 0,
    KS_VK_TYPE_DISCRETE,
    KS_VK_TYPE_INTEGRATED,
    KS_VK_TYPE_VIRTUAL,
    KS_VK_TYPE_CPU,
} ks_vk_type;

const char *ks_vk_type_str(ks_vk_type t);  /* "discrete", ..., "cpu", "other" */

typedef struct ks_vk_heap_info {
    uint64_t size_bytes;
    uint64_t budget_bytes;  /* VK_EXT_memory_budget; 0 without it */
    uint64_t usage_bytes;   /* this process's use; 0 without it */
    bool     device_local;
} ks_vk_heap_info;

#define KS_VK_MAX_QUEUE_FAMILIES 16

typedef struct ks_vk_queue_family_info {
    uint32_t     family;    /* index for vkGetDeviceQueue */
    uint32_t     n_queues;
    VkQueueFlags flags;     /* always has VK_QUEUE_COMPUTE_BIT */
} ks_vk_queue_family_info;

/* Everything Kestrel wants to know about a physical device. Plain data:
 * copy it freely. Booleans say what the device supports, before any mask. */
typedef struct ks_vk_device_info {
    uint32_t   index;          /* in vkEnumeratePhysicalDevices order */
    char       name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
    ks_vk_type type;
    uint32_t   vendor_id;
    uint32_t   device_id;
    uint32_t   api_version;    /* VK_MAKE_API_VERSION form */
    uint32_t   driver_version; /* raw; see ks_vk_driver_version_str */
    uint32_t   driver_id;      /* VkDriverId, 0 if unknown */
    char       driver_name[VK_MAX_DRIVER_NAME_SIZE];  /* "llvmpipe", "NVIDIA" */
    char       driver_info[VK_MAX_DRIVER_INFO_SIZE];  /* "Mesa 22.3.6 (LLVM 15.0.6)" */
    uint8_t    device_uuid[VK_UUID_SIZE];
    uint8_t    driver_uuid[VK_UUID_SIZE];
    uint8_t    pipeline_cache_uuid[VK_UUID_SIZE];
    bool       usable;         /* false: below Vulkan 1.1 or no compute queue */

    bool        has_drm_ext;   /* VK_EXT_physical_device_drm */
    bool        has_pci_ext;   /* VK_EXT_pci_bus_info */
    ks_drm_key  drm_key;       /* what those extensions said */
    ks_drm_node drm;           /* libdrm's match; drm.found false if none */

    bool            has_memory_budget;  /* VK_EXT_memory_budget */
    uint32_t        n_heaps;
    ks_vk_heap_info heaps[VK_MAX_MEMORY_HEAPS];

    uint32_t subgroup_size;         /* VkPhysicalDeviceSubgroupProperties */
    bool     subgroup_in_compute;   /* subgroup ops usable in compute shaders */
    uint32_t subgroup_ops;          /* VkSubgroupFeatureFlags */
    bool     subgroup_size_control; /* feature, with compute in required stages */
    uint32_t subgroup_min;          /* == subgroup_size without size control */
    uint32_t subgroup_max;

    bool storage_8bit;     /* storageBuffer8BitAccess */
    bool storage_16bit;    /* storageBuffer16BitAccess */
    bool float16;          /* shaderFloat16 */
    bool int8;             /* shaderInt8 */
    bool int16;            /* shaderInt16 */
    bool int64;            /* shaderInt64 */
    bool float64;          /* shaderFloat64 */
    bool int_dot;          /* shaderIntegerDotProduct */
    bool int_dot_accel;    /* 4x8-bit packed signed dot product is native */
    bool timeline_semaphore;
    bool external_memory_host;        /* VK_EXT_external_memory_host */
    uint64_t host_import_align_bytes; /* minImportedHostPointerAlignment */

    uint64_t max_storage_buffer_range;
    uint64_t max_allocation_bytes;    /* maxMemoryAllocationSize */
    uint32_t max_shared_bytes;        /* maxComputeSharedMemorySize */
    uint32_t max_push_constants_bytes;
    uint32_t max_wg_invocations;
    uint32_t max_wg_size[3];
    uint32_t max_wg_count[3];

    uint32_t                n_queue_families;  /* compute-capable ones only */
    ks_vk_queue_family_info queue_families[KS_VK_MAX_QUEUE_FAMILIES];
} ks_vk_device_info;

/* Count-then-fill. With out == NULL, *n receives the number of physical
 * devices; otherwise at most *n records are filled and *n receives the
 * number filled. Creates and destroys its own instance (with validation
 * when KESTREL_VALIDATE=1). No loader/ICD or zero devices: *n = 0 and
 * KS_ERR_NO_DEVICE with a message saying which. Thread safe. */
ks_status ks_vk_devices_list(ks_vk_device_info *out, uint32_t *n);

/* Picks a device: the usable one with the best type (discrete > integrated
 * > virtual > cpu > other, first wins a tie), or |forced| when >= 0.
 * KS_ERR_NO_DEVICE when nothing is usable or |forced| is out of range;
 * KS_ERR_UNSUPPORTED when the forced device is not usable. */
ks_status ks_vk_device_choose(const ks_vk_device_info *devs, uint32_t n,
                              int32_t forced, uint32_t *out);

/* "0.0.1", or NVIDIA's 4-part form; |buf| gets at most |size| bytes. */
void ks_vk_driver_version_str(const ks_vk_device_info *d, char *buf, size_t size);

/* ---- Context: instance + device + one compute queue ------------------ */

typedef struct ks_vk_buffer ks_vk_buffer;

/* What the kernels may use: device support, minus the mask, as enabled
 * on the logical device. */
typedef struct ks_vk_caps {
    bool     storage_8bit;
    bool     storage_16bit;
    bool     float16;
    bool     int8;
    bool     int16;
    bool     int_dot;
    bool     float64;
    bool     subgroup_size_control;
    bool     timeline_semaphore;
    bool     external_memory_host;
    bool     memory_budget;
    uint32_t subgroup_size;  /* the mask's subgroup=N, else the device's */
} ks_vk_caps;

typedef struct ks_vk_ctx_params {
    bool        force_device;  /* false: ks_vk_device_choose's pick */
    uint32_t    device_index;  /* with force_device */
    bool        validate;      /* also on when KESTREL_VALIDATE=1 */
    const char *mask;          /* NULL: KESTREL_VK_MASK */
    uint64_t    budget_bytes;  /* simulated device-memory budget;
                                * 0: KESTREL_VK_BUDGET_MB, else none */
} ks_vk_ctx_params;

typedef struct ks_vk_ctx {
    VkInstance               instance;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice         phys;
    VkDevice                 device;
    uint32_t                 api_version;   /* min(instance, device) */
    VkQueue                  queue;
    uint32_t                 queue_family;
    bool                     queue_compute_only;  /* no graphics bit */

    ks_vk_device_info                info;
    VkPhysicalDeviceMemoryProperties mem_props;
    ks_vk_mask                       mask;
    ks_vk_caps                       caps;

    bool        validation;     /* the Khronos layer is active */
    atomic_uint n_validation;   /* validation messages seen so far */

    /* One reusable command buffer for synchronous work (vk_mem, vk_pipeline). */
    VkCommandPool   cmd_pool;
    VkCommandBuffer cmd;
    VkFence         fence;
    bool            cmd_open;
    bool            lost;       /* a submit reported VK_ERROR_DEVICE_LOST */

    VkPipelineCache pipeline_cache;  /* loaded from the cache dir at create;
                                      * VK_NULL_HANDLE with caching off,
                                      * until ks_vk_pipeline_cache_load */
    struct ks_vk_matvec_cache *matvec_cache;  /* vk_matvec.c, made on first use */
    struct ks_vk_exact_cache *exact_cache;    /* vk_exact.c, made on first use */

    /* Disk cache (vk_cache.c): the directory ks_vk_cache_dir chose when the
     * context was made (malloc'd; NULL: caching off), and what
     * ks_vk_shader_get did. A rebuilt entry counts as compiled too. */
    char    *cache_dir;
    bool     cache_warned;
    /* Pipelines whose driver compile waits for ks_vk_pipelines_finish
     * (between ks_vk_pipelines_defer and finish; vk_cache.c). */
    bool                   defer;
    struct ks_vk_deferred *deferred;   /* [n_deferred], malloc'd */
    uint32_t               n_deferred, cap_deferred;       /* the unwritable-dir warning was given */
    uint32_t n_shader_hits;      /* SPIR-V read from the disk cache */
    uint32_t n_shader_compiled;  /* SPIR-V compiled by glslang */
    uint32_t n_shader_rebuilt;   /* of those, replacing a corrupt or stale file */

    /* Memory accounting (vk_mem.c). */
    uint64_t      budget_bytes;   /* simulated budget on device buffers, 0: none */
    uint64_t      device_bytes;   /* bytes of KS_VK_MEM_DEVICE buffers alive */
    uint64_t      heap_bytes[VK_MAX_MEMORY_HEAPS];  /* our allocations per heap */
    ks_vk_buffer *staging_up;     /* lazily made host-visible chunks */
    ks_vk_buffer *staging_down;
} ks_vk_ctx;

/* Creates instance, device and queue. The queue comes from a compute-only
 * family when there is one, else from the first compute-capable family.
 * Errors: KS_ERR_NO_DEVICE (no loader/ICD/device), KS_ERR_INVALID_ARG (bad
 * mask or budget text, named), KS_ERR_UNSUPPORTED, KS_ERR_DEVICE_OOM,
 * KS_ERR_NOMEM. On failure *out is NULL. */
ks_status ks_vk_ctx_create(const ks_vk_ctx_params *p, ks_vk_ctx **out);

/* The simulated device budget KESTREL_VK_BUDGET_MB asks for (MiB, a
 * decimal number such as 2.5), in bytes; 0 when unset.
 * KS_ERR_INVALID_ARG names a value that is not a number. */
ks_status ks_vk_budget_from_env(uint64_t *out);

/* Waits for the device to go idle, releases everything; NULL is a no-op.
 * Objects the caller made from |ctx| must be destroyed first. */
void ks_vk_ctx_destroy(ks_vk_ctx *ctx);

/* Validation messages (warnings and errors) this context has seen. */
unsigned ks_vk_ctx_validation_count(const ks_vk_ctx *ctx);

/* Validation messages of every instance in this process so far, including
 * those reported while a context or a device listing was torn down. */
unsigned ks_vk_validation_total(void);

/* Synchronous command recording on ctx->cmd: begin resets and begins it,
 * submit ends, submits and waits on the fence (120 s, then
 * KS_ERR_DEVICE_LOST). abort drops a recording after an error. */
ks_status ks_vk_cmd_begin(ks_vk_ctx *ctx, VkCommandBuffer *out);
ks_status ks_vk_cmd_submit(ks_vk_ctx *ctx);
void      ks_vk_cmd_abort(ks_vk_ctx *ctx);

/* Makes shader and transfer writes recorded before it visible to shader
 * and transfer reads and writes after it (also across submissions). */
void ks_vk_cmd_barrier(VkCommandBuffer cb);

/* ---- Buffers and memory (vk_mem.c) ----------------------------------- */

typedef enum ks_vk_mem_kind {
    KS_VK_MEM_DEVICE = 0,  /* device-local storage buffer, filled through staging */
    KS_VK_MEM_UPLOAD,      /* host-visible, coherent, mapped: CPU writes */
    KS_VK_MEM_READBACK,    /* host-visible, cached if possible, mapped: CPU reads */
} ks_vk_mem_kind;

struct ks_vk_buffer {
    VkBuffer       buffer;
    VkDeviceMemory memory;
    uint64_t       size_bytes;
    uint64_t       alloc_bytes;  /* what vkAllocateMemory took */
    ks_vk_mem_kind kind;
    uint32_t       mem_type;
    uint32_t       heap;
    bool           coherent;
    void          *map;          /* UPLOAD and READBACK only */
    char           name[64];
};

/* Makes a storage buffer of |size_bytes| (> 0) named |name| for messages.
 * Checks, in order: the simulated budget (DEVICE buffers only), the heap's
 * budget (VK_EXT_memory_budget, else heap size minus our allocations),
 * maxMemoryAllocationSize; each failure is KS_ERR_DEVICE_OOM with a message
 * naming the buffer, its size and what it did not fit. *b is zeroed on
 * failure. */
ks_status ks_vk_buffer_init(ks_vk_ctx *ctx, const char *name, uint64_t size_bytes,
                            ks_vk_mem_kind kind, ks_vk_buffer *b);
void      ks_vk_buffer_fini(ks_vk_ctx *ctx, ks_vk_buffer *b);  /* zeroed: no-op */

/* A texel view of the whole |texel_bytes|-byte texels of |b| in |format|
 * (the kernels read weights and activations through them). |who| names
 * the kernel in messages. KS_ERR_INVALID_ARG for less than one texel,
 * KS_ERR_UNSUPPORTED beyond maxTexelBufferElements. */
ks_status ks_vk_buffer_view(ks_vk_ctx *ctx, const char *who, const ks_vk_buffer *b,
                            VkFormat format, uint32_t texel_bytes, VkBufferView *out);

/* A storage/texel buffer over existing host memory (|host|, |size_bytes|
 * bytes, read-only use) without a copy, through VK_EXT_external_memory_host:
 * the range is widened to the device's import alignment (at most a page,
 * so it stays inside the caller's mapped pages), and *offset gets where
 * |host| sits in the buffer. Counts as a device buffer for the budgets.
 * The memory must outlive the buffer. KS_ERR_UNSUPPORTED without the
 * extension or a usable memory type; *b zeroed on failure. */
ks_status ks_vk_buffer_import(ks_vk_ctx *ctx, const char *name, const void *host,
                              uint64_t size_bytes, ks_vk_buffer *b, uint64_t *offset);

/* Host -> buffer and buffer -> host, synchronous. DEVICE buffers go
 * through the context's staging chunks (several submits for large sizes);
 * mapped buffers are copied directly. Ranges are checked. */
ks_status ks_vk_buffer_upload(ks_vk_ctx *ctx, ks_vk_buffer *dst, uint64_t offset,
                              const void *src, uint64_t size_bytes);
ks_status ks_vk_buffer_download(ks_vk_ctx *ctx, const ks_vk_buffer *src,
                                uint64_t offset, void *dst, uint64_t size_bytes);

/* This process's budget and usage of |heap| right now. Without
 * VK_EXT_memory_budget: budget = heap size, usage = our own allocations. */
ks_status ks_vk_heap_budget(ks_vk_ctx *ctx, uint32_t heap, uint64_t *budget_bytes,
                            uint64_t *usage_bytes);

/* For ks_vk_ctx_destroy only: frees the context's staging buffers. */
void ks_vk_mem_ctx_fini(ks_vk_ctx *ctx);

/* For ks_vk_ctx_destroy only: frees the matvec kernels (vk_matvec.c). */
void ks_vk_matvec_ctx_fini(ks_vk_ctx *ctx);

/* For ks_vk_ctx_destroy only: frees the exact kernels (vk_exact.c). */
void ks_vk_exact_ctx_fini(ks_vk_ctx *ctx);

/* For ks_vk_ctx_create only: picks the cache directory and loads the
 * pipeline cache from it (vk_cache.c). Never fails the context: a cache
 * that cannot be read gives a log line and an empty pipeline cache. */
void ks_vk_cache_ctx_init(ks_vk_ctx *ctx);

/* For ks_vk_ctx_destroy only, before the pipeline cache is destroyed:
 * saves it (when caching is on) and frees the directory name. */
void ks_vk_cache_ctx_fini(ks_vk_ctx *ctx);

/* ---- Pipelines and dispatch (vk_pipeline.c) -------------------------- */

/* Bindings a pipeline may have at set 0. */
#define KS_VK_MAX_BINDINGS 32u
#define KS_VK_MAX_SPEC 8      /* specialization constants per pipeline */

typedef struct ks_vk_pipeline_params {
    const char     *name;         /* for messages */
    const uint32_t *spirv;
    size_t          n_words;
    uint32_t        n_buffers;    /* bindings at set 0: 0..n-1, at most
                                   * KS_VK_MAX_BINDINGS */
    const VkDescriptorType *types;  /* n_buffers entries, one per binding:
                                     * VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                     * UNIFORM_TEXEL_BUFFER or
                                     * STORAGE_TEXEL_BUFFER; NULL: all
                                     * storage buffers */
    uint32_t        push_bytes;   /* push-constant block size, multiple of 4 */
    const uint32_t *spec;         /* 32-bit specialization constants, */
    uint32_t        n_spec;       /* constant_id 0..n_spec-1 (workgroup size, ...) */
    uint32_t        required_subgroup_size;  /* 0: driver's choice */
    uint32_t        max_sets;     /* descriptor sets it can hand out; 0: 8 */
} ks_vk_pipeline_params;

typedef struct ks_vk_pipeline {
    char                  name[64];
    VkShaderModule        module;
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout      layout;
    VkPipeline            pipeline;
    VkDescriptorPool      pool;
    uint32_t              n_buffers;  /* bindings */
    VkDescriptorType      types[KS_VK_MAX_BINDINGS];  /* of bindings 0..n_buffers-1 */
    uint32_t              push_bytes;
    uint32_t              max_sets;
    uint32_t              n_sets;
} ks_vk_pipeline;

/* Creates the compute pipeline through ctx->pipeline_cache (if loaded).
 * Errors: KS_ERR_INVALID_ARG (bad params, named), KS_ERR_UNSUPPORTED
 * (required subgroup size not available), Vulkan failures translated. */
ks_status ks_vk_pipeline_create(ks_vk_ctx *ctx, const ks_vk_pipeline_params *p,
                                ks_vk_pipeline **out);
void      ks_vk_pipeline_destroy(ks_vk_ctx *ctx, ks_vk_pipeline *pl);  /* NULL ok */

/* ks_vk_pipeline_create in two steps: the shell (module, layouts,
 * descriptor pool: sets can be made from it at once) and the build (the
 * driver's compile, the slow part on lavapipe, which may run on several
 * threads at once for different pipelines; |p| as given to the shell).
 * A shell is not dispatched before its build succeeds. remodule replaces
 * the shell's module with new SPIR-V (for a rebuild). */
ks_status ks_vk_pipeline_shell(ks_vk_ctx *ctx, const ks_vk_pipeline_params *p,
                               ks_vk_pipeline **out);
ks_status ks_vk_pipeline_build(ks_vk_ctx *ctx, ks_vk_pipeline *pl,
                               const ks_vk_pipeline_params *p);
ks_status ks_vk_pipeline_remodule(ks_vk_ctx *ctx, ks_vk_pipeline *pl, const uint32_t *spirv,
                                  size_t n_words);

/* Allocates a descriptor set from the pipeline's pool binding |bufs| (whole
 * buffers) to bindings 0..n-1; n must equal the pipeline's n_buffers, and
 * every binding must be a storage buffer (texel buffers need
 * ks_vk_pipeline_set_views). The set lives as long as the pipeline; make
 * sets at set-up time, not per dispatch. KS_ERR_INVALID_ARG names a
 * missing buffer or view; KS_ERR_UNSUPPORTED a buffer beyond
 * maxStorageBufferRange. */
ks_status ks_vk_pipeline_set(ks_vk_ctx *ctx, ks_vk_pipeline *pl,
                             const ks_vk_buffer *const *bufs, uint32_t n,
                             VkDescriptorSet *out);

/* The same for pipelines with texel-buffer bindings: binding i takes
 * views[i] (a VkBufferView the caller made and keeps alive as long as the
 * set is used) when it is a texel buffer, bufs[i] otherwise; entries of
 * the other kind are ignored and may be NULL. |views| may be NULL when no
 * binding is a texel buffer. */
ks_status ks_vk_pipeline_set_views(ks_vk_ctx *ctx, ks_vk_pipeline *pl,
                                   const ks_vk_buffer *const *bufs,
                                   const VkBufferView *views, uint32_t n,
                                   VkDescriptorSet *out);

/* Records bind + push constants (pl->push_bytes from |push|) + dispatch. */
void ks_vk_cmd_dispatch(VkCommandBuffer cb, const ks_vk_pipeline *pl,
                        VkDescriptorSet set, const void *push,
                        uint32_t gx, uint32_t gy, uint32_t gz);

/* Records one dispatch with barriers on ctx->cmd, submits and waits.
 * Group counts are checked against maxComputeWorkGroupCount. */
ks_status ks_vk_dispatch(ks_vk_ctx *ctx, const ks_vk_pipeline *pl,
                         VkDescriptorSet set, const void *push,
                         uint32_t gx, uint32_t gy, uint32_t gz);

/* Loads the pipeline cache from |path| into ctx->pipeline_cache (created
 * if absent, merged otherwise). A missing file, a cache from another
 * device or driver (header vendor/device/UUID differ) or a malformed file
 * gives an empty cache and a debug log line, not an error. */
ks_status ks_vk_pipeline_cache_load(ks_vk_ctx *ctx, const char *path);

/* Writes ctx->pipeline_cache to |path| (through a temporary file and
 * rename, so readers never see half a file). KS_ERR_IO names the path. */
ks_status ks_vk_pipeline_cache_save(ks_vk_ctx *ctx, const char *path);

/* ---- Run-time GLSL -> SPIR-V (vk_compile.c) -------------------------- */

typedef struct ks_vk_spirv {
    uint32_t *words;    /* malloc'd; ks_vk_spirv_fini frees */
    size_t    n_words;
} ks_vk_spirv;

typedef struct ks_vk_compile_params {
    const char        *name;         /* for messages; NULL: "shader" */
    const char *const *defines;      /* "NAME" or "NAME=VALUE" each */
    uint32_t           n_defines;
    uint32_t           vk_api_version;  /* target; 0 or >= 1.2: Vulkan 1.2 (SPIR-V
                                         * 1.5); 1.1: SPIR-V 1.3; 1.0: SPIR-V 1.0 */
} ks_vk_compile_params;

/* Builds the preamble "#define NAME VALUE\n..." from |defines| into a
 * malloc'd string (*out; "" for none). KS_ERR_INVALID_ARG names a define
 * whose name is not an identifier or whose value has a newline. */
ks_status ks_vk_preamble(const char *const *defines, uint32_t n, char **out);

/* Compiles a GLSL compute shader (with its own #version line) to SPIR-V
 * with glslang, the defines given as a preamble. A shader that does not
 * compile gives KS_ERR_INVALID_ARG with glslang's log in the message.
 * Without glslang in the build: KS_ERR_UNSUPPORTED. Thread safe. */
ks_status ks_vk_compile(const char *source, const ks_vk_compile_params *p,
                        ks_vk_spirv *out);
void      ks_vk_spirv_fini(ks_vk_spirv *s);  /* zeroed: no-op */

/* ---- Disk cache of SPIR-V and of the pipeline cache (vk_cache.c) ----- */

/* The cache directory: $KESTREL_CACHE_DIR when set, else
 * $XDG_CACHE_HOME/kestrel (an absolute XDG_CACHE_HOME only), else
 * $HOME/.cache/kestrel. Written to |buf| (|size| bytes) and returned;
 * NULL when caching is off (KESTREL_NO_CACHE set to anything but "" or
 * "0"), when no directory can be named or it does not fit. The directory
 * need not exist yet. Thread safe as long as nobody changes the
 * environment. */
const char *ks_vk_cache_dir(char *buf, size_t size);

/* SPIR-V of the embedded template |template_name| ("matvec.comp", see
 * ks_vk_shader_source) with the defines of |p| (NULL: none;
 * p->vk_api_version 0: ctx->api_version). Read from
 * <cache dir>/spirv/<key>.spv when present and valid, else compiled with
 * ks_vk_compile and written there (temporary file + rename). The key is a
 * 128-bit hash of the template's embedded text, the defines in order, the
 * target API version, the device UUID, the driver version and driver ID,
 * and the file format version. A file with a wrong magic, version, key,
 * size or checksum (which covers the key too) is rebuilt with a warning
 * naming it; a FIFO or other non-regular file there is ignored without
 * blocking (a warning) and replaced; a directory that
 * cannot be written is a log line, not an error. Counts into
 * ctx->n_shader_hits / n_shader_compiled / n_shader_rebuilt. The cache
 * directory is the one the context chose at creation. On success *out
 * owns malloc'd words (ks_vk_spirv_fini). Errors: KS_ERR_INVALID_ARG (no
 * such template, a bad define, a template that does not compile: the
 * compiler's log), KS_ERR_UNSUPPORTED (built without glslang and not
 * cached), KS_ERR_NOMEM. Same threading as the context. */
ks_status ks_vk_shader_get(ks_vk_ctx *ctx, const char *template_name,
                           const ks_vk_compile_params *p, ks_vk_spirv *out);

/* The pipeline for template |template_name| with defines |cp|: SPIR-V from
 * ks_vk_shader_get, then ks_vk_pipeline_create with |pp| (whose spirv and
 * n_words are ignored). When the driver rejects it with KS_ERR_INTERNAL
 * (VK_ERROR_UNKNOWN and the like, not memory or device loss) and the disk
 * cache is on, the .spv file is deleted, the pipeline cache emptied (its
 * file deleted), the template compiled from source and the pipeline made
 * once more; a second failure returns its status with a message naming
 * the .spv file and both failures. Counts the rebuild in
 * ctx->n_shader_rebuilt. Errors: those of the two calls. */
ks_status ks_vk_shader_pipeline_create(ks_vk_ctx *ctx, const char *template_name,
                                       const ks_vk_compile_params *cp,
                                       const ks_vk_pipeline_params *pp,
                                       ks_vk_pipeline **out);

/* Deferred pipelines, for a fast start: after ks_vk_pipelines_defer,
 * ks_vk_shader_pipeline_create returns a shell (descriptor sets can be
 * made from it) and keeps its build; ks_vk_pipelines_finish builds every
 * one kept on up to |n_threads| threads (0: the online CPUs, at most 8),
 * does the rebuild of a rejected one as ks_vk_shader_pipeline_create does,
 * and ends deferral. Until finish returns KS_OK no deferred pipeline may
 * be dispatched. Errors: the first failed build's (after its rebuild).
 * The caller's thread only, as for the context. */
void      ks_vk_pipelines_defer(ks_vk_ctx *ctx);
ks_status ks_vk_pipelines_finish(ks_vk_ctx *ctx, uint32_t n_threads);

/* Saves ctx->pipeline_cache to <cache dir>/pipelines-<device UUID>.bin now
 * (ks_vk_ctx_destroy also does). KS_OK without doing anything when
 * caching is off; KS_ERR_IO naming the path when it cannot be written. */
ks_status ks_vk_cache_save(ks_vk_ctx *ctx);

#endif
