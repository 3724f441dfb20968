/* Compute accelerators under /dev/accel (the kernel's accel subsystem:
 * NPUs such as intel_vpu, amdxdna, rocket, ethosu). Kestrel can list and
 * later monitor them but has no execution path for any of them yet; each
 * record says why. Internal; not installed. */
#ifndef KS_ACCEL_H
#define KS_ACCEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kestrel/status.h"

typedef struct ks_accel_info {
    uint32_t index;        /* N of accelN */
    bool     node_present; /* <dev root>/dev/accel/accelN exists */
    char     node[256];    /* /dev/accel/accelN, with KESTREL_DEV_ROOT prefixed */
    char     driver[64];   /* kernel driver name; "unknown" if sysfs says nothing */
    char     reason[192];  /* why Kestrel cannot run work on it */
} ks_accel_info;

/* Count-then-fill list of accelerators, sorted by index. With out == NULL,
 * *n receives the count; otherwise at most *n records are written and *n
 * receives the number written. Devices are found from
 * <KESTREL_SYSFS_ROOT>/sys/class/accel/accelN (driver from the real
 * `device/driver` symlink's basename, or, in fake trees, a regular file
 * `device/driver` holding the name, or DRIVER= in `device/uevent`) and from
 * <KESTREL_DEV_ROOT>/dev/accel/accelN. Both roots default to "". A missing
 * directory means no accelerators (KS_OK, *n = 0). Thread safe. */
ks_status ks_accel_list(ks_accel_info *out, uint32_t *n);

/* The "no execution path" sentence for a driver name; never NULL. */
const char *ks_accel_reason(const char *driver);

#endif
