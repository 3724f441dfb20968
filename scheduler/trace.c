/* Governor traces as CSV: a stdio stream opened once, one fprintf per
 * token, write errors remembered and reported at close. */
#include "scheduler/trace.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"

struct ks_trace {
    FILE    *f;
    bool     started;
    uint64_t t0_ns;
    int      err;        /* first errno seen; 0: none */
    char     path[512];
    char     layers[160];  /* the placement, commas as spaces */
};

ks_status
ks_trace_open(const char *path, ks_trace **out)
{
    ks_trace *t;

    *out = NULL;
    if (!path || !*path)
        return ks_error(KS_ERR_INVALID_ARG, "trace: no path given");
    t = calloc(1, sizeof *t);
    if (!t)
        return ks_error(KS_ERR_NOMEM, "trace: no memory for %s", path);
    snprintf(t->path, sizeof t->path, "%s", path);
    t->f = fopen(path, "w");
    if (!t->f) {
        int e = errno;

        free(t);
        return ks_error(KS_ERR_IO, "trace: cannot create %s: %s", path,
                        strerror(e));
    }
    if (fputs("time_s,tokens_per_s,temp_c,power_w,budget_w,threads,pace_ms,"
              "state,target,limit_c,place,layers,tokens_per_j\n", t->f) < 0)
        t->err = errno ? errno : EIO;
    *out = t;
    return KS_OK;
}

void
ks_trace_token(ks_trace *t, uint64_t now_ns, const ks_gov_decision *d)
{
    char tps[32] = "", temp[32] = "", power[32] = "", budget[32] = "";
    char tpj[32] = "";

    if (!t || !d)
        return;
    if (!t->started) {
        t->started = true;
        t->t0_ns = now_ns;
    }
    if (now_ns < t->t0_ns)
        now_ns = t->t0_ns;
    /* Empty fields are what the governor has not measured yet: gnuplot
     * and spreadsheets read them as missing. */
    if (d->temp_mc && !(d->flags & KS_GOV_F_NO_TEMP))
        snprintf(temp, sizeof temp, "%.2f", d->temp_mc / 1000.0);
    if (d->state_id != KS_GOV_STATE_START) {
        snprintf(tps, sizeof tps, "%.3f", d->tokens_per_s);
        snprintf(power, sizeof power, "%.3f", d->power_mw / 1000.0);
        snprintf(budget, sizeof budget, "%.3f", d->budget_mw / 1000.0);
        snprintf(tpj, sizeof tpj, "%.3f", d->tokens_per_j);
    }
    if (fprintf(t->f, "%.3f,%s,%s,%s,%s,%d,%.2f,%s,%s,%.1f,%s,%s,%s\n",
                (double)(now_ns - t->t0_ns) / 1e9, tps, temp, power, budget,
                d->n_threads, d->pace_ns / 1e6, ks_gov_state_str(d->state_id),
                d->target,
                d->control_temp_mc / 1000.0, ks_gov_place_str(d->place), t->layers,
                tpj) < 0 &&
        !t->err)
        t->err = errno ? errno : EIO;
}

void
ks_trace_set_layers(ks_trace *t, const char *plan)
{
    if (!t)
        return;
    snprintf(t->layers, sizeof t->layers, "%s", plan ? plan : "");
    for (char *p = t->layers; *p; p++)
        if (*p == ',')
            *p = ' ';
}

ks_status
ks_trace_close(ks_trace *t)
{
    ks_status st = KS_OK;

    if (!t)
        return KS_OK;
    if (fclose(t->f) != 0 && !t->err)
        t->err = errno ? errno : EIO;
    if (t->err)
        st = ks_error(KS_ERR_IO, "trace: writing %s failed: %s", t->path,
                      strerror(t->err));
    free(t);
    return st;
}
