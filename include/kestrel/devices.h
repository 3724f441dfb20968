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
#define KS_DEVICES_JSON  1u  /* one JSON object instead of text */
#define KS_DEVICES_QUICK 2u  /* sensor samples 5 ms apart instead of 100 ms
                              * (tests): energy-derived powers get noisier */

/* Writes a report of every Vulkan device (index, name, type, driver name
 * and version, Vulkan version, DRM render node and bus, memory heaps with
 * size and budget, subgroup sizes, 8/16-bit storage, fp16/int8 arithmetic,
 * integer dot product, maxStorageBufferRange, maxComputeSharedMemorySize,
 * compute queue families), the device Kestrel would choose, the feature
 * mask from KESTREL_VK_MASK, and every /dev/accel accelerator with its
 * driver and why Kestrel has no execution path for it.
 *
 * Then the execution targets (JSON "targets": kind "cpu" with the online
 * core count, one "vulkan" per usable device, one "accel" per accelerator,
 * each with index, name, available and note) and the sensors (JSON
 * "sensors"): thermal zones with temperature and passive and critical
 * trips, power readings (hwmon, energy-derived, RAPL), batteries and
 * adapters, devfreq and GPU/NPU frequencies and loads, fans, and the
 * governor's view: the hottest relevant zone, its passive trip and the
 * default limit (that trip - 5 °C), or that with no passive trip the
 * governor stays off unless a limit is given. Sensors are sampled twice,
 * about 100 ms apart, so the call takes at least that long; missing or
 * unreadable sensors are named in the report, never an error.
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
