/* The forward pass as the session sees it: the embedding lookup, then
 * the layer ranges of the placement in order, each on its execution
 * target (scheduler/target.h; the CPU's is cpu_target.c), the hidden
 * state passing between them in s->x. This file decides which held
 * tokens run in which batches, pipelines a CPU range with a device range
 * on prefill, and replays the held tokens when layers move to another
 * target (a device fault, a governor move). It runs no layer itself. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver/base.h"
#include "runtime/cpu/attn.h"
#include "runtime/cpu/glu.h"
#include "runtime/cpu/norm.h"
#include "runtime/cpu/quant.h"
#include "runtime/cpu/rope.h"
#include "runtime/session_priv.h"
#include "scheduler/target.h"

/* ---- the whole pass ---- */

/* Checks a batch and writes its scaled embeddings into s->x. */
static ks_status
embed(ks_session *s, const int32_t *tokens, uint32_t n, uint32_t pos0)
{
    const ks_model *m = s->m;
    const ks_hparams *hp = &m->hp;
    uint64_t E = hp->n_embd;

    if (n == 0 || n > s->n_batch)
        return ks_error(KS_ERR_INTERNAL, "forward: batch of %u tokens, "
                        "expected 1..%u", n, s->n_batch);
    if ((uint64_t)pos0 + n > s->n_ctx)
        return ks_error(KS_ERR_CONTEXT_FULL,
                        "context full: %u tokens held, %u more do not fit in "
                        "%u", pos0, n, s->n_ctx);
    for (uint32_t t = 0; t < n; t++)
        if (tokens[t] < 0 || (uint32_t)tokens[t] >= hp->n_vocab)
            return ks_error(KS_ERR_INVALID_ARG,
                            "forward: token id %d is outside the vocabulary "
                            "(0..%u)", tokens[t], hp->n_vocab - 1);
    for (uint32_t t = 0; t < n; t++) {
        float *x = s->x + t * E;
        ks_cpu_dequant_row(m->tok_embd.type,
                           (const uint8_t *)m->tok_embd.data +
                               (uint64_t)tokens[t] * m->tok_embd.row_bytes,
                           x, E);
        if (hp->emb_scale != 1.0f)
            for (uint64_t i = 0; i < E; i++)
                x[i] *= hp->emb_scale;
    }
    return KS_OK;
}

/* One batch, hist[pos0..pos0+n), through every range in layer order;
 * the hidden state passes through s->x. */
static ks_status
run_batch(ks_session *s, uint32_t pos0, uint32_t n, bool want_logits)
{
    ks_status st;

    if ((st = embed(s, s->hist + pos0, n, pos0)) != KS_OK)
        return st;
    for (uint32_t i = 0; i < s->n_targets; i++) {
        ks_target *t = s->targets[i];
        if ((st = t->ops->run(t, s->x, n, pos0, want_logits, s->logits)) != KS_OK)
            return st;
    }
    return KS_OK;
}

static uint32_t
batch_len(const ks_session *s, uint32_t pos, uint32_t end)
{
    return end - pos < s->n_batch ? end - pos : s->n_batch;
}

static void
mark_batch(ks_session *s, uint32_t pos0, uint32_t n)
{
    s->batch_start[pos0] = 1;
    memset(s->batch_start + pos0 + 1, 0, n - 1);
}

/* CPU layers, then device layers: while the device runs batch k, the CPU
 * runs its layers of batch k + 1. n_kv moves only when all have run. */
static ks_status
sync_pipelined(ks_session *s, ks_target *cpu, ks_target *dev, const volatile int *cancel)
{
    uint32_t pos0 = s->n_kv, end = s->n_past;
    bool pending = false;
    ks_status st = KS_OK;

    for (uint32_t p = pos0; p < end && st == KS_OK; p += batch_len(s, p, end)) {
        uint32_t b = batch_len(s, p, end);
        bool last = p + b == end;
        if (cancel && *cancel) {
            st = ks_error(KS_ERR_CANCELLED, "prefill cancelled at token %u of %u", p, end);
            break;
        }
        mark_batch(s, p, b);
        if ((st = embed(s, s->hist + p, b, p)) != KS_OK)
            break;
        if ((st = cpu->ops->run(cpu, s->x, b, p, last, s->logits)) != KS_OK)
            break;
        if (pending) {
            pending = false;
            if ((st = dev->ops->finish(dev, s->x, s->logits)) != KS_OK)
                break;
        }
        if ((st = dev->ops->submit(dev, s->x, b, p, last)) != KS_OK)
            break;
        pending = true;
    }
    if (pending) {
        ks_status st2 = dev->ops->finish(dev, s->x, s->logits);
        if (st == KS_OK)
            st = st2;
    }
    if (st == KS_OK)
        s->n_kv = end;
    return st;
}

static ks_status
sync(ks_session *s, const volatile int *cancel)
{
    ks_target *cpu = s->n_targets == 2 ? s->targets[0] : NULL;
    ks_target *dev = s->n_targets == 2 ? s->targets[1] : NULL;
    uint32_t end = s->n_past;
    ks_status st;

    if (end - s->n_kv > s->n_batch && cpu && !cpu->ops->submit && dev->ops->submit)
        return sync_pipelined(s, cpu, dev, cancel);
    while (s->n_kv < end) {
        uint32_t p = s->n_kv, b = batch_len(s, p, end);
        if (cancel && *cancel)
            return ks_error(KS_ERR_CANCELLED, "prefill cancelled at token %u of %u", p, end);
        mark_batch(s, p, b);
        if ((st = run_batch(s, p, b, p + b == end)) != KS_OK)
            return st;
        s->n_kv = p + b;
    }
    return KS_OK;
}

/* The head target's run, with the logits of the rows at positions >=
 * |first| of the batch at pos0 written to out[(pos - first) * n_vocab]. */
static ks_status
run_batch_all(ks_session *s, uint32_t pos0, uint32_t n, uint32_t first, float *out)
{
    uint32_t lo = pos0 > first ? pos0 : first;
    uint32_t n_logits = pos0 + n > lo ? pos0 + n - lo : 0;
    uint64_t V = s->m->hp.n_vocab;
    ks_status st;

    if ((st = embed(s, s->hist + pos0, n, pos0)) != KS_OK)
        return st;
    for (uint32_t i = 0; i < s->n_targets; i++) {
        ks_target *t = s->targets[i];
        if (t->ops->run_logits && (!t->head || n_logits == 0))
            st = t->ops->run_logits(t, s->x, n, pos0, 0, NULL);
        else if (!t->head || n_logits == 0)
            st = t->ops->run(t, s->x, n, pos0, false, NULL);
        else if (t->ops->run_logits)
            st = t->ops->run_logits(t, s->x, n, pos0, n_logits, out + (lo - first) * V);
        else if (n_logits == 1)
            st = t->ops->run(t, s->x, n, pos0, true, out + (lo - first) * V);
        else
            st = ks_error(KS_ERR_UNSUPPORTED, "verification: the target %s cannot give "
                          "the logits of every token of a run, which speculative "
                          "decoding needs (placement %s); run the model on the CPU "
                          "(--backend cpu)", t->desc, s->plan);
        if (st != KS_OK)
            return st;
    }
    return KS_OK;
}

static ks_status
sync_all(ks_session *s, uint32_t first, float *out, const volatile int *cancel)
{
    uint32_t end = s->n_past;
    ks_status st;

    while (s->n_kv < end) {
        uint32_t p = s->n_kv, b = batch_len(s, p, end);
        if (cancel && *cancel)
            return ks_error(KS_ERR_CANCELLED, "verification cancelled at token %u of %u",
                            p, end);
        mark_batch(s, p, b);
        if ((st = run_batch_all(s, p, b, first, out)) != KS_OK)
            return st;
        s->n_kv = p + b;
    }
    return KS_OK;
}

ks_status
ks_forward_sync_all(ks_session *s, uint32_t first, float *out, const volatile int *cancel)
{
    ks_status st;

    if (first < s->n_kv || first >= s->n_past)
        return ks_error(KS_ERR_INTERNAL, "forward: logits asked from %u, but tokens %u..%u "
                        "run", first, s->n_kv, s->n_past);
    st = sync_all(s, first, out, cancel);
    if (st == KS_ERR_DEVICE_LOST) {
        if ((st = ks_session_fall_back(s, ks_last_error())) != KS_OK)
            return st;
        if ((st = ks_forward_replay(s)) != KS_OK)
            return st;
        st = sync_all(s, first, out, cancel);
    }
    if (st == KS_OK) {
        memcpy(s->logits, out + (uint64_t)(s->n_past - 1 - first) * s->m->hp.n_vocab,
               s->m->hp.n_vocab * sizeof(float));
        s->logits_ok = true;
    }
    return st;
}

/* After ks_session_fall_back put every layer on the CPU: the held tokens
 * the lost targets had run, again, in the batches they ran in. */
ks_status
ks_forward_replay(ks_session *s)
{
    uint32_t end = s->n_kv;
    ks_status st;

    for (uint32_t p = 0; p < end;) {
        uint32_t b = 1;
        while (p + b < end && !s->batch_start[p + b])
            b++;
        if ((st = run_batch(s, p, b, false)) != KS_OK)
            return st;
        p += b;
    }
    return KS_OK;
}

ks_status
ks_forward_sync(ks_session *s, const volatile int *cancel)
{
    ks_status st = sync(s, cancel);

    if (st == KS_ERR_DEVICE_LOST) {
        if ((st = ks_session_fall_back(s, ks_last_error())) != KS_OK)
            return st;
        if ((st = ks_forward_replay(s)) != KS_OK)
            return st;
        st = sync(s, cancel);
    }
    if (st == KS_OK && s->n_past > 0)
        s->logits_ok = true;
    return st;
}
