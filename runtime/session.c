/* The public API around a model: runtimes, sessions, tokenization,
 * generation and statistics.
 *
 * A session allocates its KV cache and the scratch for one batch at
 * create; ks_session_generate then prefills the prompt in batches of
 * n_batch through ks_forward, and decodes one token at a time, sampling
 * on the CPU and handing each token's text to the caller's callback. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "driver/base.h"
#include "runtime/chat.h"
#include "runtime/json_schema.h"
#include "runtime/cpu/quant.h"
#include "runtime/sample.h"
#include "runtime/spec_sample.h"
#include "runtime/session_priv.h"
#include "runtime/remote.h"
#include "runtime/tokenizer.h"
#include "runtime/costs.h"
#include "scheduler/placement.h"
#include "scheduler/profile.h"
#include "scheduler/target.h"
#include "driver/telemetry.h"
#include "scheduler/governor.h"
#include "scheduler/trace.h"
#include <time.h>

/* ---- runtime ---- */

KS_API ks_status
ks_runtime_create(const ks_runtime_params *p, ks_runtime **out)
{
    ks_runtime_params def = { 0 };
    ks_runtime *rt;

    if (!out)
        return ks_null_arg("ks_runtime_create", "out");
    *out = NULL;
    if (!p)
        p = &def;
    if (p->n_threads < 0 || p->n_threads > 1024)
        return ks_error(KS_ERR_INVALID_ARG,
                        "runtime: %d threads asked, expected 1..1024 or 0 "
                        "for all cores", p->n_threads);
    if (p->backend != KS_BACKEND_AUTO && p->backend != KS_BACKEND_CPU &&
        p->backend != KS_BACKEND_VULKAN)
        return ks_error(KS_ERR_INVALID_ARG, "runtime: unknown backend %d",
                        (int)p->backend);
    rt = calloc(1, sizeof(*rt));
    if (!rt)
        return ks_error(KS_ERR_NOMEM, "runtime: no memory");
    rt->backend = p->backend;
    rt->n_threads = p->n_threads;
    if (rt->n_threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        rt->n_threads = n > 0 ? (int32_t)n : 1;
    }
    rt->device = p->device > 0 ? p->device - 1 : -1;
    if (p->gpu_layers < 0 || p->gpu_layers > 100000) {
        free(rt);
        return ks_error(KS_ERR_INVALID_ARG, "runtime: %d GPU layers asked",
                        p->gpu_layers);
    }
    rt->gpu_layers = p->gpu_layers;
    if (p->split && !(rt->split = strdup(p->split))) {
        free(rt);
        return ks_error(KS_ERR_NOMEM, "runtime: no memory");
    }
    if (p->temp_limit_c < 0 || p->temp_limit_c > 150 || p->power_limit_w < 0 ||
        p->power_limit_w > 100000) {
        free(rt);
        return ks_error(KS_ERR_INVALID_ARG,
                        "runtime: temperature limit %.1f C (expected 0..150) "
                        "or power limit %.1f W (expected 0..100000) out of "
                        "range", p->temp_limit_c, p->power_limit_w);
    }
    if ((unsigned)p->policy > KS_POLICY_BATTERY) {
        free(rt);
        return ks_error(KS_ERR_INVALID_ARG, "runtime: unknown policy %d",
                        (int)p->policy);
    }
    rt->temp_limit_c = p->temp_limit_c;
    rt->power_limit_w = p->power_limit_w;
    rt->policy = p->policy;
    rt->no_governor = p->no_governor;
    *out = rt;
    return KS_OK;
}

KS_API void
ks_runtime_destroy(ks_runtime *rt)
{
    if (rt)
        free(rt->split);
    free(rt);
}

KS_API const char *
ks_runtime_backend_name(const ks_runtime *rt)
{
    if (!rt)
        return "";
    return rt->backend == KS_BACKEND_VULKAN ? "vulkan" :
           rt->backend == KS_BACKEND_CPU ? "cpu" : "auto";
}

KS_API const char *
ks_session_backend_name(const ks_session *s)
{
    if (!s)
        return "";
    if (s->n_targets == 1)
        return s->targets[0]->kind;
    return "split";
}

KS_API const char *
ks_session_placement(const ks_session *s)
{
    if (!s)
        return "";
    return s->plan;
}

/* What the session offers target kinds. */
static ks_target_env
target_env(ks_session *s)
{
    ks_target_env env = { .model = s->m, .device = s->m->rt->device, .n_ctx = s->n_ctx,
                          .n_batch = s->n_batch, .kv_f32 = s->kv_type == KS_KV_F32,
                          .check_layers = s->check_layers, .max_threads = s->max_threads,
                          .threads_now = &s->n_threads, .profile = s->profile };
    return env;
}

/* The plan for a device backend: every layer that fits the device, the
 * last ones first (the head with them); the rest on the CPU. */
static ks_status
plan_fit(ks_session *s, const ks_target_kind *dev, ks_plan *plan, bool *fits_all)
{
    uint32_t n = s->m->hp.n_layers;
    ks_target_env env = target_env(s);
    ks_target_memory mem = { 0 };
    ks_place_cost c = { .cpu_layer_ms = 1.0, .gpu_layer_ms = 0.0, .cpu_head_ms = 1.0,
                        .gpu_head_ms = 0.0, .gpu_ok = true };
    ks_status st;

    if (!dev->memory) {  /* nothing limits it: all there */
        ks_place_gpu_layers(n, n, plan);
        snprintf(plan->r[plan->n - 1].kind, sizeof plan->r[0].kind, "%s", dev->name);
        *fits_all = true;
        return KS_OK;
    }
    if (!(mem.layer_bytes = calloc(n, sizeof(*mem.layer_bytes))))
        return ks_error(KS_ERR_NOMEM, "session: no memory");
    if ((st = dev->memory(&env, &mem)) == KS_OK) {
        c.gpu_budget = mem.avail_bytes;
        c.layer_bytes = mem.layer_bytes;
        c.head_bytes = mem.head_bytes;
        c.fixed_bytes = mem.fixed_bytes;
        ks_place_auto(n, &c, plan, NULL);
        *fits_all = plan->n == 1 && strcmp(plan->r[0].kind, "cpu") != 0;
    }
    free(mem.layer_bytes);
    return st;
}

static ks_status
make_targets(ks_session *s, const ks_plan *plan)
{
    ks_target_env env = target_env(s);
    ks_status st;

    for (uint32_t i = 0; i < plan->n; i++) {
        const ks_range *r = &plan->r[i];
        const ks_target_kind *k = ks_target_kind_find(r->kind);
        const char *why;
        if (!k || !k->create)
            return ks_error(KS_ERR_UNSUPPORTED, "placement: no execution target '%s' in "
                            "this build (there are cpu and vulkan)", r->kind);
        if ((why = k->supports(&env, r->l0, r->l1, r->head)) != NULL)
            return ks_error(KS_ERR_UNSUPPORTED, "placement: %s cannot run layers %u-%u: %s",
                            r->kind, r->l0, r->l1 - 1, why);
        if ((st = k->create(&env, r->l0, r->l1, r->head, &s->targets[s->n_targets])) != KS_OK)
            return st;
        s->n_targets++;
    }
    ks_plan_format(plan, s->plan, sizeof s->plan);
    s->stats.kv_bytes = 0;
    for (uint32_t i = 0; i < s->n_targets; i++) {
        ks_target_stats ts = { 0 };
        if (s->targets[i]->ops->stats) {
            s->targets[i]->ops->stats(s->targets[i], &ts);
            s->stats.kv_bytes += ts.kv_bytes;
        }
    }
    for (uint32_t i = 0; i < s->n_targets; i++)
        ks_log(s->n_targets > 1 ? KS_LOG_INFO : KS_LOG_DEBUG, "placement", "%s",
               s->targets[i]->desc);
    return KS_OK;
}

static void
drop_targets(ks_session *s)
{
    for (uint32_t i = 0; i < s->n_targets; i++)
        s->targets[i]->ops->destroy(s->targets[i]);
    s->n_targets = 0;
}

/* The boundary of a plan of the shape placement and moves use: layers
 * [0, k) on the CPU, [k, n) and the head on one device kind (*dev, NULL
 * when all run on the CPU). False for any other shape. */
static bool
split_point(const ks_session *s, uint32_t *k, const char **dev)
{
    uint32_t n = s->m->hp.n_layers;
    const ks_target *last = s->n_targets ? s->targets[s->n_targets - 1] : NULL;

    *k = n;
    *dev = NULL;
    if (!last || s->n_targets > 2)
        return false;
    if (strcmp(last->kind, "cpu") != 0) {
        *k = last->l0;
        *dev = last->kind;
    }
    return s->n_targets == 1 || strcmp(s->targets[0]->kind, "cpu") == 0;
}

/* Layers [0, k) on the CPU, the rest and the head on |dev|. */
static void
plan_split(uint32_t n, uint32_t k, const char *dev, ks_plan *plan)
{
    ks_place_gpu_layers(n, n - k, plan);
    if (k < n)
        snprintf(plan->r[plan->n - 1].kind, sizeof plan->r[0].kind, "%s", dev);
}

ks_status
ks_session_fall_back(ks_session *s, const char *why)
{
    char msg[sizeof s->stats.fallback];
    bool on_device = false;
    ks_plan plan;
    ks_status st;

    snprintf(msg, sizeof msg, "%s", why);
    for (uint32_t i = 0; i < s->n_targets; i++)
        on_device |= s->targets[i]->accel;
    if (!on_device)  /* nothing to move: the fault stands */
        return ks_error(KS_ERR_DEVICE_LOST, "%s", msg);
    ks_log(KS_LOG_WARN, "runtime", "%s; continuing on the CPU from token %u, its KV cache "
           "rebuilt from the tokens held", msg, s->n_kv);
    drop_targets(s);
    ks_place_gpu_layers(s->m->hp.n_layers, 0, &plan);
    if ((st = make_targets(s, &plan)) != KS_OK)
        return st;
    s->placement_gen++;
    s->stats.n_fallbacks++;
    snprintf(s->stats.fallback, sizeof s->stats.fallback, "%s", msg);
    return KS_OK;
}

ks_status
ks_session_move(ks_session *s, ks_gov_place place)
{
    uint32_t n = s->m->hp.n_layers, k, step = n / 4 ? n / 4 : 1, k_new;
    const char *dev;
    char dev_name[16], was[sizeof s->plan];
    ks_plan plan;
    ks_status st;

    if (!split_point(s, &k, &dev))
        return ks_error(KS_ERR_UNSUPPORTED, "placement: %s is not a CPU range followed by "
                        "a device range; not moved", s->plan);
    if (place == KS_GOV_PLACE_TO_CPU) {
        if (!dev)
            return ks_error(KS_ERR_UNSUPPORTED, "placement: every layer is on the CPU");
        k_new = k + step < n ? k + step : n;
    } else if (place == KS_GOV_PLACE_TO_GPU) {
        if (!dev && !ks_target_kind_find(dev = "vulkan"))
            return ks_error(KS_ERR_UNSUPPORTED, "placement: no device to move layers to");
        if (k == 0)
            return ks_error(KS_ERR_UNSUPPORTED, "placement: every layer is on %s", dev);
        k_new = k > step ? k - step : 0;
    } else {
        return KS_OK;
    }
    snprintf(dev_name, sizeof dev_name, "%s", dev);
    snprintf(was, sizeof was, "%s", s->plan);
    drop_targets(s);
    plan_split(n, k_new, dev_name, &plan);
    if ((st = make_targets(s, &plan)) != KS_OK) {
        /* the device refused the new range: back where it was */
        ks_log(KS_LOG_WARN, "placement", "moving layers: %s; keeping %s", ks_last_error(),
               was);
        drop_targets(s);
        plan_split(n, k, dev_name, &plan);
        if ((st = make_targets(s, &plan)) != KS_OK)
            return st;
    }
    s->placement_gen++;
    ks_log(KS_LOG_INFO, "placement", "governor: %s -> %s; replaying %u tokens", was, s->plan,
           s->n_kv);
    return ks_forward_replay(s);
}

/* Chooses where the layers run and makes the targets. Backend cpu: all
 * on the CPU. An explicit --split or --gpu-layers: as asked. vulkan: all
 * that fit the device (the rest on the CPU, with a warning). auto: the
 * cost model's choice when a device takes the model, else the CPU with a
 * one-line notice saying why. Only target kinds are asked (supports,
 * auto_skip, memory, create); no backend is called directly. */
static ks_status
start_backend(ks_session *s)
{
    const ks_runtime *rt = s->m->rt;
    uint32_t n = s->n_layers;
    ks_target_env env = target_env(s);
    const ks_target_kind *dev;
    const char *why = NULL;
    ks_plan plan;
    ks_status st;
    bool fits = true, chose_device = false;

    ks_targets_register_builtin();
    dev = ks_target_kind_find("vulkan");
    ks_place_gpu_layers(n, 0, &plan);  /* all on the CPU */

    if (n < s->m->hp.n_layers) {
        /* an early exit: all on the CPU, the head after layer n - 1 */
        ks_log(KS_LOG_DEBUG, "placement", "exit after layer %u of %u: on the CPU", n - 1,
               s->m->hp.n_layers);
    } else if (rt->split) {
        if ((st = ks_place_parse_split(rt->split, n, &plan)) != KS_OK)
            return st;
    } else if (rt->gpu_layers > 0) {
        ks_place_gpu_layers(n, (uint32_t)rt->gpu_layers, &plan);
    } else if (rt->backend == KS_BACKEND_CPU) {
        /* all on the CPU */
    } else if (!dev || (why = dev->supports(&env, 0, n, true)) != NULL) {
        if (!dev)
            why = "this build has no Vulkan support";
        if (rt->backend == KS_BACKEND_VULKAN)
            return ks_error(KS_ERR_UNSUPPORTED, "session: backend vulkan: %s", why);
        ks_log(KS_LOG_INFO, "runtime", "backend auto: using the CPU: %s", why);
    } else if (rt->backend == KS_BACKEND_VULKAN) {
        if ((st = plan_fit(s, dev, &plan, &fits)) != KS_OK)
            return st;
        if (!fits)
            ks_log(KS_LOG_WARN, "runtime", "backend vulkan: the model does not fit the "
                   "device's memory; the first layers run on the CPU");
    } else if (dev->auto_skip && (why = dev->auto_skip(&env)) != NULL) {
        ks_log(KS_LOG_INFO, "runtime", "backend auto: using the CPU (%d threads, %s "
               "kernels): %s", s->n_threads, ks_cpu_simd_name(ks_cpu_simd()), why);
    } else if (ks_costs_place(s, dev, &plan) != KS_OK) {
        /* a device auto meant to weigh failed to start: that is news */
        ks_log(KS_LOG_WARN, "runtime", "backend auto: using the CPU: %s", ks_last_error());
    } else {
        chose_device = true;
    }
    st = make_targets(s, &plan);
    /* the estimate was short of what the device took: one layer fewer */
    while (st == KS_ERR_DEVICE_OOM && rt->backend == KS_BACKEND_VULKAN && !rt->split &&
           rt->gpu_layers == 0 && plan.n > 0 &&
           strcmp(plan.r[plan.n - 1].kind, "cpu") != 0) {
        uint32_t on_gpu = plan.r[plan.n - 1].l1 - plan.r[plan.n - 1].l0;
        ks_log(KS_LOG_DEBUG, "placement", "%s; trying %u layers on the device",
               ks_last_error(), on_gpu - 1);
        drop_targets(s);
        ks_place_gpu_layers(n, on_gpu - 1, &plan);
        st = make_targets(s, &plan);
    }
    if (st != KS_OK && rt->backend == KS_BACKEND_AUTO && !rt->split && rt->gpu_layers == 0) {
        /* the device was chosen and failed to start: that is news */
        ks_log(chose_device ? KS_LOG_WARN : KS_LOG_INFO, "runtime",
               "backend auto: using the CPU: %s", ks_last_error());
        drop_targets(s);
        ks_place_gpu_layers(n, 0, &plan);
        st = make_targets(s, &plan);
    }
    if (st != KS_OK)
        return st;
    for (uint32_t i = 0; i < s->n_targets; i++) {
        ks_target_stats ts = { 0 };
        if (!s->targets[i]->ops->stats)
            continue;
        s->targets[i]->ops->stats(s->targets[i], &ts);
        s->stats.n_shader_hits += ts.n_kernels_cached;
        s->stats.n_shader_compiled += ts.n_kernels_compiled;
        s->stats.backend_setup_ms += ts.setup_ms;
    }
    return KS_OK;
}

/* ---- tokens and chat ---- */

KS_API ks_status
ks_model_tokenize(const ks_model *m, const char *text, size_t len,
                  bool add_special, bool parse_special, int32_t *out,
                  size_t cap, size_t *n_out)
{
    if (!n_out)
        return ks_null_arg("ks_model_tokenize", "n_out");
    *n_out = 0;
    if (!m)
        return ks_null_arg("ks_model_tokenize", "m");
    if (!text && len)
        return ks_null_arg("ks_model_tokenize", "text");
    return ks_tokenizer_encode(m->tok, text, len, add_special, parse_special,
                               out, cap, n_out);
}

KS_API size_t
ks_model_token_piece(const ks_model *m, int32_t id, char *buf, size_t cap)
{
    if (!m)
        return 0;
    return ks_tokenizer_piece(m->tok, id, buf, cap);
}

KS_API ks_status
ks_model_detokenize(const ks_model *m, const int32_t *ids, size_t n,
                    char *buf, size_t cap, size_t *n_out)
{
    if (!n_out)
        return ks_null_arg("ks_model_detokenize", "n_out");
    *n_out = 0;
    if (!m)
        return ks_null_arg("ks_model_detokenize", "m");
    if (!ids && n)
        return ks_null_arg("ks_model_detokenize", "ids");
    return ks_tokenizer_decode(m->tok, ids, n, buf, cap, n_out);
}

KS_API bool
ks_model_token_is_eog(const ks_model *m, int32_t id)
{
    if (!m)
        return false;
    return ks_tokenizer_is_eog(m->tok, id);
}

KS_API ks_status
ks_model_chat_format(const ks_model *m, const ks_chat_message *msgs,
                     size_t n, bool add_generation_prompt, char *buf,
                     size_t cap, size_t *n_out)
{
    ks_status st = ks_chat_check_args("ks_model_chat_format", m, msgs, n, n_out);

    if (st != KS_OK)
        return st;
    /* ks_chat_message and ks_chat_msg have the same layout by design. */
    return ks_chat_format((ks_chat_family)m->chat_family,
                          (const ks_chat_msg *)msgs, n,
                          add_generation_prompt, m->default_system, buf, cap,
                          n_out);
}

/* ---- sessions ---- */

/* Starts the governor when the runtime asks for limits or the device has a
 * temperature sensor with a passive trip point; otherwise there is nothing
 * to keep the device under and decoding runs free. */
static ks_status
start_governor(ks_session *s)
{
    const ks_runtime *rt = s->m->rt;
    const ks_telem_sample *last;
    ks_governor_params gp = { 0 };
    ks_status st;
    bool limits = rt->temp_limit_c > 0 || rt->power_limit_w > 0;

    if (rt->no_governor)
        return KS_OK;
    if ((st = ks_telemetry_open(NULL, &s->tel)) != KS_OK)
        return st;
    last = ks_telemetry_last(s->tel);
    if (!limits && (!last || last->passive_zone < 0)) {
        ks_log(KS_LOG_DEBUG, "gov", "no limit set and no passive trip "
               "point: governor off");
        ks_telemetry_destroy(s->tel);
        s->tel = NULL;
        return KS_OK;
    }
    gp.temp_limit_mc = (int32_t)(rt->temp_limit_c * 1000.0f);
    gp.power_limit_mw = (uint32_t)(rt->power_limit_w * 1000.0f);
    gp.policy = (ks_gov_policy)rt->policy;
    gp.max_threads = s->max_threads;
    if ((st = ks_governor_create(&gp, &s->gov)) != KS_OK)
        return st;
    ks_log(KS_LOG_INFO, "gov", "governor on: limit %.1f C, power cap %.1f W, "
           "policy %s", rt->temp_limit_c, rt->power_limit_w,
           ks_gov_policy_str(gp.policy));
    return KS_OK;
}

/* One governor step after a decoded token: the thread count for the next
 * token, then the pause it asks for (cut short by the cancel flag). */
/* Nanoseconds the session's device targets have been busy, in all. */
static uint64_t
accel_busy_ns(const ks_session *s)
{
    uint64_t ns = 0;

    for (uint32_t i = 0; i < s->n_targets; i++) {
        ks_target_stats ts = { 0 };
        if (s->targets[i]->accel && s->targets[i]->ops->stats) {
            s->targets[i]->ops->stats(s->targets[i], &ts);
            ns += ts.busy_ns;
        }
    }
    return ns;
}

/* The governor may move layers only where the user left placement to
 * Kestrel (no backend cpu, --split or --gpu-layers), after no device
 * fault, and at most once in MOVE_GAP_NS. */
#define MOVE_GAP_NS (20ull * 1000000000ull)

static void
movable(const ks_session *s, uint64_t now, ks_gov_work *w)
{
    const ks_runtime *rt = s->m->rt;
    const ks_target_kind *vk = ks_target_kind_find("vulkan");
    uint32_t k;
    const char *dev;

    if (rt->backend == KS_BACKEND_CPU || rt->split || rt->gpu_layers > 0 ||
        s->n_layers < s->m->hp.n_layers ||
        s->stats.n_fallbacks > 0 || !split_point(s, &k, &dev) ||
        (s->last_move_ns && now - s->last_move_ns < MOVE_GAP_NS))
        return;
    w->can_move_to_cpu = dev != NULL;
    w->can_move_to_gpu = k > 0 && (dev || (vk && s->kv_type == KS_KV_F16 &&
                                          (!vk->auto_skip || rt->device >= 0)));
}

/* Calls the headroom callback when the headroom crossed its threshold
 * since the previous control period (with a little hysteresis). */
static void
notify_headroom(ks_session *s)
{
    double h;
    int side;

    if (!s->headroom_fn)
        return;
    h = ks_governor_headroom(s->gov, s->headroom_forecast_s);
    if (isnan(h))
        return;
    /* Down again only 0.02 under the threshold: a forecast that sits on
     * it would call back every period. */
    side = s->headroom_side == 1 ? h >= s->headroom_threshold - 0.02
                                 : h >= s->headroom_threshold;
    if (side != s->headroom_side && (s->headroom_side >= 0 || side))
        s->headroom_fn(s->headroom_user, h);
    s->headroom_side = side;
}

KS_API double
ks_thermal_forecast_c(const ks_session *s, double forecast_s)
{
    if (!s || !s->gov || !(forecast_s >= 0) || !isfinite(forecast_s))
        return NAN;
    return ks_governor_forecast_c(s->gov, forecast_s);
}

KS_API double
ks_thermal_headroom(const ks_session *s, double forecast_s)
{
    if (!s || !s->gov || !(forecast_s >= 0) || !isfinite(forecast_s))
        return NAN;
    return ks_governor_headroom(s->gov, forecast_s);
}

KS_API ks_status
ks_thermal_headroom_notify(ks_session *s, double threshold, double forecast_s,
                           ks_headroom_fn fn, void *user)
{
    if (!s)
        return ks_null_arg("ks_thermal_headroom_notify", "s");
    if (!(threshold >= 0 && threshold <= 1))
        return ks_error(KS_ERR_INVALID_ARG, "headroom: threshold %g is outside 0..1", threshold);
    if (!(forecast_s >= 0 && forecast_s <= 600))
        return ks_error(KS_ERR_INVALID_ARG, "headroom: forecast_s %g is outside 0..600 s",
                        forecast_s);
    s->headroom_fn = fn;
    s->headroom_user = user;
    s->headroom_threshold = threshold;
    s->headroom_forecast_s = forecast_s;
    s->headroom_side = -1;
    return KS_OK;
}

/* One governor step after a decoded token that took |busy_ns| in all:
 * the device's share goes to the GPU actor, the rest to the CPU. Then
 * the thread count for the next token, a move of layers when the
 * governor asks for one, and the pause it asks for (cut short by the
 * cancel flag). */
static void
govern_n(ks_session *s, uint64_t busy_ns, uint32_t n_tokens, const volatile int *cancel)
{
    ks_gov_work w = { 0 };
    ks_gov_decision d;
    uint64_t now = ks_now_ns(), gpu = accel_busy_ns(s);
    uint64_t gpu_ns = gpu - s->gpu_busy_seen < busy_ns ? gpu - s->gpu_busy_seen : busy_ns;

    s->gpu_busy_seen = gpu;
    w.n_tokens = n_tokens;
    w.busy_ns[KS_GOV_CPU] = busy_ns - gpu_ns;
    w.busy_ns[KS_GOV_GPU] = gpu_ns;
    w.n_threads = s->n_threads;
    w.placement_gen = s->placement_gen;
    movable(s, now, &w);
    if (ks_governor_step_telemetry(s->gov, s->tel, now, &w, &d) != KS_OK)
        return;
    if (d.n_threads >= 1 && d.n_threads <= s->max_threads)
        s->n_threads = d.n_threads;
    s->stats.n_threads = s->n_threads;
    if (d.updated) {
        s->stats.tokens_per_j = d.tokens_per_j;
        s->stats.energy_measured = !(d.flags & KS_GOV_F_NO_POWER);
        notify_headroom(s);
    }
    if (d.place != KS_GOV_PLACE_STAY && (d.place == KS_GOV_PLACE_TO_GPU ? w.can_move_to_gpu
                                                                      : w.can_move_to_cpu)) {
        s->last_move_ns = now;
        if (ks_session_move(s, d.place) != KS_OK)
            ks_log(KS_LOG_INFO, "placement", "governor asked %s: %s",
                   ks_gov_place_str(d.place), ks_last_error());
        s->gpu_busy_seen = accel_busy_ns(s);
    }
    if (s->trace)
        ks_trace_token(s->trace, now, &d);
    if (d.pace_ns > 0) {
        uint64_t end = now + d.pace_ns;
        while (!(cancel && *cancel)) {
            uint64_t t = ks_now_ns(), left;
            struct timespec ts;
            if (t >= end)
                break;
            left = end - t < 20000000u ? end - t : 20000000u;
            ts.tv_sec = 0;
            ts.tv_nsec = (long)left;
            nanosleep(&ts, NULL);
        }
        s->stats.paced_ms += (double)(ks_now_ns() - now) / 1e6;
        /* an idle reading lets an instantaneous power sensor tell idle
         * from working power */
        ks_governor_step_telemetry(s->gov, s->tel, ks_now_ns(), NULL, &d);
    }
}

/* A decoded token (speculation: a round's tokens, govern_n). */
static void
govern(ks_session *s, uint64_t busy_ns, const volatile int *cancel)
{
    govern_n(s, busy_ns, 1, cancel);
}

KS_API ks_status
ks_session_create(ks_model *m, const ks_session_params *p, ks_session **out)
{
    ks_session_params def = { 0 };
    const ks_hparams *hp;
    ks_session *s;
    ks_status st;

    if (!out)
        return ks_null_arg("ks_session_create", "out");
    *out = NULL;
    if (!m)
        return ks_null_arg("ks_session_create", "m");
    if (m->vocab_only)
        return ks_error(KS_ERR_INVALID_ARG, "session: %s was loaded "
                        "vocab-only (ks_model_params.vocab_only): it has a "
                        "tokenizer but no weights to run", m->name);
    if (!p)
        p = &def;
    hp = &m->hp;
    if (p->kv_type != KS_KV_F16 && p->kv_type != KS_KV_F32)
        return ks_error(KS_ERR_INVALID_ARG, "session: unknown KV type %d",
                        (int)p->kv_type);
    if (p->n_threads < 0 || p->n_threads > 1024)
        return ks_error(KS_ERR_INVALID_ARG,
                        "session: %d threads asked, expected 1..1024",
                        p->n_threads);
    s = calloc(1, sizeof(*s));
    if (!s)
        return ks_error(KS_ERR_NOMEM, "session: no memory");
    s->m = m;
    s->n_ctx = p->n_ctx ? p->n_ctx
                        : (hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096);
    s->n_batch = p->n_batch ? p->n_batch : 512;
    if (s->n_batch > s->n_ctx)
        s->n_batch = s->n_ctx;
    if (s->n_ctx > (1u << 24) || s->n_batch > 8192) {
        st = ks_error(KS_ERR_INVALID_ARG,
                      "session: context %u / batch %u too large (at most "
                      "16M and 8192)", s->n_ctx, s->n_batch);
        goto fail;
    }
    s->kv_type = p->kv_type;
    s->n_layers = p->n_layers ? p->n_layers : hp->n_layers;
    if (s->n_layers > hp->n_layers) {
        st = ks_error(KS_ERR_INVALID_ARG, "session: %u layers asked (n_layers), the model "
                      "%s has %u", p->n_layers, m->name, hp->n_layers);
        goto fail;
    }
    {
        const char *chk = getenv("KESTREL_CHECK");
        s->check_layers = chk && *chk && strcmp(chk, "0") != 0;
    }
    s->n_threads = p->n_threads ? p->n_threads : m->rt->n_threads;
    s->max_threads = s->n_threads;
    if ((st = start_governor(s)) != KS_OK)
        goto fail;
    if (p->trace_path && (st = ks_trace_open(p->trace_path, &s->trace)) != KS_OK)
        goto fail;
    if (p->profile && (st = ks_profile_create(hp->n_layers, &s->profile)) != KS_OK)
        goto fail;

    s->x = calloc((uint64_t)s->n_batch * hp->n_embd, sizeof(float));
    s->logits = calloc(hp->n_vocab, sizeof(float));
    s->hist = calloc(s->n_ctx, sizeof(*s->hist));
    s->batch_start = calloc(s->n_ctx, 1);
    if (!s->x || !s->logits || !s->hist || !s->batch_start) {
        st = ks_error(KS_ERR_NOMEM, "session: no memory for activations");
        goto fail;
    }
    if ((st = start_backend(s)) != KS_OK)
        goto fail;
    ks_trace_set_layers(s->trace, s->plan);
    s->stats.load_ms = m->load_ms;
    ks_log(KS_LOG_DEBUG, "session",
           "context %u, batch %u, KV %s %.1f MiB, %d threads", s->n_ctx,
           s->n_batch, s->kv_type == KS_KV_F16 ? "f16" : "f32",
           (double)s->stats.kv_bytes / 1048576.0, s->n_threads);
    *out = s;
    return KS_OK;
fail:
    ks_session_destroy(s);
    return st;
}

KS_API void
ks_session_destroy(ks_session *s)
{
    if (!s)
        return;
    if (s->trace)
        ks_trace_close(s->trace);
    drop_targets(s);
    ks_profile_destroy(s->profile);
    ks_governor_destroy(s->gov);
    ks_telemetry_destroy(s->tel);
    free(s->x);
    free(s->logits);
    free(s->hist);
    free(s->batch_start);
    free(s);
}

KS_API ks_status
ks_session_profile(const ks_session *s, ks_profile_row *rows, size_t *n)
{
    const ks_profile *p;
    size_t k = 0;

    if (!s)
        return ks_null_arg("ks_session_profile", "s");
    if (!n)
        return ks_null_arg("ks_session_profile", "n");
    p = s->profile;
    for (uint32_t kind = 0; p && kind < KS_PROF_MAX_KINDS && p->kind[kind][0]; kind++) {
        for (int64_t l = 0; l <= (int64_t)p->n_layers; l++) {
            int32_t layer = l == p->n_layers ? -1 : (int32_t)l;
            for (int op = 0; op < KS_PROF_N_OPS; op++) {
                const ks_prof_cell *c = ks_profile_cell(p, kind, (ks_prof_op)op, layer);
                if (!c->calls)
                    continue;
                if (rows && k == *n)
                    goto done;
                if (rows) {
                    ks_profile_row *r = &rows[k];
                    snprintf(r->target, sizeof r->target, "%s", p->kind[kind]);
                    r->op = ks_prof_op_name((ks_prof_op)op);
                    r->layer = layer;
                    r->calls = c->calls;
                    r->ns = c->ns;
                    r->bytes = c->bytes;
                }
                k++;
            }
        }
    }
done:
    *n = k;
    return KS_OK;
}

KS_API void
ks_session_profile_reset(ks_session *s)
{
    if (s)
        ks_profile_reset(s->profile);
}

KS_API uint32_t
ks_session_n_past(const ks_session *s)
{
    if (!s)
        return 0;
    return s->n_past;
}

KS_API uint32_t
ks_session_n_ctx(const ks_session *s)
{
    if (!s)
        return 0;
    return s->n_ctx;
}

KS_API ks_status
ks_session_truncate(ks_session *s, uint32_t n_past)
{
    if (!s)
        return ks_null_arg("ks_session_truncate", "s");
    if (n_past > s->n_past)
        return ks_error(KS_ERR_INVALID_ARG,
                        "session: cannot truncate to %u, only %u tokens "
                        "held", n_past, s->n_past);
    if (n_past == s->n_past)
        return KS_OK;
    /* Positions past n_past are simply overwritten by later tokens; the
     * logits were those of a token no longer held. */
    s->n_past = n_past;
    if (s->n_kv > n_past)
        s->n_kv = n_past;
    s->logits_ok = false;
    return KS_OK;
}

/* Appends tokens to the held sequence; the targets run them at the next
 * ks_forward_sync. Nothing is appended when one is outside the
 * vocabulary or they do not fit. */
static ks_status
hold(ks_session *s, const int32_t *tokens, size_t n)
{
    if ((uint64_t)s->n_past + n > s->n_ctx)
        return ks_error(KS_ERR_CONTEXT_FULL,
                        "context full: %u tokens held and %zu more do not "
                        "fit in a context of %u (use a larger -c)",
                        s->n_past, n, s->n_ctx);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= s->m->hp.n_vocab)
            return ks_error(KS_ERR_INVALID_ARG,
                            "session: token id %d (at %zu) is outside the "
                            "vocabulary (0..%u)", tokens[i], i,
                            s->m->hp.n_vocab - 1);
    if (n > 0) {
        memcpy(s->hist + s->n_past, tokens, n * sizeof(*tokens));
        s->n_past += (uint32_t)n;
        s->logits_ok = false;
    }
    return KS_OK;
}

/* Makes s->logits those of the last held token: runs what the targets
 * lack, or runs the last token again when its logits were lost to a
 * truncate. */
static ks_status
need_logits(ks_session *s, const volatile int *cancel)
{
    if (s->logits_ok)
        return KS_OK;
    if (s->n_past == 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "session: no tokens held, so no logits to sample "
                        "from");
    if (s->n_kv == s->n_past)
        s->n_kv--;
    return ks_forward_sync(s, cancel);
}

KS_API ks_status
ks_session_eval(ks_session *s, const int32_t *tokens, size_t n,
                float *logits)
{
    ks_status st;

    if (!s)
        return ks_null_arg("ks_session_eval", "s");
    if (!tokens && n)
        return ks_null_arg("ks_session_eval", "tokens");
    if (n == 0)
        return ks_error(KS_ERR_INVALID_ARG, "session: no tokens to evaluate");
    if ((st = hold(s, tokens, n)) != KS_OK)
        return st;
    if ((st = ks_forward_sync(s, NULL)) != KS_OK)
        return st;
    if (logits)
        memcpy(logits, s->logits, s->m->hp.n_vocab * sizeof(float));
    return KS_OK;
}

KS_API const char *
ks_session_eval_all_unsupported(const ks_session *s)
{
    if (!s)
        return "no session";
    for (uint32_t i = 0; i < s->n_targets; i++)
        if (s->targets[i]->head && !s->targets[i]->ops->run_logits)
            return "the target with the output head cannot give the logits of every "
                   "token of a run (only the CPU target can today)";
    return NULL;
}

KS_API ks_status
ks_session_eval_all(ks_session *s, const int32_t *tokens, size_t n, float *logits)
{
    const char *why;
    uint32_t first;
    ks_status st;

    if (!s)
        return ks_null_arg("ks_session_eval_all", "s");
    if (!tokens && n)
        return ks_null_arg("ks_session_eval_all", "tokens");
    if (!logits)
        return ks_null_arg("ks_session_eval_all", "logits");
    if (n == 0)
        return ks_error(KS_ERR_INVALID_ARG, "session: no tokens to evaluate");
    if ((why = ks_session_eval_all_unsupported(s)) != NULL)
        return ks_error(KS_ERR_UNSUPPORTED, "eval_all on placement %s: %s", s->plan, why);
    first = s->n_past;
    if ((st = hold(s, tokens, n)) != KS_OK)
        return st;
    return ks_forward_sync_all(s, first, logits, NULL);
}

static ks_sampler_params
sampler_params(const ks_sampling *p)
{
    ks_sampler_params sp = { 0 };

    sp.temp = p->temp;
    sp.top_k = p->top_k;
    sp.top_p = p->top_p;
    sp.min_p = p->min_p;
    sp.repeat_penalty = p->repeat_penalty;
    sp.repeat_last_n = p->repeat_last_n;
    sp.seed = p->seed;
    return sp;
}

static bool
cancelled(const ks_generate_params *p)
{
    return p->cancel && *p->cancel;
}

KS_API const char *
ks_stop_name(ks_stop stop)
{
    static const char *const names[] = { "none", "eog", "length", "callback", "context",
                                         "cancelled", "error" };
    return (unsigned)stop < sizeof names / sizeof names[0] ? names[stop] : "unknown";
}

/* The stop reason a status ends generation with, when no rule of the
 * loop itself stopped it. */
static ks_stop
stop_of(ks_status st)
{
    return st == KS_OK ? KS_STOP_NONE : st == KS_ERR_CONTEXT_FULL ? KS_STOP_CONTEXT :
           st == KS_ERR_CANCELLED ? KS_STOP_CANCELLED : KS_STOP_ERROR;
}

/* Logits that are not numbers mean broken weights or a broken kernel;
 * sampling from them would give token 0 forever. */
static ks_status
check_logits(const ks_session *s, const float *l)
{
    uint32_t n = s->m->hp.n_vocab;
    float sum = 0.0f;

    for (uint32_t i = 0; i < n; i++)
        sum += l[i] * 0.0f;  /* stays 0 unless some logit is NaN or Inf */
    if (sum == 0.0f)
        return KS_OK;
    for (uint32_t i = 0; i < n; i++)
        if (!isfinite(l[i]))
            return ks_error(KS_ERR_CORRUPT,
                            "generate: logit %u after token %u is %s: the model's "
                            "weights or a kernel produced it (KESTREL_CHECK=1 "
                            "names the first layer)", i, s->n_past - 1,
                            isnan(l[i]) ? "NaN" : "infinite");
    return KS_OK;
}

KS_API const char *
ks_spec_name(ks_spec_mode m)
{
    static const char *const names[] = { "auto", "off", "draft", "lookup", "self" };
    return (unsigned)m < sizeof names / sizeof names[0] ? names[m] : "unknown";
}

KS_API bool
ks_spec_parse(const char *name, ks_spec_mode *out)
{
    for (int m = KS_SPEC_AUTO; m <= KS_SPEC_SELF; m++)
        if (name && out && strcmp(name, ks_spec_name((ks_spec_mode)m)) == 0) {
            *out = (ks_spec_mode)m;
            return true;
        }
    return false;
}

/* ---- speculative decoding ---- */

/* What the draft length is chosen from: the acceptance rate per drafted
 * token (decayed counts), the time of one draft step, and the time of a
 * verifying pass as a line in the number of drafted tokens, tv(k) = A +
 * B k (decayed least squares over the rounds). */
typedef struct spec_ctl {
    double acc_hit, acc_try;   /* drafted tokens accepted / tried */
    double td_ms;              /* one draft step; < 0: none measured */
    double w, sk, skk, st, skt;/* the fit of tv(k) */
    double rate[2];            /* tokens per ms of whole rounds (draft,
                                  catch-up and verify) without and with
                                  drafts; 0: none measured */
    uint32_t rounds;
    uint32_t explore;          /* rounds between drafting rounds while
                                  drafting loses: 16, doubling up to 512 */
} spec_ctl;

static void
spec_ctl_init(spec_ctl *c)
{
    memset(c, 0, sizeof(*c));
    c->acc_hit = 3.0;  /* a prior of 60 % that the first rounds outweigh */
    c->acc_try = 5.0;
    c->td_ms = -1.0;
    c->explore = 16;
}

static void
spec_ctl_verify(spec_ctl *c, uint32_t k, double ms)
{
    const double decay = 0.9;

    c->w = c->w * decay + 1.0;
    c->sk = c->sk * decay + k;
    c->skk = c->skk * decay + (double)k * k;
    c->st = c->st * decay + ms;
    c->skt = c->skt * decay + k * ms;
}

static void
spec_ctl_accept(spec_ctl *c, uint32_t drafted, uint32_t accepted)
{
    const double decay = 0.95;

    if (drafted == 0)
        return;
    c->acc_hit = c->acc_hit * decay + accepted;
    c->acc_try = c->acc_try * decay + accepted + (accepted < drafted ? 1 : 0);
}

/* The verifying pass's time as A + B k (ms), from the rounds so far. */
static void
spec_fit(const spec_ctl *c, double *A, double *B)
{
    double den = c->w * c->skk - c->sk * c->sk;

    if (den > 1e-6 * c->w * c->w) {
        *B = (c->w * c->skt - c->sk * c->st) / den;
        *A = (c->st - *B * c->sk) / c->w;
    } else {  /* one length seen so far: assume a row costs 8 % of a pass */
        double kbar = c->sk / c->w;
        *A = c->st / c->w / (1.0 + 0.08 * kbar);
        *B = 0.08 * *A;
    }
    if (*A <= 1e-6)
        *A = 1e-6;
    if (*B < 0.0)
        *B = 0.0;
}

/* With a draft model, prompt lookup drafts first (it costs nothing but
 * the verifying rows): the longest run of n tokens, n in [lk_min, k],
 * whose expected tokens per ms beat plain decoding's by min_gain, with
 * the acceptance lookup drafts have had (lk_hit / lk_try). 0: use the
 * draft model. */
static uint32_t
spec_lookup_k(const spec_ctl *c, double lk_hit, double lk_try, uint32_t n, double min_gain)
{
    double a = lk_hit / lk_try, A, B, best_rate;
    uint32_t best = 0;

    if (c->w <= 0.0)
        return n;  /* nothing measured yet */
    spec_fit(c, &A, &B);
    if (a > 0.999)
        a = 0.999;
    best_rate = min_gain / A;
    for (uint32_t k = 1; k <= n; k++) {
        double rate = (1.0 - pow(a, k + 1)) / (1.0 - a) / (A + B * k);
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    return best;
}

/* The draft length with the most expected tokens per millisecond: with
 * acceptance a, k drafted tokens give (1 - a^(k+1)) / (1 - a) tokens for
 * k draft steps and one pass of k + 1 rows. 0 when drafting does not pay
 * (then every 16th round drafts one token, to keep measuring). */
static uint32_t
spec_choose_k(spec_ctl *c, uint32_t kmax, double min_gain)
{
    double a = c->acc_hit / c->acc_try, A, B, best_rate;
    double td = c->td_ms > 0 ? c->td_ms : 0.0;
    uint32_t best = 0;

    c->rounds++;
    if (!(min_gain < INFINITY))
        return 0;
    if (c->w <= 0.0 || c->td_ms < 0)
        return kmax < 4 ? kmax : 4;   /* nothing measured yet */
    spec_fit(c, &A, &B);
    if (a > 0.999)
        a = 0.999;
    /* under a limit, drafting must beat plain decoding by min_gain
     * (spec_sample.h: ks_spec_min_gain) */
    best_rate = min_gain / A;
    for (uint32_t k = 1; k <= kmax; k++) {
        double e = (1.0 - pow(a, k + 1)) / (1.0 - a);
        double rate = e / (k * td + A + B * k);
        if (rate > best_rate) {
            best_rate = rate;
            best = k;
        }
    }
    /* the model leaves costs out (the draft catching up, caches): when
     * rounds with drafts have given fewer tokens per ms than rounds
     * without, draft only every c->explore rounds, to keep measuring, and
     * less often each time it still loses */
    bool losing = c->rate[0] > 0 && c->rate[1] > 0 && c->rate[1] < c->rate[0];
    bool explore_now = c->rounds % c->explore == 0 && min_gain <= KS_SPEC_EXPLORE_GAIN;
    if (!losing)
        c->explore = 16;
    else if (explore_now && c->explore < 512)
        c->explore *= 2;
    if (best > 0 && losing && !explore_now)
        best = 0;
    if (best == 0 && kmax > 0 && explore_now)
        best = 1;
    return best;
}

/* A whole round's tokens per ms, with (1) or without (0) drafts. */
static void
spec_ctl_round(spec_ctl *c, bool drafted, uint32_t tokens, uint64_t ns)
{
    double r = ns ? tokens * 1e6 / (double)ns : 0.0;

    if (ns == 0)
        return;
    c->rate[drafted] = c->rate[drafted] > 0 ? 0.8 * c->rate[drafted] + 0.2 * r : r;
}

/* Makes the draft session hold what the target holds: it keeps the
 * common prefix (its KV cache for those stays) and holds the rest. */
static ks_status
draft_follow(ks_session *d, const ks_session *s)
{
    uint32_t c = 0;
    ks_status st;

    while (c < d->n_past && c < s->n_past && d->hist[c] == s->hist[c])
        c++;
    if ((st = ks_session_truncate(d, c)) != KS_OK)
        return st;
    return hold(d, s->hist + c, s->n_past - c);
}

/* Up to k greedy tokens of the draft model, stopping early when its top
 * probability falls below p_min; the last drafted token stays unrun. */
static ks_status
draft_model(ks_session *d, uint32_t k, float p_min, int32_t *out, uint32_t *n_out,
            const volatile int *cancel)
{
    uint32_t V = d->m->hp.n_vocab;
    ks_status st;

    *n_out = 0;
    for (uint32_t j = 0; j < k && d->n_past < d->n_ctx; j++) {
        const float *l;
        uint32_t top = 0;
        double sum = 0.0;

        if ((st = need_logits(d, cancel)) != KS_OK)
            return st;
        l = d->logits;
        for (uint32_t i = 1; i < V; i++)
            if (l[i] > l[top])
                top = i;
        for (uint32_t i = 0; i < V; i++)
            sum += exp((double)l[i] - l[top]);
        if (!(1.0 / sum >= p_min))
            break;
        out[j] = (int32_t)top;
        if ((st = hold(d, out + j, 1)) != KS_OK)
            return st;
        *n_out = j + 1;
    }
    return KS_OK;
}

/* Sampled speculation: up to k tokens drawn from the draft's distribution
 * after the sampler chain of |dsmp| (its penalty history is the draft's
 * held tokens), q[j * n_vocab ..] receiving each one's distribution;
 * stops early when the draft's top probability falls below p_min. */
static ks_status
draft_model_sampled(ks_session *d, ks_sampler *dsmp, uint32_t k, float p_min, int32_t *out,
                    float *q, uint32_t *n_out, const volatile int *cancel)
{
    uint32_t V = d->m->hp.n_vocab;
    ks_status st;

    *n_out = 0;
    ks_sampler_set_history(dsmp, d->hist, d->n_past);
    for (uint32_t j = 0; j < k && d->n_past < d->n_ctx; j++) {
        float *qj = q + (uint64_t)j * V, top = 0.0f;

        if ((st = need_logits(d, cancel)) != KS_OK)
            return st;
        ks_sampler_probs(dsmp, d->logits, qj);
        for (uint32_t i = 0; i < V; i++)
            top = qj[i] > top ? qj[i] : top;
        if (!(top >= p_min))
            break;
        out[j] = ks_spec_draw(dsmp, qj, V);
        ks_sampler_accept(dsmp, out[j]);
        if ((st = hold(d, out + j, 1)) != KS_OK)
            return st;
        *n_out = j + 1;
    }
    return KS_OK;
}

/* Prompt lookup: the k tokens that followed the latest earlier occurrence
 * of the last g held tokens (g = 3, then down to g_min). */
static uint32_t
draft_lookup_min(const int32_t *h, uint32_t n, uint32_t k, uint32_t g_min, int32_t *out)
{
    for (uint32_t g = 3; g >= g_min && g >= 1; g--) {
        if (n < g + 1)
            continue;
        for (int64_t i = (int64_t)n - g - 1; i >= 0; i--) {
            uint32_t c = 0;
            if (memcmp(h + i, h + n - g, g * sizeof(*h)) != 0)
                continue;
            /* past the held tokens the copy reads its own output, as
             * LZ77 does: a recent match repeats its period */
            for (; c < k; c++)
                out[c] = (uint64_t)i + g + c < n ? h[i + g + c] : out[i + g + c - n];
            return c;
        }
    }
    return 0;
}

static uint32_t
draft_lookup(const int32_t *h, uint32_t n, uint32_t k, int32_t *out)
{
    return draft_lookup_min(h, n, k, 1, out);
}

/* Checks the speculation settings before anything runs. */
static ks_status
spec_check(const ks_session *s, const ks_generate_params *p, ks_spec_mode mode)
{
    const char *why;

    if (mode != KS_SPEC_DRAFT && mode != KS_SPEC_LOOKUP && mode != KS_SPEC_SELF)
        return ks_error(KS_ERR_INVALID_ARG, "generate: unknown speculation mode %d",
                        (int)p->spec);
    if (mode == KS_SPEC_SELF && (!p->draft || p->draft->m != s->m ||
                                 p->draft->n_layers >= s->n_layers))
        return ks_error(KS_ERR_INVALID_ARG, "generate: speculation mode self needs a draft "
                        "session on the same model with fewer layers (n_layers)");
    if (mode == KS_SPEC_DRAFT || mode == KS_SPEC_SELF) {
        if (!p->draft)
            return ks_error(KS_ERR_INVALID_ARG, "generate: speculation mode draft "
                            "without a draft session");
        if (p->draft == s)
            return ks_error(KS_ERR_INVALID_ARG, "generate: the draft session is the "
                            "target session itself");
        if (p->draft->m->hp.n_vocab != s->m->hp.n_vocab)
            return ks_error(KS_ERR_INVALID_ARG, "generate: the draft model %s has %u "
                            "tokens in its vocabulary, the target %s %u: they must "
                            "share one", p->draft->m->name, p->draft->m->hp.n_vocab,
                            s->m->name, s->m->hp.n_vocab);
    }
    if ((why = ks_session_eval_all_unsupported(s)) != NULL)
        return ks_error(KS_ERR_UNSUPPORTED, "generate: speculative decoding needs the "
                        "logits of every drafted token, and on placement %s %s; use "
                        "--spec off or --backend cpu", s->plan, why);
    return KS_OK;
}

/* The decode loop of a speculative generate, after the prompt: rounds of
 * draft, verify (one pass of the target over the pending token and the
 * drafts), emit the accepted tokens and the target's own next one. */
/* What one generate call shares between plain and speculative decoding. */
typedef struct gen {
    ks_session         *s;
    ks_generate_params *p;
    ks_sampler         *smp;
    ks_json_mask       *jmask;    /* structured output, or NULL */
    float              *jlogits;  /* [n_vocab] the masked copy */
    uint32_t            n_gen;    /* tokens emitted */
    /* sampled speculation: the row emit samples from had a draft, qx,
     * drawn from q (NULL: drafted without chance); work: n_vocab floats */
    bool                pick;
    const float        *q;
    int32_t             qx;
    float              *work;
} gen;

/* The entropy of softmax(x), in nats: log Z - sum p x, from the largest
 * logit for range. */
static float
entropy_nats(const float *x, uint32_t n)
{
    float mx = x[0];
    double z = 0, px = 0;

    for (uint32_t i = 1; i < n; i++)
        if (x[i] > mx)
            mx = x[i];
    for (uint32_t i = 0; i < n; i++) {
        double e = exp((double)(x[i] - mx));
        z += e;
        px += e * (double)(x[i] - mx);
    }
    return (float)(log(z) - px / z);
}

/* One token from the logits |row| (those after the last held token):
 * sample it and, unless a stop rule ends generation there, hold it and
 * hand it to the caller. *tok is the token emitted, or -1. Returns false
 * when generation stops: *st holds the error, or p->stop the reason. */
static bool
emit(gen *g, const float *row, int32_t *tok, ks_status *st)
{
    ks_session *s = g->s;
    ks_generate_params *p = g->p;
    char piece[256];
    size_t len;
    int32_t t;

    *tok = -1;
    *st = KS_OK;
    if (cancelled(p)) {
        *st = ks_error(KS_ERR_CANCELLED, "generation cancelled");
        return false;
    }
    if ((*st = check_logits(s, row)) != KS_OK)
        return false;
    if (p->out_entropy && p->n_out < p->entropy_cap)
        p->out_entropy[p->n_out] = entropy_nats(row, s->m->hp.n_vocab);
    if (g->jmask) {  /* structured output: sample from the masked copy */
        bool whole;
        if ((*st = ks_json_mask_apply(g->jmask, row, g->jlogits, &whole)) != KS_OK)
            return false;
        if (whole) {
            p->stop = KS_STOP_EOG;
            return false;
        }
        row = g->jlogits;
    }
    {
        uint64_t t0 = ks_now_ns();
        t = g->pick ? ks_spec_pick(g->smp, row, g->q, g->qx, g->work, s->m->hp.n_vocab)
                    : ks_sampler_sample(g->smp, row);
        s->stats.sample_ms += (double)(ks_now_ns() - t0) / 1e6;
    }
    /* with a schema, end-of-generation is sampled only after a whole
     * value, and nothing may follow it: it ends even ignore_eog */
    if ((!p->ignore_eog || g->jmask) && ks_tokenizer_is_eog(s->m->tok, t)) {
        p->stop = KS_STOP_EOG;
        return false;
    }
    if (s->n_past >= s->n_ctx) {
        *st = ks_error(KS_ERR_CONTEXT_FULL, "context full after %u generated tokens "
                       "(context %u; use a larger -c)", g->n_gen, s->n_ctx);
        return false;
    }
    if (g->jmask && (*st = ks_json_mask_accept(g->jmask, t)) != KS_OK)
        return false;
    /* held before it is shown: what the caller saw, the session has */
    ks_sampler_accept(g->smp, t);
    if ((*st = hold(s, &t, 1)) != KS_OK)
        return false;
    *tok = t;
    g->n_gen++;
    if (p->out_tokens && p->n_out < p->out_cap)
        p->out_tokens[p->n_out] = t;
    p->n_out++;
    len = ks_tokenizer_piece(s->m->tok, t, piece, sizeof piece);
    if (p->on_token && !p->on_token(p->user, t, piece, len < sizeof piece ? len : sizeof piece)) {
        p->stop = KS_STOP_CALLBACK;
        return false;
    }
    if (p->n_predict && g->n_gen == p->n_predict) {
        p->stop = KS_STOP_LENGTH;
        return false;
    }
    return true;
}

static ks_status
spec_decode(gen *g, ks_spec_mode mode)
{
    ks_session *s = g->s;
    ks_generate_params *p = g->p;
    uint32_t V = s->m->hp.n_vocab;
    uint32_t kmax = p->draft_max ? p->draft_max : 8, kmin = p->draft_min;
    float p_min = p->draft_p_min == 0.0f ? 0.5f : p->draft_p_min;
    float *rows = NULL, *qrows = NULL, *work = NULL;
    int32_t *drafts = NULL;
    ks_sampler *dsmp = NULL;  /* the draft's sampler, sampled speculation */
    bool sampled = p->sampling.temp > 0.0f;
    const float *lg = s->logits;
    uint32_t nd = 0, P = s->n_past;
    uint64_t round_t0 = 0, round_ns = 0;
    bool draft_ok = true, looked = false;  /* looked: this round's drafts are lookup's */
    double lk_hit = 3.0, lk_try = 5.0;     /* lookup's acceptance, as ctl's */
    spec_ctl ctl;
    ks_status st = KS_OK;

    if (kmax > 64)
        kmax = 64;
    if (kmin > kmax)
        kmin = kmax;
    rows = malloc((uint64_t)(kmax + 1) * V * sizeof(float));
    drafts = malloc((kmax + 1) * sizeof(*drafts));
    if (sampled) {
        ks_sampler_params dp = sampler_params(&p->sampling);

        dp.seed ^= 0x9e3779b97f4a7c15u;  /* draws of its own */
        work = malloc((uint64_t)V * sizeof(float));
        qrows = mode == KS_SPEC_DRAFT ? malloc((uint64_t)kmax * V * sizeof(float)) : NULL;
        if (!work || (mode == KS_SPEC_DRAFT && !qrows)) {
            st = ks_error(KS_ERR_NOMEM, "generate: no memory for %u draft distributions",
                          kmax);
            goto out;
        }
        if (mode == KS_SPEC_DRAFT && (st = ks_sampler_create(&dp, V, &dsmp)) != KS_OK)
            goto out;
        g->work = work;
    }
    if (!rows || !drafts) {
        st = ks_error(KS_ERR_NOMEM, "generate: no memory for %u rows of logits", kmax + 1);
        goto out;
    }
    spec_ctl_init(&ctl);
    /* the first token comes from the prompt's logits: a round with no
     * drafts, whose row 0 follows hist[P - 1] */
    for (;;) {
        uint32_t m = 0, e = 0;
        bool stop = false;

        /* emit: row j follows hist[P - 1 + j]; drafts[j] sits at P + j,
         * where the emitted tokens overwrite them */
        s->n_past = P;
        for (uint32_t j = 0; j <= nd; j++) {
            int32_t tok;
            bool go;

            g->pick = sampled && j < nd;
            g->q = qrows && !looked ? qrows + (uint64_t)j * V : NULL;
            g->qx = j < nd ? drafts[j] : -1;
            go = emit(g, lg + (uint64_t)j * V, &tok, &st);
            g->pick = false;

            if (tok >= 0) {
                e = j + 1;
                if (j < nd && tok == drafts[j] && m == j)
                    m = j + 1;
            }
            if (!go) {
                stop = true;
                break;
            }
            if (j < nd && tok != drafts[j])
                break;
        }
        /* hold exactly the emitted tokens; the KV cache is right for the
         * pending token and the drafts that matched */
        s->n_past = P + e;
        if (s->n_kv > P + m)
            s->n_kv = P + m;
        if (s->n_kv > s->n_past)
            s->n_kv = s->n_past;
        s->logits_ok = false;
        s->stats.n_accepted += m;
        if (looked) {
            lk_hit = lk_hit * 0.95 + m;
            lk_try = lk_try * 0.95 + m + (m < nd ? 1 : 0);
        } else {
            spec_ctl_accept(&ctl, nd, m);
        }
        if (!stop && !looked)  /* lookup's rounds say nothing of the draft's */
            spec_ctl_round(&ctl, nd > 0, e, round_ns);
        /* the governor sees the round: its tokens and its busy time,
         * drafting and verifying */
        if (s->gov && round_ns && e > 0)
            govern_n(s, round_ns, e, p->cancel);
        if (stop || e == 0)
            break;

        /* draft: the held tokens end with the one just emitted, not run */
        P = s->n_past;
        nd = 0;
        looked = false;
        {
            const ks_gov_decision *gd = s->gov ? ks_governor_last(s->gov) : NULL;
            uint32_t k = spec_choose_k(&ctl, kmax,
                                       ks_spec_min_gain(gd ? (int)gd->state_id : -1));
            uint64_t t0 = ks_now_ns(), t_follow = 0;
            round_t0 = t0;
            if (k < kmin)
                k = kmin;
            /* the governor may have moved the head to a target that
             * cannot verify: decode plainly there */
            if (ks_session_eval_all_unsupported(s))
                k = 0;
            if (k > s->n_ctx - P)
                k = s->n_ctx - P;
            if (kmin < kmax && !ks_session_eval_all_unsupported(s)) {
                /* lookup first, with a match of 2 or more tokens and a
                 * length from lookup's own acceptance (not with a fixed
                 * length: that measures the draft model, or lookup
                 * below) */
                uint32_t kl = kmax < s->n_ctx - P ? kmax : s->n_ctx - P;
                uint32_t n = draft_lookup_min(s->hist, P, kl, 2, drafts);
                const ks_gov_decision *gd2 = s->gov ? ks_governor_last(s->gov) : NULL;

                n = n ? spec_lookup_k(&ctl, lk_hit, lk_try, n,
                                      ks_spec_min_gain(gd2 ? (int)gd2->state_id : -1)) : 0;
                if (n > 0) {
                    nd = n;
                    looked = true;
                    s->stats.n_lookup += n;
                }
            }
            if (looked) {
                /* drafted by lookup: nothing from the draft model */
            } else if (mode == KS_SPEC_LOOKUP) {
                if (k > 0 && kmin == kmax) {
                    nd = draft_lookup(s->hist, P, k, drafts);
                    s->stats.n_lookup += nd;
                }
            } else if (k > 0 && draft_ok) {
                /* catching up after rounds without drafting is not a
                 * cost of drafting every round: td leaves it out */
                st = draft_follow(p->draft, s);
                if (st == KS_OK && p->draft->n_kv + 1 < p->draft->n_past) {
                    ks_session *d = p->draft;  /* all but the last held */
                    d->n_past--;
                    st = ks_forward_sync(d, p->cancel);
                    d->n_past++;
                    d->logits_ok = false;
                }
                t_follow = ks_now_ns();
                if (st == KS_OK && dsmp)
                    st = draft_model_sampled(p->draft, dsmp, k, p_min, drafts, qrows, &nd,
                                             p->cancel);
                else if (st == KS_OK)
                    st = draft_model(p->draft, k, p_min, drafts, &nd, p->cancel);
                if (st == KS_ERR_CONTEXT_FULL) {  /* the draft's context ended */
                    draft_ok = false;
                    nd = 0;
                    st = KS_OK;
                }
                if (st != KS_OK)
                    break;
            }
            s->stats.draft_ms += (double)(ks_now_ns() - t0) / 1e6;
            if (nd > 0 && !looked) {
                double ms = (double)(ks_now_ns() - (t_follow ? t_follow : t0)) / 1e6;
                ctl.td_ms = ctl.td_ms < 0 ? ms / nd : 0.8 * ctl.td_ms + 0.2 * ms / nd;
            } else if (ctl.td_ms < 0 && mode == KS_SPEC_LOOKUP) {
                ctl.td_ms = 0.0;
            }
        }
        s->stats.n_drafted += nd;

        /* verify: the pending token and the drafts in one pass */
        {
            uint64_t t0 = ks_now_ns(), dt;
            memcpy(s->hist + P, drafts, nd * sizeof(*drafts));
            s->n_past = P + nd;
            s->logits_ok = false;
            st = ks_forward_sync_all(s, P - 1, rows, p->cancel);
            dt = ks_now_ns() - t0;
            s->stats.verify_ms += (double)dt / 1e6;
            s->stats.n_verify++;
            if (st != KS_OK) {  /* the drafts were never emitted */
                s->n_past = P;
                if (s->n_kv > P)
                    s->n_kv = P;
                s->logits_ok = false;
                break;
            }
            spec_ctl_verify(&ctl, nd, (double)dt / 1e6);
            round_ns = ks_now_ns() - round_t0;
            lg = rows;
        }
    }
out:
    g->work = NULL;
    ks_sampler_destroy(dsmp);
    free(work);
    free(qrows);
    free(rows);
    free(drafts);
    return st;
}

KS_API ks_status
ks_session_generate(ks_session *s, ks_generate_params *p)
{
    ks_sampler_params sp;
    ks_sampler *smp = NULL;
    ks_json_schema *jschema = NULL;  /* structured output (json_schema) */
    ks_json_mask *jmask = NULL;
    float *jlogits = NULL;
    ks_spec_mode spec;
    ks_status st = KS_OK;
    uint64_t t0, t1 = 0;
    gen g = { .s = s, .p = p };

    if (!p)
        return ks_null_arg("ks_session_generate", "p");
    p->n_out = 0;
    p->stop = KS_STOP_NONE;
    if (!s)
        return ks_null_arg("ks_session_generate", "s");
    if (!p->prompt && p->n_prompt)
        return ks_null_arg("ks_session_generate", "p->prompt");
    if (p->verify_url)
        return ks_remote_generate(s, p);   /* runtime/remote.c */
    {
        /* per-generate figures start again; the session's own stay */
        ks_stats keep = s->stats;
        memset(&s->stats, 0, sizeof(s->stats));
        s->stats.kv_bytes = keep.kv_bytes;
        s->stats.load_ms = s->m->load_ms;
        s->stats.n_threads = s->n_threads;
        s->stats.n_shader_hits = keep.n_shader_hits;
        s->stats.n_shader_compiled = keep.n_shader_compiled;
        s->stats.backend_setup_ms = keep.backend_setup_ms;
        s->stats.n_fallbacks = keep.n_fallbacks;
        memcpy(s->stats.fallback, keep.fallback, sizeof keep.fallback);
        s->stats.tokens_per_j = keep.tokens_per_j;
        s->stats.energy_measured = keep.energy_measured;
    }
    if (p->n_prompt == 0 && s->n_past == 0) {
        p->stop = KS_STOP_ERROR;
        return ks_error(KS_ERR_INVALID_ARG,
                        "generate: an empty prompt and an empty session: "
                        "nothing to continue from");
    }
    if (p->early_exit > 0.0f)
        return ks_early_exit_generate(s, p);
    spec = p->spec == KS_SPEC_AUTO ? (p->draft ? KS_SPEC_DRAFT : KS_SPEC_OFF) : p->spec;
    if (spec != KS_SPEC_OFF && (st = spec_check(s, p, spec)) != KS_OK) {
        p->stop = KS_STOP_ERROR;
        return st;
    }
    if (spec == KS_SPEC_SELF)  /* the draft session holds the early exit */
        spec = KS_SPEC_DRAFT;
    if (p->json_schema) {
        if (spec != KS_SPEC_OFF)
            st = ks_error(KS_ERR_UNSUPPORTED, "generate: json_schema and speculative "
                          "decoding (spec %s) cannot be combined yet", ks_spec_name(spec));
        else if ((st = ks_json_schema_create(p->json_schema, &jschema)) == KS_OK &&
                 (st = ks_json_mask_create(jschema, s->m->tok, s->m->hp.n_vocab,
                                           &jmask)) == KS_OK &&
                 !(jlogits = malloc(s->m->hp.n_vocab * sizeof(*jlogits))))
            st = ks_error(KS_ERR_NOMEM, "generate: no memory for the json mask");
        if (st != KS_OK) {
            ks_json_mask_destroy(jmask);
            ks_json_schema_destroy(jschema);
            p->stop = KS_STOP_ERROR;
            return st;
        }
    }
    sp = sampler_params(&p->sampling);
    if ((st = ks_sampler_create(&sp, s->m->hp.n_vocab, &smp)) != KS_OK) {
        p->stop = KS_STOP_ERROR;
        goto free_json;
    }

    t0 = ks_now_ns();
    if ((st = hold(s, p->prompt, p->n_prompt)) != KS_OK)
        goto done;
    /* the sampler's penalties see what a fresh session fed the same
     * tokens would: everything held */
    for (uint32_t i = 0; i < s->n_past; i++)
        ks_sampler_accept(smp, s->hist[i]);
    if ((st = need_logits(s, p->cancel)) != KS_OK)
        goto done;
    t1 = ks_now_ns();
    s->stats.n_prompt = (uint32_t)p->n_prompt;
    s->stats.prefill_ms = (double)(t1 - t0) / 1e6;

    g.smp = smp;
    g.jmask = jmask;
    g.jlogits = jlogits;
    if (spec != KS_SPEC_OFF) {
        st = spec_decode(&g, spec);
        goto done;
    }
    for (;;) {
        int32_t tok;
        uint64_t f0;

        if (!emit(&g, s->logits, &tok, &st))
            break;
        f0 = ks_now_ns();
        if ((st = ks_forward_sync(s, p->cancel)) != KS_OK)
            break;
        if (s->gov)
            govern(s, ks_now_ns() - f0, p->cancel);
    }
done:
    if (p->stop == KS_STOP_NONE)
        p->stop = stop_of(st);
    s->stats.n_gen = g.n_gen;
    if (!t1) {  /* stopped in the prompt */
        t1 = ks_now_ns();
        s->stats.n_prompt = (uint32_t)p->n_prompt;
        s->stats.prefill_ms = (double)(t1 - t0) / 1e6;
    }
    s->stats.decode_ms = g.n_gen ? (double)(ks_now_ns() - t1) / 1e6 : 0;
    if (s->stats.prefill_ms > 0)
        s->stats.prefill_tps = s->stats.n_prompt * 1e3 / s->stats.prefill_ms;
    if (s->stats.decode_ms > 0 && g.n_gen > 1)
        s->stats.decode_tps = (g.n_gen - 1) * 1e3 / s->stats.decode_ms;
    if (s->stats.n_drafted)
        s->stats.accept_rate = (double)s->stats.n_accepted / s->stats.n_drafted;
    if (s->stats.n_verify)
        s->stats.tokens_per_verify = (double)(s->stats.n_accepted + s->stats.n_verify) /
                                     s->stats.n_verify;
    s->stats.peak_rss_bytes = ks_peak_rss_bytes();
    s->stats.governed = s->gov != NULL;
    s->stats.n_threads = s->n_threads;
    ks_sampler_destroy(smp);
free_json:
    ks_json_mask_destroy(jmask);
    ks_json_schema_destroy(jschema);
    free(jlogits);
    return st;
}

KS_API void
ks_session_stats(const ks_session *s, ks_stats *out)
{
    if (!out)
        return;
    if (!s) {
        memset(out, 0, sizeof(*out));
        return;
    }
    *out = s->stats;
}
