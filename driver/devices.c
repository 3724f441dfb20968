/* `kestrel devices`: one report of what can run Kestrel's work on this
 * machine. Vulkan devices come from ks_vk_devices_list (its own short-lived
 * instance), accelerators from ks_accel_list; from both and the online CPU
 * count it derives the execution targets (CPU, usable Vulkan devices, and
 * accelerators with no execution path). Sensor readings come from one
 * short-lived ks_telemetry: opened (first sample) before the device
 * listing and sampled again about 100 ms later, so energy counters give a
 * power. The report is text for people or one JSON object for tools. A
 * machine without Vulkan or without sensors is a normal case: the report
 * says what is missing and never fails for it. */
#include "kestrel/devices.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "driver/accel.h"
#include "driver/base.h"
#include "driver/telemetry.h"
#ifdef KS_HAVE_VULKAN
#include "driver/vk.h"
#endif

static const char *
tf(bool b)
{
    return b ? "true" : "false";
}

#ifdef KS_HAVE_VULKAN

static void
human_bytes(uint64_t b, char *buf, size_t size)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    int u = 0;

    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%" PRIu64 " B", b);
    else
        snprintf(buf, size, "%.1f %s", v, units[u]);
}

static const char *
yes_no(bool b)
{
    return b ? "yes" : "no";
}

static void
api_str(uint32_t v, char *buf, size_t size)
{
    snprintf(buf, size, "%u.%u.%u", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
             VK_API_VERSION_PATCH(v));
}

static void
queue_flags_str(VkQueueFlags fl, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s%s%s",
             (fl & VK_QUEUE_GRAPHICS_BIT) ? "graphics+" : "",
             "compute",
             (fl & VK_QUEUE_TRANSFER_BIT) ? "+transfer" : "",
             (fl & VK_QUEUE_GRAPHICS_BIT) ? "" : " (compute-only)");
}

static const char *
bus_str(ks_drm_bus b)
{
    switch (b) {
    case KS_DRM_BUS_PCI: return "pci";
    case KS_DRM_BUS_USB: return "usb";
    case KS_DRM_BUS_PLATFORM: return "platform";
    case KS_DRM_BUS_HOST1X: return "host1x";
    default: return "unknown";
    }
}

static void
text_device(FILE *f, const ks_vk_device_info *d, bool chosen)
{
    char a[64], b[64], c[64];

    fprintf(f, "  [%u] %s%s\n", d->index, d->name, chosen ? "  <- Kestrel's choice" : "");
    fprintf(f, "      type        %s%s\n", ks_vk_type_str(d->type),
            d->usable ? "" : " (not usable: needs Vulkan 1.1 and a compute queue)");
    ks_vk_driver_version_str(d, a, sizeof a);
    fprintf(f, "      driver      %s %s%s%s%s\n", d->driver_name[0] ? d->driver_name : "?",
            a, d->driver_info[0] ? " (" : "", d->driver_info, d->driver_info[0] ? ")" : "");
    api_str(d->api_version, a, sizeof a);
    fprintf(f, "      vulkan      %s, vendor 0x%04x, device 0x%04x\n", a, d->vendor_id,
            d->device_id);
    if (d->drm.found)
        fprintf(f, "      drm node    %s (%s %s%s%s)\n",
                d->drm.render_path[0] ? d->drm.render_path : d->drm.primary_path,
                bus_str(d->drm.bus), d->drm.bus_id, d->drm.driver[0] ? ", driver " : "",
                d->drm.driver);
    else
        fprintf(f, "      drm node    none (%s)\n",
                !d->has_drm_ext && !d->has_pci_ext
                    ? "driver has neither VK_EXT_physical_device_drm nor VK_EXT_pci_bus_info"
                    : "no matching libdrm device");
    for (uint32_t h = 0; h < d->n_heaps; h++) {
        human_bytes(d->heaps[h].size_bytes, a, sizeof a);
        if (d->has_memory_budget) {
            human_bytes(d->heaps[h].budget_bytes, b, sizeof b);
            human_bytes(d->heaps[h].usage_bytes, c, sizeof c);
        }
        fprintf(f, "      heap %-2u     %s%s, budget %s%s%s\n", h, a,
                d->heaps[h].device_local ? " device-local" : "",
                d->has_memory_budget ? b : "n/a (no VK_EXT_memory_budget)",
                d->has_memory_budget ? ", used " : "", d->has_memory_budget ? c : "");
    }
    fprintf(f, "      subgroup    %u (min %u, max %u, size control %s)\n", d->subgroup_size,
            d->subgroup_min, d->subgroup_max, yes_no(d->subgroup_size_control));
    fprintf(f, "      storage     8-bit %s, 16-bit %s\n", yes_no(d->storage_8bit),
            yes_no(d->storage_16bit));
    fprintf(f, "      arithmetic  fp16 %s, int8 %s, int16 %s, int64 %s\n",
            yes_no(d->float16), yes_no(d->int8), yes_no(d->int16), yes_no(d->int64));
    fprintf(f, "      int dot     %s%s\n", yes_no(d->int_dot),
            d->int_dot ? (d->int_dot_accel ? " (accelerated)" : " (not accelerated)") : "");
    human_bytes(d->max_storage_buffer_range, a, sizeof a);
    human_bytes(d->max_shared_bytes, b, sizeof b);
    fprintf(f, "      limits      maxStorageBufferRange %s, maxComputeSharedMemorySize %s, "
            "maxComputeWorkGroupInvocations %u\n", a, b, d->max_wg_invocations);
    for (uint32_t q = 0; q < d->n_queue_families; q++) {
        queue_flags_str(d->queue_families[q].flags, a, sizeof a);
        fprintf(f, "      queues      family %u: %s, %u queue%s\n",
                d->queue_families[q].family, a, d->queue_families[q].n_queues,
                d->queue_families[q].n_queues == 1 ? "" : "s");
    }
    if (d->external_memory_host)
        fprintf(f, "      host import yes (alignment %" PRIu64 " B)\n",
                d->host_import_align_bytes);
}

static void
json_device(FILE *f, const ks_vk_device_info *d, bool chosen)
{
    char a[64];

    fprintf(f, "{\"index\":%u,\"name\":", d->index);
    ks_json_str(f, d->name);
    fprintf(f, ",\"type\":\"%s\",\"usable\":%s,\"chosen\":%s,\"vendor_id\":%u,"
            "\"device_id\":%u,", ks_vk_type_str(d->type), tf(d->usable), tf(chosen),
            d->vendor_id, d->device_id);
    fputs("\"driver\":{\"name\":", f);
    ks_json_str(f, d->driver_name);
    fputs(",\"info\":", f);
    ks_json_str(f, d->driver_info);
    ks_vk_driver_version_str(d, a, sizeof a);
    fprintf(f, ",\"version\":\"%s\",\"id\":%u},", a, d->driver_id);
    api_str(d->api_version, a, sizeof a);
    fprintf(f, "\"api_version\":\"%s\",\"drm\":", a);
    if (d->drm.found) {
        fputs("{\"render\":", f);
        ks_json_str(f, d->drm.render_path);
        fputs(",\"primary\":", f);
        ks_json_str(f, d->drm.primary_path);
        fprintf(f, ",\"bus\":\"%s\",\"bus_id\":", bus_str(d->drm.bus));
        ks_json_str(f, d->drm.bus_id);
        fputs(",\"driver\":", f);
        ks_json_str(f, d->drm.driver);
        fputs(",\"sysfs\":", f);
        ks_json_str(f, d->drm.sysfs_device);
        fputs("},", f);
    } else {
        fputs("null,", f);
    }
    fprintf(f, "\"memory_budget\":%s,\"heaps\":[", tf(d->has_memory_budget));
    for (uint32_t h = 0; h < d->n_heaps; h++) {
        fprintf(f, "%s{\"size\":%" PRIu64 ",\"device_local\":%s", h ? "," : "",
                d->heaps[h].size_bytes, tf(d->heaps[h].device_local));
        if (d->has_memory_budget)
            fprintf(f, ",\"budget\":%" PRIu64 ",\"usage\":%" PRIu64, d->heaps[h].budget_bytes,
                    d->heaps[h].usage_bytes);
        fputc('}', f);
    }
    fprintf(f, "],\"subgroup\":{\"size\":%u,\"min\":%u,\"max\":%u,\"size_control\":%s},",
            d->subgroup_size, d->subgroup_min, d->subgroup_max, tf(d->subgroup_size_control));
    fprintf(f, "\"storage_8bit\":%s,\"storage_16bit\":%s,\"float16\":%s,\"int8\":%s,"
            "\"int16\":%s,\"int64\":%s,\"int_dot\":%s,\"int_dot_accelerated\":%s,",
            tf(d->storage_8bit), tf(d->storage_16bit), tf(d->float16), tf(d->int8),
            tf(d->int16), tf(d->int64), tf(d->int_dot), tf(d->int_dot_accel));
    fprintf(f, "\"max_storage_buffer_range\":%" PRIu64 ",\"max_compute_shared_memory\":%u,"
            "\"max_workgroup_invocations\":%u,\"external_memory_host\":%s,\"queues\":[",
            d->max_storage_buffer_range, d->max_shared_bytes, d->max_wg_invocations,
            tf(d->external_memory_host));
    for (uint32_t q = 0; q < d->n_queue_families; q++) {
        VkQueueFlags fl = d->queue_families[q].flags;
        fprintf(f, "%s{\"family\":%u,\"count\":%u,\"graphics\":%s,\"transfer\":%s}",
                q ? "," : "", d->queue_families[q].family, d->queue_families[q].n_queues,
                tf(fl & VK_QUEUE_GRAPHICS_BIT), tf(fl & VK_QUEUE_TRANSFER_BIT));
    }
    fputs("]}", f);
}

/* What a Vulkan device adds as an execution target. A CPU-type device
 * (llvmpipe, SwiftShader) runs on the cores the CPU target already uses. */
static const char *
vk_type_note(ks_vk_type t)
{
    switch (t) {
    case KS_VK_TYPE_DISCRETE: return "discrete GPU";
    case KS_VK_TYPE_INTEGRATED: return "integrated GPU";
    case KS_VK_TYPE_VIRTUAL: return "virtual GPU";
    case KS_VK_TYPE_CPU: return "software, on the same CPU cores";
    case KS_VK_TYPE_OTHER: break;
    }
    return "other device type";
}

#endif /* KS_HAVE_VULKAN */

/* ---- execution targets ------------------------------------------------- */

/* One place Kestrel's work could run, in the form both reports print. */
typedef struct target {
    const char *kind;       /* "cpu", "vulkan", "accel" */
    uint32_t    index;      /* Vulkan device index, N of accelN, 0 for the CPU */
    const char *name;       /* borrowed from the device lists */
    const char *node;       /* accelerators: the device node, or NULL */
    bool        available;
    bool        chosen;     /* the Vulkan device Kestrel would pick */
    uint32_t    n_cores;    /* cpu only */
    char        note[320];
} target;

static uint32_t
online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n > 0 ? (uint32_t)n : 1;
}

static void
text_targets(FILE *f, const target *t, uint32_t n, const char *no_vulkan)
{
    bool any_vulkan = false;

    fputs("Execution targets:\n", f);
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(t[i].kind, "cpu") == 0) {
            fprintf(f, "  cpu        %s\n", t[i].note);
        } else if (strcmp(t[i].kind, "vulkan") == 0) {
            any_vulkan = true;
            fprintf(f, "  vulkan %-3u %s: %s%s\n", t[i].index, t[i].name,
                    t[i].note, t[i].chosen ? "  <- Kestrel's choice" : "");
        } else {
            fprintf(f, "  accel %-4u %s (%s): %s\n", t[i].index, t[i].name,
                    t[i].node ? t[i].node : "no device node", t[i].note);
        }
    }
    if (!any_vulkan)
        fprintf(f, "  vulkan     none: %s\n", no_vulkan);
}

static void
json_targets(FILE *f, const target *t, uint32_t n)
{
    fputs("\"targets\":[", f);
    for (uint32_t i = 0; i < n; i++) {
        fprintf(f, "%s{\"kind\":\"%s\",\"index\":%u,\"name\":", i ? "," : "", t[i].kind,
                t[i].index);
        ks_json_str(f, t[i].name);
        fprintf(f, ",\"available\":%s,\"note\":", tf(t[i].available));
        if (t[i].chosen) {
            char note[sizeof t[i].note + 32];

            snprintf(note, sizeof note, "Kestrel's choice; %s", t[i].note);
            ks_json_str(f, note);
        } else {
            ks_json_str(f, t[i].note);
        }
        if (strcmp(t[i].kind, "vulkan") == 0)
            fprintf(f, ",\"chosen\":%s", tf(t[i].chosen));
        if (strcmp(t[i].kind, "cpu") == 0)
            fprintf(f, ",\"n_cores\":%u", t[i].n_cores);
        if (strcmp(t[i].kind, "accel") == 0) {
            fputs(",\"node\":", f);
            if (t[i].node)
                ks_json_str(f, t[i].node);
            else
                fputs("null", f);
        }
        fputc('}', f);
    }
    fputc(']', f);
}

/* ---- sensors ----------------------------------------------------------- */

/* Two samples this far apart turn energy counters (RAPL, hwmon energy)
 * into an average power; KS_DEVICES_QUICK shortens it for tests. The
 * telemetry keeps the previous power below 1 ms, so stay above that. */
#define SAMPLE_GAP_NS       100000000ull
#define SAMPLE_GAP_QUICK_NS   5000000ull

typedef struct sensors {
    ks_telemetry *tel;          /* NULL: not opened, |why| says why */
    char          why[256];
    uint64_t      opened_ns;
} sensors;

/* Opens the telemetry, which takes the first sample. Never fails the
 * report: a failure (out of memory only) is kept as text. */
static void
sensors_open(sensors *sn)
{
    sn->why[0] = '\0';
    if (ks_telemetry_open(NULL, &sn->tel) != KS_OK) {
        snprintf(sn->why, sizeof sn->why, "%s", ks_last_error());
        sn->tel = NULL;
    }
    sn->opened_ns = ks_now_ns();
}

/* The second sample, |gap_ns| after the first; the time spent listing
 * devices in between counts towards the gap. */
static void
sensors_sample(sensors *sn, uint64_t gap_ns)
{
    uint64_t now;

    if (!sn->tel)
        return;
    while ((now = ks_now_ns()) < sn->opened_ns + gap_ns) {
        uint64_t left = sn->opened_ns + gap_ns - now;
        struct timespec ts = { (time_t)(left / 1000000000u), (long)(left % 1000000000u) };

        nanosleep(&ts, NULL);
    }
    ks_telemetry_sample(sn->tel, NULL);
}

/* The Sensors section and the "sensors" object: telemetry's renderer,
 * with the governor's margin for the default limit. */
static void
text_sensors(FILE *f, const sensors *sn)
{
    if (!sn->tel) {
        fprintf(f, "Sensors: not read (%s)\n", sn->why);
        return;
    }
    ks_telemetry_describe(sn->tel, KS_TELEM_DEFAULT_MARGIN_MC, f);
}

static void
json_sensors(FILE *f, const sensors *sn)
{
    fputs("\"sensors\":", f);
    if (!sn->tel) {
        fputs("{\"available\":false,\"reason\":", f);
        ks_json_str(f, sn->why);
        fputc('}', f);
        return;
    }
    ks_telemetry_describe_json(sn->tel, KS_TELEM_DEFAULT_MARGIN_MC, f);
}

ks_status
ks_devices_print(FILE *f, unsigned flags)
{
    bool json = flags & KS_DEVICES_JSON;
    ks_accel_info *acc = NULL;
    uint32_t n_acc = 0, n_targets = 0;
    char reason[1024] = "";
    bool cpu_only = true;
    sensors sn = { 0 };
    target *targets = NULL;
    ks_status st;
#ifdef KS_HAVE_VULKAN
    ks_vk_device_info *devs = NULL;
    uint32_t n_dev = 0, chosen = UINT32_MAX;
    ks_vk_mask mask;
    char mask_text[128];
    bool mask_ok;
#endif

    if (!f)
        return ks_null_arg("ks_devices_print", "out");
    if (flags & ~(KS_DEVICES_JSON | KS_DEVICES_QUICK))
        return ks_error(KS_ERR_INVALID_ARG, "devices: unknown flags 0x%x", flags);

    /* First so that listing the devices counts towards the gap between
     * the two samples. */
    sensors_open(&sn);

    if ((st = ks_accel_list(NULL, &n_acc)) != KS_OK)
        goto out;
    if (n_acc) {
        acc = calloc(n_acc, sizeof(*acc));
        if (!acc) {
            st = ks_error(KS_ERR_NOMEM, "devices: no memory for %u accelerators", n_acc);
            goto out;
        }
        if ((st = ks_accel_list(acc, &n_acc)) != KS_OK)
            goto out;
    }

#ifdef KS_HAVE_VULKAN
    mask_ok = ks_vk_mask_parse(getenv("KESTREL_VK_MASK"), &mask) == KS_OK;
    if (mask_ok)
        ks_vk_mask_format(&mask, mask_text, sizeof mask_text);
    else
        snprintf(mask_text, sizeof mask_text, "%s", ks_last_error());

    st = ks_vk_devices_list(NULL, &n_dev);
    if (st == KS_OK && n_dev) {
        devs = calloc(n_dev, sizeof(*devs));
        if (!devs) {
            st = ks_error(KS_ERR_NOMEM, "devices: no memory for %u devices", n_dev);
            goto out;
        }
        st = ks_vk_devices_list(devs, &n_dev);
    }
    if (st == KS_ERR_NOMEM)
        goto out;
    if (st != KS_OK) {
        snprintf(reason, sizeof reason, "%s", ks_last_error());
        n_dev = 0;
    } else if (ks_vk_device_choose(devs, n_dev, -1, &chosen) == KS_OK) {
        cpu_only = false;
    } else {
        snprintf(reason, sizeof reason, "%s", ks_last_error());
    }
    st = KS_OK;
    targets = calloc(1 + n_dev + n_acc, sizeof(*targets));
#else
    snprintf(reason, sizeof reason, "this Kestrel was built without Vulkan support");
    targets = calloc(1 + n_acc, sizeof(*targets));
#endif
    if (!targets) {
        st = ks_error(KS_ERR_NOMEM, "devices: no memory for the execution targets");
        goto out;
    }
    targets[0] = (target){ .kind = "cpu", .name = "CPU", .available = true,
                           .n_cores = online_cores() };
    snprintf(targets[0].note, sizeof targets[0].note, "%u online core%s, always available",
             targets[0].n_cores, targets[0].n_cores == 1 ? "" : "s");
    n_targets = 1;
#ifdef KS_HAVE_VULKAN
    for (uint32_t i = 0; i < n_dev; i++) {
        target *t = &targets[n_targets];

        if (!devs[i].usable)
            continue;
        *t = (target){ .kind = "vulkan", .index = devs[i].index, .name = devs[i].name,
                       .available = true, .chosen = i == chosen };
        snprintf(t->note, sizeof t->note, "%s", vk_type_note(devs[i].type));
        n_targets++;
    }
#endif
    for (uint32_t i = 0; i < n_acc; i++) {
        target *t = &targets[n_targets++];

        *t = (target){ .kind = "accel", .index = acc[i].index, .name = acc[i].driver,
                       .node = acc[i].node_present ? acc[i].node : NULL };
        snprintf(t->note, sizeof t->note, "no execution path: %s", acc[i].reason);
    }

    sensors_sample(&sn, (flags & KS_DEVICES_QUICK) ? SAMPLE_GAP_QUICK_NS : SAMPLE_GAP_NS);

    if (json) {
        fputs("{\"vulkan\":{\"available\":", f);
        fputs(tf(!cpu_only), f);
        fputs(",\"reason\":", f);
        if (reason[0])
            ks_json_str(f, reason);
        else
            fputs("null", f);
#ifdef KS_HAVE_VULKAN
        fputs(",\"mask\":", f);
        ks_json_str(f, mask_text);
        fprintf(f, ",\"mask_valid\":%s,\"chosen\":", tf(mask_ok));
        if (cpu_only)
            fputs("null", f);
        else
            fprintf(f, "%u", chosen);
        fputs(",\"devices\":[", f);
        for (uint32_t i = 0; i < n_dev; i++) {
            if (i)
                fputc(',', f);
            json_device(f, &devs[i], i == chosen);
        }
        fputc(']', f);
#endif
        fputs("},\"accelerators\":[", f);
        for (uint32_t i = 0; i < n_acc; i++) {
            fprintf(f, "%s{\"index\":%u,\"node\":", i ? "," : "", acc[i].index);
            ks_json_str(f, acc[i].node);
            fprintf(f, ",\"node_present\":%s,\"driver\":", tf(acc[i].node_present));
            ks_json_str(f, acc[i].driver);
            fputs(",\"execution_path\":false,\"reason\":", f);
            ks_json_str(f, acc[i].reason);
            fputc('}', f);
        }
        fprintf(f, "],\"cpu_only\":%s,", tf(cpu_only));
        json_targets(f, targets, n_targets);
        fputc(',', f);
        json_sensors(f, &sn);
        fputs("}\n", f);
    } else {
#ifdef KS_HAVE_VULKAN
        if (n_dev) {
            fprintf(f, "Vulkan devices: %u\n", n_dev);
            for (uint32_t i = 0; i < n_dev; i++)
                text_device(f, &devs[i], i == chosen);
            fprintf(f, "Feature mask (KESTREL_VK_MASK): %s%s\n", mask_ok ? "" : "invalid: ",
                    mask_text);
        }
#endif
        if (cpu_only)
            fprintf(f, "Vulkan: not available (%s)\nKestrel will run on the CPU.\n", reason);
        if (n_acc == 0) {
            fprintf(f, "Accelerators (/dev/accel): none\n");
        } else {
            fprintf(f, "Accelerators (/dev/accel): %u\n", n_acc);
            for (uint32_t i = 0; i < n_acc; i++)
                fprintf(f, "  accel%u  %s  driver %s: no execution path: %s\n", acc[i].index,
                        acc[i].node_present ? acc[i].node : "(no device node)",
                        acc[i].driver, acc[i].reason);
        }
        text_targets(f, targets, n_targets, reason[0] ? reason : "no usable device");
        text_sensors(f, &sn);
    }
    if (fflush(f) != 0 || ferror(f))
        st = ks_error(KS_ERR_IO, "devices: writing the report failed");
out:
#ifdef KS_HAVE_VULKAN
    free(devs);
#endif
    free(targets);
    free(acc);
    ks_telemetry_destroy(sn.tel);
    return st;
}
