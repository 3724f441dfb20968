/* Layer placement (see placement.h). */
#include "scheduler/placement.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"

static void
add(ks_plan *p, const char *kind, uint32_t l0, uint32_t l1)
{
    ks_range *r;

    if (l1 <= l0)
        return;
    /* neighbours of one kind merge into one range */
    if (p->n > 0 && strcmp(p->r[p->n - 1].kind, kind) == 0 && p->r[p->n - 1].l1 == l0) {
        p->r[p->n - 1].l1 = l1;
        return;
    }
    r = &p->r[p->n++];
    memset(r, 0, sizeof(*r));
    snprintf(r->kind, sizeof r->kind, "%s", kind);
    r->l0 = l0;
    r->l1 = l1;
}

static void
finish(ks_plan *p)
{
    for (uint32_t i = 0; i < p->n; i++)
        p->r[i].head = i + 1 == p->n;
}

ks_status
ks_place_parse_split(const char *text, uint32_t n_layers, ks_plan *out)
{
    const char *s = text;
    uint32_t next = 0;

    memset(out, 0, sizeof(*out));
    if (!text || !*text)
        return ks_error(KS_ERR_INVALID_ARG, "--split: empty map (expected e.g. "
                        "cpu:0-9,vulkan:10-%u)", n_layers ? n_layers - 1 : 0);
    while (*s) {
        char kind[16];
        size_t k = 0;
        char *end;
        unsigned long a, b;

        while (*s && *s != ':' && *s != ',' && k + 1 < sizeof kind)
            kind[k++] = (char)tolower((unsigned char)*s++);
        kind[k] = '\0';
        if (*s != ':' || k == 0)
            return ks_error(KS_ERR_INVALID_ARG, "--split: expected KIND:FIRST-LAST at "
                            "'%s'", s);
        s++;
        if (!isdigit((unsigned char)*s))
            return ks_error(KS_ERR_INVALID_ARG, "--split: expected a layer number at '%s'", s);
        a = strtoul(s, &end, 10);
        s = end;
        b = a;
        if (*s == '-') {
            s++;
            if (!isdigit((unsigned char)*s))
                return ks_error(KS_ERR_INVALID_ARG, "--split: expected a layer number at "
                                "'%s'", s);
            b = strtoul(s, &end, 10);
            s = end;
        }
        if (*s == ',')
            s++;
        else if (*s)
            return ks_error(KS_ERR_INVALID_ARG, "--split: unexpected '%s'", s);
        if (a != next)
            return ks_error(KS_ERR_INVALID_ARG, "--split: %s:%lu-%lu starts at layer %lu; the "
                            "ranges must cover the layers in order, and layer %u comes next",
                            kind, a, b, a, next);
        if (b < a || b >= n_layers)
            return ks_error(KS_ERR_INVALID_ARG, "--split: %s:%lu-%lu is not a range of the "
                            "model's layers 0-%u", kind, a, b, n_layers - 1);
        if (out->n == KS_PLAN_MAX && strcmp(out->r[out->n - 1].kind, kind) != 0)
            return ks_error(KS_ERR_INVALID_ARG, "--split: more than %d ranges", KS_PLAN_MAX);
        add(out, kind, (uint32_t)a, (uint32_t)b + 1);
        next = (uint32_t)b + 1;
    }
    if (next != n_layers)
        return ks_error(KS_ERR_INVALID_ARG, "--split: layers %u-%u are not placed (the model "
                        "has %u)", next, n_layers - 1, n_layers);
    finish(out);
    return KS_OK;
}

void
ks_place_gpu_layers(uint32_t n_layers, uint32_t n_gpu, ks_plan *out)
{
    if (n_gpu > n_layers)
        n_gpu = n_layers;
    memset(out, 0, sizeof(*out));
    add(out, "cpu", 0, n_layers - n_gpu);
    add(out, "vulkan", n_layers - n_gpu, n_layers);
    finish(out);
}

void
ks_place_auto(uint32_t n_layers, const ks_place_cost *c, ks_plan *out, double *est_ms)
{
    uint32_t best_k = n_layers;
    double best = c->cpu_layer_ms * n_layers + c->cpu_head_ms;

    /* k = first GPU layer; the suffix [k, n) and the head go to the GPU */
    if (c->gpu_ok) {
        uint64_t bytes = c->head_bytes + c->fixed_bytes;
        for (uint32_t k = n_layers; k-- > 0;) {
            bytes += c->layer_bytes ? c->layer_bytes[k] : 0;
            if (bytes > c->gpu_budget)
                break;
            double t = c->cpu_layer_ms * k + c->gpu_layer_ms * (n_layers - k) +
                       c->gpu_head_ms + (k > 0 ? 2.0 * c->hop_ms : c->hop_ms);
            if (t < best) {
                best = t;
                best_k = k;
            }
        }
    }
    ks_place_gpu_layers(n_layers, n_layers - best_k, out);
    if (est_ms)
        *est_ms = best;
}

void
ks_plan_format(const ks_plan *p, char *buf, size_t size)
{
    size_t at = 0;

    if (size == 0)
        return;
    buf[0] = '\0';
    for (uint32_t i = 0; i < p->n && at < size; i++) {
        const ks_range *r = &p->r[i];
        int w = r->l1 - r->l0 == 1
                    ? snprintf(buf + at, size - at, "%s%s:%u%s", i ? "," : "", r->kind, r->l0,
                               r->head ? "+head" : "")
                    : snprintf(buf + at, size - at, "%s%s:%u-%u%s", i ? "," : "", r->kind, r->l0,
                               r->l1 - 1, r->head ? "+head" : "");
        if (w < 0)
            return;
        at += (size_t)w;
    }
}
