/* Matching a GPU to its DRM render node with libdrm. The key comes from
 * Vulkan (VK_EXT_physical_device_drm, VK_EXT_pci_bus_info) but this module
 * knows nothing about Vulkan, so the CPU-only build keeps it. Without
 * libdrm every match reports "not found". Internal; not installed. */
#ifndef KS_DRM_H
#define KS_DRM_H

#include <stdbool.h>
#include <stdint.h>

#include "kestrel/status.h"

/* What the GPU driver told us about itself; zero = unknown. */
typedef struct ks_drm_key {
    bool     has_render;   /* VkPhysicalDeviceDrmPropertiesEXT.hasRender */
    int64_t  render_major;
    int64_t  render_minor;
    bool     has_primary;
    int64_t  primary_major;
    int64_t  primary_minor;
    bool     has_pci;      /* VkPhysicalDevicePCIBusInfoPropertiesEXT */
    uint32_t pci_domain;
    uint32_t pci_bus;
    uint32_t pci_device;
    uint32_t pci_function;
} ks_drm_key;

typedef enum ks_drm_bus {
    KS_DRM_BUS_UNKNOWN = 0,
    KS_DRM_BUS_PCI,
    KS_DRM_BUS_USB,
    KS_DRM_BUS_PLATFORM,
    KS_DRM_BUS_HOST1X,
} ks_drm_bus;

typedef struct ks_drm_node {
    bool       found;
    char       render_path[64];   /* /dev/dri/renderD128, "" if none */
    char       primary_path[64];  /* /dev/dri/card0, "" if none */
    ks_drm_bus bus;
    char       bus_id[160];       /* "0000:01:00.0" or the platform fullname */
    uint32_t   pci_vendor_id;     /* PCI only */
    uint32_t   pci_device_id;
    char       driver[32];        /* drmGetVersion name ("v3d", "i915"), "" if the
                                   * node could not be opened */
    char       sysfs_device[96];  /* /sys/dev/char/MAJ:MIN/device of the render
                                   * node: where thermal/devfreq live */
} ks_drm_node;

/* Finds the DRM device that matches |key|: first by render node dev_t,
 * then primary node dev_t, then PCI address. *out is always written;
 * out->found says whether a match exists. Returns KS_OK also when nothing
 * matches or libdrm is absent; errors only on bad arguments. Thread safe. */
ks_status ks_drm_match(const ks_drm_key *key, ks_drm_node *out);

/* Whether this build can match at all (built with libdrm). */
bool ks_drm_available(void);

#endif
