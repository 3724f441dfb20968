/* The thermal plant simulator (see plant.h). State: a temperature per
 * zone (and its board's), what each zone's sensor last read, the sensor's
 * averaged power, the battery's energy and the clock;
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
#include <time.h>
#include <unistd.h>

struct plant {
    plant_params p;
    char     root[256];
    double   now_s;
    double   temp_c[PLANT_MAX_ZONES];
    double   board_c[PLANT_MAX_ZONES];
    double   read_c[PLANT_MAX_ZONES];     /* the sensor's held value */
    double   read_s[PLANT_MAX_ZONES];     /* when it last refreshed */
    double   power_w;          /* true total, latest run() */
    double   sensor_w;         /* the power sensor's average */
    double   gauge_w;          /* the battery gauge's average */
    double   energy_j;
    double   battery_j;
    bool     mains;
    bool     power_frozen;
    double   forced_c[PLANT_MAX_ZONES];  /* NAN: not forced */
    bool     blank[PLANT_MAX_ZONES];
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
    for (uint32_t z = 0; z < p->n_zones; z++) {
        pl->temp_c[z] = p->zones[z].start_c > 0 ? p->zones[z].start_c :
                        p->zones[z].amb_c;
        pl->board_c[z] = pl->temp_c[z];
        pl->read_s[z] = -INFINITY;
    }
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

/* A die (R_d, C_d) on a board (R_b, C_b) at constant power P: with x the
 * deviation of (die, board) from their steady state (amb + (R_b + R_d) P,
 * amb + R_b P), dx/dt = A x, so x(t) = exp(A t) x(0). A 2x2 matrix with
 * distinct real eigenvalues l1, l2 (an RC ladder always has them)
 * exponentiates as (e^{l1 t} (A - l2 I) - e^{l2 t} (A - l1 I)) / (l1 - l2)
 * (Sylvester's formula), exact for any step. */
static void
run_two_node(const plant_zone_params *zp, double pw, double dt, double *die,
             double *board)
{
    double rd = zp->r_c_per_w, cd = zp->c_j_per_c;
    double rb = zp->board_r_c_per_w, cb = zp->board_c_j_per_c;
    double a11 = -1.0 / (rd * cd), a12 = 1.0 / (rd * cd);
    double a21 = 1.0 / (rd * cb), a22 = -1.0 / (rd * cb) - 1.0 / (rb * cb);
    double tr = a11 + a22, det = a11 * a22 - a12 * a21;
    double disc = sqrt(tr * tr / 4.0 - det);
    double l1 = tr / 2.0 + disc, l2 = tr / 2.0 - disc;
    double e1 = exp(l1 * dt), e2 = exp(l2 * dt);
    double bss = zp->amb_c + rb * pw, dss = bss + rd * pw;
    double x0 = *die - dss, x1 = *board - bss;
    double m11 = (e1 * (a11 - l2) - e2 * (a11 - l1)) / (l1 - l2);
    double m12 = (e1 - e2) * a12 / (l1 - l2);
    double m21 = (e1 - e2) * a21 / (l1 - l2);
    double m22 = (e1 * (a22 - l2) - e2 * (a22 - l1)) / (l1 - l2);

    *die = dss + m11 * x0 + m12 * x1;
    *board = bss + m21 * x0 + m22 * x1;
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
        if (zp->board_c_j_per_c > 0) {
            run_two_node(zp, pz, dt, &pl->temp_c[z], &pl->board_c[z]);
            continue;
        }
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
        const plant_zone_params *zp = &pl->p.zones[z];
        double c;

        /* The sensor refreshes on its own period (ticks since start), and
         * reports in its steps. */
        if (zp->read_period_s <= 0 ||
            pl->now_s - pl->read_s[z] >= zp->read_period_s - 1e-9) {
            double q = zp->quant_c > 0 ? zp->quant_c : 0.001;

            pl->read_c[z] = floor(pl->temp_c[z] / q + 0.5) * q;
            pl->read_s[z] = zp->read_period_s > 0 ?
                floor(pl->now_s / zp->read_period_s + 1e-9) *
                zp->read_period_s : pl->now_s;
        }
        c = isnan(pl->forced_c[z]) ? pl->read_c[z] : pl->forced_c[z];
        snprintf(rel, sizeof rel, "thermal/thermal_zone%u/temp", z);
        if (pl->blank[z])
            e = put(pl, rel, "%s", "");
        else
            e = put(pl, rel, "%ld\n", lround(c * 1000.0));
        if (e)
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

void
plant_blank_temp(plant *pl, uint32_t zone, bool blank)
{
    if (zone < PLANT_MAX_ZONES)
        pl->blank[zone] = blank;
}

double
plant_temp_c(const plant *pl, uint32_t zone)
{
    return zone < pl->p.n_zones ? pl->temp_c[zone] : 0.0;
}

double
plant_board_c(const plant *pl, uint32_t zone)
{
    if (zone >= pl->p.n_zones)
        return 0.0;
    return pl->p.zones[zone].board_c_j_per_c > 0 ? pl->board_c[zone] :
           pl->p.zones[zone].amb_c;
}

double
plant_sensor_c(const plant *pl, uint32_t zone)
{
    return zone < pl->p.n_zones ? pl->read_c[zone] : 0.0;
}

double
plant_steady_c(const plant *pl, uint32_t zone, double w)
{
    const plant_zone_params *zp;

    if (zone >= pl->p.n_zones)
        return 0.0;
    zp = &pl->p.zones[zone];
    return zp->amb_c + (zp->r_c_per_w + (zp->board_c_j_per_c > 0 ?
                                         zp->board_r_c_per_w : 0.0)) * w;
}

uint64_t
plant_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t
plant_wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The process's CPU time less the calling thread's: the feed's own
 * writes heat nothing. */
static uint64_t
others_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return plant_cpu_ns() -
           ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
}

void
plant_feed_init(plant_feed *f, double base_w, double cpu_w)
{
    memset(f, 0, sizeof *f);
    f->base_w = base_w;
    f->cpu_w = cpu_w;
    f->wall_ns = plant_wall_ns();
    f->cpu_ns = others_cpu_ns();
}

int
plant_feed_run(plant *pl, plant_feed *f)
{
    uint64_t wall = plant_wall_ns(), cpu = others_cpu_ns();
    double w[PLANT_N_SOURCES] = { 0 }, dt = (double)(wall - f->wall_ns) / 1e9;

    if (!(dt > 0))
        return 0;
    w[PLANT_BASE] = f->base_w;
    /* The two clocks are read a moment apart: the difference may step
     * back by a few µs, which is no negative work. */
    w[PLANT_CPU] = cpu > f->cpu_ns ?
                   f->cpu_w * (double)(cpu - f->cpu_ns) / 1e9 / dt : 0.0;
    f->last_w = w[PLANT_BASE] + w[PLANT_CPU];
    f->wall_ns = wall;
    if (cpu > f->cpu_ns)
        f->cpu_ns = cpu;
    plant_run(pl, dt, w);
    return plant_sync(pl);
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
