/* A simulated thermal plant for closed-loop tests of the governor.
 *
 * Each zone is a first-order RC model, C dT/dt = P_zone - (T - T_amb)/R,
 * heated by a share of each power source (idle "base", CPU, GPU) that the
 * test dispatches; or, with a board, second order: the zone is a die (R,
 * C) that sheds its heat into a board (board_r, board_c) which sheds it to
 * ambient, so the die heats in seconds and the board over minutes. The
 * zone's sensor may quantise (1 C steps, as many SoC sensors report) and
 * refresh only every read_period_s (a sensor polled at 10 Hz or slower):
 * the temp file holds its value in between. Time is simulated: plant_run() advances it with the
 * powers held constant (exact exponential solution, so any step length is
 * accurate), and plant_clock() gives that time to the telemetry layer
 * (ks_telem_params.now_ns). plant_sync() writes the state as a fake sysfs
 * tree under a temporary root that the real telemetry code reads:
 *
 *   sys/class/thermal/thermal_zoneN/{type,temp,trip_point_K_*,policy,
 *                                    sustainable_power}          m°C, mW
 *   sys/class/hwmon/hwmon0/{name,power1_label,power1_input}      µW
 *                       or {name,energy1_label,energy1_input}    µJ
 *   sys/class/powercap/intel-rapl:0/{name,energy_uj,
 *                                    max_energy_range_uj}        µJ
 *   sys/class/power_supply/BAT0/{type,status,capacity,power_now} %, µW
 *   sys/class/power_supply/AC/{type,online}
 *
 * Files are rewritten in place (same inode), as sysfs values change under
 * a descriptor the telemetry keeps open. The power sensor reports an
 * exponential average of the true power over a short window (an INA-style
 * shunt monitor: nearly instantaneous), or the energy counter the true
 * energy; the battery's power_now averages over seconds, as fuel gauges
 * do. The tree lives in $TMPDIR, else /dev/shm (a RAM file system, like
 * sysfs: rewriting a file costs microseconds), else /tmp. */
#ifndef KS_TEST_PLANT_H
#define KS_TEST_PLANT_H

#include <stdbool.h>
#include <stdint.h>

#define PLANT_MAX_ZONES 4

enum { PLANT_BASE = 0, PLANT_CPU, PLANT_GPU, PLANT_N_SOURCES };

typedef struct plant_zone_params {
    const char *type;          /* the zone's name, e.g. "cpu-thermal" */
    double   r_c_per_w;        /* thermal resistance to ambient, C/W */
    double   c_j_per_c;        /* heat capacity, J/C */
    double   amb_c;            /* ambient temperature */
    double   start_c;          /* initial temperature; 0: ambient */
    double   passive_c;        /* passive trip; 0: none */
    double   critical_c;       /* critical trip; 0: none */
    double   share[PLANT_N_SOURCES]; /* fraction of each source's power
                                      * that heats this zone */
    uint32_t sustainable_mw;   /* written as sustainable_power; 0: none */
    double   board_r_c_per_w;  /* board to ambient; 0: no board (first
                                * order, the die sheds to ambient) */
    double   board_c_j_per_c;  /* the board's heat capacity */
    double   quant_c;          /* the sensor's step, e.g. 1.0; 0: 1 m°C */
    double   read_period_s;    /* the sensor refreshes this often; 0: at
                                * every plant_sync() */
} plant_zone_params;

typedef struct plant_params {
    uint32_t n_zones;          /* 0: no thermal zone at all */
    plant_zone_params zones[PLANT_MAX_ZONES];
    bool     power_sensor;     /* an hwmon power channel */
    bool     energy_counter;   /* ... as energy1_input instead of power */
    bool     rapl;             /* the energy counter is a RAPL package
                                * domain (powercap/intel-rapl:0) instead */
    double   sensor_tau_s;     /* the power sensor's averaging; 0: 2 ms */
    bool     battery;          /* a battery BAT0 and an adapter AC */
    double   battery_wh;       /* capacity when full */
    double   battery_pct;      /* charge at start */
    bool     mains;            /* adapter online at start */
} plant_params;

typedef struct plant plant;

/* Builds the tree under a fresh directory in $TMPDIR (or /tmp) and
 * writes the initial state. 0 or an errno; *out NULL on failure. */
int  plant_create(const plant_params *p, plant **out);
/* Removes the tree and frees. NULL is a no-op. */
void plant_destroy(plant *p);

const char *plant_root(const plant *p);      /* the telemetry root */
uint64_t plant_now_ns(const plant *p);
uint64_t plant_clock(void *plant_ctx);       /* for ks_telem_params */

/* Advances simulated time by |dt_s| with each source drawing |power_w|. */
void plant_run(plant *p, double dt_s, const double power_w[PLANT_N_SOURCES]);

/* Writes the current readings into the tree; 0 or an errno. */
int  plant_sync(plant *p);

/* Faults: the power sensor's file keeps its present value (a stuck RAPL
 * counter, a hung shunt monitor) from now on; a zone's temp file reads
 * |temp_c| whatever the zone's true temperature (NAN: the true one). */
void plant_freeze_power(plant *p, bool frozen);
void plant_force_temp(plant *p, uint32_t zone, double temp_c);
/* While set, a zone's temp file is written empty: a read that lands
 * while a writer has truncated it (the telemetry marks it stale). */
void plant_blank_temp(plant *p, uint32_t zone, bool blank);

double plant_temp_c(const plant *p, uint32_t zone);   /* true die temp */
double plant_board_c(const plant *p, uint32_t zone);  /* ambient if none */
/* What a zone's sensor reads now (quantised, held between refreshes). */
double plant_sensor_c(const plant *p, uint32_t zone);
/* The zone's steady temperature at a constant total power |w| (every
 * source's share taken as 1): what a fixed setting settles at. */
double plant_steady_c(const plant *p, uint32_t zone, double w);

/* Driving the plant from real work: the CPU time all threads of this
 * process have used (CLOCK_PROCESS_CPUTIME_ID), so a busy Kestrel
 * thread heats the plant and a sleeping one does not. plant_feed_run() runs
 * the plant up to the present (CLOCK_MONOTONIC) at base_w + cpu_w times
 * the number of busy CPUs over the interval, and syncs the tree; call it
 * every few ms from one thread of its own (the plant is not thread safe;
 * that thread's CPU time is left out, and plant_feed_init must be called
 * on it too). */
typedef struct plant_feed {
    uint64_t wall_ns, cpu_ns;   /* at the previous call */
    double   base_w;            /* idle power */
    double   cpu_w;             /* each busy CPU; may change mid-run (a
                                 * prompt switch, a second process) */
    double   last_w;            /* the power of the latest interval */
} plant_feed;

uint64_t plant_cpu_ns(void);
uint64_t plant_wall_ns(void);
void     plant_feed_init(plant_feed *f, double base_w, double cpu_w);
int      plant_feed_run(plant *p, plant_feed *f);
double plant_power_w(const plant *p);        /* true power now */
double plant_energy_j(const plant *p);       /* since create */
double plant_battery_pct(const plant *p);
void   plant_set_mains(plant *p, bool online);

#endif
