/* Fault injection for tests, without an LD_PRELOAD shim.
 *
 * KESTREL_FAULT lists points and when they fail: "name@N" fails the Nth
 * time the point is reached (counting from 1), "name@N+" the Nth time and
 * every time after, and several are separated by commas:
 *
 *   KESTREL_FAULT=vk_submit_lost@7           the 7th queue submit: device lost
 *   KESTREL_FAULT=vk_pipeline_unknown@1+     every pipeline creation fails
 *
 * The points (each named where it is checked):
 *   vk_submit_lost       a queue submit reports VK_ERROR_DEVICE_LOST
 *   vk_fence_timeout     a fence wait of a replayed command buffer times out
 *                        (a software device waits a second time, which
 *                        counts again: "@N" alone then recovers, "@N+"
 *                        loses the device)
 *   vk_pipeline_unknown  pipeline creation reports VK_ERROR_UNKNOWN
 *
 * Unset, every check is one relaxed atomic load. Internal; not installed. */
#ifndef KS_FAULT_H
#define KS_FAULT_H

#include <stdbool.h>

/* True when point |name| is to fail now; counts the call. Thread safe. */
bool ks_fault_hit(const char *name);

/* Reads KESTREL_FAULT again and restarts every count (tests that change
 * the variable between cases call it; otherwise it is read once). */
void ks_fault_reset(void);

#endif
