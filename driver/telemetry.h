/* Sysfs telemetry: thermal zones, cooling devices, power and energy sensors,
 * batteries and adapters, GPU/NPU frequency and load. Internal; not installed.
 *
 * ks_telemetry_open() walks /sys/class/{thermal,hwmon,powercap,power_supply,
 * devfreq,drm,accel} under a root directory, keeps what it can read and
 * notes what it cannot; nothing missing or unreadable makes it fail.
 * ks_telemetry_sample() then re-reads every value into a plain struct with
 * fixed arrays, so a sample allocates nothing. The description of each
 * sensor (names, classes, trip points, limits) lives in ks_telem_info,
 * index-aligned with the sample's arrays.
 *
 * Units follow the sysfs ABI converted to what the governor wants:
 * temperatures in millidegrees Celsius (int32), power in mW, frequencies in
 * Hz, loads in permille. Sources: Documentation/ABI/testing/sysfs-class-
 * thermal, -power, -devfreq; Documentation/hwmon/sysfs-interface.rst;
 * Documentation/power/powercap/powercap.rst. */
#ifndef KS_TELEMETRY_H
#define KS_TELEMETRY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "kestrel/status.h"

#define KS_TELEM_NAME_MAX     48
#define KS_TELEM_MAX_ZONES    32
#define KS_TELEM_MAX_TRIPS    12
#define KS_TELEM_MAX_COOLING  32
#define KS_TELEM_MAX_POWER    24
#define KS_TELEM_MAX_SUPPLIES 8
#define KS_TELEM_MAX_FREQ     16
#define KS_TELEM_MAX_FANS     8
#define KS_TELEM_MAX_RAPL_CONSTRAINTS 3
#define KS_TELEM_MAX_NOTES    24
#define KS_TELEM_NOTE_MAX     160

/* What a thermal zone or frequency domain measures, from its name
 * (case-insensitive substrings; see ks_telem_classify). */
typedef enum ks_telem_class {
    KS_TELEM_OTHER = 0,   /* wifi, unknown: not used for limits */
    KS_TELEM_CPU,         /* cpu-thermal, bigcore0-thermal, TCPU, B0D4 */
    KS_TELEM_GPU,         /* gpu-thermal, fb000000.gpu, i915 */
    KS_TELEM_NPU,         /* npu-thermal, Jetson cv0..cv2 (DLA/PVA) */
    KS_TELEM_SOC,         /* soc-thermal, soc0-thermal, center-thermal */
    KS_TELEM_PACKAGE,     /* x86_pkg_temp, package-thermal, Jetson tj */
    KS_TELEM_BOARD,       /* acpitz, INT3400, pch_*, skin */
    KS_TELEM_MEMORY,      /* devfreq dmc / ddr */
} ks_telem_class;

typedef enum ks_telem_trip_type {
    KS_TRIP_UNKNOWN = 0,
    KS_TRIP_ACTIVE,       /* a fan or other active cooling starts */
    KS_TRIP_PASSIVE,      /* the kernel starts throttling clocks */
    KS_TRIP_HOT,          /* notification only */
    KS_TRIP_CRITICAL,     /* the kernel shuts the system down */
} ks_telem_trip_type;

typedef struct ks_telem_trip {
    ks_telem_trip_type type;
    int32_t temp_mc;      /* x86_pkg_temp lists passive trips at 0: unset */
    int32_t hyst_mc;      /* 0 when the file is absent */
} ks_telem_trip;

typedef struct ks_telem_zone_info {
    char     name[KS_TELEM_NAME_MAX];   /* the zone's `type`, "cpu-thermal" */
    char     node[KS_TELEM_NAME_MAX];   /* "thermal_zone0" */
    ks_telem_class cls;
    uint32_t n_trips;
    ks_telem_trip trips[KS_TELEM_MAX_TRIPS];
    char     policy[24];                /* "step_wise", "" if unknown */
    uint32_t sustainable_power_mw;      /* IPA input; 0 if unset */
} ks_telem_zone_info;

typedef struct ks_telem_cooling_info {
    char    name[KS_TELEM_NAME_MAX];    /* `type`: "pwm-fan", "cpufreq-cpu0" */
    char    node[KS_TELEM_NAME_MAX];    /* "cooling_device0" */
    int32_t max_state;
} ks_telem_cooling_info;

typedef enum ks_telem_power_kind {
    KS_POWER_HWMON = 0,   /* hwmon power*_input / power*_average, µW */
    KS_POWER_HWMON_ENERGY,/* hwmon energy*_input, µJ, differentiated */
    KS_POWER_HWMON_VI,    /* hwmon in*_input × curr*_input (INA3221) */
    KS_POWER_RAPL,        /* powercap energy_uj, differentiated */
} ks_telem_power_kind;

typedef enum ks_telem_rapl_role {
    KS_RAPL_NONE = 0,     /* not a RAPL domain */
    KS_RAPL_PACKAGE,      /* "package-N": the whole SoC package */
    KS_RAPL_CORE,         /* subdomain "core" */
    KS_RAPL_UNCORE,       /* subdomain "uncore" (integrated GPU) */
    KS_RAPL_DRAM,
    KS_RAPL_PSYS,         /* platform power on many laptops */
    KS_RAPL_OTHER,
} ks_telem_rapl_role;

typedef struct ks_telem_rapl_constraint {
    char     name[24];             /* "long_term", "short_term", "peak_power" */
    uint64_t power_limit_uw;
    uint64_t time_window_us;
} ks_telem_rapl_constraint;

typedef struct ks_telem_power_info {
    char     name[KS_TELEM_NAME_MAX];   /* "ina3221:VDD_IN", "package-0" */
    char     node[KS_TELEM_NAME_MAX];   /* "hwmon2", "intel-rapl:0:1" */
    ks_telem_power_kind kind;
    ks_telem_rapl_role  rapl_role;
    bool     rapl_mmio;                 /* intel-rapl-mmio: a second view */
    bool     readable;                  /* false: seen but not readable */
    uint64_t max_energy_range_uj;       /* RAPL wrap point; 0 if unknown */
    uint32_t n_constraints;
    ks_telem_rapl_constraint constraints[KS_TELEM_MAX_RAPL_CONSTRAINTS];
} ks_telem_power_info;

typedef enum ks_telem_supply_type {
    KS_SUPPLY_OTHER = 0,
    KS_SUPPLY_BATTERY,
    KS_SUPPLY_MAINS,
    KS_SUPPLY_USB,
} ks_telem_supply_type;

typedef enum ks_telem_battery_status {
    KS_BATTERY_UNKNOWN = 0,
    KS_BATTERY_CHARGING,
    KS_BATTERY_DISCHARGING,
    KS_BATTERY_NOT_CHARGING,
    KS_BATTERY_FULL,
} ks_telem_battery_status;

typedef struct ks_telem_supply_info {
    char name[KS_TELEM_NAME_MAX];       /* "BAT0", "AC" */
    ks_telem_supply_type type;
    bool has_power_now;                 /* else current_now × voltage_now */
    bool has_power;                     /* either way of computing power */
} ks_telem_supply_info;

typedef enum ks_telem_freq_kind {
    KS_FREQ_DEVFREQ = 0,  /* /sys/class/devfreq/<dev> */
    KS_FREQ_I915,         /* drm cardN/gt_*_freq_mhz */
    KS_FREQ_XE,           /* drm cardN/device/tile0/gt0/freq0/ */
    KS_FREQ_V3D,          /* drm cardN/device/gpu_stats (busy only) */
    KS_FREQ_IVPU,         /* accelN/device/npu_busy_time_us */
} ks_telem_freq_kind;

typedef struct ks_telem_freq_info {
    char name[KS_TELEM_NAME_MAX];       /* "fb000000.gpu", "card1" */
    ks_telem_freq_kind kind;
    ks_telem_class cls;                 /* GPU, NPU, MEMORY or OTHER */
    bool has_freq;
    bool has_load;
} ks_telem_freq_info;

typedef struct ks_telem_fan_info {
    char name[KS_TELEM_NAME_MAX];       /* "pwmfan:fan1" */
} ks_telem_fan_info;

/* Everything discovered at open; stable until ks_telemetry_destroy. */
typedef struct ks_telem_info {
    char     root[256];                 /* "" means the real / */
    uint32_t n_zones;
    ks_telem_zone_info zones[KS_TELEM_MAX_ZONES];
    uint32_t n_cooling;
    ks_telem_cooling_info cooling[KS_TELEM_MAX_COOLING];
    uint32_t n_power;
    ks_telem_power_info power[KS_TELEM_MAX_POWER];
    uint32_t n_supplies;
    ks_telem_supply_info supplies[KS_TELEM_MAX_SUPPLIES];
    uint32_t n_freq;
    ks_telem_freq_info freq[KS_TELEM_MAX_FREQ];
    uint32_t n_fans;
    ks_telem_fan_info fans[KS_TELEM_MAX_FANS];
    bool     has_undervolt;             /* Raspberry Pi rpi_volt alarm */
    uint32_t n_notes;                   /* what could not be seen, and why */
    char     notes[KS_TELEM_MAX_NOTES][KS_TELEM_NOTE_MAX];
} ks_telem_info;

/* One temperature. |valid|: temp_mc holds a reading, fresh or kept.
 * |stale|: the latest read failed (EAGAIN, ENODATA, EIO, vanished file, bad
 * text); temp_mc then is the last good value, read at |read_ns|. */
typedef struct ks_telem_temp {
    int32_t  temp_mc;
    bool     valid;
    bool     stale;
    uint64_t read_ns;
} ks_telem_temp;

/* Any other reading; the unit is in the field's name. Same flags. */
typedef struct ks_telem_value {
    int64_t  value;
    bool     valid;
    bool     stale;
    uint64_t read_ns;
} ks_telem_value;

typedef struct ks_telem_supply_sample {
    ks_telem_value capacity_pct;        /* batteries */
    ks_telem_value power_mw;            /* magnitude; direction from status */
    ks_telem_value online;              /* adapters: 0 or 1 */
    ks_telem_battery_status status;
} ks_telem_supply_sample;

typedef struct ks_telem_freq_sample {
    ks_telem_value cur_hz;
    ks_telem_value min_hz;
    ks_telem_value max_hz;              /* devfreq: includes thermal caps */
    ks_telem_value load_permille;       /* 0..1000 */
} ks_telem_freq_sample;

/* Where ks_telemetry_sample()'s total system power came from. */
typedef enum ks_telem_power_src {
    KS_SYSPOWER_NONE = 0,
    KS_SYSPOWER_BATTERY,    /* discharging batteries */
    KS_SYSPOWER_RAPL,       /* RAPL package domains */
    KS_SYSPOWER_HWMON,      /* hwmon power and energy channels, summed */
    KS_SYSPOWER_RAIL_INPUT, /* voltage×current rail named VDD_IN */
    KS_SYSPOWER_RAIL_SUM,   /* no input rail: the rails summed */
} ks_telem_power_src;

/* The governor holds this far below the passive trip unless told
 * otherwise (ks_governor_params.margin_mc 0, ks_runtime_params'
 * temp_limit_c 0). Defined here, the lowest layer that needs it, so that
 * the device report (driver/devices.c) shows the limit the governor will
 * use without restating it. */
#define KS_TELEM_DEFAULT_MARGIN_MC 5000

/* Thermal headroom (ks_thermal_headroom) runs from 0 at the idle
 * temperature to 1 at the limit. Until the governor has identified the
 * plant, and in the device report, which has no load to identify it from,
 * idle is taken as this (a room), and at most 5 °C under the limit. */
#define KS_TELEM_HEADROOM_IDLE_MC 25000

/* The headroom of |temp_mc| under |limit_mc| from |idle_mc|: 0..1. */
static inline double
ks_telem_headroom(double temp_mc, double limit_mc, double idle_mc)
{
    double f;

    if (idle_mc > limit_mc - 5000.0)
        idle_mc = limit_mc - 5000.0;
    f = (temp_mc - idle_mc) / (limit_mc - idle_mc);
    return f < 0.0 ? 0.0 : f > 1.0 ? 1.0 : f;
}

/* A sample: arrays are index-aligned with ks_telem_info's. A plain
 * struct; copy it freely. */
typedef struct ks_telem_sample {
    uint64_t at_ns;                     /* the telemetry clock at sampling */
    uint32_t n_zones;
    ks_telem_temp zone_temp[KS_TELEM_MAX_ZONES];
    uint32_t n_cooling;
    ks_telem_value cooling_state[KS_TELEM_MAX_COOLING];
    uint32_t n_power;
    ks_telem_value power_mw[KS_TELEM_MAX_POWER]; /* energy kinds: average
                                         * since the previous sample */
    uint32_t n_supplies;
    ks_telem_supply_sample supplies[KS_TELEM_MAX_SUPPLIES];
    uint32_t n_freq;
    ks_telem_freq_sample freq[KS_TELEM_MAX_FREQ];
    uint32_t n_fans;
    ks_telem_value fan_rpm[KS_TELEM_MAX_FANS];
    ks_telem_value undervolt;           /* 1: under-voltage alarm raised */

    /* Summary for the governor. "Relevant" zones are CPU, GPU, NPU, SOC
     * and PACKAGE ones. */
    int32_t       hottest_zone;         /* -1: no relevant zone read */
    ks_telem_temp hottest;
    /* The lowest passive trip above 0 of the hottest relevant zone that
     * has one (the kernel starts throttling there); invalid if none. */
    int32_t       passive_zone;         /* -1 if none */
    ks_telem_temp passive_trip;
    /* The lowest critical trip among relevant zones; invalid if none. */
    ks_telem_temp critical_trip;
    ks_telem_value     system_power_mw;
    ks_telem_power_src system_power_src;
    bool           has_battery;
    ks_telem_value battery_pct;         /* first battery with a capacity */
    bool           charging;            /* a battery reports Charging */
    bool           external_power;      /* adapter online, or a battery
                                         * Charging / Full / Not charging */
} ks_telem_sample;

typedef struct ks_telemetry ks_telemetry;

typedef struct ks_telem_params {
    const char *root;        /* NULL: $KESTREL_SYSFS_ROOT, else "/" */
    /* Clock for timestamps and energy-to-power; NULL: ks_now_ns. Tests
     * inject one to get exact powers. Called on the sampling thread. */
    uint64_t  (*now_ns)(void *ctx);
    void       *clock_ctx;
    /* false: keep each file open and pread() it (re-runs the sysfs show
     * function without a reopen). true: open, read and close on every
     * sample, for fake trees whose files are replaced by rename(). */
    bool        reopen_files;
} ks_telem_params;

/* Discovers sensors under |root| (NULL: $KESTREL_SYSFS_ROOT if set and not
 * empty, else "/"; paths are <root>/sys/class/...). Missing or unreadable
 * sensors are recorded as absent and explained in info->notes; an empty
 * root is not an error. Takes a first sample, which also sets the energy
 * baselines: energy-based powers become valid from the next sample on.
 * On failure (out of memory only) *out is NULL. */
ks_status ks_telemetry_open(const char *root, ks_telemetry **out);
ks_status ks_telemetry_open_ex(const ks_telem_params *p,
                               ks_telemetry **out);
void      ks_telemetry_destroy(ks_telemetry *t);   /* NULL is a no-op */

/* Borrowed; valid until ks_telemetry_destroy. */
const ks_telem_info *ks_telemetry_get_info(const ks_telemetry *t);

/* Reads every sensor into |s|. A failing read keeps the last good value,
 * marked stale; a file that comes back is picked up again. Energy counters
 * become average power over the time since the previous sample (RAPL
 * wrap-around handled at max_energy_range_uj); when less than 1 ms passed,
 * the previous power is kept. Always KS_OK for a valid |t|. Not thread
 * safe: one thread samples a given ks_telemetry. */
ks_status ks_telemetry_sample(ks_telemetry *t, ks_telem_sample *s);

/* The latest sample taken (by open or ks_telemetry_sample). */
const ks_telem_sample *ks_telemetry_last(const ks_telemetry *t);

/* The one sensor renderer, also `kestrel devices`' Sensors section: every
 * zone (temperature, passive and critical trips, sustainable power),
 * cooling device, power sensor (kind, node, RAPL limits), battery and
 * supply, frequency domain and fan with the latest readings, the
 * under-voltage alarm and system power, one line for each missing
 * category ("no battery", ...), the notes, and the governor's view: the
 * hottest relevant zone and the passive trip, with the default limit
 * |margin_mc| below it (the governor's margin, which the scheduler owns). */
void ks_telemetry_describe(const ks_telemetry *t, int32_t margin_mc, FILE *out);
/* The same as one JSON object (one line, no trailing newline): the
 * "sensors" object of `kestrel devices --json`. */
void ks_telemetry_describe_json(const ks_telemetry *t, int32_t margin_mc, FILE *out);

/* Class of a thermal zone or device name, case-insensitive. */
ks_telem_class ks_telem_classify(const char *name);
const char *ks_telem_class_str(ks_telem_class c);         /* "cpu", ... */
const char *ks_telem_trip_type_str(ks_telem_trip_type t); /* "passive" */

#endif
