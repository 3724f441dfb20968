/* /dev/accel discovery. The kernel's compute-accel subsystem (char major
 * 261) gives each NPU a node /dev/accel/accelN and a class directory
 * /sys/class/accel/accelN whose `device` link leads to the parent device;
 * that device's `driver` link names the kernel driver (sysfs ABI:
 * Documentation/ABI/stable/sysfs-bus-*). libdrm's device scan covers
 * /dev/dri only, so we read sysfs ourselves. Both trees are looked up
 * under KESTREL_SYSFS_ROOT / KESTREL_DEV_ROOT so tests run on fake trees;
 * a fake tree may hold `device/driver` as a regular file containing the
 * name instead of a symlink. */
#include "driver/accel.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/base.h"

#define MAX_ACCEL 256  /* minors 0..255 */

/* The root prefix from |env| ("" if unset) and its length without
 * trailing slashes, so "/" and "" both mean the real tree. */
static const char *
root_of(const char *env, int *len)
{
    const char *r = getenv(env);
    size_t n;

    if (!r)
        r = "";
    n = strlen(r);
    while (n > 0 && r[n - 1] == '/')
        n--;
    *len = n > 512 ? 512 : (int)n;
    return r;
}

/* Parses "accelN" with N a plain decimal below MAX_ACCEL. */
static bool
parse_accel_name(const char *s, uint32_t *index)
{
    uint32_t v = 0;
    const char *p;

    if (strncmp(s, "accel", 5) != 0 || !s[5])
        return false;
    for (p = s + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v >= MAX_ACCEL)
            return false;
        v = v * 10 + (uint32_t)(*p - '0');
    }
    if (v >= MAX_ACCEL || (s[5] == '0' && s[6]))
        return false;
    *index = v;
    return true;
}

static void
scan_dir(const char *path, bool seen[MAX_ACCEL])
{
    DIR *d = opendir(path);
    struct dirent *e;
    uint32_t idx;

    if (!d) {
        if (errno != ENOENT)
            ks_log(KS_LOG_DEBUG, "accel", "cannot list %s: %s", path, strerror(errno));
        return;
    }
    while ((e = readdir(d)) != NULL)
        if (parse_accel_name(e->d_name, &idx))
            seen[idx] = true;
    closedir(d);
}

/* Copies |src| into |dst|, cut to fit. */
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
trim(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/* DRIVER=name from a uevent file. */
static bool
driver_from_uevent(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    char line[256];
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f)) {
        if (strncmp(line, "DRIVER=", 7) == 0) {
            trim(line);
            copy_cut(out, size, line + 7);
            found = out[0] != '\0';
        }
    }
    fclose(f);
    return found;
}

static void
driver_of(const char *class_dir, char *out, size_t size)
{
    char path[1024], target[1024];
    struct stat st;
    ssize_t n;

    snprintf(out, size, "unknown");
    if (snprintf(path, sizeof path, "%s/device/driver", class_dir) >= (int)sizeof path)
        return;
    if (lstat(path, &st) == 0) {
        if (S_ISLNK(st.st_mode)) {
            n = readlink(path, target, sizeof target - 1);
            if (n > 0) {
                const char *base;

                target[n] = '\0';
                while (n > 1 && target[n - 1] == '/')
                    target[--n] = '\0';
                base = strrchr(target, '/');
                copy_cut(out, size, base ? base + 1 : target);
                return;
            }
        } else if (S_ISREG(st.st_mode)) {
            FILE *f = fopen(path, "r");
            char line[128];

            if (f) {
                if (fgets(line, sizeof line, f)) {
                    trim(line);
                    if (line[0]) {
                        copy_cut(out, size, line);
                        fclose(f);
                        return;
                    }
                }
                fclose(f);
            }
        }
    }
    if (snprintf(path, sizeof path, "%s/device/uevent", class_dir) < (int)sizeof path)
        driver_from_uevent(path, out, size);
}

const char *
ks_accel_reason(const char *driver)
{
    static const struct { const char *driver, *reason; } known[] = {
        { "intel_vpu", "Intel NPU: needs the Level Zero NPU driver and compiler "
                       "(intel/linux-npu-driver); Kestrel has no Level Zero backend" },
        { "amdxdna", "AMD Ryzen AI NPU: needs XRT and the xdna userspace; Kestrel has "
                     "no XRT backend" },
        { "rocket", "Rockchip NPU: Mesa Teflon drives it only as a TensorFlow Lite "
                    "delegate for convolution graphs, not transformer layers" },
        { "ethosu", "Arm Ethos-U: Mesa Teflon drives it only as a TensorFlow Lite "
                    "delegate for convolution graphs, not transformer layers" },
        { "qaic", "Qualcomm Cloud AI 100: datacenter card driven through its own "
                  "runtime; Kestrel has no backend for it" },
        { "habanalabs", "Intel Gaudi: datacenter card driven through its own runtime; "
                        "Kestrel has no backend for it" },
    };

    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (driver && strcmp(driver, known[i].driver) == 0)
            return known[i].reason;
    return "no Kestrel execution path for this accelerator's driver; it is listed "
           "for information only";
}

ks_status
ks_accel_list(ks_accel_info *out, uint32_t *n)
{
    bool in_sys[MAX_ACCEL] = { false }, in_dev[MAX_ACCEL] = { false };
    char sys_dir[768], dev_dir[768], class_dir[1024];
    uint32_t count = 0, want;
    struct stat st;
    const char *root;
    int root_len;

    if (!n)
        return ks_error(KS_ERR_INVALID_ARG, "accel: count pointer is NULL");
    want = out ? *n : 0;
    *n = 0;
    root = root_of("KESTREL_SYSFS_ROOT", &root_len);
    snprintf(sys_dir, sizeof sys_dir, "%.*s/sys/class/accel", root_len, root);
    root = root_of("KESTREL_DEV_ROOT", &root_len);
    snprintf(dev_dir, sizeof dev_dir, "%.*s/dev/accel", root_len, root);
    scan_dir(sys_dir, in_sys);
    scan_dir(dev_dir, in_dev);

    for (uint32_t i = 0; i < MAX_ACCEL; i++) {
        ks_accel_info *a;

        if (!in_sys[i] && !in_dev[i])
            continue;
        if (!out) {
            count++;
            continue;
        }
        if (count >= want)
            break;
        a = &out[count++];
        memset(a, 0, sizeof(*a));
        a->index = i;
        if (snprintf(a->node, sizeof a->node, "%s/accel%u", dev_dir, i) >= (int)sizeof a->node)
            ks_log(KS_LOG_WARN, "accel", "KESTREL_DEV_ROOT is too long: node path cut");
        a->node_present = stat(a->node, &st) == 0;
        if (in_sys[i] &&
            snprintf(class_dir, sizeof class_dir, "%s/accel%u", sys_dir, i) < (int)sizeof class_dir) {
            driver_of(class_dir, a->driver, sizeof a->driver);
        } else {
            snprintf(a->driver, sizeof a->driver, "unknown");
        }
        snprintf(a->reason, sizeof a->reason, "%s", ks_accel_reason(a->driver));
        ks_log(KS_LOG_DEBUG, "accel", "accel%u: driver %s, node %s%s", i, a->driver,
               a->node, a->node_present ? "" : " (absent)");
    }
    *n = count;
    return KS_OK;
}
