/* The thermal plant simulator (see plant.h). State: a temperature per
 * zone, the sensor's averaged power, the battery's energy and the clock;
 * plant_run() integrates them exactly for piecewise-constant power and
 * plant_sync() prints them into the fake sysfs files. */
#include "plant.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct plant {
    plant_params p;
    char     root[256];
    double   now_s;
    double   temp_c[PLANT_MAX_ZONES];
    double   power_w;          /* true total, latest run() */
    double   sensor_w;         /* the power sensor's average */
    double   gauge_w;          /* the battery gauge's average */
    double   energy_j;
    double   battery_j;
    bool     mains;
    bool     power_frozen;
    double   forced_c[PLANT_MAX_ZONES];  /* NAN: not forced */
};

static int
put(const plant *pl, const char *rel, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes one attribute, truncating in place. */
static int
put(const plant *pl, const char *rel, const char *fmt, ...)
{
    char path[512];
    va_list ap;
    FILE *f;
    int r;

    snprintf(path, sizeof path, "%s/sys/class/%s", pl->root, rel);
    f = fopen(path, "w");
    if (!f)
        return errno;
    va_start(ap, fmt);
    r = vfprintf(f, fmt, ap);
    va_end(ap);
    if (fclose(f) != 0 || r < 0)
        return errno ? errno : EIO;
    return 0;
}

static int
mkdirs(const plant *pl, const char *rel)
{
    char path[512];

    snprintf(path, sizeof path, "%s/sys/class/%s", pl->root, rel);
    for (char *s = path + strlen(pl->root) + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return errno;
        *s = '/';
    }
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return errno;
    return 0;
}

static int
build_tree(plant *pl)
{
    char rel[128];
    int e;

    for (uint32_t z = 0; z < pl->p.n_zones; z++) {
        const plant_zone_params *zp = &pl->p.zones[z];
        int k = 0;

        snprintf(rel, sizeof rel, "thermal/thermal_zone%u", z);
        if ((e = mkdirs(pl, rel)) != 0)
            return e;
        snprintf(rel, sizeof rel, "thermal/thermal_zone%u/type", z);
        if ((e = put(pl, rel, "%s\n", zp->type)) != 0)
            return e;
        snprintf(rel, sizeof rel, "thermal/thermal_zone%u/policy", z);
        if ((e = put(pl, rel, "step_wise\n")) != 0)
            return e;
        if (zp->sustainable_mw) {
            snprintf(rel, sizeof rel,
                     "thermal/thermal_zone%u/sustainable_power", z);
            if ((e = put(pl, rel, "%u\n", zp->sustainable_mw)) != 0)
                return e;
        }
        for (int t = 0; t < 2; t++) {
            double c = t == 0 ? zp->passive_c : zp->critical_c;

            if (c <= 0)
                continue;
            snprintf(rel, sizeof rel,
                     "thermal/thermal_zone%u/trip_point_%d_type", z, k);
            if ((e = put(pl, rel, "%s\n", t == 0 ? "passive" : "critical")))
                return e;
            snprintf(rel, sizeof rel,
                     "thermal/thermal_zone%u/trip_point_%d_temp", z, k);
            if ((e = put(pl, rel, "%ld\n", lround(c * 1000.0))) != 0)
                return e;
            snprintf(rel, sizeof rel,
                     "thermal/thermal_zone%u/trip_point_%d_hyst", z, k);
            if ((e = put(pl, rel, "2000\n")) != 0)
                return e;
            k++;
        }
    }
    if (pl->p.power_sensor && pl->p.rapl) {
        if ((e = mkdirs(pl, "powercap/intel-rapl:0")) != 0 ||
            (e = put(pl, "powercap/intel-rapl:0/name", "package-0\n")) != 0 ||
            (e = put(pl, "powercap/intel-rapl:0/max_energy_range_uj",
                     "262143328850\n")) != 0)
            return e;
    } else if (pl->p.power_sensor) {
        if ((e = mkdirs(pl, "hwmon/hwmon0")) != 0 ||
            (e = put(pl, "hwmon/hwmon0/name", "plant\n")) != 0 ||
            (e = put(pl, pl->p.energy_counter ? "hwmon/hwmon0/energy1_label" :
                     "hwmon/hwmon0/power1_label", "system\n")) != 0)
            return e;
    }
    if (pl->p.battery) {
        if ((e = mkdirs(pl, "power_supply/BAT0")) != 0 ||
            (e = put(pl, "power_supply/BAT0/type", "Battery\n")) != 0 ||
            (e = mkdirs(pl, "power_supply/AC")) != 0 ||
            (e = put(pl, "power_supply/AC/type", "Mains\n")) != 0)
            return e;
    }
    return plant_sync(pl);
}

int
plant_create(const plant_params *p, plant **out)
{
    const char *tmp = getenv("TMPDIR");
    struct stat st;
    plant *pl;
    int e;

    *out = NULL;
    if (p->n_zones > PLANT_MAX_ZONES)
        return EINVAL;
    pl = calloc(1, sizeof *pl);
    if (!pl)
        return ENOMEM;
    pl->p = *p;
    if (pl->p.sensor_tau_s <= 0)
        pl->p.sensor_tau_s = 0.002;
    if (!tmp || !*tmp)
        tmp = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
              access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(pl->root, sizeof pl->root, "%s/ks-plant-XXXXXX", tmp);
    if (!mkdtemp(pl->root)) {
        e = errno;
        free(pl);
        return e;
    }
    for (uint32_t z = 0; z < PLANT_MAX_ZONES; z++)
        pl->forced_c[z] = NAN;
    for (uint32_t z = 0; z < p->n_zones; z++)
        pl->temp_c[z] = p->zones[z].start_c > 0 ? p->zones[z].start_c :
                        p->zones[z].amb_c;
    pl->battery_j = p->battery_wh * 3600.0 * p->battery_pct / 100.0;
    pl->mains = p->mains;
    if ((e = build_tree(pl)) != 0) {
        plant_destroy(pl);
        return e;
    }
    *out = pl;
    return 0;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void
plant_destroy(plant *pl)
{
    if (!pl)
        return;
    nftw(pl->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(pl);
}

const char *
plant_root(const plant *pl)
{
    return pl->root;
}

uint64_t
plant_now_ns(const plant *pl)
{
    return (uint64_t)llround(pl->now_s * 1e9);
}

uint64_t
plant_clock(void *ctx)
{
    return plant_now_ns(ctx);
}

void
plant_run(plant *pl, double dt, const double w[PLANT_N_SOURCES])
{
    double total = 0, a;

    if (!(dt > 0))
        return;
    for (int s = 0; s < PLANT_N_SOURCES; s++)
        total += w[s];
    for (uint32_t z = 0; z < pl->p.n_zones; z++) {
        const plant_zone_params *zp = &pl->p.zones[z];
        double pz = 0, tss;

        for (int s = 0; s < PLANT_N_SOURCES; s++)
            pz += zp->share[s] * w[s];
        /* Constant power: T relaxes to T_ss with time constant R*C. */
        tss = zp->amb_c + zp->r_c_per_w * pz;
        pl->temp_c[z] = tss + (pl->temp_c[z] - tss) *
                        exp(-dt / (zp->r_c_per_w * zp->c_j_per_c));
    }
    a = exp(-dt / pl->p.sensor_tau_s);
    pl->sensor_w = total + (pl->sensor_w - total) * a;
    /* A fuel gauge's power_now: a running average over about 2 s. */
    a = exp(-dt / 2.0);
    pl->gauge_w = total + (pl->gauge_w - total) * a;
    pl->power_w = total;
    pl->energy_j += total * dt;
    if (pl->p.battery && !pl->mains) {
        pl->battery_j -= total * dt;
        if (pl->battery_j < 0)
            pl->battery_j = 0;
    }
    pl->now_s += dt;
}

int
plant_sync(plant *pl)
{
    char rel[128];
    int e;

    for (uint32_t z = 0; z < pl->p.n_zones; z++) {
        double c = isnan(pl->forced_c[z]) ? pl->temp_c[z] : pl->forced_c[z];

        snprintf(rel, sizeof rel, "thermal/thermal_zone%u/temp", z);
        if ((e = put(pl, rel, "%ld\n", lround(c * 1000.0))))
            return e;
    }
    /* A frozen sensor's files keep what they hold. */
    if (pl->p.power_sensor && !pl->power_frozen) {
        if (pl->p.rapl)
            e = put(pl, "powercap/intel-rapl:0/energy_uj", "%lld\n",
                    llround(pl->energy_j * 1e6));
        else if (pl->p.energy_counter)
            e = put(pl, "hwmon/hwmon0/energy1_input", "%lld\n",
                    llround(pl->energy_j * 1e6));
        else
            e = put(pl, "hwmon/hwmon0/power1_input", "%ld\n",
                    lround(pl->sensor_w * 1e6));
        if (e != 0)
            return e;
    }
    if (pl->p.battery) {
        double pct = plant_battery_pct(pl);

        if ((e = put(pl, "power_supply/AC/online", "%d\n", pl->mains)) ||
            (e = put(pl, "power_supply/BAT0/status", "%s\n",
                     !pl->mains ? "Discharging" :
                     pct >= 99.5 ? "Full" : "Charging")) ||
            (e = put(pl, "power_supply/BAT0/capacity", "%ld\n",
                     lround(floor(pct)))) ||
            (e = put(pl, "power_supply/BAT0/power_now", "%ld\n",
                     lround(pl->gauge_w * 1e6))))
            return e;
    }
    return 0;
}

void
plant_freeze_power(plant *pl, bool frozen)
{
    pl->power_frozen = frozen;
}

void
plant_force_temp(plant *pl, uint32_t zone, double temp_c)
{
    if (zone < PLANT_MAX_ZONES)
        pl->forced_c[zone] = temp_c;
}

double
plant_temp_c(const plant *pl, uint32_t zone)
{
    return zone < pl->p.n_zones ? pl->temp_c[zone] : 0.0;
}

double
plant_power_w(const plant *pl)
{
    return pl->power_w;
}

double
plant_energy_j(const plant *pl)
{
    return pl->energy_j;
}

double
plant_battery_pct(const plant *pl)
{
    if (!pl->p.battery || pl->p.battery_wh <= 0)
        return 0.0;
    return 100.0 * pl->battery_j / (pl->p.battery_wh * 3600.0);
}

void
plant_set_mains(plant *pl, bool online)
{
    pl->mains = online;
}
