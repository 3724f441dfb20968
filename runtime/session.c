/* The public API around a model: runtimes, sessions, tokenization,
 * generation and statistics.
 *
 * A session allocates its KV cache and the scratch for one batch at
 * create; ks_session_generate then prefills the prompt in batches of
 * n_batch through ks_forward, and decodes one token at a time, sampling
 * on the CPU and handing each token's text to the caller's callback. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/base.h"
#include "runtime/chat.h"
#include "runtime/cpu/quant.h"
#include "runtime/sample.h"
#include "runtime/session_priv.h"
#include "runtime/tokenizer.h"
#include "runtime/costs.h"
#include "runtime/vk_forward.h"
#include "scheduler/placement.h"
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

/* The plan for backend vulkan: every layer that fits the device, the
 * last ones first (the head with them); the rest on the CPU. */
static ks_status
plan_vulkan(ks_session *s, ks_plan *plan, bool *fits_all)
{
    uint32_t n = s->m->hp.n_layers;
    uint64_t *lb = calloc(n, sizeof(*lb));
    ks_place_cost c = { .cpu_layer_ms = 1.0, .gpu_layer_ms = 0.0, .cpu_head_ms = 1.0,
                        .gpu_head_ms = 0.0, .gpu_ok = true };
    char dev[256];
    ks_status st;

    if (!lb)
        return ks_error(KS_ERR_NOMEM, "session: no memory");
    if ((st = ks_vk_fw_device(s->m->rt->device, dev, sizeof dev, &c.gpu_budget)) != KS_OK) {
        free(lb);
        return st;
    }
    ks_costs_gpu_bytes(s, lb, &c.head_bytes);
    c.layer_bytes = lb;
    c.fixed_bytes = ks_vk_fw_fixed_bytes(s->m, s->n_batch);
    ks_place_auto(n, &c, plan, NULL);
    *fits_all = plan->n == 1 && strcmp(plan->r[0].kind, "vulkan") == 0;
    free(lb);
    return KS_OK;
}

static ks_status
make_targets(ks_session *s, const ks_plan *plan)
{
    ks_target_env env = { s->m, s, s->m->rt->device, s->n_ctx, s->n_batch };
    ks_status st;

    for (uint32_t i = 0; i < plan->n; i++) {
        const ks_range *r = &plan->r[i];
        const ks_target_kind *k = ks_target_kind_find(r->kind);
        const char *why;
        if (!k || !k->create)
            return ks_error(KS_ERR_UNSUPPORTED, "placement: no execution target '%s' in "
                            "this build (there are cpu and vulkan)", r->kind);
        if ((why = k->unavailable(&env)) != NULL)
            return ks_error(KS_ERR_UNSUPPORTED, "placement: %s cannot run layers %u-%u: %s",
                            r->kind, r->l0, r->l1 - 1, why);
        if ((st = k->create(&env, r->l0, r->l1, r->head, &s->targets[s->n_targets])) != KS_OK)
            return st;
        s->n_targets++;
    }
    ks_plan_format(plan, s->plan, sizeof s->plan);
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

/* Chooses where the layers run and makes the targets. Backend cpu: all
 * on the CPU. An explicit --split or --gpu-layers: as asked. vulkan: all
 * that fit the device (the rest on the CPU, with a warning). auto: the
 * cost model's choice when a Vulkan device takes the model, else the CPU
 * with a one-line notice saying why. */
static ks_status
start_backend(ks_session *s)
{
    const ks_runtime *rt = s->m->rt;
    uint32_t n = s->m->hp.n_layers;
    ks_plan plan;
    ks_status st;
    bool fits = true;

    ks_target_register(&ks_cpu_target_kind);
    if (ks_vk_target_kind.create)
        ks_target_register(&ks_vk_target_kind);
    ks_place_gpu_layers(n, 0, &plan);  /* all on the CPU */

    if (rt->split) {
        if ((st = ks_place_parse_split(rt->split, n, &plan)) != KS_OK)
            return st;
    } else if (rt->gpu_layers > 0) {
        ks_place_gpu_layers(n, (uint32_t)rt->gpu_layers, &plan);
    } else if (rt->backend == KS_BACKEND_CPU) {
        /* all on the CPU */
    } else if (s->kv_type != KS_KV_F16 || ks_vk_fw_supports(s->m) != KS_OK) {
        const char *why = s->kv_type != KS_KV_F16 ? "the Vulkan kernels keep an f16 KV cache"
                                                  : ks_last_error();
        if (rt->backend == KS_BACKEND_VULKAN)
            return ks_error(KS_ERR_UNSUPPORTED, "session: backend vulkan: %s", why);
        ks_log(KS_LOG_INFO, "runtime", "backend auto: using the CPU: %s", why);
    } else if (rt->backend == KS_BACKEND_VULKAN) {
        if ((st = plan_vulkan(s, &plan, &fits)) != KS_OK)
            return st;
        if (!fits)
            ks_log(KS_LOG_WARN, "runtime", "backend vulkan: the model does not fit the "
                   "device's memory; the first layers run on the CPU");
    } else {
        const char *why = ks_vk_auto_skip_reason(rt->device);
        if (why)
            ks_log(KS_LOG_INFO, "runtime", "backend auto: using the CPU (%d threads, %s "
                   "kernels): %s", s->n_threads, ks_cpu_simd_name(ks_cpu_simd()), why);
        else if (ks_costs_place(s, &plan) != KS_OK)
            ks_log(KS_LOG_INFO, "runtime", "backend auto: using the CPU: %s", ks_last_error());
    }
    st = make_targets(s, &plan);
    /* the estimate was short of what the device took: one layer fewer */
    while (st == KS_ERR_DEVICE_OOM && rt->backend == KS_BACKEND_VULKAN && !rt->split &&
           rt->gpu_layers == 0 && plan.n > 0 &&
           strcmp(plan.r[plan.n - 1].kind, "vulkan") == 0) {
        uint32_t on_gpu = plan.r[plan.n - 1].l1 - plan.r[plan.n - 1].l0;
        ks_log(KS_LOG_DEBUG, "placement", "%s; trying %u layers on the device",
               ks_last_error(), on_gpu - 1);
        drop_targets(s);
        ks_place_gpu_layers(n, on_gpu - 1, &plan);
        st = make_targets(s, &plan);
    }
    if (st != KS_OK && rt->backend == KS_BACKEND_AUTO && !rt->split && rt->gpu_layers == 0) {
        ks_log(KS_LOG_INFO, "runtime", "backend auto: using the CPU: %s", ks_last_error());
        drop_targets(s);
        ks_place_gpu_layers(n, 0, &plan);
        st = make_targets(s, &plan);
    }
    if (st != KS_OK)
        return st;
    for (uint32_t i = 0; i < s->n_targets; i++) {
        if (strcmp(s->targets[i]->kind, "vulkan") == 0) {
            ks_vk_fw_info info;
            ks_vk_fw_info_get(s->targets[i]->impl, &info);
            s->stats.n_shader_hits += info.n_shader_hits;
            s->stats.n_shader_compiled += info.n_shader_compiled;
            s->stats.backend_setup_ms += info.setup_ms;
        }
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
    if (!n_out)
        return ks_null_arg("ks_model_chat_format", "n_out");
    *n_out = 0;
    if (!m)
        return ks_null_arg("ks_model_chat_format", "m");
    if (!msgs && n)
        return ks_null_arg("ks_model_chat_format", "msgs");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return ks_error(KS_ERR_INVALID_ARG,
                            "ks_model_chat_format: argument 'msgs[%zu].%s' is "
                            "NULL", i, msgs[i].role ? "content" : "role");
    /* ks_chat_message and ks_chat_msg have the same layout by design. */
    return ks_chat_format((ks_chat_family)m->chat_family,
                          (const ks_chat_msg *)msgs, n,
                          add_generation_prompt, m->default_system, buf, cap,
                          n_out);
}

/* ---- sessions ---- */

static void *
alloc_floats(uint64_t n, bool *ok)
{
    void *p = calloc(n ? n : 1, sizeof(float));

    if (!p)
        *ok = false;
    return p;
}

/* One activation slot per format that some weight of the model needs. */
static bool
add_act_slot(ks_session *s, ks_qtype wtype, uint64_t max_n)
{
    ks_qtype at = ks_cpu_act_type(wtype);
    int free_i = -1;

    for (int i = 0; i < KS_N_ACT_SLOTS; i++) {
        if (s->act[i].buf && s->act[i].type == at)
            return true;
        if (!s->act[i].buf && free_i < 0)
            free_i = i;
    }
    if (free_i < 0)
        return false;
    s->act[free_i].type = at;
    s->act[free_i].stride = ks_align_up(ks_cpu_act_bytes(wtype, max_n), 64);
    s->act[free_i].buf = calloc(s->n_batch, s->act[free_i].stride);
    return s->act[free_i].buf != NULL;
}

static bool
add_layer_slots(ks_session *s, uint64_t max_n)
{
    const ks_model *m = s->m;
    bool ok = add_act_slot(s, m->output.type, max_n);

    for (uint32_t i = 0; ok && i < m->hp.n_layers; i++) {
        const ks_layer *l = &m->layers[i];
        const ks_weight *ws[] = { &l->wq, &l->wk, &l->wv, &l->wo,
                                  &l->gate, &l->up, &l->down };
        for (size_t k = 0; ok && k < sizeof ws / sizeof ws[0]; k++)
            ok = add_act_slot(s, ws[k]->type, max_n);
    }
    return ok;
}

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
static void
govern(ks_session *s, uint64_t busy_ns, const volatile int *cancel)
{
    ks_gov_work w = { 0 };
    ks_gov_decision d;
    uint64_t now = ks_now_ns();

    w.n_tokens = 1;
    w.busy_ns[KS_GOV_CPU] = busy_ns;
    w.n_threads = s->n_threads;
    if (ks_governor_step_telemetry(s->gov, s->tel, now, &w, &d) != KS_OK)
        return;
    if (d.n_threads >= 1 && d.n_threads <= s->max_threads)
        s->n_threads = d.n_threads;
    s->stats.n_threads = s->n_threads;
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

KS_API ks_status
ks_session_create(ks_model *m, const ks_session_params *p, ks_session **out)
{
    ks_session_params def = { 0 };
    const ks_hparams *hp;
    ks_session *s;
    ks_status st;
    uint64_t q_dim, max_n, kv_bytes, nb, cache_bytes;
    bool ok = true;

    if (!out)
        return ks_null_arg("ks_session_create", "out");
    *out = NULL;
    if (!m)
        return ks_null_arg("ks_session_create", "m");
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
    s->n_threads = p->n_threads ? p->n_threads : m->rt->n_threads;
    if ((st = ks_pool_create(s->n_threads, &s->pool)) != KS_OK)
        goto fail;
    s->max_threads = s->n_threads;
    if ((st = start_governor(s)) != KS_OK)
        goto fail;
    if (p->trace_path && (st = ks_trace_open(p->trace_path, &s->trace)) != KS_OK)
        goto fail;

    q_dim = (uint64_t)hp->n_head * hp->head_dim;
    s->kv_dim = (uint64_t)hp->n_head_kv * hp->head_dim;
    s->kv_row_bytes = s->kv_dim * (s->kv_type == KS_KV_F16 ? 2 : 4);
    kv_bytes = 0;
    if (!ks_mul_size(s->kv_row_bytes, s->n_ctx, &cache_bytes) ||
        !ks_mul_size(cache_bytes, hp->n_layers, &cache_bytes) ||
        cache_bytes > ((uint64_t)1 << 40)) {
        st = ks_error(KS_ERR_INVALID_ARG,
                      "session: a KV cache of %u tokens is too large",
                      s->n_ctx);
        goto fail;
    }
    /* calloc maps zero pages lazily: only positions used cost memory. */
    s->k_cache = calloc(1, cache_bytes);
    s->v_cache = calloc(1, cache_bytes);
    if (!s->k_cache || !s->v_cache) {
        st = ks_error(KS_ERR_NOMEM,
                      "session: no memory for a KV cache of %u tokens "
                      "(%.1f MiB); try a smaller -c", s->n_ctx,
                      2.0 * (double)cache_bytes / 1048576.0);
        goto fail;
    }
    kv_bytes = 2 * cache_bytes;

    nb = s->n_batch;
    max_n = hp->n_embd > q_dim ? hp->n_embd : q_dim;
    if (hp->n_ff > max_n)
        max_n = hp->n_ff;
    s->x = alloc_floats(nb * hp->n_embd, &ok);
    s->xn = alloc_floats(nb * max_n, &ok);
    s->q = alloc_floats(nb * q_dim, &ok);
    s->k = alloc_floats(nb * s->kv_dim, &ok);
    s->v = alloc_floats(nb * s->kv_dim, &ok);
    s->att = alloc_floats(nb * q_dim, &ok);
    s->g = alloc_floats(nb * hp->n_ff, &ok);
    s->u = alloc_floats(nb * hp->n_ff, &ok);
    s->rope = alloc_floats(2 * nb * hp->n_rot, &ok);
    s->scores = alloc_floats((uint64_t)s->n_threads * s->n_ctx, &ok);
    s->vtmp = alloc_floats((uint64_t)s->n_threads * hp->head_dim, &ok);
    s->qh = calloc((size_t)s->n_threads, hp->head_dim * 4u);
    s->logits = alloc_floats(hp->n_vocab, &ok);
    if (!ok || !s->qh || !add_layer_slots(s, max_n)) {
        st = ks_error(KS_ERR_NOMEM, "session: no memory for activations");
        goto fail;
    }
    if ((st = start_backend(s)) != KS_OK)
        goto fail;
    ks_trace_set_layers(s->trace, s->plan);
    s->stats.kv_bytes = kv_bytes;
    s->stats.load_ms = m->load_ms;
    ks_log(KS_LOG_DEBUG, "session",
           "context %u, batch %u, KV %s %.1f MiB, %d threads", s->n_ctx,
           s->n_batch, s->kv_type == KS_KV_F16 ? "f16" : "f32",
           (double)kv_bytes / 1048576.0, s->n_threads);
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
    ks_governor_destroy(s->gov);
    ks_telemetry_destroy(s->tel);
    ks_pool_destroy(s->pool);
    free(s->k_cache);
    free(s->v_cache);
    free(s->x);
    free(s->xn);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->g);
    free(s->u);
    free(s->rope);
    free(s->scores);
    free(s->vtmp);
    free(s->qh);
    free(s->logits);
    for (int i = 0; i < KS_N_ACT_SLOTS; i++)
        free(s->act[i].buf);
    free(s);
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
    /* Positions past n_past are simply overwritten by later tokens. */
    s->n_past = n_past;
    return KS_OK;
}

/* Runs |n| tokens in batches; logits of the last one land in s->logits. */
static ks_status
eval_tokens(ks_session *s, const int32_t *tokens, size_t n)
{
    if ((uint64_t)s->n_past + n > s->n_ctx)
        return ks_error(KS_ERR_CONTEXT_FULL,
                        "context full: %u tokens held and %zu more do not "
                        "fit in a context of %u (use a larger -c)",
                        s->n_past, n, s->n_ctx);
    return ks_forward_tokens(s, tokens, n);
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
    if ((st = eval_tokens(s, tokens, n)) != KS_OK)
        return st;
    if (logits)
        memcpy(logits, s->logits, s->m->hp.n_vocab * sizeof(float));
    return KS_OK;
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

KS_API ks_status
ks_session_generate(ks_session *s, ks_generate_params *p)
{
    ks_sampler_params sp;
    ks_sampler *smp = NULL;
    ks_status st = KS_OK;
    uint64_t t0, t1 = 0;
    uint32_t n_gen = 0;
    char piece[256];

    if (!p)
        return ks_null_arg("ks_session_generate", "p");
    p->n_out = 0;
    p->stop = KS_STOP_NONE;
    if (!s)
        return ks_null_arg("ks_session_generate", "s");
    if (!p->prompt && p->n_prompt)
        return ks_null_arg("ks_session_generate", "p->prompt");
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
    }
    if (p->n_prompt == 0 && s->n_past == 0)
        return ks_error(KS_ERR_INVALID_ARG,
                        "generate: an empty prompt and an empty session: "
                        "nothing to continue from");
    sp = sampler_params(&p->sampling);
    if ((st = ks_sampler_create(&sp, s->m->hp.n_vocab, &smp)) != KS_OK)
        return st;

    t0 = ks_now_ns();
    if (p->n_prompt > 0) {
        if ((st = eval_tokens(s, p->prompt, p->n_prompt)) != KS_OK)
            goto done;
        for (size_t i = 0; i < p->n_prompt; i++)
            ks_sampler_accept(smp, p->prompt[i]);
    }
    t1 = ks_now_ns();
    s->stats.n_prompt = (uint32_t)p->n_prompt;
    s->stats.prefill_ms = (double)(t1 - t0) / 1e6;

    while (p->n_predict == 0 || n_gen < p->n_predict) {
        int32_t tok;
        size_t len;

        if (cancelled(p)) {
            st = ks_error(KS_ERR_CANCELLED, "generation cancelled");
            break;
        }
        tok = ks_sampler_sample(smp, s->logits);
        ks_sampler_accept(smp, tok);
        if (!p->ignore_eog && ks_tokenizer_is_eog(s->m->tok, tok)) {
            p->stop = KS_STOP_EOG;
            break;
        }
        n_gen++;
        if (p->out_tokens && p->n_out < p->out_cap)
            p->out_tokens[p->n_out] = tok;
        p->n_out++;
        len = ks_tokenizer_piece(s->m->tok, tok, piece, sizeof piece);
        if (p->on_token &&
            !p->on_token(p->user, tok, piece,
                         len < sizeof piece ? len : sizeof piece)) {
            p->stop = KS_STOP_CALLBACK;
            break;
        }
        if (p->n_predict && n_gen == p->n_predict) {
            p->stop = KS_STOP_LENGTH;
            break;
        }
        if (s->n_past >= s->n_ctx) {
            st = ks_error(KS_ERR_CONTEXT_FULL,
                          "context full after %u generated tokens (context "
                          "%u; use a larger -c)", n_gen, s->n_ctx);
            break;
        }
        {
            uint64_t f0 = ks_now_ns();
            if ((st = ks_forward(s, &tok, 1, true)) != KS_OK)
                break;
            if (s->gov)
                govern(s, ks_now_ns() - f0, p->cancel);
        }
    }
done:
    if (p->stop == KS_STOP_NONE)
        p->stop = stop_of(st);
    s->stats.n_gen = n_gen;
    s->stats.decode_ms = t1 ? (double)(ks_now_ns() - t1) / 1e6 : 0;
    if (s->stats.prefill_ms > 0)
        s->stats.prefill_tps = s->stats.n_prompt * 1e3 / s->stats.prefill_ms;
    if (s->stats.decode_ms > 0 && n_gen > 1)
        s->stats.decode_tps = (n_gen - 1) * 1e3 / s->stats.decode_ms;
    s->stats.peak_rss_bytes = ks_peak_rss_bytes();
    s->stats.governed = s->gov != NULL;
    s->stats.n_threads = s->n_threads;
    ks_sampler_destroy(smp);
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
