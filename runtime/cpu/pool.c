/* Thread pool. A job is published as one 64-bit word, |job|: a sequence
 * number above the number of workers taking part. A worker that reads a
 * new word naming it runs its share and counts itself done on |n_done|;
 * the caller waits for exactly the workers it named, so a job on fewer
 * threads than the pool has (the governor's choice) neither waits for
 * nor wakes the others, which sleep at once instead of spinning. Waiting
 * for a job is a short spin (jobs arrive microseconds apart during a
 * token) followed by a sleep on |cv|. Jobs that split their work
 * dynamically claim items through per-worker counters of the items taken
 * from each share, reset per job; the thread running a job finds its
 * pool and worker index in |tls_pool| and |tls_ith|. */
#include "runtime/cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "driver/base.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* Pure spinning for the first rounds, then yielding the core (on a busy
 * or oversubscribed machine a spinning waiter would starve the very
 * thread it waits for), then sleeping. */
enum { PAUSE_ROUNDS = 1 << 11, SPIN_ROUNDS = 1 << 14 };

static void
backoff(int spins)
{
    if (spins < PAUSE_ROUNDS)
        cpu_relax();
    else
        sched_yield();
}

/* Items taken from one worker's share of the current job; a cache line
 * each, so that a worker's claims on its own share stay local. */
struct share {
    _Alignas(64) atomic_llong taken;
};

struct worker {
    ks_pool    *pool;
    int         ith;
    pthread_t   thread;
    bool        started;
    atomic_bool asleep;    /* waiting on the pool's cv */
};

struct ks_pool {
    int             n_threads;
    struct worker  *workers;

    ks_pool_fn      fn;        /* the current job */
    void           *ctx;
    int             n_active;  /* workers taking part in it */

    atomic_ullong   job;       /* JOB_SEQ per job | n_active */
    struct share   *shares;    /* [n_threads], zeroed per job */
    atomic_int      n_done;
    atomic_bool     quit;

    pthread_mutex_t mu;
    pthread_cond_t  cv;
};

/* The job word: the low bits say how many workers take part. */
#define JOB_SEQ    (1ull << 16)
#define JOB_N(j)   ((int)((j) & (JOB_SEQ - 1)))

/* The pool whose job this thread is running (NULL between jobs) and its
 * index there; ks_pool_claim's counter for job functions called outside
 * a pool. */
static _Thread_local ks_pool *tls_pool;
static _Thread_local int tls_ith;
static _Thread_local int64_t tls_solo_next;

int64_t
ks_pool_claim(int64_t n_items)
{
    ks_pool *p = tls_pool;
    int nth;

    if (!p) {
        if (tls_solo_next < n_items)
            return tls_solo_next++;
        tls_solo_next = 0;
        return -1;
    }
    nth = p->n_active;
    for (int k = 0; k < nth; k++) {
        int v = (tls_ith + k) % nth;
        struct share *sh = &p->shares[v];
        int64_t lo, hi, i;
        ks_pool_range(n_items, 1, v, nth, &lo, &hi);
        if (atomic_load_explicit(&sh->taken, memory_order_relaxed) >= hi - lo)
            continue;
        i = lo + (int64_t)atomic_fetch_add_explicit(&sh->taken, 1,
                                                    memory_order_relaxed);
        if (i < hi)
            return i;
    }
    return -1;
}

/* True when job word |j| is a job that |w| has not run and takes part in. */
static bool
job_for(const struct worker *w, unsigned long long j, unsigned long long seen)
{
    return j != seen && w->ith < JOB_N(j);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    ks_pool *p = w->pool;
    unsigned long long seen = 0, j;

    tls_pool = p;
    tls_ith = w->ith;

    for (;;) {
        int spins = 0;

        for (;;) {
            j = atomic_load_explicit(&p->job, memory_order_acquire);
            if (job_for(w, j, seen) || atomic_load(&p->quit))
                break;
            /* a job without this worker: the next one is a token or more
             * away (the thread count changes between tokens), so sleep */
            if (j != seen) {
                seen = j;
                spins = SPIN_ROUNDS;
            }
            if (++spins < SPIN_ROUNDS) {
                backoff(spins);
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_store(&w->asleep, true);  /* seq_cst: pairs with job */
            while (!job_for(w, j = atomic_load(&p->job), seen) && !atomic_load(&p->quit)) {
                seen = j;
                pthread_cond_wait(&p->cv, &p->mu);
            }
            atomic_store(&w->asleep, false);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->quit))
            return NULL;
        seen = j;
        p->fn(p->ctx, w->ith, JOB_N(j));
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
    }
}

ks_status
ks_pool_create(int n_threads, ks_pool **out)
{
    ks_pool *p;

    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return ks_error(KS_ERR_INVALID_ARG,
                        "thread pool: %d threads asked, expected 1..1024",
                        n_threads);
    p = calloc(1, sizeof(*p));
    if (!p)
        return ks_error(KS_ERR_NOMEM, "thread pool: no memory");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->workers = calloc((size_t)n_threads, sizeof(*p->workers));
    p->shares = aligned_alloc(_Alignof(struct share),
                              (size_t)n_threads * sizeof(*p->shares));
    if (!p->workers || !p->shares)
        goto nomem;
    for (int i = 0; i < n_threads; i++)
        atomic_init(&p->shares[i].taken, 0);
    for (int i = 1; i < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i;
        if (pthread_create(&p->workers[i].thread, NULL, worker_main,
                           &p->workers[i]) != 0) {
            ks_pool_destroy(p);
            return ks_error(KS_ERR_NOMEM,
                            "thread pool: could not start thread %d of %d",
                            i, n_threads);
        }
        p->workers[i].started = true;
    }
    *out = p;
    return KS_OK;
nomem:
    ks_pool_destroy(p);
    return ks_error(KS_ERR_NOMEM, "thread pool: no memory");
}

void
ks_pool_destroy(ks_pool *p)
{
    if (!p)
        return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->quit, true);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n_threads; i++)
            if (p->workers[i].started)
                pthread_join(p->workers[i].thread, NULL);
        free(p->workers);
    }
    free(p->shares);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int
ks_pool_n_threads(const ks_pool *p)
{
    return p->n_threads;
}

void
ks_pool_run_n(ks_pool *p, int n, ks_pool_fn fn, void *ctx)
{
    if (n < 1)
        n = 1;
    if (n > p->n_threads)
        n = p->n_threads;
    for (int i = 0; i < n; i++)
        atomic_store_explicit(&p->shares[i].taken, 0, memory_order_relaxed);
    p->n_active = n;
    /* one thread: on the caller; the workers are not woken */
    if (n == 1) {
        tls_pool = p;
        tls_ith = 0;
        fn(ctx, 0, 1);
        tls_pool = NULL;
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    {
        unsigned long long j = atomic_load_explicit(&p->job, memory_order_relaxed);
        bool wake = false;

        /* seq_cst: a worker that stored asleep before this either sees
         * the new word or is seen asleep here */
        atomic_store(&p->job, (j & ~(JOB_SEQ - 1)) + JOB_SEQ + (unsigned long long)n);
        for (int i = 1; i < n && !wake; i++)
            wake = atomic_load(&p->workers[i].asleep);
        if (wake) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
    tls_pool = p;
    tls_ith = 0;
    fn(ctx, 0, n);
    tls_pool = NULL;
    for (int spins = 0; atomic_load_explicit(&p->n_done, memory_order_acquire) < n - 1; spins++)
        backoff(spins);
}

void
ks_pool_run(ks_pool *p, ks_pool_fn fn, void *ctx)
{
    ks_pool_run_n(p, p->n_threads, fn, ctx);
}
