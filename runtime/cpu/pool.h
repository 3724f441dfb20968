/* A fixed thread pool for data-parallel kernels. The calling thread is
 * worker 0; ks_pool_run returns when every worker has finished the job.
 * Workers spin briefly between jobs (a decode step issues a few hundred
 * jobs) and then sleep on a condition variable, so an idle pool costs no
 * CPU. One pool serves one caller at a time: a session owns its pool. */
#ifndef KS_CPU_POOL_H
#define KS_CPU_POOL_H

#include <stdint.h>

#include "kestrel/status.h"

typedef struct ks_pool ks_pool;

/* |ith| in [0, nth): the job splits its work by these. */
typedef void (*ks_pool_fn)(void *ctx, int ith, int nth);

ks_status ks_pool_create(int n_threads, ks_pool **out);
void      ks_pool_destroy(ks_pool *p);   /* NULL is a no-op */
int       ks_pool_n_threads(const ks_pool *p);

/* Runs fn(ctx, i, n) on every worker, the caller as worker 0. */
void ks_pool_run(ks_pool *p, ks_pool_fn fn, void *ctx);

/* Runs with only the first |n| workers (1 <= n <= pool size); the rest
 * stay idle. The governor uses this to lower the thread count. With n 1
 * the job runs on the caller alone and no worker is woken. */
void ks_pool_run_n(ks_pool *p, int n, ks_pool_fn fn, void *ctx);

/* Inside a job: claims one of the job's |n_items| work items and returns
 * it, or -1 once all are taken; each item goes to one worker. A worker
 * takes the items of its own share (ks_pool_range(n_items, 1, ...)) in
 * order, then helps with what is left of the others' shares. So a job
 * cut into more items than workers keeps each worker on a contiguous
 * run of items when all run alike, and ends when its work is done, not
 * when its slowest worker's share is, when one is held off its core
 * (another process, on a shared machine). One run of claims per job,
 * every worker passing the same |n_items|. Outside a job (a job function
 * called directly) it hands out 0 .. n_items - 1 in turn, then -1 and
 * starts over. */
int64_t ks_pool_claim(int64_t n_items);

/* Splits [0, n) into |nth| chunks, aligned to |align| items. */
static inline void
ks_pool_range(int64_t n, int64_t align, int ith, int nth, int64_t *lo,
              int64_t *hi)
{
    int64_t blocks = (n + align - 1) / align;
    int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;

    *lo = b0 * align < n ? b0 * align : n;
    *hi = b1 * align < n ? b1 * align : n;
}

#endif
