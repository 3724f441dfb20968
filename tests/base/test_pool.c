/* The CPU thread pool (runtime/cpu/pool.c): every item of a job runs
 * once, on the workers the job names; and a job on fewer threads than
 * the pool has leaves the others asleep. The governor lowers the thread
 * count between tokens; the idle workers used to wake for every job and
 * spin, costing up to half again the CPU of the work. */
#include <check.h>
#include <dirent.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "runtime/cpu/pool.h"

enum { N_ITEMS = 1000 };

struct job {
    atomic_int hits[N_ITEMS];
    atomic_int max_ith;
    atomic_int bad_nth;
    int        want_nth;
};

static void
count_items(void *ctx, int ith, int nth)
{
    struct job *j = ctx;
    int64_t i;
    int m = atomic_load(&j->max_ith);

    while (ith > m && !atomic_compare_exchange_weak(&j->max_ith, &m, ith))
        ;
    if (nth != j->want_nth)
        atomic_fetch_add(&j->bad_nth, 1);
    while ((i = ks_pool_claim(N_ITEMS)) >= 0)
        atomic_fetch_add(&j->hits[i], 1);
}

START_TEST(every_item_once_on_the_named_workers)
{
    ks_pool *p;

    ck_assert_int_eq(ks_pool_create(4, &p), KS_OK);
    for (int round = 0; round < 200; round++) {
        int n = 1 + round % 4;
        struct job *j = calloc(1, sizeof(*j));
        ck_assert_ptr_nonnull(j);
        j->want_nth = n;
        ks_pool_run_n(p, n, count_items, j);
        for (int i = 0; i < N_ITEMS; i++)
            ck_assert_msg(atomic_load(&j->hits[i]) == 1, "round %d (n %d): item %d ran %d times",
                          round, n, i, atomic_load(&j->hits[i]));
        ck_assert_int_lt(atomic_load(&j->max_ith), n);
        ck_assert_int_eq(atomic_load(&j->bad_nth), 0);
        free(j);
    }
    ks_pool_destroy(p);
}
END_TEST

/* CPU ticks (utime + stime) of every thread of this process but |self|. */
static long
ticks_of(pid_t tid)
{
    char path[64], buf[1024];
    FILE *f;
    const char *c;
    unsigned long ut = 0, st = 0;

    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    if (!(f = fopen(path, "r")))
        return -1;
    if (!fgets(buf, sizeof(buf), f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    c = strrchr(buf, ')');  /* fields after the command name */
    if (!c || sscanf(c + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (long)(ut + st);
}

static void
busy_share(void *ctx, int ith, int nth)
{
    volatile double *sink = ctx;
    double x = 0;
    (void)nth;
    for (int i = 0; i < 20000; i++)
        x += i * 1e-9;
    sink[ith] = x;
}

static double
thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

START_TEST(idle_workers_sleep_through_smaller_jobs)
{
    ks_pool *p;
    volatile double sink[3];
    pid_t self = (pid_t)gettid(), tids[8];
    int n_tids = 0;
    DIR *d;
    struct dirent *e;
    double t0;
    long idle_ticks = 0, pre[8];

    ck_assert_int_eq(ks_pool_create(3, &p), KS_OK);
    ks_pool_run_n(p, 3, busy_share, (void *)sink);  /* all three awake once */
    ck_assert_ptr_nonnull(d = opendir("/proc/self/task"));
    while ((e = readdir(d)) && n_tids < 8) {
        pid_t t = (pid_t)atoi(e->d_name);
        if (t > 0 && t != self)
            tids[n_tids++] = t;
    }
    closedir(d);
    ck_assert_int_ge(n_tids, 2);
    for (int i = 0; i < n_tids; i++)
        pre[i] = ticks_of(tids[i]);
    /* jobs on two of the three threads for at least 0.3 s of this
     * thread's CPU: worker 2 takes part in none of them */
    t0 = thread_cpu_s();
    while (thread_cpu_s() - t0 < 0.3)
        ks_pool_run_n(p, 2, busy_share, (void *)sink);
    /* the least busy worker is the idle one; under the old protocol it
     * spun for every job, about as long as the work itself */
    idle_ticks = -1;
    for (int i = 0; i < n_tids; i++) {
        long t = ticks_of(tids[i]) - pre[i];
        if (idle_ticks < 0 || t < idle_ticks)
            idle_ticks = t;
    }
    ks_pool_destroy(p);
    ck_assert_msg(idle_ticks <= 3, "the idle worker used %ld CPU ticks (%ld per second) "
                  "during 0.3 s of jobs it had no part in", idle_ticks, sysconf(_SC_CLK_TCK));
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    SRunner *sr;
    int nf;

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_item_once_on_the_named_workers);
    tcase_add_test(tc, idle_workers_sleep_through_smaller_jobs);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
