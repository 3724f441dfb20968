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

static void
json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

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
    json_str(f, d->name);
    fprintf(f, ",\"type\":\"%s\",\"usable\":%s,\"chosen\":%s,\"vendor_id\":%u,"
            "\"device_id\":%u,", ks_vk_type_str(d->type), tf(d->usable), tf(chosen),
            d->vendor_id, d->device_id);
    fputs("\"driver\":{\"name\":", f);
    json_str(f, d->driver_name);
    fputs(",\"info\":", f);
    json_str(f, d->driver_info);
    ks_vk_driver_version_str(d, a, sizeof a);
    fprintf(f, ",\"version\":\"%s\",\"id\":%u},", a, d->driver_id);
    api_str(d->api_version, a, sizeof a);
    fprintf(f, "\"api_version\":\"%s\",\"drm\":", a);
    if (d->drm.found) {
        fputs("{\"render\":", f);
        json_str(f, d->drm.render_path);
        fputs(",\"primary\":", f);
        json_str(f, d->drm.primary_path);
        fprintf(f, ",\"bus\":\"%s\",\"bus_id\":", bus_str(d->drm.bus));
        json_str(f, d->drm.bus_id);
        fputs(",\"driver\":", f);
        json_str(f, d->drm.driver);
        fputs(",\"sysfs\":", f);
        json_str(f, d->drm.sysfs_device);
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
        json_str(f, t[i].name);
        fprintf(f, ",\"available\":%s,\"note\":", tf(t[i].available));
        if (t[i].chosen) {
            char note[sizeof t[i].note + 32];

            snprintf(note, sizeof note, "Kestrel's choice; %s", t[i].note);
            json_str(f, note);
        } else {
            json_str(f, t[i].note);
        }
        if (strcmp(t[i].kind, "vulkan") == 0)
            fprintf(f, ",\"chosen\":%s", tf(t[i].chosen));
        if (strcmp(t[i].kind, "cpu") == 0)
            fprintf(f, ",\"n_cores\":%u", t[i].n_cores);
        if (strcmp(t[i].kind, "accel") == 0) {
            fputs(",\"node\":", f);
            if (t[i].node)
                json_str(f, t[i].node);
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
/* The governor's default control temperature is the passive trip minus
 * this (scheduler/governor.c, margin_mc 0 -> 5000; ks_runtime_params'
 * temp_limit_c). The driver cannot call the scheduler, so it is restated. */
#define GOV_MARGIN_MC 5000

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

/* The lowest trip of |type| above 0 (x86_pkg_temp lists unset passive
 * trips at 0); 0 if none. */
static int32_t
zone_trip_mc(const ks_telem_zone_info *z, ks_telem_trip_type type)
{
    int32_t best = 0;

    for (uint32_t k = 0; k < z->n_trips; k++)
        if (z->trips[k].type == type && z->trips[k].temp_mc > 0 &&
            (best == 0 || z->trips[k].temp_mc < best))
            best = z->trips[k].temp_mc;
    return best;
}

static const char *
power_kind_text(const ks_telem_power_info *p)
{
    switch (p->kind) {
    case KS_POWER_HWMON: return "hwmon power";
    case KS_POWER_HWMON_ENERGY: return "hwmon energy-derived";
    case KS_POWER_HWMON_VI: return "hwmon voltage x current";
    case KS_POWER_RAPL: break;
    }
    switch (p->rapl_role) {
    case KS_RAPL_PACKAGE: return p->rapl_mmio ? "RAPL package (mmio view), energy-derived"
                                              : "RAPL package, energy-derived";
    case KS_RAPL_CORE: return "RAPL core, energy-derived";
    case KS_RAPL_UNCORE: return "RAPL uncore, energy-derived";
    case KS_RAPL_DRAM: return "RAPL dram, energy-derived";
    case KS_RAPL_PSYS: return "RAPL psys, energy-derived";
    case KS_RAPL_NONE:
    case KS_RAPL_OTHER: break;
    }
    return "RAPL, energy-derived";
}

static const char *
power_kind_json(ks_telem_power_kind k)
{
    switch (k) {
    case KS_POWER_HWMON: return "hwmon_power";
    case KS_POWER_HWMON_ENERGY: return "hwmon_energy";
    case KS_POWER_HWMON_VI: return "hwmon_vi";
    case KS_POWER_RAPL: return "rapl";
    }
    return "unknown";
}

static const char *
rapl_role_str(ks_telem_rapl_role r)
{
    switch (r) {
    case KS_RAPL_NONE: return "none";
    case KS_RAPL_PACKAGE: return "package";
    case KS_RAPL_CORE: return "core";
    case KS_RAPL_UNCORE: return "uncore";
    case KS_RAPL_DRAM: return "dram";
    case KS_RAPL_PSYS: return "psys";
    case KS_RAPL_OTHER: break;
    }
    return "other";
}

static const char *
battery_status_str(ks_telem_battery_status s)
{
    switch (s) {
    case KS_BATTERY_CHARGING: return "charging";
    case KS_BATTERY_DISCHARGING: return "discharging";
    case KS_BATTERY_NOT_CHARGING: return "not charging";
    case KS_BATTERY_FULL: return "full";
    case KS_BATTERY_UNKNOWN: break;
    }
    return "unknown";
}

static const char *
supply_type_str(ks_telem_supply_type t)
{
    switch (t) {
    case KS_SUPPLY_BATTERY: return "battery";
    case KS_SUPPLY_MAINS: return "mains";
    case KS_SUPPLY_USB: return "usb";
    case KS_SUPPLY_OTHER: break;
    }
    return "other";
}

static const char *
freq_kind_str(ks_telem_freq_kind k)
{
    switch (k) {
    case KS_FREQ_DEVFREQ: return "devfreq";
    case KS_FREQ_I915: return "i915";
    case KS_FREQ_XE: return "xe";
    case KS_FREQ_V3D: return "v3d";
    case KS_FREQ_IVPU: return "ivpu";
    }
    return "unknown";
}

static const char *
syspower_str(ks_telem_power_src s)
{
    switch (s) {
    case KS_SYSPOWER_BATTERY: return "battery discharge";
    case KS_SYSPOWER_RAPL: return "RAPL package";
    case KS_SYSPOWER_HWMON: return "hwmon sum";
    case KS_SYSPOWER_RAIL_INPUT: return "input rail";
    case KS_SYSPOWER_RAIL_SUM: return "rails summed";
    case KS_SYSPOWER_NONE: break;
    }
    return "none";
}

static const char *
stale_str(bool stale)
{
    return stale ? " (stale)" : "";
}

static void
text_temp(FILE *f, const ks_telem_temp *t)
{
    if (t->valid)
        fprintf(f, "%.1f °C%s", t->temp_mc / 1000.0, stale_str(t->stale));
    else
        fputs("unreadable", f);
}

/* Counts of what could be read in this sample, for the "missing" lines. */
typedef struct sensor_counts {
    uint32_t zones, power, batteries, freq, fans;
} sensor_counts;

static sensor_counts
count_readable(const ks_telem_info *in, const ks_telem_sample *s)
{
    sensor_counts c = { 0 };

    for (uint32_t i = 0; i < in->n_zones; i++)
        c.zones += s->zone_temp[i].valid;
    for (uint32_t i = 0; i < in->n_power; i++)
        c.power += s->power_mw[i].valid;
    for (uint32_t i = 0; i < in->n_supplies; i++)
        c.batteries += in->supplies[i].type == KS_SUPPLY_BATTERY;
    for (uint32_t i = 0; i < in->n_freq; i++)
        c.freq += s->freq[i].cur_hz.valid || s->freq[i].load_permille.valid;
    for (uint32_t i = 0; i < in->n_fans; i++)
        c.fans += s->fan_rpm[i].valid;
    return c;
}

/* What is missing, one sentence each, shared by both reports. */
static uint32_t
missing_lines(const ks_telem_info *in, const sensor_counts *c, const char *out[5])
{
    uint32_t n = 0;

    if (!c->zones)
        out[n++] = in->n_zones ? "no thermal zones readable (every zone's temp failed to read)"
                               : "no thermal zones readable";
    if (!c->power)
        out[n++] = in->n_power ? "no power sensors readable (found, but unreadable: see the notes)"
                               : "no power sensors";
    if (!c->batteries)
        out[n++] = "no battery";
    if (!c->freq)
        out[n++] = "no devfreq or GPU/NPU frequency readable";
    if (!c->fans)
        out[n++] = "no fan tachometer";
    return n;
}

static void
text_governor(FILE *f, const ks_telem_info *in, const ks_telem_sample *s)
{
    fputs("  governor:  ", f);
    if (s->hottest_zone >= 0) {
        fprintf(f, "hottest relevant zone %s at ", in->zones[s->hottest_zone].name);
        text_temp(f, &s->hottest);
    } else {
        fputs("no CPU, GPU, NPU, SoC or package zone read", f);
    }
    if (s->passive_zone >= 0 && s->passive_trip.valid)
        fprintf(f, "; passive trip %.1f °C (%s); default limit %.1f °C (passive trip - %d °C)\n",
                s->passive_trip.temp_mc / 1000.0, in->zones[s->passive_zone].name,
                (s->passive_trip.temp_mc - GOV_MARGIN_MC) / 1000.0, GOV_MARGIN_MC / 1000);
    else
        fputs("; no passive trip point: the governor stays off unless a limit is given\n", f);
}

static void
text_sensors(FILE *f, const sensors *sn)
{
    const ks_telem_info *in;
    const ks_telem_sample *s;
    const char *missing[5];
    sensor_counts c;
    uint32_t n_missing;

    if (!sn->tel) {
        fprintf(f, "Sensors: not read (%s)\n", sn->why);
        return;
    }
    in = ks_telemetry_get_info(sn->tel);
    s = ks_telemetry_last(sn->tel);
    c = count_readable(in, s);
    n_missing = missing_lines(in, &c, missing);

    fprintf(f, "Sensors (sysfs under %s):\n", in->root[0] ? in->root : "/");
    for (uint32_t i = 0; i < in->n_zones; i++) {
        const ks_telem_zone_info *z = &in->zones[i];
        int32_t passive = zone_trip_mc(z, KS_TRIP_PASSIVE);
        int32_t critical = zone_trip_mc(z, KS_TRIP_CRITICAL);

        fprintf(f, "  zone       %-22s %-8s ", z->name, ks_telem_class_str(z->cls));
        text_temp(f, &s->zone_temp[i]);
        if (passive)
            fprintf(f, ", passive %.1f °C", passive / 1000.0);
        if (critical)
            fprintf(f, ", critical %.1f °C", critical / 1000.0);
        fputc('\n', f);
    }
    for (uint32_t i = 0; i < in->n_power; i++) {
        const ks_telem_power_info *p = &in->power[i];
        const ks_telem_value *v = &s->power_mw[i];

        fprintf(f, "  power      %-22s ", p->name);
        if (v->valid)
            fprintf(f, "%.2f W%s", v->value / 1000.0, stale_str(v->stale));
        else
            fputs(p->readable ? "no reading yet" : "not readable", f);
        fprintf(f, "  %s (%s)\n", power_kind_text(p), p->node);
    }
    for (uint32_t i = 0; i < in->n_supplies; i++) {
        const ks_telem_supply_info *si = &in->supplies[i];
        const ks_telem_supply_sample *ss = &s->supplies[i];

        if (si->type == KS_SUPPLY_BATTERY) {
            fprintf(f, "  battery    %-22s ", si->name);
            if (ss->capacity_pct.valid)
                fprintf(f, "%" PRId64 " %%%s", ss->capacity_pct.value,
                        stale_str(ss->capacity_pct.stale));
            else
                fputs("charge unknown", f);
            fprintf(f, ", %s", battery_status_str(ss->status));
            if (ss->power_mw.valid)
                fprintf(f, ", %.2f W%s", ss->power_mw.value / 1000.0,
                        stale_str(ss->power_mw.stale));
            fputc('\n', f);
        } else {
            fprintf(f, "  supply     %-22s %s, %s\n", si->name, supply_type_str(si->type),
                    !ss->online.valid ? "online unknown" :
                    ss->online.value ? "online" : "offline");
        }
    }
    for (uint32_t i = 0; i < in->n_freq; i++) {
        const ks_telem_freq_info *fi = &in->freq[i];
        const ks_telem_freq_sample *fs = &s->freq[i];
        bool comma = false;

        fprintf(f, "  frequency  %-22s %-8s ", fi->name, ks_telem_class_str(fi->cls));
        if (fs->cur_hz.valid) {
            fprintf(f, "%.0f MHz%s", fs->cur_hz.value / 1e6, stale_str(fs->cur_hz.stale));
            if (fs->min_hz.valid && fs->max_hz.valid)
                fprintf(f, " (%.0f..%.0f MHz)", fs->min_hz.value / 1e6,
                        fs->max_hz.value / 1e6);
            comma = true;
        }
        if (fs->load_permille.valid) {
            fprintf(f, "%sload %.1f %%%s", comma ? ", " : "",
                    fs->load_permille.value / 10.0, stale_str(fs->load_permille.stale));
            comma = true;
        }
        if (!comma)
            fputs("no reading", f);
        fprintf(f, "  %s\n", freq_kind_str(fi->kind));
    }
    for (uint32_t i = 0; i < in->n_fans; i++) {
        fprintf(f, "  fan        %-22s ", in->fans[i].name);
        if (s->fan_rpm[i].valid)
            fprintf(f, "%" PRId64 " rpm%s\n", s->fan_rpm[i].value,
                    stale_str(s->fan_rpm[i].stale));
        else
            fputs("unreadable\n", f);
    }
    if (in->has_undervolt)
        fprintf(f, "  under-voltage alarm: %s\n", !s->undervolt.valid ? "unreadable" :
                s->undervolt.value ? "RAISED" : "no");
    if (s->system_power_mw.valid)
        fprintf(f, "  system power %.2f W (%s)\n", s->system_power_mw.value / 1000.0,
                syspower_str(s->system_power_src));
    for (uint32_t i = 0; i < n_missing; i++)
        fprintf(f, "  %s\n", missing[i]);
    for (uint32_t i = 0; i < in->n_notes; i++)
        fprintf(f, "  note: %s\n", in->notes[i]);
    text_governor(f, in, s);
}

static void
json_value(FILE *f, const char *key, const ks_telem_value *v)
{
    fprintf(f, "\"%s\":", key);
    if (v->valid)
        fprintf(f, "%" PRId64, v->value);
    else
        fputs("null", f);
}

static void
json_mc(FILE *f, const char *key, bool valid, int32_t mc)
{
    fprintf(f, "\"%s\":", key);
    if (valid)
        fprintf(f, "%" PRId32, mc);
    else
        fputs("null", f);
}

static void
json_zone_name(FILE *f, const char *key, const ks_telem_info *in, int32_t zone)
{
    fprintf(f, "\"%s\":", key);
    if (zone >= 0 && (uint32_t)zone < in->n_zones)
        json_str(f, in->zones[zone].name);
    else
        fputs("null", f);
}

static void
json_sensors(FILE *f, const sensors *sn)
{
    const ks_telem_info *in;
    const ks_telem_sample *s;
    const char *missing[5];
    sensor_counts c;
    uint32_t n_missing;
    bool first = true;

    if (!sn->tel) {
        fputs("\"sensors\":{\"available\":false,\"reason\":", f);
        json_str(f, sn->why);
        fputc('}', f);
        return;
    }
    in = ks_telemetry_get_info(sn->tel);
    s = ks_telemetry_last(sn->tel);
    c = count_readable(in, s);
    n_missing = missing_lines(in, &c, missing);

    fputs("\"sensors\":{\"available\":true,\"root\":", f);
    json_str(f, in->root[0] ? in->root : "/");
    fputs(",\"zones\":[", f);
    for (uint32_t i = 0; i < in->n_zones; i++) {
        const ks_telem_zone_info *z = &in->zones[i];
        const ks_telem_temp *zt = &s->zone_temp[i];
        int32_t passive = zone_trip_mc(z, KS_TRIP_PASSIVE);
        int32_t critical = zone_trip_mc(z, KS_TRIP_CRITICAL);

        fprintf(f, "%s{\"name\":", i ? "," : "");
        json_str(f, z->name);
        fputs(",\"node\":", f);
        json_str(f, z->node);
        fprintf(f, ",\"class\":\"%s\",", ks_telem_class_str(z->cls));
        json_mc(f, "temp_mc", zt->valid, zt->temp_mc);
        fprintf(f, ",\"stale\":%s,", tf(zt->stale));
        json_mc(f, "passive_trip_mc", passive != 0, passive);
        fputc(',', f);
        json_mc(f, "critical_trip_mc", critical != 0, critical);
        fputc('}', f);
    }
    fputs("],\"power\":[", f);
    for (uint32_t i = 0; i < in->n_power; i++) {
        const ks_telem_power_info *p = &in->power[i];

        fprintf(f, "%s{\"name\":", i ? "," : "");
        json_str(f, p->name);
        fputs(",\"node\":", f);
        json_str(f, p->node);
        fprintf(f, ",\"kind\":\"%s\",\"energy_derived\":%s,\"rapl_domain\":",
                power_kind_json(p->kind),
                tf(p->kind == KS_POWER_HWMON_ENERGY || p->kind == KS_POWER_RAPL));
        if (p->kind == KS_POWER_RAPL)
            fprintf(f, "\"%s\",\"rapl_mmio\":%s", rapl_role_str(p->rapl_role),
                    tf(p->rapl_mmio));
        else
            fputs("null", f);
        fprintf(f, ",\"readable\":%s,", tf(p->readable));
        json_value(f, "power_mw", &s->power_mw[i]);
        fprintf(f, ",\"stale\":%s}", tf(s->power_mw[i].stale));
    }
    fputs("],\"batteries\":[", f);
    for (uint32_t i = 0; i < in->n_supplies; i++) {
        const ks_telem_supply_sample *ss = &s->supplies[i];

        if (in->supplies[i].type != KS_SUPPLY_BATTERY)
            continue;
        fprintf(f, "%s{\"name\":", first ? "" : ",");
        first = false;
        json_str(f, in->supplies[i].name);
        fputc(',', f);
        json_value(f, "capacity_pct", &ss->capacity_pct);
        fprintf(f, ",\"status\":\"%s\",", battery_status_str(ss->status));
        json_value(f, "power_mw", &ss->power_mw);
        fputc('}', f);
    }
    fputs("],\"supplies\":[", f);
    first = true;
    for (uint32_t i = 0; i < in->n_supplies; i++) {
        if (in->supplies[i].type == KS_SUPPLY_BATTERY)
            continue;
        fprintf(f, "%s{\"name\":", first ? "" : ",");
        first = false;
        json_str(f, in->supplies[i].name);
        fprintf(f, ",\"type\":\"%s\",", supply_type_str(in->supplies[i].type));
        json_value(f, "online", &s->supplies[i].online);
        fputc('}', f);
    }
    fputs("],\"frequency\":[", f);
    for (uint32_t i = 0; i < in->n_freq; i++) {
        const ks_telem_freq_sample *fs = &s->freq[i];

        fprintf(f, "%s{\"name\":", i ? "," : "");
        json_str(f, in->freq[i].name);
        fprintf(f, ",\"kind\":\"%s\",\"class\":\"%s\",", freq_kind_str(in->freq[i].kind),
                ks_telem_class_str(in->freq[i].cls));
        json_value(f, "cur_hz", &fs->cur_hz);
        fputc(',', f);
        json_value(f, "min_hz", &fs->min_hz);
        fputc(',', f);
        json_value(f, "max_hz", &fs->max_hz);
        fputc(',', f);
        json_value(f, "load_permille", &fs->load_permille);
        fputc('}', f);
    }
    fputs("],\"fans\":[", f);
    for (uint32_t i = 0; i < in->n_fans; i++) {
        fprintf(f, "%s{\"name\":", i ? "," : "");
        json_str(f, in->fans[i].name);
        fputc(',', f);
        json_value(f, "rpm", &s->fan_rpm[i]);
        fputc('}', f);
    }
    fputs("],\"undervolt\":", f);
    if (in->has_undervolt && s->undervolt.valid)
        fputs(tf(s->undervolt.value != 0), f);
    else
        fputs("null", f);
    fputc(',', f);
    json_value(f, "system_power_mw", &s->system_power_mw);
    fprintf(f, ",\"system_power_source\":\"%s\",\"governor\":{",
            s->system_power_mw.valid ? syspower_str(s->system_power_src) : "none");
    json_zone_name(f, "hottest_zone", in, s->hottest_zone);
    fputc(',', f);
    json_mc(f, "hottest_mc", s->hottest_zone >= 0 && s->hottest.valid, s->hottest.temp_mc);
    fputc(',', f);
    json_zone_name(f, "passive_zone", in, s->passive_zone);
    fputc(',', f);
    json_mc(f, "passive_trip_mc", s->passive_zone >= 0 && s->passive_trip.valid,
            s->passive_trip.temp_mc);
    fputc(',', f);
    json_mc(f, "critical_trip_mc", s->critical_trip.valid, s->critical_trip.temp_mc);
    fputc(',', f);
    json_mc(f, "default_limit_mc", s->passive_zone >= 0 && s->passive_trip.valid,
            s->passive_trip.temp_mc - GOV_MARGIN_MC);
    fputs(",\"note\":", f);
    json_str(f, s->passive_zone >= 0 && s->passive_trip.valid
                    ? "default limit: the passive trip minus 5 degrees C"
                    : "no passive trip point: the governor stays off unless a limit is given");
    fputs("},\"missing\":[", f);
    for (uint32_t i = 0; i < n_missing; i++) {
        fputs(i ? "," : "", f);
        json_str(f, missing[i]);
    }
    fputs("],\"notes\":[", f);
    for (uint32_t i = 0; i < in->n_notes; i++) {
        fputs(i ? "," : "", f);
        json_str(f, in->notes[i]);
    }
    fputs("]}", f);
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
            json_str(f, reason);
        else
            fputs("null", f);
#ifdef KS_HAVE_VULKAN
        fputs(",\"mask\":", f);
        json_str(f, mask_text);
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
            json_str(f, acc[i].node);
            fprintf(f, ",\"node_present\":%s,\"driver\":", tf(acc[i].node_present));
            json_str(f, acc[i].driver);
            fputs(",\"execution_path\":false,\"reason\":", f);
            json_str(f, acc[i].reason);
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
