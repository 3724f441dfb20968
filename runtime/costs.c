/* Calibrated costs for automatic placement (see costs.h). */
#include "runtime/costs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver/base.h"
#include "scheduler/target.h"

enum { REPS = 5 };

typedef struct costs {
    double cpu_layer_ms, gpu_layer_ms, cpu_head_ms, gpu_head_ms;
} costs;

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median milliseconds of REPS single-token runs (after one warm-up). */
static ks_status
time_runs(ks_session *s, ks_target *t, bool want_logits, double *ms)
{
    double v[REPS];
    ks_status st;

    for (int r = -1; r < REPS; r++) {
        uint64_t t0 = ks_now_ns();
        if ((st = t->ops->run(t, s->x, 1, 0, want_logits, s->logits)) != KS_OK)
            return st;
        if (r >= 0)
            v[r] = (double)(ks_now_ns() - t0) / 1e6;
    }
    qsort(v, REPS, sizeof v[0], cmp_double);
    *ms = v[REPS / 2];
    return KS_OK;
}

static ks_status
measure(ks_session *s, const ks_target_kind *dev, costs *c)
{
    uint32_t n = s->m->hp.n_layers;
    ks_target_env env = { .model = s->m, .device = s->m->rt->device, .n_ctx = 16,
                          .n_batch = 1, .max_threads = s->max_threads,
                          .threads_now = &s->n_threads };
    ks_target *t = NULL;
    double both;
    ks_status st;

    /* the CPU: layer 0 alone, then the head alone (no layers) */
    if ((st = ks_cpu_target_kind.create(&env, 0, 1, false, &t)) != KS_OK)
        return st;
    st = time_runs(s, t, false, &c->cpu_layer_ms);
    t->ops->destroy(t);
    if (st != KS_OK)
        return st;
    if ((st = ks_cpu_target_kind.create(&env, n, n, true, &t)) != KS_OK)
        return st;
    st = time_runs(s, t, true, &c->cpu_head_ms);
    t->ops->destroy(t);
    if (st != KS_OK)
        return st;
    /* the device: the last layer with the head, run without and with it */
    if ((st = dev->create(&env, n - 1, n, true, &t)) != KS_OK)
        return st;
    st = time_runs(s, t, false, &c->gpu_layer_ms);
    if (st == KS_OK)
        st = time_runs(s, t, true, &both);
    t->ops->destroy(t);
    if (st != KS_OK)
        return st;
    c->gpu_head_ms = both > c->gpu_layer_ms ? both - c->gpu_layer_ms : 0.0;
    return KS_OK;
}

static void
costs_path(char *buf, size_t size)
{
    char dir[1024];

    buf[0] = '\0';
    if (ks_cache_dir(dir, sizeof dir))
        snprintf(buf, size, "%s/costs.tsv", dir);
}

/* The last line of |path| for |key|. The file is read without blocking and
 * only when it is a regular file (ks_file_read): a FIFO in its place would
 * otherwise hang the session's creation; it counts as no file. */
static bool
costs_load(const char *path, const char *key, costs *c)
{
    const size_t max_bytes = (size_t)16 << 20;
    size_t key_len = strlen(key), len;
    char *data, *line, *next;
    bool found = false;
    ks_status st;

    if (!path[0])
        return false;
    if ((st = ks_file_read(path, max_bytes, &data, &len)) != KS_OK) {
        if (st == KS_ERR_UNSUPPORTED || st == KS_ERR_CORRUPT)
            ks_log(KS_LOG_WARN, "placement", "%s; ignored, measuring instead",
                   ks_last_error());
        return false;
    }
    for (line = data; line < data + len; line = next) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));

        next = nl ? nl + 1 : data + len;
        if (nl)
            *nl = '\0';
        char *tab = strchr(line, '\t');
        if (!tab || (size_t)(tab - line) != key_len || strncmp(line, key, key_len))
            continue;
        found = sscanf(tab + 1, "%lf %lf %lf %lf", &c->cpu_layer_ms, &c->gpu_layer_ms,
                       &c->cpu_head_ms, &c->gpu_head_ms) == 4 &&
                c->cpu_layer_ms > 0 && c->gpu_layer_ms > 0;
    }
    free(data);
    return found;
}

static void
costs_save(const char *path, const char *key, const costs *c)
{
    FILE *f;
    char dir[1024];
    char *slash;

    if (!path[0])
        return;
    snprintf(dir, sizeof dir, "%s", path);
    if ((slash = strrchr(dir, '/')) != NULL) {
        *slash = '\0';
        mkdir(dir, 0755);  /* one level; the cache dir's parent exists */
    }
    /* Appending to a FIFO would block until some reader came along. */
    if (ks_file_check_replaceable(path) != KS_OK) {
        ks_log(KS_LOG_DEBUG, "placement", "%s; costs not kept", ks_last_error());
        return;
    }
    if (!(f = fopen(path, "a"))) {
        ks_log(KS_LOG_DEBUG, "placement", "cannot write %s; costs not kept", path);
        return;
    }
    fprintf(f, "%s\t%.4f %.4f %.4f %.4f\n", key, c->cpu_layer_ms, c->gpu_layer_ms,
            c->cpu_head_ms, c->gpu_head_ms);
    fclose(f);
}

ks_status
ks_costs_place(ks_session *s, const ks_target_kind *dev, ks_plan *plan)
{
    const ks_model *m = s->m;
    uint32_t n = m->hp.n_layers;
    char key[768], path[1100];
    ks_target_env env = { .model = m, .device = m->rt->device, .n_ctx = s->n_ctx,
                          .n_batch = s->n_batch };
    ks_target_memory mem = { 0 };
    ks_place_cost pc = { .hop_ms = 0.02, .gpu_ok = true };
    costs c;
    double est;
    ks_status st;
    bool cached;

    if (!dev->memory)
        return ks_error(KS_ERR_UNSUPPORTED, "placement: %s reports no memory", dev->name);
    if (!(mem.layer_bytes = calloc(n, sizeof(*mem.layer_bytes))))
        return ks_error(KS_ERR_NOMEM, "placement: no memory");
    if ((st = dev->memory(&env, &mem)) != KS_OK)
        goto out;
    snprintf(key, sizeof key, "%s|%llu|%u|%d|%s", m->name ? m->name : "model",
             (unsigned long long)m->file_bytes, n, s->n_threads, mem.device);
    for (char *p = key; *p; p++)
        if (*p == '\t' || *p == '\n')
            *p = ' ';
    costs_path(path, sizeof path);
    cached = costs_load(path, key, &c);
    if (!cached) {
        ks_log(KS_LOG_INFO, "placement", "measuring layer costs on the CPU and %s (once "
               "per model and device)", mem.device);
        if ((st = measure(s, dev, &c)) != KS_OK)
            goto out;
        costs_save(path, key, &c);
    }
    pc.cpu_layer_ms = c.cpu_layer_ms;
    pc.gpu_layer_ms = c.gpu_layer_ms;
    pc.cpu_head_ms = c.cpu_head_ms;
    pc.gpu_head_ms = c.gpu_head_ms;
    pc.layer_bytes = mem.layer_bytes;
    pc.head_bytes = mem.head_bytes;
    pc.fixed_bytes = mem.fixed_bytes;
    pc.gpu_budget = mem.avail_bytes;
    ks_place_auto(n, &pc, plan, &est);
    {
        char txt[160];
        ks_plan_format(plan, txt, sizeof txt);
        ks_log(KS_LOG_INFO, "placement", "auto: %s (%s costs: layer %.3f ms on the CPU, "
               "%.3f ms on %s; head %.3f / %.3f ms; estimate %.2f ms per token)", txt,
               cached ? "cached" : "measured", c.cpu_layer_ms, c.gpu_layer_ms, mem.device,
               c.cpu_head_ms, c.gpu_head_ms, est);
    }
out:
    free(mem.layer_bytes);
    return st;
}
