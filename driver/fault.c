/* Fault injection points (fault.h): KESTREL_FAULT is parsed once into a
 * small table of (name, n, repeat); each ks_fault_hit counts its calls and
 * says whether this one is to fail. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "driver/fault.h"

enum { MAX_FAULTS = 8, NAME_MAX_LEN = 32 };

typedef struct fault {
    char          name[NAME_MAX_LEN];
    unsigned long at;      /* fail at this call (1-based) */
    bool          repeat;  /* and at every later one */
    atomic_ulong  calls;
} fault;

static fault g_faults[MAX_FAULTS];
static atomic_int g_n_faults = -1;  /* -1: KESTREL_FAULT not read yet */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

/* Parses "name@N[+],..." into g_faults; a malformed item is logged and
 * skipped, so a typo never fails a run that was not meant to fail. */
static int
parse(const char *spec)
{
    int n = 0;

    while (spec && *spec && n < MAX_FAULTS) {
        const char *end = strchr(spec, ',');
        size_t len = end ? (size_t)(end - spec) : strlen(spec);
        const char *at = memchr(spec, '@', len);
        char *num_end;
        unsigned long v;

        if (at && (size_t)(at - spec) < NAME_MAX_LEN && at > spec) {
            v = strtoul(at + 1, &num_end, 10);
            if (v > 0 && (num_end == spec + len ||
                          (*num_end == '+' && num_end + 1 == spec + len))) {
                fault *f = &g_faults[n++];
                memcpy(f->name, spec, (size_t)(at - spec));
                f->name[at - spec] = '\0';
                f->at = v;
                f->repeat = *num_end == '+';
                atomic_store(&f->calls, 0);
                ks_log(KS_LOG_WARN, "fault", "fault injection: %s at call %lu%s", f->name,
                       v, f->repeat ? " and after" : "");
                spec = end ? end + 1 : NULL;
                continue;
            }
        }
        ks_log(KS_LOG_WARN, "fault", "KESTREL_FAULT: ignoring '%.*s' (expected name@N or "
               "name@N+)", (int)len, spec);
        spec = end ? end + 1 : NULL;
    }
    return n;
}

static int
n_faults(void)
{
    int n = atomic_load_explicit(&g_n_faults, memory_order_acquire);

    if (n >= 0)
        return n;
    pthread_mutex_lock(&g_lock);
    n = atomic_load(&g_n_faults);
    if (n < 0) {
        memset(g_faults, 0, sizeof g_faults);
        n = parse(getenv("KESTREL_FAULT"));
        atomic_store_explicit(&g_n_faults, n, memory_order_release);
    }
    pthread_mutex_unlock(&g_lock);
    return n;
}

bool
ks_fault_hit(const char *name)
{
    int n = n_faults();

    for (int i = 0; i < n; i++) {
        fault *f = &g_faults[i];
        unsigned long c;
        if (strcmp(f->name, name) != 0)
            continue;
        c = atomic_fetch_add(&f->calls, 1) + 1;
        if (c == f->at || (f->repeat && c > f->at)) {
            ks_log(KS_LOG_DEBUG, "fault", "injected fault %s (call %lu)", name, c);
            return true;
        }
    }
    return false;
}

void
ks_fault_reset(void)
{
    pthread_mutex_lock(&g_lock);
    atomic_store(&g_n_faults, -1);
    pthread_mutex_unlock(&g_lock);
}
