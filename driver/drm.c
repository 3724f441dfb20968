/* DRM render-node matching with libdrm. drmGetDevices2 lists every DRM
 * device with its node paths and bus; a GPU's Vulkan driver tells us its
 * render node's major:minor (VK_EXT_physical_device_drm) and/or its PCI
 * address (VK_EXT_pci_bus_info). We compare st_rdev of each listed render
 * node (then primary node) with that pair, and fall back to the PCI
 * address. The match gives the node path, the bus, the kernel driver's
 * name (drmGetVersion on the render node) and the sysfs device directory
 * where thermal zones and devfreq live. Without libdrm nothing matches. */
#include "driver/drm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"

#ifdef KS_HAVE_LIBDRM
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <xf86drm.h>

static bool
node_is(const char *path, int64_t major_no, int64_t minor_no, dev_t *rdev)
{
    struct stat st;

    if (!path || stat(path, &st) != 0 || !S_ISCHR(st.st_mode))
        return false;
    *rdev = st.st_rdev;
    return (int64_t)major(st.st_rdev) == major_no && (int64_t)minor(st.st_rdev) == minor_no;
}

static bool
has_node(const drmDevicePtr d, int type)
{
    return (d->available_nodes & (1 << type)) && d->nodes[type];
}

static bool
pci_is(const drmDevicePtr d, const ks_drm_key *key)
{
    return d->bustype == DRM_BUS_PCI && d->businfo.pci &&
           d->businfo.pci->domain == key->pci_domain && d->businfo.pci->bus == key->pci_bus &&
           d->businfo.pci->dev == key->pci_device && d->businfo.pci->func == key->pci_function;
}

static void
copy_cut(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);

    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void
describe_node(const drmDevicePtr d, ks_drm_node *out)
{
    struct stat st;

    out->found = true;
    if (has_node(d, DRM_NODE_RENDER))
        snprintf(out->render_path, sizeof out->render_path, "%s", d->nodes[DRM_NODE_RENDER]);
    if (has_node(d, DRM_NODE_PRIMARY))
        snprintf(out->primary_path, sizeof out->primary_path, "%s",
                 d->nodes[DRM_NODE_PRIMARY]);
    switch (d->bustype) {
    case DRM_BUS_PCI:
        out->bus = KS_DRM_BUS_PCI;
        if (d->businfo.pci)
            snprintf(out->bus_id, sizeof out->bus_id, "%04x:%02x:%02x.%u",
                     d->businfo.pci->domain, d->businfo.pci->bus, d->businfo.pci->dev,
                     d->businfo.pci->func);
        if (d->deviceinfo.pci) {
            out->pci_vendor_id = d->deviceinfo.pci->vendor_id;
            out->pci_device_id = d->deviceinfo.pci->device_id;
        }
        break;
    case DRM_BUS_USB:
        out->bus = KS_DRM_BUS_USB;
        if (d->businfo.usb)
            snprintf(out->bus_id, sizeof out->bus_id, "usb %u-%u", d->businfo.usb->bus,
                     d->businfo.usb->dev);
        break;
    case DRM_BUS_PLATFORM:
        out->bus = KS_DRM_BUS_PLATFORM;
        if (d->businfo.platform)
            copy_cut(out->bus_id, sizeof out->bus_id, d->businfo.platform->fullname);
        break;
    case DRM_BUS_HOST1X:
        out->bus = KS_DRM_BUS_HOST1X;
        if (d->businfo.host1x)
            copy_cut(out->bus_id, sizeof out->bus_id, d->businfo.host1x->fullname);
        break;
    default:
        out->bus = KS_DRM_BUS_UNKNOWN;
        break;
    }

    const char *node = out->render_path[0] ? out->render_path : out->primary_path;
    if (node[0] && stat(node, &st) == 0)
        snprintf(out->sysfs_device, sizeof out->sysfs_device, "/sys/dev/char/%u:%u/device",
                 major(st.st_rdev), minor(st.st_rdev));
    /* Render nodes need no DRM master; a permission error just leaves the
     * driver name empty. */
    if (out->render_path[0]) {
        int fd = open(out->render_path, O_RDWR | O_CLOEXEC);

        if (fd >= 0) {
            drmVersionPtr v = drmGetVersion(fd);
            if (v) {
                snprintf(out->driver, sizeof out->driver, "%.*s", v->name_len, v->name);
                drmFreeVersion(v);
            }
            close(fd);
        }
    }
}

ks_status
ks_drm_match(const ks_drm_key *key, ks_drm_node *out)
{
    drmDevicePtr *devs = NULL;
    int n, hit = -1;
    dev_t rdev;

    if (!out)
        return ks_error(KS_ERR_INVALID_ARG, "drm: output pointer is NULL");
    memset(out, 0, sizeof(*out));
    if (!key)
        return ks_error(KS_ERR_INVALID_ARG, "drm: key is NULL");
    if (!key->has_render && !key->has_primary && !key->has_pci)
        return KS_OK;
    n = drmGetDevices2(0, NULL, 0);
    if (n <= 0) {
        ks_log(KS_LOG_DEBUG, "drm", "drmGetDevices2 lists no DRM device (%d)", n);
        return KS_OK;
    }
    devs = calloc((size_t)n, sizeof(*devs));
    if (!devs)
        return ks_error(KS_ERR_NOMEM, "drm: no memory for %d devices", n);
    n = drmGetDevices2(0, devs, n);
    for (int i = 0; i < n && hit < 0; i++)
        if (key->has_render && has_node(devs[i], DRM_NODE_RENDER) &&
            node_is(devs[i]->nodes[DRM_NODE_RENDER], key->render_major, key->render_minor,
                    &rdev))
            hit = i;
    for (int i = 0; i < n && hit < 0; i++)
        if (key->has_primary && has_node(devs[i], DRM_NODE_PRIMARY) &&
            node_is(devs[i]->nodes[DRM_NODE_PRIMARY], key->primary_major,
                    key->primary_minor, &rdev))
            hit = i;
    for (int i = 0; i < n && hit < 0; i++)
        if (key->has_pci && pci_is(devs[i], key))
            hit = i;
    if (hit >= 0)
        describe_node(devs[hit], out);
    ks_log(KS_LOG_DEBUG, "drm", "%d DRM devices, match: %s", n,
           hit >= 0 ? (out->render_path[0] ? out->render_path : out->primary_path) : "none");
    if (n > 0)
        drmFreeDevices(devs, n);
    free(devs);
    return KS_OK;
}

bool
ks_drm_available(void)
{
    return true;
}

#else /* !KS_HAVE_LIBDRM */

ks_status
ks_drm_match(const ks_drm_key *key, ks_drm_node *out)
{
    if (!out)
        return ks_error(KS_ERR_INVALID_ARG, "drm: output pointer is NULL");
    memset(out, 0, sizeof(*out));
    (void)key;
    return KS_OK;
}

bool
ks_drm_available(void)
{
    return false;
}

#endif
