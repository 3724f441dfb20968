/* The thermal and power governor. Each step adds the caller's work (tokens,
 * busy time per actor, threads) and, when given, a sensor reading to the
 * current control period. Once a period (500 ms) has passed, update()
 * runs these stages in order (each a function below, its comment saying
 * what it reads and writes; struct upd carries their results):
 *
 *   1. estimate_power: records the CPU time per token at the thread count
 *      used, and the caller's energy estimates if any (the power model
 *      itself is fitted as readings come: power_reading());
 *   2. thermal_budget: a PI loop on the temperature headroom (IPA-like:
 *      budget = S + Kp*(T_ctrl - T), the integral S being the sustainable
 *      power it learns), under an approach guard that caps the budget so
 *      that the temperature nears the limit no faster than headroom / H
 *      (from the heating rate and the zone's heat capacity, fitted from
 *      how the rate follows the power: approach_guard());
 *   3. total_budget: the power cap and the battery policy; the lowest
 *      limit is the budget, and it names the state;
 *   4. track_power: a slow integral on the measured power error, so that
 *      the power drawn tracks the budget whatever the model's error;
 *   5. choose_threads, choose_pacing: the thread count whose predicted
 *      tokens/s under the budget is highest (with hysteresis and a dwell
 *      time); the budget split between actors in proportion to the power
 *      each requests, and a token period: energy per token / (budget -
 *      base);
 *   6. hint_placement: may suggest moving a layer range away from the
 *      hotter of the CPU and GPU zones (thermal limit only, 5 C apart,
 *      long dwell);
 *   7. publish: the decision and its debug line.
 *
 * Between updates a step only recomputes pace_ns = period - the latest
 * token's busy time. All state lives in struct ks_governor; nothing is
 * allocated after create.
 *
 * On a shared machine a token's wall time says little about its energy:
 * another process on the core, or a stall, stretches it. So the time per
 * token follows slow tokens only when they persist, an averaging power
 * reading is set against the tokens done (at the time per token first
 * measured), and readings and periods around a stall, or off the fit,
 * teach neither the power model nor the thermal estimates. */
#include "scheduler/governor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/base.h"
#include "scheduler/thermal_model.h"

#define TAG "gov"

#define NS_PER_S 1e9
/* Temperature held when there is neither a limit nor a passive trip. */
#define DEFAULT_LIMIT_MC 70000
/* Critical trip minus this: the budget drops to its floor at once. */
#define CRITICAL_GUARD_C 5.0
/* The proportional band: the budget sweeps the whole dynamic power range
 * (idle to all threads busy) over this many degrees. */
#define PBAND_C 8.0
/* The integral S (Ki = Kp / TAU_I): fast down in overshoot, slower up
 * below the limit, and up only while the budget binds and the temperature
 * would not reach the limit within LOOK_S at its current rate (no wind-up
 * during the approach). IPA integrates only in overshoot; integrating
 * below too removes the steady offset of a wrong first guess of S. */
#define TAU_I_DOWN_S 4.0
#define TAU_I_UP_S 15.0
#define LOOK_S 20.0
/* S at switch-on without a sustainable_power setting: this fraction of
 * the dynamic range above idle. */
#define SINIT_FRAC 0.3
/* A reading older than this is no reading. */
#define STALE_NS 10000000000ull
/* The power tracking integral's time constant and its bound (fraction of
 * the budget). */
#define TAU_CORR_S 3.0
#define CORR_MAX 0.3
/* ... learned only from periods that reached this much of the paced
 * token rate. */
#define PACED_MIN 0.8
/* Least-squares forgetting per power reading and the pull towards the
 * previous fit (in sample equivalents). */
#define LS_FORGET 0.99
#define LS_RIDGE 0.3
/* The budget never goes below base + this fraction of the dynamic range. */
#define FLOOR_FRAC 0.03
/* Without a temperature reading: half the dynamic power. */
#define BLIND_FRAC 0.5
/* Thread changes need a predicted gain of this much, and within this
 * distance of the limit they follow S rather than the whole budget. */
#define THREAD_HYST 0.05
#define SEL_BAND_C 2.0
/* S learned while the temperature bound guides the thread choice for
 * this many dwell times after. */
#define SUST_KEEP 20
/* Unvisited thread counts: time per token ~ threads^-ALPHA (decode is
 * mostly memory bound, so more threads help less than linearly). */
#define THREAD_ALPHA 0.7
/* Time per token: periods slower than SLOW_RATIO x the usual time count
 * only after SLOW_PERIODS of them in a row, and then with this weight. */
#define SLOW_RATIO 1.3
#define SLOW_PERIODS 4
#define SLOW_WEIGHT 0.1
/* The approach guard: horizon (at least this, and this many periods),
 * the predicted overshoot it tolerates, and how fast S follows it. */
#define GUARD_H_S 2.0
#define GUARD_H_PERIODS 4.0
#define GUARD_TOL_C 0.3
#define GUARD_TRACK_S 0.5
/* The loop gain at least closes the loop in this time (with a fitted C),
 * and the zone's loss estimate is filtered with this weight. */
#define KP_H_S 4.0
#define KP_FAST 1.0
#define LOSS_W 0.3
/* The heat capacity fit: forgetting per informative period; a period
 * informs when its power changed by this fraction of the dynamic range,
 * and a fit needs this much change in all (RMS over the memory). */
#define CAP_FORGET 0.95
#define CAP_MIN_DP_FRAC 0.02
#define CAP_MIN_EXC_FRAC 0.1
/* A token this many times slower than usual, and by this much, is a
 * stall (preempted, paged out): the power readings around it do not
 * enter the fit. An averaging reading this many typical residuals off
 * the fit is left out too, at most OUTLIER_RUN in a row, once the fit
 * has taken OUTLIER_WARMUP readings. */
#define STALL_RATIO 4.0
#define STALL_MIN_NS 50000000.0
#define OUTLIER_K 4.0
#define OUTLIER_RUN 3
#define OUTLIER_WARMUP 20
/* Placement hints: zones this far apart, and 3 dwell times between. */
#define PLACE_HYST_C 5.0
/* An instantaneous power reading describes the activity before it only
 * when that activity lasted this long (sensors average a few ms). */
#define MIN_PHASE_NS 20000000ull
/* The back-off from the limit for a swinging zone: this many mean
 * swings, at most this much; the filters' weight per update. */
#define SWING_K 1.0
#define SWING_MAX_C 1.5
#define SWING_W 0.1
/* The plant model's sampling interval. */
#define TM_SAMPLE_S 1.0
/* The longest sleep asked for in one step. */
#define MAX_PACE_NS 5000000000ull
/* The model's floor: no fit makes a busy CPU thread or the GPU draw less
 * than this (a counter stuck at 0 W would otherwise make tokens free,
 * and the budget could never pace them). */
#define MIN_K_CPU_MW 100.0
#define MIN_K_GPU_MW 300.0
/* A power reading exactly equal to the previous ones for this long, and
 * this many readings, comes from a stuck sensor. */
#define STUCK_NS 20000000000ull
#define STUCK_N 20
/* ... while the activity it was set against (busy threads + GPU duty)
 * went from at most STUCK_LOW times its highest to that highest, at least
 * STUCK_DX: a steady load may read the same for long on an exact sensor,
 * a load that halves may not. */
#define STUCK_DX 0.25
#define STUCK_LOW 0.5
/* Readings above this are faults unless max_power_mw says otherwise. */
#define DEFAULT_MAX_POWER_MW 1000000u
/* The model-free backstop of the temperature limit: a zone more than
 * BACKSTOP_C above the limit and not cooling at BACKSTOP_FALL_C_S
 * multiplies the duty cap by BACKSTOP_CUT each period (down to
 * BACKSTOP_MIN; at once near the critical trip); under the limit the cap
 * relaxes by BACKSTOP_RELAX a period. */
#define BACKSTOP_C 1.0
#define BACKSTOP_FALL_C_S 0.02
#define BACKSTOP_CUT 0.7
#define BACKSTOP_RELAX 1.25
#define BACKSTOP_MIN 0.05
/* Logged-once bits that are not decision flags. */
#define REPORTED_BACKSTOP 0x80000000u

/* Model priors without any power reading (a small SoC). */
#define PRIOR_BASE_MW 500.0
#define PRIOR_K_CPU_MW 1000.0
#define PRIOR_K_GPU_MW 3000.0

enum { X_BASE = 0, X_CPU, X_GPU, NX };

struct ks_governor {
    ks_governor_params p;           /* resolved: no zero defaults left */

    bool     started;
    uint64_t t0_ns;
    uint64_t last_ns;

    /* The current control period. */
    uint64_t period_start_ns;
    uint32_t acc_tokens;
    uint64_t acc_busy_ns[KS_GOV_N_ACTORS];
    uint64_t acc_energy_uj[KS_GOV_N_ACTORS];
    bool     acc_energy_known;      /* every busy actor gave energy */
    double   acc_thread_busy_ns;    /* sum of threads x CPU busy */
    int32_t  acc_threads;           /* one count for the period, or -1 */
    double   acc_power_mw_ns;       /* averaging sensors only */
    uint64_t acc_power_ns;
    bool     can_move_to_gpu, can_move_to_cpu;

    /* Sensors. */
    ks_gov_sense sense;
    bool     have_sense;
    uint64_t temp_ns;               /* when the latest temperature came */
    uint64_t power_ns;              /* when the latest power came */
    bool     power_seen;
    bool     power_avg;             /* the latest reading was an average */
    /* Activity since the latest power reading, and the latest token's. */
    double   act_thread_busy_ns, act_gpu_ns;
    /* The same CPU activity counted per token at the usual time per token
     * (see learn()): what an averaging power reading is set against, so
     * that a token slowed by a busy machine or a stall counts as one
     * token's energy, not as more busy time. */
    double   act_nom_thread_ns;
    bool     act_stall;             /* a token took far longer than usual */
    uint32_t per_suspect;           /* periods whose power and heating rate
                                     * are not to be trusted (a stall, a
                                     * reading off the fit): this one and
                                     * the next */
    bool     stall_skip;            /* ... so skip the next reading too */
    double   res_mw;                /* typical fit residual (averaging) */
    uint32_t n_fit;                 /* averaging readings fitted */
    uint32_t n_reject;              /* ... rejected in a row */
    uint64_t last_busy_end_ns;
    bool     energy_known;          /* the caller reports energy */
    uint64_t last_sample_ns;
    /* The stuck-sensor check: the reading repeated since stuck_since_ns,
     * stuck_n times; power_stuck: declared stuck, readings ignored. */
    bool     stuck_have;
    uint32_t stuck_mw;
    uint64_t stuck_since_ns;
    uint32_t stuck_n;
    bool     power_stuck;
    double   stuck_x_min, stuck_x_max;   /* the activity meanwhile */
    bool     read_use;              /* the latest reading's activity was */
    double   read_x[2];             /* known: busy threads, GPU duty */
    double   prev_temp_c;
    uint64_t prev_temp_ns;
    bool     have_prev_temp;
    double   dtemp_c_s;             /* heating rate, filtered */
    ks_telem_sample tsample;        /* scratch for step_telemetry */

    /* Power model. */
    bool     model_fit;             /* fitted from a power reading */
    bool     model_new;             /* ... for the first time just now */
    double   theta[NX];             /* base mW, k_cpu mW, k_gpu mW */
    double   ls_a[NX][NX], ls_b[NX];

    /* Time per token, ns, by CPU thread count, for the current placement. */
    double   t_cpu_ns[KS_GOV_MAX_THREADS + 1];
    bool     t_cpu_seen[KS_GOV_MAX_THREADS + 1];
    /* The time per token first measured at each count: the unit in which
     * the fit counts CPU work against an averaging power reading (tokens
     * x threads x this), so that the energy per token, theta[X_CPU] x n x
     * t_e_ns[n], stays put while t_cpu_ns follows the machine's load. */
    double   t_e_ns[KS_GOV_MAX_THREADS + 1];
    double   t_gpu_ns;
    bool     t_gpu_seen;
    uint32_t n_slow;                /* periods in a row far slower */
    uint32_t placement_gen;
    bool     have_gen;

    /* Limits. */
    int32_t  ctrl_mc;
    bool     sust_init;
    double   sust_mw;               /* S: the learned sustainable power */
    bool     sust_learned;          /* S was fitted while binding */
    uint64_t thermal_bind_ns;       /* the temperature last bound then */
    uint64_t bind_since_ns;         /* ... continuously since; 0: not */
    double   corr_mw;
    double   pmax_mw;               /* predicted draw, all threads, unpaced */

    /* Heating rate per control period and the zone's heat capacity seen
     * from the sensor (C dT/dt = P - loss): from the changes of the
     * period's power and heating rate between periods, Δr = ΔP / C. */
    bool     per_have;              /* a period's (temperature, time) */
    double   per_temp_c;
    uint64_t per_temp_ns;
    bool     per_have_pr;           /* the previous period's P and r */
    double   per_p_mw, per_r_c_s;
    double   cap_sxx, cap_sxy;      /* sums of ΔP², ΔP·Δr, forgetting */
    double   cap_mj_c;              /* C in mJ/°C; 0: unknown */
    double   rate_c_s;              /* heating rate over the last period */
    double   loss_mw;               /* P - C r, filtered: what the zone */
    bool     loss_have;             /* sheds at its temperature */
    bool     guard;                 /* the approach guard held the budget */

    /* Actuators. */
    int32_t  n_threads;
    int32_t  prev_threads;          /* the count before the latest change */
    uint32_t n_reversals;           /* back-and-forth changes in a row */
    int      last_dir;              /* +1: the latest change added threads */
    uint64_t last_thread_change_ns;
    uint64_t last_place_ns;
    bool     placed_once;
    double   period_ns;             /* token period to hold; 0: unpaced */
    double   duty_cap;              /* the backstop's most busy time per
                                     * token period; 1: off */
    uint32_t reported;              /* KS_GOV_F_* already logged */
    uint32_t faults;                /* KS_GOV_F_*_FAULT in the latest sense */
    bool     reported_cap_model;

    /* The plant as identified from power and temperature (for forecasts
     * and the model-predictive cap). */
    ks_thermal_model tm;
    double   tm_power_mw;           /* the power the forecast holds */
    /* Since the first step: tokens, and the energy of the periods they
     * ran in (measured or modelled power x time), for tokens per joule. */
    double   total_tokens;
    double   total_energy_mj;
    /* The temperature's mean and mean swing around it, per update. */
    bool     swing_have;
    double   mean_c, swing_c;
    /* The heating rate from reading to reading (filtered), which may end
     * a control period early: see early_update(). */
    bool     fast_have;
    double   fast_c;
    uint64_t fast_ns;
    double   fast_rate_c_s;

    ks_gov_decision dec;
};

/* ---- names ------------------------------------------------------------- */

const char *
ks_gov_policy_str(ks_gov_policy p)
{
    switch (p) {
    case KS_GOV_BALANCED: return "balanced";
    case KS_GOV_PERFORMANCE: return "performance";
    case KS_GOV_BATTERY: return "battery";
    }
    return "?";
}

bool
ks_gov_policy_parse(const char *s, ks_gov_policy *out)
{
    static const ks_gov_policy all[] = { KS_GOV_BALANCED, KS_GOV_PERFORMANCE,
                                         KS_GOV_BATTERY };

    for (size_t i = 0; s && i < sizeof all / sizeof all[0]; i++)
        if (strcmp(s, ks_gov_policy_str(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}

const char *
ks_gov_state_str(ks_gov_state s)
{
    switch (s) {
    case KS_GOV_STATE_START: return "start";
    case KS_GOV_STATE_COOL: return "cool";
    case KS_GOV_STATE_THERMAL: return "thermal";
    case KS_GOV_STATE_POWER: return "power";
    case KS_GOV_STATE_BATTERY: return "battery";
    case KS_GOV_STATE_TARGET: return "target";
    case KS_GOV_STATE_CRITICAL: return "critical";
    case KS_GOV_STATE_BLIND: return "blind";
    }
    return "?";
}

const char *
ks_gov_place_str(ks_gov_place p)
{
    switch (p) {
    case KS_GOV_PLACE_STAY: return "stay";
    case KS_GOV_PLACE_TO_GPU: return "to-gpu";
    case KS_GOV_PLACE_TO_CPU: return "to-cpu";
    }
    return "?";
}

/* ---- create ------------------------------------------------------------ */

ks_status
ks_governor_create(const ks_governor_params *pin, ks_governor **out)
{
    static const ks_governor_params defaults = { 0 };
    ks_governor_params p = pin ? *pin : defaults;
    ks_governor *g;

    *out = NULL;
    if (p.temp_limit_mc < 0 || p.temp_limit_mc > 150000)
        return ks_error(KS_ERR_INVALID_ARG, "governor: temp_limit_mc %d is "
                        "outside 0..150000 (0 means the passive trip)",
                        p.temp_limit_mc);
    if (p.margin_mc < 0 || p.margin_mc > 50000)
        return ks_error(KS_ERR_INVALID_ARG, "governor: margin_mc %d is "
                        "outside 0..50000", p.margin_mc);
    if ((unsigned)p.policy > KS_GOV_BATTERY)
        return ks_error(KS_ERR_INVALID_ARG, "governor: policy %d is not "
                        "balanced, performance or battery", (int)p.policy);
    if (p.battery_low_pct > 100)
        return ks_error(KS_ERR_INVALID_ARG, "governor: battery_low_pct %u "
                        "is above 100", p.battery_low_pct);
    if (p.max_threads < 0 || p.min_threads < 0)
        return ks_error(KS_ERR_INVALID_ARG, "governor: thread counts must "
                        "not be negative (min %d, max %d)", p.min_threads,
                        p.max_threads);
    if (!(p.target_tps >= 0.0) || !isfinite(p.target_tps))
        return ks_error(KS_ERR_INVALID_ARG, "governor: target_tps %g is not "
                        "a finite number >= 0", p.target_tps);
    if (p.max_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p.max_threads = n > 0 ? (int32_t)(n > KS_GOV_MAX_THREADS ?
                                          KS_GOV_MAX_THREADS : n) : 1;
    }
    if (p.max_threads > KS_GOV_MAX_THREADS)
        return ks_error(KS_ERR_INVALID_ARG, "governor: max_threads %d is "
                        "above %d", p.max_threads, KS_GOV_MAX_THREADS);
    if (p.min_threads == 0)
        p.min_threads = 1;
    if (p.min_threads > p.max_threads)
        return ks_error(KS_ERR_INVALID_ARG, "governor: min_threads %d is "
                        "above max_threads %d", p.min_threads, p.max_threads);
    if (p.margin_mc == 0)
        p.margin_mc = KS_TELEM_DEFAULT_MARGIN_MC;
    if (p.battery_low_pct == 0)
        p.battery_low_pct = 30;
    if (p.period_ns == 0)
        p.period_ns = 500000000ull;
    if (p.sample_ns == 0)
        p.sample_ns = 100000000ull;
    if (p.dwell_ns == 0)
        p.dwell_ns = 10000000000ull;
    if (p.max_power_mw == 0)
        p.max_power_mw = DEFAULT_MAX_POWER_MW;

    g = calloc(1, sizeof *g);
    if (!g)
        return ks_error(KS_ERR_NOMEM, "governor: no memory for its state");
    g->p = p;
    g->n_threads = p.max_threads;
    g->theta[X_BASE] = PRIOR_BASE_MW;
    g->theta[X_CPU] = PRIOR_K_CPU_MW;
    g->theta[X_GPU] = PRIOR_K_GPU_MW;
    g->duty_cap = 1.0;
    g->acc_threads = 0;
    g->acc_energy_known = true;
    g->ctrl_mc = p.temp_limit_mc ? p.temp_limit_mc : DEFAULT_LIMIT_MC;
    g->dec.n_threads = p.max_threads;
    g->dec.state_id = KS_GOV_STATE_START;
    g->dec.state = ks_gov_state_str(KS_GOV_STATE_START);
    g->dec.target = "-";
    g->dec.time_to_limit_s = -1.0;
    g->dec.control_temp_mc = g->ctrl_mc;
    ks_thermal_model_init(&g->tm, TM_SAMPLE_S);
    ks_log(KS_LOG_DEBUG, TAG, "policy=%s threads=%d..%d limit=%s%.1fC "
           "power_limit=%umW period=%.0fms dwell=%.1fs",
           ks_gov_policy_str(p.policy), p.min_threads, p.max_threads,
           p.temp_limit_mc ? "" : "trip-", p.temp_limit_mc ?
           p.temp_limit_mc / 1000.0 : p.margin_mc / 1000.0, p.power_limit_mw,
           p.period_ns / 1e6, p.dwell_ns / NS_PER_S);
    *out = g;
    return KS_OK;
}

void
ks_governor_destroy(ks_governor *g)
{
    free(g);
}

double
ks_governor_forecast_c(const ks_governor *g, double h_s)
{
    if (!g->have_sense || !g->sense.has_temp)
        return NAN;
    if (!g->tm.valid)
        return g->sense.temp_mc / 1000.0;
    return ks_thermal_model_forecast(&g->tm, g->tm_power_mw / 1000.0, h_s);
}

double
ks_governor_headroom(const ks_governor *g, double h_s)
{
    double t = ks_governor_forecast_c(g, h_s);

    if (isnan(t))
        return NAN;
    /* Idle is where the identified plant settles at the base power. */
    return ks_telem_headroom(t * 1000.0, g->ctrl_mc, g->tm.valid ?
                             1000.0 * (g->tm.amb_c + g->tm.r_c_per_w *
                                       g->theta[X_BASE] / 1000.0) :
                             KS_TELEM_HEADROOM_IDLE_MC);
}

const ks_gov_decision *
ks_governor_last(const ks_governor *g)
{
    return &g->dec;
}

/* ---- sensing ----------------------------------------------------------- */

/* A power reading faster than a battery's fuel gauge (which averages
 * over seconds and updates slowly): RAPL package domains, else hwmon
 * power and energy channels, as the telemetry sums them. */
static bool
fast_power(const ks_telem_info *info, const ks_telem_sample *s,
           int64_t *mw, bool *average)
{
    for (int pass = 0; pass < 2; pass++) {
        bool any = false, avg = true;
        int64_t sum = 0;

        for (uint32_t i = 0; i < info->n_power && i < s->n_power; i++) {
            const ks_telem_power_info *pi = &info->power[i];
            const ks_telem_value *v = &s->power_mw[i];
            bool take = pass == 0 ?
                pi->kind == KS_POWER_RAPL && pi->rapl_role == KS_RAPL_PACKAGE &&
                !pi->rapl_mmio :
                pi->kind == KS_POWER_HWMON || pi->kind == KS_POWER_HWMON_ENERGY;

            if (!take || !v->valid || v->stale)
                continue;
            sum += v->value;
            any = true;
            if (pi->kind == KS_POWER_HWMON)
                avg = false;
        }
        if (any) {
            *mw = sum;
            *average = avg;
            return true;
        }
    }
    return false;
}

static bool
temp_plausible(int32_t mc)
{
    return mc >= KS_GOV_TEMP_MIN_MC && mc <= KS_GOV_TEMP_MAX_MC;
}

static void
temp_fault(ks_gov_sense *out, int32_t mc)
{
    out->faults |= KS_GOV_F_TEMP_FAULT;
    out->bad_temp_mc = mc;
}

/* The hottest relevant zone (the classes the telemetry's own summary
 * counts) whose reading is plausible: what the summary would be without
 * the faulty sensor. */
static void
hottest_plausible(const ks_telem_info *info, const ks_telem_sample *s,
                  ks_gov_sense *out)
{
    for (uint32_t i = 0; i < info->n_zones && i < s->n_zones; i++) {
        const ks_telem_temp *zt = &s->zone_temp[i];
        ks_telem_class c = info->zones[i].cls;

        if (c != KS_TELEM_CPU && c != KS_TELEM_GPU && c != KS_TELEM_NPU &&
            c != KS_TELEM_SOC && c != KS_TELEM_PACKAGE)
            continue;
        if (!zt->valid || zt->stale || !temp_plausible(zt->temp_mc))
            continue;
        if (!out->has_temp || zt->temp_mc > out->temp_mc) {
            out->has_temp = true;
            out->temp_mc = zt->temp_mc;
        }
    }
}

void
ks_gov_sense_from_telemetry(const ks_telem_info *info,
                            const ks_telem_sample *s, ks_gov_sense *out)
{
    int64_t fast_mw = 0;
    bool fast_avg = false;

    memset(out, 0, sizeof *out);
    out->battery_pct = -1;
    if (s->hottest.valid && !s->hottest.stale) {
        if (temp_plausible(s->hottest.temp_mc)) {
            out->has_temp = true;
            out->temp_mc = s->hottest.temp_mc;
        } else {
            temp_fault(out, s->hottest.temp_mc);
            hottest_plausible(info, s, out);
        }
    }
    if (s->passive_trip.valid)
        out->passive_trip_mc = s->passive_trip.temp_mc;
    if (s->critical_trip.valid)
        out->critical_trip_mc = s->critical_trip.temp_mc;
    if (s->passive_zone >= 0 && (uint32_t)s->passive_zone < info->n_zones)
        out->sustainable_mw =
            info->zones[s->passive_zone].sustainable_power_mw;
    for (uint32_t i = 0; i < info->n_zones && i < s->n_zones; i++) {
        const ks_telem_temp *zt = &s->zone_temp[i];
        int a;

        if (info->zones[i].cls == KS_TELEM_CPU)
            a = KS_GOV_CPU;
        else if (info->zones[i].cls == KS_TELEM_GPU)
            a = KS_GOV_GPU;
        else
            continue;
        if (!zt->valid || zt->stale)
            continue;
        if (!temp_plausible(zt->temp_mc)) {
            temp_fault(out, zt->temp_mc);
            continue;
        }
        if (!out->has_actor_temp[a] || zt->temp_mc > out->actor_temp_mc[a]) {
            out->has_actor_temp[a] = true;
            out->actor_temp_mc[a] = zt->temp_mc;
        }
    }
    if (s->system_power_src == KS_SYSPOWER_BATTERY &&
        fast_power(info, s, &fast_mw, &fast_avg) && fast_mw < 0) {
        out->faults |= KS_GOV_F_POWER_FAULT;
        out->bad_power_mw = fast_mw;
    } else if (s->system_power_src == KS_SYSPOWER_BATTERY &&
        fast_power(info, s, &fast_mw, &fast_avg)) {
        out->has_power = true;
        out->power_mw = fast_mw > UINT32_MAX ? UINT32_MAX : (uint32_t)fast_mw;
        out->power_is_average = fast_avg;
    } else if (s->system_power_mw.valid && !s->system_power_mw.stale &&
        s->system_power_mw.value >= 0) {
        out->has_power = true;
        out->power_mw = s->system_power_mw.value > UINT32_MAX ? UINT32_MAX :
                        (uint32_t)s->system_power_mw.value;
        switch (s->system_power_src) {
        case KS_SYSPOWER_BATTERY:   /* fuel gauges average over seconds */
        case KS_SYSPOWER_RAPL:
            out->power_is_average = true;
            break;
        case KS_SYSPOWER_HWMON:
            /* Energy channels are averages; any power file is not. */
            out->power_is_average = true;
            for (uint32_t i = 0; i < info->n_power; i++)
                if (info->power[i].kind == KS_POWER_HWMON &&
                    i < s->n_power && s->power_mw[i].valid)
                    out->power_is_average = false;
            break;
        default:
            out->power_is_average = false;
            break;
        }
    }
    if (!out->has_power && !(out->faults & KS_GOV_F_POWER_FAULT) &&
        s->system_power_mw.valid && !s->system_power_mw.stale &&
        s->system_power_mw.value < 0) {
        out->faults |= KS_GOV_F_POWER_FAULT;
        out->bad_power_mw = s->system_power_mw.value;
    }
    out->has_battery = s->has_battery;
    out->discharging = s->has_battery && !s->external_power;
    if (s->battery_pct.valid)
        out->battery_pct = (int32_t)s->battery_pct.value;
}

/* ---- the power model --------------------------------------------------- */

/* Solves the NX x NX system a x = b in place (partial pivoting); false if
 * singular. */
static bool
solve(double a[NX][NX], double b[NX], double x[NX])
{
    for (int c = 0; c < NX; c++) {
        int piv = c;

        for (int r = c + 1; r < NX; r++)
            if (fabs(a[r][c]) > fabs(a[piv][c]))
                piv = r;
        if (fabs(a[piv][c]) < 1e-12)
            return false;
        if (piv != c) {
            for (int k = 0; k < NX; k++) {
                double t = a[c][k];
                a[c][k] = a[piv][k];
                a[piv][k] = t;
            }
            double t = b[c];
            b[c] = b[piv];
            b[piv] = t;
        }
        for (int r = c + 1; r < NX; r++) {
            double f = a[r][c] / a[c][c];

            for (int k = c; k < NX; k++)
                a[r][k] -= f * a[c][k];
            b[r] -= f * b[c];
        }
    }
    for (int r = NX - 1; r >= 0; r--) {
        double s = b[r];

        for (int k = r + 1; k < NX; k++)
            s -= a[r][k] * x[k];
        x[r] = s / a[r][r];
    }
    return true;
}

/* Keeps the model's work terms at their floor (MIN_K_*) and idle power
 * at least 0, whatever the readings or the caller's estimates said. */
static void
model_floor(ks_governor *g)
{
    if (!(g->theta[X_BASE] >= 0))
        g->theta[X_BASE] = 0;
    if (!(g->theta[X_CPU] >= MIN_K_CPU_MW))
        g->theta[X_CPU] = MIN_K_CPU_MW;
    if (!(g->theta[X_GPU] >= MIN_K_GPU_MW))
        g->theta[X_GPU] = MIN_K_GPU_MW;
}

/* Back to the priors: the readings the model was fitted from were not
 * measurements (a stuck sensor). */
static void
model_reset(ks_governor *g)
{
    g->theta[X_BASE] = PRIOR_BASE_MW;
    g->theta[X_CPU] = PRIOR_K_CPU_MW;
    g->theta[X_GPU] = PRIOR_K_GPU_MW;
    memset(g->ls_a, 0, sizeof g->ls_a);
    memset(g->ls_b, 0, sizeof g->ls_b);
    g->model_fit = false;
    g->model_new = true;    /* what the thermal loop learned goes too */
    g->n_fit = g->n_reject = 0;
    g->res_mw = 0;
    g->corr_mw = 0;
}

/* One least-squares step on (x, power_mw): forgets old periods, and holds
 * directions the data does not excite at the previous fit. */
static void
model_fit(ks_governor *g, const double x[NX], double power_mw)
{
    double a[NX][NX], b[NX], th[NX];

    if (!g->model_fit) {
        /* First reading: split it 1:3 into idle and work, the GPU's
         * unit of work drawing three CPU threads' power. */
        double w = x[X_CPU] + 3.0 * x[X_GPU];

        g->theta[X_BASE] = 0.25 * power_mw;
        if (w > 0.05) {
            g->theta[X_CPU] = 0.75 * power_mw / w;
            g->theta[X_GPU] = 3.0 * g->theta[X_CPU];
        }
        model_floor(g);
        g->model_fit = true;
        g->model_new = true;
    }
    for (int i = 0; i < NX; i++) {
        for (int j = 0; j < NX; j++)
            g->ls_a[i][j] = LS_FORGET * g->ls_a[i][j] + x[i] * x[j];
        g->ls_b[i] = LS_FORGET * g->ls_b[i] + x[i] * power_mw;
    }
    for (int i = 0; i < NX; i++) {
        for (int j = 0; j < NX; j++)
            a[i][j] = g->ls_a[i][j] + (i == j ? LS_RIDGE : 0.0);
        b[i] = g->ls_b[i] + LS_RIDGE * g->theta[i];
    }
    if (!solve(a, b, th))
        return;
    /* A fit with negative terms is noise; keep the previous one. */
    if (th[X_BASE] < 0 || th[X_CPU] <= 1.0 || th[X_GPU] <= 1.0)
        return;
    memcpy(g->theta, th, sizeof th);
    model_floor(g);
}

/* CPU time per token at |n| threads from |t| (t_cpu_ns or t_e_ns):
 * measured, else scaled from the nearest measured count. Negative when
 * nothing was measured yet. */
static double
t_at(const ks_governor *g, const double *t, int32_t n)
{
    int32_t best = -1;

    if (g->t_cpu_seen[n])
        return t[n];
    for (int32_t m = g->p.min_threads; m <= g->p.max_threads; m++)
        if (g->t_cpu_seen[m] && (best < 0 || abs(m - n) < abs(best - n)))
            best = m;
    if (best < 0)
        return -1.0;
    return t[best] * pow((double)best / n, THREAD_ALPHA);
}

static double
t_cpu_at(const ks_governor *g, int32_t n)
{
    return t_at(g, g->t_cpu_ns, n);
}

typedef struct token_cost {
    double t_ns;        /* compute time per token */
    double e_dyn;       /* energy above idle per token, mW*ns */
    double req_mw[KS_GOV_N_ACTORS]; /* each actor's power while unpaced */
} token_cost;

/* The cost of a token at |n| threads; false when unknown. */
static bool
cost_at(const ks_governor *g, int32_t n, token_cost *c)
{
    double tc = t_cpu_at(g, n), te = t_at(g, g->t_e_ns, n);
    double tg = g->t_gpu_seen ? g->t_gpu_ns : 0.0;

    if (tc < 0)
        tc = te = 0;
    c->t_ns = tc + tg;
    if (c->t_ns <= 0)
        return false;
    c->req_mw[KS_GOV_CPU] = g->theta[X_CPU] * n * te / c->t_ns;
    c->req_mw[KS_GOV_GPU] = g->theta[X_GPU] * tg / c->t_ns;
    c->e_dyn = g->theta[X_CPU] * n * te + g->theta[X_GPU] * tg;
    return true;
}

/* Tokens/s at |n| threads with |dyn_mw| above idle and the period floor. */
static double
rate_at(const ks_governor *g, int32_t n, double dyn_mw, double min_period_ns)
{
    token_cost c;
    double period;

    if (!cost_at(g, n, &c))
        return 0.0;
    period = c.t_ns;
    if (dyn_mw > 0 && c.e_dyn / dyn_mw > period)
        period = c.e_dyn / dyn_mw;
    if (min_period_ns > period)
        period = min_period_ns;
    return NS_PER_S / period;
}

/* ---- one control update ------------------------------------------------ */

static void
report_once(ks_governor *g, uint32_t flag, const char *fmt, double a)
{
    if (g->reported & flag)
        return;
    g->reported |= flag;
    ks_log(KS_LOG_WARN, TAG, fmt, a);
}

/* One power reading. An average since the previous reading (energy
 * counters, fuel gauges) is set against the activity over the same time;
 * an instantaneous one (hwmon power, shunt monitors) against what ran just
 * before it: the token that just finished when the step carries work, idle
 * when the caller steps after a pause. Readings taken where neither holds
 * do not enter the fit. */
static void
power_reading(ks_governor *g, const ks_gov_sense *s, uint64_t now,
              const ks_gov_work *work)
{
    double x[NX] = { 1.0, 0.0, 0.0 }, p = s->power_mw;
    uint64_t since = g->power_seen ? now - g->power_ns : 0;
    bool use = false;

    if (s->power_is_average) {
        if (since >= MIN_PHASE_NS && since <= STALE_NS) {
            x[X_CPU] = g->act_nom_thread_ns / (double)since;
            x[X_GPU] = g->act_gpu_ns / (double)since;
            use = true;
        }
        if (since > 0 && since <= STALE_NS) {
            g->acc_power_mw_ns += p * (double)since;
            g->acc_power_ns += since;
        }
    } else if (work && (work->busy_ns[KS_GOV_CPU] || work->busy_ns[KS_GOV_GPU])) {
        double tc = (double)work->busy_ns[KS_GOV_CPU];
        double tg = (double)work->busy_ns[KS_GOV_GPU];
        int32_t n = work->n_threads > 0 ? work->n_threads : g->n_threads;

        if (tc + tg >= MIN_PHASE_NS) {
            x[X_CPU] = n * tc / (tc + tg);
            x[X_GPU] = tg / (tc + tg);
            use = true;
        }
    } else if (g->last_busy_end_ns && now - g->last_busy_end_ns >= MIN_PHASE_NS) {
        use = true;         /* idle since the latest token */
    }
    g->read_use = use;
    g->read_x[0] = x[X_CPU];
    g->read_x[1] = x[X_GPU];
    g->act_thread_busy_ns = 0;
    g->act_nom_thread_ns = 0;
    g->act_gpu_ns = 0;
    g->power_ns = now;
    g->power_seen = true;
    g->power_avg = s->power_is_average;
    if (g->act_stall || g->stall_skip) {
        /* Around a stall the reading and the work disagree (a sensor
         * updated late charges the stall's idle energy to the tokens
         * after it). */
        if (use)
            ks_log(KS_LOG_DEBUG, TAG, "power reading %.0f mW %s a stall: "
                   "not fitted", p, g->act_stall ? "over" : "after");
        g->stall_skip = g->act_stall;
        g->act_stall = false;
        return;
    }
    if (use && s->power_is_average && !g->energy_known && g->model_fit) {
        double res = p - (g->theta[X_BASE] + g->theta[X_CPU] * x[X_CPU] +
                          g->theta[X_GPU] * x[X_GPU]);

        if (g->n_fit >= OUTLIER_WARMUP && g->n_reject < OUTLIER_RUN &&
            fabs(res) > OUTLIER_K * g->res_mw) {
            g->n_reject++;
            g->per_suspect = 2;
            ks_log(KS_LOG_DEBUG, TAG, "power reading %.0f mW is %.0f mW off "
                   "the fit: not fitted", p, res);
            return;
        }
        g->n_reject = 0;
        g->res_mw = g->n_fit ? 0.9 * g->res_mw + 0.1 * fabs(res) :
                    fmax(fabs(res), 0.02 * p);
        if (g->res_mw < 0.01 * p)
            g->res_mw = 0.01 * p;
        g->n_fit++;
    }
    if (!use)
        return;
    if (g->energy_known) {
        /* The caller's estimates give k; the reading gives the rest. */
        double base = p - g->theta[X_CPU] * x[X_CPU] -
                      g->theta[X_GPU] * x[X_GPU];

        if (base < 0)
            base = 0;
        g->model_new = !g->model_fit;
        g->theta[X_BASE] = g->model_fit ? 0.9 * g->theta[X_BASE] + 0.1 * base
                                        : base;
        g->model_fit = true;
    } else {
        model_fit(g, x, p);
    }
}

static void
learn(ks_governor *g)
{
    /* The caller's energy estimates, if every busy actor gave one. */
    g->energy_known = g->acc_energy_known &&
                      (g->acc_busy_ns[KS_GOV_CPU] || g->acc_busy_ns[KS_GOV_GPU]);
    if (g->energy_known) {
        /* µJ over thread-busy ns: 1 µJ/ns = 1 kW = 1e6 mW. */
        if (g->acc_busy_ns[KS_GOV_CPU] && g->acc_thread_busy_ns > 0) {
            double k = g->acc_energy_uj[KS_GOV_CPU] * 1e6 /
                       g->acc_thread_busy_ns;
            g->theta[X_CPU] = 0.5 * g->theta[X_CPU] + 0.5 * k;
        }
        if (g->acc_busy_ns[KS_GOV_GPU]) {
            double k = g->acc_energy_uj[KS_GOV_GPU] * 1e6 /
                       (double)g->acc_busy_ns[KS_GOV_GPU];
            g->theta[X_GPU] = 0.5 * g->theta[X_GPU] + 0.5 * k;
        }
        model_floor(g);
    }

    /* Time per token at this thread count (whole periods at one count). */
    if (g->acc_tokens > 0 && g->acc_threads > 0) {
        double tc = (double)g->acc_busy_ns[KS_GOV_CPU] / g->acc_tokens;
        double tg = (double)g->acc_busy_ns[KS_GOV_GPU] / g->acc_tokens;
        int32_t n = g->acc_threads;

        if (tc > 0 && !g->t_cpu_seen[n]) {
            g->t_cpu_ns[n] = g->t_e_ns[n] = tc;
            g->t_cpu_seen[n] = true;
        } else if (tc > 0) {
            /* Faster tokens count at once; slower ones (another process
             * on the core, a stall, page faults) only when they persist,
             * and then slowly: the usual time per token is what a token
             * costs, not what it took on a busy machine. */
            double w = 0.5;

            if (tc <= SLOW_RATIO * g->t_cpu_ns[n]) {
                g->n_slow = 0;
            } else {
                g->n_slow++;
                w = g->n_slow > SLOW_PERIODS ? SLOW_WEIGHT : 0.0;
            }
            g->t_cpu_ns[n] = (1.0 - w) * g->t_cpu_ns[n] + w * tc;
        }
        if (tg > 0 || g->acc_busy_ns[KS_GOV_CPU]) {
            g->t_gpu_ns = g->t_gpu_seen ? 0.5 * g->t_gpu_ns + 0.5 * tg : tg;
            g->t_gpu_seen = true;
        }
    }
}

static void
resolve_limit(ks_governor *g)
{
    int32_t ctrl;

    if (g->p.temp_limit_mc) {
        ctrl = g->p.temp_limit_mc;
    } else if (g->have_sense && g->sense.passive_trip_mc > 0) {
        ctrl = g->sense.passive_trip_mc - g->p.margin_mc;
    } else {
        ctrl = DEFAULT_LIMIT_MC;
        if (g->have_sense && g->sense.has_temp)
            report_once(g, KS_GOV_F_NO_TRIP, "no passive trip point: holding "
                        "%.1f C (set a temperature limit to change it)",
                        ctrl / 1000.0);
    }
    if (ctrl != g->ctrl_mc)
        ks_log(KS_LOG_DEBUG, TAG, "control temperature %.1f C", ctrl / 1000.0);
    g->ctrl_mc = ctrl;
}

/* The heating rate over the period that just ended (between the latest
 * temperature readings of this and the previous update) and, from how it
 * changed with the period's power, the heat capacity C the sensor sees:
 * for a zone that follows C dT/dt = P - loss(T), a change of power ΔP
 * between two periods changes the rate by ΔP / C at once, while the loss
 * moves only with the temperature. Δr is regressed on ΔP (the power is
 * the better measured of the two), with forgetting, and only periods
 * whose power changed enough to tell count, so that C holds while the
 * power is steady. False when no rate is known for this period. */
static bool
thermal_rate(ks_governor *g, double p_mw, double range)
{
    double t_c = g->sense.temp_mc / 1000.0, r;

    if (!g->per_have || g->temp_ns <= g->per_temp_ns) {
        if (!g->per_have) {
            g->per_have = true;
            g->per_temp_c = t_c;
            g->per_temp_ns = g->temp_ns;
        }
        g->per_have_pr = false;
        return false;
    }
    r = (t_c - g->per_temp_c) * NS_PER_S /
        (double)(g->temp_ns - g->per_temp_ns);
    g->per_temp_c = t_c;
    g->per_temp_ns = g->temp_ns;
    g->rate_c_s = r;
    if (g->per_suspect) {
        /* A stall, or a power reading that disagrees with the work: the
         * sensors may lag the work (and catch up in the next period), so
         * neither this period nor the next tells C, the loss or the
         * rate to act on. */
        g->per_suspect--;
        g->per_have_pr = false;
        return false;
    }
    if (g->per_have_pr) {
        double dp = p_mw - g->per_p_mw, dr = r - g->per_r_c_s;

        if (fabs(dp) >= CAP_MIN_DP_FRAC * range) {
            g->cap_sxx = CAP_FORGET * g->cap_sxx + dp * dp;
            g->cap_sxy = CAP_FORGET * g->cap_sxy + dp * dr;
            if (g->cap_sxx >= CAP_MIN_EXC_FRAC * CAP_MIN_EXC_FRAC *
                range * range && g->cap_sxy > 0)
                g->cap_mj_c = g->cap_sxx / g->cap_sxy;
        }
    }
    g->per_p_mw = p_mw;
    g->per_r_c_s = r;
    g->per_have_pr = true;
    if (g->cap_mj_c > 0) {
        double loss = p_mw - g->cap_mj_c * r;

        g->loss_mw = g->loss_have ? (1.0 - LOSS_W) * g->loss_mw + LOSS_W * loss
                                  : loss;
        g->loss_have = true;
    }
    return true;
}

/* The approach guard: a budget that lets the temperature approach the
 * limit no faster than e / H (e the headroom, H a few control periods),
 * and pulls it back at that pace from above. The PI loop alone reacts to
 * the headroom only: it lets a fast-heating zone run at full power until
 * close to the limit and, starting from a guess of the sustainable power,
 * overshoots. The guard acts when the current rate would carry the zone
 * more than GUARD_TOL_C past the limit within H: with the zone's heat
 * capacity C, the power that gives the wanted rate is P - C (r - e / H),
 * and P - C r is the power the zone sheds at its temperature, which is
 * what S (the PI loop's integral) must become near the limit; S follows
 * it while the guard holds. Without a fitted C (the power has not changed
 * enough yet), C is guessed from the current rate and a guess of the
 * sustainable power, on the cautious side. Returns the thermal budget. */
static double
approach_guard(ks_governor *g, double e, double p_mw, double base,
               double range, double dt_ns, double b_th)
{
    double h = fmax(GUARD_H_S, GUARD_H_PERIODS * g->p.period_ns / NS_PER_S);
    double r = g->rate_c_s, cap = g->cap_mj_c, floor, b_ff, loss;

    g->guard = false;
    if (r <= (e + GUARD_TOL_C) / h)
        return b_th;
    floor = base + FLOOR_FRAC * range;
    if (cap <= 0) {
        /* The zone sheds at most about what the PI loop would hold (and
         * at most half the power above idle drawn now). */
        double s_guess = g->sust_init ? g->sust_mw : base + SINIT_FRAC * range;

        s_guess = fmin(s_guess, base + 0.5 * (p_mw - base));
        if (p_mw <= s_guess || r <= 0)
            return b_th;
        cap = (p_mw - s_guess) / r;
    }
    b_ff = p_mw - cap * (r - e / h);
    loss = p_mw - cap * r;
    if (b_ff < floor)
        b_ff = floor;
    if (b_ff >= b_th)
        return b_th;
    g->guard = true;
    if (g->cap_mj_c > 0 && g->loss_have)
        loss = g->loss_mw;      /* the same, filtered */
    if (loss < floor)
        loss = floor;
    if (!g->sust_init) {
        g->sust_mw = loss;
        g->sust_init = true;
        ks_log(KS_LOG_DEBUG, TAG, "thermal loop on by the approach guard at "
               "%.1f C: S=%.0f mW", g->sense.temp_mc / 1000.0, g->sust_mw);
    } else {
        g->sust_mw += (loss - g->sust_mw) *
                      fmin(1.0, dt_ns / NS_PER_S / GUARD_TRACK_S);
    }
    return b_ff;
}

/* The zone is within CRITICAL_GUARD_C of its critical trip. */
static bool
near_critical(const ks_governor *g)
{
    return g->sense.critical_trip_mc > 0 &&
           g->sense.temp_mc / 1000.0 >=
           g->sense.critical_trip_mc / 1000.0 - CRITICAL_GUARD_C;
}

/* What one control update works out, stage by stage. Each stage reads
 * the fields earlier stages wrote and the governor's state, and writes
 * the fields its comment names. */
typedef struct upd {
    uint64_t now;
    double   dt_ns;         /* length of the period that just ended */
    bool     temp_fresh;    /* a temperature within STALE_NS */
    bool     power_fresh;   /* a power reading within STALE_NS */
    double   p_meas;        /* the period's power: measured or modelled */
    double   base;          /* idle power (model) */
    double   range;         /* dynamic power: flat out minus idle, >= 1 */
    double   demand;        /* what the current thread count draws unpaced */
    double   b_th, b_cap, b_bat;  /* each limit's budget; INFINITY: none */
    double   budget;        /* the lowest of them */
    double   dyn;           /* budget above idle, after power tracking */
    double   min_period;    /* from target_tps; 0: none */
    bool     blind;         /* no temperature: the blind budget holds */
    bool     binding;       /* the budget is below demand */
    bool     cut;           /* the backstop tightened its cap just now */
    ks_gov_state state;
    int32_t  n;             /* thread count chosen */
} upd;

/* Stage 1, estimate power. Reads the period's accumulators and the
 * latest readings; writes the power model (learn()), g->pmax_mw and u's
 * base, range, p_meas and demand. A first fitted model resets what the
 * thermal loop learned in the priors' units. */
static void
estimate_power(ks_governor *g, upd *u)
{
    token_cost cost, cmax;
    double p_model;

    learn(g);
    if (g->model_new) {
        g->model_new = false;
        g->sust_init = false;
        g->sust_learned = false;
        g->bind_since_ns = 0;
        g->corr_mw = 0;
        g->per_have_pr = false;
        g->cap_sxx = g->cap_sxy = 0;
        g->cap_mj_c = 0;
        g->loss_have = false;
    }
    u->base = g->theta[X_BASE];
    p_model = u->base + (g->theta[X_CPU] * g->acc_thread_busy_ns +
                         g->theta[X_GPU] * g->acc_busy_ns[KS_GOV_GPU]) /
                        u->dt_ns;
    /* Averaging sensors measure the period; instantaneous ones only feed
     * the model, which then stands for the period's average. */
    u->p_meas = u->power_fresh && g->power_avg && g->acc_power_ns > 0 ?
                g->acc_power_mw_ns / g->acc_power_ns : p_model;
    g->pmax_mw = cost_at(g, g->p.max_threads, &cmax) ?
                 u->base + cmax.e_dyn / cmax.t_ns :
                 u->base + g->theta[X_CPU] * g->p.max_threads;
    u->range = g->pmax_mw - u->base;
    if (u->range < 1.0)
        u->range = 1.0;
    u->demand = cost_at(g, u->n, &cost) ? u->base + cost.e_dyn / cost.t_ns
                                        : g->pmax_mw;
    if (!u->power_fresh)
        report_once(g, KS_GOV_F_NO_POWER, "no power sensor: power is "
                    "modelled from busy time (about %.0f mW per busy CPU "
                    "thread); a power limit is approximate", g->theta[X_CPU]);
    resolve_limit(g);
}

/* Stage 2a, the thermal loop's switch-on and integral. Reads the
 * headroom |e| (°C) and the zone's loss estimate; writes S (sust_mw) and
 * returns the PI budget S + Kp e, at least the floor. */
static double
thermal_pi(ks_governor *g, const upd *u, double t_c, double e, double kp)
{
    double floor = u->base + FLOOR_FRAC * u->range, b;

    if (!g->sust_init && e < PBAND_C) {
        /* Switch-on: S from the zone's IPA setting, else a low guess
         * (approaching from below overshoots less); the integral
         * corrects it. */
        uint32_t s = g->p.sustainable_mw ? g->p.sustainable_mw :
                     g->sense.sustainable_mw;

        g->sust_mw = s ? (double)s : u->base + SINIT_FRAC * u->range;
        g->sust_init = true;
        ks_log(KS_LOG_DEBUG, TAG, "thermal loop on at %.1f C: S=%.0f mW "
               "Kp=%.0f mW/C", t_c, g->sust_mw, kp);
    }
    if (!g->sust_init)
        return INFINITY;
    /* Below the limit the zone sheds less than at it: S is at least the
     * loss measured now. */
    if (e > 0 && g->loss_have && g->sust_mw < g->loss_mw) {
        if (g->loss_mw - g->sust_mw > 0.05 * u->range)
            ks_log(KS_LOG_DEBUG, TAG, "S %.0f -> %.0f mW: the zone already "
                   "sheds that at %.1f C", g->sust_mw, g->loss_mw, t_c);
        g->sust_mw = fmin(g->loss_mw, g->pmax_mw);
    }
    b = g->sust_mw + kp * e;
    if (e < 0 || (b < u->demand && e - LOOK_S * fmax(g->dtemp_c_s, 0.0) > 0)) {
        g->sust_mw += kp * e * (u->dt_ns / NS_PER_S) /
                      (e < 0 ? TAU_I_DOWN_S : TAU_I_UP_S);
        if (g->sust_mw < floor)
            g->sust_mw = floor;
        if (g->sust_mw > g->pmax_mw)
            g->sust_mw = g->pmax_mw;
        b = g->sust_mw + kp * e;
    }
    return b < floor ? floor : b;
}

/* Stage 2b, the backstop: the temperature limit holds whatever the power
 * model says (a model fitted from a faulty sensor can make the budget
 * look ample). Reads the headroom |e| and the filtered heating rate;
 * writes duty_cap and u->cut (the cap tightened in this update). */
static void
thermal_backstop(ks_governor *g, upd *u, double t_c, double e)
{
    double was = g->duty_cap;

    if (near_critical(g))
        g->duty_cap = BACKSTOP_MIN;
    else if (e < -BACKSTOP_C && g->dtemp_c_s > -BACKSTOP_FALL_C_S)
        g->duty_cap = fmax(BACKSTOP_MIN, g->duty_cap * BACKSTOP_CUT);
    else if (e >= 0)
        g->duty_cap = fmin(1.0, g->duty_cap * BACKSTOP_RELAX);
    u->cut = g->duty_cap < was;
    if (u->cut && !(g->reported & REPORTED_BACKSTOP)) {
        g->reported |= REPORTED_BACKSTOP;
        ks_log(KS_LOG_WARN, TAG, "%.1f C is %.1f C over the limit and not "
               "cooling: cutting the duty and threads each period, whatever "
               "the power model predicts", t_c, -e);
    }
}

/* Stage 2, PI on the temperature headroom. Reads the latest temperature,
 * the heating rate and u's power figures; writes u->b_th and u->blind, the
 * thermal estimates (rate, C, loss, guard) and d->time_to_limit_s. */
static void
thermal_budget(ks_governor *g, upd *u)
{
    ks_gov_decision *d = &g->dec;
    double t_c, e, kp;
    bool have_rate;

    g->guard = false;
    if (!u->temp_fresh) {
        g->per_have = g->per_have_pr = false;
        report_once(g, KS_GOV_F_NO_TEMP, "no temperature reading: holding a "
                    "conservative budget (%.0f %% of the dynamic power)",
                    100.0 * BLIND_FRAC);
        u->b_th = u->base + BLIND_FRAC * u->range;
        u->blind = true;
        d->time_to_limit_s = -1.0;
        return;
    }
    t_c = g->sense.temp_mc / 1000.0;
    /* A zone that swings around its mean by D (a fast die under a load
     * that comes and goes) is held about D under the limit, so that its
     * swings, not its mean, stay under it. */
    if (!g->swing_have) {
        g->swing_have = true;
        g->mean_c = t_c;
    }
    g->mean_c += SWING_W * (t_c - g->mean_c);
    g->swing_c += SWING_W * (fabs(t_c - g->mean_c) - g->swing_c);
    e = g->ctrl_mc / 1000.0 - fmin(SWING_MAX_C, SWING_K * g->swing_c) - t_c;
    ks_thermal_model_add(&g->tm, u->now, t_c, u->p_meas);
    g->tm_power_mw = u->p_meas;
    have_rate = thermal_rate(g, u->p_meas, u->range);
    /* The proportional band, or the gain that closes the loop in KP_H_S
     * on a zone of the fitted heat capacity if that is more (a slow,
     * heavy zone: the band alone would creep up to the limit). */
    kp = fmax(u->range / PBAND_C, g->cap_mj_c / KP_H_S);
    /* ... but no more than the gain that would close the headroom within
     * one control period on a zone of that heat capacity: on a zone that
     * settles within a few periods (a bare die, tau 1-2 s), a higher gain
     * overcorrects each period and the loop cycles around the limit. */
    if (g->cap_mj_c > 0 && kp > KP_FAST * g->cap_mj_c * NS_PER_S /
                                (double)g->p.period_ns)
        kp = KP_FAST * g->cap_mj_c * NS_PER_S / (double)g->p.period_ns;
    if (g->have_prev_temp && u->now > g->prev_temp_ns) {
        double rate = (t_c - g->prev_temp_c) * NS_PER_S /
                      (double)(u->now - g->prev_temp_ns);

        g->dtemp_c_s = 0.7 * g->dtemp_c_s + 0.3 * rate;
    }
    g->prev_temp_c = t_c;
    g->prev_temp_ns = u->now;
    g->have_prev_temp = true;
    d->time_to_limit_s = e > 0 && g->dtemp_c_s > 0.005 ?
                         e / g->dtemp_c_s : -1.0;
    u->b_th = thermal_pi(g, u, t_c, e, kp);
    if (have_rate)
        u->b_th = approach_guard(g, e, u->p_meas, u->base, u->range,
                                 u->dt_ns, u->b_th);
    if (near_critical(g))
        u->b_th = u->base + FLOOR_FRAC * u->range;
    thermal_backstop(g, u, t_c, e);
}

/* Part of stage 3: when the temperature binds the budget, and since when
 * within SEL_BAND_C of the limit. Writes thermal_bind_ns, bind_since_ns
 * and sust_learned (S has converged once the limit has held for two
 * dwell times). */
static void
note_binding(ks_governor *g, const upd *u)
{
    if (!u->temp_fresh || !g->sust_init || !u->binding ||
        u->budget != u->b_th) {
        g->bind_since_ns = 0;
        return;
    }
    g->thermal_bind_ns = u->now;
    if (fabs((g->ctrl_mc - g->sense.temp_mc) / 1000.0) >= SEL_BAND_C) {
        g->bind_since_ns = 0;
        return;
    }
    if (!g->bind_since_ns)
        g->bind_since_ns = u->now;
    if (u->now - g->bind_since_ns >= 2 * g->p.dwell_ns)
        g->sust_learned = true;
}

/* Stage 3, the other limits and the total. Reads the power cap, the
 * battery and target_tps; writes u's b_cap, b_bat, min_period, budget,
 * binding and state, and the binding bookkeeping that tells when S has
 * converged (sust_learned). */
static void
total_budget(ks_governor *g, upd *u)
{
    token_cost cost;

    if (g->p.power_limit_mw)
        u->b_cap = g->p.power_limit_mw;
    if (g->have_sense && g->sense.has_battery && g->sense.discharging &&
        g->p.policy != KS_GOV_PERFORMANCE) {
        bool low = g->sense.battery_pct >= 0 &&
                   (uint32_t)g->sense.battery_pct < g->p.battery_low_pct;
        double f = 1.0;

        if (g->p.policy == KS_GOV_BATTERY)
            f = low ? 0.5 : 0.8;
        else if (low)
            f = 0.75;
        if (f < 1.0)
            u->b_bat = u->base + f * u->range;
    }
    if (g->p.target_tps > 0)
        u->min_period = NS_PER_S / g->p.target_tps;
    u->budget = fmin(u->b_th, fmin(u->b_cap, u->b_bat));
    if (u->budget > 1.25 * g->pmax_mw)
        u->budget = 1.25 * g->pmax_mw;
    u->binding = u->budget < u->demand;
    note_binding(g, u);
    /* The state names the limit that holds the device below what it could
     * draw flat out, even when the chosen thread count fits under it. */
    u->state = KS_GOV_STATE_COOL;
    if (u->blind)
        u->state = KS_GOV_STATE_BLIND;
    else if ((u->budget < g->pmax_mw && u->budget == u->b_th) ||
             g->duty_cap < 1.0)
        u->state = near_critical(g) ? KS_GOV_STATE_CRITICAL
                                    : KS_GOV_STATE_THERMAL;
    else if (u->budget < g->pmax_mw && u->budget == u->b_cap)
        u->state = KS_GOV_STATE_POWER;
    else if (u->budget < g->pmax_mw)
        u->state = KS_GOV_STATE_BATTERY;
    else if (u->min_period > 0 && cost_at(g, u->n, &cost) &&
             cost.t_ns < u->min_period)
        u->state = KS_GOV_STATE_TARGET;
}

/* Stage 4, split the budget's power above idle. Reads u->budget and the
 * averaging sensor's measure of the period; writes the tracking integral
 * corr_mw (so that the power drawn follows the budget whatever the
 * model's error) and u->dyn, the power above idle the actors share. */
static void
track_power(ks_governor *g, upd *u)
{
    if (u->power_fresh && g->power_avg && u->binding && g->period_ns > 0 &&
        g->acc_tokens * NS_PER_S / u->dt_ns >= PACED_MIN * NS_PER_S /
                                               g->period_ns) {
        /* Only periods that ran at the pace asked for: one that ran
         * unpaced, or slower (compute-bound on a busy machine, a stall),
         * says nothing of the model's error and would wind it up. */
        g->corr_mw += (u->budget - u->p_meas) * (u->dt_ns / NS_PER_S) /
                      TAU_CORR_S;
        if (g->corr_mw > CORR_MAX * u->budget)
            g->corr_mw = CORR_MAX * u->budget;
        if (g->corr_mw < -CORR_MAX * u->budget)
            g->corr_mw = -CORR_MAX * u->budget;
    } else if (!u->power_fresh || !g->power_avg) {
        g->corr_mw = 0;
    }
    u->dyn = u->budget + g->corr_mw - u->base;
    if (u->dyn < FLOOR_FRAC * u->range)
        u->dyn = FLOOR_FRAC * u->range;
}

/* Part of stage 5: the count with the most tokens/s under the budget,
 * with hysteresis. Under the temperature limit the choice follows the
 * sustainable power, not the proportional term's swings (a budget
 * between two counts' draws, or the headroom of a count that runs cool,
 * would make the loop dither): S while the temperature binds, else at
 * least what runs now. S learned while binding counts for a while after;
 * then the budget decides again, so a cooler room is noticed. */
static int32_t
best_threads(const ks_governor *g, const upd *u)
{
    double sel = u->budget, dsel, cur, best = 0;
    int32_t pick = u->n;

    if (u->temp_fresh && g->sust_learned && u->budget == u->b_th &&
        (u->binding ||
         u->now - g->thermal_bind_ns <= SUST_KEEP * g->p.dwell_ns))
        sel = u->binding ? g->sust_mw
                         : fmin(u->budget, fmax(g->sust_mw, u->p_meas));
    dsel = sel + g->corr_mw - u->base;
    if (dsel < FLOOR_FRAC * u->range)
        dsel = FLOOR_FRAC * u->range;
    cur = rate_at(g, u->n, dsel, u->min_period);
    for (int32_t m = g->p.min_threads; m <= g->p.max_threads; m++) {
        double r = rate_at(g, m, dsel, u->min_period);
        /* Going back to the count just left needs a clearer gain. */
        double hyst = m == g->prev_threads ? 2 * THREAD_HYST : THREAD_HYST;

        if (m != u->n && r > cur * (1.0 + hyst) && r > best) {
            best = r;
            pick = m;
        }
    }
    return pick;
}

/* Stage 5a, choose threads. Reads u's budget figures, the dwell and the
 * per-count token times; writes u->n and, on a change, n_threads,
 * prev_threads, the reversal count and last_thread_change_ns. Blind with
 * no power reading either: half the threads (at half duty, stage 5b). */
static void
choose_threads(ks_governor *g, upd *u)
{
    int32_t n = u->n;

    if (u->blind && !u->power_fresh) {
        n = (g->p.max_threads + 1) / 2;
        if (n < g->p.min_threads)
            n = g->p.min_threads;
    } else if (u->now - g->last_thread_change_ns >=
               g->p.dwell_ns << g->n_reversals &&
               g->t_cpu_seen[g->n_threads]) {
        n = best_threads(g, u);
    }
    if (g->duty_cap < 1.0 && !u->blind) {
        /* Over the limit no thread is added, and a deep cut takes one
         * away each period. */
        if (n > g->n_threads)
            n = g->n_threads;
        if (u->cut && g->duty_cap <= 0.5 && n > g->p.min_threads)
            n = g->n_threads - 1 < n ? g->n_threads - 1 : n;
    }
    if (n != g->n_threads) {
        /* Each change against the direction of the previous one doubles
         * the dwell (up to 16x); two in the same direction reset it. */
        int dir = n > g->n_threads ? 1 : -1;

        if (dir == -g->last_dir) {
            if (g->n_reversals < 4)
                g->n_reversals++;
        } else {
            g->n_reversals = 0;
        }
        g->last_dir = dir;
        g->prev_threads = g->n_threads;
        g->n_threads = n;
        g->last_thread_change_ns = u->now;
    }
    u->n = n;
}

/* Stage 5b, pacing and the split between actors. Reads u->dyn, u->n and
 * the model's cost of a token; writes period_ns (0: unpaced) and
 * d->actor_budget_mw, each actor's share of dyn in proportion to the
 * power it requests, at most that power. */
static void
choose_pacing(ks_governor *g, const upd *u)
{
    ks_gov_decision *d = &g->dec;
    token_cost cost;
    double req, period;

    g->period_ns = 0;
    memset(d->actor_budget_mw, 0, sizeof d->actor_budget_mw);
    if (!cost_at(g, u->n, &cost))
        return;
    req = cost.req_mw[KS_GOV_CPU] + cost.req_mw[KS_GOV_GPU];
    period = u->dyn > 0 ? cost.e_dyn / u->dyn : cost.t_ns;
    if (u->blind && !u->power_fresh)
        period = 2.0 * cost.t_ns;
    if (period < u->min_period)
        period = u->min_period;
    if (g->duty_cap < 1.0 && period < cost.t_ns / g->duty_cap)
        period = cost.t_ns / g->duty_cap;
    if (period > cost.t_ns)
        g->period_ns = period;
    for (int a = 0; a < KS_GOV_N_ACTORS && req > 0; a++) {
        double share = u->dyn * cost.req_mw[a] / req;

        if (share > cost.req_mw[a])
            share = cost.req_mw[a];
        d->actor_budget_mw[a] = (uint32_t)(share + 0.5);
    }
}

/* Stage 6, placement hints. Reads the state and the CPU and GPU zones'
 * temperatures; writes d->place (away from the hotter zone while the
 * temperature binds, PLACE_HYST_C apart, 3 dwell times between) and
 * last_place_ns. */
static void
hint_placement(ks_governor *g, const upd *u)
{
    ks_gov_decision *d = &g->dec;
    double diff;

    d->place = KS_GOV_PLACE_STAY;
    if (!u->temp_fresh || u->state != KS_GOV_STATE_THERMAL ||
        !g->sense.has_actor_temp[KS_GOV_CPU] ||
        !g->sense.has_actor_temp[KS_GOV_GPU] ||
        (g->placed_once && u->now - g->last_place_ns < 3 * g->p.dwell_ns) ||
        u->now - g->t0_ns < 3 * g->p.dwell_ns)
        return;
    diff = (g->sense.actor_temp_mc[KS_GOV_CPU] -
            g->sense.actor_temp_mc[KS_GOV_GPU]) / 1000.0;
    if (diff > PLACE_HYST_C && g->can_move_to_gpu)
        d->place = KS_GOV_PLACE_TO_GPU;
    else if (diff < -PLACE_HYST_C && g->can_move_to_cpu)
        d->place = KS_GOV_PLACE_TO_CPU;
    if (d->place != KS_GOV_PLACE_STAY) {
        g->last_place_ns = u->now;
        g->placed_once = true;
    }
}

/* Stage 7, publish. Reads u; writes the decision, logs it (one debug
 * line with every term) and starts a new control period. */
static void
publish(ks_governor *g, const upd *u)
{
    ks_gov_decision *d = &g->dec;

    d->n_threads = u->n;
    d->budget_mw = u->budget >= 4e9 ? 4000000000u
                                    : (uint32_t)(u->budget + 0.5);
    d->control_temp_mc = g->ctrl_mc;
    d->temp_mc = g->have_sense && g->sense.has_temp ? g->sense.temp_mc : 0;
    d->power_mw = (uint32_t)(u->p_meas + 0.5);
    d->tokens_per_s = g->acc_tokens * NS_PER_S / u->dt_ns;
    d->tokens_per_j = g->total_energy_mj > 0 ?
                      g->total_tokens * 1000.0 / g->total_energy_mj : 0.0;
    d->state_id = u->state;
    d->state = ks_gov_state_str(u->state);
    d->target = g->acc_busy_ns[KS_GOV_CPU] && g->acc_busy_ns[KS_GOV_GPU] ?
                "cpu+gpu" : g->acc_busy_ns[KS_GOV_GPU] ? "gpu" :
                g->acc_busy_ns[KS_GOV_CPU] ? "cpu" : d->target;
    d->flags = (u->temp_fresh ? 0 : KS_GOV_F_NO_TEMP) |
               (u->power_fresh ? 0 : KS_GOV_F_NO_POWER) |
               (g->p.temp_limit_mc == 0 && u->temp_fresh &&
                g->sense.passive_trip_mc <= 0 ? KS_GOV_F_NO_TRIP : 0) |
               (g->power_stuck ? KS_GOV_F_POWER_STUCK : 0) | g->faults;
    d->updated = true;
    ks_log(KS_LOG_DEBUG, TAG, "t=%.2fs T=%.1fC ctrl=%.1fC P=%umW budget=%umW "
           "(cpu %u gpu %u) demand=%.0fmW tps=%.2f threads=%d period=%.1fms "
           "place=%s state=%s model=%.0f+%.0f*u_cpu+%.0f*u_gpu S=%.0f "
           "corr=%.0f rate=%.2fC/s C=%.0fmJ/C duty<=%.2f%s",
           (u->now - g->t0_ns) / NS_PER_S, d->temp_mc / 1000.0,
           g->ctrl_mc / 1000.0, d->power_mw, d->budget_mw,
           d->actor_budget_mw[KS_GOV_CPU], d->actor_budget_mw[KS_GOV_GPU],
           u->demand, d->tokens_per_s, u->n, g->period_ns / 1e6,
           ks_gov_place_str(d->place), d->state, u->base, g->theta[X_CPU],
           g->theta[X_GPU], g->sust_init ? g->sust_mw : 0.0, g->corr_mw,
           g->rate_c_s, g->cap_mj_c, g->duty_cap, g->guard ? " guard" : "");

    g->period_start_ns = u->now;
    g->acc_tokens = 0;
    memset(g->acc_busy_ns, 0, sizeof g->acc_busy_ns);
    memset(g->acc_energy_uj, 0, sizeof g->acc_energy_uj);
    g->acc_energy_known = true;
    g->acc_thread_busy_ns = 0;
    g->acc_threads = 0;
    g->acc_power_mw_ns = 0;
    g->acc_power_ns = 0;
}

/* One control update, at the end of a period: the stages in order, as
 * the kernel's power allocator runs them (estimate power, PI on the
 * headroom, divide the budget, set the actuators). */
static void
update(ks_governor *g, uint64_t now)
{
    upd u = {
        .now = now,
        .dt_ns = (double)(now - g->period_start_ns),
        .temp_fresh = g->have_sense && g->sense.has_temp &&
                      now - g->temp_ns <= STALE_NS,
        .power_fresh = g->power_seen && now - g->power_ns <= STALE_NS,
        .b_th = INFINITY, .b_cap = INFINITY, .b_bat = INFINITY,
        .n = g->n_threads,
    };

    estimate_power(g, &u);
    g->total_tokens += g->acc_tokens;
    g->total_energy_mj += u.p_meas * u.dt_ns / NS_PER_S;
    thermal_budget(g, &u);
    total_budget(g, &u);
    track_power(g, &u);
    choose_threads(g, &u);
    choose_pacing(g, &u);
    hint_placement(g, &u);
    publish(g, &u);
}

/* ---- steps ------------------------------------------------------------- */

/* A fast plant (a bare die heats by tens of degrees a second) can pass
 * the limit within one control period. So each temperature reading
 * updates a heating rate, and when that rate would carry the zone past
 * the limit before the period ends (and it is fast enough to matter:
 * more than the guard's tolerance per period), the period ends now, at
 * least two readings after it began. */
static bool
early_update(ks_governor *g, uint64_t now)
{
    double t_c, rate, left_s;

    if (!g->have_sense || !g->sense.has_temp || g->temp_ns != now)
        return false;
    t_c = g->sense.temp_mc / 1000.0;
    if (g->fast_have && now - g->fast_ns >= g->p.sample_ns / 2) {
        rate = (t_c - g->fast_c) * NS_PER_S / (double)(now - g->fast_ns);
        g->fast_rate_c_s = 0.5 * g->fast_rate_c_s + 0.5 * rate;
    } else if (g->fast_have) {
        return false;
    }
    g->fast_have = true;
    g->fast_c = t_c;
    g->fast_ns = now;
    if (now - g->period_start_ns < 2 * g->p.sample_ns)
        return false;
    left_s = (double)(g->period_start_ns + g->p.period_ns - now) / NS_PER_S;
    return g->fast_rate_c_s * g->p.period_ns / NS_PER_S > GUARD_TOL_C &&
           t_c + g->fast_rate_c_s * (left_s + 2 * g->p.sample_ns / NS_PER_S) >=
           g->ctrl_mc / 1000.0;
}

/* Logs a fault once per kind (KS_GOV_F_* bit |flag|). */
static void
report_fault(ks_governor *g, uint32_t flag, const char *what, double value,
             const char *unit, double lo, double hi)
{
    if (g->reported & flag)
        return;
    g->reported |= flag;
    ks_log(KS_LOG_WARN, TAG, "%s reading %.1f %s is outside %.0f..%.0f %s: "
           "a sensor fault, ignored", what, value, unit, lo, hi, unit);
}

/* Called after power_reading(): a power reading that stays exactly the
 * same for STUCK_NS and STUCK_N readings while the activity changed by
 * STUCK_DX is a stuck sensor. It counts as none until it moves, and the
 * model fitted from it goes back to the priors. Writes the stuck_* state
 * and clears s->has_power when it declares the sensor stuck. */
static void
check_stuck(ks_governor *g, ks_gov_sense *s, uint64_t now)
{
    bool moved;

    if (!g->stuck_have || s->power_mw != g->stuck_mw) {
        if (g->power_stuck)
            ks_log(KS_LOG_DEBUG, TAG, "power reading moved (%u -> %u mW): "
                   "used again", g->stuck_mw, s->power_mw);
        g->stuck_have = true;
        g->stuck_mw = s->power_mw;
        g->stuck_since_ns = now;
        g->stuck_n = 0;
        g->power_stuck = false;
        g->stuck_x_min = INFINITY;
        g->stuck_x_max = 0;
    }
    if (g->read_use) {
        double x = g->read_x[0] + g->read_x[1];

        g->stuck_x_min = fmin(g->stuck_x_min, x);
        g->stuck_x_max = fmax(g->stuck_x_max, x);
    }
    moved = g->stuck_x_max >= STUCK_DX &&
            g->stuck_x_min <= STUCK_LOW * g->stuck_x_max;
    if (g->stuck_n++ == 0)
        return;
    if (!g->power_stuck && moved && g->stuck_n >= STUCK_N &&
        now - g->stuck_since_ns >= STUCK_NS) {
        g->power_stuck = true;
        if (!(g->reported & KS_GOV_F_POWER_STUCK)) {
            g->reported |= KS_GOV_F_POWER_STUCK;
            ks_log(KS_LOG_WARN, TAG, "power reading stuck at %u mW for "
                   "%.0f s (%u readings): a stuck sensor, ignored; power is "
                   "modelled from busy time", s->power_mw,
                   (now - g->stuck_since_ns) / NS_PER_S, g->stuck_n);
        }
        model_reset(g);
        g->power_seen = false;
        g->acc_power_mw_ns = 0;
        g->acc_power_ns = 0;
    }
    if (g->power_stuck)
        s->has_power = false;
}

/* Leaves out what a sensor cannot have measured (see governor.h) and
 * logs each kind of fault once. Writes g->faults. */
static void
screen_sense(ks_governor *g, ks_gov_sense *s)
{
    if (s->has_temp && !temp_plausible(s->temp_mc)) {
        temp_fault(s, s->temp_mc);
        s->has_temp = false;
    }
    for (int a = 0; a < KS_GOV_N_ACTORS; a++)
        if (s->has_actor_temp[a] && !temp_plausible(s->actor_temp_mc[a])) {
            temp_fault(s, s->actor_temp_mc[a]);
            s->has_actor_temp[a] = false;
        }
    if (s->has_power && s->power_mw > g->p.max_power_mw) {
        s->faults |= KS_GOV_F_POWER_FAULT;
        s->bad_power_mw = s->power_mw;
        s->has_power = false;
    }
    if (s->faults & KS_GOV_F_TEMP_FAULT)
        report_fault(g, KS_GOV_F_TEMP_FAULT, "temperature",
                     s->bad_temp_mc / 1000.0, "C", KS_GOV_TEMP_MIN_MC / 1000.0,
                     KS_GOV_TEMP_MAX_MC / 1000.0);
    if (s->faults & KS_GOV_F_POWER_FAULT)
        report_fault(g, KS_GOV_F_POWER_FAULT, "power",
                     (double)s->bad_power_mw, "mW", 0, g->p.max_power_mw);
    g->faults = s->faults & (KS_GOV_F_TEMP_FAULT | KS_GOV_F_POWER_FAULT);
}

ks_status
ks_governor_step(ks_governor *g, const ks_gov_sense *sense, uint64_t now,
                 const ks_gov_work *work, ks_gov_decision *out)
{
    ks_gov_decision *d;
    uint64_t busy_tok = 0;

    if (!g || !out)
        return ks_error(KS_ERR_INVALID_ARG, "governor: step needs a governor "
                        "and a decision to fill");
    d = &g->dec;
    if (!g->started) {
        g->started = true;
        g->t0_ns = g->last_ns = g->period_start_ns = now;
        g->last_thread_change_ns = now;
        g->last_sample_ns = now;
    }
    if (now < g->last_ns)
        now = g->last_ns;
    g->last_ns = now;
    d->updated = false;
    d->place = KS_GOV_PLACE_STAY;

    if (work) {
        int32_t thr = work->n_threads > 0 ? work->n_threads : g->n_threads;

        if (thr > g->p.max_threads)
            thr = g->p.max_threads;
        if (!g->have_gen || work->placement_gen != g->placement_gen) {
            if (g->have_gen) {
                /* Layers moved: the per-token times are another
                 * workload's. */
                memset(g->t_cpu_seen, 0, sizeof g->t_cpu_seen);
                g->t_gpu_seen = false;
                g->acc_threads = -1;
                g->last_thread_change_ns = now;
                ks_log(KS_LOG_DEBUG, TAG, "placement changed (gen %u)",
                       work->placement_gen);
            }
            g->placement_gen = work->placement_gen;
            g->have_gen = true;
        }
        g->acc_tokens += work->n_tokens;
        for (int a = 0; a < KS_GOV_N_ACTORS; a++) {
            g->acc_busy_ns[a] += work->busy_ns[a];
            g->acc_energy_uj[a] += work->energy_uj[a];
            if (work->busy_ns[a] && !work->energy_uj[a])
                g->acc_energy_known = false;
            busy_tok += work->busy_ns[a];
        }
        g->acc_thread_busy_ns += (double)thr * work->busy_ns[KS_GOV_CPU];
        g->act_thread_busy_ns += (double)thr * work->busy_ns[KS_GOV_CPU];
        if (work->n_tokens && work->busy_ns[KS_GOV_CPU] && g->t_cpu_seen[thr]) {
            double usual = (double)work->n_tokens * g->t_cpu_ns[thr];

            g->act_nom_thread_ns += (double)thr * work->n_tokens *
                                    g->t_e_ns[thr];
            if (work->busy_ns[KS_GOV_CPU] > STALL_RATIO * usual &&
                work->busy_ns[KS_GOV_CPU] - usual > STALL_MIN_NS) {
                g->act_stall = true;
                g->per_suspect = 2;
            }
        } else
            g->act_nom_thread_ns += (double)thr * work->busy_ns[KS_GOV_CPU];
        g->act_gpu_ns += (double)work->busy_ns[KS_GOV_GPU];
        if (busy_tok)
            g->last_busy_end_ns = now;
        if (work->busy_ns[KS_GOV_CPU] || work->n_tokens) {
            if (g->acc_threads == 0)
                g->acc_threads = thr;
            else if (g->acc_threads != thr)
                g->acc_threads = -1;
        }
        g->can_move_to_gpu = work->can_move_to_gpu;
        g->can_move_to_cpu = work->can_move_to_cpu;
    }

    if (sense) {
        ks_gov_sense s = *sense;

        screen_sense(g, &s);
        if (s.has_power && g->power_stuck && s.power_mw == g->stuck_mw)
            s.has_power = false;    /* still stuck */
        if (s.has_power) {
            power_reading(g, &s, now, work);
            check_stuck(g, &s, now);
        }
        if (s.has_temp) {
            g->temp_ns = now;
            d->temp_mc = s.temp_mc;
        } else if (g->have_sense && g->sense.has_temp &&
                   now - g->temp_ns <= STALE_NS) {
            /* A read that failed (a stale sample) is no reading, not a
             * lost sensor: the previous temperature stands, as old as it
             * is (temp_ns), until STALE_NS makes it blind. */
            s.has_temp = true;
            s.temp_mc = g->sense.temp_mc;
        }
        g->sense = s;
        g->have_sense = true;
        g->last_sample_ns = now;
        resolve_limit(g);
        d->control_temp_mc = g->ctrl_mc;
    }

    if (now - g->period_start_ns >= g->p.period_ns || early_update(g, now))
        update(g, now);

    /* Pace: what is left of the token period after this token's work. */
    d->pace_ns = 0;
    if (g->period_ns > 0 && work && work->n_tokens > 0) {
        double left = g->period_ns - (double)busy_tok / work->n_tokens;

        if (left > 0)
            d->pace_ns = left > (double)MAX_PACE_NS ? MAX_PACE_NS :
                         (uint64_t)left;
    }
    d->next_sample_ns = g->last_sample_ns + g->p.sample_ns;
    *out = *d;
    return KS_OK;
}

ks_status
ks_governor_step_telemetry(ks_governor *g, ks_telemetry *tel, uint64_t now,
                           const ks_gov_work *work, ks_gov_decision *out)
{
    ks_gov_sense sense;
    ks_status st;

    if (!g)
        return ks_error(KS_ERR_INVALID_ARG, "governor: step of NULL");
    if (!tel || (g->started && now < g->last_sample_ns + g->p.sample_ns))
        return ks_governor_step(g, NULL, now, work, out);
    if ((st = ks_telemetry_sample(tel, &g->tsample)) != KS_OK)
        return st;
    ks_gov_sense_from_telemetry(ks_telemetry_get_info(tel), &g->tsample,
                                &sense);
    return ks_governor_step(g, &sense, now, work, out);
}
