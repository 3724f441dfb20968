/* Vulkan instance and device: the loader is asked for physical devices,
 * each is described in a ks_vk_device_info (properties and features
 * through the *2 query chains, heaps and budgets, compute queue families,
 * its DRM render node through drm.c), one is chosen and a logical device
 * with one compute queue is made from it. With KESTREL_VALIDATE=1 the
 * Khronos validation layer runs and a debug-utils messenger counts and logs
 * its messages, so tests can require zero of them. Every VkResult becomes a
 * ks_status in ks_vk_check and nowhere else. */
#include "driver/vk.h"

#include <inttypes.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "driver/vk_submit.h"

#define KS_VK_FENCE_TIMEOUT_NS (120ull * 1000000000ull)
#define VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

static atomic_uint validation_total;

/* ---- VkResult -------------------------------------------------------- */

const char *
ks_vk_result_str(VkResult r)
{
    switch (r) {
#define C(x) case x: return #x;
    C(VK_SUCCESS)
    C(VK_NOT_READY)
    C(VK_TIMEOUT)
    C(VK_EVENT_SET)
    C(VK_EVENT_RESET)
    C(VK_INCOMPLETE)
    C(VK_ERROR_OUT_OF_HOST_MEMORY)
    C(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    C(VK_ERROR_INITIALIZATION_FAILED)
    C(VK_ERROR_DEVICE_LOST)
    C(VK_ERROR_MEMORY_MAP_FAILED)
    C(VK_ERROR_LAYER_NOT_PRESENT)
    C(VK_ERROR_EXTENSION_NOT_PRESENT)
    C(VK_ERROR_FEATURE_NOT_PRESENT)
    C(VK_ERROR_INCOMPATIBLE_DRIVER)
    C(VK_ERROR_TOO_MANY_OBJECTS)
    C(VK_ERROR_FORMAT_NOT_SUPPORTED)
    C(VK_ERROR_FRAGMENTED_POOL)
    C(VK_ERROR_UNKNOWN)
    C(VK_ERROR_OUT_OF_POOL_MEMORY)
    C(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    C(VK_ERROR_FRAGMENTATION)
    C(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
    C(VK_PIPELINE_COMPILE_REQUIRED)
#undef C
    default: return "VkResult";
    }
}

ks_status
ks_vk_status_of(VkResult r)
{
    if (r >= 0)
        return KS_OK;
    switch (r) {
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return KS_ERR_NOMEM;
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    case VK_ERROR_MEMORY_MAP_FAILED:
        return KS_ERR_DEVICE_OOM;
    case VK_ERROR_DEVICE_LOST:
        return KS_ERR_DEVICE_LOST;
    case VK_ERROR_INCOMPATIBLE_DRIVER:
    case VK_ERROR_INITIALIZATION_FAILED:
        return KS_ERR_NO_DEVICE;
    case VK_ERROR_LAYER_NOT_PRESENT:
    case VK_ERROR_EXTENSION_NOT_PRESENT:
    case VK_ERROR_FEATURE_NOT_PRESENT:
    case VK_ERROR_FORMAT_NOT_SUPPORTED:
        return KS_ERR_UNSUPPORTED;
    default:
        return KS_ERR_INTERNAL;
    }
}

ks_status
ks_vk_check(VkResult r, const char *what)
{
    ks_status st = ks_vk_status_of(r);

    if (st == KS_OK)
        return KS_OK;
    return ks_error(st, "vk: %s: %s (%d)", what, ks_vk_result_str(r), (int)r);
}

/* ---- Feature mask ---------------------------------------------------- */

static bool
item_is(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && strncmp(s, word, len) == 0;
}

ks_status
ks_vk_mask_parse(const char *text, ks_vk_mask *out)
{
    ks_vk_mask m = { 0 };
    const char *p = text ? text : "";

    memset(out, 0, sizeof(*out));
    while (*p) {
        const char *end;
        size_t len;

        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        end = strchr(p, ',');
        len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (item_is(p, len, "no8bit")) {
            m.no8bit = true;
        } else if (item_is(p, len, "no16bit")) {
            m.no16bit = true;
        } else if (item_is(p, len, "nofp16")) {
            m.nofp16 = true;
        } else if (item_is(p, len, "nointdot")) {
            m.nointdot = true;
        } else if (item_is(p, len, "nofp64")) {
            m.nofp64 = true;
        } else if (len > 9 && strncmp(p, "subgroup=", 9) == 0) {
            unsigned long v = 0;
            size_t i;

            for (i = 9; i < len && p[i] >= '0' && p[i] <= '9' && v <= 256; i++)
                v = v * 10 + (unsigned long)(p[i] - '0');
            if (i != len || v == 0 || v > 256 || (v & (v - 1)) != 0)
                return ks_error(KS_ERR_INVALID_ARG,
                                "KESTREL_VK_MASK: '%.*s': subgroup size must be a "
                                "power of two from 1 to 256", (int)len, p);
            m.subgroup = (uint32_t)v;
        } else {
            return ks_error(KS_ERR_INVALID_ARG,
                            "KESTREL_VK_MASK: unknown item '%.*s' (expected no8bit, "
                            "no16bit, nofp16, nointdot, nofp64 or subgroup=N)", (int)len, p);
        }
        p += len;
        while (*p == ' ')
            p++;
    }
    *out = m;
    return KS_OK;
}

void
ks_vk_mask_format(const ks_vk_mask *m, char *buf, size_t size)
{
    size_t used = 0;
    const char *names[5] = { "no8bit", "no16bit", "nofp16", "nointdot", "nofp64" };
    bool on[5] = { m->no8bit, m->no16bit, m->nofp16, m->nointdot, m->nofp64 };

    if (size == 0)
        return;
    buf[0] = '\0';
    for (int i = 0; i < 5; i++) {
        if (on[i] && used < size)
            used += (size_t)snprintf(buf + used, size - used, "%s%s",
                                     used ? "," : "", names[i]);
    }
    if (m->subgroup && used < size)
        used += (size_t)snprintf(buf + used, size - used, "%ssubgroup=%u",
                                 used ? "," : "", m->subgroup);
    if (used == 0)
        snprintf(buf, size, "none");
}

/* ---- Names ------------------------------------------------------------ */

const char *
ks_vk_type_str(ks_vk_type t)
{
    switch (t) {
    case KS_VK_TYPE_DISCRETE: return "discrete";
    case KS_VK_TYPE_INTEGRATED: return "integrated";
    case KS_VK_TYPE_VIRTUAL: return "virtual";
    case KS_VK_TYPE_CPU: return "cpu";
    default: return "other";
    }
}

static ks_vk_type
type_of(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return KS_VK_TYPE_DISCRETE;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return KS_VK_TYPE_INTEGRATED;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return KS_VK_TYPE_VIRTUAL;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return KS_VK_TYPE_CPU;
    default: return KS_VK_TYPE_OTHER;
    }
}

void
ks_vk_driver_version_str(const ks_vk_device_info *d, char *buf, size_t size)
{
    uint32_t v = d->driver_version;

    if (d->vendor_id == 0x10de)  /* NVIDIA packs 10.8.8.6 bits */
        snprintf(buf, size, "%u.%u.%u.%u", v >> 22, (v >> 14) & 0xff,
                 (v >> 6) & 0xff, v & 0x3f);
    else  /* Mesa and most others use VK_MAKE_VERSION */
        snprintf(buf, size, "%u.%u.%u", v >> 22, (v >> 12) & 0x3ff, v & 0xfff);
}

/* ---- Instance ------------------------------------------------------- */

static VKAPI_ATTR VkBool32 VKAPI_CALL
on_debug_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                 VkDebugUtilsMessageTypeFlagsEXT types,
                 const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    atomic_uint *count = user;
    const char *msg = data && data->pMessage ? data->pMessage : "(no message)";

    if (types & (VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                 VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT)) {
        if (count)
            atomic_fetch_add(count, 1);
        atomic_fetch_add(&validation_total, 1);
        ks_log(KS_LOG_ERROR, "vk", "validation %s: %s",
               severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? "error" : "warning",
               msg);
    } else {
        /* Loader chatter ("Found no drivers!"); the failing call reports
         * the error that matters in its own words. */
        ks_log(KS_LOG_INFO, "vk", "%s", msg);
    }
    return VK_FALSE;
}

typedef struct instance_state {
    VkInstance               instance;
    VkDebugUtilsMessengerEXT messenger;
    uint32_t                 api_version;
    bool                     validation;
} instance_state;

static bool
layer_present(const char *name)
{
    uint32_t n = 0;
    VkLayerProperties *props;
    bool found = false;

    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0)
        return false;
    props = calloc(n, sizeof(*props));
    if (!props)
        return false;
    if (vkEnumerateInstanceLayerProperties(&n, props) >= 0)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(props[i].layerName, name) == 0;
    free(props);
    return found;
}

static bool
instance_ext_present(const char *layer, const char *name)
{
    uint32_t n = 0;
    VkExtensionProperties *props;
    bool found = false;

    if (vkEnumerateInstanceExtensionProperties(layer, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    props = calloc(n, sizeof(*props));
    if (!props)
        return false;
    if (vkEnumerateInstanceExtensionProperties(layer, &n, props) >= 0)
        for (uint32_t i = 0; i < n && !found; i++)
            found = strcmp(props[i].extensionName, name) == 0;
    free(props);
    return found;
}

static void
instance_destroy(instance_state *is)
{
    if (is->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT destroy = (PFN_vkDestroyDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(is->instance, "vkDestroyDebugUtilsMessengerEXT");
        if (destroy)
            destroy(is->instance, is->messenger, NULL);
        is->messenger = VK_NULL_HANDLE;
    }
    if (is->instance)
        vkDestroyInstance(is->instance, NULL);
    is->instance = VK_NULL_HANDLE;
}

/* |count| receives validation messages (may be NULL). */
static ks_status
instance_create(bool validate, atomic_uint *count, instance_state *is)
{
    const char *layers[1];
    const char *exts[1];
    uint32_t n_layers = 0, n_exts = 0, loader_version = VK_API_VERSION_1_0;
    VkDebugUtilsMessengerCreateInfoEXT dbg = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_debug_message,
        .pUserData = count,
    };
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "kestrel",
        .applicationVersion = VK_MAKE_API_VERSION(0, 0, 1, 0),
        .pEngineName = "kestrel",
        .engineVersion = VK_MAKE_API_VERSION(0, 0, 1, 0),
    };
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pApplicationInfo = &app,
    };
    VkResult r;
    ks_status st;

    memset(is, 0, sizeof(*is));
    /* vkEnumerateInstanceVersion is absent from 1.0 loaders. */
    PFN_vkEnumerateInstanceVersion enum_version = (PFN_vkEnumerateInstanceVersion)
        vkGetInstanceProcAddr(VK_NULL_HANDLE, "vkEnumerateInstanceVersion");
    if (enum_version && enum_version(&loader_version) != VK_SUCCESS)
        loader_version = VK_API_VERSION_1_0;
    if (loader_version < VK_API_VERSION_1_1)
        return ks_error(KS_ERR_NO_DEVICE, "vk: the Vulkan loader supports only "
                        "Vulkan 1.0; Kestrel needs 1.1 or newer");
    app.apiVersion = loader_version >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3
                                                          : loader_version;

    if (validate) {
        if (!layer_present(VALIDATION_LAYER)) {
            ks_log(KS_LOG_WARN, "vk", "KESTREL_VALIDATE is set but %s is not "
                   "installed (Debian: vulkan-validationlayers); running without it",
                   VALIDATION_LAYER);
        } else {
            layers[n_layers++] = VALIDATION_LAYER;
            if (instance_ext_present(NULL, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) ||
                instance_ext_present(VALIDATION_LAYER, VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
                exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
                /* Chained so messages from vkCreateInstance itself count too. */
                ci.pNext = &dbg;
            } else {
                ks_log(KS_LOG_WARN, "vk", "validation layer on, but %s is missing: "
                       "its messages cannot be counted",
                       VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
            }
        }
    }
    ci.enabledLayerCount = n_layers;
    ci.ppEnabledLayerNames = n_layers ? layers : NULL;
    ci.enabledExtensionCount = n_exts;
    ci.ppEnabledExtensionNames = n_exts ? exts : NULL;

    r = vkCreateInstance(&ci, NULL, &is->instance);
    if (r != VK_SUCCESS) {
        is->instance = VK_NULL_HANDLE;
        if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED)
            return ks_error(KS_ERR_NO_DEVICE, "vk: no Vulkan driver (ICD) could be "
                            "loaded: vkCreateInstance returned %s",
                            ks_vk_result_str(r));
        return ks_vk_check(r, "vkCreateInstance");
    }
    is->api_version = app.apiVersion;
    is->validation = n_layers > 0;
    if (ci.pNext) {
        PFN_vkCreateDebugUtilsMessengerEXT create = (PFN_vkCreateDebugUtilsMessengerEXT)
            vkGetInstanceProcAddr(is->instance, "vkCreateDebugUtilsMessengerEXT");
        if (!create) {
            st = ks_error(KS_ERR_INTERNAL, "vk: vkCreateDebugUtilsMessengerEXT missing");
            goto fail;
        }
        r = create(is->instance, &dbg, NULL, &is->messenger);
        if ((st = ks_vk_check(r, "vkCreateDebugUtilsMessengerEXT")) != KS_OK)
            goto fail;
    }
    return KS_OK;
fail:
    instance_destroy(is);
    return st;
}

static ks_status
physical_devices(VkInstance inst, VkPhysicalDevice **out, uint32_t *n)
{
    VkPhysicalDevice *pds = NULL;
    uint32_t count = 0;
    VkResult r;

    *out = NULL;
    *n = 0;
    for (;;) {
        r = vkEnumeratePhysicalDevices(inst, &count, NULL);
        if (r != VK_SUCCESS)
            return ks_vk_check(r, "vkEnumeratePhysicalDevices");
        if (count == 0)
            return ks_error(KS_ERR_NO_DEVICE, "vk: the Vulkan loader found no "
                            "physical device (no ICD reports one)");
        pds = calloc(count, sizeof(*pds));
        if (!pds)
            return ks_error(KS_ERR_NOMEM, "vk: no memory for %u devices", count);
        r = vkEnumeratePhysicalDevices(inst, &count, pds);
        if (r == VK_SUCCESS)
            break;
        free(pds);
        pds = NULL;
        if (r != VK_INCOMPLETE)
            return ks_vk_check(r, "vkEnumeratePhysicalDevices");
    }
    *out = pds;
    *n = count;
    return KS_OK;
}

/* ---- Describing one physical device ------------------------------- */

typedef struct dev_exts {
    VkExtensionProperties *props;
    uint32_t               n;
} dev_exts;

static bool
has_ext(const dev_exts *e, const char *name)
{
    for (uint32_t i = 0; i < e->n; i++)
        if (strcmp(e->props[i].extensionName, name) == 0)
            return true;
    return false;
}

static ks_status
dev_exts_get(VkPhysicalDevice pd, dev_exts *e)
{
    VkResult r;

    e->props = NULL;
    e->n = 0;
    r = vkEnumerateDeviceExtensionProperties(pd, NULL, &e->n, NULL);
    if (r != VK_SUCCESS)
        return ks_vk_check(r, "vkEnumerateDeviceExtensionProperties");
    if (e->n == 0)
        return KS_OK;
    e->props = calloc(e->n, sizeof(*e->props));
    if (!e->props)
        return ks_error(KS_ERR_NOMEM, "vk: no memory for %u extensions", e->n);
    r = vkEnumerateDeviceExtensionProperties(pd, NULL, &e->n, e->props);
    return ks_vk_check(r, "vkEnumerateDeviceExtensionProperties");
}

static uint32_t
api_min(uint32_t a, uint32_t b)
{
    /* Compare major.minor only; patch levels do not gate features. */
    uint32_t ma = VK_MAKE_API_VERSION(0, VK_API_VERSION_MAJOR(a), VK_API_VERSION_MINOR(a), 0);
    uint32_t mb = VK_MAKE_API_VERSION(0, VK_API_VERSION_MAJOR(b), VK_API_VERSION_MINOR(b), 0);

    return ma < mb ? ma : mb;
}

/* A feature or property struct may be chained when it is core in the
 * version both sides speak, or the device has the extension. */
static bool
promoted(uint32_t api, uint32_t core, const dev_exts *e, const char *ext)
{
    return api >= core || has_ext(e, ext);
}

/* The feature structs Kestrel queries and enables, in one chain. */
typedef struct feature_chain {
    VkPhysicalDeviceFeatures2                         f2;
    VkPhysicalDevice16BitStorageFeatures              s16;
    VkPhysicalDevice8BitStorageFeatures               s8;
    VkPhysicalDeviceShaderFloat16Int8Features         f16i8;
    VkPhysicalDeviceTimelineSemaphoreFeatures         timeline;
    VkPhysicalDeviceSubgroupSizeControlFeatures       sgsc;
    VkPhysicalDeviceShaderIntegerDotProductFeatures   idot;
    bool has_s8, has_f16i8, has_timeline, has_sgsc, has_idot;
} feature_chain;

static void
link_next(void ***tail, void *s)
{
    **tail = s;
    *tail = (void **)&((VkBaseOutStructure *)s)->pNext;
}

static void
feature_chain_init(feature_chain *fc, uint32_t api, const dev_exts *e)
{
    void **tail;

    memset(fc, 0, sizeof(*fc));
    fc->f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
    fc->s16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
    fc->s8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES;
    fc->f16i8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
    fc->timeline.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES;
    fc->sgsc.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES;
    fc->idot.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES;
    fc->has_s8 = promoted(api, VK_API_VERSION_1_2, e, VK_KHR_8BIT_STORAGE_EXTENSION_NAME);
    fc->has_f16i8 = promoted(api, VK_API_VERSION_1_2, e,
                             VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
    fc->has_timeline = promoted(api, VK_API_VERSION_1_2, e,
                                VK_KHR_TIMELINE_SEMAPHORE_EXTENSION_NAME);
    fc->has_sgsc = promoted(api, VK_API_VERSION_1_3, e,
                            VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    fc->has_idot = promoted(api, VK_API_VERSION_1_3, e,
                            VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);

    tail = &fc->f2.pNext;
    link_next(&tail, &fc->s16);  /* core in 1.1 */
    if (fc->has_s8)
        link_next(&tail, &fc->s8);
    if (fc->has_f16i8)
        link_next(&tail, &fc->f16i8);
    if (fc->has_timeline)
        link_next(&tail, &fc->timeline);
    if (fc->has_sgsc)
        link_next(&tail, &fc->sgsc);
    if (fc->has_idot)
        link_next(&tail, &fc->idot);
}

static void
fill_heaps(VkPhysicalDevice pd, const dev_exts *e, ks_vk_device_info *d,
           VkPhysicalDeviceMemoryProperties *mem_out)
{
    VkPhysicalDeviceMemoryBudgetPropertiesEXT budget = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT,
    };
    VkPhysicalDeviceMemoryProperties2 mp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
    };

    d->has_memory_budget = has_ext(e, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
    if (d->has_memory_budget)
        mp.pNext = &budget;
    vkGetPhysicalDeviceMemoryProperties2(pd, &mp);
    d->n_heaps = mp.memoryProperties.memoryHeapCount;
    if (d->n_heaps > VK_MAX_MEMORY_HEAPS)
        d->n_heaps = VK_MAX_MEMORY_HEAPS;
    for (uint32_t h = 0; h < d->n_heaps; h++) {
        d->heaps[h].size_bytes = mp.memoryProperties.memoryHeaps[h].size;
        d->heaps[h].device_local = (mp.memoryProperties.memoryHeaps[h].flags &
                                    VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0;
        d->heaps[h].budget_bytes = d->has_memory_budget ? budget.heapBudget[h] : 0;
        d->heaps[h].usage_bytes = d->has_memory_budget ? budget.heapUsage[h] : 0;
    }
    if (mem_out)
        *mem_out = mp.memoryProperties;
}

static void
fill_queues(VkPhysicalDevice pd, ks_vk_device_info *d)
{
    VkQueueFamilyProperties qf[KS_VK_MAX_QUEUE_FAMILIES];
    uint32_t n = 0;

    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
    if (n > KS_VK_MAX_QUEUE_FAMILIES)
        n = KS_VK_MAX_QUEUE_FAMILIES;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, qf);
    d->n_queue_families = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!(qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || qf[i].queueCount == 0)
            continue;
        d->queue_families[d->n_queue_families++] = (ks_vk_queue_family_info){
            .family = i, .n_queues = qf[i].queueCount, .flags = qf[i].queueFlags,
        };
    }
}

static void
copy_str(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src);
}

/* Fills |d| for |pd|; |instance_api| is the version the instance asked for. */
static ks_status
describe(VkPhysicalDevice pd, uint32_t index, uint32_t instance_api,
         ks_vk_device_info *d, VkPhysicalDeviceMemoryProperties *mem_out)
{
    VkPhysicalDeviceProperties basic;
    dev_exts e = { 0 };
    uint32_t api;
    ks_status st;

    memset(d, 0, sizeof(*d));
    d->index = index;
    vkGetPhysicalDeviceProperties(pd, &basic);
    copy_str(d->name, sizeof d->name, basic.deviceName);
    d->type = type_of(basic.deviceType);
    d->vendor_id = basic.vendorID;
    d->device_id = basic.deviceID;
    d->api_version = basic.apiVersion;
    d->driver_version = basic.driverVersion;
    memcpy(d->pipeline_cache_uuid, basic.pipelineCacheUUID, VK_UUID_SIZE);
    d->max_storage_buffer_range = basic.limits.maxStorageBufferRange;
    d->max_shared_bytes = basic.limits.maxComputeSharedMemorySize;
    d->max_push_constants_bytes = basic.limits.maxPushConstantsSize;
    d->max_wg_invocations = basic.limits.maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        d->max_wg_size[i] = basic.limits.maxComputeWorkGroupSize[i];
        d->max_wg_count[i] = basic.limits.maxComputeWorkGroupCount[i];
    }
    fill_queues(pd, d);
    api = api_min(instance_api, basic.apiVersion);
    if (api < VK_API_VERSION_1_1) {
        /* The *2 queries below are not ours to use on a 1.0 device. */
        ks_log(KS_LOG_INFO, "vk", "device %u (%s) speaks Vulkan 1.0 only: not usable",
               index, d->name);
        return KS_OK;
    }
    if ((st = dev_exts_get(pd, &e)) != KS_OK)
        goto fail;

    /* Properties. */
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES };
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES };
    VkPhysicalDeviceIDProperties ids = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES };
    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES };
    VkPhysicalDeviceSubgroupSizeControlProperties sgsc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES };
    VkPhysicalDeviceShaderIntegerDotProductProperties idot = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES };
    VkPhysicalDeviceDrmPropertiesEXT drm = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRM_PROPERTIES_EXT };
    VkPhysicalDevicePCIBusInfoPropertiesEXT pci = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PCI_BUS_INFO_PROPERTIES_EXT };
    VkPhysicalDeviceExternalMemoryHostPropertiesEXT emh = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT };
    VkPhysicalDeviceProperties2 p2 = { .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2 };
    void **tail = &p2.pNext;
    bool has_drv = promoted(api, VK_API_VERSION_1_2, &e, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
    bool has_sgsc = promoted(api, VK_API_VERSION_1_3, &e,
                             VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    bool has_idot = promoted(api, VK_API_VERSION_1_3, &e,
                             VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);

    d->has_drm_ext = has_ext(&e, VK_EXT_PHYSICAL_DEVICE_DRM_EXTENSION_NAME);
    d->has_pci_ext = has_ext(&e, VK_EXT_PCI_BUS_INFO_EXTENSION_NAME);
    d->external_memory_host = has_ext(&e, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
    link_next(&tail, &sg);
    link_next(&tail, &m3);
    link_next(&tail, &ids);
    if (has_drv)
        link_next(&tail, &drv);
    if (has_sgsc)
        link_next(&tail, &sgsc);
    if (has_idot)
        link_next(&tail, &idot);
    if (d->has_drm_ext)
        link_next(&tail, &drm);
    if (d->has_pci_ext)
        link_next(&tail, &pci);
    if (d->external_memory_host)
        link_next(&tail, &emh);
    vkGetPhysicalDeviceProperties2(pd, &p2);

    d->subgroup_size = sg.subgroupSize;
    d->subgroup_in_compute = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0;
    d->subgroup_ops = sg.supportedOperations;
    d->subgroup_min = d->subgroup_max = sg.subgroupSize;
    d->max_allocation_bytes = m3.maxMemoryAllocationSize;
    memcpy(d->device_uuid, ids.deviceUUID, VK_UUID_SIZE);
    memcpy(d->driver_uuid, ids.driverUUID, VK_UUID_SIZE);
    if (has_drv) {
        d->driver_id = (uint32_t)drv.driverID;
        copy_str(d->driver_name, sizeof d->driver_name, drv.driverName);
        copy_str(d->driver_info, sizeof d->driver_info, drv.driverInfo);
    }
    if (d->external_memory_host)
        d->host_import_align_bytes = emh.minImportedHostPointerAlignment;
    if (d->has_drm_ext) {
        d->drm_key.has_render = drm.hasRender;
        d->drm_key.render_major = drm.renderMajor;
        d->drm_key.render_minor = drm.renderMinor;
        d->drm_key.has_primary = drm.hasPrimary;
        d->drm_key.primary_major = drm.primaryMajor;
        d->drm_key.primary_minor = drm.primaryMinor;
    }
    if (d->has_pci_ext) {
        d->drm_key.has_pci = true;
        d->drm_key.pci_domain = pci.pciDomain;
        d->drm_key.pci_bus = pci.pciBus;
        d->drm_key.pci_device = pci.pciDevice;
        d->drm_key.pci_function = pci.pciFunction;
    }

    /* Features. */
    feature_chain fc;
    feature_chain_init(&fc, api, &e);
    vkGetPhysicalDeviceFeatures2(pd, &fc.f2);
    d->storage_16bit = fc.s16.storageBuffer16BitAccess;
    d->storage_8bit = fc.has_s8 && fc.s8.storageBuffer8BitAccess;
    d->float16 = fc.has_f16i8 && fc.f16i8.shaderFloat16;
    d->int8 = fc.has_f16i8 && fc.f16i8.shaderInt8;
    d->int16 = fc.f2.features.shaderInt16;
    d->int64 = fc.f2.features.shaderInt64;
    d->float64 = fc.f2.features.shaderFloat64;
    d->timeline_semaphore = fc.has_timeline && fc.timeline.timelineSemaphore;
    d->int_dot = fc.has_idot && fc.idot.shaderIntegerDotProduct;
    d->int_dot_accel = d->int_dot && idot.integerDotProduct4x8BitPackedSignedAccelerated;
    d->subgroup_size_control = fc.has_sgsc && fc.sgsc.subgroupSizeControl &&
        (sgsc.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT);
    if (has_sgsc && sgsc.minSubgroupSize) {
        d->subgroup_min = sgsc.minSubgroupSize;
        d->subgroup_max = sgsc.maxSubgroupSize;
    }

    fill_heaps(pd, &e, d, mem_out);
    d->usable = d->n_queue_families > 0;
    if (d->drm_key.has_render || d->drm_key.has_primary || d->drm_key.has_pci)
        ks_drm_match(&d->drm_key, &d->drm);
    st = KS_OK;
fail:
    free(e.props);
    return st;
}

ks_status
ks_vk_devices_list(ks_vk_device_info *out, uint32_t *n)
{
    instance_state is;
    VkPhysicalDevice *pds = NULL;
    uint32_t count = 0, want = out ? *n : 0;
    ks_status st;

    *n = 0;
    if ((st = instance_create(ks_env_flag("KESTREL_VALIDATE"), NULL, &is)) != KS_OK)
        return st;
    if ((st = physical_devices(is.instance, &pds, &count)) != KS_OK)
        goto fail;
    if (!out) {
        *n = count;
        goto fail;
    }
    for (uint32_t i = 0; i < count && i < want; i++) {
        if ((st = describe(pds[i], i, is.api_version, &out[i], NULL)) != KS_OK)
            goto fail;
        *n = i + 1;
    }
fail:
    free(pds);
    instance_destroy(&is);
    return st;
}

static int
type_rank(ks_vk_type t)
{
    switch (t) {
    case KS_VK_TYPE_DISCRETE: return 4;
    case KS_VK_TYPE_INTEGRATED: return 3;
    case KS_VK_TYPE_VIRTUAL: return 2;
    case KS_VK_TYPE_CPU: return 1;
    default: return 0;
    }
}

ks_status
ks_vk_device_choose(const ks_vk_device_info *devs, uint32_t n, int32_t forced,
                    uint32_t *out)
{
    int best = -1;

    if (forced >= 0) {
        if ((uint32_t)forced >= n)
            return ks_error(KS_ERR_NO_DEVICE, "vk: device %d requested, but only "
                            "%u Vulkan device%s found", forced, n, n == 1 ? " was" : "s were");
        if (!devs[forced].usable)
            return ks_error(KS_ERR_UNSUPPORTED, "vk: device %d (%s) cannot run "
                            "Kestrel: it needs Vulkan 1.1 and a compute queue",
                            forced, devs[forced].name);
        *out = (uint32_t)forced;
        return KS_OK;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!devs[i].usable)
            continue;
        if (best < 0 || type_rank(devs[i].type) > type_rank(devs[best].type))
            best = (int)i;
    }
    if (best < 0)
        return ks_error(KS_ERR_NO_DEVICE, "vk: none of the %u Vulkan devices is "
                        "usable (Vulkan 1.1 with a compute queue needed)", n);
    *out = (uint32_t)best;
    return KS_OK;
}

/* ---- Context ---------------------------------------------------------- */

ks_status
ks_vk_budget_from_env(uint64_t *out)
{
    const char *e = ks_env_str("KESTREL_VK_BUDGET_MB");
    char *end;
    double mb;

    *out = 0;
    if (!e)
        return KS_OK;
    errno = 0;
    mb = strtod(e, &end);
    if (errno || *end || end == e || !(mb >= 0.0 && mb < 1e12) || *e == '-' || *e == ' ')
        return ks_error(KS_ERR_INVALID_ARG, "KESTREL_VK_BUDGET_MB: expected a "
                        "number of MiB, found '%s'", e);
    *out = (uint64_t)(mb * 1048576.0);
    return KS_OK;
}

static uint32_t
pick_queue_family(const ks_vk_device_info *d, bool *compute_only)
{
    for (uint32_t i = 0; i < d->n_queue_families; i++) {
        if (!(d->queue_families[i].flags & VK_QUEUE_GRAPHICS_BIT)) {
            *compute_only = true;
            return d->queue_families[i].family;
        }
    }
    *compute_only = false;
    return d->queue_families[0].family;
}

static ks_status
device_create(ks_vk_ctx *ctx, VkPhysicalDevice pd)
{
    const ks_vk_device_info *d = &ctx->info;
    const char *exts[16];
    uint32_t n_exts = 0;
    dev_exts e = { 0 };
    feature_chain want;
    float prio = 1.0f;
    ks_status st;
    VkResult r;

    if ((st = dev_exts_get(pd, &e)) != KS_OK)
        goto fail;
    /* Extensions that add to what the core version gives. */
    if (d->has_memory_budget)
        exts[n_exts++] = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME;
    if (d->external_memory_host)
        exts[n_exts++] = VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME;
    if (ctx->api_version < VK_API_VERSION_1_2) {
        if (has_ext(&e, VK_KHR_8BIT_STORAGE_EXTENSION_NAME))
            exts[n_exts++] = VK_KHR_8BIT_STORAGE_EXTENSION_NAME;
        if (has_ext(&e, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME))
            exts[n_exts++] = VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME;
        if (has_ext(&e, VK_KHR_TIMELINE_SEMAPHORE_EXTENSION_NAME))
            exts[n_exts++] = VK_KHR_TIMELINE_SEMAPHORE_EXTENSION_NAME;
    }
    if (ctx->api_version < VK_API_VERSION_1_3) {
        if (has_ext(&e, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME))
            exts[n_exts++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
        if (has_ext(&e, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME))
            exts[n_exts++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
    }

    /* Enable what the device has and the mask leaves. */
    feature_chain_init(&want, ctx->api_version, &e);
    ks_vk_caps *c = &ctx->caps;
    c->storage_16bit = d->storage_16bit && !ctx->mask.no16bit;
    c->int16 = d->int16 && !ctx->mask.no16bit;
    c->storage_8bit = d->storage_8bit && !ctx->mask.no8bit;
    c->int8 = d->int8 && !ctx->mask.no8bit;
    c->float16 = d->float16 && !ctx->mask.nofp16;
    c->int_dot = d->int_dot && !ctx->mask.nointdot;
    c->float64 = d->float64 && !ctx->mask.nofp64;
    c->subgroup_size_control = d->subgroup_size_control;
    c->timeline_semaphore = d->timeline_semaphore;
    c->external_memory_host = d->external_memory_host;
    c->memory_budget = d->has_memory_budget;
    c->subgroup_size = ctx->mask.subgroup ? ctx->mask.subgroup : d->subgroup_size;
    want.f2.features.shaderInt16 = c->int16;
    want.f2.features.shaderInt64 = d->int64;
    want.f2.features.shaderFloat64 = c->float64;
    want.s16.storageBuffer16BitAccess = c->storage_16bit;
    want.s8.storageBuffer8BitAccess = c->storage_8bit;
    want.f16i8.shaderFloat16 = c->float16;
    want.f16i8.shaderInt8 = c->int8;
    want.timeline.timelineSemaphore = c->timeline_semaphore;
    want.sgsc.subgroupSizeControl = c->subgroup_size_control;
    want.idot.shaderIntegerDotProduct = c->int_dot;
    if (c->subgroup_size_control) {
        /* computeFullSubgroups came with the same extension. */
        feature_chain have;
        feature_chain_init(&have, ctx->api_version, &e);
        vkGetPhysicalDeviceFeatures2(pd, &have.f2);
        want.sgsc.computeFullSubgroups = have.sgsc.computeFullSubgroups;
    }

    ctx->queue_family = pick_queue_family(d, &ctx->queue_compute_only);
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = ctx->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &prio,
    };
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &want.f2,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
        .enabledExtensionCount = n_exts,
        .ppEnabledExtensionNames = n_exts ? exts : NULL,
    };
    r = vkCreateDevice(pd, &dci, NULL, &ctx->device);
    if (r != VK_SUCCESS) {
        ctx->device = VK_NULL_HANDLE;
        st = ks_vk_check(r, "vkCreateDevice");
        goto fail;
    }
    vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);
    st = KS_OK;
fail:
    free(e.props);
    return st;
}

static ks_status
commands_create(ks_vk_ctx *ctx)
{
    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = ctx->queue_family,
    };
    VkCommandBufferAllocateInfo cai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkFenceCreateInfo fci = { .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO };
    ks_status st;

    st = ks_vk_check(vkCreateCommandPool(ctx->device, &pci, NULL, &ctx->cmd_pool),
                     "vkCreateCommandPool");
    if (st != KS_OK)
        return st;
    cai.commandPool = ctx->cmd_pool;
    st = ks_vk_check(vkAllocateCommandBuffers(ctx->device, &cai, &ctx->cmd),
                     "vkAllocateCommandBuffers");
    if (st != KS_OK)
        return st;
    return ks_vk_check(vkCreateFence(ctx->device, &fci, NULL, &ctx->fence),
                       "vkCreateFence");
}

ks_status
ks_vk_ctx_create(const ks_vk_ctx_params *p, ks_vk_ctx **out)
{
    static const ks_vk_ctx_params defaults = { 0 };
    ks_vk_ctx *ctx;
    instance_state is;
    VkPhysicalDevice *pds = NULL;
    ks_vk_device_info *infos = NULL;
    uint32_t n = 0, pick = 0;
    ks_status st;
    char mask_text[96];

    *out = NULL;
    if (!p)
        p = &defaults;
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return ks_error(KS_ERR_NOMEM, "vk: no memory for a context");
    atomic_init(&ctx->n_validation, 0);
    if ((st = ks_vk_mask_parse(p->mask ? p->mask : getenv("KESTREL_VK_MASK"),
                               &ctx->mask)) != KS_OK)
        goto fail;
    if (p->budget_bytes)
        ctx->budget_bytes = p->budget_bytes;
    else if ((st = ks_vk_budget_from_env(&ctx->budget_bytes)) != KS_OK)
        goto fail;

    if ((st = instance_create(p->validate || ks_env_flag("KESTREL_VALIDATE"),
                              &ctx->n_validation, &is)) != KS_OK)
        goto fail;
    ctx->instance = is.instance;
    ctx->messenger = is.messenger;
    ctx->validation = is.validation;

    if ((st = physical_devices(ctx->instance, &pds, &n)) != KS_OK)
        goto fail;
    infos = calloc(n, sizeof(*infos));
    if (!infos) {
        st = ks_error(KS_ERR_NOMEM, "vk: no memory to describe %u devices", n);
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++)
        if ((st = describe(pds[i], i, is.api_version, &infos[i], NULL)) != KS_OK)
            goto fail;
    if ((st = ks_vk_device_choose(infos, n, p->force_device ? (int32_t)p->device_index : -1,
                                  &pick)) != KS_OK)
        goto fail;
    ctx->phys = pds[pick];
    /* Describe again to keep the memory properties of the chosen one. */
    if ((st = describe(ctx->phys, pick, is.api_version, &ctx->info, &ctx->mem_props)) != KS_OK)
        goto fail;
    ctx->api_version = api_min(is.api_version, ctx->info.api_version);

    if ((st = device_create(ctx, ctx->phys)) != KS_OK)
        goto fail;
    if ((st = commands_create(ctx)) != KS_OK)
        goto fail;
    ks_vk_cache_ctx_init(ctx);

    ks_vk_mask_format(&ctx->mask, mask_text, sizeof mask_text);
    ks_log(KS_LOG_INFO, "vk", "device %u: %s (%s, %s) queue family %u%s, "
           "validation %s, mask %s, budget %" PRIu64 " MiB",
           pick, ctx->info.name, ks_vk_type_str(ctx->info.type), ctx->info.driver_name,
           ctx->queue_family, ctx->queue_compute_only ? " (compute-only)" : "",
           ctx->validation ? "on" : "off", mask_text, ctx->budget_bytes >> 20);
    free(infos);
    free(pds);
    *out = ctx;
    return KS_OK;
fail:
    free(infos);
    free(pds);
    ks_vk_ctx_destroy(ctx);
    return st;
}

void
ks_vk_ctx_destroy(ks_vk_ctx *ctx)
{
    instance_state is;

    if (!ctx)
        return;
    if (ctx->device) {
        vkDeviceWaitIdle(ctx->device);
        ks_vk_mem_ctx_fini(ctx);
        ks_vk_matvec_ctx_fini(ctx);
        ks_vk_exact_ctx_fini(ctx);
        ks_vk_cache_ctx_fini(ctx);
        if (ctx->pipeline_cache)
            vkDestroyPipelineCache(ctx->device, ctx->pipeline_cache, NULL);
        if (ctx->fence)
            vkDestroyFence(ctx->device, ctx->fence, NULL);
        if (ctx->cmd_pool)
            vkDestroyCommandPool(ctx->device, ctx->cmd_pool, NULL);
        vkDestroyDevice(ctx->device, NULL);
    }
    if (ctx->instance) {
        is = (instance_state){ .instance = ctx->instance, .messenger = ctx->messenger };
        instance_destroy(&is);
    }
    free(ctx);
}

unsigned
ks_vk_ctx_validation_count(const ks_vk_ctx *ctx)
{
    return atomic_load(&((ks_vk_ctx *)ctx)->n_validation);
}

unsigned
ks_vk_validation_total(void)
{
    return atomic_load(&validation_total);
}

/* ---- Synchronous command buffer -------------------------------------- */

ks_status
ks_vk_cmd_begin(ks_vk_ctx *ctx, VkCommandBuffer *out)
{
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    ks_status st;

    if (ctx->lost)
        return ks_error(KS_ERR_DEVICE_LOST, "vk: device %s was lost earlier; "
                        "recreate the context", ctx->info.name);
    if (ctx->cmd_open)
        return ks_error(KS_ERR_INTERNAL, "vk: command buffer already recording");
    if ((st = ks_vk_check(vkResetCommandBuffer(ctx->cmd, 0), "vkResetCommandBuffer")) != KS_OK)
        return st;
    if ((st = ks_vk_check(vkBeginCommandBuffer(ctx->cmd, &bi), "vkBeginCommandBuffer")) != KS_OK)
        return st;
    ctx->cmd_open = true;
    *out = ctx->cmd;
    return KS_OK;
}

void
ks_vk_cmd_abort(ks_vk_ctx *ctx)
{
    if (ctx->cmd_open) {
        vkEndCommandBuffer(ctx->cmd);
        ctx->cmd_open = false;
    }
}

ks_status
ks_vk_cmd_submit(ks_vk_ctx *ctx)
{
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &ctx->cmd,
    };
    ks_status st;
    VkResult r;

    if (!ctx->cmd_open)
        return ks_error(KS_ERR_INTERNAL, "vk: submit without a recording");
    ctx->cmd_open = false;
    if ((st = ks_vk_check(vkEndCommandBuffer(ctx->cmd), "vkEndCommandBuffer")) != KS_OK)
        return st;
    if ((st = ks_vk_check(vkResetFences(ctx->device, 1, &ctx->fence), "vkResetFences")) != KS_OK)
        return st;
    r = vkQueueSubmit(ctx->queue, 1, &si, ctx->fence);
    if (r == VK_SUCCESS)
        return ks_vk_fence_wait(ctx, ctx->fence, KS_VK_FENCE_TIMEOUT_NS);
    if (r == VK_ERROR_DEVICE_LOST)
        ctx->lost = true;
    return ks_vk_check(r, "vkQueueSubmit");
}

void
ks_vk_cmd_barrier(VkCommandBuffer cb)
{
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
                                  VK_PIPELINE_STAGE_TRANSFER_BIT;

    vkCmdPipelineBarrier(cb, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
}
