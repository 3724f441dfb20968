/* The governor in closed loop against the simulated thermal plant.
 *
 * A workload model stands in for generation: at n CPU threads a token
 * takes 1/(r1 n^alpha) s of CPU time (decode is memory bound, so threads
 * help less than linearly) while each busy thread draws k W on top of the
 * idle power; layers moved to the GPU run at the GPU's own rate and
 * power. Each token the loop runs the plant for the token's busy time,
 * reports the work, lets the governor sample the plant's sysfs tree
 * through the real telemetry code, then applies the decision: threads,
 * placement, and the pause (run as idle power). Everything runs on
 * simulated time, so ten minutes of heating take a fraction of a second.
 *
 * The figures each scenario prints are the ones to quote: peak
 * temperature against the limit, tokens/s against the best sustainable
 * rate worked out from the plant's parameters, decision changes, average
 * power against the cap. */
#include <check.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/base.h"
#include "driver/telemetry.h"
#include "plant.h"
#include "scheduler/governor.h"
#include "scheduler/trace.h"

#ifndef KS_TRACE_DIR
#error "KS_TRACE_DIR must name the build directory for traces"
#endif
#ifndef KS_PLOT_SCRIPT
#error "KS_PLOT_SCRIPT must name ci/plot-trace.sh"
#endif

#define MAX_PHASES 4

/* ---- the workload model ------------------------------------------------ */

typedef struct workload {
    int    max_threads;
    double r1_tps;        /* tokens/s of the CPU part at one thread */
    double alpha;         /* CPU rate = r1 * n^alpha */
    double base_w;        /* idle power of the whole device */
    double k_thread_w;    /* each busy CPU thread */
    double gpu_tps;       /* tokens/s with every layer on the GPU */
    double k_gpu_w;       /* the GPU while busy */
    double gpu_frac;      /* share of the layers on the GPU at start */
    bool   report_energy; /* pass the true energy as the caller's estimate */
    double energy_scale;  /* ... times this; 0: 1 (a wrong estimate) */
} workload;

static double
cpu_rate(const workload *w, int n)
{
    return n <= 0 ? 0.0 : w->r1_tps * pow(n, w->alpha);
}

/* Busy seconds per token on each actor. */
static void
token_times(const workload *w, int n, double frac, double *tc, double *tg)
{
    *tc = (1.0 - frac) / cpu_rate(w, n);
    *tg = frac > 0 ? frac / w->gpu_tps : 0.0;
}

/* The best rate one fixed thread count sustains when the whole device may
 * draw |p_w| watts (CPU-only workload): n threads at duty min(1, x/n),
 * x being the busy threads the budget pays for. */
static double
best_fixed_rate(const workload *w, double p_w, int *best_n)
{
    double x = (p_w - w->base_w) / w->k_thread_w, best = 0;

    for (int n = 1; n <= w->max_threads; n++) {
        double r = cpu_rate(w, n) * (x >= n ? 1.0 : x / n);

        if (r > best) {
            best = r;
            *best_n = n;
        }
    }
    return best;
}

/* The same with time-sharing between thread counts allowed: the concave
 * hull of (n, rate(n)), an upper bound for any controller. */
static double
hull_rate(const workload *w, double p_w)
{
    double x = (p_w - w->base_w) / w->k_thread_w;
    int n;

    if (x <= 0)
        return 0;
    if (x >= w->max_threads)
        return cpu_rate(w, w->max_threads);
    n = (int)floor(x);
    return cpu_rate(w, n) + (x - n) * (cpu_rate(w, n + 1) - cpu_rate(w, n));
}

/* ---- the closed loop --------------------------------------------------- */

typedef struct run_cfg {
    const char *name;
    plant_params plant;
    workload w;
    ks_governor_params gov;
    double duration_s;
    const char *trace;         /* file name in KS_TRACE_DIR; NULL: none */
    double mains_on_at_s;      /* > 0: plug the adapter in then */
    double battery_low_pct;    /* phases: 0 above, 1 below, 2 on mains */
    double settle_s;           /* phase statistics skip this after a change */
    bool   no_idle_step;       /* skip the step after each pause */
    bool   freeze_power;       /* the power sensor sticks ... */
    double freeze_power_at_s;  /* ... from then on */
    bool   force_temp;         /* zone 0's sensor reads forced_c */
    double forced_c;
} run_cfg;

typedef struct phase_stats {
    double t_s, tokens, energy_j, budget_ws;
    double start_s;
} phase_stats;

typedef struct run_result {
    double limit_c;            /* the governor's control temperature */
    double peak_c;             /* hottest zone, whole run */
    double first_s;            /* first time within 2 C of the limit: the
                                * end of the first approach */
    double tokens_after, time_after_s;
    double tokens, energy_j, time_s;
    double energy_after_j;
    int    thread_changes;
    int    hints_to_gpu, hints_to_cpu;
    int    final_threads;
    double final_gpu_frac;
    uint32_t flags_seen;
    const char *last_state;
    ks_gov_decision last;
    phase_stats ph[MAX_PHASES];
    uint64_t checksum;         /* of every decision, for determinism */
    double final_c;            /* hottest zone at the end */
    int    min_threads;        /* fewest threads decided */
    double paced_s;            /* time spent in pauses */
} run_result;

static double
hottest(const plant *pl, uint32_t n_zones)
{
    double t = -1e9;

    for (uint32_t z = 0; z < n_zones; z++)
        if (plant_temp_c(pl, z) > t)
            t = plant_temp_c(pl, z);
    return t;
}

static int
phase_of(const run_cfg *c, const plant *pl, double t_s)
{
    if (c->mains_on_at_s > 0 && t_s >= c->mains_on_at_s)
        return 2;
    if (c->battery_low_pct > 0 && plant_battery_pct(pl) < c->battery_low_pct)
        return 1;
    return 0;
}

/* Applies a decision's threads and placement hint to the workload. */
static void
apply(const ks_gov_decision *dec, const workload *w, int *threads,
      double *frac, uint32_t *gen, run_result *r)
{
    ck_assert_int_ge(dec->n_threads, 1);
    ck_assert_int_le(dec->n_threads, w->max_threads);
    if (dec->n_threads != *threads) {
        r->thread_changes++;
        *threads = dec->n_threads;
    }
    if (dec->place == KS_GOV_PLACE_TO_GPU && *frac < 0.999) {
        r->hints_to_gpu++;
        *frac = fmin(1.0, *frac + 0.25);
        (*gen)++;
    } else if (dec->place == KS_GOV_PLACE_TO_CPU && *frac > 0.001) {
        r->hints_to_cpu++;
        *frac = fmax(0.0, *frac - 0.25);
        (*gen)++;
    }
    r->checksum = r->checksum * 1000003u + dec->pace_ns +
                  (uint64_t)dec->n_threads * 7919u + dec->budget_mw;
    r->flags_seen |= dec->flags;
}

static void
run_loop(const run_cfg *c, run_result *r)
{
    ks_telem_params tp = { 0 };
    ks_governor_params gp = c->gov;
    ks_gov_decision dec;
    ks_telemetry *tel = NULL;
    ks_governor *gov = NULL;
    ks_trace *tr = NULL;
    plant *pl = NULL;
    workload w = c->w;
    double frac = w.gpu_frac, limit_c;
    int threads = w.max_threads, phase = 0;
    uint32_t gen = 0;
    char path[1024];

    memset(r, 0, sizeof *r);
    r->first_s = -1;
    r->min_threads = w.max_threads;
    r->peak_c = -1e9;
    ck_assert_int_eq(plant_create(&c->plant, &pl), 0);
    if (c->force_temp) {
        plant_force_temp(pl, 0, c->forced_c);
        ck_assert_int_eq(plant_sync(pl), 0);
    }
    tp.root = plant_root(pl);
    tp.now_ns = plant_clock;
    tp.clock_ctx = pl;
    ck_assert_int_eq(ks_telemetry_open_ex(&tp, &tel), KS_OK);
    gp.max_threads = w.max_threads;
    ck_assert_int_eq(ks_governor_create(&gp, &gov), KS_OK);
    if (c->trace) {
        snprintf(path, sizeof path, "%s/%s", KS_TRACE_DIR, c->trace);
        ck_assert_int_eq(ks_trace_open(path, &tr), KS_OK);
    }
    memset(&dec, 0, sizeof dec);
    limit_c = ks_governor_last(gov)->control_temp_mc / 1000.0;

    while (plant_now_ns(pl) < (uint64_t)(c->duration_s * 1e9)) {
        ks_gov_work work = { 0 };
        double tc, tg, pw[PLANT_N_SOURCES], t_s, before_s, e0, temp;
        uint64_t now;

        before_s = plant_now_ns(pl) / 1e9;
        e0 = plant_energy_j(pl);
        token_times(&w, threads, frac, &tc, &tg);
        pw[PLANT_BASE] = w.base_w;
        pw[PLANT_CPU] = w.k_thread_w * threads;
        pw[PLANT_GPU] = 0;
        plant_run(pl, tc, pw);
        temp = hottest(pl, c->plant.n_zones);
        pw[PLANT_CPU] = 0;
        pw[PLANT_GPU] = w.k_gpu_w;
        plant_run(pl, tg, pw);
        if (hottest(pl, c->plant.n_zones) > temp)
            temp = hottest(pl, c->plant.n_zones);

        work.n_tokens = 1;
        work.busy_ns[KS_GOV_CPU] = (uint64_t)llround(tc * 1e9);
        work.busy_ns[KS_GOV_GPU] = (uint64_t)llround(tg * 1e9);
        if (w.report_energy) {
            double k = w.energy_scale > 0 ? w.energy_scale : 1.0;

            work.energy_uj[KS_GOV_CPU] =
                (uint64_t)llround(k * w.k_thread_w * threads * tc * 1e6);
            work.energy_uj[KS_GOV_GPU] =
                (uint64_t)llround(k * w.k_gpu_w * tg * 1e6);
        }
        work.n_threads = threads;
        work.placement_gen = gen;
        work.can_move_to_gpu = w.gpu_tps > 0 && frac < 0.999;
        work.can_move_to_cpu = w.gpu_tps > 0 && frac > 0.001;
        now = plant_now_ns(pl);
        if (c->freeze_power && now >= c->freeze_power_at_s * 1e9)
            plant_freeze_power(pl, true);
        if (now >= dec.next_sample_ns)
            ck_assert_int_eq(plant_sync(pl), 0);
        ck_assert_int_eq(ks_governor_step_telemetry(gov, tel, now, &work,
                                                    &dec), KS_OK);
        if (dec.updated)
            limit_c = dec.control_temp_mc / 1000.0;
        ks_trace_token(tr, now, &dec);
        apply(&dec, &w, &threads, &frac, &gen, r);
        pw[PLANT_BASE] = w.base_w;
        pw[PLANT_CPU] = pw[PLANT_GPU] = 0;
        plant_run(pl, dec.pace_ns / 1e9, pw);
        r->paced_s += dec.pace_ns / 1e9;
        if (threads < r->min_threads)
            r->min_threads = threads;
        if (!c->no_idle_step) {
            /* After the pause, before the next token: lets the governor
             * read the idle power. */
            ks_gov_decision idle;

            now = plant_now_ns(pl);
            if (now >= dec.next_sample_ns)
                ck_assert_int_eq(plant_sync(pl), 0);
            ck_assert_int_eq(ks_governor_step_telemetry(gov, tel, now, NULL,
                                                        &idle), KS_OK);
            ck_assert_uint_eq(idle.pace_ns, 0);
            apply(&idle, &w, &threads, &frac, &gen, r);
            dec.next_sample_ns = idle.next_sample_ns;
            if (idle.updated)
                limit_c = idle.control_temp_mc / 1000.0;
        }

        /* Statistics. */
        t_s = plant_now_ns(pl) / 1e9;
        if (temp > r->peak_c)
            r->peak_c = temp;
        if (r->first_s < 0 && temp >= limit_c - 2.0)
            r->first_s = t_s;
        r->tokens += 1;
        r->energy_j += plant_energy_j(pl) - e0;
        if (r->first_s >= 0 && before_s >= r->first_s) {
            r->tokens_after += 1;
            r->time_after_s += t_s - before_s;
            r->energy_after_j += plant_energy_j(pl) - e0;
        }
        if (c->mains_on_at_s > 0 && t_s >= c->mains_on_at_s)
            plant_set_mains(pl, true);
        {
            int ph = phase_of(c, pl, t_s);

            if (ph != phase) {
                phase = ph;
                r->ph[ph].start_s = t_s;
            }
            if (t_s - r->ph[ph].start_s >= c->settle_s) {
                phase_stats *s = &r->ph[ph];

                s->t_s += t_s - before_s;
                s->tokens += 1;
                s->energy_j += plant_energy_j(pl) - e0;
                s->budget_ws += dec.budget_mw / 1000.0 * (t_s - before_s);
            }
        }
    }
    r->time_s = plant_now_ns(pl) / 1e9;
    r->final_c = hottest(pl, c->plant.n_zones);
    r->limit_c = limit_c;
    r->final_threads = threads;
    r->final_gpu_frac = frac;
    r->last = dec;
    r->last_state = dec.state;
    if (tr)
        ck_assert_int_eq(ks_trace_close(tr), KS_OK);
    ks_governor_destroy(gov);
    ks_telemetry_destroy(tel);
    plant_destroy(pl);
}

/* ---- plants ------------------------------------------------------------ */

static plant_zone_params
zone(const char *type, double r, double cap, double amb, double passive)
{
    plant_zone_params z = { 0 };

    z.type = type;
    z.r_c_per_w = r;
    z.c_j_per_c = cap;
    z.amb_c = amb;
    z.passive_c = passive;
    z.critical_c = passive + 25.0;
    for (int s = 0; s < PLANT_N_SOURCES; s++)
        z.share[s] = 1.0;
    return z;
}

/* A small passively cooled board: 4 threads, 7.6 W flat out, which would
 * settle at 93 C; the passive trip at 80 C gives a 75 C limit. */
static run_cfg
board_a(void)
{
    run_cfg c = { 0 };

    c.name = "A: 4-thread board, tau 54 s";
    c.plant.n_zones = 1;
    c.plant.zones[0] = zone("cpu-thermal", 9.0, 6.0, 25.0, 80.0);
    c.plant.power_sensor = true;
    c.w.max_threads = 4;
    c.w.r1_tps = 6.0;
    c.w.alpha = 0.7;
    c.w.base_w = 1.2;
    c.w.k_thread_w = 1.6;
    c.duration_s = 600;
    return c;
}

/* A bigger, slower one in a hot box: 8 threads, tau 180 s, 35 C ambient. */
static run_cfg
board_b(void)
{
    run_cfg c = { 0 };

    c.name = "B: 8-thread board, tau 180 s, 35 C ambient, energy counter";
    c.plant.n_zones = 1;
    c.plant.zones[0] = zone("soc-thermal", 6.0, 30.0, 35.0, 90.0);
    c.plant.power_sensor = true;
    c.plant.energy_counter = true;
    c.no_idle_step = true;
    c.w.max_threads = 8;
    c.w.r1_tps = 3.5;
    c.w.alpha = 0.65;
    c.w.base_w = 2.5;
    c.w.k_thread_w = 1.1;
    c.duration_s = 900;
    return c;
}

/* ---- (a) thermal ------------------------------------------------------- */

static void
check_thermal(run_cfg c, double min_ratio, double peak_margin_c)
{
    const plant_zone_params *z = &c.plant.zones[0];
    run_result r;
    double p_star, best, hull, tps;
    int best_n = 0;

    run_loop(&c, &r);
    p_star = (r.limit_c - z->amb_c) / z->r_c_per_w;
    best = best_fixed_rate(&c.w, p_star, &best_n);
    hull = hull_rate(&c.w, p_star);
    tps = r.tokens_after / r.time_after_s;
    printf("[%s%s]\n"
           "  limit %.1f C (passive trip %.0f - 5), unthrottled steady state "
           "%.1f C\n"
           "  within 2 C of the limit after %.1f s; peak %.2f C (limit %+.2f)\n"
           "  after that: %.2f tokens/s = %.1f %% of the best fixed setting "
           "(%.2f at %d threads, %.2f W),\n"
           "              %.1f %% of the time-shared bound %.2f; whole run "
           "%.2f tokens/s\n"
           "  average power after the approach %.2f W (sustainable %.2f W)\n"
           "  decisions: %d thread changes (final %d), %d placement hints in "
           "%.0f s\n",
           c.name, c.plant.power_sensor ? "" : ", no power sensor",
           r.limit_c, z->passive_c,
           z->amb_c + z->r_c_per_w * (c.w.base_w +
                                      c.w.k_thread_w * c.w.max_threads),
           r.first_s, r.peak_c, r.peak_c - r.limit_c, tps, 100 * tps / best,
           best, best_n, p_star, 100 * tps / hull, hull, r.tokens / r.time_s,
           r.energy_after_j / r.time_after_s, p_star, r.thread_changes,
           r.final_threads, r.hints_to_gpu + r.hints_to_cpu, r.time_s);
    ck_assert_msg(r.first_s > 0, "never reached the limit");
    ck_assert_msg(r.peak_c <= r.limit_c + peak_margin_c,
                  "peak %.2f C above limit %.1f + %.1f", r.peak_c, r.limit_c,
                  peak_margin_c);
    ck_assert_msg(tps >= min_ratio * best, "%.2f tokens/s < %.0f %% of %.2f",
                  tps, 100 * min_ratio, best);
    /* At most one change per 10 s of simulated time. */
    ck_assert_int_le(r.thread_changes + r.hints_to_gpu + r.hints_to_cpu,
                     (int)(r.time_s / 10.0));
    ck_assert_str_eq(r.last_state, "thermal");
}

START_TEST(thermal_holds_limit_board_a)
{
    check_thermal(board_a(), 0.90, 1.0);
}
END_TEST

START_TEST(thermal_holds_limit_board_b)
{
    check_thermal(board_b(), 0.90, 1.0);
}
END_TEST

/* No power sensor: the loop closes on temperature with modelled power. */
START_TEST(thermal_without_power_sensor)
{
    run_cfg c = board_a();

    c.plant.power_sensor = false;
    check_thermal(c, 0.85, 1.0);
}
END_TEST

/* The trace the thermal scenario wrote renders to a PNG. Run alone, as
 * test 'governor-plot', which main() skips (77) without gnuplot. */
START_TEST(trace_renders)
{
    char csv[1024], png[1024], cmd[4096];
    unsigned char sig[8];
    FILE *f;
    run_cfg c = board_a();
    run_result r;

    snprintf(csv, sizeof csv, "%s/governor-thermal.csv", KS_TRACE_DIR);
    snprintf(png, sizeof png, "%s/governor-thermal.png", KS_TRACE_DIR);
    c.trace = "governor-thermal.csv";
    run_loop(&c, &r);
    f = fopen(csv, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(cmd, sizeof cmd, f));
    ck_assert_str_eq(cmd, "time_s,tokens_per_s,temp_c,power_w,budget_w,"
                     "threads,pace_ms,state,target,limit_c,place,layers,"
                     "tokens_per_j\n");
    ck_assert_ptr_nonnull(fgets(cmd, sizeof cmd, f));
    fclose(f);
    snprintf(cmd, sizeof cmd, "sh '%s' '%s' '%s'", KS_PLOT_SCRIPT, csv, png);
    ck_assert_int_eq(system(cmd), 0);
    f = fopen(png, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fread(sig, 1, sizeof sig, f), sizeof sig);
    fclose(f);
    ck_assert_int_eq(memcmp(sig, "\x89PNG\r\n\x1a\n", 8), 0);
    printf("trace %s rendered to %s\n", csv, png);
}
END_TEST

/* ---- (b) power cap ----------------------------------------------------- */

enum { CAP_FITTED, CAP_ENERGY_COUNTER, CAP_CALLER_ENERGY };

static void
check_power_cap(int how)
{
    run_cfg c = board_a();
    run_result r;
    double cap_w = 5.0, avg, tps, best;
    int best_n = 0;

    c.name = "power cap 5 W";
    c.plant.zones[0] = zone("cpu-thermal", 4.0, 6.0, 25.0, 80.0);
    c.gov.power_limit_mw = (uint32_t)(cap_w * 1000);
    c.w.report_energy = how == CAP_CALLER_ENERGY;
    c.plant.energy_counter = how == CAP_ENERGY_COUNTER;
    c.no_idle_step = how != CAP_FITTED;
    c.duration_s = 120;
    c.settle_s = 5.0;
    run_loop(&c, &r);
    avg = r.ph[0].energy_j / r.ph[0].t_s;
    tps = r.ph[0].tokens / r.ph[0].t_s;
    best = best_fixed_rate(&c.w, cap_w, &best_n);
    printf("[%s, %s]\n"
           "  average power %.3f W (after 5 s) = %+.2f %% of the cap; whole "
           "run %.3f W\n"
           "  %.2f tokens/s = %.1f %% of the best fixed setting (%.2f at %d "
           "threads); peak %.1f C\n"
           "  decisions: %d thread changes (final %d)\n",
           c.name, how == CAP_CALLER_ENERGY ? "instantaneous sensor read "
           "after each token, caller's energy estimates" :
           how == CAP_ENERGY_COUNTER ? "energy counter, fitted model" :
           "instantaneous sensor read after tokens and pauses, fitted model",
           avg, 100 * (avg - cap_w) / cap_w,
           r.energy_j / r.time_s, tps, 100 * tps / best, best, best_n,
           r.peak_c, r.thread_changes, r.final_threads);
    ck_assert_msg(fabs(avg - cap_w) <= 0.05 * cap_w,
                  "average %.3f W not within 5 %% of %.1f W", avg, cap_w);
    ck_assert_msg(r.energy_j / r.time_s <= 1.05 * cap_w,
                  "whole-run average %.3f W", r.energy_j / r.time_s);
    ck_assert_msg(tps >= 0.9 * best, "%.2f tokens/s", tps);
    ck_assert_str_eq(r.last_state, "power");
}

START_TEST(power_cap_is_held)
{
    check_power_cap(CAP_FITTED);
}
END_TEST

START_TEST(power_cap_energy_counter)
{
    check_power_cap(CAP_ENERGY_COUNTER);
}
END_TEST

START_TEST(power_cap_with_energy_estimates)
{
    check_power_cap(CAP_CALLER_ENERGY);
}
END_TEST

/* ---- (c) battery ------------------------------------------------------- */

static void
run_battery(ks_gov_policy policy, run_result *r)
{
    run_cfg c = board_a();

    c.name = "battery";
    c.plant.zones[0] = zone("cpu-thermal", 4.0, 6.0, 25.0, 80.0);
    c.plant.battery = true;
    c.plant.battery_wh = 0.3;
    c.plant.battery_pct = 36.0;
    c.plant.mains = false;
    c.gov.policy = policy;
    c.battery_low_pct = 30.0;
    c.mains_on_at_s = 40.0;
    c.settle_s = 2.0;
    c.duration_s = 60;
    if (policy == KS_GOV_BALANCED)
        c.trace = "governor-battery.csv";
    run_loop(&c, r);
    printf("[battery, %s policy: 36 %% discharging, 30 %% threshold, "
           "adapter at 40 s]\n", ks_gov_policy_str(policy));
    for (int i = 0; i < 3; i++)
        if (r->ph[i].t_s > 0)
            printf("  %-22s budget %.2f W, power %.2f W, %.2f tokens/s\n",
                   i == 0 ? "discharging, >= 30 %:" :
                   i == 1 ? "discharging, < 30 %:" : "on mains:",
                   r->ph[i].budget_ws / r->ph[i].t_s,
                   r->ph[i].energy_j / r->ph[i].t_s,
                   r->ph[i].tokens / r->ph[i].t_s);
}

START_TEST(battery_policy_lowers_budget)
{
    run_result bal, perf, bat;
    workload w = board_a().w;
    double pmax = w.base_w + w.k_thread_w * w.max_threads;

    run_battery(KS_GOV_BALANCED, &bal);
    run_battery(KS_GOV_PERFORMANCE, &perf);
    run_battery(KS_GOV_BATTERY, &bat);
    for (int i = 0; i < 3; i++) {
        ck_assert(bal.ph[i].t_s > 5);
        ck_assert(perf.ph[i].t_s > 5);
    }
    /* Balanced: full power above the threshold and on mains, 75 % of the
     * dynamic power below it. */
    ck_assert_double_ge(bal.ph[0].energy_j / bal.ph[0].t_s, 0.97 * pmax);
    ck_assert_double_le(bal.ph[1].budget_ws / bal.ph[1].t_s,
                        1.01 * (w.base_w + 0.75 * (pmax - w.base_w)));
    ck_assert_double_le(bal.ph[1].energy_j / bal.ph[1].t_s,
                        1.05 * (w.base_w + 0.75 * (pmax - w.base_w)));
    ck_assert_double_lt(bal.ph[1].tokens / bal.ph[1].t_s,
                        0.95 * bal.ph[0].tokens / bal.ph[0].t_s);
    ck_assert_double_ge(bal.ph[2].energy_j / bal.ph[2].t_s, 0.97 * pmax);
    /* Performance ignores the battery. */
    ck_assert_double_ge(perf.ph[1].energy_j / perf.ph[1].t_s, 0.97 * pmax);
    /* Battery: 80 % of the dynamic power while discharging, 50 % low. */
    ck_assert_double_le(bat.ph[0].energy_j / bat.ph[0].t_s,
                        1.05 * (w.base_w + 0.8 * (pmax - w.base_w)));
    ck_assert_double_le(bat.ph[1].energy_j / bat.ph[1].t_s,
                        1.05 * (w.base_w + 0.5 * (pmax - w.base_w)));
}
END_TEST

/* ---- (d) missing sensors ----------------------------------------------- */

/* Runs |c| with stderr in a temporary file; returns how many lines
 * contain |needle| (and counts |needle2| into *n2). */
static int
count_log_lines(const run_cfg *c, run_result *r, const char *needle,
                const char *needle2, int *n2)
{
    char tmpl[] = "/tmp/ks-govlog-XXXXXX", line[1024];
    int fd = mkstemp(tmpl), saved, n = 0;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    ks_log_set_level(KS_LOG_WARN);
    run_loop(c, r);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    f = fdopen(fd, "r");
    ck_assert_ptr_nonnull(f);
    rewind(f);
    *n2 = 0;
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        if (strstr(line, needle))
            n++;
        if (needle2 && strstr(line, needle2))
            (*n2)++;
    }
    fclose(f);
    unlink(tmpl);
    return n;
}

START_TEST(blind_is_conservative)
{
    run_cfg c = board_a();
    run_result r;
    int n_temp, n_power;
    double tps, avg, unthrottled = cpu_rate(&c.w, c.w.max_threads);

    c.name = "no sensors";
    c.plant.n_zones = 0;
    c.plant.power_sensor = false;
    c.duration_s = 60;
    c.settle_s = 2;
    n_temp = count_log_lines(&c, &r, "no temperature reading",
                             "no power sensor", &n_power);
    tps = r.ph[0].tokens / r.ph[0].t_s;
    avg = r.ph[0].energy_j / r.ph[0].t_s;
    printf("[no temperature, no power sensor]\n"
           "  state %s, %d threads, pace %.1f ms: %.2f tokens/s (%.0f %% of "
           "unthrottled %.2f), %.2f W (flat out %.2f W)\n",
           r.last_state, r.last.n_threads, r.last.pace_ns / 1e6, tps,
           100 * tps / unthrottled, unthrottled, avg,
           c.w.base_w + c.w.k_thread_w * c.w.max_threads);
    ck_assert_int_eq(n_temp, 1);
    ck_assert_int_eq(n_power, 1);
    ck_assert_str_eq(r.last_state, "blind");
    ck_assert_uint_eq(r.last.flags & (KS_GOV_F_NO_TEMP | KS_GOV_F_NO_POWER),
                      KS_GOV_F_NO_TEMP | KS_GOV_F_NO_POWER);
    ck_assert_int_eq(r.last.n_threads, 2);
    ck_assert(r.last.pace_ns > 0);
    ck_assert_double_le(tps, 0.6 * unthrottled);
    ck_assert_double_le(avg, c.w.base_w + 0.55 * c.w.k_thread_w *
                        c.w.max_threads);
}
END_TEST

/* A power sensor but no temperature: half the dynamic power, measured. */
START_TEST(no_temperature_holds_half_power)
{
    run_cfg c = board_a();
    run_result r;
    int n_temp, n_power;
    double avg, half;

    c.plant.n_zones = 0;
    c.duration_s = 60;
    c.settle_s = 5;
    n_temp = count_log_lines(&c, &r, "no temperature reading",
                             "no power sensor", &n_power);
    avg = r.ph[0].energy_j / r.ph[0].t_s;
    half = c.w.base_w + 0.5 * c.w.k_thread_w * c.w.max_threads;
    printf("[no temperature, power sensor]\n  state %s, %d threads: %.2f W "
           "against half the dynamic power %.2f W\n", r.last_state,
           r.last.n_threads, avg, half);
    ck_assert_int_eq(n_temp, 1);
    ck_assert_int_eq(n_power, 0);
    ck_assert_str_eq(r.last_state, "blind");
    ck_assert_double_le(fabs(avg - half), 0.05 * half);
}
END_TEST

/* ---- placement --------------------------------------------------------- */

/* CPU and GPU in zones of their own: the CPU zone runs hot while the GPU
 * zone stays cool, so the governor moves work to the GPU, in one
 * direction only and no faster than its dwell allows. */
START_TEST(placement_moves_away_from_heat)
{
    run_cfg c = board_a();
    run_result r;
    double gpu_c;

    c.name = "placement";
    c.plant.n_zones = 2;
    c.plant.zones[0] = zone("cpu-thermal", 9.0, 6.0, 25.0, 80.0);
    c.plant.zones[0].share[PLANT_GPU] = 0.2;
    c.plant.zones[1] = zone("gpu-thermal", 5.0, 10.0, 25.0, 80.0);
    c.plant.zones[1].share[PLANT_BASE] = 0.2;
    c.plant.zones[1].share[PLANT_CPU] = 0.2;
    c.w.gpu_tps = 14.0;
    c.w.k_gpu_w = 3.0;
    c.duration_s = 600;
    c.trace = "governor-placement.csv";
    run_loop(&c, &r);
    gpu_c = r.last.temp_mc / 1000.0;
    printf("[placement: CPU zone R 9 C/W, GPU zone R 5 C/W]\n"
           "  %d hints to the GPU, %d to the CPU; GPU share of layers at the "
           "end %.2f; peak %.2f C (limit %.1f); final state %s, %.2f "
           "tokens/s, hottest %.1f C\n",
           r.hints_to_gpu, r.hints_to_cpu, r.final_gpu_frac, r.peak_c,
           r.limit_c, r.last_state, r.last.tokens_per_s, gpu_c);
    ck_assert_int_ge(r.hints_to_gpu, 1);
    ck_assert_int_eq(r.hints_to_cpu, 0);
    ck_assert_int_le(r.hints_to_gpu, (int)(r.time_s / 30.0));
    ck_assert_double_le(r.peak_c, r.limit_c + 1.0);
}
END_TEST

/* ---- faults: the governor fails safe --------------------------------- */

/* A hot board (flat out it would settle at 116 C) whose zone already
 * reads 95 C, held to 60 C by an explicit limit: no trip points. */
static run_cfg
hot_board(void)
{
    run_cfg c = board_a();

    c.plant.zones[0] = zone("x86_pkg_temp", 12.0, 6.0, 25.0, 0.0);
    c.plant.zones[0].critical_c = 0;
    c.plant.zones[0].start_c = 95.0;
    c.gov.temp_limit_mc = 60000;
    c.duration_s = 60;
    return c;
}

/* The scenario: the RAPL package counter is stuck (it reads 0 W)
 * and the zone is at 95 C against a 60 C limit. The governor must pace
 * and cut, and the zone cool, not run flat out on a model that says
 * tokens cost nothing. */
START_TEST(stuck_rapl_hot_zone_is_paced)
{
    run_cfg c = hot_board();
    run_result r;
    double flat_w = c.w.base_w + c.w.k_thread_w * c.w.max_threads;
    double avg_w;

    c.name = "stuck RAPL, 95 C";
    c.plant.power_sensor = true;
    c.plant.rapl = true;
    c.freeze_power = true;
    c.freeze_power_at_s = 0;
    c.no_idle_step = true;
    run_loop(&c, &r);
    avg_w = r.energy_j / r.time_s;
    printf("[RAPL stuck at 0 W, zone at 95 C, limit 60 C]\n"
           "  %.1f s paused of %.0f s, fewest threads %d, average %.2f W "
           "(flat out %.2f W), zone %.1f C at the end, state %s\n",
           r.paced_s, r.time_s, r.min_threads, avg_w, flat_w, r.final_c,
           r.last.state);
    ck_assert_msg(r.paced_s >= 0.5 * r.time_s, "paused %.1f s of %.0f s",
                  r.paced_s, r.time_s);
    ck_assert_double_le(avg_w, 0.5 * flat_w);
    ck_assert_double_lt(r.final_c, 80.0);
    ck_assert_int_eq(r.last.state_id, KS_GOV_STATE_THERMAL);
}
END_TEST

/* An instantaneous sensor that hangs at its reading of 5 s in (a working
 * load's power) while the load later halves: it is declared stuck once,
 * and from then on the governor runs as without a power sensor. */
START_TEST(stuck_power_sensor_counts_as_none)
{
    run_cfg c = board_a();
    run_result r;
    int n_stuck, n_none;

    c.name = "stuck power sensor";
    c.freeze_power = true;
    c.freeze_power_at_s = 5.0;
    c.duration_s = 150;
    n_stuck = count_log_lines(&c, &r, "stuck", "no power sensor", &n_none);
    printf("[power sensor stuck from 5 s]\n  %d stuck line(s), state %s, "
           "flags 0x%x, peak %.2f C (limit %.1f)\n", n_stuck, r.last.state,
           r.last.flags, r.peak_c, r.limit_c);
    ck_assert_int_eq(n_stuck, 1);
    ck_assert_uint_eq(r.last.flags & KS_GOV_F_NO_POWER, KS_GOV_F_NO_POWER);
    ck_assert_double_le(r.peak_c, r.limit_c + 1.0);
}
END_TEST

/* Feeds the governor |n| control periods of 4-thread tokens (50 ms of
 * CPU each) with |s| read before each; returns the last token's
 * decision. */
static ks_gov_decision
feed(ks_governor *g, const ks_gov_sense *s, int n_periods)
{
    ks_gov_work w = { 0 };
    ks_gov_decision d = { 0 };
    uint64_t now = ks_governor_last(g)->next_sample_ns;

    w.n_tokens = 1;
    w.n_threads = 4;
    w.busy_ns[KS_GOV_CPU] = 50000000;
    for (int i = 0; i < 10 * n_periods; i++) {
        ck_assert_int_eq(ks_governor_step(g, s, now, &w, &d), KS_OK);
        now += 50000000 + d.pace_ns;
    }
    return d;
}

/* An energy counter that reads 0 W (not stuck yet: 5 s) and no
 * temperature: the blind budget is half the dynamic power, and it must
 * still pace; a model fitted to 0 W would call every token free. */
START_TEST(power_model_keeps_a_floor)
{
    ks_governor_params p = { .max_threads = 4 };
    ks_gov_sense s = { .has_power = true, .power_mw = 0,
                       .power_is_average = true, .battery_pct = -1 };
    ks_gov_decision d;
    ks_governor *g;

    ck_assert_int_eq(ks_governor_create(&p, &g), KS_OK);
    d = feed(g, &s, 10);
    printf("[0 W readings, no temperature]\n  state %s, %d threads, pace "
           "%.1f ms, budget %u mW\n", d.state, d.n_threads, d.pace_ns / 1e6,
           d.budget_mw);
    ck_assert_int_eq(d.state_id, KS_GOV_STATE_BLIND);
    ck_assert_uint_gt(d.pace_ns, 10000000);
    ks_governor_destroy(g);
}
END_TEST

/* The caller's energy estimates say tokens cost next to nothing and there
 * is no power sensor: the zone, 35 C over the limit and heating, must
 * still be cut in pace and threads within seconds. (The PI loop alone
 * already copes with this model; the backstop must not get in the way.
 * The model-free cut itself is what stuck_rapl_hot_zone_is_paced needs.) */
START_TEST(limit_holds_whatever_the_model)
{
    run_cfg c = hot_board();
    run_result r;

    c.name = "energy estimates 1000x low";
    c.plant.power_sensor = false;
    c.w.report_energy = true;
    c.w.energy_scale = 0.001;
    c.no_idle_step = true;
    c.duration_s = 30;
    run_loop(&c, &r);
    printf("[energy estimates 1000x low, no power sensor, 95 C against "
           "60 C]\n  %.1f s paused of %.0f s, threads %d at the end (fewest "
           "%d), zone %.1f C at the end, state %s\n", r.paced_s, r.time_s,
           r.final_threads, r.min_threads, r.final_c, r.last.state);
    ck_assert_msg(r.paced_s >= 0.5 * r.time_s, "paused %.1f s of %.0f s",
                  r.paced_s, r.time_s);
    ck_assert_int_lt(r.min_threads, c.w.max_threads);
    ck_assert_double_lt(r.final_c, 95.0);
}
END_TEST

/* A thermistor that reads -50 C (open circuit) or 200 C: neither is a
 * temperature. The governor holds the blind budget (not "cool" at full
 * power, not "critical" at the floor) and says so once. */
START_TEST(implausible_temperature_is_ignored)
{
    static const double bad_c[] = { -50.0, 200.0 };

    for (size_t i = 0; i < sizeof bad_c / sizeof bad_c[0]; i++) {
        run_cfg c = board_a();
        run_result r;
        int n_fault, n_blind;

        c.force_temp = true;
        c.forced_c = bad_c[i];
        c.duration_s = 30;
        n_fault = count_log_lines(&c, &r, "sensor fault",
                                  "no temperature reading", &n_blind);
        printf("[zone reads %.0f C]\n  state %s, %d threads, pace %.1f ms, "
               "flags 0x%x\n", bad_c[i], r.last.state, r.last.n_threads,
               r.last.pace_ns / 1e6, r.last.flags);
        ck_assert_int_eq(n_fault, 1);
        ck_assert_int_eq(r.last.state_id, KS_GOV_STATE_BLIND);
        ck_assert_uint_eq(r.last.flags & KS_GOV_F_NO_TEMP, KS_GOV_F_NO_TEMP);
    }
}
END_TEST

/* A power reading far above anything the board draws (a counter that
 * wrapped, a scale error) does not enter the model: with nothing else
 * read, the governor runs as without a power sensor, and says so once. */
START_TEST(implausible_power_is_ignored)
{
    ks_governor_params p = { .max_threads = 4, .max_power_mw = 50000 };
    ks_gov_sense s = { .has_temp = true, .temp_mc = 40000,
                       .has_power = true, .power_mw = 2000000000u,
                       .power_is_average = true, .battery_pct = -1 };
    char tmpl[] = "/tmp/ks-govlog-XXXXXX", line[512];
    int fd = mkstemp(tmpl), saved, n_fault = 0;
    ks_gov_decision d;
    ks_governor *g;
    FILE *f;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ks_governor_create(&p, &g), KS_OK);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    ks_log_set_level(KS_LOG_WARN);
    d = feed(g, &s, 10);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    f = fdopen(fd, "r");
    ck_assert_ptr_nonnull(f);
    rewind(f);
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        n_fault += strstr(line, "sensor fault") != NULL;
    }
    fclose(f);
    unlink(tmpl);
    printf("[2 MW readings, 50 W board]\n  power %u mW, flags 0x%x\n",
           d.power_mw, d.flags);
    ck_assert_int_eq(n_fault, 1);
    ck_assert_uint_eq(d.flags & KS_GOV_F_NO_POWER, KS_GOV_F_NO_POWER);
    ck_assert_uint_lt(d.power_mw, 50000);
    ks_governor_destroy(g);
}
END_TEST

/* ---- API --------------------------------------------------------------- */

START_TEST(create_rejects_bad_params)
{
    ks_governor_params p = { 0 };
    ks_governor *g = (ks_governor *)1;

    p.min_threads = 8;
    p.max_threads = 4;
    ck_assert_int_eq(ks_governor_create(&p, &g), KS_ERR_INVALID_ARG);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "min_threads 8"));
    memset(&p, 0, sizeof p);
    p.temp_limit_mc = -5;
    ck_assert_int_eq(ks_governor_create(&p, &g), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "temp_limit_mc -5"));
    memset(&p, 0, sizeof p);
    p.policy = (ks_gov_policy)7;
    ck_assert_int_eq(ks_governor_create(&p, &g), KS_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(ks_last_error(), "policy 7"));
    ck_assert_int_eq(ks_governor_create(NULL, &g), KS_OK);
    ck_assert_int_ge(ks_governor_last(g)->n_threads, 1);
    ks_governor_destroy(g);
    ks_governor_destroy(NULL);
}
END_TEST

START_TEST(policy_names)
{
    ks_gov_policy p;

    ck_assert(ks_gov_policy_parse("battery", &p));
    ck_assert_int_eq(p, KS_GOV_BATTERY);
    ck_assert(ks_gov_policy_parse("performance", &p));
    ck_assert_int_eq(p, KS_GOV_PERFORMANCE);
    ck_assert(!ks_gov_policy_parse("turbo", &p));
    ck_assert_str_eq(ks_gov_policy_str(KS_GOV_BALANCED), "balanced");
    ck_assert_str_eq(ks_gov_place_str(KS_GOV_PLACE_TO_GPU), "to-gpu");
}
END_TEST

/* Until the first control period ends nothing is throttled; a sense with
 * a passive trip sets the control temperature; explicit limits win. */
START_TEST(limit_from_trip_or_param)
{
    ks_governor_params p = { 0 };
    ks_gov_sense s = { 0 };
    ks_gov_work w = { 0 };
    ks_gov_decision d;
    ks_governor *g;

    ck_assert_int_eq(ks_governor_create(&p, &g), KS_OK);
    s.has_temp = true;
    s.temp_mc = 40000;
    s.passive_trip_mc = 85000;
    s.has_power = true;
    s.power_mw = 5000;
    w.n_tokens = 1;
    w.busy_ns[KS_GOV_CPU] = 50000000;
    ck_assert_int_eq(ks_governor_step(g, &s, 1000, &w, &d), KS_OK);
    ck_assert_uint_eq(d.pace_ns, 0);
    ck_assert(!d.updated);
    ck_assert_int_eq(ks_governor_step(g, &s, 600000000, &w, &d), KS_OK);
    ck_assert(d.updated);
    ck_assert_int_eq(d.control_temp_mc, 80000);
    ck_assert_int_eq(d.state_id, KS_GOV_STATE_COOL);
    ck_assert_str_eq(d.state, "cool");
    ck_assert_uint_eq(d.pace_ns, 0);
    ks_governor_destroy(g);

    p.temp_limit_mc = 60000;
    ck_assert_int_eq(ks_governor_create(&p, &g), KS_OK);
    ck_assert_int_eq(ks_governor_step(g, &s, 1000, &w, &d), KS_OK);
    ck_assert_int_eq(ks_governor_step(g, &s, 600000000, &w, &d), KS_OK);
    ck_assert_int_eq(d.control_temp_mc, 60000);
    ks_governor_destroy(g);
}
END_TEST

/* The same inputs give the same decisions, bit for bit. */
START_TEST(deterministic)
{
    run_cfg c = board_a();
    run_result a, b;

    c.duration_s = 120;
    run_loop(&c, &a);
    run_loop(&c, &b);
    ck_assert_uint_eq(a.checksum, b.checksum);
    ck_assert_double_eq(a.peak_c, b.peak_c);
    ck_assert_int_eq(a.thread_changes, b.thread_changes);
}
END_TEST

/* Sense from a real board's fake tree: the RK3588 has CPU and GPU zones. */
START_TEST(sense_from_board_tree)
{
    ks_telem_params tp = { 0 };
    ks_telemetry *t;
    ks_gov_sense s;
    char root[1024];

    snprintf(root, sizeof root, "%s/rk3588", KS_SYSFS_DATA);
    tp.root = root;
    ck_assert_int_eq(ks_telemetry_open_ex(&tp, &t), KS_OK);
    ks_gov_sense_from_telemetry(ks_telemetry_get_info(t),
                                ks_telemetry_last(t), &s);
    ck_assert(s.has_temp);
    ck_assert(s.has_actor_temp[KS_GOV_CPU]);
    ck_assert(s.has_actor_temp[KS_GOV_GPU]);
    ck_assert_int_ge(s.temp_mc, s.actor_temp_mc[KS_GOV_CPU]);
    ck_assert_int_ge(s.temp_mc, s.actor_temp_mc[KS_GOV_GPU]);
    ck_assert_int_gt(s.passive_trip_mc, 0);
    ks_telemetry_destroy(t);
}
END_TEST

static Suite *
governor_suite(void)
{
    Suite *s = suite_create("governor");
    TCase *api = tcase_create("api");
    TCase *thermal = tcase_create("thermal");
    TCase *power = tcase_create("power");
    TCase *battery = tcase_create("battery");
    TCase *blind = tcase_create("missing-sensors");
    TCase *place = tcase_create("placement");
    TCase *faults = tcase_create("faults");

    tcase_add_test(api, create_rejects_bad_params);
    tcase_add_test(api, policy_names);
    tcase_add_test(api, limit_from_trip_or_param);
    tcase_add_test(api, deterministic);
    tcase_add_test(api, sense_from_board_tree);
    tcase_add_test(thermal, thermal_holds_limit_board_a);
    tcase_add_test(thermal, thermal_holds_limit_board_b);
    tcase_add_test(thermal, thermal_without_power_sensor);
    tcase_add_test(power, power_cap_is_held);
    tcase_add_test(power, power_cap_energy_counter);
    tcase_add_test(power, power_cap_with_energy_estimates);
    tcase_add_test(battery, battery_policy_lowers_budget);
    tcase_add_test(blind, blind_is_conservative);
    tcase_add_test(blind, no_temperature_holds_half_power);
    tcase_add_test(place, placement_moves_away_from_heat);
    tcase_add_test(faults, stuck_rapl_hot_zone_is_paced);
    tcase_add_test(faults, stuck_power_sensor_counts_as_none);
    tcase_add_test(faults, power_model_keeps_a_floor);
    tcase_add_test(faults, limit_holds_whatever_the_model);
    tcase_add_test(faults, implausible_temperature_is_ignored);
    tcase_add_test(faults, implausible_power_is_ignored);
    suite_add_tcase(s, api);
    suite_add_tcase(s, thermal);
    suite_add_tcase(s, power);
    suite_add_tcase(s, battery);
    suite_add_tcase(s, blind);
    suite_add_tcase(s, place);
    suite_add_tcase(s, faults);
    return s;
}

/* The trace rendering alone: it needs gnuplot, an optional tool. */
static Suite *
plot_suite(void)
{
    Suite *s = suite_create("governor-plot");
    TCase *tc = tcase_create("plot");

    tcase_add_test(tc, trace_renders);
    suite_add_tcase(s, tc);
    return s;
}

/* No argument: the governor's suite. --plot: the trace rendering, skipped
 * (exit 77) when gnuplot is not installed. */
int
main(int argc, char **argv)
{
    bool plot = argc > 1 && strcmp(argv[1], "--plot") == 0;
    SRunner *sr;
    int failed;

    if (plot && system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("skip: gnuplot is not installed, so traces are not rendered "
               "(install gnuplot to run this test)\n");
        return 77;
    }
    sr = srunner_create(plot ? plot_suite() : governor_suite());

    /* Figures go to stdout as each test runs: no buffering across the
     * fork check runs each test in. */
    setvbuf(stdout, NULL, _IONBF, 0);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
