/* Execution devices Kestrel can see: Vulkan devices and /dev/accel
 * accelerators. What `kestrel devices` prints. */
#ifndef KESTREL_DEVICES_H
#define KESTREL_DEVICES_H

#include <stdio.h>

#include "kestrel/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Flags for ks_devices_print. */
#define KS_DEVICES_JSON 1u  /* one JSON object instead of text */

/* Writes a report of every Vulkan device (index, name, type, driver name
 * and version, Vulkan version, DRM render node and bus, memory heaps with
 * size and budget, subgroup sizes, 8/16-bit storage, fp16/int8 arithmetic,
 * integer dot product, maxStorageBufferRange, maxComputeSharedMemorySize,
 * compute queue families), the device Kestrel would choose, the feature
 * mask from KESTREL_VK_MASK, and every /dev/accel accelerator with its
 * driver and why Kestrel has no execution path for it.
 *
 * With no Vulkan loader, driver or device (or a build without Vulkan) the
 * report says so and that Kestrel will run on the CPU; that is not an
 * error. Honours KESTREL_VALIDATE, KESTREL_SYSFS_ROOT and KESTREL_DEV_ROOT.
 * Errors: KS_ERR_INVALID_ARG (NULL |out| or unknown flag), KS_ERR_IO (write
 * failed), KS_ERR_NOMEM. Thread safe. */
KS_API ks_status ks_devices_print(FILE *out, unsigned flags);

#ifdef __cplusplus
}
#endif
#endif
