/* The op profile table (profile.h): a dense array of counters indexed by
 * target kind, op and layer, so adding to it allocates nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "scheduler/profile.h"

static const char *const op_names[KS_PROF_N_OPS] = {
    "norm", "qkv", "rope_kv", "attn", "attn_out", "add", "gate_up", "act", "down", "moe",
    "head",
};

const char *
ks_prof_op_name(ks_prof_op op)
{
    return (unsigned)op < KS_PROF_N_OPS ? op_names[op] : "unknown";
}

ks_status
ks_profile_create(uint32_t n_layers, ks_profile **out)
{
    ks_profile *p = calloc(1, sizeof(*p));

    *out = NULL;
    if (!p)
        return ks_error(KS_ERR_NOMEM, "profile: no memory");
    p->n_layers = n_layers;
    p->cells = calloc((uint64_t)KS_PROF_MAX_KINDS * KS_PROF_N_OPS * (n_layers + 1),
                      sizeof(*p->cells));
    if (!p->cells) {
        free(p);
        return ks_error(KS_ERR_NOMEM, "profile: no memory for %u layers", n_layers);
    }
    *out = p;
    return KS_OK;
}

void
ks_profile_destroy(ks_profile *p)
{
    if (!p)
        return;
    free(p->cells);
    free(p);
}

void
ks_profile_reset(ks_profile *p)
{
    if (!p)
        return;
    memset(p->cells, 0, (uint64_t)KS_PROF_MAX_KINDS * KS_PROF_N_OPS * (p->n_layers + 1) *
                            sizeof(*p->cells));
}

void
ks_profile_add(ks_profile *p, const char *kind, ks_prof_op op, int32_t layer, uint64_t ns,
               uint64_t bytes)
{
    uint32_t k;
    ks_prof_cell *c;

    if (!p || (unsigned)op >= KS_PROF_N_OPS || layer < -1 || layer >= (int32_t)p->n_layers)
        return;
    for (k = 0; k < KS_PROF_MAX_KINDS; k++) {
        if (!strcmp(p->kind[k], kind))
            break;
        if (!p->kind[k][0]) {
            snprintf(p->kind[k], sizeof p->kind[k], "%s", kind);
            break;
        }
    }
    if (k == KS_PROF_MAX_KINDS)
        return;
    c = ks_profile_cell(p, k, op, layer);
    c->calls++;
    c->ns += ns;
    c->bytes += bytes;
}
