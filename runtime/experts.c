/* The expert store: placement of a mixture of experts under a memory
 * budget.
 *
 *   create: budget - (file bytes outside the experts) = slots of whole
 *     experts (gate, up and down matrices); one anonymous area holds them,
 *     mlock'ed where allowed; every expert's pages in the file are dropped.
 *   begin (per layer, under the read lock): each used expert's score
 *     grows by its uses; a cold one fills a free slot (a copy, no
 *     eviction); the pointers are the slot's or the mapping's, and a cold
 *     expert that was not predicted is read ahead whole (the experts'
 *     ranges are MADV_RANDOM, so a fault does not read its neighbours).
 *     Once a second at most, a re-plan runs under the write lock.
 *   end: the cold experts' pages are dropped again (madvise DONTNEED on
 *     the mapping, posix_fadvise DONTNEED on the file), so that their next
 *     use reads storage.
 *   prefetch: the next layer's likely experts, as its router scores this
 *     layer's input, are read ahead (madvise WILLNEED); begin scores the
 *     guess.
 *   replan: a token bucket of KS_XSTORE_MOVES_PER_MIN moves a minute;
 *     each move evicts the coldest resident expert for the hottest cold
 *     one when the latter's score is clearly higher (1.5x + 2, so that
 *     noise moves nothing). Scores halve every XS_DECAY_TOKENS tokens, so
 *     placement follows drift.
 * The copies hold the file's bytes, so where an expert is read from never
 * changes a result. */
#include "runtime/experts.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "driver/base.h"
#include "runtime/gguf.h"
#include "runtime/model_priv.h"

#define XS_DECAY_TOKENS 4096u
#define XS_CHECK_NS     1000000000ull
#define XS_FREE         UINT32_MAX

struct ks_xstore {
    const ks_model *m;
    uint32_t  n_layers, n_expert;
    uint64_t  budget_bytes;
    uint64_t  off_gate, off_up, off_down;   /* in a slot */
    uint64_t  slot_bytes;
    uint64_t  expert_bytes;
    uint32_t  n_slots;
    bool      all_fit;       /* every expert fits: count only */
    bool      locked;
    uint8_t  *area;          /* [n_slots][slot_bytes], anonymous */
    size_t    area_len;
    int32_t  *slot_of;       /* [n_layers * n_expert]: slot, or -1 */
    uint32_t *owner;         /* [n_slots]: flat expert, or XS_FREE */
    uint32_t  n_filled;
    double   *score;         /* [n_layers * n_expert] decayed uses */
    uint8_t  *predicted;     /* [n_layers * n_expert] */
    uint8_t  *has_pred;      /* [n_layers] */
    int       fd;            /* the file again, for posix_fadvise; -1 */
    long      page;
    pthread_mutex_t  mu;     /* tables, scores, counters */
    pthread_rwlock_t rw;     /* slot contents: readers hold it per layer */
    uint64_t (*clock)(void *);
    void     *clock_ctx;
    uint64_t  last_check_ns;
    uint64_t  bucket_ns;     /* time of the bucket's last refill */
    double    bucket;        /* moves allowed now */
    uint64_t  since_decay;
    uint64_t  io0;
    ks_expert_stats st;
};

static uint64_t
mono_ns(void *ctx)
{
    (void)ctx;
    return ks_now_ns();
}

static uint64_t
io_read_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    uint64_t v = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "read_bytes: %" SCNu64, &v) == 1)
            break;
    fclose(f);
    return v;
}

static const uint8_t *
mapped(const ks_weight *w, uint32_t e)
{
    return (const uint8_t *)w->data + (uint64_t)e * w->ne1 * w->row_bytes;
}

static uint64_t
slice_bytes(const ks_weight *w)
{
    return w->ne1 * w->row_bytes;
}

/* madvise(|advice|) on the pages of [p, p + n) of the mapping; a drop
 * (MADV_DONTNEED) also drops them from the file's page cache. */
static void
advise(ks_xstore *xs, const uint8_t *p, uint64_t n, int advice)
{
    uintptr_t page = (uintptr_t)xs->page, lo = (uintptr_t)p, hi = lo + n;
    const uint8_t *base = ks_gguf_base(xs->m->gguf);

    if (advice == MADV_WILLNEED) {   /* whole pages that hold any of it */
        lo = lo / page * page;
        hi = (hi + page - 1) / page * page;
    } else {                         /* only pages wholly inside it */
        lo = (lo + page - 1) / page * page;
        hi = hi / page * page;
    }
    if (lo >= hi)
        return;
    (void)madvise((void *)lo, hi - lo, advice);
    if (advice == MADV_DONTNEED && xs->fd >= 0)
        (void)posix_fadvise(xs->fd, (off_t)(lo - (uintptr_t)base), (off_t)(hi - lo),
                            POSIX_FADV_DONTNEED);
}

static void
advise_expert(ks_xstore *xs, uint32_t il, uint32_t e, int advice)
{
    const ks_layer *L = &xs->m->layers[il];

    advise(xs, mapped(&L->gate_exps, e), slice_bytes(&L->gate_exps), advice);
    advise(xs, mapped(&L->up_exps, e), slice_bytes(&L->up_exps), advice);
    advise(xs, mapped(&L->down_exps, e), slice_bytes(&L->down_exps), advice);
}

static void
copy_in(ks_xstore *xs, uint32_t flat, uint32_t slot)
{
    uint32_t il = flat / xs->n_expert, e = flat % xs->n_expert;
    const ks_layer *L = &xs->m->layers[il];
    uint8_t *d = xs->area + (uint64_t)slot * xs->slot_bytes;

    advise_expert(xs, il, e, MADV_WILLNEED);
    memcpy(d + xs->off_gate, mapped(&L->gate_exps, e), slice_bytes(&L->gate_exps));
    memcpy(d + xs->off_up, mapped(&L->up_exps, e), slice_bytes(&L->up_exps));
    memcpy(d + xs->off_down, mapped(&L->down_exps, e), slice_bytes(&L->down_exps));
    xs->owner[slot] = flat;
    xs->slot_of[flat] = (int32_t)slot;
    advise_expert(xs, il, e, MADV_DONTNEED);
}

/* The bytes of the weights outside the experts: the file, less the
 * experts' matrices. */
static uint64_t
fixed_bytes(const ks_model *m, uint64_t expert_bytes)
{
    uint64_t n = 0;

    for (uint32_t il = 0; il < m->hp.n_layers; il++)
        if (m->layers[il].gate_exps.data)
            n += expert_bytes * m->hp.n_expert;
    return m->file_bytes > n ? m->file_bytes - n : 0;
}

ks_status
ks_xstore_create(const ks_model *m, uint64_t budget_bytes, ks_xstore **out)
{
    const ks_layer *L0 = &m->layers[0];
    ks_xstore *xs;
    uint64_t fixed, n_flat, n_slots;
    ks_status st;

    *out = NULL;
    xs = calloc(1, sizeof(*xs));
    if (!xs)
        return ks_error(KS_ERR_NOMEM, "experts: no memory");
    xs->fd = -1;
    pthread_mutex_init(&xs->mu, NULL);
    pthread_rwlock_init(&xs->rw, NULL);
    xs->m = m;
    xs->n_layers = m->hp.n_layers;
    xs->n_expert = m->hp.n_expert;
    xs->budget_bytes = budget_bytes;
    xs->clock = mono_ns;
    xs->page = sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096;
    xs->off_gate = 0;
    xs->off_up = ks_align_up(slice_bytes(&L0->gate_exps), 64);
    xs->off_down = xs->off_up + ks_align_up(slice_bytes(&L0->up_exps), 64);
    xs->slot_bytes = ks_align_up(xs->off_down + slice_bytes(&L0->down_exps), 64);
    xs->expert_bytes = slice_bytes(&L0->gate_exps) + slice_bytes(&L0->up_exps) +
                       slice_bytes(&L0->down_exps);
    fixed = fixed_bytes(m, xs->expert_bytes);
    if (budget_bytes < fixed) {
        st = ks_error(KS_ERR_INVALID_ARG, "mem_budget: %.1f MiB is below the %.1f MiB of "
                      "%s's weights outside the experts, which stay in memory",
                      (double)budget_bytes / 1048576.0, (double)fixed / 1048576.0,
                      m->name);
        goto fail;
    }
    n_flat = (uint64_t)xs->n_layers * xs->n_expert;
    n_slots = (budget_bytes - fixed) / xs->expert_bytes;
    xs->all_fit = n_slots >= n_flat;
    xs->n_slots = xs->all_fit ? (uint32_t)n_flat : (uint32_t)n_slots;
    xs->slot_of = malloc(n_flat * sizeof(*xs->slot_of));
    xs->score = calloc(n_flat, sizeof(*xs->score));
    xs->predicted = calloc(n_flat, 1);
    xs->has_pred = calloc(xs->n_layers, 1);
    xs->owner = malloc(((uint64_t)xs->n_slots + 1) * sizeof(*xs->owner));
    if (!xs->slot_of || !xs->score || !xs->predicted || !xs->has_pred || !xs->owner) {
        st = ks_error(KS_ERR_NOMEM, "experts: no memory for the tables of %" PRIu64
                      " experts", n_flat);
        goto fail;
    }
    for (uint64_t i = 0; i < n_flat; i++)
        xs->slot_of[i] = xs->all_fit ? 0 : -1;
    for (uint32_t s = 0; s < xs->n_slots; s++)
        xs->owner[s] = XS_FREE;
    xs->st.placed = true;
    xs->st.budget_bytes = budget_bytes;
    xs->st.expert_bytes = xs->expert_bytes;
    xs->st.n_slots = xs->n_slots;
    xs->st.n_experts = (uint32_t)n_flat;
    xs->bucket = KS_XSTORE_MOVES_PER_MIN;
    xs->io0 = io_read_bytes();
    if (xs->all_fit) {
        ks_log(KS_LOG_INFO, "experts", "mem budget %.1f MiB holds all %" PRIu64
               " experts of %s: nothing is placed", (double)budget_bytes / 1048576.0,
               n_flat, m->name);
        *out = xs;
        return KS_OK;
    }
    if (xs->n_slots > 0) {
        void *a;
        if (!ks_mul_size(xs->n_slots, xs->slot_bytes, &n_flat)) {
            st = ks_error(KS_ERR_INVALID_ARG, "mem_budget: too large");
            goto fail;
        }
        xs->area_len = (size_t)n_flat;
        a = mmap(NULL, xs->area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                 -1, 0);
        if (a == MAP_FAILED) {
            xs->area_len = 0;
            st = ks_error(KS_ERR_NOMEM, "experts: cannot reserve %.1f MiB for %u resident "
                          "experts: %s", (double)n_flat / 1048576.0, xs->n_slots,
                          strerror(errno));
            goto fail;
        }
        xs->area = a;
        xs->locked = mlock(xs->area, xs->area_len) == 0;
        if (!xs->locked)
            ks_log(KS_LOG_WARN, "experts", "mlock of %.1f MiB failed (%s): the resident "
                   "experts are in plain RAM and may be swapped",
                   (double)xs->area_len / 1048576.0, strerror(errno));
    }
    xs->st.locked = xs->locked;
    if (strcmp(ks_gguf_path(m->gguf), "<memory>") != 0)
        xs->fd = open(ks_gguf_path(m->gguf), O_RDONLY | O_CLOEXEC);
    /* no read-around on faults in the experts: it would bring the
     * neighbours of a cold expert into the page cache, which then serve
     * their next use; a cold expert is read ahead whole instead */
    for (uint32_t il = 0; il < xs->n_layers; il++) {
        const ks_layer *L = &m->layers[il];
        if (!L->gate_exps.data)
            continue;
        advise(xs, L->gate_exps.data, xs->n_expert * slice_bytes(&L->gate_exps),
               MADV_RANDOM);
        advise(xs, L->up_exps.data, xs->n_expert * slice_bytes(&L->up_exps), MADV_RANDOM);
        advise(xs, L->down_exps.data, xs->n_expert * slice_bytes(&L->down_exps),
               MADV_RANDOM);
        for (uint32_t e = 0; e < xs->n_expert; e++)
            advise_expert(xs, il, e, MADV_DONTNEED);
    }
    ks_log(KS_LOG_INFO, "experts", "mem budget %.1f MiB: %.1f MiB outside the experts, "
           "%u of %u experts of %.2f MiB resident%s", (double)budget_bytes / 1048576.0,
           (double)fixed / 1048576.0, xs->n_slots, xs->st.n_experts,
           (double)xs->expert_bytes / 1048576.0, xs->locked ? " (locked)" : "");
    *out = xs;
    return KS_OK;
fail:
    ks_xstore_destroy(xs);
    return st;
}

void
ks_xstore_destroy(ks_xstore *xs)
{
    if (!xs)
        return;
    if (xs->area)
        munmap(xs->area, xs->area_len);
    if (xs->fd >= 0)
        close(xs->fd);
    free(xs->slot_of);
    free(xs->owner);
    free(xs->score);
    free(xs->predicted);
    free(xs->has_pred);
    pthread_rwlock_destroy(&xs->rw);
    pthread_mutex_destroy(&xs->mu);
    free(xs);
}

void
ks_xstore_set_clock(ks_xstore *xs, uint64_t (*now_ns)(void *), void *ctx)
{
    pthread_mutex_lock(&xs->mu);
    xs->clock = now_ns ? now_ns : mono_ns;
    xs->clock_ctx = ctx;
    pthread_mutex_unlock(&xs->mu);
}

/* ---- re-planning ---- */

/* The hottest cold expert and the coldest resident one (flat indices). */
static bool
candidates(const ks_xstore *xs, uint32_t *hot, uint32_t *cold)
{
    uint64_t n_flat = (uint64_t)xs->n_layers * xs->n_expert;
    bool have_hot = false, have_cold = false;

    for (uint64_t i = 0; i < n_flat; i++) {
        if (!xs->m->layers[i / xs->n_expert].gate_exps.data)
            continue;
        if (xs->slot_of[i] < 0) {
            if (!have_hot || xs->score[i] > xs->score[*hot])
                *hot = (uint32_t)i, have_hot = true;
        } else if (!have_cold || xs->score[i] < xs->score[*cold]) {
            *cold = (uint32_t)i, have_cold = true;
        }
    }
    return have_hot && have_cold;
}

/* Under mu and the write lock. */
static uint32_t
replan_locked(ks_xstore *xs, uint64_t now_ns)
{
    uint32_t n = 0, hot = 0, cold = 0;

    if (xs->all_fit || xs->n_slots == 0 || xs->n_filled < xs->n_slots)
        return 0;
    if (now_ns > xs->bucket_ns) {
        xs->bucket += (double)(now_ns - xs->bucket_ns) * KS_XSTORE_MOVES_PER_MIN / 60e9;
        if (xs->bucket > KS_XSTORE_MOVES_PER_MIN)
            xs->bucket = KS_XSTORE_MOVES_PER_MIN;
    }
    xs->bucket_ns = now_ns;
    while (xs->bucket >= 1.0 && candidates(xs, &hot, &cold) &&
           xs->score[hot] > 1.5 * xs->score[cold] + 2.0) {
        uint32_t slot = (uint32_t)xs->slot_of[cold];
        ks_log(KS_LOG_DEBUG, "experts", "move: layer %u expert %u (score %.0f) in, layer "
               "%u expert %u (score %.0f) out", hot / xs->n_expert, hot % xs->n_expert,
               xs->score[hot], cold / xs->n_expert, cold % xs->n_expert, xs->score[cold]);
        xs->slot_of[cold] = -1;
        copy_in(xs, hot, slot);
        xs->bucket -= 1.0;
        xs->st.n_moves++;
        n++;
    }
    return n;
}

uint32_t
ks_xstore_replan(ks_xstore *xs, uint64_t now_ns)
{
    uint32_t n;

    pthread_mutex_lock(&xs->mu);
    pthread_rwlock_wrlock(&xs->rw);
    n = replan_locked(xs, now_ns);
    pthread_rwlock_unlock(&xs->rw);
    pthread_mutex_unlock(&xs->mu);
    return n;
}

/* ---- use ---- */

static void
decay(ks_xstore *xs, uint32_t n_tok)
{
    uint64_t n_flat = (uint64_t)xs->n_layers * xs->n_expert;

    xs->since_decay += n_tok;
    if (xs->since_decay < XS_DECAY_TOKENS)
        return;
    xs->since_decay = 0;
    for (uint64_t i = 0; i < n_flat; i++)
        xs->score[i] *= 0.5;
}

void
ks_xstore_begin(ks_xstore *xs, uint32_t il, const uint32_t *ids, const uint32_t *uses,
                uint32_t n, uint32_t n_tok, ks_xptr *ptr)
{
    const ks_layer *L = &xs->m->layers[il];
    uint64_t now, base = (uint64_t)il * xs->n_expert;

    pthread_mutex_lock(&xs->mu);
    if (il == 0) {
        xs->st.n_tokens += n_tok;
        decay(xs, n_tok);
    }
    now = xs->clock(xs->clock_ctx);
    if (now - xs->last_check_ns >= XS_CHECK_NS &&
        pthread_rwlock_trywrlock(&xs->rw) == 0) {
        xs->last_check_ns = now;
        replan_locked(xs, now);
        pthread_rwlock_unlock(&xs->rw);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t f = base + ids[i];
        xs->score[f] += uses[i];
        if (xs->has_pred[il] && xs->predicted[f]) {
            xs->st.n_predicted_used++;
            xs->predicted[f] = 2;   /* used */
        }
        if (!xs->all_fit && xs->slot_of[f] < 0 && xs->n_filled < xs->n_slots) {
            /* a free slot: no reader can hold it */
            xs->st.cold_bytes += xs->expert_bytes;
            xs->st.n_misses += uses[i];
            xs->st.n_fills++;
            copy_in(xs, (uint32_t)f, xs->n_filled++);
            ptr[i].gate = NULL;
        } else if (xs->all_fit || xs->slot_of[f] >= 0) {
            xs->st.n_hits += uses[i];
            ptr[i].gate = NULL;
        } else {
            xs->st.cold_bytes += xs->expert_bytes;
            xs->st.n_misses += uses[i];
            ptr[i].gate = mapped(&L->gate_exps, ids[i]);
            ptr[i].up = mapped(&L->up_exps, ids[i]);
            ptr[i].down = mapped(&L->down_exps, ids[i]);
            if (!xs->predicted[f])
                advise_expert(xs, il, ids[i], MADV_WILLNEED);
        }
        if (!ptr[i].gate) {
            if (xs->all_fit) {
                ptr[i].gate = mapped(&L->gate_exps, ids[i]);
                ptr[i].up = mapped(&L->up_exps, ids[i]);
                ptr[i].down = mapped(&L->down_exps, ids[i]);
            } else {
                const uint8_t *d = xs->area + (uint64_t)xs->slot_of[f] * xs->slot_bytes;
                ptr[i].gate = d + xs->off_gate;
                ptr[i].up = d + xs->off_up;
                ptr[i].down = d + xs->off_down;
            }
        }
    }
    if (xs->has_pred[il]) {
        /* a wrong guess must not leave its pages to serve a later use */
        for (uint32_t e = 0; e < xs->n_expert; e++)
            if (xs->predicted[base + e] == 1 && xs->slot_of[base + e] < 0 && !xs->all_fit)
                advise_expert(xs, il, e, MADV_DONTNEED);
        xs->st.n_used_after_prediction += n;
        xs->has_pred[il] = 0;
        memset(xs->predicted + base, 0, xs->n_expert);
    }
    /* taken under mu: a re-plan (which holds mu) cannot start between */
    pthread_rwlock_rdlock(&xs->rw);
    pthread_mutex_unlock(&xs->mu);
}

void
ks_xstore_end(ks_xstore *xs, uint32_t il, const uint32_t *ids, uint32_t n)
{
    pthread_rwlock_unlock(&xs->rw);
    if (xs->all_fit)
        return;
    pthread_mutex_lock(&xs->mu);
    for (uint32_t i = 0; i < n; i++)
        if (xs->slot_of[(uint64_t)il * xs->n_expert + ids[i]] < 0)
            advise_expert(xs, il, ids[i], MADV_DONTNEED);
    pthread_mutex_unlock(&xs->mu);
}

void
ks_xstore_prefetch(ks_xstore *xs, uint32_t il, const uint32_t *ids, uint32_t n)
{
    uint64_t base = (uint64_t)il * xs->n_expert;

    if (il >= xs->n_layers)
        return;
    pthread_mutex_lock(&xs->mu);
    xs->has_pred[il] = 1;
    for (uint32_t i = 0; i < n; i++) {
        if (xs->predicted[base + ids[i]])
            continue;
        xs->predicted[base + ids[i]] = 1;
        xs->st.n_predicted++;
        if (!xs->all_fit && xs->slot_of[base + ids[i]] < 0)
            advise_expert(xs, il, ids[i], MADV_WILLNEED);
    }
    pthread_mutex_unlock(&xs->mu);
}

/* ---- reports ---- */

void
ks_xstore_stats(const ks_xstore *xs, ks_expert_stats *out)
{
    ks_xstore *w = (ks_xstore *)xs;   /* the lock only */
    uint64_t io = io_read_bytes();

    pthread_mutex_lock(&w->mu);
    *out = xs->st;
    out->n_resident = xs->all_fit ? xs->n_slots : xs->n_filled;
    out->io_read_bytes = io > xs->io0 ? io - xs->io0 : 0;
    pthread_mutex_unlock(&w->mu);
}

uint32_t
ks_xstore_resident(const ks_xstore *xs, uint32_t il, uint32_t *ids, uint32_t cap)
{
    ks_xstore *w = (ks_xstore *)xs;
    uint32_t n = 0;

    if (il >= xs->n_layers)
        return 0;
    pthread_mutex_lock(&w->mu);
    for (uint32_t e = 0; e < xs->n_expert; e++)
        if (xs->slot_of[(uint64_t)il * xs->n_expert + e] >= 0) {
            if (ids && n < cap)
                ids[n] = e;
            n++;
        }
    pthread_mutex_unlock(&w->mu);
    return n;
}
