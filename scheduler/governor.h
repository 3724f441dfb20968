/* Thermal and power governor: decides, between tokens, how fast the
 * decode loop may go so that the device stays under its temperature
 * limit, its power cap and its battery policy. Internal; not installed.
 *
 * The controller follows the kernel's power-allocator governor (IPA,
 * Documentation/driver-api/thermal/power_allocator.rst): a PI loop on the
 * temperature headroom sets a total power budget, the budget is shared
 * between actors (CPU, GPU) in proportion to the power each one requests,
 * and each actor turns its share into a setting. Here the settings are
 * the session's own knobs, not clocks: a pause between tokens (pacing),
 * the CPU thread count, and a suggestion to move layers between the CPU
 * and the GPU. Power is modelled as P = P_base + k_cpu * threads * duty_cpu
 * + k_gpu * duty_gpu, fitted online from the measured system power (or
 * taken from the caller's energy estimates); the model turns a budget into
 * a token period and predicts which thread count gives the most tokens
 * per second under the budget.
 *
 * Near the limit an approach guard bounds the heating rate to headroom /
 * a few control periods, using the zone's heat capacity as seen from the
 * sensor (fitted from how the heating rate follows the power), so a fast
 * heating zone is slowed before it reaches the limit rather than after;
 * periods around a stall (a token far slower than usual) are not learned
 * from.
 *
 * Nothing here knows about transformers: the governor sees tokens, busy
 * time per actor and sensor readings. It reads no clock (time comes in
 * as now_ns) and allocates only in create, so the same inputs always give
 * the same decisions and a step costs no malloc.
 *
 * How a decode loop uses it (one governor per generating session; the
 * ks_telemetry handle may be shared by sessions on the same thread only):
 *
 *     ks_governor_create(&params, &gov);
 *     dec = *ks_governor_last(gov);            n_threads = max, pace 0
 *     for each decoded token:
 *         run the token with dec.n_threads CPU threads, measuring
 *             cpu_ns = wall time spent in CPU work for it,
 *             gpu_ns = wall time spent waiting for GPU work;
 *         work = (ks_gov_work){ .n_tokens = 1,
 *                               .busy_ns = { cpu_ns, gpu_ns },
 *                               .n_threads = threads actually used,
 *                               .placement_gen = placement generation,
 *                               .can_move_to_gpu/.can_move_to_cpu = ... };
 *         ks_governor_step_telemetry(gov, tel, ks_now_ns(), &work, &dec);
 *         if dec.place != KS_GOV_PLACE_STAY and the move is possible:
 *             move one layer range that way; placement_gen++;
 *         sleep dec.pace_ns (0 most of the time when cool);
 *         ks_governor_step_telemetry(gov, tel, ks_now_ns(), NULL, &dec);
 *                                    (after the sleep; its pace_ns is 0)
 *         use dec.n_threads for the next token;
 *     ks_governor_destroy(gov);
 *
 * The second, work-less step is optional but lets an instantaneous power
 * sensor (hwmon power*_input, shunt monitors) be read while idle: the
 * governor sets each reading against what ran just before it (the token,
 * or the pause), and without idle readings it cannot split idle power from
 * work power unless the thread count changes. Energy counters need no
 * such care. Either step may change n_threads (a control period ends in
 * it); place is a one-shot hint in the step that gives it.
 *
 * Busy times are wall-clock times, not CPU time summed over threads; what
 * the loop does outside them (sampling, detokenizing, sleeping) counts as
 * idle. Prefill is not reported: start at the first decoded token (its
 * heat shows in the temperature anyway). Callers with a per-actor energy
 * model may pass energy_uj; the fit then only finds the idle power.
 * Steps cost no allocation and, between telemetry samples (every
 * sample_ns), no system call. Thread safety: one thread steps a given
 * governor.
 *
 * Faults fail safe. A temperature outside KS_GOV_TEMP_MIN_MC..MAX_MC or
 * a power outside 0..max_power_mw is ignored (logged once); a power
 * reading that stays exactly the same for 20 s (a stuck RAPL counter
 * reads 0 W for ever) is ignored until it changes, and what the model
 * learned from it is dropped (logged once). The power model keeps a
 * floor per busy thread and GPU, so no fit makes a token free. And the
 * temperature limit does not trust the model alone: a zone more than
 * 1 C above it that is not cooling cuts the duty (and then threads)
 * every period whatever the model predicts, and the cut relaxes only
 * once the zone is back under the limit. */
#ifndef KS_GOVERNOR_H
#define KS_GOVERNOR_H

#include <stdbool.h>
#include <stdint.h>

#include "driver/telemetry.h"
#include "kestrel/status.h"

/* The most CPU threads the governor reasons about. */
#define KS_GOV_MAX_THREADS 256

typedef enum ks_gov_actor {
    KS_GOV_CPU = 0,
    KS_GOV_GPU,
    KS_GOV_N_ACTORS,
} ks_gov_actor;

typedef enum ks_gov_policy {
    KS_GOV_BALANCED = 0,  /* limits; on battery below the threshold, 75 %
                           * of the dynamic power */
    KS_GOV_PERFORMANCE,   /* limits only; the battery level is ignored */
    KS_GOV_BATTERY,       /* on battery: 80 % of the dynamic power, 50 %
                           * below the threshold */
} ks_gov_policy;

typedef enum ks_gov_place {
    KS_GOV_PLACE_STAY = 0,
    KS_GOV_PLACE_TO_GPU,  /* move one layer range from the CPU to the GPU */
    KS_GOV_PLACE_TO_CPU,  /* move one layer range from the GPU to the CPU */
} ks_gov_place;

/* Which limit holds the device below what it could draw flat out. */
typedef enum ks_gov_state {
    KS_GOV_STATE_START = 0, /* no control period has ended yet */
    KS_GOV_STATE_COOL,      /* no limit binds */
    KS_GOV_STATE_THERMAL,   /* the temperature limit */
    KS_GOV_STATE_POWER,     /* the power cap */
    KS_GOV_STATE_BATTERY,   /* the battery policy */
    KS_GOV_STATE_TARGET,    /* target_tps (the device could go faster) */
    KS_GOV_STATE_CRITICAL,  /* within 5 C of the critical trip: the floor */
    KS_GOV_STATE_BLIND,     /* no temperature: a conservative budget */
} ks_gov_state;

/* Flags: what the governor cannot see (each is also logged once). */
#define KS_GOV_F_NO_TEMP   0x1u  /* no temperature: conservative budget */
#define KS_GOV_F_NO_POWER  0x2u  /* no power sensor: modelled power */
#define KS_GOV_F_NO_TRIP   0x4u  /* no passive trip: default limit used */
#define KS_GOV_F_POWER_STUCK 0x8u /* the power reading has not changed for
                                   * 20 s: ignored (counts as no sensor)
                                   * until it moves again */
#define KS_GOV_F_TEMP_FAULT  0x10u /* a temperature outside -40..150 C was
                                    * ignored */
#define KS_GOV_F_POWER_FAULT 0x20u /* a power below 0 or above
                                    * max_power_mw was ignored */

/* Plausible readings; anything outside is a sensor fault, not a
 * temperature (a disconnected thermistor reads -273 C or 255 C). */
#define KS_GOV_TEMP_MIN_MC (-40000)
#define KS_GOV_TEMP_MAX_MC 150000

typedef struct ks_governor_params {
    int32_t  temp_limit_mc;   /* control temperature; 0: the first passive
                               * trip minus margin_mc, or 70 C with no trip */
    int32_t  margin_mc;       /* below the passive trip; 0:
                               * KS_TELEM_DEFAULT_MARGIN_MC (5000) */
    uint32_t power_limit_mw;  /* cap on the whole system's power; 0: none */
    ks_gov_policy policy;     /* 0: balanced */
    uint32_t battery_low_pct; /* 0: 30 */
    int32_t  max_threads;     /* 0: online CPUs (capped at
                               * KS_GOV_MAX_THREADS) */
    int32_t  min_threads;     /* 0: 1 */
    double   target_tps;      /* tokens/s wanted; 0: as many as allowed */
    uint64_t period_ns;       /* control period; 0: 500 ms */
    uint64_t sample_ns;       /* telemetry interval; 0: 100 ms */
    uint64_t dwell_ns;        /* least time between thread count changes;
                               * 0: 10 s (placement hints: 3x this) */
    uint32_t sustainable_mw;  /* the plant's sustainable power if known;
                               * 0: the zone's sustainable_power, else
                               * learned */
    uint32_t max_power_mw;    /* the most the board can draw: power
                               * readings above are faults; 0: 1000 W */
} ks_governor_params;

/* The readings one step uses; ks_gov_sense_from_telemetry() fills it from
 * a telemetry sample. A plain struct; has_* false means "not measured". */
typedef struct ks_gov_sense {
    bool     has_temp;
    int32_t  temp_mc;             /* hottest CPU/GPU/NPU/SoC/package zone */
    int32_t  passive_trip_mc;     /* 0: none known */
    int32_t  critical_trip_mc;    /* 0: none known */
    uint32_t sustainable_mw;      /* the zone's IPA setting; 0: unset */
    bool     has_actor_temp[KS_GOV_N_ACTORS];
    int32_t  actor_temp_mc[KS_GOV_N_ACTORS]; /* hottest CPU / GPU zone */
    bool     has_power;
    uint32_t power_mw;            /* the whole system (or SoC package) */
    bool     power_is_average;    /* true: the average since the previous
                                   * reading (energy counters, batteries);
                                   * false: the power at this moment (hwmon
                                   * power, shunt monitors) */
    bool     has_battery;
    bool     discharging;         /* on battery, no adapter */
    int32_t  battery_pct;         /* -1: unknown */
    /* Readings left out as implausible (KS_GOV_F_TEMP_FAULT,
     * KS_GOV_F_POWER_FAULT), with the value, for the governor's log. */
    uint32_t faults;
    int32_t  bad_temp_mc;
    int64_t  bad_power_mw;
} ks_gov_sense;

/* What the loop did since the previous step. */
typedef struct ks_gov_work {
    uint32_t n_tokens;                    /* tokens finished */
    uint64_t busy_ns[KS_GOV_N_ACTORS];    /* wall time each actor computed */
    uint64_t energy_uj[KS_GOV_N_ACTORS];  /* the caller's estimate of each
                                           * actor's energy above idle; 0:
                                           * unknown, the model fits it */
    int32_t  n_threads;                   /* CPU threads used; 0: the last
                                           * decision's */
    uint32_t placement_gen;               /* changed by the caller whenever
                                           * layers moved between actors */
    bool     can_move_to_gpu;             /* a CPU range could go to GPU */
    bool     can_move_to_cpu;             /* a GPU range could go to CPU */
} ks_gov_work;

/* What the loop should do next. Strings are static. */
typedef struct ks_gov_decision {
    uint64_t pace_ns;         /* sleep this long before the next token */
    int32_t  n_threads;       /* CPU threads for the next token */
    ks_gov_place place;       /* a one-shot suggestion; STAY almost always */
    uint32_t budget_mw;       /* total power budget now in force */
    uint32_t actor_budget_mw[KS_GOV_N_ACTORS]; /* its split, above idle */
    int32_t  control_temp_mc; /* the temperature held; 0: none */
    int32_t  temp_mc;         /* the latest temperature; 0: none */
    uint32_t power_mw;        /* average power of the last period,
                               * measured or modelled */
    double   tokens_per_s;    /* over the last period */
    double   tokens_per_j;    /* since the first step: tokens over the
                               * system energy (measured power where a
                               * sensor is read, else modelled: see
                               * KS_GOV_F_NO_POWER); 0 before any */
    double   time_to_limit_s; /* at the current heating rate; -1: not
                               * heating or no temperature */
    ks_gov_state state_id;    /* which limit holds */
    const char *state;        /* ks_gov_state_str(state_id), for logs */
    const char *target;       /* where the work ran: "cpu", "gpu",
                               * "cpu+gpu", "-" before any */
    uint32_t flags;           /* KS_GOV_F_* */
    bool     updated;         /* the controller ran in this step */
    uint64_t next_sample_ns;  /* sample telemetry again at/after this */
} ks_gov_decision;

typedef struct ks_governor ks_governor;

/* Validates |p| (NULL: all defaults). KS_ERR_INVALID_ARG names the bad
 * field; on failure *out is NULL. */
ks_status ks_governor_create(const ks_governor_params *p, ks_governor **out);
void      ks_governor_destroy(ks_governor *g);  /* NULL is a no-op */

/* Accounts |work| (may be NULL: nothing done), takes |sense| when not NULL
 * (NULL: no new reading; pass one at least every next_sample_ns), and when
 * a control period has passed since the previous update, runs the
 * controller and logs the decision (ks_log debug, tag "gov"). Between
 * updates the decision holds and only pace_ns follows the latest token's
 * busy time. |now_ns| is any monotonic clock in ns; a step earlier than
 * the previous one is taken as no time passing. Allocates nothing. */
ks_status ks_governor_step(ks_governor *g, const ks_gov_sense *sense,
                           uint64_t now_ns, const ks_gov_work *work,
                           ks_gov_decision *out);

/* The same, sampling |tel| first when a reading is due (so a token costs
 * no sysfs reads most of the time). |tel| may be NULL: no sensors. */
ks_status ks_governor_step_telemetry(ks_governor *g, ks_telemetry *tel,
                                     uint64_t now_ns, const ks_gov_work *work,
                                     ks_gov_decision *out);

/* The temperature (°C) forecast |h_s| seconds ahead if the power of the
 * latest control period holds, from the plant model identified online
 * (thermal resistance and time constants fitted to the power and
 * temperature seen); the latest reading until the model is fitted; NAN
 * without a temperature. */
double ks_governor_forecast_c(const ks_governor *g, double h_s);

/* How close that forecast is to the limit, after Android's thermal
 * headroom: 0 at the idle temperature (where the identified plant settles
 * at the idle power; KS_TELEM_HEADROOM_IDLE_MC until identified), 1 at or
 * past the control temperature; NAN without a temperature. */
double ks_governor_headroom(const ks_governor *g, double h_s);

/* The latest decision (what the previous step returned). */
const ks_gov_decision *ks_governor_last(const ks_governor *g);

/* Reduces a telemetry sample to what the governor reads. */
void ks_gov_sense_from_telemetry(const ks_telem_info *info,
                                 const ks_telem_sample *s, ks_gov_sense *out);

const char *ks_gov_policy_str(ks_gov_policy p);  /* "balanced", ... */
const char *ks_gov_place_str(ks_gov_place p);    /* "stay", "to-gpu", ... */
/* "start", "cool", "thermal", "power", "battery", "target", "critical",
 * "blind"; "?" for anything else. Static strings. */
const char *ks_gov_state_str(ks_gov_state s);
/* "performance", "balanced" or "battery"; false for anything else. */
bool ks_gov_policy_parse(const char *s, ks_gov_policy *out);

#endif
