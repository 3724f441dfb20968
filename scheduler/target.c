/* The registry of target kinds (see target.h). */
#include "scheduler/target.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "driver/base.h"

enum { MAX_KINDS = 8 };

static const ks_target_kind *kinds[MAX_KINDS];
static uint32_t n_kinds;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

ks_status
ks_target_register(const ks_target_kind *k)
{
    ks_status st = KS_OK;

    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < n_kinds; i++)
        if (strcmp(kinds[i]->name, k->name) == 0)
            goto out;
    if (n_kinds == MAX_KINDS)
        st = ks_error(KS_ERR_INTERNAL, "targets: more than %d kinds", MAX_KINDS);
    else
        kinds[n_kinds++] = k;
out:
    pthread_mutex_unlock(&lock);
    return st;
}

const ks_target_kind *
ks_target_kind_find(const char *name)
{
    const ks_target_kind *k = NULL;

    pthread_mutex_lock(&lock);
    for (uint32_t i = 0; i < n_kinds && !k; i++)
        if (strcmp(kinds[i]->name, name) == 0)
            k = kinds[i];
    pthread_mutex_unlock(&lock);
    return k;
}

const ks_target_kind *const *
ks_target_kinds(uint32_t *n)
{
    pthread_mutex_lock(&lock);
    *n = n_kinds;
    pthread_mutex_unlock(&lock);
    return kinds;
}

void
ks_target_init(ks_target *t, const ks_target_ops *ops, void *impl, const char *kind,
               uint32_t l0, uint32_t l1, bool head, bool accel)
{
    t->ops = ops;
    t->impl = impl;
    t->l0 = l0;
    t->l1 = l1;
    t->head = head;
    t->accel = accel;
    snprintf(t->kind, sizeof t->kind, "%s", kind);
    snprintf(t->desc, sizeof t->desc, "%s layers %u-%u%s", kind, l0, l1 ? l1 - 1 : 0,
             head ? " + head" : "");
}
